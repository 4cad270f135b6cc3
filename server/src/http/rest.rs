//! The REST API under `/v1`: the token commands of the binary protocol as
//! JSON, run through the same command code (`command::handle`), so every
//! rule, limit and error code is the binary protocol's.
//!
//! Each request logs in with its own credentials, `Authorization: Bearer
//! <token>` or `Basic` (username and password: Argon2 on the password
//! pool, throttled like a TCP login), as a session that lives for that
//! request only; the token uses it records are handed over at its end.
//! Times are RFC 3339 in UTC; a lifetime is given as `expires_in` (a
//! duration, `"30d"`, or `"never"`) or `expires_at` (a time), not both.

use std::time::UNIX_EPOCH;

use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, HeaderValue, LOCATION};
use hyper::{HeaderMap, Method, Request, StatusCode};
use latchkey_protocol::ext::{
    ACCESS_EDITS_MAX, AccessEdit, CreateToken, DeleteToken, EXPIRY_KEEP, EXPIRY_NEVER, EXPIRY_SERVER_DEFAULT,
    EditTokenAccess, GetToken, IssuedToken, ListTokens, RevokeToken, RotateToken, StatusFilter, TokenDetails,
    TokenSelector, TokenStatus, UpdateToken,
};
use latchkey_protocol::{ErrorCode, Request as Command};
use serde::{Deserialize, Serialize};

use super::Exchange;
use super::input::{Caller, Credential, body, form, log_in_with_header};
use super::reply::{ApiError, Reply, empty, json, optional_time, time};
use crate::clock::now_us;
use crate::command::ReplyBody;

/// A token as the API shows it: everything but its secret.
#[derive(Serialize)]
struct TokenJson {
    id: u64,
    name: String,
    description: String,
    status: &'static str,
    /// Whether the token can be used now (Avisi Cloud's name).
    active: bool,
    created_at: String,
    expires_at: Option<String>,
    revoked_at: Option<String>,
    last_used_at: Option<String>,
    last_used_address: Option<String>,
    /// Empty: full access.
    scopes: Vec<String>,
    /// Empty: any address.
    networks: Vec<String>,
}

impl From<TokenDetails> for TokenJson {
    fn from(token: TokenDetails) -> TokenJson {
        TokenJson {
            id: token.id,
            name: token.name,
            description: token.description,
            status: token.status.as_str(),
            active: token.status == TokenStatus::Active,
            created_at: time(token.created_at_us),
            expires_at: optional_time(token.expires_at_us),
            revoked_at: optional_time(token.revoked_at_us),
            last_used_at: optional_time(token.last_used_at_us),
            last_used_address: Some(token.last_used_address).filter(|address| !address.is_empty()),
            scopes: token.scopes,
            networks: token.networks,
        }
    }
}

/// A token just made or rotated: the only answer that carries its secret.
#[derive(Serialize)]
struct IssuedJson {
    id: u64,
    name: String,
    token: String,
    created_at: String,
    expires_at: Option<String>,
}

fn issued(issued: IssuedToken, name: String) -> IssuedJson {
    IssuedJson {
        id: issued.id,
        name,
        token: issued.token.expose().to_owned(),
        created_at: time(issued.created_at_us),
        expires_at: optional_time(issued.expires_at_us),
    }
}

/// Parses a JSON body into `T`; an empty body is `{}`. The error names a
/// missing or unknown field, or where the JSON breaks; it never repeats a
/// value from the body (it could be a secret sent in the wrong place).
fn parse<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, ApiError> {
    let bytes = if bytes.iter().all(u8::is_ascii_whitespace) { b"{}".as_slice() } else { bytes };
    serde_json::from_slice(bytes).map_err(|error| {
        let text = error.to_string();
        let about_a_field = text.starts_with("missing field") || text.starts_with("unknown field");
        let message = if about_a_field {
            text.split(", expected")
                .next()
                .unwrap_or(&text)
                .split(" at line")
                .next()
                .unwrap_or(&text)
                .to_owned()
        } else {
            format!("invalid JSON body (line {}, column {})", error.line(), error.column())
        };
        ApiError::invalid(message)
    })
}

