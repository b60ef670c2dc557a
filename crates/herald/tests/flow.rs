//! Flow control end to end: a subscriber that pauses gets everything once it reads again;
//! many publishers into one subscriber are slowed, not acknowledged and then dropped; what
//! cannot be queued is refused with a reason code instead of a success.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use mqtt_codec::ProtocolVersion::V5;
use mqtt_codec::{Ack, Packet, Publish, QoS, ReasonCode};

/// A payload of `len` bytes: the QoS (0 or 1) then the sequence number.
fn tagged(qos: u8, seq: u32, len: usize) -> Vec<u8> {
    let mut p = vec![0x5A; len];
    p[0] = qos;
    p[1..5].copy_from_slice(&seq.to_be_bytes());
    p
}

/// A subscriber stops reading for 3 s while 2,000 QoS 0 and 300 QoS 1 messages of 10 KiB
/// arrive for it, then reads again: every QoS 1 message reaches it, in order, without the
/// subscriber having to send anything to wake Herald's writer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_pauses_gets_every_qos1_message_when_it_reads_again() {
    const QOS0: u32 = 2000;
    const QOS1: u32 = 300;
    const SIZE: usize = 10 * 1024;
    let s = start().await;
    let mut sub = Raw::connect(s.addr, V5, "pauser").await;
    sub.subscribe("pause/#", QoS::AtLeastOnce).await;

    let addr = s.addr;
    let publisher = tokio::spawn(async move {
        let mut p = Raw::connect(addr, V5, "pause-pub").await;
        let mut acked = 0;
        for seq in 0..QOS0 + QOS1 {
            // Every 7th message is QoS 1, until 300 have gone.
            let qos1 = seq % 7 == 0 && seq / 7 < QOS1;
            let (qos, tag) = if qos1 {
                (QoS::AtLeastOnce, 1)
            } else {
                (QoS::AtMostOnce, 0)
            };
            p.publish("pause/t", &tagged(tag, seq, SIZE), qos, false)
                .await;
            acked += u32::from(qos1);
        }
        acked
    });
    // The subscriber does not read for 3 s.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut got_qos1 = Vec::new();
    let mut unacked = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(8);
    while got_qos1.len() < QOS1 as usize {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        assert!(
            !left.is_zero(),
            "only {} of {QOS1} QoS 1 messages within 8 s of reading again",
            got_qos1.len()
        );
        // Only reading: a client that sends nothing (its acknowledgements come later) must
        // not have to, for Herald to go on writing.
        match tokio::time::timeout(left, sub.try_recv(left + WAIT)).await {
            Ok(Some(Packet::Publish(p))) => {
                if p.qos == QoS::AtLeastOnce {
                    got_qos1.push(u32::from_be_bytes(p.payload[1..5].try_into().unwrap()));
                    unacked.push(p.packet_id);
                }
            }
            Ok(other) => panic!("unexpected {other:?}"),
            Err(_) => {}
        }
    }
    for id in unacked {
        sub.send(Packet::PubAck(Ack::new(id))).await;
    }
    assert!(
        got_qos1.windows(2).all(|w| w[0] < w[1]),
        "QoS 1 messages in order"
    );
    let acked = tokio::time::timeout(WAIT * 4, publisher)
        .await
        .expect("the publisher finished")
        .unwrap();
    assert_eq!(acked, QOS1);
    s.server.shutdown(WAIT).await;
}

/// A slow-consumer deadline runs whenever data waits for a socket that does not take it:
/// a subscriber that stops reading for good is disconnected after the timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_stops_reading_is_disconnected_after_the_slow_consumer_timeout() {
    let mut config = config();
    config.limits.slow_consumer_timeout_secs = 2;
    let s = start_with(config).await;
    let broker = s.server.broker().clone();
    let mut sub = Raw::connect(s.addr, V5, "stopper").await;
    sub.subscribe("stop/#", QoS::AtLeastOnce).await;
    let mut p = Raw::connect(s.addr, V5, "stop-pub").await;
    // QoS 0, 10 KiB: more than the socket buffers and the outbox hold.
    for seq in 0..3000 {
        p.publish("stop/t", &tagged(0, seq, 10 * 1024), QoS::AtMostOnce, false)
            .await;
    }
    ping(&mut p).await;
    eventually_within("slow consumer disconnected", WAIT * 2, || {
        broker
            .stats
            .closes(herald::broker::stats::CloseReason::SlowConsumer)
            == 1
    })
    .await;
    // The publisher is still served: it was held back only until the subscriber counted
    // as stalled (its socket took nothing for limits.stall_after_ms).
    ping(&mut p).await;
    assert!(
        broker
            .stats
            .pushbacks
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1
    );
    assert_eq!(
        broker
            .stats
            .stalls
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    drop(sub);
    s.server.shutdown(WAIT).await;
}

