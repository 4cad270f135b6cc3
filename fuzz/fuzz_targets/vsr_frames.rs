//! Arbitrary bytes, in arbitrary reads, through the 0.11 (VSR) frame decoders
//! of both directions, then what the server does with a frame before it
//! touches the registry: header validation, the body checksum, the Register
//! login shapes and the version gate, and the legacy body decoders that the
//! NonReplicated and PAT operations reuse (server/src/vsr.rs `respond`).
//!
//! Input: `[script][stream]` (see `latchkey_fuzz::Script`); an even mode
//! nibble reads requests with [`RequestCodec`], an odd one reads replies and
//! evictions with [`ReplyCodec`]. Checks, beside the shared ones in
//! `feed`: an item consumed exactly its declared `size`; a bad `size` is
//! refused before anything is consumed; a bad header consumes its frame;
//! every header decodes back from its own encoding; and every reply or
//! eviction the server would build for a decoded request reads back on the
//! client side as built.

#![no_main]

use bytes::BytesMut;
use latchkey_fuzz::{
    FRAME_BYTES_MAX, Script, check_body_round_trip, check_login_response, check_request,
    check_result_section, feed_both_ways,
};
use latchkey_protocol::body::{
    ClientDetails, ClusterMetadata, Empty, PersonalAccessTokens, RawPersonalAccessToken, WireDecode,
};
use latchkey_protocol::codes;
use latchkey_protocol::vsr::{
    COMMAND_EVICTION, COMMAND_REPLY, COMMAND_REQUEST, ClientVersionInfo, EvictionHeader, EvictionReason,
    HEADER_BYTES, LoginRegister, LoginRegisterWithPat, PROTOCOL_VERSION, ReplyCodec, ReplyFrame, ReplyHeader,
    RequestCodec, RequestFrame, RequestHeader, encode_reply, is_protocol_compatible, offset, operation,
    pack_version, request_checksum, unpack_version,
};
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::Decoder;

fuzz_target!(|data: &[u8]| {
    let Some(script) = Script::parse(data) else {
        return;
    };
    if script.mode & 1 == 0 {
        requests(&script);
    } else {
        replies(&script);
    }
});

fn declared_size(frame: &[u8]) -> u32 {
    let at = offset::SIZE;
    u32::from_le_bytes([frame[at], frame[at + 1], frame[at + 2], frame[at + 3]])
}

fn header_of(frame: &[u8]) -> &[u8; HEADER_BYTES] {
    frame[..HEADER_BYTES].try_into().expect("a frame holds a whole header")
}

/// Checks the error that ended a stream: a bad `size` consumed nothing, any
/// other error consumed exactly the frame it was about. Returns that frame.
fn check_error<'a>(stream: &'a [u8], range: &std::ops::Range<usize>) -> Option<&'a [u8]> {
    if range.is_empty() {
        let declared = declared_size(&stream[range.start..]);
        assert!((declared as usize) < HEADER_BYTES || declared > FRAME_BYTES_MAX, "size {declared} refused");
        return None;
    }
    let frame = &stream[range.clone()];
    assert_eq!(frame.len(), declared_size(frame) as usize);
    Some(frame)
}

// ---------------------------------------------------------------------------
// Server side
// ---------------------------------------------------------------------------

fn requests(script: &Script<'_>) {
    let outcome = feed_both_ways(|| RequestCodec::new(FRAME_BYTES_MAX), script);
    for (frame, range) in &outcome.items {
        let consumed = &script.stream[range.clone()];
        let RequestFrame { header, body } = frame;
        assert_eq!(consumed.len(), header.size as usize);
        assert_eq!(consumed.len(), HEADER_BYTES + body.len());
        assert!(header.size <= FRAME_BYTES_MAX);
        assert_eq!(consumed[offset::COMMAND], COMMAND_REQUEST);
        assert_eq!(RequestHeader::decode(header_of(consumed)).as_ref(), Ok(header));
        assert_eq!(&consumed[HEADER_BYTES..], &body[..]);
        check_request_round_trip(frame);
        check_answers(header);
        respond(header, body);
    }
    if let Some((_, range)) = &outcome.error
        && let Some(frame) = check_error(script.stream, range)
    {
        assert!(RequestHeader::decode(header_of(frame)).is_err(), "a valid header was refused");
    }
}

/// The header re-encodes to one that decodes to itself, and the frame
/// (header + body) reads back whole.
fn check_request_round_trip(frame: &RequestFrame) {
    let mut bytes = BytesMut::new();
    frame.header.encode(frame.body.len(), &mut bytes);
    bytes.extend_from_slice(&frame.body);
    let read = RequestCodec::new(FRAME_BYTES_MAX).decode(&mut bytes);
    assert_eq!(
        read.ok().flatten().as_ref(),
        Some(frame),
        "a re-encoded request frame reads back differently"
    );
    assert!(bytes.is_empty());
}

/// Every reply and eviction the server may build for this request reads back
/// on the client side as it was built.
fn check_answers(request: &RequestHeader) {
    let mut codec = ReplyCodec::new(FRAME_BYTES_MAX);
    for status in [0, 3, 40] {
        let reply = ReplyHeader::answering(request, request.session, status);
        let mut bytes = BytesMut::new();
        encode_reply(&reply, &Empty, &mut bytes);
        let expected = ReplyFrame::Reply {
            header: ReplyHeader { size: HEADER_BYTES as u32, ..reply },
            body: Default::default(),
        };
        assert_eq!(codec.decode(&mut bytes).ok().flatten(), Some(expected));
    }
    for reason in EvictionReason::ALL {
        let eviction = EvictionHeader::answering(request, reason);
        let mut bytes = BytesMut::new();
        eviction.encode(&mut bytes);
        assert_eq!(codec.decode(&mut bytes).ok().flatten(), Some(ReplyFrame::Eviction(eviction)));
    }
}

