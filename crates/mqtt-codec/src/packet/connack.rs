//! CONNACK (§3.2): the server's answer to CONNECT.

use super::{Body, PacketType, ProtocolVersion, reason_code};
use crate::properties::{ConnAckProperties, encode_block};
use crate::wire::{Reader, Sink};
use crate::{DecodeError, EncodeError, ReasonCode};

/// The server's answer to CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnAck {
    /// Whether the server resumed an existing session.
    pub session_present: bool,
    /// The result. Before 5.0 it travels as the closest return code (0-5).
    pub reason_code: ReasonCode,
    /// MQTT 5.0 properties (empty before 5.0).
    pub properties: ConnAckProperties,
}

impl ConnAck {
    /// A CONNACK with this result and no properties.
    pub fn new(reason_code: ReasonCode, session_present: bool) -> Self {
        ConnAck {
            session_present,
            reason_code,
            properties: ConnAckProperties::default(),
        }
    }

    pub(crate) fn decode(r: &mut Reader, version: ProtocolVersion) -> Result<Self, DecodeError> {
        let flags = r.u8("connect acknowledge flags")?;
        if flags & 0xFE != 0 {
            return Err(DecodeError::ConnAckFlagsReserved(flags));
        }
        let code = r.u8("reason code")?;
        let (reason_code, properties) = if version.is_v5() {
            (
                reason_code(code, PacketType::ConnAck)?,
                ConnAckProperties::decode(r)?,
            )
        } else {
            let rc = ReasonCode::from_connack_return_code(code).ok_or(
                DecodeError::InvalidReasonCode {
                    packet: PacketType::ConnAck,
                    code,
                },
            )?;
            (rc, ConnAckProperties::default())
        };
        // MQTT 3.1 reserves the whole byte: there is no session present flag to read.
        let session_present = flags & 1 != 0 && version != ProtocolVersion::V3_1;
        Ok(ConnAck {
            session_present,
            reason_code,
            properties,
        })
    }
}

impl Body for ConnAck {
    fn write_body<S: Sink + ?Sized>(
        &self,
        v: ProtocolVersion,
        s: &mut S,
    ) -> Result<(), EncodeError> {
        // MQTT 3.1 has no session present flag: the byte is reserved.
        s.put_u8(u8::from(self.session_present && v != ProtocolVersion::V3_1));
        if v.is_v5() {
            s.put_u8(self.reason_code as u8);
            encode_block(&self.properties, s)
        } else {
            s.put_u8(self.reason_code.to_connack_return_code());
            Ok(())
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
    fn v3_return_codes() {
        let p = decode_as(V3_1_1, &[0x20, 0x02, 0x01, 0x05]).unwrap();
        assert_eq!(
            p,
            Packet::ConnAck(Box::new(ConnAck::new(ReasonCode::NotAuthorized, true)))
        );
        assert!(matches!(
            decode_as(V3_1_1, &[0x20, 0x02, 0x00, 0x06]),
            Err(DecodeError::InvalidReasonCode { code: 6, .. })
        ));
        // A 5.0-only code is sent to a 3.1.1 client as the closest return code.
        let bytes = Packet::ConnAck(Box::new(ConnAck::new(ReasonCode::Banned, false)))
            .to_bytes(V3_1_1)
            .unwrap();
        assert_eq!(&bytes[..], &[0x20, 0x02, 0x00, 0x05]);
    }

    #[test]
    fn v5_reason_code_and_properties() {
        let mut ack = ConnAck::new(ReasonCode::Success, false);
        ack.properties.assigned_client_identifier = Some("auto-1".into());
        ack.properties.maximum_qos = Some(crate::QoS::AtLeastOnce);
        ack.properties.server_keep_alive = Some(120);
        let bytes = Packet::ConnAck(Box::new(ack.clone())).to_bytes(V5).unwrap();
        assert_eq!(
            decode_as(V5, &bytes).unwrap(),
            Packet::ConnAck(Box::new(ack))
        );
        // Reserved acknowledge flag bits (not the fixed header's: their own rule), and a
        // reason code CONNACK does not allow.
        let err = decode_as(V5, &[0x20, 0x03, 0x02, 0x00, 0x00]).unwrap_err();
        assert_eq!(err, DecodeError::ConnAckFlagsReserved(0x02));
        assert_eq!(err.rule(), "MQTT 5.0 §3.2.2.1");
        assert!(matches!(
            decode_as(V5, &[0x21, 0x03, 0x00, 0x00, 0x00]),
            Err(DecodeError::ReservedFlags {
                packet: PacketType::ConnAck,
                flags: 1
            })
        ));
        assert!(matches!(
            decode_as(V5, &[0x20, 0x03, 0x00, 0x8E, 0x00]),
            Err(DecodeError::InvalidReasonCode { code: 0x8E, .. })
        ));
    }
}
