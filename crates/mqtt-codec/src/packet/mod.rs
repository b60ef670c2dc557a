//! The fifteen control packets (§3), one file per packet kind, and the two entry points:
//! [`decode`] (bytes in, packet out, `None` for "read more") and [`Packet::encode`].

mod ack;
mod auth;
mod connack;
mod connect;
mod disconnect;
mod publish;
mod suback;
mod subscribe;
mod unsuback;
mod unsubscribe;

pub use ack::Ack;
use ack::AckOf;
pub use auth::Auth;
pub use connack::ConnAck;
pub use connect::{Connect, LastWill};
pub use disconnect::Disconnect;
pub use publish::Publish;
pub use suback::SubAck;
pub use subscribe::{RetainHandling, Subscribe, Subscription, SubscriptionOptions};
pub use unsuback::UnsubAck;
pub use unsubscribe::Unsubscribe;

use bytes::{Bytes, BytesMut};

use crate::wire::{MAX_VARINT, Reader, Sink, measure, put_varint, read_varint, varint_len};
use crate::{DecodeError, EncodeError, ReasonCode};

/// The protocol a connection speaks, fixed by its CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProtocolVersion {
    /// MQTT 3.1: protocol name "MQIsdp", level 3.
    V3_1,
    /// MQTT 3.1.1: protocol name "MQTT", level 4.
    V3_1_1,
    /// MQTT 5.0: protocol name "MQTT", level 5.
    V5,
}

impl ProtocolVersion {
    /// The protocol level byte of CONNECT.
    pub fn level(self) -> u8 {
        match self {
            ProtocolVersion::V3_1 => 3,
            ProtocolVersion::V3_1_1 => 4,
            ProtocolVersion::V5 => 5,
        }
    }

    /// The protocol name CONNECT carries.
    pub fn protocol_name(self) -> &'static str {
        match self {
            ProtocolVersion::V3_1 => "MQIsdp",
            _ => "MQTT",
        }
    }

    /// Whether this is MQTT 5.0 (properties, reason codes, AUTH).
    pub fn is_v5(self) -> bool {
        self == ProtocolVersion::V5
    }
}

/// Quality of service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
#[repr(u8)]
pub enum QoS {
    /// At most once: no acknowledgement.
    #[default]
    AtMostOnce = 0,
    /// At least once: PUBACK.
    AtLeastOnce = 1,
    /// Exactly once: PUBREC, PUBREL, PUBCOMP.
    ExactlyOnce = 2,
}

impl QoS {
    /// The QoS for 0, 1 or 2.
    pub fn from_u8(value: u8) -> Option<QoS> {
        match value {
            0 => Some(QoS::AtMostOnce),
            1 => Some(QoS::AtLeastOnce),
            2 => Some(QoS::ExactlyOnce),
            _ => None,
        }
    }
}

/// The kind of a control packet: the high four bits of its first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum PacketType {
    /// Client asks to connect.
    Connect = 1,
    /// Server answers CONNECT.
    ConnAck = 2,
    /// An application message.
    Publish = 3,
    /// QoS 1 acknowledgement.
    PubAck = 4,
    /// QoS 2, part 1.
    PubRec = 5,
    /// QoS 2, part 2.
    PubRel = 6,
    /// QoS 2, part 3.
    PubComp = 7,
    /// Client subscribes.
    Subscribe = 8,
    /// Server answers SUBSCRIBE.
    SubAck = 9,
    /// Client unsubscribes.
    Unsubscribe = 10,
    /// Server answers UNSUBSCRIBE.
    UnsubAck = 11,
    /// Keep-alive request.
    PingReq = 12,
    /// Keep-alive response.
    PingResp = 13,
    /// Either side closes, with a reason in 5.0.
    Disconnect = 14,
    /// Enhanced authentication exchange (5.0 only).
    Auth = 15,
}

