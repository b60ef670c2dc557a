//! Configuration: serde structs with defaults, layered as defaults < file < `HERALD_*`
//! environment < command-line flags, then validated as a whole.
//!
//! Every setting has one dotted key (`limits.max_packet_size`); its environment variable is
//! that key upper-cased with `HERALD_` in front and `_` for the dot
//! (`HERALD_LIMITS_MAX_PACKET_SIZE`). Errors name the key.

mod template;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use crate::store::Fsync;
pub use template::generate;

/// Why a configuration was refused. The message names the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file, a variable or a flag does not parse, or names an unknown key.
    #[error("{0}")]
    Parse(String),
    /// A value is out of range or inconsistent.
    #[error("{key}: {message}")]
    Invalid {
        /// The dotted key.
        key: &'static str,
        /// What is wrong.
        message: String,
    },
}

fn invalid(key: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        message: message.into(),
    }
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where Herald listens.
    pub listeners: Listeners,
    /// Bounds on clients and their traffic.
    pub limits: Limits,
    /// Sessions and their state.
    pub session: SessionConfig,
    /// Where and how sessions, queued and retained messages are stored.
    pub store: StoreConfig,
    /// Certificates for the TLS and WSS listeners.
    pub tls: TlsConfig,
    /// The HTTP API, metrics and health endpoints.
    pub http: HttpConfig,
    /// How a stopping node lets its clients go.
    pub drain: DrainConfig,
    /// Threads and process limits.
    pub runtime: Runtime,
    /// Logging.
    pub log: Log,
}

/// Listener addresses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Listeners {
    /// MQTT over TCP.
    pub mqtt: Vec<SocketAddr>,
    /// MQTT over WebSocket.
    pub ws: Vec<SocketAddr>,
    /// MQTT over TLS (needs `tls.cert_file` and `tls.key_file`).
    pub tls: Vec<SocketAddr>,
    /// MQTT over WebSocket over TLS.
    pub wss: Vec<SocketAddr>,
    /// The HTTP path WebSocket clients connect to.
    pub ws_path: String,
    /// Addresses, among the above, whose connections start with a PROXY protocol header
    /// (v1 or v2, from HAProxy, nginx or a cloud load balancer); a connection without a
    /// valid one is refused.
    pub proxy_protocol: Vec<SocketAddr>,
    /// Addresses, among the above, where a 3.1/3.1.1 client's QoS 1/2 PUBLISH that cannot be
    /// queued for every subscriber (a full queue, the node's memory budget) is acknowledged
    /// all the same and counted (`herald_accepted_unqueued_total`), as mosquitto does.
    /// Elsewhere such a publisher is disconnected without its acknowledgement, so it sends
    /// the message again later: 3.1.1 has no reason code to say no with.
    pub v3_accept_refused: Vec<SocketAddr>,
    /// Allow binding a non-loopback address while every client is anonymous. Herald has no
    /// authentication yet, so a public listener needs this set explicitly.
    pub allow_anonymous_public: bool,
    /// The listen backlog of every listener above: connections the kernel completes and
    /// queues before Herald accepts them (a reconnect storm arrives faster than one accept
    /// loop). The kernel caps it at `net.core.somaxconn`.
    pub backlog: u32,
}

impl Default for Listeners {
    fn default() -> Self {
        Listeners {
            mqtt: vec![SocketAddr::from(([127, 0, 0, 1], 1883))],
            ws: vec![SocketAddr::from(([127, 0, 0, 1], 8083))],
            tls: Vec::new(),
            wss: Vec::new(),
            ws_path: "/mqtt".into(),
            proxy_protocol: Vec::new(),
            v3_accept_refused: Vec::new(),
            allow_anonymous_public: false,
            backlog: 1024,
        }
    }
}

impl Listeners {
    /// Every listener address with its kind.
    pub fn all(&self) -> impl Iterator<Item = (ListenerKind, SocketAddr)> + '_ {
        [
            (ListenerKind::Mqtt, &self.mqtt),
            (ListenerKind::Ws, &self.ws),
            (ListenerKind::Tls, &self.tls),
            (ListenerKind::Wss, &self.wss),
        ]
        .into_iter()
        .flat_map(|(kind, addrs)| addrs.iter().map(move |a| (kind, *a)))
    }
}

/// What a listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ListenerKind {
    /// MQTT over TCP.
    Mqtt,
    /// MQTT over WebSocket.
    Ws,
    /// MQTT over TLS.
    Tls,
    /// MQTT over WebSocket over TLS.
    Wss,
}

