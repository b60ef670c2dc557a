//! The seam to other nodes (`cluster`): what the broker tells them (a message published
//! here; a filter that gained its first subscriber here or lost its last) and what it takes
//! from them (a message published elsewhere, routed here as if published here, and not
//! forwarded again).

use std::sync::Arc;
use std::task::{Context, Poll};

use super::message::Message;
use super::{Broker, Published, Tenant, router};
use crate::store::Op;

/// Other nodes, as the broker sees them. Called on the publishing path and under the
/// subscription index's lock: an implementation takes no lock of the broker's and does not
/// wait (it hands work to its own tasks).
pub trait Peers: Send + Sync + std::fmt::Debug {
    /// A message published on this node (by a client, a will, the HTTP API), after it was
    /// routed here: to the nodes whose subscribers it matches. Returns the confirmation a
    /// QoS 1/2 publisher's acknowledgement waits for (`poll_confirmed`): the message is kept
    /// where the other nodes deliver it from; 0 when there is nothing to wait for.
    fn forward(&self, tenant: &str, message: &Arc<Message>) -> u64;

    /// Gives a QoS 1/2 message published on this node its cluster identity
    /// (`Message::ident`), before it is routed.
    fn identify(&self, message: &Message);

    /// Whether QoS 1/2 messages wait for confirmation past their bound: a new one is refused
    /// before it is routed (acknowledged messages are never dropped; new ones are told).
    fn backlogged(&self) -> bool;

    /// The highest confirmation reached: every one at or below it is done.
    fn confirmed(&self) -> u64;

    /// The last confirmation handed out (a message's, or an interest change's: `interest`
    /// hands one out too, confirmed once NATS has the subscription). A SUBACK waits for it,
    /// so that what is published anywhere after it reaches the subscriber.
    fn issued(&self) -> u64;

    /// Whether confirmation `n` is reached; if not, `cx`'s task is woken once it is.
    fn poll_confirmed(&self, n: u64, cx: &Context<'_>) -> Poll<()>;

    /// `filter` (without a `$share/` prefix) of `tenant` gained its first direct subscriber
    /// on this node (`group` None), or its shared group `group` its first member
    /// (`present`); or lost its last. Told under the tenant's index lock, so in the order
    /// the index changed.
    fn interest(&self, tenant: &str, filter: &str, group: Option<&str>, present: bool);

    /// A retained message set (or, with an empty payload, deleted) on this node: for the
    /// cluster's retained store, which every node follows.
    fn retained(&self, tenant: &str, message: &Arc<Message>);

    /// A session of `tenant`'s `client_id` ended here (its claim on the client id in the
    /// cluster: `claim`, see `Session::claim`).
    fn session_ended(&self, tenant: &str, client_id: &str, claim: u64);

    /// A persistent session's state changed in a way another node resuming it must know
    /// before the client is answered (its subscriptions, a QoS 2 exchange's step): with
    /// replicated sessions, the cluster writes it down; returns the confirmation what is
    /// sent next waits for (0: not replicated).
    fn replicate(&self, _tenant: &str, _session: &Arc<super::session::Session>) -> u64 {
        0
    }

    /// Itself as `Any`, for the layers above that know its type (its metrics, its view).
    fn as_any(&self) -> &dyn std::any::Any;
}

/// Where a publication comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// This node: a client, a will, the HTTP API.
    Here,
    /// Another node. `keep_retained`: its retained flag sets the retained message here
    /// too; not when the cluster keeps retained messages in its own store, whose changes
    /// every node applies in one order (a copy arriving late must not undo a newer one).
    Peer {
        /// See above.
        keep_retained: bool,
    },
}

impl Source {
    /// Whether a retained publication from here sets the retained message.
    pub fn keeps_retained(self) -> bool {
        match self {
            Source::Here => true,
            Source::Peer { keep_retained } => keep_retained,
        }
    }
}

impl Broker {
    /// Joins other nodes: from now on what is published here is forwarded to them, and
    /// every filter subscribed here is told as interest (those already held first). Once;
    /// before clients connect.
    pub fn join(&self, peers: Arc<dyn Peers>) {
        let peers = self.peers.get_or_init(|| peers);
        for tenant in self.tenants() {
            for (filter, group) in tenant.index.filters() {
                peers.interest(&tenant.name, &filter, group.as_deref(), true);
            }
        }
    }

