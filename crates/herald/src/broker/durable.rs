//! What the broker stores, and when: the bridge between MQTT state and the store.
//!
//! Every change is submitted to the journal under the lock of the state it describes (a
//! session's lock for its records, the retained map's lock for retained messages), so the
//! journal sees changes of one thing in the order they happened. The connection that needs a
//! change on disk before it answers (PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK, UNSUBACK, a
//! QoS 2 PUBLISH to a subscriber) holds that answer until the change's ticket is durable.
//!
//! What is stored:
//!
//! - a persistent session (clean session 0, or a v5 session expiry above 0): its record
//!   (client id, protocol, expiry, when it went offline, subscriptions), written when it
//!   attaches, subscribes, unsubscribes and detaches;
//! - a QoS 1/2 message once, with the list of stored sessions it was queued for (session,
//!   sequence number, QoS, retain flag, subscription ids); a delivery costs no write of its
//!   own;
//! - each stored session's acknowledgements: a watermark below which every sequence number
//!   is done, and the numbers done above it; one record per session, written at most once per
//!   batch. A message is deleted when every recipient is done (its `pins` count reaches 0);
//! - outbound QoS 2 packet ids and stages, inbound QoS 2 packet ids awaiting PUBREL;
//! - retained messages; the wills of open connections (published after a crash).
//!
//! QoS 0 messages and sessions that end with their connection are never stored.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use mqtt_codec::QoS;

use super::message::{Delivery, Message, SessionId};
use super::stored::{DurableSession, StoredMessage};
use crate::config::StoreConfig;
use crate::store::fjall::{FjallOptions, FjallStore};
use crate::store::journal::{Journal, Ticket};
use crate::store::record::{
    self, AckRecord, MessageRecord, Recipient, RetainedRecord, SessionRecord, StageRecord,
    WillRecord,
};
use crate::store::{Op, Space, Store, StoreError};

/// Ids handed out in one run are `boot << ID_BITS | n`: unique across restarts without
/// writing a counter per session or message.
pub(crate) const ID_BITS: u32 = 40;

/// The broker's durable side.
#[derive(Debug)]
pub struct Durable {
    /// Group commit in front of the store.
    pub journal: Journal,
    /// This run's boot number (the high bits of its ids).
    pub boot: u64,
    next_message: AtomicU64,
    /// New QoS 1/2 publications are refused: the disk limit is reached.
    refusing: AtomicBool,
    /// Where the store lives (for logs and the disk check).
    pub dir: PathBuf,
    max_disk_bytes: u64,
    min_free_disk_bytes: u64,
    /// Bytes the store took at the last check.
    pub disk_bytes: AtomicU64,
}

/// Milliseconds since the Unix epoch.
pub(crate) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The Unix time (ms) of `at`, a moment of this process.
pub(crate) fn unix_ms_of(at: Instant) -> u64 {
    unix_ms().saturating_sub(Instant::now().saturating_duration_since(at).as_millis() as u64)
}

/// The moment of this process at Unix time `ms`, `now_ms` being now (now, for a time in
/// the future).
pub(crate) fn instant_of(ms: u64, now_ms: u64) -> Instant {
    let age = std::time::Duration::from_millis(now_ms.saturating_sub(ms));
    Instant::now().checked_sub(age).unwrap_or_else(Instant::now)
}

impl Durable {
    /// Opens the disk store of `config`, bumps the boot number and starts the journal.
    pub fn open(config: &StoreConfig) -> Result<Durable, StoreError> {
        let store = FjallStore::open(
            &config.data_dir,
            &FjallOptions {
                memtable_bytes: config.memtable_bytes,
                max_journal_bytes: config.max_journal_bytes,
                fsync: config.fsync,
            },
        )?;
        Durable::with_store(std::sync::Arc::new(store), config)
    }

    /// Starts on `store` (a disk store, or a memory store in tests).
    pub fn with_store(
        store: std::sync::Arc<dyn Store>,
        config: &StoreConfig,
    ) -> Result<Durable, StoreError> {
        let mut boot = 0;
        store.scan(Space::Meta, &mut |k, v| {
            if k == b"boot" {
                boot = record::decode_u64(v).map_err(|message| StoreError::Damaged {
                    space: Space::Meta.name(),
                    key: "boot".into(),
                    message,
                })?;
            }
            Ok(())
        })?;
        boot += 1;
        store.apply(
            &[Op::Put(
                Space::Meta,
                b"boot".to_vec(),
                record::encode_u64(boot),
            )],
            true,
        )?;
        let disk_bytes = store.disk_bytes();
        Ok(Durable {
            journal: Journal::start(store, config.fsync),
            boot,
            next_message: AtomicU64::new(boot << ID_BITS | 1),
            refusing: AtomicBool::new(false),
            dir: config.data_dir.clone(),
            max_disk_bytes: config.max_disk_bytes,
            min_free_disk_bytes: config.min_free_disk_bytes,
            disk_bytes: AtomicU64::new(disk_bytes),
        })
    }

