//! The persistence seam: everything the session core, the router and the HTTP API ask of the
//! store goes through one value, [`Persistence`]. Without a store (`store.in_memory`) every
//! call is a no-op that hands back [`Ticket::NONE`], so callers never check whether there is
//! a store; with one, it forwards to [`Durable`], which decides what records are written.
//!
//! A QoS 1/2 message bound for stored sessions gets a [`StoredMessage`]: its id in the store,
//! the ticket its record is written under, and how many stored deliveries still need it. The
//! message itself knows nothing of the store. Each stored delivery carries a [`Stored`]: its
//! sequence number in its session and the message's record.
//!
//! It speaks in ids and records, not in sessions: the session state calls it, never the
//! other way round.

use std::sync::Arc;
use std::task::{Context, Poll};

use mqtt_codec::QoS;

use super::durable::Durable;
use super::message::{Delivery, Message, SessionId};
use super::stats::RefuseReason;
pub use super::stored::{DurableSession, Stored, StoredMessage};
use crate::store::journal::Ticket;
use crate::store::record::{Recipient, SessionRecord};
use crate::store::{Op, Space, StoreError, Visit};

/// A message about to be published, checked against the store.
#[derive(Debug, Default)]
pub struct Prepared {
    /// Its record, when it is a QoS 1/2 message and there is a store.
    stored: Option<Arc<StoredMessage>>,
}

impl Prepared {
    /// A message numbered with `Persistence::number` (`None`: not stored).
    pub fn numbered(stored: Option<Arc<StoredMessage>>) -> Prepared {
        Prepared { stored }
    }

    /// The record stored deliveries of it name.
    pub fn stored(&self) -> Option<&Arc<StoredMessage>> {
        self.stored.as_ref()
    }
}

/// Durability behind one value: a no-op without a store.
#[derive(Debug, Default)]
pub struct Persistence(Option<Durable>);

impl Persistence {
    /// No store: nothing is written, every ticket is `NONE`.
    pub fn memory() -> Persistence {
        Persistence(None)
    }

    /// State is written to `durable`.
    pub fn disk(durable: Durable) -> Persistence {
        Persistence(Some(durable))
    }

    /// The store behind it, for what only operators ask about (disk use, journal figures,
    /// restore at start); `None` in memory.
    pub fn durable(&self) -> Option<&Durable> {
        self.0.as_ref()
    }

    /// Whether state is written anywhere.
    pub fn is_stored(&self) -> bool {
        self.0.is_some()
    }

    /// Whether a store write has failed (nothing is acknowledged any more).
    pub fn failed(&self) -> bool {
        self.0.as_ref().is_some_and(|d| d.journal.failed())
    }

    /// Why a new QoS 1/2 publication must be refused now, if it must: a store write failed,
    /// or the disk is past its limit.
    pub fn refusal(&self) -> Option<RefuseReason> {
        self.0.as_ref().and_then(Durable::refusal)
    }

    /// Whether new QoS 1/2 publications are refused for the disk limit.
    pub fn refusing(&self) -> bool {
        self.0.as_ref().is_some_and(Durable::refusing)
    }

    /// The highest ticket on disk (in memory: every ticket).
    pub fn durable_ticket(&self) -> Ticket {
        self.0.as_ref().map_or(Ticket::MAX, |d| d.journal.durable())
    }

    /// Whether `ticket` is on disk, or never will be (the store failed); if neither, `cx`'s
    /// task is woken once one is true.
    pub fn poll_durable(&self, ticket: Ticket, cx: &Context<'_>) -> Poll<()> {
        match &self.0 {
            Some(d) if !ticket.is_none() => d.journal.poll_durable(ticket, cx),
            _ => Poll::Ready(()),
        }
    }

    /// Waits (blocking the thread) until `ticket` is on disk; `false` if the store failed.
    /// For start and shutdown, never on a runtime worker.
    pub fn wait_blocking(&self, ticket: Ticket) -> bool {
        self.0
            .as_ref()
            .is_none_or(|d| d.journal.wait_blocking(ticket))
    }

    /// Submits raw ops (the HTTP API's idempotency keyspace); `NONE` in memory.
    pub fn submit(&self, ops: impl IntoIterator<Item = Op>) -> Ticket {
        match &self.0 {
            Some(d) => d.journal.submit(ops),
            None => Ticket::NONE,
        }
    }

    /// Reads every record of `space` (nothing in memory).
    pub fn scan(&self, space: Space, f: &mut Visit<'_>) -> Result<(), StoreError> {
        match &self.0 {
            Some(d) => d.journal.store().scan(space, f),
            None => Ok(()),
        }
    }

