//! Unit tests for the 0.11 framing: byte vectors from the spec (§2.9–§2.11,
//! §2.14), round trips, every truncation point, header validation and the
//! frame decoders' size checks.

use std::fmt;

use bytes::BytesMut;
use tokio_util::codec::Decoder;

use super::*;
use crate::body::{
    CreatePersonalAccessToken, DeletePersonalAccessToken, Empty, RawPersonalAccessToken, decode_exact,
    encode_to_vec,
};

const CLIENT: u128 = 0x0123_4567_89ab_cdef_fedc_ba98_7654_3210;

/// A zeroed 256-byte header with `fields` set: `(offset, bytes)`.
fn header_bytes(fields: &[(usize, &[u8])]) -> [u8; HEADER_BYTES] {
    let mut header = [0u8; HEADER_BYTES];
    for (at, bytes) in fields {
        header[*at..*at + bytes.len()].copy_from_slice(bytes);
    }
    header
}

fn rust_sdk_version() -> ClientVersionInfo {
    ClientVersionInfo { protocol_version: 11264, sdk_name: "rust-sdk".into(), sdk_version: "0.11.0".into() }
}

/// The 34-byte password login body the 0.11.0 SDK sends for iggy/iggy (§2.9).
fn captured_login_body() -> Vec<u8> {
    let mut body = vec![0x00, 0x2c, 0x00, 0x00];
    body.push(8);
    body.extend_from_slice(b"rust-sdk");
    body.push(6);
    body.extend_from_slice(b"0.11.0");
    body.push(4);
    body.extend_from_slice(b"iggy");
    body.push(4);
    body.extend_from_slice(b"iggy");
    body.extend_from_slice(&[0, 0, 0, 0]);
    body
}

/// Every strict prefix of a valid encoding fails to decode, and never panics.
fn assert_every_truncation_fails<T: WireDecode + fmt::Debug>(bytes: &[u8]) {
    for cut in 0..bytes.len() {
        let result = T::decode(&bytes[..cut]);
        assert!(result.is_err(), "decoded from {cut} of {} bytes: {result:?}", bytes.len());
    }
}

fn round_trip<T: WireEncode + WireDecode + PartialEq + fmt::Debug>(value: &T) -> Vec<u8> {
    let bytes = encode_to_vec(value);
    assert_eq!(bytes.len(), value.encoded_size());
    let (decoded, used) = T::decode(&bytes).expect("decode own encoding");
    assert_eq!(&decoded, value);
    assert_eq!(used, bytes.len());
    assert_every_truncation_fails::<T>(&bytes);
    bytes
}

// --- spec vectors ---------------------------------------------------------

#[test]
fn ping_request_matches_the_spec_example() {
    // §2.11: zero everywhere except size, command, client, request, operation, code.
    let expected = header_bytes(&[
        (48, &[0x00, 0x01, 0x00, 0x00]),
        (60, &[0x05]),
        (128, &CLIENT.to_le_bytes()),
        (168, &[1, 0, 0, 0, 0, 0, 0, 0]),
        (176, &[0x02]),
        (196, &[1, 0, 0, 0]),
    ]);
    let header = RequestHeader {
        client: CLIENT,
        request: 1,
        operation: operation::NON_REPLICATED,
        code: crate::codes::PING,
        ..RequestHeader::default()
    };
    let mut encoded = BytesMut::new();
    encode_request(&header, &Empty, &mut encoded);
    assert_eq!(&encoded[..], &expected[..]);

    let decoded = RequestHeader::decode(&expected).unwrap();
    assert_eq!(decoded, RequestHeader { size: 256, ..header });
}

#[test]
fn ping_reply_matches_the_spec_example_plus_the_optional_echoes() {
    let request = RequestHeader::decode(&header_bytes(&[
        (48, &[0x00, 0x01, 0x00, 0x00]),
        (60, &[0x05]),
        (128, &CLIENT.to_le_bytes()),
        (168, &[1, 0, 0, 0, 0, 0, 0, 0]),
        (176, &[0x02]),
        (196, &[1, 0, 0, 0]),
    ]))
    .unwrap();
    let mut encoded = BytesMut::new();
    encode_reply(&ReplyHeader::answering(&request, 0, 0), &Empty, &mut encoded);
    // §2.11: size 256, command 8, operation 2; the client (160) and request
    // (200) echoes are the optional ones the spec allows.
    let expected = header_bytes(&[
        (48, &[0x00, 0x01, 0x00, 0x00]),
        (60, &[0x08]),
        (160, &CLIENT.to_le_bytes()),
        (200, &[1, 0, 0, 0, 0, 0, 0, 0]),
        (208, &[0x02]),
    ]);
    assert_eq!(&encoded[..], &expected[..]);
}

