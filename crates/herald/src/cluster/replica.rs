//! Replicated sessions (`cluster.replicate_sessions`): a persistent session outlives its
//! node's machine. The node that holds it writes its snapshot (`broker::session::replica`:
//! record, the stream position its messages are owed from, what is done past it, its QoS 2
//! exchanges) to the bucket `<prefix>-sessions`, with `cluster.replicas` copies; a node a
//! client comes back to, finding the node that held it gone, reads the snapshot and the
//! cluster's stream from that position, and resumes the session from them.
//!
//! What waits for the bucket, and what does not: a change the client is told of, or that
//! decides what it is sent next (a subscription's SUBACK, a QoS 2 PUBLISH's packet id, a
//! PUBREC's PUBREL, an inbound QoS 2 id's PUBREC and PUBCOMP, the CONNACK) is held back
//! until the snapshot taken after it is written (`Peers::replicate`, the write queue's
//! gate). Acknowledgements of QoS 1 messages are written within a second
//! (`SWEEP`): lost with the machine, they are sent again (QoS 1 allows it; DUP is set).
//!
//! Fencing: a node writes a key over the revision it last wrote or read (its first write
//! of a session it made itself puts it); a node that lost the client id to another finds
//! the revision changed and stops writing it.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use mqtt_codec::QoS;
use tokio::sync::mpsc;

use super::Cluster;
use super::moving::Resumed;
use super::wire::Envelope;
use crate::broker::Broker;
use crate::broker::durable::{instant_of, unix_ms};
use crate::broker::message::{At, Delivery, Message};
use crate::broker::session::moving::Owed;
use crate::broker::session::replica::Snapshot;
use crate::broker::session::{Inflight, Session, Stage};
use crate::store::record::SessionRecord;

/// How often changes nothing waits for (QoS 1 acknowledgements, a connection going) are
/// written, and failed writes tried again.
const SWEEP: Duration = Duration::from_secs(1);

/// How long a node whose write was fenced waits for the session's connection to close
/// before releasing what waited for the write.
const FENCED_CLOSE: Duration = Duration::from_secs(5);

/// The format of a snapshot in the bucket.
const FORMAT: u8 = 1;

/// The bucket of replicated sessions.
pub(super) async fn bucket(
    client: &async_nats::Client,
    prefix: &str,
    replicas: usize,
) -> Result<async_nats::jetstream::kv::Store, String> {
    let name = format!("{}-sessions", prefix.replace('.', "_"));
    let about = "Herald: persistent sessions, to resume them on another node";
    // Read from the stream's leader: a follower may not have a snapshot written just
    // before its node was lost, and resuming from an older one could send a QoS 2 message
    // the client has completed again.
    super::kv::bucket(client, &name, about, replicas, None, false).await
}

/// A snapshot as stored.
pub fn encode(s: &Snapshot) -> Vec<u8> {
    let record = s.record.encode();
    let mut out = Vec::with_capacity(32 + record.len() + s.done.len() * 16);
    out.push(FORMAT);
    out.extend_from_slice(&(record.len() as u32).to_be_bytes());
    out.extend_from_slice(&record);
    out.extend_from_slice(&s.from.to_be_bytes());
    out.extend_from_slice(&(s.done.len() as u32).to_be_bytes());
    for (run, n) in &s.done {
        out.extend_from_slice(&run.to_be_bytes());
        out.extend_from_slice(&n.to_be_bytes());
    }
    out.extend_from_slice(&(s.stages.len() as u32).to_be_bytes());
    for ((run, n), packet_id, released) in &s.stages {
        out.extend_from_slice(&run.to_be_bytes());
        out.extend_from_slice(&n.to_be_bytes());
        out.extend_from_slice(&packet_id.to_be_bytes());
        out.push(u8::from(*released));
    }
    out.extend_from_slice(&(s.inbound.len() as u32).to_be_bytes());
    for id in &s.inbound {
        out.extend_from_slice(&id.to_be_bytes());
    }
    out
}

/// A snapshot that does not read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotError;

