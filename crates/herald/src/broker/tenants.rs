//! Tenants' own settings, and where they come from: the tenants file (`tenants.file`) or
//! the admin API (`/api/v1/tenants`), else `[tenants.defaults]` alone.
//!
//! - The file is TOML, one table per tenant (`[acme]` then any key of `[tenants.defaults]`;
//!   `[acme]` alone: a known tenant with the defaults). It is read at start (a file that
//!   does not load stops the start), on every reload, and when its modification time or
//!   length changes (`tenants.watch_secs`). A file that does not load is refused whole: the
//!   settings it gave before stay.
//! - The admin API sets a tenant's settings whole, or removes them. They are kept in the
//!   store (`Space::Tenants`), written through the journal like every other change, and
//!   restored at start before connections are accepted.
//!
//! The file wins: a tenant it names takes the file's settings, and the API may not change
//! it (`SettingsRefused::ManagedByFile`). A tenant the file stops naming goes back to what
//! the API set for it, if anything, else to the defaults and unknown. Each change replaces a
//! tenant's settings whole (`Tenant::set_own`); what reads them sees the old or the new.
//!
//! Lock order: the settings lock ([`Settings`]) is taken before the tenants map and the
//! journal, never while a session's lock is held (docs/architecture.md).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, SystemTime};

use serde_json::{Map, Value};
use tokio::sync::watch;

use super::stats::CloseReason;
use super::{Broker, Tenant};
use crate::config::{ConfigError, MAX_TENANT_LEN, TenantLimits, valid_tenant};
use crate::store::journal::Ticket;

/// Where a tenant's own settings come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The tenants file.
    File,
    /// The admin API (kept in the store).
    Api,
    /// Neither: `[tenants.defaults]` alone, and the tenant is unknown.
    Defaults,
}

impl Source {
    /// Its name in the API's answers.
    pub fn label(self) -> &'static str {
        match self {
            Source::File => "file",
            Source::Api => "api",
            Source::Defaults => "defaults",
        }
    }
}

/// A tenants file read and checked: each tenant's own settings, by name.
pub type FileTenants = BTreeMap<String, TenantLimits>;

/// Why a tenants file was refused. Each message starts with `tenants.file` and names the
/// file, and the tenant and key at fault when one is.
#[derive(Debug, thiserror::Error)]
pub enum TenantsFileError {
    /// The file cannot be read.
    #[error("tenants.file: cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not TOML, or not tables of tenants.
    #[error("tenants.file: {} is not TOML: {message}", path.display())]
    Syntax {
        /// The file.
        path: PathBuf,
        /// What the TOML parser said (with the line and column).
        message: String,
    },
    /// A tenant's table is refused.
    #[error("tenants.file: {}: tenant {tenant:?}{}: {message}", path.display(), key_of(key.as_deref()))]
    Tenant {
        /// The file.
        path: PathBuf,
        /// The tenant (its table's name).
        tenant: String,
        /// The key at fault, if one is.
        key: Option<String>,
        /// What is wrong.
        message: String,
    },
}

fn key_of(key: Option<&str>) -> String {
    key.map(|k| format!(", key {k}")).unwrap_or_default()
}

/// Why a tenant's settings were refused: the key at fault (`None`: the settings as a whole)
/// and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingsError {
    /// The key (a field of `[tenants.defaults]`), when one is at fault.
    pub key: Option<String>,
    /// What is wrong.
    pub message: String,
}

/// Reads a tenant's settings from a JSON object (the API's body, a tenants file's table),
/// checking each key on its own first so that an error names the key at fault: an unknown
/// key, a value of the wrong type, a value out of range (`TenantLimits::validate`).
pub fn limits_from(object: &Map<String, Value>) -> Result<TenantLimits, SettingsError> {
    let message = |e: ConfigError| match e {
        ConfigError::Invalid { message, .. } => message,
        other => other.to_string(),
    };
    for (key, value) in object {
        let at = |message: String| SettingsError {
            key: Some(key.clone()),
            message,
        };
        let one: Map<String, Value> = [(key.clone(), value.clone())].into_iter().collect();
        let limits: TenantLimits =
            serde_json::from_value(Value::Object(one)).map_err(|e| at(e.to_string()))?;
        limits.validate("tenant").map_err(|e| at(message(e)))?;
    }
    let whole = |m: String| SettingsError {
        key: None,
        message: m,
    };
    let limits: TenantLimits =
        serde_json::from_value(Value::Object(object.clone())).map_err(|e| whole(e.to_string()))?;
    limits.validate("tenant").map_err(|e| whole(message(e)))?;
    Ok(limits)
}

