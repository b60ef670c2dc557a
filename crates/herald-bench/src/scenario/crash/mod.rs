//! `crash`: does a broker keep what it acknowledged when it is killed?
//!
//! The scenario starts the broker itself with its store in the run directory, makes three
//! persistent subscribers (QoS 2 on `crash/#`) and a retained message, and lets four
//! persistent publishers (half QoS 1, half QoS 2) publish sequence-numbered messages while it
//! SIGKILLs the broker at seeded random moments: on even kills while the subscribers are
//! offline (their messages queue), on odd kills while they are draining. After each kill the
//! broker is restarted on the same port and store, and every client reconnects by itself.
//! At the end the publishers stop, a probe message is published to the offline
//! subscribers, the subscribers drain until idle, and the retained message is looked up.
//!
//! The report says what was acknowledged and what arrived: acknowledged-but-lost (a durable
//! broker has none), QoS 2 messages the application saw twice (none allowed), QoS 1
//! re-deliveries (allowed), and whether sessions, subscriptions and the retained message
//! survived. A broker that loses data is reported, not failed: mosquitto writes its store only
//! every `autosave_interval` and on a clean shutdown, so a SIGKILL loses what came since.

pub mod publisher;
pub mod subscriber;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, anyhow};
use bytes::Bytes;
use mqtt_codec::{Packet, Publish, QoS, Subscribe};
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep, timeout};

use self::publisher::{PubPlan, PubRecord, PubSummary};
use self::subscriber::{SubMode, SubRecord, SubSummary};
use super::XorShift;
use super::inbox::sequenced_payload;
use crate::brokers::{self, Durability, Fsync, Kind, Running, Setup};
use crate::client::{Client, ClientConfig, Target};

/// The payload id of the probe published to the offline subscribers at the end.
pub const PROBE_ID: u64 = u64::MAX;

const RETAINED_TOPIC: &str = "crash-retained/marker";

/// Parameters of `crash`.
#[derive(Debug, Clone, Serialize)]
pub struct CrashSpec {
    /// The broker to start.
    pub broker: Kind,
    /// Its executable.
    pub bin: PathBuf,
    /// Where its configuration, log and store go (the store is wiped first).
    pub dir: PathBuf,
    /// SIGKILLs.
    pub kills: usize,
    /// Seed of the kill times.
    pub seed: u64,
    /// herald's fsync policy.
    pub fsync: Fsync,
    /// mosquitto's autosave interval in seconds.
    pub mosquitto_autosave_s: u32,
    /// Persistent subscribers.
    pub subscribers: usize,
    /// Publishers; the first half publish at QoS 1, the rest at QoS 2.
    pub publishers: usize,
    /// Publications per second over all publishers; 0 = as fast as possible.
    pub rate: f64,
    /// Unacknowledged publications allowed per publisher.
    pub inflight: usize,
    /// Payload bytes (at least 8).
    pub payload: usize,
    /// Seconds of publishing after the last restart.
    pub final_s: f64,
    /// Seconds without a delivery that end the final drain.
    pub idle_s: f64,
}

/// One SIGKILL.
#[derive(Debug, Clone, Serialize)]
pub struct Kill {
    /// `publishing` (subscribers offline) or `draining` (subscribers online).
    pub phase: &'static str,
    /// Seconds since the publishers started.
    pub at_s: f64,
    /// Deliveries the subscribers had seen by then.
    pub delivered_before: u64,
    /// Seconds from starting the broker again to its listener accepting.
    pub restart_s: f64,
}

/// What `crash` found.
#[derive(Debug, Clone, Serialize)]
pub struct CrashReport {
    /// The broker's configuration.
    pub config: String,
    /// The parameters.
    pub spec: CrashSpec,
    /// The kills, in order.
    pub kills: Vec<Kill>,
    /// Publications sent.
    pub published: u64,
    /// Publications the broker acknowledged (PUBACK, PUBREC).
    pub acknowledged: u64,
    /// Deliveries owed: acknowledged times subscribers.
    pub expected_deliveries: u64,
    /// Distinct messages delivered, summed over subscribers (acknowledged or not).
    pub delivered: u64,
    /// Acknowledged messages a subscriber never received, summed over subscribers.
    pub acknowledged_but_lost: u64,
    /// QoS 2 messages the application saw more than once (the extra copies).
    pub qos2_duplicates: u64,
    /// QoS 1 messages delivered again (the extra copies; allowed by QoS 1).
    pub qos1_redeliveries: u64,
    /// Every subscriber found its session on every reconnect and got the final probe.
    pub subscriptions_survived: bool,
    /// The retained message was still there at the end.
    pub retained_survived: bool,
    /// Nothing acknowledged lost, no QoS 2 duplicate, subscriptions and retained kept.
    pub durable: bool,
    /// Per publisher.
    pub publishers: Vec<PubSummary>,
    /// Per subscriber.
    pub subscribers: Vec<SubSummary>,
    /// Seconds the whole run took.
    pub seconds: f64,
}

