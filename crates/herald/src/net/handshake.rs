//! Opening a connection: the transport handshakes (PROXY header, TLS, WebSocket upgrade),
//! then CONNECT within the connect timeout, all in the connection's own task.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use mqtt_codec::{Packet, ProtocolVersion, ReasonCode};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::timeout;

use super::Endpoint;
use super::connect;
use super::connection::{LINGER, LINGER_BYTES, Live};
use super::socket::{Socket, TlsSocket};
use super::transport::{self, Transport};
use super::ws;
use crate::broker::Broker;
use crate::broker::session::connect::Arrival;
use crate::broker::session::{self, Closing, Origin};
use crate::broker::stats::CloseReason;

/// A connection whose transport handshakes are done and whose first packet arrived.
struct Opened {
    io: Transport,
    /// The client's address (from the PROXY header when the listener expects one).
    peer: SocketAddr,
    /// Bytes read after the first packet.
    rbuf: BytesMut,
    /// The username the client certificate carries (`tls.username_from`).
    cert_username: Option<String>,
    /// The tenant the client certificate names (`tls.tenant_from`).
    cert_tenant: Option<String>,
    /// The first packet, or why it did not decode.
    first: Result<Packet, mqtt_codec::DecodeError>,
    /// The protocol level the first bytes named, if they started a CONNECT.
    first_level: Option<u8>,
    /// Its size.
    first_size: usize,
}

/// The transport handshakes, in order: the PROXY header, TLS, the WebSocket upgrade; then
/// the first MQTT packet.
async fn open(
    stream: TcpStream,
    mut peer: SocketAddr,
    endpoint: &Endpoint,
    broker: &Broker,
) -> Result<Opened, CloseReason> {
    let mut rbuf = BytesMut::new();
    if endpoint.proxy_protocol {
        match transport::read_proxy_header(&stream).await {
            Ok((addr, rest)) => {
                if let Some(addr) = addr {
                    peer = addr;
                }
                if !endpoint.admission.admit(broker, peer.ip()) {
                    return Err(CloseReason::ConnectRateLimited);
                }
                rbuf = rest;
            }
            Err(transport::ProxyError::Closed) => return Err(CloseReason::PeerClosed),
            Err(transport::ProxyError::Invalid(why)) => {
                tracing::info!(%peer, listener = endpoint.kind.label(), reason = %why, "PROXY header refused");
                return Err(CloseReason::ProxyHeaderInvalid);
            }
        }
    }
    let (mut cert_username, mut cert_tenant) = (None, None);
    let link = match &endpoint.tls {
        Some(acceptor) => {
            let tls = TlsSocket::accept(stream, acceptor.config(), &rbuf)
                .await
                .map_err(|e| {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    if e.kind() == std::io::ErrorKind::UnexpectedEof {
                        CloseReason::PeerClosed
                    } else {
                        CloseReason::TlsHandshakeFailed
                    }
                })?;
            rbuf.clear();
            if let Some(cert) = tls.peer_certificate() {
                cert_username = super::tls::username_of(cert, acceptor.username_from());
                cert_tenant = super::tls::tenant_of(cert, acceptor.tenant_from());
            }
            Socket::Tls(Box::new(tls))
        }
        None => Socket::Tcp(stream),
    };
    let mut io = Transport::new(link, None);
    if endpoint.kind.is_ws() {
        let path = broker.config().listeners.ws_path.clone();
        rbuf = upgrade(&mut io, rbuf, &path, peer).await?;
    }
    let mut first_size = 0;
    let mut first_level = None;
    let first =
        match connect::first_packet(&mut io, &mut rbuf, broker.config().limits.max_packet_size)
            .await
        {
            Ok((packet, size)) => {
                first_size = size;
                Ok(packet)
            }
            Err(connect::FirstPacketError::Closed(reason)) => {
                // A layer may have an answer queued (a WebSocket close frame and its code).
                if io.has_pending() {
                    io.shutdown().await;
                }
                return Err(reason);
            }
            Err(connect::FirstPacketError::Decode(e, level)) => {
                first_level = level;
                Err(e)
            }
        };
    Ok(Opened {
        io,
        peer,
        rbuf,
        cert_username,
        cert_tenant,
        first,
        first_size,
        first_level,
    })
}

