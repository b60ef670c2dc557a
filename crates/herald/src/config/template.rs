//! `herald config generate`: the default configuration as a commented TOML file.

use super::Config;

/// The default configuration, every key written out with a comment saying what it does.
pub fn generate() -> String {
    let c = Config::default();
    let l = &c.limits;
    let s = &c.session;
    let list = |addrs: &[std::net::SocketAddr]| {
        addrs
            .iter()
            .map(|a| format!("\"{a}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let t = &c.tls;
    format!(
        r#"# Herald configuration. Every key can also be set with an environment variable named
# HERALD_<SECTION>_<KEY> (for example HERALD_LIMITS_MAX_CONNECTIONS=50000), and some with a
# flag (`herald serve --help`). Flags beat variables, variables beat this file.

[listeners]
# MQTT over TCP (flag --mqtt-listen, repeatable).
mqtt = [{mqtt}]
# MQTT over WebSocket, for browsers (flag --ws-listen, repeatable; [] for none).
ws = [{ws}]
# MQTT over TLS and over WebSocket over TLS (flags --tls-listen and --wss-listen); both use
# the certificate of [tls].
tls = [{tls}]
wss = [{wss}]
# The HTTP path of the WebSocket listeners (subprotocol "mqtt").
ws_path = "{ws_path}"
# Listeners, by address, behind a load balancer that sends a PROXY protocol header (v1 or
# v2) first: logs and limits then see the client's own address. A connection without a
# valid header on such a listener is refused.
proxy_protocol = [{proxy}]
# Listeners, by address, where an MQTT 3.1/3.1.1 client's QoS 1/2 PUBLISH that Herald cannot
# queue for every subscriber (a full queue, the memory budget) is acknowledged all the same
# and counted, as mosquitto does. Elsewhere that client is disconnected without the
# acknowledgement, so it sends the message again: 3.1.1 has no reason code to say no with.
# (MQTT 5 clients are always told: PUBACK/PUBREC 0x97 Quota exceeded.)
v3_accept_refused = [{v3_accept}]
# Herald has no authentication yet: a non-loopback address is refused unless this is true
# (and a warning is logged at start for each such listener).
allow_anonymous_public = {allow}
# Listen backlog of the listeners above: connections the kernel queues before Herald accepts
# them, so that a reconnect storm is not dropped (capped by the kernel's
# net.core.somaxconn, 4096 by default on Linux 5.4 and later).
backlog = {backlog}

[tls]
# PEM certificate chain (leaf first) and private key of the tls and wss listeners (flags
# --tls-cert, --tls-key). Replacing the files and sending SIGHUP makes new handshakes use
# the new certificate; open connections stay up. A bad new pair is refused and logged, and
# the old one stays in use.
cert_file = "{cert}"
key_file = "{key}"
# Client certificates (mutual TLS): "none", "optional" or "required"; verified against the
# CA certificates in client_ca_file.
client_ca_file = "{client_ca}"
client_auth = "{client_auth}"
# The client's username: "connect" (from CONNECT), or from its certificate: "cn" (subject
# Common Name) or "san" (first DNS, e-mail or URI Subject Alternative Name).
username_from = "{username_from}"
# Oldest TLS version accepted: "1.2" or "1.3".
min_version = "{min_version}"
# Seconds between checks of the certificate files for changes; 0: only SIGHUP reloads.
watch_secs = {watch}

[http]
# The HTTP API (/api/v1), Prometheus metrics (/metrics) and health (/healthz, /readyz);
# "" for none (flag --http-listen).
listen = "{http_listen}"
# Bearer tokens /api/v1 accepts (Authorization: Bearer <key>), 16 characters at least.
# Without any, anyone who reaches the API may use it: it must then listen on loopback, and
# requests that a web page could send (an Origin or a Host that is not loopback) are refused.
api_keys = [{api_keys}]
# true: /metrics needs an API key too (needs api_keys); false lets Prometheus scrape
# without one.
metrics_requires_key = {metrics_key}
# Seconds an Idempotency-Key is remembered (and stored, with the store on): a retry within
# it gets the first answer and publishes nothing.
idempotency_window_secs = {idem_window}
# Most idempotency keys remembered at once; past it the oldest are forgotten first.
max_idempotency_keys = {idem_max}
# Largest request body, bytes, and most messages in one POST /api/v1/publish/batch.
max_body_bytes = {max_body}
max_batch = {max_batch}
# Seconds a client has to send a request's head (request line and headers), from the
# connection's opening or the request's first byte; and seconds a connection may pass
# without a byte in either direction (idle between requests, or a stalled body or answer).
# Either closes the connection.
header_timeout_secs = {header_timeout}
idle_timeout_secs = {idle_timeout}
# Open HTTP connections; past it new ones are closed at once and counted
# (herald_http_connections_refused_total). The descriptors they may take are kept back
# from limits.max_connections.
max_connections = {http_max_connections}

[drain]
# On SIGTERM or POST /api/v1/drain: stop accepting, report not ready (/readyz 503), then
# disconnect the clients spread over this many seconds (0: all at once), so that they do not
# all reconnect elsewhere at the same instant; then write the store and exit 0.
period_secs = {drain_period}
# Told to v5 clients as Server Reference in DISCONNECT 0x9C (Use another server), for
# example "mqtt-2.example.com:1883"; "" tells them 0x8B (Server shutting down).
server_reference = "{server_reference}"

[limits]
# Open client connections; past it new ones are refused (v5: CONNACK 0x97 Quota exceeded).
max_connections = {max_connections}
# Seconds a new connection has to send CONNECT.
connect_timeout_secs = {connect_timeout}
# Largest packet accepted, bytes (told to v5 clients as Maximum Packet Size).
max_packet_size = {max_packet_size}
# Largest keep-alive accepted, seconds; 0 accepts any. v5 clients asking for more (or for 0)
# are told this value as Server Keep Alive.
max_keep_alive_secs = {max_keep_alive}
# Unacknowledged QoS 1/2 messages a client may send Herald at once (Receive Maximum).
receive_maximum = {receive_maximum}
# Topic aliases a v5 client may use towards Herald.
topic_alias_maximum = {topic_alias_maximum}
# Subscriptions per client.
max_subscriptions_per_client = {max_subs}
# Longest topic name or filter, bytes.
max_topic_length = {max_topic_length}
# Most levels in a topic name or filter.
max_topic_levels = {max_topic_levels}
# Longest client identifier, bytes.
max_client_id_length = {max_client_id}
# Messages and payload bytes waiting to be written to one connected client. Past these,
# QoS 0 messages are dropped (counted); QoS 1/2 wait in the session queue.
max_outbox_messages = {outbox_msgs}
max_outbox_bytes = {outbox_bytes}
# QoS 1/2 messages and their bytes queued for one session (offline or slow). Past either, a
# new message for that session is refused, never acknowledged and then dropped: an MQTT 5
# publisher gets 0x97 Quota exceeded, a 3.1.1 publisher is disconnected unacknowledged (see
# listeners.v3_accept_refused).
max_queued_messages = {queued}
max_queued_bytes = {queued_bytes}
# Bytes of QoS 1/2 messages sent to one client and not yet acknowledged; past it Herald
# waits for acknowledgements before sending more (a client that reads and never acknowledges
# holds no more memory than this).
max_inflight_bytes = {inflight_bytes}
# Bytes held by all session queues together (a message counted once however many queues
# hold it). Past it, QoS 0 copies are dropped and QoS 1/2 publications refused as above.
max_queued_bytes_total = {queued_total}
# A subscriber whose queue is past half its outbox bound holds back its publishers
# (pushback: Herald stops reading them) while its socket keeps taking bytes. One whose socket
# has taken nothing for this many milliseconds counts as stalled: it loses QoS 0 messages
# instead of slowing its publishers and everyone else they feed.
stall_after_ms = {stall}
# Retained messages, and their bytes, one tenant may keep. Past either, a retained message
# on a new topic is refused as above.
max_retained_messages = {retained_msgs}
max_retained_bytes = {retained_bytes}
# Seconds a client's socket may stay unwritable with data waiting before it is disconnected
# as a slow consumer.
slow_consumer_timeout_secs = {slow}

[session]
# Longest session expiry granted, seconds.
max_session_expiry_secs = {expiry}
# Whether retained messages are supported.
retain_available = {retain}
# Highest QoS granted and accepted (0, 1 or 2).
maximum_qos = {max_qos}

[store]
# Sessions of clients that asked to be remembered (clean session 0, v5 session expiry > 0),
# their queued and unacknowledged QoS 1/2 messages, QoS 2 state, retained messages and wills
# are stored here and survive a restart or a crash. A QoS 1/2 publication is acknowledged
# only once it is on disk. Directory (flag --data-dir; locked while Herald runs):
data_dir = "{data_dir}"
# true: keep everything in memory only; nothing survives a restart (flag --in-memory).
in_memory = {in_memory}
# How commits reach the disk:
#   "batch"  one fsync per group commit: every change that arrived while the previous commit
#            was being written shares the next fsync. Nothing acknowledged is lost, even if
#            the machine loses power. The default.
#   "always" one commit and one fsync per change: the same promise, far lower throughput.
#   "never"  no fsync: an acknowledged message survives a crash of Herald (the kernel has it)
#            but not a crash of the machine.
fsync = "{fsync}"
# Bytes the store may take on disk (0: no limit), and free bytes its file system must keep.
# Past either, new QoS 1/2 publications are refused (v5: reason 0x97 Quota exceeded; 3.1.1:
# the connection is closed) while deliveries and acknowledgements go on.
max_disk_bytes = {max_disk}
min_free_disk_bytes = {min_free}
# Bytes a keyspace's in-memory table grows to before it is written to a sorted file.
memtable_bytes = {memtable}
# Bytes of journal kept before old journals are retired (at least 64 MiB). Bounds the disk
# held by messages already delivered.
max_journal_bytes = {journal}

[runtime]
# Worker threads; 0 sizes them from the CPU quota (cgroup v1/v2), else the core count.
worker_threads = {workers}

[log]
# A tracing filter: "info", "debug", "herald=debug,info", ... (flag --log-level); changed
# while running by PUT /api/v1/log or a reload.
level = "{level}"
# "text" for people, "json" for log collectors: one object per line (flag --log-format).
format = "{log_format}"
"#,
        allow = c.listeners.allow_anonymous_public,
        backlog = c.listeners.backlog,
        max_connections = l.max_connections,
        connect_timeout = l.connect_timeout_secs,
        max_packet_size = l.max_packet_size,
        max_keep_alive = l.max_keep_alive_secs,
        receive_maximum = l.receive_maximum,
        topic_alias_maximum = l.topic_alias_maximum,
        max_subs = l.max_subscriptions_per_client,
        max_topic_length = l.max_topic_length,
        max_topic_levels = l.max_topic_levels,
        max_client_id = l.max_client_id_length,
        outbox_msgs = l.max_outbox_messages,
        outbox_bytes = l.max_outbox_bytes,
        queued = l.max_queued_messages,
        queued_bytes = l.max_queued_bytes,
        inflight_bytes = l.max_inflight_bytes,
        queued_total = l.max_queued_bytes_total,
        stall = l.stall_after_ms,
        retained_msgs = l.max_retained_messages,
        retained_bytes = l.max_retained_bytes,
        v3_accept = list(&c.listeners.v3_accept_refused),
        slow = l.slow_consumer_timeout_secs,
        expiry = s.max_session_expiry_secs,
        retain = s.retain_available,
        max_qos = s.maximum_qos,
        workers = c.runtime.worker_threads,
        data_dir = c.store.data_dir.display(),
        in_memory = c.store.in_memory,
        fsync = match c.store.fsync {
            super::Fsync::Batch => "batch",
            super::Fsync::Always => "always",
            super::Fsync::Never => "never",
        },
        max_disk = c.store.max_disk_bytes,
        min_free = c.store.min_free_disk_bytes,
        memtable = c.store.memtable_bytes,
        journal = c.store.max_journal_bytes,
        level = c.log.level,
        drain_period = c.drain.period_secs,
        server_reference = c.drain.server_reference,
        log_format = c.log.format,
        mqtt = list(&c.listeners.mqtt),
        ws = list(&c.listeners.ws),
        tls = list(&c.listeners.tls),
        wss = list(&c.listeners.wss),
        ws_path = c.listeners.ws_path,
        proxy = list(&c.listeners.proxy_protocol),
        cert = t.cert_file.display(),
        key = t.key_file.display(),
        client_ca = t.client_ca_file.display(),
        client_auth = match t.client_auth {
            super::ClientAuth::None => "none",
            super::ClientAuth::Optional => "optional",
            super::ClientAuth::Required => "required",
        },
        username_from = match t.username_from {
            super::UsernameFrom::Connect => "connect",
            super::UsernameFrom::Cn => "cn",
            super::UsernameFrom::San => "san",
        },
        min_version = t.min_version,
        http_listen = c.http.listen,
        api_keys = c
            .http
            .api_keys
            .iter()
            .map(|k| format!("\"{k}\""))
            .collect::<Vec<_>>()
            .join(", "),
        idem_window = c.http.idempotency_window_secs,
        idem_max = c.http.max_idempotency_keys,
        max_body = c.http.max_body_bytes,
        max_batch = c.http.max_batch,
        metrics_key = c.http.metrics_requires_key,
        header_timeout = c.http.header_timeout_secs,
        idle_timeout = c.http.idle_timeout_secs,
        http_max_connections = c.http.max_connections,
        watch = t.watch_secs,
    )
}
