//! `POST /api/v1/publish` and `POST /api/v1/publish/batch`: backends publish to MQTT clients
//! of the tenant the caller works in (`scope`).

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes as Payload;
use mqtt_codec::properties::PublishProperties;
use mqtt_codec::{ByteString, QoS};
use serde_json::{Map, Value, json};

use super::idempotency::{Begin, Outcome, fingerprint, now_ms, put_op};
use super::scope::TenantQuery;
use super::{ApiError, ApiState, Authorized, query_of};
use crate::broker::Tenant;
use crate::broker::message::Message;
use crate::broker::router::Routed;
use crate::config::Config;
use crate::store::Op;
use crate::store::journal::Ticket;

/// One message of a request, checked.
#[derive(Debug)]
pub(crate) struct Draft {
    topic: ByteString,
    payload: Payload,
    qos: QoS,
    retain: bool,
    properties: PublishProperties,
}

/// How long a request waits for its messages to reach the disk before giving up (the
/// store is failing).
const DURABLE_WAIT: Duration = Duration::from_secs(30);

pub(crate) async fn one(
    State(state): State<Arc<ApiState>>,
    auth: Authorized,
    query: Result<Query<TenantQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let asked = query_of(query)?.tenant;
    // The scope first: a tenant's key naming another tenant is refused whatever it sends.
    // The tenant itself is created only for a request that passes every check.
    let name = auth.tenant_name(asked.as_deref())?;
    let body = super::body(body)?;
    let value = super::json(&body)?;
    let draft = parse(&value, "", &state.broker.config())?;
    let summary = json!({
        "topic": &*draft.topic,
        "qos": draft.qos as u8,
        "retain": draft.retain,
    });
    let key = idempotency_key(&headers, &auth)?;
    let tenant = auth.write(&state.broker, Some(name))?;
    let (outcomes, replayed) =
        publish(&state, &tenant, key, "/publish", &body, vec![draft]).await?;
    let mut answer = summary;
    answer["matched"] = json!(outcomes.first().map_or(0, |o| o.matched));
    Ok(respond(answer, replayed))
}

pub(crate) async fn batch(
    State(state): State<Arc<ApiState>>,
    auth: Authorized,
    query: Result<Query<TenantQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let asked = query_of(query)?.tenant;
    // The scope first: a tenant's key naming another tenant is refused whatever it sends.
    // The tenant itself is created only for a request that passes every check.
    let name = auth.tenant_name(asked.as_deref())?;
    let body = super::body(body)?;
    let value = super::json(&body)?;
    let Value::Array(items) = &value else {
        return Err(ApiError::field("", "the body must be an array of messages"));
    };
    let max = state.broker.config().http.max_batch;
    if items.is_empty() || items.len() > max {
        return Err(ApiError::field(
            "",
            format!("a batch holds 1 to {max} messages (http.max_batch)"),
        ));
    }
    // Every message is checked before any is published.
    let drafts = items
        .iter()
        .enumerate()
        .map(|(i, item)| parse(item, &format!("[{i}]."), &state.broker.config()))
        .collect::<Result<Vec<_>, _>>()?;
    let topics: Vec<String> = drafts.iter().map(|d| d.topic.to_string()).collect();
    let key = idempotency_key(&headers, &auth)?;
    let tenant = auth.write(&state.broker, Some(name))?;
    let (outcomes, replayed) =
        publish(&state, &tenant, key, "/publish/batch", &body, drafts).await?;
    let results: Vec<Value> = topics
        .iter()
        .zip(&outcomes)
        .map(|(topic, o)| json!({ "topic": topic, "matched": o.matched }))
        .collect();
    Ok(respond(
        json!({ "published": results.len(), "results": results }),
        replayed,
    ))
}

fn respond(body: Value, replayed: bool) -> Response {
    let mut response = (StatusCode::OK, Json(body)).into_response();
    if replayed {
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    response
}

/// The request's idempotency key, scoped to the API key that sent it (a retry with the same
/// API key is recognised; another key, node-wide or a tenant's, has keys of its own).
fn idempotency_key(headers: &HeaderMap, auth: &Authorized) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .ok()
        .filter(|k| !k.is_empty() && k.len() <= 255 && k.bytes().all(|b| b.is_ascii_graphic()));
    match key {
        Some(k) => Ok(Some(format!("{}:{k}", auth.key_id))),
        None => Err(ApiError::field(
            "Idempotency-Key",
            "must be 1 to 255 visible ASCII characters",
        )),
    }
}

