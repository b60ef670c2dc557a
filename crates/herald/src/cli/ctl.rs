//! `herald ctl`: a command-line client of Herald's HTTP API (`api`).
//!
//! Each command is one or a few requests to `/api/v1` (`http`), shown as a table or a
//! `name  value` list for people (`table`), or with `--json` as the API's own JSON, pretty,
//! for scripts. One file per area: `status`, `clients` (and subscriptions), `retained`,
//! `publish`, `tenants`, `node` (drain, reload, the log level). An error of the API is shown
//! with its HTTP status, its message and the field it names, and the command exits 1.

mod clients;
mod http;
mod node;
mod paging;
mod publish;
mod retained;
mod status;
mod table;
mod tenants;

use std::io::Write;
use std::time::Duration;

use clap::Subcommand;

/// `herald ctl` flags and command.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Environment: HERALD_URL, HERALD_API_KEY and HERALD_TENANT stand for --url, \
                  --api-key and --tenant. Exit status: 0 on success, 1 on any error (the API's \
                  status and message are printed on stderr)."
)]
pub struct CtlArgs {
    /// Where Herald's HTTP API is (http.listen); a path is kept (behind a proxy).
    #[arg(
        long,
        global = true,
        env = "HERALD_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    url: String,
    /// An API key (http.api_keys, or a tenant's of http.tenant_keys), sent as
    /// `Authorization: Bearer <key>`.
    #[arg(long, global = true, env = "HERALD_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// The tenant to work in, with a node-wide key ("" is the default tenant); a tenant's
    /// key works in its own. Applies to status, clients, subscriptions, retained and publish.
    #[arg(long, global = true, env = "HERALD_TENANT")]
    tenant: Option<String>,
    /// Print the API's JSON (pretty) instead of tables.
    #[arg(long, global = true)]
    json: bool,
    /// Seconds to wait for each answer.
    #[arg(long, global = true, default_value_t = 30, value_name = "SECS")]
    timeout: u64,
    /// What to do.
    #[command(subcommand)]
    command: CtlCommand,
}

/// `herald ctl` commands.
#[derive(Debug, Subcommand)]
enum CtlCommand {
    /// Health, readiness, the node's counters and tenants, and the cluster when clustered.
    Status,
    /// List, look at and disconnect clients (their sessions).
    Clients {
        /// What to do with clients.
        #[command(subcommand)]
        action: clients::ClientsAction,
    },
    /// List subscriptions covered by a topic filter.
    Subscriptions(clients::SubscriptionsArgs),
    /// List, look at and delete retained messages.
    Retained {
        /// What to do with retained messages.
        #[command(subcommand)]
        action: retained::RetainedAction,
    },
    /// Publish a message to MQTT clients.
    Publish(publish::PublishArgs),
    /// Tenants: their settings, where they come from and what they use.
    Tenants {
        /// What to do with tenants.
        #[command(subcommand)]
        action: tenants::TenantsAction,
    },
    /// Drain the node: stop accepting, let clients go over drain.period_secs, then exit.
    Drain,
    /// Reload the configuration: show what was applied and what needs a restart.
    Reload,
    /// Show the log level in force, or change it.
    Log {
        /// `set <filter>` to change it.
        #[command(subcommand)]
        action: Option<node::LogAction>,
    },
}

/// Runs one `herald ctl` command and prints what it answers.
pub fn run(args: CtlArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let output = runtime.block_on(execute(args))?;
    let mut out = std::io::stdout().lock();
    match out.write_all(&output).and_then(|()| out.flush()) {
        // A reader that stopped early (`| head`) is not an error.
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(http::CtlError::Io {
            what: "writing standard output",
            error: e,
        }
        .into()),
        _ => Ok(()),
    }
}

/// The command's output (a payload's bytes for `retained get --raw`), or why it failed.
async fn execute(args: CtlArgs) -> Result<Vec<u8>, http::CtlError> {
    let api = http::Api::new(
        &args.url,
        args.api_key,
        args.tenant,
        Duration::from_secs(args.timeout.max(1)),
    )?;
    let json = args.json;
    let text = match args.command {
        CtlCommand::Retained { action } => return retained::run(&api, json, action).await,
        CtlCommand::Status => status::run(&api, json).await,
        CtlCommand::Clients { action } => clients::run(&api, json, action).await,
        CtlCommand::Subscriptions(a) => clients::subscriptions(&api, json, a).await,
        CtlCommand::Publish(a) => publish::run(&api, json, a).await,
        CtlCommand::Tenants { action } => tenants::run(&api, json, action).await,
        CtlCommand::Drain => node::drain(&api, json).await,
        CtlCommand::Reload => node::reload(&api, json).await,
        CtlCommand::Log { action } => node::log(&api, json, action).await,
    };
    text.map(String::into_bytes)
}
