//! Durable state: the `Store` trait, its implementations, the group-commit journal and the
//! record formats.
//!
//! - [`Store`]: an ordered key-value store in a few keyspaces with atomic batches. Two
//!   implementations: [`fjall::FjallStore`] (the default, an embedded LSM on disk) and
//!   [`memory::MemoryStore`] (ordered maps, same contract, for tests and embedding).
//! - [`journal::Journal`]: connections submit changes and get a ticket; one writer thread
//!   writes everything pending as one atomic batch, syncs once (group commit) and completes
//!   the tickets. Acknowledgements wait for their ticket (acknowledge after durable).
//! - [`record`]: the byte layout of every key and value.
//!
//! The broker decides *what* is stored (`broker/durable.rs`); this module knows only bytes,
//! keyspaces and disks. `--in-memory` runs without a store at all: the broker's own
//! structures are then the only state, and nothing waits.

pub mod fjall;
pub mod journal;
pub mod memory;
pub mod record;

use std::path::PathBuf;

// How a committed batch is made durable is a setting (`store.fsync`): it is defined with the
// configuration, which knows nothing of the store.
pub use crate::config::Fsync;

/// The keyspaces. Each holds one kind of record (see [`record`] for the layouts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Space {
    /// Store-wide values: the boot counter.
    Meta,
    /// Persistent sessions by session id: client id, protocol, expiry, subscriptions.
    Sessions,
    /// Each persistent session's acknowledgement state: a watermark and the sequence
    /// numbers done above it.
    Acks,
    /// QoS 1/2 messages by message id, with the sessions they are queued for.
    Messages,
    /// Outbound QoS 2 deliveries that have a packet id: (session, sequence) -> id and stage.
    Stages,
    /// Inbound QoS 2 packet ids received and not yet released: (session, packet id).
    Inbound,
    /// Retained messages by tenant and topic.
    Retained,
    /// Wills of open connections by session id, published after a crash.
    Wills,
    /// The HTTP API's idempotency keys: what each request published, until its window ends.
    Idempotency,
    /// Tenants' own settings set through the admin API, by tenant name (a tenants file's
    /// are read from the file, not stored). A store made before it existed opens with it
    /// empty.
    Tenants,
    /// A clustered node's place in the cluster's stream: where to catch up from after a
    /// restart, and the messages past it already stored here. Empty on a node of its own.
    Cluster,
}

impl Space {
    /// Every keyspace.
    pub const ALL: [Space; 11] = [
        Space::Meta,
        Space::Sessions,
        Space::Acks,
        Space::Messages,
        Space::Stages,
        Space::Inbound,
        Space::Retained,
        Space::Wills,
        Space::Idempotency,
        Space::Tenants,
        Space::Cluster,
    ];

    /// The keyspace's name on disk and in errors.
    pub fn name(self) -> &'static str {
        match self {
            Space::Meta => "meta",
            Space::Sessions => "sessions",
            Space::Acks => "acks",
            Space::Messages => "messages",
            Space::Stages => "stages",
            Space::Inbound => "inbound",
            Space::Retained => "retained",
            Space::Wills => "wills",
            Space::Idempotency => "idempotency",
            Space::Tenants => "tenants",
            Space::Cluster => "cluster",
        }
    }
}

/// One change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Sets `key` to `value`.
    Put(Space, Vec<u8>, Vec<u8>),
    /// Sets a key that did not exist before this change (a new message): a `Delete` of it in
    /// the same batch cancels both, so a message written and consumed between two commits
    /// costs the disk nothing.
    Create(Space, Vec<u8>, Vec<u8>),
    /// Removes `key`.
    Delete(Space, Vec<u8>),
}

impl Op {
    /// The keyspace and key it changes.
    pub fn key(&self) -> (Space, &[u8]) {
        match self {
            Op::Put(s, k, _) | Op::Create(s, k, _) | Op::Delete(s, k) => (*s, k),
        }
    }

    /// Bytes it carries (for batch sizing).
    pub fn len(&self) -> usize {
        match self {
            Op::Put(_, k, v) | Op::Create(_, k, v) => k.len() + v.len(),
            Op::Delete(_, k) => k.len(),
        }
    }

    /// Whether it carries no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The data directory is held by another process.
    #[error(
        "the data directory {dir} is in use by another Herald process (only one node may open \
         it); stop that process or give this one another --data-dir"
    )]
    Locked {
        /// The directory.
        dir: PathBuf,
    },
    /// The storage engine failed to open or to write.
    #[error(
        "the store in {dir} cannot be used: {message}. The data may be damaged: keep a copy \
         of the directory, then restore a backup, or move it aside (or start with another \
         --data-dir) to start empty, or run with --in-memory"
    )]
    Engine {
        /// The directory.
        dir: PathBuf,
        /// What the engine said.
        message: String,
    },
    /// A record does not decode.
    #[error(
        "damaged record in the store ({space} keyspace, key {key}): {message}. Keep a copy of \
         the data directory, then restore a backup, or move it aside (or start with another \
         --data-dir) to start empty, or run with --in-memory"
    )]
    Damaged {
        /// The keyspace.
        space: &'static str,
        /// The key, in hexadecimal.
        key: String,
        /// What is wrong.
        message: record::DecodeError,
    },
    /// The store was closed, or a write failed before.
    #[error("the store is closed after an earlier failure")]
    Closed,
}

/// What a scan calls with each key and value; an error stops the scan.
pub type Visit<'a> = dyn FnMut(&[u8], &[u8]) -> Result<(), StoreError> + 'a;

/// An ordered key-value store with keyspaces and atomic batches.
///
/// Writes happen only through [`journal::Journal`] (one writer thread); reads happen at
/// start, before any connection is accepted.
pub trait Store: Send + Sync + std::fmt::Debug {
    /// Applies `ops` atomically: after a crash either all of them are there or none. With
    /// `sync`, returns only once they are on stable storage; without, once the operating
    /// system has them.
    fn apply(&self, ops: &[Op], sync: bool) -> Result<(), StoreError>;

    /// Calls `f` with every key and value of `space`, in key order.
    fn scan(&self, space: Space, f: &mut Visit<'_>) -> Result<(), StoreError>;

    /// Bytes the store takes on disk (0 for memory).
    fn disk_bytes(&self) -> u64;
}
