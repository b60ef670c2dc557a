//! The configuration as `Config::load` builds it: layering, validation errors that name
//! their keys, and the generated file.

use super::*;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn defaults_are_valid_and_loopback() {
    let c = Config::load(None, Vec::new(), &Overrides::default()).unwrap();
    assert_eq!(c, Config::default());
    assert_eq!(c.listeners.mqtt, vec!["127.0.0.1:1883".parse().unwrap()]);
}

#[test]
fn layers_apply_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("herald.toml");
    std::fs::write(
        &file,
        "[limits]\nmax_packet_size = 2048\nmax_connections = 10\n[listeners]\nmqtt = [\"127.0.0.1:1999\"]\n",
    )
    .unwrap();
    let flags = Overrides {
        mqtt_listen: vec!["127.0.0.1:2000".parse().unwrap()],
        ..Default::default()
    };
    let c = Config::load(
        Some(&file),
        env(&[("HERALD_LIMITS_MAX_CONNECTIONS", "20"), ("PATH", "/bin")]),
        &flags,
    )
    .unwrap();
    assert_eq!(c.limits.max_packet_size, 2048, "file");
    assert_eq!(c.limits.max_connections, 20, "environment over file");
    assert_eq!(
        c.listeners.mqtt,
        vec!["127.0.0.1:2000".parse().unwrap()],
        "flag over file"
    );
    let c = Config::load(
        None,
        env(&[("HERALD_LISTENERS_MQTT", "127.0.0.1:1,127.0.0.2:2")]),
        &Overrides::default(),
    )
    .unwrap();
    assert_eq!(c.listeners.mqtt.len(), 2);
}

#[test]
fn errors_name_the_key() {
    let err = |e: Vec<(String, String)>| {
        Config::load(None, e, &Overrides::default())
            .unwrap_err()
            .to_string()
    };
    assert!(
        err(env(&[("HERALD_LIMITS_MAX_PACKET_SIZE", "10")])).starts_with("limits.max_packet_size:")
    );
    assert!(
        err(env(&[("HERALD_LIMITS_MAX_PACKET_SIZE", "lots")])).contains("limits.max_packet_size")
    );
    assert!(err(env(&[("HERALD_LIMITS_NO_SUCH", "1")])).contains("limits.no_such"));
    assert!(err(env(&[("HERALD_SESSION_MAXIMUM_QOS", "3")])).starts_with("session.maximum_qos:"));
    assert!(
        err(env(&[("HERALD_LIMITS_MAX_OUTBOX_BYTES", "0")]))
            .starts_with("limits.max_outbox_bytes:")
    );
    let public = err(env(&[("HERALD_LISTENERS_MQTT", "0.0.0.0:1883")]));
    assert!(
        public.starts_with("listeners.mqtt:") && public.contains("allow_anonymous_public"),
        "{public}"
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "[limits]\nmax_pakcet_size = 5\n").unwrap();
    let e = Config::load(Some(&file), Vec::new(), &Overrides::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("max_pakcet_size"), "{e}");
}

#[test]
fn the_http_api_needs_a_key_off_loopback() {
    let err = |e: Vec<(String, String)>| {
        Config::load(None, e, &Overrides::default())
            .unwrap_err()
            .to_string()
    };
    let e = err(env(&[("HERALD_HTTP_LISTEN", "0.0.0.0:8080")]));
    assert!(e.starts_with("http.api_keys:"), "{e}");
    let e = err(env(&[("HERALD_HTTP_LISTEN", "localhost")]));
    assert!(e.starts_with("http.listen:"), "{e}");
    let e = err(env(&[
        ("HERALD_HTTP_LISTEN", "0.0.0.0:8080"),
        ("HERALD_HTTP_API_KEYS", "short"),
    ]));
    assert!(
        e.starts_with("http.api_keys:") && e.contains("too easy"),
        "{e}"
    );
    let c = Config::load(
        None,
        env(&[
            ("HERALD_HTTP_LISTEN", "0.0.0.0:8080"),
            ("HERALD_HTTP_API_KEYS", "0123456789abcdef0123"),
        ]),
        &Overrides::default(),
    )
    .unwrap();
    assert_eq!(c.http.api_keys.len(), 1);
    let off = Config::load(
        None,
        env(&[("HERALD_HTTP_LISTEN", "")]),
        &Overrides::default(),
    )
    .unwrap();
    assert_eq!(off.http.addr(), None);
}

