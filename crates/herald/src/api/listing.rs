//! What this node holds, as the API lists it: the answers to the local half of the
//! clients and subscriptions endpoints, which the cluster's API (`cluster`) also gives the
//! other nodes.

use mqtt_codec::ProtocolVersion;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::broker::Tenant;
use crate::broker::session::{Session, SessionState};

/// Most items one page holds.
pub(super) const MAX_LIMIT: usize = 1000;

fn protocol(v: ProtocolVersion) -> &'static str {
    match v {
        ProtocolVersion::V3_1 => "3.1",
        ProtocolVersion::V3_1_1 => "3.1.1",
        ProtocolVersion::V5 => "5.0",
    }
}

/// The summary of a client in a listing.
fn summary(session: &Session, st: &SessionState) -> Value {
    let origin = st.origin();
    json!({
        "client_id": &*session.client_id,
        "connected": st.connected(),
        "protocol": protocol(st.protocol()),
        "username": origin.and_then(|o| o.username.as_deref()),
        "address": origin.map(|o| o.peer.to_string()),
        "listener": origin.map(|o| o.listener.label()),
        "persistent": st.expiry_interval() > 0,
        "subscriptions": st.subscriptions().len(),
        "queued": st.queued().0,
        "inflight": st.inflight_len(),
    })
}

/// `GET /api/v1/clients` filters and page.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ClientQuery {
    /// The tenant (node-wide keys; a tenant's key may name its own only).
    pub(super) tenant: Option<String>,
    /// Client ids starting with this.
    prefix: Option<String>,
    /// Clients with this username.
    username: Option<String>,
    /// Clients whose address (ip:port) starts with this.
    address: Option<String>,
    /// Page size (default 100, at most 1000).
    pub(super) limit: Option<usize>,
    /// The page after this client id (the previous page's `next`).
    after: Option<String>,
}

/// This node's clients of `tenant` that `q` selects, by client id.
pub(super) fn local_clients(tenant: &Tenant, q: &ClientQuery) -> Vec<(String, Value)> {
    let mut items = Vec::new();
    tenant.sessions.for_each(|session| {
        let id = &*session.client_id;
        if q.prefix.as_deref().is_some_and(|p| !id.starts_with(p))
            || q.after.as_deref().is_some_and(|a| id <= a)
        {
            return;
        }
        let st = session.lock();
        let origin = st.origin();
        if let Some(user) = &q.username
            && origin.and_then(|o| o.username.as_deref()) != Some(user.as_str())
        {
            return;
        }
        if let Some(addr) = &q.address
            && !origin.is_some_and(|o| o.peer.to_string().starts_with(addr.as_str()))
        {
            return;
        }
        items.push((id.to_string(), summary(session, &st)));
    });
    // Only the page's worth travels between nodes.
    let limit = q.limit.unwrap_or(100).min(MAX_LIMIT);
    if items.len() > limit + 1 {
        items.select_nth_unstable_by(limit, |a, b| a.0.cmp(&b.0));
        items.truncate(limit + 1);
    }
    items
}

/// One client of this node, in detail.
pub(super) fn local_client(tenant: &Tenant, id: &str) -> Option<Value> {
    let session = tenant.sessions.get(id)?;
    let st = session.lock();
    let mut v = summary(&session, &st);
    v["session_expiry_interval"] = json!(st.expiry_interval());
    v["subscriptions"] = st
        .subscriptions()
        .iter()
        .map(|(filter, r)| {
            json!({
                "filter": &**filter,
                "qos": r.options.qos as u8,
                "no_local": r.options.no_local,
                "retain_as_published": r.options.retain_as_published,
                "identifier": r.id,
            })
        })
        .collect();
    v["queued_bytes"] = json!(st.queued().1);
    v["inbound_qos2"] = json!(st.inbound_qos2_len());
    Some(v)
}

/// Disconnects this node's client `id` (and with `discard`, ends its session).
pub(super) fn local_kick(
    broker: &crate::broker::Broker,
    tenant: &Tenant,
    id: &str,
    discard: bool,
) -> Option<Value> {
    let session = tenant.sessions.get(id)?;
    let was_connected = broker.kick(&session);
    if discard {
        broker.end_session(tenant, &session, None);
    }
    Some(json!({
        "client_id": id,
        "disconnected": was_connected,
        "session_discarded": discard,
    }))
}

/// This node's subscriptions of `tenant` that `filter` covers, after the cursor `after`, by
/// (filter, client id); at most a page and one.
pub(super) fn local_subscriptions(
    tenant: &Tenant,
    filter: &str,
    after: Option<&str>,
    limit: usize,
) -> Vec<(String, Value)> {
    let mut items = Vec::new();
    tenant.sessions.for_each(|session| {
        let st = session.lock();
        for (f, r) in st.subscriptions().iter() {
            // A subscription is listed when the query filter covers it: every topic it
            // matches, the query matches too (checked on the filter as a topic).
            if !mqtt_codec::topic::matches(filter, f) {
                continue;
            }
            let key = format!("{}\u{0}{}", &**f, &*session.client_id);
            if after.is_some_and(|a| key.as_str() <= a) {
                continue;
            }
            items.push((
                key,
                json!({
                    "client_id": &*session.client_id,
                    "filter": &**f,
                    "qos": r.options.qos as u8,
                    "identifier": r.id,
                }),
            ));
        }
    });
    if items.len() > limit + 1 {
        items.select_nth_unstable_by(limit, |a, b| a.0.cmp(&b.0));
        items.truncate(limit + 1);
    }
    items
}
