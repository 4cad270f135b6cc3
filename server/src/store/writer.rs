//! The writer: one thread that commits every change, in queue order.
//!
//! Every change (from any connection, the cleaner, or the last-use flush) is
//! queued to this thread. It resolves each against the authoritative state
//! (the [`Resolver`], below), makes the batch durable through the [`Journal`],
//! publishes it to the readers through the [`Publish`] hook, and only then
//! answers the callers.
//!
//! Group commit falls out of the loop's shape: while one batch is being
//! synced, new changes queue up in the channel, and the next turn takes all of
//! them (up to [`BATCH_CHANGES_MAX`]) into one journal append and one sync.
//!
//! **The rules**, written once for every backend: the per-user token limit
//! (before the duplicate-name check, as Iggy orders them), names unique per
//! user, ids never reused, a fresh hash for every secret, the lifetime
//! rules of rotate (and that only an explicit reactivation rotates a revoked
//! token), and the bounds of an access edit's result. The [`Resolver`] owns the authoritative state: it checks
//! a [`Change`], resolves it into [`Mutation`]s (ids, hashes and absolute
//! times filled in), applies them to its own state so that later changes see
//! them, and hands them back for the journal. A refused change resolves to
//! nothing.

use std::borrow::Borrow;
use std::collections::BTreeSet;
use std::num::NonZeroU64;
use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Instant;

use ipnet::IpNet;
use latchkey_protocol::ErrorCode;
use latchkey_protocol::ext::TokenSelector;
use tokio::sync::{mpsc, oneshot};

use super::{AccessChange, Change, Journal, NewToken, Outcome};
use crate::clock::now_us;
use crate::metrics;
use crate::registry::{
    Batch, LastUsed, Mutation, Publish, Replica, TOKEN_NETWORKS_MAX, TOKEN_SCOPES_MAX, TokenEntry, TokenHash,
    TokenRecord,
};

/// Changes committed together at most (one journal append, one sync).
pub const BATCH_CHANGES_MAX: usize = 4096;
/// Changes that may wait for the writer before submitters wait for room.
pub const QUEUE_CHANGES_MAX: usize = 16 * 1024;

/// What the writer's queue carries.
pub(super) enum Message {
    // Only the etcd writer reads the origin (the file writer commits in
    // queue order, which keeps every origin's order).
    Change(
        Change,
        #[cfg_attr(not(feature = "etcd"), allow(dead_code))] Origin,
        oneshot::Sender<Result<Outcome, ErrorCode>>,
    ),
    Stop,
}

/// Who queued a change. A connection may queue changes ahead of their
/// answers (pipelining); those must take effect in the order queued.
/// Changes of different origins are concurrent, so a writer may commit
/// them in any order (the etcd writer's groups do).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Origin {
    /// A connection or HTTP session, by its client id.
    Client(u32),
    /// One change waited for on its own (`WriterHandle::submit`): nothing
    /// else of its origin is queued with it.
    Alone,
}

/// A cheap, cloneable way to submit changes.
#[derive(Clone)]
pub struct WriterHandle {
    sender: mpsc::Sender<Message>,
    /// Set by a file writer whose journal failed (it refuses every change
    /// until a restart): what readiness and the systemd watchdog look at.
    failed: Arc<AtomicBool>,
}

impl WriterHandle {
    /// Submits a change and waits until it is durable and visible to every
    /// reader (or refused). A stopped writer answers `Error`.
    pub async fn submit(&self, change: Change) -> Result<Outcome, ErrorCode> {
        self.enqueue(change, Origin::Alone).await?.outcome().await
    }

    /// Queues a change (waiting only for room in the queue) and returns the
    /// ticket its outcome will arrive on. Changes of one origin are committed
    /// in the order they are queued, each checked against the ones before it.
    pub async fn enqueue(&self, change: Change, origin: Origin) -> Result<Ticket, ErrorCode> {
        let (reply, outcome) = oneshot::channel();
        self.sender.send(Message::Change(change, origin, reply)).await.map_err(|_| ErrorCode::Error)?;
        Ok(Ticket(outcome))
    }

    /// Whether the writer still takes changes: it has not stopped, and its
    /// journal has not failed.
    pub fn is_alive(&self) -> bool {
        !self.sender.is_closed() && !self.failed.load(Ordering::Relaxed)
    }

