//! How `herald sub` prints a message: the payload, `-v` topic and payload, `--json` one
//! object per line, or a `-F` format. Each message is written whole and flushed before the
//! subscriber acknowledges it.

use std::io::{self, Write};

use anyhow::bail;
use data_encoding::{BASE64, HEXLOWER};
use mqtt_codec::Publish;
use serde_json::{Map, Value, json};

/// One part of a `-F` format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Piece {
    /// Text as it is (escapes already applied).
    Text(Vec<u8>),
    /// `%t`
    Topic,
    /// `%p`
    Payload,
    /// `%x`
    Hex,
    /// `%l`
    Length,
    /// `%q`
    Qos,
    /// `%r`
    Retain,
    /// `%m`
    PacketId,
    /// `%j`
    Json,
    /// `%U`
    UnixTime,
    /// `%C`
    ContentType,
    /// `%R`
    ResponseTopic,
    /// `%D`
    CorrelationData,
    /// `%E`
    MessageExpiry,
    /// `%F`
    FormatIndicator,
    /// `%P`
    UserProperties,
}

/// How messages are printed.
#[derive(Debug, Clone)]
pub(super) enum Format {
    /// The payload alone.
    Payload,
    /// `-v`: topic, a space, the payload.
    Verbose,
    /// `--json`.
    Json,
    /// `-F`.
    Template(Vec<Piece>),
}

impl Format {
    /// The `-F` format `spec`, or an error naming what is wrong in it.
    pub(super) fn template(spec: &str) -> anyhow::Result<Format> {
        let mut pieces = Vec::new();
        let mut text = Vec::new();
        let mut chars = spec.chars();
        while let Some(c) = chars.next() {
            let piece = match c {
                '%' => match chars.next() {
                    Some('%') => None,
                    Some(code) => Some(placeholder(code)?),
                    None => bail!("-F {spec:?}: a lone % at the end (%% prints one)"),
                },
                '\\' => {
                    match chars.next() {
                        Some('n') => text.push(b'\n'),
                        Some('t') => text.push(b'\t'),
                        Some('\\') => text.push(b'\\'),
                        Some('0') => text.push(0),
                        other => bail!("-F {spec:?}: unknown escape \\{}", other.unwrap_or(' ')),
                    }
                    continue;
                }
                _ => None,
            };
            match piece {
                // Plain text, and the % of %%.
                None => {
                    let mut buf = [0u8; 4];
                    text.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
                Some(p) => {
                    if !text.is_empty() {
                        pieces.push(Piece::Text(std::mem::take(&mut text)));
                    }
                    pieces.push(p);
                }
            }
        }
        if !text.is_empty() {
            pieces.push(Piece::Text(text));
        }
        Ok(Format::Template(pieces))
    }
}

/// The placeholder `%code`.
fn placeholder(code: char) -> anyhow::Result<Piece> {
    Ok(match code {
        't' => Piece::Topic,
        'p' => Piece::Payload,
        'x' => Piece::Hex,
        'l' => Piece::Length,
        'q' => Piece::Qos,
        'r' => Piece::Retain,
        'm' => Piece::PacketId,
        'j' => Piece::Json,
        'U' => Piece::UnixTime,
        'C' => Piece::ContentType,
        'R' => Piece::ResponseTopic,
        'D' => Piece::CorrelationData,
        'E' => Piece::MessageExpiry,
        'F' => Piece::FormatIndicator,
        'P' => Piece::UserProperties,
        other => bail!("-F: unknown placeholder %{other} (see herald sub --help)"),
    })
}

/// Prints messages on standard output.
#[derive(Debug, Clone)]
pub(super) struct Output {
    /// The format.
    format: Format,
    /// Whether each message ends with a newline (not with `-N`).
    eol: bool,
}

impl Output {
    /// Messages in `format`, each followed by a newline if `eol`.
    pub(super) fn new(format: Format, eol: bool) -> Self {
        Output { format, eol }
    }

    /// Writes `p` to standard output and flushes it: when this returns Ok, the message is
    /// out of this process.
    pub(super) fn write(&self, p: &Publish) -> io::Result<()> {
        let mut line = Vec::with_capacity(p.payload.len() + p.topic.len() + 2);
        self.render(p, &mut line);
        let mut out = io::stdout().lock();
        out.write_all(&line)?;
        out.flush()
    }

