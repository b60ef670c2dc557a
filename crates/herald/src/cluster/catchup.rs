//! Catching up after NATS was lost: the QoS 1/2 messages the cluster's stream kept while
//! this node's connection was down (or before its subscriptions were back) are read from
//! the stream and routed here, each once.
//!
//! Every QoS 1/2 message reaches the node republished by the stream with its sequence
//! (`Nats-Sequence`); the node remembers the highest it routed. When the connection drops,
//! a gap opens at that sequence: from then on every message past it that is routed is
//! claimed, whether it arrives live or from the stream. Once NATS is back (the client has
//! subscribed again by then) and a moment has passed for the subscriptions to reach every
//! server of a NATS cluster, the node reads the stream from the gap to its last message at
//! that time with an ordered consumer and routes what is not yet claimed: messages after
//! that are the live subscriptions'. The gap stays open a little longer for messages still
//! queued in the client, then closes.
//!
//! The gap must open at the highest sequence routed *before* the connection dropped:
//! NATS's event for it arrives on a task of its own, maybe after messages from the new
//! connection were routed (whose sequences are past the missed ones). So the readers open
//! it themselves: the client counts its connections before it reads from a new one, and a
//! message read after the count changed opens the gap before it is routed (`claim`). A
//! gap closes only if no connection was made since its catching up began.
//!
//! Shared groups are not caught up: while the node was away NATS gave their messages to the
//! groups' members on other nodes, if any.
//!
//! **After a restart** (a crash included), with a store: every second the node writes down
//! where its gap would start (`after`: the highest sequence routed a second before, so that
//! messages still queued in the client then are routed by now), and a message stored here
//! for a session is written with its sequence (`seen/<seq>`, in the same atomic write as the
//! message). While a gap is open (not caught up yet) what is written down stays at its
//! start. When the node starts again it opens the gap at `after`, already claiming the
//! sequences seen past it, and catches up as after a lost connection: its persistent
//! sessions get what was published while it was down, and nothing they already had.
//! A node joining for the first time starts at the stream's end.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::Cluster;
use super::durable::stream_name;
use crate::broker::Broker;
use crate::store::{Op, Space};

/// The key of the gap's start in the store's `cluster` keyspace.
const AFTER: &[u8] = b"after";

/// The prefix of the keys of messages stored past it.
const SEEN: &[u8] = b"seen/";

/// How often the gap's start is written down.
const CHECKPOINT: Duration = Duration::from_secs(1);

/// The record that a message with sequence `seq` was stored here.
pub(super) fn seen_op(seq: u64) -> Op {
    Op::Put(
        Space::Cluster,
        [SEEN, &seq.to_be_bytes()].concat(),
        Vec::new(),
    )
}

/// How long after NATS is back the stream's last sequence is read (the subscriptions made
/// again reach the other servers of a NATS cluster meanwhile).
const SETTLE: Duration = Duration::from_secs(1);

/// How long the gap stays open after the stream was read, for live messages still queued.
const LINGER: Duration = Duration::from_secs(2);

/// How long reading the stream may wait for its next message before it is begun again.
const STALLED: Duration = Duration::from_secs(5);

/// The sequences routed here and the gap being caught up.
#[derive(Debug, Default)]
pub struct Gap {
    /// The highest stream sequence routed here.
    pub(super) routed: AtomicU64,
    /// Whether a gap is open (fast path for the live messages).
    open: AtomicBool,
    state: Mutex<GapState>,
    /// Messages read from the stream and routed here.
    pub caught_up: AtomicU64,
    /// Messages the stream no longer had when it was read (older than its limits).
    pub lost: AtomicU64,
    /// Sequences written down as stored here since the last checkpoint.
    written: Mutex<Vec<u64>>,
    /// The NATS connection (the client's count of them) the gap last followed: a message
    /// read on a later one opens the gap.
    connection: AtomicU64,
}

