//! Body codecs (spec §0.4, §1.2–§1.5): round trips, every truncation point,
//! the error codes of malformed input, the spec's captured byte vectors, and
//! the token format of `token.rs`.

use std::collections::HashSet;
use std::fmt::Debug;

use latchkey_protocol::ErrorCode;
use latchkey_protocol::Secret;
use latchkey_protocol::body::{
    ClientDetails, ClusterMetadata, ClusterNode, Command, CreatePersonalAccessToken,
    DeletePersonalAccessToken, Empty, GetClusterMetadata, GetMe, GetPersonalAccessTokens, IdentityInfo,
    LoginUser, LoginWithPersonalAccessToken, LogoutUser, NODE_ROLE_LEADER, NODE_STATUS_HEALTHY,
    PersonalAccessTokenInfo, PersonalAccessTokens, Ping, RawPersonalAccessToken, TRANSPORT_TCP, WireDecode,
    WireEncode, decode_exact, encode_to_vec,
};
use latchkey_protocol::token;

mod common;

use common::{assert_trailing_left_unread, assert_truncations, decode_err, round_trip};

// ---------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------

fn login(username: &str, password: &str, version: Option<&str>, context: Option<&str>) -> LoginUser {
    LoginUser {
        username: username.to_owned(),
        password: Secret::from(password.to_owned()),
        version: version.map(str::to_owned),
        context: context.map(str::to_owned),
    }
}

fn pat_info(name: &str, expiry_at_us: Option<u64>) -> PersonalAccessTokenInfo {
    PersonalAccessTokenInfo { name: name.to_owned(), expiry_at_us }
}

fn node(name: &str, ip: &str, base_port: u16, role: u8, status: u8) -> ClusterNode {
    ClusterNode {
        name: name.to_owned(),
        ip: ip.to_owned(),
        tcp_port: base_port,
        quic_port: base_port + 1,
        http_port: base_port + 2,
        websocket_port: base_port + 3,
        role,
        status,
    }
}

fn single_node_roster() -> ClusterMetadata {
    ClusterMetadata {
        name: "single-node".to_owned(),
        nodes: vec![ClusterNode {
            name: "iggy-node".to_owned(),
            ip: "127.0.0.1".to_owned(),
            tcp_port: 8090,
            quic_port: 8080,
            http_port: 3000,
            websocket_port: 8092,
            role: NODE_ROLE_LEADER,
            status: NODE_STATUS_HEALTHY,
        }],
    }
}

/// Byte sequences that are not UTF-8: a lone continuation byte, an overlong
/// NUL, a UTF-16 surrogate, a truncated 3-byte sequence, 0xff.
const NOT_UTF8: &[&[u8]] =
    &[&[0x80], &[0xc0, 0x80], &[0xed, 0xa0, 0x80], &[b'a', 0xe2, 0x82], &[0xff, b'a', b'b']];

/// The 24-byte LoginUser payload of spec §1.10 (iggy/iggy, "0.10.0", no context).
const LOGIN_IGGY_IGGY: [u8; 24] = [
    0x04, 0x69, 0x67, 0x67, 0x79, // username "iggy"
    0x04, 0x69, 0x67, 0x67, 0x79, // password "iggy"
    0x06, 0x00, 0x00, 0x00, 0x30, 0x2e, 0x31, 0x30, 0x2e, 0x30, // version "0.10.0"
    0x00, 0x00, 0x00, 0x00, // context length 0
];

// ---------------------------------------------------------------------------
// LoginUser (code 38)
// ---------------------------------------------------------------------------

/// Prefix lengths of a LoginUser encoding that are complete bodies: after the
/// password and after the version (the trailing fields are optional).
fn login_valid_prefixes(value: &LoginUser) -> Vec<usize> {
    let after_password = 2 + value.username.len() + value.password.len();
    let mut valid = vec![after_password];
    if value.version.is_some() || value.context.is_some() {
        valid.push(after_password + 4 + value.version.as_deref().map_or(0, str::len));
    }
    valid
}

fn login_values() -> Vec<LoginUser> {
    vec![
        login("iggy", "iggy", Some("0.10.0"), None),
        login("iggy", "iggy", None, None),
        login("iggy", "iggy", Some("0.10.0"), Some("ctx")),
        login("iggy", "iggy", None, Some("context only")),
        login("üser-名前", "pässwörd ✓", Some("ver-ß"), Some("ctx-€")),
        login("abc", "", None, None),
        login("abc", "", Some("v"), Some("c")),
        login(&"u".repeat(255), &"p".repeat(255), Some(&"v".repeat(300)), None),
    ]
}

