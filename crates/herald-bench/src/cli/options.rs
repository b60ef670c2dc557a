//! The options of each subcommand, and the scenario specs and run options they describe.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use mqtt_codec::ProtocolVersion;

use super::default_out_dir;
use crate::brokers::{Fsync, Kind};
use crate::client::{ClientConfig, Login};
use crate::scenario::RunOptions;
use crate::scenario::conns::ConnsSpec;
use crate::scenario::crash::CrashSpec;
use crate::scenario::flow::flood::FloodSpec;
use crate::scenario::flow::stalled::StalledSpec;
use crate::scenario::node_drain::NodeDrainSpec;
use crate::scenario::queue::{DrainSpec, FillSpec, RestartSpec};
use crate::scenario::storm::StormSpec;
use crate::scenario::traffic::{Pattern, TrafficSpec};
use crate::transport::{Connector, TransportArgs};

/// Options every scenario takes.
#[derive(Debug, Clone, clap::Args)]
pub struct Common {
    /// Broker address(es); clients are spread over them.
    #[arg(long = "target", num_args = 1.., default_value = "127.0.0.1:1883")]
    pub targets: Vec<SocketAddr>,
    /// Broker address(es) for the publishers of traffic scenarios, spread over them
    /// (default: --target); e.g. subscribers on one cluster node, publishers on another.
    #[arg(long = "pub-target", num_args = 1..)]
    pub pub_targets: Vec<SocketAddr>,
    /// Local source address(es), e.g. 127.0.0.2 127.0.0.3, to multiply ephemeral ports.
    #[arg(long = "source-ip", num_args = 1..)]
    pub sources: Vec<IpAddr>,
    /// Worker processes to spread the connections over (one holds ~19,900 sockets at most).
    #[arg(long, default_value_t = 1)]
    pub procs: usize,
    /// MQTT version: 3.1, 3.1.1 or 5.
    #[arg(long, default_value = "3.1.1")]
    pub protocol: String,
    /// Keep-alive seconds announced by every client (clients ping at half of it).
    #[arg(long, default_value_t = 60)]
    pub keep_alive: u16,
    /// Timeout in seconds for connect, subscribe and ping.
    #[arg(long, default_value_t = 10.0)]
    pub timeout: f64,
    /// The broker's process id, for its CPU and memory (from /proc).
    #[arg(long)]
    pub broker_pid: Option<u32>,
    /// Print one JSON object with every figure instead of a summary.
    #[arg(long)]
    pub json: bool,
    /// Username every client sends in CONNECT.
    #[arg(long)]
    pub username: Option<String>,
    /// Password (or token) every client sends in CONNECT.
    #[arg(long, conflicts_with = "password_file")]
    pub password: Option<String>,
    /// File whose contents (less trailing line breaks) every client sends as its password:
    /// for long tokens such as JWTs.
    #[arg(long)]
    pub password_file: Option<PathBuf>,
    /// Transport and TLS options.
    #[command(flatten)]
    pub transport: TransportArgs,
}

/// The protocol level `--protocol` names.
fn mqtt_level(protocol: &str) -> anyhow::Result<u8> {
    Ok(match protocol {
        "3.1" | "3" => 3,
        "3.1.1" | "4" => 4,
        "5" | "5.0" => 5,
        other => bail!("--protocol must be 3.1, 3.1.1 or 5, not {other:?}"),
    })
}

/// Options of the scenarios that start their own broker (`restart`, `crash`).
#[derive(Debug, Clone, clap::Args)]
pub struct BrokerArgs {
    /// The broker: herald or mosquitto.
    #[arg(long, default_value = "herald")]
    pub broker: String,
    /// Its executable (default: next to herald-bench, then PATH, then /usr/sbin).
    #[arg(long)]
    pub bin: Option<PathBuf>,
    /// herald's fsync policy (HERALD_STORE_FSYNC).
    #[arg(long, value_enum, default_value = "batch")]
    pub fsync: Fsync,
    /// mosquitto's autosave_interval in seconds (mosquitto's own default: 1800).
    #[arg(long, default_value_t = 1800)]
    pub mosquitto_autosave: u32,
    /// Directory for the broker's configuration, log and store (its store is wiped first).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// MQTT version: 3.1.1 or 5.
    #[arg(long, default_value = "3.1.1")]
    pub protocol: String,
    /// Print one JSON object with every figure instead of a summary.
    #[arg(long)]
    pub json: bool,
}

