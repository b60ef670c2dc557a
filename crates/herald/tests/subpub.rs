//! Conformance: SUBSCRIBE / PUBLISH routing (MQTT 3.1.1 §3.3, §3.8-§3.11, §4.7; MQTT 5.0
//! §3.3, §3.8-§3.11, §4.7, §4.8.1): topic filter matching, `$` topics, overlapping
//! subscriptions, subscription identifiers, No Local, Retain As Published, UNSUBSCRIBE,
//! re-subscription, "no matching subscribers", SUBACK return codes and subscription limits.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::*;
use mqtt_codec::{
    Ack, Packet, ProtocolVersion, ProtocolVersion::*, Publish, QoS, ReasonCode, Subscribe,
    Subscription, SubscriptionOptions, Unsubscribe,
};

/// Subscribes to `filters` (each with its options) in one SUBSCRIBE carrying the
/// subscription identifier `id`; returns the SUBACK reason codes.
async fn subscribe_many(
    c: &mut Raw,
    filters: &[(&str, SubscriptionOptions)],
    id: Option<u32>,
) -> Vec<ReasonCode> {
    let packet_id = c.next_id();
    let mut s = Subscribe::new(packet_id, filters[0].0, filters[0].1.qos);
    s.subscriptions = filters
        .iter()
        .map(|(f, o)| Subscription {
            filter: (*f).into(),
            options: *o,
        })
        .collect();
    s.properties.subscription_identifier = id;
    c.send(Packet::Subscribe(s)).await;
    match c.recv().await {
        Packet::SubAck(a) => {
            assert_eq!(a.packet_id, packet_id, "SUBACK echoes the packet id");
            a.reason_codes
        }
        other => panic!("expected SUBACK, got {other:?}"),
    }
}

/// Unsubscribes from `filters`; returns the UNSUBACK reason codes.
async fn unsubscribe(c: &mut Raw, filters: &[&str]) -> Vec<ReasonCode> {
    let packet_id = c.next_id();
    let mut u = Unsubscribe::new(packet_id, filters[0]);
    u.filters = filters.iter().map(|f| (*f).into()).collect();
    c.send(Packet::Unsubscribe(u)).await;
    match c.recv().await {
        Packet::UnsubAck(a) => {
            assert_eq!(a.packet_id, packet_id, "UNSUBACK echoes the packet id");
            a.reason_codes
        }
        other => panic!("expected UNSUBACK, got {other:?}"),
    }
}

/// Publishes at QoS 1 and returns the PUBACK.
async fn publish_qos1(c: &mut Raw, topic: &str, payload: &[u8], retain: bool) -> Ack {
    let mut p = Publish::new(topic, payload.to_vec());
    p.qos = QoS::AtLeastOnce;
    p.retain = retain;
    p.packet_id = c.next_id();
    let id = p.packet_id;
    c.send(Packet::Publish(p)).await;
    match c.recv().await {
        Packet::PubAck(a) => {
            assert_eq!(a.packet_id, id);
            a
        }
        other => panic!("expected PUBACK, got {other:?}"),
    }
}

fn opts(qos: QoS) -> SubscriptionOptions {
    SubscriptionOptions::qos(qos)
}