#[test]
fn login_user_round_trips() {
    for value in login_values() {
        round_trip(&value);
    }
}

#[test]
fn login_user_with_both_trailers_leaves_trailing_bytes_unread() {
    // Only a body with the context present has a definite end.
    assert_trailing_left_unread(&login("iggy", "iggy", Some("0.10.0"), Some("c")));
}

#[test]
fn login_user_truncations_fail_except_after_password_and_version() {
    for value in login_values() {
        let bytes = encode_to_vec(&value);
        assert_truncations::<LoginUser>(&bytes, &login_valid_prefixes(&value));
    }
}

#[test]
fn login_user_optional_trailers_decode_as_none() {
    let bytes = LOGIN_IGGY_IGGY;
    // Ends after the password: neither trailer.
    let (value, used) = LoginUser::decode(&bytes[..10]).unwrap();
    assert_eq!(value, login("iggy", "iggy", None, None));
    assert_eq!(used, 10);
    // Ends after the version: no context.
    let (value, used) = LoginUser::decode(&bytes[..20]).unwrap();
    assert_eq!(value, login("iggy", "iggy", Some("0.10.0"), None));
    assert_eq!(used, 20);
    // Both trailers present with length 0: both absent (spec §0.4).
    let mut zeros = bytes[..10].to_vec();
    zeros.extend_from_slice(&[0; 8]);
    let (value, used) = LoginUser::decode(&zeros).unwrap();
    assert_eq!(value, login("iggy", "iggy", None, None));
    assert_eq!(used, 18);
}

#[test]
fn login_user_spec_payload_decodes_and_re_encodes_byte_for_byte() {
    let (value, used) = LoginUser::decode(&LOGIN_IGGY_IGGY).unwrap();
    assert_eq!(used, 24);
    assert_eq!(value.username, "iggy");
    assert_eq!(value.password.expose(), "iggy");
    assert_eq!(value.version.as_deref(), Some("0.10.0"));
    assert_eq!(value.context, None);
    assert_eq!(value.encoded_size(), 24);
    assert_eq!(encode_to_vec(&value), LOGIN_IGGY_IGGY);
    assert_eq!(decode_exact::<LoginUser>(&LOGIN_IGGY_IGGY).unwrap(), value);
}

#[test]
fn login_user_invalid_utf8_is_invalid_format() {
    for bad in NOT_UTF8 {
        let len = bad.len() as u8;
        // In the username.
        let mut bytes = vec![len];
        bytes.extend_from_slice(bad);
        bytes.extend_from_slice(&[4, b'i', b'g', b'g', b'y']);
        assert_eq!(decode_err::<LoginUser>(&bytes), ErrorCode::InvalidFormat);
        // In the password.
        let mut bytes = vec![4, b'i', b'g', b'g', b'y', len];
        bytes.extend_from_slice(bad);
        assert_eq!(decode_err::<LoginUser>(&bytes), ErrorCode::InvalidFormat);
        // In the version.
        let mut bytes = LOGIN_IGGY_IGGY[..10].to_vec();
        bytes.extend_from_slice(&(bad.len() as u32).to_le_bytes());
        bytes.extend_from_slice(bad);
        assert_eq!(decode_err::<LoginUser>(&bytes), ErrorCode::InvalidFormat);
        // In the context.
        let mut bytes = LOGIN_IGGY_IGGY[..20].to_vec();
        bytes.extend_from_slice(&(bad.len() as u32).to_le_bytes());
        bytes.extend_from_slice(bad);
        assert_eq!(decode_err::<LoginUser>(&bytes), ErrorCode::InvalidFormat);
    }
}

#[test]
fn login_user_huge_long_string_length_is_invalid_command() {
    for len in [u32::MAX, 0x8000_0000, 1 << 24, 5] {
        let mut bytes = LOGIN_IGGY_IGGY[..10].to_vec();
        bytes.extend_from_slice(&len.to_le_bytes());
        bytes.extend_from_slice(b"0.10");
        assert_eq!(decode_err::<LoginUser>(&bytes), ErrorCode::InvalidCommand);
    }
}

