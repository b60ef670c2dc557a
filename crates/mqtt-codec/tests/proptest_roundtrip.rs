//! Property tests of the codec as a whole, driven by `proptest`.
//!
//! The strategies below generate every packet kind that is valid in each protocol version
//! (3.1, 3.1.1, 5.0): for 5.0 every property of every packet and every reason code the packet
//! allows, for 3.1/3.1.1 the 5.0-only fields left empty. On top of them:
//!
//! - `encode_decode_round_trip`: encoding and decoding gives the packet back, consuming exactly
//!   its bytes; `Publish::encode_header` followed by the payload is the whole packet; the
//!   encoding is canonical (decoding and encoding again gives the same bytes).
//! - `random_bytes_never_panic`, `structured_noise_never_panics`, `mutated_encodings_never_panic`:
//!   `decode` is total over arbitrary input, versions and size limits; `Ok(None)` leaves the
//!   buffer untouched and `Ok(Some)` consumes one frame and yields a packet that round-trips
//!   and whose re-encoding is no longer than the bytes it was decoded from.
//! - `cut_bodies_decode_canonically`: valid encodings with their bodies cut short (remaining
//!   length fixed to match) decode to an error or to a packet that does not grow when encoded
//!   again, i.e. no mandatory field is silently filled in.
//! - `chunked_stream_yields_the_same_packets`: packets back to back, delivered in arbitrary
//!   chunks, come out in order and unchanged; "read more" never consumes.
//! - `too_large_is_reported_from_the_fixed_header`: a limit below the packet's size is
//!   reported as `PacketTooLarge` as soon as the fixed header is in, whatever part of the body
//!   has arrived.
//! - `matches_agrees_with_reference` and `generated_topics_validate`: `topic::matches` against
//!   a naive matcher written here, over a small alphabet so that matches happen, and the topic
//!   validators against the generators.
//!
//! `encode_decode_round_trip` also checks the normalisations: CONNECT is encoded and decoded
//! by its own version whatever the connection's, and a 5.0 acknowledgement, DISCONNECT or
//! AUTH is sent in its shortest form while its longest form decodes to the same packet.

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use mqtt_codec::properties::{
    AckProperties, AuthProperties, ConnAckProperties, ConnectProperties, DisconnectProperties,
    PublishProperties, SubscribeProperties, UnsubscribeProperties, UserProperties, WillProperties,
};
use mqtt_codec::topic::{matches, parse_shared, validate_topic_filter, validate_topic_name};
use mqtt_codec::{
    Ack, Auth, ConnAck, Connect, DecodeError, Disconnect, LastWill, MAX_PACKET_SIZE, MAX_VARINT,
    Packet, PacketType, ProtocolVersion, Publish, QoS, ReasonCode, RetainHandling, SubAck,
    Subscribe, Subscription, SubscriptionOptions, TopicError, UnsubAck, Unsubscribe, check_frame,
    decode,
};
use proptest::collection::vec;
use proptest::option::of as opt;
use proptest::prelude::*;
use proptest::sample::{Index, select};
use proptest::strategy::Union;
use proptest::test_runner::FileFailurePersistence;

const VERSIONS: [ProtocolVersion; 3] = [
    ProtocolVersion::V3_1,
    ProtocolVersion::V3_1_1,
    ProtocolVersion::V5,
];

// ---------------------------------------------------------------------------------------------
// Strings, binary data, topics
// ---------------------------------------------------------------------------------------------

/// Characters for UTF-8 string fields: mostly ASCII, some multi-byte (2, 3 and 4 bytes, the
/// BOM, the last code point, control characters), and any `char` but U+0000.
fn text_char() -> BoxedStrategy<char> {
    prop_oneof![
        6 => prop::char::range('a', 'z'),
        3 => select(vec![
            'A', 'Z', '0', '9', ' ', '/', '+', '#', '$', '-', '_', 'é', 'ß', '✓', '日', '本',
            '😀', '\u{1}', '\u{7F}', '\u{9F}', '\u{FEFF}', '\u{FFFF}', '\u{10FFFF}',
        ]),
        1 => any::<char>().prop_filter("U+0000 is not allowed", |c| *c != '\0'),
    ]
    .boxed()
}

/// A character that may appear in a topic level: no separator, wildcard or U+0000.
fn level_char() -> BoxedStrategy<char> {
    text_char()
        .prop_filter("not a separator or wildcard", |c| {
            !matches!(c, '/' | '+' | '#')
        })
        .boxed()
}

fn string_of(chars: BoxedStrategy<char>, len: std::ops::Range<usize>) -> BoxedStrategy<String> {
    vec(chars, len)
        .prop_map(|cs| cs.into_iter().collect::<String>())
        .boxed()
}

/// A UTF-8 string field of up to `max` characters (possibly empty).
fn text(max: usize) -> BoxedStrategy<ByteString> {
    string_of(text_char(), 0..max + 1)
        .prop_map(ByteString::from)
        .boxed()
}

/// Binary data of up to `max` bytes.
fn binary(max: usize) -> BoxedStrategy<Bytes> {
    vec(any::<u8>(), 0..max + 1).prop_map(Bytes::from).boxed()
}

/// A PUBLISH payload: usually small, sometimes long enough to need a two- or three-byte
/// remaining length.
fn payload() -> BoxedStrategy<Bytes> {
    prop_oneof![
        8 => binary(48),
        2 => (120usize..400, any::<u8>()).prop_map(|(n, seed)| patterned(n, seed)),
        1 => (16_300usize..16_500, any::<u8>()).prop_map(|(n, seed)| patterned(n, seed)),
    ]
    .boxed()
}

