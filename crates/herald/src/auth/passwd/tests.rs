//! Unit tests of the password-file method: the hash forms against vectors from other
//! implementations, parse errors, edits, reloads, and the memory of right passwords.

#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::config::ListenerKind;

/// Written by mosquitto_passwd 2.0.11: `-b` ("secret one", PBKDF2, 101 rounds, 12-byte
/// salt), `-H sha512` ("hunter2"), `-I 1000` ("pässwörd").
const MOSQUITTO: &str = "\
alice:$7$101$92wtVXamZ8j8raod$fKdsJ41DX2kjFRayl6+J+sQNec2LjIQ5hWhuY9nfqY+ipXUGotvuEYjIKYoAsj8UXgzuMqqX8kBuj0VzPYnU5w==
bob:$6$xiZ+Q63mO4wiHmCd$VAKqLkOPvvchCuhyuKKkgB0X2GZ9eC0AGf1ffCVnzhdMeVq4+Mw00Q70/QbJJV0KPM96F/e9YHsjrpOCOwROpg==
carol:$7$1000$PN8+kAbS2f/QtMhs$r+OILmVeNV4wyf0B62dlmPa6tosqOTo0Ta4uotqSF9wIq2F3MpoJPlal9174Qn595yK2k7wOEPYfO/kI4x0tFg==
";

/// mosquitto 2.1's 64-byte salts, computed with Python's hashlib (password "long salt").
const LONG_SALT_PBKDF2: &str = "$7$101$AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4vMDEyMzQ1Njc4OTo7PD0+Pw==$Cpku0ux36qKEI5Rw+9ZokoMjrq5j+BoaUD+7gpoJ7/k+za+3EeE9hi0NI+kSj2Z6XJuHVsLvgrsl5JYIHREnPA==";
const LONG_SALT_SHA512: &str = "$6$AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4vMDEyMzQ1Njc4OTo7PD0+Pw==$mAaKoOSyAFZyfhzLYxz1IoSFT0ynzAjUM4AdILeoict1Uxa9y677tGnKt3W1tlX6WsDvgUScS0oOGkwsknyQ/Q==";

/// From the argon2 reference implementation's command (`argon2 saltsaltsalt16b -id ...`),
/// password "correct horse"; cheap costs, so that the tests run quickly.
const ARGON2_M64: &str =
    "$argon2id$v=19$m=64,t=1,p=1$c2FsdHNhbHRzYWx0MTZi$TJJJS9s73HeQN7B9QSpamNgmFUJh0SPrxElWCwATtDM";
const ARGON2_M256_P2: &str =
    "$argon2id$v=19$m=256,t=2,p=2$c2FsdHNhbHRzYWx0MTZi$dTt+ajmgAtCETJc31onKTp0t7MEt7gvScmQQjGKMDJY";

fn parse(text: &str) -> Result<Document, PasswdError> {
    Document::parse(text.as_bytes())
}

fn credentials<'a>(username: Option<&'a str>, password: Option<&'a [u8]>) -> Credentials<'a> {
    Credentials {
        client_id: "c1",
        username,
        password,
        certificate: None,
        certificate_tenant: None,
        peer: "127.0.0.1:1".parse().unwrap(),
        listener: ListenerKind::Mqtt,
    }
}

async fn check(file: &PasswordFile, username: &str, password: &str) -> Verdict {
    file.check(&credentials(Some(username), Some(password.as_bytes())))
        .await
}

fn allowed(username: &str, tenant: Option<&str>) -> Verdict {
    Verdict::Allow(Grant {
        username: Some(username.into()),
        tenant: tenant.map(Into::into),
        ..Grant::default()
    })
}

fn refused() -> Verdict {
    Verdict::Deny(Denial::new(DenyReason::BadPassword))
}

fn load(dir: &Path, text: &str) -> PasswordFile {
    let path = dir.join("passwd");
    std::fs::write(&path, text).unwrap();
    PasswordFile::load(&path).unwrap()
}

