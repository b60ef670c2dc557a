//! The checks every fuzz target runs, shared with `tests/fuzz_corpus.rs` (which includes this
//! file with `#[path]`), so that the seed corpus and the crash regressions replay through
//! exactly the same logic in the ordinary test suite.
//!
//! Input layout: the first byte selects the maximum packet size, the rest is a stream of
//! packets as a peer would send them on one connection.
//!
//! For each input, [`decode_stream`] checks that:
//!
//! - `decode` never panics, and either takes exactly one whole frame (the length
//!   `check_frame` announced, never more than the maximum packet size), returns `Ok(None)`
//!   having consumed nothing, or fails;
//! - every packet it returns survives a round trip: encoded again with the same protocol
//!   version (CONNECT with its own, which `Packet::encode` does by itself) it decodes to an
//!   equal packet, taking the whole encoding and nothing more, and the canonical encoding is
//!   never longer than the bytes that were accepted;
//! - for PUBLISH, `encode_header` followed by the payload is the whole packet and
//!   `encoded_len` is its length.

use bytes::BytesMut;
use mqtt_codec::{DecodeError, MAX_PACKET_SIZE, Packet, ProtocolVersion, check_frame, decode};

/// The maximum packet size an input asks for with its first byte: below 0x80 the largest MQTT
/// allows, otherwise a small limit (0, 4, 8, ... 508 bytes) so that packets are refused for
/// their size, right at and around the boundary.
pub fn max_packet_size(selector: u8) -> usize {
    if selector < 0x80 {
        MAX_PACKET_SIZE
    } else {
        usize::from(selector & 0x7F) * 4
    }
}

/// Decodes `data` (a selector byte, then a packet stream) as `version` until the stream runs
/// out or is rejected, checking every packet as described in the module documentation.
/// Returns the packets decoded.
pub fn decode_stream(version: ProtocolVersion, data: &[u8]) -> Vec<Packet> {
    let Some((&selector, stream)) = data.split_first() else {
        return Vec::new();
    };
    let max = max_packet_size(selector);
    let mut buf = BytesMut::from(stream);
    let mut consumed = 0;
    let mut packets = Vec::new();
    loop {
        let before = buf.len();
        let frame = check_frame(&buf, version, max);
        match decode(&mut buf, version, max) {
            Ok(Some(packet)) => {
                let Ok(Some(header)) = frame else {
                    panic!("decode returned {packet:?} but check_frame said {frame:?}");
                };
                let taken = before - buf.len();
                assert_eq!(taken, header.frame_len(), "decode took a different frame");
                assert!(
                    taken <= max,
                    "decoded a {taken}-byte packet over the {max} limit"
                );
                assert_eq!(packet.packet_type(), header.packet_type);
                round_trip(&packet, version, taken);
                consumed += taken;
                packets.push(packet);
            }
            Ok(None) => {
                assert_eq!(buf.len(), before, "Ok(None) consumed input");
                assert_eq!(&buf[..], &stream[consumed..], "Ok(None) changed the input");
                if let Ok(Some(header)) = frame {
                    assert!(header.frame_len() > before, "complete frame left undecoded");
                }
                break;
            }
            Err(err) => {
                if let DecodeError::PacketTooLarge { size, max: limit } = err {
                    assert_eq!(limit, max);
                    assert!(
                        size > max,
                        "{size}-byte packet refused under the {max} limit"
                    );
                }
                break;
            }
        }
    }
    packets
}

/// Encodes `packet` for `version`, decodes it again and checks the result is the same packet.
/// `accepted_len` is the length of the frame it was decoded from.
pub fn round_trip(packet: &Packet, version: ProtocolVersion, accepted_len: usize) {
    let mut wire = BytesMut::new();
    if let Err(err) = packet.encode(version, &mut wire) {
        panic!("decoded packet does not encode again ({err}): {packet:?}");
    }
    let encoded = wire.clone().freeze();
    assert!(
        encoded.len() <= accepted_len,
        "canonical encoding ({} bytes) is longer than the accepted frame ({accepted_len}): \
         {packet:?}",
        encoded.len()
    );
    match decode(&mut wire, version, MAX_PACKET_SIZE) {
        Ok(Some(again)) => assert_eq!(&again, packet, "round trip changed the packet"),
        other => panic!("re-encoded {packet:?} as {encoded:?}, which decodes to {other:?}"),
    }
    assert!(
        wire.is_empty(),
        "re-encoding has trailing bytes: {encoded:?}"
    );
    if let Packet::Publish(publish) = packet {
        let mut header = BytesMut::new();
        if let Err(err) = publish.encode_header(version, &mut header) {
            panic!("encode_header failed ({err}) where encode succeeded: {publish:?}");
        }
        header.extend_from_slice(&publish.payload);
        assert_eq!(&header[..], &encoded[..], "header + payload != packet");
        assert_eq!(publish.encoded_len(version).ok(), Some(encoded.len()));
    }
}
