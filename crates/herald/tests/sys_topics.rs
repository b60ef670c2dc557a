//! The `$SYS/` topics read by the real `mosquitto_sub` (Debian's mosquitto-clients; the
//! tests fail, not skip, without it): mosquitto's names with plausible values, Herald's
//! own, EMQX's client events, what `#` does not reach, what clients may not publish, each
//! tenant's own view, the ACLs deciding who reads them, and two nodes of a cluster (a real
//! nats-server) each publishing its own. `sys.interval_secs = 1`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::process::Output;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::Raw;
use herald::config::{Config, TenantRule};
use mqtt_codec::ProtocolVersion::{V3_1_1, V5};
use mqtt_codec::properties::WillProperties;
use mqtt_codec::{Connect, LastWill, Packet, Publish, QoS, ReasonCode};
use serde_json::Value;

/// A node named `node-a` publishing every second.
fn config() -> Config {
    let mut c = common::config();
    c.sys.interval_secs = 1;
    c.cluster.node_id = "node-a".into();
    c
}

/// Runs a client program to its end (bounded by its own `-W` and by `timeout 20`) without
/// holding up the runtime Herald runs on.
async fn run(program: &str, args: &[&str]) -> Output {
    let found = std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()));
    assert!(
        found,
        "{program} is not on PATH: apt-get install mosquitto-clients (scripts/test does)"
    );
    let (program, args): (String, Vec<String>) =
        (program.into(), args.iter().map(|a| a.to_string()).collect());
    tokio::task::spawn_blocking(move || {
        std::process::Command::new("timeout")
            .arg("20")
            .arg(&program)
            .args(&args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {program}: {e}"))
    })
    .await
    .unwrap()
}

/// `mosquitto_sub` against the Herald on `port` with `args` (`-t`, `-C`, `-W`, `-u`, ...): each message as
/// (topic, payload), in the order received (a tab between them: topics hold spaces).
async fn sub(port: u16, args: &[&str]) -> (Vec<(String, String)>, Output) {
    let port = port.to_string();
    let mut all = vec!["-h", "127.0.0.1", "-p", &port, "-F", "%t\t%p"];
    all.extend(args);
    let out = run("mosquitto_sub", &all).await;
    let lines = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(t, p)| (t.to_string(), p.to_string()))
        .collect();
    (lines, out)
}

/// The last value of each topic.
fn last(lines: &[(String, String)]) -> HashMap<String, String> {
    lines.iter().cloned().collect()
}

/// `topic`'s value in `values` as a number; panics naming the topic when absent.
fn number(values: &HashMap<String, String>, topic: &str) -> u64 {
    let v = values
        .get(topic)
        .unwrap_or_else(|| panic!("{topic} not published; got {:?}", values.keys()));
    v.parse()
        .unwrap_or_else(|_| panic!("{topic} = {v:?}, not a number"))
}

/// Connects a v5 client `id` with `username`, keep-alive 30.
async fn client(s: &common::TestServer, id: &str, username: Option<&str>) -> Raw {
    let mut c = Connect::new(V5, id, 30);
    c.username = username.map(Into::into);
    let (raw, ack) = Raw::connect_with(s.addr, c).await;
    assert_eq!(ack.reason_code, ReasonCode::Success, "{id}: {ack:?}");
    raw
}

/// Publishes at QoS 1 from a v5 client; the PUBACK's reason code.
async fn puback(c: &mut Raw, topic: &str, qos: QoS) -> ReasonCode {
    let mut p = Publish::new(topic, b"fake".to_vec());
    p.qos = qos;
    p.packet_id = c.next_id();
    c.send(Packet::Publish(p)).await;
    match c.recv().await {
        Packet::PubAck(a) | Packet::PubRec(a) => a.reason_code,
        other => panic!("expected PUBACK or PUBREC, got {other:?}"),
    }
}

