//! Checking a password against a user's hash without letting a reconnect storm stall the
//! server (the module documentation of `passwd` says why each step is there).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use ring::hmac;
use ring::rand::SystemRandom;
use subtle::ConstantTimeEq;
use tokio::sync::{OnceCell, Semaphore};

use super::PasswdError;
use super::file::Entry;

/// A MAC of (username, hash text, password) under the process's key.
type Tag = [u8; 32];

/// A user as the method holds it: its line, and the memory of its last right password.
#[derive(Debug)]
pub(super) struct User {
    /// The line.
    pub(super) entry: Entry,
    /// The [`Tag`] of the password last found right, so that the next CONNECT presenting
    /// it costs one MAC instead of the hash. One per user (a hash has one right password),
    /// so the memory is bounded by the file's size.
    memo: OnceLock<Tag>,
}

impl User {
    /// A user read from the file, keeping what `old` remembered when its hash is the same
    /// text (a reload that changes other lines, or only this user's tenant, costs nobody a
    /// hash; a changed hash forgets the old password).
    pub(super) fn new(entry: Entry, old: Option<&User>) -> User {
        let memo = OnceLock::new();
        if let Some(old) = old
            && old.entry.hash().as_str() == entry.hash().as_str()
            && let Some(tag) = old.memo.get()
        {
            let _ = memo.set(*tag);
        }
        User { entry, memo }
    }
}

/// Runs the hashes: at most one per core at once, off the async workers, identical ones in
/// progress together shared, right ones remembered.
#[derive(Debug)]
pub(super) struct Verifier {
    /// The process's random MAC key: the memory of a password is useless without it, and
    /// it is never written anywhere.
    key: hmac::Key,
    /// One permit per core: the hashes in progress.
    slots: Arc<Semaphore>,
    /// The hashes in progress, by the [`Tag`] of what they check, so that the same
    /// username and password presented again meanwhile wait for the same answer.
    pub(super) in_flight: Mutex<HashMap<Tag, Arc<OnceCell<bool>>>>,
    /// Passwords hashed so far (not answered from memory).
    hash_runs: AtomicU64,
}

impl Verifier {
    /// A verifier running at most `parallelism` hashes at once, with a new random key.
    pub(super) fn new(parallelism: usize) -> Result<Verifier, PasswdError> {
        let key = hmac::Key::generate(hmac::HMAC_SHA256, &SystemRandom::new())
            .map_err(|_| PasswdError::Hashing("no random bytes for the MAC key".into()))?;
        Ok(Verifier {
            key,
            slots: Arc::new(Semaphore::new(parallelism.max(1))),
            in_flight: Mutex::new(HashMap::new()),
            hash_runs: AtomicU64::new(0),
        })
    }

    /// Passwords hashed so far.
    pub(super) fn hash_runs(&self) -> u64 {
        self.hash_runs.load(Ordering::Relaxed)
    }

    /// Whether `password` is `user`'s.
    pub(super) async fn verify(&self, user: &Arc<User>, password: &[u8]) -> bool {
        if user.entry.hash().is_cheap() {
            // One SHA-512: cheaper than queueing it, no dearer than the MAC.
            self.hash_runs.fetch_add(1, Ordering::Relaxed);
            return user.entry.verify(password);
        }
        let tag = self.tag(&user.entry, password);
        if user
            .memo
            .get()
            .is_some_and(|known| bool::from(known.ct_eq(&tag)))
        {
            return true;
        }
        let right = self.coalesced(tag, user, password).await;
        if right {
            let _ = user.memo.set(tag);
        }
        right
    }

    /// The MAC of the username, the hash's text and the password (the first two prefixed
    /// with their lengths, so that no two triples run together the same way).
    fn tag(&self, entry: &Entry, password: &[u8]) -> Tag {
        let mut context = hmac::Context::with_key(&self.key);
        for field in [
            entry.username().as_bytes(),
            entry.hash().as_str().as_bytes(),
        ] {
            context.update(&(field.len() as u64).to_be_bytes());
            context.update(field);
        }
        context.update(password);
        let mut tag = [0; 32];
        tag.copy_from_slice(context.sign().as_ref());
        tag
    }

    /// The hash's answer, shared with every identical check in progress.
    async fn coalesced(&self, tag: Tag, user: &Arc<User>, password: &[u8]) -> bool {
        let cell = {
            let mut in_flight = self
                .in_flight
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            Arc::clone(in_flight.entry(tag).or_default())
        };
        let _leaving = Leaving {
            in_flight: &self.in_flight,
            tag,
            cell: &cell,
        };
        *cell
            .get_or_init(|| self.hash(Arc::clone(user), password.to_vec()))
            .await
    }

    /// Hashes `password` on the blocking pool once a slot is free. The slot is held until
    /// the hash ends, even if the CONNECT that asked is gone, so the bound stays true.
    async fn hash(&self, user: Arc<User>, password: Vec<u8>) -> bool {
        let Ok(slot) = Arc::clone(&self.slots).acquire_owned().await else {
            return false;
        };
        self.hash_runs.fetch_add(1, Ordering::Relaxed);
        let check = tokio::task::spawn_blocking(move || {
            let _slot = slot;
            user.entry.verify(&password)
        });
        match check.await {
            Ok(right) => right,
            Err(e) => {
                tracing::warn!(error = %e, "a password check did not finish");
                false
            }
        }
    }
}

/// Removes a check from the map of those in progress when the last one waiting for it
/// leaves (or as soon as it has an answer: later ones start afresh, or find the memory).
struct Leaving<'a> {
    /// The map.
    in_flight: &'a Mutex<HashMap<Tag, Arc<OnceCell<bool>>>>,
    /// The check's key.
    tag: Tag,
    /// Its shared answer.
    cell: &'a Arc<OnceCell<bool>>,
}

impl Drop for Leaving<'_> {
    fn drop(&mut self) {
        let mut in_flight = self
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let ours = in_flight
            .get(&self.tag)
            .is_some_and(|cell| Arc::ptr_eq(cell, self.cell));
        // Two references: the map's and this one's; nobody else waits.
        if ours && (self.cell.initialized() || Arc::strong_count(self.cell) <= 2) {
            in_flight.remove(&self.tag);
        }
    }
}
