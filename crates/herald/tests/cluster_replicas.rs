//! Replicated sessions, with a real nats-server and a herald process SIGKILLed with its data
//! directory removed (its machine lost): a client that comes back to another node resumes
//! its persistent session there, with what it was owed and its QoS 2 exchanges where they
//! stood, nothing acknowledged lost and no QoS 2 message delivered twice.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use common::Raw;
use common::nats::{Nats, Node};
use herald::config::Config;
use mqtt_codec::ProtocolVersion::V5;
use mqtt_codec::{Ack, Connect, Packet, QoS, ReasonCode};

const REPLICATE: [(&str, &str); 1] = [("HERALD_CLUSTER_REPLICATE_SESSIONS", "true")];

fn replicating(nats: &str, id: &str) -> Config {
    let mut c = common::config();
    c.cluster.nats = vec![nats.to_string()];
    c.cluster.node_id = id.into();
    c.cluster.replicate_sessions = true;
    c
}

/// A CONNECT that resumes, with a session expiry of five minutes.
fn resuming(id: &str) -> Connect {
    let mut c = Connect::new(V5, id, 60);
    c.clean_start = false;
    c.properties.session_expiry_interval = Some(300);
    c
}

/// The next packet within `within`, or `None` (the inner wait never ends first).
async fn next(raw: &mut Raw, within: Duration) -> Option<Packet> {
    tokio::time::timeout(within, raw.try_recv(Duration::from_secs(3600)))
        .await
        .ok()
        .flatten()
}

