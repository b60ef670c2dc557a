//! `/metrics`: the broker's counters (`crate::metrics`) and its state, sampled at scrape
//! time, in Prometheus' text exposition format, every name prefixed `herald_`.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use mqtt_codec::ProtocolVersion;

use crate::broker::Broker;
use crate::broker::stats::{CloseReason, DropReason, RefuseReason};
use crate::config::ListenerKind;
use crate::metrics::{Buckets, LISTENER_SLOTS, ListenerSlot};

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
const LISTENERS: [ListenerKind; LISTENER_SLOTS] = [
    ListenerKind::Mqtt,
    ListenerKind::Ws,
    ListenerKind::Tls,
    ListenerKind::Wss,
];

/// The protocol versions and their labels, in the order their series are written.
const PROTOCOLS: [(ProtocolVersion, &str); 3] = [
    (ProtocolVersion::V3_1, "3.1"),
    (ProtocolVersion::V3_1_1, "3.1.1"),
    (ProtocolVersion::V5, "5.0"),
];

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
    let traffic = s.hot.traffic();
    let c = &s.connections;

    family(
        &mut out,
        "herald_connections",
        "gauge",
        "Open MQTT connections (CONNECT accepted), by listener and protocol version.",
    );
    for kind in LISTENERS {
        for (v, proto) in PROTOCOLS {
            let n = c.open_count(kind, v);
            let _ = writeln!(
                out,
                "herald_connections{{listener=\"{}\",protocol=\"{proto}\"}} {n}",
                kind.label()
            );
        }
    }
    family(
        &mut out,
        "herald_connections_accepted_total",
        "counter",
        "Sockets accepted, by listener.",
    );
    for kind in LISTENERS {
        let n = c.accepted_count(kind);
        let _ = writeln!(
            out,
            "herald_connections_accepted_total{{listener=\"{}\"}} {n}",
            kind.label()
        );
    }
    family(
        &mut out,
        "herald_connections_closed_total",
        "counter",
        "Connections closed, by reason.",
    );
    for r in CloseReason::ALL {
        let _ = writeln!(
            out,
            "herald_connections_closed_total{{reason=\"{}\"}} {}",
            r.label(),
            s.closes(*r)
        );
    }
    family(
        &mut out,
        "herald_packets_received_total",
        "counter",
        "MQTT packets received from clients, by type.",
    );
    for (i, t) in PACKET_TYPES.iter().enumerate().skip(1) {
        let _ = writeln!(
            out,
            "herald_packets_received_total{{type=\"{t}\"}} {}",
            traffic.packets_in[i]
        );
    }
    family(
        &mut out,
        "herald_packets_sent_total",
        "counter",
        "MQTT packets sent to clients, by type.",
    );
    for (i, t) in PACKET_TYPES.iter().enumerate().skip(1) {
        let _ = writeln!(
            out,
            "herald_packets_sent_total{{type=\"{t}\"}} {}",
            traffic.packets_out[i]
        );
    }
    family(
        &mut out,
        "herald_received_bytes_total",
        "counter",
        "Bytes of MQTT packets received from clients (inside TLS and WebSocket framing), by type.",
    );
    for (i, t) in PACKET_TYPES.iter().enumerate().skip(1) {
        let n = traffic.bytes_in[i];
        let _ = writeln!(out, "herald_received_bytes_total{{type=\"{t}\"}} {n}");
    }
    family(
        &mut out,
        "herald_sent_bytes_total",
        "counter",
        "Bytes of MQTT packets sent to clients (inside TLS and WebSocket framing), by type.",
    );
    for (i, t) in PACKET_TYPES.iter().enumerate().skip(1) {
        let n = traffic.bytes_out[i];
        let _ = writeln!(out, "herald_sent_bytes_total{{type=\"{t}\"}} {n}");
    }
    family(
        &mut out,
        "herald_messages_published_total",
        "counter",
        "Messages published (by clients, wills and the API).",
    );
    let _ = writeln!(
        out,
        "herald_messages_published_total {}",
        s.published.load(Ordering::Relaxed)
    );
    family(
        &mut out,
        "herald_messages_delivered_total",
        "counter",
        "Messages written to subscribers.",
    );
    let _ = writeln!(
        out,
        "herald_messages_delivered_total {}",
        s.delivered.load(Ordering::Relaxed)
    );
    family(
        &mut out,
        "herald_messages_dropped_total",
        "counter",
        "Deliveries dropped, by reason.",
    );
    for r in DropReason::ALL {
        let _ = writeln!(
            out,
            "herald_messages_dropped_total{{reason=\"{}\"}} {}",
            r.label(),
            s.drops(*r)
        );
    }
    family(
        &mut out,
        "herald_publications_refused_total",
        "counter",
        "QoS 1/2 publications refused rather than acknowledged (v5: a reason code; 3.1.1: closed unacknowledged), by reason.",
    );
    for r in RefuseReason::ALL {
        let _ = writeln!(
            out,
            "herald_publications_refused_total{{reason=\"{}\"}} {}",
            r.label(),
            s.refusals(*r)
        );
    }
    for (name, help, value) in [
        (
            "herald_accepted_unqueued_total",
            "3.1.1 QoS 1/2 publications acknowledged although a copy could not be queued (listeners.v3_accept_refused).",
            s.accepted_unqueued.load(Ordering::Relaxed),
        ),
        (
            "herald_pushbacks_total",
            "Times a publisher stopped reading because a subscriber it feeds was congested.",
            s.pushbacks.load(Ordering::Relaxed),
        ),
        (
            "herald_stalled_subscribers_total",
            "Subscribers still congested after limits.stall_after_ms: they lose QoS 0 instead of slowing publishers.",
            s.stalls.load(Ordering::Relaxed),
        ),
    ] {
        family(&mut out, name, "counter", help);
        let _ = writeln!(out, "{name} {value}");
    }
    family(
        &mut out,
        "herald_queued_bytes",
        "gauge",
        "Bytes held by all session queues (limits.max_queued_bytes_total bounds it).",
    );
    let _ = writeln!(out, "herald_queued_bytes {}", s.queued_bytes());
    family(
        &mut out,
        "herald_messages_queued",
        "gauge",
        "Messages queued for sessions and not yet sent.",
    );
    let _ = writeln!(out, "herald_messages_queued {}", sampled.queued);
    family(
        &mut out,
        "herald_messages_inflight",
        "gauge",
        "QoS 1/2 messages sent and not yet acknowledged.",
    );
    let _ = writeln!(out, "herald_messages_inflight {}", sampled.inflight);
    family(
        &mut out,
        "herald_retained_messages",
        "gauge",
        "Retained messages.",
    );
    let _ = writeln!(out, "herald_retained_messages {}", sampled.retained);
    family(
        &mut out,
        "herald_subscriptions",
        "gauge",
        "Subscriptions held by sessions.",
    );
    let _ = writeln!(out, "herald_subscriptions {}", sampled.subscriptions);
    family(
        &mut out,
        "herald_sessions",
        "gauge",
        "Sessions, connected or not.",
    );
    let _ = writeln!(out, "herald_sessions {}", sampled.sessions);
    family(
        &mut out,
        "herald_idempotency_keys",
        "gauge",
        "Idempotency keys the HTTP API remembers.",
    );
    let _ = writeln!(out, "herald_idempotency_keys {}", sampled.idempotency_keys);
    http(&mut out, sampled);

    histogram(
        &mut out,
        "herald_delivery_latency_seconds",
        "Time from Herald receiving a message to writing it to a subscriber (sampled: the first delivery of each write batch and every 16th after it).",
        &s.hot.latency(),
    );

    family(
        &mut out,
        "herald_store_refused_total",
        "counter",
        "QoS 1/2 publications refused because the store is past its disk limits or failing.",
    );
    let _ = writeln!(
        out,
        "herald_store_refused_total {}",
        s.store_refused.load(Ordering::Relaxed)
    );
    if let Some(d) = &broker.durable {
        let j = d.journal.stats();
        histogram(
            &mut out,
            "herald_store_write_seconds",
            "Time to write one group commit, fsync included.",
            &j.write_seconds.read(),
        );
        histogram(
            &mut out,
            "herald_store_batch_ops",
            "Changes written per group commit (fsync batch size).",
            &j.batch_ops.read(),
        );
        family(
            &mut out,
            "herald_store_disk_bytes",
            "gauge",
            "Bytes the store takes on disk.",
        );
        let _ = writeln!(
            out,
            "herald_store_disk_bytes {}",
            sampled.store_bytes.unwrap_or(0)
        );
    }
    process(&mut out);
    out
}

