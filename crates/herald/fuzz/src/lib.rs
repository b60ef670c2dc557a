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
//! - [`jwt`]: the input is a CONNECT password, judged by the JWT method (`herald::auth::jwt`)
//!   configured with an HMAC secret ([`JWT_SECRET`]). A check never waits (no JWKS URL). An
//!   accepted password is a token whose signature is the secret's HMAC of its first two parts
//!   under the HS algorithm its header names, and whose `exp` is not past: the fuzzer, not
//!   knowing the secret, can only get a token accepted by keeping a valid one whole. Something
//!   shaped like a token (three base64url parts) is judged, never passed on; anything else is
//!   passed on. Its seeds are `seed-ok-*` (accepted) and `seed-bad-*` (refused or passed on).
//! - [`acl_file`]: the input is an ACL file. Reading it never panics; a refusal names a line
//!   of the input. For an accepted file, and for the input's words taken as a token's rules
//!   ([`herald::auth::AclClaim`]), the checks never panic and a subscription is never
//!   allowed to a filter matching a topic the client may not read (over filters and topics
//!   made from the input's words, for clients named by its `user` and `tenant` lines).
//! - [`passwd_file`]: the input is a password file (`herald::auth::passwd`). Parsing never
//!   panics; a refusal names the line; an accepted file renders back to its own bytes (when
//!   they end with a newline) and its rendering parses to the same entries; checking a
//!   password against each entry never panics. Only entries cheap enough for a fuzzer are
//!   checked (see [`passwd_checkable`]): the parser itself allows up to 10,000,000 PBKDF2
//!   rounds and 1 GiB of argon2id memory, costs an administrator may choose but a fuzzer
//!   cannot pay at every input.
//! - [`cluster_message`]: the input is what a node receives from NATS: a subject (up to
//!   the first newline) and the bytes after it. A subject that reads as a message subject
//!   is made again, byte for byte, from the tenant and topic it names; an envelope that
//!   reads encodes back to the same message. The bytes are also read as a request between
//!   nodes (made again the same) and as a chunk of a session moving between nodes
//!   (`cluster::moving`: what it holds encodes back to the same deliveries). None ever
//!   panics.
//! - [`tenants_file`]: the input is a tenants file (`herald::broker::tenants`). Reading it
//!   never panics; a refusal names `tenants.file` and the file, and a refused tenant is a
//!   table of the input; an accepted file holds only valid names and settings, and its
//!   tenants written back as TOML read the same.

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

/// Reads `data` as an ACL file and checks the guarantees listed in the module documentation.
pub fn acl_file(data: &[u8]) -> Verdict {
    use herald::auth::acl::{Acl, AclError, Rules};

    let text = String::from_utf8_lossy(data);
    let words: Vec<&str> = text.split_whitespace().take(24).collect();
    let (filters, topics) = acl_subjects(&words);
    let clients = acl_clients(&text);
    if let Ok(rules) = Rules::from_claim(&claim_of(&words)) {
        for who in &clients {
            let who = who.get();
            acl_sound(
                &filters,
                &topics,
                |f| rules.may_subscribe(who, f),
                |t| {
                    rules.may_publish(who, t);
                    rules.may_read(who, t)
                },
            );
        }
    }
    match Acl::from_bytes(data) {
        Ok(acl) => {
            for who in &clients {
                let who = who.get();
                acl_sound(
                    &filters,
                    &topics,
                    |f| acl.may_subscribe(who, f),
                    |t| {
                        acl.may_publish(who, t);
                        acl.may_read(who, t)
                    },
                );
            }
            Verdict::Accepted
        }
        Err(AclError::Line { line, .. }) => {
            let lines = data.split(|&b| b == b'\n').count();
            assert!((1..=lines).contains(&line), "line {line} of {lines}");
            Verdict::Refused
        }
        Err(other) => panic!("refused without naming a line: {other}"),
    }
}

/// The input's words as a token's rules: each word in turn a `pub`, `sub` and `deny` filter.
fn claim_of(words: &[&str]) -> herald::auth::AclClaim {
    let mut claim = herald::auth::AclClaim::default();
    for (i, word) in words.iter().enumerate() {
        let list = match i % 3 {
            0 => &mut claim.publish,
            1 => &mut claim.subscribe,
            _ => &mut claim.deny,
        };
        list.push((*word).to_owned());
    }
    claim
}

