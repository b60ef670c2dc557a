//! Codec benchmarks: decode and encode of the packets a broker handles most (PUBLISH at QoS 0
//! and QoS 1 with MQTT 5.0 properties) and of CONNECT, and `Publish::encode_header` alone,
//! which a fan-out runs once per subscriber while the payload is shared.
//!
//! Every benchmark handles one packet per iteration and reports its throughput in elements
//! (packets). Run with `cargo bench -p mqtt-codec`.

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mqtt_codec::{
    Connect, LastWill, MAX_PACKET_SIZE, Packet, ProtocolVersion, Publish, QoS, decode,
};

/// A 64-byte payload.
fn payload() -> Bytes {
    Bytes::from((0..64u8).collect::<Vec<u8>>())
}

/// QoS 0, no properties: the bulk of telemetry traffic.
fn publish_qos0() -> Publish {
    Publish::new("sensors/building-1/floor-2/temperature", payload())
}

/// QoS 1 with the MQTT 5.0 properties of a request/response exchange, as a server forwards
/// it to a subscriber (with the subscription identifier that matched).
fn publish_qos1_props() -> Publish {
    let mut p = publish_qos0();
    p.qos = QoS::AtLeastOnce;
    p.packet_id = 4242;
    let props = &mut p.properties;
    props.message_expiry_interval = Some(3600);
    props.content_type = Some("application/json".into());
    props.response_topic = Some("replies/client-17".into());
    props.correlation_data = Some(Bytes::from_static(b"0123456789abcdef"));
    props.user_properties = vec![
        ("trace-id".into(), "4bf92f3577b34da6a3ce929d0e0e4736".into()),
        ("tenant".into(), "acme".into()),
    ];
    props.subscription_identifiers = vec![17];
    p
}

/// A CONNECT with a will, user name and password; in 5.0 with a few properties.
fn connect(version: ProtocolVersion) -> Connect {
    let mut c = Connect::new(version, "client-17-4bf92f35", 60);
    c.clean_start = false;
    c.username = Some("device-17".into());
    c.password = Some(Bytes::from_static(b"s3cr3t-t0ken-4bf92f3577b34da6"));
    let mut will = LastWill {
        topic: "clients/client-17/status".into(),
        payload: Bytes::from_static(b"offline"),
        qos: QoS::AtLeastOnce,
        retain: true,
        properties: Default::default(),
    };
    if version.is_v5() {
        c.properties.session_expiry_interval = Some(86_400);
        c.properties.receive_maximum = Some(100);
        c.properties.maximum_packet_size = Some(1 << 20);
        c.properties.topic_alias_maximum = Some(16);
        c.properties.user_properties = vec![("firmware".into(), "2.4.1".into())];
        will.properties.will_delay_interval = Some(30);
        will.properties.message_expiry_interval = Some(600);
        will.properties.content_type = Some("text/plain".into());
    }
    c.will = Some(will);
    c
}

/// The benchmarked packets: name, version, packet.
fn cases() -> Vec<(&'static str, ProtocolVersion, Packet)> {
    use ProtocolVersion::{V3_1_1, V5};
    vec![
        (
            "publish_qos0_64b/v3.1.1",
            V3_1_1,
            Packet::Publish(publish_qos0()),
        ),
        ("publish_qos0_64b/v5", V5, Packet::Publish(publish_qos0())),
        (
            "publish_qos1_props/v5",
            V5,
            Packet::Publish(publish_qos1_props()),
        ),
        (
            "connect/v3.1.1",
            V3_1_1,
            Packet::Connect(Box::new(connect(V3_1_1))),
        ),
        ("connect/v5", V5, Packet::Connect(Box::new(connect(V5)))),
    ]
}

fn bench_decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Elements(1));
    for (name, version, packet) in cases() {
        let wire = packet.to_bytes(version).expect("encodes");
        // Each iteration includes making the input buffer: `wire` is shared, so
        // `BytesMut::from` allocates and copies the packet's bytes (see the `buffer_copy`
        // group for that cost alone), then the decode (fixed header, validation, splitting
        // the frame off), then dropping the packet, which frees that buffer.
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut buf = BytesMut::from(black_box(wire.clone()));
                let packet = decode(&mut buf, version, MAX_PACKET_SIZE).expect("decodes");
                black_box(packet)
            })
        });
    }
    group.finish();

    // The per-iteration overhead of the decode benchmarks: allocating and copying the input.
    let mut group = c.benchmark_group("buffer_copy");
    group.throughput(Throughput::Elements(1));
    for (name, version, packet) in cases() {
        let wire = packet.to_bytes(version).expect("encodes");
        group.bench_function(name, |b| {
            b.iter(|| black_box(BytesMut::from(black_box(wire.clone()))))
        });
    }
    group.finish();
}

fn bench_encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode");
    group.throughput(Throughput::Elements(1));
    for (name, version, packet) in cases() {
        // One output buffer, cleared each iteration: its capacity is reused, so this measures
        // measuring the packet and writing it (payload copy included), not allocation.
        let mut buf = BytesMut::with_capacity(1024);
        group.bench_function(name, |b| {
            b.iter(|| {
                buf.clear();
                black_box(&packet)
                    .encode(version, &mut buf)
                    .expect("encodes");
                black_box(buf.len())
            })
        });
    }
    group.finish();
}

/// Fan-out: the header is built per subscriber, the payload `Bytes` is shared and not copied.
fn bench_encode_header(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode_header");
    group.throughput(Throughput::Elements(1));
    let publishes = [
        (
            "publish_qos0_64b/v3.1.1",
            ProtocolVersion::V3_1_1,
            publish_qos0(),
        ),
        ("publish_qos0_64b/v5", ProtocolVersion::V5, publish_qos0()),
        (
            "publish_qos1_props/v5",
            ProtocolVersion::V5,
            publish_qos1_props(),
        ),
    ];
    for (name, version, publish) in publishes {
        let mut buf = BytesMut::with_capacity(1024);
        group.bench_function(name, |b| {
            b.iter(|| {
                buf.clear();
                black_box(&publish)
                    .encode_header(version, &mut buf)
                    .expect("encodes");
                black_box(buf.len())
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_decode, bench_encode, bench_encode_header);
criterion_main!(benches);
