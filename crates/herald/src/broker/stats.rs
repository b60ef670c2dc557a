//! Counters: why connections closed, why messages were dropped, traffic totals.
//!
//! Plain atomics, created once and indexed by enum: nothing is looked up or allocated per
//! message. The metrics endpoint (a later issue) exports them.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use mqtt_codec::ReasonCode;

macro_rules! reasons {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $variant:ident => $label:literal,)* }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vm])* $variant,)*
        }

        impl $name {
            /// Every value, in counter order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)*];

            /// A stable label (for logs and metrics).
            pub fn label(self) -> &'static str {
                match self {
                    $($name::$variant => $label,)*
                }
            }
        }
    };
}

reasons! {
    /// Why a connection closed: one value per cause, each counted.
    CloseReason {
        /// The client sent DISCONNECT (normal, will discarded).
        ClientDisconnect => "client_disconnect",
        /// The client sent DISCONNECT 0x04 (its will is published).
        ClientDisconnectWithWill => "client_disconnect_with_will",
        /// The peer closed the socket without DISCONNECT.
        PeerClosed => "peer_closed",
        /// A socket error.
        IoError => "io_error",
        /// No CONNECT within the connect timeout (which also bounds the PROXY header and the
        /// TLS and WebSocket handshakes).
        ConnectTimeout => "connect_timeout",
        /// A PROXY protocol listener got no valid PROXY header.
        ProxyHeaderInvalid => "proxy_header_invalid",
        /// The TLS handshake failed (bad client certificate, no common cipher, not TLS).
        TlsHandshakeFailed => "tls_handshake_failed",
        /// The WebSocket upgrade request was refused (wrong path, subprotocol, not HTTP).
        WebSocketRefused => "websocket_refused",
        /// Nothing received within 1.5 times the keep-alive.
        KeepAliveTimeout => "keep_alive_timeout",
        /// A packet could not be parsed.
        MalformedPacket => "malformed_packet",
        /// A packet broke a protocol rule.
        ProtocolError => "protocol_error",
        /// A packet was larger than the maximum packet size.
        PacketTooLarge => "packet_too_large",
        /// The client exceeded Herald's Receive Maximum.
        ReceiveMaximumExceeded => "receive_maximum_exceeded",
        /// A topic alias was 0 or above the maximum.
        TopicAliasInvalid => "topic_alias_invalid",
        /// CONNECT was refused (bad client id, unsupported version, ...).
        ConnectRefused => "connect_refused",
        /// The connection limit was reached.
        ConnectionLimit => "connection_limit",
        /// Its source address opened connections faster than `limits.connect_rate_per_ip`:
        /// closed at accept, before any handshake.
        ConnectRateLimited => "connect_rate_limited",
        /// Another connection took over the session.
        SessionTakenOver => "session_taken_over",
        /// The socket stayed unwritable past the slow-consumer timeout.
        SlowConsumer => "slow_consumer",
        /// The server is shutting down.
        ServerShutdown => "server_shutdown",
        /// An operator disconnected the client (HTTP API).
        AdministrativeAction => "administrative_action",
        /// The node is draining (SIGTERM, `POST /api/v1/drain`).
        Drained => "drained",
        /// A 3.1/3.1.1 QoS 1/2 PUBLISH could not be queued or stored, and 3.1.1 has no
        /// reason code to refuse it with: closed without acknowledging it.
        PublishRefused => "publish_refused",
        /// A store write failed while the connection waited on it (v5: DISCONNECT 0x80).
        StoreFailed => "store_failed",
        /// Its tenant's settings were removed (the tenants file, the admin API) while
        /// `tenants.require_known` is on (v5: DISCONNECT 0x87).
        TenantUnknown => "tenant_unknown",
    }
}

