//! A verified token's claims: the registered ones checked (`exp`, `nbf`, `iat`, `aud`, `iss`),
//! and the ones naming the client's username, tenant, ACL and limits read into a [`Grant`].

use serde_json::{Map, Value};

use crate::auth::{AclClaim, ClientLimits, DenyReason, Grant};
use crate::config::JwtConfig;

/// What the claims must say, and where the grant's parts are.
#[derive(Debug, Clone)]
pub(super) struct Rules {
    /// Seconds of clock skew allowed on `exp`, `nbf` and `iat`.
    leeway: f64,
    /// `exp` must be present.
    require_exp: bool,
    /// Accepted audiences (empty: not checked).
    audience: Vec<String>,
    /// Accepted issuers (empty: not checked).
    issuer: Vec<String>,
    /// The claims read into the grant ("" for none).
    username_claim: String,
    tenant_claim: String,
    acl_claim: String,
    limits_claim: String,
}

impl Rules {
    pub(super) fn new(cfg: &JwtConfig) -> Rules {
        Rules {
            // Seconds of skew, far below f64's exact integer range.
            leeway: cfg.leeway_secs.min(u64::from(u32::MAX)) as f64,
            require_exp: cfg.require_exp,
            audience: cfg.audience.clone(),
            issuer: cfg.issuer.clone(),
            username_claim: cfg.username_claim.clone(),
            tenant_claim: cfg.tenant_claim.clone(),
            acl_claim: cfg.acl_claim.clone(),
            limits_claim: cfg.limits_claim.clone(),
        }
    }

    /// Checks a verified token's claims at `now` (seconds since the epoch) and reads the
    /// grant, or says why the token is refused.
    pub(super) fn grant(&self, claims: &Map<String, Value>, now: f64) -> Result<Grant, DenyReason> {
        self.check_times(claims, now)?;
        if !self.audience.is_empty() {
            let fits = |a: &Value| {
                a.as_str()
                    .is_some_and(|a| self.audience.iter().any(|x| x == a))
            };
            let ok = match claims.get("aud") {
                Some(Value::String(_)) => claims.get("aud").is_some_and(fits),
                Some(Value::Array(list)) => list.iter().any(fits),
                _ => false,
            };
            if !ok {
                return Err(DenyReason::TokenClaims);
            }
        }
        if !self.issuer.is_empty() {
            let ok = claims
                .get("iss")
                .and_then(Value::as_str)
                .is_some_and(|iss| self.issuer.iter().any(|x| x == iss));
            if !ok {
                return Err(DenyReason::TokenClaims);
            }
        }
        Ok(Grant {
            username: text(claims, &self.username_claim)?,
            tenant: text(claims, &self.tenant_claim)?,
            acl: parsed::<AclClaim>(claims, &self.acl_claim)?,
            limits: parsed::<ClientLimits>(claims, &self.limits_claim)?,
        })
    }

    fn check_times(&self, claims: &Map<String, Value>, now: f64) -> Result<(), DenyReason> {
        let exp = number(claims, "exp")?;
        if exp.is_none() && self.require_exp {
            return Err(DenyReason::TokenClaims);
        }
        if exp.is_some_and(|exp| now >= exp + self.leeway) {
            return Err(DenyReason::TokenExpired);
        }
        if number(claims, "nbf")?.is_some_and(|nbf| now + self.leeway < nbf) {
            return Err(DenyReason::TokenExpired);
        }
        if number(claims, "iat")?.is_some_and(|iat| iat > now + self.leeway) {
            return Err(DenyReason::TokenExpired);
        }
        Ok(())
    }
}

/// A NumericDate claim: absent (or null), a number, or a claim of the wrong type.
fn number(claims: &Map<String, Value>, name: &str) -> Result<Option<f64>, DenyReason> {
    match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n.as_f64().map(Some).ok_or(DenyReason::TokenClaims),
        Some(_) => Err(DenyReason::TokenClaims),
    }
}

/// A string claim (`name` empty: not read).
fn text(claims: &Map<String, Value>, name: &str) -> Result<Option<String>, DenyReason> {
    if name.is_empty() {
        return Ok(None);
    }
    match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(DenyReason::TokenClaims),
    }
}

