//! The publishing side of a load scenario: a publisher paced to its rate and window, each
//! PUBLISH stamped with its send time, acknowledgements counted by reason code. `stalled`
//! publishes with it too, and `fanin-flood` paces and settles its own publishers with it.

use bytes::{Bytes, BytesMut};
use mqtt_codec::{Ack, Packet, ProtocolVersion, Publish, QoS};
use tokio::task::JoinSet;
use tokio::time::{Duration, Instant, sleep_until};

use super::{Schedule, TrafficSpec};
use crate::client::{
    Client, Failure, FailureCounts, count_failure, decode_from, encode_into, unix_nanos,
};
use crate::scenario::AckCounts;

/// What one publisher did.
#[derive(Default)]
pub(crate) struct PubStats {
    /// Publications written.
    pub(crate) published: u64,
    /// QoS 1/2 publications acknowledged (PUBACK or PUBCOMP, whatever their reason code).
    pub(crate) acked: u64,
    /// Those acknowledgements by reason code.
    pub(crate) acks: AckCounts,
    /// Why the connection ended early, if it did.
    pub(crate) error: Option<Failure>,
}

/// Starts this worker's publishers of `t`, each on its topic at its share of `t.rate`, at
/// its [`phase`] after `schedule.start`. Each task gives back what its publisher did, and
/// the publisher with its index while it is still connected.
pub(crate) fn start_publishers(
    run_id: &str,
    t: &TrafficSpec,
    qos: QoS,
    pubs: Vec<(usize, Client)>,
    schedule: Schedule,
) -> JoinSet<(PubStats, Option<(usize, Client)>)> {
    let rate = if t.rate > 0.0 {
        t.rate / t.pubs as f64
    } else {
        0.0
    };
    let template = Bytes::from(vec![0u8; t.payload]);
    let mut tasks = JoinSet::new();
    for (i, client) in pubs {
        let mut publish = Publish::new(t.topic(run_id, i), template.clone());
        publish.qos = qos;
        let window = window(qos, t.inflight, &client);
        let start = schedule.start + phase(i, t.pubs, rate);
        let Schedule {
            pub_end, drain_end, ..
        } = schedule;
        tasks.spawn(async move {
            let (stats, client) =
                publisher(client, publish, rate, window, start, pub_end, drain_end).await;
            (stats, client.map(|c| (i, c)))
        });
    }
    tasks
}

/// Waits for every publisher: what they did, added up (the connections they lost counted
/// in `errors`), and those still connected, in index order.
pub(crate) async fn join_publishers(
    mut tasks: JoinSet<(PubStats, Option<(usize, Client)>)>,
    errors: &mut FailureCounts,
) -> anyhow::Result<(PubStats, Vec<(usize, Client)>)> {
    let mut total = PubStats::default();
    let mut kept = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let (stats, client) = joined?;
        total.published += stats.published;
        total.acked += stats.acked;
        total.acks.add(&stats.acks);
        if let Some(f) = stats.error {
            count_failure(errors, &f);
        }
        kept.extend(client);
    }
    kept.sort_by_key(|(i, _)| *i);
    Ok((total, kept))
}

/// How many QoS 1/2 publications a publisher leaves unacknowledged at most: `inflight`,
/// within the Receive Maximum the broker gave `client`. At QoS 0 there is no window.
pub(crate) fn window(qos: QoS, inflight: usize, client: &Client) -> usize {
    if qos == QoS::AtMostOnce {
        usize::MAX
    } else {
        inflight.clamp(1, usize::from(client.receive_maximum))
    }
}

/// How long after the start publisher `i` of `pubs`, each at `rate` a second, begins.
/// Publishers at a fixed rate are spread evenly over one interval, so that N publishers at
/// r msg/s make a steady N*r msg/s, not a burst of N messages every 1/r seconds (which would
/// measure burst queueing, in every broker alike).
pub(crate) fn phase(i: usize, pubs: usize, rate: f64) -> Duration {
    if rate > 0.0 {
        Duration::from_secs_f64(i as f64 / pubs as f64 / rate)
    } else {
        Duration::ZERO
    }
}

