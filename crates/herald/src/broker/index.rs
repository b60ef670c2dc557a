//! The subscription index: which sessions want a topic.
//!
//! Filters without wildcards live in a hash map keyed by topic; filters with `+` or `#` in a
//! trie of levels. Each filter's subscribers are an `Arc<FilterEntry>` snapshot: a lookup
//! takes the read lock only long enough to clone the matching `Arc`s, and the fan-out then
//! runs without any lock. Changes use `Arc::make_mut`, which edits in place unless a lookup
//! is holding that snapshot at that moment (then it copies once).
//!
//! Lock order: docs/architecture.md ("Lock order").

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use mqtt_codec::{ByteString, SubscriptionOptions};

use super::session::{Session, SessionId};
use super::sys::watch::{is_sys, may_match_events};

/// One session's subscription to a filter.
#[derive(Debug, Clone)]
pub struct Subscriber {
    /// The session.
    pub session: Arc<Session>,
    /// Options granted.
    pub options: SubscriptionOptions,
    /// Subscription identifier (v5).
    pub id: Option<u32>,
}

/// A shared subscription group on one filter: each message goes to one member.
#[derive(Debug, Clone)]
pub struct SharedGroup {
    /// The share name.
    pub name: ByteString,
    /// Members, in subscription order.
    pub members: Vec<Subscriber>,
    /// Round-robin position, shared by every snapshot of the group.
    cursor: Arc<AtomicUsize>,
}

impl SharedGroup {
    /// The member to try first for the next message.
    pub fn next_start(&self) -> usize {
        self.cursor.fetch_add(1, Ordering::Relaxed)
    }
}

/// Everyone subscribed to one filter.
#[derive(Debug, Clone, Default)]
pub struct FilterEntry {
    /// Ordinary subscriptions.
    pub direct: Vec<Subscriber>,
    /// Shared subscription groups.
    pub shared: SharedGroups,
}

/// A filter's shared subscription groups: a null pointer for the (usual) filter without any,
/// so every filter entry is 16 bytes smaller. Reads go through the slice it derefs to.
#[derive(Debug, Clone, Default)]
// A boxed Vec on purpose: an 8-byte pointer in every filter entry instead of a 24-byte Vec.
#[allow(clippy::box_collection)]
pub struct SharedGroups(Option<Box<Vec<SharedGroup>>>);

impl std::ops::Deref for SharedGroups {
    type Target = [SharedGroup];

    fn deref(&self) -> &[SharedGroup] {
        self.0.as_deref().map_or(&[], Vec::as_slice)
    }
}

impl SharedGroups {
    /// The members of the group `name`, created (empty) if it does not exist.
    fn members_of(&mut self, name: &str) -> &mut Vec<Subscriber> {
        let groups = self.0.get_or_insert_with(Default::default);
        let pos = match groups.iter().position(|g| &*g.name == name) {
            Some(pos) => pos,
            None => {
                groups.push(SharedGroup {
                    name: name.into(),
                    members: Vec::new(),
                    cursor: Arc::new(AtomicUsize::new(0)),
                });
                groups.len() - 1
            }
        };
        &mut groups[pos].members
    }

    fn get_mut(&mut self, pos: usize) -> Option<&mut SharedGroup> {
        self.0.as_mut()?.get_mut(pos)
    }

    fn remove(&mut self, pos: usize) {
        if let Some(groups) = self.0.as_mut() {
            groups.remove(pos);
            if groups.is_empty() {
                self.0 = None;
            }
        }
    }
}

impl FilterEntry {
    fn is_empty(&self) -> bool {
        self.direct.is_empty() && self.shared.is_empty()
    }

    /// Whether the direct subscribers (`group` None) or the group `group` have no member.
    fn lacks(&self, group: Option<&str>) -> bool {
        match group {
            None => self.direct.is_empty(),
            Some(name) => !self.shared.iter().any(|g| &*g.name == name),
        }
    }

