//! What the fuzz targets share: how an input is cut into a byte stream and
//! the chunks it arrives in, a driver that feeds a tokio-util `Decoder` and
//! checks what it consumed, and the checks every body decoder must pass.
//!
//! The invariants live here, in plain `assert!`s, so that every target holds
//! the decoders to the same rules (spec §0.4, STYLE.md "Errors"):
//! - peer input never panics; a decoder reports bad bytes as a typed error;
//! - a frame decoder consumes exactly the frame it returns, a prefix of what
//!   is buffered, and nothing at all when it answers "not enough bytes yet";
//! - what a frame decoder yields does not depend on how the bytes were split
//!   into reads;
//! - a body decoder consumes at most its input, depends only on the bytes it
//!   consumed, fails only with 3 (InvalidCommand) or 4 (InvalidFormat), and
//!   every value it yields encodes to bytes that decode back to that value.
//!
//! Nothing here knows about libFuzzer: the targets in `fuzz_targets/` are thin.
//! The token log's replay has its own checks, in `log.rs`.

pub mod log;

use std::fmt::Debug;
use std::ops::Range;

use bytes::BytesMut;
use latchkey_protocol::body::{WireDecode, WireEncode, decode_exact, encode_to_vec};
use latchkey_protocol::codec::{LegacyRequestCodec, encode_request};
use latchkey_protocol::vsr::{LoginRegisterResponse, decode_result};
use latchkey_protocol::{ErrorCode, Request, codes};
use tokio_util::codec::Decoder;

/// The frame length cap the frame targets use: small, so that inputs of a few
/// KiB reach both the "too large" error and whole frames.
pub const FRAME_BYTES_MAX: u32 = 4096;

/// How many chunk-size bytes an input may carry (the low nibble of byte 0).
const CHUNK_SCRIPT_BYTES_MAX: usize = 15;

/// An input cut into `[script][stream]`.
///
/// Byte 0's low nibble is `k`, the number of chunk-size bytes that follow;
/// each gives a read of `byte + 1` bytes, cycled until the stream is used up.
/// `k = 0` delivers the whole stream in one read. Byte 0's high nibble is
/// left to the target (a mode or direction selector).
pub struct Script<'a> {
    pub mode: u8,
    pub chunk_bytes: Vec<usize>,
    pub stream: &'a [u8],
}

