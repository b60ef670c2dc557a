//! What a link does with each packet a client sends after CONNECT: the QoS 1 and 2
//! exchanges both ways, subscriptions, topic aliases, DISCONNECT.

use crate::config::V3Denied;
use mqtt_codec::{
    Ack, Disconnect, Packet, Publish, QoS, ReasonCode, RetainHandling, SubAck, Subscribe, UnsubAck,
    Unsubscribe,
};

use std::sync::atomic::Ordering;

use super::closing::Closing;
use super::limits::Rated;
use super::link::{Handled, Link, Out};
use super::{Stage, SubscriptionRecord};

use crate::broker::message::Message;
use crate::broker::stats::CloseReason;
use crate::store::Op;
use crate::store::journal::Ticket;

impl Link {
    /// Handles one packet; what it answers is appended to `out`.
    pub fn handle(&mut self, packet: Packet, out: &mut impl Out) -> Result<Handled, Closing> {
        self.recheck_subscriptions();
        let done = match packet {
            Packet::Publish(p) => return self.on_publish(p, out),
            Packet::PubAck(a) => {
                self.finish_inflight(a.packet_id, Stage::Sent);
                Ok(())
            }
            Packet::PubRec(a) => self.on_pubrec(a, out),
            Packet::PubRel(a) => self.on_pubrel(a, out),
            Packet::PubComp(a) => {
                self.finish_inflight(a.packet_id, Stage::Released);
                Ok(())
            }
            Packet::Subscribe(s) => self.on_subscribe(s, out),
            Packet::Unsubscribe(u) => self.on_unsubscribe(u, out),
            Packet::PingReq => self.send(out, &Packet::PingResp),
            Packet::Disconnect(d) => self.on_disconnect(d),
            // A second CONNECT [MQTT-3.1.0-2], AUTH without an authentication method
            // [MQTT-4.12.0-1], or a packet only a server sends.
            other => Err(self.violation(
                ReasonCode::ProtocolError,
                match other {
                    Packet::Connect(_) => "[MQTT-3.1.0-2]",
                    Packet::Auth(_) => "[MQTT-4.12.0-1]",
                    _ => "a packet only a server sends",
                },
            )),
        };
        done.map(|()| Handled::default())
    }

    /// An acknowledgement (PUBACK, PUBCOMP, a refusing PUBREC), or a message too large to
    /// send, ends the exchange of the inflight message `packet_id` at `stage`: it is done, in
    /// memory and in the store.
    pub(super) fn finish_inflight(&mut self, packet_id: u16, stage: Stage) {
        let session = &self.session;
        let mut st = session.lock();
        let Some(done) = st.take_inflight(packet_id, stage) else {
            return;
        };
        let staged = done.delivery.qos == QoS::ExactlyOnce;
        st.finish(&self.broker.persist, session.id, &done.delivery, staged);
    }

