//! Tenants' quotas and rate limits, each hit with real sockets: the client is told (CONNACK,
//! SUBACK, PUBACK reason codes, a 429) and the breach is counted on its tenant; other
//! tenants go on. A connect flood from one source address is closed before any handshake
//! while clients from other addresses connect.
//!
//! The tenant comes from the username (`acme/alice` is tenant `acme`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;

use common::Raw;
use herald::broker::quota::Breach;
use herald::broker::stats::CloseReason;
use herald::config::{Config, RateExceeded, TenantLimits, TenantRule};
use mqtt_codec::ProtocolVersion::{V3_1_1, V5};
use mqtt_codec::{Connect, Packet, Publish, QoS, ReasonCode};

fn config(defaults: TenantLimits) -> Config {
    let mut c = common::config();
    c.auth.tenant_from = TenantRule::UsernamePrefix;
    c.tenants.defaults = defaults;
    c
}

/// CONNECT as `username` with client id `id`: the connection and the CONNACK's code.
async fn connect(addr: SocketAddr, v5: bool, username: &str, id: &str) -> (Raw, ReasonCode) {
    let mut c = Connect::new(if v5 { V5 } else { V3_1_1 }, id, 60);
    c.username = Some(username.into());
    let (raw, ack) = Raw::connect_with(addr, c).await;
    (raw, ack.reason_code)
}

fn breaches(s: &common::TestServer, tenant: &str, quota: Breach) -> u64 {
    let t = s.server.broker().find_tenant(tenant).expect("tenant");
    t.usage.breaches(quota)
}

