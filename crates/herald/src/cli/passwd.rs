//! `herald passwd`: adds, changes and deletes users of a password file, as mosquitto_passwd
//! does, writing argon2id hashes (and Herald's tenant field).

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

use anyhow::{Context, bail};

use crate::auth::passwd::{Document, Entry, Hash};

/// `herald passwd [-c] [-b] [-D] [--tenant T] FILE USER [PASSWORD]`.
///
/// Without `-b` the password is read twice from the terminal, not echoed, or once (a line)
/// from standard input when it is not a terminal. Other lines and comments of the file are
/// kept as they were; the file is replaced atomically, and a new one is readable by its
/// owner only.
#[derive(Debug, Clone, clap::Args)]
pub struct PasswdArgs {
    /// Create the file, overwriting an existing one.
    #[arg(short = 'c', conflicts_with = "delete")]
    pub create: bool,
    /// Take the password from the command line (it shows in `ps` and the shell's history).
    #[arg(short = 'b', requires = "password")]
    pub batch: bool,
    /// Delete the user.
    #[arg(short = 'D', conflicts_with_all = ["batch", "tenant"])]
    pub delete: bool,
    /// The user's tenant (Herald's third field; "" removes it). Unset: an existing user
    /// keeps its tenant.
    #[arg(long)]
    pub tenant: Option<String>,
    /// The password file.
    pub file: PathBuf,
    /// The username.
    pub user: String,
    /// The password (with -b only).
    #[arg(requires = "batch")]
    pub password: Option<String>,
}

/// Runs `herald passwd`.
pub fn run(args: &PasswdArgs) -> anyhow::Result<()> {
    let mut document = if args.create {
        Document::default()
    } else if args.file.exists() {
        Document::read(&args.file)?
    } else {
        bail!(
            "{} does not exist (use -c to create it)",
            args.file.display()
        );
    };
    if args.delete {
        if !document.remove(&args.user) {
            bail!("user {:?} is not in {}", args.user, args.file.display());
        }
    } else {
        let password = match &args.password {
            Some(password) => password.clone(),
            None => read_password()?,
        };
        if password.is_empty() {
            bail!("empty password");
        }
        let tenant = match args.tenant.as_deref() {
            Some("") => None,
            Some(tenant) => Some(tenant.to_owned()),
            None => document
                .get(&args.user)
                .and_then(Entry::tenant)
                .map(str::to_owned),
        };
        let hash = Hash::argon2id(password.as_bytes())?;
        let entry = Entry::new(&args.user, hash, tenant.as_deref())
            .with_context(|| format!("cannot write user {:?}", args.user))?;
        document.set(entry);
    }
    document.write(&args.file)?;
    Ok(())
}

/// The password: twice from the terminal without echo, or a line from standard input.
fn read_password() -> anyhow::Result<String> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        let mut line = String::new();
        stdin
            .lock()
            .read_line(&mut line)
            .context("reading the password from standard input")?;
        let password = line.strip_suffix('\n').unwrap_or(&line);
        return Ok(password.strip_suffix('\r').unwrap_or(password).to_owned());
    }
    let first = prompt("Password: ")?;
    let second = prompt("Reenter password: ")?;
    if first != second {
        bail!("the passwords do not match");
    }
    Ok(first)
}

/// Asks for a line on the terminal with echo off, restoring the terminal afterwards.
fn prompt(question: &str) -> anyhow::Result<String> {
    let stdin = std::io::stdin();
    let mut stderr = std::io::stderr();
    let quiet = EchoOff::new(&stdin)?;
    write!(stderr, "{question}")?;
    stderr.flush()?;
    let mut line = String::new();
    let read = stdin.lock().read_line(&mut line);
    drop(quiet);
    writeln!(stderr)?;
    read.context("reading the password")?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

/// The terminal with echo off, until dropped.
struct EchoOff<'a> {
    /// The terminal.
    stdin: &'a std::io::Stdin,
    /// Its settings before.
    saved: rustix::termios::Termios,
}

impl<'a> EchoOff<'a> {
    fn new(stdin: &'a std::io::Stdin) -> anyhow::Result<EchoOff<'a>> {
        use rustix::termios::{LocalModes, OptionalActions, tcgetattr, tcsetattr};
        let saved = tcgetattr(stdin).context("reading the terminal's settings")?;
        let mut quiet = saved.clone();
        quiet.local_modes.remove(LocalModes::ECHO);
        // What was typed ahead was echoed: it is dropped, so that only what is typed after
        // the prompt is read, and never shown.
        tcsetattr(stdin, OptionalActions::Flush, &quiet).context("turning echo off")?;
        Ok(EchoOff { stdin, saved })
    }
}

impl Drop for EchoOff<'_> {
    fn drop(&mut self) {
        let restored = rustix::termios::tcsetattr(
            self.stdin,
            rustix::termios::OptionalActions::Now,
            &self.saved,
        );
        if let Err(e) = restored {
            eprintln!("cannot turn the terminal's echo back on: {e}");
        }
    }
}