#[tokio::test]
async fn wildcards_match_levels_and_skip_dollar_topics() {
    let s = start().await;
    let topics = [
        "a",
        "a/b",
        "a/c",
        "a/",
        "a/b/c",
        "a/b/c/d",
        "b/b",
        "/a",
        // Any `$` topic (not `$SYS`, where only Herald may publish: tests/sys_topics.rs).
        "$app",
        "$app/x",
        "$other/a/b",
    ];
    // Filter -> the topics it must receive, and nothing else [MQTT-4.7.1-1], [MQTT-4.7.1-2],
    // [MQTT-4.7.2-1] (a filter starting with a wildcard does not match a topic starting
    // with `$`).
    let cases: &[(&str, &[&str])] = &[
        ("a/b", &["a/b"]),
        ("a/+", &["a/b", "a/c", "a/"]),
        ("+/b", &["a/b", "b/b"]),
        // `#` also matches the parent level: `a/#` matches `a` (§4.7.1.2).
        ("a/#", &["a", "a/b", "a/c", "a/", "a/b/c", "a/b/c/d"]),
        ("a/+/c", &["a/b/c"]),
        ("a/+/#", &["a/b", "a/c", "a/", "a/b/c", "a/b/c/d"]),
        (
            "+/#",
            &["a", "a/b", "a/c", "a/", "a/b/c", "a/b/c/d", "b/b", "/a"],
        ),
        ("+", &["a"]),
        ("+/+", &["a/b", "a/c", "a/", "b/b", "/a"]),
        ("/+", &["/a"]),
        (
            "#",
            &["a", "a/b", "a/c", "a/", "a/b/c", "a/b/c/d", "b/b", "/a"],
        ),
        ("+/a/b", &[]),
        ("+/x", &[]),
        ("$app/#", &["$app", "$app/x"]),
        ("$other/+/b", &["$other/a/b"]),
        ("a/b/c/d/#", &["a/b/c/d"]),
        ("z/#", &[]),
    ];
    let mut subs = Vec::new();
    for (i, (filter, _)) in cases.iter().enumerate() {
        let version = if i % 2 == 0 { V5 } else { V3_1_1 };
        let mut c = Raw::connect(s.addr, version, &format!("sub{i}")).await;
        assert_eq!(
            c.subscribe(filter, QoS::AtLeastOnce).await,
            vec![ReasonCode::GrantedQoS1],
            "{filter}"
        );
        subs.push(c);
    }
    let mut publisher = Raw::connect(s.addr, V5, "pub").await;
    for topic in topics {
        // QoS 1: the PUBACK comes after the message was routed.
        publish_qos1(&mut publisher, topic, topic.as_bytes(), false).await;
    }
    let mut tasks = tokio::task::JoinSet::new();
    for (i, mut c) in subs.into_iter().enumerate() {
        let expected = cases[i].1.len();
        tasks.spawn(async move {
            let got = drain(&mut c, expected).await;
            (i, got)
        });
    }
    let mut results = BTreeMap::new();
    while let Some(r) = tasks.join_next().await {
        let (i, got) = r.unwrap();
        results.insert(i, got);
    }
    for (i, (filter, expected)) in cases.iter().enumerate() {
        let got: Vec<String> = results[&i].iter().map(|p| p.topic.to_string()).collect();
        let mut got_sorted = got.clone();
        got_sorted.sort();
        let mut want: Vec<String> = expected.iter().map(|t| t.to_string()).collect();
        want.sort();
        assert_eq!(got_sorted, want, "filter {filter:?} received {got:?}");
        for p in &results[&i] {
            assert_eq!(p.payload, p.topic.as_bytes(), "payload travels unchanged");
        }
    }
    s.server.shutdown(WAIT).await;
}

