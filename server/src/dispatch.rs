//! What each served command does, given a decoded request and the session.
//!
//! Reads (token login, list, GetMe, Authorize) are answered from the
//! registry without a lock. Changes go through the writer and are answered
//! only once they are durable and visible to every reader. Audit events go to the `audit`
//! tracing target: user, token name and id, peer; never a secret.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use latchkey_protocol::body::{
    ClientDetails, ClusterMetadata, ClusterNode, CreatePersonalAccessToken, IdentityInfo, LoginUser,
    LoginWithPersonalAccessToken, NODE_ROLE_LEADER, NODE_STATUS_HEALTHY, PersonalAccessTokenInfo,
    PersonalAccessTokens, RawPersonalAccessToken, TRANSPORT_TCP, WireEncode,
};
use latchkey_protocol::ext::{
    Authorize, AuthorizeDecision, Count, CreateToken, Decision, IssuedToken, ListTokens, RotateToken,
    TokenDetails, TokenPage, TokenSelector, UpdateToken,
};
use latchkey_protocol::{ErrorCode, Request, Secret, scope, token};
use rand::TryRngCore;
use zeroize::Zeroize;

use crate::clock::now_us;
use crate::node::{Node, Uses, merge_uses};
use crate::policy::{
    DESCRIPTION_BYTES_MAX, LIST_PAGE_TOKENS_MAX, TOKEN_NETWORKS_MAX, TOKEN_SCOPES_MAX, parse_network,
};
use crate::registry::{LastUsed, Replica, TokenEntry, TokenExtras, TokenHash};
use crate::throttle::Attempt;
use crate::users::{PASSWORD_BYTES_MAX, PASSWORD_BYTES_MIN, USERNAME_BYTES_MAX, USERNAME_BYTES_MIN};
use crate::writer::{Change, Outcome, Ticket};

/// Token name bounds in bytes (Iggy legacy: 3–30, code 50 outside).
pub const TOKEN_NAME_BYTES_MIN: usize = 3;
pub const TOKEN_NAME_BYTES_MAX: usize = 30;

/// Per-connection login state.
#[derive(Debug)]
pub struct Session {
    client_id: u32,
    peer: SocketAddr,
    user_id: Option<u32>,
    /// Set when the session logged in with a token: which one, so every
    /// later command can check it still stands and what its scopes allow.
    token: Option<SessionToken>,
    /// Token uses (logins, allowed Authorize calls) not yet handed to the
    /// node: kept here so a busy connection shares nothing per request.
    uses: Uses,
    uses_handed_at_us: u64,
}

/// How often a busy connection hands its token uses over to the node (a
/// connection's first use goes at once). What lists and GetToken report as
/// a token's last use is never more than this behind the real one.
pub const USES_HAND_OVER_INTERVAL_US: u64 = 1_000_000;

#[derive(Debug)]
struct SessionToken {
    id: u64,
    hash: TokenHash,
    /// The token's scopes and networks at login; still in force if the
    /// token is deleted during the session.
    extras: Option<Arc<TokenExtras>>,
}

impl SessionToken {
    fn scopes(&self) -> &[Box<str>] {
        self.extras.as_deref().map_or(&[], |extras| &extras.scopes)
    }
}

impl Session {
    pub fn new(client_id: u32, peer: SocketAddr) -> Session {
        Session { client_id, peer, user_id: None, token: None, uses: Uses::new(), uses_handed_at_us: 0 }
    }

    pub fn is_logged_in(&self) -> bool {
        self.user_id.is_some()
    }

    /// The client's address, for logs.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// Records a use of a token, handing this connection's uses over to the
    /// node when the last hand-over is [`USES_HAND_OVER_INTERVAL_US`] old.
    fn note_use(&mut self, node: &Node, id: u64, hash: TokenHash, used: LastUsed) {
        merge_uses(&mut self.uses, [(id, (hash, used))]);
        if used.at_us >= self.uses_handed_at_us.saturating_add(USES_HAND_OVER_INTERVAL_US) {
            self.uses_handed_at_us = used.at_us;
            node.hand_over_uses(self.uses.drain());
        }
    }

    /// A token's last use as this connection sees it: its own uses not yet
    /// handed over included, so a connection never sees its own use missing.
    fn last_used(&self, node: &Node, replica: &Replica, id: u64) -> Option<LastUsed> {
        let own = self.uses.get(&id).map(|(_, used)| *used);
        LastUsed::later(own, node.last_used(replica, id))
    }

