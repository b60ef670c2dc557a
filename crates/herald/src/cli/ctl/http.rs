//! The HTTP side of `herald ctl`: one request to Herald's API at a time, its answer read
//! whole, and the ways it can fail said so that an operator knows what to do.
//!
//! The client is hyper's, over rustls (ring) for `https://` URLs, as the auth callout's
//! (`auth::http`) is; a one-shot command keeps no pool. Every request is bounded by
//! `--timeout` (connecting, sending and reading the whole answer) and its answer by
//! [`MAX_BODY`].

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderValue, USER_AGENT};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

/// The largest answer read: a page of 1,000 clients is a few hundred KiB.
const MAX_BODY: usize = 64 * 1024 * 1024;

/// What `herald ctl` sends as `User-Agent`.
const AGENT: &str = concat!("herald-ctl/", env!("CARGO_PKG_VERSION"));

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub(super) enum CtlError {
    /// `--url` is not an `http://` or `https://` URL.
    #[error("--url {url:?} (HERALD_URL): {why}")]
    Url {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        why: String,
    },
    /// No TCP (or TLS) connection to Herald.
    #[error(
        "cannot reach Herald at {url}: {detail} (is it running there, with http.listen on? \
         --url or HERALD_URL says where)"
    )]
    Unreachable {
        /// The URL asked.
        url: String,
        /// The connection's error, with its causes.
        detail: String,
    },
    /// The whole answer did not come within `--timeout`.
    #[error("no answer from {url} within {secs} s (--timeout)")]
    Timeout {
        /// The URL asked.
        url: String,
        /// The deadline.
        secs: u64,
    },
    /// The exchange broke after connecting, or the answer was not what the API sends.
    #[error("the exchange with {url} failed: {detail}")]
    Failed {
        /// The URL asked.
        url: String,
        /// What went wrong.
        detail: String,
    },
    /// Herald answered with an error.
    #[error(transparent)]
    Api(#[from] ApiFailure),
    /// What was asked on the command line cannot be sent.
    #[error("{0}")]
    Usage(String),
    /// Herald has nothing by that name (said by `herald ctl`, not by an HTTP status).
    #[error("{0}")]
    NotFound(String),
    /// Standard output or input failed.
    #[error("{what}: {error}")]
    Io {
        /// What was being read or written.
        what: &'static str,
        /// The error.
        error: std::io::Error,
    },
}

/// An error answer of the API: `{"error": {"code", "field", "message"}}`, or whatever a
/// proxy in front of it said.
#[derive(Debug, thiserror::Error)]
#[error("{}", self.describe())]
pub(super) struct ApiFailure {
    /// The HTTP status.
    status: StatusCode,
    /// The API's stable code (`client_not_found`), when the body was the API's.
    code: Option<String>,
    /// The field or header at fault, when the API named one.
    field: Option<String>,
    /// The API's message, or the start of a body that was not the API's.
    message: String,
    /// Whether the request carried an API key (a 401 then means a wrong one).
    sent_key: bool,
}

impl ApiFailure {
    /// Reads an error answer.
    fn from_answer(status: StatusCode, body: &[u8], sent_key: bool) -> ApiFailure {
        let error = serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|v| v.get("error").cloned());
        let text = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
        match error {
            Some(e) => ApiFailure {
                status,
                code: text(&e, "code"),
                field: text(&e, "field"),
                message: text(&e, "message").unwrap_or_default(),
                sent_key,
            },
            None => {
                let body = String::from_utf8_lossy(body);
                let mut message: String = body.trim().chars().take(200).collect();
                if message.is_empty() {
                    message = "(no body)".into();
                }
                ApiFailure {
                    status,
                    code: None,
                    field: None,
                    message,
                    sent_key,
                }
            }
        }
    }

    fn describe(&self) -> String {
        let mut text = format!("Herald answered {}: {}", self.status, self.message);
        let named: Vec<String> = [("code", &self.code), ("field", &self.field)]
            .into_iter()
            .filter_map(|(what, v)| v.as_ref().map(|v| format!("{what} {v}")))
            .collect();
        if !named.is_empty() {
            text.push_str(&format!(" [{}]", named.join(", ")));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            text.push_str(if self.sent_key {
                " (the API key given was refused: check --api-key or HERALD_API_KEY)"
            } else {
                " (give one with --api-key or HERALD_API_KEY)"
            });
        }
        text
    }
}

