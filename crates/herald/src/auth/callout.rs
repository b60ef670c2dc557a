//! The HTTP auth callout: one POST per CONNECT whose answer is not cached; answers cached
//! honouring `Cache-Control: max-age`; concurrent look-ups for one key coalesced.
//!
//! The request (`application/json`):
//!
//! ```json
//! {"client_id": "dev-1", "username": "alice", "password": "secret",
//!  "peer": "192.0.2.7:50312", "listener": "mqtt", "certificate": null}
//! ```
//!
//! Absent fields are `null`. A password that is not UTF-8 is sent as `"password": null` plus
//! `"password_base64"` (standard base64, padded). The answer must be HTTP 200 with a JSON
//! object: `"result"` (`"allow"` or `"deny"`, required), and optionally `"username"`,
//! `"tenant"` (strings), `"acl"` ([`AclClaim`]), `"limits"` ([`ClientLimits`]) and `"reason"`
//! (a string for the log). Any other member, type or value makes it malformed. On a deny the
//! grant members are ignored.
//!
//! Answers (allow and deny) are cached per (username, password, certificate, listener and,
//! with `cache_by_client_id`, client id), keyed by a salted SHA-256 of those: the cache holds
//! no password. An answer is kept for its `Cache-Control: max-age` (`no-store` and `no-cache`:
//! not kept), `cache_default_secs` without one, never more than `cache_max_secs`. Look-ups of
//! one key while its request is in flight wait for that request: a reconnect storm of one
//! user costs one call. A failure (timeout, connection error, non-200 status, malformed
//! answer) is never cached: the client is refused with 0x88 (server unavailable), or passed on
//! to the next method with `fail_open`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use moka::Expiry;
use moka::future::Cache;
use ring::digest;
use serde::{Deserialize, Serialize};

use crate::auth::http::{Client, HttpError};
use crate::auth::{
    AclClaim, BoxFuture, ClientLimits, Credentials, Denial, DenyReason, Grant, Method, Verdict,
};
use crate::config::CalloutConfig;

/// Counters of the callout's work, for metrics (each only grows).
#[derive(Debug, Default)]
pub struct CalloutStats {
    /// Requests sent to the service.
    pub requests: AtomicU64,
    /// Look-ups answered from the cache.
    pub cache_hits: AtomicU64,
    /// Look-ups that waited for another's request to the same key instead of sending one.
    pub coalesced: AtomicU64,
    /// Answers that allowed.
    pub allowed: AtomicU64,
    /// Answers that denied.
    pub denied: AtomicU64,
    /// Requests that got no answer in time.
    pub errors_timeout: AtomicU64,
    /// Requests that could not reach the service (DNS, TCP, TLS).
    pub errors_connect: AtomicU64,
    /// Answers with a status other than 200.
    pub errors_status: AtomicU64,
    /// 200 answers whose body is not a valid answer.
    pub errors_malformed: AtomicU64,
    /// Other failures (connection closed mid-answer, answer too large).
    pub errors_other: AtomicU64,
}

/// Why the callout could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {message}")]
pub struct CalloutError {
    /// The setting at fault.
    pub key: &'static str,
    /// What is wrong.
    pub message: String,
}

/// Why a request gave no answer (never cached).
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error("{0}")]
    Http(#[from] HttpError),
    #[error("HTTP status {0}")]
    Status(u16),
    #[error("malformed answer: {0}")]
    Malformed(String),
}

/// The `[auth.callout]` method.
#[derive(Debug)]
pub struct Callout {
    /// Where each CONNECT is POSTed.
    url: String,
    /// The pooled client.
    client: Client,
    /// How long a request may take, answer read.
    timeout: Duration,
    /// A failure passes the client on instead of refusing it.
    fail_open: bool,
    /// The `Authorization` header sent.
    authorization: Option<String>,
    /// Longest time an answer is cached.
    cache_max: Duration,
    /// Time an answer without `max-age` is cached (capped by `cache_max`).
    cache_default: Duration,
    /// The client id is part of the cache key.
    by_client_id: bool,
    /// Random bytes mixed into every cache key, so that keys say nothing outside the process.
    salt: [u8; 16],
    /// Answers by key.
    cache: Cache<[u8; 32], Arc<Cached>>,
    /// Counters.
    stats: Arc<CalloutStats>,
}

