//! What the coordinating process and its worker processes say to each other: one JSON object
//! per line, the spec and commands on the worker's stdin, events on its stdout.
//!
//! Every run, even with one process, goes through workers: the parent coordinates, draws the
//! progress bar, samples the broker, and merges results; the workers hold the connections.
//! `--procs K` is therefore the same code path as one process, spread K ways.

use std::net::{IpAddr, SocketAddr};
use std::ops::Range;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::client::{ClientConfig, FailureCounts, Login, Target};
use crate::transport::{Connector, TransportSpec};

/// Everything one worker needs to play its part.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerSpec {
    /// This worker's number, 0-based.
    pub index: usize,
    /// How many workers share the run.
    pub count: usize,
    /// Broker addresses; client `j` uses `targets[j % len]`.
    pub targets: Vec<SocketAddr>,
    /// Broker addresses of publishers; publisher `i` uses `pub_targets[i % len]` (none:
    /// `targets`, continuing after the subscribers).
    #[serde(default)]
    pub pub_targets: Vec<SocketAddr>,
    /// Local source addresses; client `j` uses `sources[j % len]` (none: the kernel picks).
    pub sources: Vec<IpAddr>,
    /// MQTT protocol level: 3, 4 or 5.
    pub mqtt_level: u8,
    /// Keep-alive seconds announced by every client.
    pub keep_alive: u16,
    /// Per-operation timeout in milliseconds (connect, subscribe, ping).
    pub timeout_ms: u64,
    /// How clients reach the broker.
    pub transport: TransportSpec,
    /// The username and password of every client.
    #[serde(default)]
    pub login: Login,
    /// Unique per run, so client ids and topics never collide with another run's.
    pub run_id: String,
    /// The scenario and its parameters.
    pub scenario: ScenarioSpec,
}

impl WorkerSpec {
    /// The client settings the spec implies (reads the TLS CA file, if any).
    pub fn client_config(&self) -> anyhow::Result<ClientConfig> {
        Ok(crate::cli::client_config(
            self.mqtt_level,
            self.keep_alive,
            std::time::Duration::from_millis(self.timeout_ms),
            Connector::new(&self.transport)?,
            self.login.clone(),
        ))
    }

    /// Where global client number `j` connects, and from where.
    pub fn target(&self, j: usize) -> Target {
        Target {
            addr: self.targets[j % self.targets.len()],
            source: (!self.sources.is_empty()).then(|| self.sources[j % self.sources.len()]),
        }
    }

    /// Where publisher `i` of a traffic scenario with `subs` subscribers connects.
    pub fn pub_target(&self, subs: usize, i: usize) -> Target {
        if self.pub_targets.is_empty() {
            return self.target(subs + i);
        }
        let mut target = self.target(subs + i);
        target.addr = self.pub_targets[i % self.pub_targets.len()];
        target
    }

    /// This worker's share of `total` items.
    pub fn share(&self, total: usize) -> Range<usize> {
        share(self.index, self.count, total)
    }
}

/// Worker `index` of `count`'s contiguous share of `total` items.
pub fn share(index: usize, count: usize, total: usize) -> Range<usize> {
    (index * total / count)..((index + 1) * total / count)
}

/// The scenario a worker plays.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ScenarioSpec {
    /// Open and hold connections.
    Conns(crate::scenario::conns::ConnsSpec),
    /// Publishers and subscribers: fan-out, fan-in, pairs.
    Traffic(crate::scenario::traffic::TrafficSpec),
    /// Drop and reconnect everyone at once.
    Storm(crate::scenario::storm::StormSpec),
    /// Follow a draining (or stopped) node's clients to another node.
    NodeDrain(crate::scenario::node_drain::NodeDrainWorker),
    /// Many QoS 1 publishers into one subscriber, every message accounted for.
    FaninFlood(crate::scenario::flow::flood::FloodSpec),
    /// A fan-out with and without a subscriber that stops reading.
    Stalled(crate::scenario::flow::stalled::StalledSpec),
}