    /// Asks the writer to finish what is queued before this call and exit.
    pub fn stop(&self) {
        let sender = self.sender.clone();
        // The queue may be full; a helper thread waits for room.
        if let Err(mpsc::error::TrySendError::Full(_)) = sender.try_send(Message::Stop) {
            std::thread::spawn(move || {
                let _ = sender.blocking_send(Message::Stop);
            });
        }
    }
}

/// Where a queued change's outcome arrives.
pub struct Ticket(oneshot::Receiver<Result<Outcome, ErrorCode>>);

impl Ticket {
    /// Waits until the change is durable and visible (or refused).
    pub async fn outcome(self) -> Result<Outcome, ErrorCode> {
        self.0.await.unwrap_or(Err(ErrorCode::Error))
    }
}

struct Writer<J, P> {
    resolver: Resolver,
    last_commit_us: u64,
    journal: J,
    publish: P,
    /// Set when the journal failed: after a failed sync the file's contents
    /// are unknown, so no further change is accepted until a restart
    /// re-reads and verifies the log.
    failed: bool,
    /// `failed`, for the handles (readiness, the watchdog).
    failed_flag: Arc<AtomicBool>,
}

/// The writer's end of its queue, before the writer runs.
pub struct Inbox(pub(super) mpsc::Receiver<Message>, Arc<AtomicBool>);

/// Creates the queue. Handles can be given out (and changes queued) before
/// the writer starts, so the server can start while the writer waits for its state.
pub fn channel() -> (WriterHandle, Inbox) {
    let (sender, receiver) = mpsc::channel(QUEUE_CHANGES_MAX);
    let failed = Arc::new(AtomicBool::new(false));
    (WriterHandle { sender, failed: Arc::clone(&failed) }, Inbox(receiver, failed))
}

/// Starts the writer thread. `state` and `next_id` come from log recovery.
/// Joining the thread gives the publisher back, so its owner decides when
/// the readers' registry goes away.
pub fn start<J: Journal, P: Publish>(
    inbox: Inbox,
    state: Replica,
    next_id: u64,
    limits: StoreLimits,
    journal: J,
    publish: P,
) -> JoinHandle<P> {
    let resolver = Resolver::new(state, next_id, limits);
    let writer =
        Writer { resolver, last_commit_us: 0, journal, publish, failed: false, failed_flag: inbox.1 };
    std::thread::Builder::new()
        .name("latchkey-writer".into())
        .spawn(move || super::exit_if_it_panics("writer", move || writer.run(inbox.0)))
        .expect("spawn writer thread")
}

/// [`channel`] and [`start`] in one.
#[cfg(test)]
pub fn spawn<J: Journal, P: Publish>(
    state: Replica,
    next_id: u64,
    limits: StoreLimits,
    journal: J,
    publish: P,
) -> (WriterHandle, JoinHandle<P>) {
    let (handle, inbox) = channel();
    (handle, start(inbox, state, next_id, limits, journal, publish))
}

/// A change taken off the queue, with where its outcome goes.
type QueuedChange = (Change, oneshot::Sender<Result<Outcome, ErrorCode>>);

impl<J: Journal, P: Publish> Writer<J, P> {
    fn run(mut self, mut receiver: mpsc::Receiver<Message>) -> P {
        let mut pending: Vec<QueuedChange> = Vec::new();
        let mut stopping = false;
        while !stopping {
            match receiver.blocking_recv() {
                Some(Message::Change(change, _, reply)) => pending.push((change, reply)),
                Some(Message::Stop) | None => break,
            }
            while pending.len() < BATCH_CHANGES_MAX {
                match receiver.try_recv() {
                    Ok(Message::Change(change, _, reply)) => pending.push((change, reply)),
                    Ok(Message::Stop) => {
                        stopping = true;
                        break;
                    }
                    Err(_) => break,
                }
            }
            self.commit(&mut pending);
        }
        // Anything queued after Stop is refused (callers see `Error`).
        receiver.close();
        self.publish
    }

