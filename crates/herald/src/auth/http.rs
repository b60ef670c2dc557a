//! The HTTP client of the callout and of JWKS fetches: pooled connections, http and https,
//! timeouts.
//!
//! One hyper client per user (the callout, the JWT method), each with its own pool of
//! keep-alive connections, so that a burst of CONNECTs reuses a few warm connections instead
//! of opening one each. HTTPS goes through rustls with the ring provider (the same crypto as
//! the listeners) and the system's root certificates. HTTP/1.1 only: the services asked are
//! small and local, and HTTP/2 would add a dependency for no gain.
//!
//! Every request is bounded: one deadline covers connecting, sending and reading the whole
//! answer, and the answer's body is capped ([`MAX_BODY`]), so that a slow or hostile service
//! can hold neither a CONNECT nor memory for long.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::header::{ACCEPT, AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, HeaderValue, USER_AGENT};
use hyper::{Method, Request, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client as Pooled;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// The largest answer body read (a JWKS with a few dozen RSA keys is some tens of KiB).
pub const MAX_BODY: usize = 1024 * 1024;

/// How long an idle pooled connection is kept before it is closed.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// What the client sends as `User-Agent`.
const AGENT: &str = concat!("herald/", env!("CARGO_PKG_VERSION"));

/// A pooled HTTP/1.1 client for `http://` and `https://` URLs. Cheap to clone (the pool is
/// shared).
#[derive(Clone)]
pub struct Client {
    /// hyper's pooled client over a connector that speaks TLS for `https://` URLs.
    inner: Pooled<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").finish_non_exhaustive()
    }
}

/// An HTTP answer, read whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The status code.
    pub status: u16,
    /// How long the answer may be cached, from `Cache-Control`: `max-age` seconds, `Some(0)`
    /// for `no-store` or `no-cache`, `None` when it says neither.
    pub cache_max_age: Option<u64>,
    /// The body (at most [`MAX_BODY`] bytes).
    pub body: Bytes,
}

/// Why a request got no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    /// The URL is not an `http://` or `https://` URL hyper can use.
    #[error("bad URL: {0}")]
    Url(String),
    /// The service could not be reached (DNS, TCP or TLS).
    #[error("cannot connect: {0}")]
    Connect(String),
    /// The deadline passed before the whole answer was read.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The answer's body is larger than [`MAX_BODY`].
    #[error("the answer is larger than {MAX_BODY} bytes")]
    TooLarge,
    /// No TLS configuration could be built.
    #[error("TLS: {0}")]
    Tls(String),
    /// The exchange failed after connecting (connection closed, not HTTP).
    #[error("request failed: {0}")]
    Failed(String),
}

impl HttpError {
    /// A short name for metrics and logs.
    pub fn label(&self) -> &'static str {
        match self {
            HttpError::Url(_) => "url",
            HttpError::Connect(_) => "connect",
            HttpError::Timeout(_) => "timeout",
            HttpError::TooLarge => "too_large",
            HttpError::Failed(_) => "failed",
            HttpError::Tls(_) => "tls",
        }
    }
}

impl Client {
    /// A client keeping at most `pool_idle` idle connections per host, trusting the system's
    /// root certificates for `https://` (none if they cannot be loaded: `https://` URLs then
    /// fail, `http://` ones still work).
    pub fn new(pool_idle: usize) -> Result<Client, HttpError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = match hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_native_roots(provider.clone())
        {
            Ok(builder) => builder,
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    "no system root certificates: https:// auth services cannot be verified"
                );
                let config = rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .map_err(|e| HttpError::Tls(e.to_string()))?
                    .with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth();
                hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(config)
            }
        };
        let connector = builder
            .https_or_http()
            .enable_http1()
            .wrap_connector(plain_connector());
        Ok(Client::pooled(pool_idle, connector))
    }

    /// A client using `tls` for `https://` URLs (its own roots, client certificates).
    pub fn with_tls(pool_idle: usize, tls: rustls::ClientConfig) -> Client {
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(plain_connector());
        Client::pooled(pool_idle, connector)
    }

    fn pooled(pool_idle: usize, connector: HttpsConnector<HttpConnector>) -> Client {
        let inner = Pooled::builder(TokioExecutor::new())
            .pool_max_idle_per_host(pool_idle)
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .build(connector);
        Client { inner }
    }

    /// POSTs `body` as `application/json`, with `authorization` as the `Authorization`
    /// header when given; the answer must be read whole within `timeout`.
    pub async fn post_json(
        &self,
        url: &str,
        body: Vec<u8>,
        authorization: Option<&str>,
        timeout: Duration,
    ) -> Result<Answer, HttpError> {
        let mut request = request(Method::POST, url, Bytes::from(body))?;
        let headers = request.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(value) = authorization {
            let mut value = HeaderValue::from_str(value).map_err(|_| {
                HttpError::Url("the Authorization value is not a header value".into())
            })?;
            value.set_sensitive(true);
            headers.insert(AUTHORIZATION, value);
        }
        self.send(request, timeout).await
    }

    /// GETs `url`; the answer must be read whole within `timeout`.
    pub async fn get(&self, url: &str, timeout: Duration) -> Result<Answer, HttpError> {
        let request = request(Method::GET, url, Bytes::new())?;
        self.send(request, timeout).await
    }

    async fn send(
        &self,
        request: Request<Full<Bytes>>,
        timeout: Duration,
    ) -> Result<Answer, HttpError> {
        let exchange = async {
            let response = self.inner.request(request).await.map_err(|e| {
                let detail = error_chain(&e);
                if e.is_connect() {
                    HttpError::Connect(detail)
                } else {
                    HttpError::Failed(detail)
                }
            })?;
            let status = response.status().as_u16();
            let cache_max_age = cache_max_age(response.headers().get_all(CACHE_CONTROL));
            let body = read_capped(response.into_body()).await?;
            Ok(Answer {
                status,
                cache_max_age,
                body,
            })
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .unwrap_or(Err(HttpError::Timeout(timeout)))
    }
}