    /// Adds or replaces `sub`; returns whether the session was already subscribed.
    fn insert(&mut self, group: Option<&str>, sub: Subscriber) -> bool {
        let list = match group {
            None => &mut self.direct,
            Some(name) => self.shared.members_of(name),
        };
        match list.iter_mut().find(|s| s.session.id == sub.session.id) {
            Some(existing) => {
                *existing = sub;
                true
            }
            None => {
                // Most filters have one subscriber: grow one slot at a time while small (a
                // `Vec`'s first push otherwise allocates four), by half beyond.
                if list.len() == list.capacity() {
                    list.reserve_exact(1.max(list.len() / 2));
                }
                list.push(sub);
                false
            }
        }
    }

    /// Removes the session's subscription; returns whether there was one.
    fn remove(&mut self, group: Option<&str>, session: SessionId) -> bool {
        match group {
            None => remove_from(&mut self.direct, session),
            Some(name) => {
                let Some(pos) = self.shared.iter().position(|g| &*g.name == name) else {
                    return false;
                };
                let Some(group) = self.shared.get_mut(pos) else {
                    return false;
                };
                let removed = remove_from(&mut group.members, session);
                if group.members.is_empty() {
                    self.shared.remove(pos);
                }
                removed
            }
        }
    }
}

fn remove_from(list: &mut Vec<Subscriber>, session: SessionId) -> bool {
    match list.iter().position(|s| s.session.id == session) {
        Some(pos) => {
            list.remove(pos);
            true
        }
        None => false,
    }
}

#[derive(Debug, Default)]
struct Node {
    children: HashMap<Box<str>, Node>,
    plus: Option<Box<Node>>,
    /// Filters ending at this node.
    here: Option<Arc<FilterEntry>>,
    /// Filters ending with `#` after this node.
    hash: Option<Arc<FilterEntry>>,
}

impl Node {
    fn is_empty(&self) -> bool {
        self.children.is_empty()
            && self.plus.is_none()
            && self.here.is_none()
            && self.hash.is_none()
    }

    /// The slot for the filter whose remaining levels are `levels`, created on the way.
    fn slot(&mut self, levels: &[&str]) -> &mut Option<Arc<FilterEntry>> {
        match levels {
            [] => &mut self.here,
            ["#"] => &mut self.hash,
            ["+", rest @ ..] => self.plus.get_or_insert_with(Box::default).slot(rest),
            [level, rest @ ..] => self.children.entry((*level).into()).or_default().slot(rest),
        }
    }

    /// Appends every filter under this node (whose levels so far are `path`) to `out`.
    fn filters(&self, path: &mut Vec<String>, out: &mut Vec<String>) {
        let with = |last: &str, path: &[String]| {
            let mut levels: Vec<&str> = path.iter().map(String::as_str).collect();
            levels.push(last);
            levels.join("/")
        };
        if self.here.is_some() {
            out.push(path.join("/"));
        }
        if self.hash.is_some() {
            out.push(with("#", path));
        }
        if let Some(plus) = &self.plus {
            path.push("+".into());
            plus.filters(path, out);
            path.pop();
        }
        for (level, child) in &self.children {
            path.push(level.to_string());
            child.filters(path, out);
            path.pop();
        }
    }

    /// The entry of the filter whose remaining levels are `levels`, if any.
    fn get(&self, levels: &[&str]) -> Option<&Arc<FilterEntry>> {
        match levels {
            [] => self.here.as_ref(),
            ["#"] => self.hash.as_ref(),
            ["+", rest @ ..] => self.plus.as_ref()?.get(rest),
            [level, rest @ ..] => self.children.get(*level)?.get(rest),
        }
    }

    /// Applies `f` to the filter's entry if it exists, then prunes what became empty.
    /// Returns `f`'s result.
    fn edit<R>(&mut self, levels: &[&str], f: impl FnOnce(&mut FilterEntry) -> R) -> Option<R> {
        match levels {
            [] => edit_slot(&mut self.here, f),
            ["#"] => edit_slot(&mut self.hash, f),
            ["+", rest @ ..] => {
                let child = self.plus.as_mut()?;
                let r = child.edit(rest, f);
                if child.is_empty() {
                    self.plus = None;
                }
                r
            }
            [level, rest @ ..] => {
                let child = self.children.get_mut(*level)?;
                let r = child.edit(rest, f);
                if child.is_empty() {
                    self.children.remove(*level);
                }
                r
            }
        }
    }

