//! What each served command does, given a decoded request and the session.
//!
//! A request arrives here from `net/` already decoded and past the login
//! check. [`at_once`] answers on the spot every request that waits for
//! nothing (the hot ones: token login, Authorize, the reads) and hands the
//! rest back as [`Waits`]; [`handle`] runs any request to its reply;
//! [`start`] does the same but returns a token create or delete as soon as
//! its change is queued with the writer, so a connection that pipelines them
//! gets one commit for the lot.
//! Reads (token login, lists, GetMe, Authorize) are answered from the
//! registry without a lock; changes go through the store's writer and are
//! answered only once durable and visible to every reader.
//!
//! Files: this one holds the [`Context`] commands run in, the [`Session`]
//! and the checks every command makes of it, and the routing; [`login`]
//! the two logins; [`write`] every command that changes tokens; [`check`]
//! the token checks for third parties (Authorize, forward auth,
//! introspection); [`read`] the rest. Audit events go to the `audit` tracing target: user, token name
//! and id, peer; never a secret.
//!
//! A session ends (40) once its user is inactive or gone, or once the token
//! it logged in with is revoked or rotated: credentials stopped on purpose do
//! not keep working through an open connection. So it does once the token's
//! scopes or networks are edited: the session holds the access the token had
//! at login, which is no longer what its owner means it to have. A token
//! that is deleted or expires leaves the session open, as in Iggy (whose
//! clients rely on it), with the token's scopes still in force. A token
//! session must hold the scope the command needs.

pub mod check;
mod login;
mod read;
mod write;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use latchkey_protocol::body::{
    ClientDetails, ClusterMetadata, CreatePersonalAccessToken, DeletePersonalAccessToken, IdentityInfo,
    LoginUser, LoginWithPersonalAccessToken, PersonalAccessTokens, RawPersonalAccessToken, WireEncode,
};
use latchkey_protocol::ext::{
    AuthorizeDecision, Count, CreateToken, DeleteToken, EditTokenAccess, IssuedToken, RevokeToken,
    RotateToken, TokenDetails, TokenPage, UpdateToken,
};
use latchkey_protocol::{ErrorCode, Request, scope};

use crate::auth::Auth;
use crate::auth::policy::TokenPolicy;
use crate::auth::users::{UsernameCopy, Users};
use crate::metrics::{self, LoginMethod, LoginResult};
use crate::registry::{
    LastUsed, Readers, Replica, TokenEntry, TokenExtras, TokenHash, UseLedger, Uses, merge_uses,
};
use crate::store::{Freshness, WriterHandle};

pub use read::list_tokens_expiring;
pub use write::PendingReply;

/// What commands run against: shared by every connection, read-only but
/// for the writer's queue and the use ledger.
pub struct Context {
    pub auth: Auth,
    pub registry: Readers,
    /// Token uses handed over by connections, until the store has them.
    pub uses: UseLedger,
    pub writer: WriterHandle,
    /// Whether the registry is current enough to check tokens against.
    pub freshness: Arc<Freshness>,
    /// The address clients reach this server on (cluster metadata).
    pub local_addr: SocketAddr,
}

/// A request begun by [`start`]: answered, or waiting for its commit.
pub enum Started {
    Done(Result<ReplyBody, ErrorCode>),
    Pending(PendingReply),
}

/// Runs a request that passed decoding and the login check.
pub async fn handle(request: Request, session: &mut Session, ctx: &Context) -> Result<ReplyBody, ErrorCode> {
    match at_once(request, session, ctx) {
        Ok(reply) => reply,
        Err(waits) => waits.reply(session, ctx).await,
    }
}

/// Runs a request like [`handle`], except that a token create or delete
/// (42, 43, 9100, 9106) returns once its change is queued. Those may be
/// begun ahead: their checks do not depend on an earlier create or delete's
/// outcome (the writer checks changes in order), and none can end the
/// session. `Request::may_start_ahead` says which; every other request must
/// wait for the replies before it.
pub async fn start(request: Request, session: &mut Session, ctx: &Context) -> Started {
    match at_once(request, session, ctx) {
        Ok(reply) => Started::Done(reply),
        Err(waits) => waits.start(session, ctx).await,
    }
}

