//! One client connection once CONNECT is accepted: the state its task owns (socket, buffers,
//! the session core's `Link`), read and written in one readiness-driven loop (`poll_event`).
//!
//! The task keeps no read buffer while the connection is idle (only a partial packet between
//! reads), and its write queue is empty and unallocated. It wakes for: readable bytes, the
//! session's queue going from empty to non-empty, the socket becoming writable again while
//! bytes wait, its deadline (keep-alive, slow consumer), and server shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::BytesMut;

use std::task::{Context, Poll};
use std::time::Instant;

use tokio::time::timeout;

use super::Endpoint;
use super::connect;
use super::outgoing::Outgoing;
use super::transport::Transport;
use crate::broker::session::{Closing, Handled, Link, Session as BrokerSession};
use crate::broker::stats::CloseReason;
use crate::store::journal::Ticket;

/// A live connection: socket, buffers, protocol state.
pub(crate) struct Live {
    io: Transport,
    /// The listener it came in on.
    listener: crate::config::ListenerKind,
    peer: SocketAddr,
    rbuf: BytesMut,
    out: Outgoing,
    /// The MQTT side: the session core's state of this connection.
    link: Link,
    /// When the last whole packet arrived (broker clock, ms).
    last_received_ms: u64,
    /// Since when the socket has been full with data waiting (broker clock, ms; `NONE`).
    unwritable_since_ms: u64,
    /// Deliveries this connection's publications queued since it last yielded.
    routed: u32,
    /// A subscriber queue passed high water, or the route budget is spent: stop taking
    /// input until others have run.
    pushback: bool,
    /// State few connections ever have (boxed: every byte here is paid per connection).
    rare: Option<Box<Rare>>,
    /// The store ticket CONNACK waited for: while it is not durable, CONNACK is unsent.
    connack_ticket: Ticket,
    /// Input is buffered (or unread) because the connection yielded; resume it next turn.
    input_pending: bool,
    /// The yield has happened; the next poll resumes the input.
    yielded: bool,
}

/// What few connections ever need: pushback state.
#[derive(Default)]
struct Rare {
    /// The congested subscriber this connection's input waits on (pushback,
    /// `broker::flow`): no input is taken until it drains, goes offline, or stalls.
    blocked_on: Option<Arc<BrokerSession>>,
    /// Wakes this task when the subscriber it waits on would count as stalled (armed only
    /// while parked).
    stall_timer: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    /// Over a rate (`broker::quota`): no input is taken until this fires.
    throttle: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    /// Over its tenant's outbound rate: nothing more is taken from the session's queue
    /// until this fires (what is already encoded is still written).
    hold: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

/// What woke a connection.
enum Event {
    Readable,
    Writable,
    Signalled,
    /// Input left unprocessed when the connection yielded.
    Resume,
}

/// "No deadline" on the broker clock.
const NONE: u64 = u64::MAX;

/// Deliveries a publisher's connection may queue per turn before it yields to the
/// subscribers' tasks (pushback: the broker reads no faster than it can deliver).
const ROUTE_BUDGET: u32 = 128 * 1024;

/// Rounds of pump and write per wake-up before the task lets others run (each moves up to
/// the write budget, 256 KiB).
const DRIVE_ROUNDS: usize = 16;

/// How long, and for how many bytes, a closing connection keeps reading what the client
/// still sends after Herald's last word (`Transport::linger`).
pub(super) const LINGER: Duration = Duration::from_secs(1);
pub(super) const LINGER_BYTES: usize = 256 * 1024;

/// How long a closing connection waits for the store to confirm the answers it holds.
const HELD_WAIT: Duration = Duration::from_secs(1);

/// Protocol violations logged at INFO: at most this many lines a second, the rest counted.
static VIOLATIONS_LOGGED: crate::logging::RateLimited = crate::logging::RateLimited::new(10);

/// Most reads per wake-up, so that one busy publisher cannot starve the worker thread.
const READS_PER_WAKE: usize = 16;

impl Live {
    /// The state of a connection whose CONNECT was accepted. Packets that came in the same
    /// read as CONNECT (a device's CONNECT, PUBLISH, DISCONNECT in one write; paho's CONNECT
    /// and SUBSCRIBE) are handled at once, not when the socket next becomes readable: it may
    /// never, for a client that waits for their answers.
    pub(super) fn new(
        io: Transport,
        endpoint: &Endpoint,
        peer: SocketAddr,
        rbuf: BytesMut,
        link: Link,
    ) -> Box<Live> {
        let input_pending = !rbuf.is_empty();
        // Idle connections keep no read buffer: not even the handshake's, once empty.
        let rbuf = if input_pending { rbuf } else { BytesMut::new() };
        Box::new(Live {
            io,
            listener: endpoint.kind,
            peer,
            rbuf,
            out: Outgoing::default(),
            last_received_ms: link.broker().clock_ms(Instant::now()),
            link,
            unwritable_since_ms: NONE,
            routed: 0,
            pushback: false,
            rare: None,
            connack_ticket: Ticket::NONE,
            input_pending,
            yielded: input_pending,
        })
    }