impl ListenerKind {
    /// The config key listing listeners of this kind.
    pub fn key(self) -> &'static str {
        match self {
            ListenerKind::Mqtt => "listeners.mqtt",
            ListenerKind::Ws => "listeners.ws",
            ListenerKind::Tls => "listeners.tls",
            ListenerKind::Wss => "listeners.wss",
        }
    }

    /// A short name for logs and metrics.
    pub fn label(self) -> &'static str {
        match self {
            ListenerKind::Mqtt => "mqtt",
            ListenerKind::Ws => "ws",
            ListenerKind::Tls => "tls",
            ListenerKind::Wss => "wss",
        }
    }

    /// Whether connections start with a TLS handshake.
    pub fn is_tls(self) -> bool {
        matches!(self, ListenerKind::Tls | ListenerKind::Wss)
    }

    /// Whether MQTT travels in WebSocket frames.
    pub fn is_ws(self) -> bool {
        matches!(self, ListenerKind::Ws | ListenerKind::Wss)
    }
}

/// The HTTP side: API, metrics, health.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address of the HTTP API, `/metrics`, `/healthz` and `/readyz` ("" for none).
    pub listen: String,
    /// Bearer tokens accepted by `/api/v1` (`Authorization: Bearer <key>`). Without any,
    /// the API serves anyone who can reach it, so it must listen on loopback.
    pub api_keys: Vec<String>,
    /// Seconds an `Idempotency-Key` is remembered: a retry within it gets the first answer
    /// and publishes nothing.
    pub idempotency_window_secs: u64,
    /// Most idempotency keys remembered at once; past it the oldest are forgotten first.
    pub max_idempotency_keys: usize,
    /// Largest request body, bytes.
    pub max_body_bytes: usize,
    /// Most messages in one `POST /api/v1/publish/batch`.
    pub max_batch: usize,
    /// Seconds a client has to send a request's head (request line and headers), counted
    /// from the connection's opening or from the first byte of the request.
    pub header_timeout_secs: u64,
    /// Seconds a connection may pass without a byte in either direction (between requests,
    /// or a request whose body or answer has stalled) before it is closed.
    pub idle_timeout_secs: u64,
    /// Open HTTP connections; past it new ones are closed at once (and counted), so that
    /// HTTP clients cannot take the descriptors MQTT clients need.
    pub max_connections: usize,
    /// `/metrics` asks for an API key too (Prometheus then sends it: `authorization` in its
    /// scrape config). Needs `api_keys`.
    pub metrics_requires_key: bool,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: "127.0.0.1:8080".into(),
            api_keys: Vec::new(),
            idempotency_window_secs: 24 * 3600,
            max_idempotency_keys: 1_000_000,
            max_body_bytes: 4 * 1024 * 1024,
            max_batch: 1000,
            header_timeout_secs: 10,
            idle_timeout_secs: 60,
            max_connections: 1024,
            metrics_requires_key: false,
        }
    }
}

impl HttpConfig {
    /// The address to listen on, if any.
    pub fn addr(&self) -> Option<SocketAddr> {
        self.listen.parse().ok()
    }
}

/// Draining (lame duck): on SIGTERM or `POST /api/v1/drain` the node stops accepting,
/// reports not ready, and disconnects its clients gradually so that they do not all
/// reconnect elsewhere at the same instant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DrainConfig {
    /// Seconds over which the clients are disconnected (0: all at once).
    pub period_secs: u64,
    /// Where v5 clients should go: told in DISCONNECT 0x9C (Use another server) as Server
    /// Reference; "" tells them 0x8B (Server shutting down).
    pub server_reference: String,
}

impl Default for DrainConfig {
    fn default() -> Self {
        DrainConfig {
            period_secs: 30,
            server_reference: String::new(),
        }
    }
}

/// Client certificates: whether they are asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// Not asked for.
    None,
    /// Asked for and verified against `tls.client_ca_file` when given; clients without one
    /// are accepted.
    Optional,
    /// Required: a client without a certificate the CA signed is refused in the handshake.
    Required,
}

/// Where a client's username may come from besides CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UsernameFrom {
    /// CONNECT's username field.
    Connect,
    /// The client certificate's subject Common Name (replacing CONNECT's username).
    Cn,
    /// The client certificate's first DNS, e-mail or URI Subject Alternative Name.
    San,
}

