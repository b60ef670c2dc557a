//! The HTTP API: publishing from a backend to MQTT clients, exactly once with an
//! Idempotency-Key (also across a restart), errors that name the field, API keys, health;
//! keys scoped to a tenant in `tenants`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "api/tenants.rs"]
mod tenants;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{QUIET, Raw};
use herald::config::Config;
use mqtt_codec::ProtocolVersion::{V3_1_1, V5};
use mqtt_codec::QoS;
use serde_json::{Value, json};

/// A response: status, headers (lower-case names), body.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Value,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn error_field(&self) -> &str {
        self.body["error"]["field"].as_str().unwrap_or("")
    }
}

/// One HTTP/1.1 request on its own connection; the body read as JSON.
async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Reply {
    let r = common::http::request(addr, method, path, headers, body).await;
    Reply {
        status: r.status,
        body: r.json(),
        headers: r.headers,
    }
}

async fn post(addr: SocketAddr, path: &str, headers: &[(&str, &str)], body: &Value) -> Reply {
    request(addr, "POST", path, headers, &body.to_string()).await
}

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_publishes_to_a_subscribed_mosquitto_sub() {
    let (s, http) = start(api_config()).await;
    let port = s.addr.port().to_string();
    let sub = Command::new("mosquitto_sub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-t",
            "users/42/#",
            "-v",
            "-C",
            "1",
            "-W",
            "10",
        ])
        .args(["-i", "user-42", "-q", "1"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("mosquitto_sub runs (Debian package mosquitto-clients)");
    common::eventually("mosquitto_sub subscribed", || {
        s.server
            .broker()
            .default_tenant
            .sessions
            .get("user-42")
            .is_some_and(|x| !x.lock().subscriptions().is_empty())
    })
    .await;
    let url = format!("http://{http}/api/v1/publish");
    let out = tokio::task::spawn_blocking(move || {
        Command::new("curl")
            .args([
                "-sS",
                "-X",
                "POST",
                &url,
                "-H",
                "Content-Type: application/json",
            ])
            .args([
                "-d",
                r#"{"topic": "users/42/inbox", "payload": "hello from the backend", "qos": 1}"#,
            ])
            .output()
            .expect("curl runs")
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["matched"], 1, "{answer}");
    let got = tokio::task::spawn_blocking(|| sub.wait_with_output().unwrap())
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&got.stdout),
        "users/42/inbox hello from the backend\n"
    );
}