impl BrokerArgs {
    /// The broker kind, its executable, and its run directory.
    fn resolve(&self, scenario: &str) -> anyhow::Result<(Kind, PathBuf, PathBuf)> {
        let kind = Kind::parse(&self.broker)?;
        if !matches!(kind, Kind::Herald | Kind::Mosquitto) {
            bail!("--broker must be herald or mosquitto: only they keep sessions on disk here");
        }
        let bin = kind
            .locate(self.bin.as_deref())
            .with_context(|| format!("{} not found; give --bin", kind.name()))?;
        let dir = self
            .dir
            .clone()
            .unwrap_or_else(|| default_out_dir().join(format!("{scenario}-{}", kind.name())));
        Ok((kind, bin, dir))
    }

    /// The client settings of `--protocol`, with a 60 s keep-alive and a 10 s timeout, over
    /// TCP.
    pub(super) fn client_config(&self) -> anyhow::Result<ClientConfig> {
        Ok(client_config(
            mqtt_level(&self.protocol)?,
            60,
            Duration::from_secs(10),
            Connector::default(),
            Login::default(),
        ))
    }
}

/// The client settings of a protocol level, keep-alive, timeout and transport.
pub fn client_config(
    mqtt_level: u8,
    keep_alive: u16,
    timeout: Duration,
    transport: Connector,
    login: Login,
) -> ClientConfig {
    ClientConfig {
        version: match mqtt_level {
            3 => ProtocolVersion::V3_1,
            5 => ProtocolVersion::V5,
            _ => ProtocolVersion::V3_1_1,
        },
        keep_alive,
        timeout,
        transport,
        login,
    }
}

impl Common {
    /// The run options these flags describe.
    pub fn options(&self) -> anyhow::Result<RunOptions> {
        let mqtt_level = mqtt_level(&self.protocol)?;
        if self.procs == 0 {
            bail!("--procs must be at least 1");
        }
        if self.timeout <= 0.0 {
            bail!("--timeout must be above 0 seconds");
        }
        Ok(RunOptions {
            targets: self.targets.clone(),
            pub_targets: self.pub_targets.clone(),
            sources: self.sources.clone(),
            procs: self.procs,
            mqtt_level,
            keep_alive: self.keep_alive,
            timeout: Duration::from_secs_f64(self.timeout),
            broker_pid: self.broker_pid,
            quiet: self.json,
            transport: self.transport.spec()?,
            login: self.login(mqtt_level)?,
        })
    }

    /// The username and password of `--username`, `--password` and `--password-file`.
    fn login(&self, mqtt_level: u8) -> anyhow::Result<Login> {
        let password = match (&self.password, &self.password_file) {
            (Some(p), _) => Some(p.clone().into_bytes()),
            (None, Some(file)) => {
                let mut bytes = std::fs::read(file)
                    .with_context(|| format!("--password-file {}", file.display()))?;
                while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                    bytes.pop();
                }
                Some(bytes)
            }
            (None, None) => None,
        };
        if password.is_some() && self.username.is_none() && mqtt_level < 5 {
            bail!("a password needs --username before MQTT 5");
        }
        Ok(Login {
            username: self.username.clone(),
            password,
        })
    }
}

/// Options of fanout, fanin and p2p. Unset counts take the scenario's default.
#[derive(Debug, Clone, clap::Args)]
pub struct TrafficArgs {
    /// Publishers (fanout default 1, fanin default 1000).
    #[arg(long)]
    pub pubs: Option<usize>,
    /// Subscribers (fanout default 1000, fanin default 1).
    #[arg(long)]
    pub subs: Option<usize>,
    /// Publisher/subscriber pairs (p2p; default 1000).
    #[arg(long)]
    pub pairs: Option<usize>,
    /// Total publications per second over all publishers; 0 = as fast as possible.
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Payload bytes (at least 8).
    #[arg(long, default_value_t = 64)]
    pub payload: usize,
    /// QoS 0, 1 or 2.
    #[arg(long, default_value_t = 0)]
    pub qos: u8,
    /// Seconds of publishing.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds subscribers may keep receiving after publishing stops.
    #[arg(long, default_value_t = 10.0)]
    pub drain: f64,
    /// Unacknowledged QoS 1/2 publications allowed per publisher.
    #[arg(long, default_value_t = 64)]
    pub inflight: usize,
    /// Subscribers keep persistent sessions (fixed client ids, Clean Session 0 / Clean Start
    /// 0 with a Session Expiry Interval of an hour), so a durable broker stores their QoS 1/2
    /// deliveries.
    #[arg(long)]
    pub persistent: bool,
}

