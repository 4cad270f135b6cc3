//! Responses: JSON bodies, the error shape every route shares, and which
//! HTTP status each protocol error code gets.
//!
//! An error body is `{"code": 51, "name": "PersonalAccessTokenAlreadyExists",
//! "message": "..."}`: the binary protocol's code and Iggy's name for it, so
//! a client handles both doors alike. Messages are the code's fixed text or
//! say which field is wrong; never a secret, never what the client sent.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use hyper::{Response, StatusCode};
use latchkey_protocol::ErrorCode;
use serde::Serialize;

pub type Reply = Response<Full<Bytes>>;

pub const JSON: &str = "application/json";

/// A failed request: the status and the body that says why.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: ErrorCode,
    pub message: String,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    code: u32,
    name: &'a str,
    message: &'a str,
}

impl ApiError {
    /// A command's refusal, with the status that fits its code.
    pub fn from_code(code: ErrorCode) -> ApiError {
        ApiError { status: status_of(code), code, message: code.to_string() }
    }

    /// A refusal with its own status and message (bad JSON, a body too
    /// large, no such route).
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError { status, code, message: message.into() }
    }

    /// A request the command layer never saw: its shape is wrong.
    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::InvalidFormat, message)
    }

    /// A refusal from logging in with the request's credentials: every way
    /// a credential can fail is 401, so a client need not tell "unknown
    /// token" (20 on TCP) from "wrong password".
    pub fn from_login(code: ErrorCode) -> ApiError {
        match code {
            ErrorCode::TooManyFailedLogins
            | ErrorCode::StorageUnavailable
            | ErrorCode::UserInactive
            | ErrorCode::AddressNotAllowed
            | ErrorCode::Error => ApiError::from_code(code),
            _ => ApiError { status: StatusCode::UNAUTHORIZED, code, message: code.to_string() },
        }
    }

    pub fn into_reply(self) -> Reply {
        let body = ErrorBody { code: self.code.code(), name: self.code.name(), message: &self.message };
        let mut reply = json(self.status, &body);
        if self.status == StatusCode::UNAUTHORIZED {
            reply.headers_mut().insert(
                hyper::header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"latchkey\", Basic realm=\"latchkey\""),
            );
        }
        reply
    }
}

impl From<ErrorCode> for ApiError {
    fn from(code: ErrorCode) -> ApiError {
        ApiError::from_code(code)
    }
}

/// The HTTP status for a protocol error code.
pub fn status_of(code: ErrorCode) -> StatusCode {
    use ErrorCode::*;
    match code {
        InvalidCommand | InvalidFormat => StatusCode::BAD_REQUEST,
        FeatureUnavailable => StatusCode::NOT_IMPLEMENTED,
        ResourceNotFound => StatusCode::NOT_FOUND,
        Unauthenticated
        | InvalidCredentials
        | InvalidPersonalAccessToken
        | PersonalAccessTokenExpired
        | PersonalAccessTokenRevoked
        | Disconnected
        | StaleClient => StatusCode::UNAUTHORIZED,
        Unauthorized
        | UserInactive
        | InvalidUserStatus
        | AddressNotAllowed
        | InsufficientScope
        | TokenManagementNotAllowed
        | AuthorizeNotPermitted => StatusCode::FORBIDDEN,
        PersonalAccessTokenAlreadyExists | PersonalAccessTokensLimitReached => StatusCode::CONFLICT,
        InvalidUsername
        | InvalidPassword
        | InvalidPersonalAccessTokenName
        | InvalidPersonalAccessTokenExpiry
        | LifetimeNotAllowed
        | InvalidScope
        | InvalidNetwork
        | InvalidDescription => StatusCode::UNPROCESSABLE_ENTITY,
        TooManyFailedLogins => StatusCode::TOO_MANY_REQUESTS,
        StorageUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        Error => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// A JSON response. Every API response says it must not be cached: some
/// carry a secret, and none is the same twice.
pub fn json<T: Serialize>(status: StatusCode, body: &T) -> Reply {
    let bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    with_type(status, JSON, Bytes::from(bytes))
}

/// A response with a body of `content_type`.
pub fn with_type(status: StatusCode, content_type: &'static str, body: Bytes) -> Reply {
    let mut reply = Response::new(Full::new(body));
    *reply.status_mut() = status;
    let headers = reply.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    reply
}

/// An empty response (204 and the like).
pub fn empty(status: StatusCode) -> Reply {
    let mut reply = Response::new(Full::new(Bytes::new()));
    *reply.status_mut() = status;
    reply.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    reply
}

/// RFC 3339 in UTC, to the microsecond (`clock::rfc3339_us`).
pub fn time(at_us: u64) -> String {
    crate::clock::rfc3339_us(at_us)
}

/// [`time`], or `None` for 0 (never / not yet).
pub fn optional_time(at_us: u64) -> Option<String> {
    (at_us != 0).then(|| time(at_us))
}

/// Whole seconds since the Unix epoch, for introspection's `exp` and `iat`.
pub fn epoch_seconds(at_us: u64) -> u64 {
    at_us / 1_000_000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_a_status_a_client_can_act_on() {
        // The codes a REST client sees most, pinned.
        assert_eq!(status_of(ErrorCode::PersonalAccessTokenAlreadyExists), StatusCode::CONFLICT);
        assert_eq!(status_of(ErrorCode::ResourceNotFound), StatusCode::NOT_FOUND);
        assert_eq!(status_of(ErrorCode::InsufficientScope), StatusCode::FORBIDDEN);
        assert_eq!(status_of(ErrorCode::InvalidScope), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(status_of(ErrorCode::TooManyFailedLogins), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(status_of(ErrorCode::StorageUnavailable), StatusCode::SERVICE_UNAVAILABLE);
        // A login's refusal never says 404.
        assert_eq!(ApiError::from_login(ErrorCode::ResourceNotFound).status, StatusCode::UNAUTHORIZED);
        assert_eq!(
            ApiError::from_login(ErrorCode::TooManyFailedLogins).status,
            StatusCode::TOO_MANY_REQUESTS
        );
        assert_eq!(ApiError::from_login(ErrorCode::UserInactive).status, StatusCode::FORBIDDEN);
    }
}
