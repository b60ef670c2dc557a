//! A session: what Herald keeps for a client id across its connections — subscriptions,
//! queued and unacknowledged messages, inbound QoS 2 state, the will — and the handshake
//! between the tasks that fill its queue (publishers) and the one that drains it (the
//! connection it is attached to).
//!
//! All mutable state sits behind one mutex per session, held for a few field updates and
//! never across an `.await`. A publisher's task pushes a delivery and wakes the attached
//! connection only when the queue goes from empty to non-empty.

pub mod closing;
pub mod connect;
#[cfg(test)]
mod exchanges;
mod inbound;
mod lifecycle;
mod limits;
pub mod link;
pub mod moving;
mod outbound;
mod pressure;
pub mod replica;

pub use closing::Closing;
pub use lifecycle::{Ended, Named};
pub use link::{Handled, Link, Out};

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Context;

use atomic_waker::AtomicWaker;

use mqtt_codec::properties::PublishProperties;
use mqtt_codec::{ByteString, ProtocolVersion, QoS, SubscriptionOptions};

use super::message::{Delivery, Message};
use super::persist::Persistence;
use super::stats::DropReason;
use super::stored::{DurableSession, Stored, StoredMessage};
use crate::config::Limits;
use crate::store::record::{Recipient, SessionRecord, StoredSubscription};

pub use super::message::SessionId;

/// A session.
#[derive(Debug)]
pub struct Session {
    /// Its number.
    pub id: SessionId,
    /// The client identifier it belongs to, shared with the registry's key (one allocation).
    pub client_id: Arc<str>,
    state: Mutex<SessionState>,
    /// Set when the attached connection has something to look at: new deliveries, a newer
    /// connection took over, a deadline passed, shutdown. Cleared when it looks.
    signal: AtomicBool,
    /// The attached connection's task, woken with `signal`. A waker, not a stored future:
    /// an idle connection's task holds no per-wait state.
    waker: AtomicWaker,
    /// The attached connection's next deadline (keep-alive, slow consumer), milliseconds on
    /// the broker's clock; `u64::MAX` for none. The broker's sweep wakes it once passed.
    deadline_ms: AtomicU64,
    /// When the attached connection last made progress: its socket took bytes, or nothing
    /// waited for it (`broker::flow::now_ms`). A congested session that has made none for
    /// `limits.stall_after_ms` is stalled.
    pub(super) progress_ms: AtomicU64,
    /// Clustered: the revision of this node's claim on the client id in the cluster's
    /// registry (`cluster::registry`), 0 before one; a claim made elsewhere after it takes
    /// the client id away.
    pub claim: AtomicU64,
}

/// A small set of packet identifiers (inbound QoS 2 awaiting PUBREL): bounded by the Receive
/// Maximum, usually empty, so a list costs less than a hash set and is as fast.
#[derive(Debug, Default)]
pub struct PacketIds(Vec<u16>);

impl PacketIds {
    /// Whether `id` is in the set.
    pub fn contains(&self, id: &u16) -> bool {
        self.0.contains(id)
    }

    /// Adds `id`; returns whether it was new.
    pub fn insert(&mut self, id: u16) -> bool {
        if self.0.contains(&id) {
            return false;
        }
        self.0.push(id);
        true
    }

    /// Removes `id`; returns whether it was there.
    pub fn remove(&mut self, id: &u16) -> bool {
        match self.0.iter().position(|x| x == id) {
            Some(pos) => {
                self.0.swap_remove(pos);
                true
            }
            None => false,
        }
    }

    /// How many.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The ids.
    pub fn iter(&self) -> impl Iterator<Item = u16> + '_ {
        self.0.iter().copied()
    }
}

/// A session's subscriptions by filter, as subscribed. A list, not a map: most sessions hold
/// a handful, and an empty or one-entry `Vec` costs far less than a hash map.
#[derive(Debug, Default)]
pub struct Subscriptions(Vec<(ByteString, SubscriptionRecord)>);

