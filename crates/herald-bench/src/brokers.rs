//! Starting and stopping the brokers `compare`, `restart` and `crash` measure, each on a
//! loopback port with equivalent settings: anonymous clients, the same queue bound, and
//! either no persistence or the broker's own store in the run directory ([`Setup`]); and for
//! `compare --set transports`, TLS, WebSocket and WebSocket-over-TLS listeners next to the
//! MQTT one ([`ExtraListeners`]).

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Serialize;
use tokio::process::{Child, Command};
use tokio::time::Instant;

use crate::transport::TransportKind;
use crate::transport::tls::CertFiles;

/// A broker `compare` knows how to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// This project's broker.
    Herald,
    /// Eclipse Mosquitto.
    Mosquitto,
    /// nats-server in MQTT mode (JetStream on).
    Nats,
    /// rumqttd from the rumqtt project.
    Rumqttd,
}

impl Kind {
    /// Every kind, in table order.
    pub const ALL: [Kind; 4] = [Kind::Herald, Kind::Mosquitto, Kind::Nats, Kind::Rumqttd];

    /// The name used on the command line and in tables.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Herald => "herald",
            Kind::Mosquitto => "mosquitto",
            Kind::Nats => "nats",
            Kind::Rumqttd => "rumqttd",
        }
    }

    /// The kind named `name`.
    pub fn parse(name: &str) -> anyhow::Result<Kind> {
        Kind::ALL
            .into_iter()
            .find(|k| k.name() == name)
            .with_context(|| format!("unknown broker {name:?}: herald, mosquitto, nats, rumqttd"))
    }

    fn binary_name(self) -> &'static str {
        match self {
            Kind::Herald => "herald",
            Kind::Mosquitto => "mosquitto",
            Kind::Nats => "nats-server",
            Kind::Rumqttd => "rumqttd",
        }
    }

    /// Where this broker's executable is: `explicit`, else on PATH (and for herald, this
    /// workspace's target directory).
    pub fn locate(self, explicit: Option<&Path>) -> Option<PathBuf> {
        if let Some(p) = explicit {
            return p.is_file().then(|| p.to_path_buf());
        }
        let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).collect())
            .unwrap_or_default();
        dirs.push("/usr/sbin".into());
        if self == Kind::Herald
            && let Ok(exe) = std::env::current_exe()
            && let Some(dir) = exe.parent()
        {
            dirs.insert(0, dir.to_path_buf());
        }
        dirs.into_iter()
            .map(|d| d.join(self.binary_name()))
            .find(|p| p.is_file())
    }
}

/// A running broker.
pub struct Running {
    /// Which broker.
    pub kind: Kind,
    /// Its MQTT listener.
    pub addr: SocketAddr,
    /// Every listener, by transport (tcp is `addr`).
    pub listeners: Vec<(TransportKind, SocketAddr)>,
    /// Its process id.
    pub pid: u32,
    /// The configuration it was started with (file contents or command line).
    pub config: String,
    /// From spawning the process to its listener accepting a connection.
    pub started_in: Duration,
    child: Child,
}

/// A free TCP port on 127.0.0.1 for a broker started next (bound, read, released), below
/// Linux's ephemeral range (32768 up): a port the kernel hands out for port 0 is also what
/// it gives the next outgoing connection as its source port, so with thousands of clients
/// connecting, one could take it before the broker binds it (or after a crash test killed
/// the broker and starts it again on the same port). Random, so that runs at once rarely
/// pick the same one; the kernel's own pick if none of 64 tries is free.
pub fn free_port() -> anyhow::Result<u16> {
    use std::hash::{BuildHasher, Hasher};
    let mut seed = std::collections::hash_map::RandomState::new().build_hasher();
    seed.write_u32(std::process::id());
    let mut x = seed.finish() | 1;
    // A port is handed out once per process: two brokers started at once (tests run side
    // by side) never get the same one between its check here and their bind.
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|p| p.into_inner());
    for _ in 0..64 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let port = 20_000 + (x % 12_000) as u16;
        if given.contains(&port) {
            continue;
        }
        if let Ok(listener) = TcpListener::bind(("127.0.0.1", port)) {
            given.push(port);
            return Ok(listener.local_addr()?.port());
        }
    }
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The version the broker reports about itself.
pub async fn version(kind: Kind, bin: &Path) -> String {
    let flag = match kind {
        Kind::Mosquitto => "-h",
        _ => "--version",
    };
    let out = Command::new(bin)
        .arg(flag)
        .stdin(Stdio::null())
        .output()
        .await;
    let Ok(out) = out else {
        return "unknown".into();
    };
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    text.lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("unknown")
        .trim()
        .to_string()
}

