//! Conformance: Quality of Service (MQTT 3.1.1 §4.3, §4.4; MQTT 5.0 §4.3, §4.4, §4.9):
//! QoS downgrade to the granted and the server maximum, QoS 2 exactly-once on the way in,
//! packet identifiers, Receive Maximum in both directions, and re-sending only on resume.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;

use common::*;
use herald::broker::stats::CloseReason;
use mqtt_codec::{Ack, Connect, Disconnect, Packet, ProtocolVersion::*, Publish, QoS, ReasonCode};

fn qos_publish(topic: &str, payload: &[u8], qos: QoS, packet_id: u16) -> Publish {
    let mut p = Publish::new(topic, payload.to_vec());
    p.qos = qos;
    p.packet_id = packet_id;
    p
}

#[tokio::test]
async fn delivery_qos_is_the_lower_of_published_and_granted() {
    let s = start().await;
    for version in [V5, V3_1_1] {
        let mut sub = Raw::connect(s.addr, version, "sub").await;
        let mut publisher = Raw::connect(s.addr, version, "pub").await;
        sub.subscribe("q/0", QoS::AtMostOnce).await;
        sub.subscribe("q/1", QoS::AtLeastOnce).await;
        sub.subscribe("q/2", QoS::ExactlyOnce).await;
        // [MQTT-3.8.4-8 of 5.0] / [MQTT-3.8.4-6 of 3.1.1]: min(published QoS, granted QoS).
        for (topic, granted) in [
            ("q/0", QoS::AtMostOnce),
            ("q/1", QoS::AtLeastOnce),
            ("q/2", QoS::ExactlyOnce),
        ] {
            for published in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
                publisher.publish(topic, b"m", published, false).await;
                let p = sub.recv_publish().await;
                assert_eq!(&*p.topic, topic);
                assert_eq!(
                    p.qos,
                    published.min(granted),
                    "{version:?}: {published:?} to a {granted:?} subscription"
                );
                match p.qos {
                    QoS::AtMostOnce => assert_eq!(p.packet_id, 0),
                    QoS::AtLeastOnce => sub.send(Packet::PubAck(Ack::new(p.packet_id))).await,
                    QoS::ExactlyOnce => {
                        sub.send(Packet::PubRec(Ack::new(p.packet_id))).await;
                        assert!(matches!(sub.recv().await, Packet::PubRel(_)));
                        sub.send(Packet::PubComp(Ack::new(p.packet_id))).await;
                    }
                }
            }
        }
        sub.disconnect().await;
        publisher.disconnect().await;
    }
    s.server.shutdown(WAIT).await;
}

#[tokio::test]
async fn server_maximum_qos_caps_grants_and_refuses_higher_publishes() {
    let mut config = config();
    config.session.maximum_qos = 1;
    let s = start_with(config).await;
    let (mut sub, ack) = Raw::connect_with(s.addr, Connect::new(V5, "sub", 60)).await;
    // [MQTT-3.2.2-9]: the server tells its Maximum QoS.
    assert_eq!(ack.properties.maximum_qos, Some(QoS::AtLeastOnce));
    // [MQTT-3.2.2-10]: a QoS 2 request is still accepted, granted QoS 1 (§3.9.3).
    assert_eq!(
        sub.subscribe("m/t", QoS::ExactlyOnce).await,
        vec![ReasonCode::GrantedQoS1]
    );
    let mut old = Raw::connect(s.addr, V3_1_1, "old").await;
    assert_eq!(
        old.subscribe("m/t", QoS::ExactlyOnce).await,
        vec![ReasonCode::GrantedQoS1]
    );

    let mut publisher = Raw::connect(s.addr, V5, "pub").await;
    publisher
        .publish("m/t", b"1", QoS::AtLeastOnce, false)
        .await;
    assert_eq!(sub.recv_publish().await.qos, QoS::AtLeastOnce);
    assert_eq!(old.recv_publish().await.qos, QoS::AtLeastOnce);

    // [MQTT-3.2.2-11] forbids a QoS above the Maximum QoS; §3.2.2.3.4: DISCONNECT 0x9B.
    publisher
        .send(Packet::Publish(qos_publish(
            "m/t",
            b"2",
            QoS::ExactlyOnce,
            9,
        )))
        .await;
    assert_eq!(
        publisher.expect_closed().await,
        vec![Packet::Disconnect(Disconnect::new(
            ReasonCode::QoSNotSupported
        ))]
    );
    // And the message went nowhere.
    assert!(
        drain(&mut sub, 0)
            .await
            .iter()
            .all(|p| p.payload != b"2"[..])
    );
    s.server.shutdown(WAIT).await;
}