fn patterned(len: usize, seed: u8) -> Bytes {
    (0..len)
        .map(|i| seed.wrapping_add((i % 251) as u8))
        .collect::<Vec<u8>>()
        .into()
}

fn topic_level() -> BoxedStrategy<String> {
    string_of(level_char(), 0..6)
}

/// A valid topic name: levels without wildcards, at least one character, unicode allowed.
fn topic_name() -> BoxedStrategy<ByteString> {
    vec(topic_level(), 1..5)
        .prop_map(|levels| levels.join("/"))
        .prop_filter("a topic name is not empty", |t| !t.is_empty())
        .prop_map(ByteString::from)
        .boxed()
}

/// A valid, non-shared topic filter: plain levels and `+`, optionally ending in `#`.
fn plain_filter() -> BoxedStrategy<String> {
    let level = prop_oneof![4 => topic_level(), 1 => Just("+".to_owned())];
    (vec(level, 0..5), any::<bool>())
        .prop_map(|(mut levels, hash)| {
            if hash || levels.is_empty() {
                levels.push("#".to_owned());
            }
            levels.join("/")
        })
        .prop_filter("a topic filter is not empty", |f| !f.is_empty())
        .prop_filter("not accidentally a shared subscription", |f| {
            !f.starts_with("$share/")
        })
        .boxed()
}

/// A valid topic filter and whether it is a shared subscription (`$share/{group}/{filter}`).
fn topic_filter() -> BoxedStrategy<(ByteString, bool)> {
    prop_oneof![
        4 => plain_filter().prop_map(|f| (ByteString::from(f), false)),
        1 => (string_of(level_char(), 1..6), plain_filter())
            .prop_map(|(group, f)| (ByteString::from(format!("$share/{group}/{f}")), true)),
    ]
    .boxed()
}

// ---------------------------------------------------------------------------------------------
// Numbers, reason codes
// ---------------------------------------------------------------------------------------------

/// A valid subscription identifier, biased to the variable byte integer boundaries.
fn subscription_id() -> BoxedStrategy<u32> {
    prop_oneof![
        1 => select(vec![
            1u32, 127, 128, 16_383, 16_384, 2_097_151, 2_097_152, MAX_VARINT,
        ]),
        3 => 1..=MAX_VARINT,
    ]
    .boxed()
}

fn packet_id() -> BoxedStrategy<u16> {
    prop_oneof![Just(1u16), Just(u16::MAX), 1..=u16::MAX].boxed()
}

fn qos() -> BoxedStrategy<QoS> {
    select(vec![QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce]).boxed()
}

fn non_zero_u16() -> BoxedStrategy<u16> {
    prop_oneof![Just(1u16), Just(u16::MAX), 1..=u16::MAX].boxed()
}

fn non_zero_u32() -> BoxedStrategy<u32> {
    prop_oneof![Just(1u32), Just(u32::MAX), 1..=u32::MAX].boxed()
}

fn any_u32() -> BoxedStrategy<u32> {
    prop_oneof![Just(0u32), Just(u32::MAX), any::<u32>()].boxed()
}

/// The MQTT 5.0 reason codes `packet` allows.
fn reason_for(packet: PacketType) -> BoxedStrategy<ReasonCode> {
    let codes: Vec<ReasonCode> = ReasonCode::ALL
        .iter()
        .copied()
        .filter(|rc| rc.valid_for(packet))
        .collect();
    assert!(!codes.is_empty(), "{packet:?} allows some reason code");
    select(codes).boxed()
}

/// The reason code of an acknowledgement or DISCONNECT: any allowed one in 5.0, Success
/// (which is all the wire can say) before.
fn reason(v: ProtocolVersion, packet: PacketType) -> BoxedStrategy<ReasonCode> {
    if v.is_v5() {
        reason_for(packet)
    } else {
        Just(ReasonCode::Success).boxed()
    }
}

// ---------------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------------

/// `strategy` in 5.0, the empty property set before.
fn props<T>(v: ProtocolVersion, strategy: BoxedStrategy<T>) -> BoxedStrategy<T>
where
    T: Default + Clone + std::fmt::Debug + 'static,
{
    if v.is_v5() {
        strategy
    } else {
        Just(T::default()).boxed()
    }
}

fn user_properties() -> BoxedStrategy<UserProperties> {
    vec((text(6), text(8)), 0..4).boxed()
}

/// Authentication method and data: data only together with a method.
fn auth_pair() -> BoxedStrategy<(Option<ByteString>, Option<Bytes>)> {
    prop_oneof![
        Just((None, None)),
        (text(12), opt(binary(16))).prop_map(|(m, d)| (Some(m), d)),
    ]
    .boxed()
}

fn connect_properties() -> BoxedStrategy<ConnectProperties> {
    (
        opt(any_u32()),
        opt(non_zero_u16()),
        opt(non_zero_u32()),
        opt(any::<u16>()),
        opt(any::<bool>()),
        opt(any::<bool>()),
        user_properties(),
        auth_pair(),
    )
        .prop_map(
            |(sei, rm, mps, tam, rri, rpi, up, (am, ad))| ConnectProperties {
                session_expiry_interval: sei,
                receive_maximum: rm,
                maximum_packet_size: mps,
                topic_alias_maximum: tam,
                request_response_information: rri,
                request_problem_information: rpi,
                user_properties: up,
                authentication_method: am,
                authentication_data: ad,
            },
        )
        .boxed()
}

