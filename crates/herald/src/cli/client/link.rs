//! One MQTT connection, from CONNECT to its end: packets out, packets in, keep-alive, and
//! what the server's CONNACK allows (Receive Maximum, Maximum Packet Size, Server Keep
//! Alive, Maximum QoS).
//!
//! The read side is cancel-safe ([`Link::recv`]) and the writes are not, so a client's loop
//! is one `select!` whose branches only wait (a packet, the keep-alive moment, its own
//! input) and whose bodies write. Writing never races reading: a packet is never half sent.

use std::fmt;
use std::time::Duration;

use bytes::BytesMut;
use mqtt_codec::{ConnAck, Connect, Disconnect, Packet, ProtocolVersion, QoS, ReasonCode, decode};
use tokio::time::{Instant, timeout};

use super::log::Log;
use super::transport::Conn;

/// The largest packet accepted from the server (announced as Maximum Packet Size in MQTT 5).
pub(super) const MAX_INCOMING_PACKET: u32 = 16 * 1024 * 1024;

/// How long a write may take before the connection is given up as dead.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a connection ended. Every end is one of these, and each is reported as it is.
#[derive(Debug)]
pub(super) enum Lost {
    /// The server closed the connection.
    Closed,
    /// The socket failed.
    Io(std::io::Error),
    /// The server sent something MQTT does not allow.
    Protocol(String),
    /// A write did not finish, or no PINGRESP came, in time.
    Timeout(&'static str),
    /// The server sent DISCONNECT (MQTT 5), with its reason.
    Disconnect(Box<Disconnect>),
}

impl fmt::Display for Lost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Lost::Closed => f.write_str("the server closed the connection"),
            Lost::Io(e) => write!(f, "{e}"),
            Lost::Protocol(why) => write!(f, "protocol error: {why}"),
            Lost::Timeout(what) => write!(f, "{what}"),
            Lost::Disconnect(d) => {
                write!(f, "the server disconnected: {}", d.reason_code)?;
                if let Some(why) = &d.properties.reason_string {
                    write!(f, " ({why})")?;
                }
                Ok(())
            }
        }
    }
}

impl From<std::io::Error> for Lost {
    fn from(e: std::io::Error) -> Self {
        Lost::Io(e)
    }
}

/// What the server's CONNACK allows on this connection.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    /// QoS 1/2 PUBLISHes that may await acknowledgement at once (Receive Maximum).
    pub(super) receive_maximum: u16,
    /// The largest packet the server accepts.
    pub(super) maximum_packet_size: Option<u32>,
    /// The highest QoS the server accepts.
    pub(super) maximum_qos: QoS,
    /// Whether the server keeps retained messages.
    pub(super) retain_available: bool,
}

/// A connected MQTT link.
pub(super) struct Link {
    /// The byte stream.
    conn: Conn,
    /// Received bytes not yet decoded.
    rbuf: BytesMut,
    /// Encoding space, reused for every packet.
    wbuf: BytesMut,
    /// The protocol version of the CONNECT.
    version: ProtocolVersion,
    /// Keep-alive in force (the server's Server Keep Alive, else ours); `None`: off.
    keep_alive: Option<Duration>,
    /// When a packet was last sent: keep-alive counts from there.
    last_sent: Instant,
    /// When the unanswered PINGREQ went out, if one is unanswered.
    ping_sent: Option<Instant>,
    /// What CONNACK allows.
    pub(super) limits: Limits,
    /// For `--debug` packet traces.
    log: Log,
}

impl Link {
    /// Sends `connect` over `conn` and waits for the CONNACK (the caller bounds the time).
    /// The link is returned whatever the CONNACK says; the caller judges its reason code.
    pub(super) async fn handshake(
        conn: Conn,
        mut connect: Connect,
        log: Log,
    ) -> Result<(Link, ConnAck), Lost> {
        if connect.protocol.is_v5() {
            connect.properties.maximum_packet_size = Some(MAX_INCOMING_PACKET);
        }
        let keep_alive = connect.keep_alive;
        let mut link = Link {
            conn,
            rbuf: BytesMut::with_capacity(4096),
            wbuf: BytesMut::with_capacity(256),
            version: connect.protocol,
            keep_alive: None,
            last_sent: Instant::now(),
            ping_sent: None,
            limits: Limits {
                receive_maximum: u16::MAX,
                maximum_packet_size: None,
                maximum_qos: QoS::ExactlyOnce,
                retain_available: true,
            },
            log,
        };
        link.send(&Packet::Connect(Box::new(connect))).await?;
        let ack = match link.recv().await? {
            Packet::ConnAck(ack) => *ack,
            other => {
                return Err(Lost::Protocol(format!(
                    "expected CONNACK, got {:?}",
                    other.packet_type()
                )));
            }
        };
        let p = &ack.properties;
        let seconds = p.server_keep_alive.unwrap_or(keep_alive);
        link.keep_alive = (seconds > 0).then(|| Duration::from_secs(u64::from(seconds)));
        link.limits = Limits {
            receive_maximum: p.receive_maximum.unwrap_or(u16::MAX),
            maximum_packet_size: p.maximum_packet_size,
            maximum_qos: p.maximum_qos.unwrap_or(QoS::ExactlyOnce),
            retain_available: p.retain_available.unwrap_or(true),
        };
        Ok((link, ack))
    }

