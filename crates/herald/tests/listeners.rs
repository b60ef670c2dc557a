//! The MQTT listeners as the system and the log see them: the listen backlog the kernel was
//! given (`listeners.backlog`), the warning for anonymous clients on a public address, and
//! TLS handshakes whose SNI is an IP address, which rustls would warn about one by one.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use herald::config::{Config, ListenerKind};

/// The backlog of the socket listening on `port`, as `ss` shows it (Send-Q of a listener).
fn backlog_of(port: u16) -> u32 {
    let out = Command::new("ss")
        .args(["-ltnH", "sport", "=", &format!(":{port}")])
        .output()
        .expect("ss runs (Debian package iproute2)");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .next()
        .unwrap_or_else(|| panic!("ss shows no listener on {port}"));
    line.split_whitespace().nth(2).unwrap().parse().unwrap()
}

/// The kernel's cap on a listen backlog.
fn somaxconn() -> u32 {
    std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_listener_gets_the_configured_backlog() {
    let mut c = common::config();
    c.listeners.ws = vec!["127.0.0.1:0".parse().unwrap()];
    c.listeners.backlog = 77;
    let s = common::start_with(c).await;
    for kind in [ListenerKind::Mqtt, ListenerKind::Ws] {
        for addr in s.server.addrs(kind) {
            assert_eq!(backlog_of(addr.port()), 77, "{kind:?} on {addr}");
        }
    }
    s.server.shutdown(Duration::from_secs(5)).await;

    // The default, 1024, unless the kernel caps it lower (tokio's own bind gives 128).
    let s = common::start().await;
    assert_eq!(backlog_of(s.addr.port()), 1024.min(somaxconn()));
    s.server.shutdown(Duration::from_secs(5)).await;
}

#[test]
fn the_backlog_is_validated_with_its_key() {
    let load = |value: &str| {
        Config::load(
            None,
            [("HERALD_LISTENERS_BACKLOG".to_string(), value.to_string())],
            &Default::default(),
        )
    };
    for bad in ["0", "65536"] {
        let e = load(bad).unwrap_err().to_string();
        assert!(e.starts_with("listeners.backlog:"), "{bad}: {e}");
    }
    let e = load("many").unwrap_err().to_string();
    assert!(e.contains("listeners.backlog"), "{e}");
    assert_eq!(load("4096").unwrap().listeners.backlog, 4096);
    assert_eq!(Config::default().listeners.backlog, 1024);
    assert!(herald::config::generate().contains("\nbacklog = 1024\n"));
}

/// A `herald serve` process, killed when dropped (a failed assertion included).
struct Herald(Child);

impl Drop for Herald {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `herald serve` with `args`, in memory, no WebSocket or HTTP listener; its log lines.
fn serve(args: &[&str], env: &[(&str, &str)]) -> (Herald, mpsc::Receiver<String>) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_herald"));
    cmd.arg("serve")
        .args(args)
        .env("HERALD_STORE_IN_MEMORY", "true")
        .env("HERALD_LISTENERS_WS", "")
        .env("HERALD_HTTP_LISTEN", "");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("herald starts");
    let (tx, lines) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    (Herald(child), lines)
}

/// The lines up to and including the first that contains `what` (panics after 10 s).
fn until(lines: &mpsc::Receiver<String>, what: &str) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => {
                let found = line.contains(what);
                seen.push(line);
                if found {
                    return seen;
                }
            }
            Err(_) => panic!(
                "herald did not log {what:?}; it logged:\n{}",
                seen.join("\n")
            ),
        }
    }
}

/// The lines logged within `d`.
fn within(lines: &mpsc::Receiver<String>, d: Duration) -> Vec<String> {
    let deadline = Instant::now() + d;
    let mut seen = Vec::new();
    while let Ok(line) = lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        seen.push(line);
    }
    seen
}

const PUBLIC_WARNING: &str = "anonymous clients accepted from the network";

