//! Backpressure and limits (Herald's bounds on what waits for a client: `limits.
//! max_outbox_messages`, `max_outbox_bytes`, `max_queued_messages`,
//! `slow_consumer_timeout_secs`; MQTT 5.0 §4.1 lets a server bound stored session state):
//! a client that does not read never blocks publishers or other subscribers, what cannot
//! wait is dropped and counted, and a slow consumer is eventually disconnected.

mod common;

use common::*;
use herald::broker::stats::{CloseReason, DropReason};
use mqtt_codec::{Ack, Connect, Packet, ProtocolVersion, ProtocolVersion::*, QoS, ReasonCode};

/// A subscriber that will not read (after its SUBACK). Its receive window stays at the
/// kernel's initial size (autotuning grows it only as the application reads), so a few MB
/// back the server's writes up.
async fn non_reader(s: &TestServer, id: &str, filter: &str, qos: QoS) -> Raw {
    let mut c = Raw::connect(s.addr, V5, id).await;
    c.subscribe(filter, qos).await;
    c
}

/// A payload of `len` bytes starting with the sequence number `seq`.
fn numbered(seq: u32, len: usize) -> Vec<u8> {
    let mut p = vec![0xA5; len];
    p[..4].copy_from_slice(&seq.to_be_bytes());
    p
}

