//! `fanout`, `fanin` and `p2p`: publishers and subscribers on one engine, differing only in
//! their topics.
//!
//! Each PUBLISH carries its send time (Unix nanoseconds, 8 bytes) at the start of its payload;
//! subscribers record the difference on arrival in one histogram per worker process, locked
//! once per read batch. Publishers encode the header into a reused buffer and append the
//! payload bytes after it: nothing is allocated per message.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use hdrhistogram::Histogram;
use mqtt_codec::{Ack, Packet, Publish, QoS};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep_until};

use super::{
    AckCounts, CpuUse, Measured, RunOptions, failures_of, gather_ready, measure, sum_failures,
};
use crate::client::{
    Client, Failure, FailureCounts, count_failure, decode_from, encode_into, unix_nanos,
};
use crate::coord::Workers;
use crate::procstat;
use crate::proto::{
    Command, Event, Latency, ScenarioSpec, WorkerSpec, histogram_to_pairs, merge_pairs,
    new_histogram,
};
use crate::worker::{Commands, Emitter};

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

    /// The scenario's name: fanout, fanin or p2p.
    pub fn name(&self) -> &'static str {
        match self.pattern {
            Pattern::Fanout => "fanout",
            Pattern::Fanin => "fanin",
            Pattern::P2p => "p2p",
        }
    }
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
    let start = Instant::now() + Duration::from_nanos(start_unix_ns.saturating_sub(unix_nanos()));
    let pub_end = start + Duration::from_secs_f64(t.duration_s);
    let drain_end = pub_end + Duration::from_secs_f64(t.drain_s);
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
        sub_tasks.spawn(async move {
            let (stats, mut client) =
                subscriber(client, hist, pub_end, drain_end, keep_alive, 0).await;
            let _ = client.stream.shutdown().await;
            stats
        });
    }
    let rate = if t.rate > 0.0 {
        t.rate / t.pubs as f64
    } else {
        0.0
    };
    let template = Bytes::from(vec![0u8; t.payload]);
    let mut pub_tasks = JoinSet::new();
    for (i, client) in pubs {
        let mut publish = Publish::new(t.topic(&spec.run_id, i), template.clone());
        publish.qos = qos;
        let window = if qos == QoS::AtMostOnce {
            usize::MAX
        } else {
            t.inflight.clamp(1, usize::from(client.receive_maximum))
        };
        // Publishers at a fixed rate are spread evenly over one interval, so that N publishers
        // at r msg/s make a steady N*r msg/s, not a burst of N messages every 1/r seconds
        // (which would measure burst queueing, in every broker alike).
        let phase = if rate > 0.0 {
            Duration::from_secs_f64(i as f64 / t.pubs as f64 / rate)
        } else {
            Duration::ZERO
        };
        pub_tasks.spawn(publisher(
            client,
            publish,
            rate,
            window,
            start + phase,
            pub_end,
            drain_end,
        ));
    }
    let mut keep = Vec::new();
    while let Some(joined) = pub_tasks.join_next().await {
        let (stats, client) = joined?;
        result.published += stats.published;
        result.acked += stats.acked;
        result.acks.add(&stats.acks);
        if let Some(f) = stats.error {
            count_failure(&mut result.errors, &f);
        }
        keep.extend(client);
    }
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
    result.latency = match hist.lock() {
        Ok(h) => histogram_to_pairs(&h),
        Err(poisoned) => histogram_to_pairs(&poisoned.into_inner()),
    };
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
        let target = spec.target(t.subs + i);
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

/// What one publisher did.
#[derive(Default)]
pub(crate) struct PubStats {
    /// Publications written.
    pub(crate) published: u64,
    /// QoS 1/2 publications acknowledged (PUBACK or PUBCOMP, whatever their reason code).
    pub(crate) acked: u64,
    /// Those acknowledgements by reason code.
    pub(crate) acks: AckCounts,
    /// Why the connection ended early, if it did.
    pub(crate) error: Option<Failure>,
}

/// Largest number of publications encoded before one write.
const BATCH: u64 = 256;

/// How a publisher paces itself: `rate` publications a second from `start` until `end`, or
/// with a rate of 0 as fast as it may (a batch whenever its last one has been written);
/// never more than a batch at once, nor more than its window leaves.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pace {
    /// When publishing started.
    pub(crate) start: Instant,
    /// Publications per second; 0 = as fast as the window and the socket allow.
    pub(crate) rate: f64,
    /// When publishing stops.
    pub(crate) end: Instant,
}

