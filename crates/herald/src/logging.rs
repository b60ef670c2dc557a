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
