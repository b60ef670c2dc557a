//! Metric counters and histograms, cheap enough for the hot path. Every layer may count here;
//! this module depends on nothing of Herald's (only on the codec's packet types and protocol
//! versions). `api::prometheus` reads them and renders `/metrics`.
//!
//! Counters touched per packet or per delivery are sharded: each thread adds to its own
//! cache-line-padded slots (an uncontended atomic add, no label look-up, no allocation), and
//! a scrape sums the shards. Gauges that describe state (queued messages, subscriptions) are
//! computed at scrape time instead of being maintained on every change.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use mqtt_codec::{PacketType, ProtocolVersion};

/// Shards of the hot counters; threads beyond this share slots (still correct, a little
/// contended).
const SHARDS: usize = 16;

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

/// Packets and bytes each way, summed over every shard at one read. Each array is indexed
/// by the packet type's wire number (`PacketType as usize`, 1 to 15; 0 is unused).
#[derive(Debug, Default)]
pub struct TrafficTotals {
    /// Packets received from clients.
    pub packets_in: [u64; 16],
    /// Packets queued to be sent to clients.
    pub packets_out: [u64; 16],
    /// Bytes of the packets received.
    pub bytes_in: [u64; 16],
    /// Bytes of the packets queued to be sent.
    pub bytes_out: [u64; 16],
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

    /// Packets and bytes each way so far, by packet type.
    pub fn traffic(&self) -> TrafficTotals {
        let mut totals = TrafficTotals::default();
        for i in 0..16 {
            totals.packets_in[i] = self.sum(|x| &x.packets_in[i]);
            totals.packets_out[i] = self.sum(|x| &x.packets_out[i]);
            totals.bytes_in[i] = self.sum(|x| &x.bytes_in[i]);
            totals.bytes_out[i] = self.sum(|x| &x.bytes_out[i]);
        }
        totals
    }

    /// The publish-to-deliver latencies so far, in seconds.
    pub fn latency(&self) -> Buckets {
        Buckets {
            bounds: LATENCY_BOUNDS_US.iter().map(|&b| b as f64 / 1e6).collect(),
            counts: (0..=LATENCY_BOUNDS_US.len())
                .map(|i| self.sum(|x| &x.latency[i]))
                .collect(),
            sum: self.sum(|x| &x.latency_sum_us) as f64 / 1e6,
        }
    }

    fn sum(&self, f: impl Fn(&Traffic) -> &AtomicU64) -> u64 {
        self.shards
            .iter()
            .map(|t| f(t).load(Ordering::Relaxed))
            .sum()
    }
}

/// A histogram read at one moment, in the unit it is exported in.
#[derive(Debug)]
pub struct Buckets {
    /// The upper bound of every bucket but the last, which has none (`+Inf`).
    pub bounds: Vec<f64>,
    /// Values counted in each bucket (not cumulative): one more than `bounds`.
    pub counts: Vec<u64>,
    /// The sum of every value.
    pub sum: f64,
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

    /// What it has recorded so far.
    pub fn read(&self) -> Buckets {
        Buckets {
            bounds: self.bounds.to_vec(),
            counts: self
                .buckets
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect(),
            sum: self.sum_micro.load(Ordering::Relaxed) as f64 / 1e6,
        }
    }
}

/// Bounds of the store's write-and-fsync time, seconds.
pub(crate) const WRITE_SECONDS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];
/// Bounds of the number of changes per group commit.
pub(crate) const BATCH_OPS: &[f64] = &[
    1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 5000.0,
];

/// Slots for listener kinds in `Connections`.
pub(crate) const LISTENER_SLOTS: usize = 4;

/// The protocol versions and their labels, in the order metrics, `/api/v1/stats` and `$SYS`
/// list them.
pub(crate) const PROTOCOLS: [(ProtocolVersion, &str); 3] = [
    (ProtocolVersion::V3_1, "3.1"),
    (ProtocolVersion::V3_1_1, "3.1.1"),
    (ProtocolVersion::V5, "5.0"),
];

/// A kind of listener as `Connections` counts it: its slot, below `LISTENER_SLOTS`. The
/// counters take the kind as it is, without knowing the configuration that defines it.
pub trait ListenerSlot: Copy {
    /// This kind's slot.
    fn slot(self) -> usize;
}

/// Open connections by listener and protocol (3.1, 3.1.1, 5.0).
#[derive(Debug, Default)]
pub struct Connections {
    open: [[AtomicU64; 3]; LISTENER_SLOTS],
    accepted: [AtomicU64; LISTENER_SLOTS],
}

fn protocol_index(v: ProtocolVersion) -> usize {
    match v {
        ProtocolVersion::V3_1 => 0,
        ProtocolVersion::V3_1_1 => 1,
        ProtocolVersion::V5 => 2,
    }
}

impl Connections {
    /// A socket accepted on a listener of `kind`.
    pub fn accepted(&self, kind: impl ListenerSlot) {
        self.accepted[kind.slot()].fetch_add(1, Ordering::Relaxed);
    }

    /// A connection's CONNECT accepted (`+1`) or the connection closed (`-1`).
    pub fn open(&self, kind: impl ListenerSlot, v: ProtocolVersion, up: bool) {
        let slot = &self.open[kind.slot()][protocol_index(v)];
        if up {
            slot.fetch_add(1, Ordering::Relaxed);
        } else {
            slot.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Sockets accepted so far on listeners of `kind`.
    pub fn accepted_count(&self, kind: impl ListenerSlot) -> u64 {
        self.accepted[kind.slot()].load(Ordering::Relaxed)
    }

    /// Connections open now on listeners of `kind` that speak `v`.
    pub fn open_count(&self, kind: impl ListenerSlot, v: ProtocolVersion) -> u64 {
        self.open[kind.slot()][protocol_index(v)].load(Ordering::Relaxed)
    }
}
