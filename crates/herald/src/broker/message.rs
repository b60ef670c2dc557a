//! A published message, shared by every subscriber it goes to, and one delivery of it.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use mqtt_codec::properties::PublishProperties;
use mqtt_codec::{ByteString, ProtocolVersion, Publish, QoS};

/// A process-unique session number (0 is the server itself, as a message origin).
pub type SessionId = u64;

/// A message as Herald received it: routed once, referenced by every delivery.
#[derive(Debug)]
pub struct Message {
    /// The topic name (aliases already resolved).
    pub topic: ByteString,
    /// The payload, shared, never copied per subscriber.
    pub payload: Bytes,
    /// QoS the publisher sent it with.
    pub qos: QoS,
    /// Whether it was published with the retain flag.
    pub retain: bool,
    /// Properties forwarded to subscribers untouched (payload format, content type, response
    /// topic, correlation data, user properties); the expiry interval is kept here as
    /// received and its remaining part computed at delivery; topic alias and subscription
    /// identifiers are per delivery, so they are never kept here.
    pub properties: PublishProperties,
    /// When Herald received it, for message expiry.
    pub received_at: Instant,
    /// The session that published it, for No Local (0 for the server itself).
    pub origin: SessionId,
    /// Session queues holding a delivery of it: its bytes count in the node's queued bytes
    /// once, while this is above 0 (`broker::flow`).
    pub queued: AtomicU32,
    /// Its identity in a cluster (see [`Ident`]).
    pub ident: Ident,
    /// The whole QoS 0, non-retained packet, encoded once for all 3.1/3.1.1 subscribers.
    plain_v3: OnceLock<Bytes>,
    /// The same for 5.0 subscribers (only used without subscription identifiers or alias).
    plain_v5: OnceLock<Bytes>,
}

/// A message's identity in a cluster: the node run that first routed it (a number naming
/// the node and its start) and its number there; the same on every node it reaches. A
/// session moving between nodes holds messages both nodes routed to it; their identities
/// keep each once. Unset (0, 0) on a node alone, and for QoS 0.
#[derive(Debug, Default)]
pub struct Ident {
    run: AtomicU64,
    n: AtomicU64,
    /// Where it is in the cluster's stream (see [`Ident::at`]).
    at: AtomicU64,
}

/// Set in `Ident::at` when the stream position is a lower bound, not the sequence.
const AFTER: u64 = 1 << 63;

/// Where a message is in the cluster's message stream, as far as this node knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum At {
    /// Not in the stream (QoS 0, a node alone, a retained copy from the bucket).
    Nowhere,
    /// Its sequence there.
    Seq(u64),
    /// Not known yet (the stream has not acknowledged it): above this sequence.
    After(u64),
}

impl At {
    /// The lowest sequence it may have (`None`: not in the stream).
    pub fn lowest(self) -> Option<u64> {
        match self {
            At::Nowhere => None,
            At::Seq(s) => Some(s),
            At::After(s) => Some(s + 1),
        }
    }

    /// As one number (0: nowhere; the high bit: after).
    pub fn to_bits(self) -> u64 {
        match self {
            At::Nowhere => 0,
            At::Seq(s) => s & !AFTER,
            At::After(s) => (s & !AFTER) | AFTER,
        }
    }

    /// From `to_bits`.
    pub fn from_bits(bits: u64) -> At {
        match bits {
            0 => At::Nowhere,
            b if b & AFTER != 0 => At::After(b & !AFTER),
            b => At::Seq(b),
        }
    }
}

impl Ident {
    /// Sets it: before the message is routed (the session locks taken while routing make
    /// it seen by whoever reads a queue after).
    pub fn set(&self, run: u64, n: u64) {
        self.run.store(run, Ordering::Relaxed);
        self.n.store(n, Ordering::Relaxed);
    }

    /// The identity, if set.
    pub fn get(&self) -> Option<(u64, u64)> {
        let id = (
            self.run.load(Ordering::Relaxed),
            self.n.load(Ordering::Relaxed),
        );
        (id != (0, 0)).then_some(id)
    }

    /// Where the message is in the cluster's stream (replicated sessions replay it from
    /// there after losing their node).
    pub fn at(&self) -> At {
        At::from_bits(self.at.load(Ordering::Relaxed))
    }

    /// Records where it is: its sequence once known, a lower bound until then (a known
    /// sequence is never replaced by a bound).
    pub fn set_at(&self, at: At) {
        match at {
            At::Seq(_) => self.at.store(at.to_bits(), Ordering::Relaxed),
            _ => {
                let _ =
                    self.at
                        .compare_exchange(0, at.to_bits(), Ordering::Relaxed, Ordering::Relaxed);
            }
        }
    }
}

/// Payloads below this size are copied out of the read buffer they arrived in.
const COPY_BELOW: usize = 4096;

/// A copy of `s` in its own allocation.
pub fn own_str(s: &ByteString) -> ByteString {
    ByteString::from(&**s)
}

/// Decoded fields are slices of the connection's read buffer (16 KiB per read). A message can
/// be kept for long (queued for an offline session, retained), and a 20-byte slice would keep
/// the whole buffer alive: so the topic and small payloads are copied into one right-sized
/// allocation, once per publish (never per subscriber). Large payloads are most of their
/// buffer anyway and stay zero-copy.
fn compact(topic: &ByteString, payload: Bytes) -> (ByteString, Bytes) {
    if payload.len() >= COPY_BELOW {
        return (own_str(topic), payload);
    }
    let mut buf = BytesMut::with_capacity(topic.len() + payload.len());
    buf.extend_from_slice(topic.as_bytes());
    buf.extend_from_slice(&payload);
    let mut all = buf.freeze();
    let payload = all.split_off(topic.len());
    // The topic bytes were valid UTF-8 and are unchanged.
    let topic = ByteString::try_from(all).unwrap_or_else(|_| own_str(topic));
    (topic, payload)
}