impl TrafficArgs {
    /// The traffic spec for `pattern`, with that pattern's defaults filled in.
    pub fn spec(&self, pattern: Pattern) -> anyhow::Result<TrafficSpec> {
        let (pubs, subs) = match pattern {
            Pattern::Fanout => (self.pubs.unwrap_or(1), self.subs.unwrap_or(1000)),
            Pattern::Fanin => (self.pubs.unwrap_or(1000), self.subs.unwrap_or(1)),
            Pattern::P2p => {
                let pairs = self.pairs.unwrap_or(1000);
                (pairs, pairs)
            }
        };
        if pubs == 0 || subs == 0 {
            bail!("--pubs, --subs and --pairs must be at least 1");
        }
        if self.qos > 2 {
            bail!("--qos must be 0, 1 or 2");
        }
        if self.duration <= 0.0 || self.rate < 0.0 || self.drain < 0.0 {
            bail!("--duration must be above 0, --rate and --drain at least 0");
        }
        Ok(TrafficSpec {
            pattern,
            pubs,
            subs,
            qos: self.qos,
            payload: self.payload,
            rate: self.rate,
            duration_s: self.duration,
            drain_s: self.drain,
            inflight: self.inflight,
            persistent: self.persistent,
        })
    }
}

/// Options of `fanin-flood`.
#[derive(Debug, Clone, clap::Args)]
pub struct FloodArgs {
    /// Publishers, each on its own topic (worker processes are added past 15,000 sockets).
    #[arg(long, default_value_t = 2000)]
    pub pubs: usize,
    /// Publications per second of each publisher; 0 = as fast as its window allows.
    #[arg(long, default_value_t = 0.0)]
    pub pub_rate: f64,
    /// Payload bytes (at least 16).
    #[arg(long, default_value_t = 64)]
    pub payload: usize,
    /// Seconds of publishing.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// The drain ends once the subscriber has received nothing for this many seconds.
    #[arg(long, default_value_t = 3.0)]
    pub idle: f64,
    /// The drain ends this many seconds after publishing at the latest.
    #[arg(long, default_value_t = 60.0)]
    pub max_drain: f64,
    /// Unacknowledged publications allowed per publisher (at most the broker's Receive
    /// Maximum).
    #[arg(long, default_value_t = 64)]
    pub inflight: usize,
}

impl FloodArgs {
    /// The spec these flags describe.
    pub fn spec(&self) -> FloodSpec {
        FloodSpec {
            pubs: self.pubs,
            pub_rate: self.pub_rate,
            payload: self.payload,
            duration_s: self.duration,
            idle_s: self.idle,
            max_drain_s: self.max_drain,
            inflight: self.inflight,
        }
    }
}

/// Options of `stalled`.
#[derive(Debug, Clone, clap::Args)]
pub struct StalledArgs {
    /// Publishers, all on the one topic.
    #[arg(long, default_value_t = 1)]
    pub pubs: usize,
    /// Fast subscribers (the stalled one comes on top).
    #[arg(long, default_value_t = 1000)]
    pub subs: usize,
    /// Total publications per second over all publishers; 0 = as fast as possible.
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    /// Payload bytes (at least 8).
    #[arg(long, default_value_t = 64)]
    pub payload: usize,
    /// QoS of publications and of every subscription: 0, 1 or 2.
    #[arg(long, default_value_t = 0)]
    pub qos: u8,
    /// Seconds of publishing in each round: with the default filler, long enough for the
    /// stalled socket's buffers to fill (about 4.5 MB on loopback here) and for a
    /// slow-consumer timeout to pass after that (herald's: 30 s).
    #[arg(long, default_value_t = 40.0)]
    pub duration: f64,
    /// Seconds fast subscribers may keep receiving after publishing stops.
    #[arg(long, default_value_t = 10.0)]
    pub drain: f64,
    /// Unacknowledged QoS 1/2 publications allowed per publisher.
    #[arg(long, default_value_t = 64)]
    pub inflight: usize,
    /// Filler publications per second on a topic only the stalled subscriber has, so that
    /// its socket and then its queue in the broker fill within seconds; 0 = no filler.
    #[arg(long, default_value_t = 1000.0)]
    pub fill_rate: f64,
    /// Filler payload bytes (at least 8).
    #[arg(long, default_value_t = 1024)]
    pub fill_payload: usize,
    /// Play only the round with the stalled subscriber, not the one without it first.
    #[arg(long)]
    pub no_baseline: bool,
}