/// Publishes `drafts` in order, in `tenant`. With a key: only the ones its record does not
/// list yet, each written with the record's progress; a complete record is answered from
/// memory.
async fn publish(
    state: &ApiState,
    tenant: &Tenant,
    key: Option<String>,
    path: &str,
    body: &[u8],
    drafts: Vec<Draft>,
) -> Result<(Vec<Outcome>, bool), ApiError> {
    let Some(key) = key else {
        return Ok((publish_all(state, tenant, drafts).await?, false));
    };
    // The tenant is part of the request: a node-wide key that sends the same key to another
    // tenant is refused as for another body. (The default tenant's requests hash as they
    // did before tenants, so that records kept in the store still match.)
    let fp = if tenant.name.is_empty() {
        fingerprint(&[path.as_bytes(), body])
    } else {
        fingerprint(&[path.as_bytes(), body, tenant.name.as_bytes()])
    };
    // Clustered, the cluster's record of the key first: answered or being served on
    // another node.
    let begun = match super::shared_keys::begin(state, &key, fp).await {
        Some(begun) => begun,
        None => state.keys.begin(&key, fp, drafts.len(), now_ms()),
    };
    let done = match begun {
        Begin::Replay(outcomes) => return Ok((outcomes, true)),
        Begin::InUse => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "idempotency_key_in_use",
                Some("Idempotency-Key"),
                "a request with this key is being served; retry when it is answered",
            ));
        }
        Begin::Mismatch => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                Some("Idempotency-Key"),
                "this key was used for a different request",
            ));
        }
        Begin::Publish { done } => done,
    };
    let outcomes = publish_keyed(state, tenant, &key, done, drafts).await?;
    super::shared_keys::finish(state, &key, fp, &outcomes).await;
    Ok((outcomes, false))
}

/// Publishes every draft, without an idempotency key, and waits until they are on disk.
async fn publish_all(
    state: &ApiState,
    tenant: &Tenant,
    drafts: Vec<Draft>,
) -> Result<Vec<Outcome>, ApiError> {
    let mut outcomes = Vec::with_capacity(drafts.len());
    let mut waits = Waits::default();
    for draft in drafts {
        check_store(state, &draft)?;
        let (w, outcome) = route(state, tenant, draft, outcomes.len(), |_| None);
        waits = waits.max(w);
        match outcome {
            Ok(outcome) => outcomes.push(outcome),
            Err(e) => {
                waits.wait(state).await?;
                return Err(e);
            }
        }
    }
    waits.wait(state).await?;
    Ok(outcomes)
}

