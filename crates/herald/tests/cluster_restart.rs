//! A clustered node SIGKILLed and started again on its store: its persistent sessions get
//! every QoS 1/2 message published on another node while it was down (read from the
//! cluster's stream) and before (from its store, or the stream when it died before writing
//! them down), each once. The node is the herald binary in a process of its own; NATS is a
//! real nats-server.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::Raw;
use common::nats::{Nats, Node};
use mqtt_codec::ProtocolVersion::V5;
use mqtt_codec::{Connect, Packet, Publish, QoS};

fn persistent(id: &str) -> Connect {
    let mut c = Connect::new(V5, id, 60);
    c.clean_start = false;
    c.properties.session_expiry_interval = Some(3600);
    c
}

async fn publish_acked(publisher: &mut Raw, topic: &str, payload: &[u8]) {
    let mut p = Publish::new(topic, payload.to_vec());
    p.qos = QoS::AtLeastOnce;
    p.packet_id = publisher.next_id();
    publisher.send(Packet::Publish(p)).await;
    match publisher.try_recv(Duration::from_secs(30)).await {
        Some(Packet::PubAck(ack)) => assert_eq!(ack.reason_code, mqtt_codec::ReasonCode::Success),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_node_killed_and_restarted_catches_up_its_persistent_sessions() {
    let nats = Nats::start();
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::config();
    config.cluster.nats = vec![nats.url.clone()];
    config.cluster.node_id = "a".into();
    let a = common::start_with(config).await;
    let mut b = Node::start(dir.path(), &nats.url, "b", 1);

    // A persistent session on b, subscribed; its interest has reached NATS once a probe
    // published on a arrives.
    let (mut sub, ack) = Raw::connect_with(b.addr, persistent("sub")).await;
    assert_eq!(ack.reason_code, mqtt_codec::ReasonCode::Success);
    sub.subscribe("jobs/#", QoS::AtLeastOnce).await;
    let mut publisher = Raw::connect(a.addr, V5, "publisher").await;
    let mut probes = 0;
    loop {
        publish_acked(&mut publisher, "jobs/probe", b"probe").await;
        probes += 1;
        assert!(probes < 100, "b's subscription never reached NATS");
        if let Ok(p) = tokio::time::timeout(Duration::from_millis(100), sub.recv_publish()).await {
            sub.send(Packet::PubAck(mqtt_codec::Ack::new(p.packet_id)))
                .await;
            break;
        }
    }
    // Later probes may still come; acknowledged, then the subscriber leaves.
    while let Ok(p) = tokio::time::timeout(Duration::from_millis(500), sub.recv_publish()).await {
        sub.send(Packet::PubAck(mqtt_codec::Ack::new(p.packet_id)))
            .await;
    }
    sub.disconnect().await;

    // Queued for the offline session on b; b is killed right after the last PUBACK, maybe
    // before it wrote them all down.
    for n in 0..20 {
        publish_acked(&mut publisher, "jobs/x", format!("{n}").as_bytes()).await;
    }
    b.kill();
    // Published while b is down: the stream keeps them.
    for n in 20..40 {
        publish_acked(&mut publisher, "jobs/x", format!("{n}").as_bytes()).await;
    }

    b.restart();
    let restored = b
        .log
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.contains("store restored sessions=1 "));
    assert!(restored, "the log says one session was restored");
    let (mut sub, ack) = Raw::connect_with(b.addr, persistent("sub")).await;
    assert!(ack.session_present);
    let mut seen: HashMap<String, u32> = HashMap::new();
    while seen.len() < 40 {
        let p = match sub.try_recv(Duration::from_secs(30)).await {
            Some(Packet::Publish(p)) => p,
            other => panic!("{} of 40 arrived, then {other:?}", seen.len()),
        };
        sub.send(Packet::PubAck(mqtt_codec::Ack::new(p.packet_id)))
            .await;
        let payload = String::from_utf8(p.payload.to_vec()).unwrap();
        if payload != "probe" {
            *seen.entry(payload).or_default() += 1;
        }
    }
    sub.expect_nothing().await;
    for n in 0..40 {
        assert_eq!(seen.get(&format!("{n}")), Some(&1), "message {n}: {seen:?}");
    }
}
