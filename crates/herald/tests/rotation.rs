//! Certificates rotated live: new handshakes get the new certificate while connections made
//! with the old one stay up; a bad new certificate is refused and the old one stays.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::Raw;
use common::pki::{Pki, client_config, tls_connect};
use herald::config::ListenerKind;
use mqtt_codec::ProtocolVersion::V5;
use mqtt_codec::QoS;

/// The certificate a new TLS connection to `addr` is shown, and the connection.
async fn connect(pki: &Pki, addr: SocketAddr, id: &str) -> (Vec<u8>, Raw) {
    let stream = tls_connect(
        addr,
        client_config(&pki.ca_file, None, &[&rustls::version::TLS13]),
    )
    .await
    .expect("TLS handshake");
    let cert = stream.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    (cert, Raw::over(stream, V5).handshake(id).await)
}

/// Waits for a log line containing `what`.
fn wait_for(lines: &mpsc::Receiver<String>, what: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if line.contains(what) => return line,
            Ok(_) => {}
            Err(_) => panic!("herald did not log {what:?}"),
        }
    }
}

#[tokio::test]
async fn sighup_rotates_the_certificate_and_keeps_connections() {
    let mut pki = Pki::new();
    let first = pki.write_server("herald one");
    let mut child = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["serve", "--in-memory", "--log-level", "info"])
        .args([
            "--mqtt-listen",
            "127.0.0.1:0",
            "--tls-listen",
            "127.0.0.1:0",
        ])
        .arg("--tls-cert")
        .arg(&pki.cert_file)
        .arg("--tls-key")
        .arg(&pki.key_file)
        .env("HERALD_LISTENERS_WS", "")
        .env("HERALD_HTTP_LISTEN", "")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("herald starts");
    let (tx, lines) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let listening = wait_for(&lines, "listener=\"tls\"");
    let at = listening.find("addr=").unwrap() + 5;
    let tls: SocketAddr = listening[at..]
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let hup = |pid: u32| {
        let ok = Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    };

    let (cert, mut old) = connect(&pki, tls, "old").await;
    assert_eq!(cert, first);
    old.subscribe("rotation/#", QoS::AtLeastOnce).await;

    // New files, then SIGHUP: new handshakes get the new certificate.
    let second = pki.write_server("herald two");
    hup(child.id());
    wait_for(&lines, "certificates reloaded");
    let (cert, mut new) = connect(&pki, tls, "new").await;
    assert_eq!(cert, second, "the new certificate is in use");
    // The connection made before the rotation is still up and served.
    new.publish("rotation/a", b"after rotation", QoS::AtLeastOnce, false)
        .await;
    assert_eq!(&old.recv_publish().await.payload[..], b"after rotation");

    // A bad new certificate is refused with a log line; the previous one stays in use.
    std::fs::write(&pki.cert_file, "-----BEGIN CERTIFICATE-----\nnot base64\n").unwrap();
    hup(child.id());
    let refused = wait_for(&lines, "new certificates refused");
    assert!(refused.contains("tls.cert_file"), "{refused}");
    let (cert, mut third) = connect(&pki, tls, "third").await;
    assert_eq!(cert, second, "the previous certificate stays");
    third
        .publish("rotation/b", b"still fine", QoS::AtLeastOnce, false)
        .await;
    assert_eq!(&old.recv_publish().await.payload[..], b"still fine");

    // A key that does not match the certificate is refused too.
    let key = std::fs::read(&pki.key_file).unwrap();
    pki.write_server("herald three");
    std::fs::write(&pki.key_file, key).unwrap();
    hup(child.id());
    let refused = wait_for(&lines, "new certificates refused");
    assert!(refused.contains("tls.key_file"), "{refused}");
    let (cert, _) = connect(&pki, tls, "fourth").await;
    assert_eq!(cert, second);

    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test]
async fn changed_files_are_picked_up_when_watched() {
    let mut pki = Pki::new();
    let first = pki.write_server("watched one");
    let mut c = common::config();
    c.listeners.tls = vec!["127.0.0.1:0".parse().unwrap()];
    c.tls.cert_file = pki.cert_file.clone();
    c.tls.key_file = pki.key_file.clone();
    c.tls.watch_secs = 1;
    let s = common::start_with(c).await;
    let tls = s.server.addrs(ListenerKind::Tls)[0];
    let (cert, _keep) = connect(&pki, tls, "a").await;
    assert_eq!(cert, first);
    // Modification times have a coarse grain on some file systems: make the change visible.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let second = pki.write_server("watched two");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (cert, _) = connect(&pki, tls, "b").await;
        if cert == second {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the changed certificate was not picked up"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
