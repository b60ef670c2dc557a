//! `herald ctl tenants`: `/api/v1/tenants` and `/api/v1/tenants/{name}` (GET, PUT,
//! DELETE): tenants' own settings, where they come from, and what each tenant uses.

use std::collections::BTreeSet;

use clap::Subcommand;
use hyper::Method;
use serde_json::{Map, Value};

use super::http::{Api, CtlError, Query, encode};
use super::paging::{self, Paging};
use super::table::{Table, bytes, cell, count, fields, pretty, printable, tenant_name};

/// `herald ctl tenants ...`
#[derive(Debug, Subcommand)]
pub(super) enum TenantsAction {
    /// List the tenants (the default one first, then by name); node-wide keys only.
    List {
        /// Which page.
        #[command(flatten)]
        paging: Paging,
    },
    /// One tenant: its settings (its own and those in force) and what it uses.
    Show {
        /// The tenant's name.
        name: String,
    },
    /// Set a tenant's settings, whole (keys left out are the defaults'); creates it if
    /// new. Node-wide keys only; not for tenants of the tenants file.
    Set {
        /// The tenant's name.
        name: String,
        /// Settings as key=value, with the keys of [tenants.defaults]; a value is read as
        /// JSON when it is (max_qos=1, retain=false, protocols='["3.1.1","5"]'), else as text.
        #[arg(value_name = "KEY=VALUE")]
        settings: Vec<String>,
    },
    /// Remove the settings set through the API: back to the defaults, unknown.
    Delete {
        /// The tenant's name.
        name: String,
    },
}

/// Runs a `tenants` command.
pub(super) async fn run(api: &Api, json: bool, action: TenantsAction) -> Result<String, CtlError> {
    let (answer, verb) = match action {
        TenantsAction::List { paging } => {
            let page = paging::fetch(api, "/api/v1/tenants", Query::default(), &paging).await?;
            return Ok(match json {
                true => pretty(&page),
                false => list(&page),
            });
        }
        TenantsAction::Show { name } => (api.get(&path(&name)?, &Query::default()).await?, None),
        TenantsAction::Set { name, settings } => {
            let body = Value::Object(parse_settings(&settings)?);
            let answer = api
                .send(
                    Method::PUT,
                    &path(&name)?,
                    &Query::default(),
                    Some(&body),
                    &[],
                )
                .await?;
            let verb = match answer.status.as_u16() {
                201 => "created",
                _ => "updated",
            };
            (answer.body, Some(verb))
        }
        TenantsAction::Delete { name } => {
            let answer = api
                .call(Method::DELETE, &path(&name)?, &Query::default(), None, &[])
                .await?;
            (answer, Some("settings removed from"))
        }
    };
    if json {
        return Ok(pretty(&answer));
    }
    let mut out = String::new();
    if let Some(verb) = verb {
        let name = tenant_name(answer["name"].as_str().unwrap_or_default());
        out.push_str(&format!("{verb} tenant {name}\n\n"));
    }
    out.push_str(&show(&answer));
    Ok(out)
}

/// `/api/v1/tenants/{name}`, the name in one segment.
fn path(name: &str) -> Result<String, CtlError> {
    if name.is_empty() {
        return Err(CtlError::Usage(
            "a tenant name is not empty (the default tenant has no settings of its own)".into(),
        ));
    }
    Ok(format!("/api/v1/tenants/{}", encode(name)))
}

/// `key=value` pairs as a JSON object; a value is JSON when it parses as JSON, else text.
fn parse_settings(pairs: &[String]) -> Result<Map<String, Value>, CtlError> {
    let mut settings = Map::new();
    for pair in pairs {
        let Some((key, value)) = pair.split_once('=') else {
            return Err(CtlError::Usage(format!(
                "{pair:?}: write settings as key=value"
            )));
        };
        let value = serde_json::from_str(value).unwrap_or_else(|_| Value::from(value));
        if settings.insert(key.to_string(), value).is_some() {
            return Err(CtlError::Usage(format!("{key} is given twice")));
        }
    }
    Ok(settings)
}

