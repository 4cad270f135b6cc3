//! Latchkey's token format.
//!
//! `lk_` + 43 base62 characters + 6 base62 characters, 52 ASCII bytes:
//! - the 43 characters are a 256-bit secret (32 bytes from the OS CSPRNG) as a
//!   big-endian base62 number, left-padded with `0`;
//! - the last 6 are the CRC32 (IEEE) of the 46 characters before them, also
//!   base62 and left-padded.
//!
//! The alphabet is `0-9A-Za-z`, so a token survives URLs, shells and
//! double-click selection. The prefix lets secret scanners find leaked tokens,
//! and the checksum lets a client or a scanner tell a mistyped token from a
//! real one without asking the server. The checksum is not a security
//! measure: the secret is. Only a keyed hash of the whole string is ever
//! stored.

const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// The fixed prefix.
pub const PREFIX: &str = "lk_";
/// Bytes of randomness in a token.
pub const SECRET_BYTES: usize = 32;
/// Base62 digits of the secret: 62^43 > 2^256.
pub const SECRET_DIGITS: usize = 43;
/// Base62 digits of the CRC32: 62^6 > 2^32.
pub const CHECKSUM_DIGITS: usize = 6;
/// Total length of a token string.
pub const TOKEN_BYTES: usize = PREFIX.len() + SECRET_DIGITS + CHECKSUM_DIGITS;

/// Why a string is not a well-formed Latchkey token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenFormatError {
    #[error("token has the wrong length")]
    Length,
    #[error("token does not start with lk_")]
    Prefix,
    #[error("token contains a character outside 0-9A-Za-z")]
    Alphabet,
    #[error("token secret is out of range")]
    Range,
    #[error("token checksum does not match")]
    Checksum,
}

/// Encodes a 32-byte secret as a token string.
pub fn encode(secret: &[u8; SECRET_BYTES]) -> String {
    let mut token = String::with_capacity(TOKEN_BYTES);
    token.push_str(PREFIX);
    let mut digits = base62_encode::<SECRET_DIGITS>(secret);
    token.push_str(std::str::from_utf8(&digits).expect("base62 is ASCII"));
    // The secret's digits were on the stack; leave no copy behind.
    zeroize::Zeroize::zeroize(&mut digits);
    let checksum = crc32fast::hash(token.as_bytes());
    let digits = base62_encode::<CHECKSUM_DIGITS>(&checksum.to_be_bytes());
    token.push_str(std::str::from_utf8(&digits).expect("base62 is ASCII"));
    debug_assert_eq!(token.len(), TOKEN_BYTES);
    token
}

/// Whether `token` has a token's length and prefix: the checks that cost
/// nothing. A server that only ever stores tokens it minted looks a token up
/// when this holds, and needs [`validate`] only to say why one it does not
/// hold is unknown (malformed, or never issued).
pub fn has_shape(token: &str) -> bool {
    token.len() == TOKEN_BYTES && token.starts_with(PREFIX)
}

/// Checks the shape and checksum of a presented token. Cheap: no hashing,
/// no big-number arithmetic.
pub fn validate(token: &str) -> Result<(), TokenFormatError> {
    let bytes = token.as_bytes();
    if bytes.len() != TOKEN_BYTES {
        return Err(TokenFormatError::Length);
    }
    if !token.starts_with(PREFIX) {
        return Err(TokenFormatError::Prefix);
    }
    if !bytes[PREFIX.len()..].iter().all(u8::is_ascii_alphanumeric) {
        return Err(TokenFormatError::Alphabet);
    }
    let (body, checksum) = bytes.split_at(PREFIX.len() + SECRET_DIGITS);
    // Fixed-width base62 in this alphabet sorts like the numbers it encodes
    // (ASCII puts 0-9 before A-Z before a-z), so the range check is a
    // string comparison with the largest 256-bit value.
    if &body[PREFIX.len()..] > secret_digits_max().as_slice() {
        return Err(TokenFormatError::Range);
    }
    if checksum > checksum_digits_max().as_slice() {
        return Err(TokenFormatError::Range);
    }
    let presented = base62_decode::<4>(checksum)?;
    if u32::from_be_bytes(presented) != crc32fast::hash(body) {
        return Err(TokenFormatError::Checksum);
    }
    Ok(())
}