/// A client the ACL checks are asked for, owning its values.
struct AclClient {
    username: Option<String>,
    client_id: String,
    tenant: String,
}

impl AclClient {
    fn get(&self) -> herald::auth::acl::Who<'_> {
        herald::auth::acl::Who {
            username: self.username.as_deref(),
            client_id: &self.client_id,
            tenant: &self.tenant,
        }
    }
}

/// Clients named by the input: anonymous, and the first `user` lines' names, each in the
/// default tenant and in the first `tenant` lines' tenants; client ids `c` and `a/b`.
fn acl_clients(text: &str) -> Vec<AclClient> {
    let named = |keyword: &str| -> Vec<String> {
        text.lines()
            .filter_map(|line| line.trim().strip_prefix(keyword))
            .filter(|rest| rest.starts_with([' ', '\t']))
            .map(|rest| rest.trim().to_owned())
            .take(3)
            .collect()
    };
    let mut users: Vec<Option<String>> = vec![None];
    users.extend(named("user").into_iter().map(Some));
    let mut tenants = vec![String::new()];
    tenants.extend(named("tenant"));
    let mut clients = Vec::new();
    for tenant in &tenants {
        for username in &users {
            for client_id in ["c", "a/b"] {
                clients.push(AclClient {
                    username: username.clone(),
                    client_id: client_id.to_owned(),
                    tenant: tenant.clone(),
                });
            }
        }
    }
    clients
}

/// Filters and topics made from the input's words: the valid filters among them (and a
/// few fixed ones), and topics that each filter matches (its wildcards filled in).
fn acl_subjects(words: &[&str]) -> (Vec<String>, Vec<String>) {
    use mqtt_codec::topic::{validate_topic_filter, validate_topic_name};

    let mut filters: Vec<String> = ["#", "+", "+/+", "a/#", "+/#", "$SYS/#", "a/b"]
        .map(String::from)
        .to_vec();
    filters.extend(
        words
            .iter()
            .filter(|w| validate_topic_filter(w).is_ok() && !w.starts_with("$share/"))
            .map(|w| (*w).to_owned()),
    );
    let mut topics: Vec<String> = ["a", "a/b", "$SYS/x", "c/a/b"].map(String::from).to_vec();
    for filter in &filters {
        for (plus, hash) in [("a", ""), ("x", "x/y")] {
            let mut levels: Vec<&str> = Vec::new();
            for level in filter.split('/') {
                match level {
                    "+" => levels.push(plus),
                    "#" if hash.is_empty() => {}
                    "#" => levels.push(hash),
                    other => levels.push(other),
                }
            }
            let topic = levels.join("/");
            if validate_topic_name(&topic).is_ok() {
                topics.push(topic);
            }
        }
    }
    topics.truncate(96);
    (filters, topics)
}

/// No filter `may_subscribe` allows matches a topic `may_read` refuses.
fn acl_sound(
    filters: &[String],
    topics: &[String],
    may_subscribe: impl Fn(&str) -> bool,
    may_read: impl Fn(&str) -> bool,
) {
    let readable: Vec<bool> = topics.iter().map(|t| may_read(t)).collect();
    for filter in filters {
        if !may_subscribe(filter) {
            continue;
        }
        for (topic, readable) in topics.iter().zip(&readable) {
            assert!(
                *readable || !mqtt_codec::topic::matches(filter, topic),
                "{filter:?} may be subscribed to, but {topic:?}, which it matches, not read"
            );
        }
    }
}

/// The secret the `jwt` target's method verifies HMAC tokens with.
pub const JWT_SECRET: &[u8] = b"herald fuzz secret: 32 bytes or more, not in any seed";

