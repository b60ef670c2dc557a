//! The byte stream under MQTT: TCP, TLS, WebSocket or WebSocket over TLS.
//!
//! [`Connector::open`] resolves the host, connects, and runs the TLS handshake and the
//! WebSocket upgrade; the caller bounds the time it takes. [`Conn`] then reads MQTT bytes
//! (cancel-safe, so that a `select!` may drop a read for another branch without losing
//! bytes) and writes them (not cancel-safe: callers write outside `select!`).

use std::fmt;
use std::io;
use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::rand::{XorShift, os_u64};
use super::{tls, ws};

/// Which transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// MQTT over TCP (`mqtt://`).
    Tcp,
    /// MQTT over TLS (`mqtts://`).
    Tls,
    /// MQTT over WebSocket (`ws://`).
    Ws,
    /// MQTT over WebSocket over TLS (`wss://`).
    Wss,
}

impl Kind {
    /// The URL scheme.
    pub(super) fn scheme(self) -> &'static str {
        match self {
            Kind::Tcp => "mqtt",
            Kind::Tls => "mqtts",
            Kind::Ws => "ws",
            Kind::Wss => "wss",
        }
    }

    /// The transport a URL scheme names.
    pub(super) fn from_scheme(scheme: &str) -> Option<Kind> {
        [Kind::Tcp, Kind::Tls, Kind::Ws, Kind::Wss]
            .into_iter()
            .find(|k| k.scheme().eq_ignore_ascii_case(scheme))
    }

    /// Whether TLS is under it.
    pub(super) fn is_tls(self) -> bool {
        matches!(self, Kind::Tls | Kind::Wss)
    }

    /// Whether WebSocket is under it.
    pub(super) fn is_ws(self) -> bool {
        matches!(self, Kind::Ws | Kind::Wss)
    }

    /// The port a URL of this scheme means when it names none.
    pub(super) fn default_port(self) -> u16 {
        match self {
            Kind::Tcp => 1883,
            Kind::Tls => 8883,
            Kind::Ws => 80,
            Kind::Wss => 443,
        }
    }
}

/// Where to connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Endpoint {
    /// The transport.
    pub(super) kind: Kind,
    /// A DNS name or an IP address (without brackets); also the TLS server name.
    pub(super) host: String,
    /// The TCP port.
    pub(super) port: u16,
    /// The WebSocket request path (unused otherwise).
    pub(super) path: String,
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.kind.scheme(), self.authority())?;
        if self.kind.is_ws() {
            f.write_str(&self.path)?;
        }
        Ok(())
    }
}

impl Endpoint {
    /// `host:port`, an IPv6 address in brackets: the WebSocket Host header.
    fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// Why a connection could not be opened.
#[derive(Debug, thiserror::Error)]
pub(super) enum OpenError {
    /// The host name does not resolve.
    #[error("cannot resolve {0}: {1}")]
    Resolve(String, io::Error),
    /// TCP: refused, unreachable, reset.
    #[error("{0}")]
    Tcp(io::Error),
    /// The TLS handshake failed.
    #[error("TLS handshake failed: {0}")]
    Tls(io::Error),
    /// The WebSocket upgrade failed.
    #[error("{0}")]
    WebSocket(io::Error),
}

impl OpenError {
    /// Whether waiting cannot help: a name that does not resolve, a certificate that does
    /// not verify, an upgrade the server refuses. Only the first connection of a run is
    /// given up on for these; once connected, they may be a server restarting.
    pub(super) fn is_configuration(&self) -> bool {
        match self {
            OpenError::Resolve(..) => true,
            OpenError::Tcp(_) => false,
            OpenError::Tls(e) => e.kind() == io::ErrorKind::InvalidData,
            OpenError::WebSocket(e) => e.kind() == io::ErrorKind::ConnectionRefused,
        }
    }
}

/// A byte stream MQTT runs over (TCP or TLS over TCP).
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Opens connections; holds the TLS configuration, read once at start.
#[derive(Clone)]
pub(super) struct Connector {
    /// The TLS client, when TLS is configured.
    tls: Option<TlsConnector>,
}

impl Connector {
    /// A connector; `tls` is needed for mqtts:// and wss:// endpoints.
    pub(super) fn new(tls: Option<Arc<rustls::ClientConfig>>) -> Self {
        Connector {
            tls: tls.map(TlsConnector::from),
        }
    }