/// The 43 digits of 2^256 − 1.
fn secret_digits_max() -> &'static [u8; SECRET_DIGITS] {
    static MAX: std::sync::OnceLock<[u8; SECRET_DIGITS]> = std::sync::OnceLock::new();
    MAX.get_or_init(|| base62_encode::<SECRET_DIGITS>(&[0xff; SECRET_BYTES]))
}

/// The 6 digits of 2^32 − 1.
fn checksum_digits_max() -> &'static [u8; CHECKSUM_DIGITS] {
    static MAX: std::sync::OnceLock<[u8; CHECKSUM_DIGITS]> = std::sync::OnceLock::new();
    MAX.get_or_init(|| base62_encode::<CHECKSUM_DIGITS>(&u32::MAX.to_be_bytes()))
}

/// 62^5, the largest power of 62 below 2^32: the number is divided by it
/// one 32-bit limb at a time, giving five digits per pass.
const BASE62_CHUNK: u64 = 62 * 62 * 62 * 62 * 62;
const BASE62_CHUNK_DIGITS: usize = 5;
/// Input bytes at most (the secret is 32).
const BASE62_INPUT_BYTES_MAX: usize = 32;
const BASE62_LIMBS: usize = BASE62_INPUT_BYTES_MAX / 4;

/// Big-endian bytes (at most 32) to `N` base62 digits, most significant
/// first. Long division by 62^5 over 32-bit limbs: 9 passes of 8 cheap
/// divisions for a secret, where one digit per pass over bytes took 43
/// passes of 32 (it showed in the create path's profile).
fn base62_encode<const N: usize>(bytes: &[u8]) -> [u8; N] {
    assert!(bytes.len() <= BASE62_INPUT_BYTES_MAX, "base62_encode takes at most 32 bytes");
    let mut padded = [0u8; BASE62_INPUT_BYTES_MAX];
    padded[BASE62_INPUT_BYTES_MAX - bytes.len()..].copy_from_slice(bytes);
    let mut limbs = [0u32; BASE62_LIMBS];
    for (limb, chunk) in limbs.iter_mut().zip(padded.chunks_exact(4)) {
        *limb = u32::from_be_bytes(chunk.try_into().expect("4 bytes"));
    }
    let mut digits = [b'0'; N];
    let mut next = N;
    while next > 0 {
        let mut remainder = 0u64;
        for limb in limbs.iter_mut() {
            let acc = (remainder << 32) | u64::from(*limb);
            *limb = (acc / BASE62_CHUNK) as u32;
            remainder = acc % BASE62_CHUNK;
        }
        for _ in 0..BASE62_CHUNK_DIGITS.min(next) {
            next -= 1;
            digits[next] = ALPHABET[(remainder % 62) as usize];
            remainder /= 62;
        }
    }
    debug_assert!(limbs.iter().all(|&limb| limb == 0), "value does not fit in {N} digits");
    // The secret passed through these buffers; leave no copy behind.
    zeroize::Zeroize::zeroize(&mut padded);
    zeroize::Zeroize::zeroize(&mut limbs);
    digits
}

