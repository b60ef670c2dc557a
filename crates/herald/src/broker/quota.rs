//! Tenants' quotas and rate limits, enforced inside the broker where each thing is decided
//! (not by a plugin answering yes or no): a tenant's own settings over `[tenants.defaults]`
//! (`Tenant::limits`), narrowed for one client by what its token or the callout says
//! (`hooks::ClientLimits`).
//!
//! | quota | checked at | a breach gets |
//! |---|---|---|
//! | `protocols` | CONNECT | CONNACK 0x84 Unsupported protocol version (3.1.1: 1) |
//! | `max_connections` | CONNECT | CONNACK 0x97 Quota exceeded (3.1.1: 3) |
//! | `connect_rate` | CONNECT | CONNACK 0x9F Connection rate exceeded (3.1.1: 3) |
//! | `max_sessions` | CONNECT making a new session | CONNACK 0x97 (3.1.1: 3) |
//! | `max_packet_size`, `max_qos`, `retain` | CONNECT (told to v5 clients), then each PUBLISH | as the node's own: DISCONNECT 0x95, 0x9B, 0x9A |
//! | `max_subscriptions`, `max_subscriptions_per_client`, `max_shared_members` | each SUBSCRIBE filter | SUBACK 0x97 |
//! | `wildcards`, `shared_subscriptions` | each SUBSCRIBE filter | SUBACK 0xA2, 0x9E |
//! | `max_payload_bytes` | each PUBLISH | v5 PUBACK/PUBREC 0x97; 3.1.1 closes |
//! | `max_retained_messages`, `max_retained_bytes` | each retained PUBLISH | v5 PUBACK/PUBREC 0x97; the HTTP API 429 |
//! | `messages_per_sec`, `bytes_per_sec` (tenant), `client_*` (connection) | each PUBLISH | `rate_exceeded = "throttle"`: its socket is not read until the rate allows; `"refuse"`: v5 PUBACK/PUBREC 0x97 (0x96 Message rate too high may only be said in a DISCONNECT; QoS 0 dropped), 3.1.1 closes |
//!
//! Every breach is counted per tenant and reason ([`Breach`]). Rates are GCRA limiters
//! (governor), one per tenant and rate, rebuilt when the settings change; a connection's own
//! rates are fixed when it connects.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use mqtt_codec::{ProtocolVersion, ReasonCode};

use super::hooks::ClientLimits;
use super::{Broker, Tenant};
use crate::config::TenantLimits;

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
    /// A message rate (the tenant's or the connection's).
    MessageRate => "message_rate",
    /// A byte rate (the tenant's or the connection's).
    ByteRate => "byte_rate",
    /// `http_publish_per_sec`.
    HttpRate => "http_rate",
}

/// What a tenant is using, and its breaches.
#[derive(Debug, Default)]
pub struct Usage {
    /// Open connections.
    pub connections: AtomicU64,
    /// Messages published into the tenant (by its clients, its wills, the HTTP API).
    pub published: AtomicU64,
    breaches: [AtomicU64; Breach::ALL.len()],
}