/// The TCP connector under TLS: any scheme (the TLS layer picks), no Nagle delay.
fn plain_connector() -> HttpConnector {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http
}

/// A request for `url` with the headers every request carries.
fn request(method: Method, url: &str, body: Bytes) -> Result<Request<Full<Bytes>>, HttpError> {
    let uri: Uri = url
        .parse()
        .map_err(|e| HttpError::Url(format!("{url:?}: {e}")))?;
    match uri.scheme_str() {
        Some("http" | "https") if uri.host().is_some() => {}
        _ => {
            return Err(HttpError::Url(format!(
                "{url:?} is not an http:// or https:// URL"
            )));
        }
    }
    Request::builder()
        .method(method)
        .uri(uri)
        .header(USER_AGENT, AGENT)
        .header(ACCEPT, "application/json")
        .body(Full::new(body))
        .map_err(|e| HttpError::Url(format!("{url:?}: {e}")))
}

/// Reads a body whole, refusing one longer than [`MAX_BODY`] as soon as it is.
async fn read_capped(mut body: hyper::body::Incoming) -> Result<Bytes, HttpError> {
    let mut read = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| HttpError::Failed(error_chain(&e)))?;
        if let Ok(data) = frame.into_data() {
            if read.len() + data.len() > MAX_BODY {
                return Err(HttpError::TooLarge);
            }
            read.extend_from_slice(&data);
        }
    }
    Ok(read.freeze())
}

/// An error and its sources, for the log (hyper's own messages say little: "client error
/// (Connect)").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// What `Cache-Control` says about caching: `no-store` or `no-cache` anywhere gives
/// `Some(0)`; else the first well-formed `max-age`; else `None`.
pub fn cache_max_age<'a>(values: impl IntoIterator<Item = &'a HeaderValue>) -> Option<u64> {
    let mut max_age = None;
    for value in values {
        let Ok(value) = value.to_str() else { continue };
        for directive in value.split(',') {
            let directive = directive.trim();
            let (name, argument) = match directive.split_once('=') {
                Some((name, argument)) => (name.trim(), Some(argument.trim().trim_matches('"'))),
                None => (directive, None),
            };
            if name.eq_ignore_ascii_case("no-store") || name.eq_ignore_ascii_case("no-cache") {
                return Some(0);
            }
            if name.eq_ignore_ascii_case("max-age") && max_age.is_none() {
                max_age = argument.and_then(|a| a.parse::<u64>().ok());
            }
        }
    }
    max_age
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(values: &[&'static str]) -> Option<u64> {
        let values: Vec<HeaderValue> = values.iter().map(|v| HeaderValue::from_static(v)).collect();
        cache_max_age(&values)
    }

    #[test]
    fn cache_control() {
        assert_eq!(parse(&[]), None);
        assert_eq!(parse(&["public"]), None);
        assert_eq!(parse(&["max-age=60"]), Some(60));
        assert_eq!(parse(&["Private, Max-Age = \"30\""]), Some(30));
        assert_eq!(parse(&["max-age=ten"]), None);
        assert_eq!(parse(&["max-age=-1"]), None);
        assert_eq!(parse(&["max-age=60", "no-store"]), Some(0));
        assert_eq!(parse(&["NO-CACHE"]), Some(0));
        assert_eq!(parse(&["s-maxage=5, max-age=7, max-age=9"]), Some(7));
    }
}
