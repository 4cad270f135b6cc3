//! The wire error codes: the single place where a code number is written down.
//!
//! Every code is an Iggy `IggyError` discriminant (spec §3.12) so that the
//! published SDKs map it to the same error they would get from Iggy. Latchkey's
//! own codes live in 20000-20999, a range Iggy does not use.

/// Defines [`ErrorCode`] from one table: variant, wire code, Iggy's name and a
/// human message. Keeping them in one table means a code cannot drift between
/// the encoder, the decoder and the documentation.
macro_rules! error_codes {
    ($( $variant:ident = $code:literal, $message:literal; )+) => {
        /// A status code carried in a reply header (legacy framing) or in a
        /// deny / result section (0.11 framing).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
        #[repr(u32)]
        pub enum ErrorCode {
            $(
                #[doc = $message]
                #[error($message)]
                $variant = $code,
            )+
        }

        impl ErrorCode {
            /// Every code Latchkey knows, in ascending order (tests walk it).
            #[cfg(test)]
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant),+];

            /// The number sent on the wire.
            pub const fn code(self) -> u32 {
                self as u32
            }

            /// Iggy's name for the code, e.g. `InvalidCredentials`.
            pub const fn name(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => stringify!($variant),)+
                }
            }

            /// The code for a wire number, if Latchkey knows it.
            pub const fn from_code(code: u32) -> Option<ErrorCode> {
                match code {
                    $($code => Some(ErrorCode::$variant),)+
                    _ => None,
                }
            }
        }
    };
}

error_codes! {
    Error = 1, "generic error";
    InvalidCommand = 3, "invalid command";
    InvalidFormat = 4, "invalid format";
    FeatureUnavailable = 5, "feature unavailable";
    Disconnected = 8, "disconnected";
    ResourceNotFound = 20, "resource not found";
    StaleClient = 30, "stale client";
    Unauthenticated = 40, "unauthenticated";
    Unauthorized = 41, "unauthorized";
    InvalidCredentials = 42, "invalid credentials";
    InvalidUsername = 43, "invalid username";
    InvalidPassword = 44, "invalid password";
    InvalidUserStatus = 45, "invalid user status";
    UserInactive = 47, "user inactive";
    InvalidPersonalAccessTokenName = 50, "invalid personal access token name";
    PersonalAccessTokenAlreadyExists = 51, "personal access token already exists";
    PersonalAccessTokensLimitReached = 52, "personal access tokens limit reached";
    InvalidPersonalAccessToken = 53, "invalid personal access token";
    PersonalAccessTokenExpired = 54, "personal access token expired";
    InvalidPersonalAccessTokenExpiry = 56, "invalid personal access token expiry";
    // Latchkey's own codes, 20000-20999: a range Iggy's error table leaves
    // unused (its highest code is 14003). Iggy SDKs report them as Error (1).
    TooManyFailedLogins = 20001, "too many failed logins from this address or for this user; try again later";
    StorageUnavailable = 20002, "the token log cannot be written; changes are refused until the server restarts";
    PersonalAccessTokenRevoked = 20003, "personal access token revoked";
    AddressNotAllowed = 20004, "this token may not be used from this client address";
    InsufficientScope = 20005, "the token this session logged in with lacks the scope this command needs";
    LifetimeNotAllowed = 20006, "the requested token lifetime exceeds the server's maximum";
    InvalidScope = 20007, "invalid scope (built-in, or <type>:<id>:<action>)";
    InvalidNetwork = 20008, "invalid network (an IPv4 or IPv6 address or CIDR)";
    InvalidDescription = 20009, "invalid token description (at most 256 bytes of UTF-8)";
    TokenManagementNotAllowed = 20010, "sessions that logged in with a token may not manage tokens (server policy)";
    AuthorizeNotPermitted = 20011, "the user lacks the authorize permission";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for &code in ErrorCode::ALL {
            assert!(seen.insert(code.code()), "duplicate code {}", code.code());
            assert_eq!(ErrorCode::from_code(code.code()), Some(code));
        }
        assert_eq!(ErrorCode::from_code(0), None);
        assert_eq!(ErrorCode::from_code(2), None);
    }

    #[test]
    fn codes_match_the_spec_table() {
        // Spec §3.12: the numbers the published SDKs decode.
        assert_eq!(ErrorCode::InvalidCommand.code(), 3);
        assert_eq!(ErrorCode::InvalidFormat.code(), 4);
        assert_eq!(ErrorCode::FeatureUnavailable.code(), 5);
        assert_eq!(ErrorCode::ResourceNotFound.code(), 20);
        assert_eq!(ErrorCode::Unauthenticated.code(), 40);
        assert_eq!(ErrorCode::InvalidCredentials.code(), 42);
        assert_eq!(ErrorCode::InvalidUsername.code(), 43);
        assert_eq!(ErrorCode::InvalidPassword.code(), 44);
        assert_eq!(ErrorCode::UserInactive.code(), 47);
        assert_eq!(ErrorCode::InvalidPersonalAccessTokenName.code(), 50);
        assert_eq!(ErrorCode::PersonalAccessTokenAlreadyExists.code(), 51);
        assert_eq!(ErrorCode::PersonalAccessTokensLimitReached.code(), 52);
        assert_eq!(ErrorCode::InvalidPersonalAccessToken.code(), 53);
        assert_eq!(ErrorCode::PersonalAccessTokenExpired.code(), 54);
        assert_eq!(ErrorCode::InvalidPersonalAccessTokenExpiry.code(), 56);
        assert_eq!(ErrorCode::InvalidCredentials.name(), "InvalidCredentials");
    }

    #[test]
    fn latchkey_error_codes_are_20001_to_20011() {
        let ours: Vec<(u32, &str)> = ErrorCode::ALL
            .iter()
            .filter(|code| code.code() >= 20_000)
            .map(|code| (code.code(), code.name()))
            .collect();
        assert_eq!(
            ours,
            [
                (20001, "TooManyFailedLogins"),
                (20002, "StorageUnavailable"),
                (20003, "PersonalAccessTokenRevoked"),
                (20004, "AddressNotAllowed"),
                (20005, "InsufficientScope"),
                (20006, "LifetimeNotAllowed"),
                (20007, "InvalidScope"),
                (20008, "InvalidNetwork"),
                (20009, "InvalidDescription"),
                (20010, "TokenManagementNotAllowed"),
                (20011, "AuthorizeNotPermitted"),
            ]
        );
    }
}
