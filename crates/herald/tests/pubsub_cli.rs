//! `herald pub` and `herald sub` as a user runs them: the real binary against real
//! `herald serve` processes on free loopback ports. Each QoS over TCP; TLS, WebSocket and
//! WebSocket over TLS; MQTT 5 properties seen by the other side (checked with the raw
//! codec client too); a Herald killed with SIGKILL and restarted mid-stream while both
//! clients reconnect by themselves and no acknowledged QoS 1 message is lost; final
//! refusals (credentials, ACLs) and bad flags that say what is wrong; a Server Reference
//! followed and a silent server detected by keep-alive.

// A test harness: a failed spawn or a poisoned lock is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "pubsub_cli/fake_server.rs"]
mod fake_server;
#[path = "pubsub_cli/harness.rs"]
mod harness;

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ChildStdin;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::Raw;
use harness::{Client, Herald, STEP, free_port, herald, run, subscribed};
use mqtt_codec::ProtocolVersion::V5;
use mqtt_codec::{Packet, Publish, QoS};

#[tokio::test]
async fn each_qos_over_tcp_and_each_protocol_version() {
    let (_h, port) = Herald::plain().await;
    let p = port.to_string();
    // (QoS, sub's version, pub's version)
    for (qos, sub_v, pub_v) in [("0", "5", "5"), ("1", "311", "5"), ("2", "5", "31")] {
        let topic = format!("cli/q{qos}");
        let mut sub = subscribed(&[
            "-p", &p, "-q", qos, "-V", sub_v, "-t", &topic, "-v", "-C", "3",
        ])
        .await;
        let (status, _, err) = run(&[
            "pub", "-p", &p, "-q", qos, "-V", pub_v, "-t", &topic, "-m", "hello", "--repeat", "3",
        ])
        .await;
        assert!(status.success(), "pub at QoS {qos}: {err}");
        assert!(sub.exit(STEP).await.success(), "{}", sub.err());
        assert_eq!(sub.out(), vec![format!("{topic} hello"); 3], "QoS {qos}");
    }
}

#[tokio::test]
async fn tls_websocket_and_websocket_over_tls() {
    let pki = common::pki::Pki::new();
    let (tls, ws, wss) = (free_port(), free_port(), free_port());
    let (cert, key) = (
        pki.cert_file.to_str().unwrap(),
        pki.key_file.to_str().unwrap(),
    );
    let ca = pki.ca_file.to_str().unwrap();
    let listen = |p: u16| format!("127.0.0.1:{p}");
    let (l1, l2, l3, l4) = (listen(free_port()), listen(tls), listen(ws), listen(wss));
    let args = [
        "--in-memory",
        "--mqtt-listen",
        &l1,
        "--tls-listen",
        &l2,
        "--ws-listen",
        &l3,
        "--wss-listen",
        &l4,
        "--tls-cert",
        cert,
        "--tls-key",
        key,
    ];
    let _h = Herald::start(&args, &[], &[tls, ws, wss]).await;
    let urls = [
        (format!("mqtts://localhost:{tls}"), true),
        (format!("ws://127.0.0.1:{ws}/mqtt"), false),
        (format!("wss://localhost:{wss}/mqtt"), true),
    ];
    for (url, needs_ca) in &urls {
        let mut common = vec!["-L", url.as_str()];
        if *needs_ca {
            common.extend(["--cafile", ca]);
        }
        let mut sub_args = common.clone();
        sub_args.extend(["-t", "cli/tls", "-q", "1", "-C", "1"]);
        let mut sub = subscribed(&sub_args).await;
        let mut pub_args = vec!["pub"];
        pub_args.extend(&common);
        pub_args.extend(["-t", "cli/tls", "-q", "1", "-m", url.as_str()]);
        let (status, _, err) = run(&pub_args).await;
        assert!(status.success(), "{url}: {err}");
        assert!(sub.exit(STEP).await.success(), "{url}: {}", sub.err());
        assert_eq!(sub.out(), vec![url.clone()], "over {url}");
    }
    // Without the CA the certificate does not verify: final on a first connection, at once.
    let url = format!("mqtts://localhost:{tls}");
    let (status, _, err) = run(&["pub", "-L", &url, "-t", "x", "-m", "x"]).await;
    assert!(!status.success());
    assert!(err.contains("certificate"), "{err}");
    let (status, _, err) = run(&["pub", "-L", &url, "--insecure", "-t", "x", "-m", "x"]).await;
    assert!(status.success(), "--insecure: {err}");
}

