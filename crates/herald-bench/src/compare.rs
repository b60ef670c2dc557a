//! `compare`: run one scenario set against several brokers, each started fresh for each
//! scenario, and write the figures side by side (markdown table and JSON), with each broker's
//! ratio to the best peer and, over several runs, the spread between runs. The `transports`
//! set ([`transports`]) instead runs herald and mosquitto over TCP, TLS, WS and WSS; the
//! `flow` set runs the flow-control scenarios, `fanin-flood` and `stalled`.

pub mod transports;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Serialize;

use crate::brokers::{self, Durability, Fsync, Kind, Setup};
use crate::scenario::conns::ConnsSpec;
use crate::scenario::flow::flood::FloodSpec;
use crate::scenario::flow::stalled::StalledSpec;
use crate::scenario::flow::{flood, stalled};
use crate::scenario::traffic::{Pattern, TrafficSpec};
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

/// One scenario of a set.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Item {
    /// A `conns` run.
    Conns(ConnsSpec),
    /// A fanout, fanin or p2p run.
    Traffic(TrafficSpec),
    /// A `fanin-flood` run at one MQTT version.
    FaninFlood {
        /// The scenario's parameters.
        spec: FloodSpec,
        /// MQTT protocol level: 4 (3.1.1) or 5.
        mqtt_level: u8,
    },
    /// A `stalled` run (MQTT 3.1.1, which every broker speaks).
    Stalled(StalledSpec),
}

impl Item {
    /// The MQTT protocol level the item's clients speak.
    pub fn mqtt_level(&self) -> u8 {
        match self {
            Item::FaninFlood { mqtt_level, .. } => *mqtt_level,
            _ => 4,
        }
    }

    /// A short label for the table.
    pub fn label(&self) -> String {
        match self {
            Item::Conns(c) => format!("conns {}", c.conns),
            Item::FaninFlood { spec, mqtt_level } => {
                let rate = if spec.pub_rate > 0.0 {
                    format!("{} msg/s each", spec.pub_rate)
                } else {
                    "max".into()
                };
                let version = if *mqtt_level == 5 { "5" } else { "3.1.1" };
                format!("fanin-flood {}->1 QoS1 {rate} MQTT {version}", spec.pubs)
            }
            Item::Stalled(s) => format!(
                "stalled {}->{}+1 QoS{} {} msg/s {} s",
                s.pubs, s.subs, s.qos, s.rate, s.duration_s
            ),
            Item::Traffic(t) => {
                let rate = if t.rate > 0.0 {
                    format!("{} msg/s", t.rate)
                } else {
                    "max".into()
                };
                let persistent = if t.persistent { " persistent" } else { "" };
                match t.pattern {
                    Pattern::P2p => {
                        format!("p2p {} pairs QoS{} {rate}{persistent}", t.pubs, t.qos)
                    }
                    _ => format!(
                        "{} {}->{} QoS{} {rate}{persistent}",
                        t.name(),
                        t.pubs,
                        t.subs,
                        t.qos
                    ),
                }
            }
        }
    }
}

fn traffic(pattern: Pattern, pubs: usize, subs: usize, qos: u8, rate: f64, secs: f64) -> Item {
    Item::Traffic(TrafficSpec {
        pattern,
        pubs,
        subs,
        qos,
        payload: 64,
        rate,
        duration_s: secs,
        drain_s: 10.0,
        inflight: 64,
        persistent: false,
    })
}

/// 2,000 QoS 1 publishers as fast as they may into one subscriber for 10 s, at MQTT
/// protocol level `mqtt_level`.
fn fanin_flood(mqtt_level: u8) -> Item {
    Item::FaninFlood {
        spec: FloodSpec {
            pubs: 2000,
            pub_rate: 0.0,
            payload: 64,
            duration_s: 10.0,
            idle_s: 3.0,
            max_drain_s: 60.0,
            inflight: 64,
        },
        mqtt_level,
    }
}

/// 1 -> 1,000 at 100 msg/s of 64 B (what every broker here keeps up with), alone and then
/// with a stalled subscriber and its filler (1,000 msg/s of 1 KiB), long enough for the
/// stalled socket's buffers to fill and a slow-consumer timeout (herald's: 30 s) to pass.
fn stalled_fanout(qos: u8) -> Item {
    Item::Stalled(StalledSpec {
        pubs: 1,
        subs: 1000,
        qos,
        payload: 64,
        rate: 100.0,
        duration_s: 40.0,
        drain_s: 10.0,
        inflight: 64,
        fill_rate: 1000.0,
        fill_payload: 1024,
        baseline: true,
    })
}