/// Parses `text`, the tenants file at `path` (named in errors), and checks every tenant.
pub fn parse(text: &str, path: &Path) -> Result<FileTenants, TenantsFileError> {
    let table: toml::Table =
        text.parse()
            .map_err(|e: toml::de::Error| TenantsFileError::Syntax {
                path: path.to_path_buf(),
                message: e.to_string().trim_end().to_string(),
            })?;
    let mut out = FileTenants::new();
    for (name, value) in table {
        let refused = |key: Option<String>, message: String| TenantsFileError::Tenant {
            path: path.to_path_buf(),
            tenant: name.clone(),
            key,
            message,
        };
        if !valid_tenant(&name) {
            return Err(refused(
                None,
                format!(
                    "not a tenant name: 1 to {MAX_TENANT_LEN} bytes without control characters"
                ),
            ));
        }
        let toml::Value::Table(settings) = value else {
            return Err(refused(
                None,
                format!("a tenant is a table: write [{name:?}], then its settings below it"),
            ));
        };
        let object = match serde_json::to_value(&settings) {
            Ok(Value::Object(object)) => object,
            _ => return Err(refused(None, "its settings do not read as a table".into())),
        };
        let limits = limits_from(&object).map_err(|e| refused(e.key, e.message))?;
        out.insert(name, limits);
    }
    Ok(out)
}

/// What identifies a version of the file: its modification time and length (`None`: it
/// cannot be looked at).
type Stamp = Option<(SystemTime, u64)>;

fn stamp(path: &Path) -> Stamp {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// Reads and checks the tenants file at `path` ("" for none: no tenants).
pub fn read_file(path: &Path) -> Result<FileTenants, TenantsFileError> {
    read_stamped(path).map(|(_, tenants)| tenants)
}

fn read_stamped(path: &Path) -> Result<(Stamp, FileTenants), TenantsFileError> {
    if path.as_os_str().is_empty() {
        return Ok((None, FileTenants::new()));
    }
    let before = stamp(path);
    let text = std::fs::read_to_string(path).map_err(|source| TenantsFileError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    Ok((before, parse(&text, path)?))
}

/// Where every tenant's own settings come from: the tenants file's, the admin API's.
#[derive(Debug, Default)]
pub struct Settings {
    sources: Mutex<Sources>,
}

#[derive(Debug, Default)]
struct Sources {
    /// The tenants file in force ("" for none).
    path: PathBuf,
    /// Its modification time and length when it was last read (loaded or refused).
    stamp: Stamp,
    /// What it gave.
    file: FileTenants,
    /// What the admin API set (and the store keeps).
    api: BTreeMap<String, TenantLimits>,
}

impl Settings {
    fn lock(&self) -> MutexGuard<'_, Sources> {
        self.sources.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Where `name`'s own settings come from.
    pub fn source(&self, name: &str) -> Source {
        let s = self.lock();
        if s.file.contains_key(name) {
            Source::File
        } else if s.api.contains_key(name) {
            Source::Api
        } else {
            Source::Defaults
        }
    }

    /// The tenants file in force ("" for none).
    pub fn file(&self) -> PathBuf {
        self.lock().path.clone()
    }
}

/// What loading the tenants file changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileApplied {
    /// Tenants it names.
    pub tenants: usize,
    /// Tenants it named before and no longer does.
    pub removed: usize,
}

/// Why the admin API may not change a tenant's settings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingsRefused {
    /// The tenants file defines the tenant: edit the file.
    #[error(
        "tenant {tenant:?} is defined by the tenants file {} (tenants.file): change it there",
        path.display()
    )]
    ManagedByFile {
        /// The tenant.
        tenant: String,
        /// The file.
        path: PathBuf,
    },
    /// The tenant has no settings set through the API.
    #[error("tenant {0:?} has no settings set through the API")]
    NotSet(String),
    /// The settings could not be encoded for the store (logged).
    #[error("the settings of tenant {0:?} could not be stored")]
    Unrecordable(String),
}

