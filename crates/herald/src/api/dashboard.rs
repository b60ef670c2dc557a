//! The web dashboard at `/`: one HTML page, a script, a stylesheet and an icon, built into
//! the binary and served as they are (no JavaScript toolchain: the files in `dashboard/` are
//! what the browser runs, so `cargo build` needs nothing else and the build is trivially
//! reproducible). The page calls the public API under `/api/v1` like any other client, with
//! the API key it signs in with.
//!
//! Assets are named by a hash of their content and cached for a year (`immutable`); the page
//! itself is revalidated on every load (`no-cache` with an `ETag`), so an upgraded Herald's
//! page names the new assets at once. A Content-Security-Policy allows only this origin's
//! scripts, styles, images and API (no inline script or style, no framing), so a value shown
//! on a page (a client id, a topic, a payload) can never run as code.

use std::sync::{Arc, LazyLock};

use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use axum::extract::State;

use super::{ApiError, ApiState};

/// What every dashboard answer carries.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// One built-in file.
#[derive(Debug)]
struct Asset {
    /// Its name under `/assets/`, with its hash.
    name: String,
    content_type: &'static str,
    body: &'static str,
}

impl Asset {
    fn new(stem: &str, ext: &str, content_type: &'static str, body: &'static str) -> Asset {
        Asset {
            name: format!("{stem}.{}.{ext}", hash(body)),
            content_type,
            body,
        }
    }
}

/// The first 12 hex digits of the SHA-256 of `text`.
fn hash(text: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    data_encoding::HEXLOWER.encode(&digest.as_ref()[..6])
}

/// The built-in files and the page naming them.
#[derive(Debug)]
struct Dashboard {
    assets: [Asset; 3],
    page: String,
    etag: String,
}

static DASHBOARD: LazyLock<Dashboard> = LazyLock::new(|| {
    let js = Asset::new(
        "app",
        "js",
        "text/javascript; charset=utf-8",
        include_str!("dashboard/app.js"),
    );
    let css = Asset::new(
        "app",
        "css",
        "text/css; charset=utf-8",
        include_str!("dashboard/app.css"),
    );
    let icon = Asset::new(
        "icon",
        "svg",
        "image/svg+xml",
        include_str!("dashboard/icon.svg"),
    );
    let page = include_str!("dashboard/index.html")
        .replace("{js}", &js.name)
        .replace("{css}", &css.name)
        .replace("{icon}", &icon.name);
    let etag = format!("\"{}\"", hash(&page));
    Dashboard {
        assets: [js, css, icon],
        page,
        etag,
    }
});

/// The headers of every dashboard answer.
fn secure(mut response: Response, cache: &'static str) -> Response {
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    response
}

/// The dashboard is off (`http.dashboard = false`, which a reload changes).
fn off() -> Response {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        None,
        "the dashboard is off (http.dashboard); the API is under /api/v1",
    )
    .into_response()
}

/// `GET /`: the page (304 when the browser has it).
pub(super) async fn page(State(state): State<Arc<ApiState>>, headers: HeaderMap) -> Response {
    if !state.broker.config().http.dashboard {
        return off();
    }
    let d = &*DASHBOARD;
    let etag = HeaderValue::from_str(&d.etag).unwrap_or(HeaderValue::from_static("\"\""));
    let fresh = headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|tag| tag.trim() == d.etag || tag.trim() == "*");
    let response = if fresh {
        (StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response()
    } else {
        (
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/html; charset=utf-8"),
                ),
                (header::ETAG, etag),
            ],
            d.page.clone(),
        )
            .into_response()
    };
    secure(response, "no-cache")
}

/// `GET /assets/{name}`: a built-in file, cached for good (its name changes with it).
pub(super) async fn asset(
    State(state): State<Arc<ApiState>>,
    name: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> Response {
    if !state.broker.config().http.dashboard {
        return off();
    }
    let found = name
        .ok()
        .and_then(|Path(name)| DASHBOARD.assets.iter().find(|a| a.name == name));
    match found {
        Some(a) => secure(
            ([(header::CONTENT_TYPE, a.content_type)], a.body).into_response(),
            "public, max-age=31536000, immutable",
        ),
        None => ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            None,
            "no such dashboard file (the page names its files; reload it)",
        )
        .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_names_each_asset_by_its_hash() {
        let d = &*DASHBOARD;
        for a in &d.assets {
            assert!(
                d.page.contains(&format!("/assets/{}", a.name)),
                "{}",
                a.name
            );
            assert!(a.name.contains(&hash(a.body)), "{}", a.name);
        }
        assert!(!d.page.contains('{'), "a placeholder is left in the page");
    }
}
