//! Server lifecycle: bind the listeners, run until told to stop, then drain.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::api::{ApiState, KeysError};
use crate::broker::Broker;
use crate::broker::durable::Durable;
use crate::config::{Config, ListenerKind};
use crate::net::tls::{TlsAcceptor, TlsError};
use crate::net::{self, Endpoint};
use crate::reload::{ConfigSource, ReloadError, Reloader, Report};
use crate::store::StoreError;

/// How often connection deadlines (keep-alive, slow consumer) are checked.
const SWEEP_EVERY: Duration = Duration::from_millis(250);

/// File descriptors kept back for listeners, logs and files when sizing the connection limit.
const FD_RESERVE: u64 = 64;

/// Why a server did not start. Each message says what failed and where.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The certificates of the TLS and WSS listeners do not load.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// A listener's address cannot be bound.
    #[error("{key}: cannot listen on {addr}")]
    Bind {
        /// The config key listing the address (`listeners.mqtt`, `http.listen`, ...).
        key: &'static str,
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// A bound listener's address cannot be read back.
    #[error(transparent)]
    LocalAddr(std::io::Error),
    /// The store does not open, or what it holds does not restore.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The HTTP API cannot read what the store keeps for it.
    #[error(transparent)]
    Api(#[from] KeysError),
    /// The authentication chain cannot be built (a password file, a key, a rules file).
    #[error(transparent)]
    Auth(#[from] crate::auth::AuthError),
    /// The tenants file (`tenants.file`) does not load.
    #[error(transparent)]
    Tenants(#[from] crate::broker::tenants::TenantsFileError),
    /// The cluster cannot be joined (NATS cannot be reached, its credentials do not load).
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ClusterError),
}

/// A running server.
pub struct Server {
    /// The broker every listener feeds.
    broker: Arc<Broker>,
    /// Tells the HTTP API and the background tasks to stop.
    shutdown: watch::Sender<bool>,
    /// Closes the MQTT listeners (draining) before everything else stops.
    accepting: watch::Sender<bool>,
    /// The MQTT listeners' accept loops: awaited first when draining.
    listener_loops: Vec<JoinHandle<()>>,
    /// Raised by `POST /api/v1/drain`.
    drain_requested: Arc<tokio::sync::Notify>,
    /// Every MQTT listener's bound address (the port the system chose for port 0).
    addrs: Vec<(ListenerKind, SocketAddr)>,
    /// The MQTT-over-TCP ones among `addrs`, kept apart to be lent as a slice.
    mqtt_addrs: Vec<SocketAddr>,
    /// The HTTP listener's bound address, if it listens.
    http_addr: Option<SocketAddr>,
    /// The HTTP API, told when the node stops being ready.
    api: Option<Arc<ApiState>>,
    /// Reloads the configuration on SIGHUP (`Server::reload`).
    reloader: Arc<Reloader>,
    /// The HTTP API and the background tasks (sweeps, certificate and disk watches).
    accept_loops: Vec<JoinHandle<()>>,
    /// The authentication chain and access rules, when configured.
    gate: Option<Arc<crate::auth::Gate>>,
    /// The link to the other nodes, when clustered.
    cluster: Option<Arc<crate::cluster::Cluster>>,
}

impl Server {
    /// Binds every listener of `config`, opens and restores the store, and starts accepting.
    pub async fn start(config: Config) -> Result<Server, StartError> {
        let (max_connections, fd_bound) = connection_limit(&config);
        let tls = if config.listeners.all().any(|(kind, _)| kind.is_tls()) {
            Some(Arc::new(TlsAcceptor::new(&config.tls)?))
        } else {
            None
        };
        let admission = Arc::new(net::admission::Admission::default());
        let listeners = bind_listeners(&config, tls.as_ref(), &admission)?;
        let http_listener = bind_http(&config).await?;
        // Checked before the store opens: a file that does not load stops the start.
        let tenants_file = config.tenants.file.clone();
        crate::broker::tenants::read_file(&tenants_file)?;
        let durable = open_store(&config)?;
        let anonymous_public = config.listeners.allow_anonymous_public;
        let gate = crate::auth::build(&config)?;
        if let Some(gate) = &gate {
            gate.watch(Duration::from_secs(config.auth.password_file_watch_secs));
        }
        let hooks = match &gate {
            Some(gate) => crate::broker::hooks::Hooks::new(gate.clone()),
            None => crate::broker::hooks::Hooks::default(),
        };
        let cluster_config = config.cluster.clone();
        let broker = Broker::with_hooks(config, max_connections, durable, hooks);
        restore_store(&broker)?;
        // Over the settings the store kept: the file's win.
        let applied = broker.load_tenants_file(&tenants_file)?;
        if !tenants_file.as_os_str().is_empty() {
            tracing::info!(
                file = %tenants_file.display(),
                tenants = applied.tenants,
                "tenants file loaded"
            );
        }
        // Before any client connects: the filters restored are the first interest told.
        let cluster = match cluster_config.enabled() {
            true => Some(crate::cluster::join(&broker, &cluster_config).await?),
            false => None,
        };
        let (shutdown, _) = watch::channel(false);
        let (accepting, _) = watch::channel(false);
        let drain_requested = Arc::new(tokio::sync::Notify::new());
        let mut listener_loops = Vec::new();
        let addrs = spawn_listeners(
            listeners,
            &broker,
            &accepting,
            anonymous_public,
            &mut listener_loops,
        )?;
        let mqtt_addrs = addrs
            .iter()
            .filter(|(kind, _)| *kind == ListenerKind::Mqtt)
            .map(|(_, a)| *a)
            .collect();
        let reloader = Arc::new(Reloader::new(broker.clone(), tls, fd_bound));
        let mut accept_loops = vec![tokio::spawn(reloader.clone().watch_certificates())];
        let (api, http_addr) = match http_listener {
            Some(listener) => {
                let addr = listener.local_addr().map_err(StartError::LocalAddr)?;
                tracing::info!(%addr, "listening for HTTP (API, health)");
                let api = ApiState::new(broker.clone(), reloader.clone(), drain_requested.clone())?;
                serve_api(listener, &api, &shutdown, &mut accept_loops);
                (Some(api), Some(addr))
            }
            None => (None, None),
        };
        accept_loops.push(tokio::spawn(sweep(broker.clone(), admission)));
        if cluster.is_some() {
            // Every node answers the API questions of the others, with or without an HTTP
            // listener of its own.
            accept_loops.push(tokio::spawn(crate::api::cluster::answer(
                broker.clone(),
                shutdown.subscribe(),
            )));
        }
        accept_loops.push(tokio::spawn(crate::broker::tenants::watch_tenants_file(
            Arc::downgrade(&broker),
            shutdown.subscribe(),
        )));
        if let Some(cluster) = &cluster {
            // `$SYS/brokers`: the nodes the cluster view says are up.
            let cluster = cluster.clone();
            broker.sys.set_nodes(Box::new(move |b| {
                let nodes = cluster.nodes(b).into_iter();
                let up = nodes.filter(|n| n.state == "up");
                up.map(|n| n.beat.node).collect()
            }));
        }
        accept_loops.push(tokio::spawn(crate::broker::sys::run(
            Arc::downgrade(&broker),
            shutdown.subscribe(),
        )));
        if broker.persist.is_stored() {
            accept_loops.push(tokio::spawn(watch_disk(broker.clone())));
        }
        Ok(Server {
            broker,
            shutdown,
            accepting,
            listener_loops,
            drain_requested,
            addrs,
            mqtt_addrs,
            http_addr,
            api,
            reloader,
            accept_loops,
            gate,
            cluster,
        })
    }

    /// The authentication chain and access rules, when configured.
    pub fn gate(&self) -> Option<&Arc<crate::auth::Gate>> {
        self.gate.as_ref()
    }

    /// The MQTT-over-TCP listeners' addresses (with the ports the system chose for port 0).
    pub fn mqtt_addrs(&self) -> &[SocketAddr] {
        &self.mqtt_addrs
    }

    /// The HTTP API's address, if it listens.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    /// The addresses of the listeners of `kind`.
    pub fn addrs(&self, kind: ListenerKind) -> Vec<SocketAddr> {
        self.addrs
            .iter()
            .filter(|(k, _)| *k == kind)
            .map(|(_, a)| *a)
            .collect()
    }

    /// Says where the configuration came from, for reloads.
    pub fn set_config_source(&self, source: ConfigSource) {
        self.reloader.set_source(source);
    }

    /// Reads the configuration again and applies what can change while running (the TLS
    /// certificates among it); logs what it did. On error nothing changes.
    pub fn reload(&self) -> Result<Report, ReloadError> {
        self.reloader.reload_logged()
    }

    /// The broker.
    pub fn broker(&self) -> &Arc<Broker> {
        &self.broker
    }

    /// The link to the other nodes, when clustered.
    pub fn cluster(&self) -> Option<&Arc<crate::cluster::Cluster>> {
        self.cluster.as_ref()
    }

    /// Waits until `POST /api/v1/drain` asks the node to drain.
    pub async fn drain_requested(&self) {
        self.drain_requested.notified().await;
    }

    /// Lame duck: stops accepting, reports not ready, disconnects the clients spread over
    /// `period` (v5: DISCONNECT 0x8B, or 0x9C with `drain.server_reference`), then shuts
    /// down (store written and closed). Returns once the node has stopped.
    pub async fn drain(mut self, period: Duration, grace: Duration) {
        if let Some(api) = &self.api {
            api.ready.store(false, Ordering::Relaxed);
        }
        self.broker.begin_drain();
        let _ = self.accepting.send(true);
        for task in std::mem::take(&mut self.listener_loops) {
            let _ = task.await;
        }
        let mut connected = Vec::new();
        self.broker.for_each_session(|_, session| {
            if session.lock().connected() {
                connected.push(session.clone());
            }
        });
        tracing::info!(
            clients = connected.len(),
            period_secs = period.as_secs_f64(),
            "draining: listeners closed, disconnecting clients gradually"
        );
        let tick = Duration::from_millis(100);
        let ticks = (period.as_millis() / tick.as_millis()).max(1) as usize;
        let per_tick = connected.len().div_ceil(ticks).max(1);
        let mut interval = tokio::time::interval(tick);
        for chunk in connected.chunks(per_tick) {
            interval.tick().await;
            for session in chunk {
                self.broker
                    .kick_for(session, crate::broker::stats::CloseReason::Drained);
            }
        }
        let deadline = tokio::time::Instant::now() + grace;
        while self.broker.stats.open.load(Ordering::Relaxed) > 0
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tracing::info!("draining: clients gone");
        self.shutdown(grace).await;
    }

    /// Stops accepting, tells every connection to close (v5 clients get DISCONNECT 0x8B),
    /// and waits up to `grace` for them to finish.
    pub async fn shutdown(self, grace: Duration) {
        if let Some(api) = &self.api {
            api.ready.store(false, Ordering::Relaxed);
        }
        self.broker.begin_shutdown();
        let _ = self.accepting.send(true);
        let _ = self.shutdown.send(true);
        for task in self.listener_loops.into_iter().chain(self.accept_loops) {
            let _ = task.await;
        }
        let deadline = tokio::time::Instant::now() + grace;
        while self.broker.stats.open.load(Ordering::Relaxed) > 0
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let left = self.broker.stats.open.load(Ordering::Relaxed);
        if left > 0 {
            tracing::warn!(
                left,
                "connections still open after the shutdown grace period"
            );
        }
        if let Some(cluster) = &self.cluster {
            // The clients reconnecting elsewhere take their persistent sessions along.
            cluster.hand_over_remaining(&self.broker).await;
            // After the clients: wills and last messages still go to the other nodes.
            cluster.leave().await;
        }
        if let Some(d) = self.broker.persist.durable() {
            // Everything submitted is written before the store closes.
            let broker = self.broker.clone();
            let _ = tokio::task::spawn_blocking(move || {
                if let Some(d) = broker.persist.durable() {
                    d.journal.close();
                }
            })
            .await;
            let stats = d.journal.stats();
            tracing::info!(
                store_bytes = d.journal.store().disk_bytes(),
                batches = stats.batches.load(Ordering::Relaxed),
                written_ops = stats.written_ops.load(Ordering::Relaxed),
                "store closed"
            );
        }
    }
}

/// The connection limit in force: `limits.max_connections`, lowered to what the open-file
/// limit allows (logged when it is); and that ceiling, which a reload cannot raise.
fn connection_limit(config: &Config) -> (usize, usize) {
    let soft_fd_limit = rlimit::Resource::NOFILE
        .get()
        .map_or(u64::MAX, |(soft, _)| soft);
    // The HTTP listener's connections take descriptors too: they are kept back, so that
    // HTTP clients cannot take what MQTT clients were promised.
    let http_reserve = match config.http.addr() {
        Some(_) => config.http.max_connections as u64,
        None => 0,
    };
    let fd_bound = soft_fd_limit.saturating_sub(FD_RESERVE.saturating_add(http_reserve));
    let fd_bound = usize::try_from(fd_bound).unwrap_or(usize::MAX);
    let max_connections = config.limits.max_connections.min(fd_bound.max(1));
    if max_connections < config.limits.max_connections {
        tracing::info!(
            configured = config.limits.max_connections,
            effective = max_connections,
            soft_fd_limit,
            http_connections = http_reserve,
            "connection limit lowered to fit the open-file limit"
        );
    }
    (max_connections, fd_bound)
}

/// Binds every MQTT listener of `config`, each with what its connections need to know.
fn bind_listeners(
    config: &Config,
    tls: Option<&Arc<TlsAcceptor>>,
    admission: &Arc<net::admission::Admission>,
) -> Result<Vec<(TcpListener, Arc<Endpoint>)>, StartError> {
    log_backlog_cap(config.listeners.backlog);
    let mut listeners = Vec::new();
    for (kind, addr) in config.listeners.all() {
        let listener =
            net::bind(addr, config.listeners.backlog).map_err(|source| StartError::Bind {
                key: kind.key(),
                addr,
                source,
            })?;
        let endpoint = Arc::new(Endpoint {
            kind,
            proxy_protocol: config.listeners.proxy_protocol.contains(&addr),
            v3_accept_refused: config.listeners.v3_accept_refused.contains(&addr),
            tls: if kind.is_tls() { tls.cloned() } else { None },
            admission: admission.clone(),
        });
        listeners.push((listener, endpoint));
    }
    Ok(listeners)
}

/// Binds the HTTP listener, if `http.listen` names one.
async fn bind_http(config: &Config) -> Result<Option<TcpListener>, StartError> {
    let Some(addr) = config.http.addr() else {
        return Ok(None);
    };
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind {
            key: "http.listen",
            addr,
            source,
        })?;
    Ok(Some(listener))
}

/// Starts an accept loop per listener (pushed on `loops`); returns their bound addresses.
fn spawn_listeners(
    listeners: Vec<(TcpListener, Arc<Endpoint>)>,
    broker: &Arc<Broker>,
    accepting: &watch::Sender<bool>,
    anonymous_public: bool,
    loops: &mut Vec<JoinHandle<()>>,
) -> Result<Vec<(ListenerKind, SocketAddr)>, StartError> {
    let mut addrs = Vec::new();
    for (listener, endpoint) in listeners {
        let addr = listener.local_addr().map_err(StartError::LocalAddr)?;
        tracing::info!(
            %addr,
            listener = endpoint.kind.label(),
            proxy_protocol = endpoint.proxy_protocol,
            "listening"
        );
        if anonymous_public && !addr.ip().is_loopback() {
            tracing::warn!(
                %addr,
                listener = endpoint.kind.label(),
                "anonymous clients accepted from the network: this listener is not on \
                 loopback and Herald authenticates no one \
                 (listeners.allow_anonymous_public = true)"
            );
        }
        addrs.push((endpoint.kind, addr));
        loops.push(tokio::spawn(net::accept_loop(
            listener,
            endpoint,
            broker.clone(),
            accepting.subscribe(),
        )));
    }
    Ok(addrs)
}

/// Serves the HTTP API on `listener` with its background tasks (pushed on `tasks`), and
/// reports the node ready.
fn serve_api(
    listener: TcpListener,
    api: &Arc<ApiState>,
    shutdown: &watch::Sender<bool>,
    tasks: &mut Vec<JoinHandle<()>>,
) {
    tasks.push(tokio::spawn(crate::api::serve(
        listener,
        api.clone(),
        shutdown.subscribe(),
    )));
    tasks.push(tokio::spawn(api.clone().sweep_keys(shutdown.subscribe())));
    tasks.push(tokio::spawn(api.clone().sample_rates(shutdown.subscribe())));
    tasks.push(tokio::spawn(
        api.clone().sample_history(shutdown.subscribe()),
    ));
    api.ready.store(true, Ordering::Relaxed);
}

/// Checks connection deadlines (keep-alive, slow consumer) every `SWEEP_EVERY` until the
/// broker shuts down; forgets idle source addresses of the connection-rate limiter every
/// few seconds.
async fn sweep(broker: Arc<Broker>, admission: Arc<net::admission::Admission>) {
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n = 0u64;
    while !broker.shutting_down() {
        tick.tick().await;
        broker.sweep();
        n += 1;
        if n.is_multiple_of(20) {
            admission.sweep();
        }
    }
}

/// Logs it when the kernel caps the listen backlog below `listeners.backlog`.
fn log_backlog_cap(backlog: u32) {
    let cap = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok());
    if let Some(cap) = cap.filter(|cap| *cap < backlog) {
        tracing::info!(
            configured = backlog,
            effective = cap,
            "listen backlog capped by the kernel (sysctl net.core.somaxconn)"
        );
    }
}

