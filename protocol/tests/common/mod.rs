//! Checks every body test file runs on its bodies: round trip, trailing
//! bytes, every truncation point, the error of malformed input.
#![allow(dead_code)]

use std::fmt::Debug;

use latchkey_protocol::ErrorCode;
use latchkey_protocol::body::{WireDecode, WireEncode, decode_exact, encode_to_vec};

/// Encodes `value`, checks the size, decodes it back and checks the value and
/// the bytes consumed. Returns the encoding.
pub fn round_trip<T>(value: &T) -> Vec<u8>
where
    T: WireEncode + WireDecode + PartialEq + Debug,
{
    let bytes = encode_to_vec(value);
    assert_eq!(bytes.len(), value.encoded_size(), "encoded_size of {value:?}");
    let (decoded, used) = T::decode(&bytes).unwrap_or_else(|e| panic!("decode {value:?}: {e:?}"));
    assert_eq!(&decoded, value);
    assert_eq!(used, bytes.len(), "consumed for {value:?}");
    assert_eq!(used, value.encoded_size());
    assert_eq!(&decode_exact::<T>(&bytes).unwrap(), value);
    bytes
}

/// For bodies with a fixed shape: trailing input is left unread by `decode`
/// and refused by `decode_exact`.
pub fn assert_trailing_left_unread<T>(value: &T)
where
    T: WireEncode + WireDecode + PartialEq + Debug,
{
    let bytes = encode_to_vec(value);
    for extra in [&[0u8][..], &[0xff, 0xff, 0xff, 0xff, 0xff], &[7; 64]] {
        let mut longer = bytes.clone();
        longer.extend_from_slice(extra);
        let (decoded, used) = T::decode(&longer).unwrap();
        assert_eq!(&decoded, value);
        assert_eq!(used, bytes.len());
        assert_eq!(
            decode_exact::<T>(&longer).err(),
            Some(ErrorCode::InvalidCommand),
            "decode_exact with {} trailing bytes",
            extra.len()
        );
    }
}

/// Every proper prefix of `bytes` fails with InvalidCommand, except the prefix
/// lengths in `valid`, which decode and consume exactly that many bytes.
pub fn assert_truncations<T: WireDecode + Debug>(bytes: &[u8], valid: &[usize]) {
    for i in 0..bytes.len() {
        let result = T::decode(&bytes[..i]);
        if valid.contains(&i) {
            match result {
                Ok((_, used)) => assert_eq!(used, i, "valid prefix {i} of {bytes:02x?}"),
                Err(e) => panic!("prefix {i} of {bytes:02x?} should be valid, got {e:?}"),
            }
        } else {
            match result {
                Err(e) => assert_eq!(e, ErrorCode::InvalidCommand, "prefix {i} of {bytes:02x?}"),
                Ok((value, used)) => {
                    panic!("prefix {i} of {bytes:02x?} decoded as {value:?} ({used} bytes)")
                }
            }
        }
    }
}

pub fn decode_err<T: WireDecode + Debug>(bytes: &[u8]) -> ErrorCode {
    match T::decode(bytes) {
        Ok((value, used)) => panic!("{bytes:02x?} decoded as {value:?} ({used} bytes)"),
        Err(e) => e,
    }
}
