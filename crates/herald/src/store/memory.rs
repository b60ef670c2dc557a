//! A store in ordered maps: the same contract as the disk store (atomic batches, ordered
//! scans), kept in memory. For tests and for embedding Herald where a caller wants the
//! store's behaviour without a disk.

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::{Op, Space, Store, StoreError, Visit};

/// Every keyspace's entries, ordered by keyspace then key.
type Entries = BTreeMap<(Space, Vec<u8>), Vec<u8>>;

/// Ordered maps, one per keyspace, behind one lock (a batch is atomic).
#[derive(Debug, Default)]
pub struct MemoryStore {
    spaces: Mutex<Entries>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }
}

impl Store for MemoryStore {
    fn apply(&self, ops: &[Op], _sync: bool) -> Result<(), StoreError> {
        let mut map = self.spaces.lock().unwrap_or_else(|p| p.into_inner());
        for op in ops {
            match op {
                Op::Put(s, k, v) | Op::Create(s, k, v) => {
                    map.insert((*s, k.clone()), v.clone());
                }
                Op::Delete(s, k) => {
                    map.remove(&(*s, k.clone()));
                }
            }
        }
        Ok(())
    }

    fn scan(&self, space: Space, f: &mut Visit<'_>) -> Result<(), StoreError> {
        // A copy, so that `f` runs without the lock.
        let entries: Vec<(Vec<u8>, Vec<u8>)> = {
            let map = self.spaces.lock().unwrap_or_else(|p| p.into_inner());
            map.range((space, Vec::new())..)
                .take_while(|((s, _), _)| *s == space)
                .map(|((_, k), v)| (k.clone(), v.clone()))
                .collect()
        };
        for (k, v) in entries {
            f(&k, &v)?;
        }
        Ok(())
    }

    fn disk_bytes(&self) -> u64 {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_apply_in_order_and_scans_are_sorted() {
        let s = MemoryStore::new();
        s.apply(
            &[
                Op::Put(Space::Sessions, b"b".to_vec(), b"2".to_vec()),
                Op::Put(Space::Sessions, b"a".to_vec(), b"1".to_vec()),
                Op::Put(Space::Acks, b"a".to_vec(), b"x".to_vec()),
                Op::Delete(Space::Acks, b"a".to_vec()),
            ],
            true,
        )
        .unwrap();
        let mut seen = Vec::new();
        s.scan(Space::Sessions, &mut |k, v| {
            seen.push((k.to_vec(), v.to_vec()));
            Ok(())
        })
        .unwrap();
        assert_eq!(
            seen,
            vec![
                (b"a".to_vec(), b"1".to_vec()),
                (b"b".to_vec(), b"2".to_vec())
            ]
        );
        let mut acks = 0;
        s.scan(Space::Acks, &mut |_, _| {
            acks += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!(acks, 0);
    }
}