/// The HTTP listener's connections.
fn http(out: &mut String, sampled: &Sampled) {
    family(
        out,
        "herald_http_connections",
        "gauge",
        "Open HTTP connections (API, metrics, health).",
    );
    let _ = writeln!(out, "herald_http_connections {}", sampled.http_open);
    family(
        out,
        "herald_http_connections_refused_total",
        "counter",
        "HTTP connections closed as soon as accepted: http.max_connections were open.",
    );
    let _ = writeln!(
        out,
        "herald_http_connections_refused_total {}",
        sampled.http_refused
    );
    family(
        out,
        "herald_http_connections_timed_out_total",
        "counter",
        "HTTP connections closed by a deadline: header (http.header_timeout_secs) or idle (http.idle_timeout_secs).",
    );
    for (phase, n) in [
        ("header", sampled.http_header_timeouts),
        ("idle", sampled.http_idle_timeouts),
    ] {
        let _ = writeln!(
            out,
            "herald_http_connections_timed_out_total{{phase=\"{phase}\"}} {n}"
        );
    }
}

/// The process's descriptors, CPU and memory, from /proc.
fn process(out: &mut String) {
    let fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count().saturating_sub(1));
    family(
        out,
        "herald_process_open_fds",
        "gauge",
        "Open file descriptors.",
    );
    let _ = writeln!(out, "herald_process_open_fds {fds}");
    let max = rlimit::Resource::NOFILE.get().map_or(0, |(soft, _)| soft);
    family(
        out,
        "herald_process_max_fds",
        "gauge",
        "The open-file limit (soft).",
    );
    let _ = writeln!(out, "herald_process_max_fds {max}");
    let ticks = rustix::param::clock_ticks_per_second() as f64;
    // Fields 14 and 15 of /proc/self/stat (after the command name in parentheses).
    let cpu = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let rest = &s[s.rfind(')')? + 2..];
            let f: Vec<&str> = rest.split(' ').collect();
            Some((f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?) / ticks)
        });
    family(
        out,
        "herald_process_cpu_seconds_total",
        "counter",
        "User and system CPU time.",
    );
    let _ = writeln!(
        out,
        "herald_process_cpu_seconds_total {}",
        cpu.unwrap_or(0.0)
    );
    let page = rustix::param::page_size() as u64;
    let rss = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split(' ').nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * page);
    family(
        out,
        "herald_process_resident_memory_bytes",
        "gauge",
        "Resident memory.",
    );
    let _ = writeln!(out, "herald_process_resident_memory_bytes {rss}");
}