impl StalledArgs {
    /// The spec these flags describe.
    pub fn spec(&self) -> StalledSpec {
        StalledSpec {
            pubs: self.pubs,
            subs: self.subs,
            qos: self.qos,
            payload: self.payload,
            rate: self.rate,
            duration_s: self.duration,
            drain_s: self.drain,
            inflight: self.inflight,
            fill_rate: self.fill_rate,
            fill_payload: self.fill_payload,
            baseline: !self.no_baseline,
        }
    }
}

/// Options of `conns`.
#[derive(Debug, Clone, clap::Args)]
pub struct ConnsArgs {
    /// Shared options.
    #[command(flatten)]
    pub common: Common,
    /// Connections to open.
    #[arg(long, default_value_t = 1000)]
    pub conns: usize,
    /// New connections per second (all processes together).
    #[arg(long, default_value_t = 1000.0)]
    pub ramp: f64,
    /// Seconds to hold them open before checking.
    #[arg(long, default_value_t = 10.0)]
    pub hold: f64,
}

impl ConnsArgs {
    /// The spec these flags describe.
    pub fn spec(&self) -> ConnsSpec {
        ConnsSpec {
            conns: self.conns,
            ramp: self.ramp,
            hold_s: self.hold,
        }
    }
}

/// Options of `storm`.
#[derive(Debug, Clone, clap::Args)]
pub struct StormArgs {
    /// Shared options.
    #[command(flatten)]
    pub common: Common,
    /// Clients that drop and reconnect.
    #[arg(long, default_value_t = 1000)]
    pub clients: usize,
    /// Seconds a round may last.
    #[arg(long, default_value_t = 60.0)]
    pub max: f64,
    /// Backoff base in milliseconds.
    #[arg(long, default_value_t = 100)]
    pub backoff_base_ms: u64,
    /// Backoff cap in milliseconds.
    #[arg(long, default_value_t = 5000)]
    pub backoff_max_ms: u64,
    /// First-reconnect spread in milliseconds (with backoff).
    #[arg(long, default_value_t = 1000)]
    pub jitter_ms: u64,
}

impl StormArgs {
    /// The spec these flags describe.
    pub fn spec(&self) -> StormSpec {
        StormSpec {
            clients: self.clients,
            max_s: self.max,
            backoff_base_ms: self.backoff_base_ms,
            backoff_max_ms: self.backoff_max_ms,
            jitter_ms: self.jitter_ms,
        }
    }
}

/// Options of `node-drain`.
#[derive(Debug, Clone, clap::Args)]
pub struct NodeDrainArgs {
    /// Clients on node A.
    #[arg(long, default_value_t = 5000)]
    pub clients: usize,
    /// A's drain period in seconds (HERALD_DRAIN_PERIOD_SECS).
    #[arg(long, default_value_t = 10)]
    pub drain_secs: u64,
    /// The herald executable (default: next to herald-bench, then PATH).
    #[arg(long)]
    pub herald_bin: Option<PathBuf>,
    /// Connect timeout of each attempt, seconds.
    #[arg(long, default_value_t = 5.0)]
    pub timeout: f64,
    /// Worker processes to spread the clients over.
    #[arg(long, default_value_t = 1)]
    pub procs: usize,
    /// Directory for the nodes' logs.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Join A and B into a cluster through this NATS (with JetStream): clients then keep
    /// persistent sessions (Clean Start 0, one subscription each), the summary counts those
    /// resumed on B, and a third round SIGKILLs A.
    #[arg(long)]
    pub cluster: Option<String>,
    /// Print one JSON object with every figure instead of a summary.
    #[arg(long)]
    pub json: bool,
}

