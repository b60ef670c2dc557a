//! The durable store across restarts of an in-process Herald on a real data directory:
//! queues in order, subscriptions, retained messages, QoS 2 state in both directions,
//! expiry across the restart, the directory lock and the disk limit. Crashes (SIGKILL of the
//! real binary) are in tests/crash.rs.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Raw, drain, ping};
use mqtt_codec::ProtocolVersion::{V3_1_1, V5};
use mqtt_codec::{Ack, Connect, Packet, ProtocolVersion, Publish, QoS, ReasonCode};

/// Herald on `dir`.
async fn start_on(dir: &Path) -> common::TestServer {
    let mut c = common::config();
    c.store.in_memory = false;
    c.store.data_dir = dir.to_path_buf();
    c.store.min_free_disk_bytes = 0;
    common::start_with(c).await
}

/// Stops it gracefully; its store is closed and unlocked when this returns.
async fn stop(s: common::TestServer) {
    s.server.shutdown(Duration::from_secs(5)).await;
}

/// A CONNECT that keeps the session: clean session 0 (3.1.1) or clean start 0 with an hour
/// of session expiry (5.0).
fn persistent(version: ProtocolVersion, id: &str) -> Connect {
    let mut c = Connect::new(version, id, 60);
    c.clean_start = false;
    if version.is_v5() {
        c.properties.session_expiry_interval = Some(3600);
    }
    c
}

async fn resume(s: &common::TestServer, version: ProtocolVersion, id: &str) -> (Raw, bool) {
    let (c, ack) = Raw::connect_with(s.addr, persistent(version, id)).await;
    assert_eq!(ack.reason_code, ReasonCode::Success, "{ack:?}");
    (c, ack.session_present)
}

fn payloads(ps: &[Publish]) -> Vec<String> {
    ps.iter()
        .map(|p| String::from_utf8_lossy(&p.payload).into_owned())
        .collect()
}

async fn puback_all(c: &mut Raw, ps: &[Publish]) {
    for p in ps {
        c.send(Packet::PubAck(Ack::new(p.packet_id))).await;
    }
    ping(c).await;
}

#[tokio::test]
async fn queues_subscriptions_and_retained_messages_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let s = start_on(dir.path()).await;
    for (version, id) in [(V3_1_1, "sub-311"), (V5, "sub-5")] {
        let (mut c, present) = resume(&s, version, id).await;
        assert!(!present);
        c.subscribe("q/#", QoS::ExactlyOnce).await;
        c.disconnect().await;
    }
    let mut publisher = Raw::connect(s.addr, V5, "pub").await;
    for i in 0..20 {
        let qos = if i % 2 == 0 {
            QoS::AtLeastOnce
        } else {
            QoS::ExactlyOnce
        };
        publisher
            .publish(&format!("q/{i}"), format!("m{i}").as_bytes(), qos, false)
            .await;
    }
    publisher
        .publish("q/retained", b"kept", QoS::AtLeastOnce, true)
        .await;
    publisher
        .publish("q/gone", b"deleted", QoS::AtLeastOnce, true)
        .await;
    publisher
        .publish("q/gone", b"", QoS::AtLeastOnce, true)
        .await;
    publisher.disconnect().await;
    // The 3.1.1 subscriber takes and acknowledges half before the restart.
    let (mut c, present) = resume(&s, V3_1_1, "sub-311").await;
    assert!(present);
    let first = drain(&mut c, 23).await;
    assert_eq!(first.len(), 23, "{:?}", payloads(&first));
    let (done, _) = first.split_at(10);
    for p in done {
        match p.qos {
            QoS::AtLeastOnce => c.send(Packet::PubAck(Ack::new(p.packet_id))).await,
            _ => {
                c.send(Packet::PubRec(Ack::new(p.packet_id))).await;
                assert_eq!(c.recv().await, Packet::PubRel(Ack::new(p.packet_id)));
                c.send(Packet::PubComp(Ack::new(p.packet_id))).await;
            }
        }
    }
    ping(&mut c).await;
    c.disconnect().await;
    stop(s).await;

    let s = start_on(dir.path()).await;
    let (mut c, present) = resume(&s, V5, "sub-5").await;
    assert!(present, "the session is restored");
    let all = drain(&mut c, 23).await;
    let mut expected: Vec<String> = (0..20).map(|i| format!("m{i}")).collect();
    expected.extend(["kept".into(), "deleted".into(), "".into()]);
    assert_eq!(payloads(&all), expected, "in order, nothing missing");
    assert!(all.iter().all(|p| !p.dup), "never sent before: no DUP");
    puback_all(&mut c, &all).await;
    // The subscription itself survived: a new message arrives without subscribing again.
    let mut publisher = Raw::connect(s.addr, V5, "pub").await;
    publisher
        .publish("q/after", b"after", QoS::AtLeastOnce, false)
        .await;
    let after = drain(&mut c, 1).await;
    assert_eq!(payloads(&after), vec!["after"]);

    let (mut old, present) = resume(&s, V3_1_1, "sub-311").await;
    assert!(present);
    let rest = drain(&mut old, 14).await;
    let got = payloads(&rest);
    // The ten acknowledged before the restart are not sent again; the three taken but not
    // acknowledged are (QoS 1 at least once; QoS 2 with DUP and its packet id), then the rest.
    assert!(!got.iter().any(|p| p == "m0" || p == "m9"), "{got:?}");
    assert_eq!(got.len(), 14, "{got:?}");
    assert_eq!(got.last().map(String::as_str), Some("after"));

    // The retained message, and only it, is there for a new subscriber.
    let mut fresh = Raw::connect(s.addr, V5, "fresh").await;
    fresh.subscribe("q/+", QoS::AtMostOnce).await;
    let retained = drain(&mut fresh, 1).await;
    assert_eq!(payloads(&retained), vec!["kept"]);
    assert!(retained[0].retain);
    stop(s).await;
}

