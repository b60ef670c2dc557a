//! How clients reach the broker: plain TCP, TLS, WebSocket (`ws://`) or WebSocket over TLS
//! (`wss://`), chosen by `--transport` and the same for every client of a run.
//!
//! - [`TransportArgs`] are the command-line flags; [`TransportSpec`] is what a worker process
//!   is sent; [`Connector`] is built from it once per worker and opens every connection.
//! - [`Stream`] is one open connection. Scenarios use it as they would a `TcpStream`: read
//!   into a `BytesMut`, write a whole `BytesMut`, or [`Stream::split`] it to do both inside one
//!   `select!`. TCP connections stay a bare `TcpStream`; layered ones (TLS, WebSocket) sit
//!   behind an uncontended mutex shared by the two halves, which are polled by one task.
//! - [`tls`]: the rustls client configuration, and the self-signed certificate `compare`
//!   gives brokers. [`ws`]: the WebSocket handshake and framing, streamed through the
//!   caller's buffers so that no per-connection buffer is added.

pub mod tls;
pub mod ws;

use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::{Pin, pin};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, ready};

use anyhow::{Context as _, bail};
use bytes::BytesMut;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream, tcp};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::client::{Failure, Target};
use ws::Ws;

/// The transport clients use.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "snake_case")]
pub enum TransportKind {
    /// MQTT over plain TCP.
    #[default]
    Tcp,
    /// MQTT over TLS.
    Tls,
    /// MQTT over WebSocket (binary frames, subprotocol `mqtt`).
    Ws,
    /// MQTT over WebSocket over TLS.
    Wss,
}

impl TransportKind {
    /// Every kind, in table order.
    pub const ALL: [TransportKind; 4] = [
        TransportKind::Tcp,
        TransportKind::Tls,
        TransportKind::Ws,
        TransportKind::Wss,
    ];

    /// The name used on the command line and in tables.
    pub fn name(self) -> &'static str {
        match self {
            TransportKind::Tcp => "tcp",
            TransportKind::Tls => "tls",
            TransportKind::Ws => "ws",
            TransportKind::Wss => "wss",
        }
    }

    /// Whether the transport runs over TLS.
    pub fn is_tls(self) -> bool {
        matches!(self, TransportKind::Tls | TransportKind::Wss)
    }

    /// Whether the transport runs over WebSocket.
    pub fn is_ws(self) -> bool {
        matches!(self, TransportKind::Ws | TransportKind::Wss)
    }
}

/// A TLS protocol version to insist on (`--tls-version`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
pub enum TlsVersion {
    /// TLS 1.2 only.
    #[value(name = "1.2")]
    #[serde(rename = "1.2")]
    V1_2,
    /// TLS 1.3 only.
    #[value(name = "1.3")]
    #[serde(rename = "1.3")]
    V1_3,
}

/// The transport flags every scenario takes.
#[derive(Debug, Clone, clap::Args)]
pub struct TransportArgs {
    /// How clients reach the broker: tcp, tls, ws (WebSocket) or wss (WebSocket over TLS).
    #[arg(long, value_enum, default_value = "tcp")]
    pub transport: TransportKind,
    /// The WebSocket path (ws, wss).
    #[arg(long, default_value = "/mqtt")]
    pub ws_path: String,
    /// PEM CA bundle that verifies the broker's certificate (tls, wss).
    #[arg(long)]
    pub tls_ca: Option<PathBuf>,
    /// Accept any broker certificate, e.g. a self-signed benchmark certificate (tls, wss).
    #[arg(long)]
    pub insecure: bool,
    /// The name the broker's certificate must carry; also the WebSocket Host header.
    #[arg(long, default_value = "localhost")]
    pub tls_server_name: String,
    /// Insist on one TLS version (default: negotiate, TLS 1.3 normally).
    #[arg(long, value_enum)]
    pub tls_version: Option<TlsVersion>,
}

impl TransportArgs {
    /// The spec these flags describe, checked: TLS needs a CA or `--insecure`.
    pub fn spec(&self) -> anyhow::Result<TransportSpec> {
        let spec = TransportSpec {
            kind: self.transport,
            ws_path: self.ws_path.clone(),
            tls_ca: match &self.tls_ca {
                Some(p) => Some(std::path::absolute(p)?),
                None => None,
            },
            insecure: self.insecure,
            server_name: self.tls_server_name.clone(),
            tls_version: self.tls_version,
        };
        spec.check()?;
        Ok(spec)
    }
}

/// The transport settings of a run, as sent to worker processes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransportSpec {
    /// Which transport.
    pub kind: TransportKind,
    /// The WebSocket request path.
    pub ws_path: String,
    /// CA certificates (PEM) that verify the broker.
    pub tls_ca: Option<PathBuf>,
    /// Skip certificate verification.
    pub insecure: bool,
    /// TLS server name (SNI and verification) and the WebSocket Host header.
    pub server_name: String,
    /// Only this TLS version, when set.
    pub tls_version: Option<TlsVersion>,
}

