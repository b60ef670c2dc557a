//! `/metrics`: every family Herald promises, in a format Prometheus' own parser reads, with
//! values that follow what clients do.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};

use common::Raw;
use mqtt_codec::ProtocolVersion::{V3_1_1, V5};
use mqtt_codec::QoS;

async fn scrape(addr: SocketAddr) -> String {
    let r = common::http::request(addr, "GET", "/metrics", &[], "").await;
    assert_eq!(r.status, 200);
    let kind = r.header("content-type").unwrap_or("");
    assert!(kind.contains("text/plain; version=0.0.4"), "{kind}");
    r.body
}

/// Samples by `name{labels}`, checking that each belongs to a family declared before it.
fn samples(text: &str) -> HashMap<String, f64> {
    let mut families = HashMap::new();
    let mut out = HashMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(name.starts_with("herald_"), "{name}");
            families.insert(name.to_string(), kind.to_string());
        } else if line.starts_with('#') || line.is_empty() {
        } else {
            let (key, value) = line.rsplit_once(' ').unwrap();
            let name = key.split('{').next().unwrap();
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| {
                    name.strip_suffix(s)
                        .filter(|f| families.get(*f).is_some_and(|k| k == "histogram"))
                })
                .unwrap_or(name);
            assert!(families.contains_key(family), "{name} has no TYPE line");
            if families[family] == "counter" {
                assert!(
                    family.ends_with("_total"),
                    "counter {family} must end in _total"
                );
            }
            out.insert(key.to_string(), value.parse::<f64>().unwrap());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_cover_connections_traffic_messages_store_and_process() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = common::config();
    c.http.listen = "127.0.0.1:0".into();
    c.store.in_memory = false;
    c.store.data_dir = dir.path().to_path_buf();
    c.store.min_free_disk_bytes = 0;
    let s = common::start_with(c).await;
    let http = s.server.http_addr().unwrap();

    let mut sub = Raw::connect(s.addr, V5, "sub").await;
    sub.subscribe("m/#", QoS::AtLeastOnce).await;
    let mut publ = Raw::connect(s.addr, V3_1_1, "pub").await;
    for i in 0..10u8 {
        publ.publish("m/x", &[i], QoS::AtLeastOnce, false).await;
    }
    publ.publish("m/r", b"kept", QoS::AtMostOnce, true).await;
    for _ in 0..11 {
        let p = sub.recv_publish().await;
        if p.qos == QoS::AtLeastOnce {
            sub.send(mqtt_codec::Packet::PubAck(mqtt_codec::Ack::new(
                p.packet_id,
            )))
            .await;
        }
    }
    common::ping(&mut publ).await;

    let text = scrape(http).await;
    let m = samples(&text);
    let get = |k: &str| *m.get(k).unwrap_or_else(|| panic!("no sample {k}"));
    assert_eq!(
        get(r#"herald_connections{listener="mqtt",protocol="5.0"}"#),
        1.0
    );
    assert_eq!(
        get(r#"herald_connections{listener="mqtt",protocol="3.1.1"}"#),
        1.0
    );
    assert_eq!(
        get(r#"herald_connections{listener="wss",protocol="5.0"}"#),
        0.0
    );
    assert_eq!(
        get(r#"herald_connections_accepted_total{listener="mqtt"}"#),
        2.0
    );
    assert_eq!(
        get(r#"herald_packets_received_total{type="publish"}"#),
        11.0
    );
    assert_eq!(get(r#"herald_packets_received_total{type="connect"}"#), 2.0);
    assert!(get(r#"herald_packets_received_total{type="puback"}"#) >= 10.0);
    assert_eq!(get(r#"herald_packets_sent_total{type="publish"}"#), 11.0);
    assert_eq!(get(r#"herald_packets_sent_total{type="connack"}"#), 2.0);
    // Publish bytes: 11 PUBLISH packets each way, a 4-byte topic and a 1 to 4 byte payload.
    let received = get(r#"herald_received_bytes_total{type="publish"}"#);
    assert!((11.0 * 8.0..=11.0 * 16.0).contains(&received), "{received}");
    assert!(get(r#"herald_sent_bytes_total{type="publish"}"#) >= 11.0 * 8.0);
    assert!(get(r#"herald_sent_bytes_total{type="connack"}"#) > 0.0);
    assert!(get(r#"herald_received_bytes_total{type="connect"}"#) > 20.0);
    assert_eq!(get("herald_messages_published_total"), 11.0);
    assert_eq!(get("herald_messages_delivered_total"), 11.0);
    // Sampled: the first delivery of each write batch and every 16th after it.
    let timed = get("herald_delivery_latency_seconds_count");
    assert!((1.0..=11.0).contains(&timed), "{timed}");
    assert_eq!(
        get(r#"herald_delivery_latency_seconds_bucket{le="+Inf"}"#),
        timed
    );
    assert_eq!(get("herald_retained_messages"), 1.0);
    assert_eq!(get("herald_subscriptions"), 1.0);
    assert_eq!(get("herald_sessions"), 2.0);
    assert_eq!(get("herald_messages_inflight"), 0.0);
    assert!(get("herald_store_write_seconds_count") >= 1.0);
    assert!(get(r#"herald_store_batch_ops_bucket{le="+Inf"}"#) >= 1.0);
    assert!(get("herald_store_disk_bytes") > 0.0);
    assert!(get("herald_process_open_fds") >= 3.0);
    assert!(get("herald_process_max_fds") >= get("herald_process_open_fds"));
    assert!(get("herald_process_resident_memory_bytes") > 1e6);
    assert!(get("herald_process_cpu_seconds_total") > 0.0);
    for reason in [
        "client_disconnect",
        "keep_alive_timeout",
        "tls_handshake_failed",
    ] {
        get(&format!(
            "herald_connections_closed_total{{reason=\"{reason}\"}}"
        ));
    }
    get(r#"herald_messages_dropped_total{reason="queue_full"}"#);

    // A client leaving is seen at once.
    publ.disconnect().await;
    common::eventually("the gauge follows", || {
        s.server
            .broker()
            .stats
            .closes(herald::broker::stats::CloseReason::ClientDisconnect)
            == 1
    })
    .await;
    let m = samples(&scrape(http).await);
    assert_eq!(
        m[r#"herald_connections{listener="mqtt",protocol="3.1.1"}"#],
        0.0
    );
    assert_eq!(
        m[r#"herald_connections_closed_total{reason="client_disconnect"}"#],
        1.0
    );

    // And Prometheus' own parser reads all of it.
    let mut py = Command::new("python3")
        .args([
            "-c",
            "import sys\nfrom prometheus_client.parser import text_string_to_metric_families as parse\n\
             families = list(parse(sys.stdin.read()))\nprint(len(families))",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    py.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = py.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "prometheus_client (pip package prometheus-client; scripts/test installs it) \
         could not parse /metrics: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let families: usize = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    assert!(families >= 25, "{families} families");
}
