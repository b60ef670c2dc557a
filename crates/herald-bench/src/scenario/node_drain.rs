//! `node-drain`: N MQTT 5 clients on herald node A follow it to node B when A goes away, in
//! two rounds with fresh nodes: A drains (`POST /api/v1/drain`: it disconnects its clients
//! spread over its drain period), then A stops at once (SIGINT: every client dropped in the
//! same instant). Each client reconnects to B as soon as its connection to A ends (to the
//! DISCONNECT's Server Reference if it has one, else to B), retrying at once on failure (naive
//! clients: the worst case for spikes). Per 100 ms: reconnects to B and failed attempts.
//!
//! With `--cluster` (a NATS with JetStream), A and B are nodes of one cluster and the clients
//! keep persistent sessions (Clean Start 0, one QoS 1 subscription each): a client that
//! reconnects to B while A still runs (draining) takes its session along (CONNACK session
//! present); a third round SIGKILLs A, whose sessions then cannot move (without replicated
//! sessions) and the clients start new ones on B.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use mqtt_codec::Packet;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep};

use super::{
    RunOptions, connect_clients, connected_of, failures_of, gather_ready, start_at, sum_failures,
};
use crate::brokers::{self, Kind, Running, Setup};
use crate::client::{Client, ClientConfig, Failure, FailureCounts, Target, unix_nanos};
use crate::coord::{Workers, results};
use crate::proto::{Command, Event, ScenarioSpec, WorkerSpec};
use crate::transport::TransportSpec;
use crate::worker::{Commands, Emitter};

/// Width of a time bucket.
pub const BUCKET_MS: u64 = 100;
/// A round lasts at most the drain period plus this.
pub const ROUND_SLACK_S: u64 = 20;

/// Parameters of a `node-drain` run.
#[derive(Debug, Clone, Serialize)]
pub struct NodeDrainSpec {
    /// Clients on node A.
    pub clients: usize,
    /// A's drain period (`HERALD_DRAIN_PERIOD_SECS`).
    pub drain_secs: u64,
    /// Connect timeout of each attempt, seconds.
    pub timeout_s: f64,
    /// Worker processes.
    pub procs: usize,
    /// The herald executable.
    pub herald_bin: PathBuf,
    /// Where the nodes' logs go.
    pub dir: PathBuf,
    /// The NATS URL joining A and B into a cluster (`None`: two nodes on their own).
    pub cluster: Option<String>,
    /// No progress bars.
    #[serde(skip)]
    pub quiet: bool,
}

/// What a worker needs for one round (its `targets` hold node A).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeDrainWorker {
    /// Clients over all workers.
    pub clients: usize,
    /// Node B, where clients go when A lets them go without a usable Server Reference.
    pub other: SocketAddr,
    /// Seconds after the trigger at which the round ends.
    pub max_s: f64,
    /// Persistent sessions with a subscription (the clustered rounds).
    #[serde(default)]
    pub persistent: bool,
}

/// One 100 ms slice of a round, from the trigger.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bucket {
    /// Connections to A that ended (DISCONNECT or EOF).
    pub left_a: u64,
    /// Successful connections to B (CONNACK received).
    pub back: u64,
    /// Failed attempts to connect to B.
    pub failed: u64,
}

/// One worker's figures for one round.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NodeDrainWorkerRound {
    /// Per 100 ms from the trigger.
    pub buckets: Vec<Bucket>,
    /// Clients connected to B at the end.
    pub back: u64,
    /// Of those, clients whose session B had (CONNACK session present).
    #[serde(default)]
    pub resumed: u64,
    /// Seconds from the trigger to the last of them.
    pub last_back_s: f64,
    /// Connection attempts to B.
    pub attempts: u64,
    /// Failed attempts, by reason.
    pub failures: FailureCounts,
    /// How the connections to A ended: `disconnect_0x8b`, `disconnect_0x9c`, `eof`, ...
    pub ends: FailureCounts,
    /// Clients that went to a Server Reference A gave them.
    pub used_reference: u64,
}

