//! Token checks for a third party: a broker's Authorize (9110) over TCP,
//! a proxy's forward auth and RFC 7662 introspection over HTTP. One
//! decision ([`decide`]) serves all three, with one audit event and one
//! last-use record, so a token is judged the same whichever door asks.
//!
//! Authorize and introspection come from a logged-in caller with the
//! `authorize` permission (and, for a token session, scope). Forward auth
//! comes from a proxy that holds no session: the token is the only
//! credential, so failed checks are charged to the client's address in the
//! failed-login throttle, exactly like a failed token login.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use latchkey_protocol::ext::{Authorize, AuthorizeDecision, Decision};
use latchkey_protocol::{ErrorCode, scope, token};

use super::{Context, Need, ReplyBody, Session};
use crate::auth::throttle::Attempt;
use crate::auth::users::{User, UsernameCopy, Users, copy_username};
use crate::clock::request_now_us;
use crate::metrics::{self, Via};
use crate::registry::{LastUsed, TokenEntry, TokenExtras, TokenHash};

/// What a check decided, with what HTTP callers report beyond the binary
/// reply: the token's scopes and when it was made.
pub struct Verdict {
    pub decided: AuthorizeDecision<UsernameCopy>,
    /// The found token's scopes and networks (`None`: full access, no
    /// token found, or a check that reports its decision alone).
    pub extras: Option<Arc<TokenExtras>>,
    /// When the found token was made (0 when none was found).
    pub created_at_us: u64,
    hash: Option<TokenHash>,
    /// When it was decided (the token's use, if allowed).
    at_us: u64,
}

impl Verdict {
    pub fn allowed(&self) -> bool {
        self.decided.allowed()
    }

    fn ruling(&self) -> Ruling {
        let decided = &self.decided;
        Ruling {
            decision: decided.decision,
            user_id: decided.user_id,
            token_id: decided.token_id,
            hash: self.hash,
            at_us: self.at_us,
        }
    }

    /// The found token's scopes; empty means full access.
    pub fn scopes(&self) -> &[Box<str>] {
        self.extras.as_deref().map_or(&[], |extras| &extras.scopes)
    }
}

/// What the audit event and the last-use record need of a decision: a
/// broker's questions, which report nothing else, build only this (no copy
/// of the username, no count taken on the token's scopes).
#[derive(Clone, Copy)]
struct Ruling {
    decision: Decision,
    user_id: u32,
    token_id: u64,
    hash: Option<TokenHash>,
    /// When it was decided: the time of the token's use, if allowed.
    at_us: u64,
}

impl Ruling {
    const UNKNOWN: Ruling =
        Ruling { decision: Decision::Unknown, user_id: 0, token_id: 0, hash: None, at_us: 0 };

    fn of(entry: &TokenEntry, hash: TokenHash, decision: Decision, at_us: u64) -> Ruling {
        Ruling { decision, user_id: entry.user_id, token_id: entry.id, hash: Some(hash), at_us }
    }
}

/// Who asked for a check, for the audit event: a logged-in user's id
/// (Authorize, introspection) or none (a proxy's forward auth), and over
/// which door.
#[derive(Clone, Copy)]
struct Caller {
    user_id: Option<u32>,
    via: Via,
    /// Whether an allowed check counts as the token's use: not for a
    /// broker's later questions, which anyone can ask by name (only its
    /// login proves the secret).
    records_use: bool,
}

/// An address in an audit event: empty when none was given.
struct Shown(Option<SocketAddr>);

impl std::fmt::Display for Shown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(address) => address.fmt(f),
            None => Ok(()),
        }
    }
}

/// Code 9110: answered from this node's replica; no disk, no session bound.
pub(super) fn authorize_token(
    authorize: Authorize,
    session: &mut Session,
    ctx: &Context,
) -> Result<ReplyBody, ErrorCode> {
    let Authorize { token, scope, address } = &authorize;
    let verdict = authorized_check(token, scope, address, Via::Tcp, Report::DecisionOnly, session, ctx)?;
    Ok(ReplyBody::Decision(verdict.decided))
}

