//! `fanout`, `fanin` and `p2p`: publishers and subscribers on one engine, differing only in
//! their topics.
//!
//! Each PUBLISH carries its send time (Unix nanoseconds, 8 bytes) at the start of its payload;
//! subscribers record the difference on arrival in one histogram per worker process, locked
//! once per read batch. Publishers encode the header into a reused buffer and append the
//! payload bytes after it: nothing is allocated per message.

mod publish;
mod subscribe;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use mqtt_codec::QoS;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::{
    AckCounts, CpuUse, Measured, RunOptions, failures_of, gather_ready, measure, start_at,
    sum_failures,
};
use crate::client::{Client, Failure, FailureCounts, count_failure};
use crate::coord::Workers;
use crate::procstat;
use crate::proto::{Command, Event, Latency, ScenarioSpec, WorkerSpec, merge_pairs, new_histogram};
use crate::worker::{Commands, Emitter};

pub(crate) use self::publish::{
    Pace, PubStats, join_publishers, phase, publisher, settle, start_publishers, wake_at, window,
};
pub(crate) use self::subscribe::{latency_pairs, record_batch, subscriber};

/// How publishers and subscribers are wired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pattern {
    /// Every publisher -> one topic <- every subscriber.
    Fanout,
    /// Publisher i -> its own topic; subscribers on a wildcard over all of them.
    Fanin,
    /// Publisher i -> topic i <- subscriber i.
    P2p,
}

/// Parameters of a traffic run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrafficSpec {
    /// Topic wiring.
    pub pattern: Pattern,
    /// Number of publishers.
    pub pubs: usize,
    /// Number of subscribers.
    pub subs: usize,
    /// QoS of publications and subscriptions.
    pub qos: u8,
    /// Payload bytes (at least 8: the send time).
    pub payload: usize,
    /// Total publications per second over all publishers; 0 = as fast as possible.
    pub rate: f64,
    /// Seconds of publishing.
    pub duration_s: f64,
    /// Seconds subscribers keep reading after publishing stops, at most.
    pub drain_s: f64,
    /// Unacknowledged QoS 1/2 publications allowed per publisher.
    pub inflight: usize,
    /// Subscribers keep persistent sessions, so a durable broker stores their deliveries.
    #[serde(default)]
    pub persistent: bool,
}

impl TrafficSpec {
    pub(crate) fn topic(&self, run: &str, publisher: usize) -> String {
        match self.pattern {
            Pattern::Fanout => format!("hb/{run}/fanout"),
            Pattern::Fanin => format!("hb/{run}/fanin/{publisher}"),
            Pattern::P2p => format!("hb/{run}/p2p/{publisher}"),
        }
    }

    pub(crate) fn filter(&self, run: &str, subscriber: usize) -> String {
        match self.pattern {
            Pattern::Fanout => format!("hb/{run}/fanout"),
            Pattern::Fanin => format!("hb/{run}/fanin/+"),
            Pattern::P2p => format!("hb/{run}/p2p/{subscriber}"),
        }
    }

    /// When a round that starts at `start_unix_ns` (Unix nanoseconds) publishes until, and
    /// until when its subscribers may keep receiving.
    pub(crate) fn schedule(&self, start_unix_ns: u64) -> Schedule {
        let start = start_at(start_unix_ns);
        let pub_end = start + Duration::from_secs_f64(self.duration_s);
        Schedule {
            start,
            pub_end,
            drain_end: pub_end + Duration::from_secs_f64(self.drain_s),
        }
    }

    /// The scenario's name: fanout, fanin or p2p.
    pub fn name(&self) -> &'static str {
        match self.pattern {
            Pattern::Fanout => "fanout",
            Pattern::Fanin => "fanin",
            Pattern::P2p => "p2p",
        }
    }
}

/// When a round publishes and drains, on this process's clock.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Schedule {
    /// Publishing starts.
    pub(crate) start: Instant,
    /// Publishing stops.
    pub(crate) pub_end: Instant,
    /// Subscribers stop waiting for what is still on its way.
    pub(crate) drain_end: Instant,
}

/// One worker's figures.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TrafficWorkerResult {
    /// Subscribers connected and subscribed.
    pub subs_connected: u64,
    /// Publishers connected.
    pub pubs_connected: u64,
    /// Publications written.
    pub published: u64,
    /// QoS 1/2 publications acknowledged (PUBACK or PUBCOMP).
    pub acked: u64,
    /// Those acknowledgements by reason code.
    #[serde(default)]
    pub acks: AckCounts,
    /// Publications received by subscribers.
    pub delivered: u64,
    /// First and last arrival, Unix nanoseconds (0 when none).
    pub first_delivery_ns: u64,
    /// Last arrival.
    pub last_delivery_ns: u64,
    /// Latency histogram as (microseconds, count) pairs.
    pub latency: Vec<(u64, u64)>,
    /// Connections lost during the run, by reason.
    pub errors: FailureCounts,
    /// This worker's CPU seconds during the measured phase.
    pub cpu_seconds: f64,
}

