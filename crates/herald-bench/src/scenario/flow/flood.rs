//! `fanin-flood`: many QoS 1 publishers (2,000 by default), each on its own topic, publish as
//! fast as their window allows (or at a fixed rate each) into one QoS 1 subscriber on a
//! wildcard, for a bounded time. Then the subscriber reads on until nothing has arrived for
//! `idle` seconds, and publishers wait as long for their last acknowledgements.
//!
//! Every payload starts with its send time, its publisher's index and its sequence number
//! ([`super::STAMP_LEN`] bytes). Publishers keep the set of sequence numbers acknowledged
//! with success, the subscriber the set it received; the coordinator compares them, so
//! "acknowledged but not delivered" counts messages, not a difference of totals.
//!
//! The subscriber lives in worker 0; publishers are spread over the workers (more are
//! started when one would pass [`CLIENTS_PER_PROC`] sockets).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::bail;
use bytes::Bytes;
use hdrhistogram::Histogram;
use mqtt_codec::{Ack, Packet, Publish, QoS};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep_until};

use super::{MAX_SEQ, STAMP_LEN, SeqSet, read_stamp, write_stamp};
use crate::client::{
    Client, Failure, FailureCounts, count_failure, decode_from, encode_into, unix_nanos,
};
use crate::coord::Workers;
use crate::procstat;
use crate::proto::{Command, Event, Latency, ScenarioSpec, WorkerSpec, merge_pairs, new_histogram};
use crate::scenario::traffic::Pace;
use crate::scenario::{
    AckCounts, CpuUse, Measured, RunOptions, failures_of, gather_ready, measure, start_at,
    sum_failures, traffic,
};
use crate::worker::{Commands, Emitter};

/// Clients one worker process holds at most: well under its 20,000 open files.
pub const CLIENTS_PER_PROC: usize = 15_000;

/// Parameters of a `fanin-flood` run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FloodSpec {
    /// Publishers, each on its own topic.
    pub pubs: usize,
    /// Publications per second of each publisher; 0 = as fast as its window allows.
    pub pub_rate: f64,
    /// Payload bytes (at least 16: the stamp).
    pub payload: usize,
    /// Seconds of publishing.
    pub duration_s: f64,
    /// The drain ends once nothing has arrived (and no acknowledgement) for this long.
    pub idle_s: f64,
    /// The drain ends this long after publishing at the latest.
    pub max_drain_s: f64,
    /// Unacknowledged publications allowed per publisher (and never more than the broker's
    /// Receive Maximum).
    pub inflight: usize,
}

impl FloodSpec {
    fn topic(run: &str, publisher: usize) -> String {
        format!("hb/{run}/flood/{publisher}")
    }

    fn filter(run: &str) -> String {
        format!("hb/{run}/flood/+")
    }

    /// When a run that starts at `start_unix_ns` (Unix nanoseconds) publishes until, and
    /// how long its clients may wait after.
    fn timing(&self, start_unix_ns: u64) -> Timing {
        let start = start_at(start_unix_ns);
        Timing {
            start,
            end: start + Duration::from_secs_f64(self.duration_s),
            idle: Duration::from_secs_f64(self.idle_s),
            drain_end: start + Duration::from_secs_f64(self.duration_s + self.max_drain_s),
        }
    }
}

/// One worker's figures.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FloodWorkerResult {
    /// Publishers connected.
    pub pubs_connected: u64,
    /// Whether this worker holds the subscriber, connected and subscribed.
    pub subscriber_connected: bool,
    /// Publications written.
    pub published: u64,
    /// Acknowledgements received, by reason code.
    pub acks: AckCounts,
    /// Per publisher (by index): the sequence numbers acknowledged with success.
    pub acked_ok: Vec<(u32, SeqSet)>,
    /// Per publisher: the sequence numbers the subscriber received (its worker only).
    pub received: Vec<(u32, SeqSet)>,
    /// Publications the subscriber received, copies included.
    pub deliveries: u64,
    /// Copies of a message already received.
    pub duplicates: u64,
    /// Publications without a stamp of this run's publishers.
    pub unrecognised: u64,
    /// Last arrival, Unix nanoseconds (0 when none).
    pub last_delivery_ns: u64,
    /// Publish-to-delivery latency as (microseconds, count) pairs.
    pub latency: Vec<(u64, u64)>,
    /// Connections lost during the run, by reason.
    pub errors: FailureCounts,
    /// This worker's CPU seconds during the measured phase.
    pub cpu_seconds: f64,
}

