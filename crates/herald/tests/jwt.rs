//! The JWT method against real tokens: signed here with ring (HS256/384/512 with a secret,
//! RS256, ES256 and EdDSA with the test-only keys under `tests/data/` or keys made on the
//! spot), their keys given as PEM files, a JWKS file, or a JWKS URL served by a real HTTP
//! server on 127.0.0.1:0 that counts its fetches and rotates its keys.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::routing::get;
use data_encoding::BASE64URL_NOPAD;
use herald::auth::jwt::{Alg, Jwt};
use herald::auth::{AclClaim, ClientLimits, Credentials, Denial, DenyReason, Method, Verdict};
use herald::config::{JwtConfig, ListenerKind, TokenIn};
use mqtt_codec::ReasonCode;
use ring::rand::SystemRandom;
use ring::signature::{self, KeyPair};
use serde_json::{Value, json};
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey;
use x509_parser::x509::SubjectPublicKeyInfo;

const SECRET: &str = "a test secret of at least thirty-two bytes";

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

fn pem_der(name: &str) -> Vec<u8> {
    let text = std::fs::read(data(name)).unwrap();
    let (_, pem) = x509_parser::pem::parse_x509_pem(&text).unwrap();
    pem.contents
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A signer: how the tests sign tokens.
enum Signer {
    Hmac(Vec<u8>),
    Rsa(signature::RsaKeyPair),
    Ec(signature::EcdsaKeyPair),
    Ed(signature::Ed25519KeyPair),
}

impl Signer {
    fn rsa() -> Signer {
        Signer::Rsa(
            signature::RsaKeyPair::from_pkcs8(&pem_der("jwt-test-only-rsa-private.pem")).unwrap(),
        )
    }
    fn ec() -> Signer {
        let der = pem_der("jwt-test-only-ec-private.pem");
        Signer::Ec(
            signature::EcdsaKeyPair::from_pkcs8(
                &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                &der,
                &SystemRandom::new(),
            )
            .unwrap(),
        )
    }
    fn ed() -> Signer {
        let der = pem_der("jwt-test-only-ed25519-private.pem");
        Signer::Ed(signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der).unwrap())
    }
    /// A fresh Ed25519 key and its JWK.
    fn fresh_ed(kid: &str) -> (Signer, Value) {
        let pkcs8 = signature::Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        let pair = signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        let jwk = json!({"kty": "OKP", "crv": "Ed25519", "kid": kid, "use": "sig",
                         "x": BASE64URL_NOPAD.encode(pair.public_key().as_ref())});
        (Signer::Ed(pair), jwk)
    }
    /// A fresh P-256 key and its JWK.
    fn fresh_ec(kid: &str) -> (Signer, Value) {
        let alg = &signature::ECDSA_P256_SHA256_FIXED_SIGNING;
        let rng = SystemRandom::new();
        let pkcs8 = signature::EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
        let pair = signature::EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).unwrap();
        let point = pair.public_key().as_ref();
        let jwk = json!({"kty": "EC", "crv": "P-256", "kid": kid, "alg": "ES256",
                         "x": BASE64URL_NOPAD.encode(&point[1..33]),
                         "y": BASE64URL_NOPAD.encode(&point[33..])});
        (Signer::Ec(pair), jwk)
    }

    fn sign(&self, alg: &str, message: &[u8]) -> Vec<u8> {
        let rng = SystemRandom::new();
        match self {
            Signer::Hmac(secret) => {
                let h = match alg {
                    "HS256" => ring::hmac::HMAC_SHA256,
                    "HS384" => ring::hmac::HMAC_SHA384,
                    _ => ring::hmac::HMAC_SHA512,
                };
                ring::hmac::sign(&ring::hmac::Key::new(h, secret), message)
                    .as_ref()
                    .to_vec()
            }
            Signer::Rsa(pair) => {
                let mut sig = vec![0; pair.public().modulus_len()];
                pair.sign(&signature::RSA_PKCS1_SHA256, &rng, message, &mut sig)
                    .unwrap();
                sig
            }
            Signer::Ec(pair) => pair.sign(&rng, message).unwrap().as_ref().to_vec(),
            Signer::Ed(pair) => pair.sign(message).as_ref().to_vec(),
        }
    }

    /// A compact token: `header` gets `alg` (and `kid` when given) added.
    fn token(&self, alg: &str, kid: Option<&str>, claims: Value) -> String {
        let mut header = json!({"typ": "JWT", "alg": alg});
        if let Some(kid) = kid {
            header["kid"] = json!(kid);
        }
        let signed = format!(
            "{}.{}",
            BASE64URL_NOPAD.encode(header.to_string().as_bytes()),
            BASE64URL_NOPAD.encode(claims.to_string().as_bytes())
        );
        let sig = self.sign(alg, signed.as_bytes());
        format!("{signed}.{}", BASE64URL_NOPAD.encode(&sig))
    }
}

