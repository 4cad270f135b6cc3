//! Legacy framing (spec §1.1), the worked examples of spec §1.10, and
//! `Request::decode` with its precedence rules (spec §1.2, §1.6, §1.7).

use bytes::{Buf, Bytes, BytesMut};
use tokio_util::codec::Decoder;

use latchkey_protocol::Secret;
use latchkey_protocol::body::{
    Command, CreatePersonalAccessToken, DeletePersonalAccessToken, Empty, GetClusterMetadata, GetMe,
    GetPersonalAccessTokens, IdentityInfo, LoginUser, LoginWithPersonalAccessToken, LogoutUser, Ping,
    RawPersonalAccessToken, WireEncode, encode_to_vec,
};
use latchkey_protocol::codec::{
    FrameAt, FrameError, HEADER_BYTES, Inbound, InboundReply, LegacyReplyCodec, LegacyRequestCodec,
    REPLY_LENGTH_MAX_DEFAULT, REQUEST_LENGTH_MAX_DEFAULT, Reply, encode_reply, encode_request,
};
use latchkey_protocol::{ErrorCode, Request, codes};

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

fn frame(length: u32, code: u32, payload: &[u8]) -> Vec<u8> {
    let mut bytes = length.to_le_bytes().to_vec();
    bytes.extend_from_slice(&code.to_le_bytes());
    bytes.extend_from_slice(payload);
    bytes
}

fn request_frame(code: u32, payload: &[u8]) -> Vec<u8> {
    frame(4 + payload.len() as u32, code, payload)
}

fn reply_frame(status: u32, payload: &[u8]) -> Vec<u8> {
    let mut bytes = status.to_le_bytes().to_vec();
    bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    bytes.extend_from_slice(payload);
    bytes
}

fn request(code: u32, payload: &[u8]) -> Inbound {
    Inbound::Request { code, payload: BytesMut::from(payload) }
}

fn reply(status: u32, payload: &[u8]) -> InboundReply {
    InboundReply { status, payload: Bytes::copy_from_slice(payload) }
}

/// Decodes every complete item in `buf`.
fn drain<D: Decoder>(codec: &mut D, buf: &mut BytesMut) -> Vec<D::Item>
where
    D::Error: std::fmt::Debug,
{
    let mut items = Vec::new();
    while let Some(item) = codec.decode(buf).expect("decode") {
        items.push(item);
    }
    items
}

fn reply_bytes(reply: Reply<'_>) -> Vec<u8> {
    let mut dst = BytesMut::new();
    encode_reply(reply, &mut dst);
    dst.to_vec()
}

fn request_bytes<C: Command>(command: &C) -> Vec<u8> {
    let mut dst = BytesMut::new();
    put_request(command, &mut dst);
    dst.to_vec()
}

fn put_request<C: Command>(command: &C, dst: &mut BytesMut) {
    encode_request(C::CODE, command, dst);
}

fn login(username: &str, password: &str, version: Option<&str>) -> LoginUser {
    LoginUser {
        username: username.to_owned(),
        password: Secret::from(password.to_owned()),
        version: version.map(str::to_owned),
        context: None,
    }
}

/// The LoginUser frame of spec §1.10.
const LOGIN_FRAME: [u8; 32] = [
    0x1c, 0x00, 0x00, 0x00, // length = 4 + 24
    0x26, 0x00, 0x00, 0x00, // code 38
    0x04, 0x69, 0x67, 0x67, 0x79, // username "iggy"
    0x04, 0x69, 0x67, 0x67, 0x79, // password "iggy"
    0x06, 0x00, 0x00, 0x00, 0x30, 0x2e, 0x31, 0x30, 0x2e, 0x30, // version "0.10.0"
    0x00, 0x00, 0x00, 0x00, // context length 0
];

/// The CreatePersonalAccessToken "tok-1h" frame of spec §1.10.
const CREATE_FRAME: [u8; 23] = [
    0x13, 0x00, 0x00, 0x00, // length = 4 + 15
    0x2a, 0x00, 0x00, 0x00, // code 42
    0x06, 0x74, 0x6f, 0x6b, 0x2d, 0x31, 0x68, // name "tok-1h"
    0x00, 0xa4, 0x93, 0xd6, 0x00, 0x00, 0x00, 0x00, // expiry 3,600,000,000 µs
];

/// A body of exactly one byte, which `encode_reply` must refuse.
struct OneByte;

impl WireEncode for OneByte {
    fn encoded_size(&self) -> usize {
        1
    }
    fn encode(&self, dst: &mut BytesMut) {
        dst.extend_from_slice(&[0x2a]);
    }
}

/// An arbitrary raw body.
struct Raw<'a>(&'a [u8]);

impl WireEncode for Raw<'_> {
    fn encoded_size(&self) -> usize {
        self.0.len()
    }
    fn encode(&self, dst: &mut BytesMut) {
        dst.extend_from_slice(self.0);
    }
}

