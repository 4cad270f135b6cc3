//! The web console's browser sessions: sign in (`POST /v1/session`), who
//! am I (`GET`), sign out (`DELETE`), the cookie that names a session, and
//! the checks that keep another site from using it (CSRF).
//!
//! A session is a logged-in command session (`command::Session`) kept in
//! memory between requests, so the REST routes run on it exactly as they
//! run on a Bearer or Basic login: one rule book. The cookie carries 256
//! random bits; the server keeps only their BLAKE3 hash as the map's key,
//! so neither memory dumps of the map nor logs hold a usable session id.
//! Sessions live in memory only and end with a restart.
//!
//! Limits: [`SESSION_LIFETIME`] from sign-in, [`SESSION_IDLE_TIMEOUT`]
//! between requests, [`SESSIONS_MAX`] on the server (a sign-in past it is
//! refused with 503) and [`SESSIONS_PER_USER_MAX`] per user (a sign-in past
//! it ends that user's oldest session).
//!
//! Must never: log or store a session id or CSRF token, let a cookie alone
//! change anything (every other method than GET and HEAD needs the CSRF
//! header and a same-origin request: checked where the cookie is taken, in
//! [`session_caller`], so no route can take it without the check), or keep
//! a session whose user is inactive or whose token no longer works.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use hyper::body::Incoming;
use hyper::header::{COOKIE, HOST, HeaderValue, ORIGIN, SET_COOKIE};
use hyper::{HeaderMap, Method, Request, StatusCode};
use latchkey_protocol::body::{LoginUser, LoginWithPersonalAccessToken};
use latchkey_protocol::{ErrorCode, Request as Command, Secret};
use serde::{Deserialize, Serialize};

use super::super::Exchange;
use super::super::input::{Caller, CallerSession, Credential, body, log_in_as};
use super::super::reply::{ApiError, Reply, empty, json, time};
use crate::clock::now_us;
use crate::command::Session;

/// How long a session lasts from sign-in, however busy.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(8 * 3600);
/// How long a session lasts without a request.
pub const SESSION_IDLE_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// Sessions held at once on this server.
pub const SESSIONS_MAX: usize = 4096;
/// Sessions one user holds at once.
pub const SESSIONS_PER_USER_MAX: usize = 16;
/// The cookie's name.
pub const COOKIE_NAME: &str = "latchkey_session";
/// The header a cookie-authenticated change must carry, with the session's
/// CSRF token.
pub const CSRF_HEADER: &str = "x-latchkey-csrf";
/// Random bytes in a session id and in a CSRF token.
const SECRET_BYTES: usize = 32;

/// A session's key in the map: the BLAKE3 hash of its cookie value.
type SessionKey = [u8; 32];

/// One signed-in browser.
pub struct ConsoleSession {
    user_id: u32,
    credential: Credential,
    /// Sent back in [`CSRF_HEADER`] by the page; never in a cookie.
    csrf_token: String,
    started: Instant,
    started_at_us: u64,
    last_seen: Mutex<Instant>,
    /// Locked for a request's whole run: one browser's requests run one
    /// after another, as on one connection.
    command: Arc<tokio::sync::Mutex<Session>>,
}

impl ConsoleSession {
    fn ended_by_time(&self, now: Instant) -> Option<&'static str> {
        let last_seen = *self.last_seen.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if now.duration_since(self.started) >= SESSION_LIFETIME {
            Some("lifetime")
        } else if now.duration_since(last_seen) >= SESSION_IDLE_TIMEOUT {
            Some("idle")
        } else {
            None
        }
    }

    fn expires_at_us(&self) -> u64 {
        self.started_at_us.saturating_add(SESSION_LIFETIME.as_micros() as u64)
    }
}

/// Every console session on this server.
#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<SessionKey, Arc<ConsoleSession>>>,
}

fn key_of(cookie: &str) -> SessionKey {
    *blake3::hash(cookie.as_bytes()).as_bytes()
}

