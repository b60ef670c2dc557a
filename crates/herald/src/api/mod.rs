//! The HTTP side of a node: the JSON API under `/api/v1` (backends publish to MQTT clients),
//! `/metrics` for Prometheus (`prometheus`), and `/healthz` and `/readyz` for orchestrators.
//!
//! axum routes it; Herald's own accept loop (`listener`) serves it on its own listener
//! (`http.listen`), in the same runtime as the MQTT listeners, with bounded connections and
//! deadlines. `guard` keeps web pages off it; `scope` checks API keys and says which tenant
//! a request works in (a tenant's key its own, a node-wide key the one it names). Errors are
//! JSON with a stable code and, where a field or header is at fault, its name:
//! `{"error": {"code": "invalid_field", "field": "[2].qos", "message": "..."}}`.

mod admin;
pub(crate) mod cluster;
mod dashboard;
mod guard;
mod history;
pub(crate) mod idempotency;
mod listener;
mod listing;
mod process;
mod prometheus;
mod publish;
mod scope;
mod shared_keys;
mod stats;
mod tenants;

pub(crate) use listener::serve;
use scope::Authorized;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::broker::Broker;
use crate::store::{Op, Space, StoreError};

/// What the API's handlers share.
#[derive(Debug)]
pub(crate) struct ApiState {
    /// The broker.
    pub broker: Arc<Broker>,
    /// Idempotency keys remembered.
    pub keys: idempotency::Keys,
    /// Listeners up and the store open (false again once draining or stopping).
    pub ready: AtomicBool,
    /// Reloads the configuration (`POST /api/v1/reload`).
    pub reloader: Arc<crate::reload::Reloader>,
    /// Raised by `POST /api/v1/drain`; the process drains and exits.
    pub drain: Arc<tokio::sync::Notify>,
    /// Counter samples for the rates `/api/v1/stats` shows: the one taken at least
    /// `RATE_WINDOW` ago (or at start) and the latest.
    samples: std::sync::Mutex<(Sample, Sample)>,
    /// The last hour of the node's figures, for the dashboard's charts.
    history: history::History,
    /// The HTTP listener's connections: open, refused, timed out.
    http: listener::HttpCounters,
    /// Clustered: the cluster's idempotency keys (`shared_keys`), opened on first use.
    shared_keys: tokio::sync::OnceCell<async_nats::jetstream::kv::Store>,
}

/// The idempotency keys kept in the store could not be read: the API does not start.
#[derive(Debug, thiserror::Error)]
#[error("reading the idempotency keys: {0}")]
pub struct KeysError(StoreError);

/// Counters at one instant.
#[derive(Debug, Clone, Copy)]
struct Sample {
    at: std::time::Instant,
    published: u64,
    delivered: u64,
    accepted: u64,
}

impl Sample {
    fn take(broker: &Broker) -> Sample {
        let s = &broker.stats;
        Sample {
            at: std::time::Instant::now(),
            published: s.published.load(Ordering::Relaxed),
            delivered: s.delivered.load(Ordering::Relaxed),
            accepted: s.accepted.load(Ordering::Relaxed),
        }
    }
}

/// The rates of `/api/v1/stats` cover at least this long (once the node has run as long).
const RATE_WINDOW: Duration = Duration::from_secs(10);

impl ApiState {
    /// The API's state for `broker`, with the idempotency keys the store kept.
    pub(crate) fn new(
        broker: Arc<Broker>,
        reloader: Arc<crate::reload::Reloader>,
        drain: Arc<tokio::sync::Notify>,
    ) -> Result<Arc<ApiState>, KeysError> {
        let config = broker.config();
        let http = &config.http;
        let keys = idempotency::Keys::new(http.idempotency_window_secs, http.max_idempotency_keys);
        if broker.persist.is_stored() {
            let now = idempotency::now_ms();
            let mut expired = Vec::new();
            let mut kept = 0;
            broker
                .persist
                .scan(Space::Idempotency, &mut |k, v| {
                    let key = String::from_utf8_lossy(k).into_owned();
                    let kept_it = idempotency::Record::decode(v)
                        .is_some_and(|record| keys.restore(key, record, now));
                    if kept_it {
                        kept += 1;
                    } else {
                        expired.push(Op::Delete(Space::Idempotency, k.to_vec()));
                    }
                    Ok(())
                })
                .map_err(KeysError)?;
            broker.persist.submit(expired);
            tracing::info!(kept, "idempotency keys restored");
        }
        let start = Sample::take(&broker);
        Ok(Arc::new(ApiState {
            samples: std::sync::Mutex::new((start, start)),
            history: history::History::default(),
            http: listener::HttpCounters::default(),
            shared_keys: tokio::sync::OnceCell::new(),
            broker,
            keys,
            ready: AtomicBool::new(false),
            reloader,
            drain,
        }))
    }

