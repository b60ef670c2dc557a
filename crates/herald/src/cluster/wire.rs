//! A message as it travels between nodes: the node that published it, the message's
//! identity in the cluster (`broker::message::Ident`), and the message as the store keeps it (`store::record::MessageRecord`: when it was received, for its expiry
//! to count the time in transit; the PUBLISH with its QoS, retain flag and v5 properties).

use mqtt_codec::Publish;

use crate::store::record::{DecodeError, MessageRecord};

/// The envelope's format (1: without the identity, still read).
const FORMAT: u8 = 2;

/// A message from another node.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    /// The node that published it.
    pub node: String,
    /// The message's identity (`Ident`), if it has one.
    pub ident: Option<(u64, u64)>,
    /// When that node received it (Unix milliseconds).
    pub received_ms: u64,
    /// The message.
    pub publish: Publish,
}

/// Why bytes from NATS are not an envelope.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// Too short, or another format.
    #[error("not a Herald message envelope (format {0:?})")]
    Format(Option<u8>),
    /// The node name is not UTF-8 or runs past the end.
    #[error("the node name does not read")]
    Node,
    /// The message does not read.
    #[error("the message does not read: {0}")]
    Message(#[from] DecodeError),
}

impl Envelope {
    /// The bytes sent; `None` for a message the store's format cannot hold (the codec's
    /// limits keep every message it accepted encodable).
    pub fn encode(
        node: &str,
        ident: Option<(u64, u64)>,
        received_ms: u64,
        publish: Publish,
    ) -> Option<Vec<u8>> {
        let record = MessageRecord {
            received_ms,
            origin: 0,
            recipients: Vec::new(),
            publish,
            cluster: None,
        };
        let body = record.encode().ok()?;
        let name = node.as_bytes();
        let len = u8::try_from(name.len()).ok()?;
        let (run, n) = ident.unwrap_or_default();
        let mut out = Vec::with_capacity(18 + name.len() + body.len());
        out.push(FORMAT);
        out.push(len);
        out.extend_from_slice(name);
        out.extend_from_slice(&run.to_be_bytes());
        out.extend_from_slice(&n.to_be_bytes());
        out.extend_from_slice(&body);
        Some(out)
    }

    /// Reads an envelope.
    pub fn decode(bytes: &[u8]) -> Result<Envelope, WireError> {
        let format = match bytes.first() {
            Some(&f @ (1 | FORMAT)) => f,
            other => return Err(WireError::Format(other.copied())),
        };
        let len = usize::from(*bytes.get(1).ok_or(WireError::Node)?);
        let name = bytes.get(2..2 + len).ok_or(WireError::Node)?;
        let node = std::str::from_utf8(name).map_err(|_| WireError::Node)?;
        let mut rest = &bytes[2 + len..];
        let mut ident = None;
        if format == FORMAT {
            let word = |b: &[u8]| u64::from_be_bytes(b.try_into().unwrap_or_default());
            let fixed = rest.get(..16).ok_or(WireError::Format(Some(format)))?;
            let (run, n) = (word(&fixed[..8]), word(&fixed[8..]));
            ident = (run, n).ne(&(0, 0)).then_some((run, n));
            rest = &rest[16..];
        }
        let record = MessageRecord::decode(rest)?;
        Ok(Envelope {
            node: node.to_string(),
            ident,
            received_ms: record.received_ms,
            publish: record.publish,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mqtt_codec::QoS;

    #[test]
    fn an_envelope_comes_back_whole() {
        let mut p = Publish::new("a/b", b"payload".to_vec());
        p.qos = QoS::ExactlyOnce;
        p.retain = true;
        p.packet_id = 1;
        p.properties.message_expiry_interval = Some(30);
        p.properties.content_type = Some("text/plain".into());
        p.properties.user_properties.push(("k".into(), "v".into()));
        let bytes = Envelope::encode("node-1", Some((7, 9)), 1_700_000_000_000, p.clone()).unwrap();
        let e = Envelope::decode(&bytes).unwrap();
        assert_eq!(e.node, "node-1");
        assert_eq!(e.ident, Some((7, 9)));
        assert_eq!(e.received_ms, 1_700_000_000_000);
        assert_eq!(e.publish, p);
        for bad in [
            &b""[..],
            b"\x03",
            b"\x01",
            b"\x01\x05ab",
            b"\x01\x01\xff",
            b"\x02\x01a12",
        ] {
            assert!(Envelope::decode(bad).is_err(), "{bad:?}");
        }
    }
}