#[test]
fn mosquitto_hashes_verify_the_right_password_and_refuse_others() {
    let document = parse(MOSQUITTO).unwrap();
    let cases = [
        (
            "alice",
            "secret one",
            Scheme::Pbkdf2Sha512 { iterations: 101 },
        ),
        ("bob", "hunter2", Scheme::Sha512),
        (
            "carol",
            "pässwörd",
            Scheme::Pbkdf2Sha512 { iterations: 1000 },
        ),
    ];
    for (user, password, scheme) in cases {
        let entry = document.get(user).unwrap();
        assert_eq!(entry.hash().scheme(), scheme, "{user}");
        assert!(entry.verify(password.as_bytes()), "{user}");
        for wrong in ["", "secret", "hunter2 ", "passwörd", "Secret one"] {
            assert!(!entry.verify(wrong.as_bytes()), "{user} with {wrong:?}");
        }
    }
    for text in [LONG_SALT_PBKDF2, LONG_SALT_SHA512] {
        let hash = Hash::parse(text).unwrap();
        assert!(hash.verify(b"long salt"));
        assert!(!hash.verify(b"long salt!"));
    }
}

#[test]
fn argon2id_hashes_verify_reference_vectors_and_new_ones() {
    for text in [ARGON2_M64, ARGON2_M256_P2] {
        let hash = Hash::parse(text).unwrap();
        assert!(hash.verify(b"correct horse"), "{text}");
        assert!(!hash.verify(b"correct horse battery"), "{text}");
    }
    assert_eq!(
        Hash::parse(ARGON2_M256_P2).unwrap().scheme(),
        Scheme::Argon2id {
            memory_kib: 256,
            iterations: 2,
            parallelism: 2
        }
    );
    let fresh = Hash::argon2id(b"s3cret").unwrap();
    assert!(
        fresh
            .as_str()
            .starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
        "{}",
        fresh.as_str()
    );
    assert!(fresh.verify(b"s3cret"));
    assert!(!fresh.verify(b"s3cret2"));
    assert_ne!(
        Hash::argon2id(b"s3cret").unwrap(),
        fresh,
        "each hash has its own salt"
    );
}

#[test]
fn bad_lines_are_named_by_number_without_their_hash() {
    let pbkdf2 = "$7$101$92wtVXamZ8j8raod$fKdsJ41DX2kjFRayl6+J+sQNec2LjIQ5hWhuY9nfqY+ipXUGotvuEYjIKYoAsj8UXgzuMqqX8kBuj0VzPYnU5w==";
    let bad_salt = pbkdf2.replace("92wtVXamZ8j8raod", "92wtVXamZ8j8ra");
    let short_salt = pbkdf2.replace("92wtVXamZ8j8raod", "92wtVXamZ8j8");
    let cases: Vec<(String, Problem)> = vec![
        ("alice".into(), Problem::NoColon),
        (format!(":{pbkdf2}"), Problem::EmptyUsername),
        (format!("al:ice:{pbkdf2}"), Problem::ColonInUsername),
        (format!("al:ice:{pbkdf2}:acme"), Problem::ColonInUsername),
        (format!("alice:{pbkdf2}:acme:x"), Problem::TooManyFields),
        (format!("alice:{pbkdf2}:"), Problem::EmptyTenant),
        (format!("alice:{pbkdf2}:ac/me"), Problem::BadTenant),
        ("alice:".into(), Problem::EmptyHash),
        (
            "alice:$2y$10$abcdefghijabcdefghijab".into(),
            Problem::UnknownHash(" $2y$".into()),
        ),
        ("alice:plaintext".into(), Problem::NotAHash),
        (
            pbkdf2.replace("$101$", "$0$").replace("$7$", "alice:$7$"),
            Problem::BadHash {
                scheme: "$7$",
                what: "the iteration count is 0".into(),
            },
        ),
        (
            format!("alice:{}", pbkdf2.replace("$101$", "$10000001$")),
            Problem::BadHash {
                scheme: "$7$",
                what: "more than 10000000 iterations".into(),
            },
        ),
        (
            format!("alice:{}", pbkdf2.replace("$101$", "$1e3$")),
            Problem::BadHash {
                scheme: "$7$",
                what: "the iteration count is not a number".into(),
            },
        ),
        (
            format!("alice:{bad_salt}"),
            Problem::BadHash {
                scheme: "$7$",
                what: "the salt is not base64 with padding".into(),
            },
        ),
        (
            format!("alice:{short_salt}"),
            Problem::BadHash {
                scheme: "$7$",
                what: "the salt is 9 bytes long (12 or 64 expected)".into(),
            },
        ),
        (
            "alice:$6$92wtVXamZ8j8raod".into(),
            Problem::BadHash {
                scheme: "$6$",
                what: "expected $6$<salt>$<hash>".into(),
            },
        ),
        (
            format!("alice:{}", ARGON2_M64.replace("argon2id", "argon2i")),
            Problem::BadHash {
                scheme: "argon2id",
                what: "$argon2i$ is not accepted, only $argon2id$".into(),
            },
        ),
        (
            format!("alice:{}", ARGON2_M64.replace("m=64", "m=2000000")),
            Problem::BadHash {
                scheme: "argon2id",
                what: "m=2000000 is over 1048576".into(),
            },
        ),
        (
            format!("alice:{}", ARGON2_M64.replace("v=19", "v=16")),
            Problem::BadHash {
                scheme: "argon2id",
                what: "the version must be v=19".into(),
            },
        ),
        (
            format!("#x:{pbkdf2}\n alice :{pbkdf2}\nalice:{pbkdf2}"),
            Problem::Duplicate {
                username: "alice".into(),
                first: 5,
            },
        ),
    ];
    for (line, problem) in cases {
        // Three good lines first, so that the number counted is the bad line's.
        let text = format!("# users\n\nbob:{LONG_SALT_SHA512}\n{line}\n");
        let err = parse(&text).unwrap_err();
        let PasswdError::Line {
            line: number,
            problem: found,
            ..
        } = &err
        else {
            panic!("{err:?}");
        };
        let expected_line = 4 + line.matches('\n').count();
        assert_eq!((*number, found), (expected_line, &problem), "{line}");
        let message = err.at(Path::new("/etc/herald/passwd")).to_string();
        assert!(
            message.starts_with(&format!("/etc/herald/passwd: line {expected_line}: ")),
            "{message}"
        );
        for secret in [
            "fKdsJ41DX2kjFRay",
            "92wtVXamZ8j8",
            "TJJJS9s73HeQ",
            "plaintext",
            "abcdefghij",
        ] {
            assert!(!message.contains(secret), "{message} quotes the hash");
        }
    }
    let err = parse("bob:x\n\u{0}\n").unwrap_err();
    assert!(err.to_string().starts_with("line 1: "), "{err}");
    let err = Document::parse(b"# ok\nal\xFFice:$6$x$y\n").unwrap_err();
    assert_eq!(err.to_string(), "line 2: not UTF-8");
}

