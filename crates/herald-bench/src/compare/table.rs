//! From reports to the table: the figures each scenario's report gives, their mean, spread
//! and ratio to the best broker, and the markdown that shows them.

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use super::{BrokerInfo, Comparison, Item, ResultEntry};

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

/// Where a figure is in a scenario's report: its name in the table, the keys that lead to
/// it, and whether bigger is better.
type Source = (&'static str, &'static [&'static str], bool);

/// Bigger is better.
const HIGHER: bool = true;
/// Smaller is better.
const LOWER: bool = false;

/// The figures of a `conns` run (a table).
const CONNS: &[Source] = &[
    ("connected", &["connected"], HIGHER),
    ("alive after hold", &["alive_after_hold"], HIGHER),
    ("connects/s", &["connect_rate_per_s"], HIGHER),
    ("broker bytes/conn", &["broker_bytes_per_conn"], LOWER),
    ("connect p99 ms", &["connect_latency", "p99_ms"], LOWER),
];

/// The figures of a `fanin-flood` run (a table).
const FANIN_FLOOD: &[Source] = &[
    ("published/s", &["published_per_s"], HIGHER),
    ("received/s", &["received_per_s"], HIGHER),
    ("acked, not delivered", &["acked_not_delivered"], LOWER),
    ("PUBACK 0x97", &["acks", "quota_exceeded"], LOWER),
    ("unacknowledged", &["unacknowledged"], LOWER),
    ("latency p50 ms", &["latency", "p50_ms"], LOWER),
    ("latency p99 ms", &["latency", "p99_ms"], LOWER),
    (
        "broker CPU s/M msgs",
        &["cpu", "broker_cpu_s_per_million"],
        LOWER,
    ),
];

/// The figures of a `stalled` run, from its summary of the two rounds (a table).
const STALLED: &[Source] = &[
    ("fast p99 ms, alone", &["summary", "p99_alone_ms"], LOWER),
    (
        "fast p99 ms, with stalled",
        &["summary", "p99_with_stalled_ms"],
        LOWER,
    ),
    ("fast p99 with/alone", &["summary", "p99_ratio"], LOWER),
    (
        "fast delivered/s, with stalled",
        &["summary", "delivered_per_s_with_stalled"],
        HIGHER,
    ),
    (
        "fast delivery ratio, with stalled",
        &["summary", "delivery_ratio_with_stalled"],
        HIGHER,
    ),
    (
        "stalled disconnected (1 = yes)",
        &["summary", "stalled_disconnected"],
        LOWER,
    ),
    (
        "stalled cut off after s",
        &["summary", "stalled_disconnect_seen_after_s"],
        LOWER,
    ),
];

/// The figures of a fanout, fanin or p2p run (a table).
const TRAFFIC: &[Source] = &[
    ("delivered/s", &["delivered_per_s"], HIGHER),
    ("delivery ratio", &["delivery_ratio"], HIGHER),
    ("latency p50 ms", &["latency", "p50_ms"], LOWER),
    ("latency p99 ms", &["latency", "p99_ms"], LOWER),
    (
        "broker CPU s/M msgs",
        &["cpu", "broker_cpu_s_per_million"],
        LOWER,
    ),
    (
        "herald-bench CPU s/M msgs",
        &["cpu", "tool_cpu_s_per_million"],
        LOWER,
    ),
];

/// The figures of `item` that `report` has, in table order: numbers as they are, a yes or
/// no as 1 or 0.
fn figures(report: &serde_json::Value, item: &Item) -> Vec<Figure> {
    let sources = match item {
        Item::Conns(_) => CONNS,
        Item::FaninFlood { .. } => FANIN_FLOOD,
        Item::Stalled(_) => STALLED,
        Item::Traffic(_) => TRAFFIC,
    };
    sources
        .iter()
        .filter_map(|&(metric, keys, higher_is_better)| {
            let found = keys.iter().try_fold(report, |v, k| v.get(k))?;
            let value = found.as_f64().or_else(|| found.as_bool().map(f64::from))?;
            Some(Figure {
                metric,
                value,
                higher_is_better,
            })
        })
        .collect()
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

/// One row per scenario and figure, with a cell per broker that has the figure.
pub(super) fn summarise(
    items: &[Item],
    brokers: &[BrokerInfo],
    results: &[ResultEntry],
) -> Vec<Row> {
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

/// compare.md: the brokers as run, the table, and the runs that failed.
pub(super) fn markdown(c: &Comparison) -> String {
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
        broker_line(&mut s, &b.label, &b.version, &b.binary, &b.config);
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

/// Appends the line that says how a broker was run: its name, version, executable and
/// configuration (its lines joined into one).
pub(super) fn broker_line(s: &mut String, name: &str, version: &str, binary: &Path, config: &str) {
    let _ = writeln!(
        s,
        "- **{name}**: {version} (`{}`): `{}`",
        binary.display(),
        config.lines().collect::<Vec<_>>().join("; ")
    );
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
    use std::path::PathBuf;

    use super::*;
    use crate::brokers::{Kind, Setup};
    use crate::compare::sets::stalled_fanout;

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
