//! Interoperability with third-party MQTT clients, MQTT 3.1.1 and 5.0: delivery at QoS 0, 1
//! and 2 (both specs §4.3), retained messages (§3.3.1.3), wills (§3.1.2.5 / §3.1.2-8..10),
//! and persistent sessions getting the QoS 1 messages published while they were offline
//! (3.1.1 §3.1.2.4, 5.0 §3.1.2.4 and §3.1.2.11.2), with three independent implementations:
//!
//! - rumqttc (a dev-dependency): its v4 (3.1.1) `AsyncClient` and its v5 client, in process;
//! - `mosquitto_pub` / `mosquitto_sub` (Debian package mosquitto-clients), run as processes;
//! - Python paho-mqtt, through `tests/interop/paho_client.py`.
//!
//! A missing tool fails its test with the command that installs it (scripts/test installs
//! them all). Every process has a deadline and is killed past it, so a hung client fails the
//! test instead of hanging it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use herald::broker::stats::CloseReason;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// How long a client process may run before it is killed and its test fails.
const PROC_WAIT: Duration = Duration::from_secs(10);
/// The paho script runs every scenario for both versions (its own watchdog is 20 s).
const PAHO_WAIT: Duration = Duration::from_secs(25);

/// A message as a client reported it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Msg {
    topic: String,
    payload: String,
    qos: u8,
    retain: bool,
}

fn msg(topic: &str, payload: &str, qos: u8, retain: bool) -> Msg {
    Msg {
        topic: topic.into(),
        payload: payload.into(),
        qos,
        retain,
    }
}

