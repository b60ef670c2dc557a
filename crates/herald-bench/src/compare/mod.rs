//! `compare`: run one scenario set against several brokers, each started fresh for each
//! scenario, and write the figures side by side (markdown table and JSON), with each broker's
//! ratio to the best peer and, over several runs, the spread between runs. The `transports`
//! set ([`transports`]) instead runs herald and mosquitto over TCP, TLS, WS and WSS; the
//! `flow` set runs the flow-control scenarios, `fanin-flood` and `stalled`.

mod sets;
mod table;
pub mod transports;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Serialize;

pub use self::sets::{Item, scenario_set};
pub use self::table::{Cell, Figure, Row};
use crate::brokers::{self, Kind, Setup};
use crate::scenario::flow::{flood, stalled};
use crate::scenario::{RunOptions, conns, traffic};
use crate::transport::TransportSpec;

/// Options of `compare`.
#[derive(Debug, Clone, clap::Args)]
pub struct CompareArgs {
    /// Brokers to compare, comma-separated (herald, mosquitto, nats, rumqttd); default: every
    /// one that is installed.
    #[arg(long, value_delimiter = ',')]
    pub brokers: Vec<String>,
    /// Scenario set: `smoke` (seconds; for tests), `quick` (about a minute per broker),
    /// `standard` (the full set), all with every broker in memory; or `persistence` (QoS 1
    /// to persistent sessions, with herald and mosquitto each in memory and on disk); or
    /// `transports` (idle memory and fan-out over tcp, tls, ws and wss, herald and mosquitto);
    /// or `flow` (fanin-flood over MQTT 3.1.1 and 5, stalled at QoS 0 and 1; a few minutes
    /// per broker).
    #[arg(long, default_value = "quick")]
    pub set: String,
    /// How many times to run the whole set; with 2 or more the spread is reported.
    #[arg(long, default_value_t = 1)]
    pub runs: usize,
    /// Directory for compare.md, compare.json and the brokers' configs and logs.
    #[arg(long, default_value = "bench-results")]
    pub out: PathBuf,
    /// Worker processes per scenario.
    #[arg(long, default_value_t = 1)]
    pub procs: usize,
    /// The herald executable (default: next to herald-bench, then PATH).
    #[arg(long)]
    pub herald_bin: Option<PathBuf>,
    /// The mosquitto executable (default: PATH, /usr/sbin).
    #[arg(long)]
    pub mosquitto_bin: Option<PathBuf>,
    /// The nats-server executable (default: PATH).
    #[arg(long)]
    pub nats_bin: Option<PathBuf>,
    /// The rumqttd executable (default: PATH).
    #[arg(long)]
    pub rumqttd_bin: Option<PathBuf>,
    /// transports set: idle connections per transport (spread over enough worker processes
    /// to stay under the open-file limit).
    #[arg(long, default_value_t = 19_000)]
    pub conns: usize,
    /// transports set: seconds of each fan-out run.
    #[arg(long, default_value_t = 5.0)]
    pub duration: f64,
}

/// Everything `compare` measured, as written to compare.json.
#[derive(Debug, Serialize)]
pub struct Comparison {
    /// When it ran (Unix seconds).
    pub started_unix: u64,
    /// CPU cores visible to this process.
    pub cores: usize,
    /// The kernel (`/proc/sys/kernel/osrelease`).
    pub kernel: String,
    /// The scenario set's name.
    pub set: String,
    /// The scenarios.
    pub scenarios: Vec<Item>,
    /// Runs of the whole set.
    pub runs: usize,
    /// The brokers, their versions and configurations.
    pub brokers: Vec<BrokerInfo>,
    /// Every report: per scenario, per broker, per run.
    pub results: Vec<ResultEntry>,
    /// The summary rows of the table.
    pub table: Vec<Row>,
}

/// A broker as it was run: one column of the table.
#[derive(Debug, Clone, Serialize)]
pub struct BrokerInfo {
    /// The column's name: the broker, and in the persistence set how it stores.
    pub label: String,
    /// Which broker.
    pub kind: Kind,
    /// How it was started (durability, queue bound).
    pub setup: Setup,
    /// Its executable.
    pub binary: PathBuf,
    /// What it says its version is.
    pub version: String,
    /// The configuration it was started with.
    pub config: String,
}

/// One scenario run against one broker.
#[derive(Debug, Serialize)]
pub struct ResultEntry {
    /// The scenario's label.
    pub scenario: String,
    /// The broker's column label.
    pub broker: String,
    /// Which run of the set (0-based).
    pub run: usize,
    /// The scenario's full report, or null when it failed.
    pub report: serde_json::Value,
    /// Why it failed.
    pub error: Option<String>,
}

impl CompareArgs {
    /// The brokers `--brokers` names, or `default` without it.
    fn kinds(&self, default: &[Kind]) -> anyhow::Result<Vec<Kind>> {
        if self.brokers.is_empty() {
            return Ok(default.to_vec());
        }
        self.brokers.iter().map(|b| Kind::parse(b)).collect()
    }

