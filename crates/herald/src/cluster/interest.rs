//! The node's NATS subscriptions: what its filters need and nothing else.
//!
//! The index tells each filter that gained its first subscriber here or lost its last
//! (`Peers::interest`), in order, down one channel to one task. Each subject a filter maps
//! to is subscribed once, counted per filter that needs it, with a reader task that routes
//! what arrives; the subscription goes with the last filter.
//!
//! **Coarsening.** A NATS subscription costs the node ~7 KB in the client (its channel's first
//! block holds 32 messages of 184 bytes) and a task: a node whose every client subscribes to
//! a topic of its own (`devices/<id>/cmd`) would hold that per client, five times what the
//! connection itself costs. So past `cluster.coarsen_above` direct subjects under one first
//! topic level of a tenant (`devices/...`), the node subscribes to that level's wildcard
//! (`<prefix>.m.<tenant>.devices.>`) instead and lets go of the subjects under it; below half
//! of it again, it goes back to them. Meanwhile it receives everything published under that
//! level and its index keeps what its clients want (traffic for the price of memory). Every
//! subscription of a node is in its queue group, so while both a wildcard and the subjects it
//! covers are subscribed, NATS still hands the node one copy; a subscription let go of routes
//! what it had already received before it ends.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot};

use super::Cluster;
use crate::broker::Broker;

/// An interest change, in the order the index made it: a tenant's filter, for its direct
/// subscribers (no group) or one shared group, present or gone.
pub(super) struct Interest {
    pub tenant: String,
    pub filter: String,
    pub group: Option<String>,
    pub present: bool,
    /// Its confirmation number: confirmed once NATS has the subscription change.
    pub n: u64,
}

/// One NATS subscription's reader task.
struct Reader {
    task: tokio::task::JoinHandle<()>,
    retire: Option<oneshot::Sender<()>>,
}

impl Reader {
    /// Subscribes `subject` in `queue` on `client` and starts routing what arrives (`route`:
    /// a shared group's filter and name).
    async fn start(
        cluster: &Arc<Cluster>,
        broker: &std::sync::Weak<Broker>,
        client: &async_nats::Client,
        (queue, subject): (&str, &str),
        route: Option<(String, String)>,
    ) -> Option<Reader> {
        let sub = match client
            .queue_subscribe(subject.to_string(), queue.to_string())
            .await
        {
            Ok(sub) => sub,
            Err(e) => {
                tracing::warn!(%subject, error = %e, "cannot subscribe on NATS");
                return None;
            }
        };
        let (retire, retired) = oneshot::channel();
        let task = tokio::spawn(read(cluster.clone(), broker.clone(), sub, route, retired));
        Some(Reader {
            task,
            retire: Some(retire),
        })
    }

    /// Drains: unsubscribes, routes what NATS had already handed it, and ends.
    fn retire(mut self) {
        if let Some(retire) = self.retire.take() {
            let _ = retire.send(());
        }
    }

    /// Ends at once (nothing here wants what it holds any more).
    fn abort(self) {
        self.task.abort();
    }
}

/// Routes what one NATS subscription brings, until told to retire (then what it already
/// holds) or until its subscription ends.
async fn read(
    cluster: Arc<Cluster>,
    broker: std::sync::Weak<Broker>,
    mut sub: async_nats::Subscriber,
    group: Option<(String, String)>,
    mut retired: oneshot::Receiver<()>,
) {
    let group = group.as_ref().map(|(f, g)| (f.as_str(), g.as_str()));
    let route = |message: &async_nats::Message| match broker.upgrade() {
        Some(broker) => {
            cluster.receive(&broker, message, group);
            true
        }
        None => false,
    };
    loop {
        tokio::select! {
            message = sub.next() => match message {
                Some(message) if route(&message) => {}
                _ => return,
            },
            _ = &mut retired => {
                // Drained: the client unsubscribes and keeps the subscription until the
                // server has answered a ping after it, so that a message NATS had already
                // handed this member of the queue group still arrives and is routed; then
                // it closes the channel. (Unsubscribing at once dropped such a message.)
                let _ = sub.drain().await;
                while let Some(message) = sub.next().await {
                    if !route(&message) {
                        return;
                    }
                }
                return;
            }
        }
    }
}

/// A subject subscribed for the node's filters.
struct Subject {
    /// Filters that need it.
    filters: usize,
    /// Its reader; `None` while its level's wildcard covers it.
    reader: Option<Reader>,
    /// The wildcard of its level it falls under, if it may be coarsened.
    level: Option<String>,
}

