//! Cross-check of mqtt-codec against an independent implementation: the packet codecs of
//! `rumqttc` 0.25 (`rumqttc::mqttbytes::v4` for MQTT 3.1.1, `rumqttc::v5::mqttbytes::v5` for
//! MQTT 5.0).
//!
//! Our unit tests check the codec against our own reading of the specification, and a mistake
//! made the same way in our encoder and our decoder round-trips without complaint. A second
//! implementation, written by other people, catches those. Every packet type of both versions
//! is checked in both directions:
//!
//! - (a) rumqttc builds and encodes the packet, we decode it, and our result must equal the
//!   packet we expect, built field by field;
//! - (b) we build and encode the packet, rumqttc decodes it, and its result must equal the
//!   rumqttc value we expect;
//!
//! and where both sides use the canonical encoding (the shortest form, properties in the order
//! the specification lists them) the two byte strings must be equal.
//! The expected rumqttc value is derived from ours by `to_r4` / `to_r5`, a mapping written
//! from what each field means in the specification, not from either codec.
//!
//! rumqttc is not a reference. Where it deviates from the specification or cannot represent
//! something, only the affected case or field is left out, with a comment saying why, and
//! `rumqttc_deviations` pins each such behaviour so that an upgrade which fixes one shows up
//! here. MQTT 3.1 (`MQIsdp`) is not covered: rumqttc speaks only 3.1.1 and 5.0.

use bytes::{Bytes, BytesMut};
use mqtt_codec::properties::{
    AckProperties, AuthProperties, ConnAckProperties, ConnectProperties, DisconnectProperties,
    PublishProperties, SubscribeProperties, UnsubscribeProperties, UserProperties, WillProperties,
};
use mqtt_codec::{
    Ack, Auth, ByteString, ConnAck, Connect, DecodeError, Disconnect, LastWill, MAX_PACKET_SIZE,
    Packet, PacketType, PropertyId, ProtocolVersion, Publish, QoS, ReasonCode, RetainHandling,
    SubAck, Subscribe, Subscription, SubscriptionOptions, TopicError, UnsubAck, Unsubscribe,
    decode,
};
use rumqttc::mqttbytes::v4 as r4;
use rumqttc::v5::mqttbytes::v5 as r5;

type R4Error = rumqttc::mqttbytes::Error;
type R5Error = rumqttc::v5::mqttbytes::Error;

const V4: ProtocolVersion = ProtocolVersion::V3_1_1;
const V5: ProtocolVersion = ProtocolVersion::V5;

// ---------------------------------------------------------------------------------------------
// Reading and writing with each codec.
// ---------------------------------------------------------------------------------------------

/// Decodes one packet with our codec; a packet that decodes must use every byte given.
fn ours_read(bytes: &[u8], version: ProtocolVersion) -> Result<Packet, DecodeError> {
    let mut buf = BytesMut::from(bytes);
    let packet = decode(&mut buf, version, MAX_PACKET_SIZE)?.expect("a whole packet");
    assert!(
        buf.is_empty(),
        "{} bytes left after {packet:?} in {bytes:02x?}",
        buf.len()
    );
    Ok(packet)
}

fn ours_write(packet: &Packet, version: ProtocolVersion) -> Bytes {
    packet
        .to_bytes(version)
        .unwrap_or_else(|e| panic!("we cannot encode {packet:?}: {e}"))
}

fn r4_write(packet: &r4::Packet) -> Bytes {
    let mut buf = BytesMut::new();
    packet
        .write(&mut buf, usize::MAX)
        .unwrap_or_else(|e| panic!("rumqttc cannot encode {packet:?}: {e}"));
    buf.freeze()
}

/// Decodes one packet with rumqttc's 3.1.1 codec; a packet that decodes must use every byte.
fn r4_read(bytes: &[u8]) -> Result<r4::Packet, R4Error> {
    let mut buf = BytesMut::from(bytes);
    let packet = r4::Packet::read(&mut buf, usize::MAX)?;
    assert!(buf.is_empty(), "rumqttc left bytes of {bytes:02x?}");
    Ok(packet)
}

fn r5_write(packet: &r5::Packet) -> Bytes {
    let mut buf = BytesMut::new();
    packet
        .write(&mut buf, None)
        .unwrap_or_else(|e| panic!("rumqttc cannot encode {packet:?}: {e}"));
    buf.freeze()
}

/// Decodes one packet with rumqttc's 5.0 codec; a packet that decodes must use every byte.
fn r5_read(bytes: &[u8]) -> Result<r5::Packet, R5Error> {
    let mut buf = BytesMut::from(bytes);
    let packet = r5::Packet::read(&mut buf, None)?;
    assert!(buf.is_empty(), "rumqttc left bytes of {bytes:02x?}");
    Ok(packet)
}

/// rumqttc's `Packet::read` does not know AUTH (its packet types stop at 14), but its AUTH
/// reader exists: frame the packet with rumqttc's `check` and call it.
fn r5_read_auth(bytes: &[u8]) -> Result<r5::Auth, R5Error> {
    let header = r5::check(bytes.iter(), None)?;
    assert_eq!(header.frame_length(), bytes.len(), "one AUTH packet");
    r5::Auth::read(header, Bytes::copy_from_slice(bytes))
}

/// Same for DISCONNECT: `Packet::read` refuses a DISCONNECT of remaining length 0 (see
/// `rumqttc_deviations`), `Disconnect::read` accepts it.
fn r5_read_disconnect(bytes: &[u8]) -> Result<r5::Disconnect, R5Error> {
    let header = r5::check(bytes.iter(), None)?;
    assert_eq!(header.frame_length(), bytes.len(), "one DISCONNECT packet");
    r5::Disconnect::read(header, Bytes::copy_from_slice(bytes))
}