/// Judges `data` as a JWT in CONNECT's password; see above for the checks.
pub fn jwt(data: &[u8]) -> Verdict {
    use herald::auth::{Credentials, Method, Verdict as Judged};
    use std::task::{Context, Poll, Waker};

    static METHOD: std::sync::OnceLock<std::sync::Arc<herald::auth::jwt::Jwt>> =
        std::sync::OnceLock::new();
    let method = METHOD.get_or_init(|| {
        let cfg = herald::config::JwtConfig {
            secret: String::from_utf8_lossy(JWT_SECRET).into_owned(),
            ..herald::config::JwtConfig::default()
        };
        herald::auth::jwt::Jwt::new(&cfg).expect("the fuzz target's JWT settings")
    });
    let credentials = Credentials {
        client_id: "fuzz",
        username: None,
        password: Some(data),
        certificate: None,
        certificate_tenant: None,
        peer: std::net::SocketAddr::from(([127, 0, 0, 1], 1883)),
        listener: herald::config::ListenerKind::Mqtt,
    };
    let mut check = method.check(&credentials);
    let judged = match check.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(judged) => judged,
        Poll::Pending => panic!("a JWT check without a JWKS URL waited"),
    };
    let token = std::str::from_utf8(data).ok().and_then(token_parts);
    match judged {
        Judged::Allow(_) => {
            let (header, payload, signature) = token.expect("accepted something not token-shaped");
            let decode = |part: &str| {
                data_encoding::BASE64URL_NOPAD
                    .decode(part.as_bytes())
                    .expect("an accepted part is base64url")
            };
            let header: serde_json::Value =
                serde_json::from_slice(&decode(header)).expect("an accepted header is JSON");
            let hash = match header["alg"].as_str() {
                Some("HS256") => ring::hmac::HMAC_SHA256,
                Some("HS384") => ring::hmac::HMAC_SHA384,
                Some("HS512") => ring::hmac::HMAC_SHA512,
                other => panic!("accepted a token signed with {other:?}"),
            };
            let signed = &data[..header_len(data)];
            let expected = ring::hmac::sign(&ring::hmac::Key::new(hash, JWT_SECRET), signed);
            assert_eq!(
                decode(signature),
                expected.as_ref(),
                "accepted a token the secret did not sign"
            );
            let claims: serde_json::Value =
                serde_json::from_slice(&decode(payload)).expect("accepted claims are JSON");
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
            let exp = claims["exp"]
                .as_f64()
                .expect("an accepted token has an exp");
            assert!(exp + 30.0 > now, "accepted a token that expired at {exp}");
            Verdict::Accepted
        }
        Judged::Deny(_) => {
            assert!(
                token.is_some(),
                "refused (rather than passed on) a non-token"
            );
            Verdict::Refused
        }
        Judged::Pass => {
            assert!(token.is_none(), "passed on a token-shaped password");
            Verdict::Refused
        }
    }
}

