//! A persistent session moving to the node its client came back to: the requests between
//! the two nodes and what travels in them (the steps are `broker::moving`'s).
//!
//! The node the client arrives at asks the node that held the client id twice, on that
//! node's let-go subject (`registry`): `MOVE` (let the connection go, keep the session,
//! answer with its record: expiry and subscriptions) and, once this node's copies of the
//! subscriptions are on NATS, `OWED` (hand over what the session holds and end it there).
//! `OWED` is answered in chunks below NATS's largest payload on an inbox of the asker's,
//! the last one flagged; each item is a delivery (its message as the store records it,
//! with its QoS, retain flag and subscription identifiers as the session sees them, its
//! cluster identity, and, in flight, its packet id and stage) or an inbound QoS 2 packet
//! id.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use mqtt_codec::QoS;

use super::Cluster;
use crate::broker::Broker;
use crate::broker::durable::{instant_of, unix_ms, unix_ms_of};
use crate::broker::message::{At, Delivery, Message};
use crate::broker::session::moving::Owed;
use crate::broker::session::{Inflight, Stage};
use crate::store::record::{MessageRecord, Recipient, SessionRecord};

/// What a request on a node's let-go subject asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ask {
    /// Let go of the client id: close the connection, end the session.
    LetGo = 0,
    /// Let go of the connection, keep the session, answer with its record.
    Move = 1,
    /// Hand over what the session holds and end it.
    Owed = 2,
}

/// How long each step waits for the other node.
const STEP_WAIT: Duration = Duration::from_secs(3);

/// How long the node waits for NATS to have the arriving session's subscriptions.
const SUBSCRIBED_WAIT: Duration = Duration::from_secs(5);

/// How long a node handing a session over waits for its connection to close first.
const DETACH_WAIT: Duration = Duration::from_secs(1);

/// How long a node handing a session over waits for the messages the asking node
/// published before the session moved.
const SEEN_WAIT: Duration = Duration::from_secs(1);

/// A chunk's flags: the last one; the session was not there (nothing handed over).
pub const LAST: u8 = 1;
/// See `LAST`.
pub const NONE: u8 = 2;

/// An item's kinds.
const QUEUED: u8 = 0;
const SENT: u8 = 1;
const RELEASED: u8 = 2;
const INBOUND: u8 = 3;
const DONE: u8 = 4;
const FROM: u8 = 5;

/// A request: what is asked, the newer claim's revision, the tenant and the client id.
pub fn request(ask: Ask, tenant: &str, client_id: &str, revision: u64) -> Bytes {
    Request {
        ask,
        tenant: tenant.to_string(),
        client_id: client_id.to_string(),
        revision,
        seen: 0,
    }
    .encode()
}

/// A request read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// What is asked.
    pub ask: Ask,
    /// The tenant.
    pub tenant: String,
    /// The client id.
    pub client_id: String,
    /// The newer claim's revision.
    pub revision: u64,
    /// `Ask::Owed`: the highest stream sequence the asking node had been acknowledged (its
    /// own messages up to it are in the stream, republished to the node asked).
    pub seen: u64,
}

impl Request {
    /// Its bytes.
    pub fn encode(&self) -> Bytes {
        let (tenant, client_id) = (&self.tenant, &self.client_id);
        let mut out = Vec::with_capacity(21 + tenant.len() + client_id.len());
        out.push(self.ask as u8);
        out.extend_from_slice(&self.revision.to_be_bytes());
        out.extend_from_slice(&self.seen.to_be_bytes());
        out.extend_from_slice(&(tenant.len() as u32).to_be_bytes());
        out.extend_from_slice(tenant.as_bytes());
        out.extend_from_slice(client_id.as_bytes());
        out.into()
    }
}