    /// Connects to `to`: TCP (each resolved address in turn), then TLS and the WebSocket
    /// upgrade as `to` asks.
    pub(super) async fn open(&self, to: &Endpoint) -> Result<Conn, OpenError> {
        let addrs: Vec<_> = tokio::net::lookup_host((to.host.as_str(), to.port))
            .await
            .map_err(|e| OpenError::Resolve(to.host.clone(), e))?
            .collect();
        let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
        let mut tcp = None;
        for addr in addrs {
            match TcpStream::connect(addr).await {
                Ok(s) => {
                    tcp = Some(s);
                    break;
                }
                Err(e) => last = e,
            }
        }
        let tcp = tcp.ok_or(OpenError::Tcp(last))?;
        // MQTT packets are small and latency matters more than segment count.
        tcp.set_nodelay(true).map_err(OpenError::Tcp)?;
        let mut io: Box<dyn Io> = if to.kind.is_tls() {
            let Some(connector) = &self.tls else {
                let why = "TLS is not configured (give --cafile, --tls-use-os-certs or --insecure)";
                return Err(OpenError::Tls(io::Error::new(
                    io::ErrorKind::InvalidData,
                    why,
                )));
            };
            let name = tls::server_name(&to.host)
                .map_err(|e| OpenError::Tls(io::Error::new(io::ErrorKind::InvalidData, e)))?;
            Box::new(connector.connect(name, tcp).await.map_err(OpenError::Tls)?)
        } else {
            Box::new(tcp)
        };
        let ws = if to.kind.is_ws() {
            let leftover = ws::handshake(&mut io, &to.authority(), &to.path)
                .await
                .map_err(OpenError::WebSocket)?;
            Some(WsState {
                deframer: ws::Deframer::default(),
                raw: BytesMut::from(&leftover[..]),
                control: Vec::new(),
                masks: XorShift::new(os_u64()),
            })
        } else {
            None
        };
        Ok(Conn { io, ws })
    }
}

/// One open connection.
pub(super) struct Conn {
    /// TCP, or TLS over TCP.
    io: Box<dyn Io>,
    /// WebSocket framing above `io`, for ws:// and wss://.
    ws: Option<WsState>,
}

/// The WebSocket layer of a [`Conn`].
struct WsState {
    /// Where the incoming frame stream stands.
    deframer: ws::Deframer,
    /// Bytes read and not yet deframed: kept here, not in the caller's buffer, so that a
    /// read cancelled after the socket gave bytes loses none.
    raw: BytesMut,
    /// Control frames (pongs) to send before the next data frame.
    control: Vec<u8>,
    /// Masking keys.
    masks: XorShift,
}

impl WsState {
    fn mask(&mut self) -> [u8; 4] {
        (self.masks.next_u64() as u32).to_ne_bytes()
    }
}

impl Conn {
    /// Reads MQTT bytes into `buf`; 0 at the end of the stream. Cancel-safe: the only
    /// await is a socket read, and whatever it returned is in `buf` (or `raw`) before the
    /// next await.
    pub(super) async fn read(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        let Some(ws) = &mut self.ws else {
            return self.io.read_buf(buf).await;
        };
        loop {
            if !ws.raw.is_empty() {
                let kept = ws.deframer.deframe(&mut ws.raw)?;
                buf.extend_from_slice(&ws.raw[..kept]);
                ws.raw.clear();
                if let Some(ping) = ws.deframer.pong.take() {
                    let key = ws.mask();
                    ws::frame(&mut ws.control, ws::PONG, &ping, key);
                }
                if kept > 0 {
                    return Ok(kept);
                }
            }
            if ws.deframer.closed {
                return Ok(0);
            }
            if self.io.read_buf(&mut ws.raw).await? == 0 {
                return Ok(0);
            }
        }
    }

    /// Writes `bytes` (as one binary frame over WebSocket, after any pong owed) and flushes.
    pub(super) async fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        match &mut self.ws {
            None => self.io.write_all(bytes).await?,
            Some(ws) => {
                let mut out = std::mem::take(&mut ws.control);
                let key = ws.mask();
                ws::frame(&mut out, ws::BINARY, bytes, key);
                self.io.write_all(&out).await?;
            }
        }
        // TLS holds written bytes until flushed.
        self.io.flush().await
    }

    /// Closes the sending side: a WebSocket close frame (1000, normal), TLS close_notify,
    /// TCP FIN.
    pub(super) async fn shutdown(&mut self) -> io::Result<()> {
        if let Some(ws) = &mut self.ws {
            let mut out = std::mem::take(&mut ws.control);
            let key = ws.mask();
            ws::frame(&mut out, ws::CLOSE, &1000u16.to_be_bytes(), key);
            self.io.write_all(&out).await?;
        }
        self.io.shutdown().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_print_as_urls() {
        let mut e = Endpoint {
            kind: Kind::Wss,
            host: "::1".into(),
            port: 8084,
            path: "/mqtt".into(),
        };
        assert_eq!(e.to_string(), "wss://[::1]:8084/mqtt");
        e.kind = Kind::Tcp;
        e.host = "broker".into();
        assert_eq!(e.to_string(), "mqtt://broker:8084");
        assert_eq!(Kind::from_scheme("MQTTS"), Some(Kind::Tls));
        assert_eq!(Kind::from_scheme("http"), None);
    }
}
