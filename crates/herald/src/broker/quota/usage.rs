//! What a tenant uses of its quotas, counted where it changes: connections, traffic,
//! persistent sessions, what its offline sessions are owed; and its breaches.

use std::sync::atomic::{AtomicU64, Ordering};

use super::Breach;
use crate::broker::Tenant;
use crate::config::TenantLimits;

/// What a tenant is using, and its breaches.
#[derive(Debug, Default)]
pub struct Usage {
    /// Open connections.
    pub connections: AtomicU64,
    /// Messages published into the tenant (by its clients, its wills, the HTTP API).
    pub published: AtomicU64,
    /// Topic and payload bytes of those messages.
    pub published_bytes: AtomicU64,
    /// Messages written to the tenant's clients.
    pub delivered: AtomicU64,
    /// Bytes written to the tenant's clients for them (PUBLISH packets).
    pub delivered_bytes: AtomicU64,
    /// Sessions that outlive their connection (expiry above 0), connected or not.
    pub persistent: AtomicU64,
    /// QoS 1/2 deliveries waiting in the queues of the tenant's offline sessions, and their
    /// topic and payload bytes (each copy counted: what the sessions are owed).
    pub offline_messages: AtomicU64,
    /// See `offline_messages`.
    pub offline_bytes: AtomicU64,
    /// Sessions ended because their expiry interval passed with no connection.
    pub expired: AtomicU64,
    breaches: [AtomicU64; Breach::ALL.len()],
    /// The last two samples of the traffic counters (`sample`), for per-second rates.
    samples: std::sync::Mutex<Option<(Sample, Sample)>>,
}

/// A tenant's traffic counters at one instant.
#[derive(Debug, Clone, Copy)]
struct Sample {
    at: std::time::Instant,
    counts: [u64; 4],
}

/// A tenant's traffic a second, over the last sampling window.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Traffic {
    /// Messages published into the tenant.
    pub published: f64,
    /// Their bytes.
    pub published_bytes: f64,
    /// Messages written to its clients.
    pub delivered: f64,
    /// Their bytes.
    pub delivered_bytes: f64,
}

impl Usage {
    /// Counts a breach of `quota`.
    pub fn breach(&self, quota: Breach) {
        self.breaches[quota as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Breaches of `quota` so far.
    pub fn breaches(&self, quota: Breach) -> u64 {
        self.breaches[quota as usize].load(Ordering::Relaxed)
    }

    /// Counts a message of `bytes` published into the tenant.
    pub fn note_published(&self, bytes: usize) {
        self.published.fetch_add(1, Ordering::Relaxed);
        self.published_bytes
            .fetch_add(bytes as u64, Ordering::Relaxed);
    }

    fn counts(&self) -> [u64; 4] {
        [
            self.published.load(Ordering::Relaxed),
            self.published_bytes.load(Ordering::Relaxed),
            self.delivered.load(Ordering::Relaxed),
            self.delivered_bytes.load(Ordering::Relaxed),
        ]
    }

    /// Takes a sample of the traffic counters (the API does, every few seconds), keeping it
    /// and the one before.
    pub fn sample(&self) {
        let now = Sample {
            at: std::time::Instant::now(),
            counts: self.counts(),
        };
        let mut s = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        *s = Some(match *s {
            Some((_, last)) => (last, now),
            None => (now, now),
        });
    }

    /// Traffic a second since the older of the last two samples (zeros before the first).
    pub fn rates(&self) -> Traffic {
        let Some((then, _)) = *self.samples.lock().unwrap_or_else(|p| p.into_inner()) else {
            return Traffic::default();
        };
        let now = self.counts();
        let secs = then.at.elapsed().as_secs_f64().max(0.001);
        let rate =
            |i: usize| (now[i].saturating_sub(then.counts[i]) as f64 / secs * 10.0).round() / 10.0;
        Traffic {
            published: rate(0),
            published_bytes: rate(1),
            delivered: rate(2),
            delivered_bytes: rate(3),
        }
    }

    /// Moves `messages` deliveries of `bytes` into (`add`) or out of the offline count.
    pub fn offline(&self, add: bool, messages: usize, bytes: usize) {
        if messages == 0 {
            return;
        }
        let (m, b) = (messages as u64, bytes as u64);
        if add {
            self.offline_messages.fetch_add(m, Ordering::AcqRel);
            self.offline_bytes.fetch_add(b, Ordering::AcqRel);
        } else {
            sub(&self.offline_messages, m);
            sub(&self.offline_bytes, b);
        }
    }

    /// Counts one more (`add`) or one fewer persistent session.
    pub fn persistent(&self, add: bool) {
        if add {
            self.persistent.fetch_add(1, Ordering::AcqRel);
        } else {
            sub(&self.persistent, 1);
        }
    }
}

/// Takes `n` from a count that never goes below 0: a count out of step would be a bug
/// (tests/tenants.rs checks they agree with the sessions), and one wrapped round would
/// refuse everything its quota bounds.
fn sub(count: &AtomicU64, n: u64) {
    let before = count
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| {
            Some(c.saturating_sub(n))
        })
        .unwrap_or_default();
    debug_assert!(before >= n, "a count went below 0: {before} - {n}");
}

/// The bounds on what a tenant's offline sessions may be owed (`max_offline_queued_*`,
/// `max_store_bytes` less its retained bytes), and where they are counted. Made per
/// publication; its settings are read only when a copy goes to an offline session.
pub struct Offline<'a> {
    tenant: &'a Tenant,
    defaults: &'a TenantLimits,
    /// (messages, bytes), read once.
    bounds: std::cell::OnceCell<(u64, u64)>,
}