/// TLS for the `tls` and `wss` listeners.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM file with the server's certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// PEM file with the certificate's private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// PEM file with the CA certificates client certificates are verified against.
    pub client_ca_file: PathBuf,
    /// Client certificates: `none`, `optional` or `required` (mTLS).
    pub client_auth: ClientAuth,
    /// Take the client's username from its certificate: `connect` (no), `cn` or `san`.
    pub username_from: UsernameFrom,
    /// Oldest TLS version accepted: "1.2" or "1.3".
    pub min_version: String,
    /// Seconds between checks of the certificate files for changes (0: only SIGHUP reloads
    /// them).
    pub watch_secs: u64,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            cert_file: PathBuf::new(),
            key_file: PathBuf::new(),
            client_ca_file: PathBuf::new(),
            client_auth: ClientAuth::None,
            username_from: UsernameFrom::Connect,
            min_version: "1.2".into(),
            watch_secs: 0,
        }
    }
}

/// Bounds. Each has a defined behaviour when hit, counted and logged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Open client connections; past it new connections are closed at once (v5: CONNACK 0x97).
    pub max_connections: usize,
    /// Seconds a new connection has to send CONNECT.
    pub connect_timeout_secs: u64,
    /// Largest packet accepted, in bytes (announced to v5 clients as Maximum Packet Size).
    pub max_packet_size: usize,
    /// Largest keep-alive accepted, in seconds; a v5 client asking for more (or for 0) is
    /// told this value as Server Keep Alive. 0 accepts whatever the client asks.
    pub max_keep_alive_secs: u16,
    /// QoS 1/2 messages a client may have unacknowledged towards Herald (Receive Maximum).
    pub receive_maximum: u16,
    /// Topic aliases a v5 client may use towards Herald (Topic Alias Maximum).
    pub topic_alias_maximum: u16,
    /// Subscriptions one client may hold.
    pub max_subscriptions_per_client: usize,
    /// Longest topic name or filter, in bytes.
    pub max_topic_length: usize,
    /// Most levels (`/`-separated parts) in a topic name or filter.
    pub max_topic_levels: usize,
    /// Longest client identifier, in bytes.
    pub max_client_id_length: usize,
    /// Messages waiting to be written to a connected client; past it QoS 0 messages are
    /// dropped (counted) and QoS 1/2 messages wait in the session queue.
    pub max_outbox_messages: usize,
    /// Bytes of payload waiting to be written to a connected client (as above).
    pub max_outbox_bytes: usize,
    /// QoS 1/2 messages queued for one session (offline, or slower than its outbox); past
    /// it, or past `max_queued_bytes`, a new message for that session is refused: v5
    /// publishers get 0x97 Quota exceeded, 3.1.1 publishers are disconnected unacknowledged
    /// (or, on `listeners.v3_accept_refused`, acknowledged and the copy counted dropped).
    pub max_queued_messages: usize,
    /// Topic and payload bytes of QoS 1/2 messages queued for one session (as above).
    pub max_queued_bytes: usize,
    /// Topic and payload bytes of QoS 1/2 messages sent to one client and not yet
    /// acknowledged: past it, Herald waits for acknowledgements before sending it more QoS
    /// 1/2 messages (as with its Receive Maximum), so a client that reads and never
    /// acknowledges holds a bounded amount of memory.
    pub max_inflight_bytes: usize,
    /// Bytes held by all session queues together (each message counted once however many
    /// queues hold it, plus a small fixed cost per queued delivery). Past it, QoS 0 copies
    /// are dropped and QoS 1/2 publications refused as above, until queues drain.
    pub max_queued_bytes_total: u64,
    /// A subscriber whose queue is past half its outbox bound holds its publishers back
    /// (pushback) while its socket keeps taking bytes; one whose socket has taken nothing
    /// for this many milliseconds counts as stalled: it then loses QoS 0 past its outbox
    /// bound instead of slowing its publishers (and everyone else they feed), until it
    /// catches up.
    pub stall_after_ms: u64,
    /// Retained messages one tenant may keep; past it, a retained message on a new topic is
    /// refused (v5: 0x97; 3.1.1: as for `max_queued_messages`) and counted.
    pub max_retained_messages: usize,
    /// Topic and payload bytes of one tenant's retained messages (as above).
    pub max_retained_bytes: usize,
    /// Seconds a client's socket may stay unwritable with data waiting before it is
    /// disconnected as a slow consumer.
    pub slow_consumer_timeout_secs: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 1_000_000,
            connect_timeout_secs: 10,
            max_packet_size: 1024 * 1024,
            max_keep_alive_secs: 3600,
            receive_maximum: 256,
            topic_alias_maximum: 64,
            max_subscriptions_per_client: 1000,
            max_topic_length: 1024,
            max_topic_levels: 32,
            max_client_id_length: 256,
            max_outbox_messages: 1000,
            max_outbox_bytes: 4 * 1024 * 1024,
            max_queued_messages: 10_000,
            max_queued_bytes: 64 * 1024 * 1024,
            max_inflight_bytes: 16 * 1024 * 1024,
            max_queued_bytes_total: 2 * 1024 * 1024 * 1024,
            stall_after_ms: 200,
            max_retained_messages: 1_000_000,
            max_retained_bytes: 1024 * 1024 * 1024,
            slow_consumer_timeout_secs: 30,
        }
    }
}

