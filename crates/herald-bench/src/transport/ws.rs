//! MQTT over WebSocket (RFC 6455), client side, streamed through the caller's buffers.
//!
//! - Handshake: an HTTP/1.1 upgrade request with subprotocol `mqtt`; the 101 response must
//!   carry the right `Sec-WebSocket-Accept` and `Sec-WebSocket-Protocol: mqtt`.
//! - Sending: whatever MQTT bytes the caller has queued go out as one masked binary frame.
//!   The frame header is inserted and the payload masked in place, in the caller's write
//!   buffer, so nothing is allocated or copied elsewhere. MQTT allows packets to be split or
//!   combined across frames ([MQTT-6.0.0-2]), so frame and packet boundaries need not match.
//! - Receiving: bytes are read into the caller's read buffer and frame headers are cut out of
//!   it in place ([`Deframer`]), leaving the MQTT byte stream. A ping is answered with a pong,
//!   a close ends the stream; text frames and reserved opcodes are protocol errors.

use std::future::Future;
use std::io::{self, Cursor};
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tungstenite::protocol::frame::FrameHeader;
use tungstenite::protocol::frame::coding::{Control, Data, OpCode};

use super::poll_read_into;
use crate::client::{Failure, unix_nanos};
use crate::scenario::XorShift;

/// The longest upgrade response accepted.
const MAX_RESPONSE: usize = 8 * 1024;

/// The longest frame header: 2 bytes, 8 of extended length, 4 of mask.
const MAX_HEADER: usize = 14;

/// Sends the upgrade request over `io` and checks the response.
pub async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
    mut io: S,
    host: &str,
    path: &str,
) -> Result<Ws<S>, Failure> {
    let key = tungstenite::handshake::client::generate_key();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: mqtt\r\n\r\n"
    );
    io.write_all(request.as_bytes()).await?;
    io.flush().await?;
    let mut response = Vec::with_capacity(256);
    let end = loop {
        if let Some(at) = response.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        if response.len() > MAX_RESPONSE {
            return Err(Failure::Handshake(format!(
                "WebSocket: no end of the upgrade response in {MAX_RESPONSE} bytes"
            )));
        }
        let mut chunk = [0u8; 512];
        match io.read(&mut chunk).await? {
            0 => return Err(Failure::Closed),
            n => response.extend_from_slice(&chunk[..n]),
        }
    };
    // Bytes past the response are the first frames (no broker sends any before CONNECT).
    let leftover = response.split_off(end);
    check_response(&response, &key).map_err(|e| Failure::Handshake(format!("WebSocket: {e}")))?;
    Ok(Ws::new(io, leftover))
}

/// Checks a 101 upgrade response (status line and headers, up to the blank line).
pub fn check_response(response: &[u8], key: &str) -> Result<(), String> {
    let text = std::str::from_utf8(response).map_err(|_| "response is not UTF-8".to_string())?;
    let mut lines = text.split("\r\n");
    let status = lines.next().unwrap_or("");
    let mut words = status.split_whitespace();
    if !words.next().is_some_and(|v| v.starts_with("HTTP/1.")) || words.next() != Some("101") {
        return Err(format!("expected 101 Switching Protocols, got {status:?}"));
    }
    let (mut upgrade, mut connection, mut accept, mut protocol) = (false, false, None, None);
    for line in lines.take_while(|l| !l.is_empty()) {
        let Some((name, value)) = line.split_once(':') else {
            return Err(format!("malformed header line {line:?}"));
        };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "upgrade" => upgrade = value.eq_ignore_ascii_case("websocket"),
            "connection" => {
                connection = value
                    .split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
            }
            "sec-websocket-accept" => accept = Some(value),
            "sec-websocket-protocol" => protocol = Some(value),
            _ => {}
        }
    }
    if !upgrade || !connection {
        return Err("missing Upgrade: websocket or Connection: Upgrade".into());
    }
    let expected = tungstenite::handshake::derive_accept_key(key.as_bytes());
    if accept != Some(expected.as_str()) {
        return Err(format!(
            "Sec-WebSocket-Accept {accept:?}, expected {expected:?}"
        ));
    }
    if protocol != Some("mqtt") {
        return Err(format!(
            "Sec-WebSocket-Protocol {protocol:?}, expected \"mqtt\""
        ));
    }
    Ok(())
}

