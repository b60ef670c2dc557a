//! `storm`: M connected clients drop their connections at the same instant and reconnect,
//! once retrying at once on failure (what naive clients do), once with jittered exponential
//! backoff (full jitter: a uniform wait in [0, min(cap, base * 2^attempt))), after a first
//! uniform wait in [0, jitter). Reports the time until every client is back and the failures
//! on the way.

use std::time::Duration;

use anyhow::bail;
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep};

use super::{
    RunOptions, TimedBar, XorShift, connect_clients, connected_of, failures_of, gather_ready,
    sum_failures,
};
use crate::client::{Client, ClientConfig, FailureCounts, Target, count_failure};
use crate::coord::{Workers, results};
use crate::procstat;
use crate::proto::{
    Command, Event, Latency, ScenarioSpec, WorkerSpec, histogram_to_pairs, merge_pairs,
    new_histogram,
};
use crate::worker::{Commands, Emitter};

/// Parameters of a `storm` run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StormSpec {
    /// Clients that drop and reconnect.
    pub clients: usize,
    /// Seconds a round may last before the clients still out are counted as not back.
    pub max_s: f64,
    /// Backoff base, milliseconds.
    pub backoff_base_ms: u64,
    /// Backoff cap, milliseconds.
    pub backoff_max_ms: u64,
    /// With backoff, the first reconnect waits a uniform time in [0, jitter), milliseconds.
    pub jitter_ms: u64,
}

/// One worker's figures for one round.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StormWorkerRound {
    /// Clients back within the round.
    pub back: u64,
    /// Seconds from the drop until the last of them was back.
    pub last_back_s: f64,
    /// Drop-to-reconnected time per client, (microseconds, count).
    pub reconnect: Vec<(u64, u64)>,
    /// Connection attempts made, successful or not.
    pub attempts: u64,
    /// Failed attempts, by reason.
    pub failures: FailureCounts,
    /// This worker's CPU seconds during the round.
    pub cpu_seconds: f64,
}

/// One round, merged.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StormRound {
    /// "immediate" or "jittered_backoff".
    pub mode: String,
    /// Clients that dropped.
    pub clients: u64,
    /// Clients back within the round's limit.
    pub back: u64,
    /// Seconds until every client was back (or until the last one that came back).
    pub time_to_all_back_s: f64,
    /// Drop-to-reconnected time per client.
    pub reconnect: Latency,
    /// Connection attempts made.
    pub attempts: u64,
    /// Failed attempts, by reason.
    pub failures: FailureCounts,
    /// Broker CPU seconds during the round.
    pub broker_cpu_seconds: Option<f64>,
    /// This tool's CPU seconds during the round.
    pub tool_cpu_seconds: f64,
}

/// The result of a `storm` run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StormReport {
    /// Always "storm".
    pub scenario: String,
    /// The parameters.
    pub spec: StormSpec,
    /// Worker processes.
    pub procs: usize,
    /// Clients connected before the storm.
    pub connected: u64,
    /// Failures while connecting them.
    pub connect_failures: FailureCounts,
    /// Without backoff, then with it.
    pub rounds: Vec<StormRound>,
}

/// Runs `storm` as coordinator.
pub async fn run(opts: &RunOptions, spec: StormSpec) -> anyhow::Result<StormReport> {
    let mut workers = Workers::spawn(opts.specs(ScenarioSpec::Storm(spec.clone()))).await?;
    let ready = gather_ready(&mut workers, opts, spec.clients as u64).await?;
    let connected = ready.iter().map(connected_of).sum();
    let connect_failures = sum_failures(ready.iter().map(failures_of));
    let mut rounds = Vec::new();
    for backoff in [false, true] {
        // Let the broker settle between rounds.
        sleep(Duration::from_secs(1)).await;
        let broker0 = opts.broker_sample();
        let tool0 = procstat::sample("self");
        workers.send(&Command::Storm { backoff }).await?;
        let mode = if backoff {
            "jittered backoff"
        } else {
            "immediate retry"
        };
        let bar = TimedBar::start(opts, spec.max_s, mode);
        let limit = Duration::from_secs_f64(spec.max_s + 30.0);
        let parts: Vec<StormWorkerRound> = results(workers.gather(None, limit).await?)?;
        bar.finish();
        let broker1 = opts.broker_sample();
        let tool1 = procstat::sample("self");
        rounds.push(merge_round(
            backoff,
            connected,
            &parts,
            [broker0, broker1],
            [tool0, tool1],
        ));
    }
    workers.finish().await;
    Ok(StormReport {
        scenario: "storm".into(),
        procs: opts.procs,
        connected,
        connect_failures,
        rounds,
        spec,
    })
}

