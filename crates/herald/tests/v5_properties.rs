//! MQTT 5.0 properties (§3.3.2.3 PUBLISH properties, §3.1.2.11 / §3.2.2.3 CONNECT and CONNACK
//! limits): application properties forwarded untouched, message expiry, topic aliases in
//! both directions, Maximum Packet Size in both directions, subscription identifiers.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use herald::broker::stats::{CloseReason, DropReason};
use mqtt_codec::properties::PublishProperties;
use mqtt_codec::{
    Ack, Connect, Disconnect, Packet, ProtocolVersion::*, Publish, QoS, ReasonCode, Subscribe,
};

/// A v5 CONNECT with clean start, changed by `edit`.
async fn connect_v5(s: &TestServer, id: &str, edit: impl FnOnce(&mut Connect)) -> Raw {
    let mut c = Connect::new(V5, id, 60);
    edit(&mut c);
    let (raw, ack) = Raw::connect_with(s.addr, c).await;
    assert_eq!(ack.reason_code, ReasonCode::Success, "{ack:?}");
    raw
}

/// Sends a PUBLISH as given (packet id assigned for QoS 1) and returns the PUBACK.
async fn publish_raw(c: &mut Raw, mut p: Publish) -> Ack {
    if p.qos != QoS::AtMostOnce {
        p.packet_id = c.next_id();
    }
    let id = p.packet_id;
    let qos = p.qos;
    c.send(Packet::Publish(p)).await;
    if qos == QoS::AtMostOnce {
        // A PINGREQ round trip proves the PUBLISH was processed.
        c.send(Packet::PingReq).await;
        assert_eq!(c.recv().await, Packet::PingResp);
        return Ack::new(0);
    }
    match c.recv().await {
        Packet::PubAck(a) => {
            assert_eq!(a.packet_id, id);
            a
        }
        other => panic!("expected PUBACK, got {other:?}"),
    }
}

fn publish(topic: &str, payload: &[u8], qos: QoS) -> Publish {
    let mut p = Publish::new(topic, payload.to_vec());
    p.qos = qos;
    p
}

/// Receives a PUBLISH and acknowledges it if it is QoS 1.
async fn recv_ack(c: &mut Raw) -> Publish {
    let p = c.recv_publish().await;
    if p.qos == QoS::AtLeastOnce {
        c.send(Packet::PubAck(Ack::new(p.packet_id))).await;
    }
    p
}

#[tokio::test]
async fn application_properties_are_forwarded_untouched() {
    let s = start().await;
    let mut sub = connect_v5(&s, "props-sub", |_| {}).await;
    assert_eq!(
        sub.subscribe("props/#", QoS::AtLeastOnce).await,
        vec![ReasonCode::GrantedQoS1]
    );
    let mut publisher = connect_v5(&s, "props-pub", |_| {}).await;
    let props = PublishProperties {
        payload_format_indicator: Some(true),
        content_type: Some("application/json; charset=utf-8".into()),
        response_topic: Some("props/reply/7".into()),
        correlation_data: Some(Bytes::from_static(&[0, 1, 2, 0xFF, 0xFE])),
        // Repeated names and a non-alphabetical order: both must survive [MQTT-3.3.2-18].
        user_properties: vec![
            ("z".into(), "1".into()),
            ("a".into(), "2".into()),
            ("z".into(), "3".into()),
            ("ключ".into(), "".into()),
        ],
        ..Default::default()
    };
    for qos in [QoS::AtMostOnce, QoS::AtLeastOnce] {
        let mut p = publish("props/t", b"{\"x\":1}", qos);
        p.properties = props.clone();
        publish_raw(&mut publisher, p).await;
        let got = recv_ack(&mut sub).await;
        assert_eq!(&*got.topic, "props/t");
        assert_eq!(got.qos, qos);
        assert_eq!(&got.payload[..], b"{\"x\":1}");
        // [MQTT-3.3.2-4] payload format, [MQTT-3.3.2-15] response topic, [MQTT-3.3.2-16]
        // correlation data, [MQTT-3.3.2-17]/[MQTT-3.3.2-18] user properties in order,
        // [MQTT-3.3.2-20] content type: all forwarded unaltered, nothing added.
        assert_eq!(got.properties, props, "{qos:?}");
    }
    // A payload format indicator of 0 (unspecified bytes) is forwarded too.
    let mut p = publish("props/bin", &[0xFF, 0x00], QoS::AtLeastOnce);
    p.properties.payload_format_indicator = Some(false);
    publish_raw(&mut publisher, p).await;
    let got = recv_ack(&mut sub).await;
    assert_eq!(got.properties.payload_format_indicator, Some(false));
    s.server.shutdown(WAIT).await;
}