/// The registry-free part of the server's `respond`: the checksum, then the
/// body decoding each operation does.
fn respond(header: &RequestHeader, body: &[u8]) {
    // XXH3-64 zero-extended to 128 bits (spec §2.4): a stamp with any of the
    // high 64 bits set can never match, whatever the body.
    assert_eq!(request_checksum(body) >> 64, 0);
    match header.operation {
        operation::REGISTER => register(body),
        operation::NON_REPLICATED => drop(check_request(header.code, body)),
        operation::CREATE_PERSONAL_ACCESS_TOKEN => {
            drop(check_request(codes::CREATE_PERSONAL_ACCESS_TOKEN, body))
        }
        operation::DELETE_PERSONAL_ACCESS_TOKEN => {
            drop(check_request(codes::DELETE_PERSONAL_ACCESS_TOKEN, body))
        }
        _ => {}
    }
}

/// Register (spec §2.9): ClientVersionInfo and the version gate, then the
/// password shape, then the PAT shape; both shapes start with the version.
fn register(body: &[u8]) {
    let Some(client_version) = check_body_round_trip::<ClientVersionInfo>(body) else {
        assert!(LoginRegister::decode(body).is_err() && LoginRegisterWithPat::decode(body).is_err());
        return;
    };
    let version = client_version.protocol_version;
    // Spec §2.1: for a 0.11.x server, 11264 ≤ client ≤ 12287.
    assert_eq!(is_protocol_compatible(version, PROTOCOL_VERSION), (11264..=12287).contains(&version));
    let (major, minor, patch) = unpack_version(version);
    if version < 1 << 30 {
        assert_eq!(pack_version(major, minor, patch), Some(version));
    }
    if let Some(login) = check_body_round_trip::<LoginRegister>(body) {
        assert_eq!(login.client_version, client_version);
    }
    if let Some(login) = check_body_round_trip::<LoginRegisterWithPat>(body) {
        assert_eq!(login.client_version, client_version);
    }
}

// ---------------------------------------------------------------------------
// Client side
// ---------------------------------------------------------------------------

fn replies(script: &Script<'_>) {
    let outcome = feed_both_ways(|| ReplyCodec::new(FRAME_BYTES_MAX), script);
    for (frame, range) in &outcome.items {
        let consumed = &script.stream[range.clone()];
        assert_eq!(consumed.len(), declared_size(consumed) as usize);
        assert!(consumed.len() <= FRAME_BYTES_MAX as usize);
        match frame {
            ReplyFrame::Reply { header, body } => {
                assert_eq!(consumed[offset::COMMAND], COMMAND_REPLY);
                assert_eq!(consumed.len(), HEADER_BYTES + body.len());
                assert_eq!(ReplyHeader::decode(header_of(consumed)), *header);
                assert_eq!(&consumed[HEADER_BYTES..], &body[..]);
                let mut bytes = BytesMut::new();
                header.encode(body.len(), &mut bytes);
                bytes.extend_from_slice(body);
                let read = ReplyCodec::new(FRAME_BYTES_MAX).decode(&mut bytes);
                assert_eq!(read.ok().flatten().as_ref(), Some(frame));
                reply_body(header.operation, body);
            }
            ReplyFrame::Eviction(eviction) => {
                assert_eq!(consumed[offset::COMMAND], COMMAND_EVICTION);
                assert_eq!(eviction.reason as u8, consumed[offset::EVICTION_REASON]);
                let mut bytes = BytesMut::new();
                eviction.encode(&mut bytes);
                let read = ReplyCodec::new(FRAME_BYTES_MAX).decode(&mut bytes);
                assert_eq!(read.ok().flatten().as_ref(), Some(frame));
            }
        }
    }
    if let Some((_, range)) = &outcome.error
        && let Some(frame) = check_error(script.stream, range)
    {
        let command = frame[offset::COMMAND];
        let bad_eviction =
            command == COMMAND_EVICTION && EvictionReason::from_u8(frame[offset::EVICTION_REASON]).is_none();
        assert!(command != COMMAND_REPLY && (command != COMMAND_EVICTION || bad_eviction));
    }
}

/// A reply body as the SDK reads it for the operation (spec §2.5, §2.9, §2.14).
fn reply_body(op: u8, body: &[u8]) {
    let _ = operation::is_valid(op);
    if op == operation::NON_REPLICATED {
        check_body_round_trip::<Empty>(body);
        check_body_round_trip::<ClientDetails>(body);
        check_body_round_trip::<PersonalAccessTokens>(body);
        check_body_round_trip::<ClusterMetadata>(body);
        return;
    }
    if !operation::is_result_framed(op) || (op == operation::REGISTER && body.is_empty()) {
        return;
    }
    let Some(Ok(payload)) = check_result_section(body) else {
        return;
    };
    match op {
        operation::REGISTER => drop(check_login_response(payload)),
        operation::CREATE_PERSONAL_ACCESS_TOKEN => {
            drop(check_body_round_trip::<RawPersonalAccessToken>(payload))
        }
        _ => {}
    }
}
