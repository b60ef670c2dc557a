//! `herald config generate`: the default configuration as a commented TOML file.
//!
//! The file's text is kept here as it is printed, comments and key order included, with each
//! key's value left out; the values are the defaults (`Config::default()`), filled in as the
//! file is written, so that a changed default cannot leave the file behind.

use super::Config;

/// The file with each key's value left out: every line `key =` gets the default value of
/// `key` in the section above it.
const TEMPLATE: &str = r#"# Herald configuration. Every key can also be set with an environment variable named
# HERALD_<SECTION>_<KEY> (for example HERALD_LIMITS_MAX_CONNECTIONS=50000), and some with a
# flag (`herald serve --help`). Flags beat variables, variables beat this file.

[listeners]
# MQTT over TCP (flag --mqtt-listen, repeatable).
mqtt =
# MQTT over WebSocket, for browsers (flag --ws-listen, repeatable; [] for none).
ws =
# MQTT over TLS and over WebSocket over TLS (flags --tls-listen and --wss-listen); both use
# the certificate of [tls].
tls =
wss =
# The HTTP path of the WebSocket listeners (subprotocol "mqtt").
ws_path =
# Listeners, by address, behind a load balancer that sends a PROXY protocol header (v1 or
# v2) first: logs and limits then see the client's own address. A connection without a
# valid header on such a listener is refused.
proxy_protocol =
# Listeners, by address, where an MQTT 3.1/3.1.1 client's QoS 1/2 PUBLISH that Herald cannot
# queue for every subscriber (a full queue, the memory budget) is acknowledged all the same
# and counted, as mosquitto does. Elsewhere that client is disconnected without the
# acknowledgement, so it sends the message again: 3.1.1 has no reason code to say no with.
# (MQTT 5 clients are always told: PUBACK/PUBREC 0x97 Quota exceeded.)
v3_accept_refused =
# A non-loopback listener that admits anonymous clients (auth.anonymous; every listener
# does while no authentication method is configured) is refused unless this is true (and a
# warning is logged at start for each such listener).
allow_anonymous_public =
# Listen backlog of the listeners above: connections the kernel queues before Herald accepts
# them, so that a reconnect storm is not dropped (capped by the kernel's
# net.core.somaxconn, 4096 by default on Linux 5.4 and later).
backlog =

[tls]
# PEM certificate chain (leaf first) and private key of the tls and wss listeners (flags
# --tls-cert, --tls-key). Replacing the files and sending SIGHUP makes new handshakes use
# the new certificate; open connections stay up. A bad new pair is refused and logged, and
# the old one stays in use.
cert_file =
key_file =
# Client certificates (mutual TLS): "none", "optional" or "required"; verified against the
# CA certificates in client_ca_file.
client_ca_file =
client_auth =
# The client's username: "connect" (from CONNECT), or from its certificate: "cn" (subject
# Common Name) or "san" (first DNS, e-mail or URI Subject Alternative Name).
username_from =
# The client's tenant from its certificate's subject: "none", "o" (Organization) or "ou"
# (Organizational Unit).
tenant_from =
# Oldest TLS version accepted: "1.2" or "1.3".
min_version =
# Seconds between checks of the certificate files for changes; 0: only SIGHUP reloads.
watch_secs =