/// The merged result of a traffic run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrafficReport {
    /// fanout, fanin or p2p.
    pub scenario: String,
    /// The parameters.
    pub spec: TrafficSpec,
    /// Worker processes.
    pub procs: usize,
    /// Subscribers connected and subscribed.
    pub subs_connected: u64,
    /// Publishers connected.
    pub pubs_connected: u64,
    /// Connection failures during set-up, by reason.
    pub connect_failures: FailureCounts,
    /// Publications written.
    pub published: u64,
    /// Publications per second over the publishing period.
    pub published_per_s: f64,
    /// QoS 1/2 publications acknowledged.
    pub acked: u64,
    /// Those acknowledgements by reason code (MQTT 5; before it, all successes).
    #[serde(default)]
    pub acks: AckCounts,
    /// Deliveries expected: each publication times the subscribers that match it.
    pub expected: u64,
    /// Deliveries received.
    pub delivered: u64,
    /// Deliveries per second, from the start to the last delivery.
    pub delivered_per_s: f64,
    /// delivered / expected.
    pub delivery_ratio: f64,
    /// End-to-end latency.
    pub latency: Latency,
    /// Connections lost during the run, by reason.
    pub errors: FailureCounts,
    /// CPU used by the broker and by this tool.
    pub cpu: CpuUse,
}

/// Runs a traffic scenario as coordinator.
pub async fn run(opts: &RunOptions, spec: TrafficSpec) -> anyhow::Result<TrafficReport> {
    if spec.payload < 8 {
        bail!("--payload must be at least 8 bytes (the send time travels in it)");
    }
    let mut workers = Workers::spawn(opts.specs(ScenarioSpec::Traffic(spec.clone()))).await?;
    let total = (spec.pubs + spec.subs) as u64;
    let ready = gather_ready(&mut workers, opts, total).await?;
    let connect_failures = sum_failures(ready.iter().map(failures_of));
    let limit = Duration::from_secs_f64(spec.duration_s + spec.drain_s + 60.0);
    let measured = measure(&mut workers, opts, spec.duration_s, spec.name(), limit).await?;
    workers.finish().await;
    Ok(merge(opts, spec, connect_failures, measured))
}

/// The report: the workers' figures added up, and what follows from them.
fn merge(
    opts: &RunOptions,
    spec: TrafficSpec,
    connect_failures: FailureCounts,
    measured: Measured<TrafficWorkerResult>,
) -> TrafficReport {
    let mut hist = new_histogram();
    let mut r = TrafficWorkerResult::default();
    for p in &measured.parts {
        r.subs_connected += p.subs_connected;
        r.pubs_connected += p.pubs_connected;
        r.published += p.published;
        r.acked += p.acked;
        r.acks.add(&p.acks);
        r.delivered += p.delivered;
        r.last_delivery_ns = r.last_delivery_ns.max(p.last_delivery_ns);
        r.cpu_seconds += p.cpu_seconds;
        merge_pairs(&mut hist, &p.latency);
        for (k, v) in &p.errors {
            *r.errors.entry(k.clone()).or_default() += v;
        }
    }
    let per_publication = match spec.pattern {
        Pattern::Fanout | Pattern::Fanin => r.subs_connected,
        Pattern::P2p => 1,
    };
    let expected = r.published * per_publication;
    let delivery_window = r.last_delivery_ns.saturating_sub(measured.start_ns) as f64 / 1e9;
    let cpu = CpuUse::new(measured.readings, r.cpu_seconds, r.delivered);
    TrafficReport {
        scenario: spec.name().into(),
        procs: opts.procs,
        subs_connected: r.subs_connected,
        pubs_connected: r.pubs_connected,
        connect_failures,
        published: r.published,
        published_per_s: r.published as f64 / spec.duration_s,
        acked: r.acked,
        acks: r.acks,
        expected,
        delivered: r.delivered,
        delivered_per_s: if delivery_window > 0.0 {
            r.delivered as f64 / delivery_window
        } else {
            0.0
        },
        delivery_ratio: if expected > 0 {
            r.delivered as f64 / expected as f64
        } else {
            0.0
        },
        latency: Latency::from_histogram(&hist),
        errors: r.errors,
        cpu,
        spec,
    }
}