/// `digits` base62 (most significant first) to `N` big-endian bytes.
fn base62_decode<const N: usize>(digits: &[u8]) -> Result<[u8; N], TokenFormatError> {
    let mut number = [0u8; N];
    for &digit in digits {
        let value = match digit {
            b'0'..=b'9' => digit - b'0',
            b'A'..=b'Z' => digit - b'A' + 10,
            b'a'..=b'z' => digit - b'a' + 36,
            _ => return Err(TokenFormatError::Alphabet),
        };
        // number = number * 62 + value, detecting overflow of N bytes.
        let mut carry = u32::from(value);
        for byte in number.iter_mut().rev() {
            let acc = u32::from(*byte) * 62 + carry;
            *byte = (acc & 0xff) as u8;
            carry = acc >> 8;
        }
        if carry != 0 {
            return Err(TokenFormatError::Range);
        }
    }
    Ok(number)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extremes_round_trip() {
        for secret in [[0u8; 32], [0xff; 32], [0x5a; 32]] {
            let token = encode(&secret);
            assert_eq!(token.len(), TOKEN_BYTES);
            assert!(token.starts_with("lk_"));
            assert!(token[3..].bytes().all(|b| b.is_ascii_alphanumeric()));
            validate(&token).unwrap();
            let digits = &token.as_bytes()[3..3 + SECRET_DIGITS];
            assert_eq!(base62_decode::<32>(digits).unwrap(), secret);
        }
        assert_eq!(&encode(&[0; 32])[3..46], "0".repeat(43));
    }

    #[test]
    fn any_single_character_change_is_refused() {
        let token = encode(&[7u8; 32]);
        for index in 0..token.len() {
            let mut bytes = token.clone().into_bytes();
            bytes[index] = if bytes[index] == b'A' { b'B' } else { b'A' };
            let changed = String::from_utf8(bytes).unwrap();
            assert!(validate(&changed).is_err(), "index {index} accepted");
        }
    }

    #[test]
    fn the_string_range_check_agrees_with_arithmetic() {
        // Just below, at and just above 2^256 - 1.
        let max = std::str::from_utf8(secret_digits_max()).unwrap().to_owned();
        assert_eq!(base62_decode::<32>(max.as_bytes()), Ok([0xff; 32]));
        let mut above = max.clone().into_bytes();
        let last = above.len() - 1;
        above[last] += 1;
        assert!(base62_decode::<32>(&above).is_err());
        for secret in [[0xffu8; 32], [0xfe; 32], [0x80; 32]] {
            validate(&encode(&secret)).unwrap();
        }
    }

    /// The digit-by-digit division the chunked one replaced: a reference.
    fn base62_reference<const N: usize>(bytes: &[u8]) -> [u8; N] {
        let mut number = bytes.to_vec();
        let mut digits = [b'0'; N];
        for slot in digits.iter_mut().rev() {
            let mut remainder = 0u32;
            for byte in number.iter_mut() {
                let acc = (remainder << 8) | u32::from(*byte);
                *byte = (acc / 62) as u8;
                remainder = acc % 62;
            }
            *slot = ALPHABET[remainder as usize];
        }
        digits
    }

    #[test]
    fn chunked_division_agrees_with_digit_by_digit() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for round in 0..2000 {
            let mut secret = [0u8; 32];
            for byte in secret.iter_mut() {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                *byte = state as u8;
            }
            // Some with leading zero bytes, some with high ones.
            if round % 3 == 0 {
                secret[..(round % 32)].fill(0);
            }
            assert_eq!(base62_encode::<SECRET_DIGITS>(&secret), base62_reference::<SECRET_DIGITS>(&secret));
            let crc = &secret[..4];
            assert_eq!(base62_encode::<CHECKSUM_DIGITS>(crc), base62_reference::<CHECKSUM_DIGITS>(crc));
        }
        for edge in [[0u8; 32], [0xff; 32]] {
            assert_eq!(base62_encode::<SECRET_DIGITS>(&edge), base62_reference::<SECRET_DIGITS>(&edge));
        }
    }

    #[test]
    fn malformed_shapes_are_named() {
        let token = encode(&[1u8; 32]);
        assert_eq!(validate(&token[1..]), Err(TokenFormatError::Length));
        assert_eq!(validate(&format!("xx_{}", &token[3..])), Err(TokenFormatError::Prefix));
        assert_eq!(validate(&format!("{}-{}", &token[..10], &token[11..])), Err(TokenFormatError::Alphabet));
        // All 'z' is 62^43 - 1 > 2^256 - 1.
        let too_big = format!("lk_{}000000", "z".repeat(43));
        assert_eq!(validate(&too_big), Err(TokenFormatError::Range));
    }
}