/// A WebSocket connection over `S` (a TCP or TLS stream).
pub struct Ws<S> {
    io: S,
    /// Where the incoming frame stream stands.
    rx: Deframer,
    /// Bytes read with the handshake response; empty (unallocated) almost always.
    leftover: Vec<u8>,
    /// Bytes at the front of the caller's write buffer already framed and masked: a write
    /// cut short leaves them there, and the next write must not frame them again.
    framed: usize,
    /// Control frames (pong, close) to send at the next frame boundary; usually empty.
    control: Vec<u8>,
    /// Whether a close frame has been queued.
    close_queued: bool,
    /// Masking keys.
    rng: XorShift,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Ws<S> {
    fn new(io: S, leftover: Vec<u8>) -> Self {
        static SEQUENCE: AtomicU64 = AtomicU64::new(0);
        let seed = unix_nanos() ^ SEQUENCE.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
        Ws {
            io,
            rx: Deframer::default(),
            leftover,
            framed: 0,
            control: Vec::new(),
            close_queued: false,
            rng: XorShift::new(seed),
        }
    }

    fn next_mask(&mut self) -> [u8; 4] {
        (self.rng.below(1 << 32) as u32).to_ne_bytes()
    }

    /// Reads MQTT bytes into `buf`: one read of the socket, frame headers cut out; reads
    /// again when all it got was headers or control frames. 0 at the end of the stream.
    pub(super) fn poll_read_buf(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
    ) -> Poll<io::Result<usize>> {
        loop {
            // Pongs, and bytes a cancelled write left in a TLS layer, go out as reads happen.
            let _ = self.poll_send_control(cx);
            if self.rx.closed {
                return Poll::Ready(Ok(0));
            }
            let start = buf.len();
            if self.leftover.is_empty() {
                if ready!(poll_read_into(&mut self.io, cx, buf))? == 0 {
                    return Poll::Ready(Ok(0));
                }
            } else {
                buf.extend_from_slice(&std::mem::take(&mut self.leftover));
            }
            let kept = self.rx.deframe(&mut buf[start..])?;
            buf.truncate(start + kept);
            if let Some(ping) = self.rx.pong.take() {
                self.queue_control(Control::Pong, &ping);
            }
            if self.rx.closed && !self.close_queued {
                self.queue_control(Control::Close, &[]);
            }
            if kept > 0 {
                let _ = self.poll_send_control(cx);
                return Poll::Ready(Ok(kept));
            }
        }
    }

    /// Sends all of `buf` as binary frames (framing in place what is not framed yet).
    pub(super) fn poll_write_buf(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
    ) -> Poll<io::Result<()>> {
        loop {
            if self.framed == 0 && !self.control.is_empty() {
                ready!(self.poll_send_control(cx))?;
            }
            self.framed = self.framed.min(buf.len());
            if self.framed < buf.len() {
                let key = self.next_mask();
                frame_tail(buf, self.framed, key);
                self.framed = buf.len();
            }
            if buf.is_empty() {
                return Pin::new(&mut self.io).poll_flush(cx);
            }
            let n = ready!(pin!(self.io.write_buf(buf)).poll(cx))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.framed -= n;
        }
    }

    /// Sends a close frame (normal closure), then shuts the layer below down.
    pub(super) fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.close_queued {
            self.queue_control(Control::Close, &1000u16.to_be_bytes());
        }
        // A frame cut short cannot be finished without the caller's buffer: close without it.
        if self.framed == 0 {
            ready!(self.poll_send_control(cx))?;
        }
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    /// Writes queued control frames, if at a frame boundary, then flushes the layer below.
    fn poll_send_control(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.framed == 0 && !self.control.is_empty() {
            match ready!(Pin::new(&mut self.io).poll_write(cx, &self.control))? {
                0 => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                n => drop(self.control.drain(..n)),
            }
        }
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn queue_control(&mut self, control: Control, payload: &[u8]) {
        if control == Control::Close {
            self.close_queued = true;
        }
        let key = self.next_mask();
        let header = FrameHeader {
            opcode: OpCode::Control(control),
            mask: Some(key),
            ..FrameHeader::default()
        };
        // Writing a header into a Vec cannot fail.
        let _ = header.format(payload.len() as u64, &mut self.control);
        let at = self.control.len();
        self.control.extend_from_slice(payload);
        apply_mask(&mut self.control[at..], key, 0);
    }
}

/// Turns `buf[at..]` into one masked binary frame, in place: the header is inserted at `at`
/// and the payload masked with `key`.
pub fn frame_tail(buf: &mut BytesMut, at: usize, key: [u8; 4]) {
    let len = buf.len() - at;
    let header = FrameHeader {
        opcode: OpCode::Data(Data::Binary),
        mask: Some(key),
        ..FrameHeader::default()
    };
    let mut head = [0u8; MAX_HEADER];
    let mut out: &mut [u8] = &mut head;
    // 14 bytes hold any header.
    let _ = header.format(len as u64, &mut out);
    let head_len = MAX_HEADER - out.len();
    buf.extend_from_slice(&head[..head_len]);
    buf.copy_within(at..at + len, at + head_len);
    buf[at..at + head_len].copy_from_slice(&head[..head_len]);
    apply_mask(&mut buf[at + head_len..], key, 0);
}

/// XORs `data` with `key`, `data[0]` being payload byte number `offset`.
fn apply_mask(data: &mut [u8], key: [u8; 4], offset: u64) {
    let shift = (offset % 4) as usize;
    for (i, b) in data.iter_mut().enumerate() {
        *b ^= key[(i + shift) & 3];
    }
}

/// What the frame being received carries.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Carries {
    /// MQTT bytes (binary or continuation frames).
    #[default]
    Mqtt,
    /// A ping: its payload is echoed in a pong.
    Ping,
    /// A pong: ignored.
    Pong,
    /// A close: the stream ends.
    Close,
}

/// Where an incoming frame stream stands, carried from one read to the next.
#[derive(Debug, Default)]
pub struct Deframer {
    /// A frame header split across reads.
    head: [u8; MAX_HEADER],
    /// Bytes of it held in `head`.
    head_len: usize,
    /// Whether a frame's payload is being received (else a header is).
    in_frame: bool,
    /// What that frame carries.
    carries: Carries,
    /// Its payload bytes still to come.
    remaining: u64,
    /// Its payload bytes received so far (for unmasking).
    offset: u64,
    /// Its masking key: servers do not mask, but a masked frame is still read right.
    mask: Option<[u8; 4]>,
    /// A control frame's payload, gathered.
    control: Vec<u8>,
    /// The payload of a ping to answer.
    pub pong: Option<Vec<u8>>,
    /// Whether a close frame has arrived; nothing after it is read.
    pub closed: bool,
}

impl Deframer {
    /// Removes frame headers and control frames from `data` in place; returns how many MQTT
    /// bytes are left at its front.
    pub fn deframe(&mut self, data: &mut [u8]) -> io::Result<usize> {
        let (mut read, mut kept) = (0, 0);
        while read < data.len() && !self.closed {
            if !self.in_frame {
                let held = self.head_len;
                let take = (MAX_HEADER - held).min(data.len() - read);
                self.head[held..held + take].copy_from_slice(&data[read..read + take]);
                let mut cursor = Cursor::new(&self.head[..held + take]);
                let parsed = FrameHeader::parse(&mut cursor).map_err(invalid)?;
                let used = cursor.position() as usize;
                match parsed {
                    None => {
                        self.head_len += take;
                        read += take;
                        continue;
                    }
                    Some((header, len)) => {
                        read += used - held;
                        self.head_len = 0;
                        self.begin(&header, len)?;
                    }
                }
            }
            let take = usize::try_from(self.remaining)
                .unwrap_or(usize::MAX)
                .min(data.len() - read);
            if self.carries == Carries::Mqtt {
                data.copy_within(read..read + take, kept);
                if let Some(key) = self.mask {
                    apply_mask(&mut data[kept..kept + take], key, self.offset);
                }
                kept += take;
            } else {
                let at = self.control.len();
                self.control.extend_from_slice(&data[read..read + take]);
                if let Some(key) = self.mask {
                    apply_mask(&mut self.control[at..], key, self.offset);
                }
            }
            read += take;
            self.remaining -= take as u64;
            self.offset += take as u64;
            if self.remaining == 0 {
                self.end();
            }
        }
        Ok(kept)
    }

