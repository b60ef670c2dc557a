//! What the clients say on standard error. Standard output belongs to the messages
//! (`herald sub` prints them there, and scripts read it), so progress and errors go to stderr,
//! each line prefixed with the command.

use std::fmt::Display;

/// Where and how much to report.
#[derive(Debug, Clone, Copy)]
pub(super) struct Log {
    /// "pub" or "sub": the prefix of every line.
    pub(super) name: &'static str,
    /// `--quiet`: no progress lines.
    pub(super) quiet: bool,
    /// `--debug`: every packet, both ways.
    pub(super) debug: bool,
}

impl Log {
    /// Progress: connections, subscriptions, reconnect waits.
    pub(super) fn info(&self, message: impl Display) {
        if !self.quiet {
            eprintln!("herald {}: {message}", self.name);
        }
    }

    /// Something the user must hear of even with `--quiet`: a refused message, a fatal error.
    pub(super) fn error(&self, message: impl Display) {
        eprintln!("herald {}: {message}", self.name);
    }

    /// Packet traces, with `--debug` only.
    pub(super) fn debug(&self, message: impl Display) {
        if self.debug {
            eprintln!("herald {}: {message}", self.name);
        }
    }
}
