//! Conformance: CONNECT and CONNACK (MQTT 3.1.1 §3.1-3.2, MQTT 5.0 §3.1-3.2, §4.13).
//!
//! Protocol versions and levels, the first and a second CONNECT, the connect timeout, client
//! identifiers (empty, too long), authentication methods, keep-alive and Server Keep Alive,
//! the CONNACK properties of 5.0, the connection limit and the maximum packet size.
//! Every timing bound is configured short (1-2 s); the whole file runs in a few seconds.

mod common;

use std::time::Duration;

use common::*;
use herald::broker::stats::CloseReason;
use mqtt_codec::ProtocolVersion::{V3_1, V3_1_1, V5};
use mqtt_codec::{Connect, Disconnect, Packet, Publish, QoS, ReasonCode, Subscribe};
use tokio::io::AsyncReadExt;
use tokio::time::Instant;

/// Reads raw bytes until the server closes the connection.
async fn bytes_until_close(c: &mut Raw) -> Vec<u8> {
    let mut got = c.rbuf.to_vec();
    let read = tokio::time::timeout(WAIT, c.stream.read_to_end(&mut got)).await;
    assert!(read.is_ok(), "connection still open after {WAIT:?}");
    got
}

/// A CONNECT with any protocol name and level, clean session, keep-alive 60, client id "x".
fn raw_connect(name: &[u8], level: u8) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&(name.len() as u16).to_be_bytes());
    body.extend_from_slice(name);
    body.extend_from_slice(&[level, 0x02, 0, 60, 0, 1, b'x']);
    let mut packet = vec![0x10, body.len() as u8];
    packet.extend(body);
    packet
}

fn closes(s: &TestServer, reason: CloseReason) -> u64 {
    s.server.broker().stats.closes(reason)
}

#[tokio::test]
async fn every_protocol_version_is_accepted() {
    let s = start().await;
    for (version, id) in [(V3_1, "v31"), (V3_1_1, "v311"), (V5, "v5")] {
        let (mut c, ack) = Raw::connect_with(s.addr, Connect::new(version, id, 60)).await;
        assert_eq!(ack.reason_code, ReasonCode::Success, "{version:?}");
        assert!(!ack.session_present, "{version:?}: clean start, no session");
        // The connection is usable in that version.
        c.send(Packet::PingReq).await;
        assert_eq!(c.recv().await, Packet::PingResp, "{version:?}");
        c.subscribe("v/t", QoS::AtLeastOnce).await;
        c.publish("v/t", id.as_bytes(), QoS::AtLeastOnce, false)
            .await;
        let p = c.recv_publish().await;
        assert_eq!(p.payload, id.as_bytes());
        c.send(Packet::PubAck(mqtt_codec::Ack::new(p.packet_id)))
            .await;
        c.disconnect().await;
    }
    s.server.shutdown(WAIT).await;
}

/// [MQTT-3.1.2-2] (3.1.1): an unsupported protocol level gets CONNACK 0x01, then the close.
#[tokio::test]
async fn unsupported_protocol_level_gets_connack_0x01_then_close() {
    let s = start().await;
    let cases: [(&[u8], u8); 4] = [(b"MQTT", 6), (b"MQTT", 3), (b"MQTT", 0), (b"MQIsdp", 4)];
    for (name, level) in cases {
        let mut c = Raw::open(s.addr, V3_1_1).await;
        c.send_bytes(&raw_connect(name, level)).await;
        let got = bytes_until_close(&mut c).await;
        assert_eq!(
            got,
            [0x20, 0x02, 0x00, 0x01],
            "{} level {level}: CONNACK 0x01 in the 3.1.1 form, then close",
            String::from_utf8_lossy(name)
        );
    }
    eventually("refusals counted", || {
        closes(&s, CloseReason::ConnectRefused) == cases.len() as u64
    })
    .await;
    s.server.shutdown(WAIT).await;
}

