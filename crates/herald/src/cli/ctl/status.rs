//! `herald ctl status`: `/healthz`, `/readyz`, `/api/v1/stats` and, for the whole node of a
//! cluster, `/api/v1/cluster`, at a glance.

use hyper::StatusCode;
use serde_json::{Value, json};

use super::http::{Api, CtlError, Query};
use super::table::{
    Table, byte_rate, bytes, cell, count, fields, nonzero, printable, rate, tenant_name, yes_no,
};

/// Asks for everything and shows it; with `--json`, the answers under `health`, `ready`,
/// `stats` and `cluster` (null when not asked: a tenant's view).
pub(super) async fn run(api: &Api, json: bool) -> Result<String, CtlError> {
    let health = api.get_or("/healthz", StatusCode::OK).await?.body;
    let ready = api
        .get_or("/readyz", StatusCode::SERVICE_UNAVAILABLE)
        .await?
        .body;
    let stats = api.get("/api/v1/stats", &api.tenant_query()).await?;
    // A tenant's figures (a tenant's key, or --tenant) have its name; the node's do not,
    // and only a node-wide key, which may see the cluster, gets them.
    let node_wide = stats.get("tenant").is_none();
    let cluster = match node_wide {
        true => api.get("/api/v1/cluster", &Query::default()).await?,
        false => Value::Null,
    };
    if json {
        return Ok(super::table::pretty(&json!({
            "health": health,
            "ready": ready,
            "stats": stats,
            "cluster": cluster,
        })));
    }
    let mut head = vec![
        ("herald", api.base().to_string()),
        ("health", cell(&health["status"])),
        ("ready", readiness(&ready)),
    ];
    if cluster["clustered"].as_bool() == Some(true) {
        head.push(("cluster", cluster_line(&cluster)));
    }
    head.extend(match node_wide {
        true => node_fields(&stats),
        false => tenant_fields(&stats),
    });
    let mut out = fields(&head);
    if node_wide {
        out.push('\n');
        out.push_str(&tenants_table(&stats));
    }
    if cluster["clustered"].as_bool() == Some(true) {
        out.push('\n');
        out.push_str(&nodes_table(&cluster));
    }
    Ok(out)
}

/// `yes`, or `no` and why.
fn readiness(ready: &Value) -> String {
    if ready["ready"].as_bool() == Some(true) {
        return "yes".into();
    }
    // A draining node has closed its listeners: that is what draining says.
    if ready["draining"].as_bool() == Some(true) {
        return "no (draining)".into();
    }
    let mut why = Vec::new();
    if ready["listeners"].as_bool() == Some(false) {
        why.push("listeners not up");
    }
    if ready["store"].as_bool() == Some(false) {
        why.push("the store has failed");
    }
    match why.is_empty() {
        true => "no".into(),
        false => format!("no ({})", why.join(", ")),
    }
}

/// The node's counters (and, from Herald versions that give them, its connections by
/// listener and protocol, its process and its store).
fn node_fields(s: &Value) -> Vec<(&'static str, String)> {
    let r = &s["rates"];
    let limit = match s.get("max_connections") {
        Some(max) => format!(" (limit {})", count(max)),
        None => String::new(),
    };
    let mut out = vec![
        (
            "connections",
            format!(
                "{} open{limit}, {} accepted ({})",
                count(&s["connections"]),
                count(&s["connections_accepted"]),
                rate(&r["connections_accepted_per_sec"])
            ),
        ),
        ("sessions", count(&s["sessions"])),
        (
            "messages",
            format!(
                "{} published ({}), {} delivered ({})",
                count(&s["messages_published"]),
                rate(&r["published_per_sec"]),
                count(&s["messages_delivered"]),
                rate(&r["delivered_per_sec"])
            ),
        ),
        ("queued", queued(s)),
        (
            "backpressure",
            format!(
                "{} pushbacks, {} stalls",
                count(&s["pushbacks"]),
                count(&s["stalls"])
            ),
        ),
        ("refused", nonzero(&s["refused"])),
        ("store refused", count(&s["store_refused"])),
        ("closes", nonzero(&s["closes"])),
        ("drops", nonzero(&s["drops"])),
        ("idempotency keys", count(&s["idempotency_keys"])),
    ];
    out.extend(optional_fields(s));
    out.push((
        "rates over",
        format!("the last {} s", r["window_secs"].as_f64().unwrap_or(0.0)),
    ));
    out
}

/// `1.2 KiB`, or `3 messages (1.2 KiB)` when the count is given.
fn queued(s: &Value) -> String {
    match s.get("queued_messages") {
        Some(n) => format!("{} messages ({})", count(n), bytes(&s["queued_bytes"])),
        None => bytes(&s["queued_bytes"]),
    }
}

