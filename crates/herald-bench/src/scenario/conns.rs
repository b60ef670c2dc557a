//! `conns`: open N connections at a ramp rate (CONNECT, then SUBSCRIBE to a unique topic),
//! hold them, then check which are still alive with a PINGREQ each.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::bail;
use bytes::BytesMut;
use mqtt_codec::{Packet, QoS};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep, sleep_until, timeout};

use super::{RunOptions, TimedBar, connected_of, counter_bar, failures_of, sum_failures};
use crate::client::{Client, Failure, FailureCounts, count_failure};
use crate::coord::{Workers, results};
use crate::procstat;
use crate::proto::{
    Command, Event, Latency, ScenarioSpec, WorkerSpec, histogram_to_pairs, merge_pairs,
    new_histogram,
};
use crate::worker::{Commands, Emitter};

/// Parameters of a `conns` run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConnsSpec {
    /// Connections to open.
    pub conns: usize,
    /// New connections per second, over all workers.
    pub ramp: f64,
    /// Seconds to hold the connections before checking them.
    pub hold_s: f64,
}

/// One worker's figures.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ConnsWorkerResult {
    /// Connections that completed CONNECT and SUBSCRIBE.
    pub connected: u64,
    /// Seconds from the first attempt to the last completed one.
    pub ramp_seconds: f64,
    /// CONNECT-to-SUBACK time per connection, (microseconds, count).
    pub connect_latency: Vec<(u64, u64)>,
    /// Connections that answered a PINGREQ after the hold.
    pub alive: u64,
    /// Connections lost during the hold or failing the check, by reason.
    pub lost: FailureCounts,
    /// This worker's CPU seconds in all.
    pub cpu_seconds: f64,
}

/// The merged result of a `conns` run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConnsReport {
    /// Always "conns".
    pub scenario: String,
    /// The parameters.
    pub spec: ConnsSpec,
    /// Worker processes.
    pub procs: usize,
    /// Connections established.
    pub connected: u64,
    /// Connection failures by reason.
    pub failures: FailureCounts,
    /// Established connections per second over the ramp.
    pub connect_rate_per_s: f64,
    /// CONNECT-to-SUBACK latency.
    pub connect_latency: Latency,
    /// Connections alive after the hold.
    pub alive_after_hold: u64,
    /// Connections lost during the hold, by reason.
    pub lost: FailureCounts,
    /// Broker resident memory before the first connection.
    pub broker_rss_before: Option<u64>,
    /// Broker resident memory with every connection open.
    pub broker_rss_connected: Option<u64>,
    /// Broker resident memory after the hold.
    pub broker_rss_after_hold: Option<u64>,
    /// (connected RSS - RSS before) / connections.
    pub broker_bytes_per_conn: Option<f64>,
    /// Broker CPU seconds over the whole run.
    pub broker_cpu_seconds: Option<f64>,
    /// This tool's CPU seconds over the whole run (workers and coordinator).
    pub tool_cpu_seconds: f64,
}