/// The merged result of a `fanin-flood` run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FloodReport {
    /// Always "fanin-flood".
    pub scenario: String,
    /// The parameters.
    pub spec: FloodSpec,
    /// MQTT protocol level of every client (4: 3.1.1, 5: 5.0).
    pub mqtt_level: u8,
    /// Worker processes.
    pub procs: usize,
    /// Publishers connected.
    pub pubs_connected: u64,
    /// Whether the subscriber connected and subscribed.
    pub subscriber_connected: bool,
    /// Connection failures during set-up, by reason.
    pub connect_failures: FailureCounts,
    /// Publications written.
    pub published: u64,
    /// Publications per second over the publishing period.
    pub published_per_s: f64,
    /// Acknowledgements (PUBACK) received, by reason code.
    pub acks: AckCounts,
    /// Publications that got no acknowledgement at all by the end of the drain.
    pub unacknowledged: u64,
    /// Distinct messages the subscriber received.
    pub received: u64,
    /// Distinct messages received per second, from the start to the last delivery.
    pub received_per_s: f64,
    /// Copies of a message the subscriber had already received.
    pub duplicates: u64,
    /// Publications the subscriber received without a stamp of this run.
    pub unrecognised: u64,
    /// Messages acknowledged with success that the subscriber never received: what the
    /// broker promised and lost.
    pub acked_not_delivered: u64,
    /// `acked_not_delivered` over the messages acknowledged with success.
    pub acked_not_delivered_ratio: f64,
    /// Messages the subscriber received though their publisher was refused (0x80 or above)
    /// or never answered.
    pub delivered_not_acked: u64,
    /// Seconds from the end of publishing to the last delivery (0 when it came before).
    pub drain_s: f64,
    /// Publish-to-delivery latency.
    pub latency: Latency,
    /// Connections lost during the run, by reason.
    pub errors: FailureCounts,
    /// CPU used by the broker and by this tool.
    pub cpu: CpuUse,
}

/// Runs `fanin-flood` as coordinator.
pub async fn run(opts: &RunOptions, spec: FloodSpec) -> anyhow::Result<FloodReport> {
    if spec.payload < STAMP_LEN {
        bail!("--payload must be at least {STAMP_LEN} bytes (the stamp travels in it)");
    }
    if spec.pubs == 0 || spec.pubs >= MAX_SEQ as usize {
        bail!("--pubs must be at least 1");
    }
    if spec.duration_s <= 0.0 || spec.pub_rate < 0.0 || spec.idle_s <= 0.0 {
        bail!("--duration and --idle must be above 0, --pub-rate at least 0");
    }
    let mut opts = opts.clone();
    opts.procs = opts.procs.max((spec.pubs + 1).div_ceil(CLIENTS_PER_PROC));
    let mut workers = Workers::spawn(opts.specs(ScenarioSpec::FaninFlood(spec.clone()))).await?;
    let total = spec.pubs as u64 + 1;
    let ready = gather_ready(&mut workers, &opts, total).await?;
    let connect_failures = sum_failures(ready.iter().map(failures_of));
    let limit = Duration::from_secs_f64(spec.duration_s + spec.max_drain_s + 60.0);
    let measured = measure(&mut workers, &opts, spec.duration_s, "fanin-flood", limit).await?;
    workers.finish().await;
    Ok(merge(&opts, spec, connect_failures, measured))
}