#[tokio::test]
async fn qos2_resumes_in_both_directions_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let s = start_on(dir.path()).await;
    let (mut sub, _) = resume(&s, V5, "q2-sub").await;
    sub.subscribe("q2/#", QoS::ExactlyOnce).await;
    let (mut publisher, _) = resume(&s, V5, "q2-pub").await;
    for (id, payload) in [(1u16, "a"), (2, "b")] {
        let mut p = Publish::new("q2/t", payload.as_bytes().to_vec());
        p.qos = QoS::ExactlyOnce;
        p.packet_id = id;
        publisher.send(Packet::Publish(p)).await;
        assert_eq!(publisher.recv().await, Packet::PubRec(Ack::new(id)));
    }
    // The publisher releases "a" only; "b" waits for its PUBREL across the restart.
    publisher.send(Packet::PubRel(Ack::new(1))).await;
    assert_eq!(publisher.recv().await, Packet::PubComp(Ack::new(1)));
    let got = drain(&mut sub, 2).await;
    assert_eq!(payloads(&got), vec!["a", "b"]);
    // The subscriber answers PUBREC for "a" (so Herald owes it PUBREL) and nothing for "b".
    sub.send(Packet::PubRec(Ack::new(got[0].packet_id))).await;
    assert_eq!(sub.recv().await, Packet::PubRel(Ack::new(got[0].packet_id)));
    drop(sub);
    drop(publisher);
    stop(s).await;

    let s = start_on(dir.path()).await;
    let (mut sub, present) = resume(&s, V5, "q2-sub").await;
    assert!(present);
    // In order: PUBREL for "a" (never the message again), then "b" with DUP and its id.
    assert_eq!(sub.recv().await, Packet::PubRel(Ack::new(got[0].packet_id)));
    let b = sub.recv_publish().await;
    assert_eq!(
        (b.payload.as_ref(), b.dup, b.packet_id),
        (&b"b"[..], true, got[1].packet_id)
    );
    sub.send(Packet::PubComp(Ack::new(got[0].packet_id))).await;
    sub.send(Packet::PubRec(Ack::new(b.packet_id))).await;
    assert_eq!(sub.recv().await, Packet::PubRel(Ack::new(b.packet_id)));
    sub.send(Packet::PubComp(Ack::new(b.packet_id))).await;

    // The publisher re-sends "b" with the same id before releasing it: recognised, not
    // delivered a second time.
    let (mut publisher, present) = resume(&s, V5, "q2-pub").await;
    assert!(present);
    let mut p = Publish::new("q2/t", b"b".to_vec());
    p.qos = QoS::ExactlyOnce;
    p.packet_id = 2;
    p.dup = true;
    publisher.send(Packet::Publish(p)).await;
    assert_eq!(publisher.recv().await, Packet::PubRec(Ack::new(2)));
    publisher.send(Packet::PubRel(Ack::new(2))).await;
    assert_eq!(publisher.recv().await, Packet::PubComp(Ack::new(2)));
    // Packet id 1 was released before the restart: a new message with it is new.
    let mut p = Publish::new("q2/t", b"c".to_vec());
    p.qos = QoS::ExactlyOnce;
    p.packet_id = 1;
    publisher.send(Packet::Publish(p)).await;
    assert_eq!(publisher.recv().await, Packet::PubRec(Ack::new(1)));
    let next = drain(&mut sub, 1).await;
    assert_eq!(payloads(&next), vec!["c"], "b once, c delivered");
    stop(s).await;
}

