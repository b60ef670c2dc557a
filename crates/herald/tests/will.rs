//! Conformance: the will message (MQTT 3.1.1 §3.1.2.5, §3.1.3.2-3; MQTT 5.0 §3.1.2.5,
//! §3.1.3.2 Will Delay Interval, §3.14.2.1).
//!
//! When the will is published (abnormal close, keep-alive timeout, protocol error, DISCONNECT
//! 0x04, takeover) and when not (normal DISCONNECT, a resumed session within the will delay),
//! retained wills, and the 5.0 will delay against the session expiry.
//! Delays are 1-2 s; the whole file runs in a few seconds.

mod common;

use std::time::Duration;

use common::*;
use herald::broker::stats::CloseReason;
use mqtt_codec::ProtocolVersion::{self, V3_1_1, V5};
use mqtt_codec::properties::WillProperties;
use mqtt_codec::{Ack, Connect, Disconnect, LastWill, Packet, Publish, QoS, ReasonCode};
use tokio::time::Instant;

/// A CONNECT carrying a will on `topic` with payload `payload`.
fn with_will(version: ProtocolVersion, id: &str, topic: &str, payload: &str) -> Connect {
    let mut c = Connect::new(version, id, 60);
    c.will = Some(LastWill {
        topic: topic.into(),
        payload: payload.to_string().into(),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: WillProperties::default(),
    });
    c
}

/// A 5.0 CONNECT with a will delayed by `delay` s and a session expiry of `expiry` s
/// (clean start 0, so that a reconnect may resume the session).
fn delayed_will(id: &str, topic: &str, delay: u32, expiry: u32) -> Connect {
    let mut c = with_will(V5, id, topic, "delayed");
    c.clean_start = false;
    c.properties.session_expiry_interval = Some(expiry);
    if let Some(w) = c.will.as_mut() {
        w.properties.will_delay_interval = Some(delay);
    }
    c
}

async fn connect_ok(s: &TestServer, connect: Connect) -> Raw {
    let (c, ack) = Raw::connect_with(s.addr, connect).await;
    assert_eq!(ack.reason_code, ReasonCode::Success, "{ack:?}");
    c
}

/// A 5.0 client subscribed to `filter` at QoS 1.
async fn watcher(s: &TestServer, id: &str, filter: &str) -> Raw {
    let mut w = Raw::connect(s.addr, V5, id).await;
    w.subscribe(filter, QoS::AtLeastOnce).await;
    w
}

/// Receives the next PUBLISH, acknowledges it, and returns it.
async fn next_message(w: &mut Raw) -> Publish {
    let p = w.recv_publish().await;
    if p.qos == QoS::AtLeastOnce {
        w.send(Packet::PubAck(Ack::new(p.packet_id))).await;
    }
    p
}

/// Asserts the next message `w` gets is `payload` on `topic`.
async fn expect_message(w: &mut Raw, topic: &str, payload: &str) -> Publish {
    let p = next_message(w).await;
    assert_eq!(
        (&*p.topic, String::from_utf8_lossy(&p.payload).as_ref()),
        (topic, payload),
        "{p:?}"
    );
    p
}

/// Asserts no will reached `w`: a marker published on `topic` now is the next message.
async fn expect_no_will(s: &TestServer, w: &mut Raw, topic: &str) {
    let mut marker = Raw::connect(s.addr, V5, "marker").await;
    marker
        .publish(topic, b"marker", QoS::AtLeastOnce, false)
        .await;
    marker.disconnect().await;
    expect_message(w, topic, "marker").await;
}

