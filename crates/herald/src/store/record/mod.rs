//! The byte layout of every record. Keys are big-endian so that a keyspace scans in numeric
//! order (a session's stages by sequence number). Every value starts with a format byte.
//! Messages, retained messages and wills carry their PUBLISH encoded as an MQTT 5.0 packet:
//! one encoding for every property, read back by the same fuzzed decoder that reads clients'
//! packets.
//!
//! Decoding never trusts a length: a cut or extended record is an error naming what is wrong,
//! never a panic or a silently shorter value.

use bytes::{BufMut, BytesMut};
use mqtt_codec::{
    MAX_PACKET_SIZE, Packet, ProtocolVersion, Publish, QoS, RetainHandling, SubscriptionOptions,
};

/// The format byte every value starts with.
const FORMAT: u8 = 1;

/// A message record's format with its cluster identity (run, number, stream position)
/// after the origin: written only by clustered nodes, so a node alone writes what it
/// always did.
const FORMAT_CLUSTERED: u8 = 2;

/// A record read back, or why it does not decode.
pub type DecodeResult<T> = Result<T, DecodeError>;

/// Why a record does not decode. The store's `Damaged` error adds the keyspace and the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// A key of the wrong length.
    #[error("key is not {0} bytes")]
    KeyLength(usize),
    /// A retained key without the NUL that ends its tenant.
    #[error("key has no tenant")]
    KeyNoTenant,
    /// A retained key whose tenant or topic is not UTF-8.
    #[error("key is not UTF-8")]
    KeyNotUtf8,
    /// A value without even its format byte.
    #[error("empty value")]
    Empty,
    /// A format byte this version does not write.
    #[error("unknown record format {0}")]
    Format(u8),
    /// The value ends inside a field.
    #[error("value cut short: {needed} bytes needed, {left} left")]
    CutShort {
        /// The field's length.
        needed: usize,
        /// What the value had left.
        left: usize,
    },
    /// A count of items that the rest of the value cannot hold.
    #[error("count {0} does not fit in the value")]
    Count(usize),
    /// Bytes left after the last field.
    #[error("{0} bytes after the record")]
    Trailing(usize),
    /// A string field that is not UTF-8.
    #[error("string is not UTF-8")]
    NotUtf8,
    /// A session's protocol level that is not MQTT 3.1, 3.1.1 or 5.0.
    #[error("protocol level {0} is not 3, 4 or 5")]
    Protocol(u8),
    /// A QoS of 3 in a recipient's flags or a subscription's options.
    #[error("{of} QoS is 3")]
    Qos3 {
        /// Whose QoS: `recipient` or `subscription`.
        of: &'static str,
    },
    /// A retain handling of 3 in a subscription's options.
    #[error("retain handling is 3")]
    RetainHandling3,
    /// Reserved bits set in a recipient's flags or a subscription's options.
    #[error("{of} {bits:#x} have reserved bits")]
    Reserved {
        /// Which byte: `recipient flags` or `subscription options`.
        of: &'static str,
        /// The byte.
        bits: u8,
    },
    /// An outbound QoS 2 stage with packet id 0.
    #[error("packet id 0")]
    PacketIdZero,
    /// An outbound QoS 2 stage that is neither sent (0) nor released (1).
    #[error("stage {0} is not 0 or 1")]
    Stage(u8),
    /// A stored PUBLISH followed by more bytes.
    #[error("bytes after the message")]
    AfterMessage,
    /// A stored packet that is not a PUBLISH (its debug form).
    #[error("holds a {0}, not a PUBLISH")]
    NotPublish(String),
    /// A stored PUBLISH that ends early.
    #[error("message cut short")]
    MessageCutShort,
    /// A stored PUBLISH that the codec refuses.
    #[error("message does not decode: {0}")]
    Message(mqtt_codec::DecodeError),
    /// A tenant's stored settings that do not read as its settings (what serde said).
    #[error("tenant settings do not decode: {0}")]
    Settings(String),
}

/// A message that does not encode as an MQTT 5.0 PUBLISH, so it cannot be stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("message does not encode: {0}")]
pub struct EncodeError(mqtt_codec::EncodeError);

