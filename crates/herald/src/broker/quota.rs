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
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwapOption;

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

/// What a tenant is using, and its breaches.
#[derive(Debug, Default)]
pub struct Usage {
    /// Open connections.
    pub connections: AtomicU64,
    /// Messages published into the tenant (by its clients, its wills, the HTTP API).
    pub published: AtomicU64,
    /// Topic and payload bytes of those messages.
    pub published_bytes: AtomicU64,
    /// Messages written to the tenant's clients.
    pub delivered: AtomicU64,
    /// Bytes written to the tenant's clients for them (PUBLISH packets).
    pub delivered_bytes: AtomicU64,
    /// Sessions that outlive their connection (expiry above 0), connected or not.
    pub persistent: AtomicU64,
    /// QoS 1/2 deliveries waiting in the queues of the tenant's offline sessions, and their
    /// topic and payload bytes (each copy counted: what the sessions are owed).
    pub offline_messages: AtomicU64,
    /// See `offline_messages`.
    pub offline_bytes: AtomicU64,
    breaches: [AtomicU64; Breach::ALL.len()],
    /// The last two samples of the traffic counters (`sample`), for per-second rates.
    samples: std::sync::Mutex<Option<(Sample, Sample)>>,
}

/// A tenant's traffic counters at one instant.
#[derive(Debug, Clone, Copy)]
struct Sample {
    at: std::time::Instant,
    counts: [u64; 4],
}

