//! Many nodes as one broker, joined through NATS (async-nats): no peer list, no consensus of
//! our own. What is built so far, and what is not, is in docs/architecture.md "Cluster".
//!
//! - **Messages** go to the subject of their topic (`subject`: the tenant first, one token a
//!   level) in an envelope (`wire`) naming the node that published them.
//! - **Interest**: a node subscribes on NATS to the subjects of the filters its own clients
//!   hold (`broker::peers`, told under the index lock, in order), and to nothing else: NATS
//!   sends a node only what its subscribers match. Every subscription of a node is in one
//!   queue group of its own (`<prefix>.n.<node>`): NATS gives a queue group one copy of a
//!   message however many of its subscriptions match, so overlapping filters (`a/+` and
//!   `a/b`) bring one copy, routed here through the local index as if published here.
//! - **Echoes**: the connection asks NATS not to send back what it published (`no_echo`),
//!   and a message naming this node is dropped all the same.
//! - **Shared groups**: each group with members here is subscribed in a queue group of its
//!   own on a second connection that does see this node's messages, so that NATS picks one
//!   node (maybe this one) for each message, which gives it to one of its members.
//! - **Sending** QoS 0 is a bounded queue drained by one task into the NATS client, which
//!   batches its writes; a message that finds it full is dropped and counted.
//! - **QoS 1/2** (`durable`) go through a JetStream stream that republishes them to the
//!   message subjects: their publishers are acknowledged once the stream has them; a node
//!   that lost NATS reads what it missed from the stream (`catchup`).
//! - **Retained messages** (`retained`): a JetStream key-value bucket every node writes its
//!   retained messages to and follows, in one order.
//! - **The view** (`view`): every node says every two seconds who it is and what it holds;
//!   the API's `/api/v1/cluster` lists the nodes as this one last heard them.

pub mod catchup;
pub mod durable;
mod interest;
pub mod kv;
pub mod moving;
pub mod registry;
pub mod replica;
pub mod retained;
pub mod subject;
pub mod view;
pub mod wire;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures_util::StreamExt;
use tokio::sync::mpsc;

use crate::broker::Broker;
use crate::broker::durable::{instant_of, unix_ms, unix_ms_of};
use crate::broker::message::{At, Message};
use crate::broker::peers::Peers;
use crate::config::ClusterConfig;
use interest::Interest;
use subject::Subjects;
use wire::Envelope;

/// Messages waiting for the NATS client at most.
const SEND_QUEUE: usize = 64 * 1024;

/// The session id a message from another node names as its publisher: none of this node's
/// (No Local concerns a client's own publications, and its session lives here).
const REMOTE_ORIGIN: u64 = u64::MAX;

/// Why joining the cluster failed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// A credentials file could not be read.
    #[error("cluster.credentials_file: {0}")]
    Credentials(std::io::Error),
    /// No NATS server could be reached.
    #[error("cluster.nats: cannot connect to NATS ({servers}): {source}")]
    Connect {
        /// The servers tried.
        servers: String,
        /// Why.
        source: async_nats::ConnectError,
    },
    /// NATS has JetStream, and it did not answer the node's set-up.
    #[error("cluster: {0}")]
    JetStream(String),
}

/// What the cluster link counts.
#[derive(Debug, Default)]
pub struct ClusterStats {
    /// Messages handed to NATS for other nodes.
    pub sent: AtomicU64,
    /// Messages received from other nodes and routed here.
    pub received: AtomicU64,
    /// Messages not sent: the send queue was full (NATS slower than this node publishes).
    pub send_queue_full: AtomicU64,
    /// Messages not sent: too large for the envelope, or a NATS write failed.
    pub send_failed: AtomicU64,
    /// Messages from NATS that did not read, or named this node (echoes), or a tenant
    /// this node does not have.
    pub dropped_in: AtomicU64,
    /// NATS subscriptions held (one per subject of the filters held here).
    pub subscriptions: AtomicU64,
    /// Retained changes not written to the cluster's bucket (its queue full, a write failed).
    pub retained_failed: AtomicU64,
    /// Retained changes of the cluster's bucket applied here.
    pub retained_applied: AtomicU64,
    /// This node's own messages back from NATS (the stream republishes QoS 1/2 messages
    /// to every subscriber of their subject, this node's too), not routed again.
    pub echoes: AtomicU64,
    /// First topic levels whose many subjects became one wildcard subscription
    /// (`interest`).
    pub coarsened: AtomicU64,
}

