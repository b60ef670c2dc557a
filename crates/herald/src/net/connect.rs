//! Reading the first packet (CONNECT) off the socket, and answering one that did not
//! decode. Checking CONNECT and attaching the session is the session core's
//! (`broker::session::connect`).

use std::time::Duration;

use super::transport::Transport;
use bytes::BytesMut;
use mqtt_codec::{ConnAck, DecodeError, Packet, ProtocolVersion, ReasonCode, decode};

use crate::broker::stats::CloseReason;

/// Why no first packet was read.
pub(crate) enum FirstPacketError {
    /// The socket closed or failed.
    Closed(CloseReason),
    /// The bytes did not decode; the protocol level they named, if they started a CONNECT.
    Decode(DecodeError, Option<u8>),
}

/// Reads until the first whole packet has arrived; returns it and its size.
pub(crate) async fn first_packet(
    io: &mut Transport,
    rbuf: &mut BytesMut,
    max_packet_size: usize,
) -> Result<(Packet, usize), FirstPacketError> {
    loop {
        let before = rbuf.len();
        // Read before decoding: a packet that fails to decode is no longer in the buffer.
        let level = connect_level(rbuf);
        // The version is unknown until CONNECT says it; CONNECT decodes with its own.
        match decode(rbuf, ProtocolVersion::V5, max_packet_size) {
            Ok(Some(packet)) => return Ok((packet, before - rbuf.len())),
            Ok(None) => {}
            Err(e) => return Err(FirstPacketError::Decode(e, level)),
        }
        match io.read_some(rbuf).await {
            Ok(0) => return Err(FirstPacketError::Closed(CloseReason::PeerClosed)),
            Ok(_) => {}
            Err(e) => return Err(FirstPacketError::Closed(read_error(&e))),
        }
    }
}

/// Why a failed read ends a connection: bytes a layer refused (a WebSocket frame breaking
/// the protocol, a TLS record that does not decrypt) are a protocol error, the rest is I/O.
pub(crate) fn read_error(e: &std::io::Error) -> CloseReason {
    if e.kind() == std::io::ErrorKind::InvalidData {
        CloseReason::ProtocolError
    } else {
        CloseReason::IoError
    }
}

/// Answers a CONNECT that failed to decode: a client asking for a protocol level Herald does
/// not speak gets CONNACK 0x01 (3.1.1 form) before the close [MQTT-3.1.2-2]; a CONNECT that
/// says it is MQTT 5 gets a v5 CONNACK with the reason (0x81 Malformed packet, 0x82 Protocol
/// error, 0x95 Packet too large, ...), as MQTT 5.0 §3.2.2.2 allows. `level` is the level
/// the CONNECT's first bytes named. Returns whether a CONNACK was sent.
pub(crate) async fn refuse_undecodable(
    io: &mut Transport,
    level: Option<u8>,
    error: &DecodeError,
) -> bool {
    let (code, version) = match error {
        DecodeError::UnsupportedProtocol { .. } => (
            ReasonCode::UnsupportedProtocolVersion,
            ProtocolVersion::V3_1_1,
        ),
        _ if level == Some(5) => (error.reason_code(), ProtocolVersion::V5),
        _ => return false,
    };
    let ack = Packet::ConnAck(Box::new(ConnAck::new(code, false)));
    match ack.to_bytes(version) {
        Ok(bytes) => {
            let sent = tokio::time::timeout(Duration::from_secs(1), io.write_all(&bytes)).await;
            matches!(sent, Ok(Ok(())))
        }
        Err(_) => false,
    }
}

/// The protocol level a CONNECT's first bytes name (`None` if they are not a CONNECT's
/// start: packet type 1, then the protocol name "MQTT").
fn connect_level(bytes: &[u8]) -> Option<u8> {
    if bytes.first()? >> 4 != 1 {
        return None;
    }
    // The remaining length: one to four bytes, the last without its high bit.
    let length_bytes = bytes[1..].iter().take(4).position(|b| b & 0x80 == 0)? + 1;
    let header = &bytes.get(1 + length_bytes..)?;
    match header.get(..7)? {
        [0, 4, b'M', b'Q', b'T', b'T', level] => Some(*level),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_level_of_a_connect_is_read_from_its_first_bytes() {
        let v5 = [0x10, 0x10, 0, 4, b'M', b'Q', b'T', b'T', 5, 0xff];
        assert_eq!(super::connect_level(&v5), Some(5));
        let long = [0x10, 0x80, 0x01, 0, 4, b'M', b'Q', b'T', b'T', 4];
        assert_eq!(super::connect_level(&long), Some(4));
        assert_eq!(
            super::connect_level(&[0x30, 2, 0, 4]),
            None,
            "not a CONNECT"
        );
        assert_eq!(
            super::connect_level(&[0x10, 9, 0, 6, b'M', b'Q', b'I', b's', b'd', b'p', 3]),
            None
        );
    }
}