fn random_text() -> String {
    let bytes: [u8; SECRET_BYTES] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn ended_event(session: &ConsoleSession, reason: &'static str) {
    tracing::info!(target: "audit", event = "console_session_ended", reason, user_id = session.user_id);
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SessionKey, Arc<ConsoleSession>>> {
        self.map.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The session `cookie` names, if it still stands by time; marks it seen.
    fn find(&self, cookie: &str, now: Instant) -> Option<Arc<ConsoleSession>> {
        let key = key_of(cookie);
        let mut map = self.lock();
        let session = Arc::clone(map.get(&key)?);
        if let Some(reason) = session.ended_by_time(now) {
            map.remove(&key);
            ended_event(&session, reason);
            return None;
        }
        *session.last_seen.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = now;
        Some(session)
    }

    fn holds(&self, cookie: &str) -> bool {
        self.lock().contains_key(&key_of(cookie))
    }

    fn remove(&self, cookie: &str) -> Option<Arc<ConsoleSession>> {
        self.lock().remove(&key_of(cookie))
    }

    /// Keeps `session` under a new id; the id (the cookie's value).
    fn insert(&self, session: ConsoleSession, now: Instant) -> Result<String, ApiError> {
        let mut map = self.lock();
        map.retain(|_, held| match held.ended_by_time(now) {
            Some(reason) => {
                ended_event(held, reason);
                false
            }
            None => true,
        });
        let mut own: Vec<(SessionKey, Instant)> = map
            .iter()
            .filter(|(_, held)| held.user_id == session.user_id)
            .map(|(key, held)| (*key, held.started))
            .collect();
        own.sort_by_key(|(_, started)| *started);
        let surplus = (own.len() + 1).saturating_sub(SESSIONS_PER_USER_MAX);
        for (key, _) in own.into_iter().take(surplus) {
            if let Some(oldest) = map.remove(&key) {
                ended_event(&oldest, "per_user_limit");
            }
        }
        if map.len() >= SESSIONS_MAX {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::Error,
                format!("the server holds {SESSIONS_MAX} console sessions already: try again later"),
            ));
        }
        let id = random_text();
        map.insert(key_of(&id), Arc::new(session));
        Ok(id)
    }

    /// Sessions held now (for tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }
}

/// The session cookie's value, if the request carries one.
pub fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|line| line.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE_NAME)
        .map(|(_, value)| value.trim())
        .filter(|value| !value.is_empty())
}

fn forbidden(message: &str) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, ErrorCode::Unauthorized, message.to_owned())
}

fn session_ended() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        ErrorCode::Unauthenticated,
        "no console session (signed out, timed out, or its token or user stopped): sign in again",
    )
}

/// Refuses a request another site made the browser send: a
/// `Sec-Fetch-Site` other than same-origin (or none: typed by the user),
/// or an `Origin` whose host and port are not the request's `Host` (or
/// the `X-Forwarded-Host` a trusted proxy sets, `forwarded_host`).
pub fn same_origin(headers: &HeaderMap, forwarded_host: Option<&str>) -> Result<(), ApiError> {
    if let Some(site) = headers.get("sec-fetch-site")
        && !matches!(site.as_bytes(), b"same-origin" | b"none")
    {
        return Err(forbidden("a cross-site request is refused here"));
    }
    if let Some(origin) = headers.get(ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        let host =
            forwarded_host.or_else(|| headers.get(HOST).and_then(|host| host.to_str().ok())).unwrap_or("");
        let origin_host = origin.split_once("://").map_or("", |(_, rest)| rest);
        if host.is_empty() || !origin_host.eq_ignore_ascii_case(host) {
            return Err(forbidden("a request from another origin is refused here"));
        }
    }
    Ok(())
}

/// [`same_origin`] for a request on `exchange`.
fn same_origin_here(headers: &HeaderMap, exchange: &Exchange) -> Result<(), ApiError> {
    same_origin(headers, exchange.side.trusted.forwarded(exchange.peer, headers, "x-forwarded-host"))
}

/// Whether the browser reached us over HTTPS: our own TLS, or a trusted
/// proxy's (`X-Forwarded-Proto: https`). The cookie is `Secure` then.
fn over_https(headers: &HeaderMap, exchange: &Exchange) -> bool {
    exchange.side.connections.tls.is_some()
        || exchange
            .side
            .trusted
            .forwarded(exchange.peer, headers, "x-forwarded-proto")
            .is_some_and(|proto| proto.eq_ignore_ascii_case("https"))
}

fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

/// The CSRF rule, for every request a console session's cookie
/// authenticates: unless it is a GET or HEAD, it must come from the
/// console's own origin and carry the session's CSRF token in
/// [`CSRF_HEADER`].
fn guard(
    method: &Method,
    headers: &HeaderMap,
    session: &ConsoleSession,
    exchange: &Exchange,
) -> Result<(), ApiError> {
    if matches!(*method, Method::GET | Method::HEAD) {
        return Ok(());
    }
    same_origin_here(headers, exchange)?;
    let sent = headers.get(CSRF_HEADER).and_then(|value| value.to_str().ok()).unwrap_or("");
    if !same_secret(sent, &session.csrf_token) {
        return Err(forbidden("a change made with the console's cookie needs its X-Latchkey-CSRF header"));
    }
    Ok(())
}

/// The caller a request's session cookie stands for: `None` without a
/// cookie (or with the console off), 401 for a session that ended, 403 for
/// a change without the CSRF header or from another origin ([`guard`]).
/// Ends the session here when its user is inactive or its token is no
/// longer active (revoked, rotated, deleted or expired), checked on every
/// request.
pub async fn session_caller(
    method: &Method,
    headers: &HeaderMap,
    exchange: &Exchange,
) -> Result<Option<Caller>, ApiError> {
    let Some(console) = &exchange.side.console else { return Ok(None) };
    let Some(cookie) = session_cookie(headers) else { return Ok(None) };
    let (found, session) = standing(console, cookie, exchange).await?;
    guard(method, headers, &found, exchange)?;
    Ok(Some(Caller {
        session: CallerSession::Console(session),
        user_id: found.user_id,
        credential: found.credential,
    }))
}

/// The session `cookie` names and its command session, locked, if it still
/// stands; else ends it and answers 401.
async fn standing(
    console: &super::Console,
    cookie: &str,
    exchange: &Exchange,
) -> Result<(Arc<ConsoleSession>, tokio::sync::OwnedMutexGuard<Session>), ApiError> {
    let found = console.sessions.find(cookie, Instant::now()).ok_or_else(session_ended)?;
    let session = Arc::clone(&found.command).lock_owned().await;
    // Signed out while this request waited for the one before it.
    if !console.sessions.holds(cookie) {
        return Err(session_ended());
    }
    let ctx = &exchange.ctx;
    let user_active = ctx.auth.users().by_id(found.user_id).is_some_and(|user| user.active);
    let reason = if !session.is_logged_in() {
        Some("logged_out")
    } else if !user_active {
        Some("user_inactive")
    } else if !session.token_is_active(ctx, now_us()) {
        Some("token_not_active")
    } else {
        None
    };
    if let Some(reason) = reason {
        console.sessions.remove(cookie);
        ended_event(&found, reason);
        return Err(session_ended());
    }
    Ok((found, session))
}

/// What a sign-in sends: a username and password, or a token.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SignIn {
    username: Option<String>,
    password: Option<String>,
    token: Option<String>,
}

#[derive(Serialize)]
struct SessionJson {
    user_id: u32,
    username: Option<String>,
    authenticated_with: &'static str,
    /// Send it back in `X-Latchkey-CSRF` with every change.
    csrf_token: String,
    expires_at: String,
    idle_timeout_seconds: u64,
}

fn describe(session: &ConsoleSession, exchange: &Exchange) -> SessionJson {
    SessionJson {
        user_id: session.user_id,
        username: exchange.ctx.auth.users().by_id(session.user_id).map(|user| user.username.clone()),
        authenticated_with: match session.credential {
            Credential::Token => "token",
            Credential::Password => "password",
        },
        csrf_token: session.csrf_token.clone(),
        expires_at: time(session.expires_at_us()),
        idle_timeout_seconds: SESSION_IDLE_TIMEOUT.as_secs(),
    }
}

fn cookie_header(value: &str, max_age_s: u64, secure: bool) -> Option<HeaderValue> {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{COOKIE_NAME}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age_s}{secure}"
    ))
    .ok()
}

fn console_of(exchange: &Exchange) -> Result<&super::Console, ApiError> {
    exchange.side.console.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::InvalidCommand,
            "the web console is off ([http] console)",
        )
    })
}

