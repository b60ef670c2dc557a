//! `[limits]` and `[session]`: the bounds on clients and their traffic, and what their
//! sessions are granted.

use serde::{Deserialize, Serialize};

use super::{ConfigError, require};

/// Bounds. Each has a defined behaviour when hit, counted and logged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Open client connections; past it new connections are closed at once (v5: CONNACK 0x97).
    pub max_connections: usize,
    /// Seconds a new connection has to send CONNECT.
    pub connect_timeout_secs: u64,
    /// New connections a second from one source address (0: no limit); past it, and past
    /// `connect_burst_per_ip` at once, a connection is closed at accept (after its PROXY
    /// header, where the listener takes one), before any TLS or WebSocket handshake, so a
    /// flood from one address costs almost nothing and other addresses still connect.
    pub connect_rate_per_ip: u32,
    /// Connections one source address may open at once before `connect_rate_per_ip` holds
    /// it back (0: the rate itself).
    pub connect_burst_per_ip: u32,
    /// Largest packet accepted, in bytes (announced to v5 clients as Maximum Packet Size).
    pub max_packet_size: usize,
    /// Largest keep-alive accepted, in seconds; a v5 client asking for more (or for 0) is
    /// told this value as Server Keep Alive. 0 accepts whatever the client asks.
    pub max_keep_alive_secs: u16,
    /// QoS 1/2 messages a client may have unacknowledged towards Herald (Receive Maximum).
    pub receive_maximum: u16,
    /// Topic aliases a v5 client may use towards Herald (Topic Alias Maximum).
    pub topic_alias_maximum: u16,
    /// Subscriptions one client may hold.
    pub max_subscriptions_per_client: usize,
    /// Longest topic name or filter, in bytes.
    pub max_topic_length: usize,
    /// Most levels (`/`-separated parts) in a topic name or filter.
    pub max_topic_levels: usize,
    /// Longest client identifier, in bytes.
    pub max_client_id_length: usize,
    /// Messages waiting to be written to a connected client; past it QoS 0 messages are
    /// dropped (counted) and QoS 1/2 messages wait in the session queue.
    pub max_outbox_messages: usize,
    /// Bytes of payload waiting to be written to a connected client (as above).
    pub max_outbox_bytes: usize,
    /// QoS 1/2 messages queued for one session (offline, or slower than its outbox); past
    /// it, or past `max_queued_bytes`, a new message for that session is refused: v5
    /// publishers get 0x97 Quota exceeded, 3.1.1 publishers are disconnected unacknowledged
    /// (or, on `listeners.v3_accept_refused`, acknowledged and the copy counted dropped).
    pub max_queued_messages: usize,
    /// Topic and payload bytes of QoS 1/2 messages queued for one session (as above).
    pub max_queued_bytes: usize,
    /// Topic and payload bytes of QoS 1/2 messages sent to one client and not yet
    /// acknowledged: past it, Herald waits for acknowledgements before sending it more QoS
    /// 1/2 messages (as with its Receive Maximum), so a client that reads and never
    /// acknowledges holds a bounded amount of memory.
    pub max_inflight_bytes: usize,
    /// Bytes held by all session queues together (each message counted once however many
    /// queues hold it, plus a small fixed cost per queued delivery). Past it, QoS 0 copies
    /// are dropped and QoS 1/2 publications refused as above, until queues drain.
    pub max_queued_bytes_total: u64,
    /// A subscriber whose queue is past half its outbox bound holds its publishers back
    /// (pushback) while its socket keeps taking bytes; one whose socket has taken nothing
    /// for this many milliseconds counts as stalled: it then loses QoS 0 past its outbox
    /// bound instead of slowing its publishers (and everyone else they feed), until it
    /// catches up.
    pub stall_after_ms: u64,
    /// Retained messages one tenant may keep; past it, a retained message on a new topic is
    /// refused (v5: 0x97; 3.1.1: as for `max_queued_messages`) and counted.
    pub max_retained_messages: usize,
    /// Topic and payload bytes of one tenant's retained messages (as above).
    pub max_retained_bytes: usize,
    /// Seconds a client's socket may stay unwritable with data waiting before it is
    /// disconnected as a slow consumer.
    pub slow_consumer_timeout_secs: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 1_000_000,
            connect_timeout_secs: 10,
            max_packet_size: 1024 * 1024,
            max_keep_alive_secs: 3600,
            receive_maximum: 256,
            topic_alias_maximum: 64,
            max_subscriptions_per_client: 1000,
            connect_rate_per_ip: 0,
            connect_burst_per_ip: 0,
            max_topic_length: 1024,
            max_topic_levels: 32,
            max_client_id_length: 256,
            max_outbox_messages: 1000,
            max_outbox_bytes: 4 * 1024 * 1024,
            max_queued_messages: 10_000,
            max_queued_bytes: 64 * 1024 * 1024,
            max_inflight_bytes: 16 * 1024 * 1024,
            max_queued_bytes_total: 2 * 1024 * 1024 * 1024,
            stall_after_ms: 200,
            max_retained_messages: 1_000_000,
            max_retained_bytes: 1024 * 1024 * 1024,
            slow_consumer_timeout_secs: 30,
        }
    }
}

