//! The HTTP listener: Herald's own accept loop around hyper, so that HTTP clients are bounded
//! as MQTT clients are.
//!
//! - A connection has `http.header_timeout_secs` to send a request's head, counted from its
//!   opening or from the request's first byte, and may pass `http.idle_timeout_secs` without
//!   a byte in either direction (between requests, or with a stalled body or answer). Either
//!   deadline closes it, counted by phase. One timer per connection, re-armed only when it
//!   fires: the socket and the requests just record when they last moved.
//! - Past `http.max_connections` open connections, a new one is closed as soon as it is
//!   accepted (no answer: writing one could block, and unread request bytes would turn the
//!   close into a reset anyway), counted, and the first refusal of a run is logged.
//! - On shutdown the loop stops accepting, idle connections close, requests in progress
//!   finish, and the loop returns once every connection has ended (as `axum::serve` did).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tower::ServiceExt as _;

use super::ApiState;

/// The HTTP listener's counters, for `/metrics`.
#[derive(Debug, Default)]
pub(crate) struct HttpCounters {
    /// Connections open now.
    pub(crate) open: AtomicUsize,
    /// Connections closed at once because `http.max_connections` were open.
    pub(crate) refused: AtomicU64,
    /// Connections closed for not sending a request head within `http.header_timeout_secs`.
    pub(crate) header_timeouts: AtomicU64,
    /// Connections closed after `http.idle_timeout_secs` without a byte either way.
    pub(crate) idle_timeouts: AtomicU64,
}

/// The address the listener is bound to, in each request's extensions (the `Host` check
/// accepts it besides loopback names).
#[derive(Debug, Clone, Copy)]
pub(crate) struct LocalAddr(pub(crate) SocketAddr);

/// Serves the API on `listener` until `shutdown` changes, then waits for its connections.
pub(crate) async fn serve(
    listener: TcpListener,
    state: Arc<ApiState>,
    mut shutdown: watch::Receiver<bool>,
) {
    let local = listener.local_addr().ok();
    let app = super::router(state.clone());
    // Every connection's task holds a sender: `recv` gives `None` once the last has ended.
    let (done, mut all_done) = mpsc::channel::<()>(1);
    let mut backoff = Duration::from_millis(5);
    let mut at_cap = false;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.changed() => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors or a transient error: back off rather than spin.
                tracing::warn!(error = %e, backoff_ms = backoff.as_millis() as u64, "HTTP accept failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        backoff = Duration::from_millis(5);
        let config = state.broker.config();
        let http = &config.http;
        let counters = &state.http;
        let open = counters.open.load(Ordering::Relaxed);
        if open >= http.max_connections {
            counters.refused.fetch_add(1, Ordering::Relaxed);
            if !at_cap {
                at_cap = true;
                tracing::warn!(
                    open,
                    max = http.max_connections,
                    "HTTP connections at http.max_connections: new ones are closed at once"
                );
            }
            drop(stream);
            continue;
        }
        at_cap = false;
        counters.open.fetch_add(1, Ordering::Relaxed);
        let slot = Slot {
            state: state.clone(),
            _done: done.clone(),
        };
        let deadlines = Deadlines {
            header: Duration::from_secs(http.header_timeout_secs),
            idle: Duration::from_secs(http.idle_timeout_secs),
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(connection(
            stream,
            local,
            app.clone(),
            deadlines,
            slot,
            shutdown.clone(),
        ));
    }
    drop(listener);
    drop(done);
    let _ = all_done.recv().await;
}

/// A place among `http.max_connections`, given back when the connection's task ends.
struct Slot {
    state: Arc<ApiState>,
    /// Dropped with the slot: the accept loop's shutdown waits for all of them.
    _done: mpsc::Sender<()>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.state.http.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A connection's two timeouts, read from the configuration when it opened.
#[derive(Debug, Clone, Copy)]
struct Deadlines {
    header: Duration,
    idle: Duration,
}

/// Which deadline closed a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Header,
    Idle,
}

/// Serves one connection until it ends, a deadline passes, or shutdown lets it go.
async fn connection(
    stream: TcpStream,
    local: Option<SocketAddr>,
    app: Router,
    deadlines: Deadlines,
    slot: Slot,
    mut shutdown: watch::Receiver<bool>,
) {
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Watched {
        stream,
        activity: activity.clone(),
    });
    let on_request = activity.clone();
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        if let Some(local) = local {
            request.extensions_mut().insert(LocalAddr(local));
        }
        let serving = Serving::begin(on_request.clone());
        let app = app.clone();
        async move {
            let response = app.oneshot(request.map(Body::new)).await;
            drop(serving);
            response
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    // The deadlines below replace hyper's header timeout, which would also close a
    // keep-alive connection idle for that long.
    builder.header_read_timeout(None);
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    let mut stopping = false;
    loop {
        let (at, _) = activity.deadline(deadlines);
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "HTTP connection ended with an error");
                }
                break;
            }
            _ = tokio::time::sleep_until(at) => {
                // The socket or a request may have moved since: the deadline moves with it.
                let (at, phase) = activity.deadline(deadlines);
                if at <= Instant::now() {
                    let counter = match phase {
                        Phase::Header => &slot.state.http.header_timeouts,
                        Phase::Idle => &slot.state.http.idle_timeouts,
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(?phase, "HTTP connection closed: timed out");
                    break;
                }
            }
            _ = shutdown.changed(), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
    // The slot, a parameter, is given back after the connection (a local) is closed.
}