#[tokio::test]
async fn qos2_inbound_is_delivered_exactly_once() {
    let s = start().await;
    for version in [V5, V3_1_1] {
        let mut sub = Raw::connect(s.addr, version, "sub").await;
        let mut publisher = Raw::connect(s.addr, version, "pub").await;
        sub.subscribe("x/t", QoS::ExactlyOnce).await;

        publisher
            .send(Packet::Publish(qos_publish(
                "x/t",
                b"once",
                QoS::ExactlyOnce,
                7,
            )))
            .await;
        match publisher.recv().await {
            Packet::PubRec(a) => assert_eq!((a.packet_id, a.reason_code), (7, ReasonCode::Success)),
            other => panic!("expected PUBREC, got {other:?}"),
        }
        // The publisher did not see the PUBREC (as far as it knows) and sends again with
        // DUP: it is acknowledged again [MQTT-4.3.3-9 of 5.0] but not delivered again
        // (method B of §4.3.3: the packet id stays "in use" until PUBREL).
        let mut again = qos_publish("x/t", b"once", QoS::ExactlyOnce, 7);
        again.dup = true;
        publisher.send(Packet::Publish(again.clone())).await;
        match publisher.recv().await {
            Packet::PubRec(a) => assert_eq!(a.packet_id, 7),
            other => panic!("expected PUBREC, got {other:?}"),
        }
        publisher.send(Packet::Publish(again)).await;
        match publisher.recv().await {
            Packet::PubRec(a) => assert_eq!(a.packet_id, 7),
            other => panic!("expected PUBREC, got {other:?}"),
        }
        let got = drain(&mut sub, 1).await;
        assert_eq!(got.len(), 1, "{version:?}: delivered once: {got:?}");
        assert_eq!(got[0].payload, &b"once"[..]);

        publisher.send(Packet::PubRel(Ack::new(7))).await;
        match publisher.recv().await {
            Packet::PubComp(a) => {
                assert_eq!((a.packet_id, a.reason_code), (7, ReasonCode::Success))
            }
            other => panic!("expected PUBCOMP, got {other:?}"),
        }
        // After PUBCOMP the id is free: the same id now carries a new message.
        publisher
            .send(Packet::Publish(qos_publish(
                "x/t",
                b"next",
                QoS::ExactlyOnce,
                7,
            )))
            .await;
        assert!(matches!(publisher.recv().await, Packet::PubRec(a) if a.packet_id == 7));
        publisher.send(Packet::PubRel(Ack::new(7))).await;
        assert!(matches!(publisher.recv().await, Packet::PubComp(a) if a.packet_id == 7));
        let got = drain(&mut sub, 1).await;
        assert_eq!(got.len(), 1, "{version:?}: {got:?}");
        assert_eq!(got[0].payload, &b"next"[..]);
        sub.disconnect().await;
        publisher.disconnect().await;
    }
    s.server.shutdown(WAIT).await;
}

#[tokio::test]
async fn pubrel_for_an_unknown_packet_id() {
    let s = start().await;
    let mut c = Raw::connect(s.addr, V5, "c5").await;
    c.send(Packet::PubRel(Ack::new(99))).await;
    // MQTT 5.0 §3.7.2.1: PUBCOMP 0x92 Packet Identifier not found; the connection stays.
    match c.recv().await {
        Packet::PubComp(a) => assert_eq!(
            (a.packet_id, a.reason_code),
            (99, ReasonCode::PacketIdentifierNotFound)
        ),
        other => panic!("expected PUBCOMP, got {other:?}"),
    }
    ping(&mut c).await;

    // 3.1.1 has no reason codes: a plain PUBCOMP.
    let mut c = Raw::connect(s.addr, V3_1_1, "c3").await;
    c.send(Packet::PubRel(Ack::new(99))).await;
    match c.recv().await {
        Packet::PubComp(a) => assert_eq!(a.packet_id, 99),
        other => panic!("expected PUBCOMP, got {other:?}"),
    }
    ping(&mut c).await;
    s.server.shutdown(WAIT).await;
}

