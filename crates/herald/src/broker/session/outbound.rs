//! Moving deliveries from the session queue to the connection: packet ids, the client's
//! Receive Maximum and byte bound on what it holds unacknowledged, outbound QoS 2 stages,
//! resend on resume, outbound topic aliases.
//!
//! A QoS 0 message that needs no per-subscriber header is written as the bytes encoded once
//! for every subscriber of its protocol version (`Message::shared_qos0`). Otherwise a header
//! is encoded for this subscriber (packet id, QoS, retain, subscription identifiers, topic
//! alias, remaining expiry) and the payload is appended shared.

use std::sync::atomic::Ordering;

use mqtt_codec::{Ack, Packet, QoS};

use super::closing::Closing;
use super::link::{Link, Out};
use super::{Inflight, Stage};
use crate::broker::message::Delivery;
use crate::broker::stats::{CloseReason, DropReason};
use crate::store::journal::Ticket;

/// Stop moving deliveries once this much waits for the socket: the rest stays in the session
/// queue, where its bounds apply.
const WRITE_BUDGET: usize = 256 * 1024;

/// Deliveries taken from the session queue per lock.
const BATCH: usize = 64;

impl Link {
    /// Moves queued deliveries into the write queue while the socket keeps up, the client's
    /// Receive Maximum allows, and the write budget lasts. `Ok(true)` when it stopped at the
    /// write budget (more deliveries may be waiting), `Ok(false)` when nothing more may be
    /// sent now.
    pub fn pump(&mut self, out: &mut impl Out) -> Result<bool, Closing> {
        let window = usize::from(self.client_receive_maximum);
        let now = std::time::Instant::now();
        let mut batch: Vec<(Delivery, u16)> = Vec::new();
        let mut delivered = 0u64;
        let mut latencies = crate::metrics::Latencies::default();
        let queued_before = out.len();
        let broker = self.broker.clone();
        let persist = &broker.persist;
        let max_inflight_bytes = broker.config().limits.max_inflight_bytes;
        let mut more = false;
        loop {
            if out.len() >= WRITE_BUDGET {
                more = true;
                break;
            }
            let mut expired = 0;
            let mut ticket = Ticket::NONE;
            let mut released = 0;
            let (waiters, refill) = {
                // Up to BATCH deliveries per lock: the session lock is taken per batch, not
                // per message.
                let mut st = self.session.lock();
                if st.generation != self.generation {
                    return Err(Closing::new(CloseReason::SessionTakenOver));
                }
                while batch.len() < BATCH {
                    let Some(front) = st.queue.front() else { break };
                    // QoS 1/2 wait while the client's window is full, or (a bound on memory
                    // for a client that reads but does not acknowledge) the bytes it has not
                    // acknowledged reach `limits.max_inflight_bytes`.
                    if front.qos != QoS::AtMostOnce
                        && (st.inflight.len() >= window
                            || st.inflight_bytes > 0
                                && st.inflight_bytes + front.weight() > max_inflight_bytes)
                    {
                        break;
                    }
                    let Some(d) = st.pop_queued(&mut released) else {
                        break;
                    };
                    if d.message.expired(now) {
                        expired += 1;
                        st.finish(persist, self.session.id, &d, false);
                        continue;
                    }
                    let packet_id = if d.qos == QoS::AtMostOnce {
                        0
                    } else {
                        let id = st.allocate_packet_id();
                        if let (QoS::ExactlyOnce, Some(stored)) = (d.qos, &d.stored) {
                            // A QoS 2 PUBLISH goes out once its packet id is on disk: after a
                            // restart Herald re-sends it with the same id, never as a new one.
                            // And once the message itself is: the publisher's QoS 2 packet
                            // id is stored with it.
                            let t = persist.stage(self.session.id, &d, id, false);
                            ticket = ticket.max(t).max(stored.message.ticket());
                        }
                        st.inflight_bytes += d.weight();
                        st.inflight.push_back(Inflight {
                            packet_id: id,
                            delivery: d.clone(),
                            stage: Stage::Sent,
                        });
                        id
                    };
                    batch.push((d, packet_id));
                }
                // Publishers parked on this queue go on once it is at low water.
                let waiters = st.relieve(&broker.config().limits);
                (waiters, st.queue.is_empty() && st.retained.is_some())
            };
            broker.stats.release_queued(released);
            waiters.into_iter().for_each(std::task::Waker::wake);
            if expired > 0 {
                self.broker.stats.dropped(DropReason::Expired, expired);
            }
            if batch.is_empty() {
                // Retained messages stream in as the queue empties, a page at a time.
                if refill && broker.stream_retained(&self.tenant, &self.session, BATCH) {
                    continue;
                }
                break;
            }
            out.gate(ticket);
            for (delivery, packet_id) in batch.drain(..) {
                let sent = self.write_delivery(out, &delivery, packet_id, false)?;
                // Sampled: one delivery in 16 is timed (an Instant subtraction and a bucket
                // search per message measured 6% of a saturating QoS 0 fan-out).
                if sent && delivered.is_multiple_of(16) {
                    let waited = now.saturating_duration_since(delivery.message.received_at);
                    latencies.observe(waited.as_micros() as u64);
                }
                delivered += u64::from(sent);
            }
        }
        // One update of the shared counter per pump, not one per message.
        if delivered > 0 {
            self.broker
                .stats
                .delivered
                .fetch_add(delivered, Ordering::Relaxed);
            let hot = &self.broker.stats.hot;
            let bytes = out.len().saturating_sub(queued_before);
            hot.packets_out(mqtt_codec::PacketType::Publish, delivered, bytes);
            hot.delivered(&latencies);
        }
        Ok(more)
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
