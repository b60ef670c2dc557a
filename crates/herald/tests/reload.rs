//! Live reload: new limits apply without a restart, a change that needs one is reported, an
//! invalid configuration is refused whole and the running one stays.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;

use common::Raw;
use herald::config::{Config, Overrides};
use herald::reload::ConfigSource;
use mqtt_codec::ProtocolVersion::V5;
use mqtt_codec::{Packet, QoS, ReasonCode};
use serde_json::Value;

async fn post_reload(http: SocketAddr) -> (u16, Value) {
    let r = common::http::request(http, "POST", "/api/v1/reload", &[], "").await;
    (r.status, r.json())
}

/// Herald on free loopback ports and in memory, configured from `file`, the variables
/// `extra` and those, and reloading from the same sources.
async fn start_reloadable(file: &std::path::Path, extra: &[(&str, &str)]) -> common::TestServer {
    let env: Vec<(String, String)> = [
        ("HERALD_LISTENERS_MQTT", "127.0.0.1:0"),
        ("HERALD_LISTENERS_WS", ""),
        ("HERALD_STORE_IN_MEMORY", "true"),
    ]
    .iter()
    .chain(extra)
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let config = Config::load(Some(file), env.clone(), &Overrides::default()).unwrap();
    let s = common::start_with(config).await;
    s.server.set_config_source(ConfigSource {
        file: Some(file.to_path_buf()),
        env,
        overrides: Overrides::default(),
    });
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_reload_live_and_bad_configurations_are_refused_whole() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("herald.toml");
    std::fs::write(&file, "[limits]\nmax_packet_size = 1048576\n").unwrap();
    let s = start_reloadable(&file, &[("HERALD_HTTP_LISTEN", "127.0.0.1:0")]).await;
    let http = s.server.http_addr().unwrap();
    let mut before = Raw::connect(s.addr, V5, "before").await;

    std::fs::write(
        &file,
        "[limits]\nmax_packet_size = 2048\n[session]\nmaximum_qos = 1\n[log]\nformat = \"json\"\n",
    )
    .unwrap();
    let (status, report) = post_reload(http).await;
    assert_eq!(status, 200, "{report}");
    let applied: Vec<&str> = report["applied"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        applied.contains(&"limits.max_packet_size") && applied.contains(&"session.maximum_qos"),
        "{report}"
    );
    assert_eq!(
        report["restart_required"],
        serde_json::json!(["log.format"])
    );
    assert_eq!(
        s.server.broker().config().log.format,
        "text",
        "the running value stays"
    );

    // A new connection gets the new limits.
    let (mut after, ack) =
        Raw::connect_with(s.addr, mqtt_codec::Connect::new(V5, "after", 60)).await;
    assert_eq!(ack.properties.maximum_packet_size, Some(2048));
    assert_eq!(ack.properties.maximum_qos, Some(QoS::AtLeastOnce));
    after
        .publish("big", &[0u8; 4096], QoS::AtMostOnce, false)
        .await;
    let closing = after.expect_closed().await;
    assert!(
        matches!(closing.last(), Some(Packet::Disconnect(d)) if d.reason_code == ReasonCode::PacketTooLarge),
        "{closing:?}"
    );
    // The connection made before keeps the limit it was told at CONNECT.
    before.subscribe("big", QoS::AtMostOnce).await;
    before
        .publish("big", &[7u8; 4096], QoS::AtMostOnce, false)
        .await;
    assert_eq!(before.recv_publish().await.payload.len(), 4096);

    // An invalid file is refused whole, naming the key; nothing changes.
    std::fs::write(
        &file,
        "[limits]\nmax_packet_size = 3\n[session]\nmaximum_qos = 0\n",
    )
    .unwrap();
    let (status, error) = post_reload(http).await;
    assert_eq!(status, 400, "{error}");
    assert_eq!(error["error"]["code"], "invalid_config");
    assert_eq!(error["error"]["field"], "limits.max_packet_size");
    let config = s.server.broker().config();
    assert_eq!(config.limits.max_packet_size, 2048);
    assert_eq!(config.session.maximum_qos, 1);
}

/// A reload that would leave the running API on a public address without API keys is
/// refused: `http.listen` needs a restart, so the running address is what is checked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_cannot_remove_the_keys_of_an_api_on_a_public_address() {
    const KEY: &str = "reload-test-key-0123456789";
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("herald.toml");
    // Every address of this machine (the test talks to it over loopback only), with a key.
    std::fs::write(
        &file,
        format!("[http]\nlisten = \"0.0.0.0:0\"\napi_keys = [\"{KEY}\"]\n"),
    )
    .unwrap();
    let s = start_reloadable(&file, &[]).await;
    let port = s.server.http_addr().unwrap().port();
    let http = SocketAddr::from(([127, 0, 0, 1], port));
    let auth = format!("Bearer {KEY}");

    // The file now names the loopback address and no keys: valid on its own.
    std::fs::write(&file, "[http]\nlisten = \"127.0.0.1:0\"\n").unwrap();
    let r = common::http::request(
        http,
        "POST",
        "/api/v1/reload",
        &[("Authorization", &auth)],
        "",
    )
    .await;
    assert_ne!(r.status, 200, "refused: {:?}", r.json());
    assert!(
        r.json().to_string().contains("http.api_keys"),
        "the error names the key: {:?}",
        r.json()
    );
    // The keys still guard the API.
    let r = common::http::request(http, "GET", "/api/v1/stats", &[], "").await;
    assert_eq!(r.status, 401);
    assert_eq!(
        s.server.broker().config().http.api_keys,
        vec![KEY.to_string()]
    );
    s.server.shutdown(common::WAIT).await;
}
