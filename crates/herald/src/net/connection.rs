//! One client connection: a task owning its socket, reading and writing in one `select!`.
//!
//! The task keeps no read buffer while the connection is idle (only a partial packet between
//! reads), and its write queue is empty and unallocated. It wakes for: readable bytes, the
//! session's queue going from empty to non-empty, the socket becoming writable again while
//! bytes wait, its deadline (keep-alive, slow consumer), and server shutdown.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::BytesMut;
use mqtt_codec::{ByteString, DecodeError, Disconnect, Packet, ProtocolVersion, ReasonCode};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{Instant, sleep_until, timeout};

use super::connect;
use super::outgoing::Outgoing;
use crate::broker::session::{Session as BrokerSession, Will};
use crate::broker::stats::CloseReason;
use crate::broker::{Broker, Tenant};

/// Why and how a connection ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Closing {
    /// The counted reason.
    pub(crate) reason: CloseReason,
    /// The reason code a v5 client is told in DISCONNECT (`None`: no DISCONNECT).
    pub(crate) code: Option<ReasonCode>,
}

impl Closing {
    /// A close for `reason`, with its usual reason code.
    pub(crate) fn new(reason: CloseReason) -> Self {
        Closing {
            reason,
            code: reason.disconnect_code(),
        }
    }

    /// A close for a packet that failed to decode, told the codec's precise reason code.
    pub(crate) fn decode(e: &DecodeError) -> Self {
        let code = e.reason_code();
        let reason = match code {
            ReasonCode::MalformedPacket => CloseReason::MalformedPacket,
            ReasonCode::PacketTooLarge => CloseReason::PacketTooLarge,
            ReasonCode::TopicAliasInvalid => CloseReason::TopicAliasInvalid,
            _ => CloseReason::ProtocolError,
        };
        Closing {
            reason,
            code: Some(code),
        }
    }

    /// A protocol error told with a specific reason code.
    pub(crate) fn protocol(code: ReasonCode) -> Self {
        Closing {
            reason: CloseReason::ProtocolError,
            code: Some(code),
        }
    }
}

/// The protocol state of a connection once CONNECT is accepted.
pub(crate) struct Session {
    /// Protocol version.
    pub(crate) version: ProtocolVersion,
    /// The attached session.
    pub(crate) session: Arc<BrokerSession>,
    /// This connection's attachment generation.
    pub(crate) generation: u64,
    /// Keep-alive in force (0: none).
    pub(crate) keep_alive: Duration,
    /// How many QoS 1/2 messages the client accepts unacknowledged.
    pub(crate) client_receive_maximum: u16,
    /// Largest packet the client accepts.
    pub(crate) client_max_packet_size: usize,
    /// Topic aliases the client accepts from Herald.
    pub(crate) client_alias_maximum: u16,
    /// Session expiry interval agreed at CONNECT (a DISCONNECT may not raise it from 0).
    pub(crate) expiry_at_connect: u32,
    /// The will, published unless the connection ends with a normal DISCONNECT.
    pub(crate) will: Option<Will>,
    /// Topic aliases the client set, alias -> topic.
    pub(crate) inbound_aliases: HashMap<u16, ByteString>,
    /// Topic aliases Herald assigned, topic -> alias.
    pub(crate) outbound_aliases: HashMap<ByteString, u16>,
}

/// A live connection: socket, buffers, protocol state.
pub(crate) struct Live {
    pub(crate) stream: TcpStream,
    pub(crate) rbuf: BytesMut,
    pub(crate) out: Outgoing,
    pub(crate) conn: Session,
    pub(crate) broker: Arc<Broker>,
    pub(crate) tenant: Arc<Tenant>,
    last_received: Instant,
    unwritable_since: Option<Instant>,
}

/// Most reads per wake-up, so that one busy publisher cannot starve the worker thread.
const READS_PER_WAKE: usize = 16;
/// Read buffer reservation per read.
const READ_CHUNK: usize = 16 * 1024;

/// Serves one accepted connection until it closes; counts why it closed.
pub async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    broker: Arc<Broker>,
    shutdown: watch::Receiver<bool>,
) {
    broker.stats.accepted.fetch_add(1, Ordering::Relaxed);
    let open = broker.stats.open.fetch_add(1, Ordering::Relaxed) + 1;
    let reason = run(stream, &broker, shutdown, open).await;
    broker.stats.open.fetch_sub(1, Ordering::Relaxed);
    broker.stats.closed(reason);
    tracing::debug!(%peer, reason = reason.label(), "connection closed");
}