/// Copies every string and binary property out of the buffer it was decoded from.
pub fn own_properties(p: &mut PublishProperties) {
    for s in [&mut p.content_type, &mut p.response_topic]
        .into_iter()
        .flatten()
    {
        *s = own_str(s);
    }
    if let Some(data) = &mut p.correlation_data {
        *data = Bytes::copy_from_slice(data);
    }
    for (name, value) in &mut p.user_properties {
        *name = own_str(name);
        *value = own_str(value);
    }
}

impl Message {
    /// A message received now. Its fields are copied out of the read buffer where that keeps
    /// memory bounded (see `compact`).
    pub fn new(
        topic: ByteString,
        payload: Bytes,
        qos: QoS,
        retain: bool,
        mut properties: PublishProperties,
        origin: SessionId,
    ) -> Arc<Message> {
        properties.topic_alias = None;
        properties.subscription_identifiers = Vec::new();
        own_properties(&mut properties);
        let (topic, payload) = compact(&topic, payload);
        Arc::new(Message {
            topic,
            payload,
            qos,
            retain,
            properties,
            received_at: Instant::now(),
            origin,
            queued: AtomicU32::new(0),
            ident: Ident::default(),
            plain_v3: OnceLock::new(),
            plain_v5: OnceLock::new(),
        })
    }

    /// A message read back from the store, received at `received_at`.
    pub fn restored(publish: Publish, received_at: Instant, origin: SessionId) -> Message {
        let mut properties = publish.properties;
        properties.topic_alias = None;
        properties.subscription_identifiers = Vec::new();
        own_properties(&mut properties);
        let (topic, payload) = compact(&publish.topic, publish.payload);
        Message {
            topic,
            payload,
            qos: publish.qos,
            retain: publish.retain,
            properties,
            received_at,
            origin,
            queued: AtomicU32::new(0),
            ident: Ident::default(),
            plain_v3: OnceLock::new(),
            plain_v5: OnceLock::new(),
        }
    }

    /// Seconds of life left, `Some(0)` once expired, `None` when it never expires.
    pub fn remaining_expiry(&self, now: Instant) -> Option<u32> {
        let interval = self.properties.message_expiry_interval?;
        let elapsed = now.saturating_duration_since(self.received_at).as_secs();
        Some(u64::from(interval).saturating_sub(elapsed) as u32)
    }

    /// Whether the message has outlived its expiry interval.
    pub fn expired(&self, now: Instant) -> bool {
        self.remaining_expiry(now) == Some(0)
    }

    /// The encoded QoS 0, non-retained packet for `version`, shared by every subscriber that
    /// needs exactly these bytes. `None` when the bytes vary per delivery (an expiry interval
    /// that counts down).
    pub fn shared_qos0(&self, version: ProtocolVersion) -> Option<&Bytes> {
        if self.properties.message_expiry_interval.is_some() {
            return None;
        }
        let cell = if version.is_v5() {
            &self.plain_v5
        } else {
            &self.plain_v3
        };
        let bytes = cell.get_or_init(|| {
            let publish = self.publish(QoS::AtMostOnce, false, 0, None, Vec::new());
            let mut buf = BytesMut::with_capacity(publish.payload.len() + self.topic.len() + 8);
            // A message whose fields were accepted on the way in always encodes.
            if publish.encode(version, &mut buf).is_err() {
                return Bytes::new();
            }
            buf.freeze()
        });
        (!bytes.is_empty()).then_some(bytes)
    }

    /// The message as it was published (its own QoS, retain flag and expiry interval; no
    /// subscription identifiers; packet id 1, which means nothing): how the store and the
    /// other nodes of a cluster keep it.
    pub fn as_published(&self) -> Publish {
        self.publish(
            self.qos,
            self.retain,
            1,
            self.properties.message_expiry_interval,
            Vec::new(),
        )
    }

    /// A PUBLISH carrying this message with the per-delivery fields given.
    pub fn publish(
        &self,
        qos: QoS,
        retain: bool,
        packet_id: u16,
        remaining_expiry: Option<u32>,
        subscription_identifiers: Vec<u32>,
    ) -> Publish {
        let mut properties = self.properties.clone();
        properties.message_expiry_interval = remaining_expiry;
        properties.subscription_identifiers = subscription_identifiers;
        Publish {
            dup: false,
            qos,
            retain,
            topic: self.topic.clone(),
            packet_id,
            properties,
            payload: self.payload.clone(),
        }
    }
}

/// One message on its way to one session.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The message.
    pub message: Arc<Message>,
    /// QoS of this delivery: the lower of the message's and the subscription's.
    pub qos: QoS,
    /// The retain flag as this subscriber sees it.
    pub retain: bool,
    /// Identifiers of the subscriptions that matched (v5). A boxed slice: a delivery sits
    /// in a queue, and every byte of it is paid per queued message.
    pub subscription_identifiers: Box<[u32]>,
    /// Its place in a stored session's queue, and its message's record (`None`: not
    /// stored).
    pub stored: Option<super::stored::Stored>,
}

impl Delivery {
    /// Bytes this delivery holds in an outbox (its payload; the message is shared, but a
    /// slow consumer is charged for what it has not taken).
    pub fn weight(&self) -> usize {
        self.message.payload.len() + self.message.topic.len()
    }
}