/// RFC 7662 introspection: Authorize's checks of the caller, then its
/// decision about `token` (no required scope, no address).
pub fn introspect(token: &str, session: &mut Session, ctx: &Context) -> Result<Verdict, ErrorCode> {
    authorized_check(token, "", "", Via::Http, Report::Extras, session, ctx)
}

/// What a check reports beyond its decision.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Report {
    /// The decision alone (Authorize's binary reply): the token's scopes
    /// are not taken, so no count on them is bumped per check.
    DecisionOnly,
    /// The token's scopes and networks too (introspection, forward auth).
    Extras,
}

fn authorized_check(
    token: &str,
    required_scope: &str,
    address: &str,
    via: Via,
    report: Report,
    session: &mut Session,
    ctx: &Context,
) -> Result<Verdict, ErrorCode> {
    // One look at the users table for the caller's checks and the decision.
    let users = ctx.auth.users();
    let caller = session.allowed_among(&users, ctx, Need::Scope(scope::AUTHORIZE))?;
    fresh(ctx, via)?;
    if !users.by_id(caller).is_some_and(|user| user.can_authorize) {
        return Err(ErrorCode::AuthorizeNotPermitted);
    }
    if !required_scope.is_empty() {
        scope::validate_required(required_scope).map_err(|_| ErrorCode::InvalidScope)?;
    }
    let address: Option<SocketAddr> = match address {
        "" => None,
        text => Some(match text.parse::<SocketAddr>() {
            Ok(address) => address,
            Err(_) => SocketAddr::new(text.parse().map_err(|_| ErrorCode::InvalidFormat)?, 0),
        }),
    };
    let verdict = decide(ctx, &users, token, required_scope, address, report);
    settle(
        verdict.ruling(),
        Caller { user_id: Some(caller), via, records_use: true },
        required_scope,
        address,
        session,
        ctx,
    );
    Ok(verdict)
}

/// Forward auth for a proxy: the decision about `token` used by `client`
/// (the address the proxy vouches for, or the peer), needing every scope
/// of `required` (none: any valid token). Failed checks count against
/// `client` in the failed-login throttle; a throttled client gets
/// `TooManyFailedLogins` before any lookup.
///
/// `uses` is the connection's session, which only carries token uses: it is
/// locked after the throttle's wait, never across it.
pub async fn forward_auth(
    token: &str,
    required: &[&str],
    client: SocketAddr,
    uses: &Mutex<Session>,
    ctx: &Context,
) -> Result<Verdict, ErrorCode> {
    fresh(ctx, Via::Http)?;
    for required_scope in required {
        scope::validate_required(required_scope).map_err(|_| ErrorCode::InvalidScope)?;
    }
    let Ok(reservation) = ctx.auth.throttle.reserve(Attempt::Token { address: client.ip() }).await else {
        return Err(throttled(Via::Http, client));
    };
    let first = required.first().copied().unwrap_or("");
    let mut verdict = decide(ctx, &ctx.auth.users(), token, first, Some(client), Report::Extras);
    if verdict.allowed() && required.iter().skip(1).any(|wanted| !scope::allows(verdict.scopes(), wanted)) {
        verdict.decided.decision = Decision::Scope;
    }
    // Named in the audit event; most checks need one scope or none, which
    // need no allocation.
    let required_scope = match required {
        [] => Cow::Borrowed(""),
        [one] => Cow::Borrowed(*one),
        many => Cow::Owned(many.join(" ")),
    };
    // Only a token nobody holds is a guess; a real token that is refused
    // (expired, revoked, wrong scope) costs its holder nothing.
    if verdict.decided.decision == Decision::Unknown {
        drop(reservation);
    } else {
        reservation.refund();
    }
    let mut session = uses.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    settle(
        verdict.ruling(),
        Caller { user_id: None, via: Via::Http, records_use: true },
        &required_scope,
        Some(client),
        &mut session,
        ctx,
    );
    Ok(verdict)
}

