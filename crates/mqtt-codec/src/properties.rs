//! MQTT 5.0 properties (§2.2.2): identifiers, and one typed struct per packet kind holding
//! exactly the properties that packet allows.
//!
//! A property the packet does not allow cannot be represented, so it cannot be encoded by
//! mistake; on decoding it is a malformed packet. Properties that may appear once are
//! `Option`s, and a second occurrence is a protocol error; User Property (and the
//! Subscription Identifier of PUBLISH) repeat, and keep their order.

use bytes::Bytes;
use bytestring::ByteString;

use crate::wire::{Reader, Sink, measure, put_binary, put_string, put_varint};
use crate::{DecodeError, EncodeError, QoS, topic};

/// Name/value pairs of User Property (0x26), in the order they were sent.
pub type UserProperties = Vec<(ByteString, ByteString)>;

macro_rules! property_ids {
    ($($(#[$doc:meta])* $variant:ident = $value:literal,)*) => {
        /// An MQTT 5.0 property identifier.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum PropertyId {
            $($(#[$doc])* $variant = $value,)*
        }

        impl PropertyId {
            /// Every property MQTT 5.0 defines.
            pub const ALL: &'static [PropertyId] = &[$(PropertyId::$variant,)*];

            /// The property with this identifier, if MQTT 5.0 defines one.
            pub fn from_u32(value: u32) -> Option<Self> {
                match value {
                    $($value => Some(PropertyId::$variant),)*
                    _ => None,
                }
            }
        }
    };
}

property_ids! {
    /// Byte: 0 unspecified bytes, 1 UTF-8 payload.
    PayloadFormatIndicator = 0x01,
    /// Four byte integer: seconds the message lives.
    MessageExpiryInterval = 0x02,
    /// UTF-8 string: the payload's MIME type.
    ContentType = 0x03,
    /// UTF-8 string: topic for a response (request/response).
    ResponseTopic = 0x08,
    /// Binary: ties a response to its request.
    CorrelationData = 0x09,
    /// Variable byte integer: which subscription matched.
    SubscriptionIdentifier = 0x0B,
    /// Four byte integer: seconds a session outlives its connection.
    SessionExpiryInterval = 0x11,
    /// UTF-8 string: the id the server chose for a client that sent none.
    AssignedClientIdentifier = 0x12,
    /// Two byte integer: keep-alive imposed by the server.
    ServerKeepAlive = 0x13,
    /// UTF-8 string: enhanced authentication method.
    AuthenticationMethod = 0x15,
    /// Binary: enhanced authentication data.
    AuthenticationData = 0x16,
    /// Byte: whether reason strings and user properties may be sent on failures.
    RequestProblemInformation = 0x17,
    /// Four byte integer: seconds to delay the will.
    WillDelayInterval = 0x18,
    /// Byte: whether the client wants Response Information.
    RequestResponseInformation = 0x19,
    /// UTF-8 string: basis for response topics.
    ResponseInformation = 0x1A,
    /// UTF-8 string: another server to use.
    ServerReference = 0x1C,
    /// UTF-8 string: human-readable diagnostics.
    ReasonString = 0x1F,
    /// Two byte integer: how many QoS 1/2 messages may be unacknowledged.
    ReceiveMaximum = 0x21,
    /// Two byte integer: the highest topic alias accepted.
    TopicAliasMaximum = 0x22,
    /// Two byte integer: stands for a topic name.
    TopicAlias = 0x23,
    /// Byte: the highest QoS the server supports.
    MaximumQoS = 0x24,
    /// Byte: whether retained messages are supported.
    RetainAvailable = 0x25,
    /// UTF-8 string pair: application-defined metadata.
    UserProperty = 0x26,
    /// Four byte integer: the largest packet accepted.
    MaximumPacketSize = 0x27,
    /// Byte: whether wildcard subscriptions are supported.
    WildcardSubscriptionAvailable = 0x28,
    /// Byte: whether subscription identifiers are supported.
    SubscriptionIdentifierAvailable = 0x29,
    /// Byte: whether shared subscriptions are supported.
    SharedSubscriptionAvailable = 0x2A,
}

/// Reads a property block: its length, then identifier/value pairs. `apply` reads each value
/// from the block and stores it, or rejects the identifier.
fn decode_block(
    r: &mut Reader,
    mut apply: impl FnMut(PropertyId, &mut Reader) -> Result<(), DecodeError>,
) -> Result<(), DecodeError> {
    let len = r.varint("property length")? as usize;
    let mut block = Reader::new(r.take(len, "properties")?, r.packet());
    while block.remaining() > 0 {
        let raw = block.varint("property identifier")?;
        let id = PropertyId::from_u32(raw).ok_or(DecodeError::UnknownProperty(raw))?;
        apply(id, &mut block)?;
    }
    Ok(())
}

fn once<T>(slot: &mut Option<T>, id: PropertyId, value: T) -> Result<(), DecodeError> {
    if slot.is_some() {
        return Err(DecodeError::DuplicateProperty(id));
    }
    *slot = Some(value);
    Ok(())
}

fn flag(r: &mut Reader, id: PropertyId) -> Result<bool, DecodeError> {
    match r.u8("property value")? {
        0 => Ok(false),
        1 => Ok(true),
        v => Err(DecodeError::InvalidPropertyValue {
            id,
            value: u32::from(v),
        }),
    }
}

fn non_zero_u16(r: &mut Reader, id: PropertyId) -> Result<u16, DecodeError> {
    match r.u16("property value")? {
        0 => Err(DecodeError::InvalidPropertyValue { id, value: 0 }),
        v => Ok(v),
    }
}

fn non_zero_u32(r: &mut Reader, id: PropertyId) -> Result<u32, DecodeError> {
    match r.u32("property value")? {
        0 => Err(DecodeError::InvalidPropertyValue { id, value: 0 }),
        v => Ok(v),
    }
}

fn subscription_id(r: &mut Reader) -> Result<u32, DecodeError> {
    match r.varint("subscription identifier")? {
        0 => Err(DecodeError::InvalidPropertyValue {
            id: PropertyId::SubscriptionIdentifier,
            value: 0,
        }),
        v => Ok(v),
    }
}

fn user_property(r: &mut Reader, list: &mut UserProperties) -> Result<(), DecodeError> {
    let name = r.string("user property name")?;
    let value = r.string("user property value")?;
    list.push((name, value));
    Ok(())
}

fn response_topic(r: &mut Reader) -> Result<ByteString, DecodeError> {
    let t = r.string("response topic")?;
    topic::validate_topic_name(&t)?;
    Ok(t)
}

fn not_allowed(id: PropertyId, on: &'static str) -> DecodeError {
    DecodeError::PropertyNotAllowed { id, on }
}

fn check_auth(method: &Option<ByteString>, data: &Option<Bytes>) -> Result<(), DecodeError> {
    if data.is_some() && method.is_none() {
        return Err(DecodeError::AuthDataWithoutMethod);
    }
    Ok(())
}

fn invalid(what: &'static str, rule: &'static str) -> EncodeError {
    EncodeError::Invalid { what, rule }
}

/// Checks the values a receiver rejects: 0 where the specification forbids it.
fn check_nonzero(
    receive_maximum: Option<u16>,
    maximum_packet_size: Option<u32>,
) -> Result<(), EncodeError> {
    if receive_maximum == Some(0) {
        return Err(invalid("Receive Maximum of 0", "(MQTT 5.0 §3.1.2.11.3)"));
    }
    if maximum_packet_size == Some(0) {
        return Err(invalid(
            "Maximum Packet Size of 0",
            "(MQTT 5.0 §3.1.2.11.4)",
        ));
    }
    Ok(())
}

/// A property block: written once, measured and then written by [`encode_block`].
pub(crate) trait PropertyBlock {
    fn write<S: Sink + ?Sized>(&self, s: &mut S) -> Result<(), EncodeError>;
}

/// Writes the property length, then the properties.
pub(crate) fn encode_block<P: PropertyBlock, S: Sink + ?Sized>(
    p: &P,
    s: &mut S,
) -> Result<(), EncodeError> {
    let len = measure(|c| p.write(c))?;
    put_varint(s, len, "property length")?;
    p.write(s)
}

/// Typed writers for one property each; `None` writes nothing.
struct W<'a, S: ?Sized>(&'a mut S);

impl<S: Sink + ?Sized> W<'_, S> {
    fn u8(&mut self, id: PropertyId, v: Option<u8>) {
        if let Some(v) = v {
            self.0.put_u8(id as u8);
            self.0.put_u8(v);
        }
    }
    fn flag(&mut self, id: PropertyId, v: Option<bool>) {
        self.u8(id, v.map(u8::from));
    }
    fn u16(&mut self, id: PropertyId, v: Option<u16>) {
        if let Some(v) = v {
            self.0.put_u8(id as u8);
            self.0.put_u16(v);
        }
    }
    fn u32(&mut self, id: PropertyId, v: Option<u32>) {
        if let Some(v) = v {
            self.0.put_u8(id as u8);
            self.0.put_u32(v);
        }
    }
    fn varint(&mut self, id: PropertyId, v: Option<u32>) -> Result<(), EncodeError> {
        if let Some(v) = v {
            self.0.put_u8(id as u8);
            put_varint(self.0, v as usize, "subscription identifier")?;
        }
        Ok(())
    }
    fn string(&mut self, id: PropertyId, v: &Option<ByteString>) -> Result<(), EncodeError> {
        if let Some(v) = v {
            self.0.put_u8(id as u8);
            put_string(self.0, v, "string property")?;
        }
        Ok(())
    }
    fn binary(&mut self, id: PropertyId, v: &Option<Bytes>) -> Result<(), EncodeError> {
        if let Some(v) = v {
            self.0.put_u8(id as u8);
            put_binary(self.0, v, "binary property")?;
        }
        Ok(())
    }
    fn user(&mut self, list: &UserProperties) -> Result<(), EncodeError> {
        for (name, value) in list {
            self.0.put_u8(PropertyId::UserProperty as u8);
            put_string(self.0, name, "user property name")?;
            put_string(self.0, value, "user property value")?;
        }
        Ok(())
    }
}

/// Properties of CONNECT (§3.1.2.11).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectProperties {
    /// Seconds the session outlives the connection; absent means 0.
    pub session_expiry_interval: Option<u32>,
    /// QoS 1/2 messages the client accepts unacknowledged; absent means 65,535.
    pub receive_maximum: Option<u16>,
    /// Largest packet the client accepts.
    pub maximum_packet_size: Option<u32>,
    /// Highest topic alias the client accepts from the server; absent means 0 (none).
    pub topic_alias_maximum: Option<u16>,
    /// Whether the client wants Response Information in CONNACK.
    pub request_response_information: Option<bool>,
    /// Whether the server may send reason strings and user properties on failures.
    pub request_problem_information: Option<bool>,
    /// Application metadata.
    pub user_properties: UserProperties,
    /// Enhanced authentication method.
    pub authentication_method: Option<ByteString>,
    /// Enhanced authentication data.
    pub authentication_data: Option<Bytes>,
}