/// Answers a request that waits for nothing (the reads, Authorize, Ping,
/// logout, and a token login the throttle lets through without a look), on
/// the spot: the hot commands build no async state. `Err`: the request may
/// wait, for Argon2, the writer or the throttle; [`Waits`] runs it.
pub fn at_once(
    request: Request,
    session: &mut Session,
    ctx: &Context,
) -> Result<Result<ReplyBody, ErrorCode>, Waits> {
    let reply = match request {
        Request::Ping => Ok(ReplyBody::Empty),
        Request::LoginWithPersonalAccessToken(login) => {
            match login::login_with_token_at_once(login, session, ctx) {
                Ok(reply) => {
                    metrics::login(LoginMethod::Token, LoginResult::of(&reply));
                    reply
                }
                Err(login) => return Err(Waits::TokenLogin(login)),
            }
        }
        Request::LogoutUser => {
            session.log_out();
            Ok(ReplyBody::Empty)
        }
        Request::GetMe => read::me(session, ctx),
        Request::GetClusterMetadata => {
            session.allowed(ctx, Need::Session).map(|_| ReplyBody::Cluster(read::cluster_metadata(ctx)))
        }
        Request::GetPersonalAccessTokens => read::iggy_tokens(session, ctx),
        Request::GetToken(get) => read::get_token(get, session, ctx),
        Request::ListTokens(list) => read::list_tokens(list, session, ctx),
        Request::Authorize(authorize) => check::authorize_token(authorize, session, ctx),
        Request::Unserved(_) => Err(ErrorCode::FeatureUnavailable),
        Request::LoginUser(login) => return Err(Waits::PasswordLogin(login)),
        Request::CreatePersonalAccessToken(create) => return Err(Waits::CreateIggyToken(create)),
        Request::CreateToken(create) => return Err(Waits::CreateToken(create)),
        Request::DeletePersonalAccessToken(delete) => return Err(Waits::DeleteIggyToken(delete)),
        Request::DeleteToken(delete) => return Err(Waits::DeleteToken(delete)),
        Request::UpdateToken(update) => return Err(Waits::UpdateToken(update)),
        Request::RevokeToken(revoke) => return Err(Waits::RevokeToken(revoke)),
        Request::RotateToken(rotate) => return Err(Waits::RotateToken(rotate)),
        Request::EditTokenAccess(edit) => return Err(Waits::EditTokenAccess(edit)),
        Request::RevokeAllTokens => return Err(Waits::RevokeAllTokens),
        Request::DeleteAllTokens => return Err(Waits::DeleteAllTokens),
    };
    Ok(reply)
}

/// A request [`at_once`] could not answer: it waits for Argon2 (a password
/// login), for the writer (every change), or for the failed-login throttle
/// (a token login from a client with failures on record).
pub enum Waits {
    PasswordLogin(LoginUser),
    TokenLogin(LoginWithPersonalAccessToken),
    CreateIggyToken(CreatePersonalAccessToken),
    CreateToken(CreateToken),
    DeleteIggyToken(DeletePersonalAccessToken),
    DeleteToken(DeleteToken),
    UpdateToken(UpdateToken),
    RevokeToken(RevokeToken),
    RotateToken(RotateToken),
    EditTokenAccess(EditTokenAccess),
    RevokeAllTokens,
    DeleteAllTokens,
}

impl Waits {
    /// Runs the request to its reply.
    pub async fn reply(self, session: &mut Session, ctx: &Context) -> Result<ReplyBody, ErrorCode> {
        match self.start(session, ctx).await {
            Started::Done(reply) => reply,
            Started::Pending(pending) => pending.reply().await,
        }
    }

