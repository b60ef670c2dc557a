//! PUBLISH (§3.3): an application message, in either direction.
//!
//! For fan-out the header can be encoded apart from the payload ([`Publish::encode_header`]):
//! the payload `Bytes` is then shared by every subscriber and written with vectored I/O, and
//! only the few header bytes that differ per subscriber (packet id, QoS, topic alias,
//! subscription identifiers) are built for each.

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;

use super::{Body, PacketType, ProtocolVersion, QoS, packet_id, put_packet_id};
use crate::properties::{PublishProperties, encode_block};
use crate::topic::{TopicError, validate_topic_name};
use crate::wire::{MAX_VARINT, Reader, Sink, measure, put_string, put_varint, varint_len};
use crate::{DecodeError, EncodeError};

/// An application message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// Set on a re-delivery of a QoS 1/2 message (never on QoS 0).
    pub dup: bool,
    /// Delivery guarantee.
    pub qos: QoS,
    /// Retain flag: store as the topic's retained message, or (from the server) this is one.
    pub retain: bool,
    /// Topic name; empty in 5.0 when a topic alias stands for it.
    pub topic: ByteString,
    /// Packet identifier for QoS 1/2; 0 (and not on the wire) for QoS 0.
    pub packet_id: u16,
    /// MQTT 5.0 properties (empty before 5.0).
    pub properties: PublishProperties,
    /// The application payload, a slice of the received buffer when decoded.
    pub payload: Bytes,
}

impl Publish {
    /// A QoS 0, non-retained message without properties.
    pub fn new(topic: impl Into<ByteString>, payload: impl Into<Bytes>) -> Self {
        Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic: topic.into(),
            packet_id: 0,
            properties: PublishProperties::default(),
            payload: payload.into(),
        }
    }

    pub(crate) fn decode(
        flags: u8,
        r: &mut Reader,
        version: ProtocolVersion,
    ) -> Result<Self, DecodeError> {
        let qos = QoS::from_u8((flags >> 1) & 0x03).ok_or(DecodeError::InvalidQoS {
            field: "PUBLISH QoS",
        })?;
        let dup = flags & 0x08 != 0;
        if dup && qos == QoS::AtMostOnce {
            return Err(DecodeError::DupOnQoS0);
        }
        let topic = r.string("topic name")?;
        let packet_id = if qos == QoS::AtMostOnce {
            0
        } else {
            packet_id(r)?
        };
        let properties = if version.is_v5() {
            PublishProperties::decode(r)?
        } else {
            Default::default()
        };
        if topic.is_empty() {
            if !version.is_v5() {
                return Err(TopicError::EmptyName.into());
            }
            if properties.topic_alias.is_none() {
                return Err(DecodeError::EmptyTopicWithoutAlias);
            }
        } else {
            validate_topic_name(&topic)?;
        }
        Ok(Publish {
            dup,
            qos,
            retain: flags & 0x01 != 0,
            topic,
            packet_id,
            properties,
            payload: r.rest(),
        })
    }

    fn first_byte(&self) -> u8 {
        let mut byte = 0x30 | ((self.qos as u8) << 1);
        if self.dup && self.qos != QoS::AtMostOnce {
            byte |= 0x08;
        }
        if self.retain {
            byte |= 0x01;
        }
        byte
    }

    /// Appends the whole packet to `dst` (the payload is copied once).
    pub fn encode(&self, version: ProtocolVersion, dst: &mut BytesMut) -> Result<(), EncodeError> {
        self.encode_header(version, dst)?;
        dst.extend_from_slice(&self.payload);
        Ok(())
    }

    /// Appends everything but the payload: the fixed header (whose remaining length counts the
    /// payload) and the variable header. Writing these bytes followed by [`Publish::payload`]
    /// gives the packet.
    pub fn encode_header(
        &self,
        version: ProtocolVersion,
        dst: &mut BytesMut,
    ) -> Result<(), EncodeError> {
        let header_len = measure(|c| self.write_body(version, c))?;
        let remaining = header_len + self.payload.len();
        if remaining > MAX_VARINT as usize {
            return Err(EncodeError::PacketTooLarge(remaining));
        }
        dst.reserve(1 + varint_len(remaining) + header_len);
        Sink::put_u8(dst, self.first_byte());
        put_varint(dst, remaining, "remaining length")?;
        self.write_body(version, dst)
    }

    /// The size of the encoded packet, payload included, for checking against a peer's
    /// Maximum Packet Size before sending.
    pub fn encoded_len(&self, version: ProtocolVersion) -> Result<usize, EncodeError> {
        let remaining = measure(|c| self.write_body(version, c))? + self.payload.len();
        Ok(1 + varint_len(remaining) + remaining)
    }
}