#[tokio::test]
async fn mosquitto_sub_reads_mosquittos_names() {
    let s = common::start_with(config()).await;
    let mut c1 = client(&s, "c1", None).await;
    c1.publish("a/b", b"x", QoS::AtLeastOnce, false).await;

    // The first $SYS subscriber gets every value at once (its subscription asks for
    // them), then the changed ones each second.
    let (lines, out) = sub(s.addr.port(), &["-t", "$SYS/broker/#", "-W", "3"]).await;
    assert!(!lines.is_empty(), "nothing read: {out:?}");
    assert!(
        lines.iter().all(|(t, _)| t.starts_with("$SYS/broker/")),
        "{lines:?}"
    );
    let v = last(&lines);
    assert!(v["$SYS/broker/version"].starts_with("herald version "));
    let uptime = &v["$SYS/broker/uptime"];
    let secs = uptime.strip_suffix(" seconds").expect("N seconds");
    assert!(secs.parse::<u64>().is_ok(), "{uptime}");
    // c1 and mosquitto_sub itself.
    assert!(number(&v, "$SYS/broker/clients/connected") >= 2);
    assert!(number(&v, "$SYS/broker/clients/maximum") >= 2);
    assert!(number(&v, "$SYS/broker/clients/total") >= number(&v, "$SYS/broker/clients/connected"));
    assert_eq!(number(&v, "$SYS/broker/clients/disconnected"), 0);
    assert_eq!(number(&v, "$SYS/broker/clients/expired"), 0);
    // Two CONNECTs, a PUBLISH, a SUBSCRIBE at least.
    assert!(number(&v, "$SYS/broker/messages/received") >= 4);
    assert!(number(&v, "$SYS/broker/messages/sent") >= 3);
    assert!(number(&v, "$SYS/broker/publish/messages/received") >= 1);
    assert!(number(&v, "$SYS/broker/bytes/received") > 0);
    assert!(number(&v, "$SYS/broker/publish/bytes/received") > 0);
    assert!(number(&v, "$SYS/broker/subscriptions/count") >= 1);
    // Herald's own $SYS retained messages are not counted as anyone's.
    assert_eq!(number(&v, "$SYS/broker/retained messages/count"), 0);
    assert_eq!(number(&v, "$SYS/broker/store/messages/count"), 0);
    assert_eq!(number(&v, "$SYS/broker/messages/stored"), 0);
    let _ = number(&v, "$SYS/broker/store/messages/bytes");
    let _ = number(&v, "$SYS/broker/publish/messages/dropped");
    for load in [
        "messages/received",
        "messages/sent",
        "bytes/received",
        "bytes/sent",
        "publish/received",
        "publish/sent",
        "publish/dropped",
        "connections",
        "sockets",
    ] {
        for window in ["1min", "5min", "15min"] {
            let topic = format!("$SYS/broker/load/{load}/{window}");
            let value = v.get(&topic).unwrap_or_else(|| panic!("{topic} missing"));
            let (whole, decimals) = value.split_once('.').expect("two decimals");
            assert!(
                whole.parse::<u64>().is_ok() && decimals.len() == 2,
                "{topic} {value}"
            );
        }
    }
    // Updated each second: uptime came more than once, and only changed values come again.
    let uptimes = lines.iter().filter(|(t, _)| t == "$SYS/broker/uptime");
    assert!(uptimes.count() >= 2, "{lines:?}");
    let versions = lines.iter().filter(|(t, _)| t == "$SYS/broker/version");
    assert_eq!(versions.count(), 1, "unchanged values are not sent again");

    // Publications are counted: the value grows by what c1 publishes.
    let before = number(&v, "$SYS/broker/publish/messages/received");
    for _ in 0..5 {
        c1.publish("a/b", b"x", QoS::AtLeastOnce, false).await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let topic = "$SYS/broker/publish/messages/received";
        let (lines, _) = sub(s.addr.port(), &["-t", topic, "-C", "1", "-W", "3"]).await;
        let now = number(&last(&lines), topic);
        if now >= before + 5 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{topic} stayed at {now} (was {before}, 5 published since)"
        );
    }
    assert!(
        s.server
            .broker()
            .stats
            .sys_published
            .load(Ordering::Relaxed)
            > 0
    );
}