    fn collect(
        &self,
        levels: &[&str],
        depth: usize,
        dollar: bool,
        out: &mut Vec<Arc<FilterEntry>>,
    ) {
        let wildcard_ok = !(depth == 0 && dollar);
        if let (Some(e), true) = (&self.hash, wildcard_ok) {
            out.push(e.clone());
        }
        let Some(level) = levels.get(depth) else {
            if let Some(e) = &self.here {
                out.push(e.clone());
            }
            return;
        };
        if let Some(child) = self.children.get(*level) {
            child.collect(levels, depth + 1, dollar, out);
        }
        if let (Some(plus), true) = (&self.plus, wildcard_ok) {
            plus.collect(levels, depth + 1, dollar, out);
        }
    }
}

fn edit_slot<R>(
    slot: &mut Option<Arc<FilterEntry>>,
    f: impl FnOnce(&mut FilterEntry) -> R,
) -> Option<R> {
    let entry = slot.as_mut()?;
    let r = f(Arc::make_mut(entry));
    if entry.is_empty() {
        *slot = None;
    }
    Some(r)
}

#[derive(Debug, Default)]
struct Inner {
    exact: HashMap<Box<str>, Arc<FilterEntry>>,
    trie: Node,
}

impl Inner {
    /// The entry of exactly `filter`, if it has subscribers.
    fn entry(&self, filter: &str) -> Option<&Arc<FilterEntry>> {
        if mqtt_codec::topic::has_wildcards(filter) {
            let levels: Vec<&str> = filter.split('/').collect();
            self.trie.get(&levels)
        } else {
            self.exact.get(filter)
        }
    }
}

/// The index of one tenant.
#[derive(Debug, Default)]
pub struct SubscriptionIndex {
    inner: RwLock<Inner>,
    /// Subscriptions held (for the tenant's `max_subscriptions`).
    count: AtomicUsize,
    /// Subscriptions to `$SYS` filters (`broker::sys` publishes the tenant's view only
    /// while there are some), and those of them that can match a client event.
    sys: AtomicUsize,
    events: AtomicUsize,
}

impl SubscriptionIndex {
    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Subscribes `sub` to `filter` (without any `$share/` prefix; `group` names the share).
    /// Returns whether the session already had this subscription (it is replaced).
    pub fn subscribe(&self, filter: &str, group: Option<&str>, sub: Subscriber) -> bool {
        self.subscribe_telling(filter, group, sub, |_, _| ())
    }

    /// `subscribe`, calling `first(filter, group)` under the index's lock when the filter's
    /// direct subscribers (`group` None) or its group `group` had no member before (other
    /// nodes are told, `broker::peers`, in the order it happened).
    pub fn subscribe_telling(
        &self,
        filter: &str,
        group: Option<&str>,
        sub: Subscriber,
        first: impl FnOnce(&str, Option<&str>),
    ) -> bool {
        let mut inner = self.write();
        let entry = if mqtt_codec::topic::has_wildcards(filter) {
            let levels: Vec<&str> = filter.split('/').collect();
            Arc::make_mut(
                inner
                    .trie
                    .slot(&levels)
                    .get_or_insert_with(Default::default),
            )
        } else {
            Arc::make_mut(inner.exact.entry(Box::from(filter)).or_default())
        };
        let new = entry.lacks(group);
        let existed = entry.insert(group, sub);
        if new {
            first(filter, group);
        }
        drop(inner);
        if !existed {
            self.count.fetch_add(1, Ordering::Relaxed);
            self.count_sys(filter, true);
        }
        existed
    }