#[test]
fn captured_login_body_decodes_and_its_checksum_matches() {
    let body = captured_login_body();
    assert_eq!(body.len(), 34);
    assert_eq!(request_checksum(&body), 0x8fde_203c_2a3f_8095);
    let login: LoginRegister = decode_exact(&body).unwrap();
    assert_eq!(login.client_version, rust_sdk_version());
    assert_eq!((login.username.as_str(), login.password.expose()), ("iggy", "iggy"));
    assert_eq!(login.context, None);
    // And it re-encodes byte for byte.
    assert_eq!(encode_to_vec(&login), body);
    // Not a PAT body.
    assert!(LoginRegisterWithPat::decode(&body).is_err());

    // The whole frame: size 290, checksum at 144..152, zeros at 152..160.
    let header = RequestHeader { client: CLIENT, operation: operation::REGISTER, ..RequestHeader::default() };
    let mut frame = BytesMut::new();
    encode_request(&header, &login, &mut frame);
    assert_eq!(frame.len(), 290);
    assert_eq!(&frame[48..52], &290u32.to_le_bytes());
    assert_eq!(&frame[144..152], &0x8fde_203c_2a3f_8095u64.to_le_bytes());
    assert_eq!(&frame[152..160], &[0u8; 8]);
    assert_eq!(&frame[256..], &body[..]);
}

#[test]
fn logout_checksum_is_xxh3_of_the_empty_body() {
    assert_eq!(request_checksum(&[]), 0x2d06_8005_38d3_94c2);
    let header = RequestHeader {
        client: CLIENT,
        operation: operation::LOGOUT,
        session: 7,
        request: 3,
        ..RequestHeader::default()
    };
    let mut frame = BytesMut::new();
    encode_request(&header, &Empty, &mut frame);
    assert_eq!(frame.len(), HEADER_BYTES);
    assert_eq!(&frame[144..160], &0x2d06_8005_38d3_94c2u128.to_le_bytes());
    // The NR code bytes stay zero for a replicated operation.
    assert_eq!(&frame[196..200], &[0u8; 4]);
}

#[test]
fn pat_bodies_from_the_spec_decode_with_the_shared_codecs() {
    // §2.14 captures: the legacy body types read the 0.11 bytes unchanged.
    let mut never = vec![9];
    never.extend_from_slice(b"tok-never");
    never.extend_from_slice(&[0xff; 8]);
    let create: CreatePersonalAccessToken = decode_exact(&never).unwrap();
    assert_eq!(create, CreatePersonalAccessToken { name: "tok-never".into(), expiry_us: u64::MAX });

    let hour = [6, b't', b'o', b'k', b'-', b'1', b'h', 0x00, 0xa4, 0x93, 0xd6, 0, 0, 0, 0];
    let create: CreatePersonalAccessToken = decode_exact(&hour).unwrap();
    assert_eq!(create, CreatePersonalAccessToken { name: "tok-1h".into(), expiry_us: 3_600_000_000 });

    let delete: DeletePersonalAccessToken = decode_exact(&[3, b'a', b'b', b'c']).unwrap();
    assert_eq!(delete.name, "abc");
}

#[test]
fn create_reply_is_the_raw_token_behind_an_accepted_section() {
    // §2.14: with a 68-character token the body is 73 bytes (size 329).
    let token = RawPersonalAccessToken { token: Secret::from("A".repeat(67) + "=") };
    let body = encode_to_vec(&Accepted(&token));
    assert_eq!(body.len(), 73);
    assert_eq!(&body[..5], &[0, 0, 0, 0, 68]);
    let request = RequestHeader {
        client: CLIENT,
        operation: operation::CREATE_PERSONAL_ACCESS_TOKEN,
        session: 1,
        request: 1,
        ..RequestHeader::default()
    };
    let mut frame = BytesMut::new();
    encode_reply(&ReplyHeader::answering(&request, 1, 0), &Accepted(&token), &mut frame);
    assert_eq!(frame.len(), 329);
    assert_eq!(frame[offset::REPLY_OPERATION], 146);
}