/// The lines of the fields an older Herald does not give: shown when present.
fn optional_fields(s: &Value) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    if let Some(by) = s.get("connections_by_listener") {
        out.push(("by listener", nonzero(by)));
    }
    if let Some(by) = s.get("connections_by_protocol") {
        out.push(("by protocol", nonzero(by)));
    }
    if let Some(p) = s.get("process") {
        out.push((
            "process",
            format!(
                "{} of {} open files, {} resident, {} s of CPU",
                count(&p["open_fds"]),
                count(&p["max_fds"]),
                bytes(&p["resident_memory_bytes"]),
                cell(&p["cpu_seconds"])
            ),
        ));
    }
    if let Some(store) = s.get("store") {
        let text = match store["in_memory"].as_bool() {
            Some(true) => "in memory (nothing survives a restart)".to_string(),
            _ => format!(
                "{} on disk{}",
                bytes(&store["disk_bytes"]),
                match store["failed"].as_bool() {
                    Some(true) => ", FAILED",
                    _ => "",
                }
            ),
        };
        out.push(("store", text));
    }
    out
}

/// One tenant's figures (`GET /api/v1/stats?tenant=`, and a tenant's `usage`).
pub(super) fn tenant_fields(t: &Value) -> Vec<(&'static str, String)> {
    let r = &t["rates"];
    let mut out = Vec::new();
    if let Some(name) = t["tenant"].as_str() {
        out.push(("tenant", tenant_name(name)));
    }
    out.extend([
        ("connections", count(&t["connections"])),
        (
            "sessions",
            format!(
                "{} ({} persistent)",
                count(&t["sessions"]),
                count(&t["persistent_sessions"])
            ),
        ),
        ("subscriptions", count(&t["subscriptions"])),
        (
            "retained",
            format!(
                "{} ({})",
                count(&t["retained"]),
                bytes(&t["retained_bytes"])
            ),
        ),
        (
            "offline queues",
            format!(
                "{} messages ({})",
                count(&t["offline_queued_messages"]),
                bytes(&t["offline_queued_bytes"])
            ),
        ),
        ("store", bytes(&t["store_bytes"])),
        (
            "published",
            format!(
                "{} ({}), {} / {}",
                count(&t["published"]),
                bytes(&t["published_bytes"]),
                rate(&r["published_per_sec"]),
                byte_rate(&r["published_bytes_per_sec"])
            ),
        ),
        (
            "delivered",
            format!(
                "{} ({}), {} / {}",
                count(&t["delivered"]),
                bytes(&t["delivered_bytes"]),
                rate(&r["delivered_per_sec"]),
                byte_rate(&r["delivered_bytes_per_sec"])
            ),
        ),
        ("quota breaches", nonzero(&t["quota_breaches"])),
    ]);
    out
}

/// A line per tenant of the node's answer.
fn tenants_table(s: &Value) -> String {
    let mut t = Table::new(&[
        "TENANT",
        "CONNECTIONS>",
        "SESSIONS>",
        "SUBSCRIPTIONS>",
        "RETAINED>",
        "STORE>",
        "PUBLISHED>",
        "DELIVERED>",
        "BREACHES>",
    ]);
    let tenants = s["tenants"].as_array().map_or(&[][..], Vec::as_slice);
    for x in tenants {
        let breaches: u64 = x["quota_breaches"]
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(_, n)| n.as_u64())
            .sum();
        t.row(vec![
            tenant_name(x["name"].as_str().unwrap_or_default()),
            count(&x["connections"]),
            count(&x["sessions"]),
            count(&x["subscriptions"]),
            count(&x["retained"]),
            bytes(&x["store_bytes"]),
            count(&x["published"]),
            count(&x["delivered"]),
            breaches.to_string(),
        ]);
    }
    let mut out = t.render();
    let total = s["tenants_total"].as_u64().unwrap_or(0);
    if total > tenants.len() as u64 {
        out.push_str(&format!(
            "(the first {} of {} tenants: herald ctl tenants list --all lists them all)\n",
            tenants.len(),
            count(&json!(total))
        ));
    }
    out
}

/// `node-a (NATS connected), 3 nodes`.
fn cluster_line(c: &Value) -> String {
    let nats = match c["nats_connected"].as_bool() {
        Some(true) => "NATS connected",
        _ => "NATS NOT connected",
    };
    let nodes = c["nodes"].as_array().map_or(0, Vec::len);
    format!(
        "this node is {} ({nats}), {nodes} nodes",
        printable(c["node"].as_str().unwrap_or_default(), 64)
    )
}

