//! Logs: tracing, as human-readable text or one JSON object per line, with a level that can
//! change while Herald runs (`PUT /api/v1/log`, or `log.level` on reload).
//!
//! Libraries that log through the `log` crate (rustls) come through the same filter. One of
//! their warnings is dropped: see `QuietIpSni`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_log::NormalizeEvent as _;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, fmt, reload};

/// The installed filter's handle and its text.
struct Installed {
    handle: reload::Handle<EnvFilter, Registry>,
    level: Mutex<String>,
}

static INSTALLED: OnceLock<Installed> = OnceLock::new();

/// A log level that is not a tracing filter.
#[derive(Debug, thiserror::Error)]
#[error("{level:?} is not a log filter: {reason}")]
pub struct BadLevel {
    level: String,
    reason: tracing_subscriber::filter::ParseError,
}

/// Why the logger was not installed.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// `log.level` is not a tracing filter.
    #[error("log.level: {0}")]
    Level(BadLevel),
    /// The process has a logger already.
    #[error(transparent)]
    Installed(#[from] tracing_subscriber::util::TryInitError),
}

/// Why the level did not change.
#[derive(Debug, thiserror::Error)]
pub enum SetLevelError {
    /// The level is not a tracing filter.
    #[error(transparent)]
    Level(#[from] BadLevel),
    /// No logger was installed by [`init`]: Herald runs inside another program.
    #[error("no logger is installed (Herald runs inside another program)")]
    NoLogger,
    /// The installed logger is gone.
    #[error(transparent)]
    Reload(#[from] reload::Error),
}

fn filter(level: &str) -> Result<EnvFilter, BadLevel> {
    // The store's engine says what it does at INFO (a line per memtable flushed, nine at
    // the first start): only its warnings, unless the filter names it.
    let quiet = match level.contains("lsm_tree") {
        true => level.to_string(),
        false => format!("{level},lsm_tree=warn"),
    };
    EnvFilter::try_new(&quiet).map_err(|reason| BadLevel {
        level: level.to_string(),
        reason,
    })
}

/// Installs the process's logger: `level` is a tracing filter, `format` "text" or "json".
pub fn init(level: &str, format: &str) -> Result<(), InitError> {
    let filter = filter(level).map_err(InitError::Level)?;
    let (filter, handle) = reload::Layer::new(filter);
    RUSTLS_NAMED.store(names_rustls(level), Ordering::Relaxed);
    let registry = tracing_subscriber::registry().with(filter).with(QuietIpSni);
    if format == "json" {
        registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(false),
            )
            .try_init()?;
    } else {
        // Colours only for a terminal: logs piped to a file or a collector stay plain.
        let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
        registry.with(fmt::layer().with_ansi(ansi)).try_init()?;
    }
    let _ = INSTALLED.set(Installed {
        handle,
        level: Mutex::new(level.to_string()),
    });
    Ok(())
}

/// Changes the level of the installed logger.
pub fn set_level(level: &str) -> Result<(), SetLevelError> {
    let filter = filter(level)?;
    let installed = INSTALLED.get().ok_or(SetLevelError::NoLogger)?;
    installed.handle.reload(filter)?;
    RUSTLS_NAMED.store(names_rustls(level), Ordering::Relaxed);
    if let Ok(mut l) = installed.level.lock() {
        *l = level.to_string();
    }
    Ok(())
}

/// The installed logger's level, if one is installed.
pub fn level() -> Option<String> {
    INSTALLED
        .get()
        .and_then(|i| i.level.lock().ok().map(|l| l.clone()))
}

/// The target and the start of rustls' warning about an IP address sent as SNI.
const IP_SNI_TARGET: &str = "rustls::msgs::handshake";
const IP_SNI_WARNING: &str = "Illegal SNI extension: ignoring IP address";

/// Whether the log filter names rustls (then its warnings all show).
static RUSTLS_NAMED: AtomicBool = AtomicBool::new(false);

fn names_rustls(filter: &str) -> bool {
    filter.contains("rustls")
}

/// Drops rustls' warning about a TLS handshake whose SNI is an IP address, one per such
/// handshake: RFC 6066 forbids it, but clients connecting to an address send it (OpenSSL's
/// `s_client -servername`, mosquitto_sub `-h 127.0.0.1`), rustls ignores the name and goes
/// on, and a warning per connection would drown the log without anything to act on. Its
/// other warnings stay, and a filter that names `rustls` (`rustls=warn,info`) shows this one
/// too.
#[derive(Debug, Clone, Copy)]
struct QuietIpSni;

impl<S: Subscriber> Layer<S> for QuietIpSni {
    fn event_enabled(&self, event: &Event<'_>, _: Context<'_, S>) -> bool {
        RUSTLS_NAMED.load(Ordering::Relaxed) || !is_ip_sni_warning(event)
    }
}

fn is_ip_sni_warning(event: &Event<'_>) -> bool {
    // A `log` record arrives as an event of tracing-log's own callsite: its target is in the
    // normalized metadata.
    let normalized = event.normalized_metadata();
    let meta = normalized.as_ref().unwrap_or_else(|| event.metadata());
    if *meta.level() != Level::WARN || meta.target() != IP_SNI_TARGET {
        return false;
    }
    let mut message = Message(None);
    event.record(&mut message);
    message.0.is_some_and(|m| m.starts_with(IP_SNI_WARNING))
}

/// An event's message.
struct Message(Option<String>);

impl Visit for Message {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0 = Some(value.to_string());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = Some(format!("{value:?}"));
        }
    }
}