/// Settings as `key=value, ...` (sorted by key), or `-`.
fn settings_line(v: &Value) -> String {
    let pairs: Vec<String> = v
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| match v {
            Value::String(s) => format!("{k}={}", printable(s, 64)),
            other => format!("{k}={other}"),
        })
        .collect();
    match pairs.is_empty() {
        true => "-".into(),
        false => pairs.join(", "),
    }
}

fn setting(v: &Value) -> String {
    match v {
        Value::Number(_) => count(v),
        Value::String(s) => printable(s, 64),
        other => other.to_string(),
    }
}

fn list(page: &Value) -> String {
    let items = paging::items(page);
    if items.is_empty() {
        return format!("no tenants\n{}", paging::more(page));
    }
    let mut t = Table::new(&[
        "TENANT",
        "KNOWN",
        "SOURCE",
        "CONNECTIONS>",
        "SESSIONS>",
        "SUBSCRIPTIONS>",
        "RETAINED>",
        "STORE>",
        "OWN SETTINGS",
    ]);
    for x in items {
        let u = &x["usage"];
        t.row(vec![
            tenant_name(x["name"].as_str().unwrap_or_default()),
            cell(&x["known"]),
            cell(&x["source"]),
            count(&u["connections"]),
            count(&u["sessions"]),
            count(&u["subscriptions"]),
            count(&u["retained"]),
            bytes(&u["store_bytes"]),
            printable(&settings_line(&x["own"]), 60),
        ]);
    }
    format!("{}{}", t.render(), paging::more(page))
}

/// One tenant: where its settings come from, each setting (its own and in force), what
/// it uses.
fn show(x: &Value) -> String {
    let mut out = fields(&[
        (
            "tenant",
            tenant_name(x["name"].as_str().unwrap_or_default()),
        ),
        ("known", cell(&x["known"])),
        ("source", cell(&x["source"])),
    ]);
    let keys: BTreeSet<&String> = [&x["own"], &x["limits"]]
        .into_iter()
        .filter_map(Value::as_object)
        .flat_map(|m| m.keys())
        .collect();
    out.push('\n');
    if keys.is_empty() {
        out.push_str("no settings: no limit\n");
    } else {
        let mut t = Table::new(&["SETTING", "OWN", "IN FORCE"]);
        for key in keys {
            let own = x["own"].get(key).map_or("-".into(), setting);
            let limit = x["limits"].get(key).map_or("no limit".into(), setting);
            t.row(vec![key.clone(), own, limit]);
        }
        out.push_str(&t.render());
    }
    out.push('\n');
    out.push_str(&fields(&super::status::tenant_fields(&x["usage"])));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn settings_are_json_when_they_parse_else_text() {
        let s = parse_settings(&[
            "max_qos=1".into(),
            "retain=false".into(),
            r#"protocols=["3.1.1","5"]"#.into(),
            "note=a b".into(),
        ])
        .expect("settings");
        assert_eq!(
            Value::Object(s),
            json!({"max_qos": 1, "retain": false, "protocols": ["3.1.1", "5"], "note": "a b"})
        );
        assert!(parse_settings(&["max_qos".into()]).is_err());
        assert!(parse_settings(&["a=1".into(), "a=2".into()]).is_err());
    }

    #[test]
    fn own_settings_and_those_in_force_side_by_side() {
        let x = json!({
            "name": "acme", "known": true, "source": "api",
            "own": {"max_connections": 1000},
            "limits": {"max_connections": 1000, "max_qos": 2},
            "usage": {"connections": 3},
        });
        let text = show(&x);
        assert!(
            text.contains(
                "SETTING          OWN    IN FORCE\n\
                 max_connections  1,000  1,000\n\
                 max_qos          -      2\n"
            ),
            "{text}"
        );
        assert_eq!(
            settings_line(&x["limits"]),
            "max_connections=1000, max_qos=2"
        );
    }
}
