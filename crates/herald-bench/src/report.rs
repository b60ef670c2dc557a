//! Human-readable summaries of each scenario's report.

use std::fmt::Write;

use crate::client::FailureCounts;
use crate::proto::Latency;
use crate::scenario::conns::ConnsReport;
use crate::scenario::crash::CrashReport;
use crate::scenario::flow::flood::FloodReport;
use crate::scenario::flow::stalled::{StalledOutcome, StalledReport};
use crate::scenario::node_drain::{self, NodeDrainReport};
use crate::scenario::queue::{DrainReport, FillReport, RestartReport};
use crate::scenario::storm::StormReport;
use crate::scenario::traffic::TrafficReport;
use crate::scenario::{AckCounts, CpuUse};

fn failures(f: &FailureCounts) -> String {
    if f.is_empty() {
        return "none".into();
    }
    f.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn latency(l: &Latency) -> String {
    format!(
        "p50 {:.3} ms, p90 {:.3}, p99 {:.3}, p99.9 {:.3}, max {:.3} ({} samples)",
        l.p50_ms, l.p90_ms, l.p99_ms, l.p999_ms, l.max_ms, l.count
    )
}

fn mib(bytes: Option<u64>) -> String {
    bytes.map_or("-".into(), |b| format!("{:.1} MiB", b as f64 / 1_048_576.0))
}

fn cpu(c: &CpuUse) -> String {
    let per_m = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.2}"));
    format!(
        "broker {} s ({} s per million deliveries), rss {} -> {}; herald-bench {:.2} s ({} s per million)",
        c.broker_cpu_seconds
            .map_or("-".into(), |v| format!("{v:.2}")),
        per_m(c.broker_cpu_s_per_million),
        mib(c.broker_rss_before),
        mib(c.broker_rss_after),
        c.tool_cpu_seconds,
        per_m(c.tool_cpu_s_per_million),
    )
}

/// Summary of a `conns` run.
pub fn conns(r: &ConnsReport) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "conns: {} of {} connected at {:.0}/s ({} procs); failures: {}",
        r.connected,
        r.spec.conns,
        r.connect_rate_per_s,
        r.procs,
        failures(&r.failures)
    );
    let _ = writeln!(
        s,
        "  connect+subscribe latency: {}",
        latency(&r.connect_latency)
    );
    let _ = writeln!(
        s,
        "  alive after {:.0} s hold: {}; lost: {}",
        r.spec.hold_s,
        r.alive_after_hold,
        failures(&r.lost)
    );
    let _ = writeln!(
        s,
        "  broker rss: {} before, {} connected, {} after hold; {} per connection",
        mib(r.broker_rss_before),
        mib(r.broker_rss_connected),
        mib(r.broker_rss_after_hold),
        r.broker_bytes_per_conn
            .map_or("-".into(), |b| format!("{b:.0} B")),
    );
    let _ = writeln!(
        s,
        "  cpu: broker {} s, herald-bench {:.2} s",
        r.broker_cpu_seconds
            .map_or("-".into(), |v| format!("{v:.2}")),
        r.tool_cpu_seconds
    );
    s
}

/// Summary of a fanout, fanin or p2p run.
pub fn traffic(r: &TrafficReport) -> String {
    let mut s = String::new();
    let t = &r.spec;
    let rate = if t.rate > 0.0 {
        format!("{} msg/s", t.rate)
    } else {
        "max rate".into()
    };
    let _ = writeln!(
        s,
        "{}: {} pubs -> {} subs, QoS {}, {} B, {rate}, {} s ({} procs)",
        r.scenario, t.pubs, t.subs, t.qos, t.payload, t.duration_s, r.procs
    );
    let _ = writeln!(
        s,
        "  connected: {} subs, {} pubs; failures: {}",
        r.subs_connected,
        r.pubs_connected,
        failures(&r.connect_failures)
    );
    let _ = writeln!(
        s,
        "  published {} ({:.0}/s), delivered {} of {} ({:.0}/s, ratio {:.4})",
        r.published,
        r.published_per_s,
        r.delivered,
        r.expected,
        r.delivered_per_s,
        r.delivery_ratio
    );
    if r.acks.total() > 0 {
        let _ = writeln!(s, "  acks: {}", acks(&r.acks));
    }
    let _ = writeln!(s, "  latency: {}", latency(&r.latency));
    let _ = writeln!(s, "  cpu: {}", cpu(&r.cpu));
    if !r.errors.is_empty() {
        let _ = writeln!(s, "  connections lost: {}", failures(&r.errors));
    }
    s
}