/// The query string of a request, its values percent-encoded.
#[derive(Debug, Default, Clone)]
pub(super) struct Query(Vec<(&'static str, String)>);

impl Query {
    /// Adds `name=value`.
    pub(super) fn set(mut self, name: &'static str, value: impl Into<String>) -> Query {
        self.0.push((name, value.into()));
        self
    }

    /// Adds `name=value` when there is a value.
    pub(super) fn opt(self, name: &'static str, value: Option<impl ToString>) -> Query {
        match value {
            Some(v) => self.set(name, v.to_string()),
            None => self,
        }
    }

    /// `?a=1&b=2`, or "" when empty.
    fn render(&self) -> String {
        let pairs: Vec<String> = self
            .0
            .iter()
            .map(|(k, v)| format!("{k}={}", encode(v)))
            .collect();
        match pairs.is_empty() {
            true => String::new(),
            false => format!("?{}", pairs.join("&")),
        }
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters, so that a client id
/// or a topic goes whole into one path segment or query value (`/`, `#`, `?`, `%`, `+`,
/// spaces and non-ASCII included). The API decodes path segments and query values.
pub(super) fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'~') {
            out.push(b as char);
        } else if b == b'.' && !text.bytes().all(|c| c == b'.') {
            // A segment of dots alone ("." or "..") is encoded, so that nothing between
            // here and Herald takes it for a relative path.
            out.push('.');
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// An answer, read whole.
#[derive(Debug)]
pub(super) struct Answer {
    /// The HTTP status.
    pub(super) status: StatusCode,
    /// The body as JSON (`Null` when empty).
    pub(super) body: Value,
    /// `Idempotent-Replayed: true`: an earlier request with the same key was answered.
    pub(super) replayed: bool,
}

/// Herald's API, as `--url`, `--api-key` and `--tenant` say.
pub(super) struct Api {
    /// hyper's client over a connector that speaks TLS for `https://` URLs.
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    /// The base URL without its trailing `/` (it may carry a path, behind a proxy).
    base: String,
    /// The API key, sent as `Authorization: Bearer`.
    key: Option<String>,
    /// The tenant the commands that take one work in.
    tenant: Option<String>,
    /// The deadline of each request.
    timeout: Duration,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api")
            .field("base", &self.base)
            .field("tenant", &self.tenant)
            .finish_non_exhaustive()
    }
}

impl Api {
    /// A client of the API at `url`.
    pub(super) fn new(
        url: &str,
        key: Option<String>,
        tenant: Option<String>,
        timeout: Duration,
    ) -> Result<Api, CtlError> {
        let bad = |why: &str| CtlError::Url {
            url: url.to_string(),
            why: why.to_string(),
        };
        let uri: Uri = url.parse().map_err(|e| bad(&format!("{e}")))?;
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(bad("not an http:// or https:// URL")),
        };
        if uri.host().is_none_or(str::is_empty) {
            return Err(bad("no host"));
        }
        if uri.query().is_some() {
            return Err(bad("a base URL takes no query"));
        }
        Ok(Api {
            client: Client::builder(TokioExecutor::new()).build(connector(https)?),
            base: url.trim_end_matches('/').to_string(),
            key: key.filter(|k| !k.is_empty()),
            tenant,
            timeout,
        })
    }

    /// The base URL, for messages.
    pub(super) fn base(&self) -> &str {
        &self.base
    }

    /// A query holding the `tenant` parameter when `--tenant` gave one.
    pub(super) fn tenant_query(&self) -> Query {
        Query::default().opt("tenant", self.tenant.as_deref())
    }

    /// GETs `path` and returns the body of a 2xx answer, else the API's error.
    pub(super) async fn get(&self, path: &str, query: &Query) -> Result<Value, CtlError> {
        self.call(Method::GET, path, query, None, &[]).await
    }

    /// Sends a request and returns the body of a 2xx answer, else the API's error.
    pub(super) async fn call(
        &self,
        method: Method,
        path: &str,
        query: &Query,
        body: Option<&Value>,
        headers: &[(&'static str, String)],
    ) -> Result<Value, CtlError> {
        Ok(self.send(method, path, query, body, headers).await?.body)
    }

    /// Sends a request and returns a 2xx answer, else the API's error.
    pub(super) async fn send(
        &self,
        method: Method,
        path: &str,
        query: &Query,
        body: Option<&Value>,
        headers: &[(&'static str, String)],
    ) -> Result<Answer, CtlError> {
        let (status, bytes, replayed) = self.exchange(method, path, query, body, headers).await?;
        if !status.is_success() {
            let sent_key = self.key.is_some();
            return Err(ApiFailure::from_answer(status, &bytes, sent_key).into());
        }
        Ok(Answer {
            status,
            body: self.json(&bytes)?,
            replayed,
        })
    }

    /// GETs `path` and returns a 2xx answer or one with status `also`, else the API's
    /// error (`/readyz` says 503 when the node is not ready: an answer, not a failure).
    pub(super) async fn get_or(&self, path: &str, also: StatusCode) -> Result<Answer, CtlError> {
        let (status, bytes, replayed) = self
            .exchange(Method::GET, path, &Query::default(), None, &[])
            .await?;
        if !status.is_success() && status != also {
            let sent_key = self.key.is_some();
            return Err(ApiFailure::from_answer(status, &bytes, sent_key).into());
        }
        Ok(Answer {
            status,
            body: self.json(&bytes)?,
            replayed,
        })
    }

    fn json(&self, bytes: &[u8]) -> Result<Value, CtlError> {
        if bytes.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(bytes).map_err(|e| CtlError::Failed {
            url: self.base.clone(),
            detail: format!("the answer is not JSON ({e}): is --url Herald's HTTP API?"),
        })
    }

    /// One exchange: the status, the body and whether it was replayed.
    async fn exchange(
        &self,
        method: Method,
        path: &str,
        query: &Query,
        body: Option<&Value>,
        headers: &[(&'static str, String)],
    ) -> Result<(StatusCode, Bytes, bool), CtlError> {
        let url = format!("{}{path}{}", self.base, query.render());
        let request = self.request(method, &url, body, headers)?;
        let exchange = async {
            let response = self.client.request(request).await.map_err(|e| {
                let detail = error_chain(&e);
                match e.is_connect() {
                    true => CtlError::Unreachable {
                        url: self.base.clone(),
                        detail,
                    },
                    false => CtlError::Failed {
                        url: url.clone(),
                        detail,
                    },
                }
            })?;
            let status = response.status();
            let replayed = response
                .headers()
                .get("idempotent-replayed")
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"));
            let body =
                read_capped(response.into_body())
                    .await
                    .map_err(|detail| CtlError::Failed {
                        url: url.clone(),
                        detail,
                    })?;
            Ok((status, body, replayed))
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .unwrap_or_else(|_| {
                Err(CtlError::Timeout {
                    url: url.clone(),
                    secs: self.timeout.as_secs(),
                })
            })
    }

    fn request(
        &self,
        method: Method,
        url: &str,
        body: Option<&Value>,
        headers: &[(&'static str, String)],
    ) -> Result<Request<Full<Bytes>>, CtlError> {
        let bad = |why: String| CtlError::Failed {
            url: url.to_string(),
            detail: format!("the request cannot be built: {why}"),
        };
        let mut builder = Request::builder()
            .method(method)
            .uri(url)
            .header(USER_AGENT, AGENT)
            .header(ACCEPT, "application/json");
        let bytes = match body {
            Some(v) => {
                builder = builder.header(CONTENT_TYPE, "application/json");
                Bytes::from(v.to_string())
            }
            None => Bytes::new(),
        };
        if let Some(key) = &self.key {
            let mut value = HeaderValue::from_str(&format!("Bearer {key}")).map_err(|_| {
                CtlError::Usage("the API key is not a valid header value".to_string())
            })?;
            value.set_sensitive(true);
            builder = builder.header(AUTHORIZATION, value);
        }
        for (name, value) in headers {
            let value = HeaderValue::from_str(value)
                .map_err(|_| CtlError::Usage(format!("{name}: not a valid header value")))?;
            builder = builder.header(*name, value);
        }
        builder
            .body(Full::new(bytes))
            .map_err(|e| bad(e.to_string()))
    }
}

/// The connector: TLS for `https://` with the system's root certificates (read only when
/// the URL asks for TLS), plain TCP otherwise.
fn connector(https: bool) -> Result<HttpsConnector<HttpConnector>, CtlError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls_error = |e: String| CtlError::Usage(format!("TLS: {e}"));
    let empty = || -> Result<rustls::ClientConfig, CtlError> {
        Ok(
            rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .map_err(|e| tls_error(e.to_string()))?
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth(),
        )
    };
    let builder = match https {
        true => hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_native_roots(provider.clone())
            .map_err(|e| tls_error(format!("no system root certificates: {e}")))?,
        false => hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(empty()?),
    };
    let mut tcp = HttpConnector::new();
    tcp.enforce_http(false);
    tcp.set_nodelay(true);
    Ok(builder.https_or_http().enable_http1().wrap_connector(tcp))
}

/// Reads a body whole, refusing one longer than [`MAX_BODY`].
async fn read_capped(mut body: hyper::body::Incoming) -> Result<Bytes, String> {
    let mut read = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| error_chain(&e))?;
        if let Ok(data) = frame.into_data() {
            if read.len() + data.len() > MAX_BODY {
                return Err(format!("the answer is larger than {MAX_BODY} bytes"));
            }
            read.extend_from_slice(&data);
        }
    }
    Ok(read.freeze())
}

/// An error and its sources (hyper's own message says little: "client error (Connect)").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.contains(&text) {
            parts.push(text);
        }
        source = s.source();
    }
    // The outermost is hyper's "client error (Connect)": the causes say more.
    if parts.len() > 1 {
        parts.remove(0);
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_and_values_are_encoded_whole() {
        assert_eq!(encode("sensor-17_a~b.c"), "sensor-17_a~b.c");
        assert_eq!(encode("a/b #c"), "a%2Fb%20%23c");
        assert_eq!(encode("/x//y"), "%2Fx%2F%2Fy");
        assert_eq!(encode("100%+?&="), "100%25%2B%3F%26%3D");
        assert_eq!(encode("é"), "%C3%A9");
        assert_eq!(encode(".."), "%2E%2E");
        assert_eq!(encode("."), "%2E");
        assert_eq!(encode("a..b"), "a..b");
    }

    #[test]
    fn queries_render_in_order() {
        assert_eq!(Query::default().render(), "");
        let q = Query::default()
            .set("tenant", "acme corp")
            .opt("limit", Some(5))
            .opt("after", None::<&str>);
        assert_eq!(q.render(), "?tenant=acme%20corp&limit=5");
    }

    #[test]
    fn api_errors_name_status_message_code_and_field() {
        let body = br#"{"error": {"code": "client_not_found", "field": "client_id",
            "message": "no session for client id \"x\""}}"#;
        let e = ApiFailure::from_answer(StatusCode::NOT_FOUND, body, false);
        assert_eq!(
            e.to_string(),
            "Herald answered 404 Not Found: no session for client id \"x\" \
             [code client_not_found, field client_id]"
        );
        let e = ApiFailure::from_answer(StatusCode::BAD_GATEWAY, b"<html>bad gateway</html>", true);
        assert_eq!(
            e.to_string(),
            "Herald answered 502 Bad Gateway: <html>bad gateway</html>"
        );
        let e = ApiFailure::from_answer(StatusCode::UNAUTHORIZED, b"", true);
        assert!(e.to_string().contains("(no body)"), "{e}");
        assert!(e.to_string().contains("was refused"), "{e}");
    }

    #[test]
    fn base_urls_are_checked() {
        let api = |url: &str| Api::new(url, None, None, Duration::from_secs(1)).map(|a| a.base);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime");
        let _guard = rt.enter();
        assert_eq!(
            api("http://127.0.0.1:8080/").ok().as_deref(),
            Some("http://127.0.0.1:8080")
        );
        assert_eq!(
            api("http://proxy/herald/").ok().as_deref(),
            Some("http://proxy/herald")
        );
        for bad in ["127.0.0.1:8080", "ftp://x", "http://x/?a=1", "not a url"] {
            assert!(
                matches!(api(bad), Err(CtlError::Url { .. })),
                "{bad} accepted"
            );
        }
    }
}