/// Session behaviour.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionConfig {
    /// Longest session expiry granted, in seconds (v5 clients asking for more are told this
    /// value; 3.1.1 sessions with clean session 0 expire after it too).
    pub max_session_expiry_secs: u32,
    /// Whether retained messages are supported.
    pub retain_available: bool,
    /// Highest QoS granted to subscriptions and accepted on publications.
    pub maximum_qos: u8,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            max_session_expiry_secs: 7 * 24 * 3600,
            retain_available: true,
            maximum_qos: 2,
        }
    }
}

/// The durable store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// Directory of the store (created if missing; locked while Herald runs).
    pub data_dir: PathBuf,
    /// Keep everything in memory only: nothing survives a restart, nothing waits for a disk.
    pub in_memory: bool,
    /// How commits reach the disk: `batch` (one fsync per group commit; the default),
    /// `always` (one per change) or `never` (survives a crash of Herald, not of the machine).
    pub fsync: Fsync,
    /// Bytes the store may take on disk; past it new QoS 1/2 publications are refused
    /// (v5: reason 0x97 Quota exceeded; 3.1.1: the connection is closed). 0: no limit.
    pub max_disk_bytes: u64,
    /// Free bytes the store's file system must keep; below it, the same refusal.
    pub min_free_disk_bytes: u64,
    /// Bytes a keyspace's in-memory table grows to before it is written to a sorted file.
    pub memtable_bytes: u64,
    /// Bytes of journal kept before old journals are retired (at least 64 MiB): bounds the
    /// disk taken by messages already delivered.
    pub max_journal_bytes: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            data_dir: PathBuf::from("herald-data"),
            in_memory: false,
            fsync: Fsync::Batch,
            max_disk_bytes: 0,
            min_free_disk_bytes: 256 * 1024 * 1024,
            memtable_bytes: 16 * 1024 * 1024,
            max_journal_bytes: 128 * 1024 * 1024,
        }
    }
}

/// Runtime sizing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Runtime {
    /// Worker threads; 0 sizes them from the CPU quota (cgroup v1/v2), else the core count.
    pub worker_threads: usize,
}

/// Logging.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Log {
    /// A tracing filter: `info`, `debug`, `herald=debug,info`, ...
    pub level: String,
    /// `text` (for people) or `json` (one object per line, for collectors).
    pub format: String,
}

impl Default for Log {
    fn default() -> Self {
        Log {
            level: "info".into(),
            format: "text".into(),
        }
    }
}

/// Values given on the command line; each overrides its key.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--mqtt-listen` (repeatable): `listeners.mqtt`.
    pub mqtt_listen: Vec<SocketAddr>,
    /// `--ws-listen` (repeatable): `listeners.ws`.
    pub ws_listen: Vec<SocketAddr>,
    /// `--tls-listen` (repeatable): `listeners.tls`.
    pub tls_listen: Vec<SocketAddr>,
    /// `--wss-listen` (repeatable): `listeners.wss`.
    pub wss_listen: Vec<SocketAddr>,
    /// `--http-listen`: `http.listen`.
    pub http_listen: Option<String>,
    /// `--tls-cert`: `tls.cert_file`.
    pub tls_cert: Option<PathBuf>,
    /// `--tls-key`: `tls.key_file`.
    pub tls_key: Option<PathBuf>,
    /// `--worker-threads`: `runtime.worker_threads`.
    pub worker_threads: Option<usize>,
    /// `--log-level`: `log.level`.
    pub log_level: Option<String>,
    /// `--log-format`: `log.format`.
    pub log_format: Option<String>,
    /// `--data-dir`: `store.data_dir`.
    pub data_dir: Option<PathBuf>,
    /// `--in-memory`: `store.in_memory`.
    pub in_memory: bool,
}