/// [MQTT-3.1.0-1]: the first packet must be CONNECT; anything else closes the connection,
/// and no CONNACK is sent.
#[tokio::test]
async fn first_packet_not_connect_closes() {
    let s = start().await;
    let firsts = [
        Packet::PingReq,
        Packet::Subscribe(Subscribe::new(1, "a", QoS::AtMostOnce)),
        Packet::Publish(Publish::new("a", &b"x"[..])),
        Packet::Disconnect(Disconnect::default()),
    ];
    for first in &firsts {
        let mut c = Raw::open(s.addr, V3_1_1).await;
        c.send(first.clone()).await;
        let got = c.expect_closed().await;
        assert!(got.is_empty(), "after {first:?} got {got:?}");
    }
    // Before CONNECT the version is unknown: a body in another version's layout may not
    // even parse, so either count is right.
    eventually("counted as protocol errors", || {
        closes(&s, CloseReason::ProtocolError) + closes(&s, CloseReason::MalformedPacket)
            == firsts.len() as u64
    })
    .await;
    s.server.shutdown(WAIT).await;
}

/// [MQTT-3.1.0-2]: a second CONNECT is a protocol error; a 5.0 client is told 0x82.
#[tokio::test]
async fn second_connect_is_a_protocol_error() {
    let s = start().await;
    let mut c = Raw::connect(s.addr, V5, "twice5").await;
    c.send(Packet::Connect(Box::new(Connect::new(V5, "twice5", 60))))
        .await;
    assert_eq!(
        c.expect_closed().await,
        vec![Packet::Disconnect(Disconnect::new(
            ReasonCode::ProtocolError
        ))]
    );

    let mut c = Raw::connect(s.addr, V3_1_1, "twice3").await;
    c.send(Packet::Connect(Box::new(Connect::new(
        V3_1_1, "twice3", 60,
    ))))
    .await;
    assert_eq!(
        c.expect_closed().await,
        vec![],
        "3.1.1 has no DISCONNECT from the server"
    );
    eventually("counted as protocol errors", || {
        closes(&s, CloseReason::ProtocolError) == 2
    })
    .await;
    s.server.shutdown(WAIT).await;
}

/// A connection that does not complete CONNECT within `limits.connect_timeout_secs` is closed
/// and counted; the timeout no longer applies once CONNECT is accepted.
#[tokio::test]
async fn connect_timeout_closes_and_counts() {
    let mut config = config();
    config.limits.connect_timeout_secs = 1;
    let s = start_with(config).await;
    let mut silent = Raw::open(s.addr, V3_1_1).await;
    let mut partial = Raw::open(s.addr, V3_1_1).await;
    let full = Packet::Connect(Box::new(Connect::new(V3_1_1, "partial", 0)))
        .to_bytes(V3_1_1)
        .unwrap();
    partial.send_bytes(&full[..5]).await;
    // Keep-alive 0: only the connect timeout could close this one.
    let mut connected = Raw::connect_with(s.addr, Connect::new(V3_1_1, "in-time", 0))
        .await
        .0;

    assert_eq!(silent.expect_closed().await, vec![]);
    assert_eq!(partial.expect_closed().await, vec![]);
    eventually("two connect timeouts counted", || {
        closes(&s, CloseReason::ConnectTimeout) == 2
    })
    .await;
    quiet_for(&mut connected, Duration::from_millis(700)).await;
    connected.send(Packet::PingReq).await;
    assert_eq!(connected.recv().await, Packet::PingResp);
    assert_eq!(closes(&s, CloseReason::ConnectTimeout), 2);
    s.server.shutdown(WAIT).await;
}

