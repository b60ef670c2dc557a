//! The byte vectors of mqtt-packet's test suite, checked against this codec.
//!
//! mqtt-packet is the MQTT codec of MQTT.js; its vectors (npm package `mqtt-packet` 9.0.2,
//! `test.js`, MIT license) are extracted into `tests/vectors/mqtt-packet.json` by
//! `tests/vectors/extract-mqtt-packet.js` (see `tests/vectors/README.md`). This test reads
//! only the committed JSON.
//!
//! - Parse vectors (`parse_generate`, `parse_only`): the bytes are decoded and the packet,
//!   rendered the way MQTT.js names its fields (`messageId`, `clientId`, `properties.
//!   sessionExpiryInterval`, `userProperties` as an object, ...), must equal the JS object:
//!   every key, every property, nothing more. The packet is then encoded again; for
//!   `parse_generate` the bytes must be the original ones, except where this codec picks a
//!   different valid encoding ([`ENCODED_DIFFERENTLY`]), which is then compared by decoding.
//!   The packet built from the JS object must equal the decoded one.
//! - Generate vectors (`generate_only`): the packet is built from the JS object and encoded;
//!   the bytes must match, and the reference bytes must decode to the same packet.
//! - Error vectors (`parse_error`): the decoder must reject the bytes, read as a stream
//!   (packets one after another; waiting for more bytes is no rejection). Some are also
//!   checked for the reason ([`PARSE_ERROR_REASONS`]).
//! - Generator errors (`generate_error`, `write_to_stream_error`): each is classified in
//!   [`GENERATE_ERRORS`]; mostly JS values that this crate's types cannot express at all.
//!
//! Where mqtt-packet accepts what the specification forbids, the vector is listed in
//! [`SPEC_VIOLATIONS`] with the rule, and the test asserts that this codec rejects it.
//! A table entry that no longer matches a vector fails the test, as does an unlisted
//! disagreement: nothing is skipped silently. The tests print their counts
//! (`cargo test -p mqtt-codec --test mqtt_packet_vectors -- --nocapture`).

use std::collections::BTreeSet;

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use mqtt_codec::properties::{
    AckProperties, AuthProperties, ConnAckProperties, ConnectProperties, DisconnectProperties,
    PublishProperties, SubscribeProperties, UnsubscribeProperties, UserProperties, WillProperties,
};
use mqtt_codec::{
    Ack, Auth, ConnAck, Connect, DecodeError, Disconnect, EncodeError, LastWill, MAX_PACKET_SIZE,
    Packet, PacketType, PropertyId, ProtocolVersion, Publish, QoS, ReasonCode, RetainHandling,
    SubAck, Subscribe, Subscription, SubscriptionOptions, UnsubAck, Unsubscribe, decode,
};
use serde_json::{Map, Value, json};

const VECTORS: &str = include_str!("vectors/mqtt-packet.json");

/// Fewer vectors than this means a broken or truncated JSON file.
const FLOOR: [(&str, usize); 6] = [
    ("parse_generate", 50),
    ("parse_only", 14),
    ("generate_only", 9),
    ("parse_error", 55),
    ("generate_error", 25),
    ("write_to_stream_error", 2),
];

// ---------------------------------------------------------------------------------------
// Exception tables
// ---------------------------------------------------------------------------------------

/// A vector mqtt-packet parses although the specification forbids it; this codec must
/// reject it, with the error named here.
struct SpecViolation {
    id: &'static str,
    rule: &'static str,
    why: &'static str,
    rejected_with: fn(&DecodeError) -> bool,
    /// Where one byte is all that is wrong, the vector is also checked with it corrected:
    /// `from` is replaced by `to` in the bytes and `set` (JSON pointer, value) in the object.
    corrected: Option<Correction>,
}

struct Correction {
    from: &'static [u8],
    to: &'static [u8],
    set: &'static [(&'static str, u64)],
}

const SPEC_VIOLATIONS: &[SpecViolation] = &[
    SpecViolation {
        id: "parse_generate: connect MQTT bridge 131 [v4]",
        rule: "[MQTT-3.1.2-2]",
        why: "protocol level 0x83 is Mosquitto's bridge extension (level 3 | 0x80), not an \
              MQTT level: the server answers CONNACK 0x01 and closes",
        rejected_with: |e| matches!(e, DecodeError::UnsupportedProtocol { level: 131, .. }),
        corrected: None,
    },
    SpecViolation {
        id: "parse_generate: connect MQTT bridge 132 [v4]",
        rule: "[MQTT-3.1.2-2]",
        why: "protocol level 0x84 (4 | 0x80, bridge extension) with protocol name \"MQIsdp\": \
              neither a 3.1 nor a 3.1.1 CONNECT",
        rejected_with: |e| matches!(e, DecodeError::UnsupportedProtocol { level: 132, .. }),
        corrected: None,
    },
    SpecViolation {
        id: "parse_only: Version 4 CONACK in Version 5 mode [v5]",
        rule: "MQTT 5.0 §3.2.2.2, [MQTT-2.2.2-1]",
        why: "a 3.1.1 CONNACK read on a 5.0 connection: 0x01 is not a 5.0 CONNACK reason code, \
              and the property length is missing",
        rejected_with: |e| {
            matches!(
                e,
                DecodeError::InvalidReasonCode {
                    packet: PacketType::ConnAck,
                    code: 1
                }
            )
        },
        corrected: None,
    },
    SpecViolation {
        id: "parse_only: Version 5 CONNACK test 1 [v5]",
        rule: "MQTT 5.0 §3.2.2, [MQTT-2.2.2-1]",
        why: "a 5.0 CONNACK must carry its reason code and a property length (0 when there are \
              no properties); unlike PUBACK, DISCONNECT and AUTH it has no short form",
        rejected_with: |e| {
            matches!(
                e,
                DecodeError::UnexpectedEnd {
                    packet: PacketType::ConnAck,
                    ..
                }
            )
        },
        corrected: None,
    },
    SpecViolation {
        id: "parse_only: Version 5 CONNACK test 2 [v5]",
        rule: "[MQTT-2.2.2-1]",
        why: "a 5.0 CONNACK without properties must still carry a property length of 0",
        rejected_with: |e| {
            matches!(
                e,
                DecodeError::UnexpectedEnd {
                    packet: PacketType::ConnAck,
                    ..
                }
            )
        },
        corrected: None,
    },
    SpecViolation {
        id: "parse_generate: connack MQTT 5 with properties [v5]",
        rule: "MQTT 5.0 §3.2.2.3.4",
        why: "Maximum QoS 2: \"It is a Protocol Error to include Maximum QoS more than once, or \
              to have a value other than 0 or 1\" (absence means 2)",
        rejected_with: |e| {
            matches!(
                e,
                DecodeError::InvalidPropertyValue {
                    id: PropertyId::MaximumQoS,
                    value: 2
                }
            )
        },
        corrected: Some(Correction {
            from: &[0x24, 0x02],
            to: &[0x24, 0x01],
            set: &[("/properties/maximumQoS", 1)],
        }),
    },
    SpecViolation {
        id: "parse_generate: connack MQTT 5 with properties and doubled user properties [v5]",
        rule: "MQTT 5.0 §3.2.2.3.4",
        why: "Maximum QoS 2, as above",
        rejected_with: |e| {
            matches!(
                e,
                DecodeError::InvalidPropertyValue {
                    id: PropertyId::MaximumQoS,
                    value: 2
                }
            )
        },
        corrected: Some(Correction {
            from: &[0x24, 0x02],
            to: &[0x24, 0x01],
            set: &[("/properties/maximumQoS", 1)],
        }),
    },
];

/// Vectors this codec encodes differently from mqtt-packet, both encodings being valid.
/// They are compared by decoding: the reference bytes and ours must give the same packet.
/// (Property order could legitimately differ too, and would be listed here; it does not:
/// both write properties in the same order for every vector.)
const ENCODED_DIFFERENTLY: &[(&str, &str)] = &[
    (
        "parse_generate: puback with reason and no MQTT 5 properties [v5]",
        "we omit the empty property length (40 03 00 02 10); MQTT 5.0 §3.4.2.2.1 allows it \
         when the remaining length is under 4",
    ),
    (
        "parse_generate: disconnect MQTT 5 with no properties [v5]",
        "normal disconnection without properties: we send e0 00; §3.14.2.1 lets reason code \
         and property length be omitted when the remaining length is 0",
    ),
    (
        "generate_only: Version 5 DISCONNECT test 3 generate [v5]",
        "as above: e0 00 instead of e0 02 00 00",
    ),
];

/// Parse-error vectors that this codec accepts. Empty: every one is rejected.
const ACCEPTED_PARSE_ERRORS: &[(&str, &str)] = &[];

/// Parse-error vectors whose rejection is also checked for its reason. Four CONNECTs of
/// test.js pair the protocol name "MQTT" with level 3, which is no MQTT version, so this
/// codec stops there ([MQTT-3.1.2-2]) before the flag it is meant to test; they are checked
/// again with level 4 (`from` replaced by `to`), where the intended rule must fire.
struct ParseErrorReason {
    id: &'static str,
    retarget: Option<(&'static [u8], &'static [u8])>,
    rejected_with: fn(&DecodeError) -> bool,
}