    /// Runs the request as [`start`] does: a create or delete returns once
    /// its change is queued.
    async fn start(self, session: &mut Session, ctx: &Context) -> Started {
        let reply = match self {
            Waits::CreateIggyToken(create) => {
                return begun(write::create_iggy_token(create, session, ctx).await);
            }
            Waits::CreateToken(create) => return begun(write::create_token(create, session, ctx).await),
            Waits::DeleteIggyToken(delete) => {
                return begun(write::delete_iggy_token(delete, session, ctx).await);
            }
            Waits::DeleteToken(delete) => return begun(write::delete_token(delete, session, ctx).await),
            Waits::PasswordLogin(login) => {
                let reply = login::login_user(login, session, ctx).await;
                metrics::login(LoginMethod::Password, LoginResult::of(&reply));
                reply
            }
            Waits::TokenLogin(login) => {
                let reply = login::login_with_token(login, session, ctx).await;
                metrics::login(LoginMethod::Token, LoginResult::of(&reply));
                reply
            }
            Waits::UpdateToken(update) => write::update_token(update, session, ctx).await,
            Waits::RevokeToken(revoke) => write::revoke_token(revoke, session, ctx).await,
            Waits::RotateToken(rotate) => write::rotate_token(rotate, session, ctx).await,
            Waits::EditTokenAccess(edit) => write::edit_token_access(edit, session, ctx).await,
            Waits::RevokeAllTokens => write::revoke_all(session, ctx).await,
            Waits::DeleteAllTokens => write::delete_all(session, ctx).await,
        };
        Started::Done(reply)
    }
}

fn begun(queued: Result<PendingReply, ErrorCode>) -> Started {
    match queued {
        Ok(pending) => Started::Pending(pending),
        Err(code) => Started::Done(Err(code)),
    }
}

/// Every reply body a served command can produce. The one large body, a
/// token's details, is boxed: every reply moves through a few returns on its
/// way to the wire, and a token login's or Authorize's should not move the
/// size of the largest (four `memcpy` calls per token login before).
pub enum ReplyBody {
    Empty,
    Identity(IdentityInfo),
    Token(RawPersonalAccessToken),
    Tokens(PersonalAccessTokens),
    Me(ClientDetails),
    Cluster(ClusterMetadata),
    Issued(IssuedToken),
    Details(Box<TokenDetails>),
    Page(TokenPage),
    Count(Count),
    Decision(AuthorizeDecision<UsernameCopy>),
}

impl ReplyBody {
    fn inner(&self) -> Option<&dyn WireEncode> {
        match self {
            ReplyBody::Empty => None,
            ReplyBody::Identity(body) => Some(body),
            ReplyBody::Token(body) => Some(body),
            ReplyBody::Tokens(body) => Some(body),
            ReplyBody::Me(body) => Some(body),
            ReplyBody::Cluster(body) => Some(body),
            ReplyBody::Issued(body) => Some(body),
            ReplyBody::Details(body) => Some(body.as_ref()),
            ReplyBody::Page(body) => Some(body),
            ReplyBody::Count(body) => Some(body),
            ReplyBody::Decision(body) => Some(body),
        }
    }
}

impl WireEncode for ReplyBody {
    fn encoded_size(&self) -> usize {
        self.inner().map_or(0, WireEncode::encoded_size)
    }
    fn encode(&self, dst: &mut BytesMut) {
        if let Some(body) = self.inner() {
            body.encode(dst);
        }
    }
}

/// How often a busy connection hands its token uses over (a connection's
/// first use goes at once). What lists and GetToken report as a token's last
/// use is never more than this behind the real one.
pub const USES_HAND_OVER_INTERVAL_US: u64 = 1_000_000;

/// Per-connection login state.
#[derive(Debug)]
pub struct Session {
    client_id: u32,
    peer: SocketAddr,
    user_id: Option<u32>,
    /// Set when the session logged in with a token: which one, so every
    /// later command can check it still stands and what its scopes allow.
    token: Option<SessionToken>,
    /// Token uses (logins, allowed Authorize calls) not yet handed over:
    /// kept here so a busy connection shares nothing per request.
    uses: Uses,
    uses_handed_at_us: u64,
}