/// The three parts of a token-shaped string: three non-empty base64url parts.
fn token_parts(text: &str) -> Option<(&str, &str, &str)> {
    let base64url = |p: &str| {
        !p.is_empty()
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    let mut parts = text.split('.');
    let (h, p, s) = (parts.next()?, parts.next()?, parts.next()?);
    (parts.next().is_none() && base64url(h) && base64url(p) && base64url(s)).then_some((h, p, s))
}

/// The length of `header.payload`, the part a token's signature covers.
fn header_len(data: &[u8]) -> usize {
    data.iter().rposition(|&b| b == b'.').unwrap_or(data.len())
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

/// The path a `tenants_file` input is read as (named in its errors).
pub const TENANTS_FILE: &str = "/fuzz/tenants.toml";

/// Reads `data` as a tenants file (`herald::broker::tenants`). Reading never panics; a
/// refusal names `tenants.file` and the file, and a refused tenant is one of the input's
/// table names. An accepted file names only valid tenants whose settings validate, and its
/// tenants written back as TOML read to the same tenants.
pub fn tenants_file(data: &[u8]) -> Verdict {
    use herald::broker::tenants::{TenantsFileError, parse};
    use herald::config::valid_tenant;

    let Ok(text) = std::str::from_utf8(data) else {
        return Verdict::Refused;
    };
    let path = std::path::Path::new(TENANTS_FILE);
    let tenants = match parse(text, path) {
        Ok(tenants) => tenants,
        Err(e) => {
            let shown = e.to_string();
            assert!(
                shown.starts_with("tenants.file: ") && shown.contains(TENANTS_FILE),
                "an error that names neither tenants.file nor the file: {shown}"
            );
            if let TenantsFileError::Tenant { tenant, .. } = &e {
                let tables: toml::Table = text.parse().expect("a tenant is refused in TOML");
                assert!(
                    tables.contains_key(tenant),
                    "refused tenant {tenant:?}, which the input does not name"
                );
            }
            return Verdict::Refused;
        }
    };
    let mut rendered = String::new();
    for (name, limits) in &tenants {
        assert!(valid_tenant(name), "accepted tenant name {name:?}");
        assert!(
            limits.validate("tenant").is_ok(),
            "accepted settings of {name:?} that do not validate: {limits:?}"
        );
        let table = toml::to_string(limits).expect("accepted settings render as TOML");
        let key = toml::to_string(&std::collections::BTreeMap::from([(name.as_str(), 0)]))
            .expect("a tenant name renders as a TOML key");
        let key = key.trim_end().trim_end_matches(" = 0");
        rendered.push_str(&format!("[{key}]\n{table}\n"));
    }
    let again = parse(&rendered, path).unwrap_or_else(|e| {
        panic!("the accepted tenants written back do not read: {e}\n{rendered}")
    });
    assert_eq!(again, tenants, "written back:\n{rendered}");
    Verdict::Accepted
}

/// See the module documentation.
pub fn cluster_message(data: &[u8]) -> Verdict {
    use herald::broker::session::moving::Owed;
    use herald::cluster::moving;
    use herald::cluster::subject::Subjects;
    use herald::cluster::wire::Envelope;

    let (subject, body) = match data.iter().position(|b| *b == b'\n') {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[][..]),
    };
    let subjects = Subjects::new("herald");
    let mut accepted = false;
    if let Ok(subject) = std::str::from_utf8(subject)
        && let Some((tenant, topic)) = subjects.parse(subject)
    {
        assert_eq!(
            subjects.topic(&tenant, &topic),
            subject,
            "a subject read as ({tenant:?}, {topic:?}) is not made again from them"
        );
        accepted = true;
    }
    if let Ok(envelope) = Envelope::decode(body) {
        let again = Envelope::encode(
            &envelope.node,
            envelope.ident,
            envelope.received_ms,
            envelope.publish.clone(),
        )
        .expect("a message read from an envelope encodes");
        let back = Envelope::decode(&again).expect("an envelope made here reads");
        assert_eq!(back, envelope, "an envelope does not come back the same");
        accepted = true;
    }
    // The same bytes as a request between nodes, and as a chunk of a session moving.
    if let Some(request) = moving::parse_request(body) {
        let again = request.encode();
        assert_eq!(
            moving::parse_request(&again),
            Some(request),
            "a request read is not made again the same"
        );
        accepted = true;
    }
    let mut owed = Owed::default();
    if let Ok(flags) = moving::decode_chunk(body, &mut owed) {
        let again = moving::encode_owed(Some(&owed), usize::MAX);
        assert_eq!(again.len(), 1, "one chunk without a limit");
        let mut back = Owed::default();
        let back_flags =
            moving::decode_chunk(&again[0], &mut back).expect("a chunk made here reads");
        assert_eq!(back_flags, moving::LAST);
        assert_eq!(back.inbound, owed.inbound);
        assert_eq!(back.done, owed.done);
        assert_eq!(back.from, owed.from);
        assert_eq!(back.inflight.len(), owed.inflight.len());
        assert_eq!(back.queue.len(), owed.queue.len());
        assert_eq!(back.idents(), owed.idents());
        for (a, b) in owed.queue.iter().zip(&back.queue) {
            assert_eq!(a.message.as_published(), b.message.as_published());
            assert_eq!((a.qos, a.retain), (b.qos, b.retain));
            assert_eq!(a.subscription_identifiers, b.subscription_identifiers);
        }
        let _ = flags;
        accepted = true;
    }
    // And as a replicated session's snapshot.
    if let Ok(snapshot) = herald::cluster::replica::decode(body) {
        let again = herald::cluster::replica::encode(&snapshot);
        let back = herald::cluster::replica::decode(&again).expect("a snapshot made here reads");
        assert_eq!(back, snapshot, "a snapshot does not come back the same");
        accepted = true;
    }
    if accepted {
        Verdict::Accepted
    } else {
        Verdict::Refused
    }
}
