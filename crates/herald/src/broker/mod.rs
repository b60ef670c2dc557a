//! The transport-agnostic core: tenants, sessions and their lifecycle, the subscription
//! index, routing, retained messages, wills, counters. One file per concept.
//!
//! Lock order (never the reverse, never across an `.await`):
//! registry shard -> session state -> subscription index / retained store.

pub mod index;
pub mod message;
pub mod registry;
pub mod retained;
pub mod router;
pub mod session;
pub mod stats;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use mqtt_codec::{ByteString, ProtocolVersion, QoS};

use crate::config::Config;
use index::{Subscriber, SubscriptionIndex};
use message::{Delivery, Message};
use registry::Registry;
use retained::Retained;
use session::{Session, SubscriptionRecord, Will};
use stats::Stats;

/// A tenant: its own sessions, subscriptions and retained messages, so that tenant A's
/// `chat/1` and tenant B's `chat/1` never meet. Until authentication assigns tenants, every
/// client belongs to the default one.
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
}

/// The broker: configuration, tenants, counters.
#[derive(Debug)]
pub struct Broker {
    /// The configuration it runs with.
    pub config: Config,
    /// The tenant of every client until authentication assigns others.
    pub default_tenant: Arc<Tenant>,
    /// Counters.
    pub stats: Stats,
    /// Connections accepted at once, after the file-descriptor limit is taken into account.
    pub max_connections: usize,
    next_session: AtomicU64,
    /// The broker's clock for connection deadlines (milliseconds since this instant).
    epoch: std::time::Instant,
    /// Set when the server shuts down; connections see it at their next wake-up.
    shutting_down: AtomicBool,
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
}

impl Broker {
    /// A broker with this configuration; `max_connections` is the effective limit.
    pub fn new(config: Config, max_connections: usize) -> Arc<Broker> {
        Arc::new(Broker {
            config,
            default_tenant: Arc::new(Tenant::default()),
            stats: Stats::default(),
            max_connections,
            next_session: AtomicU64::new(1),
            epoch: std::time::Instant::now(),
            shutting_down: AtomicBool::new(false),
        })
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
        self.default_tenant.sessions.for_each(|session| {
            if session.deadline() <= now {
                session.wake();
            }
        });
    }

