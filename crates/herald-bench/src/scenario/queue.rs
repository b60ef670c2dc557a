//! `fill`, `drain` and `restart`: how a broker copes with one large offline queue.
//!
//! `fill` leaves a persistent subscriber's session behind with a subscription and has one
//! publisher send it N sequence-numbered messages; `drain` reconnects that subscriber and
//! takes them all, counting gaps, duplicates and reordering. `restart` does both around a
//! restart of a broker it starts itself, and times the restart (process start to accepting
//! connections) and the drain after it.
//!
//! These scenarios have one or two connections, so they run in this process rather than in
//! worker processes: what they measure is the broker's store, not the client's fan-out.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use indicatif::{ProgressBar, ProgressStyle};
use mqtt_codec::{Ack, Packet, Publish, QoS};
use serde::Serialize;
use tokio::time::{Instant, timeout};

use super::inbox::{Inbox, sequence};
use crate::brokers::{self, Durability, Fsync, Kind, Setup};
use crate::client::{Client, ClientConfig, Failure, Target, decode_from, encode_into};

/// Parameters of `fill`.
#[derive(Debug, Clone, Serialize)]
pub struct FillSpec {
    /// Messages to queue.
    pub count: u64,
    /// QoS of the subscription and the publications.
    pub qos: u8,
    /// The persistent subscriber whose queue is filled.
    pub client_id: String,
    /// The topic it subscribes to and the publisher publishes on.
    pub topic: String,
    /// Unacknowledged publications allowed at once.
    pub inflight: usize,
    /// Payload bytes (at least 8: the sequence number).
    pub payload: usize,
}

/// What `fill` measured.
#[derive(Debug, Clone, Serialize)]
pub struct FillReport {
    /// The parameters.
    pub spec: FillSpec,
    /// Whether the subscriber found a session left from before.
    pub subscriber_session_present: bool,
    /// Publications written.
    pub published: u64,
    /// Publications acknowledged (PUBACK, or PUBCOMP for QoS 2; written, for QoS 0).
    pub acked: u64,
    /// Seconds from the first publication to the last acknowledgement.
    pub seconds: f64,
    /// Acknowledged publications per second.
    pub acked_per_s: f64,
}

/// Parameters of `drain`.
#[derive(Debug, Clone, Serialize)]
pub struct DrainSpec {
    /// The persistent subscriber to resume.
    pub client_id: String,
    /// Messages expected, with sequence numbers 0..expect.
    pub expect: u64,
    /// Seconds without a message after which the drain gives up.
    pub idle_s: f64,
}

/// What `drain` measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DrainReport {
    /// The subscriber.
    pub client_id: String,
    /// Whether the broker resumed its session.
    pub session_present: bool,
    /// Messages expected.
    pub expected: u64,
    /// Publications handed to the application (duplicates included).
    pub received: u64,
    /// Distinct expected sequence numbers received.
    pub unique: u64,
    /// Expected sequence numbers never received.
    pub missing: u64,
    /// Sequence numbers received more than once (the extra copies).
    pub duplicates: u64,
    /// Messages that arrived after one with a higher sequence number.
    pub out_of_order: u64,
    /// Messages whose payload has no sequence number in 0..expect.
    pub unexpected: u64,
    /// Seconds to connect (CONNECT to CONNACK).
    pub connect_s: f64,
    /// Seconds from the start of the connect to the first message.
    pub first_message_s: Option<f64>,
    /// Seconds from the start of the connect to the last message.
    pub last_message_s: Option<f64>,
    /// Distinct messages per second between the first and the last.
    pub per_s: f64,
    /// Whether the drain ended on the idle timeout rather than with every message.
    pub idle_timeout: bool,
}

fn bar(len: u64, msg: &'static str, quiet: bool) -> Option<ProgressBar> {
    if quiet {
        return None;
    }
    let bar = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template("{msg:>8} [{bar:40}] {pos}/{len} {per_sec}") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(msg);
    Some(bar)
}