[http]
# The HTTP API (/api/v1), Prometheus metrics (/metrics) and health (/healthz, /readyz);
# "" for none (flag --http-listen).
listen =
# Bearer tokens /api/v1 accepts (Authorization: Bearer <key>), 16 characters at least.
# Without any, anyone who reaches the API may use it: it must then listen on loopback, and
# requests that a web page could send (an Origin or a Host that is not loopback) are refused.
api_keys =
# Bearer tokens scoped to one tenant, by tenant name (16 characters at least; a key belongs
# to one scope only). Such a key works in its own tenant only (publish, clients,
# subscriptions, retained messages, stats) and is refused drain, reload, the log level and
# /metrics. Inline, tenant_keys = { acme = ["key-1", "key-2"] }, or, in place of this line,
# a [http.tenant_keys] section (after the other [http] keys) with lines acme = ["key-1"].
# Tenant keys alone also make the API ask for keys.
tenant_keys =
# true: /metrics needs an API key too (a node-wide one: needs api_keys); false lets
# Prometheus scrape without one.
metrics_requires_key =
# Serve the web dashboard at / (false: only the API, /metrics and the health checks). It
# signs in with the same API keys and uses the public API only.
dashboard =
# Seconds an Idempotency-Key is remembered (and stored, with the store on): a retry within
# it gets the first answer and publishes nothing.
idempotency_window_secs =
# Most idempotency keys remembered at once; past it the oldest are forgotten first.
max_idempotency_keys =
# Largest request body, bytes, and most messages in one POST /api/v1/publish/batch.
max_body_bytes =
max_batch =
# Seconds a client has to send a request's head (request line and headers), from the
# connection's opening or the request's first byte; and seconds a connection may pass
# without a byte in either direction (idle between requests, or a stalled body or answer).
# Either closes the connection.
header_timeout_secs =
idle_timeout_secs =
# Open HTTP connections; past it new ones are closed at once and counted
# (herald_http_connections_refused_total). The descriptors they may take are kept back
# from limits.max_connections.
max_connections =

[drain]
# On SIGTERM or POST /api/v1/drain: stop accepting, report not ready (/readyz 503), then
# disconnect the clients spread over this many seconds (0: all at once), so that they do not
# all reconnect elsewhere at the same instant; then write the store and exit 0.
period_secs =
# Told to v5 clients as Server Reference in DISCONNECT 0x9C (Use another server), for
# example "mqtt-2.example.com:1883"; "" tells them 0x8B (Server shutting down).
server_reference =

[limits]
# Open client connections; past it new ones are refused (v5: CONNACK 0x97 Quota exceeded).
max_connections =
# Seconds a new connection has to send CONNECT.
connect_timeout_secs =
# New connections a second from one source address (0: no limit), and how many it may open
# at once. Past them a connection is closed at accept, before any TLS or WebSocket
# handshake (after the PROXY header on listeners that take one), and counted
# (herald_connections_closed_total{reason="connect_rate_limited"}).
connect_rate_per_ip =
connect_burst_per_ip =
# Largest packet accepted, bytes (told to v5 clients as Maximum Packet Size).
max_packet_size =
# Largest keep-alive accepted, seconds; 0 accepts any. v5 clients asking for more (or for 0)
# are told this value as Server Keep Alive.
max_keep_alive_secs =
# Unacknowledged QoS 1/2 messages a client may send Herald at once (Receive Maximum).
receive_maximum =
# Topic aliases a v5 client may use towards Herald.
topic_alias_maximum =
# Subscriptions per client.
max_subscriptions_per_client =
# Longest topic name or filter, bytes.
max_topic_length =
# Most levels in a topic name or filter.
max_topic_levels =
# Longest client identifier, bytes.
max_client_id_length =
# Messages and payload bytes waiting to be written to one connected client. Past these,
# QoS 0 messages are dropped (counted); QoS 1/2 wait in the session queue.
max_outbox_messages =
max_outbox_bytes =
# QoS 1/2 messages and their bytes queued for one session (offline or slow). Past either, a
# new message for that session is refused, never acknowledged and then dropped: an MQTT 5
# publisher gets 0x97 Quota exceeded, a 3.1.1 publisher is disconnected unacknowledged (see
# listeners.v3_accept_refused).
max_queued_messages =
max_queued_bytes =
# Bytes of QoS 1/2 messages sent to one client and not yet acknowledged; past it Herald
# waits for acknowledgements before sending more (a client that reads and never acknowledges
# holds no more memory than this).
max_inflight_bytes =
# Bytes held by all session queues together (a message counted once however many queues
# hold it). Past it, QoS 0 copies are dropped and QoS 1/2 publications refused as above.
max_queued_bytes_total =
# A subscriber whose queue is past half its outbox bound holds back its publishers
# (pushback: Herald stops reading them) while its socket keeps taking bytes. One whose socket
# has taken nothing for this many milliseconds counts as stalled: it loses QoS 0 messages
# instead of slowing its publishers and everyone else they feed.
stall_after_ms =
# Retained messages, and their bytes, one tenant may keep. Past either, a retained message
# on a new topic is refused as above.
max_retained_messages =
max_retained_bytes =
# Seconds a client's socket may stay unwritable with data waiting before it is disconnected
# as a slow consumer.
slow_consumer_timeout_secs =

