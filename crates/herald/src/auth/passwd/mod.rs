//! mosquitto's password file (`auth.password_file`): `username:hash` lines as
//! mosquitto_passwd writes them, and Herald's `username:hash:tenant` as `herald passwd`
//! writes them.
//!
//! - [`Document`] is the file as text ([`file`](mod@file)): its users, comments and blank
//!   lines in order, a bad line reported by its number; edits rewrite one line and replace
//!   the file atomically.
//! - [`Hash`](struct@Hash) is a parsed hash ([`hash`](mod@hash)): mosquitto 2.x's `$7$`
//!   (PBKDF2-HMAC-SHA512), 1.x's `$6$` (salted SHA-512), and argon2id PHC strings.
//! - [`PasswordFile`] is the authentication method: the users of the file, swapped whole on
//!   reload (a broken edit keeps the previous users), and the checks.
//!
//! # A reconnect storm stays cheap
//!
//! argon2id and PBKDF2 are slow on purpose, so that a stolen file is slow to crack. When a
//! broker restarts or a network heals, every device reconnects within seconds; checked one
//! hash each on the async workers, they would stall every connection for as long as the
//! storm lasts. Herald keeps the hashes as strong as written and avoids paying for them
//! more than needed:
//!
//! 1. **Remembered successes.** After a password is found right, the user keeps an
//!    HMAC-SHA256, under a random key made at start and never written anywhere, of
//!    (username, hash text, password). The same user presenting the same password again
//!    costs one MAC (compared in constant time), not a hash. It is one tag per user, so the
//!    memory is bounded by the file; a reload keeps it for a user whose hash text did not
//!    change and drops it for one whose did. Wrong passwords are not remembered: each costs
//!    a full hash.
//! 2. **Off the async workers, at most one per core.** A hash runs on tokio's blocking pool
//!    (`spawn_blocking`) once a slot of a semaphore sized to the available parallelism is
//!    free. A flood of wrong passwords waits in the semaphore's queue (first come, first
//!    served) while connections already up keep being served.
//! 3. **Identical checks in progress are shared.** Checks of the same (username, hash,
//!    password) that arrive while one is running wait for its answer instead of hashing
//!    again, so a fleet sharing one account costs one hash on its first reconnect, right
//!    password or wrong.
//!
//! `$6$` hashes are one SHA-512 each, no dearer than the MAC: they are checked in place.
//!
//! # Reloads
//!
//! [`PasswordFile::reload`] reads and parses the file and swaps the users in only if it
//! parses; [`PasswordFile::changed`] compares the file's device, inode, size, modification
//! and change times with those of the last read, one `stat` call, cheap enough to run
//! every `auth.password_file_watch_secs`; [`PasswordFile::watch`] does both on a timer.

pub mod file;
pub mod hash;
mod verify;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;

pub use self::file::{Document, Entry};
pub use self::hash::{Hash, Scheme};
use self::verify::{User, Verifier};
use super::{BoxFuture, Credentials, Denial, DenyReason, Grant, Method, Verdict};

/// What is wrong with a line of a password file, or with a user about to be written. It
/// never quotes a hash or a password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// The line is not UTF-8.
    #[error("not UTF-8")]
    NotUtf8,
    /// No `:` on a line that is neither blank nor a comment.
    #[error("no ':' between a username and a hash")]
    NoColon,
    /// Nothing before the `:`.
    #[error("empty username")]
    EmptyUsername,
    /// A `:` inside the username.
    #[error("a username may not contain ':'")]
    ColonInUsername,
    /// A username starting with `#`, which would read as a comment.
    #[error("a username may not start with '#'")]
    CommentUsername,
    /// Control characters in a username.
    #[error("a username may not contain control characters")]
    ControlInUsername,
    /// Blanks around a username (they are not kept when the file is read).
    #[error("a username may not start or end with blanks")]
    BlankAroundUsername,
    /// Longer than MQTT allows.
    #[error("the username is longer than 65535 bytes")]
    LongUsername,
    /// The same username on two lines.
    #[error("user {username:?} is listed twice (first on line {first})")]
    Duplicate {
        /// The username.
        username: String,
        /// The line of its first entry.
        first: usize,
    },
    /// More than `user:hash:tenant`.
    #[error("too many ':'-separated fields (expected user:hash or user:hash:tenant)")]
    TooManyFields,
    /// Nothing after the second `:`.
    #[error("empty tenant after the second ':'")]
    EmptyTenant,
    /// A tenant with characters a tenant may not have.
    #[error("a tenant may not contain blanks, control characters, '/', '+', '#' or ':'")]
    BadTenant,
    /// Nothing after the username's `:`.
    #[error("no hash after the username")]
    EmptyHash,
    /// Text that is no hash (all start with `$`).
    #[error("not a hash (a plain-text password? herald passwd writes hashes)")]
    NotAHash,
    /// A hash of a form Herald does not know (the identifier is its `$id$`, if any).
    #[error("unknown hash form{0} (expected $7$, $6$ or $argon2id$)")]
    UnknownHash(String),
    /// A hash of a known form that does not parse.
    #[error("{scheme} hash: {what}")]
    BadHash {
        /// `$7$`, `$6$` or `argon2id`.
        scheme: &'static str,
        /// What is wrong.
        what: String,
    },
}

