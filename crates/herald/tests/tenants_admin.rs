//! Tenants' own settings changed while Herald runs: the tenants file (read at start,
//! followed while running, a broken edit refused with the settings kept), the admin API
//! (`/api/v1/tenants`: set, look, remove; errors naming the field; 409 for a tenant the
//! file defines; 403 for a tenant's key), and the API's settings kept across a restart on
//! the store.
//!
//! MQTT clients get their tenant from their username (`acme/alice` is tenant `acme`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use common::Raw;
use herald::config::{Config, TenantRule};
use mqtt_codec::ProtocolVersion::V5;
use mqtt_codec::{Connect, Packet, QoS, ReasonCode};
use serde_json::{Value, json};

const NODE: &str = "node-key-0123456789";
const ACME: &str = "acme-key-0123456789";

/// The API on with a node-wide key and a key for `acme`; tenants from the username's
/// prefix; the tenants file at `file` ("" for none), watched every second.
fn config(file: &Path) -> Config {
    let mut c = common::config();
    c.http.listen = "127.0.0.1:0".into();
    c.auth.tenant_from = TenantRule::UsernamePrefix;
    c.http.api_keys = vec![NODE.into()];
    c.http.tenant_keys = [("acme".to_string(), vec![ACME.to_string()])].into();
    c.tenants.file = file.to_path_buf();
    c.tenants.watch_secs = 1;
    c
}

async fn start(c: Config) -> (common::TestServer, SocketAddr) {
    let s = common::start_with(c).await;
    let http = s.server.http_addr().expect("the API listens");
    (s, http)
}

/// A response: status and JSON body.
#[derive(Debug)]
struct Reply {
    status: u16,
    body: Value,
}

impl Reply {
    /// (status, error code, error field).
    fn error(&self) -> (u16, &str, &str) {
        let e = &self.body["error"];
        (
            self.status,
            e["code"].as_str().unwrap_or(""),
            e["field"].as_str().unwrap_or(""),
        )
    }
}

async fn call(http: SocketAddr, key: &str, method: &str, path: &str, body: &str) -> Reply {
    let bearer = format!("Bearer {key}");
    let r = common::http::request(http, method, path, &[("Authorization", &bearer)], body).await;
    Reply {
        status: r.status,
        body: r.json(),
    }
}

async fn get(http: SocketAddr, name: &str) -> Reply {
    call(http, NODE, "GET", &format!("/api/v1/tenants/{name}"), "").await
}

async fn put(http: SocketAddr, name: &str, settings: &Value) -> Reply {
    let path = format!("/api/v1/tenants/{name}");
    call(http, NODE, "PUT", &path, &settings.to_string()).await
}

async fn delete(http: SocketAddr, name: &str) -> Reply {
    call(http, NODE, "DELETE", &format!("/api/v1/tenants/{name}"), "").await
}