fn valid() -> Value {
    json!({"sub": "alice", "exp": now() + 600, "iat": now()})
}

fn creds<'a>(username: Option<&'a str>, password: Option<&'a [u8]>) -> Credentials<'a> {
    Credentials {
        client_id: "dev-1",
        username,
        password,
        certificate: None,
        peer: SocketAddr::from(([127, 0, 0, 1], 50000)),
        listener: ListenerKind::Mqtt,
    }
}

async fn check(jwt: &Jwt, token: &str) -> Verdict {
    jwt.check(&creds(Some("ignored"), Some(token.as_bytes())))
        .await
}

fn deny(reason: DenyReason) -> Verdict {
    Verdict::Deny(Denial::new(reason))
}

fn secret_cfg() -> JwtConfig {
    JwtConfig {
        secret: SECRET.into(),
        ..JwtConfig::default()
    }
}

fn allowed_as(v: &Verdict) -> Option<&str> {
    match v {
        Verdict::Allow(g) => g.username.as_deref(),
        _ => None,
    }
}

#[tokio::test]
async fn hmac_tokens_verify_with_the_secret_only() {
    let jwt = Jwt::new(&secret_cfg()).unwrap();
    assert_eq!(jwt.algorithms(), &[Alg::Hs256, Alg::Hs384, Alg::Hs512]);
    let good = Signer::Hmac(SECRET.as_bytes().to_vec());
    for alg in ["HS256", "HS384", "HS512"] {
        let v = check(&jwt, &good.token(alg, None, valid())).await;
        assert_eq!(allowed_as(&v), Some("alice"), "{alg}: {v:?}");
    }
    let wrong = Signer::Hmac(b"another secret, also thirty-two bytes long".to_vec());
    let v = check(&jwt, &wrong.token("HS256", None, valid())).await;
    assert_eq!(v, deny(DenyReason::BadToken));
    assert_eq!(
        Denial::new(DenyReason::BadToken).code,
        ReasonCode::BadUserNameOrPassword
    );

    // A payload changed after signing.
    let token = good.token("HS256", None, valid());
    let parts: Vec<&str> = token.split('.').collect();
    let forged = BASE64URL_NOPAD.encode(
        json!({"sub": "root", "exp": now() + 600})
            .to_string()
            .as_bytes(),
    );
    let v = check(&jwt, &format!("{}.{forged}.{}", parts[0], parts[2])).await;
    assert_eq!(v, deny(DenyReason::BadToken));

    // "alg": "none" and an unknown algorithm.
    let header = BASE64URL_NOPAD.encode(br#"{"alg":"none"}"#);
    let payload = BASE64URL_NOPAD.encode(valid().to_string().as_bytes());
    assert_eq!(
        check(&jwt, &format!("{header}.{payload}.AAAA")).await,
        deny(DenyReason::BadToken)
    );
    assert_eq!(
        check(&jwt, &format!("{header}.{payload}.")).await,
        Verdict::Pass
    );

    // The secret from a file, its trailing newline removed.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("secret");
    std::fs::write(&path, format!("{SECRET}\n")).unwrap();
    let from_file = Jwt::new(&JwtConfig {
        secret_file: path,
        ..JwtConfig::default()
    })
    .unwrap();
    let v = check(&from_file, &good.token("HS512", None, valid())).await;
    assert_eq!(allowed_as(&v), Some("alice"));
}

#[tokio::test]
async fn what_is_not_a_token_passes() {
    let jwt = Jwt::new(&secret_cfg()).unwrap();
    let pass = |c: Credentials<'static>| {
        let jwt = jwt.clone();
        async move { jwt.check(&c).await }
    };
    assert_eq!(pass(creds(Some("alice"), None)).await, Verdict::Pass);
    assert_eq!(pass(creds(Some("alice"), Some(b""))).await, Verdict::Pass);
    assert_eq!(
        pass(creds(None, Some(b"\xff\xfe.a.b"))).await,
        Verdict::Pass
    );
    for not_a_token in [
        "hunter2", "a.b", "a.b.c.d", "a..c", "a.b+.c", "a.b.c=", " a.b.c",
    ] {
        assert_eq!(
            check(&jwt, not_a_token).await,
            Verdict::Pass,
            "{not_a_token:?}"
        );
    }
    // Token-shaped but not a token: refused, not passed on.
    for malformed in [
        "abc.def.ghi",
        "e30.e30.AAAA",
        "eyJhbGciOiJIUzI1NiJ9.bm90IGpzb24.AAAA",
    ] {
        assert_eq!(
            check(&jwt, malformed).await,
            deny(DenyReason::BadToken),
            "{malformed:?}"
        );
    }

    // In the username, after a prefix.
    let jwt = Jwt::new(&JwtConfig {
        token_in: TokenIn::Username,
        username_prefix: "jwt:".into(),
        ..secret_cfg()
    })
    .unwrap();
    let token = Signer::Hmac(SECRET.as_bytes().to_vec()).token("HS256", None, valid());
    let name = format!("jwt:{token}");
    let v = jwt.check(&creds(Some(&name), None)).await;
    assert_eq!(allowed_as(&v), Some("alice"));
    let v = jwt
        .check(&creds(Some(&token), Some(token.as_bytes())))
        .await;
    assert_eq!(
        v,
        Verdict::Pass,
        "no prefix: not a token, whatever the password"
    );
    assert_eq!(jwt.check(&creds(Some("jwt:"), None)).await, Verdict::Pass);
}

