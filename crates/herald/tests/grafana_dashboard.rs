//! `dashboards/herald.json`: the Grafana dashboard queries only series a running Herald serves
//! on `/metrics`, takes `rate()` of counters and never of gauges, and every target has a query.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;

use common::Raw;
use mqtt_codec::ProtocolVersion::V5;
use mqtt_codec::QoS;
use serde_json::Value;

/// The functions that take a counter's range vector.
const RATE_FUNCTIONS: [&str; 3] = ["rate", "irate", "increase"];

fn dashboard() -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../dashboards/herald.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// Every panel, the ones nested in (collapsed) rows included.
fn panels(d: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().expect("the dashboard has panels") {
        out.push(p);
        if let Some(nested) = p["panels"].as_array() {
            out.extend(nested);
        }
    }
    out
}

/// The metric names (`herald_...`) in a PromQL expression, each with its byte offset.
fn metric_names(expr: &str) -> Vec<(usize, &str)> {
    let name_char = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_';
    let bytes = expr.as_bytes();
    expr.match_indices("herald_")
        .filter(|(at, _)| {
            *at == 0
                || !(bytes[at - 1].is_ascii_alphanumeric() || matches!(bytes[at - 1], b'_' | b':'))
        })
        .map(|(at, _)| {
            let len = bytes[at..].iter().take_while(|&&c| name_char(c)).count();
            (at, &expr[at..at + len])
        })
        .collect()
}

/// The name of the function whose parentheses most closely enclose byte `at` of `expr`: `""`
/// for a bare group such as the one after `sum by (le)`, `None` at the top level.
fn enclosing_function(expr: &str, at: usize) -> Option<&str> {
    let bytes = expr.as_bytes();
    let mut depth = 0usize;
    for i in (0..at).rev() {
        match bytes[i] {
            b')' => depth += 1,
            b'(' if depth > 0 => depth -= 1,
            b'(' => {
                let before = expr[..i].trim_end();
                let start = before
                    .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .map_or(0, |j| j + 1);
                return Some(&before[start..]);
            }
            _ => {}
        }
    }
    None
}

async fn scrape(addr: SocketAddr) -> String {
    let r = common::http::request(addr, "GET", "/metrics", &[], "").await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.body
}

/// What `/metrics` serves: the families with their TYPE, and the names of the series.
struct Scrape {
    families: HashMap<String, String>,
    series: BTreeSet<String>,
}

