//! Client events, as EMQX publishes them: `$SYS/brokers/<node>/clients/<client id>/connected`
//! when a CONNECT is accepted and `.../disconnected` when that connection closes, a JSON
//! object each, not retained, into the client's own tenant; a client of another tenant's
//! also into the default tenant (the operator's), under
//! `$SYS/brokers/<node>/tenants/<tenant>/clients/<client id>/...`.
//!
//! The cost on the connect path is one atomic load per tenant (its index counts the
//! filters that can match these topics, `SubscriptionIndex::event_subscriptions`) while
//! nobody subscribes: the event is built only when someone will get it.

use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;
use mqtt_codec::{ProtocolVersion, QoS};
use serde::Serialize;

use super::watch::level;
use crate::broker::durable::unix_ms;
use crate::broker::message::Message;
use crate::broker::session::Session;
use crate::broker::stats::CloseReason;
use crate::broker::{Broker, Tenant};

/// What CONNECT settled, for the `connected` event.
#[derive(Debug, Clone, Copy)]
pub struct Connected {
    /// The protocol the client speaks.
    pub version: ProtocolVersion,
    /// Keep-alive in force, seconds.
    pub keep_alive: u16,
    /// Clean Start (3.1.1: Clean Session).
    pub clean_start: bool,
    /// Session expiry agreed, seconds.
    pub expiry: u32,
}

impl Broker {
    /// Whether a client event of `tenant` would reach a subscriber (the default tenant's
    /// subscribers get every tenant's events): one atomic load per tenant while nobody
    /// subscribes to them.
    pub fn client_events_watched(&self, tenant: &Tenant) -> bool {
        (tenant.index.event_subscriptions() > 0
            || self.default_tenant.index.event_subscriptions() > 0)
            && self.config().sys.client_events
    }

    /// Publishes `session`'s `connected` event, if anyone subscribes to it.
    pub fn client_connected(&self, tenant: &Tenant, session: &Session, c: Connected) {
        if !self.client_events_watched(tenant) {
            return;
        }
        self.client_event(tenant, session, c.version, "connected", |e, now| {
            e.keepalive = Some(c.keep_alive);
            e.clean_start = Some(c.clean_start);
            e.expiry_interval = Some(c.expiry);
            e.connack = Some(0);
            e.connected_at = Some(now);
        });
    }

    /// Publishes `session`'s `disconnected` event, its connection closed for `reason`, if
    /// anyone subscribes to it.
    pub fn client_disconnected(
        &self,
        tenant: &Tenant,
        session: &Session,
        version: ProtocolVersion,
        reason: CloseReason,
    ) {
        if !self.client_events_watched(tenant) {
            return;
        }
        self.client_event(tenant, session, version, "disconnected", |e, now| {
            e.reason = Some(reason.label());
            e.disconnected_at = Some(now);
        });
    }

    fn client_event(
        &self,
        tenant: &Tenant,
        session: &Session,
        version: ProtocolVersion,
        kind: &str,
        fill: impl FnOnce(&mut Event<'_>, u64),
    ) {
        let node = self.node_name();
        let origin = session.lock().origin().cloned();
        let (proto_name, proto_ver) = match version {
            ProtocolVersion::V3_1 => ("MQIsdp", 3),
            ProtocolVersion::V3_1_1 => ("MQTT", 4),
            ProtocolVersion::V5 => ("MQTT", 5),
        };
        let now = unix_ms();
        let mut event = Event {
            clientid: &session.client_id,
            username: origin.as_ref().and_then(|o| o.username.as_deref()),
            tenant: &tenant.name,
            ipaddress: origin.as_ref().map(|o| o.peer.ip()),
            peername: origin.as_ref().map(|o| o.peer),
            listener: origin.as_ref().map(|o| o.listener.label()),
            proto_name,
            proto_ver,
            ts: now,
            node: &node,
            ..Event::default()
        };
        fill(&mut event, now);
        let payload = Bytes::from(serde_json::to_vec(&event).unwrap_or_default());
        let id = level(&session.client_id, false);
        let node = level(&node, true);
        let publish = |tenant: &Tenant, topic: String| {
            let m = Message::new(
                topic.into(),
                payload.clone(),
                QoS::AtMostOnce,
                false,
                Default::default(),
                0,
            );
            self.publish_sys(tenant, &m);
        };
        if tenant.index.event_subscriptions() > 0 {
            publish(tenant, format!("$SYS/brokers/{node}/clients/{id}/{kind}"));
        }
        let default = &self.default_tenant;
        if !tenant.name.is_empty() && default.index.event_subscriptions() > 0 {
            let name = level(&tenant.name, true);
            let topic = format!("$SYS/brokers/{node}/tenants/{name}/clients/{id}/{kind}");
            publish(default, topic);
        }
    }
}

/// An event's payload: who, which tenant, from where, over what (both events), what
/// happened (`connected`'s fields or `disconnected`'s), when, where. Serialized straight
/// from the fields: no JSON tree is built.
#[derive(Serialize, Default)]
struct Event<'a> {
    clientid: &'a str,
    username: Option<&'a str>,
    tenant: &'a str,
    ipaddress: Option<IpAddr>,
    peername: Option<SocketAddr>,
    listener: Option<&'static str>,
    proto_name: &'static str,
    proto_ver: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    keepalive: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    clean_start: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expiry_interval: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    connack: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    connected_at: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    disconnected_at: Option<u64>,
    ts: u64,
    node: &'a str,
}
