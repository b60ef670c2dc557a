//! SUBSCRIBE (§3.8): topic filters with their subscription options.

use bytestring::ByteString;

use super::{Body, PacketType, ProtocolVersion, QoS, packet_id, put_packet_id};
use crate::properties::{SubscribeProperties, encode_block};
use crate::topic::{parse_shared, validate_topic_filter};
use crate::wire::{Reader, Sink, put_string};
use crate::{DecodeError, EncodeError};

/// A request to subscribe to one or more topic filters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    /// Packet identifier, echoed by SUBACK.
    pub packet_id: u16,
    /// MQTT 5.0 properties (empty before 5.0).
    pub properties: SubscribeProperties,
    /// The filters, at least one, in order.
    pub subscriptions: Vec<Subscription>,
}

/// One topic filter of a SUBSCRIBE and its options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// The topic filter, possibly `$share/{group}/{filter}`.
    pub filter: ByteString,
    /// Requested QoS and the 5.0 options.
    pub options: SubscriptionOptions,
}

/// The subscription options byte (§3.8.3.1). Before 5.0 only `qos` exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SubscriptionOptions {
    /// Maximum QoS the subscriber wants.
    pub qos: QoS,
    /// Do not deliver the subscriber's own publications back to it.
    pub no_local: bool,
    /// Keep the retain flag of forwarded messages as published.
    pub retain_as_published: bool,
    /// When to send retained messages.
    pub retain_handling: RetainHandling,
}

/// When retained messages are sent for a new subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(u8)]
pub enum RetainHandling {
    /// Send retained messages at the time of the subscribe.
    #[default]
    OnSubscribe = 0,
    /// Send them only if the subscription did not exist.
    OnNewSubscription = 1,
    /// Do not send them.
    Never = 2,
}

impl SubscriptionOptions {
    /// Options with this QoS and the defaults otherwise.
    pub fn qos(qos: QoS) -> Self {
        SubscriptionOptions {
            qos,
            ..Default::default()
        }
    }

    fn decode(byte: u8, version: ProtocolVersion) -> Result<Self, DecodeError> {
        let reserved = if version.is_v5() { 0xC0 } else { 0xFC };
        if byte & reserved != 0 {
            return Err(DecodeError::SubscriptionOptionsReserved(byte));
        }
        let qos = QoS::from_u8(byte & 0x03).ok_or(DecodeError::InvalidQoS {
            field: "subscription QoS",
        })?;
        let retain_handling = match (byte >> 4) & 0x03 {
            0 => RetainHandling::OnSubscribe,
            1 => RetainHandling::OnNewSubscription,
            2 => RetainHandling::Never,
            _ => return Err(DecodeError::InvalidRetainHandling),
        };
        Ok(SubscriptionOptions {
            qos,
            no_local: byte & 0x04 != 0,
            retain_as_published: byte & 0x08 != 0,
            retain_handling,
        })
    }

    fn encode(self, version: ProtocolVersion) -> u8 {
        let mut byte = self.qos as u8;
        if version.is_v5() {
            byte |= u8::from(self.no_local) << 2;
            byte |= u8::from(self.retain_as_published) << 3;
            byte |= (self.retain_handling as u8) << 4;
        }
        byte
    }
}

impl Subscribe {
    /// A SUBSCRIBE of one filter at `qos`.
    pub fn new(packet_id: u16, filter: impl Into<ByteString>, qos: QoS) -> Self {
        Subscribe {
            packet_id,
            properties: SubscribeProperties::default(),
            subscriptions: vec![Subscription {
                filter: filter.into(),
                options: SubscriptionOptions::qos(qos),
            }],
        }
    }

    pub(crate) fn decode(r: &mut Reader, version: ProtocolVersion) -> Result<Self, DecodeError> {
        let packet_id = packet_id(r)?;
        let properties = if version.is_v5() {
            SubscribeProperties::decode(r)?
        } else {
            Default::default()
        };
        let mut subscriptions = Vec::new();
        while r.remaining() > 0 {
            let filter = r.string("topic filter")?;
            validate_topic_filter(&filter)?;
            let options = SubscriptionOptions::decode(r.u8("subscription options")?, version)?;
            if options.no_local && parse_shared(&filter)?.is_some() {
                return Err(DecodeError::NoLocalOnSharedSubscription);
            }
            subscriptions.push(Subscription { filter, options });
        }
        if subscriptions.is_empty() {
            return Err(DecodeError::EmptySubscribe);
        }
        Ok(Subscribe {
            packet_id,
            properties,
            subscriptions,
        })
    }
}