/// The report: the workers' figures added up, and the acknowledged and received sets of
/// each publisher set against each other.
fn merge(
    opts: &RunOptions,
    spec: FloodSpec,
    connect_failures: FailureCounts,
    measured: Measured<FloodWorkerResult>,
) -> FloodReport {
    let mut hist = new_histogram();
    let mut acks = AckCounts::default();
    let mut errors = FailureCounts::new();
    let mut acked_ok: HashMap<u32, SeqSet> = HashMap::new();
    let mut received: HashMap<u32, SeqSet> = HashMap::new();
    let (mut pubs_connected, mut subscriber_connected) = (0, false);
    let (mut published, mut duplicates, mut unrecognised) = (0, 0, 0);
    let (mut last_delivery_ns, mut worker_cpu) = (0, 0.0);
    for p in measured.parts {
        pubs_connected += p.pubs_connected;
        subscriber_connected |= p.subscriber_connected;
        published += p.published;
        acks.add(&p.acks);
        duplicates += p.duplicates;
        unrecognised += p.unrecognised;
        last_delivery_ns = last_delivery_ns.max(p.last_delivery_ns);
        worker_cpu += p.cpu_seconds;
        merge_pairs(&mut hist, &p.latency);
        for (k, v) in p.errors {
            *errors.entry(k).or_default() += v;
        }
        acked_ok.extend(p.acked_ok);
        received.extend(p.received);
    }
    let empty = SeqSet::default();
    let distinct: u64 = received.values().map(SeqSet::len).sum();
    let acked_not_delivered: u64 = acked_ok
        .iter()
        .map(|(i, ok)| ok.count_not_in(received.get(i).unwrap_or(&empty)))
        .sum();
    let delivered_not_acked: u64 = received
        .iter()
        .map(|(i, got)| got.count_not_in(acked_ok.get(i).unwrap_or(&empty)))
        .sum();
    let pub_end_ns = measured.start_ns + (spec.duration_s * 1e9) as u64;
    let window = last_delivery_ns.saturating_sub(measured.start_ns) as f64 / 1e9;
    let cpu = CpuUse::new(measured.readings, worker_cpu, distinct);
    FloodReport {
        scenario: "fanin-flood".into(),
        mqtt_level: opts.mqtt_level,
        procs: opts.procs,
        pubs_connected,
        subscriber_connected,
        connect_failures,
        published,
        published_per_s: published as f64 / spec.duration_s,
        unacknowledged: published.saturating_sub(acks.total()),
        received: distinct,
        received_per_s: if window > 0.0 {
            distinct as f64 / window
        } else {
            0.0
        },
        duplicates,
        unrecognised,
        acked_not_delivered,
        acked_not_delivered_ratio: if acks.success > 0 {
            acked_not_delivered as f64 / acks.success as f64
        } else {
            0.0
        },
        delivered_not_acked,
        drain_s: last_delivery_ns.saturating_sub(pub_end_ns) as f64 / 1e9,
        latency: Latency::from_histogram(&hist),
        acks,
        errors,
        cpu,
        spec,
    }
}

/// A connected publisher: its global index and client.
type Publisher = (usize, Client);

/// Plays a worker's share of `fanin-flood`.
pub async fn worker(
    spec: &WorkerSpec,
    f: &FloodSpec,
    cmds: &mut Commands,
    out: &Emitter,
) -> anyhow::Result<()> {
    let (sub, pubs, failures) = connect_all(spec, f, out).await?;
    out.send(Event::Ready {
        connected: pubs.len() as u64 + u64::from(sub.is_some()),
        failures,
    });
    let Command::Go { start_unix_ns } = cmds.next().await? else {
        bail!("expected the go command");
    };
    let timing = f.timing(start_unix_ns);
    let cpu0 = procstat::sample("self");
    let mut result = FloodWorkerResult {
        pubs_connected: pubs.len() as u64,
        subscriber_connected: sub.is_some(),
        ..Default::default()
    };
    let hist = Arc::new(Mutex::new(new_histogram()));
    let sub_task = sub.map(|client| {
        let (hist, pubs, keep_alive) = (hist.clone(), f.pubs, spec.keep_alive);
        tokio::spawn(subscriber(client, pubs, hist, timing, keep_alive))
    });
    let pub_tasks = start_publishers(&spec.run_id, f, pubs, timing);
    let keep = join_publishers(pub_tasks, &mut result).await?;
    if let Some(task) = sub_task {
        add_received(&mut result, task.await?);
    }
    drop(keep);
    result.cpu_seconds = procstat::cpu_between(cpu0, procstat::sample("self")).unwrap_or(0.0);
    result.latency = traffic::latency_pairs(&hist);
    out.result(&result)
}

