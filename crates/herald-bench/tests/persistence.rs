//! herald-bench's persistence scenarios against a real mosquitto with `persistence true`:
//! persistent traffic, fill and drain around a restart, and `crash` (which starts and kills
//! the broker itself). mosquitto is required, as in `against_brokers.rs`.

use std::process::Command;

use herald_bench::brokers::{self, Durability, Fsync, Kind, Setup};
use serde_json::Value;

fn mosquitto() -> std::path::PathBuf {
    Kind::Mosquitto.locate(None).unwrap_or_else(|| {
        panic!(
            "mosquitto is required by this test: apt-get install mosquitto (scripts/test does this)"
        )
    })
}

/// Runs herald-bench with `args` and returns its JSON report.
fn bench(args: &[&str]) -> Value {
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

fn u(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} missing in {v}"))
}

fn durable() -> Setup {
    Setup {
        durability: Durability::Store(Fsync::Batch),
        max_queued: 1_000_000,
        ..Setup::default()
    }
}

#[tokio::test]
async fn fill_survives_a_clean_restart_and_drains_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let bin = mosquitto();
    let mut setup = durable();
    let broker = brokers::start(Kind::Mosquitto, &bin, dir.path(), &setup)
        .await
        .unwrap();
    let addr = broker.addr.to_string();
    let fill = bench(&[
        "fill",
        "--target",
        &addr,
        "--count",
        "5000",
        "--client-id",
        "t-q",
        "--topic",
        "t/q",
    ]);
    assert_eq!(u(&fill, "acked"), 5000, "{fill}");
    // SIGTERM: mosquitto writes its store on a clean shutdown.
    let (_, clean) = broker.stop_within(std::time::Duration::from_secs(30)).await;
    assert!(clean);
    setup.port = Some(addr.rsplit(':').next().unwrap().parse().unwrap());
    let broker = brokers::start(Kind::Mosquitto, &bin, dir.path(), &setup)
        .await
        .unwrap();
    let drain = bench(&[
        "drain",
        "--target",
        &addr,
        "--client-id",
        "t-q",
        "--expect",
        "5000",
        "--idle",
        "5",
    ]);
    broker.stop().await;
    assert_eq!(drain["session_present"], true, "{drain}");
    assert_eq!(u(&drain, "unique"), 5000, "{drain}");
    assert_eq!(u(&drain, "missing"), 0);
    assert_eq!(u(&drain, "duplicates"), 0);
    assert_eq!(u(&drain, "out_of_order"), 0);
    assert_eq!(drain["idle_timeout"], false);
    assert!(
        drain["last_message_s"].as_f64().unwrap() >= drain["first_message_s"].as_f64().unwrap()
    );
}

#[tokio::test]
async fn restart_times_mosquitto_reloading_its_queue() {
    let dir = tempfile::tempdir().unwrap();
    let bin = mosquitto();
    let r = bench(&[
        "restart",
        "--broker",
        "mosquitto",
        "--bin",
        bin.to_str().unwrap(),
        "--dir",
        dir.path().to_str().unwrap(),
        "--count",
        "3000",
        "--idle",
        "5",
    ]);
    assert_eq!(u(&r["fill"], "acked"), 3000, "{r}");
    assert_eq!(r["clean_shutdown"], true);
    assert!(r["restart_s"].as_f64().unwrap() > 0.0);
    assert_eq!(u(&r["drain"], "unique"), 3000, "{r}");
}

#[tokio::test]
async fn persistent_subscribers_get_every_qos1_message() {
    let dir = tempfile::tempdir().unwrap();
    let broker = brokers::start(Kind::Mosquitto, &mosquitto(), dir.path(), &durable())
        .await
        .unwrap();
    let addr = broker.addr.to_string();
    let r = bench(&[
        "fanout",
        "--target",
        &addr,
        "--subs",
        "5",
        "--qos",
        "1",
        "--rate",
        "200",
        "--duration",
        "1",
        "--persistent",
        "--protocol",
        "5",
    ]);
    broker.stop().await;
    assert_eq!(r["spec"]["persistent"], true);
    assert_eq!(u(&r, "subs_connected"), 5);
    assert_eq!(r["delivery_ratio"].as_f64(), Some(1.0), "{r}");
}

#[tokio::test]
async fn crash_reports_what_mosquitto_kept_and_lost() {
    let dir = tempfile::tempdir().unwrap();
    let bin = mosquitto();
    let (bin, dir) = (bin.to_str().unwrap(), dir.path().to_str().unwrap());
    let common = [
        "crash",
        "--broker",
        "mosquitto",
        "--bin",
        bin,
        "--dir",
        dir,
        "--rate",
        "400",
        "--final-secs",
        "0.5",
        "--idle",
        "1",
    ];
    // Without a kill, the accounting must come out whole.
    let calm = bench(&[&common[..], &["--kills", "0"]].concat());
    assert_eq!(u(&calm, "acknowledged"), u(&calm, "published"), "{calm}");
    assert_eq!(u(&calm, "delivered"), u(&calm, "expected_deliveries"));
    assert_eq!(u(&calm, "acknowledged_but_lost"), 0);
    assert_eq!(calm["durable"], true);
    // With kills, mosquitto (autosave every 1800 s) may lose; the counts must still add up.
    let r = bench(&[&common[..], &["--kills", "2", "--seed", "3"]].concat());
    assert_eq!(r["kills"].as_array().unwrap().len(), 2);
    assert_eq!(r["kills"][0]["phase"], "publishing");
    assert_eq!(r["kills"][1]["phase"], "draining");
    assert_eq!(r["publishers"].as_array().unwrap().len(), 4);
    assert_eq!(r["subscribers"].as_array().unwrap().len(), 3);
    let acked = u(&r, "acknowledged");
    assert!(acked > 0 && acked <= u(&r, "published"), "{r}");
    assert_eq!(u(&r, "expected_deliveries"), acked * 3);
    assert!(u(&r, "acknowledged_but_lost") <= u(&r, "expected_deliveries"));
    assert_eq!(
        r["durable"].as_bool(),
        Some(
            u(&r, "acknowledged_but_lost") == 0
                && r["subscriptions_survived"] == true
                && r["retained_survived"] == true
                && u(&r, "qos2_duplicates") == 0
        )
    );
}