#[test]
fn login_user_empty_password_is_accepted_on_the_wire() {
    // Spec §0.4: the password is a short secret whose length may be 0.
    let (value, used) = LoginUser::decode(&[4, b'i', b'g', b'g', b'y', 0]).unwrap();
    assert_eq!(value, login("iggy", "", None, None));
    assert_eq!(used, 6);
}

// ---------------------------------------------------------------------------
// Single-WireName bodies: LoginWithPersonalAccessToken (44),
// DeletePersonalAccessToken (43), RawPersonalAccessToken (reply to 42)
// ---------------------------------------------------------------------------

fn names() -> Vec<String> {
    let mut names: Vec<String> =
        ["a", "tok-1h", "tok-never", "ñame-✓-名", "x y\tz"].iter().map(|s| (*s).to_owned()).collect();
    names.push("n".repeat(255));
    names.push("é".repeat(127)); // 254 bytes
    names.push(token::encode(&[0x42; token::SECRET_BYTES]));
    names
}

/// Checks a single-WireName body type end to end.
fn check_single_name<T>(make: impl Fn(&str) -> T)
where
    T: WireEncode + WireDecode + PartialEq + Debug,
{
    for name in names() {
        let value = make(&name);
        let bytes = round_trip(&value);
        assert_eq!(bytes[0] as usize, name.len());
        assert_eq!(&bytes[1..], name.as_bytes());
        assert_trailing_left_unread(&value);
        assert_truncations::<T>(&bytes, &[]);
    }
    // A zero-length WireName is InvalidFormat, alone or followed by bytes.
    assert_eq!(decode_err::<T>(&[0]), ErrorCode::InvalidFormat);
    assert_eq!(decode_err::<T>(&[0, b'a', b'b']), ErrorCode::InvalidFormat);
    // Invalid UTF-8 is InvalidFormat.
    for bad in NOT_UTF8 {
        let mut bytes = vec![bad.len() as u8];
        bytes.extend_from_slice(bad);
        assert_eq!(decode_err::<T>(&bytes), ErrorCode::InvalidFormat, "{bad:02x?}");
    }
    // Empty input and a length byte promising more than is there.
    assert_eq!(decode_err::<T>(&[]), ErrorCode::InvalidCommand);
    assert_eq!(decode_err::<T>(&[255]), ErrorCode::InvalidCommand);
    assert_eq!(decode_err::<T>(&[5, b'a', b'b']), ErrorCode::InvalidCommand);
}

#[test]
fn login_with_personal_access_token_body() {
    check_single_name(|token| LoginWithPersonalAccessToken { token: Secret::from(token.to_owned()) });
}

#[test]
fn delete_personal_access_token_body() {
    check_single_name(|name| DeletePersonalAccessToken { name: name.to_owned() });
}

#[test]
fn raw_personal_access_token_body() {
    check_single_name(|token| RawPersonalAccessToken { token: Secret::from(token.to_owned()) });
}

#[test]
fn raw_personal_access_token_of_a_latchkey_token_is_53_bytes() {
    let token = token::encode(&[9; token::SECRET_BYTES]);
    let body = RawPersonalAccessToken { token: Secret::from(token.clone()) };
    let bytes = round_trip(&body);
    assert_eq!(bytes.len(), 1 + token::TOKEN_BYTES);
    assert_eq!(bytes[0], token::TOKEN_BYTES as u8);
}

#[test]
#[should_panic(expected = "short string longer than 255 bytes")]
fn encoding_a_256_byte_wire_name_panics_rather_than_truncating() {
    let _ = encode_to_vec(&DeletePersonalAccessToken { name: "n".repeat(256) });
}

#[test]
fn secrets_are_redacted_from_debug_output() {
    let secret = "lk_SuperSecretValue";
    let shown = format!("{:?}", LoginWithPersonalAccessToken { token: Secret::from(secret.to_owned()) });
    assert!(!shown.contains(secret), "{shown}");
    let shown = format!("{:?}", RawPersonalAccessToken { token: Secret::from(secret.to_owned()) });
    assert!(!shown.contains(secret), "{shown}");
    let shown = format!("{:?}", login("iggy", secret, Some("0.10.0"), None));
    assert!(!shown.contains(secret), "{shown}");
    assert!(shown.contains("iggy"), "{shown}");
    // PAT names are not secrets.
    let shown = format!("{:?}", DeletePersonalAccessToken { name: "tok-1h".to_owned() });
    assert!(shown.contains("tok-1h"), "{shown}");
}

