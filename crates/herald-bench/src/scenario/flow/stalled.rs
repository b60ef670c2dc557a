//! `stalled`: a fan-out (one publisher to 1,000 fast subscribers by default) played in two
//! rounds over the same connections: first the fast subscribers alone, then with one more
//! subscriber on the topic that stops reading its socket right after its SUBACK. The fast
//! subscribers' latency and throughput in the two rounds say what one stuck reader costs
//! everyone else; the stalled subscriber says whether and when the broker let it go.
//!
//! On loopback here a socket that is not read holds about 4.5 MB before its sender sees it
//! full (up to 4 MiB in the sender's buffer, `tcp_wmem`'s maximum, the rest on the reader's
//! side), which a fan-out's share takes minutes to fill. So the stalled subscriber also
//! subscribes to a topic of its own, on which a filler publisher sends `fill_rate`
//! publications a second of `fill_payload` bytes (at the round's QoS) while the round lasts:
//! its buffers fill within seconds, and then its queue in the broker. The fast subscribers
//! never see the filler.
//!
//! The stalled subscriber never reads while the round lasts, but writes a PINGREQ every
//! [`PING_EVERY`]: the broker's keep-alive then has no reason to end it, and it notices a
//! disconnect without reading. Once the broker has closed the connection its kernel answers
//! the next PINGREQ with a reset, and the write after that fails, so a disconnect is seen at
//! most two pings after it happened. After the round (once the fast subscribers are done)
//! it wakes up and reads what the broker left in its socket, for at most [`WAKE_LIMIT`]:
//! the publications still queued for it, a DISCONNECT with its reason code (MQTT 5), or the
//! end of the connection.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use mqtt_codec::{Packet, Publish, QoS};
use serde::{Deserialize, Serialize};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{Instant, sleep, sleep_until, timeout};

use crate::client::{Client, ClientConfig, Failure, FailureCounts, count_failure};
use crate::coord::Workers;
use crate::procstat;
use crate::proto::{Command, Event, Latency, ScenarioSpec, WorkerSpec, merge_pairs, new_histogram};
use crate::scenario::inbox::Inbox;
use crate::scenario::traffic::{self, Pattern, PubStats, Schedule, TrafficSpec};
use crate::scenario::{
    AckCounts, CpuUse, Measured, RunOptions, connected_of, failures_of, gather_ready, measure,
    sum_failures,
};
use crate::worker::{Commands, Emitter};

/// How often the stalled subscriber writes a PINGREQ.
pub const PING_EVERY: Duration = Duration::from_millis(500);

/// The stalled subscriber's wake-up read ends after this long without a byte...
const WAKE_IDLE: Duration = Duration::from_secs(1);

/// ...or after this long in all.
pub const WAKE_LIMIT: Duration = Duration::from_secs(5);

/// Parameters of a `stalled` run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StalledSpec {
    /// Publishers, all on the one topic.
    pub pubs: usize,
    /// Fast subscribers (the stalled one comes on top).
    pub subs: usize,
    /// QoS of publications and subscriptions (the stalled subscriber's too).
    pub qos: u8,
    /// Payload bytes (at least 8: the send time).
    pub payload: usize,
    /// Publications per second over all publishers; 0 = as fast as possible.
    pub rate: f64,
    /// Seconds of publishing in each round.
    pub duration_s: f64,
    /// Seconds fast subscribers may keep receiving after publishing stops.
    pub drain_s: f64,
    /// Unacknowledged QoS 1/2 publications allowed per publisher.
    pub inflight: usize,
    /// Filler publications per second to the stalled subscriber alone; 0 = none.
    pub fill_rate: f64,
    /// Filler payload bytes (at least 8).
    pub fill_payload: usize,
    /// Whether to play the round without the stalled subscriber first.
    pub baseline: bool,
}

impl StalledSpec {
    /// The fan-out the rounds play.
    fn traffic(&self) -> TrafficSpec {
        TrafficSpec {
            pattern: Pattern::Fanout,
            pubs: self.pubs,
            subs: self.subs,
            qos: self.qos,
            payload: self.payload,
            rate: self.rate,
            duration_s: self.duration_s,
            drain_s: self.drain_s,
            inflight: self.inflight,
            persistent: false,
        }
    }

    /// The stalled subscriber's own topic, where the filler publishes.
    fn fill_topic(run: &str) -> String {
        format!("hb/{run}/stalled-fill")
    }

