//! What the JWT tests share: test keys, a signer (ring) making real tokens, credentials.

#![allow(dead_code, clippy::unwrap_used, unreachable_pub)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use data_encoding::BASE64URL_NOPAD;
use herald::auth::jwt::Jwt;
use herald::auth::{Credentials, Denial, DenyReason, Method, Verdict};
use herald::config::{JwtConfig, ListenerKind};
use ring::rand::SystemRandom;
use ring::signature::{self, KeyPair};
use serde_json::{Value, json};

pub const SECRET: &str = "a test secret of at least thirty-two bytes";

pub fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

pub fn pem_der(name: &str) -> Vec<u8> {
    let text = std::fs::read(data(name)).unwrap();
    let (_, pem) = x509_parser::pem::parse_x509_pem(&text).unwrap();
    pem.contents
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A signer: how the tests sign tokens.
pub enum Signer {
    Hmac(Vec<u8>),
    Rsa(signature::RsaKeyPair),
    Ec(signature::EcdsaKeyPair),
    Ed(signature::Ed25519KeyPair),
}

impl Signer {
    pub fn rsa() -> Signer {
        Signer::Rsa(
            signature::RsaKeyPair::from_pkcs8(&pem_der("jwt-test-only-rsa-private.pem")).unwrap(),
        )
    }
    pub fn ec() -> Signer {
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
    pub fn ed() -> Signer {
        let der = pem_der("jwt-test-only-ed25519-private.pem");
        Signer::Ed(signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der).unwrap())
    }
    /// A fresh Ed25519 key and its JWK.
    pub fn fresh_ed(kid: &str) -> (Signer, Value) {
        let pkcs8 = signature::Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        let pair = signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        let jwk = json!({"kty": "OKP", "crv": "Ed25519", "kid": kid, "use": "sig",
                         "x": BASE64URL_NOPAD.encode(pair.public_key().as_ref())});
        (Signer::Ed(pair), jwk)
    }
    /// A fresh P-256 key and its JWK.
    pub fn fresh_ec(kid: &str) -> (Signer, Value) {
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

    pub fn sign(&self, alg: &str, message: &[u8]) -> Vec<u8> {
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
    pub fn token(&self, alg: &str, kid: Option<&str>, claims: Value) -> String {
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

pub fn valid() -> Value {
    json!({"sub": "alice", "exp": now() + 600, "iat": now()})
}

pub fn creds<'a>(username: Option<&'a str>, password: Option<&'a [u8]>) -> Credentials<'a> {
    Credentials {
        client_id: "dev-1",
        username,
        password,
        certificate: None,
        certificate_tenant: None,
        peer: SocketAddr::from(([127, 0, 0, 1], 50000)),
        listener: ListenerKind::Mqtt,
    }
}

pub async fn check(jwt: &Jwt, token: &str) -> Verdict {
    jwt.check(&creds(Some("ignored"), Some(token.as_bytes())))
        .await
}

pub fn deny(reason: DenyReason) -> Verdict {
    Verdict::Deny(Denial::new(reason))
}

pub fn secret_cfg() -> JwtConfig {
    JwtConfig {
        secret: SECRET.into(),
        ..JwtConfig::default()
    }
}

pub fn allowed_as(v: &Verdict) -> Option<&str> {
    match v {
        Verdict::Allow(g) => g.username.as_deref(),
        _ => None,
    }
}