/// Reads a request.
pub fn parse_request(bytes: &[u8]) -> Option<Request> {
    let ask = match bytes.first()? {
        0 => Ask::LetGo,
        1 => Ask::Move,
        2 => Ask::Owed,
        _ => return None,
    };
    let word = |at: usize| Some(u64::from_be_bytes(bytes.get(at..at + 8)?.try_into().ok()?));
    let (revision, seen) = (word(1)?, word(9)?);
    let len = u32::from_be_bytes(bytes.get(17..21)?.try_into().ok()?) as usize;
    let tenant = std::str::from_utf8(bytes.get(21..21usize.checked_add(len)?)?).ok()?;
    let client_id = std::str::from_utf8(bytes.get(21 + len..)?).ok()?;
    Some(Request {
        ask,
        tenant: tenant.to_string(),
        client_id: client_id.to_string(),
        revision,
        seen,
    })
}

/// One delivery as it travels.
fn encode_delivery(kind: u8, packet_id: u16, d: &Delivery, out: &mut Vec<u8>) -> bool {
    let record = MessageRecord {
        received_ms: unix_ms_of(d.message.received_at),
        origin: 0,
        recipients: vec![Recipient {
            session: 0,
            seq: 0,
            qos: d.qos,
            retain: d.retain,
            subscription_ids: d.subscription_identifiers.to_vec(),
        }],
        publish: d.message.as_published(),
        cluster: d
            .message
            .ident
            .get()
            .map(|(run, n)| (run, n, d.message.ident.at().to_bits())),
    };
    let Ok(body) = record.encode() else {
        return false;
    };
    let (run, n) = d.message.ident.get().unwrap_or_default();
    out.push(kind);
    out.extend_from_slice(&packet_id.to_be_bytes());
    out.extend_from_slice(&run.to_be_bytes());
    out.extend_from_slice(&n.to_be_bytes());
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    true
}

/// What `owed` holds, in chunks of at most about `limit` bytes (an item larger than that
/// goes alone); `None` (one chunk saying so) when the session was not there.
pub fn encode_owed(owed: Option<&Owed>, limit: usize) -> Vec<Vec<u8>> {
    let Some(owed) = owed else {
        return vec![vec![LAST | NONE]];
    };
    let mut chunks = vec![vec![0u8]];
    let mut push = |item: Vec<u8>| {
        let last = chunks.last_mut().expect("one chunk at least");
        if last.len() > 1 && last.len() + item.len() > limit {
            chunks.push(vec![0u8]);
        }
        chunks.last_mut().expect("one chunk at least").extend(item);
    };
    for id in &owed.inbound {
        let mut item = vec![INBOUND];
        item.extend_from_slice(&id.to_be_bytes());
        item.extend_from_slice(&[0; 20]);
        push(item);
    }
    for i in &owed.inflight {
        let kind = match i.stage {
            Stage::Sent => SENT,
            Stage::Released => RELEASED,
        };
        let mut item = Vec::new();
        if encode_delivery(kind, i.packet_id, &i.delivery, &mut item) {
            push(item);
        }
    }
    for d in &owed.queue {
        let mut item = Vec::new();
        if encode_delivery(QUEUED, 0, d, &mut item) {
            push(item);
        }
    }
    if owed.from > 0 {
        let mut item = vec![FROM];
        item.extend_from_slice(&[0; 18]);
        item.extend_from_slice(&8u32.to_be_bytes());
        item.extend_from_slice(&owed.from.to_be_bytes());
        push(item);
    }
    for ((run, n), at) in &owed.done {
        let mut item = vec![DONE, 0, 0];
        item.extend_from_slice(&run.to_be_bytes());
        item.extend_from_slice(&n.to_be_bytes());
        item.extend_from_slice(&8u32.to_be_bytes());
        item.extend_from_slice(&at.to_be_bytes());
        push(item);
    }
    if let Some(last) = chunks.last_mut() {
        last[0] |= LAST;
    }
    chunks
}

/// Why a chunk does not read.
#[derive(Debug, thiserror::Error)]
#[error("a handed-over session does not read")]
pub struct ChunkError;

