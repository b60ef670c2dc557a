//! Conformance: sessions (MQTT 3.1.1 §3.1.2.4, §3.2.2.2, §4.1, §4.4; MQTT 5.0 §3.1.2.4,
//! §3.1.2.11.2, §3.2.2.2, §3.14.2.2.2, §4.1, §4.4).
//!
//! Clean start and session present, resuming subscriptions, takeover by a second connection
//! with the same client id, messages kept for an offline session and re-sent after a
//! reconnect (DUP, PUBREL), the 5.0 session expiry interval and its cap.
//! Expiry intervals are 1-2 s; the whole file runs in a few seconds.

mod common;

use std::time::Duration;

use common::*;
use herald::broker::stats::CloseReason;
use mqtt_codec::ProtocolVersion::{self, V3_1_1, V5};
use mqtt_codec::{Ack, Connect, Disconnect, LastWill, Packet, Publish, QoS, ReasonCode};
use tokio::time::Instant;

/// A CONNECT that asks to keep (or resume) the session: clean start 0 and, in 5.0, a session
/// expiry interval of `expiry` seconds.
fn persistent(version: ProtocolVersion, id: &str, expiry: u32) -> Connect {
    let mut c = Connect::new(version, id, 60);
    c.clean_start = false;
    if version.is_v5() {
        c.properties.session_expiry_interval = Some(expiry);
    }
    c
}

/// Connects with `connect`, asserts success and the session present flag.
async fn connect_expect(s: &TestServer, connect: Connect, present: bool) -> Raw {
    let (c, ack) = Raw::connect_with(s.addr, connect).await;
    assert_eq!(ack.reason_code, ReasonCode::Success, "{ack:?}");
    assert_eq!(ack.session_present, present, "session present");
    c
}

fn has_session(s: &TestServer, id: &str) -> bool {
    s.server.broker().default_tenant.sessions.get(id).is_some()
}

/// Drops the socket without DISCONNECT and waits until Herald has seen the close.
async fn drop_and_wait(s: &TestServer, c: Raw) {
    let stats = &s.server.broker().stats;
    let before = stats.closes(CloseReason::PeerClosed);
    drop(c);
    eventually("peer close seen", || {
        stats.closes(CloseReason::PeerClosed) > before
    })
    .await;
}

/// Receives a PUBLISH and checks its payload and QoS.
async fn expect_publish(c: &mut Raw, payload: &str, qos: QoS) -> Publish {
    let p = c.recv_publish().await;
    assert_eq!(
        (String::from_utf8_lossy(&p.payload).as_ref(), p.qos),
        (payload, qos),
        "{p:?}"
    );
    p
}

/// Acknowledges a received QoS 1 or 2 PUBLISH completely.
async fn ack(c: &mut Raw, p: &Publish) {
    match p.qos {
        QoS::AtMostOnce => {}
        QoS::AtLeastOnce => c.send(Packet::PubAck(Ack::new(p.packet_id))).await,
        QoS::ExactlyOnce => {
            c.send(Packet::PubRec(Ack::new(p.packet_id))).await;
            assert_eq!(c.recv().await, Packet::PubRel(Ack::new(p.packet_id)));
            c.send(Packet::PubComp(Ack::new(p.packet_id))).await;
        }
    }
}

/// Clean start 1 discards the previous session: session present 0, no subscriptions, no
/// queued messages (5.0 [MQTT-3.1.2-4], [MQTT-3.2.2-2]; 3.1.1 [MQTT-3.1.2-6], [MQTT-3.2.2-1]).
#[tokio::test]
async fn clean_start_discards_the_session() {
    let s = start().await;
    let mut publisher = Raw::connect(s.addr, V5, "pub").await;
    for version in [V3_1_1, V5] {
        let id = format!("clean-{version:?}");
        let topic = format!("clean/{version:?}");
        let mut c = connect_expect(&s, persistent(version, &id, 60), false).await;
        c.subscribe(&topic, QoS::AtLeastOnce).await;
        c.disconnect().await;
        // Queued for the offline session.
        publisher
            .publish(&topic, b"queued", QoS::AtLeastOnce, false)
            .await;

        let mut c = connect_expect(&s, Connect::new(version, id.as_str(), 60), false).await;
        c.expect_nothing().await;
        publisher
            .publish(&topic, b"after", QoS::AtLeastOnce, false)
            .await;
        c.expect_nothing().await;
        c.disconnect().await;
    }
    publisher.disconnect().await;
    s.server.shutdown(WAIT).await;
}

