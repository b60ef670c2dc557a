//! A persistent subscriber of `crash`: online while the coordinator says so, offline (its
//! session kept by the broker) otherwise, reconnecting by itself after the broker dies. It
//! counts how often the application saw each message id.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;

use super::PROBE_ID;
use crate::client::{Client, ClientConfig, Failure, Target};
use crate::scenario::inbox::{Inbox, sequence};

/// What the coordinator wants the subscribers to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubMode {
    /// Disconnected; the broker queues for them.
    Offline,
    /// Connected and receiving.
    Online,
    /// Finished: disconnect and report.
    Done,
}

/// One subscriber's record, handed back at the end.
#[derive(Debug, Default)]
pub struct SubRecord {
    /// Client id.
    pub client_id: String,
    /// How often the application saw each message id.
    pub counts: HashMap<u64, u32>,
    /// Connections made (the session was made before, by the coordinator).
    pub connections: u64,
    /// Connections on which the broker had no session for it: its subscription is gone.
    pub sessions_lost: u64,
    /// Whether the probe published at the end (while it was offline) reached it.
    pub probe_received: bool,
}

/// A subscriber in the report.
#[derive(Debug, Clone, Serialize)]
pub struct SubSummary {
    /// Client id.
    pub client_id: String,
    /// Distinct message ids received.
    pub unique: u64,
    /// Connections made after the session was set up.
    pub connections: u64,
    /// Connections that found no session.
    pub sessions_lost: u64,
    /// Whether the final probe arrived.
    pub probe_received: bool,
}

/// Runs one subscriber until `mode` says `Done`; `delivered` counts every message seen.
pub async fn run(
    target: Target,
    cfg: ClientConfig,
    client_id: String,
    mut mode: watch::Receiver<SubMode>,
    delivered: Arc<AtomicU64>,
) -> SubRecord {
    let mut rec = SubRecord {
        client_id,
        ..SubRecord::default()
    };
    let mut inbox = Inbox::default();
    loop {
        let wanted = *mode.borrow_and_update();
        match wanted {
            SubMode::Done => return rec,
            SubMode::Offline => {
                let _ = mode.changed().await;
                continue;
            }
            SubMode::Online => {}
        }
        let client = match Client::connect(target, &cfg, &rec.client_id, false).await {
            Ok(c) => c,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        rec.connections += 1;
        if !client.session_present {
            rec.sessions_lost += 1;
            inbox.session_lost();
        }
        let _ = receive(client, &mut rec, &mut inbox, &mut mode, &delivered).await;
    }
}

/// Reads until the mode leaves `Online` (then disconnects politely) or the connection fails.
async fn receive(
    mut client: Client,
    rec: &mut SubRecord,
    inbox: &mut Inbox,
    mode: &mut watch::Receiver<SubMode>,
    delivered: &AtomicU64,
) -> Result<(), Failure> {
    let version = client.version;
    loop {
        tokio::select! {
            read = client.stream.read_buf(&mut client.rbuf) => {
                if read? == 0 {
                    return Err(Failure::Closed);
                }
                while let Some(packet) = client.try_decode()? {
                    let Some(p) = inbox.on_packet(packet, version, &mut client.wbuf) else {
                        continue;
                    };
                    match sequence(&p.payload) {
                        Some(PROBE_ID) => rec.probe_received = true,
                        Some(id) => *rec.counts.entry(id).or_default() += 1,
                        None => {}
                    }
                    delivered.fetch_add(1, Ordering::Relaxed);
                }
                client.flush().await?;
            }
            changed = mode.changed() => {
                if changed.is_ok() && *mode.borrow() == SubMode::Online {
                    continue;
                }
                client.flush().await?;
                return Ok(client.disconnect().await?);
            }
        }
    }
}

impl SubRecord {
    /// The summary of this record for the report.
    pub fn summary(&self) -> SubSummary {
        SubSummary {
            client_id: self.client_id.clone(),
            unique: self.counts.len() as u64,
            connections: self.connections,
            sessions_lost: self.sessions_lost,
            probe_received: self.probe_received,
        }
    }
}
