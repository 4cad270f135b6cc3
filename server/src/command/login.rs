//! The two logins: username and password (Argon2, throttled), and a
//! personal access token (a keyed hash looked up in the registry, no lock).
//!
//! Failed logins are audit events at warn level and count against the
//! failed-login throttle; successes are debug-level audit events.

use latchkey_protocol::body::{IdentityInfo, LoginUser, LoginWithPersonalAccessToken};
use latchkey_protocol::{ErrorCode, token};

use super::{Context, ReplyBody, Session, SessionToken};
use crate::auth::throttle::Attempt;
use crate::auth::users::{PASSWORD_BYTES_MAX, PASSWORD_BYTES_MIN, USERNAME_BYTES_MAX, USERNAME_BYTES_MIN};
use crate::clock::now_us;
use crate::registry::LastUsed;

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
    if !auth.throttle.allows(attempt) {
        tracing::warn!(target: "audit", event = "login_throttled", method = "password", %username, %peer);
        return Err(ErrorCode::TooManyFailedLogins);
    }
    let user = auth.users().by_name(&username).cloned();
    let verified = auth.passwords.verify(user.as_deref(), password).await;
    let user = match user {
        Some(user) if verified => user,
        _ => {
            auth.throttle.failed(attempt);
            tracing::warn!(target: "audit", event = "login_failed", method = "password", %username, %peer);
            return Err(ErrorCode::InvalidCredentials);
        }
    };
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

pub(super) fn login_with_token(
    login: LoginWithPersonalAccessToken,
    session: &mut Session,
    ctx: &Context,
) -> Result<ReplyBody, ErrorCode> {
    // A registry that may be missing a revocation checks no token.
    ctx.freshness.check()?;
    let peer = session.peer();
    let throttle = &ctx.auth.throttle;
    let attempt = Attempt::Token { address: peer.ip() };
    if !throttle.allows(attempt) {
        tracing::warn!(target: "audit", event = "login_throttled", method = "token", %peer);
        return Err(ErrorCode::TooManyFailedLogins);
    }
    let fail = |reason: &str, code: ErrorCode| {
        // Inactive owners hold real tokens: that is no guess.
        if code != ErrorCode::UserInactive {
            throttle.failed(attempt);
        }
        tracing::warn!(target: "audit", event = "login_failed", method = "token", reason, %peer);
        Err(code)
    };
    // A token that fails its checksum never gets as far as a hash or lookup.
    if token::validate(&login.token).is_err() {
        return fail("malformed", ErrorCode::ResourceNotFound);
    }
    let hash = ctx.auth.token_key.hash(&login.token);
    let now = now_us();
    let found = ctx.registry.read(|replica| {
        replica.by_hash(&hash).map(|token| {
            let status = (token.revoked_at_us.is_some(), token.is_expired(now), token.admits(peer.ip()));
            (token.id, token.user_id, token.name.clone(), token.extras.clone(), status)
        })
    });
    let Some((token_id, user_id, name, extras, (revoked, expired, admitted))) = found else {
        return fail("unknown", ErrorCode::ResourceNotFound);
    };
    let users = ctx.auth.users();
    let Some(owner) = users.by_id(user_id) else {
        return fail("owner_removed", ErrorCode::ResourceNotFound);
    };
    if revoked {
        return fail("revoked", ErrorCode::PersonalAccessTokenRevoked);
    }
    if expired {
        return fail("expired", ErrorCode::PersonalAccessTokenExpired);
    }
    if !owner.active {
        return fail("inactive", ErrorCode::UserInactive);
    }
    if !admitted {
        tracing::warn!(target: "audit", event = "login_denied_network", method = "token", user_id, token_id, token_name = %name, %peer);
        return fail("network", ErrorCode::AddressNotAllowed);
    }
    session.log_in(user_id, Some(SessionToken { id: token_id, hash, extras }));
    session.note_use(ctx, token_id, hash, LastUsed { at_us: now, peer });
    tracing::debug!(target: "audit", event = "login", method = "token", user_id, token_id, token_name = %name, %peer);
    Ok(ReplyBody::Identity(IdentityInfo { user_id }))
}
