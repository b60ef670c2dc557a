//! What each view of the `$SYS/` tree says, read from the counters that already exist
//! (`broker::stats`, the hot-path traffic counters of `metrics`, each tenant's `quota::Usage`,
//! its index, registry and retained map): the node's view, in the default tenant, and each
//! other tenant's own view, which says nothing of the node or of other tenants.

use std::fmt::Display;
use std::sync::atomic::Ordering;
use std::time::Instant;

use mqtt_codec::PacketType;

use crate::metrics::PROTOCOLS;

use super::load::{self, Load, WINDOWS};
use crate::broker::stats::{CloseReason, DropReason, RefuseReason};
use crate::broker::{Broker, Tenant};
use crate::config::ListenerKind;

/// The counters the node's view keeps load averages of, as `$SYS/broker/load/<name>/...`:
/// every MQTT packet and byte each way, PUBLISH packets each way and deliveries dropped,
/// CONNECT packets, sockets accepted.
const NODE_LOADS: [&str; 9] = [
    "messages/received",
    "messages/sent",
    "bytes/received",
    "bytes/sent",
    "publish/received",
    "publish/sent",
    "publish/dropped",
    "connections",
    "sockets",
];

/// The counters a tenant's view keeps load averages of: messages published into the
/// tenant and written to its clients (the node's packet counters are not kept per tenant).
const TENANT_LOADS: [&str; 2] = ["publish/received", "publish/sent"];

/// Listeners and protocols, as `$SYS/herald/connections/<listener>/<protocol>` names them.
const LISTENERS: [ListenerKind; 4] = ListenerKind::ALL;

/// What one view remembers between publications: its load averages and the counters they
/// were last updated from, and the most clients it has seen connected.
#[derive(Debug)]
pub(super) struct View {
    at: Instant,
    last: Vec<u64>,
    loads: Vec<Load>,
    max_connected: u64,
}

impl View {
    /// A view starting from `counters` (its load averages at 0, as mosquitto's start).
    fn new(counters: Vec<u64>, now: Instant) -> View {
        View {
            at: now,
            loads: vec![Load::default(); counters.len()],
            last: counters,
            max_connected: 0,
        }
    }

    /// Moves the load averages on to `counters` as they are `now`.
    fn advance(&mut self, counters: Vec<u64>, now: Instant) {
        let secs = now.saturating_duration_since(self.at).as_secs_f64();
        for ((load, was), is) in self.loads.iter_mut().zip(&self.last).zip(&counters) {
            load.update(is.saturating_sub(*was), secs);
        }
        self.last = counters;
        self.at = now;
    }

    fn loads(&self, names: &[&str], out: &mut Out) {
        for (name, load) in names.iter().zip(&self.loads) {
            for ((_, window), average) in WINDOWS.iter().zip(load.averages()) {
                out.put(
                    format!("$SYS/broker/load/{name}/{window}"),
                    load::format(average),
                );
            }
        }
    }
}

/// Topics and their payloads, in the order they are published.
#[derive(Debug, Default)]
pub(super) struct Out(pub(super) Vec<(String, String)>);

impl Out {
    fn put(&mut self, topic: impl Into<String>, value: impl Display) {
        self.0.push((topic.into(), value.to_string()));
    }
}

/// The node's figures that are kept per tenant, summed over every tenant.
#[derive(Debug, Default)]
pub(super) struct Totals {
    tenants: u64,
    sessions: u64,
    persistent: u64,
    subscriptions: u64,
    retained: u64,
    retained_bytes: u64,
    offline_messages: u64,
    offline_bytes: u64,
}

impl Totals {
    /// Adds `t`'s figures.
    pub(super) fn add(&mut self, t: &Tenant) {
        let f = Figures::of(t);
        self.tenants += 1;
        self.sessions += f.sessions;
        self.persistent += f.persistent;
        self.subscriptions += f.subscriptions;
        self.retained += f.retained;
        self.retained_bytes += f.retained_bytes;
        self.offline_messages += f.offline_messages;
        self.offline_bytes += f.offline_bytes;
    }
}

/// One tenant's figures.
struct Figures {
    connections: u64,
    sessions: u64,
    persistent: u64,
    subscriptions: u64,
    retained: u64,
    retained_bytes: u64,
    offline_messages: u64,
    offline_bytes: u64,
}

impl Figures {
    fn of(t: &Tenant) -> Figures {
        let u = &t.usage;
        let connections = u.connections.load(Ordering::Relaxed);
        let persistent = u.persistent.load(Ordering::Relaxed);
        // A session that ends with its connection exists only while connected: without
        // persistent sessions the count is the connections' (no walk of the registry's
        // shards, which a node with many tenants would pay for each one).
        let sessions = match persistent {
            0 => connections,
            _ => t.sessions.len() as u64,
        };
        Figures {
            connections,
            sessions,
            persistent,
            subscriptions: t.index.len() as u64,
            retained: t.retained.len() as u64,
            retained_bytes: t.retained.bytes() as u64,
            offline_messages: u.offline_messages.load(Ordering::Relaxed),
            offline_bytes: u.offline_bytes.load(Ordering::Relaxed),
        }
    }
}