/// Largest number of publications encoded before one write.
const BATCH: u64 = 256;

/// How a publisher paces itself: `rate` publications a second from `start` until `end`, or
/// with a rate of 0 as fast as it may (a batch whenever its last one has been written);
/// never more than a batch at once, nor more than its window leaves.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pace {
    /// When publishing started.
    pub(crate) start: Instant,
    /// Publications per second; 0 = as fast as the window and the socket allow.
    pub(crate) rate: f64,
    /// When publishing stops.
    pub(crate) end: Instant,
}

impl Pace {
    /// Encodes what is due at `now`, at most `room` publications, each with `encode` (given
    /// how many were published before it) and counted in `published`. Returns when the next
    /// is due (no later than `end`), or `None` when the loop should wait for the socket to
    /// take the batch (`written`: nothing is left to write) or for acknowledgements.
    pub(crate) fn publish_due(
        &self,
        now: Instant,
        (room, written): (u64, bool),
        published: &mut u64,
        mut encode: impl FnMut(u64),
    ) -> Option<Instant> {
        let due = if self.rate > 0.0 {
            let owed = ((now - self.start).as_secs_f64() * self.rate) as u64 + 1;
            owed.saturating_sub(*published)
        } else if written {
            BATCH
        } else {
            0
        };
        let n = due.min(BATCH).min(room);
        for _ in 0..n {
            encode(*published);
            *published += 1;
        }
        if self.rate > 0.0 && n == due {
            let next = self.start + Duration::from_secs_f64(*published as f64 / self.rate);
            Some(next.min(self.end))
        } else if self.rate == 0.0 && n > 0 {
            Some(now)
        } else {
            None
        }
    }
}

/// When a publisher's loop wakes up by itself: when its next publication is due, unless a
/// write is pending (`written` false); then only at `limit`, because a broker that stops
/// reading this publisher must not hold it past the run.
pub(crate) fn wake_at(next_due: Option<Instant>, written: bool, limit: Instant) -> Instant {
    match next_due {
        Some(due) if written => due,
        _ => limit,
    }
}

/// Publishes at `rate` per second (0: as fast as the window and the socket allow) from
/// `start` to `end`, then waits for outstanding acknowledgements until `drain_end`. Gives
/// the client back unless its connection failed or the broker stopped reading it (writes
/// still waiting at `drain_end` count as a timeout, and their publications as unwritten).
pub(crate) async fn publisher(
    mut client: Client,
    mut publish: Publish,
    rate: f64,
    window: usize,
    start: Instant,
    end: Instant,
    drain_end: Instant,
) -> (PubStats, Option<Client>) {
    let mut stats = PubStats::default();
    sleep_until(start).await;
    let outcome = publish_loop(
        &mut client,
        &mut publish,
        rate,
        window,
        end,
        drain_end,
        &mut stats,
    )
    .await;
    let client = settle(
        client,
        &publish,
        outcome,
        &mut stats.published,
        &mut stats.error,
    );
    (stats, client)
}

/// Ends a publisher's run: publications still whole in its write buffer were never written
/// (the broker stopped reading it) and come off `published`. The client comes back if the
/// run ended with everything written; if not, `error` says why (a timeout when the buffer
/// never emptied).
pub(crate) fn settle(
    client: Client,
    publish: &Publish,
    outcome: Result<(), Failure>,
    published: &mut u64,
    error: &mut Option<Failure>,
) -> Option<Client> {
    let left = unsent(client.wbuf.len(), frame_len(publish, client.version));
    *published -= left.min(*published);
    match outcome {
        Ok(()) if client.wbuf.is_empty() => Some(client),
        Ok(()) => {
            *error = Some(Failure::Timeout);
            None
        }
        Err(f) => {
            *error = Some(f);
            None
        }
    }
}

