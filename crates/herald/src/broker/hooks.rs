//! The hook seam: the points where identity, authorization, quotas, observers and other
//! nodes plug into the broker, without threading themselves through the connection code.
//!
//! | point | called from | on a refusal |
//! |---|---|---|
//! | [`Hook::authenticate`] | CONNECT, once checked, before the session is attached (`session::connect::authenticate`, awaited by the connection) | CONNACK with the code (v5), its 3.1.1 return code |
//! | [`Hook::admit_connection`] | CONNECT, once authenticated | CONNACK with the code |
//! | [`Hook::authorize_subscribe`], [`Hook::admit_subscription`] | each filter of a SUBSCRIBE (`session::inbound`) | that filter's SUBACK code |
//! | [`Hook::authorize_publish`] (cached per connection by topic), [`Hook::admit_message`] | each PUBLISH, before routing (`session::inbound`) | v5 PUBACK/PUBREC with the code; 3.1.1: a denial (0x87) is acknowledged and dropped or closes (`acl.v3_publish_denied`), a quota closes |
//! | [`Hook::authorize_read`] | each retained message delivered (`session::outbound`) | not delivered |
//! | [`Hook::observe`] | once per publication, after routing (`Broker::publish_with`) | — |
//! | `Broker::inject` | a message from elsewhere: the HTTP API today, other nodes next | the caller's answer (429, ...) |
//!
//! Today's behaviour is the default: no hook is installed, everything is allowed, routing is
//! local, and each point costs one branch on an `Option` (no dynamic call). A hook is
//! called once per packet or publication, never once per delivery: a fan-out to 10,000
//! subscribers calls `observe` once.

use std::any::Any;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use mqtt_codec::{ByteString, ReasonCode};

use super::message::Message;
use super::router::Routed;
use crate::config::ListenerKind;

/// What a CONNECT presents to be authenticated.
#[derive(Debug)]
pub struct Credentials<'a> {
    /// The client identifier (assigned by Herald if the client sent none).
    pub client_id: &'a str,
    /// CONNECT's username.
    pub username: Option<&'a str>,
    /// CONNECT's password.
    pub password: Option<&'a [u8]>,
    /// The name of the client's TLS certificate, when `tls.username_from` takes one.
    pub certificate: Option<&'a str>,
    /// The tenant the client's TLS certificate names, when `tls.tenant_from` takes one.
    pub certificate_tenant: Option<&'a str>,
    /// Where it came from.
    pub peer: SocketAddr,
    /// The listener it connected to.
    pub listener: ListenerKind,
}

impl Credentials<'_> {
    /// The username the client claims: its certificate's name when one is taken, else
    /// CONNECT's.
    pub fn claimed_username(&self) -> Option<&str> {
        self.certificate.or(self.username)
    }
}

/// A boxed future a hook returns (one allocation per CONNECT, none per message).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Who a connection is, once authenticated.
#[derive(Debug, Clone, Default)]
pub struct Identity {
    /// Its username: what authentication says, else the certificate's name when one is
    /// taken, else CONNECT's.
    pub username: Option<Arc<str>>,
    /// What the hook keeps for this connection (its rules, limits, caches), opaque to the
    /// broker and handed back at each hook point.
    pub state: Option<Arc<dyn Any + Send + Sync>>,
    /// The generation of the hook's rules this connection's subscriptions were last
    /// checked against ([`Hook::generation`]).
    pub checked: u64,
}

pub use crate::config::ClientLimits;

/// What authentication settled: who the client is, its tenant, its own limits.
#[derive(Debug, Clone, Default)]
pub struct Authenticated {
    /// Who it is (kept by its connection while a hook is installed).
    pub identity: Identity,
    /// Its tenant ("" for the default tenant).
    pub tenant: ByteString,
    /// Limits narrowing its tenant's for this client (a token's claim, the callout's answer).
    pub limits: Option<ClientLimits>,
}

impl Authenticated {
    /// A client when no hook is installed: the certificate's name or CONNECT's username, in
    /// the default tenant.
    pub fn plain(credentials: &Credentials<'_>) -> Authenticated {
        Authenticated {
            identity: Identity {
                username: credentials.claimed_username().map(Into::into),
                state: None,
                checked: 0,
            },
            tenant: ByteString::new(),
            limits: None,
        }
    }
}