    /// Appends `p` as printed.
    pub(super) fn render(&self, p: &Publish, out: &mut Vec<u8>) {
        match &self.format {
            Format::Payload => out.extend_from_slice(&p.payload),
            Format::Verbose => {
                out.extend_from_slice(p.topic.as_bytes());
                out.push(b' ');
                out.extend_from_slice(&p.payload);
            }
            Format::Json => out.extend_from_slice(to_json(p).to_string().as_bytes()),
            Format::Template(pieces) => {
                for piece in pieces {
                    render_piece(piece, p, out);
                }
            }
        }
        if self.eol {
            out.push(b'\n');
        }
    }
}

/// Appends one `-F` piece; an absent property prints nothing.
fn render_piece(piece: &Piece, p: &Publish, out: &mut Vec<u8>) {
    let props = &p.properties;
    let text = match piece {
        Piece::Text(t) => return out.extend_from_slice(t),
        Piece::Payload => return out.extend_from_slice(&p.payload),
        Piece::Topic => p.topic.to_string(),
        Piece::Hex => HEXLOWER.encode(&p.payload),
        Piece::Length => p.payload.len().to_string(),
        Piece::Qos => (p.qos as u8).to_string(),
        Piece::Retain => u8::from(p.retain).to_string(),
        Piece::PacketId => p.packet_id.to_string(),
        Piece::Json => to_json(p).to_string(),
        Piece::UnixTime => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            format!("{}.{:06}", now.as_secs(), now.subsec_micros())
        }
        Piece::ContentType => props.content_type.as_deref().unwrap_or("").to_string(),
        Piece::ResponseTopic => props.response_topic.as_deref().unwrap_or("").to_string(),
        Piece::CorrelationData => {
            return out.extend_from_slice(props.correlation_data.as_deref().unwrap_or(&[]));
        }
        Piece::MessageExpiry => props
            .message_expiry_interval
            .map_or(String::new(), |s| s.to_string()),
        Piece::FormatIndicator => props
            .payload_format_indicator
            .map_or(String::new(), |f| u8::from(f).to_string()),
        Piece::UserProperties => props
            .user_properties
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" "),
    };
    out.extend_from_slice(text.as_bytes());
}

/// Bytes as a JSON field: `name` when they are UTF-8, else `name_base64`.
fn bytes_field(map: &mut Map<String, Value>, name: &str, bytes: &[u8]) {
    match std::str::from_utf8(bytes) {
        Ok(text) => map.insert(name.into(), text.into()),
        Err(_) => map.insert(format!("{name}_base64"), BASE64.encode(bytes).into()),
    };
}

/// The message as one JSON object; properties it does not carry are left out.
pub(super) fn to_json(p: &Publish) -> Value {
    let mut m = Map::new();
    m.insert("topic".into(), p.topic.to_string().into());
    m.insert("qos".into(), (p.qos as u8).into());
    m.insert("retain".into(), p.retain.into());
    m.insert("dup".into(), p.dup.into());
    bytes_field(&mut m, "payload", &p.payload);
    let props = &p.properties;
    let mut pm = Map::new();
    if let Some(f) = props.payload_format_indicator {
        pm.insert("payload_format_indicator".into(), f.into());
    }
    if let Some(s) = props.message_expiry_interval {
        pm.insert("message_expiry_interval".into(), s.into());
    }
    if let Some(t) = &props.content_type {
        pm.insert("content_type".into(), t.to_string().into());
    }
    if let Some(t) = &props.response_topic {
        pm.insert("response_topic".into(), t.to_string().into());
    }
    if let Some(d) = &props.correlation_data {
        bytes_field(&mut pm, "correlation_data", d);
    }
    if !props.user_properties.is_empty() {
        let pairs: Vec<Value> = props
            .user_properties
            .iter()
            .map(|(k, v)| json!([k.to_string(), v.to_string()]))
            .collect();
        pm.insert("user_properties".into(), pairs.into());
    }
    if !props.subscription_identifiers.is_empty() {
        pm.insert(
            "subscription_identifiers".into(),
            props.subscription_identifiers.clone().into(),
        );
    }
    m.insert("properties".into(), pm.into());
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use mqtt_codec::QoS;

    fn message() -> Publish {
        let mut p = Publish::new("a/b", Bytes::from_static(b"hi"));
        p.qos = QoS::AtLeastOnce;
        p.packet_id = 9;
        p.retain = true;
        p.properties.content_type = Some("text/plain".into());
        p.properties.user_properties = vec![("k".into(), "v".into()), ("k".into(), "w".into())];
        p.properties.correlation_data = Some(Bytes::from_static(&[0xff, 0x00]));
        p
    }

    fn render(format: Format, eol: bool) -> String {
        let mut out = Vec::new();
        Output::new(format, eol).render(&message(), &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn plain_verbose_and_formats() {
        assert_eq!(render(Format::Payload, true), "hi\n");
        assert_eq!(render(Format::Verbose, false), "a/b hi");
        let f = Format::template(r"%t|%p|%x|%l|%q|%r|%m|%C|%P|%E|100%%\t.").unwrap();
        assert_eq!(
            render(f, true),
            "a/b|hi|6869|2|1|1|9|text/plain|k=v k=w||100%\t.\n"
        );
        assert!(Format::template("%z").is_err());
        assert!(Format::template("50%").is_err());
        assert!(Format::template(r"\q").is_err());
    }

    #[test]
    fn json_keeps_properties_and_binary() {
        let v: Value = serde_json::from_str(&render(Format::Json, false)).unwrap();
        assert_eq!(v["topic"], "a/b");
        assert_eq!(v["qos"], 1);
        assert_eq!(v["retain"], true);
        assert_eq!(v["payload"], "hi");
        assert_eq!(v["properties"]["content_type"], "text/plain");
        assert_eq!(
            v["properties"]["user_properties"],
            json!([["k", "v"], ["k", "w"]])
        );
        assert_eq!(v["properties"]["correlation_data_base64"], "/wA=");
        assert!(v["properties"].get("response_topic").is_none());
        let mut binary = message();
        binary.payload = Bytes::from_static(&[0xc3, 0x28]);
        assert_eq!(to_json(&binary)["payload_base64"], "wyg=");
    }
}