/// Starts this worker's publishers, each on its own topic, at its [`traffic::phase`] after
/// `timing.start`.
fn start_publishers(
    run_id: &str,
    f: &FloodSpec,
    pubs: Vec<Publisher>,
    timing: Timing,
) -> JoinSet<(PubStats, Option<Client>)> {
    let template = Bytes::from(vec![0u8; f.payload]);
    let mut tasks = JoinSet::new();
    for (i, client) in pubs {
        let window = traffic::window(QoS::AtLeastOnce, f.inflight, &client);
        let mut publish = Publish::new(FloodSpec::topic(run_id, i), template.clone());
        publish.qos = QoS::AtLeastOnce;
        let timing = Timing {
            start: timing.start + traffic::phase(i, f.pubs, f.pub_rate),
            ..timing
        };
        tasks.spawn(publisher(
            client, i as u32, publish, f.pub_rate, window, timing,
        ));
    }
    tasks
}

/// Waits for every publisher and adds what it did to `result`; returns those still connected.
async fn join_publishers(
    mut tasks: JoinSet<(PubStats, Option<Client>)>,
    result: &mut FloodWorkerResult,
) -> anyhow::Result<Vec<Client>> {
    let mut keep = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let (stats, client) = joined?;
        result.published += stats.published;
        result.acks.add(&stats.acks);
        result.acked_ok.push((stats.index, stats.acked_ok));
        if let Some(f) = stats.error {
            count_failure(&mut result.errors, &f);
        }
        keep.extend(client);
    }
    Ok(keep)
}

/// Adds what the subscriber received to `result`: the sets of the publishers it heard from.
fn add_received(result: &mut FloodWorkerResult, stats: SubStats) {
    result.deliveries = stats.deliveries;
    result.duplicates = stats.duplicates;
    result.unrecognised = stats.unrecognised;
    result.last_delivery_ns = stats.last_ns;
    result.received = stats
        .received
        .into_iter()
        .enumerate()
        .filter(|(_, set)| !set.is_empty())
        .map(|(i, set)| (i as u32, set))
        .collect();
    if let Some(f) = stats.error {
        count_failure(&mut result.errors, &f);
    }
}

/// Connects the subscriber (worker 0 only) and subscribes it, then this worker's publishers.
async fn connect_all(
    spec: &WorkerSpec,
    f: &FloodSpec,
    out: &Emitter,
) -> anyhow::Result<(Option<Client>, Vec<Publisher>, FailureCounts)> {
    let done = Arc::new(AtomicU64::new(0));
    let _progress = out.progress(done.clone());
    let cfg = spec.client_config()?;
    let mut failures = FailureCounts::new();
    let mut sub = None;
    if spec.index == 0 {
        let id = format!("hb-{}-flood-sub", spec.run_id);
        let subscribed = async {
            let mut client = Client::connect(spec.target(0), &cfg, &id, true).await?;
            let filter = FloodSpec::filter(&spec.run_id);
            client
                .subscribe(&filter, QoS::AtLeastOnce, cfg.timeout)
                .await?;
            Ok::<_, Failure>(client)
        };
        match subscribed.await {
            Ok(client) => sub = Some(client),
            Err(e) => count_failure(&mut failures, &e),
        }
        done.fetch_add(1, Ordering::Relaxed);
    }
    let limit = Arc::new(Semaphore::new(256));
    let mut tasks = JoinSet::new();
    for i in spec.share(f.pubs) {
        let (limit, done, cfg) = (limit.clone(), done.clone(), cfg.clone());
        let (target, id) = (spec.target(1 + i), format!("hb-{}-flood-p{i}", spec.run_id));
        tasks.spawn(async move {
            let _permit = limit.acquire_owned().await;
            let client = Client::connect(target, &cfg, &id, true).await;
            done.fetch_add(1, Ordering::Relaxed);
            client.map(|c| (i, c))
        });
    }
    let mut pubs = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok(publisher)) => pubs.push(publisher),
            Ok(Err(e)) => count_failure(&mut failures, &e),
            Err(_) => count_failure(&mut failures, &Failure::Protocol("task panicked".into())),
        }
    }
    pubs.sort_by_key(|(i, _)| *i);
    Ok((sub, pubs, failures))
}

