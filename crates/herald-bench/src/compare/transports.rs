//! `compare --set transports`: herald and mosquitto, each with a TCP, TLS, WS and WSS
//! listener sharing one self-signed certificate made at run time, measured over each
//! transport: broker memory per idle connection (`conns`) and fan-out throughput (1 -> 100,
//! QoS 0 and QoS 1). The table gives each figure's ratio to the same broker over TCP, and
//! herald's ratio to mosquitto.
//!
//! Clients verify the certificate (it is their CA), so TLS costs a real handshake. A
//! mosquitto built without WebSocket support refuses to start with a WebSocket listener:
//! its ws and wss cells then say so, and its TCP and TLS ones are still measured. (Debian's
//! 2.0.11 has it, and serves WebSocket next to the plain listener this set always opens.)

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Serialize;

use super::sets::traffic;
use super::table::{broker_line, number};
use super::{CompareArgs, Item};
use crate::brokers::{self, ExtraListeners, Kind, Setup};
use crate::scenario::conns::ConnsSpec;
use crate::scenario::traffic::Pattern;
use crate::scenario::{RunOptions, conns};
use crate::transport::tls::{self, CertFiles};
use crate::transport::{TransportKind, TransportSpec};

/// Sockets one worker process holds at most in the idle-memory run: 20,000 open files per
/// process, with room to spare.
const CONNS_PER_PROC: usize = 9_000;

/// A broker of the comparison.
#[derive(Debug, Serialize)]
pub struct BrokerRun {
    /// Which broker.
    pub kind: Kind,
    /// Its executable.
    pub binary: PathBuf,
    /// What it says its version is.
    pub version: String,
    /// Whether it started with WebSocket listeners.
    pub websockets: bool,
    /// The configuration it was last started with.
    pub config: String,
}

/// One scenario over one transport against one broker.
#[derive(Debug, Serialize)]
pub struct Entry {
    /// The broker.
    pub broker: Kind,
    /// The transport.
    pub transport: TransportKind,
    /// The scenario's label.
    pub scenario: String,
    /// Its full report, or null.
    pub report: serde_json::Value,
    /// Why there is no report.
    pub error: Option<String>,
}

/// Everything the set measured, as written to transports.json.
#[derive(Debug, Serialize)]
pub struct TransportComparison {
    /// When it ran (Unix seconds).
    pub started_unix: u64,
    /// CPU cores visible to this process.
    pub cores: usize,
    /// The certificate every TLS listener served.
    pub cert: CertFiles,
    /// The scenarios.
    pub scenarios: Vec<Item>,
    /// The brokers.
    pub brokers: Vec<BrokerRun>,
    /// Every run.
    pub results: Vec<Entry>,
}