fn will_properties() -> BoxedStrategy<WillProperties> {
    (
        opt(any_u32()),
        opt(any::<bool>()),
        opt(any_u32()),
        opt(text(10)),
        opt(topic_name()),
        opt(binary(12)),
        user_properties(),
    )
        .prop_map(|(wdi, pfi, mei, ct, rt, cd, up)| WillProperties {
            will_delay_interval: wdi,
            payload_format_indicator: pfi,
            message_expiry_interval: mei,
            content_type: ct,
            response_topic: rt,
            correlation_data: cd,
            user_properties: up,
        })
        .boxed()
}

fn connack_properties() -> BoxedStrategy<ConnAckProperties> {
    let first = (
        opt(any_u32()),
        opt(non_zero_u16()),
        opt(select(vec![QoS::AtMostOnce, QoS::AtLeastOnce])),
        opt(any::<bool>()),
        opt(non_zero_u32()),
        opt(text(12)),
        opt(any::<u16>()),
        opt(text(12)),
    );
    let second = (
        user_properties(),
        opt(any::<bool>()),
        opt(any::<bool>()),
        opt(any::<bool>()),
        opt(any::<u16>()),
        opt(text(12)),
        opt(text(12)),
        auth_pair(),
    );
    (first, second)
        .prop_map(
            |((sei, rm, mq, ra, mps, aci, tam, rs), (up, wsa, sia, ssa, ska, ri, sr, (am, ad)))| {
                ConnAckProperties {
                    session_expiry_interval: sei,
                    receive_maximum: rm,
                    maximum_qos: mq,
                    retain_available: ra,
                    maximum_packet_size: mps,
                    assigned_client_identifier: aci,
                    topic_alias_maximum: tam,
                    reason_string: rs,
                    user_properties: up,
                    wildcard_subscription_available: wsa,
                    subscription_identifiers_available: sia,
                    shared_subscription_available: ssa,
                    server_keep_alive: ska,
                    response_information: ri,
                    server_reference: sr,
                    authentication_method: am,
                    authentication_data: ad,
                }
            },
        )
        .boxed()
}

fn publish_properties() -> BoxedStrategy<PublishProperties> {
    (
        opt(any::<bool>()),
        opt(any_u32()),
        opt(non_zero_u16()),
        opt(topic_name()),
        opt(binary(12)),
        user_properties(),
        vec(subscription_id(), 0..4),
        opt(text(10)),
    )
        .prop_map(|(pfi, mei, ta, rt, cd, up, sids, ct)| PublishProperties {
            payload_format_indicator: pfi,
            message_expiry_interval: mei,
            topic_alias: ta,
            response_topic: rt,
            correlation_data: cd,
            user_properties: up,
            subscription_identifiers: sids,
            content_type: ct,
        })
        .boxed()
}

fn ack_properties() -> BoxedStrategy<AckProperties> {
    // Often empty, so that the short forms of 5.0 acknowledgements are exercised.
    prop_oneof![
        1 => Just(AckProperties::default()),
        2 => (opt(text(16)), user_properties()).prop_map(|(rs, up)| AckProperties {
            reason_string: rs,
            user_properties: up,
        }),
    ]
    .boxed()
}

fn subscribe_properties() -> BoxedStrategy<SubscribeProperties> {
    (opt(subscription_id()), user_properties())
        .prop_map(|(sid, up)| SubscribeProperties {
            subscription_identifier: sid,
            user_properties: up,
        })
        .boxed()
}

fn unsubscribe_properties() -> BoxedStrategy<UnsubscribeProperties> {
    user_properties()
        .prop_map(|up| UnsubscribeProperties {
            user_properties: up,
        })
        .boxed()
}

fn disconnect_properties() -> BoxedStrategy<DisconnectProperties> {
    prop_oneof![
        1 => Just(DisconnectProperties::default()),
        2 => (opt(any_u32()), opt(text(16)), user_properties(), opt(text(16))).prop_map(
            |(sei, rs, up, sr)| DisconnectProperties {
                session_expiry_interval: sei,
                reason_string: rs,
                user_properties: up,
                server_reference: sr,
            }
        ),
    ]
    .boxed()
}

fn auth_properties() -> BoxedStrategy<AuthProperties> {
    prop_oneof![
        1 => Just(AuthProperties::default()),
        2 => (auth_pair(), opt(text(16)), user_properties()).prop_map(
            |((am, ad), rs, up)| AuthProperties {
                authentication_method: am,
                authentication_data: ad,
                reason_string: rs,
                user_properties: up,
            }
        ),
    ]
    .boxed()
}

// ---------------------------------------------------------------------------------------------
// Packets
// ---------------------------------------------------------------------------------------------

fn last_will(v: ProtocolVersion) -> BoxedStrategy<LastWill> {
    (
        topic_name(),
        binary(24),
        qos(),
        any::<bool>(),
        props(v, will_properties()),
    )
        .prop_map(|(topic, payload, qos, retain, properties)| LastWill {
            topic,
            payload,
            qos,
            retain,
            properties,
        })
        .boxed()
}

