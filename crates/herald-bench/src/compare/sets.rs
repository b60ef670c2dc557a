//! The scenario sets `compare` runs, and the columns each broker gives in a set.

use anyhow::bail;
use serde::Serialize;

use crate::brokers::{Durability, Fsync, Kind, Setup};
use crate::scenario::conns::ConnsSpec;
use crate::scenario::flow::flood::FloodSpec;
use crate::scenario::flow::stalled::StalledSpec;
use crate::scenario::traffic::{Pattern, TrafficSpec};

/// One scenario of a set.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Item {
    /// A `conns` run.
    Conns(ConnsSpec),
    /// A fanout, fanin or p2p run.
    Traffic(TrafficSpec),
    /// A `fanin-flood` run at one MQTT version.
    FaninFlood {
        /// The scenario's parameters.
        spec: FloodSpec,
        /// MQTT protocol level: 4 (3.1.1) or 5.
        mqtt_level: u8,
    },
    /// A `stalled` run (MQTT 3.1.1, which every broker speaks).
    Stalled(StalledSpec),
}

impl Item {
    /// The MQTT protocol level the item's clients speak.
    pub fn mqtt_level(&self) -> u8 {
        match self {
            Item::FaninFlood { mqtt_level, .. } => *mqtt_level,
            _ => 4,
        }
    }

    /// A short label for the table.
    pub fn label(&self) -> String {
        match self {
            Item::Conns(c) => format!("conns {}", c.conns),
            Item::FaninFlood { spec, mqtt_level } => {
                let rate = if spec.pub_rate > 0.0 {
                    format!("{} msg/s each", spec.pub_rate)
                } else {
                    "max".into()
                };
                let version = if *mqtt_level == 5 { "5" } else { "3.1.1" };
                format!("fanin-flood {}->1 QoS1 {rate} MQTT {version}", spec.pubs)
            }
            Item::Stalled(s) => format!(
                "stalled {}->{}+1 QoS{} {} msg/s {} s",
                s.pubs, s.subs, s.qos, s.rate, s.duration_s
            ),
            Item::Traffic(t) => {
                let rate = if t.rate > 0.0 {
                    format!("{} msg/s", t.rate)
                } else {
                    "max".into()
                };
                let persistent = if t.persistent { " persistent" } else { "" };
                match t.pattern {
                    Pattern::P2p => {
                        format!("p2p {} pairs QoS{} {rate}{persistent}", t.pubs, t.qos)
                    }
                    _ => format!(
                        "{} {}->{} QoS{} {rate}{persistent}",
                        t.name(),
                        t.pubs,
                        t.subs,
                        t.qos
                    ),
                }
            }
        }
    }
}

/// A fanout, fanin or p2p item with 64-byte payloads, a 10 s drain and a window of 64.
pub(super) fn traffic(
    pattern: Pattern,
    pubs: usize,
    subs: usize,
    qos: u8,
    rate: f64,
    secs: f64,
) -> Item {
    Item::Traffic(TrafficSpec {
        pattern,
        pubs,
        subs,
        qos,
        payload: 64,
        rate,
        duration_s: secs,
        drain_s: 10.0,
        inflight: 64,
        persistent: false,
    })
}

/// 2,000 QoS 1 publishers as fast as they may into one subscriber for 10 s, at MQTT
/// protocol level `mqtt_level`.
fn fanin_flood(mqtt_level: u8) -> Item {
    Item::FaninFlood {
        spec: FloodSpec {
            pubs: 2000,
            pub_rate: 0.0,
            payload: 64,
            duration_s: 10.0,
            idle_s: 3.0,
            max_drain_s: 60.0,
            inflight: 64,
        },
        mqtt_level,
    }
}

/// 1 -> 1,000 at 100 msg/s of 64 B (what every broker here keeps up with), alone and then
/// with a stalled subscriber and its filler (1,000 msg/s of 1 KiB), long enough for the
/// stalled socket's buffers to fill and a slow-consumer timeout (herald's: 30 s) to pass.
pub(super) fn stalled_fanout(qos: u8) -> Item {
    Item::Stalled(StalledSpec {
        pubs: 1,
        subs: 1000,
        qos,
        payload: 64,
        rate: 100.0,
        duration_s: 40.0,
        drain_s: 10.0,
        inflight: 64,
        fill_rate: 1000.0,
        fill_payload: 1024,
        baseline: true,
    })
}