/// A tenant's traffic a second, over the last sampling window.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Traffic {
    /// Messages published into the tenant.
    pub published: f64,
    /// Their bytes.
    pub published_bytes: f64,
    /// Messages written to its clients.
    pub delivered: f64,
    /// Their bytes.
    pub delivered_bytes: f64,
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

    /// Counts a message of `bytes` published into the tenant.
    pub fn note_published(&self, bytes: usize) {
        self.published.fetch_add(1, Ordering::Relaxed);
        self.published_bytes
            .fetch_add(bytes as u64, Ordering::Relaxed);
    }

    fn counts(&self) -> [u64; 4] {
        [
            self.published.load(Ordering::Relaxed),
            self.published_bytes.load(Ordering::Relaxed),
            self.delivered.load(Ordering::Relaxed),
            self.delivered_bytes.load(Ordering::Relaxed),
        ]
    }

    /// Takes a sample of the traffic counters (the API does, every few seconds), keeping it
    /// and the one before.
    pub fn sample(&self) {
        let now = Sample {
            at: std::time::Instant::now(),
            counts: self.counts(),
        };
        let mut s = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        *s = Some(match *s {
            Some((_, last)) => (last, now),
            None => (now, now),
        });
    }

    /// Traffic a second since the older of the last two samples (zeros before the first).
    pub fn rates(&self) -> Traffic {
        let Some((then, _)) = *self.samples.lock().unwrap_or_else(|p| p.into_inner()) else {
            return Traffic::default();
        };
        let now = self.counts();
        let secs = then.at.elapsed().as_secs_f64().max(0.001);
        let rate =
            |i: usize| (now[i].saturating_sub(then.counts[i]) as f64 / secs * 10.0).round() / 10.0;
        Traffic {
            published: rate(0),
            published_bytes: rate(1),
            delivered: rate(2),
            delivered_bytes: rate(3),
        }
    }

    /// Moves `messages` deliveries of `bytes` into (`add`) or out of the offline count.
    pub fn offline(&self, add: bool, messages: usize, bytes: usize) {
        if messages == 0 {
            return;
        }
        let (m, b) = (messages as u64, bytes as u64);
        if add {
            self.offline_messages.fetch_add(m, Ordering::AcqRel);
            self.offline_bytes.fetch_add(b, Ordering::AcqRel);
        } else {
            self.offline_messages.fetch_sub(m, Ordering::AcqRel);
            self.offline_bytes.fetch_sub(b, Ordering::AcqRel);
        }
    }

    /// Counts one more (`add`) or one fewer persistent session.
    pub fn persistent(&self, add: bool) {
        if add {
            self.persistent.fetch_add(1, Ordering::AcqRel);
        } else {
            self.persistent.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// The bounds on what a tenant's offline sessions may be owed (`max_offline_queued_*`,
/// `max_store_bytes` less its retained bytes), and where they are counted. Made per
/// publication; its settings are read only when a copy goes to an offline session.
pub struct Offline<'a> {
    tenant: &'a Tenant,
    defaults: &'a TenantLimits,
    /// (messages, bytes), read once.
    bounds: std::cell::OnceCell<(u64, u64)>,
}

impl<'a> Offline<'a> {
    /// The bounds of `tenant`, its own settings over `defaults`.
    pub fn new(tenant: &'a Tenant, defaults: &'a TenantLimits) -> Offline<'a> {
        Offline {
            tenant,
            defaults,
            bounds: std::cell::OnceCell::new(),
        }
    }

    fn bounds(&self) -> (u64, u64) {
        *self.bounds.get_or_init(|| {
            let own = self.tenant.own();
            let d = self.defaults;
            let messages = own
                .max_offline_queued_messages
                .or(d.max_offline_queued_messages);
            let mut bytes = own.max_offline_queued_bytes.or(d.max_offline_queued_bytes);
            if let Some(store) = own.max_store_bytes.or(d.max_store_bytes) {
                let room = store.saturating_sub(self.tenant.retained.bytes() as u64);
                bytes = Some(bytes.map_or(room, |b| b.min(room)));
            }
            (messages.unwrap_or(u64::MAX), bytes.unwrap_or(u64::MAX))
        })
    }

    /// Counts a delivery of `bytes` queued for an offline session, if the bounds allow it;
    /// else counts the breach and says which (counted before it is checked, and taken back
    /// if over: however many workers queue at once, the bound holds).
    pub fn take(&self, bytes: usize) -> Result<(), Breach> {
        let usage = &self.tenant.usage;
        let (max_messages, max_bytes) = self.bounds();
        let b = bytes as u64;
        let before_m = usage.offline_messages.fetch_add(1, Ordering::AcqRel);
        let before_b = usage.offline_bytes.fetch_add(b, Ordering::AcqRel);
        if before_m < max_messages && before_b.saturating_add(b) <= max_bytes {
            return Ok(());
        }
        usage.offline(false, 1, bytes);
        let own = self.tenant.own();
        let by_store = before_m < max_messages
            && own
                .max_offline_queued_bytes
                .or(self.defaults.max_offline_queued_bytes)
                .is_none_or(|q| before_b.saturating_add(b) <= q);
        let breach = if by_store {
            Breach::Store
        } else {
            Breach::OfflineQueue
        };
        usage.breach(breach);
        Err(breach)
    }
}

/// A GCRA limiter of `per_second`, with a burst of one second's worth: its theoretical
/// arrival time in an atomic, moved by compare-and-swap (every worker may take from one
/// tenant's limiter at the same instant). Our own rather than governor's (which the per-IP
/// connect limit uses): governor never records what it refuses, but a throttled message
/// was already read and is accepted, so it must be paid for (`take`), or a throttled
/// sender would get half as much again as its rate.
#[derive(Debug)]
struct Limiter {
    /// Nanoseconds one unit costs.
    unit_ns: f64,
    /// Theoretical arrival time (nanoseconds on `clock_ns`).
    tat: AtomicU64,
}

/// The burst: a second's worth.
const BURST_NS: u64 = 1_000_000_000;

/// Nanoseconds since the first call in this process.
fn clock_ns() -> u64 {
    static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    EPOCH
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_nanos() as u64
}

fn limiter(per_second: u64) -> Option<Limiter> {
    (per_second > 0).then(|| Limiter {
        unit_ns: 1e9 / per_second as f64,
        tat: AtomicU64::new(0),
    })
}