async fn publish_loop(
    client: &mut Client,
    publish: &mut Publish,
    rate: f64,
    window: usize,
    end: Instant,
    drain_end: Instant,
    stats: &mut PubStats,
) -> Result<(), Failure> {
    let pace = Pace {
        start: Instant::now(),
        rate,
        end,
    };
    let version = client.version;
    let mut inflight = 0usize;
    let (mut rd, mut wr) = client.stream.split();
    let (rbuf, wbuf) = (&mut client.rbuf, &mut client.wbuf);
    let mut packet_id: u16 = 0;
    loop {
        let now = Instant::now();
        let publishing = now < end;
        if !publishing && wbuf.is_empty() && inflight == 0 {
            return Ok(());
        }
        if now >= drain_end {
            return Ok(());
        }
        let mut next_due = None;
        if publishing {
            let room = (window.saturating_sub(inflight) as u64, wbuf.is_empty());
            let encode = |_| {
                if publish.qos != QoS::AtMostOnce {
                    packet_id = packet_id.checked_add(1).unwrap_or(1);
                    publish.packet_id = packet_id;
                    inflight += 1;
                }
                encode_timestamped(publish, version, wbuf);
            };
            next_due = pace.publish_due(now, room, &mut stats.published, encode);
        }
        let limit = if publishing { end } else { drain_end };
        let wake = wake_at(next_due, wbuf.is_empty(), limit);
        tokio::select! {
            read = rd.read_buf(rbuf) => {
                if read? == 0 {
                    return Err(Failure::Closed);
                }
                take_acks(rbuf, wbuf, version, &mut inflight, stats)?;
            }
            written = wr.write_all_buf(wbuf), if !wbuf.is_empty() => written?,
            _ = sleep_until(wake) => {}
        }
    }
}

/// Takes the acknowledgements in `rbuf`: a PUBACK or PUBCOMP frees a place in the window
/// and is counted by reason code; a PUBREC is answered with a PUBREL.
fn take_acks(
    rbuf: &mut BytesMut,
    wbuf: &mut BytesMut,
    version: ProtocolVersion,
    inflight: &mut usize,
    stats: &mut PubStats,
) -> Result<(), Failure> {
    while let Some(packet) = decode_from(rbuf, version)? {
        match packet {
            Packet::PubAck(ack) | Packet::PubComp(ack) => {
                *inflight = inflight.saturating_sub(1);
                stats.acked += 1;
                stats.acks.record(ack.reason_code as u8);
            }
            Packet::PubRec(rec) => {
                let rel = Packet::PubRel(Ack::new(rec.packet_id));
                encode_into(&rel, version, wbuf);
            }
            _ => {}
        }
    }
    Ok(())
}

/// Bytes one encoded `publish` takes (its header's size does not depend on the packet id).
fn frame_len(publish: &Publish, version: ProtocolVersion) -> usize {
    let mut header = BytesMut::new();
    if let Err(e) = publish.encode_header(version, &mut header) {
        panic!("herald-bench built an unencodable PUBLISH: {e}");
    }
    header.len() + publish.payload.len()
}

/// Publications left whole in a write buffer of `len` bytes when a run gives up on a
/// broker that stopped reading: they were never written. (A QoS 2 PUBREL waiting with them
/// makes this an estimate.)
fn unsent(len: usize, frame_len: usize) -> u64 {
    (len / frame_len.max(1)) as u64
}

/// Appends `publish` with the current time in the first 8 bytes of its payload.
fn encode_timestamped(publish: &Publish, version: ProtocolVersion, wbuf: &mut BytesMut) {
    if let Err(e) = publish.encode_header(version, wbuf) {
        panic!("herald-bench built an unencodable PUBLISH: {e}");
    }
    wbuf.extend_from_slice(&unix_nanos().to_be_bytes());
    wbuf.extend_from_slice(&publish.payload[8..]);
}
