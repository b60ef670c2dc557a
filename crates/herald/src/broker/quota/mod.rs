//! Tenants' quotas and rate limits, enforced inside the broker where each thing is decided
//! (not by a plugin answering yes or no): a tenant's own settings over `[tenants.defaults]`
//! (`Tenant::limits`), narrowed for one client by what its token or the callout says
//! (`config::ClientLimits`).
//!
//! | quota | checked at | a breach gets |
//! |---|---|---|
//! | `protocols` | CONNECT | CONNACK 0x84 Unsupported protocol version (3.1.1: 1) |
//! | `max_connections` | CONNECT | CONNACK 0x97 Quota exceeded (3.1.1: 3) |
//! | `connect_rate` | CONNECT | CONNACK 0x9F Connection rate exceeded (3.1.1: 3) |
//! | `max_sessions` | CONNECT making a new session | CONNACK 0x97 (3.1.1: 3) |
//! | `max_persistent_sessions` | CONNECT making a new session that outlives it | CONNACK 0x97 (3.1.1: 3) |
//! | `max_packet_size`, `max_qos`, `retain` | CONNECT (told to v5 clients), then each PUBLISH | as the node's own: DISCONNECT 0x95, 0x9B, 0x9A |
//! | `max_subscriptions`, `max_subscriptions_per_client`, `max_shared_members` | each SUBSCRIBE filter | SUBACK 0x97 |
//! | `wildcards`, `shared_subscriptions` | each SUBSCRIBE filter | SUBACK 0xA2, 0x9E |
//! | `max_payload_bytes` | each PUBLISH | v5 PUBACK/PUBREC 0x97; 3.1.1 closes |
//! | `max_retained_messages`, `max_retained_bytes` | each retained PUBLISH | v5 PUBACK/PUBREC 0x97; the HTTP API 429 |
//! | `max_offline_queued_*`, `max_store_bytes` | each QoS 1/2 copy for an offline session ([`Offline`]); retained PUBLISH (store bytes) | v5 PUBACK/PUBREC 0x97; the HTTP API 429 |
//! | `outbound_bytes_per_sec` | each write to a client | nothing refused: the connection takes nothing more from its queue until the rate allows |
//! | `messages_per_sec`, `bytes_per_sec` (tenant), `client_*` (connection) | each PUBLISH | `rate_exceeded = "throttle"`: its socket is not read until the rate allows; `"refuse"`: v5 PUBACK/PUBREC 0x97 (0x96 Message rate too high may only be said in a DISCONNECT; QoS 0 dropped), 3.1.1 closes |
//!
//! Every breach is counted per tenant and reason ([`Breach`]). Rates are GCRA limiters
//! (`Limiter`), one per tenant and rate, rebuilt when the settings change; a connection's
//! own rates are fixed when it connects.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use mqtt_codec::{ProtocolVersion, ReasonCode};

use crate::broker::message::Message;
use crate::broker::{Broker, Tenant};
use crate::config::{ClientLimits, Config};

mod rates;
mod usage;

pub use rates::{ConnectionRates, Rates, TenantRates, longer, settings_changed};
pub use usage::{Offline, Traffic, Usage};

