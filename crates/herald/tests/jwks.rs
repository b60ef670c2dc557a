//! The JWT method's JWKS keys: a JWKS file (keys by `kid`, of every type), and a JWKS URL
//! served by a real HTTP server on 127.0.0.1:0 that counts its fetches and rotates its keys:
//! refetches for a new `kid`, at most one per `jwks_min_refresh_secs` for unknown ones, shared
//! by concurrent CONNECTs, the scheduled refresh, and failures keeping the last keys.

#![allow(clippy::unwrap_used)]

mod jwt_support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use data_encoding::BASE64URL_NOPAD;
use herald::auth::jwt::{Alg, Jwt};
use herald::auth::{DenyReason, Verdict};
use herald::config::JwtConfig;
use jwt_support::*;
use serde_json::{Value, json};
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey;
use x509_parser::x509::SubjectPublicKeyInfo;

#[tokio::test]
async fn jwks_file_keys_by_kid() {
    let (ed, ed_jwk) = Signer::fresh_ed("ed-1");
    let (ec, ec_jwk) = Signer::fresh_ec("ec-1");
    let spki = pem_der("jwt-test-only-rsa-public.pem");
    let (_, spki) = SubjectPublicKeyInfo::from_der(&spki).unwrap();
    let PublicKey::RSA(rsa) = spki.parsed().unwrap() else {
        panic!("not an RSA key")
    };
    let (n, e) = (
        BASE64URL_NOPAD.encode(rsa.modulus),
        BASE64URL_NOPAD.encode(rsa.exponent),
    );
    let rsa_jwk = json!({"kty": "RSA", "kid": "rsa-1", "alg": "RS256", "n": n, "e": e});
    let doc = json!({"keys": [
        ed_jwk, ec_jwk, rsa_jwk,
        {"kty": "oct", "kid": "hs-1", "k": BASE64URL_NOPAD.encode(SECRET.as_bytes())},
        {"kty": "RSA", "kid": "enc", "use": "enc", "n": "AQAB", "e": "AQAB"},
        {"kty": "EC", "crv": "P-384", "kid": "p384", "x": "AA", "y": "AA"},
    ]});
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    std::fs::write(&path, doc.to_string()).unwrap();
    let jwt = Jwt::new(&JwtConfig {
        jwks_file: path,
        ..JwtConfig::default()
    })
    .unwrap();
    assert_eq!(jwt.algorithms(), &Alg::ALL);
    let hs = Signer::Hmac(SECRET.as_bytes().to_vec());
    for (alg, kid, signer) in [
        ("EdDSA", Some("ed-1"), &ed),
        ("EdDSA", None, &ed),
        ("ES256", Some("ec-1"), &ec),
        ("RS256", Some("rsa-1"), &Signer::rsa()),
        ("HS384", Some("hs-1"), &hs),
    ] {
        let v = check(&jwt, &signer.token(alg, kid, valid())).await;
        assert!(matches!(v, Verdict::Allow(_)), "{alg} {kid:?}: {v:?}");
    }
    // The right key under the wrong kid, an unknown kid.
    assert_eq!(
        check(&jwt, &ed.token("EdDSA", Some("ec-1"), valid())).await,
        deny(DenyReason::BadToken)
    );
    assert_eq!(
        check(&jwt, &ed.token("EdDSA", Some("nope"), valid())).await,
        deny(DenyReason::BadToken)
    );
}

/// A JWKS server: serves `keys` at `/jwks`, counting fetches, each after `delay`.
struct JwksServer {
    url: String,
    keys: Arc<Mutex<Value>>,
    fetches: Arc<AtomicUsize>,
}

