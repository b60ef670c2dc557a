//! MQTT over WebSocket (RFC 6455, MQTT 5.0 §6): the HTTP upgrade, then binary frames
//! carrying the MQTT byte stream.
//!
//! MQTT packets may span frames and one frame may hold several packets, so frames are not
//! messages here: their payloads are unmasked straight into the connection's MQTT read
//! buffer, in place, as they arrive. A WebSocket connection therefore keeps no buffer of its
//! own (an idle one costs this struct, 104 bytes, boxed), where message-oriented crates hold a
//! read buffer per connection (tungstenite's defaults to 128 KiB). tungstenite is used for
//! what it does well and what is easy to get subtly wrong: parsing frame headers and the
//! handshake's accept key. Writes go out as one binary frame per vectored write: a burst of
//! MQTT packets costs one frame header.

use std::io::{self, Cursor, IoSlice};

use bytes::BytesMut;
use tungstenite::protocol::frame::FrameHeader;
use tungstenite::protocol::frame::coding::{Control, Data, OpCode};

use super::socket::Socket;

/// Close code: normal closure.
pub(crate) const CLOSE_NORMAL: u16 = 1000;
/// Close code: protocol error.
const CLOSE_PROTOCOL: u16 = 1002;
/// Close code: a data type the endpoint does not accept (MQTT is binary only).
const CLOSE_UNSUPPORTED: u16 = 1003;

/// Longest HTTP upgrade request accepted.
const MAX_REQUEST: usize = 8 * 1024;

/// WebSocket frames of one connection, both ways.
#[derive(Debug, Default)]
pub(crate) struct Framing {
    /// Bytes of a frame header received so far (at most 14).
    header: [u8; 14],
    header_len: u8,
    /// Inside a frame's payload.
    in_frame: bool,
    /// The current frame is a control frame (its payload goes to `control_in`).
    control: Option<Control>,
    /// Payload bytes of the current frame still to come.
    left: u64,
    /// The current frame's masking key, rotated to the next payload byte.
    mask: [u8; 4],
    /// A fragmented binary message is open: continuation frames are expected.
    fragmented: bool,
    /// Payload of the control frame being received (at most 125 bytes; rarely allocated).
    control_in: Vec<u8>,
    /// Encoded control frames to send between data frames (pong, close).
    control_out: Vec<u8>,
    /// The unwritten end of the current outgoing data frame's header.
    out_header: [u8; 10],
    out_header_at: u8,
    out_header_len: u8,
    /// Payload bytes of the current outgoing data frame still to write.
    out_left: u64,
    /// A close frame was sent or received: no more data frames.
    closed: bool,
}

fn protocol_error(message: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("websocket: {message}"))
}

impl Framing {
    /// Reads what the link has and appends the MQTT bytes it carries to `buf`. `Ok(0)` at
    /// the end of the stream (or a close frame); `WouldBlock` when no MQTT byte came.
    pub(crate) fn read(&mut self, link: &mut Socket, buf: &mut BytesMut) -> io::Result<usize> {
        loop {
            if self.closed {
                return Ok(0);
            }
            let start = buf.len();
            if link.read(buf)? == 0 {
                return Ok(0);
            }
            let n = self.unframe(buf, start)?;
            if n > 0 {
                return Ok(n);
            }
        }
    }

    /// Turns the raw bytes `buf[start..]` into the MQTT bytes they carry, in place.
    /// Nothing after a close frame is read.
    pub(crate) fn unframe(&mut self, buf: &mut BytesMut, start: usize) -> io::Result<usize> {
        let end = buf.len();
        let (mut r, mut w) = (start, start);
        while r < end && !self.closed {
            if !self.in_frame {
                r += self.take_header(&buf[r..end])?;
                if self.in_frame && self.left == 0 {
                    self.end_frame()?;
                }
                continue;
            }
            let take = (end - r).min(usize::try_from(self.left).unwrap_or(usize::MAX));
            let chunk = r..r + take;
            if self.control.is_some() {
                let at = self.control_in.len();
                self.control_in.extend_from_slice(&buf[chunk]);
                unmask(&mut self.control_in[at..], &mut self.mask);
            } else {
                buf.copy_within(chunk, w);
                unmask(&mut buf[w..w + take], &mut self.mask);
                w += take;
            }
            r += take;
            self.left -= take as u64;
            if self.left == 0 {
                self.end_frame()?;
            }
        }
        buf.truncate(w);
        Ok(w - start)
    }