// --- result sections ------------------------------------------------------

#[test]
fn result_sections_encode_as_the_spec_shows() {
    assert_eq!(encode_to_vec(&Accepted(&Empty)), [0, 0, 0, 0]);
    let rejected = encode_to_vec(&Rejected(ErrorCode::PersonalAccessTokenAlreadyExists));
    assert_eq!(rejected, [1, 0, 0, 0, 0, 0, 0, 0, 51, 0, 0, 0]);

    assert_eq!(decode_result(&[0, 0, 0, 0, 9, 8]), Ok(Ok(&[9u8, 8][..])));
    assert_eq!(decode_result(&rejected), Ok(Err(51)));
    // A first result of 0 reads as success, payload after the entries.
    assert_eq!(decode_result(&[1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7]), Ok(Ok(&[7u8][..])));
    // Cut short anywhere, including the SDK's "empty body on a result-framed
    // operation": an error, not a panic.
    for cut in 0..rejected.len() {
        assert!(decode_result(&rejected[..cut]).is_err(), "cut {cut}");
    }
    assert!(decode_result(&[0xff, 0xff, 0xff, 0xff]).is_err());
}

// --- login bodies ---------------------------------------------------------

#[test]
fn login_bodies_round_trip_and_fail_at_every_truncation() {
    round_trip(&rust_sdk_version());
    round_trip(&LoginRegister {
        client_version: rust_sdk_version(),
        username: "alice".into(),
        password: "secret-password".to_owned().into(),
        context: None,
    });
    round_trip(&LoginRegister {
        client_version: rust_sdk_version(),
        username: "alice".into(),
        password: Secret::from(String::new()),
        context: Some("ctx".into()),
    });
    round_trip(&LoginRegisterWithPat {
        client_version: rust_sdk_version(),
        token: Secret::from("lk_".to_owned() + &"a".repeat(49)),
        context: None,
    });
    round_trip(&LoginRegisterWithPat {
        client_version: rust_sdk_version(),
        token: Secret::from(String::new()),
        context: Some("c".into()),
    });
    let response = LoginRegisterResponse {
        user_id: 3,
        session: 42,
        server_protocol_version: PROTOCOL_VERSION,
        server_version: "latchkey-0.1.0".into(),
    };
    let bytes = round_trip(&response);
    assert_eq!(&bytes[..4], &3u32.to_le_bytes());
    assert_eq!(&bytes[4..12], &42u64.to_le_bytes());
    assert_eq!(&bytes[12..16], &11264u32.to_le_bytes());
    assert_eq!(bytes[16] as usize, "latchkey-0.1.0".len());
}

#[test]
fn zero_length_sdk_names_and_usernames_are_invalid_format() {
    let mut body = 11264u32.to_le_bytes().to_vec();
    body.extend_from_slice(&[0, 1, b'x']);
    assert_eq!(ClientVersionInfo::decode(&body), Err(ErrorCode::InvalidFormat));
    let mut body = encode_to_vec(&rust_sdk_version());
    body.extend_from_slice(&[0, 4, b'i', b'g', b'g', b'y', 0, 0, 0, 0]);
    assert_eq!(LoginRegister::decode(&body).unwrap_err(), ErrorCode::InvalidFormat);
}

#[test]
fn the_two_login_shapes_do_not_parse_as_each_other() {
    // §2.9: a PAT body leaves too few bytes for the password shape's context
    // length, whatever the token length; a password body makes a huge
    // "context length" out of the password's first bytes.
    for token_len in [0usize, 1, 3, 52, 68, 255] {
        let pat = LoginRegisterWithPat {
            client_version: rust_sdk_version(),
            token: Secret::from("t".repeat(token_len)),
            context: None,
        };
        let bytes = encode_to_vec(&pat);
        assert!(LoginRegister::decode(&bytes).is_err(), "token of {token_len} bytes parsed as a password");
    }
    for password in ["abc", "iggy", "correct horse battery staple", &"p".repeat(100)] {
        let login = LoginRegister {
            client_version: rust_sdk_version(),
            username: "iggy".into(),
            password: password.to_owned().into(),
            context: None,
        };
        let bytes = encode_to_vec(&login);
        assert!(LoginRegisterWithPat::decode(&bytes).is_err(), "password {password:?} parsed as a token");
    }
}

