//! The commands that change tokens: create (42, 9100), delete (43, 9106),
//! update, revoke, rotate, revoke-all and delete-all.
//!
//! Each checks the session's rights first, then its body, then queues one
//! [`Change`] with the store's writer and answers once it is committed (or
//! refused). Each loads the token policy once and makes every check of the
//! request against that one copy: a SIGHUP reload in between must not pair
//! an old rule with a new one. Creates and deletes hand back a [`PendingReply`] so a
//! pipelining connection can queue the next before this one commits. A raw
//! token exists only in the reply that carries it and is wiped when that is
//! dropped.

use std::sync::Arc;

use latchkey_protocol::body::{CreatePersonalAccessToken, DeletePersonalAccessToken, RawPersonalAccessToken};
use latchkey_protocol::ext::{
    Count, CreateToken, DeleteToken, IssuedToken, RevokeToken, RotateToken, TokenSelector, UpdateToken,
};
use latchkey_protocol::{ErrorCode, Secret, scope, token};
use rand::TryRngCore;
use zeroize::Zeroize;

use super::{Context, Need, ReplyBody, Session};
use crate::auth::policy::{
    DESCRIPTION_BYTES_MAX, TOKEN_NETWORKS_MAX, TOKEN_SCOPES_MAX, TokenPolicy, parse_network,
};
use crate::registry::{TokenExtras, TokenHash};
use crate::store::{Change, NewToken, Origin, Outcome, Ticket};

/// Token name bounds in bytes (Iggy legacy: 3–30, code 50 outside).
pub const TOKEN_NAME_BYTES_MIN: usize = 3;
pub const TOKEN_NAME_BYTES_MAX: usize = 30;

/// A fresh random token and its keyed hash.
fn mint(ctx: &Context) -> Result<(Secret, TokenHash), ErrorCode> {
    let mut secret = [0u8; token::SECRET_BYTES];
    if let Err(error) = rand::rngs::OsRng.try_fill_bytes(&mut secret) {
        tracing::error!(%error, "OS random source failed; cannot mint a token");
        return Err(ErrorCode::Error);
    }
    let raw = Secret::new(token::encode(&secret));
    secret.zeroize();
    let hash = ctx.auth.token_key.hash(&raw);
    Ok((raw, hash))
}

fn check_name(name: &str) -> Result<(), ErrorCode> {
    if (TOKEN_NAME_BYTES_MIN..=TOKEN_NAME_BYTES_MAX).contains(&name.len()) {
        Ok(())
    } else {
        Err(ErrorCode::InvalidPersonalAccessTokenName)
    }
}

fn check_description(description: &str) -> Result<(), ErrorCode> {
    if description.len() <= DESCRIPTION_BYTES_MAX { Ok(()) } else { Err(ErrorCode::InvalidDescription) }
}

/// Iggy's code 42: a full access token, unless the policy or the session's
/// own scopes forbid it. Replies with the raw token only.
pub(super) async fn create_iggy_token(
    create: CreatePersonalAccessToken,
    session: &mut Session,
    ctx: &Context,
) -> Result<PendingReply, ErrorCode> {
    let policy = ctx.auth.policy();
    let user_id = session.allowed(ctx, Need::Manage(&policy))?;
    let CreatePersonalAccessToken { name, expiry_us } = create;
    let request = CreateToken { name, expiry_us, ..CreateToken::default() };
    let raw_token = |issued: IssuedToken| ReplyBody::Token(RawPersonalAccessToken { token: issued.token });
    start_create(user_id, &policy, request, None, raw_token, session, ctx).await
}

/// Code 9100.
pub(super) async fn create_token(
    create: CreateToken,
    session: &mut Session,
    ctx: &Context,
) -> Result<PendingReply, ErrorCode> {
    // The session and its rights first, as for every command; then the body.
    let policy = ctx.auth.policy();
    let user_id = session.allowed(ctx, Need::Manage(&policy))?;
    check_description(&create.description)?;
    if create.scopes.len() > TOKEN_SCOPES_MAX {
        return Err(ErrorCode::InvalidScope);
    }
    let mut scopes: Vec<Box<str>> = Vec::with_capacity(create.scopes.len());
    for wanted in &create.scopes {
        scope::validate_granted(wanted).map_err(|_| ErrorCode::InvalidScope)?;
        if !scopes.iter().any(|have| **have == **wanted) {
            scopes.push(wanted.as_str().into());
        }
    }
    if create.networks.len() > TOKEN_NETWORKS_MAX {
        return Err(ErrorCode::InvalidNetwork);
    }
    let mut networks = Vec::with_capacity(create.networks.len());
    for text in &create.networks {
        let network = parse_network(text)?;
        if !networks.contains(&network) {
            networks.push(network);
        }
    }
    let extras = TokenExtras {
        description: create.description.as_str().into(),
        scopes: scopes.into(),
        networks: networks.into(),
    }
    .shared();
    start_create(user_id, &policy, create, extras, ReplyBody::Issued, session, ctx).await
}