/// Clean start 0 resumes the session: session present 1, subscriptions kept (5.0
/// [MQTT-3.1.2-5], [MQTT-3.2.2-3]; 3.1.1 [MQTT-3.1.2-4], [MQTT-3.2.2-2]); with no session to
/// resume, session present 0 (5.0 [MQTT-3.2.2-3]; 3.1.1 [MQTT-3.2.2-3]).
#[tokio::test]
async fn clean_start_0_resumes_with_subscriptions() {
    let s = start().await;
    let mut publisher = Raw::connect(s.addr, V5, "pub").await;
    for version in [V3_1_1, V5] {
        let id = format!("resume-{version:?}");
        let topic = format!("resume/{version:?}");
        let mut c = connect_expect(&s, persistent(version, &id, 60), false).await;
        c.subscribe(&topic, QoS::AtLeastOnce).await;
        c.disconnect().await;
        let mut c = connect_expect(&s, persistent(version, &id, 60), true).await;
        publisher
            .publish(&topic, b"kept", QoS::AtLeastOnce, false)
            .await;
        let p = expect_publish(&mut c, "kept", QoS::AtLeastOnce).await;
        assert_eq!(&*p.topic, topic);
        ack(&mut c, &p).await;
        c.disconnect().await;
    }
    publisher.disconnect().await;
    s.server.shutdown(WAIT).await;
}

/// A second connection with the same client id takes the session over: a 5.0 client gets
/// DISCONNECT 0x8E, then the close (5.0 [MQTT-3.1.4-3]; 3.1.1 [MQTT-3.1.4-2]: close only);
/// the takeover is counted and the new connection works.
#[tokio::test]
async fn takeover_closes_the_first_connection() {
    let s = start().await;
    let stats = &s.server.broker().stats;
    let mut publisher = Raw::connect(s.addr, V5, "pub").await;
    for (version, told) in [
        (
            V5,
            vec![Packet::Disconnect(Disconnect::new(
                ReasonCode::SessionTakenOver,
            ))],
        ),
        (V3_1_1, vec![]),
    ] {
        let before = stats.closes(CloseReason::SessionTakenOver);
        let id = format!("twin-{version:?}");
        let topic = format!("twin/{version:?}");
        let mut first = Raw::connect(s.addr, version, &id).await;
        first.subscribe(&topic, QoS::AtMostOnce).await;
        let mut second = Raw::connect(s.addr, version, &id).await;
        assert_eq!(first.expect_closed().await, told, "{version:?}");
        eventually("takeover counted", || {
            stats.closes(CloseReason::SessionTakenOver) == before + 1
        })
        .await;
        // Clean start: the first connection's subscription went with its session.
        second.subscribe(&topic, QoS::AtMostOnce).await;
        publisher
            .publish(&topic, b"to-second", QoS::AtMostOnce, false)
            .await;
        expect_publish(&mut second, "to-second", QoS::AtMostOnce).await;
        second.send(Packet::PingReq).await;
        assert_eq!(second.recv().await, Packet::PingResp);
        second.disconnect().await;
    }
    publisher.disconnect().await;
    s.server.shutdown(WAIT).await;
}

