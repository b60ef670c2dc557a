//! The last hour of a node's figures, kept in memory for the dashboard's charts
//! (`GET /api/v1/stats/history`): no Prometheus needed to see a graph.
//!
//! A sampler takes the node's counters and gauges every `INTERVAL` into a ring of `POINTS`
//! points (allocated once at start: about 70 KB), turning counters into rates over the
//! interval; the same tick ends the busiest topics' window (`broker::topics`). The
//! readings that touch the file system (the store's size, /proc) run on the blocking pool.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::watch;

use super::process::Process;
use super::{ApiError, ApiState, Authorized};
use crate::broker::Broker;
use crate::broker::stats::{CloseReason, DropReason, RefuseReason};

/// How often a point is taken.
pub(super) const INTERVAL: Duration = Duration::from_secs(5);

/// Points kept: an hour of them.
pub(super) const POINTS: usize = 720;

/// The series, in the order of a point's values and of the API's answer.
const SERIES: [&str; 12] = [
    "connections",
    "connections_accepted_per_sec",
    "published_per_sec",
    "delivered_per_sec",
    "dropped_per_sec",
    "closed_per_sec",
    "refused_per_sec",
    "queued_bytes",
    "store_bytes",
    "open_fds",
    "cpu_percent",
    "resident_bytes",
];

/// Counting descriptors takes time in proportion to them: past this many, they are counted
/// every `FDS_EVERY` points only (the value in between is the last one counted).
const MANY_FDS: u64 = 50_000;
const FDS_EVERY: u32 = 12;

/// One point: when (milliseconds since the Unix epoch) and each series' value (`NaN`: none,
/// e.g. the store's size when the node keeps everything in memory).
#[derive(Debug, Clone, Copy)]
struct Point {
    t_ms: u64,
    values: [f64; SERIES.len()],
}

/// The ring of points.
#[derive(Debug)]
pub(crate) struct History {
    points: Mutex<VecDeque<Point>>,
}

impl Default for History {
    fn default() -> History {
        History {
            points: Mutex::new(VecDeque::with_capacity(POINTS)),
        }
    }
}

impl History {
    fn push(&self, point: Point) {
        let mut points = self.points.lock().unwrap_or_else(|p| p.into_inner());
        if points.len() == POINTS {
            points.pop_front();
        }
        points.push_back(point);
    }

    /// The points taken after `since_ms`, as columns.
    fn columns(&self, since_ms: u64) -> Value {
        let points = self.points.lock().unwrap_or_else(|p| p.into_inner());
        let chosen: Vec<&Point> = points.iter().filter(|p| p.t_ms > since_ms).collect();
        let mut series = serde_json::Map::new();
        for (i, name) in SERIES.iter().enumerate() {
            let column: Vec<Value> = chosen
                .iter()
                .map(|p| {
                    let v = p.values[i];
                    if v.is_finite() { json!(v) } else { Value::Null }
                })
                .collect();
            series.insert((*name).to_string(), Value::Array(column));
        }
        json!({
            "interval_secs": INTERVAL.as_secs(),
            "capacity": POINTS,
            "t": chosen.iter().map(|p| p.t_ms).collect::<Vec<_>>(),
            "series": series,
        })
    }
}

/// The counters a point's rates are taken from.
#[derive(Debug, Clone, Copy)]
struct Counters {
    at: Instant,
    accepted: u64,
    published: u64,
    delivered: u64,
    dropped: u64,
    closed: u64,
    refused: u64,
    cpu_seconds: f64,
}

impl Counters {
    fn take(broker: &Broker, cpu_seconds: f64) -> Counters {
        let s = &broker.stats;
        Counters {
            at: Instant::now(),
            accepted: s.accepted.load(Ordering::Relaxed),
            published: s.published.load(Ordering::Relaxed),
            delivered: s.delivered.load(Ordering::Relaxed),
            dropped: DropReason::ALL.iter().map(|r| s.drops(*r)).sum(),
            closed: CloseReason::ALL.iter().map(|r| s.closes(*r)).sum(),
            refused: RefuseReason::ALL.iter().map(|r| s.refusals(*r)).sum(),
            cpu_seconds,
        }
    }
}

