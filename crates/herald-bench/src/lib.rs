//! herald-bench: a load generator that measures any MQTT 3.1.1/5.0 broker, and a side-by-side
//! comparison of several.
//!
//! # Map
//!
//! - [`client`]: a minimal MQTT client on `mqtt-codec` (batched reads and writes), over a
//!   [`transport`]: TCP, TLS, WebSocket or WebSocket over TLS (`--transport`).
//! - [`scenario`]: `conns`, `fanout`/`fanin`/`p2p` ([`scenario::traffic`]), `storm`,
//!   `node-drain` ([`scenario::node_drain`]: herald nodes it starts itself) and the
//!   flow-control scenarios `fanin-flood` and `stalled` ([`scenario::flow`]), each with a
//!   coordinator side (`run`) and a worker side (`worker`).
//! - [`coord`] and [`worker`]: every run is carried out by worker processes (one or more,
//!   `--procs`) that the coordinating process starts, commands and merges; [`proto`] is what
//!   they say to each other.
//! - [`compare`]: starts brokers (herald, mosquitto, nats-server, rumqttd), runs the same
//!   scenario set against each, writes a markdown table and a JSON file.
//! - [`report`]: human-readable summaries.
//! - [`procstat`]: CPU and memory readings from `/proc`.

pub mod brokers;
pub mod cli;
pub mod client;
pub mod compare;
pub mod coord;
pub mod procstat;
pub mod proto;
pub mod report;
pub mod scenario;
pub mod transport;
pub mod worker;