/// When a client starts, stops publishing, and gives up waiting.
#[derive(Debug, Clone, Copy)]
struct Timing {
    /// The first publication.
    start: Instant,
    /// Publishing stops.
    end: Instant,
    /// After `end`, waiting stops once nothing has arrived for this long.
    idle: Duration,
    /// Waiting stops at the latest.
    drain_end: Instant,
}

impl Timing {
    /// When a client that last heard from the broker at `last` stops waiting.
    fn stop(&self, last: Instant) -> Instant {
        (self.end.max(last) + self.idle).min(self.drain_end)
    }
}

/// What one publisher did.
struct PubStats {
    index: u32,
    published: u64,
    acks: AckCounts,
    acked_ok: SeqSet,
    error: Option<Failure>,
}

async fn publisher(
    mut client: Client,
    index: u32,
    mut publish: Publish,
    rate: f64,
    window: usize,
    timing: Timing,
) -> (PubStats, Option<Client>) {
    let mut stats = PubStats {
        index,
        published: 0,
        acks: AckCounts::default(),
        acked_ok: SeqSet::default(),
        error: None,
    };
    sleep_until(timing.start).await;
    let outcome = publish_loop(&mut client, &mut publish, rate, window, timing, &mut stats).await;
    let client = traffic::settle(
        client,
        &publish,
        outcome,
        &mut stats.published,
        &mut stats.error,
    );
    (stats, client)
}

/// Publishes stamped QoS 1 messages until `timing.end`, then waits for the outstanding
/// acknowledgements while they keep coming.
async fn publish_loop(
    client: &mut Client,
    publish: &mut Publish,
    rate: f64,
    window: usize,
    timing: Timing,
    stats: &mut PubStats,
) -> Result<(), Failure> {
    let version = client.version;
    let pace = Pace {
        start: Instant::now(),
        rate,
        end: timing.end,
    };
    let (mut rd, mut wr) = client.stream.split();
    let (rbuf, wbuf) = (&mut client.rbuf, &mut client.wbuf);
    // Packet id -> sequence number of each unacknowledged publication.
    let mut inflight: HashMap<u16, u32> = HashMap::with_capacity(window);
    let mut packet_id: u16 = 0;
    let mut last_ack = pace.start;
    let tail = publish.payload.slice(STAMP_LEN..);
    loop {
        let now = Instant::now();
        let publishing = now < timing.end && stats.published < u64::from(MAX_SEQ);
        let stop = timing.stop(last_ack);
        if !publishing && ((wbuf.is_empty() && inflight.is_empty()) || now >= stop) {
            return Ok(());
        }
        let mut next_due = None;
        if publishing {
            let room = (
                window.saturating_sub(inflight.len()) as u64,
                wbuf.is_empty(),
            );
            let index = stats.index;
            let encode = |published: u64| {
                packet_id = next_free_id(packet_id, &inflight);
                let seq = published as u32;
                inflight.insert(packet_id, seq);
                publish.packet_id = packet_id;
                if let Err(e) = publish.encode_header(version, wbuf) {
                    panic!("herald-bench built an unencodable PUBLISH: {e}");
                }
                write_stamp(wbuf, index, seq);
                wbuf.extend_from_slice(&tail);
            };
            next_due = pace.publish_due(now, room, &mut stats.published, encode);
        }
        let limit = if publishing { timing.end } else { stop };
        let wake = traffic::wake_at(next_due, wbuf.is_empty(), limit);
        tokio::select! {
            read = rd.read_buf(rbuf) => {
                if read? == 0 {
                    return Err(Failure::Closed);
                }
                if let Some(at) = take_acks(rbuf, version, &mut inflight, stats)? {
                    last_ack = at;
                }
            }
            written = wr.write_all_buf(wbuf), if !wbuf.is_empty() => written?,
            _ = sleep_until(wake) => {}
        }
    }
}

