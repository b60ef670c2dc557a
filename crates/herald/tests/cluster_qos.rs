//! QoS 1 and 2 across nodes, with real nats-server processes: a publisher is acknowledged
//! once the cluster's JetStream stream keeps its message (not before: with NATS gone the
//! acknowledgement waits, while the node's own subscribers still get the message), and a
//! node cut off from NATS catches up from the stream when it is back.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::Raw;
use common::nats::{Nats, NatsCluster};
use herald::config::Config;
use mqtt_codec::ProtocolVersion::V5;
use mqtt_codec::{Connect, Packet, Publish, QoS};

fn node_config(nats: &[String], id: &str) -> Config {
    let mut c = common::config();
    c.cluster.nats = nats.to_vec();
    c.cluster.node_id = id.into();
    c
}

async fn client(addr: std::net::SocketAddr, id: &str) -> Raw {
    let (raw, ack) = Raw::connect_with(addr, Connect::new(V5, id, 60)).await;
    assert_eq!(ack.reason_code, mqtt_codec::ReasonCode::Success);
    raw
}

/// Waits until `node` holds `n` NATS subscriptions and NATS has them.
async fn until_subscribed(node: &common::TestServer, n: u64) {
    let cluster = node.server.cluster().expect("clustered");
    let held = || cluster.stats.subscriptions.load(Ordering::Relaxed);
    common::eventually_within(
        &format!("{n} NATS subscriptions"),
        Duration::from_secs(10),
        || held() == n,
    )
    .await;
    assert!(cluster.settle().await, "NATS answers");
}

/// Messages the cluster's stream holds, read through `url`.
async fn stream_messages(url: &str) -> u64 {
    let client = async_nats::connect(url).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let mut stream = js
        .get_stream(herald::cluster::durable::stream_name("herald"))
        .await
        .unwrap();
    stream.info().await.unwrap().state.messages
}

fn publish(raw: &mut Raw, topic: &str, payload: &[u8], qos: QoS) -> Packet {
    let mut p = Publish::new(topic, payload.to_vec());
    p.qos = qos;
    p.packet_id = raw.next_id();
    Packet::Publish(p)
}

#[tokio::test]
async fn a_publisher_is_acknowledged_once_the_stream_keeps_its_message() {
    let mut nats = Nats::start();
    let urls = vec![nats.url.clone()];
    let a = common::start_with(node_config(&urls, "a")).await;
    let b = common::start_with(node_config(&urls, "b")).await;

    let mut remote = client(b.addr, "remote").await;
    remote.subscribe("orders/#", QoS::ExactlyOnce).await;
    let mut local = client(a.addr, "local").await;
    local.subscribe("orders/#", QoS::AtLeastOnce).await;
    until_subscribed(&b, 2).await;
    until_subscribed(&a, 2).await;
    let mut publisher = client(a.addr, "publisher").await;

    // QoS 1: acknowledged, kept in the stream, delivered on both nodes.
    let p = publish(&mut publisher, "orders/1", b"one", QoS::AtLeastOnce);
    publisher.send(p).await;
    assert!(matches!(publisher.recv().await, Packet::PubAck(_)));
    assert_eq!(stream_messages(&nats.url).await, 1);
    let got = remote.recv_publish().await;
    assert_eq!((&*got.topic, got.qos), ("orders/1", QoS::AtLeastOnce));
    assert_eq!(&*local.recv_publish().await.topic, "orders/1");

    // QoS 2: PUBREC once kept, delivered once.
    let p = publish(&mut publisher, "orders/2", b"two", QoS::ExactlyOnce);
    let id = match &p {
        Packet::Publish(p) => p.packet_id,
        _ => unreachable!(),
    };
    publisher.send(p).await;
    assert!(matches!(publisher.recv().await, Packet::PubRec(_)));
    publisher
        .send(Packet::PubRel(mqtt_codec::Ack::new(id)))
        .await;
    assert!(matches!(publisher.recv().await, Packet::PubComp(_)));
    assert_eq!(stream_messages(&nats.url).await, 2);
    let got = remote.recv_publish().await;
    assert_eq!((&*got.topic, got.qos), ("orders/2", QoS::ExactlyOnce));
    assert_eq!(&*local.recv_publish().await.topic, "orders/2");
    remote
        .send(Packet::PubRec(mqtt_codec::Ack::new(got.packet_id)))
        .await;
    assert!(matches!(remote.recv().await, Packet::PubRel(_)));
    remote
        .send(Packet::PubComp(mqtt_codec::Ack::new(got.packet_id)))
        .await;
    remote.expect_nothing().await;

    // NATS gone: the node's own subscriber still gets the message at once, the publisher's
    // acknowledgement waits for the stream.
    nats.kill();
    let p = publish(&mut publisher, "orders/3", b"three", QoS::AtLeastOnce);
    publisher.send(p).await;
    assert_eq!(&*local.recv_publish().await.topic, "orders/3");
    let early = tokio::time::timeout(Duration::from_secs(1), publisher.recv()).await;
    assert!(
        early.is_err(),
        "no PUBACK while the stream cannot keep the message: {early:?}"
    );
    let cluster = a.server.cluster().unwrap();
    assert_eq!(cluster.confirmations.waiting(), 1);
    // NATS back (its store kept): the message is written again and acknowledged.
    nats.restart();
    match publisher.try_recv(Duration::from_secs(20)).await {
        Some(Packet::PubAck(_)) => {}
        other => panic!("PUBACK once NATS is back, got {other:?}"),
    }
    assert_eq!(cluster.confirmations.waiting(), 0);
    assert_eq!(cluster.durable_stats.stored.load(Ordering::Relaxed), 3);
    assert_eq!(stream_messages(&nats.url).await, 3, "kept once");
}