/// A v5 publisher is told, per message, when a QoS 1 message cannot be queued for an offline
/// session at its bound: 0x97 Quota exceeded, never a success for a message then dropped.
#[tokio::test]
async fn qos1_past_an_offline_sessions_bound_is_refused_with_quota_exceeded() {
    const LIMIT: usize = 100;
    let mut config = config();
    config.limits.max_queued_messages = LIMIT;
    let s = start_with(config).await;
    let mut c = mqtt_codec::Connect::new(V5, "offline-sub", 60);
    c.properties.session_expiry_interval = Some(300);
    let (mut sub, _) = Raw::connect_with(s.addr, c.clone()).await;
    sub.subscribe("off/#", QoS::AtLeastOnce).await;
    sub.disconnect().await;
    until_offline(&s, "offline-sub").await;

    let mut p = Raw::connect(s.addr, V5, "off-pub").await;
    let mut codes = Vec::new();
    for i in 0..150u16 {
        let mut m = Publish::new("off/t", format!("m{i}").into_bytes());
        m.qos = QoS::AtLeastOnce;
        m.packet_id = i + 1;
        p.send(Packet::Publish(m)).await;
        match p.recv().await {
            Packet::PubAck(a) => codes.push(a.reason_code),
            other => panic!("expected PUBACK, got {other:?}"),
        }
    }
    let ok = codes.iter().filter(|c| **c == ReasonCode::Success).count();
    let refused = codes
        .iter()
        .filter(|c| **c == ReasonCode::QuotaExceeded)
        .count();
    assert_eq!((ok, refused), (LIMIT, 150 - LIMIT), "{codes:?}");

    // Everything acknowledged with success is delivered.
    c.clean_start = false;
    let (mut sub, ack) = Raw::connect_with(s.addr, c).await;
    assert!(ack.session_present);
    for i in 0..LIMIT {
        let m = sub.recv_publish().await;
        assert_eq!(m.payload, format!("m{i}").as_bytes());
        sub.send(Packet::PubAck(Ack::new(m.packet_id))).await;
    }
    sub.expect_nothing().await;
    s.server.shutdown(WAIT).await;
}

/// An offline persistent session at its bound, and a 3.1.1 publisher: 3.1.1 has no reason
/// code to refuse with, so Herald closes the connection without the PUBACK (the client
/// sends the message again later); on a listener in `listeners.v3_accept_refused` it is
/// acknowledged and counted instead, as mosquitto does.
#[tokio::test]
async fn a_v311_publisher_past_an_offline_sessions_bound_is_closed_unacknowledged_or_counted() {
    use herald::broker::stats::{CloseReason, RefuseReason};
    use mqtt_codec::ProtocolVersion::V3_1_1;
    for accept in [false, true] {
        let mut config = config();
        config.limits.max_queued_messages = 2;
        if accept {
            config.listeners.v3_accept_refused = config.listeners.mqtt.clone();
        }
        let s = start_with(config).await;
        let broker = s.server.broker().clone();
        let mut c = mqtt_codec::Connect::new(V3_1_1, "v3-offline", 60);
        c.clean_start = false;
        let (mut sub, _) = Raw::connect_with(s.addr, c).await;
        sub.subscribe("v3/#", QoS::AtLeastOnce).await;
        sub.disconnect().await;
        until_offline(&s, "v3-offline").await;
        let mut p = Raw::connect(s.addr, V3_1_1, "v3-pub").await;
        p.publish("v3/t", b"1", QoS::AtLeastOnce, false).await;
        p.publish("v3/t", b"2", QoS::AtLeastOnce, false).await;
        let mut third = Publish::new("v3/t", b"3".to_vec());
        third.qos = QoS::AtLeastOnce;
        third.packet_id = 99;
        p.send(Packet::Publish(third)).await;
        if accept {
            match p.recv().await {
                Packet::PubAck(a) => assert_eq!(a.packet_id, 99),
                other => panic!("expected PUBACK, got {other:?}"),
            }
            assert_eq!(
                broker
                    .stats
                    .accepted_unqueued
                    .load(std::sync::atomic::Ordering::Relaxed),
                1
            );
        } else {
            assert_eq!(p.expect_closed().await, vec![], "closed, no PUBACK");
            assert_eq!(broker.stats.closes(CloseReason::PublishRefused), 1);
            assert_eq!(broker.stats.refusals(RefuseReason::QueueFull), 1);
        }
        s.server.shutdown(WAIT).await;
    }
}