#[tokio::test]
async fn overlapping_subscriptions_deliver_one_copy_at_highest_qos_with_every_identifier() {
    let s = start().await;
    let mut sub = Raw::connect(s.addr, V5, "sub").await;
    assert_eq!(
        subscribe_opts(&mut sub, "o/+", opts(QoS::AtMostOnce), Some(1)).await,
        vec![ReasonCode::Success]
    );
    assert_eq!(
        subscribe_opts(&mut sub, "o/#", opts(QoS::ExactlyOnce), Some(2)).await,
        vec![ReasonCode::GrantedQoS2]
    );
    assert_eq!(
        subscribe_opts(&mut sub, "o/b", opts(QoS::AtLeastOnce), Some(3)).await,
        vec![ReasonCode::GrantedQoS1]
    );
    // A matching subscription without an identifier contributes no identifier.
    assert_eq!(
        subscribe_opts(&mut sub, "+/b", opts(QoS::AtMostOnce), None).await,
        vec![ReasonCode::Success]
    );
    let mut publisher = Raw::connect(s.addr, V5, "pub").await;

    // [MQTT-3.3.4-2]: one copy, at the highest QoS granted among the matching
    // subscriptions (bounded by the published QoS); [MQTT-3.3.4-4]: every matching
    // subscription identifier.
    publisher
        .publish("o/b", b"qos2", QoS::ExactlyOnce, false)
        .await;
    let got = drain(&mut sub, 1).await;
    assert_eq!(got.len(), 1, "one copy: {got:?}");
    assert_eq!(got[0].qos, QoS::ExactlyOnce);
    let ids: BTreeSet<u32> = got[0]
        .properties
        .subscription_identifiers
        .iter()
        .copied()
        .collect();
    assert_eq!(ids, BTreeSet::from([1, 2, 3]));
    assert_eq!(
        got[0].properties.subscription_identifiers.len(),
        3,
        "each identifier once"
    );
    sub.send(Packet::PubRec(Ack::new(got[0].packet_id))).await;
    match sub.recv().await {
        Packet::PubRel(r) => assert_eq!(r.packet_id, got[0].packet_id),
        other => panic!("expected PUBREL, got {other:?}"),
    }
    sub.send(Packet::PubComp(Ack::new(got[0].packet_id))).await;

    // The QoS is still bounded by the message's: QoS 1 in, QoS 1 out.
    publisher
        .publish("o/b", b"qos1", QoS::AtLeastOnce, false)
        .await;
    let got = drain(&mut sub, 1).await;
    assert_eq!(got.len(), 1, "one copy: {got:?}");
    assert_eq!(got[0].qos, QoS::AtLeastOnce);
    sub.send(Packet::PubAck(Ack::new(got[0].packet_id))).await;

    // `o/c` matches `o/+` (QoS 0, id 1) and `o/#` (QoS 2, id 2) only.
    publisher
        .publish("o/c", b"c", QoS::ExactlyOnce, false)
        .await;
    let got = drain(&mut sub, 1).await;
    assert_eq!(got.len(), 1, "one copy: {got:?}");
    assert_eq!(got[0].qos, QoS::ExactlyOnce);
    let mut ids = got[0].properties.subscription_identifiers.clone();
    ids.sort_unstable();
    assert_eq!(ids, vec![1, 2]);
    s.server.shutdown(WAIT).await;
}

#[tokio::test]
async fn subscription_identifier_travels_with_single_matches_and_is_replaced() {
    let s = start().await;
    let mut sub = Raw::connect(s.addr, V5, "sub").await;
    let mut publisher = Raw::connect(s.addr, V5, "pub").await;
    subscribe_opts(&mut sub, "id/x", opts(QoS::AtLeastOnce), Some(42)).await;
    subscribe_opts(&mut sub, "id/+/y", opts(QoS::AtMostOnce), Some(268_435_455)).await;
    subscribe_opts(&mut sub, "noid", opts(QoS::AtMostOnce), None).await;

    publisher
        .publish("id/x", b"1", QoS::AtLeastOnce, false)
        .await;
    let p = sub.recv_publish().await;
    assert_eq!(p.properties.subscription_identifiers, vec![42]);
    sub.send(Packet::PubAck(Ack::new(p.packet_id))).await;

    publisher
        .publish("id/z/y", b"2", QoS::AtMostOnce, false)
        .await;
    let p = sub.recv_publish().await;
    assert_eq!(&*p.topic, "id/z/y");
    assert_eq!(
        p.properties.subscription_identifiers,
        vec![268_435_455],
        "the largest identifier survives"
    );

    publisher
        .publish("noid", b"3", QoS::AtMostOnce, false)
        .await;
    let p = sub.recv_publish().await;
    assert!(p.properties.subscription_identifiers.is_empty(), "{p:?}");

    // Re-subscribing replaces the identifier along with the options (§3.8.4).
    subscribe_opts(&mut sub, "id/x", opts(QoS::AtMostOnce), Some(7)).await;
    publisher
        .publish("id/x", b"4", QoS::AtMostOnce, false)
        .await;
    let got = drain(&mut sub, 1).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].properties.subscription_identifiers, vec![7]);

    // A 3.1.1 subscriber never sees identifiers (there are no properties to carry them).
    let mut old = Raw::connect(s.addr, V3_1_1, "old").await;
    old.subscribe("id/x", QoS::AtMostOnce).await;
    publisher
        .publish("id/x", b"5", QoS::AtMostOnce, false)
        .await;
    let p = old.recv_publish().await;
    assert_eq!(p.payload, &b"5"[..]);
    assert!(p.properties.subscription_identifiers.is_empty());
    s.server.shutdown(WAIT).await;
}

