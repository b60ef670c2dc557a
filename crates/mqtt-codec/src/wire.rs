//! The data representations of §1.5: integers, variable byte integers, UTF-8 strings and
//! binary data, read from a checked cursor and written to a [`Sink`].
//!
//! Encoding is written once, against [`Sink`]: running the same code against a [`Counter`]
//! gives the exact length, so lengths and bytes can never disagree.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use bytestring::ByteString;

use crate::{DecodeError, EncodeError, PacketType};

/// Largest value a variable byte integer holds (four bytes, §1.5.5).
pub const MAX_VARINT: u32 = 268_435_455;

/// Decodes a variable byte integer (§1.5.5) from the front of `bytes`.
///
/// `Ok(None)` means the integer is cut off and more bytes are needed; otherwise the value and
/// the number of bytes it took. Over four bytes, or not minimally encoded, is an error.
pub fn read_varint(bytes: &[u8]) -> Result<Option<(u32, usize)>, DecodeError> {
    let mut value: u32 = 0;
    for (i, &byte) in bytes.iter().enumerate().take(4) {
        value |= u32::from(byte & 0x7F) << (7 * i);
        if byte & 0x80 == 0 {
            if byte == 0 && i > 0 {
                return Err(DecodeError::VarIntNotMinimal);
            }
            return Ok(Some((value, i + 1)));
        }
    }
    if bytes.len() >= 4 {
        Err(DecodeError::VarIntTooLong)
    } else {
        Ok(None)
    }
}

/// Number of bytes `value` takes as a variable byte integer.
pub(crate) fn varint_len(value: usize) -> usize {
    match value {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// A bounds-checked cursor over one packet's body. Slices it hands out share the packet's
/// buffer (no copy).
pub(crate) struct Reader {
    buf: Bytes,
    packet: PacketType,
}

impl Reader {
    pub(crate) fn new(buf: Bytes, packet: PacketType) -> Self {
        Reader { buf, packet }
    }

    pub(crate) fn packet(&self) -> PacketType {
        self.packet
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len()
    }

    fn need(&self, n: usize, field: &'static str) -> Result<(), DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::UnexpectedEnd {
                packet: self.packet,
                field,
            });
        }
        Ok(())
    }

    pub(crate) fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        self.need(1, field)?;
        Ok(self.buf.get_u8())
    }

    pub(crate) fn u16(&mut self, field: &'static str) -> Result<u16, DecodeError> {
        self.need(2, field)?;
        Ok(self.buf.get_u16())
    }

    pub(crate) fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        self.need(4, field)?;
        Ok(self.buf.get_u32())
    }

    pub(crate) fn varint(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        match read_varint(&self.buf)? {
            Some((value, len)) => {
                self.buf.advance(len);
                Ok(value)
            }
            None => Err(DecodeError::UnexpectedEnd {
                packet: self.packet,
                field,
            }),
        }
    }

    /// The next `n` bytes, as a slice of the packet buffer.
    pub(crate) fn take(&mut self, n: usize, field: &'static str) -> Result<Bytes, DecodeError> {
        self.need(n, field)?;
        Ok(self.buf.split_to(n))
    }

    /// Everything left.
    pub(crate) fn rest(&mut self) -> Bytes {
        std::mem::take(&mut self.buf)
    }

    /// Binary data: a two-byte length, then that many bytes.
    pub(crate) fn binary(&mut self, field: &'static str) -> Result<Bytes, DecodeError> {
        let len = self.u16(field)?;
        self.take(usize::from(len), field)
    }

    /// A UTF-8 encoded string, validated per §1.5.4.
    pub(crate) fn string(&mut self, field: &'static str) -> Result<ByteString, DecodeError> {
        let raw = self.binary(field)?;
        to_string(raw, field)
    }

    /// Ends decoding: bytes left over mean the remaining length lied.
    pub(crate) fn finish(self) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes {
                packet: self.packet,
                extra: self.buf.len(),
            })
        }
    }
}

/// Validates `raw` as an MQTT UTF-8 string: well-formed (which excludes surrogates and
/// overlong forms) and free of U+0000.
pub(crate) fn to_string(raw: Bytes, field: &'static str) -> Result<ByteString, DecodeError> {
    if raw.contains(&0) {
        return Err(DecodeError::NullCharacter { field });
    }
    ByteString::try_from(raw).map_err(|_| DecodeError::InvalidUtf8 { field })
}

/// Where encoded bytes go: a buffer, or a [`Counter`] that only measures.
pub(crate) trait Sink {
    fn put_u8(&mut self, v: u8);
    fn put_slice(&mut self, s: &[u8]);
    fn put_u16(&mut self, v: u16) {
        self.put_slice(&v.to_be_bytes());
    }
    fn put_u32(&mut self, v: u32) {
        self.put_slice(&v.to_be_bytes());
    }
}

impl Sink for BytesMut {
    fn put_u8(&mut self, v: u8) {
        BufMut::put_u8(self, v);
    }
    fn put_slice(&mut self, s: &[u8]) {
        self.extend_from_slice(s);
    }
}