/// Empty client identifiers: 5.0 gets one assigned and told in CONNACK (5.0 [MQTT-3.1.3-6],
/// [MQTT-3.1.3-7]); 3.1.1 accepts one only with clean session, else CONNACK 0x02 and close
/// (3.1.1 [MQTT-3.1.3-6], [MQTT-3.1.3-8]); 3.1 requires an id (3.1 §3.1, Client Identifier).
#[tokio::test]
async fn empty_client_id() {
    let s = start().await;

    // 5.0: an id is assigned, different for each connection, and the connection works.
    let mut assigned = Vec::new();
    let mut v5_clients = Vec::new();
    for clean_start in [true, false] {
        let mut connect = Connect::new(V5, "", 60);
        connect.clean_start = clean_start;
        let (c, ack) = Raw::connect_with(s.addr, connect).await;
        assert_eq!(ack.reason_code, ReasonCode::Success);
        assert!(!ack.session_present);
        let id = ack
            .properties
            .assigned_client_identifier
            .expect("Assigned Client Identifier");
        assert!(!id.is_empty());
        assigned.push(id);
        v5_clients.push(c);
    }
    assert_ne!(assigned[0], assigned[1], "assigned ids are unique");

    // 3.1.1 with clean session: accepted; two such clients do not take each other over.
    let mut a = Raw::connect(s.addr, V3_1_1, "").await;
    let mut b = Raw::connect(s.addr, V3_1_1, "").await;
    a.subscribe("empty/t", QoS::AtMostOnce).await;
    b.publish("empty/t", b"hi", QoS::AtMostOnce, false).await;
    assert_eq!(a.recv_publish().await.payload, &b"hi"[..]);
    b.send(Packet::PingReq).await;
    assert_eq!(b.recv().await, Packet::PingResp);
    for c in &mut v5_clients {
        c.send(Packet::PingReq).await;
        assert_eq!(c.recv().await, Packet::PingResp);
    }

    // 3.1.1 without clean session, and 3.1 in any case: 0x02 Identifier rejected, then close.
    for (version, clean) in [(V3_1_1, false), (V3_1, true), (V3_1, false)] {
        let mut connect = Connect::new(version, "", 60);
        connect.clean_start = clean;
        let (mut c, ack) = Raw::connect_with(s.addr, connect).await;
        assert_eq!(
            ack.reason_code,
            ReasonCode::ClientIdentifierNotValid,
            "{version:?} clean {clean}"
        );
        assert!(!ack.session_present);
        assert_eq!(c.expect_closed().await, vec![]);
    }
    eventually("refusals counted", || {
        closes(&s, CloseReason::ConnectRefused) == 3
    })
    .await;
    s.server.shutdown(WAIT).await;
}

/// A client id longer than `limits.max_client_id_length` is refused, then the connection
/// closed: 0x85 in 5.0 [MQTT-3.1.3-8], 0x02 in 3.1.1 [MQTT-3.1.3-9]; one of exactly that
/// length is accepted (23 bytes must always be: [MQTT-3.1.3-5]).
#[tokio::test]
async fn client_id_over_the_limit_is_refused() {
    let mut config = config();
    config.limits.max_client_id_length = 23;
    let s = start_with(config).await;
    let ok = "a".repeat(23);
    let long = "b".repeat(24);
    for version in [V3_1_1, V5] {
        let c = Raw::connect(s.addr, version, &ok).await;
        c.disconnect().await;
        let (mut c, ack) =
            Raw::connect_with(s.addr, Connect::new(version, long.as_str(), 60)).await;
        // 3.1.1 return code 0x02 decodes to the same reason code as 5.0's 0x85.
        assert_eq!(
            ack.reason_code,
            ReasonCode::ClientIdentifierNotValid,
            "{version:?}"
        );
        assert_eq!(c.expect_closed().await, vec![]);
    }
    // The exact 3.1.1 byte.
    let mut c = Raw::open(s.addr, V3_1_1).await;
    c.send(Packet::Connect(Box::new(Connect::new(
        V3_1_1,
        long.as_str(),
        60,
    ))))
    .await;
    assert_eq!(bytes_until_close(&mut c).await, [0x20, 0x02, 0x00, 0x02]);
    s.server.shutdown(WAIT).await;
}

/// Herald supports no authentication method: CONNACK 0x8C, then close [MQTT-4.12.0-1],
/// [MQTT-3.2.2-7].
#[tokio::test]
async fn authentication_method_is_refused() {
    let s = start().await;
    let mut connect = Connect::new(V5, "auth", 60);
    connect.properties.authentication_method = Some("SCRAM-SHA-1".into());
    let (mut c, ack) = Raw::connect_with(s.addr, connect).await;
    assert_eq!(ack.reason_code, ReasonCode::BadAuthenticationMethod);
    assert!(!ack.session_present);
    assert_eq!(c.expect_closed().await, vec![]);
    eventually("refusal counted", || {
        closes(&s, CloseReason::ConnectRefused) == 1
    })
    .await;
    s.server.shutdown(WAIT).await;
}