impl PacketType {
    /// The packet type in the high nibble of a first byte, if it is not reserved (0).
    pub fn from_first_byte(byte: u8) -> Option<PacketType> {
        use PacketType::*;
        Some(match byte >> 4 {
            1 => Connect,
            2 => ConnAck,
            3 => Publish,
            4 => PubAck,
            5 => PubRec,
            6 => PubRel,
            7 => PubComp,
            8 => Subscribe,
            9 => SubAck,
            10 => Unsubscribe,
            11 => UnsubAck,
            12 => PingReq,
            13 => PingResp,
            14 => Disconnect,
            15 => Auth,
            _ => return None,
        })
    }

    /// The flag bits the specification fixes for this packet kind (PUBLISH has none fixed).
    fn fixed_flags(self) -> Option<u8> {
        match self {
            PacketType::Publish => None,
            PacketType::PubRel | PacketType::Subscribe | PacketType::Unsubscribe => Some(0b0010),
            _ => Some(0),
        }
    }
}

/// A control packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// CONNECT (boxed: large and rare).
    Connect(Box<Connect>),
    /// CONNACK (boxed: large and rare).
    ConnAck(Box<ConnAck>),
    /// PUBLISH.
    Publish(Publish),
    /// PUBACK.
    PubAck(Ack),
    /// PUBREC.
    PubRec(Ack),
    /// PUBREL.
    PubRel(Ack),
    /// PUBCOMP.
    PubComp(Ack),
    /// SUBSCRIBE.
    Subscribe(Subscribe),
    /// SUBACK.
    SubAck(SubAck),
    /// UNSUBSCRIBE.
    Unsubscribe(Unsubscribe),
    /// UNSUBACK.
    UnsubAck(UnsubAck),
    /// PINGREQ.
    PingReq,
    /// PINGRESP.
    PingResp,
    /// DISCONNECT.
    Disconnect(Disconnect),
    /// AUTH (MQTT 5.0 only).
    Auth(Auth),
}

impl Packet {
    /// This packet's kind.
    pub fn packet_type(&self) -> PacketType {
        match self {
            Packet::Connect(_) => PacketType::Connect,
            Packet::ConnAck(_) => PacketType::ConnAck,
            Packet::Publish(_) => PacketType::Publish,
            Packet::PubAck(_) => PacketType::PubAck,
            Packet::PubRec(_) => PacketType::PubRec,
            Packet::PubRel(_) => PacketType::PubRel,
            Packet::PubComp(_) => PacketType::PubComp,
            Packet::Subscribe(_) => PacketType::Subscribe,
            Packet::SubAck(_) => PacketType::SubAck,
            Packet::Unsubscribe(_) => PacketType::Unsubscribe,
            Packet::UnsubAck(_) => PacketType::UnsubAck,
            Packet::PingReq => PacketType::PingReq,
            Packet::PingResp => PacketType::PingResp,
            Packet::Disconnect(_) => PacketType::Disconnect,
            Packet::Auth(_) => PacketType::Auth,
        }
    }

    /// Appends this packet, encoded for `version`, to `dst`. CONNECT is encoded with its own
    /// protocol version. Fields that `version` cannot carry (properties, reason codes before
    /// 5.0) are left out; reason codes map to the closest 3.1.1 return code.
    pub fn encode(&self, version: ProtocolVersion, dst: &mut BytesMut) -> Result<(), EncodeError> {
        let v = version;
        match self {
            Packet::Connect(p) => encode_with(&**p, 0x10, p.protocol, dst),
            Packet::ConnAck(p) => encode_with(&**p, 0x20, v, dst),
            Packet::Publish(p) => p.encode(v, dst),
            Packet::PubAck(p) => encode_with(&AckOf(PacketType::PubAck, p), 0x40, v, dst),
            Packet::PubRec(p) => encode_with(&AckOf(PacketType::PubRec, p), 0x50, v, dst),
            Packet::PubRel(p) => encode_with(&AckOf(PacketType::PubRel, p), 0x62, v, dst),
            Packet::PubComp(p) => encode_with(&AckOf(PacketType::PubComp, p), 0x70, v, dst),
            Packet::Subscribe(p) => encode_with(p, 0x82, v, dst),
            Packet::SubAck(p) => encode_with(p, 0x90, v, dst),
            Packet::Unsubscribe(p) => encode_with(p, 0xA2, v, dst),
            Packet::UnsubAck(p) => encode_with(p, 0xB0, v, dst),
            Packet::PingReq => encode_with(&Empty, 0xC0, v, dst),
            Packet::PingResp => encode_with(&Empty, 0xD0, v, dst),
            Packet::Disconnect(p) => encode_with(p, 0xE0, v, dst),
            Packet::Auth(p) => {
                if !v.is_v5() {
                    return Err(EncodeError::NotInVersion(PacketType::Auth));
                }
                encode_with(p, 0xF0, v, dst)
            }
        }
    }

