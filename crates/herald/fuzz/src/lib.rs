//! The checks every fuzz target runs, shared with `tests/fuzz_corpus.rs` (which includes this
//! file with `#[path]`), so that the seed corpus and the crash regressions replay through
//! exactly the same logic in the ordinary test suite.
//!
//! The decoders are Herald's transport handshakes and framing, reached through
//! `herald::net::fuzzing` (which asserts its own invariants as well):
//!
//! - [`ws_frames`]: the input is a split count `k` (the first byte, mod 8), `k` split sizes,
//!   then the bytes a WebSocket client sends after the upgrade. They are fed to the
//!   de-framer in pieces of those sizes (cycled; 0 means "the rest"), and the MQTT bytes it
//!   gives must be exactly those of [`reference_unframe`], a plain reading of RFC 6455 as
//!   Herald applies it, whatever the split.
//! - [`ws_upgrade`]: the input is an HTTP upgrade request for `/mqtt`, maybe followed by
//!   frames. An accepted request fits the 8 KiB limit and ends its header block; the bytes
//!   after it change nothing; every strict prefix of it is incomplete (Herald parses again
//!   after each read, so a prefix that is refused would make acceptance depend on how TCP
//!   split the request). A refusal other than "too large" stands whatever follows.
//! - [`proxy_header`]: the input is a PROXY protocol header, v1 or v2, maybe followed by the
//!   connection's bytes. The same guarantees as for the upgrade request (a refusal's reason
//!   may change with more bytes, the refusal may not), plus: an accepted
//!   header is a v1 line ending in CRLF or a v2 header of exactly the length it announces,
//!   and an input is only ever incomplete while it can still become a header.
//! - [`passwd_file`]: the input is a password file (`herald::auth::passwd`). Parsing never
//!   panics; a refusal names the line; an accepted file renders back to its own bytes (when
//!   they end with a newline) and its rendering parses to the same entries; checking a
//!   password against each entry never panics. Only entries cheap enough for a fuzzer are
//!   checked (see [`passwd_checkable`]): the parser itself allows up to 10,000,000 PBKDF2
//!   rounds and 1 GiB of argon2id memory, costs an administrator may choose but a fuzzer
//!   cannot pay at every input.

use herald::net::fuzzing;

/// What a decoder made of an input; the seed corpus names it (`seed-ok-*`, `seed-partial-*`,
/// `seed-bad-*`) and the replay test checks that each seed means what its name says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Accepted: a whole header, or frames that all ended.
    Accepted,
    /// Nothing wrong so far, more bytes are needed.
    Incomplete,
    /// Refused.
    Refused,
}

/// The path the upgrade target asks for.
pub const WS_PATH: &str = "/mqtt";

/// Herald's limit on an upgrade request's length (`MAX_REQUEST` in `net/ws.rs`).
pub const MAX_REQUEST: usize = 8 * 1024;

/// The PROXY v2 signature (the 12 bytes every v2 header starts with).
pub const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";

/// Bytes appended after an accepted or refused header to check that they change nothing: a
/// line end, an empty line, the start of a PROXY v2 signature and an MQTT CONNECT.
const TRAILER: &[u8] = b"\r\n\r\n\r\n\0\r\nQUIT\n\x21\x11\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c";

/// Splits a `ws_frames` input into its split sizes and its stream.
pub fn ws_frames_input(data: &[u8]) -> (&[u8], &[u8]) {
    let Some((&count, rest)) = data.split_first() else {
        return (&[], &[]);
    };
    rest.split_at(usize::from(count % 8).min(rest.len()))
}

/// De-frames the stream of `data` (see the module documentation for the layout) and checks it
/// against [`reference_unframe`].
pub fn ws_frames(data: &[u8]) -> Verdict {
    let (splits, stream) = ws_frames_input(data);
    let got = fuzzing::ws_unframe(stream, splits);
    let expected = reference_unframe(stream);
    assert_eq!(
        got,
        expected.as_ref().ok().map(|(mqtt, _)| mqtt.clone()),
        "de-framing in pieces of {splits:?} differs from the reference"
    );
    match expected {
        Ok((_, true)) => Verdict::Accepted,
        Ok((_, false)) => Verdict::Incomplete,
        Err(()) => Verdict::Refused,
    }
}