impl ConnectProperties {
    pub(crate) fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        use PropertyId::*;
        let mut p = Self::default();
        decode_block(r, |id, r| match id {
            SessionExpiryInterval => once(&mut p.session_expiry_interval, id, r.u32("value")?),
            ReceiveMaximum => once(&mut p.receive_maximum, id, non_zero_u16(r, id)?),
            MaximumPacketSize => once(&mut p.maximum_packet_size, id, non_zero_u32(r, id)?),
            TopicAliasMaximum => once(&mut p.topic_alias_maximum, id, r.u16("value")?),
            RequestResponseInformation => {
                once(&mut p.request_response_information, id, flag(r, id)?)
            }
            RequestProblemInformation => once(&mut p.request_problem_information, id, flag(r, id)?),
            UserProperty => user_property(r, &mut p.user_properties),
            AuthenticationMethod => once(
                &mut p.authentication_method,
                id,
                r.string("authentication method")?,
            ),
            AuthenticationData => once(
                &mut p.authentication_data,
                id,
                r.binary("authentication data")?,
            ),
            _ => Err(not_allowed(id, "CONNECT")),
        })?;
        check_auth(&p.authentication_method, &p.authentication_data)?;
        Ok(p)
    }
}
impl PropertyBlock for ConnectProperties {
    fn write<S: Sink + ?Sized>(&self, s: &mut S) -> Result<(), EncodeError> {
        use PropertyId::*;
        check_nonzero(self.receive_maximum, self.maximum_packet_size)?;
        let mut w = W(s);
        w.u32(SessionExpiryInterval, self.session_expiry_interval);
        w.u16(ReceiveMaximum, self.receive_maximum);
        w.u32(MaximumPacketSize, self.maximum_packet_size);
        w.u16(TopicAliasMaximum, self.topic_alias_maximum);
        w.flag(
            RequestResponseInformation,
            self.request_response_information,
        );
        w.flag(RequestProblemInformation, self.request_problem_information);
        w.user(&self.user_properties)?;
        w.string(AuthenticationMethod, &self.authentication_method)?;
        w.binary(AuthenticationData, &self.authentication_data)
    }
}

