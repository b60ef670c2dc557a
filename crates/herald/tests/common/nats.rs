//! Real nats-server processes for the cluster tests: one server, or a cluster of three,
//! with JetStream, each on a loopback port of its own and a store directory that outlives
//! a restart; and Herald nodes as processes of their own (the binary), to be SIGKILLed and
//! started again on their store. The tests fail (they do not skip) when nats-server is not
//! installed.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The nats-server binary (Debian package nats-server; scripts/test installs it).
fn binary() -> &'static str {
    [
        "nats-server",
        "/usr/sbin/nats-server",
        "/usr/bin/nats-server",
    ]
    .into_iter()
    .find(|b| {
        Command::new(b)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok()
    })
    .expect("nats-server runs (Debian package nats-server; scripts/test installs it)")
}

/// A free loopback port (bound, then let go).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One nats-server with JetStream, killed when dropped; restartable on its port and store.
pub struct Nats {
    child: Option<Child>,
    /// `nats://127.0.0.1:<port>`.
    pub url: String,
    port: u16,
    /// Its cluster: name, route port, the other servers' route URLs.
    cluster: Option<(String, u16, Vec<String>)>,
    store: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.kill();
    }
}

impl Nats {
    /// A server on its own.
    pub fn start() -> Nats {
        Nats::spawn(None)
    }

    fn spawn(cluster: Option<(String, u16, Vec<String>)>) -> Nats {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut nats = Nats {
            child: None,
            url: format!("nats://127.0.0.1:{port}"),
            port,
            cluster,
            store: dir.path().join("js"),
            _dir: dir,
        };
        nats.run(true);
        nats
    }

    /// Starts the process; with `wait`, until it listens for clients.
    fn run(&mut self, wait: bool) {
        let mut command = Command::new(binary());
        command
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(&self.store);
        if let Some((name, route_port, routes)) = &self.cluster {
            command
                .args(["--name", &format!("n{route_port}"), "--cluster_name", name])
                .args(["--cluster", &format!("nats://127.0.0.1:{route_port}")])
                .args(["--routes", &routes.join(",")]);
        }
        let mut child = command
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("nats-server starts");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("Listening for client connections on ") {
                    let _ = tx.send(());
                }
            }
        });
        if wait {
            rx.recv_timeout(Duration::from_secs(10))
                .expect("nats-server listens");
        }
        self.child = Some(child);
    }

    /// Kills the process (SIGKILL); its store stays.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and store.
    pub fn restart(&mut self) {
        self.kill();
        self.run(true);
    }
}

/// Three nats-servers in one cluster with JetStream (a stream of 3 replicas survives one
/// of them killed).
pub struct NatsCluster {
    /// The servers.
    pub servers: Vec<Nats>,
}

impl NatsCluster {
    /// Starts three servers routed to each other, and waits until JetStream answers on
    /// each (its meta group has a leader).
    pub fn start() -> NatsCluster {
        let routes: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let urls: Vec<String> = routes
            .iter()
            .map(|p| format!("nats://127.0.0.1:{p}"))
            .collect();
        let name = format!("t{}", routes[0]);
        let servers: Vec<Nats> = routes
            .iter()
            .map(|&route| {
                let others = urls
                    .iter()
                    .filter(|u| !u.ends_with(&format!(":{route}")))
                    .cloned()
                    .collect();
                Nats::spawn(Some((name.clone(), route, others)))
            })
            .collect();
        NatsCluster { servers }
    }

    /// Every server's URL.
    pub fn urls(&self) -> Vec<String> {
        self.servers.iter().map(|s| s.url.clone()).collect()
    }