    /// Whether each round has the stalled subscriber, in order.
    pub fn rounds(&self) -> Vec<bool> {
        if self.baseline {
            vec![false, true]
        } else {
            vec![true]
        }
    }
}

/// What happened to the stalled subscriber.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StalledOutcome {
    /// Whether it connected and subscribed.
    pub subscribed: bool,
    /// Why it did not, if it did not.
    pub failure: Option<String>,
    /// PINGREQs it wrote while not reading.
    pub pings: u64,
    /// Whether the broker ended its connection before the wake-up read found it alive.
    pub disconnected: bool,
    /// Seconds from the start of publishing until a PINGREQ write failed: the broker had
    /// closed the connection at most two pings ([`PING_EVERY`]) before. `None` when no write
    /// failed (not disconnected, or only found so on waking up).
    pub disconnect_seen_after_s: Option<f64>,
    /// How the connection ended: "reset", "closed", ... (`None` while it is alive).
    pub ended_by: Option<String>,
    /// The reason code of a DISCONNECT the broker left in the socket (MQTT 5), as "0x97".
    pub disconnect_reason: Option<String>,
    /// Publications read when it woke up after the round (fan-out and filler).
    pub received_on_wake: u64,
    /// Filler publications written to the broker for it.
    pub filler_published: u64,
    /// The filler's acknowledgements by reason code (QoS 1/2).
    pub filler_acks: AckCounts,
}

/// One worker's figures for one round.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StalledWorkerRound {
    /// Fast subscribers connected at the start of the round.
    pub subs_connected: u64,
    /// Publishers connected at the start of the round.
    pub pubs_connected: u64,
    /// Publications written.
    pub published: u64,
    /// QoS 1/2 acknowledgements by reason code.
    pub acks: AckCounts,
    /// Publications the fast subscribers received.
    pub delivered: u64,
    /// Publications they received that were sent before the round (not counted above).
    pub stale: u64,
    /// Last arrival at a fast subscriber, Unix nanoseconds (0 when none).
    pub last_delivery_ns: u64,
    /// The fast subscribers' latency as (microseconds, count) pairs.
    pub latency: Vec<(u64, u64)>,
    /// Fast subscribers' and publishers' connections lost, by reason.
    pub errors: FailureCounts,
    /// The stalled subscriber, in the worker that held it.
    pub stalled: Option<StalledOutcome>,
    /// This worker's CPU seconds during the round.
    pub cpu_seconds: f64,
}

/// One round, merged.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StalledRound {
    /// Whether the stalled subscriber was there.
    pub with_stalled: bool,
    /// Fast subscribers connected.
    pub subs_connected: u64,
    /// Publishers connected.
    pub pubs_connected: u64,
    /// Publications written.
    pub published: u64,
    /// Publications per second over the publishing period.
    pub published_per_s: f64,
    /// QoS 1/2 acknowledgements by reason code.
    pub acks: AckCounts,
    /// Deliveries owed to the fast subscribers: publications times fast subscribers.
    pub expected: u64,
    /// Deliveries the fast subscribers received.
    pub delivered: u64,
    /// Deliveries of publications sent before the round started (a backlog the broker had
    /// left from the round before); not counted in `delivered` nor in the latency.
    pub stale: u64,
    /// Deliveries per second, from the start to the last delivery.
    pub delivered_per_s: f64,
    /// delivered / expected.
    pub delivery_ratio: f64,
    /// The fast subscribers' publish-to-delivery latency.
    pub latency: Latency,
    /// Connections lost during the round, by reason.
    pub errors: FailureCounts,
    /// The stalled subscriber (in the round that has it).
    pub stalled: Option<StalledOutcome>,
    /// CPU used by the broker and by this tool.
    pub cpu: CpuUse,
}

/// The figures to compare between the rounds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StalledSummary {
    /// Fast subscribers' p99 latency without the stalled subscriber.
    pub p99_alone_ms: Option<f64>,
    /// Fast subscribers' p99 latency with it.
    pub p99_with_stalled_ms: Option<f64>,
    /// The second over the first.
    pub p99_ratio: Option<f64>,
    /// Fast subscribers' deliveries per second without the stalled subscriber.
    pub delivered_per_s_alone: Option<f64>,
    /// Fast subscribers' deliveries per second with it.
    pub delivered_per_s_with_stalled: Option<f64>,
    /// Fast subscribers' delivery ratio with it.
    pub delivery_ratio_with_stalled: Option<f64>,
    /// Whether the broker ended the stalled subscriber's connection.
    pub stalled_disconnected: Option<bool>,
    /// When that was seen, seconds after publishing started.
    pub stalled_disconnect_seen_after_s: Option<f64>,
}

