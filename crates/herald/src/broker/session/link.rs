//! A link: the MQTT protocol state of one connection attached to a session, and the only
//! code that changes a session's state on a client's behalf. It does no I/O: the connection
//! (`net/`) feeds it decoded packets and gets back what to send (appended to an [`Out`],
//! acknowledgements gated on store tickets), what routing did (for pushback), or a
//! [`Closing`] with its reason.

use std::collections::HashMap;
use std::sync::Arc;
use std::task::Context;

use bytes::Bytes;
use mqtt_codec::{
    ByteString, Disconnect, EncodeError, Packet, ProtocolVersion, Publish, ReasonCode,
};

use super::closing::Closing;
use super::{Session, Will};
use crate::broker::hooks::{Actor, Decisions, Identity};
use crate::broker::stats::CloseReason;
use crate::broker::{Broker, Tenant};
use crate::store::journal::Ticket;

/// Where a link's packets go: the connection's write queue, or a test's recorder.
pub trait Out {
    /// Appends a control packet.
    fn packet(&mut self, packet: &Packet, version: ProtocolVersion) -> Result<(), EncodeError>;
    /// Appends a PUBLISH.
    fn publish(&mut self, publish: &Publish, version: ProtocolVersion) -> Result<(), EncodeError>;
    /// Appends bytes encoded once for many subscribers.
    fn bytes(&mut self, bytes: &Bytes);
    /// Holds everything appended from now on until the store has `ticket` on disk.
    fn gate(&mut self, ticket: Ticket);
    /// Holds everything appended from now on until the other nodes reached confirmation
    /// `n` (`Broker::poll_confirmed`; 0: nothing to wait for).
    fn gate_peers(&mut self, n: u64);
    /// Bytes waiting to be written (ready or held).
    fn len(&self) -> usize;
    /// Whether nothing waits.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What handling one packet did besides answering it: what its publication routed.
#[derive(Debug, Default)]
pub struct Handled {
    /// Deliveries a PUBLISH queued (for the publisher's route budget).
    pub matched: usize,
    /// A subscriber queue it filled past high water: the publisher should stop reading
    /// until it drains (pushback, `broker::flow`).
    pub congested: Option<Arc<Session>>,
    /// The PUBLISH went over a rate (`tenants.rate_exceeded = "throttle"`): the
    /// connection reads nothing more for this long.
    pub throttle: Option<std::time::Duration>,
}

/// The protocol state of a connection once CONNECT is accepted.
pub struct Link {
    /// Protocol version.
    pub(super) version: ProtocolVersion,
    /// The attached session.
    pub(super) session: Arc<Session>,
    /// This connection's attachment generation.
    pub(super) generation: u64,
    /// Keep-alive in force (0: none).
    pub(super) keep_alive: u16,
    /// How many QoS 1/2 messages the client accepts unacknowledged.
    pub(super) client_receive_maximum: u16,
    /// Largest packet the client accepts.
    pub(super) client_max_packet_size: u32,
    /// Largest packet Herald accepts from it: fixed at CONNECT (a v5 client was told it),
    /// whatever a reload does.
    pub(super) max_packet_size: u32,
    /// Topic aliases the client accepts from Herald.
    pub(super) client_alias_maximum: u16,
    /// Session expiry interval agreed at CONNECT (a DISCONNECT may not raise it from 0).
    pub(super) expiry_at_connect: u32,
    /// The will, published unless the connection ends with a normal DISCONNECT (boxed: most
    /// connections have none, and every byte here is paid per connection).
    pub(super) will: Option<Box<Will>>,
    /// What few links need: topic aliases, the rule a violation broke.
    pub(super) rare: Option<Box<Rare>>,
    /// Who the client is, as authenticated (`None`: nobody in particular, the default
    /// without hooks; boxed, as every byte of a link is paid per connection).
    pub(super) identity: Option<Box<Identity>>,
    /// A 3.1/3.1.1 QoS 1/2 PUBLISH that cannot be queued is acknowledged and counted
    /// (`listeners.v3_accept_refused`) instead of closing the connection.
    pub(super) v3_accept_refused: bool,
    pub(super) broker: Arc<Broker>,
    /// Its tenant: the connection is counted there until the link goes.
    pub(super) tenant: crate::broker::quota::Slot,
    /// Its own quotas (`broker::quota`; boxed, and only when one applies).
    pub(super) quota: Option<Box<crate::broker::quota::LinkQuota>>,
}

/// The client acting, from a link's parts: for a caller that borrows another of the link's
/// fields at the same time.
pub(super) fn actor<'a>(
    session: &'a Session,
    tenant: &'a Tenant,
    identity: Option<&'a Identity>,
) -> Actor<'a> {
    Actor {
        client_id: &session.client_id,
        tenant: &tenant.name,
        identity: identity.unwrap_or(&NOBODY),
    }
}

