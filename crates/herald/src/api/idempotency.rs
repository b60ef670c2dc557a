//! Idempotency keys: a `POST /api/v1/publish` (or `/publish/batch`) sent again with the same
//! `Idempotency-Key` within the window gets the first answer and publishes nothing.
//!
//! A key's record says how many of the request's messages are published, with each one's
//! outcome. With a store, the record is written in the same atomic unit as each message
//! (`Broker::publish_with`'s extra op), so after a crash a retry publishes exactly the
//! messages that were not yet on disk, never one twice: exactly-once per message, batches
//! included. Records outlive a restart and are forgotten when their window ends.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::store::{Op, Space};

/// The outcome of one published message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Outcome {
    /// Sessions it was routed to.
    pub matched: usize,
}

/// What is known of a key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Record {
    /// Until when it is remembered (Unix milliseconds).
    pub expires_ms: u64,
    /// The request it belongs to (a hash of its path and body): the same key with another
    /// request is refused.
    pub fingerprint: u64,
    /// Outcomes of the request's messages published so far, in order.
    pub done: Vec<Outcome>,
    /// How many messages the request has.
    pub total: usize,
}

/// Record layout version.
const FORMAT: u8 = 1;

impl Record {
    /// The stored form: a format byte, then JSON.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = vec![FORMAT];
        // A record of plain numbers always serializes.
        out.extend(serde_json::to_vec(self).unwrap_or_default());
        out
    }

    /// Reads a stored record.
    pub(crate) fn decode(bytes: &[u8]) -> Option<Record> {
        match bytes.split_first() {
            Some((&FORMAT, json)) => serde_json::from_slice(json).ok(),
            _ => None,
        }
    }

    /// Whether every message is published.
    pub(crate) fn complete(&self) -> bool {
        self.done.len() >= self.total
    }
}

/// The store op that records `record` under `key`.
pub(crate) fn put_op(key: &str, record: &Record) -> Op {
    Op::Put(Space::Idempotency, key.as_bytes().to_vec(), record.encode())
}

