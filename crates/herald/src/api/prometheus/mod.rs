//! `/metrics`: the broker's counters (`crate::metrics`) and its state, sampled at scrape
//! time, in Prometheus' text exposition format, every name prefixed `herald_`.
//!
//! `render` writes the families in a fixed order, one function per group (connections,
//! traffic, messages, state, HTTP, latency, store, process); dashboards and alerts rely on
//! the names, help texts and labels staying as they are.

mod cluster;

use std::fmt::{Display, Write as _};
use std::sync::atomic::Ordering;

use crate::broker::Broker;
use crate::broker::stats::{CloseReason, DropReason, RefuseReason, Stats};
use crate::config::ListenerKind;
use crate::metrics::{Buckets, LISTENER_SLOTS, ListenerSlot, PROTOCOLS, TrafficTotals};

/// State sampled at scrape time.
#[derive(Debug, Default)]
pub(crate) struct Sampled {
    /// Sessions, connected or not.
    pub(crate) sessions: u64,
    /// Subscriptions held by sessions.
    pub(crate) subscriptions: u64,
    /// Messages queued for sessions, not yet sent.
    pub(crate) queued: u64,
    /// QoS 1/2 messages sent and not yet acknowledged.
    pub(crate) inflight: u64,
    /// Retained messages.
    pub(crate) retained: u64,
    /// Idempotency keys remembered by the API.
    pub(crate) idempotency_keys: u64,
    /// The store's size on disk (`None` in memory).
    pub(crate) store_bytes: Option<u64>,
    /// Open HTTP connections.
    pub(crate) http_open: u64,
    /// HTTP connections closed at once past `http.max_connections`.
    pub(crate) http_refused: u64,
    /// HTTP connections closed for sending no request head within `http.header_timeout_secs`.
    pub(crate) http_header_timeouts: u64,
    /// HTTP connections closed after `http.idle_timeout_secs` without a byte either way.
    pub(crate) http_idle_timeouts: u64,
}

/// Renders every metric of `broker`.
pub(crate) fn render(broker: &Broker, sampled: &Sampled) -> String {
    let mut out = String::with_capacity(16 * 1024);
    let s = &broker.stats;
    connections(&mut out, s);
    traffic(&mut out, &s.hot.traffic());
    messages(&mut out, s);
    state(&mut out, s, sampled);
    http(&mut out, sampled);
    histogram(
        &mut out,
        "herald_delivery_latency_seconds",
        "Time from Herald receiving a message to writing it to a subscriber (sampled: the first delivery of each write batch and every 16th after it).",
        &s.hot.latency(),
    );
    store(&mut out, broker, sampled);
    if let Some(gate) = broker.hooks.get::<crate::auth::Gate>() {
        auth(&mut out, &gate.stats);
    }
    tenants(&mut out, broker);
    if let Some(c) = broker.peers_as::<crate::cluster::Cluster>() {
        cluster::cluster(&mut out, c);
    }
    process(&mut out);
    out
}

/// A tenant's figures for the per-tenant families.
#[derive(Default)]
struct TenantFigures {
    connections: u64,
    published: u64,
    published_bytes: u64,
    delivered: u64,
    delivered_bytes: u64,
    sessions: u64,
    persistent: u64,
    subscriptions: u64,
    retained: u64,
    retained_bytes: u64,
    offline_messages: u64,
    offline_bytes: u64,
    breaches: Vec<u64>,
}

impl TenantFigures {
    fn of(t: &crate::broker::Tenant) -> TenantFigures {
        TenantFigures {
            connections: t.usage.connections.load(Ordering::Relaxed),
            published: t.usage.published.load(Ordering::Relaxed),
            published_bytes: t.usage.published_bytes.load(Ordering::Relaxed),
            delivered: t.usage.delivered.load(Ordering::Relaxed),
            delivered_bytes: t.usage.delivered_bytes.load(Ordering::Relaxed),
            sessions: t.sessions.len() as u64,
            persistent: t.usage.persistent.load(Ordering::Relaxed),
            subscriptions: t.index.len() as u64,
            retained: t.retained.len() as u64,
            retained_bytes: t.retained.bytes() as u64,
            offline_messages: t.usage.offline_messages.load(Ordering::Relaxed),
            offline_bytes: t.usage.offline_bytes.load(Ordering::Relaxed),
            breaches: crate::broker::quota::Breach::ALL
                .iter()
                .map(|b| t.usage.breaches(*b))
                .collect(),
        }
    }