fn acks(a: &AckCounts) -> String {
    let codes: Vec<String> = a
        .by_code
        .iter()
        .map(|(c, n)| format!("0x{c:02x}={n}"))
        .collect();
    format!(
        "{} success, {} quota exceeded (0x97), {} other [{}]",
        a.success,
        a.quota_exceeded,
        a.other,
        codes.join(" ")
    )
}

fn protocol(level: u8) -> &'static str {
    match level {
        3 => "MQTT 3.1",
        5 => "MQTT 5",
        _ => "MQTT 3.1.1",
    }
}

/// Summary of a `fanin-flood` run.
pub fn fanin_flood(r: &FloodReport) -> String {
    let mut s = String::new();
    let t = &r.spec;
    let rate = if t.pub_rate > 0.0 {
        format!("{} msg/s each", t.pub_rate)
    } else {
        "max rate".into()
    };
    let _ = writeln!(
        s,
        "fanin-flood: {} QoS 1 pubs -> 1 sub, {}, {} B, {rate}, {} s, drain until {} s idle \
         ({} procs)",
        t.pubs,
        protocol(r.mqtt_level),
        t.payload,
        t.duration_s,
        t.idle_s,
        r.procs
    );
    let _ = writeln!(
        s,
        "  connected: {} pubs, subscriber {}; failures: {}",
        r.pubs_connected,
        if r.subscriber_connected { "yes" } else { "NO" },
        failures(&r.connect_failures)
    );
    let _ = writeln!(
        s,
        "  published {} ({:.0}/s); acks: {}; unacknowledged {}",
        r.published,
        r.published_per_s,
        acks(&r.acks),
        r.unacknowledged
    );
    let _ = writeln!(
        s,
        "  received {} distinct ({:.0}/s), {} duplicates, {} unrecognised; last {:.2} s after \
         publishing",
        r.received, r.received_per_s, r.duplicates, r.unrecognised, r.drain_s
    );
    let _ = writeln!(
        s,
        "  acknowledged but not delivered: {} ({:.2}% of successes); delivered though not \
         acknowledged: {}",
        r.acked_not_delivered,
        r.acked_not_delivered_ratio * 100.0,
        r.delivered_not_acked
    );
    let _ = writeln!(s, "  latency: {}", latency(&r.latency));
    let _ = writeln!(s, "  cpu: {}", cpu(&r.cpu));
    if !r.errors.is_empty() {
        let _ = writeln!(s, "  connections lost: {}", failures(&r.errors));
    }
    s
}

fn stalled_outcome(o: &StalledOutcome) -> String {
    if !o.subscribed {
        return format!(
            "did not subscribe ({})",
            o.failure.as_deref().unwrap_or("?")
        );
    }
    let state = if !o.disconnected {
        "still connected after the round".to_string()
    } else {
        let when = o
            .disconnect_seen_after_s
            .map_or("on waking up".into(), |t| {
                format!("{t:.1} s into the round")
            });
        format!(
            "disconnected, seen {when} ({}{})",
            o.ended_by.as_deref().unwrap_or("?"),
            o.disconnect_reason
                .as_ref()
                .map_or(String::new(), |r| format!(", DISCONNECT {r}"))
        )
    };
    let filler = if o.filler_acks.total() > 0 {
        format!(" (acks: {})", acks(&o.filler_acks))
    } else {
        String::new()
    };
    format!(
        "{state}; {} PINGREQs written; {} publications read on waking; filler published \
         {}{filler}",
        o.pings, o.received_on_wake, o.filler_published
    )
}