impl Subscriptions {
    /// Adds or replaces; returns the previous record.
    pub fn insert(
        &mut self,
        filter: ByteString,
        record: SubscriptionRecord,
    ) -> Option<SubscriptionRecord> {
        match self.0.iter_mut().find(|(f, _)| *f == filter) {
            Some((_, existing)) => Some(std::mem::replace(existing, record)),
            None => {
                // Grow one slot at a time while small (most sessions hold a handful).
                if self.0.len() == self.0.capacity() {
                    self.0.reserve_exact(1.max(self.0.len() / 2));
                }
                self.0.push((filter, record));
                None
            }
        }
    }

    /// Removes `filter`; returns its record.
    pub fn remove(&mut self, filter: &str) -> Option<SubscriptionRecord> {
        let pos = self.0.iter().position(|(f, _)| &**f == filter)?;
        Some(self.0.swap_remove(pos).1)
    }

    /// Whether `filter` is subscribed.
    pub fn contains_key(&self, filter: &str) -> bool {
        self.0.iter().any(|(f, _)| &**f == filter)
    }

    /// How many.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The filters.
    pub fn keys(&self) -> impl Iterator<Item = &ByteString> {
        self.0.iter().map(|(f, _)| f)
    }

    /// The filters and their records.
    pub fn iter(&self) -> impl Iterator<Item = (&ByteString, &SubscriptionRecord)> {
        self.0.iter().map(|(f, r)| (f, r))
    }
}

/// A subscription as the session remembers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionRecord {
    /// Options granted.
    pub options: SubscriptionOptions,
    /// Subscription identifier (v5).
    pub id: Option<u32>,
}

/// A connection's will.
#[derive(Debug, Clone)]
pub struct Will {
    /// Topic.
    pub topic: ByteString,
    /// Payload.
    pub payload: bytes::Bytes,
    /// QoS.
    pub qos: QoS,
    /// Retain flag.
    pub retain: bool,
    /// Properties to publish it with.
    pub properties: PublishProperties,
    /// Seconds to wait after the connection ends (v5 Will Delay Interval).
    pub delay: u32,
}

/// What becomes of a will when its connection closes without a normal DISCONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WillFate {
    /// Not published: a new connection resumed the session within the will delay.
    Forget,
    /// Published now.
    Publish,
    /// Published after this many seconds, unless a connection resumes the session first.
    After(u32),
}

impl Will {
    /// What becomes of this will when its connection closes: `taken_over`, a newer
    /// connection replaced it; `ended`, the session is over; `resumed`, a connection has
    /// attached since; `expiry`, the session's expiry interval. The will waits for the
    /// lower of its delay and the session expiry, as the session's end publishes it at once
    /// [MQTT-3.1.3-9].
    pub fn fate(&self, taken_over: bool, ended: bool, resumed: bool, expiry: u32) -> WillFate {
        if taken_over && self.delay > 0 && !ended {
            // The new connection resumed the session before the delay passed.
            return WillFate::Forget;
        }
        match self.delay.min(expiry) {
            _ if ended || resumed => WillFate::Publish,
            0 => WillFate::Publish,
            delay => WillFate::After(delay),
        }
    }

    /// The message to publish.
    pub fn message(&self, origin: SessionId) -> Arc<Message> {
        Message::new(
            self.topic.clone(),
            self.payload.clone(),
            self.qos,
            self.retain,
            self.properties.clone(),
            origin,
        )
    }
}

/// Where a sent QoS 1/2 message stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Sent; waiting for PUBACK (QoS 1) or PUBREC (QoS 2).
    Sent,
    /// PUBREC received and PUBREL sent; waiting for PUBCOMP.
    Released,
}

/// A QoS 1/2 message sent and not yet acknowledged.
#[derive(Debug, Clone)]
pub struct Inflight {
    /// Its packet identifier.
    pub packet_id: u16,
    /// What was sent.
    pub delivery: Delivery,
    /// How far the exchange got.
    pub stage: Stage,
}

