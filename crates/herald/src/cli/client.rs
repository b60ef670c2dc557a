//! `herald pub` and `herald sub`: MQTT clients in the spirit of mosquitto_pub and
//! mosquitto_sub, over TCP, TLS, WebSocket and WebSocket over TLS, MQTT 3.1, 3.1.1 and 5,
//! that reconnect by themselves with jittered exponential backoff and resume their session.
//! They are also the worked example of such a client on `mqtt-codec`.
//!
//! # Map
//!
//! - `args`: the flags (clap). `options`: the connection flags checked together: the
//!   endpoint, the CONNECT, TLS, the reconnect policy.
//! - `transport` (with `tls` and `ws`): the byte stream, TCP, TLS, WebSocket or both.
//! - `link`: one MQTT connection: CONNECT/CONNACK, packets both ways, keep-alive, the
//!   server's limits, and [`link::Lost`], why a connection ended.
//! - `reconnect`: connect, and after each failure or loss wait (`backoff`: full jitter) and
//!   connect again; which refusals are final; Server Reference redirects.
//! - `outbound` and `inbound`: the session state of each side, with no I/O (acknowledgements
//!   in, packets out), unit-tested packet by packet: what `pub` sends again after a
//!   reconnect; which QoS 2 messages `sub` has taken.
//! - `publisher` (with `source`, where messages come from) and `subscriber` (with
//!   `output`, how messages are printed): each command's loop, one `select!` per
//!   connection over the server's packets, the keep-alive moment, its own input and Ctrl-C
//!   (`signal`).
//! - `log`: progress and errors on stderr; stdout is for messages.
//!
//! # Guarantees
//!
//! `pub` holds every QoS 1/2 message until it is acknowledged, across reconnects, and
//! exits 0 only when all were. `sub` acknowledges a message only once it is written to
//! standard output and flushed, so nothing acknowledged is lost if the process dies; with a
//! kept session (`-c` or `-x`) nothing the server queued meanwhile is lost across a
//! reconnect either.

mod args;
mod backoff;
mod inbound;
mod link;
mod log;
mod options;
mod outbound;
mod output;
mod publisher;
mod rand;
mod reconnect;
mod signal;
mod source;
mod subscriber;
mod tls;
mod transport;
mod ws;

use std::future::Future;

pub use args::{ConnArgs, PropertyArgs, PubArgs, SubArgs};

/// The exit status of `herald sub` when `-W` passes (mosquitto_sub's, MOSQ_ERR_TIMEOUT).
const EXIT_TIMED_OUT: i32 = 27;

/// Runs `herald pub`.
pub fn run_pub(args: PubArgs) -> anyhow::Result<()> {
    block_on(|shutdown| publisher::run(args, shutdown))?
}

/// Runs `herald sub`; exits the process with status 27 when `-W` passes.
pub fn run_sub(args: SubArgs) -> anyhow::Result<()> {
    match block_on(|shutdown| subscriber::run(args, shutdown))?? {
        subscriber::Exit::Done => Ok(()),
        subscriber::Exit::TimedOut => {
            eprintln!("herald sub: timed out (-W)");
            std::process::exit(EXIT_TIMED_OUT);
        }
    }
}

/// Runs `f` on a single-threaded runtime: a client is one connection and one loop. The
/// Ctrl-C listener is started inside it and handed to `f`.
fn block_on<F, Fut, T>(f: F) -> anyhow::Result<T>
where
    F: FnOnce(signal::Shutdown) -> Fut,
    Fut: Future<Output = T>,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    Ok(runtime.block_on(async { f(signal::Shutdown::listen()).await }))
}
