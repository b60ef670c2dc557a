//! Looking at and steering a node: clients and their sessions, subscriptions, retained
//! messages, each in the tenant the caller works in (`scope`).

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::listing::{
    ClientQuery, MAX_LIMIT, local_client, local_clients, local_kick, local_subscriptions,
};
use super::scope::TenantQuery;
use super::{ApiError, ApiState, Authorized, query_of};

/// A path segment, or a JSON error naming it (axum would answer plain text).
fn path_text(path: Result<Path<String>, PathRejection>, field: &str) -> Result<String, ApiError> {
    path.map(|Path(p)| p)
        .map_err(|e| ApiError::field(field, e.body_text()))
}

pub(super) fn check_limit(limit: Option<usize>) -> Result<usize, ApiError> {
    match limit {
        None => Ok(100),
        Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        Some(_) => Err(ApiError::field(
            "limit",
            format!("must be 1 to {MAX_LIMIT}"),
        )),
    }
}

/// Sorts `items` by key and keeps the first `limit` after `after`; says the next cursor.
pub(super) fn page(mut items: Vec<(String, Value)>, limit: usize) -> Value {
    let more = items.len() > limit;
    if more {
        items.select_nth_unstable_by(limit, |a, b| a.0.cmp(&b.0));
        items.truncate(limit);
    }
    items.sort_by(|a, b| a.0.cmp(&b.0));
    let next = if more {
        items.last().map(|(k, _)| k.clone())
    } else {
        None
    };
    json!({
        "items": items.into_iter().map(|(_, v)| v).collect::<Vec<_>>(),
        "next": next,
    })
}

pub(crate) async fn clients(
    State(state): State<Arc<ApiState>>,
    auth: Authorized,
    query: Result<Query<ClientQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let q = query_of(query)?;
    let tenant = auth.read(&state.broker, q.tenant.as_deref())?;
    let limit = check_limit(q.limit)?;
    let mut items = local_clients(&tenant, &q);
    let ask = super::cluster::Ask::Clients {
        tenant: tenant.name.to_string(),
        query: q,
    };
    super::cluster::gather(&state, &ask, &mut items).await;
    Ok(Json(page(items, limit)))
}

fn not_found(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "client_not_found",
        Some("client_id"),
        format!("no session for client id {id:?}"),
    )
}

pub(crate) async fn client(
    State(state): State<Arc<ApiState>>,
    auth: Authorized,
    id: Result<Path<String>, PathRejection>,
    query: Result<Query<TenantQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let id = path_text(id, "client_id")?;
    let q = query_of(query)?;
    let tenant = auth.read(&state.broker, q.tenant.as_deref())?;
    if let Some(v) = local_client(&tenant, &id) {
        return Ok(Json(v));
    }
    let ask = super::cluster::Ask::Client {
        tenant: tenant.name.to_string(),
        id: id.clone(),
    };
    match super::cluster::first(&state, &ask).await {
        Some(v) => Ok(Json(v)),
        None => Err(not_found(&id)),
    }
}

/// `DELETE /api/v1/clients/{id}` options.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct KickQuery {
    /// The tenant (node-wide keys; a tenant's key may name its own only).
    tenant: Option<String>,
    /// Also end the session: its subscriptions and queued messages go.
    discard_session: Option<bool>,
}

pub(crate) async fn kick(
    State(state): State<Arc<ApiState>>,
    auth: Authorized,
    id: Result<Path<String>, PathRejection>,
    query: Result<Query<KickQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let id = path_text(id, "client_id")?;
    let q = query_of(query)?;
    let tenant = auth.read(&state.broker, q.tenant.as_deref())?;
    let discard = q.discard_session.unwrap_or(false);
    if let Some(v) = local_kick(&state.broker, &tenant, &id, discard) {
        return Ok(Json(v));
    }
    let ask = super::cluster::Ask::Kick {
        tenant: tenant.name.to_string(),
        id: id.clone(),
        discard,
    };
    match super::cluster::first(&state, &ask).await {
        Some(v) => Ok(Json(v)),
        None => Err(not_found(&id)),
    }
}