    /// Checks that `message` (retained or not) can be recorded, and numbers a QoS 1/2 one
    /// so that its deliveries can name its record before it is written. A message the store
    /// could not record is refused before anything is routed.
    pub fn prepare(&self, message: &Message, retain: bool) -> Result<Prepared, RefuseReason> {
        let Some(d) = &self.0 else {
            return Ok(Prepared::default());
        };
        if message.qos == QoS::AtMostOnce && !retain {
            return Ok(Prepared::default());
        }
        if !d.recordable(message) {
            return Err(RefuseReason::Unrecordable);
        }
        Ok(Prepared {
            stored: (message.qos != QoS::AtMostOnce).then(|| d.number()),
        })
    }

    /// Numbers a retained message being sent to a stored session as a message of its own.
    pub fn number(&self, qos: QoS) -> Option<Arc<StoredMessage>> {
        match &self.0 {
            Some(d) if qos != QoS::AtMostOnce => Some(d.number()),
            _ => None,
        }
    }

    /// The ops that record `message` for the stored sessions it was queued for (none in
    /// memory, or when there are none). `Err` when it does not encode (checked by `prepare`,
    /// so only a bug gets here): the publication must then be refused.
    pub fn message_ops(
        &self,
        message: &Message,
        prepared: &Prepared,
        recipients: Vec<Recipient>,
    ) -> Result<Vec<Op>, RefuseReason> {
        match (&self.0, &prepared.stored) {
            (Some(d), Some(stored)) if !recipients.is_empty() => d
                .message_op(message, stored, recipients)
                .map(|op| vec![op])
                .map_err(|()| RefuseReason::Unrecordable),
            _ => Ok(Vec::new()),
        }
    }

    /// The op that records (or, for an empty payload, deletes) `tenant`'s retained message.
    pub fn retained_op(&self, tenant: &str, message: &Message) -> Result<Option<Op>, RefuseReason> {
        match &self.0 {
            Some(d) => d
                .retained_op(tenant, message)
                .map(Some)
                .map_err(|()| RefuseReason::Unrecordable),
            None => Ok(None),
        }
    }

    /// Submits a publication's ops (under its message's reserved ticket, if it has one).
    pub fn commit(&self, prepared: &Prepared, ops: Vec<Op>) -> Ticket {
        match (&self.0, &prepared.stored) {
            (Some(d), Some(stored)) => {
                d.journal.submit_reserved(stored.ticket(), ops);
                stored.ticket()
            }
            (Some(d), None) => d.journal.submit(ops),
            (None, _) => Ticket::NONE,
        }
    }

    /// The publisher lets go of its message: released after the record was submitted, so
    /// that the record's deletion (by the last recipient to finish) always comes after it.
    pub fn release(&self, prepared: Prepared) {
        if let Some(stored) = &prepared.stored {
            self.unpin(stored);
        }
    }

    /// Drops one pin of a record; the last deletes it.
    fn unpin(&self, stored: &StoredMessage) {
        if stored.unpin()
            && let Some(d) = &self.0
        {
            d.delete_message(stored.id());
        }
    }

    /// Writes the record of session `id` (call with its lock held: the store sees one
    /// session's records in the order they changed).
    pub fn put_session(&self, id: SessionId, record: &SessionRecord) -> Ticket {
        match &self.0 {
            Some(d) => d.put_session(id, record),
            None => Ticket::NONE,
        }
    }

    /// A stored delivery of session `id` is done (acknowledged, expired, refused, too
    /// large): recorded in its acknowledgements `acks`, and its message's pin released.
    /// Call with the session's lock held. `staged`: a QoS 2 stage record exists for it and
    /// goes too.
    pub fn done(&self, id: SessionId, acks: &mut DurableSession, d: &Delivery, staged: bool) {
        if let (Some(durable), Some(stored)) = (&self.0, &d.stored) {
            acks.done(stored.seq);
            durable.acks(id, acks, staged.then_some(stored.seq));
            self.unpin(&stored.message);
        }
    }

    /// Records an outbound QoS 2 delivery's packet id and stage (`released`: PUBREL sent).
    pub fn stage(&self, id: SessionId, d: &Delivery, packet_id: u16, released: bool) -> Ticket {
        match (&self.0, &d.stored) {
            (Some(durable), Some(stored)) => durable.stage(id, stored.seq, packet_id, released),
            _ => Ticket::NONE,
        }
    }

    /// The op recording an inbound QoS 2 packet id of session `id`, written with the
    /// message (`None` in memory).
    pub fn inbound_op(&self, id: SessionId, packet_id: u16) -> Option<Op> {
        self.0.as_ref().map(|_| Durable::inbound_op(id, packet_id))
    }

    /// Forgets an inbound QoS 2 packet id (PUBREL received, or the PUBLISH refused).
    pub fn release_inbound(&self, id: SessionId, packet_id: u16) -> Ticket {
        match &self.0 {
            Some(d) => d.release_inbound(id, packet_id),
            None => Ticket::NONE,
        }
    }