/// Reads a stored snapshot.
pub fn decode(bytes: &[u8]) -> Result<Snapshot, SnapshotError> {
    let mut r = Reader(bytes);
    if r.take(1)? != [FORMAT] {
        return Err(SnapshotError);
    }
    let len = r.u32()? as usize;
    let record = SessionRecord::decode(r.take(len)?).map_err(|_| SnapshotError)?;
    let from = r.u64()?;
    let n = r.count(16)?;
    let mut done = Vec::with_capacity(n);
    for _ in 0..n {
        done.push((r.u64()?, r.u64()?));
    }
    let n = r.count(19)?;
    let mut stages = Vec::with_capacity(n);
    for _ in 0..n {
        let ident = (r.u64()?, r.u64()?);
        let packet_id = r.u16()?;
        let released = match r.take(1)? {
            [0] => false,
            [1] => true,
            _ => return Err(SnapshotError),
        };
        stages.push((ident, packet_id, released));
    }
    let n = r.count(2)?;
    let mut inbound = Vec::with_capacity(n);
    for _ in 0..n {
        inbound.push(r.u16()?);
    }
    if !r.0.is_empty() {
        return Err(SnapshotError);
    }
    Ok(Snapshot {
        record,
        from,
        done,
        stages,
        inbound,
    })
}

/// Reads a snapshot's fields.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], SnapshotError> {
        if self.0.len() < n {
            return Err(SnapshotError);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn word(&mut self, n: usize) -> Result<u64, SnapshotError> {
        Ok(self
            .take(n)?
            .iter()
            .fold(0u64, |a, &x| a << 8 | u64::from(x)))
    }

    fn u64(&mut self) -> Result<u64, SnapshotError> {
        self.word(8)
    }

    fn u32(&mut self) -> Result<u32, SnapshotError> {
        Ok(self.word(4)? as u32)
    }

    fn u16(&mut self) -> Result<u16, SnapshotError> {
        Ok(self.word(2)? as u16)
    }

    /// A count of items of `item` bytes: one the rest cannot hold is refused before
    /// anything is allocated.
    fn count(&mut self, item: usize) -> Result<usize, SnapshotError> {
        let n = self.u32()? as usize;
        if n.saturating_mul(item) > self.0.len() {
            return Err(SnapshotError);
        }
        Ok(n)
    }
}

/// What the replicated sessions count.
#[derive(Debug, Default)]
pub struct ReplicaStats {
    /// Snapshots written.
    pub written: AtomicU64,
    /// Writes that failed (tried again).
    pub failed: AtomicU64,
    /// Writes refused because another node wrote the session since (it took the client id).
    pub fenced: AtomicU64,
    /// Sessions resumed here from the bucket after their node was gone.
    pub resumed: AtomicU64,
    /// Messages those sessions were owed, read from the stream.
    pub replayed: AtomicU64,
    /// Messages they were owed that the stream no longer had (its age or size limits).
    pub lost: AtomicU64,
}

/// A request to the writer.
pub(super) enum Ask {
    /// Write the session's snapshot; confirm `n` once written.
    Write {
        tenant: String,
        session: Weak<Session>,
        n: u64,
    },
    /// The session ended here: delete its key, if this node's write is still the last.
    Delete { tenant: String, client_id: String },
    /// The session was resumed here from the bucket at `revision`: written over it.
    Adopt { key: String, revision: u64 },
    /// The session is about to be handed over to another node: its key is not deleted
    /// when it ends here (the node it goes to writes it; if that node dies first, this
    /// node's last snapshot is what resumes it).
    Keep { key: String },
}

/// The writer's state of one key.
struct Entry {
    tenant: String,
    client_id: String,
    session: Weak<Session>,
    /// The revision this node wrote or read last (`None`: put, not update).
    revision: Option<u64>,
    /// Confirmations waiting for the next write.
    waiting: Vec<u64>,
    /// A write is in flight.
    busy: bool,
    /// The session ended: delete once idle.
    delete: bool,
    /// The session is being handed over: its end deletes nothing.
    keep: bool,
    /// The last write failed: tried again at the next sweep.
    retry: bool,
}

/// A write in flight: its key, the confirmations it answers, how it ended.
type Writing =
    std::pin::Pin<Box<dyn std::future::Future<Output = (String, Vec<u64>, Outcome)> + Send>>;

/// How a write ended.
enum Outcome {
    Written(u64),
    Deleted,
    Fenced,
    Failed(String),
}