impl NodeDrainArgs {
    /// The spec these flags describe, with the herald executable found.
    pub fn spec(&self) -> anyhow::Result<NodeDrainSpec> {
        if self.clients == 0 || self.procs == 0 || self.timeout <= 0.0 {
            bail!("--clients and --procs must be at least 1, --timeout above 0");
        }
        let herald_bin = Kind::Herald
            .locate(self.herald_bin.as_deref())
            .context("herald not found; give --herald-bin")?;
        Ok(NodeDrainSpec {
            clients: self.clients,
            drain_secs: self.drain_secs,
            timeout_s: self.timeout,
            procs: self.procs,
            herald_bin,
            dir: self
                .dir
                .clone()
                .unwrap_or_else(|| default_out_dir().join("node-drain")),
            cluster: self.cluster.clone(),
            quiet: self.json,
        })
    }
}

/// Options of `fill`.
#[derive(Debug, Clone, clap::Args)]
pub struct FillArgs {
    /// Shared options (the first --target is used).
    #[command(flatten)]
    pub common: Common,
    /// Messages to queue.
    #[arg(long, default_value_t = 100_000)]
    pub count: u64,
    /// QoS of the subscription and the publications.
    #[arg(long, default_value_t = 1)]
    pub qos: u8,
    /// The persistent subscriber's client id.
    #[arg(long, default_value = "hb-queue")]
    pub client_id: String,
    /// The topic.
    #[arg(long, default_value = "hb/queue")]
    pub topic: String,
    /// Unacknowledged publications allowed at once.
    #[arg(long, default_value_t = 1000)]
    pub inflight: usize,
    /// Payload bytes (at least 8).
    #[arg(long, default_value_t = 64)]
    pub payload: usize,
}

impl FillArgs {
    /// The spec these flags describe.
    pub fn spec(&self) -> FillSpec {
        FillSpec {
            count: self.count,
            qos: self.qos,
            client_id: self.client_id.clone(),
            topic: self.topic.clone(),
            inflight: self.inflight,
            payload: self.payload,
        }
    }
}

/// Options of `drain`.
#[derive(Debug, Clone, clap::Args)]
pub struct DrainArgs {
    /// Shared options (the first --target is used).
    #[command(flatten)]
    pub common: Common,
    /// The persistent subscriber's client id.
    #[arg(long, default_value = "hb-queue")]
    pub client_id: String,
    /// Messages expected (sequence numbers 0..N).
    #[arg(long)]
    pub expect: u64,
    /// Seconds without a message after which the drain gives up.
    #[arg(long, default_value_t = 10.0)]
    pub idle: f64,
}

impl DrainArgs {
    /// The spec these flags describe.
    pub fn spec(&self) -> DrainSpec {
        DrainSpec {
            client_id: self.client_id.clone(),
            expect: self.expect,
            idle_s: self.idle,
        }
    }
}

/// Options of `restart`.
#[derive(Debug, Clone, clap::Args)]
pub struct RestartArgs {
    /// The broker and how to run it.
    #[command(flatten)]
    pub broker: BrokerArgs,
    /// Messages to queue.
    #[arg(long, default_value_t = 1_000_000)]
    pub count: u64,
    /// QoS of the subscription and the publications.
    #[arg(long, default_value_t = 1)]
    pub qos: u8,
    /// Stop the broker with SIGKILL instead of SIGTERM.
    #[arg(long)]
    pub kill: bool,
    /// Unacknowledged publications allowed at once.
    #[arg(long, default_value_t = 1000)]
    pub inflight: usize,
    /// Payload bytes (at least 8).
    #[arg(long, default_value_t = 64)]
    pub payload: usize,
    /// Seconds without a message after which the drain gives up.
    #[arg(long, default_value_t = 30.0)]
    pub idle: f64,
}

impl RestartArgs {
    /// The spec these flags describe, with the broker found.
    pub fn spec(&self) -> anyhow::Result<RestartSpec> {
        let (kind, bin, dir) = self.broker.resolve("restart")?;
        Ok(RestartSpec {
            broker: kind,
            bin,
            dir,
            fsync: self.broker.fsync,
            kill: self.kill,
            fill: FillSpec {
                count: self.count,
                qos: self.qos,
                client_id: "hb-restart".into(),
                topic: "hb/restart".into(),
                inflight: self.inflight,
                payload: self.payload,
            },
            idle_s: self.idle,
        })
    }
}