#[tokio::test]
async fn refused_not_dropped_past_the_unconfirmed_bound() {
    let mut nats = Nats::start();
    let urls = vec![nats.url.clone()];
    let mut config = node_config(&urls, "a");
    config.cluster.max_unconfirmed = 2;
    let a = common::start_with(config).await;
    let mut publisher = client(a.addr, "publisher").await;
    nats.kill();
    for n in 0..2 {
        let p = publish(
            &mut publisher,
            "t",
            format!("{n}").as_bytes(),
            QoS::AtLeastOnce,
        );
        publisher.send(p).await;
    }
    let cluster = a.server.cluster().unwrap();
    common::eventually("two waiting", || cluster.confirmations.waiting() == 2).await;
    // The third (from another client: a connection's acknowledgements go out in order)
    // finds two waiting: refused at once with 0x97, and counted.
    let mut other = client(a.addr, "other").await;
    let p = publish(&mut other, "t", b"2", QoS::AtLeastOnce);
    other.send(p).await;
    match other.recv().await {
        Packet::PubAck(ack) => {
            assert_eq!(ack.reason_code, mqtt_codec::ReasonCode::QuotaExceeded)
        }
        other => panic!("{other:?}"),
    }
    let refused = a
        .server
        .broker()
        .stats
        .refusals(herald::broker::stats::RefuseReason::ClusterBacklog);
    assert_eq!(refused, 1);
    // The two waiting are acknowledged once NATS is back, in order.
    nats.restart();
    for _ in 0..2 {
        match publisher.try_recv(Duration::from_secs(20)).await {
            Some(Packet::PubAck(ack)) => {
                assert_eq!(ack.reason_code, mqtt_codec::ReasonCode::Success)
            }
            other => panic!("PUBACK once NATS is back, got {other:?}"),
        }
    }
    assert_eq!(stream_messages(&nats.url).await, 2);
}

/// Keeps the 3-server helper compiled and checked until the failure tests use it.
#[tokio::test]
async fn three_nats_servers_form_one_jetstream() {
    let nats = NatsCluster::start();
    nats.ready().await;
    assert_eq!(nats.urls().len(), 3);
}
