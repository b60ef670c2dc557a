//! `[auth]` and `[acl]`: who may connect (a chain of authentication methods) and what each
//! client may publish and subscribe to.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{ConfigError, invalid};

/// One authentication method of the chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// `auth.password_file`: mosquitto's password file (and `herald passwd`'s).
    PasswordFile,
    /// `[auth.jwt]`: a JSON Web Token in the password (or the username).
    Jwt,
    /// `[auth.callout]`: an HTTP service asked for each CONNECT (answers cached).
    Callout,
    /// The client's TLS certificate (verified against `tls.client_ca_file`) proves who it is.
    Certificate,
}

impl Method {
    /// Its name in `auth.order`, logs and metrics.
    pub fn label(self) -> &'static str {
        match self {
            Method::PasswordFile => "password_file",
            Method::Jwt => "jwt",
            Method::Callout => "callout",
            Method::Certificate => "certificate",
        }
    }
}

/// Where a client's tenant comes from besides what a method says (a password-file field, a
/// JWT claim, the callout's answer, `tls.tenant_from`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TenantRule {
    /// Only from the method that authenticated the client; otherwise the default tenant.
    None,
    /// The username up to `auth.tenant_separator` (`acme/alice`: tenant `acme`).
    UsernamePrefix,
    /// The client id up to `auth.tenant_separator`.
    ClientIdPrefix,
}

/// `[auth]`: the authentication chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// The methods tried for each CONNECT, in order. The first that recognises the client
    /// decides (accepts or refuses); one that does not (no such user, no token) passes it to
    /// the next. Empty: every configured method in the order password_file, jwt, callout,
    /// certificate.
    pub order: Vec<Method>,
    /// Listeners (`mqtt`, `ws`, `tls`, `wss`) that admit a client no method recognises, as
    /// anonymous. Unset: every listener while no method is configured, none once one is.
    pub anonymous: Option<Vec<String>>,
    /// mosquitto's password file (`user:hash` lines; Herald's own may add `:tenant`).
    pub password_file: PathBuf,
    /// Seconds between checks of the password file for changes (0: only SIGHUP reloads it).
    pub password_file_watch_secs: u64,
    /// Where a tenant comes from when the method does not say.
    pub tenant_from: TenantRule,
    /// What ends the tenant in a username or client id (`tenant_from`).
    pub tenant_separator: String,
    /// JSON Web Tokens.
    pub jwt: JwtConfig,
    /// The HTTP auth callout.
    pub callout: CalloutConfig,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            order: Vec::new(),
            anonymous: None,
            password_file: PathBuf::new(),
            password_file_watch_secs: 2,
            tenant_from: TenantRule::None,
            tenant_separator: "/".into(),
            jwt: JwtConfig::default(),
            callout: CalloutConfig::default(),
        }
    }
}

/// Where the token travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenIn {
    /// CONNECT's password.
    Password,
    /// CONNECT's username, after `auth.jwt.username_prefix`.
    Username,
}

/// `[auth.jwt]`: tokens signed with HS256/384/512, RS256, ES256 or EdDSA.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JwtConfig {
    /// Where the token is: `password` or `username`.
    pub token_in: TokenIn,
    /// With `token_in = "username"`, the prefix that marks a username as a token
    /// (`jwt:eyJ...`); empty: every username is one.
    pub username_prefix: String,
    /// The HMAC secret of HS256/384/512 tokens (prefer `secret_file`).
    pub secret: String,
    /// A file holding the HMAC secret (its bytes, a trailing newline removed).
    pub secret_file: PathBuf,
    /// PEM files with RSA, EC (P-256) or Ed25519 public keys.
    pub public_key_files: Vec<PathBuf>,
    /// A JWKS file (`{"keys": [...]}`).
    pub jwks_file: PathBuf,
    /// A JWKS URL, fetched at start, every `jwks_refresh_secs`, and when a token names a
    /// key id it does not know (at most once per `jwks_min_refresh_secs`).
    pub jwks_url: String,
    /// Seconds between scheduled JWKS fetches.
    pub jwks_refresh_secs: u64,
    /// Least seconds between two JWKS fetches caused by unknown key ids.
    pub jwks_min_refresh_secs: u64,
    /// Algorithms accepted (`HS256`, `RS256`, `ES256`, `EdDSA`...); empty: those the
    /// configured keys are for.
    pub algorithms: Vec<String>,
    /// Seconds of clock skew allowed on `exp`, `nbf` and `iat`.
    pub leeway_secs: u64,
    /// A token must carry `exp`.
    pub require_exp: bool,
    /// Accepted audiences (`aud`); empty: not checked.
    pub audience: Vec<String>,
    /// Accepted issuers (`iss`); empty: not checked.
    pub issuer: Vec<String>,
    /// The claim naming the client's username (replacing CONNECT's).
    pub username_claim: String,
    /// The claim naming the client's tenant.
    pub tenant_claim: String,
    /// The claim carrying the client's ACL (`{"pub": [...], "sub": [...]}`), which replaces
    /// the ACL file's rules for that client.
    pub acl_claim: String,
    /// The claim carrying per-client limits.
    pub limits_claim: String,
}