/// A password file that cannot be read, parsed, hashed for or written.
#[derive(Debug, thiserror::Error)]
pub enum PasswdError {
    /// Reading or writing the file failed.
    #[error("{}: {source}", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A bad line.
    #[error("{}line {line}: {problem}", file_prefix(.path.as_deref()))]
    Line {
        /// The file, when the text came from one.
        path: Option<PathBuf>,
        /// Its number, from 1.
        line: usize,
        /// What is wrong with it.
        problem: Problem,
    },
    /// A user that cannot be written as asked.
    #[error("{0}")]
    Entry(Problem),
    /// Hashing a new password, or making a random key or salt, failed.
    #[error("hashing: {0}")]
    Hashing(String),
}

impl PasswdError {
    /// The error, naming `path` as the file a bad line is in.
    pub fn at(self, path: &Path) -> PasswdError {
        match self {
            PasswdError::Line { line, problem, .. } => PasswdError::Line {
                path: Some(path.to_owned()),
                line,
                problem,
            },
            other => other,
        }
    }
}

fn file_prefix(path: Option<&Path>) -> String {
    path.map(|p| format!("{}: ", p.display()))
        .unwrap_or_default()
}

/// What [`PasswordFile::reload`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// The file's bytes are those already loaded.
    Unchanged,
    /// The new users are in place.
    Reloaded {
        /// How many.
        users: usize,
    },
}

/// The users of a file, swapped whole.
#[derive(Debug, Default)]
struct Users {
    /// By username.
    by_name: HashMap<String, Arc<User>>,
    /// SHA-256 of the bytes they were read from, to tell an unchanged file.
    digest: Vec<u8>,
}

impl Users {
    /// The users of `document`, keeping what `old` remembered of unchanged ones.
    fn new(document: Document, digest: Vec<u8>, old: &Users) -> Users {
        let by_name = document
            .entries()
            .map(|entry| {
                let old = old.by_name.get(entry.username()).map(Arc::as_ref);
                let user = User::new(entry.clone(), old);
                (entry.username().to_owned(), Arc::new(user))
            })
            .collect();
        Users { by_name, digest }
    }
}

/// What identifies a version of the file without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    modified: (i64, i64),
    changed: (i64, i64),
}

impl Stamp {
    /// The stamp of the file at `path` (following links), `None` if it cannot be read.
    fn of(path: &Path) -> Option<Stamp> {
        let meta = std::fs::metadata(path).ok()?;
        Some(Stamp {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.size(),
            modified: (meta.mtime(), meta.mtime_nsec()),
            changed: (meta.ctime(), meta.ctime_nsec()),
        })
    }
}

/// The password-file authentication method: `Pass` for a client without a username or
/// with one the file does not list, `Deny` (0x86) for a wrong password, `Allow` with the
/// username and the line's tenant for a right one.
pub struct PasswordFile {
    /// The file.
    path: PathBuf,
    /// Its users, swapped whole on reload.
    users: ArcSwap<Users>,
    /// The stamp of the file when last read (whether it parsed or not), so that a broken
    /// edit is reported once, not at every check.
    seen: Mutex<Option<Stamp>>,
    /// Runs and remembers the hashes.
    verifier: Verifier,
}

impl std::fmt::Debug for PasswordFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordFile")
            .field("path", &self.path)
            .field("users", &self.users())
            .finish_non_exhaustive()
    }
}

