//! The scenarios, each with its coordinator side (`run`) and worker side (`worker`), and what
//! they share: run options, the coordinator's connecting and measured phases, CPU
//! accounting, progress bars.

pub mod conns;
pub mod crash;
pub mod flow;
pub mod inbox;
pub mod node_drain;
pub mod queue;
pub mod storm;
pub mod traffic;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::client::{
    Client, ClientConfig, Failure, FailureCounts, Login, count_failure, unix_nanos,
};
use crate::coord::{Workers, results};
use crate::procstat::{self, ProcSample};
use crate::proto::{Command, Event, ScenarioSpec, WorkerSpec};
use crate::transport::TransportSpec;
use crate::worker::Emitter;

/// Options every scenario shares.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Broker addresses.
    pub targets: Vec<SocketAddr>,
    /// Broker addresses for publishers (empty: `targets`).
    pub pub_targets: Vec<SocketAddr>,
    /// Local source addresses.
    pub sources: Vec<IpAddr>,
    /// Worker processes.
    pub procs: usize,
    /// MQTT protocol level (3, 4, 5).
    pub mqtt_level: u8,
    /// Keep-alive seconds.
    pub keep_alive: u16,
    /// Per-operation timeout.
    pub timeout: Duration,
    /// The broker's process, for CPU and memory readings.
    pub broker_pid: Option<u32>,
    /// No progress bars (JSON output, or a caller that draws its own).
    pub quiet: bool,
    /// How clients reach the broker.
    pub transport: TransportSpec,
    /// The username and password of every client.
    pub login: Login,
}

impl RunOptions {
    /// One worker spec per process.
    pub fn specs(&self, scenario: ScenarioSpec) -> Vec<WorkerSpec> {
        let run_id = format!("{:x}", crate::client::unix_nanos() % 0xFFFF_FFFF);
        (0..self.procs.max(1))
            .map(|index| WorkerSpec {
                index,
                count: self.procs.max(1),
                targets: self.targets.clone(),
                pub_targets: self.pub_targets.clone(),
                sources: self.sources.clone(),
                mqtt_level: self.mqtt_level,
                keep_alive: self.keep_alive,
                timeout_ms: self.timeout.as_millis() as u64,
                transport: self.transport.clone(),
                login: self.login.clone(),
                run_id: run_id.clone(),
                scenario: scenario.clone(),
            })
            .collect()
    }

    /// A reading of the broker process, if one was given.
    pub fn broker_sample(&self) -> Option<ProcSample> {
        self.broker_pid
            .and_then(|pid| procstat::sample(&pid.to_string()))
    }
}

/// Waits for every worker to report its share of `clients` connected (`Ready`), counting
/// them on a bar unless the run is quiet. Set-up may take three timeouts, 30 s, and a second
/// per 200 clients.
pub async fn gather_ready(
    workers: &mut Workers,
    opts: &RunOptions,
    clients: u64,
) -> anyhow::Result<Vec<Event>> {
    let bar = counter_bar(opts, clients, "connecting");
    let limit = opts.timeout * 3 + Duration::from_secs(30 + clients / 200);
    let ready = workers.gather(bar.as_ref(), limit).await?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    Ok(ready)
}

/// The instant on this process's clock of `start_unix_ns` (Unix nanoseconds), which the
/// coordinator set for every worker: now, if it has passed.
pub fn start_at(start_unix_ns: u64) -> tokio::time::Instant {
    let wait = Duration::from_nanos(start_unix_ns.saturating_sub(unix_nanos()));
    tokio::time::Instant::now() + wait
}

/// Readings of the broker and of this process at the start and the end of a measured phase.
#[derive(Debug, Clone, Copy, Default)]
pub struct Readings {
    /// The broker (with `--broker-pid`).
    pub broker: [Option<ProcSample>; 2],
    /// This process, the coordinator.
    pub tool: [Option<ProcSample>; 2],
}

/// What came back from a measured phase.
#[derive(Debug)]
pub struct Measured<T> {
    /// One result per worker, in worker order.
    pub parts: Vec<T>,
    /// When the workers started, Unix nanoseconds.
    pub start_ns: u64,
    /// The broker and this process before and after.
    pub readings: Readings,
}

/// Plays a measured phase: tells every worker to start 200 ms from now (`Go`), shows `label`
/// over the phase's `seconds`, and gathers one result per worker within `limit`, reading the
/// broker and this process before and after.
pub async fn measure<T: DeserializeOwned>(
    workers: &mut Workers,
    opts: &RunOptions,
    seconds: f64,
    label: &'static str,
    limit: Duration,
) -> anyhow::Result<Measured<T>> {
    let broker0 = opts.broker_sample();
    let tool0 = procstat::sample("self");
    let start_ns = unix_nanos() + 200_000_000;
    workers
        .send(&Command::Go {
            start_unix_ns: start_ns,
        })
        .await?;
    let bar = TimedBar::start(opts, seconds + 0.2, label);
    let parts = results(workers.gather(None, limit).await?)?;
    bar.finish();
    let readings = Readings {
        broker: [broker0, opts.broker_sample()],
        tool: [tool0, procstat::sample("self")],
    };
    Ok(Measured {
        parts,
        start_ns,
        readings,
    })
}