// ---------------------------------------------------------------------------
// Spec §1.10 worked examples
// ---------------------------------------------------------------------------

#[test]
fn ping_request_and_reply_bytes() {
    let expected = [0x04, 0, 0, 0, 0x01, 0, 0, 0];
    let mut dst = BytesMut::new();
    encode_request(codes::PING, &Ping, &mut dst);
    assert_eq!(&dst[..], expected);
    assert_eq!(request_bytes(&Ping), expected);

    let mut buf = BytesMut::from(&expected[..]);
    assert_eq!(LegacyRequestCodec::default().decode(&mut buf).unwrap(), Some(request(1, &[])));
    assert!(buf.is_empty());
    assert_eq!(Request::decode(1, &[]), Ok(Request::Ping));

    assert_eq!(reply_bytes(Reply::Ok(&Empty)), [0u8; 8]);
    assert_eq!(reply_bytes(Reply::Ok(&Ping)), [0u8; 8]);
    let mut buf = BytesMut::from(&[0u8; 8][..]);
    assert_eq!(LegacyReplyCodec::default().decode(&mut buf).unwrap(), Some(reply(0, &[])));
    assert!(buf.is_empty());
}

#[test]
fn login_user_frame_bytes() {
    let value = login("iggy", "iggy", Some("0.10.0"));
    assert_eq!(request_bytes(&value), LOGIN_FRAME);
    let mut dst = BytesMut::new();
    encode_request(codes::LOGIN_USER, &value, &mut dst);
    assert_eq!(&dst[..], LOGIN_FRAME);

    let mut buf = BytesMut::from(&LOGIN_FRAME[..]);
    let Some(Inbound::Request { code, payload }) = LegacyRequestCodec::default().decode(&mut buf).unwrap()
    else {
        panic!("no request decoded");
    };
    assert!(buf.is_empty());
    assert_eq!(code, 38);
    assert_eq!(payload.len(), 24);
    assert_eq!(Request::decode(code, &payload), Ok(Request::LoginUser(value)));
}