/// Options of `crash`.
#[derive(Debug, Clone, clap::Args)]
pub struct CrashArgs {
    /// The broker and how to run it.
    #[command(flatten)]
    pub broker: BrokerArgs,
    /// SIGKILLs (alternately while subscribers are offline and while they drain).
    #[arg(long, default_value_t = 5)]
    pub kills: usize,
    /// Seed of the kill times.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Persistent subscribers (QoS 2 on crash/#).
    #[arg(long, default_value_t = 3)]
    pub subscribers: usize,
    /// Publishers: the first half QoS 1, the rest QoS 2.
    #[arg(long, default_value_t = 4)]
    pub publishers: usize,
    /// Publications per second over all publishers; 0 = as fast as possible.
    #[arg(long, default_value_t = 2000.0)]
    pub rate: f64,
    /// Unacknowledged publications allowed per publisher.
    #[arg(long, default_value_t = 100)]
    pub inflight: usize,
    /// Payload bytes (at least 8).
    #[arg(long, default_value_t = 64)]
    pub payload: usize,
    /// Seconds of publishing after the last restart.
    #[arg(long, default_value_t = 1.0)]
    pub final_secs: f64,
    /// Seconds without a delivery that end the final drain.
    #[arg(long, default_value_t = 3.0)]
    pub idle: f64,
}

impl CrashArgs {
    /// The spec these flags describe, with the broker found.
    pub fn spec(&self) -> anyhow::Result<CrashSpec> {
        let (kind, bin, dir) = self.broker.resolve("crash")?;
        if self.publishers < 2 || self.subscribers == 0 {
            bail!("--publishers must be at least 2 (QoS 1 and QoS 2), --subscribers 1");
        }
        Ok(CrashSpec {
            broker: kind,
            bin,
            dir,
            kills: self.kills,
            seed: self.seed,
            fsync: self.broker.fsync,
            mosquitto_autosave_s: self.broker.mosquitto_autosave,
            subscribers: self.subscribers,
            publishers: self.publishers,
            rate: self.rate,
            inflight: self.inflight,
            payload: self.payload,
            final_s: self.final_secs,
            idle_s: self.idle,
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Args, Scenario};

    /// The run options of `herald-bench conns` with these extra flags.
    fn options(flags: &[&str]) -> anyhow::Result<RunOptions> {
        let args = Args::try_parse_from(["herald-bench", "conns"].iter().chain(flags))?;
        match args.command {
            Scenario::Conns(c) => c.common.options(),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn username_and_password_reach_the_run_options() {
        let opts = options(&["--username", "u", "--password", "p w"]).expect("options");
        assert_eq!(opts.login.username.as_deref(), Some("u"));
        assert_eq!(opts.login.password.as_deref(), Some(&b"p w"[..]));
        assert_eq!(options(&[]).expect("options").login, Login::default());
    }

    #[test]
    fn a_password_file_loses_its_trailing_line_breaks_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("token");
        std::fs::write(&file, b" eyJ.a.b \r\n\n").expect("write");
        let file = file.to_str().expect("utf-8 path");
        let opts = options(&["--username", "u", "--password-file", file]).expect("options");
        assert_eq!(opts.login.password.as_deref(), Some(&b" eyJ.a.b "[..]));
        let missing = options(&["--username", "u", "--password-file", "/nonexistent/x"]);
        let err = format!("{:#}", missing.expect_err("a missing file is an error"));
        assert!(err.contains("--password-file /nonexistent/x"), "{err}");
    }

    #[test]
    fn a_password_without_username_is_refused_before_mqtt_5() {
        let err = options(&["--password", "p"]).expect_err("3.1.1 needs a username");
        assert!(err.to_string().contains("--username"), "{err}");
        let opts = options(&["--password", "p", "--protocol", "5"]).expect("5 allows it");
        assert_eq!(opts.login.username, None);
        assert!(options(&["--password", "p", "--password-file", "/x"]).is_err());
    }
}
