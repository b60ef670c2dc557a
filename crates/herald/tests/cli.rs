//! The `herald` binary as a user runs it: `herald config generate`, configuration errors that
//! name the key, and `herald serve` stopping on SIGTERM (v5 clients told 0x8B, exit 0).

mod common;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::Raw;
use mqtt_codec::{Disconnect, Packet, ProtocolVersion::V5, ReasonCode};

/// The binary, keeping its state in memory (tests/durability.rs runs it on a store).
fn herald() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_herald"));
    c.env("HERALD_STORE_IN_MEMORY", "true");
    // No WebSocket listener on the default port, which tests running at once would share.
    c.env("HERALD_LISTENERS_WS", "");
    c.env("HERALD_HTTP_LISTEN", "");
    c
}

#[test]
fn config_generate_prints_a_file_that_serve_accepts() {
    let out = herald().args(["config", "generate"]).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("[limits]") && text.contains("max_connections ="),
        "{text}"
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("herald.toml");
    // The generated file with one change: a bad value must be reported by its key.
    std::fs::write(
        &file,
        text.replace("max_packet_size = 1048576", "max_packet_size = 3"),
    )
    .unwrap();
    let out = herald()
        .args(["serve", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("limits.max_packet_size"), "{err}");
}

#[test]
fn bad_environment_and_public_address_are_refused_with_the_key() {
    let out = herald()
        .args(["serve"])
        .env("HERALD_LIMITS_MAX_CONNECTIONS", "many")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("limits.max_connections"));
    let out = herald()
        .args(["serve", "--mqtt-listen", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("listeners.mqtt") && err.contains("allow_anonymous_public"),
        "{err}"
    );
}

#[tokio::test]
async fn sigterm_disconnects_v5_clients_and_exits_zero() {
    let mut child = herald()
        .args([
            "serve",
            "--mqtt-listen",
            "127.0.0.1:0",
            "--log-level",
            "info",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The log says where it listens (port 0 lets the system choose).
    let addr = common::listen_addr(child.stdout.take().unwrap(), |_| ());
    let mut client = Raw::connect(addr, V5, "stays").await;
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let got = client.expect_closed().await;
    assert_eq!(
        got,
        vec![Packet::Disconnect(Disconnect::new(
            ReasonCode::ServerShuttingDown
        ))]
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let exit = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "herald did not exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(exit.code(), Some(0));
}

/// Starts the binary under `sh -c 'ulimit -n N; exec herald ...'` and returns it, the address
/// it listens on, and a flag raised when it logs a failed accept.
fn spawn_with_fd_limit(
    limit: u32,
) -> (
    std::process::Child,
    SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    let script = format!(
        "ulimit -n {limit} && HERALD_LISTENERS_WS= HERALD_HTTP_LISTEN= exec {} serve --mqtt-listen 127.0.0.1:0 --in-memory --log-level info",
        env!("CARGO_BIN_EXE_herald")
    );
    let mut child = Command::new("sh")
        .args(["-c", &script])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("herald starts under sh");
    let accept_failed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = accept_failed.clone();
    let addr = common::listen_addr(child.stdout.take().expect("piped stdout"), move |line| {
        if line.contains("accept failed") {
            flag.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    });
    (child, addr, accept_failed)
}

#[tokio::test]
async fn out_of_file_descriptors_the_accept_loop_backs_off_and_recovers() {
    let (mut child, addr, accept_failed) = spawn_with_fd_limit(200);
    // Twice the descriptors herald has: past ~190 accepts fail with EMFILE.
    let mut flood = Vec::new();
    for _ in 0..400 {
        if let Ok(Ok(s)) =
            tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr)).await
        {
            flood.push(s);
        }
    }
    // The flood did run herald out of descriptors: it logged the failed accepts.
    let seen = Instant::now() + Duration::from_secs(5);
    while !accept_failed.load(std::sync::atomic::Ordering::SeqCst) {
        assert!(
            Instant::now() < seen,
            "the flood never ran herald out of descriptors"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(flood);
    // Once the flood is gone (herald closes those connections at their CONNECT timeout or
    // when it sees them closed), a normal client is served again.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        // An attempt that fails (refused, closed) panics inside its own task: retried.
        let attempt = tokio::spawn(async move {
            let mut c = Raw::connect(addr, V5, "after-the-flood").await;
            c.send(Packet::PingReq).await;
            c.recv().await
        });
        if let Ok(Ok(Packet::PingResp)) =
            tokio::time::timeout(Duration::from_secs(3), attempt).await
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "herald did not recover from EMFILE"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        child.try_wait().unwrap().is_none(),
        "herald is still running"
    );
    let _ = child.kill();
    let _ = child.wait();
}

/// Reads the binary's JSON log lines into a channel.
fn json_lines(stdout: std::process::ChildStdout) -> std::sync::mpsc::Receiver<serde_json::Value> {
    use std::io::BufRead;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let value: serde_json::Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("a log line that is not JSON ({e}): {line}"));
            if tx.send(value).is_err() {
                return;
            }
        }
    });
    rx
}