/// Why a claim failed.
#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    /// The bucket did not answer, or other claims kept winning.
    #[error("the cluster's client registry: {0}")]
    Bucket(String),
    /// The client asked to resume a session that could be neither moved from its node
    /// nor resumed from the replicated bucket now; its node keeps it, the client retries.
    #[error("the session could not be resumed here now: {0}")]
    Resume(String),
}

/// This node's link to the others.
pub struct Cluster {
    node: String,
    prefix: String,
    subjects: Subjects,
    view: view::View,
    queue_group: String,
    client: async_nats::Client,
    /// A second connection for the shared groups' subscriptions: NATS gives a shared group's
    /// message to one member node, which may be the one that published it, so these
    /// subscriptions must see what this node sends (the first connection asks for no echo).
    shared_client: async_nats::Client,
    out: mpsc::Sender<(String, Vec<u8>)>,
    /// Retained changes for the cluster's bucket (`None`: NATS has no JetStream).
    retained: Option<mpsc::Sender<retained::Change>>,
    /// QoS 1/2 messages for the cluster's stream (`None`: NATS has no JetStream, and they
    /// go as QoS 0 ones do).
    durable: Option<mpsc::UnboundedSender<durable::Pending>>,
    /// What QoS 1/2 publishers wait for.
    pub confirmations: Arc<durable::Confirmations>,
    /// What the stream writer counts.
    pub durable_stats: Arc<durable::DurableStats>,
    /// The stream sequences routed here, and what was caught up after NATS was lost.
    pub gap: catchup::Gap,
    /// JetStream (`None`: NATS has none).
    js: Option<async_nats::jetstream::Context>,
    /// The client registry's bucket (`None`: NATS has no JetStream).
    clients: Option<async_nats::jetstream::kv::Store>,
    /// Claims to release, for `registry::releases`.
    releases: Option<mpsc::Sender<registry::Release>>,
    /// What the client registry counts.
    pub registry_stats: registry::RegistryStats,
    /// `cluster.max_unconfirmed`.
    max_unconfirmed: usize,
    /// `cluster.replicas`.
    replicas: usize,
    interest: mpsc::UnboundedSender<Interest>,
    /// Its tasks (sending, subscribing, the view), stopped by `leave`.
    tasks: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// Its counters.
    pub stats: ClusterStats,
    /// This run of this node, in the identities of the messages published here
    /// (`Message::ident`): a digest of its name and the moment it joined.
    run: u64,
    /// The last message identity numbered here.
    idents: AtomicU64,
    /// The main connection's statistics (its count of connections).
    nats_stats: Arc<async_nats::Statistics>,
    /// Snapshots of replicated sessions to write (`None`: sessions are not replicated).
    replica_tx: Option<mpsc::UnboundedSender<replica::Ask>>,
    /// The replicated sessions' bucket.
    replicas_kv: Option<async_nats::jetstream::kv::Store>,
    /// What the replicated sessions count.
    pub replica_stats: replica::ReplicaStats,
}

/// A number naming this run of node `node`, never 0.
fn run_of(node: &str) -> u64 {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(node.as_bytes());
    ctx.update(&crate::broker::durable::unix_ms().to_be_bytes());
    ctx.update(&std::process::id().to_be_bytes());
    let digest = ctx.finish();
    let mut word = [0u8; 8];
    word.copy_from_slice(&digest.as_ref()[..8]);
    u64::from_be_bytes(word).max(1)
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster").field("node", &self.node).finish()
    }
}

