//! Packets that arrive in the same read as CONNECT: a small device sends CONNECT, PUBLISH
//! and DISCONNECT in one write and closes; paho-mqtt's `connect(); subscribe();
//! loop_start()` sends CONNECT and SUBSCRIBE back to back. Everything already buffered
//! after CONNECT is handled at once, not when the client next sends something.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use mqtt_codec::ProtocolVersion::{self, V3_1_1, V5};
use mqtt_codec::{Connect, Disconnect, Packet, Publish, QoS, ReasonCode, Subscribe};
use tokio::io::AsyncWriteExt;

/// Well under any keep-alive: an answer that waits for the client's next packet misses it.
const PROMPTLY: Duration = Duration::from_secs(3);

fn bytes(packets: &[Packet], version: ProtocolVersion) -> Vec<u8> {
    packets
        .iter()
        .flat_map(|p| p.to_bytes(version).unwrap().to_vec())
        .collect()
}

fn publish(topic: &str, payload: &[u8], qos: QoS, packet_id: u16) -> Packet {
    let mut p = Publish::new(topic, payload.to_vec());
    p.qos = qos;
    p.packet_id = packet_id;
    Packet::Publish(p)
}

#[tokio::test]
async fn connect_publish_disconnect_in_one_write_delivers_and_acknowledges() {
    let s = start().await;
    for version in [V3_1_1, V5] {
        let mut sub = Raw::connect(s.addr, V5, &format!("pl-sub-{version:?}")).await;
        sub.subscribe("pl/#", QoS::AtLeastOnce).await;

        let mut device = Raw::open(s.addr, version).await;
        let burst = bytes(
            &[
                Packet::Connect(Box::new(Connect::new(version, "device", 600))),
                publish("pl/q0", b"zero", QoS::AtMostOnce, 0),
                publish("pl/q1", b"one", QoS::AtLeastOnce, 7),
                Packet::Disconnect(Disconnect::new(ReasonCode::Success)),
            ],
            version,
        );
        device.send_bytes(&burst).await;
        // The device waits for nothing more than its answers: CONNACK, then PUBACK.
        match device.try_recv(PROMPTLY).await {
            Some(Packet::ConnAck(ack)) => assert_eq!(ack.reason_code, ReasonCode::Success),
            other => panic!("{version:?}: expected CONNACK, got {other:?}"),
        }
        match device.try_recv(PROMPTLY).await {
            Some(Packet::PubAck(ack)) => assert_eq!(ack.packet_id, 7),
            other => panic!("{version:?}: expected PUBACK, got {other:?}"),
        }
        let first = sub.recv_publish().await;
        let second = sub.recv_publish().await;
        assert_eq!(
            (&first.payload[..], &second.payload[..]),
            (&b"zero"[..], &b"one"[..]),
            "{version:?}"
        );
    }
    s.server.shutdown(WAIT).await;
}

#[tokio::test]
async fn a_device_that_writes_and_closes_at_once_still_publishes() {
    let s = start().await;
    let mut sub = Raw::connect(s.addr, V5, "pl-close-sub").await;
    sub.subscribe("close/#", QoS::AtLeastOnce).await;
    let mut device = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let burst = bytes(
        &[
            Packet::Connect(Box::new(Connect::new(V3_1_1, "fire-and-forget", 60))),
            publish("close/q0", b"zero", QoS::AtMostOnce, 0),
            publish("close/q1", b"one", QoS::AtLeastOnce, 1),
            Packet::Disconnect(Disconnect::new(ReasonCode::Success)),
        ],
        V3_1_1,
    );
    device.write_all(&burst).await.unwrap();
    device.shutdown().await.unwrap();
    assert_eq!(&sub.recv_publish().await.payload[..], b"zero");
    assert_eq!(&sub.recv_publish().await.payload[..], b"one");
    s.server.shutdown(WAIT).await;
}

#[tokio::test]
async fn connect_and_subscribe_in_one_write_get_their_suback_at_once() {
    let s = start().await;
    for version in [V3_1_1, V5] {
        let mut c = Raw::open(s.addr, version).await;
        let subscribe = Subscribe::new(3, "pl/sub/#", QoS::AtLeastOnce);
        let burst = bytes(
            &[
                // Keep-alive 600: a SUBACK that waits for a PINGREQ waits ten minutes.
                Packet::Connect(Box::new(Connect::new(version, "pl-sub", 600))),
                Packet::Subscribe(subscribe),
            ],
            version,
        );
        c.send_bytes(&burst).await;
        assert!(
            matches!(c.try_recv(PROMPTLY).await, Some(Packet::ConnAck(_))),
            "{version:?}"
        );
        match c.try_recv(PROMPTLY).await {
            Some(Packet::SubAck(ack)) => {
                assert_eq!(ack.packet_id, 3);
                assert_eq!(ack.reason_codes, vec![ReasonCode::GrantedQoS1]);
            }
            other => panic!("{version:?}: expected SUBACK, got {other:?}"),
        }
    }
    s.server.shutdown(WAIT).await;
}

/// paho-mqtt's everyday pattern, as its users write it: `connect()`, `subscribe()`, then
/// `loop_start()`, which sends both at once. Its SUBACK must not wait for a keep-alive ping.
#[tokio::test]
async fn paho_connect_subscribe_loop_start_gets_its_suback_promptly() {
    let s = start().await;
    let script = r#"
import sys, time, threading
import paho.mqtt.client as mqtt
port = int(sys.argv[1])
done = threading.Event()
try:
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="paho-pattern", protocol=mqtt.MQTTv311)
except AttributeError:
    c = mqtt.Client(client_id="paho-pattern", protocol=mqtt.MQTTv311)
c.on_subscribe = lambda *args: done.set()
c.connect("127.0.0.1", port, keepalive=60)
c.subscribe("paho/pattern/#", qos=1)
started = time.monotonic()
c.loop_start()
ok = done.wait(20)
print("suback_after=%.3f" % (time.monotonic() - started) if ok else "no_suback")
c.loop_stop()
"#;
    let port = s.addr.port().to_string();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .arg("-c")
            .arg(script)
            .arg(port)
            .output()
    })
    .await
    .unwrap()
    .expect("python3 runs (scripts/test installs it and paho-mqtt)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "paho script failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after: f64 = stdout
        .trim()
        .strip_prefix("suback_after=")
        .unwrap_or_else(|| panic!("no SUBACK within 20 s: {stdout}"))
        .parse()
        .unwrap();
    assert!(
        after < PROMPTLY.as_secs_f64(),
        "SUBACK after {after} s: it waited for the keep-alive ping"
    );
    s.server.shutdown(WAIT).await;
}