/// A lifetime as the API takes it.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Lifetime {
    /// A duration (`"90d"`, `"12h"`) or `"never"`.
    expires_in: Option<String>,
    /// An RFC 3339 time in the future.
    expires_at: Option<String>,
}

impl Lifetime {
    /// The protocol's expiry field: `absent` when neither is given.
    fn expiry_us(&self, absent: u64) -> Result<u64, ApiError> {
        let invalid = |message: &str| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                ErrorCode::InvalidPersonalAccessTokenExpiry,
                message.to_owned(),
            )
        };
        match (&self.expires_in, &self.expires_at) {
            (None, None) => Ok(absent),
            (Some(_), Some(_)) => Err(invalid("give expires_in or expires_at, not both")),
            (Some(text), None) if text.trim() == "never" => Ok(EXPIRY_NEVER),
            (Some(text), None) => {
                let lifetime = humantime::parse_duration(text.trim()).map_err(|_| {
                    invalid("expires_in is a duration such as \"90d\" or \"12h\", or \"never\"")
                })?;
                let lifetime_us = u64::try_from(lifetime.as_micros()).unwrap_or(u64::MAX - 1);
                if lifetime_us == 0 {
                    return Err(invalid("expires_in must be longer than zero"));
                }
                Ok(lifetime_us.min(EXPIRY_NEVER - 1))
            }
            (None, Some(text)) => {
                let at = humantime::parse_rfc3339_weak(text.trim()).map_err(|_| {
                    invalid("expires_at is an RFC 3339 time such as \"2027-01-31T00:00:00Z\"")
                })?;
                let at_us = at.duration_since(UNIX_EPOCH).map_or(0, |since| since.as_micros() as u64);
                match at_us.checked_sub(now_us()) {
                    Some(lifetime_us) if lifetime_us > 0 => Ok(lifetime_us),
                    _ => Err(invalid("expires_at is not in the future")),
                }
            }
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    name: String,
    #[serde(default)]
    description: String,
    expires_in: Option<String>,
    expires_at: Option<String>,
    #[serde(default)]
    scopes: Vec<String>,
    #[serde(default)]
    networks: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateBody {
    name: Option<String>,
    description: Option<String>,
}

/// A rotate: a lifetime, and whether a revoked token may come back.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RotateBody {
    expires_in: Option<String>,
    expires_at: Option<String>,
    #[serde(default)]
    reactivate: bool,
}

/// An access edit, applied in this order: scopes cleared, removed, added;
/// then networks the same way.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AccessBody {
    #[serde(default)]
    clear_scopes: bool,
    #[serde(default)]
    remove_scopes: Vec<String>,
    #[serde(default)]
    add_scopes: Vec<String>,
    #[serde(default)]
    clear_networks: bool,
    #[serde(default)]
    remove_networks: Vec<String>,
    #[serde(default)]
    add_networks: Vec<String>,
}

impl AccessBody {
    /// The edits in the order they apply: at least one, and no more than
    /// one request of the binary protocol carries. Each item is checked by
    /// the command, as over TCP.
    fn edits(self) -> Result<Vec<AccessEdit>, ApiError> {
        let AccessBody {
            clear_scopes,
            remove_scopes,
            add_scopes,
            clear_networks,
            remove_networks,
            add_networks,
        } = self;
        let mut edits = Vec::new();
        edits.extend(clear_scopes.then_some(AccessEdit::ClearScopes));
        edits.extend(remove_scopes.into_iter().map(AccessEdit::RemoveScope));
        edits.extend(add_scopes.into_iter().map(AccessEdit::AddScope));
        edits.extend(clear_networks.then_some(AccessEdit::ClearNetworks));
        edits.extend(remove_networks.into_iter().map(AccessEdit::RemoveNetwork));
        edits.extend(add_networks.into_iter().map(AccessEdit::AddNetwork));
        if edits.is_empty() {
            return Err(ApiError::invalid(
                "nothing to change: give clear_scopes, remove_scopes, add_scopes, clear_networks, \
                 remove_networks and/or add_networks",
            ));
        }
        if edits.len() > ACCESS_EDITS_MAX {
            return Err(ApiError::invalid(format!("at most {ACCESS_EDITS_MAX} changes in one request")));
        }
        Ok(edits)
    }
}