#[tokio::test]
async fn no_local_keeps_own_messages_off_that_subscription() {
    let s = start().await;
    let mut a = Raw::connect(s.addr, V5, "a").await;
    let mut b = Raw::connect(s.addr, V5, "b").await;
    let no_local = SubscriptionOptions {
        no_local: true,
        ..opts(QoS::AtLeastOnce)
    };
    subscribe_opts(&mut a, "nl/t", no_local, Some(1)).await;
    b.subscribe("nl/t", QoS::AtLeastOnce).await;

    // [MQTT-3.8.3-3]: not forwarded to the connection it was published on.
    a.publish("nl/t", b"from a", QoS::AtLeastOnce, false).await;
    let p = b.recv_publish().await;
    assert_eq!(p.payload, &b"from a"[..]);
    b.send(Packet::PubAck(Ack::new(p.packet_id))).await;
    assert!(
        drain(&mut a, 0).await.is_empty(),
        "a got its own message back"
    );

    // Other clients' messages still arrive through it.
    b.publish("nl/t", b"from b", QoS::AtLeastOnce, false).await;
    let p = a.recv_publish().await;
    assert_eq!(p.payload, &b"from b"[..]);
    a.send(Packet::PubAck(Ack::new(p.packet_id))).await;
    let p = b.recv_publish().await;
    assert_eq!(
        p.payload,
        &b"from b"[..],
        "b has no No Local: it gets its own"
    );
    b.send(Packet::PubAck(Ack::new(p.packet_id))).await;

    // A second subscription of `a` without No Local matches: one copy, through that one only.
    subscribe_opts(&mut a, "nl/#", opts(QoS::AtLeastOnce), Some(2)).await;
    a.publish("nl/t", b"again", QoS::AtLeastOnce, false).await;
    let got = drain(&mut a, 1).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].properties.subscription_identifiers, vec![2]);
    s.server.shutdown(WAIT).await;
}

#[tokio::test]
async fn retain_as_published_keeps_or_clears_the_retain_flag() {
    let s = start().await;
    let mut keep = Raw::connect(s.addr, V5, "keep").await;
    let mut clear = Raw::connect(s.addr, V5, "clear").await;
    let mut old = Raw::connect(s.addr, V3_1_1, "old").await;
    let rap = SubscriptionOptions {
        retain_as_published: true,
        ..opts(QoS::AtMostOnce)
    };
    subscribe_opts(&mut keep, "rap/t", rap, None).await;
    subscribe_opts(&mut clear, "rap/t", opts(QoS::AtMostOnce), None).await;
    old.subscribe("rap/t", QoS::AtMostOnce).await;
    let mut publisher = Raw::connect(s.addr, V5, "pub").await;

    publisher
        .publish("rap/t", b"r", QoS::AtMostOnce, true)
        .await;
    // [MQTT-3.3.1-13]: Retain As Published 1 keeps the flag as published.
    let p = keep.recv_publish().await;
    assert!(p.retain, "retain-as-published subscriber: {p:?}");
    // [MQTT-3.3.1-12]: Retain As Published 0 clears it on normal delivery.
    let p = clear.recv_publish().await;
    assert!(!p.retain, "ordinary v5 subscriber: {p:?}");
    // 3.1.1 [MQTT-3.3.1-9]: 0 for a message matching an established subscription.
    let p = old.recv_publish().await;
    assert!(!p.retain, "3.1.1 subscriber: {p:?}");

    publisher
        .publish("rap/t", b"n", QoS::AtMostOnce, false)
        .await;
    let p = keep.recv_publish().await;
    assert!(
        !p.retain,
        "a non-retained publish stays non-retained: {p:?}"
    );
    let p = clear.recv_publish().await;
    assert!(!p.retain);
    s.server.shutdown(WAIT).await;
}