/// A takeover with clean start 0 resumes the session the first connection had: its
/// subscription, and what it had in flight (re-sent with DUP), move to the new connection,
/// which stays online once the first is gone.
#[tokio::test]
async fn takeover_with_clean_start_0_keeps_the_session() {
    let s = start().await;
    let mut publisher = Raw::connect(s.addr, V5, "pub").await;
    let mut first = connect_expect(&s, persistent(V5, "twin", 60), false).await;
    first.subscribe("twin/t", QoS::AtLeastOnce).await;
    publisher
        .publish("twin/t", b"in-flight", QoS::AtLeastOnce, false)
        .await;
    let unacked = expect_publish(&mut first, "in-flight", QoS::AtLeastOnce).await;

    let mut second = connect_expect(&s, persistent(V5, "twin", 60), true).await;
    let again = expect_publish(&mut second, "in-flight", QoS::AtLeastOnce).await;
    assert!(again.dup);
    assert_eq!(again.packet_id, unacked.packet_id);
    ack(&mut second, &again).await;
    assert_eq!(
        first.expect_closed().await,
        vec![Packet::Disconnect(Disconnect::new(
            ReasonCode::SessionTakenOver
        ))]
    );
    // The first connection's close must not take the session offline: QoS 0 still arrives.
    eventually("takeover counted", || {
        s.server
            .broker()
            .stats
            .closes(CloseReason::SessionTakenOver)
            == 1
    })
    .await;
    publisher
        .publish("twin/t", b"live", QoS::AtMostOnce, false)
        .await;
    expect_publish(&mut second, "live", QoS::AtMostOnce).await;
    second.disconnect().await;
    publisher.disconnect().await;
    s.server.shutdown(WAIT).await;
}

/// QoS 1 and 2 messages published while the client is offline are kept and delivered in
/// order when it resumes; QoS 0 ones are not kept (5.0 §4.1 and [MQTT-4.6.0-6]; 3.1.1 §4.1
/// and [MQTT-4.6.0-6]).
#[tokio::test]
async fn offline_messages_delivered_in_order_on_resume() {
    let s = start().await;
    let mut publisher = Raw::connect(s.addr, V5, "pub").await;
    for version in [V3_1_1, V5] {
        let id = format!("offline-{version:?}");
        let topic = format!("offline/{version:?}");
        let mut c = connect_expect(&s, persistent(version, &id, 60), false).await;
        c.subscribe(&topic, QoS::ExactlyOnce).await;
        c.disconnect().await;
        let sent = [
            ("1", QoS::AtLeastOnce),
            ("zero-a", QoS::AtMostOnce),
            ("2", QoS::ExactlyOnce),
            ("3", QoS::AtLeastOnce),
            ("zero-b", QoS::AtMostOnce),
            ("4", QoS::ExactlyOnce),
            ("5", QoS::AtLeastOnce),
        ];
        for (payload, qos) in sent {
            publisher
                .publish(&topic, payload.as_bytes(), qos, false)
                .await;
        }
        let mut c = connect_expect(&s, persistent(version, &id, 60), true).await;
        let mut got = Vec::new();
        for (payload, qos) in sent.iter().filter(|(_, q)| *q != QoS::AtMostOnce) {
            let p = expect_publish(&mut c, payload, *qos).await;
            assert!(!p.dup, "never sent before: {p:?}");
            got.push(p);
        }
        c.expect_nothing().await;
        for p in &got {
            ack(&mut c, p).await;
        }
        c.disconnect().await;
    }
    publisher.disconnect().await;
    s.server.shutdown(WAIT).await;
}

