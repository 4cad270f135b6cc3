//! What each served command does, given a decoded request and the session.
//!
//! Reads (token login, list, GetMe) are answered from the shard's replica.
//! Creates and deletes go through the writer and are answered only once they
//! are durable and applied on every shard. Audit events go to the `audit`
//! tracing target: user, token name and id, peer; never a secret.

use std::net::SocketAddr;

use bytes::BytesMut;
use latchkey_protocol::body::{
    ClientDetails, ClusterMetadata, ClusterNode, CreatePersonalAccessToken, DeletePersonalAccessToken,
    IdentityInfo, LoginUser, LoginWithPersonalAccessToken, NODE_ROLE_LEADER, NODE_STATUS_HEALTHY,
    PersonalAccessTokenInfo, PersonalAccessTokens, RawPersonalAccessToken, TRANSPORT_TCP, WireEncode,
};
use latchkey_protocol::{ErrorCode, Request, token};
use rand::TryRngCore;

use crate::clock::now_us;
use crate::shard::Shard;
use crate::throttle::Attempt;
use crate::users::{PASSWORD_BYTES_MAX, PASSWORD_BYTES_MIN, USERNAME_BYTES_MAX, USERNAME_BYTES_MIN};
use crate::writer::{Change, Outcome};

/// Token name bounds in bytes (Iggy legacy: 3–30, code 50 outside).
pub const TOKEN_NAME_BYTES_MIN: usize = 3;
pub const TOKEN_NAME_BYTES_MAX: usize = 30;

/// Per-connection login state.
#[derive(Debug)]
pub struct Session {
    client_id: u32,
    peer: SocketAddr,
    user_id: Option<u32>,
}

impl Session {
    pub fn new(client_id: u32, peer: SocketAddr) -> Session {
        Session { client_id, peer, user_id: None }
    }

    pub fn is_logged_in(&self) -> bool {
        self.user_id.is_some()
    }

