//! The session core driven packet by packet, with no socket and no runtime: a link's
//! answers are recorded as encoded bytes and decoded back.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use mqtt_codec::properties::PublishProperties;
use mqtt_codec::{
    Ack, Connect, EncodeError, Packet, ProtocolVersion, Publish, QoS, ReasonCode, Subscribe,
};

use super::connect::{Arrival, accept_now};
use super::{Link, Origin, Out, Will, WillFate};
use crate::broker::Broker;
use crate::broker::stats::CloseReason;
use crate::config::{Config, ListenerKind};
use crate::store::journal::Ticket;

/// Records what a link sends.
#[derive(Default)]
struct Recorder {
    bytes: BytesMut,
    gates: Vec<Ticket>,
}

impl Out for Recorder {
    fn packet(&mut self, packet: &Packet, version: ProtocolVersion) -> Result<(), EncodeError> {
        packet.encode(version, &mut self.bytes)
    }

    fn publish(&mut self, publish: &Publish, version: ProtocolVersion) -> Result<(), EncodeError> {
        publish.encode(version, &mut self.bytes)
    }

    fn bytes(&mut self, bytes: &Bytes) {
        self.bytes.extend_from_slice(bytes);
    }

    fn gate(&mut self, ticket: Ticket) {
        self.gates.push(ticket);
    }

    fn gate_peers(&mut self, n: u64) {
        assert_eq!(n, 0, "a broker on its own waits for no other node");
    }

    fn len(&self) -> usize {
        self.bytes.len()
    }
}

impl Recorder {
    /// The packets sent since the last call.
    fn take(&mut self, version: ProtocolVersion) -> Vec<Packet> {
        let mut packets = Vec::new();
        while let Some(p) = mqtt_codec::decode(&mut self.bytes, version, usize::MAX).unwrap() {
            packets.push(p);
        }
        assert!(self.bytes.is_empty(), "whole packets only");
        packets
    }
}

fn broker(config: Config) -> Arc<Broker> {
    Broker::new(config, 100)
}

/// A connection arriving from 127.0.0.1:`port` with `open` connections on the node.
fn arrival(open: u64, port: u16) -> Arrival {
    Arrival {
        open_connections: open,
        origin: Origin {
            peer: ([127, 0, 0, 1], port).into(),
            listener: ListenerKind::Mqtt,
            username: None,
        },
        cert_username: None,
        cert_tenant: None,
        v3_accept_refused: false,
    }
}

/// A link for `client_id`, its CONNACK taken.
fn connect_with(broker: &Arc<Broker>, connect: Connect) -> (Link, Recorder) {
    let arrival = arrival(1, 1);
    let v = connect.protocol;
    let accepted = accept_now(broker, connect, arrival).unwrap();
    let mut out = Recorder::default();
    let mut link = accepted.link;
    link.start(&mut out, accepted.connack, accepted.ticket)
        .unwrap();
    let packets = out.take(v);
    assert!(matches!(packets[0], Packet::ConnAck(_)), "{packets:?}");
    (link, out)
}

fn connect(broker: &Arc<Broker>, client_id: &str) -> (Link, Recorder) {
    connect_with(broker, Connect::new(ProtocolVersion::V5, client_id, 0))
}

fn publish(topic: &str, qos: QoS, packet_id: u16) -> Packet {
    let mut p = Publish::new(topic, Bytes::from_static(b"m"));
    p.qos = qos;
    p.packet_id = packet_id;
    Packet::Publish(p)
}

fn subscribe(link: &mut Link, out: &mut Recorder, filter: &str, qos: QoS) {
    link.handle(Packet::Subscribe(Subscribe::new(1, filter, qos)), out)
        .unwrap();
    assert!(matches!(out.take(link.version())[..], [Packet::SubAck(_)]));
}

fn ack_ids(packets: &[Packet]) -> Vec<(&'static str, u16)> {
    packets
        .iter()
        .map(|p| match p {
            Packet::PubAck(a) => ("puback", a.packet_id),
            Packet::PubRec(a) => ("pubrec", a.packet_id),
            Packet::PubRel(a) => ("pubrel", a.packet_id),
            Packet::PubComp(a) => ("pubcomp", a.packet_id),
            Packet::Publish(p) => ("publish", p.packet_id),
            other => panic!("unexpected {other:?}"),
        })
        .collect()
}