/// A traffic item whose subscribers keep persistent sessions.
fn persistent(item: Item) -> Item {
    match item {
        Item::Traffic(t) => Item::Traffic(TrafficSpec {
            persistent: true,
            ..t
        }),
        other => other,
    }
}

/// The scenarios of a named set.
pub fn scenario_set(name: &str) -> anyhow::Result<Vec<Item>> {
    use Pattern::*;
    Ok(match name {
        "smoke" => vec![
            Item::Conns(ConnsSpec {
                conns: 100,
                ramp: 500.0,
                hold_s: 1.0,
            }),
            traffic(Fanout, 1, 10, 0, 500.0, 2.0),
            traffic(Fanin, 10, 1, 1, 500.0, 2.0),
            traffic(P2p, 10, 10, 0, 200.0, 2.0),
        ],
        "quick" => vec![
            Item::Conns(ConnsSpec {
                conns: 1000,
                ramp: 1000.0,
                hold_s: 3.0,
            }),
            traffic(Fanout, 1, 100, 0, 0.0, 5.0),
            traffic(Fanout, 1, 100, 0, 1000.0, 5.0),
            traffic(Fanin, 100, 1, 0, 2000.0, 5.0),
            traffic(Fanin, 100, 1, 1, 2000.0, 5.0),
            traffic(P2p, 100, 100, 0, 1000.0, 5.0),
        ],
        "standard" => vec![
            Item::Conns(ConnsSpec {
                conns: 1000,
                ramp: 2000.0,
                hold_s: 5.0,
            }),
            Item::Conns(ConnsSpec {
                conns: 10_000,
                ramp: 2000.0,
                hold_s: 5.0,
            }),
            Item::Conns(ConnsSpec {
                conns: 19_000,
                ramp: 2000.0,
                hold_s: 5.0,
            }),
            traffic(Fanout, 1, 1000, 0, 0.0, 10.0),
            traffic(Fanout, 1, 1000, 0, 100.0, 10.0),
            traffic(Fanin, 1000, 1, 0, 20_000.0, 10.0),
            traffic(Fanin, 1000, 1, 1, 20_000.0, 10.0),
            traffic(P2p, 1000, 1000, 0, 10_000.0, 10.0),
        ],
        // The same delivery rate, 5,000/s, in both directions: 100 publishers at 50/s each
        // into one subscriber, one publisher at 50/s out to 100 subscribers.
        "persistence" => vec![
            persistent(traffic(Fanin, 100, 1, 1, 0.0, 10.0)),
            persistent(traffic(Fanin, 100, 1, 1, 5000.0, 10.0)),
            persistent(traffic(Fanout, 1, 100, 1, 0.0, 10.0)),
            persistent(traffic(Fanout, 1, 100, 1, 50.0, 10.0)),
        ],
        "flow" => vec![
            fanin_flood(4),
            fanin_flood(5),
            stalled_fanout(0),
            stalled_fanout(1),
        ],
        other => bail!(
            "unknown --set {other:?}: smoke, quick, standard, persistence, transports or flow"
        ),
    })
}

/// The columns one installed broker gives in `set`: itself in memory, or in the persistence
/// set each way it can store (herald in memory and with two fsync policies, mosquitto
/// without and with persistence), every one with a bound of a million queued messages.
fn variants(kind: Kind, set: &str) -> Vec<(String, Setup)> {
    let name = kind.name();
    if set == "flow" {
        // Herald's own default bound, so that the set shows what it does out of the box.
        let setup = Setup {
            max_queued: 10_000,
            ..Setup::default()
        };
        return vec![(name.to_string(), setup)];
    }
    if set != "persistence" {
        return vec![(name.to_string(), Setup::default())];
    }
    let with = |durability| Setup {
        durability,
        max_queued: 1_000_000,
        ..Setup::default()
    };
    match kind {
        Kind::Herald => vec![
            (format!("{name} in-memory"), with(Durability::InMemory)),
            (
                format!("{name} fsync=batch"),
                with(Durability::Store(Fsync::Batch)),
            ),
            (
                format!("{name} fsync=always"),
                with(Durability::Store(Fsync::Always)),
            ),
        ],
        Kind::Mosquitto => vec![
            (
                format!("{name} persistence=false"),
                with(Durability::InMemory),
            ),
            (
                format!("{name} persistence=true"),
                with(Durability::Store(Fsync::Batch)),
            ),
        ],
        Kind::Nats | Kind::Rumqttd => {
            eprintln!("{name}: not in the persistence set, skipped");
            Vec::new()
        }
    }
}