/// A persistent session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    /// Its tenant's name.
    pub tenant: String,
    /// Its client identifier.
    pub client_id: String,
    /// Protocol level of its last connection (3, 4 or 5).
    pub protocol: u8,
    /// Session expiry interval, seconds.
    pub expiry: u32,
    /// When its last connection closed (Unix milliseconds); 0 while a connection is attached.
    pub offline_since_ms: u64,
    /// Its subscriptions.
    pub subscriptions: Vec<StoredSubscription>,
}

/// A subscription of a persistent session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSubscription {
    /// The filter as subscribed (with `$share/group/` when shared).
    pub filter: String,
    /// Options granted.
    pub options: SubscriptionOptions,
    /// Subscription identifier.
    pub id: Option<u32>,
}

/// A session's acknowledgements: every sequence number below `watermark` is done, and so
/// are those in `above`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AckRecord {
    /// The lowest sequence number not yet done.
    pub watermark: u64,
    /// Sequence numbers above the watermark already done (acknowledged out of order).
    pub above: Vec<u64>,
}

/// One session a message is queued for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    /// The session.
    pub session: u64,
    /// The delivery's place in that session's queue.
    pub seq: u64,
    /// QoS of the delivery.
    pub qos: QoS,
    /// Retain flag as that subscriber sees it.
    pub retain: bool,
    /// Matching subscription identifiers.
    pub subscription_ids: Vec<u32>,
}

/// A QoS 1/2 message stored once for every persistent session it is queued for.
#[derive(Debug, Clone, PartialEq)]
pub struct MessageRecord {
    /// When Herald received it (Unix milliseconds), for its expiry.
    pub received_ms: u64,
    /// The publishing session (for No Local).
    pub origin: u64,
    /// The sessions it is queued for.
    pub recipients: Vec<Recipient>,
    /// The message as a PUBLISH (its own QoS and retain flag; the packet id means nothing).
    pub publish: Publish,
    /// Its identity in a cluster (run, number) and where it is in the cluster's stream
    /// (`message::At` as bits); `None` on a node alone.
    pub cluster: Option<(u64, u64, u64)>,
}

/// Where an outbound QoS 2 delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StageRecord {
    /// The packet id it was sent with.
    pub packet_id: u16,
    /// PUBREC received and PUBREL sent.
    pub released: bool,
}

/// A retained message.
#[derive(Debug, Clone, PartialEq)]
pub struct RetainedRecord {
    /// When Herald received it (Unix milliseconds).
    pub received_ms: u64,
    /// The message.
    pub publish: Publish,
}

/// The will of an open connection (or of a session whose will waits for its delay).
#[derive(Debug, Clone, PartialEq)]
pub struct WillRecord {
    /// Its tenant's name.
    pub tenant: String,
    /// Seconds to wait before publishing it.
    pub delay: u32,
    /// The will message.
    pub publish: Publish,
}

// ---- keys ----

/// A session's key (sessions, acks, wills).
pub fn session_key(session: u64) -> Vec<u8> {
    session.to_be_bytes().to_vec()
}

/// A message's key.
pub fn message_key(id: u64) -> Vec<u8> {
    id.to_be_bytes().to_vec()
}