/// Connects to NATS as configured, and joins `broker` to the other nodes: its filters
/// become NATS subscriptions, what it publishes goes to NATS. Inside the runtime; before
/// clients connect.
pub async fn join(
    broker: &Arc<Broker>,
    config: &ClusterConfig,
) -> Result<Arc<Cluster>, ClusterError> {
    let node = config.node();
    let (events_tx, events) = mpsc::unbounded_channel();
    let client = connect(config, &node, false, Some(events_tx.clone())).await?;
    let shared_client = connect(config, &node, true, None).await?;
    let (out, out_rx) = mpsc::channel(SEND_QUEUE);
    let (interest, interest_rx) = mpsc::unbounded_channel();
    let (prefix, replicas) = (&config.subject_prefix, config.replicas);
    let bucket = kv::set_up(&client, "the retained messages' bucket", || {
        retained::bucket(&client, prefix, replicas)
    })
    .await
    .map_err(ClusterError::JetStream)?;
    if bucket.is_none() {
        tracing::warn!(
            "no JetStream key-value bucket for retained messages: each node keeps the retained \
             messages it sees"
        );
    }
    let (retained_tx, retained_rx) = mpsc::channel(retained::QUEUE);
    let js = async_nats::jetstream::context::ContextBuilder::new()
        .timeout(std::time::Duration::from_secs(5))
        .build(client.clone());
    let stream = kv::set_up(&client, "the cluster's message stream", || {
        durable::stream(&js, config)
    })
    .await
    .map_err(ClusterError::JetStream)?
    .is_some();
    if !stream {
        tracing::warn!(
            "no JetStream stream for QoS 1/2 messages: they reach the other nodes at most once, \
             as QoS 0 messages do"
        );
    }
    let (durable_tx, durable_rx) = mpsc::unbounded_channel();
    let clients = kv::set_up(&client, "the client registry's bucket", || {
        registry::bucket(&client, prefix, replicas)
    })
    .await
    .map_err(ClusterError::JetStream)?;
    if clients.is_none() {
        tracing::warn!(
            "no JetStream key-value bucket for the client registry: a client id may have a \
             session on each node"
        );
    }
    let replicas_kv = match config.replicate_sessions && stream {
        true => kv::set_up(&client, "the replicated sessions' bucket", || {
            replica::bucket(&client, prefix, replicas)
        })
        .await
        .map_err(ClusterError::JetStream)?,
        false => None,
    };
    if config.replicate_sessions && replicas_kv.is_none() {
        tracing::warn!("no JetStream: persistent sessions are not replicated");
    }
    let (replica_tx, replica_rx) = mpsc::unbounded_channel();
    let (releases_tx, releases_rx) = registry::release_queue();
    let run = run_of(&node);
    let nats_stats = client.statistics();
    let cluster = Arc::new(Cluster {
        queue_group: format!("{}.n.{node}", config.subject_prefix),
        prefix: config.subject_prefix.clone(),
        subjects: Subjects::new(&config.subject_prefix),
        view: view::View::default(),
        node,
        client,
        shared_client,
        out,
        retained: bucket.is_some().then_some(retained_tx),
        durable: stream.then_some(durable_tx),
        confirmations: Arc::default(),
        durable_stats: Arc::default(),
        gap: catchup::Gap::default(),
        js: stream.then(|| js.clone()),
        releases: clients.is_some().then_some(releases_tx),
        clients,
        registry_stats: registry::RegistryStats::default(),
        max_unconfirmed: config.max_unconfirmed,
        replicas: config.replicas,
        interest,
        tasks: std::sync::Mutex::new(Vec::new()),
        stats: ClusterStats::default(),
        run,
        idents: AtomicU64::new(0),
        nats_stats,
        replica_tx: replicas_kv.is_some().then_some(replica_tx),
        replicas_kv: replicas_kv.clone(),
        replica_stats: replica::ReplicaStats::default(),
    });
    let tasks = vec![
        tokio::spawn(send(cluster.clone(), out_rx)),
        tokio::spawn(interest::subscribe(
            cluster.clone(),
            Arc::downgrade(broker),
            interest_rx,
            config.coarsen_above,
        )),
        tokio::spawn(view::beat(cluster.clone(), Arc::downgrade(broker))),
        tokio::spawn(catchup::follow(
            cluster.clone(),
            Arc::downgrade(broker),
            events,
        )),
        tokio::spawn(registry::releases(cluster.clone(), releases_rx)),
        tokio::spawn(registry::answer(cluster.clone(), Arc::downgrade(broker))),
    ];
    let mut tasks = tasks;
    cluster.gap.follow_connection(cluster.nats_connection());
    if catchup::resume(&cluster, broker).await {
        // A restart: caught up once subscribed, as after a lost connection.
        let _ = events_tx.send(async_nats::Event::Connected);
    }
    if stream && broker.persist.is_stored() {
        tasks.push(tokio::spawn(catchup::checkpoint(
            cluster.clone(),
            Arc::downgrade(broker),
        )));
    }
    if stream {
        tasks.push(tokio::spawn(durable::write(
            js,
            cluster.node.clone(),
            cluster.confirmations.clone(),
            cluster.durable_stats.clone(),
            durable_rx,
        )));
    }
    if let Some(kv) = replicas_kv {
        tasks.push(tokio::spawn(replica::write(
            cluster.clone(),
            Arc::downgrade(broker),
            kv,
            replica_rx,
        )));
    }
    if let Some(store) = bucket {
        tasks.push(tokio::spawn(retained::write(
            cluster.clone(),
            store.clone(),
            retained_rx,
        )));
        tasks.push(tokio::spawn(retained::follow(
            cluster.clone(),
            Arc::downgrade(broker),
            store,
        )));
    }
    *cluster.tasks.lock().unwrap_or_else(|p| p.into_inner()) = tasks;
    broker.join(cluster.clone());
    tracing::info!(node = %cluster.node, servers = ?config.nats, "joined the cluster");
    Ok(cluster)
}

