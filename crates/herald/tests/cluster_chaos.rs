//! Chaos: three Herald nodes (the binary, each in a process of its own with its own store)
//! on a cluster of three nats-servers, under QoS 1 and 2 load from publishers on every node
//! to persistent subscribers on every node, while Herald nodes and NATS servers are
//! SIGKILLed at random moments and started again. The checker: every message a publisher
//! was acknowledged reaches every subscriber, and no QoS 2 message reaches one twice.
//!
//! A second run replicates sessions (`cluster.replicate_sessions`): a Herald node that dies
//! loses its data directory too (its machine), and each subscriber comes back to the next
//! node every time, so its session moves between live nodes or is resumed from the
//! replicated bucket when its node is gone.
//!
//! A publisher never sends a message twice: one whose acknowledgement did not come (its node
//! died first) may or may not be delivered, but at QoS 2 at most once. A subscriber keeps
//! its QoS 2 packet ids until PUBREL across reconnections, as a client must: a PUBLISH the
//! server sends again for an exchange not yet released is the same delivery.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::nats::{NatsCluster, Node};
use common::{Raw, Rng};
use mqtt_codec::ProtocolVersion::V5;
use mqtt_codec::{Ack, Connect, Packet, Publish, QoS, ReasonCode, Subscribe};

const NODES: usize = 3;
/// How long publishers publish while nodes die.
const CHAOS_FOR: Duration = Duration::from_secs(20);
/// How long, after, every acknowledged message has to arrive.
const SETTLE_WITHIN: Duration = Duration::from_secs(90);

type Addrs = Arc<Vec<Mutex<SocketAddr>>>;

/// What the publishers were acknowledged (payload -> QoS), and every QoS 2 payload sent.
#[derive(Default)]
struct Sent {
    acked: HashMap<String, QoS>,
    qos2: HashSet<String>,
    /// When each was acknowledged (shown when the test fails).
    acked_at: HashMap<String, f64>,
}

/// Seconds since the process started (the clock the failure output uses).
fn now() -> f64 {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_secs_f64()
}

