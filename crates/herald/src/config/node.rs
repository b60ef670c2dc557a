//! `[drain]`, `[runtime]` and `[log]`: how the process runs, logs and stops.

use serde::{Deserialize, Serialize};

use super::{ConfigError, invalid};

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

impl Log {
    /// Checks the format's name and that the level is a tracing filter.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.format != "text" && self.format != "json" {
            return Err(invalid(
                "log.format",
                format!("{:?}: must be \"text\" or \"json\"", self.format),
            ));
        }
        if tracing_subscriber::EnvFilter::try_new(&self.level).is_err() {
            return Err(invalid(
                "log.level",
                format!("{:?} is not a log filter", self.level),
            ));
        }
        Ok(())
    }
}