/// Reads `stream` as the frames a WebSocket client sends Herald, all at once: the MQTT bytes
/// they carry and whether the stream ends between frames, or `Err` if a frame is refused.
///
/// Refused: reserved bits (no extension is agreed), unmasked frames, text frames, reserved
/// opcodes, a continuation outside a fragmented message or a new message inside one, and
/// control frames that are fragmented or longer than 125 bytes. A frame is judged once its
/// header is whole (mask included), and the payload of a data frame is delivered as it
/// arrives, so a stream cut in the middle of a frame gives the part received. Nothing after a
/// whole close frame is read; a close frame whose payload is one byte, or whose status code
/// an endpoint may not send (RFC 6455 §7.4), is refused.
pub fn reference_unframe(stream: &[u8]) -> Result<(Vec<u8>, bool), ()> {
    let mut mqtt = Vec::new();
    let mut fragmented = false;
    let mut rest = stream;
    loop {
        if rest.is_empty() {
            return Ok((mqtt, true));
        }
        let Some(header) = frame_header(rest) else {
            return Ok((mqtt, false));
        };
        let first = rest[0];
        let fin = first & 0x80 != 0;
        if first & 0x70 != 0 {
            return Err(());
        }
        let Some(mask) = header.mask else {
            return Err(());
        };
        let control = match first & 0x0F {
            0x2 if !fragmented => false,
            0x0 if fragmented => false,
            0x8..=0xA if fin && header.payload_len <= 125 => true,
            _ => return Err(()),
        };
        if !control {
            fragmented = !fin;
        }
        let payload = &rest[header.len..];
        let take = usize::try_from(header.payload_len)
            .unwrap_or(usize::MAX)
            .min(payload.len());
        if !control {
            let unmasked = payload[..take].iter().enumerate();
            mqtt.extend(unmasked.map(|(i, b)| b ^ mask[i % 4]));
        }
        if (take as u64) < header.payload_len {
            return Ok((mqtt, false));
        }
        if first & 0x0F == 0x8 {
            let unmasked: Vec<u8> = payload[..take]
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ mask[i % 4])
                .collect();
            return match *unmasked.as_slice() {
                [] => Ok((mqtt, true)),
                [a, b, ..]
                    if matches!(
                        u16::from_be_bytes([a, b]),
                        1000..=1003 | 1007..=1014 | 3000..=4999
                    ) =>
                {
                    Ok((mqtt, true))
                }
                _ => Err(()),
            };
        }
        rest = &payload[take..];
    }
}

/// A frame header as [`reference_unframe`] reads it.
struct FrameHeader {
    /// The header's length, extended length and mask included.
    len: usize,
    /// The payload's announced length.
    payload_len: u64,
    /// The masking key, if the frame is masked.
    mask: Option<[u8; 4]>,
}

/// Parses the frame header at the start of `bytes`, `None` if it is not whole yet.
fn frame_header(bytes: &[u8]) -> Option<FrameHeader> {
    let second = *bytes.get(1)?;
    let (extra, mut len) = match second & 0x7F {
        126 => (2, 4),
        127 => (8, 10),
        _ => (0, 2),
    };
    let payload_len = match extra {
        0 => u64::from(second & 0x7F),
        _ => bytes
            .get(2..2 + extra)?
            .iter()
            .fold(0, |n, &b| (n << 8) | u64::from(b)),
    };
    let mut mask = None;
    if second & 0x80 != 0 {
        let key = bytes.get(len..len + 4)?;
        mask = Some([key[0], key[1], key[2], key[3]]);
        len += 4;
    }
    Some(FrameHeader {
        len,
        payload_len,
        mask,
    })
}

/// Parses `data` as an upgrade request for [`WS_PATH`] and checks the guarantees listed in the
/// module documentation.
pub fn ws_upgrade(data: &[u8]) -> Verdict {
    let result = fuzzing::ws_upgrade(data, WS_PATH);
    match result {
        Ok(Some(len)) => {
            assert!(
                len <= MAX_REQUEST,
                "accepted a {len}-byte request, over the {MAX_REQUEST}-byte limit"
            );
            let request = &data[..len];
            assert!(
                request.ends_with(b"\n"),
                "the accepted request does not end with its header block"
            );
            assert_eq!(fuzzing::ws_upgrade(request, WS_PATH), result, "alone");
            assert_eq!(
                fuzzing::ws_upgrade(&appended(data), WS_PATH),
                result,
                "with bytes appended"
            );
            for cut in 0..len {
                assert_eq!(
                    fuzzing::ws_upgrade(&data[..cut], WS_PATH),
                    Ok(None),
                    "the first {cut} bytes of a {len}-byte request"
                );
            }
            Verdict::Accepted
        }
        Ok(None) => {
            assert!(data.len() < MAX_REQUEST, "incomplete past the limit");
            Verdict::Incomplete
        }
        Err(status) if status.starts_with("431 ") => {
            assert!(
                data.len() >= MAX_REQUEST,
                "{status} for {} bytes",
                data.len()
            );
            Verdict::Refused
        }
        Err(_) => {
            assert_eq!(
                fuzzing::ws_upgrade(&appended(data), WS_PATH),
                result,
                "a refusal changed with bytes appended"
            );
            Verdict::Refused
        }
    }
}