    /// The packet encoded for `version`, as a new buffer.
    pub fn to_bytes(&self, version: ProtocolVersion) -> Result<Bytes, EncodeError> {
        let mut dst = BytesMut::new();
        self.encode(version, &mut dst)?;
        Ok(dst.freeze())
    }
}

/// The fixed header of a packet whose first bytes have arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// The packet kind.
    pub packet_type: PacketType,
    /// The low four bits of the first byte.
    pub flags: u8,
    /// Length of the fixed header: the first byte plus the remaining-length bytes.
    pub header_len: usize,
    /// The remaining length: variable header plus payload.
    pub remaining_len: usize,
}

impl FrameHeader {
    /// The whole packet's length on the wire.
    pub fn frame_len(&self) -> usize {
        self.header_len + self.remaining_len
    }
}

/// Reads and checks the fixed header at the front of `buf` without consuming anything.
///
/// `Ok(None)` means the fixed header itself is incomplete. The packet type, its fixed flags
/// and the declared size (against `max_packet_size`, the whole packet counted) are checked
/// before any of the body is awaited, so a hostile length prefix costs nothing.
pub fn check_frame(
    buf: &[u8],
    version: ProtocolVersion,
    max_packet_size: usize,
) -> Result<Option<FrameHeader>, DecodeError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let packet_type = PacketType::from_first_byte(first)
        .filter(|t| *t != PacketType::Auth || version.is_v5())
        .ok_or(DecodeError::InvalidPacketType(first >> 4))?;
    let flags = first & 0x0F;
    match packet_type.fixed_flags() {
        Some(fixed) if flags != fixed => {
            return Err(DecodeError::ReservedFlags {
                packet: packet_type,
                flags,
            });
        }
        None if flags & 0b0110 == 0b0110 => {
            return Err(DecodeError::InvalidQoS {
                field: "PUBLISH QoS",
            });
        }
        _ => {}
    }
    let Some((remaining, len_bytes)) = read_varint(&buf[1..])? else {
        return Ok(None);
    };
    let header = FrameHeader {
        packet_type,
        flags,
        header_len: 1 + len_bytes,
        remaining_len: remaining as usize,
    };
    if header.frame_len() > max_packet_size {
        return Err(DecodeError::PacketTooLarge {
            size: header.frame_len(),
            max: max_packet_size,
        });
    }
    Ok(Some(header))
}

/// Decodes one packet from the front of `buf`.
///
/// `Ok(None)`: the packet is not complete yet and nothing was consumed. `Ok(Some(packet))`:
/// the packet's bytes were split off `buf`; payloads and binary fields of the packet are
/// slices of them, not copies. An error means the connection must close (see
/// [`DecodeError::reason_code`]); how much of `buf` was consumed is then unspecified.
///
/// CONNECT is decoded whatever `version` says, and reports the version it asks for; every
/// other packet is decoded as `version` defines it.
pub fn decode(
    buf: &mut BytesMut,
    version: ProtocolVersion,
    max_packet_size: usize,
) -> Result<Option<Packet>, DecodeError> {
    let Some(header) = check_frame(buf, version, max_packet_size)? else {
        return Ok(None);
    };
    if buf.len() < header.frame_len() {
        return Ok(None);
    }
    let mut frame = buf.split_to(header.frame_len()).freeze();
    let body = frame.split_off(header.header_len);
    decode_body(header, body, version).map(Some)
}

