//! Prometheus metrics: counters and histograms cheap enough for the hot path, and `/metrics`
//! in the text exposition format, every name prefixed `herald_`.
//!
//! Counters touched per packet or per delivery are sharded: each thread adds to its own
//! cache-line-padded slots (an uncontended atomic add, no label look-up, no allocation), and
//! a scrape sums the shards. Gauges that describe state (queued messages, subscriptions) are
//! computed at scrape time instead of being maintained on every change.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use mqtt_codec::PacketType;

use crate::config::ListenerKind;

/// Shards of the hot counters; threads beyond this share slots (still correct, a little
/// contended).
const SHARDS: usize = 16;

/// The packet types, by their wire number (index 0 unused), for labels.
pub const PACKET_TYPES: [&str; 16] = [
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

/// This thread's shard.
fn shard() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SHARD: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
    }
    SHARD.with(|s| *s)
}

/// Counters one thread adds to.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Traffic {
    packets_in: [AtomicU64; 16],
    packets_out: [AtomicU64; 16],
    bytes_in: [AtomicU64; 16],
    bytes_out: [AtomicU64; 16],
    /// Publish-to-deliver latency, a bucket per bound and one above, then the sum (µs).
    latency: [AtomicU64; LATENCY_BOUNDS_US.len() + 1],
    latency_sum_us: AtomicU64,
}

/// Upper bounds of the publish-to-deliver latency buckets, microseconds.
const LATENCY_BOUNDS_US: [u64; 12] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 1_000_000,
];

/// Delivery latencies of one batch, counted on the stack.
#[derive(Debug, Default)]
pub struct Latencies {
    buckets: [u32; LATENCY_BOUNDS_US.len() + 1],
    sum_us: u64,
}

impl Latencies {
    /// A message delivered `us` microseconds after Herald received it.
    pub fn observe(&mut self, us: u64) {
        let i = LATENCY_BOUNDS_US.partition_point(|&b| b < us);
        self.buckets[i] += 1;
        self.sum_us += us;
    }
}

/// The hot-path counters of one broker.
#[derive(Debug)]
pub struct Hot {
    shards: Box<[Traffic]>,
}

impl Default for Hot {
    fn default() -> Self {
        Hot {
            shards: (0..SHARDS).map(|_| Traffic::default()).collect(),
        }
    }
}

impl Hot {
    fn mine(&self) -> &Traffic {
        &self.shards[shard()]
    }

    /// A packet of `bytes` received.
    pub fn packet_in(&self, t: PacketType, bytes: usize) {
        let mine = self.mine();
        mine.packets_in[t as usize & 15].fetch_add(1, Ordering::Relaxed);
        mine.bytes_in[t as usize & 15].fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// `n` packets of type `t`, `bytes` in all, queued to be sent.
    pub fn packets_out(&self, t: PacketType, n: u64, bytes: usize) {
        let mine = self.mine();
        mine.packets_out[t as usize & 15].fetch_add(n, Ordering::Relaxed);
        mine.bytes_out[t as usize & 15].fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// Adds a batch of delivery latencies counted on the stack (`Latencies`): a few atomic
    /// adds per batch instead of two per message.
    pub fn delivered(&self, batch: &Latencies) {
        if batch.sum_us == 0 && batch.buckets.iter().all(|&n| n == 0) {
            return;
        }
        let t = self.mine();
        for (slot, &n) in t.latency.iter().zip(&batch.buckets) {
            if n > 0 {
                slot.fetch_add(u64::from(n), Ordering::Relaxed);
            }
        }
        t.latency_sum_us.fetch_add(batch.sum_us, Ordering::Relaxed);
    }

    fn sum(&self, f: impl Fn(&Traffic) -> &AtomicU64) -> u64 {
        self.shards
            .iter()
            .map(|t| f(t).load(Ordering::Relaxed))
            .sum()
    }
}

/// A histogram for the store's writer thread (one writer: no sharding needed).
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    buckets: Box<[AtomicU64]>,
    /// Sum, in millionths of the unit.
    sum_micro: AtomicU64,
}

impl Histogram {
    /// A histogram with these upper bounds.
    pub fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_micro: AtomicU64::new(0),
        }
    }

    /// Records `v`.
    pub fn observe(&self, v: f64) {
        let i = self.bounds.partition_point(|&b| b < v);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_micro
            .fetch_add((v * 1e6) as u64, Ordering::Relaxed);
    }

    fn write(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (i, bound) in self.bounds.iter().enumerate() {
            cumulative += self.buckets[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        cumulative += self.buckets[self.bounds.len()].load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
        let sum = self.sum_micro.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {cumulative}");
    }
}

/// Bounds of the store's write-and-fsync time, seconds.
pub const WRITE_SECONDS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];
/// Bounds of the number of changes per group commit.
pub const BATCH_OPS: &[f64] = &[
    1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 5000.0,
];

/// Open connections by listener and protocol (3.1, 3.1.1, 5.0).
#[derive(Debug, Default)]
pub struct Connections {
    open: [[AtomicU64; 3]; 4],
    accepted: [AtomicU64; 4],
}

fn listener_index(kind: ListenerKind) -> usize {
    match kind {
        ListenerKind::Mqtt => 0,
        ListenerKind::Ws => 1,
        ListenerKind::Tls => 2,
        ListenerKind::Wss => 3,
    }
}