/// Publishes the drafts past `outcomes` (those the key's record already lists), each in the
/// same store write as the record's progress, and waits until they are on disk. A request
/// that fails before its first message forgets the key, so that a retry starts afresh.
async fn publish_keyed(
    state: &ApiState,
    tenant: &Tenant,
    key: &str,
    mut outcomes: Vec<Outcome>,
    drafts: Vec<Draft>,
) -> Result<Vec<Outcome>, ApiError> {
    let keys = &state.keys;
    let stored = state.broker.persist.is_stored();
    let mut waits = Waits::default();
    let mut failure = None;
    for draft in drafts.into_iter().skip(outcomes.len()) {
        if let Err(e) = check_store(state, &draft) {
            failure = Some(e);
            break;
        }
        let qos = draft.qos;
        let (w, outcome) = route(state, tenant, draft, outcomes.len(), |routed| {
            if qos != QoS::AtMostOnce && routed.refused > 0 {
                // Not accepted: the key does not count it, a retry publishes it again.
                return None;
            }
            // The key's progress, in the same atomic write as the message.
            let record = keys.progress(
                key,
                Outcome {
                    matched: routed.matched,
                },
            )?;
            stored.then(|| put_op(key, &record))
        });
        waits = waits.max(w);
        match outcome {
            Ok(outcome) => outcomes.push(outcome),
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    keys.finish(key);
    let waited = waits.wait(state).await;
    if let Some(e) = failure {
        if keys.forget_if_empty(key) {
            super::shared_keys::forget(state, key).await;
        }
        return Err(e);
    }
    waited?;
    Ok(outcomes)
}

/// Routes one draft in `tenant`, with `extra` written in the same store write as the message. Returns
/// what to wait for, and the outcome, or the answer to a refusal (`published`: how many of
/// the request's messages went before it).
fn route(
    state: &ApiState,
    tenant: &Tenant,
    draft: Draft,
    published: usize,
    extra: impl FnOnce(&Routed) -> Option<Op>,
) -> (Waits, Result<Outcome, ApiError>) {
    let broker = &state.broker;
    let qos = draft.qos;
    let rates = {
        let cfg = broker.config();
        tenant.rates.current(&tenant.own(), &cfg.tenants.defaults)
    };
    if rates.and_then(|r| r.http()).is_some() {
        tenant.usage.breach(crate::broker::quota::Breach::HttpRate);
        let error = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            None,
            format!(
                "the tenant's http_publish_per_sec is spent for this second; {published} \
                 message(s) of the request were published before it"
            ),
        );
        return (Waits::default(), Err(error));
    }
    let result = broker.inject(tenant, &message(draft), extra);
    let outcome = match refused(&result, qos) {
        Some(reason) => Err(over_bound(reason, published)),
        None => Ok(Outcome {
            matched: result.routed.matched,
        }),
    };
    let waits = Waits {
        ticket: result.ticket,
        confirm: result.confirm,
    };
    (waits, outcome)
}

/// What a publication's answer waits for: the store's ticket, and clustered, the other
/// nodes' confirmation.
#[derive(Debug, Default, Clone, Copy)]
struct Waits {
    ticket: Ticket,
    confirm: u64,
}

impl Waits {
    fn max(self, other: Waits) -> Waits {
        Waits {
            ticket: self.ticket.max(other.ticket),
            confirm: self.confirm.max(other.confirm),
        }
    }

    /// Waits for both: on disk here, and kept where the other nodes deliver from.
    async fn wait(self, state: &ApiState) -> Result<(), ApiError> {
        wait_durable(state, self.ticket).await?;
        wait_confirmed(state, self.confirm).await
    }
}

/// Waits until the other nodes of the cluster can deliver what was published (confirmation
/// `n`, `Peers::poll_confirmed`).
async fn wait_confirmed(state: &ApiState, n: u64) -> Result<(), ApiError> {
    let broker = &state.broker;
    let confirmed = std::future::poll_fn(|cx| broker.poll_confirmed(n, cx));
    tokio::time::timeout(DURABLE_WAIT, confirmed)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "cluster_timeout",
                None,
                "the cluster's stream did not confirm the message in time (NATS slow or \
                 unreachable); it is delivered here and will reach the other nodes once \
                 NATS confirms it; retry with the same Idempotency-Key to publish exactly once",
            )
        })
}

/// Why a QoS 1/2 publication was not accepted (a subscriber's queue or the node's memory
/// budget was full, or the tenant's retained bound), if it was not.
fn refused(
    published: &crate::broker::Published,
    qos: QoS,
) -> Option<crate::broker::stats::RefuseReason> {
    published.refused.filter(|_| qos != QoS::AtMostOnce)
}

/// The answer to a publication past a bound: 429 with Retry-After, saying how many of the
/// request's messages were published before it. Subscribers whose queues had room got the
/// refused message; a retry sends it to them again (at-least-once for what was refused).
fn over_bound(reason: crate::broker::stats::RefuseReason, published: usize) -> ApiError {
    if reason == crate::broker::stats::RefuseReason::Unrecordable {
        return ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            None,
            format!(
                "the store could not record the message; {published} message(s) of the \
                 request were published before it"
            ),
        );
    }
    let what = match reason {
        crate::broker::stats::RefuseReason::RetainedLimit => {
            "the tenant's retained messages are at max_retained_messages or \
             max_retained_bytes (its own, [tenants.defaults] or limits.max_retained_*), or \
             its stored bytes at max_store_bytes"
        }
        crate::broker::stats::RefuseReason::TenantQuota => {
            "the tenant's offline sessions are owed as much as max_offline_queued_messages, \
             max_offline_queued_bytes or max_store_bytes allow"
        }
        crate::broker::stats::RefuseReason::MemoryBudget => {
            "the node's queues are at limits.max_queued_bytes_total"
        }
        crate::broker::stats::RefuseReason::ClusterBacklog => {
            "as many QoS 1/2 messages as cluster.max_unconfirmed wait for the cluster's \
             stream to confirm them (NATS slow or unreachable)"
        }
        _ => "a subscriber's queue is at limits.max_queued_messages or max_queued_bytes",
    };
    ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        reason.label(),
        None,
        format!("{what}; {published} message(s) of the request were published before it"),
    )
}

/// Refuses a QoS 1/2 message while the store is past its disk limits or failing.
fn check_store(state: &ApiState, draft: &Draft) -> Result<(), ApiError> {
    let persist = &state.broker.persist;
    if persist.failed() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_failed",
            None,
            "the store cannot write; nothing more is accepted",
        ));
    }
    if draft.qos != QoS::AtMostOnce && persist.refusing() {
        state
            .broker
            .stats
            .store_refused
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        return Err(ApiError::new(
            StatusCode::INSUFFICIENT_STORAGE,
            "store_full",
            None,
            "the store is past store.max_disk_bytes or store.min_free_disk_bytes",
        ));
    }
    Ok(())
}