[session]
# Longest session expiry granted, seconds.
max_session_expiry_secs =
# Whether retained messages are supported.
retain_available =
# Highest QoS granted and accepted (0, 1 or 2).
maximum_qos =

[store]
# Sessions of clients that asked to be remembered (clean session 0, v5 session expiry > 0),
# their queued and unacknowledged QoS 1/2 messages, QoS 2 state, retained messages and wills
# are stored here and survive a restart or a crash. A QoS 1/2 publication is acknowledged
# only once it is on disk. Directory (flag --data-dir; locked while Herald runs):
data_dir =
# true: keep everything in memory only; nothing survives a restart (flag --in-memory).
in_memory =
# How commits reach the disk:
#   "batch"  one fsync per group commit: every change that arrived while the previous commit
#            was being written shares the next fsync. Nothing acknowledged is lost, even if
#            the machine loses power. The default.
#   "always" one commit and one fsync per change: the same promise, far lower throughput.
#   "never"  no fsync: an acknowledged message survives a crash of Herald (the kernel has it)
#            but not a crash of the machine.
fsync =
# Bytes the store may take on disk (0: no limit), and free bytes its file system must keep.
# Past either, new QoS 1/2 publications are refused (v5: reason 0x97 Quota exceeded; 3.1.1:
# the connection is closed) while deliveries and acknowledgements go on.
max_disk_bytes =
min_free_disk_bytes =
# Bytes a keyspace's in-memory table grows to before it is written to a sorted file.
memtable_bytes =
# Bytes of journal kept before old journals are retired (at least 64 MiB). Bounds the disk
# held by messages already delivered.
max_journal_bytes =

[auth]
# The authentication methods tried for each CONNECT, in order: "password_file", "jwt",
# "callout", "certificate". The first that recognises the client accepts or refuses it; one
# that does not (no such user, no token) leaves it to the next. [] tries every configured
# method in that order.
order =
# Listeners ("mqtt", "ws", "tls", "wss") that admit clients no method recognises, as
# anonymous. Left out: every listener while no method is configured, none once one is.
# anonymous = ["mqtt"]
# mosquitto's password file, used as it is (mosquitto_passwd's $7$ and $6$ hashes);
# `herald passwd` adds, changes and deletes users (argon2id). Herald's own lines may end in
# ":tenant". Checked for changes every password_file_watch_secs (0: SIGHUP only).
password_file =
password_file_watch_secs =
# Where a client's tenant comes from when its method does not say: "none" (the default
# tenant), "username_prefix" or "client_id_prefix" (the part before tenant_separator:
# "acme/alice" is tenant "acme").
tenant_from =
tenant_separator =

