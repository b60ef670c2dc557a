//! What is wrong with an ACL file or a claim's rules.

use std::path::{Path, PathBuf};

use mqtt_codec::TopicError;

/// Why an ACL file or a claim's rules were refused.
#[derive(Debug, thiserror::Error)]
pub enum AclError {
    /// The file could not be read.
    #[error("reading {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A line of the file is wrong.
    #[error("{}line {line}: {problem}", in_file(path.as_deref()))]
    Line {
        /// The file, when it was read from one.
        path: Option<PathBuf>,
        /// The line's number, from 1.
        line: usize,
        /// What is wrong with it.
        problem: Problem,
    },
    /// An entry of a token's or the callout's rules is wrong.
    #[error("ACL claim {field}[{index}]: {problem}")]
    Claim {
        /// The list: `pub`, `sub` or `deny`.
        field: &'static str,
        /// The entry's position in it, from 0.
        index: usize,
        /// What is wrong with it.
        problem: Problem,
    },
}

fn in_file(path: Option<&Path>) -> String {
    path.map(|p| format!("{}: ", p.display()))
        .unwrap_or_default()
}

/// What is wrong with one line or entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// A line starting with a word that is not a keyword.
    #[error("unknown keyword {0:?} (expected topic, pattern, user or tenant)")]
    UnknownKeyword(String),
    /// `topic` or `pattern` with nothing after it.
    #[error("{0} without a topic")]
    MissingTopic(&'static str),
    /// `user` with nothing after it.
    #[error("user without a username")]
    MissingUsername,
    /// `tenant` with nothing after it.
    #[error("tenant without a name")]
    MissingTenant,
    /// `topic WORD TOPIC` where WORD is not an access word.
    #[error("unknown access {0:?} (expected read, write, readwrite or deny)")]
    UnknownAccess(String),
    /// A topic filter that is not valid.
    #[error("invalid topic filter {filter:?}: {error}")]
    InvalidFilter {
        /// The filter as written.
        filter: String,
        /// What is wrong with it.
        error: TopicError,
    },
    /// Bytes that are not UTF-8.
    #[error("not UTF-8")]
    NotUtf8,
}
