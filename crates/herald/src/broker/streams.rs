//! Retained messages streamed to a new subscription: a cursor per subscription, a page
//! queued each time the session's queue empties (`Broker::stream_retained`), each copy
//! within the session's and its tenant's bounds.

use std::sync::Arc;

use super::message::{self, Delivery, Message};
use super::session::{self, Session};
use super::{Broker, Tenant, persist, quota, retained};
use mqtt_codec::QoS;

impl Broker {
    /// Starts streaming the retained messages matching `filter` to `session` (retain flag
    /// set): its connection queues them a page at a time as its queue drains.
    pub fn send_retained(&self, session: &Session, filter: &str, qos: QoS, id: Option<u32>) {
        let cursor = retained::Cursor {
            filter: message::own_str(&filter.into()),
            qos,
            id,
            after: None,
            since: std::time::Instant::now(),
        };
        let connected = session.lock().push_retained(cursor);
        if connected {
            session.wake();
        }
    }

    /// Queues the next page of `session`'s oldest retained stream, at most `room` messages,
    /// those on topics `may_read` allows (the hook seam's read check). Returns whether a
    /// stream had anything left to look at (call again while it does).
    pub fn stream_retained(
        &self,
        tenant: &Tenant,
        session: &Session,
        room: usize,
        may_read: impl Fn(&str) -> bool,
    ) -> bool {
        let Some(cursor) = session.lock().next_retained() else {
            return false;
        };
        let page = tenant.retained.page(
            &cursor.filter,
            cursor.after.as_deref(),
            room,
            Some(cursor.since),
        );
        for message in page.messages {
            if may_read(&message.topic) {
                self.queue_retained(tenant, session, message, &cursor);
            }
        }
        session.lock().advance_retained(page.resume_after);
        true
    }

    /// Queues one retained message for `session` at the QoS `cursor` granted. To a stored
    /// session, a QoS 1/2 copy is a stored message of its own.
    fn queue_retained(
        &self,
        tenant: &Tenant,
        session: &Session,
        message: Arc<Message>,
        cursor: &retained::Cursor,
    ) {
        let qos = message.qos.min(cursor.qos);
        let prepared = persist::Prepared::numbered(self.persist.number(qos));
        let d = Delivery {
            qos,
            retain: true,
            subscription_identifiers: cursor.id.into_iter().collect(),
            message: message.clone(),
            stored: None,
        };
        let mut recipients = Vec::new();
        let config = self.config();
        let limits = &config.limits;
        let offline = quota::Offline::new(tenant, &config.tenants.defaults);
        let bounds = session::Bounds {
            limits,
            over_budget: self.stats.over_budget(limits.max_queued_bytes_total),
            offline: &offline,
        };
        match session.enqueue(d, prepared.stored(), &bounds, &mut recipients) {
            session::Enqueued::Dropped(reason) => self.stats.dropped(reason, 1),
            session::Enqueued::Queued { charge, .. } => {
                self.stats.charge_queued(charge);
            }
        }
        // The retained message was recorded when it was set: this copy encodes as it did.
        let ops = self
            .persist
            .message_ops(&message, &prepared, recipients)
            .unwrap_or_default();
        self.persist.commit(&prepared, ops);
        self.persist.release(prepared);
    }
}