/// The mutable part of a session.
#[derive(Debug)]
pub struct SessionState {
    /// Incremented each time a connection attaches; a connection whose generation is no longer
    /// current has been replaced.
    generation: u64,
    /// Whether a connection is attached.
    connected: bool,
    /// Protocol of the attached (or last) connection.
    protocol: ProtocolVersion,
    /// Deliveries not yet written, oldest first.
    queue: VecDeque<Delivery>,
    /// Payload bytes in `queue`.
    queue_bytes: usize,
    /// QoS 1/2 deliveries written and not yet acknowledged, in the order they were sent. A
    /// deque: acknowledgements arrive oldest first, and a window can hold thousands.
    inflight: VecDeque<Inflight>,
    /// Topic and payload bytes in `inflight` (bounded by `limits.max_inflight_bytes`).
    inflight_bytes: usize,
    next_packet_id: u16,
    /// Some packet id in flight may equal the next one (the ids wrapped around, or were
    /// restored from the store) since the inflight window was last empty: allocation must
    /// check. Otherwise every id in flight is below the next one, and nothing is scanned.
    ids_may_collide: bool,
    /// Packet ids of QoS 2 PUBLISHes received and not yet released (exactly-once inbound).
    inbound_qos2: PacketIds,
    /// Subscriptions by filter, as subscribed.
    subscriptions: Subscriptions,
    /// A will waiting for its delay to pass: cancelled if a connection resumes the session
    /// first, published at once if the session ends first [MQTT-3.1.3-9].
    pending_will: Option<Box<Will>>,
    /// Seconds the session outlives a disconnect (0: it ends with the connection).
    expiry_interval: u32,
    /// Removed from the registry: nothing may attach to it any more.
    ended: bool,
    /// Counted in its tenant's persistent sessions (`quota::Usage::persistent`).
    persistent: bool,
    /// The stored side of a persistent session (`None` without a store, or for a session
    /// that ends with its connection). Boxed: most connections' sessions have none.
    durable: Option<Box<DurableSession>>,
    /// The attached connection was asked to close, and why (an operator: DISCONNECT 0x98;
    /// draining: 0x8B or 0x9C).
    kicked: Option<crate::broker::stats::CloseReason>,
    /// Where the attached (or last) connection came from (`None` for a session restored
    /// from the store that no client has resumed yet).
    origin: Option<Box<Origin>>,
    /// Publishers parked until the queue drains (`broker::flow`); `None` unless congested.
    congestion: Option<Box<super::flow::Congestion>>,
    /// Retained messages still to stream to it, one cursor per subscription, oldest first
    /// (`Broker::stream_retained`); `None` when there are none.
    /// Boxed: 8 bytes in every session instead of a 32-byte empty deque.
    #[allow(clippy::box_collection)]
    retained: Option<Box<VecDeque<super::retained::Cursor>>>,
    /// Moved here from another node of a cluster a moment ago: the identities of the
    /// messages that node handed over, not queued again when they arrive here late
    /// (`moving`). Boxed: `None` in nearly every session.
    #[allow(clippy::box_collection)]
    held: Option<Box<std::collections::HashSet<(u64, u64)>>>,
    /// What a replicated session remembers for its snapshots (`replica`); `None` unless
    /// sessions are replicated.
    replica: Option<Box<replica::Replicated>>,
}

/// Where a connection came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The client's address: the socket's peer, or the one a PROXY protocol header named.
    pub peer: std::net::SocketAddr,
    /// The listener it connected to.
    pub listener: crate::config::ListenerKind,
    /// The username: CONNECT's, or the client certificate's (`tls.username_from`).
    pub username: Option<Arc<str>>,
}

/// What bounds queueing one delivery.
pub struct Bounds<'a> {
    /// The node's limits.
    pub limits: &'a Limits,
    /// The node's queued bytes were past `limits.max_queued_bytes_total`.
    pub over_budget: bool,
    /// The tenant's bounds on what its offline sessions are owed.
    pub offline: &'a crate::broker::quota::Offline<'a>,
}

/// Whether a delivery was queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueued {
    /// Queued.
    Queued {
        /// What it added to the node's queued bytes (`Delivery::charge`).
        charge: u64,
        /// The connected session's queue is past half its outbox bound: the publisher
        /// should stop reading until it drains (pushback, `broker::flow`).
        congested: bool,
    },
    /// Not queued, for this reason.
    Dropped(DropReason),
}