#[tokio::test]
async fn rsa_ec_and_ed25519_public_keys_from_pem() {
    let jwt = Jwt::new(&JwtConfig {
        public_key_files: vec![
            data("jwt-test-only-rsa-public.pem"),
            data("jwt-test-only-ec-public.pem"),
            data("jwt-test-only-ed25519-public.pem"),
        ],
        ..JwtConfig::default()
    })
    .unwrap();
    assert_eq!(jwt.algorithms(), &[Alg::Rs256, Alg::Es256, Alg::EdDsa]);
    for (alg, signer) in [
        ("RS256", Signer::rsa()),
        ("ES256", Signer::ec()),
        ("EdDSA", Signer::ed()),
    ] {
        let v = check(&jwt, &signer.token(alg, None, valid())).await;
        assert_eq!(allowed_as(&v), Some("alice"), "{alg}: {v:?}");
    }
    // A key of another type than the token says.
    let v = check(&jwt, &Signer::ec().token("EdDSA", None, valid())).await;
    assert_eq!(v, deny(DenyReason::BadToken));
    // A key that is not configured.
    let (other, _) = Signer::fresh_ec("x");
    assert_eq!(
        check(&jwt, &other.token("ES256", None, valid())).await,
        deny(DenyReason::BadToken)
    );
    // An HS256 token when no secret is configured.
    let hs = Signer::Hmac(SECRET.as_bytes().to_vec()).token("HS256", None, valid());
    assert_eq!(check(&jwt, &hs).await, deny(DenyReason::BadToken));

    // algorithms narrows what the keys could verify.
    let narrow = Jwt::new(&JwtConfig {
        public_key_files: vec![
            data("jwt-test-only-rsa-public.pem"),
            data("jwt-test-only-ec-public.pem"),
        ],
        algorithms: vec!["es256".into()],
        ..JwtConfig::default()
    })
    .unwrap();
    assert_eq!(
        check(&narrow, &Signer::rsa().token("RS256", None, valid())).await,
        deny(DenyReason::BadToken)
    );
    assert!(matches!(
        check(&narrow, &Signer::ec().token("ES256", None, valid())).await,
        Verdict::Allow(_)
    ));
}