/// Opens the store of `config`, unless it runs in memory.
fn open_store(config: &Config) -> Result<Option<Durable>, StoreError> {
    if config.store.in_memory {
        tracing::info!("store: in memory (nothing survives a restart)");
        return Ok(None);
    }
    let durable = Durable::open(&config.store)?;
    tracing::info!(
        dir = %config.store.data_dir.display(),
        fsync = ?config.store.fsync,
        boot = durable.boot,
        "store opened"
    );
    Ok(Some(durable))
}

/// Restores the broker's state from its store, if it has one, and logs what it found.
fn restore_store(broker: &Arc<Broker>) -> Result<(), StoreError> {
    let Some(durable) = broker.persist.durable() else {
        return Ok(());
    };
    let started = std::time::Instant::now();
    let restored = crate::broker::restore::restore(broker)?;
    let (store_bytes, free_bytes) = durable.check_disk();
    tracing::info!(
        sessions = restored.sessions,
        messages = restored.messages,
        deliveries = restored.deliveries,
        retained = restored.retained,
        wills = restored.wills,
        purged = restored.purged,
        tenants = restored.tenants,
        store_bytes,
        free_bytes,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "store restored"
    );
    Ok(())
}

/// How often the store's disk use is measured.
const DISK_CHECK_EVERY: Duration = Duration::from_secs(1);
/// How often it is logged.
const DISK_LOG_EVERY: u32 = 300;

/// Measures the store's disk use every second (refusing QoS 1/2 publications past the
/// limits) and logs it every five minutes.
async fn watch_disk(broker: Arc<Broker>) {
    let mut tick = tokio::time::interval(DISK_CHECK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n: u32 = 0;
    while !broker.shutting_down() {
        tick.tick().await;
        let broker = broker.clone();
        let Ok(Some((used, free))) =
            tokio::task::spawn_blocking(move || broker.persist.durable().map(Durable::check_disk))
                .await
        else {
            return;
        };
        n += 1;
        if n.is_multiple_of(DISK_LOG_EVERY) {
            tracing::info!(store_bytes = used, free_bytes = free, "store disk use");
        }
    }
}
