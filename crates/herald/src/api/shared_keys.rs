//! Idempotency keys shared by the cluster's nodes: a JetStream key-value bucket
//! (`<prefix>-idempotency`, each key kept `http.idempotency_window_secs`) holds, for each
//! key, the node serving its request, the request's fingerprint and, once it is answered,
//! its outcomes. A request is first checked there: answered elsewhere, it is answered with
//! those outcomes (`Idempotent-Replayed`) and publishes nothing; being served elsewhere, it
//! is 409; another request's key, 422. Otherwise this node claims the key (written over
//! the revision it read) and serves it as a node on its own does (the node's own store
//! keeps the progress, message by message), then writes the outcomes to the bucket.
//!
//! A node that dies serving a request leaves the key claimed: after `ABANDONED` another node
//! may take it and publish the request again whole (what the dead node had published goes
//! twice); retried on the same node once it is back, the request resumes exactly where it
//! stopped, as on one node.

use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::ApiState;
use super::idempotency::{Begin, Outcome, now_ms};
use crate::cluster::Cluster;

/// How long a key claimed by a node that has not answered is left to it.
const ABANDONED: Duration = Duration::from_secs(60);

/// A key as the bucket holds it.
#[derive(Debug, Serialize, Deserialize)]
struct Shared {
    /// The node serving (or that served) the request.
    node: String,
    /// When it claimed the key (Unix milliseconds).
    at_ms: u64,
    /// The request's fingerprint.
    fingerprint: u64,
    /// Its outcomes once answered.
    done: Option<Vec<Outcome>>,
}

/// The bucket's key for an idempotency key (scoped by API key): a digest.
fn bucket_key(key: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, key.as_bytes());
    data_encoding::HEXLOWER.encode(&digest.as_ref()[..20])
}

/// The bucket (made on first use), when this node is clustered with JetStream.
async fn bucket(state: &ApiState) -> Option<(&Cluster, &async_nats::jetstream::kv::Store)> {
    let cluster = state.broker.peers_as::<Cluster>()?;
    let store = state
        .shared_keys
        .get_or_try_init(|| async {
            let name = format!("{}-idempotency", cluster.prefix().replace('.', "_"));
            let window = state.broker.config().http.idempotency_window_secs;
            let about = "Herald: the HTTP API's idempotency keys";
            let max_age = Some(Duration::from_secs(window.max(1)));
            crate::cluster::kv::bucket(
                &cluster.nats(),
                &name,
                about,
                cluster.replicas(),
                max_age,
                true,
            )
            .await
        })
        .await
        .ok()?;
    Some((cluster, store))
}

/// Checks `key` with the cluster and claims it for this node: `None` to go on serving it
/// here (the node's own keys decide the rest), or the answer to give instead.
pub(super) async fn begin(state: &ApiState, key: &str, fingerprint: u64) -> Option<Begin> {
    let (cluster, kv) = bucket(state).await?;
    let k = bucket_key(key);
    let mine = |done| Shared {
        node: cluster.node().to_string(),
        at_ms: now_ms(),
        fingerprint,
        done,
    };
    let entry = kv.entry(k.clone()).await.ok()?;
    let live = entry
        .as_ref()
        .filter(|e| e.operation == async_nats::jetstream::kv::Operation::Put)
        .and_then(|e| serde_json::from_slice::<Shared>(&e.value).ok());
    if let Some(shared) = &live {
        if shared.fingerprint != fingerprint {
            return Some(Begin::Mismatch);
        }
        if let Some(done) = &shared.done {
            return Some(Begin::Replay(done.clone()));
        }
        if shared.node == cluster.node() {
            // Ours (a retry here, maybe after a restart): the node's own record resumes it.
            return None;
        }
        let fresh = now_ms().saturating_sub(shared.at_ms) < ABANDONED.as_millis() as u64;
        if fresh {
            return Some(Begin::InUse);
        }
    }
    let value = Bytes::from(serde_json::to_vec(&mine(None)).ok()?);
    let claimed = match &entry {
        Some(e) => kv.update(&k, value, e.revision).await.is_ok(),
        None => kv.create(&k, value).await.is_ok(),
    };
    // Another node claimed it meanwhile: it serves the request.
    (!claimed).then_some(Begin::InUse)
}

/// Records the request's outcomes for the other nodes (awaited: a retry sent elsewhere
/// right after the answer is recognised).
pub(super) async fn finish(state: &ApiState, key: &str, fingerprint: u64, done: &[Outcome]) {
    let Some((cluster, kv)) = bucket(state).await else {
        return;
    };
    let shared = Shared {
        node: cluster.node().to_string(),
        at_ms: now_ms(),
        fingerprint,
        done: Some(done.to_vec()),
    };
    if let Ok(value) = serde_json::to_vec(&shared) {
        let _ = kv.put(bucket_key(key), value.into()).await;
    }
}

/// Lets the key go: the request published nothing, a retry starts afresh anywhere.
pub(super) async fn forget(state: &ApiState, key: &str) {
    if let Some((_, kv)) = bucket(state).await {
        let _ = kv.delete(bucket_key(key)).await;
    }
}