    fn on_publish(&mut self, mut p: Publish, out: &mut impl Out) -> Result<Handled, Closing> {
        self.resolve_alias(&mut p)?;
        let (qos, packet_id) = (p.qos, p.packet_id);
        if let Some(code) = self.check_publish(&p)? {
            return self
                .refuse_publish(out, qos, packet_id, code)
                .map(|()| Handled::default());
        }
        if crate::broker::sys::watch::is_sys(&p.topic) {
            // Only Herald publishes to `$SYS/` (mosquitto refuses clients too): not
            // authorized (v5 PUBACK/PUBREC 0x87; 3.1.1 as `acl.v3_publish_denied` says).
            self.broker
                .stats
                .sys_refused
                .fetch_add(1, Ordering::Relaxed);
            let code = ReasonCode::NotAuthorized;
            let refused = self.refuse_publish(out, qos, packet_id, code);
            return refused.map(|()| Handled::default());
        }
        if let Some(code) = self.quota_publish(&p)? {
            return self
                .refuse_publish(out, qos, packet_id, code)
                .map(|()| Handled::default());
        }
        let throttle = match self.rate(p.payload.len() + p.topic.len()) {
            Rated::Within => None,
            Rated::Throttle(wait) => Some(wait),
            Rated::Refuse => {
                // 0x96 Message rate too high is a DISCONNECT code, not a PUBACK one: a
                // refused message is told 0x97 Quota exceeded (QoS 0: dropped, counted).
                let code = ReasonCode::QuotaExceeded;
                return self
                    .refuse_publish(out, qos, packet_id, code)
                    .map(|()| Handled::default());
            }
        };
        let message = Message::new(
            p.topic,
            p.payload,
            qos,
            p.retain,
            p.properties,
            self.session.id,
        );
        // Authorization and quotas (the hook seam; allowed when no hook is installed).
        if let Err(code) = self.authorize(&message) {
            return self
                .refuse_publish(out, qos, packet_id, code)
                .map(|()| Handled::default());
        }
        if qos != QoS::AtMostOnce
            && let Some(reason) = self.broker.persist.refusal()
        {
            // The disk is full (or failing): refuse what would have to be stored rather
            // than acknowledge what might be lost.
            self.broker
                .stats
                .store_refused
                .fetch_add(1, Ordering::Relaxed);
            self.broker.stats.refuse(reason);
            let refused = self.refuse_unqueued(out, qos, packet_id, reason, false);
            return refused.map(|()| Handled::default());
        }
        let extra = match qos {
            QoS::ExactlyOnce => match self.receive_qos2(packet_id)? {
                Some(extra) => extra,
                None => {
                    // A re-sent PUBLISH before PUBREL: acknowledge, do not deliver again
                    // [MQTT-4.3.3-9].
                    let resent = self.send(out, &Packet::PubRec(Ack::new(packet_id)));
                    return resent.map(|()| Handled::default());
                }
            },
            _ => None,
        };
        let published = self.broker.publish_with(&self.tenant, &message, |_| extra);
        let handled = Handled {
            matched: published.routed.matched,
            congested: published.routed.congested,
            throttle,
        };
        // Acknowledged (or refused) once on disk, and clustered, once the other nodes can
        // deliver it.
        out.gate(published.ticket);
        out.gate_peers(published.confirm);
        if qos == QoS::ExactlyOnce {
            // The inbound packet id, so that a re-sent PUBLISH is known on any node.
            self.gate_replica(out);
        }
        if let Some(reason) = published.refused
            && qos != QoS::AtMostOnce
        {
            let accept = self.v3_accept_refused;
            self.refuse_unqueued(out, qos, packet_id, reason, accept)?;
            return Ok(handled);
        }
        let mut ack = Ack::new(packet_id);
        // Clustered, subscribers elsewhere are not known here: 0x10 only on a node of its own.
        if handled.matched == 0 && self.v5() && self.broker.peers().is_none() {
            ack.reason_code = ReasonCode::NoMatchingSubscribers;
        }
        self.acknowledge(out, qos, ack)?;
        Ok(handled)
    }

    /// Checks a PUBLISH against what Herald supports: a QoS or retain flag it said it does
    /// not take breaks the protocol (closes); a topic past the limits is refused (`Some`).
    fn check_publish(&mut self, p: &Publish) -> Result<Option<ReasonCode>, Closing> {
        let cfg = self.broker.config();
        if p.qos as u8 > cfg.session.maximum_qos {
            return Err(self.violation(ReasonCode::QoSNotSupported, "[MQTT-3.2.2-11]"));
        }
        if p.retain && !cfg.session.retain_available {
            return Err(self.violation(ReasonCode::RetainNotSupported, "[MQTT-3.2.2-14]"));
        }
        let topic_ok = p.topic.len() <= cfg.limits.max_topic_length
            && p.topic.split('/').count() <= cfg.limits.max_topic_levels;
        Ok((!topic_ok).then_some(ReasonCode::TopicNameInvalid))
    }

    /// Takes a QoS 2 PUBLISH's packet id for exactly-once delivery: `None` when it is a
    /// re-send of one not yet released, else the op storing the id with the message (for a
    /// stored session: a re-send after a restart is still recognised). Past Herald's Receive
    /// Maximum the connection closes.
    fn receive_qos2(&mut self, packet_id: u16) -> Result<Option<Option<Op>>, Closing> {
        let receive_maximum = self.broker.config().limits.receive_maximum;
        let mut st = self.session.lock();
        if st.inbound_qos2.contains(&packet_id) {
            return Ok(None);
        }
        if st.inbound_qos2.len() >= usize::from(receive_maximum) {
            return Err(Closing::new(CloseReason::ReceiveMaximumExceeded));
        }
        st.inbound_qos2.insert(packet_id);
        Ok(Some(if st.durable.is_some() {
            self.broker.persist.inbound_op(self.session.id, packet_id)
        } else {
            None
        }))
    }

