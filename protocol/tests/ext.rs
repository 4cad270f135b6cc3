//! Latchkey's extension bodies (`ext.rs`, codes 9100–9110): round trips,
//! every truncation point, the error codes of malformed input, the enums'
//! wire values, `Request::decode` for every extension code, redaction of
//! secrets from `Debug` output, and the byte-level examples of
//! `docs/protocol.md`, pinned here and read back from the document.

use std::collections::BTreeMap;
use std::fmt::Debug;

use bytes::BytesMut;
use latchkey_protocol::body::{Command, Empty, WireDecode, WireEncode, decode_exact, encode_to_vec};
use latchkey_protocol::codec::{Reply, encode_reply, encode_request};
use latchkey_protocol::ext::{
    ACCESS_EDITS_MAX, AccessEdit, Authorize, AuthorizeDecision, Count, CreateToken, Decision,
    DeleteAllTokens, DeleteToken, EXPIRY_KEEP, EXPIRY_NEVER, EXPIRY_SERVER_DEFAULT, EditTokenAccess,
    GetToken, IssuedToken, LIST8_ITEMS_MAX, ListTokens, RevokeAllTokens, RevokeToken, RotateToken,
    StatusFilter, TokenDetails, TokenPage, TokenSelector, TokenStatus, UpdateToken,
};
use latchkey_protocol::{ErrorCode, Request, codes, token};

mod common;

use common::{assert_trailing_left_unread, assert_truncations, decode_err, round_trip};

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// Round trip, trailing bytes and every truncation, in one call.
fn check_body<T>(value: &T) -> Vec<u8>
where
    T: WireEncode + WireDecode + PartialEq + Debug,
{
    let bytes = round_trip(value);
    assert_trailing_left_unread(value);
    // No extension body but RotateToken (tested on its own) has optional
    // trailing fields: no prefix is whole.
    assert_truncations::<T>(&bytes, &[]);
    bytes
}

/// Byte sequences that are not UTF-8: a lone continuation byte, an overlong
/// NUL, a UTF-16 surrogate, a truncated 3-byte sequence, 0xff.
const NOT_UTF8: &[&[u8]] =
    &[&[0x80], &[0xc0, 0x80], &[0xed, 0xa0, 0x80], &[b'a', 0xe2, 0x82], &[0xff, b'a', b'b']];

/// How a string field is framed on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    /// `[len u8][UTF-8]`, len ≥ 1.
    WireName,
    /// `[len u8][UTF-8]`, len may be 0.
    Text8,
    /// `[len u16][UTF-8]`, len may be 0.
    Text16,
}

impl Field {
    fn prefix_bytes(self) -> usize {
        match self {
            Field::WireName | Field::Text8 => 1,
            Field::Text16 => 2,
        }
    }
}

/// A marker put into one string field of a value, so the field can be found
/// in the encoding and its contents replaced.
const MARKER: &str = "~marker~";

/// `bytes` with the field holding [`MARKER`] replaced by `contents` (its
/// length prefix rewritten to match).
fn splice(bytes: &[u8], field: Field, contents: &[u8]) -> Vec<u8> {
    let marker = MARKER.as_bytes();
    let starts: Vec<usize> =
        bytes.windows(marker.len()).enumerate().filter(|(_, w)| *w == marker).map(|(i, _)| i).collect();
    assert_eq!(starts.len(), 1, "the marker must occur exactly once in {bytes:02x?}");
    let at = starts[0];
    let prefix = at - field.prefix_bytes();
    let declared = match field {
        Field::WireName | Field::Text8 => usize::from(bytes[prefix]),
        Field::Text16 => usize::from(u16::from_le_bytes([bytes[prefix], bytes[prefix + 1]])),
    };
    assert_eq!(declared, marker.len(), "length prefix before the marker");
    let mut out = bytes[..prefix].to_vec();
    match field {
        Field::WireName | Field::Text8 => out.push(u8::try_from(contents.len()).unwrap()),
        Field::Text16 => out.extend_from_slice(&u16::try_from(contents.len()).unwrap().to_le_bytes()),
    }
    out.extend_from_slice(contents);
    out.extend_from_slice(&bytes[at + marker.len()..]);
    out
}

/// Checks one string field of a body: invalid UTF-8 is InvalidFormat (4); an
/// empty string is InvalidFormat for a WireName and a valid value otherwise;
/// any valid UTF-8, multi-byte included, decodes and re-encodes to the same
/// bytes.
fn check_string_field<T>(value_with_marker: &T, field: Field)
where
    T: WireEncode + WireDecode + PartialEq + Debug,
{
    let bytes = round_trip(value_with_marker);
    for bad in NOT_UTF8 {
        let spliced = splice(&bytes, field, bad);
        assert_eq!(decode_err::<T>(&spliced), ErrorCode::InvalidFormat, "{field:?} holding {bad:02x?}");
        assert_eq!(decode_exact::<T>(&spliced).err(), Some(ErrorCode::InvalidFormat));
    }
    let empty = splice(&bytes, field, b"");
    if field == Field::WireName {
        assert_eq!(decode_err::<T>(&empty), ErrorCode::InvalidFormat, "zero-length WireName");
    } else {
        let decoded: T = decode_exact(&empty).unwrap_or_else(|e| panic!("empty {field:?}: {e:?}"));
        assert_eq!(encode_to_vec(&decoded), empty);
    }
    for good in ["ñame-✓-名", "x", "with space"] {
        let spliced = splice(&bytes, field, good.as_bytes());
        let decoded: T = decode_exact(&spliced).unwrap_or_else(|e| panic!("{good:?} in {field:?}: {e:?}"));
        assert_eq!(encode_to_vec(&decoded), spliced);
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|item| (*item).to_owned()).collect()
}

/// Selector kinds other than 1 (id) and 2 (name).
fn unknown_selector_kinds() -> impl Iterator<Item = u8> {
    (0..=u8::MAX).filter(|kind| !matches!(kind, 1 | 2))
}

fn selectors() -> Vec<TokenSelector> {
    vec![
        TokenSelector::Id(0),
        TokenSelector::Id(7),
        TokenSelector::Id(0x0102_0304_0506_0708),
        TokenSelector::Id(u64::MAX),
        TokenSelector::Name("a".to_owned()),
        TokenSelector::Name("ci-deploy".to_owned()),
        TokenSelector::Name("ñame-✓-名".to_owned()),
        TokenSelector::Name("n".repeat(255)),
    ]
}

fn raw_token(seed: u8) -> String {
    token::encode(&[seed; token::SECRET_BYTES])
}

// ---------------------------------------------------------------------------
// TokenSelector, and the bodies that are one selector: GetToken (9101),
// RevokeToken (9104), DeleteToken (9106)
// ---------------------------------------------------------------------------

#[test]
fn token_selector_round_trips_and_truncations_fail() {
    for selector in selectors() {
        let bytes = check_body(&selector);
        match &selector {
            TokenSelector::Id(id) => {
                assert_eq!(bytes[0], 1);
                assert_eq!(bytes[1..], id.to_le_bytes());
            }
            TokenSelector::Name(name) => {
                assert_eq!(bytes[0], 2);
                assert_eq!(usize::from(bytes[1]), name.len());
                assert_eq!(&bytes[2..], name.as_bytes());
            }
        }
    }
}