/// Properties of the will message in CONNECT's payload (§3.1.3.2).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WillProperties {
    /// Seconds the server waits before publishing the will.
    pub will_delay_interval: Option<u32>,
    /// `true` when the payload is UTF-8 text.
    pub payload_format_indicator: Option<bool>,
    /// Seconds the will message lives once published.
    pub message_expiry_interval: Option<u32>,
    /// MIME type of the payload.
    pub content_type: Option<ByteString>,
    /// Topic for a response.
    pub response_topic: Option<ByteString>,
    /// Ties a response to this message.
    pub correlation_data: Option<Bytes>,
    /// Application metadata.
    pub user_properties: UserProperties,
}

impl WillProperties {
    pub(crate) fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        use PropertyId::*;
        let mut p = Self::default();
        decode_block(r, |id, r| match id {
            WillDelayInterval => once(&mut p.will_delay_interval, id, r.u32("value")?),
            PayloadFormatIndicator => once(&mut p.payload_format_indicator, id, flag(r, id)?),
            MessageExpiryInterval => once(&mut p.message_expiry_interval, id, r.u32("value")?),
            ContentType => once(&mut p.content_type, id, r.string("content type")?),
            ResponseTopic => once(&mut p.response_topic, id, response_topic(r)?),
            CorrelationData => once(&mut p.correlation_data, id, r.binary("correlation data")?),
            UserProperty => user_property(r, &mut p.user_properties),
            _ => Err(not_allowed(id, "will properties")),
        })?;
        Ok(p)
    }
}
impl PropertyBlock for WillProperties {
    fn write<S: Sink + ?Sized>(&self, s: &mut S) -> Result<(), EncodeError> {
        use PropertyId::*;
        let mut w = W(s);
        w.u32(WillDelayInterval, self.will_delay_interval);
        w.flag(PayloadFormatIndicator, self.payload_format_indicator);
        w.u32(MessageExpiryInterval, self.message_expiry_interval);
        w.string(ContentType, &self.content_type)?;
        w.string(ResponseTopic, &self.response_topic)?;
        w.binary(CorrelationData, &self.correlation_data)?;
        w.user(&self.user_properties)
    }
}