/// One round, merged.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeDrainRound {
    /// "drain" or "abrupt".
    pub mode: String,
    /// What was done to A.
    pub trigger: String,
    /// Clients connected to A before the trigger.
    pub connected_to_a: u64,
    /// Failures while connecting them.
    pub connect_failures: FailureCounts,
    /// Clients connected to B at the end of the round.
    pub back_on_b: u64,
    /// Of those, clients that found their session on B (it moved from A).
    pub resumed_on_b: u64,
    /// Seconds from the trigger until every client was on B; `None` if some never got there.
    pub time_to_all_back_s: Option<f64>,
    /// Seconds from the trigger to the last reconnect to B.
    pub last_back_s: f64,
    /// Most reconnects to B in one 100 ms bucket.
    pub peak_per_100ms: u64,
    /// Most reconnects to B in any 1 s (ten consecutive buckets).
    pub peak_per_s: u64,
    /// Start of the busiest 100 ms bucket, seconds from the trigger.
    pub peak_at_s: f64,
    /// Most failed attempts in one 100 ms bucket.
    pub peak_failed_per_100ms: u64,
    /// Connection attempts to B.
    pub attempts: u64,
    /// Failed attempts, by reason.
    pub failures: FailureCounts,
    /// Failed attempts, all reasons.
    pub failures_total: u64,
    /// How the connections to A ended.
    pub ends: FailureCounts,
    /// Clients that followed a Server Reference.
    pub used_reference: u64,
    /// Seconds from the trigger until A's process exited.
    pub a_exit_s: Option<f64>,
    /// A's exit code.
    pub a_exit_code: Option<i32>,
    /// Per 100 ms from the trigger (trailing empty buckets cut).
    pub buckets: Vec<Bucket>,
}

/// The result of a `node-drain` run.
#[derive(Debug, Clone, Serialize)]
pub struct NodeDrainReport {
    /// Always "node_drain".
    pub scenario: String,
    /// The parameters.
    pub spec: NodeDrainSpec,
    /// Drain, then abrupt.
    pub rounds: Vec<NodeDrainRound>,
}

/// Runs both rounds.
pub async fn run(spec: NodeDrainSpec) -> anyhow::Result<NodeDrainReport> {
    if !spec.herald_bin.is_file() {
        bail!("herald not found at {}", spec.herald_bin.display());
    }
    let mut rounds = Vec::new();
    let mut modes = vec![Mode::Drain, Mode::Abrupt];
    if spec.cluster.is_some() {
        modes.push(Mode::Kill);
    }
    for mode in modes {
        rounds.push(round(&spec, mode).await?);
    }
    Ok(NodeDrainReport {
        scenario: "node_drain".into(),
        spec,
        rounds,
    })
}

/// What a round does to A.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// `POST /api/v1/drain`.
    Drain,
    /// SIGINT: stops at once.
    Abrupt,
    /// SIGKILL (clustered rounds).
    Kill,
}