const MQTT_LEVEL_3_TO_4: Option<(&[u8], &[u8])> = Some((b"MQTT\x03", b"MQTT\x04"));

const PARSE_ERROR_REASONS: &[ParseErrorReason] = &[
    ParseErrorReason {
        id: "parse_error: Connect flag bit 0 must be 0, but got 1 [v4]",
        retarget: MQTT_LEVEL_3_TO_4,
        rejected_with: |e| matches!(e, DecodeError::ConnectReservedFlag),
    },
    ParseErrorReason {
        id: "parse_error: Will Retain Flag must be set to zero when Will Flag is set to 0 [v4]",
        retarget: MQTT_LEVEL_3_TO_4,
        rejected_with: |e| matches!(e, DecodeError::WillFlagsWithoutWill),
    },
    ParseErrorReason {
        id: "parse_error: Will QoS must be set to zero when Will Flag is set to 0 [v4]",
        retarget: MQTT_LEVEL_3_TO_4,
        rejected_with: |e| matches!(e, DecodeError::WillFlagsWithoutWill),
    },
    ParseErrorReason {
        id: "parse_error: Will QoS must be set to zero when Will Flag is set to 0 [v4] #2",
        retarget: MQTT_LEVEL_3_TO_4,
        rejected_with: |e| matches!(e, DecodeError::WillFlagsWithoutWill),
    },
    // CONNACK's acknowledge flags have their own rule, not the fixed header's.
    ParseErrorReason {
        id: "parse_error: Invalid connack flags, bits 7-1 must be set to 0 [v4]",
        retarget: None,
        rejected_with: |e| matches!(e, DecodeError::ConnAckFlagsReserved(0x02)),
    },
];

/// How a generator error of mqtt-packet maps onto this crate.
enum GenError {
    /// The JS value has a type or range this crate's types cannot hold (a string keep-alive,
    /// a negative property, an unknown command, ...): building the packet fails at `field`.
    Unrepresentable { field: &'static str },
    /// This encoder refuses it as well.
    EncoderRejects(fn(&EncodeError) -> bool),
    /// A well-formed packet the server refuses by policy with a CONNACK, not a codec rule:
    /// it encodes and decodes.
    ServerPolicy(&'static str),
}

const GENERATE_ERRORS: &[(&str, GenError)] = &[
    (
        "generate_error: Unknown command [v4]",
        GenError::Unrepresentable { field: "cmd" },
    ),
    (
        "generate_error: Invalid return code [v4]",
        GenError::Unrepresentable {
            field: "returnCode",
        },
    ),
    (
        "generate_error: Length var byte integer over max allowed value throws error [v4]",
        GenError::EncoderRejects(|e| matches!(e, EncodeError::PacketTooLarge(268_435_456))),
    ),
    (
        "generate_error: MQTT 5.0 var byte integer >24 bits throws error [v5]",
        GenError::EncoderRejects(|e| {
            matches!(
                e,
                EncodeError::ValueOutOfRange {
                    value: 268_435_456,
                    ..
                }
            )
        }),
    ),
    (
        "generate_error: unsubscribe with unsubscriptions not an array [v4]",
        GenError::Unrepresentable {
            field: "unsubscriptions",
        },
    ),
    (
        "generate_error: unsubscribe with unsubscriptions as an object [v4]",
        GenError::Unrepresentable {
            field: "unsubscriptions",
        },
    ),
    (
        "generate_error: Invalid protocolId [v4]",
        GenError::Unrepresentable {
            field: "protocolId",
        },
    ),
    (
        "generate_error: Invalid protocol version [v4]",
        GenError::Unrepresentable {
            field: "protocolVersion",
        },
    ),
    (
        "generate_error: clientId must be supplied before 3.1.1 [v4]",
        GenError::ServerPolicy(
            "MQTT 3.1 §3.1: a client identifier of 1 to 23 characters, else the server answers \
             CONNACK 2 (identifier rejected); the packet itself is well-formed",
        ),
    ),
    (
        "generate_error: clientId must be given if cleanSession set to 0 [v4]",
        GenError::ServerPolicy(
            "[MQTT-3.1.3-7]/[MQTT-3.1.3-8]: an empty client identifier with clean session 0 is \
             answered with CONNACK 0x02 (identifier rejected) by the server",
        ),
    ),
    (
        "generate_error: Invalid keepalive [v4]",
        GenError::Unrepresentable { field: "keepalive" },
    ),
    (
        "generate_error: Invalid keepalive [v4] #2",
        GenError::Unrepresentable { field: "keepalive" },
    ),
    (
        "generate_error: Invalid will [v4]",
        GenError::Unrepresentable { field: "will" },
    ),
    (
        "generate_error: Invalid will topic [v4]",
        GenError::Unrepresentable { field: "topic" },
    ),
    (
        "generate_error: Invalid will payload [v4]",
        GenError::Unrepresentable { field: "payload" },
    ),
    (
        "generate_error: Invalid username [v4]",
        GenError::Unrepresentable { field: "username" },
    ),
    (
        "generate_error: Invalid password [v4]",
        GenError::Unrepresentable { field: "password" },
    ),
    (
        "generate_error: Username is required to use password [v4]",
        GenError::EncoderRejects(|e| {
            matches!(
                e,
                EncodeError::Invalid {
                    rule: "[MQTT-3.1.2-22]",
                    ..
                }
            )
        }),
    ),
    (
        "generate_error: Invalid messageExpiryInterval: -4321 [v5]",
        GenError::Unrepresentable {
            field: "messageExpiryInterval",
        },
    ),
    (
        "generate_error: Invalid topicAlias: -100 [v5]",
        GenError::Unrepresentable {
            field: "topicAlias",
        },
    ),
    (
        "generate_error: Invalid subscriptionIdentifier: -120 [v5]",
        GenError::Unrepresentable {
            field: "subscriptionIdentifier",
        },
    ),
    (
        "generate_error: Invalid messageId on publish [v4]",
        GenError::Unrepresentable { field: "messageId" },
    ),
    (
        "generate_error: Invalid messageId on puback [v4]",
        GenError::Unrepresentable { field: "messageId" },
    ),
    (
        "generate_error: Invalid messageId on pubrec [v4]",
        GenError::Unrepresentable { field: "messageId" },
    ),
    (
        "generate_error: Invalid messageId on pubrel [v4]",
        GenError::Unrepresentable { field: "messageId" },
    ),
    (
        "generate_error: Invalid messageId on subscribe [v4]",
        GenError::Unrepresentable { field: "messageId" },
    ),
    (
        "generate_error: Invalid messageId on suback [v4]",
        GenError::Unrepresentable { field: "messageId" },
    ),
    (
        "generate_error: Invalid messageId on unsubscribe [v4]",
        GenError::Unrepresentable { field: "messageId" },
    ),
    (
        "generate_error: Invalid messageId on unsuback [v4]",
        GenError::Unrepresentable { field: "messageId" },
    ),
    (
        "write_to_stream_error: Invalid command [v4]",
        GenError::Unrepresentable { field: "cmd" },
    ),
    (
        "write_to_stream_error: Invalid protocolId [v4]",
        GenError::Unrepresentable {
            field: "protocolId",
        },
    ),
];

// ---------------------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------------------

/// Buffers over this size are stored as a prefix plus a count of trailing zeros.
const BIG: usize = 64 * 1024;
static ZEROS: [u8; BIG] = [0; BIG];

/// Bytes stored as `prefix` followed by `zeros` zero bytes (the 256 MiB vector is mostly
/// zeros; this keeps the JSON small and the test from touching that memory needlessly).
#[derive(Debug, Clone)]
struct Blob {
    prefix: Vec<u8>,
    zeros: usize,
}

impl Blob {
    fn len(&self) -> usize {
        self.prefix.len() + self.zeros
    }

    /// The bytes, in a zeroed allocation (left untouched by the kernel until written).
    fn to_vec(&self) -> Vec<u8> {
        let mut v = vec![0u8; self.len()];
        v[..self.prefix.len()].copy_from_slice(&self.prefix);
        v
    }

    fn to_bytes(&self) -> Bytes {
        Bytes::from(self.to_vec())
    }

    /// As a decode buffer; `Bytes` of a `Vec` becomes a `BytesMut` without a copy.
    fn decode_buffer(&self) -> BytesMut {
        BytesMut::from(self.to_bytes())
    }

    /// Whether the concatenation of `parts` is these bytes.
    fn matches(&self, parts: &[&[u8]]) -> bool {
        if parts.iter().map(|p| p.len()).sum::<usize>() != self.len() {
            return false;
        }
        let mut offset = 0;
        for part in parts {
            let in_prefix = self.prefix.len().saturating_sub(offset).min(part.len());
            let (head, tail) = part.split_at(in_prefix);
            if head != &self.prefix[offset..offset + in_prefix] || !all_zero(tail) {
                return false;
            }
            offset += part.len();
        }
        true
    }
}

fn all_zero(bytes: &[u8]) -> bool {
    bytes.chunks(BIG).all(|c| c == &ZEROS[..c.len()])
}

/// Length of `bytes` without its trailing zeros.
fn nonzero_len(bytes: &[u8]) -> usize {
    let mut end = bytes.len();
    while end > 0 {
        let start = end.saturating_sub(BIG);
        if let Some(i) = bytes[start..end].iter().rposition(|&b| b != 0) {
            return start + i + 1;
        }
        end = start;
    }
    0
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2), "odd hex length");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex digits"))
        .collect()
}

