//! JSON Web Tokens: HS256/384/512, RS256, ES256 and EdDSA; keys from PEM files, a JWKS file
//! or a JWKS URL.
//!
//! The token travels in CONNECT's password (or its username after a prefix). Something that
//! is not shaped like a token (three base64url parts) is not this method's: it passes. A token
//! is then checked in this order: its header (`alg` one of those allowed, no `crit`), its
//! signature against the keys that serve that algorithm (by `kid` when it names one), its
//! times (`exp`, `nbf`, `iat`, with leeway), its audience and issuer; then the claims naming
//! the username, tenant, ACL and limits are read into the [`Grant`].
//!
//! - `keys`: key material and the signature check (ring).
//! - `jwks`: a JWKS URL's keys, refetched on a schedule and for unknown key ids.
//! - `claims`: the registered claims' checks and the grant.
//!
//! Tokens and secrets are never logged; a refusal logs its reason, the algorithm and key id.

mod claims;
mod jwks;
mod keys;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};
use tokio::task::JoinHandle;

pub use keys::Alg;

use crate::auth::{BoxFuture, Credentials, Denial, DenyReason, Grant, Method, Verdict};
use crate::config::{JwtConfig, TokenIn};
use claims::Rules;
use jwks::Remote;
use keys::Key;

/// Why the JWT method could not be set up, or a JWKS fetch failed.
#[derive(Debug, thiserror::Error)]
pub enum JwtError {
    /// A setting or the file it names is unusable.
    #[error("{key}: {message}")]
    Config {
        /// The setting (`auth.jwt.public_key_files`...).
        key: &'static str,
        /// What is wrong, naming the file.
        message: String,
    },
    /// A JWKS URL gave no key set.
    #[error("JWKS {url}: {message}")]
    Fetch {
        /// The URL.
        url: String,
        /// What went wrong.
        message: String,
    },
}

fn invalid(key: &'static str, message: impl Into<String>) -> JwtError {
    JwtError::Config {
        key,
        message: message.into(),
    }
}

/// The `[auth.jwt]` method.
#[derive(Debug)]
pub struct Jwt {
    /// Where the token travels.
    token_in: TokenIn,
    /// With `token_in = "username"`, what starts a username holding a token.
    username_prefix: String,
    /// The algorithms a token may be signed with.
    allowed: Vec<Alg>,
    /// Keys that never change: the secret, the PEM files' keys, the JWKS file's.
    fixed: Vec<Key>,
    /// The JWKS URL's keys.
    remote: Option<Remote>,
    /// What the claims must say and where the grant's parts are.
    rules: Rules,
}

impl Jwt {
    /// Reads the keys `cfg` names (secret, PEM files, JWKS file) and checks the settings. A
    /// JWKS URL is fetched by [`Jwt::start`]'s task (or [`Jwt::refresh`]), and on demand.
    pub fn new(cfg: &JwtConfig) -> Result<Arc<Jwt>, JwtError> {
        let mut fixed = Vec::new();
        if let Some(secret) = secret(cfg)? {
            if secret.len() < 32 {
                tracing::warn!(
                    "auth.jwt: the HMAC secret has {} bytes; 32 or more are advised",
                    secret.len()
                );
            }
            fixed.push(Key::secret(&secret));
        }
        for path in &cfg.public_key_files {
            let data = std::fs::read(path).map_err(|e| {
                invalid(
                    "auth.jwt.public_key_files",
                    format!("{}: {e}", path.display()),
                )
            })?;
            let keys = keys::from_pem(&data).map_err(|e| {
                invalid(
                    "auth.jwt.public_key_files",
                    format!("{}: {e}", path.display()),
                )
            })?;
            fixed.extend(keys);
        }
        if !cfg.jwks_file.as_os_str().is_empty() {
            let path = &cfg.jwks_file;
            let data = std::fs::read(path)
                .map_err(|e| invalid("auth.jwt.jwks_file", format!("{}: {e}", path.display())))?;
            let jwks = keys::from_jwks(&data, true)
                .map_err(|e| invalid("auth.jwt.jwks_file", format!("{}: {e}", path.display())))?;
            for why in &jwks.skipped {
                tracing::warn!("auth.jwt.jwks_file {}: {why}", path.display());
            }
            if jwks.keys.is_empty() {
                return Err(invalid(
                    "auth.jwt.jwks_file",
                    format!("{}: no usable key", path.display()),
                ));
            }
            fixed.extend(jwks.keys);
        }
        let remote = if cfg.jwks_url.is_empty() {
            None
        } else {
            Some(Remote::new(
                &cfg.jwks_url,
                Duration::from_secs(cfg.jwks_refresh_secs.max(1)),
                Duration::from_secs(cfg.jwks_min_refresh_secs),
            )?)
        };
        if fixed.is_empty() && remote.is_none() {
            return Err(invalid(
                "auth.jwt",
                "no key: set secret, secret_file, public_key_files, jwks_file or jwks_url",
            ));
        }
        let allowed = allowed(cfg, &fixed, remote.is_some())?;
        Ok(Arc::new(Jwt {
            token_in: cfg.token_in,
            username_prefix: cfg.username_prefix.clone(),
            allowed,
            fixed,
            remote,
            rules: Rules::new(cfg),
        }))
    }