/// `GET /v1/me`.
pub async fn me(request: Request<Incoming>, exchange: &Exchange) -> Result<Reply, ApiError> {
    let mut caller = log_in(request.method(), request.headers(), exchange).await?;
    let ReplyBody::Me(me) = caller.run(Command::GetMe, exchange).await? else {
        return Err(ErrorCode::Error.into());
    };
    let username = exchange.ctx.auth.users().by_id(me.user_id).map(|user| user.username.clone());
    #[derive(Serialize)]
    struct MeJson {
        user_id: u32,
        username: Option<String>,
        address: String,
        authenticated_with: &'static str,
    }
    let authenticated_with = match caller.credential {
        Credential::Token => "token",
        Credential::Password => "password",
    };
    debug_assert_eq!(me.user_id, caller.user_id);
    Ok(json(
        StatusCode::OK,
        &MeJson { user_id: me.user_id, username, address: me.address, authenticated_with },
    ))
}

/// `POST /v1/tokens`: 201 with the secret, once.
pub async fn create(request: Request<Incoming>, exchange: &Exchange) -> Result<Reply, ApiError> {
    let (parts, incoming) = request.into_parts();
    let mut caller = log_in(&parts.method, &parts.headers, exchange).await?;
    let bytes = body(Request::from_parts(parts, incoming), exchange).await?;
    let CreateBody { name, description, expires_in, expires_at, scopes, networks } = parse(&bytes)?;
    let expiry_us = Lifetime { expires_in, expires_at }.expiry_us(EXPIRY_SERVER_DEFAULT)?;
    let create = CreateToken { name: name.clone(), description, expiry_us, scopes, networks };
    let ReplyBody::Issued(token) = caller.run(Command::CreateToken(create), exchange).await? else {
        return Err(ErrorCode::Error.into());
    };
    let id = token.id;
    let mut reply = json(StatusCode::CREATED, &issued(token, name));
    if let Ok(location) = HeaderValue::from_str(&format!("/v1/tokens/{id}")) {
        reply.headers_mut().insert(LOCATION, location);
    }
    Ok(reply)
}

/// `GET /v1/tokens?status=active&after=ID&limit=N`.
pub async fn list(request: Request<Incoming>, exchange: &Exchange) -> Result<Reply, ApiError> {
    let mut caller = log_in(request.method(), request.headers(), exchange).await?;
    let query = form(request.uri().query().unwrap_or(""))?;
    let mut list = ListTokens::default();
    let mut expiring_within = None;
    for (name, value) in &query {
        match name.as_str() {
            "status" => {
                list.filter = match value.as_str() {
                    "" | "all" => StatusFilter::All,
                    "active" => StatusFilter::Active,
                    "revoked" => StatusFilter::Revoked,
                    "expired" => StatusFilter::Expired,
                    _ => return Err(ApiError::invalid("status is all, active, revoked or expired")),
                }
            }
            "after" => {
                list.after_id = value.parse().map_err(|_| ApiError::invalid("after is a token id"))?;
            }
            "limit" => {
                list.limit = value.parse().map_err(|_| ApiError::invalid("limit is a whole number"))?;
            }
            "expiring_within" => {
                let within = humantime::parse_duration(value)
                    .map_err(|_| ApiError::invalid("expiring_within is a duration such as \"7d\""))?;
                expiring_within = Some(within);
            }
            _ => return Err(ApiError::invalid(format!("unknown query parameter {name:?}"))),
        }
    }
    let page = match expiring_within {
        None => {
            let ReplyBody::Page(page) = caller.run(Command::ListTokens(list), exchange).await? else {
                return Err(ErrorCode::Error.into());
            };
            page
        }
        Some(within) => {
            let before_us = now_us().saturating_add(u64::try_from(within.as_micros()).unwrap_or(u64::MAX));
            caller.list_expiring(list, before_us, exchange)?
        }
    };
    #[derive(Serialize)]
    struct PageJson {
        tokens: Vec<TokenJson>,
        /// Pass as `after` for the next page; absent on the last page.
        next_after: Option<u64>,
    }
    let tokens = page.tokens.into_iter().map(TokenJson::from).collect();
    let next_after = (page.next_after_id != 0).then_some(page.next_after_id);
    Ok(json(StatusCode::OK, &PageJson { tokens, next_after }))
}