    /// Starts shutting down: every connection is woken and closes (v5: DISCONNECT 0x8B).
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::Release);
        self.default_tenant
            .sessions
            .for_each(|session| session.wake());
    }

    /// Whether the server is shutting down.
    pub fn shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }

    /// Publishes `message` in `tenant`: stores it if retained, then routes it.
    pub fn publish(&self, tenant: &Tenant, message: &Arc<Message>) -> router::Routed {
        self.stats.published.fetch_add(1, Ordering::Relaxed);
        if message.retain && self.config.session.retain_available {
            tenant.retained.set(message);
        }
        router::route(tenant, message, &self.config.limits, &self.stats)
    }

    /// Attaches a new connection to `client_id`'s session: resumes it (`clean_start` false
    /// and it exists), or replaces it with a new one. A connection still attached to the
    /// session is taken over: its generation no longer matches, and it is woken to close.
    pub fn attach(
        self: &Arc<Self>,
        tenant: &Arc<Tenant>,
        client_id: ByteString,
        clean_start: bool,
        protocol: ProtocolVersion,
        expiry_interval: u32,
    ) -> Attached {
        let mut shard = tenant.sessions.shard(&client_id);
        let existing = shard.get(&*client_id).cloned();
        if let (Some(session), false) = (&existing, clean_start) {
            let mut st = session.lock();
            if !st.ended {
                st.generation += 1;
                st.connected = true;
                st.protocol = protocol;
                st.expiry_interval = expiry_interval;
                // A resumed session cancels a will still waiting for its delay.
                st.pending_will = None;
                let generation = st.generation;
                drop(st);
                drop(shard);
                // Wake the replaced connection (if any) so it sees it has been taken over.
                session.wake();
                return Attached {
                    session: session.clone(),
                    generation,
                    present: true,
                };
            }
        }
        let id = self.next_session.fetch_add(1, Ordering::Relaxed);
        let key: Arc<str> = Arc::from(&*client_id);
        let session = Session::new(id, key.clone(), protocol);
        {
            let mut st = session.lock();
            st.generation = 1;
            st.connected = true;
            st.expiry_interval = expiry_interval;
        }
        shard.insert(key, session.clone());
        drop(shard);
        if let Some(old) = existing {
            self.end_session(tenant, &old, None);
        }
        Attached {
            session,
            generation: 1,
            present: false,
        }
    }

    /// A connection of generation `generation` has closed. Unless a newer connection has
    /// attached, the session goes offline: it ends now (expiry 0) or when its expiry interval
    /// passes without a new connection.
    pub fn detach(self: &Arc<Self>, tenant: &Arc<Tenant>, session: &Arc<Session>, generation: u64) {
        let expiry = {
            let mut st = session.lock();
            if st.generation != generation {
                return;
            }
            st.connected = false;
            st.expiry_interval
        };
        if expiry == 0 {
            self.end_session(tenant, session, Some(generation));
            return;
        }
        let (broker, tenant, session) = (self.clone(), tenant.clone(), session.clone());
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(u64::from(expiry))).await;
            broker.end_session(&tenant, &session, Some(generation));
        });
    }

    /// Ends a session: its subscriptions leave the index, it leaves the registry, its queue is
    /// dropped, a pending will is published. With `if_generation`, only if no connection has
    /// attached since that generation.
    pub fn end_session(&self, tenant: &Tenant, session: &Arc<Session>, if_generation: Option<u64>) {
        let (subscriptions, will) = {
            let mut st = session.lock();
            if st.ended || if_generation.is_some_and(|g| g != st.generation || st.connected) {
                return;
            }
            st.ended = true;
            // A connection still attached (clean-start takeover) sees the new generation.
            st.generation += 1;
            st.queue.clear();
            st.queue_bytes = 0;
            st.inflight.clear();
            (
                std::mem::take(&mut st.subscriptions),
                st.pending_will.take(),
            )
        };
        session.wake();
        for filter in subscriptions.keys() {
            let (group, inner) = split_shared(filter);
            tenant.index.unsubscribe(inner, group, session.id);
        }
        tenant.sessions.remove_if(&session.client_id, session.id);
        if let Some(will) = will {
            self.publish(tenant, &will.message(session.id));
        }
    }

    /// Publishes `will` for a connection of `session` that closed without a normal
    /// DISCONNECT: now, or after its delay unless a connection resumes the session first.
    pub fn publish_will(
        self: &Arc<Self>,
        tenant: &Arc<Tenant>,
        session: &Arc<Session>,
        will: Will,
    ) {
        if will.delay == 0 {
            self.publish(tenant, &will.message(session.id));
            return;
        }
        let (delay, generation) = {
            let mut st = session.lock();
            if st.ended {
                drop(st);
                self.publish(tenant, &will.message(session.id));
                return;
            }
            let delay = will.delay.min(st.expiry_interval);
            st.pending_will = Some(Box::new(will));
            (delay, st.generation)
        };
        let (broker, tenant, session) = (self.clone(), tenant.clone(), session.clone());
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(u64::from(delay))).await;
            let will = {
                // Only this close's will: a resume cancelled it, and a later close set its
                // own, with its own delay [MQTT-3.1.3-9].
                let mut st = session.lock();
                if st.generation == generation {
                    st.pending_will.take()
                } else {
                    None
                }
            };
            if let Some(will) = will {
                broker.publish(&tenant, &will.message(session.id));
            }
        });
    }

    /// Adds (or replaces) a subscription of `session`. Returns whether it existed before.
    pub fn subscribe(
        &self,
        tenant: &Tenant,
        session: &Arc<Session>,
        filter: &ByteString,
        record: SubscriptionRecord,
    ) -> bool {
        // Kept for the session's life: its own allocation, not a slice of a read buffer.
        let filter = message::own_str(filter);
        let (group, inner) = split_shared(&filter);
        {
            let mut st = session.lock();
            if st.ended {
                return false;
            }
            st.subscriptions.insert(filter.clone(), record.clone());
        }
        let sub = Subscriber {
            session: session.clone(),
            options: record.options,
            id: record.id,
        };
        tenant.index.subscribe(inner, group, sub)
    }

    /// Removes a subscription of `session`. Returns whether it existed.
    pub fn unsubscribe(&self, tenant: &Tenant, session: &Arc<Session>, filter: &str) -> bool {
        let existed = session.lock().subscriptions.remove(filter).is_some();
        let (group, inner) = split_shared(filter);
        tenant.index.unsubscribe(inner, group, session.id);
        existed
    }

    /// Queues the retained messages matching `filter` for `session` (retain flag set).
    pub fn send_retained(
        &self,
        tenant: &Tenant,
        session: &Session,
        filter: &str,
        qos: QoS,
        id: Option<u32>,
    ) {
        for message in tenant.retained.matching(filter) {
            let d = Delivery {
                qos: message.qos.min(qos),
                retain: true,
                subscription_identifiers: id.into_iter().collect(),
                message,
            };
            if let session::Enqueued::Dropped(reason) = session.enqueue(d, &self.config.limits) {
                self.stats.dropped(reason, 1);
            }
        }
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
