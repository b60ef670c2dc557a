//! Load averages as mosquitto publishes them (`$SYS/broker/load/.../1min`, `5min`,
//! `15min`): a counter's rate per minute, exponentially damped over each window like the
//! Unix load average. At each update over `secs` seconds in which the counter grew by
//! `delta`, the rate is `delta * 60 / secs` and each average becomes
//! `rate + e^(-secs / window) * (average - rate)` (mosquitto's `calc_load`), so updates at
//! any interval weigh by the time they cover.

/// The windows, in seconds, and the last level of their topics.
pub(super) const WINDOWS: [(f64, &str); 3] = [(60.0, "1min"), (300.0, "5min"), (900.0, "15min")];

/// One counter's averages over the three windows, per minute.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(super) struct Load {
    averages: [f64; 3],
}

impl Load {
    /// The counter grew by `delta` over the last `secs` seconds.
    pub(super) fn update(&mut self, delta: u64, secs: f64) {
        if secs <= 0.0 {
            return;
        }
        let rate = delta as f64 * 60.0 / secs;
        for (average, (window, _)) in self.averages.iter_mut().zip(WINDOWS) {
            let e = (-secs / window).exp();
            *average = rate + e * (*average - rate);
        }
    }

    /// The averages, per minute, in the order of `WINDOWS`.
    pub(super) fn averages(&self) -> [f64; 3] {
        self.averages
    }
}

/// A load as mosquitto writes it: two decimals.
pub(super) fn format(value: f64) -> String {
    format!("{value:.2}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_steady_rate_is_reached_by_every_window() {
        let mut load = Load::default();
        // 5 a second for three hours, updated every 10 seconds: 300 a minute.
        for _ in 0..1080 {
            load.update(50, 10.0);
        }
        for average in load.averages() {
            assert!((average - 300.0).abs() < 0.5, "{average}");
        }
        assert_eq!(format(load.averages()[0]), "300.00");
    }

    #[test]
    fn the_short_window_moves_first() {
        let mut load = Load::default();
        // One minute at 60 a minute from nothing: the 1-minute average reaches 1 - 1/e of
        // it, the longer ones less.
        load.update(60, 60.0);
        let [one, five, fifteen] = load.averages();
        assert!((one - 60.0 * (1.0 - (-1.0f64).exp())).abs() < 1e-9, "{one}");
        assert!(
            (five - 60.0 * (1.0 - (-0.2f64).exp())).abs() < 1e-9,
            "{five}"
        );
        assert!(one > five && five > fifteen && fifteen > 0.0);
        // Then silence: every average decays towards 0, the short one fastest.
        for _ in 0..6 {
            load.update(0, 10.0);
        }
        let [one_after, five_after, _] = load.averages();
        assert!(one_after < one / 2.0 && five_after > five * 0.8);
    }

    #[test]
    fn updates_weigh_by_the_time_they_cover() {
        // Ten updates of 6 seconds or one of 60, at the same rate: the same averages.
        let (mut many, mut one) = (Load::default(), Load::default());
        for _ in 0..10 {
            many.update(12, 6.0);
        }
        one.update(120, 60.0);
        for (a, b) in many.averages().iter().zip(one.averages()) {
            assert!((a - b).abs() < 1e-9, "{a} {b}");
        }
        // No time passed: nothing changes.
        let before = one;
        one.update(1000, 0.0);
        assert_eq!(one, before);
    }
}
