//! First checks that Herald serves: connect, subscribe, publish at each QoS, both versions.

mod common;

use common::*;
use mqtt_codec::{Packet, ProtocolVersion::*, QoS, ReasonCode};

#[tokio::test]
async fn publish_reaches_subscriber_at_every_qos_and_version() {
    let s = start().await;
    for version in [V3_1_1, V5] {
        let mut sub = Raw::connect(s.addr, version, "sub").await;
        let mut publisher = Raw::connect(s.addr, version, "pub").await;
        let granted = sub.subscribe("a/+", QoS::ExactlyOnce).await;
        assert_eq!(granted, vec![ReasonCode::GrantedQoS2]);
        for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
            publisher
                .publish("a/b", format!("{qos:?}").as_bytes(), qos, false)
                .await;
            let p = sub.recv_publish().await;
            assert_eq!(&*p.topic, "a/b");
            assert_eq!(p.payload, format!("{qos:?}").as_bytes());
            assert_eq!(p.qos, qos);
            match qos {
                QoS::AtMostOnce => {}
                QoS::AtLeastOnce => {
                    sub.send(Packet::PubAck(mqtt_codec::Ack::new(p.packet_id)))
                        .await
                }
                QoS::ExactlyOnce => {
                    sub.send(Packet::PubRec(mqtt_codec::Ack::new(p.packet_id)))
                        .await;
                    match sub.recv().await {
                        Packet::PubRel(r) => assert_eq!(r.packet_id, p.packet_id),
                        other => panic!("{other:?}"),
                    }
                    sub.send(Packet::PubComp(mqtt_codec::Ack::new(p.packet_id)))
                        .await;
                }
            }
        }
        sub.disconnect().await;
        publisher.disconnect().await;
    }
    s.server.shutdown(WAIT).await;
}

#[tokio::test]
async fn ping_and_shutdown_disconnects_v5_clients() {
    let s = start().await;
    let mut c = Raw::connect(s.addr, V5, "c").await;
    c.send(Packet::PingReq).await;
    assert_eq!(c.recv().await, Packet::PingResp);
    let shutdown = tokio::spawn(s.server.shutdown(WAIT));
    let got = c.expect_closed().await;
    assert_eq!(
        got,
        vec![Packet::Disconnect(mqtt_codec::Disconnect::new(
            ReasonCode::ServerShuttingDown
        ))]
    );
    shutdown.await.unwrap();
}