/// `POST /v1/session`: signs in; 201 with the session and its cookie.
pub async fn sign_in(request: Request<Incoming>, exchange: &Exchange) -> Result<Reply, ApiError> {
    let console = console_of(exchange)?;
    // A sign-in another site posts would put the browser in the attacker's
    // account (login CSRF).
    same_origin_here(request.headers(), exchange)?;
    let headers = request.headers().clone();
    let bytes = body(request, exchange).await?;
    let sign_in: SignIn = serde_json::from_slice(&bytes)
        .map_err(|_| ApiError::invalid("send {\"username\", \"password\"} or {\"token\"} as JSON"))?;
    let (login, credential) = match sign_in {
        SignIn { username: Some(username), password: Some(password), token: None } => {
            let login = LoginUser {
                username,
                password: Secret::new(password),
                version: None,
                context: Some("console".to_owned()),
            };
            (Command::LoginUser(login), Credential::Password)
        }
        SignIn { username: None, password: None, token: Some(token) } => {
            let login = LoginWithPersonalAccessToken { token: Secret::new(token.trim().to_owned()) };
            (Command::LoginWithPersonalAccessToken(login), Credential::Token)
        }
        _ => return Err(ApiError::invalid("send a username and a password, or a token")),
    };
    let (session, user_id) = log_in_as(login, &headers, exchange).await?;
    let now = Instant::now();
    let session = ConsoleSession {
        user_id,
        credential,
        csrf_token: random_text(),
        started: now,
        started_at_us: now_us(),
        last_seen: Mutex::new(now),
        command: Arc::new(tokio::sync::Mutex::new(session)),
    };
    let description = describe(&session, exchange);
    // A browser signing in again leaves no session behind under its old
    // cookie (and a session id planted before sign-in is never used).
    if let Some(old) = session_cookie(&headers).and_then(|cookie| console.sessions.remove(cookie)) {
        ended_event(&old, "signed_in_again");
    }
    let id = console.sessions.insert(session, now)?;
    tracing::info!(target: "audit", event = "console_session_started", user_id, with = description.authenticated_with, peer = %exchange.peer);
    let mut reply = json(StatusCode::CREATED, &description);
    let secure = over_https(&headers, exchange);
    if let Some(cookie) = cookie_header(&id, SESSION_LIFETIME.as_secs(), secure) {
        reply.headers_mut().insert(SET_COOKIE, cookie);
    }
    Ok(reply)
}

/// `GET /v1/session`: who is signed in, and the CSRF token.
pub async fn current(request: Request<Incoming>, exchange: &Exchange) -> Result<Reply, ApiError> {
    let console = console_of(exchange)?;
    let cookie = session_cookie(request.headers()).ok_or_else(session_ended)?;
    let (found, _) = standing(console, cookie, exchange).await?;
    Ok(json(StatusCode::OK, &describe(&found, exchange)))
}

