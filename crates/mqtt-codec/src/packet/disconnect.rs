//! DISCONNECT (§3.14): in 5.0 either side sends it, with a reason.

use super::{Body, PacketType, ProtocolVersion, reason_code};
use crate::properties::{DisconnectProperties, encode_block};
use crate::wire::{Reader, Sink};
use crate::{DecodeError, EncodeError, ReasonCode};

/// The end of a connection.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Disconnect {
    /// Why (MQTT 5.0; Normal disconnection before 5.0).
    pub reason_code: ReasonCode,
    /// MQTT 5.0 properties.
    pub properties: DisconnectProperties,
}

impl Disconnect {
    /// A DISCONNECT with this reason and no properties.
    pub fn new(reason_code: ReasonCode) -> Self {
        Disconnect {
            reason_code,
            properties: DisconnectProperties::default(),
        }
    }

    pub(crate) fn decode(r: &mut Reader, version: ProtocolVersion) -> Result<Self, DecodeError> {
        let mut d = Disconnect::default();
        if !version.is_v5() || r.remaining() == 0 {
            return Ok(d);
        }
        let code = r.u8("reason code")?;
        d.reason_code = reason_code(code, PacketType::Disconnect)?;
        if r.remaining() > 0 {
            d.properties = DisconnectProperties::decode(r)?;
        }
        Ok(d)
    }
}

impl Body for Disconnect {
    /// Shortest form: nothing for a normal disconnection without properties (§3.14.2.1).
    fn write_body<S: Sink + ?Sized>(
        &self,
        v: ProtocolVersion,
        s: &mut S,
    ) -> Result<(), EncodeError> {
        if !v.is_v5() {
            return Ok(());
        }
        let no_props = self.properties.is_empty();
        if self.reason_code == ReasonCode::Success && no_props {
            return Ok(());
        }
        s.put_u8(self.reason_code as u8);
        if no_props {
            Ok(())
        } else {
            encode_block(&self.properties, s)
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
    fn forms() {
        assert_eq!(
            decode_as(V3_1_1, &[0xE0, 0x00]).unwrap(),
            Packet::Disconnect(Disconnect::default())
        );
        assert!(decode_as(V3_1_1, &[0xE0, 0x01, 0x00]).is_err());
        assert!(matches!(
            decode_as(V3_1_1, &[0xE1, 0x00]),
            Err(DecodeError::ReservedFlags { .. })
        ));
        let taken = Disconnect::new(ReasonCode::SessionTakenOver);
        assert_eq!(
            &Packet::Disconnect(taken.clone()).to_bytes(V5).unwrap()[..],
            &[0xE0, 0x01, 0x8E]
        );
        assert_eq!(
            decode_as(V5, &[0xE0, 0x01, 0x8E]).unwrap(),
            Packet::Disconnect(taken)
        );
        assert_eq!(
            &Packet::Disconnect(Disconnect::default())
                .to_bytes(V5)
                .unwrap()[..],
            &[0xE0, 0x00]
        );
        let mut moved = Disconnect::new(ReasonCode::UseAnotherServer);
        moved.properties.server_reference = Some("other:1883".into());
        let bytes = Packet::Disconnect(moved.clone()).to_bytes(V5).unwrap();
        assert_eq!(decode_as(V5, &bytes).unwrap(), Packet::Disconnect(moved));
        assert!(matches!(
            decode_as(V5, &[0xE0, 0x01, 0x01]),
            Err(DecodeError::InvalidReasonCode { code: 0x01, .. })
        ));
    }
}
