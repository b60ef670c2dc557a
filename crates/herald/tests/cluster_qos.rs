//! QoS 1 and 2 across nodes, with real nats-server processes: a publisher is acknowledged
//! once the cluster's JetStream stream keeps its message (not before: with NATS gone the
//! acknowledgement waits, while the node's own subscribers still get the message), a node
//! cut off from NATS catches up from the stream when it is back, and a NATS server of three
//! dying under load loses nothing acknowledged and delivers nothing twice.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::Raw;
use common::nats::until_subscribed;
use common::nats::{Link, Nats, NatsCluster};
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
    // Connected before NATS goes: a node cut off from NATS accepts no CONNECT.
    let mut other = client(a.addr, "other").await;
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

async fn publish_acked(publisher: &mut Raw, topic: &str, payload: &[u8]) {
    let p = publish(publisher, topic, payload, QoS::AtLeastOnce);
    publisher.send(p).await;
    match publisher.recv().await {
        Packet::PubAck(ack) => assert_eq!(ack.reason_code, mqtt_codec::ReasonCode::Success),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_node_cut_off_from_nats_catches_up_from_the_stream() {
    let nats = Nats::start();
    let link = Link::to(&nats.url).await;
    let a = common::start_with(node_config(std::slice::from_ref(&nats.url), "a")).await;
    let b = common::start_with(node_config(&[link.url()], "b")).await;
    let mut sub = client(b.addr, "sub").await;
    sub.subscribe("feed/#", QoS::AtLeastOnce).await;
    until_subscribed(&b, 2).await;
    let mut publisher = client(a.addr, "publisher").await;
    for n in 0..10 {
        publish_acked(&mut publisher, "feed/x", format!("{n}").as_bytes()).await;
    }
    for n in 0..10 {
        let p = sub.recv_publish().await;
        sub.send(Packet::PubAck(mqtt_codec::Ack::new(p.packet_id)))
            .await;
        assert_eq!(p.payload, format!("{n}").as_bytes());
    }

    // b loses NATS; a goes on, and its publisher is acknowledged by the stream.
    link.cut();
    let cluster_b = b.server.cluster().unwrap();
    common::eventually_within("b lost NATS", Duration::from_secs(10), || {
        !cluster_b.connected()
    })
    .await;
    for n in 10..60 {
        publish_acked(&mut publisher, "feed/x", format!("{n}").as_bytes()).await;
    }
    sub.expect_nothing().await;

    // Back: b reads what it missed from the stream, each once, in order.
    link.mend();
    for n in 10..60 {
        let p = tokio::time::timeout(Duration::from_secs(30), sub.recv_publish())
            .await
            .expect("caught up");
        sub.send(Packet::PubAck(mqtt_codec::Ack::new(p.packet_id)))
            .await;
        assert_eq!(p.payload, format!("{n}").as_bytes());
    }
    sub.expect_nothing().await;
    assert_eq!(cluster_b.gap.caught_up.load(Ordering::Relaxed), 50);
    assert_eq!(cluster_b.gap.lost.load(Ordering::Relaxed), 0);
    // And live again, once each.
    for n in 60..65 {
        publish_acked(&mut publisher, "feed/x", format!("{n}").as_bytes()).await;
    }
    for n in 60..65 {
        let p = sub.recv_publish().await;
        sub.send(Packet::PubAck(mqtt_codec::Ack::new(p.packet_id)))
            .await;
        assert_eq!(p.payload, format!("{n}").as_bytes());
    }
    sub.expect_nothing().await;
}

#[tokio::test]
async fn nothing_acknowledged_is_lost_when_a_nats_server_dies() {
    const N: usize = 300;
    let mut nats = NatsCluster::start();
    nats.ready().await;
    let urls = nats.urls();
    let mut config = node_config(&urls, "a");
    config.cluster.replicas = 3;
    let a = common::start_with(config).await;
    let mut config = node_config(&urls, "b");
    config.cluster.replicas = 3;
    let b = common::start_with(config).await;
    let mut sub = client(b.addr, "sub").await;
    sub.subscribe("load/#", QoS::AtLeastOnce).await;
    until_subscribed(&b, 2).await;

    let addr = a.addr;
    let publisher = tokio::spawn(async move {
        let mut publisher = client(addr, "publisher").await;
        for n in 0..N {
            let p = publish(
                &mut publisher,
                "load/x",
                format!("{n}").as_bytes(),
                QoS::AtLeastOnce,
            );
            publisher.send(p).await;
            match publisher.try_recv(Duration::from_secs(60)).await {
                Some(Packet::PubAck(ack)) => {
                    assert_eq!(ack.reason_code, mqtt_codec::ReasonCode::Success)
                }
                other => panic!("message {n}: {other:?}"),
            }
        }
    });
    let reader = tokio::spawn(async move {
        let mut seen = vec![0u32; N];
        let mut distinct = 0;
        while distinct < N {
            let p = match sub.try_recv(Duration::from_secs(60)).await {
                Some(Packet::Publish(p)) => p,
                other => panic!("{distinct} of {N} arrived, then {other:?}"),
            };
            sub.send(Packet::PubAck(mqtt_codec::Ack::new(p.packet_id)))
                .await;
            let n: usize = std::str::from_utf8(&p.payload).unwrap().parse().unwrap();
            if seen[n] == 0 {
                distinct += 1;
            }
            seen[n] += 1;
        }
        sub.expect_nothing().await;
        seen
    });
    // One of the three NATS servers dies while messages flow; the stream keeps a quorum.
    tokio::time::sleep(Duration::from_millis(300)).await;
    nats.servers[1].kill();
    publisher.await.unwrap();
    let seen = reader.await.unwrap();
    let twice: Vec<usize> = (0..N).filter(|&n| seen[n] > 1).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    let _ = b;
}