#[tokio::test]
async fn expired_messages_are_not_delivered_and_the_rest_carry_the_remaining_interval() {
    let s = start().await;
    let stats = &s.server.broker().stats;
    // An online subscriber gets the interval at most as sent [MQTT-3.3.2-6].
    let mut online = connect_v5(&s, "exp-online", |_| {}).await;
    online.subscribe("exp/#", QoS::AtLeastOnce).await;

    let mut sub = connect_v5(&s, "exp-sub", |c| {
        c.properties.session_expiry_interval = Some(300);
    })
    .await;
    sub.subscribe("exp/t", QoS::AtLeastOnce).await;
    sub.disconnect().await;
    until_offline(&s, "exp-sub").await;

    let mut publisher = connect_v5(&s, "exp-pub", |_| {}).await;
    for (payload, expiry) in [("short", Some(2)), ("long", Some(60)), ("never", None)] {
        let mut p = publish("exp/t", payload.as_bytes(), QoS::AtLeastOnce);
        p.properties.message_expiry_interval = expiry;
        publish_raw(&mut publisher, p).await;
        let got = recv_ack(&mut online).await;
        assert_eq!(&got.payload[..], payload.as_bytes());
        match expiry {
            Some(sent) => {
                let left = got
                    .properties
                    .message_expiry_interval
                    .expect("interval kept");
                assert!(left <= sent && left > 0, "{left} of {sent}");
            }
            None => assert_eq!(got.properties.message_expiry_interval, None),
        }
    }
    // Let "short" (2 s) outlive its interval while "long" waits too.
    tokio::time::sleep(Duration::from_millis(3100)).await;

    let (mut sub, ack) = Raw::connect_with(s.addr, {
        let mut c = Connect::new(V5, "exp-sub", 60);
        c.clean_start = false;
        c.properties.session_expiry_interval = Some(300);
        c
    })
    .await;
    assert!(ack.session_present);
    // [MQTT-3.3.2-5]: the expired copy is deleted, not sent.
    let long = recv_ack(&mut sub).await;
    assert_eq!(&long.payload[..], b"long");
    let left = long
        .properties
        .message_expiry_interval
        .expect("the remaining interval is sent");
    // [MQTT-3.3.2-6]: the received value minus the time the message waited (over 3 s).
    assert!((50..60).contains(&left), "remaining interval {left}");
    let never = recv_ack(&mut sub).await;
    assert_eq!(&never.payload[..], b"never");
    assert_eq!(never.properties.message_expiry_interval, None);
    sub.expect_nothing().await;
    assert_eq!(stats.drops(DropReason::Expired), 1);
    s.server.shutdown(WAIT).await;
}