    /// Serves the connection after CONNACK until it closes, then closes it.
    pub(super) async fn run(mut self: Box<Self>, started: Result<(), Closing>) -> CloseReason {
        let closing = match started {
            Ok(()) => self.serve().await,
            Err(closing) => closing,
        };
        // Logged before the close is awaited, so that the peer address is not kept in this
        // future's state for the connection's whole life.
        if closing.is_violation()
            && let Some(suppressed) = VIOLATIONS_LOGGED.allow()
        {
            tracing::info!(
                client_id = &*self.link.session().client_id,
                peer = %self.peer,
                reason = closing.reason.label(),
                rule = self.link.rule().unwrap_or("limits"),
                code = ?closing.code,
                suppressed,
                "protocol violation: connection closed"
            );
        } else {
            tracing::debug!(peer = %self.peer, reason = closing.reason.label(), "connection closed");
        }
        self.link
            .broker()
            .stats
            .connections
            .open(self.listener, self.link.version(), false);
        Box::pin(self.close(closing)).await;
        closing.reason
    }

    /// Sends CONNACK, then re-sends what the resumed session had in flight, then its queue.
    pub(super) fn start(
        &mut self,
        connack: mqtt_codec::ConnAck,
        ticket: Ticket,
    ) -> Result<(), Closing> {
        // With a store, CONNACK waits until the session's record and the will are on disk.
        self.connack_ticket = ticket;
        self.link.start(&mut self.out, connack, ticket)?;
        self.drive()
    }

