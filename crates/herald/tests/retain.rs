//! Conformance: retained messages (MQTT 3.1.1 §3.3.1.3; MQTT 5.0 §3.3.1.3, §3.8.3.1):
//! storing, replacing and deleting, delivery on subscribe (wildcards, QoS, Retain Handling,
//! subscription identifier), the retain flag on normal delivery, and Retain Available.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;

use common::*;
use mqtt_codec::{
    Ack, Connect, Disconnect, Packet, ProtocolVersion::*, Publish, QoS, ReasonCode, RetainHandling,
    SubscriptionOptions,
};

fn handling(qos: QoS, retain_handling: RetainHandling) -> SubscriptionOptions {
    SubscriptionOptions {
        retain_handling,
        ..SubscriptionOptions::qos(qos)
    }
}

#[tokio::test]
async fn retained_message_is_sent_to_new_subscribers_with_retain_set() {
    let s = start().await;
    let mut publisher = Raw::connect(s.addr, V5, "pub").await;
    publisher
        .publish("r/a", b"v1", QoS::AtLeastOnce, true)
        .await;
    // [MQTT-3.3.1-5 of 3.1.1] / MQTT 5.0 §3.3.1.3: stored and sent to future subscribers,
    // with the RETAIN flag 1 [MQTT-3.3.1-8 of 3.1.1].
    for version in [V5, V3_1_1] {
        let mut sub = Raw::connect(s.addr, version, &format!("sub{version:?}")).await;
        sub.subscribe("r/a", QoS::AtLeastOnce).await;
        let got = drain(&mut sub, 1).await;
        assert_eq!(got.len(), 1, "{version:?}: {got:?}");
        assert!(got[0].retain, "{version:?}");
        assert_eq!(
            (&*got[0].topic, &got[0].payload[..], got[0].qos),
            ("r/a", &b"v1"[..], QoS::AtLeastOnce)
        );
    }
    // The subscription identifier of the subscription it is sent for comes with it
    // (MQTT 5.0 §3.3.2.3.8).
    let mut sub = Raw::connect(s.addr, V5, "with-id").await;
    subscribe_opts(
        &mut sub,
        "r/+",
        SubscriptionOptions::qos(QoS::AtMostOnce),
        Some(9),
    )
    .await;
    let p = sub.recv_publish().await;
    assert!(p.retain);
    assert_eq!(p.properties.subscription_identifiers, vec![9]);
    s.server.shutdown(WAIT).await;
}

#[tokio::test]
async fn newer_retained_message_replaces_the_older() {
    let s = start().await;
    let mut publisher = Raw::connect(s.addr, V3_1_1, "pub").await;
    publisher.publish("r/b", b"v1", QoS::AtMostOnce, true).await;
    publisher
        .publish("r/b", b"v2", QoS::AtLeastOnce, true)
        .await;
    // A non-retained publish does not touch the retained message.
    publisher
        .publish("r/b", b"live", QoS::AtLeastOnce, false)
        .await;
    let mut sub = Raw::connect(s.addr, V5, "sub").await;
    sub.subscribe("r/b", QoS::AtMostOnce).await;
    // [MQTT-3.3.1-5]: it replaces any existing retained message for the topic.
    let got = drain(&mut sub, 1).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(&got[0].payload[..], b"v2");
    assert_eq!(s.server.broker().default_tenant.retained.len(), 1);
    s.server.shutdown(WAIT).await;
}