impl Config {
    /// Builds the configuration: defaults, then `file` (if any), then the `HERALD_*` variables
    /// in `env`, then `flags`; then validates it.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        flags: &Overrides,
    ) -> Result<Config, ConfigError> {
        let mut table = toml::Table::try_from(Config::default())
            .map_err(|e| ConfigError::Parse(format!("default config: {e}")))?;
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.display().to_string(),
                source,
            })?;
            let from_file: toml::Table = text
                .parse()
                .map_err(|e| ConfigError::Parse(format!("{}: {e}", path.display())))?;
            merge(&mut table, from_file);
        }
        apply_env(&mut table, env)?;
        let mut config: Config = table
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Parse(e.message().to_string()))?;
        if !flags.mqtt_listen.is_empty() {
            config.listeners.mqtt = flags.mqtt_listen.clone();
        }
        if !flags.ws_listen.is_empty() {
            config.listeners.ws = flags.ws_listen.clone();
        }
        if !flags.tls_listen.is_empty() {
            config.listeners.tls = flags.tls_listen.clone();
        }
        if !flags.wss_listen.is_empty() {
            config.listeners.wss = flags.wss_listen.clone();
        }
        if let Some(addr) = &flags.http_listen {
            config.http.listen = addr.clone();
        }
        if let Some(file) = &flags.tls_cert {
            config.tls.cert_file = file.clone();
        }
        if let Some(file) = &flags.tls_key {
            config.tls.key_file = file.clone();
        }
        if let Some(n) = flags.worker_threads {
            config.runtime.worker_threads = n;
        }
        if let Some(level) = &flags.log_level {
            config.log.level = level.clone();
        }
        if let Some(format) = &flags.log_format {
            config.log.format = format.clone();
        }
        if let Some(dir) = &flags.data_dir {
            config.store.data_dir = dir.clone();
        }
        if flags.in_memory {
            config.store.in_memory = true;
        }
        config.validate()?;
        Ok(config)
    }

    /// Checks the listeners and the TLS settings they need.
    fn validate_listeners(&self) -> Result<(), ConfigError> {
        let ls = &self.listeners;
        if ls.all().next().is_none() {
            return Err(invalid(
                "listeners.mqtt",
                "at least one listener (mqtt, ws, tls or wss) is needed",
            ));
        }
        let mut seen = std::collections::HashMap::new();
        for (kind, addr) in ls.all() {
            if addr.port() != 0
                && let Some(other) = seen.insert(addr, kind)
            {
                return Err(invalid(
                    kind.key(),
                    format!("{addr} is also in {}", other.key()),
                ));
            }
        }
        if let Some(addr) = ls
            .proxy_protocol
            .iter()
            .find(|p| !ls.all().any(|(_, a)| a == **p))
        {
            return Err(invalid(
                "listeners.proxy_protocol",
                format!("{addr} is not the address of a listener"),
            ));
        }
        if let Some(addr) = ls
            .v3_accept_refused
            .iter()
            .find(|p| !ls.all().any(|(_, a)| a == **p))
        {
            return Err(invalid(
                "listeners.v3_accept_refused",
                format!("{addr} is not the address of a listener"),
            ));
        }
        if !(1..=65_535).contains(&ls.backlog) {
            return Err(invalid("listeners.backlog", "must be between 1 and 65535"));
        }
        if !ls.ws_path.starts_with('/') || ls.ws_path.contains(char::is_whitespace) {
            return Err(invalid(
                "listeners.ws_path",
                format!("{:?} is not an absolute HTTP path", ls.ws_path),
            ));
        }
        let t = &self.tls;
        let needs_tls = ls.all().any(|(kind, _)| kind.is_tls());
        if needs_tls {
            if t.cert_file.as_os_str().is_empty() {
                return Err(invalid(
                    "tls.cert_file",
                    "a TLS or WSS listener needs a certificate chain (--tls-cert)",
                ));
            }
            if t.key_file.as_os_str().is_empty() {
                return Err(invalid(
                    "tls.key_file",
                    "a TLS or WSS listener needs the certificate's private key (--tls-key)",
                ));
            }
        }
        if t.client_auth != ClientAuth::None && t.client_ca_file.as_os_str().is_empty() {
            return Err(invalid(
                "tls.client_ca_file",
                "client certificates (tls.client_auth) are verified against a CA file",
            ));
        }
        if t.username_from != UsernameFrom::Connect && t.client_auth == ClientAuth::None {
            return Err(invalid(
                "tls.username_from",
                "needs client certificates (tls.client_auth = \"optional\" or \"required\")",
            ));
        }
        if t.min_version != "1.2" && t.min_version != "1.3" {
            return Err(invalid(
                "tls.min_version",
                format!("{:?}: must be \"1.2\" or \"1.3\"", t.min_version),
            ));
        }
        Ok(())
    }

    fn validate_http(&self) -> Result<(), ConfigError> {
        let h = &self.http;
        if h.listen.is_empty() {
            return Ok(());
        }
        let Some(addr) = h.addr() else {
            return Err(invalid(
                "http.listen",
                format!(
                    "{:?} is not an address (host:port, or \"\" for none)",
                    h.listen
                ),
            ));
        };
        if !addr.ip().is_loopback() && h.api_keys.is_empty() {
            return Err(invalid(
                "http.api_keys",
                format!(
                    "the HTTP API listens on {addr}, which is not a loopback address: \
                     give it at least one API key"
                ),
            ));
        }
        if let Some(k) = h.api_keys.iter().find(|k| k.len() < 16) {
            return Err(invalid(
                "http.api_keys",
                format!(
                    "a key of {} characters is too easy to guess (16 at least)",
                    k.len()
                ),
            ));
        }
        if h.max_batch == 0 {
            return Err(invalid("http.max_batch", "must be at least 1"));
        }
        if h.max_body_bytes < 1024 {
            return Err(invalid("http.max_body_bytes", "must be at least 1024"));
        }
        if h.header_timeout_secs == 0 {
            return Err(invalid("http.header_timeout_secs", "must be at least 1"));
        }
        if h.idle_timeout_secs == 0 {
            return Err(invalid("http.idle_timeout_secs", "must be at least 1"));
        }
        if h.max_connections == 0 {
            return Err(invalid("http.max_connections", "must be at least 1"));
        }
        if h.metrics_requires_key && h.api_keys.is_empty() {
            return Err(invalid(
                "http.metrics_requires_key",
                "needs at least one key in http.api_keys",
            ));
        }
        Ok(())
    }

    /// Checks ranges and consistency.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let l = &self.limits;
        self.validate_http()?;
        self.validate_listeners()?;
        if !self.listeners.allow_anonymous_public
            && let Some((kind, addr)) = self.listeners.all().find(|(_, a)| !a.ip().is_loopback())
        {
            return Err(invalid(
                kind.key(),
                format!(
                    "{addr} is not a loopback address and Herald has no authentication \
                         configured; set listeners.allow_anonymous_public = true \
                         (HERALD_LISTENERS_ALLOW_ANONYMOUS_PUBLIC=true) to accept anonymous \
                         clients from the network"
                ),
            ));
        }
        if !(64..=mqtt_codec::MAX_PACKET_SIZE).contains(&l.max_packet_size) {
            return Err(invalid(
                "limits.max_packet_size",
                "must be between 64 and 268435460",
            ));
        }
        if l.max_connections == 0 {
            return Err(invalid("limits.max_connections", "must be at least 1"));
        }
        if l.connect_timeout_secs == 0 {
            return Err(invalid("limits.connect_timeout_secs", "must be at least 1"));
        }
        if l.receive_maximum == 0 {
            return Err(invalid("limits.receive_maximum", "must be at least 1"));
        }
        if !(1..=65_535).contains(&l.max_topic_length) {
            return Err(invalid(
                "limits.max_topic_length",
                "must be between 1 and 65535",
            ));
        }
        if l.max_topic_levels == 0 {
            return Err(invalid("limits.max_topic_levels", "must be at least 1"));
        }
        if l.max_client_id_length < 23 {
            return Err(invalid(
                "limits.max_client_id_length",
                "must be at least 23 (every server must accept 23-byte client ids)",
            ));
        }
        if l.max_outbox_messages == 0 {
            return Err(invalid("limits.max_outbox_messages", "must be at least 1"));
        }
        if l.max_outbox_bytes == 0 {
            return Err(invalid("limits.max_outbox_bytes", "must be at least 1"));
        }
        if l.max_queued_messages == 0 {
            return Err(invalid("limits.max_queued_messages", "must be at least 1"));
        }
        if l.max_queued_bytes < l.max_packet_size {
            return Err(invalid(
                "limits.max_queued_bytes",
                "must be at least limits.max_packet_size (one message of the largest size)",
            ));
        }
        if l.max_inflight_bytes == 0 {
            return Err(invalid("limits.max_inflight_bytes", "must be at least 1"));
        }
        if l.max_queued_bytes_total < l.max_queued_bytes as u64 {
            return Err(invalid(
                "limits.max_queued_bytes_total",
                "must be at least limits.max_queued_bytes",
            ));
        }
        if l.stall_after_ms == 0 {
            return Err(invalid("limits.stall_after_ms", "must be at least 1"));
        }
        if l.max_retained_messages == 0 {
            return Err(invalid(
                "limits.max_retained_messages",
                "must be at least 1",
            ));
        }
        if l.max_retained_bytes < l.max_packet_size {
            return Err(invalid(
                "limits.max_retained_bytes",
                "must be at least limits.max_packet_size",
            ));
        }
        if l.slow_consumer_timeout_secs == 0 {
            return Err(invalid(
                "limits.slow_consumer_timeout_secs",
                "must be at least 1",
            ));
        }
        let st = &self.store;
        if !st.in_memory && st.data_dir.as_os_str().is_empty() {
            return Err(invalid("store.data_dir", "must name a directory"));
        }
        if st.max_journal_bytes < 64 * 1024 * 1024 {
            return Err(invalid(
                "store.max_journal_bytes",
                "must be at least 67108864 (64 MiB, the size of one journal file)",
            ));
        }
        if st.memtable_bytes < 64 * 1024 {
            return Err(invalid(
                "store.memtable_bytes",
                "must be at least 65536 (64 KiB)",
            ));
        }
        if self.session.maximum_qos > 2 {
            return Err(invalid("session.maximum_qos", "must be 0, 1 or 2"));
        }
        if self.log.format != "text" && self.log.format != "json" {
            return Err(invalid(
                "log.format",
                format!("{:?}: must be \"text\" or \"json\"", self.log.format),
            ));
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            return Err(invalid(
                "log.level",
                format!("{:?} is not a log filter", self.log.level),
            ));
        }
        Ok(())
    }
}

