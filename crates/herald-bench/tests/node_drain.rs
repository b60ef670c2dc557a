//! `herald-bench node-drain` against this workspace's herald: 200 MQTT 5 clients on node A
//! follow it to node B, once as A drains over 2 s (`POST /api/v1/drain`), once as A stops at
//! once (SIGINT). Every client must end up on B in both rounds, and draining must spread the
//! reconnects where the abrupt stop sends them all at once.
//!
//! herald is the `herald` executable next to `herald-bench` in the target directory
//! (`cargo build -p herald` with the same target directory; `cargo test --workspace` builds
//! it) or `$BENCH_HERALD_BIN` (not `HERALD_...`: herald refuses unknown `HERALD_` variables).
//! A missing one fails the test.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

const CLIENTS: u64 = 200;
const DRAIN_SECS: u64 = 2;
/// Two rounds of at most drain + 20 s each, plus starting the nodes and connecting.
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

fn u(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} missing in {v}"))
}

#[tokio::test]
async fn drained_clients_reconnect_without_a_spike() {
    let bin = herald_binary();
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_herald-bench"));
    cmd.arg("node-drain")
        .args(["--clients", &CLIENTS.to_string()])
        .args(["--drain-secs", &DRAIN_SECS.to_string()])
        .arg("--herald-bin")
        .arg(&bin)
        .arg("--dir")
        .arg(dir.path())
        .arg("--json")
        .kill_on_drop(true);
    let out = tokio::time::timeout(LIMIT, cmd.output())
        .await
        .expect("node-drain finishes in time")
        .expect("herald-bench runs");
    assert!(
        out.status.success(),
        "herald-bench node-drain failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&out.stdout).expect("herald-bench prints JSON");
    let rounds = r["rounds"].as_array().expect("rounds");
    assert_eq!(rounds.len(), 2, "{r}");
    let (drain, abrupt) = (&rounds[0], &rounds[1]);
    assert_eq!(drain["mode"], "drain");
    assert_eq!(abrupt["mode"], "abrupt");
    for round in rounds {
        let mode = &round["mode"];
        assert_eq!(u(round, "connected_to_a"), CLIENTS, "{mode}: {round}");
        assert_eq!(u(round, "back_on_b"), CLIENTS, "{mode}: {round}");
        assert!(round["time_to_all_back_s"].is_number(), "{mode}: {round}");
        assert_eq!(round["a_exit_code"], 0, "{mode}: A exits 0: {round}");
    }
    // A told every v5 client where to go: DISCONNECT 0x9C with B as Server Reference.
    assert_eq!(u(&drain["ends"], "disconnect_0x9c"), CLIENTS, "{drain}");
    assert_eq!(u(drain, "used_reference"), CLIENTS, "{drain}");
    // Spread over the drain period...
    let (peak_drain, peak_abrupt) = (u(drain, "peak_per_100ms"), u(abrupt, "peak_per_100ms"));
    eprintln!(
        "peak reconnects per 100 ms: drain {peak_drain}, abrupt {peak_abrupt} (of {CLIENTS}); \
         all back in {} s and {} s",
        drain["time_to_all_back_s"], abrupt["time_to_all_back_s"]
    );
    assert!(peak_drain < CLIENTS / 3, "drain peak {peak_drain}: {drain}");
    let all_back = drain["time_to_all_back_s"].as_f64().unwrap_or(0.0);
    assert!(
        all_back >= DRAIN_SECS as f64 / 2.0,
        "the drain took {all_back} s of {DRAIN_SECS}: {drain}"
    );
    // ...where an abrupt stop sends them all at once.
    assert!(
        peak_abrupt > CLIENTS / 2,
        "abrupt peak {peak_abrupt}: {abrupt}"
    );
}