impl Pace {
    /// Encodes what is due at `now`, at most `room` publications, each with `encode` (given
    /// how many were published before it) and counted in `published`. Returns when the next
    /// is due (no later than `end`), or `None` when the loop should wait for the socket to
    /// take the batch (`written`: nothing is left to write) or for acknowledgements.
    pub(crate) fn publish_due(
        &self,
        now: Instant,
        (room, written): (u64, bool),
        published: &mut u64,
        mut encode: impl FnMut(u64),
    ) -> Option<Instant> {
        let due = if self.rate > 0.0 {
            let owed = ((now - self.start).as_secs_f64() * self.rate) as u64 + 1;
            owed.saturating_sub(*published)
        } else if written {
            BATCH
        } else {
            0
        };
        let n = due.min(BATCH).min(room);
        for _ in 0..n {
            encode(*published);
            *published += 1;
        }
        if self.rate > 0.0 && n == due {
            let next = self.start + Duration::from_secs_f64(*published as f64 / self.rate);
            Some(next.min(self.end))
        } else if self.rate == 0.0 && n > 0 {
            Some(now)
        } else {
            None
        }
    }
}

/// When a publisher's loop wakes up by itself: when its next publication is due, unless a
/// write is pending (`written` false); then only at `limit`, because a broker that stops
/// reading this publisher must not hold it past the run.
pub(crate) fn wake_at(next_due: Option<Instant>, written: bool, limit: Instant) -> Instant {
    match next_due {
        Some(due) if written => due,
        _ => limit,
    }
}

/// Publishes at `rate` per second (0: as fast as the window and the socket allow) from
/// `start` to `end`, then waits for outstanding acknowledgements until `drain_end`. Gives
/// the client back unless its connection failed or the broker stopped reading it (writes
/// still waiting at `drain_end` count as a timeout, and their publications as unwritten).
pub(crate) async fn publisher(
    mut client: Client,
    mut publish: Publish,
    rate: f64,
    window: usize,
    start: Instant,
    end: Instant,
    drain_end: Instant,
) -> (PubStats, Option<Client>) {
    let mut stats = PubStats::default();
    sleep_until(start).await;
    let outcome = publish_loop(
        &mut client,
        &mut publish,
        rate,
        window,
        end,
        drain_end,
        &mut stats,
    )
    .await;
    let client = settle(
        client,
        &publish,
        outcome,
        &mut stats.published,
        &mut stats.error,
    );
    (stats, client)
}

/// Ends a publisher's run: publications still whole in its write buffer were never written
/// (the broker stopped reading it) and come off `published`. The client comes back if the
/// run ended with everything written; if not, `error` says why (a timeout when the buffer
/// never emptied).
pub(crate) fn settle(
    client: Client,
    publish: &Publish,
    outcome: Result<(), Failure>,
    published: &mut u64,
    error: &mut Option<Failure>,
) -> Option<Client> {
    let left = unsent(client.wbuf.len(), frame_len(publish, client.version));
    *published -= left.min(*published);
    match outcome {
        Ok(()) if client.wbuf.is_empty() => Some(client),
        Ok(()) => {
            *error = Some(Failure::Timeout);
            None
        }
        Err(f) => {
            *error = Some(f);
            None
        }
    }
}

async fn publish_loop(
    client: &mut Client,
    publish: &mut Publish,
    rate: f64,
    window: usize,
    end: Instant,
    drain_end: Instant,
    stats: &mut PubStats,
) -> Result<(), Failure> {
    let pace = Pace {
        start: Instant::now(),
        rate,
        end,
    };
    let version = client.version;
    let mut inflight = 0usize;
    let (mut rd, mut wr) = client.stream.split();
    let (rbuf, wbuf) = (&mut client.rbuf, &mut client.wbuf);
    let mut packet_id: u16 = 0;
    loop {
        let now = Instant::now();
        let publishing = now < end;
        if !publishing && wbuf.is_empty() && inflight == 0 {
            return Ok(());
        }
        if now >= drain_end {
            return Ok(());
        }
        let mut next_due = None;
        if publishing {
            let room = (window.saturating_sub(inflight) as u64, wbuf.is_empty());
            let encode = |_| {
                if publish.qos != QoS::AtMostOnce {
                    packet_id = packet_id.checked_add(1).unwrap_or(1);
                    publish.packet_id = packet_id;
                    inflight += 1;
                }
                encode_timestamped(publish, version, wbuf);
            };
            next_due = pace.publish_due(now, room, &mut stats.published, encode);
        }
        let limit = if publishing { end } else { drain_end };
        let wake = wake_at(next_due, wbuf.is_empty(), limit);
        tokio::select! {
            read = rd.read_buf(rbuf) => {
                if read? == 0 {
                    return Err(Failure::Closed);
                }
                take_acks(rbuf, wbuf, version, &mut inflight, stats)?;
            }
            written = wr.write_all_buf(wbuf), if !wbuf.is_empty() => written?,
            _ = sleep_until(wake) => {}
        }
    }
}