impl Default for JwtConfig {
    fn default() -> Self {
        JwtConfig {
            token_in: TokenIn::Password,
            username_prefix: String::new(),
            secret: String::new(),
            secret_file: PathBuf::new(),
            public_key_files: Vec::new(),
            jwks_file: PathBuf::new(),
            jwks_url: String::new(),
            jwks_refresh_secs: 300,
            jwks_min_refresh_secs: 10,
            algorithms: Vec::new(),
            leeway_secs: 30,
            require_exp: true,
            audience: Vec::new(),
            issuer: Vec::new(),
            username_claim: "sub".into(),
            tenant_claim: "tenant".into(),
            acl_claim: "acl".into(),
            limits_claim: "limits".into(),
        }
    }
}

impl JwtConfig {
    /// Whether any key source is configured (the method takes part).
    pub fn configured(&self) -> bool {
        !self.secret.is_empty()
            || !self.secret_file.as_os_str().is_empty()
            || !self.public_key_files.is_empty()
            || !self.jwks_file.as_os_str().is_empty()
            || !self.jwks_url.is_empty()
    }
}

/// `[auth.callout]`: an HTTP service that decides.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CalloutConfig {
    /// The URL each CONNECT is POSTed to ("" for none): `http://` or `https://`.
    pub url: String,
    /// Milliseconds to wait for the answer.
    pub timeout_ms: u64,
    /// A callout that times out or fails lets the client through (as anonymous: the next
    /// method, then `auth.anonymous`, decides) instead of refusing it with 0x88.
    pub fail_open: bool,
    /// Longest seconds an answer is cached, whatever its `Cache-Control: max-age` says
    /// (0: answers are not cached).
    pub cache_max_secs: u64,
    /// Seconds an answer without `Cache-Control: max-age` is cached (capped as above).
    pub cache_default_secs: u64,
    /// Most answers cached.
    pub cache_capacity: u64,
    /// An `Authorization` header value sent with each request ("" for none).
    pub authorization: String,
    /// Idle pooled connections kept to the service.
    pub pool_idle: usize,
    /// Answers are cached per client id too. Off (the default), one answer serves every
    /// client id presenting the same username, password and certificate on the same
    /// listener, so that a reconnect storm of one user's devices costs one request.
    pub cache_by_client_id: bool,
}

impl Default for CalloutConfig {
    fn default() -> Self {
        CalloutConfig {
            url: String::new(),
            timeout_ms: 2000,
            fail_open: false,
            cache_max_secs: 300,
            cache_default_secs: 0,
            cache_capacity: 100_000,
            authorization: String::new(),
            pool_idle: 32,
            cache_by_client_id: false,
        }
    }
}

/// What a 3.1/3.1.1 PUBLISH the ACL denies gets (3.1.1 has no reason code to refuse with).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum V3Denied {
    /// Acknowledged and dropped (counted), as mosquitto does.
    Drop,
    /// The connection is closed.
    Disconnect,
}