#[tokio::test]
async fn empty_retained_payload_deletes_and_is_not_stored() {
    let s = start().await;
    let retained = || s.server.broker().default_tenant.retained.len();
    let mut publisher = Raw::connect(s.addr, V5, "pub").await;
    publisher
        .publish("r/c", b"v1", QoS::AtLeastOnce, true)
        .await;
    assert_eq!(retained(), 1);

    let mut existing = Raw::connect(s.addr, V5, "existing").await;
    existing.subscribe("r/c", QoS::AtLeastOnce).await;
    let p = existing.recv_publish().await;
    assert!(p.retain);
    existing.send(Packet::PubAck(Ack::new(p.packet_id))).await;

    // [MQTT-3.3.1-6], [MQTT-3.3.1-7]: an empty retained payload removes the retained
    // message and is not stored itself; current subscribers get it as a normal message.
    publisher.publish("r/c", b"", QoS::AtLeastOnce, true).await;
    let p = existing.recv_publish().await;
    assert!(p.payload.is_empty());
    assert!(!p.retain, "normal delivery clears the flag");
    assert_eq!(retained(), 0);
    let mut late = Raw::connect(s.addr, V5, "late").await;
    late.subscribe("r/#", QoS::AtLeastOnce).await;
    assert!(
        drain(&mut late, 0).await.is_empty(),
        "nothing retained any more"
    );

    // An empty retained payload for a topic with nothing retained stores nothing either.
    publisher.publish("r/d", b"", QoS::AtMostOnce, true).await;
    let p = late.recv_publish().await;
    assert_eq!(&*p.topic, "r/d");
    assert_eq!(retained(), 0);
    let mut later = Raw::connect(s.addr, V3_1_1, "later").await;
    later.subscribe("r/d", QoS::AtLeastOnce).await;
    assert!(drain(&mut later, 0).await.is_empty());
    s.server.shutdown(WAIT).await;
}

#[tokio::test]
async fn wildcard_subscription_gets_every_matching_retained_message() {
    let s = start().await;
    let mut publisher = Raw::connect(s.addr, V5, "pub").await;
    for topic in ["w/1", "w/2", "w/x/3", "w", "other/1", "$x/w/1"] {
        publisher
            .publish(topic, topic.as_bytes(), QoS::AtMostOnce, true)
            .await;
    }
    let cases: &[(&str, &[&str])] = &[
        ("w/#", &["w", "w/1", "w/2", "w/x/3"]),
        ("w/+", &["w/1", "w/2"]),
        ("+/+/3", &["w/x/3"]),
        // [MQTT-4.7.2-1]: `#` does not match `$x/...`.
        ("#", &["other/1", "w", "w/1", "w/2", "w/x/3"]),
        ("$x/#", &["$x/w/1"]),
        ("none/#", &[]),
    ];
    for (i, (filter, expected)) in cases.iter().enumerate() {
        let mut sub = Raw::connect(s.addr, V5, &format!("sub{i}")).await;
        sub.subscribe(filter, QoS::AtMostOnce).await;
        let got = drain(&mut sub, expected.len()).await;
        let mut topics: Vec<&str> = got.iter().map(|p| &*p.topic).collect();
        topics.sort_unstable();
        assert_eq!(topics, *expected, "{filter}");
        assert!(
            got.iter()
                .all(|p| p.retain && p.payload == p.topic.as_bytes())
        );
    }
    s.server.shutdown(WAIT).await;
}

#[tokio::test]
async fn retain_handling_options() {
    let s = start().await;
    let mut publisher = Raw::connect(s.addr, V5, "pub").await;
    publisher
        .publish("rh/t", b"kept", QoS::AtMostOnce, true)
        .await;

    // 0: sent at every subscribe, including a re-subscribe [MQTT-3.3.1-9].
    let mut always = Raw::connect(s.addr, V5, "always").await;
    for round in 0..2 {
        subscribe_opts(
            &mut always,
            "rh/t",
            handling(QoS::AtMostOnce, RetainHandling::OnSubscribe),
            None,
        )
        .await;
        let got = drain(&mut always, 1).await;
        assert_eq!(got.len(), 1, "round {round}: {got:?}");
        assert!(got[0].retain);
    }

    // 1: sent only when the subscription did not exist [MQTT-3.3.1-10].
    let mut new_only = Raw::connect(s.addr, V5, "new-only").await;
    let opts = handling(QoS::AtMostOnce, RetainHandling::OnNewSubscription);
    subscribe_opts(&mut new_only, "rh/t", opts, None).await;
    assert_eq!(drain(&mut new_only, 1).await.len(), 1, "new subscription");
    subscribe_opts(&mut new_only, "rh/t", opts, None).await;
    assert!(
        drain(&mut new_only, 0).await.is_empty(),
        "existing subscription"
    );
    // Another filter matching the same topic is a new subscription again.
    subscribe_opts(&mut new_only, "rh/+", opts, None).await;
    assert_eq!(drain(&mut new_only, 1).await.len(), 1, "new filter");

    // 2: never sent at subscribe [MQTT-3.3.1-11] ...
    let mut never = Raw::connect(s.addr, V5, "never").await;
    subscribe_opts(
        &mut never,
        "rh/t",
        handling(QoS::AtMostOnce, RetainHandling::Never),
        None,
    )
    .await;
    assert!(drain(&mut never, 0).await.is_empty());
    // ... while the subscription still gets live messages.
    publisher
        .publish("rh/t", b"live", QoS::AtMostOnce, false)
        .await;
    assert_eq!(never.recv_publish().await.payload, &b"live"[..]);
    s.server.shutdown(WAIT).await;
}