    /// Tells the other nodes, if any, that `filter` gained its first subscriber here or lost
    /// its last (under the index's lock).
    pub(super) fn tell_interest(
        &self,
        tenant: &Tenant,
        filter: &str,
        group: Option<&str>,
        present: bool,
    ) {
        if let Some(peers) = self.peers.get() {
            peers.interest(&tenant.name, filter, group, present);
        }
    }

    /// The highest confirmation the other nodes reached (`Peers::confirmed`); every one
    /// without other nodes.
    pub fn confirmed(&self) -> u64 {
        self.peers.get().map_or(u64::MAX, |p| p.confirmed())
    }

    /// Whether the other nodes reached confirmation `n` (see `Peers::poll_confirmed`).
    pub fn poll_confirmed(&self, n: u64, cx: &Context<'_>) -> Poll<()> {
        match self.peers.get() {
            Some(p) if n != 0 => p.poll_confirmed(n, cx),
            _ => Poll::Ready(()),
        }
    }

    /// The last confirmation the other nodes handed out (0 without other nodes).
    pub fn peers_issued(&self) -> u64 {
        self.peers.get().map_or(0, |p| p.issued())
    }

    /// Writes `session`'s state to the other nodes if sessions are replicated: the
    /// confirmation to wait for before answering the client (0: none).
    pub fn replicate(&self, tenant: &Tenant, session: &Arc<super::session::Session>) -> u64 {
        self.peers
            .get()
            .map_or(0, |p| p.replicate(&tenant.name, session))
    }

    /// The nodes this one has joined, if any.
    pub fn peers(&self) -> Option<&Arc<dyn Peers>> {
        self.peers.get()
    }

    /// The peers as their own type `T`, if joined through one.
    pub fn peers_as<T: 'static>(&self) -> Option<&T> {
        self.peers.get()?.as_any().downcast_ref::<T>()
    }

    /// Routes a message another node published: to this node's direct subscribers (or,
    /// with `group`, to one member of that shared group of exactly `filter`), kept if
    /// retained, stored as a publication here would be (with `record` in the same write
    /// when it was stored for a session), not forwarded again.
    pub fn publish_from_peer(
        &self,
        tenant: &Tenant,
        message: &Arc<Message>,
        group: Option<(&str, &str)>,
        keep_retained: bool,
        record: Option<Op>,
    ) -> Published {
        let target = match group {
            Some((filter, group)) => router::Target::Group { filter, group },
            None => router::Target::Direct,
        };
        let from = Source::Peer { keep_retained };
        let record = |routed: &router::Routed| record.filter(|_| !routed.recipients.is_empty());
        self.publish_inner(tenant, message, record, target, from)
    }

    /// Another node claimed `tenant`'s `client_id` with revision `newer`: the session here,
    /// if any and claimed before it, is let go: its connection closed (v5: DISCONNECT 0x8E
    /// Session taken over) and the session ended. `false` when there is none, or this node's
    /// claim is the newer.
    pub fn let_go(&self, tenant: &str, client_id: &str, newer: u64) -> bool {
        let Some(tenant) = self.find_tenant(tenant) else {
            return false;
        };
        // The claim and the generation read together, under the registry's lock (where
        // `attach` sets both): a connection attached here since, with a newer claim, is not
        // the one let go.
        let (session, generation) = {
            let shard = tenant.sessions.shard(client_id);
            let Some(session) = shard.get(client_id).cloned() else {
                return false;
            };
            if session.claim.load(std::sync::atomic::Ordering::Acquire) > newer {
                return false;
            }
            let generation = session.lock().generation();
            (session, generation)
        };
        // Ended even while its connection is attached (which is told 0x8E): a session that
        // outlives its connection must not stay here, offline, once another node owns it.
        let ended = self.end_session_with(&tenant, &session, None, |st| {
            (st.generation() == generation)
                .then(|| st.kick(super::stats::CloseReason::SessionTakenOver))
        });
        session.wake();
        ended.is_some()
    }

    /// Applies a change of the cluster's retained store: the retained message of its topic
    /// set (or, with an empty payload, deleted) here, recorded, not routed.
    pub fn retained_from_peer(&self, tenant: &Tenant, message: &Arc<Message>) {
        self.keep_retained(tenant, message);
    }
}
