//! Logs: tracing, as human-readable text or one JSON object per line, with a level that can
//! change while Herald runs (`PUT /api/v1/log`, or `log.level` on reload).

use std::sync::{Mutex, OnceLock};

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, fmt, reload};

/// The installed filter's handle and its text.
struct Installed {
    handle: reload::Handle<EnvFilter, Registry>,
    level: Mutex<String>,
}

static INSTALLED: OnceLock<Installed> = OnceLock::new();

/// Installs the process's logger: `level` is a tracing filter, `format` "text" or "json".
pub fn init(level: &str, format: &str) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(level)
        .map_err(|e| anyhow::anyhow!("log.level: {level:?} is not a log filter: {e}"))?;
    let (filter, handle) = reload::Layer::new(filter);
    let registry = tracing_subscriber::registry().with(filter);
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
pub fn set_level(level: &str) -> Result<(), String> {
    let filter =
        EnvFilter::try_new(level).map_err(|e| format!("{level:?} is not a log filter: {e}"))?;
    let installed = INSTALLED
        .get()
        .ok_or("no logger is installed (Herald runs inside another program)")?;
    installed.handle.reload(filter).map_err(|e| e.to_string())?;
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
    #[test]
    fn a_burst_is_cut_to_the_rate_and_the_rest_counted() {
        let limiter = super::RateLimited::new(3);
        let allowed: Vec<_> = (0..10).map(|_| limiter.allow()).collect();
        let through = allowed.iter().filter(|a| a.is_some()).count();
        // Normally 3; 6 if the burst straddled a second boundary.
        assert!(through == 3 || through == 6, "{allowed:?}");
    }
}