fn next_where(
    rx: &std::sync::mpsc::Receiver<serde_json::Value>,
    what: &str,
    f: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(v) if f(&v) => return v,
            Ok(_) => {}
            Err(_) => panic!("no log line {what}"),
        }
    }
}

#[tokio::test]
async fn json_logs_and_a_log_level_changed_at_runtime() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut child = herald()
        .args([
            "serve",
            "--mqtt-listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
        ])
        .args(["--log-level", "info", "--log-format", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lines = json_lines(child.stdout.take().unwrap());
    let mqtt = next_where(&lines, "listening for MQTT", |v| v["listener"] == "mqtt");
    assert_eq!(mqtt["level"], "INFO");
    assert_eq!(mqtt["target"], "herald::server");
    let mqtt: SocketAddr = mqtt["addr"].as_str().unwrap().parse().unwrap();
    let http = next_where(&lines, "listening for HTTP", |v| {
        v["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("listening for HTTP"))
    });
    let http: SocketAddr = http["addr"].as_str().unwrap().parse().unwrap();
    let put = |level: &str| {
        let body = format!("{{\"level\": \"{level}\"}}");
        async move {
            let mut s = tokio::net::TcpStream::connect(http).await.unwrap();
            let req = format!(
                "PUT /api/v1/log HTTP/1.1\r\nHost: {http}\r\nConnection: close\r\n\
                 Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            s.write_all(req.as_bytes()).await.unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            out
        }
    };
    // At info, a client's close is not logged.
    Raw::connect(mqtt, V5, "quiet").await.disconnect().await;
    // A bad filter is refused with the field named; then debug is switched on.
    let refused = put("herald=nonsense[").await;
    assert!(
        refused.starts_with("HTTP/1.1 400") && refused.contains("\"field\":\"level\""),
        "{refused}"
    );
    let answer = put("debug").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    next_where(&lines, "log level changed", |v| {
        v["message"] == "log level changed"
    });
    Raw::connect(mqtt, V5, "loud").await.disconnect().await;
    let closed = next_where(&lines, "connection closed, at debug", |v| {
        v["message"] == "connection closed"
    });
    assert_eq!(closed["level"], "DEBUG");
    assert_eq!(closed["reason"], "client_disconnect");
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test]
async fn post_drain_lets_clients_go_and_exits_zero() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut child = herald()
        .args([
            "serve",
            "--mqtt-listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
        ])
        .args(["--log-format", "json"])
        .env("HERALD_DRAIN_PERIOD_SECS", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lines = json_lines(child.stdout.take().unwrap());
    let mqtt = next_where(&lines, "listening for MQTT", |v| v["listener"] == "mqtt");
    let mqtt: SocketAddr = mqtt["addr"].as_str().unwrap().parse().unwrap();
    let http = next_where(&lines, "listening for HTTP", |v| {
        v["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("listening for HTTP"))
    });
    let http: SocketAddr = http["addr"].as_str().unwrap().parse().unwrap();
    let mut client = Raw::connect(mqtt, V5, "drained").await;
    let mut s = tokio::net::TcpStream::connect(http).await.unwrap();
    let drain = format!(
        "POST /api/v1/drain HTTP/1.1\r\nHost: {http}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    );
    s.write_all(drain.as_bytes()).await.unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 202"), "{answer}");
    assert_eq!(
        client.expect_closed().await,
        vec![Packet::Disconnect(Disconnect::new(
            ReasonCode::ServerShuttingDown
        ))]
    );
    next_where(&lines, "draining: clients gone", |v| {
        v["message"] == "draining: clients gone"
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    let exit = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "herald did not exit after draining"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(exit.code(), Some(0));
}