#[test]
fn tenant_keys_are_checked_and_count_as_keys() {
    let load = |toml: &str, e: &[(&str, &str)]| {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("herald.toml");
        std::fs::write(&file, toml).unwrap();
        Config::load(Some(&file), env(e), &Overrides::default())
    };
    let node = "n-0123456789abcdef";
    let c = load(
        &format!(
            "[http]\nlisten = \"0.0.0.0:8080\"\napi_keys = [\"{node}\"]\n\
             [http.tenant_keys]\nacme = [\"a-0123456789abcdef\", \"a-fedcba9876543210\"]\n\
             \"beta corp\" = [\"b-0123456789abcdef\"]\n"
        ),
        &[],
    )
    .unwrap();
    assert_eq!(c.http.tenant_keys["acme"].len(), 2);
    assert_eq!(c.http.tenant_keys["beta corp"].len(), 1);
    // Tenant keys alone are keys: the API may listen off loopback.
    let c = load(
        "[http]\nlisten = \"0.0.0.0:8080\"\ntenant_keys = { acme = [\"a-0123456789abcdef\"] }\n",
        &[],
    )
    .unwrap();
    assert!(c.http.has_keys());
    assert!(!Config::default().http.has_keys());
    // An empty list is no key.
    let e = load(
        "[http]\nlisten = \"0.0.0.0:8080\"\ntenant_keys = { acme = [] }\n",
        &[],
    )
    .unwrap_err();
    assert_eq!(e.key(), Some("http.api_keys"), "{e}");
    // A variable takes an inline table.
    let c = load(
        "",
        &[(
            "HERALD_HTTP_TENANT_KEYS",
            r#"{ acme = ["a-0123456789abcdef"] }"#,
        )],
    )
    .unwrap();
    assert_eq!(c.http.tenant_keys["acme"], ["a-0123456789abcdef"]);

    let refused = [
        (
            format!("api_keys = [\"{node}\"]\ntenant_keys = {{ acme = [\"{node}\"] }}"),
            "also in http.api_keys",
        ),
        (
            "tenant_keys = { acme = [\"a-0123456789abcdef\"], b = [\"a-0123456789abcdef\"] }"
                .to_string(),
            "also a key of tenant \"acme\"",
        ),
        (
            "tenant_keys = { acme = [\"a-0123456789abcdef\", \"a-0123456789abcdef\"] }".to_string(),
            "listed twice",
        ),
        (
            "tenant_keys = { acme = [\"short\"] }".to_string(),
            "too easy to guess",
        ),
        (
            "tenant_keys = { \"\" = [\"a-0123456789abcdef\"] }".to_string(),
            "not a tenant name",
        ),
        (
            format!(
                "tenant_keys = {{ {} = [\"a-0123456789abcdef\"] }}",
                "t".repeat(65)
            ),
            "not a tenant name",
        ),
        (
            "tenant_keys = { \"a\\u0007b\" = [\"a-0123456789abcdef\"] }".to_string(),
            "not a tenant name",
        ),
    ];
    for (http, says) in refused {
        let e = load(&format!("[http]\n{http}\n"), &[]).unwrap_err();
        assert_eq!(e.key(), Some("http.tenant_keys"), "{http}: {e}");
        assert!(e.to_string().contains(says), "{http}: {e}");
        // The key itself is never repeated in the message.
        assert!(!e.to_string().contains("0123456789abcdef"), "{e}");
    }
    // metrics_requires_key needs a node-wide key: tenant keys cannot open /metrics.
    let e = load(
        "[http]\nmetrics_requires_key = true\ntenant_keys = { acme = [\"a-0123456789abcdef\"] }\n",
        &[],
    )
    .unwrap_err();
    assert_eq!(e.key(), Some("http.metrics_requires_key"), "{e}");
}

#[test]
fn public_listener_with_explicit_consent() {
    let c = Config::load(
        None,
        env(&[
            ("HERALD_LISTENERS_MQTT", "0.0.0.0:1883"),
            ("HERALD_LISTENERS_ALLOW_ANONYMOUS_PUBLIC", "true"),
        ]),
        &Overrides::default(),
    )
    .unwrap();
    assert!(c.listeners.allow_anonymous_public);
}

#[test]
fn generated_file_is_the_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gen.toml");
    std::fs::write(&file, generate()).unwrap();
    let c = Config::load(Some(&file), Vec::new(), &Overrides::default()).unwrap();
    assert_eq!(c, Config::default());
    // Every key of the defaults is written out (commented defaults would hide drift).
    let table = toml::Table::try_from(Config::default()).unwrap();
    let generated: toml::Table = generate().parse().unwrap();
    assert_eq!(table, generated);
}