/// The identity of a link without one (no hook installed, or none that looks at it).
static NOBODY: Identity = Identity {
    username: None,
    state: None,
    checked: 0,
};

/// What few links need (boxed: every byte of a link is paid per connection).
#[derive(Debug, Default)]
pub(super) struct Rare {
    /// Topic aliases set by the client, alias -> topic.
    pub(super) inbound: HashMap<u16, ByteString>,
    /// Topic aliases assigned by Herald, topic -> alias.
    pub(super) outbound: HashMap<ByteString, u16>,
    /// The rule a protocol violation broke (`[MQTT-3.1.0-2]`), for the log.
    pub(super) rule: Option<&'static str>,
    /// The hook's last publish authorizations.
    pub(super) decisions: Option<Box<Decisions>>,
}

impl Link {
    /// The broker it belongs to.
    pub fn broker(&self) -> &Arc<Broker> {
        &self.broker
    }

    /// The tenant of its session.
    pub fn tenant(&self) -> &Arc<Tenant> {
        &self.tenant
    }

    /// The session it is attached to.
    pub fn session(&self) -> &Arc<Session> {
        &self.session
    }

    /// Its protocol version (packets decode and encode with it).
    pub fn version(&self) -> ProtocolVersion {
        self.version
    }

    /// Keep-alive in force, seconds (0: none).
    pub fn keep_alive(&self) -> u16 {
        self.keep_alive
    }

    /// Largest packet the client may send.
    pub fn max_packet_size(&self) -> usize {
        self.max_packet_size as usize
    }