/// Marks "no time" in `Activity::head_ms`.
const NONE: u64 = u64::MAX;

/// When a connection last moved, shared by its socket, its requests and its task's timer.
#[derive(Debug)]
struct Activity {
    /// When the connection opened; the times below are milliseconds after it.
    opened: Instant,
    /// The last byte read or written.
    last_io_ms: AtomicU64,
    /// When the request head being waited for began (the opening, or the first byte read
    /// after an answer); `NONE` while a request is served.
    head_ms: AtomicU64,
    /// Requests being served.
    serving: AtomicU32,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            opened: Instant::now(),
            last_io_ms: AtomicU64::new(0),
            head_ms: AtomicU64::new(0),
            serving: AtomicU32::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(NONE - 1)
    }

    fn at(&self, ms: u64) -> Instant {
        self.opened + Duration::from_millis(ms)
    }

    fn read(&self) {
        let now = self.now_ms();
        self.last_io_ms.store(now, Ordering::Relaxed);
        if self.serving.load(Ordering::Relaxed) == 0 {
            // The first byte of the next request starts its head's clock.
            let _ = self
                .head_ms
                .compare_exchange(NONE, now, Ordering::Relaxed, Ordering::Relaxed);
        }
    }

    fn wrote(&self) {
        self.last_io_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    /// The earlier of the two deadlines, and which it is.
    fn deadline(&self, d: Deadlines) -> (Instant, Phase) {
        let idle = self.at(self.last_io_ms.load(Ordering::Relaxed)) + d.idle;
        match self.head_ms.load(Ordering::Relaxed) {
            NONE => (idle, Phase::Idle),
            head => {
                let header = self.at(head) + d.header;
                if header <= idle {
                    (header, Phase::Header)
                } else {
                    (idle, Phase::Idle)
                }
            }
        }
    }
}

/// A request being served: its head has arrived (no header deadline until the next one).
struct Serving(Arc<Activity>);

impl Serving {
    fn begin(activity: Arc<Activity>) -> Serving {
        activity.serving.fetch_add(1, Ordering::Relaxed);
        activity.head_ms.store(NONE, Ordering::Relaxed);
        Serving(activity)
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        self.0.serving.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The connection's socket, recording when bytes move.
struct Watched {
    stream: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.activity.read();
        }
        polled
    }
}

impl Watched {
    fn wrote(&self, polled: &Poll<io::Result<usize>>) {
        if matches!(polled, Poll::Ready(Ok(n)) if *n > 0) {
            self.activity.wrote();
        }
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.stream).poll_write(cx, buf);
        this.wrote(&polled);
        polled
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        this.wrote(&polled);
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: Deadlines = Deadlines {
        header: Duration::from_secs(10),
        idle: Duration::from_secs(60),
    };

    #[test]
    fn a_new_connection_has_the_header_deadline() {
        let a = Activity::new();
        assert_eq!(a.deadline(D), (a.opened + D.header, Phase::Header));
    }

    #[test]
    fn a_request_in_progress_has_only_the_idle_deadline_and_the_next_head_its_own() {
        let a = Arc::new(Activity::new());
        let serving = Serving::begin(a.clone());
        assert_eq!(a.deadline(D).1, Phase::Idle);
        a.read();
        assert_eq!(a.deadline(D).1, Phase::Idle, "body bytes start no head");
        drop(serving);
        a.wrote();
        assert_eq!(a.deadline(D).1, Phase::Idle, "between requests");
        a.read();
        assert_eq!(
            a.deadline(D).1,
            Phase::Header,
            "the next request's first byte"
        );
    }
}