/// 3.1.1 [MQTT-3.1.2-8], 5.0 [MQTT-3.1.2-8]: a connection closed without DISCONNECT has its
/// will published, with the will's QoS; the retain flag is 0 for a live subscription
/// (3.1.1 [MQTT-3.3.1-9], 5.0 [MQTT-3.3.1-12]).
#[tokio::test]
async fn will_published_when_the_socket_drops() {
    let s = start().await;
    let mut w = watcher(&s, "watcher", "drop/#").await;
    for version in [V3_1_1, V5] {
        let topic = format!("drop/{version:?}");
        let c = connect_ok(&s, with_will(version, "dropper", &topic, "bye")).await;
        drop(c);
        let p = expect_message(&mut w, &topic, "bye").await;
        assert_eq!(p.qos, QoS::AtLeastOnce);
        assert!(!p.retain);
    }
    w.disconnect().await;
    s.server.shutdown(WAIT).await;
}

/// The will is published when Herald closes the connection for a keep-alive timeout
/// (3.1.1 [MQTT-3.1.2-8]: "fails to communicate within the Keep Alive time").
#[tokio::test]
async fn will_published_on_keep_alive_timeout() {
    let s = start().await;
    let mut w = watcher(&s, "watcher", "ka/#").await;
    let mut connect = with_will(V3_1_1, "sleeper", "ka/will", "timed out");
    connect.keep_alive = 1;
    let mut c = connect_ok(&s, connect).await;
    assert_eq!(c.expect_closed().await, vec![]);
    expect_message(&mut w, "ka/will", "timed out").await;
    eventually("keep-alive timeout counted", || {
        s.server
            .broker()
            .stats
            .closes(CloseReason::KeepAliveTimeout)
            == 1
    })
    .await;
    w.disconnect().await;
    s.server.shutdown(WAIT).await;
}

/// The will is published when Herald closes the connection for a protocol error (3.1.1
/// [MQTT-3.1.2-8]; 5.0 [MQTT-3.1.2-8]): here a second CONNECT [MQTT-3.1.0-2].
#[tokio::test]
async fn will_published_on_protocol_error() {
    let s = start().await;
    let mut w = watcher(&s, "watcher", "proto/#").await;
    for version in [V3_1_1, V5] {
        let topic = format!("proto/{version:?}");
        let mut c = connect_ok(&s, with_will(version, "erring", &topic, "broke")).await;
        c.send(Packet::Connect(Box::new(Connect::new(
            version, "erring", 60,
        ))))
        .await;
        c.expect_closed().await;
        expect_message(&mut w, &topic, "broke").await;
    }
    w.disconnect().await;
    s.server.shutdown(WAIT).await;
}

/// A normal DISCONNECT discards the will (3.1.1 [MQTT-3.1.2-10], 5.0 [MQTT-3.1.2-10]).
#[tokio::test]
async fn will_not_published_on_normal_disconnect() {
    let s = start().await;
    let stats = &s.server.broker().stats;
    let mut w = watcher(&s, "watcher", "normal/#").await;
    for (n, version) in [V3_1_1, V5].into_iter().enumerate() {
        let topic = format!("normal/{version:?}");
        let c = connect_ok(&s, with_will(version, "polite", &topic, "must not")).await;
        c.disconnect().await;
        eventually("disconnect processed", || {
            stats.closes(CloseReason::ClientDisconnect) == n as u64 + 1
        })
        .await;
        expect_no_will(&s, &mut w, &topic).await;
    }
    // A 5.0 session that outlives the connection does not publish it when it expires either.
    let c = connect_ok(&s, delayed_will("polite", "normal/expiring", 0, 1)).await;
    c.disconnect().await;
    let registry = &s.server.broker().default_tenant.sessions;
    eventually("session expired", || registry.get("polite").is_none()).await;
    expect_no_will(&s, &mut w, "normal/expiring").await;
    w.disconnect().await;
    s.server.shutdown(WAIT).await;
}