    /// The client's address, for logs.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// Ends the login (the connection stays open), as Logout does.
    pub fn log_out(&mut self) {
        self.user_id = None;
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

/// Runs a request that passed decoding and the login check.
pub async fn handle(request: Request, session: &mut Session, shard: &Shard) -> Result<ReplyBody, ErrorCode> {
    match request {
        Request::Ping => Ok(ReplyBody::Empty),
        Request::LoginUser(login) => login_user(login, session, shard).await,
        Request::LoginWithPersonalAccessToken(login) => login_with_token(login, session, shard),
        Request::LogoutUser => {
            session.log_out();
            Ok(ReplyBody::Empty)
        }
        Request::GetMe => Ok(ReplyBody::Me(ClientDetails {
            client_id: session.client_id,
            user_id: logged_in(session)?,
            transport: TRANSPORT_TCP,
            address: session.peer.to_string(),
            consumer_groups: Vec::new(),
        })),
        Request::GetClusterMetadata => Ok(ReplyBody::Cluster(cluster_metadata(shard))),
        Request::GetPersonalAccessTokens => {
            let user_id = logged_in(session)?;
            let entries = shard.read(|replica| {
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
        Request::CreatePersonalAccessToken(create) => create_token(create, session, shard).await,
        Request::DeletePersonalAccessToken(delete) => delete_token(delete, session, shard).await,
        Request::Unserved(_) => Err(ErrorCode::FeatureUnavailable),
    }
}

fn logged_in(session: &Session) -> Result<u32, ErrorCode> {
    session.user_id.ok_or(ErrorCode::Unauthenticated)
}

async fn login_user(login: LoginUser, session: &mut Session, shard: &Shard) -> Result<ReplyBody, ErrorCode> {
    let LoginUser { username, password, .. } = login;
    // Bounds first: no lookup and no hashing for a request that cannot match.
    if !(USERNAME_BYTES_MIN..=USERNAME_BYTES_MAX).contains(&username.len()) {
        return Err(ErrorCode::InvalidUsername);
    }
    if !(PASSWORD_BYTES_MIN..=PASSWORD_BYTES_MAX).contains(&password.len()) {
        return Err(ErrorCode::InvalidPassword);
    }
    let shared = &shard.shared;
    let peer = session.peer;
    let attempt = Attempt::Password { address: peer.ip(), username: &username };
    if !shared.throttle.allows(attempt) {
        tracing::warn!(target: "audit", event = "login_throttled", method = "password", %username, %peer);
        return Err(ErrorCode::TooManyFailedLogins);
    }
    let user = shared.users.by_name(&username).cloned();
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
    // Successful logins are debug-level audit events: a sidecar answers tens
    // of thousands a second. `LATCHKEY_LOG=info,audit=debug` records them.
    tracing::debug!(target: "audit", event = "login", method = "password", user_id = user.id, %username, %peer);
    Ok(ReplyBody::Identity(IdentityInfo { user_id: user.id }))
}

fn login_with_token(
    login: LoginWithPersonalAccessToken,
    session: &mut Session,
    shard: &Shard,
) -> Result<ReplyBody, ErrorCode> {
    let peer = session.peer;
    let throttle = &shard.shared.throttle;
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
    let hash = blake3::keyed_hash(&shard.shared.token_key, login.token.as_bytes());
    let now = now_us();
    let found = shard.read(|replica| {
        replica
            .by_hash(hash.as_bytes())
            .map(|token| (token.id, token.user_id, token.name.clone(), token.is_expired(now)))
    });
    let Some((token_id, user_id, name, expired)) = found else {
        return fail("unknown", ErrorCode::ResourceNotFound);
    };
    let Some(owner) = shard.shared.users.by_id(user_id) else {
        return fail("owner_removed", ErrorCode::ResourceNotFound);
    };
    if expired {
        return fail("expired", ErrorCode::PersonalAccessTokenExpired);
    }
    if !owner.active {
        return fail("inactive", ErrorCode::UserInactive);
    }
    session.user_id = Some(user_id);
    tracing::debug!(target: "audit", event = "login", method = "token", user_id, token_id, token_name = %name, %peer);
    Ok(ReplyBody::Identity(IdentityInfo { user_id }))
}

async fn create_token(
    create: CreatePersonalAccessToken,
    session: &mut Session,
    shard: &Shard,
) -> Result<ReplyBody, ErrorCode> {
    let user_id = logged_in(session)?;
    let CreatePersonalAccessToken { name, expiry_us } = create;
    if !(TOKEN_NAME_BYTES_MIN..=TOKEN_NAME_BYTES_MAX).contains(&name.len()) {
        return Err(ErrorCode::InvalidPersonalAccessTokenName);
    }
    let mut secret = [0u8; token::SECRET_BYTES];
    if let Err(error) = rand::rngs::OsRng.try_fill_bytes(&mut secret) {
        tracing::error!(%error, "OS random source failed; cannot mint a token");
        return Err(ErrorCode::Error);
    }
    let raw = token::encode(&secret);
    let hash = *blake3::keyed_hash(&shard.shared.token_key, raw.as_bytes()).as_bytes();
    let change = Change::Create { user_id, name: name.clone(), hash, expiry_us };
    let peer = session.peer;
    match shard.shared.writer.submit(change).await {
        Ok(Outcome::Created(record)) => {
            tracing::info!(target: "audit", event = "token_created", user_id, token_id = record.id, token_name = %name, expiry_at_us = record.expiry_at_us.map_or(0, |at| at.get()), %peer);
            Ok(ReplyBody::Token(RawPersonalAccessToken { token: raw }))
        }
        Ok(other) => unreachable!("create answered with {other:?}"),
        Err(code) => {
            tracing::info!(target: "audit", event = "token_create_refused", user_id, token_name = %name, code = code.code(), %peer);
            Err(code)
        }
    }
}

async fn delete_token(
    delete: DeletePersonalAccessToken,
    session: &mut Session,
    shard: &Shard,
) -> Result<ReplyBody, ErrorCode> {
    let user_id = logged_in(session)?;
    let name = delete.name;
    let peer = session.peer;
    match shard.shared.writer.submit(Change::Delete { user_id, name: name.clone() }).await {
        Ok(Outcome::Deleted { id }) => {
            tracing::info!(target: "audit", event = "token_deleted", user_id, token_id = id, token_name = %name, %peer);
            Ok(ReplyBody::Empty)
        }
        Ok(other) => unreachable!("delete answered with {other:?}"),
        Err(code) => Err(code),
    }
}

/// A one-node roster naming this server as the healthy leader (spec §1.5),
/// so the Iggy SDKs never try to redirect.
fn cluster_metadata(shard: &Shard) -> ClusterMetadata {
    let address = shard.shared.local_addr;
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
