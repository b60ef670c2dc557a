//! Conformance: shared subscriptions (MQTT 5.0 §4.8.2, also offered to 3.1.1 clients):
//! `$share/{group}/{filter}` spreads each message to one member per group, groups are
//! independent of each other and of ordinary subscriptions, members that leave stop
//! receiving, no retained messages on subscribe, and malformed share names are refused.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::*;
use mqtt_codec::{
    Ack, Connect, Packet, ProtocolVersion, ProtocolVersion::*, Publish, QoS, ReasonCode, Subscribe,
    SubscriptionOptions,
};

/// Drains every client at once, acknowledging QoS 1, until together they have received
/// at least `total` PUBLISHes (or `WAIT` has passed) and then nothing more comes for
/// `QUIET`; returns the clients and what each received, in the same order.
async fn drain_all(clients: Vec<Raw>, total: usize) -> (Vec<Raw>, Vec<Vec<Publish>>) {
    let count = Arc::new(AtomicUsize::new(0));
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut tasks = tokio::task::JoinSet::new();
    for (i, mut c) in clients.into_iter().enumerate() {
        let count = count.clone();
        tasks.spawn(async move {
            let mut got = Vec::new();
            loop {
                match tokio::time::timeout(QUIET, c.try_recv(2 * WAIT)).await {
                    Err(_) => {
                        if count.load(Ordering::SeqCst) >= total
                            || tokio::time::Instant::now() >= deadline
                        {
                            return (i, c, got);
                        }
                    }
                    Ok(Some(Packet::Publish(p))) => {
                        if p.qos == QoS::AtLeastOnce {
                            c.send(Packet::PubAck(Ack::new(p.packet_id))).await;
                        }
                        count.fetch_add(1, Ordering::SeqCst);
                        got.push(p);
                    }
                    Ok(Some(other)) => panic!("expected only PUBLISH, got {other:?}"),
                    Ok(None) => panic!("connection closed while draining"),
                }
            }
        });
    }
    let mut out: Vec<(usize, Raw, Vec<Publish>)> = Vec::new();
    while let Some(r) = tasks.join_next().await {
        out.push(r.unwrap());
    }
    out.sort_by_key(|(i, _, _)| *i);
    out.into_iter().map(|(_, c, got)| (c, got)).unzip()
}

/// Publishes `n` QoS 1 messages with payloads "0".."n-1" (each routed before its PUBACK).
async fn publish_n(publisher: &mut Raw, topic: &str, n: usize) {
    for i in 0..n {
        publisher
            .publish(topic, i.to_string().as_bytes(), QoS::AtLeastOnce, false)
            .await;
    }
}

fn payloads(got: &[Publish]) -> Vec<String> {
    got.iter()
        .map(|p| String::from_utf8(p.payload.to_vec()).unwrap())
        .collect()
}

/// Asserts the members of one group received each of the `n` messages exactly once
/// between them.
fn assert_spread_once(per_member: &[Vec<Publish>], n: usize, what: &str) {
    let all: Vec<String> = per_member.iter().flat_map(|g| payloads(g)).collect();
    assert_eq!(all.len(), n, "{what}: {all:?}");
    let distinct: BTreeSet<&String> = all.iter().collect();
    assert_eq!(distinct.len(), n, "{what}: duplicates in {all:?}");
    let expected: BTreeSet<String> = (0..n).map(|i| i.to_string()).collect();
    assert_eq!(distinct, expected.iter().collect(), "{what}");
}

async fn members(
    s: &TestServer,
    version: ProtocolVersion,
    prefix: &str,
    filter: &str,
    n: usize,
) -> Vec<Raw> {
    let mut out = Vec::new();
    for i in 0..n {
        let mut c = Raw::connect(s.addr, version, &format!("{prefix}{i}")).await;
        assert_eq!(
            c.subscribe(filter, QoS::AtLeastOnce).await,
            vec![ReasonCode::GrantedQoS1]
        );
        out.push(c);
    }
    out
}

#[tokio::test]
async fn messages_are_spread_over_the_members_once_each() {
    let s = start().await;
    let group = members(&s, V5, "m", "$share/g/sh/t", 3).await;
    let mut publisher = Raw::connect(s.addr, V5, "pub").await;
    publish_n(&mut publisher, "sh/t", 30).await;
    let (_group, got) = drain_all(group, 30).await;
    // §4.8.2: each message goes to only one member of the group.
    assert_spread_once(&got, 30, "group g");
    for (i, g) in got.iter().enumerate() {
        assert!(
            !g.is_empty(),
            "member {i} got nothing: the load is not shared"
        );
        assert!(
            g.iter()
                .all(|p| &*p.topic == "sh/t" && p.qos == QoS::AtLeastOnce)
        );
    }
    s.server.shutdown(WAIT).await;
}

