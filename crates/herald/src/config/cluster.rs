//! `[cluster]`: joining other Herald nodes through NATS.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{ConfigError, invalid};

/// How this node reaches the NATS servers its cluster shares. Nodes find each other through
/// NATS only: no list of peers, no other coordination service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// NATS server URLs (`nats://host:4222`, `tls://host:4222`); empty: a single node.
    pub nats: Vec<String>,
    /// This node's name in the cluster: unique among its nodes, stable across restarts
    /// (letters, digits, `-` and `_`; at most 64). Empty: the host name.
    pub node_id: String,
    /// The first tokens of every subject the cluster uses, so that several clusters can
    /// share one NATS (letters, digits, `-`, `_`, dot-separated).
    pub subject_prefix: String,
    /// A NATS credentials file (JWT and NKey seed), for a NATS with decentralised auth.
    pub credentials_file: Option<PathBuf>,
    /// A NATS user and password (both or neither).
    pub user: Option<String>,
    /// See `user`.
    pub password: Option<String>,
    /// A NATS token.
    pub token: Option<String>,
    /// CA certificates (PEM) to verify NATS with, instead of the system's roots.
    pub tls_ca_file: Option<PathBuf>,
    /// A client certificate (PEM) for NATS servers that ask for one, with `tls_key_file`.
    pub tls_cert_file: Option<PathBuf>,
    /// See `tls_cert_file`.
    pub tls_key_file: Option<PathBuf>,
    /// Refuse a NATS connection that is not TLS.
    pub require_tls: bool,
    /// Copies JetStream keeps of the cluster's messages and retained messages (1, 3 or 5;
    /// at most the NATS servers with JetStream). Read when the stream is made.
    pub replicas: usize,
    /// How long the cluster's stream keeps a QoS 1/2 message (seconds): what a node that
    /// was cut off from NATS can catch up on.
    pub message_max_age_secs: u64,
    /// The most bytes the cluster's stream keeps (the oldest go first).
    pub message_max_bytes: u64,
    /// QoS 1/2 messages waiting for the stream's confirmation at most; past it new ones
    /// are refused (PUBACK/PUBREC 0x97, HTTP 429) until NATS catches up.
    pub max_unconfirmed: usize,
    /// Direct subjects a node subscribes under one first topic level of a tenant at most;
    /// past it the node subscribes to the level's wildcard instead (each NATS subscription
    /// costs ~7 KB; the node then receives all of that level's messages). 0: never.
    pub coarsen_above: usize,
    /// Keep persistent sessions in JetStream too (a bucket with `replicas` copies), so that
    /// a node whose machine is lost has its sessions resumed on the others.
    pub replicate_sessions: bool,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            nats: Vec::new(),
            node_id: String::new(),
            subject_prefix: "herald".into(),
            credentials_file: None,
            user: None,
            password: None,
            token: None,
            tls_ca_file: None,
            tls_cert_file: None,
            tls_key_file: None,
            require_tls: false,
            replicas: 1,
            message_max_age_secs: 3600,
            message_max_bytes: 1 << 30,
            max_unconfirmed: 65_536,
            coarsen_above: 1024,
            replicate_sessions: false,
        }
    }
}

/// Whether `id` may name a node (it becomes a subject token and a queue group name).
pub fn valid_node_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
}

impl ClusterConfig {
    /// Whether this node joins a cluster.
    pub fn enabled(&self) -> bool {
        !self.nats.is_empty()
    }

    /// This node's id: `node_id`, else the host name made valid, else "herald".
    pub fn node(&self) -> String {
        if !self.node_id.is_empty() {
            return self.node_id.clone();
        }
        let host = rustix::system::uname();
        let host: String = host
            .nodename()
            .to_string_lossy()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .take(64)
            .collect();
        if valid_node_id(&host) {
            host
        } else {
            "herald".into()
        }
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        for url in &self.nats {
            let scheme = url.split_once("://").map(|(s, _)| s);
            if !matches!(scheme, Some("nats" | "tls" | "ws" | "wss")) || url.ends_with("://") {
                return Err(invalid(
                    "cluster.nats",
                    format!("{url:?} is not a NATS URL (nats://host:port or tls://host:port)"),
                ));
            }
        }
        if !self.node_id.is_empty() && !valid_node_id(&self.node_id) {
            return Err(invalid(
                "cluster.node_id",
                "letters, digits, '-' and '_' only, at most 64",
            ));
        }
        let prefix_ok = !self.subject_prefix.is_empty()
            && self.subject_prefix.split('.').all(|t| {
                !t.is_empty()
                    && t.bytes()
                        .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
            });
        if !prefix_ok {
            return Err(invalid(
                "cluster.subject_prefix",
                "dot-separated tokens of letters, digits, '-' and '_'",
            ));
        }
        if self.user.is_some() != self.password.is_some() {
            return Err(invalid(
                "cluster.password",
                "cluster.user and cluster.password go together",
            ));
        }
        if !matches!(self.replicas, 1 | 3 | 5) {
            return Err(invalid("cluster.replicas", "1, 3 or 5"));
        }
        if self.message_max_age_secs == 0 {
            return Err(invalid("cluster.message_max_age_secs", "at least 1"));
        }
        if self.message_max_bytes < 1 << 20 {
            return Err(invalid(
                "cluster.message_max_bytes",
                "at least 1048576 (1 MiB)",
            ));
        }
        if self.max_unconfirmed == 0 {
            return Err(invalid("cluster.max_unconfirmed", "at least 1"));
        }
        if self.tls_cert_file.is_some() != self.tls_key_file.is_some() {
            return Err(invalid(
                "cluster.tls_key_file",
                "cluster.tls_cert_file and cluster.tls_key_file go together",
            ));
        }
        Ok(())
    }
}
