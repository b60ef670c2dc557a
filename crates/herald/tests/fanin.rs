//! Many publishers into one subscriber, on more workers than cores: the pushback holds the
//! subscriber's queue within its bound however many publishers hit it at the same instant,
//! and every message acknowledged with success is delivered (none acknowledged and then
//! dropped as `queue_full`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use herald::broker::stats::{DropReason, RefuseReason};
use mqtt_codec::ProtocolVersion::V5;
use mqtt_codec::{Ack, Packet, Publish, QoS, ReasonCode};

const PUBLISHERS: usize = 2000;
const EACH: u16 = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn two_thousand_qos1_publishers_into_one_subscriber_lose_nothing_acknowledged() {
    let mut config = config();
    // Tight bounds: pushback from 50 queued, 2,500 at most (room for the one message each
    // of 2,000 publishers may add past high water). 40,000 messages of 2 KiB overrun it
    // many times over unless publishers are held back.
    config.limits.max_outbox_messages = 100;
    config.limits.max_queued_messages = 2500;
    // The bound must hold by pushback alone: no subscriber counts as stalled here.
    config.limits.stall_after_ms = 60_000;
    let s = start_with(config).await;
    let broker = s.server.broker().clone();
    let mut sub = Raw::connect(s.addr, V5, "fanin-sub").await;
    sub.subscribe("fanin/#", QoS::AtLeastOnce).await;

    let addr = s.addr;
    let publishers: Vec<_> = (0..PUBLISHERS)
        .map(|i| {
            tokio::spawn(async move {
                let mut p = Raw::connect(addr, V5, &format!("fanin-{i}")).await;
                // Every message in one write: the publisher does not wait between them.
                let mut burst = Vec::new();
                for id in 1..=EACH {
                    let mut m = Publish::new(format!("fanin/{i}"), vec![0u8; 2048]);
                    m.qos = QoS::AtLeastOnce;
                    m.packet_id = id;
                    burst.extend_from_slice(&Packet::Publish(m).to_bytes(V5).unwrap());
                }
                p.send_bytes(&burst).await;
                let mut codes = Vec::new();
                while codes.len() < usize::from(EACH) {
                    match p.try_recv(Duration::from_secs(120)).await {
                        Some(Packet::PubAck(a)) => codes.push(a.reason_code),
                        other => panic!("publisher {i}: expected PUBACK, got {other:?}"),
                    }
                }
                codes
            })
        })
        .collect();

    // The subscriber reads and acknowledges as fast as it can, until it has everything
    // acknowledged with success and nothing more comes.
    let reader = tokio::spawn(async move {
        let mut got = 0usize;
        loop {
            match tokio::time::timeout(
                Duration::from_secs(5),
                sub.try_recv(Duration::from_secs(60)),
            )
            .await
            {
                Ok(Some(Packet::Publish(p))) => {
                    got += 1;
                    sub.send(Packet::PubAck(Ack::new(p.packet_id))).await;
                }
                Ok(other) => panic!("subscriber: unexpected {other:?}"),
                Err(_) => return got,
            }
        }
    });
    let mut success = 0usize;
    let mut refused = 0usize;
    for p in publishers {
        for code in p.await.unwrap() {
            match code {
                ReasonCode::Success => success += 1,
                ReasonCode::QuotaExceeded => refused += 1,
                other => panic!("unexpected PUBACK reason {other:?}"),
            }
        }
    }
    let delivered = reader.await.unwrap();
    assert_eq!(success + refused, PUBLISHERS * usize::from(EACH));
    assert_eq!(
        delivered, success,
        "every message acknowledged with success is delivered"
    );
    assert_eq!(
        refused,
        0,
        "pushback kept the queue within its bound ({} queue_full, {} pushbacks)",
        broker.stats.drops(DropReason::QueueFull),
        broker.stats.pushbacks.load(Ordering::Relaxed)
    );
    assert_eq!(broker.stats.refusals(RefuseReason::QueueFull), 0);
    assert!(broker.stats.pushbacks.load(Ordering::Relaxed) > 0);
    eventually("queues empty", || broker.stats.queued_bytes() == 0).await;
    s.server.shutdown(WAIT).await;
}