    /// The protocol version spoken.
    pub(super) fn version(&self) -> ProtocolVersion {
        self.version
    }

    /// Sends one packet (and flushes it).
    pub(super) async fn send(&mut self, packet: &Packet) -> Result<(), Lost> {
        self.log.debug(format_args!("> {}", Trace(packet)));
        self.wbuf.clear();
        packet.encode(self.version, &mut self.wbuf).map_err(|e| {
            Lost::Protocol(format!("cannot encode {:?}: {e}", packet.packet_type()))
        })?;
        match timeout(WRITE_TIMEOUT, self.conn.write_all(&self.wbuf)).await {
            Ok(done) => done?,
            Err(_) => return Err(Lost::Timeout("a write did not finish in 30 s")),
        }
        self.last_sent = Instant::now();
        Ok(())
    }

    /// The next packet from the server. PINGRESP is taken here; DISCONNECT ends the link
    /// with its reason. Cancel-safe.
    pub(super) async fn recv(&mut self) -> Result<Packet, Lost> {
        loop {
            let decoded = decode(&mut self.rbuf, self.version, MAX_INCOMING_PACKET as usize)
                .map_err(|e| Lost::Protocol(e.to_string()))?;
            if let Some(packet) = decoded {
                self.log.debug(format_args!("< {}", Trace(&packet)));
                match packet {
                    Packet::PingResp => self.ping_sent = None,
                    Packet::Disconnect(d) => return Err(Lost::Disconnect(Box::new(d))),
                    Packet::Auth(_) => {
                        return Err(Lost::Protocol(
                            "AUTH, but no enhanced authentication was asked for".into(),
                        ));
                    }
                    other => return Ok(other),
                }
                continue;
            }
            if self.conn.read(&mut self.rbuf).await? == 0 {
                return Err(Lost::Closed);
            }
        }
    }

    /// When [`Link::keep_alive`] has something to do: send a PINGREQ after a keep-alive
    /// interval without sending, or give up on a PINGREQ unanswered for as long. `None`
    /// when keep-alive is off.
    pub(super) fn keep_alive_at(&self) -> Option<Instant> {
        let interval = self.keep_alive?;
        Some(self.ping_sent.unwrap_or(self.last_sent) + interval)
    }

    /// Called at [`Link::keep_alive_at`]: pings, or declares the server dead.
    pub(super) async fn keep_alive(&mut self) -> Result<(), Lost> {
        match self.keep_alive_at() {
            Some(at) if at <= Instant::now() => {}
            _ => return Ok(()),
        }
        if self.ping_sent.is_some() {
            return Err(Lost::Timeout("no PINGRESP within the keep-alive interval"));
        }
        self.send(&Packet::PingReq).await?;
        self.ping_sent = Some(Instant::now());
        Ok(())
    }

    /// Ends the connection cleanly: DISCONNECT with `reason` (MQTT 5; 3.1.1 has none), then
    /// the transport's own close. Best effort, within a second: the link is going anyway.
    pub(super) async fn disconnect(mut self, reason: ReasonCode) {
        let bye = async {
            self.send(&Packet::Disconnect(Disconnect::new(reason)))
                .await?;
            self.conn.shutdown().await?;
            Ok::<(), Lost>(())
        };
        let _ = timeout(Duration::from_secs(1), bye).await;
    }
}

/// A packet in a line of `--debug`: its kind and what tells it apart.
struct Trace<'a>(&'a Packet);

impl fmt::Display for Trace<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Packet::Connect(c) => write!(
                f,
                "CONNECT id={} clean_start={} keep_alive={}",
                c.client_id, c.clean_start, c.keep_alive
            ),
            Packet::ConnAck(a) => write!(
                f,
                "CONNACK {} session_present={}",
                a.reason_code, a.session_present
            ),
            Packet::Publish(p) => write!(
                f,
                "PUBLISH topic={} qos={} id={} dup={} retain={} ({} bytes)",
                p.topic,
                p.qos as u8,
                p.packet_id,
                p.dup,
                p.retain,
                p.payload.len()
            ),
            Packet::PubAck(a) | Packet::PubRec(a) | Packet::PubRel(a) | Packet::PubComp(a) => {
                write!(
                    f,
                    "{:?} id={} {}",
                    self.0.packet_type(),
                    a.packet_id,
                    a.reason_code
                )
            }
            Packet::Subscribe(s) => write!(f, "SUBSCRIBE id={}", s.packet_id),
            Packet::SubAck(s) => write!(f, "SUBACK id={} {:?}", s.packet_id, s.reason_codes),
            Packet::Disconnect(d) => write!(f, "DISCONNECT {}", d.reason_code),
            other => write!(f, "{:?}", other.packet_type()),
        }
    }
}
