//! Password files as the real tools write them: mosquitto_passwd's `$7$` and `$6$` entries
//! verified by Herald's parser, and the `herald passwd` command creating, changing and
//! deleting users while every other line of a mosquitto file stays byte for byte.
//!
//! Needs `mosquitto_passwd` (Debian package `mosquitto`) and `script` (util-linux, for a
//! real terminal); a test fails, never skips, when one is missing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use herald::auth::passwd::{Document, PasswordFile, Scheme};
use herald::auth::{Credentials, DenyReason, Method, Verdict};
use herald::config::ListenerKind;

/// An external tool, found on PATH or in /usr/bin, or a panic saying how to get it.
fn tool(name: &str, package: &str) -> Command {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain([PathBuf::from("/usr/bin")])
        .map(|dir| dir.join(name))
        .find(|path| path.is_file());
    match found {
        Some(path) => Command::new(path),
        None => panic!(
            "{name} is missing: this test needs it (apt-get install -y {package}); \
             it does not skip"
        ),
    }
}

fn mosquitto_passwd(args: &[&str]) {
    let out = tool("mosquitto_passwd", "mosquitto")
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "mosquitto_passwd {args:?}: {out:?}");
}

/// `herald passwd` with `args`, `stdin` piped in.
fn herald_passwd(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_herald"))
        .arg("passwd")
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn succeeds(args: &[&str], stdin: &str) {
    let out = herald_passwd(args, stdin);
    assert!(
        out.status.success(),
        "herald passwd {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The error `herald passwd` prints (it must fail).
fn fails(args: &[&str], stdin: &str) -> String {
    let out = herald_passwd(args, stdin);
    assert!(!out.status.success(), "herald passwd {args:?} succeeded");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn text(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap()
}

fn verifies(path: &Path, user: &str, password: &str) -> bool {
    Document::read(path)
        .unwrap()
        .get(user)
        .unwrap_or_else(|| panic!("{user} is not in {}", path.display()))
        .verify(password.as_bytes())
}

async fn verdict(file: &PasswordFile, user: &str, password: &str) -> Verdict {
    let credentials = Credentials {
        client_id: "device-1",
        username: Some(user),
        password: Some(password.as_bytes()),
        certificate: None,
        certificate_tenant: None,
        peer: "127.0.0.1:40000".parse().unwrap(),
        listener: ListenerKind::Mqtt,
    };
    file.check(&credentials).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_passwd_entries_verify() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("passwd");
    let file = path.to_str().unwrap();
    mosquitto_passwd(&["-c", "-b", file, "alice", "alice's secret"]);
    mosquitto_passwd(&["-H", "sha512", "-b", file, "bob", "hunter2"]);
    mosquitto_passwd(&["-H", "sha512-pbkdf2", "-b", file, "carol", "pässwörd ✓"]);
    mosquitto_passwd(&["-b", file, "dave", "x"]);
    mosquitto_passwd(&["-D", file, "dave"]);
    let document = Document::read(&path).unwrap();
    let users: Vec<_> = document
        .entries()
        .map(|e| (e.username(), e.hash().scheme()))
        .collect();
    assert_eq!(
        users,
        [
            ("alice", Scheme::Pbkdf2Sha512 { iterations: 101 }),
            ("bob", Scheme::Sha512),
            ("carol", Scheme::Pbkdf2Sha512 { iterations: 101 }),
        ],
        "{}",
        text(&path)
    );
    assert!(text(&path).contains("bob:$6$"));
    for (user, right, wrong) in [
        ("alice", "alice's secret", "alice's secret "),
        ("bob", "hunter2", "Hunter2"),
        ("carol", "pässwörd ✓", "passwörd ✓"),
    ] {
        let entry = document.get(user).unwrap();
        assert!(entry.verify(right.as_bytes()), "{user}");
        assert!(!entry.verify(wrong.as_bytes()), "{user}");
        assert!(!entry.verify(b""), "{user}");
    }
    // The method on the same file: right, wrong, and a user it does not know.
    let method = PasswordFile::load(&path).unwrap();
    assert!(matches!(
        verdict(&method, "alice", "alice's secret").await,
        Verdict::Allow(grant) if grant.username.as_deref() == Some("alice") && grant.tenant.is_none()
    ));
    assert!(matches!(
        verdict(&method, "bob", "hunter2").await,
        Verdict::Allow(_)
    ));
    assert!(matches!(
        verdict(&method, "carol", "wrong").await,
        Verdict::Deny(denial) if denial.reason == DenyReason::BadPassword
    ));
    assert_eq!(verdict(&method, "dave", "x").await, Verdict::Pass);
}

/// A mosquitto file with comments and blank lines, as an operator keeps it.
fn mosquitto_file(dir: &Path) -> PathBuf {
    let path = dir.join("passwd");
    let file = path.to_str().unwrap();
    mosquitto_passwd(&["-c", "-b", file, "alice", "a-pass"]);
    mosquitto_passwd(&["-H", "sha512", "-b", file, "bob", "b-pass"]);
    let generated = text(&path);
    let (alice, bob) = generated.split_once('\n').unwrap();
    std::fs::write(
        &path,
        format!("# Devices of the plant\n{alice}\n\n  # legacy, SHA-512\n{bob}"),
    )
    .unwrap();
    path
}

#[test]
fn herald_passwd_adds_changes_and_deletes_keeping_other_lines() {
    let dir = tempfile::tempdir().unwrap();
    let path = mosquitto_file(dir.path());
    let file = path.to_str().unwrap();
    let original = text(&path);
    let lines = |path: &Path| text(path).lines().map(str::to_owned).collect::<Vec<_>>();
    let before = lines(&path);

    // A new user with a tenant: appended, everything before it untouched.
    succeeds(&["-b", "--tenant", "acme", file, "erin", "e-pass"], "");
    let now = text(&path);
    assert!(now.starts_with(&original), "{now}");
    let added = now[original.len()..].to_owned();
    assert!(
        added.starts_with("erin:$argon2id$v=19$m=19456,t=2,p=1$") && added.ends_with(":acme\n"),
        "{added}"
    );
    assert!(verifies(&path, "erin", "e-pass"));
    assert!(!verifies(&path, "erin", "e-pas"));

    // Its password again, read from standard input: a new hash, the tenant kept.
    succeeds(&[file, "erin"], "e-pass-2\n");
    let erin = lines(&path).pop().unwrap();
    assert!(
        erin.ends_with(":acme") && format!("{erin}\n") != added,
        "{erin}"
    );
    assert!(verifies(&path, "erin", "e-pass-2"));
    assert!(!verifies(&path, "erin", "e-pass"));
    assert!(text(&path).starts_with(&original));

    // A mosquitto user changed: its line, in place, now argon2id; the others as they were.
    succeeds(&["-b", "--tenant", "plant", file, "alice", "a-pass-2"], "");
    let changed = lines(&path);
    assert_eq!(changed.len(), before.len() + 1);
    for (i, (old, new)) in before.iter().zip(&changed).enumerate() {
        if i == 1 {
            assert!(new.starts_with("alice:$argon2id$") && new.ends_with(":plant"));
        } else {
            assert_eq!(old, new, "line {}", i + 1);
        }
    }
    assert!(verifies(&path, "alice", "a-pass-2"));
    assert!(verifies(&path, "bob", "b-pass"));

    // The tenant removed.
    succeeds(&["-b", "--tenant", "", file, "alice", "a-pass-3"], "");
    let alice = Document::read(&path).unwrap();
    assert_eq!(alice.get("alice").unwrap().tenant(), None);

    // bob deleted: only his line goes.
    succeeds(&["-D", file, "bob"], "");
    let mut expected = lines(&path);
    let after = lines(&path);
    expected.retain(|l| !l.starts_with("bob:"));
    assert_eq!(after, expected);
    assert_eq!(after[0], "# Devices of the plant");
    assert_eq!(after[2], "");
    assert_eq!(after[3], "  # legacy, SHA-512");
    assert!(Document::read(&path).unwrap().get("bob").is_none());
}

#[test]
fn herald_passwd_refuses_clearly_and_leaves_the_file_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = mosquitto_file(dir.path());
    let file = path.to_str().unwrap();
    let original = text(&path);
    let missing = dir.path().join("nope");
    let err = fails(&["-b", missing.to_str().unwrap(), "u", "p"], "");
    assert!(
        err.contains("does not exist (use -c to create it)"),
        "{err}"
    );
    assert!(!missing.exists());
    let err = fails(&["-D", file, "zoe"], "");
    assert!(err.contains("user \"zoe\" is not in"), "{err}");
    let err = fails(&[file, "zoe"], "\n");
    assert!(err.contains("empty password"), "{err}");
    let err = fails(&["-b", file, "z:oe", "p"], "");
    assert!(err.contains("may not contain ':'"), "{err}");
    let err = fails(&["-b", "--tenant", "a b", file, "zoe", "p"], "");
    assert!(err.contains("a tenant may not contain"), "{err}");
    let err = fails(&["-c", "-D", file, "alice"], "");
    assert!(err.contains("cannot be used with"), "{err}");
    let err = fails(&[file, "zoe", "p"], "");
    assert!(
        err.contains("-b"),
        "a password on the command line needs -b: {err}"
    );
    assert_eq!(text(&path), original);

    // A file with a bad line is not rewritten, and the error names the line.
    std::fs::write(&path, format!("{original}zoe:plaintext\n")).unwrap();
    let err = fails(&["-b", file, "yann", "p"], "");
    assert!(
        err.contains(": line 6: not a hash") && !err.contains("plaintext"),
        "{err}"
    );
    assert_eq!(text(&path), format!("{original}zoe:plaintext\n"));
}

#[test]
fn herald_passwd_creates_a_private_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("new-passwd");
    let file = path.to_str().unwrap();
    succeeds(&["-c", "-b", file, "alice", "pw"], "");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert!(verifies(&path, "alice", "pw"));
    // -c again: a fresh file with only the new user.
    succeeds(&["-c", "-b", file, "bob", "pw2"], "");
    let document = Document::read(&path).unwrap();
    let users: Vec<_> = document.entries().map(|e| e.username()).collect();
    assert_eq!(users, ["bob"]);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

/// Runs `herald passwd` on a real terminal (`script`), typing each of `typed` after a
/// prompt shows; its exit status and everything the terminal showed.
fn on_a_terminal(args: &str, typed: &[&str]) -> (bool, String) {
    let command = format!("'{}' passwd {args}", env!("CARGO_BIN_EXE_herald"));
    let mut child = tool("script", "bsdutils")
        .args(["-qec", &command, "/dev/null"])
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 256];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                return;
            }
        }
    });
    let mut stdin = child.stdin.take().unwrap();
    let mut shown = String::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut prompts = 0;
    for line in typed {
        prompts += 1;
        while shown.matches("assword: ").count() < prompts {
            let left = deadline.saturating_duration_since(Instant::now());
            let chunk = rx
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no prompt {prompts}; the terminal showed {shown:?}"));
            shown.push_str(&String::from_utf8_lossy(&chunk));
        }
        stdin.write_all(format!("{line}\n").as_bytes()).unwrap();
        stdin.flush().unwrap();
    }
    let status = child.wait().unwrap();
    drop(stdin);
    while let Ok(chunk) = rx.recv_timeout(Duration::from_secs(2)) {
        shown.push_str(&String::from_utf8_lossy(&chunk));
    }
    (status.success(), shown)
}

#[test]
fn herald_passwd_asks_twice_on_a_terminal_without_echo() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("passwd");
    let file = path.to_str().unwrap();
    let (ok, shown) = on_a_terminal(&format!("-c '{file}' alice"), &["tty-secret", "tty-secret"]);
    assert!(ok, "{shown}");
    assert!(
        shown.contains("Password: ") && shown.contains("Reenter password: "),
        "{shown:?}"
    );
    assert!(
        !shown.contains("tty-secret"),
        "the password was echoed: {shown:?}"
    );
    assert!(verifies(&path, "alice", "tty-secret"));

    let before = text(&path);
    let (ok, shown) = on_a_terminal(&format!("'{file}' alice"), &["one", "two"]);
    assert!(!ok, "{shown}");
    assert!(shown.contains("the passwords do not match"), "{shown:?}");
    assert_eq!(text(&path), before);
}
