//! A persistent session kept for other nodes (replicated sessions, `cluster::replica`): what
//! the session remembers for that, and the snapshot written to the cluster's bucket.
//!
//! The snapshot does not carry the messages: they are in the cluster's stream. It says
//! where to read it from (`from`: every QoS 1/2 message the session is owed is at or past
//! that sequence), which messages past it are done (acknowledged), and where the QoS 2
//! exchanges stand (packet id, released or not), so that a node resuming the session
//! sends nothing done again and no QoS 2 message under a new packet id.

use std::sync::Arc;

use mqtt_codec::QoS;

use super::{SessionState, Stage};
use crate::broker::message::{At, Delivery, Message};
use crate::store::record::SessionRecord;

/// What a replicated session remembers between snapshots. Boxed in the session: `None`
/// unless sessions are replicated.
#[derive(Debug, Default)]
pub struct Replicated {
    /// Acknowledged messages that may be at or past the next snapshot's `from`.
    done: Vec<Done>,
    /// Whether something changed since the last snapshot.
    dirty: bool,
    /// Whether a connection was attached at the last snapshot.
    connected: bool,
    /// A snapshot starts here at the lowest: the session came from another node (a move,
    /// or the bucket) whose snapshot started here, and what is done before it is not
    /// remembered here.
    floor: u64,
    /// Where the last snapshot started.
    from: u64,
}

/// An acknowledged message.
#[derive(Debug)]
enum Done {
    /// Its identity and stream sequence.
    Known((u64, u64), u64),
    /// Its sequence not known yet (the stream has not acknowledged it to this node): the
    /// message, which will be told.
    Pending(Arc<Message>),
    /// Its sequence not known here (handed over by another node before it knew it): past
    /// this one. Kept until the list is cut (`MAX_DONE`).
    After((u64, u64), u64),
}

/// Done messages a session remembers at most (the oldest go first): beyond that a message
/// acknowledged long ago may be sent again after its node is lost.
const MAX_DONE: usize = 65_536;

/// A session as another node resumes it: its record, and what it holds as positions in the
/// cluster's stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Tenant, client id, protocol, expiry, when it went offline, subscriptions.
    pub record: SessionRecord,
    /// Every QoS 1/2 message owed to it is at or past this stream sequence.
    pub from: u64,
    /// Identities of messages past `from` that are done.
    pub done: Vec<(u64, u64)>,
    /// QoS 2 deliveries in flight: identity, packet id, released (PUBREC received).
    pub stages: Vec<((u64, u64), u16, bool)>,
    /// Packet ids of QoS 2 PUBLISHes received from the client and not yet released.
    pub inbound: Vec<u16>,
}

impl SessionState {
    /// Starts remembering what a snapshot needs (sessions are replicated).
    pub fn replicate(&mut self) {
        self.replica.get_or_insert_with(Default::default);
    }

    /// Whether the session is replicated.
    pub fn replicated(&self) -> bool {
        self.replica.is_some()
    }

    /// Whether it changed since its last snapshot (acknowledgements, a connection coming or
    /// going): written lazily, as nothing sent to the client waits for it.
    pub fn replica_dirty(&self) -> bool {
        self.replica
            .as_ref()
            .is_some_and(|r| r.dirty || r.connected != self.connected)
    }

    /// `d` is done (acknowledged, refused, expired): remembered until the snapshot's `from`
    /// passes it.
    pub(super) fn replica_done(&mut self, d: &Delivery) {
        let Some(replica) = self.replica.as_deref_mut() else {
            return;
        };
        replica.dirty = true;
        if d.qos == QoS::AtMostOnce {
            return;
        }
        let Some(ident) = d.message.ident.get() else {
            return;
        };
        match d.message.ident.at() {
            At::Nowhere => {}
            At::Seq(seq) => replica.done.push(Done::Known(ident, seq)),
            At::After(_) => replica.done.push(Done::Pending(d.message.clone())),
        }
    }

    /// What it remembers as done, as it leaves for another node: identity and position.
    pub(super) fn replica_done_list(&self) -> Vec<((u64, u64), u64)> {
        let Some(replica) = self.replica.as_deref() else {
            return Vec::new();
        };
        let at = |done: &Done| match done {
            Done::Known(ident, seq) => Some((*ident, At::Seq(*seq).to_bits())),
            Done::Pending(m) => Some((m.ident.get()?, m.ident.at().to_bits())),
            Done::After(ident, after) => Some((*ident, At::After(*after).to_bits())),
        };
        replica.done.iter().filter_map(at).collect()
    }

    /// Whether `d`'s message is before where the snapshot of the node this session came
    /// from started: everything the session was owed is at or past it, so an older message
    /// arriving late (a node catching up on the stream) was dealt with there.
    pub(super) fn before_replica_floor(&self, d: &Delivery) -> bool {
        let floor = self.replica.as_deref().map_or(0, |r| r.floor);
        floor > 0 && matches!(d.message.ident.at(), At::Seq(seq) if seq < floor)
    }

    /// Where its last snapshot started (0: none taken).
    pub(super) fn replica_from(&self) -> u64 {
        self.replica.as_deref().map_or(0, |r| r.from)
    }

