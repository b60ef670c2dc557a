//! Persistent sessions moving between the nodes of a cluster: the broker's side (the
//! messages between the nodes are `cluster::moving`'s).
//!
//! A client that comes back to another node with Clean Start 0 takes its session along.
//! The node it arrives at (B) claims the client id, then:
//!
//! 1. asks the node that held it (A) to let go, keeping the session: A closes the
//!    connection (v5 0x8E) and answers with the session's record (expiry, subscriptions);
//!    the session stays on A, offline, still queueing (`release_for_move`);
//! 2. makes the session here with those subscriptions, not yet in the registry, and waits
//!    until NATS has them (`prepare_moved`): from then on every message for it reaches B;
//! 3. asks A for what the session holds: A copies its inflight window, queue and inbound
//!    QoS 2 packet ids and ends it there, under one lock (`hand_over`);
//! 4. takes that in ahead of what arrived here meanwhile, keeping once each message both
//!    nodes received (by its cluster identity, `Message::ident`), stores it all, and puts
//!    the session in the registry (`settle_moved`); the CONNECT then resumes it.
//!
//! Between 2 and 3 both nodes queue the session's messages, so none published meanwhile is
//! missed; the overlap is what the identities remove (and, for a few seconds after,
//! late copies of what A held: `SessionState::held`).

use std::sync::Arc;
use std::time::Duration;

use super::index::Subscriber;
use super::session::Session;
use super::session::moving::Owed;
use super::{Broker, Tenant, named, split_shared};
use crate::store::journal::Ticket;
use crate::store::record::SessionRecord;

/// How long a session that moved here drops late copies of what it was handed over (a
/// node catching up on the stream after NATS was lost may bring them that late).
const HELD_FOR: Duration = Duration::from_secs(30);

impl Broker {
    /// Step 1, on the node the session leaves: another node claimed `tenant`'s `client_id`
    /// with revision `newer` and takes the session along. The connection here, if any, is
    /// closed (v5 DISCONNECT 0x8E); a session that outlives its connection stays, offline,
    /// and its record is returned; one that does not is ended (`None`, as `let_go`).
    pub fn release_for_move(
        &self,
        tenant: &str,
        client_id: &str,
        newer: u64,
    ) -> Option<SessionRecord> {
        let tenant = self.find_tenant(tenant)?;
        let session = self.claimed_before(&tenant, client_id, newer)?;
        let record = {
            let mut st = session.lock();
            if st.ended() || st.expiry_interval() == 0 {
                None
            } else {
                st.kick(super::stats::CloseReason::SessionTakenOver);
                Some(st.record(&tenant.name, client_id))
            }
        };
        match record {
            Some(record) => {
                session.wake();
                Some(record)
            }
            None => {
                self.let_go(&tenant.name, client_id, newer);
                None
            }
        }
    }

    /// Step 3, on the node the session leaves: what it holds, copied as it ends here
    /// (under one lock: nothing queued for it after the copy is lost). `None` when there is
    /// no such session (any more), or its claim here is the newer.
    pub fn hand_over(&self, tenant: &str, client_id: &str, newer: u64) -> Option<Owed> {
        let tenant = self.find_tenant(tenant)?;
        let session = self.claimed_before(&tenant, client_id, newer)?;
        let persist = &self.persist;
        self.end_session_with(&tenant, &session, None, |st| {
            st.kick(super::stats::CloseReason::SessionTakenOver);
            Some(st.leave(persist, session.id))
        })
    }

    /// The session of `client_id` here, if its claim is not newer than `newer`.
    fn claimed_before(&self, tenant: &Tenant, client_id: &str, newer: u64) -> Option<Arc<Session>> {
        let shard = tenant.sessions.shard(client_id);
        let session = shard.get(client_id).cloned()?;
        let claim = session.claim.load(std::sync::atomic::Ordering::Acquire);
        (claim <= newer).then_some(session)
    }

    /// Step 2, on the node the session arrives at: the session made from `record` with its
    /// subscriptions in the index (told to the other nodes), not yet in the registry. The
    /// caller waits until the other nodes have the subscriptions (`Peers::issued`), then
    /// calls `settle_moved` (or `abandon_moved`).
    pub fn prepare_moved(&self, tenant: &Tenant, record: SessionRecord) -> Arc<Session> {
        let protocol = super::restore::protocol(record.protocol);
        let id = self.next_session_id();
        let session = Session::new(id, Arc::from(record.client_id.as_str()), protocol);
        let subscriptions = super::restore::subscriptions_of(record.subscriptions);
        for (filter, r) in &subscriptions {
            let (group, inner) = split_shared(filter);
            let sub = Subscriber {
                session: session.clone(),
                options: r.options,
                id: r.id,
            };
            let first = |f: &str, g: Option<&str>| self.tell_interest(tenant, f, g, true);
            tenant.index.subscribe_telling(inner, group, sub, first);
        }
        session.lock().arrive(record.expiry, subscriptions);
        session
    }

