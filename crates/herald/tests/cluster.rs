//! Herald nodes joined through a real nats-server (started by the test on a port of its
//! own): a message published on one node reaches the subscribers of the others exactly as
//! on one node, tenants kept apart, and a node with no subscriber for a topic gets nothing
//! of it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::Raw;
use common::nats::Nats;
use common::nats::until_subscribed;
use herald::config::{Config, TenantRule};
use mqtt_codec::ProtocolVersion::{V3_1_1, V5};
use mqtt_codec::{Connect, Packet, Publish, QoS};

fn nats() -> Nats {
    Nats::start()
}

fn node_config(nats: &Nats, id: &str) -> Config {
    let mut c = common::config();
    c.cluster.nats = vec![nats.url.clone()];
    c.cluster.node_id = id.into();
    c.auth.tenant_from = TenantRule::UsernamePrefix;
    c
}

async fn client(addr: std::net::SocketAddr, v5: bool, username: &str, id: &str) -> Raw {
    let mut c = Connect::new(if v5 { V5 } else { V3_1_1 }, id, 60);
    c.username = Some(username.into());
    let (raw, ack) = Raw::connect_with(addr, c).await;
    assert_eq!(ack.reason_code, mqtt_codec::ReasonCode::Success);
    raw
}

#[tokio::test]
async fn a_message_crosses_nodes_as_on_one() {
    let nats = nats();
    let a = common::start_with(node_config(&nats, "a")).await;
    let b = common::start_with(node_config(&nats, "b")).await;

    let mut sub = client(b.addr, true, "acme/s", "sub").await;
    sub.subscribe("room/+/temp", QoS::AtLeastOnce).await;
    let mut other_tenant = client(b.addr, true, "globex/s", "sub").await;
    other_tenant
        .subscribe("room/+/temp", QoS::AtLeastOnce)
        .await;
    let mut overlap = client(b.addr, false, "acme/o", "overlap").await;
    overlap.subscribe("room/#", QoS::AtMostOnce).await;
    overlap.subscribe("room/1/temp", QoS::AtLeastOnce).await;
    // acme's room/+/temp, room and room.>, room/1/temp; globex's room/+/temp: five
    // subjects on b.
    until_subscribed(&b, 5).await;
    assert_eq!(
        a.server
            .cluster()
            .unwrap()
            .stats
            .subscriptions
            .load(Ordering::Relaxed),
        0,
        "a has no subscriber: it subscribes to nothing"
    );

    let mut publisher = client(a.addr, true, "acme/p", "pub").await;
    let mut p = Publish::new("room/1/temp", b"21.5".to_vec());
    p.qos = QoS::AtLeastOnce;
    p.properties.content_type = Some("text/plain".into());
    p.properties.message_expiry_interval = Some(60);
    p.properties
        .user_properties
        .push(("unit".into(), "C".into()));
    p.packet_id = publisher.next_id();
    publisher.send(Packet::Publish(p)).await;
    assert!(matches!(publisher.recv().await, Packet::PubAck(_)));

    let got = sub.recv_publish().await;
    assert_eq!(
        (&*got.topic, &got.payload[..]),
        ("room/1/temp", &b"21.5"[..])
    );
    assert_eq!(got.qos, QoS::AtLeastOnce);
    assert_eq!(got.properties.content_type.as_deref(), Some("text/plain"));
    assert_eq!(got.properties.user_properties.len(), 1);
    let left = got.properties.message_expiry_interval.unwrap();
    assert!(
        (58..=60).contains(&left),
        "expiry counts the time in transit: {left}"
    );
    // One copy for the client whose two filters match, at the higher QoS, as on one node.
    let once = overlap.recv_publish().await;
    assert_eq!(once.qos, QoS::AtLeastOnce);
    overlap.expect_nothing().await;
    // The other tenant's same topic is another topic.
    other_tenant.expect_nothing().await;
    // Nothing comes back to a from itself, and a's own subscriber gets one copy.
    let mut local = client(a.addr, true, "acme/l", "local").await;
    local.subscribe("room/#", QoS::AtMostOnce).await;
    until_subscribed(&a, 2).await;
    publisher
        .publish("room/2/temp", b"19", QoS::AtMostOnce, false)
        .await;
    assert_eq!(&*local.recv_publish().await.topic, "room/2/temp");
    local.expect_nothing().await;
    assert_eq!(&*sub.recv_publish().await.topic, "room/2/temp");
    // A message from b reaches a's subscriber.
    let mut from_b = client(b.addr, true, "acme/q", "pub-b").await;
    from_b.publish("room/3", b"x", QoS::AtMostOnce, false).await;
    assert_eq!(&*local.recv_publish().await.topic, "room/3");

    // Interest goes when the last subscriber does.
    local.disconnect().await;
    until_subscribed(&a, 0).await;
    let stats = &a.server.cluster().unwrap().stats;
    assert_eq!(stats.dropped_in.load(Ordering::Relaxed), 0);
    // QoS 0 straight to NATS, QoS 1 through the cluster's stream.
    assert!(stats.sent.load(Ordering::Relaxed) >= 1);
    let stream = &a.server.cluster().unwrap().durable_stats;
    assert!(stream.stored.load(Ordering::Relaxed) >= 1);
}

