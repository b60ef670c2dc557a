//! MQTT.js talks to Herald over WebSocket, from Node and from headless Chromium, in the
//! clear (ws) and over TLS (wss); and its messages meet TCP and TLS clients' messages.
//!
//! The clients are tests/js/mqttjs.mjs and tests/js/browser.mjs (npm packages pinned in
//! tests/js/package-lock.json; scripts/test installs them, Node.js and Debian's chromium).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::Raw;
use common::pki::{Pki, client_config, tls_connect};
use herald::config::ListenerKind;
use mqtt_codec::ProtocolVersion::V5;
use mqtt_codec::QoS;

fn js_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/js");
    assert!(
        dir.join("node_modules/mqtt").is_dir() && dir.join("node_modules/playwright-core").is_dir(),
        "the JavaScript clients' packages are missing: run `npm ci --prefix {}` \
         (scripts/test does)",
        dir.display()
    );
    dir
}

fn node(script: &str, args: &[&str]) -> Command {
    let mut c = Command::new("node");
    c.current_dir(js_dir()).arg(script).args(args);
    c
}

/// Runs a client to its end; asserts it succeeded and returns its last line (JSON).
async fn run(script: &'static str, args: Vec<String>) -> serde_json::Value {
    let out = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        node(script, &args)
            .output()
            .unwrap_or_else(|e| panic!("node runs {script} (Node.js is needed): {e}"))
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{script} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.lines().last().expect("a result line")).unwrap()
}

fn herald_config(pki: &Pki) -> herald::config::Config {
    let mut c = common::config();
    c.listeners.ws = vec!["127.0.0.1:0".parse().unwrap()];
    c.listeners.wss = vec!["127.0.0.1:0".parse().unwrap()];
    c.listeners.tls = vec!["127.0.0.1:0".parse().unwrap()];
    c.tls.cert_file = pki.cert_file.clone();
    c.tls.key_file = pki.key_file.clone();
    c
}

fn url(s: &common::TestServer, kind: ListenerKind) -> String {
    let scheme = if kind == ListenerKind::Wss {
        "wss"
    } else {
        "ws"
    };
    format!(
        "{scheme}://localhost:{}/mqtt",
        s.server.addrs(kind)[0].port()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_js_in_node_over_ws_and_wss() {
    let pki = Pki::new();
    let s = common::start_with(herald_config(&pki)).await;
    let ca = pki.ca_file.display().to_string();
    for (kind, extra, version) in [
        (ListenerKind::Ws, vec![], "4"),
        (ListenerKind::Wss, vec!["--ca".to_string(), ca.clone()], "5"),
    ] {
        let mut args = vec![url(&s, kind), "--protocol-version".into(), version.into()];
        args.extend(extra);
        let result = run("mqttjs.mjs", args).await;
        assert_eq!(result["ok"], true, "{kind:?}: {result}");
        // QoS 0, 1 and 2, a 200 KiB payload, bursts, and the retained message.
        assert!(result["received"].as_u64().unwrap() >= 280, "{result}");
        assert_eq!(result["largeBytes"], 204_800, "{result}");
        assert_eq!(result["retained"], true, "{result}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_js_in_headless_chromium_over_ws_and_wss() {
    let pki = Pki::new();
    let s = common::start_with(herald_config(&pki)).await;
    for (kind, extra, version) in [
        (ListenerKind::Ws, vec![], "4"),
        (ListenerKind::Wss, vec!["--insecure".to_string()], "5"),
    ] {
        let mut args = vec![url(&s, kind), "--protocol-version".into(), version.into()];
        args.extend(extra);
        let result = run("browser.mjs", args).await;
        assert_eq!(result["ok"], true, "{kind:?}: {result}");
        assert!(
            result["userAgent"]
                .as_str()
                .unwrap()
                .contains("HeadlessChrome"),
            "{result}"
        );
        assert!(result["received"].as_u64().unwrap() >= 60, "{result}");
        assert_eq!(result["retained"], true, "{result}");
    }
}

/// Starts a subscribe-only client and waits until it is subscribed.
fn subscriber(
    script: &str,
    args: &[&str],
) -> (std::process::Child, BufReader<std::process::ChildStdout>) {
    let mut child = node(script, args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("node runs");
    let mut lines = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while line.trim() != "ready" {
        line.clear();
        assert!(
            lines.read_line(&mut line).unwrap() > 0,
            "{script} ended before subscribing"
        );
    }
    (child, lines)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_clients_meet_tcp_and_tls_clients() {
    let pki = Pki::new();
    let s = common::start_with(herald_config(&pki)).await;
    let ws = url(&s, ListenerKind::Ws);
    let wss = url(&s, ListenerKind::Wss);

    // Node over ws receives what a TCP client publishes.
    let (node_sub, mut node_lines) = tokio::task::spawn_blocking(move || {
        subscriber(
            "mqttjs.mjs",
            &[&ws, "--subscribe-only", "meet/node", "--expect", "1"],
        )
    })
    .await
    .unwrap();
    let mut tcp = Raw::connect(s.addr, V5, "tcp").await;
    tcp.publish(
        "meet/node",
        "from tcp ✓".as_bytes(),
        QoS::AtLeastOnce,
        false,
    )
    .await;
    let mut line = String::new();
    node_lines.read_line(&mut line).unwrap();
    let got: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(got["payload"], "from tcp ✓", "{line}");

    // Chromium over wss receives what a TLS client publishes.
    let (browser_sub, mut browser_lines) = tokio::task::spawn_blocking(move || {
        subscriber(
            "browser.mjs",
            &[
                &wss,
                "--insecure",
                "--subscribe-only",
                "meet/browser",
                "--expect",
                "1",
            ],
        )
    })
    .await
    .unwrap();
    let stream = tls_connect(
        s.server.addrs(ListenerKind::Tls)[0],
        client_config(&pki.ca_file, None, &[&rustls::version::TLS13]),
    )
    .await
    .unwrap();
    let mut tls = Raw::over(stream, V5).handshake("tls").await;
    tls.publish("meet/browser", b"from tls", QoS::AtLeastOnce, false)
        .await;
    let mut line = String::new();
    browser_lines.read_line(&mut line).unwrap();
    let got: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(got["payload"], "from tls", "{line}");

    // And a TCP client receives what MQTT.js publishes over wss.
    tcp.subscribe("meet/tcp", QoS::AtLeastOnce).await;
    let result = run(
        "mqttjs.mjs",
        vec![
            url(&s, ListenerKind::Wss),
            "--ca".into(),
            pki.ca_file.display().to_string(),
            "--publish-only".into(),
            "meet/tcp".into(),
            "from node".into(),
        ],
    )
    .await;
    assert_eq!(result["published"], 1);
    assert_eq!(&tcp.recv_publish().await.payload[..], b"from node");

    for mut child in [node_sub, browser_sub] {
        let status = tokio::task::spawn_blocking(move || {
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            loop {
                if let Some(status) = child.try_wait().unwrap() {
                    return status;
                }
                if std::time::Instant::now() > deadline {
                    let _ = child.kill();
                    panic!("a subscriber did not finish");
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
        .await
        .unwrap();
        assert!(status.success());
    }
}