/// QoS 1 messages sent and not acknowledged are re-sent on resume, in order, with DUP set and
/// their original packet identifiers; acknowledged ones are not (5.0 [MQTT-4.4.0-1],
/// [MQTT-3.3.1-1]; 3.1.1 [MQTT-4.4.0-1], [MQTT-3.3.1-1]).
#[tokio::test]
async fn unacknowledged_qos1_resent_with_dup_in_order() {
    let s = start().await;
    let mut publisher = Raw::connect(s.addr, V5, "pub").await;
    for version in [V3_1_1, V5] {
        let id = format!("dup-{version:?}");
        let topic = format!("dup/{version:?}");
        let mut c = connect_expect(&s, persistent(version, &id, 60), false).await;
        c.subscribe(&topic, QoS::AtLeastOnce).await;
        let mut got = Vec::new();
        for payload in ["a", "b", "c", "d"] {
            publisher
                .publish(&topic, payload.as_bytes(), QoS::AtLeastOnce, false)
                .await;
            got.push(expect_publish(&mut c, payload, QoS::AtLeastOnce).await);
        }
        // Acknowledge "b" only; a ping round trip makes sure Herald has processed it.
        c.send(Packet::PubAck(Ack::new(got[1].packet_id))).await;
        c.send(Packet::PingReq).await;
        assert_eq!(c.recv().await, Packet::PingResp);
        drop_and_wait(&s, c).await;

        let mut c = connect_expect(&s, persistent(version, &id, 60), true).await;
        for original in [&got[0], &got[2], &got[3]] {
            let p = c.recv_publish().await;
            assert!(p.dup, "{version:?}: re-sent with DUP: {p:?}");
            assert_eq!(p.packet_id, original.packet_id, "{version:?}");
            assert_eq!(p.payload, original.payload, "{version:?}: in order");
            assert_eq!(p.qos, QoS::AtLeastOnce);
            ack(&mut c, &p).await;
        }
        c.expect_nothing().await;
        // The session goes on: a new message is new (no DUP).
        publisher
            .publish(&topic, b"e", QoS::AtLeastOnce, false)
            .await;
        let p = expect_publish(&mut c, "e", QoS::AtLeastOnce).await;
        assert!(!p.dup);
        ack(&mut c, &p).await;
        c.disconnect().await;
    }
    publisher.disconnect().await;
    s.server.shutdown(WAIT).await;
}

/// On resume, what was in flight is re-sent before what was still queued (held back by the
/// client's Receive Maximum), all in publication order.
#[tokio::test]
async fn in_flight_resent_before_queued() {
    let s = start().await;
    let mut publisher = Raw::connect(s.addr, V5, "pub").await;
    let mut connect = persistent(V5, "window", 60);
    connect.properties.receive_maximum = Some(2);
    let mut c = connect_expect(&s, connect, false).await;
    c.subscribe("window/t", QoS::AtLeastOnce).await;
    for payload in ["1", "2", "3", "4"] {
        publisher
            .publish("window/t", payload.as_bytes(), QoS::AtLeastOnce, false)
            .await;
    }
    let one = expect_publish(&mut c, "1", QoS::AtLeastOnce).await;
    let two = expect_publish(&mut c, "2", QoS::AtLeastOnce).await;
    c.expect_nothing().await; // Receive Maximum 2 [MQTT-3.3.4-7]
    drop_and_wait(&s, c).await;

    let mut c = connect_expect(&s, persistent(V5, "window", 60), true).await;
    for original in [&one, &two] {
        let p = c.recv_publish().await;
        assert!(p.dup, "{p:?}");
        assert_eq!(p.packet_id, original.packet_id);
        assert_eq!(p.payload, original.payload);
    }
    for payload in ["3", "4"] {
        let p = expect_publish(&mut c, payload, QoS::AtLeastOnce).await;
        assert!(!p.dup);
    }
    c.disconnect().await;
    publisher.disconnect().await;
    s.server.shutdown(WAIT).await;
}