// ---------------------------------------------------------------------------
// CreatePersonalAccessToken (code 42)
// ---------------------------------------------------------------------------

fn create(name: &str, expiry_us: u64) -> CreatePersonalAccessToken {
    CreatePersonalAccessToken { name: name.to_owned(), expiry_us }
}

#[test]
fn create_personal_access_token_round_trips_and_truncations_fail() {
    for name in names() {
        for expiry in [0, 1, 3_600_000_000, u64::MAX - 1, u64::MAX] {
            let value = create(&name, expiry);
            let bytes = round_trip(&value);
            assert_eq!(bytes.len(), 1 + name.len() + 8);
            assert_trailing_left_unread(&value);
            assert_truncations::<CreatePersonalAccessToken>(&bytes, &[]);
        }
    }
}

#[test]
fn create_personal_access_token_spec_vectors() {
    // Spec §1.10 / §2.14: "tok-1h", 1 h.
    let tok_1h = [0x06, 0x74, 0x6f, 0x6b, 0x2d, 0x31, 0x68, 0x00, 0xa4, 0x93, 0xd6, 0x00, 0x00, 0x00, 0x00];
    let value = create("tok-1h", 3_600_000_000);
    assert_eq!(encode_to_vec(&value), tok_1h);
    assert_eq!(CreatePersonalAccessToken::decode(&tok_1h).unwrap(), (value, 15));
    // Spec §2.14: "tok-never", u64::MAX.
    let tok_never = [
        0x09, 0x74, 0x6f, 0x6b, 0x2d, 0x6e, 0x65, 0x76, 0x65, 0x72, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff,
    ];
    let value = create("tok-never", u64::MAX);
    assert_eq!(encode_to_vec(&value), tok_never);
    assert_eq!(CreatePersonalAccessToken::decode(&tok_never).unwrap(), (value, 18));
}

#[test]
fn create_personal_access_token_malformed_names() {
    let expiry = 3_600_000_000u64.to_le_bytes();
    // Zero-length name: InvalidFormat, with or without the expiry.
    assert_eq!(decode_err::<CreatePersonalAccessToken>(&[0]), ErrorCode::InvalidFormat);
    let mut bytes = vec![0];
    bytes.extend_from_slice(&expiry);
    assert_eq!(decode_err::<CreatePersonalAccessToken>(&bytes), ErrorCode::InvalidFormat);
    for bad in NOT_UTF8 {
        let mut bytes = vec![bad.len() as u8];
        bytes.extend_from_slice(bad);
        bytes.extend_from_slice(&expiry);
        assert_eq!(decode_err::<CreatePersonalAccessToken>(&bytes), ErrorCode::InvalidFormat);
    }
}

// ---------------------------------------------------------------------------
// IdentityInfo (reply to 38 and 44)
// ---------------------------------------------------------------------------

#[test]
fn identity_info_round_trips_and_truncations_fail() {
    for user_id in [0, 1, 0x0102_0304, u32::MAX] {
        let value = IdentityInfo { user_id };
        let bytes = round_trip(&value);
        assert_eq!(bytes, user_id.to_le_bytes());
        assert_trailing_left_unread(&value);
        assert_truncations::<IdentityInfo>(&bytes, &[]);
    }
}

// ---------------------------------------------------------------------------
// PersonalAccessTokenInfo and PersonalAccessTokens (reply to 41)
// ---------------------------------------------------------------------------

#[test]
fn personal_access_token_info_round_trips_and_truncations_fail() {
    for name in names() {
        for expiry in [None, Some(1), Some(1_700_000_000_000_000), Some(u64::MAX)] {
            let value = pat_info(&name, expiry);
            let bytes = round_trip(&value);
            assert_trailing_left_unread(&value);
            assert_truncations::<PersonalAccessTokenInfo>(&bytes, &[]);
        }
    }
}