impl<'a> Offline<'a> {
    /// The bounds of `tenant`, its own settings over `defaults`.
    pub fn new(tenant: &'a Tenant, defaults: &'a TenantLimits) -> Offline<'a> {
        Offline {
            tenant,
            defaults,
            bounds: std::cell::OnceCell::new(),
        }
    }

    fn bounds(&self) -> (u64, u64) {
        *self.bounds.get_or_init(|| {
            let own = self.tenant.own();
            let d = self.defaults;
            let messages = own
                .max_offline_queued_messages
                .or(d.max_offline_queued_messages);
            let mut bytes = own.max_offline_queued_bytes.or(d.max_offline_queued_bytes);
            if let Some(store) = own.max_store_bytes.or(d.max_store_bytes) {
                let room = store.saturating_sub(self.tenant.retained.bytes() as u64);
                bytes = Some(bytes.map_or(room, |b| b.min(room)));
            }
            (messages.unwrap_or(u64::MAX), bytes.unwrap_or(u64::MAX))
        })
    }

    /// Counts a delivery of `bytes` queued for an offline session, if the bounds allow it;
    /// else counts the breach and says which (counted before it is checked, and taken back
    /// if over: however many workers queue at once, the bound holds).
    pub fn take(&self, bytes: usize) -> Result<(), Breach> {
        let usage = &self.tenant.usage;
        let (max_messages, max_bytes) = self.bounds();
        let b = bytes as u64;
        let before_m = usage.offline_messages.fetch_add(1, Ordering::AcqRel);
        let before_b = usage.offline_bytes.fetch_add(b, Ordering::AcqRel);
        if before_m < max_messages && before_b.saturating_add(b) <= max_bytes {
            return Ok(());
        }
        usage.offline(false, 1, bytes);
        let own = self.tenant.own();
        let by_store = before_m < max_messages
            && own
                .max_offline_queued_bytes
                .or(self.defaults.max_offline_queued_bytes)
                .is_none_or(|q| before_b.saturating_add(b) <= q);
        let breach = if by_store {
            Breach::Store
        } else {
            Breach::OfflineQueue
        };
        usage.breach(breach);
        Err(breach)
    }
}