#[tokio::test]
async fn inbound_topic_aliases_resolve_and_are_not_forwarded() {
    let s = start().await;
    let mut sub = connect_v5(&s, "alias-sub", |_| {}).await;
    sub.subscribe("al/#", QoS::AtLeastOnce).await;
    let (mut publisher, ack) = Raw::connect_with(s.addr, Connect::new(V5, "alias-pub", 60)).await;
    assert_eq!(ack.properties.topic_alias_maximum, Some(64));

    let steps: [(&str, &str); 4] = [
        ("al/one", "al/one"),
        ("", "al/one"),
        // A new topic for the same alias replaces the mapping (MQTT 5.0 §3.3.4).
        ("al/two", "al/two"),
        ("", "al/two"),
    ];
    for (i, (sent, resolved)) in steps.into_iter().enumerate() {
        let mut p = publish(sent, format!("{i}").as_bytes(), QoS::AtLeastOnce);
        p.properties.topic_alias = Some(3);
        let puback = publish_raw(&mut publisher, p).await;
        assert_eq!(puback.reason_code, ReasonCode::Success);
        let got = recv_ack(&mut sub).await;
        assert_eq!(&*got.topic, resolved, "step {i}");
        assert_eq!(got.payload, format!("{i}").as_bytes());
        // The publisher's alias is its connection's alone [MQTT-3.3.2-7]; this subscriber
        // allows none [MQTT-3.1.2-27].
        assert_eq!(got.properties.topic_alias, None);
    }
    // At the maximum is fine [MQTT-3.3.2-12].
    let mut p = publish("al/max", b"m", QoS::AtLeastOnce);
    p.properties.topic_alias = Some(64);
    publish_raw(&mut publisher, p).await;
    assert_eq!(&*recv_ack(&mut sub).await.topic, "al/max");
    publisher.disconnect().await;

    // Mappings do not carry over to a new connection [MQTT-3.3.2-7]: an alias with an empty
    // topic that this connection never set is a Protocol Error (MQTT 5.0 §3.3.4, 3a).
    let before = s.server.broker().stats.closes(CloseReason::ProtocolError);
    let (mut publisher, _) = Raw::connect_with(s.addr, {
        let mut c = Connect::new(V5, "alias-pub", 60);
        c.clean_start = false;
        c
    })
    .await;
    let mut p = publish("", b"lost", QoS::AtLeastOnce);
    p.properties.topic_alias = Some(3);
    p.packet_id = 1;
    publisher.send(Packet::Publish(p)).await;
    assert_eq!(
        publisher.expect_closed().await,
        vec![Packet::Disconnect(Disconnect::new(
            ReasonCode::ProtocolError
        ))]
    );
    sub.expect_nothing().await;
    let broker = s.server.broker().clone();
    eventually("protocol error counted", || {
        broker.stats.closes(CloseReason::ProtocolError) == before + 1
    })
    .await;
    s.server.shutdown(WAIT).await;
}

#[tokio::test]
async fn topic_alias_above_the_maximum_or_zero_disconnects_with_0x94() {
    let mut config = config();
    config.limits.topic_alias_maximum = 4;
    let s = start_with(config).await;
    let stats = &s.server.broker().stats;
    let (mut c, ack) = Raw::connect_with(s.addr, Connect::new(V5, "alias-hi", 60)).await;
    assert_eq!(ack.properties.topic_alias_maximum, Some(4));
    let mut ok = publish("hi/t", b"x", QoS::AtLeastOnce);
    ok.properties.topic_alias = Some(4);
    publish_raw(&mut c, ok).await;
    // [MQTT-3.3.2-9]; "a Topic Alias value of 0 or greater than the Maximum Topic Alias is a
    // Protocol Error, the receiver uses DISCONNECT with Reason Code of 0x94" (MQTT 5.0 §3.3.4).
    let mut p = publish("hi/t", b"x", QoS::AtLeastOnce);
    p.properties.topic_alias = Some(5);
    p.packet_id = 9;
    c.send(Packet::Publish(p)).await;
    assert_eq!(
        c.expect_closed().await,
        vec![Packet::Disconnect(Disconnect::new(
            ReasonCode::TopicAliasInvalid
        ))]
    );

    // Topic Alias 0 [MQTT-3.3.2-8], written by hand since the codec refuses to encode it:
    // PUBLISH QoS 0, topic "t", properties { 0x23: 0x0000 }.
    let (mut c, _) = Raw::connect_with(s.addr, Connect::new(V5, "alias-zero", 60)).await;
    c.send_bytes(&[0x30, 0x08, 0x00, 0x01, b't', 0x03, 0x23, 0x00, 0x00, b'x'])
        .await;
    assert_eq!(
        c.expect_closed().await,
        vec![Packet::Disconnect(Disconnect::new(
            ReasonCode::TopicAliasInvalid
        ))]
    );

    // A server that accepts no aliases refuses alias 1.
    let mut config = common::config();
    config.limits.topic_alias_maximum = 0;
    let none = start_with(config).await;
    let (mut c, ack) = Raw::connect_with(none.addr, Connect::new(V5, "alias-none", 60)).await;
    assert!(matches!(ack.properties.topic_alias_maximum, None | Some(0)));
    let mut p = publish("hi/t", b"x", QoS::AtMostOnce);
    p.properties.topic_alias = Some(1);
    c.send(Packet::Publish(p)).await;
    assert_eq!(
        c.expect_closed().await,
        vec![Packet::Disconnect(Disconnect::new(
            ReasonCode::TopicAliasInvalid
        ))]
    );

    let broker = s.server.broker().clone();
    eventually("two alias closes counted", || {
        broker.stats.closes(CloseReason::TopicAliasInvalid) == 2
    })
    .await;
    let other = none.server.broker().clone();
    eventually("alias close counted", || {
        other.stats.closes(CloseReason::TopicAliasInvalid) == 1
    })
    .await;
    assert_eq!(stats.closes(CloseReason::TopicAliasInvalid), 2);
    none.server.shutdown(WAIT).await;
    s.server.shutdown(WAIT).await;
}