/// Adds a chunk's items to `owed`; returns its flags.
pub fn decode_chunk(bytes: &[u8], owed: &mut Owed) -> Result<u8, ChunkError> {
    let (&flags, mut rest) = bytes.split_first().ok_or(ChunkError)?;
    // Flags are LAST, or LAST | NONE alone; nothing else.
    let none = flags == LAST | NONE && rest.is_empty();
    if flags & !LAST != 0 && !none {
        return Err(ChunkError);
    }
    let now = unix_ms();
    while !rest.is_empty() {
        let head = rest.get(..23).ok_or(ChunkError)?;
        let kind = head[0];
        let packet_id = u16::from_be_bytes([head[1], head[2]]);
        let word = |b: &[u8]| u64::from_be_bytes(b.try_into().unwrap_or_default());
        let (run, n) = (word(&head[3..11]), word(&head[11..19]));
        let len = u32::from_be_bytes(head[19..23].try_into().map_err(|_| ChunkError)?) as usize;
        let body = rest.get(23..23usize.checked_add(len).ok_or(ChunkError)?);
        let body = body.ok_or(ChunkError)?;
        rest = &rest[23 + len..];
        if kind == INBOUND {
            owed.inbound.push(packet_id);
            continue;
        }
        if kind == FROM {
            let from = <[u8; 8]>::try_from(body).map_err(|_| ChunkError)?;
            owed.from = u64::from_be_bytes(from);
            continue;
        }
        if kind == DONE {
            let at = <[u8; 8]>::try_from(body).map_err(|_| ChunkError)?;
            owed.done.push(((run, n), u64::from_be_bytes(at)));
            continue;
        }
        let record = MessageRecord::decode(body).map_err(|_| ChunkError)?;
        let [recipient] = <[Recipient; 1]>::try_from(record.recipients).map_err(|_| ChunkError)?;
        let received_at = instant_of(record.received_ms, now);
        let message = Message::restored(record.publish, received_at, 0);
        if (run, n) != (0, 0) {
            message.ident.set(run, n);
        }
        if let Some((_, _, at)) = record.cluster {
            message.ident.set_at(At::from_bits(at));
        }
        let delivery = Delivery {
            message: Arc::new(message),
            qos: recipient.qos,
            retain: recipient.retain,
            subscription_identifiers: recipient.subscription_ids.into(),
            stored: None,
        };
        let stage = match kind {
            QUEUED => {
                owed.queue.push(delivery);
                continue;
            }
            SENT => Stage::Sent,
            RELEASED => Stage::Released,
            _ => return Err(ChunkError),
        };
        if delivery.qos == QoS::AtMostOnce {
            return Err(ChunkError);
        }
        owed.inflight.push(Inflight {
            packet_id,
            delivery,
            stage,
        });
    }
    Ok(flags)
}

/// How long a stopping node answers for its sessions at most.
const STOPPING_GRACE: Duration = Duration::from_secs(3);

/// A stopping node stops waiting once no session was asked for during this long.
const STOPPING_QUIET: Duration = Duration::from_millis(500);

impl Cluster {
    /// Before a stopping node leaves: its clients, just disconnected, reconnect to other
    /// nodes and ask for their persistent sessions; this node answers while they come
    /// (until half a second passes without a request, three seconds at most, or it holds no
    /// session), so that a node stopped at once hands over what it can.
    pub async fn hand_over_remaining(&self, broker: &Broker) {
        let held = || {
            broker
                .tenants()
                .iter()
                .map(|t| t.sessions.len())
                .sum::<usize>()
        };
        let started = Instant::now();
        let mut last = self.registry_stats.handed_over.load(Ordering::Relaxed);
        let mut quiet_since = started;
        while held() > 0 && started.elapsed() < STOPPING_GRACE {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let now = self.registry_stats.handed_over.load(Ordering::Relaxed);
            if now != last {
                last = now;
                quiet_since = Instant::now();
            } else if quiet_since.elapsed() >= STOPPING_QUIET {
                break;
            }
        }
    }

