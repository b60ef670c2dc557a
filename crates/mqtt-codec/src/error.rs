//! Typed decode and encode errors.
//!
//! Every decode error names the rule of the specification it enforces ([`DecodeError::rule`]:
//! a normative statement such as `[MQTT-3.3.1-4]`, or a section where the specification states
//! the rule without numbering it) and the MQTT 5.0 reason code a server answers it with
//! ([`DecodeError::reason_code`]), so that the broker can send a precise DISCONNECT or CONNACK
//! and log why it closed a connection.

use crate::PacketType;
use crate::properties::PropertyId;
use crate::reason::ReasonCode;
use crate::topic::TopicError;

/// Why bytes could not be decoded into a packet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The declared packet is larger than the configured maximum; found before its body is read.
    #[error("packet of {size} bytes exceeds the maximum packet size of {max} bytes")]
    PacketTooLarge {
        /// Total size of the packet, fixed header included.
        size: usize,
        /// The configured limit.
        max: usize,
    },
    /// The first byte names a reserved packet type (0, or 15 before MQTT 5.0).
    #[error("packet type {0} is reserved")]
    InvalidPacketType(u8),
    /// The fixed header's flag bits are not the values the specification fixes.
    #[error("{packet:?} fixed header has flags 0x{flags:X}, which are reserved")]
    ReservedFlags {
        /// The packet kind.
        packet: PacketType,
        /// The low four bits of the first byte.
        flags: u8,
    },
    /// Reserved bits 7-1 of CONNACK's Connect Acknowledge Flags are set.
    #[error("CONNACK acknowledge flags 0x{0:02X} set reserved bits")]
    ConnAckFlagsReserved(u8),
    /// A variable byte integer runs over four bytes.
    #[error("variable byte integer longer than four bytes")]
    VarIntTooLong,
    /// A variable byte integer does not use the fewest bytes possible.
    #[error("variable byte integer not minimally encoded")]
    VarIntNotMinimal,
    /// The packet ends before a field it must contain.
    #[error("{packet:?} ends before its {field}")]
    UnexpectedEnd {
        /// The packet kind.
        packet: PacketType,
        /// The field that is cut off.
        field: &'static str,
    },
    /// Bytes are left over after the last field of a packet.
    #[error("{packet:?} has {extra} bytes after its last field")]
    TrailingBytes {
        /// The packet kind.
        packet: PacketType,
        /// How many bytes are left over.
        extra: usize,
    },
    /// A string is not well-formed UTF-8 (this includes encoded surrogates).
    #[error("{field} is not well-formed UTF-8")]
    InvalidUtf8 {
        /// The field holding the string.
        field: &'static str,
    },
    /// A string contains U+0000.
    #[error("{field} contains the null character U+0000")]
    NullCharacter {
        /// The field holding the string.
        field: &'static str,
    },
    /// A QoS field holds 3.
    #[error("{field} is 3, which is not a QoS level")]
    InvalidQoS {
        /// The field: "PUBLISH QoS", "will QoS" or "subscription QoS".
        field: &'static str,
    },
    /// A QoS 0 PUBLISH has the DUP flag set.
    #[error("QoS 0 PUBLISH has the DUP flag set")]
    DupOnQoS0,
    /// A packet identifier is 0.
    #[error("{packet:?} has packet identifier 0")]
    ZeroPacketId {
        /// The packet kind.
        packet: PacketType,
    },
    /// CONNECT names a protocol or level this codec does not speak.
    #[error("unsupported protocol {name:?} level {level}")]
    UnsupportedProtocol {
        /// The protocol name as sent (lossily decoded).
        name: String,
        /// The protocol level byte.
        level: u8,
    },
    /// The reserved bit of the CONNECT flags is set.
    #[error("CONNECT reserved flag is set")]
    ConnectReservedFlag,
    /// Will QoS or will retain is set while the will flag is not.
    #[error("will QoS or will retain set without the will flag")]
    WillFlagsWithoutWill,
    /// MQTT 3.1.1 CONNECT has the password flag without the user name flag.
    #[error("password flag set without the user name flag")]
    PasswordWithoutUsername,
    /// A topic name or filter breaks the topic rules.
    #[error("{0}")]
    Topic(#[from] TopicError),
    /// PUBLISH has an empty topic name and no topic alias.
    #[error("PUBLISH has an empty topic name and no topic alias")]
    EmptyTopicWithoutAlias,
    /// SUBSCRIBE carries no topic filter.
    #[error("SUBSCRIBE carries no topic filter")]
    EmptySubscribe,
    /// UNSUBSCRIBE carries no topic filter.
    #[error("UNSUBSCRIBE carries no topic filter")]
    EmptyUnsubscribe,
    /// SUBACK or UNSUBACK has no reason codes in MQTT 5.0 or no return codes in 3.1.1.
    #[error("{packet:?} carries no reason codes")]
    EmptyAck {
        /// The packet kind.
        packet: PacketType,
    },
    /// The reserved bits of the subscription options byte are set.
    #[error("subscription options 0x{0:02X} set reserved bits")]
    SubscriptionOptionsReserved(u8),
    /// Retain handling is 3.
    #[error("retain handling is 3")]
    InvalidRetainHandling,
    /// The No Local option is set on a shared subscription.
    #[error("no local set on shared subscription")]
    NoLocalOnSharedSubscription,
    /// A reason or return code that the packet does not allow.
    #[error("{packet:?} does not allow reason code 0x{code:02X}")]
    InvalidReasonCode {
        /// The packet kind.
        packet: PacketType,
        /// The code received.
        code: u8,
    },
    /// A property identifier that MQTT 5.0 does not define.
    #[error("unknown property identifier 0x{0:02X}")]
    UnknownProperty(u32),
    /// A defined property on a packet (or will) that does not allow it.
    #[error("property {id:?} is not allowed on {on}")]
    PropertyNotAllowed {
        /// The property.
        id: PropertyId,
        /// The packet or part of a packet.
        on: &'static str,
    },
    /// A property that may appear once appears again.
    #[error("property {0:?} appears more than once")]
    DuplicateProperty(PropertyId),
    /// A property value outside its allowed range (for example Receive Maximum 0).
    #[error("property {id:?} has invalid value {value}")]
    InvalidPropertyValue {
        /// The property.
        id: PropertyId,
        /// The value received.
        value: u32,
    },
    /// Topic Alias 0.
    #[error("topic alias 0")]
    TopicAliasZero,
    /// Authentication Data without Authentication Method.
    #[error("authentication data without authentication method")]
    AuthDataWithoutMethod,
}

