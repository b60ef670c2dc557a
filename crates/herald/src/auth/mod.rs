//! Identity: who a client is (a chain of authentication methods), what it may do (ACLs),
//! and which tenant it belongs to.
//!
//! Each method implements [`Method`]: given a CONNECT's [`Credentials`], it says
//! [`Verdict::Allow`] (with what it learnt: username, tenant, ACL rules, limits),
//! [`Verdict::Deny`] (with a reason code), or [`Verdict::Pass`] when the client is not one of
//! its own (no such user in the file, no token in the password) so that the next method in
//! `auth.order` decides. A method never sees another's state; the chain (`gate`) runs them
//! in order and plugs the result into the broker's hook seam (`broker::hooks`).
//!
//! - `passwd`: mosquitto's password file (`$7$` PBKDF2-SHA512 and `$6$` SHA-512 as
//!   mosquitto_passwd writes them, argon2id as `herald passwd` writes them).
//! - `acl`: mosquitto's `acl_file` format (plus `%t` and `tenant` blocks), and the rules a
//!   token or the callout carries ([`AclClaim`]).
//! - `jwt`: JSON Web Tokens, keys from PEM files, a JWKS file or a JWKS URL.
//! - `callout`: an HTTP service, its answers cached and concurrent look-ups coalesced.

pub mod acl;
pub mod callout;
pub mod gate;
pub mod http;
pub mod jwt;
pub mod passwd;

use mqtt_codec::ReasonCode;
use serde::{Deserialize, Serialize};

pub use crate::broker::hooks::{BoxFuture, ClientLimits, Credentials};
pub use gate::Gate;

use std::sync::Arc;

use crate::config::{AuthMethod, Config, UsernameFrom};

/// Why the authentication chain cannot be built (a file that does not load, a bad key).
/// The message names the config key.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {message}")]
pub struct AuthError {
    /// The config key at fault.
    pub key: &'static str,
    /// What is wrong.
    pub message: String,
}

/// The gate `config` asks for: `None` when it configures no authentication method, no
/// tenant rule and no ACL (the broker then runs without hooks, as fast as before).
pub fn build(config: &Config) -> Result<Option<Arc<Gate>>, AuthError> {
    let certificate = config.tls.username_from != UsernameFrom::Connect;
    let auth = &config.auth;
    let order = auth.chain(certificate);
    let wanted = !order.is_empty()
        || auth.anonymous.is_some()
        || auth.tenant_from != crate::config::TenantRule::None
        || !config.acl.file.as_os_str().is_empty();
    if !wanted {
        return Ok(None);
    }
    let mut chain: Vec<Arc<dyn Method>> = Vec::with_capacity(order.len());
    let mut passwords = None;
    for method in order {
        chain.push(match method {
            AuthMethod::Certificate => Arc::new(gate::CertificateMethod),
            AuthMethod::PasswordFile => {
                let file =
                    passwd::PasswordFile::load(&auth.password_file).map_err(|e| AuthError {
                        key: "auth.password_file",
                        message: e.to_string(),
                    })?;
                let file = Arc::new(file);
                passwords = Some(file.clone());
                file
            }
            AuthMethod::Jwt => {
                let jwt = jwt::Jwt::new(&auth.jwt).map_err(|e| match e {
                    jwt::JwtError::Config { key, message } => AuthError { key, message },
                    fetch => AuthError {
                        key: "auth.jwt.jwks_url",
                        message: fetch.to_string(),
                    },
                })?;
                // Fetches the JWKS URL now and on its schedule; ends when the method goes.
                drop(jwt.start());
                jwt
            }
            AuthMethod::Callout => callout::Callout::new(&auth.callout).map_err(|e| AuthError {
                key: e.key,
                message: e.message,
            })?,
        });
    }
    let acl = if config.acl.file.as_os_str().is_empty() {
        None
    } else {
        Some(acl::Acl::load(&config.acl.file).map_err(|e| AuthError {
            key: "acl.file",
            message: e.to_string(),
        })?)
    };
    let gate = Gate::new(auth, chain, certificate)
        .with_passwords(passwords)
        .with_acl(&config.acl, acl);
    Ok(Some(Arc::new(gate)))
}

/// One authentication method.
pub trait Method: Send + Sync + std::fmt::Debug + 'static {
    /// Its name in `auth.order`, logs and metrics.
    fn name(&self) -> &'static str;

    /// What it makes of a CONNECT's credentials.
    fn check<'a>(&'a self, credentials: &'a Credentials<'a>) -> BoxFuture<'a, Verdict>;
}

/// What one method makes of a CONNECT.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// The client proved who it is.
    Allow(Grant),
    /// The client is refused.
    Deny(Denial),
    /// Not this method's client (no such user, no token): the next method decides.
    Pass,
}