/// Runs the set.
pub async fn run(args: &CompareArgs) -> anyhow::Result<()> {
    if args.conns == 0 || args.duration <= 0.0 {
        bail!("--conns must be at least 1 and --duration above 0");
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let cert = tls::self_signed(&args.out.join("cert"))?;
    let items = vec![
        Item::Conns(ConnsSpec {
            conns: args.conns,
            ramp: 1000.0,
            hold_s: 5.0,
        }),
        traffic(Pattern::Fanout, 1, 100, 0, 0.0, args.duration),
        traffic(Pattern::Fanout, 1, 100, 1, 0.0, args.duration),
    ];
    let started_unix = crate::client::unix_nanos() / 1_000_000_000;
    let mut brokers_run = Vec::new();
    let mut results = Vec::new();
    for (kind, binary) in wanted(args)? {
        let version = brokers::version(kind, &binary).await;
        eprintln!("{}: {} ({version})", kind.name(), binary.display());
        let dir = args.out.join(kind.name());
        let websockets = probe_websockets(kind, &binary, &dir, &cert).await;
        let mut broker = BrokerRun {
            kind,
            binary,
            version,
            websockets,
            config: String::new(),
        };
        for transport in TransportKind::ALL {
            for item in &items {
                let entry = if transport.is_ws() && !websockets {
                    Entry {
                        broker: kind,
                        transport,
                        scenario: item.label(),
                        report: serde_json::Value::Null,
                        error: Some("no WebSocket support in this build".into()),
                    }
                } else {
                    run_one(args, &mut broker, &dir, &cert, transport, item).await
                };
                if let Some(e) = &entry.error {
                    eprintln!("  {} over {}: {e}", entry.scenario, transport.name());
                }
                results.push(entry);
            }
        }
        brokers_run.push(broker);
    }
    let comparison = TransportComparison {
        started_unix,
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        cert,
        scenarios: items,
        brokers: brokers_run,
        results,
    };
    let md = markdown(&comparison, args);
    super::write_results(&args.out, "transports", &comparison, &md)
}

/// herald and mosquitto (or those of `--brokers`), where installed.
fn wanted(args: &CompareArgs) -> anyhow::Result<Vec<(Kind, PathBuf)>> {
    let kinds = args.kinds(&[Kind::Herald, Kind::Mosquitto])?;
    let mut found = Vec::new();
    for kind in kinds {
        if matches!(kind, Kind::Nats | Kind::Rumqttd) {
            bail!("the transports set runs herald and mosquitto only");
        }
        match kind.locate(args.bin(kind)) {
            Some(binary) => found.push((kind, binary)),
            None if args.brokers.is_empty() => eprintln!("{}: not installed, skipped", kind.name()),
            None => bail!("{} is not installed", kind.name()),
        }
    }
    if found.is_empty() {
        bail!("no broker to compare: build herald or install mosquitto");
    }
    Ok(found)
}

/// Whether `kind` starts with WebSocket listeners. If it does not, but does without them,
/// its build lacks WebSocket support; if it starts neither way, the runs will say why.
async fn probe_websockets(kind: Kind, binary: &Path, dir: &Path, cert: &CertFiles) -> bool {
    let setup = |websockets| Setup {
        extra: Some(ExtraListeners {
            cert: cert.clone(),
            websockets,
        }),
        ..Setup::default()
    };
    if let Ok(running) = brokers::start(kind, binary, dir, &setup(true)).await {
        running.stop().await;
        return true;
    }
    match brokers::start(kind, binary, dir, &setup(false)).await {
        Ok(running) => {
            running.stop().await;
            eprintln!(
                "{}: does not start with a WebSocket listener (built without WebSocket \
                 support?): ws and wss skipped",
                kind.name()
            );
            false
        }
        Err(_) => true,
    }
}

async fn run_one(
    args: &CompareArgs,
    broker: &mut BrokerRun,
    dir: &Path,
    cert: &CertFiles,
    transport: TransportKind,
    item: &Item,
) -> Entry {
    let scenario = item.label();
    eprintln!(
        "{}: {scenario} over {}",
        broker.kind.name(),
        transport.name()
    );
    let outcome = async {
        let setup = Setup {
            extra: Some(ExtraListeners {
                cert: cert.clone(),
                websockets: broker.websockets,
            }),
            ..Setup::default()
        };
        let running = brokers::start(broker.kind, &broker.binary, dir, &setup).await?;
        broker.config = running.config.clone();
        let addr = running
            .addr_of(transport)
            .with_context(|| format!("no {} listener", transport.name()))?;
        let procs = match item {
            Item::Conns(c) => args.procs.max(c.conns.div_ceil(CONNS_PER_PROC)),
            _ => args.procs,
        };
        let opts = RunOptions {
            targets: vec![addr],
            pub_targets: Vec::new(),
            sources: Vec::new(),
            procs: procs.max(1),
            mqtt_level: 4,
            keep_alive: 60,
            timeout: Duration::from_secs(10),
            broker_pid: Some(running.pid),
            quiet: false,
            transport: TransportSpec {
                kind: transport,
                tls_ca: Some(cert.cert.clone()),
                ..TransportSpec::default()
            },
            login: Default::default(),
        };
        let report = match item {
            Item::Conns(spec) => serde_json::to_value(conns::run(&opts, spec.clone()).await?)?,
            Item::Traffic(spec) => {
                serde_json::to_value(crate::scenario::traffic::run(&opts, spec.clone()).await?)?
            }
            other => bail!("{} is not in the transports set", other.label()),
        };
        running.stop().await;
        Ok::<_, anyhow::Error>(report)
    }
    .await;
    let (report, error) = match outcome {
        Ok(report) => (report, None),
        Err(e) => (serde_json::Value::Null, Some(format!("{e:#}"))),
    };
    Entry {
        broker: broker.kind,
        transport,
        scenario,
        report,
        error,
    }
}

/// The table's columns: scenario index, JSON field, heading.
const COLUMNS: [(usize, &str, &str); 3] = [
    (0, "broker_bytes_per_conn", "broker bytes/conn"),
    (1, "delivered_per_s", "fan-out QoS 0 msg/s"),
    (2, "delivered_per_s", "fan-out QoS 1 msg/s"),
];

impl TransportComparison {
    /// The figure of column `column` for `broker` over `transport`, if that run has one.
    fn value(&self, broker: Kind, transport: TransportKind, column: usize) -> Option<f64> {
        let (item, field, _) = COLUMNS[column];
        let label = self.scenarios[item].label();
        self.results
            .iter()
            .find(|e| e.broker == broker && e.transport == transport && e.scenario == label)
            .and_then(|e| e.report.get(field))
            .and_then(serde_json::Value::as_f64)
    }
}

/// The columns' headings, as a markdown row's inside.
fn headings() -> String {
    let heads: Vec<&str> = COLUMNS.iter().map(|(_, _, h)| *h).collect();
    heads.join(" | ")
}

/// transports.md: how it was measured, the brokers as run, each figure per transport and
/// broker, herald against mosquitto when both ran, and what was not measured.
fn markdown(c: &TransportComparison, args: &CompareArgs) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# herald-bench compare: transports ({} cores)\n\n\
         Idle memory: `conns` with {} connections (CONNECT and a subscription each), broker RSS \
         growth per connection. Fan-out: 1 publisher -> 100 subscribers, 64-byte payloads, as \
         fast as possible for {} s. One fresh broker per run; TLS and WSS clients verify the \
         broker's self-signed ECDSA P-256 certificate; rustls negotiates the TLS version.\n",
        c.cores, args.conns, args.duration
    );
    for b in &c.brokers {
        broker_line(&mut s, b.kind.name(), &b.version, &b.binary, &b.config);
    }
    by_transport(&mut s, c);
    if c.brokers.iter().any(|b| b.kind == Kind::Herald)
        && c.brokers.iter().any(|b| b.kind == Kind::Mosquitto)
    {
        herald_over_mosquitto(&mut s, c);
    }
    let notes = notes(c);
    if !notes.is_empty() {
        let _ = writeln!(s, "\nNot measured or incomplete:\n");
        for n in notes {
            let _ = writeln!(s, "- {n}");
        }
    }
    s
}

