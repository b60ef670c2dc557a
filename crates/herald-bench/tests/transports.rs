//! herald-bench over TLS, WebSocket and WebSocket over TLS, against real brokers started with
//! a self-signed certificate made at run time (the one `compare --set transports` uses):
//!
//! - mosquitto over tls, ws and wss (Debian's mosquitto 2.0.11 serves WebSocket next to a
//!   plain listener; alone, a WebSocket listener makes it exit with "Unable to start any
//!   listening sockets").
//! - herald over tls, ws and wss: the `herald` executable of this workspace, found next to
//!   `herald-bench` in the target directory (`cargo build -p herald`; `cargo test
//!   --workspace` builds it) or at `$BENCH_HERALD_BIN` (not `HERALD_...`: herald refuses
//!   unknown `HERALD_` variables). A missing one fails the test.
//!
//! Each run is a small `conns` (every connection must survive a ping after the hold) and a
//! short fan-out (every message must reach every subscriber), bounded by a timeout.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use herald_bench::brokers::{self, ExtraListeners, Kind, Running, Setup};
use herald_bench::transport::TransportKind;
use herald_bench::transport::tls::{self, CertFiles};
use serde_json::Value;

/// How long one transport's runs may take, broker start included.
const LIMIT: Duration = Duration::from_secs(90);

/// Runs herald-bench with `args` and returns its JSON report.
async fn bench(args: Vec<String>) -> Value {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_herald-bench"));
    cmd.args(&args).arg("--json").kill_on_drop(true);
    let out = cmd.output().await.expect("herald-bench runs");
    assert!(
        out.status.success(),
        "herald-bench {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("herald-bench prints JSON")
}

fn f(v: &Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} missing in {v}"))
}

async fn start(kind: Kind, bin: &Path, dir: &Path, cert: &CertFiles, websockets: bool) -> Running {
    let setup = Setup {
        extra: Some(ExtraListeners {
            cert: cert.clone(),
            websockets,
        }),
        ..Setup::default()
    };
    match brokers::start(kind, bin, dir, &setup).await {
        Ok(running) => running,
        Err(e) => panic!(
            "{} starts with TLS listeners: {e:#}\n{}",
            kind.name(),
            std::fs::read_to_string(dir.join("broker.log")).unwrap_or_default()
        ),
    }
}

/// 20 connections held and pinged, then 1 -> 10 fan-out at QoS 0 and QoS 1, over
/// `transport`, verifying the broker's certificate against `cert`.
async fn conns_and_fanout(broker: &Running, transport: TransportKind, cert: &CertFiles) {
    let addr = broker
        .addr_of(transport)
        .unwrap_or_else(|| panic!("no {} listener", transport.name()));
    let common = |scenario: &str| -> Vec<String> {
        [
            scenario,
            "--target",
            &addr.to_string(),
            "--broker-pid",
            &broker.pid.to_string(),
            "--transport",
            transport.name(),
            "--tls-ca",
            &cert.cert.display().to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let name = transport.name();
    let mut conns = common("conns");
    conns.extend(["--conns", "20", "--ramp", "200", "--hold", "1"].map(String::from));
    let r = bench(conns).await;
    assert_eq!(f(&r, "connected"), 20.0, "{name}: {r}");
    assert_eq!(f(&r, "alive_after_hold"), 20.0, "{name}: {r}");
    assert!(f(&r, "broker_bytes_per_conn").is_finite(), "{name}: {r}");

    for qos in ["0", "1"] {
        let mut fanout = common("fanout");
        fanout.extend(
            [
                "--subs",
                "10",
                "--rate",
                "200",
                "--duration",
                "1",
                "--drain",
                "5",
                "--qos",
                qos,
            ]
            .map(String::from),
        );
        let r = bench(fanout).await;
        assert_eq!(f(&r, "subs_connected"), 10.0, "{name} QoS {qos}: {r}");
        let published = f(&r, "published");
        assert!(
            published >= 150.0,
            "{name} QoS {qos}: published {published}"
        );
        assert_eq!(
            f(&r, "delivered"),
            published * 10.0,
            "{name} QoS {qos}: {r}"
        );
        assert_eq!(f(&r, "delivery_ratio"), 1.0, "{name} QoS {qos}: {r}");
    }
}

#[tokio::test]
async fn tls_ws_and_wss_against_mosquitto() {
    let bin = Kind::Mosquitto.locate(None).expect(
        "mosquitto is required by this test: apt-get install mosquitto (scripts/test does this)",
    );
    let dir = tempfile::tempdir().unwrap();
    let cert = tls::self_signed(&dir.path().join("cert")).unwrap();
    let broker = start(Kind::Mosquitto, &bin, dir.path(), &cert, true).await;
    for transport in [TransportKind::Tls, TransportKind::Ws, TransportKind::Wss] {
        tokio::time::timeout(LIMIT, conns_and_fanout(&broker, transport, &cert))
            .await
            .unwrap_or_else(|_| panic!("{} runs finish in time", transport.name()));
    }
    broker.stop().await;
}

/// This workspace's herald, which must have the TLS and WebSocket listeners.
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
    let help = Command::new(&bin)
        .args(["serve", "--help"])
        .output()
        .expect("herald runs");
    let help = String::from_utf8_lossy(&help.stdout);
    for flag in ["--tls-listen", "--ws-listen", "--wss-listen", "--tls-cert"] {
        assert!(
            help.contains(flag),
            "{} has no {flag}: rebuild it (cargo build -p herald)",
            bin.display()
        );
    }
    bin
}

#[tokio::test]
async fn tls_ws_and_wss_against_herald() {
    let bin = herald_binary();
    let dir = tempfile::tempdir().unwrap();
    let cert = tls::self_signed(&dir.path().join("cert")).unwrap();
    let broker = tokio::time::timeout(LIMIT, start(Kind::Herald, &bin, dir.path(), &cert, true))
        .await
        .expect("herald opens its tcp, tls, ws and wss listeners in time");
    for transport in [TransportKind::Tls, TransportKind::Ws, TransportKind::Wss] {
        tokio::time::timeout(LIMIT, conns_and_fanout(&broker, transport, &cert))
            .await
            .unwrap_or_else(|_| panic!("{} runs finish in time", transport.name()));
    }
    broker.stop().await;
}
