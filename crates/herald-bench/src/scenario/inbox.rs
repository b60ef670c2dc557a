//! The receiving side of QoS 1 and 2 as an application sees it, shared by `drain` and
//! `crash`: acknowledge every PUBLISH, and hand a QoS 2 message to the application once
//! even when the broker sends it again before our PUBREC reached it ([MQTT-4.3.3]: the
//! receiver keeps the packet id from PUBREC until PUBREL).
//!
//! Payloads carry a sequence number in their first 8 bytes (big-endian), which is what the
//! scenarios count.

use std::collections::HashSet;

use bytes::BytesMut;
use mqtt_codec::{Ack, Packet, ProtocolVersion, Publish, QoS};

use crate::client::encode_into;

/// Packet ids of QoS 2 messages received (PUBREC sent) and not yet released (PUBREL).
#[derive(Debug, Default)]
pub struct Inbox {
    awaiting_release: HashSet<u16>,
}

impl Inbox {
    /// Handles one packet from the broker: queues its acknowledgement in `wbuf` and returns
    /// the publication if the application should see it (not a QoS 2 re-send already
    /// received). Other packets return `None`.
    pub fn on_packet(
        &mut self,
        packet: Packet,
        version: ProtocolVersion,
        wbuf: &mut BytesMut,
    ) -> Option<Publish> {
        match packet {
            Packet::Publish(p) => match p.qos {
                QoS::AtMostOnce => Some(p),
                QoS::AtLeastOnce => {
                    encode_into(&Packet::PubAck(Ack::new(p.packet_id)), version, wbuf);
                    Some(p)
                }
                QoS::ExactlyOnce => {
                    encode_into(&Packet::PubRec(Ack::new(p.packet_id)), version, wbuf);
                    self.awaiting_release.insert(p.packet_id).then_some(p)
                }
            },
            Packet::PubRel(rel) => {
                self.awaiting_release.remove(&rel.packet_id);
                encode_into(&Packet::PubComp(Ack::new(rel.packet_id)), version, wbuf);
                None
            }
            _ => None,
        }
    }

    /// The broker started a new session: it will not release what the old one held.
    pub fn session_lost(&mut self) {
        self.awaiting_release.clear();
    }
}

/// The sequence number in the first 8 bytes of a payload.
pub fn sequence(payload: &[u8]) -> Option<u64> {
    let bytes: [u8; 8] = payload.get(..8)?.try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

/// A payload of `len` bytes (at least 8) that starts with `seq`.
pub fn sequenced_payload(seq: u64, len: usize) -> bytes::Bytes {
    let mut payload = vec![0u8; len.max(8)];
    payload[..8].copy_from_slice(&seq.to_be_bytes());
    payload.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publish(qos: QoS, packet_id: u16, seq: u64) -> Packet {
        let mut p = Publish::new("t", sequenced_payload(seq, 16));
        p.qos = qos;
        p.packet_id = packet_id;
        Packet::Publish(p)
    }

    #[test]
    fn qos2_resend_before_release_reaches_the_application_once() {
        let v = ProtocolVersion::V3_1_1;
        let mut inbox = Inbox::default();
        let mut wbuf = BytesMut::new();
        let first = inbox.on_packet(publish(QoS::ExactlyOnce, 7, 42), v, &mut wbuf);
        assert_eq!(first.map(|p| sequence(&p.payload)), Some(Some(42)));
        assert!(
            inbox
                .on_packet(publish(QoS::ExactlyOnce, 7, 42), v, &mut wbuf)
                .is_none()
        );
        inbox.on_packet(Packet::PubRel(Ack::new(7)), v, &mut wbuf);
        // After the release the id is free again: a new message may use it.
        assert!(
            inbox
                .on_packet(publish(QoS::ExactlyOnce, 7, 43), v, &mut wbuf)
                .is_some()
        );
        // PUBREC, PUBREC, PUBCOMP, PUBREC: four 4-byte acknowledgements.
        assert_eq!(wbuf.len(), 16);
    }

    #[test]
    fn qos1_is_always_handed_on() {
        let v = ProtocolVersion::V3_1_1;
        let mut inbox = Inbox::default();
        let mut wbuf = BytesMut::new();
        for _ in 0..2 {
            assert!(
                inbox
                    .on_packet(publish(QoS::AtLeastOnce, 3, 1), v, &mut wbuf)
                    .is_some()
            );
        }
    }
}