/// Publishes QoS 1; the PUBACK's reason code, or `None` when the connection closed.
async fn puback(c: &mut Raw, topic: &str, payload: &[u8]) -> Option<ReasonCode> {
    let mut p = Publish::new(topic, payload.to_vec());
    p.qos = QoS::AtLeastOnce;
    p.packet_id = c.next_id();
    c.send(Packet::Publish(p)).await;
    loop {
        match c.try_recv(common::WAIT).await? {
            Packet::PubAck(a) => return Some(a.reason_code),
            Packet::Publish(_) => continue,
            Packet::Disconnect(_) => return None,
            other => panic!("expected PUBACK, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn connections_sessions_and_connect_rate_per_tenant() {
    let s = common::start_with(config(TenantLimits {
        max_connections: Some(2),
        max_sessions: Some(3),
        ..TenantLimits::default()
    }))
    .await;
    let (_a1, code) = connect(s.addr, true, "acme/a", "a1").await;
    assert_eq!(code, ReasonCode::Success);
    let (_a2, code) = connect(s.addr, true, "acme/a", "a2").await;
    assert_eq!(code, ReasonCode::Success);
    // The third of acme's connections: 0x97 (3.1.1: 3, server unavailable).
    assert_eq!(
        connect(s.addr, true, "acme/a", "a3").await.1,
        ReasonCode::QuotaExceeded
    );
    assert_eq!(
        connect(s.addr, false, "acme/a", "a3").await.1,
        ReasonCode::ServerUnavailable
    );
    // Another tenant is not held back.
    let (_g1, code) = connect(s.addr, true, "globex/g", "g1").await;
    assert_eq!(code, ReasonCode::Success);
    assert_eq!(breaches(&s, "acme", Breach::Connections), 2);
    assert_eq!(breaches(&s, "globex", Breach::Connections), 0);

    // Sessions, connected or not: a new client id past 2 is refused; an existing one
    // still resumes.
    let s = common::start_with(config(TenantLimits {
        max_sessions: Some(2),
        ..TenantLimits::default()
    }))
    .await;
    let mut persistent = Connect::new(V5, "p1", 60);
    persistent.username = Some("acme/a".into());
    persistent.clean_start = false;
    persistent.properties.session_expiry_interval = Some(600);
    let (p1, ack) = Raw::connect_with(s.addr, persistent.clone()).await;
    assert_eq!(ack.reason_code, ReasonCode::Success);
    p1.disconnect().await;
    common::until_offline_in(&s, "acme", "p1").await;
    let (_s2, code) = connect(s.addr, true, "acme/a", "s2").await;
    assert_eq!(code, ReasonCode::Success);
    assert_eq!(
        connect(s.addr, true, "acme/a", "s3").await.1,
        ReasonCode::QuotaExceeded
    );
    let (_p1, ack) = Raw::connect_with(s.addr, persistent).await;
    assert_eq!(
        (ack.reason_code, ack.session_present),
        (ReasonCode::Success, true)
    );
    assert_eq!(breaches(&s, "acme", Breach::Sessions), 1);

    // The connect rate.
    let s = common::start_with(config(TenantLimits {
        connect_rate: Some(3),
        ..TenantLimits::default()
    }))
    .await;
    let mut codes = Vec::new();
    let mut held = Vec::new();
    for i in 0..8 {
        let (c, code) = connect(s.addr, true, "rated/x", &format!("r{i}")).await;
        codes.push(code);
        held.push(c);
    }
    let refused = codes
        .iter()
        .filter(|c| **c == ReasonCode::ConnectionRateExceeded)
        .count();
    assert!(refused >= 4, "{codes:?}");
    assert_eq!(breaches(&s, "rated", Breach::ConnectRate), refused as u64);
}

#[tokio::test]
async fn subscriptions_features_and_shared_groups() {
    let s = common::start_with(config(TenantLimits {
        max_subscriptions_per_client: Some(2),
        max_subscriptions: Some(5),
        max_shared_members: Some(1),
        ..TenantLimits::default()
    }))
    .await;
    let (mut a, _) = connect(s.addr, true, "acme/a", "a").await;
    assert_eq!(
        a.subscribe("x/1", QoS::AtLeastOnce).await,
        [ReasonCode::GrantedQoS1]
    );
    assert_eq!(
        a.subscribe("$share/g/x", QoS::AtLeastOnce).await,
        [ReasonCode::GrantedQoS1]
    );
    // Held already: a re-subscription is not a new one.
    assert_eq!(
        a.subscribe("x/1", QoS::AtLeastOnce).await,
        [ReasonCode::GrantedQoS1]
    );
    assert_eq!(
        a.subscribe("x/2", QoS::AtLeastOnce).await,
        [ReasonCode::QuotaExceeded]
    );
    let (mut b, _) = connect(s.addr, true, "acme/b", "b").await;
    // The shared group has its one member.
    assert_eq!(
        b.subscribe("$share/g/x", QoS::AtLeastOnce).await,
        [ReasonCode::QuotaExceeded]
    );
    assert_eq!(
        b.subscribe("y/1", QoS::AtLeastOnce).await,
        [ReasonCode::GrantedQoS1]
    );
    assert_eq!(
        b.subscribe("y/2", QoS::AtLeastOnce).await,
        [ReasonCode::GrantedQoS1]
    );
    let (mut c, _) = connect(s.addr, true, "acme/c", "c").await;
    assert_eq!(
        c.subscribe("z/1", QoS::AtLeastOnce).await,
        [ReasonCode::GrantedQoS1]
    );
    // The tenant's fifth subscription was z/1: a sixth is refused.
    assert_eq!(
        c.subscribe("z/2", QoS::AtLeastOnce).await,
        [ReasonCode::QuotaExceeded]
    );
    assert_eq!(breaches(&s, "acme", Breach::SubscriptionsPerClient), 1);
    assert_eq!(breaches(&s, "acme", Breach::SharedMembers), 1);
    assert_eq!(breaches(&s, "acme", Breach::Subscriptions), 1);
    // An unsubscription frees one.
    let id = c.next_id();
    c.send(Packet::Unsubscribe(mqtt_codec::Unsubscribe::new(id, "z/1")))
        .await;
    assert!(matches!(c.recv().await, Packet::UnsubAck(_)));
    assert_eq!(
        c.subscribe("z/2", QoS::AtLeastOnce).await,
        [ReasonCode::GrantedQoS1]
    );

    // Features off: wildcards 0xA2, shared subscriptions 0x9E; QoS capped at 1.
    let s = common::start_with(config(TenantLimits {
        wildcards: Some(false),
        shared_subscriptions: Some(false),
        max_qos: Some(1),
        ..TenantLimits::default()
    }))
    .await;
    let mut c = Connect::new(V5, "f", 60);
    c.username = Some("plain/f".into());
    let (mut f, ack) = Raw::connect_with(s.addr, c).await;
    assert_eq!(
        ack.properties.maximum_qos,
        Some(QoS::AtLeastOnce),
        "told at CONNACK"
    );
    assert_eq!(
        f.subscribe("a/+", QoS::AtMostOnce).await,
        [ReasonCode::WildcardSubscriptionsNotSupported]
    );
    assert_eq!(
        f.subscribe("$share/g/a", QoS::AtMostOnce).await,
        [ReasonCode::SharedSubscriptionsNotSupported]
    );
    assert_eq!(
        f.subscribe("a/b", QoS::ExactlyOnce).await,
        [ReasonCode::GrantedQoS1]
    );
    // A QoS 2 PUBLISH past what CONNACK said: DISCONNECT 0x9B.
    let mut p = Publish::new("a/b", b"x".to_vec());
    p.qos = QoS::ExactlyOnce;
    p.packet_id = 9;
    f.send(Packet::Publish(p)).await;
    let closed = f.expect_closed().await;
    assert!(
        matches!(closed.last(), Some(Packet::Disconnect(d)) if d.reason_code == ReasonCode::QoSNotSupported),
        "{closed:?}"
    );
    assert_eq!(breaches(&s, "plain", Breach::Wildcards), 1);
    assert_eq!(breaches(&s, "plain", Breach::SharedSubscriptions), 1);
}

#[tokio::test]
async fn payloads_retained_and_rates() {
    let s = common::start_with(config(TenantLimits {
        max_payload_bytes: Some(16),
        max_retained_messages: Some(1),
        ..TenantLimits::default()
    }))
    .await;
    let (mut a, _) = connect(s.addr, true, "acme/a", "a").await;
    assert_eq!(
        puback(&mut a, "t", &[0; 16]).await,
        Some(ReasonCode::NoMatchingSubscribers)
    );
    assert_eq!(
        puback(&mut a, "t", &[0; 17]).await,
        Some(ReasonCode::QuotaExceeded)
    );
    // Retained: one topic at most; replacing it is fine, a second topic is not.
    let retain = |topic: &str| {
        let mut p = Publish::new(topic, b"r".to_vec());
        p.qos = QoS::AtLeastOnce;
        p.retain = true;
        p
    };
    for (topic, code) in [
        ("r/1", ReasonCode::NoMatchingSubscribers),
        ("r/1", ReasonCode::NoMatchingSubscribers),
        ("r/2", ReasonCode::QuotaExceeded),
    ] {
        let mut p = retain(topic);
        p.packet_id = a.next_id();
        a.send(Packet::Publish(p)).await;
        match a.recv().await {
            Packet::PubAck(ack) => assert_eq!(ack.reason_code, code, "{topic}"),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(breaches(&s, "acme", Breach::Payload), 1);
    assert_eq!(breaches(&s, "acme", Breach::Retained), 1);
    // 3.1.1 has no code to refuse a payload with: the connection closes.
    let (mut old, _) = connect(s.addr, false, "acme/o", "o").await;
    assert_eq!(puback(&mut old, "t", &[0; 17]).await, None);

    // Rates refused: 0x97 past a connection's 5 messages a second.
    let mut c = config(TenantLimits {
        client_messages_per_sec: Some(5),
        ..TenantLimits::default()
    });
    c.tenants.rate_exceeded = RateExceeded::Refuse;
    let s = common::start_with(c).await;
    let (mut r, _) = connect(s.addr, true, "acme/r", "r").await;
    let mut codes = Vec::new();
    for _ in 0..20 {
        codes.push(puback(&mut r, "t", b"x").await.unwrap());
    }
    let refused = codes
        .iter()
        .filter(|c| **c == ReasonCode::QuotaExceeded)
        .count();
    assert!((10..=15).contains(&refused), "{codes:?}");
    assert_eq!(breaches(&s, "acme", Breach::MessageRate), refused as u64);

    // Rates throttled (the default): nothing is refused or lost, the publisher is held
    // back (its breaches counted) and every message arrives.
    let s = common::start_with(config(TenantLimits {
        messages_per_sec: Some(20),
        ..TenantLimits::default()
    }))
    .await;
    let (mut sub, _) = connect(s.addr, true, "acme/s", "s").await;
    sub.subscribe("t", QoS::AtLeastOnce).await;
    let (mut p, _) = connect(s.addr, true, "acme/p", "p").await;
    for i in 0..50u32 {
        let code = puback(&mut p, "t", &i.to_be_bytes()).await;
        assert_eq!(code, Some(ReasonCode::Success));
    }
    let got = common::drain(&mut sub, 50).await;
    let payloads: Vec<u32> = got
        .iter()
        .map(|p| u32::from_be_bytes(p.payload[..4].try_into().unwrap()))
        .collect();
    assert_eq!(payloads, (0..50).collect::<Vec<_>>());
    assert!(breaches(&s, "acme", Breach::MessageRate) > 0);
}

#[tokio::test]
async fn http_publish_rate_per_tenant() {
    let mut c = config(TenantLimits {
        http_publish_per_sec: Some(3),
        ..TenantLimits::default()
    });
    c.http.listen = "127.0.0.1:0".into();
    let s = common::start_with(c).await;
    let http = s.server.http_addr().unwrap();
    let mut statuses = Vec::new();
    for _ in 0..10 {
        let reply = common::http::request(
            http,
            "POST",
            "/api/v1/publish?tenant=acme",
            &[],
            r#"{"topic": "t", "payload": "x"}"#,
        )
        .await;
        if reply.status == 429 {
            assert_eq!(reply.header("retry-after"), Some("1"));
            assert_eq!(reply.json()["error"]["code"], "rate_limited");
        }
        statuses.push(reply.status);
    }
    let limited = statuses.iter().filter(|s| **s == 429).count();
    assert!(limited >= 5, "{statuses:?}");
    assert_eq!(breaches(&s, "acme", Breach::HttpRate), limited as u64);
    // The breaches and the publications, per tenant, in the metrics.
    let metrics = common::http::request(http, "GET", "/metrics", &[], "")
        .await
        .body;
    let line = format!(
        "herald_tenant_quota_breaches_total{{tenant=\"acme\",reason=\"http_rate\"}} {limited}"
    );
    assert!(metrics.contains(&line), "{line} in\n{metrics}");
    let published = format!(
        "herald_tenant_messages_published_total{{tenant=\"acme\"}} {}",
        10 - limited
    );
    assert!(metrics.contains(&published), "{published}");
}

/// A flood of connections from one source address is closed at accept, while clients from
/// another address (127.0.0.2: all of 127/8 is loopback) still connect.
#[tokio::test]
async fn a_connect_flood_from_one_address_is_closed_before_any_handshake() {
    let mut c = common::config();
    c.limits.connect_rate_per_ip = 5;
    c.limits.connect_burst_per_ip = 10;
    let s = common::start_with(c).await;
    let mut flood = Vec::new();
    for _ in 0..200 {
        if let Ok(stream) = tokio::net::TcpStream::connect(s.addr).await {
            flood.push(stream);
        }
    }
    let limited = || {
        s.server
            .broker()
            .stats
            .closes(CloseReason::ConnectRateLimited)
    };
    common::eventually("the flood is closed", || limited() >= 180).await;
    // Meanwhile another address connects and talks.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let stream = socket.connect(s.addr).await.unwrap();
    let mut other = Raw::from_stream(stream, V5).handshake("elsewhere").await;
    common::ping(&mut other).await;
    // And the flooding address itself, once its rate allows again.
    drop(flood);
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    let mut again = Raw::connect(s.addr, V5, "later").await;
    common::ping(&mut again).await;
}

/// 300 CONNECTs of one tenant at once on eight workers: exactly `max_connections` get in,
/// whatever the interleaving (the connection is counted before the quota is checked).
#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn a_connect_storm_on_eight_workers_keeps_to_max_connections() {
    let s = common::start_with(config(TenantLimits {
        max_connections: Some(50),
        ..TenantLimits::default()
    }))
    .await;
    let storm: Vec<_> = (0..300)
        .map(|i| {
            let addr = s.addr;
            tokio::spawn(async move { connect(addr, true, "acme/x", &format!("s{i}")).await })
        })
        .collect();
    let mut held = Vec::new();
    let mut refused = 0;
    for c in storm {
        let (raw, code) = c.await.unwrap();
        match code {
            ReasonCode::Success => held.push(raw),
            ReasonCode::QuotaExceeded => refused += 1,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!((held.len(), refused), (50, 250));
    assert_eq!(breaches(&s, "acme", Breach::Connections), 250);
}

/// A v5 CONNECT as `username` that asks for a session outliving it (`expiry` seconds; 0: a
/// session that ends with the connection).
fn lasting(username: &str, id: &str, expiry: u32) -> Connect {
    let mut c = Connect::new(V5, id, 60);
    c.username = Some(username.into());
    c.clean_start = false;
    c.properties.session_expiry_interval = Some(expiry);
    c
}

fn usage(s: &common::TestServer, tenant: &str) -> (u64, u64, u64) {
    use std::sync::atomic::Ordering::Relaxed;
    let t = s.server.broker().find_tenant(tenant).expect("tenant");
    (
        t.usage.persistent.load(Relaxed),
        t.usage.offline_messages.load(Relaxed),
        t.usage.offline_bytes.load(Relaxed),
    )
}

/// Herald with `limits` as tenant acme's own settings (as the admin API or the tenants file
/// would set them), and none for the others.
async fn acme_only(limits: TenantLimits) -> common::TestServer {
    let s = common::start_with(config(TenantLimits::default())).await;
    s.server.broker().tenant("acme").set_own(limits, true);
    s
}

#[tokio::test]
async fn persistent_sessions_per_tenant() {
    let s = common::start_with(config(TenantLimits {
        max_persistent_sessions: Some(1),
        ..TenantLimits::default()
    }))
    .await;
    let (p1, ack) = Raw::connect_with(s.addr, lasting("acme/a", "p1", 600)).await;
    assert_eq!(ack.reason_code, ReasonCode::Success);
    // A second persistent session is refused, in 5 and 3.1.1 (clean session 0: code 3).
    let (_, ack) = Raw::connect_with(s.addr, lasting("acme/a", "p2", 600)).await;
    assert_eq!(ack.reason_code, ReasonCode::QuotaExceeded);
    let mut old = Connect::new(V3_1_1, "p3", 60);
    old.username = Some("acme/a".into());
    old.clean_start = false;
    let (_, ack) = Raw::connect_with(s.addr, old).await;
    assert_eq!(ack.reason_code, ReasonCode::ServerUnavailable);
    // Sessions that end with their connection are not counted; another tenant has its own.
    let (_n1, code) = connect(s.addr, true, "acme/a", "n1").await;
    assert_eq!(code, ReasonCode::Success);
    let (_g, ack) = Raw::connect_with(s.addr, lasting("globex/g", "p2", 600)).await;
    assert_eq!(ack.reason_code, ReasonCode::Success);
    // The one it has resumes, offline or taken over.
    p1.disconnect().await;
    common::until_offline_in(&s, "acme", "p1").await;
    let (_p1, ack) = Raw::connect_with(s.addr, lasting("acme/a", "p1", 600)).await;
    assert_eq!(
        (ack.reason_code, ack.session_present),
        (ReasonCode::Success, true)
    );
    let (p1, ack) = Raw::connect_with(s.addr, lasting("acme/a", "p1", 600)).await;
    assert_eq!(ack.reason_code, ReasonCode::Success, "a takeover adds none");
    assert_eq!(usage(&s, "acme").0, 1);
    assert_eq!(breaches(&s, "acme", Breach::PersistentSessions), 2);
    // Once p1 leaves for good (expiry 0 at DISCONNECT), p2 may stay.
    let mut bye = mqtt_codec::Disconnect::default();
    bye.properties.session_expiry_interval = Some(0);
    let mut p1 = p1;
    p1.send(Packet::Disconnect(bye)).await;
    common::eventually("p1's session ends", || {
        s.server
            .broker()
            .find_tenant("acme")
            .is_some_and(|t| t.sessions.get("p1").is_none())
    })
    .await;
    assert_eq!(usage(&s, "acme").0, 0);
    let (_p2, ack) = Raw::connect_with(s.addr, lasting("acme/a", "p2", 600)).await;
    assert_eq!(ack.reason_code, ReasonCode::Success);
}

#[tokio::test]
async fn offline_queues_and_store_bytes_per_tenant() {
    let s = acme_only(TenantLimits {
        max_offline_queued_messages: Some(3),
        ..TenantLimits::default()
    })
    .await;
    // Two offline subscribers of acme share its 3 messages; globex's is not bounded by them.
    for (user, id) in [("acme/a", "s1"), ("acme/a", "s2"), ("globex/g", "s1")] {
        let (mut c, _) = Raw::connect_with(s.addr, lasting(user, id, 600)).await;
        c.subscribe("q/#", QoS::AtLeastOnce).await;
        c.disconnect().await;
        let tenant = user.split('/').next().unwrap();
        common::until_offline_in(&s, tenant, id).await;
    }
    let (mut p, _) = connect(s.addr, true, "acme/p", "p").await;
    assert_eq!(
        puback(&mut p, "q/1", b"12345").await,
        Some(ReasonCode::Success),
        "two copies: 2 of 3"
    );
    assert_eq!(usage(&s, "acme"), (2, 2, 2 * 8));
    assert_eq!(
        puback(&mut p, "q/2", b"12345").await,
        Some(ReasonCode::QuotaExceeded),
        "one copy fits, the other does not: the publisher is told"
    );
    assert_eq!(breaches(&s, "acme", Breach::OfflineQueue), 1);
    let (mut g, _) = connect(s.addr, true, "globex/p", "p").await;
    for _ in 0..5 {
        assert_eq!(puback(&mut g, "q/g", b"x").await, Some(ReasonCode::Success));
    }
    // A subscriber that comes back takes its messages, and what it was owed is no longer
    // counted; the publisher may go on.
    let (mut s1, ack) = Raw::connect_with(s.addr, lasting("acme/a", "s1", 600)).await;
    assert!(ack.session_present);
    let got = common::drain(&mut s1, 2).await;
    let topics: Vec<&str> = got.iter().map(|p| &*p.topic).collect();
    assert_eq!(topics, ["q/1", "q/2"], "s1 had room for q/2");
    let (_, owed, _) = usage(&s, "acme");
    assert_eq!(owed, 1, "s2 is still owed q/1");
    assert_eq!(
        puback(&mut p, "q/3", b"12345").await,
        Some(ReasonCode::Success)
    );
    // 3.1.1 has no code to refuse with: the connection closes unacknowledged.
    assert_eq!(
        puback(&mut p, "q/4", b"12345").await,
        Some(ReasonCode::Success)
    );
    let (mut old, _) = connect(s.addr, false, "acme/o", "o").await;
    assert_eq!(puback(&mut old, "q/5", b"12345").await, None);

    // Store bytes: retained messages and what offline sessions are owed, together.
    let s = common::start_with(config(TenantLimits {
        max_store_bytes: Some(100),
        ..TenantLimits::default()
    }))
    .await;
    let (mut c, _) = Raw::connect_with(s.addr, lasting("acme/a", "s1", 600)).await;
    c.subscribe("q", QoS::AtLeastOnce).await;
    c.disconnect().await;
    common::until_offline_in(&s, "acme", "s1").await;
    let (mut p, _) = connect(s.addr, true, "acme/p", "p").await;
    let retained = |topic: &str, len: usize, id: u16| {
        let mut m = Publish::new(topic, vec![b'r'; len]);
        m.qos = QoS::AtLeastOnce;
        m.retain = true;
        m.packet_id = id;
        Packet::Publish(m)
    };
    p.send(retained("r", 59, 100)).await;
    assert!(
        matches!(p.recv().await, Packet::PubAck(a) if a.reason_code == ReasonCode::NoMatchingSubscribers)
    );
    // 60 retained + 30 owed fit in 100; 30 more do not.
    assert_eq!(
        puback(&mut p, "q", &[0; 29]).await,
        Some(ReasonCode::Success)
    );
    assert_eq!(
        puback(&mut p, "q", &[0; 29]).await,
        Some(ReasonCode::QuotaExceeded)
    );
    // Nor does a retained message of 11 bytes (90 + 11 > 100).
    p.send(retained("r2", 9, 101)).await;
    assert!(
        matches!(p.recv().await, Packet::PubAck(a) if a.reason_code == ReasonCode::QuotaExceeded)
    );
    assert_eq!(breaches(&s, "acme", Breach::Store), 2);
    assert_eq!(breaches(&s, "acme", Breach::Retained), 0);
}

#[tokio::test]
async fn outbound_bytes_per_tenant_are_held_back_not_dropped() {
    let s = acme_only(TenantLimits {
        outbound_bytes_per_sec: Some(2_000),
        ..TenantLimits::default()
    })
    .await;
    let (mut sub, _) = connect(s.addr, true, "acme/s", "s").await;
    sub.subscribe("t", QoS::AtLeastOnce).await;
    let (mut other, _) = connect(s.addr, true, "globex/s", "s").await;
    other.subscribe("t", QoS::AtLeastOnce).await;
    let (mut p, _) = connect(s.addr, true, "acme/p", "p").await;
    let (mut gp, _) = connect(s.addr, true, "globex/p", "p").await;
    let started = std::time::Instant::now();
    for i in 0..16u32 {
        let mut payload = vec![0u8; 500];
        payload[..4].copy_from_slice(&i.to_be_bytes());
        assert_eq!(
            puback(&mut p, "t", &payload).await,
            Some(ReasonCode::Success)
        );
        assert_eq!(
            puback(&mut gp, "t", &payload).await,
            Some(ReasonCode::Success)
        );
    }
    // 8 KB at 2 KB a second, the first second's worth at once: three seconds at least.
    let got = common::drain(&mut sub, 16).await;
    let waited = started.elapsed();
    let order: Vec<u32> = got
        .iter()
        .map(|p| u32::from_be_bytes(p.payload[..4].try_into().unwrap()))
        .collect();
    assert_eq!(
        order,
        (0..16).collect::<Vec<_>>(),
        "every message, in order"
    );
    assert!(
        waited >= std::time::Duration::from_millis(2_500),
        "{waited:?}"
    );
    assert!(breaches(&s, "acme", Breach::OutboundRate) > 0);
    // Another tenant's clients are not held back by acme's rate.
    assert_eq!(common::drain(&mut other, 16).await.len(), 16);
    assert_eq!(breaches(&s, "globex", Breach::OutboundRate), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn offline_quota_holds_exactly_with_eight_workers_queueing_at_once() {
    const SUBS: usize = 20;
    const PUBS: usize = 16;
    const EACH: usize = 40;
    const MAX: u64 = 500;
    let s = acme_only(TenantLimits {
        max_offline_queued_messages: Some(MAX),
        ..TenantLimits::default()
    })
    .await;
    for i in 0..SUBS {
        let id = format!("s{i}");
        let (mut c, _) = Raw::connect_with(s.addr, lasting("acme/a", &id, 600)).await;
        c.subscribe("q/#", QoS::AtLeastOnce).await;
        c.disconnect().await;
        common::until_offline_in(&s, "acme", &id).await;
    }
    // Every publisher at once, on eight workers: each copy is counted before it is checked.
    let addr = s.addr;
    let publishers: Vec<_> = (0..PUBS)
        .map(|i| {
            tokio::spawn(async move {
                let (mut p, _) = connect(addr, true, "acme/p", &format!("p{i}")).await;
                let mut codes = Vec::new();
                for n in 0..EACH {
                    codes.push(puback(&mut p, &format!("q/{i}/{n}"), b"x").await.unwrap());
                }
                codes
            })
        })
        .collect();
    let mut accepted = 0;
    for p in publishers {
        let codes = p.await.unwrap();
        accepted += codes.iter().filter(|c| **c == ReasonCode::Success).count();
        assert!(
            codes
                .iter()
                .all(|c| [ReasonCode::Success, ReasonCode::QuotaExceeded].contains(c)),
            "{codes:?}"
        );
    }
    let (_, owed, _) = usage(&s, "acme");
    assert_eq!(owed, MAX, "the bound is reached and never passed");
    assert!(accepted * SUBS <= MAX as usize, "{accepted} accepted");
    assert!(breaches(&s, "acme", Breach::OfflineQueue) > 0);
    // What each subscriber is owed is what it gets; then nothing is owed.
    let tenant = s.server.broker().find_tenant("acme").unwrap();
    let mut total = 0;
    for i in 0..SUBS {
        let id = format!("s{i}");
        let owed = tenant.sessions.get(&id).unwrap().lock().owed().0;
        total += owed;
        let (mut c, ack) = Raw::connect_with(s.addr, lasting("acme/a", &id, 600)).await;
        assert!(ack.session_present);
        for _ in 0..owed {
            let p = c.recv_publish().await;
            c.send(Packet::PubAck(mqtt_codec::Ack::new(p.packet_id)))
                .await;
        }
        c.disconnect().await;
    }
    assert_eq!(total as u64, MAX);
    common::eventually("nothing owed", || usage(&s, "acme").1 == 0).await;
}