/// What the node's and a tenant's views both say.
fn common(b: &Broker, node: &str, out: &mut Out) {
    let version = env!("CARGO_PKG_VERSION");
    let uptime = b.epoch.elapsed().as_secs();
    out.put("$SYS/broker/version", format!("herald version {version}"));
    out.put("$SYS/broker/uptime", format!("{uptime} seconds"));
    out.put(format!("$SYS/brokers/{node}/version"), version);
    out.put(format!("$SYS/brokers/{node}/uptime"), uptime);
    out.put("$SYS/herald/node", node);
}

/// mosquitto's client counts: connected, disconnected (sessions without a connection),
/// total (sessions), maximum (the most connected at a publication), expired.
fn clients(view: &mut View, connected: u64, sessions: u64, expired: u64, out: &mut Out) {
    view.max_connected = view.max_connected.max(connected);
    out.put("$SYS/broker/clients/connected", connected);
    out.put(
        "$SYS/broker/clients/disconnected",
        sessions.saturating_sub(connected),
    );
    out.put("$SYS/broker/clients/total", sessions.max(connected));
    out.put("$SYS/broker/clients/maximum", view.max_connected);
    out.put("$SYS/broker/clients/expired", expired);
}

/// What is stored: retained messages and what offline sessions are owed.
fn stored(retained: u64, retained_bytes: u64, messages: u64, bytes: u64, out: &mut Out) {
    out.put("$SYS/broker/retained messages/count", retained);
    out.put("$SYS/broker/messages/stored", retained + messages);
    out.put("$SYS/broker/store/messages/count", retained + messages);
    out.put("$SYS/broker/store/messages/bytes", retained_bytes + bytes);
    out.put("$SYS/herald/offline/messages", messages);
    out.put("$SYS/herald/offline/bytes", bytes);
}

/// The counters of the node's load averages, now.
fn node_counters(b: &Broker) -> Vec<u64> {
    let t = b.stats.hot.traffic();
    let (publish, connect) = (PacketType::Publish as usize, PacketType::Connect as usize);
    let dropped: u64 = DropReason::ALL.iter().map(|r| b.stats.drops(*r)).sum();
    vec![
        t.packets_in.iter().sum(),
        t.packets_out.iter().sum(),
        t.bytes_in.iter().sum(),
        t.bytes_out.iter().sum(),
        t.packets_in[publish],
        t.packets_out[publish],
        dropped,
        t.packets_in[connect],
        b.stats.accepted.load(Ordering::Relaxed),
    ]
}

/// The counters of a tenant's load averages, now.
fn tenant_counters(t: &Tenant) -> Vec<u64> {
    vec![
        t.usage.published.load(Ordering::Relaxed),
        t.usage.delivered.load(Ordering::Relaxed),
    ]
}

/// A new view of the node.
pub(super) fn node_view(b: &Broker, now: Instant) -> View {
    View::new(node_counters(b), now)
}

/// A new view of `t`.
pub(super) fn tenant_view(t: &Tenant, now: Instant) -> View {
    View::new(tenant_counters(t), now)
}

