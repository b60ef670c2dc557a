//! `herald ctl clients` and `herald ctl subscriptions`: `/api/v1/clients`,
//! `/api/v1/clients/{id}` (GET and DELETE) and `/api/v1/subscriptions`, in the tenant the
//! caller works in.

use clap::Subcommand;
use hyper::Method;
use serde_json::Value;

use super::http::{Api, CtlError, Query, encode};
use super::paging::{self, Paging};
use super::table::{Table, bytes, cell, count, duration, fields, pretty};

/// `herald ctl clients ...`
#[derive(Debug, Subcommand)]
pub(super) enum ClientsAction {
    /// List clients (sessions, connected or not), by client id.
    List(ListArgs),
    /// One client in detail, with its subscriptions.
    Show {
        /// The client id.
        id: String,
    },
    /// Disconnect a client (MQTT 5: DISCONNECT 0x98); its session stays unless
    /// --discard-session.
    Disconnect {
        /// The client id.
        id: String,
        /// Also end its session: its subscriptions and queued messages go.
        #[arg(long)]
        discard_session: bool,
    },
}

/// `herald ctl clients list` filters.
#[derive(Debug, clap::Args)]
pub(super) struct ListArgs {
    /// Client ids starting with this.
    #[arg(long)]
    prefix: Option<String>,
    /// Clients with this username.
    #[arg(long)]
    username: Option<String>,
    /// Clients whose address (ip:port) starts with this.
    #[arg(long)]
    address: Option<String>,
    /// Which page.
    #[command(flatten)]
    paging: Paging,
}

/// `herald ctl subscriptions` filters.
#[derive(Debug, clap::Args)]
pub(super) struct SubscriptionsArgs {
    /// Subscriptions this MQTT filter covers (`+` and `#` allowed; all by default).
    #[arg(long)]
    filter: Option<String>,
    /// Which page.
    #[command(flatten)]
    paging: Paging,
}

/// Runs a `clients` command.
pub(super) async fn run(api: &Api, json: bool, action: ClientsAction) -> Result<String, CtlError> {
    match action {
        ClientsAction::List(a) => list(api, json, a).await,
        ClientsAction::Show { id } => {
            let client = api.get(&path(&id)?, &api.tenant_query()).await?;
            Ok(match json {
                true => pretty(&client),
                false => show(&client),
            })
        }
        ClientsAction::Disconnect {
            id,
            discard_session,
        } => {
            let query = api
                .tenant_query()
                .opt("discard_session", discard_session.then_some(true));
            let kicked = api
                .call(Method::DELETE, &path(&id)?, &query, None, &[])
                .await?;
            Ok(match json {
                true => pretty(&kicked),
                false => kicked_line(&kicked),
            })
        }
    }
}

/// `/api/v1/clients/{id}`, the id in one segment.
fn path(id: &str) -> Result<String, CtlError> {
    if id.is_empty() {
        return Err(CtlError::Usage("a client id is not empty".into()));
    }
    Ok(format!("/api/v1/clients/{}", encode(id)))
}

async fn list(api: &Api, json: bool, a: ListArgs) -> Result<String, CtlError> {
    let query = api
        .tenant_query()
        .opt("prefix", a.prefix)
        .opt("username", a.username)
        .opt("address", a.address);
    let page = paging::fetch(api, "/api/v1/clients", query, &a.paging).await?;
    if json {
        return Ok(pretty(&page));
    }
    let items = paging::items(&page);
    if items.is_empty() {
        return Ok(format!("no clients\n{}", paging::more(&page)));
    }
    // Clustered answers say which node holds each client.
    let clustered = items.iter().any(|c| c.get("node").is_some());
    let mut columns = vec![
        "CLIENT ID",
        "CONNECTED",
        "PROTOCOL",
        "USERNAME",
        "ADDRESS",
        "LISTENER",
        "SESSION",
        "SUBS>",
        "QUEUED>",
        "INFLIGHT>",
    ];
    if clustered {
        columns.push("NODE");
    }
    let mut t = Table::new(&columns);
    for c in items {
        let mut row = vec![
            cell(&c["client_id"]),
            cell(&c["connected"]),
            cell(&c["protocol"]),
            cell(&c["username"]),
            cell(&c["address"]),
            cell(&c["listener"]),
            session_kind(c).into(),
            count(&c["subscriptions"]),
            count(&c["queued"]),
            count(&c["inflight"]),
        ];
        if clustered {
            row.push(cell(&c["node"]));
        }
        t.row(row);
    }
    Ok(format!("{}{}", t.render(), paging::more(&page)))
}

fn session_kind(c: &Value) -> &'static str {
    match c["persistent"].as_bool() {
        Some(true) => "persistent",
        _ => "clean",
    }
}

