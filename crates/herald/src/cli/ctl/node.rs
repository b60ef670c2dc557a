//! `herald ctl drain`, `reload` and `log`: the node-wide operations (`POST /api/v1/drain`,
//! `POST /api/v1/reload`, `GET` and `PUT /api/v1/log`); a tenant's key is refused them.

use clap::Subcommand;
use hyper::Method;
use serde_json::{Value, json};

use super::http::{Api, CtlError, Query};
use super::table::{cell, fields, pretty};

/// `herald ctl log set ...`
#[derive(Debug, Subcommand)]
pub(super) enum LogAction {
    /// Change the log level: any tracing filter (info, debug, herald=debug,info).
    Set {
        /// The filter.
        filter: String,
    },
}

/// Starts draining the node.
pub(super) async fn drain(api: &Api, json: bool) -> Result<String, CtlError> {
    let answer = api
        .call(Method::POST, "/api/v1/drain", &Query::default(), None, &[])
        .await?;
    if json {
        return Ok(pretty(&answer));
    }
    Ok(format!(
        "draining: Herald stops accepting, disconnects its clients over {} s, writes its \
         store and exits\n",
        cell(&answer["period_secs"])
    ))
}

/// Reloads the configuration and says what changed.
pub(super) async fn reload(api: &Api, json: bool) -> Result<String, CtlError> {
    let report = api
        .call(Method::POST, "/api/v1/reload", &Query::default(), None, &[])
        .await?;
    if json {
        return Ok(pretty(&report));
    }
    let keys = |v: &Value| -> String {
        let list: Vec<String> = v
            .as_array()
            .into_iter()
            .flatten()
            .map(|k| k.as_str().map_or_else(|| k.to_string(), str::to_owned))
            .collect();
        match list.is_empty() {
            true => "none".into(),
            false => list.join(", "),
        }
    };
    Ok(format!(
        "reloaded\n{}",
        fields(&[
            ("applied", keys(&report["applied"])),
            ("restart required", keys(&report["restart_required"])),
        ])
    ))
}

/// Shows the log level, or sets it.
pub(super) async fn log(
    api: &Api,
    json: bool,
    action: Option<LogAction>,
) -> Result<String, CtlError> {
    let (answer, verb) = match action {
        None => (
            api.get("/api/v1/log", &Query::default()).await?,
            "log level",
        ),
        Some(LogAction::Set { filter }) => {
            let body = json!({ "level": filter });
            let answer = api
                .call(
                    Method::PUT,
                    "/api/v1/log",
                    &Query::default(),
                    Some(&body),
                    &[],
                )
                .await?;
            (answer, "log level set to")
        }
    };
    if json {
        return Ok(pretty(&answer));
    }
    Ok(match answer["level"].as_str() {
        Some(level) => format!("{verb} {level}\n"),
        None => "no log level: Herald runs inside another program, without its logger\n".into(),
    })
}