/// Checks the rest of a create for `user_id`, whose session may manage
/// tokens under `policy`, mints the token and queues the change; the
/// returned reply waits for the commit.
async fn start_create(
    user_id: u32,
    policy: &TokenPolicy,
    create: CreateToken,
    extras: Option<Arc<TokenExtras>>,
    wrap: fn(IssuedToken) -> ReplyBody,
    session: &mut Session,
    ctx: &Context,
) -> Result<PendingReply, ErrorCode> {
    check_name(&create.name)?;
    let scopes = extras.as_deref().map_or(&[][..], |extras| &extras.scopes[..]);
    session.may_grant(scopes)?;
    let lifetime_us = policy.create_lifetime(create.expiry_us)?;
    let (raw, hash) = mint(ctx)?;
    let name = create.name;
    let change =
        Change::Create(NewToken { user_id, name: name.clone(), hash, expiry_us: lifetime_us, extras });
    let peer = session.peer();
    let ticket = ctx.writer.enqueue(change, Origin::Client(session.client_id())).await?;
    let finish = move |outcome: Result<Outcome, ErrorCode>| match outcome {
        Ok(Outcome::Created(record)) => {
            tracing::info!(target: "audit", event = "token_created", user_id, token_id = record.id, token_name = %name, expiry_at_us = record.expiry_at_us.map_or(0, |at| at.get()), %peer);
            Ok(wrap(IssuedToken {
                id: record.id,
                token: raw,
                created_at_us: record.created_at_us,
                expires_at_us: record.expiry_at_us.map_or(0, |at| at.get()),
            }))
        }
        Ok(other) => unreachable!("create answered with {other:?}"),
        Err(code) => {
            tracing::info!(target: "audit", event = "token_create_refused", user_id, token_name = %name, code = code.code(), %peer);
            Err(code)
        }
    };
    Ok(PendingReply { ticket, finish: Box::new(finish) })
}

/// A reply that waits for the log writer: the change is queued, its
/// outcome not yet known.
pub struct PendingReply {
    ticket: Ticket,
    finish: Box<FinishReply>,
}

/// Turns a change's outcome into the reply (and its audit event).
type FinishReply = dyn FnOnce(Result<Outcome, ErrorCode>) -> Result<ReplyBody, ErrorCode> + Send;

impl PendingReply {
    /// Waits for the commit (or refusal) and builds the reply.
    pub async fn reply(self) -> Result<ReplyBody, ErrorCode> {
        let outcome = self.ticket.outcome().await;
        (self.finish)(outcome)
    }
}

/// Iggy's code 43: delete by name.
pub(super) async fn delete_iggy_token(
    delete: DeletePersonalAccessToken,
    session: &mut Session,
    ctx: &Context,
) -> Result<PendingReply, ErrorCode> {
    let user_id = may_manage(session, ctx)?;
    let change = Change::Delete { user_id, token: TokenSelector::Name(delete.name) };
    start_change(user_id, change, "token_deleted", session, ctx).await
}

/// Code 9106: delete by id or name.
pub(super) async fn delete_token(
    delete: DeleteToken,
    session: &mut Session,
    ctx: &Context,
) -> Result<PendingReply, ErrorCode> {
    let user_id = may_manage(session, ctx)?;
    start_change(user_id, Change::Delete { user_id, token: delete.token }, "token_deleted", session, ctx)
        .await
}

/// Code 9104.
pub(super) async fn revoke_token(
    revoke: RevokeToken,
    session: &mut Session,
    ctx: &Context,
) -> Result<ReplyBody, ErrorCode> {
    let user_id = may_manage(session, ctx)?;
    change_token(user_id, Change::Revoke { user_id, token: revoke.token }, "token_revoked", session, ctx)
        .await
}