    /// Takes header bytes from `bytes`; returns how many it used. Starts the frame once its
    /// header is whole.
    fn take_header(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let had = self.header_len as usize;
        let copy = bytes.len().min(self.header.len() - had);
        self.header[had..had + copy].copy_from_slice(&bytes[..copy]);
        self.header_len += copy as u8;
        let header = self.header;
        let mut cursor = Cursor::new(&header[..self.header_len as usize]);
        let parsed = match FrameHeader::parse(&mut cursor) {
            Ok(parsed) => parsed,
            Err(e) => {
                self.close(CLOSE_PROTOCOL);
                return Err(protocol_error(&e.to_string()));
            }
        };
        let Some((header, len)) = parsed else {
            return Ok(copy);
        };
        let used = cursor.position() as usize - had;
        self.header_len = 0;
        self.start_frame(&header, len)?;
        Ok(used)
    }

    fn start_frame(&mut self, h: &FrameHeader, len: u64) -> io::Result<()> {
        let fail = |this: &mut Self, code, message: &str| {
            this.close(code);
            Err(protocol_error(message))
        };
        if h.rsv1 || h.rsv2 || h.rsv3 {
            return fail(
                self,
                CLOSE_PROTOCOL,
                "reserved bits set (no extension agreed)",
            );
        }
        let Some(mask) = h.mask else {
            return fail(self, CLOSE_PROTOCOL, "a client's frame must be masked");
        };
        self.control = None;
        match h.opcode {
            OpCode::Data(Data::Binary) if !self.fragmented => self.fragmented = !h.is_final,
            OpCode::Data(Data::Continue) if self.fragmented => self.fragmented = !h.is_final,
            OpCode::Data(Data::Text) => {
                return fail(
                    self,
                    CLOSE_UNSUPPORTED,
                    "MQTT travels in binary frames only",
                );
            }
            OpCode::Control(c @ (Control::Ping | Control::Pong | Control::Close)) => {
                if !h.is_final || len > 125 {
                    return fail(self, CLOSE_PROTOCOL, "control frames are final and short");
                }
                self.control = Some(c);
                self.control_in.clear();
            }
            OpCode::Data(Data::Binary | Data::Continue) => {
                return fail(self, CLOSE_PROTOCOL, "fragments out of order");
            }
            _ => return fail(self, CLOSE_PROTOCOL, "reserved opcode"),
        }
        self.mask = mask;
        self.left = len;
        self.in_frame = true;
        Ok(())
    }

    /// A frame's payload is complete: answer a ping, note a close.
    fn end_frame(&mut self) -> io::Result<()> {
        self.in_frame = false;
        match self.control.take() {
            Some(Control::Ping) => {
                let payload = std::mem::take(&mut self.control_in);
                self.push_control(OpCode::Control(Control::Pong), &payload);
            }
            Some(Control::Close) => {
                // Echo a valid status code, then the stream ends (RFC 6455 §5.5.1, §7.4).
                let code = match *self.control_in.as_slice() {
                    [] => CLOSE_NORMAL,
                    [a, b, ..] if valid_close_code(u16::from_be_bytes([a, b])) => {
                        u16::from_be_bytes([a, b])
                    }
                    _ => {
                        self.close(CLOSE_PROTOCOL);
                        return Err(protocol_error("a close frame with an invalid status"));
                    }
                };
                self.close(code);
            }
            Some(_) => self.control_in = Vec::new(),
            None => {}
        }
        Ok(())
    }

    fn push_control(&mut self, opcode: OpCode, payload: &[u8]) {
        if self.closed {
            return;
        }
        let header = FrameHeader {
            is_final: true,
            opcode,
            ..FrameHeader::default()
        };
        let _ = header.format(payload.len() as u64, &mut self.control_out);
        self.control_out.extend_from_slice(payload);
    }

    /// Queues a close frame with `code` (once); no data frame follows it.
    pub(crate) fn close(&mut self, code: u16) {
        if !self.closed {
            self.push_control(OpCode::Control(Control::Close), &code.to_be_bytes());
            self.closed = true;
        }
    }