#[tokio::test]
async fn retained_messages_are_sent_at_the_lower_of_their_qos_and_the_granted_qos() {
    let s = start().await;
    let mut publisher = Raw::connect(s.addr, V5, "pub").await;
    publisher.publish("q/0", b"0", QoS::AtMostOnce, true).await;
    publisher.publish("q/1", b"1", QoS::AtLeastOnce, true).await;
    publisher.publish("q/2", b"2", QoS::ExactlyOnce, true).await;
    for granted in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
        let mut sub = Raw::connect(s.addr, V5, &format!("sub{granted:?}")).await;
        sub.subscribe("q/+", granted).await;
        let got: BTreeMap<String, QoS> = drain(&mut sub, 3)
            .await
            .into_iter()
            .map(|p| (p.topic.to_string(), p.qos))
            .collect();
        let expected: BTreeMap<String, QoS> = [
            ("q/0", QoS::AtMostOnce),
            ("q/1", QoS::AtLeastOnce),
            ("q/2", QoS::ExactlyOnce),
        ]
        .into_iter()
        .map(|(t, q)| (t.to_string(), q.min(granted)))
        .collect();
        assert_eq!(got, expected, "granted {granted:?}");
    }
    s.server.shutdown(WAIT).await;
}

#[tokio::test]
async fn retained_publish_reaches_existing_subscribers_without_retain() {
    let s = start().await;
    let mut v5 = Raw::connect(s.addr, V5, "v5").await;
    let mut v3 = Raw::connect(s.addr, V3_1_1, "v3").await;
    let mut rap = Raw::connect(s.addr, V5, "rap").await;
    v5.subscribe("n/t", QoS::AtMostOnce).await;
    v3.subscribe("n/t", QoS::AtMostOnce).await;
    subscribe_opts(
        &mut rap,
        "n/t",
        SubscriptionOptions {
            retain_as_published: true,
            ..SubscriptionOptions::qos(QoS::AtMostOnce)
        },
        None,
    )
    .await;
    let mut publisher = Raw::connect(s.addr, V3_1_1, "pub").await;
    publisher.publish("n/t", b"x", QoS::AtLeastOnce, true).await;
    // [MQTT-3.3.1-9 of 3.1.1], [MQTT-3.3.1-12 of 5.0]: an established subscription gets it
    // with RETAIN 0 ...
    assert!(!v5.recv_publish().await.retain);
    assert!(!v3.recv_publish().await.retain);
    // ... unless it asked for Retain As Published [MQTT-3.3.1-13].
    assert!(rap.recv_publish().await.retain);
    // And it was stored all the same.
    let mut late = Raw::connect(s.addr, V5, "late").await;
    late.subscribe("n/t", QoS::AtMostOnce).await;
    assert!(late.recv_publish().await.retain);
    s.server.shutdown(WAIT).await;
}

