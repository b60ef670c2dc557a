//! What a connection's bytes travel over: TCP, TLS over TCP, and WebSocket framing over
//! either.
//!
//! The connection task is readiness-driven and stores no futures: it waits on the socket's
//! readiness, then reads and writes without blocking. Every layer here keeps that shape:
//! `read` and `write_vectored` never wait (they return `WouldBlock`), and readiness is always
//! the TCP socket's, because no layer keeps decoded bytes back from the caller: a TLS read
//! hands over all the plaintext rustls has, and WebSocket payloads are unmasked straight
//! into the MQTT read buffer.
//!
//! Handshakes (PROXY header, TLS, WebSocket upgrade) run in the connection's own task, under
//! the connect timeout, so that a client that never finishes one holds up nobody else.

use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::ws;

/// The bytes of one connection, whatever carries them.
pub(crate) struct Transport {
    link: Link,
    /// WebSocket framing, for `ws` and `wss` listeners.
    ws: Option<Box<ws::Framing>>,
}

/// TCP, or TLS over TCP.
pub(crate) enum Link {
    /// Plain TCP.
    Tcp(TcpStream),
    /// TLS over TCP (boxed: rustls' state is large, and plain connections pay for a pointer).
    Tls(Box<TlsLink>),
}

/// A TLS connection: the socket, rustls' state, and the TLS bytes in flight.
///
/// rustls' unbuffered API: Herald owns the buffers, so an idle TLS connection holds none
/// (rustls' buffered `ServerConnection` keeps a 4 KiB read buffer per connection for good).
/// Records are decrypted in place in `incoming` and copied once into the MQTT read buffer;
/// plaintext is encrypted straight into `outgoing`.
pub(crate) struct TlsLink {
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

impl TlsLink {
    /// Runs the TLS handshake on `tcp`, starting with `already` (bytes read before it, after
    /// a PROXY header).
    pub(crate) async fn accept(
        tcp: TcpStream,
        config: Arc<rustls::ServerConfig>,
        already: &[u8],
    ) -> io::Result<TlsLink> {
        let conn = rustls::server::UnbufferedServerConnection::new(config).map_err(tls_error)?;
        let mut link = TlsLink {
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
            let TlsLink {
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
            let TlsLink {
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
        let TlsLink {
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

impl Link {
    /// The TCP socket under it.
    pub(crate) fn tcp(&self) -> &TcpStream {
        match self {
            Link::Tcp(s) => s,
            Link::Tls(t) => &t.tcp,
        }
    }

    /// Appends what can be read now to `buf`; `Ok(0)` at the end of the stream.
    pub(crate) fn read(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        match self {
            Link::Tcp(s) => {
                if buf.capacity() - buf.len() < 1024 {
                    buf.reserve(READ_CHUNK);
                }
                s.try_read_buf(buf)
            }
            Link::Tls(t) => t.read(buf),
        }
    }

    /// Writes what the socket takes now of `bufs`.
    pub(crate) fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Link::Tcp(s) => s.try_write_vectored(bufs),
            Link::Tls(t) => t.write_vectored(bufs),
        }
    }

    /// Writes what this layer holds back; `Ok(true)` once nothing is.
    fn flush(&mut self) -> io::Result<bool> {
        match self {
            Link::Tcp(_) => Ok(true),
            Link::Tls(t) => t.flush(),
        }
    }

    fn has_pending(&self) -> bool {
        match self {
            Link::Tcp(_) => false,
            Link::Tls(t) => t.has_pending(),
        }
    }

    /// Closes the write side: TLS close_notify, then TCP FIN. Best effort.
    async fn shutdown(&mut self) {
        match self {
            Link::Tcp(s) => {
                let _ = s.shutdown().await;
            }
            Link::Tls(t) => {
                t.close_notify();
                let _ = t.tcp.shutdown().await;
            }
        }
    }
}

/// Read buffer reservation per read.
const READ_CHUNK: usize = 16 * 1024;

impl Transport {
    /// A transport over `link`, with WebSocket framing when `ws` is given.
    pub(crate) fn new(link: Link, ws: Option<Box<ws::Framing>>) -> Transport {
        Transport { link, ws }
    }

    /// Frames everything from now on as WebSocket messages.
    pub(crate) fn set_ws(&mut self, framing: Box<ws::Framing>) {
        self.ws = Some(framing);
    }

    /// Appends the MQTT bytes that can be read now to `buf`: `Ok(0)` at the end of the
    /// stream, `WouldBlock` when nothing is there.
    pub(crate) fn read(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        match &mut self.ws {
            None => self.link.read(buf),
            Some(ws) => ws.read(&mut self.link, buf),
        }
    }

    /// Writes what the connection takes now of `bufs` (MQTT bytes); never waits.
    pub(crate) fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match &mut self.ws {
            None => self.link.write_vectored(bufs),
            Some(ws) => ws.write_vectored(&mut self.link, bufs),
        }
    }

    /// Writes what the layers hold back (TLS records, WebSocket control frames); `Ok(true)`
    /// once nothing is left.
    pub(crate) fn flush(&mut self) -> io::Result<bool> {
        if let Some(ws) = &mut self.ws
            && !ws.flush(&mut self.link)?
        {
            return Ok(false);
        }
        self.link.flush()
    }

    /// Whether a layer holds bytes back.
    pub(crate) fn has_pending(&self) -> bool {
        self.ws.as_ref().is_some_and(|w| w.has_pending()) || self.link.has_pending()
    }

    /// Readiness to read.
    pub(crate) fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Link::Tls(t) = &self.link
            && !t.backlog.is_empty()
        {
            return Poll::Ready(Ok(()));
        }
        self.link.tcp().poll_read_ready(cx)
    }

    /// Readiness to write.
    pub(crate) fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.link.tcp().poll_write_ready(cx)
    }

    /// Reads until `buf` has something new, waiting for the socket as needed.
    pub(crate) async fn read_some(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        loop {
            match self.read(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.link.tcp().readable().await?
                }
                other => return other,
            }
        }
    }