/// A `filter` query parameter.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FilterQuery {
    /// The tenant (node-wide keys; a tenant's key may name its own only).
    tenant: Option<String>,
    /// An MQTT topic filter (`+` and `#` allowed); all when absent.
    filter: Option<String>,
    limit: Option<usize>,
    after: Option<String>,
}

fn check_filter(filter: Option<&str>) -> Result<&str, ApiError> {
    let filter = filter.unwrap_or("#");
    mqtt_codec::topic::validate_topic_filter(filter)
        .map_err(|e| ApiError::field("filter", format!("not a topic filter: {e}")))?;
    Ok(filter)
}

pub(crate) async fn subscriptions(
    State(state): State<Arc<ApiState>>,
    auth: Authorized,
    query: Result<Query<FilterQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let q = query_of(query)?;
    let tenant = auth.read(&state.broker, q.tenant.as_deref())?;
    let limit = check_limit(q.limit)?;
    let filter = check_filter(q.filter.as_deref())?;
    // The cursor names a (filter, client id) pair: opaque (base64url) in the answer.
    let after = match &q.after {
        None => None,
        Some(a) => Some(
            data_encoding::BASE64URL_NOPAD
                .decode(a.as_bytes())
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| ApiError::field("after", "not a cursor this API gave"))?,
        ),
    };
    let mut items = local_subscriptions(&tenant, filter, after.as_deref(), limit);
    let ask = super::cluster::Ask::Subscriptions {
        tenant: tenant.name.to_string(),
        filter: filter.to_string(),
        after: after.clone(),
        limit,
    };
    super::cluster::gather(&state, &ask, &mut items).await;
    let mut answer = page(items, limit);
    if let Some(next) = answer["next"].as_str() {
        answer["next"] = json!(data_encoding::BASE64URL_NOPAD.encode(next.as_bytes()));
    }
    Ok(Json(answer))
}

pub(crate) async fn retained(
    State(state): State<Arc<ApiState>>,
    auth: Authorized,
    query: Result<Query<FilterQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let q = query_of(query)?;
    let tenant = auth.read(&state.broker, q.tenant.as_deref())?;
    let limit = check_limit(q.limit)?;
    let filter = check_filter(q.filter.as_deref())?;
    let items = tenant
        .retained
        .matching(filter)
        .into_iter()
        .filter(|m| q.after.as_deref().is_none_or(|a| &*m.topic > a))
        .map(|m| {
            let text = std::str::from_utf8(&m.payload).ok();
            let mut v = json!({
                "topic": &*m.topic,
                "qos": m.qos as u8,
                "bytes": m.payload.len(),
            });
            match text {
                Some(t) => v["payload"] = json!(t),
                None => v["payload_base64"] = json!(data_encoding::BASE64.encode(&m.payload)),
            }
            (m.topic.to_string(), v)
        })
        .collect();
    Ok(Json(page(items, limit)))
}

pub(crate) async fn delete_retained(
    State(state): State<Arc<ApiState>>,
    auth: Authorized,
    topic: Result<Path<String>, PathRejection>,
    query: Result<Query<TenantQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let topic = path_text(topic, "topic")?;
    let q = query_of(query)?;
    let tenant = auth.read(&state.broker, q.tenant.as_deref())?;
    mqtt_codec::topic::validate_topic_name(&topic)
        .map_err(|e| ApiError::field("topic", format!("not a topic name: {e}")))?;
    let existed = tenant
        .retained
        .matching(&topic)
        .iter()
        .any(|m| *m.topic == *topic);
    if !existed {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "retained_not_found",
            Some("topic"),
            format!("no retained message on {topic:?}"),
        ));
    }
    // An empty retained publication deletes it, in the store too.
    let message = crate::broker::message::Message::new(
        topic.as_str().into(),
        bytes::Bytes::new(),
        mqtt_codec::QoS::AtMostOnce,
        true,
        Default::default(),
        0,
    );
    let ticket = state.broker.clear_retained(&tenant, &message);
    super::publish::wait_durable(&state, ticket).await?;
    Ok(Json(json!({ "topic": topic, "deleted": true })))
}
