//! The keys of a JWKS URL: fetched at start and every `jwks_refresh_secs`, and again when a
//! token names a key id no key has (at most once per `jwks_min_refresh_secs`, one fetch shared
//! by every CONNECT waiting on it).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use super::JwtError;
use super::keys::{self, Key};
use crate::auth::http::Client;

/// The longest a JWKS fetch may take (a CONNECT with an unknown key id waits for it).
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// Idle connections kept to the JWKS server (fetches are rare).
const POOL_IDLE: usize = 1;

/// A JWKS URL and the keys it last served.
#[derive(Debug)]
pub(super) struct Remote {
    /// Where the keys are.
    url: String,
    /// The client fetching them.
    client: Client,
    /// Seconds between scheduled fetches.
    pub(super) every: Duration,
    /// Least time between two fetches caused by unknown key ids.
    min_gap: Duration,
    /// The keys of the last good fetch (empty before the first).
    keys: ArcSwap<Vec<Key>>,
    /// Bumped by each good fetch, so that a CONNECT that waited for a fetch knows one
    /// happened.
    generation: AtomicU64,
    /// When the last fetch caused by an unknown key id started; held while it runs, so that
    /// CONNECTs arriving meanwhile wait for it instead of starting their own.
    on_demand: tokio::sync::Mutex<Option<Instant>>,
    /// Fetches started (scheduled or not).
    fetches: AtomicU64,
}

impl Remote {
    pub(super) fn new(url: &str, every: Duration, min_gap: Duration) -> Result<Remote, JwtError> {
        let client = Client::new(POOL_IDLE).map_err(|e| JwtError::Config {
            key: "auth.jwt.jwks_url",
            message: e.to_string(),
        })?;
        Ok(Remote {
            url: url.to_owned(),
            client,
            every,
            min_gap,
            keys: ArcSwap::from_pointee(Vec::new()),
            generation: AtomicU64::new(0),
            on_demand: tokio::sync::Mutex::new(None),
            fetches: AtomicU64::new(0),
        })
    }

    /// The keys last fetched.
    pub(super) fn keys(&self) -> Arc<Vec<Key>> {
        self.keys.load_full()
    }

    /// How many fetches succeeded so far (a token's look-up notes it before trying the keys).
    pub(super) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Fetches started so far.
    pub(super) fn fetches(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    /// Fetches the keys now and puts them in place: how many are usable. A failed fetch
    /// leaves the previous keys in place.
    pub(super) async fn fetch(&self) -> Result<usize, JwtError> {
        self.fetches.fetch_add(1, Ordering::Relaxed);
        let failed = |message: String| JwtError::Fetch {
            url: self.url.clone(),
            message,
        };
        let answer = self
            .client
            .get(&self.url, FETCH_TIMEOUT)
            .await
            .map_err(|e| failed(e.to_string()))?;
        if answer.status != 200 {
            return Err(failed(format!("HTTP status {}", answer.status)));
        }
        let jwks = keys::from_jwks(&answer.body, false).map_err(failed)?;
        for why in &jwks.skipped {
            tracing::warn!(url = %self.url, "JWKS key skipped: {why}");
        }
        let count = jwks.keys.len();
        if count == 0 {
            tracing::warn!(url = %self.url, "the JWKS has no usable key");
        }
        self.keys.store(Arc::new(jwks.keys));
        self.generation.fetch_add(1, Ordering::AcqRel);
        tracing::debug!(url = %self.url, keys = count, "JWKS fetched");
        Ok(count)
    }

    /// Fetches the keys again because a token named a key id none has, unless one such fetch
    /// ran less than `jwks_min_refresh_secs` ago. `seen` is the generation noted before the
    /// keys were tried: if a fetch has happened since (this CONNECT waited for another's),
    /// none is started. True when there are new keys to try.
    pub(super) async fn refetch(&self, seen: u64) -> bool {
        let mut last = self.on_demand.lock().await;
        if self.generation() != seen {
            return true;
        }
        if last.is_some_and(|at| at.elapsed() < self.min_gap) {
            return false;
        }
        *last = Some(Instant::now());
        match self.fetch().await {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!("{e}");
                false
            }
        }
    }
}