/// Summary of a `stalled` run: one block per round, then the two side by side.
pub fn stalled(r: &StalledReport) -> String {
    let mut s = String::new();
    let t = &r.spec;
    let rate = if t.rate > 0.0 {
        format!("{} msg/s", t.rate)
    } else {
        "max rate".into()
    };
    let _ = writeln!(
        s,
        "stalled: {} pubs -> {} fast subs (+1 stalled, filler {} msg/s of {} B), QoS {}, {}, \
         {} B, {rate}, {} s a round ({} procs); failures: {}",
        t.pubs,
        t.subs,
        t.fill_rate,
        t.fill_payload,
        t.qos,
        protocol(r.mqtt_level),
        t.payload,
        t.duration_s,
        r.procs,
        failures(&r.connect_failures)
    );
    for round in &r.rounds {
        let _ = writeln!(
            s,
            "  {}: {} subs, published {} ({:.0}/s), delivered {} of {} ({:.0}/s, ratio {:.4})",
            if round.with_stalled {
                "with stalled"
            } else {
                "alone"
            },
            round.subs_connected,
            round.published,
            round.published_per_s,
            round.delivered,
            round.expected,
            round.delivered_per_s,
            round.delivery_ratio
        );
        let _ = writeln!(s, "    latency: {}", latency(&round.latency));
        if round.stale > 0 {
            let _ = writeln!(
                s,
                "    {} deliveries of messages sent before the round (not counted)",
                round.stale
            );
        }
        if round.acks.total() > 0 {
            let _ = writeln!(s, "    acks: {}", acks(&round.acks));
        }
        if let Some(o) = &round.stalled {
            let _ = writeln!(s, "    stalled subscriber: {}", stalled_outcome(o));
        }
        if !round.errors.is_empty() {
            let _ = writeln!(s, "    connections lost: {}", failures(&round.errors));
        }
        let _ = writeln!(s, "    cpu: {}", cpu(&round.cpu));
    }
    let sum = &r.summary;
    if let (Some(a), Some(w)) = (sum.p99_alone_ms, sum.p99_with_stalled_ms) {
        let _ = writeln!(
            s,
            "  fast subscribers' p99: {a:.3} ms alone, {w:.3} ms with the stalled one ({})",
            sum.p99_ratio.map_or("-".into(), |x| format!("{x:.2}x"))
        );
    }
    s
}

/// Summary of a `storm` run.
pub fn storm(r: &StormReport) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "storm: {} clients connected ({} procs); failures: {}",
        r.connected,
        r.procs,
        failures(&r.connect_failures)
    );
    for round in &r.rounds {
        let _ = writeln!(
            s,
            "  {}: {} of {} back in {:.3} s, {} attempts, failures: {}",
            round.mode,
            round.back,
            round.clients,
            round.time_to_all_back_s,
            round.attempts,
            failures(&round.failures)
        );
        let _ = writeln!(s, "    reconnect time: {}", latency(&round.reconnect));
    }
    s
}

/// Summary of a `node-drain` run: one table row per round, then reconnects per second.
pub fn node_drain(r: &NodeDrainReport) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "node-drain: {} MQTT 5 clients on herald A follow it to B (drain period {} s, {} procs)",
        r.spec.clients, r.spec.drain_secs, r.spec.procs
    );
    let _ = writeln!(
        s,
        "  {:<7} {:<19} {:>6} {:>6} {:>12} {:>10} {:>8} {:>9}  failures",
        "round", "trigger", "on A", "on B", "all back in", "peak/100ms", "peak/s", "attempts"
    );
    let clustered = r.spec.cluster.is_some();
    for round in &r.rounds {
        let _ = writeln!(
            s,
            "  {:<7} {:<19} {:>6} {:>6} {:>12} {:>10} {:>8} {:>9}  {}",
            round.mode,
            round.trigger,
            round.connected_to_a,
            round.back_on_b,
            round
                .time_to_all_back_s
                .map_or("never".into(), |t| format!("{t:.2} s")),
            round.peak_per_100ms,
            round.peak_per_s,
            round.attempts,
            failures(&round.failures)
        );
    }
    if clustered {
        for round in &r.rounds {
            let _ = writeln!(
                s,
                "  {}: sessions resumed on B (moved from A): {} of {}",
                round.mode, round.resumed_on_b, round.back_on_b
            );
        }
    }
    for round in &r.rounds {
        let per_s = node_drain::per_second(&round.buckets, |b| b.back);
        let _ = writeln!(
            s,
            "  {}: reconnects per second {:?}; A's connections ended: {}; A exited after {} (code {})",
            round.mode,
            per_s,
            failures(&round.ends),
            secs(round.a_exit_s),
            round.a_exit_code.map_or("-".into(), |c| c.to_string())
        );
    }
    s
}