    /// Counts a subscription to `filter` added or removed in `sys` and `events`, if it is
    /// to a `$SYS` filter.
    fn count_sys(&self, filter: &str, added: bool) {
        if !is_sys(filter) {
            return;
        }
        let count = |c: &AtomicUsize| match added {
            true => c.fetch_add(1, Ordering::Relaxed),
            false => c.fetch_sub(1, Ordering::Relaxed),
        };
        count(&self.sys);
        if may_match_events(filter) {
            count(&self.events);
        }
    }

    /// Subscriptions to `$SYS` filters held.
    pub fn sys_subscriptions(&self) -> usize {
        self.sys.load(Ordering::Relaxed)
    }

    /// Subscriptions held to filters that can match a client event
    /// (`$SYS/brokers/<node>/clients/...`).
    pub fn event_subscriptions(&self) -> usize {
        self.events.load(Ordering::Relaxed)
    }

    /// Every filter with a subscriber, once for its direct subscribers (group `None`) and
    /// once for each of its shared groups.
    pub fn filters(&self) -> Vec<(String, Option<String>)> {
        let inner = self.read();
        let mut filters: Vec<String> = inner.exact.keys().map(|k| k.to_string()).collect();
        inner.trie.filters(&mut Vec::new(), &mut filters);
        let mut out = Vec::new();
        for filter in filters {
            let Some(entry) = inner.entry(&filter) else {
                continue;
            };
            if !entry.direct.is_empty() {
                out.push((filter.clone(), None));
            }
            for g in entry.shared.iter() {
                out.push((filter.clone(), Some(g.name.to_string())));
            }
        }
        out
    }

    /// The entry of exactly `filter` (no `$share/` prefix), if it has subscribers.
    pub fn entry(&self, filter: &str) -> Option<Arc<FilterEntry>> {
        self.read().entry(filter).cloned()
    }