async fn run(
    mut stream: TcpStream,
    broker: &Arc<Broker>,
    mut shutdown: watch::Receiver<bool>,
    open: u64,
) -> CloseReason {
    let limits = &broker.config.limits;
    let mut rbuf = BytesMut::new();
    let first = timeout(
        Duration::from_secs(limits.connect_timeout_secs),
        connect::first_packet(&stream, &mut rbuf, limits.max_packet_size),
    );
    let connect = tokio::select! {
        first = first => match first {
            Err(_) => return CloseReason::ConnectTimeout,
            Ok(Ok(Packet::Connect(c))) => c,
            // The first packet must be CONNECT [MQTT-3.1.0-1].
            Ok(Ok(_)) => return CloseReason::ProtocolError,
            Ok(Err(connect::FirstPacketError::Closed(reason))) => return reason,
            Ok(Err(connect::FirstPacketError::Decode(e))) => {
                // Before CONNACK there is no DISCONNECT; only an unsupported level is answered.
                connect::refuse_undecodable(&mut stream, &e).await;
                return Closing::decode(&e).reason;
            }
        },
        _ = shutdown.changed() => return CloseReason::ServerShutdown,
    };
    let tenant = broker.default_tenant.clone();
    let accepted = match connect::accept(broker, &tenant, *connect, open) {
        Ok(accepted) => accepted,
        Err((code, version)) => {
            let reason =
                if code == ReasonCode::QuotaExceeded || code == ReasonCode::ServerUnavailable {
                    CloseReason::ConnectionLimit
                } else {
                    CloseReason::ConnectRefused
                };
            let ack = Packet::ConnAck(Box::new(mqtt_codec::ConnAck::new(code, false)));
            if let Ok(bytes) = ack.to_bytes(version) {
                let _ = timeout(Duration::from_secs(1), stream.write_all(&bytes)).await;
            }
            return reason;
        }
    };
    let mut live = Live {
        stream,
        rbuf,
        out: Outgoing::default(),
        conn: accepted.conn,
        broker: broker.clone(),
        tenant,
        last_received: Instant::now(),
        unwritable_since: None,
    };
    let closing = match live.start(accepted.connack) {
        Ok(()) => live.serve(&mut shutdown).await,
        Err(closing) => closing,
    };
    live.close(closing).await;
    closing.reason
}

impl Live {
    /// Sends CONNACK, then re-sends what the resumed session had in flight, then its queue.
    fn start(&mut self, connack: mqtt_codec::ConnAck) -> Result<(), Closing> {
        self.send(&Packet::ConnAck(Box::new(connack)))?;
        self.resend_inflight()?;
        self.pump()?;
        self.flush()
    }

    async fn serve(&mut self, shutdown: &mut watch::Receiver<bool>) -> Closing {
        let session = self.conn.session.clone();
        loop {
            let deadline = self.deadline();
            let want_write = !self.out.is_empty();
            let step = tokio::select! {
                biased;
                _ = shutdown.changed() => Err(Closing::new(CloseReason::ServerShutdown)),
                ready = self.stream.readable() => match ready {
                    Ok(()) => self.on_readable(),
                    Err(_) => Err(Closing::new(CloseReason::IoError)),
                },
                _ = session.woken() => self.on_woken(),
                ready = self.stream.writable(), if want_write => match ready {
                    Ok(()) => self.pump().and_then(|()| self.flush()),
                    Err(_) => Err(Closing::new(CloseReason::IoError)),
                },
                _ = sleep_until(deadline) => self.on_deadline(),
            };
            if let Err(closing) = step {
                return closing;
            }
        }
    }

    /// The next time something must be checked: keep-alive expiry or the slow-consumer limit.
    fn deadline(&self) -> Instant {
        let far = Instant::now() + Duration::from_secs(3600);
        let keep_alive = if self.conn.keep_alive.is_zero() {
            far
        } else {
            self.last_received + self.conn.keep_alive.mul_f32(1.5)
        };
        let slow = self.unwritable_since.map_or(far, |since| {
            since + Duration::from_secs(self.broker.config.limits.slow_consumer_timeout_secs)
        });
        keep_alive.min(slow)
    }

