//! Group commit: many connections' changes, one atomic batch, one fsync.
//!
//! A connection submits the ops of one change (a publication, a subscription, an
//! acknowledgement) and gets a ticket. One writer thread takes everything submitted since
//! its last commit, writes it as one atomic batch, syncs once, marks the highest ticket in it
//! durable and wakes the connections waiting for a ticket at or below it. While one batch is
//! being synced the next one collects: under load, the cost of an fsync is shared by every
//! change that arrived during the previous one.
//!
//! A submission is never split between two batches, so the ops of one change (a message, its
//! retained copy and the publisher's QoS 2 packet id) are on disk together or not at all.
//! Within a batch only the last op on a key is written, and a key created and deleted in the
//! same batch (a message delivered and acknowledged between two commits) is not written at
//! all.
//!
//! A publisher *reserves* its ticket before it routes a message and submits the message's
//! ops under that ticket afterwards: deliveries that must not go out before the message is on
//! disk (QoS 2 to a stored session) wait for the reserved ticket, and `durable` never passes
//! a reserved ticket whose ops have not been written, so waiting for it is waiting for them.
//!
//! Submitters call [`Journal::submit`] while holding the lock of the state the ops describe
//! (a session's lock for its records): the journal's order is then the order in which that
//! state changed. The journal's own lock is a leaf: nothing is locked while it is held.
//!
//! Lock order: docs/architecture.md ("Lock order").

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::thread::JoinHandle;

use super::{Fsync, Op, Space, Store};

/// A submission's place in the journal: durable once [`Journal::durable`] reaches it.
/// Tickets are ordered: one at or below the durable ticket is on disk. [`Ticket::NONE`] is
/// "nothing to wait for" (what an in-memory broker hands out), durable from the start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ticket(u64);

impl Ticket {
    /// Nothing to wait for.
    pub const NONE: Ticket = Ticket(0);

    /// Whether this is [`Ticket::NONE`].
    pub fn is_none(self) -> bool {
        self.0 == 0
    }

    /// The ticket after this one.
    fn next(self) -> Ticket {
        Ticket(self.0 + 1)
    }

    /// The ticket before this one (`NONE` stays `NONE`).
    fn prev(self) -> Ticket {
        Ticket(self.0.saturating_sub(1))
    }

    /// The largest ticket: every ticket is at or below it (a cap that holds nothing back;
    /// the durable ticket of a broker without a store).
    pub const MAX: Ticket = Ticket(u64::MAX);
}

/// The group-commit journal in front of a store.
#[derive(Debug)]
pub struct Journal {
    inner: Arc<Inner>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

#[derive(Debug)]
struct Inner {
    store: Arc<dyn Store>,
    fsync: Fsync,
    pending: Mutex<Pending>,
    /// Signalled when something is submitted or the journal closes.
    work: Condvar,
    /// The highest ticket on disk.
    durable: AtomicU64,
    /// Connections waiting for a ticket, woken once it is durable.
    waiters: Mutex<Vec<(Ticket, Waker)>>,
    /// A write failed: nothing is acknowledged any more.
    failed: AtomicBool,
    stats: JournalStats,
}

#[derive(Debug, Default)]
struct Pending {
    ops: Vec<Op>,
    /// The end (in `ops`) and ticket of each submission, for `fsync = "always"`.
    submissions: Vec<(usize, Ticket)>,
    /// The last ticket handed out.
    last: Ticket,
    /// Tickets reserved and not yet submitted, oldest first.
    reserved: Vec<Ticket>,
    closing: bool,
}

/// What the writer has done, for logs, metrics and benchmarks.
#[derive(Debug)]
pub struct JournalStats {
    /// Batches committed.
    pub batches: AtomicU64,
    /// Ops submitted.
    pub submitted_ops: AtomicU64,
    /// Ops written after elision.
    pub written_ops: AtomicU64,
    /// Bytes written (keys and values).
    pub written_bytes: AtomicU64,
    /// Time to write one batch, fsync included, seconds.
    pub write_seconds: crate::metrics::Histogram,
    /// Changes per batch.
    pub batch_ops: crate::metrics::Histogram,
}

impl Default for JournalStats {
    fn default() -> Self {
        JournalStats {
            batches: AtomicU64::new(0),
            submitted_ops: AtomicU64::new(0),
            written_ops: AtomicU64::new(0),
            written_bytes: AtomicU64::new(0),
            write_seconds: crate::metrics::Histogram::new(crate::metrics::WRITE_SECONDS),
            batch_ops: crate::metrics::Histogram::new(crate::metrics::BATCH_OPS),
        }
    }
}

impl Journal {
    /// Starts the writer thread in front of `store`.
    pub fn start(store: Arc<dyn Store>, fsync: Fsync) -> Journal {
        let inner = Arc::new(Inner {
            store,
            fsync,
            pending: Mutex::new(Pending::default()),
            work: Condvar::new(),
            durable: AtomicU64::new(0),
            waiters: Mutex::new(Vec::new()),
            failed: AtomicBool::new(false),
            stats: JournalStats::default(),
        });
        let writer = {
            let inner = inner.clone();
            std::thread::Builder::new()
                .name("herald-journal".into())
                .spawn(move || inner.run())
                .ok()
        };
        if writer.is_none() {
            tracing::error!("cannot start the store's writer thread; nothing will be acknowledged");
            inner.failed.store(true, Ordering::Release);
        }
        Journal {
            inner,
            writer: Mutex::new(writer),
        }
    }

