//! The coordinator's side: spawn worker processes, send them commands, gather their events.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use indicatif::ProgressBar;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command as Process};
use tokio::sync::mpsc;

use crate::proto::{Command, Event, WorkerSpec};

/// A set of running worker processes.
pub struct Workers {
    children: Vec<Child>,
    stdins: Vec<ChildStdin>,
    events: mpsc::UnboundedReceiver<(usize, WorkerEvent)>,
}

enum WorkerEvent {
    Event(Event),
    Exited,
}

impl Workers {
    /// Starts one worker process per spec (this same executable, `__worker`).
    pub async fn spawn(specs: Vec<WorkerSpec>) -> anyhow::Result<Workers> {
        let exe = std::env::current_exe().context("locating the herald-bench executable")?;
        let (tx, events) = mpsc::unbounded_channel();
        let mut children = Vec::new();
        let mut stdins = Vec::new();
        for (i, spec) in specs.into_iter().enumerate() {
            let mut child = Process::new(&exe)
                .arg("__worker")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()
                .with_context(|| format!("starting worker {i}"))?;
            let mut stdin = child.stdin.take().context("worker stdin")?;
            let stdout = child.stdout.take().context("worker stdout")?;
            let mut line = serde_json::to_string(&spec)?;
            line.push('\n');
            stdin.write_all(line.as_bytes()).await?;
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(stdout).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    let event = serde_json::from_str(&line).unwrap_or_else(|e| Event::Error {
                        message: format!("unreadable worker output {line:?}: {e}"),
                    });
                    if tx.send((i, WorkerEvent::Event(event))).is_err() {
                        return;
                    }
                }
                let _ = tx.send((i, WorkerEvent::Exited));
            });
            children.push(child);
            stdins.push(stdin);
        }
        Ok(Workers {
            children,
            stdins,
            events,
        })
    }

    /// Process ids of the workers.
    pub fn pids(&self) -> Vec<u32> {
        self.children.iter().filter_map(Child::id).collect()
    }

    /// Sends `cmd` to every worker.
    pub async fn send(&mut self, cmd: &Command) -> anyhow::Result<()> {
        let mut line = serde_json::to_string(cmd)?;
        line.push('\n');
        for (i, stdin) in self.stdins.iter_mut().enumerate() {
            stdin
                .write_all(line.as_bytes())
                .await
                .with_context(|| format!("worker {i} stdin"))?;
        }
        Ok(())
    }

    /// Waits until every worker has sent one `Ready` or `Result` event, and returns them in
    /// worker order. `Progress` events move `bar` (the sum over workers). Fails on a worker
    /// error, a worker that exits first, or when `limit` passes.
    pub async fn gather(
        &mut self,
        bar: Option<&ProgressBar>,
        limit: Duration,
    ) -> anyhow::Result<Vec<Event>> {
        let n = self.children.len();
        let mut got: Vec<Option<Event>> = vec![None; n];
        let mut progress = vec![0u64; n];
        let deadline = tokio::time::Instant::now() + limit;
        while got.iter().any(Option::is_none) {
            let next = tokio::time::timeout_at(deadline, self.events.recv()).await;
            let Ok(Some((i, event))) = next else {
                bail!("workers did not finish within {limit:?}");
            };
            match event {
                WorkerEvent::Event(Event::Progress { done }) => {
                    progress[i] = done;
                    if let Some(bar) = bar {
                        bar.set_position(progress.iter().sum());
                    }
                }
                WorkerEvent::Event(Event::Error { message }) => bail!("worker {i}: {message}"),
                WorkerEvent::Event(event) => got[i] = Some(event),
                WorkerEvent::Exited if got[i].is_none() => {
                    bail!("worker {i} exited before reporting")
                }
                WorkerEvent::Exited => {}
            }
        }
        Ok(got.into_iter().flatten().collect())
    }

    /// Waits for the workers to exit (they do after their last result).
    pub async fn finish(mut self) {
        drop(std::mem::take(&mut self.stdins));
        for child in &mut self.children {
            let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
        }
    }
}

/// The payload of a `Result` event, deserialised into the scenario's type.
pub fn results<T: serde::de::DeserializeOwned>(events: Vec<Event>) -> anyhow::Result<Vec<T>> {
    events
        .into_iter()
        .map(|e| match e {
            Event::Result { data } => Ok(serde_json::from_value(data)?),
            other => bail!("expected a result, got {other:?}"),
        })
        .collect()
}
