//! The `herald` binary: parse flags, load the configuration, size the runtime, serve until
//! SIGINT or SIGTERM, drain, exit 0.

use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use herald::cli::{Args, Command, ConfigAction, ServeArgs};
use herald::config::Config;
use herald::server::Server;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    match args.command {
        Command::Config {
            action: ConfigAction::Generate,
        } => {
            print!("{}", herald::config::generate());
            Ok(())
        }
        Command::Serve(serve) => run(*serve),
        Command::Passwd(passwd) => herald::cli::passwd::run(&passwd),
        Command::Ctl(ctl) => herald::cli::ctl::run(ctl),
        Command::Pub(args) => herald::cli::client::run_pub(args),
        Command::Sub(args) => herald::cli::client::run_sub(args),
    }
}

fn run(args: ServeArgs) -> anyhow::Result<()> {
    let config = Config::load(args.config.as_deref(), std::env::vars(), &args.overrides())
        .context("invalid configuration")?;
    herald::logging::init(&config.log.level, &config.log.format)?;
    let (before, after, hard) = herald::runtime::raise_nofile_limit();
    tracing::info!(soft_before = before, soft = after, hard, "open-file limit");
    let (threads, why) = herald::runtime::worker_threads(config.runtime.worker_threads);
    tracing::info!(threads, reason = %why, "worker threads");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        // Signals are taken over before anything listens: a SIGTERM arriving while the
        // server starts is a drain, not the default action that kills the process with its
        // clients' connections unanswered.
        let signals = Signals::install();
        let server = Server::start(config).await?;
        server.set_config_source(herald::reload::ConfigSource {
            file: args.config.clone(),
            env: std::env::vars().collect(),
            overrides: args.overrides(),
        });
        let drain_secs = server.broker().config().drain.period_secs;
        match wait_for_signal(&server, signals).await {
            Stop::Drain => {
                tracing::info!(period_secs = drain_secs, "draining");
                server
                    .drain(Duration::from_secs(drain_secs), Duration::from_secs(10))
                    .await;
            }
            Stop::Now => {
                tracing::info!("shutting down");
                server.shutdown(Duration::from_secs(10)).await;
            }
        }
        Ok(())
    })
}

/// How to stop.
enum Stop {
    /// SIGTERM or `POST /api/v1/drain`: let the clients go gradually.
    Drain,
    /// SIGINT (Ctrl-C): at once.
    Now,
}

/// SIGTERM and SIGHUP, listened for (or why they cannot be).
struct Signals(std::io::Result<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>);

impl Signals {
    fn install() -> Signals {
        use tokio::signal::unix::{SignalKind, signal};
        Signals(signal(SignalKind::terminate()).and_then(|term| {
            let hup = signal(SignalKind::hangup())?;
            Ok((term, hup))
        }))
    }
}

/// Waits for SIGTERM, `POST /api/v1/drain` or SIGINT; on SIGHUP, reloads the configuration.
async fn wait_for_signal(server: &Server, signals: Signals) -> Stop {
    let (mut term, mut hup) = match signals.0 {
        Ok(both) => both,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM or SIGHUP; stop with Ctrl-C");
            let _ = tokio::signal::ctrl_c().await;
            return Stop::Now;
        }
    };
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Stop::Now,
            _ = term.recv() => return Stop::Drain,
            _ = server.drain_requested() => return Stop::Drain,
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reloading the configuration");
                // A failure is logged; the running configuration stays.
                let _ = server.reload();
            }
        }
    }
}