#[tokio::test]
async fn outbound_topic_aliases_only_for_clients_that_allow_them() {
    let s = start().await;
    let mut aliased = connect_v5(&s, "oa-aliased", |c| {
        c.properties.topic_alias_maximum = Some(2);
    })
    .await;
    let mut plain5 = connect_v5(&s, "oa-plain5", |_| {}).await;
    let mut zero5 = connect_v5(&s, "oa-zero5", |c| {
        c.properties.topic_alias_maximum = Some(0);
    })
    .await;
    let mut plain3 = Raw::connect(s.addr, V3_1_1, "oa-plain3").await;
    for c in [&mut aliased, &mut plain5, &mut zero5, &mut plain3] {
        c.subscribe("oa/#", QoS::AtLeastOnce).await;
    }
    let mut publisher = connect_v5(&s, "oa-pub", |_| {}).await;

    // Three topics for two aliases: the third never gets one.
    let topics = [
        "oa/x", "oa/x", "oa/y", "oa/x", "oa/z", "oa/z", "oa/y", "oa/x",
    ];
    let mut mapping: std::collections::HashMap<u16, String> = Default::default();
    let mut seen: std::collections::HashSet<&str> = Default::default();
    for qos in [QoS::AtLeastOnce, QoS::AtMostOnce] {
        for (i, topic) in topics.iter().enumerate() {
            let payload = format!("{qos:?}-{i}");
            publish_raw(&mut publisher, publish(topic, payload.as_bytes(), qos)).await;

            let got = recv_ack(&mut aliased).await;
            assert_eq!(got.payload, payload.as_bytes());
            let resolved = match got.properties.topic_alias {
                // [MQTT-3.1.2-26]: never above the client's Topic Alias Maximum.
                Some(alias) => {
                    assert!((1..=2).contains(&alias), "alias {alias}");
                    if got.topic.is_empty() {
                        mapping.get(&alias).expect("alias set before use").clone()
                    } else {
                        mapping.insert(alias, got.topic.to_string());
                        got.topic.to_string()
                    }
                }
                None => {
                    assert!(!got.topic.is_empty());
                    got.topic.to_string()
                }
            };
            assert_eq!(resolved, *topic, "{payload}");
            // "oa/z" comes third, when both aliases are taken: it may go either way.
            if *topic != "oa/z" {
                if seen.insert(topic) {
                    // First time: the topic and the alias it sets.
                    assert_eq!(&*got.topic, *topic, "{payload}");
                    assert!(got.properties.topic_alias.is_some(), "{payload}");
                } else {
                    // Later: the alias alone, with an empty topic.
                    assert!(got.topic.is_empty(), "{payload}: {got:?}");
                    assert!(got.properties.topic_alias.is_some(), "{payload}");
                }
            }

            // [MQTT-3.1.2-27]: absent or zero Topic Alias Maximum, no aliases at all.
            for c in [&mut plain5, &mut zero5, &mut plain3] {
                let got = recv_ack(c).await;
                assert_eq!(&*got.topic, *topic);
                assert_eq!(got.properties.topic_alias, None);
                assert_eq!(got.payload, payload.as_bytes());
            }
        }
    }
    s.server.shutdown(WAIT).await;
}