const LISTENERS: [ListenerKind; 4] = [
    ListenerKind::Mqtt,
    ListenerKind::Ws,
    ListenerKind::Tls,
    ListenerKind::Wss,
];
const PROTOCOLS: [&str; 3] = ["3.1", "3.1.1", "5.0"];

fn protocol_index(v: mqtt_codec::ProtocolVersion) -> usize {
    match v {
        mqtt_codec::ProtocolVersion::V3_1 => 0,
        mqtt_codec::ProtocolVersion::V3_1_1 => 1,
        mqtt_codec::ProtocolVersion::V5 => 2,
    }
}

impl Connections {
    /// A socket accepted on a listener of `kind`.
    pub fn accepted(&self, kind: ListenerKind) {
        self.accepted[listener_index(kind)].fetch_add(1, Ordering::Relaxed);
    }

    /// A connection's CONNECT accepted (`+1`) or the connection closed (`-1`).
    pub fn open(&self, kind: ListenerKind, v: mqtt_codec::ProtocolVersion, up: bool) {
        let slot = &self.open[listener_index(kind)][protocol_index(v)];
        if up {
            slot.fetch_add(1, Ordering::Relaxed);
        } else {
            slot.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Writes one metric family's header.
fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// State sampled at scrape time.
#[derive(Debug, Default)]
pub struct Sampled {
    /// Sessions, connected or not.
    pub sessions: u64,
    /// Subscriptions held by sessions.
    pub subscriptions: u64,
    /// Messages queued for sessions, not yet sent.
    pub queued: u64,
    /// QoS 1/2 messages sent and not yet acknowledged.
    pub inflight: u64,
    /// Retained messages.
    pub retained: u64,
    /// Idempotency keys remembered by the API.
    pub idempotency_keys: u64,
    /// The store's size on disk (`None` in memory).
    pub store_bytes: Option<u64>,
    /// Open HTTP connections.
    pub http_open: u64,
    /// HTTP connections closed at once past `http.max_connections`.
    pub http_refused: u64,
    /// HTTP connections closed for sending no request head within `http.header_timeout_secs`.
    pub http_header_timeouts: u64,
    /// HTTP connections closed after `http.idle_timeout_secs` without a byte either way.
    pub http_idle_timeouts: u64,
}

/// Renders every metric of `broker`.
pub fn render(broker: &crate::broker::Broker, sampled: &Sampled) -> String {
    use crate::broker::stats::{CloseReason, DropReason};
    let mut out = String::with_capacity(16 * 1024);
    let s = &broker.stats;
    let hot = &s.hot;
    let c = &s.connections;

    family(
        &mut out,
        "herald_connections",
        "gauge",
        "Open MQTT connections (CONNECT accepted), by listener and protocol version.",
    );
    for kind in LISTENERS {
        for (p, proto) in PROTOCOLS.iter().enumerate() {
            let n = c.open[listener_index(kind)][p].load(Ordering::Relaxed);
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
        let n = c.accepted[listener_index(kind)].load(Ordering::Relaxed);
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
            hot.sum(|x| &x.packets_in[i])
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
            hot.sum(|x| &x.packets_out[i])
        );
    }
    family(
        &mut out,
        "herald_received_bytes_total",
        "counter",
        "Bytes of MQTT packets received from clients (inside TLS and WebSocket framing), by type.",
    );
    for (i, t) in PACKET_TYPES.iter().enumerate().skip(1) {
        let n = hot.sum(|x| &x.bytes_in[i]);
        let _ = writeln!(out, "herald_received_bytes_total{{type=\"{t}\"}} {n}");
    }
    family(
        &mut out,
        "herald_sent_bytes_total",
        "counter",
        "Bytes of MQTT packets sent to clients (inside TLS and WebSocket framing), by type.",
    );
    for (i, t) in PACKET_TYPES.iter().enumerate().skip(1) {
        let n = hot.sum(|x| &x.bytes_out[i]);
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
    for r in crate::broker::stats::RefuseReason::ALL {
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

    // Publish-to-deliver latency.
    let name = "herald_delivery_latency_seconds";
    family(
        &mut out,
        name,
        "histogram",
        "Time from Herald receiving a message to writing it to a subscriber (sampled: the first delivery of each write batch and every 16th after it).",
    );
    let mut cumulative = 0;
    for (i, bound) in LATENCY_BOUNDS_US.iter().enumerate() {
        cumulative += hot.sum(|x| &x.latency[i]);
        let _ = writeln!(
            out,
            "{name}_bucket{{le=\"{}\"}} {cumulative}",
            *bound as f64 / 1e6
        );
    }
    cumulative += hot.sum(|x| &x.latency[LATENCY_BOUNDS_US.len()]);
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
    let _ = writeln!(
        out,
        "{name}_sum {}",
        hot.sum(|x| &x.latency_sum_us) as f64 / 1e6
    );
    let _ = writeln!(out, "{name}_count {cumulative}");

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
    if let Some(d) = broker.persist.durable() {
        let j = d.journal.stats();
        j.write_seconds.write(
            &mut out,
            "herald_store_write_seconds",
            "Time to write one group commit, fsync included.",
        );
        j.batch_ops.write(
            &mut out,
            "herald_store_batch_ops",
            "Changes written per group commit (fsync batch size).",
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
