//! Every record round-trips, and damaged values are refused with the reason.

use super::*;
use bytes::Bytes;

fn publish() -> Publish {
    let mut p = Publish::new("a/b", Bytes::from_static(b"payload"));
    p.qos = QoS::ExactlyOnce;
    p.retain = true;
    p.properties.message_expiry_interval = Some(30);
    p.properties.user_properties = vec![("k".into(), "v".into())];
    p.properties.correlation_data = Some(Bytes::from_static(b"c"));
    p
}

/// Every cut of a record is refused, never read as something shorter.
fn cuts_refused<T: std::fmt::Debug>(v: &[u8], decode: impl Fn(&[u8]) -> DecodeResult<T>) {
    for n in 0..v.len() {
        assert!(decode(&v[..n]).is_err(), "cut at {n} of {}", v.len());
    }
    let mut longer = v.to_vec();
    longer.push(0);
    assert!(decode(&longer).is_err(), "a byte too many");
}

#[test]
fn sessions_round_trip() {
    let s = SessionRecord {
        tenant: "".into(),
        client_id: "client-1".into(),
        protocol: 5,
        expiry: 3600,
        offline_since_ms: 1_700_000_000_000,
        subscriptions: vec![
            StoredSubscription {
                filter: "a/+".into(),
                options: SubscriptionOptions {
                    qos: QoS::AtLeastOnce,
                    no_local: true,
                    retain_as_published: true,
                    retain_handling: RetainHandling::Never,
                },
                id: Some(7),
            },
            StoredSubscription {
                filter: "$share/g/b/#".into(),
                options: SubscriptionOptions::qos(QoS::ExactlyOnce),
                id: None,
            },
        ],
    };
    let v = s.encode();
    assert_eq!(SessionRecord::decode(&v).unwrap(), s);
    cuts_refused(&v, SessionRecord::decode);
}

#[test]
fn messages_round_trip() {
    let m = MessageRecord {
        received_ms: 5,
        origin: 9,
        recipients: vec![
            Recipient {
                session: 1,
                seq: 2,
                qos: QoS::AtLeastOnce,
                retain: false,
                subscription_ids: vec![],
            },
            Recipient {
                session: 3,
                seq: 4,
                qos: QoS::ExactlyOnce,
                retain: true,
                subscription_ids: vec![1, 2],
            },
        ],
        publish: publish(),
        cluster: None,
    };
    let v = m.encode().unwrap();
    assert_eq!(v[0], 1, "a node alone writes the first format");
    let back = MessageRecord::decode(&v).unwrap();
    assert_eq!(back.cluster, None);
    assert_eq!(back.recipients, m.recipients);
    assert_eq!(back.publish.topic, m.publish.topic);
    assert_eq!(back.publish.payload, m.publish.payload);
    assert_eq!(back.publish.properties, m.publish.properties);
    assert_eq!(
        (back.publish.qos, back.publish.retain),
        (QoS::ExactlyOnce, true)
    );
    // The PUBLISH is the rest of the value: a cut is a cut packet.
    for n in 0..v.len() {
        assert!(MessageRecord::decode(&v[..n]).is_err(), "cut at {n}");
    }
    // A clustered node's record carries the message's identity and stream position.
    let clustered = MessageRecord {
        cluster: Some((7, 8, 1 << 63 | 9)),
        ..m
    };
    let v = clustered.encode().unwrap();
    let back = MessageRecord::decode(&v).unwrap();
    assert_eq!(back.cluster, Some((7, 8, 1 << 63 | 9)));
    assert_eq!(back.recipients, clustered.recipients);
    assert_eq!(back.publish.payload, clustered.publish.payload);
    for n in 0..v.len() {
        assert!(MessageRecord::decode(&v[..n]).is_err(), "cut at {n}");
    }
}

#[test]
fn small_records_round_trip_and_refuse_damage() {
    let a = AckRecord {
        watermark: 10,
        above: vec![12, 15],
    };
    let v = a.encode();
    assert_eq!(AckRecord::decode(&v).unwrap(), a);
    assert!(a.done(9) && a.done(12) && !a.done(11) && !a.done(10));
    cuts_refused(&v, AckRecord::decode);
    let s = StageRecord {
        packet_id: 7,
        released: true,
    };
    let v = s.encode();
    assert_eq!(StageRecord::decode(&v).unwrap(), s);
    cuts_refused(&v, StageRecord::decode);
    let v = encode_u64(42);
    assert_eq!(decode_u64(&v).unwrap(), 42);
    cuts_refused(&v, decode_u64);
    let w = WillRecord {
        tenant: "t".into(),
        delay: 5,
        publish: publish(),
    };
    let back = WillRecord::decode(&w.encode().unwrap()).unwrap();
    assert_eq!((back.tenant.as_str(), back.delay), ("t", 5));
    let r = RetainedRecord {
        received_ms: 1,
        publish: publish(),
    };
    assert_eq!(
        RetainedRecord::decode(&r.encode().unwrap())
            .unwrap()
            .received_ms,
        1
    );
    assert!(
        SessionRecord::decode(&[9, 0])
            .unwrap_err()
            .to_string()
            .contains("format")
    );
    // A count that the value cannot hold is refused before anything is allocated.
    let mut huge = vec![FORMAT];
    huge.extend_from_slice(&1u64.to_be_bytes());
    huge.extend_from_slice(&u32::MAX.to_be_bytes());
    assert!(
        AckRecord::decode(&huge)
            .unwrap_err()
            .to_string()
            .contains("does not fit")
    );
}

#[test]
fn a_message_that_does_not_encode_says_why() {
    let mut p = publish();
    p.topic = "t".repeat(70_000).into();
    let e = RetainedRecord {
        received_ms: 1,
        publish: p,
    }
    .encode()
    .unwrap_err();
    assert!(
        e.to_string()
            .starts_with("message does not encode: topic name is 70000 bytes"),
        "{e}"
    );
}

#[test]
fn keys_round_trip_and_sort_numerically() {
    assert_eq!(decode_stage_key(&stage_key(3, 9)).unwrap(), (3, 9));
    assert_eq!(decode_inbound_key(&inbound_key(3, 9)).unwrap(), (3, 9));
    assert_eq!(
        decode_retained_key(&retained_key("t", "a/b")).unwrap(),
        ("t".to_string(), "a/b".to_string())
    );
    assert!(stage_key(1, 255) < stage_key(1, 256));
    assert!(decode_session_key(&[1, 2]).is_err());
}
