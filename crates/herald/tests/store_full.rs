//! A store whose disk fills: every publication in flight is answered (v5: a reason code;
//! never left without its PUBACK), and a reconnecting persistent session gets CONNACK 0x88
//! instead of nothing. The disk is a real 20 MB tmpfs (the test mounts it: it runs as root,
//! as CI does).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::*;
use mqtt_codec::ProtocolVersion::V5;
use mqtt_codec::{Connect, Packet, Publish, QoS, ReasonCode};

/// A tmpfs of `size`, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap().keep();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .status()
            .expect("the mount command runs");
        assert!(
            status.success(),
            "mounting a tmpfs failed ({status}): this test needs root (CI runs as root)"
        );
        Tmpfs(dir)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_answers_publishers_and_connects_instead_of_hanging() {
    let disk = Tmpfs::mount("20m");
    let mut config = config();
    config.store.in_memory = false;
    config.store.data_dir = disk.0.join("data");
    // No free-space guard: the store runs into the full disk itself.
    config.store.min_free_disk_bytes = 0;
    config.store.max_disk_bytes = 0;
    let s = start_with(config).await;
    let broker = s.server.broker().clone();

    // A persistent session, offline: every QoS 1 message for it is stored.
    let mut keeper = Connect::new(V5, "keeper", 60);
    keeper.properties.session_expiry_interval = Some(3600);
    keeper.clean_start = false;
    let (mut sub, _) = Raw::connect_with(s.addr, keeper.clone()).await;
    sub.subscribe("fill/#", QoS::AtLeastOnce).await;
    sub.disconnect().await;
    until_offline(&s, "keeper").await;

    // 256 KiB messages until the disk refuses: each one is answered within WAIT (recv
    // panics otherwise), and the first answer that is not a success says why.
    let mut p = Raw::connect(s.addr, V5, "filler").await;
    let mut refused = None;
    for i in 0..400u32 {
        let mut m = Publish::new("fill/t", vec![(i % 251) as u8; 256 * 1024]);
        m.qos = QoS::AtLeastOnce;
        m.packet_id = p.next_id();
        p.send(Packet::Publish(m)).await;
        match p.try_recv(WAIT).await {
            Some(Packet::PubAck(a)) if a.reason_code == ReasonCode::Success => {}
            Some(Packet::PubAck(a)) => {
                refused = Some(a.reason_code);
                break;
            }
            Some(Packet::Disconnect(d)) => {
                refused = Some(d.reason_code);
                break;
            }
            other => panic!("message {i}: expected PUBACK, got {other:?}"),
        }
    }
    let refused = refused.expect("a 20 MB disk refused 100 MB");
    // A failing store is 0x80 Unspecified error (a PUBACK, or a DISCONNECT for a
    // publication that was waiting on the write that failed).
    assert_eq!(refused, ReasonCode::UnspecifiedError);
    assert!(broker.persist.failed());
    // The persistent session reconnects: it is told the server is unavailable, at once.
    let (_, ack) = Raw::connect_with(s.addr, keeper).await;
    assert_eq!(ack.reason_code, ReasonCode::ServerUnavailable);
    // Counted as what it is, not as the connection limit.
    eventually("counted store_failed", || {
        broker
            .stats
            .closes(herald::broker::stats::CloseReason::StoreFailed)
            >= 1
    })
    .await;
    assert_eq!(
        broker
            .stats
            .closes(herald::broker::stats::CloseReason::ConnectionLimit),
        0
    );
    s.server.shutdown(WAIT).await;
}