    /// Uses not yet handed over (at connection close).
    pub fn take_uses(&mut self) -> Uses {
        std::mem::take(&mut self.uses)
    }

    /// Ends the login (the connection stays open), as Logout does.
    pub fn log_out(&mut self) {
        self.user_id = None;
        self.token = None;
    }
}

/// Every reply body a served command can produce.
pub enum ReplyBody {
    Empty,
    Identity(IdentityInfo),
    Token(RawPersonalAccessToken),
    Tokens(PersonalAccessTokens),
    Me(ClientDetails),
    Cluster(ClusterMetadata),
    Issued(IssuedToken),
    Details(TokenDetails),
    Page(TokenPage),
    Count(Count),
    Decision(AuthorizeDecision),
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
            ReplyBody::Details(body) => Some(body),
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

/// What a command needs from a session that logged in with a token.
#[derive(Clone, Copy)]
enum Need {
    /// Only a session that still stands.
    Session,
    /// A built-in scope.
    Scope(&'static str),
    /// `tokens:write`, and the policy must let token sessions manage tokens.
    Manage,
}

/// Runs a request that passed decoding and the login check.
pub async fn handle(request: Request, session: &mut Session, node: &Node) -> Result<ReplyBody, ErrorCode> {
    match request {
        Request::Ping => Ok(ReplyBody::Empty),
        Request::LoginUser(login) => login_user(login, session, node).await,
        Request::LoginWithPersonalAccessToken(login) => login_with_token(login, session, node),
        Request::LogoutUser => {
            session.log_out();
            Ok(ReplyBody::Empty)
        }
        Request::GetMe => Ok(ReplyBody::Me(ClientDetails {
            client_id: session.client_id,
            user_id: allowed(session, node, Need::Scope(scope::ME_READ))?,
            transport: TRANSPORT_TCP,
            address: session.peer.to_string(),
            consumer_groups: Vec::new(),
        })),
        Request::GetClusterMetadata => {
            allowed(session, node, Need::Session)?;
            Ok(ReplyBody::Cluster(cluster_metadata(node)))
        }
        Request::GetPersonalAccessTokens => {
            let user_id = allowed(session, node, Need::Scope(scope::TOKENS_READ))?;
            let entries = node.read(|replica| {
                replica
                    .list_for(user_id)
                    .map(|token| PersonalAccessTokenInfo {
                        name: token.name.to_string(),
                        expiry_at_us: token.expiry_at_us.map(|at| at.get()),
                    })
                    .collect()
            });
            Ok(ReplyBody::Tokens(PersonalAccessTokens(entries)))
        }
        request @ (Request::CreatePersonalAccessToken(_)
        | Request::CreateToken(_)
        | Request::DeletePersonalAccessToken(_)
        | Request::DeleteToken(_)) => begin_write(request, session, node).await?.reply().await,
        Request::Unserved(_) => Err(ErrorCode::FeatureUnavailable),
        Request::GetToken(get) => {
            let user_id = allowed(session, node, Need::Scope(scope::TOKENS_READ))?;
            let now = now_us();
            node.read(|replica| {
                let found = match &get.token {
                    TokenSelector::Id(id) => replica.by_user_and_id(user_id, *id),
                    TokenSelector::Name(name) => replica.by_name(user_id, name),
                };
                let (_, entry) = found.ok_or(ErrorCode::ResourceNotFound)?;
                Ok(ReplyBody::Details(details(entry, session.last_used(node, replica, entry.id), now)))
            })
        }
        Request::ListTokens(list) => {
            let user_id = allowed(session, node, Need::Scope(scope::TOKENS_READ))?;
            Ok(ReplyBody::Page(list_tokens(list, user_id, session, node)))
        }
        Request::UpdateToken(update) => update_token(update, session, node).await,
        Request::RevokeToken(revoke) => {
            let change = |user_id| Change::Revoke { user_id, token: revoke.token.clone() };
            change_token(change, "token_revoked", session, node).await.map(|_| ReplyBody::Empty)
        }
        Request::RotateToken(rotate) => rotate_token(rotate, session, node).await,
        Request::RevokeAllTokens => {
            let change = |user_id| Change::RevokeAll { user_id };
            change_token(change, "tokens_revoked_all", session, node).await
        }
        Request::DeleteAllTokens => {
            let change = |user_id| Change::DeleteAll { user_id };
            change_token(change, "tokens_deleted_all", session, node).await
        }
        Request::Authorize(authorize) => authorize_token(authorize, session, node),
    }
}

fn logged_in(session: &Session) -> Result<u32, ErrorCode> {
    session.user_id.ok_or(ErrorCode::Unauthenticated)
}

/// The session's user id, if the session still stands and may do `need`.
///
/// A session ends (40) once its user is inactive or gone, or once the token
/// it logged in with is revoked or rotated: credentials stopped on purpose
/// do not keep working through an open connection. A token that is deleted
/// or expires leaves the session open, as in Iggy (whose clients rely on
/// it), with the token's scopes still in force. A token session must hold
/// the scope the command needs.
fn allowed(session: &mut Session, node: &Node, need: Need) -> Result<u32, ErrorCode> {
    let user_id = logged_in(session)?;
    let users = node.shared.users.load();
    if !users.by_id(user_id).is_some_and(|user| user.active) {
        tracing::info!(target: "audit", event = "session_ended", reason = "user_inactive", user_id, peer = %session.peer);
        session.log_out();
        return Err(ErrorCode::Unauthenticated);
    }
    let Some(token) = &session.token else { return Ok(user_id) };
    let stopped = node.read(|replica| match replica.by_hash(&token.hash) {
        Some(entry) if entry.id == token.id => entry.revoked_at_us.is_some(),
        // Gone under this hash: rotated if the id is still there, else deleted.
        _ => replica.by_user_and_id(user_id, token.id).is_some(),
    });
    if stopped {
        tracing::info!(target: "audit", event = "session_ended", reason = "token_revoked_or_rotated", user_id, token_id = token.id, peer = %session.peer);
        session.log_out();
        return Err(ErrorCode::Unauthenticated);
    }
    let needed = match need {
        Need::Session => return Ok(user_id),
        Need::Scope(needed) => needed,
        Need::Manage => scope::TOKENS_WRITE,
    };
    if !scope::allows(token.scopes(), needed) {
        return Err(ErrorCode::InsufficientScope);
    }
    if matches!(need, Need::Manage) && !node.shared.policy.load().token_sessions_manage_tokens {
        return Err(ErrorCode::TokenManagementNotAllowed);
    }
    Ok(user_id)
}

/// A token session may only mint tokens it could itself stand in for: every
/// scope asked for must be covered by the session token's scopes (a full
/// access token needs a full access session).
fn may_grant(session: &Session, scopes: &[Box<str>]) -> Result<(), ErrorCode> {
    let Some(token) = &session.token else { return Ok(()) };
    let own = token.scopes();
    let covered =
        own.is_empty() || (!scopes.is_empty() && scopes.iter().all(|wanted| scope::allows(own, wanted)));
    if covered { Ok(()) } else { Err(ErrorCode::InsufficientScope) }
}

async fn login_user(login: LoginUser, session: &mut Session, node: &Node) -> Result<ReplyBody, ErrorCode> {
    let LoginUser { username, password, .. } = login;
    // Bounds first: no lookup and no hashing for a request that cannot match.
    if !(USERNAME_BYTES_MIN..=USERNAME_BYTES_MAX).contains(&username.len()) {
        return Err(ErrorCode::InvalidUsername);
    }
    if !(PASSWORD_BYTES_MIN..=PASSWORD_BYTES_MAX).contains(&password.len()) {
        return Err(ErrorCode::InvalidPassword);
    }
    let shared = &node.shared;
    let peer = session.peer;
    let attempt = Attempt::Password { address: peer.ip(), username: &username };
    if !shared.throttle.allows(attempt) {
        tracing::warn!(target: "audit", event = "login_throttled", method = "password", %username, %peer);
        return Err(ErrorCode::TooManyFailedLogins);
    }
    let user = shared.users.load().by_name(&username).cloned();
    let verified = shared.verifier.verify(user.as_deref(), password).await;
    let user = match user {
        Some(user) if verified => user,
        _ => {
            shared.throttle.failed(attempt);
            tracing::warn!(target: "audit", event = "login_failed", method = "password", %username, %peer);
            return Err(ErrorCode::InvalidCredentials);
        }
    };
    if !user.active {
        tracing::warn!(target: "audit", event = "login_failed", method = "password", reason = "inactive", %username, %peer);
        return Err(ErrorCode::UserInactive);
    }
    session.user_id = Some(user.id);
    session.token = None;
    // Successful logins are debug-level audit events: a sidecar answers tens
    // of thousands a second. `LATCHKEY_LOG=info,audit=debug` records them.
    tracing::debug!(target: "audit", event = "login", method = "password", user_id = user.id, %username, %peer);
    Ok(ReplyBody::Identity(IdentityInfo { user_id: user.id }))
}

fn login_with_token(
    login: LoginWithPersonalAccessToken,
    session: &mut Session,
    node: &Node,
) -> Result<ReplyBody, ErrorCode> {
    let peer = session.peer;
    let throttle = &node.shared.throttle;
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
    let hash = blake3::keyed_hash(&node.shared.token_key, login.token.as_bytes());
    let now = now_us();
    let hash = *hash.as_bytes();
    let found = node.read(|replica| {
        replica.by_hash(&hash).map(|token| {
            let status = (token.revoked_at_us.is_some(), token.is_expired(now), token.admits(peer.ip()));
            (token.id, token.user_id, token.name.clone(), token.extras.clone(), status)
        })
    });
    let Some((token_id, user_id, name, extras, (revoked, expired, admitted))) = found else {
        return fail("unknown", ErrorCode::ResourceNotFound);
    };
    let users = node.shared.users.load();
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
    session.user_id = Some(user_id);
    session.token = Some(SessionToken { id: token_id, hash, extras });
    session.note_use(node, token_id, hash, LastUsed { at_us: now, peer });
    tracing::debug!(target: "audit", event = "login", method = "token", user_id, token_id, token_name = %name, %peer);
    Ok(ReplyBody::Identity(IdentityInfo { user_id }))
}

/// A fresh random token and its keyed hash.
fn mint(node: &Node) -> Result<(Secret, TokenHash), ErrorCode> {
    let mut secret = [0u8; token::SECRET_BYTES];
    if let Err(error) = rand::rngs::OsRng.try_fill_bytes(&mut secret) {
        tracing::error!(%error, "OS random source failed; cannot mint a token");
        return Err(ErrorCode::Error);
    }
    let raw = Secret::new(token::encode(&secret));
    secret.zeroize();
    let hash = *blake3::keyed_hash(&node.shared.token_key, raw.as_bytes()).as_bytes();
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
/// own scopes forbid it.
async fn start_create_token(
    create: CreatePersonalAccessToken,
    session: &mut Session,
    node: &Node,
) -> Result<PendingReply, ErrorCode> {
    let CreatePersonalAccessToken { name, expiry_us } = create;
    let request = CreateToken { name, expiry_us, ..CreateToken::default() };
    let raw_token = |issued: IssuedToken| ReplyBody::Token(RawPersonalAccessToken { token: issued.token });
    start_create(request, None, raw_token, session, node).await
}

/// Code 9100.
async fn start_create_extended(
    create: CreateToken,
    session: &mut Session,
    node: &Node,
) -> Result<PendingReply, ErrorCode> {
    // The session and its rights first, as for every command; then the body.
    allowed(session, node, Need::Manage)?;
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
    start_create(create, extras, ReplyBody::Issued, session, node).await
}

/// Checks a create, mints the token and queues the change; the returned
/// reply waits for the commit.
async fn start_create(
    create: CreateToken,
    extras: Option<Arc<TokenExtras>>,
    wrap: fn(IssuedToken) -> ReplyBody,
    session: &mut Session,
    node: &Node,
) -> Result<PendingReply, ErrorCode> {
    let user_id = allowed(session, node, Need::Manage)?;
    check_name(&create.name)?;
    let scopes = extras.as_deref().map_or(&[][..], |extras| &extras.scopes[..]);
    may_grant(session, scopes)?;
    let lifetime_us = node.shared.policy.load().create_lifetime(create.expiry_us)?;
    let (raw, hash) = mint(node)?;
    let name = create.name;
    let change = Change::Create { user_id, name: name.clone(), hash, expiry_us: lifetime_us, extras };
    let peer = session.peer;
    let ticket = node.shared.writer.enqueue(change).await?;
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

/// A request begun by [`start`].
pub enum Started {
    Done(Result<ReplyBody, ErrorCode>),
    Pending(PendingReply),
}

/// Runs a request that passed decoding and the login check, like
/// [`handle`], except that a token create or delete (42, 43, 9100, 9106)
/// returns once its change is queued, so a connection can queue the next
/// one before this one's commit: a client that pipelines creates and
/// deletes gets them into one batch. Only these may be begun ahead: their
/// checks do not depend on an earlier create or delete's outcome (the
/// writer checks the changes in order), and none of them can end the
/// session.
pub async fn start(request: Request, session: &mut Session, node: &Node) -> Started {
    if !may_start_ahead(&request) {
        return Started::Done(handle(request, session, node).await);
    }
    match begin_write(request, session, node).await {
        Ok(pending) => Started::Pending(pending),
        Err(code) => Started::Done(Err(code)),
    }
}

/// Checks and queues a token create or delete (the requests
/// [`may_start_ahead`] admits); the reply waits for the commit. [`handle`]
/// awaits it at once, [`start`] hands it back.
async fn begin_write(
    request: Request,
    session: &mut Session,
    node: &Node,
) -> Result<PendingReply, ErrorCode> {
    match request {
        Request::CreatePersonalAccessToken(create) => start_create_token(create, session, node).await,
        Request::CreateToken(create) => start_create_extended(create, session, node).await,
        Request::DeletePersonalAccessToken(delete) => {
            let token = TokenSelector::Name(delete.name);
            start_change(|user_id| Change::Delete { user_id, token }, "token_deleted", session, node).await
        }
        Request::DeleteToken(delete) => {
            let token = delete.token;
            start_change(|user_id| Change::Delete { user_id, token }, "token_deleted", session, node).await
        }
        other => unreachable!("{other:?} is not a token create or delete"),
    }
}

/// Whether [`start`] may return before the request's commit.
pub fn may_start_ahead(request: &Request) -> bool {
    matches!(
        request,
        Request::CreatePersonalAccessToken(_)
            | Request::CreateToken(_)
            | Request::DeletePersonalAccessToken(_)
            | Request::DeleteToken(_)
    )
}

/// Submits a change to one or all of the caller's tokens. Replies with a
/// count for the all-token changes, empty otherwise.
async fn change_token(
    change: impl FnOnce(u32) -> Change,
    event: &'static str,
    session: &mut Session,
    node: &Node,
) -> Result<ReplyBody, ErrorCode> {
    start_change(change, event, session, node).await?.reply().await
}

/// Checks the session and queues a change to the caller's tokens; the
/// returned reply waits for the commit.
async fn start_change(
    change: impl FnOnce(u32) -> Change,
    event: &'static str,
    session: &mut Session,
    node: &Node,
) -> Result<PendingReply, ErrorCode> {
    let user_id = allowed(session, node, Need::Manage)?;
    let peer = session.peer;
    let ticket = node.shared.writer.enqueue(change(user_id)).await?;
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
async fn update_token(
    update: UpdateToken,
    session: &mut Session,
    node: &Node,
) -> Result<ReplyBody, ErrorCode> {
    allowed(session, node, Need::Manage)?;
    if let Some(name) = &update.name {
        check_name(name)?;
    }
    if let Some(description) = &update.description {
        check_description(description)?;
    }
    let UpdateToken { token, name, description } = update;
    let change = |user_id| Change::Update { user_id, token, name, description };
    change_token(change, "token_updated", session, node).await
}

/// Code 9105.
async fn rotate_token(
    rotate: RotateToken,
    session: &mut Session,
    node: &Node,
) -> Result<ReplyBody, ErrorCode> {
    let user_id = allowed(session, node, Need::Manage)?;
    let expiry_us = node.shared.policy.load().rotate_lifetime(rotate.expiry_us)?;
    let (raw, new_hash) = mint(node)?;
    let max_lifetime_us = node.shared.policy.load().max_lifetime_us;
    let change = Change::Rotate { user_id, token: rotate.token, new_hash, expiry_us, max_lifetime_us };
    let peer = session.peer;
    match node.shared.writer.submit(change).await {
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

/// Everything about a token but its secret.
fn details(entry: &TokenEntry, last_used: Option<LastUsed>, now_us: u64) -> TokenDetails {
    TokenDetails {
        id: entry.id,
        name: entry.name.to_string(),
        description: entry.description().to_owned(),
        status: entry.status(now_us),
        created_at_us: entry.created_at_us,
        expires_at_us: entry.expiry_at_us.map_or(0, |at| at.get()),
        revoked_at_us: entry.revoked_at_us.map_or(0, |at| at.get()),
        last_used_at_us: last_used.map_or(0, |used| used.at_us),
        last_used_address: last_used.map_or_else(String::new, |used| used.peer.to_string()),
        scopes: entry.scopes().iter().map(|scope| scope.to_string()).collect(),
        networks: entry.networks().iter().map(|network| network.to_string()).collect(),
    }
}

/// Code 9102: one page of the caller's tokens in id order.
fn list_tokens(list: ListTokens, user_id: u32, session: &Session, node: &Node) -> TokenPage {
    let limit = match list.limit as usize {
        0 => LIST_PAGE_TOKENS_MAX,
        limit => limit.min(LIST_PAGE_TOKENS_MAX),
    };
    let now = now_us();
    node.read(|replica| {
        let mut entries: Vec<&TokenEntry> = replica
            .list_for(user_id)
            .filter(|entry| entry.id > list.after_id && list.filter.admits(entry.status(now)))
            .collect();
        entries.sort_unstable_by_key(|entry| entry.id);
        let more = entries.len() > limit;
        entries.truncate(limit);
        let next_after_id = if more { entries.last().map_or(0, |entry| entry.id) } else { 0 };
        let tokens = entries
            .into_iter()
            .map(|entry| details(entry, session.last_used(node, replica, entry.id), now))
            .collect();
        TokenPage { tokens, next_after_id }
    })
}

/// Code 9110: answered from this node's replica; no disk, no session bound.
fn authorize_token(authorize: Authorize, session: &mut Session, node: &Node) -> Result<ReplyBody, ErrorCode> {
    let caller = allowed(session, node, Need::Scope(scope::AUTHORIZE))?;
    let users = node.shared.users.load();
    if !users.by_id(caller).is_some_and(|user| user.can_authorize) {
        return Err(ErrorCode::AuthorizeNotPermitted);
    }
    if !authorize.scope.is_empty() {
        scope::validate_required(&authorize.scope).map_err(|_| ErrorCode::InvalidScope)?;
    }
    let address: Option<SocketAddr> = match authorize.address.as_str() {
        "" => None,
        text => Some(match text.parse::<SocketAddr>() {
            Ok(address) => address,
            Err(_) => SocketAddr::new(text.parse().map_err(|_| ErrorCode::InvalidFormat)?, 0),
        }),
    };
    let unknown = AuthorizeDecision {
        decision: Decision::Unknown,
        user_id: 0,
        username: String::new(),
        token_id: 0,
        expires_at_us: 0,
    };
    if token::validate(&authorize.token).is_err() {
        return Ok(ReplyBody::Decision(unknown));
    }
    let hash = *blake3::keyed_hash(&node.shared.token_key, authorize.token.as_bytes()).as_bytes();
    let now = now_us();
    let decided = node.read(|replica| {
        let entry = replica.by_hash(&hash)?;
        let owner = users.by_id(entry.user_id)?;
        let decision = if entry.revoked_at_us.is_some() {
            Decision::Revoked
        } else if entry.is_expired(now) {
            Decision::Expired
        } else if !owner.active {
            Decision::InactiveUser
        } else if !entry.networks().is_empty() && !address.is_some_and(|address| entry.admits(address.ip())) {
            Decision::Network
        } else if !authorize.scope.is_empty() && !scope::allows(entry.scopes(), &authorize.scope) {
            Decision::Scope
        } else {
            Decision::Allowed
        };
        Some(AuthorizeDecision {
            decision,
            user_id: entry.user_id,
            username: owner.username.clone(),
            token_id: entry.id,
            expires_at_us: entry.expiry_at_us.map_or(0, |at| at.get()),
        })
    });
    let decided = decided.unwrap_or(unknown);
    let peer = session.peer;
    if decided.allowed() {
        let used_from = address.unwrap_or(peer);
        session.note_use(node, decided.token_id, hash, LastUsed { at_us: now, peer: used_from });
        tracing::debug!(target: "audit", event = "authorize", decision = "allowed", caller, user_id = decided.user_id, token_id = decided.token_id, scope = %authorize.scope, address = %authorize.address, %peer);
    } else {
        tracing::info!(target: "audit", event = "authorize", decision = decided.decision.as_str(), caller, user_id = decided.user_id, token_id = decided.token_id, scope = %authorize.scope, address = %authorize.address, %peer);
    }
    Ok(ReplyBody::Decision(decided))
}

/// A one-node roster naming this server as the healthy leader (spec §1.5),
/// so the Iggy SDKs never try to redirect.
fn cluster_metadata(node: &Node) -> ClusterMetadata {
    let address = node.shared.local_addr;
    ClusterMetadata {
        name: "latchkey".to_owned(),
        nodes: vec![ClusterNode {
            name: "latchkey-node".to_owned(),
            ip: address.ip().to_string(),
            tcp_port: address.port(),
            quic_port: 0,
            http_port: 0,
            websocket_port: 0,
            role: NODE_ROLE_LEADER,
            status: NODE_STATUS_HEALTHY,
        }],
    }
}