impl DecodeError {
    /// The rule this error enforces: a normative statement like `[MQTT-3.3.1-4]` or, where
    /// the specification states the rule without a number, the section (`MQTT 5.0 §2.2.2.2`).
    pub fn rule(&self) -> &'static str {
        use DecodeError::*;
        match self {
            PacketTooLarge { .. } => "[MQTT-3.2.2-15]",
            InvalidPacketType(_) => "MQTT 5.0 §2.1.2",
            ReservedFlags { .. } => "[MQTT-2.1.3-1]",
            ConnAckFlagsReserved(_) => "MQTT 5.0 §3.2.2.1",
            VarIntTooLong | VarIntNotMinimal => "[MQTT-1.5.5-1]",
            UnexpectedEnd { .. } | TrailingBytes { .. } => "MQTT 5.0 §2.1.4",
            InvalidUtf8 { .. } => "[MQTT-1.5.4-1]",
            NullCharacter { .. } => "[MQTT-1.5.4-2]",
            InvalidQoS { field } if field.starts_with("will") => "[MQTT-3.1.2-12]",
            InvalidQoS { field } if field.starts_with("subscription") => "MQTT 5.0 §3.8.3.1",
            InvalidQoS { .. } => "[MQTT-3.3.1-4]",
            DupOnQoS0 => "[MQTT-3.3.1-2]",
            ZeroPacketId { .. } => "[MQTT-2.2.1-3]",
            UnsupportedProtocol { .. } => "[MQTT-3.1.2-2]",
            ConnectReservedFlag => "[MQTT-3.1.2-3]",
            WillFlagsWithoutWill => "[MQTT-3.1.2-11]",
            PasswordWithoutUsername => "[MQTT-3.1.2-22]",
            Topic(e) => e.rule(),
            EmptyTopicWithoutAlias => "MQTT 5.0 §3.3.4",
            EmptySubscribe => "[MQTT-3.8.3-2]",
            EmptyUnsubscribe => "[MQTT-3.10.3-2]",
            EmptyAck {
                packet: PacketType::SubAck,
            } => "[MQTT-3.9.3-1]",
            EmptyAck { .. } => "[MQTT-3.11.3-1]",
            SubscriptionOptionsReserved(_) => "[MQTT-3.8.3-5]",
            InvalidRetainHandling => "MQTT 5.0 §3.8.3.1",
            NoLocalOnSharedSubscription => "[MQTT-3.8.3-4]",
            InvalidReasonCode { packet, .. } => match packet {
                PacketType::ConnAck => "MQTT 5.0 §3.2.2.2",
                PacketType::PubAck => "[MQTT-3.4.2-1]",
                PacketType::PubRec => "[MQTT-3.5.2-1]",
                PacketType::PubRel => "[MQTT-3.6.2-1]",
                PacketType::PubComp => "[MQTT-3.7.2-1]",
                PacketType::SubAck => "[MQTT-3.9.3-2]",
                PacketType::UnsubAck => "[MQTT-3.11.3-2]",
                PacketType::Disconnect => "[MQTT-3.14.2-1]",
                _ => "[MQTT-3.15.2-1]",
            },
            UnknownProperty(_) | PropertyNotAllowed { .. } => "MQTT 5.0 §2.2.2.2",
            DuplicateProperty(_) | InvalidPropertyValue { .. } => "MQTT 5.0 §2.2.2.2",
            TopicAliasZero => "[MQTT-3.3.2-8]",
            AuthDataWithoutMethod => "MQTT 5.0 §3.1.2.11.10",
        }
    }

    /// The MQTT 5.0 reason code a server sends for this error (in DISCONNECT, or in CONNACK
    /// when the error is in CONNECT).
    pub fn reason_code(&self) -> ReasonCode {
        use DecodeError::*;
        match self {
            PacketTooLarge { .. } => ReasonCode::PacketTooLarge,
            UnsupportedProtocol { .. } => ReasonCode::UnsupportedProtocolVersion,
            Topic(e) => e.reason_code(),
            TopicAliasZero => ReasonCode::TopicAliasInvalid,
            ZeroPacketId { .. }
            | EmptyTopicWithoutAlias
            | EmptySubscribe
            | EmptyUnsubscribe
            | EmptyAck { .. }
            | InvalidRetainHandling
            | NoLocalOnSharedSubscription
            | InvalidReasonCode { .. }
            | DuplicateProperty(_)
            | InvalidPropertyValue { .. }
            | AuthDataWithoutMethod
            | PasswordWithoutUsername => ReasonCode::ProtocolError,
            InvalidPacketType(_)
            | ReservedFlags { .. }
            | ConnAckFlagsReserved(_)
            | VarIntTooLong
            | VarIntNotMinimal
            | UnexpectedEnd { .. }
            | TrailingBytes { .. }
            | InvalidUtf8 { .. }
            | NullCharacter { .. }
            | InvalidQoS { .. }
            | DupOnQoS0
            | ConnectReservedFlag
            | WillFlagsWithoutWill
            | SubscriptionOptionsReserved(_)
            | UnknownProperty(_)
            | PropertyNotAllowed { .. } => ReasonCode::MalformedPacket,
        }
    }
}