/// A client acting: who, and as which client id.
#[derive(Debug, Clone, Copy)]
pub struct Actor<'a> {
    /// The session's client id.
    pub client_id: &'a str,
    /// Its tenant's name ("" for the default tenant).
    pub tenant: &'a str,
    /// Its identity.
    pub identity: &'a Identity,
}

/// One plug-in at the hook points. Every method has the default of a broker with no hook:
/// allow, admit, ignore.
pub trait Hook: Send + Sync + std::fmt::Debug + 'static {
    /// Authenticates a CONNECT: the identity it proves, or the reason code refusing it
    /// (0x86 bad user name or password, 0x87 not authorized, 0x88 server unavailable).
    fn authenticate<'a>(
        &'a self,
        credentials: &'a Credentials<'a>,
    ) -> BoxFuture<'a, Result<Authenticated, ReasonCode>> {
        Box::pin(std::future::ready(Ok(Authenticated::plain(credentials))))
    }

    /// Admits an authenticated connection against quotas (0x97 quota exceeded).
    fn admit_connection(&self, _actor: Actor<'_>) -> Result<(), ReasonCode> {
        Ok(())
    }

    /// Authorizes a subscription to `filter` (0x87 not authorized).
    fn authorize_subscribe(&self, _actor: Actor<'_>, _filter: &str) -> Result<(), ReasonCode> {
        Ok(())
    }

    /// Admits a new subscription against quotas (0x97 quota exceeded).
    fn admit_subscription(&self, _actor: Actor<'_>, _filter: &str) -> Result<(), ReasonCode> {
        Ok(())
    }

    /// Authorizes a publication to `topic` (0x87 not authorized). The answer may depend on
    /// the actor, the topic and the rules' generation only: a connection caches it.
    fn authorize_publish(&self, _actor: Actor<'_>, _topic: &str) -> Result<(), ReasonCode> {
        Ok(())
    }

    /// Told of each PUBLISH refused by `authorize_publish`, its decision cached or not (to
    /// count it).
    fn publish_denied(&self, _actor: Actor<'_>, _topic: &str) {}

    /// The generation of the rules `authorize_publish` decides by: a connection's cached
    /// decisions are dropped when it changes (a rules reload).
    fn generation(&self) -> u64 {
        0
    }

    /// Admits a message against quotas and rates (0x97 quota exceeded, 0x96 message rate
    /// too high).
    fn admit_message(&self, _actor: Actor<'_>, _message: &Message) -> Result<(), ReasonCode> {
        Ok(())
    }

    /// Whether a retained message on `topic` may be delivered to the client (its
    /// subscription was allowed, but rules change and a retained message outlives them).
    fn authorize_read(&self, _actor: Actor<'_>, _topic: &str) -> bool {
        true
    }

    /// Sees what routing one publication did locally (once per publication).
    fn observe(&self, _tenant: &str, _message: &Message, _routed: &Routed) {}

    /// Whether the hook looks at a connection's identity after CONNECT (its username in
    /// rules, say). When it does not, and the identity carries no state of the hook's, the
    /// connection does not keep it: an idle connection then pays nothing for it.
    fn needs_identity(&self) -> bool {
        true
    }

    /// The hook as `Any`, for the layers above that know its type (its metrics, its
    /// reload).
    fn as_any(&self) -> Option<&dyn Any> {
        None
    }
}

/// A connection's last few publish authorizations, for the rules' generation they were
/// made under (a handful of topics: a device publishes to few, and a miss only costs a
/// check).
#[derive(Debug, Default)]
pub struct Decisions {
    generation: u64,
    slots: [Option<(ByteString, Result<(), ReasonCode>)>; 4],
    next: usize,
}

impl Decisions {
    /// The decision for `topic`, if cached under `generation`.
    pub fn get(&self, generation: u64, topic: &str) -> Option<Result<(), ReasonCode>> {
        if generation != self.generation {
            return None;
        }
        self.slots
            .iter()
            .flatten()
            .find(|(t, _)| &**t == topic)
            .map(|(_, decided)| *decided)
    }

    /// Remembers the decision for `topic` under `generation` (replacing the oldest; all of
    /// them when the generation changed).
    pub fn put(&mut self, generation: u64, topic: &ByteString, decided: Result<(), ReasonCode>) {
        if generation != self.generation {
            *self = Decisions {
                generation,
                ..Decisions::default()
            };
        }
        self.slots[self.next] = Some((topic.clone(), decided));
        self.next = (self.next + 1) % self.slots.len();
    }
}