[auth.jwt]
# JSON Web Tokens (HS256/384/512, RS256, ES256, EdDSA) in the password ("password"), or in
# the username ("username", after username_prefix when set).
token_in =
username_prefix =
# Keys: an HMAC secret (secret or, better, secret_file), PEM public keys, a JWKS file, a
# JWKS URL (fetched at start, every jwks_refresh_secs, and on an unknown key id at most once
# per jwks_min_refresh_secs). The method takes part once one is set.
secret =
secret_file =
public_key_files =
jwks_file =
jwks_url =
jwks_refresh_secs =
jwks_min_refresh_secs =
# Algorithms accepted ([]: those of the keys configured).
algorithms =
# Clock skew allowed on exp, nbf and iat, seconds; whether exp is required.
leeway_secs =
require_exp =
# Accepted aud and iss values ([]: not checked).
audience =
issuer =
# Claims naming the client's username and tenant, carrying its ACL
# ({"pub": [...], "sub": [...], "deny": [...]}) and its limits
# ({"messages_per_sec": 10, "bytes_per_sec": 65536, "max_subscriptions": 100, "max_qos": 1}).
username_claim =
tenant_claim =
acl_claim =
limits_claim =

[auth.callout]
# An HTTP service asked about each CONNECT ("" for none): POST of a JSON object (client_id,
# username, password, peer, listener, certificate); see docs/operations.md for the answer.
url =
timeout_ms =
# A callout that times out or fails refuses the client with 0x88 Server unavailable, unless
# fail_open lets the next method (and auth.anonymous) decide.
fail_open =
# Answers are cached for their Cache-Control max-age, at most cache_max_secs (0: never),
# cache_default_secs without one; at most cache_capacity answers. Concurrent look-ups of one
# key make one request. The key is the username, password, certificate and listener, and
# the client id too with cache_by_client_id.
cache_max_secs =
cache_default_secs =
cache_capacity =
cache_by_client_id =
# The Authorization header sent to the service ("" for none), and idle connections pooled.
authorization =
pool_idle =

[acl]
# Rules in mosquitto's acl_file format (topic/user/pattern lines, %u and %c), plus %t (the
# tenant) and tenant blocks. "" for none: every client may then do everything, unless its
# token or the callout carries rules. Checked for changes every watch_secs (0: SIGHUP only).
file =
watch_secs =
# A 3.1/3.1.1 PUBLISH the rules deny: "drop" (acknowledged and dropped, counted, as
# mosquitto does) or "disconnect". MQTT 5 clients are told: PUBACK/PUBREC 0x87.
v3_publish_denied =

[tenants]
# Each tenant's own settings: a TOML file of tables named after tenants ([acme], then any key
# of [tenants.defaults]), read at start and when it changes (watch_secs; 0: SIGHUP only).
# The admin API (/api/v1/tenants) creates, changes and removes tenants too; they are kept in
# the store.
file =
watch_secs =
# Only tenants the file or the admin API know may connect (others: CONNACK 0x87).
require_known =
# A publisher over a message or byte rate: "throttle" (its socket is not read until the
# rate allows more: TCP pushes back) or "refuse" (v5: PUBACK 0x97 Quota exceeded).
rate_exceeded =
# Tenants with metric labels of their own: the busiest metrics_top, and those listed.
metrics_top =
metrics_allow =

[tenants.defaults]
# What every tenant gets unless its own settings say otherwise; a key left out is no limit.
# max_connections = 10000              # open connections (CONNACK 0x97)
# connect_rate = 100                   # new connections a second (CONNACK 0x9F)
# max_sessions = 10000                 # sessions, connected or not
# max_persistent_sessions = 10000      # sessions outliving their connection
# max_subscriptions = 100000           # across the tenant (SUBACK 0x97)
# max_subscriptions_per_client = 100
# max_shared_members = 100             # members of one shared group
# max_retained_messages = 100000       # PUBACK 0x97
# max_retained_bytes = 104857600
# max_offline_queued_messages = 1000000 # QoS 1/2 owed to offline sessions (PUBACK 0x97)
# max_offline_queued_bytes = 1073741824
# messages_per_sec = 10000             # PUBLISH from all its clients
# bytes_per_sec = 10485760
# client_messages_per_sec = 100        # PUBLISH from one connection
# client_bytes_per_sec = 1048576
# outbound_bytes_per_sec = 104857600   # written to its clients
# http_publish_per_sec = 1000          # HTTP API publications (429)
# max_store_bytes = 1073741824         # retained + owed to offline sessions
# max_packet_size = 1048576
# max_payload_bytes = 262144
# max_qos = 2
# retain = true
# wildcards = true
# shared_subscriptions = true
# protocols = ["3.1", "3.1.1", "5"]