#[test]
fn personal_access_token_info_never_is_zero_on_the_wire() {
    let bytes = encode_to_vec(&pat_info("abc", None));
    assert_eq!(bytes, [3, b'a', b'b', b'c', 0, 0, 0, 0, 0, 0, 0, 0]);
    // Some(0) is not representable: it goes out as 0 and comes back as None.
    let bytes = encode_to_vec(&pat_info("abc", Some(0)));
    assert_eq!(PersonalAccessTokenInfo::decode(&bytes).unwrap().0, pat_info("abc", None));
}

#[test]
fn personal_access_token_info_malformed_names() {
    assert_eq!(decode_err::<PersonalAccessTokenInfo>(&[0, 1, 2, 3, 4, 5, 6, 7, 8]), ErrorCode::InvalidFormat);
    for bad in NOT_UTF8 {
        let mut bytes = vec![bad.len() as u8];
        bytes.extend_from_slice(bad);
        bytes.extend_from_slice(&[0; 8]);
        assert_eq!(decode_err::<PersonalAccessTokenInfo>(&bytes), ErrorCode::InvalidFormat);
    }
}

fn token_lists() -> Vec<PersonalAccessTokens> {
    vec![
        PersonalAccessTokens(vec![]),
        PersonalAccessTokens(vec![pat_info("tok-1h", Some(1_700_003_600_000_000))]),
        PersonalAccessTokens(vec![
            pat_info("tok-never", None),
            pat_info("tok-1h", Some(1_700_003_600_000_000)),
            pat_info("ñame-✓", Some(u64::MAX)),
            pat_info(&"x".repeat(255), Some(1)),
        ]),
    ]
}

#[test]
fn personal_access_tokens_round_trip() {
    for value in token_lists() {
        round_trip(&value);
    }
    // No tokens: an empty payload.
    assert!(encode_to_vec(&PersonalAccessTokens::default()).is_empty());
    assert_eq!(PersonalAccessTokens::decode(&[]).unwrap(), (PersonalAccessTokens(vec![]), 0));
}

#[test]
fn personal_access_tokens_fail_only_when_an_entry_is_cut() {
    for value in token_lists() {
        let bytes = encode_to_vec(&value);
        // Entry boundaries are complete (shorter) lists.
        let mut boundaries = vec![0];
        let mut offset = 0;
        for entry in &value.0 {
            offset += entry.encoded_size();
            boundaries.push(offset);
        }
        assert_truncations::<PersonalAccessTokens>(&bytes, &boundaries);
        // A boundary prefix holds exactly the entries before it.
        for (count, &end) in boundaries.iter().enumerate() {
            let (decoded, used) = PersonalAccessTokens::decode(&bytes[..end]).unwrap();
            assert_eq!(decoded.0, value.0[..count]);
            assert_eq!(used, end);
        }
    }
}

#[test]
fn personal_access_tokens_bad_entry_fails_the_whole_list() {
    let mut bytes = encode_to_vec(&PersonalAccessTokens(vec![pat_info("good", None)]));
    let good_len = bytes.len();
    // A zero-length name in the second entry.
    bytes.extend_from_slice(&[0; 9]);
    assert_eq!(decode_err::<PersonalAccessTokens>(&bytes), ErrorCode::InvalidFormat);
    // Invalid UTF-8 in the second entry.
    bytes.truncate(good_len);
    bytes.extend_from_slice(&[2, 0xc3, 0x28]);
    bytes.extend_from_slice(&[0; 8]);
    assert_eq!(decode_err::<PersonalAccessTokens>(&bytes), ErrorCode::InvalidFormat);
}

// ---------------------------------------------------------------------------
// ClientDetails (reply to 20)
// ---------------------------------------------------------------------------

fn client_details_values() -> Vec<ClientDetails> {
    vec![
        ClientDetails {
            client_id: 1,
            user_id: 0,
            transport: TRANSPORT_TCP,
            address: "127.0.0.1:50000".to_owned(),
            consumer_groups: vec![],
        },
        ClientDetails {
            client_id: u32::MAX,
            user_id: 0x0a0b_0c0d,
            transport: 0xff,
            address: String::new(),
            consumer_groups: vec![],
        },
        ClientDetails {
            client_id: 7,
            user_id: 8,
            transport: TRANSPORT_TCP,
            address: "[::1]:9".to_owned(),
            consumer_groups: vec![[1, 2, 3], [u32::MAX, 0, 0x1234_5678]],
        },
    ]
}

