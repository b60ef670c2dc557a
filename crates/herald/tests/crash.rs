//! Crash safety: the real `herald` binary is killed with SIGKILL while publishers send QoS 1
//! and QoS 2 messages to persistent subscribers (during fan-out and group commits; with
//! 64 KiB memtables, flushes and compactions run all the time), and again while the
//! subscribers drain; each time it restarts on the same data directory. At the end every
//! acknowledged message has reached every subscriber (QoS 1 at least once, QoS 2 exactly
//! once to the application), and the subscriptions and the retained message survived.

// A test harness: a poisoned lock or a failed spawn is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Raw, Rng};
use mqtt_codec::ProtocolVersion::{self, V3_1_1, V5};
use mqtt_codec::{Ack, Connect, Packet, Publish, QoS, ReasonCode};

/// What the publishers had acknowledged, by payload, with its QoS.
type Acked = Arc<Mutex<HashMap<String, QoS>>>;

struct Herald {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Herald {
    /// A failing test must not leave Herald running (holding the test's output open).
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where Herald listens now: a new port after each restart (a fixed port could be taken
/// by another test's Herald in the moment between a kill and a restart).
type Target = Arc<Mutex<SocketAddr>>;

/// Starts the binary on `dir` (on a free port) and waits until it listens.
fn start(dir: &Path, fsync: &str) -> Herald {
    let mut child = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args([
            "serve",
            "--log-level",
            "info",
            "--mqtt-listen",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(dir)
        .env("HERALD_STORE_FSYNC", fsync)
        .env("HERALD_LISTENERS_WS", "")
        .env("HERALD_HTTP_LISTEN", "")
        .env("HERALD_STORE_MEMTABLE_BYTES", "65536")
        .env("HERALD_STORE_MIN_FREE_DISK_BYTES", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("herald starts");
    let addr = common::listen_addr(child.stdout.take().expect("piped"), |_| ());
    Herald { child, addr }
}

/// SIGKILL (by `Drop`).
fn kill(h: Herald) {
    drop(h);
}

/// Connects, or `None` while Herald is down.
async fn try_connect(target: &Target, connect: Connect) -> Option<Raw> {
    let addr = *target.lock().unwrap();
    let stream = tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr))
        .await
        .ok()?
        .ok()?;
    let mut raw = Raw::from_stream(stream, connect.protocol);
    if !send(&mut raw, Packet::Connect(Box::new(connect))).await {
        return None;
    }
    match recv(&mut raw).await? {
        Packet::ConnAck(a) if a.reason_code == ReasonCode::Success => Some(raw),
        _ => None,
    }
}

/// Sends `packet`; `false` when the connection is gone (Herald was killed).
async fn send(c: &mut Raw, packet: Packet) -> bool {
    use tokio::io::AsyncWriteExt;
    let bytes = packet.to_bytes(c.version).expect("encodes");
    matches!(
        tokio::time::timeout(Duration::from_secs(3), c.stream.write_all(&bytes)).await,
        Ok(Ok(()))
    )
}

/// The next packet, or `None` when the connection is gone (or silent for 3 s).
async fn recv(c: &mut Raw) -> Option<Packet> {
    tokio::time::timeout(Duration::from_secs(3), c.try_recv(Duration::from_secs(4)))
        .await
        .ok()
        .flatten()
}

/// Most messages one publisher sends: bounds the test's work whatever the machine's speed.
const MAX_PER_PUBLISHER: u32 = 2000;

/// One publisher: publishes `{name}-{n}` one at a time at `qos`, recording what was
/// acknowledged (PUBACK, PUBREC), reconnecting while Herald restarts, until `stop`.
async fn publisher(target: Target, name: String, qos: QoS, acked: Acked, stop: Arc<AtomicBool>) {
    let mut n = 0u32;
    while !stop.load(Ordering::Relaxed) {
        if n >= MAX_PER_PUBLISHER {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        let Some(mut c) = try_connect(&target, Connect::new(V5, name.as_str(), 30)).await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        while !stop.load(Ordering::Relaxed) && n < MAX_PER_PUBLISHER {
            n += 1;
            let payload = format!("{name}-{n}");
            let mut p = Publish::new("crash/t", payload.clone().into_bytes());
            p.qos = qos;
            p.packet_id = (n % 60_000 + 1) as u16;
            if !send(&mut c, Packet::Publish(p)).await {
                break;
            }
            match recv(&mut c).await {
                Some(Packet::PubAck(a)) | Some(Packet::PubRec(a)) if !a.reason_code.is_error() => {
                    acked.lock().unwrap().insert(payload, qos);
                    if qos == QoS::ExactlyOnce
                        && (!send(&mut c, Packet::PubRel(Ack::new(a.packet_id))).await
                            || recv(&mut c).await.is_none())
                    {
                        break;
                    }
                }
                _ => break,
            }
        }
    }
}

/// What one subscriber's application received.
#[derive(Default)]
struct Inbox {
    /// Times each payload was handed to the application.
    delivered: HashMap<String, u32>,
    /// QoS 2 packet ids received and not yet released: a PUBLISH with one of these is the
    /// same message again (kept across reconnects, as a client's session state).
    awaiting_release: HashSet<u16>,
}

/// One subscriber: resumes its session, takes what comes, acknowledges it, until `stop`.
async fn subscriber(
    target: Target,
    version: ProtocolVersion,
    name: String,
    inbox: Arc<Mutex<Inbox>>,
    stop: Arc<AtomicBool>,
) {
    while !stop.load(Ordering::Relaxed) {
        let Some(mut c) = try_connect(&target, persistent(version, &name)).await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        while !stop.load(Ordering::Relaxed) {
            let reply = match recv(&mut c).await {
                Some(Packet::Publish(p)) => {
                    let mut inbox = inbox.lock().unwrap();
                    let again =
                        p.qos == QoS::ExactlyOnce && !inbox.awaiting_release.insert(p.packet_id);
                    if !again {
                        let payload = String::from_utf8_lossy(&p.payload).into_owned();
                        *inbox.delivered.entry(payload).or_default() += 1;
                    }
                    match p.qos {
                        QoS::AtMostOnce => continue,
                        QoS::AtLeastOnce => Packet::PubAck(Ack::new(p.packet_id)),
                        QoS::ExactlyOnce => Packet::PubRec(Ack::new(p.packet_id)),
                    }
                }
                Some(Packet::PubRel(a)) => {
                    inbox.lock().unwrap().awaiting_release.remove(&a.packet_id);
                    Packet::PubComp(Ack::new(a.packet_id))
                }
                Some(_) => continue,
                None => break,
            };
            if !send(&mut c, reply).await {
                break;
            }
        }
    }
}

fn persistent(version: ProtocolVersion, id: &str) -> Connect {
    let mut c = Connect::new(version, id, 30);
    c.clean_start = false;
    if version.is_v5() {
        c.properties.session_expiry_interval = Some(3600);
    }
    c
}

/// Publishes one QoS 1 message and waits (up to 60 s) for its PUBACK.
async fn publish_once(target: &Target, topic: &str, payload: &[u8], retain: bool) -> bool {
    let Some(mut c) = try_connect(target, Connect::new(V5, "once", 30)).await else {
        return false;
    };
    let mut p = Publish::new(topic, payload.to_vec());
    p.qos = QoS::AtLeastOnce;
    p.packet_id = 1;
    p.retain = retain;
    if !send(&mut c, Packet::Publish(p)).await {
        return false;
    }
    for _ in 0..20 {
        match recv(&mut c).await {
            Some(Packet::PubAck(a)) => return !a.reason_code.is_error(),
            Some(_) => return false,
            None => continue,
        }
    }
    false
}

const SUBSCRIBERS: [(ProtocolVersion, &str); 3] = [
    (V5, "crash-sub-a"),
    (V5, "crash-sub-b"),
    (V3_1_1, "crash-sub-c"),
];

async fn run(seed: u64, fsync: &str) {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut h = start(dir.path(), fsync);
    let target: Target = Arc::new(Mutex::new(h.addr));
    for (version, name) in SUBSCRIBERS {
        let mut c = try_connect(&target, persistent(version, name))
            .await
            .unwrap();
        c.subscribe("crash/#", QoS::ExactlyOnce).await;
        c.disconnect().await;
    }
    assert!(publish_once(&target, "crash-retained/marker", b"retained", true).await);

    // Publishing, killed three times.
    let acked: Acked = Default::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for (i, qos) in [
        QoS::AtLeastOnce,
        QoS::AtLeastOnce,
        QoS::ExactlyOnce,
        QoS::ExactlyOnce,
    ]
    .into_iter()
    .enumerate()
    {
        tasks.push(tokio::spawn(publisher(
            target.clone(),
            format!("pub{i}"),
            qos,
            acked.clone(),
            stop.clone(),
        )));
    }
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(300 + rng.below(700))).await;
        kill(h);
        h = start(dir.path(), fsync);
        *target.lock().unwrap() = h.addr;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks.drain(..) {
        t.await.unwrap();
    }
    let acked: HashMap<String, QoS> = acked.lock().unwrap().clone();
    eprintln!("seed {seed}: {} acknowledged; draining", acked.len());
    assert!(acked.len() > 20, "publishers got through: {}", acked.len());

    // Draining, killed twice.
    let stop = Arc::new(AtomicBool::new(false));
    let inboxes: Vec<Arc<Mutex<Inbox>>> = SUBSCRIBERS.iter().map(|_| Default::default()).collect();
    for ((version, name), inbox) in SUBSCRIBERS.into_iter().zip(&inboxes) {
        tasks.push(tokio::spawn(subscriber(
            target.clone(),
            version,
            name.to_string(),
            inbox.clone(),
            stop.clone(),
        )));
    }
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(100 + rng.below(300))).await;
        kill(h);
        h = start(dir.path(), fsync);
        *target.lock().unwrap() = h.addr;
    }
    // Until every subscriber has everything acknowledged (or 30 s).
    let complete = |inbox: &Arc<Mutex<Inbox>>| {
        let inbox = inbox.lock().unwrap();
        acked.keys().all(|p| inbox.delivered.contains_key(p))
    };
    for _ in 0..300 {
        if inboxes.iter().all(complete) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("seed {seed}: drained; probing");
    // A probe published now proves the subscriptions survived every restart. (With fsync
    // "always" the subscribers' acknowledgements are thousands of fsyncs still queued: the
    // probe's PUBACK may take a while.)
    assert!(publish_once(&target, "crash/probe", b"probe", false).await);
    for _ in 0..600 {
        if inboxes
            .iter()
            .all(|i| i.lock().unwrap().delivered.contains_key("probe"))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }

    for ((_, name), inbox) in SUBSCRIBERS.iter().zip(&inboxes) {
        let inbox = inbox.lock().unwrap();
        let lost: Vec<&String> = acked
            .keys()
            .filter(|p| !inbox.delivered.contains_key(*p))
            .collect();
        assert!(
            lost.is_empty(),
            "seed {seed}: {name} lost {} of {} acknowledged messages, e.g. {:?}",
            lost.len(),
            acked.len(),
            lost.iter().take(5).collect::<Vec<_>>()
        );
        let twice: Vec<(&String, &u32)> = inbox
            .delivered
            .iter()
            // pub2 and pub3 publish at QoS 2.
            .filter(|(p, n)| **n > 1 && (p.starts_with("pub2") || p.starts_with("pub3")))
            .collect();
        assert!(
            twice.is_empty(),
            "seed {seed}: {name} got QoS 2 messages twice: {twice:?}"
        );
        assert!(
            inbox.delivered.contains_key("probe"),
            "seed {seed}: {name}'s subscription did not survive"
        );
    }
    let mut fresh = Raw::connect(h.addr, V5, "fresh").await;
    fresh.subscribe("crash-retained/#", QoS::AtMostOnce).await;
    let retained = fresh.recv_publish().await;
    assert_eq!(&retained.payload[..], b"retained");
    kill(h);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loses_nothing_acknowledged_fsync_batch() {
    for seed in [1, 2] {
        run(seed, "batch").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loses_nothing_acknowledged_fsync_always() {
    run(3, "always").await;
}