/// The token `id` as the caller sees it now.
async fn details(caller: &mut Caller, id: u64, exchange: &Exchange) -> Result<TokenJson, ApiError> {
    let get = GetToken { token: TokenSelector::Id(id) };
    let ReplyBody::Details(details) = caller.run(Command::GetToken(get), exchange).await? else {
        return Err(ErrorCode::Error.into());
    };
    Ok(TokenJson::from(*details))
}

/// `GET /v1/tokens/{id}`.
pub async fn get(id: u64, request: Request<Incoming>, exchange: &Exchange) -> Result<Reply, ApiError> {
    let mut caller = log_in(request.method(), request.headers(), exchange).await?;
    Ok(json(StatusCode::OK, &details(&mut caller, id, exchange).await?))
}

/// `PATCH /v1/tokens/{id}` with `name` and/or `description`: the token as
/// it is after the change.
pub async fn update(id: u64, request: Request<Incoming>, exchange: &Exchange) -> Result<Reply, ApiError> {
    let (parts, incoming) = request.into_parts();
    let mut caller = log_in(&parts.method, &parts.headers, exchange).await?;
    let bytes = body(Request::from_parts(parts, incoming), exchange).await?;
    let UpdateBody { name, description } = parse(&bytes)?;
    if name.is_none() && description.is_none() {
        return Err(ApiError::invalid("nothing to change: give name and/or description"));
    }
    let update = UpdateToken { token: TokenSelector::Id(id), name, description };
    caller.run(Command::UpdateToken(update), exchange).await?;
    Ok(json(StatusCode::OK, &details(&mut caller, id, exchange).await?))
}

/// `DELETE /v1/tokens/{id}`: 204.
pub async fn delete(id: u64, request: Request<Incoming>, exchange: &Exchange) -> Result<Reply, ApiError> {
    let mut caller = log_in(request.method(), request.headers(), exchange).await?;
    caller.run(Command::DeleteToken(DeleteToken { token: TokenSelector::Id(id) }), exchange).await?;
    Ok(empty(StatusCode::NO_CONTENT))
}

/// `POST /v1/tokens/{id}/revoke`.
///
/// 204, like a delete: a caller revoking the token it authenticated with
/// has no session left to read the token back with.
pub async fn revoke(id: u64, request: Request<Incoming>, exchange: &Exchange) -> Result<Reply, ApiError> {
    let mut caller = log_in(request.method(), request.headers(), exchange).await?;
    caller.run(Command::RevokeToken(RevokeToken { token: TokenSelector::Id(id) }), exchange).await?;
    Ok(empty(StatusCode::NO_CONTENT))
}