/// Takes the acknowledgements in `rbuf`: a PUBACK or PUBCOMP frees a place in the window
/// and is counted by reason code; a PUBREC is answered with a PUBREL.
fn take_acks(
    rbuf: &mut bytes::BytesMut,
    wbuf: &mut bytes::BytesMut,
    version: mqtt_codec::ProtocolVersion,
    inflight: &mut usize,
    stats: &mut PubStats,
) -> Result<(), Failure> {
    while let Some(packet) = decode_from(rbuf, version)? {
        match packet {
            Packet::PubAck(ack) | Packet::PubComp(ack) => {
                *inflight = inflight.saturating_sub(1);
                stats.acked += 1;
                stats.acks.record(ack.reason_code as u8);
            }
            Packet::PubRec(rec) => {
                let rel = Packet::PubRel(Ack::new(rec.packet_id));
                encode_into(&rel, version, wbuf);
            }
            _ => {}
        }
    }
    Ok(())
}

/// Bytes one encoded `publish` takes (its header's size does not depend on the packet id).
fn frame_len(publish: &Publish, version: mqtt_codec::ProtocolVersion) -> usize {
    let mut header = bytes::BytesMut::new();
    if let Err(e) = publish.encode_header(version, &mut header) {
        panic!("herald-bench built an unencodable PUBLISH: {e}");
    }
    header.len() + publish.payload.len()
}

/// Publications left whole in a write buffer of `len` bytes when a run gives up on a
/// broker that stopped reading: they were never written. (A QoS 2 PUBREL waiting with them
/// makes this an estimate.)
fn unsent(len: usize, frame_len: usize) -> u64 {
    (len / frame_len.max(1)) as u64
}

/// Appends `publish` with the current time in the first 8 bytes of its payload.
fn encode_timestamped(
    publish: &Publish,
    version: mqtt_codec::ProtocolVersion,
    wbuf: &mut bytes::BytesMut,
) {
    if let Err(e) = publish.encode_header(version, wbuf) {
        panic!("herald-bench built an unencodable PUBLISH: {e}");
    }
    wbuf.extend_from_slice(&unix_nanos().to_be_bytes());
    wbuf.extend_from_slice(&publish.payload[8..]);
}

/// What one subscriber received.
#[derive(Default)]
pub(crate) struct SubStats {
    /// Publications received.
    pub(crate) delivered: u64,
    /// Publications received that were sent before `not_before_ns` (not counted above).
    pub(crate) stale: u64,
    /// First arrival, Unix nanoseconds (0: none).
    pub(crate) first_ns: u64,
    /// Last arrival, Unix nanoseconds (0: none).
    pub(crate) last_ns: u64,
    /// Why the connection ended early, if it did.
    pub(crate) error: Option<Failure>,
}

/// Reads publications until publishing has ended and the flow has been idle for a second
/// (or `drain_end`), acknowledging QoS 1/2 and recording latencies; gives the client back.
/// Publications sent before `not_before_ns` (Unix nanoseconds: a previous round's backlog)
/// are counted apart, as stale.
pub(crate) async fn subscriber(
    mut client: Client,
    hist: Arc<Mutex<Histogram<u64>>>,
    pub_end: Instant,
    drain_end: Instant,
    keep_alive: u16,
    not_before_ns: u64,
) -> (SubStats, Client) {
    let mut stats = SubStats::default();
    if let Err(f) = subscribe_loop(
        &mut client,
        &hist,
        (pub_end, drain_end),
        keep_alive,
        not_before_ns,
        &mut stats,
    )
    .await
    {
        stats.error = Some(f);
    }
    (stats, client)
}

const IDLE: Duration = Duration::from_secs(1);