/// Parses `data` as a PROXY protocol header and checks the guarantees listed in the module
/// documentation.
pub fn proxy_header(data: &[u8]) -> Verdict {
    let result = fuzzing::proxy_header(data);
    match &result {
        Ok(Some((_, len))) => {
            let len = *len;
            let header = &data[..len];
            if header.starts_with(V2_SIGNATURE) {
                let announced = header
                    .get(14..16)
                    .map(|n| 16 + usize::from(u16::from_be_bytes([n[0], n[1]])));
                assert_eq!(announced, Some(len), "v2 header of another length");
            } else {
                assert!(
                    header.starts_with(b"PROXY ") && header.ends_with(b"\r\n"),
                    "accepted {header:?}, neither v1 nor v2"
                );
                assert!(len <= 107, "v1 line of {len} bytes");
            }
            assert_eq!(fuzzing::proxy_header(header), result, "alone");
            assert_eq!(
                fuzzing::proxy_header(&appended(data)),
                result,
                "with bytes appended"
            );
            for cut in 0..len {
                assert_eq!(
                    fuzzing::proxy_header(&data[..cut]),
                    Ok(None),
                    "the first {cut} bytes of a {len}-byte header"
                );
            }
            Verdict::Accepted
        }
        Ok(None) => {
            let could_be = |signature: &[u8]| {
                let n = data.len().min(signature.len());
                data[..n] == signature[..n]
            };
            assert!(
                could_be(b"PROXY ") || could_be(V2_SIGNATURE),
                "incomplete, but no header starts so"
            );
            Verdict::Incomplete
        }
        Err(why) => {
            // The reason may change (a v1 line too long, then too long with its CRLF).
            assert!(
                fuzzing::proxy_header(&appended(data)).is_err(),
                "refused ({why}), but accepted or incomplete with bytes appended"
            );
            Verdict::Refused
        }
    }
}

/// `data`, then [`TRAILER`], then `data` again.
fn appended(data: &[u8]) -> Vec<u8> {
    [data, TRAILER, data].concat()
}

/// Parses `data` as a password file and checks the guarantees listed in the module
/// documentation.
pub fn passwd_file(data: &[u8]) -> Verdict {
    use herald::auth::passwd::{Document, PasswdError};
    let document = match Document::parse(data) {
        Ok(document) => document,
        Err(PasswdError::Line { line, .. }) => {
            let lines = data.split(|b| *b == b'\n').count();
            assert!(
                (1..=lines).contains(&line),
                "line {line} of a {lines}-line file"
            );
            return Verdict::Refused;
        }
        Err(other) => panic!("a parse error that names no line: {other}"),
    };
    let rendered = document.render();
    if data.is_empty() || data.ends_with(b"\n") {
        assert_eq!(rendered.as_bytes(), data, "rendering changed the file");
    }
    let again = Document::parse(rendered.as_bytes()).expect("the rendered file parses");
    assert!(
        document.entries().eq(again.entries()),
        "the rendered file has other entries"
    );
    assert_eq!(again.render(), rendered, "rendering is not stable");
    for entry in document.entries() {
        if passwd_checkable(entry.hash().scheme()) {
            let _ = entry.verify(data);
            let _ = entry.verify(entry.username().as_bytes());
        }
    }
    Verdict::Accepted
}

/// Whether a password check against a hash of this scheme is cheap enough to run at every
/// fuzz input (at most 1,000 PBKDF2 rounds, or 1 MiB and 4 passes of argon2id).
pub fn passwd_checkable(scheme: herald::auth::passwd::Scheme) -> bool {
    use herald::auth::passwd::Scheme;
    match scheme {
        Scheme::Sha512 => true,
        Scheme::Pbkdf2Sha512 { iterations } => iterations <= 1_000,
        Scheme::Argon2id {
            memory_kib,
            iterations,
            ..
        } => memory_kib <= 1024 && iterations <= 4,
    }
}