/// The result of a `stalled` run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StalledReport {
    /// Always "stalled".
    pub scenario: String,
    /// The parameters.
    pub spec: StalledSpec,
    /// MQTT protocol level of every client.
    pub mqtt_level: u8,
    /// Worker processes.
    pub procs: usize,
    /// Connection failures while setting up the fast subscribers and publishers.
    pub connect_failures: FailureCounts,
    /// The rounds, in the order played.
    pub rounds: Vec<StalledRound>,
    /// The rounds side by side.
    pub summary: StalledSummary,
}

/// Runs `stalled` as coordinator.
pub async fn run(opts: &RunOptions, spec: StalledSpec) -> anyhow::Result<StalledReport> {
    if spec.payload < 8 {
        bail!("--payload must be at least 8 bytes (the send time travels in it)");
    }
    if spec.pubs == 0 || spec.subs == 0 || spec.qos > 2 {
        bail!("--pubs and --subs must be at least 1, --qos 0, 1 or 2");
    }
    if spec.duration_s <= 0.0 || spec.rate < 0.0 || spec.drain_s < 0.0 || spec.fill_rate < 0.0 {
        bail!("--duration must be above 0, --rate, --drain and --fill-rate at least 0");
    }
    if spec.fill_payload < 8 {
        bail!("--fill-payload must be at least 8 bytes");
    }
    let mut workers = Workers::spawn(opts.specs(ScenarioSpec::Stalled(spec.clone()))).await?;
    let total = (spec.pubs + spec.subs) as u64;
    let ready = gather_ready(&mut workers, opts, total).await?;
    let connect_failures = sum_failures(ready.iter().map(failures_of));
    let mut rounds = Vec::new();
    for with_stalled in spec.rounds() {
        // Let the broker settle between rounds.
        sleep(Duration::from_secs(1)).await;
        workers
            .send(&Command::Round {
                stalled: with_stalled,
            })
            .await?;
        // The stalled subscriber's connect and two subscriptions, and the filler's connect.
        let ready = workers.gather(None, opts.timeout * 4).await?;
        let connected: u64 = ready.iter().map(connected_of).sum();
        if connected == 0 {
            bail!("no client connected");
        }
        let label = if with_stalled {
            "with stalled"
        } else {
            "alone"
        };
        let limit = Duration::from_secs_f64(spec.duration_s + spec.drain_s + 60.0) + WAKE_LIMIT;
        let measured = measure(&mut workers, opts, spec.duration_s, label, limit).await?;
        rounds.push(merge_round(&spec, with_stalled, measured));
    }
    workers.finish().await;
    Ok(StalledReport {
        scenario: "stalled".into(),
        mqtt_level: opts.mqtt_level,
        procs: opts.procs,
        connect_failures,
        summary: summarise(&rounds),
        rounds,
        spec,
    })
}