/// One client: its fields, then a table of its subscriptions.
fn show(c: &Value) -> String {
    let expiry = match c["session_expiry_interval"].as_u64() {
        Some(0) => "ends with the connection".to_string(),
        Some(n) if n >= u64::from(u32::MAX) => "never expires".to_string(),
        Some(n) => format!("expires {} after the connection", duration(n)),
        None => "-".to_string(),
    };
    let mut pairs = vec![
        ("client id", cell(&c["client_id"])),
        ("connected", cell(&c["connected"])),
        ("protocol", cell(&c["protocol"])),
        ("username", cell(&c["username"])),
        ("address", cell(&c["address"])),
        ("listener", cell(&c["listener"])),
        ("session", format!("{}, {expiry}", session_kind(c))),
        (
            "queued",
            format!("{} ({})", count(&c["queued"]), bytes(&c["queued_bytes"])),
        ),
        ("inflight", count(&c["inflight"])),
        ("inbound QoS 2", count(&c["inbound_qos2"])),
    ];
    if let Some(node) = c.get("node") {
        pairs.push(("node", cell(node)));
    }
    let mut out = fields(&pairs);
    let subs = c["subscriptions"].as_array().map_or(&[][..], Vec::as_slice);
    out.push('\n');
    if subs.is_empty() {
        out.push_str("no subscriptions\n");
        return out;
    }
    let mut t = Table::new(&[
        "FILTER",
        "QOS>",
        "NO LOCAL",
        "RETAIN AS PUBLISHED",
        "IDENTIFIER>",
    ]);
    for s in subs {
        t.row(vec![
            cell(&s["filter"]),
            cell(&s["qos"]),
            cell(&s["no_local"]),
            cell(&s["retain_as_published"]),
            cell(&s["identifier"]),
        ]);
    }
    out.push_str(&t.render());
    out
}

/// What a disconnection did.
fn kicked_line(k: &Value) -> String {
    let id = cell(&k["client_id"]);
    let was = k["disconnected"].as_bool() == Some(true);
    let discarded = k["session_discarded"].as_bool() == Some(true);
    let mut line = match was {
        true => format!("disconnected {id}"),
        false => format!("{id} was not connected"),
    };
    line.push_str(match discarded {
        true => "; its session was discarded",
        false => "; its session is kept",
    });
    if let Some(node) = k.get("node") {
        line.push_str(&format!(" (on node {})", cell(node)));
    }
    line.push('\n');
    line
}

/// Runs `herald ctl subscriptions`.
pub(super) async fn subscriptions(
    api: &Api,
    json: bool,
    a: SubscriptionsArgs,
) -> Result<String, CtlError> {
    let query: Query = api.tenant_query().opt("filter", a.filter);
    let page = paging::fetch(api, "/api/v1/subscriptions", query, &a.paging).await?;
    if json {
        return Ok(pretty(&page));
    }
    let items = paging::items(&page);
    if items.is_empty() {
        return Ok(format!("no subscriptions\n{}", paging::more(&page)));
    }
    let mut t = Table::new(&["FILTER", "CLIENT ID", "QOS>", "IDENTIFIER>"]);
    for s in items {
        t.row(vec![
            cell(&s["filter"]),
            cell(&s["client_id"]),
            cell(&s["qos"]),
            cell(&s["identifier"]),
        ]);
    }
    Ok(format!("{}{}", t.render(), paging::more(&page)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_client_in_detail() {
        let c = json!({
            "client_id": "sensor/1", "connected": true, "protocol": "5.0", "username": null,
            "address": "127.0.0.1:5000", "listener": "mqtt", "persistent": true,
            "session_expiry_interval": 3600, "queued": 2, "queued_bytes": 2048, "inflight": 1,
            "inbound_qos2": 0,
            "subscriptions": [{"filter": "a/#", "qos": 1, "no_local": false,
                               "retain_as_published": true, "identifier": null}],
        });
        let text = show(&c);
        assert!(
            text.contains("session        persistent, expires 1 h after the connection\n"),
            "{text}"
        );
        assert!(text.contains("queued         2 (2.0 KiB)\n"), "{text}");
        assert!(text.contains("username       -\n"), "{text}");
        assert!(
            text.ends_with(
                "FILTER  QOS  NO LOCAL  RETAIN AS PUBLISHED  IDENTIFIER\n\
                 a/#       1  no        yes                           -\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn a_disconnection_says_what_it_did() {
        assert_eq!(
            kicked_line(&json!({"client_id": "a", "disconnected": true,
                                "session_discarded": false})),
            "disconnected a; its session is kept\n"
        );
        assert_eq!(
            kicked_line(&json!({"client_id": "a", "disconnected": false,
                                "session_discarded": true, "node": "n2"})),
            "a was not connected; its session was discarded (on node n2)\n"
        );
    }
}
