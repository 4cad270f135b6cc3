//! The two logins: username and password (Argon2, throttled), and a
//! personal access token (a keyed hash looked up in the registry, no lock).
//!
//! Each login reserves its place in the failed-login throttle before any
//! lookup or Argon2 and hands it back only when it turns out to be no guess
//! (see `auth/throttle.rs`), so logins in flight together cannot overrun
//! the burst. Failed logins are audit events at warn level; successes are
//! debug-level audit events.

use std::net::SocketAddr;
use std::sync::Arc;

use latchkey_protocol::body::{IdentityInfo, LoginUser, LoginWithPersonalAccessToken};
use latchkey_protocol::{ErrorCode, token};

use super::{Context, ReplyBody, Session, SessionToken};
use crate::auth::throttle::{Attempt, Reservation};
use crate::auth::users::{PASSWORD_BYTES_MAX, PASSWORD_BYTES_MIN, USERNAME_BYTES_MAX, USERNAME_BYTES_MIN};
use crate::clock::request_now_us;
use crate::registry::{LastUsed, TokenExtras, TokenHash};

pub(super) async fn login_user(
    login: LoginUser,
    session: &mut Session,
    ctx: &Context,
) -> Result<ReplyBody, ErrorCode> {
    let LoginUser { username, password, .. } = login;
    // Bounds first: no lookup and no hashing for a request that cannot match.
    if !(USERNAME_BYTES_MIN..=USERNAME_BYTES_MAX).contains(&username.len()) {
        return Err(ErrorCode::InvalidUsername);
    }
    if !(PASSWORD_BYTES_MIN..=PASSWORD_BYTES_MAX).contains(&password.len()) {
        return Err(ErrorCode::InvalidPassword);
    }
    let auth = &ctx.auth;
    let peer = session.peer();
    let attempt = Attempt::Password { address: peer.ip(), username: &username };
    let Ok(reservation) = auth.throttle.reserve(attempt).await else {
        tracing::warn!(target: "audit", event = "login_throttled", method = "password", %username, %peer);
        return Err(ErrorCode::TooManyFailedLogins);
    };
    let user = auth.users().by_name(&username).cloned();
    let verified = auth.passwords.verify(user.as_deref(), password).await;
    let user = match user {
        Some(user) if verified => user,
        _ => {
            drop(reservation);
            tracing::warn!(target: "audit", event = "login_failed", method = "password", %username, %peer);
            return Err(ErrorCode::InvalidCredentials);
        }
    };
    // The right password of an inactive user is no guess either.
    reservation.refund();
    if !user.active {
        tracing::warn!(target: "audit", event = "login_failed", method = "password", reason = "inactive", %username, %peer);
        return Err(ErrorCode::UserInactive);
    }
    session.log_in(user.id, None);
    // Successful logins are debug-level audit events: a sidecar answers tens
    // of thousands a second. `LATCHKEY_LOG=info,audit=debug` records them.
    tracing::debug!(target: "audit", event = "login", method = "password", user_id = user.id, %username, %peer);
    Ok(ReplyBody::Identity(IdentityInfo { user_id: user.id }))
}

/// A token login on the spot, when the throttle needs no waiting (it is
/// off, or no failure is on record near the client): the common case,
/// answered without building the async path below. `Err` gives the login
/// back for [`login_with_token`].
pub(super) fn login_with_token_at_once(
    login: LoginWithPersonalAccessToken,
    session: &mut Session,
    ctx: &Context,
) -> Result<Result<ReplyBody, ErrorCode>, LoginWithPersonalAccessToken> {
    // A registry that may be missing a revocation checks no token.
    if let Err(code) = ctx.freshness.check() {
        return Ok(Err(code));
    }
    match ctx.auth.throttle.reserve_at_once(Attempt::Token { address: session.peer().ip() }) {
        Some(reservation) => Ok(settle_token_login(reservation, &login, session, ctx)),
        None => Err(login),
    }
}