    /// Takes `tenant`'s `client_id`'s session from node `before` (this node claimed the
    /// client id with `revision`; the client asked to resume). Whether the session moved
    /// here; if not, the CONNECT goes on with a new session (the old one was let go, or
    /// its node is gone). With replicated sessions, a node that is gone or does not answer
    /// is resumed from the bucket instead; `Err` when that could not be done now (the
    /// CONNECT is refused and the client retries; the session stays where it was).
    pub(super) async fn move_session(
        &self,
        broker: &Arc<Broker>,
        before: &str,
        tenant: &str,
        client_id: &str,
        revision: u64,
    ) -> Result<bool, super::ClaimError> {
        let subject = self.let_go_subject(before);
        let asked = self.client.request(
            subject.clone(),
            request(Ask::Move, tenant, client_id, revision),
        );
        let record = match tokio::time::timeout(STEP_WAIT, asked).await {
            Ok(Ok(answer)) if answer.payload.is_empty() => return Ok(false), // let go, or none
            Ok(Ok(answer)) => SessionRecord::decode(&answer.payload).ok(),
            Ok(Err(e)) if e.kind() == async_nats::RequestErrorKind::NoResponders => {
                // The node is gone: its session waits for it, unless sessions are
                // replicated.
                return self.resume_or_new(broker, tenant, client_id, None).await;
            }
            _ => None,
        };
        let Some(record) = record else {
            // No answer in time (or none that reads): the node may still act on the request
            // later, and must then not keep the session.
            self.registry_stats
                .moves_failed
                .fetch_add(1, Ordering::Relaxed);
            let let_go = (subject.as_str(), revision);
            return self
                .resume_or_new(broker, tenant, client_id, Some(let_go))
                .await;
        };
        let tenant = broker.tenant(tenant);
        let session = broker.prepare_moved(&tenant, record);
        // Unless it settles, the session made here goes (a CONNECT that times out meanwhile
        // drops this future).
        let mut made = Made {
            broker,
            tenant: &tenant,
            session: Some(&session),
        };
        // Every node sends this node the session's messages from now on.
        let issued = broker.peers_issued();
        let subscribed = std::future::poll_fn(|cx| broker.poll_confirmed(issued, cx));
        if tokio::time::timeout(SUBSCRIBED_WAIT, subscribed)
            .await
            .is_err()
        {
            tracing::warn!(
                client_id,
                "a moving session's subscriptions are not confirmed by NATS yet"
            );
        }
        // Messages this node published before the session was here went to the node it
        // leaves: that node hands it over once it has them (`answer_move`).
        let asking = Request {
            ask: Ask::Owed,
            tenant: tenant.name.to_string(),
            client_id: client_id.to_string(),
            revision,
            seen: self.durable_stats.last_seq.load(Ordering::Relaxed),
        };
        let owed = self.owed(&subject, &asking.encode()).await;
        match owed {
            Some(owed) => {
                made.session = None;
                broker.settle_moved(&tenant, &session, owed);
                self.registry_stats.moved.fetch_add(1, Ordering::Relaxed);
                Ok(true)
            }
            None => {
                tracing::warn!(client_id, "a session's node did not hand it over");
                drop(made); // the session made here goes
                self.registry_stats
                    .moves_failed
                    .fetch_add(1, Ordering::Relaxed);
                let let_go = (subject.as_str(), revision);
                self.resume_or_new(broker, &tenant.name, client_id, Some(let_go))
                    .await
            }
        }
    }

    /// A session that did not move: resumed from the replicated bucket if sessions are
    /// replicated (`Ok(true)`), else the client gets a new one (`Ok(false)`). The node that
    /// held it (`let_go`: its subject and this node's claim), if it may still keep it, is
    /// told to let go once the session is resumed here or there is none to resume; when
    /// the bucket cannot be read now, nobody lets go and the CONNECT is refused.
    pub(super) async fn resume_or_new(
        &self,
        broker: &Arc<Broker>,
        tenant: &str,
        client_id: &str,
        let_go: Option<(&str, u64)>,
    ) -> Result<bool, super::ClaimError> {
        let resumed = match self.replicates() {
            true => self.resume_replica(broker, tenant, client_id).await,
            false => Resumed::Nothing,
        };
        let resumed = match resumed {
            Resumed::Yes => true,
            Resumed::Nothing => false,
            Resumed::Failed(error) => {
                tracing::warn!(client_id, %error, "a replicated session could not be resumed now: the CONNECT is refused");
                return Err(super::ClaimError::Resume(error));
            }
        };
        if let Some((subject, revision)) = let_go {
            self.let_go_later(subject, tenant, client_id, revision)
                .await;
        }
        Ok(resumed)
    }
}

