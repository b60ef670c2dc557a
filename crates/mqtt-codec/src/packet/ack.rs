//! PUBACK, PUBREC, PUBREL and PUBCOMP (§3.4-§3.7): one shape, four packet types.

use super::{Body, PacketType, ProtocolVersion, packet_id, put_packet_id, reason_code};
use crate::properties::{AckProperties, encode_block};
use crate::wire::{Reader, Sink};
use crate::{DecodeError, EncodeError, ReasonCode};

/// The body shared by PUBACK, PUBREC, PUBREL and PUBCOMP; [`crate::Packet`]'s variant says
/// which one it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    /// The packet identifier of the PUBLISH (or PUBREL) being answered.
    pub packet_id: u16,
    /// The result (MQTT 5.0; always Success before 5.0).
    pub reason_code: ReasonCode,
    /// MQTT 5.0 properties.
    pub properties: AckProperties,
}

impl Ack {
    /// A successful acknowledgement of `packet_id`.
    pub fn new(packet_id: u16) -> Self {
        Ack {
            packet_id,
            reason_code: ReasonCode::Success,
            properties: AckProperties::default(),
        }
    }

    pub(crate) fn decode(r: &mut Reader, version: ProtocolVersion) -> Result<Self, DecodeError> {
        let packet = r.packet();
        let packet_id = packet_id(r)?;
        let mut ack = Ack::new(packet_id);
        if !version.is_v5() || r.remaining() == 0 {
            return Ok(ack);
        }
        let code = r.u8("reason code")?;
        ack.reason_code = reason_code(code, packet)?;
        if r.remaining() > 0 {
            ack.properties = AckProperties::decode(r, ack_name(packet))?;
        }
        Ok(ack)
    }
}

fn ack_name(packet: PacketType) -> &'static str {
    match packet {
        PacketType::PubAck => "PUBACK",
        PacketType::PubRec => "PUBREC",
        PacketType::PubRel => "PUBREL",
        _ => "PUBCOMP",
    }
}

/// An [`Ack`] together with the packet kind it is sent as.
pub(crate) struct AckOf<'a>(pub(crate) PacketType, pub(crate) &'a Ack);

impl Body for AckOf<'_> {
    /// Uses the shortest form 5.0 allows: no reason code when it is Success and there are no
    /// properties, no property length when there are no properties (§3.4.2.1).
    fn write_body<S: Sink + ?Sized>(
        &self,
        v: ProtocolVersion,
        s: &mut S,
    ) -> Result<(), EncodeError> {
        let AckOf(packet, ack) = *self;
        put_packet_id(s, ack.packet_id, packet)?;
        if !v.is_v5() {
            return Ok(());
        }
        let no_props = ack.properties.is_empty();
        if ack.reason_code == ReasonCode::Success && no_props {
            return Ok(());
        }
        s.put_u8(ack.reason_code as u8);
        if no_props {
            Ok(())
        } else {
            encode_block(&ack.properties, s)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Packet, ProtocolVersion::*, decode};
    use bytes::BytesMut;

    fn decode_as(v: ProtocolVersion, bytes: &[u8]) -> Result<Packet, DecodeError> {
        decode(&mut BytesMut::from(bytes), v, 1024).map(|p| p.expect("complete"))
    }

    #[test]
    fn short_forms() {
        assert_eq!(
            decode_as(V5, &[0x40, 0x02, 0x00, 0x07]).unwrap(),
            Packet::PubAck(Ack::new(7))
        );
        let mut ack = Ack::new(7);
        ack.reason_code = ReasonCode::NoMatchingSubscribers;
        assert_eq!(
            decode_as(V5, &[0x50, 0x03, 0x00, 0x07, 0x10]).unwrap(),
            Packet::PubRec(ack.clone())
        );
        assert_eq!(
            &Packet::PubRec(ack).to_bytes(V5).unwrap()[..],
            &[0x50, 0x03, 0x00, 0x07, 0x10]
        );
        assert_eq!(
            &Packet::PubComp(Ack::new(9)).to_bytes(V5).unwrap()[..],
            &[0x70, 0x02, 0x00, 0x09]
        );
    }

    #[test]
    fn pubrel_flags_and_codes() {
        assert_eq!(
            decode_as(V3_1_1, &[0x62, 0x02, 0x00, 0x01]).unwrap(),
            Packet::PubRel(Ack::new(1))
        );
        assert!(matches!(
            decode_as(V3_1_1, &[0x60, 0x02, 0x00, 0x01]),
            Err(DecodeError::ReservedFlags {
                packet: PacketType::PubRel,
                flags: 0
            })
        ));
        assert!(matches!(
            decode_as(V5, &[0x62, 0x03, 0x00, 0x01, 0x10]),
            Err(DecodeError::InvalidReasonCode {
                packet: PacketType::PubRel,
                code: 0x10
            })
        ));
        assert_eq!(
            decode_as(V3_1_1, &[0x40, 0x02, 0x00, 0x00]),
            Err(DecodeError::ZeroPacketId {
                packet: PacketType::PubAck
            })
        );
        assert!(matches!(
            decode_as(V3_1_1, &[0x40, 0x03, 0x00, 0x01, 0x00]),
            Err(DecodeError::TrailingBytes { extra: 1, .. })
        ));
    }

    #[test]
    fn v5_properties_round_trip() {
        let mut ack = Ack::new(300);
        ack.reason_code = ReasonCode::QuotaExceeded;
        ack.properties.reason_string = Some("queue full".into());
        ack.properties
            .user_properties
            .push(("k".into(), "v".into()));
        let bytes = Packet::PubAck(ack.clone()).to_bytes(V5).unwrap();
        assert_eq!(decode_as(V5, &bytes).unwrap(), Packet::PubAck(ack));
    }
}
