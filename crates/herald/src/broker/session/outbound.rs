//! Moving deliveries from the session queue to the connection: packet ids, the client's
//! Receive Maximum and byte bound on what it holds unacknowledged, outbound QoS 2 stages,
//! resend on resume, outbound topic aliases.
//!
//! A QoS 0 message that needs no per-subscriber header is written as the bytes encoded once
//! for every subscriber of its protocol version (`Message::shared_qos0`). Otherwise a header
//! is encoded for this subscriber (packet id, QoS, retain, subscription identifiers, topic
//! alias, remaining expiry) and the payload is appended shared.

use std::sync::atomic::Ordering;
use std::time::Instant;

use mqtt_codec::{Ack, Packet, QoS};

use super::closing::Closing;
use super::link::{Link, Out};
use super::{Inflight, SessionId, SessionState, Stage};
use crate::broker::message::Delivery;
use crate::broker::persist::Persistence;
use crate::broker::stats::{CloseReason, DropReason};
use crate::store::journal::Ticket;

/// Stop moving deliveries once this much waits for the socket: the rest stays in the session
/// queue, where its bounds apply.
const WRITE_BUDGET: usize = 256 * 1024;

/// Deliveries taken from the session queue per lock.
const BATCH: usize = 64;

/// What a pump wrote.
#[derive(Default)]
struct Sent {
    delivered: u64,
    latencies: crate::metrics::Latencies,
}

impl Sent {
    /// Counts a delivery (`written`: it was, not dropped as too large for the client).
    /// Sampled: one delivery in 16 is timed (an Instant subtraction and a bucket search per
    /// message measured 6% of a saturating QoS 0 fan-out).
    fn note(&mut self, written: bool, delivery: &Delivery, now: Instant) {
        if written && self.delivered.is_multiple_of(16) {
            let waited = now.saturating_duration_since(delivery.message.received_at);
            self.latencies.observe(waited.as_micros() as u64);
        }
        self.delivered += u64::from(written);
    }
}

/// How much a client takes unacknowledged: its Receive Maximum, and (a bound on memory for a
/// client that reads but does not acknowledge) `limits.max_inflight_bytes`.
#[derive(Debug, Clone, Copy)]
struct Window {
    messages: usize,
    bytes: usize,
    /// Topic and payload bytes this batch may take (at least one delivery is taken): the
    /// tenant's outbound rate, else no bound.
    budget: usize,
}

/// What taking a batch did.
struct Taken {
    /// Deliveries dropped as expired.
    expired: u64,
    /// The store ticket the batch waits for.
    ticket: Ticket,
    /// What it gave back to the node's queued bytes.
    released: u64,
    /// Whether a QoS 2 delivery was taken (a replicated session writes its packet id down
    /// before sending it).
    staged: bool,
}

impl SessionState {
    /// Moves deliveries from the queue into `batch` (QoS 1/2 ones into the inflight window
    /// too, with packet ids) while `window` allows, up to `BATCH`. Expired ones are dropped,
    /// and done in the store.
    fn take_batch(
        &mut self,
        batch: &mut Vec<(Delivery, u16)>,
        window: Window,
        now: Instant,
        persist: &Persistence,
        id: SessionId,
    ) -> Taken {
        let mut taken = Taken {
            expired: 0,
            ticket: Ticket::NONE,
            released: 0,
            staged: false,
        };
        let mut spent = 0usize;
        while batch.len() < BATCH {
            let Some(front) = self.queue.front() else {
                break;
            };
            if !batch.is_empty() && spent.saturating_add(front.weight()) > window.budget {
                break;
            }
            spent = spent.saturating_add(front.weight());
            // QoS 1/2 wait while the client's window is full.
            if front.qos != QoS::AtMostOnce
                && (self.inflight.len() >= window.messages
                    || self.inflight_bytes > 0
                        && self.inflight_bytes + front.weight() > window.bytes)
            {
                break;
            }
            let Some(d) = self.pop_queued(&mut taken.released) else {
                break;
            };
            if d.message.expired(now) {
                taken.expired += 1;
                self.finish(persist, id, &d, false);
                continue;
            }
            let packet_id = if d.qos == QoS::AtMostOnce {
                0
            } else {
                let packet_id = self.allocate_packet_id();
                taken.staged |= d.qos == QoS::ExactlyOnce;
                if let (QoS::ExactlyOnce, Some(stored)) = (d.qos, &d.stored) {
                    // A QoS 2 PUBLISH goes out once its packet id is on disk: after a restart
                    // Herald re-sends it with the same id, never as a new one. And once the
                    // message itself is: the publisher's QoS 2 packet id is stored with it.
                    let t = persist.stage(id, &d, packet_id, false);
                    taken.ticket = taken.ticket.max(t).max(stored.message.ticket());
                }
                self.inflight_bytes += d.weight();
                self.inflight.push_back(Inflight {
                    packet_id,
                    delivery: d.clone(),
                    stage: Stage::Sent,
                });
                packet_id
            };
            batch.push((d, packet_id));
        }
        taken
    }
}

