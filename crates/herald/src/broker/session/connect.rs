//! CONNECT: checking it, negotiating what the client and Herald agree on (session expiry,
//! keep-alive, Receive Maximum, packet sizes, topic aliases), attaching the session and
//! storing the will. What it settles is a [`Link`] and the CONNACK to send.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use mqtt_codec::properties::{ConnAckProperties, PublishProperties};
use mqtt_codec::{ByteString, ConnAck, Connect, ProtocolVersion, QoS, ReasonCode};

use super::link::Link;
use super::{Origin, Will};
use crate::broker::Broker;
use crate::broker::hooks::{Actor, Authenticated, Credentials};
use crate::broker::message::{own_properties, own_str};
use crate::broker::stats::RefuseReason;
use crate::config::Config;
use crate::store::journal::Ticket;

/// What the connection knows of itself when CONNECT arrives.
#[derive(Debug)]
pub struct Arrival {
    /// Connections open on the node, this one included.
    pub open_connections: u64,
    /// Where it came from.
    pub origin: Origin,
    /// The client certificate's name, when `tls.username_from` takes it (it replaces
    /// CONNECT's username).
    pub cert_username: Option<String>,
    /// The tenant the client certificate names, when `tls.tenant_from` takes one.
    pub cert_tenant: Option<String>,
    /// Its listener acknowledges 3.1.1 publications it cannot queue
    /// (`listeners.v3_accept_refused`).
    pub v3_accept_refused: bool,
}

/// What CONNECT settled.
pub struct Accepted {
    /// The link, its session attached.
    pub link: Link,
    /// The CONNACK to send.
    pub connack: ConnAck,
    /// The store ticket CONNACK waits for (the session's record and the will).
    pub ticket: Ticket,
}

/// A refused CONNECT: the reason code, and the protocol version to say it in.
pub type Refused = (ReasonCode, ProtocolVersion);

/// Session expiry, keep-alive and client id as agreed.
struct Terms {
    client_id: ByteString,
    /// The id Herald assigned (v5 clients are told it).
    assigned: Option<ByteString>,
    expiry: u32,
    /// The expiry the client is told, when lower than it asked.
    expiry_told: Option<u32>,
    keep_alive: u16,
    /// The keep-alive the client is told, when Herald chose it.
    server_keep_alive: Option<u16>,
}

/// A CONNECT checked against the configuration and the node's state, its terms settled,
/// waiting for authentication.
pub struct Checked {
    connect: Connect,
    arrival: Arrival,
    terms: Terms,
    /// The cluster registry's revision of this node's claim on the client id (0: none).
    claim: u64,
}

impl Checked {
    /// The protocol version the client speaks (a refusal is said in it).
    pub fn version(&self) -> ProtocolVersion {
        self.connect.protocol
    }

    /// The client identifier, as settled (assigned when the client sent none).
    pub fn client_id(&self) -> &ByteString {
        &self.terms.client_id
    }

    /// Whether the client asks to resume its session (Clean Start 0 / Clean Session 0).
    pub fn resumes(&self) -> bool {
        !self.connect.clean_start
    }

    /// Records the cluster registry's revision of this node's claim on the client id: the
    /// session attached carries it.
    pub fn set_claim(&mut self, revision: u64) {
        self.claim = revision;
    }
}

/// Checks CONNECT and settles its terms (client id, session expiry, keep-alive), or returns
/// the refusal to send. Cheap and synchronous: a CONNECT refused here costs no look-up.
pub fn check(broker: &Broker, connect: Connect, arrival: Arrival) -> Result<Checked, Refused> {
    let v = connect.protocol;
    let cfg = broker.config();
    let terms = negotiate(broker, &cfg, &connect, arrival.open_connections).map_err(|c| (c, v))?;
    Ok(Checked {
        connect,
        arrival,
        terms,
        claim: 0,
    })
}