    /// Submits the ops of one change; they are written together. Returns the ticket to wait
    /// for (see [`Journal::poll_durable`]).
    pub fn submit(&self, ops: impl IntoIterator<Item = Op>) -> Ticket {
        let mut p = lock(&self.inner.pending);
        let before = p.ops.len();
        p.ops.extend(ops);
        if p.ops.len() == before {
            return p.last;
        }
        p.last = p.last.next();
        let ticket = p.last;
        self.close_submission(p, before, ticket);
        ticket
    }

    /// Reserves the next ticket for ops submitted later with [`Journal::submit_reserved`].
    /// Until then no later ticket becomes durable: submit (even nothing) promptly.
    pub fn reserve(&self) -> Ticket {
        let mut p = lock(&self.inner.pending);
        p.last = p.last.next();
        let ticket = p.last;
        p.reserved.push(ticket);
        ticket
    }

    /// Submits the ops of a reserved ticket (possibly none).
    pub fn submit_reserved(&self, ticket: Ticket, ops: impl IntoIterator<Item = Op>) {
        let mut p = lock(&self.inner.pending);
        let before = p.ops.len();
        p.ops.extend(ops);
        if let Some(pos) = p.reserved.iter().position(|t| *t == ticket) {
            p.reserved.remove(pos);
        }
        self.close_submission(p, before, ticket);
    }

    /// Records the ops appended since `before` as the submission of `ticket`, and wakes the
    /// writer (it sleeps only when nothing is pending).
    fn close_submission(&self, mut p: MutexGuard<'_, Pending>, before: usize, ticket: Ticket) {
        let added = p.ops.len() - before;
        let end = p.ops.len();
        p.submissions.push((end, ticket));
        let first = p.submissions.len() == 1;
        drop(p);
        self.inner
            .stats
            .submitted_ops
            .fetch_add(added as u64, Ordering::Relaxed);
        if first {
            self.inner.work.notify_one();
        }
    }

    /// The highest ticket on disk.
    pub fn durable(&self) -> Ticket {
        Ticket(self.inner.durable.load(Ordering::Acquire))
    }

    /// Whether `ticket` is on disk, or never will be (the journal failed: check `failed`);
    /// if neither, `cx`'s task is woken once one is true.
    pub fn poll_durable(&self, ticket: Ticket, cx: &Context<'_>) -> Poll<()> {
        if self.durable() >= ticket || self.failed() {
            return Poll::Ready(());
        }
        lock(&self.inner.waiters).push((ticket, cx.waker().clone()));
        // The writer advances `durable` (or sets `failed`) before it takes the waiters:
        // checked again after registering, a change that raced with the registration is
        // not missed.
        if self.durable() >= ticket || self.failed() {
            return Poll::Ready(());
        }
        Poll::Pending
    }