    /// The client acting, for the hooks.
    pub(super) fn actor(&self) -> Actor<'_> {
        actor(&self.session, &self.tenant, self.identity.as_deref())
    }

    pub(super) fn v5(&self) -> bool {
        self.version.is_v5()
    }

    pub(super) fn rare(&mut self) -> &mut Rare {
        self.rare.get_or_insert_with(Default::default)
    }

    /// The rule the client broke, if a violation closed it.
    pub fn rule(&self) -> Option<&'static str> {
        self.rare.as_ref().and_then(|r| r.rule)
    }

    /// Notes the rule a packet that failed to decode broke, for the log.
    pub fn note_rule(&mut self, rule: &'static str) {
        self.rare().rule = Some(rule);
    }

    /// A protocol error told with `code`, breaking `rule` (logged when the connection closes).
    pub(super) fn violation(&mut self, code: ReasonCode, rule: &'static str) -> Closing {
        self.note_rule(rule);
        Closing::protocol(code)
    }

    /// Appends a control packet, counted.
    pub(super) fn send(&self, out: &mut impl Out, packet: &Packet) -> Result<(), Closing> {
        let before = out.len();
        out.packet(packet, self.version)
            .map_err(|_| Closing::new(CloseReason::ProtocolError))?;
        let size = out.len().saturating_sub(before);
        self.broker
            .stats
            .hot
            .packets_out(packet.packet_type(), 1, size);
        Ok(())
    }

    /// What is sent next waits until a replicated session's state is written to the
    /// cluster (`Broker::replicate`), as it waits for the store.
    pub(super) fn gate_replica(&self, out: &mut impl Out) {
        out.gate_peers(self.broker.replicate(&self.tenant, &self.session));
    }

    /// Sends CONNACK (held until the session's record and the will are on disk), then
    /// re-sends what the resumed session had in flight.
    pub fn start(
        &mut self,
        out: &mut impl Out,
        connack: mqtt_codec::ConnAck,
        ticket: Ticket,
    ) -> Result<(), Closing> {
        out.gate(ticket);
        self.gate_replica(out);
        self.send(out, &Packet::ConnAck(Box::new(connack)))?;
        self.resend_inflight(out)
    }

    /// Registers the connection's task to be woken by its session, and says whether it has
    /// something to look at: a signal since it last looked, or it has been replaced.
    pub fn poll_signal(&self, cx: &Context<'_>) -> bool {
        // A takeover raises the generation under this lock, then wakes: checked under it,
        // a replaced connection never registers its waker over its successor's, and is
        // woken at least once after the change.
        let st = self.session.lock();
        st.generation != self.generation || self.session.poll_signal(cx)
    }

    /// After a signal: whether the connection must close (an operator or a drain asked, a
    /// newer connection took the session over).
    pub fn check_signal(&self) -> Result<(), Closing> {
        let (generation, kicked) = {
            let st = self.session.lock();
            (st.generation, st.kicked)
        };
        if let (Some(reason), true) = (kicked, generation == self.generation) {
            return Err(Closing::new(reason));
        }
        if generation != self.generation {
            if let Some(reason) = kicked {
                // Disconnected by an operator, and the session discarded.
                return Err(Closing::new(reason));
            }
            // Another connection took the session over; pass the signal on to it.
            self.session.wake();
            return Err(Closing::new(CloseReason::SessionTakenOver));
        }
        Ok(())
    }

    /// The store failed while answers waited for it: they are never sent. A client still
    /// waiting for its CONNACK (`connack_unsent`) gets 0x88 Server unavailable (3.1.1:
    /// return code 3); one past it, v5 DISCONNECT 0x80 (its unacknowledged messages it sends
    /// again elsewhere).
    pub fn store_failed(&self, out: &mut impl Out, connack_unsent: bool) -> Closing {
        tracing::warn!(
            client_id = &*self.session.client_id,
            "store failed: closing a connection waiting on it"
        );
        if connack_unsent {
            let ack = mqtt_codec::ConnAck::new(ReasonCode::ServerUnavailable, false);
            let _ = self.send(out, &Packet::ConnAck(Box::new(ack)));
            return Closing::silent(CloseReason::StoreFailed);
        }
        Closing::new(CloseReason::StoreFailed)
    }

    /// The DISCONNECT a v5 client is told as the connection closes for `closing`, if any
    /// (draining with `drain.server_reference` set: 0x9C Use another server, and which).
    pub fn farewell(&self, out: &mut impl Out, closing: Closing) {
        let Some(code) = closing.code.filter(|_| self.v5()) else {
            return;
        };
        let mut disconnect = Disconnect::new(code);
        if closing.reason == CloseReason::Drained {
            let reference = self.broker.config().drain.server_reference.clone();
            if !reference.is_empty() {
                // Use another server, and which [MQTT-4.11].
                disconnect = Disconnect::new(ReasonCode::UseAnotherServer);
                disconnect.properties.server_reference = Some(reference.into());
            }
        }
        let _ = out.packet(&Packet::Disconnect(disconnect), self.version);
    }

    /// The connection has closed for `reason`: the will is published (or scheduled, or
    /// forgotten after a normal DISCONNECT), and the session goes offline.
    pub fn end(mut self, reason: CloseReason) {
        let session = self.session.clone();
        let tenant = &self.tenant;
        self.broker
            .client_disconnected(tenant, &session, self.version, reason);
        if let Some(will) = self.will.take() {
            if reason == CloseReason::ClientDisconnect {
                self.broker.forget_will(&session, self.generation);
            } else {
                let taken_over = reason == CloseReason::SessionTakenOver;
                self.broker.publish_will(
                    &self.tenant,
                    &session,
                    *will,
                    self.generation,
                    taken_over,
                );
            }
        }
        self.broker.detach(&self.tenant, &session, self.generation);
    }
}
