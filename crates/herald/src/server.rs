//! Server lifecycle: bind the listeners, run until told to stop, then drain.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::api::ApiState;
use crate::broker::Broker;
use crate::broker::durable::Durable;
use crate::config::{Config, ListenerKind};
use crate::net::tls::TlsAcceptor;
use crate::net::{self, Endpoint};
use crate::reload::{ConfigSource, ReloadError, Reloader, Report};

/// How often connection deadlines (keep-alive, slow consumer) are checked.
const SWEEP_EVERY: Duration = Duration::from_millis(250);

/// File descriptors kept back for listeners, logs and files when sizing the connection limit.
const FD_RESERVE: u64 = 64;

/// A running server.
pub struct Server {
    broker: Arc<Broker>,
    shutdown: watch::Sender<bool>,
    /// Closes the MQTT listeners (draining) before everything else stops.
    accepting: watch::Sender<bool>,
    listener_loops: Vec<JoinHandle<()>>,
    /// Raised by `POST /api/v1/drain`.
    drain_requested: Arc<tokio::sync::Notify>,
    addrs: Vec<(ListenerKind, SocketAddr)>,
    mqtt_addrs: Vec<SocketAddr>,
    http_addr: Option<SocketAddr>,
    api: Option<Arc<ApiState>>,
    reloader: Arc<Reloader>,
    accept_loops: Vec<JoinHandle<()>>,
}

impl Server {
    /// Binds every listener of `config` and starts accepting.
    pub async fn start(config: Config) -> anyhow::Result<Server> {
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
        let tls = if config.listeners.all().any(|(kind, _)| kind.is_tls()) {
            Some(Arc::new(TlsAcceptor::new(&config.tls)?))
        } else {
            None
        };
        log_backlog_cap(config.listeners.backlog);
        let mut listeners = Vec::new();
        for (kind, addr) in config.listeners.all() {
            let listener = net::bind(addr, config.listeners.backlog)
                .with_context(|| format!("{}: cannot listen on {addr}", kind.key()))?;
            let endpoint = Arc::new(Endpoint {
                kind,
                proxy_protocol: config.listeners.proxy_protocol.contains(&addr),
                v3_accept_refused: config.listeners.v3_accept_refused.contains(&addr),
                tls: if kind.is_tls() { tls.clone() } else { None },
            });
            listeners.push((listener, endpoint));
        }
        let http_listener = match config.http.addr() {
            Some(addr) => Some(
                tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("http.listen: cannot listen on {addr}"))?,
            ),
            None => None,
        };
        let durable = open_store(&config)?;
        let anonymous_public = config.listeners.allow_anonymous_public;
        let broker = Broker::with_store(config, max_connections, durable);
        if broker.persist.is_stored() {
            let started = std::time::Instant::now();
            let restored = crate::broker::restore::restore(&broker)?;
            let d = broker.persist.durable().map(|d| d.check_disk());
            tracing::info!(
                sessions = restored.sessions,
                messages = restored.messages,
                deliveries = restored.deliveries,
                retained = restored.retained,
                wills = restored.wills,
                purged = restored.purged,
                store_bytes = d.map(|d| d.0),
                free_bytes = d.and_then(|d| d.1),
                elapsed_ms = started.elapsed().as_millis() as u64,
                "store restored"
            );
        }
        let (shutdown, _) = watch::channel(false);
        let (accepting, _) = watch::channel(false);
        let drain_requested = Arc::new(tokio::sync::Notify::new());
        let mut addrs = Vec::new();
        let mut accept_loops = Vec::new();
        let mut listener_loops = Vec::new();
        for (listener, endpoint) in listeners {
            let addr = listener.local_addr()?;
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
            listener_loops.push(tokio::spawn(net::accept_loop(
                listener,
                endpoint,
                broker.clone(),
                accepting.subscribe(),
            )));
        }
        let mqtt_addrs = addrs
            .iter()
            .filter(|(kind, _)| *kind == ListenerKind::Mqtt)
            .map(|(_, a)| *a)
            .collect();
        let reloader = Arc::new(Reloader::new(broker.clone(), tls.clone(), fd_bound));
        accept_loops.push(tokio::spawn(reloader.clone().watch_certificates()));
        let mut http_addr = None;
        let api = match http_listener {
            Some(listener) => {
                let addr = listener.local_addr()?;
                tracing::info!(%addr, "listening for HTTP (API, health)");
                http_addr = Some(addr);
                let api = ApiState::new(broker.clone(), reloader.clone(), drain_requested.clone())?;
                accept_loops.push(tokio::spawn(crate::api::serve(
                    listener,
                    api.clone(),
                    shutdown.subscribe(),
                )));
                accept_loops.push(tokio::spawn(api.clone().sweep_keys(shutdown.subscribe())));
                accept_loops.push(tokio::spawn(api.clone().sample_rates(shutdown.subscribe())));
                api.ready.store(true, Ordering::Relaxed);
                Some(api)
            }
            None => None,
        };
        let sweeper = broker.clone();
        accept_loops.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(SWEEP_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while !sweeper.shutting_down() {
                tick.tick().await;
                sweeper.sweep();
            }
        }));
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
        })
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
        self.broker.default_tenant.sessions.for_each(|session| {
            if session.lock().connected {
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
fn open_store(config: &Config) -> anyhow::Result<Option<Durable>> {
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
