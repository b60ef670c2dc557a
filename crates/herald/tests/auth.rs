//! Authentication and ACLs with real clients: mosquitto_pub/mosquitto_sub against a password
//! file mosquitto_passwd wrote (and a user `herald passwd` adds while Herald runs), Python
//! paho with a JWT carrying its tenant and rules, an HTTP callout served by a real server,
//! and an ACL file in mosquitto's format with placeholders: deny codes in 3.1.1 and 5.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "jwt_support/mod.rs"]
mod jwt_support;

use std::process::Output;
use std::time::Duration;

use common::Raw;
use herald::auth::DenyReason;
use mqtt_codec::ProtocolVersion::{V3_1_1, V5};
use mqtt_codec::{Connect, Packet, Publish, QoS, ReasonCode};
use serde_json::{Value, json};

/// Runs a client program to its end (bounded by its own `-W` timeout or ours), without
/// holding up the runtime Herald runs on.
async fn run(program: &str, args: &[&str]) -> Output {
    let found = std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()));
    assert!(
        found,
        "{program} is not on PATH: apt-get install mosquitto mosquitto-clients python3 \
         (scripts/test does)"
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

fn text(o: &Output) -> String {
    format!(
        "status {}\nstdout: {}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn gate(s: &common::TestServer) -> &herald::auth::Gate {
    s.server.gate().expect("a gate is installed")
}

/// mosquitto_pub with `-u`/`-P` (none when `user` is `None`); its output.
async fn publish(port: u16, user: Option<(&str, &str)>, version: &str, topic: &str) -> Output {
    let port = port.to_string();
    let mut args = vec!["-h", "127.0.0.1", "-p", &port, "-V", version, "-t", topic];
    args.extend(["-m", "hello", "-q", "1", "-i", "pub"]);
    if let Some((u, p)) = user {
        args.extend(["-u", u, "-P", p]);
    }
    run("mosquitto_pub", &args).await
}

#[tokio::test]
async fn mosquitto_clients_with_mosquittos_password_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("passwd");
    let f = file.to_str().unwrap();
    let made = run("mosquitto_passwd", &["-c", "-b", f, "alice", "wonderland"]).await;
    assert!(made.status.success(), "{}", text(&made));
    let made = run(
        "mosquitto_passwd",
        &["-b", "-H", "sha512", f, "bob", "builder"],
    )
    .await;
    assert!(made.status.success(), "{}", text(&made));

    let mut c = common::config();
    c.auth.password_file = file.clone();
    c.auth.password_file_watch_secs = 1;
    let s = common::start_with(c).await;
    let port = s.addr.port().to_string();

    // alice ($7$) subscribes; bob ($6$) publishes to her.
    let sub = tokio::spawn({
        let port = port.clone();
        async move {
            run(
                "mosquitto_sub",
                &[
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &port,
                    "-u",
                    "alice",
                    "-P",
                    "wonderland",
                    "-t",
                    "x/#",
                    "-C",
                    "1",
                    "-W",
                    "10",
                    "-v",
                    "-i",
                    "sub",
                ],
            )
            .await
        }
    });
    common::eventually("alice subscribed", || {
        s.server
            .broker()
            .default_tenant
            .sessions
            .get("sub")
            .is_some_and(|session| !session.lock().subscriptions().is_empty())
    })
    .await;
    for version in ["mqttv311", "mqttv5"] {
        let sent = publish(s.addr.port(), Some(("bob", "builder")), version, "x/1").await;
        assert!(sent.status.success(), "{version}: {}", text(&sent));
    }
    let got = sub.await.unwrap();
    assert!(got.status.success(), "{}", text(&got));
    assert_eq!(String::from_utf8_lossy(&got.stdout).trim(), "x/1 hello");

    // A wrong password, an unknown user and no credentials are refused, in both versions.
    for version in ["mqttv311", "mqttv5"] {
        for user in [Some(("bob", "wrong")), Some(("mallory", "x")), None] {
            let refused = publish(s.addr.port(), user, version, "x/1").await;
            assert!(
                !refused.status.success(),
                "{version} {user:?}: {}",
                text(&refused)
            );
        }
    }
    let g = gate(&s);
    assert_eq!(g.stats.refused(DenyReason::BadPassword), 2);
    assert_eq!(g.stats.refused(DenyReason::UnknownUser), 2);
    assert_eq!(g.stats.refused(DenyReason::NotAuthorized), 2);

    // `herald passwd` adds a user while Herald runs: the file is watched.
    let added = std::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["passwd", "-b", f, "carol", "s3cret-carol"])
        .output()
        .unwrap();
    assert!(added.status.success(), "{}", text(&added));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let carol = publish(
            s.addr.port(),
            Some(("carol", "s3cret-carol")),
            "mqttv5",
            "x/2",
        )
        .await;
        if carol.status.success() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "carol never got in: {}",
            text(&carol)
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Connects a v5 or 3.1.1 client with `username`/`password`; the CONNACK's code.
async fn connack(addr: std::net::SocketAddr, v5: bool, user: &str, password: &[u8]) -> ReasonCode {
    let mut c = Connect::new(if v5 { V5 } else { V3_1_1 }, "probe", 30);
    c.username = Some(user.into());
    c.password = Some(password.to_vec().into());
    Raw::connect_with(addr, c).await.1.reason_code
}

#[tokio::test]
async fn paho_with_a_jwt_carrying_its_tenant_and_rules() {
    let mut c = common::config();
    c.auth.jwt.secret = jwt_support::SECRET.into();
    let s = common::start_with(c).await;
    let signer = jwt_support::Signer::Hmac(jwt_support::SECRET.as_bytes().to_vec());
    let token = signer.token(
        "HS256",
        None,
        json!({
            "sub": "alice", "tenant": "acme", "exp": jwt_support::now() + 600,
            "acl": {"pub": ["devices/%u/#"], "sub": ["devices/%u/#", "public/#"]}
        }),
    );
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/paho_auth.py");
    let out = run(
        "python3",
        &[
            script,
            &s.addr.port().to_string(),
            &token,
            "devices/alice/#,devices/bob/#,#",
            "devices/alice/t,devices/bob/t",
        ],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    let r: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{}", text(&out)));
    assert_eq!(r["connack"], 0, "{r}");
    // Its own devices/alice/#: granted; bob's and `#`: not authorized (0x87).
    assert_eq!(r["granted"], json!([1, 0x87, 0x87]), "{r}");
    // Publishing to its own topic: accepted; to bob's: 0x87.
    assert_eq!(r["acked"], json!([0, 0x87]), "{r}");
    assert_eq!(
        r["received"],
        json!([["devices/alice/t", "from paho to devices/alice/t"]]),
        "{r}"
    );
    // Its tenant is the token's: created when it connected.
    assert!(s.server.broker().find_tenant("acme").is_some());
    let admitted = &gate(&s).stats.admitted;
    let (_, jwt) = admitted.iter().find(|(m, _)| *m == "jwt").unwrap();
    assert_eq!(jwt.load(std::sync::atomic::Ordering::Relaxed), 1);

    // Refusals: a bad signature, an expired token.
    let forged = jwt_support::Signer::Hmac(b"another secret of thirty-two bytes!!".to_vec()).token(
        "HS256",
        None,
        json!({"sub": "alice", "exp": jwt_support::now() + 600}),
    );
    let expired = signer.token("HS256", None, json!({"sub": "alice", "exp": 1_000_000}));
    for (v5, code) in [
        (true, ReasonCode::BadUserNameOrPassword),
        (false, ReasonCode::BadUserNameOrPassword),
    ] {
        assert_eq!(connack(s.addr, v5, "x", forged.as_bytes()).await, code);
        assert_eq!(connack(s.addr, v5, "x", expired.as_bytes()).await, code);
    }
    let g = gate(&s);
    assert_eq!(g.stats.refused(DenyReason::BadToken), 2);
    assert_eq!(g.stats.refused(DenyReason::TokenExpired), 2);
    assert_eq!(
        g.stats
            .denied_subscribe
            .load(std::sync::atomic::Ordering::Relaxed),
        2
    );
    assert_eq!(
        g.stats
            .denied_publish
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

/// A client of the ACL tests: `username` as given (no method is configured, so Herald takes
/// it on loopback), `id` as its client id.
async fn client(addr: std::net::SocketAddr, v5: bool, username: &str, id: &str) -> Raw {
    let mut c = Connect::new(if v5 { V5 } else { V3_1_1 }, id, 30);
    c.username = Some(username.into());
    let (raw, ack) = Raw::connect_with(addr, c).await;
    assert_eq!(ack.reason_code, ReasonCode::Success, "{ack:?}");
    raw
}

/// Publishes QoS 1; the PUBACK's reason code.
async fn puback(c: &mut Raw, topic: &str) -> ReasonCode {
    let mut p = Publish::new(topic, b"m".to_vec());
    p.qos = QoS::AtLeastOnce;
    p.packet_id = c.next_id();
    c.send(Packet::Publish(p)).await;
    match c.recv().await {
        Packet::PubAck(a) => a.reason_code,
        other => panic!("expected PUBACK, got {other:?}"),
    }
}

const RULES: &str = "\
# anonymous clients: nothing
user alice
topic read public/#
topic write chat/alice/#
pattern readwrite devices/%u/%c/#
pattern read news/%t
";

#[tokio::test]
async fn an_acl_file_in_mosquittos_format() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("acl");
    std::fs::write(&file, RULES).unwrap();
    let mut c = common::config();
    c.acl.file = file.clone();
    c.acl.watch_secs = 1;
    let s = common::start_with(c).await;

    let mut a = client(s.addr, true, "alice", "c1").await;
    let codes = [
        ("public/#", ReasonCode::GrantedQoS1),
        ("devices/alice/c1/#", ReasonCode::GrantedQoS1),
        ("$share/g/public/x", ReasonCode::GrantedQoS1),
        // Wider than the rules: refused whole, not granted in part.
        ("#", ReasonCode::NotAuthorized),
        ("public/+/../#", ReasonCode::GrantedQoS1),
        ("devices/alice/c2/#", ReasonCode::NotAuthorized),
        ("devices/bob/c1/x", ReasonCode::NotAuthorized),
        ("news/", ReasonCode::NotAuthorized),
    ];
    for (filter, code) in codes {
        assert_eq!(
            a.subscribe(filter, QoS::AtLeastOnce).await,
            [code],
            "{filter}"
        );
    }
    // Publications from another of alice's clients (a subscribes; p publishes).
    let mut p = client(s.addr, true, "alice", "c5").await;
    let published = puback(&mut p, "devices/alice/c5/t").await;
    assert_eq!(published, ReasonCode::NoMatchingSubscribers);
    for denied in ["public/x", "chat/bob/x", "devices/alice/c1/t"] {
        let code = puback(&mut p, denied).await;
        assert_eq!(code, ReasonCode::NotAuthorized, "{denied}");
    }
    // QoS 0: dropped (and counted), nothing to answer.
    p.publish("public/x", b"q0", QoS::AtMostOnce, false).await;
    a.expect_nothing().await;
    let published = puback(&mut p, "chat/alice/1").await;
    assert_eq!(published, ReasonCode::NoMatchingSubscribers);

    // 3.1.1: a denied filter is 0x80; a denied PUBLISH is acknowledged and dropped.
    let mut old = client(s.addr, false, "alice", "c3").await;
    assert_eq!(
        old.subscribe("#", QoS::AtLeastOnce).await,
        [ReasonCode::UnspecifiedError]
    );
    old.publish("public/y", b"dropped", QoS::AtLeastOnce, false)
        .await;
    a.expect_nothing().await;
    let stats = &gate(&s).stats;
    let denied = |n: &std::sync::atomic::AtomicU64| n.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(denied(&stats.denied_subscribe), 5);
    assert_eq!(denied(&stats.denied_publish), 5);

    // A rules change is picked up by the watch and drops the cached decisions: alice's
    // earlier refusal of public/x does not outlive it.
    std::fs::write(&file, format!("{RULES}user alice\ntopic write public/#\n")).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while puback(&mut p, "public/x").await != ReasonCode::Success {
        assert!(
            std::time::Instant::now() < deadline,
            "the new rules never applied"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(a.recv_publish().await.topic, "public/x");
    // A rules file that does not parse keeps the rules in force.
    std::fs::write(&file, "topic sideways a/b\n").unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(puback(&mut p, "public/x").await, ReasonCode::Success);
    assert_eq!(a.recv_publish().await.topic, "public/x");

    // Rules that no longer let alice read public/#: her connected client loses that
    // subscription at its next packet (here a PINGREQ), and public/x reaches it no more.
    let narrower = "user alice\ntopic write public/#\npattern readwrite devices/%u/%c/#\n";
    std::fs::write(&file, narrower).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while puback(&mut p, "chat/alice/1").await != ReasonCode::NotAuthorized {
        assert!(
            std::time::Instant::now() < deadline,
            "the narrower rules never applied"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // (What was delivered before the change: the other copies of public/x.)
    common::drain(&mut a, 0).await;
    common::ping(&mut a).await;
    let held = |filter: &str| {
        let session = s.server.broker().default_tenant.sessions.get("c1").unwrap();
        let st = session.lock();
        st.subscriptions().contains_key(filter)
    };
    assert!(!held("public/#") && !held("$share/g/public/x"));
    assert!(
        held("devices/alice/c1/#"),
        "what the rules still allow stays"
    );
    let published = puback(&mut p, "public/x").await;
    assert_eq!(published, ReasonCode::NoMatchingSubscribers);
    a.expect_nothing().await;

    // The other choice for 3.1.1: a denied PUBLISH closes the connection.
    std::fs::write(&file, RULES).unwrap();
    let mut c = common::config();
    c.acl.file = file;
    c.acl.v3_publish_denied = herald::config::V3Denied::Disconnect;
    let s2 = common::start_with(c).await;
    let mut strict = client(s2.addr, false, "alice", "c4").await;
    let mut p = Publish::new("public/z", b"no".to_vec());
    p.qos = QoS::AtLeastOnce;
    p.packet_id = 1;
    strict.send(Packet::Publish(p)).await;
    assert!(
        strict.expect_closed().await.is_empty(),
        "closed unacknowledged"
    );
}

/// The callout: a real HTTP server decides; its answer carries the tenant and the rules;
/// 2,000 concurrent CONNECTs of one user (different client ids) cost it one request; a
/// callout that cannot be reached is 0x88 (3.1.1: return code 3).
#[tokio::test]
async fn an_http_callout_decides_once_for_a_storm() {
    use axum::routing::post;
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = calls.clone();
    let app = axum::Router::new().route(
        "/auth",
        post(move |body: String| {
            let calls = counted.clone();
            async move {
                calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                // Slow enough that the storm's look-ups overlap.
                tokio::time::sleep(Duration::from_millis(300)).await;
                let req: Value = serde_json::from_str(&body).unwrap();
                let answer = if req["password"] == "open sesame" {
                    json!({"result": "allow", "tenant": "storm",
                           "acl": {"pub": ["t/%c"], "sub": ["t/#"]}})
                } else {
                    json!({"result": "deny"})
                };
                (
                    [(axum::http::header::CACHE_CONTROL, "max-age=60")],
                    axum::Json(answer),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/auth", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let mut c = common::config();
    c.auth.callout.url = url;
    c.auth.callout.timeout_ms = 5000;
    c.limits.connect_timeout_secs = 30;
    let s = common::start_with(c).await;
    let connects = (0..2000).map(|i| {
        let addr = s.addr;
        tokio::spawn(async move {
            let mut c = Connect::new(V5, format!("dev-{i}").as_str(), 60);
            c.username = Some("fleet".into());
            c.password = Some(b"open sesame".to_vec().into());
            let (raw, ack) = Raw::connect_with(addr, c).await;
            (raw, ack.reason_code)
        })
    });
    let mut clients = Vec::new();
    for connect in connects {
        let (raw, code) = connect.await.unwrap();
        assert_eq!(code, ReasonCode::Success);
        clients.push(raw);
    }
    assert_eq!(
        calls.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "one request for 2,000"
    );
    let storm = s
        .server
        .broker()
        .find_tenant("storm")
        .expect("the callout's tenant");
    assert_eq!(storm.sessions.get("dev-7").map(|_| ()), Some(()));
    // The answer's rules hold: a device publishes to its own topic only.
    let d = &mut clients[7];
    assert_eq!(
        puback(d, "t/dev-7").await,
        ReasonCode::NoMatchingSubscribers
    );
    assert_eq!(puback(d, "t/dev-8").await, ReasonCode::NotAuthorized);
    drop(clients);

    // A denial: 0x87, and a 3.1.1 client gets return code 5 (not authorized).
    assert_eq!(
        connack(s.addr, true, "fleet", b"wrong").await,
        ReasonCode::NotAuthorized
    );
    assert_eq!(
        connack(s.addr, false, "fleet", b"wrong").await,
        ReasonCode::NotAuthorized
    );

    // An unreachable callout: 0x88 Server unavailable.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut c = common::config();
    c.auth.callout.url = format!("http://{}/auth", closed.local_addr().unwrap());
    drop(closed);
    let s = common::start_with(c).await;
    assert_eq!(
        connack(s.addr, true, "x", b"y").await,
        ReasonCode::ServerUnavailable
    );
    assert_eq!(
        connack(s.addr, false, "x", b"y").await,
        ReasonCode::ServerUnavailable
    );
    assert_eq!(gate(&s).stats.refused(DenyReason::CalloutUnavailable), 2);
}