macro_rules! breaches {
    ($($(#[$m:meta])* $v:ident => $label:literal,)*) => {
        /// Which quota a breach was of.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Breach {
            $($(#[$m])* $v,)*
        }

        impl Breach {
            /// Every quota, in counter order.
            pub const ALL: &'static [Breach] = &[$(Breach::$v,)*];

            /// Its label in `herald_tenant_quota_breaches_total{reason}`.
            pub fn label(self) -> &'static str {
                match self {
                    $(Breach::$v => $label,)*
                }
            }
        }
    };
}

breaches! {
    /// A protocol version the tenant does not allow.
    Protocol => "protocol",
    /// `max_connections`.
    Connections => "connections",
    /// `connect_rate`.
    ConnectRate => "connect_rate",
    /// `max_sessions`.
    Sessions => "sessions",
    /// `max_persistent_sessions`.
    PersistentSessions => "persistent_sessions",
    /// `max_subscriptions`.
    Subscriptions => "subscriptions",
    /// `max_subscriptions_per_client` (or the client's own limit).
    SubscriptionsPerClient => "subscriptions_per_client",
    /// `max_shared_members`.
    SharedMembers => "shared_members",
    /// `wildcards = false`.
    Wildcards => "wildcards",
    /// `shared_subscriptions = false`.
    SharedSubscriptions => "shared_subscriptions",
    /// `max_payload_bytes`.
    Payload => "payload",
    /// `max_retained_messages` or `max_retained_bytes`.
    Retained => "retained",
    /// `max_offline_queued_messages` or `max_offline_queued_bytes`.
    OfflineQueue => "offline_queue",
    /// `max_store_bytes`.
    Store => "store",
    /// A message rate (the tenant's or the connection's).
    MessageRate => "message_rate",
    /// A byte rate (the tenant's or the connection's).
    ByteRate => "byte_rate",
    /// `outbound_bytes_per_sec` (its clients' writes were held back).
    OutboundRate => "outbound_rate",
    /// `http_publish_per_sec`.
    HttpRate => "http_rate",
}

/// A connection's own quotas, settled at CONNECT (boxed in the link, and only when one
/// applies: most connections have none).
#[derive(Debug, Default)]
pub struct LinkQuota {
    /// Its message and byte rates.
    pub rates: Option<Box<ConnectionRates>>,
    /// Subscriptions it may hold (its tenant's `max_subscriptions_per_client`, narrowed).
    pub max_subscriptions: Option<u64>,
    /// Highest QoS it may publish and be granted (its tenant's, narrowed).
    pub max_qos: Option<u8>,
    /// Largest payload it may publish.
    pub max_payload: Option<u32>,
    /// Whether it may set retained messages.
    pub retain: Option<bool>,
    /// Largest packet it may send (told to a v5 client).
    pub max_packet_size: Option<u32>,
}

/// A connection counted in its tenant's open connections until it is dropped; derefs to
/// the tenant. Taken before the quota is checked, so that a storm of CONNECTs on every
/// worker at once cannot pass `max_connections` between a check and a count.
#[derive(Debug)]
pub struct Slot(Arc<Tenant>);

impl Slot {
    fn take(tenant: Arc<Tenant>) -> (Slot, u64) {
        let before = tenant.usage.connections.fetch_add(1, Ordering::AcqRel);
        (Slot(tenant), before)
    }
}

impl std::ops::Deref for Slot {
    type Target = Arc<Tenant>;

    fn deref(&self) -> &Arc<Tenant> {
        &self.0
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.usage.connections.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What a CONNECT would add to its tenant's sessions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NewSessions {
    /// A session (none exists for the client id).
    pub session: bool,
    /// A persistent session (it asks for an expiry above 0, and the session it resumes or
    /// replaces is not one).
    pub persistent: bool,
}

/// The tenant named `name` admits a connection: its protocol, its open connections, its
/// connect rate, its sessions and persistent sessions (what `adds` says the CONNECT adds).
/// Returns the connection's slot in its tenant and its own quotas, or the CONNACK code
/// refusing it (counted as a breach).
pub fn admit(
    broker: &Broker,
    name: &str,
    version: ProtocolVersion,
    adds: impl FnOnce(&Tenant) -> NewSessions,
    client: Option<ClientLimits>,
) -> Result<(Slot, Option<Box<LinkQuota>>), ReasonCode> {
    let cfg = broker.config();
    let defaults = &cfg.tenants.defaults;
    let tenant = if cfg.tenants.require_known && !name.is_empty() {
        // An unknown name creates nothing: a client cannot make tenants up.
        match broker.find_tenant(name) {
            Some(t) if t.known() => t,
            _ => return Err(ReasonCode::NotAuthorized),
        }
    } else {
        broker.tenant(name)
    };
    let own = tenant.own();
    let refuse = |breach: Breach, v5_code: ReasonCode| {
        tenant.usage.breach(breach);
        if version.is_v5() || v5_code == ReasonCode::UnsupportedProtocolVersion {
            v5_code
        } else {
            ReasonCode::ServerUnavailable
        }
    };
    let label = match version {
        ProtocolVersion::V3_1 => "3.1",
        ProtocolVersion::V3_1_1 => "3.1.1",
        ProtocolVersion::V5 => "5",
    };
    if let Some(allowed) = own.protocols.as_ref().or(defaults.protocols.as_ref())
        && !allowed.iter().any(|p| p == label)
    {
        return Err(refuse(
            Breach::Protocol,
            ReasonCode::UnsupportedProtocolVersion,
        ));
    }
    let (slot, before) = Slot::take(tenant.clone());
    if let Some(max) = own.max_connections.or(defaults.max_connections)
        && before >= max
    {
        // The slot goes back as it drops.
        return Err(refuse(Breach::Connections, ReasonCode::QuotaExceeded));
    }
    if let Some(rates) = tenant.rates.current(&own, defaults)
        && !rates.connect()
    {
        return Err(refuse(
            Breach::ConnectRate,
            ReasonCode::ConnectionRateExceeded,
        ));
    }
    let max_sessions = own.max_sessions.or(defaults.max_sessions);
    let max_persistent = own
        .max_persistent_sessions
        .or(defaults.max_persistent_sessions);
    if max_sessions.is_some() || max_persistent.is_some() {
        let adds = adds(&tenant);
        if adds.session && max_sessions.is_some_and(|max| tenant.sessions.len() as u64 >= max) {
            return Err(refuse(Breach::Sessions, ReasonCode::QuotaExceeded));
        }
        if adds.persistent
            && max_persistent
                .is_some_and(|max| tenant.usage.persistent.load(Ordering::Acquire) >= max)
        {
            return Err(refuse(
                Breach::PersistentSessions,
                ReasonCode::QuotaExceeded,
            ));
        }
    }
    let client = client.unwrap_or_default();
    let quota = LinkQuota {
        rates: ConnectionRates::new(
            narrower(
                own.client_messages_per_sec
                    .or(defaults.client_messages_per_sec)
                    .map(u64::from),
                client.messages_per_sec.map(u64::from),
            ),
            narrower(
                own.client_bytes_per_sec.or(defaults.client_bytes_per_sec),
                client.bytes_per_sec.map(u64::from),
            ),
        ),
        max_subscriptions: narrower(
            own.max_subscriptions_per_client
                .or(defaults.max_subscriptions_per_client),
            client.max_subscriptions.map(u64::from),
        ),
        max_qos: narrower(own.max_qos.or(defaults.max_qos), client.max_qos),
        max_payload: own.max_payload_bytes.or(defaults.max_payload_bytes),
        retain: own.retain.or(defaults.retain),
        max_packet_size: own.max_packet_size.or(defaults.max_packet_size),
    };
    let any = quota.rates.is_some()
        || quota.max_subscriptions.is_some()
        || quota.max_qos.is_some()
        || quota.max_payload.is_some()
        || quota.retain.is_some()
        || quota.max_packet_size.is_some();
    drop(own);
    Ok((slot, any.then(|| Box::new(quota))))
}

/// Whether a retained `message` fits its tenant's bounds: its own `max_retained_*`, else
/// `[tenants.defaults]`'s, each at most the node's `limits.max_retained_*`; and its
/// `max_store_bytes` with what its offline sessions are owed. Else the quota it breaks.
pub fn retained_fits(tenant: &Tenant, message: &Message, config: &Config) -> Result<(), Breach> {
    let own = tenant.own();
    let defaults = &config.tenants.defaults;
    let node = &config.limits;
    let messages = own
        .max_retained_messages
        .or(defaults.max_retained_messages)
        .map_or(node.max_retained_messages as u64, |t| {
            t.min(node.max_retained_messages as u64)
        });
    let bytes = own
        .max_retained_bytes
        .or(defaults.max_retained_bytes)
        .map_or(node.max_retained_bytes as u64, |t| {
            t.min(node.max_retained_bytes as u64)
        });
    if !tenant.retained.admits_within(message, messages, bytes) {
        return Err(Breach::Retained);
    }
    if let Some(store) = own.max_store_bytes.or(defaults.max_store_bytes) {
        let owed = tenant.usage.offline_bytes.load(Ordering::Acquire);
        let room = store.saturating_sub(owed);
        if !tenant.retained.admits_within(message, u64::MAX, room) {
            return Err(Breach::Store);
        }
    }
    Ok(())
}

/// The smaller of two optional limits (`None`: no limit).
pub fn narrower<T: Ord>(a: Option<T>, b: Option<T>) -> Option<T> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}