    fn commit(&mut self, pending: &mut Vec<QueuedChange>) {
        fail::fail_point!("writer-commit");
        let commit_at_us = now_us().max(self.last_commit_us);
        self.last_commit_us = commit_at_us;
        let mut mutations = Vec::with_capacity(pending.len());
        let mut results = Vec::with_capacity(pending.len());
        for (change, _) in pending.iter() {
            let result = if self.failed {
                Err(ErrorCode::StorageUnavailable)
            } else {
                // Later changes in the same batch are checked against this one:
                // the resolver applies what it resolves to its state.
                self.resolver.resolve(change, commit_at_us, &mut mutations)
            };
            results.push(result);
        }
        // What the resolver's replica made for this batch, for the readers'.
        let made = self.resolver.take_made();
        if !mutations.is_empty() {
            // The metrics time the journal's write and sync of the batch, nothing else.
            let append_started = Instant::now();
            match self.journal.append(&mutations, commit_at_us) {
                Ok(()) => {
                    let done = results.iter().filter(|result| result.is_ok()).count();
                    metrics::store_batch_committed(done as u64, append_started.elapsed());
                    self.publish.publish(Batch::new(mutations, made));
                    if let Err(error) =
                        self.journal.after_append(self.resolver.state(), self.resolver.next_id())
                    {
                        metrics::store_maintenance_failed();
                        tracing::error!(%error, "log maintenance failed; refusing further changes");
                        self.failed = true;
                        self.failed_flag.store(true, Ordering::Relaxed);
                    }
                }
                Err(error) => {
                    metrics::store_batch_failed(append_started.elapsed());
                    tracing::error!(%error, "log append failed; refusing further changes until restart");
                    self.failed = true;
                    self.failed_flag.store(true, Ordering::Relaxed);
                    for result in results.iter_mut() {
                        if result.is_ok() {
                            *result = Err(ErrorCode::StorageUnavailable);
                        }
                    }
                }
            }
        }
        for ((_, reply), result) in pending.drain(..).zip(results) {
            let _ = reply.send(result);
        }
    }
}

/// The limits the rules enforce.
#[derive(Debug, Clone, Copy)]
pub struct StoreLimits {
    pub max_tokens_per_user: u32,
}

/// The authoritative state and the rules that change it.
pub struct Resolver {
    state: Replica,
    next_id: u64,
    limits: StoreLimits,
    /// Every token that has an expiry, ordered by `(expiry_at_us, id)`: the
    /// cleaner's purge takes the expired ones from the front, so a purge
    /// costs what it deletes, never a scan of every token on the writer
    /// thread (where every commit would wait behind it). It points at the
    /// state's current entries (8 bytes a token; kept current on every
    /// change, so it never keeps an old entry alive). Kept in the writer's
    /// state only; the readers' copies have no use for it.
    expiries: BTreeSet<ByExpiry>,
    /// The entries `state` made since the last [`Resolver::take_made`].
    made: Vec<Arc<TokenEntry>>,
}

impl Resolver {
    /// `state` and `next_id` come from recovery.
    pub fn new(state: Replica, next_id: u64, limits: StoreLimits) -> Resolver {
        // Sorted by a copy of each key first: sorting the index's own
        // elements would read two entries, anywhere in memory, per
        // comparison (seconds at 10M tokens). The set's own sort then meets
        // them in order and only checks it: linear, not n log n.
        let mut keyed: Vec<((u64, u64), &Arc<TokenEntry>)> = state
            .entries()
            .filter_map(|entry| Some(((entry.expiry_at_us?.get(), entry.id), entry)))
            .collect();
        keyed.sort_unstable_by_key(|(key, _)| *key);
        let expiries = keyed.into_iter().map(|(_, entry)| ByExpiry(Arc::clone(entry))).collect();
        Resolver { state, next_id, limits, expiries, made: Vec::new() }
    }

    /// The entries the state made since the last call, in order: what
    /// [`Batch`] hands the readers' replicas with the mutations applied
    /// since then.
    pub fn take_made(&mut self) -> Vec<Arc<TokenEntry>> {
        std::mem::take(&mut self.made)
    }

    /// The state every committed change has been applied to.
    pub fn state(&self) -> &Replica {
        &self.state
    }

    /// The id the next create gets.
    pub fn next_id(&self) -> u64 {
        self.next_id
    }