/// Properties of CONNACK (§3.2.2.3).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnAckProperties {
    /// Session expiry the server imposes, if it differs from the client's.
    pub session_expiry_interval: Option<u32>,
    /// QoS 1/2 messages the server accepts unacknowledged; absent means 65,535.
    pub receive_maximum: Option<u16>,
    /// Highest QoS the server supports (0 or 1; absent means 2).
    pub maximum_qos: Option<QoS>,
    /// Whether the server supports retained messages; absent means yes.
    pub retain_available: Option<bool>,
    /// Largest packet the server accepts.
    pub maximum_packet_size: Option<u32>,
    /// The client id the server chose for a client that sent an empty one.
    pub assigned_client_identifier: Option<ByteString>,
    /// Highest topic alias the server accepts.
    pub topic_alias_maximum: Option<u16>,
    /// Human-readable diagnostics.
    pub reason_string: Option<ByteString>,
    /// Application metadata.
    pub user_properties: UserProperties,
    /// Whether wildcard subscriptions are supported; absent means yes.
    pub wildcard_subscription_available: Option<bool>,
    /// Whether subscription identifiers are supported; absent means yes.
    pub subscription_identifiers_available: Option<bool>,
    /// Whether shared subscriptions are supported; absent means yes.
    pub shared_subscription_available: Option<bool>,
    /// Keep-alive the server imposes instead of the client's.
    pub server_keep_alive: Option<u16>,
    /// Basis for response topics.
    pub response_information: Option<ByteString>,
    /// Another server the client should use.
    pub server_reference: Option<ByteString>,
    /// Enhanced authentication method.
    pub authentication_method: Option<ByteString>,
    /// Enhanced authentication data.
    pub authentication_data: Option<Bytes>,
}