#[tokio::test]
async fn delivery_packet_ids_are_nonzero_and_unique_in_flight() {
    let s = start().await;
    let mut sub = Raw::connect(s.addr, V5, "sub").await;
    let mut publisher = Raw::connect(s.addr, V5, "pub").await;
    sub.subscribe("ids/+", QoS::ExactlyOnce).await;

    // QoS 2 deliveries acknowledged with PUBREC only stay in flight until PUBCOMP.
    for i in 0..10u8 {
        publisher
            .publish("ids/2", &[i], QoS::ExactlyOnce, false)
            .await;
    }
    let mut in_flight = HashSet::new();
    let mut qos2 = Vec::new();
    for _ in 0..10 {
        let p = sub.recv_publish().await;
        assert_eq!(p.qos, QoS::ExactlyOnce);
        // §2.2.1: non-zero, and not one already in use.
        assert_ne!(p.packet_id, 0);
        assert!(in_flight.insert(p.packet_id), "id {} reused", p.packet_id);
        qos2.push(p.packet_id);
    }
    for id in qos2 {
        sub.send(Packet::PubRec(Ack::new(id))).await;
        match sub.recv().await {
            Packet::PubRel(r) => assert_eq!(r.packet_id, id),
            other => panic!("expected PUBREL, got {other:?}"),
        }
    }
    // QoS 1 deliveries, not acknowledged: their ids differ from each other and from the
    // QoS 2 ones still waiting for PUBCOMP.
    for i in 0..20u8 {
        publisher
            .publish("ids/1", &[i], QoS::AtLeastOnce, false)
            .await;
    }
    let mut qos1 = Vec::new();
    for i in 0..20u8 {
        let p = sub.recv_publish().await;
        assert_eq!((p.qos, &p.payload[..]), (QoS::AtLeastOnce, &[i][..]));
        assert_ne!(p.packet_id, 0);
        assert!(in_flight.insert(p.packet_id), "id {} reused", p.packet_id);
        qos1.push(p.packet_id);
    }
    // Complete everything; the ids may now be reused, but those in flight stay unique.
    for id in qos1 {
        sub.send(Packet::PubAck(Ack::new(id))).await;
    }
    for &id in &in_flight {
        sub.send(Packet::PubComp(Ack::new(id))).await;
    }
    ping(&mut sub).await;
    for i in 0..30u8 {
        publisher
            .publish("ids/1", &[i], QoS::AtLeastOnce, false)
            .await;
    }
    let mut again = HashSet::new();
    for _ in 0..30 {
        let p = sub.recv_publish().await;
        assert_ne!(p.packet_id, 0);
        assert!(again.insert(p.packet_id), "id {} reused", p.packet_id);
    }
    s.server.shutdown(WAIT).await;
}

