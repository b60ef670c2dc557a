//! The transport-agnostic core: tenants, sessions and their lifecycle, the subscription
//! index, routing, retained messages, wills, counters. One file per concept.
//!
//! Lock order: written once, in docs/architecture.md ("Lock order").

pub(crate) mod durable;
pub(crate) mod flow;
pub mod hooks;
pub mod index;
pub mod message;
pub mod moving;
pub mod peers;
pub mod persist;
pub mod quota;
pub mod registry;
pub(crate) mod restore;
pub mod retained;
pub mod router;
pub mod session;
pub mod stats;
pub mod stored;
mod streams;
pub mod sys;
pub mod tenants;
pub mod topics;
mod wills;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use mqtt_codec::{ByteString, ProtocolVersion};

use crate::config::Config;
use crate::store::Op;
use crate::store::journal::Ticket;
use durable::Durable;
use index::{Subscriber, SubscriptionIndex};
use message::Message;
use persist::Persistence;
use registry::Registry;
use retained::Retained;
use session::{Session, SubscriptionRecord};
use stats::Stats;

/// A tenant: its own sessions, subscriptions and retained messages, so that tenant A's
/// `chat/1` and tenant B's `chat/1` never meet, and the same client id in two tenants is two
/// sessions. A client belongs to the tenant authentication assigns it, else to the default
/// one.
#[derive(Debug, Default)]
pub struct Tenant {
    /// The tenant's name ("" for the default tenant).
    pub name: ByteString,
    /// Sessions by client id.
    pub sessions: Registry,
    /// Who subscribes to what.
    pub index: SubscriptionIndex,
    /// Retained messages.
    pub retained: Retained,
    /// Its own quotas and rates (`[tenants.defaults]` for each one left out), set by the
    /// tenants file or the admin API; replaced whole.
    own: arc_swap::ArcSwap<crate::config::TenantLimits>,
    /// Whether the tenants file or the admin API created it (`tenants.require_known`).
    known: AtomicBool,
    /// What it uses of its quotas, and its breaches.
    pub usage: quota::Usage,
    /// Its rate limiters.
    pub rates: quota::TenantRates,
}

impl Tenant {
    /// An empty tenant called `name`.
    pub fn named(name: &str) -> Tenant {
        Tenant {
            name: name.into(),
            ..Tenant::default()
        }
    }

    /// Its own settings (each one left out is `[tenants.defaults]`'s).
    pub fn own(&self) -> arc_swap::Guard<Arc<crate::config::TenantLimits>> {
        self.own.load()
    }

    /// Replaces its own settings, and marks it known (created by the tenants file or the
    /// admin API) or not.
    pub fn set_own(&self, limits: crate::config::TenantLimits, known: bool) {
        self.own.store(Arc::new(limits));
        self.known.store(known, Ordering::Release);
        quota::settings_changed();
    }

    /// Whether the tenants file or the admin API created it.
    pub fn known(&self) -> bool {
        self.known.load(Ordering::Acquire)
    }

    /// Its settings in force: its own over `defaults`.
    pub fn limits(&self, defaults: &crate::config::TenantLimits) -> crate::config::TenantLimits {
        self.own().over(defaults)
    }
}

/// The broker: configuration, tenants, counters.
#[derive(Debug)]
pub struct Broker {
    /// The configuration it runs with: a snapshot replaced whole by a reload (read without
    /// a lock: `config()`).
    config: arc_swap::ArcSwap<Config>,
    /// The tenant of every client authentication assigns no other (named "").
    pub default_tenant: Arc<Tenant>,
    /// The other tenants, by name: created when a client, a stored record or the admin API
    /// first names one. Read at CONNECT and by the API, never per message.
    tenants: std::sync::RwLock<std::collections::HashMap<ByteString, Arc<Tenant>>>,
    /// Counters.
    pub stats: Stats,
    /// The busiest topics, sampled (`topics`).
    pub topics: topics::Busiest,
    /// Connections accepted at once, after the file-descriptor limit is taken into account.
    pub max_connections: std::sync::atomic::AtomicUsize,
    next_session: AtomicU64,
    /// The broker's clock for connection deadlines (milliseconds since this instant).
    epoch: std::time::Instant,
    /// Set when the server shuts down; connections see it at their next wake-up.
    draining: AtomicBool,
    shutting_down: AtomicBool,
    /// Durability: the store, or nothing with `store.in_memory` (every call a no-op).
    pub persist: Persistence,
    /// What plugs in at the hook points (`broker::hooks`): nothing by default.
    pub hooks: hooks::Hooks,
    /// Where each tenant's own settings come from: the tenants file, the admin API.
    tenant_settings: tenants::Settings,
    /// The other nodes, once joined (`peers`).
    peers: std::sync::OnceLock<Arc<dyn peers::Peers>>,
    /// What the `$SYS/` topics keep between publications (`sys`).
    pub sys: sys::Sys,
}

