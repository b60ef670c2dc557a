//! Test harness: a real Herald on a free loopback port, and a raw MQTT client on
//! `mqtt-codec` for exact, packet-level checks (third-party clients are used beside it).

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use herald::config::Config;
use herald::server::Server;
use mqtt_codec::{
    Connect, MAX_PACKET_SIZE, Packet, ProtocolVersion, Publish, QoS, Subscribe, decode,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long a test waits for a packet that should come.
pub const WAIT: Duration = Duration::from_secs(5);
/// How long a test waits to be sure a packet does not come.
pub const QUIET: Duration = Duration::from_millis(300);

/// A running Herald.
pub struct TestServer {
    pub server: Server,
    pub addr: SocketAddr,
}

/// The default configuration on a free port, in memory (tests/durability.rs and
/// tests/crash.rs use a store).
pub fn config() -> Config {
    let mut c = Config::default();
    c.listeners.mqtt = vec!["127.0.0.1:0".parse().unwrap()];
    // The default WebSocket port would clash between tests running at once.
    c.listeners.ws = Vec::new();
    // The HTTP API only where a test asks for it (tests/api.rs).
    c.http.listen = String::new();
    match std::env::var_os("TEST_WITH_STORE") {
        // The same conformance tests against the disk store: every acknowledgement then
        // waits for a group commit.
        Some(_) => {
            let dir = tempfile::tempdir().unwrap().keep();
            c.store.data_dir = dir;
            c.store.min_free_disk_bytes = 0;
        }
        None => c.store.in_memory = true,
    }
    c
}

/// Starts Herald with `config`.
pub async fn start_with(config: Config) -> TestServer {
    let server = Server::start(config).await.expect("herald starts");
    let addr = server.mqtt_addrs()[0];
    TestServer { server, addr }
}

/// Starts Herald with the defaults.
pub async fn start() -> TestServer {
    start_with(config()).await
}

/// A byte stream a test client speaks MQTT over: TCP, or TLS over TCP.
pub trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

/// A client speaking raw MQTT through the codec.
pub struct Raw {
    pub stream: Box<dyn Io>,
    pub rbuf: BytesMut,
    pub version: ProtocolVersion,
    next_id: u16,
}

impl Raw {
    /// Opens a TCP connection (no CONNECT yet).
    pub async fn open(addr: SocketAddr, version: ProtocolVersion) -> Raw {
        let stream = TcpStream::connect(addr).await.expect("tcp connect");
        stream.set_nodelay(true).unwrap();
        Raw {
            stream: Box::new(stream),
            rbuf: BytesMut::new(),
            version,
            next_id: 0,
        }
    }

    /// A client on an open stream (no CONNECT yet).
    pub fn from_stream(stream: TcpStream, version: ProtocolVersion) -> Raw {
        let _ = stream.set_nodelay(true);
        Raw::over(stream, version)
    }

    /// A client over any byte stream (no CONNECT yet).
    pub fn over(stream: impl Io + 'static, version: ProtocolVersion) -> Raw {
        Raw {
            stream: Box::new(stream),
            rbuf: BytesMut::new(),
            version,
            next_id: 0,
        }
    }

    /// Connects with `connect` and returns the CONNACK.
    pub async fn connect_with(addr: SocketAddr, connect: Connect) -> (Raw, mqtt_codec::ConnAck) {
        let mut raw = Raw::open(addr, connect.protocol).await;
        raw.send(Packet::Connect(Box::new(connect))).await;
        match raw.recv().await {
            Packet::ConnAck(ack) => (raw, *ack),
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    /// Sends CONNECT (clean start, `id`) over an open stream; asserts a successful CONNACK.
    pub async fn handshake(mut self, id: &str) -> Raw {
        self.send(Packet::Connect(Box::new(Connect::new(
            self.version,
            id,
            60,
        ))))
        .await;
        match self.recv().await {
            Packet::ConnAck(ack) => {
                assert_eq!(ack.reason_code, mqtt_codec::ReasonCode::Success, "{ack:?}")
            }
            other => panic!("expected CONNACK, got {other:?}"),
        }
        self
    }

    /// Connects with clean start and the given id; asserts success.
    pub async fn connect(addr: SocketAddr, version: ProtocolVersion, id: &str) -> Raw {
        let (raw, ack) = Raw::connect_with(addr, Connect::new(version, id, 60)).await;
        assert_eq!(ack.reason_code, mqtt_codec::ReasonCode::Success, "{ack:?}");
        raw
    }

    pub fn next_id(&mut self) -> u16 {
        self.next_id = self.next_id.checked_add(1).unwrap_or(1);
        self.next_id
    }

    pub async fn send(&mut self, packet: Packet) {
        let bytes = packet.to_bytes(self.version).expect("encodes");
        self.stream.write_all(&bytes).await.expect("write");
    }

    /// Sends, reporting a failed write (the server went away) instead of panicking.
    pub async fn try_send(&mut self, packet: Packet) -> std::io::Result<()> {
        let bytes = packet.to_bytes(self.version).expect("encodes");
        self.stream.write_all(&bytes).await
    }

    pub async fn send_bytes(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    /// The next packet, or `None` when the server closed the connection.
    pub async fn try_recv(&mut self, within: Duration) -> Option<Packet> {
        let read = async {
            loop {
                if let Some(p) = decode(&mut self.rbuf, self.version, MAX_PACKET_SIZE)
                    .expect("server sent a valid packet")
                {
                    return Some(p);
                }
                match self.stream.read_buf(&mut self.rbuf).await {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {}
                }
            }
        };
        tokio::time::timeout(within, read)
            .await
            .unwrap_or_else(|_| panic!("nothing within {within:?}"))
    }

    /// The next packet; panics if the connection closes.
    pub async fn recv(&mut self) -> Packet {
        self.try_recv(WAIT)
            .await
            .expect("connection closed before the expected packet")
    }

    /// Asserts no packet arrives within `QUIET`.
    pub async fn expect_nothing(&mut self) {
        let read = async {
            loop {
                if let Some(p) = decode(&mut self.rbuf, self.version, MAX_PACKET_SIZE).unwrap() {
                    return Some(p);
                }
                match self.stream.read_buf(&mut self.rbuf).await {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {}
                }
            }
        };
        if let Ok(Some(p)) = tokio::time::timeout(QUIET, read).await {
            panic!("expected nothing, got {p:?}");
        }
    }

    /// Waits for the server to close the connection; returns the packets sent before.
    pub async fn expect_closed(&mut self) -> Vec<Packet> {
        let mut got = Vec::new();
        while let Some(p) = self.try_recv(WAIT).await {
            got.push(p);
        }
        got
    }

    pub async fn recv_publish(&mut self) -> Publish {
        match self.recv().await {
            Packet::Publish(p) => p,
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }

    /// Subscribes to `filter` at `qos`; returns the SUBACK codes.
    pub async fn subscribe(&mut self, filter: &str, qos: QoS) -> Vec<mqtt_codec::ReasonCode> {
        let id = self.next_id();
        self.send(Packet::Subscribe(Subscribe::new(id, filter, qos)))
            .await;
        match self.recv().await {
            Packet::SubAck(ack) => {
                assert_eq!(ack.packet_id, id);
                ack.reason_codes
            }
            other => panic!("expected SUBACK, got {other:?}"),
        }
    }

    /// Publishes and, for QoS 1/2, completes the acknowledgement exchange.
    pub async fn publish(&mut self, topic: &str, payload: &[u8], qos: QoS, retain: bool) {
        let mut p = Publish::new(topic, payload.to_vec());
        p.qos = qos;
        p.retain = retain;
        if qos != QoS::AtMostOnce {
            p.packet_id = self.next_id();
        }
        let id = p.packet_id;
        self.send(Packet::Publish(p)).await;
        match qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => match self.recv().await {
                Packet::PubAck(a) => assert_eq!(a.packet_id, id),
                other => panic!("expected PUBACK, got {other:?}"),
            },
            QoS::ExactlyOnce => {
                match self.recv().await {
                    Packet::PubRec(a) => assert_eq!(a.packet_id, id),
                    other => panic!("expected PUBREC, got {other:?}"),
                }
                self.send(Packet::PubRel(mqtt_codec::Ack::new(id))).await;
                match self.recv().await {
                    Packet::PubComp(a) => assert_eq!(a.packet_id, id),
                    other => panic!("expected PUBCOMP, got {other:?}"),
                }
            }
        }
    }

    pub async fn disconnect(mut self) {
        self.send(Packet::Disconnect(mqtt_codec::Disconnect::default()))
            .await;
        let _ = self.stream.shutdown().await;
    }
}

/// Subscribes to one filter with `options` and subscription identifier `id` (v5); returns the
/// SUBACK reason codes.
pub async fn subscribe_opts(
    c: &mut Raw,
    filter: &str,
    options: mqtt_codec::SubscriptionOptions,
    id: Option<u32>,
) -> Vec<mqtt_codec::ReasonCode> {
    let packet_id = c.next_id();
    let mut s = Subscribe::new(packet_id, filter, options.qos);
    s.subscriptions[0].options = options;
    s.properties.subscription_identifier = id;
    c.send(Packet::Subscribe(s)).await;
    match c.recv().await {
        Packet::SubAck(a) => {
            assert_eq!(a.packet_id, packet_id);
            a.reason_codes
        }
        other => panic!("expected SUBACK, got {other:?}"),
    }
}

/// Every PUBLISH that arrives: waits (up to `WAIT`) while fewer than `at_least` have come,
/// then until nothing more comes for `QUIET`.
pub async fn drain(c: &mut Raw, at_least: usize) -> Vec<Publish> {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut got = Vec::new();
    loop {
        let wait = if got.len() < at_least {
            deadline.saturating_duration_since(tokio::time::Instant::now())
        } else {
            QUIET
        };
        match tokio::time::timeout(wait, c.try_recv(2 * WAIT)).await {
            Err(_) => return got,
            Ok(Some(Packet::Publish(p))) => got.push(p),
            Ok(Some(other)) => panic!("expected only PUBLISH, got {other:?}"),
            Ok(None) => panic!("connection closed while draining"),
        }
    }
}

/// The round trip that proves every packet sent before it has been handled.
pub async fn ping(c: &mut Raw) {
    c.send(Packet::PingReq).await;
    assert_eq!(c.recv().await, Packet::PingResp);
}

/// Polls `cond` every 10 ms until it holds; fails after `within`.
pub async fn eventually_within(what: &str, within: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + within;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not within {within:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Polls `cond` every 10 ms until it holds; fails after `WAIT`.
pub async fn eventually(what: &str, cond: impl FnMut() -> bool) {
    eventually_within(what, WAIT, cond).await;
}

/// Waits until `client_id`'s session is offline (its connection closed, the session kept).
pub async fn until_offline(s: &TestServer, client_id: &str) {
    until_offline_in(s, "", client_id).await;
}

/// Waits until `client_id`'s session in `tenant` exists and is offline.
pub async fn until_offline_in(s: &TestServer, tenant: &str, client_id: &str) {
    let broker = s.server.broker().clone();
    eventually(&format!("{client_id} offline"), || {
        broker.find_tenant(tenant).is_some_and(|t| {
            t.sessions
                .get(client_id)
                .is_some_and(|session| !session.lock().connected())
        })
    })
    .await;
}

/// Asserts that nothing arrives and the connection stays open for `d`.
pub async fn quiet_for(c: &mut Raw, d: Duration) {
    match tokio::time::timeout(d, c.try_recv(d + WAIT)).await {
        Err(_) => {}
        Ok(Some(p)) => panic!("expected nothing for {d:?}, got {p:?}"),
        Ok(None) => panic!("connection closed within {d:?}"),
    }
}

/// Reads a `herald serve` process's log on a thread of its own (so that Herald never blocks
/// on a full pipe), calls `on_line` with every line, and returns the address of the first
/// listener the log names (`addr=...`; port 0 lets the system choose), or panics after 30 s.
pub fn listen_addr(
    stdout: std::process::ChildStdout,
    mut on_line: impl FnMut(&str) + Send + 'static,
) -> SocketAddr {
    use std::io::{BufRead, BufReader};
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            on_line(&line);
            if let Some(at) = line.find("addr=") {
                let addr: String = line[at + 5..]
                    .chars()
                    .take_while(|c| !c.is_whitespace())
                    .collect();
                let _ = tx.send(addr);
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(30))
        .expect("herald logs its listen address")
        .parse()
        .expect("a socket address")
}

pub mod nats;

/// Test certificates: a CA, a server certificate it signed for localhost and 127.0.0.1, and
/// client certificates on demand, as PEM files in a temporary directory.
pub mod pki {
    use std::path::PathBuf;

    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, SanType,
    };

    pub struct Pki {
        pub dir: tempfile::TempDir,
        ca: CertifiedIssuer<'static, KeyPair>,
        /// The CA certificate (PEM).
        pub ca_file: PathBuf,
        /// The server certificate chain and key (PEM).
        pub cert_file: PathBuf,
        pub key_file: PathBuf,
    }

    fn ca_params(name: &str) -> CertificateParams {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        p
    }

    impl Pki {
        pub fn new() -> Pki {
            let dir = tempfile::tempdir().unwrap();
            let ca = CertifiedIssuer::self_signed(
                ca_params("Herald test CA"),
                KeyPair::generate().unwrap(),
            )
            .unwrap();
            let ca_file = dir.path().join("ca.pem");
            std::fs::write(&ca_file, ca.pem()).unwrap();
            let mut pki = Pki {
                cert_file: dir.path().join("server.pem"),
                key_file: dir.path().join("server.key"),
                dir,
                ca,
                ca_file,
            };
            pki.write_server("herald one");
            pki
        }

        /// Writes a new server certificate (for localhost and 127.0.0.1, subject CN `cn`)
        /// over the server files; returns its DER.
        pub fn write_server(&mut self, cn: &str) -> Vec<u8> {
            let (cert, key) = self.issue(cn, &["localhost", "127.0.0.1"]);
            std::fs::write(&self.cert_file, cert.pem()).unwrap();
            std::fs::write(&self.key_file, key.serialize_pem()).unwrap();
            cert.der().to_vec()
        }

        fn issue(&self, cn: &str, sans: &[&str]) -> (rcgen::Certificate, KeyPair) {
            let mut p =
                CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                    .unwrap();
            p.distinguished_name.push(DnType::CommonName, cn);
            let key = KeyPair::generate().unwrap();
            let cert = p.signed_by(&key, &self.ca).unwrap();
            (cert, key)
        }

        /// A client certificate with subject CN `cn` and, if given, a DNS SAN; returns the
        /// certificate and key files.
        pub fn client(&self, cn: &str, dns_san: Option<&str>) -> (PathBuf, PathBuf) {
            let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
            p.distinguished_name.push(DnType::CommonName, cn);
            if let Some(dns) = dns_san {
                p.subject_alt_names
                    .push(SanType::DnsName(dns.try_into().unwrap()));
            }
            let key = KeyPair::generate().unwrap();
            let cert = p.signed_by(&key, &self.ca).unwrap();
            self.write_pair(&format!("client-{cn}"), &cert.pem(), &key.serialize_pem())
        }

        /// A client certificate with subject CN `cn` and Organization `org` (a tenant).
        pub fn client_of(&self, cn: &str, org: &str) -> (PathBuf, PathBuf) {
            let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
            p.distinguished_name.push(DnType::CommonName, cn);
            p.distinguished_name.push(DnType::OrganizationName, org);
            let key = KeyPair::generate().unwrap();
            let cert = p.signed_by(&key, &self.ca).unwrap();
            self.write_pair(
                &format!("client-{cn}-{org}"),
                &cert.pem(),
                &key.serialize_pem(),
            )
        }

        /// A client certificate signed by a CA Herald does not trust.
        pub fn rogue_client(&self) -> (PathBuf, PathBuf) {
            let rogue =
                CertifiedIssuer::self_signed(ca_params("Rogue CA"), KeyPair::generate().unwrap())
                    .unwrap();
            let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
            p.distinguished_name.push(DnType::CommonName, "mallory");
            let key = KeyPair::generate().unwrap();
            let cert = p.signed_by(&key, &rogue).unwrap();
            self.write_pair("rogue", &cert.pem(), &key.serialize_pem())
        }

        fn write_pair(&self, name: &str, cert: &str, key: &str) -> (PathBuf, PathBuf) {
            let c = self.dir.path().join(format!("{name}.pem"));
            let k = self.dir.path().join(format!("{name}.key"));
            std::fs::write(&c, cert).unwrap();
            std::fs::write(&k, key).unwrap();
            (c, k)
        }
    }

    /// A TLS client config trusting the test CA, with a client certificate if given.
    pub fn client_config(
        ca_file: &std::path::Path,
        client: Option<(&std::path::Path, &std::path::Path)>,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> std::sync::Arc<rustls::ClientConfig> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(ca_file).unwrap() {
            roots.add(cert.unwrap()).unwrap();
        }
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots);
        std::sync::Arc::new(match client {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => builder
                .with_client_auth_cert(
                    CertificateDer::pem_file_iter(cert)
                        .unwrap()
                        .map(Result::unwrap)
                        .collect(),
                    PrivateKeyDer::from_pem_file(key).unwrap(),
                )
                .unwrap(),
        })
    }

    /// Opens a TLS connection to `addr` as `localhost`.
    pub async fn tls_connect(
        addr: std::net::SocketAddr,
        config: std::sync::Arc<rustls::ClientConfig>,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
    }
}

/// A minimal HTTP/1.1 client for the API tests: one request per connection.
pub mod http {
    use std::net::SocketAddr;
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A response: status, headers (names lower-cased), body.
    #[derive(Debug)]
    pub struct Reply {
        pub status: u16,
        pub headers: Vec<(String, String)>,
        pub body: String,
    }

    impl Reply {
        /// A header's value.
        pub fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        }

        /// The body as JSON (`Null` when empty).
        pub fn json(&self) -> serde_json::Value {
            if self.body.is_empty() {
                return serde_json::Value::Null;
            }
            serde_json::from_str(&self.body)
                .unwrap_or_else(|e| panic!("a JSON body ({e}): {}", self.body))
        }
    }

    /// Sends one request (JSON content type, `Host` the address as curl sends it) and reads
    /// the whole response.
    pub async fn request(
        addr: SocketAddr,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Reply {
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        req.push_str(body);
        exchange(addr, req.as_bytes()).await
    }

    /// Sends `request` as it is (head and body, every header written by the test) and reads
    /// the whole response.
    pub async fn exchange(addr: SocketAddr, request: &[u8]) -> Reply {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(request).await.unwrap();
        let mut raw = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut raw))
            .await
            .expect("the API answers")
            .unwrap();
        let text = String::from_utf8(raw).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").expect("a response head");
        let mut lines = head.lines();
        let status = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .expect("a status line");
        let headers = lines
            .filter_map(|l| l.split_once(": "))
            .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
            .collect();
        Reply {
            status,
            headers,
            body: body.to_string(),
        }
    }
}

/// xorshift64: a small seeded generator for the moments and victims of kill tests (a
/// failure replays with its seed).
pub struct Rng(pub u64);

impl Rng {
    /// The next number below `n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}
