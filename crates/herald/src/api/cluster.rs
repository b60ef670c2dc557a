//! The HTTP API of the whole cluster: a node asked for clients or subscriptions asks the
//! other nodes too, over NATS (`<prefix>.api`, which every node's API answers), and merges
//! their answers with its own; a client that is not here is looked for, or disconnected,
//! wherever it is. Every item says its `node`. The other nodes are waited for at most a
//! second (as many as the cluster view says are up); a node that does not answer in time is
//! left out of the answer, not waited for.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::watch;

use super::ApiState;
use super::listing::{self, ClientQuery};
use crate::broker::Broker;
use crate::cluster::Cluster;

/// How long the other nodes' answers are waited for.
const WAIT: Duration = Duration::from_secs(1);

/// A question to every node's API.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) enum Ask {
    /// Its clients of `tenant` that `query` selects (a page and one).
    Clients {
        /// The tenant.
        tenant: String,
        /// The listing's query.
        query: ClientQuery,
    },
    /// Its subscriptions of `tenant` that `filter` covers, after `after` (a page and one).
    Subscriptions {
        /// The tenant.
        tenant: String,
        /// The query filter.
        filter: String,
        /// The cursor.
        after: Option<String>,
        /// The page size.
        limit: usize,
    },
    /// Its client `id` in detail, if it has it.
    Client {
        /// The tenant.
        tenant: String,
        /// The client id.
        id: String,
    },
    /// Disconnect its client `id` (and with `discard`, end its session), if it has it.
    Kick {
        /// The tenant.
        tenant: String,
        /// The client id.
        id: String,
        /// End the session too.
        discard: bool,
    },
}

/// What a node answers: its name, and its items (or its one answer).
#[derive(Debug, Serialize, Deserialize)]
struct Answer {
    node: String,
    items: Vec<(String, Value)>,
}

fn subject(cluster: &Cluster) -> String {
    format!("{}.api", cluster.prefix())
}

/// Adds the other nodes' answers to `ask` to `items` (this node's own, which get its name):
/// nothing more on a node of its own.
pub(super) async fn gather(state: &ApiState, ask: &Ask, items: &mut Vec<(String, Value)>) {
    let Some(cluster) = state.broker.peers_as::<Cluster>() else {
        return;
    };
    for (_, v) in items.iter_mut() {
        v["node"] = json!(cluster.node());
    }
    for answer in ask_all(cluster, ask).await {
        for (key, mut v) in answer.items {
            v["node"] = json!(answer.node);
            items.push((key, v));
        }
    }
}

/// The first answer another node gives to `ask` (with its `node`), if any.
pub(super) async fn first(state: &ApiState, ask: &Ask) -> Option<Value> {
    let cluster = state.broker.peers_as::<Cluster>()?;
    ask_all(cluster, ask).await.into_iter().find_map(|a| {
        let node = a.node;
        a.items.into_iter().next().map(|(_, mut v)| {
            v["node"] = json!(node);
            v
        })
    })
}

/// Asks every other node; returns the answers that came within `WAIT`.
async fn ask_all(cluster: &Cluster, ask: &Ask) -> Vec<Answer> {
    let expected = cluster.others_up();
    let nats = cluster.nats();
    let Ok(body) = serde_json::to_vec(ask) else {
        return Vec::new();
    };
    let inbox = nats.new_inbox();
    let Ok(mut replies) = nats.subscribe(inbox.clone()).await else {
        return Vec::new();
    };
    if nats
        .publish_with_reply(subject(cluster), inbox, body.into())
        .await
        .is_err()
    {
        return Vec::new();
    }
    let mut answers = Vec::new();
    let _ = tokio::time::timeout(WAIT, async {
        while answers.len() < expected {
            let Some(reply) = replies.next().await else {
                return;
            };
            if let Ok(answer) = serde_json::from_slice::<Answer>(&reply.payload)
                && answer.node != cluster.node()
            {
                answers.push(answer);
            }
        }
    })
    .await;
    answers
}

/// Answers the other nodes' questions with this node's own (until shutdown).
pub(crate) async fn answer(broker: Arc<Broker>, mut shutdown: watch::Receiver<bool>) {
    let Some(cluster) = broker.peers_as::<Cluster>() else {
        return;
    };
    let nats = cluster.nats();
    let Ok(mut asks) = nats.subscribe(subject(cluster)).await else {
        tracing::warn!("cannot subscribe to the cluster's API questions");
        return;
    };
    loop {
        let ask = tokio::select! {
            ask = asks.next() => match ask {
                Some(ask) => ask,
                None => return,
            },
            _ = shutdown.changed() => return,
        };
        let (Some(reply), Ok(question)) = (ask.reply, serde_json::from_slice::<Ask>(&ask.payload))
        else {
            continue;
        };
        let items = local(&broker, question);
        let answer = Answer {
            node: cluster.node().to_string(),
            items,
        };
        if let Ok(bytes) = serde_json::to_vec(&answer) {
            let _ = nats.publish(reply, Bytes::from(bytes)).await;
        }
    }
}

/// This node's answer to `ask`.
fn local(broker: &Broker, ask: Ask) -> Vec<(String, Value)> {
    let tenant_of = |name: &str| broker.find_tenant(name);
    match ask {
        Ask::Clients { tenant, query } => tenant_of(&tenant)
            .map(|t| listing::local_clients(&t, &query))
            .unwrap_or_default(),
        Ask::Subscriptions {
            tenant,
            filter,
            after,
            limit,
        } => tenant_of(&tenant)
            .map(|t| listing::local_subscriptions(&t, &filter, after.as_deref(), limit))
            .unwrap_or_default(),
        Ask::Client { tenant, id } => tenant_of(&tenant)
            .and_then(|t| listing::local_client(&t, &id))
            .map(|v| vec![(id, v)])
            .unwrap_or_default(),
        Ask::Kick {
            tenant,
            id,
            discard,
        } => tenant_of(&tenant)
            .and_then(|t| listing::local_kick(broker, &t, &id, discard))
            .map(|v| vec![(id, v)])
            .unwrap_or_default(),
    }
}
