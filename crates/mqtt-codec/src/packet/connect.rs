//! CONNECT (§3.1): the first packet of every connection; it fixes the protocol version.

use bytes::Bytes;
use bytestring::ByteString;

use super::{Body, ProtocolVersion, QoS};
use crate::properties::{ConnectProperties, WillProperties, encode_block};
use crate::topic::validate_topic_name;
use crate::wire::{Reader, Sink, put_binary, put_string};
use crate::{DecodeError, EncodeError};

/// A client's request to connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    /// The protocol version the client speaks, from the protocol name and level.
    pub protocol: ProtocolVersion,
    /// Clean Start (5.0) / Clean Session (3.1.1): discard any existing session.
    pub clean_start: bool,
    /// Seconds between control packets the client promises; 0 disables keep-alive.
    pub keep_alive: u16,
    /// The client identifier; empty asks the server to assign one.
    pub client_id: ByteString,
    /// The will message, published if the connection ends without a normal DISCONNECT.
    pub will: Option<LastWill>,
    /// User name, if the user name flag is set.
    pub username: Option<ByteString>,
    /// Password (binary data), if the password flag is set.
    pub password: Option<Bytes>,
    /// MQTT 5.0 properties (empty before 5.0).
    pub properties: ConnectProperties,
}

/// The will message of a CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastWill {
    /// Topic the will is published to.
    pub topic: ByteString,
    /// The will's payload.
    pub payload: Bytes,
    /// QoS of the will message.
    pub qos: QoS,
    /// Whether the will is published as a retained message.
    pub retain: bool,
    /// MQTT 5.0 will properties (empty before 5.0).
    pub properties: WillProperties,
}

const FLAG_RESERVED: u8 = 0x01;
const FLAG_CLEAN_START: u8 = 0x02;
const FLAG_WILL: u8 = 0x04;
const FLAG_WILL_RETAIN: u8 = 0x20;
const FLAG_PASSWORD: u8 = 0x40;
const FLAG_USERNAME: u8 = 0x80;

impl Connect {
    /// A CONNECT with clean start, no will, no credentials and no properties.
    pub fn new(
        protocol: ProtocolVersion,
        client_id: impl Into<ByteString>,
        keep_alive: u16,
    ) -> Self {
        Connect {
            protocol,
            clean_start: true,
            keep_alive,
            client_id: client_id.into(),
            will: None,
            username: None,
            password: None,
            properties: ConnectProperties::default(),
        }
    }

    pub(crate) fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        let protocol = protocol_version(r)?;
        let flags = r.u8("connect flags")?;
        if flags & FLAG_RESERVED != 0 {
            return Err(DecodeError::ConnectReservedFlag);
        }
        let will_flag = flags & FLAG_WILL != 0;
        let will_qos = QoS::from_u8((flags >> 3) & 0x03)
            .ok_or(DecodeError::InvalidQoS { field: "will QoS" })?;
        let will_retain = flags & FLAG_WILL_RETAIN != 0;
        if !will_flag && (will_qos != QoS::AtMostOnce || will_retain) {
            return Err(DecodeError::WillFlagsWithoutWill);
        }
        let has_username = flags & FLAG_USERNAME != 0;
        let has_password = flags & FLAG_PASSWORD != 0;
        if has_password && !has_username && !protocol.is_v5() {
            return Err(DecodeError::PasswordWithoutUsername);
        }
        let keep_alive = r.u16("keep alive")?;
        let properties = if protocol.is_v5() {
            ConnectProperties::decode(r)?
        } else {
            Default::default()
        };
        let client_id = r.string("client identifier")?;
        let will = if will_flag {
            let properties = if protocol.is_v5() {
                WillProperties::decode(r)?
            } else {
                Default::default()
            };
            let topic = r.string("will topic")?;
            validate_topic_name(&topic)?;
            let payload = r.binary("will payload")?;
            Some(LastWill {
                topic,
                payload,
                qos: will_qos,
                retain: will_retain,
                properties,
            })
        } else {
            None
        };
        let username = if has_username {
            Some(r.string("user name")?)
        } else {
            None
        };
        let password = if has_password {
            Some(r.binary("password")?)
        } else {
            None
        };
        Ok(Connect {
            protocol,
            clean_start: flags & FLAG_CLEAN_START != 0,
            keep_alive,
            client_id,
            will,
            username,
            password,
            properties,
        })
    }

    fn flags(&self) -> u8 {
        let mut flags = 0;
        if self.clean_start {
            flags |= FLAG_CLEAN_START;
        }
        if let Some(will) = &self.will {
            flags |= FLAG_WILL | ((will.qos as u8) << 3);
            if will.retain {
                flags |= FLAG_WILL_RETAIN;
            }
        }
        if self.username.is_some() {
            flags |= FLAG_USERNAME;
        }
        if self.password.is_some() {
            flags |= FLAG_PASSWORD;
        }
        flags
    }
}

/// Reads the protocol name and level and names the version they ask for.
fn protocol_version(r: &mut Reader) -> Result<ProtocolVersion, DecodeError> {
    let name = r.binary("protocol name")?;
    let level = r.u8("protocol level")?;
    match (&name[..], level) {
        (b"MQTT", 4) => Ok(ProtocolVersion::V3_1_1),
        (b"MQTT", 5) => Ok(ProtocolVersion::V5),
        (b"MQIsdp", 3) => Ok(ProtocolVersion::V3_1),
        _ => Err(DecodeError::UnsupportedProtocol {
            name: String::from_utf8_lossy(&name).into_owned(),
            level,
        }),
    }
}

