//! The CONNECT handshake: read the first packet within the connect timeout, check it,
//! attach the session, answer CONNACK.

use std::sync::Arc;
use std::time::Duration;

use super::connection::Session as Conn;
use super::transport::Transport;
use bytes::BytesMut;
use mqtt_codec::properties::{ConnAckProperties, PublishProperties};
use mqtt_codec::{ConnAck, Connect, DecodeError, Packet, ProtocolVersion, QoS, ReasonCode, decode};

use crate::broker::message::{own_properties, own_str};
use crate::broker::session::{Origin, Will};
use crate::broker::stats::CloseReason;
use crate::broker::{Broker, Tenant};

/// Why no first packet was read.
pub(crate) enum FirstPacketError {
    /// The socket closed or failed.
    Closed(CloseReason),
    /// The bytes did not decode; the protocol level they named, if they started a CONNECT.
    Decode(DecodeError, Option<u8>),
}

/// Reads until the first whole packet has arrived; returns it and its size.
pub(crate) async fn first_packet(
    io: &mut Transport,
    rbuf: &mut BytesMut,
    max_packet_size: usize,
) -> Result<(Packet, usize), FirstPacketError> {
    loop {
        let before = rbuf.len();
        // Read before decoding: a packet that fails to decode is no longer in the buffer.
        let level = connect_level(rbuf);
        // The version is unknown until CONNECT says it; CONNECT decodes with its own.
        match decode(rbuf, ProtocolVersion::V5, max_packet_size) {
            Ok(Some(packet)) => return Ok((packet, before - rbuf.len())),
            Ok(None) => {}
            Err(e) => return Err(FirstPacketError::Decode(e, level)),
        }
        match io.read_some(rbuf).await {
            Ok(0) => return Err(FirstPacketError::Closed(CloseReason::PeerClosed)),
            Ok(_) => {}
            Err(e) => return Err(FirstPacketError::Closed(read_error(&e))),
        }
    }
}

/// Why a failed read ends a connection: bytes a layer refused (a WebSocket frame breaking
/// the protocol, a TLS record that does not decrypt) are a protocol error, the rest is I/O.
pub(crate) fn read_error(e: &std::io::Error) -> CloseReason {
    if e.kind() == std::io::ErrorKind::InvalidData {
        CloseReason::ProtocolError
    } else {
        CloseReason::IoError
    }
}

/// Answers a CONNECT that failed to decode: a client asking for a protocol level Herald does
/// not speak gets CONNACK 0x01 (3.1.1 form) before the close [MQTT-3.1.2-2]; a CONNECT that
/// says it is MQTT 5 gets a v5 CONNACK with the reason (0x81 Malformed packet, 0x82 Protocol
/// error, 0x95 Packet too large, ...), as MQTT 5.0 §3.2.2.2 allows. `level` is the level
/// the CONNECT's first bytes named. Returns whether a CONNACK was sent.
pub(crate) async fn refuse_undecodable(
    io: &mut Transport,
    level: Option<u8>,
    error: &DecodeError,
) -> bool {
    let (code, version) = match error {
        DecodeError::UnsupportedProtocol { .. } => (
            ReasonCode::UnsupportedProtocolVersion,
            ProtocolVersion::V3_1_1,
        ),
        _ if level == Some(5) => (error.reason_code(), ProtocolVersion::V5),
        _ => return false,
    };
    let ack = Packet::ConnAck(Box::new(ConnAck::new(code, false)));
    match ack.to_bytes(version) {
        Ok(bytes) => {
            let sent = tokio::time::timeout(Duration::from_secs(1), io.write_all(&bytes)).await;
            matches!(sent, Ok(Ok(())))
        }
        Err(_) => false,
    }
}

/// The protocol level a CONNECT's first bytes name (`None` if they are not a CONNECT's
/// start: packet type 1, then the protocol name "MQTT").
fn connect_level(bytes: &[u8]) -> Option<u8> {
    if bytes.first()? >> 4 != 1 {
        return None;
    }
    // The remaining length: one to four bytes, the last without its high bit.
    let length_bytes = bytes[1..].iter().take(4).position(|b| b & 0x80 == 0)? + 1;
    let header = &bytes.get(1 + length_bytes..)?;
    match header.get(..7)? {
        [0, 4, b'M', b'Q', b'T', b'T', level] => Some(*level),
        _ => None,
    }
}

/// What the handshake settled.
pub(crate) struct Accepted {
    /// The connection state, session attached.
    pub(crate) conn: Conn,
    /// The CONNACK to send.
    pub(crate) connack: ConnAck,
    /// The store ticket CONNACK waits for (the session's record and the will).
    pub(crate) ticket: crate::store::journal::Ticket,
}