#[test]
fn client_details_round_trips_and_truncations_fail() {
    for value in client_details_values() {
        let bytes = round_trip(&value);
        assert_eq!(bytes.len(), 17 + value.address.len() + 12 * value.consumer_groups.len());
        assert_trailing_left_unread(&value);
        assert_truncations::<ClientDetails>(&bytes, &[]);
    }
}

#[test]
fn client_details_layout() {
    let value = &client_details_values()[2];
    let bytes = encode_to_vec(value);
    let mut expected = vec![7, 0, 0, 0, 8, 0, 0, 0, 1, 7, 0, 0, 0];
    expected.extend_from_slice(b"[::1]:9");
    expected.extend_from_slice(&[2, 0, 0, 0]);
    for id in [1u32, 2, 3, u32::MAX, 0, 0x1234_5678] {
        expected.extend_from_slice(&id.to_le_bytes());
    }
    assert_eq!(bytes, expected);
}

#[test]
fn client_details_malformed() {
    let header = [1, 0, 0, 0, 2, 0, 0, 0, TRANSPORT_TCP];
    // Invalid UTF-8 address.
    for bad in NOT_UTF8 {
        let mut bytes = header.to_vec();
        bytes.extend_from_slice(&(bad.len() as u32).to_le_bytes());
        bytes.extend_from_slice(bad);
        bytes.extend_from_slice(&[0; 4]);
        assert_eq!(decode_err::<ClientDetails>(&bytes), ErrorCode::InvalidFormat);
    }
    // A group count the body cannot hold, however large.
    for count in [1u32, 2, 1000, u32::MAX] {
        let mut bytes = header.to_vec();
        bytes.extend_from_slice(&[0; 4]); // empty address
        bytes.extend_from_slice(&count.to_le_bytes());
        bytes.extend_from_slice(&[0; 12 - 1]);
        assert_eq!(decode_err::<ClientDetails>(&bytes), ErrorCode::InvalidCommand);
    }
    // An address length beyond the input.
    let mut bytes = header.to_vec();
    bytes.extend_from_slice(&u32::MAX.to_le_bytes());
    bytes.extend_from_slice(&[b'a'; 16]);
    assert_eq!(decode_err::<ClientDetails>(&bytes), ErrorCode::InvalidCommand);
}

// ---------------------------------------------------------------------------
// ClusterMetadata (reply to 12)
// ---------------------------------------------------------------------------

fn cluster_values() -> Vec<ClusterMetadata> {
    vec![
        single_node_roster(),
        ClusterMetadata { name: String::new(), nodes: vec![] },
        ClusterMetadata {
            name: "clüster".to_owned(),
            nodes: vec![
                node("a", "10.0.0.1", 1000, 0, 0),
                node("", "", 0, 1, 4),
                node("nöde-3", "fe80::1", u16::MAX - 3, 0xff, 0xff),
            ],
        },
    ]
}

#[test]
fn cluster_metadata_round_trips_and_truncations_fail() {
    for value in cluster_values() {
        let bytes = round_trip(&value);
        assert_trailing_left_unread(&value);
        assert_truncations::<ClusterMetadata>(&bytes, &[]);
    }
}

#[test]
fn cluster_metadata_single_node_roster_is_55_bytes() {
    // Spec §1.5: the observed single-node reply is 55 bytes.
    let roster = single_node_roster();
    assert_eq!(roster.encoded_size(), 55);
    let bytes = encode_to_vec(&roster);
    let mut expected = vec![11, 0, 0, 0];
    expected.extend_from_slice(b"single-node");
    expected.extend_from_slice(&[1, 0, 0, 0, 9, 0, 0, 0]);
    expected.extend_from_slice(b"iggy-node");
    expected.extend_from_slice(&[9, 0, 0, 0]);
    expected.extend_from_slice(b"127.0.0.1");
    for port in [8090u16, 8080, 3000, 8092] {
        expected.extend_from_slice(&port.to_le_bytes());
    }
    expected.extend_from_slice(&[0, 0]);
    assert_eq!(bytes, expected);
}

