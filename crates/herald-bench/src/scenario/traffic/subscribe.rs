//! The subscribing side of a load scenario: a subscriber that reads until the flow has been
//! idle, acknowledges QoS 1 and 2, and records each publication's latency from the send time
//! it carries. `stalled`'s fast subscribers are these too.

use std::sync::{Arc, Mutex};

use bytes::BytesMut;
use hdrhistogram::Histogram;
use mqtt_codec::{Ack, Packet, ProtocolVersion, QoS};
use tokio::time::{Duration, Instant, sleep_until};

use crate::client::{Client, Failure, decode_from, encode_into, unix_nanos};
use crate::proto::histogram_to_pairs;

/// What one subscriber received.
#[derive(Default)]
pub(crate) struct SubStats {
    /// Publications received.
    pub(crate) delivered: u64,
    /// Publications received that were sent before `not_before_ns` (not counted above).
    pub(crate) stale: u64,
    /// First arrival, Unix nanoseconds (0: none).
    pub(crate) first_ns: u64,
    /// Last arrival, Unix nanoseconds (0: none).
    pub(crate) last_ns: u64,
    /// Why the connection ended early, if it did.
    pub(crate) error: Option<Failure>,
}

/// Reads publications until publishing has ended and the flow has been idle for a second
/// (or `drain_end`), acknowledging QoS 1/2 and recording latencies; gives the client back.
/// Publications sent before `not_before_ns` (Unix nanoseconds: a previous round's backlog)
/// are counted apart, as stale.
pub(crate) async fn subscriber(
    mut client: Client,
    hist: Arc<Mutex<Histogram<u64>>>,
    pub_end: Instant,
    drain_end: Instant,
    keep_alive: u16,
    not_before_ns: u64,
) -> (SubStats, Client) {
    let mut stats = SubStats::default();
    if let Err(f) = subscribe_loop(
        &mut client,
        &hist,
        (pub_end, drain_end),
        keep_alive,
        not_before_ns,
        &mut stats,
    )
    .await
    {
        stats.error = Some(f);
    }
    (stats, client)
}

const IDLE: Duration = Duration::from_secs(1);