    /// Checks `change` at `commit_at_us`; if it holds, applies what it
    /// resolves to and appends that to `mutations`.
    pub fn resolve(
        &mut self,
        change: &Change,
        commit_at_us: u64,
        mutations: &mut Vec<Mutation>,
    ) -> Result<Outcome, ErrorCode> {
        let start = mutations.len();
        let outcome = self.check(change, commit_at_us, mutations);
        self.apply(&mutations[start..]);
        outcome
    }

    /// Checks `change` at `commit_at_us` against the state as it is, and
    /// appends what it resolves to to `mutations`, changing nothing: for a
    /// backend that commits first and applies what its store reports back.
    pub fn check(
        &self,
        change: &Change,
        commit_at_us: u64,
        mutations: &mut Vec<Mutation>,
    ) -> Result<Outcome, ErrorCode> {
        match change {
            Change::Create(token) => self.create(token, commit_at_us, mutations),
            Change::Delete { user_id, token } => {
                let (hash, id) = self.find(*user_id, token)?;
                mutations.push(Mutation::Delete { id, hash });
                Ok(Outcome::Deleted { id })
            }
            Change::Revoke { user_id, token } => self.revoke(*user_id, token, commit_at_us, mutations),
            Change::Update { user_id, token, name, description } => {
                self.update(*user_id, token, name.as_deref(), description.as_deref(), mutations)
            }
            Change::Rotate { user_id, token, new_hash, expiry_us, max_lifetime_us, reactivate } => {
                let rotate = Rotate {
                    new_hash,
                    expiry_us: *expiry_us,
                    max_lifetime_us: *max_lifetime_us,
                    reactivate: *reactivate,
                };
                self.rotate(*user_id, token, rotate, commit_at_us, mutations)
            }
            Change::EditAccess { user_id, token, edits, may_grant_full_access } => {
                self.edit_access(*user_id, token, edits, *may_grant_full_access, mutations)
            }
            Change::RevokeAll { user_id } => self.revoke_all(*user_id, commit_at_us, mutations),
            Change::DeleteAll { user_id } => {
                let all: Vec<Mutation> = self
                    .state
                    .owned_by(*user_id)
                    .map(|(hash, entry)| Mutation::Delete { id: entry.id, hash: *hash })
                    .collect();
                let deleted = count(all.len());
                mutations.extend(all);
                Ok(Outcome::Count(deleted))
            }
            Change::Touch(uses) => {
                self.touch(uses, mutations);
                Ok(Outcome::Touched)
            }
            Change::PurgeExpired { max } => Ok(self.purge_expired(*max, commit_at_us, mutations)),
            Change::Snapshot => {
                // O(tokens), on the writer: a backup holds writes for as long
                // as it takes to encode the registry (documented in README).
                let tokens: Vec<TokenRecord> = self.state.records().collect();
                let file = super::log::encode_snapshot(&tokens, self.next_id, 0, commit_at_us);
                Ok(Outcome::Snapshot { file, tokens: tokens.len() as u64 })
            }
        }
    }

    /// Applies committed mutations to the state, in order. A create moves the
    /// next id past its own, so ids are never reused.
    pub fn apply(&mut self, mutations: &[Mutation]) {
        for mutation in mutations {
            // The hash the token has before and after: a changed token's
            // entry leaves the expiry index and its new one goes in.
            let (before, after) = match mutation {
                Mutation::Create(record) => (None, Some(record.hash)),
                Mutation::Delete { hash, .. } => (Some(*hash), None),
                Mutation::Rotate { hash, new_hash, .. } | Mutation::Reactivate { hash, new_hash, .. } => {
                    (Some(*hash), Some(*new_hash))
                }
                Mutation::Revoke { hash, .. }
                | Mutation::Update { hash, .. }
                | Mutation::Access { hash, .. } => (Some(*hash), Some(*hash)),
                Mutation::Touch { .. } => (None, None),
            };
            if let Some(entry) = before.and_then(|hash| self.state.by_hash(&hash))
                && let Some(at) = entry.expiry_at_us
            {
                self.expiries.remove(&(at.get(), entry.id) as &dyn ExpiryKey);
            }
            self.state.apply_making(mutation, &mut self.made);
            if let Some(entry) = after.and_then(|hash| self.state.shared(&hash))
                && entry.expiry_at_us.is_some()
            {
                self.expiries.insert(ByExpiry(Arc::clone(entry)));
            }
            if let Mutation::Create(record) = mutation {
                self.next_id = self.next_id.max(record.id + 1);
            }
        }
    }

