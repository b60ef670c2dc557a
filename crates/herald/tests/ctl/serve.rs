//! What needs `herald serve` in a process of its own: the log level (Herald's own logger)
//! and drain (which ends the process).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mqtt_codec::ProtocolVersion::V5;
use mqtt_codec::{Packet, ReasonCode};

use super::common::{self, Raw};
use super::{Ctl, field};

/// `herald serve` in its own process (in memory, free loopback ports): its HTTP address,
/// and its log lines as they come.
struct Serve {
    child: std::process::Child,
    http: SocketAddr,
    mqtt: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
}

impl Serve {
    fn start() -> Serve {
        let mut child = Command::new(env!("CARGO_BIN_EXE_herald"))
            .args(["serve", "--in-memory", "--mqtt-listen", "127.0.0.1:0"])
            .args(["--http-listen", "127.0.0.1:0", "--log-level", "info"])
            .env("HERALD_LISTENERS_WS", "")
            .env("HERALD_DRAIN_PERIOD_SECS", "2")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("herald serve runs");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        let lines = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let addr = line.find("addr=").map(|at| {
                    line[at + 5..]
                        .split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .parse::<SocketAddr>()
                });
                if let Some(Ok(addr)) = addr {
                    let _ = tx.send((line.contains("HTTP"), addr));
                }
                lines.lock().unwrap().push(line);
            }
        });
        let (mut http, mut mqtt) = (None, None);
        while http.is_none() || mqtt.is_none() {
            let (is_http, addr) = rx
                .recv_timeout(Duration::from_secs(30))
                .expect("herald serve logs its addresses");
            match is_http {
                true => http = Some(addr),
                false => mqtt = mqtt.or(Some(addr)),
            }
        }
        Serve {
            child,
            http: http.unwrap(),
            mqtt: mqtt.unwrap(),
            log,
        }
    }

    fn logged(&self, needle: &str) -> bool {
        self.log.lock().unwrap().iter().any(|l| l.contains(needle))
    }

    /// Waits for the process to exit; its status code.
    async fn exit_within(&mut self, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("herald serve did not exit within {within:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Connects and disconnects an MQTT client (logged at debug when it closes).
async fn come_and_go(addr: SocketAddr, id: &str) {
    let mut c = Raw::connect(addr, V5, id).await;
    common::ping(&mut c).await;
    c.disconnect().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_level_changes_on_a_running_herald() {
    let serve = Serve::start();
    let http = serve.http;
    assert_eq!(Ctl::at(http, &["log"]).run().await.ok(), "log level info\n");
    come_and_go(serve.mqtt, "before").await;

    let text = Ctl::at(http, &["log", "set", "herald=debug,info"])
        .run()
        .await
        .ok();
    assert_eq!(text, "log level set to herald=debug,info\n");
    let v = Ctl::at(http, &["log", "--json"]).run().await.json();
    assert_eq!(v["level"], "herald=debug,info");
    come_and_go(serve.mqtt, "after").await;
    common::eventually("the close logged at debug", || {
        serve.logged("connection closed")
    })
    .await;
    // Only the close after the change was logged (at info, closes are not).
    let closes = serve
        .log
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains("connection closed"))
        .count();
    assert_eq!(closes, 1);

    let err = Ctl::at(http, &["log", "set", "herald=[["]).run().await;
    let err = err.failed();
    assert!(
        err.contains("400 Bad Request") && err.contains("field level"),
        "{err}"
    );
    let v = Ctl::at(http, &["log", "set", "warn", "--json"])
        .run()
        .await
        .json();
    assert_eq!(v["level"], "warn");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_stops_a_running_herald() {
    let mut serve = Serve::start();
    let http = serve.http;
    // A client keeps the drain going for its period.
    let mut c = Raw::connect(serve.mqtt, V5, "stays").await;
    let text = Ctl::at(http, &["drain"]).run().await.ok();
    assert_eq!(
        text,
        "draining: Herald stops accepting, disconnects its clients over 2 s, writes its store \
         and exits\n"
    );
    let text = Ctl::at(http, &["status"]).run().await.ok();
    assert_eq!(field(&text, "ready"), "no (draining)");
    let closing = c.expect_closed().await;
    assert!(
        matches!(closing.as_slice(), [Packet::Disconnect(d)]
            if d.reason_code == ReasonCode::ServerShuttingDown),
        "{closing:?}"
    );
    assert_eq!(serve.exit_within(Duration::from_secs(20)).await, Some(0));

    let mut serve = Serve::start();
    let v = Ctl::at(serve.http, &["drain", "--json"]).run().await.json();
    assert_eq!(
        (&v["draining"], &v["period_secs"]),
        (&true.into(), &2.into())
    );
    assert_eq!(serve.exit_within(Duration::from_secs(20)).await, Some(0));
}
