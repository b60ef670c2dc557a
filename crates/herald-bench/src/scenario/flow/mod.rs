//! Flow control: what a broker does when more arrives than a subscriber takes.
//!
//! - [`flood`] (`fanin-flood`): many QoS 1 publishers into one subscriber. Every message
//!   names its publisher and sequence number, so the report says exactly which acknowledged
//!   messages never arrived (a broker must refuse, 0x97, or slow publishers down; never
//!   acknowledge and then drop).
//! - [`stalled`]: a fan-out to fast subscribers, once alone and once next to one subscriber
//!   that stops reading its socket: what one stuck reader costs everyone else, and whether
//!   and when the broker lets it go.

pub mod flood;
pub mod stalled;

use serde::{Deserialize, Serialize};

/// Highest sequence number a [`SeqSet`] takes: 2^28 messages from one publisher (a 32 MiB
/// set), far past what a bounded run sends, so that a corrupt payload cannot make one huge.
pub const MAX_SEQ: u32 = 1 << 28;

/// A set of sequence numbers as a bitset, sent between processes as its 64-bit words: one
/// bit per message a publisher sent, however the set is fragmented.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SeqSet(Vec<u64>);

impl SeqSet {
    /// Adds `seq`; `true` if it was not there yet. Numbers from [`MAX_SEQ`] up are refused
    /// (`false`): check them before.
    pub fn insert(&mut self, seq: u32) -> bool {
        if seq >= MAX_SEQ {
            return false;
        }
        let (word, bit) = ((seq / 64) as usize, seq % 64);
        if word >= self.0.len() {
            self.0.resize(word + 1, 0);
        }
        let mask = 1u64 << bit;
        let fresh = self.0[word] & mask == 0;
        self.0[word] |= mask;
        fresh
    }

    /// Whether `seq` is in the set.
    pub fn contains(&self, seq: u32) -> bool {
        let (word, bit) = ((seq / 64) as usize, seq % 64);
        self.0.get(word).is_some_and(|w| w & (1 << bit) != 0)
    }

    /// How many numbers are in the set.
    pub fn len(&self) -> u64 {
        self.0.iter().map(|w| u64::from(w.count_ones())).sum()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|w| *w == 0)
    }

    /// How many numbers of this set are not in `other`.
    pub fn count_not_in(&self, other: &SeqSet) -> u64 {
        self.0
            .iter()
            .enumerate()
            .map(|(i, w)| u64::from((w & !other.0.get(i).copied().unwrap_or(0)).count_ones()))
            .sum()
    }
}

/// Bytes at the start of a payload that identify a message: send time (Unix nanoseconds),
/// publisher index and sequence number, each big-endian.
pub const STAMP_LEN: usize = 16;

/// What a payload's first [`STAMP_LEN`] bytes say: (send time ns, publisher, sequence).
pub fn read_stamp(payload: &[u8]) -> Option<(u64, u32, u32)> {
    let stamp = payload.get(..STAMP_LEN)?;
    let sent = u64::from_be_bytes(stamp[..8].try_into().ok()?);
    let publisher = u32::from_be_bytes(stamp[8..12].try_into().ok()?);
    let seq = u32::from_be_bytes(stamp[12..16].try_into().ok()?);
    Some((sent, publisher, seq))
}

/// Appends a stamp: now as the send time, `publisher` and `seq`.
pub fn write_stamp(buf: &mut bytes::BytesMut, publisher: u32, seq: u32) {
    buf.extend_from_slice(&crate::client::unix_nanos().to_be_bytes());
    buf.extend_from_slice(&publisher.to_be_bytes());
    buf.extend_from_slice(&seq.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seq_sets_count_what_one_has_and_the_other_lacks() {
        let mut acked = SeqSet::default();
        let mut received = SeqSet::default();
        for seq in 0..200 {
            acked.insert(seq);
        }
        for seq in (0..200).step_by(3).chain([500]) {
            assert!(received.insert(seq));
        }
        assert!(!received.insert(3), "a second copy is not new");
        assert_eq!(acked.len(), 200);
        assert_eq!(received.len(), 68);
        assert_eq!(acked.count_not_in(&received), 200 - 67);
        assert_eq!(received.count_not_in(&acked), 1);
        assert!(received.contains(500) && !received.contains(499));
        assert!(!received.insert(MAX_SEQ));
        let back: SeqSet =
            serde_json::from_str(&serde_json::to_string(&received).unwrap()).unwrap();
        assert_eq!(back, received);
        assert!(SeqSet::default().is_empty());
    }

    #[test]
    fn stamps_read_back() {
        let mut buf = bytes::BytesMut::new();
        write_stamp(&mut buf, 1999, 123_456);
        buf.extend_from_slice(&[0; 48]);
        let (sent, publisher, seq) = read_stamp(&buf).unwrap();
        assert!(sent > 0);
        assert_eq!((publisher, seq), (1999, 123_456));
        assert!(read_stamp(&buf[..15]).is_none());
    }
}