#[tokio::test]
async fn unsubscribe_stops_delivery_and_unsuback_reports_each_filter() {
    let s = start().await;
    let mut publisher = Raw::connect(s.addr, V5, "pub").await;

    let mut sub = Raw::connect(s.addr, V5, "sub5").await;
    sub.subscribe("u/a", QoS::AtLeastOnce).await;
    sub.subscribe("u/+", QoS::AtLeastOnce).await;
    publisher.publish("u/a", b"1", QoS::AtMostOnce, false).await;
    assert_eq!(drain(&mut sub, 1).await.len(), 1);

    // MQTT 5.0 §3.11.3: one reason code per filter, in order; 0x11 when there was none.
    assert_eq!(
        unsubscribe(&mut sub, &["u/a", "u/none"]).await,
        vec![ReasonCode::Success, ReasonCode::NoSubscriptionExisted]
    );
    // The other matching subscription still delivers.
    publisher.publish("u/a", b"2", QoS::AtMostOnce, false).await;
    assert_eq!(drain(&mut sub, 1).await.len(), 1);
    assert_eq!(
        unsubscribe(&mut sub, &["u/+"]).await,
        vec![ReasonCode::Success]
    );
    // [MQTT-3.10.4-2]: no new messages for the removed subscriptions.
    let ack = publish_qos1(&mut publisher, "u/a", b"3", false).await;
    assert_eq!(
        ack.reason_code,
        ReasonCode::NoMatchingSubscribers,
        "nobody is subscribed any more"
    );
    assert!(drain(&mut sub, 0).await.is_empty());
    assert_eq!(
        unsubscribe(&mut sub, &["u/a"]).await,
        vec![ReasonCode::NoSubscriptionExisted],
        "a second UNSUBSCRIBE finds nothing"
    );

    // 3.1.1: UNSUBACK has no payload (§3.11.3 of 3.1.1); even for an unknown filter
    // it is sent [MQTT-3.10.4-5].
    let mut old = Raw::connect(s.addr, V3_1_1, "sub3").await;
    old.subscribe("u/b", QoS::AtMostOnce).await;
    publisher.publish("u/b", b"1", QoS::AtMostOnce, false).await;
    assert_eq!(drain(&mut old, 1).await.len(), 1);
    assert_eq!(unsubscribe(&mut old, &["u/b", "u/none"]).await, Vec::new());
    publisher.publish("u/b", b"2", QoS::AtMostOnce, false).await;
    assert!(drain(&mut old, 0).await.is_empty());
    s.server.shutdown(WAIT).await;
}