#[test]
fn cluster_metadata_malformed() {
    // A node count the body cannot hold, however large.
    for count in [1u32, 2, 1 << 20, u32::MAX] {
        let mut bytes = vec![0, 0, 0, 0];
        bytes.extend_from_slice(&count.to_le_bytes());
        bytes.extend_from_slice(&[0; 17]);
        assert_eq!(decode_err::<ClusterMetadata>(&bytes), ErrorCode::InvalidCommand);
    }
    // Invalid UTF-8 in the cluster name, a node name and a node ip.
    for bad in NOT_UTF8 {
        let len = (bad.len() as u32).to_le_bytes();
        let mut bytes = len.to_vec();
        bytes.extend_from_slice(bad);
        bytes.extend_from_slice(&[0; 4]);
        assert_eq!(decode_err::<ClusterMetadata>(&bytes), ErrorCode::InvalidFormat);

        let mut bytes = vec![0, 0, 0, 0, 1, 0, 0, 0];
        bytes.extend_from_slice(&len);
        bytes.extend_from_slice(bad);
        bytes.extend_from_slice(&[0; 4 + 10]);
        assert_eq!(decode_err::<ClusterMetadata>(&bytes), ErrorCode::InvalidFormat);

        let mut bytes = vec![0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0];
        bytes.extend_from_slice(&len);
        bytes.extend_from_slice(bad);
        bytes.extend_from_slice(&[0; 10]);
        assert_eq!(decode_err::<ClusterMetadata>(&bytes), ErrorCode::InvalidFormat);
    }
}

// ---------------------------------------------------------------------------
// Empty bodies and command codes
// ---------------------------------------------------------------------------

#[test]
fn empty_bodies_encode_to_nothing_and_consume_nothing() {
    fn check<T: WireEncode + WireDecode + PartialEq + Debug>(value: T) {
        assert_eq!(value.encoded_size(), 0);
        assert!(encode_to_vec(&value).is_empty());
        assert_eq!(T::decode(&[]).unwrap(), (value, 0));
        // `decode` takes a prefix: nothing of the input is consumed...
        assert_eq!(T::decode(&[1, 2, 3]).unwrap().1, 0);
        // ...and `decode_exact` refuses leftovers.
        assert_eq!(decode_exact::<T>(&[1]).err(), Some(ErrorCode::InvalidCommand));
    }
    check(Empty);
    check(Ping);
    check(GetClusterMetadata);
    check(GetMe);
    check(LogoutUser);
    check(GetPersonalAccessTokens);
}

#[test]
fn command_codes_match_the_spec_table() {
    // Spec §1.2.
    assert_eq!(Ping::CODE, 1);
    assert_eq!(GetClusterMetadata::CODE, 12);
    assert_eq!(GetMe::CODE, 20);
    assert_eq!(LoginUser::CODE, 38);
    assert_eq!(LogoutUser::CODE, 39);
    assert_eq!(GetPersonalAccessTokens::CODE, 41);
    assert_eq!(CreatePersonalAccessToken::CODE, 42);
    assert_eq!(DeletePersonalAccessToken::CODE, 43);
    assert_eq!(LoginWithPersonalAccessToken::CODE, 44);
}

// ---------------------------------------------------------------------------
// Token format (token.rs)
// ---------------------------------------------------------------------------

/// xorshift64: deterministic, dependency-free test randomness.
struct XorShift(u64);