async fn jwks_server(keys: Value, delay: Duration) -> JwksServer {
    let keys = Arc::new(Mutex::new(keys));
    let fetches = Arc::new(AtomicUsize::new(0));
    let (k, f) = (keys.clone(), fetches.clone());
    let app = Router::new().route(
        "/jwks",
        get(move || {
            let (k, f) = (k.clone(), f.clone());
            async move {
                f.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(delay).await;
                let body = k.lock().unwrap().clone();
                axum::Json(body)
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    JwksServer {
        url: format!("http://{addr}/jwks"),
        keys,
        fetches,
    }
}

fn url_cfg(url: &str, min_refresh: u64) -> JwtConfig {
    JwtConfig {
        jwks_url: url.into(),
        jwks_refresh_secs: 3600,
        jwks_min_refresh_secs: min_refresh,
        ..JwtConfig::default()
    }
}

#[tokio::test]
async fn jwks_url_rotation_refetches_for_a_new_kid() {
    let (old, old_jwk) = Signer::fresh_ed("k1");
    let server = jwks_server(json!({"keys": [old_jwk]}), Duration::ZERO).await;
    let jwt = Jwt::new(&url_cfg(&server.url, 60)).unwrap();
    assert_eq!(jwt.algorithms(), &[Alg::Rs256, Alg::Es256, Alg::EdDsa]);
    assert_eq!(jwt.refresh().await.unwrap(), 1);
    assert_eq!(server.fetches.load(Ordering::SeqCst), 1);
    assert!(matches!(
        check(&jwt, &old.token("EdDSA", Some("k1"), valid())).await,
        Verdict::Allow(_)
    ));
    assert_eq!(
        server.fetches.load(Ordering::SeqCst),
        1,
        "a known kid fetches nothing"
    );

    // The issuer rotates: the new kid triggers one fetch, shared by a burst of its tokens.
    let (new, new_jwk) = Signer::fresh_ec("k2");
    *server.keys.lock().unwrap() = json!({"keys": [new_jwk]});
    let mut burst = tokio::task::JoinSet::new();
    for _ in 0..50 {
        let (jwt, token) = (jwt.clone(), new.token("ES256", Some("k2"), valid()));
        burst.spawn(async move { check(&jwt, &token).await });
    }
    while let Some(v) = burst.join_next().await {
        assert!(matches!(v.unwrap(), Verdict::Allow(_)));
    }
    assert_eq!(server.fetches.load(Ordering::SeqCst), 2);

    // The old key is gone; asking again for it is within jwks_min_refresh_secs: no fetch.
    assert_eq!(
        check(&jwt, &old.token("EdDSA", Some("k1"), valid())).await,
        deny(DenyReason::BadToken)
    );
    assert_eq!(server.fetches.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn unknown_kids_fetch_at_most_once_per_min_refresh() {
    let (signer, jwk) = Signer::fresh_ed("k1");
    let server = jwks_server(json!({"keys": [jwk]}), Duration::from_millis(100)).await;
    let jwt = Jwt::new(&url_cfg(&server.url, 1)).unwrap();
    jwt.refresh().await.unwrap();
    // A burst of tokens naming kids nobody has, all at once: one fetch, shared.
    let mut burst = tokio::task::JoinSet::new();
    for i in 0..200 {
        let (jwt, token) = (
            jwt.clone(),
            signer.token("EdDSA", Some(&format!("unknown-{i}")), valid()),
        );
        burst.spawn(async move { check(&jwt, &token).await });
    }
    while let Some(v) = burst.join_next().await {
        assert_eq!(v.unwrap(), deny(DenyReason::BadToken));
    }
    assert_eq!(server.fetches.load(Ordering::SeqCst), 2);
    // More of them, one by one, within the second: no fetch.
    for i in 0..20 {
        let token = signer.token("EdDSA", Some(&format!("later-{i}")), valid());
        assert_eq!(check(&jwt, &token).await, deny(DenyReason::BadToken));
    }
    assert_eq!(server.fetches.load(Ordering::SeqCst), 2);
    // Once jwks_min_refresh_secs has passed, one more.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for i in 0..5 {
        let token = signer.token("EdDSA", Some(&format!("again-{i}")), valid());
        assert_eq!(check(&jwt, &token).await, deny(DenyReason::BadToken));
    }
    assert_eq!(server.fetches.load(Ordering::SeqCst), 3);
    assert_eq!(jwt.jwks_fetches(), 3);
}

#[tokio::test]
async fn the_refresh_task_fetches_at_start_and_on_schedule() {
    let (signer, jwk) = Signer::fresh_ed("k1");
    let server = jwks_server(json!({"keys": [jwk]}), Duration::ZERO).await;
    let jwt = Jwt::new(&JwtConfig {
        jwks_refresh_secs: 1,
        ..url_cfg(&server.url, 60)
    })
    .unwrap();
    let task = jwt.start().expect("a JWKS URL has a refresh task");
    let waited = tokio::time::Instant::now();
    while server.fetches.load(Ordering::SeqCst) < 1 {
        assert!(
            waited.elapsed() < Duration::from_secs(5),
            "no fetch at start"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(matches!(
        check(&jwt, &signer.token("EdDSA", Some("k1"), valid())).await,
        Verdict::Allow(_)
    ));
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_eq!(
        server.fetches.load(Ordering::SeqCst),
        2,
        "one scheduled fetch a second later"
    );
    // The task ends once the method is dropped.
    drop(jwt);
    tokio::time::timeout(Duration::from_secs(3), task)
        .await
        .expect("the task ended")
        .unwrap();
    assert!(Jwt::new(&secret_cfg()).unwrap().start().is_none());
}

#[tokio::test]
async fn a_jwks_url_that_fails_keeps_the_last_keys() {
    let (signer, jwk) = Signer::fresh_ed("k1");
    let server = jwks_server(json!({"keys": [jwk]}), Duration::ZERO).await;
    let jwt = Jwt::new(&url_cfg(&server.url, 0)).unwrap();
    jwt.refresh().await.unwrap();
    *server.keys.lock().unwrap() = json!({"not": "a jwks"});
    let e = jwt.refresh().await.unwrap_err().to_string();
    assert!(
        e.contains(&server.url) && e.contains("no \"keys\" array"),
        "{e}"
    );
    assert!(matches!(
        check(&jwt, &signer.token("EdDSA", Some("k1"), valid())).await,
        Verdict::Allow(_)
    ));

    let closed = Jwt::new(&url_cfg("http://127.0.0.1:1/jwks", 0)).unwrap();
    let e = closed.refresh().await.unwrap_err().to_string();
    assert!(e.contains("cannot connect"), "{e}");
    assert_eq!(
        check(&closed, &signer.token("EdDSA", Some("k1"), valid())).await,
        deny(DenyReason::BadToken)
    );
}
