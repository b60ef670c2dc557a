//! `herald pub` and `herald sub` against fake servers speaking raw MQTT through the codec:
//! a server that sends its clients elsewhere (Server Reference) and one that goes silent.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mqtt_codec::ProtocolVersion::V5;
use mqtt_codec::{ConnAck, Connect, Disconnect, Packet, QoS, ReasonCode, decode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::Raw;
use crate::harness::{Client, Herald, STEP, run};

/// A fake server: accepts connections, answers each CONNECT with a successful CONNACK,
/// then runs `then` on the connection. Returns its address and the CONNECTs it received.
async fn fake_server<F, Fut>(then: F) -> (SocketAddr, Arc<Mutex<Vec<Connect>>>)
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connects = Arc::new(Mutex::new(Vec::new()));
    let seen = connects.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let Some(Packet::Connect(c)) = read_packet(&mut s).await else {
                continue;
            };
            seen.lock().unwrap().push(*c);
            let ack = Packet::ConnAck(Box::new(ConnAck::new(ReasonCode::Success, false)));
            s.write_all(&ack.to_bytes(V5).unwrap()).await.unwrap();
            tokio::spawn(then(s));
        }
    });
    (addr, connects)
}

/// One packet from `s`, or `None` at its end.
async fn read_packet(s: &mut tokio::net::TcpStream) -> Option<Packet> {
    let mut buf = bytes::BytesMut::new();
    loop {
        if let Some(p) = decode(&mut buf, V5, 1 << 20).ok()? {
            return Some(p);
        }
        if s.read_buf(&mut buf).await.ok()? == 0 {
            return None;
        }
    }
}

#[tokio::test]
async fn a_server_reference_is_followed() {
    let (_h, port) = Herald::plain().await;
    let herald_addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut raw = Raw::connect(herald_addr, V5, "moved-watcher").await;
    raw.subscribe("moved/t", QoS::AtLeastOnce).await;
    // The old server sends every client to Herald for good (0x9D Server moved).
    let (old, connects) = fake_server(move |mut s| async move {
        let mut moved = Disconnect::new(ReasonCode::ServerMoved);
        moved.properties.server_reference = Some(format!("127.0.0.1:{port}").into());
        let bytes = Packet::Disconnect(moved).to_bytes(V5).unwrap();
        let _ = s.write_all(&bytes).await;
    })
    .await;
    let old_port = old.port().to_string();
    let (status, _, err) = run(&[
        "pub",
        "-p",
        &old_port,
        "-q",
        "1",
        "-t",
        "moved/t",
        "-m",
        "here",
        "--repeat",
        "2",
        "--repeat-delay",
        "0.2",
    ])
    .await;
    assert!(status.success(), "{err}");
    assert!(
        err.contains(&format!("the server moved to mqtt://127.0.0.1:{port}")),
        "{err}"
    );
    for _ in 0..2 {
        assert_eq!(&raw.recv_publish().await.payload[..], b"here");
    }
    assert_eq!(
        connects.lock().unwrap().len(),
        1,
        "moved for good: never back"
    );
}

#[tokio::test]
async fn a_silent_server_is_detected_by_keep_alive() {
    let pings = Arc::new(Mutex::new(0usize));
    let counted = pings.clone();
    // Reads and never answers: PINGREQs go unanswered.
    let (addr, connects) = fake_server(move |mut s| {
        let counted = counted.clone();
        async move {
            while let Some(p) = read_packet(&mut s).await {
                if p == Packet::PingReq {
                    *counted.lock().unwrap() += 1;
                }
            }
        }
    })
    .await;
    let port = addr.port().to_string();
    let sub = Client::spawn(&["sub", "-p", &port, "-k", "1", "-t", "t"], false);
    let deadline = Instant::now() + STEP;
    while connects.lock().unwrap().len() < 2 {
        assert!(
            Instant::now() < deadline,
            "never reconnected: {}",
            sub.err()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(*pings.lock().unwrap() >= 1, "it pinged before giving up");
    sub.wait_err("no PINGRESP within the keep-alive interval")
        .await;
    let first = connects.lock().unwrap()[0].clone();
    assert_eq!(first.keep_alive, 1);
}