/// What publishing one message did.
#[derive(Debug, Default)]
pub struct Published {
    /// What routing it did.
    pub routed: router::Routed,
    /// The store ticket its acknowledgement waits for.
    pub ticket: Ticket,
    /// Clustered, the confirmation it waits for too: a QoS 1/2 message kept where the
    /// other nodes deliver it from (`Peers::forward`; 0: none).
    pub confirm: u64,
    /// Why it must not be acknowledged as accepted: a QoS 1/2 copy could not be queued, or
    /// a retained message was past the tenant's retained bounds (then nothing was routed).
    pub refused: Option<stats::RefuseReason>,
}

/// The result of attaching a connection to a session.
#[derive(Debug)]
pub struct Attached {
    /// The session.
    pub session: Arc<Session>,
    /// The attachment's generation: when the session's differs, this connection was replaced.
    pub generation: u64,
    /// Whether an existing session was resumed (CONNACK session present).
    pub present: bool,
    /// The store ticket of the session's record.
    pub ticket: Ticket,
}

impl Broker {
    /// A broker with this configuration; `max_connections` is the effective limit.
    pub fn new(config: Config, max_connections: usize) -> Arc<Broker> {
        Broker::with_store(config, max_connections, None)
    }

    /// A broker that stores its state in `durable` (restore it with `restore::restore`
    /// before accepting connections).
    pub fn with_store(
        config: Config,
        max_connections: usize,
        durable: Option<Durable>,
    ) -> Arc<Broker> {
        Broker::with_hooks(config, max_connections, durable, hooks::Hooks::default())
    }

    /// A broker that stores its state in `durable` and runs `hooks` at the hook points.
    pub fn with_hooks(
        config: Config,
        max_connections: usize,
        durable: Option<Durable>,
        hooks: hooks::Hooks,
    ) -> Arc<Broker> {
        let first_id = durable.as_ref().map_or(1, Durable::first_session_id);
        let persist = durable.map_or_else(Persistence::memory, Persistence::disk);
        Arc::new(Broker {
            config: arc_swap::ArcSwap::from_pointee(config),
            default_tenant: Arc::new(Tenant::default()),
            tenants: std::sync::RwLock::default(),
            stats: Stats::default(),
            topics: topics::Busiest::default(),
            max_connections: std::sync::atomic::AtomicUsize::new(max_connections),
            next_session: AtomicU64::new(first_id),
            epoch: std::time::Instant::now(),
            shutting_down: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            persist,
            hooks,
            tenant_settings: tenants::Settings::default(),
            peers: std::sync::OnceLock::new(),
            sys: sys::Sys::default(),
        })
    }

    /// The configuration in force (a snapshot: hold it briefly, not across an await).
    pub fn config(&self) -> arc_swap::Guard<Arc<Config>> {
        self.config.load()
    }

    /// Puts `config` in force for everything that reads it from now on.
    pub fn set_config(&self, config: Config) {
        self.config.store(Arc::new(config));
        quota::settings_changed();
    }

    /// The tenant named `name` ("" is the default tenant), created if it does not exist.
    pub fn tenant(&self, name: &str) -> Arc<Tenant> {
        if name.is_empty() {
            return self.default_tenant.clone();
        }
        if let Some(t) = self.find_tenant(name) {
            return t;
        }
        let mut tenants = self.tenants.write().unwrap_or_else(|e| e.into_inner());
        tenants
            .entry(ByteString::from(name))
            .or_insert_with(|| Arc::new(Tenant::named(name)))
            .clone()
    }

    /// The tenant named `name`, if it exists.
    pub fn find_tenant(&self, name: &str) -> Option<Arc<Tenant>> {
        if name.is_empty() {
            return Some(self.default_tenant.clone());
        }
        let tenants = self.tenants.read().unwrap_or_else(|e| e.into_inner());
        tenants.get(name).cloned()
    }

