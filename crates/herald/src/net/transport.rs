//! What a connection's bytes travel over: a `Socket` (TCP, or TLS over TCP: `link.rs`), and
//! WebSocket framing over either (`ws.rs`); then the PROXY protocol header that may precede
//! them.
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
use std::task::{Context, Poll};

use bytes::BytesMut;
use tokio::net::TcpStream;

use super::socket::Socket;
use super::ws;

/// The bytes of one connection, whatever carries them.
pub(crate) struct Transport {
    link: Socket,
    /// WebSocket framing, for `ws` and `wss` listeners.
    ws: Option<Box<ws::Framing>>,
}

impl Transport {
    /// A transport over `link`, with WebSocket framing when `ws` is given.
    pub(crate) fn new(link: Socket, ws: Option<Box<ws::Framing>>) -> Transport {
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
        self.link.poll_read_ready(cx)
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
