//! `[tenants]`: the quotas and rate limits every tenant gets (`[tenants.defaults]`), where
//! each tenant's own come from (a tenants file, the admin API), and which tenants get their
//! own metric labels.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{ConfigError, invalid};

/// One tenant's quotas, rates and features. A value left out is no limit in
/// `[tenants.defaults]`, and the default's value in a tenant's own settings. Counts are
/// across the tenant's clients; `client_*` rates are per connection.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TenantLimits {
    /// Open connections (CONNACK 0x97 past it; 3.1.1: 3).
    pub max_connections: Option<u64>,
    /// New connections a second (CONNACK 0x9F Connection rate exceeded; 3.1.1: 3).
    pub connect_rate: Option<u32>,
    /// Sessions, connected or not (a new one: CONNACK 0x97).
    pub max_sessions: Option<u64>,
    /// Sessions that outlive their connection (a new one: CONNACK 0x97).
    pub max_persistent_sessions: Option<u64>,
    /// Subscriptions held by the tenant's sessions (SUBACK 0x97).
    pub max_subscriptions: Option<u64>,
    /// Subscriptions one session may hold (SUBACK 0x97).
    pub max_subscriptions_per_client: Option<u64>,
    /// Members of one shared subscription group (SUBACK 0x97).
    pub max_shared_members: Option<u64>,
    /// Retained messages kept (PUBACK 0x97; the HTTP API 429).
    pub max_retained_messages: Option<u64>,
    /// Bytes of retained messages kept (as above).
    pub max_retained_bytes: Option<u64>,
    /// QoS 1/2 messages queued for the tenant's offline sessions (PUBACK 0x97 for a message
    /// that would go past it).
    pub max_offline_queued_messages: Option<u64>,
    /// Bytes queued for the tenant's offline sessions (as above).
    pub max_offline_queued_bytes: Option<u64>,
    /// PUBLISH packets a second from all the tenant's clients.
    pub messages_per_sec: Option<u32>,
    /// PUBLISH bytes a second from all the tenant's clients.
    pub bytes_per_sec: Option<u64>,
    /// PUBLISH packets a second from one connection.
    pub client_messages_per_sec: Option<u32>,
    /// PUBLISH bytes a second from one connection.
    pub client_bytes_per_sec: Option<u64>,
    /// Bytes a second written to the tenant's clients.
    pub outbound_bytes_per_sec: Option<u64>,
    /// Messages a second the HTTP API publishes into the tenant (429 with Retry-After).
    pub http_publish_per_sec: Option<u32>,
    /// Bytes the tenant makes the node keep: its retained messages and the messages its
    /// offline sessions are owed, each copy counted (PUBACK 0x97 past it).
    pub max_store_bytes: Option<u64>,
    /// Largest packet a client may send (told to v5 clients as Maximum Packet Size).
    pub max_packet_size: Option<u32>,
    /// Largest PUBLISH payload (PUBACK 0x97; 3.1.1: the connection is closed).
    pub max_payload_bytes: Option<u32>,
    /// Highest QoS granted and accepted (0, 1 or 2).
    pub max_qos: Option<u8>,
    /// Retained messages may be set.
    pub retain: Option<bool>,
    /// Wildcard subscriptions are allowed.
    pub wildcards: Option<bool>,
    /// Shared subscriptions are allowed.
    pub shared_subscriptions: Option<bool>,
    /// Protocol versions its clients may speak: "3.1", "3.1.1", "5".
    pub protocols: Option<Vec<String>>,
}

/// Per-client limits a token or the callout may set; each narrows its tenant's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientLimits {
    /// PUBLISH packets per second it may send.
    #[serde(default)]
    pub messages_per_sec: Option<u32>,
    /// PUBLISH bytes per second it may send.
    #[serde(default)]
    pub bytes_per_sec: Option<u32>,
    /// Subscriptions it may hold.
    #[serde(default)]
    pub max_subscriptions: Option<u32>,
    /// Highest QoS it may publish and be granted.
    #[serde(default)]
    pub max_qos: Option<u8>,
}