#[derive(Debug, Default)]
struct GapState {
    /// The gap starts after this sequence.
    after: u64,
    /// Sequences past `after` routed since the gap opened.
    claimed: HashSet<u64>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Gap {
    /// Whether the message with sequence `seq`, read on NATS connection number
    /// `connection` (the client's count), is to be routed (it was not yet).
    pub(super) fn claim(&self, seq: u64, connection: u64) -> bool {
        if self.connection.load(Ordering::Acquire) != connection {
            self.reconnected(connection);
        }
        self.routed.fetch_max(seq, Ordering::Relaxed);
        if !self.open.load(Ordering::Acquire) {
            return true;
        }
        let mut state = lock(&self.state);
        if !self.open.load(Ordering::Acquire) || seq <= state.after {
            return true;
        }
        state.claimed.insert(seq)
    }

    /// A message came on a new connection: the gap opens at the highest sequence routed
    /// before it (from the connection that dropped), unless open already.
    fn reconnected(&self, connection: u64) {
        let mut state = lock(&self.state);
        if self.connection.swap(connection, Ordering::AcqRel) == connection {
            return;
        }
        if !self.open.load(Ordering::Acquire) {
            state.after = self.routed.load(Ordering::Relaxed);
            state.claimed.clear();
            self.open.store(true, Ordering::Release);
        }
    }

    /// Starts following connection number `connection` (at join).
    pub(super) fn follow_connection(&self, connection: u64) {
        self.connection.store(connection, Ordering::Release);
    }

    /// The connection the gap follows.
    fn connection(&self) -> u64 {
        self.connection.load(Ordering::Acquire)
    }

    /// Notes that the message with sequence `seq` was written down as stored here.
    pub(super) fn stored(&self, seq: u64) {
        lock(&self.written).push(seq);
    }

    /// Opens the gap at `after` (a restart), the sequences in `seen` already routed.
    fn restore(&self, after: u64, seen: HashSet<u64>) {
        let mut state = lock(&self.state);
        self.routed.fetch_max(after, Ordering::Relaxed);
        state.after = after;
        state.claimed = seen;
        self.open.store(true, Ordering::Release);
    }

    /// Opens the gap at the highest sequence routed (NATS was lost); an open gap keeps its
    /// start.
    fn open(&self) {
        let mut state = lock(&self.state);
        if !self.open.load(Ordering::Acquire) {
            state.after = self.routed.load(Ordering::Relaxed);
            state.claimed.clear();
            self.open.store(true, Ordering::Release);
        }
    }

    /// Where the open gap starts.
    pub(super) fn after(&self) -> Option<u64> {
        self.open
            .load(Ordering::Acquire)
            .then(|| lock(&self.state).after)
    }

    /// Closes the gap, unless a connection was made since `connection` (its own gap, opened
    /// meanwhile, is still to be caught up).
    fn close(&self, connection: u64) -> bool {
        let mut state = lock(&self.state);
        if self.connection() != connection {
            return false;
        }
        self.open.store(false, Ordering::Release);
        state.claimed = HashSet::new();
        true
    }
}

/// Follows the main NATS connection's events: a disconnection opens the gap, a
/// reconnection catches it up (and has the client registry's claims checked).
pub(super) async fn follow(
    cluster: Arc<Cluster>,
    broker: Weak<Broker>,
    mut events: mpsc::UnboundedReceiver<async_nats::Event>,
) {
    while let Some(event) = events.recv().await {
        match event {
            async_nats::Event::Disconnected => cluster.gap.open(),
            async_nats::Event::Connected => {
                // Client ids claimed elsewhere while this node could not hear of it.
                if let Some(b) = broker.upgrade() {
                    let c = cluster.clone();
                    tokio::spawn(async move { super::registry::verify(&c, &b).await });
                }
                if cluster.gap.after().is_none() {
                    continue;
                }
                // Tried until it succeeds while NATS stays up (the stream may be electing a
                // leader after a NATS server died); lost again, the next reconnection does.
                let mut wait = SETTLE;
                loop {
                    tokio::time::sleep(wait).await;
                    if !cluster.connected() {
                        break; // the next Connected event catches up
                    }
                    // The connection this catching up covers: the stream is read after it
                    // was made, so it has everything missed before it.
                    let connection = cluster.nats_connection();
                    cluster.gap.reconnected(connection);
                    match catch_up(&cluster, &broker, connection).await {
                        Ok(n) => {
                            tracing::info!(messages = n, "caught up with the cluster's stream");
                            tokio::time::sleep(LINGER).await;
                            if cluster.gap.close(connection) {
                                break;
                            }
                            // Another connection since: its gap is caught up too.
                            wait = SETTLE;
                        }
                        Err(error) => {
                            tracing::warn!(%error, "could not catch up with the cluster's stream yet");
                            wait = (wait * 2).min(Duration::from_secs(10));
                        }
                    }
                }
            }
            async_nats::Event::SlowConsumer(sid) => {
                // The client dropped messages of a subscription whose reader fell behind.
                tracing::warn!(
                    subscription = sid,
                    "NATS messages dropped by the client: a reader fell behind"
                );
                cluster.stats.dropped_in.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
    }
}

/// Where this node left the stream: with a store that says (a restart), the gap opens there
/// and `true` is returned (catch up once subscribed); else the node starts at the stream's
/// end.
pub(super) async fn resume(cluster: &Cluster, broker: &Broker) -> bool {
    let mut after = None;
    let mut seen = HashSet::new();
    let read = broker.persist.scan(Space::Cluster, &mut |key, value| {
        if key == AFTER {
            after = value.try_into().ok().map(u64::from_be_bytes);
        } else if let Some(seq) = key.strip_prefix(SEEN)
            && let Ok(seq) = seq.try_into()
        {
            seen.insert(u64::from_be_bytes(seq));
        }
        Ok(())
    });
    if let Err(error) = read {
        tracing::warn!(%error, "cannot read where this node left the cluster's stream");
    }
    if let Some(after) = after {
        tracing::info!(
            after,
            seen = seen.len(),
            "catching up with the cluster's stream from where this node left it"
        );
        cluster.gap.restore(after, seen);
        return true;
    }
    let Some(js) = &cluster.js else {
        return false;
    };
    if let Ok(mut stream) = js.get_stream(stream_name(&cluster.prefix)).await
        && let Ok(info) = stream.info().await
    {
        cluster
            .gap
            .routed
            .fetch_max(info.state.last_sequence, Ordering::Relaxed);
    }
    false
}

/// Writes down, every second, where the gap would start after a restart: the highest
/// sequence routed a second before (or an open gap's start, if lower), and forgets the
/// messages stored up to it.
pub(super) async fn checkpoint(cluster: Arc<Cluster>, broker: Weak<Broker>) {
    let mut ticks = tokio::time::interval(CHECKPOINT);
    let mut last = None;
    let mut before = cluster.gap.routed.load(Ordering::Relaxed);
    loop {
        ticks.tick().await;
        let Some(broker) = broker.upgrade() else {
            return;
        };
        if !broker.persist.is_stored() {
            return;
        }
        let now = cluster.gap.routed.load(Ordering::Relaxed);
        // Never past an open gap's start: the messages missed in it are not caught up yet
        // (a restart now must still read them from the stream).
        let after = match cluster.gap.after() {
            Some(start) => before.min(start),
            None => before,
        };
        before = now;
        let forget: Vec<u64> = {
            let mut written = lock(&cluster.gap.written);
            let (old, kept) = written.drain(..).partition(|&s| s <= after);
            *written = kept;
            old
        };
        if last == Some(after) && forget.is_empty() {
            continue;
        }
        last = Some(after);
        let ops = std::iter::once(Op::Put(
            Space::Cluster,
            AFTER.to_vec(),
            after.to_be_bytes().to_vec(),
        ))
        .chain(
            forget
                .into_iter()
                .map(|s| Op::Delete(Space::Cluster, [SEEN, &s.to_be_bytes()].concat())),
        );
        broker.persist.submit(ops);
    }
}

/// Reads the stream from the gap to its last message now and routes what was not routed.
async fn catch_up(
    cluster: &Cluster,
    broker: &Weak<Broker>,
    connection: u64,
) -> Result<u64, String> {
    let Some(after) = cluster.gap.after() else {
        return Ok(0);
    };
    let mut routed = 0;
    let missing = read_stream(cluster, after + 1, |seq, message| {
        let Some(broker) = broker.upgrade() else {
            return false;
        };
        if cluster.gap.claim(seq, connection)
            && cluster.route(&broker, message, None, true, Some(seq))
        {
            routed += 1;
            cluster.gap.caught_up.fetch_add(1, Ordering::Relaxed);
        }
        true
    })
    .await?;
    if missing > 0 {
        cluster.gap.lost.fetch_add(missing, Ordering::Relaxed);
        tracing::warn!(
            lost = missing,
            "the cluster's stream no longer has messages this node missed (past \
             cluster.message_max_age_secs or message_max_bytes)"
        );
    }
    Ok(routed)
}

/// Reads the cluster's stream from sequence `from` to its last message now (an ordered
/// consumer on `<prefix>.j.>`), handing each message and its sequence to `each` (`false`:
/// stop). Returns how many messages from `from` on the stream no longer has (its age and
/// size limits). A consumer that stops delivering for `STALLED` is an error.
pub(super) async fn read_stream(
    cluster: &Cluster,
    from: u64,
    mut each: impl FnMut(u64, &async_nats::Message) -> bool,
) -> Result<u64, String> {
    use async_nats::jetstream::consumer::{DeliverPolicy, pull};
    let Some(js) = &cluster.js else {
        return Ok(0);
    };
    let mut stream = js
        .get_stream(stream_name(&cluster.prefix))
        .await
        .map_err(|e| e.to_string())?;
    let state = stream
        .info()
        .await
        .map_err(|e| e.to_string())?
        .state
        .clone();
    let end = state.last_sequence;
    let missing = state.first_sequence.saturating_sub(from.max(1));
    if end < from {
        return Ok(missing);
    }
    let consumer = stream
        .create_consumer(pull::OrderedConfig {
            filter_subject: format!("{}.j.>", cluster.prefix),
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: from,
            },
            ..Default::default()
        })
        .await
        .map_err(|e| e.to_string())?;
    let mut messages = consumer.messages().await.map_err(|e| e.to_string())?;
    let mut read = 0u64;
    loop {
        let next = tokio::time::timeout(STALLED, messages.next()).await;
        let message = match next {
            Ok(Some(message)) => message.map_err(|e| e.to_string())?,
            Ok(None) => return Err("the stream's consumer ended".into()),
            Err(_) => {
                return Err(format!(
                    "the stream stopped delivering after {read} messages"
                ));
            }
        };
        let seq = message.info().map_err(|e| e.to_string())?.stream_sequence;
        if seq > end {
            break;
        }
        read += 1;
        if !each(seq, &message.message) || seq == end {
            break;
        }
    }
    Ok(missing)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_is_routed_once_across_the_gap() {
        let gap = Gap::default();
        assert!(
            gap.claim(1, 0) && gap.claim(2, 0),
            "no gap: every message goes"
        );
        assert!(gap.claim(2, 0), "without a gap nothing is remembered");
        gap.open();
        assert_eq!(gap.after(), Some(2));
        assert!(gap.claim(2, 0), "before the gap: not claimed");
        assert!(gap.claim(4, 0), "live first");
        assert!(!gap.claim(4, 0), "then not from the stream");
        assert!(gap.claim(3, 0), "from the stream first");
        assert!(!gap.claim(3, 0), "then not live");
        gap.open();
        assert_eq!(gap.after(), Some(2), "an open gap keeps its start");
        assert!(gap.close(0));
        assert_eq!(gap.after(), None);
        gap.open();
        assert_eq!(
            gap.after(),
            Some(4),
            "the next gap starts at the highest routed"
        );
    }

    #[test]
    fn a_message_from_a_new_connection_opens_the_gap_before_it() {
        let gap = Gap::default();
        gap.follow_connection(1);
        assert!(gap.claim(10, 1));
        assert_eq!(gap.after(), None);
        // NATS's Disconnected event has not been seen yet: the reader opens the gap at the
        // last sequence of the old connection, before routing the new one's first message.
        assert!(gap.claim(15, 2));
        assert_eq!(gap.after(), Some(10));
        assert!(!gap.claim(15, 2), "claimed");
        assert!(gap.claim(12, 2), "missed, caught up from the stream");
        // A connection made while the gap was being caught up keeps it open.
        assert!(gap.claim(20, 3));
        assert!(!gap.close(2), "connection 3 came since");
        assert_eq!(gap.after(), Some(10));
        assert!(gap.close(3));
        assert_eq!(gap.after(), None);
    }
}