/// A command from the coordinator.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Command {
    /// Start the measured phase at this time (Unix nanoseconds).
    Go {
        /// When to start, so that every worker starts together.
        start_unix_ns: u64,
    },
    /// Check which connections are still alive.
    Check,
    /// Drop every connection and reconnect, with or without jittered backoff.
    Storm {
        /// Whether reconnects use jittered exponential backoff.
        backoff: bool,
    },
    /// Set up the next round of `stalled` and report `Ready`; `Go` starts it.
    Round {
        /// Whether the round has the subscriber that stops reading.
        stalled: bool,
    },
}

/// An event from a worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// Items done so far (connections opened, ...), for the progress bar.
    Progress {
        /// Count so far, for this worker.
        done: u64,
    },
    /// Set-up finished; waiting for a command.
    Ready {
        /// Clients connected.
        connected: u64,
        /// Clients that failed, by reason.
        failures: FailureCounts,
    },
    /// The scenario's (or the round's) result, shaped by the scenario.
    Result {
        /// The scenario's own result type, as JSON.
        data: serde_json::Value,
    },
    /// The worker hit an error it cannot go on from.
    Error {
        /// What happened.
        message: String,
    },
}

/// A latency histogram in microseconds, from 1 us to 5 minutes, 3 significant figures.
pub fn new_histogram() -> Histogram<u64> {
    match Histogram::new_with_bounds(1, 300_000_000, 3) {
        Ok(h) => h,
        Err(e) => panic!("fixed histogram bounds are valid: {e}"),
    }
}

/// A histogram's recorded values as (value, count) pairs, for sending between processes.
pub fn histogram_to_pairs(h: &Histogram<u64>) -> Vec<(u64, u64)> {
    h.iter_recorded()
        .map(|v| (v.value_iterated_to(), v.count_at_value()))
        .collect()
}

/// Adds (value, count) pairs into `h`.
pub fn merge_pairs(h: &mut Histogram<u64>, pairs: &[(u64, u64)]) {
    for &(value, count) in pairs {
        h.saturating_record_n(value, count);
    }
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Latency {
    /// Samples recorded.
    pub count: u64,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Largest.
    pub max_ms: f64,
}

impl Latency {
    /// Percentiles of a microsecond histogram.
    pub fn from_histogram(h: &Histogram<u64>) -> Self {
        let ms = |us: u64| us as f64 / 1000.0;
        Latency {
            count: h.len(),
            p50_ms: ms(h.value_at_quantile(0.50)),
            p90_ms: ms(h.value_at_quantile(0.90)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_cover_everything_once() {
        for count in 1..6 {
            let mut seen = Vec::new();
            for i in 0..count {
                seen.extend(share(i, count, 17));
            }
            assert_eq!(seen, (0..17).collect::<Vec<_>>());
        }
    }

    #[test]
    fn publishers_go_to_their_own_targets_when_given() {
        let a: SocketAddr = ([127, 0, 0, 1], 1).into();
        let b: SocketAddr = ([127, 0, 0, 1], 2).into();
        let c: SocketAddr = ([127, 0, 0, 1], 3).into();
        let mut spec = WorkerSpec {
            index: 0,
            count: 1,
            targets: vec![a, b],
            pub_targets: Vec::new(),
            sources: Vec::new(),
            mqtt_level: 4,
            keep_alive: 60,
            timeout_ms: 1000,
            transport: TransportSpec::default(),
            login: Login::default(),
            run_id: "r".into(),
            scenario: ScenarioSpec::Conns(crate::scenario::conns::ConnsSpec {
                conns: 1,
                ramp: 1.0,
                hold_s: 0.0,
            }),
        };
        // Without --pub-target, publishers continue after the subscribers over --target.
        assert_eq!(spec.pub_target(3, 0).addr, b);
        assert_eq!(spec.pub_target(3, 1).addr, a);
        spec.pub_targets = vec![c];
        assert_eq!(spec.pub_target(3, 0).addr, c);
        assert_eq!(spec.pub_target(3, 7).addr, c);
    }

    #[test]
    fn histograms_survive_the_trip() {
        let mut a = new_histogram();
        for v in [5, 10, 10, 2_000, 1_000_000] {
            a.record(v).unwrap();
        }
        let mut b = new_histogram();
        merge_pairs(&mut b, &histogram_to_pairs(&a));
        assert_eq!(b.len(), 5);
        assert_eq!(Latency::from_histogram(&a), Latency::from_histogram(&b));
    }
}