fn seq_of(payload: &[u8]) -> u32 {
    u32::from_be_bytes(payload[..4].try_into().expect("a numbered payload"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos0_to_a_subscriber_that_never_reads_is_dropped_and_it_is_disconnected() {
    const MESSAGES: u32 = 600;
    const SIZE: usize = 32 * 1024;
    let mut config = config();
    config.limits.max_outbox_messages = 8;
    config.limits.max_outbox_bytes = 64 * 1024;
    config.limits.slow_consumer_timeout_secs = 2;
    let s = start_with(config).await;
    let stats = &s.server.broker().stats;
    let mut slow = non_reader(&s, "slow", "bp/#", QoS::AtMostOnce).await;
    let mut publisher = Raw::connect(s.addr, V5, "bp-pub").await;

    // ~19 MB, far more than the socket buffers and the outbox hold. The publisher waits for
    // each PUBACK (the harness gives each 5 s): it is never held up by the slow reader.
    let started = tokio::time::Instant::now();
    for seq in 0..MESSAGES {
        publisher
            .publish("bp/t", &numbered(seq, SIZE), QoS::AtLeastOnce, false)
            .await;
    }
    let publishing = started.elapsed();
    let dropped = stats.drops(DropReason::OutboxFull);
    assert!(dropped > 0, "nothing dropped: the stream did not back up");
    assert!(
        u64::from(MESSAGES) >= dropped + stats.delivered.load(std::sync::atomic::Ordering::Relaxed)
    );

    // Disconnected once its socket has stayed full for the slow-consumer timeout.
    let broker = s.server.broker().clone();
    eventually_within("slow consumer disconnected", WAIT * 2, || {
        broker.stats.closes(CloseReason::SlowConsumer) == 1
    })
    .await;
    // Its session (expiry 0) ended with it.
    eventually_within("slow session gone", WAIT, || {
        broker.default_tenant.sessions.get("slow").is_none()
    })
    .await;
    // What it was sent before that arrives in order, with gaps where messages were dropped,
    // then the connection ends.
    let mut received = Vec::new();
    let mut last = None;
    loop {
        match slow.try_recv(WAIT).await {
            Some(Packet::Publish(p)) => {
                let seq = seq_of(&p.payload);
                assert!(last.is_none_or(|l| seq > l), "{seq} after {last:?}");
                last = Some(seq);
                received.push(seq);
            }
            // Best effort: if the DISCONNECT got through, it says why.
            Some(Packet::Disconnect(d)) => {
                assert_eq!(d.reason_code, ReasonCode::QuotaExceeded);
            }
            Some(other) => panic!("unexpected {other:?}"),
            None => break,
        }
    }
    assert!(!received.is_empty());
    assert!(
        (received.len() as u64) + dropped <= u64::from(MESSAGES),
        "received {} + dropped {dropped}",
        received.len()
    );

    // The publisher is still connected and served.
    let mut sub = Raw::connect(s.addr, V5, "bp-after").await;
    sub.subscribe("bp/#", QoS::AtLeastOnce).await;
    publisher
        .publish("bp/t", b"after", QoS::AtLeastOnce, false)
        .await;
    let p = sub.recv_publish().await;
    assert_eq!(&p.payload[..], b"after", "published for {publishing:?}");
    s.server.shutdown(WAIT).await;
}

/// A CONNECT that keeps the session after the connection ends.
fn persistent(version: ProtocolVersion, id: &str, clean_start: bool) -> Connect {
    let mut c = Connect::new(version, id, 60);
    c.clean_start = clean_start;
    if version.is_v5() {
        c.properties.session_expiry_interval = Some(300);
    } else {
        // 3.1.1: clean session 0 keeps the session.
        c.clean_start = false;
    }
    c
}

#[tokio::test]
async fn qos1_for_an_offline_session_queues_up_to_the_limit() {
    const LIMIT: usize = 5;
    const SENT: usize = 12;
    let mut config = config();
    config.limits.max_queued_messages = LIMIT;
    let s = start_with(config).await;
    let stats = &s.server.broker().stats;
    let mut publisher = Raw::connect(s.addr, V5, "q-pub").await;
    for version in [V5, V3_1_1] {
        let id = format!("q-sub-{version:?}");
        let topic = format!("q/{version:?}");
        let (mut sub, _) = Raw::connect_with(s.addr, persistent(version, &id, true)).await;
        sub.subscribe(&topic, QoS::AtLeastOnce).await;
        sub.disconnect().await;
        until_offline(&s, &id).await;

        let before = stats.drops(DropReason::QueueFull);
        for i in 0..SENT {
            publisher
                .publish(&topic, format!("m{i}").as_bytes(), QoS::AtLeastOnce, false)
                .await;
        }
        // Drop newest: the first LIMIT wait, the rest are counted as dropped.
        assert_eq!(
            stats.drops(DropReason::QueueFull) - before,
            (SENT - LIMIT) as u64
        );

        let (mut sub, ack) = Raw::connect_with(s.addr, persistent(version, &id, false)).await;
        assert_eq!(ack.reason_code, ReasonCode::Success);
        assert!(ack.session_present);
        for i in 0..LIMIT {
            let p = sub.recv_publish().await;
            assert_eq!(p.payload, format!("m{i}").as_bytes(), "{version:?}");
            assert_eq!(p.qos, QoS::AtLeastOnce);
            sub.send(Packet::PubAck(Ack::new(p.packet_id))).await;
        }
        sub.expect_nothing().await;
        sub.disconnect().await;
    }
    s.server.shutdown(WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_subscriber_does_not_slow_a_fast_one() {
    const MESSAGES: u32 = 500;
    const SIZE: usize = 32 * 1024;
    let mut config = config();
    config.limits.max_outbox_messages = 16;
    config.limits.max_outbox_bytes = 128 * 1024;
    let s = start_with(config).await;
    let stats = &s.server.broker().stats;
    let _slow = non_reader(&s, "slow", "race/#", QoS::AtMostOnce).await;
    // The fast subscriber takes QoS 1, so that what it gets is not subject to the QoS 0
    // outbox bound; it reads and acknowledges as it goes.
    let mut fast = Raw::connect(s.addr, V5, "fast").await;
    fast.subscribe("race/#", QoS::AtLeastOnce).await;
    let reader = tokio::spawn(async move {
        for seq in 0..MESSAGES {
            let p = fast.recv_publish().await;
            assert_eq!(seq_of(&p.payload), seq, "in order, none missing");
            assert_eq!(p.payload.len(), SIZE);
            fast.send(Packet::PubAck(Ack::new(p.packet_id))).await;
        }
        fast.expect_nothing().await;
    });
    let mut publisher = Raw::connect(s.addr, V5, "race-pub").await;
    for seq in 0..MESSAGES {
        publisher
            .publish("race/t", &numbered(seq, SIZE), QoS::AtLeastOnce, false)
            .await;
    }
    tokio::time::timeout(WAIT * 2, reader)
        .await
        .expect("the fast subscriber got everything promptly")
        .unwrap();
    // The slow one really was slow: what did not fit was dropped for it alone.
    assert!(stats.drops(DropReason::OutboxFull) > 0);
    assert_eq!(stats.drops(DropReason::QueueFull), 0);
    s.server.shutdown(WAIT).await;
}
