//! herald-bench against real brokers: mosquitto and nats-server, started on free loopback
//! ports, driven by the real `herald-bench` binary with `--json`.
//!
//! These brokers are required: `scripts/test` installs them (Debian packages `mosquitto` and
//! `nats-server`), and a missing one fails the test with the install command.

use std::path::Path;
use std::process::Command;

use herald_bench::brokers::{self, Kind, Running};
use serde_json::Value;

fn binary(kind: Kind) -> std::path::PathBuf {
    kind.locate(None).unwrap_or_else(|| {
        panic!(
            "{} is required by this test: apt-get install {} (scripts/test does this)",
            kind.name(),
            if kind == Kind::Nats {
                "nats-server"
            } else {
                kind.name()
            }
        )
    })
}

async fn start(kind: Kind, dir: &Path) -> Running {
    brokers::start(kind, &binary(kind), dir, &brokers::Setup::default())
        .await
        .expect("broker starts")
}

/// Runs herald-bench with `args` and returns its JSON report.
fn bench(args: &[String]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_herald-bench"))
        .args(args)
        .arg("--json")
        .output()
        .expect("herald-bench runs");
    assert!(
        out.status.success(),
        "herald-bench {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("herald-bench prints JSON")
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn f(v: &Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} missing in {v}"))
}

#[tokio::test]
async fn fanout_delivers_every_message_to_every_subscriber() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(Kind::Mosquitto, dir.path()).await;
    let (addr, pid) = (broker.addr.to_string(), broker.pid.to_string());
    let r = bench(&args(&[
        "fanout",
        "--target",
        &addr,
        "--broker-pid",
        &pid,
        "--subs",
        "20",
        "--rate",
        "500",
        "--duration",
        "2",
    ]));
    broker.stop().await;
    assert_eq!(f(&r, "subs_connected"), 20.0);
    let published = f(&r, "published");
    assert!(
        (950.0..=1001.0).contains(&published),
        "published {published} at 500/s for 2 s"
    );
    assert_eq!(f(&r, "expected"), published * 20.0);
    assert_eq!(f(&r, "delivered"), f(&r, "expected"));
    assert_eq!(f(&r, "delivery_ratio"), 1.0);
    assert_eq!(r["latency"]["count"].as_f64(), Some(f(&r, "delivered")));
    assert!(
        r["cpu"]["broker_cpu_seconds"].as_f64().is_some(),
        "broker CPU read from /proc"
    );
    assert!(f(&r["cpu"], "tool_cpu_seconds") > 0.0);
}

#[tokio::test]
async fn qos1_and_qos2_are_acknowledged_and_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(Kind::Mosquitto, dir.path()).await;
    let addr = broker.addr.to_string();
    let fanin = bench(&args(&[
        "fanin",
        "--target",
        &addr,
        "--pubs",
        "20",
        "--qos",
        "1",
        "--rate",
        "400",
        "--duration",
        "2",
    ]));
    let p2p = bench(&args(&[
        "p2p",
        "--target",
        &addr,
        "--pairs",
        "10",
        "--qos",
        "2",
        "--rate",
        "200",
        "--duration",
        "2",
        "--protocol",
        "5",
    ]));
    broker.stop().await;
    for r in [&fanin, &p2p] {
        assert!(f(r, "published") > 0.0);
        assert_eq!(
            f(r, "acked"),
            f(r, "published"),
            "every QoS 1/2 publication acknowledged"
        );
        assert_eq!(f(r, "delivery_ratio"), 1.0, "{r}");
    }
}

#[tokio::test]
async fn conns_spread_over_processes_and_source_addresses() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(Kind::Mosquitto, dir.path()).await;
    let (addr, pid) = (broker.addr.to_string(), broker.pid.to_string());
    let r = bench(&args(&[
        "conns",
        "--target",
        &addr,
        "--broker-pid",
        &pid,
        "--conns",
        "300",
        // Well below what mosquitto takes (its listen backlog is 100): the test is about the
        // spread over processes and addresses, not the connect rate.
        "--ramp",
        "300",
        "--hold",
        "1",
        "--procs",
        "2",
        "--source-ip",
        "127.0.0.2",
        "127.0.0.3",
    ]));
    broker.stop().await;
    assert_eq!(f(&r, "connected"), 300.0);
    assert_eq!(f(&r, "alive_after_hold"), 300.0);
    assert_eq!(r["procs"].as_u64(), Some(2));
    assert!(f(&r, "broker_bytes_per_conn") > 0.0, "{r}");
    assert_eq!(r["connect_latency"]["count"].as_u64(), Some(300));
}

#[tokio::test]
async fn refused_connections_are_counted_by_reason() {
    let port = brokers::free_port().unwrap();
    let r = bench(&args(&[
        "conns",
        "--target",
        &format!("127.0.0.1:{port}"),
        "--conns",
        "20",
        "--ramp",
        "1000",
        "--hold",
        "0",
    ]));
    assert_eq!(f(&r, "connected"), 0.0);
    assert_eq!(r["failures"]["refused"].as_u64(), Some(20), "{r}");
}

#[tokio::test]
async fn storm_brings_every_client_back_in_both_modes() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(Kind::Mosquitto, dir.path()).await;
    let addr = broker.addr.to_string();
    let r = bench(&args(&[
        "storm",
        "--target",
        &addr,
        "--clients",
        "100",
        "--max",
        "20",
        "--jitter-ms",
        "300",
    ]));
    broker.stop().await;
    let rounds = r["rounds"].as_array().expect("rounds");
    assert_eq!(rounds.len(), 2);
    assert_eq!(rounds[0]["mode"], "immediate");
    assert_eq!(rounds[1]["mode"], "jittered_backoff");
    for round in rounds {
        assert_eq!(round["back"].as_u64(), Some(100), "{round}");
        assert!(round["attempts"].as_u64().unwrap() >= 100);
        assert!(f(round, "time_to_all_back_s") > 0.0);
    }
    // With a 300 ms first-reconnect spread, the median client waits a good part of it.
    assert!(f(&rounds[1]["reconnect"], "p50_ms") > 50.0, "{}", rounds[1]);
}

#[tokio::test]
async fn compare_runs_mosquitto_and_nats_side_by_side() {
    let out = tempfile::tempdir().unwrap();
    let status = Command::new(env!("CARGO_BIN_EXE_herald-bench"))
        .args([
            "compare",
            "--set",
            "smoke",
            "--brokers",
            "mosquitto,nats",
            "--out",
        ])
        .arg(out.path())
        .args(["--mosquitto-bin"])
        .arg(binary(Kind::Mosquitto))
        .args(["--nats-bin"])
        .arg(binary(Kind::Nats))
        .output()
        .expect("herald-bench compare runs");
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let json: Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("compare.json")).unwrap())
            .unwrap();
    let results = json["results"].as_array().unwrap();
    assert_eq!(results.len(), 8, "4 scenarios x 2 brokers");
    for r in results {
        assert!(r["error"].is_null(), "{r}");
    }
    assert!(
        json["brokers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|b| b["version"] != "unknown")
    );
    let md = std::fs::read_to_string(out.path().join("compare.md")).unwrap();
    assert!(
        md.contains("| scenario | metric | mosquitto | nats |"),
        "{md}"
    );
    assert!(
        md.contains("fanout 1->10 QoS0 500 msg/s | delivery ratio | 1.00 [1.00x] | 1.00 [1.00x]"),
        "{md}"
    );
}
