//! Forward auth for proxies (`/v1/auth/check`) and RFC 7662 token
//! introspection (`POST /v1/introspect`), both on `command::check`'s one
//! decision.
//!
//! Forward auth answers nginx `auth_request`, Traefik `ForwardAuth` and
//! Envoy `ext_authz` (HTTP) alike: 200 with the identity headers for the
//! proxy to pass upstream; 401 with `WWW-Authenticate: Bearer` for a
//! missing, unknown, expired, revoked or rotated token, or a throttled
//! client; 403 for a wrong scope or network, an inactive owner, or a node
//! that cannot vouch for its registry right now. Never a 429 or a 5xx for a
//! deny: nginx turns those into a 500 for the client. `X-Latchkey-Reason`
//! says why, and on a deny a small JSON body too (an allow has no body:
//! proxies read its headers only).

use arrayvec::ArrayVec;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, CACHE_CONTROL, HeaderName, HeaderValue, WWW_AUTHENTICATE};
use hyper::{HeaderMap, Request, Response, StatusCode};
use latchkey_protocol::ErrorCode;
use latchkey_protocol::ext::Decision;
use serde::Serialize;

use super::Exchange;
use super::input::{body, form, form_field, log_in_caller};
use super::reply::{ApiError, Reply, epoch_seconds, json};
use crate::command::check::{self, Verdict};

pub const USER_ID: HeaderName = HeaderName::from_static("x-latchkey-user-id");
pub const USERNAME: HeaderName = HeaderName::from_static("x-latchkey-username");
pub const TOKEN_ID: HeaderName = HeaderName::from_static("x-latchkey-token-id");
pub const SCOPES: HeaderName = HeaderName::from_static("x-latchkey-scopes");
pub const REASON: HeaderName = HeaderName::from_static("x-latchkey-reason");
/// The scope a proxy requires (else the `scope` query parameter).
pub const REQUIRED_SCOPE: HeaderName = HeaderName::from_static("x-latchkey-scope");

/// What `X-Latchkey-Scopes` says for a full-access token (no scopes).
pub const FULL_ACCESS: &str = "*";

/// A deny's body.
#[derive(Serialize)]
struct DenyJson {
    allowed: bool,
    reason: &'static str,
}

/// `/v1/auth/check`, any method, any path below it.
pub async fn forward(request: Request<Incoming>, exchange: &Exchange) -> Reply {
    let headers = request.headers();
    let Some(token) = bearer(headers) else {
        return deny(StatusCode::UNAUTHORIZED, "missing_token");
    };
    // Every scope given is required: the proxy's query parameter and the
    // header alike. A client that can set the header (a proxy that copies
    // client headers to the check) can only add a requirement, never lift
    // the proxy's, and an empty header requires nothing more.
    let query = request.uri().query().unwrap_or("");
    let from_query = match query {
        "" => None,
        query => match form_field(query, "scope") {
            Some(scope) if scope.trim().is_empty() => None,
            Some(scope) => Some(scope),
            None if query.contains("scope=") => return deny(StatusCode::FORBIDDEN, "invalid_scope"),
            None => None,
        },
    };
    let from_header = match headers.get(REQUIRED_SCOPE).map(HeaderValue::to_str) {
        Some(Ok(scope)) if !scope.trim().is_empty() => Some(scope.trim()),
        Some(Ok(_)) | None => None,
        Some(Err(_)) => return deny(StatusCode::FORBIDDEN, "invalid_scope"),
    };
    // At most two: the query's and the header's (no allocation).
    let required: ArrayVec<&str, 2> =
        from_query.as_deref().map(str::trim).into_iter().chain(from_header).collect();
    let client = exchange.side.trusted.client(exchange.peer, headers);
    match check::forward_auth(token, &required, client, &exchange.uses, &exchange.ctx).await {
        Ok(verdict) if verdict.allowed() => allow(&verdict),
        Ok(verdict) => {
            let status = match verdict.decided.decision {
                Decision::Unknown | Decision::Expired | Decision::Revoked => StatusCode::UNAUTHORIZED,
                _ => StatusCode::FORBIDDEN,
            };
            deny(status, verdict.decided.decision.as_str())
        }
        Err(ErrorCode::TooManyFailedLogins) => deny(StatusCode::UNAUTHORIZED, "throttled"),
        Err(ErrorCode::InvalidScope) => deny(StatusCode::FORBIDDEN, "invalid_scope"),
        Err(ErrorCode::StorageUnavailable) => deny(StatusCode::FORBIDDEN, "unavailable"),
        Err(_) => deny(StatusCode::FORBIDDEN, "error"),
    }
}