/// One round on fresh nodes: connect the clients to A, drain or stop A, and count them
/// onto B.
async fn round(spec: &NodeDrainSpec, how: Mode) -> anyhow::Result<NodeDrainRound> {
    let mode = match how {
        Mode::Drain => "drain",
        Mode::Abrupt => "abrupt",
        Mode::Kill => "kill",
    };
    let (a, b, http) = start_nodes(spec, mode).await?;
    let max_s = (spec.drain_secs + ROUND_SLACK_S) as f64;
    // Clients must outlive the round on A without pinging: a keep-alive well past it.
    let keep_alive = (spec.drain_secs * 2 + 120).min(u16::MAX as u64) as u16;
    let opts = RunOptions {
        targets: vec![a.addr],
        pub_targets: Vec::new(),
        sources: Vec::new(),
        procs: spec.procs,
        mqtt_level: 5,
        keep_alive,
        timeout: Duration::from_secs_f64(spec.timeout_s),
        broker_pid: Some(a.pid),
        quiet: spec.quiet,
        transport: TransportSpec::default(),
        login: Default::default(),
    };
    let worker = NodeDrainWorker {
        clients: spec.clients,
        other: b.addr,
        max_s,
        persistent: spec.cluster.is_some(),
    };
    let mut workers = Workers::spawn(opts.specs(ScenarioSpec::NodeDrain(worker))).await?;
    let ready = gather_ready(&mut workers, &opts, spec.clients as u64).await?;
    let connected_to_a: u64 = ready.iter().map(connected_of).sum();
    let connect_failures = sum_failures(ready.iter().map(failures_of));
    sleep(Duration::from_millis(500)).await;

    // Every worker measures from the same instant, the trigger's.
    let lead = Duration::from_millis(300);
    let start_unix_ns = unix_nanos() + lead.as_nanos() as u64;
    workers.send(&Command::Go { start_unix_ns }).await?;
    sleep(lead).await;
    let triggered = Instant::now();
    let trigger = match how {
        Mode::Drain => {
            post_drain(http).await?;
            "POST /api/v1/drain"
        }
        Mode::Abrupt => {
            a.signal("INT").await?;
            "SIGINT"
        }
        Mode::Kill => {
            a.signal("KILL").await?;
            "SIGKILL"
        }
    };
    if !spec.quiet {
        eprintln!("{mode}: {trigger} to A; waiting for {connected_to_a} clients on B");
    }
    let a_limit = Duration::from_secs_f64(max_s);
    let a_exit = tokio::spawn(async move {
        let code = a.wait_exit(a_limit).await;
        (triggered.elapsed(), code)
    });
    let parts: Vec<NodeDrainWorkerRound> = results(
        workers
            .gather(None, Duration::from_secs_f64(max_s + 30.0))
            .await?,
    )?;
    workers.finish().await;
    let (a_exit_s, a_exit_code) = match a_exit.await {
        Ok((took, Ok(code))) => (Some(took.as_secs_f64()), code),
        Ok((_, Err(e))) => {
            eprintln!("node-drain {mode}: node A: {e:#}");
            (None, None)
        }
        Err(_) => (None, None),
    };
    b.stop().await;
    Ok(merge(
        mode,
        trigger,
        connected_to_a,
        connect_failures,
        &parts,
        a_exit_s,
        a_exit_code,
    ))
}

/// Starts node B, then node A with B as its drain Server Reference and its HTTP API on the
/// returned address, and waits for that API to accept.
async fn start_nodes(
    spec: &NodeDrainSpec,
    mode: &str,
) -> anyhow::Result<(Running, Running, SocketAddr)> {
    let bin = &spec.herald_bin;
    let b_dir = spec.dir.join(format!("{mode}-b"));
    // Clustered: both nodes on the NATS given, named for the round.
    let cluster = |node: &str| -> Vec<(String, String)> {
        let Some(url) = &spec.cluster else {
            return Vec::new();
        };
        vec![
            ("HERALD_CLUSTER_NATS".into(), url.clone()),
            (
                "HERALD_CLUSTER_NODE_ID".into(),
                format!("{mode}-{node}-{}", std::process::id()),
            ),
        ]
    };
    let b = brokers::start(
        Kind::Herald,
        bin,
        &b_dir,
        &Setup {
            env: [("HERALD_DRAIN_PERIOD_SECS".into(), "0".into())]
                .into_iter()
                .chain(cluster("b"))
                .collect(),
            ..Setup::default()
        },
    )
    .await
    .context("starting node B")?;
    let http: SocketAddr = ([127, 0, 0, 1], brokers::free_port()?).into();
    let a = brokers::start(
        Kind::Herald,
        bin,
        &spec.dir.join(format!("{mode}-a")),
        &Setup {
            http: Some(http),
            env: vec![
                (
                    "HERALD_DRAIN_PERIOD_SECS".into(),
                    spec.drain_secs.to_string(),
                ),
                ("HERALD_DRAIN_SERVER_REFERENCE".into(), b.addr.to_string()),
            ]
            .into_iter()
            .chain(cluster("a"))
            .collect(),
            ..Setup::default()
        },
    )
    .await
    .context("starting node A")?;
    wait_accepting(http).await?;
    Ok((a, b, http))
}

/// Waits until `addr` accepts a TCP connection (herald's HTTP listener).
async fn wait_accepting(addr: SocketAddr) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        sleep(Duration::from_millis(10)).await;
    }
    bail!("node A's HTTP listener {addr} did not accept within 30 s")
}

