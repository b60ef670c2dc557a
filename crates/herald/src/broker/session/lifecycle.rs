//! A session's life as the broker drives it: attached, resumed, offline, kicked, ended;
//! its subscriptions, its pending will, its retained streams; and what the API reads of it.
//! Every change happens here, under the session lock, with the store told in the same
//! critical section (so the journal sees one session's changes in order).

use std::task::Waker;

use mqtt_codec::ProtocolVersion;

use super::{Origin, SessionId, SessionState, SubscriptionRecord, Subscriptions, Will};
use crate::broker::message::Delivery;
use crate::broker::persist::Persistence;
use crate::broker::retained::Cursor;
use crate::broker::stats::CloseReason;
use crate::store::journal::Ticket;

/// What ending a session left to do once its lock is released.
#[derive(Debug)]
pub struct Ended {
    /// Its subscriptions, to take out of the index.
    pub subscriptions: Subscriptions,
    /// A will still waiting for its delay: published now.
    pub will: Option<Box<Will>>,
    /// Publishers parked on it, to wake.
    pub waiters: Vec<Waker>,
    /// What its queue gave back to the node's queued bytes.
    pub released: u64,
    /// What it was owed while offline, now no longer counted (`SessionState::owed`).
    pub owed: (usize, usize),
    /// It was counted among its tenant's persistent sessions.
    pub persistent: bool,
}

/// Which session a store write is about.
#[derive(Debug, Clone, Copy)]
pub struct Named<'a> {
    /// Its tenant's name.
    pub tenant: &'a str,
    /// Its id.
    pub id: SessionId,
    /// Its client id.
    pub client_id: &'a str,
}

impl SessionState {
    /// A fresh session attached to its first connection (generation 1).
    pub fn attach_first(&mut self, expiry: u32) {
        self.generation = 1;
        self.connected = true;
        self.kicked = None;
        self.expiry_interval = expiry;
    }

    /// Resumes the session for a new connection, taking over one still attached; cancels a
    /// will still waiting for its delay. The new generation, or `None` if it has ended.
    pub fn resume(
        &mut self,
        persist: &Persistence,
        id: SessionId,
        protocol: ProtocolVersion,
        expiry: u32,
    ) -> Option<u64> {
        if self.ended {
            return None;
        }
        if self.pending_will.take().is_some() {
            persist.delete_will(id, self.generation);
        }
        self.generation += 1;
        self.connected = true;
        self.kicked = None;
        self.protocol = protocol;
        self.expiry_interval = expiry;
        Some(self.generation)
    }

    /// Writes the record of a session that outlives its connection (expiry above 0), making
    /// it a stored session if it was not; `NONE` for one that is not stored.
    pub fn store(&mut self, persist: &Persistence, who: Named<'_>) -> Ticket {
        if !persist.is_stored() || (self.expiry_interval == 0 && self.durable.is_none()) {
            return Ticket::NONE;
        }
        self.durable.get_or_insert_with(Default::default);
        persist.put_session(who.id, &self.record(who.tenant, who.client_id))
    }

    /// Rewrites a stored session's record (its subscriptions changed).
    fn store_again(&self, persist: &Persistence, who: Named<'_>) -> Ticket {
        match &self.durable {
            Some(_) => persist.put_session(who.id, &self.record(who.tenant, who.client_id)),
            None => Ticket::NONE,
        }
    }

    /// The connection of `generation` closed: unless a newer one attached, the session goes
    /// offline (recorded with the time, for its expiry across a restart). Its expiry and
    /// the publishers parked on it (an offline session does not push back), or `None`.
    pub fn go_offline(
        &mut self,
        persist: &Persistence,
        who: Named<'_>,
        generation: u64,
    ) -> Option<(u32, Vec<Waker>)> {
        if self.generation != generation {
            return None;
        }
        self.connected = false;
        if self.expiry_interval > 0 {
            self.store(persist, who);
        }
        Some((self.expiry_interval, self.release_waiters()))
    }