struct Vector {
    id: String,
    kind: String,
    line: u64,
    version: ProtocolVersion,
    wire: Option<Blob>,
    object: Option<Value>,
}

impl Vector {
    fn wire(&self) -> &Blob {
        self.wire.as_ref().expect("this kind of vector has bytes")
    }

    fn object(&self) -> &Value {
        self.object
            .as_ref()
            .expect("this kind of vector has an object")
    }

    fn label(&self) -> String {
        format!("{} (test.js:{})", self.id, self.line)
    }
}

fn version_of(level: u64) -> ProtocolVersion {
    match level {
        3 => ProtocolVersion::V3_1,
        4 => ProtocolVersion::V3_1_1,
        5 => ProtocolVersion::V5,
        other => panic!("protocol version {other} in the vectors"),
    }
}

fn load() -> Vec<Vector> {
    let all: Value = serde_json::from_str(VECTORS).expect("mqtt-packet.json is JSON");
    let all = all.as_array().expect("mqtt-packet.json is an array");
    let vectors: Vec<Vector> = all
        .iter()
        .map(|v| {
            let text = |k: &str| v[k].as_str().expect("string field").to_owned();
            Vector {
                id: text("id"),
                kind: text("kind"),
                line: v["line"].as_u64().expect("line"),
                version: version_of(v["protocolVersion"].as_u64().expect("protocolVersion")),
                wire: v["hex"].as_str().map(|h| Blob {
                    prefix: unhex(h),
                    zeros: v["trailingZeros"].as_u64().map_or(0, |z| z as usize),
                }),
                object: v.get("object").cloned(),
            }
        })
        .collect();
    let ids: BTreeSet<&str> = vectors.iter().map(|v| v.id.as_str()).collect();
    assert_eq!(ids.len(), vectors.len(), "vector ids are unique");
    vectors
}

fn of_kind<'a>(vectors: &'a [Vector], kinds: &[&str]) -> Vec<&'a Vector> {
    vectors
        .iter()
        .filter(|v| kinds.contains(&v.kind.as_str()))
        .collect()
}

fn assert_all_used(table: &str, ids: impl IntoIterator<Item = &'static str>, vectors: &[Vector]) {
    let known: BTreeSet<&str> = vectors.iter().map(|v| v.id.as_str()).collect();
    for id in ids {
        assert!(
            known.contains(id),
            "{table} lists {id:?}, which is no vector"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Decoding and encoding
// ---------------------------------------------------------------------------------------

#[derive(Debug)]
enum Decoded {
    Packet(Packet),
    Rejected(DecodeError),
    Incomplete,
    Trailing(usize),
}

impl std::fmt::Display for Decoded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Decoded::Packet(p) => write!(f, "{p:?}"),
            Decoded::Rejected(e) => write!(f, "rejected: {e} {}", e.rule()),
            Decoded::Incomplete => write!(f, "incomplete, waiting for more bytes"),
            Decoded::Trailing(n) => write!(f, "a packet followed by {n} more bytes"),
        }
    }
}

/// Decodes exactly one packet from the whole buffer.
fn decode_one(mut buf: BytesMut, version: ProtocolVersion) -> Decoded {
    match decode(&mut buf, version, MAX_PACKET_SIZE) {
        Ok(Some(p)) if buf.is_empty() => Decoded::Packet(p),
        Ok(Some(_)) => Decoded::Trailing(buf.len()),
        Ok(None) => Decoded::Incomplete,
        Err(e) => Decoded::Rejected(e),
    }
}

/// The version a packet is encoded with: CONNECT carries its own.
fn encode_version(p: &Packet, connection: ProtocolVersion) -> ProtocolVersion {
    match p {
        Packet::Connect(c) => c.protocol,
        _ => connection,
    }
}

/// Encodes `p`; a large PUBLISH as header and payload, so that its payload is not copied.
fn encode_parts(p: &Packet, version: ProtocolVersion) -> Result<Vec<Bytes>, EncodeError> {
    let version = encode_version(p, version);
    match p {
        Packet::Publish(publish) if publish.payload.len() > BIG => {
            let mut header = BytesMut::new();
            publish.encode_header(version, &mut header)?;
            Ok(vec![header.freeze(), publish.payload.clone()])
        }
        _ => Ok(vec![p.to_bytes(version)?]),
    }
}

// ---------------------------------------------------------------------------------------
// Our packet, as MQTT.js names its fields
// ---------------------------------------------------------------------------------------

fn cmd_name(t: PacketType) -> &'static str {
    match t {
        PacketType::Connect => "connect",
        PacketType::ConnAck => "connack",
        PacketType::Publish => "publish",
        PacketType::PubAck => "puback",
        PacketType::PubRec => "pubrec",
        PacketType::PubRel => "pubrel",
        PacketType::PubComp => "pubcomp",
        PacketType::Subscribe => "subscribe",
        PacketType::SubAck => "suback",
        PacketType::Unsubscribe => "unsubscribe",
        PacketType::UnsubAck => "unsuback",
        PacketType::PingReq => "pingreq",
        PacketType::PingResp => "pingresp",
        PacketType::Disconnect => "disconnect",
        PacketType::Auth => "auth",
    }
}

/// A buffer as the normalised JSON form used for comparing: hex, or for buffers over
/// [`BIG`] hex without the trailing zeros plus their count.
fn js_buffer(bytes: &[u8]) -> Value {
    if bytes.len() <= BIG {
        return json!({ "$buffer": hex(bytes) });
    }
    let end = nonzero_len(bytes);
    json!({ "$buffer": hex(&bytes[..end]), "$zeros": bytes.len() - end })
}

/// User properties as MQTT.js gives them: an object whose repeated names hold arrays.
fn js_user_properties(list: &UserProperties) -> Value {
    let mut out = Map::new();
    for (name, value) in list {
        let value = Value::from(&**value);
        match out.get_mut(&**name) {
            None => {
                out.insert(name.to_string(), value);
            }
            Some(Value::Array(values)) => values.push(value),
            Some(first) => *first = Value::Array(vec![first.take(), value]),
        }
    }
    Value::Object(out)
}

/// Collects the properties that are present, under their MQTT.js names.
#[derive(Default)]
struct JsProps(Map<String, Value>);

impl JsProps {
    fn put(&mut self, name: &str, value: Option<Value>) {
        if let Some(value) = value {
            self.0.insert(name.to_owned(), value);
        }
    }
    fn num<T: Into<u64>>(&mut self, name: &str, v: Option<T>) {
        self.put(name, v.map(|v| Value::from(v.into())));
    }
    fn flag(&mut self, name: &str, v: Option<bool>) {
        self.put(name, v.map(Value::from));
    }
    fn text(&mut self, name: &str, v: &Option<ByteString>) {
        self.put(name, v.as_deref().map(Value::from));
    }
    fn binary(&mut self, name: &str, v: &Option<Bytes>) {
        self.put(name, v.as_deref().map(js_buffer));
    }
    fn user(&mut self, list: &UserProperties) {
        if !list.is_empty() {
            self.put("userProperties", Some(js_user_properties(list)));
        }
    }
    /// Into `obj` under "properties", unless there are none (MQTT.js then leaves the key out).
    fn into_field(self, obj: &mut Map<String, Value>) {
        if !self.0.is_empty() {
            obj.insert("properties".into(), Value::Object(self.0));
        }
    }
}

fn js_connect_props(p: &ConnectProperties) -> JsProps {
    let mut j = JsProps::default();
    j.num("sessionExpiryInterval", p.session_expiry_interval);
    j.num("receiveMaximum", p.receive_maximum);
    j.num("maximumPacketSize", p.maximum_packet_size);
    j.num("topicAliasMaximum", p.topic_alias_maximum);
    j.flag("requestResponseInformation", p.request_response_information);
    j.flag("requestProblemInformation", p.request_problem_information);
    j.user(&p.user_properties);
    j.text("authenticationMethod", &p.authentication_method);
    j.binary("authenticationData", &p.authentication_data);
    j
}

fn js_will_props(p: &WillProperties) -> JsProps {
    let mut j = JsProps::default();
    j.num("willDelayInterval", p.will_delay_interval);
    j.flag("payloadFormatIndicator", p.payload_format_indicator);
    j.num("messageExpiryInterval", p.message_expiry_interval);
    j.text("contentType", &p.content_type);
    j.text("responseTopic", &p.response_topic);
    j.binary("correlationData", &p.correlation_data);
    j.user(&p.user_properties);
    j
}

