//! `[sys]`: the `$SYS/` topics, Herald's status as MQTT messages (mosquitto's names and
//! Herald's own, published every `interval_secs`; clients' connections and disconnections
//! as they happen, EMQX's event topics).

use serde::{Deserialize, Serialize};

use super::{ConfigError, require};

/// The longest interval accepted: a day.
const MAX_INTERVAL_SECS: u64 = 86_400;

/// The `$SYS/` topics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SysConfig {
    /// Seconds between two publications of the status topics (mosquitto's `sys_interval`,
    /// whose default this is); 0: none are published.
    pub interval_secs: u64,
    /// Publish `$SYS/brokers/<node>/clients/<client id>/connected` and `.../disconnected`
    /// as clients come and go (EMQX's event messages).
    pub client_events: bool,
}

impl Default for SysConfig {
    fn default() -> Self {
        SysConfig {
            interval_secs: 10,
            client_events: true,
        }
    }
}

impl SysConfig {
    /// Checks the interval.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        require(&[(
            "sys.interval_secs",
            self.interval_secs <= MAX_INTERVAL_SECS,
            "must be at most 86400 (a day); 0 publishes none",
        )])
    }
}