/// 5.0 DISCONNECT 0x04 (Disconnect with Will Message) publishes the will (§3.14.2.1); Herald
/// sends nothing back [MQTT-3.14.4-1 context].
#[tokio::test]
async fn will_published_on_disconnect_with_will_message() {
    let s = start().await;
    let mut w = watcher(&s, "watcher", "dw/#").await;
    let mut c = connect_ok(&s, with_will(V5, "wanting", "dw/will", "as asked")).await;
    c.send(Packet::Disconnect(Disconnect::new(
        ReasonCode::DisconnectWithWillMessage,
    )))
    .await;
    assert_eq!(c.expect_closed().await, vec![]);
    expect_message(&mut w, "dw/will", "as asked").await;
    eventually("counted", || {
        s.server
            .broker()
            .stats
            .closes(CloseReason::ClientDisconnectWithWill)
            == 1
    })
    .await;
    w.disconnect().await;
    s.server.shutdown(WAIT).await;
}

/// A will with Will Retain is published as a retained message (3.1.1 [MQTT-3.1.2-17],
/// 5.0 [MQTT-3.1.2-15]): later subscribers get it with the retain flag set.
#[tokio::test]
async fn retained_will_is_stored_as_retained() {
    let s = start().await;
    let mut w = watcher(&s, "watcher", "ret/#").await;
    for version in [V3_1_1, V5] {
        let topic = format!("ret/{version:?}");
        let mut connect = with_will(version, "retainer", &topic, "last words");
        connect.will.as_mut().unwrap().retain = true;
        drop(connect_ok(&s, connect).await);
        let live = expect_message(&mut w, &topic, "last words").await;
        assert!(!live.retain, "live subscription: retain 0");

        let mut late = Raw::connect(s.addr, version, "late").await;
        late.subscribe(&topic, QoS::AtLeastOnce).await;
        let p = late.recv_publish().await;
        assert_eq!(&*p.topic, topic);
        assert_eq!(p.payload, &b"last words"[..]);
        assert!(p.retain, "retained will: {p:?}");
        late.send(Packet::PubAck(Ack::new(p.packet_id))).await;
        late.disconnect().await;
    }
    w.disconnect().await;
    s.server.shutdown(WAIT).await;
}

/// 5.0 [MQTT-3.1.3-9]: the will is published once the Will Delay Interval has passed, not
/// before.
#[tokio::test]
async fn will_published_after_the_delay() {
    let s = start().await;
    let mut w = watcher(&s, "watcher", "delay/#").await;
    let c = connect_ok(&s, delayed_will("late", "delay/will", 2, 30)).await;
    drop(c);
    let t0 = Instant::now();
    quiet_for(&mut w, Duration::from_millis(1000)).await;
    expect_message(&mut w, "delay/will", "delayed").await;
    assert!(
        t0.elapsed() >= Duration::from_millis(1900),
        "will published after {:?}, before its 2 s delay",
        t0.elapsed()
    );
    w.disconnect().await;
    s.server.shutdown(WAIT).await;
}

/// 5.0 [MQTT-3.1.3-9]: a connection resuming the session (clean start 0) within the will
/// delay cancels the will.
#[tokio::test]
async fn reconnect_within_the_delay_cancels_the_will() {
    let s = start().await;
    let mut w = watcher(&s, "watcher", "cancel/#").await;
    let c = connect_ok(&s, delayed_will("back", "cancel/will", 1, 30)).await;
    drop(c);
    let mut resume = Connect::new(V5, "back", 60);
    resume.clean_start = false;
    resume.properties.session_expiry_interval = Some(30);
    let (c, ack) = Raw::connect_with(s.addr, resume).await;
    assert!(ack.session_present);
    // Well past the delay.
    tokio::time::sleep(Duration::from_millis(1800)).await;
    expect_no_will(&s, &mut w, "cancel/will").await;
    c.disconnect().await;
    w.disconnect().await;
    s.server.shutdown(WAIT).await;
}

