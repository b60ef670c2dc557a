//! How long to wait before the next connection attempt: exponential backoff with full
//! jitter. The n-th consecutive failure waits a random time in [0, min(max, min · 2ⁿ)).
//!
//! Why full jitter: when a server restarts, every client it had loses its connection at the
//! same instant. Waits that only double would bring them back in synchronised waves, each
//! one a reconnect storm; drawing each wait uniformly below the ceiling spreads them over the
//! whole interval, and the doubling ceiling still backs off from a server that stays down.

use std::time::Duration;

use super::rand::XorShift;

/// The waits between connection attempts.
#[derive(Debug, Clone)]
pub(super) struct Backoff {
    /// The ceiling after the first failure.
    min: Duration,
    /// The ceiling never grows past this.
    max: Duration,
    /// Failures since the last connection that lasted (see `reset`).
    failures: u32,
    /// Draws the waits.
    rng: XorShift,
}

impl Backoff {
    /// Waits that start below `min` and never exceed `max`, drawn from `seed`.
    pub(super) fn new(min: Duration, max: Duration, seed: u64) -> Self {
        Backoff {
            min,
            max: max.max(min),
            failures: 0,
            rng: XorShift::new(seed),
        }
    }

    /// The ceiling of the next wait: `min · 2^failures`, at most `max`.
    pub(super) fn ceiling(&self) -> Duration {
        // 2^31 times any minimum is past any sensible maximum: the shift cannot overflow.
        let factor = 1u32 << self.failures.min(31);
        self.min.saturating_mul(factor).min(self.max)
    }

    /// Counts one more failure and returns how long to wait before the next attempt.
    pub(super) fn next_wait(&mut self) -> Duration {
        let ceiling = self.ceiling();
        self.failures = self.failures.saturating_add(1);
        ceiling.mul_f64(self.rng.unit())
    }

    /// Failures counted since the last reset.
    pub(super) fn failures(&self) -> u32 {
        self.failures
    }

    /// Starts again from `min`: called once a connection has lasted, so that a server
    /// that accepts and drops at once is still retried ever more slowly.
    pub(super) fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(30);

    #[test]
    fn the_ceiling_doubles_up_to_the_maximum() {
        let mut b = Backoff::new(MIN, MAX, 7);
        let mut ceilings = Vec::new();
        for _ in 0..12 {
            ceilings.push(b.ceiling().as_millis());
            b.next_wait();
        }
        assert_eq!(
            ceilings,
            [
                100, 200, 400, 800, 1600, 3200, 6400, 12800, 25600, 30000, 30000, 30000
            ]
        );
        for _ in 0..100 {
            b.next_wait();
        }
        assert_eq!(b.ceiling(), MAX, "no overflow after many failures");
        assert_eq!(b.failures(), 112);
    }

    #[test]
    fn waits_are_spread_below_the_ceiling() {
        let mut b = Backoff::new(MIN, MAX, 42);
        for _ in 0..10 {
            b.next_wait();
        }
        let waits: Vec<Duration> = (0..2000)
            .map(|_| {
                let w = b.next_wait();
                assert!(w < MAX, "{w:?}");
                w
            })
            .collect();
        // Full jitter: uniform over [0, 30 s), so both halves are used about equally.
        let low = waits.iter().filter(|w| **w < MAX / 2).count();
        assert!((800..1200).contains(&low), "{low} of 2000 below 15 s");
        assert!(waits.iter().any(|w| *w < Duration::from_secs(1)));
        assert!(waits.iter().any(|w| *w > Duration::from_secs(29)));
    }

    #[test]
    fn two_clients_seeded_differently_do_not_wait_alike() {
        let mut a = Backoff::new(MIN, MAX, 1);
        let mut b = Backoff::new(MIN, MAX, 2);
        let same = (0..20).filter(|_| a.next_wait() == b.next_wait()).count();
        assert_eq!(same, 0);
    }

    #[test]
    fn reset_starts_from_the_minimum_again() {
        let mut b = Backoff::new(MIN, MAX, 3);
        for _ in 0..5 {
            b.next_wait();
        }
        assert_eq!(b.ceiling(), Duration::from_millis(3200));
        b.reset();
        assert_eq!(b.ceiling(), MIN);
        assert!(b.next_wait() < MIN);
    }

    #[test]
    fn a_maximum_below_the_minimum_is_the_minimum() {
        let mut b = Backoff::new(Duration::from_secs(2), Duration::from_secs(1), 9);
        assert_eq!(b.ceiling(), Duration::from_secs(2));
        b.next_wait();
        assert_eq!(b.ceiling(), Duration::from_secs(2));
    }
}
