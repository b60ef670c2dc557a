//! A minimal MQTT client on `mqtt-codec`, made for load: one buffer each way, many packets
//! per read and per write, nothing allocated per message. It speaks over any
//! [transport](crate::transport): TCP, TLS, WebSocket or WebSocket over TLS.

use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use mqtt_codec::{
    Connect, Disconnect, MAX_PACKET_SIZE, Packet, ProtocolVersion, QoS, ReasonCode, Subscribe,
    decode,
};
use serde::{Deserialize, Serialize};
use tokio::time::timeout;

use crate::transport::{Connector, Stream};

/// Where to connect, and from which local address.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    /// The broker's address.
    pub addr: SocketAddr,
    /// Local address to bind, so that many 127.0.0.x sources multiply the ephemeral ports.
    pub source: Option<IpAddr>,
}

/// Connection settings shared by every client of a run.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// MQTT version to speak.
    pub version: ProtocolVersion,
    /// Keep-alive announced in CONNECT; clients ping at half of it.
    pub keep_alive: u16,
    /// Limit for TCP connect, TLS and WebSocket handshakes and CONNECT/CONNACK (and
    /// SUBSCRIBE/SUBACK).
    pub timeout: Duration,
    /// How connections are opened: TCP, TLS, WebSocket or WebSocket over TLS.
    pub transport: Connector,
    /// The username and password every CONNECT carries.
    pub login: Login,
}

/// The username and password a client sends in CONNECT; every client of a run sends the
/// same ones.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Login {
    /// The User Name field, if any.
    pub username: Option<String>,
    /// The Password field, if any (a password or a token such as a JWT).
    pub password: Option<Vec<u8>>,
}

/// Why a client failed; its `key` names it in reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The TCP connection was refused.
    Refused,
    /// Nothing (or not enough) came back in time.
    Timeout,
    /// The peer reset the connection.
    Reset,
    /// The peer closed the connection.
    Closed,
    /// CONNACK or SUBACK carried a failure code.
    Rejected(u8),
    /// Any other socket error.
    Io(io::ErrorKind),
    /// The broker sent something the protocol does not allow here.
    Protocol(String),
    /// The TLS handshake or the WebSocket upgrade failed.
    Handshake(String),
}

impl Failure {
    /// A short stable name for counting failures by reason.
    pub fn key(&self) -> String {
        match self {
            Failure::Refused => "refused".into(),
            Failure::Timeout => "timeout".into(),
            Failure::Reset => "reset".into(),
            Failure::Closed => "closed".into(),
            Failure::Rejected(code) => format!("rejected_0x{code:02x}"),
            Failure::Io(kind) => format!("io_{kind:?}").to_lowercase(),
            Failure::Protocol(_) => "protocol".into(),
            Failure::Handshake(_) => "handshake".into(),
        }
    }
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::ConnectionRefused => Failure::Refused,
            io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe => Failure::Reset,
            io::ErrorKind::TimedOut => Failure::Timeout,
            kind => Failure::Io(kind),
        }
    }
}

/// Counts failures by reason.
pub type FailureCounts = BTreeMap<String, u64>;

/// Adds one failure to `counts`. The first handshake failure of a process is also printed:
/// counts by reason would not say which certificate or header was wrong.
pub fn count_failure(counts: &mut FailureCounts, f: &Failure) {
    static HANDSHAKE_SHOWN: AtomicBool = AtomicBool::new(false);
    if let Failure::Handshake(why) = f
        && !HANDSHAKE_SHOWN.swap(true, Ordering::Relaxed)
    {
        eprintln!("herald-bench: handshake failed: {why}");
    }
    *counts.entry(f.key()).or_default() += 1;
}