/// How breaches of a rate are answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RateExceeded {
    /// The publisher is slowed: its socket is not read until the rate allows its next
    /// message (nothing is refused, TCP pushes back).
    Throttle,
    /// The message is refused: v5 PUBACK/PUBREC 0x97 Quota exceeded (0x96 Message rate too
    /// high is a DISCONNECT code, which PUBACK may not carry; QoS 0: dropped and counted);
    /// 3.1.1: the connection is closed.
    Refuse,
}

/// `[tenants]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TenantsConfig {
    /// A TOML file of tenants' own settings (`[acme]` then the keys of
    /// `[tenants.defaults]`), read at start and when it changes ("" for none).
    pub file: PathBuf,
    /// Seconds between checks of the file for changes (0: only SIGHUP reloads it).
    pub watch_secs: u64,
    /// Only tenants the file or the admin API created may connect (others: CONNACK 0x87).
    pub require_known: bool,
    /// What a publisher over a rate gets.
    pub rate_exceeded: RateExceeded,
    /// Tenants with metric labels of their own: at most this many, the busiest first
    /// (the rest are summed under `tenant="_other"`).
    pub metrics_top: usize,
    /// Tenants that always get their own metric labels (counted within `metrics_top`).
    pub metrics_allow: Vec<String>,
    /// What every tenant gets unless its own settings say otherwise.
    pub defaults: TenantLimits,
}

impl Default for TenantsConfig {
    fn default() -> Self {
        TenantsConfig {
            file: PathBuf::new(),
            watch_secs: 2,
            require_known: false,
            rate_exceeded: RateExceeded::Throttle,
            metrics_top: 20,
            metrics_allow: Vec::new(),
            defaults: TenantLimits::default(),
        }
    }
}

impl TenantLimits {
    /// Checks the values that have a range; `key` prefixes the keys named.
    pub fn validate(&self, key: &'static str) -> Result<(), ConfigError> {
        if self.max_qos.is_some_and(|q| q > 2) {
            return Err(invalid(key, "max_qos must be 0, 1 or 2"));
        }
        if let Some(bad) = self
            .protocols
            .iter()
            .flatten()
            .find(|p| !["3.1", "3.1.1", "5"].contains(&p.as_str()))
        {
            return Err(invalid(
                key,
                format!("protocols: {bad:?} is not \"3.1\", \"3.1.1\" or \"5\""),
            ));
        }
        if self.max_packet_size.is_some_and(|n| n < 64) {
            return Err(invalid(key, "max_packet_size must be at least 64"));
        }
        let zero_rate = [
            self.connect_rate,
            self.messages_per_sec,
            self.client_messages_per_sec,
            self.http_publish_per_sec,
        ]
        .contains(&Some(0))
            || [
                self.bytes_per_sec,
                self.client_bytes_per_sec,
                self.outbound_bytes_per_sec,
            ]
            .contains(&Some(0));
        if zero_rate {
            return Err(invalid(
                key,
                "a rate of 0 would stop everything: leave it out for no limit",
            ));
        }
        Ok(())
    }

    /// These settings over `defaults`: each value left out here is the default's.
    pub fn over(&self, defaults: &TenantLimits) -> TenantLimits {
        macro_rules! pick {
            ($($f:ident),*) => {
                TenantLimits { $($f: self.$f.clone().or_else(|| defaults.$f.clone()),)* }
            };
        }
        pick!(
            max_connections,
            connect_rate,
            max_sessions,
            max_persistent_sessions,
            max_subscriptions,
            max_subscriptions_per_client,
            max_shared_members,
            max_retained_messages,
            max_retained_bytes,
            max_offline_queued_messages,
            max_offline_queued_bytes,
            messages_per_sec,
            bytes_per_sec,
            client_messages_per_sec,
            client_bytes_per_sec,
            outbound_bytes_per_sec,
            http_publish_per_sec,
            max_store_bytes,
            max_packet_size,
            max_payload_bytes,
            max_qos,
            retain,
            wildcards,
            shared_subscriptions,
            protocols
        )
    }
}

impl TenantsConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        self.defaults.validate("tenants.defaults")?;
        if self.metrics_allow.len() > self.metrics_top {
            return Err(invalid(
                "tenants.metrics_allow",
                "lists more tenants than tenants.metrics_top allows labels for",
            ));
        }
        Ok(())
    }
}
