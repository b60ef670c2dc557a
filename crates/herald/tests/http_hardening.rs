//! The HTTP API against what a web page, a DNS-rebinding page or a connection flood can do:
//! only JSON bodies, no foreign `Origin` or `Host` without API keys, the `Bearer` scheme in
//! any case, `/metrics` behind a key when asked, header and idle deadlines, and a bound on
//! HTTP connections that keeps descriptors for MQTT clients.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::http::{Reply, exchange};
use common::{QUIET, Raw};
use herald::config::Config;
use mqtt_codec::ProtocolVersion::V5;
use mqtt_codec::QoS;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const KEY: &str = "k-0123456789abcdef";

fn api_config() -> Config {
    let mut c = common::config();
    c.http.listen = "127.0.0.1:0".into();
    c
}

async fn start(c: Config) -> (common::TestServer, SocketAddr) {
    let s = common::start_with(c).await;
    let http = s.server.http_addr().expect("the API listens");
    (s, http)
}

/// One request with exactly the headers given (and `Connection: close`, `Content-Length`).
async fn send(
    http: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Reply {
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    exchange(http, req.as_bytes()).await
}

/// The error's code and the field (here: the header) it names.
fn refusal(r: &Reply) -> (u16, String, String) {
    let v = r.json();
    (
        r.status,
        v["error"]["code"].as_str().unwrap_or("").to_string(),
        v["error"]["field"].as_str().unwrap_or("").to_string(),
    )
}

/// Asserts that no drain was asked for (a request would have left a permit).
async fn still_running(s: &common::TestServer) {
    assert!(
        tokio::time::timeout(QUIET, s.server.drain_requested())
            .await
            .is_err(),
        "a drain was requested"
    );
    assert!(!s.server.broker().draining());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_a_web_page_could_send_are_refused_with_415() {
    let (s, http) = start(api_config()).await;
    let host = http.to_string();
    let mut sub = Raw::connect(s.addr, V5, "sub").await;
    sub.subscribe("t/#", QoS::AtMostOnce).await;
    let message = json!({"topic": "t/1", "payload": "x"}).to_string();

    // What <form> and fetch() send without a CORS preflight, to every mutating endpoint.
    for content_type in [
        "text/plain",
        "text/plain;charset=UTF-8",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
    ] {
        for (method, path, body) in [
            ("POST", "/api/v1/drain", ""),
            ("POST", "/api/v1/drain", "{}"),
            ("POST", "/api/v1/reload", ""),
            ("POST", "/api/v1/publish", message.as_str()),
            ("POST", "/api/v1/publish/batch", "[]"),
            ("PUT", "/api/v1/log", r#"{"level": "trace"}"#),
            ("DELETE", "/api/v1/clients/sub", ""),
            ("DELETE", "/api/v1/retained/t/1", ""),
        ] {
            let headers = [("Host", host.as_str()), ("Content-Type", content_type)];
            let r = send(http, method, path, &headers, body).await;
            assert_eq!(
                refusal(&r),
                (415, "unsupported_media_type".into(), "Content-Type".into()),
                "{method} {path} as {content_type}: {}",
                r.body
            );
        }
    }
    // A body without any Content-Type is refused too.
    let r = send(
        http,
        "POST",
        "/api/v1/publish",
        &[("Host", &host)],
        &message,
    )
    .await;
    assert_eq!(r.status, 415, "{}", r.body);
    still_running(&s).await;
    common::quiet_for(&mut sub, QUIET).await;

    // JSON in any case, with parameters, is served; so are bodyless requests without a
    // Content-Type (curl -X POST, curl -X DELETE) and GETs whatever they carry.
    let json_type = [
        ("Host", host.as_str()),
        ("Content-Type", "Application/JSON; charset=utf-8"),
    ];
    let r = send(http, "POST", "/api/v1/publish", &json_type, &message).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(sub.recv_publish().await.payload.as_ref(), b"x");
    let r = send(http, "POST", "/api/v1/reload", &[("Host", &host)], "").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = send(
        http,
        "DELETE",
        "/api/v1/clients/nobody",
        &[("Host", &host)],
        "",
    )
    .await;
    assert_eq!(r.json()["error"]["code"], "client_not_found", "{}", r.body);
    let plain_get = [("Host", host.as_str()), ("Content-Type", "text/plain")];
    let r = send(http, "GET", "/api/v1/stats", &plain_get, "").await;
    assert_eq!(r.status, 200, "{}", r.body);
    // An unknown path keeps its 404.
    let r = send(http, "POST", "/api/v1/nothing", &plain_get, "x").await;
    assert_eq!(r.json()["error"]["code"], "not_found", "{}", r.body);
    still_running(&s).await;
    s.server.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_keys_a_foreign_origin_is_refused_with_403() {
    let (s, http) = start(api_config()).await;
    let host = http.to_string();
    let mut sub = Raw::connect(s.addr, V5, "sub").await;
    sub.subscribe("t/#", QoS::AtMostOnce).await;
    let message = json!({"topic": "t/1", "payload": "x"}).to_string();

    // The reported attack: a page's text/plain POST that stopped Herald.
    let r = send(
        http,
        "POST",
        "/api/v1/drain",
        &[
            ("Host", "evil.example"),
            ("Origin", "http://evil.example"),
            ("Content-Type", "text/plain"),
        ],
        "",
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.body);
    for origin in [
        "https://evil.example",
        "http://localhost.evil.example:8080",
        "null",
    ] {
        for (method, path, body) in [
            ("POST", "/api/v1/drain", ""),
            ("POST", "/api/v1/publish", message.as_str()),
            ("GET", "/api/v1/stats", ""),
            ("GET", "/metrics", ""),
        ] {
            let headers = [
                ("Host", host.as_str()),
                ("Origin", origin),
                ("Content-Type", "application/json"),
            ];
            let r = send(http, method, path, &headers, body).await;
            assert_eq!(
                refusal(&r),
                (403, "forbidden".into(), "Origin".into()),
                "{method} {path} from {origin}: {}",
                r.body
            );
        }
    }
    still_running(&s).await;
    common::quiet_for(&mut sub, QUIET).await;

    // Pages of this host are served.
    for origin in [
        "http://localhost:3000",
        "http://127.0.0.1:8080",
        "https://[::1]",
    ] {
        let headers = [
            ("Host", host.as_str()),
            ("Origin", origin),
            ("Content-Type", "application/json"),
        ];
        let r = send(http, "POST", "/api/v1/publish", &headers, &message).await;
        assert_eq!(r.status, 200, "{origin}: {}", r.body);
    }
    assert_eq!(sub.recv_publish().await.payload.as_ref(), b"x");
    s.server.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_keys_a_host_that_is_not_loopback_is_refused_with_403() {
    let (s, http) = start(api_config()).await;
    // DNS rebinding: the page's own name, now resolving to 127.0.0.1, is in Host.
    for host in [
        "evil.example:8080",
        "evil.example",
        "10.1.2.3:8080",
        "herald",
    ] {
        for path in ["/api/v1/clients", "/api/v1/stats", "/metrics", "/healthz"] {
            let r = send(http, "GET", path, &[("Host", host)], "").await;
            assert_eq!(
                refusal(&r),
                (403, "forbidden".into(), "Host".into()),
                "GET {path} for Host {host}: {}",
                r.body
            );
        }
        let headers = [("Host", host), ("Content-Type", "application/json")];
        let r = send(http, "POST", "/api/v1/drain", &headers, "").await;
        assert_eq!(r.status, 403, "{}", r.body);
    }
    still_running(&s).await;
    let port = http.port();
    for host in [
        http.to_string(),
        format!("localhost:{port}"),
        "LocalHost".to_string(),
        format!("127.0.0.2:{port}"),
        format!("[::1]:{port}"),
    ] {
        let r = send(http, "GET", "/api/v1/clients", &[("Host", &host)], "").await;
        assert_eq!(r.status, 200, "Host {host}: {}", r.body);
    }
    // No Host at all (HTTP/1.0 clients; browsers always send one).
    let r = exchange(http, b"GET /healthz HTTP/1.0\r\n\r\n").await;
    assert_eq!(r.status, 200, "{}", r.body);
    s.server.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_key_origin_and_host_are_free_and_bodies_still_json() {
    let mut c = api_config();
    c.http.api_keys = vec![KEY.into()];
    let (s, http) = start(c).await;
    let bearer = format!("Bearer {KEY}");
    let foreign = [
        ("Host", "herald.example.com"),
        ("Origin", "https://console.example.com"),
        ("Authorization", bearer.as_str()),
    ];
    let r = send(http, "GET", "/api/v1/stats", &foreign, "").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let mut json_type = foreign.to_vec();
    json_type.push(("Content-Type", "application/json"));
    let body = json!({"topic": "t/1", "payload": "x"}).to_string();
    let r = send(http, "POST", "/api/v1/publish", &json_type, &body).await;
    assert_eq!(r.status, 200, "{}", r.body);
    // Without the key: 401, not 403.
    let r = send(http, "GET", "/api/v1/stats", &foreign[..2], "").await;
    assert_eq!(r.status, 401, "{}", r.body);
    // The key does not make text/plain acceptable.
    let mut plain = foreign.to_vec();
    plain.push(("Content-Type", "text/plain"));
    let r = send(http, "POST", "/api/v1/drain", &plain, "").await;
    assert_eq!(refusal(&r).0, 415, "{}", r.body);
    still_running(&s).await;
    s.server.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bearer_scheme_is_case_insensitive() {
    let mut c = api_config();
    c.http.api_keys = vec![KEY.into()];
    let (s, http) = start(c).await;
    let host = http.to_string();
    for (authorization, status) in [
        (format!("Bearer {KEY}"), 200),
        (format!("bearer {KEY}"), 200),
        (format!("BEARER {KEY}"), 200),
        (format!("bEaReR  {KEY} "), 200),
        (format!("Basic {KEY}"), 401),
        (format!("Bearer{KEY}"), 401),
        ("bearer k-0123456789abcdeX".to_string(), 401),
    ] {
        let headers = [("Host", host.as_str()), ("Authorization", &authorization)];
        let r = send(http, "GET", "/api/v1/stats", &headers, "").await;
        assert_eq!(r.status, status, "{authorization:?}: {}", r.body);
    }
    s.server.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_can_require_a_key() {
    // Off by default: Prometheus scrapes without one even when the API has keys.
    let mut c = api_config();
    c.http.api_keys = vec![KEY.into()];
    let (s, http) = start(c.clone()).await;
    let r = send(http, "GET", "/metrics", &[], "").await;
    assert_eq!(r.status, 200);
    s.server.shutdown(Duration::from_secs(5)).await;

    c.http.metrics_requires_key = true;
    let (s, http) = start(c.clone()).await;
    let r = send(http, "GET", "/metrics", &[], "").await;
    assert_eq!(
        refusal(&r),
        (401, "unauthorized".into(), "Authorization".into()),
        "{}",
        r.body
    );
    let bearer = format!("bearer {KEY}");
    let r = send(http, "GET", "/metrics", &[("Authorization", &bearer)], "").await;
    assert_eq!(r.status, 200);
    assert!(r.body.contains("herald_http_connections "), "{}", r.body);
    // Health stays open.
    assert_eq!(send(http, "GET", "/healthz", &[], "").await.status, 200);
    s.server.shutdown(Duration::from_secs(5)).await;

    // It needs keys to ask for.
    let e = Config::load(
        None,
        [(
            "HERALD_HTTP_METRICS_REQUIRES_KEY".to_string(),
            "true".to_string(),
        )],
        &Default::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.starts_with("http.metrics_requires_key:"), "{e}");
}

#[test]
fn http_bounds_are_validated_with_their_key() {
    for key in [
        "HERALD_HTTP_HEADER_TIMEOUT_SECS",
        "HERALD_HTTP_IDLE_TIMEOUT_SECS",
        "HERALD_HTTP_MAX_CONNECTIONS",
    ] {
        let e = Config::load(None, [(key.into(), "0".into())], &Default::default())
            .unwrap_err()
            .to_string();
        let dotted = key
            .strip_prefix("HERALD_HTTP_")
            .unwrap()
            .to_ascii_lowercase();
        assert!(e.starts_with(&format!("http.{dotted}:")), "{e}");
    }
    let c = Config::load(
        None,
        [
            ("HERALD_HTTP_HEADER_TIMEOUT_SECS".into(), "3".into()),
            ("HERALD_HTTP_MAX_CONNECTIONS".into(), "7".into()),
        ],
        &Default::default(),
    )
    .unwrap();
    assert_eq!((c.http.header_timeout_secs, c.http.max_connections), (3, 7));
    let d = Config::default().http;
    assert_eq!(
        (
            d.header_timeout_secs,
            d.idle_timeout_secs,
            d.max_connections
        ),
        (10, 60, 1024)
    );
    assert!(!d.metrics_requires_key);
}

/// Reads until the server closes the connection; panics if it does not within `within`.
async fn closed_within(s: &mut TcpStream, within: Duration) -> Vec<u8> {
    let mut got = Vec::new();
    tokio::time::timeout(within, async {
        let mut buf = [0u8; 1024];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the connection is still open after {within:?}"));
    got
}

/// A sample of `/metrics`.
async fn metric(http: SocketAddr, name: &str) -> f64 {
    let r = common::http::request(http, "GET", "/metrics", &[], "").await;
    r.body
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no sample {name}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_a_request_head_is_closed_at_the_header_timeout() {
    let mut c = api_config();
    c.http.header_timeout_secs = 1;
    let (s, http) = start(c).await;
    // Connected, nothing sent.
    let mut silent = TcpStream::connect(http).await.unwrap();
    // Half a head, then nothing.
    let mut half = TcpStream::connect(http).await.unwrap();
    half.write_all(b"POST /api/v1/drain HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    assert!(
        closed_within(&mut half, Duration::from_secs(5))
            .await
            .is_empty()
    );
    assert!(
        closed_within(&mut silent, Duration::from_secs(5))
            .await
            .is_empty()
    );
    assert!(
        started.elapsed() >= Duration::from_millis(800),
        "not before the timeout"
    );
    assert_eq!(
        metric(
            http,
            r#"herald_http_connections_timed_out_total{phase="header"}"#
        )
        .await,
        2.0
    );
    still_running(&s).await;
    s.server.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keep_alive_connection_lives_until_the_idle_timeout() {
    let mut c = api_config();
    c.http.header_timeout_secs = 1;
    c.http.idle_timeout_secs = 3;
    let (s, http) = start(c).await;
    let mut conn = TcpStream::connect(http).await.unwrap();
    let get = format!("GET /healthz HTTP/1.1\r\nHost: {http}\r\n\r\n");
    let mut buf = vec![0u8; 4096];
    for _ in 0..2 {
        conn.write_all(get.as_bytes()).await.unwrap();
        let mut n = 0;
        while !buf[..n].ends_with(b"}") {
            let got = conn.read(&mut buf[n..]).await.unwrap();
            assert!(got > 0, "closed before the answer");
            n += got;
        }
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{:?}", &buf[..n]);
        // Idle for longer than the header timeout: the connection stays.
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    assert!(
        closed_within(&mut conn, Duration::from_secs(5))
            .await
            .is_empty()
    );
    assert_eq!(
        metric(
            http,
            r#"herald_http_connections_timed_out_total{phase="idle"}"#
        )
        .await,
        1.0
    );
    s.server.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_idle_connections_and_waits_for_requests() {
    let (s, http) = start(api_config()).await;
    let mut idle = TcpStream::connect(http).await.unwrap();
    let get = format!("GET /healthz HTTP/1.1\r\nHost: {http}\r\n\r\n");
    idle.write_all(get.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = idle.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    tokio::time::timeout(
        Duration::from_secs(5),
        s.server.shutdown(Duration::from_secs(5)),
    )
    .await
    .expect("shutdown does not wait for idle keep-alive connections");
    closed_within(&mut idle, Duration::from_secs(1)).await;
    assert!(
        TcpStream::connect(http).await.is_err(),
        "the listener is closed"
    );
}

/// A `herald serve` process, killed when dropped (a failed assertion included).
struct Herald(std::process::Child);

impl Drop for Herald {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `herald serve` under `ulimit -n 256`, with the API on: its MQTT and HTTP addresses.
fn spawn_with_fd_limit(extra_env: &[(&str, &str)]) -> (Herald, SocketAddr, SocketAddr) {
    let script = format!(
        "ulimit -n 256 && exec {} serve --mqtt-listen 127.0.0.1:0 --http-listen 127.0.0.1:0 \
         --in-memory --log-level info",
        env!("CARGO_BIN_EXE_herald")
    );
    let mut cmd = Command::new("sh");
    cmd.args(["-c", &script]).env("HERALD_LISTENERS_WS", "");
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    let mut child = Herald(
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("herald starts under sh"),
    );
    let http = Arc::new(Mutex::new(None));
    let seen = http.clone();
    let mqtt = common::listen_addr(child.0.stdout.take().unwrap(), move |line| {
        if line.contains("listening for HTTP")
            && let Some(at) = line.find("addr=")
        {
            let addr: String = line[at + 5..]
                .chars()
                .take_while(|c| !c.is_whitespace())
                .collect();
            *seen.lock().unwrap() = addr.parse::<SocketAddr>().ok();
        }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    let http = loop {
        if let Some(addr) = *http.lock().unwrap() {
            break addr;
        }
        assert!(Instant::now() < deadline, "herald logs its HTTP address");
        std::thread::sleep(Duration::from_millis(10));
    };
    (child, mqtt, http)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_max_connections_http_clients_are_closed_and_mqtt_clients_still_connect() {
    const CAP: usize = 16;
    const FLOOD: usize = 300;
    let (mut child, mqtt, http) = spawn_with_fd_limit(&[
        ("HERALD_HTTP_MAX_CONNECTIONS", "16"),
        ("HERALD_HTTP_HEADER_TIMEOUT_SECS", "60"),
    ]);
    // More idle connections than herald has descriptors (256).
    let mut flood = Vec::new();
    for _ in 0..FLOOD {
        flood.push(TcpStream::connect(http).await.unwrap());
    }
    // The first CAP stay open, every other one is closed at once.
    let watched: Vec<_> = flood
        .into_iter()
        .map(|s| tokio::spawn(closed_soon(s)))
        .collect();
    let mut open = Vec::new();
    for w in watched {
        let (closed, s) = w.await.unwrap();
        if !closed {
            open.push(s);
        }
    }
    assert_eq!(open.len(), CAP, "open HTTP connections");
    // MQTT clients are still accepted and served.
    let mut c = Raw::connect(mqtt, V5, "still-served").await;
    common::ping(&mut c).await;
    // Slots free up as connections close; the refusals are counted.
    drop(open);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut attempts = 0;
    let refused = loop {
        attempts += 1;
        if let Ok(Ok(r)) = tokio::time::timeout(
            Duration::from_secs(1),
            tokio::spawn(metric(http, "herald_http_connections_refused_total")),
        )
        .await
        {
            break r;
        }
        assert!(Instant::now() < deadline, "/metrics answers again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Every connection of the flood past the cap, plus the scrapes of /metrics that came
    // before the slots were free again (each refused in turn).
    let expected = (FLOOD - CAP) as f64;
    assert!(
        refused >= expected && refused < expected + f64::from(attempts),
        "refused {refused}, expected {expected} plus at most {} early scrapes",
        attempts - 1
    );
    assert!(
        child.0.try_wait().unwrap().is_none(),
        "herald is still running"
    );
}

/// Whether the server closes `s` within two seconds, and `s`.
async fn closed_soon(mut s: TcpStream) -> (bool, TcpStream) {
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf)).await;
    (matches!(read, Ok(Ok(0) | Err(_))), s)
}