[cluster]
# Join other Herald nodes through these NATS servers (nats://host:4222, tls://host:4222;
# flag --cluster, comma-separated). Empty: a single node. Nodes find each other through NATS.
nats =
# This node's name, unique in the cluster and stable across restarts (flag --node-id).
# Empty: the host name.
node_id =
# The first tokens of every subject the cluster uses (several clusters may share a NATS).
subject_prefix =
# Refuse a NATS connection that is not TLS.
require_tls =
# QoS 1/2 messages go through a JetStream stream (<prefix>-messages) before their publisher
# is acknowledged: copies it keeps (1, 3 or 5, at most the JetStream servers), how long and
# how much it keeps (what a node cut off from NATS catches up on).
replicas =
message_max_age_secs =
message_max_bytes =
# QoS 1/2 messages waiting for the stream at most; past it new ones are refused (0x97, 429).
max_unconfirmed =
# Subjects a node subscribes under one first topic level (devices/...) at most; past it, one
# wildcard subscription for the level instead (~7 KB saved per subject; the node then gets
# all of the level's messages). 0: never.
coarsen_above =
# Keep persistent sessions in JetStream as well (bucket <prefix>-sessions, `replicas`
# copies): a node whose machine is lost has its sessions resumed on the others, with
# nothing acknowledged lost. Costs a JetStream write before each SUBACK and each step of a
# QoS 2 exchange with such a session, and one a second per session that changed.
replicate_sessions =
# NATS credentials, when its servers ask for them: a credentials file (JWT and NKey seed),
# or a user and password, or a token; a CA file to verify them with, a client certificate.
# credentials_file = "/etc/herald/nats.creds"
# user = "herald"
# password = "..."
# token = "..."
# tls_ca_file = "/etc/herald/nats-ca.pem"
# tls_cert_file = "/etc/herald/nats-client.pem"
# tls_key_file = "/etc/herald/nats-client.key"

[sys]
# $SYS/ topics: the node's status under mosquitto's names ($SYS/broker/...) and Herald's
# ($SYS/herald/...), retained, republished every this many seconds while someone subscribes
# to a $SYS filter (0: never); each tenant sees its own figures. Readable as the ACLs allow.
interval_secs =
# $SYS/brokers/<node>/clients/<client id>/connected and .../disconnected (EMQX's names,
# JSON) as clients come and go; built only while someone subscribes to them.
client_events =

[runtime]
# Worker threads; 0 sizes them from the CPU quota (cgroup v1/v2), else the core count.
worker_threads =

[log]
# A tracing filter: "info", "debug", "herald=debug,info", ... (flag --log-level); changed
# while running by PUT /api/v1/log or a reload.
level =
# "text" for people, "json" for log collectors: one object per line (flag --log-format).
format =
"#;

/// The default configuration, every key written out with a comment saying what it does.
pub fn generate() -> String {
    let defaults = toml::Table::try_from(Config::default())
        .expect("the defaults serialize: every field is a number, a string, a boolean or a list");
    let mut out = String::with_capacity(TEMPLATE.len() + 1024);
    let mut section = None;
    for line in TEMPLATE.lines() {
        out.push_str(line);
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.split('.').try_fold(&defaults, |table, part| {
                table.get(part).and_then(toml::Value::as_table)
            });
        } else if let Some(value) = line.strip_suffix(" =").and_then(|key| section?.get(key)) {
            out.push(' ');
            out.push_str(&value.to_string());
        }
        out.push('\n');
    }
    out
}
