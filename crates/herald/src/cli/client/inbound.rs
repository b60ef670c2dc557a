//! What `herald sub` owes the server, without I/O: which QoS 2 messages it has taken (PUBREC
//! sent, PUBREL awaited), so that the same message sent again is acknowledged and not
//! printed twice, and the acknowledgement each message gets.
//!
//! The acknowledgement is made only after the message is written out: a message the
//! server sees acknowledged is on standard output, whatever happens next. QoS 2 is exactly
//! once while the process lives; a message printed just before the process died is sent
//! again to the next run, which cannot know it was printed (at least once, as QoS 1).

use std::collections::HashSet;

use mqtt_codec::{Ack, Packet, Publish, QoS};

/// The QoS 2 state of the session.
#[derive(Debug, Default)]
pub(super) struct Inbound {
    /// Packet ids of QoS 2 messages taken (PUBREC sent) and not yet released (PUBREL).
    taken: HashSet<u16>,
}

impl Inbound {
    /// Whether `publish` is news for the application: false for a QoS 2 message already
    /// taken, which the server sends again when it missed the PUBREC.
    pub(super) fn is_new(&self, publish: &Publish) -> bool {
        publish.qos != QoS::ExactlyOnce || !self.taken.contains(&publish.packet_id)
    }

    /// The acknowledgement of `publish`, once handled: PUBACK, PUBREC (the id is then
    /// taken), or none for QoS 0.
    pub(super) fn acknowledge(&mut self, publish: &Publish) -> Option<Packet> {
        match publish.qos {
            QoS::AtMostOnce => None,
            QoS::AtLeastOnce => Some(Packet::PubAck(Ack::new(publish.packet_id))),
            QoS::ExactlyOnce => {
                self.taken.insert(publish.packet_id);
                Some(Packet::PubRec(Ack::new(publish.packet_id)))
            }
        }
    }

    /// PUBREL: the id is free again; answered with PUBCOMP (also for an id not held: the
    /// server may be repeating a PUBREL whose PUBCOMP was lost).
    pub(super) fn release(&mut self, id: u16) -> Packet {
        self.taken.remove(&id);
        Packet::PubComp(Ack::new(id))
    }

    /// The server has no session for the client: nothing is owed any more.
    pub(super) fn session_lost(&mut self) {
        self.taken.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn publish(qos: QoS, id: u16) -> Publish {
        let mut p = Publish::new("t", Bytes::from_static(b"x"));
        p.qos = qos;
        p.packet_id = id;
        p
    }

    #[test]
    fn qos2_is_new_once_until_released() {
        let mut i = Inbound::default();
        let p = publish(QoS::ExactlyOnce, 7);
        assert!(i.is_new(&p));
        assert_eq!(i.acknowledge(&p), Some(Packet::PubRec(Ack::new(7))));
        let mut again = p.clone();
        again.dup = true;
        assert!(!i.is_new(&again), "sent again before PUBREL: not news");
        assert_eq!(i.release(7), Packet::PubComp(Ack::new(7)));
        assert!(i.is_new(&p), "after PUBREL the id is a new message");
        i.acknowledge(&p);
        i.session_lost();
        assert!(i.is_new(&p));
    }

    #[test]
    fn qos0_and_qos1() {
        let mut i = Inbound::default();
        let q1 = publish(QoS::AtLeastOnce, 3);
        assert!(i.is_new(&q1));
        assert_eq!(i.acknowledge(&q1), Some(Packet::PubAck(Ack::new(3))));
        assert!(
            i.is_new(&q1),
            "QoS 1 may come twice: the application sees both"
        );
        assert_eq!(i.acknowledge(&publish(QoS::AtMostOnce, 0)), None);
    }
}
