//! The layering: defaults, then the file, then the `HERALD_*` variables, then the flags.
//! The first three meet as one TOML table, so that a variable is parsed as the type its key
//! has; the flags are typed already and set their keys on the result.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use super::{Config, ConfigError};

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
    /// `--cluster` (comma-separated): `cluster.nats`.
    pub cluster: Vec<String>,
    /// `--node-id`: `cluster.node_id`.
    pub node_id: Option<String>,
}

impl Overrides {
    /// Sets the keys given on the command line.
    fn apply(&self, config: &mut Config) {
        if !self.mqtt_listen.is_empty() {
            config.listeners.mqtt = self.mqtt_listen.clone();
        }
        if !self.ws_listen.is_empty() {
            config.listeners.ws = self.ws_listen.clone();
        }
        if !self.tls_listen.is_empty() {
            config.listeners.tls = self.tls_listen.clone();
        }
        if !self.wss_listen.is_empty() {
            config.listeners.wss = self.wss_listen.clone();
        }
        if let Some(addr) = &self.http_listen {
            config.http.listen = addr.clone();
        }
        if let Some(file) = &self.tls_cert {
            config.tls.cert_file = file.clone();
        }
        if let Some(file) = &self.tls_key {
            config.tls.key_file = file.clone();
        }
        if let Some(n) = self.worker_threads {
            config.runtime.worker_threads = n;
        }
        if let Some(level) = &self.log_level {
            config.log.level = level.clone();
        }
        if let Some(format) = &self.log_format {
            config.log.format = format.clone();
        }
        if let Some(dir) = &self.data_dir {
            config.store.data_dir = dir.clone();
        }
        if !self.cluster.is_empty() {
            config.cluster.nats = self.cluster.clone();
        }
        if let Some(id) = &self.node_id {
            config.cluster.node_id = id.clone();
        }
        if self.in_memory {
            config.store.in_memory = true;
        }
    }
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
        let mut text = None;
        if let Some(path) = file {
            let read = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.display().to_string(),
                source,
            })?;
            let from_file: toml::Table = read
                .parse()
                .map_err(|e| ConfigError::Parse(format!("{}: {e}", path.display())))?;
            merge(&mut table, from_file);
            text = Some((path, read));
        }
        let from_env = apply_env(&mut table, env)?;
        let mut config: Config = serde_path_to_error::deserialize(toml::Value::Table(table))
            .map_err(|e| {
                let key = e.path().to_string();
                let message = e.inner().message().to_string();
                ConfigError::Parse(where_set(&key, &from_env, text.as_ref(), &message))
            })?;
        flags.apply(&mut config);
        config.validate()?;
        Ok(config)
    }
}

/// Says where a value that does not fit its key (`key`, a path like
/// `listeners.proxy_protocol[0]`) came from: the variable that set it, or the file and the
/// line.
fn where_set(
    key: &str,
    from_env: &[(String, String)],
    file: Option<&(&Path, String)>,
    message: &str,
) -> String {
    let setting = key.split('[').next().unwrap_or(key);
    if let Some((name, _)) = from_env.iter().find(|(_, k)| k == setting) {
        return format!("{name} ({key}): {message}");
    }
    if let Some((path, text)) = file {
        return match line_of(text, setting) {
            Some(line) => format!("{} line {line}: {key}: {message}", path.display()),
            None => format!("{}: {key}: {message}", path.display()),
        };
    }
    format!("{key}: {message}")
}

/// The line (from 1) of a TOML text that sets `key` (`section.sub.name`): the first
/// `name = ...` under a `[section.sub]` header.
fn line_of(text: &str, key: &str) -> Option<usize> {
    let (section, name) = key.rsplit_once('.').unwrap_or(("", key));
    let mut current = String::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if let Some(header) = line.strip_prefix('[') {
            current = header.trim_end_matches(']').trim().to_string();
            continue;
        }
        let Some((left, _)) = line.split_once('=') else {
            continue;
        };
        let left = left.trim().trim_matches('"');
        // `name = ` under its section, or `sub.name = ` under the section above it.
        let full = match current.is_empty() {
            true => left.to_string(),
            false => format!("{current}.{left}"),
        };
        if full == key || (current == section && left == name) {
            return Some(i + 1);
        }
    }
    None
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
/// has (numbers, booleans, strings; lists are comma-separated; tables are TOML inline
/// tables).
fn apply_env(
    table: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Vec<(String, String)>, ConfigError> {
    // Each variable applied, and the key it set (for errors found when the whole is read).
    let mut applied = Vec::new();
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
        let Some(toml::Value::Table(top)) = table.get_mut(section) else {
            return Err(ConfigError::Parse(format!(
                "{name}: no config section {section:?}"
            )));
        };
        // A key of a sub-section (`HERALD_AUTH_JWT_SECRET` is auth.jwt.secret).
        let mut path = section.to_string();
        let mut key = key.to_string();
        let mut subs = Vec::new();
        let mut look: &toml::Table = top;
        while !look.contains_key(&key) {
            let found = key
                .match_indices('_')
                .map(|(i, _)| (key[..i].to_string(), key[i + 1..].to_string()))
                .find(|(sub, _)| matches!(look.get(sub), Some(toml::Value::Table(_))));
            let Some((sub, rest)) = found else {
                break;
            };
            let Some(toml::Value::Table(inner)) = look.get(&sub) else {
                break;
            };
            look = inner;
            path = format!("{path}.{sub}");
            subs.push(sub);
            key = rest;
        }
        let mut sec: &mut toml::Table = top;
        for sub in &subs {
            let Some(toml::Value::Table(inner)) = sec.get_mut(sub) else {
                return Err(ConfigError::Parse(format!(
                    "{name}: no config section {path}"
                )));
            };
            sec = inner;
        }
        let value = match sec.get(&key) {
            Some(current) => parse_like(current, &raw),
            // Settings without a default value (left out means "unset"): read as TOML.
            None if optional(&path, &key) => Some(parse_optional(&path, &key, &raw)),
            None => {
                return Err(ConfigError::Parse(format!(
                    "{name}: no config key {path}.{key}"
                )));
            }
        }
        .ok_or_else(|| ConfigError::Parse(format!("{name}={raw:?}: not a valid {path}.{key}")))?;
        applied.push((name.clone(), format!("{path}.{key}")));
        sec.insert(key, value);
    }
    Ok(applied)
}

/// Settings whose default is "unset", so the defaults table does not show their type.
fn optional(path: &str, key: &str) -> bool {
    (path == "auth" && key == "anonymous") || path == "tenants.defaults" || path == "cluster"
}

/// An optional setting's value: a list for the list settings (comma-separated, as every
/// list variable is), text for `[cluster]`'s, else read as TOML (`5`, `true`), else a string.
fn parse_optional(path: &str, key: &str, raw: &str) -> toml::Value {
    if path == "cluster" {
        // Its optional settings are all text: paths, a user, a password, a token.
        return toml::Value::String(raw.to_string());
    }
    if key == "anonymous" || key == "protocols" {
        return parse_like(&toml::Value::Array(Vec::new()), raw)
            .unwrap_or_else(|| toml::Value::Array(Vec::new()));
    }
    format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()))
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
        // A table as a TOML inline table: `{ acme = ["key-1"] }`.
        Value::Table(_) => format!("v = {raw}")
            .parse::<toml::Table>()
            .ok()?
            .remove("v")
            .filter(Value::is_table)?,
        _ => Value::String(raw.to_string()),
    })
}