    /// The main loop. It waits through `poll_event`, which stores no futures: socket
    /// readiness is registered on the socket itself and everything else (new deliveries,
    /// takeover, deadlines, shutdown) arrives as the session's signal.
    async fn serve(&mut self) -> Closing {
        loop {
            self.publish_deadline();
            let event = std::future::poll_fn(|cx| self.poll_event(cx)).await;
            let step = match event {
                Event::Readable => self.on_readable(),
                Event::Resume => self.on_resume(),
                Event::Writable => self.drive(),
                Event::Signalled => self.on_signal(),
            };
            if let Err(closing) = step {
                return closing;
            }
        }
    }

    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Event> {
        if self.link.poll_signal(cx) || self.link.broker().shutting_down() {
            return Poll::Ready(Event::Signalled);
        }
        if self.input_pending {
            // Input waits while a subscriber it feeds is congested; parked on that session,
            // this task is woken when it drains (its own deliveries and writes go on).
            if !self.still_blocked(cx) {
                if let Some(rare) = &mut self.rare {
                    rare.blocked_on = None;
                    rare.stall_timer = None;
                }
                if !self.yielded {
                    // Let the other tasks (subscribers draining their queues) run first.
                    self.yielded = true;
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                self.yielded = false;
                return Poll::Ready(Event::Resume);
            }
        } else if self.io.poll_read_ready(cx).is_ready() {
            // An error also reports ready; the read that follows returns it.
            return Poll::Ready(Event::Readable);
        }
        if let Some(rare) = &mut self.rare
            && let Some(hold) = &mut rare.hold
            && std::future::Future::poll(hold.as_mut(), cx).is_ready()
        {
            rare.hold = None;
            return Poll::Ready(Event::Writable);
        }
        if (!self.out.is_empty() || self.io.has_pending())
            && self.io.poll_write_ready(cx).is_ready()
        {
            return Poll::Ready(Event::Writable);
        }
        // Acknowledgements held until the store has their change on disk (and clustered,
        // until the other nodes can deliver what they acknowledge).
        if let Some(gate) = self.out.waiting() {
            let broker = self.link.broker();
            if broker.persist.poll_durable(gate.ticket, cx).is_ready()
                && broker.poll_confirmed(gate.peers, cx).is_ready()
            {
                return Poll::Ready(Event::Writable);
            }
        }
        Poll::Pending
    }

    /// Tells the broker's sweep when this connection next needs looking at: keep-alive
    /// expiry, or the slow-consumer limit while the socket is full.
    fn publish_deadline(&self) {
        let deadline = self.keep_alive_deadline().min(self.slow_deadline());
        self.link.session().set_deadline(deadline);
    }

    /// Whether input still waits on the congested subscriber this connection fed (its task
    /// is then parked on that session, and its stall timer armed). A subscriber whose socket
    /// has taken nothing for `limits.stall_after_ms` is marked stalled instead: it loses QoS
    /// 0 rather than hold up its publishers and, through them, everyone else they feed. One
    /// that keeps taking bytes, however slowly, keeps its publishers waiting.
    fn still_blocked(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(rare) = &mut self.rare else {
            return false;
        };
        if let Some(timer) = &mut rare.throttle {
            if std::future::Future::poll(timer.as_mut(), cx).is_pending() {
                return true;
            }
            rare.throttle = None;
        }
        let Some(congested) = &rare.blocked_on else {
            return false;
        };
        let broker = self.link.broker();
        let limits = &broker.config().limits;
        if !congested.park(cx.waker(), limits) {
            return false;
        }
        let stall_at = congested.progress_ms() + limits.stall_after_ms;
        let now = crate::broker::flow::now_ms();
        if now >= stall_at {
            if congested.mark_stalled(limits) {
                broker.stats.stalls.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(
                    client_id = &*congested.client_id,
                    "subscriber stalled: it no longer slows its publishers"
                );
            }
            return false;
        }
        let wake_at = tokio::time::Instant::now() + Duration::from_millis(stall_at - now);
        let timer = rare
            .stall_timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(wake_at)));
        if timer.deadline() != wake_at {
            timer.as_mut().reset(wake_at);
        }
        // Woken by the timer, this is looked at again: the subscriber may have written since.
        let _ = std::future::Future::poll(timer.as_mut(), cx);
        true
    }

    /// When the client must have sent something: 1.5 x keep-alive after the last packet.
    fn keep_alive_deadline(&self) -> u64 {
        match self.link.keep_alive() {
            0 => NONE,
            secs => self.last_received_ms + u64::from(secs) * 1500,
        }
    }

    /// When a socket that stays full makes this a slow consumer.
    fn slow_deadline(&self) -> u64 {
        match self.unwritable_since_ms {
            NONE => NONE,
            since => {
                let limits = &self.link.broker().config().limits;
                since + limits.slow_consumer_timeout_secs * 1000
            }
        }
    }

    /// Something happened that is not socket readiness: shutdown, takeover, new deliveries,
    /// or a deadline.
    fn on_signal(&mut self) -> Result<(), Closing> {
        if self.link.broker().shutting_down() {
            return Err(Closing::new(CloseReason::ServerShutdown));
        }
        self.link.check_signal()?;
        let now = self.link.broker().clock_ms(Instant::now());
        if now >= self.keep_alive_deadline() {
            return Err(Closing::new(CloseReason::KeepAliveTimeout));
        }
        if now >= self.slow_deadline() {
            return Err(Closing::new(CloseReason::SlowConsumer));
        }
        self.drive()
    }

