//! Primitive encodings shared by every body (spec §0.4): checked little-endian
//! reads that turn short input into a typed error, and the matching writes.
//!
//! Decoding rules, applied the same way for every body:
//! - input that ends before a required field is complete: `InvalidCommand` (3);
//! - a zero-length WireName or bytes that are not UTF-8: `InvalidFormat` (4).

use bytes::{BufMut, BytesMut};

use crate::ErrorCode;

/// A cursor over a received body. Every read is bounds-checked.
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

    pub fn u8(&mut self) -> Result<u8, ErrorCode> {
        Ok(self.take(1)?[0])
    }

    pub fn u16(&mut self) -> Result<u16, ErrorCode> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    pub fn u32(&mut self) -> Result<u32, ErrorCode> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn u64(&mut self) -> Result<u64, ErrorCode> {
        let b = self.take(8)?;
        let mut array = [0u8; 8];
        array.copy_from_slice(b);
        Ok(u64::from_le_bytes(array))
    }

    /// `[len u8][UTF-8]` with `len` ≥ 1 (a WireName).
    pub fn wire_name(&mut self) -> Result<String, ErrorCode> {
        let len = self.u8()?;
        if len == 0 {
            return Err(ErrorCode::InvalidFormat);
        }
        utf8(self.take(usize::from(len))?)
    }

    /// `[len u8][UTF-8]` where `len` may be 0 (passwords, usernames in LoginUser).
    pub fn short_string(&mut self) -> Result<String, ErrorCode> {
        let len = self.u8()?;
        utf8(self.take(usize::from(len))?)
    }

    /// `[len u32][UTF-8]` (version, context, address).
    pub fn long_string(&mut self) -> Result<String, ErrorCode> {
        let len = self.u32()?;
        let len = usize::try_from(len).map_err(|_| ErrorCode::InvalidCommand)?;
        utf8(self.take(len)?)
    }
}

fn utf8(bytes: &[u8]) -> Result<String, ErrorCode> {
    std::str::from_utf8(bytes).map(str::to_owned).map_err(|_| ErrorCode::InvalidFormat)
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