/// A CONNECT asking for `v`.
fn connect(v: ProtocolVersion) -> BoxedStrategy<Packet> {
    (
        any::<bool>(),
        any::<u16>(),
        text(23),
        opt(last_will(v)),
        opt(text(12)),
        opt(binary(16)),
        props(v, connect_properties()),
    )
        .prop_map(
            move |(clean_start, keep_alive, client_id, will, username, password, properties)| {
                // Before 5.0 a password needs a user name [MQTT-3.1.2-22].
                let password = if v.is_v5() || username.is_some() {
                    password
                } else {
                    None
                };
                Packet::Connect(Box::new(Connect {
                    protocol: v,
                    clean_start,
                    keep_alive,
                    client_id,
                    will,
                    username,
                    password,
                    properties,
                }))
            },
        )
        .boxed()
}

fn connack(v: ProtocolVersion) -> BoxedStrategy<Packet> {
    let code = if v.is_v5() {
        reason_for(PacketType::ConnAck)
    } else {
        (0u8..=5)
            .prop_map(|c| ReasonCode::from_connack_return_code(c).expect("0-5 are return codes"))
            .boxed()
    };
    (any::<bool>(), code, props(v, connack_properties()))
        .prop_map(move |(session_present, reason_code, properties)| {
            // Session Present is 0 on a refusal [MQTT-3.2.2-4], and 3.1 has no such flag.
            let session_present =
                session_present && reason_code == ReasonCode::Success && v != ProtocolVersion::V3_1;
            Packet::ConnAck(Box::new(ConnAck {
                session_present,
                reason_code,
                properties,
            }))
        })
        .boxed()
}

fn publish(v: ProtocolVersion) -> BoxedStrategy<Publish> {
    (
        qos(),
        any::<bool>(),
        any::<bool>(),
        topic_name(),
        packet_id(),
        props(v, publish_properties()),
        payload(),
        any::<bool>(),
        non_zero_u16(),
    )
        .prop_map(
            move |(qos, dup, retain, topic, id, mut properties, payload, alias_only, alias)| {
                let mut topic = topic;
                // In 5.0 a topic alias may stand for the whole topic name.
                if v.is_v5() && alias_only {
                    topic = ByteString::new();
                    properties.topic_alias = Some(alias);
                }
                let at_most_once = qos == QoS::AtMostOnce;
                Publish {
                    // DUP only on QoS 1/2 [MQTT-3.3.1-2]; no packet identifier on QoS 0.
                    dup: dup && !at_most_once,
                    qos,
                    retain,
                    topic,
                    packet_id: if at_most_once { 0 } else { id },
                    properties,
                    payload,
                }
            },
        )
        .boxed()
}

fn ack(v: ProtocolVersion, packet: PacketType) -> BoxedStrategy<Ack> {
    (packet_id(), reason(v, packet), props(v, ack_properties()))
        .prop_map(|(packet_id, reason_code, properties)| Ack {
            packet_id,
            reason_code,
            properties,
        })
        .boxed()
}

fn subscription(v: ProtocolVersion) -> BoxedStrategy<Subscription> {
    let retain_handling = select(vec![
        RetainHandling::OnSubscribe,
        RetainHandling::OnNewSubscription,
        RetainHandling::Never,
    ]);
    (
        topic_filter(),
        qos(),
        any::<bool>(),
        any::<bool>(),
        retain_handling,
    )
        .prop_map(move |((filter, shared), qos, no_local, rap, rh)| {
            let options = if v.is_v5() {
                SubscriptionOptions {
                    qos,
                    // No Local is not allowed on a shared subscription [MQTT-3.8.3-4].
                    no_local: no_local && !shared,
                    retain_as_published: rap,
                    retain_handling: rh,
                }
            } else {
                SubscriptionOptions::qos(qos)
            };
            Subscription { filter, options }
        })
        .boxed()
}

fn subscribe(v: ProtocolVersion) -> BoxedStrategy<Packet> {
    (
        packet_id(),
        props(v, subscribe_properties()),
        vec(subscription(v), 1..5),
    )
        .prop_map(|(packet_id, properties, subscriptions)| {
            Packet::Subscribe(Subscribe {
                packet_id,
                properties,
                subscriptions,
            })
        })
        .boxed()
}

fn suback(v: ProtocolVersion) -> BoxedStrategy<Packet> {
    let code = if v.is_v5() {
        reason_for(PacketType::SubAck)
    } else {
        select(vec![
            ReasonCode::Success,
            ReasonCode::GrantedQoS1,
            ReasonCode::GrantedQoS2,
            ReasonCode::UnspecifiedError,
        ])
        .boxed()
    };
    (packet_id(), props(v, ack_properties()), vec(code, 1..6))
        .prop_map(|(packet_id, properties, reason_codes)| {
            Packet::SubAck(SubAck {
                packet_id,
                properties,
                reason_codes,
            })
        })
        .boxed()
}

fn unsubscribe(v: ProtocolVersion) -> BoxedStrategy<Packet> {
    (
        packet_id(),
        props(v, unsubscribe_properties()),
        vec(topic_filter().prop_map(|(f, _)| f), 1..5),
    )
        .prop_map(|(packet_id, properties, filters)| {
            Packet::Unsubscribe(Unsubscribe {
                packet_id,
                properties,
                filters,
            })
        })
        .boxed()
}

fn unsuback(v: ProtocolVersion) -> BoxedStrategy<Packet> {
    let codes = if v.is_v5() {
        vec(reason_for(PacketType::UnsubAck), 1..6).boxed()
    } else {
        Just(Vec::new()).boxed()
    };
    (packet_id(), props(v, ack_properties()), codes)
        .prop_map(|(packet_id, properties, reason_codes)| {
            Packet::UnsubAck(UnsubAck {
                packet_id,
                properties,
                reason_codes,
            })
        })
        .boxed()
}

