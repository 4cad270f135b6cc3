//! Command codes (spec §1.2, §2.8) and which of them Iggy knows.
//!
//! Latchkey serves the login and PAT subset. Every other code Iggy defines is
//! "known but not served": after login it gets FeatureUnavailable (5), while a
//! code Iggy does not define at all gets InvalidCommand (3).

pub const PING: u32 = 1;
pub const GET_CLUSTER_METADATA: u32 = 12;
pub const GET_ME: u32 = 20;
pub const LOGIN_USER: u32 = 38;
pub const LOGOUT_USER: u32 = 39;
pub const GET_PERSONAL_ACCESS_TOKENS: u32 = 41;
pub const CREATE_PERSONAL_ACCESS_TOKEN: u32 = 42;
pub const DELETE_PERSONAL_ACCESS_TOKEN: u32 = 43;
pub const LOGIN_WITH_PERSONAL_ACCESS_TOKEN: u32 = 44;
/// The 0.11 logins (spec §2.8). Both travel as operation Register, so these
/// codes never appear on the wire; Latchkey refuses them as NonReplicated.
pub const LOGIN_REGISTER: u32 = 40;
pub const LOGIN_REGISTER_WITH_PERSONAL_ACCESS_TOKEN: u32 = 45;

/// Latchkey's extension commands (the token lifecycle and Authorize) use
/// codes 9100–9199, a range Iggy's code table leaves empty (its highest code
/// is 606). They are served in the legacy framing only; `docs/protocol.md`
/// documents their bodies.
pub const EXTENSION_CODES: std::ops::RangeInclusive<u32> = 9100..=9199;
pub const CREATE_TOKEN: u32 = 9100;
pub const GET_TOKEN: u32 = 9101;
pub const LIST_TOKENS: u32 = 9102;
pub const UPDATE_TOKEN: u32 = 9103;
pub const REVOKE_TOKEN: u32 = 9104;
pub const ROTATE_TOKEN: u32 = 9105;
pub const DELETE_TOKEN: u32 = 9106;
pub const REVOKE_ALL_TOKENS: u32 = 9107;
pub const DELETE_ALL_TOKENS: u32 = 9108;
pub const EDIT_TOKEN_ACCESS: u32 = 9109;
pub const AUTHORIZE: u32 = 9110;

/// Every command code in Iggy's code table (spec §2.8), served or not.
/// Codes 40 and 45 are the 0.11 login codes; they are in Iggy's table, so
/// the legacy path treats them as known but not served.
const IGGY_CODES: &[u32] = &[
    1, 10, 11, 12, 13, 14, // system
    20, 21, 22, // clients
    31, 32, 33, 34, 35, 36, 37, 38, 39, 40, // users
    41, 42, 43, 44, 45, // personal access tokens and logins
    100, 101, 102, 103, 104, // messages
    120, 121, 122, 123, // consumer offsets
    200, 201, 202, 203, 204, 205, // streams
    300, 301, 302, 303, 304, 305, // topics
    402, 403, // partitions
    503, // segments
    600, 601, 602, 603, 604, 605, 606, // consumer groups
];

/// Whether Iggy defines `code`.
pub fn is_iggy_code(code: u32) -> bool {
    IGGY_CODES.binary_search(&code).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_sorted_for_binary_search() {
        assert!(IGGY_CODES.windows(2).all(|pair| pair[0] < pair[1]));
    }

    #[test]
    fn served_codes_are_iggy_codes() {
        for code in [1, 12, 20, 38, 39, 41, 42, 43, 44] {
            assert!(is_iggy_code(code), "{code}");
        }
        for code in [0, 2, 9, 99, 1000, u32::MAX] {
            assert!(!is_iggy_code(code), "{code}");
        }
        for code in EXTENSION_CODES {
            assert!(!is_iggy_code(code), "{code}");
        }
        for code in [CREATE_TOKEN, GET_TOKEN, LIST_TOKENS, UPDATE_TOKEN, REVOKE_TOKEN, ROTATE_TOKEN] {
            assert!(EXTENSION_CODES.contains(&code), "{code}");
        }
        for code in [DELETE_TOKEN, REVOKE_ALL_TOKENS, DELETE_ALL_TOKENS, EDIT_TOKEN_ACCESS, AUTHORIZE] {
            assert!(EXTENSION_CODES.contains(&code), "{code}");
        }
    }
}