impl Usage {
    /// Counts a breach of `quota`.
    pub fn breach(&self, quota: Breach) {
        self.breaches[quota as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Breaches of `quota` so far.
    pub fn breaches(&self, quota: Breach) -> u64 {
        self.breaches[quota as usize].load(Ordering::Relaxed)
    }
}

/// A GCRA limiter of `per_second` (a burst of one second's worth), with its rate.
#[derive(Debug)]
struct Limiter {
    per_second: u64,
    gcra: DefaultDirectRateLimiter,
}

fn limiter(per_second: u64) -> Option<Limiter> {
    let n = NonZeroU32::new(per_second.min(u64::from(u32::MAX)) as u32)?;
    Some(Limiter {
        per_second: u64::from(n.get()),
        gcra: RateLimiter::direct(Quota::per_second(n)),
    })
}

/// Takes `n` from `limiter`: `None` when allowed, else how long to hold the sender back. A
/// refused `n` was taken all the same (the message was read: throttling cannot un-read
/// it), so the wait is until the limiter allows again plus what `n` costs at the rate:
/// over time the sender keeps to the rate. An `n` larger than a whole second's allowance
/// waits a second for each second's worth.
fn take(limiter: &Limiter, n: u64) -> Option<Duration> {
    let n = n.clamp(1, u64::from(u32::MAX));
    let cost = Duration::from_secs_f64(n as f64 / limiter.per_second as f64);
    let count = NonZeroU32::new(n as u32)?;
    match limiter.gcra.check_n(count) {
        Ok(Ok(())) => None,
        Ok(Err(not_until)) => Some(not_until.wait_time_from(DefaultClock::default().now()) + cost),
        Err(_) => Some(cost),
    }
}

/// Takes one message of `bytes` from a message and a byte rate: `None` when both allow it,
/// else which one it broke and how long to hold the sender back.
fn publish(
    messages: Option<&Limiter>,
    bytes: Option<&Limiter>,
    n: u64,
) -> Option<(Breach, Duration)> {
    if let Some(wait) = messages.and_then(|l| take(l, 1)) {
        return Some((Breach::MessageRate, wait));
    }
    bytes
        .and_then(|l| take(l, n))
        .map(|wait| (Breach::ByteRate, wait))
}

/// A tenant's rate limiters, for the rates its settings name.
#[derive(Debug)]
pub struct Rates {
    settings: [Option<u64>; 4],
    connect: Option<Limiter>,
    messages: Option<Limiter>,
    bytes: Option<Limiter>,
    http: Option<Limiter>,
}

impl Rates {
    fn settings(own: &TenantLimits, defaults: &TenantLimits) -> [Option<u64>; 4] {
        [
            own.connect_rate.or(defaults.connect_rate).map(u64::from),
            own.messages_per_sec
                .or(defaults.messages_per_sec)
                .map(u64::from),
            own.bytes_per_sec.or(defaults.bytes_per_sec),
            own.http_publish_per_sec
                .or(defaults.http_publish_per_sec)
                .map(u64::from),
        ]
    }

    fn new(settings: [Option<u64>; 4]) -> Rates {
        let make = |s: Option<u64>| s.and_then(limiter);
        Rates {
            settings,
            connect: make(settings[0]),
            messages: make(settings[1]),
            bytes: make(settings[2]),
            http: make(settings[3]),
        }
    }
}

/// A tenant's limiters, rebuilt when its rates change.
#[derive(Debug, Default)]
pub struct TenantRates(ArcSwapOption<Rates>);

impl TenantRates {
    /// The limiters for the tenant's `own` settings over `defaults` (rebuilt, losing their
    /// state, when the rates changed). Allocates nothing while they stay the same.
    pub fn current(&self, own: &TenantLimits, defaults: &TenantLimits) -> Option<Arc<Rates>> {
        let settings = Rates::settings(own, defaults);
        if settings.iter().all(Option::is_none) {
            return None;
        }
        if let Some(rates) = self.0.load_full()
            && rates.settings == settings
        {
            return Some(rates);
        }
        let fresh = Arc::new(Rates::new(settings));
        self.0.store(Some(fresh.clone()));
        Some(fresh)
    }
}

impl Rates {
    /// Whether one more connection may come now.
    pub fn connect(&self) -> bool {
        self.connect.as_ref().is_none_or(|l| take(l, 1).is_none())
    }

    /// Whether one more HTTP publication may come now; else how long until one may.
    pub fn http(&self) -> Option<Duration> {
        self.http.as_ref().and_then(|l| take(l, 1))
    }

    /// Takes one message of `bytes`: `None` when the tenant's rates allow it, else which rate
    /// it broke and how long until they would.
    pub fn publish(&self, bytes: u64) -> Option<(Breach, Duration)> {
        publish(self.messages.as_ref(), self.bytes.as_ref(), bytes)
    }
}

/// One connection's own rates (its tenant's `client_*`, narrowed by its token or the
/// callout), fixed when it connects.
#[derive(Debug)]
pub struct ConnectionRates {
    messages: Option<Limiter>,
    bytes: Option<Limiter>,
}

impl ConnectionRates {
    /// Limiters for these rates (`None` when there is none).
    pub fn new(messages: Option<u64>, bytes: Option<u64>) -> Option<Box<ConnectionRates>> {
        let rates = ConnectionRates {
            messages: messages.and_then(limiter),
            bytes: bytes.and_then(limiter),
        };
        (rates.messages.is_some() || rates.bytes.is_some()).then(|| Box::new(rates))
    }

    /// As [`Rates::publish`], for this connection.
    pub fn publish(&self, bytes: u64) -> Option<(Breach, Duration)> {
        publish(self.messages.as_ref(), self.bytes.as_ref(), bytes)
    }
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

/// The tenant named `name` admits a connection: its protocol, its open connections, its
/// connect rate, its sessions (when `new_session`). Returns the connection's slot in its
/// tenant and its own quotas, or the CONNACK code refusing it (counted as a breach).
pub fn admit(
    broker: &Broker,
    name: &str,
    version: ProtocolVersion,
    new_session: impl FnOnce(&Tenant) -> bool,
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
    if let Some(max) = own.max_sessions.or(defaults.max_sessions)
        && new_session(&tenant)
        && tenant.sessions.len() as u64 >= max
    {
        return Err(refuse(Breach::Sessions, ReasonCode::QuotaExceeded));
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

/// The smaller of two optional limits (`None`: no limit).
pub fn narrower<T: Ord>(a: Option<T>, b: Option<T>) -> Option<T> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_allow_a_second_and_then_say_how_long() {
        let limits = TenantLimits {
            messages_per_sec: Some(5),
            ..TenantLimits::default()
        };
        let rates = TenantRates::default();
        let none = TenantLimits::default();
        let r = rates.current(&limits, &none).expect("a rate");
        let allowed = (0..20).filter(|_| r.publish(10).is_none()).count();
        assert_eq!(allowed, 5, "a second's worth at once");
        let (breach, wait) = r.publish(10).expect("over");
        assert_eq!(breach, Breach::MessageRate);
        // Until the next allowance, and the refused message's own share.
        assert!(wait <= Duration::from_millis(400), "{wait:?}");
        assert!(wait >= Duration::from_millis(200), "{wait:?}");
        // The same settings keep the same limiters; new ones start afresh.
        assert!(Arc::ptr_eq(
            &r,
            &rates.current(&limits, &none).expect("a rate")
        ));
        // A tenant's own rate wins over the default's.
        let more = TenantLimits {
            messages_per_sec: Some(50),
            ..TenantLimits::default()
        };
        let fresh = rates.current(&more, &limits).expect("a rate");
        assert!(fresh.publish(10).is_none());
        assert!(rates.current(&none, &none).is_none());
    }

    #[test]
    fn a_connection_s_byte_rate() {
        let c = ConnectionRates::new(None, Some(1000)).expect("a rate");
        assert!(c.publish(600).is_none());
        assert_eq!(c.publish(600).map(|(b, _)| b), Some(Breach::ByteRate));
        // Larger than a second's allowance: five seconds' worth of wait, never a panic.
        assert_eq!(
            c.publish(5000).map(|(_, w)| w),
            Some(Duration::from_secs(5))
        );
        assert!(ConnectionRates::new(None, None).is_none());
        assert_eq!(narrower(Some(3), Some(5)), Some(3));
        assert_eq!(narrower(None, Some(5)), Some(5));
    }
}