impl Cluster {
    /// `Peers::replicate`: hands the session to the writer; the confirmation to wait for.
    pub(super) fn replicate_session(&self, tenant: &str, session: &Arc<Session>) -> u64 {
        let Some(tx) = &self.replica_tx else {
            return 0;
        };
        {
            let mut st = session.lock();
            if st.expiry_interval() == 0 || st.ended() {
                return 0;
            }
            st.replicate();
        }
        let n = self.confirmations.issue();
        let ask = Ask::Write {
            tenant: tenant.to_string(),
            session: Arc::downgrade(session),
            n,
        };
        if tx.send(ask).is_err() {
            self.confirmations.confirm(n);
            return 0;
        }
        n
    }

    /// A session is about to be handed over to another node (`moving`): its end here does
    /// not delete its key.
    pub(super) fn keep_replica(&self, tenant: &str, client_id: &str) {
        if let Some(tx) = &self.replica_tx {
            let key = super::registry::key(tenant, client_id);
            let _ = tx.send(Ask::Keep { key });
        }
    }

    /// `Peers::session_ended`'s part: the session's key goes (if this node wrote it last).
    pub(super) fn forget_replica(&self, tenant: &str, client_id: &str) {
        if let Some(tx) = &self.replica_tx {
            let _ = tx.send(Ask::Delete {
                tenant: tenant.to_string(),
                client_id: client_id.to_string(),
            });
        }
    }
}