/// `POST /v1/tokens/{id}/rotate`, optionally with a new lifetime (else the
/// expiry is kept) and `reactivate` (a revoked token comes back): the new
/// secret, once.
pub async fn rotate(id: u64, request: Request<Incoming>, exchange: &Exchange) -> Result<Reply, ApiError> {
    let (parts, incoming) = request.into_parts();
    let mut caller = log_in(&parts.method, &parts.headers, exchange).await?;
    let bytes = body(Request::from_parts(parts, incoming), exchange).await?;
    let RotateBody { expires_in, expires_at, reactivate } = parse(&bytes)?;
    let expiry_us = Lifetime { expires_in, expires_at }.expiry_us(EXPIRY_KEEP)?;
    let rotate = RotateToken { token: TokenSelector::Id(id), expiry_us, reactivate };
    // The name, read first: a caller rotating the token it authenticated
    // with has no session left afterwards (and one without `tokens:read`
    // gets the answer without it).
    let name = details(&mut caller, id, exchange).await.map(|token| token.name).unwrap_or_default();
    let rotated = caller.run(Command::RotateToken(rotate), exchange).await.map_err(about_the_token)?;
    let ReplyBody::Issued(token) = rotated else {
        return Err(ErrorCode::Error.into());
    };
    Ok(json(StatusCode::OK, &issued(token, name)))
}

/// A rotate refused for the state of the token it names: not a 401, which
/// says the request's own credentials failed (a browser signs out on it),
/// but what to send instead.
fn about_the_token(error: ApiError) -> ApiError {
    match error.code {
        ErrorCode::PersonalAccessTokenRevoked => ApiError::new(
            StatusCode::CONFLICT,
            error.code,
            "the token is revoked: send \"reactivate\": true to give it a new secret and bring it back",
        ),
        ErrorCode::PersonalAccessTokenExpired => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            error.code,
            "the token has expired: give a new lifetime (expires_in or expires_at)",
        ),
        _ => error,
    }
}

/// `PATCH /v1/tokens/{id}/access`: scopes and networks cleared, removed
/// and added in one change. 200 with the token as it is after it, or 204
/// when the caller cannot read it back: its token lacks `tokens:read`, or
/// it edited the token it authenticated with, which ends that session.
pub async fn edit_access(
    id: u64,
    request: Request<Incoming>,
    exchange: &Exchange,
) -> Result<Reply, ApiError> {
    let (parts, incoming) = request.into_parts();
    let mut caller = log_in(&parts.method, &parts.headers, exchange).await?;
    let bytes = body(Request::from_parts(parts, incoming), exchange).await?;
    let edits = parse::<AccessBody>(&bytes)?.edits()?;
    let edit = EditTokenAccess { token: TokenSelector::Id(id), edits };
    caller.run(Command::EditTokenAccess(edit), exchange).await?;
    match details(&mut caller, id, exchange).await {
        Ok(token) => Ok(json(StatusCode::OK, &token)),
        Err(_) => Ok(empty(StatusCode::NO_CONTENT)),
    }
}

#[derive(Serialize)]
struct CountJson {
    count: u32,
}

/// `POST /v1/tokens/revoke-all`: how many were revoked.
pub async fn revoke_all(request: Request<Incoming>, exchange: &Exchange) -> Result<Reply, ApiError> {
    let mut caller = log_in(request.method(), request.headers(), exchange).await?;
    let ReplyBody::Count(count) = caller.run(Command::RevokeAllTokens, exchange).await? else {
        return Err(ErrorCode::Error.into());
    };
    Ok(json(StatusCode::OK, &CountJson { count: count.count }))
}

/// `DELETE /v1/tokens`: how many were deleted.
pub async fn delete_all(request: Request<Incoming>, exchange: &Exchange) -> Result<Reply, ApiError> {
    let mut caller = log_in(request.method(), request.headers(), exchange).await?;
    let ReplyBody::Count(count) = caller.run(Command::DeleteAllTokens, exchange).await? else {
        return Err(ErrorCode::Error.into());
    };
    Ok(json(StatusCode::OK, &CountJson { count: count.count }))
}

/// Logs in with the `Authorization` header, or, without one, with the web
/// console's session cookie: then a `method` that changes something needs
/// the console's CSRF header from the same origin (`console::sessions`).
async fn log_in(method: &Method, headers: &HeaderMap, exchange: &Exchange) -> Result<Caller, ApiError> {
    if !headers.contains_key(AUTHORIZATION)
        && let Some(caller) = super::console::sessions::session_caller(method, headers, exchange).await?
    {
        return Ok(caller);
    }
    log_in_with_header(headers, exchange).await
}