/// Runs `fill` against the broker at `target`.
pub async fn fill(
    target: Target,
    cfg: &ClientConfig,
    spec: FillSpec,
    quiet: bool,
) -> anyhow::Result<FillReport> {
    let qos = QoS::from_u8(spec.qos).context("--qos must be 0, 1 or 2")?;
    if spec.payload < 8 {
        bail!("--payload must be at least 8 bytes (the sequence number travels in it)");
    }
    let mut sub = Client::connect(target, cfg, &spec.client_id, false)
        .await
        .map_err(|f| anyhow::anyhow!("subscriber {}: {f:?}", spec.client_id))?;
    let subscriber_session_present = sub.session_present;
    sub.subscribe(&spec.topic, qos, cfg.timeout)
        .await
        .map_err(|f| anyhow::anyhow!("subscribing {}: {f:?}", spec.topic))?;
    sub.disconnect().await?;
    let publisher_id = format!("{}-filler", spec.client_id);
    let mut client = Client::connect(target, cfg, &publisher_id, true)
        .await
        .map_err(|f| anyhow::anyhow!("publisher: {f:?}"))?;
    let mut publish = Publish::new(spec.topic.clone(), Bytes::from(vec![0u8; spec.payload]));
    publish.qos = qos;
    let progress = bar(spec.count, "fill", quiet);
    let started = Instant::now();
    let sent = publish_sequence(
        &mut client,
        &mut publish,
        spec.count,
        spec.inflight,
        progress.as_ref(),
    )
    .await;
    let seconds = started.elapsed().as_secs_f64();
    if let Some(b) = progress {
        b.finish_and_clear();
    }
    let (published, acked) = sent.map_err(|f| anyhow::anyhow!("publishing: {f:?}"))?;
    let _ = client.disconnect().await;
    Ok(FillReport {
        spec,
        subscriber_session_present,
        published,
        acked,
        seconds,
        acked_per_s: acked as f64 / seconds.max(1e-9),
    })
}

/// Publishes sequence numbers 0..count with at most `window` unacknowledged, and returns
/// (published, acknowledged) once every publication is acknowledged.
async fn publish_sequence(
    client: &mut Client,
    publish: &mut Publish,
    count: u64,
    window: usize,
    progress: Option<&ProgressBar>,
) -> Result<(u64, u64), Failure> {
    let version = client.version;
    let window = window.clamp(1, 65_000) as u64;
    let (mut rd, mut wr) = client.stream.split();
    let (rbuf, wbuf) = (&mut client.rbuf, &mut client.wbuf);
    let (mut next, mut acked, mut packet_id) = (0u64, 0u64, 0u16);
    let qos0 = publish.qos == QoS::AtMostOnce;
    loop {
        while next < count && next - acked < window && wbuf.len() < 64 * 1024 {
            if !qos0 {
                packet_id = packet_id.checked_add(1).unwrap_or(1);
                publish.packet_id = packet_id;
            }
            if let Err(e) = publish.encode_header(version, wbuf) {
                panic!("herald-bench built an unencodable PUBLISH: {e}");
            }
            wbuf.extend_from_slice(&next.to_be_bytes());
            wbuf.extend_from_slice(&publish.payload[8..]);
            next += 1;
        }
        if qos0 {
            wr.write_all_buf(wbuf).await?;
            acked = next;
            if next == count {
                return Ok((next, acked));
            }
            continue;
        }
        if acked == count {
            return Ok((next, acked));
        }
        tokio::select! {
            read = rd.read_buf(rbuf) => {
                if read? == 0 {
                    return Err(Failure::Closed);
                }
                while let Some(packet) = decode_from(rbuf, version)? {
                    match packet {
                        Packet::PubAck(_) | Packet::PubComp(_) => acked += 1,
                        Packet::PubRec(rec) => {
                            encode_into(&Packet::PubRel(Ack::new(rec.packet_id)), version, wbuf);
                        }
                        _ => {}
                    }
                }
                if let Some(b) = progress {
                    b.set_position(acked);
                }
            }
            written = wr.write_all_buf(wbuf), if !wbuf.is_empty() => written?,
        }
    }
}

/// Tracks which sequence numbers in 0..expect arrived, and how.
struct Tally {
    seen: Vec<bool>,
    highest: Option<u64>,
    report: DrainReport,
}

impl Tally {
    fn record(&mut self, seq: Option<u64>) {
        self.report.received += 1;
        let Some(seq) = seq.filter(|&s| s < self.report.expected) else {
            self.report.unexpected += 1;
            return;
        };
        if std::mem::replace(&mut self.seen[seq as usize], true) {
            self.report.duplicates += 1;
        } else {
            self.report.unique += 1;
        }
        if self.highest.is_some_and(|h| seq < h) {
            self.report.out_of_order += 1;
        }
        self.highest = self.highest.max(Some(seq));
    }
}

