//! The session's side of flow control (`broker::flow`): whether it pushes back on its
//! publishers, parking and waking them, progress and stalls.

use std::sync::atomic::Ordering;
use std::task::Waker;

use super::{Session, SessionState};
use crate::broker::flow::{high_water, low_water, now_ms};
use crate::config::Limits;

impl SessionState {
    /// Whether publishers feeding this session should stop reading: it is connected, past
    /// high water, and not stalled.
    pub fn pushes_back(&self, limits: &Limits) -> bool {
        self.connected
            && !self.congestion.as_ref().is_some_and(|c| c.stalled())
            && high_water(self.queue.len(), self.queue_bytes, limits)
    }

    /// Once the queue is at low water (or the session is offline or ended), ends the
    /// congestion and returns the parked publishers to wake (after the lock is released).
    pub fn relieve(&mut self, limits: &Limits) -> Vec<Waker> {
        if self.congestion.is_none() {
            return Vec::new();
        }
        if low_water(self.queue.len(), self.queue_bytes, limits) || !self.connected || self.ended {
            return self.release_waiters();
        }
        Vec::new()
    }

    /// Ends the congestion whatever the queue holds (the session went offline or ended):
    /// the publishers to wake.
    pub fn release_waiters(&mut self) -> Vec<Waker> {
        self.congestion
            .take()
            .map(|c| c.into_waiters())
            .unwrap_or_default()
    }
}

impl Session {
    /// Records that the attached connection made progress now (see `progress_ms`).
    pub fn note_progress(&self) {
        self.progress_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// When the attached connection last made progress (`now_ms`).
    pub fn progress_ms(&self) -> u64 {
        self.progress_ms.load(Ordering::Relaxed)
    }

    /// Parks a publisher's task until this session drains: `true` when it must wait (its
    /// waker is registered), `false` when the session no longer pushes back.
    pub fn park(&self, waker: &Waker, limits: &Limits) -> bool {
        let mut st = self.lock();
        if st.ended || !st.pushes_back(limits) {
            return false;
        }
        st.congestion
            .get_or_insert_with(Default::default)
            .park(waker);
        true
    }

    /// Marks a session that stayed congested past `limits.stall_after_ms` as stalled: it
    /// stops pushing back until it drains to low water. Wakes the publishers parked on it.
    /// Returns whether it was still congested (and is now stalled).
    pub fn mark_stalled(&self, limits: &Limits) -> bool {
        let waiters = {
            let mut st = self.lock();
            if !st.pushes_back(limits) {
                return false;
            }
            st.congestion.get_or_insert_with(Default::default).stall()
        };
        waiters.into_iter().for_each(Waker::wake);
        true
    }
}