impl Default for TransportSpec {
    fn default() -> Self {
        TransportSpec {
            kind: TransportKind::Tcp,
            ws_path: "/mqtt".into(),
            tls_ca: None,
            insecure: false,
            server_name: "localhost".into(),
            tls_version: None,
        }
    }
}

impl TransportSpec {
    /// Plain TCP.
    pub fn tcp() -> Self {
        TransportSpec::default()
    }

    /// Fails when the settings cannot work.
    pub fn check(&self) -> anyhow::Result<()> {
        if self.kind.is_tls() && self.tls_ca.is_none() && !self.insecure {
            bail!(
                "--transport {} needs --tls-ca FILE (the broker's CA) or --insecure",
                self.kind.name()
            );
        }
        if self.kind.is_ws() && !self.ws_path.starts_with('/') {
            bail!("--ws-path must start with '/'");
        }
        Ok(())
    }
}

/// Opens connections over one transport. Cloning it (once per connection task) only counts
/// a reference.
#[derive(Clone, Default)]
pub struct Connector(Arc<Settings>);

/// What a [`Connector`] shares between its clones.
#[derive(Default)]
struct Settings {
    kind: TransportKind,
    /// The TLS client and the name it verifies, for tls and wss.
    tls: Option<(TlsConnector, rustls::pki_types::ServerName<'static>)>,
    /// Host header and request path, for ws and wss.
    ws: (String, String),
}

impl fmt::Debug for Connector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connector")
            .field("kind", &self.0.kind)
            .field("ws", &self.0.ws)
            .finish_non_exhaustive()
    }
}

impl Connector {
    /// A connector for `spec`; reads the CA file, if any.
    pub fn new(spec: &TransportSpec) -> anyhow::Result<Connector> {
        spec.check()?;
        let tls = if spec.kind.is_tls() {
            let config = tls::client_config(spec)?;
            let name = rustls::pki_types::ServerName::try_from(spec.server_name.clone())
                .with_context(|| format!("--tls-server-name {:?}", spec.server_name))?;
            Some((TlsConnector::from(Arc::new(config)), name))
        } else {
            None
        };
        Ok(Connector(Arc::new(Settings {
            kind: spec.kind,
            tls,
            ws: (spec.server_name.clone(), spec.ws_path.clone()),
        })))
    }

    /// The transport this connector opens.
    pub fn kind(&self) -> TransportKind {
        self.0.kind
    }

    /// Opens a TCP connection to `target` and the layers above it (TLS handshake, WebSocket
    /// upgrade). The caller bounds the time it takes.
    pub async fn connect(&self, target: Target) -> Result<Stream, Failure> {
        let socket = match target.addr {
            SocketAddr::V4(_) => TcpSocket::new_v4()?,
            SocketAddr::V6(_) => TcpSocket::new_v6()?,
        };
        if let Some(source) = target.source {
            socket.bind(SocketAddr::new(source, 0))?;
        }
        let tcp = socket.connect(target.addr).await?;
        tcp.set_nodelay(true)?;
        let (host, path) = (&self.0.ws.0, &self.0.ws.1);
        let layered = match (self.0.kind, &self.0.tls) {
            (TransportKind::Tcp, _) => return Ok(Stream::Tcp(tcp)),
            (TransportKind::Ws, _) => Layer::Ws(ws::handshake(tcp, host, path).await?),
            (TransportKind::Tls, Some((tls, name))) => {
                Layer::Tls(Box::new(tls_handshake(tls, name, tcp).await?))
            }
            (TransportKind::Wss, Some((tls, name))) => {
                let tls = tls_handshake(tls, name, tcp).await?;
                Layer::Wss(Box::new(ws::handshake(tls, host, path).await?))
            }
            (kind, None) => {
                return Err(Failure::Handshake(format!(
                    "{} connector without TLS settings",
                    kind.name()
                )));
            }
        };
        Ok(Stream::Layered(Box::new(Mutex::new(Layered(layered)))))
    }
}

async fn tls_handshake(
    tls: &TlsConnector,
    name: &rustls::pki_types::ServerName<'static>,
    tcp: TcpStream,
) -> Result<TlsStream<TcpStream>, Failure> {
    tls.connect(name.clone(), tcp).await.map_err(|e| {
        // rustls reports its errors as InvalidData; anything else is the socket's.
        if e.kind() == io::ErrorKind::InvalidData {
            Failure::Handshake(format!("TLS: {e}"))
        } else {
            e.into()
        }
    })
}

/// A transport above TCP (opaque: reached through [`Stream`]).
pub struct Layered(Layer);

/// The TLS variants are boxed: a rustls connection is several times the size of the rest,
/// and plain WebSocket connections should not pay for it.
enum Layer {
    Tls(Box<TlsStream<TcpStream>>),
    Ws(Ws<TcpStream>),
    Wss(Box<Ws<TlsStream<TcpStream>>>),
}

impl Layered {
    fn poll_read_buf(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
    ) -> Poll<io::Result<usize>> {
        match &mut self.0 {
            Layer::Tls(s) => {
                // A write cancelled by the scenario's select! may have left bytes inside
                // rustls with the caller's buffer already empty: reads push them out.
                let _ = Pin::new(&mut **s).poll_flush(cx);
                poll_read_into(&mut **s, cx, buf)
            }
            Layer::Ws(w) => w.poll_read_buf(cx, buf),
            Layer::Wss(w) => w.poll_read_buf(cx, buf),
        }
    }

