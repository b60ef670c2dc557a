//! QoS 1/2 across nodes: a message is acknowledged to its publisher once it is kept where
//! the other nodes deliver it from.
//!
//! That place is a JetStream stream (`<prefix>-messages`, `cluster.replicas` copies on the
//! NATS servers), not the nodes that subscribe: a node may die, or be cut off from NATS,
//! between receiving a message and writing it down, and the publisher's node does not know
//! which nodes will want it. The publishing node sends each QoS 1/2 message to the stream's
//! subject (`<prefix>.j.<tenant>.<levels>`), and its publisher's PUBACK/PUBREC (or the HTTP
//! API's answer) waits for the stream's acknowledgement as it waits for the node's own store
//! (`Peers::poll_confirmed`). The stream then republishes what it stored to the message
//! subject (`<prefix>.m.…`) the nodes subscribe to, with its sequence in a header: one
//! message from the publishing node serves both durability and delivery, and delivery
//! comes after durability. A node that lost messages (its NATS connection dropped) catches
//! up from the stream by sequence.
//!
//! The stream is written in the order messages were published; a message whose write fails
//! (NATS unreachable, a timeout) is written again until the stream takes it, under the
//! same message id (`Nats-Msg-Id`) so that the stream keeps one copy. Acknowledgements wait
//! meanwhile: at most `cluster.max_unconfirmed` messages; past it new QoS 1/2 messages are
//! refused (0x97, HTTP 429), never dropped after being acknowledged.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::sync::mpsc;

use crate::config::ClusterConfig;

/// Stream writes waiting for their acknowledgement at most (the rest wait their turn).
const IN_FLIGHT: usize = 4096;

/// How long one stream write waits for its acknowledgement before it is written again.
const ACK_WAIT: Duration = Duration::from_secs(5);

/// The first wait before a failed write is tried again (doubled up to a second).
const RETRY_FIRST: Duration = Duration::from_millis(20);

/// The name of the cluster's message stream.
pub fn stream_name(prefix: &str) -> String {
    format!("{}-messages", prefix.replace('.', "_"))
}

/// Makes (or finds) the cluster's message stream: what is sent to `<prefix>.j.>` is kept
/// and republished to `<prefix>.m.>`.
pub(super) async fn stream(
    js: &async_nats::jetstream::Context,
    config: &ClusterConfig,
) -> Result<(), String> {
    use async_nats::jetstream::stream;
    let prefix = &config.subject_prefix;
    let wanted = stream::Config {
        name: stream_name(prefix),
        description: Some("Herald: QoS 1/2 messages between nodes".into()),
        subjects: vec![format!("{prefix}.j.>")],
        republish: Some(stream::Republish {
            source: format!("{prefix}.j.>"),
            destination: format!("{prefix}.m.>"),
            headers_only: false,
        }),
        retention: stream::RetentionPolicy::Limits,
        discard: stream::DiscardPolicy::Old,
        max_age: Duration::from_secs(config.message_max_age_secs),
        max_bytes: i64::try_from(config.message_max_bytes).unwrap_or(i64::MAX),
        num_replicas: config.replicas,
        duplicate_window: Duration::from_secs(120),
        storage: stream::StorageType::File,
        ..Default::default()
    };
    let mut found = js
        .get_or_create_stream(wanted.clone())
        .await
        .map_err(|e| e.to_string())?;
    let info = found.info().await.map_err(|e| e.to_string())?;
    if info.config.num_replicas != wanted.num_replicas {
        tracing::warn!(
            stream = %wanted.name,
            replicas = info.config.num_replicas,
            configured = wanted.num_replicas,
            "the cluster's message stream exists with another replica count; it is kept as it is"
        );
    }
    Ok(())
}

/// A QoS 1/2 message on its way to the stream.
pub(super) struct Pending {
    /// Its confirmation number.
    pub n: u64,
    /// The stream's subject for it.
    pub subject: String,
    /// The envelope.
    pub bytes: Bytes,
    /// The message: told its stream sequence once the stream acknowledges it.
    pub message: std::sync::Arc<crate::broker::message::Message>,
}