    /// Every tenant, the default one first, then by name.
    pub fn tenants(&self) -> Vec<Arc<Tenant>> {
        let mut out: Vec<Arc<Tenant>> = {
            let tenants = self.tenants.read().unwrap_or_else(|e| e.into_inner());
            tenants.values().cloned().collect()
        };
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out.insert(0, self.default_tenant.clone());
        out
    }

    /// Calls `f` for every session of every tenant.
    pub fn for_each_session(&self, mut f: impl FnMut(&Arc<Tenant>, &Arc<Session>)) {
        for tenant in self.tenants() {
            tenant.sessions.for_each(|session| f(&tenant, session));
        }
    }

    /// A new session id (unique across restarts when there is a store).
    pub fn next_session_id(&self) -> u64 {
        self.next_session.fetch_add(1, Ordering::Relaxed)
    }

    /// Milliseconds on the broker's clock at `at`.
    pub fn clock_ms(&self, at: std::time::Instant) -> u64 {
        at.saturating_duration_since(self.epoch).as_millis() as u64
    }

    /// Wakes every connection whose deadline has passed (keep-alive, slow consumer). One
    /// periodic sweep replaces a timer per connection: an idle connection's task holds no
    /// timer, and the sweep over a shard is a cheap scan of atomics.
    pub fn sweep(&self) {
        let now = self.clock_ms(std::time::Instant::now());
        self.for_each_session(|_, session| {
            if session.deadline() <= now {
                session.wake();
            }
        });
    }