/// QoS 2: a message whose PUBREC was received is continued with PUBREL on resume, never
/// re-sent as PUBLISH; one not yet PUBREC'd is re-sent with DUP (5.0 [MQTT-4.4.0-1],
/// [MQTT-4.3.3-5]; 3.1.1 [MQTT-4.4.0-1], [MQTT-4.3.3-1]).
#[tokio::test]
async fn pubrel_resent_on_resume() {
    let s = start().await;
    let mut publisher = Raw::connect(s.addr, V5, "pub").await;
    for version in [V3_1_1, V5] {
        let id = format!("rel-{version:?}");
        let topic = format!("rel/{version:?}");
        let mut c = connect_expect(&s, persistent(version, &id, 60), false).await;
        c.subscribe(&topic, QoS::ExactlyOnce).await;
        publisher
            .publish(&topic, b"released", QoS::ExactlyOnce, false)
            .await;
        let released = expect_publish(&mut c, "released", QoS::ExactlyOnce).await;
        c.send(Packet::PubRec(Ack::new(released.packet_id))).await;
        assert_eq!(c.recv().await, Packet::PubRel(Ack::new(released.packet_id)));
        publisher
            .publish(&topic, b"unreceived", QoS::ExactlyOnce, false)
            .await;
        let unreceived = expect_publish(&mut c, "unreceived", QoS::ExactlyOnce).await;
        drop_and_wait(&s, c).await;

        let mut c = connect_expect(&s, persistent(version, &id, 60), true).await;
        assert_eq!(
            c.recv().await,
            Packet::PubRel(Ack::new(released.packet_id)),
            "{version:?}"
        );
        let p = c.recv_publish().await;
        assert!(p.dup, "{version:?}: {p:?}");
        assert_eq!(p.packet_id, unreceived.packet_id);
        assert_eq!(p.payload, unreceived.payload);
        c.send(Packet::PubComp(Ack::new(released.packet_id))).await;
        ack(&mut c, &p).await;
        c.expect_nothing().await;
        c.disconnect().await;
    }
    publisher.disconnect().await;
    s.server.shutdown(WAIT).await;
}

/// 5.0 session expiry: the session outlives the connection for the interval
/// [MQTT-3.1.2-23], then ends, with its subscriptions and queued messages. A reconnect in
/// between restarts the count (only the last disconnection counts).
#[tokio::test]
async fn session_expires_after_the_interval() {
    let s = start().await;
    let mut publisher = Raw::connect(s.addr, V5, "pub").await;
    let mut c = connect_expect(&s, persistent(V5, "exp", 2), false).await;
    c.subscribe("exp/t", QoS::AtLeastOnce).await;
    c.disconnect().await;
    publisher
        .publish("exp/t", b"kept", QoS::AtLeastOnce, false)
        .await;
    // Kept before the interval passes.
    let mut c = connect_expect(&s, persistent(V5, "exp", 2), true).await;
    let p = expect_publish(&mut c, "kept", QoS::AtLeastOnce).await;
    ack(&mut c, &p).await;
    // Stay connected past the first disconnection's timer.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    c.disconnect().await;
    let t0 = Instant::now();
    publisher
        .publish("exp/t", b"lost", QoS::AtLeastOnce, false)
        .await;
    eventually("session expired", || !has_session(&s, "exp")).await;
    assert!(
        t0.elapsed() >= Duration::from_millis(1900),
        "session ended after {:?}, before its 2 s expiry",
        t0.elapsed()
    );
    let mut c = connect_expect(&s, persistent(V5, "exp", 2), false).await;
    c.expect_nothing().await;
    publisher
        .publish("exp/t", b"unsubscribed", QoS::AtLeastOnce, false)
        .await;
    c.expect_nothing().await;
    c.disconnect().await;
    publisher.disconnect().await;
    s.server.shutdown(WAIT).await;
}

/// 5.0: a session expiry interval of 0 (or absent) ends the session with the connection,
/// normal or not [MQTT-3.1.2-23 context, §3.1.2.11.2]; so does a DISCONNECT setting it to 0.
#[tokio::test]
async fn session_expiry_0_ends_the_session_at_disconnect() {
    let s = start().await;
    let stats = &s.server.broker().stats;
    let mut zero = Connect::new(V5, "zero", 60);
    zero.clean_start = false;

    let mut c = connect_expect(&s, zero.clone(), false).await;
    c.subscribe("zero/t", QoS::AtLeastOnce).await;
    c.disconnect().await;
    eventually("session ended", || !has_session(&s, "zero")).await;
    connect_expect(&s, zero.clone(), false)
        .await
        .disconnect()
        .await;

    let c = connect_expect(&s, zero.clone(), false).await;
    drop_and_wait(&s, c).await;
    assert!(!has_session(&s, "zero"));
    connect_expect(&s, zero.clone(), false)
        .await
        .disconnect()
        .await;

    // Expiry 60 at CONNECT, 0 in DISCONNECT.
    let mut c = connect_expect(&s, persistent(V5, "zero", 60), false).await;
    let mut d = Disconnect::new(ReasonCode::Success);
    d.properties.session_expiry_interval = Some(0);
    let before = stats.closes(CloseReason::ClientDisconnect);
    c.send(Packet::Disconnect(d)).await;
    assert_eq!(c.expect_closed().await, vec![]);
    eventually("disconnect seen", || {
        stats.closes(CloseReason::ClientDisconnect) > before
    })
    .await;
    assert!(!has_session(&s, "zero"));
    connect_expect(&s, persistent(V5, "zero", 60), false)
        .await
        .disconnect()
        .await;
    s.server.shutdown(WAIT).await;
}

