//! Where `herald pub`'s messages come from: one payload (`-m`, `-f`, `-s`, `-n`), sent
//! `--repeat` times `--repeat-delay` apart, or the lines of standard input (`-l`).
//!
//! Lines are read on a thread of their own (standard input blocks) into a small bounded
//! channel: while the client cannot send (disconnected, or its in-flight window full) the
//! channel fills, the thread stops reading, and the pipe pushes back on whoever writes into
//! it. Nothing is dropped and memory stays bounded.

use std::io::{BufRead, Read};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until};

use super::args::PubArgs;

/// Lines read ahead of the client at most.
const LINES_AHEAD: usize = 64;

/// The messages to publish.
pub(super) enum Source {
    /// One payload, `remaining` more times, `delay` apart.
    Repeat {
        /// The payload.
        payload: Bytes,
        /// Messages still to send.
        remaining: u32,
        /// Time between two of them.
        delay: Duration,
        /// When the next may go.
        next_at: Instant,
    },
    /// The lines of standard input, from the reading thread; `None` once they end.
    Lines(mpsc::Receiver<std::io::Result<Bytes>>),
}

impl Source {
    /// The source `args` names. Files and `-s` input are read now, so that a missing file
    /// is an error before connecting.
    pub(super) fn new(args: &PubArgs) -> anyhow::Result<Source> {
        let payload = if let Some(m) = &args.message {
            Bytes::from(m.clone().into_bytes())
        } else if let Some(path) = &args.file {
            let data = std::fs::read(path).with_context(|| format!("-f {}", path.display()))?;
            Bytes::from(data)
        } else if args.stdin_file {
            let mut data = Vec::new();
            std::io::stdin()
                .read_to_end(&mut data)
                .context("-s: reading standard input")?;
            Bytes::from(data)
        } else if args.stdin_line {
            return Ok(Source::Lines(spawn_line_reader()));
        } else {
            Bytes::new()
        };
        Ok(Source::Repeat {
            payload,
            remaining: args.repeat,
            delay: Duration::from_secs_f64(args.repeat_delay),
            next_at: Instant::now(),
        })
    }

    /// The next payload, when it is due; `None` when there are no more. Cancel-safe: the
    /// state changes only once a payload is returned.
    pub(super) async fn next(&mut self) -> anyhow::Result<Option<Bytes>> {
        match self {
            Source::Repeat {
                payload,
                remaining,
                delay,
                next_at,
            } => {
                if *remaining == 0 {
                    return Ok(None);
                }
                sleep_until(*next_at).await;
                *remaining -= 1;
                *next_at = Instant::now() + *delay;
                Ok(Some(payload.clone()))
            }
            Source::Lines(rx) => match rx.recv().await {
                Some(line) => Ok(Some(line.context("-l: reading standard input")?)),
                None => Ok(None),
            },
        }
    }
}

impl Source {
    /// Messages known to be waiting: repeats not yet sent, lines read and not yet taken.
    pub(super) fn waiting(&self) -> usize {
        match self {
            Source::Repeat { remaining, .. } => *remaining as usize,
            Source::Lines(rx) => rx.len(),
        }
    }
}

/// Starts the thread that reads standard input line by line.
fn spawn_line_reader() -> mpsc::Receiver<std::io::Result<Bytes>> {
    let (tx, rx) = mpsc::channel(LINES_AHEAD);
    std::thread::spawn(move || {
        let mut input = std::io::stdin().lock();
        loop {
            let mut line = Vec::new();
            let line = match input.read_until(b'\n', &mut line) {
                Ok(0) => return,
                Ok(_) => Ok(Bytes::from(strip_line_end(line))),
                Err(e) => Err(e),
            };
            let failed = line.is_err();
            // An error here: the client is gone, nobody is left to read.
            if tx.blocking_send(line).is_err() || failed {
                return;
            }
        }
    });
    rx
}

/// The line without its `\n` or `\r\n`.
fn strip_line_end(mut line: Vec<u8>) -> Vec<u8> {
    if line.last() == Some(&b'\n') {
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_ends_are_cut() {
        assert_eq!(strip_line_end(b"a\r\n".to_vec()), b"a");
        assert_eq!(strip_line_end(b"a\n".to_vec()), b"a");
        assert_eq!(
            strip_line_end(b"a".to_vec()),
            b"a",
            "the last line may have none"
        );
        assert_eq!(
            strip_line_end(b"\n".to_vec()),
            b"",
            "an empty line is an empty message"
        );
    }

    #[tokio::test]
    async fn repeats_are_spaced() {
        let mut s = Source::Repeat {
            payload: Bytes::from_static(b"p"),
            remaining: 3,
            delay: Duration::from_millis(50),
            next_at: Instant::now(),
        };
        let start = Instant::now();
        for _ in 0..3 {
            assert_eq!(s.next().await.unwrap().as_deref(), Some(&b"p"[..]));
        }
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(100), "{took:?}: two delays");
        assert!(took < Duration::from_secs(5), "{took:?}");
        assert_eq!(s.next().await.unwrap(), None);
    }
}