/// Waits until Herald has counted `n` connections closed by a normal DISCONNECT: by then it
/// has handled the DISCONNECT (will discarded) and the session is offline.
async fn normal_disconnects(s: &TestServer, n: u64) {
    let deadline = Instant::now() + WAIT;
    while s
        .server
        .broker()
        .stats
        .closes(CloseReason::ClientDisconnect)
        < n
    {
        assert!(
            Instant::now() < deadline,
            "Herald did not count {n} normal DISCONNECTs within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// rumqttc, v4 and v5: the same scenarios, generated for each client by a macro.

macro_rules! rumqttc_tests {
    ($module:ident, { $($items:item)* }) => {
        mod $module {
            use super::*;
            use rumqttc::Outgoing;

            $($items)*

            /// A rumqttc client whose event loop runs on a task that forwards its events and
            /// stops at the first error (so the client never reconnects by itself).
            struct Peer {
                client: AsyncClient,
                events: mpsc::UnboundedReceiver<Result<Event, String>>,
                task: tokio::task::JoinHandle<()>,
            }

            impl Peer {
                /// Connects; asserts CONNACK success and returns it.
                async fn connect(options: MqttOptions) -> (Peer, ConnAck) {
                    let (client, mut eventloop) = AsyncClient::new(options, 16);
                    let (tx, events) = mpsc::unbounded_channel();
                    let task = tokio::spawn(async move {
                        loop {
                            let event = eventloop.poll().await.map_err(|e| e.to_string());
                            let failed = event.is_err();
                            if tx.send(event).is_err() || failed {
                                return;
                            }
                        }
                    });
                    let mut peer = Peer { client, events, task };
                    let ack = peer
                        .incoming("CONNACK", |p| match p {
                            Packet::ConnAck(a) => Some(a.clone()),
                            _ => None,
                        })
                        .await;
                    assert_eq!(ack.code, ConnectReturnCode::Success, "{ack:?}");
                    (peer, ack)
                }

                /// Skips events until `pick` accepts one; fails on a connection error or
                /// after `WAIT`.
                async fn event<T>(
                    &mut self,
                    what: &str,
                    mut pick: impl FnMut(&Event) -> Option<T>,
                ) -> T {
                    let deadline = Instant::now() + WAIT;
                    loop {
                        let event = tokio::time::timeout_at(deadline, self.events.recv())
                            .await
                            .unwrap_or_else(|_| panic!("no {what} within {WAIT:?}"))
                            .unwrap_or_else(|| panic!("event loop gone before {what}"))
                            .unwrap_or_else(|e| panic!("connection failed before {what}: {e}"));
                        if let Some(t) = pick(&event) {
                            return t;
                        }
                    }
                }

                async fn incoming<T>(
                    &mut self,
                    what: &str,
                    mut pick: impl FnMut(&Packet) -> Option<T>,
                ) -> T {
                    self.event(what, |e| match e {
                        Event::Incoming(p) => pick(p),
                        _ => None,
                    })
                    .await
                }

                /// Subscribes; asserts the SUBACK grants `qos`.
                async fn subscribe(&mut self, filter: &str, qos: QoS) {
                    self.client.subscribe(filter, qos).await.unwrap();
                    let codes = self
                        .incoming("SUBACK", |p| match p {
                            Packet::SubAck(a) => Some(a.return_codes.clone()),
                            _ => None,
                        })
                        .await;
                    assert_eq!(codes, vec![SubscribeReasonCode::Success(qos)], "{filter}");
                }

                /// Publishes; for QoS 1 waits for PUBACK, for QoS 2 for PUBREC then PUBCOMP.
                async fn publish(&mut self, topic: &str, payload: &str, qos: QoS, retain: bool) {
                    self.client
                        .publish(topic, qos, retain, payload.as_bytes().to_vec())
                        .await
                        .unwrap();
                    let pkid = self
                        .event("our PUBLISH written", |e| match e {
                            Event::Outgoing(Outgoing::Publish(id)) => Some(*id),
                            _ => None,
                        })
                        .await;
                    match qos {
                        QoS::AtMostOnce => {}
                        QoS::AtLeastOnce => {
                            self.incoming("PUBACK", |p| {
                                matches!(p, Packet::PubAck(a) if a.pkid == pkid).then_some(())
                            })
                            .await
                        }
                        QoS::ExactlyOnce => {
                            self.incoming("PUBREC", |p| {
                                matches!(p, Packet::PubRec(a) if a.pkid == pkid).then_some(())
                            })
                            .await;
                            self.incoming("PUBCOMP", |p| {
                                matches!(p, Packet::PubComp(a) if a.pkid == pkid).then_some(())
                            })
                            .await;
                        }
                    }
                }

                /// The next message received (rumqttc acknowledges it by itself).
                async fn message(&mut self) -> Msg {
                    self.incoming("PUBLISH", |p| match p {
                        Packet::Publish(m) => Some(Msg {
                            topic: String::from_utf8_lossy(m.topic.as_ref()).into_owned(),
                            payload: String::from_utf8_lossy(&m.payload).into_owned(),
                            qos: m.qos as u8,
                            retain: m.retain,
                        }),
                        _ => None,
                    })
                    .await
                }

                /// A normal DISCONNECT, written before the socket is dropped.
                async fn disconnect(mut self) {
                    self.client.disconnect().await.unwrap();
                    self.event("our DISCONNECT written", |e| {
                        matches!(e, Event::Outgoing(Outgoing::Disconnect)).then_some(())
                    })
                    .await;
                    self.task.abort();
                    let _ = self.task.await;
                }

                /// Drops the socket without DISCONNECT: an abnormal close.
                async fn drop_socket(self) {
                    self.task.abort();
                    let _ = self.task.await;
                }
            }

            #[tokio::test]
            async fn qos_0_1_2_and_retained() {
                let s = start().await;
                let port = s.addr.port();
                let topic = format!("{PROTO}/qos");
                let (mut sub, ack) = Peer::connect(options(port, "sub", false)).await;
                assert!(!ack.session_present);
                sub.subscribe(&topic, QoS::ExactlyOnce).await;
                let (mut publisher, _) = Peer::connect(options(port, "pub", false)).await;
                for (qos, payload) in [
                    (QoS::AtMostOnce, "q0"),
                    (QoS::AtLeastOnce, "q1"),
                    (QoS::ExactlyOnce, "q2"),
                ] {
                    publisher.publish(&topic, payload, qos, false).await;
                }
                // Each message at the QoS it was published with (the subscription allows 2).
                let mut got = vec![sub.message().await, sub.message().await, sub.message().await];
                got.sort();
                assert_eq!(
                    got,
                    vec![
                        msg(&topic, "q0", 0, false),
                        msg(&topic, "q1", 1, false),
                        msg(&topic, "q2", 2, false),
                    ]
                );

                // A retained message is stored and sent to a new subscription with RETAIN set
                // [MQTT-3.3.1-5], [MQTT-3.3.1-6]; one published while a subscription exists
                // goes to it with RETAIN clear (3.1.1 [MQTT-3.3.1-9]; 5.0 Retain As Published
                // 0 [MQTT-3.3.1-12]) and replaces the stored one.
                let retained = format!("{PROTO}/retained");
                publisher.publish(&retained, "kept", QoS::AtLeastOnce, true).await;
                sub.subscribe(&retained, QoS::AtLeastOnce).await;
                assert_eq!(sub.message().await, msg(&retained, "kept", 1, true));
                publisher.publish(&retained, "newer", QoS::AtLeastOnce, true).await;
                assert_eq!(sub.message().await, msg(&retained, "newer", 1, false));
                let (mut late, _) = Peer::connect(options(port, "late", false)).await;
                late.subscribe(&retained, QoS::ExactlyOnce).await;
                // Delivered at the QoS it was published with, below the granted 2.
                assert_eq!(late.message().await, msg(&retained, "newer", 1, true));

                late.disconnect().await;
                sub.disconnect().await;
                publisher.disconnect().await;
                s.server.shutdown(WAIT).await;
            }

            #[tokio::test]
            async fn will_published_on_abnormal_close_only() {
                let s = start().await;
                let port = s.addr.port();
                let topic = format!("{PROTO}/will");
                let (mut witness, _) = Peer::connect(options(port, "witness", false)).await;
                witness.subscribe(&topic, QoS::AtLeastOnce).await;

                // A normal DISCONNECT discards the will [MQTT-3.1.2-10] / [MQTT-3.14.4-3].
                let mut o = options(port, "polite", false);
                o.set_last_will(will(&topic, "normal"));
                let (polite, _) = Peer::connect(o).await;
                polite.disconnect().await;
                normal_disconnects(&s, 1).await;

                // A connection closed without DISCONNECT publishes it [MQTT-3.1.2-8].
                let mut o = options(port, "rude", false);
                o.set_last_will(will(&topic, "abnormal"));
                let (rude, _) = Peer::connect(o).await;
                rude.drop_socket().await;
                // Had the first will been published, it would have come first.
                assert_eq!(witness.message().await, msg(&topic, "abnormal", 1, false));

                witness.disconnect().await;
                s.server.shutdown(WAIT).await;
            }

            #[tokio::test]
            async fn persistent_session_gets_messages_published_while_offline() {
                let s = start().await;
                let port = s.addr.port();
                let topic = format!("{PROTO}/persistent");
                let (mut keeper, ack) = Peer::connect(options(port, "keeper", true)).await;
                assert!(!ack.session_present, "no session existed");
                keeper.subscribe(&topic, QoS::AtLeastOnce).await;
                keeper.disconnect().await;
                normal_disconnects(&s, 1).await;

                let (mut publisher, _) = Peer::connect(options(port, "pub", false)).await;
                for payload in ["m1", "m2", "m3"] {
                    publisher.publish(&topic, payload, QoS::AtLeastOnce, false).await;
                }

                // The session is resumed [MQTT-3.2.2-2] and its queued QoS 1 messages are sent,
                // in order [MQTT-4.6.0-6], without a new SUBSCRIBE.
                let (mut keeper, ack) = Peer::connect(options(port, "keeper", true)).await;
                assert!(ack.session_present, "the session was kept");
                for payload in ["m1", "m2", "m3"] {
                    assert_eq!(keeper.message().await, msg(&topic, payload, 1, false));
                }

                keeper.disconnect().await;
                publisher.disconnect().await;
                s.server.shutdown(WAIT).await;
            }
        }
    };
}

rumqttc_tests!(rumqttc_v4, {
    use rumqttc::{
        AsyncClient, ConnAck, ConnectReturnCode, Event, LastWill, MqttOptions, Packet, QoS,
        SubscribeReasonCode,
    };

    const PROTO: &str = "v4";

    /// 3.1.1 options; `persistent`: clean session 0.
    fn options(port: u16, id: &str, persistent: bool) -> MqttOptions {
        let mut o = MqttOptions::new(id, "127.0.0.1", port);
        o.set_clean_session(!persistent);
        o
    }

    fn will(topic: &str, payload: &str) -> LastWill {
        LastWill::new(topic, payload.as_bytes().to_vec(), QoS::AtLeastOnce, false)
    }
});

rumqttc_tests!(rumqttc_v5, {
    use rumqttc::v5::mqttbytes::QoS;
    use rumqttc::v5::mqttbytes::v5::{
        ConnAck, ConnectReturnCode, LastWill, Packet, SubscribeReasonCode,
    };
    use rumqttc::v5::{AsyncClient, Event, MqttOptions};

    const PROTO: &str = "v5";

    /// 5.0 options; `persistent`: clean start 0 and a session expiry of a minute.
    fn options(port: u16, id: &str, persistent: bool) -> MqttOptions {
        let mut o = MqttOptions::new(id, "127.0.0.1", port);
        o.set_clean_start(!persistent);
        if persistent {
            o.set_session_expiry_interval(Some(60));
        }
        o
    }

    fn will(topic: &str, payload: &str) -> LastWill {
        LastWill::new(
            topic,
            payload.as_bytes().to_vec(),
            QoS::AtLeastOnce,
            false,
            None,
        )
    }
});

// ---------------------------------------------------------------------------------------------
// Processes: mosquitto_pub, mosquitto_sub, python3.

/// Fails unless `program` is on PATH, naming the command that installs it.
fn require(program: &str, install: &str) {
    let found = std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()));
    assert!(
        found,
        "{program} is not on PATH: install it with `{install}` (scripts/test does)"
    );
}

/// A client process: stdout read line by line, stderr kept for the failure message; killed
/// (SIGKILL) when dropped.
struct Proc {
    what: String,
    child: Child,
    lines: mpsc::UnboundedReceiver<String>,
    transcript: Vec<String>,
    stderr: Arc<Mutex<String>>,
}

impl Proc {
    fn spawn(program: &str, args: &[String]) -> Proc {
        let what = format!("{program} {}", args.join(" "));
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
        let (tx, lines) = mpsc::unbounded_channel();
        let stdout = child.stdout.take().expect("piped stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        let pipe = child.stderr.take().expect("piped stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                let mut s = sink.lock().expect("stderr buffer");
                s.push_str(&line);
                s.push('\n');
            }
        });
        Proc {
            what,
            child,
            lines,
            transcript: Vec::new(),
            stderr,
        }
    }

    /// What the process printed so far, for failure messages.
    fn context(&self) -> String {
        format!(
            "{}\n--- stdout:\n{}\n--- stderr:\n{}",
            self.what,
            self.transcript.join("\n"),
            self.stderr.lock().expect("stderr buffer")
        )
    }

    /// The next stdout line `pick` accepts; fails if the output ends or nothing comes in time.
    async fn line<T>(&mut self, what: &str, mut pick: impl FnMut(&str) -> Option<T>) -> T {
        let deadline = Instant::now() + PROC_WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some(line)) => {
                    let picked = pick(&line);
                    self.transcript.push(line);
                    if let Some(t) = picked {
                        return t;
                    }
                }
                Ok(None) => panic!("{what}: the output ended\n{}", self.context()),
                Err(_) => panic!("{what}: nothing within {PROC_WAIT:?}\n{}", self.context()),
            }
        }
    }

    /// Waits for the process to end, killing it (and failing) past `limit`; then reads the
    /// rest of its output.
    async fn exit_within(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            if Instant::now() >= deadline {
                self.kill();
                panic!("still running after {limit:?}, killed: {}", self.context());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        while let Ok(Some(line)) = tokio::time::timeout(WAIT, self.lines.recv()).await {
            self.transcript.push(line);
        }
        status
    }

    /// Waits (bounded) for the process to end; asserts it succeeded.
    async fn success(&mut self) {
        let status = self.exit_within(PROC_WAIT).await;
        assert!(status.success(), "exited with {status}: {}", self.context());
    }

    /// SIGKILL, then reaps.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The mosquitto clients against one Herald, speaking one protocol version.
struct Mosquitto {
    port: u16,
    /// `mqttv311` or `mqttv5` (the `-V` argument).
    version: &'static str,
}

/// How mosquitto_sub is told to print each message, so that it can be told from its debug
/// lines: `MSG qos retain topic payload`.
const FORMAT: &str = "MSG %q %r %t %p";

impl Mosquitto {
    fn new(port: u16, version: &'static str) -> Mosquitto {
        require("mosquitto_sub", "apt-get install mosquitto-clients");
        require("mosquitto_pub", "apt-get install mosquitto-clients");
        require("stdbuf", "apt-get install coreutils");
        Mosquitto { port, version }
    }

    fn args(&self, program: &str, extra: &[&str]) -> Vec<String> {
        let port = self.port.to_string();
        let base = [
            program,
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-V",
            self.version,
            "-d",
        ];
        base.iter().chain(extra).map(|s| s.to_string()).collect()
    }

    /// Starts mosquitto_sub with debug output (it shows the SUBACK), line-buffered through
    /// stdbuf so that each line arrives as it is printed.
    fn sub(&self, extra: &[&str]) -> Proc {
        let mut args = vec!["-oL".to_string()];
        args.extend(self.args("mosquitto_sub", &[&["-F", FORMAT], extra].concat()));
        Proc::spawn("stdbuf", &args)
    }

    /// Runs mosquitto_pub to completion; asserts it succeeded (for QoS 1 and 2 that is after
    /// PUBACK / PUBCOMP) and returns its debug output.
    async fn publish(&self, extra: &[&str]) -> Vec<String> {
        let mut p = Proc::spawn("mosquitto_pub", &self.args("mosquitto_pub", extra)[1..]);
        p.success().await;
        std::mem::take(&mut p.transcript)
    }
}

/// Waits for mosquitto_sub's SUBACK; returns the granted QoS it printed.
async fn subscribed(p: &mut Proc) -> String {
    p.line("SUBACK", |l| {
        l.strip_prefix("Subscribed (mid: ")
            .and_then(|rest| rest.split_once("): "))
            .map(|(_, granted)| granted.to_string())
    })
    .await
}

/// The next message mosquitto_sub printed.
async fn message(p: &mut Proc) -> Msg {
    p.line("a message", |l| {
        let mut parts = l.strip_prefix("MSG ")?.splitn(4, ' ');
        let qos = parts.next()?.parse().ok()?;
        let retain = parts.next()? == "1";
        let topic = parts.next()?;
        Some(msg(topic, parts.next().unwrap_or(""), qos, retain))
    })
    .await
}

fn printed(transcript: &[String], needle: &str) -> bool {
    transcript.iter().any(|l| l.contains(needle))
}

const MOSQUITTO_VERSIONS: [(&str, &str); 2] = [("mqttv311", "v311"), ("mqttv5", "v5")];

#[tokio::test]
async fn mosquitto_qos_0_1_2() {
    let s = start().await;
    for (version, tag) in MOSQUITTO_VERSIONS {
        let m = Mosquitto::new(s.addr.port(), version);
        let topic = format!("mq/{tag}/qos");
        let mut sub = m.sub(&["-t", &topic, "-q", "2", "-C", "3", "-i", "sub"]);
        assert_eq!(subscribed(&mut sub).await, "2", "granted QoS 2");

        let out = m.publish(&["-t", &topic, "-q", "0", "-m", "q0"]).await;
        assert!(printed(&out, "sending PUBLISH (d0, q0"), "{out:?}");
        let out = m.publish(&["-t", &topic, "-q", "1", "-m", "q1"]).await;
        assert!(printed(&out, "received PUBACK"), "{out:?}");
        let out = m.publish(&["-t", &topic, "-q", "2", "-m", "q2"]).await;
        assert!(printed(&out, "received PUBREC"), "{out:?}");
        assert!(printed(&out, "received PUBCOMP"), "{out:?}");

        let mut got = vec![
            message(&mut sub).await,
            message(&mut sub).await,
            message(&mut sub).await,
        ];
        got.sort();
        assert_eq!(
            got,
            vec![
                msg(&topic, "q0", 0, false),
                msg(&topic, "q1", 1, false),
                msg(&topic, "q2", 2, false),
            ],
            "{version}"
        );
        sub.success().await;
        // The QoS 2 delivery went through PUBREC / PUBREL / PUBCOMP [MQTT-4.3.3].
        assert!(
            printed(&sub.transcript, "received PUBREL"),
            "{}",
            sub.context()
        );
    }
    s.server.shutdown(WAIT).await;
}

#[tokio::test]
async fn mosquitto_retained() {
    let s = start().await;
    for (version, tag) in MOSQUITTO_VERSIONS {
        let m = Mosquitto::new(s.addr.port(), version);
        let topic = format!("mr/{tag}");
        m.publish(&["-t", &topic, "-q", "1", "-r", "-m", "kept"])
            .await;

        // Given to a later subscriber with RETAIN set [MQTT-3.3.1-6].
        let mut sub = m.sub(&["-t", &topic, "-q", "1", "-C", "2"]);
        assert_eq!(subscribed(&mut sub).await, "1");
        assert_eq!(
            message(&mut sub).await,
            msg(&topic, "kept", 1, true),
            "{version}"
        );
        // A retained message for an existing subscription arrives with RETAIN clear
        // (3.1.1 [MQTT-3.3.1-9]; 5.0 [MQTT-3.3.1-12]) and replaces the stored one.
        m.publish(&["-t", &topic, "-q", "1", "-r", "-m", "newer"])
            .await;
        assert_eq!(
            message(&mut sub).await,
            msg(&topic, "newer", 1, false),
            "{version}"
        );
        sub.success().await;

        let mut late = m.sub(&["-t", &topic, "-q", "1", "-C", "1"]);
        assert_eq!(
            message(&mut late).await,
            msg(&topic, "newer", 1, true),
            "{version}"
        );
        late.success().await;
    }
    s.server.shutdown(WAIT).await;
}

#[tokio::test]
async fn mosquitto_will_on_sigkill() {
    let s = start().await;
    let mut disconnects = 0;
    for (version, tag) in MOSQUITTO_VERSIONS {
        let m = Mosquitto::new(s.addr.port(), version);
        let topic = format!("mw/{tag}/will");
        let other = format!("mw/{tag}/other");
        let mut witness = m.sub(&["-t", &topic, "-q", "1", "-C", "1"]);
        subscribed(&mut witness).await;

        // -E: subscribes, then a normal DISCONNECT, which discards the will [MQTT-3.1.2-10].
        let will = ["--will-topic", &topic, "--will-qos", "1", "--will-payload"];
        let mut polite = m.sub(&[&["-t", &other, "-E"], &will[..], &["normal"]].concat());
        polite.success().await;
        disconnects += 1;
        normal_disconnects(&s, disconnects).await;

        // SIGKILL: the socket closes without DISCONNECT, so the will is published
        // [MQTT-3.1.2-8].
        let mut rude = m.sub(&[&["-t", &other], &will[..], &["abnormal"]].concat());
        subscribed(&mut rude).await;
        rude.kill();

        // Had the first will been published, it would have come first.
        assert_eq!(
            message(&mut witness).await,
            msg(&topic, "abnormal", 1, false),
            "{version}"
        );
        witness.success().await;
        disconnects += 1;
    }
    s.server.shutdown(WAIT).await;
}

#[tokio::test]
async fn mosquitto_persistent_session() {
    let s = start().await;
    let mut disconnects = 0;
    for (version, tag) in MOSQUITTO_VERSIONS {
        let m = Mosquitto::new(s.addr.port(), version);
        let topic = format!("mp/{tag}");
        let id = format!("persistent-{tag}");
        // -c: clean session 0 (5.0: clean start 0, session expiry "never", capped by Herald).
        let keeper = ["-c", "-i", &id, "-q", "1", "-t", &topic];
        let mut first = m.sub(&[&keeper[..], &["-E"]].concat());
        assert_eq!(subscribed(&mut first).await, "1");
        first.success().await;
        disconnects += 1;
        normal_disconnects(&s, disconnects).await;

        for payload in ["m1", "m2", "m3"] {
            m.publish(&["-t", &topic, "-q", "1", "-m", payload]).await;
        }

        // Reconnecting gets them, in order [MQTT-4.6.0-6].
        let mut again = m.sub(&[&keeper[..], &["-C", "3"]].concat());
        for payload in ["m1", "m2", "m3"] {
            assert_eq!(
                message(&mut again).await,
                msg(&topic, payload, 1, false),
                "{version}"
            );
        }
        again.success().await;
        disconnects += 1;
    }
    s.server.shutdown(WAIT).await;
}

// ---------------------------------------------------------------------------------------------
// Python paho-mqtt.

#[tokio::test]
async fn paho_mqtt_v311_and_v5() {
    require("python3", "apt-get install python3 python3-pip");
    let mut check = Proc::spawn(
        "python3",
        &[
            "-c".into(),
            "import paho.mqtt; print(paho.mqtt.__version__)".into(),
        ],
    );
    let status = check.exit_within(PROC_WAIT).await;
    assert!(
        status.success(),
        "paho-mqtt is not installed for the python3 on PATH: install it with \
         `python3 -m pip install paho-mqtt` (scripts/test does)\n{}",
        check.context()
    );

    let s = start().await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/paho_client.py");
    let mut paho = Proc::spawn("python3", &[script.into(), s.addr.port().to_string()]);
    let status = paho.exit_within(PAHO_WAIT).await;
    let stdout = paho.transcript.join("\n");
    let result: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", paho.context()));
    assert!(
        status.success() && result.get("error").is_none(),
        "the script failed ({status}): {}",
        paho.context()
    );

    for tag in ["v311", "v5"] {
        let r = &result[tag];
        let p = format!("paho/{tag}");
        let m = |topic: &str, payload: &str, qos: u8, retain: bool| {
            let topic = format!("{p}/{topic}");
            json!({"topic": topic, "payload": payload, "qos": qos, "retain": retain})
        };
        assert_eq!(
            r["connack"],
            json!({"rc": 0, "session_present": false}),
            "{tag}"
        );
        assert_eq!(r["granted"], json!([2]), "{tag}");
        // PUBACK for QoS 1, PUBREC/PUBCOMP for QoS 2 reached the publisher.
        assert_eq!(r["acked"], json!([true, true, true]), "{tag}");
        assert_eq!(
            r["received"],
            json!([
                m("qos", "q0", 0, false),
                m("qos", "q1", 1, false),
                m("qos", "q2", 2, false)
            ]),
            "{tag}"
        );
        assert_eq!(r["retained_acked"], json!(true), "{tag}");
        // [MQTT-3.3.1-6]: a new subscription gets the retained message, RETAIN set.
        assert_eq!(
            r["retained"],
            json!([m("retained", "kept", 1, true)]),
            "{tag}"
        );
        // Only the will of the connection closed without DISCONNECT [MQTT-3.1.2-8],
        // [MQTT-3.1.2-10].
        assert_eq!(r["will"], json!([m("will", "abnormal", 1, false)]), "{tag}");
        let persistent = &r["persistent"];
        assert_eq!(
            persistent["first_connack"],
            json!({"rc": 0, "session_present": false}),
            "{tag}"
        );
        assert_eq!(persistent["acked"], json!([true, true, true]), "{tag}");
        assert_eq!(
            persistent["connack"],
            json!({"rc": 0, "session_present": true}),
            "{tag}: the session was kept [MQTT-3.2.2-2]"
        );
        assert_eq!(
            persistent["received"],
            json!([
                m("persistent", "p1", 1, false),
                m("persistent", "p2", 1, false),
                m("persistent", "p3", 1, false)
            ]),
            "{tag}: the QoS 1 messages published while offline, in order"
        );
    }
    s.server.shutdown(WAIT).await;
}