#[test]
fn login_replies_bytes() {
    assert_eq!(reply_bytes(Reply::Ok(&IdentityInfo { user_id: 0 })), [0, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(reply_bytes(Reply::Err(ErrorCode::InvalidCredentials)), [0x2a, 0, 0, 0, 0, 0, 0, 0]);
    let mut buf = BytesMut::new();
    buf.extend_from_slice(&[0, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0]);
    buf.extend_from_slice(&[0x2a, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(drain(&mut LegacyReplyCodec::default(), &mut buf), [reply(0, &[0, 0, 0, 0]), reply(42, &[])]);
    assert!(buf.is_empty());
}

#[test]
fn create_personal_access_token_frame_bytes() {
    let value = CreatePersonalAccessToken { name: "tok-1h".to_owned(), expiry_us: 3_600_000_000 };
    let mut dst = BytesMut::new();
    encode_request(codes::CREATE_PERSONAL_ACCESS_TOKEN, &value, &mut dst);
    assert_eq!(&dst[..], CREATE_FRAME);
    assert_eq!(request_bytes(&value), CREATE_FRAME);

    let mut buf = BytesMut::from(&CREATE_FRAME[..]);
    assert_eq!(
        LegacyRequestCodec::default().decode(&mut buf).unwrap(),
        Some(request(42, &CREATE_FRAME[8..]))
    );
    assert_eq!(Request::decode(42, &CREATE_FRAME[8..]), Ok(Request::CreatePersonalAccessToken(value)));
}

#[test]
fn create_personal_access_token_reply_bytes() {
    // Spec §1.10: status 0, length 69, then a 68-character token as a WireName.
    let token: String = (0..68).map(|i| (b'a' + (i % 26) as u8) as char).collect();
    let bytes = reply_bytes(Reply::Ok(&RawPersonalAccessToken { token: Secret::from(token.clone()) }));
    assert_eq!(&bytes[..9], [0, 0, 0, 0, 0x45, 0, 0, 0, 0x44]);
    assert_eq!(&bytes[9..], token.as_bytes());
    // A Latchkey token: 52 characters, 53-byte payload.
    let token = latchkey_protocol::token::encode(&[5; 32]);
    let bytes = reply_bytes(Reply::Ok(&RawPersonalAccessToken { token: Secret::from(token.clone()) }));
    assert_eq!(&bytes[..9], [0, 0, 0, 0, 53, 0, 0, 0, 52]);
    assert_eq!(&bytes[9..], token.as_bytes());
}

#[test]
fn tok_never_request_frame() {
    // Spec §2.14's body inside a legacy frame.
    let body = [
        0x09, 0x74, 0x6f, 0x6b, 0x2d, 0x6e, 0x65, 0x76, 0x65, 0x72, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff,
    ];
    let value = CreatePersonalAccessToken { name: "tok-never".to_owned(), expiry_us: u64::MAX };
    assert_eq!(request_bytes(&value), request_frame(42, &body));
    assert_eq!(Request::decode(42, &body), Ok(Request::CreatePersonalAccessToken(value)));
}

// ---------------------------------------------------------------------------
// encode_reply
// ---------------------------------------------------------------------------

#[test]
fn ok_replies_are_zero_status_length_and_payload() {
    for len in [0usize, 2, 3, 4, 255, 256, 70_000] {
        let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
        assert_eq!(reply_bytes(Reply::Ok(&Raw(&payload))), reply_frame(0, &payload), "length {len}");
    }
}

#[test]
fn encode_reply_appends_one_frame_per_reply() {
    let mut dst = BytesMut::new();
    encode_reply(Reply::Ok(&IdentityInfo { user_id: 7 }), &mut dst);
    encode_reply(Reply::Err(ErrorCode::Unauthenticated), &mut dst);
    encode_reply(Reply::Ok(&Empty), &mut dst);
    let mut expected = reply_frame(0, &[7, 0, 0, 0]);
    expected.extend(reply_frame(40, &[]));
    expected.extend(reply_frame(0, &[]));
    assert_eq!(&dst[..], expected);
    // Appends after what is already in the buffer.
    let mut dst = BytesMut::from(&b"xy"[..]);
    encode_reply(Reply::Err(ErrorCode::InvalidCommand), &mut dst);
    assert_eq!(&dst[..], b"xy\x03\x00\x00\x00\x00\x00\x00\x00");
}

#[test]
#[should_panic(expected = "1-byte reply payload")]
fn encode_reply_refuses_a_one_byte_payload() {
    let mut dst = BytesMut::new();
    encode_reply(Reply::Ok(&OneByte), &mut dst);
}

// ---------------------------------------------------------------------------
// encode_request
// ---------------------------------------------------------------------------

fn check_command<C: Command>(command: &C) {
    let body = encode_to_vec(command);
    let bytes = request_bytes(command);
    assert_eq!(bytes.len(), HEADER_BYTES + body.len());
    assert_eq!(u32::from_le_bytes(bytes[0..4].try_into().unwrap()) as usize, 4 + body.len());
    assert_eq!(u32::from_le_bytes(bytes[4..8].try_into().unwrap()), C::CODE);
    assert_eq!(&bytes[8..], body);
    // The server reads back the same code and payload.
    let mut buf = BytesMut::from(&bytes[..]);
    assert_eq!(LegacyRequestCodec::default().decode(&mut buf).unwrap(), Some(request(C::CODE, &body)));
    assert!(buf.is_empty());
}

#[test]
fn encode_request_writes_length_code_body() {
    check_command(&Ping);
    check_command(&GetClusterMetadata);
    check_command(&GetMe);
    check_command(&LogoutUser);
    check_command(&GetPersonalAccessTokens);
    check_command(&login("iggy", "iggy", Some("0.10.0")));
    check_command(&login("üser", "", None));
    check_command(&CreatePersonalAccessToken { name: "n".repeat(255), expiry_us: 0 });
    check_command(&DeletePersonalAccessToken { name: "tok-1h".to_owned() });
    check_command(&LoginWithPersonalAccessToken {
        token: Secret::from(latchkey_protocol::token::encode(&[1; 32])),
    });
}

#[test]
fn requests_round_trip_through_encode_request_and_the_request_codec() {
    let requests = [
        Request::Ping,
        Request::GetClusterMetadata,
        Request::GetMe,
        Request::LogoutUser,
        Request::GetPersonalAccessTokens,
        Request::LoginUser(login("iggy", "secret", Some("0.10.0"))),
        Request::CreatePersonalAccessToken(CreatePersonalAccessToken {
            name: "tok".to_owned(),
            expiry_us: 3_600_000_000,
        }),
        Request::DeletePersonalAccessToken(DeletePersonalAccessToken { name: "tok".to_owned() }),
        Request::LoginWithPersonalAccessToken(LoginWithPersonalAccessToken {
            token: Secret::from("lk_x".to_owned()),
        }),
    ];
    let mut buf = BytesMut::new();
    for request in &requests {
        match request {
            Request::Ping => put_request(&Ping, &mut buf),
            Request::GetClusterMetadata => put_request(&GetClusterMetadata, &mut buf),
            Request::GetMe => put_request(&GetMe, &mut buf),
            Request::LogoutUser => put_request(&LogoutUser, &mut buf),
            Request::GetPersonalAccessTokens => put_request(&GetPersonalAccessTokens, &mut buf),
            Request::LoginUser(body) => put_request(body, &mut buf),
            Request::CreatePersonalAccessToken(body) => put_request(body, &mut buf),
            Request::DeletePersonalAccessToken(body) => put_request(body, &mut buf),
            Request::LoginWithPersonalAccessToken(body) => put_request(body, &mut buf),
            _ => unreachable!("not in this list"),
        }
    }
    let decoded: Vec<Request> = drain(&mut LegacyRequestCodec::default(), &mut buf)
        .into_iter()
        .map(|inbound| match inbound {
            Inbound::Request { code, payload } => Request::decode(code, &payload).unwrap(),
            Inbound::Malformed { length } => panic!("malformed {length}"),
        })
        .collect();
    assert_eq!(decoded, requests);
    assert!(buf.is_empty());
}

// ---------------------------------------------------------------------------
// LegacyRequestCodec decode
// ---------------------------------------------------------------------------

#[test]
fn request_codec_partial_header_is_none_and_consumes_nothing() {
    let bytes = request_frame(38, &LOGIN_FRAME[8..]);
    for i in 0..HEADER_BYTES {
        let mut buf = BytesMut::from(&bytes[..i]);
        assert_eq!(LegacyRequestCodec::default().decode(&mut buf).unwrap(), None);
        assert_eq!(&buf[..], &bytes[..i]);
    }
    // Also for a header whose length field is below 4.
    for i in 0..HEADER_BYTES {
        let mut buf = BytesMut::from(&[2, 0, 0, 0, 1, 0, 0, 0][..i]);
        assert_eq!(LegacyRequestCodec::default().decode(&mut buf).unwrap(), None);
        assert_eq!(buf.len(), i);
    }
}

#[test]
fn request_codec_partial_payload_is_none_and_consumes_nothing() {
    let bytes = LOGIN_FRAME;
    for i in HEADER_BYTES..bytes.len() {
        let mut buf = BytesMut::from(&bytes[..i]);
        assert_eq!(LegacyRequestCodec::default().decode(&mut buf).unwrap(), None);
        assert_eq!(&buf[..], &bytes[..i]);
    }
}

#[test]
fn request_codec_length_below_4_is_malformed_and_consumes_the_header() {
    for length in 0..4u32 {
        for code in [0u32, 1, 38, 0xdead_beef] {
            let mut buf = BytesMut::new();
            buf.extend_from_slice(&frame(length, code, &[]));
            buf.extend_from_slice(&[0x04, 0, 0, 0, 0x01, 0, 0, 0]); // Ping
            buf.extend_from_slice(&CREATE_FRAME);
            let mut codec = LegacyRequestCodec::default();
            assert_eq!(codec.decode(&mut buf).unwrap(), Some(Inbound::Malformed { length }));
            // Exactly the 8-byte header was consumed.
            assert_eq!(buf.len(), 8 + CREATE_FRAME.len());
            assert_eq!(codec.decode(&mut buf).unwrap(), Some(request(1, &[])));
            assert_eq!(codec.decode(&mut buf).unwrap(), Some(request(42, &CREATE_FRAME[8..])));
            assert_eq!(codec.decode(&mut buf).unwrap(), None);
            assert!(buf.is_empty());
        }
    }
}

#[test]
fn request_codec_malformed_header_bytes_after_it_are_read_as_a_frame() {
    // Spec §1.1: after a length < 4, reading resumes at the next byte,
    // whatever a sender meant to follow.
    let mut buf = BytesMut::new();
    buf.extend_from_slice(&frame(2, 1, &[]));
    buf.extend_from_slice(&request_frame(43, &[3, b'a', b'b', b'c']));
    assert_eq!(
        drain(&mut LegacyRequestCodec::default(), &mut buf),
        [Inbound::Malformed { length: 2 }, request(43, &[3, b'a', b'b', b'c'])]
    );
}

#[test]
fn request_codec_too_large_is_an_error_without_buffering() {
    for (max, declared) in [
        (REQUEST_LENGTH_MAX_DEFAULT, REQUEST_LENGTH_MAX_DEFAULT + 1),
        (REQUEST_LENGTH_MAX_DEFAULT, u32::MAX),
        (100, 101),
        (100, 10 * 1024 * 1024 + 4),
    ] {
        let mut buf = BytesMut::from(&frame(declared, 38, &[1, 2, 3])[..]);
        let before = buf.capacity();
        let mut codec = LegacyRequestCodec::new(max);
        match codec.decode(&mut buf) {
            Err(FrameError::TooLarge { declared: got, max: got_max }) => {
                assert_eq!(got, declared);
                assert_eq!(got_max, max);
            }
            other => panic!("max {max}, declared {declared}: {other:?}"),
        }
        assert_eq!(buf.capacity(), before, "buffer grew");
        assert!(buf.capacity() < declared as usize);
    }
}

#[test]
fn request_codec_length_at_the_max_is_accepted() {
    for max in [4u32, 5, 100, 4096] {
        let payload = vec![0xab; (max - 4) as usize];
        let bytes = request_frame(7777, &payload);
        let mut codec = LegacyRequestCodec::new(max);
        // Header only: waits for the rest.
        let mut buf = BytesMut::from(&bytes[..HEADER_BYTES]);
        if max > 4 {
            assert_eq!(codec.decode(&mut buf).unwrap(), None);
        }
        buf.extend_from_slice(&bytes[HEADER_BYTES..]);
        assert_eq!(codec.decode(&mut buf).unwrap(), Some(request(7777, &payload)));
        // One more byte is too large.
        let mut buf = BytesMut::from(&frame(max + 1, 1, &[])[..]);
        assert!(matches!(codec.decode(&mut buf), Err(FrameError::TooLarge { .. })));
    }
}

#[test]
fn request_codec_max_below_4_is_raised_to_4() {
    for max in [0u32, 1, 3] {
        let mut codec = LegacyRequestCodec::new(max);
        let mut buf = BytesMut::from(&[0x04, 0, 0, 0, 0x01, 0, 0, 0][..]);
        assert_eq!(codec.decode(&mut buf).unwrap(), Some(request(1, &[])));
        let mut buf = BytesMut::from(&frame(5, 1, &[0])[..]);
        match codec.decode(&mut buf) {
            Err(FrameError::TooLarge { declared: 5, max: 4 }) => {}
            other => panic!("{other:?}"),
        }
    }
}

/// A stream of frames of every kind and the items it decodes to.
fn request_stream() -> (Vec<u8>, Vec<Inbound>) {
    let parts: Vec<(Vec<u8>, Inbound)> = vec![
        (request_frame(1, &[]), request(1, &[])),
        (LOGIN_FRAME.to_vec(), request(38, &LOGIN_FRAME[8..])),
        (frame(0, 0, &[]), Inbound::Malformed { length: 0 }),
        (CREATE_FRAME.to_vec(), request(42, &CREATE_FRAME[8..])),
        (frame(3, 99, &[]), Inbound::Malformed { length: 3 }),
        (request_frame(43, b"\x06tok-1h"), request(43, b"\x06tok-1h")),
        (request_frame(999, &[1, 2, 3]), request(999, &[1, 2, 3])),
        (request_frame(41, &[]), request(41, &[])),
        (request_frame(44, &[0xaa; 300]), request(44, &[0xaa; 300])),
    ];
    let mut bytes = Vec::new();
    let mut items = Vec::new();
    for (part, item) in parts {
        bytes.extend(part);
        items.push(item);
    }
    (bytes, items)
}

#[test]
fn request_codec_several_frames_in_one_buffer_decode_in_order() {
    let (bytes, items) = request_stream();
    let mut buf = BytesMut::from(&bytes[..]);
    assert_eq!(drain(&mut LegacyRequestCodec::default(), &mut buf), items);
    assert!(buf.is_empty());
}

#[test]
fn request_codec_stream_split_at_every_byte_decodes_the_same() {
    let (bytes, items) = request_stream();
    for split in 0..=bytes.len() {
        let mut codec = LegacyRequestCodec::default();
        let mut buf = BytesMut::from(&bytes[..split]);
        let mut got = drain(&mut codec, &mut buf);
        buf.extend_from_slice(&bytes[split..]);
        got.extend(drain(&mut codec, &mut buf));
        assert_eq!(got, items, "split at {split}");
        assert!(buf.is_empty());
    }
}

#[test]
fn request_codec_stream_fed_one_byte_at_a_time() {
    let (bytes, items) = request_stream();
    let mut codec = LegacyRequestCodec::default();
    let mut buf = BytesMut::new();
    let mut got = Vec::new();
    for &byte in &bytes {
        buf.extend_from_slice(&[byte]);
        got.extend(drain(&mut codec, &mut buf));
    }
    assert_eq!(got, items);
    assert!(buf.is_empty());
}

/// Every frame `frame_at_front` finds in `buf`, read where it lies and then
/// advanced past, as the server does.
fn drain_in_place(codec: &LegacyRequestCodec, buf: &mut BytesMut) -> Vec<Inbound> {
    let mut items = Vec::new();
    loop {
        let before = buf.len();
        let Some(frame) = codec.frame_at_front(buf).unwrap() else { break };
        assert_eq!(buf.len(), before, "finding a frame consumes nothing");
        items.push(match frame {
            FrameAt::Request { code, bytes } => request(code, &buf[HEADER_BYTES..bytes]),
            FrameAt::Malformed { length } => Inbound::Malformed { length },
        });
        buf.advance(frame.bytes());
    }
    items
}

#[test]
fn frames_found_in_place_are_the_frames_decode_splits_off_at_every_split() {
    let (bytes, items) = request_stream();
    let codec = LegacyRequestCodec::default();
    for split in 0..=bytes.len() {
        let mut buf = BytesMut::from(&bytes[..split]);
        let mut got = drain_in_place(&codec, &mut buf);
        buf.extend_from_slice(&bytes[split..]);
        got.extend(drain_in_place(&codec, &mut buf));
        assert_eq!(got, items, "split at {split}");
        assert!(buf.is_empty());
    }
    // A declared length over the maximum is the same error, nothing consumed.
    let mut too_large = BytesMut::from(&frame(REQUEST_LENGTH_MAX_DEFAULT + 1, 1, &[])[..]);
    let error = codec.frame_at_front(&mut too_large).unwrap_err();
    assert!(matches!(error, FrameError::TooLarge { .. }), "{error}");
    assert_eq!(too_large.len(), HEADER_BYTES);
}

#[test]
fn request_codec_single_frame_split_at_every_boundary_decodes_once_complete() {
    for whole in [&LOGIN_FRAME[..], &CREATE_FRAME[..], &[4, 0, 0, 0, 1, 0, 0, 0]] {
        for split in 0..whole.len() {
            let mut codec = LegacyRequestCodec::default();
            let mut buf = BytesMut::from(&whole[..split]);
            assert_eq!(codec.decode(&mut buf).unwrap(), None, "split {split}");
            assert_eq!(buf.len(), split);
            buf.extend_from_slice(&whole[split..]);
            let Some(Inbound::Request { payload, .. }) = codec.decode(&mut buf).unwrap() else {
                panic!("split {split}: no request");
            };
            assert_eq!(&payload[..], &whole[8..]);
            assert_eq!(codec.decode(&mut buf).unwrap(), None);
        }
    }
}

// ---------------------------------------------------------------------------
// LegacyReplyCodec decode
// ---------------------------------------------------------------------------

fn reply_stream() -> (Vec<u8>, Vec<InboundReply>) {
    let token = vec![b'k'; 69];
    let parts: Vec<(u32, Vec<u8>)> = vec![
        (0, vec![]),
        (0, vec![0, 0, 0, 0]),
        (42, vec![]),
        (0, token),
        (3, vec![]),
        (0, vec![0x11; 1000]),
        (0, vec![9]), // a 1-byte payload is still read whole by this codec
        (40, vec![]),
    ];
    let mut bytes = Vec::new();
    let mut items = Vec::new();
    for (status, payload) in parts {
        bytes.extend(reply_frame(status, &payload));
        items.push(reply(status, &payload));
    }
    (bytes, items)
}

#[test]
fn reply_codec_partial_reply_is_none_and_consumes_nothing() {
    let bytes = reply_frame(0, &[1, 2, 3, 4]);
    for i in 0..bytes.len() {
        let mut buf = BytesMut::from(&bytes[..i]);
        assert_eq!(LegacyReplyCodec::default().decode(&mut buf).unwrap(), None);
        assert_eq!(&buf[..], &bytes[..i]);
    }
}

#[test]
fn reply_codec_several_replies_in_one_buffer_decode_in_order() {
    let (bytes, items) = reply_stream();
    let mut buf = BytesMut::from(&bytes[..]);
    assert_eq!(drain(&mut LegacyReplyCodec::default(), &mut buf), items);
    assert!(buf.is_empty());
}

#[test]
fn reply_codec_stream_split_at_every_byte_decodes_the_same() {
    let (bytes, items) = reply_stream();
    for split in 0..=bytes.len() {
        let mut codec = LegacyReplyCodec::default();
        let mut buf = BytesMut::from(&bytes[..split]);
        let mut got = drain(&mut codec, &mut buf);
        buf.extend_from_slice(&bytes[split..]);
        got.extend(drain(&mut codec, &mut buf));
        assert_eq!(got, items, "split at {split}");
        assert!(buf.is_empty());
    }
    let mut codec = LegacyReplyCodec::default();
    let mut buf = BytesMut::new();
    let mut got = Vec::new();
    for &byte in &bytes {
        buf.extend_from_slice(&[byte]);
        got.extend(drain(&mut codec, &mut buf));
    }
    assert_eq!(got, items);
}

#[test]
fn reply_codec_too_large_is_an_error_without_buffering() {
    for (max, declared) in [
        (REPLY_LENGTH_MAX_DEFAULT, REPLY_LENGTH_MAX_DEFAULT + 1),
        (REPLY_LENGTH_MAX_DEFAULT, u32::MAX),
        (0, 1),
        (10, 11),
    ] {
        let mut buf = BytesMut::from(&frame(0, declared, &[1, 2])[..]);
        let before = buf.capacity();
        match LegacyReplyCodec::new(max).decode(&mut buf) {
            Err(FrameError::TooLarge { declared: got, max: got_max }) => {
                assert_eq!((got, got_max), (declared, max));
            }
            other => panic!("max {max}, declared {declared}: {other:?}"),
        }
        assert_eq!(buf.capacity(), before, "buffer grew");
    }
    // Exactly the max is read.
    let mut buf = BytesMut::from(&reply_frame(0, &[7; 10])[..]);
    assert_eq!(LegacyReplyCodec::new(10).decode(&mut buf).unwrap(), Some(reply(0, &[7; 10])));
    let mut buf = BytesMut::from(&reply_frame(20, &[])[..]);
    assert_eq!(LegacyReplyCodec::new(0).decode(&mut buf).unwrap(), Some(reply(20, &[])));
}

#[test]
fn encoded_replies_decode_with_the_reply_codec() {
    let mut buf = BytesMut::new();
    encode_reply(Reply::Ok(&IdentityInfo { user_id: 12 }), &mut buf);
    encode_reply(Reply::Ok(&RawPersonalAccessToken { token: Secret::from("lk_abc".to_owned()) }), &mut buf);
    encode_reply(Reply::Err(ErrorCode::PersonalAccessTokenExpired), &mut buf);
    assert_eq!(
        drain(&mut LegacyReplyCodec::default(), &mut buf),
        [reply(0, &[12, 0, 0, 0]), reply(0, b"\x06lk_abc"), reply(54, &[]),]
    );
}

// ---------------------------------------------------------------------------
// Request::decode
// ---------------------------------------------------------------------------

const SERVED: [u32; 9] = [1, 12, 20, 38, 39, 41, 42, 43, 44];
const BODY_CODES: [u32; 4] = [38, 42, 43, 44];
const EMPTY_CODES: [u32; 5] = [1, 12, 20, 39, 41];

#[test]
fn unknown_codes_are_invalid_command() {
    for code in [0u32, 2, 9, 15, 19, 23, 30, 46, 99, 105, 206, 401, 500, 607, 1000, u32::MAX] {
        for payload in [&[][..], &[1, 2, 3]] {
            assert_eq!(Request::decode(code, payload), Err(ErrorCode::InvalidCommand), "code {code}");
        }
    }
}

#[test]
fn known_unserved_codes_are_unserved_and_their_body_is_not_read() {
    for code in [10u32, 11, 13, 14, 21, 22, 31, 37, 40, 45, 100, 104, 121, 200, 201, 305, 402, 503, 600, 606]
    {
        for payload in [&[][..], &[0][..], &[0xff; 100][..]] {
            assert_eq!(Request::decode(code, payload), Ok(Request::Unserved(code)), "code {code}");
        }
        assert!(!Request::Unserved(code).allowed_before_login());
    }
}

#[test]
fn empty_payload_for_body_commands_is_invalid_command() {
    for code in BODY_CODES {
        assert_eq!(Request::decode(code, &[]), Err(ErrorCode::InvalidCommand), "code {code}");
    }
}

#[test]
fn zero_length_name_or_token_is_invalid_format() {
    let expiry = 3_600_000_000u64.to_le_bytes();
    let mut create = vec![0];
    create.extend_from_slice(&expiry);
    assert_eq!(Request::decode(42, &create), Err(ErrorCode::InvalidFormat));
    assert_eq!(Request::decode(42, &[0]), Err(ErrorCode::InvalidFormat));
    assert_eq!(Request::decode(43, &[0]), Err(ErrorCode::InvalidFormat));
    assert_eq!(Request::decode(44, &[0]), Err(ErrorCode::InvalidFormat));
    // Checked before any trailing-byte rule.
    assert_eq!(Request::decode(43, &[0, b'a', b'b']), Err(ErrorCode::InvalidFormat));
    assert_eq!(Request::decode(44, &[0, b'a', b'b']), Err(ErrorCode::InvalidFormat));
}

#[test]
fn invalid_utf8_is_invalid_format() {
    let bad = [2u8, 0xc3, 0x28];
    assert_eq!(Request::decode(43, &bad), Err(ErrorCode::InvalidFormat));
    assert_eq!(Request::decode(44, &bad), Err(ErrorCode::InvalidFormat));
    let mut create = bad.to_vec();
    create.extend_from_slice(&[0; 8]);
    assert_eq!(Request::decode(42, &create), Err(ErrorCode::InvalidFormat));
    let mut login = bad.to_vec();
    login.extend_from_slice(&[4, b'i', b'g', b'g', b'y']);
    assert_eq!(Request::decode(38, &login), Err(ErrorCode::InvalidFormat));
}

/// The request the spec's example body for `code` decodes to: `LOGIN_FRAME`,
/// `CREATE_FRAME`, a delete of "tok-1h" and a token login with "lk_x".
fn spec_example(code: u32) -> Request {
    match code {
        38 => Request::LoginUser(login("iggy", "iggy", Some("0.10.0"))),
        42 => Request::CreatePersonalAccessToken(CreatePersonalAccessToken {
            name: "tok-1h".to_owned(),
            expiry_us: 3_600_000_000,
        }),
        43 => Request::DeletePersonalAccessToken(DeletePersonalAccessToken { name: "tok-1h".to_owned() }),
        44 => Request::LoginWithPersonalAccessToken(LoginWithPersonalAccessToken {
            token: Secret::from("lk_x".to_owned()),
        }),
        _ => unreachable!("no example for code {code}"),
    }
}

#[test]
fn trailing_bytes_are_invalid_command() {
    let bodies: [(u32, Vec<u8>); 4] = [
        (38, {
            let mut body = LOGIN_FRAME[8..].to_vec();
            body.push(0);
            body
        }),
        (42, {
            let mut body = CREATE_FRAME[8..].to_vec();
            body.push(0);
            body
        }),
        (43, b"\x06tok-1h\x00".to_vec()),
        (44, b"\x04lk_x\xff\xff".to_vec()),
    ];
    for (code, body) in bodies {
        assert_eq!(Request::decode(code, &body), Err(ErrorCode::InvalidCommand), "code {code}");
        // Without the extra byte(s) it decodes.
        let exact = match code {
            44 => &body[..5],
            _ => &body[..body.len() - 1],
        };
        assert_eq!(Request::decode(code, exact), Ok(spec_example(code)), "code {code}");
    }
    // LoginUser: 1–3 bytes after the password are a cut version length.
    for extra in 1..4 {
        let mut body = LOGIN_FRAME[8..18].to_vec();
        body.extend(std::iter::repeat_n(0, extra));
        assert_eq!(Request::decode(38, &body), Err(ErrorCode::InvalidCommand));
    }
}

#[test]
fn truncated_bodies_are_invalid_command() {
    let cases: [(u32, &[u8], &[usize]); 4] = [
        // LoginUser may end after the password (10) or the version (20).
        (38, &LOGIN_FRAME[8..], &[10, 20]),
        (42, &CREATE_FRAME[8..], &[]),
        (43, b"\x06tok-1h", &[]),
        (44, b"\x04lk_x", &[]),
    ];
    for (code, body, valid) in cases {
        assert_eq!(Request::decode(code, body), Ok(spec_example(code)), "code {code}");
        for i in 0..body.len() {
            let result = Request::decode(code, &body[..i]);
            if valid.contains(&i) {
                // Only LoginUser has shorter valid forms: without the
                // context, and without the version too.
                let version = (i == 20).then_some("0.10.0");
                assert_eq!(result, Ok(Request::LoginUser(login("iggy", "iggy", version))), "prefix {i}");
            } else {
                assert_eq!(result, Err(ErrorCode::InvalidCommand), "code {code} prefix {i}");
            }
        }
    }
}

#[test]
fn empty_commands_with_a_payload_are_invalid_command() {
    for code in EMPTY_CODES {
        for payload in [&[0u8][..], &[1, 2, 3, 4], &[0; 100]] {
            assert_eq!(Request::decode(code, payload), Err(ErrorCode::InvalidCommand), "code {code}");
        }
    }
    assert_eq!(Request::decode(1, &[]), Ok(Request::Ping));
    assert_eq!(Request::decode(12, &[]), Ok(Request::GetClusterMetadata));
    assert_eq!(Request::decode(20, &[]), Ok(Request::GetMe));
    assert_eq!(Request::decode(39, &[]), Ok(Request::LogoutUser));
    assert_eq!(Request::decode(41, &[]), Ok(Request::GetPersonalAccessTokens));
}

#[test]
fn served_codes_decode_to_served_requests() {
    let payloads: [(u32, &[u8]); 9] = [
        (1, &[]),
        (12, &[]),
        (20, &[]),
        (38, &LOGIN_FRAME[8..]),
        (39, &[]),
        (41, &[]),
        (42, &CREATE_FRAME[8..]),
        (43, b"\x06tok-1h"),
        (44, b"\x04lk_x"),
    ];
    for (code, payload) in payloads {
        assert!(SERVED.contains(&code));
        let request = Request::decode(code, payload).unwrap();
        assert!(!matches!(request, Request::Unserved(_)), "code {code}");
    }
}

#[test]
fn only_ping_and_the_logins_are_allowed_before_login() {
    let allowed = [
        Request::Ping,
        Request::LoginUser(login("iggy", "iggy", None)),
        Request::LoginWithPersonalAccessToken(LoginWithPersonalAccessToken {
            token: Secret::from("lk_x".to_owned()),
        }),
    ];
    for request in &allowed {
        assert!(request.allowed_before_login(), "{request:?}");
    }
    let refused = [
        Request::GetClusterMetadata,
        Request::GetMe,
        Request::LogoutUser,
        Request::GetPersonalAccessTokens,
        Request::CreatePersonalAccessToken(CreatePersonalAccessToken {
            name: "tok".to_owned(),
            expiry_us: 0,
        }),
        Request::DeletePersonalAccessToken(DeletePersonalAccessToken { name: "tok".to_owned() }),
        Request::Unserved(10),
        Request::Unserved(40),
        Request::Unserved(45),
    ];
    for request in &refused {
        assert!(!request.allowed_before_login(), "{request:?}");
    }
}
