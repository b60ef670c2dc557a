//! Retained messages: the last retained message of each topic, sent to new subscribers.
//!
//! Kept in topic order (a `BTreeMap`), so that a new subscriber's retained messages are
//! streamed in pages from a cursor (`page`) as its queue drains, however many are stored:
//! a subscriber to `#` over 200,000 retained messages gets every one, and never more of
//! them queued at once than its outbox holds. A page scans from the filter's literal prefix
//! (`a/b/` for `a/b/+/c`), so a narrow filter never walks the whole map.
//!
//! Herald's own `$SYS/` messages (`broker::sys`) are kept here too, so that they stream to
//! new subscribers as any retained message does, but they are not the tenant's: they count
//! in neither its retained messages nor its bytes, nor against its bounds.
//!
//! Lock order: docs/architecture.md ("Lock order").

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use mqtt_codec::ByteString;

use super::message::Message;
use super::sys::watch::is_sys;
use crate::config::Limits;

/// Topics a page looks at, at most, before it returns (the read lock is held meanwhile).
const SCAN_PER_PAGE: usize = 4096;

/// One tenant's retained messages.
#[derive(Debug, Default)]
pub struct Retained {
    map: RwLock<Map>,
}

#[derive(Debug, Default)]
struct Map {
    topics: BTreeMap<ByteString, Arc<Message>>,
    /// Topic and payload bytes of every message in `topics` but Herald's `$SYS` ones.
    bytes: usize,
    /// How many of `topics` are Herald's `$SYS` ones.
    sys: usize,
}

/// The bytes a message counts for, and whether it is one of Herald's `$SYS` ones (which
/// count for nothing).
fn weight(m: &Message) -> (usize, bool) {
    match is_sys(&m.topic) {
        true => (0, true),
        false => (m.topic.len() + m.payload.len(), false),
    }
}

/// A subscription's retained messages still to be queued for its session: the session's
/// connection takes a page each time its queue runs empty (`Broker::stream_retained`).
#[derive(Debug, Clone)]
pub struct Cursor {
    /// The filter subscribed to.
    pub filter: ByteString,
    /// The QoS granted.
    pub qos: mqtt_codec::QoS,
    /// The subscription identifier (v5).
    pub id: Option<u32>,
    /// The last topic queued (`None`: none yet).
    pub after: Option<ByteString>,
    /// When the subscription was made: messages retained later reached it live.
    pub since: Instant,
}

/// One page of a retained stream.
#[derive(Debug, Default)]
pub struct Page {
    /// Matching messages, in topic order.
    pub messages: Vec<Arc<Message>>,
    /// Where the next page starts (after this topic); `None` when the stream is done.
    pub resume_after: Option<ByteString>,
}

impl Retained {
    /// Stores `message` as its topic's retained message, or deletes it when the payload is
    /// empty [MQTT-3.3.1-6], [MQTT-3.3.1-7]; then runs `and_then` with the map still locked
    /// (the store records the change in the map's order) and returns what it returns.
    pub fn set<T>(&self, message: &Arc<Message>, and_then: impl FnOnce() -> T) -> T {
        let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
        let old = if message.payload.is_empty() {
            map.topics.remove(&message.topic)
        } else {
            let (bytes, sys) = weight(message);
            map.bytes += bytes;
            map.sys += usize::from(sys);
            map.topics.insert(message.topic.clone(), message.clone())
        };
        if let Some(old) = old {
            let (bytes, sys) = weight(&old);
            map.bytes -= bytes;
            map.sys -= usize::from(sys);
        }
        and_then()
    }

    /// Whether `message` fits the tenant's retained bounds (`limits.max_retained_messages`,
    /// `max_retained_bytes`): a deletion always does, a replacement counts what it frees.
    /// Checked before the message is routed; publishers storing at the same instant may
    /// pass together, by one message each.
    pub fn admits(&self, message: &Message, limits: &Limits) -> bool {
        self.admits_within(
            message,
            limits.max_retained_messages as u64,
            limits.max_retained_bytes as u64,
        )
    }