#[tokio::test]
async fn client_certificates_with_cert_and_key() {
    let pki = common::pki::Pki::new();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let (cert, key) = (
        pki.cert_file.to_str().unwrap(),
        pki.key_file.to_str().unwrap(),
    );
    let ca = pki.ca_file.to_str().unwrap();
    let args = [
        "--in-memory",
        "--tls-listen",
        &listen,
        "--tls-cert",
        cert,
        "--tls-key",
        key,
    ];
    let env = [
        ("HERALD_TLS_CLIENT_AUTH", "required"),
        ("HERALD_TLS_CLIENT_CA_FILE", ca),
    ];
    let _h = Herald::start(&args, &env, &[port]).await;
    let (client_cert, client_key) = pki.client("device-1", None);
    let (c, k) = (client_cert.to_str().unwrap(), client_key.to_str().unwrap());
    let p = port.to_string();
    let base = [
        "pub", "-p", &p, "--cafile", ca, "-t", "m", "-m", "x", "-q", "1",
    ];
    let mut with_cert = base.to_vec();
    with_cert.extend(["--cert", c, "--key", k]);
    let (status, _, err) = run(&with_cert).await;
    assert!(status.success(), "{err}");
    let mut without = base.to_vec();
    without.push("--no-reconnect");
    let (status, _, err) = run(&without).await;
    assert!(
        !status.success(),
        "a server that wants a certificate refuses a client without"
    );
    assert!(err.contains("cannot connect"), "{err}");
}

#[tokio::test]
async fn mqtt5_properties_reach_the_other_side() {
    let (_h, port) = Herald::plain().await;
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let p = port.to_string();
    // herald pub's properties, as the raw codec client receives them.
    let mut raw = Raw::connect(addr, V5, "raw-props").await;
    raw.subscribe("props/pub", QoS::AtLeastOnce).await;
    let (status, _, err) = run(&[
        "pub",
        "-p",
        &p,
        "-q",
        "1",
        "-t",
        "props/pub",
        "-m",
        "payload",
        "--user-property",
        "k1=v1",
        "--user-property",
        "k2=a=b",
        "--content-type",
        "text/plain",
        "--response-topic",
        "props/reply",
        "--correlation-data",
        "req-7",
        "--message-expiry",
        "60",
        "--payload-format-indicator",
    ])
    .await;
    assert!(status.success(), "{err}");
    let got = raw.recv_publish().await;
    let props = &got.properties;
    assert_eq!(&got.payload[..], b"payload");
    let users: Vec<(&str, &str)> = props
        .user_properties
        .iter()
        .map(|(k, v)| (&**k, &**v))
        .collect();
    assert_eq!(users, [("k1", "v1"), ("k2", "a=b")]);
    assert_eq!(props.content_type.as_deref(), Some("text/plain"));
    assert_eq!(props.response_topic.as_deref(), Some("props/reply"));
    assert_eq!(props.correlation_data.as_deref(), Some(&b"req-7"[..]));
    assert!(
        props
            .message_expiry_interval
            .is_some_and(|s| (50..=60).contains(&s))
    );
    assert_eq!(props.payload_format_indicator, Some(true));

    // What a raw publisher sends, as herald sub --json prints it.
    let mut sub = subscribed(&["-p", &p, "-q", "1", "-t", "props/sub", "--json", "-C", "1"]).await;
    let mut publish = Publish::new("props/sub", Bytes::from_static(&[0xff, 0x01]));
    publish.qos = QoS::AtLeastOnce;
    publish.packet_id = raw.next_id();
    publish.properties.user_properties = vec![("who".into(), "raw".into())];
    publish.properties.content_type = Some("application/octet-stream".into());
    publish.properties.response_topic = Some("props/back".into());
    publish.properties.correlation_data = Some(Bytes::from_static(b"c-1"));
    raw.send(Packet::Publish(publish)).await;
    assert!(matches!(raw.recv().await, Packet::PubAck(_)));
    assert!(sub.exit(STEP).await.success(), "{}", sub.err());
    let out = sub.out();
    assert_eq!(out.len(), 1, "{out:?}");
    let v: serde_json::Value = serde_json::from_str(&out[0]).unwrap();
    assert_eq!(v["topic"], "props/sub");
    assert_eq!(v["qos"], 1);
    assert_eq!(v["payload_base64"], "/wE=", "not UTF-8: base64");
    let props = &v["properties"];
    assert_eq!(
        props["user_properties"],
        serde_json::json!([["who", "raw"]])
    );
    assert_eq!(props["content_type"], "application/octet-stream");
    assert_eq!(props["response_topic"], "props/back");
    assert_eq!(props["correlation_data"], "c-1");

    // And from one to the other, through a -F format.
    let mut sub = subscribed(&[
        "-p",
        &p,
        "-t",
        "props/f",
        "-F",
        "%t|%C|%R|%D|%P|%p",
        "-C",
        "1",
    ])
    .await;
    let (status, _, err) = run(&[
        "pub",
        "-p",
        &p,
        "-t",
        "props/f",
        "-m",
        "hi",
        "--content-type",
        "ct",
        "--response-topic",
        "rt",
        "--correlation-data",
        "cd",
        "--user-property",
        "a=1",
    ])
    .await;
    assert!(status.success(), "{err}");
    assert!(sub.exit(STEP).await.success(), "{}", sub.err());
    assert_eq!(sub.out(), ["props/f|ct|rt|cd|a=1|hi"]);
}