#[tokio::test]
async fn each_group_gets_every_message_once() {
    let s = start().await;
    let g1 = members(&s, V5, "a", "$share/one/sh/+", 2).await;
    let g2 = members(&s, V5, "b", "$share/two/sh/+", 2).await;
    // A group on a different filter matching the same topic is yet another group.
    let g3 = members(&s, V5, "c", "$share/one/sh/#", 1).await;
    let mut publisher = Raw::connect(s.addr, V5, "pub").await;
    publish_n(&mut publisher, "sh/t", 10).await;
    let (_, got) = drain_all(g1.into_iter().chain(g2).chain(g3).collect(), 30).await;
    assert_spread_once(&got[0..2], 10, "$share/one/sh/+");
    assert_spread_once(&got[2..4], 10, "$share/two/sh/+");
    assert_spread_once(&got[4..5], 10, "$share/one/sh/#");
    s.server.shutdown(WAIT).await;
}

#[tokio::test]
async fn shared_and_ordinary_subscriptions_are_independent() {
    let s = start().await;
    // `a` is a member of the group and also has an ordinary subscription; `b` is another
    // member; `c` only has an ordinary subscription.
    let mut a = Raw::connect(s.addr, V5, "a").await;
    let mut b = Raw::connect(s.addr, V5, "b").await;
    let mut c = Raw::connect(s.addr, V5, "c").await;
    let q1 = SubscriptionOptions::qos(QoS::AtLeastOnce);
    subscribe_opts(&mut a, "$share/g/mix/t", q1, Some(1)).await;
    subscribe_opts(&mut a, "mix/t", q1, Some(2)).await;
    subscribe_opts(&mut b, "$share/g/mix/t", q1, Some(1)).await;
    subscribe_opts(&mut c, "mix/+", q1, Some(3)).await;
    let mut publisher = Raw::connect(s.addr, V5, "pub").await;
    publish_n(&mut publisher, "mix/t", 10).await;
    let (_, got) = drain_all(vec![a, b, c], 30).await;

    // §4.8.2: the ordinary subscription gets every message; the group gets each once more,
    // through one of its members (which may be `a` again).
    let through = |got: &[Publish], id: u32| -> Vec<Publish> {
        got.iter()
            .filter(|p| p.properties.subscription_identifiers.contains(&id))
            .cloned()
            .collect()
    };
    let mut ordinary = payloads(&through(&got[0], 2));
    ordinary.sort_by_key(|p| p.parse::<u32>().unwrap());
    assert_eq!(
        ordinary,
        (0..10).map(|i| i.to_string()).collect::<Vec<_>>(),
        "a's ordinary subscription"
    );
    assert_spread_once(&[through(&got[0], 1), through(&got[1], 1)], 10, "group g");
    assert_eq!(got[2].len(), 10, "c: {:?}", payloads(&got[2]));
    assert_spread_once(&got[2..3], 10, "c");
    s.server.shutdown(WAIT).await;
}

#[tokio::test]
async fn members_that_leave_stop_receiving() {
    let s = start().await;
    let sessions = &s.server.broker().default_tenant.sessions;
    let filter = "$share/g/d/t";
    // `gone` ends its session on disconnect; `away` keeps its session but is offline;
    // `stays` remains connected.
    let mut gone = Raw::connect(s.addr, V5, "gone").await;
    gone.subscribe(filter, QoS::AtLeastOnce).await;
    let mut connect = Connect::new(V5, "away", 60);
    connect.properties.session_expiry_interval = Some(60);
    let (mut away, _) = Raw::connect_with(s.addr, connect.clone()).await;
    away.subscribe(filter, QoS::AtLeastOnce).await;
    let mut stays = Raw::connect(s.addr, V5, "stays").await;
    stays.subscribe(filter, QoS::AtLeastOnce).await;

    let mut publisher = Raw::connect(s.addr, V5, "pub").await;
    publish_n(&mut publisher, "d/t", 6).await;
    let (clients, got) = drain_all(vec![gone, away, stays], 6).await;
    assert_spread_once(&got, 6, "all three members");
    let [gone, away, mut stays]: [Raw; 3] = clients.try_into().ok().unwrap();

    gone.disconnect().await;
    away.disconnect().await;
    eventually("gone's session ends", || sessions.get("gone").is_none()).await;
    eventually("away goes offline", || {
        sessions.get("away").is_some_and(|s| !s.lock().connected())
    })
    .await;

    // Everything now goes to the member still connected.
    publish_n(&mut publisher, "d/t", 6).await;
    let got = drain(&mut stays, 6).await;
    assert_spread_once(&[got], 6, "the remaining member");

    // Nothing was parked for the offline member either.
    connect.clean_start = false;
    let (mut away, ack) = Raw::connect_with(s.addr, connect).await;
    assert!(ack.session_present);
    assert!(drain(&mut away, 0).await.is_empty());
    s.server.shutdown(WAIT).await;
}