    /// Whether `message` fits `max_messages` and `max_bytes` (as [`Retained::admits`]).
    pub fn admits_within(&self, message: &Message, max_messages: u64, max_bytes: u64) -> bool {
        if message.payload.is_empty() || is_sys(&message.topic) {
            return true;
        }
        let map = self.map.read().unwrap_or_else(|p| p.into_inner());
        let old = map.topics.get(&message.topic);
        let count = map.topics.len() - map.sys + usize::from(old.is_none());
        let bytes = map.bytes - old.map_or(0, |m| weight(m).0) + weight(message).0;
        count as u64 <= max_messages && bytes as u64 <= max_bytes
    }

    /// The retained messages matching `filter` (not expired), in topic order.
    pub fn matching(&self, filter: &str) -> Vec<Arc<Message>> {
        let mut all = Vec::new();
        let mut after = None;
        loop {
            let page = self.page(filter, after.as_deref(), usize::MAX, None);
            all.extend(page.messages);
            match page.resume_after {
                Some(topic) => after = Some(topic),
                None => return all,
            }
        }
    }

    /// Up to `max` retained messages matching `filter`, in topic order, after the topic
    /// `after` (from the start when `None`), not expired, and (with `not_after`) received no
    /// later than that: a message retained after a subscription was made has reached it as
    /// a live publication already.
    pub fn page(
        &self,
        filter: &str,
        after: Option<&str>,
        max: usize,
        not_after: Option<Instant>,
    ) -> Page {
        let now = Instant::now();
        let fresh = |m: &Message| !m.expired(now) && not_after.is_none_or(|t| m.received_at <= t);
        let map = self.map.read().unwrap_or_else(|p| p.into_inner());
        if !mqtt_codec::topic::has_wildcards(filter) {
            let messages = match (after, map.topics.get(filter)) {
                (None, Some(m)) if fresh(m) => vec![m.clone()],
                _ => Vec::new(),
            };
            return Page {
                messages,
                resume_after: None,
            };
        }
        let prefix = literal_prefix(filter);
        let start = match after {
            Some(a) if a >= prefix => Bound::Excluded(a),
            _ => Bound::Included(prefix),
        };
        let mut page = Page::default();
        let range = map
            .topics
            .range::<str, _>((start, Bound::Unbounded))
            .take_while(|(topic, _)| topic.starts_with(prefix));
        for (scanned, (topic, m)) in range.enumerate() {
            if mqtt_codec::topic::matches(filter, topic) && fresh(m) {
                page.messages.push(m.clone());
            }
            if page.messages.len() >= max || scanned + 1 >= SCAN_PER_PAGE {
                page.resume_after = Some(topic.clone());
                return page;
            }
        }
        page
    }

    /// The retained message of exactly `topic`, if any (expired or not).
    pub fn get(&self, topic: &str) -> Option<Arc<Message>> {
        let map = self.map.read().unwrap_or_else(|p| p.into_inner());
        map.topics.get(topic).cloned()
    }

    /// How many topics have a retained message (Herald's `$SYS` ones left out).
    pub fn len(&self) -> usize {
        let map = self.map.read().unwrap_or_else(|p| p.into_inner());
        map.topics.len() - map.sys
    }

    /// Topic and payload bytes of the retained messages (Herald's `$SYS` ones left out).
    pub fn bytes(&self) -> usize {
        self.map.read().unwrap_or_else(|p| p.into_inner()).bytes
    }