    fn add(&mut self, other: &TenantFigures) {
        self.connections += other.connections;
        self.published += other.published;
        self.published_bytes += other.published_bytes;
        self.delivered += other.delivered;
        self.delivered_bytes += other.delivered_bytes;
        self.sessions += other.sessions;
        self.persistent += other.persistent;
        self.subscriptions += other.subscriptions;
        self.retained += other.retained;
        self.retained_bytes += other.retained_bytes;
        self.offline_messages += other.offline_messages;
        self.offline_bytes += other.offline_bytes;
        self.breaches.resize(other.breaches.len(), 0);
        for (a, b) in self.breaches.iter_mut().zip(&other.breaches) {
            *a += b;
        }
    }
}

/// Per-tenant families, with bounded cardinality: the tenants of `tenants.metrics_allow`,
/// then the busiest by connections up to `tenants.metrics_top` labels; the rest summed
/// under `tenant="_other"`. The default tenant is `tenant="_default"`.
fn tenants(out: &mut String, broker: &Broker) {
    let (top, allow) = {
        let cfg = broker.config();
        (cfg.tenants.metrics_top, cfg.tenants.metrics_allow.clone())
    };
    let mut all: Vec<(String, TenantFigures)> = broker
        .tenants()
        .iter()
        .map(|t| {
            let name = if t.name.is_empty() {
                "_default".to_string()
            } else {
                t.name.to_string()
            };
            (name, TenantFigures::of(t))
        })
        .collect();
    // Allowed first, then by connections, then by name.
    all.sort_by(|(a, fa), (b, fb)| {
        let (ia, ib) = (allow.contains(a), allow.contains(b));
        ib.cmp(&ia)
            .then(fb.connections.cmp(&fa.connections))
            .then(a.cmp(b))
    });
    let mut shown: Vec<(String, TenantFigures)> = Vec::new();
    let mut other: Option<TenantFigures> = None;
    for (name, figures) in all {
        if shown.len() < top {
            shown.push((name, figures));
        } else {
            other
                .get_or_insert_with(TenantFigures::default)
                .add(&figures);
        }
    }
    if let Some(other) = other {
        shown.push(("_other".into(), other));
    }
    let label = |name: &str| name.replace('\\', "\\\\").replace('"', "\\\"");
    // Gauges, then counters: one sample per tenant shown.
    for (name_of_family, kind, help, pick) in [
        (
            "herald_tenant_connections",
            "gauge",
            "Open connections, by tenant (the busiest tenants.metrics_top, the rest as _other).",
            (|f: &TenantFigures| f.connections) as fn(&TenantFigures) -> u64,
        ),
        (
            "herald_tenant_sessions",
            "gauge",
            "Sessions, connected or not, by tenant.",
            |f: &TenantFigures| f.sessions,
        ),
        (
            "herald_tenant_subscriptions",
            "gauge",
            "Subscriptions, by tenant.",
            |f: &TenantFigures| f.subscriptions,
        ),
        (
            "herald_tenant_persistent_sessions",
            "gauge",
            "Sessions that outlive their connection, by tenant.",
            |f: &TenantFigures| f.persistent,
        ),
        (
            "herald_tenant_retained_messages",
            "gauge",
            "Retained messages, by tenant.",
            |f: &TenantFigures| f.retained,
        ),
        (
            "herald_tenant_retained_bytes",
            "gauge",
            "Topic and payload bytes of retained messages, by tenant.",
            |f: &TenantFigures| f.retained_bytes,
        ),
        (
            "herald_tenant_offline_queued_messages",
            "gauge",
            "QoS 1/2 messages queued for offline sessions, by tenant (each copy).",
            |f: &TenantFigures| f.offline_messages,
        ),
        (
            "herald_tenant_offline_queued_bytes",
            "gauge",
            "Topic and payload bytes queued for offline sessions, by tenant (each copy).",
            |f: &TenantFigures| f.offline_bytes,
        ),
        (
            "herald_tenant_messages_published_total",
            "counter",
            "Messages published into each tenant (by its clients, their wills and the HTTP API).",
            |f: &TenantFigures| f.published,
        ),
        (
            "herald_tenant_published_bytes_total",
            "counter",
            "Topic and payload bytes of the messages published into each tenant.",
            |f: &TenantFigures| f.published_bytes,
        ),
        (
            "herald_tenant_messages_delivered_total",
            "counter",
            "Messages written to each tenant's clients.",
            |f: &TenantFigures| f.delivered,
        ),
        (
            "herald_tenant_delivered_bytes_total",
            "counter",
            "Bytes of PUBLISH packets written to each tenant's clients.",
            |f: &TenantFigures| f.delivered_bytes,
        ),
    ] {
        family(out, name_of_family, kind, help);
        for (name, f) in &shown {
            let tenant = label(name);
            let _ = writeln!(out, "{name_of_family}{{tenant=\"{tenant}\"}} {}", pick(f));
        }
    }
    family(
        out,
        "herald_tenant_quota_breaches_total",
        "counter",
        "Quota and rate breaches, by tenant and quota (each told to the client: CONNACK, SUBACK, PUBACK or a 429).",
    );
    for (name, f) in &shown {
        for (i, breach) in crate::broker::quota::Breach::ALL.iter().enumerate() {
            let _ = writeln!(
                out,
                "herald_tenant_quota_breaches_total{{tenant=\"{}\",reason=\"{}\"}} {}",
                label(name),
                breach.label(),
                f.breaches.get(i).copied().unwrap_or(0)
            );
        }
    }
}