/// Runs `drain` against the broker at `target`.
pub async fn drain(
    target: Target,
    cfg: &ClientConfig,
    spec: DrainSpec,
    quiet: bool,
) -> anyhow::Result<DrainReport> {
    let started = Instant::now();
    let mut client = Client::connect(target, cfg, &spec.client_id, false)
        .await
        .map_err(|f| anyhow::anyhow!("subscriber {}: {f:?}", spec.client_id))?;
    let mut tally = Tally {
        seen: vec![false; spec.expect as usize],
        highest: None,
        report: DrainReport {
            client_id: spec.client_id.clone(),
            session_present: client.session_present,
            expected: spec.expect,
            connect_s: started.elapsed().as_secs_f64(),
            ..DrainReport::default()
        },
    };
    let progress = bar(spec.expect, "drain", quiet);
    let (mut first, mut last) = (None, None);
    let idle = Duration::from_secs_f64(spec.idle_s);
    let version = client.version;
    let mut inbox = Inbox::default();
    while tally.report.unique < spec.expect {
        let read = timeout(idle, client.stream.read_buf(&mut client.rbuf)).await;
        let Ok(read) = read else {
            tally.report.idle_timeout = true;
            break;
        };
        if read? == 0 {
            bail!("the broker closed the connection during the drain");
        }
        let now = started.elapsed();
        while let Some(packet) = client.try_decode().map_err(|f| anyhow::anyhow!("{f:?}"))? {
            if let Some(p) = inbox.on_packet(packet, version, &mut client.wbuf) {
                first.get_or_insert(now);
                last = Some(now);
                tally.record(sequence(&p.payload));
            }
        }
        client.flush().await?;
        if let Some(b) = &progress {
            b.set_position(tally.report.unique);
        }
    }
    if let Some(b) = progress {
        b.finish_and_clear();
    }
    let _ = client.disconnect().await;
    let mut r = tally.report;
    r.missing = r.expected - r.unique;
    r.first_message_s = first.map(|d| d.as_secs_f64());
    r.last_message_s = last.map(|d| d.as_secs_f64());
    if let (Some(f), Some(l)) = (first, last) {
        r.per_s = r.unique as f64 / (l - f).as_secs_f64().max(1e-9);
    }
    Ok(r)
}

/// Parameters of `restart`.
#[derive(Debug, Clone, Serialize)]
pub struct RestartSpec {
    /// The broker to start.
    pub broker: Kind,
    /// Its executable.
    pub bin: PathBuf,
    /// Where its configuration, log and store go (the store is wiped first).
    pub dir: PathBuf,
    /// herald's fsync policy.
    pub fsync: Fsync,
    /// Stop with SIGKILL instead of SIGTERM.
    pub kill: bool,
    /// The fill.
    pub fill: FillSpec,
    /// Seconds without a message after which the drain gives up.
    pub idle_s: f64,
}

/// What `restart` measured.
#[derive(Debug, Clone, Serialize)]
pub struct RestartReport {
    /// The broker's configuration.
    pub config: String,
    /// The fill before the restart.
    pub fill: FillReport,
    /// SIGTERM or SIGKILL.
    pub stop_signal: &'static str,
    /// Seconds from the signal to the process's exit.
    pub shutdown_s: f64,
    /// Whether it exited by itself (after SIGTERM) within the grace period.
    pub clean_shutdown: bool,
    /// Seconds from starting the process again to its listener accepting.
    pub restart_s: f64,
    /// The drain after the restart.
    pub drain: DrainReport,
    /// restart_s plus the drain's time to its last message: how long until the subscriber
    /// has everything back.
    pub restart_plus_drain_s: f64,
}

/// Runs `restart`: start, fill, stop, start again, drain.
pub async fn restart(
    cfg: &ClientConfig,
    spec: RestartSpec,
    quiet: bool,
) -> anyhow::Result<RestartReport> {
    let mut setup = Setup {
        durability: Durability::Store(spec.fsync),
        max_queued: spec.fill.count.max(1_000_000),
        ..Setup::default()
    };
    brokers::wipe_data(&spec.dir)?;
    let running = brokers::start(spec.broker, &spec.bin, &spec.dir, &setup).await?;
    let config = running.config.clone();
    let target = Target {
        addr: running.addr,
        source: None,
    };
    let fill_report = fill(target, cfg, spec.fill.clone(), quiet).await?;
    let (shutdown, clean) = if spec.kill {
        let t = Instant::now();
        running.kill().await;
        (t.elapsed(), false)
    } else {
        running.stop_within(Duration::from_secs(600)).await
    };
    setup.port = Some(target.addr.port());
    let running = brokers::start(spec.broker, &spec.bin, &spec.dir, &setup).await?;
    let restart_s = running.started_in.as_secs_f64();
    let drain_spec = DrainSpec {
        client_id: spec.fill.client_id.clone(),
        expect: fill_report.acked,
        idle_s: spec.idle_s,
    };
    let drained = drain(target, cfg, drain_spec, quiet).await;
    running.stop().await;
    let drained = drained?;
    Ok(RestartReport {
        config,
        stop_signal: if spec.kill { "SIGKILL" } else { "SIGTERM" },
        shutdown_s: shutdown.as_secs_f64(),
        clean_shutdown: clean,
        restart_s,
        restart_plus_drain_s: restart_s + drained.last_message_s.unwrap_or(0.0),
        drain: drained,
        fill: fill_report,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tally_counts_gaps_duplicates_and_reordering() {
        let mut t = Tally {
            seen: vec![false; 5],
            highest: None,
            report: DrainReport {
                expected: 5,
                ..DrainReport::default()
            },
        };
        for seq in [0, 2, 1, 2, 9] {
            t.record(Some(seq));
        }
        t.record(None);
        let r = t.report;
        assert_eq!((r.received, r.unique, r.duplicates), (6, 3, 1));
        assert_eq!((r.out_of_order, r.unexpected), (1, 2));
    }
}
