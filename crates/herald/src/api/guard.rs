//! What keeps web pages off the API.
//!
//! Any page open in a browser on the node's host can send requests to `127.0.0.1:8080`.
//! Without CORS permission it cannot read the answers, but a "simple" request (GET, HEAD, or
//! POST with `text/plain`, `application/x-www-form-urlencoded` or `multipart/form-data`, or
//! no body) is still sent and served, and a page on a name the attacker controls can even
//! read answers once that name resolves to 127.0.0.1 (DNS rebinding). So:
//!
//! - A request other than GET and HEAD that carries a `Content-Type` other than
//!   `application/json`, or a body without one, is refused (415) before it is routed to a
//!   handler: a browser sends any other media type, or the `Authorization` header, only
//!   after a CORS preflight, which Herald never grants.
//! - Without API keys (node-wide or a tenant's), a request whose `Origin` is not a loopback origin (a page elsewhere;
//!   browsers send `Origin` with every POST, PUT and DELETE, bodyless ones included), or
//!   whose `Host` is neither a loopback name or address nor the listener's own address (DNS
//!   rebinding), is refused (403). With API keys the key authenticates the caller, and a page
//!   cannot send one.
//!
//! `Host` may be missing (HTTP/1.0 clients): browsers always send it.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::listener::LocalAddr;
use super::{ApiError, ApiState};

/// Refuses requests from web pages elsewhere (`Origin`) and through DNS rebinding (`Host`)
/// while the API has no keys.
pub(super) async fn origin_and_host(
    State(state): State<Arc<ApiState>>,
    request: Request,
    next: Next,
) -> Response {
    if !state.broker.config().http.has_keys() {
        let local = request.extensions().get::<LocalAddr>().map(|l| l.0);
        if let Err(e) = check_origin_and_host(request.headers(), local) {
            return e.into_response();
        }
    }
    next.run(request).await
}

/// Refuses a request that is not GET or HEAD and carries anything but JSON.
pub(super) async fn json_only(request: Request, next: Next) -> Response {
    if let Err(e) = check_content_type(&request) {
        return e.into_response();
    }
    next.run(request).await
}

fn check_origin_and_host(headers: &HeaderMap, local: Option<SocketAddr>) -> Result<(), ApiError> {
    for origin in headers.get_all(header::ORIGIN) {
        if !origin.to_str().is_ok_and(loopback_origin) {
            return Err(forbidden(
                "Origin",
                format!(
                    "Origin {} is not a loopback origin: without http.api_keys the API serves \
                     only this host's own clients, not web pages from elsewhere",
                    text(origin)
                ),
            ));
        }
    }
    let hosts: Vec<&HeaderValue> = headers.get_all(header::HOST).iter().collect();
    let host_ok = match hosts.as_slice() {
        [] => true,
        [host] => host.to_str().is_ok_and(|h| local_host(h, local)),
        _ => false,
    };
    if !host_ok {
        let given: Vec<String> = hosts.iter().map(|h| text(h)).collect();
        return Err(forbidden(
            "Host",
            format!(
                "Host {} is neither a loopback name or address nor this listener's address: \
                 without http.api_keys the API refuses other names (DNS rebinding)",
                given.join(", ")
            ),
        ));
    }
    Ok(())
}

fn check_content_type(request: &Request) -> Result<(), ApiError> {
    if matches!(*request.method(), Method::GET | Method::HEAD) {
        return Ok(());
    }
    let types: Vec<&HeaderValue> = request
        .headers()
        .get_all(header::CONTENT_TYPE)
        .iter()
        .collect();
    let refused = match types.as_slice() {
        [] if !has_body(request.headers()) => return Ok(()),
        [] => "none, with a body".to_string(),
        [one] if one.to_str().is_ok_and(is_json) => return Ok(()),
        some => some.iter().map(|t| text(t)).collect::<Vec<_>>().join(", "),
    };
    Err(ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        Some("Content-Type"),
        format!("Content-Type: the API takes JSON only: application/json (given: {refused})"),
    ))
}

/// Whether the request has a body: a non-zero `Content-Length`, or a `Transfer-Encoding`.
fn has_body(headers: &HeaderMap) -> bool {
    headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get_all(header::CONTENT_LENGTH)
            .iter()
            .any(|v| v.to_str().map_or(true, |v| v.trim() != "0"))
}

