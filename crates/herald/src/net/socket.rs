//! The socket under a connection: plain TCP, or TLS over TCP with rustls' unbuffered API.
//!
//! Like every layer of a `Transport`, a `Socket` never waits: `read` and `write_vectored`
//! return `WouldBlock`, and readiness is the TCP socket's, because a TLS read hands over all
//! the plaintext rustls has. Only the TLS handshake (`TlsSocket::accept`) and `shutdown` wait,
//! in the connection's own task.

use std::io::{self, IoSlice};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// TCP, or TLS over TCP.
pub(crate) enum Socket {
    /// Plain TCP.
    Tcp(TcpStream),
    /// TLS over TCP (boxed: rustls' state is large, and plain connections pay for a pointer).
    Tls(Box<TlsSocket>),
}

/// A TLS connection: the socket, rustls' state, and the TLS bytes in flight.
///
/// rustls' unbuffered API: Herald owns the buffers, so an idle TLS connection holds none
/// (rustls' buffered `ServerConnection` keeps a 4 KiB read buffer per connection for good).
/// Records are decrypted in place in `incoming` and copied once into the MQTT read buffer;
/// plaintext is encrypted straight into `outgoing`.
pub(crate) struct TlsSocket {
    tcp: TcpStream,
    conn: rustls::server::UnbufferedServerConnection,
    /// TLS bytes read and not yet processed: at most part of a record between reads.
    incoming: BytesMut,
    /// TLS bytes made and not yet written, from `out_at`.
    outgoing: Vec<u8>,
    out_at: usize,
    /// Plaintext that arrived outside a read (with the handshake's last flight), handed
    /// over by the next read.
    backlog: BytesMut,
    /// The peer sent close_notify.
    peer_closed: bool,
}

/// Where processing the TLS bytes at hand left the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Drive {
    /// More bytes from the peer are needed.
    NeedInput,
    /// Application data can be sent; every whole record was processed.
    Traffic,
    /// Closed both ways.
    Closed,
}

fn would_block() -> io::Error {
    io::ErrorKind::WouldBlock.into()
}

/// The room rustls asks for when an encrypt did not fit.
fn encrypt_room(e: &rustls::unbuffered::EncryptError) -> Option<usize> {
    match e {
        rustls::unbuffered::EncryptError::InsufficientSize(s) => Some(s.required_size),
        _ => None,
    }
}

fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// Runs `make` (rustls encoding or encrypting into a slice) at the end of `out`, growing it
/// as rustls asks.
fn append_with<E>(
    out: &mut Vec<u8>,
    mut make: impl FnMut(&mut [u8]) -> Result<usize, E>,
    needs: impl Fn(&E) -> Option<usize>,
) -> Result<(), E> {
    let start = out.len();
    let mut room = 256;
    loop {
        out.resize(start + room, 0);
        match make(&mut out[start..]) {
            Ok(n) => {
                out.truncate(start + n);
                return Ok(());
            }
            Err(e) => match needs(&e) {
                Some(required) if required > room => room = required,
                _ => {
                    out.truncate(start);
                    return Err(e);
                }
            },
        }
    }
}