    /// Answers a PUBLISH of `qos` with `ack`: PUBACK for QoS 1, PUBREC for QoS 2.
    fn acknowledge(&mut self, out: &mut impl Out, qos: QoS, ack: Ack) -> Result<(), Closing> {
        match qos {
            QoS::AtMostOnce => Ok(()),
            QoS::AtLeastOnce => self.send(out, &Packet::PubAck(ack)),
            QoS::ExactlyOnce => self.send(out, &Packet::PubRec(ack)),
        }
    }

    /// Forgets an inbound QoS 2 packet id whose PUBLISH was refused, in memory and in the
    /// store (a restart must not take the client's re-send for a duplicate).
    fn forget_inbound(&mut self, out: &mut impl Out, packet_id: u16) {
        let mut st = self.session.lock();
        if st.inbound_qos2.remove(&packet_id) && st.durable.is_some() {
            let ticket = self
                .broker
                .persist
                .release_inbound(self.session.id, packet_id);
            drop(st);
            out.gate(ticket);
            self.gate_replica(out);
        }
    }

    /// Refuses a QoS 1/2 publication Herald could not queue or store: a v5 client is told
    /// why in its PUBACK/PUBREC (0x97 Quota exceeded for a bound, 0x80 Unspecified error
    /// for a failing store or a message it cannot record). 3.1.1 has no way to say no: the connection is closed without
    /// the acknowledgement (the client sends it again), unless `accept` (the listener is in
    /// `listeners.v3_accept_refused`), when it is acknowledged and counted. A refused QoS 2
    /// exchange ends here: its packet id is forgotten, so a re-send is a new message.
    fn refuse_unqueued(
        &mut self,
        out: &mut impl Out,
        qos: QoS,
        packet_id: u16,
        reason: crate::broker::stats::RefuseReason,
        accept: bool,
    ) -> Result<(), Closing> {
        use crate::broker::stats::RefuseReason;
        let unstored = matches!(
            reason,
            RefuseReason::StoreFailed | RefuseReason::Unrecordable
        );
        if accept && !self.v5() && !unstored {
            self.broker
                .stats
                .accepted_unqueued
                .fetch_add(1, Ordering::Relaxed);
            return self.acknowledge(out, qos, Ack::new(packet_id));
        }
        if qos == QoS::ExactlyOnce {
            self.forget_inbound(out, packet_id);
        }
        if !self.v5() {
            return Err(Closing::new(CloseReason::PublishRefused));
        }
        let code = if unstored {
            ReasonCode::UnspecifiedError
        } else {
            ReasonCode::QuotaExceeded
        };
        self.refuse_publish(out, qos, packet_id, code)
    }

    /// Replaces a v5 topic alias by its topic, or records a new alias [MQTT-3.3.2-12].
    fn resolve_alias(&mut self, p: &mut Publish) -> Result<(), Closing> {
        let Some(alias) = p.properties.topic_alias.take() else {
            return Ok(());
        };
        if alias > self.broker.config().limits.topic_alias_maximum {
            return Err(Closing::new(CloseReason::TopicAliasInvalid));
        }
        if p.topic.is_empty() {
            match self.rare.as_ref().and_then(|a| a.inbound.get(&alias)) {
                Some(topic) => p.topic = topic.clone(),
                // An alias never set is a protocol error [MQTT-3.3.4-?]: §3.3.2.3.4.
                None => {
                    return Err(self.violation(
                        ReasonCode::ProtocolError,
                        "a topic alias never set (MQTT 5.0 §3.3.2.3.4)",
                    ));
                }
            }
        } else {
            self.rare()
                .inbound
                .insert(alias, crate::broker::message::own_str(&p.topic));
        }
        Ok(())
    }