    /// The first session id of this run.
    pub fn first_session_id(&self) -> u64 {
        self.boot << ID_BITS | 1
    }

    /// Whether new QoS 1/2 publications are refused (disk limit).
    pub fn refusing(&self) -> bool {
        self.refusing.load(Ordering::Relaxed)
    }

    /// Why a new QoS 1/2 publication must be refused now, if it must: a store write failed,
    /// or the disk is past its limit.
    pub fn refusal(&self) -> Option<super::stats::RefuseReason> {
        if self.journal.failed() {
            Some(super::stats::RefuseReason::StoreFailed)
        } else if self.refusing() {
            Some(super::stats::RefuseReason::DiskLimit)
        } else {
            None
        }
    }

    /// Measures the disk: the store's size against `max_disk_bytes`, the file system's free
    /// space against `min_free_disk_bytes`. Returns (store bytes, free bytes).
    pub fn check_disk(&self) -> (u64, Option<u64>) {
        let used = self.journal.store().disk_bytes();
        self.disk_bytes.store(used, Ordering::Relaxed);
        let free = rustix::fs::statvfs(&self.dir)
            .ok()
            .map(|s| s.f_bavail.saturating_mul(s.f_frsize));
        let over = (self.max_disk_bytes > 0 && used > self.max_disk_bytes)
            || free.is_some_and(|f| f < self.min_free_disk_bytes);
        let was = self.refusing.swap(over, Ordering::Relaxed);
        if over && !was {
            tracing::warn!(
                store_bytes = used,
                free_bytes = free,
                max_disk_bytes = self.max_disk_bytes,
                min_free_disk_bytes = self.min_free_disk_bytes,
                "store disk limit reached: new QoS 1/2 publications are refused until space is freed"
            );
        } else if !over && was {
            tracing::info!(
                store_bytes = used,
                free_bytes = free,
                "store back under its disk limit"
            );
        }
        (used, free)
    }

    /// Whether `message` can be recorded: its PUBLISH, as the store keeps it, encodes.
    pub(super) fn recordable(&self, message: &Message) -> bool {
        let publish = message.as_published();
        publish.encoded_len(mqtt_codec::ProtocolVersion::V5).is_ok()
    }

    /// A new store id for a QoS 1/2 message, with its ticket reserved before it is routed,
    /// so that its deliveries can name it and wait for it. Submit its ops under the ticket.
    pub(super) fn number(&self) -> std::sync::Arc<StoredMessage> {
        let id = self.next_message.fetch_add(1, Ordering::Relaxed);
        StoredMessage::new(id, self.journal.reserve())
    }

    /// The op that stores `message` as `stored` for `recipients`; `Err` when it does not
    /// encode (logged).
    pub(super) fn message_op(
        &self,
        message: &Message,
        stored: &StoredMessage,
        recipients: Vec<Recipient>,
    ) -> Result<Op, ()> {
        let publish = message.as_published();
        let rec = MessageRecord {
            received_ms: unix_ms_of(message.received_at),
            origin: message.origin,
            recipients,
            publish,
            cluster: message
                .ident
                .get()
                .map(|(run, n)| (run, n, message.ident.at().to_bits())),
        };
        match rec.encode() {
            Ok(v) => Ok(Op::Create(
                Space::Messages,
                record::message_key(stored.id()),
                v,
            )),
            Err(e) => {
                tracing::error!(error = %e, "message cannot be stored: refused");
                Err(())
            }
        }
    }

    /// The op that stores (or, for an empty payload, deletes) a retained message; `Err`
    /// when it does not encode (logged).
    pub(super) fn retained_op(&self, tenant: &str, message: &Message) -> Result<Op, ()> {
        let key = record::retained_key(tenant, &message.topic);
        if message.payload.is_empty() {
            return Ok(Op::Delete(Space::Retained, key));
        }
        let mut publish = message.as_published();
        publish.retain = true;
        let rec = RetainedRecord {
            received_ms: unix_ms_of(message.received_at),
            publish,
        };
        match rec.encode() {
            Ok(v) => Ok(Op::Put(Space::Retained, key, v)),
            Err(e) => {
                tracing::error!(error = %e, "retained message cannot be stored: refused");
                Err(())
            }
        }
    }

    /// Deletes the record of the message stored as `id` (its last delivery is done).
    pub(super) fn delete_message(&self, id: u64) {
        self.journal
            .submit([Op::Delete(Space::Messages, record::message_key(id))]);
    }

    /// Writes the record of session `id`.
    pub(super) fn put_session(&self, id: SessionId, record: &SessionRecord) -> Ticket {
        self.journal.submit([Op::Put(
            Space::Sessions,
            record::session_key(id),
            record.encode(),
        )])
    }