impl ConnAckProperties {
    pub(crate) fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        use PropertyId::*;
        let mut p = Self::default();
        decode_block(r, |id, r| match id {
            SessionExpiryInterval => once(&mut p.session_expiry_interval, id, r.u32("value")?),
            ReceiveMaximum => once(&mut p.receive_maximum, id, non_zero_u16(r, id)?),
            MaximumQoS => {
                let qos = match r.u8("value")? {
                    0 => QoS::AtMostOnce,
                    1 => QoS::AtLeastOnce,
                    v => {
                        return Err(DecodeError::InvalidPropertyValue {
                            id,
                            value: v.into(),
                        });
                    }
                };
                once(&mut p.maximum_qos, id, qos)
            }
            RetainAvailable => once(&mut p.retain_available, id, flag(r, id)?),
            MaximumPacketSize => once(&mut p.maximum_packet_size, id, non_zero_u32(r, id)?),
            AssignedClientIdentifier => once(
                &mut p.assigned_client_identifier,
                id,
                r.string("assigned client identifier")?,
            ),
            TopicAliasMaximum => once(&mut p.topic_alias_maximum, id, r.u16("value")?),
            ReasonString => once(&mut p.reason_string, id, r.string("reason string")?),
            UserProperty => user_property(r, &mut p.user_properties),
            WildcardSubscriptionAvailable => {
                once(&mut p.wildcard_subscription_available, id, flag(r, id)?)
            }
            SubscriptionIdentifierAvailable => {
                once(&mut p.subscription_identifiers_available, id, flag(r, id)?)
            }
            SharedSubscriptionAvailable => {
                once(&mut p.shared_subscription_available, id, flag(r, id)?)
            }
            ServerKeepAlive => once(&mut p.server_keep_alive, id, r.u16("value")?),
            ResponseInformation => once(
                &mut p.response_information,
                id,
                r.string("response information")?,
            ),
            ServerReference => once(&mut p.server_reference, id, r.string("server reference")?),
            AuthenticationMethod => once(
                &mut p.authentication_method,
                id,
                r.string("authentication method")?,
            ),
            AuthenticationData => once(
                &mut p.authentication_data,
                id,
                r.binary("authentication data")?,
            ),
            _ => Err(not_allowed(id, "CONNACK")),
        })?;
        check_auth(&p.authentication_method, &p.authentication_data)?;
        Ok(p)
    }
}
impl PropertyBlock for ConnAckProperties {
    fn write<S: Sink + ?Sized>(&self, s: &mut S) -> Result<(), EncodeError> {
        use PropertyId::*;
        check_nonzero(self.receive_maximum, self.maximum_packet_size)?;
        if self.maximum_qos == Some(QoS::ExactlyOnce) {
            return Err(invalid("Maximum QoS of 2", "(MQTT 5.0 §3.2.2.3.4)"));
        }
        let mut w = W(s);
        w.u32(SessionExpiryInterval, self.session_expiry_interval);
        w.u16(ReceiveMaximum, self.receive_maximum);
        w.u8(MaximumQoS, self.maximum_qos.map(|q| q as u8));
        w.flag(RetainAvailable, self.retain_available);
        w.u32(MaximumPacketSize, self.maximum_packet_size);
        w.string(AssignedClientIdentifier, &self.assigned_client_identifier)?;
        w.u16(TopicAliasMaximum, self.topic_alias_maximum);
        w.string(ReasonString, &self.reason_string)?;
        w.user(&self.user_properties)?;
        w.flag(
            WildcardSubscriptionAvailable,
            self.wildcard_subscription_available,
        );
        w.flag(
            SubscriptionIdentifierAvailable,
            self.subscription_identifiers_available,
        );
        w.flag(
            SharedSubscriptionAvailable,
            self.shared_subscription_available,
        );
        w.u16(ServerKeepAlive, self.server_keep_alive);
        w.string(ResponseInformation, &self.response_information)?;
        w.string(ServerReference, &self.server_reference)?;
        w.string(AuthenticationMethod, &self.authentication_method)?;
        w.binary(AuthenticationData, &self.authentication_data)
    }
}

/// Properties of PUBLISH (§3.3.2.3).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublishProperties {
    /// `true` when the payload is UTF-8 text.
    pub payload_format_indicator: Option<bool>,
    /// Seconds the message lives; a server forwards the remaining time.
    pub message_expiry_interval: Option<u32>,
    /// Stands for the topic name on this connection (1 or more).
    pub topic_alias: Option<u16>,
    /// Topic for a response.
    pub response_topic: Option<ByteString>,
    /// Ties a response to its request.
    pub correlation_data: Option<Bytes>,
    /// Application metadata.
    pub user_properties: UserProperties,
    /// Identifiers of every subscription that matched (server to client only).
    pub subscription_identifiers: Vec<u32>,
    /// MIME type of the payload.
    pub content_type: Option<ByteString>,
}