/// What a method that accepted a client learnt about it. Each field it leaves `None` is
/// taken from elsewhere (CONNECT's username, `auth.tenant_from`, the ACL file, the
/// tenant's limits).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Grant {
    /// The username the client acts as (a token's claim, the callout's answer).
    pub username: Option<String>,
    /// The tenant it belongs to.
    pub tenant: Option<String>,
    /// Rules replacing the ACL file's for this client.
    pub acl: Option<AclClaim>,
    /// Limits narrowing its tenant's for this client.
    pub limits: Option<ClientLimits>,
}

/// A refusal: the reason code the client gets and why, for the counters and the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Denial {
    /// The CONNACK reason code: 0x86 bad user name or password, 0x87 not authorized, 0x8C
    /// bad authentication method, 0x88 server unavailable (a callout that failed).
    pub code: ReasonCode,
    /// Why, as a metric label and in the log (never a secret).
    pub reason: DenyReason,
}

impl Denial {
    /// A refusal with the code `reason` implies.
    pub fn new(reason: DenyReason) -> Denial {
        Denial {
            code: reason.code(),
            reason,
        }
    }
}

/// Why a client was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DenyReason {
    /// A known user with a wrong password.
    BadPassword,
    /// A token that is malformed, badly signed, or signed by an unknown key.
    BadToken,
    /// A token past its `exp`, before its `nbf`, or issued in the future.
    TokenExpired,
    /// A token for another audience or from another issuer, or without a required claim.
    TokenClaims,
    /// The callout said no.
    CalloutDenied,
    /// The callout timed out, failed, or answered something that is not an answer.
    CalloutUnavailable,
    /// No method recognised the client, and its listener admits no anonymous clients.
    NotAuthorized,
    /// A username or password was given that no method knows.
    UnknownUser,
    /// The client asked for enhanced authentication (`authentication_method`), which
    /// Herald does not offer.
    AuthMethod,
    /// The tenant it belongs to does not exist (`tenants.require_known`).
    UnknownTenant,
}

impl DenyReason {
    /// The label in `herald_auth_refused_total{reason}`.
    pub fn label(self) -> &'static str {
        match self {
            DenyReason::BadPassword => "bad_password",
            DenyReason::BadToken => "bad_token",
            DenyReason::TokenExpired => "token_expired",
            DenyReason::TokenClaims => "token_claims",
            DenyReason::CalloutDenied => "callout_denied",
            DenyReason::CalloutUnavailable => "callout_unavailable",
            DenyReason::NotAuthorized => "not_authorized",
            DenyReason::UnknownUser => "unknown_user",
            DenyReason::AuthMethod => "auth_method",
            DenyReason::UnknownTenant => "unknown_tenant",
        }
    }

    /// Every reason, for the counters.
    pub const ALL: [DenyReason; 10] = [
        DenyReason::BadPassword,
        DenyReason::BadToken,
        DenyReason::TokenExpired,
        DenyReason::TokenClaims,
        DenyReason::CalloutDenied,
        DenyReason::CalloutUnavailable,
        DenyReason::NotAuthorized,
        DenyReason::UnknownUser,
        DenyReason::AuthMethod,
        DenyReason::UnknownTenant,
    ];

    /// The v5 CONNACK reason code it gives (a 3.1.1 client gets the matching return code:
    /// 4 for 0x86, 5 for 0x87 and 0x8C, 3 for 0x88).
    pub fn code(self) -> ReasonCode {
        match self {
            DenyReason::BadPassword
            | DenyReason::BadToken
            | DenyReason::TokenExpired
            | DenyReason::TokenClaims
            | DenyReason::UnknownUser => ReasonCode::BadUserNameOrPassword,
            DenyReason::CalloutDenied | DenyReason::NotAuthorized | DenyReason::UnknownTenant => {
                ReasonCode::NotAuthorized
            }
            DenyReason::CalloutUnavailable => ReasonCode::ServerUnavailable,
            DenyReason::AuthMethod => ReasonCode::BadAuthenticationMethod,
        }
    }
}

/// ACL rules carried by a token's claim or the callout's answer: topic filters the client
/// may publish to and subscribe to (`%u`, `%c` and `%t` are replaced as in the ACL file).
/// They replace the ACL file's rules for that client.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AclClaim {
    /// Filters of the topics it may publish to.
    #[serde(default, alias = "pub")]
    pub publish: Vec<String>,
    /// Filters it may subscribe to (and so receive from).
    #[serde(default, alias = "sub")]
    pub subscribe: Vec<String>,
    /// Filters denied both ways, whatever the lists above allow.
    #[serde(default)]
    pub deny: Vec<String>,
}
