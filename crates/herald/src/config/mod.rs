//! Configuration: serde structs with defaults, layered as defaults < file < `HERALD_*`
//! environment < command-line flags, then validated as a whole.
//!
//! Every setting has one dotted key (`limits.max_packet_size`); its environment variable is
//! that key upper-cased with `HERALD_` in front and `_` for the dot
//! (`HERALD_LIMITS_MAX_PACKET_SIZE`). Errors name the key.
//!
//! One file per concern, each with its section's struct, defaults and checks:
//!
//! - `listeners`: `[listeners]`, the addresses and what each speaks.
//! - `tls`: `[tls]`, the certificates of the TLS and WSS listeners.
//! - `auth`: `[auth]` and `[acl]`, the authentication chain and the access rules.
//! - `http`: `[http]`, the HTTP API, metrics and health endpoints.
//! - `limits`: `[limits]` and `[session]`, what clients may do and are granted.
//! - `store`: `[store]`, where and how durable state is written.
//! - `node`: `[drain]`, `[runtime]` and `[log]`, how the process runs and stops.
//! - `load`: the layering (file, `HERALD_*` variables, flags).
//! - `cluster`: `[cluster]`, joining other nodes through NATS.
//! - `tenants`: `[tenants]`, every tenant's quotas and rate limits and where its own come
//!   from.
//! - `sys`: `[sys]`, the `$SYS/` topics.
//! - `template`: `herald config generate`, the commented default file.

mod auth;
mod cluster;
mod http;
mod limits;
mod listeners;
mod load;
mod node;
mod store;
mod sys;
mod template;
mod tenants;
#[cfg(test)]
mod tests;
mod tls;

use serde::{Deserialize, Serialize};

pub use auth::{
    AclConfig, AuthConfig, CalloutConfig, JwtConfig, Method as AuthMethod, TenantRule, TokenIn,
    V3Denied,
};
pub use cluster::{ClusterConfig, valid_node_id};
pub use http::HttpConfig;
pub use http::{MAX_TENANT_LEN, valid_tenant};
pub use limits::{Limits, SessionConfig};
pub use listeners::{ListenerKind, Listeners};
pub use load::Overrides;
pub use node::{DrainConfig, Log, Runtime};
pub use store::{Fsync, StoreConfig};
pub use sys::SysConfig;
pub use template::generate;
pub use tenants::{ClientLimits, RateExceeded, TenantLimits, TenantsConfig};
pub use tls::{ClientAuth, TenantField, TlsConfig, UsernameFrom};

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

impl ConfigError {
    /// The dotted key of the value at fault, when one is (a file that does not read or parse
    /// names none).
    pub fn key(&self) -> Option<&'static str> {
        match self {
            ConfigError::Invalid { key, .. } => Some(key),
            ConfigError::Read { .. } | ConfigError::Parse(_) => None,
        }
    }
}

fn invalid(key: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        message: message.into(),
    }
}

/// Checks `rules` in order; the first that does not hold is the error. A rule is the key it
/// checks, whether it holds, and what the key must be.
fn require(rules: &[(&'static str, bool, &str)]) -> Result<(), ConfigError> {
    match rules.iter().find(|(_, holds, _)| !holds) {
        Some((key, _, message)) => Err(invalid(key, *message)),
        None => Ok(()),
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
    /// Who may connect: the authentication chain.
    pub auth: AuthConfig,
    /// What each client may publish and subscribe to.
    pub acl: AclConfig,
    /// Tenants' quotas and rate limits.
    pub tenants: TenantsConfig,
    /// Other nodes, joined through NATS.
    pub cluster: ClusterConfig,
    /// The `$SYS/` topics.
    pub sys: SysConfig,
}

impl Config {
    /// Checks ranges and consistency, section by section; the first error found is returned.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.http.validate()?;
        self.listeners.validate()?;
        self.tls.validate(self.listeners.need_tls())?;
        let certificate = self.tls.username_from != UsernameFrom::Connect;
        self.auth.validate(certificate)?;
        self.listeners.validate_exposure(&self.auth, certificate)?;
        self.limits.validate()?;
        self.store.validate()?;
        self.session.validate()?;
        self.tenants.validate()?;
        self.cluster.validate()?;
        self.sys.validate()?;
        self.log.validate()
    }
}