/// Runs `conns` as coordinator.
pub async fn run(opts: &RunOptions, spec: ConnsSpec) -> anyhow::Result<ConnsReport> {
    if spec.ramp <= 0.0 {
        bail!("--ramp must be above 0 connections per second");
    }
    let broker0 = opts.broker_sample();
    let tool0 = procstat::sample("self");
    let mut workers = Workers::spawn(opts.specs(ScenarioSpec::Conns(spec.clone()))).await?;
    let bar = counter_bar(opts, spec.conns as u64, "connecting");
    let ramp_time = spec.conns as f64 / spec.ramp;
    let limit = opts.timeout * 2 + Duration::from_secs_f64(ramp_time * 2.0 + 30.0);
    let ready = workers.gather(bar.as_ref(), limit).await?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let connected: u64 = ready.iter().map(connected_of).sum();
    let failures = sum_failures(ready.iter().map(failures_of));
    let broker_connected = opts.broker_sample();
    let hold = TimedBar::start(opts, spec.hold_s, "holding");
    sleep(Duration::from_secs_f64(spec.hold_s)).await;
    hold.finish();
    workers.send(&Command::Check).await?;
    let parts: Vec<ConnsWorkerResult> = results(
        workers
            .gather(None, opts.timeout * 2 + Duration::from_secs(30))
            .await?,
    )?;
    let broker1 = opts.broker_sample();
    let tool1 = procstat::sample("self");
    workers.finish().await;

    let mut latency = new_histogram();
    let mut lost = FailureCounts::new();
    let (mut alive, mut ramp_seconds, mut worker_cpu) = (0, 0f64, 0f64);
    for p in &parts {
        merge_pairs(&mut latency, &p.connect_latency);
        alive += p.alive;
        ramp_seconds = ramp_seconds.max(p.ramp_seconds);
        worker_cpu += p.cpu_seconds;
        for (k, v) in &p.lost {
            *lost.entry(k.clone()).or_default() += v;
        }
    }
    let rss = |s: Option<procstat::ProcSample>| s.map(|s| s.rss_bytes);
    let bytes_per_conn = match (broker0, broker_connected) {
        (Some(a), Some(b)) if connected > 0 => {
            Some((b.rss_bytes as f64 - a.rss_bytes as f64) / connected as f64)
        }
        _ => None,
    };
    let coordinator_cpu = procstat::cpu_between(tool0, tool1).unwrap_or(0.0);
    Ok(ConnsReport {
        scenario: "conns".into(),
        procs: opts.procs,
        connected,
        failures,
        connect_rate_per_s: if ramp_seconds > 0.0 {
            connected as f64 / ramp_seconds
        } else {
            0.0
        },
        connect_latency: Latency::from_histogram(&latency),
        alive_after_hold: alive,
        lost,
        broker_rss_before: rss(broker0),
        broker_rss_connected: rss(broker_connected),
        broker_rss_after_hold: rss(broker1),
        broker_bytes_per_conn: bytes_per_conn,
        broker_cpu_seconds: procstat::cpu_between(broker0, broker1),
        tool_cpu_seconds: worker_cpu + coordinator_cpu,
        spec,
    })
}

/// How one connection attempt ended: CONNECT-to-SUBACK microseconds, or why it failed.
type Attempt = Result<u64, Failure>;

/// How a held connection ended: `Some(Ok)` alive at the check, `Some(Err)` lost, `None`
/// never connected (or the check never came).
type Held = Option<Result<Client, Failure>>;

/// This worker's connections, opened and held.
struct Opened {
    /// One task per connection, holding it until the check.
    holders: JoinSet<Held>,
    /// Every attempt's outcome.
    attempts: mpsc::UnboundedReceiver<Attempt>,
    /// Attempts made.
    count: usize,
    /// When the first attempt started.
    start: Instant,
}

/// Plays a worker's share of `conns`.
pub async fn worker(
    spec: &WorkerSpec,
    c: &ConnsSpec,
    cmds: &mut Commands,
    out: &Emitter,
) -> anyhow::Result<()> {
    let done = Arc::new(AtomicU64::new(0));
    let progress = out.progress(done.clone());
    let (check_tx, check_rx) = watch::channel(false);
    let mut opened = open(spec, c, &done, &check_rx).await?;
    let (mut result, failures) = count_attempts(&mut opened).await;
    result.ramp_seconds = opened.start.elapsed().as_secs_f64();
    drop(progress);
    out.send(Event::Ready {
        connected: result.connected,
        failures,
    });
    let Command::Check = cmds.next().await? else {
        bail!("expected the check command");
    };
    let _ = check_tx.send(true);
    let mut keep = Vec::new();
    while let Some(joined) = opened.holders.join_next().await {
        match joined {
            Ok(Some(Ok(client))) => {
                result.alive += 1;
                keep.push(client);
            }
            Ok(Some(Err(f))) => count_failure(&mut result.lost, &f),
            Ok(None) => {}
            Err(_) => count_failure(&mut result.lost, &Failure::Protocol("task panicked".into())),
        }
    }
    result.cpu_seconds = procstat::sample("self").map_or(0.0, |s| s.cpu_seconds);
    out.result(&result)?;
    drop(keep);
    Ok(())
}