#[test]
fn secrets_are_redacted_in_debug_output() {
    let login = LoginRegister {
        client_version: rust_sdk_version(),
        username: "iggy".into(),
        password: "hunter2-secret".to_owned().into(),
        context: None,
    };
    let pat = LoginRegisterWithPat {
        client_version: rust_sdk_version(),
        token: "lk_secret-token".to_owned().into(),
        context: None,
    };
    assert!(!format!("{login:?}").contains("hunter2"));
    assert!(!format!("{pat:?}").contains("secret-token"));
}

// --- versions -------------------------------------------------------------

#[test]
fn versions_pack_and_gate_as_iggy_does() {
    assert_eq!(PROTOCOL_VERSION, 11264);
    assert_eq!(pack_version(0, 10, 0), Some(10240));
    assert_eq!(pack_version(0, 1024, 0), None);
    assert_eq!(unpack_version(pack_version(1, 2, 3).unwrap()), (1, 2, 3));
    assert_eq!(protocol_version_min(PROTOCOL_VERSION + 5), 11264);
    for client in [11264, 11265, 12287] {
        assert!(is_protocol_compatible(client, PROTOCOL_VERSION), "{client}");
    }
    for client in [0, 10240, 11263, 12288, pack_version(0, 12, 2).unwrap(), pack_version(1, 11, 0).unwrap()] {
        assert!(!is_protocol_compatible(client, PROTOCOL_VERSION), "{client}");
    }
}

// --- headers --------------------------------------------------------------

fn valid_request(operation: u8) -> RequestHeader {
    let (session, request) = if operation == operation::REGISTER { (0, 0) } else { (5, 2) };
    RequestHeader { client: CLIENT, operation, session, request, ..RequestHeader::default() }
}

fn encoded_header(header: &RequestHeader) -> [u8; HEADER_BYTES] {
    let mut bytes = BytesMut::new();
    header.encode(0, &mut bytes);
    bytes[..].try_into().unwrap()
}

#[test]
fn request_headers_round_trip_with_every_field() {
    let header = RequestHeader {
        route: Route { cluster: 0xaa << 100, view: 9, replica: 2 },
        size: 256,
        client: CLIENT,
        request_checksum: 0x1234,
        timestamp: 77,
        request: 8,
        operation: operation::NON_REPLICATED,
        session: 3,
        user_id: 99,
        code: 41,
    };
    assert_eq!(RequestHeader::decode(&encoded_header(&header)), Ok(header));
    // The code is read only for NonReplicated requests.
    let mut bytes = encoded_header(&valid_request(operation::CREATE_PERSONAL_ACCESS_TOKEN));
    bytes[196] = 42;
    assert_eq!(RequestHeader::decode(&bytes).unwrap().code, 0);
}

#[test]
fn request_headers_are_validated_as_iggy_does() {
    for operation in [operation::REGISTER, operation::NON_REPLICATED, operation::LOGOUT, 146, 147, 128] {
        assert!(RequestHeader::decode(&encoded_header(&valid_request(operation))).is_ok(), "{operation}");
    }
    // NonReplicated may come with no session (Ping before login).
    let ping = RequestHeader { session: 0, request: 1, ..valid_request(operation::NON_REPLICATED) };
    assert!(RequestHeader::decode(&encoded_header(&ping)).is_ok());

    let mut not_request = encoded_header(&valid_request(operation::REGISTER));
    not_request[offset::COMMAND] = COMMAND_REPLY;
    assert_eq!(RequestHeader::decode(&not_request), Err(HeaderError::NotARequest(8)));

    let cases = [
        (RequestHeader { client: 0, ..valid_request(operation::NON_REPLICATED) }, HeaderError::ZeroClient),
        (valid_request(operation::RESERVED), HeaderError::ZeroOperation),
        (
            RequestHeader { session: 1, ..valid_request(operation::REGISTER) },
            HeaderError::RegisterWithSession { session: 1, request: 0 },
        ),
        (
            RequestHeader { request: 1, ..valid_request(operation::REGISTER) },
            HeaderError::RegisterWithSession { session: 0, request: 1 },
        ),
        (
            RequestHeader { session: 0, ..valid_request(operation::LOGOUT) },
            HeaderError::MissingSession { operation: 3, session: 0, request: 2 },
        ),
        (
            RequestHeader { request: 0, ..valid_request(146) },
            HeaderError::MissingSession { operation: 146, session: 5, request: 0 },
        ),
    ];
    for (header, error) in cases {
        assert_eq!(RequestHeader::decode(&encoded_header(&header)), Err(error), "{header:?}");
    }
}

