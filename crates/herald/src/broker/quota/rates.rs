//! Rate limiters: a tenant's (connect, messages, bytes, HTTP, outbound), rebuilt when its
//! settings change, and a connection's own.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwapOption;

use super::Breach;
use crate::config::TenantLimits;

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

/// A tenant's limiters, rebuilt when its rates change; and its outbound rate as last read
/// (asked at every write to its clients: two atomic loads, not its settings').
#[derive(Debug, Default)]
pub struct TenantRates {
    limiters: ArcSwapOption<Rates>,
    /// The `SETTINGS` generation `outbound` was read at.
    outbound_read: AtomicU64,
    /// Its `outbound_bytes_per_sec` (0: none).
    outbound: AtomicU64,
}

/// Bumped whenever any tenant's settings or the node's configuration change: what was read
/// from them before is read again.
static SETTINGS: AtomicU64 = AtomicU64::new(1);

/// Settings changed (`Tenant::set_own`, `Broker::set_config`).
pub fn settings_changed() {
    SETTINGS.fetch_add(1, Ordering::AcqRel);
}

impl TenantRates {
    /// The limiters for the tenant's `own` settings over `defaults` (rebuilt, losing their
    /// state, when the rates changed). Allocates nothing while they stay the same.
    pub fn current(&self, own: &TenantLimits, defaults: &TenantLimits) -> Option<Arc<Rates>> {
        let settings = Rates::settings(own, defaults);
        if settings.iter().all(Option::is_none) {
            return None;
        }
        if let Some(rates) = self.limiters.load_full()
            && rates.settings == settings
        {
            return Some(rates);
        }
        let fresh = Arc::new(Rates::new(settings));
        self.limiters.store(Some(fresh.clone()));
        Some(fresh)
    }

    /// The tenant's outbound rate, read from its settings (`read`) only when some settings
    /// changed since it last was.
    pub fn outbound_rate(&self, read: impl FnOnce() -> Option<u64>) -> Option<u64> {
        let generation = SETTINGS.load(Ordering::Acquire);
        if self.outbound_read.load(Ordering::Acquire) != generation {
            self.outbound.store(read().unwrap_or(0), Ordering::Relaxed);
            self.outbound_read.store(generation, Ordering::Release);
        }
        match self.outbound.load(Ordering::Relaxed) {
            0 => None,
            rate => Some(rate),
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::quota::narrower;

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
