//! `GET /api/v1/stats`: counts at a glance, for the whole node or for one tenant.
//!
//! A node-wide key without a `tenant` parameter gets the node's counters and a line per
//! tenant (at most `MAX_TENANTS_LISTED`); with one, and a tenant's key always, the figures
//! of that tenant only: the node's traffic counters are not kept per tenant, and a tenant's
//! key must not learn of other tenants.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use serde_json::{Value, json};

use serde::Deserialize;

use super::prometheus::LISTENERS;
use super::scope::{Scope, TenantQuery};
use super::{ApiError, ApiState, Authorized, Sample};
use crate::broker::Tenant;
use crate::broker::stats::{CloseReason, DropReason, RefuseReason};
use crate::metrics::PROTOCOLS;

/// Most tenants the node's answer lists (the default one first, then by name); past it,
/// `tenants_total` says how many there are.
const MAX_TENANTS_LISTED: usize = 1000;

pub(super) async fn stats(
    State(state): State<Arc<ApiState>>,
    auth: Authorized,
    query: Result<Query<TenantQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let q = super::query_of(query)?;
    if auth.scope == Scope::Node && q.tenant.is_none() {
        return Ok(Json(node(&state)));
    }
    let tenant = auth.read(&state.broker, q.tenant.as_deref())?;
    Ok(Json(figures(&tenant, "tenant")))
}

/// One tenant's figures: its clients, sessions, subscriptions and retained messages, and
/// its name under `name_key`.
pub(super) fn figures(tenant: &Tenant, name_key: &str) -> Value {
    let (mut sessions, mut connections, mut subscriptions) = (0u64, 0u64, 0u64);
    let (mut queued, mut inflight) = (0u64, 0u64);
    tenant.sessions.for_each(|session| {
        let st = session.lock();
        sessions += 1;
        connections += u64::from(st.connected());
        subscriptions += st.subscriptions().len() as u64;
        queued += st.queued().0 as u64;
        inflight += st.inflight_len() as u64;
    });
    let u = &tenant.usage;
    let retained_bytes = tenant.retained.bytes() as u64;
    let offline_bytes = u.offline_bytes.load(Ordering::Relaxed);
    let rates = u.rates();
    let mut v = json!({
        "connections": connections,
        "sessions": sessions,
        "subscriptions": subscriptions,
        "queued_messages": queued,
        "inflight_messages": inflight,
        "persistent_sessions": u.persistent.load(Ordering::Relaxed),
        "retained": tenant.retained.len(),
        "retained_bytes": retained_bytes,
        "offline_queued_messages": u.offline_messages.load(Ordering::Relaxed),
        "offline_queued_bytes": offline_bytes,
        "store_bytes": retained_bytes + offline_bytes,
        "published": u.published.load(Ordering::Relaxed),
        "published_bytes": u.published_bytes.load(Ordering::Relaxed),
        "delivered": u.delivered.load(Ordering::Relaxed),
        "delivered_bytes": u.delivered_bytes.load(Ordering::Relaxed),
        "rates": {
            "published_per_sec": rates.published,
            "published_bytes_per_sec": rates.published_bytes,
            "delivered_per_sec": rates.delivered,
            "delivered_bytes_per_sec": rates.delivered_bytes,
        },
        "quota_breaches": crate::broker::quota::Breach::ALL
            .iter()
            .map(|b| (b.label().to_string(), json!(tenant.usage.breaches(*b))))
            .collect::<serde_json::Map<String, Value>>(),
    });
    v[name_key] = json!(&*tenant.name);
    v
}

