//! `herald config generate`: the default configuration as a commented TOML file.

use super::Config;

/// The default configuration, every key written out with a comment saying what it does.
pub fn generate() -> String {
    let c = Config::default();
    let l = &c.limits;
    let s = &c.session;
    let mqtt: Vec<String> = c
        .listeners
        .mqtt
        .iter()
        .map(|a| format!("\"{a}\""))
        .collect();
    format!(
        r#"# Herald configuration. Every key can also be set with an environment variable named
# HERALD_<SECTION>_<KEY> (for example HERALD_LIMITS_MAX_CONNECTIONS=50000), and some with a
# flag (`herald serve --help`). Flags beat variables, variables beat this file.

[listeners]
# MQTT over TCP (flag --mqtt-listen, repeatable).
mqtt = [{mqtt}]
# Herald has no authentication yet: a non-loopback address is refused unless this is true.
allow_anonymous_public = {allow}

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
# QoS 1/2 messages queued for one session (offline or slow). Past it, new messages for that
# session are dropped and counted (drop newest): a publisher is never blocked by one slow
# subscriber.
max_queued_messages = {queued}
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

[runtime]
# Worker threads; 0 sizes them from the CPU quota (cgroup v1/v2), else the core count.
worker_threads = {workers}

[log]
# A tracing filter: "info", "debug", "herald=debug,info", ... (flag --log-level).
level = "{level}"
"#,
        allow = c.listeners.allow_anonymous_public,
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
        slow = l.slow_consumer_timeout_secs,
        expiry = s.max_session_expiry_secs,
        retain = s.retain_available,
        max_qos = s.maximum_qos,
        workers = c.runtime.worker_threads,
        level = c.log.level,
        mqtt = mqtt.join(", "),
    )
}