#[tokio::test]
async fn herald_honours_the_clients_receive_maximum() {
    let s = start().await;
    let mut connect = Connect::new(V5, "sub", 60);
    connect.properties.receive_maximum = Some(2);
    let (mut sub, _) = Raw::connect_with(s.addr, connect).await;
    sub.subscribe("rm/t", QoS::ExactlyOnce).await;
    let mut publisher = Raw::connect(s.addr, V5, "pub").await;
    for i in 0..5u8 {
        publisher
            .publish("rm/t", &[i], QoS::AtLeastOnce, false)
            .await;
    }
    // [MQTT-3.3.4-9]: no more than Receive Maximum unacknowledged QoS 1/2 PUBLISHes.
    let first = drain(&mut sub, 2).await;
    assert_eq!(
        first.iter().map(|p| p.payload[0]).collect::<Vec<_>>(),
        vec![0, 1],
        "only two before any PUBACK"
    );
    sub.send(Packet::PubAck(Ack::new(first[0].packet_id))).await;
    let next = drain(&mut sub, 1).await;
    assert_eq!(
        next.iter().map(|p| p.payload[0]).collect::<Vec<_>>(),
        vec![2],
        "one PUBACK frees one place"
    );
    sub.send(Packet::PubAck(Ack::new(first[1].packet_id))).await;
    sub.send(Packet::PubAck(Ack::new(next[0].packet_id))).await;
    let rest = drain(&mut sub, 2).await;
    assert_eq!(
        rest.iter().map(|p| p.payload[0]).collect::<Vec<_>>(),
        vec![3, 4],
        "the rest, in order"
    );
    for p in &rest {
        sub.send(Packet::PubAck(Ack::new(p.packet_id))).await;
    }

    // QoS 2: PUBREC does not free the place, PUBCOMP does.
    for i in 10..13u8 {
        publisher
            .publish("rm/t", &[i], QoS::ExactlyOnce, false)
            .await;
    }
    let two = drain(&mut sub, 2).await;
    assert_eq!(
        two.iter().map(|p| p.payload[0]).collect::<Vec<_>>(),
        vec![10, 11]
    );
    sub.send(Packet::PubRec(Ack::new(two[0].packet_id))).await;
    assert!(matches!(sub.recv().await, Packet::PubRel(r) if r.packet_id == two[0].packet_id));
    assert!(drain(&mut sub, 0).await.is_empty(), "PUBREC frees nothing");
    sub.send(Packet::PubComp(Ack::new(two[0].packet_id))).await;
    let last = drain(&mut sub, 1).await;
    assert_eq!(
        last.iter().map(|p| p.payload[0]).collect::<Vec<_>>(),
        vec![12]
    );
    s.server.shutdown(WAIT).await;
}

#[tokio::test]
async fn client_exceeding_heralds_receive_maximum_is_disconnected() {
    let mut config = config();
    config.limits.receive_maximum = 2;
    let s = start_with(config).await;
    let (mut c, ack) = Raw::connect_with(s.addr, Connect::new(V5, "c", 60)).await;
    assert_eq!(ack.properties.receive_maximum, Some(2));
    for id in 1..=2 {
        c.send(Packet::Publish(qos_publish(
            "rx/t",
            b"x",
            QoS::ExactlyOnce,
            id,
        )))
        .await;
        assert!(matches!(c.recv().await, Packet::PubRec(a) if a.packet_id == id));
    }
    // No PUBREL: both are still unacknowledged by PUBCOMP. A third exceeds the maximum
    // (MQTT 5.0 §3.3.4: DISCONNECT 0x93 Receive Maximum exceeded).
    c.send(Packet::Publish(qos_publish(
        "rx/t",
        b"x",
        QoS::ExactlyOnce,
        3,
    )))
    .await;
    assert_eq!(
        c.expect_closed().await,
        vec![Packet::Disconnect(Disconnect::new(
            ReasonCode::ReceiveMaximumExceeded
        ))]
    );
    let stats = &s.server.broker().stats;
    eventually("the close is counted", || {
        stats.closes(CloseReason::ReceiveMaximumExceeded) == 1
    })
    .await;
    s.server.shutdown(WAIT).await;
}