    /// Stores the will of session `id`'s connection of `generation` (published after a
    /// crash): `message`, published after `delay` seconds.
    pub fn put_will(
        &self,
        tenant: &str,
        id: SessionId,
        generation: u64,
        delay: u32,
        message: &Message,
    ) -> Result<Ticket, RefuseReason> {
        match &self.0 {
            Some(d) => d
                .put_will(tenant, id, generation, delay, message)
                .map_err(|()| RefuseReason::Unrecordable),
            None => Ok(Ticket::NONE),
        }
    }

    /// Forgets the will of session `id`'s connection of `generation`.
    pub fn delete_will(&self, id: SessionId, generation: u64) {
        if let Some(d) = &self.0 {
            d.delete_will(id, generation);
        }
    }

    /// Removes the records of stored session `id` and releases the messages queued for it
    /// (`dropped`: its queue and inflight list, taken out), with its inbound QoS 2 ids.
    pub fn end_session(
        &self,
        id: SessionId,
        dropped: &[&Delivery],
        inbound: impl Iterator<Item = u16>,
    ) {
        let Some(d) = &self.0 else { return };
        d.end_session(id, dropped, inbound);
        for stored in dropped.iter().filter_map(|d| d.stored.as_ref()) {
            self.unpin(&stored.message);
        }
    }
}

impl Persistence {
    /// Writes `name`'s own settings, set through the admin API (`Err`: they could not be
    /// encoded, logged; nothing was written). Call with the tenants' settings lock held, so
    /// that the store sees one tenant's changes in the order they were made.
    pub(crate) fn put_tenant(
        &self,
        name: &str,
        limits: &crate::config::TenantLimits,
    ) -> Result<Ticket, ()> {
        match &self.0 {
            Some(d) => d.put_tenant(name, limits),
            None => Ok(Ticket::NONE),
        }
    }

    /// Forgets `name`'s own settings (as `put_tenant`, under the same lock).
    pub(crate) fn delete_tenant(&self, name: &str) -> Ticket {
        match &self.0 {
            Some(d) => d.delete_tenant(name),
            None => Ticket::NONE,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StoreConfig;
    use crate::store::memory::MemoryStore;
    use bytes::Bytes;

    fn disk() -> Persistence {
        let store = Arc::new(MemoryStore::new());
        Persistence::disk(Durable::with_store(store, &StoreConfig::default()).unwrap())
    }

    fn message(qos: QoS, topic: &str) -> Arc<Message> {
        Message::new(
            topic.into(),
            Bytes::from_static(b"x"),
            qos,
            false,
            Default::default(),
            0,
        )
    }

    #[test]
    fn in_memory_nothing_is_numbered_or_waited_for() {
        let p = Persistence::memory();
        let prepared = p.prepare(&message(QoS::ExactlyOnce, "t"), true).unwrap();
        assert!(prepared.stored().is_none());
        assert_eq!(p.commit(&prepared, Vec::new()), Ticket::NONE);
        assert!(p.durable_ticket() >= Ticket::NONE);
        assert!(p.refusal().is_none() && !p.failed());
    }

    #[test]
    fn a_stored_message_is_numbered_and_its_record_deleted_by_the_last_pin() {
        let p = disk();
        let m = message(QoS::AtLeastOnce, "t");
        let prepared = p.prepare(&m, false).unwrap();
        let stored = prepared.stored().unwrap().clone();
        assert!(!stored.ticket().is_none(), "a ticket is reserved");
        stored.pin();
        let recipient = Recipient {
            session: 1,
            seq: 1,
            qos: QoS::AtLeastOnce,
            retain: false,
            subscription_ids: Vec::new(),
        };
        let ops = p.message_ops(&m, &prepared, vec![recipient]).unwrap();
        assert_eq!(ops.len(), 1);
        let ticket = p.commit(&prepared, ops);
        assert_eq!(ticket, stored.ticket());
        p.release(prepared);
        assert_eq!(stored.pins(), 1, "the delivery's pin is left");
        assert!(p.wait_blocking(ticket));
    }

    #[test]
    fn a_message_that_cannot_be_recorded_is_refused_before_routing() {
        let p = disk();
        // A topic longer than an MQTT string can hold (65,535 bytes): the record's PUBLISH
        // does not encode.
        let long = "a".repeat(65_536);
        let m = message(QoS::AtLeastOnce, &long);
        assert_eq!(
            p.prepare(&m, false).unwrap_err(),
            RefuseReason::Unrecordable
        );
        assert!(
            Persistence::memory().prepare(&m, false).is_ok(),
            "nothing to record in memory"
        );
    }
}