fn js_connack_props(p: &ConnAckProperties) -> JsProps {
    let mut j = JsProps::default();
    j.num("sessionExpiryInterval", p.session_expiry_interval);
    j.num("receiveMaximum", p.receive_maximum);
    j.num("maximumQoS", p.maximum_qos.map(|q| q as u8));
    j.flag("retainAvailable", p.retain_available);
    j.num("maximumPacketSize", p.maximum_packet_size);
    j.text("assignedClientIdentifier", &p.assigned_client_identifier);
    j.num("topicAliasMaximum", p.topic_alias_maximum);
    j.text("reasonString", &p.reason_string);
    j.user(&p.user_properties);
    j.flag(
        "wildcardSubscriptionAvailable",
        p.wildcard_subscription_available,
    );
    j.flag(
        "subscriptionIdentifiersAvailable",
        p.subscription_identifiers_available,
    );
    j.flag(
        "sharedSubscriptionAvailable",
        p.shared_subscription_available,
    );
    j.num("serverKeepAlive", p.server_keep_alive);
    j.text("responseInformation", &p.response_information);
    j.text("serverReference", &p.server_reference);
    j.text("authenticationMethod", &p.authentication_method);
    j.binary("authenticationData", &p.authentication_data);
    j
}

fn js_publish_props(p: &PublishProperties) -> JsProps {
    let mut j = JsProps::default();
    j.flag("payloadFormatIndicator", p.payload_format_indicator);
    j.num("messageExpiryInterval", p.message_expiry_interval);
    j.num("topicAlias", p.topic_alias);
    j.text("responseTopic", &p.response_topic);
    j.binary("correlationData", &p.correlation_data);
    j.user(&p.user_properties);
    // One identifier is a number, several an array (as MQTT.js parses repeated properties).
    j.put(
        "subscriptionIdentifier",
        match &p.subscription_identifiers[..] {
            [] => None,
            [one] => Some(Value::from(*one)),
            many => Some(Value::from(many.to_vec())),
        },
    );
    j.text("contentType", &p.content_type);
    j
}

fn js_ack_props(p: &AckProperties) -> JsProps {
    let mut j = JsProps::default();
    j.text("reasonString", &p.reason_string);
    j.user(&p.user_properties);
    j
}

fn js_subscribe_props(p: &SubscribeProperties) -> JsProps {
    let mut j = JsProps::default();
    j.num("subscriptionIdentifier", p.subscription_identifier);
    j.user(&p.user_properties);
    j
}

fn js_unsubscribe_props(p: &UnsubscribeProperties) -> JsProps {
    let mut j = JsProps::default();
    j.user(&p.user_properties);
    j
}

fn js_disconnect_props(p: &DisconnectProperties) -> JsProps {
    let mut j = JsProps::default();
    j.num("sessionExpiryInterval", p.session_expiry_interval);
    j.text("reasonString", &p.reason_string);
    j.user(&p.user_properties);
    j.text("serverReference", &p.server_reference);
    j
}

fn js_auth_props(p: &AuthProperties) -> JsProps {
    let mut j = JsProps::default();
    j.text("authenticationMethod", &p.authentication_method);
    j.binary("authenticationData", &p.authentication_data);
    j.text("reasonString", &p.reason_string);
    j.user(&p.user_properties);
    j
}

/// The decoded packet as MQTT.js's parser would give it. `remaining` is the remaining
/// length of the bytes it came from (MQTT.js's `length`).
fn to_js(p: &Packet, version: ProtocolVersion, remaining: usize) -> Value {
    let v5 = version.is_v5();
    let mut o = Map::new();
    o.insert("cmd".into(), cmd_name(p.packet_type()).into());
    // The fixed header flags, as MQTT.js reports them for every packet: PUBREL, SUBSCRIBE
    // and UNSUBSCRIBE have the fixed bits 0010, which it reads as QoS 1.
    let (retain, qos, dup) = match p {
        Packet::Publish(p) => (p.retain, p.qos as u8, p.dup),
        Packet::PubRel(_) | Packet::Subscribe(_) | Packet::Unsubscribe(_) => (false, 1, false),
        _ => (false, 0, false),
    };
    o.insert("retain".into(), retain.into());
    o.insert("qos".into(), qos.into());
    o.insert("dup".into(), dup.into());
    o.insert("length".into(), remaining.into());
    if !matches!(p, Packet::Publish(_)) {
        o.insert("topic".into(), Value::Null);
        o.insert("payload".into(), Value::Null);
    }
    let ack = |o: &mut Map<String, Value>, a: &Ack| {
        o.insert("messageId".into(), a.packet_id.into());
        if v5 {
            o.insert("reasonCode".into(), (a.reason_code as u8).into());
        }
        js_ack_props(&a.properties).into_field(o);
    };
    match p {
        Packet::Connect(c) => {
            o.insert("protocolId".into(), c.protocol.protocol_name().into());
            o.insert("protocolVersion".into(), c.protocol.level().into());
            o.insert("clean".into(), c.clean_start.into());
            o.insert("keepalive".into(), c.keep_alive.into());
            o.insert("clientId".into(), (&*c.client_id).into());
            if let Some(will) = &c.will {
                let mut w = Map::new();
                w.insert("retain".into(), will.retain.into());
                w.insert("qos".into(), (will.qos as u8).into());
                w.insert("topic".into(), (&*will.topic).into());
                w.insert("payload".into(), js_buffer(&will.payload));
                js_will_props(&will.properties).into_field(&mut w);
                o.insert("will".into(), Value::Object(w));
            }
            if let Some(username) = &c.username {
                o.insert("username".into(), (&**username).into());
            }
            if let Some(password) = &c.password {
                o.insert("password".into(), js_buffer(password));
            }
            js_connect_props(&c.properties).into_field(&mut o);
        }
        Packet::ConnAck(c) => {
            o.insert("sessionPresent".into(), c.session_present.into());
            if v5 {
                o.insert("reasonCode".into(), (c.reason_code as u8).into());
            } else {
                let code = c.reason_code.to_connack_return_code();
                o.insert("returnCode".into(), code.into());
            }
            js_connack_props(&c.properties).into_field(&mut o);
        }
        Packet::Publish(p) => {
            o.insert("topic".into(), (&*p.topic).into());
            o.insert("payload".into(), js_buffer(&p.payload));
            if p.qos != QoS::AtMostOnce {
                o.insert("messageId".into(), p.packet_id.into());
            }
            js_publish_props(&p.properties).into_field(&mut o);
        }
        Packet::PubAck(a) | Packet::PubRec(a) | Packet::PubRel(a) | Packet::PubComp(a) => {
            ack(&mut o, a);
        }
        Packet::Subscribe(s) => {
            o.insert("messageId".into(), s.packet_id.into());
            let subs: Vec<Value> = s
                .subscriptions
                .iter()
                .map(|sub| {
                    let mut m = Map::new();
                    m.insert("topic".into(), (&*sub.filter).into());
                    m.insert("qos".into(), (sub.options.qos as u8).into());
                    if v5 {
                        m.insert("nl".into(), sub.options.no_local.into());
                        m.insert("rap".into(), sub.options.retain_as_published.into());
                        m.insert("rh".into(), (sub.options.retain_handling as u8).into());
                    }
                    Value::Object(m)
                })
                .collect();
            o.insert("subscriptions".into(), subs.into());
            js_subscribe_props(&s.properties).into_field(&mut o);
        }
        Packet::SubAck(s) => {
            o.insert("messageId".into(), s.packet_id.into());
            let granted: Vec<u8> = s
                .reason_codes
                .iter()
                .map(|rc| {
                    if v5 {
                        *rc as u8
                    } else {
                        rc.to_suback_return_code()
                    }
                })
                .collect();
            o.insert("granted".into(), granted.into());
            js_ack_props(&s.properties).into_field(&mut o);
        }
        Packet::Unsubscribe(u) => {
            o.insert("messageId".into(), u.packet_id.into());
            let filters: Vec<&str> = u.filters.iter().map(|f| &**f).collect();
            o.insert("unsubscriptions".into(), filters.into());
            js_unsubscribe_props(&u.properties).into_field(&mut o);
        }
        Packet::UnsubAck(u) => {
            o.insert("messageId".into(), u.packet_id.into());
            if v5 {
                let codes: Vec<u8> = u.reason_codes.iter().map(|rc| *rc as u8).collect();
                o.insert("granted".into(), codes.into());
            }
            js_ack_props(&u.properties).into_field(&mut o);
        }
        Packet::PingReq | Packet::PingResp => {}
        Packet::Disconnect(d) => {
            if v5 {
                o.insert("reasonCode".into(), (d.reason_code as u8).into());
            }
            js_disconnect_props(&d.properties).into_field(&mut o);
        }
        Packet::Auth(a) => {
            o.insert("reasonCode".into(), (a.reason_code as u8).into());
            js_auth_props(&a.properties).into_field(&mut o);
        }
    }
    Value::Object(o)
}