impl Scrape {
    fn parse(text: &str) -> Scrape {
        let mut families = HashMap::new();
        let mut series = BTreeSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                families.insert(name.to_string(), kind.to_string());
            } else if !line.starts_with('#') && !line.is_empty() {
                let key = line.rsplit_once(' ').unwrap().0;
                series.insert(key.split('{').next().unwrap().to_string());
            }
        }
        Scrape { families, series }
    }

    /// The histogram family `name` is a series of (`_bucket`, `_sum`, `_count`), if it is one.
    fn histogram_of<'a>(&self, name: &'a str) -> Option<&'a str> {
        ["_bucket", "_sum", "_count"].iter().find_map(|suffix| {
            name.strip_suffix(suffix)
                .filter(|f| self.families.get(*f).is_some_and(|k| k == "histogram"))
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_queries_only_metrics_herald_serves() {
    let d = dashboard();

    // The shape Grafana imports: a Prometheus datasource input and an instance variable.
    assert!(
        d["schemaVersion"].as_u64().is_some_and(|v| v >= 36),
        "schemaVersion {}",
        d["schemaVersion"]
    );
    assert!(
        d["__inputs"]
            .as_array()
            .is_some_and(|i| i.iter().any(|i| i["name"] == "DS_PROMETHEUS")),
        "no DS_PROMETHEUS input"
    );
    let variables = d["templating"]["list"].as_array().expect("templating.list");
    let instance = variables
        .iter()
        .find(|v| v["name"] == "instance")
        .expect("an instance variable");
    let definition = instance["definition"].as_str().unwrap_or_default();
    assert!(
        definition.contains("label_values(herald_sessions"),
        "instance variable: {definition}"
    );

    // Every target has a query; enough panels have targets to be a dashboard.
    let mut exprs = Vec::new();
    let mut with_targets = 0;
    for p in panels(&d) {
        let title = p["title"].as_str().unwrap_or("(untitled)");
        let Some(targets) = p["targets"].as_array().filter(|t| !t.is_empty()) else {
            continue;
        };
        with_targets += 1;
        for t in targets {
            let expr = t["expr"].as_str().unwrap_or_default().trim();
            assert!(
                !expr.is_empty(),
                "panel {title:?} has a target without expr: {t}"
            );
            assert!(
                !metric_names(expr).is_empty(),
                "panel {title:?} queries no herald_ metric: {expr}"
            );
            exprs.push((title.to_string(), expr.to_string()));
        }
    }
    assert!(with_targets >= 12, "{with_targets} panels with targets");

    // A Herald with the disk store (for the store_* families) and one client.
    let dir = tempfile::tempdir().unwrap();
    let mut c = common::config();
    c.http.listen = "127.0.0.1:0".into();
    c.store.in_memory = false;
    c.store.data_dir = dir.path().to_path_buf();
    c.store.min_free_disk_bytes = 0;
    let s = common::start_with(c).await;
    let http = s.server.http_addr().unwrap();
    let mut client = Raw::connect(s.addr, V5, "dashboard").await;
    client.subscribe("dash/#", QoS::AtMostOnce).await;
    client
        .publish("dash/x", b"hello", QoS::AtMostOnce, false)
        .await;
    client.recv_publish().await;
    common::ping(&mut client).await;

    let m = Scrape::parse(&scrape(http).await);
    assert!(m.series.len() >= 25, "{} series names", m.series.len());

    // Every name the dashboard queries is served, and used as its type allows.
    let mut referenced = BTreeSet::new();
    for (title, expr) in &exprs {
        for (at, name) in metric_names(expr) {
            referenced.insert(name.to_string());
            assert!(
                m.series.contains(name),
                "panel {title:?} queries {name}, which /metrics does not serve: {expr}"
            );
            let histogram = m.histogram_of(name);
            if name.ends_with("_bucket") {
                assert!(
                    histogram.is_some(),
                    "panel {title:?} queries {name}, but {} is not a histogram",
                    name.trim_end_matches("_bucket")
                );
            }
            if let Some(h) = histogram {
                for suffix in ["_bucket", "_sum", "_count"] {
                    let series = format!("{h}{suffix}");
                    assert!(m.series.contains(&series), "histogram {h} lacks {series}");
                }
            }
            let counter =
                histogram.is_some() || m.families.get(name).is_some_and(|k| k == "counter");
            let function = enclosing_function(expr, at).unwrap_or_default();
            if counter {
                assert!(
                    RATE_FUNCTIONS.contains(&function),
                    "panel {title:?}: counter {name} outside rate()/increase(): {expr}"
                );
            } else {
                assert!(
                    !RATE_FUNCTIONS.contains(&function),
                    "panel {title:?}: {function}() of gauge {name}: {expr}"
                );
            }
        }
    }
    // And the variable's query.
    for (_, name) in metric_names(definition) {
        assert!(m.series.contains(name), "instance variable queries {name}");
    }
    assert!(referenced.len() >= 20, "{} metric names", referenced.len());
}

#[test]
fn the_checks_see_names_and_functions() {
    let e = r#"histogram_quantile(0.99, sum by (le) (rate(herald_x_bucket{a="b"}[5m])))"#;
    let names = metric_names(e);
    assert_eq!(names.len(), 1);
    assert_eq!(names[0].1, "herald_x_bucket");
    assert_eq!(enclosing_function(e, names[0].0), Some("rate"));
    let e = "sum by (instance) (herald_g) / max(herald_h) + herald_i + not_herald_j";
    let names: Vec<_> = metric_names(e).into_iter().map(|(_, n)| n).collect();
    assert_eq!(names, ["herald_g", "herald_h", "herald_i"]);
    let at = |n: &str| e.find(n).unwrap();
    assert_eq!(enclosing_function(e, at("herald_g")), Some(""));
    assert_eq!(enclosing_function(e, at("herald_h")), Some("max"));
    assert_eq!(enclosing_function(e, at("herald_i")), None);
}