/// `[acl]`: what each client may publish and subscribe to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AclConfig {
    /// A rules file in mosquitto's `acl_file` format, with Herald's `%t` and `tenant`
    /// blocks ("" for none: without it, and without rules from a token or the callout,
    /// every client may do everything).
    pub file: PathBuf,
    /// Seconds between checks of the file for changes (0: only SIGHUP reloads it).
    pub watch_secs: u64,
    /// A denied 3.1/3.1.1 PUBLISH: `drop` (acknowledged, dropped, counted) or `disconnect`.
    pub v3_publish_denied: V3Denied,
}

impl Default for AclConfig {
    fn default() -> Self {
        AclConfig {
            file: PathBuf::new(),
            watch_secs: 2,
            v3_publish_denied: V3Denied::Drop,
        }
    }
}

impl AuthConfig {
    /// The methods that take part, in the order they are tried.
    pub fn chain(&self, certificate: bool) -> Vec<Method> {
        let configured = |m: &Method| match m {
            Method::PasswordFile => !self.password_file.as_os_str().is_empty(),
            Method::Jwt => self.jwt.configured(),
            Method::Callout => !self.callout.url.is_empty(),
            Method::Certificate => certificate,
        };
        if self.order.is_empty() {
            [
                Method::PasswordFile,
                Method::Jwt,
                Method::Callout,
                Method::Certificate,
            ]
            .into_iter()
            .filter(configured)
            .collect()
        } else {
            self.order.clone()
        }
    }

    /// Checks the chain and each method's settings.
    pub(super) fn validate(&self, certificate: bool) -> Result<(), ConfigError> {
        let configured = self.chain(certificate);
        for m in &self.order {
            let ok = match m {
                Method::PasswordFile => !self.password_file.as_os_str().is_empty(),
                Method::Jwt => self.jwt.configured(),
                Method::Callout => !self.callout.url.is_empty(),
                Method::Certificate => certificate,
            };
            if !ok {
                return Err(invalid(
                    "auth.order",
                    format!(
                        "{} is listed but not configured ({})",
                        m.label(),
                        match m {
                            Method::PasswordFile => "set auth.password_file",
                            Method::Jwt =>
                                "set a key: auth.jwt.secret, secret_file, \
                                             public_key_files, jwks_file or jwks_url",
                            Method::Callout => "set auth.callout.url",
                            Method::Certificate =>
                                "set tls.username_from to cn or san \
                                                    and tls.client_auth",
                        }
                    ),
                ));
            }
        }
        if configured
            .iter()
            .enumerate()
            .any(|(i, m)| configured[..i].contains(m))
        {
            return Err(invalid("auth.order", "a method is listed twice"));
        }
        if let Some(kinds) = &self.anonymous
            && let Some(bad) = kinds
                .iter()
                .find(|k| !["mqtt", "ws", "tls", "wss"].contains(&k.as_str()))
        {
            return Err(invalid(
                "auth.anonymous",
                format!("{bad:?} is not a listener kind (mqtt, ws, tls or wss)"),
            ));
        }
        if self.tenant_from != TenantRule::None && self.tenant_separator.is_empty() {
            return Err(invalid(
                "auth.tenant_separator",
                "must not be empty when auth.tenant_from takes a prefix",
            ));
        }
        let web = |u: &str| u.starts_with("http://") || u.starts_with("https://");
        let c = &self.callout;
        if !c.url.is_empty() {
            if !web(&c.url) {
                return Err(invalid(
                    "auth.callout.url",
                    format!("{:?} is not an http:// or https:// URL", c.url),
                ));
            }
            if c.timeout_ms == 0 {
                return Err(invalid("auth.callout.timeout_ms", "must be at least 1"));
            }
        }
        let j = &self.jwt;
        if !j.jwks_url.is_empty() && !web(&j.jwks_url) {
            return Err(invalid(
                "auth.jwt.jwks_url",
                format!("{:?} is not an http:// or https:// URL", j.jwks_url),
            ));
        }
        if !j.jwks_url.is_empty() && j.jwks_refresh_secs == 0 {
            return Err(invalid("auth.jwt.jwks_refresh_secs", "must be at least 1"));
        }
        Ok(())
    }

    /// Whether a listener of this kind admits anonymous clients.
    pub fn anonymous_on(&self, kind: &str, certificate: bool) -> bool {
        match &self.anonymous {
            Some(kinds) => kinds.iter().any(|k| k == kind),
            None => self.chain(certificate).is_empty(),
        }
    }
}
