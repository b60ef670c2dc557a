//! Herald: a real-time MQTT 3.1.1 and 5.0 message gateway.
//!
//! # Map
//!
//! - [`broker`]: the transport-agnostic core — tenants, sessions, the subscription index,
//!   routing and fan-out, QoS state, retained messages, wills, counters.
//! - [`net`]: the accept loop and the per-connection task (handshake, packet handlers,
//!   delivery, vectored writes).
//! - [`config`]: the configuration, its layering (file < `HERALD_*` < flags) and validation.
//! - [`server`]: binds the listeners, runs, drains on shutdown.
//! - [`api`]: the HTTP API (`/api/v1`), health endpoints.
//! - [`runtime`]: worker threads from the CPU quota, the open-file limit.
//! - [`store`]: durable state — the `Store` trait, the disk store (fjall), group commit.
//! - [`cli`]: the command line.
//!
//! The data flow and the concurrency model are described in `docs/architecture.md`.

pub mod api;
pub mod broker;
pub mod cli;
pub mod config;
pub mod logging;
pub mod metrics;
pub mod net;
pub mod reload;
pub mod runtime;
pub mod server;
pub mod store;