    /// Waits until JetStream answers through `url` (the cluster elected its meta leader).
    pub async fn ready(&self) {
        for url in self.urls() {
            let client = async_nats::connect(&url).await.expect("NATS answers");
            let js = async_nats::jetstream::new(client);
            let mut ok = false;
            let probe = async_nats::jetstream::stream::Config {
                name: "ready".into(),
                subjects: vec!["ready.probe".into()],
                ..Default::default()
            };
            for _ in 0..200 {
                if js.get_or_create_stream(probe.clone()).await.is_ok() {
                    ok = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            assert!(ok, "JetStream answers through {url}");
        }
    }
}

/// A herald process joined to a cluster, SIGKILLed when dropped; started again on the same
/// store (on a new port) by `restart`.
pub struct Node {
    child: Option<Child>,
    /// Where it listens for MQTT now.
    pub addr: std::net::SocketAddr,
    /// Its log lines so far.
    pub log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    dir: PathBuf,
    nats: String,
    id: String,
    replicas: usize,
    /// More environment variables (settings) it starts with.
    env: Vec<(String, String)>,
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

impl Node {
    /// Starts the binary as node `id` of the cluster on `nats` (comma-separated URLs), its
    /// store in `dir`, the cluster's stream and buckets with `replicas` copies.
    pub fn start(dir: &std::path::Path, nats: &str, id: &str, replicas: usize) -> Node {
        Node::start_with(dir, nats, id, replicas, &[])
    }

    /// As `start`, with more settings as `HERALD_*` environment variables.
    pub fn start_with(
        dir: &std::path::Path,
        nats: &str,
        id: &str,
        replicas: usize,
        env: &[(&str, &str)],
    ) -> Node {
        let mut node = Node {
            child: None,
            addr: "127.0.0.1:0".parse().unwrap(),
            log: Default::default(),
            dir: dir.to_path_buf(),
            nats: nats.to_string(),
            id: id.to_string(),
            replicas,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        node.run();
        node
    }

    fn run(&mut self) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_herald"))
            .args([
                "serve",
                "--log-level",
                &std::env::var("NODE_LOG_LEVEL").unwrap_or_else(|_| "info".into()),
                "--mqtt-listen",
                "127.0.0.1:0",
            ])
            .args(["--cluster", &self.nats, "--node-id", &self.id])
            .arg("--data-dir")
            .arg(&self.dir)
            .env("HERALD_LISTENERS_WS", "")
            .env("HERALD_HTTP_LISTEN", "")
            .env("HERALD_STORE_MIN_FREE_DISK_BYTES", "0")
            .env("HERALD_CLUSTER_REPLICAS", self.replicas.to_string())
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("herald starts");
        let lines = self.log.clone();
        self.addr = super::listen_addr(child.stdout.take().expect("piped"), move |l| {
            lines.lock().unwrap().push(l.to_string())
        });
        self.child = Some(child);
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills it (if running) and starts it again on its store.
    pub fn restart(&mut self) {
        self.kill();
        self.run();
    }
}

/// A TCP link between a node and NATS that the test can cut and mend (a partition between
/// that node and NATS, while the others keep theirs).
pub struct Link {
    addr: std::net::SocketAddr,
    cut: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    _accept: tokio::task::JoinHandle<()>,
}

impl Link {
    /// A link to `target` (`nats://host:port`), open.
    pub async fn to(target: &str) -> Link {
        let target = target.trim_start_matches("nats://").to_string();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cut = Arc::new(AtomicBool::new(false));
        let open = Arc::new(Mutex::new(Vec::new()));
        let (c, o) = (cut.clone(), open.clone());
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if c.load(Ordering::SeqCst) {
                    continue; // dropped: refused while cut
                }
                let target = target.clone();
                o.lock().unwrap().push(tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                }));
            }
        });
        Link {
            addr,
            cut,
            open,
            _accept: accept,
        }
    }

    /// Its `nats://` URL.
    pub fn url(&self) -> String {
        format!("nats://{}", self.addr)
    }

    /// Cuts it: open connections are dropped, new ones refused.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for task in self.open.lock().unwrap().drain(..) {
            task.abort();
        }
    }

    /// Mends it: new connections pass again.
    pub fn mend(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

/// Waits until `node` holds `n` NATS subscriptions (interest reaches NATS asynchronously),
/// then makes sure the NATS server has them (the SUBs have left the node; a round trip).
pub async fn until_subscribed(node: &super::TestServer, n: u64) {
    let cluster = node.server.cluster().expect("clustered");
    let held = || cluster.stats.subscriptions.load(Ordering::Relaxed);
    super::eventually_within(
        &format!("{n} NATS subscriptions"),
        Duration::from_secs(10),
        || held() == n,
    )
    .await;
    assert!(cluster.settle().await, "NATS answers");
}
