//! The password file as text: its users, comments and blank lines in order, so that an
//! edit (`herald passwd`) rewrites only the line it changes, and its atomic replacement.
//!
//! A line is `username:hash` (mosquitto's format) or `username:hash:tenant` (Herald's).
//! Blank lines and lines starting with `#` are kept and otherwise ignored; blanks around
//! the fields are ignored as mosquitto ignores them. Anything else is an error naming the
//! line; mosquitto would skip such a line silently, which hides a typo until the user it
//! meant cannot connect.

use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::hash::Hash;
use super::{PasswdError, Problem};

/// The longest username MQTT can carry.
const MAX_USERNAME_LEN: usize = 65_535;

/// One user of a password file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The CONNECT username it matches.
    username: String,
    /// Its password's hash.
    hash: Hash,
    /// The tenant it belongs to (Herald's third field).
    tenant: Option<String>,
}

impl Entry {
    /// A user, its name and tenant checked: a username may not be empty, contain `:` or
    /// control characters, start with `#` or blanks, or end with blanks; a tenant may not
    /// be empty or contain blanks, control characters, `/`, `+`, `#` or `:`.
    pub fn new(username: &str, hash: Hash, tenant: Option<&str>) -> Result<Entry, Problem> {
        check_username(username)?;
        if let Some(tenant) = tenant {
            check_tenant(tenant)?;
        }
        Ok(Entry {
            username: username.to_owned(),
            hash,
            tenant: tenant.map(str::to_owned),
        })
    }

    /// The username.
    pub fn username(&self) -> &str {
        &self.username
    }

    /// The password's hash.
    pub fn hash(&self) -> &Hash {
        &self.hash
    }

    /// The tenant, when the line names one.
    pub fn tenant(&self) -> Option<&str> {
        self.tenant.as_deref()
    }

    /// Whether `password` is this user's (slow on purpose for `$7$` and argon2id).
    pub fn verify(&self, password: &[u8]) -> bool {
        self.hash.verify(password)
    }

    /// The line that writes it.
    fn line(&self) -> String {
        match &self.tenant {
            Some(tenant) => format!("{}:{}:{tenant}", self.username, self.hash.as_str()),
            None => format!("{}:{}", self.username, self.hash.as_str()),
        }
    }
}

fn check_username(username: &str) -> Result<(), Problem> {
    if username.is_empty() {
        Err(Problem::EmptyUsername)
    } else if username.contains(':') {
        Err(Problem::ColonInUsername)
    } else if username.starts_with('#') {
        Err(Problem::CommentUsername)
    } else if username.chars().any(char::is_control) {
        Err(Problem::ControlInUsername)
    } else if username.trim() != username {
        Err(Problem::BlankAroundUsername)
    } else if username.len() > MAX_USERNAME_LEN {
        Err(Problem::LongUsername)
    } else {
        Ok(())
    }
}

fn check_tenant(tenant: &str) -> Result<(), Problem> {
    if tenant.is_empty() {
        Err(Problem::EmptyTenant)
    } else if tenant
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || "/+#:".contains(c))
    {
        Err(Problem::BadTenant)
    } else {
        Ok(())
    }
}

/// One line of the file, its text kept as it was read.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Line {
    /// A blank line or a comment.
    Other(String),
    /// A user.
    User {
        /// The line as read (or as written for an edited user).
        text: String,
        /// What it says.
        entry: Entry,
    },
}

/// A password file: its lines in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Document {
    /// Every line, without its `\n` (a `\r` before it is kept).
    lines: Vec<Line>,
}

impl Document {
    /// Parses a password file's bytes. The first bad line is reported by its number and
    /// what is wrong with it (never with its hash).
    pub fn parse(bytes: &[u8]) -> Result<Document, PasswdError> {
        let mut pieces: Vec<&[u8]> = bytes.split(|b| *b == b'\n').collect();
        if bytes.is_empty() || bytes.ends_with(b"\n") {
            pieces.pop();
        }
        let mut lines = Vec::with_capacity(pieces.len());
        let mut seen: HashMap<String, usize> = HashMap::new();
        for (index, piece) in pieces.into_iter().enumerate() {
            let number = index + 1;
            let at = |problem| PasswdError::Line {
                path: None,
                line: number,
                problem,
            };
            let text = std::str::from_utf8(piece).map_err(|_| at(Problem::NotUtf8))?;
            let line = match parse_line(text).map_err(at)? {
                None => Line::Other(text.to_owned()),
                Some(entry) => {
                    if let Some(first) = seen.insert(entry.username.clone(), number) {
                        return Err(at(Problem::Duplicate {
                            username: entry.username,
                            first,
                        }));
                    }
                    Line::User {
                        text: text.to_owned(),
                        entry,
                    }
                }
            };
            lines.push(line);
        }
        Ok(Document { lines })
    }

