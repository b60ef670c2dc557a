//! A session's state as it moves to another node of a cluster (`broker::moving`): what
//! the node it leaves hands over, and how the node it arrives at takes it in.

use std::collections::HashSet;

use mqtt_codec::{ByteString, QoS};

use super::{Inflight, SessionId, SessionState, Stage, SubscriptionRecord};
use crate::broker::message::{At, Delivery};
use crate::broker::persist::{Persistence, Prepared};
use crate::broker::stored::Stored;
use crate::store::Op;
use crate::store::record::Recipient;

/// What a session holds as it leaves this node: what it was sent and has not acknowledged,
/// what it is owed, and the QoS 2 messages it sent and has not released.
#[derive(Debug, Default)]
pub struct Owed {
    /// QoS 1/2 deliveries sent and not acknowledged, in the order sent.
    pub inflight: Vec<Inflight>,
    /// Deliveries not yet sent, oldest first.
    pub queue: Vec<Delivery>,
    /// Packet ids of QoS 2 PUBLISHes received from the client and not yet released.
    pub inbound: Vec<u16>,
    /// Replicated sessions: messages acknowledged that the session's next snapshot must
    /// still name as done (identity and stream position, `message::At` as bits).
    pub done: Vec<((u64, u64), u64)>,
    /// Replicated sessions: where the session's last snapshot started (0: none); what is
    /// done before it is not in `done`.
    pub from: u64,
}

impl Owed {
    /// The cluster identities of the messages it holds.
    pub fn idents(&self) -> HashSet<(u64, u64)> {
        let inflight = self.inflight.iter().map(|i| &i.delivery);
        inflight
            .chain(self.queue.iter())
            .filter_map(|d| d.message.ident.get())
            .collect()
    }

    /// The identities of the messages it holds or has done: a copy arriving late (NATS
    /// was slow to bring it here, or the node caught up on it) is not delivered again.
    pub fn known(&self) -> HashSet<(u64, u64)> {
        let mut known = self.idents();
        known.extend(self.done.iter().map(|(ident, _)| *ident));
        known
    }
}

/// The records a moved session's deliveries are stored with (written after the session's
/// lock is released, each under its message's reserved ticket).
#[derive(Debug, Default)]
pub struct Records {
    /// Each delivery's message record, numbered.
    pub messages: Vec<(Prepared, Vec<Op>)>,
    /// Other ops: inbound packet ids.
    pub ops: Vec<Op>,
    /// QoS 2 deliveries in flight, to write their stage once their message is.
    pub stages: Vec<(Delivery, u16, bool)>,
}

impl SessionState {
    /// What it holds, copied as it leaves for another node (its `end` follows under the same
    /// lock). A will waiting for its delay is forgotten: the session lives on elsewhere.
    pub fn leave(&mut self, persist: &Persistence, id: SessionId) -> Owed {
        if self.pending_will.take().is_some() {
            persist.delete_will(id, self.generation);
        }
        Owed {
            inflight: self.inflight.iter().cloned().collect(),
            queue: self.queue.iter().cloned().collect(),
            inbound: self.inbound_qos2.iter().collect(),
            done: self.replica_done_list(),
            from: self.replica_from(),
        }
    }

    /// A session arriving from another node: its expiry and subscriptions, not stored yet
    /// (what it receives while it arrives is kept in memory until `arrive_with`).
    pub fn arrive(&mut self, expiry: u32, subscriptions: Vec<(ByteString, SubscriptionRecord)>) {
        self.expiry_interval = expiry;
        for (filter, record) in subscriptions {
            self.subscriptions.insert(filter, record);
        }
    }

    /// Takes in what the node it left handed over, ahead of what arrived here meanwhile
    /// (minus the messages that node held too); from now on a message it held is not
    /// queued again (`held`, until `forget_held`). Stored (`persist`, expiry above 0), every
    /// delivery is numbered and its records returned to be written. Returns them, what the
    /// queue took from the node's queued bytes before and what it adds now.
    pub fn arrive_with(
        &mut self,
        persist: &Persistence,
        id: SessionId,
        owed: Owed,
    ) -> (Records, u64, u64) {
        let held = owed.known();
        if owed.from > 0 || !owed.done.is_empty() {
            let done = owed.done.iter();
            self.seed_done(
                owed.from,
                done.map(|&(ident, at)| (ident, At::from_bits(at))),
            );
        }
        let (window, released) = self.take_queue();
        let mut records = Records::default();
        if persist.is_stored() && self.expiry_interval > 0 {
            self.durable.get_or_insert_with(Default::default);
        }
        for packet_id in owed.inbound {
            self.inbound_qos2.insert(packet_id);
            records.ops.extend(persist.inbound_op(id, packet_id));
        }
        // QoS 2 in flight keeps its packet id and stage (the client may hold the id); QoS 1
        // in flight is sent again from the front of the queue.
        let mut queue = Vec::with_capacity(owed.queue.len() + window.len());
        for inflight in owed.inflight {
            if inflight.delivery.qos == QoS::ExactlyOnce {
                let d = self.number(persist, id, inflight.delivery, &mut records);
                let released = inflight.stage == Stage::Released;
                records
                    .stages
                    .push((d.clone(), inflight.packet_id, released));
                self.inflight_bytes += d.weight();
                self.inflight.push_back(Inflight {
                    packet_id: inflight.packet_id,
                    delivery: d,
                    stage: inflight.stage,
                });
                self.ids_may_collide = true;
            } else {
                queue.push(inflight.delivery);
            }
        }
        queue.extend(owed.queue);
        let arrived = window
            .into_iter()
            .filter(|d| d.message.ident.get().is_none_or(|i| !held.contains(&i)));
        queue.extend(arrived);
        for d in queue {
            let d = self.number(persist, id, d, &mut records);
            self.queue_bytes += d.weight();
            self.queue.push_back(d);
        }
        self.held = (!held.is_empty()).then(|| Box::new(held));
        let charge = self.queue.iter().map(Delivery::charge).sum::<u64>();
        (records, released, charge)
    }

    /// Numbers `d` in this session's stored queue (if stored), with its message's record.
    fn number(
        &mut self,
        persist: &Persistence,
        id: SessionId,
        mut d: Delivery,
        records: &mut Records,
    ) -> Delivery {
        d.stored = None;
        let Some(durable) = self.durable.as_deref_mut() else {
            return d;
        };
        let Some(stored) = persist.number(d.qos) else {
            return d;
        };
        let seq = durable.next_seq;
        durable.next_seq += 1;
        stored.pin();
        let recipient = Recipient {
            session: id,
            seq,
            qos: d.qos,
            retain: d.retain,
            subscription_ids: d.subscription_identifiers.to_vec(),
        };
        let prepared = Prepared::numbered(Some(stored.clone()));
        d.stored = Some(Stored {
            seq,
            message: stored,
        });
        let ops = persist
            .message_ops(&d.message, &prepared, vec![recipient])
            .unwrap_or_default();
        records.messages.push((prepared, ops));
        d
    }

    /// Whether `d`'s message is one the node this session moved from held too (queued
    /// again here it would be a duplicate).
    pub fn held(&self, d: &Delivery) -> bool {
        // Every delivery asks: nearly every session holds nothing, so that comes first.
        if self.held.is_none() && self.replica.is_none() {
            return false;
        }
        let ident = || d.message.ident.get();
        if let Some(held) = &self.held
            && ident().is_some_and(|ident| held.contains(&ident))
        {
            return true;
        }
        self.before_replica_floor(d)
    }

    /// Stops looking for duplicates of what the node it moved from held.
    pub fn forget_held(&mut self) {
        self.held = None;
    }
}