/// An outbound QoS 2 delivery's key.
pub fn stage_key(session: u64, seq: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(16);
    k.extend_from_slice(&session.to_be_bytes());
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// An inbound QoS 2 packet id's key.
pub fn inbound_key(session: u64, packet_id: u16) -> Vec<u8> {
    let mut k = Vec::with_capacity(10);
    k.extend_from_slice(&session.to_be_bytes());
    k.extend_from_slice(&packet_id.to_be_bytes());
    k
}

/// A retained message's key: tenant, NUL, topic (MQTT strings never hold NUL).
pub fn retained_key(tenant: &str, topic: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(tenant.len() + 1 + topic.len());
    k.extend_from_slice(tenant.as_bytes());
    k.push(0);
    k.extend_from_slice(topic.as_bytes());
    k
}

/// The session id of a sessions/acks/wills key.
pub fn decode_session_key(k: &[u8]) -> DecodeResult<u64> {
    Ok(u64::from_be_bytes(
        k.try_into().map_err(|_| DecodeError::KeyLength(8))?,
    ))
}

/// The message id of a messages key.
pub fn decode_message_key(k: &[u8]) -> DecodeResult<u64> {
    decode_session_key(k)
}

/// (session, seq) of a stages key.
pub fn decode_stage_key(k: &[u8]) -> DecodeResult<(u64, u64)> {
    if k.len() != 16 {
        return Err(DecodeError::KeyLength(16));
    }
    Ok((decode_session_key(&k[..8])?, decode_session_key(&k[8..])?))
}

/// (session, packet id) of an inbound key.
pub fn decode_inbound_key(k: &[u8]) -> DecodeResult<(u64, u16)> {
    if k.len() != 10 {
        return Err(DecodeError::KeyLength(10));
    }
    Ok((
        decode_session_key(&k[..8])?,
        u16::from_be_bytes([k[8], k[9]]),
    ))
}

/// The tenant of a retained key.
pub fn decode_retained_key(k: &[u8]) -> DecodeResult<(String, String)> {
    let nul = k
        .iter()
        .position(|b| *b == 0)
        .ok_or(DecodeError::KeyNoTenant)?;
    let text = |b: &[u8]| String::from_utf8(b.to_vec()).map_err(|_| DecodeError::KeyNotUtf8);
    Ok((text(&k[..nul])?, text(&k[nul + 1..])?))
}

// ---- values ----

/// A u64 value (the boot counter).
pub fn encode_u64(v: u64) -> Vec<u8> {
    let mut w = vec![FORMAT];
    w.extend_from_slice(&v.to_be_bytes());
    w
}

/// Reads a u64 value.
pub fn decode_u64(v: &[u8]) -> DecodeResult<u64> {
    let mut r = Reader::new(v)?;
    let n = r.u64()?;
    r.end()?;
    Ok(n)
}

impl SessionRecord {
    /// The value bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = vec![FORMAT];
        put_str(&mut w, &self.tenant);
        put_str(&mut w, &self.client_id);
        w.push(self.protocol);
        w.extend_from_slice(&self.expiry.to_be_bytes());
        w.extend_from_slice(&self.offline_since_ms.to_be_bytes());
        w.extend_from_slice(&(self.subscriptions.len() as u32).to_be_bytes());
        for s in &self.subscriptions {
            put_str(&mut w, &s.filter);
            w.push(options_byte(&s.options));
            w.extend_from_slice(&s.id.unwrap_or(0).to_be_bytes());
        }
        w
    }

    /// Reads a value.
    pub fn decode(v: &[u8]) -> DecodeResult<SessionRecord> {
        let mut r = Reader::new(v)?;
        let tenant = r.string()?;
        let client_id = r.string()?;
        let protocol = r.u8()?;
        if !(3..=5).contains(&protocol) {
            return Err(DecodeError::Protocol(protocol));
        }
        let expiry = r.u32()?;
        let offline_since_ms = r.u64()?;
        let n = r.count(6)?;
        let mut subscriptions = Vec::with_capacity(n);
        for _ in 0..n {
            let filter = r.string()?;
            let options = options_from(r.u8()?)?;
            let id = Some(r.u32()?).filter(|id| *id != 0);
            subscriptions.push(StoredSubscription {
                filter,
                options,
                id,
            });
        }
        r.end()?;
        Ok(SessionRecord {
            tenant,
            client_id,
            protocol,
            expiry,
            offline_since_ms,
            subscriptions,
        })
    }
}

impl AckRecord {
    /// The value bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Vec::with_capacity(13 + 8 * self.above.len());
        w.push(FORMAT);
        w.extend_from_slice(&self.watermark.to_be_bytes());
        w.extend_from_slice(&(self.above.len() as u32).to_be_bytes());
        for seq in &self.above {
            w.extend_from_slice(&seq.to_be_bytes());
        }
        w
    }

    /// Reads a value.
    pub fn decode(v: &[u8]) -> DecodeResult<AckRecord> {
        let mut r = Reader::new(v)?;
        let watermark = r.u64()?;
        let n = r.count(8)?;
        let mut above = Vec::with_capacity(n);
        for _ in 0..n {
            above.push(r.u64()?);
        }
        r.end()?;
        Ok(AckRecord { watermark, above })
    }

    /// Whether `seq` is done.
    pub fn done(&self, seq: u64) -> bool {
        seq < self.watermark || self.above.contains(&seq)
    }
}