#[test]
fn comments_blank_lines_and_line_ends_are_kept_as_they_were() {
    let text = format!(
        "# Herald users\n\n  # indented comment\r\nalice:{LONG_SALT_SHA512}\r\n\t\n  dave : {ARGON2_M64} : acme \n"
    );
    let document = parse(&text).unwrap();
    assert_eq!(document.render(), text);
    let names: Vec<_> = document
        .entries()
        .map(|e| (e.username(), e.tenant()))
        .collect();
    assert_eq!(names, [("alice", None), ("dave", Some("acme"))]);
    assert!(document.get("dave").unwrap().verify(b"correct horse"));
    // A last line without its newline gets one.
    assert_eq!(parse("# x").unwrap().render(), "# x\n");
    assert_eq!(parse("").unwrap().render(), "");
}

#[test]
fn edits_change_only_their_line() {
    let text = format!("# head\nalice:{LONG_SALT_SHA512}\n\nbob:{ARGON2_M64}:acme\n# tail\n");
    let mut document = parse(&text).unwrap();
    let hash = Hash::parse(ARGON2_M256_P2).unwrap();
    let alice = Entry::new("alice", hash.clone(), Some("umbrella")).unwrap();
    assert!(document.set(alice));
    assert!(!document.set(Entry::new("erin", hash.clone(), None).unwrap()));
    assert!(document.remove("bob"));
    assert!(!document.remove("bob"));
    assert_eq!(
        document.render(),
        format!("# head\nalice:{ARGON2_M256_P2}:umbrella\n\n# tail\nerin:{ARGON2_M256_P2}\n")
    );
    assert_eq!(parse(&document.render()).unwrap(), document);
    for (name, problem) in [
        ("a:b", Problem::ColonInUsername),
        ("#a", Problem::CommentUsername),
        (" a", Problem::BlankAroundUsername),
        ("a\nb", Problem::ControlInUsername),
        ("", Problem::EmptyUsername),
    ] {
        assert_eq!(
            Entry::new(name, hash.clone(), None),
            Err(problem),
            "{name:?}"
        );
    }
    assert_eq!(
        Entry::new("a", hash.clone(), Some("ac me")),
        Err(Problem::BadTenant)
    );
}