/// The send time in the first 8 bytes of a payload.
fn send_time(payload: &[u8]) -> Option<u64> {
    let bytes: [u8; 8] = payload.get(..8)?.try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

/// The fast path for the bulk of a fan-out: when `rbuf` starts with a complete QoS 0
/// PUBLISH, consumes it in place (fixed header, topic length, property length) without
/// building a packet, and returns `Some(send time)`. `None` leaves `rbuf` for the full
/// decoder: another packet kind, QoS 1/2, or an incomplete frame.
fn take_qos0_publish(
    rbuf: &mut BytesMut,
    version: ProtocolVersion,
) -> Result<Option<Option<u64>>, Failure> {
    let header = mqtt_codec::check_frame(rbuf, version, mqtt_codec::MAX_PACKET_SIZE)
        .map_err(|e| Failure::Protocol(e.to_string()))?;
    let Some(h) = header else { return Ok(None) };
    if h.packet_type != mqtt_codec::PacketType::Publish
        || h.flags & 0x06 != 0
        || rbuf.len() < h.frame_len()
    {
        return Ok(None);
    }
    let body = &rbuf[h.header_len..h.frame_len()];
    let topic_len = match body {
        [hi, lo, ..] => usize::from(u16::from_be_bytes([*hi, *lo])),
        _ => return Ok(None),
    };
    let mut offset = 2 + topic_len;
    if version.is_v5() {
        let props = mqtt_codec::read_varint(body.get(offset..).unwrap_or_default());
        let Ok(Some((len, len_bytes))) = props else {
            return Ok(None);
        };
        offset += len_bytes + len as usize;
    }
    let sent = body.get(offset..).and_then(send_time);
    bytes::Buf::advance(rbuf, h.frame_len());
    Ok(Some(sent))
}

async fn subscribe_loop(
    client: &mut Client,
    hist: &Mutex<Histogram<u64>>,
    (pub_end, drain_end): (Instant, Instant),
    keep_alive: u16,
    not_before_ns: u64,
    stats: &mut SubStats,
) -> Result<(), Failure> {
    let version = client.version;
    let (mut rd, mut wr) = client.stream.split();
    let (rbuf, wbuf) = (&mut client.rbuf, &mut client.wbuf);
    let mut batch: Vec<u64> = Vec::with_capacity(256);
    let mut last_arrival = Instant::now();
    let ping_every = Duration::from_secs(u64::from(keep_alive.max(2)) / 2);
    let mut next_ping = Instant::now() + ping_every;
    loop {
        let stop = (pub_end.max(last_arrival) + IDLE).min(drain_end);
        if Instant::now() >= stop {
            return Ok(());
        }
        tokio::select! {
            read = rd.read_buf(rbuf) => {
                if read? == 0 {
                    return Err(Failure::Closed);
                }
                let now_ns = unix_nanos();
                take_publications(rbuf, wbuf, version, now_ns, not_before_ns, &mut batch, stats)?;
                if !batch.is_empty() {
                    if stats.first_ns == 0 {
                        stats.first_ns = now_ns;
                    }
                    stats.last_ns = now_ns;
                    last_arrival = Instant::now();
                    record_batch(hist, &mut batch);
                }
            }
            written = wr.write_all_buf(wbuf), if !wbuf.is_empty() => written?,
            _ = sleep_until(next_ping) => {
                encode_into(&Packet::PingReq, version, wbuf);
                next_ping += ping_every;
            }
            _ = sleep_until(stop) => {}
        }
    }
}

/// Takes what one read, at `now_ns`, brought: each publication counts as delivered (its
/// latency in `batch`) or, sent before `not_before_ns`, as stale; QoS 1 and 2 ones are
/// acknowledged, and a PUBREL is completed. QoS 0 publications take the fast path.
fn take_publications(
    rbuf: &mut BytesMut,
    wbuf: &mut BytesMut,
    version: ProtocolVersion,
    now_ns: u64,
    not_before_ns: u64,
    batch: &mut Vec<u64>,
    stats: &mut SubStats,
) -> Result<(), Failure> {
    let mut arrived = |sent: Option<u64>, batch: &mut Vec<u64>| match sent {
        Some(sent_ns) if sent_ns < not_before_ns => stats.stale += 1,
        Some(sent_ns) => {
            batch.push(now_ns.saturating_sub(sent_ns) / 1000);
            stats.delivered += 1;
        }
        None => stats.delivered += 1,
    };
    loop {
        if let Some(sent_ns) = take_qos0_publish(rbuf, version)? {
            arrived(sent_ns, batch);
            continue;
        }
        let Some(packet) = decode_from(rbuf, version)? else {
            return Ok(());
        };
        let reply = match packet {
            Packet::Publish(p) => {
                arrived(send_time(&p.payload), batch);
                match p.qos {
                    QoS::AtMostOnce => None,
                    QoS::AtLeastOnce => Some(Packet::PubAck(Ack::new(p.packet_id))),
                    QoS::ExactlyOnce => Some(Packet::PubRec(Ack::new(p.packet_id))),
                }
            }
            Packet::PubRel(rel) => Some(Packet::PubComp(Ack::new(rel.packet_id))),
            _ => None,
        };
        if let Some(reply) = reply {
            encode_into(&reply, version, wbuf);
        }
    }
}

/// Records a read's latencies (microseconds) in the worker's histogram under one lock, and
/// empties the batch.
pub(crate) fn record_batch(hist: &Mutex<Histogram<u64>>, batch: &mut Vec<u64>) {
    if let Ok(mut h) = hist.lock() {
        for &us in batch.iter() {
            h.saturating_record(us.max(1));
        }
    }
    batch.clear();
}

/// The latencies a worker's subscribers recorded, as (microseconds, count) pairs.
pub(crate) fn latency_pairs(hist: &Mutex<Histogram<u64>>) -> Vec<(u64, u64)> {
    match hist.lock() {
        Ok(h) => histogram_to_pairs(&h),
        Err(poisoned) => histogram_to_pairs(&poisoned.into_inner()),
    }
}