/// Connects to node `i` as it is now (it may be down, restarting, or refusing while cut off
/// from NATS): tried again every 100 ms until `stop`; with `rotate`, each try goes to the
/// next node (`i` is moved on).
async fn connect(
    addrs: &Addrs,
    i: &mut usize,
    rotate: bool,
    c: &Connect,
    stop: &AtomicBool,
) -> Option<(Raw, bool)> {
    while !stop.load(Ordering::Relaxed) {
        if rotate {
            *i = (*i + 1) % NODES;
        }
        let addr = *addrs[*i].lock().unwrap();
        let attempt = async {
            let stream = tokio::net::TcpStream::connect(addr).await.ok()?;
            let mut raw = Raw::from_stream(stream, V5);
            raw.try_send(Packet::Connect(Box::new(c.clone())))
                .await
                .ok()?;
            match raw.try_recv(Duration::from_secs(3600)).await? {
                Packet::ConnAck(ack) if ack.reason_code == ReasonCode::Success => {
                    Some((raw, ack.session_present))
                }
                _ => None,
            }
        };
        if let Ok(Some(connected)) = tokio::time::timeout(Duration::from_secs(10), attempt).await {
            return Some(connected);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

/// The next packet, or `None` when the connection ends or nothing comes within `within`.
async fn next(raw: &mut Raw, within: Duration) -> Option<Packet> {
    // The inner wait never ends first (it panics when it does).
    tokio::time::timeout(within, raw.try_recv(Duration::from_secs(3600)))
        .await
        .ok()
        .flatten()
}

async fn publisher(i: usize, addrs: Addrs, sent: Arc<Mutex<Sent>>, stop: Arc<AtomicBool>) {
    let c = Connect::new(V5, format!("p{i}").as_str(), 30);
    let mut n = 0u64;
    let mut node = i;
    'connection: while let Some((mut raw, _)) = connect(&addrs, &mut node, false, &c, &stop).await {
        while !stop.load(Ordering::Relaxed) {
            let payload = format!("p{i}-{n}");
            n += 1;
            let qos = if n.is_multiple_of(2) {
                QoS::AtLeastOnce
            } else {
                QoS::ExactlyOnce
            };
            if qos == QoS::ExactlyOnce {
                sent.lock().unwrap().qos2.insert(payload.clone());
            }
            let mut p = Publish::new(format!("chaos/p{i}").as_str(), payload.clone().into_bytes());
            p.qos = qos;
            p.packet_id = raw.next_id();
            let id = p.packet_id;
            if raw.try_send(Packet::Publish(p)).await.is_err() {
                continue 'connection; // not acknowledged: never sent again
            }
            match next(&mut raw, Duration::from_secs(30)).await {
                Some(Packet::PubAck(a)) if a.reason_code == ReasonCode::Success => {}
                Some(Packet::PubRec(a)) if a.reason_code == ReasonCode::Success => {
                    // Accepted at PUBREC; PUBCOMP only ends the exchange.
                    {
                        let mut s = sent.lock().unwrap();
                        s.acked_at.insert(payload.clone(), now());
                        s.acked.insert(payload, qos);
                    }
                    if raw.try_send(Packet::PubRel(Ack::new(id))).await.is_err() {
                        continue 'connection;
                    }
                    match next(&mut raw, Duration::from_secs(30)).await {
                        Some(Packet::PubComp(_)) => continue,
                        _ => continue 'connection,
                    }
                }
                _ => continue 'connection, // not acknowledged: never sent again
            }
            {
                let mut s = sent.lock().unwrap();
                s.acked_at.insert(payload.clone(), now());
                s.acked.insert(payload, qos);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        return;
    }
}

/// What a subscriber received: how many times each payload was delivered to it.
type Received = Arc<Mutex<HashMap<String, u32>>>;

async fn subscriber(
    i: usize,
    addrs: Addrs,
    received: Received,
    stop: Arc<AtomicBool>,
    rotate: bool,
) {
    let mut c = Connect::new(V5, format!("s{i}").as_str(), 30);
    c.clean_start = false;
    c.properties.session_expiry_interval = Some(3600);
    // QoS 2 exchanges received and not yet released: kept across connections.
    let mut unreleased: HashSet<u16> = HashSet::new();
    let mut subscribed = false;
    let mut node = i;
    while let Some((mut raw, present)) = connect(&addrs, &mut node, rotate, &c, &stop).await {
        // Shown when the test fails.
        eprintln!(
            "{:.3} s{i}: connected to h{node}, session present {present}",
            now()
        );
        if !present {
            assert!(!subscribed, "s{i}: the session was lost");
        }
        if !subscribed {
            // Subscribed once its SUBACK came; a node that died before sending it leaves
            // the subscription to be made again on the next connection.
            let id = raw.next_id();
            let subscribe = Packet::Subscribe(Subscribe::new(id, "chaos/#", QoS::ExactlyOnce));
            if raw.try_send(subscribe).await.is_err() {
                continue;
            }
            match next(&mut raw, Duration::from_secs(10)).await {
                Some(Packet::SubAck(a)) if a.packet_id == id => subscribed = true,
                _ => continue,
            }
        }
        while let Some(packet) = next(&mut raw, Duration::from_secs(5)).await {
            match packet {
                Packet::Publish(p) => {
                    let payload = String::from_utf8(p.payload.to_vec()).unwrap();
                    match p.qos {
                        QoS::AtLeastOnce => {
                            *received.lock().unwrap().entry(payload).or_default() += 1;
                            if raw
                                .try_send(Packet::PubAck(Ack::new(p.packet_id)))
                                .await
                                .is_err()
                            {
                                break;
                            }
                        }
                        QoS::ExactlyOnce => {
                            if unreleased.insert(p.packet_id) {
                                let mut r = received.lock().unwrap();
                                let n = r.entry(payload.clone()).or_default();
                                *n += 1;
                                if *n > 1 {
                                    eprintln!(
                                        "{:.3} s{i}: {payload} again on h{node}, packet id {}, dup {}",
                                        now(),
                                        p.packet_id,
                                        p.dup
                                    );
                                }
                            }
                            if raw
                                .try_send(Packet::PubRec(Ack::new(p.packet_id)))
                                .await
                                .is_err()
                            {
                                break;
                            }
                        }
                        QoS::AtMostOnce => {}
                    }
                }
                Packet::PubRel(a) => {
                    unreleased.remove(&a.packet_id);
                    if raw
                        .try_send(Packet::PubComp(Ack::new(a.packet_id)))
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
                Packet::Disconnect(d) => {
                    eprintln!("{:.3} s{i}: DISCONNECT {:?}", now(), d.reason_code);
                }
                _ => {}
            }
        }
        eprintln!("{:.3} s{i}: connection ended", now());
        if stop.load(Ordering::Relaxed) {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nothing_acknowledged_is_lost_and_no_qos2_twice_while_nodes_die() {
    chaos(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicated_sessions_lose_nothing_while_nodes_and_their_disks_die() {
    chaos(true).await;
}

/// The chaos run; `replicated`: sessions are replicated, a node dies with its data, and
/// subscribers come back to the next node.
async fn chaos(replicated: bool) {
    let mut nats = NatsCluster::start();
    nats.ready().await;
    let urls = nats.urls().join(",");
    let dirs: Vec<tempfile::TempDir> = (0..NODES).map(|_| tempfile::tempdir().unwrap()).collect();
    let replicate = [("HERALD_CLUSTER_REPLICATE_SESSIONS", "true")];
    let env: &[(&str, &str)] = if replicated { &replicate } else { &[] };
    let mut nodes: Vec<Node> = (0..NODES)
        .map(|i| Node::start_with(dirs[i].path(), &urls, &format!("h{i}"), 3, env))
        .collect();
    let addrs: Addrs = Arc::new(nodes.iter().map(|n| Mutex::new(n.addr)).collect());

    let stop_publishing = Arc::new(AtomicBool::new(false));
    let stop_receiving = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(Mutex::new(Sent::default()));
    let received: Vec<Received> = (0..NODES).map(|_| Received::default()).collect();
    let subscribers: Vec<_> = (0..NODES)
        .map(|i| {
            tokio::spawn(subscriber(
                i,
                addrs.clone(),
                received[i].clone(),
                stop_receiving.clone(),
                replicated,
            ))
        })
        .collect();
    // Every subscriber's interest is on NATS before the publishers start.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let publishers: Vec<_> = (0..NODES)
        .map(|i| {
            tokio::spawn(publisher(
                i,
                addrs.clone(),
                sent.clone(),
                stop_publishing.clone(),
            ))
        })
        .collect();

    // The chaos: every 2 to 4 seconds a Herald node or a NATS server is SIGKILLed, and
    // started again a moment later (one NATS server down at a time: the stream keeps its
    // quorum).
    let seed = std::env::var("CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x0005_eedc_4a05_u64);
    let mut rng = Rng(seed);
    let started = Instant::now();
    let mut kills = Vec::new();
    while started.elapsed() < CHAOS_FOR {
        tokio::time::sleep(Duration::from_millis(2000 + rng.below(2000))).await;
        // With replicated sessions only Herald nodes die (their disks with them): NATS
        // servers dying while sessions move between nodes is the first run's.
        if replicated || rng.below(3) < 2 {
            let i = rng.below(NODES as u64) as usize;
            nodes[i].kill();
            kills.push(format!("h{i}"));
            eprintln!("{:.3} killed h{i}", now());
            if replicated {
                // Its machine: the data goes too.
                std::fs::remove_dir_all(dirs[i].path()).unwrap();
                std::fs::create_dir(dirs[i].path()).unwrap();
            }
            tokio::time::sleep(Duration::from_millis(200 + rng.below(1000))).await;
            nodes[i].restart();
            eprintln!("{:.3} h{i} back", now());
            *addrs[i].lock().unwrap() = nodes[i].addr;
        } else {
            let i = rng.below(3) as usize;
            nats.servers[i].kill();
            kills.push(format!("nats{i}"));
            eprintln!("{:.3} killed nats{i}", now());
            tokio::time::sleep(Duration::from_millis(1000 + rng.below(2000))).await;
            nats.servers[i].restart();
            eprintln!("{:.3} nats{i} back", now());
        }
    }
    stop_publishing.store(true, Ordering::Relaxed);
    for p in publishers {
        p.await.unwrap();
    }

    // Every acknowledged message reaches every subscriber.
    let acked = sent.lock().unwrap().acked.clone();
    assert!(
        acked.len() > 100,
        "the load ran: {} acknowledged",
        acked.len()
    );
    let deadline = Instant::now() + SETTLE_WITHIN;
    let missing = |r: &Received| -> Vec<String> {
        let r = r.lock().unwrap();
        let mut m: Vec<String> = acked
            .keys()
            .filter(|k| !r.contains_key(*k))
            .cloned()
            .collect();
        m.sort();
        m
    };
    while Instant::now() < deadline && received.iter().any(|r| !missing(r).is_empty()) {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    stop_receiving.store(true, Ordering::Relaxed);
    for s in subscribers {
        s.await.unwrap();
    }
    let qos2 = sent.lock().unwrap().qos2.clone();
    let twice_any = received.iter().any(|r| {
        let r = r.lock().unwrap();
        r.iter().any(|(p, n)| *n > 1 && qos2.contains(p))
    });
    if twice_any || received.iter().any(|r| !missing(r).is_empty()) {
        // What the nodes said, for whoever reads the failure.
        for (i, node) in nodes.iter().enumerate() {
            for line in node.log.lock().unwrap().iter() {
                eprintln!("h{i}: {line}");
            }
        }
    }
    for (i, r) in received.iter().enumerate() {
        let lost = missing(r);
        let at = &sent.lock().unwrap().acked_at;
        for p in &lost {
            eprintln!("s{i} missing {p}, acknowledged at {:.3}", at[p]);
        }
        assert!(
            lost.is_empty(),
            "seed {seed} (replicated: {replicated}), kills {kills:?}: s{i} never got {} acknowledged messages: {:?}",
            lost.len(),
            &lost[..lost.len().min(20)]
        );
        let twice: Vec<(String, u32)> = r
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, n)| **n > 1 && qos2.contains(*p))
            .map(|(p, n)| (p.clone(), *n))
            .collect();
        assert!(
            twice.is_empty(),
            "seed {seed} (replicated: {replicated}), kills {kills:?}: s{i} got QoS 2 messages more than once: {twice:?}"
        );
    }
    eprintln!(
        "chaos: seed {seed}, {} acknowledged, kills {kills:?}",
        acked.len()
    );
}