/// A v5 client that overruns Receive Maximum while still writing reads its DISCONNECT 0x93:
/// Herald half-closes and drains what the client still sends (a lingering close). Closing
/// with unread bytes makes the kernel reset the connection: the client's next write fails
/// with a broken pipe, and a client library that stops there never reads the reason code.
#[tokio::test]
async fn a_client_that_overruns_receive_maximum_reads_its_disconnect() {
    let mut config = config();
    config.limits.receive_maximum = 5;
    let s = start_with(config).await;
    let mut c = Raw::connect(s.addr, V5, "overrun").await;
    // 150 QoS 2 messages of 1 KiB, none released: far past Receive Maximum. Written one by
    // one, as a client library does, each write must succeed (send_bytes panics otherwise).
    for id in 1..=150u16 {
        let mut m = Publish::new("overrun/t", vec![0u8; 1024]);
        m.qos = QoS::ExactlyOnce;
        m.packet_id = id;
        c.send_bytes(&Packet::Publish(m).to_bytes(V5).unwrap())
            .await;
        if id % 10 == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let mut reason = None;
    while let Some(packet) = c.try_recv(WAIT).await {
        if let Packet::Disconnect(d) = packet {
            reason = Some(d.reason_code);
        }
    }
    assert_eq!(reason, Some(ReasonCode::ReceiveMaximumExceeded));
    s.server.shutdown(WAIT).await;
}

/// A client that reads but never acknowledges holds a bounded amount of memory: past
/// `limits.max_inflight_bytes` of unacknowledged QoS 1 messages Herald sends it no more
/// until it acknowledges, whatever Receive Maximum it announced; then the rest follow.
#[tokio::test]
async fn unacknowledged_bytes_are_bounded_and_the_rest_follow_acknowledgements() {
    const SIZE: usize = 100 * 1024;
    let mut config = config();
    config.limits.max_inflight_bytes = 1024 * 1024;
    let s = start_with(config).await;
    let mut sub = Raw::connect(s.addr, V5, "no-acks").await;
    sub.subscribe("inflight/#", QoS::AtLeastOnce).await;
    let mut p = Raw::connect(s.addr, V5, "inflight-pub").await;
    for seq in 0..30 {
        p.publish("inflight/t", &tagged(1, seq, SIZE), QoS::AtLeastOnce, false)
            .await;
    }
    let mut first = Vec::new();
    while let Ok(Some(Packet::Publish(m))) =
        tokio::time::timeout(QUIET * 2, sub.try_recv(WAIT)).await
    {
        first.push(m);
    }
    // 1 MiB of 100 KiB messages: ten fit, the eleventh would pass the bound.
    assert_eq!(first.len(), 10, "sent before any acknowledgement");
    let mut total = first.len();
    for m in first {
        sub.send(Packet::PubAck(Ack::new(m.packet_id))).await;
    }
    while total < 30 {
        let m = sub.recv_publish().await;
        sub.send(Packet::PubAck(Ack::new(m.packet_id))).await;
        total += 1;
    }
    sub.expect_nothing().await;
    s.server.shutdown(WAIT).await;
}
