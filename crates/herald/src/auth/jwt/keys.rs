//! Verification keys: where they come from (an HMAC secret, PEM files, JWKS documents), which
//! algorithm each may verify, and the signature check itself (ring).
//!
//! A key's type fixes the algorithms it verifies: an HMAC secret only HS256/384/512, an RSA key
//! only RS256, a P-256 key only ES256, an Ed25519 key only EdDSA. A token cannot pick another
//! (the classic confusion of verifying an HS256 token with an RSA public key's bytes as the
//! HMAC secret is impossible: public keys are never HMAC keys).

use ring::{hmac, signature};
use serde_json::Value;
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_PKCS1_RSAENCRYPTION, OID_SIG_ED25519,
};
use x509_parser::pem::Pem;
use x509_parser::prelude::FromDer;
use x509_parser::public_key::RSAPublicKey;
use x509_parser::x509::SubjectPublicKeyInfo;

/// The algorithms Herald verifies (the `alg` of a token's header).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Alg {
    /// HMAC with SHA-256.
    Hs256,
    /// HMAC with SHA-384.
    Hs384,
    /// HMAC with SHA-512.
    Hs512,
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    Rs256,
    /// ECDSA on P-256 with SHA-256.
    Es256,
    /// Ed25519.
    EdDsa,
}

impl Alg {
    /// Every algorithm, in the order they are listed in messages.
    pub const ALL: [Alg; 6] = [
        Alg::Hs256,
        Alg::Hs384,
        Alg::Hs512,
        Alg::Rs256,
        Alg::Es256,
        Alg::EdDsa,
    ];

    /// Its name in a token's header and in `auth.jwt.algorithms`.
    pub fn name(self) -> &'static str {
        match self {
            Alg::Hs256 => "HS256",
            Alg::Hs384 => "HS384",
            Alg::Hs512 => "HS512",
            Alg::Rs256 => "RS256",
            Alg::Es256 => "ES256",
            Alg::EdDsa => "EdDSA",
        }
    }

    /// The algorithm a header names (exactly, as RFC 7518 spells it).
    pub fn from_header(name: &str) -> Option<Alg> {
        Alg::ALL.into_iter().find(|a| a.name() == name)
    }

    /// The algorithm a setting names (case aside).
    pub fn from_setting(name: &str) -> Option<Alg> {
        Alg::ALL
            .into_iter()
            .find(|a| a.name().eq_ignore_ascii_case(name))
    }
}

/// A key's material, which fixes the algorithms it verifies.
#[derive(Debug)]
pub(super) enum Material {
    /// An HMAC secret, ready for each hash (boxed: three keys' worth of hash state).
    Hmac(Box<HmacKeys>),
    /// An RSA public key: modulus and exponent, big-endian without leading zeros.
    Rsa { n: Vec<u8>, e: Vec<u8> },
    /// A P-256 public key: the uncompressed point (`04 || x || y`).
    P256(Vec<u8>),
    /// An Ed25519 public key.
    Ed25519(Vec<u8>),
}

/// An HMAC secret, keyed once for each hash.
#[derive(Debug)]
pub(super) struct HmacKeys {
    sha256: hmac::Key,
    sha384: hmac::Key,
    sha512: hmac::Key,
}

/// One verification key.
#[derive(Debug)]
pub(super) struct Key {
    /// Its `kid` (JWKS keys; PEM keys and the secret have none and serve any token).
    pub(super) kid: Option<String>,
    /// The one algorithm a JWK's `alg` restricts it to.
    pub(super) alg: Option<Alg>,
    /// The key itself.
    pub(super) material: Material,
}

impl Key {
    /// An HMAC key from a secret's bytes.
    pub(super) fn secret(secret: &[u8]) -> Key {
        Key {
            kid: None,
            alg: None,
            material: Material::Hmac(Box::new(HmacKeys {
                sha256: hmac::Key::new(hmac::HMAC_SHA256, secret),
                sha384: hmac::Key::new(hmac::HMAC_SHA384, secret),
                sha512: hmac::Key::new(hmac::HMAC_SHA512, secret),
            })),
        }
    }