/// A cached answer.
#[derive(Debug)]
struct Cached {
    /// `Allow` or `Deny`.
    verdict: Verdict,
    /// How long it is kept.
    ttl: Duration,
}

/// Each entry expires after its own answer's time.
struct ByAnswer;

impl Expiry<[u8; 32], Arc<Cached>> for ByAnswer {
    fn expire_after_create(
        &self,
        _key: &[u8; 32],
        value: &Arc<Cached>,
        _created: Instant,
    ) -> Option<Duration> {
        Some(value.ttl)
    }
}

/// The request's JSON.
#[derive(Serialize)]
struct Ask<'a> {
    client_id: &'a str,
    username: Option<&'a str>,
    password: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    password_base64: Option<String>,
    peer: String,
    listener: &'static str,
    certificate: Option<&'a str>,
}

/// The answer's JSON.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Reply {
    result: Outcome,
    username: Option<String>,
    tenant: Option<String>,
    acl: Option<AclClaim>,
    limits: Option<ClientLimits>,
    reason: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum Outcome {
    Allow,
    Deny,
}

impl Callout {
    /// The callout `cfg` describes (its URL and `authorization` checked), with an empty cache.
    pub fn new(cfg: &CalloutConfig) -> Result<Arc<Callout>, CalloutError> {
        let invalid = |key, message: String| CalloutError { key, message };
        if !(cfg.url.starts_with("http://") || cfg.url.starts_with("https://"))
            || cfg.url.parse::<hyper::Uri>().is_err()
        {
            return Err(invalid(
                "auth.callout.url",
                format!("{:?} is not an http:// or https:// URL", cfg.url),
            ));
        }
        if hyper::header::HeaderValue::from_str(&cfg.authorization).is_err() {
            return Err(invalid(
                "auth.callout.authorization",
                "not a valid header value (printable ASCII only)".into(),
            ));
        }
        let client =
            Client::new(cfg.pool_idle).map_err(|e| invalid("auth.callout.url", e.to_string()))?;
        Ok(Arc::new(Callout::with_client(cfg, client)))
    }

