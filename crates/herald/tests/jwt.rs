//! The JWT method against real tokens signed here with ring: HS256/384/512 with a secret,
//! RS256, ES256 and EdDSA with the test-only keys under `tests/data/` given as PEM files; the
//! algorithm checks, the time and audience claims, the grant, and the settings refused.
//! (`tests/jwks.rs` has the JWKS file and URL.)

#![allow(clippy::unwrap_used)]

mod jwt_support;

use data_encoding::BASE64URL_NOPAD;
use herald::auth::jwt::{Alg, Jwt};
use herald::auth::{AclClaim, ClientLimits, Credentials, Denial, DenyReason, Method, Verdict};
use herald::config::{JwtConfig, TokenIn};
use jwt_support::*;
use mqtt_codec::ReasonCode;
use serde_json::{Value, json};

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