#[tokio::test]
async fn unacknowledged_messages_are_resent_only_on_resume() {
    let s = start().await;
    let connect = |clean| {
        let mut c = Connect::new(V5, "sub", 60);
        c.clean_start = clean;
        c.properties.session_expiry_interval = Some(60);
        c
    };
    let (mut sub, _) = Raw::connect_with(s.addr, connect(true)).await;
    sub.subscribe("re/+", QoS::ExactlyOnce).await;
    let mut publisher = Raw::connect(s.addr, V5, "pub").await;
    publisher
        .publish("re/1", b"a", QoS::AtLeastOnce, false)
        .await;
    publisher
        .publish("re/1", b"b", QoS::AtLeastOnce, false)
        .await;
    publisher
        .publish("re/2", b"c", QoS::ExactlyOnce, false)
        .await;

    let first = drain(&mut sub, 3).await;
    assert_eq!(
        first.iter().map(|p| &p.payload[..]).collect::<Vec<_>>(),
        vec![&b"a"[..], b"b", b"c"]
    );
    assert!(first.iter().all(|p| !p.dup));
    // PUBREC the QoS 2 one: it moves on to PUBREL.
    sub.send(Packet::PubRec(Ack::new(first[2].packet_id))).await;
    assert!(matches!(sub.recv().await, Packet::PubRel(r) if r.packet_id == first[2].packet_id));

    // [MQTT-4.4.0-1]: never re-sent on the same connection, however long it waits ...
    assert!(drain(&mut sub, 0).await.is_empty());
    ping(&mut sub).await;
    // ... yet still in flight in the session.
    let session = s
        .server
        .broker()
        .default_tenant
        .sessions
        .get("sub")
        .unwrap();
    assert_eq!(session.lock().inflight_len(), 3);

    // On resume: the PUBLISHes again with DUP and their ids, and the PUBREL, in order.
    drop(sub);
    let (mut sub, ack) = Raw::connect_with(s.addr, connect(false)).await;
    assert!(ack.session_present);
    let p = sub.recv_publish().await;
    assert_eq!(
        (&p.payload[..], p.dup, p.packet_id),
        (&b"a"[..], true, first[0].packet_id)
    );
    let p = sub.recv_publish().await;
    assert_eq!(
        (&p.payload[..], p.dup, p.packet_id),
        (&b"b"[..], true, first[1].packet_id)
    );
    match sub.recv().await {
        Packet::PubRel(r) => assert_eq!(r.packet_id, first[2].packet_id),
        other => panic!("expected PUBREL, got {other:?}"),
    }
    sub.send(Packet::PubAck(Ack::new(first[0].packet_id))).await;
    sub.send(Packet::PubAck(Ack::new(first[1].packet_id))).await;
    sub.send(Packet::PubComp(Ack::new(first[2].packet_id)))
        .await;
    ping(&mut sub).await;
    assert_eq!(session.lock().inflight_len(), 0);
    assert!(drain(&mut sub, 0).await.is_empty());
    s.server.shutdown(WAIT).await;
}

#[tokio::test]
async fn qos2_inbound_state_survives_a_resumed_session() {
    let s = start().await;
    let mut sub = Raw::connect(s.addr, V5, "sub").await;
    sub.subscribe("x2/t", QoS::ExactlyOnce).await;
    for version in [V5, V3_1_1] {
        let connect = |clean| {
            let mut c = Connect::new(version, format!("pub{version:?}"), 60);
            c.clean_start = clean;
            if version == V5 {
                c.properties.session_expiry_interval = Some(60);
            }
            c
        };
        // 3.1.1: a session outlives the connection only with Clean Session 0.
        let (mut publisher, _) = Raw::connect_with(s.addr, connect(version == V5)).await;
        publisher
            .send(Packet::Publish(qos_publish(
                "x2/t",
                b"one",
                QoS::ExactlyOnce,
                5,
            )))
            .await;
        assert!(matches!(publisher.recv().await, Packet::PubRec(a) if a.packet_id == 5));
        let got = drain(&mut sub, 1).await;
        assert_eq!(got.len(), 1, "{version:?}: {got:?}");
        sub.send(Packet::PubRec(Ack::new(got[0].packet_id))).await;
        assert!(matches!(sub.recv().await, Packet::PubRel(_)));
        sub.send(Packet::PubComp(Ack::new(got[0].packet_id))).await;

        // The PUBREC is lost with the connection; the client resumes its session and sends
        // the PUBLISH again with DUP [MQTT-4.4.0-1]. The session remembers the packet id:
        // acknowledged, not delivered a second time (§4.3.3, method B).
        drop(publisher);
        let (mut publisher, ack) = Raw::connect_with(s.addr, connect(false)).await;
        assert!(ack.session_present, "{version:?}");
        let mut again = qos_publish("x2/t", b"one", QoS::ExactlyOnce, 5);
        again.dup = true;
        publisher.send(Packet::Publish(again)).await;
        assert!(matches!(publisher.recv().await, Packet::PubRec(a) if a.packet_id == 5));
        publisher.send(Packet::PubRel(Ack::new(5))).await;
        match publisher.recv().await {
            Packet::PubComp(a) => {
                assert_eq!((a.packet_id, a.reason_code), (5, ReasonCode::Success))
            }
            other => panic!("expected PUBCOMP, got {other:?}"),
        }
        assert!(
            drain(&mut sub, 0).await.is_empty(),
            "{version:?}: delivered twice"
        );
        publisher.disconnect().await;
    }
    s.server.shutdown(WAIT).await;
}