    /// Subscriptions held.
    pub fn len(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// Whether no subscription is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Members of shared group `group` on `filter`.
    pub fn group_size(&self, filter: &str, group: &str) -> usize {
        let inner = self.read();
        inner.entry(filter).map_or(0, |e| {
            e.shared
                .iter()
                .find(|g| &*g.name == group)
                .map_or(0, |g| g.members.len())
        })
    }

    /// Removes the session's subscription to `filter`; returns whether it existed.
    pub fn unsubscribe(&self, filter: &str, group: Option<&str>, session: SessionId) -> bool {
        self.unsubscribe_telling(filter, group, session, |_, _| ())
    }

    /// `unsubscribe`, calling `last(filter, group)` under the index's lock when the filter's
    /// direct subscribers (`group` None) or its group `group` lost their last member.
    pub fn unsubscribe_telling(
        &self,
        filter: &str,
        group: Option<&str>,
        session: SessionId,
        last: impl FnOnce(&str, Option<&str>),
    ) -> bool {
        let removed = self.remove(filter, group, session, last);
        if removed {
            self.count.fetch_sub(1, Ordering::Relaxed);
            self.count_sys(filter, false);
        }
        removed
    }

    fn remove(
        &self,
        filter: &str,
        group: Option<&str>,
        session: SessionId,
        last: impl FnOnce(&str, Option<&str>),
    ) -> bool {
        let mut inner = self.write();
        let mut emptied = false;
        let removed = if mqtt_codec::topic::has_wildcards(filter) {
            let levels: Vec<&str> = filter.split('/').collect();
            inner
                .trie
                .edit(&levels, |e| {
                    let removed = e.remove(group, session);
                    emptied = e.lacks(group);
                    removed
                })
                .unwrap_or(false)
        } else {
            let Some(entry) = inner.exact.get_mut(filter) else {
                return false;
            };
            let removed = Arc::make_mut(entry).remove(group, session);
            emptied = entry.lacks(group);
            if entry.is_empty() {
                inner.exact.remove(filter);
            }
            removed
        };
        if removed && emptied {
            last(filter, group);
        }
        removed
    }

    /// Appends to `out` the entry of every filter that matches `topic`.
    pub fn matches(&self, topic: &str, out: &mut Vec<Arc<FilterEntry>>) {
        let inner = self.read();
        if let Some(e) = inner.exact.get(topic) {
            out.push(e.clone());
        }
        if inner.trie.is_empty() {
            return;
        }
        let levels: Vec<&str> = topic.split('/').collect();
        inner.trie.collect(&levels, 0, topic.starts_with('$'), out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mqtt_codec::{ProtocolVersion, QoS};

    fn sub(id: SessionId) -> Subscriber {
        Subscriber {
            session: Session::new(id, format!("c{id}").into(), ProtocolVersion::V5),
            options: SubscriptionOptions::qos(QoS::AtLeastOnce),
            id: None,
        }
    }

    fn matched(index: &SubscriptionIndex, topic: &str) -> Vec<SessionId> {
        let mut out = Vec::new();
        index.matches(topic, &mut out);
        let mut ids: Vec<SessionId> = out
            .iter()
            .flat_map(|e| {
                e.direct
                    .iter()
                    .chain(e.shared.iter().flat_map(|g| g.members.iter()))
            })
            .map(|s| s.session.id)
            .collect();
        ids.sort();
        ids
    }

    #[test]
    fn exact_and_wildcards() {
        let index = SubscriptionIndex::default();
        for (id, filter) in [
            (1, "a/b"),
            (2, "a/+"),
            (3, "a/#"),
            (4, "#"),
            (5, "+/b"),
            (6, "a/b/c"),
            (7, "$SYS/#"),
        ] {
            assert!(!index.subscribe(filter, None, sub(id)));
        }
        assert_eq!(matched(&index, "a/b"), vec![1, 2, 3, 4, 5]);
        assert_eq!(
            matched(&index, "a"),
            vec![3, 4],
            "# matches the parent level"
        );
        assert_eq!(matched(&index, "a/b/c"), vec![3, 4, 6]);
        assert_eq!(matched(&index, "x/b"), vec![4, 5]);
        assert_eq!(
            matched(&index, "$SYS/x"),
            vec![7],
            "root wildcards skip $ topics"
        );
    }

    #[test]
    fn resubscribe_replaces_and_unsubscribe_prunes() {
        let index = SubscriptionIndex::default();
        let s = sub(1);
        assert!(!index.subscribe("a/+/c", None, s.clone()));
        assert!(
            index.subscribe("a/+/c", None, s.clone()),
            "second subscribe replaces"
        );
        assert_eq!(matched(&index, "a/x/c"), vec![1]);
        assert!(index.unsubscribe("a/+/c", None, 1));
        assert!(!index.unsubscribe("a/+/c", None, 1));
        assert!(index.read().trie.is_empty(), "empty nodes are pruned");
        assert!(!index.subscribe("t", None, s.clone()));
        assert!(index.unsubscribe("t", None, 1));
        assert!(index.read().exact.is_empty());
    }

    #[test]
    fn shared_groups_are_separate_from_direct() {
        let index = SubscriptionIndex::default();
        index.subscribe("t/#", Some("g"), sub(1));
        index.subscribe("t/#", Some("g"), sub(2));
        index.subscribe("t/#", Some("h"), sub(3));
        index.subscribe("t/#", None, sub(4));
        let mut out = Vec::new();
        index.matches("t/x", &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].direct.len(), 1);
        assert_eq!(out[0].shared.len(), 2);
        assert_eq!(out[0].shared[0].members.len(), 2);
        assert!(index.unsubscribe("t/#", Some("h"), 3));
        assert!(!index.unsubscribe("t/#", Some("g"), 3));
        let mut out = Vec::new();
        index.matches("t/x", &mut out);
        assert_eq!(out[0].shared.len(), 1);
    }

    #[test]
    fn snapshots_survive_changes() {
        let index = SubscriptionIndex::default();
        index.subscribe("t", None, sub(1));
        let mut held = Vec::new();
        index.matches("t", &mut held);
        index.subscribe("t", None, sub(2));
        assert_eq!(
            held[0].direct.len(),
            1,
            "a router's snapshot is not changed under it"
        );
        assert_eq!(matched(&index, "t"), vec![1, 2]);
    }
}
