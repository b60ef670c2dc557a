//! Herald: a real-time MQTT 3.1.1 and 5.0 message gateway.
//!
//! # Map
//!
//! Layers, highest first; each uses only those below it (checked by `tests/layers.rs`):
//!
//! - [`cli`], `main.rs`: the command line.
//! - [`server`]: binds the listeners, runs, drains on shutdown.
//! - `api` (private): the HTTP API (`/api/v1`), health endpoints, the Prometheus renderer.
//! - [`reload`]: re-reading the configuration and swapping it in.
//! - [`auth`]: identity: the authentication chain (password file, JWT, HTTP callout,
//!   certificates), ACLs and where a client's tenant comes from, plugged into the hook seam.
//! - [`cluster`]: many nodes as one broker over NATS (topics as subjects so far).
//! - [`net`]: sockets only: listeners, the PROXY/TLS/WebSocket handshakes, the
//!   readiness-driven connection task, the write queue.
//! - [`broker`]: the session core (`broker::session`: the MQTT protocol of a connection,
//!   with no I/O) over the broker core (tenants, the subscription index, routing, retained
//!   messages, flow control), the persistence seam (`broker::persist`) and the hook seam
//!   (`broker::hooks`).
//! - [`store`]: durable state: the `Store` trait, the disk store (fjall), group commit.
//! - [`config`], `metrics` (private: the counters), [`logging`], [`runtime`]: leaves.
//!
//! What the binary, the tests and herald-bench use is public; the rest is `pub(crate)`. The
//! data flow, the concurrency model and the lock order are in `docs/architecture.md`.

pub(crate) mod api;
pub mod auth;
pub mod broker;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod logging;
pub(crate) mod metrics;
pub mod net;
pub mod reload;
pub mod runtime;
pub mod server;
pub mod store;