/// One round's report: the workers' figures added up, and what follows from them.
fn merge_round(
    spec: &StalledSpec,
    with_stalled: bool,
    measured: Measured<StalledWorkerRound>,
) -> StalledRound {
    let mut hist = new_histogram();
    let mut r = StalledWorkerRound::default();
    for p in measured.parts {
        r.subs_connected += p.subs_connected;
        r.pubs_connected += p.pubs_connected;
        r.published += p.published;
        r.acks.add(&p.acks);
        r.delivered += p.delivered;
        r.stale += p.stale;
        r.last_delivery_ns = r.last_delivery_ns.max(p.last_delivery_ns);
        r.cpu_seconds += p.cpu_seconds;
        merge_pairs(&mut hist, &p.latency);
        for (k, v) in p.errors {
            *r.errors.entry(k).or_default() += v;
        }
        r.stalled = r.stalled.or(p.stalled);
    }
    let expected = r.published * r.subs_connected;
    let window = r.last_delivery_ns.saturating_sub(measured.start_ns) as f64 / 1e9;
    StalledRound {
        with_stalled,
        subs_connected: r.subs_connected,
        pubs_connected: r.pubs_connected,
        published: r.published,
        published_per_s: r.published as f64 / spec.duration_s,
        acks: r.acks,
        expected,
        delivered: r.delivered,
        stale: r.stale,
        delivered_per_s: if window > 0.0 {
            r.delivered as f64 / window
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
        stalled: r.stalled,
        cpu: CpuUse::new(measured.readings, r.cpu_seconds, r.delivered),
    }
}

fn summarise(rounds: &[StalledRound]) -> StalledSummary {
    let alone = rounds.iter().find(|r| !r.with_stalled);
    let with = rounds.iter().find(|r| r.with_stalled);
    let p99 =
        |r: Option<&StalledRound>| r.filter(|r| r.latency.count > 0).map(|r| r.latency.p99_ms);
    let (p99_alone_ms, p99_with_stalled_ms) = (p99(alone), p99(with));
    let stalled = with.and_then(|r| r.stalled.as_ref());
    StalledSummary {
        p99_alone_ms,
        p99_with_stalled_ms,
        p99_ratio: match (p99_alone_ms, p99_with_stalled_ms) {
            (Some(a), Some(w)) if a > 0.0 => Some(w / a),
            _ => None,
        },
        delivered_per_s_alone: alone.map(|r| r.delivered_per_s),
        delivered_per_s_with_stalled: with.map(|r| r.delivered_per_s),
        delivery_ratio_with_stalled: with.map(|r| r.delivery_ratio),
        stalled_disconnected: stalled.filter(|s| s.subscribed).map(|s| s.disconnected),
        stalled_disconnect_seen_after_s: stalled.and_then(|s| s.disconnect_seen_after_s),
    }
}

/// The fast subscribers and the publishers (with their index) a worker keeps between rounds.
type Clients = (Vec<Client>, Vec<(usize, Client)>);

/// Plays a worker's share of `stalled`; worker 0 holds the stalled subscriber.
pub async fn worker(
    spec: &WorkerSpec,
    s: &StalledSpec,
    cmds: &mut Commands,
    out: &Emitter,
) -> anyhow::Result<()> {
    let qos = QoS::from_u8(s.qos).context("--qos must be 0, 1 or 2")?;
    let (subs, pubs, failures) = traffic::connect_all(spec, &s.traffic(), qos, out).await?;
    out.send(Event::Ready {
        connected: (subs.len() + pubs.len()) as u64,
        failures,
    });
    let cfg = spec.client_config()?;
    let mut clients = (subs, pubs);
    for _ in s.rounds() {
        let Command::Round { stalled } = cmds.next().await? else {
            bail!("expected a round command");
        };
        let mut stuck = None;
        let mut failures = FailureCounts::new();
        if stalled && spec.index == 0 {
            let connected = connect_stalled(spec, &cfg, qos, s).await;
            if let Err(f) = &connected {
                count_failure(&mut failures, f);
            }
            stuck = Some(connected);
        }
        let held = clients.0.len() + clients.1.len();
        out.send(Event::Ready {
            connected: (held + usize::from(matches!(stuck, Some(Ok(_))))) as u64,
            failures,
        });
        let Command::Go { start_unix_ns } = cmds.next().await? else {
            bail!("expected the go command");
        };
        let (round, kept) = play_round(spec, s, qos, clients, stuck, start_unix_ns).await?;
        clients = kept;
        out.result(&round)?;
    }
    Ok(())
}

/// The stalled subscriber and the publisher that fills its socket.
struct Stuck {
    client: Client,
    filler: Option<Client>,
}

async fn connect_stalled(
    spec: &WorkerSpec,
    cfg: &ClientConfig,
    qos: QoS,
    s: &StalledSpec,
) -> Result<Stuck, Failure> {
    // Global client numbers past every fast subscriber and publisher, for the target spread.
    let next = s.subs + s.pubs;
    let id = format!("hb-{}-stalled", spec.run_id);
    let mut client = Client::connect(spec.target(next), cfg, &id, true).await?;
    let filter = s.traffic().filter(&spec.run_id, 0);
    client.subscribe(&filter, qos, cfg.timeout).await?;
    if s.fill_rate <= 0.0 {
        return Ok(Stuck {
            client,
            filler: None,
        });
    }
    let fill_topic = StalledSpec::fill_topic(&spec.run_id);
    client.subscribe(&fill_topic, qos, cfg.timeout).await?;
    let id = format!("hb-{}-filler", spec.run_id);
    let filler = Client::connect(spec.target(next + 1), cfg, &id, true).await?;
    Ok(Stuck {
        client,
        filler: Some(filler),
    })
}

/// One round: publishers and fast subscribers as in `fanout`, the stalled subscriber (if
/// any) not reading while the filler publishes to it; then it wakes up. Gives back the
/// clients still connected.
async fn play_round(
    spec: &WorkerSpec,
    s: &StalledSpec,
    qos: QoS,
    (subs, pubs): Clients,
    stuck: Option<Result<Stuck, Failure>>,
    start_unix_ns: u64,
) -> anyhow::Result<(StalledWorkerRound, Clients)> {
    let t = s.traffic();
    let schedule = t.schedule(start_unix_ns);
    let cpu0 = procstat::sample("self");
    let hist = Arc::new(Mutex::new(new_histogram()));
    let mut round = StalledWorkerRound {
        subs_connected: subs.len() as u64,
        pubs_connected: pubs.len() as u64,
        ..Default::default()
    };
    let mut sub_tasks = JoinSet::new();
    for client in subs {
        let (hist, keep_alive) = (hist.clone(), spec.keep_alive);
        sub_tasks.spawn(traffic::subscriber(
            client,
            hist,
            schedule.pub_end,
            schedule.drain_end,
            keep_alive,
            start_unix_ns,
        ));
    }
    let stalling = match stuck {
        Some(Ok(stuck)) => Some(start_stalling(spec, s, qos, stuck, schedule)),
        Some(Err(f)) => {
            round.stalled = Some(StalledOutcome {
                failure: Some(f.key()),
                ..Default::default()
            });
            None
        }
        None => None,
    };
    let pub_tasks = traffic::start_publishers(&spec.run_id, &t, qos, pubs, schedule);
    let (published, kept_pubs) = traffic::join_publishers(pub_tasks, &mut round.errors).await?;
    round.published = published.published;
    round.acks = published.acks;
    let mut kept_subs = Vec::new();
    while let Some(joined) = sub_tasks.join_next().await {
        let (stats, client) = joined?;
        round.delivered += stats.delivered;
        round.stale += stats.stale;
        round.last_delivery_ns = round.last_delivery_ns.max(stats.last_ns);
        match stats.error {
            Some(f) => count_failure(&mut round.errors, &f),
            None => kept_subs.push(client),
        }
    }
    if let Some(stalling) = stalling {
        round.stalled = Some(stalling.outcome().await?);
    }
    round.cpu_seconds = procstat::cpu_between(cpu0, procstat::sample("self")).unwrap_or(0.0);
    round.latency = traffic::latency_pairs(&hist);
    Ok((round, (kept_subs, kept_pubs)))
}

/// The stalled subscriber in its round: not reading, while the filler publishes to it.
struct Stalling {
    /// The subscriber, writing only PINGREQs until publishing ends.
    stall: JoinHandle<(Client, Stall)>,
    /// The filler, when there is one.
    fill: Option<JoinHandle<(PubStats, Option<Client>)>>,
}

/// Sets the stalled subscriber not reading from `schedule.start` to the end of publishing,
/// and its filler publishing to it as long.
fn start_stalling(
    spec: &WorkerSpec,
    s: &StalledSpec,
    qos: QoS,
    Stuck { client, filler }: Stuck,
    schedule: Schedule,
) -> Stalling {
    let Schedule {
        start,
        pub_end,
        drain_end,
    } = schedule;
    let stall = tokio::spawn(stall(client, start, pub_end));
    let fill = filler.map(|filler| {
        let topic = StalledSpec::fill_topic(&spec.run_id);
        let mut publish = Publish::new(topic, Bytes::from(vec![0u8; s.fill_payload]));
        publish.qos = qos;
        let window = traffic::window(qos, s.inflight, &filler);
        tokio::spawn(traffic::publisher(
            filler,
            publish,
            s.fill_rate,
            window,
            start,
            pub_end,
            drain_end,
        ))
    });
    Stalling { stall, fill }
}

impl Stalling {
    /// Waits for the filler to finish, then wakes the stalled subscriber up: what became
    /// of it.
    async fn outcome(self) -> anyhow::Result<StalledOutcome> {
        let filled = match self.fill {
            Some(task) => Some(task.await?.0),
            None => None,
        };
        let (client, stall) = self.stall.await?;
        let mut outcome = wake(client, stall).await;
        if let Some(filled) = filled {
            outcome.filler_published = filled.published;
            outcome.filler_acks = filled.acks;
        }
        Ok(outcome)
    }
}

/// What the stalled subscriber saw while it did not read.
#[derive(Default)]
struct Stall {
    pings: u64,
    /// When, after the start of publishing, a write failed, and how.
    lost: Option<(Duration, Failure)>,
}

/// Does not read; writes a PINGREQ every [`PING_EVERY`] until `until` or until a write fails.
async fn stall(mut client: Client, start: Instant, until: Instant) -> (Client, Stall) {
    let mut stall = Stall::default();
    let mut next = Instant::now() + PING_EVERY;
    while next < until {
        sleep_until(next).await;
        next += PING_EVERY;
        client.queue(&Packet::PingReq);
        match timeout(PING_EVERY, client.flush()).await {
            Ok(Ok(())) => stall.pings += 1,
            Ok(Err(e)) => {
                let at = Instant::now().saturating_duration_since(start);
                stall.lost = Some((at, Failure::from(e)));
                break;
            }
            // Its own send buffer is full: the broker does not read either. Try again.
            Err(_) => {}
        }
    }
    (client, stall)
}

/// Reads what the broker left in the stalled subscriber's socket, acknowledging QoS 1/2,
/// until it goes quiet for [`WAKE_IDLE`], ends, or [`WAKE_LIMIT`] passes.
async fn wake(mut client: Client, stall: Stall) -> StalledOutcome {
    let mut outcome = StalledOutcome {
        subscribed: true,
        pings: stall.pings,
        disconnected: stall.lost.is_some(),
        disconnect_seen_after_s: stall.lost.as_ref().map(|(at, _)| at.as_secs_f64()),
        ended_by: stall.lost.as_ref().map(|(_, f)| f.key()),
        ..Default::default()
    };
    let version = client.version;
    let mut inbox = Inbox::default();
    let deadline = Instant::now() + WAKE_LIMIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let read = timeout(
            WAKE_IDLE.min(left),
            client.stream.read_buf(&mut client.rbuf),
        )
        .await;
        let ended = match read {
            Err(_) => break,
            Ok(Ok(0)) => Some(Failure::Closed),
            Ok(Ok(_)) => None,
            Ok(Err(e)) => Some(Failure::from(e)),
        };
        if let Some(f) = ended {
            outcome.disconnected = true;
            outcome.ended_by.get_or_insert(f.key());
            break;
        }
        loop {
            match client.try_decode() {
                Ok(Some(Packet::Disconnect(d))) => {
                    outcome.disconnect_reason = Some(format!("0x{:02x}", d.reason_code as u8));
                }
                Ok(Some(packet)) => {
                    if inbox.on_packet(packet, version, &mut client.wbuf).is_some() {
                        outcome.received_on_wake += 1;
                    }
                }
                Ok(None) => break,
                Err(f) => {
                    outcome.ended_by.get_or_insert(f.key());
                    return outcome;
                }
            }
        }
        // A failed write shows on the next read.
        if !client.wbuf.is_empty() {
            let _ = timeout(WAKE_IDLE, client.flush()).await;
        }
    }
    let _ = client.stream.shutdown().await;
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round(with_stalled: bool, p99_ms: f64, stalled: Option<StalledOutcome>) -> StalledRound {
        StalledRound {
            with_stalled,
            subs_connected: 10,
            pubs_connected: 1,
            published: 100,
            published_per_s: 10.0,
            acks: AckCounts::default(),
            expected: 1000,
            delivered: 1000,
            stale: 0,
            delivered_per_s: 100.0,
            delivery_ratio: 1.0,
            latency: Latency {
                count: 1000,
                p99_ms,
                ..Latency::default()
            },
            errors: FailureCounts::new(),
            stalled,
            cpu: CpuUse::default(),
        }
    }

    #[test]
    fn summary_sets_the_rounds_side_by_side() {
        let gone = StalledOutcome {
            subscribed: true,
            disconnected: true,
            disconnect_seen_after_s: Some(31.5),
            ..Default::default()
        };
        let s = summarise(&[round(false, 2.0, None), round(true, 5.0, Some(gone))]);
        assert_eq!(s.p99_alone_ms, Some(2.0));
        assert_eq!(s.p99_ratio, Some(2.5));
        assert_eq!(s.stalled_disconnected, Some(true));
        assert_eq!(s.stalled_disconnect_seen_after_s, Some(31.5));
        let only = summarise(&[round(true, 5.0, None)]);
        assert_eq!((only.p99_alone_ms, only.p99_ratio), (None, None));
    }

    #[test]
    fn baseline_comes_first() {
        let mut spec = StalledSpec {
            pubs: 1,
            subs: 10,
            qos: 0,
            payload: 64,
            rate: 10.0,
            duration_s: 1.0,
            drain_s: 1.0,
            inflight: 8,
            fill_rate: 100.0,
            fill_payload: 1024,
            baseline: true,
        };
        assert_eq!(spec.rounds(), [false, true]);
        spec.baseline = false;
        assert_eq!(spec.rounds(), [true]);
    }
}