    /// Moves the next id to at least `next_id` (a store that allocates ids
    /// itself reports its counter).
    pub fn raise_next_id(&mut self, next_id: u64) {
        self.next_id = self.next_id.max(next_id);
    }

    fn create(
        &self,
        token: &NewToken,
        commit_at_us: u64,
        mutations: &mut Vec<Mutation>,
    ) -> Result<Outcome, ErrorCode> {
        let NewToken { user_id, name, hash, expiry_us, extras } = token;
        let (user_id, expiry_us) = (*user_id, *expiry_us);
        if self.state.count_for(user_id) >= self.limits.max_tokens_per_user as usize {
            return Err(ErrorCode::PersonalAccessTokensLimitReached);
        }
        if self.state.by_name(user_id, name).is_some() {
            return Err(ErrorCode::PersonalAccessTokenAlreadyExists);
        }
        let expiry_at_us = expiry_at(commit_at_us, expiry_us)?;
        self.check_fresh(hash)?;
        let record = TokenRecord {
            id: self.next_id,
            user_id,
            name: name.as_str().into(),
            hash: *hash,
            created_at_us: commit_at_us,
            expiry_at_us,
            revoked_at_us: None,
            extras: extras.clone(),
            last_used: None,
        };
        mutations.push(Mutation::Create(record.clone()));
        Ok(Outcome::Created(record))
    }

    fn revoke(
        &self,
        user_id: u32,
        token: &TokenSelector,
        commit_at_us: u64,
        mutations: &mut Vec<Mutation>,
    ) -> Result<Outcome, ErrorCode> {
        let (hash, id) = self.find(user_id, token)?;
        let already = self.state.by_hash(&hash).is_some_and(|entry| entry.revoked_at_us.is_some());
        if !already {
            let at_us = NonZeroU64::new(commit_at_us).ok_or(ErrorCode::Error)?;
            mutations.push(Mutation::Revoke { id, hash, at_us });
        }
        Ok(Outcome::Revoked { id })
    }

    fn update(
        &self,
        user_id: u32,
        token: &TokenSelector,
        name: Option<&str>,
        description: Option<&str>,
        mutations: &mut Vec<Mutation>,
    ) -> Result<Outcome, ErrorCode> {
        let (hash, id) = self.find(user_id, token)?;
        let entry = self.state.by_hash(&hash).expect("found above");
        let new_name: Arc<str> = match name {
            Some(name) if *name != *entry.name => {
                if self.state.by_name(user_id, name).is_some() {
                    return Err(ErrorCode::PersonalAccessTokenAlreadyExists);
                }
                name.into()
            }
            _ => Arc::clone(&entry.name),
        };
        let extras = match description {
            Some(description) => {
                let mut extras = entry.extras.as_deref().cloned().unwrap_or_default();
                extras.description = description.into();
                extras.shared()
            }
            None => entry.extras.clone(),
        };
        // Nothing to change: answered, but nothing written.
        if new_name != entry.name || extras != entry.extras {
            mutations.push(Mutation::Update { id, hash, name: new_name, extras });
        }
        Ok(Outcome::Updated { id })
    }

    fn rotate(
        &self,
        user_id: u32,
        token: &TokenSelector,
        rotate: Rotate<'_>,
        commit_at_us: u64,
        mutations: &mut Vec<Mutation>,
    ) -> Result<Outcome, ErrorCode> {
        let (hash, id) = self.find(user_id, token)?;
        let entry = self.state.by_hash(&hash).expect("found above");
        let was = entry.status(commit_at_us);
        let revoked = entry.revoked_at_us.is_some();
        if revoked && !rotate.reactivate {
            return Err(ErrorCode::PersonalAccessTokenRevoked);
        }
        let expiry_at_us = match rotate.expiry_us {
            0 => {
                // Keeping an expiry that has passed would issue a dead secret.
                if entry.is_expired(commit_at_us) {
                    return Err(ErrorCode::PersonalAccessTokenExpired);
                }
                let left_us = entry.expiry_at_us.map(|at| at.get() - commit_at_us);
                if let Some(max) = rotate.max_lifetime_us
                    && left_us.is_none_or(|left| left > max)
                {
                    return Err(ErrorCode::LifetimeNotAllowed);
                }
                entry.expiry_at_us
            }
            lifetime => expiry_at(commit_at_us, lifetime)?,
        };
        self.check_fresh(rotate.new_hash)?;
        let new_hash = *rotate.new_hash;
        let mut record = entry.record(&new_hash, None);
        record.expiry_at_us = expiry_at_us;
        if revoked {
            record.revoked_at_us = None;
            mutations.push(Mutation::Reactivate { id, hash, new_hash, expiry_at_us });
        } else {
            mutations.push(Mutation::Rotate { id, hash, new_hash, expiry_at_us });
        }
        Ok(Outcome::Rotated { record, was })
    }