/// [MQTT-3.14.2-2]: a DISCONNECT with a non-zero session expiry after a CONNECT with 0 is not
/// a valid DISCONNECT: DISCONNECT 0x82 from Herald, the session still ends with the
/// connection, and (not being a normal disconnection) the will is published
/// [MQTT-3.1.2-8].
#[tokio::test]
async fn disconnect_cannot_raise_session_expiry_from_zero() {
    let s = start().await;
    let mut watcher = Raw::connect(s.addr, V5, "watcher").await;
    watcher.subscribe("raise/will", QoS::AtMostOnce).await;
    let mut connect = Connect::new(V5, "raise", 60);
    connect.clean_start = false;
    connect.will = Some(LastWill {
        topic: "raise/will".into(),
        payload: "gone".into(),
        qos: QoS::AtMostOnce,
        retain: false,
        properties: Default::default(),
    });
    let mut c = connect_expect(&s, connect, false).await;
    c.subscribe("raise/t", QoS::AtLeastOnce).await;
    let mut d = Disconnect::new(ReasonCode::Success);
    d.properties.session_expiry_interval = Some(60);
    c.send(Packet::Disconnect(d)).await;
    assert_eq!(
        c.expect_closed().await,
        vec![Packet::Disconnect(Disconnect::new(
            ReasonCode::ProtocolError
        ))]
    );
    expect_publish(&mut watcher, "gone", QoS::AtMostOnce).await;
    eventually("session ended", || !has_session(&s, "raise")).await;
    connect_expect(&s, persistent(V5, "raise", 0), false)
        .await
        .disconnect()
        .await;
    watcher.disconnect().await;
    s.server.shutdown(WAIT).await;
}

/// 5.0 §3.2.2.3.2: a session expiry above `session.max_session_expiry_secs` is cut to it and
/// the client told in CONNACK; a request within it is not answered with the property. The
/// cap is the interval applied.
#[tokio::test]
async fn session_expiry_is_capped_and_told() {
    let mut config = config();
    config.session.max_session_expiry_secs = 1;
    let s = start_with(config).await;
    for (asked, told) in [(100, Some(1)), (u32::MAX, Some(1)), (1, None), (0, None)] {
        let (c, ack) = Raw::connect_with(s.addr, persistent(V5, "cap", asked)).await;
        assert_eq!(ack.reason_code, ReasonCode::Success);
        assert_eq!(
            ack.properties.session_expiry_interval, told,
            "asked {asked}"
        );
        c.disconnect().await;
        eventually("session ended after at most the cap", || {
            !has_session(&s, "cap")
        })
        .await;
    }
    // A DISCONNECT asking for more is capped too.
    let mut c = Raw::connect_with(s.addr, persistent(V5, "cap", 1)).await.0;
    let mut d = Disconnect::new(ReasonCode::Success);
    d.properties.session_expiry_interval = Some(100);
    c.send(Packet::Disconnect(d)).await;
    assert_eq!(c.expect_closed().await, vec![]);
    eventually("session ended after at most the cap", || {
        !has_session(&s, "cap")
    })
    .await;
    s.server.shutdown(WAIT).await;
}