impl Limiter {
    /// What `n` units cost, in nanoseconds.
    fn cost(&self, n: u64) -> u64 {
        (n.max(1) as f64 * self.unit_ns).min(u64::MAX as f64 / 4.0) as u64
    }

    /// Takes `n` if the rate allows it now: `None`; else nothing is taken, and how long
    /// until it would be (for what is refused: a CONNECT, an HTTP publication, a PUBLISH
    /// in `rate_exceeded = "refuse"`). An `n` larger than a second's worth passes only
    /// when the limiter is idle.
    fn check(&self, n: u64) -> Option<Duration> {
        let cost = self.cost(n);
        let mut tat = self.tat.load(Ordering::Acquire);
        loop {
            let now = clock_ns();
            let base = tat.max(now);
            let next = base + cost;
            if next > now + BURST_NS && base > now {
                let wait = (next - BURST_NS).saturating_sub(now).min(base - now);
                return Some(Duration::from_nanos(wait.max(1)));
            }
            match self
                .tat
                .compare_exchange_weak(tat, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return None,
                Err(seen) => tat = seen,
            }
        }
    }

    /// Takes `n` whatever the rate (it was accepted already): `None` while within it, else
    /// how long to hold the sender back so that over time it keeps to the rate.
    fn take(&self, n: u64) -> Option<Duration> {
        let cost = self.cost(n);
        let mut tat = self.tat.load(Ordering::Acquire);
        loop {
            let now = clock_ns();
            let next = tat.max(now) + cost;
            match self
                .tat
                .compare_exchange_weak(tat, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => {
                    return (next > now + BURST_NS)
                        .then(|| Duration::from_nanos(next - BURST_NS - now));
                }
                Err(seen) => tat = seen,
            }
        }
    }
}

/// Takes one message of `bytes` from a message and a byte rate: `None` when both allow it,
/// else which one it broke and how long to hold the sender back. `pay`: the message is
/// accepted whatever the rates say (throttling), so both take it; else neither takes a
/// refused one.
fn publish(
    messages: Option<&Limiter>,
    bytes: Option<&Limiter>,
    n: u64,
    pay: bool,
) -> Option<(Breach, Duration)> {
    if pay {
        let m = messages
            .and_then(|l| l.take(1))
            .map(|w| (Breach::MessageRate, w));
        let b = bytes.and_then(|l| l.take(n)).map(|w| (Breach::ByteRate, w));
        return longer(m, b);
    }
    if let Some(wait) = messages.and_then(|l| l.check(1)) {
        return Some((Breach::MessageRate, wait));
    }
    bytes
        .and_then(|l| l.check(n))
        .map(|wait| (Breach::ByteRate, wait))
}

/// The longer of two holds.
pub fn longer(
    a: Option<(Breach, Duration)>,
    b: Option<(Breach, Duration)>,
) -> Option<(Breach, Duration)> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if b.1 > a.1 { b } else { a }),
        (a, b) => a.or(b),
    }
}

/// A tenant's rate limiters, for the rates its settings name.
#[derive(Debug)]
pub struct Rates {
    settings: [Option<u64>; 5],
    connect: Option<Limiter>,
    messages: Option<Limiter>,
    bytes: Option<Limiter>,
    http: Option<Limiter>,
    outbound: Option<Limiter>,
}

impl Rates {
    fn settings(own: &TenantLimits, defaults: &TenantLimits) -> [Option<u64>; 5] {
        [
            own.connect_rate.or(defaults.connect_rate).map(u64::from),
            own.messages_per_sec
                .or(defaults.messages_per_sec)
                .map(u64::from),
            own.bytes_per_sec.or(defaults.bytes_per_sec),
            own.http_publish_per_sec
                .or(defaults.http_publish_per_sec)
                .map(u64::from),
            own.outbound_bytes_per_sec
                .or(defaults.outbound_bytes_per_sec),
        ]
    }