/// Waits until `ticket` is on disk: a publication is answered once it would survive a
/// crash, as a PUBACK is.
pub(crate) async fn wait_durable(state: &ApiState, ticket: Ticket) -> Result<(), ApiError> {
    let persist = &state.broker.persist;
    if ticket.is_none() {
        return Ok(());
    }
    let durable = std::future::poll_fn(|cx| persist.poll_durable(ticket, cx));
    tokio::time::timeout(DURABLE_WAIT, durable)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_timeout",
                None,
                "the store did not confirm the write in time; retry with the same \
                 Idempotency-Key to publish exactly once",
            )
        })?;
    if persist.durable_ticket() < ticket {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_failed",
            None,
            "the store cannot write; nothing more is accepted",
        ));
    }
    Ok(())
}

fn message(d: Draft) -> Arc<Message> {
    // Origin 0: the server itself (No Local never holds a subscriber back from it).
    Message::new(d.topic, d.payload, d.qos, d.retain, d.properties, 0)
}

/// Checks one message object; errors name the field, prefixed with `at` (`[3].`).
pub(crate) fn parse(value: &Value, at: &str, config: &Config) -> Result<Draft, ApiError> {
    let field = |name: &str| format!("{at}{name}");
    let Value::Object(obj) = value else {
        return Err(ApiError::field(
            at.trim_end_matches('.'),
            "a message is a JSON object",
        ));
    };
    const KNOWN: [&str; 6] = [
        "topic",
        "payload",
        "payload_base64",
        "qos",
        "retain",
        "properties",
    ];
    if let Some(unknown) = obj.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        return Err(ApiError::field(&field(unknown), "unknown field"));
    }
    let topic = match obj.get("topic") {
        Some(Value::String(t)) => t.as_str(),
        Some(_) => return Err(ApiError::field(&field("topic"), "must be a string")),
        None => return Err(ApiError::field(&field("topic"), "is required")),
    };
    check_topic(topic, &field("topic"), config)?;
    if crate::broker::sys::watch::is_sys(topic) {
        return Err(ApiError::field(
            &field("topic"),
            "$SYS/ topics are published by Herald only",
        ));
    }
    let payload = payload(obj, at)?;
    if payload.len() + topic.len() > config.limits.max_packet_size {
        return Err(ApiError::field(
            &field("payload"),
            format!(
                "larger than limits.max_packet_size ({} bytes)",
                config.limits.max_packet_size
            ),
        ));
    }
    let qos = qos(obj.get("qos"), &field("qos"), config)?;
    let retain = retain(obj.get("retain"), &field("retain"), config)?;
    let properties = match obj.get("properties") {
        None => PublishProperties::default(),
        Some(Value::Object(p)) => properties(p, &field("properties."), config)?,
        Some(_) => return Err(ApiError::field(&field("properties"), "must be an object")),
    };
    Ok(Draft {
        topic: ByteString::from(topic),
        payload,
        qos,
        retain,
        properties,
    })
}

/// The payload: `payload` (UTF-8 text) or `payload_base64`, or none (empty).
fn payload(obj: &Map<String, Value>, at: &str) -> Result<Payload, ApiError> {
    let field = |name: &str| format!("{at}{name}");
    match (obj.get("payload"), obj.get("payload_base64")) {
        (Some(_), Some(_)) => Err(ApiError::field(
            &field("payload"),
            "give payload (UTF-8 text) or payload_base64, not both",
        )),
        (Some(Value::String(text)), None) => Ok(Payload::copy_from_slice(text.as_bytes())),
        (Some(_), None) => Err(ApiError::field(&field("payload"), "must be a string")),
        (None, Some(Value::String(b64))) => data_encoding::BASE64
            .decode(b64.as_bytes())
            .map(Payload::from)
            .map_err(|e| ApiError::field(&field("payload_base64"), format!("not base64: {e}"))),
        (None, Some(_)) => Err(ApiError::field(
            &field("payload_base64"),
            "must be a string",
        )),
        (None, None) => Ok(Payload::new()),
    }
}

/// `qos`: 0 when absent, at most `session.maximum_qos`.
fn qos(value: Option<&Value>, field: &str, config: &Config) -> Result<QoS, ApiError> {
    let Some(v) = value else {
        return Ok(QoS::AtMostOnce);
    };
    match v.as_u64() {
        Some(q) if q <= u64::from(config.session.maximum_qos) => Ok(match q {
            0 => QoS::AtMostOnce,
            1 => QoS::AtLeastOnce,
            _ => QoS::ExactlyOnce,
        }),
        _ => Err(ApiError::field(
            field,
            format!(
                "must be 0 to {} (session.maximum_qos)",
                config.session.maximum_qos
            ),
        )),
    }
}