/// `Ok` while this node may check tokens (`Freshness`); a refusal is
/// counted as the check's outcome.
fn fresh(ctx: &Context, via: Via) -> Result<(), ErrorCode> {
    ctx.freshness.check().inspect_err(|_| metrics::authorize(via, "unavailable"))
}

/// A check refused by the failed-login throttle: said and counted.
fn throttled(via: Via, client: SocketAddr) -> ErrorCode {
    tracing::warn!(target: "audit", event = "authorize_throttled", via = via.as_str(), %client);
    metrics::authorize(via, "throttled");
    ErrorCode::TooManyFailedLogins
}

/// A verdict for no token found.
fn unknown() -> Verdict {
    Verdict {
        decided: AuthorizeDecision {
            decision: Decision::Unknown,
            user_id: 0,
            username: UsernameCopy::new_const(),
            token_id: 0,
            expires_at_us: 0,
        },
        extras: None,
        created_at_us: 0,
        hash: None,
        at_us: 0,
    }
}

/// Where a check stands on the token's networks.
#[derive(Clone, Copy)]
enum Networks {
    /// Check this address (`None`: not given, so a token with networks is
    /// refused).
    Check(Option<SocketAddr>),
    /// A question that carries no address, about a connection whose
    /// address was checked when it was let in (a broker's resource checks).
    Checked,
}

/// The decision about `token` at this moment, from this node's replica.
fn decide(
    ctx: &Context,
    users: &Users,
    token: &str,
    required_scope: &str,
    address: Option<SocketAddr>,
    report: Report,
) -> Verdict {
    // Only minted tokens are in the registry: a malformed one is not found.
    // The free checks (length, prefix) spare most such tokens the hash.
    if !token::has_shape(token) {
        return unknown();
    }
    let hash = ctx.auth.token_key.hash(token);
    let now = request_now_us();
    ctx.registry
        .read(|replica| {
            let entry = replica.by_hash(&hash)?;
            let owner = users.by_id(entry.user_id)?;
            Some(judge(entry, hash, owner, now, required_scope, Networks::Check(address), report))
        })
        .unwrap_or_else(unknown)
}

/// The rules, in the order Authorize (9110) documents them.
fn judge(
    entry: &TokenEntry,
    hash: TokenHash,
    owner: &User,
    now_us: u64,
    required_scope: &str,
    networks: Networks,
    report: Report,
) -> Verdict {
    Verdict {
        decided: AuthorizeDecision {
            decision: rule(entry, owner, now_us, required_scope, networks),
            user_id: entry.user_id,
            username: copy_username(&owner.username),
            token_id: entry.id,
            expires_at_us: entry.expiry_at_us.map_or(0, |at| at.get()),
        },
        extras: if report == Report::Extras { entry.extras.clone() } else { None },
        created_at_us: entry.created_at_us,
        hash: Some(hash),
        at_us: now_us,
    }
}

/// The decision of [`judge`] alone.
fn rule(entry: &TokenEntry, owner: &User, now_us: u64, required_scope: &str, networks: Networks) -> Decision {
    let outside = |address: Option<SocketAddr>| {
        !entry.networks().is_empty() && !address.is_some_and(|address| entry.admits(address.ip()))
    };
    if entry.revoked_at_us.is_some() {
        Decision::Revoked
    } else if entry.is_expired(now_us) {
        Decision::Expired
    } else if !owner.active {
        Decision::InactiveUser
    } else if matches!(networks, Networks::Check(address) if outside(address)) {
        Decision::Network
    } else if !required_scope.is_empty() && !scope::allows(entry.scopes(), required_scope) {
        Decision::Scope
    } else {
        Decision::Allowed
    }
}

/// The name a broker knows a token by: `<owner's username>/<token name>`.
/// Usernames used this way may not contain `/`; token names may.
pub fn broker_username(username: &str) -> Option<(&str, &str)> {
    username.split_once('/').filter(|(owner, name)| !owner.is_empty() && !name.is_empty())
}