/// A structured claim (`name` empty: not read); one that does not parse refuses the token.
fn parsed<T: serde::de::DeserializeOwned>(
    claims: &Map<String, Value>,
    name: &str,
) -> Result<Option<T>, DenyReason> {
    if name.is_empty() {
        return Ok(None);
    }
    match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => T::deserialize(value)
            .map(Some)
            .map_err(|_| DenyReason::TokenClaims),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rules(f: impl FnOnce(&mut JwtConfig)) -> Rules {
        let mut cfg = JwtConfig::default();
        f(&mut cfg);
        Rules::new(&cfg)
    }

    fn claims(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => panic!("not an object"),
        }
    }

    #[test]
    fn times_with_leeway() {
        let r = rules(|c| c.leeway_secs = 10);
        let now = 1_000_000.0;
        let at = |v: Value| r.grant(&claims(v), now).map(|_| ());
        assert_eq!(at(json!({"exp": now + 1.0})), Ok(()));
        assert_eq!(at(json!({"exp": now - 9.0})), Ok(()));
        assert_eq!(
            at(json!({"exp": now - 10.0})),
            Err(DenyReason::TokenExpired)
        );
        assert_eq!(at(json!({"exp": now + 60.0, "nbf": now + 9.0})), Ok(()));
        assert_eq!(
            at(json!({"exp": now + 60.0, "nbf": now + 11.0})),
            Err(DenyReason::TokenExpired)
        );
        assert_eq!(at(json!({"exp": now + 60.0, "iat": now + 10.0})), Ok(()));
        assert_eq!(
            at(json!({"exp": now + 60.0, "iat": now + 11.0})),
            Err(DenyReason::TokenExpired)
        );
        assert_eq!(
            at(json!({})),
            Err(DenyReason::TokenClaims),
            "exp is required"
        );
        assert_eq!(at(json!({"exp": "soon"})), Err(DenyReason::TokenClaims));
        let lax = rules(|c| c.require_exp = false);
        assert!(lax.grant(&claims(json!({})), now).is_ok());
    }

    #[test]
    fn audience_and_issuer() {
        let r = rules(|c| {
            c.require_exp = false;
            c.audience = vec!["mqtt".into(), "herald".into()];
            c.issuer = vec!["https://idp".into()];
        });
        let at = |v: Value| r.grant(&claims(v), 0.0).map(|_| ());
        assert_eq!(at(json!({"aud": "mqtt", "iss": "https://idp"})), Ok(()));
        assert_eq!(
            at(json!({"aud": ["x", "herald"], "iss": "https://idp"})),
            Ok(())
        );
        assert_eq!(
            at(json!({"aud": ["x"], "iss": "https://idp"})),
            Err(DenyReason::TokenClaims)
        );
        assert_eq!(
            at(json!({"iss": "https://idp"})),
            Err(DenyReason::TokenClaims)
        );
        assert_eq!(
            at(json!({"aud": "mqtt", "iss": "https://other"})),
            Err(DenyReason::TokenClaims)
        );
        assert_eq!(at(json!({"aud": "mqtt"})), Err(DenyReason::TokenClaims));
    }

    #[test]
    fn grant_from_claims() {
        let r = rules(|c| {
            c.require_exp = false;
            c.tenant_claim = "org".into();
        });
        let grant = r
            .grant(
                &claims(json!({
                    "sub": "alice", "org": "acme",
                    "acl": {"pub": ["a/#"], "sub": ["b/+"], "deny": ["a/secret"]},
                    "limits": {"messages_per_sec": 5, "max_qos": 1},
                })),
                0.0,
            )
            .expect("granted");
        assert_eq!(grant.username.as_deref(), Some("alice"));
        assert_eq!(grant.tenant.as_deref(), Some("acme"));
        let acl = grant.acl.expect("acl");
        assert_eq!(acl.publish, vec!["a/#"]);
        assert_eq!(acl.subscribe, vec!["b/+"]);
        assert_eq!(acl.deny, vec!["a/secret"]);
        let limits = grant.limits.expect("limits");
        assert_eq!(limits.messages_per_sec, Some(5));
        assert_eq!(limits.max_qos, Some(1));
        assert_eq!(limits.bytes_per_sec, None);

        let bare = r.grant(&claims(json!({})), 0.0).expect("granted");
        assert_eq!(bare, Grant::default());
        for bad in [
            json!({"sub": 7}),
            json!({"acl": {"publish": "a/#"}}),
            json!({"acl": {"pubs": ["a"]}}),
            json!({"limits": {"max_qos": "one"}}),
            json!({"limits": {"speed": 1}}),
        ] {
            assert_eq!(
                r.grant(&claims(bad.clone()), 0.0),
                Err(DenyReason::TokenClaims),
                "{bad}"
            );
        }
    }
}
