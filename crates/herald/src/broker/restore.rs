//! Rebuilding the broker from its store at start, before any connection is accepted.
//!
//! Sessions come back offline, with their subscriptions in the index, their expiry counting
//! from when they went offline (or from now, for those whose connection was open at the
//! crash), their queues in sequence order, their QoS 2 deliveries at the stage they reached,
//! their inbound QoS 2 packet ids. Expired sessions and messages, records of sessions that no
//! longer exist and messages every recipient is done with are purged. Wills of connections
//! that were open at the crash are published (after their delay, unless the session resumes
//! first). A record that does not decode stops the start with an error naming it: Herald
//! never starts on partial data.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use mqtt_codec::{ByteString, ProtocolVersion, QoS};

use super::durable::{Durable, instant_of, unix_ms};
use super::message::{Delivery, Message, own_str};
use super::persist::{Stored, StoredMessage};
use super::session::{Session, Stage, SubscriptionRecord, Will};
use super::{Broker, Tenant, split_shared};
use crate::broker::index::Subscriber;
use crate::store::record::{
    self, AckRecord, DecodeError, MessageRecord, RetainedRecord, SessionRecord, StageRecord,
    TenantRecord, WillRecord,
};
use crate::store::{Op, Space, StoreError};

/// What a restore found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Restored {
    /// Sessions restored.
    pub sessions: usize,
    /// Messages restored (each once, however many sessions it is queued for).
    pub messages: usize,
    /// Deliveries queued or in flight.
    pub deliveries: usize,
    /// Retained messages.
    pub retained: usize,
    /// Wills published or scheduled.
    pub wills: usize,
    /// Records purged (expired, orphaned, done).
    pub purged: usize,
    /// Tenants whose own settings the admin API had set.
    pub tenants: usize,
}

/// A damaged-record error for `space` and `key`.
fn damaged(space: Space, key: &[u8], message: DecodeError) -> StoreError {
    StoreError::Damaged {
        space: space.name(),
        key: key.iter().map(|b| format!("{b:02x}")).collect(),
        message,
    }
}

/// Reads every record of `space`, decoded by `decode`.
fn read<T>(
    durable: &Durable,
    space: Space,
    decode: impl Fn(&[u8], &[u8]) -> Result<T, DecodeError>,
) -> Result<Vec<T>, StoreError> {
    let mut out = Vec::new();
    durable.journal.store().scan(space, &mut |k, v| {
        out.push(decode(k, v).map_err(|m| damaged(space, k, m))?);
        Ok(())
    })?;
    Ok(out)
}

/// The protocol version of a stored session's level (3, 4 or 5).
pub(super) fn protocol(level: u8) -> ProtocolVersion {
    match level {
        3 => ProtocolVersion::V3_1,
        4 => ProtocolVersion::V3_1_1,
        _ => ProtocolVersion::V5,
    }
}

/// A stored session's subscriptions as the session keeps them.
pub(super) fn subscriptions_of(
    stored: Vec<crate::store::record::StoredSubscription>,
) -> Vec<(ByteString, SubscriptionRecord)> {
    stored
        .into_iter()
        .map(|sub| {
            let record = SubscriptionRecord {
                options: sub.options,
                id: sub.id,
            };
            (ByteString::from(sub.filter.as_str()), record)
        })
        .collect()
}

/// What restoring has found so far.
struct Restoring<'a> {
    durable: &'a Durable,
    broker: &'a Broker,
    now_ms: u64,
    /// Records to delete: expired, orphaned, done.
    purge: Vec<Op>,
    out: Restored,
    /// Sessions restored, by id, with the seconds of expiry they have left.
    sessions: HashMap<u64, (Arc<Session>, u32)>,
    /// The tenant of each session restored.
    tenant_of: HashMap<u64, Arc<Tenant>>,
    /// Outbound QoS 2 stages not yet matched with their delivery.
    stages: HashMap<(u64, u64), StageRecord>,
}