impl TlsSocket {
    /// Runs the TLS handshake on `tcp`, starting with `already` (bytes read before it, after
    /// a PROXY header).
    pub(crate) async fn accept(
        tcp: TcpStream,
        config: Arc<rustls::ServerConfig>,
        already: &[u8],
    ) -> io::Result<TlsSocket> {
        let conn = rustls::server::UnbufferedServerConnection::new(config).map_err(tls_error)?;
        let mut link = TlsSocket {
            tcp,
            conn,
            incoming: BytesMut::from(already),
            outgoing: Vec::new(),
            out_at: 0,
            backlog: BytesMut::new(),
            peer_closed: false,
        };
        loop {
            let mut early = std::mem::take(&mut link.backlog);
            let drive = link.drive(&mut early);
            link.backlog = early;
            // The alert of a failed handshake goes out before the error is returned.
            while !link.flush()? {
                link.tcp.writable().await?;
            }
            match drive? {
                Drive::Traffic if !link.conn.is_handshaking() => return Ok(link),
                Drive::Closed => return Err(io::ErrorKind::UnexpectedEof.into()),
                // Waiting for the client's flight (the server may already send, but the
                // client's certificate is not verified yet).
                Drive::Traffic | Drive::NeedInput => {}
            }
            link.incoming.reserve(4096);
            match link.tcp.try_read_buf(&mut link.incoming) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => link.tcp.readable().await?,
                Err(e) => return Err(e),
            }
        }
    }

    /// Processes the whole records in `incoming`: application data is appended to `plain`,
    /// handshake and alert messages are encoded into `outgoing`.
    fn drive(&mut self, plain: &mut BytesMut) -> io::Result<Drive> {
        use rustls::unbuffered::{ConnectionState, EncodeError, UnbufferedStatus};
        let mut failed = None;
        loop {
            let TlsSocket {
                conn,
                incoming,
                outgoing,
                peer_closed,
                ..
            } = self;
            let UnbufferedStatus { mut discard, state } = conn.process_tls_records(incoming);
            let step = match state {
                Err(e) => {
                    // rustls has queued the alert: one more round encodes it (and only one:
                    // bytes that failed to deframe would fail, and alert, again).
                    if failed.is_some() {
                        Some(Err(tls_error(e)))
                    } else {
                        failed = Some(e);
                        self.incoming.advance(discard);
                        continue;
                    }
                }
                Ok(ConnectionState::ReadTraffic(mut records)) => {
                    while let Some(record) = records.next_record() {
                        let record = record.map_err(tls_error)?;
                        discard += record.discard;
                        plain.extend_from_slice(record.payload);
                    }
                    None
                }
                Ok(ConnectionState::EncodeTlsData(mut data)) => {
                    append_with(
                        outgoing,
                        |buf| data.encode(buf),
                        |e| match e {
                            EncodeError::InsufficientSize(s) => Some(s.required_size),
                            _ => None,
                        },
                    )
                    .map_err(io::Error::other)?;
                    None
                }
                Ok(ConnectionState::TransmitTlsData(data)) => {
                    // Written, in order, by the next flush.
                    data.done();
                    None
                }
                Ok(ConnectionState::PeerClosed) => {
                    *peer_closed = true;
                    None
                }
                Ok(ConnectionState::BlockedHandshake) => Some(Ok(Drive::NeedInput)),
                Ok(ConnectionState::WriteTraffic(_)) => Some(Ok(Drive::Traffic)),
                Ok(ConnectionState::Closed) => Some(Ok(Drive::Closed)),
                Ok(_) => Some(Err(io::Error::other("unexpected TLS state (early data)"))),
            };
            self.incoming.advance(discard);
            match (step, failed.take()) {
                (_, Some(e)) => return Err(tls_error(e)),
                (Some(result), None) => return result,
                (None, None) => {}
            }
        }
    }

    /// The client's certificate chain, leaf first (mTLS).
    pub(crate) fn peer_certificate(&self) -> Option<&[u8]> {
        self.conn
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.as_ref())
    }

    /// Appends the plaintext available to `buf`: what the records at hand carry, else what
    /// the socket has now. `Ok(0)` at the end of the stream.
    fn read(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        if !self.backlog.is_empty() {
            let n = self.backlog.len();
            buf.extend_from_slice(&self.backlog);
            self.backlog = BytesMut::new();
            return Ok(n);
        }
        loop {
            let before = buf.len();
            let drive = self.drive(buf)?;
            if self.has_pending() {
                // A key update's answer, or an alert: best effort, the rest goes with the
                // next write.
                let _ = self.flush();
            }
            if buf.len() > before {
                return Ok(buf.len() - before);
            }
            if self.peer_closed || drive == Drive::Closed {
                return Ok(0);
            }
            if self.incoming.capacity() - self.incoming.len() < 1024 {
                self.incoming.reserve(READ_CHUNK);
            }
            match self.tcp.try_read_buf(&mut self.incoming) {
                Ok(0) => return Ok(0),
                Ok(_) => {}
                Err(e) => {
                    if self.incoming.is_empty() {
                        // Idle: keep no buffer.
                        self.incoming = BytesMut::new();
                    }
                    return Err(e);
                }
            }
        }
    }

    fn has_pending(&self) -> bool {
        self.out_at < self.outgoing.len()
    }

    /// Writes the TLS bytes waiting; `Ok(true)` once none is left.
    fn flush(&mut self) -> io::Result<bool> {
        while self.has_pending() {
            match self.tcp.try_write(&self.outgoing[self.out_at..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.out_at += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        self.outgoing = Vec::new();
        self.out_at = 0;
        Ok(true)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        use rustls::unbuffered::{ConnectionState, UnbufferedStatus};
        // Records already made go first; while they wait, no more is taken (so the buffer
        // stays bounded and a slow reader is seen as one).
        if !self.flush()? {
            return Err(would_block());
        }
        let mut taken = 0;
        for attempt in 0..2 {
            let TlsSocket {
                conn,
                incoming,
                outgoing,
                ..
            } = self;
            let UnbufferedStatus { discard, state } = conn.process_tls_records(incoming);
            let traffic = match state {
                Ok(ConnectionState::WriteTraffic(mut traffic)) => {
                    for b in bufs {
                        append_with(outgoing, |out| traffic.encrypt(b, out), encrypt_room)
                            .map_err(io::Error::other)?;
                        taken += b.len();
                    }
                    true
                }
                Ok(_) => false,
                Err(e) => return Err(tls_error(e)),
            };
            self.incoming.advance(discard);
            if traffic {
                break;
            }
            if attempt == 1 {
                return Err(io::Error::other("TLS connection cannot send"));
            }
            // Messages to process first (rare: reads process everything they get).
            let mut backlog = std::mem::take(&mut self.backlog);
            let drive = self.drive(&mut backlog);
            self.backlog = backlog;
            if drive? == Drive::Closed {
                return Err(io::ErrorKind::BrokenPipe.into());
            }
        }
        self.flush()?;
        Ok(taken)
    }

    /// Sends close_notify, best effort.
    fn close_notify(&mut self) {
        use rustls::unbuffered::{ConnectionState, UnbufferedStatus};
        let TlsSocket {
            conn,
            incoming,
            outgoing,
            ..
        } = self;
        let UnbufferedStatus { discard, state } = conn.process_tls_records(incoming);
        if let Ok(ConnectionState::WriteTraffic(mut traffic)) = state {
            let _ = append_with(
                outgoing,
                |out| traffic.queue_close_notify(out),
                encrypt_room,
            );
        }
        self.incoming.advance(discard);
        let _ = self.flush();
    }
}

impl Socket {
    /// The TCP socket under it.
    pub(crate) fn tcp(&self) -> &TcpStream {
        match self {
            Socket::Tcp(s) => s,
            Socket::Tls(t) => &t.tcp,
        }
    }

    /// Appends what can be read now to `buf`; `Ok(0)` at the end of the stream.
    pub(crate) fn read(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        match self {
            Socket::Tcp(s) => {
                if buf.capacity() - buf.len() < 1024 {
                    buf.reserve(READ_CHUNK);
                }
                s.try_read_buf(buf)
            }
            Socket::Tls(t) => t.read(buf),
        }
    }

    /// Writes what the socket takes now of `bufs`.
    pub(crate) fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Socket::Tcp(s) => s.try_write_vectored(bufs),
            Socket::Tls(t) => t.write_vectored(bufs),
        }
    }

    /// Writes what this layer holds back; `Ok(true)` once nothing is.
    pub(crate) fn flush(&mut self) -> io::Result<bool> {
        match self {
            Socket::Tcp(_) => Ok(true),
            Socket::Tls(t) => t.flush(),
        }
    }

    /// Whether TLS records wait to be written.
    pub(crate) fn has_pending(&self) -> bool {
        match self {
            Socket::Tcp(_) => false,
            Socket::Tls(t) => t.has_pending(),
        }
    }

    /// Readiness to read: plaintext a TLS handshake left behind is ready at once.
    pub(crate) fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Socket::Tls(t) = self
            && !t.backlog.is_empty()
        {
            return Poll::Ready(Ok(()));
        }
        self.tcp().poll_read_ready(cx)
    }

    /// Closes the write side: TLS close_notify, then TCP FIN. Best effort.
    pub(crate) async fn shutdown(&mut self) {
        match self {
            Socket::Tcp(s) => {
                let _ = s.shutdown().await;
            }
            Socket::Tls(t) => {
                t.close_notify();
                let _ = t.tcp.shutdown().await;
            }
        }
    }
}

/// Read buffer reservation per read.
const READ_CHUNK: usize = 16 * 1024;