/// The JS object with its buffers in the normalised form of [`js_buffer`], and `username`
/// and `password` normalised as test.js's `normalExpectedObject` does (a username is
/// compared as a string, a password as a buffer).
fn normalise_expected(v: &Value) -> Value {
    fn walk(v: &Value) -> Value {
        match v {
            Value::Object(m) if m.contains_key("$buffer") => js_buffer(&blob_of(v).to_vec()),
            Value::Object(m) => {
                Value::Object(m.iter().map(|(k, v)| (k.clone(), walk(v))).collect())
            }
            Value::Array(a) => Value::Array(a.iter().map(walk).collect()),
            other => other.clone(),
        }
    }
    let mut out = walk(v);
    if let Some(Value::Object(u)) = out.get("username")
        && u.contains_key("$buffer")
    {
        let text = String::from_utf8(blob_of(&out["username"]).to_vec())
            .expect("a username buffer in the vectors is UTF-8");
        out["username"] = text.into();
    }
    if let Some(Value::String(s)) = out.get("password") {
        out["password"] = js_buffer(s.as_bytes());
    }
    out
}

/// A `{"$buffer": hex, "$zeros": n}` value.
fn blob_of(v: &Value) -> Blob {
    Blob {
        prefix: unhex(v["$buffer"].as_str().expect("$buffer is hex")),
        zeros: v
            .get("$zeros")
            .and_then(Value::as_u64)
            .map_or(0, |z| z as usize),
    }
}

/// Compares the JS object with ours. Every key of the JS object must be in ours with an
/// equal value; nested objects (properties, will, subscriptions) must match exactly. Ours
/// may have a top-level key the JS object lacks only when it is null (`topic`/`payload` of a
/// packet other than PUBLISH, which test.js deletes before comparing).
fn compare(expected: &Value, ours: &Value) -> Vec<String> {
    let mut diffs = Vec::new();
    compare_at("", expected, ours, true, &mut diffs);
    diffs
}

/// Objects are compared key by key (so a difference is reported where it is), all other
/// values as a whole. `top` allows ours the null keys described at [`compare`].
fn compare_at(path: &str, expected: &Value, ours: &Value, top: bool, diffs: &mut Vec<String>) {
    let (Some(e), Some(o)) = (expected.as_object(), ours.as_object()) else {
        if expected != ours {
            diffs.push(format!("`{path}`: expected {expected}, we have {ours}"));
        }
        return;
    };
    for (k, ev) in e {
        let at = if path.is_empty() {
            k.clone()
        } else {
            format!("{path}.{k}")
        };
        match o.get(k) {
            None => diffs.push(format!("`{at}`: expected {ev}, we have no such field")),
            Some(ov) => compare_at(&at, ev, ov, false, diffs),
        }
    }
    for (k, ov) in o {
        let allowed = top && ov.is_null();
        if !e.contains_key(k) && !allowed {
            diffs.push(format!(
                "`{path}.{k}`: we have {ov}, the JS object has no such field"
            ));
        }
    }
}

// ---------------------------------------------------------------------------------------
// Our packet, built from the JS object (what MQTT.js's generator would be given)
// ---------------------------------------------------------------------------------------

type Built<T> = Result<T, String>;

/// A JS object whose keys are taken one by one; keys left over are an error, so nothing in
/// the object is silently ignored. `null` counts as absent, as for MQTT.js.
struct Obj<'a> {
    what: &'static str,
    map: &'a Map<String, Value>,
    used: BTreeSet<&'static str>,
}

impl<'a> Obj<'a> {
    fn new(v: &'a Value, what: &'static str) -> Built<Self> {
        let map = v
            .as_object()
            .ok_or_else(|| format!("`{what}`: {v} is not an object"))?;
        Ok(Obj {
            what,
            map,
            used: BTreeSet::new(),
        })
    }

    fn get(&mut self, key: &'static str) -> Option<&'a Value> {
        self.used.insert(key);
        self.map.get(key).filter(|v| !v.is_null())
    }

    fn uint(&mut self, key: &'static str, max: u64) -> Built<Option<u64>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => match v.as_u64() {
                Some(n) if n <= max => Ok(Some(n)),
                _ => Err(format!("`{key}`: {v} is not an integer in 0..={max}")),
            },
        }
    }

    fn u8(&mut self, key: &'static str) -> Built<Option<u8>> {
        Ok(self.uint(key, u8::MAX.into())?.map(|n| n as u8))
    }

    fn u16(&mut self, key: &'static str) -> Built<Option<u16>> {
        Ok(self.uint(key, u16::MAX.into())?.map(|n| n as u16))
    }

    fn u32(&mut self, key: &'static str) -> Built<Option<u32>> {
        Ok(self.uint(key, u32::MAX.into())?.map(|n| n as u32))
    }

    fn flag(&mut self, key: &'static str) -> Built<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(format!("`{key}`: {v} is not a boolean")),
        }
    }

    fn qos(&mut self, key: &'static str) -> Built<QoS> {
        let n = self.u8(key)?.unwrap_or(0);
        QoS::from_u8(n).ok_or_else(|| format!("`{key}`: {n} is not a QoS"))
    }

    /// A string or a Buffer, as bytes.
    fn bytes(&mut self, key: &'static str) -> Built<Option<Bytes>> {
        self.get(key).map(|v| bytes_of(v, key)).transpose()
    }

    /// A string or a UTF-8 Buffer.
    fn text(&mut self, key: &'static str) -> Built<Option<ByteString>> {
        self.get(key).map(|v| text_of(v, key)).transpose()
    }

    fn user_properties(&mut self) -> Built<UserProperties> {
        let Some(v) = self.get("userProperties") else {
            return Ok(Vec::new());
        };
        let map = v
            .as_object()
            .ok_or_else(|| format!("`userProperties`: {v} is not an object"))?;
        if map.len() > 1 {
            // serde_json's Map is sorted, so the order of distinct names, which MQTT.js
            // writes in insertion order, is lost; no vector has more than one name.
            return Err("`userProperties`: several names, their order is lost".into());
        }
        let mut list = Vec::new();
        for (name, values) in map {
            let values = match values {
                Value::Array(a) => a.clone(),
                one => vec![one.clone()],
            };
            for value in values {
                let value = value
                    .as_str()
                    .ok_or_else(|| format!("`userProperties.{name}`: {value} is not a string"))?;
                list.push((name.as_str().into(), value.into()));
            }
        }
        Ok(list)
    }

    fn finish(self) -> Built<()> {
        let unused: Vec<&String> = self
            .map
            .keys()
            .filter(|k| !self.used.contains(k.as_str()))
            .collect();
        if unused.is_empty() {
            Ok(())
        } else {
            Err(format!("`{}`: no field of ours for {unused:?}", self.what))
        }
    }
}

fn bytes_of(v: &Value, key: &str) -> Built<Bytes> {
    match v {
        Value::String(s) => Ok(Bytes::from(s.clone().into_bytes())),
        Value::Object(m) if m.contains_key("$buffer") => Ok(blob_of(v).to_bytes()),
        _ => Err(format!("`{key}`: {v} is neither a string nor a Buffer")),
    }
}

fn text_of(v: &Value, key: &str) -> Built<ByteString> {
    let bytes = bytes_of(v, key)?;
    ByteString::try_from(bytes).map_err(|_| format!("`{key}`: not UTF-8"))
}

fn reason(code: u8, key: &str) -> Built<ReasonCode> {
    ReasonCode::from_u8(code).ok_or_else(|| format!("`{key}`: {code:#04x} is no reason code"))
}

fn props<'a>(o: &mut Obj<'a>) -> Built<Option<Obj<'a>>> {
    o.get("properties")
        .map(|v| Obj::new(v, "properties"))
        .transpose()
}

fn connect_props(p: Option<Obj<'_>>) -> Built<ConnectProperties> {
    let Some(mut p) = p else {
        return Ok(Default::default());
    };
    let out = ConnectProperties {
        session_expiry_interval: p.u32("sessionExpiryInterval")?,
        receive_maximum: p.u16("receiveMaximum")?,
        maximum_packet_size: p.u32("maximumPacketSize")?,
        topic_alias_maximum: p.u16("topicAliasMaximum")?,
        request_response_information: p.flag("requestResponseInformation")?,
        request_problem_information: p.flag("requestProblemInformation")?,
        user_properties: p.user_properties()?,
        authentication_method: p.text("authenticationMethod")?,
        authentication_data: p.bytes("authenticationData")?,
    };
    p.finish()?;
    Ok(out)
}

fn will_props(p: Option<Obj<'_>>) -> Built<WillProperties> {
    let Some(mut p) = p else {
        return Ok(Default::default());
    };
    let out = WillProperties {
        will_delay_interval: p.u32("willDelayInterval")?,
        payload_format_indicator: p.flag("payloadFormatIndicator")?,
        message_expiry_interval: p.u32("messageExpiryInterval")?,
        content_type: p.text("contentType")?,
        response_topic: p.text("responseTopic")?,
        correlation_data: p.bytes("correlationData")?,
        user_properties: p.user_properties()?,
    };
    p.finish()?;
    Ok(out)
}