#[tokio::test]
async fn packets_over_heralds_maximum_packet_size_disconnect_with_0x95() {
    let mut config = config();
    config.limits.max_packet_size = 1024;
    let s = start_with(config).await;
    let mut sub = connect_v5(&s, "mps-in-sub", |_| {}).await;
    sub.subscribe("mps/in", QoS::AtLeastOnce).await;
    let (mut c, ack) = Raw::connect_with(s.addr, Connect::new(V5, "mps-in", 60)).await;
    assert_eq!(ack.properties.maximum_packet_size, Some(1024));

    // Exactly at the limit (the whole packet counted) is accepted.
    let mut p = publish("mps/in", b"", QoS::AtLeastOnce);
    p.packet_id = 1;
    let overhead = p.encoded_len(V5).unwrap();
    let mut payload = vec![b'a'; 1024 - overhead];
    // The remaining length takes two bytes once the packet passes 127 bytes.
    p.payload = payload.clone().into();
    payload.truncate(payload.len() - (p.encoded_len(V5).unwrap() - 1024));
    p.payload = payload.clone().into();
    assert_eq!(p.encoded_len(V5).unwrap(), 1024);
    let puback = publish_raw(&mut c, p.clone()).await;
    assert_eq!(puback.reason_code, ReasonCode::Success);
    assert_eq!(recv_ack(&mut sub).await.payload.len(), payload.len());

    // One byte more: "If a Server receives a packet whose size exceeds this limit, this is a
    // Protocol Error, the Server uses DISCONNECT with Reason Code 0x95" [MQTT-3.2.2-15].
    payload.push(b'a');
    p.payload = payload.into();
    p.packet_id = 2;
    c.send(Packet::Publish(p)).await;
    assert_eq!(
        c.expect_closed().await,
        vec![Packet::Disconnect(Disconnect::new(
            ReasonCode::PacketTooLarge
        ))]
    );
    sub.expect_nothing().await;
    let broker = s.server.broker().clone();
    eventually("too-large close counted", || {
        broker.stats.closes(CloseReason::PacketTooLarge) == 1
    })
    .await;
    s.server.shutdown(WAIT).await;
}

#[tokio::test]
async fn messages_over_a_subscribers_maximum_packet_size_are_skipped() {
    const MAX: u32 = 256;
    let s = start().await;
    let stats = &s.server.broker().stats;
    // Receive Maximum 1: if the skipped QoS 1 message stayed in flight, nothing would follow.
    let mut small = connect_v5(&s, "mps-out-small", |c| {
        c.properties.maximum_packet_size = Some(MAX);
        c.properties.receive_maximum = Some(1);
    })
    .await;
    let mut big = connect_v5(&s, "mps-out-big", |_| {}).await;
    small.subscribe("mps/out", QoS::AtLeastOnce).await;
    big.subscribe("mps/out", QoS::AtLeastOnce).await;
    let mut publisher = connect_v5(&s, "mps-out-pub", |_| {}).await;

    // The payload that makes the delivered QoS 1 packet exactly MAX bytes.
    let mut probe = publish("mps/out", b"", QoS::AtLeastOnce);
    probe.packet_id = 1;
    let fits = MAX as usize - probe.encoded_len(V5).unwrap() - 1;
    probe.payload = vec![0u8; fits].into();
    assert_eq!(probe.encoded_len(V5).unwrap(), MAX as usize);

    for qos in [QoS::AtLeastOnce, QoS::AtMostOnce] {
        let before = stats.drops(DropReason::TooLargeForClient);
        let huge = vec![b'h'; 1000];
        publish_raw(&mut publisher, publish("mps/out", &huge, qos)).await;
        publish_raw(&mut publisher, publish("mps/out", b"small", qos)).await;
        // The other subscriber, without a limit, gets both.
        assert_eq!(recv_ack(&mut big).await.payload.len(), 1000);
        assert_eq!(&recv_ack(&mut big).await.payload[..], b"small");
        // [MQTT-3.1.2-24]: not sent; [MQTT-3.1.2-25]: treated as delivered, so the next one
        // goes out although Receive Maximum is 1.
        let got = small.recv_publish().await;
        assert_eq!(&got.payload[..], b"small", "{qos:?}");
        if qos == QoS::AtLeastOnce {
            let session = s
                .server
                .broker()
                .default_tenant
                .sessions
                .get("mps-out-small")
                .unwrap();
            let inflight: Vec<u16> = session.lock().inflight_ids().collect();
            assert_eq!(
                inflight,
                vec![got.packet_id],
                "only the small one in flight"
            );
            small.send(Packet::PubAck(Ack::new(got.packet_id))).await;
            let broker = s.server.broker().clone();
            eventually("nothing in flight", || {
                broker
                    .default_tenant
                    .sessions
                    .get("mps-out-small")
                    .is_some_and(|s| s.lock().inflight_len() == 0)
            })
            .await;
        }
        assert_eq!(stats.drops(DropReason::TooLargeForClient), before + 1);
        // Exactly at the client's limit is sent.
        publish_raw(&mut publisher, publish("mps/out", &vec![b'f'; fits], qos)).await;
        let got = recv_ack(&mut small).await;
        assert_eq!(got.payload.len(), fits);
        recv_ack(&mut big).await;
        small.expect_nothing().await;
    }
    s.server.shutdown(WAIT).await;
}

