//! Primitive encodings shared by every body (spec §0.4): checked little-endian
//! reads that turn short input into a typed error, and the matching writes.
//!
//! Decoding rules, applied the same way for every body:
//! - input that ends before a required field is complete: `InvalidCommand` (3);
//! - a zero-length WireName or bytes that are not UTF-8: `InvalidFormat` (4).
//!
//! [`Reader`] is meant to be the one checked byte reader, for formats beyond
//! the wire bodies too (the server's log records): its primitives
//! ([`Reader::take`], the integers, [`Reader::array`], [`Reader::str`]) fail
//! only with those two codes, so a reader of another format can wrap it and
//! map them to its own faults: `InvalidCommand` means "too short",
//! `InvalidFormat` means "not UTF-8".

use bytes::{BufMut, BytesMut};

use crate::ErrorCode;

/// A cursor over received bytes (a body, a log record). Every read is checked and
/// little-endian. A read refused for short input consumes nothing; one refused
/// for bad UTF-8 has consumed its bytes. Decoders stop at the first error.
#[derive(Debug)]
pub struct Reader<'a> {
    bytes: &'a [u8],
    offset: usize,
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes, offset: 0 }
    }

    /// Bytes consumed so far.
    pub fn consumed(&self) -> usize {
        self.offset
    }

    pub fn remaining(&self) -> usize {
        self.bytes.len() - self.offset
    }

    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    pub fn take(&mut self, len: usize) -> Result<&'a [u8], ErrorCode> {
        let end = self
            .offset
            .checked_add(len)
            .filter(|&end| end <= self.bytes.len())
            .ok_or(ErrorCode::InvalidCommand)?;
        let slice = &self.bytes[self.offset..end];
        self.offset = end;
        Ok(slice)
    }

    /// The next `N` bytes as an array (a hash, an IPv4 or IPv6 address).
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], ErrorCode> {
        // `take` returned exactly N bytes, so the conversion cannot fail; it is
        // mapped rather than unwrapped to keep every path panic-free.
        self.take(N)?.try_into().map_err(|_| ErrorCode::InvalidCommand)
    }

    /// `len` bytes of UTF-8, borrowed from the input: `InvalidCommand` if
    /// fewer are left, `InvalidFormat` if they are not UTF-8.
    pub fn str(&mut self, len: usize) -> Result<&'a str, ErrorCode> {
        std::str::from_utf8(self.take(len)?).map_err(|_| ErrorCode::InvalidFormat)
    }

    pub fn u8(&mut self) -> Result<u8, ErrorCode> {
        let [byte] = self.array()?;
        Ok(byte)
    }

    pub fn u16(&mut self) -> Result<u16, ErrorCode> {
        self.array().map(u16::from_le_bytes)
    }

    pub fn u32(&mut self) -> Result<u32, ErrorCode> {
        self.array().map(u32::from_le_bytes)
    }

    pub fn u64(&mut self) -> Result<u64, ErrorCode> {
        self.array().map(u64::from_le_bytes)
    }

    /// `[len u8][UTF-8]` with `len` ≥ 1 (a WireName).
    pub fn wire_name(&mut self) -> Result<String, ErrorCode> {
        self.wire_name_str().map(str::to_owned)
    }

    /// [`Reader::wire_name`], borrowed from the input.
    pub fn wire_name_str(&mut self) -> Result<&'a str, ErrorCode> {
        let len = self.u8()?;
        if len == 0 {
            return Err(ErrorCode::InvalidFormat);
        }
        self.str(usize::from(len))
    }

    /// `[len u8][UTF-8]` where `len` may be 0 (passwords, usernames in LoginUser).
    pub fn short_string(&mut self) -> Result<String, ErrorCode> {
        self.short_str().map(str::to_owned)
    }

    /// [`Reader::short_string`], borrowed from the input.
    pub fn short_str(&mut self) -> Result<&'a str, ErrorCode> {
        let len = self.u8()?;
        self.str(usize::from(len))
    }

    /// `[len u32][UTF-8]` (version, context, address).
    pub fn long_string(&mut self) -> Result<String, ErrorCode> {
        let len = self.u32()?;
        let len = usize::try_from(len).map_err(|_| ErrorCode::InvalidCommand)?;
        self.str(len).map(str::to_owned)
    }
}

/// Writes `[len u8][bytes]`. The caller guarantees `value.len() ≤ 255`; a
/// longer value is a bug in Latchkey (names and tokens are bounded before they
/// get here), so it is asserted rather than silently truncated.
pub fn put_short(dst: &mut BytesMut, value: &str) {
    let len = u8::try_from(value.len()).expect("short string longer than 255 bytes");
    dst.put_u8(len);
    dst.put_slice(value.as_bytes());
}