/// The classic confusion: an HS256 token "signed" with the RSA public key's PEM text as the
/// HMAC secret must not verify, whatever `algorithms` allows.
#[tokio::test]
async fn alg_confusion_is_refused() {
    let pem = std::fs::read(data("jwt-test-only-rsa-public.pem")).unwrap();
    let forger = Signer::Hmac(pem.clone());
    let jwt = Jwt::new(&JwtConfig {
        public_key_files: vec![data("jwt-test-only-rsa-public.pem")],
        ..JwtConfig::default()
    })
    .unwrap();
    assert_eq!(
        check(&jwt, &forger.token("HS256", None, valid())).await,
        deny(DenyReason::BadToken)
    );

    // Both families allowed, a (different) secret configured: still refused.
    let both = Jwt::new(&JwtConfig {
        public_key_files: vec![data("jwt-test-only-rsa-public.pem")],
        algorithms: vec!["HS256".into(), "RS256".into()],
        ..secret_cfg()
    })
    .unwrap();
    assert_eq!(
        check(&both, &forger.token("HS256", None, valid())).await,
        deny(DenyReason::BadToken)
    );
    // ... and the same with the DER bytes as the secret.
    let der = Signer::Hmac(pem_der("jwt-test-only-rsa-public.pem"));
    assert_eq!(
        check(&both, &der.token("HS256", None, valid())).await,
        deny(DenyReason::BadToken)
    );
    // While genuine tokens of both kinds pass.
    assert!(matches!(
        check(&both, &Signer::rsa().token("RS256", None, valid())).await,
        Verdict::Allow(_)
    ));
    let hs = Signer::Hmac(SECRET.as_bytes().to_vec()).token("HS256", None, valid());
    assert!(matches!(check(&both, &hs).await, Verdict::Allow(_)));
}

#[tokio::test]
async fn times_with_leeway() {
    let jwt = Jwt::new(&JwtConfig {
        leeway_secs: 30,
        ..secret_cfg()
    })
    .unwrap();
    let s = Signer::Hmac(SECRET.as_bytes().to_vec());
    let t = now();
    let at = |claims: Value| s.token("HS256", None, claims);
    let expired = DenyReason::TokenExpired;
    assert!(matches!(
        check(&jwt, &at(json!({"exp": t - 10}))).await,
        Verdict::Allow(_)
    ));
    assert_eq!(
        check(&jwt, &at(json!({"exp": t - 40}))).await,
        deny(expired)
    );
    assert_eq!(Denial::new(expired).code, ReasonCode::BadUserNameOrPassword);
    assert!(matches!(
        check(&jwt, &at(json!({"exp": t + 60, "nbf": t + 10}))).await,
        Verdict::Allow(_)
    ));
    assert_eq!(
        check(&jwt, &at(json!({"exp": t + 600, "nbf": t + 60}))).await,
        deny(expired)
    );
    assert!(matches!(
        check(&jwt, &at(json!({"exp": t + 60, "iat": t + 10}))).await,
        Verdict::Allow(_)
    ));
    assert_eq!(
        check(&jwt, &at(json!({"exp": t + 600, "iat": t + 60}))).await,
        deny(expired)
    );
    assert_eq!(
        check(&jwt, &at(json!({"sub": "alice"}))).await,
        deny(DenyReason::TokenClaims)
    );

    let lax = Jwt::new(&JwtConfig {
        require_exp: false,
        leeway_secs: 0,
        ..secret_cfg()
    })
    .unwrap();
    assert!(matches!(
        check(&lax, &at(json!({"sub": "alice"}))).await,
        Verdict::Allow(_)
    ));
    assert_eq!(check(&lax, &at(json!({"exp": t - 1}))).await, deny(expired));
}

#[tokio::test]
async fn audience_and_issuer() {
    let jwt = Jwt::new(&JwtConfig {
        audience: vec!["mqtt".into()],
        issuer: vec!["https://idp.example".into(), "https://idp2.example".into()],
        ..secret_cfg()
    })
    .unwrap();
    let s = Signer::Hmac(SECRET.as_bytes().to_vec());
    let with = |extra: Value| {
        let mut claims = valid();
        for (k, v) in extra.as_object().unwrap() {
            claims[k] = v.clone();
        }
        s.token("HS256", None, claims)
    };
    let claims = DenyReason::TokenClaims;
    assert!(matches!(
        check(
            &jwt,
            &with(json!({"aud": "mqtt", "iss": "https://idp2.example"}))
        )
        .await,
        Verdict::Allow(_)
    ));
    assert!(matches!(
        check(
            &jwt,
            &with(json!({"aud": ["web", "mqtt"], "iss": "https://idp.example"}))
        )
        .await,
        Verdict::Allow(_)
    ));
    assert_eq!(
        check(
            &jwt,
            &with(json!({"aud": "web", "iss": "https://idp.example"}))
        )
        .await,
        deny(claims)
    );
    assert_eq!(
        check(&jwt, &with(json!({"iss": "https://idp.example"}))).await,
        deny(claims)
    );
    assert_eq!(
        check(
            &jwt,
            &with(json!({"aud": "mqtt", "iss": "https://evil.example"}))
        )
        .await,
        deny(claims)
    );
    assert_eq!(
        check(&jwt, &with(json!({"aud": "mqtt"}))).await,
        deny(claims)
    );
}