/// A first topic level's wildcard.
#[derive(Default)]
struct Level {
    /// Direct subjects under it.
    subjects: usize,
    /// Its reader, while coarsened.
    reader: Option<Reader>,
}

/// The subscriptions held: aborted when dropped (the subscribing task stopped), so that
/// none outlives the link.
#[derive(Default)]
struct Held {
    subjects: HashMap<(String, String), Subject>,
    levels: HashMap<(String, String), Level>,
    /// Readers running (NATS subscriptions held), kept in step as they start and end: a
    /// count over the maps would cost every interest change the number of subjects.
    readers: usize,
}

impl Drop for Held {
    fn drop(&mut self) {
        let subjects = self.subjects.drain().filter_map(|(_, s)| s.reader);
        let levels = self.levels.drain().filter_map(|(_, l)| l.reader);
        subjects.chain(levels).for_each(Reader::abort);
    }
}

/// The wildcard subject of `subject`'s first topic level (`<prefix>.m.<tenant>.<level>.>`),
/// when it has a literal first level and more levels after it; `root` is the tenant's
/// subjects' start (`<prefix>.m.<tenant>.`).
fn level_of(root: &str, subject: &str) -> Option<String> {
    let rest = subject.strip_prefix(root)?;
    let (first, after) = rest.split_once('.')?;
    if first == "*" || first == ">" || after.is_empty() {
        return None;
    }
    Some(format!("{root}{first}.>"))
}

/// Follows the index's interest changes: subscribes and unsubscribes on NATS, confirming
/// each batch once NATS has it.
pub(super) async fn subscribe(
    cluster: Arc<Cluster>,
    broker: std::sync::Weak<Broker>,
    mut changes: mpsc::UnboundedReceiver<Interest>,
    coarsen_above: usize,
) {
    let mut held = Held::default();
    // Changes handed to the client and not yet known to be on the NATS server.
    let mut unconfirmed = Vec::new();
    loop {
        let change = match changes.try_recv() {
            Ok(change) => change,
            Err(mpsc::error::TryRecvError::Empty) => {
                if !unconfirmed.is_empty() {
                    // One round trip for every change made since the last: the server has
                    // them (or NATS is away, and the client makes them when it is back,
                    // while the catch-up covers what was missed meanwhile).
                    cluster.settle().await;
                    for n in unconfirmed.drain(..) {
                        cluster.confirmations.confirm(n);
                    }
                }
                match changes.recv().await {
                    Some(change) => change,
                    None => return,
                }
            }
            Err(mpsc::error::TryRecvError::Disconnected) => return,
        };
        unconfirmed.push(change.n);
        change_one(&cluster, &broker, &mut held, change, coarsen_above).await;
        cluster
            .stats
            .subscriptions
            .store(held.readers as u64, Ordering::Relaxed);
    }
}

/// Applies one interest change to the subscriptions held.
async fn change_one(
    cluster: &Arc<Cluster>,
    broker: &std::sync::Weak<Broker>,
    held: &mut Held,
    change: Interest,
    coarsen_above: usize,
) {
    let Interest {
        tenant,
        filter,
        group,
        present,
        ..
    } = change;
    let queue = match &group {
        None => cluster.queue_group.clone(),
        Some(g) => shared_queue(&cluster.prefix, &tenant, g, &filter),
    };
    let client = match group {
        None => &cluster.client,
        Some(_) => &cluster.shared_client,
    };
    let root = cluster.subjects.root(&tenant);
    for subject in cluster.subjects.filter(&tenant, &filter) {
        let key = (queue.clone(), subject.clone());
        if !present {
            let Some(entry) = held.subjects.get_mut(&key) else {
                continue;
            };
            entry.filters -= 1;
            if entry.filters > 0 {
                continue;
            }
            let Some(gone) = held.subjects.remove(&key) else {
                continue;
            };
            if let Some(reader) = gone.reader {
                reader.abort(); // unsubscribed on NATS as it goes
                held.readers -= 1;
            }
            if let Some(level) = gone.level {
                let level_key = (queue.clone(), level);
                if let Some(l) = held.levels.get_mut(&level_key) {
                    l.subjects -= 1;
                    if l.reader.is_some() && l.subjects <= coarsen_above / 2 {
                        refine(cluster, broker, held, &level_key).await;
                    }
                    if held.levels.get(&level_key).is_some_and(|l| l.subjects == 0) {
                        held.levels.remove(&level_key);
                    }
                }
            }
            continue;
        }
        if let Some(entry) = held.subjects.get_mut(&key) {
            entry.filters += 1;
            continue;
        }
        let level = match (&group, coarsen_above) {
            (None, 1..) => level_of(&root, &subject),
            _ => None,
        };
        let mut covered = false;
        if let Some(level) = &level {
            let level_key = (queue.clone(), level.clone());
            let l = held.levels.entry(level_key.clone()).or_default();
            l.subjects += 1;
            covered = l.reader.is_some();
            if !covered && l.subjects > coarsen_above {
                covered = coarsen(cluster, broker, held, &level_key).await;
            }
        }
        let reader = match covered {
            true => None,
            false => {
                let route = group.clone().map(|g| (filter.clone(), g));
                Reader::start(cluster, broker, client, (&queue, &subject), route).await
            }
        };
        if reader.is_none() && !covered {
            continue; // not subscribed (logged): the next change of this filter tries again
        }
        held.readers += usize::from(reader.is_some());
        held.subjects.insert(
            key,
            Subject {
                filters: 1,
                reader,
                level,
            },
        );
    }
}