/// A connection to NATS as configured; `echo`: NATS sends it what it publishes itself;
/// `events`: where its events go besides the log.
async fn connect(
    config: &ClusterConfig,
    node: &str,
    echo: bool,
    events: Option<mpsc::UnboundedSender<async_nats::Event>>,
) -> Result<async_nats::Client, ClusterError> {
    let mut options = async_nats::ConnectOptions::new()
        .name(format!("herald {node}"))
        .require_tls(config.require_tls)
        .event_callback(move |event| {
            let events = events.clone();
            async move {
                match &event {
                    async_nats::Event::Connected => tracing::info!("NATS connected"),
                    async_nats::Event::Disconnected => tracing::warn!("NATS disconnected"),
                    other => tracing::info!(event = %other, "NATS"),
                }
                if let Some(events) = events {
                    let _ = events.send(event);
                }
            }
        });
    if !echo {
        options = options.no_echo();
    }
    if let Some(path) = &config.credentials_file {
        options = options
            .credentials_file(path)
            .await
            .map_err(ClusterError::Credentials)?;
    }
    if let (Some(user), Some(password)) = (&config.user, &config.password) {
        options = options.user_and_password(user.clone(), password.clone());
    }
    if let Some(token) = &config.token {
        options = options.token(token.clone());
    }
    if let Some(ca) = &config.tls_ca_file {
        options = options.add_root_certificates(ca.clone());
    }
    if let (Some(cert), Some(key)) = (&config.tls_cert_file, &config.tls_key_file) {
        options = options.add_client_certificate(cert.clone(), key.clone());
    }
    options
        .connect(config.nats.as_slice())
        .await
        .map_err(|source| ClusterError::Connect {
            servers: config.nats.join(","),
            source,
        })
}

