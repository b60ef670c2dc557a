//! The worker's side: read the spec, play the scenario, report events on stdout.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::proto::{Command, Event, ScenarioSpec, WorkerSpec};
use crate::scenario;

/// Runs this process as a worker until its scenario is done.
pub async fn run() -> anyhow::Result<()> {
    crate::procstat::raise_nofile_limit();
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let first = lines
        .next_line()
        .await?
        .context("no worker spec on stdin")?;
    let spec: WorkerSpec = serde_json::from_str(&first).context("reading the worker spec")?;
    let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            if let Ok(cmd) = serde_json::from_str::<Command>(&line) {
                let _ = cmd_tx.send(cmd);
            }
        }
    });
    let (out, writer) = Emitter::start();
    let mut commands = Commands(cmd_rx);
    let outcome = match spec.scenario.clone() {
        ScenarioSpec::Conns(s) => scenario::conns::worker(&spec, &s, &mut commands, &out).await,
        ScenarioSpec::Traffic(s) => scenario::traffic::worker(&spec, &s, &mut commands, &out).await,
        ScenarioSpec::Storm(s) => scenario::storm::worker(&spec, &s, &mut commands, &out).await,
        ScenarioSpec::NodeDrain(s) => {
            scenario::node_drain::worker(&spec, &s, &mut commands, &out).await
        }
        ScenarioSpec::FaninFlood(s) => {
            scenario::flow::flood::worker(&spec, &s, &mut commands, &out).await
        }
        ScenarioSpec::Stalled(s) => {
            scenario::flow::stalled::worker(&spec, &s, &mut commands, &out).await
        }
    };
    if let Err(e) = outcome {
        out.send(Event::Error {
            message: format!("{e:#}"),
        });
    }
    drop(out);
    let _ = writer.await;
    Ok(())
}

/// Sends events to the coordinator, one JSON line each, from any task.
#[derive(Clone)]
pub struct Emitter(mpsc::UnboundedSender<Event>);

impl Emitter {
    fn start() -> (Emitter, JoinHandle<()>) {
        let (tx, mut rx) = mpsc::unbounded_channel::<Event>();
        let writer = tokio::spawn(async move {
            let mut stdout = tokio::io::stdout();
            while let Some(event) = rx.recv().await {
                let Ok(mut line) = serde_json::to_string(&event) else {
                    continue;
                };
                line.push('\n');
                if stdout.write_all(line.as_bytes()).await.is_err() {
                    return;
                }
                let _ = stdout.flush().await;
            }
        });
        (Emitter(tx), writer)
    }

    /// Sends one event.
    pub fn send(&self, event: Event) {
        let _ = self.0.send(event);
    }

    /// Sends a `Result` event with `data` as its payload.
    pub fn result<T: serde::Serialize>(&self, data: &T) -> anyhow::Result<()> {
        self.send(Event::Result {
            data: serde_json::to_value(data)?,
        });
        Ok(())
    }

    /// Reports `counter` as progress every 200 ms until the returned handle is aborted.
    pub fn progress(&self, counter: Arc<AtomicU64>) -> ProgressTask {
        let out = self.clone();
        ProgressTask(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(200));
            loop {
                tick.tick().await;
                out.send(Event::Progress {
                    done: counter.load(Ordering::Relaxed),
                });
            }
        }))
    }
}

/// A running progress reporter; stops when dropped.
pub struct ProgressTask(JoinHandle<()>);

impl Drop for ProgressTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Commands from the coordinator.
pub struct Commands(mpsc::UnboundedReceiver<Command>);

impl Commands {
    /// The next command; an error when the coordinator has gone.
    pub async fn next(&mut self) -> anyhow::Result<Command> {
        match self.0.recv().await {
            Some(cmd) => Ok(cmd),
            None => bail!("the coordinator closed the command channel"),
        }
    }
}