fn disconnect(v: ProtocolVersion) -> BoxedStrategy<Packet> {
    (
        reason(v, PacketType::Disconnect),
        props(v, disconnect_properties()),
    )
        .prop_map(|(reason_code, properties)| {
            Packet::Disconnect(Disconnect {
                reason_code,
                properties,
            })
        })
        .boxed()
}

fn auth() -> BoxedStrategy<Packet> {
    (reason_for(PacketType::Auth), auth_properties())
        .prop_map(|(reason_code, properties)| {
            Packet::Auth(Auth {
                reason_code,
                properties,
            })
        })
        .boxed()
}

/// Any packet valid in `v`, every kind equally likely.
fn packet(v: ProtocolVersion) -> BoxedStrategy<Packet> {
    let mut kinds = vec![
        connect(v),
        connack(v),
        publish(v).prop_map(Packet::Publish).boxed(),
        ack(v, PacketType::PubAck).prop_map(Packet::PubAck).boxed(),
        ack(v, PacketType::PubRec).prop_map(Packet::PubRec).boxed(),
        ack(v, PacketType::PubRel).prop_map(Packet::PubRel).boxed(),
        ack(v, PacketType::PubComp)
            .prop_map(Packet::PubComp)
            .boxed(),
        subscribe(v),
        suback(v),
        unsubscribe(v),
        unsuback(v),
        Just(Packet::PingReq).boxed(),
        Just(Packet::PingResp).boxed(),
        disconnect(v),
    ];
    if v.is_v5() {
        kinds.push(auth());
    }
    Union::new(kinds).boxed()
}

fn version() -> BoxedStrategy<ProtocolVersion> {
    select(VERSIONS.to_vec()).boxed()
}

/// A version and a packet valid in it.
fn versioned_packet() -> BoxedStrategy<(ProtocolVersion, Packet)> {
    version().prop_flat_map(|v| (Just(v), packet(v))).boxed()
}

/// A version and a few packets valid in it, as they would follow each other on a connection.
fn versioned_packets(n: std::ops::Range<usize>) -> BoxedStrategy<(ProtocolVersion, Vec<Packet>)> {
    version()
        .prop_flat_map(move |v| (Just(v), vec(packet(v), n.clone())))
        .boxed()
}

/// A `max_packet_size` argument: unlimited, the protocol maximum, tiny, or anything.
fn max_size() -> BoxedStrategy<usize> {
    prop_oneof![
        Just(usize::MAX),
        Just(MAX_PACKET_SIZE),
        0usize..300,
        any::<usize>(),
    ]
    .boxed()
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn encode(packet: &Packet, v: ProtocolVersion) -> Vec<u8> {
    let mut buf = BytesMut::new();
    packet
        .encode(v, &mut buf)
        .expect("generated packets encode");
    buf.to_vec()
}

/// Length of the fixed header at the front of a complete encoding.
fn fixed_header_len(wire: &[u8]) -> usize {
    let len_bytes = wire[1..]
        .iter()
        .position(|b| b & 0x80 == 0)
        .expect("complete remaining length")
        + 1;
    1 + len_bytes
}

/// Decodes `input` packet after packet, checking the contract of [`decode`] at each step:
/// `Ok(None)` consumes nothing, `Ok(Some)` consumes one frame within the limit and yields a
/// packet that encodes and decodes back to itself.
fn decode_all_checked(
    input: &[u8],
    v: ProtocolVersion,
    max: usize,
) -> Result<Vec<Packet>, TestCaseError> {
    let mut buf = BytesMut::from(input);
    let mut out = Vec::new();
    loop {
        let before = buf.to_vec();
        match decode(&mut buf, v, max) {
            Ok(None) => {
                prop_assert_eq!(&buf[..], &before[..], "Ok(None) consumed bytes");
                return Ok(out);
            }
            Err(_) => return Ok(out),
            Ok(Some(packet)) => {
                let consumed = before.len() - buf.len();
                prop_assert!(consumed >= 2 && consumed <= max);
                prop_assert_eq!(&buf[..], &before[consumed..]);
                let frame = check_frame(&before, v, max)
                    .expect("frame was accepted")
                    .expect("frame is complete");
                prop_assert_eq!(frame.frame_len(), consumed);
                // Whatever the decoder accepts is a packet the encoder can write, and that
                // decodes to the same value again.
                let mut again = BytesMut::new();
                packet
                    .encode(v, &mut again)
                    .map_err(|e| TestCaseError::fail(format!("re-encoding {packet:?}: {e}")))?;
                // The encoder writes the shortest form, so a packet never grows: a longer
                // re-encoding means the decoder accepted a form the specification does not
                // allow.
                prop_assert!(
                    again.len() <= consumed,
                    "{:?} decoded from {} bytes re-encodes to {}",
                    packet,
                    consumed,
                    again.len()
                );
                let redecoded = decode(&mut again, v, usize::MAX);
                prop_assert_eq!(redecoded, Ok(Some(packet.clone())));
                prop_assert!(again.is_empty());
                out.push(packet);
            }
        }
    }
}

#[derive(Debug, Clone)]
enum Mutation {
    Set(Index, u8),
    FlipBit(Index, u8),
    Insert(Index, u8),
    Remove(Index),
    Truncate(Index),
}

fn mutation() -> BoxedStrategy<Mutation> {
    prop_oneof![
        3 => (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::Set(i, b)),
        3 => (any::<Index>(), 0u8..8).prop_map(|(i, b)| Mutation::FlipBit(i, b)),
        2 => (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        2 => any::<Index>().prop_map(Mutation::Remove),
        1 => any::<Index>().prop_map(Mutation::Truncate),
    ]
    .boxed()
}

fn mutate(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        let len = bytes.len();
        match m {
            Mutation::Set(i, b) if len > 0 => bytes[i.index(len)] = *b,
            Mutation::FlipBit(i, bit) if len > 0 => bytes[i.index(len)] ^= 1 << bit,
            Mutation::Insert(i, b) => bytes.insert(i.index(len + 1), *b),
            Mutation::Remove(i) if len > 0 => {
                bytes.remove(i.index(len));
            }
            Mutation::Truncate(i) => bytes.truncate(i.index(len + 1)),
            _ => {}
        }
    }
    bytes
}

/// `wire` (one packet) with its body cut to a random length and the remaining length fixed to
/// match: optional trailing fields left out, or required ones missing.
fn cut_body(wire: &[u8], keep: Index) -> Vec<u8> {
    let header_len = fixed_header_len(wire);
    let body = &wire[header_len..];
    let keep = keep.index(body.len() + 1);
    let mut out = vec![wire[0]];
    out.extend(varint(keep));
    out.extend(&body[..keep]);
    out
}

/// A body byte: often a small number, a reason code, a property identifier or a length
/// boundary, so that noise gets past the first checks of the body decoders.
fn noise_byte() -> BoxedStrategy<u8> {
    let codes: Vec<u8> = ReasonCode::ALL.iter().map(|rc| *rc as u8).collect();
    prop_oneof![
        2 => any::<u8>(),
        1 => 0u8..=5,
        1 => select(codes),
        1 => select(vec![0x01u8, 0x0B, 0x11, 0x15, 0x16, 0x23, 0x26, 0x7F, 0x80, 0xFF]),
    ]
    .boxed()
}

/// Encodes a remaining length (test-side copy, to build frames around random bodies).
fn varint(mut n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let mut byte = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if n == 0 {
            return out;
        }
    }
}