    /// Starts shutting down: every connection is woken and closes (v5: DISCONNECT 0x8B).
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::Release);
        self.for_each_session(|_, session| session.wake());
    }

    /// Whether the server is shutting down.
    pub fn shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }

    /// Marks the node as draining (it stops accepting; its clients are being let go).
    pub fn begin_drain(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// Whether the node is draining or stopping.
    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Acquire) || self.shutting_down()
    }

    /// Publishes `message` in `tenant`: keeps it if retained, routes it.
    pub fn publish(&self, tenant: &Tenant, message: &Arc<Message>) -> router::Routed {
        self.publish_with(tenant, message, |_| None).routed
    }

    /// Publishes a message that arrived from elsewhere than an MQTT client of this node (the
    /// HTTP API today, other nodes next), with `extra` written in the same store write as it
    /// (see `publish_with`).
    pub fn inject(
        &self,
        tenant: &Tenant,
        message: &Arc<Message>,
        extra: impl FnOnce(&router::Routed) -> Option<Op>,
    ) -> Published {
        self.publish_with(tenant, message, extra)
    }

    /// Publishes `message` in `tenant`, and with a store, writes it (once, with the stored
    /// sessions it was queued for), its retained copy and `extra` (the publisher's QoS 2
    /// packet id; the HTTP API's idempotency record, made from what routing did) as one
    /// unit. The ticket says when all of it is on disk.
    pub fn publish_with(
        &self,
        tenant: &Tenant,
        message: &Arc<Message>,
        extra: impl FnOnce(&router::Routed) -> Option<Op>,
    ) -> Published {
        // Clustered, shared groups get their messages through the other nodes' link.
        let target = match self.peers.get() {
            Some(_) => router::Target::Direct,
            None => router::Target::All,
        };
        self.publish_inner(tenant, message, extra, target, peers::Source::Here)
    }

    /// `publish_with` to `target`, for a publication from `from`: one made here goes to
    /// the other nodes too, and its retained copy to the cluster's retained store.
    fn publish_inner(
        &self,
        tenant: &Tenant,
        message: &Arc<Message>,
        extra: impl FnOnce(&router::Routed) -> Option<Op>,
        target: router::Target<'_>,
        from: peers::Source,
    ) -> Published {
        let n = self.stats.published.fetch_add(1, Ordering::Relaxed);
        self.topics.note(n, &tenant.name, &message.topic);
        tenant
            .usage
            .note_published(message.topic.len() + message.payload.len());
        let config = self.config();
        let retain = message.retain && config.session.retain_available && from.keeps_retained();
        let peers = self.peers.get().filter(|_| from == peers::Source::Here);
        if message.qos != mqtt_codec::QoS::AtMostOnce && peers.is_some_and(|p| p.backlogged()) {
            // Refused before anything is routed: the other nodes could not be promised it.
            self.stats.refuse(stats::RefuseReason::ClusterBacklog);
            return Published {
                refused: Some(stats::RefuseReason::ClusterBacklog),
                ..Published::default()
            };
        }
        if retain && let Err(breach) = quota::retained_fits(tenant, message, &config) {
            self.stats.refuse(stats::RefuseReason::RetainedLimit);
            tenant.usage.breach(breach);
            return Published {
                refused: Some(stats::RefuseReason::RetainedLimit),
                ..Published::default()
            };
        }
        // With a store, a message that could not be recorded is refused before anything
        // is routed; a QoS 1/2 one is numbered, so that a subscriber that finishes its
        // delivery before the publisher has written the record can name it.
        let prepared = match self.persist.prepare(message, retain) {
            Ok(prepared) => prepared,
            Err(reason) => {
                self.stats.refuse(reason);
                return Published {
                    refused: Some(reason),
                    ..Published::default()
                };
            }
        };
        if message.qos != mqtt_codec::QoS::AtMostOnce
            && let Some(peers) = peers
        {
            peers.identify(message);
        }
        let persist = &self.persist;
        let mut routed = router::route(
            tenant,
            message,
            prepared.stored(),
            &config.limits,
            &quota::Offline::new(tenant, &config.tenants.defaults),
            &self.stats,
            target,
        );
        // Before the recipients are taken: `extra` may depend on whether any was stored.
        let extra = extra(&routed);
        let recipients = std::mem::take(&mut routed.recipients);
        let (mut ops, mut unrecorded) = match persist.message_ops(message, &prepared, recipients) {
            Ok(ops) => (ops, None),
            Err(reason) => (Vec::new(), Some(reason)),
        };
        ops.extend(extra);
        let ticket = if retain {
            // Under the retained map's lock: the store sees a topic's retained messages in
            // the order the map does.
            tenant.retained.set(message, || {
                match persist.retained_op(&tenant.name, message) {
                    Ok(op) => ops.extend(op),
                    Err(reason) => unrecorded = Some(reason),
                }
                persist.commit(&prepared, ops)
            })
        } else {
            persist.commit(&prepared, ops)
        };
        persist.release(prepared);
        self.hooks.observe(&tenant.name, message, &routed);
        let mut confirm = 0;
        if let Some(peers) = peers {
            confirm = peers.forward(&tenant.name, message);
            if retain {
                peers.retained(&tenant.name, message);
            }
        }
        let refused = match unrecorded {
            Some(reason) => {
                self.stats.refuse(reason);
                Some(reason)
            }
            None => self.refusal(&routed),
        };
        Published {
            routed,
            ticket,
            confirm,
            refused,
        }
    }

    /// Why a publication whose copies `routed` says were refused must not be acknowledged
    /// as accepted (counted); `None` when every copy was queued.
    fn refusal(&self, routed: &router::Routed) -> Option<stats::RefuseReason> {
        let reason = match routed.refused_for? {
            stats::DropReason::MemoryBudget => stats::RefuseReason::MemoryBudget,
            stats::DropReason::TenantQuota => stats::RefuseReason::TenantQuota,
            _ => stats::RefuseReason::QueueFull,
        };
        self.stats.refuse(reason);
        Some(reason)
    }

    /// Attaches a new connection to `client_id`'s session: resumes it (`clean_start` false
    /// and it exists), or replaces it with a new one. A connection still attached to the
    /// session is taken over: its generation no longer matches, and it is woken to close.
    /// `claim`: the cluster registry's revision of this node's claim on the client id (0
    /// unclustered), set under the registry's lock with the attachment (`Broker::let_go`).
    pub fn attach(
        self: &Arc<Self>,
        tenant: &Arc<Tenant>,
        client_id: ByteString,
        clean_start: bool,
        protocol: ProtocolVersion,
        expiry_interval: u32,
        claim: u64,
    ) -> Attached {
        let mut shard = tenant.sessions.shard(&client_id);
        let existing = shard.get(&*client_id).cloned();
        if let (Some(session), false) = (&existing, clean_start) {
            let mut st = session.lock();
            // What it was owed offline is now a connected session's queue.
            let owed = st.offline().then(|| st.owed());
            // A resumed session cancels a will still waiting for its delay.
            if let Some(generation) =
                st.resume(&self.persist, session.id, protocol, expiry_interval)
            {
                if let Some((n, bytes)) = owed {
                    tenant.usage.offline(false, n, bytes);
                }
                if let Some(add) = st.count_persistent() {
                    tenant.usage.persistent(add);
                }
                let ticket = st.store(&self.persist, named(tenant, session));
                drop(st);
                session.claim.store(claim, Ordering::Release);
                drop(shard);
                // Wake the replaced connection (if any) so it sees it has been taken over.
                session.wake();
                return Attached {
                    session: session.clone(),
                    generation,
                    present: true,
                    ticket,
                };
            }
        }
        let id = self.next_session_id();
        let key: Arc<str> = Arc::from(&*client_id);
        let session = Session::new(id, key.clone(), protocol);
        let ticket = {
            let mut st = session.lock();
            st.attach_first(expiry_interval);
            if let Some(add) = st.count_persistent() {
                tenant.usage.persistent(add);
            }
            st.store(&self.persist, named(tenant, &session))
        };
        session.claim.store(claim, Ordering::Release);
        shard.insert(key, session.clone());
        drop(shard);
        if let Some(old) = existing {
            self.end_session(tenant, &old, None);
        }
        Attached {
            session,
            generation: 1,
            present: false,
            ticket,
        }
    }

    /// A connection of generation `generation` has closed. Unless a newer connection has
    /// attached, the session goes offline: it ends now (expiry 0) or when its expiry interval
    /// passes without a new connection.
    pub fn detach(self: &Arc<Self>, tenant: &Arc<Tenant>, session: &Arc<Session>, generation: u64) {
        let offline = {
            let mut st = session.lock();
            let offline = st.go_offline(&self.persist, named(tenant, session), generation);
            if offline.is_some() {
                let (n, bytes) = st.owed();
                tenant.usage.offline(true, n, bytes);
            }
            offline
        };
        // Publishers parked on it go on: an offline session does not push back.
        let Some((expiry, waiters)) = offline else {
            return;
        };
        waiters.into_iter().for_each(std::task::Waker::wake);
        if expiry == 0 {
            self.end_session(tenant, session, Some(generation));
            return;
        }
        self.expire_after(tenant, session, generation, expiry);
    }

    /// Ends `session` after `secs` unless a connection has attached since `generation`.
    pub fn expire_after(
        self: &Arc<Self>,
        tenant: &Arc<Tenant>,
        session: &Arc<Session>,
        generation: u64,
        secs: u32,
    ) {
        // Timers hold the broker weakly: a stopped broker (and its store) is released at
        // once, not when its longest session expiry has passed.
        let (broker, tenant, session) = (Arc::downgrade(self), tenant.clone(), session.clone());
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(u64::from(secs))).await;
            if let Some(broker) = broker.upgrade() {
                broker.expire(&tenant, &session, generation);
            }
        });
    }

    /// Ends a session: its subscriptions leave the index, it leaves the registry, its queue is
    /// dropped, a pending will is published. With `if_generation`, only if no connection has
    /// attached since that generation.
    pub fn end_session(&self, tenant: &Tenant, session: &Arc<Session>, if_generation: Option<u64>) {
        self.end_session_with(tenant, session, if_generation, |_| Some(()));
    }

    /// `end_session`, calling `before` with the session's state under the lock it ends
    /// under: the session ends only if it returns something (returned then).
    pub fn end_session_with<R>(
        &self,
        tenant: &Tenant,
        session: &Arc<Session>,
        if_generation: Option<u64>,
        before: impl FnOnce(&mut session::SessionState) -> Option<R>,
    ) -> Option<R> {
        // A connection still attached (clean-start takeover) sees the new generation.
        let (ended, before) = {
            let mut st = session.lock();
            // As `SessionState::end` decides: `before` runs only for a session that ends.
            let current = |g| g == st.generation() && !st.connected();
            if st.ended() || !if_generation.is_none_or(current) {
                return None;
            }
            let before = before(&mut st)?;
            let ended = st.end(&self.persist, session.id, if_generation);
            if let Some(e) = &ended {
                tenant.usage.offline(false, e.owed.0, e.owed.1);
                if e.persistent {
                    tenant.usage.persistent(false);
                }
            }
            (ended, before)
        };
        let session::Ended {
            subscriptions,
            will,
            waiters,
            released,
            ..
        } = ended?;
        self.stats.release_queued(released);
        waiters.into_iter().for_each(std::task::Waker::wake);
        session.wake();
        for filter in subscriptions.keys() {
            let (group, inner) = split_shared(filter);
            let last = |filter: &str, group: Option<&str>| {
                self.tell_interest(tenant, filter, group, false);
            };
            tenant
                .index
                .unsubscribe_telling(inner, group, session.id, last);
        }
        tenant.sessions.remove_if(&session.client_id, session.id);
        if let Some(peers) = self.peers.get() {
            let claim = session.claim.load(Ordering::Acquire);
            peers.session_ended(&tenant.name, &session.client_id, claim);
        }
        if let Some(will) = will {
            self.publish(tenant, &will.message(session.id));
        }
        Some(before)
    }

    /// Asks the connection attached to `session`, if any, to close (v5: DISCONNECT 0x98
    /// Administrative action). Returns whether one was attached.
    pub fn kick(&self, session: &Session) -> bool {
        self.kick_for(session, stats::CloseReason::AdministrativeAction)
    }

    /// Asks the connection attached to `session`, if any, to close for `reason`.
    pub fn kick_for(&self, session: &Session, reason: stats::CloseReason) -> bool {
        let connected = session.lock().kick(reason);
        if connected {
            session.wake();
        }
        connected
    }

    /// Deletes `tenant`'s retained message on the topic of `empty` (a retained message
    /// with no payload) without routing anything; the ticket says when the store has it.
    pub fn clear_retained(
        &self,
        tenant: &Tenant,
        empty: &Arc<Message>,
    ) -> crate::store::journal::Ticket {
        if let Some(peers) = self.peers.get() {
            peers.retained(&tenant.name, empty);
        }
        self.keep_retained(tenant, empty)
    }

    /// Sets (or, with an empty payload, deletes) a retained message without routing it,
    /// and records it.
    pub(crate) fn keep_retained(
        &self,
        tenant: &Tenant,
        message: &Arc<Message>,
    ) -> crate::store::journal::Ticket {
        let persist = &self.persist;
        tenant.retained.set(message, || {
            persist.submit(persist.retained_op(&tenant.name, message).ok().flatten())
        })
    }

    /// Adds (or replaces) a subscription of `session`. Returns whether it existed before,
    /// and the ticket of the session's stored record.
    pub fn subscribe(
        &self,
        tenant: &Tenant,
        session: &Arc<Session>,
        filter: &ByteString,
        record: SubscriptionRecord,
    ) -> (bool, Ticket) {
        // Kept for the session's life: its own allocation, not a slice of a read buffer.
        let filter = message::own_str(filter);
        let (group, inner) = split_shared(&filter);
        let subscribed = session.lock().subscribe(
            &self.persist,
            named(tenant, session),
            filter.clone(),
            record.clone(),
        );
        let Some(ticket) = subscribed else {
            return (false, Ticket::NONE);
        };
        let sub = Subscriber {
            session: session.clone(),
            options: record.options,
            id: record.id,
        };
        let first = |filter: &str, group: Option<&str>| {
            self.tell_interest(tenant, filter, group, true);
        };
        let existed = tenant.index.subscribe_telling(inner, group, sub, first);
        if sys::watch::is_sys(inner) {
            self.sys.watch(tenant);
        }
        (existed, ticket)
    }

    /// Removes a subscription of `session`. Returns whether it existed, and the ticket of
    /// the session's stored record.
    pub fn unsubscribe(
        &self,
        tenant: &Tenant,
        session: &Arc<Session>,
        filter: &str,
    ) -> (bool, Ticket) {
        let removed = session
            .lock()
            .unsubscribe(&self.persist, named(tenant, session), filter);
        let (existed, ticket) = (removed.is_some(), removed.unwrap_or_default());
        let (group, inner) = split_shared(filter);
        let last = |filter: &str, group: Option<&str>| {
            self.tell_interest(tenant, filter, group, false);
        };
        tenant
            .index
            .unsubscribe_telling(inner, group, session.id, last);
        (existed, ticket)
    }
}

/// Names `session` of `tenant` for its store records.
fn named<'a>(tenant: &'a Tenant, session: &'a Session) -> session::Named<'a> {
    session::Named {
        tenant: &tenant.name,
        id: session.id,
        client_id: &session.client_id,
    }
}

/// Splits `$share/{group}/{filter}` into the group and the filter; other filters have no
/// group. Filters reaching here were validated by the codec.
pub fn split_shared(filter: &str) -> (Option<&str>, &str) {
    match mqtt_codec::topic::parse_shared(filter) {
        Ok(Some(shared)) => (Some(shared.group), shared.filter),
        _ => (None, filter),
    }
}