#[tokio::test]
async fn subscription_identifiers_are_carried_on_deliveries() {
    let s = start().await;
    let mut sub = connect_v5(&s, "sid-sub", |_| {}).await;
    let subscribe = |filter: &str, id: Option<u32>| {
        let mut p = Subscribe::new(0, filter, QoS::AtLeastOnce);
        p.properties.subscription_identifier = id;
        p
    };
    for (filter, id) in [
        ("sid/+", Some(42)),
        ("sid/#", Some(268_435_455)),
        ("sid/none", None),
    ] {
        let mut p = subscribe(filter, id);
        p.packet_id = sub.next_id();
        sub.send(Packet::Subscribe(p)).await;
        assert!(matches!(sub.recv().await, Packet::SubAck(_)));
    }
    let mut publisher = connect_v5(&s, "sid-pub", |_| {}).await;
    let cases: [(&str, &[u32]); 3] = [
        // Overlapping subscriptions: one copy with every identifier [MQTT-3.3.4-4], order
        // not significant.
        ("sid/a", &[42, 268_435_455]),
        ("sid/a/b", &[268_435_455]),
        ("sid/none", &[42, 268_435_455]),
    ];
    for qos in [QoS::AtLeastOnce, QoS::AtMostOnce] {
        for (topic, ids) in cases {
            publish_raw(&mut publisher, publish(topic, b"x", qos)).await;
            let got = recv_ack(&mut sub).await;
            assert_eq!(&*got.topic, topic);
            let mut carried = got.properties.subscription_identifiers.clone();
            carried.sort_unstable();
            assert_eq!(carried, ids, "{topic} {qos:?}");
        }
    }
    // Subscribing again replaces the identifier; a subscription without one carries none.
    let mut p = subscribe("sid/+", Some(7));
    p.packet_id = sub.next_id();
    sub.send(Packet::Subscribe(p)).await;
    assert!(matches!(sub.recv().await, Packet::SubAck(_)));
    let mut p = subscribe("sid/#", None);
    p.packet_id = sub.next_id();
    sub.send(Packet::Subscribe(p)).await;
    assert!(matches!(sub.recv().await, Packet::SubAck(_)));
    publish_raw(&mut publisher, publish("sid/q", b"x", QoS::AtLeastOnce)).await;
    assert_eq!(
        recv_ack(&mut sub).await.properties.subscription_identifiers,
        vec![7]
    );
    publish_raw(&mut publisher, publish("sid/q/r", b"x", QoS::AtLeastOnce)).await;
    assert_eq!(
        recv_ack(&mut sub).await.properties.subscription_identifiers,
        Vec::<u32>::new()
    );

    // Retained messages sent on subscribe carry the new subscription's identifier.
    let mut r = publish("rsid/t", b"kept", QoS::AtLeastOnce);
    r.retain = true;
    publish_raw(&mut publisher, r).await;
    let mut p = subscribe("rsid/+", Some(99));
    p.packet_id = sub.next_id();
    sub.send(Packet::Subscribe(p)).await;
    assert!(matches!(sub.recv().await, Packet::SubAck(_)));
    let got = recv_ack(&mut sub).await;
    assert!(got.retain);
    assert_eq!(got.properties.subscription_identifiers, vec![99]);

    // A 3.1.1 subscriber never gets identifiers (its PUBLISH has no properties).
    let mut v3 = Raw::connect(s.addr, V3_1_1, "sid-v3").await;
    v3.subscribe("sid/+", QoS::AtLeastOnce).await;
    publish_raw(&mut publisher, publish("sid/v3", b"x", QoS::AtLeastOnce)).await;
    assert!(
        recv_ack(&mut v3)
            .await
            .properties
            .subscription_identifiers
            .is_empty()
    );
    s.server.shutdown(WAIT).await;
}
