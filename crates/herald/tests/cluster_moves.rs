//! Persistent sessions moving between nodes, with a real nats-server: a client that comes
//! back to another node with Clean Start 0 finds its session there (session present), with
//! its subscriptions, what was queued for it, its QoS 2 exchanges where they stood; and a
//! client taken over while messages flow misses none and gets no QoS 2 message twice.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::Raw;
use common::nats::Nats;
use herald::config::Config;
use mqtt_codec::ProtocolVersion::{V3_1_1, V5};
use mqtt_codec::{Ack, Connect, Packet, ProtocolVersion, QoS, ReasonCode, SubscriptionOptions};

fn node_config(nats: &str, id: &str, store: Option<&std::path::Path>) -> Config {
    let mut c = common::config();
    c.cluster.nats = vec![nats.to_string()];
    c.cluster.node_id = id.into();
    if let Some(dir) = store {
        c.store.in_memory = false;
        c.store.data_dir = dir.to_path_buf();
        c.store.min_free_disk_bytes = 0;
    }
    c
}

/// Whether `node` has a session for the default tenant's `client_id`.
fn has_session(node: &common::TestServer, client_id: &str) -> bool {
    session_is(node, client_id, |_| true)
}

/// Whether `node` has a session for the default tenant's `client_id` whose state passes
/// `check`.
fn session_is(
    node: &common::TestServer,
    client_id: &str,
    check: impl Fn(&herald::broker::session::SessionState) -> bool,
) -> bool {
    let tenant = node.server.broker().find_tenant("");
    let session = tenant.and_then(|t| t.sessions.get(client_id));
    session.is_some_and(|s| check(&s.lock()))
}

/// A CONNECT that resumes (Clean Start 0; v5: a session expiry of five minutes).
fn resuming(version: ProtocolVersion, id: &str) -> Connect {
    let mut c = Connect::new(version, id, 60);
    c.clean_start = false;
    if version == V5 {
        c.properties.session_expiry_interval = Some(300);
    }
    c
}

/// The next packet within `within`, or `None`.
async fn next(raw: &mut Raw, within: Duration) -> Option<Packet> {
    tokio::time::timeout(within, raw.try_recv(within * 2))
        .await
        .ok()
        .flatten()
}

/// The first node's subscriptions reach NATS before anything is published elsewhere.
async fn settled(node: &common::TestServer) {
    assert!(node.server.cluster().unwrap().settle().await);
}

