//! Listeners and connections: the accept loop, the per-connection task, outbound writing.
//!
//! From the accept loop down to the socket, each file depends only on files listed after it
//! (and on `Endpoint`, in `mod.rs`):
//!
//! - `mod.rs`: the listeners (`Endpoint`, `bind`) and the accept loop, which only accepts.
//! - `task.rs`: the connection task, from accept to close.
//! - `handshake.rs`: PROXY header, TLS, WebSocket upgrade, then CONNECT, under the connect
//!   timeout; an accepted CONNECT becomes a `Live` connection.
//! - `connection.rs`: the `Live` connection, a readiness-driven loop until it closes.
//! - `connect.rs`: reading the first packet, answering a CONNECT that did not decode.
//! - `outgoing.rs`: the write queue and its vectored writes.
//! - `transport.rs`: a connection's bytes, WebSocket-framed or not; the PROXY header.
//! - `ws.rs`: the WebSocket upgrade and framing.
//! - `socket.rs`: the socket: TCP, or TLS over TCP.
//! - `tls.rs`: certificates, client certificates, rotation.

pub mod admission;
mod connect;
mod connection;
mod handshake;
mod outgoing;
mod socket;
mod task;
pub mod tls;
mod transport;
mod ws;

/// The transport decoders (WebSocket frames, the WebSocket upgrade request, the PROXY
/// protocol header) for the fuzz targets in `crates/herald/fuzz` and their corpus replay.
#[doc(hidden)]
pub mod fuzzing {
    use bytes::BytesMut;

    /// Feeds `input` to a WebSocket de-framer in pieces of the given sizes (cycled; the
    /// rest in one piece when `splits` is empty) and returns the MQTT bytes it gave, or
    /// `None` once it refused a frame. Checks what must hold whatever the input: no piece
    /// gives more bytes than it had, and a refusal always queues a close frame.
    pub fn ws_unframe(input: &[u8], splits: &[u8]) -> Option<Vec<u8>> {
        let mut framing = super::ws::Framing::default();
        let mut buf = BytesMut::new();
        let mut rest = input;
        let mut i = 0;
        while !rest.is_empty() {
            let size = match splits.get(i % splits.len().max(1)) {
                Some(&s) if s > 0 => usize::from(s).min(rest.len()),
                _ => rest.len(),
            };
            i += 1;
            let (piece, after) = rest.split_at(size);
            rest = after;
            let start = buf.len();
            buf.extend_from_slice(piece);
            match framing.unframe(&mut buf, start) {
                Ok(n) => assert!(n <= piece.len() && buf.len() == start + n),
                Err(_) => {
                    assert!(
                        framing.has_pending(),
                        "a refused frame queues a close frame"
                    );
                    return None;
                }
            }
        }
        Some(buf.to_vec())
    }

    /// Parses a WebSocket upgrade request for `path`: `Ok(Some(length))` when accepted,
    /// `Ok(None)` while incomplete, `Err(status)` when refused.
    pub fn ws_upgrade(input: &[u8], path: &str) -> Result<Option<usize>, &'static str> {
        match super::ws::parse_upgrade(input, path) {
            Ok(Some(u)) => {
                assert!(u.len <= input.len());
                assert!(super::ws::response(&u).starts_with("HTTP/1.1 101 "));
                Ok(Some(u.len))
            }
            Ok(None) => Ok(None),
            Err(refusal) => Err(refusal.status),
        }
    }

    /// Parses a PROXY protocol header: the client address and the header's length,
    /// `Ok(None)` while incomplete, or why it was refused.
    pub fn proxy_header(
        input: &[u8],
    ) -> Result<Option<(Option<std::net::SocketAddr>, usize)>, String> {
        match super::transport::parse_proxy_header(input) {
            Ok(Some((addr, len))) => {
                assert!(len <= input.len());
                Ok(Some((addr, len)))
            }
            Ok(None) => Ok(None),
            Err(super::transport::ProxyError::Invalid(why)) => Err(why),
            Err(super::transport::ProxyError::Closed) => Err("closed".into()),
        }
    }
}

use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::broker::Broker;
use crate::config::ListenerKind;

/// A listener: what it speaks, shared by its connections.
#[derive(Debug)]
pub struct Endpoint {
    /// MQTT, WebSocket, TLS or WSS.
    pub kind: ListenerKind,
    /// Connections start with a PROXY protocol header.
    pub proxy_protocol: bool,
    /// Certificates, for TLS and WSS listeners.
    pub tls: Option<Arc<tls::TlsAcceptor>>,
    /// A 3.1/3.1.1 QoS 1/2 PUBLISH that cannot be queued is acknowledged and counted
    /// instead of closing the connection (`listeners.v3_accept_refused`).
    pub v3_accept_refused: bool,
    /// The per-address connection rate, shared by every listener of the node.
    pub admission: Arc<admission::Admission>,
}

/// TCP keepalive: a second line of dead-peer detection behind MQTT keep-alive.
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);

/// Listens on `addr` with a listen backlog of `backlog` (`listeners.backlog`; tokio's own
/// `bind` asks for 128, which a reconnect storm overflows: each dropped SYN then costs its
/// client a retransmission, a second or more).
pub fn bind(addr: std::net::SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    // As tokio's `bind` does: a restarted node can listen again at once, without waiting
    // for the previous process's connections in TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

/// Accepts connections on `listener` until `shutdown` changes; each connection runs in its
/// own task (counted in `Stats::open`, which shutdown waits on). The loop only accepts:
/// handshakes happen in the connection's task.
pub async fn accept_loop(
    listener: TcpListener,
    endpoint: Arc<Endpoint>,
    broker: Arc<Broker>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_millis(5);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.changed() => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                backoff = Duration::from_millis(5);
                // Behind a PROXY header the client's own address is checked once read.
                if !endpoint.proxy_protocol && !endpoint.admission.admit(&broker, peer.ip()) {
                    drop(stream);
                    broker
                        .stats
                        .closed(crate::broker::stats::CloseReason::ConnectRateLimited);
                    continue;
                }
                configure(&stream);
                tokio::spawn(task::serve(
                    stream,
                    peer,
                    endpoint.clone(),
                    broker.clone(),
                    shutdown.clone(),
                ));
            }
            Err(e) => {
                // Out of file descriptors (EMFILE/ENFILE) or a transient error: back off
                // rather than spin; connections close and free descriptors meanwhile.
                tracing::warn!(error = %e, backoff_ms = backoff.as_millis() as u64, "accept failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}

fn configure(stream: &TcpStream) {
    let _ = stream.set_nodelay(true);
    let sock = socket2::SockRef::from(stream);
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(TCP_KEEPALIVE)
        .with_interval(Duration::from_secs(10))
        .with_retries(6);
    let _ = sock.set_tcp_keepalive(&keepalive);
}