#[test]
fn public_listeners_once_authentication_is_configured() {
    let load = |pairs: &[(&str, &str)]| Config::load(None, env(pairs), &Overrides::default());
    let public = ("HERALD_LISTENERS_MQTT", "0.0.0.0:1883");
    // A method configured: anonymous clients are no longer admitted, the address is fine.
    let c = load(&[public, ("HERALD_AUTH_PASSWORD_FILE", "/etc/herald/passwd")]).unwrap();
    assert!(!c.auth.anonymous_on("mqtt", false));
    // Unless anonymous access is asked for on that listener.
    let e = load(&[
        public,
        ("HERALD_AUTH_PASSWORD_FILE", "/etc/herald/passwd"),
        ("HERALD_AUTH_ANONYMOUS", "mqtt"),
    ])
    .unwrap_err()
    .to_string();
    assert!(
        e.starts_with("listeners.mqtt:") && e.contains("auth.anonymous"),
        "{e}"
    );
    // A method listed but not configured names auth.order.
    let e = load(&[("HERALD_AUTH_ORDER", "jwt")]).unwrap_err();
    assert_eq!(e.key(), Some("auth.order"));
    // A listener kind that does not exist.
    let e = load(&[("HERALD_AUTH_ANONYMOUS", "udp")]).unwrap_err();
    assert_eq!(e.key(), Some("auth.anonymous"));
    // A tenant default out of range.
    let e = load(&[("HERALD_TENANTS_DEFAULTS_MAX_QOS", "3")]).unwrap_err();
    assert_eq!(e.key(), Some("tenants.defaults"), "{e}");
    // Sub-sections and optional keys from variables.
    let c = load(&[
        ("HERALD_AUTH_JWT_SECRET", "s3cret-of-some-length"),
        ("HERALD_AUTH_CALLOUT_TIMEOUT_MS", "750"),
        ("HERALD_TENANTS_DEFAULTS_MAX_CONNECTIONS", "10"),
        ("HERALD_TENANTS_DEFAULTS_PROTOCOLS", "5,3.1.1"),
    ])
    .unwrap();
    assert_eq!(c.auth.jwt.secret, "s3cret-of-some-length");
    assert_eq!(c.auth.callout.timeout_ms, 750);
    assert_eq!(c.tenants.defaults.max_connections, Some(10));
    let protocols = c.tenants.defaults.protocols.as_deref().unwrap();
    assert_eq!(protocols, ["5".to_string(), "3.1.1".to_string()]);
}

#[test]
fn cluster_settings_are_checked() {
    let load = |pairs: &[(&str, &str)]| Config::load(None, env(pairs), &Overrides::default());
    let c = load(&[
        (
            "HERALD_CLUSTER_NATS",
            "nats://127.0.0.1:4222,tls://nats.example:4222",
        ),
        ("HERALD_CLUSTER_NODE_ID", "node-1"),
    ])
    .unwrap();
    assert!(c.cluster.enabled());
    assert_eq!(c.cluster.nats.len(), 2);
    assert_eq!(c.cluster.node(), "node-1");
    assert!(!Config::default().cluster.enabled());
    assert!(super::valid_node_id(&Config::default().cluster.node()));
    for (pairs, key) in [
        (
            vec![("HERALD_CLUSTER_NATS", "127.0.0.1:4222")],
            "cluster.nats",
        ),
        (vec![("HERALD_CLUSTER_NODE_ID", "a.b")], "cluster.node_id"),
        (
            vec![("HERALD_CLUSTER_SUBJECT_PREFIX", "a..b")],
            "cluster.subject_prefix",
        ),
        (vec![("HERALD_CLUSTER_USER", "u")], "cluster.password"),
        (
            vec![("HERALD_CLUSTER_TLS_CERT_FILE", "c.pem")],
            "cluster.tls_key_file",
        ),
    ] {
        assert_eq!(load(&pairs).unwrap_err().key(), Some(key), "{pairs:?}");
    }
    // The flags win over the variables.
    let flags = Overrides {
        cluster: vec!["nats://10.0.0.1:4222".into()],
        node_id: Some("edge-7".into()),
        ..Overrides::default()
    };
    let c = Config::load(None, env(&[("HERALD_CLUSTER_NODE_ID", "x")]), &flags).unwrap();
    assert_eq!(
        (c.cluster.nats[0].as_str(), c.cluster.node_id.as_str()),
        ("nats://10.0.0.1:4222", "edge-7")
    );
}

#[test]
fn a_value_of_the_wrong_type_names_its_key_and_where_it_was_set() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("herald.toml");
    std::fs::write(
        &file,
        "# a comment\n[limits]\nmax_packet_size = 2048\nmax_connections = \"many\"\n",
    )
    .unwrap();
    let e = Config::load(Some(&file), Vec::new(), &Overrides::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("herald.toml line 4: limits.max_connections: invalid type"),
        "{e}"
    );

    std::fs::write(&file, "[listeners]\nproxy_protocol = [\"nope\"]\n").unwrap();
    let e = Config::load(Some(&file), Vec::new(), &Overrides::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("herald.toml line 2: listeners.proxy_protocol[0]: invalid socket address"),
        "{e}"
    );

    let e = Config::load(
        None,
        env(&[("HERALD_LISTENERS_PROXY_PROTOCOL", "[bad")]),
        &Overrides::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.starts_with("HERALD_LISTENERS_PROXY_PROTOCOL (listeners.proxy_protocol[0]): invalid"),
        "{e}"
    );
}
