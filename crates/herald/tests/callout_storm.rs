//! A reconnect storm against the HTTP auth callout, end to end: the `herald` binary in its
//! own process (so that this process can hold the clients' 10,000 sockets within the
//! 20,000 open files one process may have), a real HTTP server deciding, and 10,000
//! CONNECTs of one user at once. The backend is asked once: concurrent look-ups of one
//! key wait for the one in flight, and the answer (`Cache-Control: max-age=60`) serves
//! the rest.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::Raw;
use mqtt_codec::ProtocolVersion::V5;
use mqtt_codec::{Connect, Packet, ReasonCode};
use serde_json::json;

const CLIENTS: usize = 10_000;

/// Kills the server when the test ends, passing or not.
struct Herald(Child);

impl Drop for Herald {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_connects_of_one_user_cost_the_backend_one_call() {
    use axum::routing::post;
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let app = axum::Router::new().route(
        "/auth",
        post(move |body: String| {
            let calls = counted.clone();
            async move {
                calls.fetch_add(1, Ordering::SeqCst);
                // Slow, as a loaded backend is: the storm's look-ups overlap it.
                tokio::time::sleep(Duration::from_millis(500)).await;
                let req: serde_json::Value = serde_json::from_str(&body).unwrap();
                let answer = if req["username"] == "fleet" && req["password"] == "open sesame" {
                    json!({"result": "allow", "tenant": "storm"})
                } else {
                    json!({"result": "deny"})
                };
                (
                    [(axum::http::header::CACHE_CONTROL, "max-age=60")],
                    axum::Json(answer),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/auth", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let mut child = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args([
            "serve",
            "--log-level",
            "info",
            "--mqtt-listen",
            "127.0.0.1:0",
        ])
        .env("HERALD_STORE_IN_MEMORY", "true")
        .env("HERALD_LISTENERS_WS", "")
        .env("HERALD_HTTP_LISTEN", "")
        .env("HERALD_AUTH_CALLOUT_URL", &url)
        .env("HERALD_AUTH_CALLOUT_TIMEOUT_MS", "30000")
        .env("HERALD_LIMITS_CONNECT_TIMEOUT_SECS", "120")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("herald starts");
    let stdout = child.stdout.take().expect("piped");
    let herald = Herald(child);
    let addr = common::listen_addr(stdout, |_| ());

    // Every client connects and sends its CONNECT as soon as its socket is open; a bounded
    // number of TCP handshakes at a time, so the listen backlog does not drop SYNs.
    let handshakes = Arc::new(tokio::sync::Semaphore::new(1000));
    let mut storm = tokio::task::JoinSet::new();
    for i in 0..CLIENTS {
        let handshakes = handshakes.clone();
        storm.spawn(async move {
            let permit = handshakes.acquire_owned().await.unwrap();
            let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            drop(permit);
            let mut raw = Raw::from_stream(stream, V5);
            let mut c = Connect::new(V5, format!("dev-{i}").as_str(), 0);
            c.username = Some("fleet".into());
            c.password = Some(b"open sesame".to_vec().into());
            raw.send(Packet::Connect(Box::new(c))).await;
            match raw.try_recv(Duration::from_secs(90)).await {
                Some(Packet::ConnAck(ack)) => (raw, ack.reason_code),
                other => panic!("dev-{i}: {other:?}"),
            }
        });
    }
    let mut clients = Vec::with_capacity(CLIENTS);
    while let Some(done) = storm.join_next().await {
        let (raw, code) = done.unwrap();
        assert_eq!(code, ReasonCode::Success);
        clients.push(raw);
    }
    assert_eq!(clients.len(), CLIENTS);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "one request to the backend for {CLIENTS} CONNECTs of one user"
    );
    // A wrong password is a different key: asked, and refused (a deny: 0x87).
    let mut bad = Connect::new(V5, "intruder", 0);
    bad.username = Some("fleet".into());
    bad.password = Some(b"guess".to_vec().into());
    let (_, ack) = Raw::connect_with(addr, bad).await;
    assert_eq!(ack.reason_code, ReasonCode::NotAuthorized);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    drop(clients);
    drop(herald);
}
