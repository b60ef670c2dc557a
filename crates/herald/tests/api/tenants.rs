//! API keys scoped to one tenant or to the whole node: a tenant's key publishes to, lists
//! and steers its own tenant only, and is refused the node-wide operations; a node-wide key
//! names the tenant with `?tenant=`.
//!
//! MQTT clients get their tenant from their username (`acme/alice` is tenant `acme`); a
//! client without a username is in the default tenant.

use mqtt_codec::ProtocolVersion::V5;
use mqtt_codec::{Connect, Packet, QoS, ReasonCode};
use serde_json::{Value, json};

use super::{Reply, common, post, request, start};
use common::{QUIET, Raw};
use herald::config::{Config, TenantRule};

const NODE: &str = "node-key-0123456789";
const ACME: &str = "acme-key-0123456789";
const ACME_2: &str = "acme-key-9876543210";
const BETA: &str = "beta-key-0123456789";

/// The API on, a node-wide key, two keys for `acme` and one for `beta`; tenants from the
/// username's prefix.
fn config() -> Config {
    let mut c = super::api_config();
    c.auth.tenant_from = TenantRule::UsernamePrefix;
    c.http.api_keys = vec![NODE.into()];
    c.http.tenant_keys = [
        (
            "acme".to_string(),
            vec![ACME.to_string(), ACME_2.to_string()],
        ),
        ("beta".to_string(), vec![BETA.to_string()]),
    ]
    .into();
    c
}