/// Restores `broker` from its store. Call once, before accepting connections, inside the
/// runtime (session expiry and will delays start timers).
pub(crate) fn restore(broker: &Arc<Broker>) -> Result<Restored, StoreError> {
    let Some(durable) = broker.persist.durable() else {
        return Ok(Restored::default());
    };
    let mut r = Restoring {
        durable,
        broker,
        now_ms: unix_ms(),
        purge: Vec::new(),
        out: Restored::default(),
        sessions: HashMap::new(),
        tenant_of: HashMap::new(),
        stages: HashMap::new(),
    };
    r.out.tenants = restore_tenants(broker, durable)?;
    r.sessions()?;
    r.out.sessions = r.sessions.len();
    r.acks()?;
    r.stages_and_inbound()?;
    r.messages()?;
    broker.stats.charge_queued(r.settle_queues());
    r.out.retained = restore_retained(broker, durable, r.now_ms, &mut r.purge)?;
    let wills = read(durable, Space::Wills, |k, v| {
        Ok((record::decode_stage_key(k)?, WillRecord::decode(v)?))
    })?;
    r.out.purged = r.purge.len();
    if !r.purge.is_empty() {
        let ticket = durable.journal.submit(std::mem::take(&mut r.purge));
        if !durable.journal.wait_blocking(ticket) {
            return Err(StoreError::Closed);
        }
    }
    // Everything is in place: the wills of connections open at the crash, then the
    // sessions' expiry timers.
    for ((session_id, generation), will) in wills {
        r.out.wills += 1;
        restore_will(broker, &r.sessions, session_id, generation, will);
    }
    for (id, (session, remaining)) in &r.sessions {
        let generation = session.lock().generation();
        let tenant = r.tenant_of.get(id).unwrap_or(&broker.default_tenant);
        broker.expire_after(tenant, session, generation, *remaining);
    }
    Ok(r.out)
}