fn connack_props(p: Option<Obj<'_>>) -> Built<ConnAckProperties> {
    let Some(mut p) = p else {
        return Ok(Default::default());
    };
    let maximum_qos = match p.u8("maximumQoS")? {
        None => None,
        Some(n) => Some(QoS::from_u8(n).ok_or_else(|| format!("`maximumQoS`: {n}"))?),
    };
    let out = ConnAckProperties {
        session_expiry_interval: p.u32("sessionExpiryInterval")?,
        receive_maximum: p.u16("receiveMaximum")?,
        maximum_qos,
        retain_available: p.flag("retainAvailable")?,
        maximum_packet_size: p.u32("maximumPacketSize")?,
        assigned_client_identifier: p.text("assignedClientIdentifier")?,
        topic_alias_maximum: p.u16("topicAliasMaximum")?,
        reason_string: p.text("reasonString")?,
        user_properties: p.user_properties()?,
        wildcard_subscription_available: p.flag("wildcardSubscriptionAvailable")?,
        subscription_identifiers_available: p.flag("subscriptionIdentifiersAvailable")?,
        shared_subscription_available: p.flag("sharedSubscriptionAvailable")?,
        server_keep_alive: p.u16("serverKeepAlive")?,
        response_information: p.text("responseInformation")?,
        server_reference: p.text("serverReference")?,
        authentication_method: p.text("authenticationMethod")?,
        authentication_data: p.bytes("authenticationData")?,
    };
    p.finish()?;
    Ok(out)
}

fn publish_props(p: Option<Obj<'_>>) -> Built<PublishProperties> {
    let Some(mut p) = p else {
        return Ok(Default::default());
    };
    // One subscription identifier is a number, several an array.
    let subscription_identifiers = match p.get("subscriptionIdentifier") {
        None => Vec::new(),
        Some(Value::Array(ids)) => ids
            .iter()
            .map(|id| id.as_u64().and_then(|n| u32::try_from(n).ok()))
            .collect::<Option<Vec<u32>>>()
            .ok_or("`subscriptionIdentifier`: not all u32")?,
        Some(id) => vec![
            id.as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| format!("`subscriptionIdentifier`: {id} is not a u32"))?,
        ],
    };
    let out = PublishProperties {
        payload_format_indicator: p.flag("payloadFormatIndicator")?,
        message_expiry_interval: p.u32("messageExpiryInterval")?,
        topic_alias: p.u16("topicAlias")?,
        response_topic: p.text("responseTopic")?,
        correlation_data: p.bytes("correlationData")?,
        user_properties: p.user_properties()?,
        subscription_identifiers,
        content_type: p.text("contentType")?,
    };
    p.finish()?;
    Ok(out)
}

fn ack_props(p: Option<Obj<'_>>) -> Built<AckProperties> {
    let Some(mut p) = p else {
        return Ok(Default::default());
    };
    let out = AckProperties {
        reason_string: p.text("reasonString")?,
        user_properties: p.user_properties()?,
    };
    p.finish()?;
    Ok(out)
}

fn subscribe_props(p: Option<Obj<'_>>) -> Built<SubscribeProperties> {
    let Some(mut p) = p else {
        return Ok(Default::default());
    };
    let out = SubscribeProperties {
        subscription_identifier: p.u32("subscriptionIdentifier")?,
        user_properties: p.user_properties()?,
    };
    p.finish()?;
    Ok(out)
}

fn unsubscribe_props(p: Option<Obj<'_>>) -> Built<UnsubscribeProperties> {
    let Some(mut p) = p else {
        return Ok(Default::default());
    };
    let out = UnsubscribeProperties {
        user_properties: p.user_properties()?,
    };
    p.finish()?;
    Ok(out)
}

fn disconnect_props(p: Option<Obj<'_>>) -> Built<DisconnectProperties> {
    let Some(mut p) = p else {
        return Ok(Default::default());
    };
    let out = DisconnectProperties {
        session_expiry_interval: p.u32("sessionExpiryInterval")?,
        reason_string: p.text("reasonString")?,
        user_properties: p.user_properties()?,
        server_reference: p.text("serverReference")?,
    };
    p.finish()?;
    Ok(out)
}

fn auth_props(p: Option<Obj<'_>>) -> Built<AuthProperties> {
    let Some(mut p) = p else {
        return Ok(Default::default());
    };
    let out = AuthProperties {
        authentication_method: p.text("authenticationMethod")?,
        authentication_data: p.bytes("authenticationData")?,
        reason_string: p.text("reasonString")?,
        user_properties: p.user_properties()?,
    };
    p.finish()?;
    Ok(out)
}

fn message_id(o: &mut Obj<'_>) -> Built<u16> {
    o.u16("messageId")?
        .ok_or_else(|| "`messageId`: missing".to_owned())
}

fn reason_codes(o: &mut Obj<'_>, key: &'static str, v5: bool) -> Built<Vec<ReasonCode>> {
    let Some(v) = o.get(key) else {
        return Ok(Vec::new());
    };
    let codes = v
        .as_array()
        .ok_or_else(|| format!("`{key}`: {v} is not an array"))?;
    codes
        .iter()
        .map(|c| {
            let code = c
                .as_u64()
                .and_then(|n| u8::try_from(n).ok())
                .ok_or_else(|| format!("`{key}`: {c} is not a byte"))?;
            let rc = reason(code, key)?;
            // Before 5.0 a SUBACK carries 0, 1, 2 or 0x80 only.
            if !v5 && rc.to_suback_return_code() != code {
                return Err(format!("`{key}`: {code:#04x} is no 3.1.1 return code"));
            }
            Ok(rc)
        })
        .collect()
}