    /// Writes all of `bytes`, waiting for the socket as needed.
    pub(crate) async fn write_all(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        loop {
            let step = if bytes.is_empty() {
                self.flush().map(|_| 0)
            } else {
                self.write_vectored(&[IoSlice::new(bytes)])
            };
            match step {
                Ok(n) => bytes = &bytes[n..],
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            if bytes.is_empty() && !self.has_pending() {
                return Ok(());
            }
            self.link.tcp().writable().await?;
        }
    }

    /// Ends the connection politely: a WebSocket close frame, TLS close_notify, TCP FIN.
    pub(crate) async fn shutdown(&mut self) {
        if let Some(ws) = &mut self.ws {
            ws.close(ws::CLOSE_NORMAL);
            let _ = ws.flush(&mut self.link);
        }
        self.link.shutdown().await;
    }

    /// A lingering close, after `shutdown`: reads and discards what the peer still sends
    /// until it closes, for at most `time` and `max_bytes`. Closing a socket with unread
    /// bytes makes the kernel send a reset, which destroys what was sent last (a
    /// DISCONNECT's reason code, a refusing CONNACK) before the client has read it.
    pub(crate) async fn linger(&mut self, time: std::time::Duration, max_bytes: usize) {
        let tcp = self.link.tcp();
        let mut scratch = [0u8; 4096];
        let mut total = 0;
        let _ = tokio::time::timeout(time, async {
            while total < max_bytes {
                if tcp.readable().await.is_err() {
                    return;
                }
                match tcp.try_read(&mut scratch) {
                    Ok(0) => return,
                    Ok(n) => total += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => return,
                }
            }
        })
        .await;
    }
}

/// Reads a PROXY protocol header (v1 or v2) at the start of a connection. Returns the
/// client's address it names (`None` for a LOCAL or UNKNOWN header: a health check from the
/// proxy itself) and the bytes read after it.
pub(crate) async fn read_proxy_header(
    tcp: &TcpStream,
) -> Result<(Option<SocketAddr>, BytesMut), ProxyError> {
    let mut buf = BytesMut::new();
    loop {
        match parse_proxy_header(&buf) {
            Ok(Some((addr, len))) => {
                let rest = buf.split_off(len);
                return Ok((addr, rest));
            }
            Ok(None) => {}
            Err(e) => return Err(e),
        }
        if buf.len() >= MAX_PROXY_HEADER {
            return Err(ProxyError::Invalid("longer than 4096 bytes".into()));
        }
        tcp.readable().await.map_err(|_| ProxyError::Closed)?;
        buf.reserve(512);
        match tcp.try_read_buf(&mut buf) {
            Ok(0) => return Err(ProxyError::Closed),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => return Err(ProxyError::Closed),
        }
    }
}

/// Longest PROXY header accepted (v1 is at most 107 bytes; v2 carries TLVs).
const MAX_PROXY_HEADER: usize = 4096;

/// Why a PROXY header was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ProxyError {
    /// The connection ended first.
    Closed,
    /// The bytes are not a valid header.
    Invalid(String),
}

/// Parses a PROXY header at the start of `bytes`: `Ok(None)` while incomplete, else the
/// client address and the header's length.
pub(crate) fn parse_proxy_header(
    bytes: &[u8],
) -> Result<Option<(Option<SocketAddr>, usize)>, ProxyError> {
    use ppp::{PartialResult, v1, v2};
    if bytes.is_empty() {
        return Ok(None);
    }
    // Neither signature can start otherwise: refuse at the first byte, not at a timeout.
    const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";
    let prefix = bytes.len().min(V2_SIGNATURE.len());
    if !b"PROXY ".starts_with(&bytes[..bytes.len().min(6)])
        && bytes[..prefix] != V2_SIGNATURE[..prefix]
    {
        return Err(ProxyError::Invalid(
            "the connection does not start with a PROXY protocol header".into(),
        ));
    }
    if bytes.starts_with(b"PROXY") || b"PROXY".starts_with(bytes) {
        // Version 1: one text line of at most 107 bytes, parsed once it is whole. A CR or
        // LF anywhere else in it is refused (ppp would stop reading at a lone CR).
        let window = &bytes[..bytes.len().min(V1_MAX)];
        let Some(end) = window.iter().position(|&b| b == b'\r' || b == b'\n') else {
            if bytes.len() >= V1_MAX {
                return Err(ProxyError::Invalid(
                    "PROXY v1: no CRLF within 107 bytes".into(),
                ));
            }
            return Ok(None);
        };
        match bytes.get(end..end + 2) {
            Some(b"\r\n") => {}
            None if bytes[end] == b'\r' => return Ok(None),
            _ => {
                return Err(ProxyError::Invalid(
                    "PROXY v1: a CR or LF before the line's CRLF".into(),
                ));
            }
        }
        let line = &bytes[..end + 2];
        let header = v1::Header::try_from(line)
            .map_err(|e| ProxyError::Invalid(format!("PROXY v1: {e}")))?;
        let addr = match header.addresses {
            v1::Addresses::Tcp4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
            v1::Addresses::Tcp6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
            v1::Addresses::Unknown => None,
        };
        return Ok(Some((addr, line.len())));
    }
    // Version 2 announces its length in bytes 14-15: one too long is refused at once.
    if let Some(len) = bytes.get(14..16) {
        let total = 16 + usize::from(u16::from_be_bytes([len[0], len[1]]));
        if total > MAX_PROXY_HEADER {
            return Err(ProxyError::Invalid(format!(
                "PROXY v2: a {total}-byte header, over {MAX_PROXY_HEADER}"
            )));
        }
    }
    let header = v2::Header::try_from(bytes);
    if header.is_incomplete() {
        return Ok(None);
    }
    let header = header.map_err(|e| ProxyError::Invalid(format!("PROXY v2: {e}")))?;
    let addr = match (header.command, header.addresses) {
        (v2::Command::Local, _) => None,
        (_, v2::Addresses::IPv4(a)) => Some(SocketAddr::from((a.source_address, a.source_port))),
        (_, v2::Addresses::IPv6(a)) => Some(SocketAddr::from((a.source_address, a.source_port))),
        _ => None,
    };
    Ok(Some((addr, header.len())))
}

/// Longest PROXY v1 line, CRLF included.
const V1_MAX: usize = 107;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_v1_and_v2_headers_give_the_client_address_and_length() {
        let v1 = b"PROXY TCP4 203.0.113.7 10.0.0.1 51234 1883\r\n\x10\x0c";
        let (addr, len) = parse_proxy_header(v1).unwrap().unwrap();
        assert_eq!(addr, Some("203.0.113.7:51234".parse().unwrap()));
        assert_eq!(&v1[len..], b"\x10\x0c");
        let v1_6 = b"PROXY TCP6 2001:db8::1 ::1 4000 1883\r\n";
        let (addr, len) = parse_proxy_header(v1_6).unwrap().unwrap();
        assert_eq!(addr, Some("[2001:db8::1]:4000".parse().unwrap()));
        assert_eq!(len, v1_6.len());
        assert_eq!(
            parse_proxy_header(b"PROXY UNKNOWN\r\n").unwrap(),
            Some((None, 15))
        );

        let src: SocketAddr = "198.51.100.9:40000".parse().unwrap();
        let dst: SocketAddr = "10.0.0.1:1883".parse().unwrap();
        let mut v2 = ppp::v2::Builder::with_addresses(
            ppp::v2::Version::Two | ppp::v2::Command::Proxy,
            ppp::v2::Protocol::Stream,
            (src, dst),
        )
        .build()
        .unwrap();
        let header_len = v2.len();
        v2.extend_from_slice(b"\x10\x0c");
        let (addr, len) = parse_proxy_header(&v2).unwrap().unwrap();
        assert_eq!((addr, len), (Some(src), header_len));
        // Every prefix of a header is incomplete, not wrong.
        for cut in 0..header_len {
            assert_eq!(
                parse_proxy_header(&v2[..cut]).unwrap(),
                None,
                "cut at {cut}"
            );
        }
        for cut in 0..v1.len() - 2 {
            assert_eq!(
                parse_proxy_header(&v1[..cut]).unwrap(),
                None,
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn proxy_garbage_is_refused_at_once() {
        for bad in [
            &b"\x10\x0c\x00\x04MQTT"[..],
            b"GET / HTTP/1.1\r\n",
            b"PROXY TCP4 nonsense\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 1\r\n",
        ] {
            assert!(
                matches!(parse_proxy_header(bad), Err(ProxyError::Invalid(_))),
                "{bad:?}"
            );
        }
    }
}