#[test]
fn inbound_qos2_is_routed_once_and_released_by_pubrel() {
    let b = broker(Config::default());
    let (mut sub, mut sub_out) = connect(&b, "sub");
    subscribe(&mut sub, &mut sub_out, "t", QoS::AtMostOnce);
    let (mut pubr, mut out) = connect(&b, "pub");
    let v = ProtocolVersion::V5;
    let handled = pubr
        .handle(publish("t", QoS::ExactlyOnce, 7), &mut out)
        .unwrap();
    assert_eq!(handled.matched, 1);
    // The same packet id again before PUBREL: acknowledged, not routed again.
    let again = pubr
        .handle(publish("t", QoS::ExactlyOnce, 7), &mut out)
        .unwrap();
    assert_eq!(
        again.matched, 0,
        "a re-sent QoS 2 PUBLISH is not delivered twice"
    );
    assert_eq!(ack_ids(&out.take(v)), [("pubrec", 7), ("pubrec", 7)]);
    pubr.handle(Packet::PubRel(Ack::new(7)), &mut out).unwrap();
    let comp = out.take(v);
    assert_eq!(ack_ids(&comp), [("pubcomp", 7)]);
    pubr.handle(Packet::PubRel(Ack::new(7)), &mut out).unwrap();
    match &out.take(v)[..] {
        [Packet::PubComp(a)] => {
            assert_eq!(a.reason_code, ReasonCode::PacketIdentifierNotFound)
        }
        other => panic!("{other:?}"),
    }
    sub.pump(&mut sub_out).unwrap();
    assert_eq!(sub_out.take(v).len(), 1, "delivered exactly once");
}