    /// The algorithms this key's type verifies.
    pub(super) fn family(&self) -> &'static [Alg] {
        match self.material {
            Material::Hmac(_) => &[Alg::Hs256, Alg::Hs384, Alg::Hs512],
            Material::Rsa { .. } => &[Alg::Rs256],
            Material::P256(_) => &[Alg::Es256],
            Material::Ed25519(_) => &[Alg::EdDsa],
        }
    }

    /// Whether this key may verify a token signed with `alg`.
    pub(super) fn serves(&self, alg: Alg) -> bool {
        self.family().contains(&alg) && self.alg.is_none_or(|only| only == alg)
    }

    /// Whether `signature` is this key's signature of `message` under `alg` (false for an
    /// algorithm the key does not serve).
    pub(super) fn verify(&self, alg: Alg, message: &[u8], sig: &[u8]) -> bool {
        if !self.serves(alg) {
            return false;
        }
        match (&self.material, alg) {
            (Material::Hmac(k), Alg::Hs256) => hmac::verify(&k.sha256, message, sig).is_ok(),
            (Material::Hmac(k), Alg::Hs384) => hmac::verify(&k.sha384, message, sig).is_ok(),
            (Material::Hmac(k), Alg::Hs512) => hmac::verify(&k.sha512, message, sig).is_ok(),
            (Material::Rsa { n, e }, Alg::Rs256) => signature::RsaPublicKeyComponents { n, e }
                .verify(&signature::RSA_PKCS1_2048_8192_SHA256, message, sig)
                .is_ok(),
            (Material::P256(point), Alg::Es256) => {
                signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
                    .verify(message, sig)
                    .is_ok()
            }
            (Material::Ed25519(public), Alg::EdDsa) => {
                signature::UnparsedPublicKey::new(&signature::ED25519, public)
                    .verify(message, sig)
                    .is_ok()
            }
            _ => false,
        }
    }
}

/// An RSA key from its modulus and exponent (big-endian, maybe with leading zeros), checked
/// for a size ring verifies (2048 to 8192 bits).
fn rsa(n: &[u8], e: &[u8]) -> Result<Material, String> {
    let n = strip_zeros(n);
    let e = strip_zeros(e);
    let bits = n.len() * 8;
    if !(2048..=8192).contains(&bits) {
        return Err(format!(
            "an RSA key of about {bits} bits (2048 to 8192 are accepted)"
        ));
    }
    if e.is_empty() || e.len() > 4 {
        return Err("an RSA key with an unusable exponent".into());
    }
    Ok(Material::Rsa {
        n: n.to_vec(),
        e: e.to_vec(),
    })
}

fn strip_zeros(bytes: &[u8]) -> &[u8] {
    let first = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    &bytes[first..]
}

/// A P-256 key from its uncompressed point.
fn p256(point: &[u8]) -> Result<Material, String> {
    if point.len() != 65 || point[0] != 4 {
        return Err("a P-256 key that is not an uncompressed point".into());
    }
    Ok(Material::P256(point.to_vec()))
}

/// An Ed25519 key from its 32 bytes.
fn ed25519(public: &[u8]) -> Result<Material, String> {
    if public.len() != 32 {
        return Err(format!(
            "an Ed25519 key of {} bytes (32 expected)",
            public.len()
        ));
    }
    Ok(Material::Ed25519(public.to_vec()))
}

/// The public keys of a PEM document: `PUBLIC KEY` (RSA, P-256 or Ed25519), `RSA PUBLIC KEY`
/// (PKCS#1) or `CERTIFICATE` blocks. A private key, another curve or algorithm, an RSA key
/// under 2048 bits, or no key at all is an error saying which.
pub(super) fn from_pem(data: &[u8]) -> Result<Vec<Key>, String> {
    let mut keys = Vec::new();
    for (i, block) in Pem::iter_from_buffer(data).enumerate() {
        let block = block.map_err(|e| format!("PEM block {}: {e}", i + 1))?;
        let material =
            pem_block(&block).map_err(|e| format!("PEM block {} ({}): {e}", i + 1, block.label))?;
        keys.push(Key {
            kid: None,
            alg: None,
            material,
        });
    }
    if keys.is_empty() {
        return Err("no PEM block (expected -----BEGIN PUBLIC KEY-----)".into());
    }
    Ok(keys)
}

fn pem_block(block: &Pem) -> Result<Material, String> {
    match block.label.as_str() {
        "PUBLIC KEY" => {
            let (_, spki) = SubjectPublicKeyInfo::from_der(&block.contents)
                .map_err(|e| format!("not a SubjectPublicKeyInfo: {e}"))?;
            from_spki(&spki)
        }
        "RSA PUBLIC KEY" => {
            let (_, key) = RSAPublicKey::from_der(&block.contents)
                .map_err(|e| format!("not a PKCS#1 RSA public key: {e}"))?;
            rsa(key.modulus, key.exponent)
        }
        "CERTIFICATE" => {
            let (_, cert) = x509_parser::parse_x509_certificate(&block.contents)
                .map_err(|e| format!("not an X.509 certificate: {e}"))?;
            from_spki(cert.public_key())
        }
        label if label.contains("PRIVATE KEY") => {
            Err("a private key: give the public key (openssl pkey -pubout)".into())
        }
        _ => Err("not a public key or certificate".into()),
    }
}