/// Waits until `name`'s answer satisfies `cond` (the file is watched every second).
async fn until(http: SocketAddr, name: &str, what: &str, cond: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = get(http, name).await;
        if r.status == 200 && cond(&r.body) {
            return r.body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: tenant {name} is {:?}",
            r.body
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// An MQTT 5 client `id` connected as `username`.
async fn client(addr: SocketAddr, id: &str, username: &str) -> Raw {
    let mut connect = Connect::new(V5, id, 60);
    connect.username = Some(username.into());
    let (raw, ack) = Raw::connect_with(addr, connect).await;
    assert_eq!(ack.reason_code, ReasonCode::Success, "{ack:?}");
    raw
}

/// Writes the tenants file so that its modification time or length changes.
fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tenants_file_is_read_at_start_and_followed_while_running() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tenants.toml");
    write(
        &file,
        "[acme]\nmax_connections = 5\nmax_qos = 1\n\n[beta]\n",
    );
    let mut c = config(&file);
    c.tenants.defaults.max_sessions = Some(100);
    let (s, http) = start(c).await;

    let acme = get(http, "acme").await;
    assert_eq!(acme.status, 200, "{:?}", acme.body);
    let acme = acme.body;
    assert_eq!(
        (&acme["source"], &acme["known"]),
        (&json!("file"), &json!(true))
    );
    assert_eq!(acme["own"], json!({"max_connections": 5, "max_qos": 1}));
    assert_eq!(
        acme["limits"],
        json!({"max_connections": 5, "max_qos": 1, "max_sessions": 100}),
        "its own over the defaults"
    );
    let beta = get(http, "beta").await.body;
    assert_eq!(
        (&beta["source"], &beta["known"], &beta["own"]),
        (&json!("file"), &json!(true), &json!({})),
        "a table alone: known, with the defaults"
    );
    // The tenant's usage, counted from its sessions and retained messages.
    let mut alice = client(s.addr, "alice", "acme/alice").await;
    alice.subscribe("room/#", QoS::AtLeastOnce).await;
    alice
        .publish("room/1", b"kept", QoS::AtLeastOnce, true)
        .await;
    let acme = until(http, "acme", "usage counted", |t| {
        t["usage"]["retained"] == 1
    })
    .await;
    // Retained bytes count the topic and the payload ("room/1", "kept").
    let mut usage = acme["usage"].clone();
    let usage = usage.as_object_mut().unwrap();
    assert!(usage.remove("published").is_some_and(|p| p == 1));
    assert!(usage.remove("published_bytes").is_some_and(|p| p == 10));
    // The retained message went to alice, its subscriber: one PUBLISH packet.
    assert!(usage.remove("delivered").is_some_and(|p| p == 1));
    assert!(usage.remove("delivered_bytes").is_some_and(|p| p.is_u64()));
    // The retained copy may still be waiting for alice's PUBACK: in flight, not queued.
    assert!(usage.remove("queued_messages").is_some_and(|q| q == 0));
    assert!(
        usage
            .remove("inflight_messages")
            .is_some_and(|q| q.as_u64() <= Some(1))
    );
    assert!(
        usage
            .remove("rates")
            .is_some_and(|r| r["published_per_sec"].is_f64())
    );
    assert!(
        usage
            .remove("quota_breaches")
            .is_some_and(|b| b["connections"] == 0)
    );
    assert_eq!(
        serde_json::Value::Object(usage.clone()),
        json!({"connections": 1, "sessions": 1, "persistent_sessions": 0, "subscriptions": 1,
               "retained": 1, "retained_bytes": 10, "offline_queued_messages": 0,
               "offline_queued_bytes": 0, "store_bytes": 10})
    );
    let list = call(http, NODE, "GET", "/api/v1/tenants", "").await;
    let names: Vec<&str> = list.body["items"]
        .as_array()
        .expect("a page")
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["", "acme", "beta"], "{:?}", list.body);

    // Changed while running: acme's settings, beta gone, gamma new.
    write(
        &file,
        "[acme]\nmax_connections = 7\n\n[gamma]\nretain = false\n",
    );
    until(http, "acme", "the edit applied", |t| {
        t["own"] == json!({"max_connections": 7})
    })
    .await;
    let beta = get(http, "beta").await.body;
    assert_eq!(
        (&beta["source"], &beta["known"], &beta["own"]),
        (&json!("defaults"), &json!(false), &json!({})),
        "no longer named: back to the defaults"
    );
    let gamma = get(http, "gamma").await.body;
    assert_eq!(
        (&gamma["source"], &gamma["own"]),
        (&json!("file"), &json!({"retain": false}))
    );

    // A broken edit is refused: the settings stay, by the watch and by a reload.
    write(&file, "[acme]\nmax_connections = 9\nmax_qos = 7\n");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let acme = get(http, "acme").await.body;
    assert_eq!(
        acme["own"],
        json!({"max_connections": 7}),
        "the old settings stay"
    );
    let reload = call(http, NODE, "POST", "/api/v1/reload", "").await;
    assert_eq!(
        reload.error(),
        (400, "invalid_config", "tenants.file"),
        "{:?}",
        reload.body
    );
    let message = reload.body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("tenants.file")
            && message.contains("\"acme\"")
            && message.contains("max_qos"),
        "{message}"
    );
    assert_eq!(
        get(http, "acme").await.body["own"],
        json!({"max_connections": 7})
    );
    assert_eq!(get(http, "gamma").await.body["source"], json!("file"));

    // Mended: applied again.
    write(&file, "[acme]\nmax_connections = 9\n");
    until(http, "acme", "the mended file applied", |t| {
        t["own"] == json!({"max_connections": 9})
    })
    .await;
    assert_eq!(get(http, "gamma").await.body["known"], json!(false));
    s.server.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_tenants_file_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tenants.toml");
    write(&file, "[acme]\nmax_conections = 5\n");
    let e = herald::server::Server::start(config(&file))
        .await
        .err()
        .expect("refused");
    let message = e.to_string();
    assert!(
        message.starts_with("tenants.file: ")
            && message.contains("tenants.toml")
            && message.contains("\"acme\"")
            && message.contains("max_conections"),
        "{message}"
    );
    let missing = dir.path().join("missing.toml");
    let e = herald::server::Server::start(config(&missing))
        .await
        .err()
        .expect("refused");
    assert!(e.to_string().contains("cannot read"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_sets_looks_at_and_removes_a_tenants_settings() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tenants.toml");
    write(&file, "[filed]\nmax_sessions = 3\n");
    let mut c = config(&file);
    c.tenants.require_known = true;
    let (s, http) = start(c).await;

    let r = put(http, "acme", &json!({"max_connections": 10, "max_qos": 1})).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(
        (&r.body["name"], &r.body["source"], &r.body["known"]),
        (&json!("acme"), &json!("api"), &json!(true))
    );
    assert_eq!(r.body["own"], json!({"max_connections": 10, "max_qos": 1}));
    // Replaced whole: a key left out is the default's again.
    let r = put(
        http,
        "acme",
        &json!({"max_connections": 20, "protocols": ["5"]}),
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let acme = get(http, "acme").await;
    assert_eq!(
        acme.body["own"],
        json!({"max_connections": 20, "protocols": ["5"]})
    );
    assert_eq!(acme.body["limits"], acme.body["own"]);
    let acme_of = |r: &Reply| {
        r.body["items"]
            .as_array()
            .expect("a page")
            .iter()
            .find(|t| t["name"] == "acme")
            .cloned()
    };
    let list = call(http, NODE, "GET", "/api/v1/tenants", "").await;
    assert_eq!(
        acme_of(&list).map(|t| t["source"].clone()),
        Some(json!("api"))
    );

    // 400 naming the field: unknown, wrong type, out of range; a body that is no object;
    // a name that is no tenant name.
    for (body, field) in [
        (json!({"max_widgets": 3}), "max_widgets"),
        (json!({"max_qos": "one"}), "max_qos"),
        (json!({"max_qos": 3}), "max_qos"),
        (json!({"max_connections": -1}), "max_connections"),
        (
            json!({"retain": true, "messages_per_sec": 0}),
            "messages_per_sec",
        ),
        (json!({"max_packet_size": 10}), "max_packet_size"),
        (json!({"protocols": ["4"]}), "protocols"),
    ] {
        let r = put(http, "acme", &body).await;
        assert_eq!(
            r.error(),
            (400, "invalid_field", field),
            "{body}: {:?}",
            r.body
        );
        let message = r.body["error"]["message"].as_str().unwrap();
        assert!(message.starts_with(field), "{message}");
    }
    let r = put(http, "acme", &json!([1])).await;
    assert_eq!(r.error().0, 400, "{:?}", r.body);
    let long = "t".repeat(65);
    assert_eq!(
        put(http, &long, &json!({})).await.error(),
        (400, "invalid_field", "name")
    );
    assert_eq!(
        get(http, "acme").await.body["own"],
        json!({"max_connections": 20, "protocols": ["5"]}),
        "nothing refused was applied"
    );

    // The file's tenant is the file's.
    for r in [
        put(http, "filed", &json!({"max_sessions": 4})).await,
        delete(http, "filed").await,
    ] {
        assert_eq!(r.error(), (409, "managed_by_file", "name"), "{:?}", r.body);
        let message = r.body["error"]["message"].as_str().unwrap();
        assert!(message.contains("tenants.toml"), "{message}");
    }
    assert_eq!(
        get(http, "filed").await.body["own"],
        json!({"max_sessions": 3})
    );

    // A tenant's key may look at its own tenant, and do nothing else here.
    let own = call(http, ACME, "GET", "/api/v1/tenants/acme", "").await;
    assert_eq!((own.status, &own.body["source"]), (200, &json!("api")));
    for (method, path, body) in [
        ("GET", "/api/v1/tenants", ""),
        ("GET", "/api/v1/tenants/filed", ""),
        ("PUT", "/api/v1/tenants/acme", "{}"),
        ("DELETE", "/api/v1/tenants/acme", ""),
    ] {
        let r = call(http, ACME, method, path, body).await;
        assert_eq!(
            (r.status, r.error().1),
            (403, "forbidden"),
            "{method} {path}: {:?}",
            r.body
        );
    }
    assert_eq!(
        get(http, "nobody").await.error(),
        (404, "unknown_tenant", "name")
    );

    // Removed: back to the defaults and unknown; with tenants.require_known its connected
    // clients are told 0x87.
    let mut alice = client(s.addr, "alice", "acme/alice").await;
    let r = delete(http, "acme").await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(
        (&r.body["source"], &r.body["known"], &r.body["own"]),
        (&json!("defaults"), &json!(false), &json!({}))
    );
    let closing = alice.expect_closed().await;
    assert!(
        matches!(closing.last(), Some(Packet::Disconnect(d)) if d.reason_code == ReasonCode::NotAuthorized),
        "{closing:?}"
    );
    assert_eq!(
        delete(http, "acme").await.error(),
        (404, "unknown_tenant", "name")
    );
    s.server.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_set_through_the_api_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let on_store = || {
        let mut c = config(Path::new(""));
        c.store.in_memory = false;
        c.store.data_dir = dir.path().join("data");
        c.store.min_free_disk_bytes = 0;
        c
    };
    let (s, http) = start(on_store()).await;
    assert_eq!(
        put(
            http,
            "acme",
            &json!({"max_sessions": 2, "wildcards": false})
        )
        .await
        .status,
        201
    );
    assert_eq!(
        put(http, "gone", &json!({"retain": false})).await.status,
        201
    );
    assert_eq!(delete(http, "gone").await.status, 200);
    s.server.shutdown(Duration::from_secs(5)).await;

    let (s, http) = start(on_store()).await;
    let acme = get(http, "acme").await;
    assert_eq!(acme.status, 200, "{:?}", acme.body);
    assert_eq!(
        (&acme.body["source"], &acme.body["known"], &acme.body["own"]),
        (
            &json!("api"),
            &json!(true),
            &json!({"max_sessions": 2, "wildcards": false})
        )
    );
    assert_eq!(
        get(http, "gone").await.error().1,
        "unknown_tenant",
        "its record was deleted"
    );
    // Still the API's: changed and removed as before.
    assert_eq!(put(http, "acme", &json!({})).await.status, 200);
    assert_eq!(delete(http, "acme").await.status, 200);
    s.server.shutdown(Duration::from_secs(5)).await;
}
