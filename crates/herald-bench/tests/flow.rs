//! The flow-control scenarios, `fanin-flood` and `stalled`, against this workspace's herald,
//! briefly and with small numbers: each run ends by itself within a bound, and its report
//! adds up. Nothing here asserts what the broker should do under overload (that is what the
//! scenarios measure), only that the figures are consistent with each other.
//!
//! herald is the `herald` executable next to `herald-bench` in the target directory
//! (`cargo build -p herald` with the same target directory; `cargo test --workspace` builds
//! it) or `$BENCH_HERALD_BIN`. A missing one fails the test.

use std::path::{Path, PathBuf};
use std::time::Duration;

use herald_bench::brokers::{self, Kind, Running, Setup};
use serde_json::Value;

/// Far more than a run below takes (a few seconds of traffic, drains of a few seconds).
const LIMIT: Duration = Duration::from_secs(120);

fn herald_binary() -> PathBuf {
    let bin = std::env::var_os("BENCH_HERALD_BIN").map_or_else(
        || Path::new(env!("CARGO_BIN_EXE_herald-bench")).with_file_name("herald"),
        PathBuf::from,
    );
    assert!(
        bin.is_file(),
        "herald is required by this test at {}: run `cargo build -p herald` with the same \
         target directory (cargo test --workspace builds it) or set BENCH_HERALD_BIN",
        bin.display()
    );
    bin
}

async fn herald(dir: &Path) -> Running {
    brokers::start(Kind::Herald, &herald_binary(), dir, &Setup::default())
        .await
        .expect("herald starts")
}

/// Runs herald-bench with `args` and `--json`, and returns its report; fails if it does not
/// end by itself within [`LIMIT`].
async fn bench(args: &[&str]) -> Value {
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_herald-bench"))
        .args(args)
        .arg("--json")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(LIMIT, run)
        .await
        .unwrap_or_else(|_| panic!("herald-bench {args:?} did not end within {LIMIT:?}"))
        .expect("herald-bench runs");
    assert!(
        out.status.success(),
        "herald-bench {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("herald-bench prints JSON")
}

fn u(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} missing or negative in {v}"))
}

#[tokio::test]
async fn fanin_flood_accounts_for_every_message() {
    let dir = tempfile::tempdir().unwrap();
    let broker = herald(dir.path()).await;
    let (addr, pid) = (broker.addr.to_string(), broker.pid.to_string());
    for protocol in ["3.1.1", "5"] {
        let r = bench(&[
            "fanin-flood",
            "--target",
            &addr,
            "--broker-pid",
            &pid,
            "--pubs",
            "40",
            "--duration",
            "2",
            "--idle",
            "1",
            "--max-drain",
            "10",
            "--protocol",
            protocol,
        ])
        .await;
        assert_eq!(u(&r, "pubs_connected"), 40, "{r}");
        assert_eq!(r["subscriber_connected"], true);
        let published = u(&r, "published");
        let acks = &r["acks"];
        let ok = u(acks, "success");
        let total = ok + u(acks, "quota_exceeded") + u(acks, "other");
        let by_code: u64 = acks["by_code"]
            .as_object()
            .unwrap()
            .values()
            .map(|n| n.as_u64().unwrap())
            .sum();
        assert!(published > 0, "{r}");
        assert_eq!(by_code, total, "{r}");
        assert!(total <= published, "{r}");
        assert_eq!(u(&r, "unacknowledged"), published - total);
        let received = u(&r, "received");
        assert!(received <= published, "{r}");
        // Acknowledged and received, counted from both sides.
        let (lost, extra) = (u(&r, "acked_not_delivered"), u(&r, "delivered_not_acked"));
        assert!(lost <= ok && extra <= received, "{r}");
        assert_eq!(ok - lost, received - extra, "{r}");
        assert_eq!(u(&r, "unrecognised"), 0);
        assert_eq!(
            u(&r["latency"], "count"),
            received + u(&r, "duplicates"),
            "every stamped delivery has a latency"
        );
        if protocol == "3.1.1" {
            assert_eq!(ok, total, "no reason codes before MQTT 5: {r}");
        }
        assert!(r["cpu"]["broker_cpu_seconds"].as_f64().is_some());
    }
    broker.stop().await;
}

#[tokio::test]
async fn stalled_rounds_end_by_themselves_and_add_up() {
    let dir = tempfile::tempdir().unwrap();
    let broker = herald(dir.path()).await;
    let addr = broker.addr.to_string();
    let both = bench(&[
        "stalled",
        "--target",
        &addr,
        "--subs",
        "20",
        "--rate",
        "200",
        "--payload",
        "256",
        "--duration",
        "2",
        "--drain",
        "2",
        "--protocol",
        "5",
    ])
    .await;
    let qos1 = bench(&[
        "stalled",
        "--target",
        &addr,
        "--subs",
        "20",
        "--rate",
        "200",
        "--duration",
        "2",
        "--drain",
        "2",
        "--qos",
        "1",
        "--no-baseline",
    ])
    .await;
    broker.stop().await;
    let rounds = both["rounds"].as_array().expect("rounds");
    assert_eq!(rounds.len(), 2, "{both}");
    assert_eq!(rounds[0]["with_stalled"], false);
    assert!(rounds[0]["stalled"].is_null());
    assert_eq!(rounds[1]["with_stalled"], true);
    let only = qos1["rounds"].as_array().expect("rounds");
    assert_eq!(only.len(), 1, "--no-baseline: {qos1}");
    for round in rounds.iter().chain(only) {
        assert_eq!(u(round, "subs_connected"), 20, "{round}");
        let published = u(round, "published");
        assert!(published > 0, "{round}");
        assert_eq!(u(round, "expected"), published * 20);
        assert!(u(round, "delivered") <= u(round, "expected"), "{round}");
        assert_eq!(u(&round["latency"], "count"), u(round, "delivered"));
        assert!(u(&round["acks"], "success") <= published);
    }
    for stalled in [&rounds[1]["stalled"], &only[0]["stalled"]] {
        assert_eq!(stalled["subscribed"], true, "{stalled}");
        // About four pings in 2 s, unless the broker let it go at once.
        assert!(u(stalled, "pings") > 0 || stalled["disconnected"] == true);
        let _ = u(stalled, "received_on_wake");
    }
    assert!(both["summary"]["p99_alone_ms"].as_f64().is_some());
    assert!(both["summary"]["p99_with_stalled_ms"].as_f64().is_some());
    assert!(qos1["summary"]["p99_alone_ms"].is_null());
}
