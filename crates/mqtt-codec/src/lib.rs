//! A pure MQTT 3.1, 3.1.1 and 5.0 codec: bytes in, packets out, and back.
//!
//! No sockets, no runtime: the broker and herald-bench do their own I/O and call in here.
//!
//! # Map
//!
//! - [`decode`] takes one packet off the front of a `BytesMut`, or returns `Ok(None)` when it
//!   has not fully arrived ("read more"), consuming nothing. [`check_frame`] is its first
//!   half: it reads the fixed header and rejects a packet over the size limit before its body
//!   is awaited or allocated.
//! - [`Packet::encode`] appends a packet; [`Publish::encode_header`] writes a PUBLISH without
//!   its payload, so that one payload is shared by every subscriber of a fan-out.
//! - `packet/`: one module per packet kind ([`Connect`], [`ConnAck`], [`Publish`], [`Ack`]
//!   for PUBACK/PUBREC/PUBREL/PUBCOMP, [`Subscribe`], [`SubAck`], [`Unsubscribe`],
//!   [`UnsubAck`], [`Disconnect`], [`Auth`]).
//! - [`properties`]: MQTT 5.0 properties, one typed struct per packet kind.
//! - [`ReasonCode`]: every MQTT 5.0 reason code, its names, where each is allowed, and the
//!   3.1.1 return codes they map to.
//! - [`topic`]: topic name and filter validation, matching, `$share/{group}/{filter}`.
//! - [`DecodeError`] names, for every violation, the rule of the specification and the reason
//!   code a server answers with.
//!
//! # Versions
//!
//! CONNECT announces its version ([`Connect::protocol`]); every later packet on the connection
//! is decoded and encoded with it. One set of packet types serves all versions: fields that
//! do not exist before 5.0 (properties, most reason codes) are empty when decoded from 3.1.1
//! and left out when encoding for it.
//!
//! # Zero copy
//!
//! Decoding splits the packet's bytes off the input buffer and freezes them; payloads, binary
//! properties and strings ([`bytestring::ByteString`]) are slices of that one allocation.
//!
//! ```
//! use bytes::BytesMut;
//! use mqtt_codec::{decode, Packet, ProtocolVersion, Publish, QoS};
//!
//! let mut publish = Publish::new("sensors/1/temp", &b"21.5"[..]);
//! publish.qos = QoS::AtLeastOnce;
//! publish.packet_id = 7;
//! let mut wire = BytesMut::new();
//! Packet::Publish(publish.clone()).encode(ProtocolVersion::V5, &mut wire).unwrap();
//!
//! // Half a packet: nothing is consumed.
//! let mut partial = BytesMut::from(&wire[..5]);
//! assert_eq!(decode(&mut partial, ProtocolVersion::V5, 1 << 20), Ok(None));
//! assert_eq!(partial.len(), 5);
//!
//! let packet = decode(&mut wire, ProtocolVersion::V5, 1 << 20).unwrap();
//! assert_eq!(packet, Some(Packet::Publish(publish)));
//! assert!(wire.is_empty());
//! ```

mod error;
mod packet;
pub mod properties;
mod reason;
pub mod topic;
mod wire;

pub use bytestring::ByteString;
pub use error::{DecodeError, EncodeError};
pub use packet::{
    Ack, Auth, ConnAck, Connect, Disconnect, FrameHeader, LastWill, Packet, PacketType,
    ProtocolVersion, Publish, QoS, RetainHandling, SubAck, Subscribe, Subscription,
    SubscriptionOptions, UnsubAck, Unsubscribe, check_frame, decode, decode_body,
};
pub use properties::PropertyId;
pub use reason::ReasonCode;
pub use topic::TopicError;
pub use wire::{MAX_VARINT, read_varint};

/// The largest packet MQTT can express: a 4-byte remaining length of 268,435,455 plus the
/// fixed header.
pub const MAX_PACKET_SIZE: usize = 1 + 4 + MAX_VARINT as usize;
