//! A publisher of `crash`: a persistent session that publishes sequence-numbered messages
//! and records exactly which the broker acknowledged (PUBACK for QoS 1, PUBREC for QoS 2:
//! from then on the broker owns the message). When the broker dies it reconnects; if the
//! broker resumed its session it re-sends what was unacknowledged (DUP) and the PUBRELs
//! still owed, as [MQTT-4.4.0-1] asks; if not, the unacknowledged messages are abandoned.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use mqtt_codec::{Ack, Packet, ProtocolVersion, Publish, QoS};
use serde::Serialize;
use tokio::sync::watch;
use tokio::time::{Instant, sleep, sleep_until};

use crate::client::{Client, ClientConfig, Failure, Target, decode_from, encode_into};

/// What one publisher does.
#[derive(Debug, Clone)]
pub struct PubPlan {
    /// Publisher number; the high bits of its message ids.
    pub index: usize,
    /// QoS 1 or 2.
    pub qos: QoS,
    /// Topic to publish on.
    pub topic: String,
    /// Publications per second; 0 = as fast as the window allows.
    pub rate: f64,
    /// Unacknowledged publications allowed.
    pub window: usize,
    /// Payload bytes (at least 8: the message id).
    pub payload: usize,
}

/// The message id of publisher `index`'s `seq`th publication.
pub fn message_id(index: usize, seq: u64) -> u64 {
    ((index as u64) << 40) | seq
}

/// One publisher's record, handed back at the end.
#[derive(Debug, Default)]
pub struct PubRecord {
    /// Whether the broker acknowledged each publication, by sequence number.
    pub acked: Vec<bool>,
    /// Publications re-sent with DUP after a resumed session.
    pub resent: u64,
    /// Unacknowledged publications given up: the broker lost the session, or the end came.
    pub abandoned: u64,
    /// Publications the broker refused (a v5 acknowledgement with an error code).
    pub refused: u64,
    /// Connections made.
    pub connections: u64,
    /// Reconnects on which the broker had lost the session.
    pub sessions_lost: u64,
}

/// A publisher in the report.
#[derive(Debug, Clone, Serialize)]
pub struct PubSummary {
    /// Client id.
    pub client_id: String,
    /// QoS of its publications.
    pub qos: u8,
    /// Publications sent (re-sends not counted).
    pub published: u64,
    /// Publications acknowledged.
    pub acked: u64,
    /// Re-sent with DUP after a resumed session.
    pub resent: u64,
    /// Given up unacknowledged.
    pub abandoned: u64,
    /// Refused by the broker.
    pub refused: u64,
    /// Connections made.
    pub connections: u64,
    /// Reconnects that found the session lost.
    pub sessions_lost: u64,
}

/// A publication the broker has not finished acknowledging.
struct Inflight {
    seq: u64,
    /// QoS 2: PUBREC came, PUBREL sent, PUBCOMP awaited.
    released: bool,
}

/// How long a stopping publisher waits for its last acknowledgements.
const FINISH_LIMIT: Duration = Duration::from_secs(20);

struct Publisher {
    plan: PubPlan,
    template: Publish,
    inflight: BTreeMap<u16, Inflight>,
    next_packet_id: u16,
    rec: PubRecord,
}

/// Publishes while `active` is true, then waits for the outstanding acknowledgements.
pub async fn run(
    target: Target,
    cfg: ClientConfig,
    client_id: String,
    plan: PubPlan,
    mut active: watch::Receiver<bool>,
) -> PubRecord {
    let mut template = Publish::new(plan.topic.clone(), Bytes::from(vec![0u8; plan.payload]));
    template.qos = plan.qos;
    let mut p = Publisher {
        plan,
        template,
        inflight: BTreeMap::new(),
        next_packet_id: 0,
        rec: PubRecord::default(),
    };
    let mut finish_by = None;
    loop {
        let stopping = !*active.borrow_and_update();
        if stopping {
            let deadline = *finish_by.get_or_insert_with(|| Instant::now() + FINISH_LIMIT);
            if p.inflight.is_empty() || Instant::now() >= deadline {
                break;
            }
        }
        let Ok(mut client) = Client::connect(target, &cfg, &client_id, false).await else {
            sleep(Duration::from_millis(20)).await;
            continue;
        };
        p.rec.connections += 1;
        if client.session_present {
            p.resend(client.version, &mut client.wbuf);
        } else {
            p.rec.sessions_lost += u64::from(p.rec.connections > 1);
            p.abandon_unacknowledged();
        }
        if p.session(&mut client, &mut active, &mut finish_by)
            .await
            .is_ok()
        {
            let _ = client.disconnect().await;
        }
    }
    p.abandon_unacknowledged();
    p.rec
}

impl Publisher {
    fn next_packet_id(&mut self) -> u16 {
        loop {
            self.next_packet_id = self.next_packet_id.checked_add(1).unwrap_or(1);
            if !self.inflight.contains_key(&self.next_packet_id) {
                return self.next_packet_id;
            }
        }
    }