/// Takes the PUBACKs in `rbuf`: each frees its packet id and is counted by reason code, its
/// message as acknowledged with success below 0x80. Returns when the last of them was taken.
fn take_acks(
    rbuf: &mut bytes::BytesMut,
    version: mqtt_codec::ProtocolVersion,
    inflight: &mut HashMap<u16, u32>,
    stats: &mut PubStats,
) -> Result<Option<Instant>, Failure> {
    let mut acked = None;
    while let Some(packet) = decode_from(rbuf, version)? {
        if let Packet::PubAck(ack) = packet
            && let Some(seq) = inflight.remove(&ack.packet_id)
        {
            let code = ack.reason_code as u8;
            stats.acks.record(code);
            if code < 0x80 {
                stats.acked_ok.insert(seq);
            }
            acked = Some(Instant::now());
        }
    }
    Ok(acked)
}

/// The packet id after `last` that no unacknowledged publication holds (the window is far
/// below 65,535, so one is always free).
fn next_free_id(mut last: u16, inflight: &HashMap<u16, u32>) -> u16 {
    loop {
        last = last.checked_add(1).unwrap_or(1);
        if !inflight.contains_key(&last) {
            return last;
        }
    }
}

/// What the subscriber received.
#[derive(Default)]
struct SubStats {
    /// Per publisher: sequence numbers received.
    received: Vec<SeqSet>,
    deliveries: u64,
    duplicates: u64,
    unrecognised: u64,
    last_ns: u64,
    error: Option<Failure>,
}

/// Reads and acknowledges until publishing has ended and nothing has arrived for
/// `timing.idle` (or `timing.drain_end`), recording which messages came and their latency.
async fn subscriber(
    mut client: Client,
    pubs: usize,
    hist: Arc<Mutex<Histogram<u64>>>,
    timing: Timing,
    keep_alive: u16,
) -> SubStats {
    let mut stats = SubStats {
        received: vec![SeqSet::default(); pubs],
        ..SubStats::default()
    };
    if let Err(f) = subscribe_loop(&mut client, &hist, timing, keep_alive, &mut stats).await {
        stats.error = Some(f);
    }
    let _ = client.stream.shutdown().await;
    stats
}