    /// Takes a counter sample every `RATE_WINDOW` for the rates of `/api/v1/stats`.
    pub(crate) async fn sample_rates(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(RATE_WINDOW);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            let now = Sample::take(&self.broker);
            if let Ok(mut s) = self.samples.lock() {
                *s = (s.1, now);
            }
            for tenant in self.broker.tenants() {
                tenant.usage.sample();
            }
        }
    }

    /// Forgets expired idempotency keys (and deletes their records), every minute.
    pub(crate) async fn sweep_keys(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            let gone = self.keys.sweep(idempotency::now_ms());
            self.broker.persist.submit(
                gone.into_iter()
                    .map(|k| Op::Delete(Space::Idempotency, k.into_bytes())),
            );
        }
    }
}

/// An API error: HTTP status, stable code, the field at fault, and what is wrong.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    code: &'static str,
    field: Option<String>,
    message: String,
}

impl ApiError {
    fn new(
        status: StatusCode,
        code: &'static str,
        field: Option<&str>,
        message: impl Into<String>,
    ) -> Self {
        ApiError {
            status,
            code,
            field: field.map(str::to_owned),
            message: message.into(),
        }
    }

    /// A bad field (400 `invalid_field`).
    fn field(field: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        let message = if field.is_empty() {
            message
        } else {
            format!("{field}: {message}")
        };
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_field",
            Some(field),
            message,
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = json!({ "code": self.code, "message": self.message });
        if let Some(field) = self.field {
            error["field"] = json!(field);
        }
        let mut response = (self.status, Json(json!({ "error": error }))).into_response();
        if self.status == StatusCode::TOO_MANY_REQUESTS {
            // A bound that frees itself as subscribers drain.
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        }
        response
    }
}

/// The query parameters, or a JSON error naming `query` (axum would answer plain text).
fn query_of<T>(query: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    query
        .map(|Query(q)| q)
        .map_err(|e| ApiError::field("query", e.body_text()))
}

/// The request body, or why it was refused.
fn body(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|e| {
        let status = e.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                status,
                "body_too_large",
                None,
                "the body is larger than http.max_body_bytes",
            )
        } else {
            ApiError::new(status, "bad_body", None, e.body_text())
        }
    })
}

/// The body as JSON.
fn json(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            None,
            format!("the body is not JSON: {e}"),
        )
    })
}

/// The routes.
pub(crate) fn router(state: Arc<ApiState>) -> Router {
    let max_body = state.broker.config().http.max_body_bytes;
    let api = Router::new()
        .route("/publish", post(publish::one))
        .route("/publish/batch", post(publish::batch))
        .route("/stats", get(stats::stats))
        .route("/stats/history", get(history::history))
        .route("/topics", get(stats::topics))
        .route("/cluster", get(stats::cluster))
        .route("/openapi.json", get(openapi))
        .route("/log", get(log_level).put(set_log_level))
        .route("/reload", post(reload))
        .route("/drain", post(drain))
        .route("/clients", get(admin::clients))
        .route("/clients/{id}", get(admin::client).delete(admin::kick))
        .route("/subscriptions", get(admin::subscriptions))
        .route("/retained", get(admin::retained))
        .route("/tenants", get(tenants::list))
        .route(
            "/tenants/{name}",
            get(tenants::one).put(tenants::put).delete(tenants::delete),
        )
        .route(
            "/retained/{*topic}",
            axum::routing::delete(admin::delete_retained),
        );
    Router::new()
        .nest("/api/v1", api)
        .route("/", get(dashboard::page))
        .route("/assets/{name}", get(dashboard::asset))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        // Routed paths only: an unknown path keeps its 404.
        .route_layer(axum::middleware::from_fn(guard::json_only))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            guard::origin_and_host,
        ))
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        None,
        "no such endpoint (the API is under /api/v1)",
    )
}