    fn encode(
        &mut self,
        packet_id: u16,
        seq: u64,
        dup: bool,
        version: ProtocolVersion,
        wbuf: &mut BytesMut,
    ) {
        self.template.packet_id = packet_id;
        self.template.dup = dup;
        if let Err(e) = self.template.encode_header(version, wbuf) {
            panic!("herald-bench built an unencodable PUBLISH: {e}");
        }
        wbuf.extend_from_slice(&message_id(self.plan.index, seq).to_be_bytes());
        wbuf.extend_from_slice(&self.template.payload[8..]);
    }

    /// After a resumed session: PUBREL for what was received, the PUBLISH again for the rest.
    fn resend(&mut self, version: ProtocolVersion, wbuf: &mut BytesMut) {
        let pending: Vec<(u16, u64, bool)> = self
            .inflight
            .iter()
            .map(|(&id, f)| (id, f.seq, f.released))
            .collect();
        for (id, seq, released) in pending {
            if released {
                encode_into(&Packet::PubRel(Ack::new(id)), version, wbuf);
            } else {
                self.encode(id, seq, true, version, wbuf);
                self.rec.resent += 1;
            }
        }
    }

    /// The broker has no session (or the run is over): what it never acknowledged is gone;
    /// what it acknowledged with PUBREC stays acknowledged.
    fn abandon_unacknowledged(&mut self) {
        let unacked = self.inflight.values().filter(|f| !f.released).count();
        self.rec.abandoned += unacked as u64;
        self.inflight.clear();
    }

    fn on_ack(&mut self, packet: Packet, version: ProtocolVersion, wbuf: &mut BytesMut) {
        match packet {
            Packet::PubAck(a) => {
                if let Some(f) = self.inflight.remove(&a.packet_id) {
                    self.settle(f.seq, a.reason_code.is_error());
                }
            }
            Packet::PubRec(a) if a.reason_code.is_error() => {
                if let Some(f) = self.inflight.remove(&a.packet_id) {
                    self.settle(f.seq, true);
                }
            }
            Packet::PubRec(a) => {
                if let Some(f) = self.inflight.get_mut(&a.packet_id) {
                    f.released = true;
                    let seq = f.seq;
                    self.settle(seq, false);
                }
                encode_into(&Packet::PubRel(Ack::new(a.packet_id)), version, wbuf);
            }
            Packet::PubComp(a) => {
                self.inflight.remove(&a.packet_id);
            }
            _ => {}
        }
    }

    fn settle(&mut self, seq: u64, refused: bool) {
        if refused {
            self.rec.refused += 1;
        } else if let Some(acked) = self.rec.acked.get_mut(seq as usize) {
            *acked = true;
        }
    }

    /// One connection's life: publish while active, read acknowledgements, and return
    /// `Ok` once stopped with nothing outstanding (or past `finish_by`).
    async fn session(
        &mut self,
        client: &mut Client,
        active: &mut watch::Receiver<bool>,
        finish_by: &mut Option<Instant>,
    ) -> Result<(), Failure> {
        let version = client.version;
        let (mut rd, mut wr) = client.stream.split();
        let (rbuf, wbuf) = (&mut client.rbuf, &mut client.wbuf);
        let rate = self.plan.rate;
        let mut due = Instant::now();
        loop {
            let now = Instant::now();
            let stopping = !*active.borrow_and_update();
            if stopping {
                let deadline = *finish_by.get_or_insert_with(|| now + FINISH_LIMIT);
                if (self.inflight.is_empty() && wbuf.is_empty()) || now >= deadline {
                    return Ok(());
                }
            }
            if rate > 0.0 && due + Duration::from_millis(100) < now {
                // Back from an outage: carry on at the rate, without a burst to catch up.
                due = now;
            }
            while !stopping
                && self.inflight.len() < self.plan.window
                && (rate == 0.0 || due <= now)
                && wbuf.len() < 64 * 1024
            {
                let packet_id = self.next_packet_id();
                let seq = self.rec.acked.len() as u64;
                self.rec.acked.push(false);
                self.inflight.insert(
                    packet_id,
                    Inflight {
                        seq,
                        released: false,
                    },
                );
                self.encode(packet_id, seq, false, version, wbuf);
                if rate > 0.0 {
                    due += Duration::from_secs_f64(1.0 / rate);
                }
            }
            let can_publish = !stopping && self.inflight.len() < self.plan.window;
            let wake = if rate > 0.0 && can_publish {
                due
            } else {
                now + Duration::from_millis(50)
            };
            tokio::select! {
                read = rd.read_buf(rbuf) => {
                    if read? == 0 {
                        return Err(Failure::Closed);
                    }
                    while let Some(packet) = decode_from(rbuf, version)? {
                        self.on_ack(packet, version, wbuf);
                    }
                }
                written = wr.write_all_buf(wbuf), if !wbuf.is_empty() => written?,
                _ = sleep_until(wake), if wbuf.is_empty() => {}
                _ = active.changed(), if !stopping => {}
            }
        }
    }
}

impl PubRecord {
    /// The summary of this record for the report.
    pub fn summary(&self, client_id: String, qos: QoS) -> PubSummary {
        PubSummary {
            client_id,
            qos: qos as u8,
            published: self.acked.len() as u64,
            acked: self.acked.iter().filter(|&&a| a).count() as u64,
            resent: self.resent,
            abandoned: self.abandoned,
            refused: self.refused,
            connections: self.connections,
            sessions_lost: self.sessions_lost,
        }
    }
}
