//! The HTTP API of one node answers for the whole cluster (real nats-server): clients and
//! subscriptions of every node, merged and paged, each saying its node; a client on
//! another node looked at and disconnected from here; a publication here reaching a
//! subscriber there.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::Raw;
use common::http::request;
use common::nats::Nats;
use herald::config::Config;
use mqtt_codec::ProtocolVersion::V5;
use mqtt_codec::{Packet, QoS, ReasonCode};

fn node_config(nats: &str, id: &str) -> Config {
    let mut c = common::config();
    c.cluster.nats = vec![nats.to_string()];
    c.cluster.node_id = id.into();
    c
}

#[tokio::test]
async fn one_node_answers_for_the_whole_cluster() {
    let nats = Nats::start();
    let mut with_api = node_config(&nats.url, "a");
    with_api.http.listen = "127.0.0.1:0".into();
    let a = common::start_with(with_api).await;
    // b has no HTTP listener of its own: a answers for it.
    let b = common::start_with(node_config(&nats.url, "b")).await;
    let http = a.server.http_addr().unwrap();

    let mut on_a = Raw::connect(a.addr, V5, "alpha").await;
    on_a.subscribe("news/#", QoS::AtLeastOnce).await;
    let mut on_b = Raw::connect(b.addr, V5, "bravo").await;
    on_b.subscribe("news/+", QoS::AtMostOnce).await;
    let _also_b = Raw::connect(b.addr, V5, "charlie").await;
    // a hears b's beat (every 2 s) before it waits for b's answers.
    let cluster = a.server.cluster().unwrap();
    common::eventually_within("a sees b", Duration::from_secs(10), || {
        cluster.others_up() == 1
    })
    .await;

    let all = request(http, "GET", "/api/v1/clients", &[], "")
        .await
        .json();
    let listed: Vec<(&str, &str)> = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["client_id"].as_str().unwrap(),
                c["node"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        listed,
        [("alpha", "a"), ("bravo", "b"), ("charlie", "b")],
        "{all}"
    );
    // Paged across nodes by client id.
    let first = request(http, "GET", "/api/v1/clients?limit=2", &[], "")
        .await
        .json();
    assert_eq!(first["items"].as_array().unwrap().len(), 2);
    assert_eq!(first["next"], "bravo");
    let rest = request(http, "GET", "/api/v1/clients?limit=2&after=bravo", &[], "")
        .await
        .json();
    assert_eq!(rest["items"][0]["client_id"], "charlie");
    assert_eq!(rest["next"], serde_json::Value::Null);

    let subs = request(http, "GET", "/api/v1/subscriptions?filter=%23", &[], "")
        .await
        .json();
    let listed: Vec<(&str, &str)> = subs["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["filter"].as_str().unwrap(), s["node"].as_str().unwrap()))
        .collect();
    assert_eq!(listed, [("news/#", "a"), ("news/+", "b")], "{subs}");

    // A client of b, looked at and disconnected through a.
    let one = request(http, "GET", "/api/v1/clients/bravo", &[], "")
        .await
        .json();
    assert_eq!(
        (&one["node"], &one["connected"]),
        (&"b".into(), &true.into())
    );
    assert_eq!(one["subscriptions"][0]["filter"], "news/+");
    let missing = request(http, "GET", "/api/v1/clients/nobody", &[], "").await;
    assert_eq!(missing.status, 404);
    let kicked = request(
        http,
        "DELETE",
        "/api/v1/clients/bravo?discard_session=true",
        &[],
        "",
    )
    .await
    .json();
    assert_eq!(kicked["node"], "b");
    assert_eq!(kicked["disconnected"], true);
    match on_b.try_recv(Duration::from_secs(5)).await {
        Some(Packet::Disconnect(d)) => assert_eq!(d.reason_code, ReasonCode::AdministrativeAction),
        other => panic!("{other:?}"),
    }
    common::eventually("b ended bravo's session", || {
        b.server
            .broker()
            .find_tenant("")
            .is_some_and(|t| t.sessions.get("bravo").is_none())
    })
    .await;

    // Published through a's API, delivered on b.
    let mut reader = Raw::connect(b.addr, V5, "reader").await;
    reader.subscribe("news/today", QoS::AtLeastOnce).await;
    common::eventually_within("b subscribed on NATS", Duration::from_secs(10), || {
        b.server
            .cluster()
            .unwrap()
            .stats
            .subscriptions
            .load(std::sync::atomic::Ordering::Relaxed)
            == 1
    })
    .await;
    assert!(b.server.cluster().unwrap().settle().await);
    let published = request(
        http,
        "POST",
        "/api/v1/publish",
        &[],
        r#"{"topic": "news/today", "payload": "hello", "qos": 1}"#,
    )
    .await;
    assert_eq!(published.status, 200, "{}", published.body);
    let got = reader.recv_publish().await;
    assert_eq!(&got.payload[..], b"hello");
    let _ = on_a;
}

#[tokio::test]
async fn a_retry_sent_to_another_node_is_recognised() {
    let nats = Nats::start();
    let mut config = node_config(&nats.url, "a");
    config.http.listen = "127.0.0.1:0".into();
    let a = common::start_with(config).await;
    let mut config = node_config(&nats.url, "b");
    config.http.listen = "127.0.0.1:0".into();
    let b = common::start_with(config).await;
    let (http_a, http_b) = (a.server.http_addr().unwrap(), b.server.http_addr().unwrap());
    let mut sub = Raw::connect(b.addr, V5, "orders").await;
    sub.subscribe("orders/#", QoS::AtLeastOnce).await;

    let body = r#"{"topic": "orders/7", "payload": "shipped", "qos": 1}"#;
    let key = [("Idempotency-Key", "order-7")];
    let first = request(http_a, "POST", "/api/v1/publish", &key, body).await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(first.header("idempotent-replayed"), None);
    // The retry goes to b: answered as the first was, and nothing is published again.
    let retry = request(http_b, "POST", "/api/v1/publish", &key, body).await;
    assert_eq!(retry.status, 200, "{}", retry.body);
    assert_eq!(retry.header("idempotent-replayed"), Some("true"));
    assert_eq!(retry.json(), first.json());
    assert_eq!(&sub.recv_publish().await.payload[..], b"shipped");
    sub.expect_nothing().await;
    // The same key with another request, on either node: refused.
    let other = r#"{"topic": "orders/8", "payload": "lost", "qos": 1}"#;
    for http in [http_a, http_b] {
        let reused = request(http, "POST", "/api/v1/publish", &key, other).await;
        assert_eq!(reused.status, 422, "{}", reused.body);
    }
    sub.expect_nothing().await;
}