/// Plays a worker's share of a traffic scenario.
pub async fn worker(
    spec: &WorkerSpec,
    t: &TrafficSpec,
    cmds: &mut Commands,
    out: &Emitter,
) -> anyhow::Result<()> {
    let qos = QoS::from_u8(t.qos).context("--qos must be 0, 1 or 2")?;
    let (subs, pubs, failures) = connect_all(spec, t, qos, out).await?;
    out.send(Event::Ready {
        connected: (subs.len() + pubs.len()) as u64,
        failures,
    });
    let Command::Go { start_unix_ns } = cmds.next().await? else {
        bail!("expected the go command");
    };
    let schedule = t.schedule(start_unix_ns);
    let cpu0 = procstat::sample("self");
    let hist = Arc::new(Mutex::new(new_histogram()));
    let mut result = TrafficWorkerResult {
        subs_connected: subs.len() as u64,
        pubs_connected: pubs.len() as u64,
        ..Default::default()
    };
    let mut sub_tasks = JoinSet::new();
    for client in subs {
        let hist = hist.clone();
        let keep_alive = spec.keep_alive;
        let Schedule {
            pub_end, drain_end, ..
        } = schedule;
        sub_tasks.spawn(async move {
            let (stats, mut client) =
                subscriber(client, hist, pub_end, drain_end, keep_alive, 0).await;
            let _ = client.stream.shutdown().await;
            stats
        });
    }
    let pub_tasks = start_publishers(&spec.run_id, t, qos, pubs, schedule);
    let (published, keep) = join_publishers(pub_tasks, &mut result.errors).await?;
    result.published = published.published;
    result.acked = published.acked;
    result.acks = published.acks;
    while let Some(joined) = sub_tasks.join_next().await {
        let stats = joined?;
        result.delivered += stats.delivered;
        if stats.first_ns > 0 {
            result.first_delivery_ns = match result.first_delivery_ns {
                0 => stats.first_ns,
                f => f.min(stats.first_ns),
            };
        }
        result.last_delivery_ns = result.last_delivery_ns.max(stats.last_ns);
        if let Some(f) = stats.error {
            count_failure(&mut result.errors, &f);
        }
    }
    drop(keep);
    let cpu1 = procstat::sample("self");
    result.cpu_seconds = procstat::cpu_between(cpu0, cpu1).unwrap_or(0.0);
    result.latency = latency_pairs(&hist);
    out.result(&result)
}

/// Subscribers, publishers with their index, and the failures on the way.
pub(crate) type Connected = (Vec<Client>, Vec<(usize, Client)>, FailureCounts);

/// Connects this worker's subscribers (and subscribes them), then its publishers.
pub(crate) async fn connect_all(
    spec: &WorkerSpec,
    t: &TrafficSpec,
    qos: QoS,
    out: &Emitter,
) -> anyhow::Result<Connected> {
    let done = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let _progress = out.progress(done.clone());
    let limit = Arc::new(Semaphore::new(256));
    let cfg = spec.client_config()?;
    let mut tasks = JoinSet::new();
    let persistent = t.persistent;
    for j in spec.share(t.subs) {
        let (limit, done) = (limit.clone(), done.clone());
        let target = spec.target(j);
        let id = format!("hb-{}-s{j}", spec.run_id);
        let filter = t.filter(&spec.run_id, j);
        let cfg = cfg.clone();
        tasks.spawn(async move {
            let _permit = limit.acquire_owned().await;
            let mut client = Client::connect(target, &cfg, &id, !persistent).await?;
            client.subscribe(&filter, qos, cfg.timeout).await?;
            done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Ok::<_, Failure>((None, client))
        });
    }
    for i in spec.share(t.pubs) {
        let (limit, done) = (limit.clone(), done.clone());
        let target = spec.pub_target(t.subs, i);
        let id = format!("hb-{}-p{i}", spec.run_id);
        let cfg = cfg.clone();
        tasks.spawn(async move {
            let _permit = limit.acquire_owned().await;
            let client = Client::connect(target, &cfg, &id, true).await?;
            done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Ok((Some(i), client))
        });
    }
    let (mut subs, mut pubs, mut failures) = (Vec::new(), Vec::new(), FailureCounts::new());
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok((None, client))) => subs.push(client),
            Ok(Ok((Some(i), client))) => pubs.push((i, client)),
            Ok(Err(f)) => count_failure(&mut failures, &f),
            Err(_) => count_failure(&mut failures, &Failure::Protocol("task panicked".into())),
        }
    }
    pubs.sort_by_key(|(i, _)| *i);
    Ok((subs, pubs, failures))
}