/// Code 9107: revokes every active token of the caller.
pub(super) async fn revoke_all(session: &mut Session, ctx: &Context) -> Result<ReplyBody, ErrorCode> {
    let user_id = may_manage(session, ctx)?;
    change_token(user_id, Change::RevokeAll { user_id }, "tokens_revoked_all", session, ctx).await
}

/// Code 9108: deletes every token of the caller.
pub(super) async fn delete_all(session: &mut Session, ctx: &Context) -> Result<ReplyBody, ErrorCode> {
    let user_id = may_manage(session, ctx)?;
    change_token(user_id, Change::DeleteAll { user_id }, "tokens_deleted_all", session, ctx).await
}

/// The caller's user id if its session may manage tokens, for a command
/// that needs the policy for nothing else.
fn may_manage(session: &mut Session, ctx: &Context) -> Result<u32, ErrorCode> {
    session.allowed(ctx, Need::Manage(&ctx.auth.policy()))
}

/// Submits a change to one or all of `user_id`'s tokens (its session
/// checked by the caller). Replies with a count for the all-token changes,
/// empty otherwise.
async fn change_token(
    user_id: u32,
    change: Change,
    event: &'static str,
    session: &Session,
    ctx: &Context,
) -> Result<ReplyBody, ErrorCode> {
    start_change(user_id, change, event, session, ctx).await?.reply().await
}

/// Queues a change to `user_id`'s tokens (its session checked by the
/// caller); the returned reply waits for the commit.
async fn start_change(
    user_id: u32,
    change: Change,
    event: &'static str,
    session: &Session,
    ctx: &Context,
) -> Result<PendingReply, ErrorCode> {
    let peer = session.peer();
    let ticket = ctx.writer.enqueue(change, Origin::Client(session.client_id())).await?;
    let finish = move |outcome: Result<Outcome, ErrorCode>| match outcome {
        Ok(Outcome::Deleted { id } | Outcome::Revoked { id } | Outcome::Updated { id }) => {
            tracing::info!(target: "audit", event, user_id, token_id = id, %peer);
            Ok(ReplyBody::Empty)
        }
        Ok(Outcome::Count(count)) => {
            tracing::info!(target: "audit", event, user_id, count, %peer);
            Ok(ReplyBody::Count(Count { count }))
        }
        Ok(other) => unreachable!("token change answered with {other:?}"),
        Err(code) => Err(code),
    };
    Ok(PendingReply { ticket, finish: Box::new(finish) })
}

/// Code 9103.
pub(super) async fn update_token(
    update: UpdateToken,
    session: &mut Session,
    ctx: &Context,
) -> Result<ReplyBody, ErrorCode> {
    let user_id = may_manage(session, ctx)?;
    if let Some(name) = &update.name {
        check_name(name)?;
    }
    if let Some(description) = &update.description {
        check_description(description)?;
    }
    let UpdateToken { token, name, description } = update;
    change_token(user_id, Change::Update { user_id, token, name, description }, "token_updated", session, ctx)
        .await
}

/// Code 9105.
pub(super) async fn rotate_token(
    rotate: RotateToken,
    session: &mut Session,
    ctx: &Context,
) -> Result<ReplyBody, ErrorCode> {
    // One load for the session check and the lifetime alike.
    let policy = ctx.auth.policy();
    let user_id = session.allowed(ctx, Need::Manage(&policy))?;
    let expiry_us = policy.rotate_lifetime(rotate.expiry_us)?;
    let (raw, new_hash) = mint(ctx)?;
    let max_lifetime_us = policy.max_lifetime_us;
    let change = Change::Rotate { user_id, token: rotate.token, new_hash, expiry_us, max_lifetime_us };
    let peer = session.peer();
    match ctx.writer.submit(change).await {
        Ok(Outcome::Rotated(record)) => {
            tracing::info!(target: "audit", event = "token_rotated", user_id, token_id = record.id, token_name = %record.name, %peer);
            Ok(ReplyBody::Issued(IssuedToken {
                id: record.id,
                token: raw,
                created_at_us: record.created_at_us,
                expires_at_us: record.expiry_at_us.map_or(0, |at| at.get()),
            }))
        }
        Ok(other) => unreachable!("rotate answered with {other:?}"),
        Err(code) => Err(code),
    }
}