#[tokio::test]
async fn no_retained_messages_on_a_shared_subscription() {
    let s = start().await;
    let mut publisher = Raw::connect(s.addr, V5, "pub").await;
    publisher
        .publish("sr/t", b"kept", QoS::AtLeastOnce, true)
        .await;
    // §3.3.1.3: retained messages are sent when a new *non-shared* subscription is made;
    // §4.8.2: none for a shared one, whatever Retain Handling says.
    let mut m = Raw::connect(s.addr, V5, "m").await;
    m.subscribe("$share/g/sr/t", QoS::AtLeastOnce).await;
    assert!(drain(&mut m, 0).await.is_empty());
    let mut m3 = Raw::connect(s.addr, V3_1_1, "m3").await;
    m3.subscribe("$share/h/sr/#", QoS::AtLeastOnce).await;
    assert!(drain(&mut m3, 0).await.is_empty());
    // Live messages still come, with RETAIN 0 for an established subscription.
    publisher
        .publish("sr/t", b"live", QoS::AtLeastOnce, true)
        .await;
    let p = m.recv_publish().await;
    assert_eq!((&p.payload[..], p.retain), (&b"live"[..], false));
    let p = m3.recv_publish().await;
    assert_eq!((&p.payload[..], p.retain), (&b"live"[..], false));
    s.server.shutdown(WAIT).await;
}

#[tokio::test]
async fn shared_subscriptions_work_for_311_clients() {
    let s = start().await;
    let group = members(&s, V3_1_1, "m", "$share/g/v3/+", 2).await;
    let mut publisher = Raw::connect(s.addr, V3_1_1, "pub").await;
    publish_n(&mut publisher, "v3/t", 10).await;
    let (mut group, got) = drain_all(group, 10).await;
    assert_spread_once(&got, 10, "3.1.1 group");
    assert!(
        got.iter().all(|g| !g.is_empty()),
        "both members share the load"
    );

    // Unsubscribing with the full `$share/...` filter leaves the group.
    let id = group[0].next_id();
    group[0]
        .send(Packet::Unsubscribe(mqtt_codec::Unsubscribe::new(
            id,
            "$share/g/v3/+",
        )))
        .await;
    assert!(matches!(group[0].recv().await, Packet::UnsubAck(a) if a.packet_id == id));
    publish_n(&mut publisher, "v3/t", 4).await;
    let (_, got) = drain_all(group, 4).await;
    assert!(got[0].is_empty(), "{:?}", payloads(&got[0]));
    assert_spread_once(&got[1..], 4, "the member left");
    s.server.shutdown(WAIT).await;
}

#[tokio::test]
async fn malformed_share_names_close_the_connection() {
    let s = start().await;
    // [MQTT-4.8.2-1]: a share name of at least one character; [MQTT-4.8.2-2]: without `/`,
    // `+` or `#`, followed by `/` and a topic filter.
    for filter in [
        "$share/g",
        "$share//t",
        "$share/g/",
        "$share/g+/t",
        "$share/#/t",
    ] {
        let mut c = Raw::connect(s.addr, V5, "c").await;
        let id = c.next_id();
        c.send(Packet::Subscribe(Subscribe::new(
            id,
            filter,
            QoS::AtMostOnce,
        )))
        .await;
        let got = c.expect_closed().await;
        assert_eq!(got.len(), 1, "{filter}: {got:?}");
        match &got[0] {
            Packet::Disconnect(d) => assert!(
                matches!(
                    d.reason_code,
                    ReasonCode::TopicFilterInvalid
                        | ReasonCode::MalformedPacket
                        | ReasonCode::ProtocolError
                ),
                "{filter}: {d:?}"
            ),
            other => panic!("{filter}: expected DISCONNECT, got {other:?}"),
        }

        let mut c = Raw::connect(s.addr, V3_1_1, "c3").await;
        c.send(Packet::Subscribe(Subscribe::new(
            1,
            filter,
            QoS::AtMostOnce,
        )))
        .await;
        assert_eq!(c.expect_closed().await, Vec::new(), "{filter} (3.1.1)");
    }

    // [MQTT-3.8.3-4]: No Local on a shared subscription is a protocol error.
    let mut c = Raw::connect(s.addr, V5, "nl").await;
    let mut sub = Subscribe::new(1, "$share/g/t", QoS::AtMostOnce);
    sub.subscriptions[0].options.no_local = true;
    c.send(Packet::Subscribe(sub)).await;
    assert_eq!(
        c.expect_closed().await,
        vec![Packet::Disconnect(mqtt_codec::Disconnect::new(
            ReasonCode::ProtocolError
        ))]
    );
    s.server.shutdown(WAIT).await;
}