    /// Records what a publication routed; past the budget, or at high water, the connection
    /// stops taking input and yields.
    fn note_routed(&mut self, handled: Handled) {
        self.routed = self.routed.saturating_add(handled.matched as u32);
        if let Some(wait) = handled.throttle {
            // Over a rate: this turn ends, and the socket is not read until the rate allows.
            self.pushback = true;
            let rare = self.rare.get_or_insert_with(Default::default);
            let until = tokio::time::Instant::now() + wait;
            match &mut rare.throttle {
                Some(timer) => {
                    if timer.deadline() < until {
                        timer.as_mut().reset(until);
                    }
                }
                None => rare.throttle = Some(Box::pin(tokio::time::sleep_until(until))),
            }
        }
        if let Some(congested) = handled.congested {
            self.pushback = true;
            let rare = self.rare.get_or_insert_with(Default::default);
            if rare.blocked_on.is_none() {
                let stats = &self.link.broker().stats;
                stats.pushbacks.fetch_add(1, Ordering::Relaxed);
                rare.blocked_on = Some(congested);
            }
        }
    }

    /// Whether the tenant's outbound rate holds this connection's deliveries back now.
    fn held(&self) -> bool {
        self.rare
            .as_ref()
            .and_then(|r| r.hold.as_ref())
            .is_some_and(|h| h.deadline() > tokio::time::Instant::now())
    }

    fn turn_over(&self) -> bool {
        self.pushback || self.routed >= ROUTE_BUDGET
    }

    /// Takes up the input left when the connection yielded.
    fn on_resume(&mut self) -> Result<(), Closing> {
        self.input_pending = false;
        self.routed = 0;
        self.pushback = false;
        self.process()?;
        if self.input_pending {
            return self.drive();
        }
        self.on_readable()
    }

    fn on_readable(&mut self) -> Result<(), Closing> {
        self.routed = 0;
        self.pushback = false;
        for _ in 0..READS_PER_WAKE {
            if self.input_pending {
                break;
            }
            match self.io.read(&mut self.rbuf) {
                Ok(0) => return Err(Closing::new(CloseReason::PeerClosed)),
                Ok(_) => self.process()?,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(Closing::new(connect::read_error(&e))),
            }
        }
        if self.rbuf.is_empty() {
            // Idle connections keep no read buffer.
            self.rbuf = BytesMut::new();
        }
        self.drive()
    }

    /// Decodes and handles the complete packets in the read buffer, until the turn is over.
    fn process(&mut self) -> Result<(), Closing> {
        let max = self.link.max_packet_size();
        loop {
            if self.turn_over() {
                self.input_pending = true;
                return Ok(());
            }
            let before = self.rbuf.len();
            match mqtt_codec::decode(&mut self.rbuf, self.link.version(), max) {
                Ok(Some(packet)) => {
                    let size = before - self.rbuf.len();
                    let broker = self.link.broker();
                    broker.stats.hot.packet_in(packet.packet_type(), size);
                    // Keep-alive counts whole control packets, not bytes of an unfinished one
                    // [MQTT-3.1.2-22].
                    self.last_received_ms = broker.clock_ms(Instant::now());
                    let handled = self.link.handle(packet, &mut self.out)?;
                    self.note_routed(handled);
                }
                Ok(None) => return Ok(()),
                Err(e) => {
                    self.link.note_rule(e.rule());
                    return Err(Closing::decode(&e));
                }
            }
        }
    }