impl Cluster {
    /// This node's name.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Leaves the cluster (the node stops): what was queued for the other nodes is sent
    /// (and the stream's confirmations come) within a second, then the tasks stop, the NATS
    /// subscriptions go (the other nodes see this node stale), and the connection closes
    /// with the last handle.
    pub async fn leave(&self) {
        let sent = async {
            while self.out.capacity() < self.out.max_capacity() || self.confirmations.waiting() > 0
            {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            self.settle().await;
        };
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), sent).await;
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        for task in tasks {
            task.abort();
        }
    }

    /// The first tokens of the cluster's subjects.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Copies JetStream keeps of the cluster's streams and buckets (`cluster.replicas`).
    pub fn replicas(&self) -> usize {
        self.replicas
    }

    /// The NATS connection (the layers above ask other nodes through it).
    pub fn nats(&self) -> async_nats::Client {
        self.client.clone()
    }

    /// How many other nodes the view says are up.
    pub fn others_up(&self) -> usize {
        self.view.others_up(&self.node)
    }

    /// Whether the NATS connection is up now.
    pub fn connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    /// How many times the main NATS connection was made (counted by the client before it
    /// reads from a new one: a message read after it changed came on a new connection).
    fn nats_connection(&self) -> u64 {
        self.nats_stats.connects.load(Ordering::Relaxed)
    }

    /// Waits until the NATS server has processed everything both connections sent it so far
    /// (their subscriptions too): a round trip on each, through a subject of this node's
    /// own that the echoing connection answers. `false` when NATS did not answer in time.
    pub async fn settle(&self) -> bool {
        static ROUND: AtomicU64 = AtomicU64::new(0);
        let n = ROUND.fetch_add(1, Ordering::Relaxed);
        let subject = format!("{}.ping.{}.{n}", self.prefix, self.node);
        let round_trips = async {
            let mut pings = self.shared_client.subscribe(subject.clone()).await.ok()?;
            // The echoing connection hears its own message: its earlier commands are done.
            self.shared_client
                .publish(subject.clone(), "".into())
                .await
                .ok()?;
            pings.next().await?;
            // The other one asks it, and is answered once its own earlier commands are done.
            let shared = self.shared_client.clone();
            let answer = tokio::spawn(async move {
                if let Some(request) = pings.next().await
                    && let Some(reply) = request.reply
                {
                    let _ = shared.publish(reply, "".into()).await;
                }
            });
            // On a NATS cluster the two connections may be on different servers, and the
            // subscription reaches the other server a moment later: asked again until then.
            let answered = loop {
                match self.client.request(subject.clone(), "".into()).await {
                    Ok(_) => break true,
                    Err(e) if e.kind() == async_nats::RequestErrorKind::NoResponders => {
                        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    }
                    Err(_) => break false,
                }
            };
            answer.abort();
            answered.then_some(())
        };
        tokio::time::timeout(std::time::Duration::from_secs(5), round_trips)
            .await
            .ok()
            .flatten()
            .is_some()
    }

    /// Routes a message from a NATS subscription (see `route`); a QoS 1/2 message to the
    /// direct subscribers once only, however many times it arrives live and from the stream
    /// (`catchup`).
    fn receive(&self, broker: &Broker, message: &async_nats::Message, group: Option<(&str, &str)>) {
        if group.is_none()
            && let Some(seq) = sequence(message)
            && !self.gap.claim(seq, self.nats_connection())
        {
            return;
        }
        let seq = sequence(message).filter(|_| group.is_none());
        self.route(broker, message, group, false, seq);
    }

    /// Routes a message from NATS (`from_stream`: read from the cluster's stream, on its
    /// subject there): decoded, its tenant found, routed here to the direct subscribers, or
    /// to one member of `group` (a shared group's filter and name); a QoS 1/2 message
    /// stored here for a session is written with its stream sequence `seq` (`catchup`).
    /// `false` when it was not routed (unreadable, an echo, a tenant not here).
    fn route(
        &self,
        broker: &Broker,
        message: &async_nats::Message,
        group: Option<(&str, &str)>,
        from_stream: bool,
        seq: Option<u64>,
    ) -> bool {
        let dropped = || {
            self.stats.dropped_in.fetch_add(1, Ordering::Relaxed);
            false
        };
        let envelope = match Envelope::decode(&message.payload) {
            // A shared group's message may come back to the node that sent it: NATS chose
            // this node's member. Any other echo is dropped.
            Ok(e) if e.node != self.node || group.is_some() => e,
            Ok(_) => {
                self.stats.echoes.fetch_add(1, Ordering::Relaxed);
                return false;
            }
            Err(e) => {
                tracing::debug!(subject = %message.subject, error = %e, "not a message");
                return dropped();
            }
        };
        let parsed = match from_stream {
            true => self.subjects.parse_stream(&message.subject),
            false => self.subjects.parse(&message.subject),
        };
        let Some((tenant, _)) = parsed else {
            return dropped();
        };
        let Some(tenant) = broker.find_tenant(&tenant) else {
            return dropped();
        };
        let received_at = instant_of(envelope.received_ms, unix_ms());
        let message = Arc::new(Message::restored(
            envelope.publish,
            received_at,
            REMOTE_ORIGIN,
        ));
        if let Some((run, n)) = envelope.ident {
            message.ident.set(run, n);
        }
        if let Some(seq) = seq {
            message.ident.set_at(At::Seq(seq));
        }
        self.stats.received.fetch_add(1, Ordering::Relaxed);
        // With the cluster's retained bucket, that is where retained messages come from.
        let keep_retained = self.retained.is_none();
        let record = seq
            .filter(|_| broker.persist.is_stored())
            .map(catchup::seen_op);
        let published = broker.publish_from_peer(&tenant, &message, group, keep_retained, record);
        if let Some(seq) = seq
            && !published.ticket.is_none()
        {
            self.gap.stored(seq);
        }
        true
    }
}

