//! What `herald pub` has sent and not yet seen acknowledged, without I/O: acknowledgements
//! in, what to send out. The state outlives connections, so that a reconnect sends again
//! exactly what is owed, in the order it was first sent ([MQTT-4.4.0-1]).
//!
//! - QoS 1: PUBLISH, then PUBACK completes it.
//! - QoS 2: PUBLISH, PUBREC (the server owns the message now), PUBREL, PUBCOMP completes.
//! - A reason code of 0x80 or above on PUBACK or PUBREC (MQTT 5) refuses the message: it
//!   is complete, and reported.
//! - After a reconnect that resumed the session, unacknowledged PUBLISHes go again with DUP
//!   set and released QoS 2 messages get their PUBREL again. If the server had no session
//!   any more, the unacknowledged messages go again as new ones (the application's
//!   at-least-once is kept), and those already past PUBREC are complete (the server had them).

use std::collections::VecDeque;

use bytes::Bytes;
use mqtt_codec::{Ack, Packet, ProtocolVersion, Publish, QoS};

/// Messages in flight, and the packet ids they hold.
#[derive(Debug)]
pub(super) struct Outbound {
    /// Topic, QoS, retain flag and properties of every message; the payload is replaced.
    template: Publish,
    /// The next packet id to try.
    next_id: u16,
    /// Unacknowledged messages, oldest first.
    inflight: VecDeque<Inflight>,
    /// `--max-inflight`.
    max_inflight: u16,
    /// In-flight bound in force: `--max-inflight`, or the server's Receive Maximum if lower.
    window: u16,
}

/// One message awaiting acknowledgement.
#[derive(Debug)]
struct Inflight {
    /// Its number, in the order messages were read: refusals name it.
    number: u64,
    /// The PUBLISH, to send again.
    publish: Publish,
    /// QoS 2 past PUBREC: PUBREL sent, PUBCOMP awaited.
    released: bool,
}

/// What an acknowledgement meant.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Acked {
    /// Message `number` is complete; `refused` holds the server's reason if it refused it.
    Done {
        /// The message's number.
        number: u64,
        /// The refusal (reason code and reason string), if refused.
        refused: Option<String>,
    },
    /// PUBREC accepted the message: send this PUBREL.
    Release(Packet),
    /// Not for a message in flight in that state: nothing to do.
    Unknown,
}

impl Outbound {
    /// Messages like `template`, at most `max_inflight` in flight.
    pub(super) fn new(template: Publish, max_inflight: u16) -> Self {
        Outbound {
            template,
            next_id: 1,
            inflight: VecDeque::new(),
            max_inflight,
            window: max_inflight,
        }
    }

    /// Applies a connection's Receive Maximum.
    pub(super) fn set_receive_maximum(&mut self, receive_maximum: u16) {
        self.window = self.max_inflight.min(receive_maximum).max(1);
    }

    /// Whether another QoS 1/2 message may be sent now.
    pub(super) fn can_send(&self) -> bool {
        self.inflight.len() < usize::from(self.window)
    }

    /// Messages awaiting acknowledgement.
    pub(super) fn in_flight(&self) -> usize {
        self.inflight.len()
    }

    /// The size of `payload`'s PUBLISH on the wire, to hold against the server's Maximum
    /// Packet Size before starting it.
    pub(super) fn encoded_len(&self, payload: &Bytes, version: ProtocolVersion) -> usize {
        let mut publish = self.template.clone();
        publish.payload = payload.clone();
        // A packet id, where QoS 1/2 has one, takes its two bytes whatever its value.
        publish.packet_id = 1;
        publish.encoded_len(version).unwrap_or(usize::MAX)
    }

    /// Starts message `number`: the PUBLISH to send. QoS 1/2 messages are held until
    /// acknowledged. The caller checks [`Outbound::can_send`] first.
    pub(super) fn publish(&mut self, number: u64, payload: Bytes) -> Publish {
        let mut publish = self.template.clone();
        publish.payload = payload;
        if publish.qos != QoS::AtMostOnce {
            publish.packet_id = self.free_id();
            self.inflight.push_back(Inflight {
                number,
                publish: publish.clone(),
                released: false,
            });
        }
        publish
    }