/// Authenticates a checked CONNECT through the hook seam (without hooks: the certificate's
/// name or CONNECT's username, in the default tenant). May wait: a password hash, a token's
/// keys, an HTTP callout.
pub async fn authenticate(broker: &Broker, checked: &Checked) -> Result<Authenticated, Refused> {
    let (connect, arrival) = (&checked.connect, &checked.arrival);
    let credentials = Credentials {
        client_id: &checked.terms.client_id,
        username: connect.username.as_deref(),
        password: connect.password.as_deref(),
        certificate: arrival.cert_username.as_deref(),
        certificate_tenant: arrival.cert_tenant.as_deref(),
        peer: arrival.origin.peer,
        listener: arrival.origin.listener,
    };
    broker
        .hooks
        .authenticate(&credentials)
        .await
        .map_err(|c| (c, connect.protocol))
}

/// Checks, authenticates and accepts a CONNECT whose authentication does not wait (a broker
/// without hooks, or hooks that answer at once); one that would wait is refused with 0x88.
pub fn accept_now(
    broker: &Arc<Broker>,
    connect: Connect,
    arrival: Arrival,
) -> Result<Accepted, Refused> {
    let checked = check(broker, connect, arrival)?;
    let v = checked.version();
    let polled = {
        let mut auth = std::pin::pin!(authenticate(broker, &checked));
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        auth.as_mut().poll(&mut cx)
    };
    match polled {
        std::task::Poll::Ready(authenticated) => accept(broker, checked, authenticated?),
        std::task::Poll::Pending => Err((ReasonCode::ServerUnavailable, v)),
    }
}

/// Attaches the session of an authenticated CONNECT in its tenant, or returns the refusal
/// to send.
pub fn accept(
    broker: &Arc<Broker>,
    checked: Checked,
    authenticated: Authenticated,
) -> Result<Accepted, Refused> {
    let Checked {
        connect,
        mut arrival,
        terms,
        claim,
    } = checked;
    let v = connect.protocol;
    let cfg = broker.config();
    let identity = authenticated.identity;
    let client_id = &terms.client_id;
    use crate::broker::quota::NewSessions;
    let (slot, quota) = crate::broker::quota::admit(
        broker,
        &authenticated.tenant,
        v,
        |t| {
            let persistent = terms.expiry > 0;
            match t.sessions.get(client_id) {
                None => NewSessions {
                    session: true,
                    persistent,
                },
                Some(s) => NewSessions {
                    session: false,
                    persistent: persistent && !s.lock().persistent(),
                },
            }
        },
        authenticated.limits,
    )
    .map_err(|c| (c, v))?;
    let actor = Actor {
        client_id: &terms.client_id,
        tenant: &slot.name,
        identity: &identity,
    };
    broker.hooks.admit_connection(actor).map_err(|c| (c, v))?;
    // One allocation for both: the identity and the origin share the name.
    arrival.origin.username = identity.username.clone();
    let tenant: &Arc<crate::broker::Tenant> = &slot;
    let attached = broker.attach(
        tenant,
        terms.client_id.clone(),
        connect.clean_start,
        v,
        terms.expiry,
        claim,
    );
    attached.session.lock().origin = Some(Box::new(arrival.origin));
    let mut ticket = attached.ticket;
    if attached.present && broker.hooks.installed() {
        // A resumed session keeps only the subscriptions its new owner may hold: the rules
        // may have changed while it was away, or another user may resume its client id.
        let actor = Actor {
            client_id: &terms.client_id,
            tenant: &tenant.name,
            identity: &identity,
        };
        let held: Vec<ByteString> = attached
            .session
            .lock()
            .subscriptions()
            .keys()
            .cloned()
            .collect();
        for filter in held {
            if broker.hooks.may_keep(actor, &filter) {
                continue;
            }
            let (_, t) = broker.unsubscribe(tenant, &attached.session, &filter);
            ticket = ticket.max(t);
        }
    }
    let mut connack = ConnAck::new(ReasonCode::Success, attached.present);
    let max_packet_size = cfg.limits.max_packet_size.min(u32::MAX as usize) as u32;
    let max_packet_size = quota
        .as_ref()
        .and_then(|q| q.max_packet_size)
        .map_or(max_packet_size, |t| t.min(max_packet_size));
    if v.is_v5() {
        let mut properties = connack_properties(&cfg, &terms);
        properties.maximum_packet_size = Some(max_packet_size);
        if let Some(q) = &quota {
            if let Some(qos) = q.max_qos
                && qos < cfg.session.maximum_qos
            {
                properties.maximum_qos = QoS::from_u8(qos);
            }
            if q.retain == Some(false) {
                properties.retain_available = Some(false);
            }
        }
        connack.properties = properties;
    }
    let p = &connect.properties;
    let link = Link {
        version: v,
        session: attached.session,
        generation: attached.generation,
        keep_alive: terms.keep_alive,
        client_receive_maximum: if v.is_v5() {
            p.receive_maximum.unwrap_or(u16::MAX)
        } else {
            u16::MAX
        },
        client_max_packet_size: p.maximum_packet_size.unwrap_or(u32::MAX),
        max_packet_size,
        client_alias_maximum: if v.is_v5() {
            p.topic_alias_maximum.unwrap_or(0)
        } else {
            0
        },
        expiry_at_connect: terms.expiry,
        will: connect.will.map(will),
        rare: None,
        // Kept only for hooks that look at it: otherwise it costs nothing per connection.
        identity: broker.hooks.keeps(&identity).then(|| Box::new(identity)),
        v3_accept_refused: arrival.v3_accept_refused,
        broker: broker.clone(),
        tenant: slot,
        quota,
    };
    let tenant = &link.tenant;
    if let Some(will) = &link.will {
        // Stored while the connection is open: a crash publishes it at the next start. A
        // will the store cannot record is refused rather than silently not kept.
        let id = link.session.id;
        let message = will.message(id);
        match broker
            .persist
            .put_will(&tenant.name, id, link.generation, will.delay, &message)
        {
            Ok(t) => ticket = ticket.max(t),
            Err(reason) => {
                broker.stats.refuse(reason);
                broker.detach(tenant, &link.session, link.generation);
                return Err((ReasonCode::UnspecifiedError, v));
            }
        }
    }
    let settled = crate::broker::sys::Connected {
        version: v,
        keep_alive: link.keep_alive,
        clean_start: connect.clean_start,
        expiry: terms.expiry,
    };
    broker.client_connected(tenant, &link.session, settled);
    Ok(Accepted {
        link,
        connack,
        ticket,
    })
}