    fn begin(&mut self, header: &FrameHeader, len: u64) -> io::Result<()> {
        if header.rsv1 || header.rsv2 || header.rsv3 {
            return Err(invalid("reserved bits set (no extension was negotiated)"));
        }
        self.carries = match header.opcode {
            OpCode::Data(Data::Binary | Data::Continue) => Carries::Mqtt,
            OpCode::Data(Data::Text) => {
                return Err(invalid("text frame: MQTT travels in binary frames"));
            }
            OpCode::Control(Control::Ping) => Carries::Ping,
            OpCode::Control(Control::Pong) => Carries::Pong,
            OpCode::Control(Control::Close) => Carries::Close,
            OpCode::Data(Data::Reserved(op)) | OpCode::Control(Control::Reserved(op)) => {
                return Err(invalid(format!("reserved opcode {op:#x}")));
            }
        };
        if self.carries != Carries::Mqtt && (len > 125 || !header.is_final) {
            return Err(invalid("control frame longer than 125 bytes or fragmented"));
        }
        self.in_frame = true;
        self.remaining = len;
        self.offset = 0;
        self.mask = header.mask;
        if len == 0 {
            self.end();
        }
        Ok(())
    }

    fn end(&mut self) {
        self.in_frame = false;
        match self.carries {
            Carries::Mqtt => {}
            Carries::Ping => self.pong = Some(std::mem::take(&mut self.control)),
            Carries::Pong => self.control.clear(),
            Carries::Close => self.closed = true,
        }
    }
}

fn invalid(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(opcode: OpCode, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
        let header = FrameHeader {
            opcode,
            mask,
            ..FrameHeader::default()
        };
        let mut out = Vec::new();
        header.format(payload.len() as u64, &mut out).unwrap();
        let at = out.len();
        out.extend_from_slice(payload);
        if let Some(key) = mask {
            apply_mask(&mut out[at..], key, 0);
        }
        out
    }

    /// Feeds `stream` to a deframer in pieces of `step` bytes; returns the MQTT bytes.
    fn deframe_in_steps(d: &mut Deframer, stream: &[u8], step: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for piece in stream.chunks(step) {
            let mut piece = piece.to_vec();
            let kept = d.deframe(&mut piece).unwrap();
            out.extend_from_slice(&piece[..kept]);
        }
        out
    }

    #[test]
    fn binary_frames_become_one_byte_stream_however_they_are_cut() {
        let long: Vec<u8> = (0..70_000u32).map(|i| i as u8).collect();
        let mut stream = frame(OpCode::Data(Data::Binary), b"hello ", None);
        stream.extend(frame(OpCode::Control(Control::Ping), b"p1", None));
        stream.extend(frame(OpCode::Data(Data::Continue), &long, None));
        stream.extend(frame(
            OpCode::Data(Data::Binary),
            &long[..300],
            Some([1, 2, 3, 4]),
        ));
        stream.extend(frame(OpCode::Data(Data::Binary), b"", None));
        let mut want = b"hello ".to_vec();
        want.extend_from_slice(&long);
        want.extend_from_slice(&long[..300]);
        for step in [1, 2, 3, 13, 14, 15, 127, 4096, stream.len()] {
            let mut d = Deframer::default();
            assert_eq!(deframe_in_steps(&mut d, &stream, step), want, "step {step}");
            assert_eq!(d.pong.as_deref(), Some(&b"p1"[..]));
            assert!(!d.closed);
        }
    }

    #[test]
    fn close_ends_the_stream_and_text_is_refused() {
        let mut stream = frame(OpCode::Data(Data::Binary), b"ab", None);
        stream.extend(frame(OpCode::Control(Control::Close), &[3, 232], None));
        stream.extend(frame(OpCode::Data(Data::Binary), b"after", None));
        let mut d = Deframer::default();
        assert_eq!(deframe_in_steps(&mut d, &stream, 5), b"ab");
        assert!(d.closed);

        let mut text = frame(OpCode::Data(Data::Text), b"x", None);
        assert!(Deframer::default().deframe(&mut text).is_err());
        let mut big_ping = frame(OpCode::Control(Control::Ping), &[0; 126], None);
        assert!(Deframer::default().deframe(&mut big_ping).is_err());
    }

    #[test]
    fn framing_in_place_round_trips_and_leaves_framed_bytes_alone() {
        for len in [0usize, 1, 125, 126, 65_535, 65_536, 100_000] {
            let payload: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let mut buf = BytesMut::from(&b"framed"[..]);
            buf.extend_from_slice(&payload);
            frame_tail(&mut buf, 6, [9, 8, 7, 6]);
            assert_eq!(&buf[..6], b"framed");
            let mut cursor = Cursor::new(&buf[6..]);
            let (header, n) = FrameHeader::parse(&mut cursor).unwrap().unwrap();
            assert_eq!(n as usize, len);
            assert_eq!(header.opcode, OpCode::Data(Data::Binary));
            assert_eq!(header.mask, Some([9, 8, 7, 6]));
            bytes::Buf::advance(&mut buf, 6);
            let mut d = Deframer::default();
            let kept = d.deframe(&mut buf).unwrap();
            assert_eq!(&buf[..kept], &payload[..]);
        }
    }

    #[test]
    fn upgrade_responses_are_checked() {
        let key = "dGhlIHNhbXBsZSBub25jZQ==";
        let ok = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                  Connection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\
                  Sec-WebSocket-Protocol: mqtt\r\n\r\n";
        assert_eq!(check_response(ok.as_bytes(), key), Ok(()));
        let wrong_key = ok.replace("s3pP", "xxxx");
        assert!(check_response(wrong_key.as_bytes(), key).is_err());
        let no_protocol = ok.replace("Sec-WebSocket-Protocol: mqtt\r\n", "");
        assert!(check_response(no_protocol.as_bytes(), key).is_err());
        let refused = "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n";
        assert!(check_response(refused.as_bytes(), key).is_err());
    }
}