/// The stream sequence of a message the cluster's stream republished (`Nats-Sequence`).
fn sequence(message: &async_nats::Message) -> Option<u64> {
    message
        .headers
        .as_ref()?
        .get(async_nats::header::NATS_SEQUENCE)?
        .as_str()
        .parse()
        .ok()
}

impl Peers for Cluster {
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn retained(&self, tenant: &str, message: &Arc<Message>) {
        self.put_retained(tenant, message);
    }

    fn forward(&self, tenant: &str, message: &Arc<Message>) -> u64 {
        let publish = message.as_published();
        let (node, ident) = (&self.node, message.ident.get());
        let Some(bytes) = Envelope::encode(node, ident, unix_ms_of(message.received_at), publish)
        else {
            self.stats.send_failed.fetch_add(1, Ordering::Relaxed);
            return 0;
        };
        if message.qos != mqtt_codec::QoS::AtMostOnce
            && let Some(stream) = &self.durable
        {
            let n = self.confirmations.issue();
            let pending = durable::Pending {
                n,
                subject: self.subjects.stream(tenant, &message.topic),
                bytes: bytes.into(),
                message: message.clone(),
            };
            // Closed only once the node leaves: then `n` is never confirmed, and the
            // publisher, not acknowledged, sends it again wherever it reconnects.
            let _ = stream.send(pending);
            return n;
        }
        let subject = self.subjects.topic(tenant, &message.topic);
        match self.out.try_send((subject, bytes)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.stats.send_queue_full.fetch_add(1, Ordering::Relaxed);
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.stats.send_failed.fetch_add(1, Ordering::Relaxed);
            }
        }
        0
    }

    fn identify(&self, message: &Message) {
        message
            .ident
            .set(self.run, self.idents.fetch_add(1, Ordering::Relaxed) + 1);
        // The stream stores it after every message this node has seen a sequence of.
        let seen = self.durable_stats.last_seq.load(Ordering::Relaxed);
        let seen = seen.max(self.gap.routed.load(Ordering::Relaxed));
        message.ident.set_at(At::After(seen));
    }

    fn session_ended(&self, tenant: &str, client_id: &str, claim: u64) {
        self.release(tenant, client_id, claim);
        self.forget_replica(tenant, client_id);
    }

    fn replicate(&self, tenant: &str, session: &Arc<crate::broker::session::Session>) -> u64 {
        self.replicate_session(tenant, session)
    }

    fn backlogged(&self) -> bool {
        self.confirmations.waiting() >= self.max_unconfirmed
    }

    fn confirmed(&self) -> u64 {
        self.confirmations.reached()
    }

    fn issued(&self) -> u64 {
        self.confirmations.issued()
    }

    fn poll_confirmed(&self, n: u64, cx: &std::task::Context<'_>) -> std::task::Poll<()> {
        self.confirmations.poll(n, cx)
    }

    fn interest(&self, tenant: &str, filter: &str, group: Option<&str>, present: bool) {
        let change = Interest {
            tenant: tenant.to_string(),
            filter: filter.to_string(),
            group: group.map(str::to_string),
            present,
            n: self.confirmations.issue(),
        };
        // Unbounded: it holds filter changes, not messages, and is drained at once.
        let _ = self.interest.send(change);
    }
}

/// Hands queued messages to the NATS client (which writes them in batches).
async fn send(cluster: Arc<Cluster>, mut rx: mpsc::Receiver<(String, Vec<u8>)>) {
    while let Some((subject, bytes)) = rx.recv().await {
        match cluster.client.publish(subject, bytes.into()).await {
            Ok(()) => cluster.stats.sent.fetch_add(1, Ordering::Relaxed),
            Err(e) => {
                tracing::debug!(error = %e, "a message for other nodes was not sent");
                cluster.stats.send_failed.fetch_add(1, Ordering::Relaxed)
            }
        };
    }
}
