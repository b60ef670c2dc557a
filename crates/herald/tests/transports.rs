//! TLS, WebSocket and the PROXY protocol: real TLS clients (rustls, mosquitto_pub/sub with
//! --cafile), a WebSocket client written byte by byte, and PROXY v1/v2 headers in front of
//! MQTT and TLS.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::pki::{Pki, client_config, tls_connect};
use common::{QUIET, Raw, WAIT, eventually};
use herald::broker::stats::CloseReason;
use herald::config::{ClientAuth, Config, ListenerKind, UsernameFrom};
use mqtt_codec::ProtocolVersion::{V3_1_1, V5};
use mqtt_codec::{Packet, QoS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const ANY: &str = "127.0.0.1:0";

/// Herald with every kind of listener, on the test certificates.
fn config(pki: &Pki) -> Config {
    let mut c = common::config();
    c.listeners.ws = vec![ANY.parse().unwrap()];
    c.listeners.tls = vec![ANY.parse().unwrap()];
    c.listeners.wss = vec![ANY.parse().unwrap()];
    c.tls.cert_file = pki.cert_file.clone();
    c.tls.key_file = pki.key_file.clone();
    c
}

fn addr(s: &common::TestServer, kind: ListenerKind) -> SocketAddr {
    s.server.addrs(kind)[0]
}

fn closes(s: &common::TestServer, reason: CloseReason) -> u64 {
    s.server.broker().stats.closes(reason)
}

/// The origin Herald recorded for `client_id`'s session.
fn origin(s: &common::TestServer, client_id: &str) -> herald::broker::session::Origin {
    let session = s
        .server
        .broker()
        .default_tenant
        .sessions
        .get(client_id)
        .expect("session exists");
    let st = session.lock();
    st.origin().cloned().expect("origin recorded")
}

#[tokio::test]
async fn tls_1_2_and_1_3_clients_exchange_messages_with_tcp_clients() {
    let pki = Pki::new();
    let s = common::start_with(config(&pki)).await;
    let tls = addr(&s, ListenerKind::Tls);
    let mut tcp = Raw::connect(s.addr, V5, "tcp-sub").await;
    tcp.subscribe("tls/#", QoS::AtLeastOnce).await;
    for (version, name) in [
        (&rustls::version::TLS12, "tls12"),
        (&rustls::version::TLS13, "tls13"),
    ] {
        let stream = tls_connect(tls, client_config(&pki.ca_file, None, &[version]))
            .await
            .expect("TLS handshake");
        assert_eq!(
            stream.get_ref().1.protocol_version(),
            Some(version.version),
            "negotiated {name}"
        );
        let mut c = Raw::over(stream, V3_1_1).handshake(name).await;
        c.subscribe("tcp/#", QoS::AtLeastOnce).await;
        // Large enough to span many TLS records.
        let big = vec![b'x'; 300_000];
        c.publish(&format!("tls/{name}"), &big, QoS::AtLeastOnce, false)
            .await;
        let p = tcp.recv_publish().await;
        assert_eq!(
            (&*p.topic, p.payload.len()),
            (&*format!("tls/{name}"), big.len())
        );
        tcp.publish("tcp/x", name.as_bytes(), QoS::AtLeastOnce, false)
            .await;
        let p = c.recv_publish().await;
        assert_eq!(&p.payload[..], name.as_bytes());
        assert_eq!(origin(&s, name).listener, ListenerKind::Tls);
        c.disconnect().await;
    }
    // TLS 1.3 key updates after the handshake: Herald answers with its own, and traffic
    // flows on under the new keys both ways.
    let mut stream = tls_connect(
        tls,
        client_config(&pki.ca_file, None, &[&rustls::version::TLS13]),
    )
    .await
    .unwrap();
    stream.get_mut().1.refresh_traffic_keys().unwrap();
    let mut c = Raw::over(stream, V5).handshake("rekeyed").await;
    c.subscribe("tcp/#", QoS::AtLeastOnce).await;
    for round in 0..3 {
        tcp.publish(
            "tcp/k",
            format!("round {round}").as_bytes(),
            QoS::AtLeastOnce,
            false,
        )
        .await;
        assert_eq!(
            c.recv_publish().await.payload,
            format!("round {round}").as_bytes()
        );
        c.publish("tls/k", b"back", QoS::AtLeastOnce, false).await;
        assert_eq!(&tcp.recv_publish().await.payload[..], b"back");
    }
    // A plain MQTT client on the TLS port fails the handshake (it is sent an alert, then the
    // connection closes); it is counted as such.
    let mut plain = TcpStream::connect(tls).await.unwrap();
    plain
        .write_all(&encode(Packet::Connect(Box::new(
            mqtt_codec::Connect::new(V5, "plain", 60),
        ))))
        .await
        .unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(WAIT, plain.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the connection is closed");
    assert_eq!(
        answer.first(),
        Some(&0x15),
        "a TLS alert record: {answer:?}"
    );
    eventually("the failed handshake is counted", || {
        closes(&s, CloseReason::TlsHandshakeFailed) == 1
    })
    .await;
}

fn mosquitto(tool: &str) -> Command {
    let c = Command::new(tool);
    assert!(
        which(tool),
        "{tool} is needed (Debian package mosquitto-clients; scripts/test installs it)"
    );
    c
}

fn which(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

// Multi-threaded: the mosquitto tools are waited for on the test's thread while Herald
// serves them on the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_clients_connect_over_tls_with_cafile() {
    let pki = Pki::new();
    let s = common::start_with(config(&pki)).await;
    let port = addr(&s, ListenerKind::Tls).port().to_string();
    let ca = pki.ca_file.to_str().unwrap().to_string();
    let tls_args = |c: &mut Command| {
        c.args(["-h", "localhost", "-p", &port, "--cafile", &ca]);
    };
    let mut sub = mosquitto("mosquitto_sub");
    tls_args(&mut sub);
    let sub = sub
        .args([
            "-t", "cafile/#", "-C", "2", "-W", "10", "-v", "-i", "mosq-sub",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    eventually("mosquitto_sub subscribed", || {
        s.server
            .broker()
            .default_tenant
            .sessions
            .get("mosq-sub")
            .is_some_and(|x| !x.lock().subscriptions().is_empty())
    })
    .await;
    let mut publ = mosquitto("mosquitto_pub");
    tls_args(&mut publ);
    let out = publ
        .args(["-t", "cafile/tls", "-m", "over tls", "-q", "1"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut tcp = Raw::connect(s.addr, V5, "tcp-pub").await;
    tcp.publish("cafile/tcp", b"over tcp", QoS::AtLeastOnce, false)
        .await;
    let out = tokio::task::spawn_blocking(|| sub.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "cafile/tls over tls\ncafile/tcp over tcp\n"
    );
    // Without the CA, mosquitto_pub refuses Herald's certificate.
    let out = mosquitto("mosquitto_pub")
        .args(["-h", "localhost", "-p", &port, "--capath", "/nonexistent"])
        .args(["-t", "x", "-m", "y"])
        .output()
        .unwrap();
    assert!(!out.status.success());
}

fn mtls_config(pki: &Pki, auth: ClientAuth, from: UsernameFrom) -> Config {
    let mut c = config(pki);
    c.tls.client_ca_file = pki.ca_file.clone();
    c.tls.client_auth = auth;
    c.tls.username_from = from;
    c
}

#[tokio::test]
async fn client_certificates_are_verified_and_name_the_user() {
    let pki = Pki::new();
    let alice = pki.client("alice", Some("alice.devices.example"));
    let s = common::start_with(mtls_config(&pki, ClientAuth::Required, UsernameFrom::Cn)).await;
    let tls = addr(&s, ListenerKind::Tls);
    let v13 = [&rustls::version::TLS13];
    let with = |cert: &(std::path::PathBuf, std::path::PathBuf)| {
        client_config(&pki.ca_file, Some((&cert.0, &cert.1)), &v13)
    };

    // The certificate's CN replaces CONNECT's username.
    let stream = tls_connect(tls, with(&alice)).await.unwrap();
    let mut c = Raw::over(stream, V5);
    let mut connect = mqtt_codec::Connect::new(V5, "alice-1", 60);
    connect.username = Some("claimed".into());
    c.send(Packet::Connect(Box::new(connect))).await;
    assert!(matches!(c.recv().await, Packet::ConnAck(_)));
    let o = origin(&s, "alice-1");
    assert_eq!(o.username.as_deref(), Some("alice"));

    // No certificate, or one from another CA: refused in the handshake. (In TLS 1.3 the
    // client learns it at its first read.)
    for (name, config) in [
        ("none", client_config(&pki.ca_file, None, &v13)),
        ("rogue", with(&pki.rogue_client())),
    ] {
        let refused = async {
            let stream = tls_connect(tls, config).await?;
            let mut c = Raw::over(stream, V5);
            c.send(Packet::Connect(Box::new(mqtt_codec::Connect::new(
                V5, name, 60,
            ))))
            .await;
            let mut byte = [0u8; 1];
            c.stream.read_exact(&mut byte).await.map(|_| ())
        };
        assert!(refused.await.is_err(), "{name} certificate accepted");
    }
    eventually("both refusals are counted", || {
        closes(&s, CloseReason::TlsHandshakeFailed) == 2
    })
    .await;
    assert!(
        s.server
            .broker()
            .default_tenant
            .sessions
            .get("none")
            .is_none()
    );
    c.disconnect().await;

    // Optional certificates, the username from the SAN. The certificate is an
    // authentication method: a client without one proves no username (refused, 0x86), and
    // is admitted without a username only where auth.anonymous allows it.
    let mut optional = mtls_config(&pki, ClientAuth::Optional, UsernameFrom::San);
    optional.auth.anonymous = Some(vec!["tls".into()]);
    let s = common::start_with(optional).await;
    let tls = addr(&s, ListenerKind::Tls);
    let stream = tls_connect(tls, with(&alice)).await.unwrap();
    let _a = Raw::over(stream, V5).handshake("alice-2").await;
    assert_eq!(
        origin(&s, "alice-2").username.as_deref(),
        Some("alice.devices.example")
    );
    let bare = || async {
        let stream = tls_connect(tls, client_config(&pki.ca_file, None, &v13))
            .await
            .unwrap();
        Raw::over(stream, V5)
    };
    let mut claimed = bare().await;
    let mut connect = mqtt_codec::Connect::new(V5, "claimed", 60);
    connect.username = Some("bob".into());
    claimed.send(Packet::Connect(Box::new(connect))).await;
    match claimed.recv().await {
        Packet::ConnAck(a) => {
            assert_eq!(a.reason_code, mqtt_codec::ReasonCode::BadUserNameOrPassword)
        }
        other => panic!("{other:?}"),
    }
    let _anon = bare().await.handshake("anon").await;
    assert_eq!(origin(&s, "anon").username, None);
}

/// The tenant from the certificate's Organization: the same CN and client id in two
/// organizations are two clients that never meet.
#[tokio::test]
async fn client_certificates_name_the_tenant() {
    let pki = Pki::new();
    let mut c = mtls_config(&pki, ClientAuth::Required, UsernameFrom::Cn);
    c.tls.tenant_from = herald::config::TenantField::O;
    let s = common::start_with(c).await;
    let tls = addr(&s, ListenerKind::Tls);
    let v13 = [&rustls::version::TLS13];
    let mut clients = Vec::new();
    for org in ["acme", "globex"] {
        let cert = pki.client_of("sensor", org);
        let config = client_config(&pki.ca_file, Some((&cert.0, &cert.1)), &v13);
        let stream = tls_connect(tls, config).await.unwrap();
        let mut c = Raw::over(stream, V5).handshake("dev-1").await;
        c.subscribe("t", QoS::AtLeastOnce).await;
        clients.push((org, c));
    }
    for (org, c) in &mut clients {
        c.publish("t", org.as_bytes(), QoS::AtMostOnce, false).await;
        assert_eq!(&c.recv_publish().await.payload[..], org.as_bytes());
        c.expect_nothing().await;
    }
    let broker = s.server.broker();
    for org in ["acme", "globex"] {
        let tenant = broker
            .find_tenant(org)
            .expect("tenant from the certificate");
        let session = tenant.sessions.get("dev-1").expect("its own dev-1");
        let st = session.lock();
        assert_eq!(st.origin().unwrap().username.as_deref(), Some("sensor"));
    }
    assert!(broker.default_tenant.sessions.get("dev-1").is_none());
}

#[tokio::test]
async fn silent_connections_do_not_hold_up_handshakes() {
    let pki = Pki::new();
    let mut c = config(&pki);
    c.limits.connect_timeout_secs = 2;
    let s = common::start_with(c).await;
    let tls = addr(&s, ListenerKind::Tls);
    let wss = addr(&s, ListenerKind::Wss);
    // 100 connections that never send a ClientHello.
    let mut silent = Vec::new();
    for i in 0..100 {
        let to = if i % 2 == 0 { tls } else { wss };
        silent.push(TcpStream::connect(to).await.unwrap());
    }
    // Meanwhile other clients connect and talk at once.
    let started = std::time::Instant::now();
    for i in 0..5 {
        let stream = tls_connect(
            tls,
            client_config(&pki.ca_file, None, &[&rustls::version::TLS13]),
        )
        .await
        .unwrap();
        let mut c = Raw::over(stream, V5).handshake(&format!("busy-{i}")).await;
        common::ping(&mut c).await;
    }
    let mut tcp = Raw::connect(s.addr, V5, "tcp").await;
    common::ping(&mut tcp).await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "normal clients waited for the silent ones: {:?}",
        started.elapsed()
    );
    // The silent ones are closed at the connect timeout.
    for mut conn in silent {
        let mut buf = [0u8; 16];
        let read = tokio::time::timeout(Duration::from_secs(6), conn.read(&mut buf)).await;
        assert!(
            matches!(read, Ok(Ok(0)) | Ok(Err(_))),
            "a silent connection stayed open"
        );
    }
    eventually("the silent connections are counted", || {
        closes(&s, CloseReason::ConnectTimeout) == 100
    })
    .await;
}

/// A WebSocket client written byte by byte.
struct Ws {
    tcp: TcpStream,
    buf: Vec<u8>,
}

impl Ws {
    /// Sends an upgrade request; returns the response head and the connection.
    async fn upgrade(addr: SocketAddr, path: &str, protocol: Option<&str>) -> (String, Ws) {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        let protocol = protocol
            .map(|p| format!("Sec-WebSocket-Protocol: {p}\r\n"))
            .unwrap_or_default();
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\n{protocol}\r\n"
        );
        tcp.write_all(request.as_bytes()).await.unwrap();
        let mut ws = Ws {
            tcp,
            buf: Vec::new(),
        };
        let head = loop {
            if let Some(end) = ws.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8(ws.buf[..end + 4].to_vec()).unwrap();
                ws.buf.drain(..end + 4);
                break head;
            }
            assert!(ws.fill().await > 0, "closed before the response");
        };
        (head, ws)
    }

    async fn fill(&mut self) -> usize {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(WAIT, self.tcp.read(&mut chunk))
            .await
            .expect("server answers")
            .unwrap_or(0);
        self.buf.extend_from_slice(&chunk[..n]);
        n
    }

    /// Sends one masked frame.
    async fn frame(&mut self, opcode: u8, fin: bool, payload: &[u8]) {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        let mut f = vec![opcode | if fin { 0x80 } else { 0 }];
        match payload.len() {
            n if n < 126 => f.push(0x80 | n as u8),
            n if n < 65536 => {
                f.push(0x80 | 126);
                f.extend((n as u16).to_be_bytes());
            }
            n => {
                f.push(0x80 | 127);
                f.extend((n as u64).to_be_bytes());
            }
        }
        f.extend(mask);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.tcp.write_all(&f).await.unwrap();
    }

    /// The next frame from the server: opcode and payload (server frames are not masked).
    async fn next_frame(&mut self) -> Option<(u8, Vec<u8>)> {
        loop {
            if self.buf.len() >= 2 {
                assert_eq!(self.buf[1] & 0x80, 0, "server frames are not masked");
                let (len, at) = match self.buf[1] & 0x7f {
                    126 if self.buf.len() >= 4 => {
                        (u16::from_be_bytes([self.buf[2], self.buf[3]]) as usize, 4)
                    }
                    127 if self.buf.len() >= 10 => (
                        u64::from_be_bytes(self.buf[2..10].try_into().unwrap()) as usize,
                        10,
                    ),
                    n if n < 126 => (n as usize, 2),
                    _ => (usize::MAX, 0),
                };
                if len != usize::MAX && self.buf.len() >= at + len {
                    let opcode = self.buf[0] & 0x0f;
                    let payload = self.buf[at..at + len].to_vec();
                    self.buf.drain(..at + len);
                    return Some((opcode, payload));
                }
            }
            if self.fill().await == 0 {
                return None;
            }
        }
    }

    /// The MQTT packets the next binary frames carry, until `n` have come.
    async fn packets(&mut self, n: usize) -> Vec<Packet> {
        let mut stream = bytes::BytesMut::new();
        let mut out = Vec::new();
        while out.len() < n {
            let (opcode, payload) = self.next_frame().await.expect("a frame");
            assert_eq!(opcode, 2, "MQTT comes in binary frames");
            stream.extend_from_slice(&payload);
            while let Some(p) = mqtt_codec::decode(&mut stream, V5, 1 << 20).unwrap() {
                out.push(p);
            }
        }
        out
    }
}

fn encode(p: Packet) -> Vec<u8> {
    p.to_bytes(V5).unwrap().to_vec()
}

#[tokio::test]
async fn websocket_frames_carry_the_mqtt_stream_either_way() {
    let pki = Pki::new();
    let s = common::start_with(config(&pki)).await;
    let ws_addr = addr(&s, ListenerKind::Ws);
    let (head, mut ws) = Ws::upgrade(ws_addr, "/mqtt", Some("mqtt")).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"),
        "{head}"
    );
    assert!(head.contains("Sec-WebSocket-Protocol: mqtt\r\n"), "{head}");

    // CONNECT split over three frames (a fragmented message), then SUBSCRIBE and PUBLISH in
    // one frame.
    let connect = encode(Packet::Connect(Box::new(mqtt_codec::Connect::new(
        V5, "ws-1", 60,
    ))));
    ws.frame(2, false, &connect[..3]).await;
    ws.frame(0, false, &connect[3..7]).await;
    ws.frame(0, true, &connect[7..]).await;
    assert!(matches!(ws.packets(1).await[0], Packet::ConnAck(_)));
    let mut two = encode(Packet::Subscribe(mqtt_codec::Subscribe::new(
        1,
        "ws/#",
        QoS::AtLeastOnce,
    )));
    let mut publish = mqtt_codec::Publish::new("ws/self", vec![7u8; 70_000]);
    publish.qos = QoS::AtLeastOnce;
    publish.packet_id = 2;
    two.extend(encode(Packet::Publish(publish)));
    ws.frame(2, true, &two).await;
    let got = ws.packets(3).await;
    assert!(matches!(got[0], Packet::SubAck(_)), "{:?}", got[0]);
    assert!(matches!(got[1], Packet::PubAck(_) | Packet::Publish(_)));
    let publish = got
        .iter()
        .find_map(|p| match p {
            Packet::Publish(p) => Some(p),
            _ => None,
        })
        .expect("its own message back");
    assert_eq!(publish.payload.len(), 70_000);

    // A TCP client's message reaches the WebSocket client, and the other way.
    let mut tcp = Raw::connect(s.addr, V5, "tcp").await;
    tcp.subscribe("tcp/#", QoS::AtMostOnce).await;
    tcp.publish("ws/from-tcp", b"hello ws", QoS::AtMostOnce, false)
        .await;
    match &ws.packets(1).await[0] {
        Packet::Publish(p) => assert_eq!(&p.payload[..], b"hello ws"),
        other => panic!("{other:?}"),
    }
    ws.frame(
        2,
        true,
        &encode(Packet::Publish(mqtt_codec::Publish::new(
            "tcp/from-ws",
            &b"hello tcp"[..],
        ))),
    )
    .await;
    assert_eq!(&tcp.recv_publish().await.payload[..], b"hello tcp");

    // Ping is answered with its payload; close is echoed and ends the connection.
    ws.frame(9, true, b"are you there").await;
    assert_eq!(ws.next_frame().await, Some((10, b"are you there".to_vec())));
    ws.frame(8, true, &1000u16.to_be_bytes()).await;
    assert_eq!(
        ws.next_frame().await,
        Some((8, 1000u16.to_be_bytes().to_vec()))
    );
    assert_eq!(ws.next_frame().await, None, "the connection ends");
}

#[tokio::test]
async fn websocket_upgrades_are_checked() {
    let pki = Pki::new();
    let s = common::start_with(config(&pki)).await;
    let ws_addr = addr(&s, ListenerKind::Ws);
    let (head, _) = Ws::upgrade(ws_addr, "/elsewhere", Some("mqtt")).await;
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    let (head, _) = Ws::upgrade(ws_addr, "/mqtt", Some("chat, superchat")).await;
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    // A client offering no subprotocol is served, and told none.
    let (head, mut ws) = Ws::upgrade(ws_addr, "/mqtt?x=1", None).await;
    assert!(
        head.starts_with("HTTP/1.1 101") && !head.contains("Sec-WebSocket-Protocol"),
        "{head}"
    );
    // An unmasked frame is a protocol error: close 1002.
    let connect = encode(Packet::Connect(Box::new(mqtt_codec::Connect::new(
        V5, "unmasked", 60,
    ))));
    let mut raw = vec![0x82, connect.len() as u8];
    raw.extend(&connect);
    ws.tcp.write_all(&raw).await.unwrap();
    assert_eq!(
        ws.next_frame().await,
        Some((8, 1002u16.to_be_bytes().to_vec()))
    );
    eventually("refusals are counted", || {
        closes(&s, CloseReason::WebSocketRefused) == 2
    })
    .await;
}

#[tokio::test]
async fn proxy_protocol_headers_give_the_client_address() {
    let pki = Pki::new();
    let mut c = config(&pki);
    c.listeners.mqtt = vec![ANY.parse().unwrap(), ANY.parse().unwrap()];
    // Port 0 addresses cannot be told apart in proxy_protocol: bind fixed free ports.
    let free = |_| {
        std::net::TcpListener::bind(ANY)
            .unwrap()
            .local_addr()
            .unwrap()
    };
    let (proxied_mqtt, proxied_tls) = (free(0), free(1));
    c.listeners.mqtt = vec![ANY.parse().unwrap(), proxied_mqtt];
    c.listeners.tls = vec![proxied_tls];
    c.listeners.proxy_protocol = vec![proxied_mqtt, proxied_tls];
    let s = common::start_with(c).await;

    // v1 in front of MQTT.
    let mut tcp = TcpStream::connect(proxied_mqtt).await.unwrap();
    tcp.write_all(b"PROXY TCP4 203.0.113.7 10.0.0.1 51234 1883\r\n")
        .await
        .unwrap();
    let _v1 = Raw::from_stream(tcp, V5).handshake("via-v1").await;
    assert_eq!(
        origin(&s, "via-v1").peer,
        "203.0.113.7:51234".parse().unwrap()
    );

    // v2 in front of TLS.
    let src: SocketAddr = "[2001:db8::42]:40000".parse().unwrap();
    let header = ppp_v2(src, proxied_tls);
    let mut tcp = TcpStream::connect(proxied_tls).await.unwrap();
    tcp.write_all(&header).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let stream = tokio_rustls::TlsConnector::from(client_config(
        &pki.ca_file,
        None,
        &[&rustls::version::TLS13],
    ))
    .connect(name, tcp)
    .await
    .unwrap();
    let _v2 = Raw::over(stream, V5).handshake("via-v2").await;
    let o = origin(&s, "via-v2");
    assert_eq!((o.peer, o.listener), (src, ListenerKind::Tls));

    // Without a header: refused at once, and counted.
    let mut bare = Raw::open(proxied_mqtt, V5).await;
    bare.send(Packet::Connect(Box::new(mqtt_codec::Connect::new(
        V5, "bare", 60,
    ))))
    .await;
    bare.expect_closed().await;
    eventually("the refusal is counted", || {
        closes(&s, CloseReason::ProxyHeaderInvalid) == 1
    })
    .await;
    // The listener without the option takes plain clients, and sees their own address.
    let plain = Raw::connect(s.addr, V5, "plain").await;
    assert!(origin(&s, "plain").peer.ip().is_loopback());
    drop(plain);
    tokio::time::sleep(QUIET).await;
    assert_eq!(
        s.server.broker().stats.open.load(Ordering::Relaxed),
        2,
        "the proxied clients are still connected"
    );
}

/// A PROXY v2 header for a TCP connection from `src` to `dst`.
fn ppp_v2(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let dst = SocketAddr::new(std::net::Ipv6Addr::LOCALHOST.into(), dst.port());
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.push(0x21); // version 2, PROXY
    h.push(0x21); // IPv6, stream
    h.extend(36u16.to_be_bytes());
    let ip = |a: SocketAddr| match a.ip() {
        std::net::IpAddr::V6(ip) => ip.octets(),
        std::net::IpAddr::V4(ip) => ip.to_ipv6_mapped().octets(),
    };
    h.extend(ip(src));
    h.extend(ip(dst));
    h.extend(src.port().to_be_bytes());
    h.extend(dst.port().to_be_bytes());
    h
}