/// Writes the snapshots asked for, one write in flight per key, many keys at once; every
/// second, the sessions changed since their last snapshot.
pub(super) async fn write(
    cluster: Arc<Cluster>,
    broker: Weak<Broker>,
    kv: async_nats::jetstream::kv::Store,
    mut rx: mpsc::UnboundedReceiver<Ask>,
) {
    let mut entries: HashMap<String, Entry> = HashMap::new();
    let mut writes = FuturesUnordered::new();
    let mut sweep = tokio::time::interval(SWEEP);
    // Every message routed from now on is past the highest sequence seen a second ago
    // (routed from another node, or acknowledged to this one: what the stream had stored
    // before it has reached this node since), and past an open gap's start.
    let seen = || {
        let routed = cluster.gap.routed.load(Ordering::Relaxed);
        routed.max(cluster.durable_stats.last_seq.load(Ordering::Relaxed))
    };
    let mut before = seen();
    let mut floor = before + 1;
    let start = |key: &str, entry: &mut Entry, floor: u64| {
        entry.busy = true;
        entry.retry = false;
        let kv = kv.clone();
        let key = key.to_string();
        let ns = std::mem::take(&mut entry.waiting);
        let revision = entry.revision;
        if entry.delete {
            return Box::pin(async move {
                // Fails when another node wrote the key since: it is left to that one.
                if let Some(r) = revision {
                    let _ = kv.delete_expect_revision(&key, Some(r)).await;
                }
                (key, ns, Outcome::Deleted)
            }) as Writing;
        }
        let snapshot = entry.session.upgrade().map(|s| {
            let mut st = s.lock();
            st.snapshot(&entry.tenant, &entry.client_id, floor)
        });
        Box::pin(async move {
            let Some(snapshot) = snapshot else {
                return (key, ns, Outcome::Deleted);
            };
            let value = Bytes::from(encode(&snapshot));
            let outcome = match revision {
                Some(r) => match kv.update(&key, value, r).await {
                    Ok(r) => Outcome::Written(r),
                    Err(e)
                        if e.kind()
                            == async_nats::jetstream::kv::UpdateErrorKind::WrongLastRevision =>
                    {
                        Outcome::Fenced
                    }
                    Err(e) => Outcome::Failed(e.to_string()),
                },
                None => match kv.put(&key, value).await {
                    Ok(r) => Outcome::Written(r),
                    Err(e) => Outcome::Failed(e.to_string()),
                },
            };
            (key, ns, outcome)
        }) as Writing
    };
    let mut open = true;
    while open || !writes.is_empty() {
        tokio::select! {
            ask = rx.recv(), if open => {
                let Some(ask) = ask else {
                    open = false;
                    continue;
                };
                let key = match &ask {
                    Ask::Write { tenant, session, .. } => match session.upgrade() {
                        Some(s) => super::registry::key(tenant, &s.client_id),
                        None => continue,
                    },
                    Ask::Delete { tenant, client_id } => super::registry::key(tenant, client_id),
                    Ask::Adopt { key, .. } | Ask::Keep { key } => key.clone(),
                };
                let entry = entries.entry(key.clone()).or_insert_with(|| Entry {
                    tenant: String::new(),
                    client_id: String::new(),
                    session: Weak::new(),
                    revision: None,
                    waiting: Vec::new(),
                    busy: false,
                    delete: false,
                    keep: false,
                    retry: false,
                });
                match ask {
                    Ask::Write { tenant, session, n } => {
                        if let Some(s) = session.upgrade() {
                            entry.client_id = s.client_id.to_string();
                        }
                        entry.tenant = tenant;
                        entry.session = session;
                        entry.waiting.push(n);
                        entry.delete = false;
                        entry.keep = false;
                    }
                    Ask::Delete { .. } if entry.keep => {
                        // Handed over: forgotten here, the key left to the next node.
                        if entry.busy {
                            entry.session = Weak::new();
                        } else {
                            entries.remove(&key);
                        }
                        continue;
                    }
                    Ask::Delete { .. } => {
                        if entry.revision.is_none() && !entry.busy {
                            // Never written by this node: nothing of its own to delete.
                            entries.remove(&key);
                            continue;
                        }
                        entry.delete = true;
                    }
                    Ask::Adopt { revision, .. } => entry.revision = Some(revision),
                    Ask::Keep { .. } => {
                        entry.keep = true;
                        continue;
                    }
                }
                if !entry.busy && (entry.delete || !entry.waiting.is_empty()) {
                    writes.push(start(&key, entry, floor));
                }
            }
            Some((key, ns, outcome)) = writes.next() => {
                let stats = &cluster.replica_stats;
                let Some(entry) = entries.get_mut(&key) else {
                    ns.into_iter().for_each(|n| cluster.confirmations.confirm(n));
                    continue;
                };
                entry.busy = false;
                match outcome {
                    Outcome::Written(revision) => {
                        stats.written.fetch_add(1, Ordering::Relaxed);
                        entry.revision = Some(revision);
                        ns.into_iter().for_each(|n| cluster.confirmations.confirm(n));
                    }
                    Outcome::Deleted => {
                        entry.revision = None;
                        ns.into_iter().for_each(|n| cluster.confirmations.confirm(n));
                        if entry.delete || entry.session.strong_count() == 0 {
                            entries.remove(&key);
                            continue;
                        }
                    }
                    Outcome::Fenced => {
                        // Another node holds the session now (it resumed it from the bucket,
                        // this node not answering in time): this node lets go of its copy.
                        stats.fenced.fetch_add(1, Ordering::Relaxed);
                        tracing::info!(key, "a replicated session was written by another node since; this node lets go of it");
                        // What waited for the write must not reach the client: its connection
                        // is closed first, then the confirmations go (others wait for them).
                        let session = entry.session.upgrade();
                        if let (Some(broker), Some(session)) = (broker.upgrade(), &session) {
                            let claim = session.claim.load(Ordering::Acquire);
                            broker.let_go(&entry.tenant, &entry.client_id, claim);
                        }
                        let confirmations = cluster.confirmations.clone();
                        tokio::spawn(async move {
                            let deadline = tokio::time::Instant::now() + FENCED_CLOSE;
                            while session.as_ref().is_some_and(|s| s.lock().connected())
                                && tokio::time::Instant::now() < deadline
                            {
                                tokio::time::sleep(Duration::from_millis(5)).await;
                            }
                            ns.into_iter().for_each(|n| confirmations.confirm(n));
                        });
                        entries.remove(&key);
                        continue;
                    }
                    Outcome::Failed(error) => {
                        stats.failed.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(key, %error, "a replicated session could not be written; trying again");
                        entry.waiting.extend(ns);
                        entry.retry = true;
                        continue;
                    }
                }
                if entry.delete || !entry.waiting.is_empty() {
                    writes.push(start(&key, entry, floor));
                }
            }
            _ = sweep.tick() => {
                let now = seen();
                let lagged = match cluster.gap.after() {
                    Some(gap) => before.min(gap),
                    None => before,
                };
                floor = lagged + 1;
                before = now;
                for (key, entry) in entries.iter_mut() {
                    if entry.busy {
                        continue;
                    }
                    let changed = entry
                        .session
                        .upgrade()
                        .is_some_and(|s| s.lock().replica_dirty());
                    if entry.retry || changed || entry.delete {
                        writes.push(start(key, entry, floor));
                    }
                }
                entries.retain(|_, e| e.busy || e.session.strong_count() > 0 || !e.waiting.is_empty());
            }
        }
    }
}