/// The naive reading of §4.7: split on `/`; `+` is any one level; a last `#` is any number of
/// levels, including none (so it also matches the parent); a filter starting with a wildcard
/// does not match a topic starting with `$`.
fn reference_matches(filter: &str, topic: &str) -> bool {
    let f: Vec<&str> = filter.split('/').collect();
    let t: Vec<&str> = topic.split('/').collect();
    if topic.starts_with('$') && (f[0] == "+" || f[0] == "#") {
        return false;
    }
    let level_ok = |(fl, tl): (&&str, &&str)| *fl == "+" || fl == tl;
    if f.last() == Some(&"#") {
        let prefix = &f[..f.len() - 1];
        t.len() >= prefix.len() && prefix.iter().zip(t.iter()).all(level_ok)
    } else {
        t.len() == f.len() && f.iter().zip(t.iter()).all(level_ok)
    }
}

/// `cases` cases; a failing case is saved next to this file (`proptest_roundtrip.regressions`)
/// and replayed first on later runs.
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("regressions"))),
        ..ProptestConfig::default()
    }
}

/// The longest form of a 5.0 acknowledgement, DISCONNECT or AUTH without properties: reason
/// code and an empty property block written out, which the encoder leaves out.
fn long_form(packet: &Packet) -> Option<Vec<u8>> {
    let (first, id, code, props_empty) = match packet {
        Packet::PubAck(a) => (
            0x40,
            Some(a.packet_id),
            a.reason_code,
            a.properties.is_empty(),
        ),
        Packet::PubRec(a) => (
            0x50,
            Some(a.packet_id),
            a.reason_code,
            a.properties.is_empty(),
        ),
        Packet::PubRel(a) => (
            0x62,
            Some(a.packet_id),
            a.reason_code,
            a.properties.is_empty(),
        ),
        Packet::PubComp(a) => (
            0x70,
            Some(a.packet_id),
            a.reason_code,
            a.properties.is_empty(),
        ),
        Packet::Disconnect(d) => (0xE0, None, d.reason_code, d.properties.is_empty()),
        Packet::Auth(a) => (0xF0, None, a.reason_code, a.properties.is_empty()),
        _ => return None,
    };
    if !props_empty {
        return None;
    }
    let mut body = id.map(|id| id.to_be_bytes().to_vec()).unwrap_or_default();
    body.extend([code as u8, 0x00]);
    let mut wire = vec![first, body.len() as u8];
    wire.extend(body);
    Some(wire)
}