    /// Ends the session (unless `if_generation` is given and a connection attached since):
    /// its queue and inflight window are dropped and their records deleted, a connection
    /// still attached sees a new generation. What is left to do, or `None`.
    pub fn end(
        &mut self,
        persist: &Persistence,
        id: SessionId,
        if_generation: Option<u64>,
    ) -> Option<Ended> {
        if self.ended || if_generation.is_some_and(|g| g != self.generation || self.connected) {
            return None;
        }
        self.ended = true;
        let owed = if self.connected { (0, 0) } else { self.owed() };
        let persistent = std::mem::take(&mut self.persistent);
        let will_generation = self.generation;
        self.generation += 1;
        let (queue, released) = self.take_queue();
        let waiters = self.release_waiters();
        let inflight = std::mem::take(&mut self.inflight);
        self.inflight_bytes = 0;
        if self.durable.take().is_some() {
            let dropped: Vec<&Delivery> = queue
                .iter()
                .chain(inflight.iter().map(|i| &i.delivery))
                .collect();
            persist.end_session(id, &dropped, self.inbound_qos2.iter());
        }
        if self.pending_will.is_some() {
            persist.delete_will(id, will_generation);
        }
        Some(Ended {
            subscriptions: std::mem::take(&mut self.subscriptions),
            will: self.pending_will.take(),
            waiters,
            released,
            owed,
            persistent,
        })
    }

    /// The QoS 1/2 deliveries in its queue and their bytes: what an offline session is
    /// owed, counted in its tenant's `offline_*` while it is offline. Nothing leaves the
    /// queue of an offline session but by its ending, so what is counted as it goes
    /// offline and as each copy arrives is what is taken back as it resumes or ends.
    pub fn owed(&self) -> (usize, usize) {
        self.queue
            .iter()
            .filter(|d| d.qos != mqtt_codec::QoS::AtMostOnce)
            .fold((0, 0), |(n, b), d| (n + 1, b + d.weight()))
    }

    /// Whether it is offline (and not ended).
    pub fn offline(&self) -> bool {
        !self.connected && !self.ended
    }

    /// Whether it is counted among its tenant's persistent sessions.
    pub fn persistent(&self) -> bool {
        self.persistent
    }

    /// Brings its count among its tenant's persistent sessions in step with its expiry:
    /// `Some(true)` to count it, `Some(false)` to stop, `None` for no change.
    pub fn count_persistent(&mut self) -> Option<bool> {
        let persistent = self.expiry_interval > 0 && !self.ended;
        (persistent != self.persistent).then(|| {
            self.persistent = persistent;
            persistent
        })
    }

    /// Asks the attached connection, if any, to close for `reason`; whether one was.
    pub fn kick(&mut self, reason: CloseReason) -> bool {
        if self.connected {
            self.kicked = Some(reason);
        }
        self.connected
    }

    /// Keeps `will` until its delay passes (the connection of the current generation
    /// closed); returns that generation.
    pub fn pend_will(&mut self, will: Will) -> u64 {
        self.pending_will = Some(Box::new(will));
        self.generation
    }

    /// The pending will of `generation`'s connection, if no connection resumed since.
    pub fn take_will(&mut self, generation: u64) -> Option<Box<Will>> {
        if self.generation == generation {
            self.pending_will.take()
        } else {
            None
        }
    }

    /// Adds or replaces a subscription, stored with the session; `None` once it ended.
    pub fn subscribe(
        &mut self,
        persist: &Persistence,
        who: Named<'_>,
        filter: mqtt_codec::ByteString,
        record: SubscriptionRecord,
    ) -> Option<Ticket> {
        if self.ended {
            return None;
        }
        self.subscriptions.insert(filter, record);
        Some(self.store_again(persist, who))
    }

    /// Removes a subscription; the ticket of the stored record if it existed.
    pub fn unsubscribe(
        &mut self,
        persist: &Persistence,
        who: Named<'_>,
        filter: &str,
    ) -> Option<Ticket> {
        self.subscriptions.remove(filter)?;
        Some(self.store_again(persist, who))
    }

    /// Adds a retained stream; whether a connection is attached (to wake).
    pub fn push_retained(&mut self, cursor: Cursor) -> bool {
        self.retained
            .get_or_insert_with(Default::default)
            .push_back(cursor);
        self.connected
    }

    /// The oldest retained stream.
    pub fn next_retained(&self) -> Option<Cursor> {
        self.retained.as_ref().and_then(|r| r.front().cloned())
    }

