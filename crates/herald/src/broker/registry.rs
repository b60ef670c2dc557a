//! Sessions by client id: looked up at CONNECT (resume, takeover), changed at CONNECT and
//! when a session ends. Sharded so that a connect storm does not queue on one lock.
//!
//! Lock order: docs/architecture.md ("Lock order").

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, MutexGuard};

use super::session::{Session, SessionId};

const SHARDS: usize = 64;

/// One shard: client id -> session. The key is the session's own `Arc<str>` client id: one
/// allocation for both, 16 bytes in the table.
pub type Shard = HashMap<Arc<str>, Arc<Session>>;

/// One tenant's sessions.
#[derive(Debug)]
pub struct Registry {
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
        }
    }
}

impl Registry {
    /// The shard holding `client_id`, locked. Callers hold it only for map operations.
    pub fn shard(&self, client_id: &str) -> MutexGuard<'_, Shard> {
        let i = self.hasher.hash_one(client_id) as usize % SHARDS;
        self.shards[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The session of `client_id`, if any.
    pub fn get(&self, client_id: &str) -> Option<Arc<Session>> {
        self.shard(client_id).get(client_id).cloned()
    }

    /// Removes `client_id`'s entry if it is still the session `id` (a newer session under the
    /// same id is left alone). Returns whether it was removed.
    pub fn remove_if(&self, client_id: &str, id: SessionId) -> bool {
        let mut shard = self.shard(client_id);
        if shard.get(client_id).is_some_and(|s| s.id == id) {
            shard.remove(client_id);
            true
        } else {
            false
        }
    }

    /// Sessions held (each shard locked in turn: for quotas at CONNECT, not per message).
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }

    /// Whether no session is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Calls `f` on every session, one shard locked at a time (`f` must not lock a shard).
    pub fn for_each(&self, mut f: impl FnMut(&Arc<Session>)) {
        for shard in self.shards.iter() {
            let shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            for session in shard.values() {
                f(session);
            }
        }
    }
}