    /// A packet id no message in flight holds. There is one: at most 65,535 are in flight.
    fn free_id(&mut self) -> u16 {
        loop {
            let id = self.next_id;
            self.next_id = self.next_id.checked_add(1).unwrap_or(1);
            if !self.inflight.iter().any(|m| m.publish.packet_id == id) {
                return id;
            }
        }
    }

    /// Where the message holding `id` stands, if `released` is its state.
    fn position(&self, id: u16, released: bool) -> Option<usize> {
        self.inflight
            .iter()
            .position(|m| m.publish.packet_id == id && m.released == released)
    }

    /// PUBACK: a QoS 1 message is complete, or refused.
    pub(super) fn on_puback(&mut self, ack: &Ack) -> Acked {
        match self.position(ack.packet_id, false) {
            Some(at) if self.inflight[at].publish.qos == QoS::AtLeastOnce => self.complete(at, ack),
            _ => Acked::Unknown,
        }
    }

    /// PUBREC: a QoS 2 message is the server's (release it), or refused.
    pub(super) fn on_pubrec(&mut self, ack: &Ack) -> Acked {
        let Some(at) = self
            .position(ack.packet_id, false)
            .filter(|at| self.inflight[*at].publish.qos == QoS::ExactlyOnce)
        else {
            return Acked::Unknown;
        };
        if ack.reason_code.is_error() {
            return self.complete(at, ack);
        }
        self.inflight[at].released = true;
        Acked::Release(Packet::PubRel(Ack::new(ack.packet_id)))
    }

    /// PUBCOMP: a QoS 2 message is complete. Its reason code (0x92, an id the server no
    /// longer knows) changes nothing: the server had the message at PUBREC.
    pub(super) fn on_pubcomp(&mut self, ack: &Ack) -> Acked {
        match self.position(ack.packet_id, true) {
            Some(at) => {
                let number = self.remove(at);
                Acked::Done {
                    number,
                    refused: None,
                }
            }
            None => Acked::Unknown,
        }
    }

    fn complete(&mut self, at: usize, ack: &Ack) -> Acked {
        let refused = ack.reason_code.is_error().then(|| {
            let mut why = ack.reason_code.to_string();
            if let Some(reason) = &ack.properties.reason_string {
                why.push_str(&format!(": {reason}"));
            }
            why
        });
        let number = self.remove(at);
        Acked::Done { number, refused }
    }

    fn remove(&mut self, at: usize) -> u64 {
        self.inflight.remove(at).map_or(0, |m| m.number)
    }