/// 5.0 §3.1.3.2.2: a connection with clean start 1 within the will delay ends the session,
/// and with it the wait: the will is published then [MQTT-3.1.3-9].
#[tokio::test]
async fn clean_start_within_the_delay_publishes_the_will() {
    let s = start().await;
    let mut w = watcher(&s, "watcher", "fresh/#").await;
    let c = connect_ok(&s, delayed_will("fresh", "fresh/will", 30, 30)).await;
    drop(c);
    let registry = &s.server.broker().default_tenant.sessions;
    eventually("connection gone", || {
        registry
            .get("fresh")
            .is_some_and(|session| !session.lock().connected())
    })
    .await;
    let c = Raw::connect(s.addr, V5, "fresh").await;
    expect_message(&mut w, "fresh/will", "delayed").await;
    c.disconnect().await;
    w.disconnect().await;
    s.server.shutdown(WAIT).await;
}

/// 5.0 [MQTT-3.1.3-9]: with a will delay longer than the session expiry, the will is
/// published when the session ends.
#[tokio::test]
async fn will_delay_longer_than_session_expiry() {
    let s = start().await;
    let mut w = watcher(&s, "watcher", "short/#").await;
    let c = connect_ok(&s, delayed_will("short", "short/will", 30, 1)).await;
    drop(c);
    let t0 = Instant::now();
    expect_message(&mut w, "short/will", "delayed").await;
    assert!(
        t0.elapsed() >= Duration::from_millis(900),
        "published after {:?}, before the 1 s session expiry",
        t0.elapsed()
    );
    assert!(
        s.server
            .broker()
            .default_tenant
            .sessions
            .get("short")
            .is_none()
    );
    w.disconnect().await;
    s.server.shutdown(WAIT).await;
}

/// The will delay counts from the latest close: after a resume and a second abnormal close,
/// the first close's timer does not publish the second will early [MQTT-3.1.3-9].
#[tokio::test]
async fn will_delay_restarts_with_each_close() {
    let s = start().await;
    let mut w = watcher(&s, "watcher", "again/#").await;
    let c = connect_ok(&s, delayed_will("again", "again/will", 2, 30)).await;
    drop(c);
    let c = connect_ok(&s, delayed_will("again", "again/will", 2, 30)).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    drop(c);
    let t1 = Instant::now();
    expect_message(&mut w, "again/will", "delayed").await;
    assert!(
        t1.elapsed() >= Duration::from_millis(1900),
        "published {:?} after the second close, before its 2 s delay",
        t1.elapsed()
    );
    w.disconnect().await;
    s.server.shutdown(WAIT).await;
}

/// A takeover closes the existing connection, whose will is then published: 3.1.1
/// [MQTT-3.1.4-2] with [MQTT-3.1.2-8]; 5.0 with a will delay of 0 (§3.1.4, item 3).
#[tokio::test]
async fn will_published_on_takeover() {
    let s = start().await;
    let mut w = watcher(&s, "watcher", "twin/#").await;
    for version in [V3_1_1, V5] {
        let topic = format!("twin/{version:?}");
        let mut first = connect_ok(&s, with_will(version, "twin", &topic, "replaced")).await;
        let second = Raw::connect(s.addr, version, "twin").await;
        first.expect_closed().await;
        expect_message(&mut w, &topic, "replaced").await;
        second.disconnect().await;
    }
    w.disconnect().await;
    s.server.shutdown(WAIT).await;
}

/// 5.0 §3.1.4: a takeover that resumes the session (clean start 0) with a will delay > 0 does
/// not publish the existing connection's will.
#[tokio::test]
async fn resuming_takeover_with_will_delay_keeps_the_will_quiet() {
    let s = start().await;
    let mut w = watcher(&s, "watcher", "keep/#").await;
    let mut first = connect_ok(&s, delayed_will("keep", "keep/will", 1, 30)).await;
    let mut resume = Connect::new(V5, "keep", 60);
    resume.clean_start = false;
    resume.properties.session_expiry_interval = Some(30);
    let (second, ack) = Raw::connect_with(s.addr, resume).await;
    assert!(ack.session_present);
    first.expect_closed().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    expect_no_will(&s, &mut w, "keep/will").await;
    second.disconnect().await;
    w.disconnect().await;
    s.server.shutdown(WAIT).await;
}