#[tokio::test]
async fn messages_carry_qos_retain_properties_and_binary_payloads() {
    let (s, http) = start(api_config()).await;
    let mut sub = Raw::connect(s.addr, V5, "sub").await;
    sub.subscribe("api/#", QoS::ExactlyOnce).await;
    let r = post(
        http,
        "/api/v1/publish",
        &[],
        &json!({
            "topic": "api/bin",
            "payload_base64": "AAEC/w==",
            "qos": 2,
            "properties": {
                "content_type": "application/octet-stream",
                "user_properties": [["trace", "t-1"], ["trace", "t-2"]],
                "message_expiry_interval": 60,
                "correlation_data": "req-7",
                "response_topic": "api/replies"
            }
        }),
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(
        r.body,
        json!({"topic": "api/bin", "qos": 2, "retain": false, "matched": 1})
    );
    let p = sub.recv_publish().await;
    assert_eq!(&p.payload[..], &[0, 1, 2, 255]);
    assert_eq!(p.qos, QoS::ExactlyOnce);
    assert_eq!(
        p.properties.content_type.as_deref(),
        Some("application/octet-stream")
    );
    assert_eq!(p.properties.user_properties.len(), 2);
    assert_eq!(
        p.properties.correlation_data.as_deref(),
        Some(&b"req-7"[..])
    );
    assert_eq!(p.properties.response_topic.as_deref(), Some("api/replies"));

    // Retained: a later subscriber gets it.
    let r = post(
        http,
        "/api/v1/publish",
        &[],
        &json!({"topic": "api/state", "payload": "on", "retain": true}),
    )
    .await;
    assert_eq!(r.status, 200);
    let mut late = Raw::connect(s.addr, V5, "late").await;
    late.subscribe("api/state", QoS::AtMostOnce).await;
    let p = late.recv_publish().await;
    assert!(p.retain && &p.payload[..] == b"on");

    // A batch, in order.
    let r = post(
        http,
        "/api/v1/publish/batch",
        &[],
        &json!([
            {"topic": "api/b", "payload": "1"},
            {"topic": "api/b", "payload": "2", "qos": 1},
            {"topic": "nobody/listens", "payload": "3"}
        ]),
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["published"], 3);
    assert_eq!(
        r.body["results"][2],
        json!({"topic": "nobody/listens", "matched": 0})
    );
    // The retained message first (it was published while sub was subscribed, so it came as
    // a normal delivery), then the batch.
    let mut got = Vec::new();
    while got.len() < 3 {
        got.push(sub.recv_publish().await.payload);
    }
    assert_eq!(got, vec![&b"on"[..], b"1", b"2"]);
}

#[tokio::test]
async fn errors_are_json_and_name_the_field() {
    let (_s, http) = start(api_config()).await;
    let cases = [
        (json!({"payload": "x"}), "topic"),
        (json!({"topic": "a/+", "payload": "x"}), "topic"),
        (json!({"topic": "a", "qos": 3}), "qos"),
        (json!({"topic": "a", "retain": "yes"}), "retain"),
        (
            json!({"topic": "a", "payload_base64": "%%%"}),
            "payload_base64",
        ),
        (
            json!({"topic": "a", "payload": "x", "payload_base64": "eA=="}),
            "payload",
        ),
        (json!({"topic": "a", "colour": "red"}), "colour"),
        (
            json!({"topic": "a", "properties": {"expiry": 5}}),
            "properties.expiry",
        ),
        (
            json!({"topic": "a", "properties": {"user_properties": [["k"]]}}),
            "properties.user_properties[0]",
        ),
    ];
    for (body, field) in cases {
        let r = post(http, "/api/v1/publish", &[], &body).await;
        assert_eq!(r.status, 400, "{body}: {:?}", r.body);
        assert_eq!(r.body["error"]["code"], "invalid_field");
        assert_eq!(r.error_field(), field, "{body}: {:?}", r.body);
        assert!(
            r.body["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with(field)
        );
    }
    // In a batch the index is named, and nothing is published.
    let r = post(
        http,
        "/api/v1/publish/batch",
        &[],
        &json!([{"topic": "ok"}, {"topic": "bad/#"}]),
    )
    .await;
    assert_eq!((r.status, r.error_field()), (400, "[1].topic"));
    let r = request(http, "POST", "/api/v1/publish", &[], "{not json").await;
    assert_eq!(
        (r.status, r.body["error"]["code"].as_str()),
        (400, Some("invalid_json"))
    );
    let r = request(http, "GET", "/api/v2/nothing", &[], "").await;
    assert_eq!(
        (r.status, r.body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    let big = json!({"topic": "a", "payload": "x".repeat(5 * 1024 * 1024)});
    let r = post(http, "/api/v1/publish", &[], &big).await;
    assert_eq!(
        (r.status, r.body["error"]["code"].as_str()),
        (413, Some("body_too_large"))
    );
    let r = post(
        http,
        "/api/v1/publish",
        &[("Idempotency-Key", "")],
        &json!({"topic": "a"}),
    )
    .await;
    assert_eq!((r.status, r.error_field()), (400, "Idempotency-Key"));
}

#[tokio::test]
async fn an_idempotency_key_publishes_once() {
    let (s, http) = start(api_config()).await;
    let mut sub = Raw::connect(s.addr, V5, "sub").await;
    sub.subscribe("once/#", QoS::AtLeastOnce).await;
    let body = json!({"topic": "once/a", "payload": "charge #1", "qos": 1});
    let key = [("Idempotency-Key", "order-1001")];
    let first = post(http, "/api/v1/publish", &key, &body).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.header("idempotent-replayed"), None);
    let again = post(http, "/api/v1/publish", &key, &body).await;
    assert_eq!(again.status, 200);
    assert_eq!(again.body, first.body, "the first answer again");
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(&sub.recv_publish().await.payload[..], b"charge #1");
    common::quiet_for(&mut sub, QUIET).await;
    // The same key for another request is refused; another key publishes.
    let other = json!({"topic": "once/a", "payload": "charge #2", "qos": 1});
    let r = post(http, "/api/v1/publish", &key, &other).await;
    assert_eq!(
        (r.status, r.body["error"]["code"].as_str()),
        (422, Some("idempotency_key_reused"))
    );
    let r = post(
        http,
        "/api/v1/publish",
        &[("Idempotency-Key", "order-1002")],
        &other,
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(&sub.recv_publish().await.payload[..], b"charge #2");
    // Batches too.
    let batch = json!([{"topic": "once/b", "payload": "x"}, {"topic": "once/b", "payload": "y"}]);
    let bkey = [("Idempotency-Key", "batch-1")];
    assert_eq!(
        post(http, "/api/v1/publish/batch", &bkey, &batch)
            .await
            .status,
        200
    );
    let r = post(http, "/api/v1/publish/batch", &bkey, &batch).await;
    assert_eq!(r.header("idempotent-replayed"), Some("true"));
    assert_eq!(&sub.recv_publish().await.payload[..], b"x");
    assert_eq!(&sub.recv_publish().await.payload[..], b"y");
    common::quiet_for(&mut sub, QUIET).await;
}

#[tokio::test]
async fn idempotency_keys_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = || {
        let mut c = api_config();
        c.store.in_memory = false;
        c.store.data_dir = dir.path().to_path_buf();
        c.store.min_free_disk_bytes = 0;
        c
    };
    let body = json!({"topic": "restart/a", "payload": "once", "qos": 1});
    let key = [("Idempotency-Key", "survivor")];
    let (s, http) = start(config()).await;
    // A persistent subscriber: what was published while it was away is queued for it.
    let mut connect = mqtt_codec::Connect::new(V5, "keeper", 60);
    connect.clean_start = false;
    connect.properties.session_expiry_interval = Some(3600);
    let (mut sub, _) = Raw::connect_with(s.addr, connect.clone()).await;
    sub.subscribe("restart/#", QoS::AtLeastOnce).await;
    sub.disconnect().await;
    let first = post(http, "/api/v1/publish", &key, &body).await;
    assert_eq!(first.status, 200);
    s.server.shutdown(Duration::from_secs(5)).await;

    let (s, http) = start(config()).await;
    let again = post(http, "/api/v1/publish", &key, &body).await;
    assert_eq!(again.status, 200);
    assert_eq!(
        again.header("idempotent-replayed"),
        Some("true"),
        "{:?}",
        again.body
    );
    assert_eq!(again.body, first.body);
    let (mut sub, ack) = Raw::connect_with(s.addr, connect).await;
    assert!(ack.session_present);
    let p = sub.recv_publish().await;
    assert_eq!(&p.payload[..], b"once");
    sub.send(mqtt_codec::Packet::PubAck(mqtt_codec::Ack::new(
        p.packet_id,
    )))
    .await;
    common::quiet_for(&mut sub, QUIET).await;
}

#[tokio::test]
async fn api_keys_guard_the_api_and_health_is_open() {
    let mut c = api_config();
    c.http.api_keys = vec!["k-0123456789abcdef".into(), "k-fedcba9876543210".into()];
    let (_s, http) = start(c).await;
    let body = json!({"topic": "a", "payload": "x"});
    let r = post(http, "/api/v1/publish", &[], &body).await;
    assert_eq!(
        (r.status, r.body["error"]["code"].as_str()),
        (401, Some("unauthorized"))
    );
    let r = post(
        http,
        "/api/v1/publish",
        &[("Authorization", "Bearer k-0123456789abcdeX")],
        &body,
    )
    .await;
    assert_eq!(r.status, 401);
    let r = post(
        http,
        "/api/v1/publish",
        &[("Authorization", "Bearer k-fedcba9876543210")],
        &body,
    )
    .await;
    assert_eq!(r.status, 200);
    let r = request(
        http,
        "GET",
        "/api/v1/stats",
        &[("Authorization", "Bearer k-0123456789abcdef")],
        "",
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["messages_published"], 1);
    // One message since the start, a moment ago: a rate above zero.
    assert!(
        r.body["rates"]["published_per_sec"].as_f64().unwrap() > 0.0,
        "{:?}",
        r.body
    );
    let r = request(http, "GET", "/healthz", &[], "").await;
    assert_eq!((r.status, &r.body), (200, &json!({"status": "ok"})));
    let r = request(http, "GET", "/readyz", &[], "").await;
    assert_eq!((r.status, r.body["ready"].as_bool()), (200, Some(true)));
}

#[tokio::test]
async fn clients_subscriptions_and_retained_are_listed_and_steered() {
    let (s, http) = start(api_config()).await;
    let get = |path: &'static str| request(http, "GET", path, &[], "");
    let mut ann = mqtt_codec::Connect::new(V5, "alpha-1", 60);
    ann.username = Some("ann".into());
    ann.clean_start = false;
    ann.properties.session_expiry_interval = Some(600);
    let (mut a1, _) = Raw::connect_with(s.addr, ann).await;
    a1.subscribe("sensors/+/temp", QoS::AtLeastOnce).await;
    let mut persistent = mqtt_codec::Connect::new(V5, "alpha-2", 60);
    persistent.clean_start = false;
    persistent.properties.session_expiry_interval = Some(600);
    let (mut a2, _) = Raw::connect_with(s.addr, persistent).await;
    a2.subscribe("state/#", QoS::AtMostOnce).await;
    let mut b1 = Raw::connect(s.addr, V3_1_1, "beta-1").await;
    b1.subscribe("sensors/#", QoS::AtMostOnce).await;

    let r = get("/api/v1/clients").await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let ids: Vec<&str> = r.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["client_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["alpha-1", "alpha-2", "beta-1"]);
    assert_eq!(r.body["next"], Value::Null);
    let r = get("/api/v1/clients?prefix=alpha-").await;
    assert_eq!(r.body["items"].as_array().unwrap().len(), 2);
    let r = get("/api/v1/clients?username=ann").await;
    assert_eq!(r.body["items"][0]["client_id"], "alpha-1");
    assert_eq!(r.body["items"][0]["username"], "ann");
    assert_eq!(r.body["items"][0]["listener"], "mqtt");
    assert!(
        r.body["items"][0]["address"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
    let r = get("/api/v1/clients?address=127.0.0.1").await;
    assert_eq!(r.body["items"].as_array().unwrap().len(), 3);
    let r = get("/api/v1/clients?limit=2").await;
    assert_eq!(r.body["next"], "alpha-2");
    let r = get("/api/v1/clients?limit=2&after=alpha-2").await;
    assert_eq!(r.body["items"][0]["client_id"], "beta-1");
    assert_eq!(r.body["next"], Value::Null);
    let r = get("/api/v1/clients?limit=0").await;
    assert_eq!((r.status, r.error_field()), (400, "limit"));

    let r = get("/api/v1/clients/alpha-1").await;
    assert_eq!(r.body["connected"], true);
    assert_eq!(r.body["protocol"], "5.0");
    assert_eq!(r.body["session_expiry_interval"], 600);
    assert_eq!(r.body["subscriptions"][0]["filter"], "sensors/+/temp");
    assert_eq!(r.body["subscriptions"][0]["qos"], 1);
    let r = get("/api/v1/clients/nobody").await;
    assert_eq!(
        (r.status, r.body["error"]["code"].as_str()),
        (404, Some("client_not_found"))
    );

    // Subscriptions covered by a filter.
    let r = get("/api/v1/subscriptions?filter=sensors/%23").await;
    let subs: Vec<(&str, &str)> = r.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            (
                x["filter"].as_str().unwrap(),
                x["client_id"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        subs,
        [("sensors/#", "beta-1"), ("sensors/+/temp", "alpha-1")]
    );
    let r = get("/api/v1/subscriptions?filter=a/%23/b").await;
    assert_eq!((r.status, r.error_field()), (400, "filter"));

    // Retained messages: listed, deleted without anything delivered.
    b1.publish("state/a", b"on", QoS::AtMostOnce, true).await;
    b1.publish("state/b", &[0xff, 0x00], QoS::AtMostOnce, true)
        .await;
    a2.recv_publish().await;
    a2.recv_publish().await;
    let r = get("/api/v1/retained?filter=state/%2B").await;
    assert_eq!(
        r.body["items"][0],
        json!({"topic": "state/a", "qos": 0, "bytes": 2, "payload": "on"})
    );
    assert_eq!(r.body["items"][1]["payload_base64"], "/wA=");
    let r = request(http, "DELETE", "/api/v1/retained/state/a", &[], "").await;
    assert_eq!((r.status, &r.body["deleted"]), (200, &json!(true)));
    common::quiet_for(&mut a2, QUIET).await;
    let r = get("/api/v1/retained").await;
    assert_eq!(r.body["items"].as_array().unwrap().len(), 1);
    let r = request(http, "DELETE", "/api/v1/retained/state/a", &[], "").await;
    assert_eq!(
        (r.status, r.body["error"]["code"].as_str()),
        (404, Some("retained_not_found"))
    );

    // Disconnect: the v5 client is told why; its persistent session stays.
    let r = request(http, "DELETE", "/api/v1/clients/alpha-2", &[], "").await;
    assert_eq!(r.body["disconnected"], true);
    let closing = a2.expect_closed().await;
    assert!(
        matches!(closing.last(), Some(mqtt_codec::Packet::Disconnect(d)) if d.reason_code == mqtt_codec::ReasonCode::AdministrativeAction),
        "{closing:?}"
    );
    common::eventually("alpha-2 offline", || {
        s.server
            .broker()
            .default_tenant
            .sessions
            .get("alpha-2")
            .is_some_and(|x| !x.lock().connected())
    })
    .await;
    // Disconnect and discard: the session is gone.
    let r = request(
        http,
        "DELETE",
        "/api/v1/clients/alpha-1?discard_session=true",
        &[],
        "",
    )
    .await;
    assert_eq!(r.body["session_discarded"], true);
    a1.expect_closed().await;
    let r = get("/api/v1/clients/alpha-1").await;
    assert_eq!(r.status, 404);
}

#[tokio::test]
async fn subscription_pages_follow_an_opaque_cursor() {
    let (s, http) = start(api_config()).await;
    let mut clients = Vec::new();
    for i in 0..5 {
        let mut c = Raw::connect(s.addr, V5, &format!("c{i}")).await;
        c.subscribe("page/#", QoS::AtMostOnce).await;
        clients.push(c);
    }
    let mut seen = Vec::new();
    let mut path = "/api/v1/subscriptions?limit=2".to_string();
    loop {
        let r = request(http, "GET", &path, &[], "").await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        for item in r.body["items"].as_array().unwrap() {
            seen.push(item["client_id"].as_str().unwrap().to_string());
        }
        match r.body["next"].as_str() {
            Some(next) => path = format!("/api/v1/subscriptions?limit=2&after={next}"),
            None => break,
        }
    }
    assert_eq!(seen, ["c0", "c1", "c2", "c3", "c4"]);
    let r = request(http, "GET", "/api/v1/subscriptions?after=%%%", &[], "").await;
    assert_eq!(r.status, 400);
}

#[tokio::test]
async fn a_path_that_is_not_utf8_gets_a_json_error() {
    let (_s, http) = start(api_config()).await;
    for (method, path, field) in [
        ("GET", "/api/v1/clients/%FF", "client_id"),
        ("DELETE", "/api/v1/clients/%FF", "client_id"),
        ("DELETE", "/api/v1/retained/a%FFb", "topic"),
    ] {
        let r = request(http, method, path, &[], "").await;
        assert_eq!(
            (r.status, r.error_field()),
            (400, field),
            "{method} {path}: {:?}",
            r.body
        );
    }
}

/// A QoS 1 message that cannot be queued for an offline session at its bound is refused
/// with 429 and Retry-After, never answered as published; with an Idempotency-Key the key
/// does not count it, so a retry publishes it.
#[tokio::test]
async fn publishing_past_a_queue_bound_is_429_with_retry_after() {
    let mut c = api_config();
    c.limits.max_queued_messages = 1;
    let (s, http) = start(c).await;
    let mut connect = mqtt_codec::Connect::new(V5, "away", 60);
    connect.properties.session_expiry_interval = Some(300);
    let (mut sub, _) = Raw::connect_with(s.addr, connect).await;
    sub.subscribe("full/#", QoS::AtLeastOnce).await;
    sub.disconnect().await;
    common::until_offline(&s, "away").await;

    let body = json!({"topic": "full/t", "payload": "1", "qos": 1});
    let first = post(http, "/api/v1/publish", &[], &body).await;
    assert_eq!(first.status, 200, "{:?}", first.body);
    for key in [None, Some("k-full")] {
        let headers: Vec<(&str, &str)> = key.map(|k| ("Idempotency-Key", k)).into_iter().collect();
        let r = post(http, "/api/v1/publish", &headers, &body).await;
        assert_eq!(r.status, 429, "{key:?}: {:?}", r.body);
        assert_eq!(r.body["error"]["code"], "queue_full");
        assert_eq!(r.header("retry-after"), Some("1"));
    }
    assert_eq!(
        s.server
            .broker()
            .stats
            .refusals(herald::broker::stats::RefuseReason::QueueFull),
        2
    );
    s.server.shutdown(common::WAIT).await;
}