/// Checks what CONNECT asks against the configuration and the node's state, and settles
/// the client id, session expiry and keep-alive; or the reason code refusing it.
fn negotiate(
    broker: &Broker,
    cfg: &Config,
    connect: &Connect,
    open_connections: u64,
) -> Result<Terms, ReasonCode> {
    let v = connect.protocol;
    if connect.properties.authentication_method.is_some() {
        return Err(ReasonCode::BadAuthenticationMethod);
    }
    let max_connections = broker
        .max_connections
        .load(std::sync::atomic::Ordering::Relaxed) as u64;
    if open_connections > max_connections {
        return Err(if v.is_v5() {
            ReasonCode::QuotaExceeded
        } else {
            ReasonCode::ServerUnavailable
        });
    }
    let (client_id, assigned) = client_id(cfg, connect)?;
    if let Some(will) = &connect.will {
        if crate::broker::sys::watch::is_sys(&will.topic) {
            // Only Herald publishes to `$SYS/`, as mosquitto refuses clients.
            broker.stats.sys_refused.fetch_add(1, Ordering::Relaxed);
            return Err(ReasonCode::NotAuthorized);
        }
        if will.qos as u8 > cfg.session.maximum_qos {
            return Err(ReasonCode::QoSNotSupported);
        }
        if will.retain && !cfg.session.retain_available {
            return Err(ReasonCode::RetainNotSupported);
        }
    }
    let max_expiry = cfg.session.max_session_expiry_secs;
    let (expiry, expiry_told) = if v.is_v5() {
        let asked = connect.properties.session_expiry_interval.unwrap_or(0);
        (
            asked.min(max_expiry),
            (asked > max_expiry).then_some(max_expiry),
        )
    } else if connect.clean_start {
        (0, None)
    } else {
        (max_expiry, None)
    };
    // A session that outlives its connection, or a will, must be stored first: with the
    // store failing, the client is told at once (0x88) rather than left without CONNACK.
    let needs_store = expiry > 0 || connect.will.is_some();
    if needs_store && broker.persist.failed() {
        broker.stats.refuse(RefuseReason::StoreFailed);
        return Err(ReasonCode::ServerUnavailable);
    }
    let max_ka = cfg.limits.max_keep_alive_secs;
    let (keep_alive, server_keep_alive) =
        if v.is_v5() && max_ka > 0 && (connect.keep_alive == 0 || connect.keep_alive > max_ka) {
            (max_ka, Some(max_ka))
        } else {
            (connect.keep_alive, None)
        };
    Ok(Terms {
        client_id,
        assigned,
        expiry,
        expiry_told,
        keep_alive,
        server_keep_alive,
    })
}

