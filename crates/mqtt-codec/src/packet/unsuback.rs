//! UNSUBACK (§3.11): in 5.0 one reason code per filter; in 3.1.1 just the packet identifier.

use super::{Body, PacketType, ProtocolVersion, packet_id, put_packet_id, reason_code};
use crate::properties::{AckProperties, encode_block};
use crate::wire::{Reader, Sink};
use crate::{DecodeError, EncodeError, ReasonCode};

/// The answer to UNSUBSCRIBE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsubAck {
    /// Packet identifier of the UNSUBSCRIBE.
    pub packet_id: u16,
    /// MQTT 5.0 properties.
    pub properties: AckProperties,
    /// One per filter, in order (MQTT 5.0; empty before 5.0, which has none on the wire).
    pub reason_codes: Vec<ReasonCode>,
}

impl UnsubAck {
    pub(crate) fn decode(r: &mut Reader, version: ProtocolVersion) -> Result<Self, DecodeError> {
        let packet_id = packet_id(r)?;
        if !version.is_v5() {
            return Ok(UnsubAck {
                packet_id,
                properties: AckProperties::default(),
                reason_codes: Vec::new(),
            });
        }
        let properties = AckProperties::decode(r, "UNSUBACK")?;
        let mut reason_codes = Vec::with_capacity(r.remaining());
        while r.remaining() > 0 {
            let code = r.u8("reason code")?;
            let rc = reason_code(code, PacketType::UnsubAck)?;
            reason_codes.push(rc);
        }
        if reason_codes.is_empty() {
            return Err(DecodeError::EmptyAck {
                packet: PacketType::UnsubAck,
            });
        }
        Ok(UnsubAck {
            packet_id,
            properties,
            reason_codes,
        })
    }
}

impl Body for UnsubAck {
    fn write_body<S: Sink + ?Sized>(
        &self,
        v: ProtocolVersion,
        s: &mut S,
    ) -> Result<(), EncodeError> {
        put_packet_id(s, self.packet_id, PacketType::UnsubAck)?;
        if v.is_v5() {
            encode_block(&self.properties, s)?;
            for rc in &self.reason_codes {
                s.put_u8(*rc as u8);
            }
        }
        Ok(())
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
    fn both_versions() {
        let v3 = decode_as(V3_1_1, &[0xB0, 0x02, 0x00, 0x05]).unwrap();
        let Packet::UnsubAck(ack) = v3 else { panic!() };
        assert_eq!(ack.packet_id, 5);
        assert!(ack.reason_codes.is_empty());
        assert!(decode_as(V3_1_1, &[0xB0, 0x03, 0x00, 0x05, 0x00]).is_err());
        let v5 = decode_as(V5, &[0xB0, 0x05, 0x00, 0x05, 0x00, 0x00, 0x11]).unwrap();
        let Packet::UnsubAck(ack) = v5 else { panic!() };
        assert_eq!(
            ack.reason_codes,
            vec![ReasonCode::Success, ReasonCode::NoSubscriptionExisted]
        );
        assert_eq!(
            decode_as(V5, &[0xB0, 0x03, 0x00, 0x05, 0x00]),
            Err(DecodeError::EmptyAck {
                packet: PacketType::UnsubAck
            })
        );
        assert!(matches!(
            decode_as(V5, &[0xB0, 0x04, 0x00, 0x05, 0x00, 0x01]),
            Err(DecodeError::InvalidReasonCode { code: 0x01, .. })
        ));
    }
}