    /// After a reconnect: the packets to send again, in their first order, and how many
    /// messages are complete because the server that had them lost the session.
    pub(super) fn resume(&mut self, session_present: bool) -> (Vec<Packet>, usize) {
        let mut completed = 0;
        if !session_present {
            let before = self.inflight.len();
            self.inflight.retain(|m| !m.released);
            completed = before - self.inflight.len();
        }
        let packets = self
            .inflight
            .iter_mut()
            .map(|m| {
                if m.released {
                    return Packet::PubRel(Ack::new(m.publish.packet_id));
                }
                // DUP says "you may have seen this": only true of the same session.
                m.publish.dup = session_present;
                Packet::Publish(m.publish.clone())
            })
            .collect();
        (packets, completed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mqtt_codec::ReasonCode;

    fn outbound(qos: QoS, max: u16) -> Outbound {
        let mut t = Publish::new("t", Bytes::new());
        t.qos = qos;
        Outbound::new(t, max)
    }

    fn ack(id: u16, code: ReasonCode) -> Ack {
        let mut a = Ack::new(id);
        a.reason_code = code;
        a
    }

    #[test]
    fn qos1_completes_on_puback_and_is_resent_with_dup() {
        let mut o = outbound(QoS::AtLeastOnce, 2);
        let p1 = o.publish(1, Bytes::from_static(b"a"));
        let p2 = o.publish(2, Bytes::from_static(b"b"));
        assert_eq!((p1.packet_id, p2.packet_id), (1, 2));
        assert!(!o.can_send(), "the window of 2 is full");
        let (again, completed) = o.resume(true);
        assert_eq!(completed, 0);
        let ids: Vec<(u16, bool)> = again
            .iter()
            .map(|p| match p {
                Packet::Publish(p) => (p.packet_id, p.dup),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(ids, [(1, true), (2, true)], "in order, with DUP");
        let done = o.on_puback(&ack(2, ReasonCode::Success));
        assert_eq!(
            done,
            Acked::Done {
                number: 2,
                refused: None
            }
        );
        assert_eq!(o.on_puback(&ack(2, ReasonCode::Success)), Acked::Unknown);
        assert!(o.can_send());
        let refused = o.on_puback(&ack(1, ReasonCode::NotAuthorized));
        assert_eq!(
            refused,
            Acked::Done {
                number: 1,
                refused: Some("Not authorized (0x87)".into())
            }
        );
        assert_eq!(o.in_flight(), 0);
    }

    #[test]
    fn qos2_releases_then_completes() {
        let mut o = outbound(QoS::ExactlyOnce, 10);
        let p = o.publish(1, Bytes::from_static(b"x"));
        assert_eq!(
            o.on_puback(&ack(p.packet_id, ReasonCode::Success)),
            Acked::Unknown
        );
        assert_eq!(
            o.on_pubrec(&ack(p.packet_id, ReasonCode::Success)),
            Acked::Release(Packet::PubRel(Ack::new(p.packet_id)))
        );
        assert_eq!(
            o.resume(true).0,
            vec![Packet::PubRel(Ack::new(p.packet_id))]
        );
        assert_eq!(
            o.on_pubcomp(&ack(p.packet_id, ReasonCode::Success)),
            Acked::Done {
                number: 1,
                refused: None
            }
        );
        let q = o.publish(2, Bytes::from_static(b"y"));
        assert!(matches!(
            o.on_pubrec(&ack(q.packet_id, ReasonCode::QuotaExceeded)),
            Acked::Done {
                number: 2,
                refused: Some(_)
            }
        ));
        assert_eq!(o.in_flight(), 0);
    }

    #[test]
    fn a_lost_session_sends_unacknowledged_messages_as_new_ones() {
        let mut o = outbound(QoS::ExactlyOnce, 10);
        let a = o.publish(1, Bytes::from_static(b"a"));
        let b = o.publish(2, Bytes::from_static(b"b"));
        o.on_pubrec(&ack(a.packet_id, ReasonCode::Success));
        let (again, completed) = o.resume(false);
        assert_eq!(completed, 1, "a was the server's at PUBREC");
        match &again[..] {
            [Packet::Publish(p)] => assert!(p.packet_id == b.packet_id && !p.dup),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn ids_in_use_are_skipped_and_qos0_holds_nothing() {
        let mut o = outbound(QoS::AtLeastOnce, 100);
        o.next_id = u16::MAX;
        let a = o.publish(1, Bytes::new());
        let b = o.publish(2, Bytes::new());
        assert_eq!(
            (a.packet_id, b.packet_id),
            (u16::MAX, 1),
            "0 is never an id"
        );
        o.next_id = 1;
        let c = o.publish(3, Bytes::new());
        assert_eq!(c.packet_id, 2, "1 is still in flight");
        o.set_receive_maximum(3);
        assert!(
            !o.can_send(),
            "the server's Receive Maximum of 3 is the bound"
        );

        let mut q0 = outbound(QoS::AtMostOnce, 1);
        let p = q0.publish(1, Bytes::new());
        assert_eq!((p.packet_id, q0.in_flight()), (0, 0));
        assert!(q0.can_send());
        assert_eq!(
            q0.encoded_len(&Bytes::from_static(b"abc"), ProtocolVersion::V5),
            9
        );
    }
}