#[test]
fn reply_and_eviction_headers_round_trip() {
    let request = RequestHeader {
        route: Route { cluster: 5, view: 6, replica: 1 },
        request_checksum: 0xfeed,
        timestamp: 11,
        ..valid_request(147)
    };
    let reply = ReplyHeader { size: 256, ..ReplyHeader::answering(&request, 12, 20) };
    let mut bytes = BytesMut::new();
    reply.encode(0, &mut bytes);
    assert_eq!(bytes[offset::COMMAND], COMMAND_REPLY);
    assert_eq!(ReplyHeader::decode(&bytes[..].try_into().unwrap()), reply);
    assert_eq!(reply.op, 12);
    assert_eq!(reply.status, 20);
    assert_eq!(reply.operation, 147);

    for reason in EvictionReason::ALL {
        let eviction = EvictionHeader::answering(&request, reason);
        let mut bytes = BytesMut::new();
        eviction.encode(&mut bytes);
        assert_eq!(bytes.len(), HEADER_BYTES);
        assert_eq!(&bytes[48..52], &256u32.to_le_bytes());
        assert_eq!(bytes[offset::COMMAND], COMMAND_EVICTION);
        assert_eq!(bytes[255], reason as u8);
        assert_eq!(&bytes[128..144], &CLIENT.to_le_bytes());
        let decoded = EvictionHeader::decode(&bytes[..].try_into().unwrap()).unwrap();
        assert_eq!(decoded, eviction);
        if reason == EvictionReason::IncompatibleProtocol {
            assert_eq!((decoded.version_max, decoded.version_min), (11264, 11264));
        } else {
            assert_eq!(&bytes[144..255], &[0u8; 111][..], "{reason:?}");
        }
    }
    assert_eq!(EvictionReason::from_u8(16), None);
    assert_eq!(EvictionReason::from_u8(9), Some(EvictionReason::InvalidCredentials));
}

#[test]
fn operation_tables_follow_the_spec() {
    for op in [1, 2, 3, 64, 68, 128, 146, 147, 149, 160, 161, 162] {
        assert!(operation::is_valid(op), "{op}");
    }
    for op in [0, 4, 63, 69, 127, 150, 159, 163, 255] {
        assert!(!operation::is_valid(op), "{op}");
    }
    for op in [1, 128, 146, 147, 149, 161, 162] {
        assert!(operation::is_result_framed(op), "{op}");
    }
    for op in [2, 3, 138, 160] {
        assert!(!operation::is_result_framed(op), "{op}");
    }
}

// --- frame decoders -------------------------------------------------------

fn request_frame(header: &RequestHeader, body: &[u8]) -> Vec<u8> {
    let mut bytes = BytesMut::new();
    header.encode(body.len(), &mut bytes);
    bytes.extend_from_slice(body);
    bytes.to_vec()
}

#[test]
fn the_request_codec_waits_for_whole_frames_and_splits_bursts() {
    let body = captured_login_body();
    let first = request_frame(&valid_request(operation::REGISTER), &body);
    let second = request_frame(&valid_request(operation::LOGOUT), &[]);
    let mut codec = RequestCodec::new(1024);
    let mut buffer = BytesMut::new();
    // Byte by byte: nothing until the last byte of the first frame.
    for (index, byte) in first.iter().enumerate() {
        buffer.extend_from_slice(&[*byte]);
        let decoded = codec.decode(&mut buffer).unwrap();
        if index + 1 < first.len() {
            assert!(decoded.is_none(), "decoded early at byte {index}");
        } else {
            let frame = decoded.expect("whole frame");
            assert_eq!(frame.header.operation, operation::REGISTER);
            assert_eq!(&frame.body[..], &body[..]);
        }
    }
    assert!(buffer.is_empty());
    // Two frames in one read.
    buffer.extend_from_slice(&first);
    buffer.extend_from_slice(&second);
    assert_eq!(codec.decode(&mut buffer).unwrap().unwrap().body.len(), body.len());
    let logout = codec.decode(&mut buffer).unwrap().unwrap();
    assert_eq!(logout.header.operation, operation::LOGOUT);
    assert!(logout.body.is_empty());
    assert!(codec.decode(&mut buffer).unwrap().is_none());
}