    /// Takes in what another node (or the bucket) says is done, its snapshots starting at
    /// `from` at the lowest: the session is replicated from now on.
    pub fn seed_done(&mut self, from: u64, done: impl IntoIterator<Item = ((u64, u64), At)>) {
        let replica = self.replica.get_or_insert_with(Default::default);
        replica.floor = replica.floor.max(from);
        for (ident, at) in done {
            match at {
                At::Seq(seq) => replica.done.push(Done::Known(ident, seq)),
                At::After(after) => replica.done.push(Done::After(ident, after)),
                At::Nowhere => {}
            }
        }
        replica.dirty = true;
    }

    /// The snapshot of it now, as another node would resume it. `floor`: the stream
    /// sequence every message this node will route from now on is at or past.
    pub fn snapshot(&mut self, tenant: &str, client_id: &str, floor: u64) -> Snapshot {
        let record = self.record(tenant, client_id);
        let held = self.inflight.iter().map(|i| &i.delivery);
        let lowest = held
            .chain(self.queue.iter())
            .filter(|d| d.qos != QoS::AtMostOnce)
            .filter_map(|d| d.message.ident.at().lowest())
            .min();
        let from = lowest.map_or(floor, |l| l.min(floor));
        let from = from.max(self.replica.as_deref().map_or(0, |r| r.floor));
        let stages = self
            .inflight
            .iter()
            .filter(|i| i.delivery.qos == QoS::ExactlyOnce)
            .filter_map(|i| {
                let ident = i.delivery.message.ident.get()?;
                Some((ident, i.packet_id, i.stage == Stage::Released))
            })
            .collect();
        let inbound = self.inbound_qos2.iter().collect();
        let connected = self.connected;
        let mut done = Vec::new();
        if let Some(replica) = self.replica.as_deref_mut() {
            replica.dirty = false;
            replica.connected = connected;
            replica.from = from;
            // What is known to be below `from` is forgotten; a sequence learnt since is
            // kept instead of the message.
            replica.done.retain_mut(|entry| {
                if let Done::Pending(m) = entry
                    && let (Some(ident), At::Seq(seq)) = (m.ident.get(), m.ident.at())
                {
                    *entry = Done::Known(ident, seq);
                }
                match entry {
                    Done::Known(ident, seq) if *seq >= from => {
                        done.push(*ident);
                        true
                    }
                    Done::Known(..) => false,
                    Done::Pending(m) => {
                        done.extend(m.ident.get());
                        true
                    }
                    Done::After(ident, _) => {
                        done.push(*ident);
                        true
                    }
                }
            });
            if replica.done.len() > MAX_DONE {
                let cut = replica.done.len() - MAX_DONE;
                replica.done.drain(..cut);
                done.drain(..cut);
            }
        }
        Snapshot {
            record,
            from,
            done,
            stages,
            inbound,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::session::Inflight;
    use mqtt_codec::properties::PublishProperties;

    fn delivery(n: u64, qos: QoS, at: At) -> Delivery {
        let m = Message::new(
            "t".into(),
            bytes::Bytes::from(n.to_string()),
            qos,
            false,
            PublishProperties::default(),
            0,
        );
        m.ident.set(1, n);
        m.ident.set_at(at);
        Delivery {
            message: m,
            qos,
            retain: false,
            subscription_identifiers: Box::new([]),
            stored: None,
        }
    }

    #[test]
    fn a_snapshot_starts_at_the_lowest_message_held_and_keeps_what_is_done_past_it() {
        let session = crate::broker::session::Session::new(
            1,
            Arc::from("c"),
            mqtt_codec::ProtocolVersion::V5,
        );
        let mut st = session.lock();
        st.replicate();
        assert_eq!(
            st.snapshot("", "c", 100).from,
            100,
            "nothing held: the floor"
        );
        // Done: 5 (below what is held: forgotten), 12 (past it: kept), 30 (its sequence not
        // known yet: kept until it is).
        let pending = delivery(30, QoS::AtLeastOnce, At::After(20));
        for d in [
            delivery(5, QoS::AtLeastOnce, At::Seq(5)),
            delivery(12, QoS::ExactlyOnce, At::Seq(12)),
            pending.clone(),
        ] {
            st.replica_done(&d);
        }
        assert!(st.replica_dirty());
        st.inflight.push_back(Inflight {
            packet_id: 7,
            delivery: delivery(10, QoS::ExactlyOnce, At::Seq(10)),
            stage: Stage::Released,
        });
        st.queue
            .push_back(delivery(11, QoS::AtLeastOnce, At::After(8)));
        st.queue
            .push_back(delivery(3, QoS::AtMostOnce, At::Nowhere));
        st.inbound_qos2.insert(4);
        let snap = st.snapshot("", "c", 100);
        assert!(!st.replica_dirty());
        assert_eq!(
            snap.from, 9,
            "a message not acknowledged by the stream: past 8"
        );
        assert_eq!(snap.done, [(1, 12), (1, 30)]);
        assert_eq!(snap.stages, [((1, 10), 7, true)]);
        assert_eq!(snap.inbound, [4]);
        // Its sequence learnt, 30 is kept as a number; once `from` passes 12 it goes.
        pending.message.ident.set_at(At::Seq(30));
        st.inflight.clear();
        st.queue.clear();
        let snap = st.snapshot("", "c", 20);
        assert_eq!(snap.from, 20);
        assert_eq!(snap.done, [(1, 30)]);
        assert!(matches!(
            st.replica.as_deref().unwrap().done[..],
            [Done::Known((1, 30), 30)]
        ));
    }
}