    /// Reads and parses the file at `path`.
    pub fn read(path: &Path) -> Result<Document, PasswdError> {
        let bytes = fs::read(path).map_err(|source| PasswdError::Io {
            path: path.to_owned(),
            source,
        })?;
        Document::parse(&bytes).map_err(|e| e.at(path))
    }

    /// The users, in file order.
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.lines.iter().filter_map(|line| match line {
            Line::User { entry, .. } => Some(entry),
            Line::Other(_) => None,
        })
    }

    /// The user named `username`.
    pub fn get(&self, username: &str) -> Option<&Entry> {
        self.entries().find(|e| e.username == username)
    }

    /// Adds a user at the end, or replaces the line of the user of that name where it is.
    /// Whether it replaced one.
    pub fn set(&mut self, entry: Entry) -> bool {
        let text = entry.line();
        for line in &mut self.lines {
            if let Line::User { entry: old, .. } = line
                && old.username == entry.username
            {
                *line = Line::User { text, entry };
                return true;
            }
        }
        self.lines.push(Line::User { text, entry });
        false
    }

    /// Removes the user named `username`; whether it was there.
    pub fn remove(&mut self, username: &str) -> bool {
        let before = self.lines.len();
        self.lines
            .retain(|line| !matches!(line, Line::User { entry, .. } if entry.username == username));
        self.lines.len() != before
    }

    /// The file's text: every line as it was read (edited users as written), each ended
    /// with `\n`.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for line in &self.lines {
            let (Line::Other(text) | Line::User { text, .. }) = line;
            out.push_str(text);
            out.push('\n');
        }
        out
    }

    /// Replaces the file at `path` with [`render`](Self::render)'s text, atomically: a
    /// temporary file in the same directory, written and flushed to disk, renamed over it,
    /// and the directory flushed. A symbolic link is followed to the file it names. The
    /// file keeps its permissions; a new one is made readable by its owner only (0600).
    pub fn write(&self, path: &Path) -> Result<(), PasswdError> {
        let target = fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
        let io_error = |source| PasswdError::Io {
            path: target.clone(),
            source,
        };
        let mode = match fs::metadata(&target) {
            Ok(meta) => meta.permissions().mode() & 0o7777,
            Err(e) if e.kind() == io::ErrorKind::NotFound => 0o600,
            Err(e) => return Err(io_error(e)),
        };
        let name = target.file_name().ok_or_else(|| {
            io_error(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a file name",
            ))
        })?;
        let dir = match target.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
            _ => PathBuf::from("."),
        };
        let mut temp_name = std::ffi::OsString::from(".");
        temp_name.push(name);
        temp_name.push(format!(".tmp{}", std::process::id()));
        let temp = dir.join(temp_name);
        let written = write_new(&temp, self.render().as_bytes(), mode)
            .and_then(|()| fs::rename(&temp, &target))
            .and_then(|()| fs::File::open(&dir)?.sync_all());
        if written.is_err() {
            let _ = fs::remove_file(&temp);
        }
        written.map_err(io_error)
    }
}

/// Writes `bytes` to a new file at `path` with permissions `mode`, and flushes it to disk.
/// A file left there by an earlier run that died is replaced.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let open = || {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
    };
    let mut file = match open() {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            fs::remove_file(path)?;
            open()?
        }
        other => other?,
    };
    file.write_all(bytes)?;
    file.set_permissions(fs::Permissions::from_mode(mode))?;
    file.sync_all()
}

/// A line's user, `None` for a blank line or a comment.
fn parse_line(text: &str) -> Result<Option<Entry>, Problem> {
    let line = text.trim();
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let fields: Vec<&str> = line.split(':').map(str::trim).collect();
    let hashes = |fields: &[&str]| fields.iter().any(|f| f.starts_with('$'));
    match fields.as_slice() {
        [_] => Err(Problem::NoColon),
        [_, hash, rest @ ..] if !rest.is_empty() && !hash.starts_with('$') && hashes(rest) => {
            Err(Problem::ColonInUsername)
        }
        [username, hash] => {
            check_username(username)?;
            Entry::new(username, Hash::parse(hash)?, None).map(Some)
        }
        [username, hash, tenant] => {
            check_username(username)?;
            Entry::new(username, Hash::parse(hash)?, Some(tenant)).map(Some)
        }
        _ => Err(Problem::TooManyFields),
    }
}