impl Session {
    /// A new, empty session.
    pub fn new(id: SessionId, client_id: Arc<str>, protocol: ProtocolVersion) -> Arc<Session> {
        Arc::new(Session {
            id,
            client_id,
            state: Mutex::new(SessionState {
                generation: 0,
                connected: false,
                protocol,
                queue: VecDeque::new(),
                queue_bytes: 0,
                inflight: VecDeque::new(),
                inflight_bytes: 0,
                next_packet_id: 0,
                ids_may_collide: false,
                inbound_qos2: PacketIds::default(),
                subscriptions: Subscriptions::default(),
                pending_will: None,
                expiry_interval: 0,
                ended: false,
                persistent: false,
                durable: None,
                kicked: None,
                origin: None,
                congestion: None,
                retained: None,
                held: None,
                replica: None,
            }),
            signal: AtomicBool::new(false),
            waker: AtomicWaker::new(),
            deadline_ms: AtomicU64::new(u64::MAX),
            progress_ms: AtomicU64::new(super::flow::now_ms()),
            claim: AtomicU64::new(0),
        })
    }

    /// Locks the state. Never hold the guard across an `.await`; the lock order is in
    /// docs/architecture.md ("Lock order").
    pub fn lock(&self) -> MutexGuard<'_, SessionState> {
        match self.state.lock() {
            Ok(guard) => guard,
            // A panic while holding the lock leaves plain data, still consistent field by
            // field; keep serving rather than poison every later user.
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Registers the attached connection's task to be woken, and returns (clearing it)
    /// whether it has been signalled since it last looked.
    pub fn poll_signal(&self, cx: &Context<'_>) -> bool {
        self.waker.register(cx.waker());
        self.signal.swap(false, Ordering::AcqRel)
    }

    /// Signals and wakes the attached connection.
    pub fn wake(&self) {
        self.signal.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// Sets the attached connection's next deadline (milliseconds on the broker's clock).
    pub fn set_deadline(&self, ms: u64) {
        self.deadline_ms.store(ms, Ordering::Relaxed);
    }

    /// The attached connection's next deadline.
    pub fn deadline(&self) -> u64 {
        self.deadline_ms.load(Ordering::Relaxed)
    }

    /// Queues a delivery, within `bounds`. QoS 0 is dropped when the session is offline or
    /// its outbox is full; QoS 1/2 when its queue is at `max_queued_messages` or
    /// `max_queued_bytes`, or (offline) when its tenant's offline sessions are owed as much
    /// as its quotas allow; either when the node is `over_budget` (its queued bytes are
    /// past `max_queued_bytes_total`). A QoS 1/2 delivery to a stored session gets the
    /// session's next sequence number, pins its message, and is added to `recipients` (the
    /// message's record, `stored`, is written by the publisher).
    pub fn enqueue(
        &self,
        mut delivery: Delivery,
        stored: Option<&Arc<StoredMessage>>,
        bounds: &Bounds<'_>,
        recipients: &mut Vec<Recipient>,
    ) -> Enqueued {
        let limits = bounds.limits;
        let mut st = self.lock();
        if st.ended {
            return Enqueued::Dropped(DropReason::Offline);
        }
        if st.held(&delivery) {
            // Handed over by the node this session moved from: already queued.
            return Enqueued::Dropped(DropReason::Duplicate);
        }
        let weight = delivery.weight();
        if delivery.qos == QoS::AtMostOnce {
            if !st.connected {
                return Enqueued::Dropped(DropReason::Offline);
            }
            if st.queue.len() >= limits.max_outbox_messages
                || st.queue_bytes + weight > limits.max_outbox_bytes
            {
                return Enqueued::Dropped(DropReason::OutboxFull);
            }
        } else if st.queue.len() >= limits.max_queued_messages
            || st.queue_bytes + weight > limits.max_queued_bytes
        {
            return Enqueued::Dropped(DropReason::QueueFull);
        }
        if bounds.over_budget {
            return Enqueued::Dropped(DropReason::MemoryBudget);
        }
        // Counted under the session lock: the count moves with the queue when the session
        // connects or goes offline (`Broker::attach`, `Broker::detach`).
        if !st.connected && bounds.offline.take(weight).is_err() {
            return Enqueued::Dropped(DropReason::TenantQuota);
        }
        if delivery.qos != QoS::AtMostOnce
            && let (Some(durable), Some(stored)) = (st.durable.as_mut(), stored)
        {
            let seq = durable.next_seq;
            durable.next_seq += 1;
            stored.pin();
            recipients.push(Recipient {
                session: self.id,
                seq,
                qos: delivery.qos,
                retain: delivery.retain,
                subscription_ids: delivery.subscription_identifiers.to_vec(),
            });
            delivery.stored = Some(Stored {
                seq,
                message: stored.clone(),
            });
        }
        let was_empty = st.queue.is_empty();
        if was_empty {
            // Nothing waited until now: the stall clock starts here, not at the last write.
            self.note_progress();
        }
        let charge = delivery.charge();
        st.queue_bytes += weight;
        st.queue.push_back(delivery);
        let connected = st.connected;
        let congested = st.pushes_back(limits);
        drop(st);
        if was_empty && connected {
            self.wake();
        }
        Enqueued::Queued { charge, congested }
    }
}

impl SessionState {
    /// The stored record of this session (`id`'s, of `tenant`, for `client_id`).
    pub fn record(&self, tenant: &str, client_id: &str) -> SessionRecord {
        SessionRecord {
            tenant: tenant.to_string(),
            client_id: client_id.to_string(),
            protocol: self.protocol.level(),
            expiry: self.expiry_interval,
            offline_since_ms: if self.connected {
                0
            } else {
                crate::broker::durable::unix_ms()
            },
            subscriptions: self
                .subscriptions
                .iter()
                .map(|(filter, r)| StoredSubscription {
                    filter: filter.to_string(),
                    options: r.options,
                    id: r.id,
                })
                .collect(),
        }
    }

    /// A stored delivery of session `id` is done (acknowledged, expired, refused, too
    /// large): recorded in its acknowledgements, its message released. Nothing to do for a
    /// session that is not stored. `staged`: a QoS 2 stage record exists for it.
    pub fn finish(&mut self, persist: &Persistence, id: SessionId, d: &Delivery, staged: bool) {
        self.replica_done(d);
        if let Some(acks) = self.durable.as_deref_mut() {
            persist.done(id, acks, d, staged);
        }
    }

    /// The next packet identifier not in use by an unacknowledged message.
    pub fn allocate_packet_id(&mut self) -> u16 {
        if self.inflight.is_empty() {
            self.ids_may_collide = false;
        }
        loop {
            self.next_packet_id = match self.next_packet_id.checked_add(1) {
                Some(id) => id,
                None => {
                    self.ids_may_collide = true;
                    1
                }
            };
            let id = self.next_packet_id;
            // A window of thousands would make this scan the cost of every send: it runs
            // only once the ids have wrapped (or came from the store).
            if !self.ids_may_collide || !self.inflight.iter().any(|i| i.packet_id == id) {
                return id;
            }
        }
    }

    /// Takes the oldest queued delivery, keeping the byte count in step; `released` grows
    /// by what it gave back to the node's queued bytes (`Delivery::discharge`).
    pub fn pop_queued(&mut self, released: &mut u64) -> Option<Delivery> {
        let d = self.queue.pop_front()?;
        self.queue_bytes = self.queue_bytes.saturating_sub(d.weight());
        *released += d.discharge();
        Some(d)
    }

    /// Empties the queue (the session ended); returns what it held and what that gave back
    /// to the node's queued bytes.
    pub fn take_queue(&mut self) -> (VecDeque<Delivery>, u64) {
        let queue = std::mem::take(&mut self.queue);
        self.queue_bytes = 0;
        let released = queue.iter().map(Delivery::discharge).sum();
        (queue, released)
    }

    /// Removes the inflight entry for `packet_id` if it is at `stage`.
    pub fn take_inflight(&mut self, packet_id: u16, stage: Stage) -> Option<Inflight> {
        let pos = self
            .inflight
            .iter()
            .position(|i| i.packet_id == packet_id && i.stage == stage)?;
        let done = self.inflight.remove(pos)?;
        self.inflight_bytes = self.inflight_bytes.saturating_sub(done.delivery.weight());
        Some(done)
    }

    /// Marks a QoS 2 message as released (PUBREC received, PUBREL sent); returns its
    /// delivery, or `None` when no such message was waiting.
    pub fn release(&mut self, packet_id: u16) -> Option<&Delivery> {
        match self
            .inflight
            .iter_mut()
            .find(|i| i.packet_id == packet_id && i.stage == Stage::Sent)
        {
            Some(entry) if entry.delivery.qos == QoS::ExactlyOnce => {
                entry.stage = Stage::Released;
                Some(&entry.delivery)
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests;