#[test]
fn writes_replace_the_file_keep_its_mode_and_make_new_ones_private() {
    let dir = tempfile::tempdir().unwrap();
    let document = parse(&format!("# users\nalice:{ARGON2_M64}\n")).unwrap();
    let new = dir.path().join("new");
    document.write(&new).unwrap();
    assert_eq!(std::fs::read_to_string(&new).unwrap(), document.render());
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&new), 0o600);
    let shared = dir.path().join("shared");
    std::fs::write(&shared, "# old\n").unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o640)).unwrap();
    document.write(&shared).unwrap();
    assert_eq!(std::fs::read_to_string(&shared).unwrap(), document.render());
    assert_eq!(mode(&shared), 0o640);
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(left.len(), 2, "no temporary file left: {left:?}");
    let err = document
        .write(&dir.path().join("missing/passwd"))
        .unwrap_err();
    assert!(err.to_string().contains("missing/passwd"), "{err}");
}

#[tokio::test]
async fn verdicts_pass_deny_and_allow_with_the_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let file = load(
        dir.path(),
        &format!("alice:{ARGON2_M64}:acme\nbob:{LONG_SALT_SHA512}\n"),
    );
    assert_eq!(file.name(), "password_file");
    assert_eq!(file.users(), 2);
    assert_eq!(
        file.check(&credentials(None, Some(b"x"))).await,
        Verdict::Pass
    );
    assert_eq!(
        check(&file, "mallory", "correct horse").await,
        Verdict::Pass
    );
    assert_eq!(
        file.check(&credentials(Some("alice"), None)).await,
        refused()
    );
    assert_eq!(check(&file, "alice", "wrong").await, refused());
    assert_eq!(
        check(&file, "alice", "correct horse").await,
        allowed("alice", Some("acme"))
    );
    assert_eq!(check(&file, "bob", "long salt").await, allowed("bob", None));
    assert_eq!(check(&file, "bob", "correct horse").await, refused());
}

#[tokio::test]
async fn a_right_password_is_remembered_and_a_wrong_one_hashed_each_time() {
    let dir = tempfile::tempdir().unwrap();
    let file = load(
        dir.path(),
        &format!("alice:{ARGON2_M64}\ncarol:{LONG_SALT_PBKDF2}\n"),
    );
    assert_eq!(file.hash_runs(), 0);
    assert_eq!(
        check(&file, "alice", "correct horse").await,
        allowed("alice", None)
    );
    assert_eq!(file.hash_runs(), 1);
    for _ in 0..3 {
        assert_eq!(
            check(&file, "alice", "correct horse").await,
            allowed("alice", None)
        );
    }
    assert_eq!(file.hash_runs(), 1, "answered from memory");
    assert_eq!(check(&file, "alice", "wrong").await, refused());
    assert_eq!(check(&file, "alice", "wrong").await, refused());
    assert_eq!(file.hash_runs(), 3, "wrong passwords are not remembered");
    assert_eq!(
        check(&file, "carol", "long salt").await,
        allowed("carol", None)
    );
    assert_eq!(
        check(&file, "carol", "long salt").await,
        allowed("carol", None)
    );
    assert_eq!(file.hash_runs(), 4);
    assert_eq!(
        check(&file, "alice", "correct horse").await,
        allowed("alice", None)
    );
    assert_eq!(file.hash_runs(), 4, "still remembered after other checks");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_checks_in_progress_share_one_hash() {
    let dir = tempfile::tempdir().unwrap();
    // Herald's own costs: each hash takes long enough for the checks to overlap.
    let hash = Hash::argon2id(b"fleet password").unwrap();
    let file = Arc::new(load(dir.path(), &format!("fleet:{}\n", hash.as_str())));
    let checks: Vec<_> = (0..16)
        .map(|_| {
            let file = Arc::clone(&file);
            async move { check(&file, "fleet", "fleet password").await }
        })
        .collect();
    for verdict in futures_join_all(checks).await {
        assert_eq!(verdict, allowed("fleet", None));
    }
    assert_eq!(file.hash_runs(), 1);
    let wrong: Vec<_> = (0..8)
        .map(|_| {
            let file = Arc::clone(&file);
            async move { check(&file, "fleet", "stale password").await }
        })
        .collect();
    for verdict in futures_join_all(wrong).await {
        assert_eq!(verdict, refused());
    }
    assert_eq!(
        file.hash_runs(),
        2,
        "eight identical wrong checks, one hash"
    );
    assert!(file.verifier.in_flight.lock().unwrap().is_empty());
}

/// Polls every future in one task (they start together), and gives their outputs in order.
async fn futures_join_all<F: std::future::Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut futures: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, output) in futures.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    std::task::Poll::Ready(value) => *output = Some(value),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().map(Option::unwrap).collect()
}