impl MessageRecord {
    /// The value bytes.
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        let mut w = vec![FORMAT];
        w.extend_from_slice(&self.received_ms.to_be_bytes());
        w.extend_from_slice(&self.origin.to_be_bytes());
        if let Some((run, n, at)) = self.cluster {
            w[0] = FORMAT_CLUSTERED;
            for x in [run, n, at] {
                w.extend_from_slice(&x.to_be_bytes());
            }
        }
        w.extend_from_slice(&(self.recipients.len() as u32).to_be_bytes());
        for r in &self.recipients {
            w.extend_from_slice(&r.session.to_be_bytes());
            w.extend_from_slice(&r.seq.to_be_bytes());
            w.push(r.qos as u8 | (u8::from(r.retain) << 2));
            w.extend_from_slice(&(r.subscription_ids.len() as u16).to_be_bytes());
            for id in &r.subscription_ids {
                w.extend_from_slice(&id.to_be_bytes());
            }
        }
        put_publish(&mut w, &self.publish)?;
        Ok(w)
    }

    /// Reads a value.
    pub fn decode(v: &[u8]) -> DecodeResult<MessageRecord> {
        let clustered = v.first() == Some(&FORMAT_CLUSTERED);
        let mut r = match clustered {
            true => Reader { bytes: &v[1..] },
            false => Reader::new(v)?,
        };
        let received_ms = r.u64()?;
        let origin = r.u64()?;
        let cluster = match clustered {
            true => Some((r.u64()?, r.u64()?, r.u64()?)),
            false => None,
        };
        let n = r.count(19)?;
        let mut recipients = Vec::with_capacity(n);
        for _ in 0..n {
            let session = r.u64()?;
            let seq = r.u64()?;
            let flags = r.u8()?;
            let qos = QoS::from_u8(flags & 3).ok_or(DecodeError::Qos3 { of: "recipient" })?;
            if flags & !7 != 0 {
                return Err(DecodeError::Reserved {
                    of: "recipient flags",
                    bits: flags,
                });
            }
            let ids = r.u16()? as usize;
            let mut subscription_ids = Vec::with_capacity(ids.min(r.left() / 4));
            for _ in 0..ids {
                subscription_ids.push(r.u32()?);
            }
            recipients.push(Recipient {
                session,
                seq,
                qos,
                retain: flags & 4 != 0,
                subscription_ids,
            });
        }
        let publish = r.publish()?;
        Ok(MessageRecord {
            received_ms,
            origin,
            recipients,
            publish,
            cluster,
        })
    }
}

impl StageRecord {
    /// The value bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = vec![FORMAT];
        w.extend_from_slice(&self.packet_id.to_be_bytes());
        w.push(u8::from(self.released));
        w
    }

    /// Reads a value.
    pub fn decode(v: &[u8]) -> DecodeResult<StageRecord> {
        let mut r = Reader::new(v)?;
        let packet_id = r.u16()?;
        if packet_id == 0 {
            return Err(DecodeError::PacketIdZero);
        }
        let released = match r.u8()? {
            0 => false,
            1 => true,
            other => return Err(DecodeError::Stage(other)),
        };
        r.end()?;
        Ok(StageRecord {
            packet_id,
            released,
        })
    }
}

impl RetainedRecord {
    /// The value bytes.
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        let mut w = vec![FORMAT];
        w.extend_from_slice(&self.received_ms.to_be_bytes());
        put_publish(&mut w, &self.publish)?;
        Ok(w)
    }

    /// Reads a value.
    pub fn decode(v: &[u8]) -> DecodeResult<RetainedRecord> {
        let mut r = Reader::new(v)?;
        let received_ms = r.u64()?;
        let publish = r.publish()?;
        Ok(RetainedRecord {
            received_ms,
            publish,
        })
    }
}

impl WillRecord {
    /// The value bytes.
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        let mut w = vec![FORMAT];
        put_str(&mut w, &self.tenant);
        w.extend_from_slice(&self.delay.to_be_bytes());
        put_publish(&mut w, &self.publish)?;
        Ok(w)
    }

    /// Reads a value.
    pub fn decode(v: &[u8]) -> DecodeResult<WillRecord> {
        let mut r = Reader::new(v)?;
        let tenant = r.string()?;
        let delay = r.u32()?;
        let publish = r.publish()?;
        Ok(WillRecord {
            tenant,
            delay,
            publish,
        })
    }
}