/// Nothing received within 1.5 times the keep-alive closes the connection (3.1.1
/// [MQTT-3.1.2-24], 5.0 [MQTT-3.1.2-22]); a 5.0 client is told 0x8D first (§4.13). Not before
/// the keep-alive itself has passed.
#[tokio::test]
async fn keep_alive_is_enforced_at_one_and_a_half_times() {
    let s = start().await;
    let (mut v5, _) = Raw::connect_with(s.addr, Connect::new(V5, "ka5", 1)).await;
    let (mut v3, _) = Raw::connect_with(s.addr, Connect::new(V3_1_1, "ka3", 1)).await;
    let t0 = Instant::now();
    quiet_for(&mut v5, Duration::from_millis(1000)).await;
    assert_eq!(
        v5.expect_closed().await,
        vec![Packet::Disconnect(Disconnect::new(
            ReasonCode::KeepAliveTimeout
        ))]
    );
    assert!(
        t0.elapsed() >= Duration::from_millis(1400),
        "closed after {:?}, before 1.5 x keep-alive",
        t0.elapsed()
    );
    assert_eq!(v3.expect_closed().await, vec![]);
    eventually("keep-alive timeouts counted", || {
        closes(&s, CloseReason::KeepAliveTimeout) == 2
    })
    .await;
    s.server.shutdown(WAIT).await;
}

/// Control packets received reset the keep-alive timer.
#[tokio::test]
async fn traffic_keeps_the_connection_alive() {
    let s = start().await;
    let (mut c, _) = Raw::connect_with(s.addr, Connect::new(V5, "pinger", 1)).await;
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_millis(2500) {
        tokio::time::sleep(Duration::from_millis(400)).await;
        c.send(Packet::PingReq).await;
        assert_eq!(c.recv().await, Packet::PingResp);
    }
    assert_eq!(closes(&s, CloseReason::KeepAliveTimeout), 0);
    c.disconnect().await;
    s.server.shutdown(WAIT).await;
}

/// [MQTT-3.2.2-21], [MQTT-3.2.2-22]: a 5.0 client asking more than `max_keep_alive_secs` (or
/// 0) is told Server Keep Alive; other requests and 3.1.1 clients are not.
#[tokio::test]
async fn server_keep_alive_caps_the_request() {
    let mut config = config();
    config.limits.max_keep_alive_secs = 30;
    let s = start_with(config).await;
    for (asked, told) in [(60, Some(30)), (0, Some(30)), (30, None), (10, None)] {
        let (c, ack) = Raw::connect_with(s.addr, Connect::new(V5, "ska", asked)).await;
        assert_eq!(ack.reason_code, ReasonCode::Success);
        assert_eq!(ack.properties.server_keep_alive, told, "asked {asked}");
        c.disconnect().await;
    }
    let (c, ack) = Raw::connect_with(s.addr, Connect::new(V3_1_1, "ska3", 60)).await;
    assert_eq!(ack.reason_code, ReasonCode::Success);
    c.disconnect().await;
    s.server.shutdown(WAIT).await;
}

/// The Server Keep Alive told is the one enforced.
#[tokio::test]
async fn server_keep_alive_is_enforced() {
    let mut config = config();
    config.limits.max_keep_alive_secs = 1;
    let s = start_with(config).await;
    let (mut c, ack) = Raw::connect_with(s.addr, Connect::new(V5, "ska", 60)).await;
    assert_eq!(ack.properties.server_keep_alive, Some(1));
    assert_eq!(
        c.expect_closed().await,
        vec![Packet::Disconnect(Disconnect::new(
            ReasonCode::KeepAliveTimeout
        ))]
    );
    eventually("keep-alive timeout counted", || {
        closes(&s, CloseReason::KeepAliveTimeout) == 1
    })
    .await;
    s.server.shutdown(WAIT).await;
}

/// §3.2.2.3: CONNACK tells the configured Receive Maximum, Maximum Packet Size, Topic Alias
/// Maximum, and Maximum QoS / Retain Available when they are below the protocol's.
#[tokio::test]
async fn connack_v5_properties() {
    let mut config = config();
    config.limits.receive_maximum = 17;
    config.limits.max_packet_size = 4096;
    config.limits.topic_alias_maximum = 5;
    let s = start_with(config).await;
    let (c, ack) = Raw::connect_with(s.addr, Connect::new(V5, "props", 60)).await;
    assert_eq!(ack.reason_code, ReasonCode::Success);
    let p = &ack.properties;
    assert_eq!(p.receive_maximum, Some(17));
    assert_eq!(p.maximum_packet_size, Some(4096));
    assert_eq!(p.topic_alias_maximum, Some(5));
    assert_eq!(p.maximum_qos, None, "QoS 2 is the default maximum");
    assert_eq!(p.retain_available, None, "retain is available by default");
    assert_eq!(
        p.assigned_client_identifier, None,
        "the client chose its id"
    );
    c.disconnect().await;
    s.server.shutdown(WAIT).await;

    let mut config = common::config();
    config.session.maximum_qos = 1;
    config.session.retain_available = false;
    let s = start_with(config).await;
    let (c, ack) = Raw::connect_with(s.addr, Connect::new(V5, "props", 60)).await;
    assert_eq!(ack.properties.maximum_qos, Some(QoS::AtLeastOnce));
    assert_eq!(ack.properties.retain_available, Some(false));
    c.disconnect().await;
    s.server.shutdown(WAIT).await;
}