/// A connected MQTT client: the socket and its two buffers.
pub struct Client {
    /// The connection.
    pub stream: Stream,
    /// Bytes read and not yet decoded.
    pub rbuf: BytesMut,
    /// Encoded packets not yet written.
    pub wbuf: BytesMut,
    /// The protocol version of the connection.
    pub version: ProtocolVersion,
    /// Whether the broker resumed a stored session (CONNACK's Session Present).
    pub session_present: bool,
    /// QoS 1/2 publications the broker accepts unacknowledged from this client (its MQTT 5
    /// Receive Maximum; 65,535 when it names none, and always before 5.0).
    pub receive_maximum: u16,
    next_packet_id: u16,
}

/// Session Expiry Interval a persistent MQTT 5 session asks for: an hour outlives any run.
pub const PERSISTENT_SESSION_EXPIRY_S: u32 = 3600;

impl Client {
    /// Connects, sends CONNECT and waits for a successful CONNACK. `clean_start` false asks
    /// for a persistent session: Clean Session 0 in 3.1.1, Clean Start 0 with a Session
    /// Expiry Interval of [`PERSISTENT_SESSION_EXPIRY_S`] in 5.0.
    pub async fn connect(
        target: Target,
        cfg: &ClientConfig,
        client_id: &str,
        clean_start: bool,
    ) -> Result<Client, Failure> {
        let attempt = async {
            let stream = cfg.transport.connect(target).await?;
            let mut client = Client {
                stream,
                rbuf: BytesMut::with_capacity(4096),
                wbuf: BytesMut::with_capacity(256),
                version: cfg.version,
                session_present: false,
                receive_maximum: u16::MAX,
                next_packet_id: 0,
            };
            let mut connect = Connect::new(cfg.version, client_id, cfg.keep_alive);
            connect.clean_start = clean_start;
            connect.username = cfg.login.username.as_deref().map(Into::into);
            connect.password = cfg.login.password.clone().map(Bytes::from);
            if !clean_start && cfg.version.is_v5() {
                connect.properties.session_expiry_interval = Some(PERSISTENT_SESSION_EXPIRY_S);
            }
            client.queue(&Packet::Connect(Box::new(connect)));
            client.flush().await?;
            match client.recv().await? {
                Packet::ConnAck(ack) if ack.reason_code == ReasonCode::Success => {
                    client.session_present = ack.session_present;
                    if let Some(max) = ack.properties.receive_maximum {
                        client.receive_maximum = max;
                    }
                    Ok(client)
                }
                Packet::ConnAck(ack) => Err(Failure::Rejected(ack.reason_code as u8)),
                other => Err(Failure::Protocol(format!(
                    "expected CONNACK, got {other:?}"
                ))),
            }
        };
        timeout(cfg.timeout, attempt)
            .await
            .unwrap_or(Err(Failure::Timeout))
    }

    /// Subscribes to one filter and waits for a successful SUBACK.
    pub async fn subscribe(
        &mut self,
        filter: &str,
        qos: QoS,
        limit: Duration,
    ) -> Result<(), Failure> {
        let packet_id = self.next_packet_id();
        self.queue(&Packet::Subscribe(Subscribe::new(packet_id, filter, qos)));
        let exchange = async {
            self.flush().await?;
            loop {
                match self.recv().await? {
                    Packet::SubAck(ack) if ack.packet_id == packet_id => {
                        return match ack.reason_codes.first() {
                            Some(rc) if !rc.is_error() => Ok(()),
                            Some(rc) => Err(Failure::Rejected(*rc as u8)),
                            None => Err(Failure::Protocol("empty SUBACK".into())),
                        };
                    }
                    // Retained messages may arrive before the SUBACK; they are not counted.
                    Packet::Publish(_) => {}
                    other => {
                        return Err(Failure::Protocol(format!("expected SUBACK, got {other:?}")));
                    }
                }
            }
        };
        timeout(limit, exchange)
            .await
            .unwrap_or(Err(Failure::Timeout))
    }

    /// Sends DISCONNECT (normal) and closes the connection: the broker keeps a persistent
    /// session and discards the will.
    pub async fn disconnect(mut self) -> io::Result<()> {
        self.queue(&Packet::Disconnect(Disconnect::new(
            ReasonCode::NORMAL_DISCONNECTION,
        )));
        self.flush().await?;
        self.stream.shutdown().await
    }

