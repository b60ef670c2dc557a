//! The default store: fjall, an embedded log-structured merge tree (pure Rust) with
//! keyspaces, atomic cross-keyspace batches and explicit fsync.
//!
//! Why fjall: Herald's writes are small, many and mostly short-lived (a queued message is
//! written, then deleted once delivered), which is what an LSM absorbs well: one sequential
//! journal write per batch, deletions as tombstones that compaction drops. It is pure Rust
//! (no C toolchain on the build path), locks its directory, checksums its files, and its
//! batches are atomic across keyspaces, so a publication's records land together or not at
//! all.
//!
//! Its journal files are preallocated (64 MiB each): a store directory is never something to
//! commit to a repository; the tests build damaged stores on the fly.

use std::path::{Path, PathBuf};

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};

use super::{Fsync, Op, Space, Store, StoreError, Visit};

/// Tuning of the disk store.
#[derive(Debug, Clone)]
pub struct FjallOptions {
    /// Bytes a keyspace's memtable grows to before it is flushed to a sorted file.
    pub memtable_bytes: u64,
    /// Bytes of journal kept before old journals are retired (flushing their memtables):
    /// bounds the disk taken by data already deleted.
    pub max_journal_bytes: u64,
    /// How commits reach the disk.
    pub fsync: Fsync,
}

/// The disk store.
pub struct FjallStore {
    dir: PathBuf,
    db: Database,
    spaces: Vec<Keyspace>,
    fsync: Fsync,
}

impl std::fmt::Debug for FjallStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FjallStore")
            .field("dir", &self.dir)
            .finish()
    }
}

impl FjallStore {
    /// Opens (or creates) the store in `dir`, locking it against a second process.
    pub fn open(dir: &Path, options: &FjallOptions) -> Result<FjallStore, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Engine {
            dir: dir.to_path_buf(),
            message: format!("cannot create the directory: {e}"),
        })?;
        let engine = |e: fjall::Error| match e {
            fjall::Error::Locked => StoreError::Locked {
                dir: dir.to_path_buf(),
            },
            other => StoreError::Engine {
                dir: dir.to_path_buf(),
                message: other.to_string(),
            },
        };
        let db = Database::builder(dir)
            .max_journaling_size(options.max_journal_bytes.max(64 * 1024 * 1024))
            .manual_journal_persist(true)
            .worker_threads(1)
            .open()
            .map_err(engine)?;
        let mut spaces = Vec::new();
        for space in Space::ALL {
            let memtable = options.memtable_bytes;
            let ks = db
                .keyspace(space.name(), || {
                    KeyspaceCreateOptions::default().max_memtable_size(memtable)
                })
                .map_err(engine)?;
            spaces.push(ks);
        }
        Ok(FjallStore {
            dir: dir.to_path_buf(),
            db,
            spaces,
            fsync: options.fsync,
        })
    }

    fn space(&self, space: Space) -> &Keyspace {
        &self.spaces[space as usize]
    }

    fn engine(&self, e: impl std::fmt::Display) -> StoreError {
        StoreError::Engine {
            dir: self.dir.clone(),
            message: e.to_string(),
        }
    }
}

impl Store for FjallStore {
    fn apply(&self, ops: &[Op], sync: bool) -> Result<(), StoreError> {
        if ops.is_empty() {
            return Ok(());
        }
        let mode = match (self.fsync, sync) {
            (Fsync::Never, _) | (_, false) => PersistMode::Buffer,
            _ => PersistMode::SyncData,
        };
        let mut batch = self.db.batch().durability(Some(mode));
        for op in ops {
            match op {
                Op::Put(s, k, v) | Op::Create(s, k, v) => {
                    batch.insert(self.space(*s), k.as_slice(), v.as_slice())
                }
                Op::Delete(s, k) => batch.remove(self.space(*s), k.as_slice()),
            }
        }
        batch.commit().map_err(|e| self.engine(e))
    }

    fn scan(&self, space: Space, f: &mut Visit<'_>) -> Result<(), StoreError> {
        for guard in self.space(space).iter() {
            let (k, v) = guard.into_inner().map_err(|e| self.engine(e))?;
            f(&k, &v)?;
        }
        Ok(())
    }

    fn disk_bytes(&self) -> u64 {
        // What the files take on disk, not their lengths: the engine makes each journal
        // file 64 MiB long at once, sparse, and an empty store would say 64 MiB.
        allocated(&self.dir).unwrap_or_else(|_| self.db.disk_space().unwrap_or(0))
    }
}

/// The bytes the files under `dir` take on disk.
fn allocated(dir: &Path) -> std::io::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        if meta.is_dir() {
            total += allocated(&entry.path())?;
        } else {
            #[cfg(unix)]
            {
                use std::os::unix::fs::MetadataExt;
                total += meta.blocks() * 512;
            }
            #[cfg(not(unix))]
            {
                total += meta.len();
            }
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> FjallOptions {
        FjallOptions {
            memtable_bytes: 1 << 20,
            max_journal_bytes: 64 << 20,
            fsync: Fsync::Batch,
        }
    }

    #[test]
    fn an_empty_store_takes_little_disk() {
        let dir = tempfile::tempdir().unwrap();
        let s = FjallStore::open(dir.path(), &options()).unwrap();
        // Its journal file is 64 MiB long, and sparse.
        assert!(s.disk_bytes() < 8 << 20, "{} bytes", s.disk_bytes());
        let big = Op::Put(Space::Retained, b"t".to_vec(), vec![7; 1 << 20]);
        s.apply(&[big], true).unwrap();
        assert!(s.disk_bytes() >= 1 << 20, "what is written counts");
    }

    #[test]
    fn survives_reopen_and_locks_its_directory() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = FjallStore::open(dir.path(), &options()).unwrap();
            s.apply(
                &[
                    Op::Put(Space::Retained, b"t/1".to_vec(), b"one".to_vec()),
                    Op::Create(Space::Messages, b"m".to_vec(), b"x".to_vec()),
                    Op::Delete(Space::Messages, b"m".to_vec()),
                ],
                true,
            )
            .unwrap();
            let second = FjallStore::open(dir.path(), &options()).unwrap_err();
            assert!(
                matches!(second, StoreError::Locked { .. }),
                "a second open is refused: {second}"
            );
            assert!(second.to_string().contains("in use"), "{second}");
        }
        let s = FjallStore::open(dir.path(), &options()).unwrap();
        let mut seen = Vec::new();
        s.scan(Space::Retained, &mut |k, v| {
            seen.push((k.to_vec(), v.to_vec()));
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, vec![(b"t/1".to_vec(), b"one".to_vec())]);
        let mut messages = 0;
        s.scan(Space::Messages, &mut |_, _| {
            messages += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!(messages, 0, "deleted in the same batch");
    }
}