    /// Moves deliveries to the socket until it is full or nothing more may be sent now.
    ///
    /// The session signals this task only when its queue goes from empty to non-empty, so
    /// a write that empties the write queue while deliveries still wait must take the next
    /// ones itself: otherwise they would wait for the client's next packet (a PINGREQ).
    /// After `DRIVE_ROUNDS` rounds the task signals itself and lets others run.
    fn drive(&mut self) -> Result<(), Closing> {
        for _ in 0..DRIVE_ROUNDS {
            if self.held() {
                // Over the tenant's outbound rate: the queue waits for the hold to end.
                return self.flush().map(drop);
            }
            let more = match self.link.outbound_budget() {
                None => self.link.pump(&mut self.out)?,
                Some(budget) => {
                    let before = self.out.len();
                    let more = self.link.pump_within(&mut self.out, budget)?;
                    let added = self.out.len().saturating_sub(before);
                    if let Some(wait) = self.link.outbound_rate(added) {
                        let until = tokio::time::Instant::now() + wait;
                        let rare = self.rare.get_or_insert_with(Default::default);
                        rare.hold = Some(Box::pin(tokio::time::sleep_until(until)));
                    }
                    more
                }
            };
            let written = self.flush()?;
            if !(more && written) {
                return Ok(());
            }
        }
        self.link.session().wake();
        Ok(())
    }

    /// Writes what the socket takes now; tracks how long it has been full. `Ok(true)` when
    /// everything ready was written.
    fn flush(&mut self) -> Result<bool, Closing> {
        let broker = self.link.broker();
        let persist = &broker.persist;
        self.out
            .release(persist.durable_ticket(), broker.confirmed());
        if self.out.waiting().is_some() && persist.failed() {
            self.out.discard_held();
            let unsent = persist.durable_ticket() < self.connack_ticket;
            return Err(self.link.store_failed(&mut self.out, unsent));
        }
        let before = self.out.len();
        let flushed = self.out.flush(&mut self.io);
        if self.out.len() < before || matches!(flushed, Ok(true)) {
            // The socket took bytes (or nothing waits): this subscriber is not stalled.
            self.link.session().note_progress();
        }
        match flushed {
            Ok(true) => {
                self.unwritable_since_ms = NONE;
                Ok(true)
            }
            Ok(false) => {
                if self.unwritable_since_ms == NONE {
                    self.unwritable_since_ms = self.link.broker().clock_ms(Instant::now());
                }
                Ok(false)
            }
            Err(_) => Err(Closing::new(CloseReason::IoError)),
        }
    }

    /// Ends the connection: a DISCONNECT for v5 clients where one is due, the will unless the
    /// client disconnected normally, then the session goes offline.
    async fn close(mut self: Box<Self>, closing: Closing) {
        let broker = self.link.broker().clone();
        if broker.persist.failed() {
            // What waited for the store will never be sent; the DISCONNECT must not wait.
            self.out.discard_held();
        }
        self.link.farewell(&mut self.out, closing);
        if self.out.waiting().is_some() {
            // Acknowledgements held for the store, and the DISCONNECT behind them, go out in
            // order once it confirms them: briefly, a closing connection does not wait long.
            let persist = &broker.persist;
            let _ = timeout(HELD_WAIT, async {
                while let Some(gate) = self.out.waiting() {
                    std::future::poll_fn(|cx| persist.poll_durable(gate.ticket, cx)).await;
                    if persist.failed() {
                        self.out.discard_held();
                        return;
                    }
                    std::future::poll_fn(|cx| broker.poll_confirmed(gate.peers, cx)).await;
                    self.out
                        .release(persist.durable_ticket(), broker.confirmed());
                }
            })
            .await;
        }
        // Something the client must read was sent last (a DISCONNECT, a refusing CONNACK):
        // linger so that it is not destroyed by a reset. A peer that closed does not
        // need it; a slow consumer is not waited for.
        let told = !self.out.is_empty()
            && !matches!(
                closing.reason,
                CloseReason::PeerClosed | CloseReason::IoError | CloseReason::SlowConsumer
            );
        if !self.out.is_empty() {
            // Best effort, briefly: a slow consumer is not waited for.
            let _ = self.out.flush(&mut self.io);
        }
        let _ = timeout(Duration::from_millis(200), self.io.shutdown()).await;
        let Live { link, io, .. } = *self;
        // The will, then the session goes offline: after the socket is shut, and before
        // the linger, so that neither the will nor a takeover waits for it.
        link.end(closing.reason);
        if told {
            let mut io = io;
            io.linger(LINGER, LINGER_BYTES).await;
        }
    }
}