    /// Whether control frames or the end of a frame header wait to be written.
    pub(crate) fn has_pending(&self) -> bool {
        !self.control_out.is_empty()
    }

    /// Writes queued control frames, between data frames; `Ok(true)` once none is left.
    pub(crate) fn flush(&mut self, link: &mut Socket) -> io::Result<bool> {
        if self.out_left > 0 || self.out_header_at < self.out_header_len {
            return Ok(self.control_out.is_empty());
        }
        while !self.control_out.is_empty() {
            match link.write_vectored(&[IoSlice::new(&self.control_out)]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.control_out.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        self.control_out = Vec::new();
        Ok(true)
    }

    /// Writes MQTT bytes as binary frames: returns how many of `bufs`' bytes went out.
    pub(crate) fn write_vectored(
        &mut self,
        link: &mut Socket,
        bufs: &[IoSlice<'_>],
    ) -> io::Result<usize> {
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        if self.closed {
            // After a close frame nothing more may be sent; the bytes are dropped.
            return Ok(total);
        }
        if self.out_left == 0 {
            if !self.flush(link)? {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            if total == 0 {
                return Ok(0);
            }
            let header = FrameHeader {
                is_final: true,
                opcode: OpCode::Data(Data::Binary),
                ..FrameHeader::default()
            };
            let mut encoded = Cursor::new(&mut self.out_header[..]);
            header
                .format(total as u64, &mut encoded)
                .map_err(|e| protocol_error(&e.to_string()))?;
            self.out_header_len = encoded.position() as u8;
            self.out_header_at = 0;
            self.out_left = total as u64;
        }
        let mut slices = [IoSlice::new(&[]); 65];
        let header = &self.out_header[self.out_header_at as usize..self.out_header_len as usize];
        let mut n = 0;
        if !header.is_empty() {
            slices[0] = IoSlice::new(header);
            n = 1;
        }
        let mut room = self.out_left;
        for b in bufs {
            if room == 0 || n == slices.len() {
                break;
            }
            let take = b.len().min(usize::try_from(room).unwrap_or(usize::MAX));
            slices[n] = IoSlice::new(&b[..take]);
            n += 1;
            room -= take as u64;
        }
        let written = link.write_vectored(&slices[..n])?;
        let header_part = written.min(header.len());
        self.out_header_at += header_part as u8;
        let payload = written - header_part;
        self.out_left -= payload as u64;
        if payload == 0 {
            if written == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(payload)
    }
}

/// Status codes a close frame may carry: the defined ones that an endpoint may send, and
/// those registered or private (RFC 6455 §7.4).
fn valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// XORs `bytes` with the masking key, then rotates the key to the byte after them.
fn unmask(bytes: &mut [u8], mask: &mut [u8; 4]) {
    for (i, b) in bytes.iter_mut().enumerate() {
        *b ^= mask[i & 3];
    }
    mask.rotate_left(bytes.len() & 3);
}

/// Why an upgrade request was refused: the HTTP status and a reason for the log.
#[derive(Debug)]
pub(crate) struct Refusal {
    /// The HTTP status line's code and text.
    pub(crate) status: &'static str,
    /// Extra response headers.
    pub(crate) headers: &'static str,
    /// Why.
    pub(crate) reason: String,
}

fn refuse(status: &'static str, reason: impl Into<String>) -> Refusal {
    Refusal {
        status,
        headers: "",
        reason: reason.into(),
    }
}

/// What a valid upgrade request settled.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Upgrade {
    /// The Sec-WebSocket-Accept value.
    pub(crate) accept: String,
    /// The subprotocol chosen (`None`: the client offered none).
    pub(crate) protocol: Option<&'static str>,
    /// The request's length; bytes after it are WebSocket frames.
    pub(crate) len: usize,
}

/// Parses an HTTP upgrade request at the start of `bytes`: `Ok(None)` while incomplete.
pub(crate) fn parse_upgrade(bytes: &[u8], path: &str) -> Result<Option<Upgrade>, Refusal> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(bytes) {
        Ok(httparse::Status::Complete(len)) if len > MAX_REQUEST => {
            return Err(refuse(
                "431 Request Header Fields Too Large",
                "request longer than 8 KiB",
            ));
        }
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if bytes.len() >= MAX_REQUEST => {
            return Err(refuse(
                "431 Request Header Fields Too Large",
                "request longer than 8 KiB",
            ));
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(refuse("400 Bad Request", format!("not HTTP: {e}"))),
    };
    if req.method != Some("GET") {
        return Err(refuse("405 Method Not Allowed", "not a GET"));
    }
    let asked = req.path.unwrap_or("");
    if asked.split('?').next() != Some(path) {
        return Err(refuse("404 Not Found", format!("path {asked:?}")));
    }
    let all = &*req.headers;
    let header = |name: &'static str| {
        all.iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .filter_map(|h| std::str::from_utf8(h.value).ok())
    };
    let has_token = |name: &'static str, token: &str| {
        header(name).any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    };
    if !has_token("upgrade", "websocket") || !has_token("connection", "upgrade") {
        return Err(refuse(
            "426 Upgrade Required",
            "not a WebSocket upgrade request",
        ));
    }
    if !header("sec-websocket-version").any(|v| v.trim() == "13") {
        return Err(Refusal {
            status: "426 Upgrade Required",
            headers: "Sec-WebSocket-Version: 13\r\n",
            reason: "WebSocket version is not 13".into(),
        });
    }
    let Some(key) = header("sec-websocket-key").next() else {
        return Err(refuse("400 Bad Request", "no Sec-WebSocket-Key"));
    };
    let offered: Vec<&str> = header("sec-websocket-protocol")
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    // "mqtt" is MQTT 3.1.1's and 5.0's name; "mqttv3.1" is what MQTT 3.1 clients offer.
    let protocol = if offered.is_empty() {
        None
    } else if let Some(p) = ["mqtt", "mqttv3.1"]
        .into_iter()
        .find(|p| offered.iter().any(|o| o.eq_ignore_ascii_case(p)))
    {
        Some(p)
    } else {
        return Err(refuse(
            "400 Bad Request",
            format!("subprotocols {offered:?} offered, \"mqtt\" is spoken"),
        ));
    };
    Ok(Some(Upgrade {
        accept: tungstenite::handshake::derive_accept_key(key.trim().as_bytes()),
        protocol,
        len,
    }))
}

/// The 101 response to a valid upgrade request.
pub(crate) fn response(upgrade: &Upgrade) -> String {
    let protocol = upgrade
        .protocol
        .map(|p| format!("Sec-WebSocket-Protocol: {p}\r\n"))
        .unwrap_or_default();
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\n{protocol}\r\n",
        upgrade.accept
    )
}

/// The response to a refused upgrade request.
pub(crate) fn refusal_response(refusal: &Refusal) -> String {
    format!(
        "HTTP/1.1 {}\r\n{}Connection: close\r\nContent-Length: 0\r\n\r\n",
        refusal.status, refusal.headers
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const REQUEST: &str = "GET /mqtt HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\
        Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
        Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n";

    #[test]
    fn framing_state_stays_small() {
        // Paid by every idle WebSocket connection (docs/benchmarks.md).
        assert!(std::mem::size_of::<Framing>() <= 104);
    }

    #[test]
    fn upgrade_request_is_accepted_with_the_rfc_example_key() {
        let u = parse_upgrade(REQUEST.as_bytes(), "/mqtt").unwrap().unwrap();
        // RFC 6455 §1.3's example.
        assert_eq!(u.accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        assert_eq!(u.protocol, Some("mqtt"));
        assert_eq!(u.len, REQUEST.len());
        for cut in 0..REQUEST.len() {
            assert!(
                parse_upgrade(&REQUEST.as_bytes()[..cut], "/mqtt")
                    .unwrap()
                    .is_none()
            );
        }
    }

    #[test]
    fn bad_upgrade_requests_get_a_status() {
        let status = |req: String| parse_upgrade(req.as_bytes(), "/mqtt").unwrap_err().status;
        assert_eq!(status(REQUEST.replace("/mqtt", "/other")), "404 Not Found");
        assert_eq!(
            status(REQUEST.replace("Protocol: mqtt", "Protocol: chat")),
            "400 Bad Request"
        );
        assert_eq!(
            status(REQUEST.replace("Version: 13", "Version: 8")),
            "426 Upgrade Required"
        );
        assert_eq!(
            status(REQUEST.replace("GET", "POST")),
            "405 Method Not Allowed"
        );
        assert_eq!(status("\x10\x0c\0\x04MQTT".into()), "400 Bad Request");
        let long = format!("GET /mqtt HTTP/1.1\r\nX: {}\r\n", "a".repeat(9000));
        assert_eq!(status(long), "431 Request Header Fields Too Large");
    }

    /// Frames `payload` as a client would: masked, split into frames of `size` bytes.
    fn client_frames(payload: &[u8], size: usize, mask: [u8; 4]) -> Vec<u8> {
        let mut out = Vec::new();
        let chunks: Vec<&[u8]> = payload.chunks(size.max(1)).collect();
        for (i, chunk) in chunks.iter().enumerate() {
            let header = FrameHeader {
                is_final: i + 1 == chunks.len(),
                opcode: if i == 0 {
                    OpCode::Data(Data::Binary)
                } else {
                    OpCode::Data(Data::Continue)
                },
                mask: Some(mask),
                ..FrameHeader::default()
            };
            header.format(chunk.len() as u64, &mut out).unwrap();
            out.extend(chunk.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
        }
        out
    }

    #[test]
    fn frames_in_any_split_give_back_the_stream() {
        let payload: Vec<u8> = (0..1000u32).map(|i| (i * 7 + 3) as u8).collect();
        for frame_size in [1, 3, 125, 126, 999, 1000] {
            let wire = client_frames(&payload, frame_size, [0xa1, 0x02, 0xff, 0x5c]);
            for read_size in [1, 2, 5, 13, 64, 4096] {
                let mut f = Framing::default();
                let mut buf = BytesMut::new();
                for piece in wire.chunks(read_size) {
                    let start = buf.len();
                    buf.extend_from_slice(piece);
                    f.unframe(&mut buf, start).unwrap();
                }
                assert_eq!(
                    &buf[..],
                    &payload[..],
                    "frames {frame_size}, reads {read_size}"
                );
                assert!(!f.fragmented && !f.in_frame);
            }
        }
    }

    #[test]
    fn ping_is_answered_and_close_ends_the_stream() {
        let mut wire = Vec::new();
        let mask = [1, 2, 3, 4];
        let ping = FrameHeader {
            opcode: OpCode::Control(Control::Ping),
            mask: Some(mask),
            ..FrameHeader::default()
        };
        ping.format(2, &mut wire).unwrap();
        wire.extend([b'h' ^ 1, b'i' ^ 2]);
        wire.extend(client_frames(b"mqtt", 10, mask));
        let close = FrameHeader {
            opcode: OpCode::Control(Control::Close),
            mask: Some(mask),
            ..FrameHeader::default()
        };
        close.format(2, &mut wire).unwrap();
        wire.extend([0x03 ^ 1, 0xe8 ^ 2]);
        let mut f = Framing::default();
        let mut buf = BytesMut::from(&wire[..]);
        assert_eq!(f.unframe(&mut buf, 0).unwrap(), 4);
        assert_eq!(&buf[..], b"mqtt");
        // A pong with the ping's payload, then the close echo.
        assert_eq!(&f.control_out[..4], &[0x8a, 2, b'h', b'i']);
        assert_eq!(&f.control_out[4..], &[0x88, 2, 0x03, 0xe8]);
        assert!(f.closed);
    }

    #[test]
    fn protocol_violations_are_refused() {
        let unmasked = {
            let mut w = Vec::new();
            FrameHeader {
                opcode: OpCode::Data(Data::Binary),
                ..FrameHeader::default()
            }
            .format(1, &mut w)
            .unwrap();
            w.push(0);
            w
        };
        let text = {
            let mut w = Vec::new();
            FrameHeader {
                opcode: OpCode::Data(Data::Text),
                mask: Some([0; 4]),
                ..FrameHeader::default()
            }
            .format(1, &mut w)
            .unwrap();
            w.push(b'a');
            w
        };
        let stray_continuation = {
            let mut w = client_frames(b"ab", 1, [0; 4]);
            w.drain(..3);
            w
        };
        for wire in [
            unmasked,
            text,
            stray_continuation,
            vec![0x8f, 0x80, 0, 0, 0, 0],
        ] {
            let mut f = Framing::default();
            let mut buf = BytesMut::from(&wire[..]);
            assert!(f.unframe(&mut buf, 0).is_err(), "{wire:?}");
            assert!(f.closed, "a close frame is queued");
        }
    }
}
