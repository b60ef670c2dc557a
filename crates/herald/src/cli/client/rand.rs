//! Random numbers for what needs no cryptographic strength: reconnect jitter, WebSocket
//! masking keys (RFC 6455 asks only that a server cannot predict them) and default client
//! ids. Seeds come from the operating system (ring's generator, already the TLS provider),
//! so that a fleet started at the same instant does not draw the same waits.

use ring::rand::{SecureRandom, SystemRandom};

/// Eight bytes from the operating system; the clock and the process id if it has none to give.
pub(super) fn os_u64() -> u64 {
    let mut bytes = [0u8; 8];
    if SystemRandom::new().fill(&mut bytes).is_ok() {
        return u64::from_le_bytes(bytes);
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ (u64::from(std::process::id()) << 32)
}

/// xorshift64*: small, fast, and good enough to spread waits.
#[derive(Debug, Clone)]
pub(super) struct XorShift(u64);

impl XorShift {
    /// A generator started from `seed` (0 is replaced: xorshift would stay at 0).
    pub(super) fn new(seed: u64) -> Self {
        XorShift(if seed == 0 {
            0x9E37_79B9_7F4A_7C15
        } else {
            seed
        })
    }

    /// The next 64 random bits.
    pub(super) fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in [0, 1).
    pub(super) fn unit(&mut self) -> f64 {
        // The top 53 bits: exactly the precision of an f64 mantissa.
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_stay_in_range_and_vary() {
        let mut rng = XorShift::new(0);
        let draws: Vec<f64> = (0..1000).map(|_| rng.unit()).collect();
        assert!(draws.iter().all(|u| (0.0..1.0).contains(u)));
        let mean = draws.iter().sum::<f64>() / draws.len() as f64;
        assert!((0.4..0.6).contains(&mean), "{mean}");
        assert_ne!(os_u64(), os_u64());
    }
}