/// The OpenAPI document of `/api/v1` (tests/openapi.rs checks the server against it).
async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        include_str!("openapi.json"),
    )
        .into_response()
}

/// Reloads the configuration: what was applied, what needs a restart; or why it was
/// refused (the running configuration stays).
async fn reload(
    State(state): State<Arc<ApiState>>,
    auth: Authorized,
) -> Result<Json<Value>, ApiError> {
    auth.node_wide("reloading the configuration")?;
    let reloader = state.reloader.clone();
    let report = tokio::task::spawn_blocking(move || reloader.reload_logged())
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                None,
                e.to_string(),
            )
        })?
        .map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_config",
                e.key(),
                e.to_string(),
            )
        })?;
    Ok(Json(json!(report)))
}

/// Starts draining the node (as SIGTERM does): it stops accepting, reports not ready,
/// disconnects its clients gradually, writes the store and exits.
async fn drain(State(state): State<Arc<ApiState>>, auth: Authorized) -> Response {
    if let Err(e) = auth.node_wide("draining the node") {
        return e.into_response();
    }
    state.drain.notify_one();
    (
        StatusCode::ACCEPTED,
        Json(json!({
            "draining": true,
            "period_secs": state.broker.config().drain.period_secs,
        })),
    )
        .into_response()
}

/// The log level in force.
async fn log_level(auth: Authorized) -> Result<Json<Value>, ApiError> {
    auth.node_wide("the log level")?;
    Ok(Json(json!({ "level": crate::logging::level() })))
}

/// Changes the log level: `{"level": "debug"}` (any tracing filter).
async fn set_log_level(
    auth: Authorized,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    auth.node_wide("the log level")?;
    let body = self::body(body)?;
    let value = json(&body)?;
    let Some(level) = value.get("level").and_then(Value::as_str) else {
        return Err(ApiError::field("level", "a string is required"));
    };
    crate::logging::set_level(level).map_err(|e| {
        if crate::logging::level().is_none() {
            ApiError::new(StatusCode::CONFLICT, "no_logger", None, e.to_string())
        } else {
            ApiError::field("level", e.to_string())
        }
    })?;
    tracing::info!(level, "log level changed");
    Ok(Json(json!({ "level": level })))
}

/// The process is alive.
async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// Ready for traffic: listeners up, store open, not draining.
async fn readyz(State(state): State<Arc<ApiState>>) -> Response {
    let store_ok = !state.broker.persist.failed();
    let ready = state.ready.load(Ordering::Relaxed) && store_ok && !state.broker.draining();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({
            "ready": ready,
            "listeners": state.ready.load(Ordering::Relaxed),
            "store": store_ok,
            "draining": state.broker.draining(),
        })),
    )
        .into_response()
}

/// Prometheus metrics; a node-wide API key is needed with `http.metrics_requires_key`
/// (the metrics cover every tenant).
async fn metrics(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let config = state.broker.config();
    if config.http.metrics_requires_key {
        scope::check_key(&headers, &config.http)?.node_wide("/metrics")?;
    }
    let b = &state.broker;
    let http = &state.http;
    let mut sampled = prometheus::Sampled {
        retained: b.default_tenant.retained.len() as u64,
        idempotency_keys: state.keys.len() as u64,
        store_bytes: b.persist.durable().map(|d| d.journal.store().disk_bytes()),
        http_open: http.open.load(Ordering::Relaxed) as u64,
        http_refused: http.refused.load(Ordering::Relaxed),
        http_header_timeouts: http.header_timeouts.load(Ordering::Relaxed),
        http_idle_timeouts: http.idle_timeouts.load(Ordering::Relaxed),
        ..Default::default()
    };
    b.default_tenant.sessions.for_each(|session| {
        let st = session.lock();
        sampled.sessions += 1;
        sampled.subscriptions += st.subscriptions().len() as u64;
        sampled.queued += st.queued().0 as u64;
        sampled.inflight += st.inflight_len() as u64;
    });
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        prometheus::render(b, &sampled),
    )
        .into_response())
}