/// The stable 64-bit FNV-1a hash of a request (stored: it must not change between builds).
pub(crate) fn fingerprint(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &b in *part {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        // A separator, so that ("ab", "c") and ("a", "bc") differ.
        h ^= 0xff;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Now, in Unix milliseconds.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// What to do with a request carrying a key.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Begin {
    /// Publish the request's messages from `from` on (0: new; more: a retry after a crash
    /// part way), with the outcomes so far.
    Publish {
        /// Outcomes already recorded.
        done: Vec<Outcome>,
    },
    /// Already complete: answer with these outcomes and publish nothing.
    Replay(Vec<Outcome>),
    /// Another request with this key is being served right now.
    InUse,
    /// The key was used for a different request.
    Mismatch,
}

#[derive(Debug)]
struct Entry {
    record: Record,
    busy: bool,
}

#[derive(Debug, Default)]
struct Inner {
    keys: HashMap<String, Entry>,
    /// Keys in the order they were made, for expiry and for the size bound.
    order: VecDeque<(u64, String)>,
}

/// The keys remembered, shared by the API's requests.
#[derive(Debug)]
pub(crate) struct Keys {
    window_ms: u64,
    max: usize,
    inner: Mutex<Inner>,
}

impl Keys {
    /// An empty table.
    pub(crate) fn new(window_secs: u64, max: usize) -> Keys {
        Keys {
            window_ms: window_secs.saturating_mul(1000),
            max: max.max(1),
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a record read from the store at start (expired ones are not kept).
    pub(crate) fn restore(&self, key: String, record: Record, now: u64) -> bool {
        if record.expires_ms <= now {
            return false;
        }
        let mut inner = self.lock();
        inner.order.push_back((record.expires_ms, key.clone()));
        inner.keys.insert(
            key,
            Entry {
                record,
                busy: false,
            },
        );
        true
    }

    /// Starts serving a request with `key`; on `Publish`, the key is busy until `finish`.
    pub(crate) fn begin(&self, key: &str, fingerprint: u64, total: usize, now: u64) -> Begin {
        let mut inner = self.lock();
        if let Some(entry) = inner.keys.get_mut(key)
            && entry.record.expires_ms > now
        {
            if entry.record.fingerprint != fingerprint {
                return Begin::Mismatch;
            }
            if entry.busy {
                return Begin::InUse;
            }
            if entry.record.complete() {
                return Begin::Replay(entry.record.done.clone());
            }
            entry.busy = true;
            return Begin::Publish {
                done: entry.record.done.clone(),
            };
        }
        let record = Record {
            expires_ms: now + self.window_ms,
            fingerprint,
            done: Vec::new(),
            total,
        };
        inner.order.push_back((record.expires_ms, key.to_string()));
        inner
            .keys
            .insert(key.to_string(), Entry { record, busy: true });
        Begin::Publish { done: Vec::new() }
    }

    /// The record of `key` once `outcome` is added (what the store is given with the
    /// message), and notes it.
    pub(crate) fn progress(&self, key: &str, outcome: Outcome) -> Option<Record> {
        let mut inner = self.lock();
        let entry = inner.keys.get_mut(key)?;
        entry.record.done.push(outcome);
        Some(entry.record.clone())
    }

    /// Ends serving `key`: it is free again (complete, or to be resumed by a retry).
    pub(crate) fn finish(&self, key: &str) {
        if let Some(entry) = self.lock().keys.get_mut(key) {
            entry.busy = false;
        }
    }

    /// Forgets a key whose request published nothing (it failed before its first message),
    /// so that a retry starts afresh.
    pub(crate) fn forget_if_empty(&self, key: &str) -> bool {
        let mut inner = self.lock();
        if inner
            .keys
            .get(key)
            .is_some_and(|e| e.record.done.is_empty())
        {
            inner.keys.remove(key);
            return true;
        }
        false
    }

    /// Forgets expired keys, and the oldest past the size bound; returns the keys
    /// forgotten (for the store to delete).
    pub(crate) fn sweep(&self, now: u64) -> Vec<String> {
        let mut inner = self.lock();
        let mut gone = Vec::new();
        while let Some((expires, _)) = inner.order.front() {
            let over = inner.keys.len() > self.max;
            if *expires > now && !over {
                break;
            }
            let Some((expires, key)) = inner.order.pop_front() else {
                break;
            };
            // Only the entry this queue slot was made for (a key made again after it
            // expired has a newer slot).
            let current = inner
                .keys
                .get(&key)
                .is_some_and(|e| e.record.expires_ms == expires && !e.busy);
            if current {
                inner.keys.remove(&key);
                gone.push(key);
            }
        }
        gone
    }

    /// Keys remembered.
    pub(crate) fn len(&self) -> usize {
        self.lock().keys.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_replays_resumes_and_refuses() {
        let keys = Keys::new(60, 100);
        let fp = fingerprint(&[b"/publish", b"{}"]);
        assert_eq!(keys.begin("k", fp, 2, 0), Begin::Publish { done: vec![] });
        assert_eq!(keys.begin("k", fp, 2, 0), Begin::InUse);
        keys.progress("k", Outcome { matched: 3 });
        keys.finish("k");
        // Half done (as after a crash): the retry resumes after the first message.
        assert_eq!(
            keys.begin("k", fp, 2, 1),
            Begin::Publish {
                done: vec![Outcome { matched: 3 }]
            }
        );
        let record = keys.progress("k", Outcome { matched: 0 }).unwrap();
        keys.finish("k");
        assert!(record.complete());
        assert_eq!(Record::decode(&record.encode()), Some(record.clone()));
        assert_eq!(
            keys.begin("k", fp, 2, 2),
            Begin::Replay(vec![Outcome { matched: 3 }, Outcome { matched: 0 }])
        );
        assert_eq!(keys.begin("k", fp ^ 1, 2, 2), Begin::Mismatch);
        // After the window, the key is new again.
        assert_eq!(keys.sweep(60_001), vec!["k".to_string()]);
        assert_eq!(
            keys.begin("k", fp, 2, 60_001),
            Begin::Publish { done: vec![] }
        );
    }

    #[test]
    fn the_oldest_keys_go_past_the_bound() {
        let keys = Keys::new(60, 2);
        for k in ["a", "b", "c"] {
            keys.begin(k, 1, 1, 0);
            keys.finish(k);
        }
        assert_eq!(keys.sweep(0), vec!["a".to_string()]);
        assert_eq!(keys.len(), 2);
    }

    #[test]
    fn fingerprints_are_stable() {
        // Stored across restarts and builds: this value must never change.
        assert_eq!(fingerprint(&[b"a", b"bc"]), fingerprint(&[b"a", b"bc"]));
        assert_ne!(fingerprint(&[b"ab", b"c"]), fingerprint(&[b"a", b"bc"]));
        assert_eq!(fingerprint(&[]), 0xcbf2_9ce4_8422_2325);
    }
}
