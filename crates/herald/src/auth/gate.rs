//! The gate: the authentication chain and the access rules, plugged into the broker's hook
//! seam as one [`Hook`].
//!
//! For each CONNECT the methods of `auth.order` are asked in turn; the first that
//! recognises the client decides. When none does, a client without credentials is admitted
//! as anonymous where its listener allows it (`auth.anonymous`), else refused with 0x87; a
//! client whose username or password no method knows is refused with 0x86. Every refusal is
//! counted by reason and logged (client id, username, peer, reason; never a password or a
//! token), at most ten lines a second.
//!
//! The client's tenant is what its method said, else what its certificate names
//! (`tls.tenant_from`), else what `auth.tenant_from` takes from its username or client id,
//! else the default tenant.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use mqtt_codec::{ByteString, ReasonCode};

use super::{Denial, DenyReason, Grant, Method, Verdict};
use crate::broker::hooks::{Actor, Authenticated, BoxFuture, Credentials, Hook, Identity};
use crate::config::{AuthConfig, ListenerKind, TenantRule};
use crate::logging::RateLimited;

/// Refusals logged a second at most (a storm of bad clients cannot flood the log).
static REFUSALS_LOGGED: RateLimited = RateLimited::new(10);

/// Longest tenant name accepted from a token, the callout or a prefix rule.
pub const MAX_TENANT_LEN: usize = 64;

/// What the gate counts.
#[derive(Debug, Default)]
pub struct GateStats {
    /// Clients admitted, by how: each method of the chain (`Method::name`), then anonymous.
    pub admitted: Vec<(&'static str, AtomicU64)>,
    /// Refusals, by reason (`DenyReason::ALL` order).
    pub refused: [AtomicU64; DenyReason::ALL.len()],
    /// PUBLISH packets the rules denied.
    pub denied_publish: AtomicU64,
    /// Subscription filters the rules denied.
    pub denied_subscribe: AtomicU64,
    /// Retained messages not delivered because the rules deny reading them.
    pub denied_retained: AtomicU64,
}

impl GateStats {
    /// How many refusals `reason` had.
    pub fn refused(&self, reason: DenyReason) -> u64 {
        DenyReason::ALL
            .iter()
            .position(|r| *r == reason)
            .map_or(0, |i| self.refused[i].load(Ordering::Relaxed))
    }