    /// The next packet identifier (1..=65535, wrapping).
    pub fn next_packet_id(&mut self) -> u16 {
        self.next_packet_id = self.next_packet_id.checked_add(1).unwrap_or(1);
        self.next_packet_id
    }

    /// Appends an encoded packet to the write buffer.
    pub fn queue(&mut self, packet: &Packet) {
        encode_into(packet, self.version, &mut self.wbuf);
    }

    /// Writes the whole write buffer (framed first, over WebSocket).
    pub async fn flush(&mut self) -> io::Result<()> {
        self.stream.write_all_buf(&mut self.wbuf).await
    }

    /// Decodes the next packet from what has been read, if it is complete.
    pub fn try_decode(&mut self) -> Result<Option<Packet>, Failure> {
        decode_from(&mut self.rbuf, self.version)
    }

    /// Reads until a whole packet has arrived.
    pub async fn recv(&mut self) -> Result<Packet, Failure> {
        loop {
            if let Some(packet) = self.try_decode()? {
                return Ok(packet);
            }
            if self.stream.read_buf(&mut self.rbuf).await? == 0 {
                return Err(Failure::Closed);
            }
        }
    }
}

/// Decodes the next packet from a connection's read buffer, if it is complete.
pub fn decode_from(
    rbuf: &mut BytesMut,
    version: ProtocolVersion,
) -> Result<Option<Packet>, Failure> {
    decode(rbuf, version, MAX_PACKET_SIZE)
        .map_err(|e| Failure::Protocol(format!("undecodable packet from broker: {e}")))
}

/// Appends an encoded packet to a write buffer.
pub fn encode_into(packet: &Packet, version: ProtocolVersion, wbuf: &mut BytesMut) {
    // Packets built here are valid by construction; a failure is a bug in this tool.
    if let Err(e) = packet.encode(version, wbuf) {
        panic!("herald-bench built an unencodable packet: {e}");
    }
}

/// Nanoseconds since the Unix epoch: comparable across the worker processes of one machine.
pub fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mqtt_codec::ConnAck;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// The CONNECT a client sends, as a listener on port 0 receives it (answered with a
    /// successful CONNACK).
    async fn connect_as_seen(login: Login) -> Connect {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.expect("accept");
            let mut buf = BytesMut::new();
            let connect = loop {
                if let Some(p) = decode_from(&mut buf, ProtocolVersion::V3_1_1).expect("decode") {
                    break p;
                }
                assert_ne!(sock.read_buf(&mut buf).await.expect("read"), 0, "closed");
            };
            let mut out = BytesMut::new();
            let ack = Packet::ConnAck(Box::new(ConnAck::new(ReasonCode::Success, false)));
            encode_into(&ack, ProtocolVersion::V3_1_1, &mut out);
            sock.write_all(&out).await.expect("write");
            match connect {
                Packet::Connect(c) => *c,
                other => panic!("expected CONNECT, got {other:?}"),
            }
        });
        let cfg = ClientConfig {
            version: ProtocolVersion::V3_1_1,
            keep_alive: 60,
            timeout: Duration::from_secs(5),
            transport: Connector::default(),
            login,
        };
        let target = Target { addr, source: None };
        Client::connect(target, &cfg, "hb-login", true)
            .await
            .expect("connected");
        server.await.expect("server task")
    }

    #[tokio::test]
    async fn connect_carries_the_login() {
        let c = connect_as_seen(Login {
            username: Some("bench".into()),
            password: Some(b"s3cret".to_vec()),
        })
        .await;
        assert_eq!(c.username.as_deref(), Some("bench"));
        assert_eq!(c.password.as_deref(), Some(&b"s3cret"[..]));
    }

    #[tokio::test]
    async fn connect_without_a_login_carries_none() {
        let c = connect_as_seen(Login::default()).await;
        assert_eq!(c.username, None);
        assert_eq!(c.password, None);
    }
}