    /// Refuses one publication without closing (v5 QoS 1/2 get the reason in their ack);
    /// 3.1.1 has no way to say no but to close.
    /// After a rules change (the hook's generation moved), the subscriptions this connection
    /// holds are judged again: those the rules no longer allow are removed (and logged).
    /// Checked at each packet the client sends, so within one keep-alive at the latest.
    fn recheck_subscriptions(&mut self) {
        let Some(identity) = self.identity.as_deref_mut() else {
            return;
        };
        let now = self.broker.hooks.generation();
        if identity.checked == now {
            return;
        }
        identity.checked = now;
        let held: Vec<mqtt_codec::ByteString> =
            self.session.lock().subscriptions.keys().cloned().collect();
        let actor = self.actor();
        let revoked: Vec<_> = held
            .into_iter()
            .filter(|filter| !self.broker.hooks.may_keep(actor, filter))
            .collect();
        for filter in revoked {
            self.broker
                .unsubscribe(&self.tenant, &self.session, &filter);
        }
    }

    /// Authorizes and admits a PUBLISH through the hooks (publish authorizations cached
    /// per connection).
    fn authorize(&mut self, message: &Message) -> Result<(), ReasonCode> {
        if !self.broker.hooks.installed() {
            return Ok(());
        }
        let actor = super::link::actor(&self.session, &self.tenant, self.identity.as_deref());
        let rare = self.rare.get_or_insert_with(Default::default);
        self.broker
            .hooks
            .publish(actor, message, &mut rare.decisions)
    }

    fn refuse_publish(
        &mut self,
        out: &mut impl Out,
        qos: QoS,
        packet_id: u16,
        code: ReasonCode,
    ) -> Result<(), Closing> {
        if !self.v5() {
            // 3.1.1 has no code to refuse with: a publication the ACL denies is acknowledged
            // and dropped, as mosquitto does (`acl.v3_publish_denied = "drop"`), or closes.
            let denied = code == ReasonCode::NotAuthorized;
            if !(denied && self.broker.config().acl.v3_publish_denied == V3Denied::Drop) {
                return Err(Closing::new(CloseReason::ProtocolError));
            }
            return self.acknowledge(out, qos, Ack::new(packet_id));
        }
        let mut ack = Ack::new(packet_id);
        ack.reason_code = code;
        self.acknowledge(out, qos, ack)
    }

    fn on_pubrec(&mut self, a: Ack, out: &mut impl Out) -> Result<(), Closing> {
        let mut reply = Ack::new(a.packet_id);
        {
            let mut st = self.session.lock();
            if a.reason_code.is_error() {
                // The client refused the message: it is done with [MQTT-4.3.3-4 in 5.0].
                drop(st);
                self.finish_inflight(a.packet_id, Stage::Sent);
                return Ok(());
            }
            if let Some(delivery) = st.release(a.packet_id) {
                // PUBREL goes out once the stage is on disk: after a restart Herald re-sends
                // PUBREL, never the message again.
                let id = self.session.id;
                let ticket = self.broker.persist.stage(id, delivery, a.packet_id, true);
                drop(st);
                out.gate(ticket);
                self.gate_replica(out);
            } else if !st
                .inflight
                .iter()
                .any(|i| i.packet_id == a.packet_id && i.stage == Stage::Released)
            {
                reply.reason_code = ReasonCode::PacketIdentifierNotFound;
            }
        }
        if !self.v5() {
            reply.reason_code = ReasonCode::Success;
        }
        self.send(out, &Packet::PubRel(reply))
    }

    fn on_pubrel(&mut self, a: Ack, out: &mut impl Out) -> Result<(), Closing> {
        let (known, replicated) = {
            let mut st = self.session.lock();
            let known = st.inbound_qos2.remove(&a.packet_id);
            let replicated = known && st.expiry_interval() > 0;
            if known && st.durable.is_some() {
                // PUBCOMP once the id is forgotten on disk: a restart must not take a later
                // message with the same id for a duplicate.
                let ticket = self
                    .broker
                    .persist
                    .release_inbound(self.session.id, a.packet_id);
                drop(st);
                out.gate(ticket);
            }
            (known, replicated)
        };
        if replicated {
            self.gate_replica(out);
        }
        let mut reply = Ack::new(a.packet_id);
        if !known && self.v5() {
            reply.reason_code = ReasonCode::PacketIdentifierNotFound;
        }
        self.send(out, &Packet::PubComp(reply))
    }