/// Opens this worker's share of the connections at its share of the ramp rate, each
/// connected and subscribed to a topic of its own and then held by its own task until
/// `check` turns. Returns once the last attempt has started.
async fn open(
    spec: &WorkerSpec,
    c: &ConnsSpec,
    done: &Arc<AtomicU64>,
    check: &watch::Receiver<bool>,
) -> anyhow::Result<Opened> {
    let mine = spec.share(c.conns);
    let count = mine.len();
    let per_second = c.ramp / spec.count as f64;
    let (attempt_tx, attempts) = mpsc::unbounded_channel::<Attempt>();
    let cfg = spec.client_config()?;
    let mut holders = JoinSet::new();
    let start = Instant::now();
    for (n, j) in mine.enumerate() {
        sleep_until(start + Duration::from_secs_f64(n as f64 / per_second)).await;
        let (attempt_tx, check_rx, done) = (attempt_tx.clone(), check.clone(), done.clone());
        let target = spec.target(j);
        let id = format!("hb-{}-c{j}", spec.run_id);
        let topic = format!("hb/{}/c/{j}", spec.run_id);
        let keep_alive = spec.keep_alive;
        let cfg = cfg.clone();
        holders.spawn(async move {
            let began = Instant::now();
            let connected = async {
                let mut client = Client::connect(target, &cfg, &id, true).await?;
                client
                    .subscribe(&topic, QoS::AtMostOnce, cfg.timeout)
                    .await?;
                Ok::<_, Failure>(client)
            }
            .await;
            done.fetch_add(1, Ordering::Relaxed);
            match connected {
                Ok(client) => {
                    let _ = attempt_tx.send(Ok(began.elapsed().as_micros() as u64));
                    hold(client, check_rx, keep_alive, cfg.timeout).await
                }
                Err(f) => {
                    let _ = attempt_tx.send(Err(f));
                    None
                }
            }
        });
    }
    Ok(Opened {
        holders,
        attempts,
        count,
        start,
    })
}

/// Waits for every attempt's outcome: the connections made and their latency, and the
/// failures.
async fn count_attempts(opened: &mut Opened) -> (ConnsWorkerResult, FailureCounts) {
    let mut latency = new_histogram();
    let mut failures = FailureCounts::new();
    let mut result = ConnsWorkerResult::default();
    for _ in 0..opened.count {
        match opened.attempts.recv().await {
            Some(Ok(us)) => {
                result.connected += 1;
                latency.saturating_record(us.max(1));
            }
            Some(Err(f)) => count_failure(&mut failures, &f),
            None => break,
        }
    }
    result.connect_latency = histogram_to_pairs(&latency);
    (result, failures)
}

/// Holds a connection, pinging at half the keep-alive, until the check; then pings once
/// and waits for the answer. `Some(Ok)` when the connection is alive.
async fn hold(
    mut client: Client,
    mut check: watch::Receiver<bool>,
    keep_alive: u16,
    limit: Duration,
) -> Option<Result<Client, Failure>> {
    // Idle connections keep no buffers.
    client.rbuf = BytesMut::new();
    client.wbuf = BytesMut::new();
    let ping_every = Duration::from_secs(u64::from(keep_alive.max(2)) / 2);
    let mut next_ping = Instant::now() + ping_every;
    loop {
        tokio::select! {
            changed = check.changed() => {
                if changed.is_err() {
                    return None;
                }
                return Some(ping(client, limit).await);
            }
            _ = sleep_until(next_ping) => {
                client.queue(&Packet::PingReq);
                if let Err(e) = client.flush().await {
                    return Some(Err(e.into()));
                }
                next_ping += ping_every;
            }
            read = client.stream.read_buf(&mut client.rbuf) => {
                match read {
                    Ok(0) => return Some(Err(Failure::Closed)),
                    Ok(_) => {
                        while let Ok(Some(_)) = client.try_decode() {}
                    }
                    Err(e) => return Some(Err(e.into())),
                }
            }
        }
    }
}

async fn ping(mut client: Client, limit: Duration) -> Result<Client, Failure> {
    client.queue(&Packet::PingReq);
    let exchange = async {
        client.flush().await?;
        loop {
            if let Packet::PingResp = client.recv().await? {
                return Ok::<_, Failure>(());
            }
        }
    };
    timeout(limit, exchange)
        .await
        .unwrap_or(Err(Failure::Timeout))?;
    Ok(client)
}
