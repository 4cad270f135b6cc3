//! The legacy framing (spec §1.1): a tokio-util `Decoder` for each direction
//! and a writer for each.
//!
//! - [`LegacyRequestCodec`] reads requests `[length u32][code u32][payload]`
//!   (the server's side); [`encode_reply`] writes replies
//!   `[status u32][length u32][payload]`.
//! - [`LegacyReplyCodec`] reads replies and [`encode_request`] writes requests
//!   (the SDK's, the bench tool's and the tests' side).
//!
//! Each decoder is named for what it decodes, as in [`crate::vsr`]
//! (`RequestCodec`, `ReplyCodec`); the `Legacy` prefix keeps the two
//! framings' codecs apart where one file uses both.
//!
//! A request whose length field is below 4 is not an error that ends the
//! stream: the 8 header bytes are consumed and [`Inbound::Malformed`] is
//! yielded, so the server answers 3 and keeps reading (spec §1.1). A declared
//! length above the configured maximum is an `Err`: the framing can no longer
//! be trusted and the connection is closed without buffering the payload.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::Decoder;

use crate::ErrorCode;
use crate::body::WireEncode;

/// Bytes before the payload in both directions.
pub const HEADER_BYTES: usize = 8;
/// Default cap on a request's length field (code + payload).
pub const REQUEST_LENGTH_MAX_DEFAULT: u32 = 64 * 1024;
/// Default cap on a reply payload read by a client.
pub const REPLY_LENGTH_MAX_DEFAULT: u32 = 16 * 1024 * 1024;

/// Why a stream can no longer be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("declared frame length {declared} exceeds the maximum {max}")]
    TooLarge { declared: u32, max: u32 },
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// One request as read off the wire, body not yet decoded. The payload is
/// mutable so the server can wipe it once decoded (it may hold a password or
/// a token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    Request {
        code: u32,
        payload: BytesMut,
    },
    /// The length field was below 4; answer `InvalidCommand` and read on.
    Malformed {
        length: u32,
    },
}

/// A reply to write: a status with a body, or an error status alone.
pub enum Reply<'a> {
    Ok(&'a dyn WireEncode),
    Err(ErrorCode),
}

/// Decodes request frames (the server's side).
#[derive(Debug, Clone)]
pub struct LegacyRequestCodec {
    length_max: u32,
}

impl LegacyRequestCodec {
    /// `length_max` caps the request length field (code + payload bytes).
    pub fn new(length_max: u32) -> Self {
        LegacyRequestCodec { length_max: length_max.max(4) }
    }
}

impl Default for LegacyRequestCodec {
    fn default() -> Self {
        LegacyRequestCodec::new(REQUEST_LENGTH_MAX_DEFAULT)
    }
}

impl LegacyRequestCodec {
    /// The frame at the front of `src`, found in place: `Ok(None)` wants
    /// more bytes (room for the whole frame is reserved), `Err` means the
    /// framing is broken. The caller reads the payload where it lies and
    /// advances `src` by [`FrameAt::bytes`]: the server's path, which
    /// splits nothing off the buffer. [`Decoder::decode`] is this plus the
    /// split.
    pub fn frame_at_front(&self, src: &mut BytesMut) -> Result<Option<FrameAt>, FrameError> {
        if src.len() < HEADER_BYTES {
            return Ok(None);
        }
        let length = u32::from_le_bytes([src[0], src[1], src[2], src[3]]);
        if length < 4 {
            return Ok(Some(FrameAt::Malformed { length }));
        }
        if length > self.length_max {
            return Err(FrameError::TooLarge { declared: length, max: self.length_max });
        }
        let frame_bytes = 4 + length as usize;
        if src.len() < frame_bytes {
            src.reserve(frame_bytes - src.len());
            return Ok(None);
        }
        let code = u32::from_le_bytes([src[4], src[5], src[6], src[7]]);
        Ok(Some(FrameAt::Request { code, bytes: frame_bytes }))
    }
}