    /// Starts the task fetching the JWKS URL now and every `jwks_refresh_secs` (`None`
    /// without a URL). It ends by itself once this method is dropped.
    pub fn start(self: &Arc<Self>) -> Option<JoinHandle<()>> {
        let every = self.remote.as_ref()?.every;
        let weak = Arc::downgrade(self);
        Some(tokio::spawn(async move {
            loop {
                let Some(jwt) = weak.upgrade() else { return };
                if let Err(e) = jwt.refresh().await {
                    tracing::warn!("{e}");
                }
                drop(jwt);
                tokio::time::sleep(every).await;
            }
        }))
    }

    /// Fetches the JWKS URL now: how many usable keys it served (0 without a URL).
    pub async fn refresh(&self) -> Result<usize, JwtError> {
        match &self.remote {
            Some(remote) => remote.fetch().await,
            None => Ok(0),
        }
    }

    /// JWKS fetches started so far (scheduled and on demand), for metrics.
    pub fn jwks_fetches(&self) -> u64 {
        self.remote.as_ref().map_or(0, Remote::fetches)
    }

    /// The algorithms a token may be signed with.
    pub fn algorithms(&self) -> &[Alg] {
        &self.allowed
    }

    /// The token a CONNECT carries, if any.
    fn token<'a>(&self, credentials: &'a Credentials<'a>) -> Option<&'a str> {
        let token = match self.token_in {
            TokenIn::Password => std::str::from_utf8(credentials.password?).ok()?,
            TokenIn::Username => credentials
                .username?
                .strip_prefix(self.username_prefix.as_str())?,
        };
        (!token.is_empty()).then_some(token)
    }

    /// Judges a token-shaped string: the grant, or why it is refused.
    async fn judge(&self, token: &Token<'_>) -> Result<Grant, DenyReason> {
        let header = json_object(token.header).ok_or(DenyReason::BadToken)?;
        let alg = header
            .get("alg")
            .and_then(Value::as_str)
            .and_then(Alg::from_header)
            .filter(|alg| self.allowed.contains(alg))
            .ok_or(DenyReason::BadToken)?;
        if header.contains_key("crit") {
            return Err(DenyReason::BadToken);
        }
        let kid = match header.get("kid") {
            None | Some(Value::Null) => None,
            Some(Value::String(kid)) => Some(kid.as_str()),
            Some(_) => return Err(DenyReason::BadToken),
        };
        let signature = base64url(token.signature).ok_or(DenyReason::BadToken)?;
        if !self.verified(alg, kid, token.signed, &signature).await {
            tracing::debug!(alg = alg.name(), kid, "JWT refused: no key verifies it");
            return Err(DenyReason::BadToken);
        }
        let claims = json_object(token.payload).ok_or(DenyReason::BadToken)?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        self.rules.grant(&claims, now).inspect_err(|reason| {
            tracing::debug!(
                alg = alg.name(),
                kid,
                reason = reason.label(),
                "JWT refused"
            );
        })
    }

    /// Whether a key that serves `alg` signed `signed`: with a `kid`, a key with that kid or
    /// none; without, any key. A `kid` no key has makes the JWKS URL be fetched again (rate
    /// limited) first.
    async fn verified(&self, alg: Alg, kid: Option<&str>, signed: &[u8], sig: &[u8]) -> bool {
        let seen = self.remote.as_ref().map(Remote::generation);
        if self.try_keys(alg, kid, signed, sig) {
            return true;
        }
        let (Some(remote), Some(seen), Some(kid)) = (&self.remote, seen, kid) else {
            return false;
        };
        let known = |keys: &[Key]| keys.iter().any(|k| k.kid.as_deref() == Some(kid));
        if known(&self.fixed) || known(&remote.keys()) {
            return false;
        }
        remote.refetch(seen).await && self.try_keys(alg, kid.into(), signed, sig)
    }

