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

use arc_swap::ArcSwapOption;
use mqtt_codec::ReasonCode;

use super::acl::{Acl, Rules, Who};
use super::passwd::PasswordFile;
use super::{Denial, DenyReason, Grant, Method, Verdict};
use crate::broker::hooks::{Actor, Authenticated, BoxFuture, Credentials, Hook, Identity};
use crate::config::{AclConfig, AuthConfig, ListenerKind, TenantRule, valid_tenant};
use crate::logging::RateLimited;

/// Refusals logged a second at most (a storm of bad clients cannot flood the log).
static REFUSALS_LOGGED: RateLimited = RateLimited::new(10);

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
    /// The password file of the chain, for reloads.
    passwords: Option<Arc<PasswordFile>>,
    /// The ACL file's rules (`acl.file`), replaced whole by a reload.
    acl: ArcSwapOption<Acl>,
    /// Where they come from.
    acl_config: AclConfig,
    /// The ACL file's size and modification time when last read (for the watch).
    acl_stamp: std::sync::Mutex<Option<(u64, std::time::SystemTime)>>,
    /// Bumped by each rules reload: connections drop their cached decisions.
    generation: AtomicU64,
    /// Counters.
    pub stats: GateStats,
}

/// What the gate keeps for one connection: the rules its token or the callout gave it (a
/// client the ACL file governs keeps nothing).
#[derive(Debug)]
pub struct ClientState {
    /// Rules replacing the ACL file's for this client.
    pub rules: Rules,
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
            passwords: None,
            acl: ArcSwapOption::empty(),
            acl_config: AclConfig::default(),
            acl_stamp: std::sync::Mutex::new(None),
            generation: AtomicU64::new(0),
            stats: GateStats {
                admitted,
                ..GateStats::default()
            },
        }
    }

    /// With the chain's password file (reloaded with the gate's rules).
    pub fn with_passwords(mut self, passwords: Option<Arc<PasswordFile>>) -> Gate {
        self.passwords = passwords;
        self
    }

    /// With the ACL file's rules `acl`, read from `config.file`.
    pub fn with_acl(mut self, config: &AclConfig, acl: Option<Acl>) -> Gate {
        if let Some(acl) = &acl {
            for warning in acl.warnings() {
                tracing::warn!(file = %config.file.display(), "{warning}");
            }
        }
        self.acl = ArcSwapOption::from(acl.map(Arc::new));
        self.acl_config = config.clone();
        self.acl_stamp = std::sync::Mutex::new(stamp(&config.file));
        self
    }

    /// The password file and the ACL file read again (SIGHUP, a reload through the API, or
    /// the watches finding them changed). A file that does not load is refused and its
    /// previous contents stay in force; the error names it.
    pub fn reload_files(&self) -> Result<(), String> {
        let mut errors = Vec::new();
        if let Some(p) = &self.passwords
            && let Err(e) = p.reload()
        {
            errors.push(format!("auth.password_file: {e}"));
        }
        if let Err(e) = self.reload_acl(true) {
            errors.push(e);
        }
        match errors.is_empty() {
            true => Ok(()),
            false => Err(errors.join("; ")),
        }
    }

    /// Reads the ACL file again (`always`, or if it changed since it was last read: a broken
    /// file is then reported once per change); connections drop their cached decisions.
    fn reload_acl(&self, always: bool) -> Result<(), String> {
        let path = &self.acl_config.file;
        if path.as_os_str().is_empty() {
            return Ok(());
        }
        let now = stamp(path);
        {
            let seen = self.acl_stamp.lock().unwrap_or_else(|e| e.into_inner());
            if !always && now.is_some() && *seen == now {
                return Ok(());
            }
        }
        match Acl::load(path) {
            Ok(acl) => {
                for warning in acl.warnings() {
                    tracing::warn!(file = %path.display(), "{warning}");
                }
                tracing::info!(file = %path.display(), rules = acl.len(), "ACL file loaded");
                self.acl.store(Some(Arc::new(acl)));
                *self.acl_stamp.lock().unwrap_or_else(|e| e.into_inner()) = now;
                self.generation.fetch_add(1, Ordering::Release);
                Ok(())
            }
            Err(e) => {
                // Reported once per change of the file, not at every look.
                *self.acl_stamp.lock().unwrap_or_else(|e| e.into_inner()) = now;
                Err(format!("acl.file: {e} (the previous rules stay in force)"))
            }
        }
    }

    /// Watches the password file and the ACL file for changes, each every
    /// `auth.password_file_watch_secs` / `acl.watch_secs` (0: only reloads). The tasks end
    /// when the gate goes.
    pub fn watch(self: &Arc<Self>, password_every: std::time::Duration) {
        if let Some(p) = &self.passwords {
            drop(p.watch(password_every));
        }
        let every = std::time::Duration::from_secs(self.acl_config.watch_secs);
        if self.acl_config.file.as_os_str().is_empty() || every.is_zero() {
            return;
        }
        let gate = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(gate) = gate.upgrade() else { return };
                if let Err(e) = gate.reload_acl(false) {
                    tracing::warn!("{e}");
                }
            }
        });
    }

    /// The rules that govern `actor`: its own (token, callout), else the ACL file's, else
    /// none (everything allowed).
    fn rules<'a>(&self, actor: &Actor<'a>) -> Governed<'a> {
        if let Some(state) = actor
            .identity
            .state
            .as_ref()
            .and_then(|s| s.downcast_ref::<ClientState>())
        {
            // The state lives in the identity the actor borrows.
            return Governed::Own(&state.rules);
        }
        match self.acl.load_full() {
            Some(acl) => Governed::File(acl),
            None => Governed::Open,
        }
    }

    fn who<'a>(actor: &Actor<'a>) -> Who<'a> {
        Who {
            username: actor.identity.username.as_deref(),
            client_id: actor.client_id,
            tenant: actor.tenant,
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
        let rules = match &grant.acl {
            Some(claim) => match Rules::from_claim(claim) {
                Ok(rules) => Some(rules),
                Err(e) => {
                    tracing::info!(client_id = credentials.client_id, error = %e, "rules refused");
                    let denial = Denial::new(DenyReason::TokenClaims);
                    return Err(self.refuse(credentials, denial));
                }
            },
            None => None,
        };
        self.stats.count_admitted(how);
        let username = grant
            .username
            .map(Arc::from)
            .or_else(|| credentials.claimed_username().map(Arc::from));
        let state = rules
            .map(|rules| Arc::new(ClientState { rules }) as Arc<dyn std::any::Any + Send + Sync>);
        Ok(Authenticated {
            identity: Identity {
                username,
                state,
                checked: self.generation.load(Ordering::Acquire),
            },
            tenant: tenant.into(),
            limits: grant.limits,
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

    /// Only rules look at a connection's identity after CONNECT: the ACL file's (rules of
    /// a token or the callout travel in the identity's state, which is kept anyway).
    fn needs_identity(&self) -> bool {
        !self.acl_config.file.as_os_str().is_empty()
    }

    fn authorize_subscribe(&self, actor: Actor<'_>, filter: &str) -> Result<(), ReasonCode> {
        // A shared subscription is judged by the filter it shares.
        let inner = match mqtt_codec::topic::parse_shared(filter) {
            Ok(Some(shared)) => shared.filter,
            _ => filter,
        };
        let who = Gate::who(&actor);
        let allowed = match self.rules(&actor) {
            Governed::Open => true,
            Governed::Own(rules) => rules.may_subscribe(who, inner),
            Governed::File(acl) => acl.may_subscribe(who, inner),
        };
        if allowed {
            Ok(())
        } else {
            self.stats.denied_subscribe.fetch_add(1, Ordering::Relaxed);
            Err(ReasonCode::NotAuthorized)
        }
    }

    fn authorize_publish(&self, actor: Actor<'_>, topic: &str) -> Result<(), ReasonCode> {
        let who = Gate::who(&actor);
        let allowed = match self.rules(&actor) {
            Governed::Open => true,
            Governed::Own(rules) => rules.may_publish(who, topic),
            Governed::File(acl) => acl.may_publish(who, topic),
        };
        if allowed {
            Ok(())
        } else {
            // Counted at each PUBLISH refused (`publish_denied`): the decision is cached.
            Err(ReasonCode::NotAuthorized)
        }
    }

    fn publish_denied(&self, _actor: Actor<'_>, _topic: &str) {
        self.stats.denied_publish.fetch_add(1, Ordering::Relaxed);
    }

    fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn authorize_read(&self, actor: Actor<'_>, topic: &str) -> bool {
        let who = Gate::who(&actor);
        let allowed = match self.rules(&actor) {
            Governed::Open => true,
            Governed::Own(rules) => rules.may_read(who, topic),
            Governed::File(acl) => acl.may_read(who, topic),
        };
        if !allowed {
            self.stats.denied_retained.fetch_add(1, Ordering::Relaxed);
        }
        allowed
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

/// Which rules govern a client.
enum Governed<'a> {
    /// No rules at all: everything is allowed.
    Open,
    /// Its own, from its token or the callout.
    Own(&'a Rules),
    /// The ACL file's.
    File(Arc<Acl>),
}

/// A file's size and modification time, to see that it changed.
fn stamp(path: &std::path::Path) -> Option<(u64, std::time::SystemTime)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.len(), meta.modified().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn credentials<'a>(
        client_id: &'a str,
        username: Option<&'a str>,
        listener: ListenerKind,
    ) -> Credentials<'a> {
        Credentials {
            client_id,
            username,
            password: None,
            certificate: None,
            certificate_tenant: None,
            peer: "127.0.0.1:9".parse().expect("an address"),
            listener,
        }
    }

    /// A gate with the certificate method as its chain, and `rules` as its ACL file.
    fn gate(config: &Config, rules: &str) -> Gate {
        let acl = Acl::parse(rules).expect("rules");
        let chain: Vec<Arc<dyn Method>> = vec![Arc::new(CertificateMethod)];
        Gate::new(&config.auth, chain, true).with_acl(&config.acl, Some(acl))
    }

    #[tokio::test]
    async fn tenant_rules_and_anonymous_listeners() {
        let mut config = Config::default();
        config.auth.tenant_from = TenantRule::ClientIdPrefix;
        config.auth.anonymous = Some(vec!["ws".into()]);
        let g = gate(&config, "");
        let on_ws = credentials("acme/dev-1", None, ListenerKind::Ws);
        let admitted = g.check(&on_ws).await.expect("anonymous on ws");
        assert_eq!(&*admitted.tenant, "acme");
        let on_tcp = credentials("acme/dev-1", None, ListenerKind::Mqtt);
        let refused = g.check(&on_tcp).await.err().map(|d| d.reason);
        assert_eq!(refused, Some(DenyReason::NotAuthorized));
        // A username no method can prove is refused, even where anonymous clients are
        // admitted (with no method at all, usernames are taken as given).
        let claimed = credentials("acme/dev-1", Some("root"), ListenerKind::Ws);
        let refused = g.check(&claimed).await.err().map(|d| d.reason);
        assert_eq!(refused, Some(DenyReason::UnknownUser));
        // A tenant that is not a valid name refuses the client.
        let long = format!("{}/x", "t".repeat(crate::config::MAX_TENANT_LEN + 1));
        let refused = g.check(&credentials(&long, None, ListenerKind::Ws)).await;
        assert_eq!(
            refused.err().map(|d| d.reason),
            Some(DenyReason::UnknownTenant)
        );
        assert_eq!(g.stats.refused(DenyReason::NotAuthorized), 1);
    }

    #[test]
    fn retained_messages_are_read_checked_and_counted() {
        let g = gate(&Config::default(), "pattern read %t/news/#\n");
        let identity = Identity::default();
        let actor = |tenant| Actor {
            client_id: "c",
            tenant,
            identity: &identity,
        };
        assert!(g.authorize_read(actor("acme"), "acme/news/1"));
        assert!(!g.authorize_read(actor("acme"), "globex/news/1"));
        assert!(
            !g.authorize_read(actor(""), "/news/1"),
            "%t never matches the default"
        );
        assert_eq!(g.stats.denied_retained.load(Ordering::Relaxed), 2);
        // Own rules replace the file's.
        let claim = super::super::AclClaim {
            subscribe: vec!["own/#".into()],
            ..Default::default()
        };
        let own = Identity {
            username: None,
            checked: 0,
            state: Some(Arc::new(ClientState {
                rules: Rules::from_claim(&claim).expect("rules"),
            })),
        };
        let actor = Actor {
            client_id: "c",
            tenant: "acme",
            identity: &own,
        };
        assert!(g.authorize_read(actor, "own/1"));
        assert!(!g.authorize_read(actor, "acme/news/1"));
        assert_eq!(g.authorize_subscribe(actor, "$share/g/own/#"), Ok(()));
        assert_eq!(
            g.authorize_subscribe(actor, "#"),
            Err(ReasonCode::NotAuthorized)
        );
    }
}
