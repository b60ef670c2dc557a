//! `herald ctl` as an operator runs it: the real binary against a real Herald (in this
//! process, or `herald serve` for what needs the process's own logger or ends it), each
//! command as a table and as `--json`, checked against what MQTT clients see; errors of the
//! API shown with their status and message; `HERALD_URL`, `HERALD_API_KEY`, `HERALD_TENANT`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "ctl/serve.rs"]
mod serve;
#[path = "ctl/tenants.rs"]
mod tenants;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::Raw;
use herald::config::{Config, Overrides, TenantRule};
use herald::reload::ConfigSource;
use mqtt_codec::ProtocolVersion::V5;
use mqtt_codec::{Connect, Packet, QoS, ReasonCode};
use serde_json::Value;

const NODE: &str = "node-key-0123456789";
const ACME: &str = "acme-key-0123456789";

/// A client id a path segment could not hold unescaped.
const ODD_ID: &str = "sensor/1 #a?b%";

/// How long one `herald ctl` may run before the test kills it and fails.
const CTL_DEADLINE: Duration = Duration::from_secs(30);

/// What a `herald ctl` run printed, and how it ended.
#[derive(Debug)]
struct Out {
    code: Option<i32>,
    stdout: Vec<u8>,
    stderr: String,
}

impl Out {
    /// Standard output of a successful run.
    fn ok(&self) -> String {
        assert_eq!(self.code, Some(0), "herald ctl failed: {self:?}");
        String::from_utf8(self.stdout.clone()).expect("UTF-8 output")
    }

    /// The JSON of a successful run.
    fn json(&self) -> Value {
        serde_json::from_str(&self.ok()).expect("JSON output")
    }

    /// Standard error of a failed run (exit status 1, nothing on standard output).
    fn failed(&self) -> &str {
        assert_eq!(self.code, Some(1), "herald ctl should fail: {self:?}");
        assert!(self.stdout.is_empty(), "{self:?}");
        &self.stderr
    }
}

/// A `herald ctl` command line: none of the caller's `HERALD_*` variables, no backtraces.
struct Ctl {
    command: Command,
    stdin: Vec<u8>,
}

impl Ctl {
    fn new(args: &[&str]) -> Ctl {
        let mut command = Command::new(env!("CARGO_BIN_EXE_herald"));
        command.arg("ctl").args(args);
        for var in ["HERALD_URL", "HERALD_API_KEY", "HERALD_TENANT"] {
            command.env_remove(var);
        }
        command.env("RUST_BACKTRACE", "0");
        Ctl {
            command,
            stdin: Vec::new(),
        }
    }

    /// `herald ctl --url http://<http> <args>`.
    fn at(http: SocketAddr, args: &[&str]) -> Ctl {
        let mut ctl = Ctl::new(args);
        ctl.command.arg("--url").arg(format!("http://{http}"));
        ctl
    }

    fn env(mut self, name: &str, value: &str) -> Ctl {
        self.command.env(name, value);
        self
    }

    fn stdin(mut self, bytes: &[u8]) -> Ctl {
        self.stdin = bytes.to_vec();
        self
    }

    /// Runs it on a blocking thread (the server in this process keeps running), killing it
    /// past `CTL_DEADLINE`.
    async fn run(self) -> Out {
        tokio::task::spawn_blocking(move || run_bounded(self))
            .await
            .unwrap()
    }
}

fn run_bounded(mut ctl: Ctl) -> Out {
    let mut child = ctl
        .command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("herald runs");
    let mut stdin = child.stdin.take().unwrap();
    let input = std::mem::take(&mut ctl.stdin);
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out_reader = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = stdout.read_to_end(&mut b);
        b
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > CTL_DEADLINE {
            let _ = child.kill();
            panic!("herald ctl ran past {CTL_DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    writer.join().unwrap();
    Out {
        code: status.code(),
        stdout: out_reader.join().unwrap(),
        stderr: err_reader.join().unwrap(),
    }
}

/// The line of a `name  value` list that starts with `name`.
fn field<'a>(text: &'a str, name: &str) -> &'a str {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with("  "))
        .map(|l| l[name.len()..].trim())
        .unwrap_or_else(|| panic!("no {name:?} in\n{text}"))
}