fn qos_of(spec: &CrashSpec, publisher: usize) -> QoS {
    if publisher < spec.publishers / 2 {
        QoS::AtLeastOnce
    } else {
        QoS::ExactlyOnce
    }
}

/// Runs `crash`.
pub async fn run(cfg: &ClientConfig, spec: CrashSpec, quiet: bool) -> anyhow::Result<CrashReport> {
    let started = Instant::now();
    let mut setup = Setup {
        durability: Durability::Store(spec.fsync),
        max_queued: 1_000_000,
        mosquitto_autosave_s: spec.mosquitto_autosave_s,
        ..Setup::default()
    };
    brokers::wipe_data(&spec.dir)?;
    let running = brokers::start(spec.broker, &spec.bin, &spec.dir, &setup).await?;
    let config = running.config.clone();
    setup.port = Some(running.addr.port());
    let target = Target {
        addr: running.addr,
        source: None,
    };
    let sub_ids: Vec<String> = (0..spec.subscribers)
        .map(|k| format!("hb-crash-s{k}"))
        .collect();
    make_sessions(target, cfg, &sub_ids).await?;
    let marker = retained_payload(spec.seed);
    publish_once(target, cfg, RETAINED_TOPIC, marker.clone(), true).await?;

    let (sub_mode, sub_rx) = watch::channel(SubMode::Offline);
    let delivered = Arc::new(AtomicU64::new(0));
    let subs = start_subscribers(target, cfg, &sub_ids, &sub_rx, &delivered);
    let (pub_active, pub_rx) = watch::channel(true);
    let pubs = start_publishers(target, cfg, &spec, &pub_rx);

    let (running, kills) =
        kill_rounds(&spec, &setup, running, &sub_mode, &delivered, quiet).await?;
    sleep(Duration::from_secs_f64(spec.final_s)).await;
    pub_active.send_replace(false);
    let mut records = join_all(pubs).await?;
    records.sort_by_key(|(i, _)| *i);
    publish_once(
        target,
        cfg,
        "crash/probe",
        sequenced_payload(PROBE_ID, 8),
        false,
    )
    .await?;
    sub_mode.send_replace(SubMode::Online);
    wait_until_idle(&delivered, Duration::from_secs_f64(spec.idle_s)).await;
    sub_mode.send_replace(SubMode::Done);
    let mut sub_records = join_all(subs).await?;
    sub_records.sort_by(|a, b| a.client_id.cmp(&b.client_id));
    let retained_survived = retained_present(target, cfg, &marker).await;
    running.stop().await;

    let mut report = report(
        config,
        spec,
        kills,
        &records,
        &sub_records,
        retained_survived,
    );
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// The report of a run (its duration left to fill in): each publisher's and each
/// subscriber's record, what they add up to, and whether the retained message survived.
fn report(
    config: String,
    spec: CrashSpec,
    kills: Vec<Kill>,
    publishers: &[(usize, PubRecord)],
    subscribers: &[SubRecord],
    retained_survived: bool,
) -> CrashReport {
    let mut report = CrashReport {
        config,
        kills,
        published: 0,
        acknowledged: 0,
        expected_deliveries: 0,
        delivered: 0,
        acknowledged_but_lost: 0,
        qos2_duplicates: 0,
        qos1_redeliveries: 0,
        subscriptions_survived: subscribers
            .iter()
            .all(|s| s.sessions_lost == 0 && s.probe_received),
        retained_survived,
        durable: false,
        publishers: publishers
            .iter()
            .map(|(i, r)| r.summary(format!("hb-crash-p{i}"), qos_of(&spec, *i)))
            .collect(),
        subscribers: subscribers.iter().map(|s| s.summary()).collect(),
        seconds: 0.0,
        spec,
    };
    tally(&mut report, publishers, subscribers);
    report
}

/// Starts the persistent subscribers `ids`, offline, online or done as `mode` says; each
/// counts its deliveries into `delivered`.
fn start_subscribers(
    target: Target,
    cfg: &ClientConfig,
    ids: &[String],
    mode: &watch::Receiver<SubMode>,
    delivered: &Arc<AtomicU64>,
) -> JoinSet<SubRecord> {
    let mut subs = JoinSet::new();
    for id in ids {
        let task = subscriber::run(
            target,
            cfg.clone(),
            id.clone(),
            mode.clone(),
            delivered.clone(),
        );
        subs.spawn(task);
    }
    subs
}

/// Starts the publishers, the first half at QoS 1 and the rest at QoS 2, sharing the rate;
/// they publish while `active` holds.
fn start_publishers(
    target: Target,
    cfg: &ClientConfig,
    spec: &CrashSpec,
    active: &watch::Receiver<bool>,
) -> JoinSet<(usize, PubRecord)> {
    let mut pubs = JoinSet::new();
    for i in 0..spec.publishers {
        let plan = PubPlan {
            index: i,
            qos: qos_of(spec, i),
            topic: format!("crash/p{i}"),
            rate: spec.rate / spec.publishers as f64,
            window: spec.inflight.max(1),
            payload: spec.payload.max(8),
        };
        let task = publisher::run(
            target,
            cfg.clone(),
            format!("hb-crash-p{i}"),
            plan,
            active.clone(),
        );
        pubs.spawn(async move { (i, task.await) });
    }
    pubs
}

/// Waits for every task of `tasks`, and returns what they gave back.
async fn join_all<T: 'static>(mut tasks: JoinSet<T>) -> anyhow::Result<Vec<T>> {
    let mut out = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        out.push(joined?);
    }
    Ok(out)
}