#[test]
fn outbound_qos2_goes_publish_pubrec_pubrel_pubcomp() {
    let b = broker(Config::default());
    let (mut sub, mut out) = connect(&b, "sub");
    let v = ProtocolVersion::V5;
    subscribe(&mut sub, &mut out, "t", QoS::ExactlyOnce);
    let (mut pubr, mut pub_out) = connect(&b, "pub");
    pubr.handle(publish("t", QoS::ExactlyOnce, 1), &mut pub_out)
        .unwrap();
    sub.pump(&mut out).unwrap();
    let sent = out.take(v);
    let [Packet::Publish(p)] = &sent[..] else {
        panic!("{sent:?}")
    };
    assert_eq!(p.qos, QoS::ExactlyOnce);
    let id = p.packet_id;
    sub.handle(Packet::PubRec(Ack::new(id)), &mut out).unwrap();
    assert_eq!(ack_ids(&out.take(v)), [("pubrel", id)]);
    assert_eq!(sub.session().lock().inflight.len(), 1, "released, not done");
    sub.handle(Packet::PubComp(Ack::new(id)), &mut out).unwrap();
    assert!(sub.session().lock().inflight.is_empty());
    // A PUBREC for nothing in flight is answered "not found" (v5).
    sub.handle(Packet::PubRec(Ack::new(99)), &mut out).unwrap();
    match &out.take(v)[..] {
        [Packet::PubRel(a)] => assert_eq!(a.reason_code, ReasonCode::PacketIdentifierNotFound),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_resumed_session_resends_in_order_with_dup() {
    let b = broker(Config::default());
    let mut c = Connect::new(ProtocolVersion::V5, "sub", 0);
    c.properties.session_expiry_interval = Some(60);
    let (mut sub, mut out) = connect_with(&b, c.clone());
    let v = ProtocolVersion::V5;
    subscribe(&mut sub, &mut out, "t/#", QoS::AtLeastOnce);
    let (mut pubr, mut pub_out) = connect(&b, "pub");
    for (i, topic) in ["t/1", "t/2", "t/3"].into_iter().enumerate() {
        pubr.handle(publish(topic, QoS::AtLeastOnce, i as u16 + 1), &mut pub_out)
            .unwrap();
    }
    sub.pump(&mut out).unwrap();
    let first: Vec<(String, u16, bool)> = out
        .take(v)
        .into_iter()
        .map(|p| match p {
            Packet::Publish(p) => (p.topic.to_string(), p.packet_id, p.dup),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(first.len(), 3);
    assert!(first.iter().all(|(_, _, dup)| !dup));
    // The client acknowledges the second only, then comes back on a new connection.
    sub.handle(Packet::PubAck(Ack::new(first[1].1)), &mut out)
        .unwrap();
    c.clean_start = false;
    let arrival = arrival(2, 2);
    let accepted = accept_now(&b, c, arrival).unwrap();
    assert!(accepted.connack.session_present);
    assert_eq!(
        sub.check_signal().unwrap_err().reason,
        CloseReason::SessionTakenOver,
        "the old connection sees it was replaced"
    );
    let mut resumed = accepted.link;
    let mut out2 = Recorder::default();
    resumed
        .start(&mut out2, accepted.connack, accepted.ticket)
        .unwrap();
    let again: Vec<(String, u16, bool)> = out2
        .take(v)
        .into_iter()
        .skip(1)
        .map(|p| match p {
            Packet::Publish(p) => (p.topic.to_string(), p.packet_id, p.dup),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        again,
        [
            (first[0].0.clone(), first[0].1, true),
            (first[2].0.clone(), first[2].1, true)
        ],
        "what was not acknowledged, in order, with DUP and the same packet ids"
    );
}

#[test]
fn the_clients_receive_maximum_bounds_what_is_in_flight() {
    let b = broker(Config::default());
    let mut c = Connect::new(ProtocolVersion::V5, "sub", 0);
    c.properties.receive_maximum = Some(2);
    let (mut sub, mut out) = connect_with(&b, c);
    let v = ProtocolVersion::V5;
    subscribe(&mut sub, &mut out, "t", QoS::AtLeastOnce);
    let (mut pubr, mut pub_out) = connect(&b, "pub");
    for id in 1..=5 {
        pubr.handle(publish("t", QoS::AtLeastOnce, id), &mut pub_out)
            .unwrap();
    }
    sub.pump(&mut out).unwrap();
    let sent = ack_ids(&out.take(v));
    assert_eq!(sent.len(), 2, "two in flight at most: {sent:?}");
    sub.handle(Packet::PubAck(Ack::new(sent[0].1)), &mut out)
        .unwrap();
    sub.pump(&mut out).unwrap();
    assert_eq!(out.take(v).len(), 1, "one acknowledged, one more sent");
    assert_eq!(sub.session().lock().queue.len(), 2);
}

#[test]
fn inbound_qos2_past_herald_receive_maximum_closes() {
    let mut config = Config::default();
    config.limits.receive_maximum = 2;
    let b = broker(config);
    let (mut link, mut out) = connect(&b, "pub");
    for id in 1..=2 {
        link.handle(publish("t", QoS::ExactlyOnce, id), &mut out)
            .unwrap();
    }
    let closing = link
        .handle(publish("t", QoS::ExactlyOnce, 3), &mut out)
        .unwrap_err();
    assert_eq!(closing.reason, CloseReason::ReceiveMaximumExceeded);
}

fn aliased(topic: &str, alias: u16) -> Packet {
    let mut p = Publish::new(topic, Bytes::from_static(b"m"));
    p.properties = PublishProperties {
        topic_alias: Some(alias),
        ..Default::default()
    };
    Packet::Publish(p)
}

#[test]
fn topic_aliases_are_set_used_and_bounded() {
    let mut config = Config::default();
    config.limits.topic_alias_maximum = 2;
    let b = broker(config);
    let (mut sub, mut sub_out) = connect(&b, "sub");
    subscribe(&mut sub, &mut sub_out, "a/b", QoS::AtMostOnce);
    let (mut link, mut out) = connect(&b, "pub");
    assert_eq!(link.handle(aliased("a/b", 1), &mut out).unwrap().matched, 1);
    assert_eq!(
        link.handle(aliased("", 1), &mut out).unwrap().matched,
        1,
        "the alias stands for a/b"
    );
    let never_set = link.handle(aliased("", 2), &mut out).unwrap_err();
    assert_eq!(never_set.code, Some(ReasonCode::ProtocolError));
    assert!(link.rule().is_some(), "the rule is kept for the log");
    let (mut link, mut out) = connect(&b, "pub2");
    let past = link.handle(aliased("a/b", 3), &mut out).unwrap_err();
    assert_eq!(past.reason, CloseReason::TopicAliasInvalid);
}

#[test]
fn outbound_aliases_replace_topics_the_client_accepts() {
    let b = broker(Config::default());
    let mut c = Connect::new(ProtocolVersion::V5, "sub", 0);
    c.properties.topic_alias_maximum = Some(1);
    let (mut sub, mut out) = connect_with(&b, c);
    subscribe(&mut sub, &mut out, "#", QoS::AtMostOnce);
    let (mut pubr, mut pub_out) = connect(&b, "pub");
    for topic in ["x/1", "x/1", "x/2"] {
        pubr.handle(publish(topic, QoS::AtMostOnce, 0), &mut pub_out)
            .unwrap();
    }
    sub.pump(&mut out).unwrap();
    let seen: Vec<(String, Option<u16>)> = out
        .take(ProtocolVersion::V5)
        .into_iter()
        .map(|p| match p {
            Packet::Publish(p) => (p.topic.to_string(), p.properties.topic_alias),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("x/1".to_string(), Some(1)),
            (String::new(), Some(1)),
            ("x/2".to_string(), None)
        ],
        "one alias allowed: the first topic gets it, the next goes in full"
    );
}

#[test]
fn a_will_waits_for_the_lower_of_its_delay_and_the_session_expiry() {
    let will = |delay| Will {
        topic: "w".into(),
        payload: Bytes::from_static(b"gone"),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: Default::default(),
        delay,
    };
    assert_eq!(will(30).fate(false, false, false, 10), WillFate::After(10));
    assert_eq!(will(5).fate(false, false, false, 3600), WillFate::After(5));
    assert_eq!(
        will(30).fate(false, false, false, 0),
        WillFate::Publish,
        "a session that ends with its connection publishes the will at once"
    );
    assert_eq!(will(0).fate(false, false, false, 3600), WillFate::Publish);
    assert_eq!(
        will(30).fate(true, false, true, 3600),
        WillFate::Forget,
        "resumed within the delay [MQTT-3.1.3-9]"
    );
    assert_eq!(
        will(0).fate(true, false, true, 3600),
        WillFate::Publish,
        "no delay: a takeover publishes it"
    );
    assert_eq!(
        will(30).fate(true, true, true, 3600),
        WillFate::Publish,
        "a clean-start takeover ended the session"
    );
}

#[test]
fn a_will_with_a_delay_on_a_session_that_ends_is_published_when_it_ends() {
    let b = broker(Config::default());
    let (mut sub, mut sub_out) = connect(&b, "sub");
    subscribe(&mut sub, &mut sub_out, "w", QoS::AtLeastOnce);
    let mut c = Connect::new(ProtocolVersion::V5, "dev", 0);
    c.will = Some(mqtt_codec::LastWill {
        topic: "w".into(),
        payload: Bytes::from_static(b"gone"),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: mqtt_codec::properties::WillProperties {
            will_delay_interval: Some(30),
            ..Default::default()
        },
    });
    let (link, _) = connect_with(&b, c);
    // Session expiry 0: no timer is needed (none could run here, there is no runtime).
    link.end(CloseReason::IoError);
    sub.pump(&mut sub_out).unwrap();
    match &sub_out.take(ProtocolVersion::V5)[..] {
        [Packet::Publish(p)] => assert_eq!(&p.payload[..], b"gone"),
        other => panic!("{other:?}"),
    }
}

/// A hook that refuses what names `secret`, and counts what it sees.
#[derive(Debug, Default)]
struct Guard {
    observed: std::sync::atomic::AtomicUsize,
    /// Publish authorizations asked (the rest came from the connection's cache).
    checks: std::sync::atomic::AtomicUsize,
    generation: std::sync::atomic::AtomicU64,
}

impl crate::broker::hooks::Hook for Guard {
    fn authenticate<'a>(
        &'a self,
        credentials: &'a crate::broker::hooks::Credentials<'a>,
    ) -> crate::broker::hooks::BoxFuture<'a, Result<crate::broker::hooks::Authenticated, ReasonCode>>
    {
        let answer = match credentials.username {
            Some("mallory") => Err(ReasonCode::BadUserNameOrPassword),
            _ => Ok(crate::broker::hooks::Authenticated::plain(credentials)),
        };
        Box::pin(std::future::ready(answer))
    }

    fn authorize_subscribe(
        &self,
        actor: crate::broker::hooks::Actor<'_>,
        filter: &str,
    ) -> Result<(), ReasonCode> {
        assert_eq!(actor.identity.username.as_deref(), Some("alice"));
        match filter.contains("secret") {
            true => Err(ReasonCode::NotAuthorized),
            false => Ok(()),
        }
    }

    fn authorize_publish(
        &self,
        _actor: crate::broker::hooks::Actor<'_>,
        topic: &str,
    ) -> Result<(), ReasonCode> {
        self.checks
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        match topic.contains("secret") {
            true => Err(ReasonCode::NotAuthorized),
            false => Ok(()),
        }
    }

    fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn observe(
        &self,
        _tenant: &str,
        _message: &crate::broker::message::Message,
        routed: &crate::broker::router::Routed,
    ) {
        self.observed
            .fetch_add(routed.matched, std::sync::atomic::Ordering::Relaxed);
    }
}

#[test]
fn hooks_authenticate_authorize_and_observe() {
    let guard = Arc::new(Guard::default());
    let hooks = crate::broker::hooks::Hooks::new(guard.clone());
    let b = Broker::with_hooks(Config::default(), 100, None, hooks);
    let mut bad = Connect::new(ProtocolVersion::V5, "m", 0);
    bad.username = Some("mallory".into());
    let arrival = arrival(1, 1);
    let refused = accept_now(&b, bad, arrival).err();
    assert_eq!(
        refused,
        Some((ReasonCode::BadUserNameOrPassword, ProtocolVersion::V5))
    );
    assert!(
        b.default_tenant.sessions.get("m").is_none(),
        "no session attached"
    );

    let mut alice = Connect::new(ProtocolVersion::V5, "a", 0);
    alice.username = Some("alice".into());
    let (mut link, mut out) = connect_with(&b, alice);
    let v = ProtocolVersion::V5;
    link.handle(
        Packet::Subscribe(Subscribe::new(1, "secret/#", QoS::AtLeastOnce)),
        &mut out,
    )
    .unwrap();
    match &out.take(v)[..] {
        [Packet::SubAck(s)] => assert_eq!(s.reason_codes, [ReasonCode::NotAuthorized]),
        other => panic!("{other:?}"),
    }
    subscribe(&mut link, &mut out, "open/#", QoS::AtLeastOnce);
    link.handle(publish("secret/x", QoS::AtLeastOnce, 5), &mut out)
        .unwrap();
    match &out.take(v)[..] {
        [Packet::PubAck(a)] => assert_eq!(a.reason_code, ReasonCode::NotAuthorized),
        other => panic!("{other:?}"),
    }
    link.handle(publish("open/x", QoS::AtLeastOnce, 6), &mut out)
        .unwrap();
    assert_eq!(ack_ids(&out.take(v)), [("puback", 6)]);
    assert_eq!(
        guard.observed.load(std::sync::atomic::Ordering::Relaxed),
        1,
        "the refused publication was never routed; the other matched once"
    );
    // Decisions are cached per connection, by topic, until the rules' generation changes.
    let checks = || guard.checks.load(std::sync::atomic::Ordering::Relaxed);
    let before = checks();
    for id in 7..10 {
        link.handle(publish("secret/x", QoS::AtLeastOnce, id), &mut out)
            .unwrap();
        link.handle(publish("open/x", QoS::AtLeastOnce, id + 10), &mut out)
            .unwrap();
    }
    assert_eq!(checks(), before, "both topics' decisions were cached");
    guard
        .generation
        .store(1, std::sync::atomic::Ordering::Relaxed);
    link.handle(publish("secret/x", QoS::AtLeastOnce, 30), &mut out)
        .unwrap();
    assert_eq!(checks(), before + 1, "a new generation asks again");
    let acks = out.take(v);
    let denied = acks
        .iter()
        .filter(|p| matches!(p, Packet::PubAck(a) if a.reason_code == ReasonCode::NotAuthorized))
        .count();
    assert_eq!(denied, 4, "cached denials still deny: {acks:?}");
}
