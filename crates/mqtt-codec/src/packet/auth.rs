//! AUTH (§3.15): enhanced authentication and re-authentication, MQTT 5.0 only.

use super::{Body, PacketType, ProtocolVersion, reason_code};
use crate::properties::{AuthProperties, encode_block};
use crate::wire::{Reader, Sink};
use crate::{DecodeError, EncodeError, ReasonCode};

/// A step of an enhanced authentication exchange.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Auth {
    /// Success, Continue authentication or Re-authenticate.
    pub reason_code: ReasonCode,
    /// Method, data and diagnostics.
    pub properties: AuthProperties,
}

impl Auth {
    /// The reason code and the property length are omitted together or not at all: unlike
    /// DISCONNECT and the PUBLISH acknowledgements, AUTH has no form with a reason code and
    /// no property length (§3.15.2.1, §3.15.2.2.1), so a Remaining Length of 1 is malformed.
    pub(crate) fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        let mut auth = Auth::default();
        if r.remaining() == 0 {
            return Ok(auth);
        }
        let code = r.u8("reason code")?;
        auth.reason_code = reason_code(code, PacketType::Auth)?;
        auth.properties = AuthProperties::decode(r)?;
        Ok(auth)
    }
}

impl Body for Auth {
    fn write_body<S: Sink + ?Sized>(
        &self,
        _: ProtocolVersion,
        s: &mut S,
    ) -> Result<(), EncodeError> {
        if self.reason_code == ReasonCode::Success && self.properties.is_empty() {
            return Ok(());
        }
        s.put_u8(self.reason_code as u8);
        encode_block(&self.properties, s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Packet, ProtocolVersion::*, decode};
    use bytes::{Bytes, BytesMut};

    fn decode_as(v: ProtocolVersion, bytes: &[u8]) -> Result<Packet, DecodeError> {
        decode(&mut BytesMut::from(bytes), v, 1024).map(|p| p.expect("complete"))
    }

    #[test]
    fn v5_only() {
        assert_eq!(
            decode_as(V5, &[0xF0, 0x00]).unwrap(),
            Packet::Auth(Auth::default())
        );
        assert_eq!(
            decode_as(V3_1_1, &[0xF0, 0x00]),
            Err(DecodeError::InvalidPacketType(15))
        );
        assert!(Packet::Auth(Auth::default()).to_bytes(V3_1_1).is_err());
        let auth = Auth {
            reason_code: ReasonCode::ContinueAuthentication,
            properties: AuthProperties {
                authentication_method: Some("SCRAM-SHA-256".into()),
                authentication_data: Some(Bytes::from_static(b"\x00\x01")),
                ..Default::default()
            },
        };
        let bytes = Packet::Auth(auth.clone()).to_bytes(V5).unwrap();
        assert_eq!(decode_as(V5, &bytes).unwrap(), Packet::Auth(auth));
        // Data without a method.
        assert_eq!(
            decode_as(V5, &[0xF0, 0x06, 0x18, 0x04, 0x16, 0x00, 0x01, 0x00]),
            Err(DecodeError::AuthDataWithoutMethod)
        );
        // A reason code without a property length (found by fuzzing: it was accepted, and
        // re-encoded one byte longer).
        assert!(matches!(
            decode_as(V5, &[0xF0, 0x01, 0x19]),
            Err(DecodeError::UnexpectedEnd {
                packet: PacketType::Auth,
                ..
            })
        ));
        let reauth = Auth {
            reason_code: ReasonCode::ReAuthenticate,
            ..Default::default()
        };
        assert_eq!(
            decode_as(V5, &[0xF0, 0x02, 0x19, 0x00]).unwrap(),
            Packet::Auth(reauth)
        );
    }
}