/// The hooks a broker runs: none by default (each point is then a branch, no call).
#[derive(Debug, Clone, Default)]
pub struct Hooks(Option<Arc<dyn Hook>>);

impl Hooks {
    /// Runs `hook` at every point.
    pub fn new(hook: Arc<dyn Hook>) -> Hooks {
        Hooks(Some(hook))
    }

    /// Whether a hook is installed.
    pub fn installed(&self) -> bool {
        self.0.is_some()
    }

    /// The installed hook as a `T`, when it is one.
    pub fn get<T: 'static>(&self) -> Option<&T> {
        self.0.as_ref()?.as_any()?.downcast_ref()
    }

    /// See [`Hook::authenticate`].
    pub async fn authenticate(
        &self,
        credentials: &Credentials<'_>,
    ) -> Result<Authenticated, ReasonCode> {
        match &self.0 {
            Some(h) => h.authenticate(credentials).await,
            None => Ok(Authenticated::plain(credentials)),
        }
    }

    /// Whether a subscription a resumed session holds may stay (its authorization only:
    /// quotas admitted it when it was made). Logged when it may not.
    pub fn may_keep(&self, actor: Actor<'_>, filter: &str) -> bool {
        let Some(h) = &self.0 else {
            return true;
        };
        let kept = h.authorize_subscribe(actor, filter).is_ok();
        if !kept {
            tracing::info!(
                client_id = actor.client_id,
                tenant = actor.tenant,
                filter,
                "subscription dropped on resume: the rules no longer allow it"
            );
        }
        kept
    }

    /// Whether a connection authenticated as `identity` must keep it (see
    /// [`Hook::needs_identity`]).
    pub fn keeps(&self, identity: &Identity) -> bool {
        self.0
            .as_ref()
            .is_some_and(|h| identity.state.is_some() || h.needs_identity())
    }

    /// The generation of the installed hook's rules (0 without a hook).
    pub fn generation(&self) -> u64 {
        self.0.as_ref().map_or(0, |h| h.generation())
    }

    /// See [`Hook::authorize_read`].
    pub fn read(&self, actor: Actor<'_>, topic: &str) -> bool {
        self.0
            .as_ref()
            .is_none_or(|h| h.authorize_read(actor, topic))
    }

    /// See [`Hook::admit_connection`].
    pub fn admit_connection(&self, actor: Actor<'_>) -> Result<(), ReasonCode> {
        self.0
            .as_ref()
            .map_or(Ok(()), |h| h.admit_connection(actor))
    }

    /// See [`Hook::authorize_subscribe`] and [`Hook::admit_subscription`]: both, in order.
    pub fn subscribe(&self, actor: Actor<'_>, filter: &str) -> Result<(), ReasonCode> {
        match &self.0 {
            Some(h) => h
                .authorize_subscribe(actor, filter)
                .and_then(|()| h.admit_subscription(actor, filter)),
            None => Ok(()),
        }
    }

    /// See [`Hook::authorize_publish`] and [`Hook::admit_message`]: both, in order; the
    /// authorization from `decisions` when it has it for this generation of the rules.
    pub fn publish(
        &self,
        actor: Actor<'_>,
        message: &Message,
        decisions: &mut Option<Box<Decisions>>,
    ) -> Result<(), ReasonCode> {
        let Some(h) = &self.0 else {
            return Ok(());
        };
        let generation = h.generation();
        let cached = decisions
            .as_deref()
            .and_then(|d| d.get(generation, &message.topic));
        let authorized = match cached {
            Some(decided) => decided,
            None => {
                let decided = h.authorize_publish(actor, &message.topic);
                decisions.get_or_insert_with(Default::default).put(
                    generation,
                    &message.topic,
                    decided,
                );
                decided
            }
        };
        if authorized.is_err() {
            h.publish_denied(actor, &message.topic);
        }
        authorized.and_then(|()| h.admit_message(actor, message))
    }

    /// See [`Hook::observe`].
    pub fn observe(&self, tenant: &str, message: &Message, routed: &Routed) {
        if let Some(h) = &self.0 {
            h.observe(tenant, message, routed);
        }
    }
}