/// Builds our packet from the object MQTT.js's generator is given, with its defaults
/// (protocol "MQTT" level 4, clean session, keep-alive 0, empty client id, QoS 0, reason
/// code 0). `length` is ignored, as the generator computes it; so are `retain`, `qos`, `dup`,
/// `topic` and `payload` on packets other than PUBLISH, which the generator does not read
/// either (their fixed header flags are fixed by the packet type; the byte comparison would
/// catch any difference).
fn from_js(v: &Value, version: ProtocolVersion) -> Built<Packet> {
    let v5 = version.is_v5();
    let mut o = Obj::new(v, "packet")?;
    let cmd = match o.get("cmd") {
        Some(Value::String(s)) => s.as_str(),
        other => return Err(format!("`cmd`: {other:?} is no command")),
    };
    let _ = o.get("length");
    if cmd != "publish" {
        // The generator reads none of these for packets other than PUBLISH.
        for key in ["retain", "qos", "dup", "topic", "payload"] {
            let _ = o.get(key);
        }
    }
    let packet = match cmd {
        "connect" => {
            let name = match o.get("protocolId") {
                None => "MQTT".to_owned(),
                Some(Value::String(s)) => s.clone(),
                Some(other) => return Err(format!("`protocolId`: {other} is not a string")),
            };
            let level = o.u8("protocolVersion")?;
            let protocol = match (name.as_str(), level.unwrap_or(4)) {
                ("MQIsdp", 3) => ProtocolVersion::V3_1,
                ("MQTT", 4) => ProtocolVersion::V3_1_1,
                ("MQTT", 5) => ProtocolVersion::V5,
                (name, level) => {
                    let field = if matches!(name, "MQTT" | "MQIsdp") {
                        "protocolVersion"
                    } else {
                        "protocolId"
                    };
                    return Err(format!("`{field}`: no protocol {name:?} level {level}"));
                }
            };
            let will = match o.get("will") {
                None => None,
                Some(w) => {
                    let mut w = Obj::new(w, "will")?;
                    let topic = w.text("topic")?.ok_or("`topic`: the will has no topic")?;
                    let payload = w.bytes("payload")?.ok_or("`payload`: missing")?;
                    let will = LastWill {
                        topic,
                        payload,
                        qos: w.qos("qos")?,
                        retain: w.flag("retain")?.unwrap_or(false),
                        properties: will_props(props(&mut w)?)?,
                    };
                    w.finish()?;
                    Some(will)
                }
            };
            let keep_alive = match o.get("keepalive") {
                None => 0,
                Some(k) => k
                    .as_u64()
                    .and_then(|n| u16::try_from(n).ok())
                    .ok_or_else(|| format!("`keepalive`: {k} is not a u16"))?,
            };
            Packet::Connect(Box::new(Connect {
                protocol,
                clean_start: o.flag("clean")?.unwrap_or(true),
                keep_alive,
                client_id: o.text("clientId")?.unwrap_or_default(),
                will,
                username: o.text("username")?,
                password: o.bytes("password")?,
                properties: connect_props(props(&mut o)?)?,
            }))
        }
        "connack" => {
            let session_present = o.flag("sessionPresent")?.unwrap_or(false);
            let reason_code = if v5 {
                reason(o.u8("reasonCode")?.unwrap_or(0), "reasonCode")?
            } else {
                let code = o.u8("returnCode")?.unwrap_or(0);
                ReasonCode::from_connack_return_code(code)
                    .ok_or_else(|| format!("`returnCode`: {code} is no return code"))?
            };
            Packet::ConnAck(Box::new(ConnAck {
                session_present,
                reason_code,
                properties: connack_props(props(&mut o)?)?,
            }))
        }
        "publish" => {
            let qos = o.qos("qos")?;
            let packet_id = if qos == QoS::AtMostOnce {
                let _ = o.get("messageId");
                0
            } else {
                message_id(&mut o)?
            };
            Packet::Publish(Publish {
                dup: o.flag("dup")?.unwrap_or(false),
                qos,
                retain: o.flag("retain")?.unwrap_or(false),
                topic: o.text("topic")?.ok_or("`topic`: missing")?,
                packet_id,
                properties: publish_props(props(&mut o)?)?,
                payload: o.bytes("payload")?.unwrap_or_default(),
            })
        }
        "puback" | "pubrec" | "pubrel" | "pubcomp" => {
            let ack = Ack {
                packet_id: message_id(&mut o)?,
                reason_code: reason(o.u8("reasonCode")?.unwrap_or(0), "reasonCode")?,
                properties: ack_props(props(&mut o)?)?,
            };
            match cmd {
                "puback" => Packet::PubAck(ack),
                "pubrec" => Packet::PubRec(ack),
                "pubrel" => Packet::PubRel(ack),
                _ => Packet::PubComp(ack),
            }
        }
        "subscribe" => {
            let packet_id = message_id(&mut o)?;
            let list = o.get("subscriptions").ok_or("`subscriptions`: missing")?;
            let list = list
                .as_array()
                .ok_or_else(|| format!("`subscriptions`: {list} is not an array"))?;
            let mut subscriptions = Vec::new();
            for sub in list {
                let mut s = Obj::new(sub, "subscriptions[]")?;
                let retain_handling = match s.u8("rh")?.unwrap_or(0) {
                    0 => RetainHandling::OnSubscribe,
                    1 => RetainHandling::OnNewSubscription,
                    2 => RetainHandling::Never,
                    n => return Err(format!("`rh`: {n}")),
                };
                subscriptions.push(Subscription {
                    filter: s.text("topic")?.ok_or("`topic`: missing")?,
                    options: SubscriptionOptions {
                        qos: s.qos("qos")?,
                        no_local: s.flag("nl")?.unwrap_or(false),
                        retain_as_published: s.flag("rap")?.unwrap_or(false),
                        retain_handling,
                    },
                });
                s.finish()?;
            }
            Packet::Subscribe(Subscribe {
                packet_id,
                properties: subscribe_props(props(&mut o)?)?,
                subscriptions,
            })
        }
        "suback" => Packet::SubAck(SubAck {
            packet_id: message_id(&mut o)?,
            reason_codes: reason_codes(&mut o, "granted", v5)?,
            properties: ack_props(props(&mut o)?)?,
        }),
        "unsubscribe" => {
            let packet_id = message_id(&mut o)?;
            let list = o
                .get("unsubscriptions")
                .ok_or("`unsubscriptions`: missing")?;
            let filters = list
                .as_array()
                .ok_or_else(|| format!("`unsubscriptions`: {list} is not an array"))?
                .iter()
                .map(|f| {
                    f.as_str()
                        .map(ByteString::from)
                        .ok_or_else(|| format!("`unsubscriptions`: {f} is not a string"))
                })
                .collect::<Built<Vec<_>>>()?;
            Packet::Unsubscribe(Unsubscribe {
                packet_id,
                properties: unsubscribe_props(props(&mut o)?)?,
                filters,
            })
        }
        "unsuback" => Packet::UnsubAck(UnsubAck {
            packet_id: message_id(&mut o)?,
            reason_codes: reason_codes(&mut o, "granted", true)?,
            properties: ack_props(props(&mut o)?)?,
        }),
        "pingreq" => Packet::PingReq,
        "pingresp" => Packet::PingResp,
        "disconnect" => Packet::Disconnect(Disconnect {
            reason_code: reason(o.u8("reasonCode")?.unwrap_or(0), "reasonCode")?,
            properties: disconnect_props(props(&mut o)?)?,
        }),
        "auth" => Packet::Auth(Auth {
            reason_code: reason(o.u8("reasonCode")?.unwrap_or(0), "reasonCode")?,
            properties: auth_props(props(&mut o)?)?,
        }),
        other => return Err(format!("`cmd`: unknown command {other:?}")),
    };
    o.finish()?;
    Ok(packet)
}

// ---------------------------------------------------------------------------------------
// Checks
// ---------------------------------------------------------------------------------------

/// The remaining length of a packet held in `wire` (MQTT.js's `length`).
fn remaining_len(wire: &Blob) -> usize {
    let mut header = 1;
    while wire.prefix[header] & 0x80 != 0 {
        header += 1;
    }
    wire.len() - header - 1
}

fn encoded_differently(id: &str) -> bool {
    ENCODED_DIFFERENTLY.iter().any(|(i, _)| *i == id)
}

/// What a successful parse check found.
#[derive(Default)]
struct Tally {
    byte_identical: usize,
    equivalent: usize,
    round_trip_only: usize,
}

/// Decodes `wire`, compares with `object`, re-encodes and (for `parse_generate`) compares
/// bytes, and checks that the packet built from `object` is the decoded one.
fn check_parse(
    id: &str,
    kind: &str,
    version: ProtocolVersion,
    wire: &Blob,
    object: &Value,
    tally: &mut Tally,
) -> Result<(), String> {
    let packet = match decode_one(wire.decode_buffer(), version) {
        Decoded::Packet(p) => p,
        other => return Err(format!("not decoded: {other}")),
    };
    let ours = to_js(&packet, version, remaining_len(wire));
    let diffs = compare(&normalise_expected(object), &ours);
    if !diffs.is_empty() {
        return Err(format!(
            "decoded packet differs:\n    {}",
            diffs.join("\n    ")
        ));
    }
    let parts = encode_parts(&packet, version).map_err(|e| format!("re-encoding: {e}"))?;
    let part_refs: Vec<&[u8]> = parts.iter().map(|b| &b[..]).collect();
    if kind == "parse_generate" {
        let same = wire.matches(&part_refs);
        match (same, encoded_differently(id)) {
            (true, false) => tally.byte_identical += 1,
            (false, true) => {
                same_packet_from(&parts, version, &packet)?;
                tally.equivalent += 1;
            }
            (true, true) => return Err("listed in ENCODED_DIFFERENTLY, but bytes match".into()),
            (false, false) => {
                return Err(format!(
                    "re-encoded bytes differ:\n    theirs {}\n    ours   {}",
                    hex(&wire.prefix),
                    hex(&parts.concat())
                ));
            }
        }
        let built = from_js(object, version).map_err(|e| format!("building: {e}"))?;
        if built != packet {
            return Err(format!(
                "packet built from the object differs:\n    {built:?}\n    {packet:?}"
            ));
        }
    } else {
        same_packet_from(&parts, version, &packet)?;
        tally.round_trip_only += 1;
    }
    Ok(())
}

/// Our encoding decodes back to `packet`.
fn same_packet_from(parts: &[Bytes], version: ProtocolVersion, packet: &Packet) -> Built<()> {
    match decode_one(BytesMut::from(&parts.concat()[..]), version) {
        Decoded::Packet(p) if p == *packet => Ok(()),
        other => Err(format!("our encoding decodes to {other}, not {packet:?}")),
    }
}

/// Builds the packet from the object, encodes it, compares with `wire`, and checks that
/// `wire` decodes to the same packet.
fn check_generate(
    id: &str,
    version: ProtocolVersion,
    wire: &Blob,
    object: &Value,
    tally: &mut Tally,
) -> Result<(), String> {
    let built = from_js(object, version).map_err(|e| format!("building: {e}"))?;
    let parts = encode_parts(&built, version).map_err(|e| format!("encoding: {e}"))?;
    let part_refs: Vec<&[u8]> = parts.iter().map(|b| &b[..]).collect();
    match (wire.matches(&part_refs), encoded_differently(id)) {
        (true, false) => tally.byte_identical += 1,
        (false, true) => {
            same_packet_from(&parts, version, &built)?;
            tally.equivalent += 1;
        }
        (true, true) => return Err("listed in ENCODED_DIFFERENTLY, but bytes match".into()),
        (false, false) => {
            return Err(format!(
                "encoded bytes differ:\n    theirs {}\n    ours   {}",
                hex(&wire.prefix),
                hex(&parts.concat())
            ));
        }
    }
    match decode_one(wire.decode_buffer(), version) {
        Decoded::Packet(p) if p == built => Ok(()),
        other => Err(format!("reference bytes decode to {other}, not {built:?}")),
    }
}

fn spec_violation(id: &str) -> Option<&'static SpecViolation> {
    SPEC_VIOLATIONS.iter().find(|s| s.id == id)
}