/// A [`Sink`] that counts bytes and stores nothing.
#[derive(Default)]
pub(crate) struct Counter(pub(crate) usize);

impl Sink for Counter {
    fn put_u8(&mut self, _: u8) {
        self.0 += 1;
    }
    fn put_slice(&mut self, s: &[u8]) {
        self.0 += s.len();
    }
    fn put_u16(&mut self, _: u16) {
        self.0 += 2;
    }
    fn put_u32(&mut self, _: u32) {
        self.0 += 4;
    }
}

pub(crate) fn put_varint<S: Sink + ?Sized>(
    s: &mut S,
    value: usize,
    field: &'static str,
) -> Result<(), EncodeError> {
    if value > MAX_VARINT as usize {
        return Err(EncodeError::ValueOutOfRange {
            field,
            value: value as u64,
        });
    }
    let mut v = value;
    loop {
        let mut byte = (v & 0x7F) as u8;
        v >>= 7;
        if v > 0 {
            byte |= 0x80;
        }
        s.put_u8(byte);
        if v == 0 {
            return Ok(());
        }
    }
}

pub(crate) fn put_binary<S: Sink + ?Sized>(
    s: &mut S,
    data: &[u8],
    field: &'static str,
) -> Result<(), EncodeError> {
    let len = u16::try_from(data.len()).map_err(|_| EncodeError::FieldTooLong {
        field,
        len: data.len(),
    })?;
    s.put_u16(len);
    s.put_slice(data);
    Ok(())
}

pub(crate) fn put_string<S: Sink + ?Sized>(
    s: &mut S,
    value: &str,
    field: &'static str,
) -> Result<(), EncodeError> {
    put_binary(s, value.as_bytes(), field)
}

/// Length of `f`'s output, found by running it against a [`Counter`].
pub(crate) fn measure(
    f: impl FnOnce(&mut Counter) -> Result<(), EncodeError>,
) -> Result<usize, EncodeError> {
    let mut counter = Counter::default();
    f(&mut counter)?;
    Ok(counter.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_boundaries() {
        for (value, bytes) in [
            (0usize, &[0x00][..]),
            (127, &[0x7F]),
            (128, &[0x80, 0x01]),
            (16_383, &[0xFF, 0x7F]),
            (16_384, &[0x80, 0x80, 0x01]),
            (2_097_151, &[0xFF, 0xFF, 0x7F]),
            (2_097_152, &[0x80, 0x80, 0x80, 0x01]),
            (268_435_455, &[0xFF, 0xFF, 0xFF, 0x7F]),
        ] {
            let mut out = BytesMut::new();
            put_varint(&mut out, value, "v").unwrap();
            assert_eq!(&out[..], bytes, "encoding {value}");
            assert_eq!(varint_len(value), bytes.len());
            assert_eq!(
                read_varint(bytes).unwrap(),
                Some((value as u32, bytes.len()))
            );
        }
        assert!(put_varint(&mut BytesMut::new(), 268_435_456, "v").is_err());
    }

    #[test]
    fn varint_incomplete_too_long_and_non_minimal() {
        assert_eq!(read_varint(&[]).unwrap(), None);
        assert_eq!(read_varint(&[0x80, 0x80]).unwrap(), None);
        assert_eq!(
            read_varint(&[0x80, 0x80, 0x80, 0x80]),
            Err(DecodeError::VarIntTooLong)
        );
        assert_eq!(
            read_varint(&[0x80, 0x00]),
            Err(DecodeError::VarIntNotMinimal)
        );
        assert_eq!(
            read_varint(&[0xFF, 0x80, 0x00]),
            Err(DecodeError::VarIntNotMinimal)
        );
    }

    #[test]
    fn strings_reject_nul_and_bad_utf8() {
        let ok = to_string(Bytes::from_static("héllo/✓".as_bytes()), "s").unwrap();
        assert_eq!(&*ok, "héllo/✓");
        assert_eq!(
            to_string(Bytes::from_static(b"a\0b"), "s"),
            Err(DecodeError::NullCharacter { field: "s" })
        );
        // U+D800 encoded as CESU-style bytes: a surrogate, not UTF-8.
        assert_eq!(
            to_string(Bytes::from_static(&[0xED, 0xA0, 0x80]), "s"),
            Err(DecodeError::InvalidUtf8 { field: "s" })
        );
        // Overlong encoding of '/'.
        assert!(to_string(Bytes::from_static(&[0xC0, 0xAF]), "s").is_err());
    }

    #[test]
    fn reader_reports_the_cut_field() {
        let mut r = Reader::new(Bytes::from_static(&[0x00, 0x05, b'a']), PacketType::Publish);
        assert_eq!(
            r.string("topic name"),
            Err(DecodeError::UnexpectedEnd {
                packet: PacketType::Publish,
                field: "topic name"
            })
        );
    }
}
