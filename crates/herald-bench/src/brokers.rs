//! Starting and stopping the brokers `compare` measures, each on a free loopback port with
//! equivalent settings: anonymous clients, no persistence where the broker allows it,
//! generous limits.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Serialize;
use tokio::process::{Child, Command};

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
    /// Its process id.
    pub pid: u32,
    /// The configuration it was started with (file contents or command line).
    pub config: String,
    child: Child,
}

/// A free TCP port on 127.0.0.1 (bound, read, released).
pub fn free_port() -> anyhow::Result<u16> {
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

/// Starts `kind` from `bin` with its files in `dir`, and waits until it accepts connections.
pub async fn start(kind: Kind, bin: &Path, dir: &Path) -> anyhow::Result<Running> {
    std::fs::create_dir_all(dir)?;
    let port = free_port()?;
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let (args, config) = match kind {
        Kind::Mosquitto => {
            let conf = format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n\
                 max_connections -1\nmax_queued_messages 100000\nmax_inflight_messages 0\n\
                 set_tcp_nodelay true\nlog_dest stderr\nlog_type error\nlog_type warning\n"
            );
            let path = dir.join("mosquitto.conf");
            std::fs::write(&path, &conf)?;
            (vec!["-c".to_string(), path.display().to_string()], conf)
        }
        Kind::Nats => {
            let client_port = free_port()?;
            let store = dir.join("jetstream");
            let conf = format!(
                "server_name: \"herald-bench\"\nlisten: \"127.0.0.1:{client_port}\"\n\
                 jetstream {{ store_dir: \"{}\" }}\n\
                 mqtt {{ listen: \"127.0.0.1:{port}\", consumer_memory_storage: true }}\n",
                store.display()
            );
            let path = dir.join("nats.conf");
            std::fs::write(&path, &conf)?;
            (vec!["-c".to_string(), path.display().to_string()], conf)
        }
        Kind::Rumqttd => {
            let conf = format!(
                "id = 0\n\n[router]\nid = 0\nmax_connections = 100010\n\
                 max_outgoing_packet_count = 200\nmax_segment_size = 104857600\n\
                 max_segment_count = 10\n\n[v4.1]\nname = \"v4-1\"\n\
                 listen = \"127.0.0.1:{port}\"\nnext_connection_delay_ms = 0\n\
                 [v4.1.connections]\nconnection_timeout_ms = 60000\nmax_payload_size = 1048576\n\
                 max_inflight_count = 100\ndynamic_filters = true\n"
            );
            let path = dir.join("rumqttd.toml");
            std::fs::write(&path, &conf)?;
            (vec!["-c".to_string(), path.display().to_string()], conf)
        }
        Kind::Herald => {
            // Sessions are in memory: Herald has no persistence yet.
            let args = vec![
                "serve".to_string(),
                "--mqtt-listen".into(),
                addr.to_string(),
                "--log-level".into(),
                "warn".into(),
            ];
            let config = format!("herald {}", args.join(" "));
            (args, config)
        }
    };
    let log = std::fs::File::create(dir.join("broker.log"))?;
    let child = Command::new(bin)
        .args(&args)
        .current_dir(dir)
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
        pid,
        config,
        child,
    };
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(running);
        }
        if let Ok(Some(status)) = running.child.try_wait() {
            bail!(
                "{} exited with {status}; see {}",
                kind.name(),
                dir.join("broker.log").display()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    running.stop().await;
    bail!(
        "{} did not accept connections on {addr} within 10 s",
        kind.name()
    )
}

impl Running {
    /// Stops the broker by its PID: SIGTERM, then SIGKILL after 5 s.
    pub async fn stop(mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid.to_string())
            .status()
            .await;
        if tokio::time::timeout(Duration::from_secs(5), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}