/// `DELETE /v1/session`: signs out (204, and the cookie cleared), also
/// when the session had ended already. Needs the CSRF header like any
/// change: another site must not sign the user out either.
pub async fn sign_out(request: Request<Incoming>, exchange: &Exchange) -> Result<Reply, ApiError> {
    let console = console_of(exchange)?;
    let headers = request.headers();
    if let Some(cookie) = session_cookie(headers)
        && let Some(session) = console.sessions.find(cookie, Instant::now())
    {
        guard(request.method(), headers, &session, exchange)?;
        console.sessions.remove(cookie);
        ended_event(&session, "signed_out");
    }
    let mut reply = empty(StatusCode::NO_CONTENT);
    if let Some(cookie) = cookie_header("", 0, over_https(headers, exchange)) {
        reply.headers_mut().insert(SET_COOKIE, cookie);
    }
    Ok(reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(user_id: u32, started: Instant) -> ConsoleSession {
        let peer = "127.0.0.1:1".parse().unwrap();
        ConsoleSession {
            user_id,
            credential: Credential::Password,
            csrf_token: random_text(),
            started,
            started_at_us: 0,
            last_seen: Mutex::new(started),
            command: Arc::new(tokio::sync::Mutex::new(Session::new(1, peer))),
        }
    }

    #[test]
    fn ids_are_random_and_kept_only_as_hashes() {
        let sessions = Sessions::default();
        let now = Instant::now();
        let a = sessions.insert(session(1, now), now).unwrap();
        let b = sessions.insert(session(1, now), now).unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 43, "256 bits in base64url");
        assert!(sessions.lock().keys().all(|key| key != a.as_bytes() && key != b.as_bytes()));
        assert!(sessions.find(&a, now).is_some());
        assert!(sessions.find("not-a-session", now).is_none());
    }

    #[test]
    fn sessions_end_by_lifetime_and_idleness() {
        let sessions = Sessions::default();
        let start = Instant::now();
        let id = sessions.insert(session(1, start), start).unwrap();
        let busy = start + SESSION_IDLE_TIMEOUT / 2;
        assert!(sessions.find(&id, busy).is_some());
        assert!(sessions.find(&id, busy + SESSION_IDLE_TIMEOUT).is_none(), "idle too long");
        let id = sessions.insert(session(1, start), start).unwrap();
        let mut at = start;
        while at < start + SESSION_LIFETIME - SESSION_IDLE_TIMEOUT {
            at += SESSION_IDLE_TIMEOUT / 2;
            assert!(sessions.find(&id, at).is_some());
        }
        assert!(sessions.find(&id, start + SESSION_LIFETIME).is_none(), "past its lifetime");
    }

    #[test]
    fn a_user_holds_a_bounded_number_and_the_oldest_goes_first() {
        let sessions = Sessions::default();
        let start = Instant::now();
        let first = sessions.insert(session(7, start), start).unwrap();
        for i in 1..SESSIONS_PER_USER_MAX as u64 {
            let at = start + Duration::from_millis(i);
            sessions.insert(session(7, at), at).unwrap();
        }
        assert_eq!(sessions.len(), SESSIONS_PER_USER_MAX);
        let at = start + Duration::from_secs(1);
        sessions.insert(session(7, at), at).unwrap();
        assert_eq!(sessions.len(), SESSIONS_PER_USER_MAX);
        assert!(sessions.find(&first, at).is_none(), "the oldest was ended");
        sessions.insert(session(8, at), at).unwrap();
        assert_eq!(sessions.len(), SESSIONS_PER_USER_MAX + 1, "another user's are apart");
    }

    #[test]
    fn the_server_holds_a_bounded_number() {
        let sessions = Sessions::default();
        let now = Instant::now();
        for user in 0..SESSIONS_MAX as u32 {
            sessions.insert(session(user, now), now).unwrap();
        }
        let refused = sessions.insert(session(u32::MAX, now), now).unwrap_err();
        assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
    }

    #[test]
    fn cookies_and_origins_are_read_strictly() {
        let mut headers = HeaderMap::new();
        headers.append(COOKIE, HeaderValue::from_static("a=b; latchkey_session=xyz ; c=d"));
        assert_eq!(session_cookie(&headers), Some("xyz"));
        headers.insert(HOST, HeaderValue::from_static("127.0.0.1:8091"));
        assert!(same_origin(&headers, None).is_ok());
        headers.insert(ORIGIN, HeaderValue::from_static("http://127.0.0.1:8091"));
        assert!(same_origin(&headers, None).is_ok());
        headers.insert(ORIGIN, HeaderValue::from_static("http://127.0.0.1:8092"));
        assert!(same_origin(&headers, None).is_err());
        headers.insert(ORIGIN, HeaderValue::from_static("null"));
        assert!(same_origin(&headers, None).is_err());
        headers.remove(ORIGIN);
        headers.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        assert!(same_origin(&headers, None).is_err());
        headers.insert("sec-fetch-site", HeaderValue::from_static("same-site"));
        assert!(same_origin(&headers, None).is_err());
        headers.insert("sec-fetch-site", HeaderValue::from_static("same-origin"));
        assert!(same_origin(&headers, None).is_ok());
        headers.insert(ORIGIN, HeaderValue::from_static("https://tokens.example"));
        assert!(same_origin(&headers, None).is_err());
        assert!(same_origin(&headers, Some("tokens.example")).is_ok());
        assert!(same_secret("abc", "abc") && !same_secret("abc", "abd") && !same_secret("abc", "ab"));
    }
}