#[tokio::test]
async fn only_sessions_that_outlive_their_connection_are_kept_and_expiry_counts_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let s = start_on(dir.path()).await;
    // Clean sessions end with their connection; a v5 session with 1 s of expiry outlives it
    // briefly; 3.1.1 clean session 0 and v5 with an hour are kept.
    let mut clean = Raw::connect(s.addr, V5, "clean").await;
    clean.subscribe("e/#", QoS::AtLeastOnce).await;
    clean.disconnect().await;
    let mut short = Connect::new(V5, "short", 60);
    short.clean_start = false;
    short.properties.session_expiry_interval = Some(1);
    let (mut c, _) = Raw::connect_with(s.addr, short.clone()).await;
    c.subscribe("e/#", QoS::AtLeastOnce).await;
    c.disconnect().await;
    for (version, id) in [(V3_1_1, "kept-311"), (V5, "kept-5")] {
        let (mut c, _) = resume(&s, version, id).await;
        c.subscribe("e/#", QoS::AtLeastOnce).await;
        c.disconnect().await;
    }
    // A message that expires while Herald is down.
    let mut publisher = Raw::connect(s.addr, V5, "pub").await;
    let mut p = Publish::new("e/short-lived", b"x".to_vec());
    p.qos = QoS::AtLeastOnce;
    p.packet_id = 1;
    p.properties.message_expiry_interval = Some(1);
    publisher.send(Packet::Publish(p)).await;
    assert!(matches!(publisher.recv().await, Packet::PubAck(_)));
    publisher
        .publish("e/long-lived", b"y", QoS::AtLeastOnce, false)
        .await;
    stop(s).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;

    let s = start_on(dir.path()).await;
    for id in ["clean", "short"] {
        let mut connect = Connect::new(V5, id, 60);
        connect.clean_start = false;
        let (c, ack) = Raw::connect_with(s.addr, connect).await;
        assert!(!ack.session_present, "{id} was not kept");
        drop(c);
    }
    for (version, id) in [(V3_1_1, "kept-311"), (V5, "kept-5")] {
        let (mut c, present) = resume(&s, version, id).await;
        assert!(present, "{id} was kept");
        let got = drain(&mut c, 1).await;
        assert_eq!(
            payloads(&got),
            vec!["y"],
            "{id}: the expired message is gone"
        );
        if version.is_v5() {
            assert!(got[0].properties.message_expiry_interval.is_none());
        }
        puback_all(&mut c, &got).await;
    }
    stop(s).await;
}

#[tokio::test]
async fn a_data_directory_serves_one_herald_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let s = start_on(dir.path()).await;
    let mut c = common::config();
    c.store.in_memory = false;
    c.store.data_dir = dir.path().to_path_buf();
    let second = herald::server::Server::start(c).await;
    let err = format!("{:#}", second.err().expect("a second Herald is refused"));
    assert!(err.contains("in use"), "{err}");
    stop(s).await;
}

#[tokio::test]
async fn past_the_disk_limit_qos_1_and_2_are_refused_and_qos_0_flows() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = common::config();
    c.store.in_memory = false;
    c.store.data_dir = dir.path().to_path_buf();
    c.store.max_disk_bytes = 1;
    let s = common::start_with(c).await;
    let mut sub = Raw::connect(s.addr, V5, "sub").await;
    sub.subscribe("d/#", QoS::AtLeastOnce).await;
    let mut v5 = Raw::connect(s.addr, V5, "v5").await;
    let mut p = Publish::new("d/1", b"x".to_vec());
    p.qos = QoS::AtLeastOnce;
    p.packet_id = 7;
    v5.send(Packet::Publish(p)).await;
    match v5.recv().await {
        Packet::PubAck(a) => assert_eq!(a.reason_code, ReasonCode::QuotaExceeded),
        other => panic!("expected PUBACK 0x97, got {other:?}"),
    }
    v5.publish("d/0", b"zero", QoS::AtMostOnce, false).await;
    let got = drain(&mut sub, 1).await;
    assert_eq!(
        payloads(&got),
        vec!["zero"],
        "QoS 0 still flows; d/1 was not taken"
    );
    let mut old = Raw::connect(s.addr, V3_1_1, "v311").await;
    let mut p = Publish::new("d/2", b"x".to_vec());
    p.qos = QoS::ExactlyOnce;
    p.packet_id = 1;
    old.send(Packet::Publish(p)).await;
    assert!(
        old.expect_closed().await.is_empty(),
        "3.1.1 has no refusal but the close"
    );
    let refused = s
        .server
        .broker()
        .stats
        .store_refused
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(refused, 2);
    stop(s).await;
}