/// Authentication and access rules (only when a method, a tenant rule or ACLs are
/// configured).
fn auth(out: &mut String, g: &crate::auth::gate::GateStats) {
    labelled(
        out,
        "herald_auth_admitted_total",
        "counter",
        "Clients admitted, by the authentication method that recognised them (or anonymous).",
        "method",
        g.admitted
            .iter()
            .map(|(name, n)| (*name, n.load(Ordering::Relaxed))),
    );
    labelled(
        out,
        "herald_auth_refused_total",
        "counter",
        "CONNECTs refused by authentication, by reason.",
        "reason",
        crate::auth::DenyReason::ALL
            .iter()
            .map(|r| (r.label(), g.refused(*r))),
    );
    labelled(
        out,
        "herald_acl_denied_total",
        "counter",
        "Actions the access rules denied: PUBLISH packets, subscription filters, retained messages not delivered.",
        "action",
        [
            ("publish", g.denied_publish.load(Ordering::Relaxed)),
            ("subscribe", g.denied_subscribe.load(Ordering::Relaxed)),
            ("retained", g.denied_retained.load(Ordering::Relaxed)),
        ],
    );
}

/// The packet types, by their wire number (index 0 unused), for labels.
const PACKET_TYPES: [&str; 16] = [
    "reserved",
    "connect",
    "connack",
    "publish",
    "puback",
    "pubrec",
    "pubrel",
    "pubcomp",
    "subscribe",
    "suback",
    "unsubscribe",
    "unsuback",
    "pingreq",
    "pingresp",
    "disconnect",
    "auth",
];

/// The listener kinds, in the order their series are written.
pub(super) const LISTENERS: [ListenerKind; LISTENER_SLOTS] = ListenerKind::ALL;

/// A listener kind's slot in the connection counters: its place in `LISTENERS`.
impl ListenerSlot for ListenerKind {
    fn slot(self) -> usize {
        match self {
            ListenerKind::Mqtt => 0,
            ListenerKind::Ws => 1,
            ListenerKind::Tls => 2,
            ListenerKind::Wss => 3,
        }
    }
}

/// Writes one metric family's header.
fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Writes a family of one sample without labels.
fn single(out: &mut String, name: &str, kind: &str, help: &str, value: impl Display) {
    family(out, name, kind, help);
    let _ = writeln!(out, "{name} {value}");
}