    fn new(settings: [Option<u64>; 5]) -> Rates {
        let make = |s: Option<u64>| s.and_then(limiter);
        Rates {
            settings,
            connect: make(settings[0]),
            messages: make(settings[1]),
            bytes: make(settings[2]),
            http: make(settings[3]),
            outbound: make(settings[4]),
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
        self.connect.as_ref().is_none_or(|l| l.check(1).is_none())
    }

    /// Whether one more HTTP publication may come now; else how long until one may.
    pub fn http(&self) -> Option<Duration> {
        self.http.as_ref().and_then(|l| l.check(1))
    }

    /// Takes `bytes` written to one of the tenant's clients: `None` when its outbound rate
    /// allows them, else how long its connections write nothing more.
    pub fn outbound(&self, bytes: u64) -> Option<Duration> {
        self.outbound.as_ref().and_then(|l| l.take(bytes))
    }

    /// Takes one message of `bytes`: `None` when the tenant's rates allow it, else which rate
    /// it broke and how long until they would.
    pub fn publish(&self, bytes: u64, pay: bool) -> Option<(Breach, Duration)> {
        publish(self.messages.as_ref(), self.bytes.as_ref(), bytes, pay)
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
    pub fn publish(&self, bytes: u64, pay: bool) -> Option<(Breach, Duration)> {
        publish(self.messages.as_ref(), self.bytes.as_ref(), bytes, pay)
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
        let allowed = (0..20).filter(|_| r.publish(10, false).is_none()).count();
        assert_eq!(allowed, 5, "a second's worth at once");
        let (breach, wait) = r.publish(10, false).expect("over");
        assert_eq!(breach, Breach::MessageRate);
        // Until the next allowance: the refused ones took nothing.
        assert!(wait <= Duration::from_millis(200), "{wait:?}");
        assert!(wait >= Duration::from_millis(150), "{wait:?}");
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
        assert!(fresh.publish(10, false).is_none());
        assert!(rates.current(&none, &none).is_none());
    }

    #[test]
    fn a_connection_s_byte_rate() {
        let c = ConnectionRates::new(None, Some(1000)).expect("a rate");
        assert!(c.publish(600, false).is_none());
        assert_eq!(
            c.publish(600, false).map(|(b, _)| b),
            Some(Breach::ByteRate)
        );
        // Larger than a second's allowance: refused until the limiter is idle, never a
        // panic; throttled, it is paid for (4.6 s past the burst).
        let (_, wait) = c.publish(5000, false).expect("over");
        assert!(wait <= Duration::from_millis(600), "{wait:?}");
        let (_, wait) = c.publish(5000, true).expect("over");
        assert!(wait > Duration::from_millis(4_400), "{wait:?}");
        assert!(wait <= Duration::from_millis(4_600), "{wait:?}");
        assert!(ConnectionRates::new(None, None).is_none());
        assert_eq!(narrower(Some(3), Some(5)), Some(3));
        assert_eq!(narrower(None, Some(5)), Some(5));
    }

    #[test]
    fn throttled_messages_are_paid_for() {
        // 5 a second: a second's worth passes; each one after it, accepted all the same,
        // holds the sender back a fifth of a second longer than the one before: over time
        // it keeps to the rate, not half as much again.
        let c = ConnectionRates::new(Some(5), None).expect("a rate");
        let waits: Vec<Option<Duration>> = (0..10)
            .map(|_| c.publish(1, true).map(|(_, w)| w))
            .collect();
        assert!(waits[..5].iter().all(Option::is_none), "{waits:?}");
        for (i, wait) in waits[5..].iter().enumerate() {
            let wait = wait.expect("over");
            let expected = Duration::from_millis(200 * (i as u64 + 1));
            assert!(wait <= expected, "{i}: {wait:?}");
            assert!(
                wait + Duration::from_millis(50) >= expected,
                "{i}: {wait:?}"
            );
        }
    }
}