/// How a broker keeps its state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    /// Everything in memory: herald `--in-memory`, mosquitto `persistence false`.
    #[default]
    InMemory,
    /// On disk under the run directory: herald's store with this fsync policy; mosquitto
    /// `persistence true`, which writes only at autosave intervals and on a clean shutdown
    /// (the fsync policy does not apply to it).
    Store(Fsync),
}

/// When herald's store calls fsync (`HERALD_STORE_FSYNC`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Fsync {
    /// Group commit: one fsync per batch of changes.
    Batch,
    /// One fsync per change.
    Always,
    /// Never: the operating system writes when it likes.
    Never,
}

impl Fsync {
    /// The value of `HERALD_STORE_FSYNC`.
    pub fn name(self) -> &'static str {
        match self {
            Fsync::Batch => "batch",
            Fsync::Always => "always",
            Fsync::Never => "never",
        }
    }
}

/// Listeners beyond MQTT over TCP, all serving one certificate.
#[derive(Debug, Clone, Serialize)]
pub struct ExtraListeners {
    /// The certificate and key of the TLS and WSS listeners.
    pub cert: CertFiles,
    /// Whether to open the WebSocket listeners (ws, wss) too: a mosquitto built without
    /// WebSocket support does not start with one.
    pub websockets: bool,
}

impl ExtraListeners {
    /// The transports these listeners add to TCP.
    pub fn kinds(&self) -> Vec<TransportKind> {
        TransportKind::ALL
            .into_iter()
            .filter(|k| *k != TransportKind::Tcp && (self.websockets || !k.is_ws()))
            .collect()
    }
}

/// Settings a broker is started with beyond its kind.
#[derive(Debug, Clone, Serialize)]
pub struct Setup {
    /// In memory or on disk.
    pub durability: Durability,
    /// Messages queued per offline or slow session before the broker drops or refuses.
    pub max_queued: u64,
    /// The MQTT port; `None` picks a free one. A restart passes the old port.
    pub port: Option<u16>,
    /// mosquitto's `autosave_interval` in seconds when persistent (its default is 1800).
    pub mosquitto_autosave_s: u32,
    /// TLS and WebSocket listeners, when wanted.
    pub extra: Option<ExtraListeners>,
    /// herald only: its HTTP API (`--http-listen`); `None` runs it without one.
    pub http: Option<SocketAddr>,
    /// herald only: more `HERALD_` variables, after (and so over) the ones set here.
    pub env: Vec<(String, String)>,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            durability: Durability::InMemory,
            max_queued: 100_000,
            port: None,
            mosquitto_autosave_s: 1800,
            extra: None,
            http: None,
            env: Vec::new(),
        }
    }
}

/// Removes the stores a durable broker keeps in `dir`, so that the next start is empty.
pub fn wipe_data(dir: &Path) -> anyhow::Result<()> {
    for sub in ["herald-data", "mosquitto-data"] {
        let path = dir.join(sub);
        if path.exists() {
            std::fs::remove_dir_all(&path)
                .with_context(|| format!("removing {}", path.display()))?;
        }
    }
    Ok(())
}

/// How long a start may take before it counts as failed: a store with a million queued
/// messages takes a while to load.
const START_LIMIT: Duration = Duration::from_secs(180);

/// Starts `kind` from `bin` with its files in `dir`, and waits until it accepts connections.
pub async fn start(kind: Kind, bin: &Path, dir: &Path, setup: &Setup) -> anyhow::Result<Running> {
    std::fs::create_dir_all(dir)?;
    let dir = std::path::absolute(dir)?;
    // The broker runs in `dir`: a relative path to its binary would point elsewhere.
    let bin = if bin.components().count() > 1 {
        std::path::absolute(bin)?
    } else {
        bin.to_path_buf()
    };
    let bin = bin.as_path();
    let port = match setup.port {
        Some(p) => p,
        None => free_port()?,
    };
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut listeners = vec![(TransportKind::Tcp, addr)];
    for kind in setup.extra.iter().flat_map(ExtraListeners::kinds) {
        listeners.push((kind, ([127, 0, 0, 1], free_port()?).into()));
    }
    let (args, env, config) = launch_config(kind, &dir, &listeners, setup)?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("broker.log"))?;
    let spawned = Instant::now();
    let child = Command::new(bin)
        .args(&args)
        .envs(env)
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let pid = child.id().context("broker exited at once")?;
    let mut running = Running {
        kind,
        addr,
        listeners,
        pid,
        config,
        started_in: Duration::ZERO,
        child,
    };
    // Started when every listener accepts; `waiting` is the first that does not yet.
    let mut waiting = 0;
    while spawned.elapsed() < START_LIMIT {
        while let Some((_, at)) = running.listeners.get(waiting)
            && tokio::net::TcpStream::connect(at).await.is_ok()
        {
            waiting += 1;
        }
        if waiting == running.listeners.len() {
            running.started_in = spawned.elapsed();
            return Ok(running);
        }
        if let Ok(Some(status)) = running.child.try_wait() {
            bail!(
                "{} exited with {status}; see {}",
                kind.name(),
                dir.join("broker.log").display()
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    running.stop().await;
    bail!(
        "{} did not accept connections on {addr} within {START_LIMIT:?}",
        kind.name()
    )
}

/// Whether this process runs as root (user id 0), from `/proc/self/status`.
fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().next())
            == Some("0")
    })
}