/// The node's view (the default tenant's): every figure of the node, `totals` summed over
/// its tenants; `nodes`, the cluster's nodes that are up (this one alone unclustered). With
/// `advance`, the load averages move on first.
pub(super) fn node(
    b: &Broker,
    view: &mut View,
    totals: &Totals,
    node: &str,
    nodes: &[String],
    advance: Option<Instant>,
) -> Out {
    let s = &b.stats;
    let counters = node_counters(b);
    let mut out = Out::default();
    common(b, node, &mut out);
    let connected: u64 = LISTENERS
        .iter()
        .flat_map(|k| {
            PROTOCOLS
                .iter()
                .map(|(v, _)| s.connections.open_count(*k, *v))
        })
        .sum();
    let expired = s.sessions_expired.load(Ordering::Relaxed);
    clients(view, connected, totals.sessions, expired, &mut out);
    let names = [
        "messages/received",
        "messages/sent",
        "bytes/received",
        "bytes/sent",
        "publish/messages/received",
        "publish/messages/sent",
        "publish/messages/dropped",
    ];
    for (name, value) in names.iter().zip(&counters) {
        out.put(format!("$SYS/broker/{name}"), value);
    }
    let t = b.stats.hot.traffic();
    let publish = PacketType::Publish as usize;
    out.put("$SYS/broker/publish/bytes/received", t.bytes_in[publish]);
    out.put("$SYS/broker/publish/bytes/sent", t.bytes_out[publish]);
    out.put("$SYS/broker/subscriptions/count", totals.subscriptions);
    stored(
        totals.retained,
        totals.retained_bytes,
        totals.offline_messages,
        totals.offline_bytes,
        &mut out,
    );
    if let Some(now) = advance {
        view.advance(counters, now);
    }
    view.loads(&NODE_LOADS, &mut out);
    // Herald's own.
    for kind in LISTENERS {
        for (version, protocol) in PROTOCOLS {
            let n = s.connections.open_count(kind, version);
            let listener = kind.label();
            out.put(format!("$SYS/herald/connections/{listener}/{protocol}"), n);
        }
    }
    out.put("$SYS/herald/sockets/open", s.open.load(Ordering::Relaxed));
    out.put("$SYS/herald/sessions/persistent", totals.persistent);
    out.put("$SYS/herald/tenants", totals.tenants);
    out.put("$SYS/herald/queued/bytes", s.queued_bytes());
    for r in CloseReason::ALL {
        out.put(format!("$SYS/herald/closes/{}", r.label()), s.closes(*r));
    }
    for r in DropReason::ALL {
        out.put(format!("$SYS/herald/drops/{}", r.label()), s.drops(*r));
    }
    for r in RefuseReason::ALL {
        out.put(format!("$SYS/herald/refused/{}", r.label()), s.refusals(*r));
    }
    out.put("$SYS/herald/pushbacks", s.pushbacks.load(Ordering::Relaxed));
    out.put("$SYS/herald/stalls", s.stalls.load(Ordering::Relaxed));
    if let Some(d) = b.persist.durable() {
        let disk = d.disk_bytes.load(Ordering::Relaxed);
        out.put("$SYS/herald/store/disk_bytes", disk);
    }
    out.put("$SYS/herald/cluster/nodes", nodes.len());
    out.put("$SYS/brokers", nodes.join(","));
    out
}

/// Tenant `t`'s own view: its clients, sessions, subscriptions, retained messages, what
/// its offline sessions are owed, its traffic and quota breaches.
pub(super) fn tenant(
    b: &Broker,
    t: &Tenant,
    view: &mut View,
    node: &str,
    advance: Option<Instant>,
) -> Out {
    let f = Figures::of(t);
    let u = &t.usage;
    let mut out = Out::default();
    common(b, node, &mut out);
    out.put("$SYS/herald/tenant", &*t.name);
    let expired = u.expired.load(Ordering::Relaxed);
    clients(view, f.connections, f.sessions, expired, &mut out);
    let counters = tenant_counters(t);
    out.put("$SYS/broker/publish/messages/received", counters[0]);
    out.put("$SYS/broker/publish/messages/sent", counters[1]);
    let published_bytes = u.published_bytes.load(Ordering::Relaxed);
    out.put("$SYS/broker/publish/bytes/received", published_bytes);
    let delivered_bytes = u.delivered_bytes.load(Ordering::Relaxed);
    out.put("$SYS/broker/publish/bytes/sent", delivered_bytes);
    out.put("$SYS/broker/subscriptions/count", f.subscriptions);
    stored(
        f.retained,
        f.retained_bytes,
        f.offline_messages,
        f.offline_bytes,
        &mut out,
    );
    if let Some(now) = advance {
        view.advance(counters, now);
    }
    view.loads(&TENANT_LOADS, &mut out);
    out.put("$SYS/herald/sessions/persistent", f.persistent);
    for q in crate::broker::quota::Breach::ALL {
        let n = u.breaches(*q);
        out.put(format!("$SYS/herald/quota_breaches/{}", q.label()), n);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_view_counts_the_most_connected_and_moves_its_loads_by_the_counters() {
        let start = Instant::now();
        let mut view = View::new(vec![100, 0], start);
        let mut out = Out::default();
        clients(&mut view, 5, 3, 0, &mut out);
        clients(&mut view, 2, 7, 1, &mut out);
        let got: Vec<(&str, &str)> = out
            .0
            .iter()
            .map(|(t, v)| (t.as_str(), v.as_str()))
            .collect();
        // Sessions below connections (a moment between two counts) never go negative.
        assert!(got.contains(&("$SYS/broker/clients/disconnected", "0")));
        assert!(got.contains(&("$SYS/broker/clients/total", "5")));
        assert_eq!(got[got.len() - 2], ("$SYS/broker/clients/maximum", "5"));
        assert!(got.contains(&("$SYS/broker/clients/disconnected", "5")));
        view.advance(vec![160, 0], start + std::time::Duration::from_secs(60));
        let mut out = Out::default();
        view.loads(&TENANT_LOADS, &mut out);
        assert_eq!(out.0.len(), 6);
        assert_eq!(out.0[0].0, "$SYS/broker/load/publish/received/1min");
        // 60 a minute for one minute: 1 - 1/e of it.
        assert_eq!(out.0[0].1, "37.93");
        assert_eq!(
            out.0[3],
            ("$SYS/broker/load/publish/sent/1min".into(), "0.00".into())
        );
    }
}