impl XorShift {
    fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn secret(&mut self) -> [u8; token::SECRET_BYTES] {
        let mut secret = [0u8; token::SECRET_BYTES];
        for chunk in secret.chunks_mut(8) {
            chunk.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        secret
    }
}

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Independent base62 → big-endian bytes, for checking the encoding.
fn base62_to_bytes<const N: usize>(digits: &[u8]) -> [u8; N] {
    let mut number = [0u32; N];
    for &digit in digits {
        let value = BASE62.iter().position(|&c| c == digit).expect("base62 digit") as u32;
        let mut carry = value;
        for limb in number.iter_mut().rev() {
            let acc = *limb * 62 + carry;
            *limb = acc & 0xff;
            carry = acc >> 8;
        }
        assert_eq!(carry, 0, "value overflows {N} bytes");
    }
    number.map(|limb| limb as u8)
}

fn test_secrets() -> Vec<[u8; token::SECRET_BYTES]> {
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let mut secrets = vec![[0u8; 32], [0xff; 32], [1; 32], {
        let mut s = [0u8; 32];
        s[31] = 1;
        s
    }];
    secrets.extend((0..1000).map(|_| rng.secret()));
    secrets
}

#[test]
fn tokens_of_random_secrets_round_trip_and_validate() {
    assert_eq!(token::TOKEN_BYTES, 52);
    let mut seen = HashSet::new();
    for secret in test_secrets() {
        let encoded = token::encode(&secret);
        assert_eq!(encoded.len(), token::TOKEN_BYTES);
        assert!(encoded.starts_with(token::PREFIX));
        let bytes = encoded.as_bytes();
        assert!(bytes[3..].iter().all(|b| BASE62.contains(b)), "{encoded}");
        assert_eq!(token::validate(&encoded), Ok(()), "{encoded}");
        // The secret digits decode back to the secret.
        let secret_digits = &bytes[3..3 + token::SECRET_DIGITS];
        assert_eq!(base62_to_bytes::<32>(secret_digits), secret, "{encoded}");
        // The checksum digits are the CRC32 of everything before them.
        let (body, checksum) = bytes.split_at(3 + token::SECRET_DIGITS);
        assert_eq!(checksum.len(), token::CHECKSUM_DIGITS);
        assert_eq!(u32::from_be_bytes(base62_to_bytes::<4>(checksum)), crc32fast::hash(body));
        // Deterministic, and distinct secrets give distinct tokens.
        assert_eq!(token::encode(&secret), encoded);
        assert!(seen.insert(encoded));
    }
    assert_eq!(&token::encode(&[0; 32])[3..46], "0".repeat(43));
}

#[test]
fn every_single_byte_mutation_of_a_token_is_refused() {
    let secrets = test_secrets();
    let mut rng = XorShift(0x0123_4567_89ab_cdef);
    for (index, secret) in secrets.iter().enumerate() {
        let valid = token::encode(secret);
        let exhaustive = index < 12;
        for position in 0..valid.len() {
            let original = valid.as_bytes()[position];
            let replacements: Vec<u8> = if exhaustive {
                // Every other ASCII byte.
                (0u8..=127).filter(|&b| b != original).collect()
            } else {
                // A few other alphabet characters: the hardest case.
                (0..4)
                    .map(|_| {
                        loop {
                            let c = BASE62[(rng.next_u64() % 62) as usize];
                            if c != original {
                                break c;
                            }
                        }
                    })
                    .collect()
            };
            for replacement in replacements {
                let mut bytes = valid.clone().into_bytes();
                bytes[position] = replacement;
                let mutated = String::from_utf8(bytes).unwrap();
                assert!(token::validate(&mutated).is_err(), "{mutated} (position {position}) accepted");
            }
        }
        if exhaustive {
            // Non-ASCII: a 2-byte character in place of one byte changes the
            // length; in place of two bytes it keeps it.
            for position in 0..valid.len() - 1 {
                let one = format!("{}é{}", &valid[..position], &valid[position + 1..]);
                assert_eq!(token::validate(&one), Err(token::TokenFormatError::Length));
                let two = format!("{}é{}", &valid[..position], &valid[position + 2..]);
                assert!(token::validate(&two).is_err(), "{two} accepted");
            }
        }
    }
}

#[test]
fn token_validate_names_the_problem() {
    use token::TokenFormatError;
    let valid = token::encode(&[3; 32]);
    assert_eq!(token::validate(""), Err(TokenFormatError::Length));
    assert_eq!(token::validate(&valid[..51]), Err(TokenFormatError::Length));
    assert_eq!(token::validate(&format!("{valid}0")), Err(TokenFormatError::Length));
    assert_eq!(token::validate(&format!("LK_{}", &valid[3..])), Err(TokenFormatError::Prefix));
    assert_eq!(
        token::validate(&format!("{}+{}", &valid[..20], &valid[21..])),
        Err(TokenFormatError::Alphabet)
    );
    // 62^43 - 1 does not fit in 256 bits.
    assert_eq!(token::validate(&format!("lk_{}000000", "z".repeat(43))), Err(TokenFormatError::Range));
    // 62^6 - 1 does not fit in 32 bits.
    assert_eq!(token::validate(&format!("{}zzzzzz", &valid[..46])), Err(TokenFormatError::Range));
    // A well-formed token with the wrong checksum.
    let wrong = if valid.as_bytes()[51] == b'0' { '1' } else { '0' };
    assert_eq!(token::validate(&format!("{}{wrong}", &valid[..51])), Err(TokenFormatError::Checksum));
}