    fn on_deadline(&mut self) -> Result<(), Closing> {
        let now = Instant::now();
        if !self.conn.keep_alive.is_zero()
            && now >= self.last_received + self.conn.keep_alive.mul_f32(1.5)
        {
            return Err(Closing::new(CloseReason::KeepAliveTimeout));
        }
        if let Some(since) = self.unwritable_since {
            if now
                >= since + Duration::from_secs(self.broker.config.limits.slow_consumer_timeout_secs)
            {
                return Err(Closing::new(CloseReason::SlowConsumer));
            }
        }
        Ok(())
    }

    fn on_readable(&mut self) -> Result<(), Closing> {
        for _ in 0..READS_PER_WAKE {
            if self.rbuf.capacity() - self.rbuf.len() < 1024 {
                self.rbuf.reserve(READ_CHUNK);
            }
            match self.stream.try_read_buf(&mut self.rbuf) {
                Ok(0) => return Err(Closing::new(CloseReason::PeerClosed)),
                Ok(_) => {
                    self.last_received = Instant::now();
                    self.process()?;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(_) => return Err(Closing::new(CloseReason::IoError)),
            }
        }
        if self.rbuf.is_empty() {
            // Idle connections keep no read buffer.
            self.rbuf = BytesMut::new();
        }
        self.pump()?;
        self.flush()
    }

    /// Decodes and handles every complete packet in the read buffer.
    fn process(&mut self) -> Result<(), Closing> {
        let max = self.broker.config.limits.max_packet_size;
        loop {
            match mqtt_codec::decode(&mut self.rbuf, self.conn.version, max) {
                Ok(Some(packet)) => self.handle(packet)?,
                Ok(None) => return Ok(()),
                Err(e) => return Err(Closing::decode(&e)),
            }
        }
    }

    fn on_woken(&mut self) -> Result<(), Closing> {
        if self.conn.session.lock().generation != self.conn.generation {
            // Another connection took the session over; let it have the next wake-up.
            self.conn.session.wake();
            return Err(Closing::new(CloseReason::SessionTakenOver));
        }
        self.pump()?;
        self.flush()
    }

    /// Queues a control packet.
    pub(crate) fn send(&mut self, packet: &Packet) -> Result<(), Closing> {
        self.out
            .packet(packet, self.conn.version)
            .map_err(|_| Closing::new(CloseReason::ProtocolError))
    }

    /// Writes what the socket takes now; tracks how long it has been full.
    pub(crate) fn flush(&mut self) -> Result<(), Closing> {
        match self.out.flush(&self.stream) {
            Ok(true) => {
                self.unwritable_since = None;
                Ok(())
            }
            Ok(false) => {
                self.unwritable_since.get_or_insert_with(Instant::now);
                Ok(())
            }
            Err(_) => Err(Closing::new(CloseReason::IoError)),
        }
    }

    /// Ends the connection: a DISCONNECT for v5 clients where one is due, the will unless the
    /// client disconnected normally, then the session goes offline.
    async fn close(mut self, closing: Closing) {
        if self.conn.version.is_v5() {
            if let Some(code) = closing.code {
                let _ = self.out.packet(
                    &Packet::Disconnect(Disconnect::new(code)),
                    self.conn.version,
                );
            }
        }
        if !self.out.is_empty() {
            // Best effort, briefly: a slow consumer is not waited for.
            let _ = self.out.flush(&self.stream);
        }
        let _ = timeout(Duration::from_millis(200), self.stream.shutdown()).await;
        let session = self.conn.session.clone();
        if let Some(will) = self.conn.will.take() {
            if closing.reason != CloseReason::ClientDisconnect {
                self.will_on_close(&session, will, closing.reason);
            }
        }
        self.broker
            .detach(&self.tenant, &session, self.conn.generation);
    }

    fn will_on_close(&self, session: &Arc<BrokerSession>, will: Will, reason: CloseReason) {
        if reason == CloseReason::SessionTakenOver && will.delay > 0 && !session.lock().ended {
            // A new connection resumed the session before the will delay passed
            // [MQTT-3.1.3-9].
            return;
        }
        self.broker.publish_will(&self.tenant, session, will);
    }
}