    /// Applies `edits` in order to the token's scopes and networks. An add
    /// of an item the token has and a remove of one it lacks change
    /// nothing; the result must be within the token bounds; nothing is
    /// written when it equals what the token has.
    fn edit_access(
        &self,
        user_id: u32,
        token: &TokenSelector,
        edits: &[AccessChange],
        may_grant_full_access: bool,
        mutations: &mut Vec<Mutation>,
    ) -> Result<Outcome, ErrorCode> {
        let (hash, id) = self.find(user_id, token)?;
        let entry = self.state.by_hash(&hash).expect("found above");
        let mut scopes: Vec<Box<str>> = entry.scopes().to_vec();
        let mut networks: Vec<IpNet> = entry.networks().to_vec();
        for edit in edits {
            match edit {
                AccessChange::AddScope(scope) if !scopes.contains(scope) => scopes.push(scope.clone()),
                AccessChange::RemoveScope(scope) => scopes.retain(|have| have != scope),
                AccessChange::ClearScopes => scopes.clear(),
                AccessChange::AddNetwork(network) if !networks.contains(network) => networks.push(*network),
                AccessChange::RemoveNetwork(network) => networks.retain(|have| have != network),
                AccessChange::ClearNetworks => networks.clear(),
                AccessChange::AddScope(_) | AccessChange::AddNetwork(_) => {}
            }
        }
        if scopes.len() > TOKEN_SCOPES_MAX {
            return Err(ErrorCode::InvalidScope);
        }
        if networks.len() > TOKEN_NETWORKS_MAX {
            return Err(ErrorCode::InvalidNetwork);
        }
        // No scopes is full access: a scoped session may not widen a
        // token to it, as it may not create such a token.
        if scopes.is_empty() && !entry.scopes().is_empty() && !may_grant_full_access {
            return Err(ErrorCode::InsufficientScope);
        }
        let mut extras = entry.extras.as_deref().cloned().unwrap_or_default();
        extras.scopes = scopes.into();
        extras.networks = networks.into();
        let extras = extras.shared();
        let changed = extras != entry.extras;
        if changed {
            mutations.push(Mutation::Access { id, hash, extras: extras.clone() });
        }
        Ok(Outcome::AccessEdited { id, extras, changed })
    }

    fn revoke_all(
        &self,
        user_id: u32,
        commit_at_us: u64,
        mutations: &mut Vec<Mutation>,
    ) -> Result<Outcome, ErrorCode> {
        let at_us = NonZeroU64::new(commit_at_us).ok_or(ErrorCode::Error)?;
        let before = mutations.len();
        mutations.extend(
            self.state
                .owned_by(user_id)
                .filter(|(_, entry)| entry.revoked_at_us.is_none() && !entry.is_expired(commit_at_us))
                .map(|(hash, entry)| Mutation::Revoke { id: entry.id, hash: *hash, at_us }),
        );
        Ok(Outcome::Count(count(mutations.len() - before)))
    }

    /// Last uses of tokens that are still there under the same hash and not
    /// already recorded as later; nothing is refused.
    fn touch(&self, uses: &[(u64, TokenHash, LastUsed)], mutations: &mut Vec<Mutation>) {
        for &(id, hash, used) in uses {
            let current = self.state.by_hash(&hash).is_some_and(|entry| entry.id == id);
            let newer = self.state.last_used(id).is_none_or(|last| used.at_us > last.at_us);
            if current && newer {
                mutations.push(Mutation::Touch { id, hash, used });
            }
        }
    }