/// Why a packet could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// A string or binary field is longer than 65,535 bytes.
    #[error("{field} is {len} bytes; at most 65535 fit")]
    FieldTooLong {
        /// The field.
        field: &'static str,
        /// Its length.
        len: usize,
    },
    /// The packet's remaining length exceeds 268,435,455 bytes.
    #[error("packet body of {0} bytes exceeds the MQTT maximum of 268435455")]
    PacketTooLarge(usize),
    /// A packet that needs a packet identifier has 0.
    #[error("{0:?} needs a non-zero packet identifier")]
    ZeroPacketId(PacketType),
    /// A value does not fit its wire field (a subscription identifier over 268,435,455, ...).
    #[error("{field} value {value} is out of range")]
    ValueOutOfRange {
        /// The field.
        field: &'static str,
        /// The value.
        value: u64,
    },
    /// The packet does not exist in the connection's protocol version (AUTH before 5.0).
    #[error("{0:?} does not exist before MQTT 5.0")]
    NotInVersion(PacketType),
    /// A value the receiver would reject: the encoder refuses what the decoder refuses, so a
    /// peer is never sent a packet it must treat as a protocol violation.
    #[error("{what} {rule}")]
    Invalid {
        /// What is wrong.
        what: &'static str,
        /// The rule it breaks.
        rule: &'static str,
    },
}
