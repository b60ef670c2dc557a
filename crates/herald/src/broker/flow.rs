//! Flow control between the publishers that fill a session's queue and the connection that
//! drains it, and the node-wide budget of queued bytes.
//!
//! **Pushback.** A connected session whose queue passes half its outbox bound is
//! *congested*: a publisher whose message was queued there stops reading its socket and
//! parks its task on the session (`Session::park`). The session's connection wakes every
//! parked publisher when its queue drains to a quarter of the bound (`relieve`), or when it
//! goes offline or ends. Each publisher re-checks under the session lock before it parks, so
//! the bound holds however many publishers, on however many workers, hit it at once: each
//! adds at most the message it was routing when the queue crossed high water.
//!
//! **Stalled subscribers.** A congested session whose connection has made no progress (its
//! socket took no bytes) for `limits.stall_after_ms` is marked *stalled* by a publisher parked
//! on it (`mark_stalled`; the publisher holds a timer while parked): it stops pushing back,
//! so one subscriber that does not read cannot hold up publishers and the other subscribers
//! they feed. A subscriber that keeps taking bytes, however slowly, is not stalled: many
//! publishers into one reader are held back for as long as it reads. A stalled session loses QoS 0 past its outbox bound (counted `outbox_full`), its
//! QoS 1/2 queue fills to `limits.max_queued_messages` / `max_queued_bytes` (past which
//! publishers are refused, never acknowledged), and past the slow-consumer timeout its
//! connection is closed. It pushes back again once it has drained to low water.
//!
//! **Queued bytes.** `Stats::queued_bytes` counts what every session queue holds: each
//! message's topic and payload once however many queues hold it (a fan-out shares them), and
//! a fixed cost per queued delivery. Past `limits.max_queued_bytes_total`, QoS 0 copies are
//! dropped and QoS 1/2 publications refused.

use std::sync::atomic::Ordering;
use std::task::Waker;

use super::message::Delivery;
use crate::config::Limits;

/// What a queued delivery costs besides its message: the `Delivery` in the queue.
pub(crate) const DELIVERY_OVERHEAD: u64 = std::mem::size_of::<Delivery>() as u64;

/// A congested session's parked publishers. Boxed in the session state: only congested
/// sessions have one.
#[derive(Debug, Default)]
pub(crate) struct Congestion {
    /// Publishers' tasks waiting for the queue to drain.
    waiters: Vec<Waker>,
    /// Stayed congested past `limits.stall_after_ms`: no longer pushes back.
    stalled: bool,
}

impl Congestion {
    /// Whether it stalled (and no longer pushes back).
    pub(crate) fn stalled(&self) -> bool {
        self.stalled
    }

    /// Adds a parked publisher's task (once).
    pub(crate) fn park(&mut self, waker: &Waker) {
        if !self.waiters.iter().any(|w| w.will_wake(waker)) {
            self.waiters.push(waker.clone());
        }
    }

    /// Marks it stalled; returns the publishers to wake.
    pub(crate) fn stall(&mut self) -> Vec<Waker> {
        self.stalled = true;
        std::mem::take(&mut self.waiters)
    }

    /// The publishers to wake as it ends.
    pub(crate) fn into_waiters(self) -> Vec<Waker> {
        self.waiters
    }
}

/// Whether a queue of `len` deliveries and `bytes` bytes is past half the outbox bound.
pub(crate) fn high_water(len: usize, bytes: usize, limits: &Limits) -> bool {
    len * 2 > limits.max_outbox_messages || bytes * 2 > limits.max_outbox_bytes
}

/// Whether it is at or below a quarter of the outbox bound.
pub(crate) fn low_water(len: usize, bytes: usize, limits: &Limits) -> bool {
    len * 4 <= limits.max_outbox_messages && bytes * 4 <= limits.max_outbox_bytes
}

/// Milliseconds on the clock of progress and stalls (since the first call in this process).
pub(crate) fn now_ms() -> u64 {
    static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    EPOCH
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_millis() as u64
}

impl Delivery {
    /// What queueing this delivery adds to the node's queued bytes: the fixed cost, plus its
    /// message's topic and payload if no other queue holds the message yet.
    pub fn charge(&self) -> u64 {
        let first = self.message.queued.fetch_add(1, Ordering::AcqRel) == 0;
        DELIVERY_OVERHEAD + if first { self.weight() as u64 } else { 0 }
    }

    /// What taking it out of its queue gives back (the reverse of `charge`).
    pub fn discharge(&self) -> u64 {
        let last = self.message.queued.fetch_sub(1, Ordering::AcqRel) == 1;
        DELIVERY_OVERHEAD + if last { self.weight() as u64 } else { 0 }
    }
}
