//! Tenants kept apart, as a property: two tenants whose clients use the same client ids and
//! the same topics connect, take over each other's connections, subscribe (shared
//! subscriptions too), publish and keep retained messages in a random order; nothing a
//! client of one tenant publishes ever reaches a client of the other, in memory and after a
//! restart on the store, and each tenant's retained messages are exactly its own.
//!
//! The tenant comes from the username (`auth.tenant_from = "username_prefix"`:
//! `acme/alice` is tenant `acme`). The seed is printed; `TENANT_SEED=n` replays a run.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use common::Raw;
use herald::config::{Config, TenantRule};
use mqtt_codec::ProtocolVersion::V5;
use mqtt_codec::{Ack, Connect, Packet, Publish, QoS, ReasonCode, Subscribe};

const TENANTS: [&str; 2] = ["acme", "globex"];
const IDS: [&str; 3] = ["c0", "c1", "c2"];
const TOPICS: [&str; 3] = ["room/a", "room/b", "room/a/x"];
const FILTERS: [&str; 5] = ["room/+", "room/#", "$share/g/room/a", "room/a", "#"];

/// xorshift64*: a seeded, reproducible sequence.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) as usize % n
    }
}

/// A client that keeps every PUBLISH it receives (acknowledging QoS 1) while it waits for
/// the answer it expects.
struct Client {
    raw: Raw,
    tenant: &'static str,
    received: Vec<Publish>,
    /// Set once the server closed the connection or sent DISCONNECT (with its code).
    ended: Option<ReasonCode>,
}

impl Client {
    /// Connects as `id` in `tenant`, resuming its stored session (`persistent`) or with a
    /// clean start and no session kept; says whether a session was resumed.
    async fn connect(
        addr: std::net::SocketAddr,
        tenant: &'static str,
        id: &str,
        persistent: bool,
    ) -> (Client, bool) {
        let mut connect = Connect::new(V5, id, 60);
        connect.clean_start = !persistent;
        connect.properties.session_expiry_interval = Some(if persistent { 600 } else { 0 });
        connect.username = Some(format!("{tenant}/user-{id}").into());
        let (raw, ack) = Raw::connect_with(addr, connect).await;
        assert_eq!(ack.reason_code, ReasonCode::Success, "{ack:?}");
        let client = Client {
            raw,
            tenant,
            received: Vec::new(),
            ended: None,
        };
        (client, ack.session_present)
    }

