//! Wills: what becomes of a will when its connection closes without a normal DISCONNECT
//! (`Will::fate` decides: published now, after its delay unless the session is resumed
//! first, or forgotten), and its stored copy.

use std::sync::Arc;
use std::time::Duration;

use super::session::{self, Session, Will};
use super::{Broker, Tenant};

impl Broker {
    /// Publishes `will` for a connection of `session` that closed without a normal
    /// DISCONNECT: now, or after its delay unless a connection resumes the session first
    /// (`Will::fate`). `generation` is that connection's: its stored will goes once
    /// published; `taken_over`: a newer connection replaced it.
    pub fn publish_will(
        self: &Arc<Self>,
        tenant: &Arc<Tenant>,
        session: &Arc<Session>,
        will: Will,
        generation: u64,
        taken_over: bool,
    ) {
        let mut st = session.lock();
        let resumed = st.generation() != generation;
        let delay = match will.fate(taken_over, st.ended(), resumed, st.expiry_interval()) {
            session::WillFate::Forget => {
                drop(st);
                self.forget_will(session, generation);
                return;
            }
            session::WillFate::Publish => {
                drop(st);
                self.publish(tenant, &will.message(session.id));
                self.forget_will(session, generation);
                return;
            }
            session::WillFate::After(delay) => delay,
        };
        let generation = st.pend_will(will);
        drop(st);
        let (broker, tenant, session) = (Arc::downgrade(self), tenant.clone(), session.clone());
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(u64::from(delay))).await;
            let Some(broker) = broker.upgrade() else {
                return;
            };
            // Only this close's will: a resume cancelled it, and a later close set its own,
            // with its own delay [MQTT-3.1.3-9].
            let will = session.lock().take_will(generation);
            if let Some(will) = will {
                broker.publish(&tenant, &will.message(session.id));
                broker.forget_will(&session, generation);
            }
        });
    }

    /// Deletes the stored will of `session`'s connection of `generation`.
    pub fn forget_will(&self, session: &Session, generation: u64) {
        self.persist.delete_will(session.id, generation);
    }
}