#[derive(Debug)]
struct SessionToken {
    pub id: u64,
    pub hash: TokenHash,
    /// The token's scopes and networks at login; still in force if the
    /// token is deleted during the session.
    pub extras: Option<Arc<TokenExtras>>,
}

impl SessionToken {
    fn scopes(&self) -> &[Box<str>] {
        self.extras.as_deref().map_or(&[], |extras| &extras.scopes)
    }

    fn networks(&self) -> &[ipnet::IpNet] {
        self.extras.as_deref().map_or(&[], |extras| &extras.networks)
    }

    /// Whether the token now has other scopes or networks than at login
    /// (`entry` is the same token, found by its hash).
    fn access_changed(&self, entry: &TokenEntry) -> bool {
        match (&self.extras, &entry.extras) {
            (Some(at_login), Some(now)) if Arc::ptr_eq(at_login, now) => false,
            _ => self.scopes() != entry.scopes() || self.networks() != entry.networks(),
        }
    }
}

/// What a command needs from a session that logged in with a token.
#[derive(Clone, Copy)]
enum Need<'p> {
    /// Only a session that still stands.
    Session,
    /// A built-in scope.
    Scope(&'static str),
    /// `tokens:write`, and the policy must let token sessions manage tokens:
    /// the policy the request loaded once for all its checks.
    Manage(&'p TokenPolicy),
}

impl Session {
    pub fn new(client_id: u32, peer: SocketAddr) -> Session {
        Session { client_id, peer, user_id: None, token: None, uses: Uses::default(), uses_handed_at_us: 0 }
    }

    pub fn is_logged_in(&self) -> bool {
        self.user_id.is_some()
    }

    /// The client's address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The connection's (or HTTP request's) id, unique in this process.
    pub fn client_id(&self) -> u32 {
        self.client_id
    }

    /// Starts a login as `user_id`, with the token it used if any.
    fn log_in(&mut self, user_id: u32, token: Option<SessionToken>) {
        self.user_id = Some(user_id);
        self.token = token;
    }

    /// Ends the login (the connection stays open), as Logout does.
    pub fn log_out(&mut self) {
        self.user_id = None;
        self.token = None;
    }

    /// Records a use of a token, handing this connection's uses over when
    /// the last hand-over is [`USES_HAND_OVER_INTERVAL_US`] old.
    fn note_use(&mut self, ctx: &Context, id: u64, hash: TokenHash, used: LastUsed) {
        merge_uses(&mut self.uses, [(id, (hash, used))]);
        if used.at_us >= self.uses_handed_at_us.saturating_add(USES_HAND_OVER_INTERVAL_US) {
            self.uses_handed_at_us = used.at_us;
            ctx.uses.hand_over(self.uses.drain());
        }
    }

    /// A token's last use as this connection sees it: its own uses not yet
    /// handed over included, so a connection never sees its own use missing.
    fn last_used(&self, ctx: &Context, replica: &Replica, id: u64) -> Option<LastUsed> {
        let own = self.uses.get(&id).map(|(_, used)| *used);
        LastUsed::later(own, ctx.uses.last_used(replica, id))
    }

    /// [`Session::last_used`] for each of `ids`, in their order, with one
    /// look at the use ledger for all of them.
    fn last_used_of(&self, ctx: &Context, replica: &Replica, ids: &[u64]) -> Vec<Option<LastUsed>> {
        let mut last_used = ctx.uses.last_used_of(replica, ids);
        for (id, used) in ids.iter().zip(&mut last_used) {
            let own = self.uses.get(id).map(|(_, used)| *used);
            *used = LastUsed::later(own, *used);
        }
        last_used
    }

    /// Whether the token this session logged in with is still active now:
    /// not revoked, rotated, deleted or expired (true for a password
    /// session). Stricter than the rules at the top of this file, for
    /// sessions that outlive a connection (the web console's), which must
    /// not keep a stopped token working for hours.
    pub fn token_is_active(&self, ctx: &Context, now_us: u64) -> bool {
        let Some(token) = &self.token else { return true };
        ctx.registry.read(|replica| {
            replica.by_hash(&token.hash).is_some_and(|entry| {
                entry.id == token.id && entry.status(now_us) == latchkey_protocol::ext::TokenStatus::Active
            })
        })
    }

    /// Uses not yet handed over (at connection close).
    pub fn take_uses(&mut self) -> Uses {
        std::mem::take(&mut self.uses)
    }

    /// The session's user id, if the session still stands and may do `need`
    /// (the rules at the top of this file).
    fn allowed(&mut self, ctx: &Context, need: Need<'_>) -> Result<u32, ErrorCode> {
        self.allowed_among(&ctx.auth.users(), ctx, need)
    }

    /// [`Session::allowed`] against a users table the caller has loaded
    /// already (and goes on to use).
    fn allowed_among(&mut self, users: &Users, ctx: &Context, need: Need<'_>) -> Result<u32, ErrorCode> {
        let user_id = self.user_id.ok_or(ErrorCode::Unauthenticated)?;
        if !users.by_id(user_id).is_some_and(|user| user.active) {
            tracing::info!(target: "audit", event = "session_ended", reason = "user_inactive", user_id, peer = %self.peer);
            self.log_out();
            return Err(ErrorCode::Unauthenticated);
        }
        let Some(token) = &self.token else { return Ok(user_id) };
        let ended = ctx.registry.read(|replica| match replica.by_hash(&token.hash) {
            Some(entry) if entry.id == token.id && entry.revoked_at_us.is_some() => {
                Some("token_revoked_or_rotated")
            }
            Some(entry) if entry.id == token.id => {
                token.access_changed(entry).then_some("token_access_changed")
            }
            // Gone under this hash: rotated if the id is still there, else deleted.
            _ => replica.by_user_and_id(user_id, token.id).is_some().then_some("token_revoked_or_rotated"),
        });
        if let Some(reason) = ended {
            tracing::info!(target: "audit", event = "session_ended", reason, user_id, token_id = token.id, peer = %self.peer);
            self.log_out();
            return Err(ErrorCode::Unauthenticated);
        }
        let (needed, policy) = match need {
            Need::Session => return Ok(user_id),
            Need::Scope(needed) => (needed, None),
            Need::Manage(policy) => (scope::TOKENS_WRITE, Some(policy)),
        };
        if !scope::allows(token.scopes(), needed) {
            return Err(ErrorCode::InsufficientScope);
        }
        if policy.is_some_and(|policy| !policy.token_sessions_manage_tokens) {
            return Err(ErrorCode::TokenManagementNotAllowed);
        }
        Ok(user_id)
    }

    /// Whether this session may leave a token with full access (no scopes):
    /// a password session, or one whose own token has full access.
    fn may_grant_full_access(&self) -> bool {
        self.token.as_ref().is_none_or(|token| token.scopes().is_empty())
    }

    /// A token session may add to a token only scopes its own cover, as it
    /// may create only such tokens.
    fn may_add(&self, scopes: &[Box<str>]) -> Result<(), ErrorCode> {
        let Some(token) = &self.token else { return Ok(()) };
        let own = token.scopes();
        if scopes.iter().all(|wanted| scope::allows(own, wanted)) {
            Ok(())
        } else {
            Err(ErrorCode::InsufficientScope)
        }
    }

    /// A token session may only mint tokens it could itself stand in for:
    /// every scope asked for must be covered by the session token's scopes
    /// (a full access token needs a full access session).
    fn may_grant(&self, scopes: &[Box<str>]) -> Result<(), ErrorCode> {
        let Some(token) = &self.token else { return Ok(()) };
        let own = token.scopes();
        let covered =
            own.is_empty() || (!scopes.is_empty() && scopes.iter().all(|wanted| scope::allows(own, wanted)));
        if covered { Ok(()) } else { Err(ErrorCode::InsufficientScope) }
    }
}

#[cfg(test)]
mod tests;
