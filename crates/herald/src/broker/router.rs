//! Routing a message to the sessions whose subscriptions match it.
//!
//! A session with several matching subscriptions gets one copy, at the highest QoS granted
//! among them, carrying every matching subscription identifier [MQTT-3.3.4-2],
//! [MQTT-3.3.4-4]; a subscription with No Local does not count for the publisher's own
//! session [MQTT-3.8.3-3]. Each shared subscription group on a matching filter gets one copy,
//! given to a connected member when there is one, in round-robin order.

use std::collections::HashMap;
use std::sync::Arc;

use mqtt_codec::QoS;

use super::Tenant;
use super::index::{FilterEntry, SharedGroup, Subscriber};
use super::message::{Delivery, Message};
use super::persist::StoredMessage;
use super::quota::Offline;
use super::session::{Bounds, Enqueued, Session, SessionId};
use super::stats::{DropReason, Stats};
use crate::config::Limits;
use crate::store::record::Recipient;

/// What routing one message did.
#[derive(Debug, Clone, Default)]
pub struct Routed {
    /// Sessions it matched, whether or not each copy could be queued (a dropped copy is
    /// counted in the stats), so that v5 "No matching subscribers" is only said when there
    /// are none.
    pub matched: usize,
    /// A connected subscriber whose queue is past high water: the publisher should stop
    /// reading until it drains (`broker::flow`).
    pub congested: Option<Arc<Session>>,
    /// QoS 1/2 copies that could not be queued (a full queue, the memory budget): the
    /// publisher must not be told the message was accepted.
    pub refused: usize,
    /// Why the last copy was refused.
    pub refused_for: Option<DropReason>,
    /// The stored sessions it was queued for (written with the message by the publisher).
    pub recipients: Vec<Recipient>,
}

/// Which of a tenant's subscribers a publication goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target<'a> {
    /// Every matching subscriber (a node on its own).
    All,
    /// The direct subscribers: a clustered node's shared groups get their messages through
    /// NATS, which gives each to one node of the group (`Group` there).
    Direct,
    /// One member of the shared group `group` of exactly `filter` (a message NATS gave
    /// this node for it).
    Group {
        /// The filter, without its `$share/` prefix.
        filter: &'a str,
        /// The group.
        group: &'a str,
    },
}

/// Delivers `message` to the matching subscribers of `tenant` that `target` names.
/// `stored`: its record, when there is a store and it is QoS 1/2 (stored sessions'
/// deliveries name it).
pub fn route(
    tenant: &Tenant,
    message: &Arc<Message>,
    stored: Option<&Arc<StoredMessage>>,
    limits: &Limits,
    offline: &Offline<'_>,
    stats: &Stats,
    target: Target<'_>,
) -> Routed {
    let mut routed = Routed::default();
    let mut q = Queueing {
        stored,
        limits,
        offline,
        stats,
        over_budget: stats.over_budget(limits.max_queued_bytes_total),
        charged: 0,
    };
    if let Target::Group { filter, group } = target {
        let entry = tenant.index.entry(filter);
        let members = entry
            .as_ref()
            .and_then(|e| e.shared.iter().find(|g| &*g.name == group));
        if let Some(sub) = members.and_then(pick)
            && let Some(d) = delivery(sub, message)
        {
            q.enqueue(&sub.session, d, &mut routed);
        }
        q.finish();
        return routed;
    }
    let mut entries: Vec<Arc<FilterEntry>> = Vec::new();
    tenant.index.matches(&message.topic, &mut entries);
    let single = entries.len() == 1;
    if single {
        // The common case: one filter, each session at most once in it.
        for sub in &entries[0].direct {
            if let Some(d) = delivery(sub, message) {
                q.enqueue(&sub.session, d, &mut routed);
            }
        }
    } else {
        let mut merged: HashMap<SessionId, (Arc<Session>, Delivery)> = HashMap::new();
        for sub in entries.iter().flat_map(|e| e.direct.iter()) {
            let Some(d) = delivery(sub, message) else {
                continue;
            };
            match merged.get_mut(&sub.session.id) {
                Some((_, existing)) => {
                    existing.qos = existing.qos.max(d.qos);
                    existing.retain |= d.retain;
                    let ids = std::mem::take(&mut existing.subscription_identifiers);
                    existing.subscription_identifiers =
                        [&ids[..], &d.subscription_identifiers[..]].concat().into();
                }
                None => {
                    merged.insert(sub.session.id, (sub.session.clone(), d));
                }
            }
        }
        for (_, (session, d)) in merged {
            q.enqueue(&session, d, &mut routed);
        }
    }
    let groups = entries
        .iter()
        .flat_map(|e| e.shared.iter())
        .filter(|_| target == Target::All);
    for group in groups {
        if let Some(sub) = pick(group)
            && let Some(d) = delivery(sub, message)
        {
            q.enqueue(&sub.session, d, &mut routed);
        }
    }
    q.finish();
    routed
}

/// Queueing one message's copies: the bounds, and what they added to the node's queued
/// bytes (added to the shared counter once per message, not once per copy).
struct Queueing<'a> {
    stored: Option<&'a Arc<StoredMessage>>,
    limits: &'a Limits,
    offline: &'a Offline<'a>,
    stats: &'a Stats,
    /// The node's queued bytes were past their budget when routing began.
    over_budget: bool,
    charged: u64,
}

impl Queueing<'_> {
    /// Queues `d` for `session`; a dropped copy is counted, a refused QoS 1/2 one noted.
    fn enqueue(&mut self, session: &Arc<Session>, d: Delivery, routed: &mut Routed) {
        routed.matched += 1;
        let qos = d.qos;
        let recipients = &mut routed.recipients;
        let bounds = Bounds {
            limits: self.limits,
            over_budget: self.over_budget,
            offline: self.offline,
        };
        match session.enqueue(d, self.stored, &bounds, recipients) {
            Enqueued::Queued { charge, congested } => {
                self.charged += charge;
                if congested && routed.congested.is_none() {
                    routed.congested = Some(session.clone());
                }
            }
            Enqueued::Dropped(reason) => {
                self.stats.dropped(reason, 1);
                let delivered = matches!(reason, DropReason::Offline | DropReason::Duplicate);
                if qos != QoS::AtMostOnce && !delivered {
                    routed.refused += 1;
                    routed.refused_for = Some(reason);
                }
            }
        }
    }

    fn finish(self) {
        if self.charged > 0 {
            self.stats.charge_queued(self.charged);
        }
    }
}

/// The delivery `sub` gets, or `None` when No Local excludes it.
fn delivery(sub: &Subscriber, message: &Arc<Message>) -> Option<Delivery> {
    if sub.options.no_local && sub.session.id == message.origin {
        return None;
    }
    Some(Delivery {
        message: message.clone(),
        qos: message.qos.min(sub.options.qos),
        retain: sub.options.retain_as_published && message.retain,
        subscription_identifiers: sub.id.into_iter().collect(),
        stored: None,
    })
}

/// The member of a shared group to give the next message: the next connected one in
/// round-robin order, else (for a group whose members are all offline) the next in order,
/// whose session queues QoS 1/2.
fn pick(group: &SharedGroup) -> Option<&Subscriber> {
    let n = group.members.len();
    if n == 0 {
        return None;
    }
    let start = group.next_start();
    (0..n)
        .map(|i| &group.members[(start + i) % n])
        .find(|m| m.session.lock().connected())
        .or_else(|| group.members.get(start % n))
}

/// The QoS a subscription is granted: what it asked for, at most the server's maximum.
pub fn granted(requested: QoS, maximum: QoS) -> QoS {
    requested.min(maximum)
}