impl Body for Subscribe {
    fn write_body<S: Sink + ?Sized>(
        &self,
        v: ProtocolVersion,
        s: &mut S,
    ) -> Result<(), EncodeError> {
        put_packet_id(s, self.packet_id, PacketType::Subscribe)?;
        if v.is_v5() {
            encode_block(&self.properties, s)?;
        }
        for sub in &self.subscriptions {
            put_string(s, &sub.filter, "topic filter")?;
            s.put_u8(sub.options.encode(v));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Packet, ProtocolVersion::*, TopicError, decode};
    use bytes::BytesMut;

    fn decode_as(v: ProtocolVersion, bytes: &[u8]) -> Result<Packet, DecodeError> {
        decode(&mut BytesMut::from(bytes), v, 1024).map(|p| p.expect("complete"))
    }

    #[test]
    fn v3_bytes() {
        let bytes = [0x82, 0x08, 0x00, 0x0A, 0x00, 0x03, b'a', b'/', b'#', 0x01];
        let expected = Subscribe::new(10, "a/#", QoS::AtLeastOnce);
        assert_eq!(
            decode_as(V3_1_1, &bytes).unwrap(),
            Packet::Subscribe(expected.clone())
        );
        assert_eq!(
            &Packet::Subscribe(expected).to_bytes(V3_1_1).unwrap()[..],
            &bytes[..]
        );
    }

    #[test]
    fn v5_options_round_trip() {
        let mut sub = Subscribe::new(1, "$share/g/x/+", QoS::ExactlyOnce);
        sub.subscriptions.push(Subscription {
            filter: "y".into(),
            options: SubscriptionOptions {
                qos: QoS::AtMostOnce,
                no_local: true,
                retain_as_published: true,
                retain_handling: RetainHandling::Never,
            },
        });
        sub.properties.subscription_identifier = Some(268_435_455);
        let bytes = Packet::Subscribe(sub.clone()).to_bytes(V5).unwrap();
        assert_eq!(decode_as(V5, &bytes).unwrap(), Packet::Subscribe(sub));
    }

    #[test]
    fn violations() {
        // Fixed header flags must be 0010.
        assert!(matches!(
            decode_as(V3_1_1, &[0x80, 0x06, 0x00, 0x01, 0x00, 0x01, b'a', 0x00]),
            Err(DecodeError::ReservedFlags { .. })
        ));
        // No filters.
        assert_eq!(
            decode_as(V3_1_1, &[0x82, 0x02, 0x00, 0x01]),
            Err(DecodeError::EmptySubscribe)
        );
        assert_eq!(
            decode_as(V5, &[0x82, 0x03, 0x00, 0x01, 0x00]),
            Err(DecodeError::EmptySubscribe)
        );
        // QoS 3.
        assert_eq!(
            decode_as(V3_1_1, &[0x82, 0x06, 0x00, 0x01, 0x00, 0x01, b'a', 0x03]),
            Err(DecodeError::InvalidQoS {
                field: "subscription QoS"
            })
        );
        // 5.0 option bits are reserved in 3.1.1.
        assert_eq!(
            decode_as(V3_1_1, &[0x82, 0x06, 0x00, 0x01, 0x00, 0x01, b'a', 0x04]),
            Err(DecodeError::SubscriptionOptionsReserved(0x04))
        );
        assert_eq!(
            decode_as(V5, &[0x82, 0x07, 0x00, 0x01, 0x00, 0x00, 0x01, b'a', 0x40]),
            Err(DecodeError::SubscriptionOptionsReserved(0x40))
        );
        assert_eq!(
            decode_as(V5, &[0x82, 0x07, 0x00, 0x01, 0x00, 0x00, 0x01, b'a', 0x30]),
            Err(DecodeError::InvalidRetainHandling)
        );
        // Wildcard placement.
        assert_eq!(
            decode_as(
                V3_1_1,
                &[0x82, 0x07, 0x00, 0x01, 0x00, 0x02, b'a', b'#', 0x00]
            ),
            Err(DecodeError::Topic(TopicError::MultiLevelWildcardMisplaced))
        );
        // No Local on a shared subscription.
        let mut shared = Subscribe::new(1, "$share/g/t", QoS::AtMostOnce);
        shared.subscriptions[0].options.no_local = true;
        let bytes = Packet::Subscribe(shared).to_bytes(V5).unwrap();
        assert_eq!(
            decode_as(V5, &bytes),
            Err(DecodeError::NoLocalOnSharedSubscription)
        );
        // Subscription identifier 0.
        assert!(matches!(
            decode_as(
                V5,
                &[
                    0x82, 0x09, 0x00, 0x01, 0x02, 0x0B, 0x00, 0x00, 0x01, b'a', 0x00
                ]
            ),
            Err(DecodeError::InvalidPropertyValue { value: 0, .. })
        ));
    }
}