/// Arguments, environment, and a readable description of the configuration.
type Launch = (Vec<String>, Vec<(String, String)>, String);

/// Arguments, environment and a readable description of the configuration. `listeners`
/// starts with MQTT over TCP.
fn launch_config(
    kind: Kind,
    dir: &Path,
    listeners: &[(TransportKind, SocketAddr)],
    setup: &Setup,
) -> anyhow::Result<Launch> {
    let port = listeners[0].1.port();
    if setup.extra.is_some() && !matches!(kind, Kind::Herald | Kind::Mosquitto) {
        bail!(
            "{} is not run with TLS or WebSocket listeners here",
            kind.name()
        );
    }
    let store = matches!(setup.durability, Durability::Store(_));
    if store && !matches!(kind, Kind::Herald | Kind::Mosquitto) {
        bail!("{} is only run in memory here", kind.name());
    }
    match kind {
        Kind::Mosquitto => mosquitto_launch(dir, listeners, setup),
        Kind::Nats => nats_launch(dir, port),
        Kind::Rumqttd => rumqttd_launch(dir, port),
        Kind::Herald => Ok(herald_launch(dir, listeners, setup)),
    }
}

/// Writes `conf` to the file `name` in `dir`, for a broker started with `-c` and that file.
fn conf_file(dir: &Path, name: &str, conf: String) -> anyhow::Result<Launch> {
    let path = dir.join(name);
    std::fs::write(&path, &conf)?;
    Ok((
        vec!["-c".to_string(), path.display().to_string()],
        Vec::new(),
        conf,
    ))
}

/// mosquitto's configuration file: anonymous clients, no connection limit, the queue bound,
/// and its own store in `dir` when the setup wants one.
fn mosquitto_launch(
    dir: &Path,
    listeners: &[(TransportKind, SocketAddr)],
    setup: &Setup,
) -> anyhow::Result<Launch> {
    let port = listeners[0].1.port();
    let store = matches!(setup.durability, Durability::Store(_));
    let persistence = if store {
        let data = dir.join("mosquitto-data");
        std::fs::create_dir_all(&data)?;
        format!(
            "persistence true\npersistence_location {}/\nautosave_interval {}\n",
            data.display(),
            setup.mosquitto_autosave_s
        )
    } else {
        "persistence false\n".to_string()
    };
    // Started as root, mosquitto switches to the user `mosquitto`, which cannot
    // write a directory root made, nor read a key in one: staying root keeps its
    // store writable and its key readable.
    let user = if running_as_root() && (store || setup.extra.is_some()) {
        "user root\n"
    } else {
        ""
    };
    let extra = mosquitto_listeners(listeners, setup.extra.as_ref());
    conf_file(
        dir,
        "mosquitto.conf",
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\n{persistence}\
             {user}max_connections -1\nmax_queued_messages {}\nmax_inflight_messages 0\n\
             set_tcp_nodelay true\nlog_dest stderr\nlog_type error\nlog_type warning\n\
             {extra}",
            setup.max_queued
        ),
    )
}

/// nats-server's configuration file: MQTT on `port`, JetStream's store in `dir`, consumers
/// in memory.
fn nats_launch(dir: &Path, port: u16) -> anyhow::Result<Launch> {
    let client_port = free_port()?;
    let store = dir.join("jetstream");
    conf_file(
        dir,
        "nats.conf",
        format!(
            "server_name: \"herald-bench\"\nlisten: \"127.0.0.1:{client_port}\"\n\
             jetstream {{ store_dir: \"{}\" }}\n\
             mqtt {{ listen: \"127.0.0.1:{port}\", consumer_memory_storage: true }}\n",
            store.display()
        ),
    )
}

/// rumqttd's configuration file: one MQTT 3.1.1 listener on `port` with room for 100,000
/// connections.
fn rumqttd_launch(dir: &Path, port: u16) -> anyhow::Result<Launch> {
    conf_file(
        dir,
        "rumqttd.toml",
        format!(
            "id = 0\n\n[router]\nid = 0\nmax_connections = 100010\n\
             max_outgoing_packet_count = 200\nmax_segment_size = 104857600\n\
             max_segment_count = 10\n\n[v4.1]\nname = \"v4-1\"\n\
             listen = \"127.0.0.1:{port}\"\nnext_connection_delay_ms = 0\n\
             [v4.1.connections]\nconnection_timeout_ms = 60000\nmax_payload_size = 1048576\n\
             max_inflight_count = 100\ndynamic_filters = true\n"
        ),
    )
}