#[tokio::test]
async fn resubscribing_replaces_the_granted_qos() {
    let s = start().await;
    for version in [V5, V3_1_1] {
        let mut sub = Raw::connect(s.addr, version, "sub").await;
        let mut publisher = Raw::connect(s.addr, version, "pub").await;
        let mut check = async |requested: QoS, code: ReasonCode, expected: QoS| {
            assert_eq!(sub.subscribe("r/t", requested).await, vec![code]);
            publisher
                .publish("r/t", b"x", QoS::ExactlyOnce, false)
                .await;
            // [MQTT-3.8.4-3]: the subscription is replaced, not added: one copy.
            let got = drain(&mut sub, 1).await;
            assert_eq!(got.len(), 1, "{version:?} {requested:?}: {got:?}");
            assert_eq!(got[0].qos, expected, "{version:?} {requested:?}");
            match expected {
                QoS::AtMostOnce => {}
                QoS::AtLeastOnce => sub.send(Packet::PubAck(Ack::new(got[0].packet_id))).await,
                QoS::ExactlyOnce => {
                    sub.send(Packet::PubRec(Ack::new(got[0].packet_id))).await;
                    assert!(matches!(sub.recv().await, Packet::PubRel(_)));
                    sub.send(Packet::PubComp(Ack::new(got[0].packet_id))).await;
                }
            }
        };
        check(QoS::AtMostOnce, ReasonCode::Success, QoS::AtMostOnce).await;
        check(QoS::ExactlyOnce, ReasonCode::GrantedQoS2, QoS::ExactlyOnce).await;
        check(QoS::AtLeastOnce, ReasonCode::GrantedQoS1, QoS::AtLeastOnce).await;
        sub.disconnect().await;
        publisher.disconnect().await;
    }
    s.server.shutdown(WAIT).await;
}

#[tokio::test]
async fn publish_without_subscribers_is_acknowledged_with_no_matching_subscribers() {
    let s = start().await;
    let mut publisher = Raw::connect(s.addr, V5, "pub").await;
    // MQTT 5.0 §3.4.2.1: 0x10 "No matching subscribers" (a success code).
    let ack = publish_qos1(&mut publisher, "nobody/here", b"x", false).await;
    assert_eq!(ack.reason_code, ReasonCode::NoMatchingSubscribers);

    let id = publisher.next_id();
    let mut p = Publish::new("nobody/here", &b"x"[..]);
    p.qos = QoS::ExactlyOnce;
    p.packet_id = id;
    publisher.send(Packet::Publish(p)).await;
    match publisher.recv().await {
        Packet::PubRec(a) => {
            assert_eq!(a.packet_id, id);
            assert_eq!(a.reason_code, ReasonCode::NoMatchingSubscribers);
        }
        other => panic!("expected PUBREC, got {other:?}"),
    }
    publisher.send(Packet::PubRel(Ack::new(id))).await;
    match publisher.recv().await {
        Packet::PubComp(a) => assert_eq!((a.packet_id, a.reason_code), (id, ReasonCode::Success)),
        other => panic!("expected PUBCOMP, got {other:?}"),
    }

    // With a subscriber the same publication is acknowledged with Success.
    let mut sub = Raw::connect(s.addr, V5, "sub").await;
    sub.subscribe("nobody/+", QoS::AtMostOnce).await;
    let ack = publish_qos1(&mut publisher, "nobody/here", b"x", false).await;
    assert_eq!(ack.reason_code, ReasonCode::Success);
    assert_eq!(sub.recv_publish().await.payload, &b"x"[..]);
    s.server.shutdown(WAIT).await;
}

#[tokio::test]
async fn v311_suback_return_codes() {
    let mut config = config();
    config.limits.max_topic_length = 16;
    let s = start_with(config).await;
    let mut c = Raw::connect(s.addr, V3_1_1, "c").await;
    let long = "x".repeat(17);
    // 3.1.1 §3.9.3: 0x00, 0x01, 0x02 for the QoS granted, 0x80 for a failure, in order
    // [MQTT-3.9.3-1].
    let codes = subscribe_many(
        &mut c,
        &[
            ("a", opts(QoS::AtMostOnce)),
            ("b/+", opts(QoS::AtLeastOnce)),
            ("c/#", opts(QoS::ExactlyOnce)),
            (&long, opts(QoS::AtLeastOnce)),
        ],
        None,
    )
    .await;
    assert_eq!(
        codes.iter().map(|c| *c as u8).collect::<Vec<_>>(),
        vec![0x00, 0x01, 0x02, 0x80]
    );
    // The refused filter did not become a subscription; the others did.
    let mut publisher = Raw::connect(s.addr, V3_1_1, "pub").await;
    publisher
        .publish("b/1", b"ok", QoS::AtLeastOnce, false)
        .await;
    let p = c.recv_publish().await;
    assert_eq!((p.qos, &*p.topic), (QoS::AtLeastOnce, "b/1"));
    c.send(Packet::PubAck(Ack::new(p.packet_id))).await;
    ping(&mut c).await;
    s.server.shutdown(WAIT).await;
}