/// Writes a family of one sample per value of its one label, `label`.
fn labelled<V: Display>(
    out: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    label: &str,
    samples: impl IntoIterator<Item = (&'static str, V)>,
) {
    family(out, name, kind, help);
    for (value, n) in samples {
        let _ = writeln!(out, "{name}{{{label}=\"{value}\"}} {n}");
    }
}

/// Writes a histogram family: cumulative buckets, then the sum and the count.
fn histogram(out: &mut String, name: &str, help: &str, h: &Buckets) {
    family(out, name, "histogram", help);
    let mut cumulative = 0;
    for (bound, n) in h.bounds.iter().zip(&h.counts) {
        cumulative += n;
        let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
    }
    cumulative += h.counts[h.bounds.len()];
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
    let _ = writeln!(out, "{name}_sum {}\n{name}_count {cumulative}", h.sum);
}

/// Connections open, sockets accepted, connections closed and why.
fn connections(out: &mut String, s: &Stats) {
    let c = &s.connections;
    family(
        out,
        "herald_connections",
        "gauge",
        "Open MQTT connections (CONNECT accepted), by listener and protocol version.",
    );
    for kind in LISTENERS {
        for (v, proto) in PROTOCOLS {
            let _ = writeln!(
                out,
                "herald_connections{{listener=\"{}\",protocol=\"{proto}\"}} {}",
                kind.label(),
                c.open_count(kind, v)
            );
        }
    }
    labelled(
        out,
        "herald_connections_accepted_total",
        "counter",
        "Sockets accepted, by listener.",
        "listener",
        LISTENERS.map(|kind| (kind.label(), c.accepted_count(kind))),
    );
    labelled(
        out,
        "herald_connections_closed_total",
        "counter",
        "Connections closed, by reason.",
        "reason",
        CloseReason::ALL.iter().map(|r| (r.label(), s.closes(*r))),
    );
}

/// MQTT packets and their bytes, each way, by packet type.
fn traffic(out: &mut String, t: &TrafficTotals) {
    for (name, help, counts) in [
        (
            "herald_packets_received_total",
            "MQTT packets received from clients, by type.",
            &t.packets_in,
        ),
        (
            "herald_packets_sent_total",
            "MQTT packets sent to clients, by type.",
            &t.packets_out,
        ),
        (
            "herald_received_bytes_total",
            "Bytes of MQTT packets received from clients (inside TLS and WebSocket framing), by type.",
            &t.bytes_in,
        ),
        (
            "herald_sent_bytes_total",
            "Bytes of MQTT packets sent to clients (inside TLS and WebSocket framing), by type.",
            &t.bytes_out,
        ),
    ] {
        let samples = PACKET_TYPES.into_iter().zip(counts).skip(1);
        labelled(out, name, "counter", help, "type", samples);
    }
}

/// Messages published and delivered, deliveries dropped, publications refused, and the
/// flow control between publishers and subscribers.
fn messages(out: &mut String, s: &Stats) {
    single(
        out,
        "herald_messages_published_total",
        "counter",
        "Messages published (by clients, wills and the API).",
        s.published.load(Ordering::Relaxed),
    );
    single(
        out,
        "herald_messages_delivered_total",
        "counter",
        "Messages written to subscribers.",
        s.delivered.load(Ordering::Relaxed),
    );
    labelled(
        out,
        "herald_messages_dropped_total",
        "counter",
        "Deliveries dropped, by reason.",
        "reason",
        DropReason::ALL.iter().map(|r| (r.label(), s.drops(*r))),
    );
    labelled(
        out,
        "herald_publications_refused_total",
        "counter",
        "QoS 1/2 publications refused rather than acknowledged (v5: a reason code; 3.1.1: closed unacknowledged), by reason.",
        "reason",
        RefuseReason::ALL
            .iter()
            .map(|r| (r.label(), s.refusals(*r))),
    );
    for (name, help, value) in [
        (
            "herald_accepted_unqueued_total",
            "3.1.1 QoS 1/2 publications acknowledged although a copy could not be queued (listeners.v3_accept_refused).",
            &s.accepted_unqueued,
        ),
        (
            "herald_pushbacks_total",
            "Times a publisher stopped reading because a subscriber it feeds was congested.",
            &s.pushbacks,
        ),
        (
            "herald_stalled_subscribers_total",
            "Subscribers still congested after limits.stall_after_ms: they lose QoS 0 instead of slowing publishers.",
            &s.stalls,
        ),
        (
            "herald_sessions_expired_total",
            "Sessions ended because their expiry interval passed with no connection.",
            &s.sessions_expired,
        ),
        (
            "herald_sys_messages_published_total",
            "$SYS/ messages Herald published: status topics and client events.",
            &s.sys_published,
        ),
        (
            "herald_sys_publish_refused_total",
            "PUBLISH packets and CONNECT wills to $SYS/ refused (only Herald publishes there).",
            &s.sys_refused,
        ),
    ] {
        single(out, name, "counter", help, value.load(Ordering::Relaxed));
    }
}

/// Gauges of what the node holds: queues, in-flight messages, retained messages,
/// subscriptions, sessions, idempotency keys.
fn state(out: &mut String, s: &Stats, sampled: &Sampled) {
    for (name, help, value) in [
        (
            "herald_queued_bytes",
            "Bytes held by all session queues (limits.max_queued_bytes_total bounds it).",
            s.queued_bytes(),
        ),
        (
            "herald_messages_queued",
            "Messages queued for sessions and not yet sent.",
            sampled.queued,
        ),
        (
            "herald_messages_inflight",
            "QoS 1/2 messages sent and not yet acknowledged.",
            sampled.inflight,
        ),
        (
            "herald_retained_messages",
            "Retained messages.",
            sampled.retained,
        ),
        (
            "herald_subscriptions",
            "Subscriptions held by sessions.",
            sampled.subscriptions,
        ),
        (
            "herald_sessions",
            "Sessions, connected or not.",
            sampled.sessions,
        ),
        (
            "herald_idempotency_keys",
            "Idempotency keys the HTTP API remembers.",
            sampled.idempotency_keys,
        ),
    ] {
        single(out, name, "gauge", help, value);
    }
}

/// The HTTP listener's connections.
fn http(out: &mut String, sampled: &Sampled) {
    single(
        out,
        "herald_http_connections",
        "gauge",
        "Open HTTP connections (API, metrics, health).",
        sampled.http_open,
    );
    single(
        out,
        "herald_http_connections_refused_total",
        "counter",
        "HTTP connections closed as soon as accepted: http.max_connections were open.",
        sampled.http_refused,
    );
    labelled(
        out,
        "herald_http_connections_timed_out_total",
        "counter",
        "HTTP connections closed by a deadline: header (http.header_timeout_secs) or idle (http.idle_timeout_secs).",
        "phase",
        [
            ("header", sampled.http_header_timeouts),
            ("idle", sampled.http_idle_timeouts),
        ],
    );
}

/// Publications the store refused; with a store, its group commits and its size on disk.
fn store(out: &mut String, broker: &Broker, sampled: &Sampled) {
    single(
        out,
        "herald_store_refused_total",
        "counter",
        "QoS 1/2 publications refused because the store is past its disk limits or failing.",
        broker.stats.store_refused.load(Ordering::Relaxed),
    );
    let Some(d) = broker.persist.durable() else {
        return;
    };
    let j = d.journal.stats();
    histogram(
        out,
        "herald_store_write_seconds",
        "Time to write one group commit, fsync included.",
        &j.write_seconds.read(),
    );
    histogram(
        out,
        "herald_store_batch_ops",
        "Changes written per group commit (fsync batch size).",
        &j.batch_ops.read(),
    );
    single(
        out,
        "herald_store_disk_bytes",
        "gauge",
        "Bytes the store takes on disk.",
        sampled.store_bytes.unwrap_or(0),
    );
}

/// The process's descriptors, CPU and memory, from /proc.
fn process(out: &mut String) {
    let p = super::process::Process::read(true);
    single(
        out,
        "herald_process_open_fds",
        "gauge",
        "Open file descriptors.",
        p.open_fds.unwrap_or(0),
    );
    single(
        out,
        "herald_process_max_fds",
        "gauge",
        "The open-file limit (soft).",
        p.max_fds,
    );
    single(
        out,
        "herald_process_cpu_seconds_total",
        "counter",
        "User and system CPU time.",
        p.cpu_seconds,
    );
    single(
        out,
        "herald_process_resident_memory_bytes",
        "gauge",
        "Resident memory.",
        p.resident_bytes,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listener_kind_has_its_own_slot() {
        let mut seen = [false; LISTENER_SLOTS];
        for kind in LISTENERS {
            assert!(!std::mem::replace(&mut seen[kind.slot()], true), "{kind:?}");
        }
    }

    #[test]
    fn histograms_are_cumulative_with_sum_and_count() {
        let h = Buckets {
            bounds: vec![0.5, 1.0],
            counts: vec![1, 2, 3],
            sum: 9.25,
        };
        let mut out = String::new();
        histogram(&mut out, "herald_x", "X.", &h);
        assert_eq!(
            out,
            "# HELP herald_x X.\n# TYPE herald_x histogram\n\
             herald_x_bucket{le=\"0.5\"} 1\nherald_x_bucket{le=\"1\"} 3\n\
             herald_x_bucket{le=\"+Inf\"} 6\nherald_x_sum 9.25\nherald_x_count 6\n"
        );
    }
}