impl Restoring<'_> {
    /// Sessions, newest id last: of two records for one client id (a crash between a
    /// clean-start takeover's two writes) the newer wins. Their subscriptions go back in the
    /// index, and they in the registry.
    fn sessions(&mut self) -> Result<(), StoreError> {
        let records = read(self.durable, Space::Sessions, |k, v| {
            Ok((record::decode_session_key(k)?, SessionRecord::decode(v)?))
        })?;
        // Client ids are per tenant: the same id in two tenants is two sessions.
        let mut by_client: HashMap<(String, String), u64> = HashMap::new();
        for (id, rec) in records {
            let offline_ms = if rec.offline_since_ms == 0 {
                0
            } else {
                self.now_ms.saturating_sub(rec.offline_since_ms)
            };
            let expired = offline_ms >= u64::from(rec.expiry) * 1000;
            if expired {
                self.purge
                    .push(Op::Delete(Space::Sessions, record::session_key(id)));
                continue;
            }
            let who = (rec.tenant.clone(), rec.client_id.clone());
            if let Some(older) = by_client.insert(who, id) {
                self.purge
                    .push(Op::Delete(Space::Sessions, record::session_key(older)));
                self.sessions.remove(&older);
                self.tenant_of.remove(&older);
            }
            self.tenant_of.insert(id, self.broker.tenant(&rec.tenant));
            let remaining = (u64::from(rec.expiry) * 1000 - offline_ms).div_ceil(1000) as u32;
            let session = Session::new(
                id,
                Arc::from(rec.client_id.as_str()),
                protocol(rec.protocol),
            );
            let subscriptions = subscriptions_of(rec.subscriptions);
            session.lock().restore(rec.expiry, subscriptions);
            self.sessions.insert(id, (session, remaining));
        }
        for (id, (session, _)) in &self.sessions {
            let tenant = &self.tenant_of[id];
            let st = session.lock();
            for (filter, rec) in st.subscriptions().iter() {
                let filter = own_str(filter);
                let (group, inner) = split_shared(&filter);
                tenant.index.subscribe(
                    inner,
                    group,
                    Subscriber {
                        session: session.clone(),
                        options: rec.options,
                        id: rec.id,
                    },
                );
            }
            drop(st);
            tenant
                .sessions
                .shard(&session.client_id)
                .insert(session.client_id.clone(), session.clone());
        }
        Ok(())
    }

    /// Each session's acknowledgements.
    fn acks(&mut self) -> Result<(), StoreError> {
        // Acknowledgements.
        for (id, acks) in read(self.durable, Space::Acks, |k, v| {
            Ok((record::decode_session_key(k)?, AckRecord::decode(v)?))
        })? {
            match self.sessions.get(&id) {
                Some((s, _)) => {
                    let mut st = s.lock();
                    if let Some(d) = st.stored_mut() {
                        d.watermark = acks.watermark.max(1);
                        d.above = acks.above;
                        d.next_seq = d.next_seq.max(d.watermark);
                        for seq in &d.above {
                            d.next_seq = d.next_seq.max(seq + 1);
                        }
                    }
                }
                None => self
                    .purge
                    .push(Op::Delete(Space::Acks, record::session_key(id))),
            }
        }

        Ok(())
    }

    /// Outbound QoS 2 self.stages and inbound QoS 2 packet ids.
    fn stages_and_inbound(&mut self) -> Result<(), StoreError> {
        // Outbound QoS 2 self.stages and inbound QoS 2 packet ids.
        for (key, stage) in read(self.durable, Space::Stages, |k, v| {
            Ok((record::decode_stage_key(k)?, StageRecord::decode(v)?))
        })? {
            if self.sessions.contains_key(&key.0) {
                self.stages.insert(key, stage);
            } else {
                self.purge
                    .push(Op::Delete(Space::Stages, record::stage_key(key.0, key.1)));
            }
        }
        for (session, packet_id) in read(self.durable, Space::Inbound, |k, _| {
            record::decode_inbound_key(k)
        })? {
            match self.sessions.get(&session) {
                Some((s, _)) => {
                    s.lock().restore_inbound(packet_id);
                }
                None => self.purge.push(Op::Delete(
                    Space::Inbound,
                    record::inbound_key(session, packet_id),
                )),
            }
        }

        Ok(())
    }

    /// Messages: each delivery not yet done goes back to its session (or its inflight
    /// window, at the QoS 2 stage it reached); expired ones are done.
    fn messages(&mut self) -> Result<(), StoreError> {
        let mut touched_acks: Vec<u64> = Vec::new();
        self.durable
            .journal
            .store()
            .scan(Space::Messages, &mut |k, v| {
                let id =
                    record::decode_message_key(k).map_err(|m| damaged(Space::Messages, k, m))?;
                let rec = MessageRecord::decode(v).map_err(|m| damaged(Space::Messages, k, m))?;
                let received_at = instant_of(rec.received_ms, self.now_ms);
                let message = Arc::new(Message::restored(rec.publish, received_at, rec.origin));
                if let Some((run, n, at)) = rec.cluster {
                    message.ident.set(run, n);
                    message
                        .ident
                        .set_at(crate::broker::message::At::from_bits(at));
                }
                let record = StoredMessage::restored(id, 0);
                let expired = message.expired(Instant::now());
                let mut live = 0;
                for r in rec.recipients {
                    let Some((session, _)) = self.sessions.get(&r.session) else {
                        continue;
                    };
                    let mut st = session.lock();
                    let Some(ds) = st.stored_mut() else {
                        continue;
                    };
                    if r.seq < ds.watermark || ds.above.contains(&r.seq) {
                        continue;
                    }
                    ds.next_seq = ds.next_seq.max(r.seq + 1);
                    if expired {
                        ds.done(r.seq);
                        touched_acks.push(r.session);
                        continue;
                    }
                    live += 1;
                    let delivery = Delivery {
                        message: message.clone(),
                        qos: r.qos,
                        retain: r.retain,
                        subscription_identifiers: r.subscription_ids.into(),
                        stored: Some(Stored {
                            seq: r.seq,
                            message: record.clone(),
                        }),
                    };
                    record.pin();
                    let inflight = match self.stages.remove(&(r.session, r.seq)) {
                        Some(stage) if r.qos == QoS::ExactlyOnce => Some((
                            stage.packet_id,
                            if stage.released {
                                Stage::Released
                            } else {
                                Stage::Sent
                            },
                        )),
                        _ => None,
                    };
                    st.restore_delivery(delivery, inflight);
                }
                if live == 0 {
                    self.purge.push(Op::Delete(Space::Messages, k.to_vec()));
                } else {
                    self.out.messages += 1;
                    self.out.deliveries += live as usize;
                }
                Ok(())
            })?;
        self.settle_acks(touched_acks);
        Ok(())
    }

    /// Stages whose delivery is gone are purged; the acknowledgements of sessions whose
    /// expired deliveries were done (`touched`) are written again.
    fn settle_acks(&mut self, mut touched_acks: Vec<u64>) {
        for ((session, seq), _) in std::mem::take(&mut self.stages) {
            self.purge
                .push(Op::Delete(Space::Stages, record::stage_key(session, seq)));
        }
        touched_acks.sort_unstable();
        touched_acks.dedup();
        for id in touched_acks {
            if let Some((s, _)) = self.sessions.get(&id) {
                let st = s.lock();
                if let Some(d) = st.stored() {
                    let acks = AckRecord {
                        watermark: d.watermark,
                        above: d.above.clone(),
                    };
                    self.purge
                        .push(Op::Put(Space::Acks, record::session_key(id), acks.encode()));
                }
            }
        }
    }

    /// Puts each queue in sequence order with its byte counts; returns what the queues add
    /// to the node's queued bytes.
    /// Each session is counted in its tenant as persistent and offline, with what it is
    /// owed.
    fn settle_queues(&self) -> u64 {
        self.sessions
            .iter()
            .map(|(id, (session, _))| {
                let mut st = session.lock();
                let charge = st.settle_restored();
                let tenant = self
                    .tenant_of
                    .get(id)
                    .unwrap_or(&self.broker.default_tenant);
                let (n, bytes) = st.owed();
                tenant.usage.offline(true, n, bytes);
                if let Some(add) = st.count_persistent() {
                    tenant.usage.persistent(add);
                }
                charge
            })
            .sum()
    }
}

