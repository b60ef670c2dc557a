//! MQTT over WebSocket (RFC 6455), client side (adapted from herald-bench's transport).
//!
//! - Handshake: an HTTP/1.1 upgrade request offering subprotocol `mqtt`; the 101 response
//!   must carry the right `Sec-WebSocket-Accept` and `Sec-WebSocket-Protocol: mqtt`.
//! - Sending: each write of MQTT bytes is one masked binary frame ([`frame`]). MQTT lets
//!   packets be split or joined across frames ([MQTT-6.0.0-2]), so one write per frame is
//!   enough.
//! - Receiving: frame headers are cut out of the received bytes in place ([`Deframer`]),
//!   leaving the MQTT byte stream. A ping's payload is kept for the pong; a close ends the
//!   stream; text frames and reserved opcodes are errors.

use std::io::{self, Cursor};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tungstenite::protocol::frame::FrameHeader;
use tungstenite::protocol::frame::coding::{Control, Data, OpCode};

/// The longest upgrade response accepted.
const MAX_RESPONSE: usize = 8 * 1024;

/// The longest frame header: 2 bytes, 8 of extended length, 4 of mask.
const MAX_HEADER: usize = 14;

/// Sends the upgrade request for `path` to `host` over `io` and checks the response.
/// Returns the bytes that came after the response (the first frames, if any).
pub(super) async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut S,
    host: &str,
    path: &str,
) -> io::Result<Vec<u8>> {
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
            return Err(refused(format!(
                "no end of the upgrade response in {MAX_RESPONSE} bytes"
            )));
        }
        let mut chunk = [0u8; 512];
        match io.read(&mut chunk).await? {
            0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            n => response.extend_from_slice(&chunk[..n]),
        }
    };
    let leftover = response.split_off(end);
    check_response(&response, &key).map_err(refused)?;
    Ok(leftover)
}

/// An upgrade the server refused, as an error `transport` recognises.
fn refused(why: String) -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionRefused,
        format!("WebSocket: {why}"),
    )
}

/// Checks a 101 upgrade response (status line and headers, up to the blank line).
fn check_response(response: &[u8], key: &str) -> Result<(), String> {
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

/// Appends `payload` to `out` as one masked frame of kind `opcode`, masked with `key`.
pub(super) fn frame(out: &mut Vec<u8>, opcode: OpCode, payload: &[u8], key: [u8; 4]) {
    let header = FrameHeader {
        opcode,
        mask: Some(key),
        ..FrameHeader::default()
    };
    // Writing a header into a Vec cannot fail.
    let _ = header.format(payload.len() as u64, out);
    let at = out.len();
    out.extend_from_slice(payload);
    apply_mask(&mut out[at..], key, 0);
}

/// One binary frame.
pub(super) const BINARY: OpCode = OpCode::Data(Data::Binary);
/// A pong (the answer to a ping).
pub(super) const PONG: OpCode = OpCode::Control(Control::Pong);
/// A close.
pub(super) const CLOSE: OpCode = OpCode::Control(Control::Close);

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
pub(super) struct Deframer {
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
    pub(super) pong: Option<Vec<u8>>,
    /// Whether a close frame has arrived; nothing after it is read.
    pub(super) closed: bool,
}

impl Deframer {
    /// Removes frame headers and control frames from `data` in place; returns how many MQTT
    /// bytes are left at its front.
    pub(super) fn deframe(&mut self, data: &mut [u8]) -> io::Result<usize> {
        let (mut read, mut kept) = (0, 0);
        while read < data.len() && !self.closed {
            if !self.in_frame {
                let held = self.head_len;
                let take = (MAX_HEADER - held).min(data.len() - read);
                self.head[held..held + take].copy_from_slice(&data[read..read + take]);
                let mut cursor = Cursor::new(&self.head[..held + take]);
                let parsed = FrameHeader::parse(&mut cursor).map_err(invalid)?;
                let used = cursor.position() as usize;
                let Some((header, len)) = parsed else {
                    self.head_len += take;
                    read += take;
                    continue;
                };
                read += used - held;
                self.head_len = 0;
                self.begin(&header, len)?;
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
    fn frames_become_one_byte_stream_however_they_are_cut() {
        let long: Vec<u8> = (0..70_000u32).map(|i| i as u8).collect();
        let mut stream = Vec::new();
        frame(&mut stream, BINARY, b"hello ", [0, 0, 0, 0]);
        frame(
            &mut stream,
            OpCode::Control(Control::Ping),
            b"p1",
            [5, 6, 7, 8],
        );
        frame(&mut stream, BINARY, &long, [1, 2, 3, 4]);
        let mut want = b"hello ".to_vec();
        want.extend_from_slice(&long);
        for step in [1, 3, 13, 14, 15, 4096, stream.len()] {
            let mut d = Deframer::default();
            assert_eq!(deframe_in_steps(&mut d, &stream, step), want, "step {step}");
            assert_eq!(d.pong.as_deref(), Some(&b"p1"[..]));
            assert!(!d.closed);
        }
    }

    #[test]
    fn close_ends_the_stream_and_text_is_refused() {
        let mut stream = Vec::new();
        frame(&mut stream, BINARY, b"ab", [9, 9, 9, 9]);
        frame(&mut stream, CLOSE, &[3, 232], [1, 1, 1, 1]);
        frame(&mut stream, BINARY, b"after", [2, 2, 2, 2]);
        let mut d = Deframer::default();
        assert_eq!(deframe_in_steps(&mut d, &stream, 5), b"ab");
        assert!(d.closed);
        let mut text = Vec::new();
        frame(&mut text, OpCode::Data(Data::Text), b"x", [0; 4]);
        assert!(Deframer::default().deframe(&mut text).is_err());
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
