//! The cluster as every node sees it: each node says on NATS, every `BEAT`, who it is and
//! what it holds (`<prefix>.hb.<node>`); each keeps what the others last said. A node not
//! heard from for three beats is `stale` (gone, or cut off from NATS).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use super::Cluster;
use crate::broker::Broker;

/// How often a node says it is there.
pub const BEAT: Duration = Duration::from_secs(2);

/// What a node says of itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Beat {
    /// Its name.
    pub node: String,
    /// Its open MQTT connections.
    pub connections: u64,
    /// Its sessions, connected or not.
    pub sessions: u64,
    /// Its NATS subscriptions (the subjects its filters need).
    pub subscriptions: u64,
    /// Messages it sent to other nodes, and received from them.
    pub sent: u64,
    /// See `sent`.
    pub received: u64,
    /// Whether it is draining (its clients are being sent elsewhere).
    pub draining: bool,
}

/// The other nodes, as last heard.
#[derive(Debug, Default)]
pub struct View {
    nodes: Mutex<BTreeMap<String, (Instant, Beat)>>,
}

/// One node in the cluster view.
#[derive(Debug, Clone, Serialize)]
pub struct NodeState {
    /// What it last said.
    #[serde(flatten)]
    pub beat: Beat,
    /// `up`, or `stale` when not heard from for three beats.
    pub state: &'static str,
    /// Milliseconds since it was last heard (0 for this node).
    pub last_seen_ms: u64,
    /// Whether it is the node answering.
    pub this_node: bool,
}

impl View {
    fn heard(&self, beat: Beat) {
        let mut nodes = self.nodes.lock().unwrap_or_else(|p| p.into_inner());
        nodes.insert(beat.node.clone(), (Instant::now(), beat));
    }

    /// How many nodes other than `own` were heard from within three beats.
    pub fn others_up(&self, own: &str) -> usize {
        let nodes = self.nodes.lock().unwrap_or_else(|p| p.into_inner());
        nodes
            .values()
            .filter(|(at, b)| b.node != own && at.elapsed() <= BEAT * 3)
            .count()
    }

    /// Every node: this one (`own`, as it is now) and the others as last heard, by name.
    pub fn nodes(&self, own: Beat) -> Vec<NodeState> {
        let nodes = self.nodes.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<NodeState> = nodes
            .values()
            .filter(|(_, b)| b.node != own.node)
            .map(|(at, beat)| {
                let age = at.elapsed();
                NodeState {
                    beat: beat.clone(),
                    state: if age > BEAT * 3 { "stale" } else { "up" },
                    last_seen_ms: age.as_millis() as u64,
                    this_node: false,
                }
            })
            .collect();
        out.push(NodeState {
            beat: own,
            state: "up",
            last_seen_ms: 0,
            this_node: true,
        });
        out.sort_by(|a, b| a.beat.node.cmp(&b.beat.node));
        out
    }
}

impl Cluster {
    /// What this node says of itself now.
    pub fn beat(&self, broker: &Broker) -> Beat {
        let mut sessions = 0u64;
        for tenant in broker.tenants() {
            sessions += tenant.sessions.len() as u64;
        }
        Beat {
            node: self.node.clone(),
            connections: broker.stats.open.load(Ordering::Relaxed),
            sessions,
            subscriptions: self.stats.subscriptions.load(Ordering::Relaxed),
            sent: self.stats.sent.load(Ordering::Relaxed),
            received: self.stats.received.load(Ordering::Relaxed),
            draining: broker.draining(),
        }
    }

    /// Every node of the cluster as this one sees it.
    pub fn nodes(&self, broker: &Broker) -> Vec<NodeState> {
        self.view.nodes(self.beat(broker))
    }
}

/// Says this node is there every beat, and listens to the others, while the broker runs.
pub(super) async fn beat(cluster: Arc<Cluster>, broker: Weak<Broker>) {
    let subject = format!("{}.hb.{}", cluster.prefix, cluster.node);
    let mut others = match cluster
        .client
        .subscribe(format!("{}.hb.*", cluster.prefix))
        .await
    {
        Ok(sub) => sub,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen to the other nodes");
            return;
        }
    };
    let mut tick = tokio::time::interval(BEAT);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let Some(broker) = broker.upgrade() else { return };
                let beat = cluster.beat(&broker);
                drop(broker);
                if let Ok(bytes) = serde_json::to_vec(&beat) {
                    let _ = cluster.client.publish(subject.clone(), bytes.into()).await;
                }
            }
            heard = others.next() => {
                let Some(message) = heard else { return };
                match serde_json::from_slice::<Beat>(&message.payload) {
                    Ok(beat) => cluster.view.heard(beat),
                    Err(e) => tracing::debug!(error = %e, "a beat that does not read"),
                }
            }
        }
    }
}