/// Summary of a `fill` run.
pub fn fill(r: &FillReport) -> String {
    format!(
        "fill: {} of {} QoS {} messages acknowledged in {:.2} s ({:.0}/s) for {} on {} \
         (session present before: {})\n",
        r.acked,
        r.spec.count,
        r.spec.qos,
        r.seconds,
        r.acked_per_s,
        r.spec.client_id,
        r.spec.topic,
        r.subscriber_session_present
    )
}

fn secs(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.3} s"))
}

/// Summary of a `drain` run.
pub fn drain(r: &DrainReport) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "drain: {}: {} of {} distinct messages (session present: {}{})",
        r.client_id,
        r.unique,
        r.expected,
        r.session_present,
        if r.idle_timeout {
            ", ended on the idle timeout"
        } else {
            ""
        }
    );
    let _ = writeln!(
        s,
        "  missing {}, duplicates {}, out of order {}, unexpected {}",
        r.missing, r.duplicates, r.out_of_order, r.unexpected
    );
    let _ = writeln!(
        s,
        "  connect {:.3} s, first message {}, last {} ({:.0}/s)",
        r.connect_s,
        secs(r.first_message_s),
        secs(r.last_message_s),
        r.per_s
    );
    s
}

/// Summary of a `restart` run.
pub fn restart(r: &RestartReport) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "restart: {}",
        r.config.lines().collect::<Vec<_>>().join("; ")
    );
    s.push_str(&fill(&r.fill));
    let _ = writeln!(
        s,
        "{}: exited after {:.3} s (clean: {}); restarted in {:.3} s; \
         restart + drain {:.3} s",
        r.stop_signal, r.shutdown_s, r.clean_shutdown, r.restart_s, r.restart_plus_drain_s
    );
    s.push_str(&drain(&r.drain));
    s
}

/// Summary of a `crash` run.
pub fn crash(r: &CrashReport) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "crash: {} with {} SIGKILLs (seed {}), {:.1} s",
        r.spec.broker.name(),
        r.kills.len(),
        r.spec.seed,
        r.seconds
    );
    for (i, k) in r.kills.iter().enumerate() {
        let _ = writeln!(
            s,
            "  kill {} while {} at {:.2} s, restarted in {:.3} s",
            i + 1,
            k.phase,
            k.at_s,
            k.restart_s
        );
    }
    let _ = writeln!(
        s,
        "  published {}, acknowledged {}, deliveries owed {}, delivered {}",
        r.published, r.acknowledged, r.expected_deliveries, r.delivered
    );
    let _ = writeln!(
        s,
        "  acknowledged but lost: {}; QoS 2 duplicates: {}; QoS 1 re-deliveries: {}",
        r.acknowledged_but_lost, r.qos2_duplicates, r.qos1_redeliveries
    );
    let _ = writeln!(
        s,
        "  subscriptions survived: {}; retained message survived: {}; durable: {}",
        r.subscriptions_survived, r.retained_survived, r.durable
    );
    for sub in &r.subscribers {
        let _ = writeln!(
            s,
            "    {}: {} distinct, {} connections, {} sessions lost, probe received: {}",
            sub.client_id, sub.unique, sub.connections, sub.sessions_lost, sub.probe_received
        );
    }
    for p in &r.publishers {
        let _ = writeln!(
            s,
            "    {} QoS {}: {} published, {} acked, {} re-sent, {} abandoned, {} refused, \
             {} sessions lost",
            p.client_id,
            p.qos,
            p.published,
            p.acked,
            p.resent,
            p.abandoned,
            p.refused,
            p.sessions_lost
        );
    }
    s
}