/// Checks CONNECT and attaches the session, or returns the refusal to send.
pub(crate) fn accept(
    broker: &Arc<Broker>,
    tenant: &Arc<Tenant>,
    connect: Connect,
    open_connections: u64,
    mut origin: Origin,
    cert_username: Option<String>,
) -> Result<Accepted, (ReasonCode, ProtocolVersion)> {
    let v = connect.protocol;
    let cfg = broker.config();
    let refuse = |code| Err((code, v));
    if connect.properties.authentication_method.is_some() {
        return refuse(ReasonCode::BadAuthenticationMethod);
    }
    if open_connections
        > broker
            .max_connections
            .load(std::sync::atomic::Ordering::Relaxed) as u64
    {
        return refuse(if v.is_v5() {
            ReasonCode::QuotaExceeded
        } else {
            ReasonCode::ServerUnavailable
        });
    }
    // MQTT 3.1 client identifiers are 1 to 23 characters (3.1 §3.1, return code 2).
    let v31_too_long = v == ProtocolVersion::V3_1 && connect.client_id.chars().count() > 23;
    if connect.client_id.len() > cfg.limits.max_client_id_length || v31_too_long {
        return refuse(ReasonCode::ClientIdentifierNotValid);
    }
    let mut assigned = None;
    let client_id = if connect.client_id.is_empty() {
        // 3.1 needs an id; 3.1.1 allows none only with a clean session [MQTT-3.1.3-8].
        if v == ProtocolVersion::V3_1 || (v == ProtocolVersion::V3_1_1 && !connect.clean_start) {
            return refuse(ReasonCode::ClientIdentifierNotValid);
        }
        let id = assign_client_id();
        if v.is_v5() {
            assigned = Some(id.clone());
        }
        id
    } else {
        connect.client_id.clone()
    };
    if let Some(will) = &connect.will {
        if will.qos as u8 > cfg.session.maximum_qos {
            return refuse(ReasonCode::QoSNotSupported);
        }
        if will.retain && !cfg.session.retain_available {
            return refuse(ReasonCode::RetainNotSupported);
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
        broker
            .stats
            .refuse(crate::broker::stats::RefuseReason::StoreFailed);
        return refuse(ReasonCode::ServerUnavailable);
    }
    let max_ka = cfg.limits.max_keep_alive_secs;
    let (keep_alive, server_keep_alive) =
        if v.is_v5() && max_ka > 0 && (connect.keep_alive == 0 || connect.keep_alive > max_ka) {
            (max_ka, Some(max_ka))
        } else {
            (connect.keep_alive, None)
        };

    // The certificate's name, when configured, replaces CONNECT's username.
    origin.username = cert_username
        .map(Into::into)
        .or_else(|| connect.username.as_ref().map(own_str));
    let attached = broker.attach(tenant, client_id.clone(), connect.clean_start, v, expiry);
    attached.session.lock().origin = Some(Box::new(origin));
    let mut connack = ConnAck::new(ReasonCode::Success, attached.present);
    if v.is_v5() {
        connack.properties = ConnAckProperties {
            session_expiry_interval: expiry_told,
            receive_maximum: Some(cfg.limits.receive_maximum),
            maximum_qos: match cfg.session.maximum_qos {
                0 => Some(QoS::AtMostOnce),
                1 => Some(QoS::AtLeastOnce),
                _ => None,
            },
            retain_available: (!cfg.session.retain_available).then_some(false),
            maximum_packet_size: Some(cfg.limits.max_packet_size.min(u32::MAX as usize) as u32),
            assigned_client_identifier: assigned,
            topic_alias_maximum: Some(cfg.limits.topic_alias_maximum),
            server_keep_alive,
            ..Default::default()
        };
    }
    let p = &connect.properties;
    let conn = Conn {
        version: v,
        session: attached.session,
        generation: attached.generation,
        keep_alive,
        client_receive_maximum: if v.is_v5() {
            p.receive_maximum.unwrap_or(u16::MAX)
        } else {
            u16::MAX
        },
        client_max_packet_size: p.maximum_packet_size.unwrap_or(u32::MAX),
        max_packet_size: cfg.limits.max_packet_size.min(u32::MAX as usize) as u32,
        client_alias_maximum: if v.is_v5() {
            p.topic_alias_maximum.unwrap_or(0)
        } else {
            0
        },
        expiry_at_connect: expiry,
        will: connect.will.map(|w| {
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
        }),
        aliases: None,
    };
    let mut ticket = attached.ticket;
    if let Some(will) = &conn.will {
        // Stored while the connection is open: a crash publishes it at the next start. A
        // will the store cannot record is refused rather than silently not kept.
        match broker
            .persist
            .put_will(&tenant.name, &conn.session, conn.generation, will)
        {
            Ok(t) => ticket = ticket.max(t),
            Err(reason) => {
                broker.stats.refuse(reason);
                broker.detach(tenant, &conn.session, conn.generation);
                return refuse(ReasonCode::UnspecifiedError);
            }
        }
    }
    Ok(Accepted {
        conn,
        connack,
        ticket,
    })
}

/// A client id for a client that sent none: unique within this process and unlikely to
/// collide with ids clients choose.
fn assign_client_id() -> mqtt_codec::ByteString {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    format!("herald-{:x}-{n:x}", t & 0xFFFF_FFFF_FFFF).into()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_level_of_a_connect_is_read_from_its_first_bytes() {
        let v5 = [0x10, 0x10, 0, 4, b'M', b'Q', b'T', b'T', 5, 0xff];
        assert_eq!(super::connect_level(&v5), Some(5));
        let long = [0x10, 0x80, 0x01, 0, 4, b'M', b'Q', b'T', b'T', 4];
        assert_eq!(super::connect_level(&long), Some(4));
        assert_eq!(
            super::connect_level(&[0x30, 2, 0, 4]),
            None,
            "not a CONNECT"
        );
        assert_eq!(
            super::connect_level(&[0x10, 9, 0, 6, b'M', b'Q', b'I', b's', b'd', b'p', 3]),
            None
        );
    }
}
