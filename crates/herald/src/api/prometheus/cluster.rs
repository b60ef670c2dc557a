//! The cluster's metrics (only on a clustered node).

use std::sync::atomic::Ordering;

use super::{labelled, single};

/// The link to the other nodes (only on a clustered node).
pub(super) fn cluster(out: &mut String, c: &crate::cluster::Cluster) {
    let s = &c.stats;
    let n = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    single(
        out,
        "herald_cluster_nats_connected",
        "gauge",
        "1 while the NATS connection is up.",
        u8::from(c.connected()),
    );
    single(
        out,
        "herald_cluster_subscriptions",
        "gauge",
        "NATS subscriptions held: the subjects this node's filters need (a first topic level with more than cluster.coarsen_above of them as one wildcard).",
        n(&s.subscriptions),
    );
    single(
        out,
        "herald_cluster_coarsened_total",
        "counter",
        "Times a first topic level's many subjects became one wildcard subscription (cluster.coarsen_above).",
        n(&s.coarsened),
    );
    single(
        out,
        "herald_cluster_messages_sent_total",
        "counter",
        "Messages handed to NATS for the other nodes.",
        n(&s.sent),
    );
    single(
        out,
        "herald_cluster_messages_received_total",
        "counter",
        "Messages from other nodes routed here.",
        n(&s.received),
    );
    labelled(
        out,
        "herald_cluster_messages_dropped_total",
        "counter",
        "Messages between nodes not sent or not routed, by why (send_queue_full: NATS slower than this node publishes).",
        "reason",
        [
            ("send_queue_full", n(&s.send_queue_full)),
            ("send_failed", n(&s.send_failed)),
            ("unreadable_or_unknown", n(&s.dropped_in)),
        ],
    );
    single(
        out,
        "herald_cluster_echoes_total",
        "counter",
        "This node's own messages back from NATS (the stream republishes QoS 1/2 messages to every node subscribed to their topic), not routed again.",
        n(&s.echoes),
    );
    single(
        out,
        "herald_cluster_unconfirmed",
        "gauge",
        "QoS 1/2 messages waiting for the cluster's stream to keep them (their publishers wait for it).",
        c.confirmations.waiting(),
    );
    let d = &c.durable_stats;
    labelled(
        out,
        "herald_cluster_stream_writes_total",
        "counter",
        "QoS 1/2 messages written to the cluster's stream: stored, and writes tried again (NATS slow or unreachable).",
        "outcome",
        [("stored", n(&d.stored)), ("retried", n(&d.retries))],
    );
    labelled(
        out,
        "herald_cluster_caught_up_total",
        "counter",
        "QoS 1/2 messages read from the cluster's stream after NATS was lost (routed), and those it no longer had (lost: past its age or size limits).",
        "outcome",
        [("routed", n(&c.gap.caught_up)), ("lost", n(&c.gap.lost))],
    );
    let r = &c.registry_stats;
    labelled(
        out,
        "herald_cluster_client_claims_total",
        "counter",
        "Client ids claimed in the cluster's registry by CONNECTs here (taken_over: from another node), and claims that failed (NATS unreachable: CONNECT refused with 0x88).",
        "outcome",
        [
            ("claimed", n(&r.claimed)),
            ("taken_over", n(&r.taken_over)),
            ("failed", n(&r.failed)),
        ],
    );
    single(
        out,
        "herald_cluster_let_go_total",
        "counter",
        "Sessions here ended because another node claimed their client id (their connection told 0x8E).",
        n(&r.let_go),
    );
    labelled(
        out,
        "herald_cluster_sessions_moved_total",
        "counter",
        "Persistent sessions moved between nodes: here from another node (in), from here to another (out), and moves to here that did not finish (failed: the client got a new session).",
        "direction",
        [
            ("in", n(&r.moved)),
            ("out", n(&r.handed_over)),
            ("failed", n(&r.moves_failed)),
        ],
    );
    let rs = &c.replica_stats;
    labelled(
        out,
        "herald_cluster_replica_writes_total",
        "counter",
        "Snapshots of replicated sessions written to the cluster's bucket (written), failed and tried again (failed), refused because another node wrote the session since (fenced).",
        "outcome",
        [
            ("written", n(&rs.written)),
            ("failed", n(&rs.failed)),
            ("fenced", n(&rs.fenced)),
        ],
    );
    labelled(
        out,
        "herald_cluster_replica_resumed_total",
        "counter",
        "Replicated sessions resumed here after their node was gone (sessions), the messages they were owed read from the stream (replayed), and those the stream no longer had (lost: past its age or size limits).",
        "what",
        [
            ("sessions", n(&rs.resumed)),
            ("replayed", n(&rs.replayed)),
            ("lost", n(&rs.lost)),
        ],
    );
    labelled(
        out,
        "herald_cluster_retained_total",
        "counter",
        "Changes of the cluster's retained bucket applied here, and retained changes of this node not written to it.",
        "outcome",
        [
            ("applied", n(&s.retained_applied)),
            ("failed", n(&s.retained_failed)),
        ],
    );
}
