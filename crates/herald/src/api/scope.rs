//! Who calls the API, and which tenant a request works in.
//!
//! A key of `http.api_keys` is node-wide: it may do everything, in any tenant, named by the
//! `tenant` query parameter (absent or "": the default tenant). A key of `http.tenant_keys`
//! is scoped to its tenant: every request works there, a `tenant` parameter naming another
//! is refused (403), and so are the node-wide operations (drain, reload, the log level,
//! `/metrics`). Without any key configured the API serves every caller as node-wide (on
//! loopback only; `guard` keeps web pages off it).

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use serde::Deserialize;

use super::{ApiError, ApiState};
use crate::broker::{Broker, Tenant};
use crate::config::HttpConfig;

/// What a key may reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Scope {
    /// The whole node: every tenant, and the node-wide operations.
    Node,
    /// One tenant, by name.
    Tenant(String),
}

/// The caller, checked against `http.api_keys` and `http.tenant_keys`.
#[derive(Debug)]
pub(crate) struct Authorized {
    /// Which key it used, scoping its idempotency keys: the index of a node-wide key
    /// (`"0"`), `t<length of the tenant's name>.<tenant>.<index in its list>` for a tenant's
    /// key (the length makes the id unambiguous whatever the name holds), "-" without keys.
    pub(super) key_id: String,
    /// What the key may reach.
    pub(super) scope: Scope,
}

impl FromRequestParts<Arc<ApiState>> for Authorized {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<ApiState>,
    ) -> Result<Self, Self::Rejection> {
        check_key(&parts.headers, &state.broker.config().http)
    }
}

/// The `tenant` query parameter of an operation that takes no other.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TenantQuery {
    /// The tenant to work in (node-wide keys; a tenant's key may name its own only).
    pub(super) tenant: Option<String>,
}

/// Which key the request's `Authorization: Bearer <key>` names, or 401. Every configured key
/// is compared, each without stopping at its first difference, so that the time taken says
/// nothing of which key, or how much of one, was right.
pub(super) fn check_key(headers: &HeaderMap, http: &HttpConfig) -> Result<Authorized, ApiError> {
    if !http.has_keys() {
        return Ok(Authorized {
            key_id: "-".into(),
            scope: Scope::Node,
        });
    }
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token)
        .unwrap_or_default();
    let mut found = None;
    for (i, key) in http.api_keys.iter().enumerate() {
        if constant_time_eq(key, given) && found.is_none() {
            found = Some(Authorized {
                key_id: i.to_string(),
                scope: Scope::Node,
            });
        }
    }
    for (tenant, keys) in &http.tenant_keys {
        for (i, key) in keys.iter().enumerate() {
            if constant_time_eq(key, given) && found.is_none() {
                found = Some(Authorized {
                    key_id: format!("t{}.{tenant}.{i}", tenant.len()),
                    scope: Scope::Tenant(tenant.clone()),
                });
            }
        }
    }
    // An empty token matches no key: keys are 16 characters at least.
    found.filter(|_| !given.is_empty()).ok_or_else(|| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            Some("Authorization"),
            "an API key is needed: Authorization: Bearer <key> (http.api_keys or \
             http.tenant_keys)",
        )
    })
}

/// The token of `Bearer <token>`; the scheme is case-insensitive (RFC 9110, 11.1).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim_start().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

/// Compares without stopping at the first difference (the time taken says nothing of how
/// much of a key was right).
fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

impl Authorized {
    /// Refuses a tenant's key for `what`, an operation on the whole node.
    pub(super) fn node_wide(&self, what: &str) -> Result<(), ApiError> {
        match &self.scope {
            Scope::Node => Ok(()),
            Scope::Tenant(tenant) => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                Some("Authorization"),
                format!(
                    "{what} concerns the whole node, and this API key is scoped to tenant \
                     {tenant:?}: use a key of http.api_keys"
                ),
            )),
        }
    }

    /// The name of the tenant the request works in: a tenant's key's own; for a node-wide
    /// key, `asked` (the `tenant` parameter), the default tenant ("") when absent.
    pub(super) fn tenant_name<'a>(&'a self, asked: Option<&'a str>) -> Result<&'a str, ApiError> {
        if let Some(name) = asked
            && !name.is_empty()
            && !crate::config::valid_tenant(name)
        {
            return Err(ApiError::field(
                "tenant",
                format!(
                    "not a tenant name: 1 to {} bytes without control characters (\"\" or \
                     absent: the default tenant)",
                    crate::config::MAX_TENANT_LEN
                ),
            ));
        }
        match (&self.scope, asked) {
            (Scope::Node, asked) => Ok(asked.unwrap_or_default()),
            (Scope::Tenant(own), None) => Ok(own),
            (Scope::Tenant(own), Some(asked)) if asked == own => Ok(own),
            (Scope::Tenant(own), Some(asked)) => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                Some("tenant"),
                format!(
                    "this API key is scoped to tenant {own:?}; it cannot work in {}",
                    describe(asked)
                ),
            )),
        }
    }

    /// The tenant a request that looks or steers works in. A node-wide key naming a tenant
    /// that does not exist gets 404 `unknown_tenant`; a tenant's key whose tenant has no
    /// client yet sees it empty (it is not created for a look).
    pub(super) fn read(
        &self,
        broker: &Broker,
        asked: Option<&str>,
    ) -> Result<Arc<Tenant>, ApiError> {
        let name = self.tenant_name(asked)?;
        if let Some(tenant) = broker.find_tenant(name) {
            return Ok(tenant);
        }
        match self.scope {
            Scope::Tenant(_) => Ok(Arc::new(Tenant::named(name))),
            Scope::Node => Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "unknown_tenant",
                Some("tenant"),
                format!(
                    "no tenant {name:?} on this node (a tenant exists once a client or a \
                     publication has used it)"
                ),
            )),
        }
    }

    /// The tenant a publication goes to, created if new (as a client's connection creates
    /// its tenant).
    pub(super) fn write(
        &self,
        broker: &Broker,
        asked: Option<&str>,
    ) -> Result<Arc<Tenant>, ApiError> {
        Ok(broker.tenant(self.tenant_name(asked)?))
    }
}