/// One figure of one run.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    /// Metric name.
    pub metric: &'static str,
    /// Its value.
    pub value: f64,
    /// Whether bigger is better (for the ratio to the best peer).
    pub higher_is_better: bool,
}

fn figures(report: &serde_json::Value, item: &Item) -> Vec<Figure> {
    let path = |path: &[&str]| path.iter().try_fold(report, |v, k| v.get(k));
    let get = |keys: &[&str]| path(keys).and_then(serde_json::Value::as_f64);
    let mut out = Vec::new();
    let mut push = |metric, value: Option<f64>, higher_is_better| {
        if let Some(value) = value {
            out.push(Figure {
                metric,
                value,
                higher_is_better,
            });
        }
    };
    match item {
        Item::Conns(_) => {
            push("connected", get(&["connected"]), true);
            push("alive after hold", get(&["alive_after_hold"]), true);
            push("connects/s", get(&["connect_rate_per_s"]), true);
            push("broker bytes/conn", get(&["broker_bytes_per_conn"]), false);
            push("connect p99 ms", get(&["connect_latency", "p99_ms"]), false);
        }
        Item::FaninFlood { .. } => {
            push("published/s", get(&["published_per_s"]), true);
            push("received/s", get(&["received_per_s"]), true);
            push("acked, not delivered", get(&["acked_not_delivered"]), false);
            push("PUBACK 0x97", get(&["acks", "quota_exceeded"]), false);
            push("unacknowledged", get(&["unacknowledged"]), false);
            push("latency p50 ms", get(&["latency", "p50_ms"]), false);
            push("latency p99 ms", get(&["latency", "p99_ms"]), false);
            push(
                "broker CPU s/M msgs",
                get(&["cpu", "broker_cpu_s_per_million"]),
                false,
            );
        }
        Item::Stalled(_) => {
            push(
                "fast p99 ms, alone",
                get(&["summary", "p99_alone_ms"]),
                false,
            );
            push(
                "fast p99 ms, with stalled",
                get(&["summary", "p99_with_stalled_ms"]),
                false,
            );
            push("fast p99 with/alone", get(&["summary", "p99_ratio"]), false);
            push(
                "fast delivered/s, with stalled",
                get(&["summary", "delivered_per_s_with_stalled"]),
                true,
            );
            push(
                "fast delivery ratio, with stalled",
                get(&["summary", "delivery_ratio_with_stalled"]),
                true,
            );
            let cut_off = path(&["summary", "stalled_disconnected"])
                .and_then(serde_json::Value::as_bool)
                .map(f64::from);
            push("stalled disconnected (1 = yes)", cut_off, false);
            push(
                "stalled cut off after s",
                get(&["summary", "stalled_disconnect_seen_after_s"]),
                false,
            );
        }
        Item::Traffic(_) => {
            push("delivered/s", get(&["delivered_per_s"]), true);
            push("delivery ratio", get(&["delivery_ratio"]), true);
            push("latency p50 ms", get(&["latency", "p50_ms"]), false);
            push("latency p99 ms", get(&["latency", "p99_ms"]), false);
            push(
                "broker CPU s/M msgs",
                get(&["cpu", "broker_cpu_s_per_million"]),
                false,
            );
            push(
                "herald-bench CPU s/M msgs",
                get(&["cpu", "tool_cpu_s_per_million"]),
                false,
            );
        }
    }
    out
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

/// One metric of one scenario across brokers.
#[derive(Debug, Serialize)]
pub struct Row {
    /// The scenario's label.
    pub scenario: String,
    /// The metric.
    pub metric: &'static str,
    /// Per broker: mean over runs, spread between runs (max-min over mean), ratio to the best.
    pub cells: Vec<Cell>,
}

/// One broker's value in a row.
#[derive(Debug, Serialize)]
pub struct Cell {
    /// The broker's column label.
    pub broker: String,
    /// Mean over runs.
    pub mean: f64,
    /// (max - min) / mean over runs; 0 with one run.
    pub spread: f64,
    /// This broker's value relative to the best broker's (1.0 is the best; >1 is worse for
    /// lower-is-better metrics, <1 is worse for higher-is-better ones). `None` when the best
    /// is 0 (too small to measure), where a ratio means nothing.
    pub ratio_to_best: Option<f64>,
}

/// Runs `compare`.
pub async fn run(args: CompareArgs) -> anyhow::Result<()> {
    if args.set == "transports" {
        return transports::run(&args).await;
    }
    let items = scenario_set(&args.set)?;
    let wanted: Vec<Kind> = if args.brokers.is_empty() {
        Kind::ALL.to_vec()
    } else {
        args.brokers
            .iter()
            .map(|b| Kind::parse(b))
            .collect::<anyhow::Result<_>>()?
    };
    let mut brokers = Vec::new();
    for kind in wanted {
        let explicit = match kind {
            Kind::Herald => args.herald_bin.as_deref(),
            Kind::Mosquitto => args.mosquitto_bin.as_deref(),
            Kind::Nats => args.nats_bin.as_deref(),
            Kind::Rumqttd => args.rumqttd_bin.as_deref(),
        };
        match kind.locate(explicit) {
            Some(binary) => {
                let version = brokers::version(kind, &binary).await;
                eprintln!("{}: {} ({version})", kind.name(), binary.display());
                for (label, setup) in variants(kind, &args.set) {
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
    let table = summarise(&items, &brokers, &results);
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
    let json_path = args.out.join("compare.json");
    std::fs::write(&json_path, serde_json::to_string_pretty(&comparison)?)?;
    let md = markdown(&comparison);
    let md_path = args.out.join("compare.md");
    std::fs::write(&md_path, &md)?;
    print!("{md}");
    eprintln!("wrote {} and {}", md_path.display(), json_path.display());
    Ok(())
}

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
            sources: Vec::new(),
            procs: args.procs.max(1),
            mqtt_level: item.mqtt_level(),
            keep_alive: 60,
            timeout: Duration::from_secs(10),
            broker_pid: Some(running.pid),
            quiet: false,
            transport: TransportSpec::tcp(),
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

fn summarise(items: &[Item], brokers: &[BrokerInfo], results: &[ResultEntry]) -> Vec<Row> {
    let mut rows = Vec::new();
    for item in items {
        let label = item.label();
        // The metrics this scenario reports, in order, from the first successful report.
        let Some(template) = results
            .iter()
            .find(|r| r.scenario == label && r.error.is_none())
        else {
            continue;
        };
        for f in figures(&template.report, item) {
            let mut cells = Vec::new();
            for b in brokers {
                let values: Vec<f64> = results
                    .iter()
                    .filter(|r| r.scenario == label && r.broker == b.label)
                    .flat_map(|r| figures(&r.report, item))
                    .filter(|g| g.metric == f.metric)
                    .map(|g| g.value)
                    .collect();
                if values.is_empty() {
                    continue;
                }
                let mean = values.iter().sum::<f64>() / values.len() as f64;
                let (lo, hi) = values
                    .iter()
                    .fold((f64::MAX, f64::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)));
                let spread = if mean != 0.0 {
                    (hi - lo) / mean.abs()
                } else {
                    0.0
                };
                cells.push(Cell {
                    broker: b.label.clone(),
                    mean,
                    spread,
                    ratio_to_best: None,
                });
            }
            let best = if f.higher_is_better {
                cells.iter().map(|c| c.mean).fold(f64::MIN, f64::max)
            } else {
                cells.iter().map(|c| c.mean).fold(f64::MAX, f64::min)
            };
            for c in &mut cells {
                c.ratio_to_best = (best != 0.0).then(|| c.mean / best);
            }
            rows.push(Row {
                scenario: label.clone(),
                metric: f.metric,
                cells,
            });
        }
    }
    rows
}

fn markdown(c: &Comparison) -> String {
    let mut s = String::new();
    let names: Vec<&str> = c.brokers.iter().map(|b| b.label.as_str()).collect();
    let _ = writeln!(
        s,
        "# herald-bench compare ({} set, {} run{}, {} cores, kernel {})\n",
        c.set,
        c.runs,
        if c.runs == 1 { "" } else { "s" },
        c.cores,
        c.kernel
    );
    for b in &c.brokers {
        let _ = writeln!(
            s,
            "- **{}**: {} (`{}`): `{}`",
            b.label,
            b.version,
            b.binary.display(),
            b.config.lines().collect::<Vec<_>>().join("; ")
        );
    }
    let _ = writeln!(
        s,
        "\nEach cell: mean over runs, (spread between runs), [ratio to the best broker].\n"
    );
    let _ = writeln!(s, "| scenario | metric | {} |", names.join(" | "));
    let _ = writeln!(s, "|---|---|{}", "---|".repeat(names.len()));
    for row in &c.table {
        let mut cells = Vec::new();
        for name in &names {
            match row.cells.iter().find(|cell| cell.broker == *name) {
                Some(cell) => {
                    let spread = if c.runs > 1 {
                        format!(" (spread {:.0}%)", cell.spread * 100.0)
                    } else {
                        String::new()
                    };
                    let ratio = cell
                        .ratio_to_best
                        .map_or("-".into(), |r| format!("{r:.2}x"));
                    cells.push(format!("{}{spread} [{ratio}]", number(cell.mean)));
                }
                // No figure: the run failed, or it has no such figure (a subscriber that was
                // never cut off has no time for it).
                None => {
                    let failed = c.results.iter().any(|r| {
                        r.scenario == row.scenario && r.broker == *name && r.error.is_some()
                    });
                    cells.push(if failed { "failed" } else { "-" }.into());
                }
            }
        }
        let _ = writeln!(
            s,
            "| {} | {} | {} |",
            row.scenario,
            row.metric,
            cells.join(" | ")
        );
    }
    let failures: Vec<&ResultEntry> = c.results.iter().filter(|r| r.error.is_some()).collect();
    if !failures.is_empty() {
        let _ = writeln!(s, "\nFailed runs:\n");
        for f in failures {
            let _ = writeln!(
                s,
                "- {} on {} (run {}): {}",
                f.scenario,
                f.broker,
                f.run + 1,
                f.error.as_deref().unwrap_or("")
            );
        }
    }
    s
}

/// A figure rounded for a table: whole above 100, two decimals above 1, else four.
pub(crate) fn number(v: f64) -> String {
    if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.4}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_figure_is_a_dash_and_a_failed_run_says_so() {
        let items = vec![stalled_fanout(0)];
        let label = items[0].label();
        let broker = |name: &str| BrokerInfo {
            label: name.into(),
            kind: Kind::Herald,
            setup: Setup::default(),
            binary: PathBuf::new(),
            version: String::new(),
            config: String::new(),
        };
        let report = |cut_off: Option<f64>| {
            serde_json::json!({"summary": {
                "p99_alone_ms": 1.0,
                "p99_with_stalled_ms": 2.0,
                "p99_ratio": 2.0,
                "stalled_disconnected": cut_off.is_some(),
                "stalled_disconnect_seen_after_s": cut_off,
            }})
        };
        let entry = |broker: &str, report, error: Option<&str>| ResultEntry {
            scenario: label.clone(),
            broker: broker.into(),
            run: 0,
            report,
            error: error.map(Into::into),
        };
        let results = vec![
            entry("a", report(Some(34.81)), None),
            entry("b", report(None), None),
            entry("c", serde_json::Value::Null, Some("did not start")),
        ];
        let brokers = vec![broker("a"), broker("b"), broker("c")];
        let table = summarise(&items, &brokers, &results);
        let comparison = Comparison {
            started_unix: 0,
            cores: 2,
            kernel: String::new(),
            set: "flow".into(),
            scenarios: items,
            runs: 1,
            brokers,
            results,
            table,
        };
        let md = markdown(&comparison);
        assert!(
            md.contains("| stalled cut off after s | 34.81 [1.00x] | - | failed |"),
            "{md}"
        );
        assert!(
            md.contains("| stalled disconnected (1 = yes) | 1.00 [-] | 0.0000 [-] | failed |"),
            "{md}"
        );
    }
}