#[tokio::test]
async fn retained_publish_without_retain_available_is_refused() {
    let mut config = config();
    config.session.retain_available = false;
    let s = start_with(config).await;
    let (mut c, ack) = Raw::connect_with(s.addr, Connect::new(V5, "c", 60)).await;
    // MQTT 5.0 §3.2.2.3.5: Retain Available 0 is announced.
    assert_eq!(ack.properties.retain_available, Some(false));
    let mut sub = Raw::connect(s.addr, V5, "sub").await;
    sub.subscribe("ra/t", QoS::AtMostOnce).await;

    // Non-retained publications work as usual.
    c.publish("ra/t", b"plain", QoS::AtLeastOnce, false).await;
    assert_eq!(sub.recv_publish().await.payload, &b"plain"[..]);

    // [MQTT-3.2.2-14] forbids it; §3.3.1.3: the server answers DISCONNECT 0x9A.
    let mut p = Publish::new("ra/t", &b"kept"[..]);
    p.retain = true;
    c.send(Packet::Publish(p)).await;
    assert_eq!(
        c.expect_closed().await,
        vec![Packet::Disconnect(Disconnect::new(
            ReasonCode::RetainNotSupported
        ))]
    );
    assert!(s.server.broker().default_tenant.retained.is_empty());
    assert!(
        drain(&mut sub, 0).await.is_empty(),
        "the refused message went nowhere"
    );
    s.server.shutdown(WAIT).await;
}

/// 200,000 retained messages, then subscribers to `#` reading as fast as they can, at QoS 0
/// and QoS 1: each gets every one. They are streamed as the subscriber's queue drains,
/// never pushed all at once (which overran its queue and dropped most of them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_to_everything_gets_every_one_of_200000_retained_messages() {
    const RETAINED: usize = 200_000;
    let s = start().await;
    let mut publisher = Raw::connect(s.addr, V5, "many-retained").await;
    let mut burst = Vec::new();
    for i in 0..RETAINED {
        let mut p = Publish::new(format!("big/{}/{i}", i % 100), vec![b'r'; 16]);
        p.retain = true;
        burst.extend_from_slice(&Packet::Publish(p).to_bytes(V5).unwrap());
    }
    publisher.send_bytes(&burst).await;
    ping(&mut publisher).await;
    let broker = s.server.broker().clone();
    assert_eq!(broker.default_tenant.retained.len(), RETAINED);

    for (qos, version) in [(QoS::AtMostOnce, V3_1_1), (QoS::AtLeastOnce, V5)] {
        let mut sub = Raw::connect(s.addr, version, &format!("everything-{qos:?}")).await;
        sub.subscribe("#", qos).await;
        let mut topics = std::collections::HashSet::new();
        while topics.len() < RETAINED {
            let p = match sub.try_recv(WAIT).await {
                Some(Packet::Publish(p)) => p,
                other => panic!("{qos:?}: after {} messages: {other:?}", topics.len()),
            };
            assert!(p.retain);
            if p.qos == QoS::AtLeastOnce {
                sub.send(Packet::PubAck(Ack::new(p.packet_id))).await;
            }
            assert!(topics.insert(p.topic.to_string()), "{} twice", p.topic);
        }
        sub.expect_nothing().await;
    }
    assert_eq!(
        broker
            .stats
            .drops(herald::broker::stats::DropReason::OutboxFull)
            + broker
                .stats
                .drops(herald::broker::stats::DropReason::QueueFull),
        0
    );
    s.server.shutdown(WAIT).await;
}

/// A retained message past the tenant's bound is refused with 0x97, not stored and then
/// lost; replacing a topic's message still works.
#[tokio::test]
async fn retained_messages_past_the_bound_are_refused_with_quota_exceeded() {
    let mut config = config();
    config.limits.max_retained_messages = 3;
    let s = start_with(config).await;
    let mut p = Raw::connect(s.addr, V5, "retain-bound").await;
    let mut codes = Vec::new();
    for topic in ["b/1", "b/2", "b/3", "b/4", "b/1"] {
        let mut m = Publish::new(topic, b"v".to_vec());
        m.retain = true;
        m.qos = QoS::AtLeastOnce;
        m.packet_id = p.next_id();
        p.send(Packet::Publish(m)).await;
        match p.recv().await {
            Packet::PubAck(a) => codes.push(a.reason_code),
            other => panic!("expected PUBACK, got {other:?}"),
        }
    }
    // No subscriber: a success is 0x10 No matching subscribers.
    let ok = ReasonCode::NoMatchingSubscribers;
    assert_eq!(codes, vec![ok, ok, ok, ReasonCode::QuotaExceeded, ok]);
    assert_eq!(s.server.broker().default_tenant.retained.len(), 3);
    s.server.shutdown(WAIT).await;
}