#[tokio::test]
async fn a_session_moves_with_its_subscriptions_queue_and_exchanges() {
    for stored in [false, true] {
        let nats = Nats::start();
        let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (da, db) = match stored {
            true => (Some(dirs.0.path()), Some(dirs.1.path())),
            false => (None, None),
        };
        let a = common::start_with(node_config(&nats.url, "a", da)).await;
        let b = common::start_with(node_config(&nats.url, "b", db)).await;

        let (mut mover, ack) = Raw::connect_with(a.addr, resuming(V5, "mover")).await;
        assert_eq!(ack.reason_code, ReasonCode::Success);
        assert!(!ack.session_present);
        mover.subscribe("m/#", QoS::ExactlyOnce).await;
        let options = SubscriptionOptions {
            retain_as_published: true,
            ..SubscriptionOptions::qos(QoS::AtLeastOnce)
        };
        common::subscribe_opts(&mut mover, "x/+", options, Some(42)).await;
        settled(&a).await;
        let mut publisher = Raw::connect(b.addr, V5, "publisher").await;

        // A QoS 2 message received and not acknowledged, one PUBREC'd and not completed.
        publisher
            .publish("m/0", b"zero", QoS::ExactlyOnce, false)
            .await;
        publisher
            .publish("m/1", b"one", QoS::ExactlyOnce, false)
            .await;
        let mut sent = Vec::new();
        while sent.len() < 2 {
            match next(&mut mover, Duration::from_secs(5)).await {
                Some(Packet::Publish(p)) => sent.push((p.packet_id, p.payload.to_vec())),
                other => panic!("expected the QoS 2 messages, got {other:?}"),
            }
        }
        assert_eq!(sent[1].1, b"one");
        mover.send(Packet::PubRec(Ack::new(sent[1].0))).await;
        match next(&mut mover, Duration::from_secs(5)).await {
            Some(Packet::PubRel(r)) => assert_eq!(r.packet_id, sent[1].0),
            other => panic!("expected PUBREL, got {other:?}"),
        }
        drop(mover);
        common::eventually("a sees the client gone", || {
            session_is(&a, "mover", |st| !st.connected())
        })
        .await;

        // Queued on a while the client is away.
        for i in 0..20 {
            let topic = format!("m/q/{i}");
            publisher
                .publish(&topic, i.to_string().as_bytes(), QoS::AtLeastOnce, false)
                .await;
        }
        publisher
            .publish("x/r", b"kept", QoS::AtLeastOnce, true)
            .await;
        common::eventually("a queued them", || {
            session_is(&a, "mover", |st| st.queued().0 == 21)
        })
        .await;

        // Back on b: the session is there.
        let (mut mover, ack) = Raw::connect_with(b.addr, resuming(V5, "mover")).await;
        assert_eq!(ack.reason_code, ReasonCode::Success);
        assert!(ack.session_present, "the session moved (stored: {stored})");
        assert!(!has_session(&a, "mover"), "a handed it over");
        // First the exchanges where they stood: the PUBLISH again with DUP and its packet
        // id, the PUBREL again; then the queue in order.
        match next(&mut mover, Duration::from_secs(5)).await {
            Some(Packet::Publish(p)) => {
                assert_eq!((p.packet_id, p.payload.to_vec()), sent[0].clone());
                assert!(p.dup);
                assert_eq!(p.qos, QoS::ExactlyOnce);
                mover.send(Packet::PubRec(Ack::new(p.packet_id))).await;
            }
            other => panic!("expected m/0 again, got {other:?}"),
        }
        let mut released = HashSet::new();
        let mut queued = Vec::new();
        let mut retained_flag = None;
        while queued.len() < 21 || released.len() < 2 {
            match next(&mut mover, Duration::from_secs(5)).await {
                Some(Packet::PubRel(r)) => {
                    released.insert(r.packet_id);
                    mover.send(Packet::PubComp(Ack::new(r.packet_id))).await;
                }
                Some(Packet::Publish(p)) => {
                    assert_eq!(p.qos, QoS::AtLeastOnce);
                    if &*p.topic == "x/r" {
                        assert_eq!(
                            p.properties.subscription_identifiers,
                            vec![42],
                            "its subscription identifier moved"
                        );
                        retained_flag = Some(p.retain);
                    }
                    queued.push(p.payload.to_vec());
                    mover.send(Packet::PubAck(Ack::new(p.packet_id))).await;
                }
                other => panic!("expected the queue, got {other:?} after {queued:?}"),
            }
        }
        let expected: Vec<Vec<u8>> = (0..20)
            .map(|i: i32| i.to_string().into_bytes())
            .chain([b"kept".to_vec()])
            .collect();
        assert_eq!(queued, expected, "once each, in order");
        assert_eq!(retained_flag, Some(true), "retain as published moved");
        assert_eq!(released, HashSet::from([sent[0].0, sent[1].0]));
        assert!(next(&mut mover, Duration::from_millis(300)).await.is_none());

        // Its subscriptions are b's now: a message published on a reaches it there.
        let mut on_a = Raw::connect(a.addr, V5, "on-a").await;
        on_a.publish("x/s", b"after", QoS::AtLeastOnce, false).await;
        match next(&mut mover, Duration::from_secs(5)).await {
            Some(Packet::Publish(p)) => assert_eq!(&p.payload[..], b"after"),
            other => panic!("expected the message from a, got {other:?}"),
        }
        let stats = &b.server.cluster().unwrap().registry_stats;
        assert_eq!(stats.moved.load(Ordering::Relaxed), 1);
        let stats = &a.server.cluster().unwrap().registry_stats;
        assert_eq!(stats.handed_over.load(Ordering::Relaxed), 1);
    }
}

