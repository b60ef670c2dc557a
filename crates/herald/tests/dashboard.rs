//! The web dashboard at `/`: its pages in headless Chromium (tests/js/dashboard.mjs, with
//! MQTT.js clients in Node making the figures move), signing in with an API key, and the
//! headers that keep it safe and cached right. The Grafana dashboard file has its own test
//! (tests/grafana_dashboard.rs).
//!
//! `DASHBOARD_SCREENSHOTS=DIR` keeps a PNG of each page in DIR (docs/dashboard holds them).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;

use common::http::request;

fn js_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/js");
    assert!(
        dir.join("node_modules/mqtt").is_dir() && dir.join("node_modules/playwright-core").is_dir(),
        "the JavaScript packages are missing: run `npm ci --prefix {}` (scripts/test does)",
        dir.display()
    );
    dir
}

/// Runs tests/js/dashboard.mjs against `http` and `mqtt`; asserts it succeeded.
async fn browse(http: SocketAddr, mqtt: SocketAddr, extra: &[&str]) -> serde_json::Value {
    let mut args = vec![
        "dashboard.mjs".to_string(),
        format!("http://{http}"),
        format!("mqtt://{mqtt}"),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    if let Some(dir) = std::env::var_os("DASHBOARD_SCREENSHOTS") {
        args.push("--screenshots".into());
        args.push(dir.to_string_lossy().into_owned());
    }
    let out = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .current_dir(js_dir())
            .args(&args)
            .output()
            .unwrap_or_else(|e| panic!("node runs dashboard.mjs (Node.js is needed): {e}"))
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "dashboard.mjs failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.lines().last().expect("a result line")).unwrap()
}

fn config() -> herald::config::Config {
    let mut c = common::config();
    c.http.listen = "127.0.0.1:0".into();
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_works_in_headless_chromium() {
    let s = common::start_with(config()).await;
    let http = s.server.http_addr().expect("the API listens");
    let result = browse(http, s.addr, &[]).await;
    assert_eq!(result["ok"], true, "{result}");
    assert!(result["received"].as_u64().unwrap() > 0, "{result}");
    // What the pages did, seen through the API: the disconnected client's session ended
    // with its connection, the discarded one is gone, the retained message was deleted.
    for id in ["dash-kick", "dash-discard"] {
        let r = request(http, "GET", &format!("/api/v1/clients/{id}"), &[], "").await;
        assert_eq!(r.status, 404, "{id}: {}", r.body);
    }
    let r = request(http, "GET", "/api/v1/retained?filter=dash/%23", &[], "").await;
    assert_eq!(r.json()["items"], serde_json::json!([]), "{}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn it_signs_in_with_an_api_key() {
    let mut c = config();
    let key = "dashboard-test-key-0123456789";
    c.http.api_keys = vec![key.into()];
    let s = common::start_with(c).await;
    let http = s.server.http_addr().unwrap();
    let result = browse(http, s.addr, &["--key", key, "--sign-in-only"]).await;
    assert_eq!(result["ok"], true, "{result}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_key_sees_its_own_tenant_only() {
    let mut c = config();
    let key = "acme-dashboard-key-0123456789";
    c.http.tenant_keys = [("acme".to_string(), vec![key.to_string()])].into();
    let s = common::start_with(c).await;
    let http = s.server.http_addr().unwrap();
    let result = browse(http, s.addr, &["--key", key, "--tenant", "acme"]).await;
    assert_eq!(result["ok"], true, "{result}");
}

#[tokio::test]
async fn pages_are_safe_and_cached_right() {
    let s = common::start_with(config()).await;
    let http = s.server.http_addr().unwrap();
    let page = request(http, "GET", "/", &[], "").await;
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(page.header("cache-control"), Some("no-cache"));
    let csp = page.header("content-security-policy").unwrap();
    for part in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(part), "{csp}");
    }
    assert!(!csp.contains("unsafe"), "{csp}");
    assert_eq!(page.header("x-frame-options"), Some("DENY"));
    assert_eq!(page.header("x-content-type-options"), Some("nosniff"));
    // Nothing is fetched from elsewhere: every src and href is this origin's.
    for attr in ["src=\"", "href=\""] {
        for (i, _) in page.body.match_indices(attr) {
            let url = &page.body[i + attr.len()..];
            assert!(
                url.starts_with('/') || url.starts_with('#'),
                "{}",
                &url[..40.min(url.len())]
            );
        }
    }
    // The page is revalidated: the same ETag gets 304.
    let etag = page.header("etag").unwrap().to_string();
    let again = request(http, "GET", "/", &[("If-None-Match", &etag)], "").await;
    assert_eq!(again.status, 304);
    assert!(again.body.is_empty());
    // Each asset it names is served, with its type, cached for good.
    let mut names = Vec::new();
    for (i, _) in page.body.match_indices("/assets/") {
        let rest = &page.body[i..];
        names.push(rest[..rest.find('"').unwrap()].to_string());
    }
    assert_eq!(names.len(), 3, "{names:?}");
    for name in &names {
        let a = request(http, "GET", name, &[], "").await;
        assert_eq!(a.status, 200, "{name}");
        assert_eq!(
            a.header("cache-control"),
            Some("public, max-age=31536000, immutable"),
            "{name}"
        );
        assert!(a.header("content-security-policy").is_some(), "{name}");
        let kind = a.header("content-type").unwrap();
        let want = match name.rsplit('.').next().unwrap() {
            "js" => "text/javascript",
            "css" => "text/css",
            _ => "image/svg+xml",
        };
        assert!(kind.starts_with(want), "{name}: {kind}");
    }
    let missing = request(http, "GET", "/assets/app.000000000000.js", &[], "").await;
    assert_eq!(missing.status, 404);
    // The API under it is what it was.
    let stats = request(http, "GET", "/api/v1/stats", &[], "").await;
    assert_eq!(stats.status, 200);
}

#[tokio::test]
async fn it_can_be_turned_off_and_on_by_a_reload() {
    let mut c = config();
    c.http.dashboard = false;
    let s = common::start_with(c).await;
    let http = s.server.http_addr().unwrap();
    let page = request(http, "GET", "/", &[], "").await;
    assert_eq!(page.status, 404);
    assert!(page.body.contains("http.dashboard"), "{}", page.body);
    let mut on = s.server.broker().config().as_ref().clone();
    on.http.dashboard = true;
    s.server.broker().set_config(on);
    assert_eq!(request(http, "GET", "/", &[], "").await.status, 200);
}

#[tokio::test]
async fn the_history_and_busiest_topics_answer_from_the_api() {
    let s = common::start_with(config()).await;
    let http = s.server.http_addr().unwrap();
    let h = request(http, "GET", "/api/v1/stats/history", &[], "").await;
    assert_eq!(h.status, 200, "{}", h.body);
    let v = h.json();
    assert_eq!(v["interval_secs"], 5);
    assert_eq!(v["capacity"], 720);
    let bad = request(http, "GET", "/api/v1/topics?limit=0", &[], "").await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.json()["error"]["field"], "limit");
    let t = request(http, "GET", "/api/v1/topics", &[], "").await;
    assert_eq!(t.status, 200);
    assert_eq!(t.json()["sampled_one_in"], 1);
}