fn from_spki(spki: &SubjectPublicKeyInfo<'_>) -> Result<Material, String> {
    let algorithm = &spki.algorithm.algorithm;
    let bits = spki.subject_public_key.data.as_ref();
    if *algorithm == OID_PKCS1_RSAENCRYPTION {
        let (_, key) =
            RSAPublicKey::from_der(bits).map_err(|e| format!("a broken RSA key: {e}"))?;
        rsa(key.modulus, key.exponent)
    } else if *algorithm == OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok());
        if curve != Some(OID_EC_P256) {
            return Err("an EC key on a curve other than P-256".into());
        }
        p256(bits)
    } else if *algorithm == OID_SIG_ED25519 {
        ed25519(bits)
    } else {
        Err(format!(
            "a key of algorithm {algorithm} (RSA, EC P-256 and Ed25519 are accepted)"
        ))
    }
}

/// What reading a JWKS document gave: its usable keys, and a line for each key skipped.
#[derive(Debug, Default)]
pub(super) struct Jwks {
    /// The keys Herald can verify with.
    pub(super) keys: Vec<Key>,
    /// Why each other key was skipped (for the log).
    pub(super) skipped: Vec<String>,
}

/// Reads a JWKS document (`{"keys": [...]}`). A document that is not one is an error; a key
/// Herald cannot use (encryption keys, other curves, `oct` keys when `secrets` is false) is
/// skipped and said why.
pub(super) fn from_jwks(data: &[u8], secrets: bool) -> Result<Jwks, String> {
    let doc: Value = serde_json::from_slice(data).map_err(|e| format!("not JSON: {e}"))?;
    let Some(list) = doc.get("keys").and_then(Value::as_array) else {
        return Err("not a JWKS document (no \"keys\" array)".into());
    };
    let mut jwks = Jwks::default();
    for (i, jwk) in list.iter().enumerate() {
        match from_jwk(jwk, secrets) {
            Ok(key) => jwks.keys.push(key),
            Err(why) => {
                let kid = jwk.get("kid").and_then(Value::as_str).unwrap_or("");
                jwks.skipped.push(format!("key {i} (kid {kid:?}): {why}"));
            }
        }
    }
    Ok(jwks)
}

fn from_jwk(jwk: &Value, secrets: bool) -> Result<Key, String> {
    let field = |name: &str| jwk.get(name).and_then(Value::as_str);
    let bytes = |name: &str| -> Result<Vec<u8>, String> {
        let text = field(name).ok_or_else(|| format!("no {name:?}"))?;
        data_encoding::BASE64URL_NOPAD
            .decode(text.trim_end_matches('=').as_bytes())
            .map_err(|e| format!("{name:?} is not base64url: {e}"))
    };
    if field("use").is_some_and(|u| u != "sig") {
        return Err("not a signing key (\"use\" is not \"sig\")".into());
    }
    let alg = match field("alg") {
        None => None,
        Some(name) => Some(
            Alg::from_header(name).ok_or_else(|| format!("algorithm {name:?} is not supported"))?,
        ),
    };
    let kty = field("kty").ok_or("no \"kty\"")?;
    let material = match (kty, field("crv")) {
        ("RSA", _) => rsa(&bytes("n")?, &bytes("e")?)?,
        ("EC", Some("P-256")) => {
            let (x, y) = (bytes("x")?, bytes("y")?);
            if x.len() != 32 || y.len() != 32 {
                return Err("P-256 coordinates of the wrong length".into());
            }
            let mut point = vec![4];
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            p256(&point)?
        }
        ("OKP", Some("Ed25519")) => ed25519(&bytes("x")?)?,
        ("oct", _) if secrets => {
            let k = bytes("k")?;
            if k.is_empty() {
                return Err("an empty secret".into());
            }
            Key::secret(&k).material
        }
        ("oct", _) => return Err("a secret key served over HTTP is not used".into()),
        (kty, crv) => {
            return Err(format!(
                "key type {kty:?}{} is not supported",
                crv.map(|c| format!(" on curve {c:?}")).unwrap_or_default()
            ));
        }
    };
    let key = Key {
        kid: field("kid").map(str::to_owned),
        alg,
        material,
    };
    if alg.is_some_and(|a| !key.family().contains(&a)) {
        return Err(format!(
            "\"alg\" {} does not fit key type {kty:?}",
            alg.map(Alg::name).unwrap_or_default()
        ));
    }
    Ok(key)
}