/// A traffic item whose subscribers keep persistent sessions.
fn persistent(item: Item) -> Item {
    match item {
        Item::Traffic(t) => Item::Traffic(TrafficSpec {
            persistent: true,
            ..t
        }),
        other => other,
    }
}

/// The scenarios of a named set.
pub fn scenario_set(name: &str) -> anyhow::Result<Vec<Item>> {
    use Pattern::*;
    Ok(match name {
        "smoke" => vec![
            Item::Conns(ConnsSpec {
                conns: 100,
                ramp: 500.0,
                hold_s: 1.0,
            }),
            traffic(Fanout, 1, 10, 0, 500.0, 2.0),
            traffic(Fanin, 10, 1, 1, 500.0, 2.0),
            traffic(P2p, 10, 10, 0, 200.0, 2.0),
        ],
        "quick" => vec![
            Item::Conns(ConnsSpec {
                conns: 1000,
                ramp: 1000.0,
                hold_s: 3.0,
            }),
            traffic(Fanout, 1, 100, 0, 0.0, 5.0),
            traffic(Fanout, 1, 100, 0, 1000.0, 5.0),
            traffic(Fanin, 100, 1, 0, 2000.0, 5.0),
            traffic(Fanin, 100, 1, 1, 2000.0, 5.0),
            traffic(P2p, 100, 100, 0, 1000.0, 5.0),
        ],
        "standard" => vec![
            Item::Conns(ConnsSpec {
                conns: 1000,
                ramp: 2000.0,
                hold_s: 5.0,
            }),
            Item::Conns(ConnsSpec {
                conns: 10_000,
                ramp: 2000.0,
                hold_s: 5.0,
            }),
            Item::Conns(ConnsSpec {
                conns: 19_000,
                ramp: 2000.0,
                hold_s: 5.0,
            }),
            traffic(Fanout, 1, 1000, 0, 0.0, 10.0),
            traffic(Fanout, 1, 1000, 0, 100.0, 10.0),
            traffic(Fanin, 1000, 1, 0, 20_000.0, 10.0),
            traffic(Fanin, 1000, 1, 1, 20_000.0, 10.0),
            traffic(P2p, 1000, 1000, 0, 10_000.0, 10.0),
        ],
        // The same delivery rate, 5,000/s, in both directions: 100 publishers at 50/s each
        // into one subscriber, one publisher at 50/s out to 100 subscribers.
        "persistence" => vec![
            persistent(traffic(Fanin, 100, 1, 1, 0.0, 10.0)),
            persistent(traffic(Fanin, 100, 1, 1, 5000.0, 10.0)),
            persistent(traffic(Fanout, 1, 100, 1, 0.0, 10.0)),
            persistent(traffic(Fanout, 1, 100, 1, 50.0, 10.0)),
        ],
        "flow" => vec![
            fanin_flood(4),
            fanin_flood(5),
            stalled_fanout(0),
            stalled_fanout(1),
        ],
        other => bail!(
            "unknown --set {other:?}: smoke, quick, standard, persistence, transports or flow"
        ),
    })
}

/// The columns one installed broker gives in `set`: itself in memory, or in the persistence
/// set each way it can store (herald in memory and with two fsync policies, mosquitto
/// without and with persistence), every one with a bound of a million queued messages.
pub(super) fn variants(kind: Kind, set: &str) -> Vec<(String, Setup)> {
    let name = kind.name();
    if set == "flow" {
        // Herald's own default bound, so that the set shows what it does out of the box.
        let setup = Setup {
            max_queued: 10_000,
            ..Setup::default()
        };
        return vec![(name.to_string(), setup)];
    }
    if set != "persistence" {
        return vec![(name.to_string(), Setup::default())];
    }
    let with = |durability| Setup {
        durability,
        max_queued: 1_000_000,
        ..Setup::default()
    };
    match kind {
        Kind::Herald => vec![
            (format!("{name} in-memory"), with(Durability::InMemory)),
            (
                format!("{name} fsync=batch"),
                with(Durability::Store(Fsync::Batch)),
            ),
            (
                format!("{name} fsync=always"),
                with(Durability::Store(Fsync::Always)),
            ),
        ],
        Kind::Mosquitto => vec![
            (
                format!("{name} persistence=false"),
                with(Durability::InMemory),
            ),
            (
                format!("{name} persistence=true"),
                with(Durability::Store(Fsync::Batch)),
            ),
        ],
        Kind::Nats | Kind::Rumqttd => {
            eprintln!("{name}: not in the persistence set, skipped");
            Vec::new()
        }
    }
}
