//! The commands that change tokens: create (42, 9100), delete (43, 9106),
//! update, revoke, rotate (and reactivate), revoke-all, delete-all and the
//! access edit.
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
    AccessEdit, Count, CreateToken, DeleteToken, EditTokenAccess, IssuedToken, RevokeToken, RotateToken,
    TokenSelector, TokenStatus, UpdateToken,
};
use latchkey_protocol::{ErrorCode, Secret, scope, token};
use rand::TryRngCore;
use zeroize::Zeroize;

use super::{Context, Need, ReplyBody, Session};
use crate::auth::policy::{
    DESCRIPTION_BYTES_MAX, TOKEN_NETWORKS_MAX, TOKEN_SCOPES_MAX, TokenPolicy, parse_network,
};
use crate::registry::{TokenExtras, TokenHash};
use crate::store::{AccessChange, Change, NewToken, Origin, Outcome, Ticket};

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

/// Code 9105. With the reactivate flag a revoked token may be rotated too,
/// which brings it back; an expired one needs a new lifetime either way.
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
    let RotateToken { token, reactivate, .. } = rotate;
    let change = Change::Rotate { user_id, token, new_hash, expiry_us, max_lifetime_us, reactivate };
    let peer = session.peer();
    match ctx.writer.submit(change).await {
        Ok(Outcome::Rotated { record, was }) => {
            let expiry_at_us = record.expiry_at_us.map_or(0, |at| at.get());
            if was == TokenStatus::Active {
                tracing::info!(target: "audit", event = "token_rotated", user_id, token_id = record.id, token_name = %record.name, %peer);
            } else {
                tracing::info!(target: "audit", event = "token_reactivated", user_id, token_id = record.id, token_name = %record.name, was = was.as_str(), expiry_at_us, %peer);
            }
            Ok(ReplyBody::Issued(IssuedToken {
                id: record.id,
                token: raw,
                created_at_us: record.created_at_us,
                expires_at_us: expiry_at_us,
            }))
        }
        Ok(other) => unreachable!("rotate answered with {other:?}"),
        Err(code) => Err(code),
    }
}

/// Code 9109: each item checked as create checks it, in the order given
/// (a malformed scope is 20007, a malformed network 20008), and a token
/// session may add only scopes its own cover; the rest (the token, the
/// bounds of the result, full access) is the writer's.
pub(super) async fn edit_token_access(
    edit: EditTokenAccess,
    session: &mut Session,
    ctx: &Context,
) -> Result<ReplyBody, ErrorCode> {
    let user_id = may_manage(session, ctx)?;
    let scope_of = |text: String| -> Result<Box<str>, ErrorCode> {
        scope::validate_granted(&text).map_err(|_| ErrorCode::InvalidScope)?;
        Ok(text.into())
    };
    let mut edits = Vec::with_capacity(edit.edits.len());
    let mut added = Vec::new();
    for item in edit.edits {
        edits.push(match item {
            AccessEdit::AddScope(text) => {
                let scope = scope_of(text)?;
                added.push(scope.clone());
                AccessChange::AddScope(scope)
            }
            AccessEdit::RemoveScope(text) => AccessChange::RemoveScope(scope_of(text)?),
            AccessEdit::ClearScopes => AccessChange::ClearScopes,
            AccessEdit::AddNetwork(text) => AccessChange::AddNetwork(parse_network(&text)?),
            AccessEdit::RemoveNetwork(text) => AccessChange::RemoveNetwork(parse_network(&text)?),
            AccessEdit::ClearNetworks => AccessChange::ClearNetworks,
        });
    }
    session.may_add(&added)?;
    let may_grant_full_access = session.may_grant_full_access();
    let change = Change::EditAccess { user_id, token: edit.token, edits, may_grant_full_access };
    let peer = session.peer();
    match ctx.writer.submit(change).await {
        Ok(Outcome::AccessEdited { id, extras, changed }) => {
            if changed {
                let extras = extras.as_deref().cloned().unwrap_or_default();
                let scopes = extras.scopes.join(",");
                let networks = extras.networks.iter().map(ToString::to_string).collect::<Vec<_>>().join(",");
                tracing::info!(target: "audit", event = "token_access_changed", user_id, token_id = id, %scopes, %networks, %peer);
            }
            Ok(ReplyBody::Empty)
        }
        Ok(other) => unreachable!("access edit answered with {other:?}"),
        Err(code) => Err(code),
    }
}