    /// The oldest retained stream's page was queued: it goes on after `resume_after`, or is
    /// done.
    pub fn advance_retained(&mut self, resume_after: Option<mqtt_codec::ByteString>) {
        let Some(streams) = self.retained.as_mut() else {
            return;
        };
        match resume_after {
            Some(topic) => {
                if let Some(front) = streams.front_mut() {
                    front.after = Some(topic);
                }
            }
            None => {
                streams.pop_front();
            }
        }
        if streams.is_empty() {
            self.retained = None;
        }
    }

    /// Where the attached (or last) connection came from.
    pub fn set_origin(&mut self, origin: Origin) {
        self.origin = Some(Box::new(origin));
    }

    /// The attached connection's generation.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Whether a connection is attached.
    pub fn connected(&self) -> bool {
        self.connected
    }

    /// Whether it has ended.
    pub fn ended(&self) -> bool {
        self.ended
    }

    /// The protocol of the attached (or last) connection.
    pub fn protocol(&self) -> ProtocolVersion {
        self.protocol
    }

    /// Seconds it outlives a disconnect.
    pub fn expiry_interval(&self) -> u32 {
        self.expiry_interval
    }

    /// Its subscriptions.
    pub fn subscriptions(&self) -> &Subscriptions {
        &self.subscriptions
    }

    /// Deliveries queued, and their payload bytes.
    pub fn queued(&self) -> (usize, usize) {
        (self.queue.len(), self.queue_bytes)
    }

    /// Deliveries sent and not yet acknowledged.
    pub fn inflight_len(&self) -> usize {
        self.inflight.len()
    }

    /// The packet ids in flight, oldest first.
    pub fn inflight_ids(&self) -> impl Iterator<Item = u16> + '_ {
        self.inflight.iter().map(|i| i.packet_id)
    }

    /// Inbound QoS 2 messages awaiting PUBREL.
    pub fn inbound_qos2_len(&self) -> usize {
        self.inbound_qos2.len()
    }

    /// Where the attached (or last) connection came from.
    pub fn origin(&self) -> Option<&Origin> {
        self.origin.as_deref()
    }
}

/// What a restored session is rebuilt from (`broker::restore`).
impl SessionState {
    /// A stored session read back: its expiry and subscriptions.
    pub fn restore(
        &mut self,
        expiry: u32,
        subscriptions: Vec<(mqtt_codec::ByteString, SubscriptionRecord)>,
    ) {
        self.expiry_interval = expiry;
        self.durable = Some(Box::default());
        for (filter, record) in subscriptions {
            self.subscriptions.insert(filter, record);
        }
    }

    /// Its stored numbering and acknowledgements (`None` if not stored).
    pub fn stored_mut(&mut self) -> Option<&mut crate::broker::stored::DurableSession> {
        self.durable.as_deref_mut()
    }

    /// Its stored numbering and acknowledgements (`None` if not stored).
    pub fn stored(&self) -> Option<&crate::broker::stored::DurableSession> {
        self.durable.as_deref()
    }

    /// An inbound QoS 2 packet id read back.
    pub fn restore_inbound(&mut self, packet_id: u16) {
        self.inbound_qos2.insert(packet_id);
    }

    /// A delivery read back: queued, or in flight at `stage` with its packet id.
    pub fn restore_delivery(&mut self, delivery: Delivery, inflight: Option<(u16, super::Stage)>) {
        match inflight {
            Some((packet_id, stage)) => self.inflight.push_back(super::Inflight {
                packet_id,
                delivery,
                stage,
            }),
            None => self.queue.push_back(delivery),
        }
    }

    /// Puts what was read back in sequence order with its byte counts; returns what the
    /// queue adds to the node's queued bytes.
    pub fn settle_restored(&mut self) -> u64 {
        let seq = |d: &Delivery| d.stored.as_ref().map_or(0, |s| s.seq);
        self.queue.make_contiguous().sort_by_key(seq);
        self.inflight
            .make_contiguous()
            .sort_by_key(|i| seq(&i.delivery));
        self.queue_bytes = self.queue.iter().map(Delivery::weight).sum();
        self.inflight_bytes = self.inflight.iter().map(|i| i.delivery.weight()).sum();
        // Their packet ids are whatever they were: new ones must avoid them.
        self.ids_may_collide = !self.inflight.is_empty();
        self.queue.iter().map(Delivery::charge).sum()
    }

    /// Takes the generation of a will read back (its record is keyed by it).
    pub fn restore_generation(&mut self, generation: u64) {
        self.generation = generation;
    }
}