    fn poll_write_buf(&mut self, cx: &mut Context<'_>, buf: &mut BytesMut) -> Poll<io::Result<()>> {
        match &mut self.0 {
            Layer::Tls(s) => {
                while !buf.is_empty() {
                    if ready!(pin!(s.write_buf(buf)).poll(cx))? == 0 {
                        return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                    }
                }
                Pin::new(&mut **s).poll_flush(cx)
            }
            Layer::Ws(w) => w.poll_write_buf(cx, buf),
            Layer::Wss(w) => w.poll_write_buf(cx, buf),
        }
    }

    fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.0 {
            Layer::Tls(s) => Pin::new(&mut **s).poll_shutdown(cx),
            Layer::Ws(w) => w.poll_shutdown(cx),
            Layer::Wss(w) => w.poll_shutdown(cx),
        }
    }
}

/// One read from `io` appended to `buf` (no more than one poll of `read_buf`).
fn poll_read_into<S: AsyncRead + Unpin>(
    io: &mut S,
    cx: &mut Context<'_>,
    buf: &mut BytesMut,
) -> Poll<io::Result<usize>> {
    pin!(io.read_buf(buf)).poll(cx)
}

/// One open connection to the broker.
pub enum Stream {
    /// Plain TCP, used directly.
    Tcp(TcpStream),
    /// TLS and/or WebSocket; the mutex lets [`Stream::split`]'s halves share it.
    Layered(Box<Mutex<Layered>>),
}

impl fmt::Debug for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stream::Tcp(s) => f.debug_tuple("Tcp").field(s).finish(),
            Stream::Layered(_) => f.write_str("Layered"),
        }
    }
}

/// Locks a layered stream. The halves are polled by one task, one at a time, so the lock is
/// never contended; a poisoned lock (a panic mid-poll) leaves nothing worth protecting.
fn lock(m: &Mutex<Layered>) -> MutexGuard<'_, Layered> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Stream {
    /// Reads what has arrived (MQTT bytes, after any TLS and WebSocket framing) into `buf`;
    /// 0 at the end of the stream. Cancel-safe.
    pub async fn read_buf(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read_buf(buf).await,
            Stream::Layered(m) => {
                let layered = m.get_mut().unwrap_or_else(|p| p.into_inner());
                std::future::poll_fn(|cx| layered.poll_read_buf(cx, buf)).await
            }
        }
    }

    /// Writes all of `buf`. If cancelled, what was not written stays in `buf` (for
    /// WebSocket, already framed: call again with the same buffer).
    pub async fn write_all_buf(&mut self, buf: &mut BytesMut) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.write_all_buf(buf).await,
            Stream::Layered(m) => {
                let layered = m.get_mut().unwrap_or_else(|p| p.into_inner());
                std::future::poll_fn(|cx| layered.poll_write_buf(cx, buf)).await
            }
        }
    }

    /// Closes the sending side (TLS close_notify, WebSocket close frame, TCP FIN).
    pub async fn shutdown(&mut self) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.shutdown().await,
            Stream::Layered(m) => {
                let layered = m.get_mut().unwrap_or_else(|p| p.into_inner());
                std::future::poll_fn(|cx| layered.poll_shutdown(cx)).await
            }
        }
    }

    /// A reading half and a writing half, to use both at once in one task.
    pub fn split(&mut self) -> (ReadHalf<'_>, WriteHalf<'_>) {
        match self {
            Stream::Tcp(s) => {
                let (r, w) = s.split();
                (ReadHalf::Tcp(r), WriteHalf::Tcp(w))
            }
            Stream::Layered(m) => (ReadHalf::Layered(m), WriteHalf::Layered(m)),
        }
    }
}

/// The reading half of a [`Stream`].
pub enum ReadHalf<'a> {
    /// TCP's own borrowed half.
    Tcp(tcp::ReadHalf<'a>),
    /// The shared layered stream.
    Layered(&'a Mutex<Layered>),
}

impl ReadHalf<'_> {
    /// As [`Stream::read_buf`].
    pub async fn read_buf(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        match self {
            ReadHalf::Tcp(r) => r.read_buf(buf).await,
            ReadHalf::Layered(m) => std::future::poll_fn(|cx| lock(m).poll_read_buf(cx, buf)).await,
        }
    }
}

/// The writing half of a [`Stream`].
pub enum WriteHalf<'a> {
    /// TCP's own borrowed half.
    Tcp(tcp::WriteHalf<'a>),
    /// The shared layered stream.
    Layered(&'a Mutex<Layered>),
}

impl WriteHalf<'_> {
    /// As [`Stream::write_all_buf`].
    pub async fn write_all_buf(&mut self, buf: &mut BytesMut) -> io::Result<()> {
        match self {
            WriteHalf::Tcp(w) => w.write_all_buf(buf).await,
            WriteHalf::Layered(m) => {
                std::future::poll_fn(|cx| lock(m).poll_write_buf(cx, buf)).await
            }
        }
    }
}
