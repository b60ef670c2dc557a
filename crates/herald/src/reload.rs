//! Live reload (SIGHUP, `POST /api/v1/reload`): the configuration is read again from where
//! it came from (file, `HERALD_*` variables, flags), validated whole, and swapped in as a new
//! immutable snapshot that everything reads without a lock (`Broker::config`).
//!
//! What applies at once: limits (those negotiated at CONNECT, such as keep-alive bounds and
//! Receive Maximum, for connections made from then on), session settings, API keys, the log
//! level, and the TLS certificates and client-certificate settings (new handshakes). What
//! needs a restart (listener addresses, the store, threads, the HTTP listener and its
//! connection bound, the log format) is reported as such and keeps its running value: never
//! silently ignored. A configuration that does not validate, or TLS files that do not load,
//! are refused whole and the running configuration stays.
//!
//! The password file and the ACL file are read again by every reload (and when they change:
//! `auth.password_file_watch_secs`, `acl.watch_secs`); a file that does not load refuses
//! the reload, and its previous contents stay in force.
//!
//! The tenants file (`tenants.file`) is read again by every reload too (and when it
//! changes: `tenants.watch_secs`); one that does not load refuses the reload, and the
//! settings it gave before stay.
//!
//! The certificates alone are also reloaded when their files change (`tls.watch_secs`).
//! Both the server (SIGHUP) and the API reload through [`Reloader::reload_logged`], which
//! logs the outcome; [`ReloadError::key`] names the key at fault.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

use crate::broker::Broker;
use crate::config::{Config, ConfigError, Overrides};
use crate::net::tls::{TlsAcceptor, TlsError};

/// Where the configuration came from, to read it again.
#[derive(Debug, Clone, Default)]
pub struct ConfigSource {
    /// The file (`--config`), if any.
    pub file: Option<PathBuf>,
    /// The `HERALD_*` variables (and any others: only those are read).
    pub env: Vec<(String, String)>,
    /// The command-line flags.
    pub overrides: Overrides,
}

/// What a reload did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Keys whose new values are in force.
    pub applied: Vec<String>,
    /// Keys that changed but need a restart; their running values stay.
    pub restart_required: Vec<String>,
}

/// Why a reload was refused. Nothing changed: the running configuration and certificates stay.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The configuration read again does not load or does not validate.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The configuration is valid on its own but not with the running values of what needs a
    /// restart (the listeners, `http.listen`).
    #[error("{0} (checked with the running listeners and http.listen)")]
    WithRunning(ConfigError),
    /// The certificate files do not load.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The password file or the ACL file does not load (the message names its key); the
    /// previous contents stay in force.
    #[error("{0}")]
    Files(String),
    /// The tenants file does not load (the message names `tenants.file`); the settings it
    /// gave before stay in force.
    #[error(transparent)]
    Tenants(#[from] crate::broker::tenants::TenantsFileError),
    /// The running and the new configuration could not be compared.
    #[error(transparent)]
    Compare(#[from] toml::ser::Error),
}

impl ReloadError {
    /// The dotted key at fault, when one is: a value of the configuration, or the
    /// `tls.*_file` key naming a file that does not load.
    pub fn key(&self) -> Option<&'static str> {
        match self {
            ReloadError::Config(e) | ReloadError::WithRunning(e) => e.key(),
            ReloadError::Tls(e) => Some(e.key),
            ReloadError::Files(message) => Some(if message.starts_with("acl.") {
                "acl.file"
            } else {
                "auth.password_file"
            }),
            ReloadError::Tenants(_) => Some("tenants.file"),
            ReloadError::Compare(_) => None,
        }
    }

    /// Whether the certificates were at fault: the TLS files, or a `tls.*` setting.
    fn about_certificates(&self) -> bool {
        self.key().is_some_and(|key| key.starts_with("tls."))
    }
}

/// Keys (or sections, ending in `.`) that only a restart changes.
const RESTART_ONLY: [&str; 13] = [
    "listeners.",
    // The NATS connection and the node's name are made at start.
    "cluster.",
    // The authentication chain and the rules files are built at start; the files
    // themselves (the password file, the ACL file) are read again by every reload.
    "auth.",
    "acl.",
    "store.",
    "runtime.",
    "http.listen",
    "http.max_connections",
    "http.idempotency_window_secs",
    "http.max_idempotency_keys",
    "http.max_body_bytes",
    "log.format",
    "tls.watch_secs",
];

fn restart_only(key: &str) -> bool {
    RESTART_ONLY.iter().any(|k| {
        if k.ends_with('.') {
            key.starts_with(k)
        } else {
            key == *k
        }
    })
}

/// Reloads a running node's configuration.
#[derive(Debug)]
pub struct Reloader {
    broker: Arc<Broker>,
    tls: Option<Arc<TlsAcceptor>>,
    /// The connection limit's ceiling from the open-file limit.
    fd_bound: usize,
    source: Mutex<Option<ConfigSource>>,
}

impl Reloader {
    /// A reloader for `broker` (and the TLS listeners' certificates).
    pub fn new(broker: Arc<Broker>, tls: Option<Arc<TlsAcceptor>>, fd_bound: usize) -> Reloader {
        Reloader {
            broker,
            tls,
            fd_bound,
            source: Mutex::new(None),
        }
    }

    /// Says where the configuration comes from (without it, a reload re-reads only the TLS
    /// files of the running configuration).
    pub fn set_source(&self, source: ConfigSource) {
        if let Ok(mut s) = self.source.lock() {
            *s = Some(source);
        }
    }