    /// Reads packets until `want` accepts one (returned), keeping publications.
    async fn until(&mut self, mut want: impl FnMut(&Packet) -> bool) -> Option<Packet> {
        loop {
            let packet = self.raw.try_recv(common::WAIT).await?;
            match packet {
                Packet::Publish(p) => {
                    if p.qos == QoS::AtLeastOnce {
                        self.raw.send(Packet::PubAck(Ack::new(p.packet_id))).await;
                    }
                    self.received.push(p);
                }
                Packet::Disconnect(d) => {
                    self.ended = Some(d.reason_code);
                    return None;
                }
                other if want(&other) => return Some(other),
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    /// Reads whatever arrives until nothing comes for a moment.
    async fn settle(&mut self) {
        while self.ended.is_none() {
            let read = tokio::time::timeout(Duration::from_millis(150), self.until(|_| false));
            if read.await.is_err() {
                return;
            }
        }
    }

    async fn subscribe(&mut self, filter: &str) -> Vec<ReasonCode> {
        let id = self.raw.next_id();
        let sub = Subscribe::new(id, filter, QoS::AtLeastOnce);
        self.raw.send(Packet::Subscribe(sub)).await;
        match self
            .until(|p| matches!(p, Packet::SubAck(a) if a.packet_id == id))
            .await
        {
            Some(Packet::SubAck(a)) => a.reason_codes,
            other => panic!("no SUBACK: {other:?}"),
        }
    }

    async fn publish(&mut self, topic: &str, payload: String, retain: bool) {
        let mut p = Publish::new(topic, payload.into_bytes());
        p.qos = QoS::AtLeastOnce;
        p.retain = retain;
        p.packet_id = self.raw.next_id();
        let id = p.packet_id;
        self.raw.send(Packet::Publish(p)).await;
        let acked = self.until(|p| matches!(p, Packet::PubAck(a) if a.packet_id == id));
        assert!(acked.await.is_some(), "PUBACK for {id}");
    }

    /// Asserts that every message this client received came from its own tenant.
    fn check(&self, seed: u64, id: &str) -> usize {
        for p in &self.received {
            let text = std::str::from_utf8(&p.payload).unwrap();
            assert!(
                text.starts_with(&format!("{}|", self.tenant)),
                "seed {seed}: {}/{id} received {text:?} on {}",
                self.tenant,
                p.topic
            );
        }
        self.received.len()
    }
}

fn config(dir: &std::path::Path) -> Config {
    let mut c = common::config();
    c.store.in_memory = false;
    c.store.data_dir = dir.to_path_buf();
    c.store.min_free_disk_bytes = 0;
    c.auth.tenant_from = TenantRule::UsernamePrefix;
    c
}

/// Random steps; returns the retained messages each tenant should hold, by topic.
async fn run(
    addr: std::net::SocketAddr,
    rng: &mut Rng,
    seed: u64,
    steps: usize,
    clients: &mut HashMap<(usize, usize), Client>,
    retained: &mut BTreeMap<(usize, &'static str), String>,
    delivered: &mut [usize; 2],
) {
    for step in 0..steps {
        let (t, i) = (rng.below(2), rng.below(IDS.len()));
        let tenant = TENANTS[t];
        match rng.below(10) {
            0 | 1 => {
                let (fresh, _) = Client::connect(addr, tenant, IDS[i], true).await;
                if let Some(mut old) = clients.insert((t, i), fresh) {
                    // Takeover within the tenant: the old connection is told 0x8E.
                    old.until(|_| false).await;
                    assert_eq!(
                        old.ended,
                        Some(ReasonCode::SessionTakenOver),
                        "seed {seed} step {step}"
                    );
                    delivered[t] += old.check(seed, IDS[i]);
                }
            }
            2 | 3 => {
                if let Some(c) = clients.get_mut(&(t, i)) {
                    let filter = FILTERS[rng.below(FILTERS.len())];
                    let codes = c.subscribe(filter).await;
                    assert_eq!(codes, [ReasonCode::GrantedQoS1], "seed {seed}");
                }
            }
            4..=8 => {
                if let Some(c) = clients.get_mut(&(t, i)) {
                    let topic = TOPICS[rng.below(TOPICS.len())];
                    let retain = rng.below(4) == 0;
                    let payload = format!("{tenant}|{step}|{topic}");
                    if retain {
                        retained.insert((t, topic), payload.clone());
                    }
                    c.publish(topic, payload, retain).await;
                }
            }
            _ => {
                if let Some(mut c) = clients.remove(&(t, i)) {
                    c.settle().await;
                    delivered[t] += c.check(seed, IDS[i]);
                    c.raw.disconnect().await;
                }
            }
        }
    }
    for ((t, i), c) in clients.iter_mut() {
        c.settle().await;
        assert_eq!(
            c.ended, None,
            "seed {seed}: {}/{} was let go",
            TENANTS[*t], IDS[*i]
        );
        delivered[*t] += c.check(seed, IDS[*i]);
        c.received.clear();
    }
}

/// What a new subscriber to `#` in each tenant gets as retained messages.
async fn retained_seen(
    addr: std::net::SocketAddr,
    seed: u64,
) -> BTreeMap<(usize, &'static str), String> {
    let mut seen = BTreeMap::new();
    for (t, tenant) in TENANTS.iter().enumerate() {
        let (mut c, _) = Client::connect(addr, tenant, "retained-reader", false).await;
        c.subscribe("#").await;
        c.settle().await;
        c.check(seed, "retained-reader");
        for p in &c.received {
            assert!(p.retain, "seed {seed}: a live message reached the reader");
            let topic = TOPICS.iter().find(|t| **t == &*p.topic).unwrap();
            seen.insert((t, *topic), String::from_utf8(p.payload.to_vec()).unwrap());
        }
        c.raw.disconnect().await;
    }
    seen
}

#[tokio::test]
async fn tenants_never_meet() {
    let seed = std::env::var("TENANT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    println!("TENANT_SEED={seed}");
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().unwrap();
    let s = common::start_with(config(dir.path())).await;
    let mut clients = HashMap::new();
    let mut retained = BTreeMap::new();
    let mut delivered = [0usize; 2];
    // Every client subscribed to everything first, so that the random steps always have
    // somewhere to deliver: a tenant whose messages went nowhere would prove nothing.
    for (t, tenant) in TENANTS.iter().enumerate() {
        for (i, id) in IDS.iter().enumerate() {
            let (mut c, _) = Client::connect(s.addr, tenant, id, true).await;
            c.subscribe("room/#").await;
            clients.insert((t, i), c);
        }
    }
    run(
        s.addr,
        &mut rng,
        seed,
        300,
        &mut clients,
        &mut retained,
        &mut delivered,
    )
    .await;
    assert!(
        delivered.iter().all(|n| *n > 0),
        "seed {seed}: each tenant delivered something ({delivered:?})"
    );
    assert_eq!(retained_seen(s.addr, seed).await, retained, "seed {seed}");
    let broker = s.server.broker();
    for tenant in TENANTS {
        let t = broker.find_tenant(tenant).expect("tenant exists");
        assert!(t.sessions.get("c0").is_some(), "{tenant} has its own c0");
    }
    assert!(broker.default_tenant.sessions.get("c0").is_none());

    // Messages published while the other tenant's same-named clients are offline, then a
    // restart: the stored sessions, their queues and the retained messages come back into
    // their own tenants.
    for (_, mut c) in clients.drain() {
        c.settle().await;
        c.check(seed, "before restart");
        c.raw.disconnect().await;
    }
    for tenant in TENANTS {
        let (mut p, _) = Client::connect(s.addr, tenant, "publisher", false).await;
        for n in 0..5 {
            p.publish("room/a", format!("{tenant}|offline|{n}"), false)
                .await;
        }
        p.raw.disconnect().await;
    }
    usage_in_step(&s, seed, "before restart").await;
    s.server.shutdown(Duration::from_secs(5)).await;
    let s = common::start_with(config(dir.path())).await;
    usage_in_step(&s, seed, "after restart").await;
    for (t, tenant) in TENANTS.iter().enumerate() {
        for id in IDS {
            let (mut c, present) = Client::connect(s.addr, tenant, id, true).await;
            assert!(present, "seed {seed}: {tenant}/{id} resumed");
            c.settle().await;
            let n = c.check(seed, id);
            assert!(
                n >= 5,
                "seed {seed}: {tenant}/{id} got its queued messages ({n})"
            );
            delivered[t] += n;
            c.raw.disconnect().await;
        }
    }
    assert_eq!(
        retained_seen(s.addr, seed).await,
        retained,
        "seed {seed} after restart"
    );
    let mut clients = HashMap::new();
    run(
        s.addr,
        &mut rng,
        seed,
        150,
        &mut clients,
        &mut retained,
        &mut delivered,
    )
    .await;
    assert_eq!(retained_seen(s.addr, seed).await, retained, "seed {seed}");
}

/// Each tenant's counts of persistent sessions and of what its offline sessions are owed
/// (kept as sessions come and go, and quotas are checked against them) agree with its
/// sessions, once every client is offline: nothing crossed, nothing leaked.
async fn usage_in_step(s: &common::TestServer, seed: u64, when: &str) {
    use std::sync::atomic::Ordering::Relaxed;
    let broker = s.server.broker();
    for tenant in TENANTS {
        let t = broker.find_tenant(tenant).expect("tenant exists");
        let counted = || {
            (
                t.usage.persistent.load(Relaxed),
                t.usage.offline_messages.load(Relaxed),
                t.usage.offline_bytes.load(Relaxed),
            )
        };
        let actual = || {
            let (mut persistent, mut messages, mut bytes) = (0u64, 0u64, 0u64);
            t.sessions.for_each(|session| {
                let st = session.lock();
                persistent += u64::from(st.persistent());
                if st.offline() {
                    let (n, b) = st.owed();
                    messages += n as u64;
                    bytes += b as u64;
                }
            });
            (persistent, messages, bytes)
        };
        common::eventually("every session offline", || {
            let mut connected = false;
            t.sessions
                .for_each(|session| connected |= session.lock().connected());
            !connected
        })
        .await;
        let (c, a) = (counted(), actual());
        assert_eq!(
            c, a,
            "seed {seed} {when}: {tenant}'s usage (persistent, owed)"
        );
        assert!(a.0 > 0 && a.1 > 0, "seed {seed} {when}: {tenant} {a:?}");
    }
}