impl<'a> Script<'a> {
    pub fn parse(data: &'a [u8]) -> Option<Script<'a>> {
        let (&first, rest) = data.split_first()?;
        let sizes = usize::from(first & 0x0f).min(CHUNK_SCRIPT_BYTES_MAX).min(rest.len());
        let (sizes, stream) = rest.split_at(sizes);
        Some(Script {
            mode: first >> 4,
            chunk_bytes: sizes.iter().map(|&size| usize::from(size) + 1).collect(),
            stream,
        })
    }
}

/// What a decoder made of a whole stream: the items with the stream range
/// each consumed, the error that stopped it (as text: I/O errors are not
/// comparable) with the range that error consumed, and the stream bytes never
/// consumed (buffered or, after an error, never read).
#[derive(Debug, PartialEq, Eq)]
pub struct Outcome<T> {
    pub items: Vec<(T, Range<usize>)>,
    pub error: Option<(String, Range<usize>)>,
    pub unconsumed_bytes: usize,
}

/// Feeds `stream` to `decoder` in reads of `chunk_bytes` (cycled; empty means
/// one read), draining every item after each read, as a connection does.
///
/// Checks after every `decode` call that the decoder consumed a prefix of the
/// buffer and left the rest untouched, that `Ok(None)` consumed nothing, and
/// that an item consumed at least one byte (otherwise a server loops).
pub fn feed<D>(decoder: &mut D, stream: &[u8], chunk_bytes: &[usize]) -> Outcome<D::Item>
where
    D: Decoder,
    D::Error: std::fmt::Display,
{
    let mut buffer = BytesMut::new();
    let mut fed = 0;
    // Stream offset of buffer[0].
    let mut start = 0;
    let mut items = Vec::new();
    let mut reads = chunk_bytes.iter().copied().cycle();
    while fed < stream.len() {
        let read = if chunk_bytes.is_empty() { stream.len() } else { reads.next().unwrap_or(1) };
        let end = fed + read.min(stream.len() - fed);
        buffer.extend_from_slice(&stream[fed..end]);
        fed = end;
        loop {
            let before = buffer.len();
            let result = decoder.decode(&mut buffer);
            assert!(buffer.len() <= before, "decode grew the buffer");
            let used = before - buffer.len();
            let range = start..start + used;
            start += used;
            assert_eq!(&buffer[..], &stream[start..fed], "decode changed bytes it did not consume");
            match result {
                Ok(Some(item)) => {
                    assert!(used > 0, "an item consumed no bytes");
                    items.push((item, range));
                }
                Ok(None) => {
                    assert_eq!(used, 0, "Ok(None) consumed bytes");
                    break;
                }
                Err(error) => {
                    return Outcome {
                        items,
                        error: Some((error.to_string(), range)),
                        unconsumed_bytes: stream.len() - start,
                    };
                }
            }
        }
    }
    debug_assert_eq!(buffer.len(), stream.len() - start);
    Outcome { items, error: None, unconsumed_bytes: stream.len() - start }
}

/// Feeds `stream` twice, in one read and in the scripted reads, and checks the
/// two outcomes agree: framing must not depend on how TCP split the bytes.
pub fn feed_both_ways<D>(new_decoder: impl Fn() -> D, script: &Script<'_>) -> Outcome<D::Item>
where
    D: Decoder,
    D::Error: std::fmt::Display,
    D::Item: PartialEq + Debug,
{
    let whole = feed(&mut new_decoder(), script.stream, &[]);
    if !script.chunk_bytes.is_empty() {
        let chunked = feed(&mut new_decoder(), script.stream, &script.chunk_bytes);
        assert_eq!(whole, chunked, "outcome depends on how the stream was split");
    }
    whole
}

/// The only codes a body decoder may fail with (spec §0.4).
pub fn assert_decode_error(code: ErrorCode) {
    assert!(
        matches!(code, ErrorCode::InvalidCommand | ErrorCode::InvalidFormat),
        "a body decoder failed with {code:?}, not 3 or 4"
    );
}

/// Decodes `src` as `T` and checks the body invariants; returns the value.
pub fn check_body<T>(src: &[u8]) -> Option<T>
where
    T: WireDecode + WireEncode + PartialEq + Debug,
{
    let (value, used) = match T::decode(src) {
        Ok(decoded) => decoded,
        Err(code) => {
            assert_decode_error(code);
            // decode_exact is decode plus a length check: it must agree.
            assert_eq!(decode_exact::<T>(src).err(), Some(code));
            return None;
        }
    };
    assert!(used <= src.len(), "consumed {used} of {} bytes", src.len());
    // The value depends only on the bytes consumed.
    let (again, used_again) = T::decode(&src[..used]).expect("the consumed prefix alone does not decode");
    assert_eq!(again, value);
    assert_eq!(used_again, used);
    assert_eq!(decode_exact::<T>(&src[..used]).as_ref(), Ok(&value));
    if used < src.len() {
        assert_eq!(decode_exact::<T>(src).err(), Some(ErrorCode::InvalidCommand));
    }
    Some(value)
}

/// Encodes `value` and checks the bytes decode back to it, consumed whole.
pub fn round_trip<T>(value: &T)
where
    T: WireDecode + WireEncode + PartialEq + Debug,
{
    let bytes = encode_to_vec(value);
    assert_eq!(bytes.len(), value.encoded_size(), "encoded_size disagrees with encode");
    let (back, used) = T::decode(&bytes).expect("a re-encoded value does not decode");
    assert_eq!(&back, value, "round trip changed the value");
    assert_eq!(used, bytes.len(), "round trip left bytes unread");
}

/// The 0.11 login reply payload. Its encoder debug-asserts session ≥ 1: the
/// server must never send 0 (the SDK refuses it), but a client may receive
/// it, so the decoder accepts it. Only what a server may send is re-encoded.
pub fn check_login_response(src: &[u8]) -> Option<LoginRegisterResponse> {
    let response = check_body::<LoginRegisterResponse>(src)?;
    if response.session >= 1 {
        round_trip(&response);
    }
    Some(response)
}

/// [`check_body`] then [`round_trip`] for a decoded value.
pub fn check_body_round_trip<T>(src: &[u8]) -> Option<T>
where
    T: WireDecode + WireEncode + PartialEq + Debug,
{
    let value = check_body::<T>(src)?;
    round_trip(&value);
    Some(value)
}

/// The body bytes of a decoded request, or `None` for an unserved code (its
/// body is never read, so there is nothing to re-encode).
pub fn request_body_bytes(request: &Request) -> Option<Vec<u8>> {
    let bytes = match request {
        Request::Ping
        | Request::GetClusterMetadata
        | Request::GetMe
        | Request::LogoutUser
        | Request::GetPersonalAccessTokens
        | Request::RevokeAllTokens
        | Request::DeleteAllTokens => Vec::new(),
        Request::LoginUser(body) => encode_to_vec(body),
        Request::CreatePersonalAccessToken(body) => encode_to_vec(body),
        Request::DeletePersonalAccessToken(body) => encode_to_vec(body),
        Request::LoginWithPersonalAccessToken(body) => encode_to_vec(body),
        Request::CreateToken(body) => encode_to_vec(body),
        Request::GetToken(body) => encode_to_vec(body),
        Request::ListTokens(body) => encode_to_vec(body),
        Request::UpdateToken(body) => encode_to_vec(body),
        Request::RevokeToken(body) => encode_to_vec(body),
        Request::RotateToken(body) => encode_to_vec(body),
        Request::DeleteToken(body) => encode_to_vec(body),
        Request::EditTokenAccess(body) => encode_to_vec(body),
        Request::Authorize(body) => encode_to_vec(body),
        Request::Unserved(_) => return None,
    };
    Some(bytes)
}

/// Decodes a legacy request payload and checks it: an error is 3 or 4; a
/// request re-encodes to a body that decodes to the same request, and to a
/// frame that [`LegacyRequestCodec`] reads back to the same code and body.
pub fn check_request(code: u32, payload: &[u8]) -> Option<Request> {
    let request = match Request::decode(code, payload) {
        Ok(request) => request,
        Err(error) => {
            assert_decode_error(error);
            return None;
        }
    };
    if let Request::Unserved(unserved) = request {
        assert_eq!(unserved, code);
        assert!(codes::is_iggy_code(code), "code {code} is Unserved but not Iggy's");
    }
    let Some(body) = request_body_bytes(&request) else {
        return Some(request);
    };
    assert_eq!(Request::decode(code, &body).as_ref(), Ok(&request), "request round trip changed it");

    let mut frame = BytesMut::new();
    encode_request(code, &RawBody(&body), &mut frame);
    let mut codec = LegacyRequestCodec::new(FRAME_BYTES_MAX);
    match codec.decode(&mut frame) {
        Ok(Some(latchkey_protocol::codec::Inbound::Request { code: read_code, payload: read })) => {
            assert_eq!(read_code, code);
            assert_eq!(&read[..], &body[..]);
            assert!(frame.is_empty());
        }
        // A re-encoding may grow (LoginUser writes both trailing fields
        // when either is present) past the cap: then the cap must bite.
        Err(latchkey_protocol::codec::FrameError::TooLarge { .. }) => {
            assert!(4 + body.len() > FRAME_BYTES_MAX as usize)
        }
        other => panic!("a re-encoded request frame read back as {other:?}"),
    }
    Some(request)
}

/// Already-encoded body bytes, to frame them again.
pub struct RawBody<'a>(pub &'a [u8]);

impl WireEncode for RawBody<'_> {
    fn encoded_size(&self) -> usize {
        self.0.len()
    }
    fn encode(&self, dst: &mut BytesMut) {
        dst.extend_from_slice(self.0);
    }
}

/// `decode_result` (spec §2.5): a success's payload is a tail of the body
/// after the section; a rejection's code is never 0; a short body is 3.
/// Returns what `decode_result` returned, `None` for a short body.
pub fn check_result_section(body: &[u8]) -> Option<Result<&[u8], u32>> {
    match decode_result(body) {
        Ok(Ok(payload)) => {
            assert!(payload.len() + 4 <= body.len());
            assert!(body.ends_with(payload));
            Some(Ok(payload))
        }
        Ok(Err(code)) => {
            assert_ne!(code, 0);
            Some(Err(code))
        }
        Err(code) => {
            assert_eq!(code, ErrorCode::InvalidCommand, "a short result section is 3");
            None
        }
    }
}
