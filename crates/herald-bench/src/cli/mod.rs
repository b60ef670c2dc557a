//! Command-line arguments and dispatch: one subcommand per scenario, whose options (and the
//! specs they describe) are in `cli/options.rs`.

mod options;

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use serde::Serialize;

pub use self::options::{
    BrokerArgs, Common, ConnsArgs, CrashArgs, DrainArgs, FillArgs, FloodArgs, NodeDrainArgs,
    RestartArgs, StalledArgs, StormArgs, TrafficArgs, client_config,
};
use crate::client::{ClientConfig, Target};
use crate::report;
use crate::scenario::traffic::Pattern;
use crate::scenario::{conns, crash, flow, node_drain, queue, storm, traffic};
use crate::transport::Connector;

/// Load generator for MQTT brokers.
#[derive(Debug, Parser)]
#[command(name = "herald-bench", version, about)]
pub struct Args {
    /// The scenario.
    #[command(subcommand)]
    pub command: Scenario,
}

/// What to run.
#[derive(Debug, Subcommand)]
pub enum Scenario {
    /// Open N connections at a ramp rate, hold them, count the survivors.
    Conns(ConnsArgs),
    /// P publishers -> S subscribers on one topic (default 1 -> 1000).
    Fanout {
        /// Shared options.
        #[command(flatten)]
        common: Common,
        /// Traffic options.
        #[command(flatten)]
        traffic: TrafficArgs,
    },
    /// N publishers on their own topics -> one subscriber on a wildcard (default 1000 -> 1).
    Fanin {
        /// Shared options.
        #[command(flatten)]
        common: Common,
        /// Traffic options.
        #[command(flatten)]
        traffic: TrafficArgs,
    },
    /// N publisher/subscriber pairs, each on its own topic (default 1000).
    P2p {
        /// Shared options.
        #[command(flatten)]
        common: Common,
        /// Traffic options.
        #[command(flatten)]
        traffic: TrafficArgs,
    },
    /// Many QoS 1 publishers (default 2,000) into one QoS 1 subscriber, then a drain: which
    /// acknowledged messages never arrived, PUBACKs by reason code, latency.
    FaninFlood {
        /// Shared options.
        #[command(flatten)]
        common: Common,
        /// Flood options.
        #[command(flatten)]
        flood: FloodArgs,
    },
    /// A fan-out to fast subscribers, without then with one subscriber that stops reading
    /// its socket: the fast ones' latency in both rounds, and what became of the stalled one.
    Stalled {
        /// Shared options.
        #[command(flatten)]
        common: Common,
        /// Stalled-round options.
        #[command(flatten)]
        stalled: StalledArgs,
    },
    /// M clients drop and reconnect at once, without then with jittered backoff.
    Storm(StormArgs),
    /// Start herald nodes A and B, put N MQTT 5 clients on A, and let them follow A to B:
    /// once as A drains (POST /api/v1/drain), once as A stops at once (SIGINT).
    NodeDrain(NodeDrainArgs),
    /// Leave a persistent subscriber's session with N queued messages (sequence-numbered).
    Fill(FillArgs),
    /// Resume a persistent subscriber and take its queue; count gaps, duplicates, reordering.
    Drain(DrainArgs),
    /// Start a durable broker, fill a queue, stop it, start it again, drain: time the restart.
    Restart(RestartArgs),
    /// Start a durable broker, publish QoS 1/2 to persistent subscribers, SIGKILL and restart
    /// it at seeded random moments, and report what was acknowledged but lost.
    Crash(CrashArgs),
    /// Start each installed broker, run the same scenario set against each, write a table.
    Compare(crate::compare::CompareArgs),
    /// Internal: a worker process started by the coordinator.
    #[command(name = "__worker", hide = true)]
    Worker,
}

/// Runs the command.
pub async fn run(args: Args) -> anyhow::Result<()> {
    if !matches!(args.command, Scenario::Worker) {
        crate::procstat::raise_nofile_limit();
    }
    match args.command {
        Scenario::Worker => crate::worker::run().await,
        Scenario::Conns(a) => {
            let report = conns::run(&a.common.options()?, a.spec()).await?;
            emit(a.common.json, &report, report::conns)
        }
        Scenario::Fanout { common, traffic: t } => traffic_run(common, t, Pattern::Fanout).await,
        Scenario::Fanin { common, traffic: t } => traffic_run(common, t, Pattern::Fanin).await,
        Scenario::P2p { common, traffic: t } => traffic_run(common, t, Pattern::P2p).await,
        Scenario::FaninFlood { common, flood } => {
            let report = flow::flood::run(&common.options()?, flood.spec()).await?;
            emit(common.json, &report, report::fanin_flood)
        }
        Scenario::Stalled { common, stalled } => {
            let report = flow::stalled::run(&common.options()?, stalled.spec()).await?;
            emit(common.json, &report, report::stalled)
        }
        Scenario::Storm(a) => {
            let report = storm::run(&a.common.options()?, a.spec()).await?;
            emit(a.common.json, &report, report::storm)
        }
        Scenario::NodeDrain(a) => {
            let report = node_drain::run(a.spec()?).await?;
            emit(a.json, &report, report::node_drain)
        }
        Scenario::Fill(a) => {
            let (target, cfg) = one_target(&a.common)?;
            let report = queue::fill(target, &cfg, a.spec(), a.common.json).await?;
            emit(a.common.json, &report, report::fill)
        }
        Scenario::Drain(a) => {
            let (target, cfg) = one_target(&a.common)?;
            let report = queue::drain(target, &cfg, a.spec(), a.common.json).await?;
            emit(a.common.json, &report, report::drain)
        }
        Scenario::Restart(a) => {
            let spec = a.spec()?;
            let cfg = a.broker.client_config()?;
            let report = queue::restart(&cfg, spec, a.broker.json).await?;
            emit(a.broker.json, &report, report::restart)
        }
        Scenario::Crash(a) => {
            let spec = a.spec()?;
            let cfg = a.broker.client_config()?;
            let report = crash::run(&cfg, spec, a.broker.json).await?;
            emit(a.broker.json, &report, report::crash)
        }
        Scenario::Compare(c) => crate::compare::run(c).await,
    }
}

/// The first `--target` and the client settings, for the one-connection scenarios.
fn one_target(common: &Common) -> anyhow::Result<(Target, ClientConfig)> {
    let opts = common.options()?;
    let target = Target {
        addr: opts.targets[0],
        source: opts.sources.first().copied(),
    };
    Ok((
        target,
        client_config(
            opts.mqtt_level,
            opts.keep_alive,
            opts.timeout,
            Connector::new(&opts.transport)?,
            opts.login.clone(),
        ),
    ))
}

async fn traffic_run(common: Common, t: TrafficArgs, pattern: Pattern) -> anyhow::Result<()> {
    let report = traffic::run(&common.options()?, t.spec(pattern)?).await?;
    emit(common.json, &report, report::traffic)
}

fn emit<T: Serialize>(json: bool, value: &T, human: fn(&T) -> String) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(value)?);
    } else {
        print!("{}", human(value));
    }
    Ok(())
}

/// Where `compare` writes, by default.
pub fn default_out_dir() -> PathBuf {
    PathBuf::from("bench-results")
}