/// Connects to `addr` until a CONNACK says yes (the node may still be claiming).
async fn reconnect(addr: std::net::SocketAddr, id: &str) -> (Raw, mqtt_codec::ConnAck) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (raw, ack) = Raw::connect_with(addr, resuming(id)).await;
        if ack.reason_code == ReasonCode::Success || Instant::now() > deadline {
            return (raw, ack);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_session_outlives_its_nodes_machine() {
    let nats = Nats::start();
    let dir = tempfile::tempdir().unwrap();
    let mut a = Node::start_with(dir.path(), &nats.url, "a", 1, &REPLICATE);
    let b = common::start_with(replicating(&nats.url, "b")).await;

    let (mut sub, ack) = Raw::connect_with(a.addr, resuming("sub")).await;
    assert_eq!(ack.reason_code, ReasonCode::Success);
    assert!(!ack.session_present);
    sub.subscribe("r/#", QoS::ExactlyOnce).await;
    sub.subscribe("s/#", QoS::AtLeastOnce).await;
    let mut publisher = Raw::connect(b.addr, V5, "publisher").await;
    for i in 0..3 {
        let topic = format!("r/{i}");
        publisher
            .publish(&topic, topic.as_bytes(), QoS::ExactlyOnce, false)
            .await;
    }
    for i in 0..5 {
        let topic = format!("s/{i}");
        publisher
            .publish(&topic, topic.as_bytes(), QoS::AtLeastOnce, false)
            .await;
    }
    let mut ids = HashMap::new();
    while ids.len() < 8 {
        match next(&mut sub, Duration::from_secs(5)).await {
            Some(Packet::Publish(p)) => {
                ids.insert(p.topic.to_string(), p.packet_id);
            }
            other => panic!("expected the 8 messages, got {other:?} after {ids:?}"),
        }
    }
    // r/0 completed; r/1 received (PUBREC) and not completed; r/2 not acknowledged; s/0
    // and s/1 acknowledged, s/2..s/4 not.
    sub.send(Packet::PubRec(Ack::new(ids["r/0"]))).await;
    sub.send(Packet::PubRec(Ack::new(ids["r/1"]))).await;
    for _ in 0..2 {
        match next(&mut sub, Duration::from_secs(5)).await {
            Some(Packet::PubRel(r)) => assert!([ids["r/0"], ids["r/1"]].contains(&r.packet_id)),
            other => panic!("expected PUBREL, got {other:?}"),
        }
    }
    sub.send(Packet::PubComp(Ack::new(ids["r/0"]))).await;
    for t in ["s/0", "s/1"] {
        sub.send(Packet::PubAck(Ack::new(ids[t]))).await;
    }
    // Acknowledgements are written within a second.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    drop(sub);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Queued on a while the client is away.
    publisher
        .publish("r/3", b"r/3", QoS::ExactlyOnce, false)
        .await;
    publisher
        .publish("s/5", b"s/5", QoS::AtLeastOnce, false)
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The machine is lost: the process and its data.
    a.kill();
    std::fs::remove_dir_all(dir.path()).unwrap();

    let (mut sub, ack) = reconnect(b.addr, "sub").await;
    assert_eq!(ack.reason_code, ReasonCode::Success);
    assert!(ack.session_present, "the session resumed on b");
    let mut got = Vec::new();
    let mut released = Vec::new();
    while let Some(packet) = next(&mut sub, Duration::from_secs(3)).await {
        match packet {
            Packet::Publish(p) => {
                if p.topic.starts_with("r/") && p.topic != "r/3" {
                    assert_eq!(p.packet_id, ids[&*p.topic], "a QoS 2 message keeps its id");
                    assert!(p.dup, "sent again with DUP");
                }
                got.push(p.topic.to_string());
                let ack = Ack::new(p.packet_id);
                match p.qos {
                    QoS::ExactlyOnce => sub.send(Packet::PubRec(ack)).await,
                    _ => sub.send(Packet::PubAck(ack)).await,
                }
            }
            Packet::PubRel(r) => {
                released.push(r.packet_id);
                sub.send(Packet::PubComp(Ack::new(r.packet_id))).await;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    // r/1 was received: only its PUBREL again (then r/2's, r/3's after their PUBREC).
    assert_eq!(released.first(), Some(&ids["r/1"]), "PUBREL again first");
    let got_set: HashSet<&str> = got.iter().map(String::as_str).collect();
    assert_eq!(got.len(), got_set.len(), "nothing twice: {got:?}");
    let expected: HashSet<&str> = ["r/2", "s/2", "s/3", "s/4", "r/3", "s/5"].into();
    assert_eq!(got_set, expected, "what it was owed, nothing done again");
    // Its subscriptions are live on b.
    publisher
        .publish("s/6", b"s/6", QoS::AtLeastOnce, false)
        .await;
    let p = sub.recv_publish().await;
    assert_eq!(p.topic, "s/6");
    let stats = &b.server.cluster().unwrap().replica_stats;
    assert_eq!(stats.resumed.load(std::sync::atomic::Ordering::Relaxed), 1);
}

/// A QoS 2 receiver as the specification has it (method B): a message is delivered when
/// its PUBLISH first comes; its packet id is held until PUBREL, and a PUBLISH with a held
/// id is not delivered again. What it holds survives a reconnection (its session).
#[derive(Default)]
struct Receiver {
    held: HashSet<u16>,
    delivered: HashMap<String, usize>,
    /// Acknowledges nothing (its acknowledgements are lost with the node).
    mute: bool,
}

impl Receiver {
    async fn take(&mut self, raw: &mut Raw, packet: Packet) {
        let mut raw = Some(raw).filter(|_| !self.mute);
        let mut send = async |packet| {
            if let Some(raw) = raw.as_deref_mut() {
                let _ = raw.try_send(packet).await;
            }
        };
        match packet {
            Packet::Publish(p) => {
                let ack = Ack::new(p.packet_id);
                match p.qos {
                    QoS::ExactlyOnce => {
                        if self.held.insert(p.packet_id) {
                            *self.delivered.entry(p.topic.to_string()).or_default() += 1;
                        }
                        send(Packet::PubRec(ack)).await;
                    }
                    _ => {
                        *self.delivered.entry(p.topic.to_string()).or_default() += 1;
                        send(Packet::PubAck(ack)).await;
                    }
                }
            }
            Packet::PubRel(r) => {
                self.held.remove(&r.packet_id);
                send(Packet::PubComp(Ack::new(r.packet_id))).await;
            }
            _ => {}
        }
    }
}

#[tokio::test]
async fn nothing_acknowledged_is_lost_when_a_node_is_lost_while_messages_flow() {
    let nats = Nats::start();
    let dir = tempfile::tempdir().unwrap();
    let mut a = Node::start_with(dir.path(), &nats.url, "a", 1, &REPLICATE);
    let b = common::start_with(replicating(&nats.url, "b")).await;

    // A window of 10: what is past it waits in a's queue.
    let mut connect = resuming("flow");
    connect.properties.receive_maximum = Some(10);
    let (mut sub, ack) = Raw::connect_with(a.addr, connect).await;
    assert_eq!(ack.reason_code, ReasonCode::Success);
    sub.subscribe("f/#", QoS::ExactlyOnce).await;
    let mut receiver = Receiver::default();
    let mut publisher = Raw::connect(b.addr, V5, "publisher").await;
    // 300 messages, QoS 1 and 2 in turn; from the 120th the subscriber's acknowledgements
    // are lost (its window fills, a queues the rest); after the 150th it goes offline, and
    // a is lost (its process and its data) while the last 150 are published.
    let mut published = Vec::new();
    let mut publish = async |i: usize| {
        let qos = if i.is_multiple_of(2) {
            QoS::AtLeastOnce
        } else {
            QoS::ExactlyOnce
        };
        let topic = format!("f/{i}");
        publisher.publish(&topic, b"x", qos, false).await;
        (topic, qos)
    };
    for i in 0..150 {
        receiver.mute = i >= 120;
        published.push(publish(i).await);
        while let Some(p) = next(&mut sub, Duration::from_millis(2)).await {
            receiver.take(&mut sub, p).await;
        }
    }
    // Long enough for a's stream floor to pass what it routed, then offline: the snapshot
    // then written starts at what the session holds, not at the floor.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    drop(sub);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    a.kill();
    std::fs::remove_dir_all(dir.path()).unwrap();
    for i in 150..300 {
        published.push(publish(i).await);
    }
    receiver.mute = false;
    let (mut sub, ack) = reconnect(b.addr, "flow").await;
    assert_eq!(ack.reason_code, ReasonCode::Success);
    assert!(ack.session_present, "the session resumed on b");
    while let Some(p) = next(&mut sub, Duration::from_secs(3)).await {
        receiver.take(&mut sub, p).await;
    }
    let mut missing = Vec::new();
    for (topic, qos) in &published {
        match (receiver.delivered.get(topic), qos) {
            (None, _) => missing.push(topic.clone()),
            (Some(&n), QoS::ExactlyOnce) => assert_eq!(n, 1, "{topic} (QoS 2) delivered {n} times"),
            _ => {}
        }
    }
    assert!(
        missing.is_empty(),
        "acknowledged and never delivered: {missing:?}"
    );
}