/// A whole frame at the front of a buffer, as
/// [`LegacyRequestCodec::frame_at_front`] finds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameAt {
    /// A request: its code, and the frame's end; the payload is
    /// `src[HEADER_BYTES..bytes]`.
    Request { code: u32, bytes: usize },
    /// The length field was below 4: only the header is consumed; answer
    /// `InvalidCommand` and read on.
    Malformed { length: u32 },
}

impl FrameAt {
    /// The bytes the frame takes at the front of the buffer.
    pub fn bytes(self) -> usize {
        match self {
            FrameAt::Request { bytes, .. } => bytes,
            FrameAt::Malformed { .. } => HEADER_BYTES,
        }
    }
}

impl Decoder for LegacyRequestCodec {
    type Item = Inbound;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Inbound>, FrameError> {
        Ok(self.frame_at_front(src)?.map(|frame| match frame {
            FrameAt::Request { code, bytes } => {
                let mut frame = src.split_to(bytes);
                frame.advance(HEADER_BYTES);
                Inbound::Request { code, payload: frame }
            }
            FrameAt::Malformed { length } => {
                src.advance(HEADER_BYTES);
                Inbound::Malformed { length }
            }
        }))
    }
}

/// Writes one reply frame. A 1-byte payload would be left unread by the 0.10
/// SDK and corrupt the stream (spec §1.1), so it is a bug worth stopping for.
pub fn encode_reply(reply: Reply<'_>, dst: &mut BytesMut) {
    match reply {
        Reply::Ok(body) => {
            let size = body.encoded_size();
            assert_ne!(size, 1, "a 1-byte reply payload desynchronises Iggy clients");
            let length = u32::try_from(size).expect("reply larger than 4 GiB");
            dst.reserve(HEADER_BYTES + size);
            dst.put_u32_le(0);
            dst.put_u32_le(length);
            let before = dst.len();
            body.encode(dst);
            debug_assert_eq!(dst.len() - before, size, "encoded_size disagrees with encode");
        }
        Reply::Err(code) => {
            dst.put_u32_le(code.code());
            dst.put_u32_le(0);
        }
    }
}

/// A reply as the client reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundReply {
    pub status: u32,
    pub payload: Bytes,
}

/// Decodes reply frames (the client's side).
#[derive(Debug, Clone)]
pub struct LegacyReplyCodec {
    length_max: u32,
}

impl LegacyReplyCodec {
    pub fn new(length_max: u32) -> Self {
        LegacyReplyCodec { length_max }
    }
}

impl Default for LegacyReplyCodec {
    fn default() -> Self {
        LegacyReplyCodec::new(REPLY_LENGTH_MAX_DEFAULT)
    }
}

impl Decoder for LegacyReplyCodec {
    type Item = InboundReply;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<InboundReply>, FrameError> {
        if src.len() < HEADER_BYTES {
            return Ok(None);
        }
        let status = u32::from_le_bytes([src[0], src[1], src[2], src[3]]);
        let length = u32::from_le_bytes([src[4], src[5], src[6], src[7]]);
        if length > self.length_max {
            return Err(FrameError::TooLarge { declared: length, max: self.length_max });
        }
        let frame_bytes = HEADER_BYTES + length as usize;
        if src.len() < frame_bytes {
            src.reserve(frame_bytes - src.len());
            return Ok(None);
        }
        let mut frame = src.split_to(frame_bytes);
        frame.advance(HEADER_BYTES);
        Ok(Some(InboundReply { status, payload: frame.freeze() }))
    }
}

/// Writes one request frame `[4 + len][code][body]`.
pub fn encode_request(code: u32, body: &dyn WireEncode, dst: &mut BytesMut) {
    let size = body.encoded_size();
    let length = u32::try_from(4 + size).expect("request larger than 4 GiB");
    dst.reserve(HEADER_BYTES + size);
    dst.put_u32_le(length);
    dst.put_u32_le(code);
    body.encode(dst);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_replies_are_status_and_zero_length() {
        for &code in ErrorCode::ALL {
            let mut dst = BytesMut::new();
            encode_reply(Reply::Err(code), &mut dst);
            let mut expected = code.code().to_le_bytes().to_vec();
            expected.extend_from_slice(&[0; 4]);
            assert_eq!(&dst[..], expected, "{code:?}");
        }
    }
}