/// The table row whose first cell is `first`, split into cells (two spaces or more apart).
fn row(text: &str, first: &str) -> Option<Vec<String>> {
    text.lines()
        .map(|l| {
            l.split("  ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .find(|cells| cells.first().map(String::as_str) == Some(first))
}

fn api_config() -> Config {
    let mut c = common::config();
    c.http.listen = "127.0.0.1:0".into();
    c
}

/// The API with a node-wide key and a key of tenant `acme`; tenants from usernames
/// (`acme/alice` is in `acme`).
fn keyed_config() -> Config {
    let mut c = api_config();
    c.auth.tenant_from = TenantRule::UsernamePrefix;
    c.http.api_keys = vec![NODE.into()];
    c.http.tenant_keys = [("acme".to_string(), vec![ACME.to_string()])].into();
    c
}

async fn start(c: Config) -> (common::TestServer, SocketAddr) {
    let s = common::start_with(c).await;
    let http = s.server.http_addr().expect("the API listens");
    (s, http)
}

/// An MQTT 5 client `id` with `username`, its session kept for an hour.
async fn client(addr: SocketAddr, id: &str, username: Option<&str>) -> Raw {
    let mut connect = Connect::new(V5, id, 60);
    connect.username = username.map(Into::into);
    connect.properties.session_expiry_interval = Some(3600);
    let (raw, ack) = Raw::connect_with(addr, connect).await;
    assert_eq!(ack.reason_code, ReasonCode::Success, "{ack:?}");
    raw
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_health_readiness_counters_and_tenants() {
    let (s, http) = start(api_config()).await;
    let _probe = client(s.addr, "probe", None).await;

    let text = Ctl::at(http, &["status"]).run().await.ok();
    assert_eq!(field(&text, "herald"), format!("http://{http}"));
    assert_eq!(field(&text, "health"), "ok");
    assert_eq!(field(&text, "ready"), "yes");
    assert!(field(&text, "connections").starts_with("1 open"), "{text}");
    assert_eq!(field(&text, "sessions"), "1");
    let default = row(&text, "(default)").expect("the default tenant's line");
    assert_eq!(default[1..3], ["1", "1"], "connections, sessions: {text}");
    assert!(!text.contains("cluster"), "not clustered: {text}");

    let v = Ctl::at(http, &["status", "--json"]).run().await.json();
    assert_eq!(v["health"]["status"], "ok");
    assert_eq!(v["ready"]["ready"], true);
    assert_eq!(v["stats"]["connections"], 1);
    assert_eq!(v["stats"]["tenants"][0]["name"], "");
    assert_eq!(v["cluster"]["clustered"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_are_listed_filtered_and_paged() {
    let (s, http) = start(api_config()).await;
    let odd = ODD_ID;
    let _sensor = client(s.addr, odd, Some("alice")).await;
    let _other = client(s.addr, "other", None).await;

    let text = Ctl::at(http, &["clients", "list"]).run().await.ok();
    let cells = row(&text, odd).expect("the sensor's row");
    assert_eq!(cells[1..4], ["yes", "5.0", "alice"], "{text}");
    assert!(row(&text, "other").is_some(), "{text}");
    let only = Ctl::at(http, &["clients", "list", "--prefix", "sensor/"])
        .run()
        .await
        .ok();
    assert!(
        row(&only, odd).is_some() && row(&only, "other").is_none(),
        "{only}"
    );
    let v = Ctl::at(http, &["clients", "list", "--username", "alice", "--json"])
        .run()
        .await
        .json();
    assert_eq!(v["items"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["items"][0]["client_id"], odd);

    // Pages: one at a time, with the cursor to go on; or all of them.
    let first = Ctl::at(http, &["clients", "list", "--limit", "1", "--json"])
        .run()
        .await
        .json();
    assert_eq!(first["items"][0]["client_id"], "other");
    assert_eq!(first["next"], "other");
    let text = Ctl::at(http, &["clients", "list", "--limit", "1"])
        .run()
        .await
        .ok();
    assert!(text.contains("(more: add --after other"), "{text}");
    let second = Ctl::at(
        http,
        &["clients", "list", "--limit", "1", "--after", "other"],
    )
    .run()
    .await
    .ok();
    assert!(row(&second, odd).is_some() && row(&second, "other").is_none());
    let all = Ctl::at(
        http,
        &["clients", "list", "--all", "--limit", "1", "--json"],
    )
    .run()
    .await
    .json();
    let ids: Vec<&str> = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["client_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["other", odd]);
    assert_eq!(all["next"], Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_is_shown_disconnected_and_discarded() {
    let (s, http) = start(api_config()).await;
    let odd = ODD_ID;
    let mut sensor = client(s.addr, odd, Some("alice")).await;
    sensor.subscribe("plant/+/temp", QoS::AtLeastOnce).await;

    let text = Ctl::at(http, &["clients", "show", odd]).run().await.ok();
    assert_eq!(field(&text, "client id"), odd);
    assert_eq!(field(&text, "username"), "alice");
    assert_eq!(
        field(&text, "session"),
        "persistent, expires 1 h after the connection"
    );
    assert_eq!(
        row(&text, "plant/+/temp").expect("its subscription")[1],
        "1"
    );
    let v = Ctl::at(http, &["clients", "show", odd, "--json"])
        .run()
        .await
        .json();
    assert_eq!(v["subscriptions"][0]["filter"], "plant/+/temp");

    // Disconnected, the session kept: the client is told 0x98 and its session stays.
    let text = Ctl::at(http, &["clients", "disconnect", odd])
        .run()
        .await
        .ok();
    assert_eq!(text, format!("disconnected {odd}; its session is kept\n"));
    let closing = sensor.expect_closed().await;
    assert!(
        matches!(closing.as_slice(), [Packet::Disconnect(d)]
            if d.reason_code == ReasonCode::AdministrativeAction),
        "{closing:?}"
    );
    let v = Ctl::at(http, &["clients", "show", odd, "--json"])
        .run()
        .await
        .json();
    assert_eq!(v["connected"], false);
    // Then discarded: really gone.
    let v = Ctl::at(
        http,
        &["clients", "disconnect", odd, "--discard-session", "--json"],
    )
    .run()
    .await
    .json();
    assert_eq!(
        (&v["disconnected"], &v["session_discarded"]),
        (&false.into(), &true.into())
    );
    assert!(s.server.broker().default_tenant.sessions.get(odd).is_none());
    let err = Ctl::at(http, &["clients", "show", odd]).run().await;
    let err = err.failed();
    assert!(
        err.contains("404 Not Found")
            && err.contains("no session for client id")
            && err.contains("field client_id"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_are_listed_by_filter() {
    let (s, http) = start(api_config()).await;
    let mut a = client(s.addr, "a", None).await;
    a.subscribe("plant/+/temp", QoS::ExactlyOnce).await;
    let mut b = client(s.addr, "b", None).await;
    b.subscribe("office/#", QoS::AtMostOnce).await;

    let text = Ctl::at(http, &["subscriptions"]).run().await.ok();
    assert_eq!(
        row(&text, "plant/+/temp").unwrap()[1..3],
        ["a", "2"],
        "{text}"
    );
    assert_eq!(row(&text, "office/#").unwrap()[1..3], ["b", "0"], "{text}");
    let text = Ctl::at(http, &["subscriptions", "--filter", "plant/#"])
        .run()
        .await
        .ok();
    assert!(row(&text, "plant/+/temp").is_some() && row(&text, "office/#").is_none());
    let v = Ctl::at(http, &["subscriptions", "--filter", "office/#", "--json"])
        .run()
        .await
        .json();
    assert_eq!(v["items"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["items"][0]["client_id"], "b");
    let err = Ctl::at(http, &["subscriptions", "--filter", "a/#/b"])
        .run()
        .await;
    let err = err.failed();
    assert!(
        err.contains("400 Bad Request") && err.contains("field filter"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_messages_are_listed_read_and_deleted() {
    let (s, http) = start(api_config()).await;
    let mut publisher = Raw::connect(s.addr, V5, "publisher").await;
    publisher
        .publish("state/one two", b"text payload", QoS::AtLeastOnce, true)
        .await;
    // An empty level: the topic must travel whole in the path.
    publisher
        .publish("state//bin", &[0, 1, 2, 255], QoS::AtLeastOnce, true)
        .await;

    let text = Ctl::at(http, &["retained", "list"]).run().await.ok();
    assert_eq!(
        row(&text, "state/one two").unwrap()[1..],
        ["1", "12 B", "text payload"],
        "{text}"
    );
    assert_eq!(
        row(&text, "state//bin").unwrap()[3],
        "(binary; base64 AAEC/w==)"
    );
    let v = Ctl::at(http, &["retained", "list", "--filter", "state/+", "--json"])
        .run()
        .await
        .json();
    assert_eq!(v["items"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["items"][0]["payload"], "text payload");

    let text = Ctl::at(http, &["retained", "get", "state/one two"])
        .run()
        .await
        .ok();
    assert_eq!(field(&text, "payload"), "text payload");
    let v = Ctl::at(http, &["retained", "get", "state//bin", "--json"])
        .run()
        .await
        .json();
    assert_eq!(v["payload_base64"], "AAEC/w==");
    let raw = Ctl::at(http, &["retained", "get", "state//bin", "--raw"])
        .run()
        .await;
    assert_eq!(
        (raw.code, raw.stdout.as_slice()),
        (Some(0), &[0u8, 1, 2, 255][..])
    );

    let text = Ctl::at(http, &["retained", "delete", "state/one two"])
        .run()
        .await
        .ok();
    assert_eq!(text, "deleted the retained message on state/one two\n");
    // A new subscriber gets the retained message left, and not the one deleted.
    let mut late = Raw::connect(s.addr, V5, "late").await;
    late.subscribe("state/#", QoS::AtLeastOnce).await;
    let got = late.recv_publish().await;
    assert_eq!(
        (&*got.topic, &got.payload[..]),
        ("state//bin", &[0u8, 1, 2, 255][..])
    );
    late.expect_nothing().await;

    let err = Ctl::at(http, &["retained", "delete", "state/one two"])
        .run()
        .await;
    let err = err.failed();
    assert!(
        err.contains("404 Not Found") && err.contains("no retained message"),
        "{err}"
    );
    let err = Ctl::at(http, &["retained", "get", "state/one two"])
        .run()
        .await;
    assert!(
        err.failed()
            .contains("no retained message on \"state/one two\"")
    );
    let v = Ctl::at(http, &["retained", "delete", "state//bin", "--json"])
        .run()
        .await
        .json();
    assert_eq!(
        (&v["topic"], &v["deleted"]),
        (&"state//bin".into(), &true.into())
    );
    assert!(s.server.broker().default_tenant.retained.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_reaches_a_subscriber_with_its_properties_once_per_key() {
    let (s, http) = start(api_config()).await;
    let mut sub = client(s.addr, "sub", None).await;
    sub.subscribe("users/42/#", QoS::AtLeastOnce).await;

    let text = Ctl::at(
        http,
        &[
            "publish",
            "users/42/inbox",
            "hello from ctl",
            "-q",
            "1",
            "-u",
            "k=v",
            "-u",
            "k=w",
            "--content-type",
            "text/plain",
        ],
    )
    .run()
    .await
    .ok();
    assert_eq!(
        text,
        "published to users/42/inbox (QoS 1): 1 session matched\n"
    );
    let got = sub.recv_publish().await;
    assert_eq!(
        (&*got.topic, &got.payload[..]),
        ("users/42/inbox", &b"hello from ctl"[..])
    );
    assert_eq!(got.qos, QoS::AtLeastOnce);
    let props: Vec<(&str, &str)> = got
        .properties
        .user_properties
        .iter()
        .map(|(k, v)| (&**k, &**v))
        .collect();
    assert_eq!(props, [("k", "v"), ("k", "w")]);
    assert_eq!(got.properties.content_type.as_deref(), Some("text/plain"));
    sub.send(Packet::PubAck(mqtt_codec::Ack::new(got.packet_id)))
        .await;

    // The same idempotency key twice: the same answer, one message.
    let args = [
        "publish",
        "users/42/x",
        "once",
        "--idempotency-key",
        "order-1",
        "--json",
    ];
    let first = Ctl::at(http, &args).run().await.json();
    assert_eq!(first["matched"], 1);
    let again = Ctl::at(http, &args).run().await;
    assert_eq!(again.json(), first);
    assert!(again.stderr.contains("replayed"), "{again:?}");
    assert_eq!(&sub.recv_publish().await.payload[..], b"once");
    sub.expect_nothing().await;

    // Any bytes from standard input.
    let bin = [0u8, 159, 146, 150];
    Ctl::at(http, &["publish", "users/42/bin", "--stdin"])
        .stdin(&bin)
        .run()
        .await
        .ok();
    assert_eq!(&sub.recv_publish().await.payload[..], &bin);

    let err = Ctl::at(http, &["publish", "users/+", "x"]).run().await;
    let err = err.failed();
    assert!(
        err.contains("400 Bad Request") && err.contains("field topic") && err.contains("wildcard"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_name_the_status_and_message_and_unreachable_names_the_url() {
    let (_s, http) = start(keyed_config()).await;
    let err = Ctl::at(http, &["clients", "list"]).run().await;
    let err = err.failed();
    assert!(
        err.contains("401 Unauthorized") && err.contains("--api-key or HERALD_API_KEY"),
        "{err}"
    );
    let err = Ctl::at(
        http,
        &["clients", "list", "--api-key", "wrong-key-0123456789"],
    )
    .run()
    .await;
    let err = err.failed();
    assert!(
        err.contains("401 Unauthorized") && err.contains("was refused"),
        "{err}"
    );

    // Nothing listens on a port just freed.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = free.local_addr().unwrap().port();
    drop(free);
    let url = format!("http://127.0.0.1:{port}");
    let err = Ctl::new(&["status", "--url", &url]).run().await;
    let err = err.failed();
    assert!(
        err.contains(&format!("cannot reach Herald at {url}")),
        "{err}"
    );
    // Something that accepts and never answers: the deadline.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", silent.local_addr().unwrap());
    let err = Ctl::new(&["status", "--url", &url, "--timeout", "1"])
        .run()
        .await;
    assert!(err.failed().contains("within 1 s (--timeout)"), "{err:?}");
    let err = Ctl::new(&["status", "--url", "ftp://127.0.0.1"])
        .run()
        .await;
    assert!(
        err.failed().contains("not an http:// or https:// URL"),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_applies_a_changed_file_and_refuses_a_bad_one() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("herald.toml");
    std::fs::write(&file, "[limits]\nmax_packet_size = 1048576\n").unwrap();
    let env: Vec<(String, String)> = [
        ("HERALD_LISTENERS_MQTT", "127.0.0.1:0"),
        ("HERALD_LISTENERS_WS", ""),
        ("HERALD_STORE_IN_MEMORY", "true"),
        ("HERALD_HTTP_LISTEN", "127.0.0.1:0"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let config = Config::load(Some(&file), env.clone(), &Overrides::default()).unwrap();
    let (s, http) = start(config).await;
    s.server.set_config_source(ConfigSource {
        file: Some(file.clone()),
        env,
        overrides: Overrides::default(),
    });

    let v = Ctl::at(http, &["reload", "--json"]).run().await.json();
    assert_eq!(v["applied"], Value::Array(Vec::new()), "{v}");
    std::fs::write(&file, "[limits]\nmax_packet_size = 2048\n").unwrap();
    let text = Ctl::at(http, &["reload"]).run().await.ok();
    assert_eq!(
        text,
        "reloaded\napplied           limits.max_packet_size\nrestart required  none\n"
    );
    assert_eq!(s.server.broker().config().limits.max_packet_size, 2048);

    std::fs::write(&file, "[limits]\nmax_packet_size = 3\n").unwrap();
    let err = Ctl::at(http, &["reload"]).run().await;
    let err = err.failed();
    assert!(
        err.contains("400 Bad Request") && err.contains("field limits.max_packet_size"),
        "{err}"
    );
    assert_eq!(s.server.broker().config().limits.max_packet_size, 2048);

    // Inside this program Herald has no logger of its own to change.
    let text = Ctl::at(http, &["log"]).run().await.ok();
    assert!(text.starts_with("no log level"), "{text}");
    let err = Ctl::at(http, &["log", "set", "debug"]).run().await;
    assert!(err.failed().contains("409 Conflict"), "{err:?}");
}