/// Decodes a packet whose fixed header was already read by [`check_frame`]; `body` is exactly
/// `header.remaining_len` bytes.
pub fn decode_body(
    header: FrameHeader,
    body: Bytes,
    version: ProtocolVersion,
) -> Result<Packet, DecodeError> {
    let mut r = Reader::new(body, header.packet_type);
    let packet = match header.packet_type {
        PacketType::Connect => Packet::Connect(Box::new(Connect::decode(&mut r)?)),
        PacketType::ConnAck => Packet::ConnAck(Box::new(ConnAck::decode(&mut r, version)?)),
        PacketType::Publish => Packet::Publish(Publish::decode(header.flags, &mut r, version)?),
        PacketType::PubAck => Packet::PubAck(Ack::decode(&mut r, version)?),
        PacketType::PubRec => Packet::PubRec(Ack::decode(&mut r, version)?),
        PacketType::PubRel => Packet::PubRel(Ack::decode(&mut r, version)?),
        PacketType::PubComp => Packet::PubComp(Ack::decode(&mut r, version)?),
        PacketType::Subscribe => Packet::Subscribe(Subscribe::decode(&mut r, version)?),
        PacketType::SubAck => Packet::SubAck(SubAck::decode(&mut r, version)?),
        PacketType::Unsubscribe => Packet::Unsubscribe(Unsubscribe::decode(&mut r, version)?),
        PacketType::UnsubAck => Packet::UnsubAck(UnsubAck::decode(&mut r, version)?),
        PacketType::PingReq => Packet::PingReq,
        PacketType::PingResp => Packet::PingResp,
        PacketType::Disconnect => Packet::Disconnect(Disconnect::decode(&mut r, version)?),
        PacketType::Auth => Packet::Auth(Auth::decode(&mut r)?),
    };
    r.finish()?;
    Ok(packet)
}

/// A packet body (variable header and payload), written once against a [`Sink`]: measured
/// with a counter, then written for real, by [`encode_with`].
pub(crate) trait Body {
    fn write_body<S: Sink + ?Sized>(
        &self,
        version: ProtocolVersion,
        s: &mut S,
    ) -> Result<(), EncodeError>;
}

/// Writes a whole packet: first byte, remaining length, then the body.
pub(crate) fn encode_with<B: Body>(
    body: &B,
    first_byte: u8,
    version: ProtocolVersion,
    dst: &mut BytesMut,
) -> Result<(), EncodeError> {
    let len = measure(|c| body.write_body(version, c))?;
    if len > MAX_VARINT as usize {
        return Err(EncodeError::PacketTooLarge(len));
    }
    dst.reserve(1 + varint_len(len) + len);
    Sink::put_u8(dst, first_byte);
    put_varint(dst, len, "remaining length")?;
    body.write_body(version, dst)
}

/// The empty body of PINGREQ and PINGRESP.
struct Empty;

impl Body for Empty {
    fn write_body<S: Sink + ?Sized>(
        &self,
        _: ProtocolVersion,
        _: &mut S,
    ) -> Result<(), EncodeError> {
        Ok(())
    }
}

/// The reason code `code`, if MQTT 5.0 allows it on `packet`.
pub(crate) fn reason_code(code: u8, packet: PacketType) -> Result<ReasonCode, DecodeError> {
    ReasonCode::from_u8(code)
        .filter(|rc| rc.valid_for(packet))
        .ok_or(DecodeError::InvalidReasonCode { packet, code })
}

/// Checks a packet identifier that must not be 0.
pub(crate) fn packet_id(r: &mut Reader) -> Result<u16, DecodeError> {
    match r.u16("packet identifier")? {
        0 => Err(DecodeError::ZeroPacketId { packet: r.packet() }),
        id => Ok(id),
    }
}

/// Encodes a packet identifier that must not be 0.
pub(crate) fn put_packet_id<S: Sink + ?Sized>(
    s: &mut S,
    id: u16,
    packet: PacketType,
) -> Result<(), EncodeError> {
    if id == 0 {
        return Err(EncodeError::ZeroPacketId(packet));
    }
    s.put_u16(id);
    Ok(())
}