#[tokio::test]
async fn subscription_limit_refuses_filters_past_it() {
    let mut config = config();
    config.limits.max_subscriptions_per_client = 2;
    let s = start_with(config).await;
    for version in [V5, V3_1_1] {
        let failure = if version == V5 {
            ReasonCode::QuotaExceeded
        } else {
            ReasonCode::UnspecifiedError
        };
        let mut c = Raw::connect(s.addr, version, "c").await;
        let codes = subscribe_many(
            &mut c,
            &[
                ("l/1", opts(QoS::AtLeastOnce)),
                ("l/2", opts(QoS::AtLeastOnce)),
                ("l/3", opts(QoS::AtLeastOnce)),
            ],
            None,
        )
        .await;
        // MQTT 5.0 §3.9.3: 0x97 Quota exceeded, for that filter only (3.1.1: 0x80).
        assert_eq!(
            codes,
            vec![ReasonCode::GrantedQoS1, ReasonCode::GrantedQoS1, failure],
            "{version:?}"
        );
        // Replacing an existing subscription is not a new one.
        assert_eq!(
            c.subscribe("l/1", QoS::AtMostOnce).await,
            vec![ReasonCode::Success],
            "{version:?}"
        );
        assert_eq!(c.subscribe("l/4", QoS::AtMostOnce).await, vec![failure]);
        // Unsubscribing frees a place.
        unsubscribe(&mut c, &["l/2"]).await;
        assert_eq!(
            c.subscribe("l/4", QoS::AtMostOnce).await,
            vec![ReasonCode::Success],
            "{version:?}"
        );
        // The refused `l/3` is not a subscription.
        let mut publisher = Raw::connect(s.addr, version, "pub").await;
        publisher.publish("l/3", b"3", QoS::AtMostOnce, false).await;
        publisher.publish("l/4", b"4", QoS::AtMostOnce, false).await;
        let got = drain(&mut c, 1).await;
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(&*got[0].topic, "l/4");
        c.disconnect().await;
        publisher.disconnect().await;
    }
    s.server.shutdown(WAIT).await;
}

#[tokio::test]
async fn filter_longer_than_the_limit_gets_topic_filter_invalid() {
    let mut config = config();
    config.limits.max_topic_length = 16;
    let s = start_with(config).await;
    let mut c = Raw::connect(s.addr, ProtocolVersion::V5, "c").await;
    let exactly = "y".repeat(16);
    let long = "x".repeat(17);
    let codes = subscribe_many(
        &mut c,
        &[
            (&exactly, opts(QoS::AtLeastOnce)),
            (&long, opts(QoS::AtLeastOnce)),
            ("short", opts(QoS::AtMostOnce)),
        ],
        None,
    )
    .await;
    assert_eq!(
        codes,
        vec![
            ReasonCode::GrantedQoS1,
            ReasonCode::TopicFilterInvalid,
            ReasonCode::Success
        ]
    );
    // The connection carries on.
    ping(&mut c).await;
    let mut publisher = Raw::connect(s.addr, V5, "pub").await;
    publisher
        .publish(&exactly, b"fits", QoS::AtMostOnce, false)
        .await;
    assert_eq!(c.recv_publish().await.payload, &b"fits"[..]);
    s.server.shutdown(WAIT).await;
}
