//! Why a command failed, and the exit code each kind of failure maps to.
//! The codes are part of the CLI's interface (documented in `--help` and
//! cli/README.md): scripts branch on them, so they change only with care.

use std::fmt;

use latchkey_sdk::{Error, ErrorCode};

/// Exit code: the server refused the request.
pub const EXIT_REFUSED: u8 = 1;
/// Exit code: bad usage or configuration (also clap's own for bad arguments).
pub const EXIT_USAGE: u8 = 2;
/// Exit code: `authorize` answered "denied".
pub const EXIT_DENIED: u8 = 3;
/// Exit code: the server could not be reached, or the connection failed.
pub const EXIT_CONNECTION: u8 = 4;
/// Exit code: the login was refused.
pub const EXIT_AUTHENTICATION: u8 = 5;

/// Codes that, as the answer to a login, mean "these credentials do not
/// work": unauthenticated, invalid credentials, a username or password
/// outside the lengths any user can have, no such token (Latchkey answers a
/// token it does not know, such as a rotated one's old secret, with
/// ResourceNotFound), invalid or expired token, revoked token, an address
/// outside the token's networks, and an inactive user. TooManyFailedLogins
/// is not among them: the credentials may be right, and a retry later may
/// pass, so it is a plain refusal (exit 1).
const LOGIN_REFUSALS: [ErrorCode; 10] = [
    ErrorCode::Unauthenticated,
    ErrorCode::InvalidCredentials,
    ErrorCode::InvalidUsername,
    ErrorCode::InvalidPassword,
    ErrorCode::ResourceNotFound,
    ErrorCode::InvalidPersonalAccessToken,
    ErrorCode::PersonalAccessTokenExpired,
    ErrorCode::PersonalAccessTokenRevoked,
    ErrorCode::AddressNotAllowed,
    ErrorCode::UserInactive,
];

#[derive(Debug)]
pub enum Failure {
    /// Bad arguments or configuration found after parsing.
    Usage(String),
    /// The server answered with a status code.
    Refused { code: u32 },
    /// The login step was refused.
    Authentication { code: u32 },
    /// No connection, a broken one, a timeout or a reply that does not decode.
    Connection { address: String, error: Error },
}

impl Failure {
    /// Maps an SDK error from any request but the login.
    pub fn from_sdk(address: &str, error: Error) -> Failure {
        match error {
            Error::Server { code, .. } => Failure::Refused { code },
            error => Failure::Connection { address: address.to_owned(), error },
        }
    }

    /// Maps an SDK error from the login request.
    pub fn from_login(address: &str, error: Error) -> Failure {
        match Failure::from_sdk(address, error) {
            Failure::Refused { code }
                if ErrorCode::from_code(code).is_some_and(|known| LOGIN_REFUSALS.contains(&known)) =>
            {
                Failure::Authentication { code }
            }
            other => other,
        }
    }

    pub fn exit_code(&self) -> u8 {
        match self {
            Failure::Usage(_) => EXIT_USAGE,
            Failure::Refused { .. } => EXIT_REFUSED,
            Failure::Authentication { .. } => EXIT_AUTHENTICATION,
            Failure::Connection { .. } => EXIT_CONNECTION,
        }
    }
}

/// `error 51 PersonalAccessTokenAlreadyExists: personal access token already exists`
struct ServerCode(u32);

impl fmt::Display for ServerCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match ErrorCode::from_code(self.0) {
            Some(known) => write!(f, "error {} {}: {known}", self.0, known.name()),
            None => write!(f, "error {} Unknown: a code this CLI does not know", self.0),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Usage(message) => f.write_str(message),
            Failure::Refused { code } => write!(f, "{}", ServerCode(*code)),
            Failure::Authentication { code } => write!(f, "login failed: {}", ServerCode(*code)),
            Failure::Connection { address, error } => write!(f, "{address}: {error}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(code: u32) -> Error {
        Error::Server { code, name: ErrorCode::from_code(code).map_or("Unknown", ErrorCode::name) }
    }

    #[test]
    fn server_refusals_name_code_and_message() {
        let failure = Failure::from_sdk("a:1", server(51));
        assert_eq!(failure.exit_code(), EXIT_REFUSED);
        assert_eq!(
            failure.to_string(),
            "error 51 PersonalAccessTokenAlreadyExists: personal access token already exists"
        );
        assert_eq!(
            Failure::from_sdk("a:1", server(9999)).to_string(),
            "error 9999 Unknown: a code this CLI does not know"
        );
    }

    #[test]
    fn login_refusals_are_authentication_failures_only_at_login() {
        for code in [40, 42, 43, 44, 20, 53, 54, 20003, 20004, 47] {
            assert_eq!(Failure::from_login("a:1", server(code)).exit_code(), EXIT_AUTHENTICATION, "{code}");
            assert_eq!(Failure::from_sdk("a:1", server(code)).exit_code(), EXIT_REFUSED, "{code}");
        }
        // Refusals that are not about the credentials stay refusals.
        assert_eq!(Failure::from_login("a:1", server(20002)).exit_code(), EXIT_REFUSED);
        assert_eq!(Failure::from_login("a:1", server(20001)).exit_code(), EXIT_REFUSED);
        assert!(Failure::from_login("a:1", server(42)).to_string().starts_with("login failed: error 42 "));
    }

    #[test]
    fn connection_failures() {
        let failure = Failure::from_login("a:1", Error::ConnectionClosed);
        assert_eq!(failure.exit_code(), EXIT_CONNECTION);
        assert_eq!(failure.to_string(), "a:1: the server closed the connection");
    }
}