/// `POST /api/v1/drain` over a bare HTTP/1.1 connection; herald answers 202.
async fn post_drain(http: SocketAddr) -> anyhow::Result<()> {
    let mut stream = tokio::net::TcpStream::connect(http).await?;
    let request = format!(
        "POST /api/v1/drain HTTP/1.1\r\nHost: {http}\r\nContent-Length: 0\r\n\
         Connection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response))
        .await
        .context("no answer to POST /api/v1/drain")??;
    let text = String::from_utf8_lossy(&response);
    let status = text.lines().next().unwrap_or_default();
    if !status.contains(" 202 ") && !status.contains(" 200 ") {
        bail!("POST /api/v1/drain answered {status:?}");
    }
    Ok(())
}

fn merge(
    mode: &str,
    trigger: &str,
    connected_to_a: u64,
    connect_failures: FailureCounts,
    parts: &[NodeDrainWorkerRound],
    a_exit_s: Option<f64>,
    a_exit_code: Option<i32>,
) -> NodeDrainRound {
    let mut buckets: Vec<Bucket> = Vec::new();
    let (mut back, mut last, mut attempts, mut used_reference) = (0, 0f64, 0, 0);
    let mut resumed = 0;
    let (mut failures, mut ends) = (FailureCounts::new(), FailureCounts::new());
    for p in parts {
        if buckets.len() < p.buckets.len() {
            buckets.resize(p.buckets.len(), Bucket::default());
        }
        for (sum, b) in buckets.iter_mut().zip(&p.buckets) {
            sum.left_a += b.left_a;
            sum.back += b.back;
            sum.failed += b.failed;
        }
        back += p.back;
        resumed += p.resumed;
        last = last.max(p.last_back_s);
        attempts += p.attempts;
        used_reference += p.used_reference;
        for (k, v) in &p.failures {
            *failures.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &p.ends {
            *ends.entry(k.clone()).or_default() += v;
        }
    }
    while buckets.last() == Some(&Bucket::default()) {
        buckets.pop();
    }
    let (peak_i, peak) = buckets
        .iter()
        .enumerate()
        .map(|(i, b)| (i, b.back))
        .max_by_key(|&(i, v)| (v, std::cmp::Reverse(i)))
        .unwrap_or((0, 0));
    let per_bucket_s = BUCKET_MS as f64 / 1000.0;
    let window = (1000 / BUCKET_MS) as usize;
    let peak_per_s = (0..buckets.len())
        .map(|i| {
            let end = (i + window).min(buckets.len());
            buckets[i..end].iter().map(|b| b.back).sum::<u64>()
        })
        .max()
        .unwrap_or(0);
    NodeDrainRound {
        mode: mode.into(),
        trigger: trigger.into(),
        connected_to_a,
        connect_failures,
        back_on_b: back,
        resumed_on_b: resumed,
        time_to_all_back_s: (back >= connected_to_a).then_some(last),
        last_back_s: last,
        peak_per_100ms: peak,
        peak_per_s,
        peak_at_s: peak_i as f64 * per_bucket_s,
        peak_failed_per_100ms: buckets.iter().map(|b| b.failed).max().unwrap_or(0),
        attempts,
        failures_total: failures.values().sum(),
        failures,
        ends,
        used_reference,
        a_exit_s,
        a_exit_code,
        buckets,
    }
}

/// Plays a worker's share of a round: connect to A, wait for the trigger, follow A's clients
/// to B.
pub async fn worker(
    spec: &WorkerSpec,
    s: &NodeDrainWorker,
    cmds: &mut Commands,
    out: &Emitter,
) -> anyhow::Result<()> {
    let cfg = spec.client_config()?;
    let id = |j| format!("hb-{}-d{j}", spec.run_id);
    let (mut clients, failures) =
        connect_clients(spec, &cfg, spec.share(s.clients), id, !s.persistent, out).await;
    if s.persistent {
        // A subscription each: the session that moves holds something.
        for (j, client) in &mut clients {
            let filter = format!("hb/{}/d{j}", spec.run_id);
            client
                .subscribe(&filter, mqtt_codec::QoS::AtLeastOnce, cfg.timeout)
                .await
                .map_err(|e| anyhow::anyhow!("subscribing: {}", e.key()))?;
        }
    }
    out.send(Event::Ready {
        connected: clients.len() as u64,
        failures,
    });
    let Command::Go { start_unix_ns } = cmds.next().await? else {
        bail!("expected a go command");
    };
    let deadline = start_at(start_unix_ns) + Duration::from_secs_f64(s.max_s);
    let mut tasks = JoinSet::new();
    for (j, client) in clients {
        let persistent = s.persistent;
        tasks.spawn(follow(
            client,
            id(j),
            s.other,
            cfg.clone(),
            deadline,
            persistent,
        ));
    }
    let slots = (s.max_s * 1000.0 / BUCKET_MS as f64).ceil() as usize + 1;
    let bucket = |at_ns: u64| {
        let i = (at_ns.saturating_sub(start_unix_ns) / (BUCKET_MS * 1_000_000)) as usize;
        i.min(slots - 1)
    };
    let mut round = NodeDrainWorkerRound {
        buckets: vec![Bucket::default(); slots],
        ..NodeDrainWorkerRound::default()
    };
    let mut on_b = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let Ok(f) = joined else { continue };
        if let Some((at, how)) = f.left {
            round.buckets[bucket(at)].left_a += 1;
            *round.ends.entry(how).or_default() += 1;
        }
        round.used_reference += u64::from(f.used_reference);
        round.attempts += f.attempts;
        for (at, key) in f.failures {
            round.buckets[bucket(at)].failed += 1;
            *round.failures.entry(key).or_default() += 1;
        }
        if let Some((at, client)) = f.back {
            round.buckets[bucket(at)].back += 1;
            round.back += 1;
            round.resumed += u64::from(client.session_present);
            let s = at.saturating_sub(start_unix_ns) as f64 / 1e9;
            round.last_back_s = round.last_back_s.max(s);
            on_b.push(client);
        }
    }
    out.result(&round)?;
    // The connections to B close as this process exits.
    drop(on_b);
    Ok(())
}

/// What became of one client.
struct Followed {
    /// When and how its connection to A ended.
    left: Option<(u64, String)>,
    /// Whether it went to A's Server Reference.
    used_reference: bool,
    attempts: u64,
    /// When and why each attempt failed.
    failures: Vec<(u64, String)>,
    /// When it got onto B, and the connection.
    back: Option<(u64, Client)>,
}

/// Waits for the connection to A to end, then connects to the Server Reference or to
/// `other`, retrying at once until `deadline`.
async fn follow(
    mut client: Client,
    id: String,
    other: SocketAddr,
    cfg: ClientConfig,
    deadline: Instant,
    persistent: bool,
) -> Followed {
    let mut f = Followed {
        left: None,
        used_reference: false,
        attempts: 0,
        failures: Vec::new(),
        back: None,
    };
    let mut to = other;
    loop {
        let Ok(read) = tokio::time::timeout_at(deadline, client.recv()).await else {
            return f;
        };
        let how = match read {
            Ok(Packet::Disconnect(d)) => {
                if let Some(addr) = d
                    .properties
                    .server_reference
                    .as_deref()
                    .and_then(|r| r.parse::<SocketAddr>().ok())
                {
                    to = addr;
                    f.used_reference = true;
                }
                format!("disconnect_0x{:02x}", d.reason_code as u8)
            }
            // Nothing else is expected (no subscriptions, no pings within the round).
            Ok(_) => continue,
            Err(Failure::Closed) => "eof".into(),
            Err(e) => e.key(),
        };
        f.left = Some((unix_nanos(), how));
        break;
    }
    drop(client);
    let target = Target {
        addr: to,
        source: None,
    };
    while Instant::now() < deadline {
        f.attempts += 1;
        let left = deadline.saturating_duration_since(Instant::now());
        let cfg = ClientConfig {
            timeout: cfg.timeout.min(left),
            ..cfg.clone()
        };
        match Client::connect(target, &cfg, &id, !persistent).await {
            Ok(client) => {
                f.back = Some((unix_nanos(), client));
                return f;
            }
            Err(e) => f.failures.push((unix_nanos(), e.key())),
        }
        tokio::task::yield_now().await;
    }
    f
}

/// Per-bucket counts summed per second, for a compact line.
pub fn per_second(buckets: &[Bucket], pick: fn(&Bucket) -> u64) -> Vec<u64> {
    buckets
        .chunks((1000 / BUCKET_MS) as usize)
        .map(|c| c.iter().map(pick).sum())
        .collect()
}