    /// Deletes up to `max` tokens expired at `commit_at_us`, soonest expired
    /// first: from the front of the writer's expiry index, so it costs
    /// O(max · log n), not a scan of every token.
    fn purge_expired(&self, max: usize, commit_at_us: u64, mutations: &mut Vec<Mutation>) -> Outcome {
        let last: &dyn ExpiryKey = &(commit_at_us, u64::MAX);
        let expired: Vec<(u64, TokenHash)> = self
            .expiries
            .range::<dyn ExpiryKey, _>((Bound::Unbounded, Bound::Included(last)))
            .map(|ByExpiry(entry)| (entry.id, entry.hash))
            .take(max)
            .collect();
        debug_assert!(
            expired.iter().all(|(id, hash)| self
                .state
                .by_hash(hash)
                .is_some_and(|entry| entry.id == *id && entry.is_expired(commit_at_us))),
            "the expiry index names only expired tokens of the state"
        );
        mutations.extend(expired.iter().map(|&(id, hash)| Mutation::Delete { id, hash }));
        Outcome::Purged { ids: expired.into_iter().map(|(id, _)| id).collect() }
    }

    /// The caller's token named by `token`: its hash and id.
    fn find(&self, user_id: u32, token: &TokenSelector) -> Result<(TokenHash, u64), ErrorCode> {
        let found = match token {
            TokenSelector::Name(name) => self.state.by_name(user_id, name),
            TokenSelector::Id(id) => self.state.by_user_and_id(user_id, *id),
        };
        found.map(|(hash, entry)| (*hash, entry.id)).ok_or(ErrorCode::ResourceNotFound)
    }

    fn check_fresh(&self, hash: &TokenHash) -> Result<(), ErrorCode> {
        if self.state.by_hash(hash).is_some() {
            // 2^-256: a broken random source, not bad luck.
            tracing::error!("minted token hash already exists; is the OS CSPRNG broken?");
            return Err(ErrorCode::Error);
        }
        Ok(())
    }
}

/// A rotate's parameters beside the token it names.
struct Rotate<'a> {
    new_hash: &'a TokenHash,
    expiry_us: u64,
    max_lifetime_us: Option<u64>,
    reactivate: bool,
}

/// An absolute expiry from a lifetime (0 and `u64::MAX`: never).
fn expiry_at(commit_at_us: u64, lifetime_us: u64) -> Result<Option<NonZeroU64>, ErrorCode> {
    match lifetime_us {
        0 | u64::MAX => Ok(None),
        lifetime => commit_at_us
            .checked_add(lifetime)
            .and_then(NonZeroU64::new)
            .map(Some)
            .ok_or(ErrorCode::InvalidPersonalAccessTokenExpiry),
    }
}

fn count(tokens: usize) -> u32 {
    u32::try_from(tokens).unwrap_or(u32::MAX)
}

/// An entry in the writer's expiry index, ordered by `(expiry_at_us, id)`.
/// Only entries with an expiry go in.
struct ByExpiry(Arc<TokenEntry>);

/// What the expiry index is ordered by, so that it can be searched with a
/// bare `(expiry_at_us, id)` as well as with an entry.
trait ExpiryKey {
    fn expiry_key(&self) -> (u64, u64);
}

impl ExpiryKey for ByExpiry {
    fn expiry_key(&self) -> (u64, u64) {
        (self.0.expiry_at_us.map_or(0, NonZeroU64::get), self.0.id)
    }
}

impl ExpiryKey for (u64, u64) {
    fn expiry_key(&self) -> (u64, u64) {
        *self
    }
}

impl<'a> Borrow<dyn ExpiryKey + 'a> for ByExpiry {
    fn borrow(&self) -> &(dyn ExpiryKey + 'a) {
        self
    }
}

impl Ord for dyn ExpiryKey + '_ {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.expiry_key().cmp(&other.expiry_key())
    }
}

impl PartialOrd for dyn ExpiryKey + '_ {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for dyn ExpiryKey + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.expiry_key() == other.expiry_key()
    }
}

impl Eq for dyn ExpiryKey + '_ {}

impl Ord for ByExpiry {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.expiry_key().cmp(&other.expiry_key())
    }
}

impl PartialOrd for ByExpiry {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for ByExpiry {
    fn eq(&self, other: &Self) -> bool {
        self.expiry_key() == other.expiry_key()
    }
}

impl Eq for ByExpiry {}