impl Broker {
    /// Where `name`'s own settings come from.
    pub fn tenant_source(&self, name: &str) -> Source {
        self.tenant_settings.source(name)
    }

    /// Reads the tenants file at `path` ("" for none) and applies it (start and reload). A
    /// file that does not load changes nothing.
    pub fn load_tenants_file(&self, path: &Path) -> Result<FileApplied, TenantsFileError> {
        let (stamp, tenants) = read_stamped(path)?;
        Ok(self.apply_tenants_file(path, stamp, tenants))
    }

    /// Reads the tenants file in force again if its modification time or length changed,
    /// and applies it: `Ok(None)` when it did not change. A changed file that does not
    /// load is refused once (its previous settings stay), and read again when it changes.
    pub fn check_tenants_file(&self) -> Result<Option<FileApplied>, TenantsFileError> {
        let (path, known) = {
            let s = self.tenant_settings.lock();
            (s.path.clone(), s.stamp)
        };
        if path.as_os_str().is_empty() {
            return Ok(None);
        }
        let now = stamp(&path);
        if now == known {
            return Ok(None);
        }
        match read_stamped(&path) {
            Ok((stamp, tenants)) => Ok(Some(self.apply_tenants_file(&path, stamp, tenants))),
            Err(e) => {
                self.tenant_settings.lock().stamp = now;
                Err(e)
            }
        }
    }

    /// Applies a tenants file read from `path`: each tenant it names takes its settings;
    /// each it named before and no longer does goes back to the API's settings, else to
    /// the defaults and unknown (its clients are disconnected with
    /// `tenants.require_known`).
    fn apply_tenants_file(&self, path: &Path, stamp: Stamp, tenants: FileTenants) -> FileApplied {
        let mut unknown = Vec::new();
        let applied = {
            let mut s = self.tenant_settings.lock();
            let old = std::mem::replace(&mut s.file, tenants);
            s.path = path.to_path_buf();
            s.stamp = stamp;
            for (name, limits) in &s.file {
                self.tenant(name).set_own(limits.clone(), true);
            }
            let mut removed = 0;
            for name in old.keys().filter(|name| !s.file.contains_key(*name)) {
                removed += 1;
                let tenant = self.tenant(name);
                match s.api.get(name) {
                    Some(limits) => tenant.set_own(limits.clone(), true),
                    None => {
                        tenant.set_own(TenantLimits::default(), false);
                        unknown.push(tenant);
                    }
                }
            }
            FileApplied {
                tenants: s.file.len(),
                removed,
            }
        };
        self.disconnect_unknown(&unknown);
        applied
    }

    /// Sets `name`'s own settings through the admin API: kept in the store (wait for the
    /// ticket before saying so). Returns whether the API had none for it before.
    pub fn put_tenant_settings(
        &self,
        name: &str,
        limits: TenantLimits,
    ) -> Result<(bool, Ticket), SettingsRefused> {
        let mut s = self.tenant_settings.lock();
        if s.file.contains_key(name) {
            return Err(SettingsRefused::ManagedByFile {
                tenant: name.into(),
                path: s.path.clone(),
            });
        }
        // Under the settings lock: the store sees one tenant's changes in their order.
        let ticket = self
            .persist
            .put_tenant(name, &limits)
            .map_err(|()| SettingsRefused::Unrecordable(name.into()))?;
        let created = s.api.insert(name.into(), limits.clone()).is_none();
        self.tenant(name).set_own(limits, true);
        Ok((created, ticket))
    }

    /// Removes `name`'s settings set through the admin API (and from the store): it goes
    /// back to the defaults and unknown (its clients are disconnected with
    /// `tenants.require_known`).
    pub fn remove_tenant_settings(&self, name: &str) -> Result<Ticket, SettingsRefused> {
        let (ticket, tenant) = {
            let mut s = self.tenant_settings.lock();
            if s.file.contains_key(name) {
                return Err(SettingsRefused::ManagedByFile {
                    tenant: name.into(),
                    path: s.path.clone(),
                });
            }
            if s.api.remove(name).is_none() {
                return Err(SettingsRefused::NotSet(name.into()));
            }
            let ticket = self.persist.delete_tenant(name);
            let tenant = self.tenant(name);
            tenant.set_own(TenantLimits::default(), false);
            (ticket, tenant)
        };
        self.disconnect_unknown(&[tenant]);
        Ok(ticket)
    }

