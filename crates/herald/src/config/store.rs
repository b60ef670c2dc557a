//! `[store]`: where sessions, queued and retained messages are kept, how commits reach the
//! disk, and the disk's bounds.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{ConfigError, require};

/// The durable store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// Directory of the store (created if missing; locked while Herald runs).
    pub data_dir: PathBuf,
    /// Keep everything in memory only: nothing survives a restart, nothing waits for a disk.
    pub in_memory: bool,
    /// How commits reach the disk: `batch` (one fsync per group commit; the default),
    /// `always` (one per change) or `never` (survives a crash of Herald, not of the machine).
    pub fsync: Fsync,
    /// Bytes the store may take on disk; past it new QoS 1/2 publications are refused
    /// (v5: reason 0x97 Quota exceeded; 3.1.1: the connection is closed). 0: no limit.
    pub max_disk_bytes: u64,
    /// Free bytes the store's file system must keep; below it, the same refusal.
    pub min_free_disk_bytes: u64,
    /// Bytes a keyspace's in-memory table grows to before it is written to a sorted file.
    pub memtable_bytes: u64,
    /// Bytes of journal kept before old journals are retired (at least 64 MiB): bounds the
    /// disk taken by messages already delivered.
    pub max_journal_bytes: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            data_dir: PathBuf::from("herald-data"),
            in_memory: false,
            fsync: Fsync::Batch,
            max_disk_bytes: 0,
            min_free_disk_bytes: 256 * 1024 * 1024,
            memtable_bytes: 16 * 1024 * 1024,
            max_journal_bytes: 128 * 1024 * 1024,
        }
    }
}

impl StoreConfig {
    /// Checks that a disk store names its directory, and the journal and table sizes.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        require(&[
            (
                "store.data_dir",
                self.in_memory || !self.data_dir.as_os_str().is_empty(),
                "must name a directory",
            ),
            (
                "store.max_journal_bytes",
                self.max_journal_bytes >= 64 * 1024 * 1024,
                "must be at least 67108864 (64 MiB, the size of one journal file)",
            ),
            (
                "store.memtable_bytes",
                self.memtable_bytes >= 64 * 1024,
                "must be at least 65536 (64 KiB)",
            ),
        ])
    }
}

/// How a committed batch is made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fsync {
    /// One fsync per group commit: everything submitted while the previous batch was being
    /// written goes into the next batch, and one fsync covers them all. Nothing acknowledged
    /// is lost in a crash of the process or of the machine. The default.
    Batch,
    /// One commit and one fsync per submitted change: the same promise as `batch`, at the
    /// cost of one fsync per message.
    Always,
    /// Batches are handed to the operating system but never fsynced: an acknowledged message
    /// survives a crash of Herald (the kernel still has it) but not of the machine.
    Never,
}
