//! Draining (lame duck): the node stops accepting, says it is not ready, and lets its clients
//! go gradually, telling v5 clients where to go.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::Raw;
use mqtt_codec::ProtocolVersion::{V3_1_1, V5};
use mqtt_codec::{Packet, ReasonCode};

async fn readyz(http: SocketAddr) -> u16 {
    common::http::request(http, "GET", "/readyz", &[], "")
        .await
        .status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_lets_clients_go_gradually_and_points_them_elsewhere() {
    let mut c = common::config();
    c.http.listen = "127.0.0.1:0".into();
    c.drain.server_reference = "mqtt-2.example.com:1883".into();
    let s = common::start_with(c).await;
    let (addr, http) = (s.addr, s.server.http_addr().unwrap());
    let mut v5 = Vec::new();
    for i in 0..20 {
        v5.push(Raw::connect(addr, V5, &format!("v5-{i}")).await);
    }
    let old = Raw::connect(addr, V3_1_1, "v311").await;
    assert_eq!(readyz(http).await, 200);

    let started = Instant::now();
    let drain = tokio::spawn(
        s.server
            .drain(Duration::from_secs(2), Duration::from_secs(5)),
    );
    // Not ready at once, and no new connection is accepted.
    let mut not_ready = false;
    for _ in 0..50 {
        if readyz(http).await == 503 {
            not_ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(not_ready, "/readyz says 503 while draining");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "the listener is closed"
    );

    // Every v5 client is told to use another server, at times spread over the period.
    let waits: Vec<_> = v5
        .into_iter()
        .map(|mut c| {
            tokio::spawn(async move {
                let got = c.expect_closed().await;
                (started.elapsed(), got)
            })
        })
        .collect();
    let mut at = Vec::new();
    for w in waits {
        let (when, got) = w.await.unwrap();
        at.push(when);
        match got.last() {
            Some(Packet::Disconnect(d)) => {
                assert_eq!(d.reason_code, ReasonCode::UseAnotherServer);
                assert_eq!(
                    d.properties.server_reference.as_deref(),
                    Some("mqtt-2.example.com:1883")
                );
            }
            other => panic!("expected DISCONNECT 0x9C, got {other:?}"),
        }
    }
    // Nominally about 0.9 s apart (21 clients, two per 100 ms tick); all at once would be
    // a few milliseconds. Half the nominal spread leaves room for a loaded machine.
    let (first, last) = (at.iter().min().unwrap(), at.iter().max().unwrap());
    assert!(
        *last - *first >= Duration::from_millis(450),
        "disconnects not spread: {first:?} .. {last:?}"
    );
    assert!(*last < Duration::from_secs(4), "{last:?}");
    let mut old = old;
    old.expect_closed().await;
    tokio::time::timeout(Duration::from_secs(10), drain)
        .await
        .expect("the drain ends")
        .unwrap();
}
