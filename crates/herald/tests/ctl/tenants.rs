//! Tenants through `herald ctl`: their settings, a node-wide key picking a tenant, a
//! tenant's key kept to its own; and the variables that stand for the flags.

use mqtt_codec::ProtocolVersion::V5;
use mqtt_codec::{Connect, ReasonCode};

use super::common::Raw;
use super::{ACME, Ctl, NODE, client, field, keyed_config, row, start};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_are_listed_set_shown_and_removed() {
    let (s, http) = start(keyed_config()).await;
    let ctl = |args: &[&str]| Ctl::at(http, &[&["--api-key", NODE][..], args].concat());

    let text = ctl(&["tenants", "set", "acme", "max_connections=2", "max_qos=1"])
        .run()
        .await
        .ok();
    assert!(text.starts_with("created tenant acme\n"), "{text}");
    assert_eq!(row(&text, "max_qos").unwrap()[1..], ["1", "1"], "{text}");
    assert_eq!(field(&text, "source"), "api");
    let v = ctl(&["tenants", "show", "acme", "--json"])
        .run()
        .await
        .json();
    assert_eq!(
        (&v["own"]["max_connections"], &v["known"]),
        (&2.into(), &true.into())
    );
    let text = ctl(&["tenants", "list"]).run().await.ok();
    assert_eq!(row(&text, "acme").unwrap()[1..3], ["yes", "api"], "{text}");
    let v = ctl(&["tenants", "list", "--json"]).run().await.json();
    let names: Vec<&str> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["", "acme"]);
    // The limit set is in force for MQTT clients.
    let _one = client(s.addr, "acme-1", Some("acme/alice")).await;
    let _two = client(s.addr, "acme-2", Some("acme/bob")).await;
    let mut third = Connect::new(V5, "acme-3", 60);
    third.username = Some("acme/carol".into());
    let (_, ack) = Raw::connect_with(s.addr, third).await;
    assert_eq!(ack.reason_code, ReasonCode::QuotaExceeded);

    let err = ctl(&["tenants", "set", "acme", "max_qos=5"]).run().await;
    let err = err.failed();
    assert!(
        err.contains("400 Bad Request") && err.contains("field max_qos"),
        "{err}"
    );
    let v = ctl(&["tenants", "delete", "acme", "--json"])
        .run()
        .await
        .json();
    assert_eq!(
        (&v["source"], &v["known"]),
        (&"defaults".into(), &false.into())
    );
    let err = ctl(&["tenants", "delete", "acme"]).run().await;
    assert!(err.failed().contains("404 Not Found"), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_key_picks_the_tenant_and_a_tenant_key_keeps_to_its_own() {
    let (s, http) = start(keyed_config()).await;
    let ctl = |args: &[&str]| Ctl::at(http, &[&["--api-key", NODE][..], args].concat());
    let _one = client(s.addr, "acme-1", Some("acme/alice")).await;
    let _two = client(s.addr, "acme-2", Some("acme/bob")).await;
    let _plain = client(s.addr, "plain-1", None).await;

    let text = ctl(&["clients", "list", "--tenant", "acme"])
        .run()
        .await
        .ok();
    assert!(
        row(&text, "acme-1").is_some() && row(&text, "plain-1").is_none(),
        "{text}"
    );
    let v = Ctl::at(http, &["clients", "list", "--json"])
        .env("HERALD_API_KEY", ACME)
        .run()
        .await
        .json();
    assert_eq!(v["items"].as_array().unwrap().len(), 2, "{v}");
    let text = Ctl::at(http, &["status"])
        .env("HERALD_API_KEY", ACME)
        .run()
        .await
        .ok();
    assert_eq!(field(&text, "tenant"), "acme");
    assert_eq!(field(&text, "connections"), "2");
    let err = Ctl::at(http, &["clients", "list"])
        .env("HERALD_API_KEY", ACME)
        .env("HERALD_TENANT", "globex")
        .run()
        .await;
    let err = err.failed();
    assert!(
        err.contains("403 Forbidden") && err.contains("field tenant"),
        "{err}"
    );
    let err = Ctl::at(http, &["drain", "--api-key", ACME]).run().await;
    let err = err.failed();
    assert!(
        err.contains("403 Forbidden") && err.contains("field Authorization"),
        "{err}"
    );
    assert!(!s.server.broker().draining());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_environment_gives_the_url_the_key_and_the_tenant() {
    let (s, http) = start(keyed_config()).await;
    let _c = client(s.addr, "acme-1", Some("acme/alice")).await;
    let url = format!("http://{http}");
    let v = Ctl::new(&["clients", "list", "--json"])
        .env("HERALD_URL", &url)
        .env("HERALD_API_KEY", NODE)
        .env("HERALD_TENANT", "acme")
        .run()
        .await
        .json();
    assert_eq!(v["items"][0]["client_id"], "acme-1", "{v}");
    // The default tenant, without HERALD_TENANT: no client there.
    let text = Ctl::new(&["clients", "list"])
        .env("HERALD_URL", &url)
        .env("HERALD_API_KEY", NODE)
        .run()
        .await
        .ok();
    assert_eq!(text, "no clients\n");
    // A flag wins over its variable.
    let out = Ctl::new(&["clients", "list", "--api-key", NODE])
        .env("HERALD_URL", &url)
        .env("HERALD_API_KEY", "wrong-key-0123456789")
        .run()
        .await;
    out.ok();
    let err = Ctl::new(&["clients", "list"])
        .env("HERALD_URL", &url)
        .env("HERALD_API_KEY", "wrong-key-0123456789")
        .run()
        .await;
    assert!(err.failed().contains("401 Unauthorized"), "{err:?}");
}