/// Reads the WebSocket upgrade request (after `already`, bytes read before) and answers
/// it; returns the MQTT bytes the frames after it carried.
async fn upgrade(
    io: &mut Transport,
    already: BytesMut,
    path: &str,
    peer: SocketAddr,
) -> Result<BytesMut, CloseReason> {
    let mut request = already;
    let upgrade = loop {
        match ws::parse_upgrade(&request, path) {
            Ok(Some(upgrade)) => break upgrade,
            Ok(None) => match io.read_some(&mut request).await {
                Ok(0) | Err(_) => return Err(CloseReason::PeerClosed),
                Ok(_) => {}
            },
            Err(refusal) => {
                tracing::debug!(%peer, status = refusal.status, reason = %refusal.reason, "WebSocket upgrade refused");
                let _ = io
                    .write_all(ws::refusal_response(&refusal).as_bytes())
                    .await;
                return Err(CloseReason::WebSocketRefused);
            }
        }
    };
    io.write_all(ws::response(&upgrade).as_bytes())
        .await
        .map_err(|_| CloseReason::IoError)?;
    let mut rest = request.split_off(upgrade.len);
    let mut framing = Box::<ws::Framing>::default();
    let unframed = framing.unframe(&mut rest, 0);
    io.set_ws(framing);
    if unframed.is_err() {
        io.shutdown().await;
        return Err(CloseReason::ProtocolError);
    }
    Ok(rest)
}

