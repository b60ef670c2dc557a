//! `herald ctl retained`: `/api/v1/retained` (a filter's retained messages, and one topic's
//! through the same list: the API has no GET of one topic) and `DELETE
//! /api/v1/retained/{topic}`.

use clap::Subcommand;
use hyper::Method;
use serde_json::Value;

use super::http::{Api, CtlError, Query, encode};
use super::paging::{self, Paging};
use super::table::{Table, bytes, cell, count, fields, pretty, printable};

/// `herald ctl retained ...`
#[derive(Debug, Subcommand)]
pub(super) enum RetainedAction {
    /// List retained messages matching a filter, by topic.
    List {
        /// An MQTT topic filter (`+` and `#` allowed; all by default).
        #[arg(long)]
        filter: Option<String>,
        /// Which page.
        #[command(flatten)]
        paging: Paging,
    },
    /// Show the retained message of one topic.
    Get {
        /// The topic name.
        topic: String,
        /// Print the payload alone, as its bytes (for scripts and files).
        #[arg(long)]
        raw: bool,
    },
    /// Delete the retained message of one topic (nothing is delivered).
    Delete {
        /// The topic name.
        topic: String,
    },
}

/// Runs a `retained` command; its output may be a payload's bytes (`get --raw`).
pub(super) async fn run(
    api: &Api,
    json: bool,
    action: RetainedAction,
) -> Result<Vec<u8>, CtlError> {
    match action {
        RetainedAction::List { filter, paging } => {
            let query = api.tenant_query().opt("filter", filter);
            let page = paging::fetch(api, "/api/v1/retained", query, &paging).await?;
            Ok(match json {
                true => pretty(&page),
                false => list(&page),
            }
            .into_bytes())
        }
        RetainedAction::Get { topic, raw } => {
            if raw && json {
                return Err(CtlError::Usage("--raw or --json: not both".into()));
            }
            let message = get(api, &topic).await?;
            match (raw, json) {
                (true, _) => payload(&message),
                (false, true) => Ok(pretty(&message).into_bytes()),
                (false, false) => Ok(show(&message).into_bytes()),
            }
        }
        RetainedAction::Delete { topic } => {
            check_topic(&topic)?;
            let path = format!("/api/v1/retained/{}", encode(&topic));
            let answer = api
                .call(Method::DELETE, &path, &api.tenant_query(), None, &[])
                .await?;
            Ok(match json {
                true => pretty(&answer),
                false => format!(
                    "deleted the retained message on {}\n",
                    cell(&answer["topic"])
                ),
            }
            .into_bytes())
        }
    }
}

/// A topic name: not empty, no wildcard (the API says the rest).
fn check_topic(topic: &str) -> Result<(), CtlError> {
    if topic.is_empty() || topic.contains(['+', '#']) {
        return Err(CtlError::Usage(format!(
            "{topic:?} is not a topic name: a topic name is not empty and has no + or #"
        )));
    }
    Ok(())
}

/// The retained message of `topic`: the list filtered by the topic itself, which matches
/// that topic alone.
async fn get(api: &Api, topic: &str) -> Result<Value, CtlError> {
    check_topic(topic)?;
    let query: Query = api.tenant_query().set("filter", topic).set("limit", "1");
    let mut page = api.get("/api/v1/retained", &query).await?;
    let found = page["items"]
        .as_array_mut()
        .and_then(|items| items.iter_mut().find(|m| m["topic"] == topic))
        .map(Value::take);
    found.ok_or_else(|| CtlError::NotFound(format!("no retained message on {topic:?}")))
}

/// The payload's bytes.
fn payload(message: &Value) -> Result<Vec<u8>, CtlError> {
    if let Some(text) = message["payload"].as_str() {
        return Ok(text.as_bytes().to_vec());
    }
    let b64 = message["payload_base64"].as_str().unwrap_or_default();
    data_encoding::BASE64
        .decode(b64.as_bytes())
        .map_err(|e| CtlError::Usage(format!("the payload Herald sent is not base64: {e}")))
}

/// A payload for a table: its text, or that it is binary.
fn payload_cell(m: &Value, max: usize) -> String {
    match (m["payload"].as_str(), m["payload_base64"].as_str()) {
        (Some(text), _) => printable(text, max),
        (None, Some(b64)) => format!("(binary; base64 {})", printable(b64, max)),
        (None, None) => "-".into(),
    }
}

fn list(page: &Value) -> String {
    let items = paging::items(page);
    if items.is_empty() {
        return format!("no retained messages\n{}", paging::more(page));
    }
    let mut t = Table::new(&["TOPIC", "QOS>", "SIZE>", "PAYLOAD"]);
    for m in items {
        t.row(vec![
            cell(&m["topic"]),
            cell(&m["qos"]),
            bytes(&m["bytes"]),
            payload_cell(m, 40),
        ]);
    }
    format!("{}{}", t.render(), paging::more(page))
}

fn show(m: &Value) -> String {
    fields(&[
        ("topic", cell(&m["topic"])),
        ("qos", cell(&m["qos"])),
        (
            "size",
            format!("{} ({} bytes)", bytes(&m["bytes"]), count(&m["bytes"])),
        ),
        ("payload", payload_cell(m, 4096)),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn payloads_text_or_binary() {
        let text = json!({"topic": "a", "qos": 1, "bytes": 2, "payload": "hi"});
        let binary = json!({"topic": "b", "qos": 0, "bytes": 3, "payload_base64": "AAEC"});
        assert_eq!(payload(&text).ok(), Some(b"hi".to_vec()));
        assert_eq!(payload(&binary).ok(), Some(vec![0, 1, 2]));
        assert_eq!(
            list(&json!({"items": [text, binary], "next": null})),
            "TOPIC  QOS  SIZE  PAYLOAD\n\
             a        1   2 B  hi\n\
             b        0   3 B  (binary; base64 AAEC)\n"
        );
    }

    #[test]
    fn wildcards_are_not_topics() {
        assert!(check_topic("a/b c").is_ok());
        for bad in ["", "a/+", "#"] {
            assert!(check_topic(bad).is_err(), "{bad}");
        }
    }
}