/// Makes each subscriber's persistent session with its QoS 2 subscription on `crash/#`.
async fn make_sessions(target: Target, cfg: &ClientConfig, ids: &[String]) -> anyhow::Result<()> {
    for id in ids {
        let mut c = connect(target, cfg, id, false).await?;
        c.subscribe("crash/#", QoS::ExactlyOnce, cfg.timeout)
            .await
            .map_err(|f| anyhow!("{id} subscribing: {f:?}"))?;
        c.disconnect().await?;
    }
    Ok(())
}

/// SIGKILLs the broker `spec.kills` times and restarts it on the same port and store: even
/// kills while the subscribers are offline, odd ones while they drain, each after a seeded
/// random wait. Returns the broker as last restarted.
async fn kill_rounds(
    spec: &CrashSpec,
    setup: &Setup,
    mut running: Running,
    sub_mode: &watch::Sender<SubMode>,
    delivered: &AtomicU64,
    quiet: bool,
) -> anyhow::Result<(Running, Vec<Kill>)> {
    let publishing_since = Instant::now();
    let mut rng = XorShift::new(spec.seed);
    let mut kills = Vec::new();
    for k in 0..spec.kills {
        let draining = k % 2 == 1;
        let (mode, wait_ms) = if draining {
            (SubMode::Online, 100 + rng.below(900))
        } else {
            (SubMode::Offline, 300 + rng.below(1200))
        };
        sub_mode.send_replace(mode);
        sleep(Duration::from_millis(wait_ms)).await;
        let at_s = publishing_since.elapsed().as_secs_f64();
        let delivered_before = delivered.load(Ordering::Relaxed);
        running.kill().await;
        sub_mode.send_replace(SubMode::Offline);
        running = brokers::start(spec.broker, &spec.bin, &spec.dir, setup)
            .await
            .with_context(|| format!("restarting after kill {}", k + 1))?;
        let kill = Kill {
            phase: if draining { "draining" } else { "publishing" },
            at_s,
            delivered_before,
            restart_s: running.started_in.as_secs_f64(),
        };
        if !quiet {
            eprintln!(
                "kill {} while {} at {:.2} s; restarted in {:.3} s",
                k + 1,
                kill.phase,
                kill.at_s,
                kill.restart_s
            );
        }
        kills.push(kill);
    }
    Ok((running, kills))
}