/// The confirmations the publishers' acknowledgements wait for: numbered in the order the
/// messages were handed over, confirmed in any order, reached once every number up to it
/// is confirmed.
#[derive(Debug, Default)]
pub struct Confirmations {
    /// The last number handed out.
    issued: AtomicU64,
    /// Every number up to this one is confirmed.
    reached: AtomicU64,
    /// Confirmed numbers past `reached`.
    ahead: Mutex<BTreeSet<u64>>,
    /// Tasks waiting for a number.
    waiters: Mutex<Vec<(u64, Waker)>>,
    /// Numbers handed out and not yet confirmed.
    waiting: AtomicUsize,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Confirmations {
    /// A new number to wait for.
    pub(super) fn issue(&self) -> u64 {
        self.waiting.fetch_add(1, Ordering::Relaxed);
        self.issued.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// The last number handed out.
    pub fn issued(&self) -> u64 {
        self.issued.load(Ordering::Relaxed)
    }

    /// Numbers handed out and not confirmed.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Every number up to this one is confirmed.
    pub fn reached(&self) -> u64 {
        self.reached.load(Ordering::Acquire)
    }

    /// Confirms `n`; wakes whoever waits for a number now reached.
    pub(super) fn confirm(&self, n: u64) {
        self.waiting.fetch_sub(1, Ordering::Relaxed);
        let reached = {
            let mut ahead = lock(&self.ahead);
            let mut reached = self.reached.load(Ordering::Acquire);
            if n != reached + 1 {
                ahead.insert(n);
                return;
            }
            reached = n;
            while ahead.remove(&(reached + 1)) {
                reached += 1;
            }
            self.reached.store(reached, Ordering::Release);
            reached
        };
        let ready: Vec<Waker> = {
            let mut waiters = lock(&self.waiters);
            let mut ready = Vec::new();
            waiters.retain(|(m, w)| {
                if *m <= reached {
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
    }

    /// Whether `n` is reached; if not, `cx`'s task is woken once it is.
    pub fn poll(&self, n: u64, cx: &Context<'_>) -> Poll<()> {
        if self.reached() >= n {
            return Poll::Ready(());
        }
        {
            let mut waiters = lock(&self.waiters);
            // A task polled again while it waits is registered once.
            if !waiters
                .iter()
                .any(|(m, w)| *m == n && w.will_wake(cx.waker()))
            {
                waiters.push((n, cx.waker().clone()));
            }
        }
        // `confirm` advances `reached` before it takes the waiters: checked again after
        // registering, a confirmation that raced with the registration is not missed.
        if self.reached() >= n {
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

/// What the stream writer counts.
#[derive(Debug, Default)]
pub struct DurableStats {
    /// Messages the stream acknowledged.
    pub stored: AtomicU64,
    /// Writes tried again (failed or unacknowledged in time).
    pub retries: AtomicU64,
    /// The highest stream sequence acknowledged to this node.
    pub last_seq: AtomicU64,
}

/// Writes the queued QoS 1/2 messages to the stream, many acknowledgements outstanding at
/// once; each confirmed as the stream acknowledges it, each failed one written again after a
/// pause (growing to a second) until the stream takes it.
pub(super) async fn write(
    js: async_nats::jetstream::Context,
    node: String,
    confirmations: std::sync::Arc<Confirmations>,
    stats: std::sync::Arc<DurableStats>,
    mut rx: mpsc::UnboundedReceiver<Pending>,
) {
    // Message ids name this run of this node, so that a restarted node's numbers do not
    // collide with its last run's in the stream's duplicate window.
    let run = crate::broker::durable::unix_ms();
    let mut acks = FuturesUnordered::new();
    let attempt = |pending: Pending, delay: Option<Duration>| {
        let js = js.clone();
        let id = format!("{node}.{run}.{}", pending.n);
        async move {
            if let Some(delay) = delay {
                tokio::time::sleep(delay).await;
            }
            let message = async_nats::jetstream::message::PublishMessage::build()
                .payload(pending.bytes.clone())
                .message_id(&id);
            let result = match js.send_publish(pending.subject.clone(), message).await {
                Ok(ack) => tokio::time::timeout(ACK_WAIT, ack.into_future())
                    .await
                    .map_err(|_| "no acknowledgement in time".to_string())
                    .and_then(|r| r.map_err(|e| e.to_string())),
                Err(e) => Err(e.to_string()),
            };
            (pending, delay, result)
        }
    };
    let mut open = true;
    while open || !acks.is_empty() {
        tokio::select! {
            next = rx.recv(), if open && acks.len() < IN_FLIGHT => match next {
                Some(pending) => acks.push(attempt(pending, None)),
                None => open = false,
            },
            Some((pending, delay, result)) = acks.next() => match result {
                Ok(ack) => {
                    stats.stored.fetch_add(1, Ordering::Relaxed);
                    stats.last_seq.fetch_max(ack.sequence, Ordering::Relaxed);
                    pending.message.ident.set_at(crate::broker::message::At::Seq(ack.sequence));
                    confirmations.confirm(pending.n);
                }
                Err(error) => {
                    stats.retries.fetch_add(1, Ordering::Relaxed);
                    let delay = delay.map_or(RETRY_FIRST, |d| (d * 2).min(Duration::from_secs(1)));
                    if delay == RETRY_FIRST {
                        tracing::warn!(%error, "a QoS 1/2 message for other nodes was not kept by the stream; writing it again");
                    }
                    acks.push(attempt(pending, Some(delay)));
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_number_is_reached_once_every_one_before_it_is_confirmed() {
        let c = Confirmations::default();
        let ns: Vec<u64> = (0..5).map(|_| c.issue()).collect();
        assert_eq!(ns, [1, 2, 3, 4, 5]);
        assert_eq!(c.waiting(), 5);
        c.confirm(2);
        c.confirm(3);
        assert_eq!(c.reached(), 0, "1 is not confirmed");
        c.confirm(1);
        assert_eq!(c.reached(), 3);
        c.confirm(5);
        assert_eq!(c.reached(), 3);
        c.confirm(4);
        assert_eq!(c.reached(), 5);
        assert_eq!(c.waiting(), 0);
    }

    #[test]
    fn a_waiter_is_woken_when_its_number_is_reached() {
        use std::sync::Arc;
        use std::sync::atomic::AtomicUsize;
        struct Count(AtomicUsize);
        impl std::task::Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::Relaxed);
            }
        }
        let c = Confirmations::default();
        let a = c.issue();
        let b = c.issue();
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let cx = Context::from_waker(&waker);
        assert!(c.poll(b, &cx).is_pending());
        assert!(c.poll(b, &cx).is_pending(), "registered once");
        assert_eq!(lock(&c.waiters).len(), 1);
        c.confirm(b);
        assert_eq!(count.0.load(Ordering::Relaxed), 0, "a is not confirmed");
        c.confirm(a);
        assert_eq!(count.0.load(Ordering::Relaxed), 1);
        assert!(c.poll(b, &cx).is_ready());
    }
}
