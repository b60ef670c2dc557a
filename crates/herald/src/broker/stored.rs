//! The store's handles on what it keeps, held by the broker's in-memory state: the record of
//! a QoS 1/2 message ([`StoredMessage`]), a delivery's place in its session ([`Stored`]),
//! and a stored session's delivery numbering ([`DurableSession`]). A leaf: the message,
//! the session state and the persistence seam all use it, and it uses none of them.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::store::journal::Ticket;

/// The store's record of a QoS 1/2 message, shared by every stored delivery of it.
#[derive(Debug)]
pub struct StoredMessage {
    /// Its key in the store.
    id: u64,
    /// The ticket its record is written under (reserved before routing, so that a QoS 2
    /// delivery can wait for it: a publisher's re-sent PUBLISH after a crash is then always
    /// recognised). `NONE` for a record read back at start.
    ticket: Ticket,
    /// Stored deliveries not yet done, plus one held by the publisher while it routes: the
    /// record is deleted when this reaches 0.
    pins: AtomicU32,
}

impl StoredMessage {
    /// A message numbered for publishing: the publisher holds one pin.
    pub(crate) fn new(id: u64, ticket: Ticket) -> Arc<StoredMessage> {
        Arc::new(StoredMessage {
            id,
            ticket,
            pins: AtomicU32::new(1),
        })
    }

    /// A record read back from the store, pinned by its `live` deliveries.
    pub fn restored(id: u64, live: u32) -> Arc<StoredMessage> {
        Arc::new(StoredMessage {
            id,
            ticket: Ticket::NONE,
            pins: AtomicU32::new(live),
        })
    }

    /// Its key in the store.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The ticket of its record.
    pub fn ticket(&self) -> Ticket {
        self.ticket
    }

    /// Adds a stored delivery.
    pub fn pin(&self) {
        self.pins.fetch_add(1, Ordering::AcqRel);
    }

    /// Drops one pin; `true` when it was the last (the record goes).
    pub(crate) fn unpin(&self) -> bool {
        self.pins.fetch_sub(1, Ordering::AcqRel) == 1
    }

    /// Pins held (for tests).
    #[cfg(test)]
    pub fn pins(&self) -> u32 {
        self.pins.load(Ordering::Relaxed)
    }
}

/// A delivery's place in the store: its sequence number in its session's queue, and the
/// record of its message.
#[derive(Debug, Clone)]
pub struct Stored {
    /// Its sequence number in its session (above 0).
    pub seq: u64,
    /// Its message's record.
    pub message: Arc<StoredMessage>,
}

/// Sequence numbers of a stored session's deliveries, and which are done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DurableSession {
    /// The next QoS 1/2 delivery's sequence number.
    pub next_seq: u64,
    /// Every sequence number below this is done (acknowledged, expired or not deliverable).
    pub watermark: u64,
    /// Sequence numbers above the watermark that are done (acknowledged out of order).
    pub above: Vec<u64>,
}

impl Default for DurableSession {
    fn default() -> Self {
        DurableSession {
            next_seq: 1,
            watermark: 1,
            above: Vec::new(),
        }
    }
}

impl DurableSession {
    /// Marks `seq` done, moving the watermark past every done number it reaches.
    pub fn done(&mut self, seq: u64) {
        if seq < self.watermark || self.above.contains(&seq) {
            return;
        }
        if seq != self.watermark {
            self.above.push(seq);
            return;
        }
        self.watermark += 1;
        while let Some(pos) = self.above.iter().position(|s| *s == self.watermark) {
            self.above.swap_remove(pos);
            self.watermark += 1;
        }
    }
}
