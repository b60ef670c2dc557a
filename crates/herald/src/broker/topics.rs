//! The busiest topics: which topics take the most publications, estimated by sampling, for
//! the dashboard and `GET /api/v1/topics`.
//!
//! Every `stride`-th publication, by the node's publication counter (which the broker counts
//! anyway, so sampling adds no shared write), is counted against its topic in a
//! Space-Saving summary of `CAPACITY` entries (Metwally, Agrawal and El Abbadi, 2005): a
//! topic not yet in a full summary takes the place of the least-counted one and inherits its
//! count as its error, so every topic published more than `1/CAPACITY` of the time is in it.
//! Each window (`roll`, called by the sampler every few seconds) the counts become rates and
//! the summary starts again. The stride is a power of two chosen from the last window's rate
//! so that about `TARGET_SAMPLES_PER_SEC` samples a second reach the summary's lock: below
//! that every publication is counted and the figures are exact; above it each sample stands
//! for `stride` publications. A sample that finds the lock taken (another worker is counting
//! one at the same instant) is skipped rather than waited for: the figures are estimates and
//! the publish path never queues behind the dashboard.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use mqtt_codec::ByteString;

/// Topics the summary holds at once.
const CAPACITY: usize = 128;

/// Samples a second the stride aims at, at most.
const TARGET_SAMPLES_PER_SEC: f64 = 2000.0;

/// One topic's rate over the last window.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicRate {
    /// The tenant ("" for the default one).
    pub tenant: ByteString,
    /// The topic name.
    pub topic: ByteString,
    /// Publications a second (estimated once sampling is on).
    pub per_sec: f64,
    /// How much of `per_sec` may belong to topics it displaced (0 when exact).
    pub error_per_sec: f64,
}

/// A counted topic in the summary.
#[derive(Debug, Clone, Copy, Default)]
struct Counted {
    count: u64,
    error: u64,
}

/// The summary of one window.
#[derive(Debug, Default)]
struct Summary {
    counts: HashMap<(ByteString, ByteString), Counted>,
}

impl Summary {
    fn note(&mut self, tenant: &ByteString, topic: &ByteString) {
        if let Some(c) = self.counts.get_mut(&(tenant.clone(), topic.clone())) {
            c.count += 1;
            return;
        }
        if self.counts.len() < CAPACITY {
            self.counts.insert(
                (tenant.clone(), topic.clone()),
                Counted { count: 1, error: 0 },
            );
            return;
        }
        let Some((least, counted)) = self
            .counts
            .iter()
            .min_by_key(|(_, c)| c.count)
            .map(|(k, c)| (k.clone(), *c))
        else {
            return;
        };
        self.counts.remove(&least);
        self.counts.insert(
            (tenant.clone(), topic.clone()),
            Counted {
                count: counted.count + 1,
                error: counted.count,
            },
        );
    }
}

/// The busiest topics of a node.
#[derive(Debug)]
pub struct Busiest {
    /// Count every `stride`-th publication (a power of two).
    stride: AtomicU64,
    /// This window's summary.
    summary: Mutex<Summary>,
    /// The last window's rates, busiest first, and what `roll` needs of the last window.
    last: Mutex<Window>,
}

/// The last window.
#[derive(Debug, Default)]
struct Window {
    rates: Vec<TopicRate>,
    /// The publication counter when it started.
    published: u64,
}

impl Default for Busiest {
    fn default() -> Busiest {
        Busiest {
            stride: AtomicU64::new(1),
            summary: Mutex::default(),
            last: Mutex::default(),
        }
    }
}

impl Busiest {
    /// Counts the publication numbered `n` (the publication counter before it) to `topic`,
    /// when it is a sample.
    #[inline]
    pub fn note(&self, n: u64, tenant: &ByteString, topic: &ByteString) {
        let stride = self.stride.load(Ordering::Relaxed);
        if n & (stride - 1) != 0 {
            return;
        }
        if let Ok(mut summary) = self.summary.try_lock() {
            summary.note(tenant, topic);
        }
    }

    /// Ends the window: the counts become rates over `secs` seconds, the next window's
    /// stride follows from the publications counted (`published`, the counter now).
    pub fn roll(&self, secs: f64, published: u64) {
        let secs = secs.max(0.001);
        let stride = self.stride.load(Ordering::Relaxed);
        let counts = match self.summary.lock() {
            Ok(mut s) => std::mem::take(&mut s.counts),
            Err(poisoned) => std::mem::take(&mut poisoned.into_inner().counts),
        };
        let scale = stride as f64 / secs;
        let mut rates: Vec<TopicRate> = counts
            .into_iter()
            .map(|((tenant, topic), c)| TopicRate {
                tenant,
                topic,
                per_sec: round1(c.count as f64 * scale),
                error_per_sec: round1(c.error as f64 * scale),
            })
            .collect();
        rates.sort_by(|a, b| {
            b.per_sec
                .total_cmp(&a.per_sec)
                .then_with(|| a.topic.cmp(&b.topic))
        });
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let rate = published.saturating_sub(last.published) as f64 / secs;
        self.stride
            .store(stride_for(rate, TARGET_SAMPLES_PER_SEC), Ordering::Relaxed);
        *last = Window { rates, published };
    }