impl PasswordFile {
    /// Reads and parses the file at `path`.
    pub fn load(path: &Path) -> Result<PasswordFile, PasswdError> {
        let parallelism = std::thread::available_parallelism().map_or(1, |n| n.get());
        let file = PasswordFile {
            path: path.to_owned(),
            users: ArcSwap::from_pointee(Users::default()),
            seen: Mutex::new(None),
            verifier: Verifier::new(parallelism)?,
        };
        file.reload()?;
        Ok(file)
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many users it lists.
    pub fn users(&self) -> usize {
        self.users.load().by_name.len()
    }

    /// How many passwords were hashed to be checked so far, as opposed to answered from
    /// the memory of a right one or by a check in progress.
    pub fn hash_runs(&self) -> u64 {
        self.verifier.hash_runs()
    }

    /// Whether the file looks different from when it was last read (one `stat`).
    pub fn changed(&self) -> bool {
        Stamp::of(&self.path) != *self.seen.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reads the file again and swaps its users in if it parses. On an error the previous
    /// users stay, and the caller says so in the log.
    pub fn reload(&self) -> Result<ReloadOutcome, PasswdError> {
        // One reload at a time (the timer and SIGHUP), so that each starts from the last.
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        // Taken before the read: a change during it shows at the next check.
        *seen = Stamp::of(&self.path);
        let bytes = std::fs::read(&self.path).map_err(|source| PasswdError::Io {
            path: self.path.clone(),
            source,
        })?;
        let digest = ring::digest::digest(&ring::digest::SHA256, &bytes)
            .as_ref()
            .to_vec();
        let old = self.users.load_full();
        if old.digest == digest {
            return Ok(ReloadOutcome::Unchanged);
        }
        let document = Document::parse(&bytes).map_err(|e| e.at(&self.path))?;
        let users = Users::new(document, digest, &old);
        let count = users.by_name.len();
        self.users.store(Arc::new(users));
        Ok(ReloadOutcome::Reloaded { users: count })
    }

    /// Checks the file every `every` and reloads it when it [`changed`](Self::changed),
    /// logging the outcome (INFO with the user count, WARN when the previous users stay).
    /// The task ends when the method is dropped, or at once if `every` is zero.
    pub fn watch(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        let file = Arc::downgrade(self);
        tokio::spawn(async move {
            if every.is_zero() {
                return;
            }
            let mut timer = tokio::time::interval(every);
            timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            timer.tick().await;
            loop {
                timer.tick().await;
                let Some(file) = file.upgrade() else {
                    return;
                };
                if !file.changed() {
                    continue;
                }
                let reloaded = tokio::task::spawn_blocking(move || {
                    let outcome = file.reload();
                    (file, outcome)
                })
                .await;
                let Ok((file, outcome)) = reloaded else {
                    continue;
                };
                let path = file.path.display();
                match outcome {
                    Ok(ReloadOutcome::Reloaded { users }) => {
                        tracing::info!(%path, users, "password file reloaded");
                    }
                    Ok(ReloadOutcome::Unchanged) => {}
                    Err(error) => {
                        tracing::warn!(
                            %path, %error,
                            "password file not reloaded: the previous users stay"
                        );
                    }
                }
            }
        })
    }

    /// The verdict on a CONNECT's username and password.
    async fn judge(&self, username: Option<&str>, password: Option<&[u8]>) -> Verdict {
        let Some(username) = username else {
            return Verdict::Pass;
        };
        let user = self.users.load().by_name.get(username).cloned();
        let Some(user) = user else {
            return Verdict::Pass;
        };
        let right = match password {
            Some(password) => self.verifier.verify(&user, password).await,
            None => false,
        };
        if !right {
            return Verdict::Deny(Denial::new(DenyReason::BadPassword));
        }
        Verdict::Allow(Grant {
            username: Some(username.to_owned()),
            tenant: user.entry.tenant().map(str::to_owned),
            ..Grant::default()
        })
    }
}

impl Method for PasswordFile {
    fn name(&self) -> &'static str {
        "password_file"
    }

    fn check<'a>(&'a self, credentials: &'a Credentials<'a>) -> BoxFuture<'a, Verdict> {
        Box::pin(self.judge(credentials.username, credentials.password))
    }
}
