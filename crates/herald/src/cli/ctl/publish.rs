//! `herald ctl publish`: `POST /api/v1/publish`, one message with what the API takes
//! (QoS, retain, MQTT 5 properties) and an optional `Idempotency-Key`.

use std::io::Read;

use hyper::Method;
use serde_json::{Map, Value, json};

use super::http::{Api, CtlError};
use super::table::{cell, pretty};

/// `herald ctl publish` arguments.
#[derive(Debug, clap::Args)]
pub(super) struct PublishArgs {
    /// The topic name.
    topic: String,
    /// The payload, as UTF-8 text (none: an empty payload).
    #[arg(conflicts_with = "stdin")]
    payload: Option<String>,
    /// Read the payload from standard input (any bytes).
    #[arg(long)]
    stdin: bool,
    /// The payload argument is base64 (binary payloads).
    #[arg(long, requires = "payload")]
    base64: bool,
    /// QoS 0, 1 or 2 (at most session.maximum_qos).
    #[arg(long, short, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=2))]
    qos: u8,
    /// Retain the message (an empty payload deletes the retained one).
    #[arg(long, short)]
    retain: bool,
    /// An MQTT 5 user property, repeatable and in order: --user-property key=value.
    #[arg(long = "user-property", short = 'u', value_name = "KEY=VALUE")]
    user_properties: Vec<String>,
    /// MQTT 5 Content Type.
    #[arg(long)]
    content_type: Option<String>,
    /// MQTT 5 Response Topic.
    #[arg(long)]
    response_topic: Option<String>,
    /// MQTT 5 Correlation Data, as text.
    #[arg(long)]
    correlation_data: Option<String>,
    /// MQTT 5 Message Expiry Interval, in seconds.
    #[arg(long, value_name = "SECS")]
    message_expiry: Option<u32>,
    /// MQTT 5 Payload Format Indicator: the payload is UTF-8.
    #[arg(long)]
    utf8: bool,
    /// Send it once: a retry with the same key (within http.idempotency_window_secs) gets
    /// the first answer and publishes nothing again.
    #[arg(long, value_name = "KEY")]
    idempotency_key: Option<String>,
}

/// Publishes the message and says how many sessions it was routed to.
pub(super) async fn run(api: &Api, json: bool, a: PublishArgs) -> Result<String, CtlError> {
    let body = message(&a)?;
    let headers: Vec<(&'static str, String)> = a
        .idempotency_key
        .iter()
        .map(|k| ("Idempotency-Key", k.clone()))
        .collect();
    let answer = api
        .send(
            Method::POST,
            "/api/v1/publish",
            &api.tenant_query(),
            Some(&body),
            &headers,
        )
        .await?;
    if json {
        if answer.replayed {
            eprintln!("replayed: Herald answered this idempotency key before; nothing published");
        }
        return Ok(pretty(&answer.body));
    }
    let b = &answer.body;
    let matched = b["matched"].as_u64().unwrap_or(0);
    let mut out = format!(
        "published to {} (QoS {}{}): {matched} {} matched\n",
        cell(&b["topic"]),
        cell(&b["qos"]),
        if b["retain"].as_bool() == Some(true) {
            ", retained"
        } else {
            ""
        },
        if matched == 1 { "session" } else { "sessions" },
    );
    if answer.replayed {
        out.push_str(
            "(replayed: Herald answered this idempotency key before and published nothing now)\n",
        );
    }
    Ok(out)
}

/// The request's body.
fn message(a: &PublishArgs) -> Result<Value, CtlError> {
    let mut m = Map::new();
    m.insert("topic".into(), json!(a.topic));
    let payload = match (&a.payload, a.stdin) {
        (_, true) => {
            let mut bytes = Vec::new();
            std::io::stdin()
                .read_to_end(&mut bytes)
                .map_err(|error| CtlError::Io {
                    what: "reading the payload from standard input",
                    error,
                })?;
            Some(bytes)
        }
        (Some(p), false) if a.base64 => {
            m.insert("payload_base64".into(), json!(p));
            None
        }
        (Some(p), false) => Some(p.clone().into_bytes()),
        (None, false) => None,
    };
    if let Some(bytes) = payload {
        match String::from_utf8(bytes) {
            Ok(text) => m.insert("payload".into(), json!(text)),
            Err(e) => m.insert(
                "payload_base64".into(),
                json!(data_encoding::BASE64.encode(e.as_bytes())),
            ),
        };
    }
    if a.qos > 0 {
        m.insert("qos".into(), json!(a.qos));
    }
    if a.retain {
        m.insert("retain".into(), json!(true));
    }
    let properties = properties(a)?;
    if !properties.is_empty() {
        m.insert("properties".into(), Value::Object(properties));
    }
    Ok(Value::Object(m))
}

/// The MQTT 5 properties asked for.
fn properties(a: &PublishArgs) -> Result<Map<String, Value>, CtlError> {
    let mut p = Map::new();
    let mut text = |name: &str, v: &Option<String>| {
        if let Some(v) = v {
            p.insert(name.into(), json!(v));
        }
    };
    text("content_type", &a.content_type);
    text("response_topic", &a.response_topic);
    text("correlation_data", &a.correlation_data);
    if let Some(secs) = a.message_expiry {
        p.insert("message_expiry_interval".into(), json!(secs));
    }
    if a.utf8 {
        p.insert("payload_format_indicator".into(), json!(true));
    }
    if !a.user_properties.is_empty() {
        // The list form keeps the order and allows a key twice, as MQTT does.
        let pairs = a
            .user_properties
            .iter()
            .map(|kv| match kv.split_once('=') {
                Some((k, v)) => Ok(json!([k, v])),
                None => Err(CtlError::Usage(format!(
                    "--user-property {kv:?}: write it key=value"
                ))),
            })
            .collect::<Result<Vec<_>, _>>()?;
        p.insert("user_properties".into(), Value::Array(pairs));
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        publish: PublishArgs,
    }

    fn body(args: &[&str]) -> Result<Value, CtlError> {
        let cli = Cli::try_parse_from(std::iter::once("publish").chain(args.iter().copied()))
            .map_err(|e| CtlError::Usage(e.to_string()))?;
        message(&cli.publish)
    }

    #[test]
    fn a_plain_message_sends_only_what_is_set() {
        assert_eq!(
            body(&["a/b", "hello"]).ok(),
            Some(json!({"topic": "a/b", "payload": "hello"}))
        );
        assert_eq!(body(&["a/b"]).ok(), Some(json!({"topic": "a/b"})));
    }

    #[test]
    fn every_option_reaches_the_body() {
        let v = body(&[
            "t",
            "AAE=",
            "--base64",
            "-q",
            "2",
            "-r",
            "-u",
            "k=v",
            "-u",
            "k=w=x",
            "--content-type",
            "text/plain",
            "--response-topic",
            "r/1",
            "--correlation-data",
            "c",
            "--message-expiry",
            "60",
            "--utf8",
        ])
        .expect("a body");
        assert_eq!(
            v,
            json!({
                "topic": "t", "payload_base64": "AAE=", "qos": 2, "retain": true,
                "properties": {
                    "content_type": "text/plain", "response_topic": "r/1",
                    "correlation_data": "c", "message_expiry_interval": 60,
                    "payload_format_indicator": true,
                    "user_properties": [["k", "v"], ["k", "w=x"]],
                },
            })
        );
        assert!(body(&["t", "x", "-u", "novalue"]).is_err());
        assert!(body(&["t", "x", "-q", "3"]).is_err());
    }
}