/// CPU used during the measured phase, by the broker and by this tool.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CpuUse {
    /// Broker CPU seconds (needs `--broker-pid`).
    pub broker_cpu_seconds: Option<f64>,
    /// Broker CPU seconds per million delivered messages.
    pub broker_cpu_s_per_million: Option<f64>,
    /// Broker resident memory at the start of the phase.
    pub broker_rss_before: Option<u64>,
    /// Broker resident memory at the end of the phase.
    pub broker_rss_after: Option<u64>,
    /// This tool's CPU seconds: every worker plus the coordinator.
    pub tool_cpu_seconds: f64,
    /// This tool's CPU seconds per million delivered messages.
    pub tool_cpu_s_per_million: Option<f64>,
}

impl CpuUse {
    /// Accounts a phase from broker and coordinator readings at its start and end, the
    /// workers' own CPU seconds, and the messages it delivered.
    pub fn new(readings: Readings, worker_cpu: f64, delivered: u64) -> Self {
        let Readings {
            broker,
            tool: coordinator,
        } = readings;
        let per_million = |cpu: f64| (delivered > 0).then(|| cpu * 1e6 / delivered as f64);
        let broker_cpu = procstat::cpu_between(broker[0], broker[1]);
        let coordinator_cpu = procstat::cpu_between(coordinator[0], coordinator[1]).unwrap_or(0.0);
        let tool = worker_cpu + coordinator_cpu;
        CpuUse {
            broker_cpu_seconds: broker_cpu,
            broker_cpu_s_per_million: broker_cpu.and_then(per_million),
            broker_rss_before: broker[0].map(|s| s.rss_bytes),
            broker_rss_after: broker[1].map(|s| s.rss_bytes),
            tool_cpu_seconds: tool,
            tool_cpu_s_per_million: per_million(tool),
        }
    }
}

/// The acknowledgements (PUBACK, PUBCOMP) publishers received, by reason code: what the
/// broker said it did with their QoS 1/2 messages. Before MQTT 5 every one is a success.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AckCounts {
    /// Codes below 0x80 (0x00 Success, 0x10 No matching subscribers): the broker took the
    /// message.
    pub success: u64,
    /// 0x97 Quota exceeded: refused, so the broker owes no delivery.
    pub quota_exceeded: u64,
    /// Any other code of 0x80 or above: refused.
    pub other: u64,
    /// Every code seen and how often, keyed "0x00", "0x97", ...
    #[serde(with = "hex_keys")]
    pub by_code: BTreeMap<u8, u64>,
}

impl AckCounts {
    /// Counts one acknowledgement with reason `code`.
    pub fn record(&mut self, code: u8) {
        match code {
            0x00..=0x7F => self.success += 1,
            0x97 => self.quota_exceeded += 1,
            _ => self.other += 1,
        }
        *self.by_code.entry(code).or_default() += 1;
    }

    /// Acknowledgements of any kind.
    pub fn total(&self) -> u64 {
        self.success + self.quota_exceeded + self.other
    }

    /// Adds `other`'s counts to these.
    pub fn add(&mut self, other: &AckCounts) {
        self.success += other.success;
        self.quota_exceeded += other.quota_exceeded;
        self.other += other.other;
        for (code, n) in &other.by_code {
            *self.by_code.entry(*code).or_default() += n;
        }
    }
}