/// Adds up what was acknowledged and what each subscriber saw.
fn tally(report: &mut CrashReport, pubs: &[(usize, PubRecord)], subs: &[SubRecord]) {
    for p in &report.publishers {
        report.published += p.published;
        report.acknowledged += p.acked;
    }
    report.expected_deliveries = report.acknowledged * subs.len() as u64;
    for sub in subs {
        report.delivered += sub.counts.len() as u64;
        for (i, rec) in pubs {
            let lost = rec.acked.iter().enumerate().filter(|&(seq, &acked)| {
                acked
                    && !sub
                        .counts
                        .contains_key(&publisher::message_id(*i, seq as u64))
            });
            report.acknowledged_but_lost += lost.count() as u64;
        }
        for (&id, &count) in &sub.counts {
            let extra = u64::from(count.saturating_sub(1));
            match qos_of(&report.spec, (id >> 40) as usize) {
                QoS::ExactlyOnce => report.qos2_duplicates += extra,
                _ => report.qos1_redeliveries += extra,
            }
        }
    }
    report.durable = report.acknowledged_but_lost == 0
        && report.qos2_duplicates == 0
        && report.subscriptions_survived
        && report.retained_survived;
}

fn retained_payload(seed: u64) -> Bytes {
    Bytes::from(format!("herald-bench crash retained marker, seed {seed}"))
}

async fn connect(
    target: Target,
    cfg: &ClientConfig,
    id: &str,
    clean: bool,
) -> anyhow::Result<Client> {
    Client::connect(target, cfg, id, clean)
        .await
        .map_err(|f| anyhow!("{id} connecting: {f:?}"))
}

/// Publishes one QoS 1 message from a clean session and waits for its PUBACK.
async fn publish_once(
    target: Target,
    cfg: &ClientConfig,
    topic: &str,
    payload: Bytes,
    retain: bool,
) -> anyhow::Result<()> {
    let mut c = connect(target, cfg, "hb-crash-once", true).await?;
    let mut p = Publish::new(topic, payload);
    p.qos = QoS::AtLeastOnce;
    p.retain = retain;
    p.packet_id = c.next_packet_id();
    c.queue(&Packet::Publish(p));
    c.flush().await?;
    let acked = timeout(cfg.timeout, async {
        loop {
            match c.recv().await {
                Ok(Packet::PubAck(_)) => return Ok(()),
                Ok(_) => {}
                Err(f) => return Err(anyhow!("waiting for PUBACK on {topic}: {f:?}")),
            }
        }
    })
    .await;
    acked.map_err(|_| anyhow!("no PUBACK on {topic} within {:?}", cfg.timeout))??;
    c.disconnect().await?;
    Ok(())
}

/// Whether a fresh subscriber gets the retained marker (before or after its SUBACK).
async fn retained_present(target: Target, cfg: &ClientConfig, marker: &Bytes) -> bool {
    let Ok(mut c) = connect(target, cfg, "hb-crash-retained", true).await else {
        return false;
    };
    let packet_id = c.next_packet_id();
    c.queue(&Packet::Subscribe(Subscribe::new(
        packet_id,
        RETAINED_TOPIC,
        QoS::AtMostOnce,
    )));
    if c.flush().await.is_err() {
        return false;
    }
    let found = timeout(Duration::from_secs(2), async {
        loop {
            match c.recv().await {
                Ok(Packet::Publish(p)) if p.retain && p.payload == *marker => return true,
                Ok(_) => {}
                Err(_) => return false,
            }
        }
    })
    .await
    .unwrap_or(false);
    let _ = c.disconnect().await;
    found
}

/// Waits until no delivery has come for `idle` (at most five minutes).
async fn wait_until_idle(delivered: &AtomicU64, idle: Duration) {
    let give_up = Instant::now() + Duration::from_secs(300);
    let mut last = delivered.load(Ordering::Relaxed);
    let mut quiet_since = Instant::now();
    while Instant::now() < give_up {
        sleep(Duration::from_millis(100)).await;
        let now = delivered.load(Ordering::Relaxed);
        if now != last {
            last = now;
            quiet_since = Instant::now();
        } else if quiet_since.elapsed() >= idle {
            return;
        }
    }
}