/// The main table: a row per transport and broker, each figure with its ratio to the same
/// broker over TCP.
fn by_transport(s: &mut String, c: &TransportComparison) {
    let _ = writeln!(
        s,
        "\nEach cell: value [ratio to the same broker over tcp].\n\n| transport | broker | {} |\n|---|---|{}",
        headings(),
        "---|".repeat(COLUMNS.len())
    );
    for transport in TransportKind::ALL {
        for b in &c.brokers {
            let cells: Vec<String> = (0..COLUMNS.len())
                .map(|col| {
                    let Some(v) = c.value(b.kind, transport, col) else {
                        return "-".into();
                    };
                    let ratio = c
                        .value(b.kind, TransportKind::Tcp, col)
                        .filter(|tcp| *tcp != 0.0)
                        .map_or("-".into(), |tcp| format!("{:.2}x", v / tcp));
                    format!("{} [{ratio}]", number(v))
                })
                .collect();
            let _ = writeln!(
                s,
                "| {} | {} | {} |",
                transport.name(),
                b.kind.name(),
                cells.join(" | ")
            );
        }
    }
}

/// herald's figures over mosquitto's, per transport.
fn herald_over_mosquitto(s: &mut String, c: &TransportComparison) {
    let _ = writeln!(
        s,
        "\nherald / mosquitto (bytes/conn: below 1 is leaner; msg/s: above 1 is faster):\n\n\
         | transport | {} |\n|---|{}",
        headings(),
        "---|".repeat(COLUMNS.len())
    );
    for transport in TransportKind::ALL {
        let cells: Vec<String> = (0..COLUMNS.len())
            .map(|col| {
                match (
                    c.value(Kind::Herald, transport, col),
                    c.value(Kind::Mosquitto, transport, col),
                ) {
                    (Some(h), Some(m)) if m != 0.0 => format!("{:.2}x", h / m),
                    _ => "-".into(),
                }
            })
            .collect();
        let _ = writeln!(s, "| {} | {} |", transport.name(), cells.join(" | "));
    }
}

/// Runs that failed, and runs whose figure stands on less than everything: connections
/// that did not open or did not survive the hold, messages not delivered.
fn notes(c: &TransportComparison) -> Vec<String> {
    let mut out = Vec::new();
    for e in &c.results {
        let at = format!(
            "{} over {}, {}",
            e.broker.name(),
            e.transport.name(),
            e.scenario
        );
        if let Some(err) = &e.error {
            out.push(format!("{at}: {err}"));
            continue;
        }
        let get = |k: &str| e.report.get(k).and_then(serde_json::Value::as_f64);
        if let (Some(connected), Some(alive)) = (get("connected"), get("alive_after_hold")) {
            let wanted = e.report["spec"]["conns"].as_f64().unwrap_or(connected);
            if connected < wanted || alive < connected {
                out.push(format!(
                    "{at}: {connected} of {wanted} connected, {alive} alive after the hold"
                ));
            }
        }
        if let Some(ratio) = get("delivery_ratio")
            && ratio < 1.0
        {
            out.push(format!("{at}: delivery ratio {ratio:.4}"));
        }
    }
    out
}