/// The rest of a token login [`login_with_token_at_once`] handed on (its
/// freshness check passed, with no await since): waits for the throttle,
/// then checks the token.
pub(super) async fn login_with_token(
    login: LoginWithPersonalAccessToken,
    session: &mut Session,
    ctx: &Context,
) -> Result<ReplyBody, ErrorCode> {
    let peer = session.peer();
    let Ok(reservation) = ctx.auth.throttle.reserve(Attempt::Token { address: peer.ip() }).await else {
        tracing::warn!(target: "audit", event = "login_throttled", method = "token", %peer);
        return Err(ErrorCode::TooManyFailedLogins);
    };
    settle_token_login(reservation, &login, session, ctx)
}

/// Checks the token and settles the reservation. Not async: nothing waits
/// between the reservation and its settling, so at most one token login per
/// worker thread is in flight; the throttle reserves only where a failure is
/// on record near the client and otherwise charges a failure afterwards
/// (`auth/throttle.rs` says why and what that bounds).
fn settle_token_login(
    reservation: Reservation<'_>,
    login: &LoginWithPersonalAccessToken,
    session: &mut Session,
    ctx: &Context,
) -> Result<ReplyBody, ErrorCode> {
    let peer = session.peer();
    let now = request_now_us();
    let token = match find_token(login, peer, now, ctx) {
        Ok(token) => token,
        Err((reason, code)) => {
            // Inactive owners hold real tokens: that is no guess.
            if code == ErrorCode::UserInactive {
                reservation.refund();
            } else {
                drop(reservation);
            }
            tracing::warn!(target: "audit", event = "login_failed", method = "token", reason, %peer);
            return Err(code);
        }
    };
    reservation.refund();
    let FoundToken { id: token_id, user_id, name, hash, extras } = token;
    session.log_in(user_id, Some(SessionToken { id: token_id, hash, extras }));
    session.note_use(ctx, token_id, hash, LastUsed { at_us: now, peer });
    tracing::debug!(target: "audit", event = "login", method = "token", user_id, token_id, token_name = %name, %peer);
    Ok(ReplyBody::Identity(IdentityInfo { user_id }))
}

/// A token a login may use.
struct FoundToken {
    id: u64,
    user_id: u32,
    name: Arc<str>,
    hash: TokenHash,
    extras: Option<Arc<TokenExtras>>,
}

/// The token `login` names, if it may log in from `peer` at `now_us`; else
/// why not (the audit reason) and the code to answer.
fn find_token(
    login: &LoginWithPersonalAccessToken,
    peer: SocketAddr,
    now_us: u64,
    ctx: &Context,
) -> Result<FoundToken, (&'static str, ErrorCode)> {
    // Every token in the registry was minted here, so one that is found is
    // well formed: only the free checks (length, prefix) come before the
    // hash, and the alphabet and checksum are looked at after a miss, to
    // name it in the audit event.
    if !token::has_shape(&login.token) {
        return Err(("malformed", ErrorCode::ResourceNotFound));
    }
    let hash = ctx.auth.token_key.hash(&login.token);
    let found = ctx.registry.read(|replica| {
        replica.by_hash(&hash).map(|token| {
            let status = (token.revoked_at_us.is_some(), token.is_expired(now_us), token.admits(peer.ip()));
            (token.id, token.user_id, token.name.clone(), token.extras.clone(), status)
        })
    });
    let Some((id, user_id, name, extras, (revoked, expired, admitted))) = found else {
        let reason = if token::validate(&login.token).is_err() { "malformed" } else { "unknown" };
        return Err((reason, ErrorCode::ResourceNotFound));
    };
    let users = ctx.auth.users();
    let Some(owner) = users.by_id(user_id) else {
        return Err(("owner_removed", ErrorCode::ResourceNotFound));
    };
    if revoked {
        return Err(("revoked", ErrorCode::PersonalAccessTokenRevoked));
    }
    if expired {
        return Err(("expired", ErrorCode::PersonalAccessTokenExpired));
    }
    if !owner.active {
        return Err(("inactive", ErrorCode::UserInactive));
    }
    if !admitted {
        tracing::warn!(target: "audit", event = "login_denied_network", method = "token", user_id, token_id = id, token_name = %name, %peer);
        return Err(("network", ErrorCode::AddressNotAllowed));
    }
    Ok(FoundToken { id, user_id, name, hash, extras })
}