    /// Whether none has.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The part of a wildcard filter before its first wildcard level: every topic it matches
/// starts with it (`a/b/` for `a/b/+/c`, `` for `#`; `a` for `a/#`, which matches `a`
/// itself, its parent level [MQTT-4.7.1-2]).
fn literal_prefix(filter: &str) -> &str {
    let mut end = 0;
    for level in filter.split('/') {
        match level {
            "+" => return &filter[..end],
            "#" => return &filter[..end.saturating_sub(1)],
            _ => end += level.len() + 1,
        }
    }
    filter
}

#[cfg(test)]
mod tests {
    use super::*;
    use mqtt_codec::QoS;

    fn message(topic: &str) -> Arc<Message> {
        Message::new(
            topic.into(),
            bytes::Bytes::from_static(b"v"),
            QoS::AtMostOnce,
            true,
            Default::default(),
            0,
        )
    }

    #[test]
    fn literal_prefixes() {
        assert_eq!(literal_prefix("a/b/+/c"), "a/b/");
        assert_eq!(literal_prefix("#"), "");
        assert_eq!(literal_prefix("+/x"), "");
        assert_eq!(literal_prefix("a/#"), "a");
    }

    #[test]
    fn pages_cover_every_match_once_in_order() {
        let r = Retained::default();
        for i in 0..10_000 {
            r.set(&message(&format!("t/{i:05}")), || ());
            r.set(&message(&format!("u/{i:05}")), || ());
        }
        for (filter, expected) in [("#", 20_000), ("t/#", 10_000), ("+/00042", 2)] {
            let mut seen = Vec::new();
            let mut after: Option<ByteString> = None;
            loop {
                let page = r.page(filter, after.as_deref(), 64, None);
                assert!(page.messages.len() <= 64);
                seen.extend(page.messages.iter().map(|m| m.topic.to_string()));
                match page.resume_after {
                    Some(t) => after = Some(t),
                    None => break,
                }
            }
            assert_eq!(seen.len(), expected, "{filter}");
            assert!(
                seen.windows(2).all(|w| w[0] < w[1]),
                "{filter}: in order, once"
            );
        }
    }

    #[test]
    fn bounds_count_messages_and_bytes_and_replacements_free_their_share() {
        let limits = Limits {
            max_retained_messages: 2,
            max_retained_bytes: 1024 * 1024 * 1024,
            ..Limits::default()
        };
        let r = Retained::default();
        r.set(&message("a"), || ());
        r.set(&message("b"), || ());
        assert!(!r.admits(&message("c"), &limits), "a third topic");
        assert!(r.admits(&message("a"), &limits), "a replacement");
        r.set(
            &Message::new(
                "a".into(),
                bytes::Bytes::new(),
                QoS::AtMostOnce,
                true,
                Default::default(),
                0,
            ),
            || (),
        );
        assert!(r.admits(&message("c"), &limits), "after a deletion");
        assert_eq!(r.bytes(), 2, "b and its one-byte payload");
    }

    #[test]
    fn heralds_sys_messages_are_not_the_tenants() {
        let limits = Limits {
            max_retained_messages: 1,
            ..Limits::default()
        };
        let r = Retained::default();
        r.set(&message("$SYS/broker/uptime"), || ());
        r.set(&message("$SYS/broker/version"), || ());
        assert_eq!((r.len(), r.bytes()), (0, 0));
        assert!(r.admits(&message("a"), &limits), "$SYS takes no room");
        r.set(&message("a"), || ());
        assert!(!r.admits(&message("b"), &limits));
        assert!(r.admits(&message("$SYS/broker/load"), &limits));
        assert_eq!(r.matching("$SYS/#").len(), 2, "streamed as any other");
        assert_eq!(r.matching("#").len(), 1, "not to `#`");
        let gone = Message::new(
            "$SYS/broker/uptime".into(),
            bytes::Bytes::new(),
            QoS::AtMostOnce,
            true,
            Default::default(),
            0,
        );
        r.set(&gone, || ());
        assert!(r.get("$SYS/broker/uptime").is_none());
        assert_eq!((r.len(), r.bytes()), (1, 2));
    }
}