/// Subscribes a level's wildcard and lets go of the subjects under it; whether it did.
async fn coarsen(
    cluster: &Arc<Cluster>,
    broker: &std::sync::Weak<Broker>,
    held: &mut Held,
    (queue, level): &(String, String),
) -> bool {
    let Some(reader) = Reader::start(cluster, broker, &cluster.client, (queue, level), None).await
    else {
        return false;
    };
    tracing::debug!(%level, "many subjects under one level: subscribed to its wildcard");
    cluster.stats.coarsened.fetch_add(1, Ordering::Relaxed);
    if let Some(l) = held.levels.get_mut(&(queue.clone(), level.clone())) {
        l.reader = Some(reader);
        held.readers += 1;
    }
    for ((q, _), s) in held.subjects.iter_mut() {
        if q == queue
            && s.level.as_deref() == Some(level.as_str())
            && let Some(reader) = s.reader.take()
        {
            reader.retire();
            held.readers -= 1;
        }
    }
    true
}

/// Subscribes again the subjects under a coarsened level, then lets go of its wildcard.
async fn refine(
    cluster: &Arc<Cluster>,
    broker: &std::sync::Weak<Broker>,
    held: &mut Held,
    level_key: &(String, String),
) {
    let (queue, level) = level_key;
    for ((q, subject), s) in held.subjects.iter_mut() {
        if q == queue && s.level.as_deref() == Some(level.as_str()) && s.reader.is_none() {
            s.reader = Reader::start(cluster, broker, &cluster.client, (q, subject), None).await;
            held.readers += usize::from(s.reader.is_some());
        }
    }
    if let Some(reader) = held.levels.get_mut(level_key).and_then(|l| l.reader.take()) {
        tracing::debug!(%level, "few subjects under one level again: its wildcard let go");
        reader.retire();
        held.readers -= 1;
    }
}

/// The queue group of a shared group on NATS: one per tenant, group and filter, named by a
/// digest (any text may be a group's name or filter), under the cluster's prefix.
pub(super) fn shared_queue(prefix: &str, tenant: &str, group: &str, filter: &str) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for part in [tenant, group, filter] {
        ctx.update(&(part.len() as u64).to_be_bytes());
        ctx.update(part.as_bytes());
    }
    let digest = ctx.finish();
    format!(
        "{prefix}.s.{}",
        data_encoding::HEXLOWER.encode(&digest.as_ref()[..16])
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subject_falls_under_its_first_levels_wildcard() {
        let root = "herald.m.acme.";
        assert_eq!(
            level_of(root, "herald.m.acme.devices.d1.cmd").as_deref(),
            Some("herald.m.acme.devices.>")
        );
        assert_eq!(
            level_of(root, "herald.m.acme.devices.*.cmd").as_deref(),
            Some("herald.m.acme.devices.>")
        );
        assert_eq!(level_of(root, "herald.m.acme.devices"), None, "one level");
        assert_eq!(
            level_of(root, "herald.m.acme.*.x"),
            None,
            "a wildcard level"
        );
        assert_eq!(level_of(root, "herald.m.acme.>"), None);
        assert_eq!(level_of(root, "herald.m.other.devices.x"), None);
    }
}