impl PublishProperties {
    /// Whether no property is set (an empty property block on the wire).
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    pub(crate) fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        use PropertyId::*;
        let mut p = Self::default();
        decode_block(r, |id, r| match id {
            PayloadFormatIndicator => once(&mut p.payload_format_indicator, id, flag(r, id)?),
            MessageExpiryInterval => once(&mut p.message_expiry_interval, id, r.u32("value")?),
            TopicAlias => match r.u16("topic alias")? {
                0 => Err(DecodeError::TopicAliasZero),
                v => once(&mut p.topic_alias, id, v),
            },
            ResponseTopic => once(&mut p.response_topic, id, response_topic(r)?),
            CorrelationData => once(&mut p.correlation_data, id, r.binary("correlation data")?),
            UserProperty => user_property(r, &mut p.user_properties),
            SubscriptionIdentifier => {
                p.subscription_identifiers.push(subscription_id(r)?);
                Ok(())
            }
            ContentType => once(&mut p.content_type, id, r.string("content type")?),
            _ => Err(not_allowed(id, "PUBLISH")),
        })?;
        Ok(p)
    }
}
impl PropertyBlock for PublishProperties {
    fn write<S: Sink + ?Sized>(&self, s: &mut S) -> Result<(), EncodeError> {
        use PropertyId::*;
        if self.topic_alias == Some(0) {
            return Err(invalid("Topic Alias of 0", "[MQTT-3.3.2-8]"));
        }
        if self.subscription_identifiers.contains(&0) {
            return Err(invalid(
                "Subscription Identifier of 0",
                "(MQTT 5.0 §3.3.2.3.8)",
            ));
        }
        let mut w = W(s);
        w.flag(PayloadFormatIndicator, self.payload_format_indicator);
        w.u32(MessageExpiryInterval, self.message_expiry_interval);
        w.u16(TopicAlias, self.topic_alias);
        w.string(ResponseTopic, &self.response_topic)?;
        w.binary(CorrelationData, &self.correlation_data)?;
        w.user(&self.user_properties)?;
        for &id in &self.subscription_identifiers {
            w.varint(SubscriptionIdentifier, Some(id))?;
        }
        w.string(ContentType, &self.content_type)
    }
}

/// Properties of PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK and UNSUBACK, which allow the same two.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AckProperties {
    /// Human-readable diagnostics.
    pub reason_string: Option<ByteString>,
    /// Application metadata.
    pub user_properties: UserProperties,
}

impl AckProperties {
    /// Whether no property is set.
    pub fn is_empty(&self) -> bool {
        self.reason_string.is_none() && self.user_properties.is_empty()
    }

    pub(crate) fn decode(r: &mut Reader, on: &'static str) -> Result<Self, DecodeError> {
        use PropertyId::*;
        let mut p = Self::default();
        decode_block(r, |id, r| match id {
            ReasonString => once(&mut p.reason_string, id, r.string("reason string")?),
            UserProperty => user_property(r, &mut p.user_properties),
            _ => Err(not_allowed(id, on)),
        })?;
        Ok(p)
    }
}
impl PropertyBlock for AckProperties {
    fn write<S: Sink + ?Sized>(&self, s: &mut S) -> Result<(), EncodeError> {
        let mut w = W(s);
        w.string(PropertyId::ReasonString, &self.reason_string)?;
        w.user(&self.user_properties)
    }
}

/// Properties of SUBSCRIBE (§3.8.2.1).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubscribeProperties {
    /// Tags every message delivered through these subscriptions (1..=268,435,455).
    pub subscription_identifier: Option<u32>,
    /// Application metadata.
    pub user_properties: UserProperties,
}