/// How the two encoders' bytes for one packet compare.
#[derive(Debug, Clone, Copy)]
enum Wire {
    /// Both use the canonical encoding (shortest form, properties in the specification's order;
    /// 5.0 lets properties come in any order): the bytes must be equal.
    Same,
    /// Both encodings are valid and they differ, for the reason given.
    Differs(&'static str),
}

/// Both directions for an MQTT 3.1.1 packet, whose encoding is always unique.
fn cross_v4(ours: &Packet) {
    let theirs = to_r4(ours);
    // (a) rumqttc encodes, we decode.
    let their_bytes = r4_write(&theirs);
    assert_eq!(
        ours_read(&their_bytes, V4).as_ref(),
        Ok(ours),
        "(a) rumqttc → ours, 3.1.1 bytes {their_bytes:02x?}"
    );
    // (b) we encode, rumqttc decodes.
    let our_bytes = ours_write(ours, V4);
    let back = r4_read(&our_bytes)
        .unwrap_or_else(|e| panic!("(b) rumqttc cannot read our {our_bytes:02x?}: {e}"));
    assert_eq!(
        back, theirs,
        "(b) ours → rumqttc, 3.1.1 bytes {our_bytes:02x?}"
    );
    assert_eq!(our_bytes, their_bytes, "3.1.1 bytes of {ours:?}");
}

/// Both directions for an MQTT 5.0 packet.
fn cross_v5(ours: &Packet, wire: Wire) {
    let theirs = to_r5(ours);
    // (a) rumqttc encodes, we decode.
    let their_bytes = r5_write(&theirs);
    assert_eq!(
        ours_read(&their_bytes, V5).as_ref(),
        Ok(ours),
        "(a) rumqttc → ours, 5.0 bytes {their_bytes:02x?}"
    );
    // (b) we encode, rumqttc decodes.
    let our_bytes = ours_write(ours, V5);
    let back = r5_read(&our_bytes)
        .unwrap_or_else(|e| panic!("(b) rumqttc cannot read our {our_bytes:02x?}: {e}"));
    assert_eq!(
        back, theirs,
        "(b) ours → rumqttc, 5.0 bytes {our_bytes:02x?}"
    );
    match wire {
        Wire::Same => assert_eq!(our_bytes, their_bytes, "5.0 bytes of {ours:?}"),
        Wire::Differs(why) => assert_ne!(our_bytes, their_bytes, "expected to differ: {why}"),
    }
}

// ---------------------------------------------------------------------------------------------
// The mapping: our packet, as the rumqttc value that means the same.
// ---------------------------------------------------------------------------------------------

fn r4_qos(qos: QoS) -> rumqttc::mqttbytes::QoS {
    match qos {
        QoS::AtMostOnce => rumqttc::mqttbytes::QoS::AtMostOnce,
        QoS::AtLeastOnce => rumqttc::mqttbytes::QoS::AtLeastOnce,
        QoS::ExactlyOnce => rumqttc::mqttbytes::QoS::ExactlyOnce,
    }
}

fn r5_qos(qos: QoS) -> rumqttc::v5::mqttbytes::QoS {
    match qos {
        QoS::AtMostOnce => rumqttc::v5::mqttbytes::QoS::AtMostOnce,
        QoS::AtLeastOnce => rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
        QoS::ExactlyOnce => rumqttc::v5::mqttbytes::QoS::ExactlyOnce,
    }
}

fn string(s: &ByteString) -> String {
    String::from(&**s)
}

fn opt_string(s: &Option<ByteString>) -> Option<String> {
    s.as_deref().map(str::to_owned)
}

fn users(list: &UserProperties) -> Vec<(String, String)> {
    list.iter().map(|(k, v)| (string(k), string(v))).collect()
}

fn flag(b: Option<bool>) -> Option<u8> {
    b.map(u8::from)
}

/// rumqttc reads an empty property block as `None` and writes `None` as an empty block.
fn unless_empty<P: Default + PartialEq, R>(p: &P, f: impl FnOnce(&P) -> R) -> Option<R> {
    (*p != P::default()).then(|| f(p))
}

/// rumqttc keeps user name and password together, both as `String`s, an empty string meaning
/// "absent". Deviation: the password is Binary Data (5.0 §3.1.3.6, 3.1.1 §3.1.3.5), so test passwords are UTF-8,
/// and a present but empty user name or password cannot be expressed, so tests use none.
fn login(username: &Option<ByteString>, password: &Option<Bytes>) -> Option<(String, String)> {
    if username.is_none() && password.is_none() {
        return None;
    }
    let username = opt_string(username).unwrap_or_default();
    let password = password
        .as_ref()
        .map(|p| String::from_utf8(p.to_vec()).expect("rumqttc passwords are UTF-8 strings"))
        .unwrap_or_default();
    assert!(
        !username.is_empty() || !password.is_empty(),
        "rumqttc cannot send an empty user name or password"
    );
    Some((username, password))
}

/// The 3.1.1 CONNACK return code (§3.2.2.3 of 3.1.1) for the six codes 3.1.1 has.
fn r4_connack_code(rc: ReasonCode) -> r4::ConnectReturnCode {
    use r4::ConnectReturnCode as C;
    match rc {
        ReasonCode::Success => C::Success,
        ReasonCode::UnsupportedProtocolVersion => C::RefusedProtocolVersion,
        ReasonCode::ClientIdentifierNotValid => C::BadClientId,
        ReasonCode::ServerUnavailable => C::ServiceUnavailable,
        ReasonCode::BadUserNameOrPassword => C::BadUserNamePassword,
        ReasonCode::NotAuthorized => C::NotAuthorized,
        other => panic!("{other:?} has no 3.1.1 return code of its own"),
    }
}

fn r4_suback_code(rc: ReasonCode) -> r4::SubscribeReasonCode {
    use rumqttc::mqttbytes::QoS as Q;
    match rc {
        ReasonCode::Success => r4::SubscribeReasonCode::Success(Q::AtMostOnce),
        ReasonCode::GrantedQoS1 => r4::SubscribeReasonCode::Success(Q::AtLeastOnce),
        ReasonCode::GrantedQoS2 => r4::SubscribeReasonCode::Success(Q::ExactlyOnce),
        ReasonCode::UnspecifiedError => r4::SubscribeReasonCode::Failure,
        other => panic!("{other:?} is not a 3.1.1 SUBACK return code"),
    }
}

/// Our packet as rumqttc's 3.1.1 value. Only fields 3.1.1 has may be set.
fn to_r4(packet: &Packet) -> r4::Packet {
    match packet {
        Packet::Connect(c) => {
            assert_eq!(c.protocol, V4, "rumqttc's v4 codec speaks 3.1.1");
            r4::Packet::Connect(r4::Connect {
                protocol: rumqttc::mqttbytes::Protocol::V4,
                keep_alive: c.keep_alive,
                client_id: string(&c.client_id),
                clean_session: c.clean_start,
                last_will: c.will.as_ref().map(|w| r4::LastWill {
                    topic: string(&w.topic),
                    message: w.payload.clone(),
                    qos: r4_qos(w.qos),
                    retain: w.retain,
                }),
                login: login(&c.username, &c.password)
                    .map(|(username, password)| r4::Login { username, password }),
            })
        }
        Packet::ConnAck(a) => r4::Packet::ConnAck(r4::ConnAck {
            session_present: a.session_present,
            code: r4_connack_code(a.reason_code),
        }),
        Packet::Publish(p) => r4::Packet::Publish(r4::Publish {
            dup: p.dup,
            qos: r4_qos(p.qos),
            retain: p.retain,
            topic: string(&p.topic),
            pkid: p.packet_id,
            payload: p.payload.clone(),
        }),
        Packet::PubAck(a) => r4::Packet::PubAck(r4::PubAck { pkid: a.packet_id }),
        Packet::PubRec(a) => r4::Packet::PubRec(r4::PubRec { pkid: a.packet_id }),
        Packet::PubRel(a) => r4::Packet::PubRel(r4::PubRel { pkid: a.packet_id }),
        Packet::PubComp(a) => r4::Packet::PubComp(r4::PubComp { pkid: a.packet_id }),
        Packet::Subscribe(s) => r4::Packet::Subscribe(r4::Subscribe {
            pkid: s.packet_id,
            filters: s
                .subscriptions
                .iter()
                .map(|sub| r4::SubscribeFilter {
                    path: string(&sub.filter),
                    qos: r4_qos(sub.options.qos),
                })
                .collect(),
        }),
        Packet::SubAck(a) => r4::Packet::SubAck(r4::SubAck {
            pkid: a.packet_id,
            return_codes: a
                .reason_codes
                .iter()
                .map(|rc| r4_suback_code(*rc))
                .collect(),
        }),
        Packet::Unsubscribe(u) => r4::Packet::Unsubscribe(r4::Unsubscribe {
            pkid: u.packet_id,
            topics: u.filters.iter().map(string).collect(),
        }),
        Packet::UnsubAck(a) => r4::Packet::UnsubAck(r4::UnsubAck { pkid: a.packet_id }),
        Packet::PingReq => r4::Packet::PingReq,
        Packet::PingResp => r4::Packet::PingResp,
        Packet::Disconnect(_) => r4::Packet::Disconnect,
        Packet::Auth(_) => panic!("AUTH does not exist in MQTT 3.1.1"),
    }
}

fn r5_connack_code(rc: ReasonCode) -> r5::ConnectReturnCode {
    use r5::ConnectReturnCode as C;
    match rc {
        ReasonCode::Success => C::Success,
        ReasonCode::UnspecifiedError => C::UnspecifiedError,
        ReasonCode::MalformedPacket => C::MalformedPacket,
        ReasonCode::ProtocolError => C::ProtocolError,
        ReasonCode::ImplementationSpecificError => C::ImplementationSpecificError,
        ReasonCode::UnsupportedProtocolVersion => C::UnsupportedProtocolVersion,
        ReasonCode::ClientIdentifierNotValid => C::ClientIdentifierNotValid,
        ReasonCode::BadUserNameOrPassword => C::BadUserNamePassword,
        ReasonCode::NotAuthorized => C::NotAuthorized,
        ReasonCode::ServerUnavailable => C::ServerUnavailable,
        ReasonCode::ServerBusy => C::ServerBusy,
        ReasonCode::Banned => C::Banned,
        ReasonCode::BadAuthenticationMethod => C::BadAuthenticationMethod,
        ReasonCode::TopicNameInvalid => C::TopicNameInvalid,
        ReasonCode::PacketTooLarge => C::PacketTooLarge,
        ReasonCode::QuotaExceeded => C::QuotaExceeded,
        ReasonCode::PayloadFormatInvalid => C::PayloadFormatInvalid,
        ReasonCode::RetainNotSupported => C::RetainNotSupported,
        ReasonCode::QoSNotSupported => C::QoSNotSupported,
        ReasonCode::UseAnotherServer => C::UseAnotherServer,
        ReasonCode::ServerMoved => C::ServerMoved,
        ReasonCode::ConnectionRateExceeded => C::ConnectionRateExceeded,
        other => panic!("{other:?} is not a CONNACK reason code"),
    }
}

/// PUBACK and PUBREC allow the same reason codes (§3.4.2.1, §3.5.2.1); rumqttc has an enum
/// for each.
macro_rules! publish_ack_reason {
    ($reason:ident, $rc:expr) => {
        match $rc {
            ReasonCode::Success => r5::$reason::Success,
            ReasonCode::NoMatchingSubscribers => r5::$reason::NoMatchingSubscribers,
            ReasonCode::UnspecifiedError => r5::$reason::UnspecifiedError,
            ReasonCode::ImplementationSpecificError => r5::$reason::ImplementationSpecificError,
            ReasonCode::NotAuthorized => r5::$reason::NotAuthorized,
            ReasonCode::TopicNameInvalid => r5::$reason::TopicNameInvalid,
            ReasonCode::PacketIdentifierInUse => r5::$reason::PacketIdentifierInUse,
            ReasonCode::QuotaExceeded => r5::$reason::QuotaExceeded,
            ReasonCode::PayloadFormatInvalid => r5::$reason::PayloadFormatInvalid,
            other => panic!("{other:?} is not a {} code", stringify!($reason)),
        }
    };
}

/// PUBREL and PUBCOMP allow Success and Packet Identifier not found (§3.6.2.1, §3.7.2.1).
macro_rules! release_reason {
    ($reason:ident, $rc:expr) => {
        match $rc {
            ReasonCode::Success => r5::$reason::Success,
            ReasonCode::PacketIdentifierNotFound => r5::$reason::PacketIdentifierNotFound,
            other => panic!("{other:?} is not a {} code", stringify!($reason)),
        }
    };
}

/// The ack properties (Reason String, User Property) as rumqttc's per-packet struct.
macro_rules! ack_properties {
    ($props:ident, $p:expr) => {
        unless_empty($p, |p: &AckProperties| r5::$props {
            reason_string: opt_string(&p.reason_string),
            user_properties: users(&p.user_properties),
        })
    };
}

/// rumqttc's SUBACK enum has both `Failure` and `Unspecified` for 0x80; its reader yields
/// `Unspecified`, which is the 5.0 name.
fn r5_suback_code(rc: ReasonCode) -> r5::SubscribeReasonCode {
    use r5::SubscribeReasonCode as C;
    use rumqttc::v5::mqttbytes::QoS as Q;
    match rc {
        ReasonCode::Success => C::Success(Q::AtMostOnce),
        ReasonCode::GrantedQoS1 => C::Success(Q::AtLeastOnce),
        ReasonCode::GrantedQoS2 => C::Success(Q::ExactlyOnce),
        ReasonCode::UnspecifiedError => C::Unspecified,
        ReasonCode::ImplementationSpecificError => C::ImplementationSpecific,
        ReasonCode::NotAuthorized => C::NotAuthorized,
        ReasonCode::TopicFilterInvalid => C::TopicFilterInvalid,
        ReasonCode::PacketIdentifierInUse => C::PkidInUse,
        ReasonCode::QuotaExceeded => C::QuotaExceeded,
        ReasonCode::SharedSubscriptionsNotSupported => C::SharedSubscriptionsNotSupported,
        ReasonCode::SubscriptionIdentifiersNotSupported => C::SubscriptionIdNotSupported,
        ReasonCode::WildcardSubscriptionsNotSupported => C::WildcardSubscriptionsNotSupported,
        other => panic!("{other:?} is not a SUBACK reason code"),
    }
}

fn r5_unsuback_code(rc: ReasonCode) -> r5::UnsubAckReason {
    use r5::UnsubAckReason as C;
    match rc {
        ReasonCode::Success => C::Success,
        ReasonCode::NoSubscriptionExisted => C::NoSubscriptionExisted,
        ReasonCode::UnspecifiedError => C::UnspecifiedError,
        ReasonCode::ImplementationSpecificError => C::ImplementationSpecificError,
        ReasonCode::NotAuthorized => C::NotAuthorized,
        ReasonCode::TopicFilterInvalid => C::TopicFilterInvalid,
        ReasonCode::PacketIdentifierInUse => C::PacketIdentifierInUse,
        other => panic!("{other:?} is not an UNSUBACK reason code"),
    }
}

/// rumqttc's DISCONNECT enum carries the wire values as its discriminants (§3.14.2.1), so
/// the value is the mapping.
fn r5_disconnect_code(rc: ReasonCode) -> r5::DisconnectReasonCode {
    let code = r5::DisconnectReasonCode::try_from(rc as u8)
        .unwrap_or_else(|e| panic!("{rc:?} is not a DISCONNECT reason code: {e}"));
    assert_eq!(code as u8, rc as u8);
    code
}

fn r5_retain_rule(rh: RetainHandling) -> r5::RetainForwardRule {
    match rh {
        RetainHandling::OnSubscribe => r5::RetainForwardRule::OnEverySubscribe,
        RetainHandling::OnNewSubscription => r5::RetainForwardRule::OnNewSubscribe,
        RetainHandling::Never => r5::RetainForwardRule::Never,
    }
}

/// Our packet as rumqttc's 5.0 value. AUTH is not mapped: rumqttc does not export the types of
/// its fields (see `auth_v5`).
fn to_r5(packet: &Packet) -> r5::Packet {
    match packet {
        Packet::Connect(c) => {
            assert_eq!(c.protocol, V5, "rumqttc's v5 codec speaks 5.0");
            let connect = r5::Connect {
                keep_alive: c.keep_alive,
                client_id: string(&c.client_id),
                clean_start: c.clean_start,
                properties: unless_empty(&c.properties, |p: &ConnectProperties| {
                    r5::ConnectProperties {
                        session_expiry_interval: p.session_expiry_interval,
                        receive_maximum: p.receive_maximum,
                        max_packet_size: p.maximum_packet_size,
                        topic_alias_max: p.topic_alias_maximum,
                        request_response_info: flag(p.request_response_information),
                        request_problem_info: flag(p.request_problem_information),
                        user_properties: users(&p.user_properties),
                        authentication_method: opt_string(&p.authentication_method),
                        authentication_data: p.authentication_data.clone(),
                    }
                }),
            };
            let will = c.will.as_ref().map(|w| r5::LastWill {
                topic: Bytes::copy_from_slice(w.topic.as_bytes()),
                message: w.payload.clone(),
                qos: r5_qos(w.qos),
                retain: w.retain,
                properties: unless_empty(&w.properties, |p: &WillProperties| {
                    r5::LastWillProperties {
                        delay_interval: p.will_delay_interval,
                        payload_format_indicator: flag(p.payload_format_indicator),
                        message_expiry_interval: p.message_expiry_interval,
                        content_type: opt_string(&p.content_type),
                        response_topic: opt_string(&p.response_topic),
                        correlation_data: p.correlation_data.clone(),
                        user_properties: users(&p.user_properties),
                    }
                }),
            });
            let login = login(&c.username, &c.password)
                .map(|(username, password)| r5::Login { username, password });
            r5::Packet::Connect(connect, will, login)
        }
        Packet::ConnAck(a) => r5::Packet::ConnAck(r5::ConnAck {
            session_present: a.session_present,
            code: r5_connack_code(a.reason_code),
            properties: unless_empty(&a.properties, |p: &ConnAckProperties| {
                r5::ConnAckProperties {
                    session_expiry_interval: p.session_expiry_interval,
                    receive_max: p.receive_maximum,
                    max_qos: p.maximum_qos.map(|q| q as u8),
                    retain_available: flag(p.retain_available),
                    max_packet_size: p.maximum_packet_size,
                    assigned_client_identifier: opt_string(&p.assigned_client_identifier),
                    topic_alias_max: p.topic_alias_maximum,
                    reason_string: opt_string(&p.reason_string),
                    user_properties: users(&p.user_properties),
                    wildcard_subscription_available: flag(p.wildcard_subscription_available),
                    subscription_identifiers_available: flag(p.subscription_identifiers_available),
                    shared_subscription_available: flag(p.shared_subscription_available),
                    server_keep_alive: p.server_keep_alive,
                    response_information: opt_string(&p.response_information),
                    server_reference: opt_string(&p.server_reference),
                    authentication_method: opt_string(&p.authentication_method),
                    authentication_data: p.authentication_data.clone(),
                }
            }),
        }),
        Packet::Publish(p) => r5::Packet::Publish(r5::Publish {
            dup: p.dup,
            qos: r5_qos(p.qos),
            retain: p.retain,
            topic: Bytes::copy_from_slice(p.topic.as_bytes()),
            pkid: p.packet_id,
            payload: p.payload.clone(),
            properties: unless_empty(&p.properties, |p: &PublishProperties| {
                r5::PublishProperties {
                    payload_format_indicator: flag(p.payload_format_indicator),
                    message_expiry_interval: p.message_expiry_interval,
                    topic_alias: p.topic_alias,
                    response_topic: opt_string(&p.response_topic),
                    correlation_data: p.correlation_data.clone(),
                    user_properties: users(&p.user_properties),
                    subscription_identifiers: p
                        .subscription_identifiers
                        .iter()
                        .map(|&id| id as usize)
                        .collect(),
                    content_type: opt_string(&p.content_type),
                }
            }),
        }),
        Packet::PubAck(a) => r5::Packet::PubAck(r5::PubAck {
            pkid: a.packet_id,
            reason: publish_ack_reason!(PubAckReason, a.reason_code),
            properties: ack_properties!(PubAckProperties, &a.properties),
        }),
        Packet::PubRec(a) => r5::Packet::PubRec(r5::PubRec {
            pkid: a.packet_id,
            reason: publish_ack_reason!(PubRecReason, a.reason_code),
            properties: ack_properties!(PubRecProperties, &a.properties),
        }),
        Packet::PubRel(a) => r5::Packet::PubRel(r5::PubRel {
            pkid: a.packet_id,
            reason: release_reason!(PubRelReason, a.reason_code),
            properties: ack_properties!(PubRelProperties, &a.properties),
        }),
        Packet::PubComp(a) => r5::Packet::PubComp(r5::PubComp {
            pkid: a.packet_id,
            reason: release_reason!(PubCompReason, a.reason_code),
            properties: ack_properties!(PubCompProperties, &a.properties),
        }),
        Packet::Subscribe(s) => r5::Packet::Subscribe(r5::Subscribe {
            pkid: s.packet_id,
            filters: s
                .subscriptions
                .iter()
                .map(|sub| r5::Filter {
                    path: string(&sub.filter),
                    qos: r5_qos(sub.options.qos),
                    nolocal: sub.options.no_local,
                    preserve_retain: sub.options.retain_as_published,
                    retain_forward_rule: r5_retain_rule(sub.options.retain_handling),
                })
                .collect(),
            properties: unless_empty(&s.properties, |p: &SubscribeProperties| {
                r5::SubscribeProperties {
                    id: p.subscription_identifier.map(|id| id as usize),
                    user_properties: users(&p.user_properties),
                }
            }),
        }),
        Packet::SubAck(a) => r5::Packet::SubAck(r5::SubAck {
            pkid: a.packet_id,
            return_codes: a
                .reason_codes
                .iter()
                .map(|rc| r5_suback_code(*rc))
                .collect(),
            properties: ack_properties!(SubAckProperties, &a.properties),
        }),
        Packet::Unsubscribe(u) => r5::Packet::Unsubscribe(r5::Unsubscribe {
            pkid: u.packet_id,
            filters: u.filters.iter().map(string).collect(),
            properties: unless_empty(&u.properties, |p: &UnsubscribeProperties| {
                r5::UnsubscribeProperties {
                    user_properties: users(&p.user_properties),
                }
            }),
        }),
        Packet::UnsubAck(a) => r5::Packet::UnsubAck(r5::UnsubAck {
            pkid: a.packet_id,
            reasons: a
                .reason_codes
                .iter()
                .map(|rc| r5_unsuback_code(*rc))
                .collect(),
            properties: ack_properties!(UnsubAckProperties, &a.properties),
        }),
        Packet::PingReq => r5::Packet::PingReq(r5::PingReq),
        Packet::PingResp => r5::Packet::PingResp(r5::PingResp),
        Packet::Disconnect(d) => r5::Packet::Disconnect(r5::Disconnect {
            reason_code: r5_disconnect_code(d.reason_code),
            properties: unless_empty(&d.properties, |p: &DisconnectProperties| {
                r5::DisconnectProperties {
                    session_expiry_interval: p.session_expiry_interval,
                    reason_string: opt_string(&p.reason_string),
                    user_properties: users(&p.user_properties),
                    server_reference: opt_string(&p.server_reference),
                }
            }),
        }),
        Packet::Auth(_) => panic!("AUTH is cross-checked in auth_v5"),
    }
}

// ---------------------------------------------------------------------------------------------
// Test data.
// ---------------------------------------------------------------------------------------------

const QOS: [QoS; 3] = [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce];

fn user_properties() -> UserProperties {
    // A repeated name, multi-byte UTF-8 and an empty value: order and duplicates must survive.
    vec![
        ("unit".into(), "°C".into()),
        ("unit".into(), "K".into()),
        ("empty".into(), "".into()),
    ]
}

fn ack_properties() -> AckProperties {
    AckProperties {
        reason_string: Some("see the broker log".into()),
        user_properties: user_properties(),
    }
}

fn will(qos: QoS, retain: bool) -> LastWill {
    LastWill {
        topic: "clients/c-1/status".into(),
        payload: Bytes::from_static(b"offline"),
        qos,
        retain,
        properties: WillProperties::default(),
    }
}

fn publish(topic: &str, payload: &'static [u8], qos: QoS, packet_id: u16) -> Publish {
    let mut p = Publish::new(topic, Bytes::from_static(payload));
    p.qos = qos;
    p.packet_id = packet_id;
    p
}

/// Every valid reason code of `packet`.
fn reason_codes(packet: PacketType) -> impl Iterator<Item = ReasonCode> {
    ReasonCode::ALL
        .iter()
        .copied()
        .filter(move |rc| rc.valid_for(packet))
}

/// A packet that carries the ack body, and its packet type.
type AckKind = (fn(Ack) -> Packet, PacketType);

/// The four packets that share the ack body.
const ACKS: [AckKind; 4] = [
    (Packet::PubAck, PacketType::PubAck),
    (Packet::PubRec, PacketType::PubRec),
    (Packet::PubRel, PacketType::PubRel),
    (Packet::PubComp, PacketType::PubComp),
];

// ---------------------------------------------------------------------------------------------
// MQTT 3.1.1: rumqttc::mqttbytes::v4.
// ---------------------------------------------------------------------------------------------

#[test]
fn connect_v4() {
    let minimal = Connect::new(V4, "c-1", 30);
    cross_v4(&Packet::Connect(Box::new(minimal.clone())));

    let mut persistent = minimal.clone();
    persistent.clean_start = false;
    persistent.keep_alive = u16::MAX;
    persistent.client_id = "".into();
    cross_v4(&Packet::Connect(Box::new(persistent)));

    let mut credentials = minimal.clone();
    credentials.username = Some("alice".into());
    credentials.password = Some(Bytes::from_static(b"s3cr\xc3\xa9t"));
    cross_v4(&Packet::Connect(Box::new(credentials.clone())));

    let mut username_only = minimal.clone();
    username_only.username = Some("alice".into());
    cross_v4(&Packet::Connect(Box::new(username_only)));

    for qos in QOS {
        for retain in [false, true] {
            let mut c = minimal.clone();
            c.will = Some(will(qos, retain));
            cross_v4(&Packet::Connect(Box::new(c)));
            let mut c = credentials.clone();
            c.will = Some(will(qos, retain));
            c.will.as_mut().unwrap().payload = Bytes::from(vec![0u8, 0xFF, 0x80, 0x7F]);
            cross_v4(&Packet::Connect(Box::new(c)));
        }
    }
}

#[test]
fn connack_v4() {
    for rc in [
        ReasonCode::Success,
        ReasonCode::UnsupportedProtocolVersion,
        ReasonCode::ClientIdentifierNotValid,
        ReasonCode::ServerUnavailable,
        ReasonCode::BadUserNameOrPassword,
        ReasonCode::NotAuthorized,
    ] {
        for session_present in [false, true] {
            cross_v4(&Packet::ConnAck(Box::new(ConnAck::new(
                rc,
                session_present,
            ))));
        }
    }
}

#[test]
fn publish_v4() {
    for qos in QOS {
        for retain in [false, true] {
            // DUP must be 0 on QoS 0 [MQTT-3.3.1-2].
            let dups: &[bool] = if qos == QoS::AtMostOnce {
                &[false]
            } else {
                &[false, true]
            };
            for &dup in dups {
                let id = if qos == QoS::AtMostOnce { 0 } else { 0xABCD };
                let mut p = publish("sensors/1/temp", b"21.5", qos, id);
                p.retain = retain;
                p.dup = dup;
                cross_v4(&Packet::Publish(p));
            }
        }
    }
    // Empty payload, multi-byte topic, and payloads that need 2- and 3-byte remaining lengths.
    cross_v4(&Packet::Publish(publish("ü/ñ/✓", b"", QoS::AtMostOnce, 0)));
    for len in [121, 122, 200, 16_380, 20_000] {
        let mut p = publish("t", b"", QoS::ExactlyOnce, 1);
        p.payload = Bytes::from(vec![0xA5; len]);
        cross_v4(&Packet::Publish(p));
    }
}

#[test]
fn acks_v4() {
    for (ctor, _) in ACKS {
        for id in [1, 0x1234, u16::MAX] {
            cross_v4(&ctor(Ack::new(id)));
        }
    }
}

#[test]
fn subscribe_v4() {
    cross_v4(&Packet::Subscribe(Subscribe::new(
        1,
        "a/b",
        QoS::AtMostOnce,
    )));
    let mut s = Subscribe::new(u16::MAX, "sport/tennis/+", QoS::AtLeastOnce);
    for (filter, qos) in [
        ("#", QoS::ExactlyOnce),
        ("+/+/#", QoS::AtMostOnce),
        ("$SYS/broker/#", QoS::AtLeastOnce),
        ("$share/group/a/b", QoS::ExactlyOnce),
        ("ü/ñ/✓", QoS::AtMostOnce),
    ] {
        s.subscriptions.push(Subscription {
            filter: filter.into(),
            options: SubscriptionOptions::qos(qos),
        });
    }
    cross_v4(&Packet::Subscribe(s));
}

#[test]
fn suback_v4() {
    let ack = SubAck {
        packet_id: 7,
        properties: AckProperties::default(),
        reason_codes: vec![
            ReasonCode::Success,
            ReasonCode::GrantedQoS1,
            ReasonCode::GrantedQoS2,
            ReasonCode::UnspecifiedError,
            ReasonCode::GrantedQoS1,
        ],
    };
    cross_v4(&Packet::SubAck(ack));
}

#[test]
fn unsubscribe_and_unsuback_v4() {
    cross_v4(&Packet::Unsubscribe(Unsubscribe::new(3, "a/+")));
    let mut u = Unsubscribe::new(0x8001, "a/+");
    u.filters
        .extend(["#".into(), "$share/g/x".into(), "ü/✓".into()]);
    cross_v4(&Packet::Unsubscribe(u));
    cross_v4(&Packet::UnsubAck(UnsubAck {
        packet_id: 0x8001,
        properties: AckProperties::default(),
        reason_codes: Vec::new(),
    }));
}

#[test]
fn ping_and_disconnect_v4() {
    cross_v4(&Packet::PingReq);
    cross_v4(&Packet::PingResp);
    cross_v4(&Packet::Disconnect(Disconnect::default()));
}

/// 3.1.1 return codes: for every byte value, both codecs must accept the same ones, with the
/// same meaning.
#[test]
fn return_code_tables_v4() {
    for code in 0..=u8::MAX {
        for (name, bytes) in [
            ("CONNACK", vec![0x20, 0x02, 0x00, code]),
            ("SUBACK", vec![0x90, 0x03, 0x00, 0x01, code]),
        ] {
            match (ours_read(&bytes, V4), r4_read(&bytes)) {
                (Ok(ours), Ok(theirs)) => {
                    assert_eq!(to_r4(&ours), theirs, "{name} return code {code:#04x}")
                }
                (Err(_), Err(_)) => {}
                (ours, theirs) => {
                    panic!("{name} return code {code:#04x}: ours {ours:?}, rumqttc {theirs:?}")
                }
            }
        }
    }
}

/// Encoding for 3.1.1 leaves out what 3.1.1 cannot carry and maps 5.0 reason codes to the
/// closest return code: direction (b) with the rumqttc value written out by hand.
#[test]
fn v5_fields_are_dropped_for_v4() {
    use rumqttc::mqttbytes::QoS as Q;
    let expect = |ours: Packet, theirs: r4::Packet| {
        let bytes = ours_write(&ours, V4);
        assert_eq!(r4_read(&bytes).unwrap(), theirs, "{ours:?}");
        assert_eq!(bytes, r4_write(&theirs), "{ours:?}");
    };

    let mut connect = Connect::new(V4, "c-1", 30);
    connect.properties.session_expiry_interval = Some(60);
    connect.will = Some(will(QoS::AtLeastOnce, true));
    connect
        .will
        .as_mut()
        .unwrap()
        .properties
        .will_delay_interval = Some(5);
    expect(
        Packet::Connect(Box::new(connect)),
        r4::Packet::Connect(r4::Connect {
            protocol: rumqttc::mqttbytes::Protocol::V4,
            keep_alive: 30,
            client_id: "c-1".into(),
            clean_session: true,
            last_will: Some(r4::LastWill::new(
                "clients/c-1/status",
                "offline",
                Q::AtLeastOnce,
                true,
            )),
            login: None,
        }),
    );

    for (rc, code) in [
        (ReasonCode::Banned, r4::ConnectReturnCode::NotAuthorized),
        (
            ReasonCode::BadAuthenticationMethod,
            r4::ConnectReturnCode::BadUserNamePassword,
        ),
        (
            ReasonCode::QuotaExceeded,
            r4::ConnectReturnCode::ServiceUnavailable,
        ),
    ] {
        let mut ack = ConnAck::new(rc, false);
        ack.properties.reason_string = Some("no".into());
        expect(
            Packet::ConnAck(Box::new(ack)),
            r4::Packet::ConnAck(r4::ConnAck::new(code, false)),
        );
    }

    let mut p = publish("t", b"x", QoS::AtLeastOnce, 9);
    p.properties.message_expiry_interval = Some(10);
    p.properties.user_properties = user_properties();
    let mut theirs = r4::Publish::new("t", Q::AtLeastOnce, "x");
    theirs.pkid = 9;
    expect(Packet::Publish(p), r4::Packet::Publish(theirs));

    let mut ack = Ack::new(9);
    ack.reason_code = ReasonCode::QuotaExceeded;
    ack.properties = ack_properties();
    expect(Packet::PubAck(ack), r4::Packet::PubAck(r4::PubAck::new(9)));

    let mut s = Subscribe::new(4, "a/#", QoS::ExactlyOnce);
    s.subscriptions[0].options.no_local = true;
    s.subscriptions[0].options.retain_as_published = true;
    s.subscriptions[0].options.retain_handling = RetainHandling::Never;
    s.properties.subscription_identifier = Some(42);
    let mut theirs = r4::Subscribe::new("a/#", Q::ExactlyOnce);
    theirs.pkid = 4;
    expect(Packet::Subscribe(s), r4::Packet::Subscribe(theirs));

    let ack = SubAck {
        packet_id: 4,
        properties: ack_properties(),
        reason_codes: vec![
            ReasonCode::GrantedQoS1,
            ReasonCode::NotAuthorized,
            ReasonCode::WildcardSubscriptionsNotSupported,
        ],
    };
    expect(
        Packet::SubAck(ack),
        r4::Packet::SubAck(r4::SubAck::new(
            4,
            vec![
                r4::SubscribeReasonCode::Success(Q::AtLeastOnce),
                r4::SubscribeReasonCode::Failure,
                r4::SubscribeReasonCode::Failure,
            ],
        )),
    );

    let ack = UnsubAck {
        packet_id: 5,
        properties: ack_properties(),
        reason_codes: vec![ReasonCode::NoSubscriptionExisted],
    };
    expect(
        Packet::UnsubAck(ack),
        r4::Packet::UnsubAck(r4::UnsubAck::new(5)),
    );

    let mut d = Disconnect::new(ReasonCode::ServerShuttingDown);
    d.properties.reason_string = Some("bye".into());
    expect(Packet::Disconnect(d), r4::Packet::Disconnect);
}

// ---------------------------------------------------------------------------------------------
// MQTT 5.0: rumqttc::v5::mqttbytes::v5.
// ---------------------------------------------------------------------------------------------

fn full_connect_properties() -> ConnectProperties {
    ConnectProperties {
        session_expiry_interval: Some(u32::MAX),
        receive_maximum: Some(20),
        maximum_packet_size: Some(1 << 20),
        topic_alias_maximum: Some(10),
        request_response_information: Some(true),
        request_problem_information: Some(false),
        user_properties: user_properties(),
        authentication_method: Some("SCRAM-SHA-256".into()),
        authentication_data: Some(Bytes::from_static(&[0, 1, 0xFE, 0xFF])),
    }
}

fn full_will_properties() -> WillProperties {
    WillProperties {
        will_delay_interval: Some(5),
        payload_format_indicator: Some(true),
        message_expiry_interval: Some(3600),
        content_type: Some("text/plain".into()),
        response_topic: Some("replies/c-1".into()),
        correlation_data: Some(Bytes::from_static(&[0xCA, 0xFE, 0x00])),
        user_properties: user_properties(),
    }
}

#[test]
fn connect_v5() {
    let minimal = Connect::new(V5, "c-1", 30);
    cross_v5(&Packet::Connect(Box::new(minimal.clone())), Wire::Same);

    let mut persistent = minimal.clone();
    persistent.clean_start = false;
    persistent.keep_alive = 0;
    persistent.client_id = "".into();
    cross_v5(&Packet::Connect(Box::new(persistent)), Wire::Same);

    let mut credentials = minimal.clone();
    credentials.username = Some("alice".into());
    credentials.password = Some(Bytes::from_static(b"s3cr\xc3\xa9t"));
    cross_v5(&Packet::Connect(Box::new(credentials.clone())), Wire::Same);

    // 5.0 allows a password without a user name (§3.1.2.9).
    let mut password_only = minimal.clone();
    password_only.password = Some(Bytes::from_static(b"token"));
    cross_v5(&Packet::Connect(Box::new(password_only)), Wire::Same);

    let mut username_only = minimal.clone();
    username_only.username = Some("alice".into());
    cross_v5(&Packet::Connect(Box::new(username_only)), Wire::Same);

    // Each connect property on its own, then all of them.
    let full = full_connect_properties();
    let singles = [
        ConnectProperties {
            session_expiry_interval: full.session_expiry_interval,
            ..Default::default()
        },
        ConnectProperties {
            receive_maximum: full.receive_maximum,
            ..Default::default()
        },
        ConnectProperties {
            maximum_packet_size: full.maximum_packet_size,
            ..Default::default()
        },
        ConnectProperties {
            topic_alias_maximum: full.topic_alias_maximum,
            ..Default::default()
        },
        ConnectProperties {
            request_response_information: Some(false),
            request_problem_information: Some(true),
            ..Default::default()
        },
        ConnectProperties {
            user_properties: full.user_properties.clone(),
            ..Default::default()
        },
        ConnectProperties {
            authentication_method: full.authentication_method.clone(),
            authentication_data: full.authentication_data.clone(),
            ..Default::default()
        },
    ];
    for properties in singles.into_iter().chain([full]) {
        let mut c = minimal.clone();
        c.properties = properties;
        cross_v5(&Packet::Connect(Box::new(c)), Wire::Same);
    }

    // Wills of every QoS and retain flag, without and with every will property.
    for qos in QOS {
        for retain in [false, true] {
            let mut c = minimal.clone();
            c.will = Some(will(qos, retain));
            cross_v5(&Packet::Connect(Box::new(c.clone())), Wire::Same);
            c.will.as_mut().unwrap().properties = full_will_properties();
            cross_v5(&Packet::Connect(Box::new(c)), Wire::Same);
        }
    }

    // Everything at once.
    let mut all = credentials;
    all.clean_start = false;
    all.properties = full_connect_properties();
    all.will = Some(will(QoS::ExactlyOnce, true));
    all.will.as_mut().unwrap().properties = full_will_properties();
    all.will.as_mut().unwrap().payload = Bytes::from(vec![0x5A; 300]);
    cross_v5(&Packet::Connect(Box::new(all)), Wire::Same);
}

#[test]
fn connack_v5() {
    for rc in reason_codes(PacketType::ConnAck) {
        cross_v5(
            &Packet::ConnAck(Box::new(ConnAck::new(rc, false))),
            Wire::Same,
        );
    }
    cross_v5(
        &Packet::ConnAck(Box::new(ConnAck::new(ReasonCode::Success, true))),
        Wire::Same,
    );

    let full = ConnAckProperties {
        session_expiry_interval: Some(7200),
        receive_maximum: Some(100),
        maximum_qos: Some(QoS::AtLeastOnce),
        retain_available: Some(false),
        maximum_packet_size: Some(65_536),
        assigned_client_identifier: Some("auto-3f2a".into()),
        topic_alias_maximum: Some(16),
        reason_string: Some("welcome".into()),
        user_properties: user_properties(),
        wildcard_subscription_available: Some(false),
        subscription_identifiers_available: Some(true),
        shared_subscription_available: Some(false),
        server_keep_alive: Some(120),
        response_information: Some("responses/auto-3f2a".into()),
        server_reference: Some("other.example:1883".into()),
        authentication_method: Some("SCRAM-SHA-256".into()),
        authentication_data: Some(Bytes::from_static(b"server-final")),
    };
    let mut ack = ConnAck::new(ReasonCode::Success, true);
    ack.properties = full;
    cross_v5(&Packet::ConnAck(Box::new(ack.clone())), Wire::Same);
    ack.properties.maximum_qos = Some(QoS::AtMostOnce);
    ack.properties.retain_available = Some(true);
    cross_v5(&Packet::ConnAck(Box::new(ack)), Wire::Same);

    let mut refused = ConnAck::new(ReasonCode::UseAnotherServer, false);
    refused.properties.server_reference = Some("backup.example".into());
    refused.properties.reason_string = Some("maintenance".into());
    cross_v5(&Packet::ConnAck(Box::new(refused)), Wire::Same);
}

fn full_publish_properties() -> PublishProperties {
    PublishProperties {
        payload_format_indicator: Some(true),
        message_expiry_interval: Some(3600),
        topic_alias: Some(7),
        response_topic: Some("replies/sensors/1".into()),
        correlation_data: Some(Bytes::from_static(&[0, 1, 0xFE, 0xFF])),
        user_properties: user_properties(),
        // Every boundary of the variable byte integer.
        subscription_identifiers: vec![
            1,
            127,
            128,
            16_383,
            16_384,
            2_097_151,
            2_097_152,
            268_435_455,
        ],
        content_type: Some("text/plain; charset=utf-8".into()),
    }
}

#[test]
fn publish_v5() {
    for qos in QOS {
        for retain in [false, true] {
            let dups: &[bool] = if qos == QoS::AtMostOnce {
                &[false]
            } else {
                &[false, true]
            };
            for &dup in dups {
                let id = if qos == QoS::AtMostOnce { 0 } else { 0xABCD };
                let mut p = publish("sensors/1/temp", b"21.5", qos, id);
                p.retain = retain;
                p.dup = dup;
                cross_v5(&Packet::Publish(p.clone()), Wire::Same);
                p.properties = full_publish_properties();
                cross_v5(&Packet::Publish(p), Wire::Same);
            }
        }
    }

    // Each property on its own.
    let full = full_publish_properties();
    let singles = [
        PublishProperties {
            payload_format_indicator: Some(false),
            ..Default::default()
        },
        PublishProperties {
            message_expiry_interval: full.message_expiry_interval,
            ..Default::default()
        },
        PublishProperties {
            topic_alias: full.topic_alias,
            ..Default::default()
        },
        PublishProperties {
            response_topic: full.response_topic.clone(),
            ..Default::default()
        },
        PublishProperties {
            correlation_data: full.correlation_data.clone(),
            ..Default::default()
        },
        PublishProperties {
            user_properties: full.user_properties.clone(),
            ..Default::default()
        },
        PublishProperties {
            subscription_identifiers: vec![268_435_455],
            ..Default::default()
        },
        PublishProperties {
            content_type: full.content_type.clone(),
            ..Default::default()
        },
    ];
    for properties in singles {
        let mut p = publish("a/b", b"payload", QoS::AtLeastOnce, 1);
        p.properties = properties;
        cross_v5(&Packet::Publish(p), Wire::Same);
    }

    // An empty topic standing for a topic alias (§3.3.2.3.4).
    let mut aliased = publish("", b"21.5", QoS::AtMostOnce, 0);
    aliased.properties.topic_alias = Some(u16::MAX);
    cross_v5(&Packet::Publish(aliased), Wire::Same);

    // Empty payload, multi-byte topic, and sizes around the remaining-length boundaries.
    cross_v5(
        &Packet::Publish(publish("ü/ñ/✓", b"", QoS::AtMostOnce, 0)),
        Wire::Same,
    );
    for len in [120, 121, 200, 16_379, 20_000] {
        let mut p = publish("t", b"", QoS::ExactlyOnce, 1);
        p.payload = Bytes::from(vec![0xA5; len]);
        cross_v5(&Packet::Publish(p.clone()), Wire::Same);
        p.properties = full_publish_properties();
        cross_v5(&Packet::Publish(p), Wire::Same);
    }
}

#[test]
fn acks_v5() {
    for (ctor, kind) in ACKS {
        cross_v5(&ctor(Ack::new(1)), Wire::Same);
        cross_v5(&ctor(Ack::new(u16::MAX)), Wire::Same);
        for rc in reason_codes(kind) {
            let mut ack = Ack::new(0x1234);
            ack.reason_code = rc;
            if rc != ReasonCode::Success {
                // Without properties we stop after the reason code (§3.4.2.2.1: the property
                // length may be left out when the remaining length is 3); rumqttc always
                // writes it.
                cross_v5(
                    &ctor(ack.clone()),
                    Wire::Differs("rumqttc writes an empty property length after the reason"),
                );
            }
            ack.properties = ack_properties();
            cross_v5(&ctor(ack.clone()), Wire::Same);
            ack.properties.reason_string = None;
            cross_v5(&ctor(ack.clone()), Wire::Same);
            ack.properties = AckProperties {
                reason_string: Some("r".into()),
                user_properties: Vec::new(),
            };
            cross_v5(&ctor(ack), Wire::Same);
        }
    }
}

#[test]
fn subscribe_v5() {
    cross_v5(
        &Packet::Subscribe(Subscribe::new(1, "a/b", QoS::AtMostOnce)),
        Wire::Same,
    );

    // Every combination of the subscription options, one filter each, in one packet.
    let mut subscriptions = Vec::new();
    for qos in QOS {
        for no_local in [false, true] {
            for retain_as_published in [false, true] {
                for retain_handling in [
                    RetainHandling::OnSubscribe,
                    RetainHandling::OnNewSubscription,
                    RetainHandling::Never,
                ] {
                    subscriptions.push(Subscription {
                        filter: format!("a/{}/+/#", subscriptions.len()).into(),
                        options: SubscriptionOptions {
                            qos,
                            no_local,
                            retain_as_published,
                            retain_handling,
                        },
                    });
                }
            }
        }
    }
    // A shared subscription (No Local must be 0 on it, [MQTT-3.8.3-4]) and a multi-byte one.
    subscriptions.push(Subscription {
        filter: "$share/group/x/+".into(),
        options: SubscriptionOptions {
            qos: QoS::AtLeastOnce,
            no_local: false,
            retain_as_published: true,
            retain_handling: RetainHandling::Never,
        },
    });
    subscriptions.push(Subscription {
        filter: "ü/ñ/✓".into(),
        options: SubscriptionOptions::qos(QoS::ExactlyOnce),
    });
    let mut s = Subscribe {
        packet_id: 0x4242,
        properties: SubscribeProperties::default(),
        subscriptions,
    };
    cross_v5(&Packet::Subscribe(s.clone()), Wire::Same);

    for id in [1, 127, 128, 16_384, 268_435_455] {
        s.properties.subscription_identifier = Some(id);
        cross_v5(&Packet::Subscribe(s.clone()), Wire::Same);
    }
    s.properties.user_properties = user_properties();
    cross_v5(&Packet::Subscribe(s.clone()), Wire::Same);
    s.properties.subscription_identifier = None;
    cross_v5(&Packet::Subscribe(s), Wire::Same);
}

#[test]
fn suback_v5() {
    let mut ack = SubAck {
        packet_id: 0x4242,
        properties: AckProperties::default(),
        reason_codes: reason_codes(PacketType::SubAck).collect(),
    };
    cross_v5(&Packet::SubAck(ack.clone()), Wire::Same);
    ack.properties = ack_properties();
    cross_v5(&Packet::SubAck(ack.clone()), Wire::Same);
    ack.reason_codes = vec![ReasonCode::GrantedQoS2];
    cross_v5(&Packet::SubAck(ack), Wire::Same);
}

#[test]
fn unsubscribe_v5() {
    cross_v5(&Packet::Unsubscribe(Unsubscribe::new(3, "a/+")), Wire::Same);
    let mut u = Unsubscribe::new(0x8001, "a/+");
    u.filters
        .extend(["#".into(), "$share/g/x/#".into(), "ü/✓".into()]);
    cross_v5(&Packet::Unsubscribe(u.clone()), Wire::Same);
    u.properties.user_properties = user_properties();
    cross_v5(&Packet::Unsubscribe(u), Wire::Same);
}

#[test]
fn unsuback_v5() {
    let mut ack = UnsubAck {
        packet_id: 0x8001,
        properties: AckProperties::default(),
        reason_codes: reason_codes(PacketType::UnsubAck).collect(),
    };
    cross_v5(&Packet::UnsubAck(ack.clone()), Wire::Same);
    ack.properties = ack_properties();
    cross_v5(&Packet::UnsubAck(ack.clone()), Wire::Same);
    ack.reason_codes = vec![ReasonCode::NoSubscriptionExisted];
    cross_v5(&Packet::UnsubAck(ack), Wire::Same);
}

#[test]
fn ping_v5() {
    cross_v5(&Packet::PingReq, Wire::Same);
    cross_v5(&Packet::PingResp, Wire::Same);
}

#[test]
fn disconnect_v5() {
    // Normal disconnection without properties: remaining length 0 (§3.14.2.1). rumqttc's
    // `Packet::read` refuses that, so (b) goes through its `Disconnect::read`.
    let normal = Disconnect::default();
    let their_bytes = r5_write(&to_r5(&Packet::Disconnect(normal.clone())));
    assert_eq!(
        ours_read(&their_bytes, V5),
        Ok(Packet::Disconnect(normal.clone()))
    );
    let our_bytes = ours_write(&Packet::Disconnect(normal.clone()), V5);
    assert_eq!(
        r5_read_disconnect(&our_bytes).unwrap(),
        r5::Disconnect::new(r5::DisconnectReasonCode::NormalDisconnection)
    );
    assert_eq!(our_bytes, their_bytes);

    // A reason code without properties: we send remaining length 1 (§3.14.2.2.1). rumqttc
    // cannot read that, and writes one byte more than its remaining length announces (see
    // `rumqttc_deviations`), so only (a) is checked, on the announced frame.
    for rc in reason_codes(PacketType::Disconnect).filter(|rc| *rc != ReasonCode::Success) {
        let their_bytes = r5_write(&r5::Packet::Disconnect(r5::Disconnect::new(
            r5_disconnect_code(rc),
        )));
        let mut buf = BytesMut::from(&their_bytes[..]);
        assert_eq!(
            decode(&mut buf, V5, MAX_PACKET_SIZE),
            Ok(Some(Packet::Disconnect(Disconnect::new(rc))))
        );
        assert_eq!(&buf[..], &[0x00], "rumqttc's stray property length");
    }

    // With properties: both directions, and the bytes are the same.
    let full = DisconnectProperties {
        session_expiry_interval: Some(0),
        reason_string: Some("shutting down".into()),
        user_properties: user_properties(),
        server_reference: Some("other.example:1883".into()),
    };
    for rc in reason_codes(PacketType::Disconnect) {
        let mut d = Disconnect::new(rc);
        d.properties = full.clone();
        cross_v5(&Packet::Disconnect(d.clone()), Wire::Same);
        d.properties = DisconnectProperties {
            server_reference: Some("b".into()),
            ..Default::default()
        };
        cross_v5(&Packet::Disconnect(d), Wire::Same);
    }
}

/// A rumqttc AUTH with this reason code and no properties. rumqttc exports `Auth` but not the
/// types of its fields (`AuthReasonCode`, `AuthProperties` live in a private module), so the
/// value is made by rumqttc's own reader from the shortest such packet.
fn r5_auth(code: u8) -> r5::Auth {
    r5_read_auth(&[0xF0, 0x02, code, 0x00]).expect("rumqttc reads a bare AUTH")
}

#[test]
fn auth_v5() {
    // Without properties, both directions. For Success we leave out the reason code and
    // property length (§3.15.2.1); rumqttc always writes them.
    for (code, rc) in [
        (0x00, ReasonCode::Success),
        (0x18, ReasonCode::ContinueAuthentication),
        (0x19, ReasonCode::ReAuthenticate),
    ] {
        let ours = Packet::Auth(Auth {
            reason_code: rc,
            properties: AuthProperties::default(),
        });
        let theirs = r5_auth(code);
        let their_bytes = r5_write(&r5::Packet::Auth(theirs.clone()));
        assert_eq!(
            ours_read(&their_bytes, V5).as_ref(),
            Ok(&ours),
            "(a) {rc:?}"
        );
        let our_bytes = ours_write(&ours, V5);
        if rc == ReasonCode::Success {
            assert_eq!(&our_bytes[..], &[0xF0, 0x00]);
            assert_eq!(&their_bytes[..], &[0xF0, 0x02, 0x00, 0x00]);
            // rumqttc cannot read the short form: see `rumqttc_deviations`.
        } else {
            assert_eq!(r5_read_auth(&our_bytes).unwrap(), theirs, "(b) {rc:?}");
            assert_eq!(our_bytes, their_bytes, "{rc:?}");
        }
    }

    // With properties. rumqttc miscounts AUTH property lengths in its writer, and in its
    // reader for Authentication Method and Reason String (see `rumqttc_deviations`). So (b)
    // is checked with User Property only (Authentication Data cannot go alone: our decoder
    // rightly refuses data without a method), and (a) only shows that we refuse rumqttc's
    // malformed output.
    let ours = Auth {
        reason_code: ReasonCode::ContinueAuthentication,
        properties: AuthProperties {
            user_properties: user_properties(),
            ..Default::default()
        },
    };
    let mut theirs = r5_auth(0x18);
    theirs.properties = Some(Default::default());
    theirs.properties.as_mut().unwrap().user_properties = users(&user_properties());
    let our_bytes = ours_write(&Packet::Auth(ours), V5);
    assert_eq!(
        r5_read_auth(&our_bytes).unwrap(),
        theirs,
        "(b) user properties"
    );

    // (a) with properties: whatever rumqttc writes is malformed, and we must say so rather
    // than read past the frame.
    let mut theirs = r5_auth(0x18);
    theirs.properties = Some(Default::default());
    let p = theirs.properties.as_mut().unwrap();
    p.method = Some("SCRAM-SHA-256".into());
    p.data = Some(Bytes::from_static(b"client-first"));
    let their_bytes = r5_write(&r5::Packet::Auth(theirs));
    let mut buf = BytesMut::from(&their_bytes[..]);
    assert!(
        decode(&mut buf, V5, MAX_PACKET_SIZE).is_err(),
        "rumqttc's AUTH {their_bytes:02x?} is malformed"
    );
}

/// MQTT 5.0 reason codes: for every byte value and every packet that carries one, both codecs
/// must accept the same values, with the same meaning.
#[test]
fn reason_code_tables_v5() {
    for code in 0..=u8::MAX {
        for (name, bytes) in [
            ("CONNACK", vec![0x20, 0x03, 0x00, code, 0x00]),
            ("PUBACK", vec![0x40, 0x04, 0x00, 0x01, code, 0x00]),
            ("PUBREC", vec![0x50, 0x04, 0x00, 0x01, code, 0x00]),
            ("PUBREL", vec![0x62, 0x04, 0x00, 0x01, code, 0x00]),
            ("PUBCOMP", vec![0x70, 0x04, 0x00, 0x01, code, 0x00]),
            ("SUBACK", vec![0x90, 0x04, 0x00, 0x01, 0x00, code]),
            ("UNSUBACK", vec![0xB0, 0x04, 0x00, 0x01, 0x00, code]),
            ("DISCONNECT", vec![0xE0, 0x02, code, 0x00]),
        ] {
            match (ours_read(&bytes, V5), r5_read(&bytes)) {
                (Ok(ours), Ok(theirs)) => {
                    assert_eq!(to_r5(&ours), theirs, "{name} reason code {code:#04x}")
                }
                (Err(_), Err(_)) => {}
                (ours, theirs) => {
                    panic!("{name} reason code {code:#04x}: ours {ours:?}, rumqttc {theirs:?}")
                }
            }
        }
        let bytes = [0xF0, 0x02, code, 0x00];
        match (ours_read(&bytes, V5), r5_read_auth(&bytes)) {
            (Ok(Packet::Auth(ours)), Ok(theirs)) => {
                assert_eq!(ours.properties, AuthProperties::default());
                assert_eq!(theirs.properties, None);
                let name = match ours.reason_code {
                    ReasonCode::Success => "Success",
                    ReasonCode::ContinueAuthentication => "Continue",
                    ReasonCode::ReAuthenticate => "ReAuthentivate", // sic
                    other => panic!("AUTH with {other:?}"),
                };
                assert_eq!(format!("{:?}", theirs.code), name);
            }
            (Err(_), Err(_)) => {}
            (ours, theirs) => {
                panic!("AUTH reason code {code:#04x}: ours {ours:?}, rumqttc {theirs:?}")
            }
        }
    }
}

/// What rumqttc writes and the specification forbids, our decoder must refuse.
#[test]
fn rejects_what_rumqttc_writes_but_the_spec_forbids() {
    use rumqttc::mqttbytes::QoS as Q4;
    use rumqttc::v5::mqttbytes::QoS as Q5;
    let v4 = |p: r4::Packet| ours_read(&r4_write(&p), V4);
    let v5 = |p: r5::Packet| ours_read(&r5_write(&p), V5);

    // A password without a user name [MQTT-3.1.2-22] (3.1.1 only).
    let mut c = r4::Connect::new("c-1");
    c.login = Some(r4::Login::new("", "pw"));
    assert_eq!(
        v4(r4::Packet::Connect(c)),
        Err(DecodeError::PasswordWithoutUsername)
    );

    // DUP on QoS 0 [MQTT-3.3.1-2].
    let mut p = r4::Publish::new("t", Q4::AtMostOnce, "x");
    p.dup = true;
    assert_eq!(v4(r4::Packet::Publish(p)), Err(DecodeError::DupOnQoS0));

    // A wildcard in a topic name [MQTT-3.3.2-2].
    let p = r4::Publish::new("a/+/b", Q4::AtMostOnce, "x");
    assert_eq!(
        v4(r4::Packet::Publish(p)),
        Err(DecodeError::Topic(TopicError::WildcardInName))
    );

    // Packet identifier 0 (3.1.1 [MQTT-2.3.1-1]): rumqttc's `Subscribe::new` leaves it at 0.
    assert_eq!(
        v4(r4::Packet::Subscribe(r4::Subscribe::new(
            "a",
            Q4::AtMostOnce
        ))),
        Err(DecodeError::ZeroPacketId {
            packet: PacketType::Subscribe
        })
    );

    // No topic filter (3.1.1 [MQTT-3.8.3-3], [MQTT-3.10.3-2]), and a SUBACK without return codes.
    let mut s = r4::Subscribe::new("a", Q4::AtMostOnce);
    s.pkid = 1;
    s.filters.clear();
    assert_eq!(
        v4(r4::Packet::Subscribe(s)),
        Err(DecodeError::EmptySubscribe)
    );
    let mut u = r4::Unsubscribe::new("a");
    u.pkid = 1;
    u.topics.clear();
    assert_eq!(
        v4(r4::Packet::Unsubscribe(u)),
        Err(DecodeError::EmptyUnsubscribe)
    );
    assert_eq!(
        v4(r4::Packet::SubAck(r4::SubAck::new(1, Vec::new()))),
        Err(DecodeError::EmptyAck {
            packet: PacketType::SubAck
        })
    );

    // No Local on a shared subscription [MQTT-3.8.3-4].
    let mut f = r5::Filter::new("$share/g/t", Q5::AtMostOnce);
    f.nolocal = true;
    let mut s = r5::Subscribe::new(f, None);
    s.pkid = 1;
    assert_eq!(
        v5(r5::Packet::Subscribe(s)),
        Err(DecodeError::NoLocalOnSharedSubscription)
    );

    // Subscription identifier 0 (§3.8.2.1.2).
    let mut s = r5::Subscribe::new(
        r5::Filter::new("t", Q5::AtMostOnce),
        Some(r5::SubscribeProperties {
            id: Some(0),
            user_properties: Vec::new(),
        }),
    );
    s.pkid = 1;
    assert_eq!(
        v5(r5::Packet::Subscribe(s)),
        Err(DecodeError::InvalidPropertyValue {
            id: PropertyId::SubscriptionIdentifier,
            value: 0
        })
    );

    // Topic alias 0 [MQTT-3.3.2-8], and an empty topic without an alias (§3.3.2.3.4).
    let p = r5::Publish::new(
        "t",
        Q5::AtMostOnce,
        "x",
        Some(r5::PublishProperties {
            topic_alias: Some(0),
            ..Default::default()
        }),
    );
    assert_eq!(v5(r5::Packet::Publish(p)), Err(DecodeError::TopicAliasZero));
    let p = r5::Publish::new("", Q5::AtMostOnce, "x", None);
    assert_eq!(
        v5(r5::Packet::Publish(p)),
        Err(DecodeError::EmptyTopicWithoutAlias)
    );

    // Maximum QoS 2 in CONNACK (§3.2.2.3.4: 0 or 1 only).
    let ack = r5::ConnAck {
        session_present: false,
        code: r5::ConnectReturnCode::Success,
        properties: Some(r5::ConnAckProperties {
            max_qos: Some(2),
            ..connack_properties_none()
        }),
    };
    assert_eq!(
        v5(r5::Packet::ConnAck(ack)),
        Err(DecodeError::InvalidPropertyValue {
            id: PropertyId::MaximumQoS,
            value: 2
        })
    );
}

/// rumqttc's `ConnAckProperties` has no `Default`.
fn connack_properties_none() -> r5::ConnAckProperties {
    r5::ConnAckProperties {
        session_expiry_interval: None,
        receive_max: None,
        max_qos: None,
        retain_available: None,
        max_packet_size: None,
        assigned_client_identifier: None,
        topic_alias_max: None,
        reason_string: None,
        user_properties: Vec::new(),
        wildcard_subscription_available: None,
        subscription_identifiers_available: None,
        shared_subscription_available: None,
        server_keep_alive: None,
        response_information: None,
        server_reference: None,
        authentication_method: None,
        authentication_data: None,
    }
}

/// Every way rumqttc 0.25 departs from the specification that the cross-check has to step
/// around. Each assertion pins the current behaviour; if one fails, rumqttc has changed, and
/// the case it guards can move into the cross-check proper.
#[test]
fn rumqttc_deviations() {
    // 1. DISCONNECT of remaining length 0 is the normal disconnection (§3.14.2.1), but
    //    rumqttc's `Packet::read` answers PayloadRequired (its `Disconnect::read` is fine).
    assert!(matches!(
        r5_read(&[0xE0, 0x00]),
        Err(R5Error::PayloadRequired)
    ));

    // 2. DISCONNECT of remaining length 1 has a reason code and no property length (§3.14.2.2.1:
    //    "if the Remaining Length is less than 2, a value of 0 is used"). rumqttc wants more
    //    bytes (InsufficientBytes); its tokio codec takes that for "read more", but
    //    `Packet::read` has already split the frame off the buffer: the DISCONNECT is lost.
    let ours = ours_write(
        &Packet::Disconnect(Disconnect::new(ReasonCode::SessionTakenOver)),
        V5,
    );
    assert_eq!(&ours[..], &[0xE0, 0x01, 0x8E]);
    let mut buf = BytesMut::from(&ours[..]);
    assert!(matches!(
        r5::Packet::read(&mut buf, None),
        Err(R5Error::InsufficientBytes(1))
    ));
    assert!(buf.is_empty(), "the frame was consumed");

    // 3. rumqttc writes a DISCONNECT with a reason code and no properties as remaining length
    //    1 followed by two bytes (the reason code and a property length of 0): one byte beyond
    //    the packet, which the receiver reads as the start of the next packet (type 0, invalid).
    let theirs = r5_write(&r5::Packet::Disconnect(r5::Disconnect::new(
        r5::DisconnectReasonCode::SessionTakenOver,
    )));
    assert_eq!(&theirs[..], &[0xE0, 0x01, 0x8E, 0x00]);

    // 4. AUTH: `Packet::read` does not know packet type 15 at all.
    assert!(matches!(
        r5_read(&[0xF0, 0x02, 0x18, 0x00]),
        Err(R5Error::InvalidPacketType(15))
    ));

    // 5. AUTH of remaining length 0 is a successful AUTH (§3.15.2.1); rumqttc's `Auth::read`
    //    requires a reason code.
    assert!(matches!(
        r5_read_auth(&[0xF0, 0x00]),
        Err(R5Error::MalformedPacket)
    ));

    // 6. rumqttc's AUTH writer computes property lengths without the 2-byte length prefixes
    //    of strings, binary data and user property pairs, so every AUTH it writes with
    //    properties announces fewer bytes than it writes: method "m" alone announces a property
    //    length of 2 and a remaining length of 4, then writes 1 + 1 + 4 bytes.
    let mut theirs = r5_auth(0x18);
    theirs.properties = Some(Default::default());
    theirs.properties.as_mut().unwrap().method = Some("m".into());
    assert_eq!(
        &r5_write(&r5::Packet::Auth(theirs))[..],
        &[0xF0, 0x04, 0x18, 0x02, 0x15, 0x00, 0x01, b'm']
    );

    // 7. rumqttc's AUTH reader does the same for Authentication Method and Reason String, so it
    //    cannot read a correct AUTH that carries either.
    for properties in [
        AuthProperties {
            authentication_method: Some("SCRAM-SHA-256".into()),
            ..Default::default()
        },
        AuthProperties {
            reason_string: Some("go on".into()),
            ..Default::default()
        },
    ] {
        let ours = ours_write(
            &Packet::Auth(Auth {
                reason_code: ReasonCode::ContinueAuthentication,
                properties,
            }),
            V5,
        );
        assert!(matches!(r5_read_auth(&ours), Err(R5Error::MalformedPacket)));
    }

    // 8. The CONNECT password is Binary Data (5.0 §3.1.3.6, 3.1.1 §3.1.3.5); rumqttc reads it as a
    //    UTF-8 string and refuses any other bytes. (It also takes an empty user name or
    //    password for an absent one, so those are never sent; see `login`.)
    for version in [V4, V5] {
        let mut c = Connect::new(version, "c-1", 30);
        c.username = Some("alice".into());
        c.password = Some(Bytes::from_static(&[0xFF, 0x00, 0xC0]));
        let ours = ours_write(&Packet::Connect(Box::new(c)), version);
        if version == V4 {
            assert!(matches!(r4_read(&ours), Err(R4Error::TopicNotUtf8)));
        } else {
            assert!(matches!(r5_read(&ours), Err(R5Error::TopicNotUtf8)));
        }
    }
}