/// The tenants' own settings the admin API set (a store made before they were kept has
/// none).
fn restore_tenants(broker: &Broker, durable: &Durable) -> Result<usize, StoreError> {
    let records = read(durable, Space::Tenants, TenantRecord::decode)?;
    let n = records.len();
    for rec in records {
        broker.restore_tenant_settings(&rec.name, rec.limits);
    }
    Ok(n)
}

/// Each tenant's retained messages (the key names the tenant).
fn restore_retained(
    broker: &Broker,
    durable: &Durable,
    now_ms: u64,
    purge: &mut Vec<Op>,
) -> Result<usize, StoreError> {
    let mut n = 0;
    durable.journal.store().scan(Space::Retained, &mut |k, v| {
        let rec = RetainedRecord::decode(v).map_err(|m| damaged(Space::Retained, k, m))?;
        let (tenant, _) =
            record::decode_retained_key(k).map_err(|m| damaged(Space::Retained, k, m))?;
        let message = Arc::new(Message::restored(
            rec.publish,
            instant_of(rec.received_ms, now_ms),
            0,
        ));
        if message.expired(Instant::now()) || message.payload.is_empty() {
            purge.push(Op::Delete(Space::Retained, k.to_vec()));
        } else {
            broker.tenant(&tenant).retained.set(&message, || ());
            n += 1;
        }
        Ok(())
    })?;
    Ok(n)
}

/// Publishes (or schedules) the will of a connection that was open when Herald stopped.
fn restore_will(
    broker: &Arc<Broker>,
    sessions: &HashMap<u64, (Arc<Session>, u32)>,
    session_id: u64,
    generation: u64,
    rec: WillRecord,
) {
    let tenant = &broker.tenant(&rec.tenant);
    let publish = rec.publish;
    let will = Will {
        topic: publish.topic.clone(),
        payload: publish.payload.clone(),
        qos: publish.qos,
        retain: publish.retain,
        properties: publish.properties,
        delay: rec.delay,
    };
    match sessions.get(&session_id) {
        // The session lives on: the will waits for its delay, cancelled if a connection
        // resumes the session first. The session takes the will's generation, so that the
        // resume (or the session's end) finds the record.
        Some((session, _)) if rec.delay > 0 => {
            session.lock().restore_generation(generation);
            broker.publish_will(tenant, session, will, generation, false);
        }
        _ => {
            let placeholder = Session::new(session_id, Arc::from(""), ProtocolVersion::V5);
            broker.publish(tenant, &will.message(session_id));
            broker.forget_will(&placeholder, generation);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, TenantLimits};
    use crate::store::memory::MemoryStore;

    fn broker_on(store: &Arc<MemoryStore>) -> Arc<Broker> {
        let config = Config::default();
        let durable = Durable::with_store(store.clone(), &config.store).expect("a store in memory");
        Broker::with_store(config, 10, Some(durable))
    }

    #[test]
    fn tenants_set_through_the_api_come_back() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let store = Arc::new(MemoryStore::new());
        let first = broker_on(&store);
        let limits = TenantLimits {
            max_connections: Some(3),
            ..TenantLimits::default()
        };
        let (_, ticket) = first
            .put_tenant_settings("acme", limits.clone())
            .expect("stored");
        first
            .put_tenant_settings("gone", limits.clone())
            .expect("stored");
        let ticket = ticket.max(first.remove_tenant_settings("gone").expect("removed"));
        assert!(first.persist.wait_blocking(ticket));
        if let Some(d) = first.persist.durable() {
            d.journal.close();
        }
        let second = broker_on(&store);
        let restored = rt.block_on(async { restore(&second) }).expect("restores");
        assert_eq!(restored.tenants, 1);
        let acme = second.find_tenant("acme").expect("restored");
        assert!(acme.known());
        assert_eq!(**acme.own(), limits);
        assert_eq!(
            second.tenant_source("acme"),
            super::super::tenants::Source::Api
        );
        assert!(
            second.find_tenant("gone").is_none(),
            "its record was deleted"
        );
    }
}