impl CloseReason {
    /// The reason code a v5 client is told in the DISCONNECT Herald sends, if it sends one.
    pub fn disconnect_code(self) -> Option<ReasonCode> {
        Some(match self {
            CloseReason::KeepAliveTimeout => ReasonCode::KeepAliveTimeout,
            CloseReason::MalformedPacket => ReasonCode::MalformedPacket,
            CloseReason::ProtocolError => ReasonCode::ProtocolError,
            CloseReason::PacketTooLarge => ReasonCode::PacketTooLarge,
            CloseReason::ReceiveMaximumExceeded => ReasonCode::ReceiveMaximumExceeded,
            CloseReason::TopicAliasInvalid => ReasonCode::TopicAliasInvalid,
            CloseReason::SessionTakenOver => ReasonCode::SessionTakenOver,
            CloseReason::SlowConsumer => ReasonCode::QuotaExceeded,
            CloseReason::ServerShutdown => ReasonCode::ServerShuttingDown,
            CloseReason::AdministrativeAction => ReasonCode::AdministrativeAction,
            // 0x9C with a Server Reference instead when `drain.server_reference` is set.
            CloseReason::Drained => ReasonCode::ServerShuttingDown,
            CloseReason::StoreFailed => ReasonCode::UnspecifiedError,
            CloseReason::TenantUnknown => ReasonCode::NotAuthorized,
            _ => return None,
        })
    }
}

reasons! {
    /// Why a message was not delivered to a session: one value per cause, each counted.
    DropReason {
        /// QoS 0 to a session whose outbox is full (slow consumer).
        OutboxFull => "qos0_outbox_full",
        /// QoS 0 to a session that is offline (QoS 0 is not queued).
        Offline => "qos0_offline",
        /// QoS 1/2 to a session whose queue is at `max_queued_messages` or
        /// `max_queued_bytes` (the publisher was refused, or, on a listener in
        /// `listeners.v3_accept_refused`, a 3.1.1 publisher acknowledged).
        QueueFull => "queue_full",
        /// The node's queued bytes were past `limits.max_queued_bytes_total`.
        MemoryBudget => "memory_budget",
        /// QoS 1/2 to an offline session of a tenant at its `max_offline_queued_messages`,
        /// `max_offline_queued_bytes` or `max_store_bytes`.
        TenantQuota => "tenant_quota",
        /// The message expired before it could be sent.
        Expired => "expired",
        /// Larger than the client's Maximum Packet Size.
        TooLargeForClient => "too_large_for_client",
        /// Clustered: a session that moved here a moment ago already holds it (the node it
        /// moved from handed it over); not a loss, counted to show the overlap.
        Duplicate => "duplicate",
    }
}

reasons! {
    /// Why a QoS 1/2 publication was refused rather than acknowledged.
    RefuseReason {
        /// A subscriber's queue was full (`max_queued_messages`, `max_queued_bytes`).
        QueueFull => "queue_full",
        /// The node's queued bytes were past `limits.max_queued_bytes_total`.
        MemoryBudget => "memory_budget",
        /// The tenant's offline sessions are owed as much as its quotas allow
        /// (`max_offline_queued_messages`, `max_offline_queued_bytes`, `max_store_bytes`).
        TenantQuota => "tenant_quota",
        /// The tenant's retained messages were at `limits.max_retained_messages` or
        /// `max_retained_bytes`.
        RetainedLimit => "retained_limit",
        /// The store is past its disk limit.
        DiskLimit => "disk_limit",
        /// A store write failed.
        StoreFailed => "store_failed",
        /// The store could not record the message (it does not encode as the store keeps
        /// it: in practice never, as the codec's limits keep every message encodable).
        Unrecordable => "unrecordable",
        /// Clustered: as many QoS 1/2 messages as `cluster.max_unconfirmed` wait for the
        /// cluster's stream to confirm them (NATS slow or unreachable).
        ClusterBacklog => "cluster_backlog",
    }
}