/// Opens the transport and reads CONNECT within the connect timeout, attaches the session,
/// sends CONNACK; or answers the refusal and says why the connection ends. On success, the
/// connection's state and the outcome of sending CONNACK.
pub(super) async fn handshake(
    stream: TcpStream,
    peer: SocketAddr,
    endpoint: Arc<Endpoint>,
    broker: &Arc<Broker>,
    mut shutdown: watch::Receiver<bool>,
    open_connections: u64,
) -> Result<(Box<Live>, Result<(), Closing>), CloseReason> {
    let connect_timeout = broker.config().limits.connect_timeout_secs;
    let opening = timeout(
        Duration::from_secs(connect_timeout),
        open(stream, peer, &endpoint, broker),
    );
    let mut opened = tokio::select! {
        opened = opening => match opened {
            Err(_) => return Err(CloseReason::ConnectTimeout),
            Ok(result) => result?,
        },
        _ = shutdown.changed() => return Err(CloseReason::ServerShutdown),
    };
    if let Ok(first) = &opened.first {
        broker
            .stats
            .hot
            .packet_in(first.packet_type(), opened.first_size);
    }
    if opened.rbuf.is_empty() {
        // Authentication and the cluster's claim may wait: a connect storm must not hold a
        // read buffer per waiting CONNECT (the memory would stay with the process).
        opened.rbuf = bytes::BytesMut::new();
    }
    let connect = match opened.first {
        Ok(Packet::Connect(c)) => c,
        // The first packet must be CONNECT [MQTT-3.1.0-1].
        Ok(_) => return Err(CloseReason::ProtocolError),
        Err(e) => {
            // Before CONNACK there is no DISCONNECT; only an unsupported level is answered.
            if connect::refuse_undecodable(&mut opened.io, opened.first_level, &e).await {
                close_answered(&mut opened.io).await;
            }
            return Err(Closing::decode(&e).reason);
        }
    };
    let origin = Origin {
        peer: opened.peer,
        listener: endpoint.kind,
        username: None,
    };
    let arrival = Arrival {
        open_connections,
        origin,
        cert_username: opened.cert_username,
        cert_tenant: opened.cert_tenant,
        v3_accept_refused: endpoint.v3_accept_refused,
    };
    let mut checked = match session::connect::check(broker, *connect, arrival) {
        Ok(checked) => checked,
        Err((code, version)) => return Err(refuse(opened.io, broker, code, version).await),
    };
    // Authentication may wait (a password hash, a token's keys, an HTTP callout): within
    // the connect timeout, and not past a shutdown.
    let authenticating = timeout(
        Duration::from_secs(connect_timeout),
        session::connect::authenticate(broker, &checked),
    );
    let timed_out = (ReasonCode::ServerUnavailable, checked.version());
    let authenticated = tokio::select! {
        result = authenticating => result.unwrap_or(Err(timed_out)),
        _ = shutdown.changed() => return Err(CloseReason::ServerShutdown),
    };
    // Clustered: the client id is claimed in the cluster's registry first (the node that
    // held it lets go); a node that cannot claim it accepts no CONNECT for it (fencing).
    let cluster = broker.peers_as::<crate::cluster::Cluster>();
    let mut claim = None;
    let authenticated = match (authenticated, cluster) {
        (Ok(a), Some(cluster)) => {
            let claiming = timeout(
                Duration::from_secs(connect_timeout),
                cluster.claim(broker, &a.tenant, checked.client_id(), checked.resumes()),
            );
            let claimed = tokio::select! {
                result = claiming => result,
                _ = shutdown.changed() => return Err(CloseReason::ServerShutdown),
            };
            match claimed {
                Ok(Ok(c)) => {
                    claim = Some((a.tenant.clone(), c.revision));
                    checked.set_claim(c.revision);
                    Ok(a)
                }
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "a client id could not be claimed");
                    Err(timed_out)
                }
                Err(_) => Err(timed_out),
            }
        }
        (other, _) => other,
    };
    let client_id = checked.client_id().clone();
    match authenticated.and_then(|a| session::connect::accept(broker, checked, a)) {
        Ok(accepted) => {
            if let Some((tenant, revision)) = claim.clone() {
                // A claim made elsewhere at the same moment may have asked this node to let
                // go before this session was attached: checked now, off the CONNECT's path.
                let (broker, client_id) = (broker.clone(), client_id.clone());
                tokio::spawn(async move {
                    if let Some(cluster) = broker.peers_as::<crate::cluster::Cluster>() {
                        cluster
                            .confirm_claim(&broker, &tenant, &client_id, revision)
                            .await;
                    }
                });
            }
            broker
                .stats
                .connections
                .open(endpoint.kind, accepted.link.version(), true);
            let mut live = Live::new(
                opened.io,
                &endpoint,
                opened.peer,
                opened.rbuf,
                accepted.link,
            );
            let started = live.start(accepted.connack, accepted.ticket);
            Ok((live, started))
        }
        Err((code, version)) => {
            // Refused after its claim (a quota): the claim goes.
            if let (Some(cluster), Some((tenant, revision))) = (cluster, claim) {
                cluster.release(&tenant, &client_id, revision);
            }
            Err(refuse(opened.io, broker, code, version).await)
        }
    }
}

/// Answers a refused CONNECT: a CONNACK with the refusal's reason code, in the protocol
/// version the client asked for, then the close. Says why the connection ends.
async fn refuse(
    mut io: Transport,
    broker: &Broker,
    code: ReasonCode,
    version: ProtocolVersion,
) -> CloseReason {
    let store_failed = broker.persist.failed();
    let reason = match code {
        // A persistent session cannot be stored (connect::accept).
        ReasonCode::ServerUnavailable if store_failed => CloseReason::StoreFailed,
        ReasonCode::QuotaExceeded | ReasonCode::ServerUnavailable => CloseReason::ConnectionLimit,
        _ => CloseReason::ConnectRefused,
    };
    let ack = Packet::ConnAck(Box::new(mqtt_codec::ConnAck::new(code, false)));
    if let Ok(bytes) = ack.to_bytes(version) {
        broker
            .stats
            .hot
            .packets_out(mqtt_codec::PacketType::ConnAck, 1, bytes.len());
        let _ = timeout(Duration::from_secs(1), io.write_all(&bytes)).await;
    }
    close_answered(&mut io).await;
    reason
}

/// Closes a connection whose refusal was answered before CONNACK: shuts it down, then
/// lingers so that the client reads the answer before any reset destroys it.
async fn close_answered(io: &mut Transport) {
    let _ = timeout(Duration::from_millis(200), io.shutdown()).await;
    io.linger(LINGER, LINGER_BYTES).await;
}