/// What the sampler carries from one point to the next.
#[derive(Debug)]
struct Sampler {
    last: Counters,
    fds: Option<u64>,
    points: u32,
}

impl Sampler {
    /// Takes a point (on the blocking pool: it reads /proc and walks the store's directory).
    fn point(&mut self, broker: &Broker) -> Point {
        self.points = self.points.wrapping_add(1);
        let count_fds =
            self.fds.is_none_or(|n| n < MANY_FDS) || self.points.is_multiple_of(FDS_EVERY);
        let process = Process::read(count_fds);
        if process.open_fds.is_some() {
            self.fds = process.open_fds;
        }
        let now = Counters::take(broker, process.cpu_seconds);
        let then = std::mem::replace(&mut self.last, now);
        let secs = now.at.duration_since(then.at).as_secs_f64().max(0.001);
        let rate = |a: u64, b: u64| round1(b.saturating_sub(a) as f64 / secs);
        broker.topics.roll(secs, now.published);
        let store = broker
            .persist
            .durable()
            .map_or(f64::NAN, |d| d.journal.store().disk_bytes() as f64);
        let t_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        Point {
            t_ms,
            values: [
                broker.stats.open.load(Ordering::Relaxed) as f64,
                rate(then.accepted, now.accepted),
                rate(then.published, now.published),
                rate(then.delivered, now.delivered),
                rate(then.dropped, now.dropped),
                rate(then.closed, now.closed),
                rate(then.refused, now.refused),
                broker.stats.queued_bytes() as f64,
                store,
                self.fds.map_or(f64::NAN, |n| n as f64),
                round1((now.cpu_seconds - then.cpu_seconds).max(0.0) / secs * 100.0),
                process.resident_bytes as f64,
            ],
        }
    }
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

impl ApiState {
    /// Takes a point of the node's history every `INTERVAL` until shutdown.
    pub(crate) async fn sample_history(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let cpu = Process::read(false).cpu_seconds;
        let mut sampler = Some(Sampler {
            last: Counters::take(&self.broker, cpu),
            fds: None,
            points: 0,
        });
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + INTERVAL, INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            let Some(mut s) = sampler.take() else { return };
            let broker = self.broker.clone();
            let Ok((s, point)) = tokio::task::spawn_blocking(move || {
                let point = s.point(&broker);
                (s, point)
            })
            .await
            else {
                return;
            };
            sampler = Some(s);
            self.history.push(point);
        }
    }
}

/// `GET /api/v1/stats/history` parameters.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct HistoryQuery {
    /// Only the points taken after this instant (milliseconds since the Unix epoch): what
    /// a chart that has the rest asks for.
    since: Option<u64>,
}

/// `GET /api/v1/stats/history`: the node's last hour (node-wide keys only: the figures
/// cover every tenant).
pub(super) async fn history(
    State(state): State<Arc<ApiState>>,
    auth: Authorized,
    query: Result<Query<HistoryQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    auth.node_wide("the node's history")?;
    let q = super::query_of(query)?;
    Ok(Json(state.history.columns(q.since.unwrap_or(0))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(t_ms: u64, v: f64) -> Point {
        Point {
            t_ms,
            values: [v; SERIES.len()],
        }
    }

    #[test]
    fn the_ring_keeps_the_last_hour_and_answers_from_an_instant() {
        let h = History::default();
        for i in 0..POINTS as u64 + 10 {
            h.push(point(1000 + i, i as f64));
        }
        let all = h.columns(0);
        assert_eq!(all["t"].as_array().map(Vec::len), Some(POINTS));
        assert_eq!(all["t"][0], 1010);
        assert_eq!(all["series"]["connections"][0], 10.0);
        let recent = h.columns(1000 + POINTS as u64 + 7);
        assert_eq!(
            recent["t"],
            json!([1000 + POINTS as u64 + 8, 1000 + POINTS as u64 + 9])
        );
        assert_eq!(
            recent["series"]["cpu_percent"],
            json!([(POINTS + 8) as f64, (POINTS + 9) as f64])
        );
        h.push(point(5000, f64::NAN));
        assert_eq!(h.columns(4999)["series"]["store_bytes"], json!([null]));
        assert_eq!(
            h.points.lock().map(|p| p.capacity() >= POINTS).ok(),
            Some(true)
        );
    }
}