/// The send time in the first 8 bytes of a payload.
fn send_time(payload: &[u8]) -> Option<u64> {
    let bytes: [u8; 8] = payload.get(..8)?.try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

/// The fast path for the bulk of a fan-out: when `rbuf` starts with a complete QoS 0
/// PUBLISH, consumes it in place (fixed header, topic length, property length) without
/// building a packet, and returns `Some(send time)`. `None` leaves `rbuf` for the full
/// decoder: another packet kind, QoS 1/2, or an incomplete frame.
fn take_qos0_publish(
    rbuf: &mut bytes::BytesMut,
    version: mqtt_codec::ProtocolVersion,
) -> Result<Option<Option<u64>>, Failure> {
    let header = mqtt_codec::check_frame(rbuf, version, mqtt_codec::MAX_PACKET_SIZE)
        .map_err(|e| Failure::Protocol(e.to_string()))?;
    let Some(h) = header else { return Ok(None) };
    if h.packet_type != mqtt_codec::PacketType::Publish
        || h.flags & 0x06 != 0
        || rbuf.len() < h.frame_len()
    {
        return Ok(None);
    }
    let body = &rbuf[h.header_len..h.frame_len()];
    let topic_len = match body {
        [hi, lo, ..] => usize::from(u16::from_be_bytes([*hi, *lo])),
        _ => return Ok(None),
    };
    let mut offset = 2 + topic_len;
    if version.is_v5() {
        let props = mqtt_codec::read_varint(body.get(offset..).unwrap_or_default());
        let Ok(Some((len, len_bytes))) = props else {
            return Ok(None);
        };
        offset += len_bytes + len as usize;
    }
    let sent = body.get(offset..).and_then(send_time);
    bytes::Buf::advance(rbuf, h.frame_len());
    Ok(Some(sent))
}

async fn subscribe_loop(
    client: &mut Client,
    hist: &Mutex<Histogram<u64>>,
    (pub_end, drain_end): (Instant, Instant),
    keep_alive: u16,
    not_before_ns: u64,
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
        let stop = (pub_end.max(last_arrival) + IDLE).min(drain_end);
        if Instant::now() >= stop {
            return Ok(());
        }
        tokio::select! {
            read = rd.read_buf(rbuf) => {
                if read? == 0 {
                    return Err(Failure::Closed);
                }
                let now_ns = unix_nanos();
                take_publications(rbuf, wbuf, version, now_ns, not_before_ns, &mut batch, stats)?;
                if !batch.is_empty() {
                    if stats.first_ns == 0 {
                        stats.first_ns = now_ns;
                    }
                    stats.last_ns = now_ns;
                    last_arrival = Instant::now();
                    record_batch(hist, &mut batch);
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

/// Takes what one read, at `now_ns`, brought: each publication counts as delivered (its
/// latency in `batch`) or, sent before `not_before_ns`, as stale; QoS 1 and 2 ones are
/// acknowledged, and a PUBREL is completed. QoS 0 publications take the fast path.
fn take_publications(
    rbuf: &mut bytes::BytesMut,
    wbuf: &mut bytes::BytesMut,
    version: mqtt_codec::ProtocolVersion,
    now_ns: u64,
    not_before_ns: u64,
    batch: &mut Vec<u64>,
    stats: &mut SubStats,
) -> Result<(), Failure> {
    let mut arrived = |sent: Option<u64>, batch: &mut Vec<u64>| match sent {
        Some(sent_ns) if sent_ns < not_before_ns => stats.stale += 1,
        Some(sent_ns) => {
            batch.push(now_ns.saturating_sub(sent_ns) / 1000);
            stats.delivered += 1;
        }
        None => stats.delivered += 1,
    };
    loop {
        if let Some(sent_ns) = take_qos0_publish(rbuf, version)? {
            arrived(sent_ns, batch);
            continue;
        }
        let Some(packet) = decode_from(rbuf, version)? else {
            return Ok(());
        };
        let reply = match packet {
            Packet::Publish(p) => {
                arrived(send_time(&p.payload), batch);
                match p.qos {
                    QoS::AtMostOnce => None,
                    QoS::AtLeastOnce => Some(Packet::PubAck(Ack::new(p.packet_id))),
                    QoS::ExactlyOnce => Some(Packet::PubRec(Ack::new(p.packet_id))),
                }
            }
            Packet::PubRel(rel) => Some(Packet::PubComp(Ack::new(rel.packet_id))),
            _ => None,
        };
        if let Some(reply) = reply {
            encode_into(&reply, version, wbuf);
        }
    }
}

/// Records a read's latencies (microseconds) in the worker's histogram under one lock, and
/// empties the batch.
pub(crate) fn record_batch(hist: &Mutex<Histogram<u64>>, batch: &mut Vec<u64>) {
    if let Ok(mut h) = hist.lock() {
        for &us in batch.iter() {
            h.saturating_record(us.max(1));
        }
    }
    batch.clear();
}