impl Body for Publish {
    /// The variable header only: topic, packet identifier, properties.
    fn write_body<S: Sink + ?Sized>(
        &self,
        v: ProtocolVersion,
        s: &mut S,
    ) -> Result<(), EncodeError> {
        put_string(s, &self.topic, "topic name")?;
        if self.qos != QoS::AtMostOnce {
            put_packet_id(s, self.packet_id, PacketType::Publish)?;
        }
        if v.is_v5() {
            encode_block(&self.properties, s)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Packet, ProtocolVersion::*, decode};

    fn decode_as(v: ProtocolVersion, bytes: &[u8]) -> Result<Packet, DecodeError> {
        decode(&mut BytesMut::from(bytes), v, 1024).map(|p| p.expect("complete"))
    }

    #[test]
    fn qos0_bytes_and_zero_copy_payload() {
        let bytes = [0x31, 0x07, 0x00, 0x03, b'a', b'/', b'b', b'h', b'i'];
        let mut buf = BytesMut::from(&bytes[..]);
        let base = buf.as_ptr() as usize;
        let Some(Packet::Publish(p)) = decode(&mut buf, V3_1_1, 1024).unwrap() else {
            panic!()
        };
        assert!(p.retain);
        assert_eq!(p.qos, QoS::AtMostOnce);
        assert_eq!(&*p.topic, "a/b");
        assert_eq!(&p.payload[..], b"hi");
        // The payload points into the buffer the packet was read from.
        assert_eq!(p.payload.as_ptr() as usize, base + 7);
        assert_eq!(p.topic.as_bytes().as_ptr() as usize, base + 4);
        assert_eq!(
            &Packet::Publish(p).to_bytes(V3_1_1).unwrap()[..],
            &bytes[..]
        );
    }

    #[test]
    fn header_plus_payload_is_the_packet() {
        let mut p = Publish::new("t", Bytes::from(vec![7u8; 300]));
        p.qos = QoS::ExactlyOnce;
        p.packet_id = 42;
        p.properties.message_expiry_interval = Some(60);
        p.properties.subscription_identifiers = vec![1, 70_000];
        let mut header = BytesMut::new();
        p.encode_header(V5, &mut header).unwrap();
        let mut joined = header.to_vec();
        joined.extend_from_slice(&p.payload);
        assert_eq!(
            joined,
            Packet::Publish(p.clone()).to_bytes(V5).unwrap().to_vec()
        );
        assert_eq!(joined.len(), p.encoded_len(V5).unwrap());
        assert_eq!(decode_as(V5, &joined).unwrap(), Packet::Publish(p));
    }

    #[test]
    fn flag_and_topic_rules() {
        assert_eq!(
            decode_as(V3_1_1, &[0x36, 0x03, 0x00, 0x01, b'a']),
            Err(DecodeError::InvalidQoS {
                field: "PUBLISH QoS"
            })
        );
        assert_eq!(
            decode_as(V3_1_1, &[0x38, 0x03, 0x00, 0x01, b'a']),
            Err(DecodeError::DupOnQoS0)
        );
        assert_eq!(
            decode_as(V3_1_1, &[0x32, 0x05, 0x00, 0x01, b'a', 0x00, 0x00]),
            Err(DecodeError::ZeroPacketId {
                packet: PacketType::Publish
            })
        );
        let err = decode_as(V3_1_1, &[0x30, 0x03, 0x00, 0x01, b'#']).unwrap_err();
        assert_eq!(err, DecodeError::Topic(TopicError::WildcardInName));
        assert_eq!(err.rule(), "[MQTT-3.3.2-2]");
        assert_eq!(
            decode_as(V3_1_1, &[0x30, 0x02, 0x00, 0x00]),
            Err(DecodeError::Topic(TopicError::EmptyName))
        );
        assert_eq!(
            decode_as(V5, &[0x30, 0x03, 0x00, 0x00, 0x00]),
            Err(DecodeError::EmptyTopicWithoutAlias)
        );
        // Empty topic with alias 5 is fine in 5.0.
        let ok = decode_as(V5, &[0x30, 0x06, 0x00, 0x00, 0x03, 0x23, 0x00, 0x05]).unwrap();
        let Packet::Publish(p) = ok else { panic!() };
        assert_eq!(p.properties.topic_alias, Some(5));
        assert_eq!(
            decode_as(V5, &[0x30, 0x07, 0x00, 0x01, b'a', 0x03, 0x23, 0x00, 0x00]),
            Err(DecodeError::TopicAliasZero)
        );
    }

    #[test]
    fn the_encoder_refuses_what_the_decoder_rejects() {
        let mut p = Publish::new("t", Bytes::new());
        p.properties.topic_alias = Some(0);
        assert!(matches!(
            p.encode(V5, &mut BytesMut::new()),
            Err(EncodeError::Invalid { .. })
        ));
        p.properties.topic_alias = None;
        p.properties.subscription_identifiers = vec![3, 0];
        assert!(matches!(
            p.encode(V5, &mut BytesMut::new()),
            Err(EncodeError::Invalid { .. })
        ));
        let mut ack = crate::ConnAck::new(crate::ReasonCode::Success, false);
        ack.properties.maximum_qos = Some(QoS::ExactlyOnce);
        let err = Packet::ConnAck(Box::new(ack)).to_bytes(V5).unwrap_err();
        assert_eq!(err.to_string(), "Maximum QoS of 2 (MQTT 5.0 §3.2.2.3.4)");
        let mut c = crate::Connect::new(V3_1_1, "c", 0);
        c.password = Some(Bytes::from_static(b"pw"));
        assert!(Packet::Connect(Box::new(c)).to_bytes(V3_1_1).is_err());
        let mut s = crate::Subscribe::new(1, "a", QoS::AtMostOnce);
        s.properties.subscription_identifier = Some(0);
        assert!(Packet::Subscribe(s).to_bytes(V5).is_err());
    }

    #[test]
    fn property_rules() {
        // Payload format indicator twice: protocol error.
        let dup = [0x30, 0x08, 0x00, 0x01, b'a', 0x04, 0x01, 0x01, 0x01, 0x01];
        let err = decode_as(V5, &dup).unwrap_err();
        assert_eq!(
            err,
            DecodeError::DuplicateProperty(crate::PropertyId::PayloadFormatIndicator)
        );
        assert_eq!(err.reason_code(), crate::ReasonCode::ProtocolError);
        // Session expiry interval is not a PUBLISH property: malformed.
        let wrong = [
            0x30, 0x09, 0x00, 0x01, b'a', 0x05, 0x11, 0x00, 0x00, 0x00, 0x01,
        ];
        let err = decode_as(V5, &wrong).unwrap_err();
        assert!(matches!(err, DecodeError::PropertyNotAllowed { .. }));
        assert_eq!(err.reason_code(), crate::ReasonCode::MalformedPacket);
        // Unknown property identifier.
        let unknown = [0x30, 0x06, 0x00, 0x01, b'a', 0x02, 0x7F, 0x00];
        assert_eq!(
            decode_as(V5, &unknown),
            Err(DecodeError::UnknownProperty(0x7F))
        );
        // Payload format indicator 2.
        let bad = [0x30, 0x06, 0x00, 0x01, b'a', 0x02, 0x01, 0x02];
        assert!(matches!(
            decode_as(V5, &bad),
            Err(DecodeError::InvalidPropertyValue { value: 2, .. })
        ));
        // Property block longer than the packet.
        let cut = [0x30, 0x05, 0x00, 0x01, b'a', 0x09, 0x01];
        assert!(matches!(
            decode_as(V5, &cut),
            Err(DecodeError::UnexpectedEnd { .. })
        ));
    }
}