/// The node's counters, and each tenant's figures.
fn node(state: &ApiState) -> Value {
    let b = &state.broker;
    let s = &b.stats;
    let closes: serde_json::Map<String, Value> = CloseReason::ALL
        .iter()
        .map(|r| (r.label().to_string(), json!(s.closes(*r))))
        .collect();
    let drops: serde_json::Map<String, Value> = DropReason::ALL
        .iter()
        .map(|r| (r.label().to_string(), json!(s.drops(*r))))
        .collect();
    let all = b.tenants();
    let mut sessions = 0u64;
    for tenant in &all {
        tenant.sessions.for_each(|_| sessions += 1);
    }
    let tenants: Vec<Value> = all
        .iter()
        .take(MAX_TENANTS_LISTED)
        .map(|t| figures(t, "name"))
        .collect();
    // Per second since the older sample (10 to 20 seconds ago, or since the start).
    let then = state
        .samples
        .lock()
        .map_or_else(|s| s.into_inner().0, |s| s.0);
    let now = Sample::take(b);
    let secs = now.at.duration_since(then.at).as_secs_f64().max(0.001);
    let rate = |a: u64, b: u64| ((b.saturating_sub(a)) as f64 / secs * 10.0).round() / 10.0;
    json!({
        "connections": s.open.load(Ordering::Relaxed),
        "connections_accepted": s.accepted.load(Ordering::Relaxed),
        "sessions": sessions,
        "messages_published": s.published.load(Ordering::Relaxed),
        "messages_delivered": s.delivered.load(Ordering::Relaxed),
        "store_refused": s.store_refused.load(Ordering::Relaxed),
        "refused": RefuseReason::ALL
            .iter()
            .map(|r| (r.label().to_string(), json!(s.refusals(*r))))
            .collect::<serde_json::Map<_, _>>(),
        "accepted_unqueued": s.accepted_unqueued.load(Ordering::Relaxed),
        "queued_bytes": s.queued_bytes(),
        "pushbacks": s.pushbacks.load(Ordering::Relaxed),
        "stalls": s.stalls.load(Ordering::Relaxed),
        "idempotency_keys": state.keys.len(),
        "closes": closes,
        "drops": drops,
        "rates": {
            "window_secs": (secs * 10.0).round() / 10.0,
            "published_per_sec": rate(then.published, now.published),
            "delivered_per_sec": rate(then.delivered, now.delivered),
            "connections_accepted_per_sec": rate(then.accepted, now.accepted),
        },
        "connections_by_listener": LISTENERS
            .iter()
            .map(|k| {
                let n: u64 = PROTOCOLS.iter().map(|(v, _)| s.connections.open_count(*k, *v)).sum();
                (k.label().to_string(), json!(n))
            })
            .collect::<serde_json::Map<_, _>>(),
        "connections_by_protocol": PROTOCOLS
            .iter()
            .map(|(v, label)| {
                let n: u64 = LISTENERS.iter().map(|k| s.connections.open_count(*k, *v)).sum();
                ((*label).to_string(), json!(n))
            })
            .collect::<serde_json::Map<_, _>>(),
        "max_connections": b.max_connections.load(Ordering::Relaxed),
        "queued_messages": tenants.iter().map(|t| t["queued_messages"].as_u64().unwrap_or(0)).sum::<u64>(),
        "process": process(),
        "store": store(b),
        "tenants": tenants,
        "tenants_total": all.len(),
    })
}

/// The process's open files, CPU time and memory.
fn process() -> Value {
    let p = super::process::Process::read(true);
    json!({
        "open_fds": p.open_fds,
        "max_fds": p.max_fds,
        "cpu_seconds": (p.cpu_seconds * 100.0).round() / 100.0,
        "resident_memory_bytes": p.resident_bytes,
    })
}

/// The store: in memory, or its size on disk and its limits.
fn store(b: &crate::broker::Broker) -> Value {
    let config = b.config();
    match b.persist.durable() {
        None => json!({ "in_memory": true }),
        Some(d) => json!({
            "in_memory": false,
            "disk_bytes": d.journal.store().disk_bytes(),
            "max_disk_bytes": config.store.max_disk_bytes,
            "min_free_disk_bytes": config.store.min_free_disk_bytes,
            "failed": b.persist.failed(),
        }),
    }
}

/// `GET /api/v1/topics` parameters.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TopicsQuery {
    /// The tenant (node-wide keys; a tenant's key may name its own only; a node-wide key
    /// without it: every tenant's).
    tenant: Option<String>,
    /// How many (default 20, at most 100).
    limit: Option<usize>,
}

/// `GET /api/v1/topics`: the busiest topics of the last few seconds (`broker::topics`).
pub(super) async fn topics(
    State(state): State<Arc<ApiState>>,
    auth: Authorized,
    query: Result<Query<TopicsQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let q = super::query_of(query)?;
    let limit = match q.limit {
        None => 20,
        Some(n @ 1..=100) => n,
        Some(_) => return Err(ApiError::field("limit", "must be 1 to 100")),
    };
    let b = &state.broker;
    let tenant = if auth.scope == Scope::Node && q.tenant.is_none() {
        None
    } else {
        Some(auth.read(b, q.tenant.as_deref())?)
    };
    let items: Vec<Value> = b
        .topics
        .top(tenant.as_ref().map(|t| &*t.name), limit)
        .into_iter()
        .map(|r| {
            json!({
                "tenant": &*r.tenant,
                "topic": &*r.topic,
                "per_sec": r.per_sec,
                "error_per_sec": r.error_per_sec,
            })
        })
        .collect();
    Ok(Json(json!({
        "window_secs": super::history::INTERVAL.as_secs(),
        "sampled_one_in": b.topics.stride(),
        "items": items,
    })))
}

/// `GET /api/v1/cluster`: the nodes of the cluster as this one last heard them (node-wide
/// keys only); a node that is not clustered says so and lists itself alone.
pub(super) async fn cluster(
    State(state): State<Arc<ApiState>>,
    auth: Authorized,
) -> Result<Json<Value>, ApiError> {
    auth.node_wide("the cluster view")?;
    let b = &state.broker;
    Ok(Json(match b.peers_as::<crate::cluster::Cluster>() {
        Some(c) => json!({
            "clustered": true,
            "node": c.node(),
            "nats_connected": c.connected(),
            "nodes": c.nodes(b),
        }),
        None => json!({
            "clustered": false,
            "node": "",
            "nats_connected": false,
            "nodes": [],
        }),
    }))
}
