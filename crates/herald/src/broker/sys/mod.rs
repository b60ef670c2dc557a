//! The `$SYS/` topics: Herald's status as MQTT messages, for tools that read mosquitto's
//! (`mosquitto_sub -t '$SYS/broker/#'`) and EMQX's.
//!
//! - **Status** (`values`): mosquitto's names (`$SYS/broker/uptime`, `.../clients/connected`,
//!   `.../load/messages/received/1min`, ...) and Herald's own (`$SYS/herald/...`), retained,
//!   published by one task (`run`) every `sys.interval_secs`, only the values that changed.
//!   Each tenant has its own view in its own namespace: the default tenant's (the
//!   operator's) is the node's; another tenant's counts its own clients, sessions, traffic
//!   and stored messages only. A view is published only while its tenant has a subscription
//!   to a `$SYS` filter (the index counts them): the first one asks the task to publish at
//!   once (`Sys::watch`), and when the last goes, the tenant's `$SYS` retained messages go.
//! - **Client events** (`events`): EMQX's `connected`/`disconnected`, as they happen.
//!
//! Delivery is a local publication (`Broker::publish_sys`): routed to this node's
//! subscribers through the tenant's index as any message, kept as the retained message of
//! its topic without being stored (a restart starts afresh, as mosquitto's `$SYS` does), not
//! counted as a publication, not forwarded to other nodes: `$SYS/broker/...` describes the
//! broker a client is connected to, and each node of a cluster publishes its own (its name
//! is in `$SYS/herald/node` and in the `$SYS/brokers/<node>/...` topics). Clients may not
//! publish to `$SYS/` (refused as not authorized, `session::inbound`; the HTTP API too), so
//! every `$SYS` retained message is Herald's: they count in no tenant's retained quota.

mod events;
mod load;
mod values;
pub mod watch;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use mqtt_codec::{ByteString, QoS};
use tokio::sync::{Notify, watch as signal};

pub use events::Connected;
use values::View;

use super::message::Message;
use super::session::Session;
use super::{Broker, Tenant, quota, router};

/// The least time between two publications a new subscription asks for: a client that
/// subscribes and unsubscribes in a loop makes the task publish at most this often.
const POKE_GAP: Duration = Duration::from_millis(200);

/// The cluster's nodes that are up, by name, asked at each publication (set by the server
/// when the node is clustered).
pub type NodesFn = Box<dyn Fn(&Broker) -> Vec<String> + Send + Sync>;

/// What the broker keeps for the `$SYS/` topics between the task's publications.
#[derive(Default)]
pub struct Sys {
    /// Tenants that gained a `$SYS` subscription since the task last looked: it publishes
    /// their view at once, rather than at its next interval.
    pending: Mutex<HashSet<ByteString>>,
    /// Wakes the task for `pending`.
    poke: Arc<Notify>,
    /// The cluster's nodes, when clustered.
    nodes: OnceLock<NodesFn>,
    /// This node's name (`cluster.node_id`, else the host name), once asked.
    node: OnceLock<Arc<str>>,
}

impl std::fmt::Debug for Sys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sys")
            .field("clustered", &self.nodes.get().is_some())
            .finish_non_exhaustive()
    }
}