    fn try_keys(&self, alg: Alg, kid: Option<&str>, signed: &[u8], sig: &[u8]) -> bool {
        let fits = |k: &&Key| kid.is_none() || k.kid.is_none() || k.kid.as_deref() == kid;
        let remote = self.remote.as_ref().map(Remote::keys);
        let fetched = remote.as_deref().map_or(&[][..], Vec::as_slice);
        self.fixed
            .iter()
            .chain(fetched)
            .filter(fits)
            .any(|k| k.verify(alg, signed, sig))
    }
}

impl Method for Jwt {
    fn name(&self) -> &'static str {
        "jwt"
    }

    fn check<'a>(&'a self, credentials: &'a Credentials<'a>) -> BoxFuture<'a, Verdict> {
        Box::pin(async move {
            let Some(token) = self.token(credentials).and_then(Token::split) else {
                return Verdict::Pass;
            };
            match self.judge(&token).await {
                Ok(grant) => Verdict::Allow(grant),
                Err(reason) => Verdict::Deny(Denial::new(reason)),
            }
        })
    }
}

/// A string shaped like a compact JWS: three non-empty base64url parts.
#[derive(Debug, Clone, Copy)]
struct Token<'a> {
    header: &'a str,
    payload: &'a str,
    signature: &'a str,
    /// `header.payload`, the bytes signed.
    signed: &'a [u8],
}

impl<'a> Token<'a> {
    fn split(token: &'a str) -> Option<Token<'a>> {
        let alphabet = |part: &str| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        let mut parts = token.split('.');
        let (header, payload, signature) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || ![header, payload, signature].into_iter().all(alphabet) {
            return None;
        }
        Some(Token {
            header,
            payload,
            signature,
            signed: &token.as_bytes()[..header.len() + 1 + payload.len()],
        })
    }
}

fn base64url(part: &str) -> Option<Vec<u8>> {
    data_encoding::BASE64URL_NOPAD.decode(part.as_bytes()).ok()
}

fn json_object(part: &str) -> Option<Map<String, Value>> {
    match serde_json::from_slice(&base64url(part)?).ok()? {
        Value::Object(map) => Some(map),
        _ => None,
    }
}

/// The HMAC secret, from `secret` or `secret_file` (not both).
fn secret(cfg: &JwtConfig) -> Result<Option<Vec<u8>>, JwtError> {
    let in_file = !cfg.secret_file.as_os_str().is_empty();
    if !cfg.secret.is_empty() && in_file {
        return Err(invalid(
            "auth.jwt.secret_file",
            "set auth.jwt.secret or auth.jwt.secret_file, not both",
        ));
    }
    if !cfg.secret.is_empty() {
        return Ok(Some(cfg.secret.as_bytes().to_vec()));
    }
    if !in_file {
        return Ok(None);
    }
    let path = &cfg.secret_file;
    let mut data = std::fs::read(path)
        .map_err(|e| invalid("auth.jwt.secret_file", format!("{}: {e}", path.display())))?;
    if data.ends_with(b"\n") {
        data.pop();
        if data.ends_with(b"\r") {
            data.pop();
        }
    }
    if data.is_empty() {
        return Err(invalid(
            "auth.jwt.secret_file",
            format!("{}: the file is empty", path.display()),
        ));
    }
    Ok(Some(data))
}

/// The algorithms allowed: `algorithms` when set (each must be one Herald verifies and that
/// some key can serve), else those of the configured keys (and RS256, ES256 and EdDSA for a
/// JWKS URL).
fn allowed(cfg: &JwtConfig, fixed: &[Key], remote: bool) -> Result<Vec<Alg>, JwtError> {
    let served =
        |alg: Alg| fixed.iter().any(|k| k.serves(alg)) || (remote && !alg.name().starts_with("HS"));
    if cfg.algorithms.is_empty() {
        return Ok(Alg::ALL.into_iter().filter(|&a| served(a)).collect());
    }
    let mut allowed = Vec::new();
    for name in &cfg.algorithms {
        let alg = Alg::from_setting(name).ok_or_else(|| {
            invalid(
                "auth.jwt.algorithms",
                format!(
                    "{name:?} is not one of {}",
                    Alg::ALL.map(Alg::name).join(", ")
                ),
            )
        })?;
        if !served(alg) {
            return Err(invalid(
                "auth.jwt.algorithms",
                format!("{} is allowed but no configured key is for it", alg.name()),
            ));
        }
        if !allowed.contains(&alg) {
            allowed.push(alg);
        }
    }
    Ok(allowed)
}