    /// Reads the configuration again and applies it.
    pub fn reload(&self) -> Result<Report, ReloadError> {
        let source = self.source.lock().ok().and_then(|s| s.clone());
        let new = match source {
            Some(s) => Config::load(s.file.as_deref(), s.env, &s.overrides)?,
            None => Config::clone(&self.broker.config()),
        };
        self.apply(new)
    }

    /// Reloads (see [`Reloader::reload`]) and logs what was applied, what needs a restart, or
    /// why the reload was refused.
    pub fn reload_logged(&self) -> Result<Report, ReloadError> {
        match self.reload() {
            Ok(report) => {
                tracing::info!(
                    applied = ?report.applied,
                    restart_required = ?report.restart_required,
                    "configuration reloaded"
                );
                if !report.restart_required.is_empty() {
                    tracing::warn!(
                        keys = ?report.restart_required,
                        "these changes need a restart; their running values stay"
                    );
                }
                if self.tls.is_some() {
                    log_certificates_reloaded();
                }
                Ok(report)
            }
            Err(e) if e.about_certificates() => {
                log_certificates_refused(&e);
                Err(e)
            }
            Err(e) => {
                tracing::error!(error = %e, "configuration reload refused; the running configuration stays");
                Err(e)
            }
        }
    }

    /// Reloads the certificates when their files change, every `tls.watch_secs`, until the
    /// broker shuts down. Without TLS listeners, or with `tls.watch_secs` 0, returns at once.
    pub async fn watch_certificates(self: Arc<Self>) {
        let Some(tls) = self.tls.as_ref().filter(|tls| tls.watch_secs() > 0) else {
            return;
        };
        let mut tick = tokio::time::interval(Duration::from_secs(tls.watch_secs()));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        while !self.broker.shutting_down() {
            tick.tick().await;
            if tls.files_changed() {
                match tls.reload() {
                    Ok(()) => log_certificates_reloaded(),
                    Err(e) => log_certificates_refused(&e),
                }
            }
        }
    }

    /// Applies `new` (already validated): see the module documentation.
    pub fn apply(&self, mut new: Config) -> Result<Report, ReloadError> {
        let old = self.broker.config();
        let mut report = Report::default();
        for key in changed_keys(&old, &new)? {
            if restart_only(&key) {
                report.restart_required.push(key);
            } else {
                report.applied.push(key);
            }
        }
        // What needs a restart keeps its running value, so that the snapshot says what is.
        new.listeners = old.listeners.clone();
        new.store = old.store.clone();
        new.runtime = old.runtime.clone();
        new.http.listen = old.http.listen.clone();
        // The descriptors kept back for HTTP connections were set aside at start.
        new.http.max_connections = old.http.max_connections;
        new.http.idempotency_window_secs = old.http.idempotency_window_secs;
        new.http.max_idempotency_keys = old.http.max_idempotency_keys;
        new.http.max_body_bytes = old.http.max_body_bytes;
        new.log.format = old.log.format.clone();
        new.tls.watch_secs = old.tls.watch_secs;
        new.auth = old.auth.clone();
        new.acl = old.acl.clone();
        // Valid on its own is not enough: with the running values of what needs a restart it
        // must be valid too (removing every API key while the API still listens on a public
        // address, or anonymous access while an MQTT listener does, is refused).
        new.validate().map_err(ReloadError::WithRunning)?;
        // The password and ACL files, then the certificates: if one does not load, nothing
        // changes (a file that loaded stays loaded: it is what is on disk).
        if let Some(gate) = self.broker.hooks.get::<crate::auth::Gate>() {
            gate.reload_files().map_err(ReloadError::Files)?;
        }
        // The tenants file (`tenants.file` as the new configuration names it).
        let tenants = self.broker.load_tenants_file(&new.tenants.file)?;
        let tenants_file = !new.tenants.file.as_os_str().is_empty();
        if let Some(tls) = &self.tls {
            tls.reload_with(&new.tls)?;
        }
        if new.log.level != old.log.level {
            // Without an installed logger (Herald inside a test) there is nothing to change.
            let _ = crate::logging::set_level(&new.log.level);
        }
        self.broker.max_connections.store(
            new.limits.max_connections.min(self.fd_bound.max(1)),
            Ordering::Relaxed,
        );
        drop(old);
        self.broker.set_config(new);
        if tenants_file {
            tracing::info!(
                tenants = tenants.tenants,
                removed = tenants.removed,
                "tenants file read again"
            );
        }
        Ok(report)
    }
}

fn log_certificates_reloaded() {
    tracing::info!("tls: certificates reloaded; new handshakes use them");
}

fn log_certificates_refused(error: &dyn std::error::Error) {
    tracing::error!(error = %error, "tls: new certificates refused; the previous ones stay in use");
}

/// The dotted keys whose values differ.
fn changed_keys(old: &Config, new: &Config) -> Result<Vec<String>, toml::ser::Error> {
    let (old, new) = (toml::Table::try_from(old)?, toml::Table::try_from(new)?);
    let mut keys = Vec::new();
    for (section, new_value) in &new {
        match (old.get(section), new_value) {
            (Some(toml::Value::Table(o)), toml::Value::Table(n)) => {
                for (key, value) in n {
                    if o.get(key) != Some(value) {
                        keys.push(format!("{section}.{key}"));
                    }
                }
            }
            (o, n) if o != Some(n) => keys.push(section.clone()),
            _ => {}
        }
    }
    Ok(keys)
}