impl SubscribeProperties {
    pub(crate) fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        use PropertyId::*;
        let mut p = Self::default();
        decode_block(r, |id, r| match id {
            SubscriptionIdentifier => once(&mut p.subscription_identifier, id, subscription_id(r)?),
            UserProperty => user_property(r, &mut p.user_properties),
            _ => Err(not_allowed(id, "SUBSCRIBE")),
        })?;
        Ok(p)
    }
}
impl PropertyBlock for SubscribeProperties {
    fn write<S: Sink + ?Sized>(&self, s: &mut S) -> Result<(), EncodeError> {
        if self.subscription_identifier == Some(0) {
            return Err(invalid(
                "Subscription Identifier of 0",
                "(MQTT 5.0 §3.8.2.1.2)",
            ));
        }
        let mut w = W(s);
        w.varint(
            PropertyId::SubscriptionIdentifier,
            self.subscription_identifier,
        )?;
        w.user(&self.user_properties)
    }
}

/// Properties of UNSUBSCRIBE (§3.10.2.1).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnsubscribeProperties {
    /// Application metadata.
    pub user_properties: UserProperties,
}

impl UnsubscribeProperties {
    pub(crate) fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        let mut p = Self::default();
        decode_block(r, |id, r| match id {
            PropertyId::UserProperty => user_property(r, &mut p.user_properties),
            _ => Err(not_allowed(id, "UNSUBSCRIBE")),
        })?;
        Ok(p)
    }
}
impl PropertyBlock for UnsubscribeProperties {
    fn write<S: Sink + ?Sized>(&self, s: &mut S) -> Result<(), EncodeError> {
        W(s).user(&self.user_properties)
    }
}

/// Properties of DISCONNECT (§3.14.2.2).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DisconnectProperties {
    /// New session expiry, sent by the client.
    pub session_expiry_interval: Option<u32>,
    /// Human-readable diagnostics.
    pub reason_string: Option<ByteString>,
    /// Application metadata.
    pub user_properties: UserProperties,
    /// Another server to use (with 0x9C or 0x9D).
    pub server_reference: Option<ByteString>,
}

impl DisconnectProperties {
    /// Whether no property is set.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    pub(crate) fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        use PropertyId::*;
        let mut p = Self::default();
        decode_block(r, |id, r| match id {
            SessionExpiryInterval => once(&mut p.session_expiry_interval, id, r.u32("value")?),
            ReasonString => once(&mut p.reason_string, id, r.string("reason string")?),
            UserProperty => user_property(r, &mut p.user_properties),
            ServerReference => once(&mut p.server_reference, id, r.string("server reference")?),
            _ => Err(not_allowed(id, "DISCONNECT")),
        })?;
        Ok(p)
    }
}
impl PropertyBlock for DisconnectProperties {
    fn write<S: Sink + ?Sized>(&self, s: &mut S) -> Result<(), EncodeError> {
        use PropertyId::*;
        let mut w = W(s);
        w.u32(SessionExpiryInterval, self.session_expiry_interval);
        w.string(ReasonString, &self.reason_string)?;
        w.user(&self.user_properties)?;
        w.string(ServerReference, &self.server_reference)
    }
}

/// Properties of AUTH (§3.15.2.2).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthProperties {
    /// Enhanced authentication method.
    pub authentication_method: Option<ByteString>,
    /// Enhanced authentication data.
    pub authentication_data: Option<Bytes>,
    /// Human-readable diagnostics.
    pub reason_string: Option<ByteString>,
    /// Application metadata.
    pub user_properties: UserProperties,
}

impl AuthProperties {
    /// Whether no property is set.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    pub(crate) fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        use PropertyId::*;
        let mut p = Self::default();
        decode_block(r, |id, r| match id {
            AuthenticationMethod => once(
                &mut p.authentication_method,
                id,
                r.string("authentication method")?,
            ),
            AuthenticationData => once(
                &mut p.authentication_data,
                id,
                r.binary("authentication data")?,
            ),
            ReasonString => once(&mut p.reason_string, id, r.string("reason string")?),
            UserProperty => user_property(r, &mut p.user_properties),
            _ => Err(not_allowed(id, "AUTH")),
        })?;
        check_auth(&p.authentication_method, &p.authentication_data)?;
        Ok(p)
    }
}
impl PropertyBlock for AuthProperties {
    fn write<S: Sink + ?Sized>(&self, s: &mut S) -> Result<(), EncodeError> {
        use PropertyId::*;
        let mut w = W(s);
        w.string(AuthenticationMethod, &self.authentication_method)?;
        w.binary(AuthenticationData, &self.authentication_data)?;
        w.string(ReasonString, &self.reason_string)?;
        w.user(&self.user_properties)
    }
}