fn bearer(key: &str) -> [(&'static str, String); 1] {
    [("Authorization", format!("Bearer {key}"))]
}

/// A request with `key`.
async fn call(
    http: std::net::SocketAddr,
    key: &str,
    method: &str,
    path: &str,
    body: &str,
) -> Reply {
    let [(name, value)] = bearer(key);
    request(http, method, path, &[(name, &value)], body).await
}

/// A publication with `key` and `extra` headers.
async fn publish(
    http: std::net::SocketAddr,
    key: &str,
    path: &str,
    extra: &[(&str, &str)],
    body: &Value,
) -> Reply {
    let [(name, value)] = bearer(key);
    let mut headers = vec![(name, value.as_str())];
    headers.extend_from_slice(extra);
    post(http, path, &headers, body).await
}

/// An MQTT 5 client `id`, in the tenant its `username` names (none: the default tenant).
async fn client(addr: std::net::SocketAddr, id: &str, username: Option<&str>) -> Raw {
    let mut connect = Connect::new(V5, id, 60);
    connect.username = username.map(Into::into);
    let (raw, ack) = Raw::connect_with(addr, connect).await;
    assert_eq!(ack.reason_code, ReasonCode::Success, "{ack:?}");
    raw
}

fn code(r: &Reply) -> (u16, &str, &str) {
    (
        r.status,
        r.body["error"]["code"].as_str().unwrap_or(""),
        r.error_field(),
    )
}

fn items<'a>(r: &'a Reply, field: &str) -> Vec<&'a str> {
    r.body["items"]
        .as_array()
        .unwrap_or_else(|| panic!("a page: {:?}", r.body))
        .iter()
        .map(|x| x[field].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn a_tenant_key_publishes_into_its_tenant_only() {
    let (s, http) = start(config()).await;
    let mut in_acme = client(s.addr, "sub", Some("acme/alice")).await;
    in_acme.subscribe("news/#", QoS::AtLeastOnce).await;
    let mut in_default = client(s.addr, "sub", None).await;
    in_default.subscribe("news/#", QoS::AtLeastOnce).await;

    let body = json!({"topic": "news/1", "payload": "for acme"});
    for path in ["/api/v1/publish", "/api/v1/publish?tenant=acme"] {
        let r = publish(http, ACME, path, &[], &body).await;
        assert_eq!(
            (r.status, &r.body["matched"]),
            (200, &json!(1)),
            "{path}: {:?}",
            r.body
        );
        assert_eq!(&in_acme.recv_publish().await.payload[..], b"for acme");
    }
    let r = publish(
        http,
        ACME,
        "/api/v1/publish/batch",
        &[],
        &json!([{"topic": "news/2", "payload": "b1"}, {"topic": "news/3", "payload": "b2"}]),
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(&in_acme.recv_publish().await.payload[..], b"b1");
    assert_eq!(&in_acme.recv_publish().await.payload[..], b"b2");
    // Same topic, same client id, another tenant: nothing.
    in_default.expect_nothing().await;

    // Another tenant, the default one included, is refused and nothing is published.
    for path in ["/api/v1/publish?tenant=beta", "/api/v1/publish?tenant="] {
        let r = publish(http, ACME, path, &[], &body).await;
        assert_eq!(
            code(&r),
            (403, "forbidden", "tenant"),
            "{path}: {:?}",
            r.body
        );
        assert!(
            r.body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("\"acme\""),
            "{:?}",
            r.body
        );
    }
    let r = publish(
        http,
        ACME,
        "/api/v1/publish/batch?tenant=beta",
        &[],
        &json!([body]),
    )
    .await;
    assert_eq!(code(&r), (403, "forbidden", "tenant"));
    assert!(s.server.broker().find_tenant("beta").is_none());

    // The node-wide key: the default tenant, or the one it names.
    let r = publish(
        http,
        NODE,
        "/api/v1/publish",
        &[],
        &json!({"topic": "news/1", "payload": "default"}),
    )
    .await;
    assert_eq!(r.body["matched"], 1, "{:?}", r.body);
    assert_eq!(&in_default.recv_publish().await.payload[..], b"default");
    let r = publish(
        http,
        NODE,
        "/api/v1/publish?tenant=acme",
        &[],
        &json!({"topic": "news/1", "payload": "node to acme"}),
    )
    .await;
    assert_eq!(r.body["matched"], 1, "{:?}", r.body);
    assert_eq!(&in_acme.recv_publish().await.payload[..], b"node to acme");
    // A tenant no client has used yet is created by a publication, retained message kept.
    let r = publish(
        http,
        NODE,
        "/api/v1/publish?tenant=newco",
        &[],
        &json!({"topic": "news/1", "payload": "first", "retain": true}),
    )
    .await;
    assert_eq!(
        (r.status, &r.body["matched"]),
        (200, &json!(0)),
        "{:?}",
        r.body
    );
    let newco = s.server.broker().find_tenant("newco").expect("created");
    assert_eq!(newco.retained.len(), 1);
    let mut late = client(s.addr, "late", Some("newco/zed")).await;
    late.subscribe("news/#", QoS::AtMostOnce).await;
    assert_eq!(&late.recv_publish().await.payload[..], b"first");
    in_acme.expect_nothing().await;
    in_default.expect_nothing().await;
}

#[tokio::test]
async fn a_tenant_key_sees_and_steers_its_own_tenant_only() {
    let (s, http) = start(config()).await;
    // The same client id, subscription and retained topic in acme and in the default tenant.
    // (Each publishes its retained messages before it subscribes, then gets them back.)
    let mut acme = client(s.addr, "dup", Some("acme/bob")).await;
    acme.publish("state/a", b"acme's", QoS::AtLeastOnce, true)
        .await;
    acme.subscribe("state/#", QoS::AtMostOnce).await;
    acme.recv_publish().await;
    let mut default = client(s.addr, "dup", None).await;
    default
        .publish("state/a", b"default's", QoS::AtLeastOnce, true)
        .await;
    default
        .publish("state/b", b"default only", QoS::AtLeastOnce, true)
        .await;
    default.subscribe("state/+", QoS::AtLeastOnce).await;
    default.recv_publish().await;
    default.recv_publish().await;

    let get = |key: &'static str, path: &'static str| call(http, key, "GET", path, "");
    let r = get(ACME, "/api/v1/clients").await;
    assert_eq!(items(&r, "username"), ["acme/bob"], "{:?}", r.body);
    let r = get(ACME, "/api/v1/clients/dup").await;
    assert_eq!((r.status, &r.body["username"]), (200, &json!("acme/bob")));
    let r = get(ACME, "/api/v1/subscriptions").await;
    assert_eq!(items(&r, "filter"), ["state/#"], "{:?}", r.body);
    let r = get(ACME, "/api/v1/retained").await;
    assert_eq!(items(&r, "payload"), ["acme's"], "{:?}", r.body);
    let r = get(ACME, "/api/v1/stats").await;
    assert_eq!(
        without_counters(&r.body),
        json!({"tenant": "acme", "connections": 1, "sessions": 1, "persistent_sessions": 0,
               "subscriptions": 1, "retained": 1, "retained_bytes": 13,
               "offline_queued_messages": 0, "offline_queued_bytes": 0, "store_bytes": 13}),
    );
    // Naming another tenant is refused, whatever the operation.
    for (method, path) in [
        ("GET", "/api/v1/clients?tenant="),
        ("GET", "/api/v1/clients/dup?tenant=beta"),
        ("DELETE", "/api/v1/clients/dup?tenant="),
        ("GET", "/api/v1/subscriptions?tenant="),
        ("GET", "/api/v1/retained?tenant="),
        ("DELETE", "/api/v1/retained/state/a?tenant="),
        ("GET", "/api/v1/stats?tenant="),
    ] {
        let r = call(http, ACME, method, path, "").await;
        assert_eq!(
            code(&r),
            (403, "forbidden", "tenant"),
            "{method} {path}: {:?}",
            r.body
        );
    }
    // The default tenant's retained message is out of reach; acme's own goes.
    let r = call(http, ACME, "DELETE", "/api/v1/retained/state/b", "").await;
    assert_eq!(code(&r), (404, "retained_not_found", "topic"));
    let r = call(http, ACME, "DELETE", "/api/v1/retained/state/a", "").await;
    assert_eq!((r.status, &r.body["deleted"]), (200, &json!(true)));
    let broker = s.server.broker();
    assert_eq!(broker.default_tenant.retained.len(), 2);
    assert_eq!(broker.find_tenant("acme").unwrap().retained.len(), 0);

    // Kicking "dup" with acme's key ends acme's client; the default tenant's stays.
    let r = call(
        http,
        ACME,
        "DELETE",
        "/api/v1/clients/dup?discard_session=true",
        "",
    )
    .await;
    assert_eq!(r.body["disconnected"], true, "{:?}", r.body);
    let closing = acme.expect_closed().await;
    assert!(
        matches!(closing.last(), Some(Packet::Disconnect(d)) if d.reason_code == ReasonCode::AdministrativeAction),
        "{closing:?}"
    );
    common::ping(&mut default).await;
    assert!(
        broker
            .default_tenant
            .sessions
            .get("dup")
            .unwrap()
            .lock()
            .connected()
    );
    let r = get(ACME, "/api/v1/clients/dup").await;
    assert_eq!(code(&r), (404, "client_not_found", "client_id"));

    // Another tenant's key sees its own, empty tenant, which a look does not create.
    let r = get(BETA, "/api/v1/clients").await;
    assert_eq!(
        (r.status, items(&r, "client_id").len()),
        (200, 0),
        "{:?}",
        r.body
    );
    let r = get(BETA, "/api/v1/retained").await;
    assert_eq!((r.status, items(&r, "topic").len()), (200, 0));
    let r = get(BETA, "/api/v1/stats").await;
    assert_eq!(
        (r.body["tenant"].as_str(), &r.body["sessions"]),
        (Some("beta"), &json!(0))
    );
    assert!(broker.find_tenant("beta").is_none());

    // The node-wide key: any tenant by name; one that does not exist is 404.
    let r = get(NODE, "/api/v1/clients/dup").await;
    assert_eq!(
        r.body["username"],
        Value::Null,
        "the default tenant's: {:?}",
        r.body
    );
    let r = get(NODE, "/api/v1/retained?tenant=").await;
    assert_eq!(items(&r, "topic"), ["state/a", "state/b"]);
    let r = get(NODE, "/api/v1/subscriptions?tenant=acme").await;
    assert_eq!(items(&r, "filter").len(), 0, "acme's session was discarded");
    for path in [
        "/api/v1/clients?tenant=nope",
        "/api/v1/clients/dup?tenant=nope",
        "/api/v1/subscriptions?tenant=nope",
        "/api/v1/retained?tenant=nope",
        "/api/v1/stats?tenant=nope",
    ] {
        let r = get(NODE, path).await;
        assert_eq!(
            code(&r),
            (404, "unknown_tenant", "tenant"),
            "{path}: {:?}",
            r.body
        );
    }
    let r = call(
        http,
        NODE,
        "DELETE",
        "/api/v1/retained/state/a?tenant=nope",
        "",
    )
    .await;
    assert_eq!(code(&r), (404, "unknown_tenant", "tenant"));
    assert!(broker.find_tenant("nope").is_none());
    // The node's stats, with a line per tenant.
    let r = get(NODE, "/api/v1/stats").await;
    assert_eq!(r.body["sessions"], 1, "{:?}", r.body);
    assert_eq!(r.body["tenants_total"], 2);
    assert_eq!(
        without_counters(&r.body["tenants"]),
        json!([
            {"name": "", "connections": 1, "sessions": 1, "persistent_sessions": 0,
             "subscriptions": 1, "retained": 2, "retained_bytes": 35,
             "offline_queued_messages": 0, "offline_queued_bytes": 0, "store_bytes": 35},
            {"name": "acme", "connections": 0, "sessions": 0, "persistent_sessions": 0,
             "subscriptions": 0, "retained": 0, "retained_bytes": 0,
             "offline_queued_messages": 0, "offline_queued_bytes": 0, "store_bytes": 0},
        ])
    );
    let r = get(NODE, "/api/v1/stats?tenant=").await;
    assert_eq!(
        (r.body["tenant"].as_str(), &r.body["retained"]),
        (Some(""), &json!(2))
    );
    default.expect_nothing().await;
}

#[tokio::test]
async fn tenant_keys_are_refused_the_node_wide_operations() {
    let mut c = config();
    c.http.metrics_requires_key = true;
    let (_s, http) = start(c).await;
    for (method, path, body) in [
        ("POST", "/api/v1/drain", ""),
        ("POST", "/api/v1/reload", ""),
        ("GET", "/api/v1/log", ""),
        ("PUT", "/api/v1/log", r#"{"level": "debug"}"#),
        ("GET", "/metrics", ""),
    ] {
        let r = call(http, ACME, method, path, body).await;
        assert_eq!(
            code(&r),
            (403, "forbidden", "Authorization"),
            "{method} {path}: {:?}",
            r.body
        );
        let message = r.body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("whole node") && message.contains("http.api_keys"),
            "{message}"
        );
    }
    // Nothing happened: the node is not draining; the node-wide key may do these.
    let r = request(http, "GET", "/readyz", &[], "").await;
    assert_eq!(r.body["draining"], false);
    let [(name, value)] = bearer(NODE);
    let r = common::http::request(http, "GET", "/metrics", &[(name, &value)], "").await;
    assert_eq!(r.status, 200, "{}", r.body);
    // A key that is no key at all is still 401.
    let r = call(http, "acme-key-012345678X", "POST", "/api/v1/drain", "").await;
    assert_eq!(code(&r), (401, "unauthorized", "Authorization"));
}

#[tokio::test]
async fn a_bad_tenant_parameter_is_400_naming_it() {
    let (_s, http) = start(config()).await;
    let long = "t".repeat(65);
    for bad in ["a%07b", "%C2%85", long.as_str()] {
        for (method, path) in [
            ("POST", "/api/v1/publish"),
            ("POST", "/api/v1/publish/batch"),
            ("GET", "/api/v1/stats"),
            ("GET", "/api/v1/clients"),
            ("GET", "/api/v1/clients/x"),
            ("DELETE", "/api/v1/clients/x"),
            ("GET", "/api/v1/subscriptions"),
            ("GET", "/api/v1/retained"),
            ("DELETE", "/api/v1/retained/a"),
        ] {
            let path = format!("{path}?tenant={bad}");
            let body = match path.as_str() {
                p if p.starts_with("/api/v1/publish/batch") => r#"[{"topic": "a"}]"#,
                p if p.starts_with("/api/v1/publish") => r#"{"topic": "a"}"#,
                _ => "",
            };
            for key in [NODE, ACME] {
                let r = call(http, key, method, &path, body).await;
                assert_eq!(
                    code(&r),
                    (400, "invalid_field", "tenant"),
                    "{method} {path}: {:?}",
                    r.body
                );
            }
        }
    }
    // 64 bytes is a name; a parameter that is not one of the operation's is refused.
    let r = call(
        http,
        NODE,
        "GET",
        &format!("/api/v1/clients?tenant={}", "t".repeat(64)),
        "",
    )
    .await;
    assert_eq!(code(&r), (404, "unknown_tenant", "tenant"));
    let r = publish(
        http,
        NODE,
        "/api/v1/publish?tennant=acme",
        &[],
        &json!({"topic": "a"}),
    )
    .await;
    assert_eq!(code(&r), (400, "invalid_field", "query"), "{:?}", r.body);
}

#[tokio::test]
async fn idempotency_keys_belong_to_the_api_key_that_sent_them() {
    let (s, http) = start(config()).await;
    let mut acme = client(s.addr, "sub", Some("acme/alice")).await;
    acme.subscribe("pay/#", QoS::AtLeastOnce).await;
    let mut default = client(s.addr, "sub", None).await;
    default.subscribe("pay/#", QoS::AtLeastOnce).await;
    let body = json!({"topic": "pay/1", "payload": "charge", "qos": 1});
    let once = [("Idempotency-Key", "order-7")];

    let first = publish(http, ACME, "/api/v1/publish", &once, &body).await;
    assert_eq!(
        (first.status, first.header("idempotent-replayed")),
        (200, None)
    );
    let again = publish(http, ACME, "/api/v1/publish", &once, &body).await;
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.body, first.body);
    assert_eq!(&acme.recv_publish().await.payload[..], b"charge");
    common::quiet_for(&mut acme, QUIET).await;

    // The same Idempotency-Key from acme's other key, and from the node-wide key into acme,
    // is a request of its own.
    for (key, path) in [
        (ACME_2, "/api/v1/publish"),
        (NODE, "/api/v1/publish?tenant=acme"),
    ] {
        let r = publish(http, key, path, &once, &body).await;
        assert_eq!(
            (r.status, r.header("idempotent-replayed")),
            (200, None),
            "{key}"
        );
        assert_eq!(&acme.recv_publish().await.payload[..], b"charge");
        let r = publish(http, key, path, &once, &body).await;
        assert_eq!(r.header("idempotent-replayed"), Some("true"), "{key}");
    }
    common::quiet_for(&mut acme, QUIET).await;
    default.expect_nothing().await;

    // The node-wide key cannot replay its acme request into another tenant: the tenant is
    // part of the request.
    let r = publish(http, NODE, "/api/v1/publish", &once, &body).await;
    assert_eq!(code(&r), (422, "idempotency_key_reused", "Idempotency-Key"));
    default.expect_nothing().await;
}

#[tokio::test]
async fn tenant_keys_alone_make_the_api_ask_for_a_key() {
    let mut c = super::api_config();
    c.http.tenant_keys = [("acme".to_string(), vec![ACME.to_string()])].into();
    let (_s, http) = start(c).await;
    let r = request(http, "GET", "/api/v1/clients", &[], "").await;
    assert_eq!(code(&r), (401, "unauthorized", "Authorization"));
    // With keys, the key authenticates the caller: a foreign Origin is not what refuses.
    let [(name, value)] = bearer(ACME);
    let r = request(
        http,
        "GET",
        "/api/v1/clients",
        &[(name, &value), ("Origin", "https://elsewhere.example")],
        "",
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    // And no key opens the node-wide operations.
    let r = call(http, ACME, "GET", "/api/v1/log", "").await;
    assert_eq!(code(&r), (403, "forbidden", "Authorization"));
}

/// A tenant's figures without its counters (`published`, `quota_breaches`), which are
/// checked to be there: the rest compares exactly.
fn without_counters(v: &serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Array(items) => items.iter().map(without_counters).collect(),
        serde_json::Value::Object(map) => {
            for traffic in [
                "published",
                "published_bytes",
                "delivered",
                "delivered_bytes",
                // What is queued and in flight at this instant depends on the clients' pace.
                "queued_messages",
                "inflight_messages",
            ] {
                assert!(map[traffic].is_u64(), "{traffic}: {v}");
            }
            assert!(map["quota_breaches"].is_object(), "{v}");
            assert!(map["rates"]["delivered_per_sec"].is_f64(), "{v}");
            let mut map = map.clone();
            for traffic in [
                "published",
                "published_bytes",
                "delivered",
                "delivered_bytes",
                "queued_messages",
                "inflight_messages",
                "rates",
                "quota_breaches",
            ] {
                map.remove(traffic);
            }
            serde_json::Value::Object(map)
        }
        other => other.clone(),
    }
}