/// Reason codes as "0x97"-style map keys, so that the JSON reads like the specification.
mod hex_keys {
    use std::collections::BTreeMap;

    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub(super) fn serialize<S: Serializer>(
        map: &BTreeMap<u8, u64>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        let named: BTreeMap<String, u64> = map
            .iter()
            .map(|(k, v)| (format!("0x{k:02x}"), *v))
            .collect();
        named.serialize(s)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<u8, u64>, D::Error> {
        let named = BTreeMap::<String, u64>::deserialize(d)?;
        named
            .into_iter()
            .map(|(k, v)| {
                let hex = k.strip_prefix("0x").unwrap_or(&k);
                u8::from_str_radix(hex, 16)
                    .map(|code| (code, v))
                    .map_err(|_| D::Error::custom(format!("not a reason code: {k:?}")))
            })
            .collect()
    }
}

/// The failures a `Ready` event reports.
pub fn failures_of(event: &Event) -> FailureCounts {
    match event {
        Event::Ready { failures, .. } => failures.clone(),
        _ => FailureCounts::new(),
    }
}

/// How many clients a `Ready` event reports connected.
pub fn connected_of(event: &Event) -> u64 {
    match event {
        Event::Ready { connected, .. } => *connected,
        _ => 0,
    }
}

/// Adds failure counts together.
pub fn sum_failures(parts: impl IntoIterator<Item = FailureCounts>) -> FailureCounts {
    let mut total = FailureCounts::new();
    for part in parts {
        for (k, v) in part {
            *total.entry(k).or_default() += v;
        }
    }
    total
}

/// Connects this worker's clients `numbers` (clean sessions, named by `id`), at most 256 at
/// a time, counting each attempt as progress. Returns those that connected, with their
/// number, and why the others did not.
pub async fn connect_clients(
    spec: &WorkerSpec,
    cfg: &ClientConfig,
    numbers: impl IntoIterator<Item = usize>,
    id: impl Fn(usize) -> String,
    clean: bool,
    out: &Emitter,
) -> (Vec<(usize, Client)>, FailureCounts) {
    let done = Arc::new(AtomicU64::new(0));
    let progress = out.progress(done.clone());
    let limit = Arc::new(Semaphore::new(256));
    let mut tasks = JoinSet::new();
    for j in numbers {
        let (limit, done) = (limit.clone(), done.clone());
        let (target, id) = (spec.target(j), id(j));
        let cfg = cfg.clone();
        tasks.spawn(async move {
            let _permit = limit.acquire_owned().await;
            let r = Client::connect(target, &cfg, &id, clean).await;
            done.fetch_add(1, Ordering::Relaxed);
            (j, r)
        });
    }
    let mut clients = Vec::new();
    let mut failures = FailureCounts::new();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((j, Ok(client))) => clients.push((j, client)),
            Ok((_, Err(f))) => count_failure(&mut failures, &f),
            Err(_) => count_failure(&mut failures, &Failure::Protocol("task panicked".into())),
        }
    }
    drop(progress);
    (clients, failures)
}

/// A bar counting items, unless the run is quiet.
pub fn counter_bar(opts: &RunOptions, len: u64, msg: &'static str) -> Option<ProgressBar> {
    if opts.quiet {
        return None;
    }
    let bar = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template("{msg:>12} [{bar:40}] {pos}/{len} {per_sec}") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(msg);
    Some(bar)
}

/// A bar that fills over a known number of seconds, drawn by its own task.
pub struct TimedBar(Option<(ProgressBar, tokio::task::JoinHandle<()>)>);

impl TimedBar {
    /// Starts a bar over `seconds`, unless the run is quiet or shorter than two seconds.
    pub fn start(opts: &RunOptions, seconds: f64, msg: &'static str) -> TimedBar {
        if opts.quiet || seconds < 2.0 {
            return TimedBar(None);
        }
        let tenths = (seconds * 10.0) as u64;
        let bar = ProgressBar::new(tenths);
        if let Ok(style) = ProgressStyle::with_template("{msg:>12} [{bar:40}] {elapsed}/{duration}")
        {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(msg);
        let ticking = bar.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            for _ in 0..tenths {
                tick.tick().await;
                ticking.inc(1);
            }
        });
        TimedBar(Some((bar, task)))
    }

    /// Removes the bar.
    pub fn finish(self) {
        if let Some((bar, task)) = self.0 {
            task.abort();
            bar.finish_and_clear();
        }
    }
}

/// A small, fast, good-enough generator for jitter and seeded kill times (xorshift64*).
pub struct XorShift(u64);

impl XorShift {
    /// A generator from `seed` (any value; the same seed gives the same sequence).
    pub fn new(seed: u64) -> Self {
        XorShift(seed | 1)
    }

    /// Uniform in [0, bound); 0 when bound is 0.
    pub fn below(&mut self, bound: u64) -> u64 {
        if bound == 0 {
            return 0;
        }
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % bound
    }
}

#[cfg(test)]
mod tests {
    use super::AckCounts;

    #[test]
    fn ack_counts_sort_codes_and_survive_the_trip() {
        let mut a = AckCounts::default();
        for code in [0x00, 0x00, 0x10, 0x97, 0x97, 0x80] {
            a.record(code);
        }
        assert_eq!((a.success, a.quota_exceeded, a.other), (3, 2, 1));
        assert_eq!(a.total(), 6);
        let json = serde_json::to_value(&a).unwrap();
        assert_eq!(json["by_code"]["0x97"], 2);
        let back: AckCounts = serde_json::from_value(json).unwrap();
        assert_eq!(back, a);
        let mut sum = AckCounts::default();
        sum.add(&a);
        sum.add(&a);
        assert_eq!(sum.by_code[&0x00], 4);
    }
}