/// Past `limits.max_connections` new connections are refused: 0x97 Quota exceeded (5.0),
/// 0x03 Server unavailable (3.1.1); a freed slot is usable again.
#[tokio::test]
async fn connection_limit() {
    let mut config = config();
    config.limits.max_connections = 2;
    let s = start_with(config).await;
    let a = Raw::connect(s.addr, V5, "a").await;
    let mut b = Raw::connect(s.addr, V3_1_1, "b").await;

    let (mut c, ack) = Raw::connect_with(s.addr, Connect::new(V5, "c", 60)).await;
    assert_eq!(ack.reason_code, ReasonCode::QuotaExceeded);
    assert_eq!(c.expect_closed().await, vec![]);
    let mut c = Raw::open(s.addr, V3_1_1).await;
    c.send(Packet::Connect(Box::new(Connect::new(V3_1_1, "c", 60))))
        .await;
    assert_eq!(bytes_until_close(&mut c).await, [0x20, 0x02, 0x00, 0x03]);
    eventually("limit refusals counted", || {
        closes(&s, CloseReason::ConnectionLimit) == 2
    })
    .await;

    // The connections already in are unaffected; a freed slot is taken.
    b.send(Packet::PingReq).await;
    assert_eq!(b.recv().await, Packet::PingResp);
    a.disconnect().await;
    let stats = &s.server.broker().stats;
    eventually("one connection open", || {
        stats.open.load(std::sync::atomic::Ordering::Relaxed) == 1
    })
    .await;
    let c = Raw::connect(s.addr, V5, "c").await;
    c.disconnect().await;
    b.disconnect().await;
    s.server.shutdown(WAIT).await;
}

/// §3.2.2.3.6: a packet larger than the Maximum Packet Size Herald announced is refused
/// with DISCONNECT 0x95 (5.0) or a close (3.1.1); one within it is accepted.
#[tokio::test]
async fn packet_over_max_packet_size() {
    let mut config = config();
    config.limits.max_packet_size = 1024;
    let s = start_with(config).await;

    let mut c = Raw::connect(s.addr, V5, "big5").await;
    c.publish("big", &[7; 900], QoS::AtLeastOnce, false).await;
    let mut p = Publish::new("big", vec![7u8; 2000]);
    p.qos = QoS::AtLeastOnce;
    p.packet_id = 99;
    c.send(Packet::Publish(p.clone())).await;
    assert_eq!(
        c.expect_closed().await,
        vec![Packet::Disconnect(Disconnect::new(
            ReasonCode::PacketTooLarge
        ))]
    );

    let mut c = Raw::connect(s.addr, V3_1_1, "big3").await;
    c.publish("big", &[7; 900], QoS::AtLeastOnce, false).await;
    c.send(Packet::Publish(p)).await;
    assert_eq!(c.expect_closed().await, vec![]);
    eventually("too-large packets counted", || {
        closes(&s, CloseReason::PacketTooLarge) == 2
    })
    .await;
    s.server.shutdown(WAIT).await;
}

#[tokio::test]
async fn mqtt_3_1_client_ids_are_at_most_23_characters() {
    let s = start().await;
    let ok = Connect::new(V3_1, "a".repeat(23), 60);
    let (_c, ack) = Raw::connect_with(s.addr, ok).await;
    assert_eq!(ack.reason_code, ReasonCode::Success);
    let long = Connect::new(V3_1, "b".repeat(24), 60);
    let (mut c, ack) = Raw::connect_with(s.addr, long).await;
    assert_eq!(
        ack.reason_code,
        ReasonCode::ClientIdentifierNotValid,
        "3.1 return code 2"
    );
    assert!(c.expect_closed().await.is_empty());
    // 3.1.1 allows longer ids (up to limits.max_client_id_length).
    let (_c, ack) = Raw::connect_with(s.addr, Connect::new(V3_1_1, "c".repeat(24), 60)).await;
    assert_eq!(ack.reason_code, ReasonCode::Success);
}