/// herald's command line and `HERALD_` variables: its listeners, the queue bound, TLS, the
/// HTTP API when wanted, and in memory or its store in `dir`.
fn herald_launch(dir: &Path, listeners: &[(TransportKind, SocketAddr)], setup: &Setup) -> Launch {
    let port = listeners[0].1.port();
    let mut args = vec![
        "serve".to_string(),
        "--mqtt-listen".into(),
        format!("127.0.0.1:{port}"),
        "--log-level".into(),
        "warn".into(),
    ];
    let mut env = vec![
        (
            "HERALD_LIMITS_MAX_QUEUED_MESSAGES".to_string(),
            setup.max_queued.to_string(),
        ),
        // No WebSocket listener on herald's default port unless one is asked for
        // (--ws-listen below wins over the variable).
        ("HERALD_LISTENERS_WS".to_string(), String::new()),
        ("HERALD_HTTP_LISTEN".to_string(), String::new()),
    ];
    for (transport, at) in &listeners[1..] {
        args.push(format!("--{}-listen", transport.name()));
        args.push(at.to_string());
    }
    if let Some(http) = setup.http {
        args.push("--http-listen".into());
        args.push(http.to_string());
    }
    env.extend(setup.env.iter().cloned());
    if let Some(extra) = &setup.extra {
        args.push("--tls-cert".into());
        args.push(extra.cert.cert.display().to_string());
        args.push("--tls-key".into());
        args.push(extra.cert.key.display().to_string());
    }
    match setup.durability {
        Durability::InMemory => args.push("--in-memory".into()),
        Durability::Store(fsync) => {
            args.push("--data-dir".into());
            args.push(dir.join("herald-data").display().to_string());
            env.push(("HERALD_STORE_FSYNC".into(), fsync.name().into()));
        }
    }
    let vars: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let config = format!("{} herald {}", vars.join(" "), args.join(" "));
    (args, env, config)
}

/// mosquitto's listener blocks for the transports after the first (TCP) one.
fn mosquitto_listeners(
    listeners: &[(TransportKind, SocketAddr)],
    extra: Option<&ExtraListeners>,
) -> String {
    let Some(extra) = extra else {
        return String::new();
    };
    let mut conf = String::new();
    for (transport, at) in &listeners[1..] {
        conf.push_str(&format!("listener {} {}\n", at.port(), at.ip()));
        if transport.is_ws() {
            conf.push_str("protocol websockets\n");
        }
        if transport.is_tls() {
            conf.push_str(&format!(
                "certfile {}\nkeyfile {}\n",
                extra.cert.cert.display(),
                extra.cert.key.display()
            ));
        }
    }
    conf
}

impl Running {
    /// The address of the listener for `transport`, if the broker has one.
    pub fn addr_of(&self, transport: TransportKind) -> Option<SocketAddr> {
        self.listeners
            .iter()
            .find(|(k, _)| *k == transport)
            .map(|(_, a)| *a)
    }

    /// Stops the broker by its PID: SIGTERM, then SIGKILL after 5 s.
    pub async fn stop(self) {
        self.stop_within(Duration::from_secs(5)).await;
    }

    /// Stops the broker by its PID: SIGTERM, then SIGKILL after `grace`. Returns how long
    /// it took to exit, and whether it exited by itself (a clean shutdown) within `grace`.
    pub async fn stop_within(mut self, grace: Duration) -> (Duration, bool) {
        let asked = Instant::now();
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid.to_string())
            .status()
            .await;
        let clean = tokio::time::timeout(grace, self.child.wait()).await.is_ok();
        if !clean {
            let _ = self.child.kill().await;
        }
        (asked.elapsed(), clean)
    }

    /// Sends the broker a signal by name (`INT`, `TERM`, ...), without waiting.
    pub async fn signal(&self, name: &str) -> anyhow::Result<()> {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid.to_string())
            .status()
            .await?;
        if !status.success() {
            bail!("kill -{name} {} failed: {status}", self.pid);
        }
        Ok(())
    }

    /// Waits up to `limit` for the broker to exit by itself and returns its exit code
    /// (`None`: killed by a signal); after `limit`, kills it and returns an error.
    pub async fn wait_exit(mut self, limit: Duration) -> anyhow::Result<Option<i32>> {
        match tokio::time::timeout(limit, self.child.wait()).await {
            Ok(status) => Ok(status?.code()),
            Err(_) => {
                let _ = self.child.kill().await;
                bail!("{} did not exit within {limit:?}", self.kind.name())
            }
        }
    }

    /// Kills the broker with SIGKILL (no chance to save anything) and waits for it to die.
    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
    }
}