    /// Waits (blocking the thread) until `ticket` is durable or the journal failed. For start
    /// and shutdown, never on a runtime worker.
    pub fn wait_blocking(&self, ticket: Ticket) -> bool {
        while self.durable() < ticket {
            if self.failed() {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        true
    }

    /// Whether a write has failed (acknowledgements have stopped).
    pub fn failed(&self) -> bool {
        self.inner.failed.load(Ordering::Acquire)
    }

    /// Counters.
    pub fn stats(&self) -> &JournalStats {
        &self.inner.stats
    }

    /// The store behind the journal.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// Writes everything pending, then stops the writer. Later submissions are not written.
    pub fn close(&self) {
        lock(&self.inner.pending).closing = true;
        self.inner.work.notify_one();
        if let Some(writer) = lock(&self.writer).take() {
            let _ = writer.join();
        }
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        self.close();
    }
}

impl Inner {
    fn run(&self) {
        // The highest ticket written so far (durable unless a reservation holds it back).
        let mut highest = Ticket::NONE;
        loop {
            let (ops, submissions, cap) = {
                let mut p = lock(&self.pending);
                while p.submissions.is_empty() && !p.closing {
                    p = self.work.wait(p).unwrap_or_else(|e| e.into_inner());
                }
                if p.submissions.is_empty() {
                    return;
                }
                // A ticket reserved before this batch was taken and not yet submitted: nothing
                // from it on may be reported durable yet.
                let cap = p.reserved.first().map_or(Ticket::MAX, |t| t.prev());
                (
                    std::mem::take(&mut p.ops),
                    std::mem::take(&mut p.submissions),
                    cap,
                )
            };
            if self.failed.load(Ordering::Acquire) {
                continue;
            }
            let result = if self.fsync == Fsync::Always {
                self.commit_each(&ops, &submissions, cap, &mut highest)
            } else {
                let last = submissions.iter().map(|s| s.1).max().unwrap_or_default();
                highest = highest.max(last);
                self.commit(elide(ops), self.fsync == Fsync::Batch, highest.min(cap))
            };
            if let Err(e) = result {
                tracing::error!(
                    error = %e,
                    "store write failed: acknowledgements of QoS 1/2 messages and \
                     subscriptions have stopped; restart Herald once the cause is fixed"
                );
                self.failed.store(true, Ordering::Release);
                // Everyone waiting hears it now: a connection answers its client (CONNACK
                // 0x88, DISCONNECT 0x80) instead of waiting for a write that will not come.
                let waiters = std::mem::take(&mut *lock(&self.waiters));
                waiters.into_iter().for_each(|(_, waker)| waker.wake());
            }
        }
    }

    /// `fsync = "always"`: one commit and one sync per submission.
    fn commit_each(
        &self,
        ops: &[Op],
        submissions: &[(usize, Ticket)],
        cap: Ticket,
        highest: &mut Ticket,
    ) -> Result<(), super::StoreError> {
        let mut start = 0;
        for &(end, ticket) in submissions {
            *highest = (*highest).max(ticket);
            self.commit(ops[start..end].to_vec(), true, (*highest).min(cap))?;
            start = end;
        }
        Ok(())
    }

    fn commit(&self, ops: Vec<Op>, sync: bool, ticket: Ticket) -> Result<(), super::StoreError> {
        if !ops.is_empty() {
            let started = std::time::Instant::now();
            self.store.apply(&ops, sync)?;
            self.stats
                .write_seconds
                .observe(started.elapsed().as_secs_f64());
            self.stats.batch_ops.observe(ops.len() as f64);
        }
        // Never backwards (a batch capped by a reservation may follow a higher one).
        let ticket = ticket.max(Ticket(self.durable.load(Ordering::Acquire)));
        let stats = &self.stats;
        stats.batches.fetch_add(1, Ordering::Relaxed);
        stats
            .written_ops
            .fetch_add(ops.len() as u64, Ordering::Relaxed);
        let bytes: usize = ops.iter().map(Op::len).sum();
        stats
            .written_bytes
            .fetch_add(bytes as u64, Ordering::Relaxed);
        self.durable.store(ticket.0, Ordering::Release);
        let ready: Vec<Waker> = {
            let mut waiters = lock(&self.waiters);
            let mut ready = Vec::new();
            waiters.retain(|(t, w)| {
                if *t <= ticket {
                    ready.push(w.clone());
                    false
                } else {
                    true
                }
            });
            ready
        };
        for waker in ready {
            waker.wake();
        }
        Ok(())
    }
}

/// The last op on each key; a key created and deleted within the batch is dropped.
fn elide(ops: Vec<Op>) -> Vec<Op> {
    if ops.len() < 2 {
        return ops;
    }
    enum Last {
        Put(Vec<u8>),
        Create(Vec<u8>),
        Delete,
        /// Created and deleted in this batch: nothing to write.
        Gone,
    }
    let mut last: HashMap<(Space, Vec<u8>), Last> = HashMap::with_capacity(ops.len());
    for op in ops {
        match op {
            Op::Put(s, k, v) => {
                // Putting over a key created in this batch keeps it a creation.
                let entry = last.entry((s, k)).or_insert(Last::Delete);
                *entry = match entry {
                    Last::Create(_) | Last::Gone => Last::Create(v),
                    _ => Last::Put(v),
                };
            }
            Op::Create(s, k, v) => {
                last.insert((s, k), Last::Create(v));
            }
            Op::Delete(s, k) => {
                let entry = last.entry((s, k)).or_insert(Last::Delete);
                *entry = match entry {
                    Last::Create(_) | Last::Gone => Last::Gone,
                    _ => Last::Delete,
                };
            }
        }
    }
    last.into_iter()
        .filter_map(|((s, k), l)| match l {
            Last::Put(v) => Some(Op::Put(s, k, v)),
            Last::Create(v) => Some(Op::Create(s, k, v)),
            Last::Delete => Some(Op::Delete(s, k)),
            Last::Gone => None,
        })
        .collect()
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;

    fn put(k: &str, v: &str) -> Op {
        Op::Put(Space::Sessions, k.into(), v.into())
    }

    fn contents(store: &dyn Store, space: Space) -> Vec<(String, String)> {
        let mut out = Vec::new();
        store
            .scan(space, &mut |k, v| {
                out.push((
                    String::from_utf8_lossy(k).into_owned(),
                    String::from_utf8_lossy(v).into_owned(),
                ));
                Ok(())
            })
            .unwrap();
        out
    }

    #[test]
    fn last_op_per_key_wins_and_created_then_deleted_vanishes() {
        let ops = elide(vec![
            put("a", "1"),
            put("a", "2"),
            Op::Create(Space::Messages, b"m".to_vec(), b"x".to_vec()),
            Op::Delete(Space::Messages, b"m".to_vec()),
            Op::Delete(Space::Sessions, b"b".to_vec()),
            Op::Create(Space::Messages, b"n".to_vec(), b"y".to_vec()),
            Op::Put(Space::Messages, b"n".to_vec(), b"z".to_vec()),
        ]);
        let mut ops: Vec<_> = ops.into_iter().map(|o| format!("{o:?}")).collect();
        ops.sort();
        assert_eq!(ops.len(), 3, "{ops:?}");
        assert!(ops.iter().any(|o| o.contains("Put(Sessions, [97], [50])")));
        assert!(ops.iter().any(|o| o.contains("Delete(Sessions, [98])")));
        assert!(
            ops.iter()
                .any(|o| o.contains("Create(Messages, [110], [122])"))
        );
    }

    #[test]
    fn tickets_become_durable_in_order_for_every_mode() {
        for fsync in [Fsync::Batch, Fsync::Always, Fsync::Never] {
            let store = Arc::new(MemoryStore::new());
            let journal = Journal::start(store.clone(), fsync);
            let mut last = Ticket::NONE;
            for i in 0..100 {
                let t = journal.submit([put(&format!("k{i:03}"), "v")]);
                assert!(t > last, "tickets grow");
                last = t;
            }
            assert_eq!(
                journal.submit([]),
                last,
                "an empty submission has no ticket"
            );
            assert!(journal.wait_blocking(last));
            assert_eq!(contents(&*store, Space::Sessions).len(), 100, "{fsync:?}");
            journal.close();
            let after = journal.submit([put("late", "v")]);
            assert!(after > last);
            std::thread::sleep(std::time::Duration::from_millis(20));
            assert!(journal.durable() < after, "nothing is written after close");
        }
    }

    #[test]
    fn a_reserved_ticket_holds_back_every_later_one() {
        for fsync in [Fsync::Batch, Fsync::Always] {
            let store = Arc::new(MemoryStore::new());
            let journal = Journal::start(store.clone(), fsync);
            let reserved = journal.reserve();
            let later = journal.submit([put("later", "v")]);
            assert!(later > reserved);
            std::thread::sleep(std::time::Duration::from_millis(30));
            assert_eq!(contents(&*store, Space::Sessions).len(), 1, "written");
            assert!(
                journal.durable() < reserved,
                "{fsync:?}: not durable past an unsubmitted reservation"
            );
            journal.submit_reserved(reserved, [put("reserved", "v")]);
            assert!(journal.wait_blocking(later));
            assert_eq!(contents(&*store, Space::Sessions).len(), 2);
            // A reservation released with nothing to write releases the later tickets too.
            let empty = journal.reserve();
            let after = journal.submit([put("after", "v")]);
            journal.submit_reserved(empty, []);
            assert!(journal.wait_blocking(after));
        }
    }

    #[test]
    fn a_waiting_task_is_woken() {
        let store = Arc::new(MemoryStore::new());
        let journal = Arc::new(Journal::start(store, Fsync::Batch));
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            for i in 0..50 {
                let t = journal.submit([put(&format!("{i}"), "v")]);
                std::future::poll_fn(|cx| journal.poll_durable(t, cx)).await;
                assert!(journal.durable() >= t);
            }
        });
    }
}