#[tokio::test]
async fn heralds_own_topics() {
    let s = common::start_with(config()).await;
    let _c1 = client(&s, "c1", None).await;
    let (lines, out) = sub(
        s.addr.port(),
        &["-t", "$SYS/herald/#", "-t", "$SYS/brokers/#", "-W", "2"],
    )
    .await;
    let v = last(&lines);
    assert_eq!(
        v.get("$SYS/herald/node").map(String::as_str),
        Some("node-a"),
        "{out:?}"
    );
    assert_eq!(
        v["$SYS/brokers"], "node-a",
        "the cluster's nodes: this one alone"
    );
    assert_eq!(number(&v, "$SYS/herald/cluster/nodes"), 1);
    assert_eq!(v["$SYS/brokers/node-a/version"], env!("CARGO_PKG_VERSION"));
    let _ = number(&v, "$SYS/brokers/node-a/uptime");
    // c1 speaks 5.0; mosquitto_sub 3.1.1, both on the TCP listener.
    assert!(number(&v, "$SYS/herald/connections/mqtt/5.0") >= 1);
    assert!(number(&v, "$SYS/herald/connections/mqtt/3.1.1") >= 1);
    assert_eq!(number(&v, "$SYS/herald/connections/ws/5.0"), 0);
    assert!(number(&v, "$SYS/herald/sockets/open") >= 2);
    assert_eq!(number(&v, "$SYS/herald/tenants"), 1);
    let _ = number(&v, "$SYS/herald/queued/bytes");
    let _ = number(&v, "$SYS/herald/sessions/persistent");
    let _ = number(&v, "$SYS/herald/closes/client_disconnect");
    let _ = number(&v, "$SYS/herald/drops/qos0_outbox_full");
    let _ = number(&v, "$SYS/herald/refused/queue_full");
    // The store's size where there is one (TEST_WITH_STORE runs these tests on a store).
    if s.server.broker().persist.is_stored() {
        assert!(number(&v, "$SYS/herald/store/disk_bytes") > 0);
    } else {
        assert!(!v.contains_key("$SYS/herald/store/disk_bytes"), "in memory");
    }
}