/// The token of an `Authorization: Bearer` header.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|token| !token.is_empty())
}

/// 200 with the identity headers and no body: proxies read the headers
/// only, and this is the answer a busy proxy gets most.
fn allow(verdict: &Verdict) -> Reply {
    let decided = &verdict.decided;
    let mut reply = Response::new(Full::new(Bytes::new()));
    let headers = reply.headers_mut();
    headers.reserve(6);
    headers.insert(USER_ID, HeaderValue::from(decided.user_id));
    headers.insert(TOKEN_ID, HeaderValue::from(decided.token_id));
    // A username or scope that is no valid header value is left out rather
    // than mangled (usernames and scopes are checked on the way in, so
    // neither happens today).
    if let Ok(username) = HeaderValue::from_str(decided.username.as_str()) {
        headers.insert(USERNAME, username);
    }
    let scopes = match verdict.scopes() {
        [] => Ok(HeaderValue::from_static(FULL_ACCESS)),
        [one] => HeaderValue::from_str(one),
        many => HeaderValue::from_str(&many.join(" ")),
    };
    if let Ok(scopes) = scopes {
        headers.insert(SCOPES, scopes);
    }
    headers.insert(REASON, HeaderValue::from_static("allowed"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    reply
}

fn deny(status: StatusCode, reason: &'static str) -> Reply {
    let body = DenyJson { allowed: false, reason };
    let mut reply = json(status, &body);
    let headers = reply.headers_mut();
    headers.insert(REASON, HeaderValue::from_static(reason));
    if status == StatusCode::UNAUTHORIZED {
        let challenge = match reason {
            "missing_token" => "Bearer realm=\"latchkey\"",
            _ => "Bearer realm=\"latchkey\", error=\"invalid_token\"",
        };
        headers.insert(WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
    }
    reply
}

/// `POST /v1/introspect` with the form field `token`, from a caller with
/// the `authorize` permission (and scope, for a token session).
pub async fn introspect(request: Request<Incoming>, exchange: &Exchange) -> Result<Reply, ApiError> {
    let (parts, incoming) = request.into_parts();
    let mut caller = log_in_caller(&parts.headers, exchange).await?;
    let bytes = body(Request::from_parts(parts, incoming), exchange).await?;
    let text = std::str::from_utf8(&bytes).map_err(|_| ApiError::invalid("the form is not UTF-8"))?;
    let mut fields = form(text)?;
    let token = fields.remove("token").ok_or_else(|| ApiError::invalid("the form needs a token field"))?;
    let verdict = check::introspect(&token, &mut caller, &exchange.ctx);
    exchange.ctx.uses.hand_over(caller.take_uses());
    let verdict = verdict.map_err(ApiError::from_code)?;
    #[derive(Serialize)]
    struct IntrospectionJson<'a> {
        active: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        sub: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        username: Option<&'a str>,
        /// Space-separated; absent for a full-access token.
        #[serde(skip_serializing_if = "Option::is_none")]
        scope: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        exp: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        iat: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        token_type: Option<&'static str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        jti: Option<String>,
    }
    if !verdict.allowed() {
        let inactive = IntrospectionJson {
            active: false,
            sub: None,
            username: None,
            scope: None,
            exp: None,
            iat: None,
            token_type: None,
            jti: None,
        };
        return Ok(json(StatusCode::OK, &inactive));
    }
    let decided = &verdict.decided;
    let scopes = verdict.scopes();
    let body = IntrospectionJson {
        active: true,
        sub: Some(decided.user_id.to_string()),
        username: Some(decided.username.as_str()),
        scope: (!scopes.is_empty()).then(|| scopes.join(" ")),
        exp: (decided.expires_at_us != 0).then(|| epoch_seconds(decided.expires_at_us)),
        iat: Some(epoch_seconds(verdict.created_at_us)),
        token_type: Some("Bearer"),
        jti: Some(decided.token_id.to_string()),
    };
    Ok(json(StatusCode::OK, &body))
}