impl Link {
    /// Moves queued deliveries into the write queue while the socket keeps up, the client's
    /// Receive Maximum allows, and the write budget lasts. `Ok(true)` when it stopped at the
    /// write budget (more deliveries may be waiting), `Ok(false)` when nothing more may be
    /// sent now.
    pub fn pump(&mut self, out: &mut impl Out) -> Result<bool, Closing> {
        self.pump_within(out, usize::MAX)
    }

    /// As `pump`, taking deliveries of at most `budget` topic and payload bytes (at least
    /// one): what the tenant's outbound rate allows at a time.
    pub fn pump_within(&mut self, out: &mut impl Out, budget: usize) -> Result<bool, Closing> {
        let now = Instant::now();
        let mut batch: Vec<(Delivery, u16)> = Vec::new();
        let mut sent = Sent::default();
        let queued_before = out.len();
        let mut budget = budget;
        loop {
            if out.len() >= WRITE_BUDGET || budget == 0 {
                self.count(&sent, out.len().saturating_sub(queued_before));
                return Ok(true);
            }
            let (ticket, refill, staged) = self.take_batch(&mut batch, now, budget)?;
            let taken: usize = batch.iter().map(|(d, _)| d.weight()).sum();
            budget = budget.saturating_sub(taken.max(1));
            if batch.is_empty() {
                // Retained messages stream in as the queue empties, a page at a time.
                let actor = self.actor();
                let hooks = &self.broker.hooks;
                let may_read = |topic: &str| hooks.read(actor, topic);
                if refill
                    && self
                        .broker
                        .stream_retained(&self.tenant, &self.session, BATCH, may_read)
                {
                    continue;
                }
                break;
            }
            out.gate(ticket);
            if staged {
                self.gate_replica(out);
            }
            for (delivery, packet_id) in batch.drain(..) {
                let written = self.write_delivery(out, &delivery, packet_id, false)?;
                sent.note(written, &delivery, now);
            }
        }
        self.count(&sent, out.len().saturating_sub(queued_before));
        Ok(false)
    }

    /// Takes up to `BATCH` deliveries from the session queue into `batch` under one lock
    /// (the session lock is taken per batch, not per message), with their packet ids. Returns
    /// the store ticket they wait for (QoS 2 stages) and whether retained messages wait for
    /// the queue to empty.
    fn take_batch(
        &mut self,
        batch: &mut Vec<(Delivery, u16)>,
        now: Instant,
        budget: usize,
    ) -> Result<(Ticket, bool, bool), Closing> {
        let broker = &self.broker;
        let limits = &broker.config().limits;
        let window = Window {
            messages: usize::from(self.client_receive_maximum),
            bytes: limits.max_inflight_bytes,
            budget,
        };
        let (taken, waiters, refill) = {
            let mut st = self.session.lock();
            if st.generation != self.generation {
                return Err(Closing::new(CloseReason::SessionTakenOver));
            }
            let taken = st.take_batch(batch, window, now, &broker.persist, self.session.id);
            // Publishers parked on this queue go on once it is at low water.
            let waiters = st.relieve(limits);
            (taken, waiters, st.queue.is_empty() && st.retained.is_some())
        };
        broker.stats.release_queued(taken.released);
        waiters.into_iter().for_each(std::task::Waker::wake);
        if taken.expired > 0 {
            broker.stats.dropped(DropReason::Expired, taken.expired);
        }
        Ok((taken.ticket, refill, taken.staged))
    }