impl Cluster {
    /// Resumes `tenant`'s `client_id`'s session from the bucket, its node gone (this node
    /// claimed the client id with `revision`). Whether it was there and resumed.
    pub(super) async fn resume_replica(
        &self,
        broker: &Arc<Broker>,
        tenant: &str,
        client_id: &str,
    ) -> Resumed {
        let (Some(kv), Some(tx)) = (&self.replicas_kv, &self.replica_tx) else {
            return Resumed::Nothing;
        };
        let key = super::registry::key(tenant, client_id);
        let entry = match kv.entry(key.clone()).await {
            Ok(Some(e)) if e.operation == async_nats::jetstream::kv::Operation::Put => e,
            Ok(_) => return Resumed::Nothing,
            Err(error) => return Resumed::Failed(format!("the bucket: {error}")),
        };
        let Ok(snapshot) = decode(&entry.value) else {
            tracing::warn!(
                client_id,
                "a replicated session does not read: a new one is made"
            );
            return Resumed::Nothing;
        };
        let record = &snapshot.record;
        if record.tenant != tenant || record.client_id != client_id {
            return Resumed::Nothing;
        }
        let offline_ms = match record.offline_since_ms {
            0 => 0,
            since => unix_ms().saturating_sub(since),
        };
        if record.expiry != u32::MAX && offline_ms > u64::from(record.expiry) * 1000 {
            let _ = kv.delete_expect_revision(&key, Some(entry.revision)).await;
            return Resumed::Nothing;
        }
        let tenant = broker.tenant(tenant);
        let session = broker.prepare_moved(&tenant, snapshot.record.clone());
        let mut made = super::moving::Made {
            broker,
            tenant: &tenant,
            session: Some(&session),
        };
        // Every node sends this node the session's messages from now on; what came before
        // is read from the stream.
        let issued = broker.peers_issued();
        let subscribed = std::future::poll_fn(|cx| broker.poll_confirmed(issued, cx));
        let _ = tokio::time::timeout(Duration::from_secs(5), subscribed).await;
        let owed = match self.replay(&tenant.name, &snapshot).await {
            Ok(owed) => owed,
            Err(error) => return Resumed::Failed(format!("the stream: {error}")),
        };
        made.session = None;
        drop(made);
        broker.settle_moved(&tenant, &session, owed);
        // Written at once, over whatever the node it left wrote since it was read: that
        // node's next write then fails, and it lets go of its copy. Until a move, `from`
        // read is a floor for this node too (what it routes from now on is past the
        // stream's end).
        let now = session
            .lock()
            .snapshot(&tenant.name, client_id, snapshot.from);
        match kv.put(&key, Bytes::from(encode(&now))).await {
            Ok(revision) => {
                let _ = tx.send(Ask::Adopt { key, revision });
            }
            Err(error) => {
                // Its first write from the writer puts it.
                tracing::warn!(client_id, %error, "a resumed session's snapshot was not written yet");
            }
        }
        self.replica_stats.resumed.fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            client_id,
            from = snapshot.from,
            "resumed a session from the replicated bucket"
        );
        Resumed::Yes
    }

    /// Whether sessions are replicated.
    pub(super) fn replicates(&self) -> bool {
        self.replicas_kv.is_some()
    }

    /// What the session of `snapshot` is owed: the stream's messages from `from` to its
    /// end now that match its subscriptions and are not done; QoS 2 ones in flight at
    /// their stage.
    async fn replay(&self, tenant: &str, snapshot: &Snapshot) -> Result<Owed, String> {
        let done: HashSet<(u64, u64)> = snapshot.done.iter().copied().collect();
        let stages: HashMap<(u64, u64), (u16, bool)> = snapshot
            .stages
            .iter()
            .map(|&(ident, id, released)| (ident, (id, released)))
            .collect();
        let now = unix_ms();
        let mut owed = Owed {
            inbound: snapshot.inbound.clone(),
            from: snapshot.from.max(1),
            ..Owed::default()
        };
        let missing = super::catchup::read_stream(self, snapshot.from, |seq, message| {
            let parsed = self.subjects.parse_stream(&message.subject);
            let ours = parsed.is_some_and(|(t, _)| t == tenant);
            let envelope = Envelope::decode(&message.payload).ok().filter(|_| ours);
            let ident = envelope.as_ref().and_then(|e| e.ident);
            if let Some(ident) = ident
                && done.contains(&ident)
            {
                // Still done: the next snapshot names it too.
                owed.done.push((ident, At::Seq(seq).to_bits()));
            } else if let (Some(envelope), Some(ident)) = (envelope, ident) {
                let received_at = instant_of(envelope.received_ms, now);
                let origin = super::REMOTE_ORIGIN;
                let m = Arc::new(Message::restored(envelope.publish, received_at, origin));
                m.ident.set(ident.0, ident.1);
                m.ident.set_at(At::Seq(seq));
                for d in deliveries(&snapshot.record, &m) {
                    self.replica_stats.replayed.fetch_add(1, Ordering::Relaxed);
                    match stages.get(&ident) {
                        Some(&(packet_id, released)) if d.qos == QoS::ExactlyOnce => {
                            let stage = match released {
                                true => Stage::Released,
                                false => Stage::Sent,
                            };
                            owed.inflight.push(Inflight {
                                packet_id,
                                delivery: d,
                                stage,
                            });
                        }
                        _ => owed.queue.push(d),
                    }
                }
            }
            true
        })
        .await?;
        if missing > 0 {
            self.replica_stats
                .lost
                .fetch_add(missing, Ordering::Relaxed);
            tracing::warn!(
                lost = missing,
                "the cluster's stream no longer has messages a resumed session may be owed \
                 (past cluster.message_max_age_secs or message_max_bytes)"
            );
        }
        Ok(owed)
    }
}