/// `application/json`, with any parameters (`; charset=utf-8`), in any case.
fn is_json(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or_default();
    essence.trim().eq_ignore_ascii_case("application/json")
}

/// `http://` or `https://` and a loopback host, with any port and nothing after.
fn loopback_origin(origin: &str) -> bool {
    let Some((scheme, authority)) = origin.split_once("://") else {
        return false;
    };
    (scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https"))
        && !authority.contains(['/', '?', '#', '@'])
        && host_of(authority).is_some_and(|h| h.is_loopback())
}

/// A `Host` naming this machine by a loopback name or address, or the listener's address.
fn local_host(host: &str, local: Option<SocketAddr>) -> bool {
    host_of(host).is_some_and(|h| h.is_loopback() || local.is_some_and(|l| h.is_ip(l.ip())))
}

/// The host part of an authority (`host`, `host:port`, `[v6]`, `[v6]:port`).
#[derive(Debug, PartialEq, Eq)]
enum Host<'a> {
    Ip(IpAddr),
    Name(&'a str),
}

impl Host<'_> {
    fn is_loopback(&self) -> bool {
        match self {
            Host::Ip(ip) => ip.to_canonical().is_loopback(),
            Host::Name(name) => name.eq_ignore_ascii_case("localhost"),
        }
    }

    fn is_ip(&self, ip: IpAddr) -> bool {
        matches!(self, Host::Ip(mine) if mine.to_canonical() == ip.to_canonical())
    }
}

fn host_of(authority: &str) -> Option<Host<'_>> {
    let port_ok = |p: &str| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit());
    if let Some(rest) = authority.strip_prefix('[') {
        let (ip, after) = rest.split_once(']')?;
        if !(after.is_empty() || after.strip_prefix(':').is_some_and(port_ok)) {
            return None;
        }
        return ip
            .parse::<std::net::Ipv6Addr>()
            .ok()
            .map(|ip| Host::Ip(ip.into()));
    }
    let host = match authority.split_once(':') {
        Some((host, port)) if port_ok(port) => host,
        Some(_) => return None,
        None => authority,
    };
    if host.is_empty() {
        return None;
    }
    Some(match host.parse::<std::net::Ipv4Addr>() {
        Ok(ip) => Host::Ip(ip.into()),
        Err(_) => Host::Name(host),
    })
}

fn forbidden(header: &str, message: String) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "forbidden", Some(header), message)
}

/// A header's value for a message.
fn text(value: &HeaderValue) -> String {
    String::from_utf8_lossy(value.as_bytes()).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_origins() {
        for ok in [
            "http://127.0.0.1:8080",
            "http://127.1.2.3",
            "https://localhost",
            "HTTP://LOCALHOST:3000",
            "http://[::1]:8080",
            "http://[::ffff:127.0.0.1]",
        ] {
            assert!(loopback_origin(ok), "{ok}");
        }
        for refused in [
            "null",
            "https://evil.example",
            "http://localhost.evil.example",
            "http://127.0.0.1.evil.example",
            "http://evil.example:80@127.0.0.1",
            "http://127.0.0.1:8080/path",
            "file://localhost",
            "http://10.0.0.1",
            "http://[::2]",
            "http://localhost:port",
            "",
        ] {
            assert!(!loopback_origin(refused), "{refused}");
        }
    }

    #[test]
    fn local_hosts() {
        let bound: SocketAddr = "192.0.2.7:8080".parse().unwrap();
        for ok in [
            "127.0.0.1:8080",
            "localhost",
            "[::1]:1",
            "192.0.2.7:8080",
            "192.0.2.7",
        ] {
            assert!(local_host(ok, Some(bound)), "{ok}");
        }
        for refused in [
            "evil.example:8080",
            "herald",
            "192.0.2.8",
            "::1",
            "localhost:",
            "",
        ] {
            assert!(!local_host(refused, Some(bound)), "{refused}");
        }
        assert!(!local_host("192.0.2.7", None));
    }

    #[test]
    fn json_media_types() {
        assert!(is_json("application/json"));
        assert!(is_json("Application/JSON; charset=utf-8"));
        assert!(!is_json("text/plain"));
        assert!(!is_json("application/json-patch+json"));
        assert!(!is_json("application/x-www-form-urlencoded"));
    }
}