fn report(what: &str, failures: &[String]) {
    assert!(
        failures.is_empty(),
        "{} {what} failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

#[test]
fn vector_file_is_complete() {
    let vectors = load();
    let mut summary = Vec::new();
    for (kind, floor) in FLOOR {
        let n = of_kind(&vectors, &[kind]).len();
        assert!(
            n >= floor,
            "only {n} {kind} vectors (at least {floor} expected)"
        );
        summary.push(format!("{n} {kind}"));
    }
    let known: BTreeSet<&str> = FLOOR.iter().map(|(k, _)| *k).collect();
    for v in &vectors {
        assert!(known.contains(v.kind.as_str()), "unknown kind in {}", v.id);
    }
    assert!(vectors.len() >= 160, "only {} vectors", vectors.len());
    assert_all_used(
        "SPEC_VIOLATIONS",
        SPEC_VIOLATIONS.iter().map(|s| s.id),
        &vectors,
    );
    assert_all_used(
        "ENCODED_DIFFERENTLY",
        ENCODED_DIFFERENTLY.iter().map(|(id, _)| *id),
        &vectors,
    );
    assert_all_used(
        "ACCEPTED_PARSE_ERRORS",
        ACCEPTED_PARSE_ERRORS.iter().map(|(id, _)| *id),
        &vectors,
    );
    assert_all_used(
        "PARSE_ERROR_REASONS",
        PARSE_ERROR_REASONS.iter().map(|r| r.id),
        &vectors,
    );
    assert_all_used(
        "GENERATE_ERRORS",
        GENERATE_ERRORS.iter().map(|(id, _)| *id),
        &vectors,
    );
    println!(
        "mqtt-packet 9.0.2 vectors: {} in all: {}",
        vectors.len(),
        summary.join(", ")
    );
}

#[test]
fn parse_vectors() {
    let vectors = load();
    let parse = of_kind(&vectors, &["parse_generate", "parse_only"]);
    let mut tally = Tally::default();
    let mut failures = Vec::new();
    let mut checked = 0;
    for v in &parse {
        if spec_violation(&v.id).is_some() {
            continue; // see mqtt_packet_leniencies_are_rejected
        }
        checked += 1;
        if let Err(e) = check_parse(&v.id, &v.kind, v.version, v.wire(), v.object(), &mut tally) {
            failures.push(format!("{}: {e}", v.label()));
        }
    }
    report("parse vectors", &failures);
    assert!(checked >= 55, "only {checked} parse vectors checked");
    println!(
        "parse vectors: {checked} checked ({} re-encoded byte for byte, {} to an equivalent \
         encoding, {} parse-only round trips); {} listed as spec violations",
        tally.byte_identical,
        tally.equivalent,
        tally.round_trip_only,
        parse.len() - checked
    );
}

#[test]
fn generate_vectors() {
    let vectors = load();
    let generate = of_kind(&vectors, &["generate_only"]);
    let mut tally = Tally::default();
    let mut failures = Vec::new();
    for v in &generate {
        if let Err(e) = check_generate(&v.id, v.version, v.wire(), v.object(), &mut tally) {
            failures.push(format!("{}: {e}", v.label()));
        }
    }
    report("generate vectors", &failures);
    assert!(generate.len() >= 9);
    println!(
        "generate vectors: {} checked ({} byte for byte, {} equivalent encoding)",
        generate.len(),
        tally.byte_identical,
        tally.equivalent
    );
}

#[test]
fn mqtt_packet_leniencies_are_rejected() {
    let vectors = load();
    let mut failures = Vec::new();
    let mut corrected = 0;
    for s in SPEC_VIOLATIONS {
        let v = vectors
            .iter()
            .find(|v| v.id == s.id)
            .expect("every entry names a vector (vector_file_is_complete)");
        match decode_one(v.wire().decode_buffer(), v.version) {
            Decoded::Rejected(e) if (s.rejected_with)(&e) => {}
            other => failures.push(format!(
                "{}: {} requires rejection ({}); we gave {other}",
                v.label(),
                s.rule,
                s.why
            )),
        }
        if let Some(c) = &s.corrected {
            // The same vector with the offending byte corrected passes every check.
            let at = v
                .wire()
                .prefix
                .windows(c.from.len())
                .position(|w| w == c.from)
                .expect("the correction's bytes occur in the vector");
            let mut wire = v.wire().clone();
            wire.prefix[at..at + c.to.len()].copy_from_slice(c.to);
            let mut object = v.object().clone();
            for (pointer, value) in c.set {
                *object.pointer_mut(pointer).expect("the pointer exists") = (*value).into();
            }
            let mut tally = Tally::default();
            match check_parse(&v.id, &v.kind, v.version, &wire, &object, &mut tally) {
                Ok(()) => corrected += 1,
                Err(e) => failures.push(format!("{} (corrected): {e}", v.label())),
            }
        }
    }
    report("spec-violation checks", &failures);
    println!(
        "spec violations accepted by mqtt-packet, rejected here: {} ({corrected} also checked \
         with the violation corrected)",
        SPEC_VIOLATIONS.len()
    );
}

#[test]
fn parse_error_vectors() {
    let vectors = load();
    let errors = of_kind(&vectors, &["parse_error"]);
    let mut failures = Vec::new();
    let mut rejected = 0;
    for v in &errors {
        let accepted_by_table = ACCEPTED_PARSE_ERRORS.iter().any(|(id, _)| *id == v.id);
        // As a stream parser sees it: packets one after the other until the bytes run out.
        let mut buf = v.wire().decode_buffer();
        let outcome = loop {
            match decode(&mut buf, v.version, MAX_PACKET_SIZE) {
                Err(e) => break Err(e),
                Ok(Some(_)) if !buf.is_empty() => continue,
                Ok(Some(_)) => break Ok("every byte decoded".to_owned()),
                Ok(None) => break Ok(format!("{} bytes wait for more", buf.len())),
            }
        };
        match (outcome, accepted_by_table) {
            (Err(_), false) => rejected += 1,
            (Ok(_), true) => {}
            (Err(e), true) => failures.push(format!(
                "{}: listed in ACCEPTED_PARSE_ERRORS but rejected: {e}",
                v.label()
            )),
            (Ok(what), false) => failures.push(format!(
                "{}: mqtt-packet rejects this, we do not ({what})",
                v.label()
            )),
        }
    }
    for r in PARSE_ERROR_REASONS {
        let v = vectors
            .iter()
            .find(|v| v.id == r.id)
            .expect("every entry names a vector (vector_file_is_complete)");
        let mut wire = v.wire().clone();
        if let Some((from, to)) = r.retarget {
            let at = wire
                .prefix
                .windows(from.len())
                .position(|w| w == from)
                .expect("the retargeted bytes occur in the vector");
            wire.prefix[at..at + to.len()].copy_from_slice(to);
        }
        match decode_one(wire.decode_buffer(), v.version) {
            Decoded::Rejected(e) if (r.rejected_with)(&e) => {}
            other => failures.push(format!(
                "{}: rejected for another reason: {other}",
                v.label()
            )),
        }
    }
    report("parse-error vectors", &failures);
    assert!(rejected >= 55, "only {rejected} parse errors checked");
    println!(
        "parse-error vectors: {} checked, {rejected} rejected, {} accepted by the exception \
         table; {} also checked for the reason",
        errors.len(),
        errors.len() - rejected,
        PARSE_ERROR_REASONS.len()
    );
}

#[test]
fn generate_error_vectors() {
    let vectors = load();
    let errors = of_kind(&vectors, &["generate_error", "write_to_stream_error"]);
    let mut failures = Vec::new();
    for v in &errors {
        let Some((_, how)) = GENERATE_ERRORS.iter().find(|(id, _)| *id == v.id) else {
            failures.push(format!("{}: not classified in GENERATE_ERRORS", v.label()));
            continue;
        };
        let built = from_js(v.object(), v.version);
        let outcome: Result<(), String> = match (how, built) {
            (GenError::Unrepresentable { field }, Err(e)) if e.contains(&format!("`{field}`")) => {
                Ok(())
            }
            (GenError::Unrepresentable { field }, other) => Err(format!(
                "expected building to fail at `{field}`, got {other:?}"
            )),
            (GenError::EncoderRejects(expected), Ok(p)) => match encode_parts(&p, v.version) {
                Err(e) if expected(&e) => Ok(()),
                other => Err(format!("expected an encode error, got {other:?}")),
            },
            (GenError::ServerPolicy(why), Ok(p)) => match encode_parts(&p, v.version) {
                Ok(parts) => same_packet_from(&parts, v.version, &p)
                    .map_err(|e| format!("{e} (server policy: {why})")),
                Err(e) => Err(format!("does not encode: {e}")),
            },
            (_, Err(e)) => Err(format!("does not build: {e}")),
        };
        if let Err(e) = outcome {
            failures.push(format!("{}: {e}", v.label()));
        }
    }
    report("generate-error vectors", &failures);
    assert!(errors.len() >= 27);
    let count = |f: fn(&GenError) -> bool| GENERATE_ERRORS.iter().filter(|(_, g)| f(g)).count();
    println!(
        "generate-error vectors: {} checked ({} unrepresentable in our types, {} rejected by \
         our encoder, {} server policy)",
        errors.len(),
        count(|g| matches!(g, GenError::Unrepresentable { .. })),
        count(|g| matches!(g, GenError::EncoderRejects(_))),
        count(|g| matches!(g, GenError::ServerPolicy(_))),
    );
}