fn merge_round(
    backoff: bool,
    clients: u64,
    parts: &[StormWorkerRound],
    broker: [Option<procstat::ProcSample>; 2],
    tool: [Option<procstat::ProcSample>; 2],
) -> StormRound {
    let mut hist = new_histogram();
    let mut failures = FailureCounts::new();
    let (mut back, mut last, mut attempts, mut worker_cpu) = (0, 0f64, 0, 0f64);
    for p in parts {
        merge_pairs(&mut hist, &p.reconnect);
        back += p.back;
        last = last.max(p.last_back_s);
        attempts += p.attempts;
        worker_cpu += p.cpu_seconds;
        for (k, v) in &p.failures {
            *failures.entry(k.clone()).or_default() += v;
        }
    }
    let delta =
        |[before, after]: [Option<procstat::ProcSample>; 2]| procstat::cpu_between(before, after);
    StormRound {
        mode: if backoff {
            "jittered_backoff"
        } else {
            "immediate"
        }
        .into(),
        clients,
        back,
        time_to_all_back_s: last,
        reconnect: Latency::from_histogram(&hist),
        attempts,
        failures,
        broker_cpu_seconds: delta(broker),
        tool_cpu_seconds: worker_cpu + delta(tool).unwrap_or(0.0),
    }
}

/// Plays a worker's share of `storm`.
pub async fn worker(
    spec: &WorkerSpec,
    s: &StormSpec,
    cmds: &mut Commands,
    out: &Emitter,
) -> anyhow::Result<()> {
    let cfg = spec.client_config()?;
    let id = |j| client_id(spec, j);
    let (mut clients, failures) =
        connect_clients(spec, &cfg, spec.share(s.clients), id, true, out).await;
    out.send(Event::Ready {
        connected: clients.len() as u64,
        failures,
    });
    for _round in 0..2 {
        let Command::Storm { backoff } = cmds.next().await? else {
            bail!("expected a storm command");
        };
        let cpu0 = procstat::sample("self");
        let ids: Vec<usize> = clients.iter().map(|(j, _)| *j).collect();
        let dropped_at = Instant::now();
        drop(std::mem::take(&mut clients));
        let deadline = dropped_at + Duration::from_secs_f64(s.max_s);
        let mut tasks = JoinSet::new();
        for j in ids {
            let (target, id, s) = (spec.target(j), client_id(spec, j), s.clone());
            tasks.spawn(reconnect(
                j,
                target,
                cfg.clone(),
                id,
                s,
                backoff,
                dropped_at,
                deadline,
            ));
        }
        let mut round = StormWorkerRound::default();
        let mut hist = new_histogram();
        while let Some(joined) = tasks.join_next().await {
            let Ok(outcome) = joined else { continue };
            round.attempts += outcome.attempts;
            for (k, v) in outcome.failures {
                *round.failures.entry(k).or_default() += v;
            }
            if let Some((client, took)) = outcome.client {
                round.back += 1;
                round.last_back_s = round.last_back_s.max(took.as_secs_f64());
                hist.saturating_record((took.as_micros() as u64).max(1));
                clients.push((outcome.index, client));
            }
        }
        round.reconnect = histogram_to_pairs(&hist);
        round.cpu_seconds = procstat::cpu_between(cpu0, procstat::sample("self")).unwrap_or(0.0);
        out.result(&round)?;
    }
    Ok(())
}

fn client_id(spec: &WorkerSpec, j: usize) -> String {
    format!("hb-{}-m{j}", spec.run_id)
}

struct Outcome {
    index: usize,
    client: Option<(Client, Duration)>,
    attempts: u64,
    failures: FailureCounts,
}

#[allow(clippy::too_many_arguments)]
async fn reconnect(
    index: usize,
    target: Target,
    cfg: ClientConfig,
    id: String,
    s: StormSpec,
    backoff: bool,
    dropped_at: Instant,
    deadline: Instant,
) -> Outcome {
    let mut rng = XorShift::new(
        crate::client::unix_nanos() ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
    );
    let mut outcome = Outcome {
        index,
        client: None,
        attempts: 0,
        failures: FailureCounts::new(),
    };
    if backoff {
        sleep(Duration::from_millis(rng.below(s.jitter_ms))).await;
    }
    let mut failed = 0u32;
    while Instant::now() < deadline {
        outcome.attempts += 1;
        let left = deadline.saturating_duration_since(Instant::now());
        let cfg = ClientConfig {
            timeout: cfg.timeout.min(left),
            ..cfg.clone()
        };
        match Client::connect(target, &cfg, &id, true).await {
            Ok(client) => {
                outcome.client = Some((client, dropped_at.elapsed()));
                return outcome;
            }
            Err(f) => count_failure(&mut outcome.failures, &f),
        }
        failed += 1;
        if backoff {
            let window = s
                .backoff_base_ms
                .saturating_mul(1 << failed.min(20))
                .min(s.backoff_max_ms);
            sleep(Duration::from_millis(rng.below(window))).await;
        } else {
            tokio::task::yield_now().await;
        }
    }
    outcome
}

#[cfg(test)]
mod tests {
    use crate::scenario::XorShift;

    #[test]
    fn jitter_stays_in_bounds_and_spreads() {
        let mut rng = XorShift::new(42);
        let draws: Vec<u64> = (0..1000).map(|_| rng.below(100)).collect();
        assert!(draws.iter().all(|&d| d < 100));
        assert!(draws.iter().any(|&d| d < 10) && draws.iter().any(|&d| d >= 90));
        assert_eq!(rng.below(0), 0);
    }
}