    /// Writes session `id`'s acknowledgements; `unstage`: the QoS 2 stage record of that
    /// sequence number goes too.
    pub(super) fn acks(&self, id: SessionId, acks: &DurableSession, unstage: Option<u64>) {
        let rec = AckRecord {
            watermark: acks.watermark,
            above: acks.above.clone(),
        };
        let ack_op = Op::Put(Space::Acks, record::session_key(id), rec.encode());
        match unstage {
            Some(seq) => {
                let stage = Op::Delete(Space::Stages, record::stage_key(id, seq));
                self.journal.submit([ack_op, stage])
            }
            None => self.journal.submit([ack_op]),
        };
    }

    /// Records an outbound QoS 2 delivery's packet id and stage.
    pub(super) fn stage(&self, id: SessionId, seq: u64, packet_id: u16, released: bool) -> Ticket {
        let rec = StageRecord {
            packet_id,
            released,
        };
        self.journal.submit([Op::Put(
            Space::Stages,
            record::stage_key(id, seq),
            rec.encode(),
        )])
    }

    /// The op recording an inbound QoS 2 packet id.
    pub(super) fn inbound_op(id: SessionId, packet_id: u16) -> Op {
        Op::Put(
            Space::Inbound,
            record::inbound_key(id, packet_id),
            record::inbound_value(),
        )
    }

    /// Forgets an inbound QoS 2 packet id (PUBREL received).
    pub(super) fn release_inbound(&self, id: SessionId, packet_id: u16) -> Ticket {
        self.journal.submit([Op::Delete(
            Space::Inbound,
            record::inbound_key(id, packet_id),
        )])
    }

    /// Stores the will of session `id`'s connection of `generation` (`message`, published
    /// `delay` seconds after the connection ends), published after a crash.
    pub(super) fn put_will(
        &self,
        tenant: &str,
        id: SessionId,
        generation: u64,
        delay: u32,
        message: &Message,
    ) -> Result<Ticket, ()> {
        let rec = WillRecord {
            tenant: tenant.to_string(),
            delay,
            publish: message.as_published(),
        };
        match rec.encode() {
            Ok(v) => Ok(self
                .journal
                .submit([Op::Put(Space::Wills, will_key(id, generation), v)])),
            Err(e) => {
                tracing::error!(error = %e, "will cannot be stored: connection refused");
                Err(())
            }
        }
    }

    /// Forgets the will of session `id`'s connection of `generation`.
    pub(super) fn delete_will(&self, id: SessionId, generation: u64) {
        self.journal
            .submit([Op::Delete(Space::Wills, will_key(id, generation))]);
    }

    /// Removes the records of stored session `id`: its own, its acknowledgements, the QoS 2
    /// stages of `dropped` (its queue and inflight list, taken out) and its `inbound` QoS 2
    /// packet ids.
    pub(super) fn end_session(
        &self,
        id: SessionId,
        dropped: &[&Delivery],
        inbound: impl Iterator<Item = u16>,
    ) {
        let key = record::session_key(id);
        let mut ops = vec![
            Op::Delete(Space::Sessions, key.clone()),
            Op::Delete(Space::Acks, key),
        ];
        for d in dropped {
            if let (Some(stored), QoS::ExactlyOnce) = (&d.stored, d.qos) {
                ops.push(Op::Delete(Space::Stages, record::stage_key(id, stored.seq)));
            }
        }
        for packet_id in inbound {
            ops.push(Op::Delete(
                Space::Inbound,
                record::inbound_key(id, packet_id),
            ));
        }
        self.journal.submit(ops);
    }

    /// Writes `name`'s own settings (set through the admin API); `Err` when they do not
    /// serialize (logged).
    pub(super) fn put_tenant(
        &self,
        name: &str,
        limits: &crate::config::TenantLimits,
    ) -> Result<Ticket, ()> {
        let rec = record::TenantRecord {
            name: name.to_string(),
            limits: limits.clone(),
        };
        match rec.encode() {
            Ok(v) => Ok(self.journal.submit([Op::Put(
                Space::Tenants,
                record::TenantRecord::key(name),
                v,
            )])),
            Err(e) => {
                tracing::error!(tenant = name, error = %e, "tenant settings cannot be stored");
                Err(())
            }
        }
    }

    /// Forgets `name`'s own settings.
    pub(super) fn delete_tenant(&self, name: &str) -> Ticket {
        self.journal
            .submit([Op::Delete(Space::Tenants, record::TenantRecord::key(name))])
    }
}

/// A will's key: the session and the generation of the connection that set it.
pub(crate) fn will_key(session: u64, generation: u64) -> Vec<u8> {
    record::stage_key(session, generation)
}
