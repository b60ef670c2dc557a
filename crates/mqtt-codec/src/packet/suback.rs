//! SUBACK (§3.9): one reason code per filter of the SUBSCRIBE it answers.

use super::{Body, PacketType, ProtocolVersion, packet_id, put_packet_id, reason_code};
use crate::properties::{AckProperties, encode_block};
use crate::wire::{Reader, Sink};
use crate::{DecodeError, EncodeError, ReasonCode};

/// The answer to SUBSCRIBE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubAck {
    /// Packet identifier of the SUBSCRIBE.
    pub packet_id: u16,
    /// MQTT 5.0 properties.
    pub properties: AckProperties,
    /// Granted QoS (0x00-0x02) or a failure, one per filter in order. Before 5.0 every
    /// failure travels as 0x80.
    pub reason_codes: Vec<ReasonCode>,
}

impl SubAck {
    pub(crate) fn decode(r: &mut Reader, version: ProtocolVersion) -> Result<Self, DecodeError> {
        let packet_id = packet_id(r)?;
        let properties = if version.is_v5() {
            AckProperties::decode(r, "SUBACK")?
        } else {
            AckProperties::default()
        };
        let mut reason_codes = Vec::with_capacity(r.remaining());
        while r.remaining() > 0 {
            let code = r.u8("reason code")?;
            let rc = reason_code(code, PacketType::SubAck)?;
            // 3.1.1 has only the granted QoS and 0x80 [MQTT-3.9.3-2 in 3.1.1].
            if !version.is_v5() && rc.to_suback_return_code() != code {
                return Err(DecodeError::InvalidReasonCode {
                    packet: PacketType::SubAck,
                    code,
                });
            }
            reason_codes.push(rc);
        }
        if reason_codes.is_empty() {
            return Err(DecodeError::EmptyAck {
                packet: PacketType::SubAck,
            });
        }
        Ok(SubAck {
            packet_id,
            properties,
            reason_codes,
        })
    }
}

impl Body for SubAck {
    fn write_body<S: Sink + ?Sized>(
        &self,
        v: ProtocolVersion,
        s: &mut S,
    ) -> Result<(), EncodeError> {
        put_packet_id(s, self.packet_id, PacketType::SubAck)?;
        if v.is_v5() {
            encode_block(&self.properties, s)?;
            for rc in &self.reason_codes {
                s.put_u8(*rc as u8);
            }
        } else {
            for rc in &self.reason_codes {
                s.put_u8(rc.to_suback_return_code());
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
    fn v3_return_codes() {
        let p = decode_as(V3_1_1, &[0x90, 0x05, 0x00, 0x01, 0x00, 0x02, 0x80]).unwrap();
        let Packet::SubAck(ack) = p else { panic!() };
        assert_eq!(
            ack.reason_codes,
            vec![
                ReasonCode::Success,
                ReasonCode::GrantedQoS2,
                ReasonCode::UnspecifiedError
            ]
        );
        // 0x87 (Not authorized) exists only in 5.0.
        assert!(decode_as(V3_1_1, &[0x90, 0x03, 0x00, 0x01, 0x87]).is_err());
        let mut ack = ack;
        ack.reason_codes = vec![ReasonCode::NotAuthorized];
        assert_eq!(
            &Packet::SubAck(ack).to_bytes(V3_1_1).unwrap()[..],
            &[0x90, 0x03, 0x00, 0x01, 0x80]
        );
        assert_eq!(
            decode_as(V3_1_1, &[0x90, 0x02, 0x00, 0x01]),
            Err(DecodeError::EmptyAck {
                packet: PacketType::SubAck
            })
        );
    }

    #[test]
    fn v5_codes() {
        let ack = SubAck {
            packet_id: 3,
            properties: AckProperties {
                reason_string: Some("no".into()),
                ..Default::default()
            },
            reason_codes: vec![
                ReasonCode::GrantedQoS1,
                ReasonCode::WildcardSubscriptionsNotSupported,
            ],
        };
        let bytes = Packet::SubAck(ack.clone()).to_bytes(V5).unwrap();
        assert_eq!(decode_as(V5, &bytes).unwrap(), Packet::SubAck(ack));
        assert!(matches!(
            decode_as(V5, &[0x90, 0x04, 0x00, 0x01, 0x00, 0x8E]),
            Err(DecodeError::InvalidReasonCode { code: 0x8E, .. })
        ));
    }
}