#[tokio::test]
async fn client_events_as_emqx_publishes_them() {
    let s = common::start_with(config()).await;
    let broker = s.server.broker().clone();
    // Nobody subscribes: connections build no event.
    client(&s, "quiet", None).await.disconnect().await;
    common::eventually("quiet gone", || {
        broker.default_tenant.sessions.get("quiet").is_none()
    })
    .await;
    assert_eq!(broker.stats.sys_published.load(Ordering::Relaxed), 0);

    let args: &'static [&str] = &["-t", "$SYS/brokers/+/clients/#", "-C", "4", "-W", "10"];
    let watcher = tokio::spawn(sub(s.addr.port(), args));
    common::eventually("the watcher subscribed", || {
        broker.default_tenant.index.event_subscriptions() > 0
    })
    .await;
    // A v5 client with a username leaves with DISCONNECT; a 3.1.1 one without drops its
    // socket.
    client(&s, "ev-1", Some("bob")).await.disconnect().await;
    let old = Raw::connect(s.addr, V3_1_1, "ev-2").await;
    drop(old);
    let (lines, out) = watcher.await.unwrap();
    assert_eq!(lines.len(), 4, "{out:?}");
    let topics: Vec<&str> = lines.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(
        topics,
        [
            "$SYS/brokers/node-a/clients/ev-1/connected",
            "$SYS/brokers/node-a/clients/ev-1/disconnected",
            "$SYS/brokers/node-a/clients/ev-2/connected",
            "$SYS/brokers/node-a/clients/ev-2/disconnected",
        ]
    );
    let event = |i: usize| -> Value { serde_json::from_str(&lines[i].1).unwrap() };
    let connected = event(0);
    assert_eq!(connected["clientid"], "ev-1");
    assert_eq!(connected["username"], "bob");
    assert_eq!(connected["tenant"], "");
    assert_eq!(connected["node"], "node-a");
    assert_eq!(connected["ipaddress"], "127.0.0.1");
    assert!(
        connected["peername"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
    assert_eq!(connected["listener"], "mqtt");
    assert_eq!(connected["proto_name"], "MQTT");
    assert_eq!(connected["proto_ver"], 5);
    assert_eq!(connected["keepalive"], 30);
    assert_eq!(connected["clean_start"], true);
    assert_eq!(connected["expiry_interval"], 0);
    assert_eq!(connected["connack"], 0);
    let at = connected["connected_at"].as_u64().unwrap();
    assert!(at > 1_600_000_000_000, "milliseconds since 1970: {at}");
    let gone = event(1);
    assert_eq!(gone["clientid"], "ev-1");
    assert_eq!(gone["username"], "bob");
    assert_eq!(gone["reason"], "client_disconnect");
    assert!(gone["disconnected_at"].as_u64().unwrap() >= at);
    let old = event(2);
    assert_eq!(
        (old["proto_ver"].clone(), old["username"].clone()),
        (4.into(), Value::Null)
    );
    assert_eq!(event(3)["reason"], "peer_closed");

    // Not retained: a later subscriber gets none of them.
    let (lines, _) = sub(
        s.addr.port(),
        &["-t", "$SYS/brokers/+/clients/#", "-W", "2"],
    )
    .await;
    assert!(lines.is_empty(), "{lines:?}");
}

#[tokio::test]
async fn wildcards_do_not_reach_sys_topics() {
    let s = common::start_with(config()).await;
    // Someone reads $SYS, so it is published.
    let mut watcher = client(&s, "watcher", None).await;
    assert_eq!(
        watcher.subscribe("$SYS/#", QoS::AtMostOnce).await,
        [ReasonCode::Success]
    );
    let args: &'static [&str] = &[
        "-t",
        "#",
        "-t",
        "+/broker/#",
        "-t",
        "+/+/clients/#",
        "-W",
        "3",
    ];
    let everything = tokio::spawn(sub(s.addr.port(), args));
    let broker = s.server.broker().clone();
    common::eventually("mosquitto_sub subscribed", || {
        broker.default_tenant.index.len() >= 4
    })
    .await;
    client(&s, "pub", None)
        .await
        .publish("plain/x", b"seen", QoS::AtMostOnce, false)
        .await;
    let (lines, out) = everything.await.unwrap();
    assert_eq!(
        lines,
        [("plain/x".to_string(), "seen".to_string())],
        "only the plain topic: {out:?}"
    );
    // Meanwhile the $SYS subscriber got the status and the events.
    let got = common::drain(&mut watcher, 10).await;
    assert!(got.iter().any(|p| p.topic == "$SYS/broker/uptime"));
    assert!(
        got.iter()
            .any(|p| p.topic == "$SYS/brokers/node-a/clients/pub/connected")
    );
}

#[tokio::test]
async fn clients_cannot_publish_to_sys_topics() {
    let mut c = config();
    c.http.listen = "127.0.0.1:0".into();
    let s = common::start_with(c).await;
    let broker = s.server.broker().clone();
    let mut watcher = client(&s, "watcher", None).await;
    watcher.subscribe("$SYS/x/#", QoS::AtMostOnce).await;
    watcher
        .subscribe("$SYS/broker/version", QoS::AtMostOnce)
        .await;
    assert!(
        watcher
            .recv_publish()
            .await
            .payload
            .starts_with(b"herald version"),
        "the real one"
    );
    let mut p = client(&s, "p", None).await;
    assert_eq!(
        puback(&mut p, "$SYS/broker/version", QoS::AtLeastOnce).await,
        ReasonCode::NotAuthorized
    );
    assert_eq!(
        puback(&mut p, "$SYS/x/y", QoS::ExactlyOnce).await,
        ReasonCode::NotAuthorized
    );
    p.publish("$SYS/x/z", b"fake", QoS::AtMostOnce, false).await;
    // 3.1.1 has no code to refuse with: acknowledged and dropped (acl.v3_publish_denied).
    let mut old = Raw::connect(s.addr, V3_1_1, "old").await;
    old.publish("$SYS/x/old", b"fake", QoS::AtLeastOnce, false)
        .await;
    common::ping(&mut old).await;
    let port = s.addr.port().to_string();
    let args = [
        "-h",
        "127.0.0.1",
        "-p",
        &port,
        "-t",
        "$SYS/x/cli",
        "-m",
        "fake",
        "-q",
        "1",
    ];
    let out = run("mosquitto_pub", &args).await;
    assert!(out.status.success(), "{out:?}");
    watcher.expect_nothing().await;
    // A will on $SYS refuses the CONNECT (mosquitto checks a will's topic as a publish).
    for version in [V5, V3_1_1] {
        let mut c = Connect::new(version, "willing", 30);
        c.will = Some(LastWill {
            topic: "$SYS/x/will".into(),
            payload: "fake".into(),
            qos: QoS::AtMostOnce,
            retain: false,
            properties: WillProperties::default(),
        });
        let (_, ack) = Raw::connect_with(s.addr, c).await;
        assert_eq!(ack.reason_code, ReasonCode::NotAuthorized, "{version:?}");
    }
    assert_eq!(broker.stats.sys_refused.load(Ordering::Relaxed), 7);
    // Nor does the HTTP API.
    let http = s.server.http_addr().unwrap();
    let body = r#"{"topic": "$SYS/broker/version", "payload": "fake"}"#;
    let reply = common::http::request(http, "POST", "/api/v1/publish", &[], body).await;
    assert_eq!(reply.status, 400);
    let error = &reply.json()["error"];
    assert_eq!(
        (error["code"].as_str(), error["field"].as_str()),
        (Some("invalid_field"), Some("topic"))
    );
    let version = broker.default_tenant.retained.get("$SYS/broker/version");
    assert!(version.unwrap().payload.starts_with(b"herald version"));
    assert!(broker.default_tenant.retained.get("$SYS/x/cli").is_none());
}

#[tokio::test]
async fn each_tenant_sees_its_own() {
    let mut c = config();
    c.auth.tenant_from = TenantRule::UsernamePrefix;
    let s = common::start_with(c).await;
    let broker = s.server.broker().clone();
    let spawn_sub = |user: Option<&'static str>, topics: &'static [&'static str]| {
        let port = s.addr.port();
        tokio::spawn(async move {
            let mut args: Vec<&str> = vec!["-W", "5"];
            if let Some(u) = user {
                args.extend(["-u", u]);
            }
            for t in topics {
                args.extend(["-t", t]);
            }
            sub(port, &args).await
        })
    };
    let acme = spawn_sub(Some("acme/watcher"), &["$SYS/#"]);
    let operator = spawn_sub(
        None,
        &["$SYS/brokers/+/tenants/#", "$SYS/broker/clients/connected"],
    );
    common::eventually("both subscribed", || {
        broker
            .find_tenant("acme")
            .is_some_and(|t| t.index.sys_subscriptions() > 0)
            && broker.default_tenant.index.sys_subscriptions() > 0
    })
    .await;
    let dev1 = client(&s, "dev1", Some("acme/dev1")).await;
    let _dev2 = client(&s, "dev2", Some("globex/dev2")).await;
    let _dev3 = client(&s, "dev3", Some("globex/dev3")).await;
    // Two publications of the views.
    tokio::time::sleep(Duration::from_millis(2200)).await;
    dev1.disconnect().await;

    let (lines, out) = acme.await.unwrap();
    let v = last(&lines);
    assert_eq!(
        v.get("$SYS/herald/tenant").map(String::as_str),
        Some("acme"),
        "{out:?}"
    );
    for (topic, payload) in &lines {
        assert!(
            !(topic.contains("dev2") || topic.contains("dev3") || topic.contains("globex")),
            "another tenant's: {topic}"
        );
        assert!(!payload.contains("globex"), "{topic}: {payload}");
        assert!(!topic.contains("/tenants/"), "the operator's: {topic}");
        assert!(
            !topic.starts_with("$SYS/herald/closes/"),
            "the node's: {topic}"
        );
        assert!(
            !topic.starts_with("$SYS/broker/bytes/"),
            "the node's: {topic}"
        );
    }
    let connected: Vec<u64> = lines
        .iter()
        .filter(|(t, _)| t == "$SYS/broker/clients/connected")
        .map(|(_, v)| v.parse().unwrap())
        .collect();
    // The watcher and dev1; never globex's two.
    assert!(connected.contains(&2), "{connected:?}");
    assert!(connected.iter().all(|&n| n <= 2), "{connected:?}");
    assert_eq!(number(&v, "$SYS/broker/clients/maximum"), 2);
    let topics: Vec<&str> = lines.iter().map(|(t, _)| t.as_str()).collect();
    assert!(topics.contains(&"$SYS/brokers/node-a/clients/dev1/connected"));
    assert!(topics.contains(&"$SYS/brokers/node-a/clients/dev1/disconnected"));
    let event = lines
        .iter()
        .find(|(t, _)| t.ends_with("dev1/connected"))
        .map(|(_, p)| serde_json::from_str::<Value>(p).unwrap())
        .unwrap();
    assert_eq!(
        (event["tenant"].as_str(), event["username"].as_str()),
        (Some("acme"), Some("acme/dev1"))
    );

    // The operator (the default tenant) sees the node: every tenant's events, all counted.
    let (lines, out) = operator.await.unwrap();
    let topics: Vec<&str> = lines.iter().map(|(t, _)| t.as_str()).collect();
    for want in [
        "$SYS/brokers/node-a/tenants/acme/clients/dev1/connected",
        "$SYS/brokers/node-a/tenants/globex/clients/dev2/connected",
        "$SYS/brokers/node-a/tenants/globex/clients/dev3/connected",
        "$SYS/brokers/node-a/tenants/acme/clients/dev1/disconnected",
    ] {
        assert!(topics.contains(&want), "{want} missing: {out:?}");
    }
    let most = lines
        .iter()
        .filter(|(t, _)| t == "$SYS/broker/clients/connected")
        .map(|(_, v)| v.parse::<u64>().unwrap())
        .max();
    // Both watchers and the three devices.
    assert!(most >= Some(5), "{lines:?}");
    // acme's view went with its last $SYS subscriber.
    let acme = broker.find_tenant("acme").unwrap();
    common::eventually("acme's view cleared", || {
        acme.retained.get("$SYS/broker/uptime").is_none()
    })
    .await;
}

#[tokio::test]
async fn the_acls_decide_who_reads_them() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("acl");
    let rules = "user operator\ntopic read $SYS/#\n\nuser device\ntopic readwrite #\n";
    std::fs::write(&file, rules).unwrap();
    let mut c = config();
    c.acl.file = file;
    let s = common::start_with(c).await;

    let (lines, out) = sub(
        s.addr.port(),
        &[
            "-u",
            "operator",
            "-t",
            "$SYS/broker/uptime",
            "-C",
            "1",
            "-W",
            "5",
        ],
    )
    .await;
    assert_eq!(lines.len(), 1, "{out:?}");
    assert!(lines[0].1.ends_with(" seconds"));

    // `#` does not grant `$SYS/...`: refused, 0x87 in 5.0 and 0x80 in 3.1.1.
    let mut device = client(&s, "d5", Some("device")).await;
    for filter in ["$SYS/#", "$SYS/broker/uptime", "$SYS/brokers/+/clients/#"] {
        let codes = device.subscribe(filter, QoS::AtMostOnce).await;
        assert_eq!(codes, [ReasonCode::NotAuthorized], "{filter}");
    }
    let mut c = Connect::new(V3_1_1, "d3", 30);
    c.username = Some("device".into());
    let (mut old, _) = Raw::connect_with(s.addr, c).await;
    assert_eq!(
        old.subscribe("$SYS/#", QoS::AtMostOnce).await,
        [ReasonCode::UnspecifiedError]
    );
    // mosquitto_sub is told too, and gets nothing.
    let (lines, out) = sub(s.addr.port(), &["-u", "device", "-t", "$SYS/#", "-W", "2"]).await;
    assert!(lines.is_empty(), "{lines:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("denied"), "{out:?}");
    // Anonymous clients have no rule at all.
    let (lines, _) = sub(s.addr.port(), &["-t", "$SYS/#", "-W", "2"]).await;
    assert!(lines.is_empty(), "{lines:?}");
}

#[tokio::test]
async fn each_node_of_a_cluster_publishes_its_own() {
    let nats = common::nats::Nats::start();
    let node = |id: &str| {
        let mut c = config();
        c.cluster.nats = vec![nats.url.clone()];
        c.cluster.node_id = id.into();
        c
    };
    let a = common::start_with(node("node-a")).await;
    let b = common::start_with(node("node-b")).await;
    let mut watcher = client(&a, "watcher", None).await;
    watcher.subscribe("$SYS/#", QoS::AtMostOnce).await;
    // A client of node b: its events are b's, for b's subscribers; a's watcher sees none.
    let _elsewhere = client(&b, "on-b", None).await;
    let _here = client(&a, "on-a", None).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let (mut nodes, mut events) = (None, Vec::new());
    while nodes.as_deref() != Some("node-a,node-b") || events.is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "$SYS/brokers never listed both nodes ({nodes:?}), or no event ({events:?})"
        );
        let Some(Packet::Publish(p)) = watcher.try_recv(Duration::from_secs(5)).await else {
            panic!("the watcher lost its connection");
        };
        let payload = String::from_utf8_lossy(&p.payload).to_string();
        match &*p.topic {
            "$SYS/brokers" => nodes = Some(payload),
            t if t.starts_with("$SYS/brokers/") && t.contains("/clients/") => {
                events.push(t.to_string())
            }
            t => assert!(!t.starts_with("$SYS/brokers/node-b"), "{t}"),
        }
    }
    assert_eq!(events, ["$SYS/brokers/node-a/clients/on-a/connected"]);
    // Whatever else comes meanwhile: nothing of b's.
    for p in common::drain(&mut watcher, 0).await {
        assert!(
            !p.topic.contains("node-b") && !p.topic.contains("on-b"),
            "{p:?}"
        );
    }
    // Nothing of $SYS goes through NATS: node b never routed a message from a.
    let b_cluster = b.server.cluster().unwrap();
    assert_eq!(b_cluster.stats.received.load(Ordering::Relaxed), 0);
}