/// `retain`: false when absent; true only while `session.retain_available`.
fn retain(value: Option<&Value>, field: &str, config: &Config) -> Result<bool, ApiError> {
    let retain = match value {
        None => false,
        Some(Value::Bool(r)) => *r,
        Some(_) => return Err(ApiError::field(field, "must be true or false")),
    };
    if retain && !config.session.retain_available {
        return Err(ApiError::field(
            field,
            "retained messages are off (session.retain_available)",
        ));
    }
    Ok(retain)
}

fn check_topic(topic: &str, field: &str, config: &Config) -> Result<(), ApiError> {
    mqtt_codec::topic::validate_topic_name(topic)
        .map_err(|e| ApiError::field(field, format!("not a topic name: {e}")))?;
    if topic.len() > config.limits.max_topic_length
        || topic.split('/').count() > config.limits.max_topic_levels
    {
        return Err(ApiError::field(
            field,
            "longer than limits.max_topic_length or deeper than limits.max_topic_levels",
        ));
    }
    Ok(())
}

fn properties(
    p: &Map<String, Value>,
    at: &str,
    config: &Config,
) -> Result<PublishProperties, ApiError> {
    let field = |name: &str| format!("{at}{name}");
    let text = |name: &str| -> Result<Option<ByteString>, ApiError> {
        match p.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(ByteString::from(s.as_str()))),
            Some(_) => Err(ApiError::field(&field(name), "must be a string")),
        }
    };
    let mut out = PublishProperties::default();
    for key in p.keys() {
        match key.as_str() {
            "payload_format_indicator" => {
                out.payload_format_indicator = Some(match &p[key] {
                    Value::Bool(b) => *b,
                    v if v.as_u64() == Some(0) => false,
                    v if v.as_u64() == Some(1) => true,
                    _ => {
                        return Err(ApiError::field(&field(key), "must be 0, 1, true or false"));
                    }
                })
            }
            "message_expiry_interval" => {
                let secs = p[key].as_u64().and_then(|s| u32::try_from(s).ok());
                out.message_expiry_interval = Some(secs.ok_or_else(|| {
                    ApiError::field(&field(key), "must be a number of seconds (32 bits)")
                })?);
            }
            "content_type" => out.content_type = text(key)?,
            "response_topic" => {
                let topic = text(key)?;
                if let Some(t) = &topic {
                    check_topic(t, &field(key), config)?;
                }
                out.response_topic = topic;
            }
            "correlation_data" => {
                out.correlation_data = text(key)?.map(|s| Payload::copy_from_slice(s.as_bytes()))
            }
            "correlation_data_base64" => {
                let Some(Value::String(b64)) = p.get(key) else {
                    return Err(ApiError::field(&field(key), "must be a base64 string"));
                };
                let bytes = data_encoding::BASE64
                    .decode(b64.as_bytes())
                    .map_err(|e| ApiError::field(&field(key), format!("not base64: {e}")))?;
                out.correlation_data = Some(Payload::from(bytes));
            }
            "user_properties" => out.user_properties = user_properties(&p[key], &field(key))?,
            other => return Err(ApiError::field(&field(other), "unknown property")),
        }
    }
    Ok(out)
}

/// `{"k": "v", ...}` or `[["k", "v"], ...]` (the list form allows a key twice, as MQTT does).
fn user_properties(value: &Value, field: &str) -> Result<Vec<(ByteString, ByteString)>, ApiError> {
    match value {
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| match v {
                Value::String(v) => {
                    Ok((ByteString::from(k.as_str()), ByteString::from(v.as_str())))
                }
                _ => Err(ApiError::field(&format!("{field}.{k}"), "must be a string")),
            })
            .collect(),
        Value::Array(pairs) => pairs
            .iter()
            .enumerate()
            .map(|(i, pair)| match pair.as_array().map(Vec::as_slice) {
                Some([Value::String(k), Value::String(v)]) => {
                    Ok((ByteString::from(k.as_str()), ByteString::from(v.as_str())))
                }
                _ => Err(ApiError::field(
                    &format!("{field}[{i}]"),
                    "must be a [key, value] pair of strings",
                )),
            })
            .collect(),
        _ => Err(ApiError::field(
            field,
            "must be an object of strings or a list of [key, value] pairs",
        )),
    }
}