/// Inbound keys carry everything; their value is the format byte alone.
pub fn inbound_value() -> Vec<u8> {
    vec![FORMAT]
}

fn options_byte(o: &SubscriptionOptions) -> u8 {
    o.qos as u8
        | (u8::from(o.no_local) << 2)
        | (u8::from(o.retain_as_published) << 3)
        | ((o.retain_handling as u8) << 4)
}

fn options_from(b: u8) -> DecodeResult<SubscriptionOptions> {
    let qos = QoS::from_u8(b & 3).ok_or(DecodeError::Qos3 { of: "subscription" })?;
    let retain_handling = match (b >> 4) & 3 {
        0 => RetainHandling::OnSubscribe,
        1 => RetainHandling::OnNewSubscription,
        2 => RetainHandling::Never,
        _ => return Err(DecodeError::RetainHandling3),
    };
    if b & 0xC0 != 0 {
        return Err(DecodeError::Reserved {
            of: "subscription options",
            bits: b,
        });
    }
    Ok(SubscriptionOptions {
        qos,
        no_local: b & 4 != 0,
        retain_as_published: b & 8 != 0,
        retain_handling,
    })
}

fn put_str(w: &mut Vec<u8>, s: &str) {
    w.extend_from_slice(&(s.len() as u32).to_be_bytes());
    w.extend_from_slice(s.as_bytes());
}

/// Appends `publish` as a v5 packet (the rest of the value).
fn put_publish(w: &mut Vec<u8>, publish: &Publish) -> Result<(), EncodeError> {
    let mut p = publish.clone();
    if p.qos != QoS::AtMostOnce && p.packet_id == 0 {
        p.packet_id = 1;
    }
    let mut buf = BytesMut::new();
    p.encode(ProtocolVersion::V5, &mut buf)
        .map_err(EncodeError)?;
    w.put_slice(&buf);
    Ok(())
}

/// A bounds-checked reader over a value.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(v: &'a [u8]) -> DecodeResult<Reader<'a>> {
        match v.split_first() {
            Some((&FORMAT, rest)) => Ok(Reader { bytes: rest }),
            Some((other, _)) => Err(DecodeError::Format(*other)),
            None => Err(DecodeError::Empty),
        }
    }

    fn left(&self) -> usize {
        self.bytes.len()
    }

    fn take(&mut self, n: usize) -> DecodeResult<&'a [u8]> {
        if self.bytes.len() < n {
            return Err(DecodeError::CutShort {
                needed: n,
                left: self.bytes.len(),
            });
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn u8(&mut self) -> DecodeResult<u8> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> DecodeResult<u16> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> DecodeResult<u32> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> DecodeResult<u64> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }

    /// A count of items each at least `min_item` bytes long: a count the rest of the value
    /// cannot hold is an error, never a huge allocation.
    fn count(&mut self, min_item: usize) -> DecodeResult<usize> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min_item) > self.bytes.len() {
            return Err(DecodeError::Count(n));
        }
        Ok(n)
    }

    fn string(&mut self) -> DecodeResult<String> {
        let n = self.u32()? as usize;
        let b = self.take(n)?;
        String::from_utf8(b.to_vec()).map_err(|_| DecodeError::NotUtf8)
    }

    /// The rest of the value, as one v5 PUBLISH packet.
    fn publish(&mut self) -> DecodeResult<Publish> {
        let mut buf = BytesMut::from(self.bytes);
        self.bytes = &[];
        match mqtt_codec::decode(&mut buf, ProtocolVersion::V5, MAX_PACKET_SIZE) {
            Ok(Some(Packet::Publish(p))) if buf.is_empty() => Ok(p),
            Ok(Some(Packet::Publish(_))) => Err(DecodeError::AfterMessage),
            Ok(Some(other)) => Err(DecodeError::NotPublish(format!("{other:?}"))),
            Ok(None) => Err(DecodeError::MessageCutShort),
            Err(e) => Err(DecodeError::Message(e)),
        }
    }

    fn end(&self) -> DecodeResult<()> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::Trailing(self.bytes.len()))
        }
    }
}

mod tenant;
pub use tenant::TenantRecord;

#[cfg(test)]
mod tests;