impl Limits {
    /// Checks every bound's range, and that the bounds on what Herald holds for a client
    /// hold at least one message of the largest size.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        self.validate_client_bounds()?;
        self.validate_held_bounds()
    }

    /// The bounds on what a client may send and ask for.
    fn validate_client_bounds(&self) -> Result<(), ConfigError> {
        require(&[
            (
                "limits.max_packet_size",
                (64..=mqtt_codec::MAX_PACKET_SIZE).contains(&self.max_packet_size),
                "must be between 64 and 268435460",
            ),
            (
                "limits.max_connections",
                self.max_connections > 0,
                "must be at least 1",
            ),
            (
                "limits.connect_timeout_secs",
                self.connect_timeout_secs > 0,
                "must be at least 1",
            ),
            (
                "limits.receive_maximum",
                self.receive_maximum > 0,
                "must be at least 1",
            ),
            (
                "limits.max_topic_length",
                (1..=65_535).contains(&self.max_topic_length),
                "must be between 1 and 65535",
            ),
            (
                "limits.max_topic_levels",
                self.max_topic_levels > 0,
                "must be at least 1",
            ),
            (
                "limits.max_client_id_length",
                self.max_client_id_length >= 23,
                "must be at least 23 (every server must accept 23-byte client ids)",
            ),
        ])
    }

    /// The bounds on what Herald holds for a client: its outbox, queue and messages in
    /// flight, every queue together, and its tenant's retained messages.
    fn validate_held_bounds(&self) -> Result<(), ConfigError> {
        require(&[
            (
                "limits.max_outbox_messages",
                self.max_outbox_messages > 0,
                "must be at least 1",
            ),
            (
                "limits.max_outbox_bytes",
                self.max_outbox_bytes > 0,
                "must be at least 1",
            ),
            (
                "limits.max_queued_messages",
                self.max_queued_messages > 0,
                "must be at least 1",
            ),
            (
                "limits.max_queued_bytes",
                self.max_queued_bytes >= self.max_packet_size,
                "must be at least limits.max_packet_size (one message of the largest size)",
            ),
            (
                "limits.max_inflight_bytes",
                self.max_inflight_bytes > 0,
                "must be at least 1",
            ),
            (
                "limits.max_queued_bytes_total",
                self.max_queued_bytes_total >= self.max_queued_bytes as u64,
                "must be at least limits.max_queued_bytes",
            ),
            (
                "limits.stall_after_ms",
                self.stall_after_ms > 0,
                "must be at least 1",
            ),
            (
                "limits.max_retained_messages",
                self.max_retained_messages > 0,
                "must be at least 1",
            ),
            (
                "limits.max_retained_bytes",
                self.max_retained_bytes >= self.max_packet_size,
                "must be at least limits.max_packet_size",
            ),
            (
                "limits.slow_consumer_timeout_secs",
                self.slow_consumer_timeout_secs > 0,
                "must be at least 1",
            ),
        ])
    }
}

/// Session behaviour.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionConfig {
    /// Longest session expiry granted, in seconds (v5 clients asking for more are told this
    /// value; 3.1.1 sessions with clean session 0 expire after it too).
    pub max_session_expiry_secs: u32,
    /// Whether retained messages are supported.
    pub retain_available: bool,
    /// Highest QoS granted to subscriptions and accepted on publications.
    pub maximum_qos: u8,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            max_session_expiry_secs: 7 * 24 * 3600,
            retain_available: true,
            maximum_qos: 2,
        }
    }
}

impl SessionConfig {
    /// Checks the QoS granted.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        require(&[(
            "session.maximum_qos",
            self.maximum_qos <= 2,
            "must be 0, 1 or 2",
        )])
    }
}