/// The client id CONNECT names, or one Herald assigns (and tells a v5 client).
fn client_id(
    cfg: &Config,
    connect: &Connect,
) -> Result<(ByteString, Option<ByteString>), ReasonCode> {
    let v = connect.protocol;
    // MQTT 3.1 client identifiers are 1 to 23 characters (3.1 §3.1, return code 2).
    let v31_too_long = v == ProtocolVersion::V3_1 && connect.client_id.chars().count() > 23;
    if connect.client_id.len() > cfg.limits.max_client_id_length || v31_too_long {
        return Err(ReasonCode::ClientIdentifierNotValid);
    }
    if !connect.client_id.is_empty() {
        return Ok((connect.client_id.clone(), None));
    }
    // 3.1 needs an id; 3.1.1 allows none only with a clean session [MQTT-3.1.3-8].
    if v == ProtocolVersion::V3_1 || (v == ProtocolVersion::V3_1_1 && !connect.clean_start) {
        return Err(ReasonCode::ClientIdentifierNotValid);
    }
    let id = assign_client_id();
    let assigned = v.is_v5().then(|| id.clone());
    Ok((id, assigned))
}

/// What a v5 CONNACK tells the client of the server's limits and the agreed terms.
fn connack_properties(cfg: &Config, terms: &Terms) -> ConnAckProperties {
    ConnAckProperties {
        session_expiry_interval: terms.expiry_told,
        receive_maximum: Some(cfg.limits.receive_maximum),
        maximum_qos: match cfg.session.maximum_qos {
            0 => Some(QoS::AtMostOnce),
            1 => Some(QoS::AtLeastOnce),
            _ => None,
        },
        retain_available: (!cfg.session.retain_available).then_some(false),
        maximum_packet_size: Some(cfg.limits.max_packet_size.min(u32::MAX as usize) as u32),
        assigned_client_identifier: terms.assigned.clone(),
        topic_alias_maximum: Some(cfg.limits.topic_alias_maximum),
        server_keep_alive: terms.server_keep_alive,
        ..Default::default()
    }
}

/// The will CONNECT carries, copied out of the read buffer (it is kept for the connection's
/// life).
fn will(w: mqtt_codec::LastWill) -> Box<Will> {
    let mut properties = PublishProperties {
        payload_format_indicator: w.properties.payload_format_indicator,
        message_expiry_interval: w.properties.message_expiry_interval,
        content_type: w.properties.content_type,
        response_topic: w.properties.response_topic,
        correlation_data: w.properties.correlation_data,
        user_properties: w.properties.user_properties,
        ..Default::default()
    };
    own_properties(&mut properties);
    Box::new(Will {
        topic: own_str(&w.topic),
        payload: bytes::Bytes::copy_from_slice(&w.payload),
        qos: w.qos,
        retain: w.retain,
        delay: w.properties.will_delay_interval.unwrap_or(0),
        properties,
    })
}

/// A client id for a client that sent none: unique within this process and unlikely to
/// collide with ids clients choose.
fn assign_client_id() -> ByteString {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    format!("herald-{:x}-{n:x}", t & 0xFFFF_FFFF_FFFF).into()
}