/// How resuming a session from the replicated bucket ended (`replica`).
#[derive(Debug)]
pub(super) enum Resumed {
    /// Resumed here.
    Yes,
    /// The bucket has no (live) session for the client id.
    Nothing,
    /// The bucket or the stream could not be read now.
    Failed(String),
}

/// A session made for a move and not yet settled or abandoned: abandoned when dropped.
pub(super) struct Made<'a> {
    pub(super) broker: &'a Arc<Broker>,
    pub(super) tenant: &'a Arc<crate::broker::Tenant>,
    pub(super) session: Option<&'a Arc<crate::broker::session::Session>>,
}

impl Drop for Made<'_> {
    fn drop(&mut self) {
        if let Some(session) = self.session.take() {
            self.broker.abandon_moved(self.tenant, session);
        }
    }
}

impl Cluster {
    /// Tells the node on `subject` to let go of the client id, without waiting: after a
    /// move that did not finish, it ends what it kept (after the request it may not have
    /// answered yet: NATS keeps one sender's messages in order).
    async fn let_go_later(&self, subject: &str, tenant: &str, client_id: &str, revision: u64) {
        let request = request(Ask::LetGo, tenant, client_id, revision);
        let _ = self.client.publish(subject.to_string(), request).await;
    }

    /// Asks for what a session holds; `None` if it was not there or the answer did not
    /// come whole.
    async fn owed(&self, subject: &str, request: &Bytes) -> Option<Owed> {
        let inbox = self.client.new_inbox();
        let mut chunks = self.client.subscribe(inbox.clone()).await.ok()?;
        self.client
            .publish_with_reply(subject.to_string(), inbox, request.clone())
            .await
            .ok()?;
        let deadline = Instant::now() + STEP_WAIT;
        let mut owed = Owed::default();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let chunk = tokio::time::timeout(left, chunks.next()).await.ok()??;
            let flags = decode_chunk(&chunk.payload, &mut owed).ok()?;
            if flags & NONE != 0 {
                return None;
            }
            if flags & LAST != 0 {
                return Some(owed);
            }
        }
    }

    /// Answers a node taking a session along: step 1 (`Ask::Move`) or step 3
    /// (`Ask::Owed`), on `reply`.
    pub(super) async fn answer_move(
        &self,
        broker: &Broker,
        ask: Ask,
        (tenant, client_id, revision, seen): (&str, &str, u64, u64),
        reply: async_nats::Subject,
    ) {
        if ask == Ask::Move {
            let record = broker.release_for_move(tenant, client_id, revision);
            let body = record.map(|r| r.encode()).unwrap_or_default();
            let _ = self.client.publish(reply, body.into()).await;
            return;
        }
        // The connection was asked to close at `Ask::Move`: once it has (its will decided
        // as for a session that lives on), the session is handed over.
        let connected = || {
            let tenant = broker.find_tenant(tenant);
            let session = tenant.and_then(|t| t.sessions.get(client_id));
            session.is_some_and(|s| s.lock().connected())
        };
        let deadline = Instant::now() + DETACH_WAIT;
        while connected() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // The asking node's own messages up to `seen` were routed there before the session
        // was, and come to the session here: handed over once routed here (NATS delivers
        // the stream's republished messages in order: any at or past `seen` says those
        // before it came), or after `SEEN_WAIT`.
        let deadline = Instant::now() + SEEN_WAIT;
        if self.gap.routed.load(Ordering::Relaxed) < seen {
            while self.gap.routed.load(Ordering::Relaxed) < seen && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            // Their readers route what they hold.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.keep_replica(tenant, client_id);
        let owed = broker.hand_over(tenant, client_id, revision);
        if owed.is_some() {
            self.registry_stats
                .handed_over
                .fetch_add(1, Ordering::Relaxed);
        }
        let limit = (self.client.server_info().max_payload / 2).max(64 * 1024);
        for chunk in encode_owed(owed.as_ref(), limit) {
            let _ = self.client.publish(reply.clone(), chunk.into()).await;
        }
        let _ = self.client.flush().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(topic: &str, qos: QoS, ident: (u64, u64)) -> Delivery {
        let mut p = mqtt_codec::Publish::new(topic, b"payload".to_vec());
        p.qos = qos;
        p.packet_id = 1;
        p.properties.user_properties.push(("k".into(), "v".into()));
        let message = Message::restored(p, std::time::Instant::now(), 0);
        message.ident.set(ident.0, ident.1);
        Delivery {
            message: Arc::new(message),
            qos,
            retain: true,
            subscription_identifiers: vec![7, 9].into(),
            stored: None,
        }
    }

    #[test]
    fn a_request_reads_back() {
        let r = Request {
            ask: Ask::Owed,
            tenant: "acme".into(),
            client_id: "dev/1 é".into(),
            revision: 42,
            seen: 7,
        }
        .encode();
        let back = parse_request(&r).unwrap();
        assert_eq!(
            (
                back.ask,
                &*back.tenant,
                &*back.client_id,
                back.revision,
                back.seen
            ),
            (Ask::Owed, "acme", "dev/1 é", 42, 7)
        );
        assert_eq!(parse_request(&r[..20]), None);
        assert_eq!(parse_request(&[9; 20]), None);
    }

    #[test]
    fn what_a_session_holds_comes_back_whole_in_chunks() {
        let mut owed = Owed {
            inbound: vec![3, 4],
            done: vec![
                ((5, 90), At::Seq(12).to_bits()),
                ((5, 91), At::After(8).to_bits()),
            ],
            from: 11,
            ..Owed::default()
        };
        owed.inflight.push(Inflight {
            packet_id: 11,
            delivery: delivery("a/inflight", QoS::ExactlyOnce, (5, 1)),
            stage: Stage::Released,
        });
        for i in 0..50 {
            owed.queue
                .push(delivery(&format!("a/{i}"), QoS::AtLeastOnce, (5, 2 + i)));
        }
        let chunks = encode_owed(Some(&owed), 600);
        assert!(chunks.len() > 5, "{} chunks", chunks.len());
        let mut back = Owed::default();
        for (i, chunk) in chunks.iter().enumerate() {
            let flags = decode_chunk(chunk, &mut back).unwrap();
            assert_eq!(flags & LAST != 0, i == chunks.len() - 1);
        }
        assert_eq!(back.inbound, vec![3, 4]);
        assert_eq!(back.done, owed.done, "what a replicated session has done");
        assert_eq!(back.from, 11);
        assert_eq!(back.inflight.len(), 1);
        assert_eq!(back.inflight[0].packet_id, 11);
        assert_eq!(back.inflight[0].stage, Stage::Released);
        assert_eq!(back.queue.len(), 50);
        let (a, b) = (&owed.queue[49], &back.queue[49]);
        assert_eq!(a.message.topic, b.message.topic);
        assert_eq!(a.message.payload, b.message.payload);
        assert_eq!(a.message.properties, b.message.properties);
        assert_eq!(b.message.ident.get(), Some((5, 51)));
        assert_eq!(b.qos, QoS::AtLeastOnce);
        assert!(b.retain);
        assert_eq!(&*b.subscription_identifiers, &[7, 9]);
        assert_eq!(back.idents(), owed.idents());

        let none = encode_owed(None, 600);
        assert_eq!(
            decode_chunk(&none[0], &mut Owed::default()).unwrap(),
            LAST | NONE
        );
        for cut in [5, 30, chunks[0].len() - 1] {
            assert!(decode_chunk(&chunks[0][..cut], &mut Owed::default()).is_err());
        }
    }
}