#[tokio::test]
async fn every_node_sees_the_cluster() {
    let nats = nats();
    let mut with_api = node_config(&nats, "a");
    with_api.http.listen = "127.0.0.1:0".into();
    let a = common::start_with(with_api).await;
    let b = common::start_with(node_config(&nats, "b")).await;
    let _client = client(b.addr, true, "acme/x", "x").await;
    let http = a.server.http_addr().unwrap();
    let mut view = serde_json::Value::Null;
    for _ in 0..100 {
        view = common::http::request(http, "GET", "/api/v1/cluster", &[], "")
            .await
            .json();
        let b_seen = view["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["node"] == "b" && n["connections"] == 1);
        if b_seen {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(view["clustered"], true, "{view}");
    assert_eq!(
        (&view["node"], &view["nats_connected"]),
        (&"a".into(), &true.into())
    );
    let nodes: Vec<(&str, &str, bool)> = view["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["node"].as_str().unwrap(),
                n["state"].as_str().unwrap(),
                n["this_node"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(nodes, [("a", "up", true), ("b", "up", false)], "{view}");
    let metrics = common::http::request(http, "GET", "/metrics", &[], "").await;
    assert!(
        metrics.body.contains("herald_cluster_nats_connected 1"),
        "{}",
        metrics.body
    );
    assert!(
        metrics
            .body
            .contains("herald_cluster_messages_dropped_total{reason=\"send_queue_full\"} 0")
    );
    // A node that leaves goes stale for the others.
    b.server.shutdown(Duration::from_secs(1)).await;
    let mut stale = false;
    for _ in 0..100 {
        let view = common::http::request(http, "GET", "/api/v1/cluster", &[], "")
            .await
            .json();
        stale = view["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["node"] == "b" && n["state"] == "stale");
        if stale {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(stale, "b is stale once not heard from for three beats");
}

/// The next PUBLISH within `within`, or `None`.
async fn next_within(c: &mut Raw, within: Duration) -> Option<Publish> {
    match tokio::time::timeout(within, c.try_recv(Duration::from_secs(30))).await {
        Ok(Some(Packet::Publish(p))) => Some(p),
        Ok(other) => panic!("expected PUBLISH, got {other:?}"),
        Err(_) => None,
    }
}

#[tokio::test]
async fn a_shared_group_over_nodes_gets_each_message_once() {
    let nats = nats();
    let a = common::start_with(node_config(&nats, "a")).await;
    let b = common::start_with(node_config(&nats, "b")).await;
    let mut m1 = client(a.addr, true, "acme/m", "m1").await;
    m1.subscribe("$share/workers/jobs/#", QoS::AtMostOnce).await;
    let mut m2 = client(b.addr, true, "acme/m", "m2").await;
    m2.subscribe("$share/workers/jobs/#", QoS::AtMostOnce).await;
    let mut watch = client(b.addr, true, "acme/w", "watch").await;
    watch.subscribe("jobs/#", QoS::AtMostOnce).await;
    // The group's two subjects (jobs, jobs.>) on each node; b's direct ones besides.
    until_subscribed(&a, 2).await;
    until_subscribed(&b, 4).await;

    let mut publisher = client(a.addr, true, "acme/p", "p").await;
    for i in 0..40 {
        publisher
            .publish(&format!("jobs/{i}"), b"work", QoS::AtMostOnce, false)
            .await;
    }
    // Until all 40 came (or 20 s), then a quiet moment in which no duplicate may come.
    let mut got: Vec<(u8, String)> = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut quiet = 0;
    while quiet < 3 && tokio::time::Instant::now() < deadline {
        let mut any = false;
        for (n, m) in [(1u8, &mut m1), (2, &mut m2)] {
            if let Some(p) = next_within(m, Duration::from_millis(100)).await {
                got.push((n, p.topic.to_string()));
                any = true;
            }
        }
        quiet = if got.len() >= 40 && !any {
            quiet + 1
        } else {
            0
        };
    }
    let mut topics: Vec<String> = got.iter().map(|(_, t)| t.clone()).collect();
    topics.sort();
    let mut expected: Vec<String> = (0..40).map(|i| format!("jobs/{i}")).collect();
    expected.sort();
    assert_eq!(
        topics, expected,
        "each message to exactly one member of the group"
    );
    for member in [1, 2] {
        assert!(
            got.iter().any(|(n, _)| *n == member),
            "NATS spreads the group's messages over both nodes' members: {got:?}"
        );
    }
    // A direct subscriber still gets every message.
    let mut seen = 0;
    while seen < 40
        && next_within(&mut watch, Duration::from_secs(5))
            .await
            .is_some()
    {
        seen += 1;
    }
    assert_eq!(seen, 40);
    watch.expect_nothing().await;
}

/// The retained message `node` holds for `topic` of tenant acme (its payload), if any.
fn retained_on(node: &common::TestServer, topic: &str) -> Option<Vec<u8>> {
    let tenant = node.server.broker().find_tenant("acme")?;
    tenant
        .retained
        .matching(topic)
        .first()
        .map(|m| m.payload.to_vec())
}

#[tokio::test]
async fn retained_messages_are_the_clusters() {
    let nats = nats();
    let a = common::start_with(node_config(&nats, "a")).await;
    let b = common::start_with(node_config(&nats, "b")).await;
    let mut pa = client(a.addr, true, "acme/p", "pa").await;
    pa.publish("status/dev1", b"on", QoS::AtLeastOnce, true)
        .await;
    common::eventually("b holds a's retained message", || {
        retained_on(&b, "status/dev1").as_deref() == Some(&b"on"[..])
    })
    .await;
    // A subscriber on b gets it on subscribe, as if it had been set on b.
    let mut sb = client(b.addr, true, "acme/s", "sb").await;
    sb.subscribe("status/#", QoS::AtLeastOnce).await;
    let got = sb.recv_publish().await;
    assert_eq!(
        (&*got.topic, &got.payload[..], got.retain),
        ("status/dev1", &b"on"[..], true)
    );
    // Cleared on b, it goes from a too.
    let mut pb = client(b.addr, true, "acme/q", "pb").await;
    pb.publish("status/dev1", b"", QoS::AtLeastOnce, true).await;
    common::eventually("a lost the cleared message", || {
        retained_on(&a, "status/dev1").is_none()
    })
    .await;
    // Both nodes set one topic at once, many times: they end with the same message.
    for i in 0..20u8 {
        pa.publish("status/race", &[b'a', i], QoS::AtMostOnce, true)
            .await;
        pb.publish("status/race", &[b'b', i], QoS::AtMostOnce, true)
            .await;
    }
    common::eventually("both nodes agree on status/race", || {
        let (x, y) = (
            retained_on(&a, "status/race"),
            retained_on(&b, "status/race"),
        );
        x.is_some() && x == y && x.as_deref().is_some_and(|v| v[1] == 19)
    })
    .await;
    // A node that joins later has them all.
    pa.publish("status/dev2", b"idle", QoS::AtLeastOnce, true)
        .await;
    let c = common::start_with(node_config(&nats, "c")).await;
    let mut sc = client(c.addr, true, "acme/s", "sc").await;
    common::eventually("c read the bucket", || {
        retained_on(&c, "status/dev2").is_some()
    })
    .await;
    sc.subscribe("status/dev2", QoS::AtLeastOnce).await;
    assert_eq!(&sc.recv_publish().await.payload[..], b"idle");
    let stats = &c.server.cluster().unwrap().stats;
    assert_eq!(stats.retained_failed.load(Ordering::Relaxed), 0);
    assert!(stats.retained_applied.load(Ordering::Relaxed) > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn cross_node_fan_out_on_eight_workers_keeps_every_message_in_order() {
    const SUBS: usize = 100;
    const PUBS: usize = 4;
    const EACH: usize = 250;
    let nats = nats();
    let a = common::start_with(node_config(&nats, "a")).await;
    let b = common::start_with(node_config(&nats, "b")).await;
    let mut subs = Vec::new();
    for i in 0..SUBS {
        let mut c = client(b.addr, true, "acme/s", &format!("s{i}")).await;
        c.subscribe("load/#", QoS::AtLeastOnce).await;
        subs.push(c);
    }
    until_subscribed(&b, 2).await;
    // Every publisher at once, on eight workers.
    let addr = a.addr;
    let publishers: Vec<_> = (0..PUBS)
        .map(|p| {
            tokio::spawn(async move {
                let mut c = client(addr, true, "acme/p", &format!("p{p}")).await;
                for n in 0..EACH {
                    let payload = format!("{p}:{n}");
                    c.publish(
                        &format!("load/{p}"),
                        payload.as_bytes(),
                        QoS::AtLeastOnce,
                        false,
                    )
                    .await;
                }
            })
        })
        .collect();
    let readers: Vec<_> = subs
        .into_iter()
        .map(|mut c| {
            tokio::spawn(async move {
                let mut next = [0usize; PUBS];
                for _ in 0..PUBS * EACH {
                    let p = c.recv_publish().await;
                    c.send(Packet::PubAck(mqtt_codec::Ack::new(p.packet_id)))
                        .await;
                    let text = String::from_utf8(p.payload.to_vec()).unwrap();
                    let (who, n) = text.split_once(':').unwrap();
                    let (who, n): (usize, usize) = (who.parse().unwrap(), n.parse().unwrap());
                    assert_eq!(n, next[who], "publisher {who}'s messages in order");
                    next[who] += 1;
                }
                c.expect_nothing().await;
            })
        })
        .collect();
    for p in publishers {
        p.await.unwrap();
    }
    for r in readers {
        r.await.unwrap();
    }
    let sa = &a.server.cluster().unwrap().stats;
    // QoS 1: every one through the cluster's stream, none dropped.
    let stream = &a.server.cluster().unwrap().durable_stats;
    assert_eq!(stream.stored.load(Ordering::Relaxed), (PUBS * EACH) as u64);
    assert_eq!(sa.send_queue_full.load(Ordering::Relaxed), 0);
    let sb = &b.server.cluster().unwrap().stats;
    assert_eq!(sb.received.load(Ordering::Relaxed), (PUBS * EACH) as u64);
}

#[tokio::test]
async fn after_its_suback_a_subscriber_gets_what_any_node_publishes() {
    let nats = nats();
    let a = common::start_with(node_config(&nats, "a")).await;
    let b = common::start_with(node_config(&nats, "b")).await;
    let mut publisher = client(a.addr, true, "acme/p", "pub").await;
    // No waiting for NATS here: the SUBACK itself waits until NATS has the subscription.
    for round in 0..20 {
        let mut sub = client(b.addr, true, "acme/s", &format!("s{round}")).await;
        let topic = format!("fresh/{round}");
        sub.subscribe(&topic, QoS::AtMostOnce).await;
        publisher
            .publish(&topic, b"now", QoS::AtMostOnce, false)
            .await;
        assert_eq!(
            &*sub.recv_publish().await.topic,
            topic.as_str(),
            "round {round}"
        );
    }
}

/// The NATS subscriptions node `node` holds.
fn subscriptions(node: &common::TestServer) -> u64 {
    let c = node.server.cluster().unwrap();
    c.stats.subscriptions.load(Ordering::Relaxed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_subjects_under_one_level_become_one_wildcard_and_nothing_is_lost() {
    let nats = nats();
    let mut config = node_config(&nats, "a");
    config.cluster.coarsen_above = 4;
    let a = common::start_with(config).await;
    let b = common::start_with(node_config(&nats, "b")).await;

    // Device 0 receives a steady QoS 1 flow from b while nine more devices subscribe on a
    // (the level becomes one wildcard), then leave (back to the subjects).
    let mut devices = Vec::new();
    let mut first = client(a.addr, true, "acme/d0", "d0").await;
    first.subscribe("dev/0/cmd", QoS::AtLeastOnce).await;
    until_subscribed(&a, 1).await;
    let publishing = tokio::spawn({
        let b = b.addr;
        async move {
            let mut p = client(b, true, "acme/p", "p").await;
            for i in 0..150u32 {
                p.publish("dev/0/cmd", &i.to_be_bytes(), QoS::AtLeastOnce, false)
                    .await;
                tokio::time::sleep(Duration::from_millis(4)).await;
            }
        }
    });
    for i in 1..10 {
        let mut d = client(a.addr, true, &format!("acme/d{i}"), &format!("d{i}")).await;
        d.subscribe(&format!("dev/{i}/cmd"), QoS::AtLeastOnce).await;
        devices.push(d);
    }
    assert_eq!(subscriptions(&a), 1, "one wildcard for dev/...");
    let c = a.server.cluster().unwrap();
    assert_eq!(c.stats.coarsened.load(Ordering::Relaxed), 1);
    // Each device gets its own messages only, once.
    let received = |node: &common::TestServer| {
        let c = node.server.cluster().unwrap();
        c.stats.received.load(Ordering::Relaxed)
    };
    let mut p = client(b.addr, true, "acme/q", "q").await;
    p.publish("dev/7/cmd", b"seven", QoS::AtLeastOnce, false)
        .await;
    let before = received(&a);
    p.publish("dev/99/cmd", b"nobody", QoS::AtMostOnce, false)
        .await;
    common::eventually("the wildcard brings a what nobody there wants", || {
        received(&a) > before
    })
    .await;
    match devices[6].recv().await {
        Packet::Publish(m) => assert_eq!(&m.payload[..], b"seven"),
        other => panic!("expected dev/7/cmd, got {other:?}"),
    }
    for (i, d) in devices.iter_mut().enumerate() {
        let quiet = tokio::time::timeout(
            Duration::from_millis(200),
            d.try_recv(Duration::from_secs(1)),
        );
        assert!(quiet.await.is_err(), "device {} got more", i + 1);
    }
    // They leave: back to one subject per filter.
    for d in devices.drain(..) {
        d.disconnect().await;
    }
    common::eventually("back to the subjects", || subscriptions(&a) == 1).await;
    publishing.await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = received(&a);
    p.publish("dev/99/cmd", b"nobody", QoS::AtMostOnce, false)
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(received(&a), before, "the wildcard was let go");
    let mut got = Vec::new();
    while got.len() < 150 {
        match tokio::time::timeout(Duration::from_secs(5), first.recv()).await {
            Ok(Packet::Publish(m)) => {
                got.push(u32::from_be_bytes(m.payload[..4].try_into().unwrap()));
                first
                    .send(Packet::PubAck(mqtt_codec::Ack::new(m.packet_id)))
                    .await;
            }
            Ok(other) => panic!("expected the flow, got {other:?}"),
            Err(_) => panic!("missing after {} of 150: {got:?}", got.len()),
        }
    }
    assert_eq!(
        got,
        (0..150).collect::<Vec<_>>(),
        "every message once, in order"
    );
    p.publish("dev/0/cmd", b"after", QoS::AtLeastOnce, false)
        .await;
    match first.recv().await {
        Packet::Publish(m) => assert_eq!(&m.payload[..], b"after"),
        other => panic!("expected the message after, got {other:?}"),
    }
}
