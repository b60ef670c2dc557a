//! `[http]`: the HTTP API, `/metrics` and the health endpoints, and the bounds of their
//! listener.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::{ConfigError, invalid, require};

/// The HTTP side: API, metrics, health.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address of the HTTP API, `/metrics`, `/healthz` and `/readyz` ("" for none).
    pub listen: String,
    /// Bearer tokens accepted by `/api/v1` (`Authorization: Bearer <key>`). Without any,
    /// the API serves anyone who can reach it, so it must listen on loopback.
    pub api_keys: Vec<String>,
    /// Bearer tokens scoped to one tenant, by tenant name: such a key publishes to, lists and
    /// steers that tenant's clients, subscriptions and retained messages only, and is refused
    /// the node-wide operations (drain, reload, the log level, `/metrics`). Keys here count
    /// as keys for the loopback rule above.
    pub tenant_keys: BTreeMap<String, Vec<String>>,
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
    /// scrape config). Needs `api_keys`: a tenant's key does not open `/metrics`.
    pub metrics_requires_key: bool,
    /// Serve the web dashboard at `/` (its pages call the API like any client, with the
    /// same keys).
    pub dashboard: bool,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: "127.0.0.1:8080".into(),
            api_keys: Vec::new(),
            tenant_keys: BTreeMap::new(),
            idempotency_window_secs: 24 * 3600,
            max_idempotency_keys: 1_000_000,
            max_body_bytes: 4 * 1024 * 1024,
            max_batch: 1000,
            header_timeout_secs: 10,
            idle_timeout_secs: 60,
            max_connections: 1024,
            metrics_requires_key: false,
            dashboard: true,
        }
    }
}

impl HttpConfig {
    /// The address to listen on, if any.
    pub fn addr(&self) -> Option<SocketAddr> {
        self.listen.parse().ok()
    }

    /// Whether the API asks for keys: any node-wide or tenant key is configured. Without
    /// any, it serves every caller as node-wide, on loopback only.
    pub fn has_keys(&self) -> bool {
        !self.api_keys.is_empty() || self.tenant_keys.values().any(|keys| !keys.is_empty())
    }

    /// Checks the address, that an API off loopback has keys and that they are long
    /// enough, and the bounds.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.listen.is_empty() {
            return Ok(());
        }
        let Some(addr) = self.addr() else {
            return Err(invalid(
                "http.listen",
                format!(
                    "{:?} is not an address (host:port, or \"\" for none)",
                    self.listen
                ),
            ));
        };
        if !addr.ip().is_loopback() && !self.has_keys() {
            return Err(invalid(
                "http.api_keys",
                format!(
                    "the HTTP API listens on {addr}, which is not a loopback address: \
                     give it at least one API key"
                ),
            ));
        }
        if let Some(k) = self.api_keys.iter().find(|k| k.len() < 16) {
            return Err(invalid(
                "http.api_keys",
                format!(
                    "a key of {} characters is too easy to guess (16 at least)",
                    k.len()
                ),
            ));
        }
        self.validate_tenant_keys()?;
        require(&[
            ("http.max_batch", self.max_batch > 0, "must be at least 1"),
            (
                "http.max_body_bytes",
                self.max_body_bytes >= 1024,
                "must be at least 1024",
            ),
            (
                "http.header_timeout_secs",
                self.header_timeout_secs > 0,
                "must be at least 1",
            ),
            (
                "http.idle_timeout_secs",
                self.idle_timeout_secs > 0,
                "must be at least 1",
            ),
            (
                "http.max_connections",
                self.max_connections > 0,
                "must be at least 1",
            ),
            (
                "http.metrics_requires_key",
                !self.metrics_requires_key || !self.api_keys.is_empty(),
                "needs at least one key in http.api_keys",
            ),
        ])
    }

    /// Checks the tenant keys: names a tenant may have, keys as long as node-wide ones, and
    /// no key given twice (in one tenant, in two, or also node-wide): a key names one scope.
    fn validate_tenant_keys(&self) -> Result<(), ConfigError> {
        // Each key, and the tenant it was first seen for (None: node-wide).
        let mut seen: HashMap<&str, Option<&str>> =
            self.api_keys.iter().map(|k| (k.as_str(), None)).collect();
        for (tenant, keys) in &self.tenant_keys {
            if !valid_tenant(tenant) {
                return Err(invalid(
                    "http.tenant_keys",
                    format!(
                        "{tenant:?} is not a tenant name (1 to {MAX_TENANT_LEN} bytes, no \
                         control characters)"
                    ),
                ));
            }
            for key in keys {
                if key.len() < 16 {
                    return Err(invalid(
                        "http.tenant_keys",
                        format!(
                            "a key of tenant {tenant:?} has {} characters: too easy to guess \
                             (16 at least)",
                            key.len()
                        ),
                    ));
                }
                if let Some(first) = seen.insert(key, Some(tenant)) {
                    let other = match first {
                        None => "is also in http.api_keys".to_string(),
                        Some(t) if t == tenant => "is listed twice".to_string(),
                        Some(t) => format!("is also a key of tenant {t:?}"),
                    };
                    return Err(invalid(
                        "http.tenant_keys",
                        format!("a key of tenant {tenant:?} {other}: a key names one scope"),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Longest tenant name, bytes: for a client's tenant, a tenant key's, the tenants file's.
pub const MAX_TENANT_LEN: usize = 64;

/// Whether `name` may name a tenant: 1 to 64 bytes without control characters (it
/// prefixes store keys, ends at a NUL there, and labels metrics).
pub fn valid_tenant(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_TENANT_LEN && !name.chars().any(char::is_control)
}