#[test]
fn token_selector_layout() {
    assert_eq!(encode_to_vec(&TokenSelector::Id(7)), [1, 7, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(encode_to_vec(&TokenSelector::Name("laptop".to_owned())), *b"\x02\x06laptop");
}

#[test]
fn token_selector_unknown_kind_is_invalid_format() {
    for kind in unknown_selector_kinds() {
        // Alone, followed by an id's worth of bytes, and followed by a name.
        assert_eq!(decode_err::<TokenSelector>(&[kind]), ErrorCode::InvalidFormat, "kind {kind}");
        assert_eq!(decode_err::<TokenSelector>(&[kind, 7, 0, 0, 0, 0, 0, 0, 0]), ErrorCode::InvalidFormat);
        assert_eq!(decode_err::<TokenSelector>(&[kind, 2, b'a', b'b']), ErrorCode::InvalidFormat);
    }
    assert_eq!(decode_err::<TokenSelector>(&[]), ErrorCode::InvalidCommand);
}

#[test]
fn token_selector_name_strings() {
    check_string_field(&TokenSelector::Name(MARKER.to_owned()), Field::WireName);
    // A zero-length name, alone and followed by bytes.
    assert_eq!(decode_err::<TokenSelector>(&[2, 0]), ErrorCode::InvalidFormat);
    assert_eq!(decode_err::<TokenSelector>(&[2, 0, b'a', b'b']), ErrorCode::InvalidFormat);
    // A length promising more than is there.
    assert_eq!(decode_err::<TokenSelector>(&[2, 255, b'a']), ErrorCode::InvalidCommand);
}

#[test]
fn token_selector_conversions_and_display() {
    assert_eq!(TokenSelector::from(7), TokenSelector::Id(7));
    assert_eq!(TokenSelector::from("laptop"), TokenSelector::Name("laptop".to_owned()));
    assert_eq!(TokenSelector::from("laptop".to_owned()), TokenSelector::Name("laptop".to_owned()));
    assert_eq!(TokenSelector::Id(7).to_string(), "id 7");
    assert_eq!(TokenSelector::from("laptop").to_string(), "name \"laptop\"");
}

/// Checks a body that is exactly one selector.
fn check_selector_body<T>(make: impl Fn(TokenSelector) -> T)
where
    T: WireEncode + WireDecode + PartialEq + Debug,
{
    for selector in selectors() {
        let bytes = check_body(&make(selector.clone()));
        assert_eq!(bytes, encode_to_vec(&selector));
    }
    check_string_field(&make(TokenSelector::Name(MARKER.to_owned())), Field::WireName);
    for kind in unknown_selector_kinds() {
        assert_eq!(decode_err::<T>(&[kind, 7, 0, 0, 0, 0, 0, 0, 0]), ErrorCode::InvalidFormat);
    }
    assert_eq!(decode_err::<T>(&[]), ErrorCode::InvalidCommand);
}

#[test]
fn get_token_body() {
    check_selector_body(|token| GetToken { token });
}

#[test]
fn revoke_token_body() {
    check_selector_body(|token| RevokeToken { token });
}

#[test]
fn delete_token_body() {
    check_selector_body(|token| DeleteToken { token });
}

// ---------------------------------------------------------------------------
// RevokeAllTokens (9107) and DeleteAllTokens (9108): empty bodies
// ---------------------------------------------------------------------------

#[test]
fn revoke_all_and_delete_all_bodies_are_empty() {
    fn check<T: WireEncode + WireDecode + PartialEq + Debug>(value: T) {
        assert_eq!(value.encoded_size(), 0);
        assert!(encode_to_vec(&value).is_empty());
        assert_eq!(T::decode(&[]).unwrap(), (value, 0));
        // `decode` takes a prefix and consumes nothing; `decode_exact` refuses leftovers.
        assert_eq!(T::decode(&[1, 2, 3]).unwrap().1, 0);
        assert_eq!(decode_exact::<T>(&[0]).err(), Some(ErrorCode::InvalidCommand));
    }
    check(RevokeAllTokens);
    check(DeleteAllTokens);
}

// ---------------------------------------------------------------------------
// CreateToken (9100)
// ---------------------------------------------------------------------------

fn create(name: &str, description: &str, expiry_us: u64, scopes: &[&str], networks: &[&str]) -> CreateToken {
    CreateToken {
        name: name.to_owned(),
        description: description.to_owned(),
        expiry_us,
        scopes: strings(scopes),
        networks: strings(networks),
    }
}

fn create_values() -> Vec<CreateToken> {
    let mut values = Vec::new();
    for expiry in [EXPIRY_SERVER_DEFAULT, 1, 2_592_000_000_000, EXPIRY_NEVER - 1, EXPIRY_NEVER] {
        values.push(create("abc", "", expiry, &[], &[]));
    }
    values.push(create(
        "ci-deploy",
        "GitHub Actions deploys",
        2_592_000_000_000,
        &["stream:orders:write", "tokens:read"],
        &["10.0.0.0/8", "2001:db8::/32"],
    ));
    values.push(create("only-scopes", "", 0, &["tokens:read", "topic:*:*"], &[]));
    values.push(create("only-networks", "ñ ✓ 名", 0, &[], &["::ffff:10.0.0.0/104"]));
    // A description longer than 255 bytes needs both bytes of its length.
    values.push(CreateToken {
        name: "n".repeat(255),
        description: "d".repeat(300),
        expiry_us: 7,
        scopes: vec!["s".repeat(255); 3],
        networks: vec!["192.0.2.7".to_owned(); 16],
    });
    values
}

#[test]
fn create_token_round_trips_and_truncations_fail() {
    for value in create_values() {
        let bytes = check_body(&value);
        assert_eq!(bytes.len(), value.encoded_size());
        assert_eq!(
            bytes.len(),
            1 + value.name.len()
                + 2
                + value.description.len()
                + 8
                + 1
                + value.scopes.iter().map(|s| 1 + s.len()).sum::<usize>()
                + 1
                + value.networks.iter().map(|n| 1 + n.len()).sum::<usize>()
        );
    }
}

#[test]
fn create_token_carries_the_wire_maxima() {
    // 65535 description bytes and 255 items per list: round trips only (the
    // truncation loop over 70 KB is quadratic and adds nothing).
    let value = CreateToken {
        name: "max".to_owned(),
        description: "é".repeat(32_767) + "x",
        expiry_us: EXPIRY_NEVER,
        scopes: (0..LIST8_ITEMS_MAX).map(|i| format!("stream:s{i}:read")).collect(),
        networks: (0..LIST8_ITEMS_MAX).map(|i| format!("10.0.{i}.0/24")).collect(),
    };
    assert_eq!(value.description.len(), 65_535);
    round_trip(&value);
}

#[test]
fn create_token_strings() {
    let base = create("ci-deploy", "about", 5, &["tokens:read", "me:read"], &["10.0.0.0/8", "::1"]);
    check_string_field(&CreateToken { name: MARKER.to_owned(), ..base.clone() }, Field::WireName);
    check_string_field(&CreateToken { description: MARKER.to_owned(), ..base.clone() }, Field::Text16);
    for index in 0..2 {
        let mut value = base.clone();
        value.scopes[index] = MARKER.to_owned();
        check_string_field(&value, Field::WireName);
        let mut value = base.clone();
        value.networks[index] = MARKER.to_owned();
        check_string_field(&value, Field::WireName);
    }
}

#[test]
fn create_token_list_counts_must_match_the_items() {
    let bytes = encode_to_vec(&create("abc", "", 0, &["tokens:read"], &["10.0.0.0/8"]));
    let scopes_at = 1 + 3 + 2 + 8;
    let networks_at = scopes_at + 1 + 1 + "tokens:read".len();
    assert_eq!((bytes[scopes_at], bytes[networks_at]), (1, 1));
    // More networks than the body holds: it runs out.
    for count in [2, 255] {
        let mut bad = bytes.clone();
        bad[networks_at] = count;
        assert_eq!(decode_err::<CreateToken>(&bad), ErrorCode::InvalidCommand, "{count} networks");
    }
    // One scope too many: the network count (1) is read as a scope's length
    // and what follows is not a whole body.
    let mut bad = bytes.clone();
    bad[scopes_at] = 2;
    assert_eq!(decode_err::<CreateToken>(&bad), ErrorCode::InvalidCommand);
    // One scope too few: the scope's bytes are misread as the networks.
    let mut bad = bytes;
    bad[scopes_at] = 0;
    assert_eq!(decode_exact::<CreateToken>(&bad).err(), Some(ErrorCode::InvalidCommand));
}

#[test]
#[should_panic(expected = "Text16 longer than 65535 bytes")]
fn encoding_a_description_over_65535_bytes_panics_rather_than_truncating() {
    let _ = encode_to_vec(&create("abc", &"d".repeat(65_536), 0, &[], &[]));
}

#[test]
#[should_panic(expected = "List8 with more than 255 items")]
fn encoding_a_list_of_256_items_panics_rather_than_truncating() {
    let value = CreateToken { scopes: vec!["tokens:read".to_owned(); 256], ..create("abc", "", 0, &[], &[]) };
    let _ = encode_to_vec(&value);
}

// ---------------------------------------------------------------------------
// IssuedToken (reply to 9100 and 9105)
// ---------------------------------------------------------------------------

fn issued(id: u64, token: &str, created_at_us: u64, expires_at_us: u64) -> IssuedToken {
    IssuedToken { id, token: token.to_owned().into(), created_at_us, expires_at_us }
}

#[test]
fn issued_token_round_trips_and_truncations_fail() {
    for value in [
        issued(1, &raw_token(0x11), 1_772_443_800_000_000, 0),
        issued(u64::MAX, &raw_token(0xff), u64::MAX, u64::MAX),
        issued(0, "x", 0, 0),
        issued(9, &"t".repeat(255), 1, 2),
    ] {
        let bytes = check_body(&value);
        assert_eq!(bytes.len(), 8 + 1 + value.token.len() + 8 + 8);
    }
    // A Latchkey token makes a 77-byte reply.
    assert_eq!(issued(7, &raw_token(1), 1, 0).encoded_size(), 77);
}

#[test]
fn issued_token_strings() {
    check_string_field(&issued(7, MARKER, 1, 2), Field::WireName);
}

// ---------------------------------------------------------------------------
// TokenStatus, StatusFilter and Decision: wire values and their bounds
// ---------------------------------------------------------------------------

#[test]
fn token_status_values_and_bounds() {
    let all = [TokenStatus::Active, TokenStatus::Revoked, TokenStatus::Expired];
    for (value, status) in (1u8..=3).zip(all) {
        assert_eq!(status as u8, value);
        assert_eq!(TokenStatus::from_u8(value), Some(status));
    }
    for value in (0..=u8::MAX).filter(|value| !(1..=3).contains(value)) {
        assert_eq!(TokenStatus::from_u8(value), None, "{value}");
    }
    let names: Vec<&str> = all.iter().map(|status| status.as_str()).collect();
    assert_eq!(names, ["active", "revoked", "expired"]);
}

#[test]
fn status_filter_values_bounds_and_admission() {
    let all = [StatusFilter::All, StatusFilter::Active, StatusFilter::Revoked, StatusFilter::Expired];
    for (value, filter) in (0u8..=3).zip(all) {
        assert_eq!(filter as u8, value);
        assert_eq!(StatusFilter::from_u8(value), Some(filter));
    }
    for value in 4..=u8::MAX {
        assert_eq!(StatusFilter::from_u8(value), None, "{value}");
    }
    assert_eq!(StatusFilter::default(), StatusFilter::All);
    let statuses = [TokenStatus::Active, TokenStatus::Revoked, TokenStatus::Expired];
    for status in statuses {
        assert!(StatusFilter::All.admits(status));
        for filter in [StatusFilter::Active, StatusFilter::Revoked, StatusFilter::Expired] {
            assert_eq!(filter.admits(status), filter as u8 == status as u8, "{filter:?} {status:?}");
        }
    }
}

#[test]
fn decision_values_and_bounds() {
    let all = [
        Decision::Allowed,
        Decision::Unknown,
        Decision::Expired,
        Decision::Revoked,
        Decision::Scope,
        Decision::Network,
        Decision::InactiveUser,
    ];
    for (value, decision) in (0u8..=6).zip(all) {
        assert_eq!(decision as u8, value);
        assert_eq!(Decision::from_u8(value), Some(decision));
    }
    for value in 7..=u8::MAX {
        assert_eq!(Decision::from_u8(value), None, "{value}");
    }
    let names: Vec<&str> = all.iter().map(|decision| decision.as_str()).collect();
    assert_eq!(names, ["allowed", "unknown", "expired", "revoked", "scope", "network", "inactive_user"]);
}

// ---------------------------------------------------------------------------
// TokenDetails (reply to 9101) and TokenPage (reply to 9102)
// ---------------------------------------------------------------------------

fn laptop() -> TokenDetails {
    TokenDetails {
        id: 3,
        name: "laptop".to_owned(),
        description: String::new(),
        status: TokenStatus::Active,
        created_at_us: 1_768_032_000_000_000,
        expires_at_us: 0,
        revoked_at_us: 0,
        last_used_at_us: 0,
        last_used_address: String::new(),
        scopes: vec![],
        networks: vec![],
    }
}

fn details_values() -> Vec<TokenDetails> {
    vec![
        laptop(),
        TokenDetails {
            id: 7,
            name: "ci-deploy".to_owned(),
            description: "GitHub Actions deploys".to_owned(),
            status: TokenStatus::Active,
            created_at_us: 1_772_443_800_000_000,
            expires_at_us: 1_775_035_800_000_000,
            revoked_at_us: 0,
            last_used_at_us: 1_772_719_927_123_456,
            last_used_address: "10.1.2.3:50412".to_owned(),
            scopes: strings(&["stream:orders:write", "tokens:read"]),
            networks: strings(&["10.0.0.0/8", "2001:db8::/32"]),
        },
        TokenDetails {
            id: u64::MAX,
            name: "ñame-✓".to_owned(),
            description: "d".repeat(256),
            status: TokenStatus::Revoked,
            created_at_us: 1,
            expires_at_us: 2,
            revoked_at_us: 3,
            last_used_at_us: 4,
            last_used_address: "[2001:db8::1]:443".to_owned(),
            scopes: strings(&["a:*:*"]),
            networks: strings(&["::1/128"]),
        },
        TokenDetails {
            status: TokenStatus::Expired,
            name: "n".repeat(255),
            expires_at_us: 1_700_000_000_000_000,
            ..laptop()
        },
    ]
}

#[test]
fn token_details_round_trip_and_truncations_fail() {
    for value in details_values() {
        check_body(&value);
    }
}

#[test]
fn token_details_smallest_entry_is_48_bytes() {
    // id, a 1-byte name, empty description, status, four timestamps, no
    // address, no scopes, no networks.
    let smallest = TokenDetails { name: "n".to_owned(), ..laptop() };
    assert_eq!(round_trip(&smallest).len(), 8 + 2 + 2 + 1 + 32 + 1 + 1 + 1);
    assert_eq!(smallest.encoded_size(), 48);
}

#[test]
fn token_details_unknown_status_is_invalid_format() {
    let bytes = encode_to_vec(&laptop());
    let status_at = 8 + 1 + "laptop".len() + 2;
    assert_eq!(bytes[status_at], TokenStatus::Active as u8);
    for status in (0..=u8::MAX).filter(|status| TokenStatus::from_u8(*status).is_none()) {
        let mut bad = bytes.clone();
        bad[status_at] = status;
        assert_eq!(decode_err::<TokenDetails>(&bad), ErrorCode::InvalidFormat, "status {status}");
        // Refused as soon as it is read: nothing after it is needed.
        assert_eq!(decode_err::<TokenDetails>(&bad[..=status_at]), ErrorCode::InvalidFormat);
    }
}

#[test]
fn token_details_strings() {
    let base = details_values()[1].clone();
    check_string_field(&TokenDetails { name: MARKER.to_owned(), ..base.clone() }, Field::WireName);
    check_string_field(&TokenDetails { description: MARKER.to_owned(), ..base.clone() }, Field::Text16);
    check_string_field(&TokenDetails { last_used_address: MARKER.to_owned(), ..base.clone() }, Field::Text8);
    for index in 0..2 {
        let mut value = base.clone();
        value.scopes[index] = MARKER.to_owned();
        check_string_field(&value, Field::WireName);
        let mut value = base.clone();
        value.networks[index] = MARKER.to_owned();
        check_string_field(&value, Field::WireName);
    }
}

fn pages() -> Vec<TokenPage> {
    vec![
        TokenPage { tokens: vec![], next_after_id: 0 },
        TokenPage { tokens: vec![laptop()], next_after_id: 3 },
        TokenPage { tokens: details_values(), next_after_id: 0 },
    ]
}

#[test]
fn token_page_round_trips_and_truncations_fail() {
    for page in pages() {
        let bytes = check_body(&page);
        assert_eq!(bytes[..4], u32::try_from(page.tokens.len()).unwrap().to_le_bytes());
        assert_eq!(bytes[4..12], page.next_after_id.to_le_bytes());
    }
    assert_eq!(encode_to_vec(&TokenPage::default()), [0; 12]);
}

#[test]
fn token_page_count_beyond_the_input_is_invalid_command() {
    // However large the count, decoding fails cleanly (and allocates only
    // for entries that fit in the input).
    for count in [1u32, 2, 1000, u32::MAX] {
        let mut bytes = count.to_le_bytes().to_vec();
        bytes.extend_from_slice(&[0; 8]);
        assert_eq!(decode_err::<TokenPage>(&bytes), ErrorCode::InvalidCommand, "count {count}");
        // One entry present, the rest missing.
        if count > 1 {
            bytes.extend_from_slice(&encode_to_vec(&laptop()));
            assert_eq!(decode_err::<TokenPage>(&bytes), ErrorCode::InvalidCommand, "count {count}");
        }
    }
}

#[test]
fn token_page_bad_entry_fails_the_whole_page() {
    let good = encode_to_vec(&TokenPage { tokens: vec![laptop(), laptop()], next_after_id: 0 });
    let second_at = 12 + laptop().encoded_size();
    // A zero-length name in the second entry.
    let mut bytes = good.clone();
    bytes[second_at + 8] = 0;
    assert_eq!(decode_err::<TokenPage>(&bytes), ErrorCode::InvalidFormat);
    // An unknown status in the second entry.
    let mut bytes = good.clone();
    bytes[second_at + 8 + 7 + 2] = 9;
    assert_eq!(decode_err::<TokenPage>(&bytes), ErrorCode::InvalidFormat);
    // Invalid UTF-8 in the second entry's name.
    let mut bytes = good;
    bytes[second_at + 9] = 0xff;
    assert_eq!(decode_err::<TokenPage>(&bytes), ErrorCode::InvalidFormat);
}

// ---------------------------------------------------------------------------
// ListTokens (9102)
// ---------------------------------------------------------------------------

#[test]
fn list_tokens_round_trips_and_truncations_fail() {
    for filter in [StatusFilter::All, StatusFilter::Active, StatusFilter::Revoked, StatusFilter::Expired] {
        for (after_id, limit) in [(0, 0), (3, 1), (u64::MAX, u32::MAX), (0x0102_0304_0506_0708, 1000)] {
            let value = ListTokens { filter, after_id, limit };
            let bytes = check_body(&value);
            assert_eq!(bytes.len(), 13);
            assert_eq!(bytes[0], filter as u8);
            assert_eq!(bytes[1..9], after_id.to_le_bytes());
            assert_eq!(bytes[9..], limit.to_le_bytes());
        }
    }
    assert_eq!(encode_to_vec(&ListTokens::default()), [0; 13]);
}

#[test]
fn list_tokens_unknown_filter_is_invalid_format() {
    for filter in 4..=u8::MAX {
        let mut bytes = vec![filter];
        assert_eq!(decode_err::<ListTokens>(&bytes), ErrorCode::InvalidFormat, "filter {filter}");
        bytes.extend_from_slice(&[0; 12]);
        assert_eq!(decode_err::<ListTokens>(&bytes), ErrorCode::InvalidFormat, "filter {filter}");
    }
}

// ---------------------------------------------------------------------------
// UpdateToken (9103)
// ---------------------------------------------------------------------------

fn update_values() -> Vec<UpdateToken> {
    let mut values = Vec::new();
    for token in [TokenSelector::Id(7), TokenSelector::Name("ci-deploy".to_owned())] {
        for name in [None, Some("ci-deploy-prod"), Some("ñ")] {
            for description in [None, Some(""), Some("deploys to production"), Some(&*"d".repeat(300))] {
                values.push(UpdateToken {
                    token: token.clone(),
                    name: name.map(str::to_owned),
                    description: description.map(str::to_owned),
                });
            }
        }
    }
    values
}

#[test]
fn update_token_every_combination_of_fields_round_trips() {
    for value in update_values() {
        let bytes = check_body(&value);
        let fields_at = value.token.encoded_size();
        let expected = u8::from(value.name.is_some()) | (u8::from(value.description.is_some()) << 1);
        assert_eq!(bytes[fields_at], expected, "{value:?}");
        assert_eq!(
            bytes.len(),
            fields_at
                + 1
                + value.name.as_ref().map_or(0, |name| 1 + name.len())
                + value.description.as_ref().map_or(0, |text| 2 + text.len())
        );
    }
}

#[test]
fn update_token_unknown_field_bits_are_invalid_format() {
    let selector = encode_to_vec(&TokenSelector::Id(7));
    for fields in (0..=u8::MAX).filter(|fields| fields & !0b11 != 0) {
        let mut bytes = selector.clone();
        bytes.push(fields);
        // Refused on the flags byte, before any field is read.
        assert_eq!(decode_err::<UpdateToken>(&bytes), ErrorCode::InvalidFormat, "fields {fields:#010b}");
        bytes.extend_from_slice(b"\x03abc\x00\x00");
        assert_eq!(decode_err::<UpdateToken>(&bytes), ErrorCode::InvalidFormat, "fields {fields:#010b}");
    }
}

#[test]
fn update_token_announced_fields_must_be_present() {
    let selector = encode_to_vec(&TokenSelector::Id(7));
    for fields in [0b01u8, 0b10, 0b11] {
        let mut bytes = selector.clone();
        bytes.push(fields);
        assert_eq!(decode_err::<UpdateToken>(&bytes), ErrorCode::InvalidCommand, "fields {fields}");
    }
}

#[test]
fn update_token_strings_and_selectors() {
    let base = UpdateToken {
        token: TokenSelector::Id(7),
        name: Some("ci-deploy-prod".to_owned()),
        description: Some("about".to_owned()),
    };
    check_string_field(&UpdateToken { name: Some(MARKER.to_owned()), ..base.clone() }, Field::WireName);
    check_string_field(&UpdateToken { description: Some(MARKER.to_owned()), ..base.clone() }, Field::Text16);
    check_string_field(
        &UpdateToken { token: TokenSelector::Name(MARKER.to_owned()), ..base },
        Field::WireName,
    );
    for kind in unknown_selector_kinds() {
        assert_eq!(decode_err::<UpdateToken>(&[kind, 7, 0, 0, 0, 0, 0, 0, 0, 0]), ErrorCode::InvalidFormat);
    }
}

// ---------------------------------------------------------------------------
// RotateToken (9105)
// ---------------------------------------------------------------------------

fn rotate(token: TokenSelector, expiry_us: u64, reactivate: bool) -> RotateToken {
    RotateToken { token, expiry_us, reactivate }
}

#[test]
fn rotate_token_round_trips_and_truncations_fail() {
    for token in selectors() {
        for expiry_us in [EXPIRY_KEEP, 1, 3_600_000_000, EXPIRY_NEVER] {
            // Without the flag: the bytes of every rotate before flags existed.
            let plain = rotate(token.clone(), expiry_us, false);
            let bytes = round_trip(&plain);
            assert_eq!(bytes[..bytes.len() - 8], encode_to_vec(&token));
            assert_eq!(bytes[bytes.len() - 8..], expiry_us.to_le_bytes());
            assert_truncations::<RotateToken>(&bytes, &[]);
            // With it: one more byte, flags 1; the body without it is whole.
            let reactivating = rotate(token.clone(), expiry_us, true);
            let flagged = round_trip(&reactivating);
            assert_eq!(flagged[..flagged.len() - 1], bytes);
            assert_eq!(flagged[flagged.len() - 1], 1);
            assert_truncations::<RotateToken>(&flagged, &[bytes.len()]);
        }
    }
}

#[test]
fn rotate_token_flags_are_optional_and_unknown_bits_are_invalid_format() {
    let plain = encode_to_vec(&rotate(TokenSelector::Id(7), EXPIRY_KEEP, false));
    // A flags byte of 0 means what no byte means.
    let mut zero = plain.clone();
    zero.push(0);
    assert_eq!(decode_exact::<RotateToken>(&zero), Ok(rotate(TokenSelector::Id(7), EXPIRY_KEEP, false)));
    for flags in 2..=u8::MAX {
        let mut bytes = plain.clone();
        bytes.push(flags);
        assert_eq!(decode_err::<RotateToken>(&bytes), ErrorCode::InvalidFormat, "flags {flags:#010b}");
    }
    // Past the flags, bytes are trailing: left unread, and refused whole.
    let mut longer = encode_to_vec(&rotate(TokenSelector::Id(7), EXPIRY_KEEP, true));
    longer.push(1);
    assert_eq!(RotateToken::decode(&longer).unwrap().1, longer.len() - 1);
    assert_eq!(decode_exact::<RotateToken>(&longer), Err(ErrorCode::InvalidCommand));
}

#[test]
fn rotate_token_strings_and_selectors() {
    for reactivate in [false, true] {
        let value = rotate(TokenSelector::Name(MARKER.to_owned()), 0, reactivate);
        check_string_field(&value, Field::WireName);
    }
    for kind in unknown_selector_kinds() {
        let mut bytes = vec![kind];
        bytes.extend_from_slice(&[0; 16]);
        assert_eq!(decode_err::<RotateToken>(&bytes), ErrorCode::InvalidFormat);
    }
}

// ---------------------------------------------------------------------------
// EditTokenAccess (9109)
// ---------------------------------------------------------------------------

fn every_edit() -> Vec<AccessEdit> {
    vec![
        AccessEdit::AddScope("stream:payments:read".to_owned()),
        AccessEdit::RemoveScope("tokens:read".to_owned()),
        AccessEdit::ClearScopes,
        AccessEdit::AddNetwork("192.0.2.0/24".to_owned()),
        AccessEdit::RemoveNetwork("2001:db8::/32".to_owned()),
        AccessEdit::ClearNetworks,
    ]
}

fn edit_values() -> Vec<EditTokenAccess> {
    let mut values = Vec::new();
    for token in selectors() {
        values.push(EditTokenAccess { token: token.clone(), edits: Vec::new() });
        values.push(EditTokenAccess { token: token.clone(), edits: every_edit() });
        for edit in every_edit() {
            values.push(EditTokenAccess { token: token.clone(), edits: vec![edit] });
        }
    }
    let long = AccessEdit::AddScope("s".repeat(255));
    values.push(EditTokenAccess { token: TokenSelector::Id(7), edits: vec![long; ACCESS_EDITS_MAX] });
    values
}

#[test]
fn edit_token_access_round_trips_and_truncations_fail() {
    for value in edit_values() {
        let bytes = check_body(&value);
        let count_at = value.token.encoded_size();
        assert_eq!(usize::from(bytes[count_at]), value.edits.len());
    }
}

#[test]
fn edit_token_access_layout() {
    let ops: Vec<(AccessEdit, Vec<u8>)> = vec![
        (AccessEdit::AddScope("a:b:c".to_owned()), b"\x01\x05a:b:c".to_vec()),
        (AccessEdit::RemoveScope("a:b:c".to_owned()), b"\x02\x05a:b:c".to_vec()),
        (AccessEdit::ClearScopes, vec![3]),
        (AccessEdit::AddNetwork("::1".to_owned()), b"\x04\x03::1".to_vec()),
        (AccessEdit::RemoveNetwork("::1".to_owned()), b"\x05\x03::1".to_vec()),
        (AccessEdit::ClearNetworks, vec![6]),
    ];
    for (edit, expected) in ops {
        let bytes =
            encode_to_vec(&EditTokenAccess { token: TokenSelector::Id(7), edits: vec![edit.clone()] });
        assert_eq!(bytes[..9], [1, 7, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(bytes[9], 1, "count");
        assert_eq!(bytes[10..], expected, "{edit:?}");
    }
}

#[test]
fn edit_token_access_unknown_ops_are_invalid_format() {
    let selector = encode_to_vec(&TokenSelector::Id(7));
    for op in (0..=u8::MAX).filter(|op| !(1..=6).contains(op)) {
        let mut bytes = selector.clone();
        bytes.extend_from_slice(&[1, op]);
        // Refused on the op byte, before any item is read.
        assert_eq!(decode_err::<EditTokenAccess>(&bytes), ErrorCode::InvalidFormat, "op {op}");
        bytes.extend_from_slice(b"\x03abc");
        assert_eq!(decode_err::<EditTokenAccess>(&bytes), ErrorCode::InvalidFormat, "op {op}");
    }
}

#[test]
fn edit_token_access_strings_and_counts() {
    let with = |edit: AccessEdit| EditTokenAccess {
        token: TokenSelector::Id(7),
        edits: vec![AccessEdit::ClearScopes, edit, AccessEdit::ClearNetworks],
    };
    check_string_field(&with(AccessEdit::AddScope(MARKER.to_owned())), Field::WireName);
    check_string_field(&with(AccessEdit::RemoveScope(MARKER.to_owned())), Field::WireName);
    check_string_field(&with(AccessEdit::AddNetwork(MARKER.to_owned())), Field::WireName);
    check_string_field(&with(AccessEdit::RemoveNetwork(MARKER.to_owned())), Field::WireName);
    check_string_field(
        &EditTokenAccess { token: TokenSelector::Name(MARKER.to_owned()), edits: every_edit() },
        Field::WireName,
    );
    for kind in unknown_selector_kinds() {
        assert_eq!(
            decode_err::<EditTokenAccess>(&[kind, 7, 0, 0, 0, 0, 0, 0, 0, 0]),
            ErrorCode::InvalidFormat
        );
    }
    // A count promising more edits than follow.
    let mut bytes = encode_to_vec(&with(AccessEdit::ClearScopes));
    bytes[9] = 4;
    assert_eq!(decode_err::<EditTokenAccess>(&bytes), ErrorCode::InvalidCommand);
}

#[test]
#[should_panic(expected = "more than 255 access edits")]
fn encoding_256_access_edits_panics_rather_than_truncating() {
    let edits = vec![AccessEdit::ClearScopes; ACCESS_EDITS_MAX + 1];
    encode_to_vec(&EditTokenAccess { token: TokenSelector::Id(7), edits });
}

#[test]
fn expiry_constants() {
    // 0 means "server default" on create and "keep" on rotate; u64::MAX is never.
    assert_eq!(EXPIRY_SERVER_DEFAULT, 0);
    assert_eq!(EXPIRY_KEEP, 0);
    assert_eq!(EXPIRY_NEVER, u64::MAX);
}

// ---------------------------------------------------------------------------
// Count (reply to 9107 and 9108)
// ---------------------------------------------------------------------------

#[test]
fn count_round_trips_and_truncations_fail() {
    for count in [0, 1, 2, 0x0102_0304, u32::MAX] {
        let bytes = check_body(&Count { count });
        assert_eq!(bytes, count.to_le_bytes());
    }
}

// ---------------------------------------------------------------------------
// Authorize (9110) and AuthorizeDecision (its reply)
// ---------------------------------------------------------------------------

fn authorize(token: &str, scope: &str, address: &str) -> Authorize {
    Authorize { token: token.into(), scope: scope.into(), address: address.into() }
}

#[test]
fn authorize_round_trips_and_truncations_fail() {
    for value in [
        authorize(&raw_token(0x11), "stream:orders:write", "10.1.2.3:50412"),
        authorize(&raw_token(0x22), "", ""),
        authorize(&raw_token(0x33), "tokens:read", "[2001:db8::1]:443"),
        authorize(&raw_token(0x44), "", "192.0.2.7"),
        authorize("x", &"s".repeat(255), &"a".repeat(255)),
    ] {
        let bytes = check_body(&value);
        assert_eq!(bytes.len(), 3 + value.token.len() + value.scope.len() + value.address.len());
    }
}

#[test]
fn authorize_strings() {
    let token = raw_token(0x11);
    check_string_field(&authorize(MARKER, "tokens:read", "10.1.2.3:1"), Field::WireName);
    check_string_field(&authorize(&token, MARKER, "10.1.2.3:1"), Field::Text8);
    check_string_field(&authorize(&token, "tokens:read", MARKER), Field::Text8);
    // Empty input and a zero-length token.
    assert_eq!(decode_err::<Authorize>(&[]), ErrorCode::InvalidCommand);
    assert_eq!(decode_err::<Authorize>(&[0, 0, 0]), ErrorCode::InvalidFormat);
}

fn decision(
    decision: Decision,
    user_id: u32,
    username: &str,
    token_id: u64,
    expires_at_us: u64,
) -> AuthorizeDecision {
    AuthorizeDecision { decision, user_id, username: username.to_owned(), token_id, expires_at_us }
}

#[test]
fn authorize_decision_every_decision_round_trips_and_truncations_fail() {
    for value in 0..=6 {
        let kind = Decision::from_u8(value).unwrap();
        for body in [
            decision(kind, 1, "alice", 7, 1_775_035_800_000_000),
            decision(kind, u32::MAX, &"u".repeat(255), u64::MAX, u64::MAX),
            decision(kind, 0, "", 0, 0),
        ] {
            let bytes = check_body(&body);
            assert_eq!(bytes[0], value);
            assert_eq!(bytes.len(), 1 + 4 + 1 + body.username.len() + 8 + 8);
            assert_eq!(body.allowed(), kind == Decision::Allowed);
        }
    }
}

#[test]
fn authorize_decision_unknown_value_is_invalid_format() {
    let bytes = encode_to_vec(&decision(Decision::Allowed, 1, "alice", 7, 0));
    for value in 7..=u8::MAX {
        let mut bad = bytes.clone();
        bad[0] = value;
        assert_eq!(decode_err::<AuthorizeDecision>(&bad), ErrorCode::InvalidFormat, "decision {value}");
        assert_eq!(decode_err::<AuthorizeDecision>(&[value]), ErrorCode::InvalidFormat);
    }
}

#[test]
fn authorize_decision_strings() {
    check_string_field(&decision(Decision::Scope, 1, MARKER, 7, 0), Field::Text8);
}

// ---------------------------------------------------------------------------
// Secrets stay out of Debug output
// ---------------------------------------------------------------------------

#[test]
fn raw_tokens_are_redacted_from_debug_output() {
    let secret = raw_token(0x5a);
    let shown = format!("{:?}", issued(7, &secret, 1_772_443_800_000_000, 0));
    assert!(!shown.contains(&secret), "{shown}");
    assert!(!shown.contains(&secret[3..20]), "{shown}");
    assert!(shown.contains("1772443800000000"), "{shown}");
    let shown = format!("{:#?}", issued(7, &secret, 1, 0));
    assert!(!shown.contains(&secret), "{shown}");

    let shown = format!("{:?}", authorize(&secret, "stream:orders:write", "10.1.2.3:50412"));
    assert!(!shown.contains(&secret), "{shown}");
    assert!(!shown.contains(&secret[3..20]), "{shown}");
    // The scope and address are not secrets and help debugging.
    assert!(shown.contains("stream:orders:write") && shown.contains("10.1.2.3:50412"), "{shown}");

    // Nor through the request that carries it.
    let request = Request::decode(codes::AUTHORIZE, &encode_to_vec(&authorize(&secret, "", ""))).unwrap();
    let shown = format!("{request:?}");
    assert!(!shown.contains(&secret), "{shown}");
}

// ---------------------------------------------------------------------------
// Request::decode for the extension codes
// ---------------------------------------------------------------------------

/// One valid body per extension code that takes a body, and the request it
/// decodes to.
fn extension_requests() -> Vec<(u32, Vec<u8>, Request)> {
    let create = create("ci-deploy", "d", 0, &["tokens:read"], &["10.0.0.0/8"]);
    let get = GetToken { token: TokenSelector::Id(7) };
    let list = ListTokens { filter: StatusFilter::Active, after_id: 3, limit: 10 };
    let update = UpdateToken { token: TokenSelector::Id(7), name: Some("abc".to_owned()), description: None };
    let revoke = RevokeToken { token: TokenSelector::Name("laptop".to_owned()) };
    let rotate = rotate(TokenSelector::Id(7), EXPIRY_KEEP, false);
    let delete = DeleteToken { token: TokenSelector::Id(3) };
    let edit = EditTokenAccess { token: TokenSelector::Id(7), edits: every_edit() };
    let check = authorize(&raw_token(0x11), "stream:orders:write", "10.1.2.3:50412");
    vec![
        (codes::CREATE_TOKEN, encode_to_vec(&create), Request::CreateToken(create)),
        (codes::GET_TOKEN, encode_to_vec(&get), Request::GetToken(get)),
        (codes::LIST_TOKENS, encode_to_vec(&list), Request::ListTokens(list)),
        (codes::UPDATE_TOKEN, encode_to_vec(&update), Request::UpdateToken(update)),
        (codes::REVOKE_TOKEN, encode_to_vec(&revoke), Request::RevokeToken(revoke)),
        (codes::ROTATE_TOKEN, encode_to_vec(&rotate), Request::RotateToken(rotate)),
        (codes::DELETE_TOKEN, encode_to_vec(&delete), Request::DeleteToken(delete)),
        (codes::EDIT_TOKEN_ACCESS, encode_to_vec(&edit), Request::EditTokenAccess(edit)),
        (codes::AUTHORIZE, encode_to_vec(&check), Request::Authorize(check)),
    ]
}

#[test]
fn extension_codes_decode_their_bodies() {
    for (code, body, expected) in extension_requests() {
        let request = Request::decode(code, &body).unwrap_or_else(|e| panic!("code {code}: {e:?}"));
        assert_eq!(request, expected, "code {code}");
        assert!(!request.allowed_before_login(), "code {code}");
    }
    for (code, expected) in [
        (codes::REVOKE_ALL_TOKENS, Request::RevokeAllTokens),
        (codes::DELETE_ALL_TOKENS, Request::DeleteAllTokens),
    ] {
        let request = Request::decode(code, &[]).unwrap();
        assert_eq!(request, expected);
        assert!(!request.allowed_before_login());
    }
}

#[test]
fn extension_codes_that_take_a_body_refuse_an_empty_one_with_3() {
    for (code, _, _) in extension_requests() {
        assert_eq!(Request::decode(code, &[]), Err(ErrorCode::InvalidCommand), "code {code}");
    }
}

#[test]
fn extension_bodies_truncated_or_with_trailing_bytes_are_3() {
    for (code, body, _) in extension_requests() {
        for cut in 1..body.len() {
            assert_eq!(
                Request::decode(code, &body[..cut]),
                Err(ErrorCode::InvalidCommand),
                "code {code} cut {cut}"
            );
        }
        // One byte more is trailing, but for RotateToken, whose optional
        // flags byte it is: two bytes more are trailing for every body.
        let extra: &[u8] = if code == codes::ROTATE_TOKEN { &[0, 0] } else { &[0] };
        let mut longer = body.clone();
        longer.extend_from_slice(extra);
        assert_eq!(Request::decode(code, &longer), Err(ErrorCode::InvalidCommand), "code {code}");
    }
}

#[test]
fn extension_bodies_with_malformed_fields_are_4() {
    // A zero-length WireName first (name, selector name, token) or an
    // unknown selector kind or filter.
    let cases: [(u32, &[u8]); 10] = [
        (codes::CREATE_TOKEN, &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
        (codes::GET_TOKEN, &[3, 7, 0, 0, 0, 0, 0, 0, 0]),
        (codes::LIST_TOKENS, &[4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
        (codes::UPDATE_TOKEN, &[1, 7, 0, 0, 0, 0, 0, 0, 0, 0b100]),
        (codes::REVOKE_TOKEN, &[2, 0]),
        (codes::ROTATE_TOKEN, &[0, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
        (codes::ROTATE_TOKEN, &[1, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]),
        (codes::EDIT_TOKEN_ACCESS, &[1, 7, 0, 0, 0, 0, 0, 0, 0, 1, 7]),
        (codes::DELETE_TOKEN, &[2, 2, 0xc3, 0x28]),
        (codes::AUTHORIZE, &[0, 0, 0]),
    ];
    for (code, body) in cases {
        assert_eq!(Request::decode(code, body), Err(ErrorCode::InvalidFormat), "code {code}");
    }
}

#[test]
fn revoke_all_and_delete_all_refuse_a_body_with_3() {
    for code in [codes::REVOKE_ALL_TOKENS, codes::DELETE_ALL_TOKENS] {
        for body in [&[0u8][..], &[1, 2, 3, 4], &[0; 9]] {
            assert_eq!(Request::decode(code, body), Err(ErrorCode::InvalidCommand), "code {code}");
        }
    }
}

#[test]
fn extension_range_is_outside_iggy_and_unassigned_codes_are_3() {
    assert_eq!(codes::EXTENSION_CODES, 9100..=9199);
    let assigned = [
        codes::CREATE_TOKEN,
        codes::GET_TOKEN,
        codes::LIST_TOKENS,
        codes::UPDATE_TOKEN,
        codes::REVOKE_TOKEN,
        codes::ROTATE_TOKEN,
        codes::DELETE_TOKEN,
        codes::REVOKE_ALL_TOKENS,
        codes::DELETE_ALL_TOKENS,
        codes::EDIT_TOKEN_ACCESS,
        codes::AUTHORIZE,
    ];
    assert_eq!(assigned, [9100, 9101, 9102, 9103, 9104, 9105, 9106, 9107, 9108, 9109, 9110]);
    for code in codes::EXTENSION_CODES {
        assert!(!codes::is_iggy_code(code), "{code} is an Iggy code");
        if !assigned.contains(&code) {
            // 9111–9199 are reserved: unknown commands, like any
            // code Iggy does not define.
            assert_eq!(Request::decode(code, &[]), Err(ErrorCode::InvalidCommand), "code {code}");
            assert_eq!(Request::decode(code, &[1, 2, 3]), Err(ErrorCode::InvalidCommand), "code {code}");
        }
    }
    // Just outside the range, and Iggy's highest code.
    assert!(!codes::is_iggy_code(9099) && !codes::is_iggy_code(9200));
    assert!(codes::is_iggy_code(606));
}

#[test]
fn request_types_carry_their_codes() {
    assert_eq!(CreateToken::CODE, 9100);
    assert_eq!(GetToken::CODE, 9101);
    assert_eq!(ListTokens::CODE, 9102);
    assert_eq!(UpdateToken::CODE, 9103);
    assert_eq!(RevokeToken::CODE, 9104);
    assert_eq!(RotateToken::CODE, 9105);
    assert_eq!(DeleteToken::CODE, 9106);
    assert_eq!(RevokeAllTokens::CODE, 9107);
    assert_eq!(DeleteAllTokens::CODE, 9108);
    assert_eq!(EditTokenAccess::CODE, 9109);
    assert_eq!(Authorize::CODE, 9110);
}

// ---------------------------------------------------------------------------
// The byte-level examples of docs/protocol.md
//
// Each example is pinned three ways: the hex below, what the encoder writes
// for the example's values, and the example block in the document. The hex
// here is the document's, so neither the code nor the document can drift.
// ---------------------------------------------------------------------------

/// The document, read at compile time.
const PROTOCOL_MD: &str = include_str!("../../docs/protocol.md");

/// The tokens of the examples: made up, but well formed (length, alphabet,
/// checksum), the encodings of two fixed secrets.
const EXAMPLE_TOKEN: &str = "lk_42un7GJ8wIAbHDnhePy2Mqo9gkXYFS7sXjeCn1f4haT0QM1Eh";
const ROTATED_TOKEN: &str = "lk_85paEWcHsaLCYRbPIpw4jhcJNV56UuFl5TIPa3K9PAw4gH7yl";

/// 2026-03-02T09:30:00Z.
const CREATED_AT_US: u64 = 1_772_443_800_000_000;
const THIRTY_DAYS_US: u64 = 30 * 86_400 * 1_000_000;
/// 2026-04-01T09:30:00Z.
const EXPIRES_AT_US: u64 = CREATED_AT_US + THIRTY_DAYS_US;
/// 2026-03-05T14:12:07.123456Z.
const LAST_USED_AT_US: u64 = 1_772_719_927_123_456;

const CREATE_REQUEST: &str = "\
    69 00 00 00 8c 23 00 00 09 63 69 2d 64 65 70 6c 6f 79 16 00 47 69 74 48 75 62 20 41 63 74 69 6f \
    6e 73 20 64 65 70 6c 6f 79 73 00 40 3d 7f 5b 02 00 00 02 13 73 74 72 65 61 6d 3a 6f 72 64 65 72 \
    73 3a 77 72 69 74 65 0b 74 6f 6b 65 6e 73 3a 72 65 61 64 02 0a 31 30 2e 30 2e 30 2e 30 2f 38 0d \
    32 30 30 31 3a 64 62 38 3a 3a 2f 33 32
";
const CREATE_REPLY: &str = "\
    00 00 00 00 4d 00 00 00 07 00 00 00 00 00 00 00 34 6c 6b 5f 34 32 75 6e 37 47 4a 38 77 49 41 62 \
    48 44 6e 68 65 50 79 32 4d 71 6f 39 67 6b 58 59 46 53 37 73 58 6a 65 43 6e 31 66 34 68 61 54 30 \
    51 4d 31 45 68 00 56 15 3b 07 4c 06 00 00 96 52 ba 62 4e 06 00
";
const CREATE_ERROR: &str = "26 4e 00 00 00 00 00 00";
const GET_REQUEST: &str = "0d 00 00 00 8d 23 00 00 01 07 00 00 00 00 00 00 00";
const GET_REPLY: &str = "\
    00 00 00 00 95 00 00 00 07 00 00 00 00 00 00 00 09 63 69 2d 64 65 70 6c 6f 79 16 00 47 69 74 48 \
    75 62 20 41 63 74 69 6f 6e 73 20 64 65 70 6c 6f 79 73 01 00 56 15 3b 07 4c 06 00 00 96 52 ba 62 \
    4e 06 00 00 00 00 00 00 00 00 00 00 de 8a 85 47 4c 06 00 0e 31 30 2e 31 2e 32 2e 33 3a 35 30 34 \
    31 32 02 13 73 74 72 65 61 6d 3a 6f 72 64 65 72 73 3a 77 72 69 74 65 0b 74 6f 6b 65 6e 73 3a 72 \
    65 61 64 02 0a 31 30 2e 30 2e 30 2e 30 2f 38 0d 32 30 30 31 3a 64 62 38 3a 3a 2f 33 32
";
const GET_ERROR: &str = "14 00 00 00 00 00 00 00";
const LIST_REQUEST: &str = "11 00 00 00 8e 23 00 00 01 00 00 00 00 00 00 00 00 01 00 00 00";
const LIST_REPLY: &str = "\
    00 00 00 00 41 00 00 00 01 00 00 00 03 00 00 00 00 00 00 00 03 00 00 00 00 00 00 00 06 6c 61 70 \
    74 6f 70 00 00 01 00 c0 4f 07 04 48 06 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 \
    00 00 00 00 00 00 00 00 00
";
const UPDATE_REQUEST: &str = "\
    34 00 00 00 8f 23 00 00 01 07 00 00 00 00 00 00 00 03 0e 63 69 2d 64 65 70 6c 6f 79 2d 70 72 6f \
    64 15 00 64 65 70 6c 6f 79 73 20 74 6f 20 70 72 6f 64 75 63 74 69 6f 6e
";
const UPDATE_REPLY: &str = "00 00 00 00 00 00 00 00";
const UPDATE_ERROR: &str = "33 00 00 00 00 00 00 00";
const REVOKE_REQUEST: &str = "0c 00 00 00 90 23 00 00 02 06 6c 61 70 74 6f 70";
const REVOKE_REPLY: &str = "00 00 00 00 00 00 00 00";
const ROTATE_REQUEST: &str = "15 00 00 00 91 23 00 00 01 07 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00";
const ROTATE_REPLY: &str = "\
    00 00 00 00 4d 00 00 00 07 00 00 00 00 00 00 00 34 6c 6b 5f 38 35 70 61 45 57 63 48 73 61 4c 43 \
    59 52 62 50 49 70 77 34 6a 68 63 4a 4e 56 35 36 55 75 46 6c 35 54 49 50 61 33 4b 39 50 41 77 34 \
    67 48 37 79 6c 00 56 15 3b 07 4c 06 00 00 96 52 ba 62 4e 06 00
";
const ROTATE_ERROR: &str = "23 4e 00 00 00 00 00 00";
/// 2026-04-20T08:00:00Z: when token 7, revoked, is brought back.
const REACTIVATED_AT_US: u64 = 1_776_672_000_000_000;
const REACTIVATE_REQUEST: &str =
    "16 00 00 00 91 23 00 00 01 07 00 00 00 00 00 00 00 00 40 3d 7f 5b 02 00 00 01";
const REACTIVATE_REPLY: &str = "\
    00 00 00 00 4d 00 00 00 07 00 00 00 00 00 00 00 34 6c 6b 5f 38 35 70 61 45 57 63 48 73 61 4c 43 \
    59 52 62 50 49 70 77 34 6a 68 63 4a 4e 56 35 36 55 75 46 6c 35 54 49 50 61 33 4b 39 50 41 77 34 \
    67 48 37 79 6c 00 56 15 3b 07 4c 06 00 00 80 ae 2e 3b 52 06 00
";
const DELETE_REQUEST: &str = "0d 00 00 00 92 23 00 00 01 03 00 00 00 00 00 00 00";
const DELETE_REPLY: &str = "00 00 00 00 00 00 00 00";
const REVOKE_ALL_REQUEST: &str = "04 00 00 00 93 23 00 00";
const REVOKE_ALL_REPLY: &str = "00 00 00 00 04 00 00 00 02 00 00 00";
const DELETE_ALL_REQUEST: &str = "04 00 00 00 94 23 00 00";
const DELETE_ALL_REPLY: &str = "00 00 00 00 04 00 00 00 05 00 00 00";
const DELETE_ALL_ERROR: &str = "2a 4e 00 00 00 00 00 00";
const EDIT_REQUEST: &str = "\
    40 00 00 00 95 23 00 00 01 07 00 00 00 00 00 00 00 03 01 14 73 74 72 65 61 6d 3a 70 61 79 6d 65 \
    6e 74 73 3a 72 65 61 64 02 0b 74 6f 6b 65 6e 73 3a 72 65 61 64 05 0d 32 30 30 31 3a 64 62 38 3a \
    3a 2f 33 32
";
const EDIT_REPLY: &str = "00 00 00 00 00 00 00 00";
const EDIT_CLEAR_REQUEST: &str = "0f 00 00 00 95 23 00 00 01 07 00 00 00 00 00 00 00 01 06";
const EDIT_ERROR: &str = "25 4e 00 00 00 00 00 00";
const AUTHORIZE_REQUEST: &str = "\
    5c 00 00 00 96 23 00 00 34 6c 6b 5f 34 32 75 6e 37 47 4a 38 77 49 41 62 48 44 6e 68 65 50 79 32 \
    4d 71 6f 39 67 6b 58 59 46 53 37 73 58 6a 65 43 6e 31 66 34 68 61 54 30 51 4d 31 45 68 13 73 74 \
    72 65 61 6d 3a 6f 72 64 65 72 73 3a 77 72 69 74 65 0e 31 30 2e 31 2e 32 2e 33 3a 35 30 34 31 32
";
const AUTHORIZE_REPLY: &str = "\
    00 00 00 00 1b 00 00 00 00 01 00 00 00 05 61 6c 69 63 65 07 00 00 00 00 00 00 00 00 96 52 ba 62 \
    4e 06 00
";
const AUTHORIZE_REPLY_NETWORK: &str = "\
    00 00 00 00 1b 00 00 00 05 01 00 00 00 05 61 6c 69 63 65 07 00 00 00 00 00 00 00 00 96 52 ba 62 \
    4e 06 00
";
const AUTHORIZE_REPLY_UNKNOWN: &str =
    "00 00 00 00 16 00 00 00 01 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00";
const AUTHORIZE_ERROR: &str = "2b 4e 00 00 00 00 00 00";
const SESSION_ENDED: &str = "28 00 00 00 00 00 00 00";

fn example_create() -> CreateToken {
    create(
        "ci-deploy",
        "GitHub Actions deploys",
        THIRTY_DAYS_US,
        &["stream:orders:write", "tokens:read"],
        &["10.0.0.0/8", "2001:db8::/32"],
    )
}

fn example_details() -> TokenDetails {
    TokenDetails {
        id: 7,
        name: "ci-deploy".to_owned(),
        description: "GitHub Actions deploys".to_owned(),
        status: TokenStatus::Active,
        created_at_us: CREATED_AT_US,
        expires_at_us: EXPIRES_AT_US,
        revoked_at_us: 0,
        last_used_at_us: LAST_USED_AT_US,
        last_used_address: "10.1.2.3:50412".to_owned(),
        scopes: strings(&["stream:orders:write", "tokens:read"]),
        networks: strings(&["10.0.0.0/8", "2001:db8::/32"]),
    }
}

fn example_list() -> ListTokens {
    ListTokens { filter: StatusFilter::Active, after_id: 0, limit: 1 }
}

fn example_page() -> TokenPage {
    TokenPage { tokens: vec![laptop()], next_after_id: 3 }
}

fn example_update() -> UpdateToken {
    UpdateToken {
        token: TokenSelector::Id(7),
        name: Some("ci-deploy-prod".to_owned()),
        description: Some("deploys to production".to_owned()),
    }
}

fn example_reactivate() -> RotateToken {
    rotate(TokenSelector::Id(7), THIRTY_DAYS_US, true)
}

fn example_edit() -> EditTokenAccess {
    EditTokenAccess {
        token: TokenSelector::Id(7),
        edits: vec![
            AccessEdit::AddScope("stream:payments:read".to_owned()),
            AccessEdit::RemoveScope("tokens:read".to_owned()),
            AccessEdit::RemoveNetwork("2001:db8::/32".to_owned()),
        ],
    }
}

fn example_edit_clear() -> EditTokenAccess {
    EditTokenAccess { token: TokenSelector::Id(7), edits: vec![AccessEdit::ClearNetworks] }
}

fn example_authorize() -> Authorize {
    authorize(EXAMPLE_TOKEN, "stream:orders:write", "10.1.2.3:50412")
}

fn example_decision(kind: Decision) -> AuthorizeDecision {
    decision(kind, 1, "alice", 7, EXPIRES_AT_US)
}

/// The reply to the reactivation: the same id and creation time, the new
/// secret, and an expiry 30 days after the reactivation.
fn example_reactivated() -> IssuedToken {
    issued(7, ROTATED_TOKEN, CREATED_AT_US, REACTIVATED_AT_US + THIRTY_DAYS_US)
}

fn request_frame<T: Command>(body: &T) -> Vec<u8> {
    let mut dst = BytesMut::new();
    encode_request(T::CODE, body, &mut dst);
    dst.to_vec()
}

fn ok_frame(body: &dyn WireEncode) -> Vec<u8> {
    let mut dst = BytesMut::new();
    encode_reply(Reply::Ok(body), &mut dst);
    dst.to_vec()
}

fn error_frame(code: ErrorCode) -> Vec<u8> {
    let mut dst = BytesMut::new();
    encode_reply(Reply::Err(code), &mut dst);
    dst.to_vec()
}

/// Whitespace-separated pairs of hex digits.
fn hex(text: &str) -> Vec<u8> {
    text.split_whitespace()
        .map(|pair| {
            assert_eq!(pair.len(), 2, "{pair:?} is not one byte");
            u8::from_str_radix(pair, 16).unwrap_or_else(|_| panic!("{pair:?} is not hex"))
        })
        .collect()
}

/// The example blocks of the document by label. A block is fenced as
/// ```` ```text example=<label> ````; each of its lines is a hex column (bytes
/// separated by single spaces), then two or more spaces and an annotation.
fn doc_examples() -> BTreeMap<&'static str, Vec<u8>> {
    let mut examples = BTreeMap::new();
    let mut lines = PROTOCOL_MD.lines();
    while let Some(line) = lines.next() {
        let Some(label) = line.strip_prefix("```text example=") else { continue };
        let mut bytes = Vec::new();
        for line in lines.by_ref() {
            if line == "```" {
                break;
            }
            let column = line.split("  ").next().unwrap_or_default();
            assert!(!column.is_empty(), "example {label}: line {line:?} has no bytes");
            bytes.extend(hex(column));
        }
        assert!(examples.insert(label, bytes).is_none(), "example {label} appears twice");
    }
    examples
}

/// Every example: its label in the document, the pinned hex, and the frame
/// the encoder writes for the example's values.
fn examples() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let issued = |token: &str| issued(7, token, CREATED_AT_US, EXPIRES_AT_US);
    vec![
        ("9100-request", CREATE_REQUEST, request_frame(&example_create())),
        ("9100-reply", CREATE_REPLY, ok_frame(&issued(EXAMPLE_TOKEN))),
        ("9100-error", CREATE_ERROR, error_frame(ErrorCode::LifetimeNotAllowed)),
        ("9101-request", GET_REQUEST, request_frame(&GetToken { token: TokenSelector::Id(7) })),
        ("9101-reply", GET_REPLY, ok_frame(&example_details())),
        ("9101-error", GET_ERROR, error_frame(ErrorCode::ResourceNotFound)),
        ("9102-request", LIST_REQUEST, request_frame(&example_list())),
        ("9102-reply", LIST_REPLY, ok_frame(&example_page())),
        ("9103-request", UPDATE_REQUEST, request_frame(&example_update())),
        ("9103-reply", UPDATE_REPLY, ok_frame(&Empty)),
        ("9103-error", UPDATE_ERROR, error_frame(ErrorCode::PersonalAccessTokenAlreadyExists)),
        (
            "9104-request",
            REVOKE_REQUEST,
            request_frame(&RevokeToken { token: TokenSelector::from("laptop") }),
        ),
        ("9104-reply", REVOKE_REPLY, ok_frame(&Empty)),
        ("9105-request", ROTATE_REQUEST, request_frame(&rotate(TokenSelector::Id(7), EXPIRY_KEEP, false))),
        ("9105-reply", ROTATE_REPLY, ok_frame(&issued(ROTATED_TOKEN))),
        ("9105-error", ROTATE_ERROR, error_frame(ErrorCode::PersonalAccessTokenRevoked)),
        ("9105-request-reactivate", REACTIVATE_REQUEST, request_frame(&example_reactivate())),
        ("9105-reply-reactivate", REACTIVATE_REPLY, ok_frame(&example_reactivated())),
        ("9106-request", DELETE_REQUEST, request_frame(&DeleteToken { token: TokenSelector::Id(3) })),
        ("9106-reply", DELETE_REPLY, ok_frame(&Empty)),
        ("9107-request", REVOKE_ALL_REQUEST, request_frame(&RevokeAllTokens)),
        ("9107-reply", REVOKE_ALL_REPLY, ok_frame(&Count { count: 2 })),
        ("9108-request", DELETE_ALL_REQUEST, request_frame(&DeleteAllTokens)),
        ("9108-reply", DELETE_ALL_REPLY, ok_frame(&Count { count: 5 })),
        ("9108-error", DELETE_ALL_ERROR, error_frame(ErrorCode::TokenManagementNotAllowed)),
        ("9109-request", EDIT_REQUEST, request_frame(&example_edit())),
        ("9109-reply", EDIT_REPLY, ok_frame(&Empty)),
        ("9109-request-clear", EDIT_CLEAR_REQUEST, request_frame(&example_edit_clear())),
        ("9109-error", EDIT_ERROR, error_frame(ErrorCode::InsufficientScope)),
        ("9110-request", AUTHORIZE_REQUEST, request_frame(&example_authorize())),
        ("9110-reply", AUTHORIZE_REPLY, ok_frame(&example_decision(Decision::Allowed))),
        ("9110-reply-network", AUTHORIZE_REPLY_NETWORK, ok_frame(&example_decision(Decision::Network))),
        ("9110-reply-unknown", AUTHORIZE_REPLY_UNKNOWN, ok_frame(&decision(Decision::Unknown, 0, "", 0, 0))),
        ("9110-error", AUTHORIZE_ERROR, error_frame(ErrorCode::AuthorizeNotPermitted)),
        ("session-ended", SESSION_ENDED, error_frame(ErrorCode::Unauthenticated)),
    ]
}

#[test]
fn example_tokens_are_well_formed() {
    assert_eq!(token::encode(&[0x11; token::SECRET_BYTES]), EXAMPLE_TOKEN);
    assert_eq!(token::encode(&[0x22; token::SECRET_BYTES]), ROTATED_TOKEN);
    for raw in [EXAMPLE_TOKEN, ROTATED_TOKEN] {
        assert_eq!(token::validate(raw), Ok(()));
        assert_eq!(raw.len(), token::TOKEN_BYTES);
    }
    assert_eq!(EXPIRES_AT_US, 1_775_035_800_000_000);
}

#[test]
fn pinned_examples_are_what_the_encoders_write() {
    for (label, pinned, encoded) in examples() {
        assert_eq!(hex(pinned), encoded, "example {label}: pinned bytes != encoder output");
    }
}

#[test]
fn the_document_shows_exactly_the_pinned_examples() {
    let documented = doc_examples();
    let pinned = examples();
    let documented_labels: Vec<&str> = documented.keys().copied().collect();
    let mut pinned_labels: Vec<&str> = pinned.iter().map(|(label, _, _)| *label).collect();
    pinned_labels.sort_unstable();
    assert_eq!(documented_labels, pinned_labels, "every example in the document is checked here");
    for (label, hex_text, _) in pinned {
        assert_eq!(
            documented[label],
            hex(hex_text),
            "docs/protocol.md example {label} differs from the pinned bytes"
        );
    }
}

#[test]
fn example_requests_decode_to_their_values() {
    let requests = [
        (CREATE_REQUEST, Request::CreateToken(example_create())),
        (GET_REQUEST, Request::GetToken(GetToken { token: TokenSelector::Id(7) })),
        (LIST_REQUEST, Request::ListTokens(example_list())),
        (UPDATE_REQUEST, Request::UpdateToken(example_update())),
        (REVOKE_REQUEST, Request::RevokeToken(RevokeToken { token: TokenSelector::from("laptop") })),
        (ROTATE_REQUEST, Request::RotateToken(rotate(TokenSelector::Id(7), 0, false))),
        (REACTIVATE_REQUEST, Request::RotateToken(example_reactivate())),
        (EDIT_REQUEST, Request::EditTokenAccess(example_edit())),
        (EDIT_CLEAR_REQUEST, Request::EditTokenAccess(example_edit_clear())),
        (DELETE_REQUEST, Request::DeleteToken(DeleteToken { token: TokenSelector::Id(3) })),
        (REVOKE_ALL_REQUEST, Request::RevokeAllTokens),
        (DELETE_ALL_REQUEST, Request::DeleteAllTokens),
        (AUTHORIZE_REQUEST, Request::Authorize(example_authorize())),
    ];
    for (frame, expected) in requests {
        let frame = hex(frame);
        let length = u32::from_le_bytes(frame[..4].try_into().unwrap());
        assert_eq!(length as usize, frame.len() - 4, "{expected:?}");
        let code = u32::from_le_bytes(frame[4..8].try_into().unwrap());
        assert!(codes::EXTENSION_CODES.contains(&code));
        assert_eq!(Request::decode(code, &frame[8..]), Ok(expected));
    }
}

/// Splits a reply frame into status and payload, checking the length field.
fn reply_payload(frame: &str) -> (u32, Vec<u8>) {
    let frame = hex(frame);
    let status = u32::from_le_bytes(frame[..4].try_into().unwrap());
    let length = u32::from_le_bytes(frame[4..8].try_into().unwrap());
    assert_eq!(length as usize, frame.len() - 8);
    assert_ne!(length, 1, "a 1-byte payload desynchronises Iggy clients");
    (status, frame[8..].to_vec())
}

#[test]
fn example_replies_decode_to_their_values() {
    let issued = |token: &str| issued(7, token, CREATED_AT_US, EXPIRES_AT_US);
    let body = |frame: &str| {
        let (status, payload) = reply_payload(frame);
        assert_eq!(status, 0);
        payload
    };
    assert_eq!(decode_exact::<IssuedToken>(&body(CREATE_REPLY)), Ok(issued(EXAMPLE_TOKEN)));
    assert_eq!(decode_exact::<IssuedToken>(&body(ROTATE_REPLY)), Ok(issued(ROTATED_TOKEN)));
    assert_eq!(decode_exact::<IssuedToken>(&body(REACTIVATE_REPLY)), Ok(example_reactivated()));
    assert_eq!(decode_exact::<TokenDetails>(&body(GET_REPLY)), Ok(example_details()));
    assert_eq!(decode_exact::<TokenPage>(&body(LIST_REPLY)), Ok(example_page()));
    for empty in [UPDATE_REPLY, REVOKE_REPLY, DELETE_REPLY, EDIT_REPLY] {
        assert!(body(empty).is_empty());
    }
    assert_eq!(decode_exact::<Count>(&body(REVOKE_ALL_REPLY)), Ok(Count { count: 2 }));
    assert_eq!(decode_exact::<Count>(&body(DELETE_ALL_REPLY)), Ok(Count { count: 5 }));
    let allowed = decode_exact::<AuthorizeDecision>(&body(AUTHORIZE_REPLY)).unwrap();
    assert_eq!(allowed, example_decision(Decision::Allowed));
    assert!(allowed.allowed());
    let denied = decode_exact::<AuthorizeDecision>(&body(AUTHORIZE_REPLY_NETWORK)).unwrap();
    assert_eq!(denied, example_decision(Decision::Network));
    assert!(!denied.allowed());
    assert_eq!(
        decode_exact::<AuthorizeDecision>(&body(AUTHORIZE_REPLY_UNKNOWN)),
        Ok(decision(Decision::Unknown, 0, "", 0, 0))
    );
    for (frame, code) in [
        (CREATE_ERROR, ErrorCode::LifetimeNotAllowed),
        (GET_ERROR, ErrorCode::ResourceNotFound),
        (UPDATE_ERROR, ErrorCode::PersonalAccessTokenAlreadyExists),
        (ROTATE_ERROR, ErrorCode::PersonalAccessTokenRevoked),
        (DELETE_ALL_ERROR, ErrorCode::TokenManagementNotAllowed),
        (EDIT_ERROR, ErrorCode::InsufficientScope),
        (AUTHORIZE_ERROR, ErrorCode::AuthorizeNotPermitted),
        (SESSION_ENDED, ErrorCode::Unauthenticated),
    ] {
        let (status, payload) = reply_payload(frame);
        assert_eq!(ErrorCode::from_code(status), Some(code));
        assert!(payload.is_empty());
    }
}