/// A broker's login (RabbitMQ's `user_path`): the password is a token, and
/// it must be the token the username names, so that the broker's later
/// questions, which carry the username only, are about that token. Failed
/// logins count against `client` in the throttle, as forward auth's do.
/// Networks are checked when the broker asks about the connection's
/// address ([`broker_check`] with one); the login itself carries none.
pub async fn broker_login(
    username: &str,
    secret: &str,
    client: SocketAddr,
    uses: &Mutex<Session>,
    ctx: &Context,
) -> Result<Decision, ErrorCode> {
    fresh(ctx, Via::Broker)?;
    let Ok(reservation) = ctx.auth.throttle.reserve(Attempt::Token { address: client.ip() }).await else {
        return Err(throttled(Via::Broker, client));
    };
    let mut ruling = Ruling::UNKNOWN;
    if let Some((owner, name)) = broker_username(username)
        && token::has_shape(secret)
    {
        let hash = ctx.auth.token_key.hash(secret);
        let users = ctx.auth.users();
        let now = request_now_us();
        if let Some(found) = ctx.registry.read(|replica| {
            let entry = replica.by_hash(&hash)?;
            let user = users.by_id(entry.user_id)?;
            // The secret must be the named token's: else the later
            // questions would be about another token than the one proven.
            (user.username == owner && *entry.name == *name)
                .then(|| Ruling::of(entry, hash, rule(entry, user, now, "", Networks::Checked), now))
        }) {
            ruling = found;
        }
    }
    if ruling.decision == Decision::Unknown {
        drop(reservation);
    } else {
        reservation.refund();
    }
    let mut session = uses.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let caller = Caller { user_id: None, via: Via::Broker, records_use: true };
    settle(ruling, caller, "", None, &mut session, ctx);
    Ok(ruling.decision)
}

/// A broker's later question about a connection it let in with
/// [`broker_login`]: may the token `username` names do `required_scope`
/// (empty: anything), from `address` when the question carries one. It
/// is answered from the token as it is now (revoked, rotated away, expired,
/// its owner inactive: denied), never from the username alone: a broker
/// asks only about connections whose login proved the secret.
pub fn broker_check(
    username: &str,
    required_scope: &str,
    address: Option<SocketAddr>,
    uses: &Mutex<Session>,
    ctx: &Context,
) -> Result<Decision, ErrorCode> {
    fresh(ctx, Via::Broker)?;
    let networks = if address.is_some() { Networks::Check(address) } else { Networks::Checked };
    let users = ctx.auth.users();
    let now = request_now_us();
    let ruling = broker_username(username)
        .and_then(|(owner, name)| {
            let user = users.by_name(owner)?;
            ctx.registry.read(|replica| {
                let (hash, entry) = replica.by_name(user.id, name)?;
                Some(Ruling::of(entry, *hash, rule(entry, user, now, required_scope, networks), now))
            })
        })
        .unwrap_or(Ruling::UNKNOWN);
    let mut session = uses.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let caller = Caller { user_id: None, via: Via::Broker, records_use: false };
    settle(ruling, caller, required_scope, address, &mut session, ctx);
    Ok(ruling.decision)
}

/// The audit event, and the last-use record of an allowed token (from the
/// address checked, else the caller's).
fn settle(
    ruling: Ruling,
    caller: Caller,
    required_scope: &str,
    address: Option<SocketAddr>,
    session: &mut Session,
    ctx: &Context,
) {
    let Ruling { decision, user_id, token_id, hash, at_us } = ruling;
    let peer = session.peer();
    let Caller { user_id: caller, via, records_use } = caller;
    metrics::authorize(via, decision.as_str());
    let via = via.as_str();
    if let (Decision::Allowed, Some(hash)) = (decision, hash) {
        if records_use {
            let used_from = address.unwrap_or(peer);
            session.note_use(ctx, token_id, hash, LastUsed { at_us, peer: used_from });
        }
        tracing::debug!(target: "audit", event = "authorize", decision = "allowed", via, caller, user_id, token_id, scope = %required_scope, address = %Shown(address), %peer);
    } else {
        tracing::info!(target: "audit", event = "authorize", decision = decision.as_str(), via, caller, user_id, token_id, scope = %required_scope, address = %Shown(address), %peer);
    }
}