#[tokio::test]
async fn a_session_without_expiry_or_with_clean_start_does_not_move() {
    let nats = Nats::start();
    let a = common::start_with(node_config(&nats.url, "a", None)).await;
    let b = common::start_with(node_config(&nats.url, "b", None)).await;
    // v5 with no session expiry: the session ends with its connection anyway.
    let mut c = resuming(V5, "short");
    c.properties.session_expiry_interval = None;
    let (mut short, _) = Raw::connect_with(a.addr, c.clone()).await;
    short.subscribe("s/#", QoS::AtLeastOnce).await;
    let (_again, ack) = Raw::connect_with(b.addr, c).await;
    assert!(!ack.session_present);
    // 3.1.1 Clean Session 0 moves; Clean Session 1 starts afresh.
    let (mut old, _) = Raw::connect_with(a.addr, resuming(V3_1_1, "v3")).await;
    old.subscribe("v/#", QoS::AtLeastOnce).await;
    let (_new, ack) = Raw::connect_with(b.addr, resuming(V3_1_1, "v3")).await;
    assert!(ack.session_present);
    assert!(old.expect_closed().await.is_empty());
    let (_fresh, ack) = Raw::connect_with(a.addr, Connect::new(V3_1_1, "v3", 60)).await;
    assert!(!ack.session_present);
    common::eventually("b let go", || !has_session(&b, "v3")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nothing_is_missed_or_doubled_while_a_session_moves() {
    let nats = Nats::start();
    let a = common::start_with(node_config(&nats.url, "a", None)).await;
    let b = common::start_with(node_config(&nats.url, "b", None)).await;
    let c = common::start_with(node_config(&nats.url, "c", None)).await;
    let (mut first, _) = Raw::connect_with(a.addr, resuming(V5, "roamer")).await;
    first.subscribe("flow/#", QoS::ExactlyOnce).await;
    settled(&a).await;

    // Publishers on every node, QoS 1 and 2, while the client moves a → b → c → a.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut publishers = Vec::new();
    for (i, addr) in [a.addr, b.addr, c.addr].into_iter().enumerate() {
        let stop = stop.clone();
        publishers.push(tokio::spawn(async move {
            let mut p = Raw::connect(addr, V5, &format!("pub-{i}")).await;
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let qos = if n % 2 == 0 {
                    QoS::ExactlyOnce
                } else {
                    QoS::AtLeastOnce
                };
                let topic = format!("flow/{i}");
                p.publish(&topic, format!("{i}-{n}").as_bytes(), qos, false)
                    .await;
                n += 1;
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
            (i, n)
        }));
    }

    // Deliveries counted as a QoS 2 receiver does: a packet id not yet released is the
    // same message again (DUP), whichever connection it arrives on.
    let mut counts: HashMap<String, u32> = HashMap::new();
    let mut unreleased: HashSet<u16> = HashSet::new();
    let mut receive = |p: Packet| -> Option<Packet> {
        match p {
            Packet::Publish(p) => {
                let payload = String::from_utf8(p.payload.to_vec()).unwrap();
                match p.qos {
                    QoS::ExactlyOnce => {
                        if unreleased.insert(p.packet_id) {
                            *counts.entry(payload).or_default() += 1;
                        }
                        Some(Packet::PubRec(Ack::new(p.packet_id)))
                    }
                    _ => {
                        *counts.entry(payload).or_default() += 1;
                        Some(Packet::PubAck(Ack::new(p.packet_id)))
                    }
                }
            }
            Packet::PubRel(r) => {
                unreleased.remove(&r.packet_id);
                Some(Packet::PubComp(Ack::new(r.packet_id)))
            }
            _ => None,
        }
    };
    let mut current = first;
    for target in [b.addr, c.addr, a.addr] {
        let until = tokio::time::Instant::now() + Duration::from_millis(700);
        while tokio::time::Instant::now() < until {
            if let Some(p) = next(&mut current, Duration::from_millis(50)).await
                && let Some(answer) = receive(p)
            {
                let _ = current.try_send(answer).await;
            }
        }
        let (mut moved, ack) = Raw::connect_with(target, resuming(V5, "roamer")).await;
        assert!(ack.session_present, "the session moved");
        // What the old connection still had to say, then it is told 0x8E.
        while let Some(p) = next(&mut current, Duration::from_millis(500)).await {
            if let Packet::Disconnect(d) = &p {
                assert_eq!(d.reason_code, ReasonCode::SessionTakenOver);
                break;
            }
            // Acknowledgements sent now may reach a node that no longer has the session:
            // the messages come again on the new connection (QoS 2 with their packet id).
            if let Some(answer) = receive(p) {
                let _ = current.try_send(answer).await;
            }
        }
        std::mem::swap(&mut current, &mut moved);
    }
    stop.store(true, Ordering::Relaxed);
    let mut published = Vec::new();
    for p in publishers {
        published.push(p.await.unwrap());
    }
    // Everything still coming, until quiet.
    while let Some(p) = next(&mut current, Duration::from_secs(2)).await {
        if let Some(answer) = receive(p) {
            current.send(answer).await;
        }
    }
    // Every acknowledged publication arrived; none of the QoS 2 ones (even numbers) twice.
    let total: usize = published.iter().map(|(_, n)| n).sum();
    assert!(total > 300, "the load ran: {total} published");
    let mut missing = Vec::new();
    let mut qos2_twice = Vec::new();
    for (i, n) in published {
        for k in 0..n {
            match counts.get(&format!("{i}-{k}")) {
                None => missing.push(format!("{i}-{k}")),
                Some(c) if *c > 1 && k % 2 == 0 => qos2_twice.push(format!("{i}-{k}")),
                _ => {}
            }
        }
    }
    assert!(
        missing.is_empty(),
        "missed {} of {total}: {missing:?}",
        missing.len()
    );
    assert!(qos2_twice.is_empty(), "QoS 2 twice: {qos2_twice:?}");
    for node in [&a, &b, &c] {
        let stats = &node.server.cluster().unwrap().registry_stats;
        assert_eq!(stats.moved.load(Ordering::Relaxed), 1, "moved here once");
        assert_eq!(
            stats.handed_over.load(Ordering::Relaxed),
            1,
            "moved away once"
        );
        assert_eq!(stats.moves_failed.load(Ordering::Relaxed), 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stopping_node_hands_its_sessions_to_clients_coming_back_elsewhere() {
    let nats = Nats::start();
    let a = common::start_with(node_config(&nats.url, "a", None)).await;
    let b = common::start_with(node_config(&nats.url, "b", None)).await;
    let (mut c, _) = Raw::connect_with(a.addr, resuming(V5, "leaving")).await;
    c.subscribe("l/#", QoS::AtLeastOnce).await;
    drop(c);
    let mut publisher = Raw::connect(b.addr, V5, "p").await;
    common::eventually("a has the session offline", || {
        session_is(&a, "leaving", |st| !st.connected())
    })
    .await;
    publisher
        .publish("l/1", b"queued on a", QoS::AtLeastOnce, false)
        .await;
    common::eventually("a queued it", || {
        session_is(&a, "leaving", |st| st.queued().0 == 1)
    })
    .await;
    // a stops; the client comes back on b a moment later and finds its session.
    let stopping = tokio::spawn(async move {
        a.server.shutdown(Duration::from_secs(1)).await;
    });
    // (A client backs off a little before it connects again.)
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (mut back, ack) = Raw::connect_with(b.addr, resuming(V5, "leaving")).await;
    assert!(ack.session_present, "a answered while it stopped");
    match next(&mut back, Duration::from_secs(5)).await {
        Some(Packet::Publish(p)) => assert_eq!(&p.payload[..], b"queued on a"),
        other => panic!("expected what a held, got {other:?}"),
    }
    tokio::time::timeout(Duration::from_secs(10), stopping)
        .await
        .expect("a stopped within its grace")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_delayed_will_is_not_published_when_its_session_moves() {
    let nats = Nats::start();
    let a = common::start_with(node_config(&nats.url, "a", None)).await;
    let b = common::start_with(node_config(&nats.url, "b", None)).await;
    let mut watcher = Raw::connect(b.addr, V5, "watcher").await;
    watcher.subscribe("wills/#", QoS::AtLeastOnce).await;
    settled(&b).await;
    for round in 0..5 {
        let id = format!("willing-{round}");
        let mut c = resuming(V5, &id);
        c.will = Some(mqtt_codec::LastWill {
            topic: "wills/gone".into(),
            payload: bytes::Bytes::from_static(b"gone"),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: mqtt_codec::properties::WillProperties {
                will_delay_interval: Some(60),
                ..Default::default()
            },
        });
        let (_old, _) = Raw::connect_with(a.addr, c.clone()).await;
        // Taken over on b at once: the session lives on there, so the will waits for a
        // delay that a resumed session cancels [MQTT-3.1.3-9].
        let (_new, ack) = Raw::connect_with(b.addr, c).await;
        assert!(ack.session_present, "round {round}");
    }
    let quiet = next(&mut watcher, Duration::from_millis(500)).await;
    assert!(quiet.is_none(), "a will was published: {quiet:?}");
}
