//! One session per client id across the cluster: a JetStream key-value bucket
//! (`<prefix>-clients`) says which node owns each tenant's client id.
//!
//! A node claims a client id before it accepts a CONNECT for it: it reads the key and writes
//! its own name expecting the revision it read (created if absent), so of two nodes claiming
//! at once one write fails and that node reads again: the bucket's revisions order the
//! claims, and the latest is the owner. The node that owned it before is asked to let go: it
//! closes its connection (v5 DISCONNECT 0x8E) and ends the session, unless its own claim is
//! the newer; or, when the client asks to resume its session, to hand the session over
//! (`moving`). Each session keeps its claim's revision; when it ends, the key is deleted if
//! that revision is still the last (a newer claim is left alone).
//!
//! Fencing: a node that cannot write the bucket (cut off from NATS) accepts no CONNECT
//! (0x88 Server unavailable), so it can never take a client id another node holds; once back,
//! it checks the claims of its connected sessions and lets go of those claimed elsewhere
//! meanwhile.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::ClaimError;
use super::Cluster;
use super::moving::{Ask, parse_request, request};
use crate::broker::Broker;

/// Releases waiting for the bucket at most; past it one is skipped (a stale claim is
/// harmless: the next claimer asks this node, which has nothing to let go).
const RELEASES: usize = 16 * 1024;

/// How long a claimer waits for the previous owner to let go.
const LET_GO_WAIT: Duration = Duration::from_secs(2);

/// Claims tried again at most when other nodes' claims keep winning the race.
const ATTEMPTS: usize = 8;

/// What the registry counts.
#[derive(Debug, Default)]
pub struct RegistryStats {
    /// Client ids claimed here.
    pub claimed: AtomicU64,
    /// Of those, taken from another node.
    pub taken_over: AtomicU64,
    /// Claims that failed (NATS unreachable, the bucket not answering): CONNECT refused.
    pub failed: AtomicU64,
    /// Sessions here let go because another node claimed their client id.
    pub let_go: AtomicU64,
    /// Sessions moved here from another node (a client resumed its session here).
    pub moved: AtomicU64,
    /// Sessions that could not move here: the node that held it did not hand it over in
    /// time, or its answer did not read (the client got a new session).
    pub moves_failed: AtomicU64,
    /// Sessions handed over to another node.
    pub handed_over: AtomicU64,
}

/// A claim won.
#[derive(Debug, Clone, Copy)]
pub struct Claim {
    /// Its revision in the bucket.
    pub revision: u64,
}

/// The bucket's key of `client_id` in `tenant`: both in base64url; a long one by its digest
/// (a key is a NATS subject).
pub fn key(tenant: &str, client_id: &str) -> String {
    let key = super::retained::key(tenant, client_id);
    if key.len() <= 256 {
        return key;
    }
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for part in [tenant, client_id] {
        ctx.update(&(part.len() as u64).to_be_bytes());
        ctx.update(part.as_bytes());
    }
    format!(
        "h.{}",
        data_encoding::HEXLOWER.encode(ctx.finish().as_ref())
    )
}

/// Opens (or creates) the bucket.
pub(super) async fn bucket(
    client: &async_nats::Client,
    prefix: &str,
    replicas: usize,
) -> Result<async_nats::jetstream::kv::Store, String> {
    let name = format!("{}-clients", prefix.replace('.', "_"));
    let about = "Herald: the node that owns each client id";
    super::kv::bucket(client, &name, about, replicas, None, true).await
}

impl Cluster {
    /// The subject on which `node` is asked to let go of client ids.
    pub(super) fn let_go_subject(&self, node: &str) -> String {
        format!("{}.c.{node}", self.prefix)
    }

    /// Claims `tenant`'s `client_id` for this node; the node that held it, if another, is
    /// asked to let go and waited for (at most two seconds), or, when the client asks to
    /// resume (`resume`), to hand its session over to this node (`moving`).
    pub async fn claim(
        &self,
        broker: &Arc<Broker>,
        tenant: &str,
        client_id: &str,
        resume: bool,
    ) -> Result<Claim, ClaimError> {
        if self.clients.is_none() {
            // No registry (NATS without JetStream, logged at start): nothing to claim.
            return Ok(Claim { revision: 0 });
        }
        let claimed = self.claim_key(tenant, client_id).await;
        match &claimed {
            Ok(_) => self.registry_stats.claimed.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.registry_stats.failed.fetch_add(1, Ordering::Relaxed),
        };
        let (claim, before) = claimed?;
        if resume && before.as_deref() == Some(self.node.as_str()) {
            // This node held it, and may have lost it with its disk (a machine replaced
            // under the same name): a replicated session is resumed.
            let held = broker
                .find_tenant(tenant)
                .and_then(|t| t.sessions.get(client_id));
            if held.is_none() {
                self.resume_replica(broker, tenant, client_id).await;
            }
            return Ok(claim);
        }
        if let Some(before) = before.filter(|b| *b != self.node) {
            self.registry_stats
                .taken_over
                .fetch_add(1, Ordering::Relaxed);
            // A node that is gone, or cut off from NATS, has no subscription to be asked
            // on: NATS answers "no responders" at once.
            if resume {
                self.move_session(broker, &before, tenant, client_id, claim.revision)
                    .await?;
                return Ok(claim);
            }
            let request = request(Ask::LetGo, tenant, client_id, claim.revision);
            let asked = self.client.request(self.let_go_subject(&before), request);
            let _ = tokio::time::timeout(LET_GO_WAIT, asked).await;
        }
        Ok(claim)
    }