    fn on_subscribe(&mut self, s: Subscribe, out: &mut impl Out) -> Result<(), Closing> {
        let cfg = self.broker.config();
        let max_qos = QoS::from_u8(cfg.session.maximum_qos).unwrap_or(QoS::ExactlyOnce);
        let id = if self.v5() {
            s.properties.subscription_identifier
        } else {
            None
        };
        let mut codes = Vec::with_capacity(s.subscriptions.len());
        let mut retained = Vec::new();
        let mut ticket = Ticket::NONE;
        for sub in s.subscriptions {
            let filter = sub.filter;
            let too_long = filter.len() > cfg.limits.max_topic_length
                || filter.split('/').count() > cfg.limits.max_topic_levels + 2;
            if too_long {
                codes.push(ReasonCode::TopicFilterInvalid);
                continue;
            }
            if let Err(code) = self.broker.hooks.subscribe(self.actor(), &filter) {
                codes.push(code);
                continue;
            }
            if let Some(code) = self.quota_subscribe(&filter) {
                codes.push(code);
                continue;
            }
            let session = &self.session;
            let full = {
                let subs = &session.lock().subscriptions;
                !subs.contains_key(&filter) && subs.len() >= cfg.limits.max_subscriptions_per_client
            };
            if full {
                codes.push(ReasonCode::QuotaExceeded);
                continue;
            }
            let mut options = sub.options;
            options.qos = crate::broker::router::granted(options.qos, self.granted_qos(max_qos));
            let (existed, stored) = self.broker.subscribe(
                &self.tenant,
                session,
                &filter,
                SubscriptionRecord { options, id },
            );
            ticket = ticket.max(stored);
            codes.push(match options.qos {
                QoS::AtMostOnce => ReasonCode::Success,
                QoS::AtLeastOnce => ReasonCode::GrantedQoS1,
                QoS::ExactlyOnce => ReasonCode::GrantedQoS2,
            });
            let shared = mqtt_codec::topic::parse_shared(&filter)
                .ok()
                .flatten()
                .is_some();
            let send = match options.retain_handling {
                RetainHandling::OnSubscribe => true,
                RetainHandling::OnNewSubscription => !existed,
                RetainHandling::Never => false,
            };
            // Shared subscriptions get no retained messages on subscribe [MQTT-4.8.2-5 note].
            if send && !shared {
                retained.push((filter, options.qos));
            }
        }
        // SUBACK once the subscription is on disk, and clustered, once NATS has the
        // subscriptions its filters need (a publication on another node after the SUBACK
        // reaches it).
        out.gate(ticket);
        out.gate_peers(self.broker.peers_issued());
        self.gate_replica(out);
        self.send(
            out,
            &Packet::SubAck(SubAck {
                packet_id: s.packet_id,
                properties: Default::default(),
                reason_codes: codes,
            }),
        )?;
        for (filter, qos) in retained {
            self.broker.send_retained(&self.session, &filter, qos, id);
        }
        Ok(())
    }

    fn on_unsubscribe(&mut self, u: Unsubscribe, out: &mut impl Out) -> Result<(), Closing> {
        let mut ticket = Ticket::NONE;
        let codes = u
            .filters
            .iter()
            .map(|f| {
                let (existed, stored) = self.broker.unsubscribe(&self.tenant, &self.session, f);
                ticket = ticket.max(stored);
                if existed {
                    ReasonCode::Success
                } else {
                    ReasonCode::NoSubscriptionExisted
                }
            })
            .collect();
        out.gate(ticket);
        self.gate_replica(out);
        self.send(
            out,
            &Packet::UnsubAck(UnsubAck {
                packet_id: u.packet_id,
                properties: Default::default(),
                reason_codes: if self.v5() { codes } else { Vec::new() },
            }),
        )
    }

    fn on_disconnect(&mut self, d: Disconnect) -> Result<(), Closing> {
        if let Some(expiry) = d.properties.session_expiry_interval {
            if self.expiry_at_connect == 0 && expiry != 0 {
                // [MQTT-3.14.2-2]
                return Err(self.violation(ReasonCode::ProtocolError, "[MQTT-3.14.2-2]"));
            }
            let capped = expiry.min(self.broker.config().session.max_session_expiry_secs);
            self.session.lock().expiry_interval = capped;
        }
        let reason = if d.reason_code == ReasonCode::DisconnectWithWillMessage {
            CloseReason::ClientDisconnectWithWill
        } else {
            CloseReason::ClientDisconnect
        };
        // The client closes; Herald sends nothing back [MQTT-3.14.4-1].
        Err(Closing::silent(reason))
    }
}