/// At most `per_second` log lines a second for one kind of event a peer can cause at will
/// (protocol violations): the rest are counted and the count is reported with the next line
/// let through, so a flood of bad clients cannot flood the log.
#[derive(Debug)]
pub struct RateLimited {
    per_second: u64,
    /// The second (since the epoch) the count is for.
    second: std::sync::atomic::AtomicU64,
    /// Lines let through in that second.
    count: std::sync::atomic::AtomicU64,
    /// Lines held back since the last one let through.
    suppressed: std::sync::atomic::AtomicU64,
}

impl RateLimited {
    /// A limiter letting `per_second` lines through each second.
    pub const fn new(per_second: u64) -> RateLimited {
        use std::sync::atomic::AtomicU64;
        RateLimited {
            per_second,
            second: AtomicU64::new(0),
            count: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(lines held back before this one)` when a line may be logged now.
    pub fn allow(&self) -> Option<u64> {
        use std::sync::atomic::Ordering::Relaxed;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if self.second.swap(now, Relaxed) != now {
            self.count.store(0, Relaxed);
        }
        if self.count.fetch_add(1, Relaxed) < self.per_second {
            Some(self.suppressed.swap(0, Relaxed))
        } else {
            self.suppressed.fetch_add(1, Relaxed);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;

    use super::*;

    /// Counts the events that reach it.
    struct Count(Arc<AtomicUsize>);

    impl<S: Subscriber> Layer<S> for Count {
        fn on_event(&self, _: &Event<'_>, _: Context<'_, S>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn a_burst_is_cut_to_the_rate_and_the_rest_counted() {
        let limiter = RateLimited::new(3);
        let allowed: Vec<_> = (0..10).map(|_| limiter.allow()).collect();
        let through = allowed.iter().filter(|a| a.is_some()).count();
        // Normally 3; 6 if the burst straddled a second boundary.
        assert!(through == 3 || through == 6, "{allowed:?}");
    }

    #[test]
    fn only_the_ip_sni_warning_is_dropped() {
        let seen = Arc::new(AtomicUsize::new(0));
        let subscriber = tracing_subscriber::registry()
            .with(QuietIpSni)
            .with(Count(seen.clone()));
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(
                target: "rustls::msgs::handshake",
                "Illegal SNI extension: ignoring IP address presented as hostname (31)"
            );
            assert_eq!(seen.load(Ordering::Relaxed), 0, "dropped");
            tracing::warn!(
                target: "rustls::msgs::handshake",
                "Illegal SNI extension: duplicate host_name received"
            );
            tracing::warn!("Illegal SNI extension: ignoring IP address, from elsewhere");
            tracing::info!(
                target: "rustls::msgs::handshake",
                "Illegal SNI extension: ignoring IP address presented as hostname (31)"
            );
            assert_eq!(seen.load(Ordering::Relaxed), 3, "the others pass");
        });
    }
}