    /// Step 4, on the node the session arrives at: takes in what the node it left handed
    /// over (`owed`), stores the session and its deliveries, and puts it in the registry
    /// (a session of the same client id already here, older, ends). The ticket says when
    /// the store has it all.
    pub fn settle_moved(
        self: &Arc<Self>,
        tenant: &Arc<Tenant>,
        session: &Arc<Session>,
        owed: Owed,
    ) -> Ticket {
        let (records, mut ticket) = {
            let mut st = session.lock();
            let (n, bytes) = st.owed();
            tenant.usage.offline(false, n, bytes);
            let (records, released, charge) = st.arrive_with(&self.persist, session.id, owed);
            self.stats.release_queued(released);
            self.stats.charge_queued(charge);
            let (n, bytes) = st.owed();
            tenant.usage.offline(true, n, bytes);
            if let Some(add) = st.count_persistent() {
                tenant.usage.persistent(add);
            }
            let ticket = st.store(&self.persist, named(tenant, session));
            (records, ticket)
        };
        for (prepared, ops) in records.messages {
            ticket = ticket.max(self.persist.commit(&prepared, ops));
            self.persist.release(prepared);
        }
        if !records.ops.is_empty() {
            ticket = ticket.max(self.persist.submit(records.ops));
        }
        for (d, packet_id, released) in records.stages {
            ticket = ticket.max(self.persist.stage(session.id, &d, packet_id, released));
        }
        let older = {
            let mut shard = tenant.sessions.shard(&session.client_id);
            shard.insert(session.client_id.clone(), session.clone())
        };
        if let Some(older) = older.filter(|o| o.id != session.id) {
            self.end_session(tenant, &older, None);
        }
        let (broker, session) = (Arc::downgrade(self), session.clone());
        tokio::spawn(async move {
            tokio::time::sleep(HELD_FOR).await;
            if broker.upgrade().is_some() {
                session.lock().forget_held();
            }
        });
        ticket
    }

    /// A move that could not finish (the node it left did not answer step 3): the session
    /// made in step 2 goes, its subscriptions with it.
    pub fn abandon_moved(&self, tenant: &Tenant, session: &Arc<Session>) {
        self.end_session(tenant, session, None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::message::{Delivery, Message};
    use crate::config::Config;
    use crate::store::record::StoredSubscription;
    use mqtt_codec::properties::PublishProperties;
    use mqtt_codec::{QoS, SubscriptionOptions};

    fn message(n: u64) -> Arc<Message> {
        let payload = bytes::Bytes::from(n.to_string());
        let m = Message::new(
            "t/x".into(),
            payload,
            QoS::AtLeastOnce,
            false,
            PublishProperties::default(),
            0,
        );
        m.ident.set(9, n);
        m
    }

    fn queued(session: &Session) -> Vec<String> {
        let mut st = session.lock();
        let mut released = 0;
        std::iter::from_fn(|| st.pop_queued(&mut released))
            .map(|d| String::from_utf8(d.message.payload.to_vec()).unwrap())
            .collect()
    }

    #[tokio::test]
    async fn what_both_nodes_held_is_kept_once_in_order() {
        let broker = Broker::with_store(Config::default(), 10, None);
        let tenant = broker.tenant("");
        let record = SessionRecord {
            tenant: String::new(),
            client_id: "c".into(),
            protocol: 5,
            expiry: 300,
            offline_since_ms: 0,
            subscriptions: vec![StoredSubscription {
                filter: "t/#".into(),
                options: SubscriptionOptions::qos(QoS::AtLeastOnce),
                id: None,
            }],
        };
        let session = broker.prepare_moved(&tenant, record);
        // Arriving here while the session moves: 2 (the old node had it too) and 3.
        for n in [2, 3] {
            broker.publish(&tenant, &message(n));
        }
        let delivery = |n| Delivery {
            message: message(n),
            qos: QoS::AtLeastOnce,
            retain: false,
            subscription_identifiers: Box::new([]),
            stored: None,
        };
        let owed = Owed {
            queue: vec![delivery(1), delivery(2)],
            ..Owed::default()
        };
        broker.settle_moved(&tenant, &session, owed);
        assert!(tenant.sessions.get("c").is_some_and(|s| s.id == session.id));
        // A late copy of what the old node held is not queued again; a new message is.
        broker.publish(&tenant, &message(2));
        broker.publish(&tenant, &message(4));
        assert_eq!(queued(&session), ["1", "2", "3", "4"]);
        assert_eq!(
            broker
                .stats
                .drops(crate::broker::stats::DropReason::Duplicate),
            1
        );
    }
}
