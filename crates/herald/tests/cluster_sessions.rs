//! One session per client id across the cluster, with real nats-server processes: a
//! CONNECT on one node takes the client id from another (v5 DISCONNECT 0x8E there), two
//! nodes claiming it at once end with one session, a node cut off from NATS accepts no
//! CONNECT (fencing), and once back lets go of what was claimed elsewhere meanwhile.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::Raw;
use common::nats::{Link, Nats};
use herald::config::Config;
use mqtt_codec::ProtocolVersion::{V3_1_1, V5};
use mqtt_codec::{Connect, Packet, ReasonCode};

fn node_config(nats: &str, id: &str) -> Config {
    let mut c = common::config();
    c.cluster.nats = vec![nats.to_string()];
    c.cluster.node_id = id.into();
    c
}

/// Whether `node` has a session for the default tenant's `client_id`.
fn has_session(node: &common::TestServer, client_id: &str) -> bool {
    node.server
        .broker()
        .find_tenant("")
        .is_some_and(|t| t.sessions.get(client_id).is_some())
}

/// The DISCONNECT (or close) a taken-over connection gets.
async fn taken_over(raw: &mut Raw, within: Duration) -> Option<ReasonCode> {
    match tokio::time::timeout(within, raw.try_recv(within * 2)).await {
        Ok(Some(Packet::Disconnect(d))) => Some(d.reason_code),
        Ok(None) => None,
        other => panic!("expected a DISCONNECT, got {other:?}"),
    }
}

#[tokio::test]
async fn a_connect_on_another_node_takes_the_client_id_over() {
    let nats = Nats::start();
    let a = common::start_with(node_config(&nats.url, "a")).await;
    let mut with_api = node_config(&nats.url, "b");
    with_api.http.listen = "127.0.0.1:0".into();
    let b = common::start_with(with_api).await;

    let mut first = Raw::connect(a.addr, V5, "device-1").await;
    assert!(has_session(&a, "device-1"));
    let (_second, ack) = Raw::connect_with(b.addr, Connect::new(V5, "device-1", 60)).await;
    assert_eq!(ack.reason_code, ReasonCode::Success);
    assert_eq!(
        taken_over(&mut first, Duration::from_secs(5)).await,
        Some(ReasonCode::SessionTakenOver)
    );
    common::eventually("a let go", || !has_session(&a, "device-1")).await;
    assert!(has_session(&b, "device-1"));
    let stats = &b.server.cluster().unwrap().registry_stats;
    assert_eq!(stats.taken_over.load(Ordering::Relaxed), 1);
    let stats = &a.server.cluster().unwrap().registry_stats;
    assert_eq!(stats.let_go.load(Ordering::Relaxed), 1);
    let http = b.server.http_addr().unwrap();
    let metrics = common::http::request(http, "GET", "/metrics", &[], "").await;
    assert!(
        metrics
            .body
            .contains("herald_cluster_client_claims_total{outcome=\"taken_over\"} 1"),
        "{}",
        metrics.body
    );

    // 3.1.1 has no DISCONNECT from the server: the connection is closed.
    let mut old = Raw::connect(b.addr, V3_1_1, "device-2").await;
    let (_new, ack) = Raw::connect_with(a.addr, Connect::new(V3_1_1, "device-2", 60)).await;
    assert_eq!(ack.reason_code, ReasonCode::Success);
    assert!(old.expect_closed().await.is_empty());

    // A client that leaves releases its client id: the next claim takes nothing over.
    let c = Raw::connect(a.addr, V5, "device-3").await;
    c.disconnect().await;
    common::eventually("a ended the session", || !has_session(&a, "device-3")).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = b
        .server
        .cluster()
        .unwrap()
        .registry_stats
        .taken_over
        .load(Ordering::Relaxed);
    let _c = Raw::connect(b.addr, V5, "device-3").await;
    let after = b
        .server
        .cluster()
        .unwrap()
        .registry_stats
        .taken_over
        .load(Ordering::Relaxed);
    assert_eq!(after, before, "nothing to take over");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn two_nodes_claiming_at_once_end_with_one_session() {
    let nats = Nats::start();
    let a = common::start_with(node_config(&nats.url, "a")).await;
    let b = common::start_with(node_config(&nats.url, "b")).await;
    for round in 0..10 {
        let id = format!("racer-{round}");
        let (ca, cb) = tokio::join!(
            Raw::connect_with(a.addr, Connect::new(V5, id.as_str(), 60)),
            Raw::connect_with(b.addr, Connect::new(V5, id.as_str(), 60)),
        );
        let (mut ca, mut cb) = (ca.0, cb.0);
        // The loser is told 0x8E; the winner keeps its connection.
        let loser = tokio::select! {
            p = ca.try_recv(Duration::from_secs(9)) => (0, p),
            p = cb.try_recv(Duration::from_secs(9)) => (1, p),
        };
        match &loser.1 {
            Some(Packet::Disconnect(d)) => assert_eq!(d.reason_code, ReasonCode::SessionTakenOver),
            other => panic!("round {round}: {other:?}"),
        }
        let winner = if loser.0 == 0 { &mut cb } else { &mut ca };
        winner.expect_nothing().await;
        let lost = [loser.0 == 0, loser.0 == 1];
        common::eventually("one session", || {
            has_session(&a, &id) != has_session(&b, &id)
        })
        .await;
        // The survivor is the node whose session remains.
        assert_eq!(has_session(&a, &id), !lost[0], "round {round}");
    }
}

#[tokio::test]
async fn a_node_cut_off_from_nats_accepts_no_connect_and_lets_go_when_back() {
    let nats = Nats::start();
    let link = Link::to(&nats.url).await;
    let a = common::start_with(node_config(&nats.url, "a")).await;
    let b = common::start_with(node_config(&link.url(), "b")).await;
    let mut held = Raw::connect(b.addr, V5, "sensor").await;

    link.cut();
    let cluster_b = b.server.cluster().unwrap();
    common::eventually_within("b lost NATS", Duration::from_secs(10), || {
        !cluster_b.connected()
    })
    .await;
    // Fencing: b cannot claim a client id, so it accepts no CONNECT.
    let (_, ack) = Raw::connect_with(b.addr, Connect::new(V5, "other", 60)).await;
    assert_eq!(ack.reason_code, ReasonCode::ServerUnavailable);
    assert!(cluster_b.registry_stats.failed.load(Ordering::Relaxed) >= 1);
    // a takes "sensor" while b cannot hear of it; b's connection is still open.
    let (_moved, ack) = Raw::connect_with(a.addr, Connect::new(V5, "sensor", 60)).await;
    assert_eq!(ack.reason_code, ReasonCode::Success);
    assert!(has_session(&b, "sensor"));

    // Back: b checks its claims and lets go of "sensor".
    link.mend();
    assert_eq!(
        taken_over(&mut held, Duration::from_secs(30)).await,
        Some(ReasonCode::SessionTakenOver)
    );
    common::eventually("b let go", || !has_session(&b, "sensor")).await;
    assert!(has_session(&a, "sensor"));
    let (_, ack) = Raw::connect_with(b.addr, Connect::new(V5, "other", 60)).await;
    assert_eq!(ack.reason_code, ReasonCode::Success);
}