    /// Takes back settings the admin API set before a restart (from the store). A tenant
    /// the file names keeps the file's.
    pub(crate) fn restore_tenant_settings(&self, name: &str, limits: TenantLimits) {
        let mut s = self.tenant_settings.lock();
        if !s.file.contains_key(name) {
            self.tenant(name).set_own(limits.clone(), true);
        }
        s.api.insert(name.into(), limits);
    }

    /// With `tenants.require_known`, asks the connected clients of `tenants` (now unknown)
    /// to close: v5 clients get DISCONNECT 0x87 Not authorized.
    fn disconnect_unknown(&self, tenants: &[Arc<Tenant>]) {
        if tenants.is_empty() || !self.config().tenants.require_known {
            return;
        }
        for tenant in tenants {
            let mut kicked = 0u64;
            tenant.sessions.for_each(|session| {
                kicked += u64::from(self.kick_for(session, CloseReason::TenantUnknown));
            });
            if kicked > 0 {
                tracing::info!(
                    tenant = &*tenant.name,
                    clients = kicked,
                    "tenant no longer known (tenants.require_known): its clients are disconnected"
                );
            }
        }
    }
}

/// Reads the tenants file again whenever it changes, every `tenants.watch_secs` (read at
/// each tick: a reload changes it; 0 pauses the watch), until `shutdown`. Holds the broker
/// weakly: a stopped broker is released at once.
pub async fn watch_tenants_file(broker: Weak<Broker>, mut shutdown: watch::Receiver<bool>) {
    loop {
        let secs = match broker.upgrade() {
            Some(b) => b.config().tenants.watch_secs,
            None => return,
        };
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(secs.max(1))) => {}
            _ = shutdown.changed() => return,
        }
        if secs == 0 {
            continue;
        }
        let Some(b) = broker.upgrade() else { return };
        let checked = tokio::task::spawn_blocking(move || b.check_tenants_file()).await;
        match checked {
            Ok(Ok(Some(applied))) => tracing::info!(
                tenants = applied.tenants,
                removed = applied.removed,
                "tenants file changed: applied"
            ),
            Ok(Ok(None)) => {}
            Ok(Err(e)) => {
                tracing::error!(error = %e, "tenants file refused; the settings it gave before stay")
            }
            Err(e) => tracing::error!(error = %e, "reading the tenants file failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &str) -> Result<FileTenants, TenantsFileError> {
        parse(text, Path::new("/etc/herald/tenants.toml"))
    }

    #[test]
    fn a_file_gives_each_tenant_its_settings() {
        let t = parsed(
            "[acme]\nmax_connections = 10\nmax_qos = 1\nprotocols = [\"5\"]\n\n[\"beta corp\"]\n",
        )
        .expect("a good file");
        assert_eq!(t.len(), 2);
        assert_eq!(t["acme"].max_connections, Some(10));
        assert_eq!(t["acme"].max_qos, Some(1));
        assert_eq!(t["acme"].protocols, Some(vec!["5".to_string()]));
        assert_eq!(t["beta corp"], TenantLimits::default(), "a table alone");
        assert!(parsed("").expect("empty").is_empty());
    }

    #[test]
    fn errors_name_the_file_the_tenant_and_the_key() {
        for (text, tenant, key, says) in [
            (
                "[acme]\nmax_widgets = 3\n",
                "acme",
                Some("max_widgets"),
                "unknown field",
            ),
            (
                "[acme]\nmax_qos = \"one\"\n",
                "acme",
                Some("max_qos"),
                "invalid type",
            ),
            (
                "[acme]\nmax_qos = 3\n",
                "acme",
                Some("max_qos"),
                "0, 1 or 2",
            ),
            (
                "[acme]\nmax_connections = -1\n",
                "acme",
                Some("max_connections"),
                "-1",
            ),
            (
                "[acme]\nmessages_per_sec = 0\n",
                "acme",
                Some("messages_per_sec"),
                "rate of 0",
            ),
            (
                "[b]\nprotocols = [\"4\"]\n",
                "b",
                Some("protocols"),
                "\"4\"",
            ),
            ("acme = 3\n", "acme", None, "a tenant is a table"),
            ("[acme.sub]\n", "acme", Some("sub"), "unknown field"),
        ] {
            let e = parsed(text).expect_err(text);
            let TenantsFileError::Tenant {
                tenant: t,
                key: k,
                message,
                ..
            } = &e
            else {
                panic!("{text}: {e}");
            };
            assert_eq!((t.as_str(), k.as_deref()), (tenant, key), "{text}");
            assert!(message.contains(says), "{text}: {message}");
            let shown = e.to_string();
            assert!(
                shown.starts_with("tenants.file: /etc/herald/tenants.toml: tenant "),
                "{shown}"
            );
        }
        let long = format!("[{}]\n", "t".repeat(65));
        assert!(
            parsed(&long)
                .expect_err("too long")
                .to_string()
                .contains("not a tenant name")
        );
        let e = parsed("[acme\nmax_qos = 1\n").expect_err("not TOML");
        assert!(matches!(e, TenantsFileError::Syntax { .. }), "{e}");
        assert!(e.to_string().contains("line 1"), "{e}");
    }

    #[test]
    fn api_bodies_are_read_key_by_key() {
        let object = |v: Value| v.as_object().cloned().expect("an object");
        let ok = limits_from(&object(
            serde_json::json!({"max_sessions": 5, "retain": false}),
        ))
        .expect("good settings");
        assert_eq!((ok.max_sessions, ok.retain), (Some(5), Some(false)));
        let e = limits_from(&object(
            serde_json::json!({"retain": false, "max_packet_size": 10}),
        ))
        .expect_err("too small");
        assert_eq!(e.key.as_deref(), Some("max_packet_size"));
        let e =
            limits_from(&object(serde_json::json!({"connect_rate": 1.5}))).expect_err("a float");
        assert_eq!(e.key.as_deref(), Some("connect_rate"));
    }

    #[test]
    fn the_file_wins_and_the_api_comes_back_when_it_stops_naming_a_tenant() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("tenants.toml");
        let mut config = crate::config::Config::default();
        config.store.in_memory = true;
        let broker = Broker::new(config, 10);
        let (created, _) = broker
            .put_tenant_settings(
                "both",
                TenantLimits {
                    max_sessions: Some(1),
                    ..TenantLimits::default()
                },
            )
            .expect("not in the file");
        assert!(created);
        std::fs::write(&path, "[both]\nmax_sessions = 2\n[only]\n").expect("written");
        let applied = broker.load_tenants_file(&path).expect("loads");
        assert_eq!(
            applied,
            FileApplied {
                tenants: 2,
                removed: 0
            }
        );
        let both = broker.find_tenant("both").expect("exists");
        assert_eq!(both.own().max_sessions, Some(2), "the file wins");
        assert_eq!(broker.tenant_source("both"), Source::File);
        assert!(matches!(
            broker.put_tenant_settings("both", TenantLimits::default()),
            Err(SettingsRefused::ManagedByFile { .. })
        ));
        let only = broker.find_tenant("only").expect("exists");
        assert!(only.known());
        std::fs::write(&path, "[other]\n").expect("written");
        assert_eq!(
            broker
                .check_tenants_file()
                .expect("loads")
                .map(|a| a.removed),
            Some(2)
        );
        assert_eq!(both.own().max_sessions, Some(1), "the API's again");
        assert!(both.known());
        assert_eq!(broker.tenant_source("both"), Source::Api);
        assert!(!only.known(), "back to unknown");
        assert_eq!(**only.own(), TenantLimits::default());
        assert_eq!(broker.check_tenants_file().expect("unchanged"), None);
        std::fs::write(&path, "[other]\nmax_qos = 7\n").expect("written");
        assert!(broker.check_tenants_file().is_err());
        assert_eq!(broker.check_tenants_file().expect("refused once"), None);
        assert!(broker.find_tenant("other").expect("exists").known(), "kept");
        broker
            .remove_tenant_settings("both")
            .expect("set through the API");
        assert!(!both.known());
        assert_eq!(
            broker.remove_tenant_settings("both"),
            Err(SettingsRefused::NotSet("both".into()))
        );
    }
}