    fn count_refusal(&self, reason: DenyReason) {
        if let Some(i) = DenyReason::ALL.iter().position(|r| *r == reason) {
            self.refused[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    fn count_admitted(&self, how: &str) {
        if let Some((_, n)) = self.admitted.iter().find(|(name, _)| *name == how) {
            n.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The authentication chain and access rules of a node.
#[derive(Debug)]
pub struct Gate {
    chain: Vec<Arc<dyn Method>>,
    /// Listener kinds (mqtt, ws, tls, wss) admitting anonymous clients.
    anonymous: [bool; 4],
    tenant_from: TenantRule,
    separator: String,
    /// Counters.
    pub stats: GateStats,
}

fn kind_index(kind: ListenerKind) -> usize {
    match kind {
        ListenerKind::Mqtt => 0,
        ListenerKind::Ws => 1,
        ListenerKind::Tls => 2,
        ListenerKind::Wss => 3,
    }
}

impl Gate {
    /// A gate running `chain` in order, with the anonymous and tenant rules of `config`
    /// (`certificate`: whether client certificates name clients).
    pub fn new(config: &AuthConfig, chain: Vec<Arc<dyn Method>>, certificate: bool) -> Gate {
        let kinds = [
            ListenerKind::Mqtt,
            ListenerKind::Ws,
            ListenerKind::Tls,
            ListenerKind::Wss,
        ];
        let mut admitted: Vec<(&'static str, AtomicU64)> = chain
            .iter()
            .map(|m| (m.name(), AtomicU64::new(0)))
            .collect();
        admitted.push(("anonymous", AtomicU64::new(0)));
        Gate {
            anonymous: kinds.map(|k| config.anonymous_on(k.label(), certificate)),
            chain,
            tenant_from: config.tenant_from,
            separator: config.tenant_separator.clone(),
            stats: GateStats {
                admitted,
                ..GateStats::default()
            },
        }
    }

    /// Runs the chain for one CONNECT.
    pub async fn check(&self, credentials: &Credentials<'_>) -> Result<Authenticated, Denial> {
        let mut decided = None;
        for method in &self.chain {
            match method.check(credentials).await {
                Verdict::Pass => continue,
                Verdict::Allow(grant) => {
                    decided = Some((method.name(), grant));
                    break;
                }
                Verdict::Deny(denial) => return Err(self.refuse(credentials, denial)),
            }
        }
        let (how, grant) = match decided {
            Some(decided) => decided,
            None if credentials.username.is_some() || credentials.password.is_some() => {
                if self.chain.is_empty() && self.anonymous[kind_index(credentials.listener)] {
                    // No method to prove a username with: it is taken as given, as before
                    // authentication existed (loopback, or explicitly anonymous).
                    ("anonymous", Grant::default())
                } else {
                    let denial = Denial::new(DenyReason::UnknownUser);
                    return Err(self.refuse(credentials, denial));
                }
            }
            None if self.anonymous[kind_index(credentials.listener)] => {
                ("anonymous", Grant::default())
            }
            None => {
                let denial = Denial::new(DenyReason::NotAuthorized);
                return Err(self.refuse(credentials, denial));
            }
        };
        let from_certificate = || credentials.certificate_tenant.map(str::to_owned);
        let tenant = grant
            .tenant
            .clone()
            .or_else(from_certificate)
            .or_else(|| self.tenant_of(credentials));
        let tenant = match tenant {
            Some(t) if !valid_tenant(&t) => {
                let denial = Denial::new(DenyReason::UnknownTenant);
                return Err(self.refuse(credentials, denial));
            }
            t => t.unwrap_or_default(),
        };
        self.stats.count_admitted(how);
        let username = grant.username.clone().map(ByteString::from).or_else(|| {
            credentials
                .certificate
                .or(credentials.username)
                .map(Into::into)
        });
        Ok(Authenticated {
            identity: Identity {
                username,
                state: None,
            },
            tenant: tenant.into(),
        })
    }

    /// The tenant `auth.tenant_from` takes from the username or client id.
    fn tenant_of(&self, credentials: &Credentials<'_>) -> Option<String> {
        let source = match self.tenant_from {
            TenantRule::None => return None,
            TenantRule::UsernamePrefix => credentials.username?,
            TenantRule::ClientIdPrefix => credentials.client_id,
        };
        source
            .split_once(self.separator.as_str())
            .map(|(tenant, _)| tenant.to_string())
            .filter(|t| !t.is_empty())
    }

    /// Counts and logs a refusal; the denial, for the caller to answer with.
    fn refuse(&self, credentials: &Credentials<'_>, denial: Denial) -> Denial {
        self.stats.count_refusal(denial.reason);
        if let Some(suppressed) = REFUSALS_LOGGED.allow() {
            tracing::info!(
                client_id = credentials.client_id,
                username = credentials.username.unwrap_or(""),
                peer = %credentials.peer,
                listener = credentials.listener.label(),
                reason = denial.reason.label(),
                code = denial.code as u8,
                suppressed,
                "CONNECT refused"
            );
        }
        denial
    }
}

/// Whether `name` may name a tenant: 1 to 64 bytes without control characters (it
/// prefixes store keys, ends at a NUL there, and labels metrics).
pub fn valid_tenant(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_TENANT_LEN && !name.chars().any(char::is_control)
}

impl Hook for Gate {
    fn authenticate<'a>(
        &'a self,
        credentials: &'a Credentials<'a>,
    ) -> BoxFuture<'a, Result<Authenticated, ReasonCode>> {
        Box::pin(async move { self.check(credentials).await.map_err(|d| d.code) })
    }

    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }

    fn authorize_subscribe(&self, _actor: Actor<'_>, _filter: &str) -> Result<(), ReasonCode> {
        Ok(())
    }

    fn authorize_publish(&self, _actor: Actor<'_>, _topic: &str) -> Result<(), ReasonCode> {
        Ok(())
    }
}

/// The method that takes a verified client certificate's name as proof of who the client
/// is (`tls.username_from`; the handshake verified the certificate against
/// `tls.client_ca_file`).
#[derive(Debug, Default)]
pub struct CertificateMethod;

impl Method for CertificateMethod {
    fn name(&self) -> &'static str {
        "certificate"
    }

    fn check<'a>(&'a self, credentials: &'a Credentials<'a>) -> BoxFuture<'a, Verdict> {
        let verdict = match credentials.certificate {
            Some(name) => Verdict::Allow(Grant {
                username: Some(name.to_string()),
                ..Grant::default()
            }),
            None => Verdict::Pass,
        };
        Box::pin(std::future::ready(verdict))
    }
}