/// A tenant's name for a message; the default one by what it is.
fn describe(name: &str) -> String {
    if name.is_empty() {
        "the default tenant".into()
    } else {
        format!("tenant {name:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http(api: &[&str], tenants: &[(&str, &[&str])]) -> HttpConfig {
        HttpConfig {
            api_keys: api.iter().map(|k| k.to_string()).collect(),
            tenant_keys: tenants
                .iter()
                .map(|(t, keys)| (t.to_string(), keys.iter().map(|k| k.to_string()).collect()))
                .collect(),
            ..HttpConfig::default()
        }
    }

    fn bearer(key: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            format!("Bearer {key}").parse().expect("a header value"),
        );
        h
    }

    #[test]
    fn keys_name_their_scope_and_distinct_ids() {
        let c = http(
            &["node-key-0000000", "node-key-1111111"],
            &[
                ("a", &["tenant-a-0000000", "tenant-a-1111111"]),
                ("a.0", &["tenant-a0-000000"]),
            ],
        );
        let mut ids = Vec::new();
        for (key, scope) in [
            ("node-key-0000000", Scope::Node),
            ("node-key-1111111", Scope::Node),
            ("tenant-a-0000000", Scope::Tenant("a".into())),
            ("tenant-a-1111111", Scope::Tenant("a".into())),
            ("tenant-a0-000000", Scope::Tenant("a.0".into())),
        ] {
            let auth = check_key(&bearer(key), &c).expect("a configured key");
            assert_eq!(auth.scope, scope, "{key}");
            ids.push(auth.key_id);
        }
        assert_eq!(ids, ["0", "1", "t1.a.0", "t1.a.1", "t3.a.0.0"]);
        for wrong in ["node-key-000000X", "", "tenant-a-000000"] {
            assert!(check_key(&bearer(wrong), &c).is_err(), "{wrong:?}");
        }
        assert!(check_key(&HeaderMap::new(), &c).is_err());
        // Tenant keys alone turn the check on.
        let only = http(&[], &[("a", &["tenant-a-0000000"])]);
        assert!(check_key(&HeaderMap::new(), &only).is_err());
        let open = check_key(&HeaderMap::new(), &HttpConfig::default()).expect("no keys");
        assert_eq!((open.key_id.as_str(), open.scope), ("-", Scope::Node));
    }

    #[test]
    fn a_tenant_key_works_in_its_tenant_only() {
        let node = Authorized {
            key_id: "0".into(),
            scope: Scope::Node,
        };
        let acme = Authorized {
            key_id: "t4.acme.0".into(),
            scope: Scope::Tenant("acme".into()),
        };
        assert_eq!(node.tenant_name(None).ok(), Some(""));
        assert_eq!(node.tenant_name(Some("")).ok(), Some(""));
        assert_eq!(node.tenant_name(Some("beta")).ok(), Some("beta"));
        assert_eq!(acme.tenant_name(None).ok(), Some("acme"));
        assert_eq!(acme.tenant_name(Some("acme")).ok(), Some("acme"));
        for other in ["", "beta"] {
            let e = acme.tenant_name(Some(other)).expect_err("another tenant");
            assert_eq!(
                (e.status, e.field.as_deref()),
                (StatusCode::FORBIDDEN, Some("tenant"))
            );
        }
        for bad in ["a\u{7}b", &"t".repeat(65)] {
            for auth in [&node, &acme] {
                let e = auth.tenant_name(Some(bad)).expect_err("not a tenant name");
                assert_eq!(
                    (e.status, e.field.as_deref()),
                    (StatusCode::BAD_REQUEST, Some("tenant"))
                );
            }
        }
        assert!(node.node_wide("drain").is_ok());
        let e = acme.node_wide("drain").expect_err("node-wide");
        assert!(
            e.message.contains("drain") && e.message.contains("\"acme\""),
            "{}",
            e.message
        );
    }
}