    /// The executable given for `kind` (`--herald-bin`, ...), if one was.
    fn bin(&self, kind: Kind) -> Option<&Path> {
        match kind {
            Kind::Herald => self.herald_bin.as_deref(),
            Kind::Mosquitto => self.mosquitto_bin.as_deref(),
            Kind::Nats => self.nats_bin.as_deref(),
            Kind::Rumqttd => self.rumqttd_bin.as_deref(),
        }
    }
}

/// Runs `compare`.
pub async fn run(args: CompareArgs) -> anyhow::Result<()> {
    if args.set == "transports" {
        return transports::run(&args).await;
    }
    let items = scenario_set(&args.set)?;
    let mut brokers = columns(&args).await?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let started_unix = crate::client::unix_nanos() / 1_000_000_000;
    let mut results = Vec::new();
    for run in 0..args.runs.max(1) {
        for item in &items {
            for broker in &mut brokers {
                let entry = run_one(&args, broker, item, run).await;
                if let Some(e) = &entry.error {
                    eprintln!("  {} on {}: failed: {e}", entry.scenario, entry.broker);
                }
                results.push(entry);
            }
        }
    }
    let table = table::summarise(&items, &brokers, &results);
    let comparison = Comparison {
        started_unix,
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_string(),
        set: args.set.clone(),
        scenarios: items,
        runs: args.runs.max(1),
        brokers,
        results,
        table,
    };
    write_results(
        &args.out,
        "compare",
        &comparison,
        &table::markdown(&comparison),
    )
}

/// The table's columns: every installed broker of `--brokers` (without it, every one that
/// is installed), each in the variants the set runs it in.
async fn columns(args: &CompareArgs) -> anyhow::Result<Vec<BrokerInfo>> {
    let mut brokers = Vec::new();
    for kind in args.kinds(&Kind::ALL)? {
        match kind.locate(args.bin(kind)) {
            Some(binary) => {
                let version = brokers::version(kind, &binary).await;
                eprintln!("{}: {} ({version})", kind.name(), binary.display());
                for (label, setup) in sets::variants(kind, &args.set) {
                    brokers.push(BrokerInfo {
                        label,
                        kind,
                        setup,
                        binary: binary.clone(),
                        version: version.clone(),
                        config: String::new(),
                    });
                }
            }
            None if args.brokers.is_empty() => eprintln!("{}: not installed, skipped", kind.name()),
            None => bail!("{} is not installed (see docs/benchmarks.md)", kind.name()),
        }
    }
    if brokers.is_empty() {
        bail!("no broker to compare: install mosquitto or nats-server (see docs/benchmarks.md)");
    }
    Ok(brokers)
}

/// Writes `{name}.json` and `{name}.md` into `out`, prints the markdown, and says where both
/// went.
fn write_results(out: &Path, name: &str, value: &impl Serialize, md: &str) -> anyhow::Result<()> {
    let json_path = out.join(format!("{name}.json"));
    std::fs::write(&json_path, serde_json::to_string_pretty(value)?)?;
    let md_path = out.join(format!("{name}.md"));
    std::fs::write(&md_path, md)?;
    print!("{md}");
    eprintln!("wrote {} and {}", md_path.display(), json_path.display());
    Ok(())
}

/// Runs `item` once against a fresh `broker` (its store wiped first); a failure is kept in
/// the entry.
async fn run_one(
    args: &CompareArgs,
    broker: &mut BrokerInfo,
    item: &Item,
    run: usize,
) -> ResultEntry {
    let label = item.label();
    eprintln!("run {}: {label} on {}", run + 1, broker.label);
    let dir = args.out.join(broker.label.replace([' ', '='], "-"));
    let outcome = async {
        if broker.kind == Kind::Nats && item.mqtt_level() == 5 {
            bail!("not run: nats-server speaks MQTT 3.1.1 only");
        }
        brokers::wipe_data(&dir)?;
        let running = brokers::start(broker.kind, &broker.binary, &dir, &broker.setup).await?;
        broker.config = running.config.clone();
        let opts = RunOptions {
            targets: vec![running.addr],
            pub_targets: Vec::new(),
            sources: Vec::new(),
            procs: args.procs.max(1),
            mqtt_level: item.mqtt_level(),
            keep_alive: 60,
            timeout: Duration::from_secs(10),
            broker_pid: Some(running.pid),
            quiet: false,
            transport: TransportSpec::tcp(),
            login: Default::default(),
        };
        let report = match item {
            Item::Conns(spec) => serde_json::to_value(conns::run(&opts, spec.clone()).await?)?,
            Item::Traffic(spec) => serde_json::to_value(traffic::run(&opts, spec.clone()).await?)?,
            Item::FaninFlood { spec, .. } => {
                serde_json::to_value(flood::run(&opts, spec.clone()).await?)?
            }
            Item::Stalled(spec) => serde_json::to_value(stalled::run(&opts, spec.clone()).await?)?,
        };
        running.stop().await;
        Ok::<_, anyhow::Error>(report)
    }
    .await;
    let (report, error) = match outcome {
        Ok(report) => (report, None),
        Err(e) => (serde_json::Value::Null, Some(format!("{e:#}"))),
    };
    ResultEntry {
        scenario: label,
        broker: broker.label.clone(),
        run,
        report,
        error,
    }
}