    /// The last window's busiest topics of `tenant` (every tenant's with `None`), at most
    /// `limit`, busiest first.
    pub fn top(&self, tenant: Option<&str>, limit: usize) -> Vec<TopicRate> {
        let last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        last.rates
            .iter()
            .filter(|r| tenant.is_none_or(|t| *r.tenant == *t))
            .take(limit)
            .cloned()
            .collect()
    }

    /// The stride in force (1: every publication is counted).
    pub fn stride(&self) -> u64 {
        self.stride.load(Ordering::Relaxed)
    }
}

/// The power of two that brings `rate` publications a second down to at most `target`
/// samples a second.
fn stride_for(rate: f64, target: f64) -> u64 {
    let wanted = (rate / target).ceil().clamp(1.0, (1u64 << 32) as f64) as u64;
    wanted.next_power_of_two()
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn b(s: &str) -> ByteString {
        ByteString::from(s)
    }

    #[test]
    fn below_the_target_every_publication_counts_exactly() {
        let busiest = Busiest::default();
        let mut n = 0;
        for (topic, times) in [("a", 30), ("b", 10), ("c", 1)] {
            for _ in 0..times {
                busiest.note(n, &b(""), &b(topic));
                n += 1;
            }
        }
        busiest.roll(10.0, n);
        let top = busiest.top(None, 10);
        let got: Vec<(&str, f64, f64)> = top
            .iter()
            .map(|r| (&*r.topic, r.per_sec, r.error_per_sec))
            .collect();
        assert_eq!(got, [("a", 3.0, 0.0), ("b", 1.0, 0.0), ("c", 0.1, 0.0)]);
        assert_eq!(busiest.stride(), 1);
        // The next window starts empty.
        busiest.roll(10.0, n);
        assert!(busiest.top(None, 10).is_empty());
    }

    #[test]
    fn a_busy_node_samples_and_still_finds_its_heavy_topics() {
        let busiest = Busiest::default();
        // 100,000 a second over 1 s: the next window samples 1 in 64 (100,000 / 2,000 = 50).
        busiest.roll(1.0, 100_000);
        assert_eq!(busiest.stride(), 64);
        // Two heavy topics among 10,000 that are published once each.
        let mut n = 100_000u64;
        let mut publish = |topic: String| {
            busiest.note(n, &b("t1"), &b(&topic));
            n += 1;
        };
        for i in 0..64_000 {
            publish(if i % 2 == 0 {
                "hot/1".into()
            } else {
                "hot/2".into()
            });
            if i % 4 == 0 {
                publish(format!("cold/{i}"));
            }
        }
        busiest.roll(1.0, n);
        let top = busiest.top(Some("t1"), 2);
        assert_eq!(top.len(), 2, "{top:?}");
        for r in &top {
            assert!(r.topic.starts_with("hot/"), "{top:?}");
            // 32,000 each; sampled 1 in 64, so within a few percent (plus the error bound).
            assert!(
                (r.per_sec - 32_000.0).abs() <= 3_000.0 + r.error_per_sec,
                "{r:?}"
            );
        }
        assert!(busiest.top(Some("other"), 10).is_empty());
    }

    #[test]
    fn the_summary_keeps_a_bounded_number_of_topics() {
        let mut s = Summary::default();
        for i in 0..10 * CAPACITY {
            s.note(&b(""), &b(&format!("t/{i}")));
        }
        assert_eq!(s.counts.len(), CAPACITY);
        for _ in 0..5 {
            s.note(&b(""), &b("heavy"));
        }
        let heavy = s.counts.get(&(b(""), b("heavy"))).unwrap();
        assert!(heavy.count - heavy.error >= 5, "{heavy:?}");
    }

    #[test]
    fn strides_are_powers_of_two_from_the_rate() {
        assert_eq!(stride_for(0.0, 2000.0), 1);
        assert_eq!(stride_for(2000.0, 2000.0), 1);
        assert_eq!(stride_for(2001.0, 2000.0), 2);
        assert_eq!(stride_for(1_000_000.0, 2000.0), 512);
    }
}