#[test]
fn the_request_codec_refuses_bad_sizes_as_soon_as_they_are_read() {
    let mut codec = RequestCodec::new(300);
    for (size, too_small) in [(0u32, true), (255, true), (301, false), (u32::MAX, false)] {
        // Only the first 52 bytes: the size is known, the rest never comes.
        let mut buffer = BytesMut::from(&[0u8; 52][..]);
        buffer[48..52].copy_from_slice(&size.to_le_bytes());
        match codec.decode(&mut buffer) {
            Err(FrameError::TooSmall { declared }) if too_small => assert_eq!(declared, size),
            Err(FrameError::TooLarge { declared, max }) if !too_small => {
                assert_eq!((declared, max), (size, 300));
            }
            other => panic!("size {size}: {other:?}"),
        }
    }
    // 51 bytes: the size is not known yet.
    assert!(codec.decode(&mut BytesMut::from(&[0u8; 51][..])).unwrap().is_none());
    // Exactly the maximum is accepted.
    let frame = request_frame(&valid_request(146), &[0u8; 44]);
    assert_eq!(frame.len(), 300);
    assert!(codec.decode(&mut BytesMut::from(&frame[..])).unwrap().is_some());
    // The floor of the cap is one header: a header-only frame passes, one
    // byte more does not.
    let mut floored = RequestCodec::new(10);
    let header_only = request_frame(&valid_request(operation::LOGOUT), &[]);
    assert_eq!(header_only.len(), HEADER_BYTES);
    assert!(floored.decode(&mut BytesMut::from(&header_only[..])).unwrap().is_some());
    let mut buffer = BytesMut::from(&[0u8; 52][..]);
    buffer[48..52].copy_from_slice(&257u32.to_le_bytes());
    assert!(matches!(floored.decode(&mut buffer), Err(FrameError::TooLarge { declared: 257, max: 256 })));
}

#[test]
fn the_request_codec_refuses_invalid_headers() {
    let mut codec = RequestCodec::new(1024);
    let frame = request_frame(&RequestHeader { client: 0, ..valid_request(operation::REGISTER) }, &[]);
    let error = codec.decode(&mut BytesMut::from(&frame[..])).unwrap_err();
    assert!(matches!(error, FrameError::Header(HeaderError::ZeroClient)), "{error:?}");
}

#[test]
fn the_reply_codec_reads_replies_and_evictions() {
    let request = valid_request(operation::NON_REPLICATED);
    let mut bytes = BytesMut::new();
    encode_reply(&ReplyHeader::answering(&request, 4, 0), &Rejected(ErrorCode::ResourceNotFound), &mut bytes);
    EvictionHeader::answering(&request, EvictionReason::InvalidToken).encode(&mut bytes);
    let mut codec = ReplyCodec::default();
    match codec.decode(&mut bytes).unwrap() {
        Some(ReplyFrame::Reply { header, body }) => {
            assert_eq!(header.size, 268);
            assert_eq!(header.op, 4);
            assert_eq!(decode_result(&body), Ok(Err(20)));
        }
        other => panic!("{other:?}"),
    }
    match codec.decode(&mut bytes).unwrap() {
        Some(ReplyFrame::Eviction(eviction)) => assert_eq!(eviction.reason, EvictionReason::InvalidToken),
        other => panic!("{other:?}"),
    }
    assert!(codec.decode(&mut bytes).unwrap().is_none());

    let mut unknown = BytesMut::new();
    ReplyHeader::answering(&request, 0, 0).encode(0, &mut unknown);
    unknown[offset::COMMAND] = COMMAND_REQUEST;
    assert!(matches!(codec.decode(&mut unknown), Err(ReplyFrameError::UnknownCommand(5))));
    let mut bad_reason = BytesMut::new();
    EvictionHeader::answering(&request, EvictionReason::NoSession).encode(&mut bad_reason);
    bad_reason[255] = 16;
    assert!(matches!(codec.decode(&mut bad_reason), Err(ReplyFrameError::UnknownEvictionReason(16))));
}

#[test]
fn non_replicated_requests_are_not_stamped() {
    let header = RequestHeader { code: 41, ..valid_request(operation::NON_REPLICATED) };
    let mut bytes = BytesMut::new();
    encode_request(&header, &DeletePersonalAccessToken { name: "abc".into() }, &mut bytes);
    assert_eq!(&bytes[144..160], &[0u8; 16]);
    assert_eq!(&bytes[196..200], &41u32.to_le_bytes());
}
