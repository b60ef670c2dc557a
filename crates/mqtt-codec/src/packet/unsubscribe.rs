//! UNSUBSCRIBE (§3.10).

use bytestring::ByteString;

use super::{Body, PacketType, ProtocolVersion, packet_id, put_packet_id};
use crate::properties::{UnsubscribeProperties, encode_block};
use crate::topic::validate_topic_filter;
use crate::wire::{Reader, Sink, put_string};
use crate::{DecodeError, EncodeError};

/// A request to remove subscriptions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsubscribe {
    /// Packet identifier, echoed by UNSUBACK.
    pub packet_id: u16,
    /// MQTT 5.0 properties (empty before 5.0).
    pub properties: UnsubscribeProperties,
    /// The filters to remove, at least one, exactly as they were subscribed.
    pub filters: Vec<ByteString>,
}

impl Unsubscribe {
    /// An UNSUBSCRIBE of one filter.
    pub fn new(packet_id: u16, filter: impl Into<ByteString>) -> Self {
        Unsubscribe {
            packet_id,
            properties: UnsubscribeProperties::default(),
            filters: vec![filter.into()],
        }
    }

    pub(crate) fn decode(r: &mut Reader, version: ProtocolVersion) -> Result<Self, DecodeError> {
        let packet_id = packet_id(r)?;
        let properties = if version.is_v5() {
            UnsubscribeProperties::decode(r)?
        } else {
            Default::default()
        };
        let mut filters = Vec::new();
        while r.remaining() > 0 {
            let filter = r.string("topic filter")?;
            validate_topic_filter(&filter)?;
            filters.push(filter);
        }
        if filters.is_empty() {
            return Err(DecodeError::EmptyUnsubscribe);
        }
        Ok(Unsubscribe {
            packet_id,
            properties,
            filters,
        })
    }
}

impl Body for Unsubscribe {
    fn write_body<S: Sink + ?Sized>(
        &self,
        v: ProtocolVersion,
        s: &mut S,
    ) -> Result<(), EncodeError> {
        put_packet_id(s, self.packet_id, PacketType::Unsubscribe)?;
        if v.is_v5() {
            encode_block(&self.properties, s)?;
        }
        for filter in &self.filters {
            put_string(s, filter, "topic filter")?;
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
    fn bytes_and_rules() {
        let bytes = [0xA2, 0x05, 0x00, 0x02, 0x00, 0x01, b'a'];
        let u = Unsubscribe::new(2, "a");
        assert_eq!(
            decode_as(V3_1_1, &bytes).unwrap(),
            Packet::Unsubscribe(u.clone())
        );
        assert_eq!(
            &Packet::Unsubscribe(u).to_bytes(V3_1_1).unwrap()[..],
            &bytes[..]
        );
        assert_eq!(
            decode_as(V3_1_1, &[0xA2, 0x02, 0x00, 0x02]),
            Err(DecodeError::EmptyUnsubscribe)
        );
        assert!(matches!(
            decode_as(V3_1_1, &[0xA0, 0x05, 0x00, 0x02, 0x00, 0x01, b'a']),
            Err(DecodeError::ReservedFlags { .. })
        ));
        let mut v5 = Unsubscribe::new(9, "$share/g/#");
        v5.properties.user_properties.push(("a".into(), "b".into()));
        let bytes = Packet::Unsubscribe(v5.clone()).to_bytes(V5).unwrap();
        assert_eq!(decode_as(V5, &bytes).unwrap(), Packet::Unsubscribe(v5));
    }
}