    /// The callout `cfg` describes, sending its requests through `client` (one with its own
    /// TLS roots, say).
    pub fn with_client(cfg: &CalloutConfig, client: Client) -> Callout {
        let mut salt = [0; 16];
        if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut salt).is_err() {
            tracing::warn!("no system randomness: callout cache keys are unsalted");
        }
        let cache = Cache::builder()
            .max_capacity(cfg.cache_capacity)
            .expire_after(ByAnswer)
            .build();
        Callout {
            url: cfg.url.clone(),
            client,
            timeout: Duration::from_millis(cfg.timeout_ms.max(1)),
            fail_open: cfg.fail_open,
            authorization: (!cfg.authorization.is_empty()).then(|| cfg.authorization.clone()),
            cache_max: Duration::from_secs(cfg.cache_max_secs),
            cache_default: Duration::from_secs(cfg.cache_default_secs.min(cfg.cache_max_secs)),
            by_client_id: cfg.cache_by_client_id,
            salt,
            cache,
            stats: Arc::default(),
        }
    }

    /// The counters.
    pub fn stats(&self) -> &Arc<CalloutStats> {
        &self.stats
    }

    /// Answers cached now (expired ones may linger until the cache's next upkeep).
    pub fn cached(&self) -> u64 {
        self.cache.entry_count()
    }

    /// The cache key of a CONNECT: a salted SHA-256 of each field, length-prefixed.
    fn key(&self, c: &Credentials<'_>) -> [u8; 32] {
        let mut d = digest::Context::new(&digest::SHA256);
        d.update(&self.salt);
        let mut field = |v: Option<&[u8]>| match v {
            None => d.update(&[0]),
            Some(bytes) => {
                d.update(&[1]);
                d.update(&(bytes.len() as u64).to_be_bytes());
                d.update(bytes);
            }
        };
        field(Some(c.listener.label().as_bytes()));
        field(c.username.map(str::as_bytes));
        field(c.password);
        field(c.certificate.map(str::as_bytes));
        field(self.by_client_id.then_some(c.client_id.as_bytes()));
        let mut key = [0; 32];
        key.copy_from_slice(d.finish().as_ref());
        key
    }

    async fn judge(&self, c: &Credentials<'_>) -> Verdict {
        let key = self.key(c);
        if let Some(hit) = self.cache.get(&key).await {
            self.stats.cache_hits.fetch_add(1, Ordering::Relaxed);
            return hit.verdict.clone();
        }
        let asked = AtomicBool::new(false);
        let answer = self
            .cache
            .try_get_with(key, async {
                asked.store(true, Ordering::Relaxed);
                self.ask(c).await.inspect_err(|e| self.count_failure(e, c))
            })
            .await;
        if !asked.load(Ordering::Relaxed) {
            self.stats.coalesced.fetch_add(1, Ordering::Relaxed);
        }
        match answer {
            Ok(cached) => cached.verdict.clone(),
            Err(_) if self.fail_open => Verdict::Pass,
            Err(_) => Verdict::Deny(Denial::new(DenyReason::CalloutUnavailable)),
        }
    }

    /// Sends one request and reads its answer.
    async fn ask(&self, c: &Credentials<'_>) -> Result<Arc<Cached>, Failure> {
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        let password = c.password.map(std::str::from_utf8);
        let body = serde_json::to_vec(&Ask {
            client_id: c.client_id,
            username: c.username,
            password: password.and_then(Result::ok),
            password_base64: match (password, c.password) {
                (Some(Err(_)), Some(raw)) => Some(data_encoding::BASE64.encode(raw)),
                _ => None,
            },
            peer: c.peer.to_string(),
            listener: c.listener.label(),
            certificate: c.certificate,
        })
        .map_err(|e| Failure::Malformed(e.to_string()))?;
        let answer = self
            .client
            .post_json(&self.url, body, self.authorization.as_deref(), self.timeout)
            .await?;
        if answer.status != 200 {
            return Err(Failure::Status(answer.status));
        }
        let reply: Reply =
            serde_json::from_slice(&answer.body).map_err(|e| Failure::Malformed(e.to_string()))?;
        let verdict = match reply.result {
            Outcome::Allow => {
                self.stats.allowed.fetch_add(1, Ordering::Relaxed);
                Verdict::Allow(Grant {
                    username: reply.username,
                    tenant: reply.tenant,
                    acl: reply.acl,
                    limits: reply.limits,
                })
            }
            Outcome::Deny => {
                self.stats.denied.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(
                    client_id = c.client_id,
                    reason = reply.reason.as_deref().unwrap_or(""),
                    "the auth callout denied"
                );
                Verdict::Deny(Denial::new(DenyReason::CalloutDenied))
            }
        };
        let ttl = answer
            .cache_max_age
            .map_or(self.cache_default, Duration::from_secs)
            .min(self.cache_max);
        Ok(Arc::new(Cached { verdict, ttl }))
    }

    fn count_failure(&self, failure: &Failure, c: &Credentials<'_>) {
        let counter = match failure {
            Failure::Http(HttpError::Timeout(_)) => &self.stats.errors_timeout,
            Failure::Http(HttpError::Connect(_) | HttpError::Tls(_)) => &self.stats.errors_connect,
            Failure::Http(_) => &self.stats.errors_other,
            Failure::Status(_) => &self.stats.errors_status,
            Failure::Malformed(_) => &self.stats.errors_malformed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            url = %self.url,
            client_id = c.client_id,
            fail_open = self.fail_open,
            "the auth callout failed: {failure}"
        );
    }
}

impl Method for Callout {
    fn name(&self) -> &'static str {
        "callout"
    }

    fn check<'a>(&'a self, credentials: &'a Credentials<'a>) -> BoxFuture<'a, Verdict> {
        Box::pin(self.judge(credentials))
    }
}
