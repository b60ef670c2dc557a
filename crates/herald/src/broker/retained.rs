//! Retained messages: the last retained message of each topic, sent to new subscribers.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use mqtt_codec::ByteString;

use super::message::Message;

/// One tenant's retained messages.
#[derive(Debug, Default)]
pub struct Retained {
    map: RwLock<HashMap<ByteString, Arc<Message>>>,
}

impl Retained {
    /// Stores `message` as its topic's retained message, or deletes it when the payload is
    /// empty [MQTT-3.3.1-6], [MQTT-3.3.1-7]; then runs `and_then` with the map still locked
    /// (the store records the change in the map's order) and returns what it returns.
    pub fn set<T>(&self, message: &Arc<Message>, and_then: impl FnOnce() -> T) -> T {
        let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
        if message.payload.is_empty() {
            map.remove(&message.topic);
        } else {
            map.insert(message.topic.clone(), message.clone());
        }
        and_then()
    }

    /// The retained messages matching `filter` (not expired), in no particular order.
    ///
    /// This scans every retained topic: fine for thousands, a trie for millions (a later
    /// optimisation, measured first).
    pub fn matching(&self, filter: &str) -> Vec<Arc<Message>> {
        let now = Instant::now();
        let map = self.map.read().unwrap_or_else(|p| p.into_inner());
        if !mqtt_codec::topic::has_wildcards(filter) {
            return map
                .get(filter)
                .filter(|m| !m.expired(now))
                .cloned()
                .into_iter()
                .collect();
        }
        map.values()
            .filter(|m| mqtt_codec::topic::matches(filter, &m.topic) && !m.expired(now))
            .cloned()
            .collect()
    }

    /// How many topics have a retained message.
    pub fn len(&self) -> usize {
        self.map.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether none has.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