// ---------------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(config(1000))]

    /// Encoding then decoding gives the packet back and consumes exactly its bytes.
    #[test]
    fn encode_decode_round_trip((v, packet) in versioned_packet()) {
        let wire = encode(&packet, v);
        prop_assert_eq!(&packet.to_bytes(v).unwrap()[..], &wire[..]);

        // The limit is inclusive: a packet of exactly `max_packet_size` bytes is accepted.
        let mut buf = BytesMut::from(&wire[..]);
        let decoded = decode(&mut buf, v, wire.len());
        prop_assert_eq!(decoded, Ok(Some(packet.clone())));
        prop_assert!(buf.is_empty(), "{} bytes left over", buf.len());

        let frame = check_frame(&wire, v, usize::MAX).unwrap().unwrap();
        prop_assert_eq!(frame.packet_type, packet.packet_type());
        prop_assert_eq!(frame.frame_len(), wire.len());
        prop_assert_eq!(frame.header_len, fixed_header_len(&wire));

        // The encoding is canonical: the decoded packet encodes to the same bytes.
        prop_assert_eq!(encode(&packet, v), wire.clone());

        match &packet {
            // CONNECT carries its own version: encoded and decoded the same whatever version
            // the connection is said to have.
            Packet::Connect(_) => {
                for other in VERSIONS {
                    prop_assert_eq!(encode(&packet, other), wire.clone());
                    let mut buf = BytesMut::from(&wire[..]);
                    prop_assert_eq!(decode(&mut buf, other, usize::MAX), Ok(Some(packet.clone())));
                    prop_assert!(buf.is_empty());
                }
            }
            // Header and payload written apart are the packet.
            Packet::Publish(publish) => {
                let mut split = BytesMut::new();
                publish.encode_header(v, &mut split).unwrap();
                prop_assert_eq!(split.len() + publish.payload.len(), wire.len());
                split.extend_from_slice(&publish.payload);
                prop_assert_eq!(&split[..], &wire[..]);
                prop_assert_eq!(publish.encoded_len(v).unwrap(), wire.len());
            }
            _ => {}
        }

        // 5.0 acknowledgements, DISCONNECT and AUTH are sent in their shortest form, and the
        // longest form decodes to the same packet.
        if v.is_v5()
            && let Some(long) = long_form(&packet) {
                let mut buf = BytesMut::from(&long[..]);
                prop_assert_eq!(decode(&mut buf, v, usize::MAX), Ok(Some(packet.clone())));
                prop_assert!(buf.is_empty());
                let shortest = match &packet {
                    Packet::Disconnect(d) if d.reason_code == ReasonCode::Success => 2,
                    Packet::Auth(a) if a.reason_code == ReasonCode::Success => 2,
                    Packet::Disconnect(_) => 3,
                    Packet::Auth(_) => 4,
                    Packet::PubAck(a) | Packet::PubRec(a) | Packet::PubRel(a) | Packet::PubComp(a)
                        if a.reason_code == ReasonCode::Success => 4,
                    _ => 5,
                };
                prop_assert_eq!(wire.len(), shortest);
            }
    }

    /// Arbitrary bytes never make `decode` panic, for any version and limit.
    #[test]
    fn random_bytes_never_panic(
        bytes in vec(any::<u8>(), 0..96),
        v in version(),
        max in max_size(),
    ) {
        decode_all_checked(&bytes, v, max)?;
    }

    /// A well-formed fixed header (any packet type and flags) around a random body reaches the
    /// body decoders; they never panic either.
    #[test]
    fn structured_noise_never_panics(
        first in prop_oneof![
            3 => select(vec![
                0x10u8, 0x20, 0x30, 0x31, 0x32, 0x33, 0x34, 0x35, 0x3A, 0x3D, 0x40, 0x50, 0x62,
                0x70, 0x82, 0x90, 0xA2, 0xB0, 0xC0, 0xD0, 0xE0, 0xF0,
            ]),
            1 => any::<u8>(),
        ],
        body in prop_oneof![vec(noise_byte(), 0..4), vec(noise_byte(), 0..64)],
        tail in vec(any::<u8>(), 0..8),
        v in version(),
        max in max_size(),
    ) {
        let mut bytes = vec![first];
        bytes.extend(varint(body.len()));
        bytes.extend(&body);
        bytes.extend(&tail);
        decode_all_checked(&bytes, v, max)?;
    }

    /// Valid encodings with bytes changed, flipped, inserted, removed or cut off never make
    /// `decode` panic, whatever version and limit it is given.
    #[test]
    fn mutated_encodings_never_panic(
        (v, packets) in versioned_packets(1..4),
        mutations in vec(mutation(), 1..5),
        decode_as in version(),
        max in max_size(),
    ) {
        let wire: Vec<u8> = packets.iter().flat_map(|p| encode(p, v)).collect();
        let bytes = mutate(wire, &mutations);
        decode_all_checked(&bytes, v, max)?;
        decode_all_checked(&bytes, decode_as, max)?;
    }

    /// Valid encodings whose bodies are cut short, with the remaining length fixed to match,
    /// decode to an error or to a packet that is no longer when encoded again (a longer one
    /// means the decoder filled in a field the specification makes mandatory).
    #[test]
    fn cut_bodies_decode_canonically(
        (v, packets) in versioned_packets(1..4),
        cuts in vec(any::<Index>(), 4),
    ) {
        for (packet, keep) in packets.iter().zip(cuts) {
            let bytes = cut_body(&encode(packet, v), keep);
            decode_all_checked(&bytes, v, usize::MAX)?;
        }
    }
}

