//! The harness of tests/pubsub_cli.rs: `herald serve` processes on free ports that can be
//! killed and restarted on the same ports, and `herald pub`/`herald sub` processes whose
//! output is collected line by line, with when each line came.

use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long any one step may take before the test fails.
pub(crate) const STEP: Duration = Duration::from_secs(20);

/// A port no one listens on now (the system's choice, released at once).
pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The binary under test.
pub(crate) fn herald() -> Command {
    Command::new(env!("CARGO_BIN_EXE_herald"))
}

/// A `herald serve` process and how to start it again.
pub(crate) struct Herald {
    child: Option<Child>,
    /// The flags and variables it runs with.
    args: Vec<String>,
    env: Vec<(String, String)>,
    /// Ports that accept connections once it is up.
    ports: Vec<u16>,
}

impl Herald {
    /// Starts Herald with `args` (listeners among them) and waits until `ports` accept.
    pub(crate) async fn start(args: &[&str], env: &[(&str, &str)], ports: &[u16]) -> Herald {
        let mut h = Herald {
            child: None,
            args: args.iter().map(|s| s.to_string()).collect(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ports: ports.to_vec(),
        };
        h.spawn().await;
        h
    }

    /// Herald with an MQTT listener on a free port, in memory.
    pub(crate) async fn plain() -> (Herald, u16) {
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let h = Herald::start(&["--in-memory", "--mqtt-listen", &listen], &[], &[port]).await;
        (h, port)
    }

    /// Starts the process and waits until every port accepts (or it exits: a failure).
    async fn spawn(&mut self) {
        let child = herald()
            .arg("serve")
            .args(&self.args)
            .env("HERALD_LISTENERS_WS", "")
            .env("HERALD_HTTP_LISTEN", "")
            .env("HERALD_STORE_MIN_FREE_DISK_BYTES", "0")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("herald serve starts");
        self.child = Some(child);
        for port in self.ports.clone() {
            let deadline = Instant::now() + Duration::from_secs(30);
            while tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_err()
            {
                assert!(Instant::now() < deadline, "herald listens on {port}");
                if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                    panic!("herald serve {:?} exited: {status}", self.args);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }

    /// SIGKILL: no drain, no goodbye to the clients.
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again with the same flags, on the same ports.
    pub(crate) async fn restart(&mut self) {
        self.kill();
        self.spawn().await;
    }
}

impl Drop for Herald {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Lines a process printed, each with when it was read.
pub(crate) type Lines = Arc<Mutex<Vec<(Instant, String)>>>;

/// A running `herald pub` or `herald sub`.
pub(crate) struct Client {
    pub(crate) child: Child,
    /// The pipe to its standard input, if asked for.
    pub(crate) stdin: Option<ChildStdin>,
    stdout: Lines,
    stderr: Lines,
}

/// Copies `from` into `into` line by line, on a thread of its own.
fn collect(from: impl Read + Send + 'static, into: Lines) {
    std::thread::spawn(move || {
        for line in BufReader::new(from).lines().map_while(Result::ok) {
            into.lock().unwrap().push((Instant::now(), line));
        }
    });
}

impl Client {
    /// Runs `herald ARGS...` with its output collected; stdin is a pipe the test may write
    /// to (`stdin`), else empty.
    pub(crate) fn spawn(args: &[&str], stdin: bool) -> Client {
        let mut child = herald()
            .args(args)
            .stdin(if stdin { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("herald starts");
        let (stdout, stderr) = (Lines::default(), Lines::default());
        collect(child.stdout.take().unwrap(), stdout.clone());
        collect(child.stderr.take().unwrap(), stderr.clone());
        Client {
            stdin: child.stdin.take(),
            child,
            stdout,
            stderr,
        }
    }

    pub(crate) fn out(&self) -> Vec<String> {
        self.stdout
            .lock()
            .unwrap()
            .iter()
            .map(|(_, l)| l.clone())
            .collect()
    }

    pub(crate) fn err(&self) -> String {
        let lines = self.stderr.lock().unwrap();
        lines.iter().map(|(_, l)| format!("{l}\n")).collect()
    }

    /// When stderr's lines containing `needle` were printed.
    pub(crate) fn err_times(&self, needle: &str) -> Vec<Instant> {
        let lines = self.stderr.lock().unwrap();
        lines
            .iter()
            .filter(|(_, l)| l.contains(needle))
            .map(|(t, _)| *t)
            .collect()
    }

    /// Waits until stderr has a line containing `needle`.
    pub(crate) async fn wait_err(&self, needle: &str) {
        let deadline = Instant::now() + STEP;
        while self.err_times(needle).is_empty() {
            assert!(
                Instant::now() < deadline,
                "no {needle:?} in:\n{}",
                self.err()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until stdout has at least `n` lines.
    pub(crate) async fn wait_lines(&self, n: usize, within: Duration) {
        let deadline = Instant::now() + within;
        while self.stdout.lock().unwrap().len() < n {
            assert!(
                Instant::now() < deadline,
                "fewer than {n} lines within {within:?}; stderr:\n{}",
                self.err()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits for the process to exit; panics after `within`.
    pub(crate) async fn exit(&mut self, within: Duration) -> ExitStatus {
        drop(self.stdin.take());
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // The reader threads finish with the pipes; give them a moment.
                tokio::time::sleep(Duration::from_millis(50)).await;
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "still running after {within:?}; stderr:\n{}",
                self.err()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Sends SIGINT, as Ctrl-C does.
    pub(crate) fn interrupt(&self) {
        let status = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `herald ARGS...` to its end: status, stdout lines, stderr.
pub(crate) async fn run(args: &[&str]) -> (ExitStatus, Vec<String>, String) {
    let mut c = Client::spawn(args, false);
    let status = c.exit(STEP).await;
    (status, c.out(), c.err())
}

/// Starts `herald sub ARGS...` and waits until it has subscribed to every `-t`.
pub(crate) async fn subscribed(args: &[&str]) -> Client {
    let mut full = vec!["sub"];
    full.extend_from_slice(args);
    let c = Client::spawn(&full, false);
    for pair in args.windows(2).filter(|w| w[0] == "-t") {
        c.wait_err(&format!("subscribed to {}", pair[1])).await;
    }
    c
}