/// Overlays `top` on `base`, table by table.
fn merge(base: &mut toml::Table, top: toml::Table) {
    for (key, value) in top {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(t)) => merge(b, t),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

/// Applies `HERALD_SECTION_KEY=value` variables. The value is parsed as the type the key
/// has (numbers, booleans, strings; lists are comma-separated).
fn apply_env(
    table: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<(), ConfigError> {
    // Variables that are not settings (the config file's path) or are a flag's short name.
    const NOT_SETTINGS: [&str; 1] = ["HERALD_CONFIG"];
    for (name, raw) in env {
        // `--mqtt-listen`'s variable is a short name for listeners.mqtt.
        let name = match name.as_str() {
            "HERALD_MQTT_LISTEN" => "HERALD_LISTENERS_MQTT".to_string(),
            "HERALD_WS_LISTEN" => "HERALD_LISTENERS_WS".to_string(),
            "HERALD_TLS_LISTEN" => "HERALD_LISTENERS_TLS".to_string(),
            "HERALD_WSS_LISTEN" => "HERALD_LISTENERS_WSS".to_string(),
            "HERALD_TLS_CERT" => "HERALD_TLS_CERT_FILE".to_string(),
            "HERALD_TLS_KEY" => "HERALD_TLS_KEY_FILE".to_string(),
            _ => name,
        };
        let Some(rest) = name.strip_prefix("HERALD_") else {
            continue;
        };
        if NOT_SETTINGS.contains(&name.as_str()) {
            continue;
        }
        let lower = rest.to_ascii_lowercase();
        let Some((section, key)) = lower.split_once('_') else {
            return Err(ConfigError::Parse(format!("{name}: not a Herald setting")));
        };
        let Some(toml::Value::Table(sec)) = table.get_mut(section) else {
            return Err(ConfigError::Parse(format!(
                "{name}: no config section {section:?}"
            )));
        };
        let Some(current) = sec.get(key) else {
            return Err(ConfigError::Parse(format!(
                "{name}: no config key {section}.{key}"
            )));
        };
        let value = parse_like(current, &raw).ok_or_else(|| {
            ConfigError::Parse(format!("{name}={raw:?}: not a valid {section}.{key}"))
        })?;
        sec.insert(key.to_string(), value);
    }
    Ok(())
}

fn parse_like(current: &toml::Value, raw: &str) -> Option<toml::Value> {
    use toml::Value;
    Some(match current {
        Value::Integer(_) => Value::Integer(raw.trim().parse().ok()?),
        Value::Boolean(_) => Value::Boolean(raw.trim().parse().ok()?),
        Value::Float(_) => Value::Float(raw.trim().parse().ok()?),
        Value::Array(_) => Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| Value::String(s.to_string()))
                .collect(),
        ),
        _ => Value::String(raw.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_are_valid_and_loopback() {
        let c = Config::load(None, Vec::new(), &Overrides::default()).unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.listeners.mqtt, vec!["127.0.0.1:1883".parse().unwrap()]);
    }

    #[test]
    fn layers_apply_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("herald.toml");
        std::fs::write(
            &file,
            "[limits]\nmax_packet_size = 2048\nmax_connections = 10\n[listeners]\nmqtt = [\"127.0.0.1:1999\"]\n",
        )
        .unwrap();
        let flags = Overrides {
            mqtt_listen: vec!["127.0.0.1:2000".parse().unwrap()],
            ..Default::default()
        };
        let c = Config::load(
            Some(&file),
            env(&[("HERALD_LIMITS_MAX_CONNECTIONS", "20"), ("PATH", "/bin")]),
            &flags,
        )
        .unwrap();
        assert_eq!(c.limits.max_packet_size, 2048, "file");
        assert_eq!(c.limits.max_connections, 20, "environment over file");
        assert_eq!(
            c.listeners.mqtt,
            vec!["127.0.0.1:2000".parse().unwrap()],
            "flag over file"
        );
        let c = Config::load(
            None,
            env(&[("HERALD_LISTENERS_MQTT", "127.0.0.1:1,127.0.0.2:2")]),
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!(c.listeners.mqtt.len(), 2);
    }

    #[test]
    fn errors_name_the_key() {
        let err = |e: Vec<(String, String)>| {
            Config::load(None, e, &Overrides::default())
                .unwrap_err()
                .to_string()
        };
        assert!(
            err(env(&[("HERALD_LIMITS_MAX_PACKET_SIZE", "10")]))
                .starts_with("limits.max_packet_size:")
        );
        assert!(
            err(env(&[("HERALD_LIMITS_MAX_PACKET_SIZE", "lots")]))
                .contains("limits.max_packet_size")
        );
        assert!(err(env(&[("HERALD_LIMITS_NO_SUCH", "1")])).contains("limits.no_such"));
        assert!(
            err(env(&[("HERALD_SESSION_MAXIMUM_QOS", "3")])).starts_with("session.maximum_qos:")
        );
        assert!(
            err(env(&[("HERALD_LIMITS_MAX_OUTBOX_BYTES", "0")]))
                .starts_with("limits.max_outbox_bytes:")
        );
        let public = err(env(&[("HERALD_LISTENERS_MQTT", "0.0.0.0:1883")]));
        assert!(
            public.starts_with("listeners.mqtt:") && public.contains("allow_anonymous_public"),
            "{public}"
        );
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bad.toml");
        std::fs::write(&file, "[limits]\nmax_pakcet_size = 5\n").unwrap();
        let e = Config::load(Some(&file), Vec::new(), &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("max_pakcet_size"), "{e}");
    }

    #[test]
    fn the_http_api_needs_a_key_off_loopback() {
        let err = |e: Vec<(String, String)>| {
            Config::load(None, e, &Overrides::default())
                .unwrap_err()
                .to_string()
        };
        let e = err(env(&[("HERALD_HTTP_LISTEN", "0.0.0.0:8080")]));
        assert!(e.starts_with("http.api_keys:"), "{e}");
        let e = err(env(&[("HERALD_HTTP_LISTEN", "localhost")]));
        assert!(e.starts_with("http.listen:"), "{e}");
        let e = err(env(&[
            ("HERALD_HTTP_LISTEN", "0.0.0.0:8080"),
            ("HERALD_HTTP_API_KEYS", "short"),
        ]));
        assert!(
            e.starts_with("http.api_keys:") && e.contains("too easy"),
            "{e}"
        );
        let c = Config::load(
            None,
            env(&[
                ("HERALD_HTTP_LISTEN", "0.0.0.0:8080"),
                ("HERALD_HTTP_API_KEYS", "0123456789abcdef0123"),
            ]),
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!(c.http.api_keys.len(), 1);
        let off = Config::load(
            None,
            env(&[("HERALD_HTTP_LISTEN", "")]),
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!(off.http.addr(), None);
    }

    #[test]
    fn public_listener_with_explicit_consent() {
        let c = Config::load(
            None,
            env(&[
                ("HERALD_LISTENERS_MQTT", "0.0.0.0:1883"),
                ("HERALD_LISTENERS_ALLOW_ANONYMOUS_PUBLIC", "true"),
            ]),
            &Overrides::default(),
        )
        .unwrap();
        assert!(c.listeners.allow_anonymous_public);
    }

    #[test]
    fn generated_file_is_the_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("gen.toml");
        std::fs::write(&file, generate()).unwrap();
        let c = Config::load(Some(&file), Vec::new(), &Overrides::default()).unwrap();
        assert_eq!(c, Config::default());
        // Every key of the defaults is written out (commented defaults would hide drift).
        let table = toml::Table::try_from(Config::default()).unwrap();
        let generated: toml::Table = generate().parse().unwrap();
        assert_eq!(table, generated);
    }
}