/// A line per node of the cluster.
fn nodes_table(c: &Value) -> String {
    let mut t = Table::new(&[
        "NODE",
        "STATE",
        "DRAINING",
        "CONNECTIONS>",
        "SESSIONS>",
        "SENT>",
        "RECEIVED>",
        "LAST SEEN>",
    ]);
    for n in c["nodes"].as_array().into_iter().flatten() {
        let mut name = printable(n["node"].as_str().unwrap_or_default(), 64);
        if n["this_node"].as_bool() == Some(true) {
            name.push_str(" (this)");
        }
        let seen = n["last_seen_ms"].as_u64().unwrap_or(0);
        t.row(vec![
            name,
            cell(&n["state"]),
            yes_no(n["draining"].as_bool() == Some(true)).into(),
            count(&n["connections"]),
            count(&n["sessions"]),
            count(&n["sent"]),
            count(&n["received"]),
            format!("{:.1} s ago", seen as f64 / 1000.0),
        ]);
    }
    t.render()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_says_why_not() {
        assert_eq!(readiness(&json!({"ready": true})), "yes");
        assert_eq!(
            readiness(
                &json!({"ready": false, "listeners": false, "store": true, "draining": true})
            ),
            "no (draining)"
        );
        assert_eq!(
            readiness(
                &json!({"ready": false, "listeners": true, "store": false, "draining": false})
            ),
            "no (the store has failed)"
        );
    }

    /// The value of the line `name` of a `name  value` list.
    fn value<'a>(pairs: &'a [(&str, String)], name: &str) -> Option<&'a str> {
        pairs
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn the_node_with_and_without_the_newer_fields() {
        let older = json!({
            "connections": 2, "connections_accepted": 6, "sessions": 2,
            "messages_published": 5, "messages_delivered": 9, "queued_bytes": 2048,
            "pushbacks": 0, "stalls": 1, "refused": {"queue_full": 0}, "store_refused": 0,
            "closes": {"client_disconnect": 4, "io_error": 0}, "drops": {},
            "idempotency_keys": 0,
            "rates": {"window_secs": 7.1, "published_per_sec": 0.7, "delivered_per_sec": 1.3,
                      "connections_accepted_per_sec": 0.9},
        });
        let pairs = node_fields(&older);
        assert_eq!(
            value(&pairs, "connections"),
            Some("2 open, 6 accepted (0.9/s)")
        );
        assert_eq!(value(&pairs, "queued"), Some("2.0 KiB"));
        assert_eq!(value(&pairs, "closes"), Some("client_disconnect 4"));
        assert_eq!(value(&pairs, "refused"), Some("none"));
        assert_eq!(value(&pairs, "process"), None);
        let mut newer = older.clone();
        newer["max_connections"] = json!(18912);
        newer["queued_messages"] = json!(3);
        newer["connections_by_protocol"] = json!({"5.0": 1, "3.1.1": 1, "3.1": 0});
        newer["process"] = json!({"open_fds": 40, "max_fds": 20000, "cpu_seconds": 1.25,
                                  "resident_memory_bytes": 12 * 1024 * 1024});
        newer["store"] = json!({"in_memory": false, "disk_bytes": 1536, "failed": true});
        let pairs = node_fields(&newer);
        assert_eq!(
            value(&pairs, "connections"),
            Some("2 open (limit 18,912), 6 accepted (0.9/s)")
        );
        assert_eq!(value(&pairs, "queued"), Some("3 messages (2.0 KiB)"));
        assert_eq!(value(&pairs, "by protocol"), Some("3.1.1 1, 5.0 1"));
        assert_eq!(
            value(&pairs, "process"),
            Some("40 of 20,000 open files, 12.0 MiB resident, 1.25 s of CPU")
        );
        assert_eq!(value(&pairs, "store"), Some("1.5 KiB on disk, FAILED"));
    }

    #[test]
    fn a_cluster_lists_its_nodes() {
        let c = json!({
            "clustered": true, "node": "a", "nats_connected": true,
            "nodes": [
                {"node": "a", "connections": 3, "sessions": 4, "subscriptions": 1, "sent": 10,
                 "received": 2, "draining": false, "state": "up", "last_seen_ms": 0,
                 "this_node": true},
                {"node": "b", "connections": 1200, "sessions": 1300, "subscriptions": 1,
                 "sent": 0, "received": 0, "draining": true, "state": "stale",
                 "last_seen_ms": 6500, "this_node": false},
            ],
        });
        assert_eq!(cluster_line(&c), "this node is a (NATS connected), 2 nodes");
        assert_eq!(
            nodes_table(&c),
            "NODE      STATE  DRAINING  CONNECTIONS  SESSIONS  SENT  RECEIVED  LAST SEEN\n\
             a (this)  up     no                  3         4    10         2  0.0 s ago\n\
             b         stale  yes             1,200     1,300     0         0  6.5 s ago\n"
        );
    }
}