/// The deliveries of `message` to a session with `record`'s subscriptions (one per direct
/// subscription that matches, as routing makes them; QoS 0 ones are not owed).
fn deliveries(record: &SessionRecord, message: &Arc<Message>) -> Vec<Delivery> {
    record
        .subscriptions
        .iter()
        .filter(|s| !s.filter.starts_with("$share/"))
        .filter(|s| mqtt_codec::topic::matches(&s.filter, &message.topic))
        .map(|s| Delivery {
            message: message.clone(),
            qos: message.qos.min(s.options.qos),
            retain: s.options.retain_as_published && message.retain,
            subscription_identifiers: s.id.into_iter().collect(),
            stored: None,
        })
        .filter(|d| d.qos != QoS::AtMostOnce)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::record::StoredSubscription;
    use mqtt_codec::SubscriptionOptions;

    fn snapshot() -> Snapshot {
        Snapshot {
            record: SessionRecord {
                tenant: "t".into(),
                client_id: "c".into(),
                protocol: 5,
                expiry: 300,
                offline_since_ms: 12,
                subscriptions: vec![StoredSubscription {
                    filter: "a/+".into(),
                    options: SubscriptionOptions::qos(QoS::ExactlyOnce),
                    id: Some(4),
                }],
            },
            from: 77,
            done: vec![(1, 2), (3, 4)],
            stages: vec![((5, 6), 9, true), ((7, 8), 10, false)],
            inbound: vec![11, 12],
        }
    }

    #[test]
    fn a_snapshot_reads_back_and_a_cut_or_a_change_is_refused() {
        let s = snapshot();
        let bytes = encode(&s);
        assert_eq!(decode(&bytes), Ok(s));
        for n in 0..bytes.len() {
            assert_eq!(decode(&bytes[..n]), Err(SnapshotError), "cut at {n}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(decode(&longer), Err(SnapshotError));
        let mut huge = bytes;
        let at = huge.len() - 2 * 2 - 4;
        huge[at..at + 4].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(decode(&huge), Err(SnapshotError), "a count past the bytes");
    }

    #[test]
    fn a_replayed_message_is_owed_once_per_matching_subscription_at_its_qos() {
        let record = snapshot().record;
        let mut p = mqtt_codec::Publish::new("a/b", b"x".to_vec());
        p.qos = QoS::AtLeastOnce;
        let m = Arc::new(Message::restored(p, std::time::Instant::now(), 0));
        let d = deliveries(&record, &m);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].qos, QoS::AtLeastOnce);
        assert_eq!(&*d[0].subscription_identifiers, &[4]);
        let other = Arc::new(Message::restored(
            mqtt_codec::Publish::new("b/b", b"x".to_vec()),
            std::time::Instant::now(),
            0,
        ));
        assert!(deliveries(&record, &other).is_empty());
    }
}