    /// Writes this node's claim; returns it and the node that held the key before.
    async fn claim_key(
        &self,
        tenant: &str,
        client_id: &str,
    ) -> Result<(Claim, Option<String>), ClaimError> {
        let Some(kv) = &self.clients else {
            return Err(ClaimError::Bucket("no registry".into()));
        };
        if !self.connected() {
            // Cut off from NATS: no claim can be written (and none waited for).
            return Err(ClaimError::Bucket("NATS is not connected".into()));
        }
        let key = key(tenant, client_id);
        let me = Bytes::copy_from_slice(self.node.as_bytes());
        let failed = |e: &dyn std::fmt::Display| ClaimError::Bucket(e.to_string());
        for _ in 0..ATTEMPTS {
            let entry = kv.entry(key.clone()).await.map_err(|e| failed(&e))?;
            // Over the last revision (a deleted key's tombstone included), or created: a
            // claim written meanwhile makes this write fail, and it is tried again.
            let written = match &entry {
                Some(e) => kv.update(&key, me.clone(), e.revision).await.ok(),
                None => kv.create(&key, me.clone()).await.ok(),
            };
            if let Some(revision) = written {
                let before = entry
                    .filter(|e| e.operation == async_nats::jetstream::kv::Operation::Put)
                    .map(|e| String::from_utf8_lossy(&e.value).into_owned());
                return Ok((Claim { revision }, before));
            }
        }
        Err(ClaimError::Bucket(
            "other claims of this client id kept winning".into(),
        ))
    }

    /// Checks, once the session is attached, that this node's claim (`revision`) is still
    /// the last: two nodes claiming at once may each have asked the other to let go before
    /// the other had attached, so the older one lets go of itself here.
    pub async fn confirm_claim(
        &self,
        broker: &Broker,
        tenant: &str,
        client_id: &str,
        revision: u64,
    ) {
        let Some(kv) = &self.clients else {
            return;
        };
        let Ok(Some(entry)) = kv.entry(key(tenant, client_id)).await else {
            return;
        };
        if entry.revision > revision && broker.let_go(tenant, client_id, entry.revision) {
            self.registry_stats.let_go.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Queues the release of a claim whose session ended here (or whose CONNECT was refused
    /// after it).
    pub fn release(&self, tenant: &str, client_id: &str, revision: u64) {
        if revision == 0 {
            return;
        }
        if let Some(tx) = &self.releases {
            let _ = tx.try_send((key(tenant, client_id), revision));
        }
    }
}

/// Deletes the keys of sessions ended here whose claim is still the last.
pub(super) async fn releases(cluster: Arc<Cluster>, mut rx: mpsc::Receiver<Release>) {
    let Some(kv) = cluster.clients.clone() else {
        return;
    };
    while let Some((key, revision)) = rx.recv().await {
        // Fails when another claim came since: that one is left alone.
        let _ = kv.delete_expect_revision(&key, Some(revision)).await;
    }
}

/// A claim to release: its key and revision.
pub(super) type Release = (String, u64);

/// The queue for `releases`.
pub(super) fn release_queue() -> (mpsc::Sender<Release>, mpsc::Receiver<Release>) {
    mpsc::channel(RELEASES)
}

/// Answers other nodes' requests to let go of client ids.
pub(super) async fn answer(cluster: Arc<Cluster>, broker: std::sync::Weak<Broker>) {
    let subject = cluster.let_go_subject(&cluster.node);
    let Ok(mut requests) = cluster.client.subscribe(subject).await else {
        tracing::warn!("cannot subscribe to the cluster's let-go requests");
        return;
    };
    while let Some(request) = requests.next().await {
        let Some(broker) = broker.upgrade() else {
            return;
        };
        let Some(asked) = parse_request(&request.payload) else {
            continue;
        };
        let (ask, tenant, client_id, revision) =
            (asked.ask, asked.tenant, asked.client_id, asked.revision);
        if ask != Ask::LetGo {
            if let Some(reply) = request.reply {
                let asked = (tenant.as_str(), client_id.as_str(), revision, asked.seen);
                cluster.answer_move(&broker, ask, asked, reply).await;
            }
            continue;
        }
        if broker.let_go(&tenant, &client_id, revision) {
            cluster
                .registry_stats
                .let_go
                .fetch_add(1, Ordering::Relaxed);
        }
        if let Some(reply) = request.reply {
            let _ = cluster.client.publish(reply, Bytes::new()).await;
        }
    }
}

/// After NATS was lost: every connected session here whose claim is no longer the last
/// (another node claimed its client id meanwhile) is let go.
pub(super) async fn verify(cluster: &Cluster, broker: &Broker) {
    let Some(kv) = &cluster.clients else {
        return;
    };
    for tenant in broker.tenants() {
        let mut held = Vec::new();
        tenant.sessions.for_each(|s| {
            let claim = s.claim.load(Ordering::Acquire);
            if claim != 0 {
                held.push((s.client_id.clone(), claim));
            }
        });
        for (client_id, claim) in held {
            let key = key(&tenant.name, &client_id);
            let Ok(entry) = kv.entry(key).await else {
                return; // NATS lost again: the next reconnection checks again.
            };
            let newer = entry.map(|e| e.revision).filter(|&r| r > claim);
            if let Some(newer) = newer
                && broker.let_go(&tenant.name, &client_id, newer)
            {
                cluster
                    .registry_stats
                    .let_go
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_client_id_has_a_short_key() {
        let long = "x".repeat(1000);
        let k = key("acme", &long);
        assert!(k.starts_with("h.") && k.len() < 100, "{k}");
        assert_ne!(key("a", "b"), key("a", "c"));
    }
}
