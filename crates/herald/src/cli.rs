//! The `herald` command line.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::Overrides;

pub mod client;
pub mod ctl;
pub mod passwd;

/// Herald: a real-time MQTT message gateway.
#[derive(Debug, Parser)]
#[command(name = "herald", version, about)]
pub struct Args {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server.
    Serve(Box<ServeArgs>),
    /// Configuration helpers.
    Config {
        /// What to do with the configuration.
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Add, change or delete a user of a password file (as mosquitto_passwd does, writing
    /// argon2id hashes).
    Passwd(passwd::PasswdArgs),
    /// Operate a running Herald through its HTTP API: status, clients, subscriptions,
    /// retained messages, publish, tenants, drain, reload, log level.
    Ctl(ctl::CtlArgs),
    /// Publish MQTT messages (as mosquitto_pub does), reconnecting by itself.
    Pub(client::PubArgs),
    /// Subscribe and print what arrives (as mosquitto_sub does), reconnecting by itself and
    /// resuming its session.
    Sub(client::SubArgs),
}

/// `herald config ...`
#[derive(Debug, Subcommand)]
pub enum ConfigAction {
    /// Print the default configuration as a commented TOML file.
    Generate,
}

/// `herald serve` flags. Each overrides the config file and the `HERALD_*` variables.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Configuration file (TOML).
    #[arg(long, env = "HERALD_CONFIG")]
    pub config: Option<PathBuf>,
    /// MQTT listen address, repeatable (listeners.mqtt) [env: HERALD_MQTT_LISTEN, comma-separated].
    #[arg(long = "mqtt-listen")]
    pub mqtt_listen: Vec<SocketAddr>,
    /// MQTT-over-WebSocket listen address, repeatable (listeners.ws) [env: HERALD_WS_LISTEN].
    #[arg(long = "ws-listen")]
    pub ws_listen: Vec<SocketAddr>,
    /// MQTT-over-TLS listen address, repeatable (listeners.tls) [env: HERALD_TLS_LISTEN].
    #[arg(long = "tls-listen")]
    pub tls_listen: Vec<SocketAddr>,
    /// MQTT over WebSocket over TLS, repeatable (listeners.wss) [env: HERALD_WSS_LISTEN].
    #[arg(long = "wss-listen")]
    pub wss_listen: Vec<SocketAddr>,
    /// HTTP API, metrics and health address; "" for none (http.listen) [env: HERALD_HTTP_LISTEN].
    #[arg(long = "http-listen")]
    pub http_listen: Option<String>,
    /// PEM certificate chain for TLS and WSS (tls.cert_file) [env: HERALD_TLS_CERT].
    #[arg(long = "tls-cert")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for TLS and WSS (tls.key_file) [env: HERALD_TLS_KEY].
    #[arg(long = "tls-key")]
    pub tls_key: Option<PathBuf>,
    /// Worker threads; 0 sizes them from the CPU quota (runtime.worker_threads)
    /// [env: HERALD_RUNTIME_WORKER_THREADS].
    #[arg(long)]
    pub worker_threads: Option<usize>,
    /// Log filter, e.g. info or herald=debug (log.level) [env: HERALD_LOG_LEVEL].
    #[arg(long)]
    pub log_level: Option<String>,
    /// Log format: text or json (log.format) [env: HERALD_LOG_FORMAT].
    #[arg(long)]
    pub log_format: Option<String>,
    /// Directory of the durable store (store.data_dir, default ./herald-data)
    /// [env: HERALD_STORE_DATA_DIR].
    #[arg(long, conflicts_with = "in_memory")]
    pub data_dir: Option<PathBuf>,
    /// Keep sessions and messages in memory only: nothing survives a restart
    /// (store.in_memory) [env: HERALD_STORE_IN_MEMORY].
    #[arg(long)]
    pub in_memory: bool,
    /// Join a cluster through these NATS servers, comma-separated
    /// (cluster.nats) [env: HERALD_CLUSTER_NATS].
    #[arg(long, value_delimiter = ',')]
    pub cluster: Vec<String>,
    /// This node's name in the cluster (cluster.node_id; default: the host name)
    /// [env: HERALD_CLUSTER_NODE_ID].
    #[arg(long)]
    pub node_id: Option<String>,
}

impl ServeArgs {
    /// The flags as config overrides.
    pub fn overrides(&self) -> Overrides {
        Overrides {
            mqtt_listen: self.mqtt_listen.clone(),
            ws_listen: self.ws_listen.clone(),
            tls_listen: self.tls_listen.clone(),
            wss_listen: self.wss_listen.clone(),
            http_listen: self.http_listen.clone(),
            tls_cert: self.tls_cert.clone(),
            tls_key: self.tls_key.clone(),
            worker_threads: self.worker_threads,
            log_level: self.log_level.clone(),
            log_format: self.log_format.clone(),
            data_dir: self.data_dir.clone(),
            in_memory: self.in_memory,
            cluster: self.cluster.clone(),
            node_id: self.node_id.clone(),
        }
    }
}