impl Body for Connect {
    /// CONNECT carries its own version; the connection's is ignored.
    fn write_body<S: Sink + ?Sized>(
        &self,
        _: ProtocolVersion,
        s: &mut S,
    ) -> Result<(), EncodeError> {
        let v5 = self.protocol.is_v5();
        if !v5 && self.password.is_some() && self.username.is_none() {
            return Err(EncodeError::Invalid {
                what: "password without user name before MQTT 5.0",
                rule: "[MQTT-3.1.2-22]",
            });
        }
        put_string(s, self.protocol.protocol_name(), "protocol name")?;
        s.put_u8(self.protocol.level());
        s.put_u8(self.flags());
        s.put_u16(self.keep_alive);
        if v5 {
            encode_block(&self.properties, s)?;
        }
        put_string(s, &self.client_id, "client identifier")?;
        if let Some(will) = &self.will {
            if v5 {
                encode_block(&will.properties, s)?;
            }
            put_string(s, &will.topic, "will topic")?;
            put_binary(s, &will.payload, "will payload")?;
        }
        if let Some(username) = &self.username {
            put_string(s, username, "user name")?;
        }
        if let Some(password) = &self.password {
            put_binary(s, password, "password")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Packet, ProtocolVersion::*, decode};
    use bytes::BytesMut;

    fn decode_one(bytes: &[u8]) -> Result<Packet, DecodeError> {
        let mut buf = BytesMut::from(bytes);
        decode(&mut buf, V5, 1 << 20).map(|p| p.expect("complete packet"))
    }

    #[test]
    fn detects_each_protocol_level() {
        for version in [V3_1, V3_1_1, V5] {
            let connect = Connect::new(version, "c1", 30);
            let bytes = Packet::Connect(Box::new(connect.clone()))
                .to_bytes(V3_1_1)
                .unwrap();
            match decode_one(&bytes).unwrap() {
                Packet::Connect(c) => assert_eq!(*c, connect),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn mqtt_3_1_1_bytes() {
        // CONNECT, MQTT 3.1.1, clean session, keep alive 60, client id "abc".
        let bytes = [
            0x10, 0x0F, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x3C, 0x00, 0x03,
            b'a', b'b', b'c',
        ];
        let Packet::Connect(c) = decode_one(&bytes).unwrap() else {
            panic!()
        };
        assert_eq!(c.protocol, V3_1_1);
        assert!(c.clean_start);
        assert_eq!(c.keep_alive, 60);
        assert_eq!(&*c.client_id, "abc");
        let again = Packet::Connect(c).to_bytes(V3_1_1).unwrap();
        assert_eq!(&again[..], &bytes[..]);
    }

    #[test]
    fn unsupported_level_is_0x84() {
        let bytes = [
            0x10, 0x0C, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x06, 0x02, 0x00, 0x3C, 0, 0,
        ];
        let err = decode_one(&bytes).unwrap_err();
        assert!(matches!(
            err,
            DecodeError::UnsupportedProtocol { level: 6, .. }
        ));
        assert_eq!(
            err.reason_code(),
            crate::ReasonCode::UnsupportedProtocolVersion
        );
        assert_eq!(err.rule(), "[MQTT-3.1.2-2]");
    }

    #[test]
    fn flag_rules() {
        let base = |flags: u8| {
            vec![
                0x10, 0x0C, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, flags, 0x00, 0x3C, 0, 0,
            ]
        };
        assert_eq!(
            decode_one(&base(0x03)),
            Err(DecodeError::ConnectReservedFlag)
        );
        assert_eq!(
            decode_one(&base(0x02 | 0x08)),
            Err(DecodeError::WillFlagsWithoutWill)
        );
        assert_eq!(
            decode_one(&base(0x02 | 0x20)),
            Err(DecodeError::WillFlagsWithoutWill)
        );
        assert_eq!(
            decode_one(&base(0x02 | 0x04 | 0x18)),
            Err(DecodeError::InvalidQoS { field: "will QoS" })
        );
        assert_eq!(
            decode_one(&base(0x02 | 0x40)),
            Err(DecodeError::PasswordWithoutUsername)
        );
    }

    #[test]
    fn v5_password_without_username_is_allowed() {
        let mut c = Connect::new(V5, "", 0);
        c.password = Some(Bytes::from_static(b"secret"));
        let bytes = Packet::Connect(Box::new(c.clone())).to_bytes(V5).unwrap();
        assert_eq!(decode_one(&bytes).unwrap(), Packet::Connect(Box::new(c)));
    }

    #[test]
    fn will_topic_must_be_a_topic_name() {
        let mut c = Connect::new(V3_1_1, "c", 0);
        c.will = Some(LastWill {
            topic: "a/#".into(),
            payload: Bytes::new(),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: Default::default(),
        });
        let bytes = Packet::Connect(Box::new(c)).to_bytes(V3_1_1).unwrap();
        assert_eq!(
            decode_one(&bytes),
            Err(DecodeError::Topic(crate::TopicError::WildcardInName))
        );
    }
}
