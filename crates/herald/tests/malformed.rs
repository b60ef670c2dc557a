//! Malformed and hostile input (MQTT 5.0 §1.5 data representation, §2.1 fixed header, §4.13
//! handling errors; MQTT 3.1.1 §4.8): bytes written by hand. A v5 client is told DISCONNECT
//! with the reason code the codec gives the error, then the connection closes; a 3.1.1 client
//! is just closed [MQTT-4.8.0-1 in 3.1.1]. Each close is counted by its reason, and nothing a
//! client sends can crash the server or stop it serving others.

mod common;

use std::time::Duration;

use bytes::BytesMut;
use common::*;
use herald::broker::stats::CloseReason;
use mqtt_codec::{
    Connect, Disconnect, Packet, ProtocolVersion, ProtocolVersion::*, QoS, ReasonCode,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A fixed header (`first` byte, minimal remaining length) and `body`.
fn frame(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    let mut len = body.len();
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if len == 0 {
            break;
        }
    }
    out.extend_from_slice(body);
    out
}

/// A length-prefixed string field holding exactly `bytes` (valid UTF-8 or not).
fn string(bytes: &[u8]) -> Vec<u8> {
    let mut out = (bytes.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(bytes);
    out
}

/// A PUBLISH with topic bytes as given; `first` carries the flags (0x30 for QoS 0).
fn publish(v: ProtocolVersion, first: u8, topic: &[u8], packet_id: Option<u16>) -> Vec<u8> {
    let mut body = string(topic);
    if let Some(id) = packet_id {
        body.extend_from_slice(&id.to_be_bytes());
    }
    if v.is_v5() {
        body.push(0); // no properties
    }
    body.extend_from_slice(b"payload");
    frame(first, &body)
}

/// A SUBSCRIBE of one filter with the given first byte (0x82 is the valid one).
fn subscribe(v: ProtocolVersion, first: u8, packet_id: u16, filter: &[u8]) -> Vec<u8> {
    let mut body = packet_id.to_be_bytes().to_vec();
    if v.is_v5() {
        body.push(0);
    }
    body.extend_from_slice(&string(filter));
    body.push(1); // QoS 1
    frame(first, &body)
}

/// An UNSUBSCRIBE of one filter.
fn unsubscribe(v: ProtocolVersion, packet_id: u16, filter: &[u8]) -> Vec<u8> {
    let mut body = packet_id.to_be_bytes().to_vec();
    if v.is_v5() {
        body.push(0);
    }
    body.extend_from_slice(&string(filter));
    frame(0xA2, &body)
}

/// One malformed input: the bytes for a version, the reason code the specification gives it,
/// and the close counter it lands in.
struct Case {
    name: &'static str,
    bytes: fn(ProtocolVersion) -> Vec<u8>,
    code: ReasonCode,
    reason: CloseReason,
}

fn cases() -> Vec<Case> {
    use CloseReason::{MalformedPacket, ProtocolError};
    use ReasonCode as R;
    vec![
        // [MQTT-2.1.3-1]: reserved flag bits must hold the values listed, else the packet is
        // malformed.
        Case {
            name: "SUBSCRIBE with flags 0000",
            bytes: |v| subscribe(v, 0x80, 1, b"a/b"),
            code: R::MalformedPacket,
            reason: MalformedPacket,
        },
        Case {
            name: "PUBREL with flags 0000",
            bytes: |_| vec![0x60, 0x02, 0x00, 0x01],
            code: R::MalformedPacket,
            reason: MalformedPacket,
        },
        Case {
            name: "PINGREQ with flags 0001",
            bytes: |_| vec![0xC1, 0x00],
            code: R::MalformedPacket,
            reason: MalformedPacket,
        },
        Case {
            name: "UNSUBSCRIBE with flags 0011",
            bytes: |v| {
                let mut b = unsubscribe(v, 1, b"a");
                b[0] = 0xA3;
                b
            },
            code: R::MalformedPacket,
            reason: MalformedPacket,
        },
        // MQTT 5.0 §2.1.2: packet type 0 is reserved.
        Case {
            name: "reserved packet type 0",
            bytes: |_| vec![0x00, 0x00],
            code: R::MalformedPacket,
            reason: MalformedPacket,
        },
        // [MQTT-3.3.1-4]: a PUBLISH must not have both QoS bits set.
        Case {
            name: "PUBLISH QoS 3",
            bytes: |v| publish(v, 0x36, b"a/b", Some(1)),
            code: R::MalformedPacket,
            reason: MalformedPacket,
        },
        // [MQTT-3.3.1-2]: DUP must be 0 for QoS 0.
        Case {
            name: "PUBLISH QoS 0 with DUP",
            bytes: |v| publish(v, 0x38, b"a/b", None),
            code: R::MalformedPacket,
            reason: MalformedPacket,
        },
        // [MQTT-1.5.5-1] / §2.1.4: the remaining length is at most four bytes.
        Case {
            name: "remaining length over four bytes",
            bytes: |_| vec![0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01],
            code: R::MalformedPacket,
            reason: MalformedPacket,
        },
        // [MQTT-1.5.5-1]: the fewest bytes necessary (0 written as 0x80 0x00).
        Case {
            name: "non-minimal remaining length",
            bytes: |_| vec![0xC0, 0x80, 0x00],
            code: R::MalformedPacket,
            reason: MalformedPacket,
        },
        // [MQTT-1.5.4-1]: ill-formed UTF-8 makes the packet malformed.
        Case {
            name: "invalid UTF-8 in a topic",
            bytes: |v| publish(v, 0x30, &[b'a', b'/', 0xC3, 0x28], None),
            code: R::MalformedPacket,
            reason: MalformedPacket,
        },
        Case {
            name: "UTF-16 surrogate in a topic",
            bytes: |v| publish(v, 0x32, &[b'a', 0xED, 0xA0, 0x80], Some(1)),
            code: R::MalformedPacket,
            reason: MalformedPacket,
        },
        // [MQTT-1.5.4-2]: U+0000 must not appear in a UTF-8 string.
        Case {
            name: "U+0000 in a topic",
            bytes: |v| publish(v, 0x30, b"a\0b", None),
            code: R::MalformedPacket,
            reason: MalformedPacket,
        },
        Case {
            name: "U+0000 in a topic filter",
            bytes: |v| subscribe(v, 0x82, 1, b"a/\0"),
            code: R::MalformedPacket,
            reason: MalformedPacket,
        },
        // [MQTT-3.3.2-2]: no wildcards in a topic name; v5 answers 0x90 Topic Name invalid.
        Case {
            name: "'+' in a PUBLISH topic",
            bytes: |v| publish(v, 0x30, b"a/+", None),
            code: R::TopicNameInvalid,
            reason: ProtocolError,
        },
        Case {
            name: "'#' in a PUBLISH topic",
            bytes: |v| publish(v, 0x32, b"a/#", Some(1)),
            code: R::TopicNameInvalid,
            reason: ProtocolError,
        },
        // [MQTT-4.7.1-1], [MQTT-4.7.1-2]: wildcards occupy whole levels, '#' comes last;
        // [MQTT-4.7.3-1]: a filter is at least one character.
        Case {
            name: "'#' not last in a filter",
            bytes: |v| subscribe(v, 0x82, 1, b"a/#/b"),
            code: R::TopicFilterInvalid,
            reason: ProtocolError,
        },
        Case {
            name: "'+' inside a level",
            bytes: |v| subscribe(v, 0x82, 1, b"a/b+"),
            code: R::TopicFilterInvalid,
            reason: ProtocolError,
        },
        Case {
            name: "empty filter",
            bytes: |v| subscribe(v, 0x82, 1, b""),
            code: R::TopicFilterInvalid,
            reason: ProtocolError,
        },
        // [MQTT-2.2.1-3]: SUBSCRIBE, UNSUBSCRIBE and QoS > 0 PUBLISH carry a non-zero id.
        Case {
            name: "SUBSCRIBE packet id 0",
            bytes: |v| subscribe(v, 0x82, 0, b"a/b"),
            code: R::ProtocolError,
            reason: ProtocolError,
        },
        Case {
            name: "UNSUBSCRIBE packet id 0",
            bytes: |v| unsubscribe(v, 0, b"a/b"),
            code: R::ProtocolError,
            reason: ProtocolError,
        },
        Case {
            name: "QoS 1 PUBLISH packet id 0",
            bytes: |v| publish(v, 0x32, b"a/b", Some(0)),
            code: R::ProtocolError,
            reason: ProtocolError,
        },
        // [MQTT-3.8.3-2] / [MQTT-3.8.3-3 in 3.1.1]: a SUBSCRIBE needs at least one filter.
        Case {
            name: "SUBSCRIBE without filters",
            bytes: |v| frame(0x82, if v.is_v5() { &[0, 1, 0] } else { &[0, 1] }),
            code: R::ProtocolError,
            reason: ProtocolError,
        },
        // §2.1.4: a packet shorter than its fields.
        Case {
            name: "PUBLISH topic length past the end",
            bytes: |_| vec![0x30, 0x03, 0x00, 0x09, b'a'],
            code: R::MalformedPacket,
            reason: MalformedPacket,
        },
    ]
}

/// Sends `bytes` on a fresh, connected client of `version`; checks the answer, the close and
/// the counter.
async fn check_rejected(s: &TestServer, version: ProtocolVersion, case: &Case, n: usize) {
    let stats = &s.server.broker().stats;
    let bytes = (case.bytes)(version);
    // The codec refuses these bytes, and the server must tell the codec's reason.
    let err = mqtt_codec::decode(
        &mut BytesMut::from(&bytes[..]),
        version,
        s.server.broker().config().limits.max_packet_size,
    )
    .expect_err(case.name);
    if version.is_v5() {
        assert_eq!(err.reason_code(), case.code, "{}: {err}", case.name);
    }
    let before = stats.closes(case.reason);
    let mut c = Raw::connect(s.addr, version, &format!("bad-{n}")).await;
    c.send_bytes(&bytes).await;
    let got = c.expect_closed().await;
    let expected = if version.is_v5() {
        vec![Packet::Disconnect(Disconnect::new(case.code))]
    } else {
        // 3.1.1 has no DISCONNECT from the server: the connection just closes.
        Vec::new()
    };
    assert_eq!(got, expected, "{} ({version:?})", case.name);
    let broker = s.server.broker().clone();
    let reason = case.reason;
    eventually(&format!("{} counted as {reason:?}", case.name), || {
        broker.stats.closes(reason) == before + 1
    })
    .await;
}

#[tokio::test]
async fn malformed_packets_close_the_connection_with_the_codecs_reason() {
    let s = start().await;
    let mut n = 0;
    for version in [V5, V3_1_1] {
        for case in cases() {
            n += 1;
            check_rejected(&s, version, &case, n).await;
        }
    }
    // A 3.1.1 connection knows no AUTH (type 15 is reserved there).
    let before = s.server.broker().stats.closes(CloseReason::MalformedPacket);
    let mut c = Raw::connect(s.addr, V3_1_1, "auth-v3").await;
    c.send_bytes(&[0xF0, 0x00]).await;
    assert_eq!(c.expect_closed().await, Vec::new());
    let broker = s.server.broker().clone();
    eventually("AUTH on 3.1.1 counted", || {
        broker.stats.closes(CloseReason::MalformedPacket) == before + 1
    })
    .await;

    // The server still serves.
    let mut sub = Raw::connect(s.addr, V5, "after-sub").await;
    sub.subscribe("after/t", QoS::AtLeastOnce).await;
    let mut publisher = Raw::connect(s.addr, V3_1_1, "after-pub").await;
    publisher
        .publish("after/t", b"ok", QoS::AtLeastOnce, false)
        .await;
    assert_eq!(&sub.recv_publish().await.payload[..], b"ok");
    s.server.shutdown(WAIT).await;
}

/// Resident memory of this process (the server runs in it), in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("procfs");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

#[tokio::test]
async fn a_256_mb_length_prefix_closes_at_once_without_waiting_for_the_body() {
    let s = start().await;
    let stats = &s.server.broker().stats;
    let huge = [0x30, 0xFF, 0xFF, 0xFF, 0x7F]; // PUBLISH of 268,435,455 bytes announced
    let rss_before = rss_kib();
    let mut sub = Raw::connect(s.addr, V5, "huge-sub").await;
    sub.subscribe("huge/t", QoS::AtMostOnce).await;

    // After CONNECT: v5 gets DISCONNECT 0x95 (MQTT 5.0 §3.2.2.3.6, Maximum Packet Size),
    // 3.1.1 a close; both before any of the body is sent.
    for (i, version) in [V5, V3_1_1].into_iter().enumerate() {
        let mut c = Raw::connect(s.addr, version, &format!("huge-{i}")).await;
        c.send_bytes(&huge).await;
        let closed = tokio::time::timeout(Duration::from_secs(1), async {
            let mut got = Vec::new();
            while let Some(p) = c.try_recv(WAIT).await {
                got.push(p);
            }
            got
        })
        .await
        .expect("closed within a second of the length prefix");
        let expected = if version.is_v5() {
            vec![Packet::Disconnect(Disconnect::new(
                ReasonCode::PacketTooLarge,
            ))]
        } else {
            Vec::new()
        };
        assert_eq!(closed, expected, "{version:?}");
    }
    // As the first packet: no CONNACK, just the close.
    let mut c = Raw::open(s.addr, V5).await;
    c.send_bytes(&[0x10, 0xFF, 0xFF, 0xFF, 0x7F]).await;
    let closed = tokio::time::timeout(Duration::from_secs(1), c.expect_closed())
        .await
        .expect("closed within a second of the length prefix");
    assert_eq!(closed, Vec::new());
    let broker = s.server.broker().clone();
    eventually("three too-large closes", || {
        broker.stats.closes(CloseReason::PacketTooLarge) == 3
    })
    .await;

    // Nothing was reserved for the announced bodies, and others are still served.
    let grown_mib = rss_kib().saturating_sub(rss_before) / 1024;
    assert!(grown_mib < 128, "RSS grew by {grown_mib} MiB");
    let mut publisher = Raw::connect(s.addr, V5, "huge-pub").await;
    publisher
        .publish("huge/t", b"still here", QoS::AtMostOnce, false)
        .await;
    assert_eq!(&sub.recv_publish().await.payload[..], b"still here");
    assert_eq!(stats.closes(CloseReason::PacketTooLarge), 3);
    s.server.shutdown(WAIT).await;
}

#[tokio::test]
async fn garbage_before_connect_is_closed_without_an_answer() {
    let s = start().await;
    let stats = &s.server.broker().stats;
    let broker = s.server.broker().clone();
    let inputs: [(&[u8], CloseReason); 4] = [
        // An HTTP request: 'G' is PUBACK with reserved flags 0111.
        (
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
            CloseReason::MalformedPacket,
        ),
        (&[0x00, 0x00, 0x00, 0x00], CloseReason::MalformedPacket),
        // A well-formed packet that is not CONNECT [MQTT-3.1.0-1].
        (&[0xC0, 0x00], CloseReason::ProtocolError),
        (
            &[0x30, 0x04, 0x00, 0x01, b't', 0x00],
            CloseReason::ProtocolError,
        ),
    ];
    for (bytes, reason) in inputs {
        let before = stats.closes(reason);
        let mut c = Raw::open(s.addr, V5).await;
        c.send_bytes(bytes).await;
        // Nothing comes back before CONNECT: not CONNACK, not DISCONNECT.
        assert_eq!(c.expect_closed().await, Vec::new(), "{bytes:?}");
        eventually(&format!("{bytes:?} counted as {reason:?}"), || {
            broker.stats.closes(reason) == before + 1
        })
        .await;
    }
    // A normal client is unaffected.
    let mut c = Raw::connect(s.addr, V5, "normal").await;
    c.send(Packet::PingReq).await;
    assert_eq!(c.recv().await, Packet::PingResp);
    s.server.shutdown(WAIT).await;
}

#[tokio::test]
async fn a_half_packet_then_silence_is_closed_at_the_connect_timeout() {
    let mut config = config();
    config.limits.connect_timeout_secs = 1;
    let s = start_with(config).await;
    let connect = Packet::Connect(Box::new(Connect::new(V5, "half", 30)))
        .to_bytes(V5)
        .unwrap();
    let mut c = Raw::open(s.addr, V5).await;
    c.send_bytes(&connect[..connect.len() / 2]).await;
    // The harness waits up to 5 s: a server without a connect timeout would fail here.
    assert_eq!(c.expect_closed().await, Vec::new());
    let broker = s.server.broker().clone();
    eventually("connect timeout counted", || {
        broker.stats.closes(CloseReason::ConnectTimeout) == 1
    })
    .await;
    assert_eq!(
        broker.stats.open.load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    s.server.shutdown(WAIT).await;
}

#[tokio::test]
async fn a_packet_trickled_in_does_not_count_as_keep_alive() {
    let s = start().await;
    // Keep alive 1 s: the server must close once 1.5 s pass without a whole control packet
    // [MQTT-3.1.2-22] (3.1.1: [MQTT-3.1.2-24]); bytes of an unfinished packet are not one.
    let (mut c, _) = Raw::connect_with(s.addr, Connect::new(V5, "trickle", 1)).await;
    // A PUBLISH announcing 100 bytes, sent one byte every 200 ms (it would take 20 s).
    let mut packet = frame(0x30, &{
        let mut body = string(b"slow/t");
        body.push(0);
        body.resize(100, b'x');
        body
    });
    packet.truncate(60);
    let started = tokio::time::Instant::now();
    let mut closed = false;
    for byte in packet {
        if c.stream.write_all(&[byte]).await.is_err() {
            closed = true;
            break;
        }
        let mut buf = [0u8; 64];
        match tokio::time::timeout(Duration::from_millis(200), c.stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            // DISCONNECT 0x8D arrives first; the close follows.
            Ok(Ok(_)) => {}
            Err(_) => {}
        }
    }
    assert!(
        closed,
        "still open {:?} after the last whole packet",
        started.elapsed()
    );
    let broker = s.server.broker().clone();
    eventually("keep-alive timeout counted", || {
        broker.stats.closes(CloseReason::KeepAliveTimeout) == 1
    })
    .await;
    s.server.shutdown(WAIT).await;
}

/// xorshift64*: a fixed-seed generator, so a failure can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let x = self.next().to_le_bytes();
            chunk.copy_from_slice(&x[..chunk.len()]);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_bytes_from_many_connections_never_crash_the_server() {
    const CONNECTIONS: usize = 200;
    let mut config = config();
    config.limits.connect_timeout_secs = 1;
    let s = start_with(config).await;
    let broker = s.server.broker().clone();
    let mut rng = Rng(0x4845_5241_4C44_2121);
    let mut tasks = Vec::new();
    for i in 0..CONNECTIONS {
        // A few KB each: after a valid CONNECT (keep alive 1 s) for half of them, so that
        // every packet decoder is reached, raw from the first byte for the rest.
        let mut junk = vec![0u8; 1024 + (rng.next() % 3072) as usize];
        rng.fill(&mut junk);
        let mut bytes = Vec::new();
        match i % 4 {
            0 => bytes.extend_from_slice(
                &Packet::Connect(Box::new(Connect::new(V5, format!("fuzz-{i}"), 1)))
                    .to_bytes(V5)
                    .unwrap(),
            ),
            1 => bytes.extend_from_slice(
                &Packet::Connect(Box::new(Connect::new(V3_1_1, format!("fuzz-{i}"), 1)))
                    .to_bytes(V3_1_1)
                    .unwrap(),
            ),
            // A plausible first byte of each packet type, then noise.
            2 => junk[0] = (junk[0] & 0xF0) | [0, 2, 0, 2][(junk[0] & 3) as usize],
            _ => {}
        }
        bytes.extend_from_slice(&junk);
        let addr = s.addr;
        tasks.push(tokio::spawn(async move {
            let mut stream = TcpStream::connect(addr).await.expect("connect");
            // The server may close part-way: a failed write is an answer, not an error.
            let _ = stream.write_all(&bytes).await;
            // Read whatever comes until the server closes (the keep-alive or connect timeout
            // at the latest).
            let mut buf = vec![0u8; 16 * 1024];
            tokio::time::timeout(Duration::from_secs(10), async {
                loop {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                }
            })
            .await
            .expect("the server closes every connection");
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // Every connection task has finished (none panicked or hung), each close counted once.
    eventually("every fuzz connection finished", || {
        broker.stats.open.load(std::sync::atomic::Ordering::Relaxed) == 0
    })
    .await;
    let closes: u64 = CloseReason::ALL
        .iter()
        .map(|r| broker.stats.closes(*r))
        .sum();
    assert_eq!(closes, CONNECTIONS as u64);
    assert_eq!(
        broker
            .stats
            .accepted
            .load(std::sync::atomic::Ordering::Relaxed),
        CONNECTIONS as u64
    );
    let refused = broker.stats.closes(CloseReason::MalformedPacket)
        + broker.stats.closes(CloseReason::ProtocolError)
        + broker.stats.closes(CloseReason::PacketTooLarge);
    assert!(refused > 0, "random bytes were all accepted?");

    // A normal client still works.
    let mut sub = Raw::connect(s.addr, V5, "after-fuzz-sub").await;
    sub.subscribe("after/fuzz", QoS::AtLeastOnce).await;
    let mut publisher = Raw::connect(s.addr, V3_1_1, "after-fuzz-pub").await;
    publisher
        .publish("after/fuzz", b"alive", QoS::AtLeastOnce, false)
        .await;
    let p = sub.recv_publish().await;
    assert_eq!(&p.payload[..], b"alive");
    s.server.shutdown(WAIT).await;
}

/// A CONNECT that says it is MQTT 5 and fails to decode is answered with a v5 CONNACK
/// carrying the reason (MQTT 5.0 §3.2.2.2 allows it before the close), so the client learns
/// what it did wrong; a 3.1.1 CONNECT that fails gets no CONNACK (3.1.1 has no code for it).
#[tokio::test]
async fn a_malformed_v5_connect_is_answered_with_a_connack_reason_code() {
    let s = start().await;
    // CONNECT v5, clean start, keep-alive 60, a property block holding an unknown
    // property identifier (0xFF), client id "c".
    let connect = [
        0x10, 15, 0, 4, b'M', b'Q', b'T', b'T', 5, 0x02, 0, 60, 1, 0xFF, 0, 1, b'c',
    ];
    let mut c = Raw::open(s.addr, mqtt_codec::ProtocolVersion::V5).await;
    c.send_bytes(&connect).await;
    match c.try_recv(WAIT).await {
        Some(Packet::ConnAck(ack)) => assert_eq!(ack.reason_code, ReasonCode::MalformedPacket),
        other => panic!("expected CONNACK 0x81, got {other:?}"),
    }
    assert_eq!(c.try_recv(WAIT).await, None, "then the connection closes");

    let mut v3 = connect;
    v3[8] = 4;
    let mut c = Raw::open(s.addr, mqtt_codec::ProtocolVersion::V3_1_1).await;
    c.send_bytes(&v3).await;
    assert_eq!(
        c.try_recv(WAIT).await,
        None,
        "3.1.1: closed without CONNACK"
    );
    s.server.shutdown(WAIT).await;
}