#[test]
fn an_anonymous_public_listener_is_warned_about_at_start() {
    let (child, lines) = serve(
        &["--mqtt-listen", "0.0.0.0:0", "--mqtt-listen", "127.0.0.1:0"],
        &[("HERALD_LISTENERS_ALLOW_ANONYMOUS_PUBLIC", "true")],
    );
    let seen = until(&lines, PUBLIC_WARNING);
    let warning = seen.last().unwrap();
    assert!(warning.contains(" WARN "), "{warning}");
    assert!(
        warning.contains("addr=0.0.0.0:") && warning.contains("listener=\"mqtt\""),
        "{warning}"
    );
    // One warning: the loopback listener is not one.
    let rest = within(&lines, Duration::from_millis(500));
    assert!(!rest.iter().any(|l| l.contains(PUBLIC_WARNING)), "{rest:?}");
    drop(child);

    // Allowed but unused (loopback only): no warning.
    let (child, lines) = serve(
        &["--mqtt-listen", "127.0.0.1:0"],
        &[("HERALD_LISTENERS_ALLOW_ANONYMOUS_PUBLIC", "true")],
    );
    let mut seen = until(&lines, "listening");
    seen.extend(within(&lines, Duration::from_millis(500)));
    assert!(!seen.iter().any(|l| l.contains(PUBLIC_WARNING)), "{seen:?}");
    drop(child);
}

/// A TLS handshake with `openssl s_client`, sending `127.0.0.1` as SNI (rustls clients do not
/// send an IP address; OpenSSL and libmosquitto do); returns s_client's output.
fn handshake_with_ip_sni(tls: SocketAddr, ca: &std::path::Path) -> String {
    let out = Command::new("openssl")
        .args(["s_client", "-connect", &tls.to_string()])
        .args(["-servername", "127.0.0.1", "-CAfile"])
        .arg(ca)
        .stdin(Stdio::null())
        .output()
        .expect("openssl runs (Debian package openssl)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Starts herald with a TLS listener and the log filter `level`; its TLS address and lines.
fn serve_tls(pki: &common::pki::Pki, level: &str) -> (Herald, SocketAddr, mpsc::Receiver<String>) {
    let cert = pki.cert_file.to_str().unwrap();
    let key = pki.key_file.to_str().unwrap();
    let (child, lines) = serve(
        &[
            "--mqtt-listen",
            "127.0.0.1:0",
            "--tls-listen",
            "127.0.0.1:0",
            "--tls-cert",
            cert,
            "--tls-key",
            key,
            "--log-level",
            level,
        ],
        &[],
    );
    let listening = until(&lines, "listener=\"tls\"").pop().unwrap();
    let at = listening.find("addr=").unwrap() + 5;
    let tls = listening[at..]
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    (child, tls, lines)
}

#[test]
fn a_tls_handshake_with_an_ip_address_as_sni_logs_no_warning() {
    let pki = common::pki::Pki::new();
    let (child, tls, lines) = serve_tls(&pki, "debug");
    for _ in 0..3 {
        let out = handshake_with_ip_sni(tls, &pki.ca_file);
        assert!(out.contains("Verify return code: 0 (ok)"), "{out}");
    }
    // Herald saw the connections through (logged at debug), and warned about none.
    let mut seen = until(&lines, "connection closed");
    seen.extend(within(&lines, Duration::from_millis(500)));
    let warnings: Vec<&String> = seen
        .iter()
        .filter(|l| l.contains(" WARN ") || l.contains("Illegal SNI"))
        .collect();
    assert!(warnings.is_empty(), "{warnings:?}");
    drop(child);

    // The warning is rustls', and a filter that names rustls shows it: the handshakes above
    // did send an IP address.
    let (child, tls, lines) = serve_tls(&pki, "rustls=warn,info");
    handshake_with_ip_sni(tls, &pki.ca_file);
    let seen = until(&lines, "Illegal SNI extension: ignoring IP address");
    assert!(seen.last().unwrap().contains(" WARN "), "{seen:?}");
    drop(child);
}