#[tokio::test]
async fn a_broken_edit_keeps_the_previous_users() {
    let dir = tempfile::tempdir().unwrap();
    let file = load(dir.path(), &format!("alice:{ARGON2_M64}\n"));
    assert!(!file.changed());
    assert_eq!(file.reload().unwrap(), ReloadOutcome::Unchanged);
    std::fs::write(file.path(), format!("alice:{ARGON2_M64}\nbob\n")).unwrap();
    assert!(file.changed());
    let err = file.reload().unwrap_err();
    assert!(
        err.to_string()
            .ends_with("passwd: line 2: no ':' between a username and a hash"),
        "{err}"
    );
    assert!(!file.changed(), "a broken file is reported once");
    assert_eq!(
        check(&file, "alice", "correct horse").await,
        allowed("alice", None)
    );
    std::fs::remove_file(file.path()).unwrap();
    assert!(file.reload().is_err());
    assert_eq!(file.users(), 1);
    std::fs::write(
        file.path(),
        format!("alice:{ARGON2_M64}\nbob:{LONG_SALT_SHA512}:acme\n"),
    )
    .unwrap();
    assert!(file.changed());
    assert_eq!(file.reload().unwrap(), ReloadOutcome::Reloaded { users: 2 });
    assert_eq!(
        check(&file, "bob", "long salt").await,
        allowed("bob", Some("acme"))
    );
    assert!(PasswordFile::load(&dir.path().join("nowhere")).is_err());
}

#[tokio::test]
async fn a_reload_forgets_a_changed_hash_and_keeps_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let file = load(
        dir.path(),
        &format!("alice:{ARGON2_M64}\ncarol:{LONG_SALT_PBKDF2}\n"),
    );
    check(&file, "alice", "correct horse").await;
    check(&file, "carol", "long salt").await;
    assert_eq!(file.hash_runs(), 2);
    // carol's tenant changes (her hash does not); alice's hash changes.
    std::fs::write(
        file.path(),
        format!("alice:{ARGON2_M256_P2}\ncarol:{LONG_SALT_PBKDF2}:acme\n"),
    )
    .unwrap();
    assert_eq!(file.reload().unwrap(), ReloadOutcome::Reloaded { users: 2 });
    assert_eq!(
        check(&file, "carol", "long salt").await,
        allowed("carol", Some("acme"))
    );
    assert_eq!(file.hash_runs(), 2, "carol's password is still remembered");
    assert_eq!(
        check(&file, "alice", "correct horse").await,
        allowed("alice", None)
    );
    assert_eq!(file.hash_runs(), 3, "alice's new hash was run");
}

#[tokio::test]
async fn the_watch_reloads_an_edited_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = Arc::new(load(dir.path(), &format!("alice:{ARGON2_M64}\n")));
    let watch = file.watch(Duration::from_millis(20));
    assert_eq!(check(&file, "bob", "long salt").await, Verdict::Pass);
    let edited =
        Document::parse(format!("alice:{ARGON2_M64}\nbob:{LONG_SALT_SHA512}\n").as_bytes())
            .unwrap();
    edited.write(file.path()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while check(&file, "bob", "long salt").await == Verdict::Pass {
        assert!(Instant::now() < deadline, "the edit was not picked up");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(check(&file, "bob", "long salt").await, allowed("bob", None));
    drop(file);
    tokio::time::timeout(Duration::from_secs(5), watch)
        .await
        .expect("the watch ends with the method")
        .unwrap();
}