async fn subscribe_loop(
    client: &mut Client,
    hist: &Mutex<Histogram<u64>>,
    timing: Timing,
    keep_alive: u16,
    stats: &mut SubStats,
) -> Result<(), Failure> {
    let version = client.version;
    let (mut rd, mut wr) = client.stream.split();
    let (rbuf, wbuf) = (&mut client.rbuf, &mut client.wbuf);
    let mut batch: Vec<u64> = Vec::with_capacity(256);
    let mut last_arrival = Instant::now();
    let ping_every = Duration::from_secs(u64::from(keep_alive.max(2)) / 2);
    let mut next_ping = Instant::now() + ping_every;
    loop {
        let stop = timing.stop(last_arrival);
        if Instant::now() >= stop {
            return Ok(());
        }
        tokio::select! {
            read = rd.read_buf(rbuf) => {
                if read? == 0 {
                    return Err(Failure::Closed);
                }
                let now_ns = unix_nanos();
                while let Some(packet) = decode_from(rbuf, version)? {
                    let Packet::Publish(p) = packet else { continue };
                    stats.deliveries += 1;
                    match read_stamp(&p.payload) {
                        Some((sent, publisher, seq))
                            if (publisher as usize) < stats.received.len() && seq < MAX_SEQ =>
                        {
                            batch.push(now_ns.saturating_sub(sent) / 1000);
                            if !stats.received[publisher as usize].insert(seq) {
                                stats.duplicates += 1;
                            }
                        }
                        _ => stats.unrecognised += 1,
                    }
                    match p.qos {
                        QoS::AtMostOnce => {}
                        QoS::AtLeastOnce => {
                            encode_into(&Packet::PubAck(Ack::new(p.packet_id)), version, wbuf);
                        }
                        // Subscribed at QoS 1: a broker never sends QoS 2 here.
                        QoS::ExactlyOnce => {
                            return Err(Failure::Protocol("QoS 2 on a QoS 1 subscription".into()));
                        }
                    }
                }
                if !batch.is_empty() {
                    stats.last_ns = now_ns;
                    last_arrival = Instant::now();
                    traffic::record_batch(hist, &mut batch);
                }
            }
            written = wr.write_all_buf(wbuf), if !wbuf.is_empty() => written?,
            _ = sleep_until(next_ping) => {
                encode_into(&Packet::PingReq, version, wbuf);
                next_ping += ping_every;
            }
            _ = sleep_until(stop) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::Readings;

    #[test]
    fn free_ids_skip_the_ones_in_flight_and_zero() {
        let inflight: HashMap<u16, u32> = [(1, 0), (2, 1), (65_535, 2)].into_iter().collect();
        assert_eq!(next_free_id(0, &inflight), 3);
        assert_eq!(next_free_id(65_534, &inflight), 3);
        assert_eq!(next_free_id(5, &inflight), 6);
    }

    #[test]
    fn merge_counts_acknowledged_messages_that_never_arrived() {
        let opts = RunOptions {
            targets: vec![([127, 0, 0, 1], 1883).into()],
            pub_targets: Vec::new(),
            sources: Vec::new(),
            procs: 2,
            mqtt_level: 5,
            keep_alive: 60,
            timeout: Duration::from_secs(1),
            broker_pid: None,
            quiet: true,
            transport: crate::transport::TransportSpec::tcp(),
            login: Default::default(),
        };
        let spec = FloodSpec {
            pubs: 2,
            pub_rate: 0.0,
            payload: 64,
            duration_s: 1.0,
            idle_s: 1.0,
            max_drain_s: 5.0,
            inflight: 8,
        };
        let set = |seqs: &[u32]| {
            let mut s = SeqSet::default();
            for &q in seqs {
                s.insert(q);
            }
            s
        };
        let mut acks = AckCounts::default();
        for code in [0, 0, 0, 0, 0x97] {
            acks.record(code);
        }
        // Publisher 0: 0..3 acknowledged, 3 refused; publisher 1: 0 acknowledged, 1 not
        // answered. The subscriber got 0 and 2 from publisher 0, and 1 from publisher 1.
        let publishers = FloodWorkerResult {
            pubs_connected: 2,
            published: 6,
            acks,
            acked_ok: vec![(0, set(&[0, 1, 2])), (1, set(&[0]))],
            ..Default::default()
        };
        let subscriber = FloodWorkerResult {
            subscriber_connected: true,
            received: vec![(0, set(&[0, 2])), (1, set(&[1]))],
            deliveries: 4,
            duplicates: 1,
            ..Default::default()
        };
        let measured = Measured {
            parts: vec![subscriber, publishers],
            start_ns: 0,
            readings: Readings::default(),
        };
        let r = merge(&opts, spec, FailureCounts::new(), measured);
        assert_eq!((r.published, r.acks.success, r.unacknowledged), (6, 4, 1));
        assert_eq!((r.received, r.duplicates), (3, 1));
        assert_eq!(
            r.acked_not_delivered, 2,
            "publisher 0's 1 and publisher 1's 0"
        );
        assert_eq!(r.delivered_not_acked, 1, "publisher 1's 1");
        assert!((r.acked_not_delivered_ratio - 0.5).abs() < 1e-9);
    }
}