impl Sys {
    /// `tenant` has a new subscription to a `$SYS` filter: its view is published now if it
    /// was not.
    pub fn watch(&self, tenant: &Tenant) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        pending.insert(tenant.name.clone());
        drop(pending);
        self.poke.notify_one();
    }

    /// Names the cluster's nodes that are up (`$SYS/brokers`, `$SYS/herald/cluster/nodes`).
    pub fn set_nodes(&self, nodes: NodesFn) {
        let _ = self.nodes.set(nodes);
    }

    fn take_pending(&self) -> HashSet<ByteString> {
        std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl Broker {
    /// This node's name, as the cluster knows it (`cluster.node_id`, else the host name).
    pub fn node_name(&self) -> Arc<str> {
        self.sys
            .node
            .get_or_init(|| self.config().cluster.node().into())
            .clone()
    }

    /// Publishes a `$SYS` message of Herald's in `tenant`, on this node only: routed to the
    /// matching subscribers (QoS 0, never pushing back: a full queue loses it), and if
    /// retained kept as its topic's retained message, not stored. Returns the sessions it
    /// matched.
    pub fn publish_sys(&self, tenant: &Tenant, message: &Arc<Message>) -> usize {
        if message.retain {
            tenant.retained.set(message, || ());
        }
        let config = self.config();
        let routed = router::route(
            tenant,
            message,
            None,
            &config.limits,
            &quota::Offline::new(tenant, &config.tenants.defaults),
            &self.stats,
            router::Target::All,
        );
        self.stats.sys_published.fetch_add(1, Ordering::Relaxed);
        routed.matched
    }

    /// Ends `session` of `tenant`, whose expiry passed with no connection since
    /// `generation`, and counts it (`$SYS/broker/clients/expired`).
    pub(crate) fn expire(&self, tenant: &Tenant, session: &Arc<Session>, generation: u64) {
        let ended = self.end_session_with(tenant, session, Some(generation), |_| Some(()));
        if ended.is_some() {
            self.stats.sessions_expired.fetch_add(1, Ordering::Relaxed);
            tenant.usage.expired.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Every tenant but the default one, in no order.
    fn other_tenants(&self) -> Vec<Arc<Tenant>> {
        let tenants = self.tenants.read().unwrap_or_else(|e| e.into_inner());
        tenants.values().cloned().collect()
    }
}

/// Publishes the `$SYS/` status topics until `shutdown` (or the broker is gone): every
/// `sys.interval_secs` (read at each turn, so a reload applies at once), and at once for a
/// tenant that gained its first `$SYS` subscription. Holds the broker weakly.
pub async fn run(broker: Weak<Broker>, mut shutdown: signal::Receiver<bool>) {
    let Some(poke) = broker.upgrade().map(|b| b.sys.poke.clone()) else {
        return;
    };
    let mut views: HashMap<ByteString, View> = HashMap::new();
    let mut last: Option<Instant> = None;
    loop {
        let mut poked = false;
        let wait = {
            let Some(b) = broker.upgrade() else {
                return;
            };
            let interval = Duration::from_secs(b.config().sys.interval_secs);
            let now = Instant::now();
            if interval.is_zero() {
                // Off: nothing stays published.
                for (name, _) in views.drain() {
                    if let Some(t) = b.find_tenant(&name) {
                        clear(&t);
                    }
                }
                b.sys.take_pending();
                last = None;
                Duration::from_secs(1)
            } else if last.is_none_or(|at| now >= at + interval) {
                b.sys.take_pending();
                publish_all(&b, &mut views, now);
                last = Some(now);
                interval.min(Duration::from_secs(1))
            } else {
                let pending = b.sys.take_pending();
                if !pending.is_empty() {
                    publish_new(&b, &mut views, pending, now);
                    poked = true;
                }
                let next = last.map_or(now, |at| at + interval);
                next.saturating_duration_since(now)
                    .min(Duration::from_secs(1))
            }
        };
        // After publishing for a new subscription, the next is at least `POKE_GAP` away.
        let gap = if poked { POKE_GAP } else { Duration::ZERO };
        tokio::select! {
            _ = tokio::time::sleep(gap.max(wait)) => {}
            _ = async {
                tokio::time::sleep(gap).await;
                poke.notified().await;
            } => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// Whether `t` has a subscription to a `$SYS` filter.
fn watched(t: &Tenant) -> bool {
    t.index.sys_subscriptions() > 0
}

/// One publication of every view: the load averages move on.
fn publish_all(b: &Broker, views: &mut HashMap<ByteString, View>, now: Instant) {
    let node = b.node_name();
    let mut totals = values::Totals::default();
    totals.add(&b.default_tenant);
    for t in b.other_tenants() {
        totals.add(&t);
        if watched(&t) {
            let view = views
                .entry(t.name.clone())
                .or_insert_with(|| values::tenant_view(&t, now));
            let out = values::tenant(b, &t, view, &node, Some(now));
            publish_changed(b, &t, out);
        } else if views.remove(&t.name).is_some() {
            clear(&t);
        }
    }
    let default = &b.default_tenant;
    if watched(default) {
        let view = views
            .entry(default.name.clone())
            .or_insert_with(|| values::node_view(b, now));
        let out = values::node(b, view, &totals, &node, &nodes(b, &node), Some(now));
        publish_changed(b, default, out);
    } else if views.remove(&default.name).is_some() {
        clear(default);
    }
}

/// Publishes the views of `pending` tenants that have none yet (a first subscription).
fn publish_new(
    b: &Broker,
    views: &mut HashMap<ByteString, View>,
    pending: HashSet<ByteString>,
    now: Instant,
) {
    let node = b.node_name();
    for name in pending {
        let Some(t) = b.find_tenant(&name) else {
            continue;
        };
        if views.contains_key(&name) || !watched(&t) {
            continue;
        }
        let out = if name.is_empty() {
            let mut totals = values::Totals::default();
            totals.add(&t);
            b.other_tenants().iter().for_each(|o| totals.add(o));
            let view = views
                .entry(name)
                .or_insert_with(|| values::node_view(b, now));
            values::node(b, view, &totals, &node, &nodes(b, &node), None)
        } else {
            let view = views
                .entry(name)
                .or_insert_with(|| values::tenant_view(&t, now));
            values::tenant(b, &t, view, &node, None)
        };
        publish_changed(b, &t, out);
    }
}

/// The cluster's nodes that are up; this one alone unclustered.
fn nodes(b: &Broker, node: &str) -> Vec<String> {
    match b.sys.nodes.get() {
        Some(f) => f(b),
        None => vec![node.to_string()],
    }
}

/// Publishes, retained, each of `out`'s values that differs from its topic's retained
/// message in `t`.
fn publish_changed(b: &Broker, t: &Tenant, out: values::Out) {
    for (topic, value) in out.0 {
        let same = t
            .retained
            .get(&topic)
            .is_some_and(|m| m.payload == value.as_bytes());
        if same {
            continue;
        }
        let m = Message::new(
            topic.into(),
            value.into(),
            QoS::AtMostOnce,
            true,
            Default::default(),
            0,
        );
        b.publish_sys(t, &m);
    }
}

/// Deletes `t`'s `$SYS` retained messages (nobody subscribes any more).
fn clear(t: &Tenant) {
    for m in t.retained.matching("$SYS/#") {
        let empty = Message::new(
            m.topic.clone(),
            bytes::Bytes::new(),
            QoS::AtMostOnce,
            true,
            Default::default(),
            0,
        );
        t.retained.set(&empty, || ());
    }
}