/// Writes `line-1` ... `line-{n}` into `stdin`, one every `every`, on a thread.
fn feed(mut stdin: ChildStdin, n: usize, every: Duration) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        for i in 1..=n {
            writeln!(stdin, "line-{i}").expect("herald pub reads its input");
            std::thread::sleep(every);
        }
    })
}

/// The required one: a persistent QoS 1 subscriber and a `-l` publisher fed steadily;
/// Herald (on a data directory) is killed with SIGKILL and restarted on the same port twice
/// mid-stream. Both clients reconnect by themselves and resume their sessions; the
/// publisher exits 0, which it does only once every line is acknowledged, and every line
/// then reaches the subscriber (duplicates are allowed at QoS 1, and counted).
#[tokio::test]
async fn restarts_mid_stream_lose_no_qos1_message() {
    const LINES: usize = 1500;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let (listen, data) = (
        format!("127.0.0.1:{port}"),
        dir.path().to_str().unwrap().to_string(),
    );
    let mut h = Herald::start(
        &["--mqtt-listen", &listen, "--data-dir", &data],
        &[],
        &[port],
    )
    .await;
    let p = port.to_string();
    // The subscriber speaks 3.1.1 (clean session 0) and the publisher 5 (session expiry):
    // both ways of keeping a session.
    let mut sub = subscribed(&[
        "-p",
        &p,
        "-i",
        "restart-sub",
        "-c",
        "-q",
        "1",
        "-V",
        "311",
        "-t",
        "restart/#",
    ])
    .await;
    let mut publisher = Client::spawn(
        &[
            "pub",
            "-p",
            &p,
            "-i",
            "restart-pub",
            "-c",
            "-q",
            "1",
            "-t",
            "restart/lines",
            "-l",
        ],
        true,
    );
    let feeder = feed(
        publisher.stdin.take().unwrap(),
        LINES,
        Duration::from_millis(4),
    );
    let mut downtimes = Vec::new();
    for round in 1..=2 {
        let before = sub.out().len();
        sub.wait_lines(before + 200, STEP).await;
        let killed = Instant::now();
        h.kill();
        // Lines go on arriving at the publisher while Herald is down.
        tokio::time::sleep(Duration::from_millis(300)).await;
        h.restart().await;
        let up = Instant::now();
        downtimes.push((round, killed, up));
        let resumed = format!("connected to mqtt://127.0.0.1:{port}");
        for client in [&sub, &publisher] {
            let deadline = Instant::now() + STEP;
            while client.err_times(&resumed).len() < round {
                assert!(
                    Instant::now() < deadline,
                    "no reconnection:\n{}",
                    client.err()
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    feeder.join().unwrap();
    let status = publisher.exit(Duration::from_secs(60)).await;
    assert!(
        status.success(),
        "every line acknowledged:\n{}",
        publisher.err()
    );
    sub.wait_lines(LINES, STEP).await;
    // Whatever was acknowledged to the publisher is at the subscriber; let late duplicates in.
    let deadline = Instant::now() + STEP;
    let counts = loop {
        let mut counts: HashMap<String, usize> = HashMap::new();
        for line in sub.out() {
            *counts.entry(line).or_default() += 1;
        }
        let missing = (1..=LINES)
            .filter(|i| !counts.contains_key(&format!("line-{i}")))
            .count();
        if missing == 0 {
            break counts;
        }
        assert!(
            Instant::now() < deadline,
            "{missing} lines never arrived:\n{}",
            sub.err()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(counts.len(), LINES, "nothing but the lines: {counts:?}");
    let duplicates: usize = counts.values().map(|n| n - 1).sum();
    sub.interrupt();
    assert!(
        sub.exit(STEP).await.success(),
        "Ctrl-C is a clean exit: {}",
        sub.err()
    );

    for client in [&sub, &publisher] {
        let err = client.err();
        assert_eq!(err.matches("(session resumed)").count(), 2, "{err}");
        assert_eq!(err.matches("connection lost").count(), 2, "{err}");
    }
    assert_eq!(
        sub.err().matches("not subscribing again").count(),
        2,
        "a resumed session keeps its subscription"
    );
    assert_eq!(sub.err().matches("subscribed to restart/#").count(), 1);
    let resumed = format!("connected to mqtt://127.0.0.1:{port}");
    for (round, killed, up) in downtimes {
        let at = |c: &Client| c.err_times(&resumed)[round - 1];
        eprintln!(
            "round {round}: Herald down {:?}; back up after restart: sub {:?}, pub {:?}",
            up - killed,
            at(&sub).saturating_duration_since(up),
            at(&publisher).saturating_duration_since(up),
        );
    }
    eprintln!("{LINES} lines, {duplicates} duplicates at the subscriber");
}

/// `herald passwd -c -b FILE alice secret` in `dir`; returns the file.
fn password_file(dir: &Path) -> PathBuf {
    let file = dir.join("passwd");
    let out = herald()
        .args(["passwd", "-c", "-b"])
        .arg(&file)
        .args(["alice", "secret"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    file
}

#[tokio::test]
async fn bad_credentials_end_the_subscriber_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let file = password_file(dir.path());
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let env = [("HERALD_AUTH_PASSWORD_FILE", file.to_str().unwrap())];
    let _h = Herald::start(&["--in-memory", "--mqtt-listen", &listen], &env, &[port]).await;
    let p = port.to_string();
    for version in ["5", "311"] {
        let started = Instant::now();
        let (status, out, err) = run(&[
            "sub", "-p", &p, "-V", version, "-u", "alice", "-P", "wrong", "-t", "x",
        ])
        .await;
        assert!(!status.success(), "-V {version}");
        assert!(out.is_empty());
        assert!(
            err.contains("Bad User Name or Password"),
            "-V {version}: {err}"
        );
        assert!(err.contains("-u/--username"), "names the flags: {err}");
        assert!(!err.contains("reconnecting"), "not retried: {err}");
        assert!(started.elapsed() < Duration::from_secs(10));
    }
    let (status, _, err) = run(&["sub", "-p", &p, "-t", "x"]).await;
    assert!(!status.success());
    assert!(err.contains("Not authorized (0x87)"), "{err}");
    // The right password works: the refusals above were the credentials'.
    let login = ["-u", "alice", "-P", "secret"];
    let mut sub_args = vec!["-p", p.as_str(), "-t", "x", "-C", "1"];
    sub_args.extend(login);
    let mut sub = subscribed(&sub_args).await;
    let mut pub_args = vec!["pub", "-p", p.as_str(), "-t", "x", "-m", "in", "-q", "1"];
    pub_args.extend(login);
    let (status, _, err) = run(&pub_args).await;
    assert!(status.success(), "{err}");
    assert!(sub.exit(STEP).await.success());
    assert_eq!(sub.out(), ["in"]);
}

#[tokio::test]
async fn a_refused_publish_is_reported_and_fails_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let acl = dir.path().join("acl");
    std::fs::write(&acl, "topic readwrite open/#\n").unwrap();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let env = [("HERALD_ACL_FILE", acl.to_str().unwrap())];
    let _h = Herald::start(&["--in-memory", "--mqtt-listen", &listen], &env, &[port]).await;
    let p = port.to_string();
    for qos in ["1", "2"] {
        let (status, _, err) = run(&[
            "pub", "-p", &p, "-q", qos, "-t", "closed/x", "-m", "no", "--repeat", "2",
        ])
        .await;
        assert!(!status.success(), "QoS {qos}");
        assert!(
            err.contains("message 1 refused by the server: Not authorized (0x87)"),
            "{err}"
        );
        assert!(err.contains("2 of 2 messages were refused"), "{err}");
    }
    let (status, _, err) = run(&["pub", "-p", &p, "-q", "1", "-t", "open/x", "-m", "yes"]).await;
    assert!(status.success(), "{err}");
}

#[tokio::test]
async fn bad_flags_name_the_flag() {
    let cases: &[(&[&str], &str)] = &[
        (&["pub", "-t", "a", "-m", "x", "-q", "3"], "--qos"),
        (&["pub", "-t", "a"], "--message"),
        (&["pub", "-t", "a/#", "-m", "x"], "-t/--topic"),
        (
            &["pub", "-t", "a", "-m", "x", "-V", "4"],
            "--protocol-version",
        ),
        (
            &[
                "pub",
                "-t",
                "a",
                "-m",
                "x",
                "-V",
                "311",
                "--content-type",
                "c",
            ],
            "--content-type",
        ),
        (&["pub", "-t", "a", "-m", "x", "-c"], "-i/--id"),
        (
            &["pub", "-t", "a", "-m", "x", "-V", "311", "-x", "60"],
            "-x/--session-expiry",
        ),
        (&["pub", "-t", "a", "-m", "x", "-L", "mqtt://h/t"], "--url"),
        (
            &[
                "pub", "-t", "a", "-m", "x", "-L", "mqtt://h", "--cafile", "ca",
            ],
            "mqtts://",
        ),
        (
            &[
                "pub",
                "-t",
                "a",
                "-m",
                "x",
                "--cafile",
                "/nonexistent/ca.pem",
            ],
            "--cafile",
        ),
        (&["pub", "-t", "a", "-f", "/nonexistent/file"], "-f"),
        (&["sub", "-p", "1"], "--topic"),
        (&["sub", "-t", "a/#/b"], "-t/--topic"),
        (&["sub", "-t", "a", "-F", "%z"], "-F"),
        (&["sub", "-t", "a", "-V", "311", "--no-local"], "--no-local"),
    ];
    for (args, needle) in cases {
        let (status, _, err) = run(args).await;
        assert!(!status.success(), "{args:?}");
        assert!(err.contains(needle), "{args:?} should name {needle}: {err}");
    }
    // -h is the host, as for mosquitto; --help still helps.
    let (status, out, _) = run(&["pub", "--help"]).await;
    assert!(status.success());
    assert!(out.iter().any(|l| l.contains("-h, --host")), "{out:?}");
}

#[tokio::test]
async fn filters_timeout_and_retained_messages() {
    let (_h, port) = Herald::plain().await;
    let p = port.to_string();
    let (status, _, err) = run(&[
        "pub", "-p", &p, "-t", "f/old", "-m", "stale", "-r", "-q", "1",
    ])
    .await;
    assert!(status.success(), "{err}");
    // -R skips the retained message, -T the filtered topic; -C counts what is printed.
    let mut sub = subscribed(&[
        "-p", &p, "-t", "f/#", "-R", "-T", "f/skip/#", "-v", "-C", "1",
    ])
    .await;
    for (topic, m) in [("f/skip/1", "no"), ("f/new", "fresh")] {
        let (status, _, err) = run(&["pub", "-p", &p, "-t", topic, "-m", m]).await;
        assert!(status.success(), "{err}");
    }
    assert!(sub.exit(STEP).await.success(), "{}", sub.err());
    assert_eq!(sub.out(), ["f/new fresh"]);
    // --retained-only prints the retained message and stops at the first live one.
    let mut sub = subscribed(&["-p", &p, "-t", "f/old", "-t", "f/live", "--retained-only"]).await;
    sub.wait_lines(1, STEP).await;
    let (status, _, _) = run(&["pub", "-p", &p, "-t", "f/live", "-m", "now"]).await;
    assert!(status.success());
    assert!(sub.exit(STEP).await.success(), "{}", sub.err());
    assert_eq!(sub.out(), ["stale"]);
    // -W: exit status 27 once the time is up.
    let started = Instant::now();
    let (status, out, err) = run(&["sub", "-p", &p, "-t", "f/none", "-W", "1"]).await;
    assert_eq!(status.code(), Some(27), "{err}");
    assert!(out.is_empty() && err.contains("timed out"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn ctrl_c_disconnects_cleanly_and_a_kill_publishes_the_will() {
    let (_h, port) = Herald::plain().await;
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let p = port.to_string();
    let mut watcher = Raw::connect(addr, V5, "will-watcher").await;
    watcher.subscribe("will/#", QoS::AtMostOnce).await;
    let with_will = |name: &'static str| {
        vec![
            "-p",
            p.as_str(),
            "-t",
            "none",
            "--will-topic",
            name,
            "--will-payload",
            name,
        ]
    };
    let mut polite = subscribed(&with_will("will/polite")).await;
    polite.interrupt();
    assert!(polite.exit(STEP).await.success(), "{}", polite.err());
    watcher.expect_nothing().await;
    let mut vanished = subscribed(&with_will("will/vanished")).await;
    vanished.child.kill().unwrap();
    vanished.exit(STEP).await;
    let will = watcher.recv_publish().await;
    assert_eq!(
        (&*will.topic, &will.payload[..]),
        ("will/vanished", &b"will/vanished"[..])
    );
}