    /// Counts what a pump wrote: one update of the shared counters per pump, not one per
    /// message.
    fn count(&self, sent: &Sent, bytes: usize) {
        if sent.delivered == 0 {
            return;
        }
        let stats = &self.broker.stats;
        stats.delivered.fetch_add(sent.delivered, Ordering::Relaxed);
        let usage = &self.tenant.usage;
        usage.delivered.fetch_add(sent.delivered, Ordering::Relaxed);
        usage
            .delivered_bytes
            .fetch_add(bytes as u64, Ordering::Relaxed);
        let hot = &stats.hot;
        hot.packets_out(mqtt_codec::PacketType::Publish, sent.delivered, bytes);
        hot.delivered(&sent.latencies);
    }

    /// Re-sends, in order, what a resumed session had sent without acknowledgement: PUBLISH
    /// with DUP set, or PUBREL for QoS 2 messages already received [MQTT-4.4.0-1].
    pub(super) fn resend_inflight(&mut self, out: &mut impl Out) -> Result<(), Closing> {
        let pending: Vec<Inflight> = self.session.lock().inflight.iter().cloned().collect();
        for entry in pending {
            match entry.stage {
                Stage::Sent => {
                    self.write_delivery(out, &entry.delivery, entry.packet_id, true)?;
                }
                Stage::Released => self.send(out, &Packet::PubRel(Ack::new(entry.packet_id)))?,
            }
        }
        Ok(())
    }

    /// Writes one delivery; `Ok(false)` when it was not sent (too large for the client).
    fn write_delivery(
        &mut self,
        out: &mut impl Out,
        d: &Delivery,
        packet_id: u16,
        dup: bool,
    ) -> Result<bool, Closing> {
        let v = self.version;
        let max = self.client_max_packet_size as usize;
        let stats = &self.broker.stats;
        // A client that takes topic aliases gets its own header (the shared bytes carry the
        // full topic and no alias).
        let shared = d.qos == QoS::AtMostOnce
            && !d.retain
            && d.subscription_identifiers.is_empty()
            && self.client_alias_maximum == 0;
        if shared && let Some(bytes) = d.message.shared_qos0(v) {
            if bytes.len() > max {
                stats.dropped(DropReason::TooLargeForClient, 1);
                return Ok(false);
            }
            out.bytes(bytes);
            return Ok(true);
        }
        let remaining = d.message.remaining_expiry(std::time::Instant::now());
        let ids = if v.is_v5() {
            d.subscription_identifiers.to_vec()
        } else {
            Vec::new()
        };
        let mut publish = d
            .message
            .publish(d.qos, d.retain, packet_id, remaining, ids);
        publish.dup = dup;
        let too_large = publish.encoded_len(v).map_or(true, |len| len > max);
        if too_large {
            // Not sent, and treated as delivered [MQTT-3.1.2-25].
            if packet_id != 0 {
                self.finish_inflight(packet_id, Stage::Sent);
            }
            self.broker.stats.dropped(DropReason::TooLargeForClient, 1);
            return Ok(false);
        }
        if v.is_v5() && self.client_alias_maximum > 0 {
            self.apply_outbound_alias(&mut publish);
        }
        out.publish(&publish, v)
            .map_err(|_| Closing::new(CloseReason::ProtocolError))?;
        Ok(true)
    }

    /// Uses a topic alias the client allows: the first `client_alias_maximum` distinct topics
    /// get one, sent with the topic the first time and instead of it afterwards.
    fn apply_outbound_alias(&mut self, publish: &mut mqtt_codec::Publish) {
        let maximum = usize::from(self.client_alias_maximum);
        let aliases = &mut self.rare().outbound;
        if let Some(&alias) = aliases.get(&publish.topic) {
            publish.properties.topic_alias = Some(alias);
            publish.topic = mqtt_codec::ByteString::new();
        } else if aliases.len() < maximum {
            let alias = aliases.len() as u16 + 1;
            aliases.insert(publish.topic.clone(), alias);
            publish.properties.topic_alias = Some(alias);
        }
    }
}
