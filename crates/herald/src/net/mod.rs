//! Listeners and connections: the accept loop, the per-connection task, outbound writing.

mod connect;
pub mod connection;
mod deliver;
mod outgoing;
mod packets;
pub mod tls;
mod transport;
mod ws;

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
}

/// TCP keepalive: a second line of dead-peer detection behind MQTT keep-alive.
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);

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
                configure(&stream);
                tokio::spawn(connection::serve(
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