/// Every counter.
#[derive(Debug)]
pub struct Stats {
    closes: Vec<AtomicU64>,
    drops: Vec<AtomicU64>,
    /// Connections accepted.
    pub accepted: AtomicU64,
    /// Connections currently open (accepted and not closed).
    pub open: AtomicU64,
    /// PUBLISH packets received from clients.
    pub published: AtomicU64,
    /// Messages written to subscribers.
    pub delivered: AtomicU64,
    /// QoS 1/2 publications refused because the store is past its disk limit or failing.
    pub store_refused: AtomicU64,
    /// QoS 1/2 publications refused (v5: a reason code in PUBACK/PUBREC; 3.1.1: the
    /// connection closed unacknowledged), by why.
    refused: Vec<AtomicU64>,
    /// 3.1.1 QoS 1/2 publications that could not be queued for every subscriber, and were
    /// acknowledged all the same (`listeners.v3_accept_refused`).
    pub accepted_unqueued: AtomicU64,
    /// Bytes held by every session queue (`broker::flow`): a gauge. Signed: a subscriber
    /// may take a delivery out (and give its bytes back) before the publisher that queued
    /// it has added them, once per message, so it can dip below 0 for a moment.
    queued_bytes: AtomicI64,
    /// Publishers that parked on a congested subscriber (pushback).
    pub pushbacks: AtomicU64,
    /// Subscribers marked stalled: still congested after `limits.stall_after_ms`.
    pub stalls: AtomicU64,
    /// Sessions ended because their expiry interval passed with no connection.
    pub sessions_expired: AtomicU64,
    /// `$SYS/` messages Herald published (status topics and client events, `broker::sys`).
    pub sys_published: AtomicU64,
    /// PUBLISH packets and CONNECTs with a will to `$SYS/` refused: only Herald publishes
    /// there (the HTTP API refuses it too, with a 400).
    pub sys_refused: AtomicU64,
    /// Per-thread counters of the hot path: packets and bytes, delivery latency.
    pub hot: crate::metrics::Hot,
    /// Connections by listener and protocol.
    pub connections: crate::metrics::Connections,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            closes: CloseReason::ALL.iter().map(|_| AtomicU64::new(0)).collect(),
            drops: DropReason::ALL.iter().map(|_| AtomicU64::new(0)).collect(),
            accepted: AtomicU64::new(0),
            open: AtomicU64::new(0),
            published: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            store_refused: AtomicU64::new(0),
            refused: RefuseReason::ALL
                .iter()
                .map(|_| AtomicU64::new(0))
                .collect(),
            accepted_unqueued: AtomicU64::new(0),
            queued_bytes: AtomicI64::new(0),
            pushbacks: AtomicU64::new(0),
            stalls: AtomicU64::new(0),
            sessions_expired: AtomicU64::new(0),
            sys_published: AtomicU64::new(0),
            sys_refused: AtomicU64::new(0),
            hot: Default::default(),
            connections: Default::default(),
        }
    }
}

impl Stats {
    /// Counts a closed connection.
    pub fn closed(&self, reason: CloseReason) {
        self.closes[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Connections closed for `reason` so far.
    pub fn closes(&self, reason: CloseReason) -> u64 {
        self.closes[reason as usize].load(Ordering::Relaxed)
    }

    /// Counts `n` dropped deliveries.
    pub fn dropped(&self, reason: DropReason, n: u64) {
        self.drops[reason as usize].fetch_add(n, Ordering::Relaxed);
    }

    /// Deliveries dropped for `reason` so far.
    pub fn drops(&self, reason: DropReason) -> u64 {
        self.drops[reason as usize].load(Ordering::Relaxed)
    }

    /// Counts a refused publication.
    pub fn refuse(&self, reason: RefuseReason) {
        self.refused[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Publications refused for `reason` so far.
    pub fn refusals(&self, reason: RefuseReason) -> u64 {
        self.refused[reason as usize].load(Ordering::Relaxed)
    }

    /// Whether the node's queued bytes are past `limit`.
    pub fn over_budget(&self, limit: u64) -> bool {
        self.queued_bytes.load(Ordering::Relaxed) >= limit as i64
    }

    /// Bytes held by every session queue now.
    pub fn queued_bytes(&self) -> u64 {
        self.queued_bytes.load(Ordering::Relaxed).max(0) as u64
    }

    /// Adds `bytes` to the node's queued bytes.
    pub fn charge_queued(&self, bytes: u64) {
        if bytes > 0 {
            self.queued_bytes.fetch_add(bytes as i64, Ordering::Relaxed);
        }
    }

    /// Gives back `bytes` of the node's queued bytes.
    pub fn release_queued(&self, bytes: u64) {
        if bytes > 0 {
            self.queued_bytes.fetch_sub(bytes as i64, Ordering::Relaxed);
        }
    }
}