#[tokio::test]
async fn claims_make_the_grant() {
    let jwt = Jwt::new(&JwtConfig {
        username_claim: "preferred_username".into(),
        tenant_claim: "org".into(),
        acl_claim: "mqtt_acl".into(),
        limits_claim: "mqtt_limits".into(),
        ..secret_cfg()
    })
    .unwrap();
    let s = Signer::Hmac(SECRET.as_bytes().to_vec());
    let token = s.token(
        "HS256",
        None,
        json!({"sub": "u-123", "preferred_username": "alice", "org": "acme", "exp": now() + 60,
               "mqtt_acl": {"pub": ["acme/%u/#"], "sub": ["acme/#"], "deny": ["acme/admin/#"]},
               "mqtt_limits": {"messages_per_sec": 10, "bytes_per_sec": 4096,
                               "max_subscriptions": 5, "max_qos": 1}}),
    );
    let Verdict::Allow(grant) = check(&jwt, &token).await else {
        panic!("refused")
    };
    assert_eq!(grant.username.as_deref(), Some("alice"));
    assert_eq!(grant.tenant.as_deref(), Some("acme"));
    assert_eq!(
        grant.acl,
        Some(AclClaim {
            publish: vec!["acme/%u/#".into()],
            subscribe: vec!["acme/#".into()],
            deny: vec!["acme/admin/#".into()],
        })
    );
    assert_eq!(
        grant.limits,
        Some(ClientLimits {
            messages_per_sec: Some(10),
            bytes_per_sec: Some(4096),
            max_subscriptions: Some(5),
            max_qos: Some(1),
        })
    );
    // No claims: nothing granted beyond the identity check.
    let Verdict::Allow(bare) =
        check(&jwt, &s.token("HS256", None, json!({"exp": now() + 60}))).await
    else {
        panic!("refused")
    };
    assert_eq!(bare, Default::default());
    // A malformed ACL claim refuses the token.
    let bad = s.token(
        "HS256",
        None,
        json!({"exp": now() + 60, "mqtt_acl": {"pub": "a/#"}}),
    );
    assert_eq!(check(&jwt, &bad).await, deny(DenyReason::TokenClaims));
}

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

#[test]
fn bad_keys_are_refused_naming_the_setting_and_file() {
    let refused = |cfg: JwtConfig| Jwt::new(&cfg).unwrap_err().to_string();
    for (file, says) in [
        ("jwt-test-only-rsa-private.pem", "private key"),
        ("jwt-test-only-rsa1024-public.pem", "2048 to 8192"),
        ("jwt-test-only-ec-p384-public.pem", "P-256"),
        ("README.md", "no PEM block"),
        ("missing.pem", "No such file"),
    ] {
        let e = refused(JwtConfig {
            public_key_files: vec![data(file)],
            ..JwtConfig::default()
        });
        assert!(e.starts_with("auth.jwt.public_key_files: "), "{e}");
        assert!(e.contains(file) && e.contains(says), "{file}: {e}");
    }
    let e = refused(JwtConfig {
        algorithms: vec!["RS256".into()],
        ..secret_cfg()
    });
    assert!(
        e.starts_with("auth.jwt.algorithms: ") && e.contains("RS256"),
        "{e}"
    );
    let e = refused(JwtConfig {
        algorithms: vec!["none".into()],
        ..secret_cfg()
    });
    assert!(e.contains("\"none\" is not one of HS256"), "{e}");
    let e = refused(JwtConfig::default());
    assert!(e.starts_with("auth.jwt: no key"), "{e}");
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, r#"{"keys": [{"kty": "EC", "crv": "P-521"}]}"#).unwrap();
    let e = refused(JwtConfig {
        jwks_file: jwks.clone(),
        ..JwtConfig::default()
    });
    assert!(
        e.starts_with("auth.jwt.jwks_file: ") && e.contains("no usable key"),
        "{e}"
    );
    std::fs::write(&jwks, "{}").unwrap();
    let e = refused(JwtConfig {
        jwks_file: jwks,
        ..JwtConfig::default()
    });
    assert!(e.contains("no \"keys\" array"), "{e}");
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