proptest! {
    #![proptest_config(config(300))]

    /// Packets back to back, delivered in arbitrary chunks with `decode` called after each,
    /// come out complete, in order and unchanged; "read more" never consumes.
    #[test]
    fn chunked_stream_yields_the_same_packets(
        (v, packets) in versioned_packets(1..6),
        chunks in prop_oneof![
            vec(1usize..4, 1..16),
            vec(1usize..64, 1..16),
            vec(1usize..4096, 1..4),
        ],
    ) {
        let wire: Vec<u8> = packets.iter().flat_map(|p| encode(p, v)).collect();

        // All at once: the packets in order, nothing left.
        prop_assert_eq!(decode_all_checked(&wire, v, MAX_PACKET_SIZE)?, packets.clone());

        let mut stream = BytesMut::new();
        let mut out = Vec::new();
        let mut sent = 0;
        for &chunk in chunks.iter().cycle() {
            if sent == wire.len() {
                break;
            }
            let end = (sent + chunk).min(wire.len());
            stream.extend_from_slice(&wire[sent..end]);
            sent = end;
            loop {
                let before = stream.to_vec();
                match decode(&mut stream, v, MAX_PACKET_SIZE) {
                    Ok(Some(packet)) => out.push(packet),
                    Ok(None) => {
                        prop_assert_eq!(&stream[..], &before[..], "Ok(None) consumed bytes");
                        break;
                    }
                    Err(e) => {
                        return Err(TestCaseError::fail(format!(
                            "{e} after {sent} of {} bytes", wire.len()
                        )));
                    }
                }
            }
        }
        prop_assert_eq!(out, packets);
        prop_assert!(stream.is_empty());
    }
}

proptest! {
    #![proptest_config(config(500))]

    /// A limit below the packet's size is `PacketTooLarge` as soon as the fixed header is in,
    /// whatever part of the body has arrived; before that, it is "read more".
    #[test]
    fn too_large_is_reported_from_the_fixed_header(
        (v, packet) in versioned_packet(),
        max_at in any::<Index>(),
        cut in any::<Index>(),
    ) {
        let wire = encode(&packet, v);
        let size = wire.len();
        let header_len = fixed_header_len(&wire);
        let max = max_at.index(size);
        let arrived = header_len + cut.index(size - header_len + 1);
        let expected = DecodeError::PacketTooLarge { size, max };

        let mut buf = BytesMut::from(&wire[..arrived]);
        prop_assert_eq!(decode(&mut buf, v, max), Err(expected.clone()));
        prop_assert_eq!(check_frame(&wire[..arrived], v, max), Err(expected));

        for partial in 0..header_len {
            let mut buf = BytesMut::from(&wire[..partial]);
            prop_assert_eq!(decode(&mut buf, v, max), Ok(None));
            prop_assert_eq!(&buf[..], &wire[..partial]);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Topics
// ---------------------------------------------------------------------------------------------

/// A topic name over a tiny alphabet, so that filters below match it often.
fn small_topic() -> BoxedStrategy<String> {
    vec(select(vec!["a", "b", "$a", "$", ""]), 1..5)
        .prop_map(|levels| levels.join("/"))
        .prop_filter("a topic name is not empty", |t| !t.is_empty())
        .boxed()
}

/// A topic filter over the same alphabet plus `+`, possibly ending in `#`.
fn small_filter() -> BoxedStrategy<String> {
    (
        vec(select(vec!["a", "b", "$a", "$", "", "+", "+"]), 0..5),
        any::<bool>(),
    )
        .prop_map(|(mut levels, hash)| {
            if hash || levels.is_empty() {
                levels.push("#");
            }
            levels.join("/")
        })
        .prop_filter("a topic filter is not empty", |f| !f.is_empty())
        .boxed()
}

proptest! {
    #![proptest_config(config(1000))]

    /// `topic::matches` agrees with the naive reference matcher.
    #[test]
    fn matches_agrees_with_reference(filter in small_filter(), topic in small_topic()) {
        prop_assert!(validate_topic_filter(&filter).is_ok(), "{filter}");
        prop_assert!(validate_topic_name(&topic).is_ok(), "{topic}");
        prop_assert_eq!(
            matches(&filter, &topic),
            reference_matches(&filter, &topic),
            "filter {:?} topic {:?}", filter, topic
        );
        // A filter that is the topic itself always matches; `#` matches every topic not
        // starting with `$`.
        prop_assert!(matches(&topic, &topic));
        prop_assert_eq!(matches("#", &topic), !topic.starts_with('$'));
    }

    /// The generators produce topics the validators accept, shared subscriptions split back
    /// into their parts, and a wildcard makes a topic name invalid.
    #[test]
    fn generated_topics_validate(
        name in topic_name(),
        (filter, shared) in topic_filter(),
        at in any::<Index>(),
        wildcard in select(vec!['+', '#']),
    ) {
        prop_assert_eq!(validate_topic_name(&name), Ok(()));
        prop_assert_eq!(validate_topic_filter(&filter), Ok(()));
        let parsed = parse_shared(&filter).unwrap();
        prop_assert_eq!(parsed.is_some(), shared);
        if let Some(s) = parsed {
            prop_assert_eq!(format!("$share/{}/{}", s.group, s.filter), filter.to_string());
            prop_assert_eq!(validate_topic_filter(s.filter), Ok(()));
        } else {
            // An ordinary filter matched against a topic equal to it with wildcards filled in.
            let topic = filter.replace('+', "x").replace("/#", "").replace('#', "x");
            if !topic.is_empty() && !topic.starts_with('$') {
                prop_assert!(matches(&filter, &topic), "{filter} vs {topic}");
            }
        }
        let mut broken: Vec<char> = name.chars().collect();
        broken.insert(at.index(broken.len() + 1), wildcard);
        let broken: String = broken.into_iter().collect();
        prop_assert_eq!(validate_topic_name(&broken), Err(TopicError::WildcardInName));
    }
}
