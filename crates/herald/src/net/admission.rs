//! Admission before any handshake: new connections a second per source address
//! (`limits.connect_rate_per_ip`, `limits.connect_burst_per_ip`).
//!
//! A flood of connections from one address is closed as each is accepted (after its PROXY
//! header on listeners that take one, so the address is the client's), before a TLS or
//! WebSocket handshake costs anything: the flood's cost is an accept and a close, and
//! clients from other addresses still connect. Each closed connection is counted
//! (`connect_rate_limited`). The limiter is a keyed GCRA (governor); addresses idle for
//! longer than their burst takes to refill are forgotten by the periodic sweep, so its
//! memory follows the addresses active in the last seconds, not every address ever seen.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::broker::Broker;

/// The per-address connection rate, rebuilt when its settings change (a reload).
#[derive(Default)]
pub struct Admission {
    current: ArcSwapOption<Limiter>,
}

struct Limiter {
    rate: u32,
    burst: u32,
    keyed: DefaultKeyedRateLimiter<IpAddr>,
}

impl std::fmt::Debug for Admission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let current = self.current.load();
        f.debug_struct("Admission")
            .field("rate", &current.as_ref().map(|l| (l.rate, l.burst)))
            .finish()
    }
}

impl Admission {
    /// Whether a new connection from `ip` may go on (the caller counts a refusal:
    /// `CloseReason::ConnectRateLimited`).
    pub fn admit(&self, broker: &Broker, ip: IpAddr) -> bool {
        let (rate, burst) = {
            let limits = &broker.config().limits;
            (limits.connect_rate_per_ip, limits.connect_burst_per_ip)
        };
        let Some(per_second) = NonZeroU32::new(rate) else {
            return true;
        };
        let burst = NonZeroU32::new(burst).unwrap_or(per_second);
        let mut current = self.current.load_full();
        if current
            .as_ref()
            .is_none_or(|l| l.rate != rate || l.burst != burst.get())
        {
            let fresh = Arc::new(Limiter {
                rate,
                burst: burst.get(),
                keyed: RateLimiter::keyed(Quota::per_second(per_second).allow_burst(burst)),
            });
            self.current.store(Some(fresh.clone()));
            current = Some(fresh);
        }
        current.is_none_or(|l| l.keyed.check_key(&ip).is_ok())
    }

    /// Forgets addresses whose allowance has refilled (called by the periodic sweep).
    pub fn sweep(&self) {
        if let Some(l) = self.current.load().as_ref() {
            l.keyed.retain_recent();
            l.keyed.shrink_to_fit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_address_is_held_back_and_others_are_not() {
        let mut config = crate::config::Config::default();
        config.limits.connect_rate_per_ip = 1;
        config.limits.connect_burst_per_ip = 3;
        let broker = Broker::new(config, 10);
        let admission = Admission::default();
        let flood: IpAddr = "10.0.0.1".parse().unwrap();
        let admitted = (0..10).filter(|_| admission.admit(&broker, flood)).count();
        assert_eq!(admitted, 3, "the burst, then nothing within the second");
        assert!(admission.admit(&broker, "10.0.0.2".parse().unwrap()));
        // Without a rate, everyone goes on.
        let open = Broker::new(crate::config::Config::default(), 10);
        assert!((0..100).all(|_| admission.admit(&open, flood)));
    }
}
