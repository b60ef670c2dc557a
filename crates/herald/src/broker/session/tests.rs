//! The session's queue: its bounds, its charges, its stored deliveries.

use super::*;
use bytes::Bytes;

fn delivery(qos: QoS) -> Delivery {
    Delivery {
        message: Message::new(
            "t".into(),
            Bytes::from_static(b"x"),
            qos,
            false,
            Default::default(),
            0,
        ),
        qos,
        retain: false,
        subscription_identifiers: Box::default(),
        stored: None,
    }
}

/// `Session::enqueue` in a tenant with no quotas.
fn put(
    s: &Session,
    d: Delivery,
    stored: Option<&Arc<StoredMessage>>,
    limits: &Limits,
    over_budget: bool,
    recipients: &mut Vec<Recipient>,
) -> Enqueued {
    let tenant = crate::broker::Tenant::named("t");
    let defaults = crate::config::TenantLimits::default();
    let offline = crate::broker::quota::Offline::new(&tenant, &defaults);
    let bounds = Bounds {
        limits,
        over_budget,
        offline: &offline,
    };
    s.enqueue(d, stored, &bounds, recipients)
}

#[test]
fn a_tenant_bounds_what_its_offline_sessions_are_owed() {
    let tenant = crate::broker::Tenant::named("t");
    tenant.set_own(
        crate::config::TenantLimits {
            max_offline_queued_messages: Some(2),
            max_offline_queued_bytes: Some(5),
            ..Default::default()
        },
        true,
    );
    let defaults = crate::config::TenantLimits::default();
    let limits = Limits::default();
    let (a, b) = (
        Session::new(1, "a".into(), ProtocolVersion::V5),
        Session::new(2, "b".into(), ProtocolVersion::V5),
    );
    let put = |s: &Session| {
        let offline = crate::broker::quota::Offline::new(&tenant, &defaults);
        let bounds = Bounds {
            limits: &limits,
            over_budget: false,
            offline: &offline,
        };
        s.enqueue(delivery(QoS::AtLeastOnce), None, &bounds, &mut Vec::new())
    };
    let usage = &tenant.usage;
    let owed = || {
        (
            usage.offline_messages.load(Ordering::Relaxed),
            usage.offline_bytes.load(Ordering::Relaxed),
        )
    };
    assert!(matches!(put(&a), Enqueued::Queued { .. }));
    assert!(matches!(put(&b), Enqueued::Queued { .. }));
    assert_eq!(owed(), (2, 4));
    assert_eq!(
        put(&a),
        Enqueued::Dropped(DropReason::TenantQuota),
        "two messages are owed across the tenant: a third is refused"
    );
    assert_eq!(owed(), (2, 4), "a refused copy is not counted");
    assert_eq!(
        usage.breaches(crate::broker::quota::Breach::OfflineQueue),
        1
    );
    b.lock().connected = true;
    assert!(
        matches!(put(&b), Enqueued::Queued { .. }),
        "a connected session's queue is not bounded by the offline quota"
    );
    assert_eq!(owed(), (2, 4));
    assert_eq!(
        a.lock().owed(),
        (1, 2),
        "what a is owed, as counted when it arrived"
    );
}

#[test]
fn qos0_needs_a_connection_and_room() {
    let limits = Limits {
        max_outbox_messages: 2,
        max_queued_messages: 3,
        ..Limits::default()
    };
    let s = Session::new(1, "c".into(), ProtocolVersion::V5);
    let enqueue = |qos| put(&s, delivery(qos), None, &limits, false, &mut Vec::new());
    let queued = |congested| Enqueued::Queued {
        charge: super::super::flow::DELIVERY_OVERHEAD + 2,
        congested,
    };
    assert_eq!(
        enqueue(QoS::AtMostOnce),
        Enqueued::Dropped(DropReason::Offline)
    );
    assert_eq!(
        enqueue(QoS::AtLeastOnce),
        queued(false),
        "QoS 1 waits offline, and an offline session does not push back"
    );
    s.lock().connected = true;
    assert_eq!(
        enqueue(QoS::AtMostOnce),
        queued(true),
        "2 of 2: queued, past half the outbox bound"
    );
    assert_eq!(
        enqueue(QoS::AtMostOnce),
        Enqueued::Dropped(DropReason::OutboxFull)
    );
    assert_eq!(enqueue(QoS::ExactlyOnce), queued(true));
    assert_eq!(
        enqueue(QoS::ExactlyOnce),
        Enqueued::Dropped(DropReason::QueueFull)
    );
    assert_eq!(s.lock().queue_bytes, 3 * 2);
}