/// Writes `[len u32][bytes]`.
pub fn put_long(dst: &mut BytesMut, value: &str) {
    let len = u32::try_from(value.len()).expect("long string longer than u32::MAX bytes");
    dst.put_u32_le(len);
    dst.put_slice(value.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_are_little_endian_and_advance() {
        let bytes = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];
        let mut reader = Reader::new(&bytes);
        assert_eq!(reader.u8(), Ok(1));
        assert_eq!(reader.u16(), Ok(0x0302));
        assert_eq!(reader.u32(), Ok(0x0706_0504));
        assert_eq!(reader.u64(), Ok(0x0f0e_0d0c_0b0a_0908));
        assert_eq!((reader.consumed(), reader.remaining()), (15, 0));
        assert!(reader.is_empty());
    }

    #[test]
    fn array_reads_exactly_n_bytes() {
        let bytes: Vec<u8> = (0..40).collect();
        let mut reader = Reader::new(&bytes);
        let hash: [u8; 32] = reader.array().unwrap();
        assert_eq!(&hash[..], &bytes[..32]);
        assert_eq!(reader.array::<4>(), Ok([32, 33, 34, 35]));
        assert_eq!(reader.array::<0>(), Ok([]));
        assert_eq!(reader.consumed(), 36);
    }

    #[test]
    fn short_input_is_invalid_command_and_consumes_nothing() {
        let bytes = [0xaa; 7];
        let mut reader = Reader::new(&bytes);
        reader.take(3).unwrap();
        assert_eq!(reader.array::<5>(), Err(ErrorCode::InvalidCommand));
        assert_eq!(reader.u64(), Err(ErrorCode::InvalidCommand));
        assert_eq!(reader.str(5), Err(ErrorCode::InvalidCommand));
        assert_eq!(reader.take(usize::MAX), Err(ErrorCode::InvalidCommand));
        assert_eq!(reader.consumed(), 3);
        assert_eq!(reader.u32(), Ok(0xaaaa_aaaa));
        assert_eq!(reader.u8(), Err(ErrorCode::InvalidCommand));
    }

    #[test]
    fn str_borrows_utf8_from_the_input() {
        let bytes = "ünï\u{1F511}rest".as_bytes().to_vec();
        let text = {
            let mut reader = Reader::new(&bytes);
            let text = reader.str(9).unwrap();
            assert_eq!(reader.str(0), Ok(""));
            assert_eq!(reader.consumed(), 9);
            text
        };
        // The &str outlives the reader: it points into `bytes`.
        assert_eq!(text, "ünï\u{1F511}");
    }

    #[test]
    fn str_refuses_bytes_that_are_not_utf8_with_invalid_format() {
        // A lone continuation byte, a truncated two-byte sequence, a surrogate.
        for bad in [&[0x80][..], &[b'a', 0xc3], &[0xed, 0xa0, 0x80]] {
            assert_eq!(Reader::new(bad).str(bad.len()), Err(ErrorCode::InvalidFormat), "{bad:?}");
        }
        // Length is checked before content: too short wins over bad bytes.
        assert_eq!(Reader::new(&[0x80]).str(2), Err(ErrorCode::InvalidCommand));
        // Cutting a valid multi-byte character in two is not UTF-8 either.
        assert_eq!(Reader::new("é".as_bytes()).str(1), Err(ErrorCode::InvalidFormat));
    }

    #[test]
    fn string_fields_keep_their_codes() {
        assert_eq!(Reader::new(&[2, b'o', b'k']).wire_name(), Ok("ok".to_owned()));
        assert_eq!(Reader::new(&[0]).wire_name(), Err(ErrorCode::InvalidFormat));
        assert_eq!(Reader::new(&[3, b'o', b'k']).wire_name(), Err(ErrorCode::InvalidCommand));
        assert_eq!(Reader::new(&[1, 0xff]).wire_name(), Err(ErrorCode::InvalidFormat));
        assert_eq!(Reader::new(&[0]).short_string(), Ok(String::new()));
        assert_eq!(Reader::new(&[1, 0xff]).short_string(), Err(ErrorCode::InvalidFormat));
        assert_eq!(Reader::new(&[2, 0, 0, 0, b'o', b'k']).long_string(), Ok("ok".to_owned()));
        assert_eq!(Reader::new(&[2, 0, 0]).long_string(), Err(ErrorCode::InvalidCommand));
        assert_eq!(Reader::new(&[1, 0, 0, 0, 0xff]).long_string(), Err(ErrorCode::InvalidFormat));
    }
}