#[test]
fn queued_bytes_and_the_node_budget_bound_qos1() {
    let limits = Limits {
        max_queued_bytes: 5,
        ..Limits::default()
    };
    let s = Session::new(1, "c".into(), ProtocolVersion::V5);
    let enqueue = |over| {
        let d = delivery(QoS::AtLeastOnce);
        put(&s, d, None, &limits, over, &mut Vec::new())
    };
    assert!(matches!(enqueue(false), Enqueued::Queued { .. }));
    assert!(matches!(enqueue(false), Enqueued::Queued { .. }));
    assert_eq!(
        enqueue(false),
        Enqueued::Dropped(DropReason::QueueFull),
        "4 of 5 bytes queued: 2 more do not fit"
    );
    let s = Session::new(2, "d".into(), ProtocolVersion::V5);
    assert_eq!(
        put(
            &s,
            delivery(QoS::AtLeastOnce),
            None,
            &Limits::default(),
            true,
            &mut Vec::new()
        ),
        Enqueued::Dropped(DropReason::MemoryBudget)
    );
}

#[test]
fn a_message_in_many_queues_is_charged_once() {
    let limits = Limits::default();
    let d = delivery(QoS::AtLeastOnce);
    let (a, b) = (
        Session::new(1, "a".into(), ProtocolVersion::V5),
        Session::new(2, "b".into(), ProtocolVersion::V5),
    );
    let charge = |e| match e {
        Enqueued::Queued { charge, .. } => charge,
        other => panic!("{other:?}"),
    };
    let overhead = super::super::flow::DELIVERY_OVERHEAD;
    assert_eq!(
        charge(put(&a, d.clone(), None, &limits, false, &mut Vec::new())),
        overhead + 2
    );
    assert_eq!(
        charge(put(&b, d, None, &limits, false, &mut Vec::new())),
        overhead
    );
    let mut released = 0;
    a.lock().pop_queued(&mut released);
    assert_eq!(released, overhead, "b still holds the message");
    let (_, rest) = b.lock().take_queue();
    assert_eq!(rest, overhead + 2);
}

#[test]
fn stored_sessions_number_their_deliveries_and_track_what_is_done() {
    let s = Session::new(1, "c".into(), ProtocolVersion::V5);
    s.lock().durable = Some(Box::default());
    let limits = Limits::default();
    let mut recipients = Vec::new();
    let record = StoredMessage::restored(7, 0);
    let stored = Some(&record);
    put(
        &s,
        delivery(QoS::AtLeastOnce),
        stored,
        &limits,
        false,
        &mut recipients,
    );
    put(
        &s,
        delivery(QoS::ExactlyOnce),
        stored,
        &limits,
        false,
        &mut recipients,
    );
    s.lock().connected = true;
    put(
        &s,
        delivery(QoS::AtMostOnce),
        None,
        &limits,
        false,
        &mut recipients,
    );
    let seqs: Vec<u64> = recipients.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, vec![1, 2], "QoS 0 is never stored");
    assert_eq!(record.pins(), 2, "each stored delivery pins the record");
    let queued: Vec<Option<u64>> = s
        .lock()
        .queue
        .iter()
        .map(|d| d.stored.as_ref().map(|st| st.seq))
        .collect();
    assert_eq!(queued, vec![Some(1), Some(2), None]);
    let mut d = DurableSession {
        next_seq: 6,
        ..DurableSession::default()
    };
    d.done(3);
    d.done(2);
    assert_eq!((d.watermark, d.above.len()), (1, 2));
    d.done(1);
    assert_eq!((d.watermark, d.above.len()), (4, 0), "1, 2 and 3 are done");
    d.done(2);
    assert_eq!(d.watermark, 4, "done twice is done once");
}

#[test]
fn restored_packet_ids_are_avoided_before_any_wrap() {
    let s = Session::new(1, "c".into(), ProtocolVersion::V5);
    let mut st = s.lock();
    for id in [3, 1] {
        st.inflight.push_back(Inflight {
            packet_id: id,
            delivery: delivery(QoS::ExactlyOnce),
            stage: Stage::Sent,
        });
    }
    st.ids_may_collide = true;
    let ids: Vec<u16> = (0..3).map(|_| st.allocate_packet_id()).collect();
    assert_eq!(ids, vec![2, 4, 5]);
}

#[test]
fn packet_ids_skip_those_in_flight_and_wrap() {
    let s = Session::new(1, "c".into(), ProtocolVersion::V5);
    let mut st = s.lock();
    st.next_packet_id = 65_534;
    let a = st.allocate_packet_id();
    st.inflight.push_back(Inflight {
        packet_id: a,
        delivery: delivery(QoS::AtLeastOnce),
        stage: Stage::Sent,
    });
    st.inflight.push_back(Inflight {
        packet_id: 1,
        delivery: delivery(QoS::AtLeastOnce),
        stage: Stage::Sent,
    });
    assert_eq!(a, 65_535);
    assert_eq!(
        st.allocate_packet_id(),
        2,
        "0 is never used and 1 is in flight"
    );
    assert!(st.take_inflight(1, Stage::Released).is_none());
    assert!(st.take_inflight(1, Stage::Sent).is_some());
}
