//! The single mutation path.
//!
//! Every create and delete, from any connection or from the cleaner, is sent to one
//! writer thread. It checks each change against its authoritative replica
//! (token limit before duplicate name, as Iggy does), resolves it into a
//! [`Mutation`] with an id and absolute timestamps, makes the batch durable
//! through the [`Journal`], publishes it to the readers through the
//! [`Publish`] hook, and only then answers the callers.
//!
//! Group commit falls out of the loop's shape: while one batch is being
//! synced, new changes queue up in the channel, and the next turn takes all of
//! them (up to [`BATCH_CHANGES_MAX`]) into one journal append and one sync.

use std::io;
use std::num::NonZeroU64;
use std::sync::Arc;
use std::thread::JoinHandle;

use latchkey_protocol::ErrorCode;
use tokio::sync::{mpsc, oneshot};

use crate::clock::now_us;
use latchkey_protocol::ext::TokenSelector;

use crate::registry::{LastUsed, Mutation, Replica, TokenExtras, TokenHash, TokenRecord};

/// Changes committed together at most (one journal append, one sync).
pub const BATCH_CHANGES_MAX: usize = 4096;
/// Changes that may wait for the writer before submitters wait for room.
pub const QUEUE_CHANGES_MAX: usize = 16 * 1024;

/// A change a caller asks for, not yet checked.
#[derive(Debug, Clone)]
pub enum Change {
    /// `expiry_us` is a lifetime: 0 and `u64::MAX` mean never (the caller
    /// has already put the server's default in place of 0 if there is one).
    Create {
        user_id: u32,
        name: String,
        hash: TokenHash,
        expiry_us: u64,
        extras: Option<Arc<TokenExtras>>,
    },
    Delete {
        user_id: u32,
        token: TokenSelector,
    },
    Revoke {
        user_id: u32,
        token: TokenSelector,
    },
    Update {
        user_id: u32,
        token: TokenSelector,
        name: Option<String>,
        description: Option<String>,
    },
    /// `expiry_us`: 0 keeps the current expiry, `u64::MAX` is never, else a
    /// lifetime from the commit.
    Rotate {
        user_id: u32,
        token: TokenSelector,
        new_hash: TokenHash,
        expiry_us: u64,
        /// The policy's maximum lifetime, which a kept expiry must meet too
        /// (the policy may have tightened since the token was made).
        max_lifetime_us: Option<u64>,
    },
    RevokeAll {
        user_id: u32,
    },
    DeleteAll {
        user_id: u32,
    },
    /// Last uses gathered by connections. Entries for tokens that are gone or
    /// were rotated since are dropped; nothing is refused.
    Touch(Vec<(u64, TokenHash, LastUsed)>),
    /// The cleaner's delete: up to `max` tokens that are expired at commit
    /// time, chosen and deleted by id inside the writer, so a token
    /// re-created under an expired token's name is never touched.
    PurgeExpired {
        max: usize,
    },
}

/// What a committed change did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Created(TokenRecord),
    Deleted {
        id: u64,
    },
    /// `at_us` is when it was first revoked (an earlier revoke wins).
    Revoked {
        id: u64,
    },
    Updated {
        id: u64,
    },
    Rotated(TokenRecord),
    /// Tokens affected by a revoke-all or delete-all.
    Count(u32),
    Touched,
    /// Ids deleted by a `PurgeExpired`.
    Purged {
        ids: Vec<u64>,
    },
}

/// Durable storage for committed batches.
pub trait Journal: Send + 'static {
    /// Appends `batch` and returns only once it is on stable storage.
    fn append(&mut self, batch: &[Mutation], commit_at_us: u64) -> io::Result<()>;
    /// Called with the authoritative state after each successful append, so
    /// a journal can decide to compact. The default does nothing.
    fn after_append(&mut self, _state: &Replica, _next_id: u64) -> io::Result<()> {
        Ok(())
    }
}

/// Makes a committed batch visible to every reader; returns once every read
/// that starts from then on sees it.
pub trait Publish: Send + 'static {
    fn publish(&mut self, batch: Arc<[Mutation]>);
}

/// The limits the writer enforces.
#[derive(Debug, Clone, Copy)]
pub struct WriterLimits {
    pub max_tokens_per_user: u32,
}

enum Message {
    Change(Change, oneshot::Sender<Result<Outcome, ErrorCode>>),
    Stop,
}

/// A cheap, cloneable way to submit changes.
#[derive(Clone)]
pub struct WriterHandle {
    sender: mpsc::Sender<Message>,
}

impl WriterHandle {
    /// Submits a change and waits until it is durable and visible to every
    /// reader (or refused). A stopped writer answers `Error`.
    pub async fn submit(&self, change: Change) -> Result<Outcome, ErrorCode> {
        self.enqueue(change).await?.outcome().await
    }

    /// Queues a change (waiting only for room in the queue) and returns the
    /// ticket its outcome will arrive on. Changes are committed in the order
    /// they are queued, each checked against the ones before it.
    pub async fn enqueue(&self, change: Change) -> Result<Ticket, ErrorCode> {
        let (reply, outcome) = oneshot::channel();
        self.sender.send(Message::Change(change, reply)).await.map_err(|_| ErrorCode::Error)?;
        Ok(Ticket(outcome))
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
    state: Replica,
    next_id: u64,
    last_commit_us: u64,
    limits: WriterLimits,
    journal: J,
    publish: P,
    /// Set when the journal failed: after a failed sync the file's contents
    /// are unknown, so no further change is accepted until a restart
    /// re-reads and verifies the log.
    failed: bool,
}

/// The writer's end of its queue, before the writer runs.
pub struct Inbox(mpsc::Receiver<Message>);

/// Creates the queue. Handles can be given out (and changes queued) before
/// the writer starts, so the server can start while the writer waits for its state.
pub fn channel() -> (WriterHandle, Inbox) {
    let (sender, receiver) = mpsc::channel(QUEUE_CHANGES_MAX);
    (WriterHandle { sender }, Inbox(receiver))
}

/// Starts the writer thread. `state` and `next_id` come from log recovery.
/// Joining the thread gives the publisher back, so its owner decides when
/// the readers' registry goes away.
pub fn start<J: Journal, P: Publish>(
    inbox: Inbox,
    state: Replica,
    next_id: u64,
    limits: WriterLimits,
    journal: J,
    publish: P,
) -> JoinHandle<P> {
    let writer = Writer { state, next_id, last_commit_us: 0, limits, journal, publish, failed: false };
    std::thread::Builder::new()
        .name("latchkey-writer".into())
        .spawn(move || writer.run(inbox.0))
        .expect("spawn writer thread")
}

/// [`channel`] and [`start`] in one.
pub fn spawn<J: Journal, P: Publish>(
    state: Replica,
    next_id: u64,
    limits: WriterLimits,
    journal: J,
    publish: P,
) -> (WriterHandle, JoinHandle<P>) {
    let (handle, inbox) = channel();
    (handle, start(inbox, state, next_id, limits, journal, publish))
}

type Pending = (Change, oneshot::Sender<Result<Outcome, ErrorCode>>);

impl<J: Journal, P: Publish> Writer<J, P> {
    fn run(mut self, mut receiver: mpsc::Receiver<Message>) -> P {
        let mut pending: Vec<Pending> = Vec::new();
        let mut stopping = false;
        while !stopping {
            match receiver.blocking_recv() {
                Some(Message::Change(change, reply)) => pending.push((change, reply)),
                Some(Message::Stop) | None => break,
            }
            while pending.len() < BATCH_CHANGES_MAX {
                match receiver.try_recv() {
                    Ok(Message::Change(change, reply)) => pending.push((change, reply)),
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

    fn commit(&mut self, pending: &mut Vec<Pending>) {
        let commit_at_us = now_us().max(self.last_commit_us);
        self.last_commit_us = commit_at_us;
        let mut mutations = Vec::with_capacity(pending.len());
        let mut results = Vec::with_capacity(pending.len());
        for (change, _) in pending.iter() {
            let result = if self.failed {
                Err(ErrorCode::StorageUnavailable)
            } else {
                // Later changes in the same batch are checked against this one:
                // `check` applies what it resolves to the writer's state.
                self.check(change, commit_at_us, &mut mutations)
            };
            results.push(result);
        }
        if !mutations.is_empty() {
            match self.journal.append(&mutations, commit_at_us) {
                Ok(()) => {
                    self.publish.publish(Arc::from(mutations));
                    if let Err(error) = self.journal.after_append(&self.state, self.next_id) {
                        tracing::error!(%error, "log maintenance failed; refusing further changes");
                        self.failed = true;
                    }
                }
                Err(error) => {
                    tracing::error!(%error, "log append failed; refusing further changes until restart");
                    self.failed = true;
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

    /// Resolves a change against the state, applies the resulting mutations
    /// to it and queues them for the journal. A refused change queues nothing.
    fn check(
        &mut self,
        change: &Change,
        commit_at_us: u64,
        mutations: &mut Vec<Mutation>,
    ) -> Result<Outcome, ErrorCode> {
        let mut push = |state: &mut Replica, mutation: Mutation| {
            state.apply(&mutation);
            mutations.push(mutation);
        };
        match change {
            Change::Create { user_id, name, hash, expiry_us, extras } => {
                let limit = self.limits.max_tokens_per_user as usize;
                if self.state.count_for(*user_id) >= limit {
                    return Err(ErrorCode::PersonalAccessTokensLimitReached);
                }
                if self.state.by_name(*user_id, name).is_some() {
                    return Err(ErrorCode::PersonalAccessTokenAlreadyExists);
                }
                let expiry_at_us = expiry_at(commit_at_us, *expiry_us)?;
                self.check_fresh(hash)?;
                let record = TokenRecord {
                    id: self.next_id,
                    user_id: *user_id,
                    name: name.as_str().into(),
                    hash: *hash,
                    created_at_us: commit_at_us,
                    expiry_at_us,
                    revoked_at_us: None,
                    extras: extras.clone(),
                    last_used: None,
                };
                self.next_id += 1;
                push(&mut self.state, Mutation::Create(record.clone()));
                Ok(Outcome::Created(record))
            }
            Change::Delete { user_id, token } => {
                let (hash, id) = self.find(*user_id, token)?;
                push(&mut self.state, Mutation::Delete { id, hash });
                Ok(Outcome::Deleted { id })
            }
            Change::Revoke { user_id, token } => {
                let (hash, id) = self.find(*user_id, token)?;
                let already = self.state.by_hash(&hash).is_some_and(|entry| entry.revoked_at_us.is_some());
                if !already {
                    let at_us = NonZeroU64::new(commit_at_us).ok_or(ErrorCode::Error)?;
                    push(&mut self.state, Mutation::Revoke { id, hash, at_us });
                }
                Ok(Outcome::Revoked { id })
            }
            Change::Update { user_id, token, name, description } => {
                let (hash, id) = self.find(*user_id, token)?;
                let entry = self.state.by_hash(&hash).expect("found above");
                let new_name: Arc<str> = match name {
                    Some(name) if **name != *entry.name => {
                        if self.state.by_name(*user_id, name).is_some() {
                            return Err(ErrorCode::PersonalAccessTokenAlreadyExists);
                        }
                        name.as_str().into()
                    }
                    _ => Arc::clone(&entry.name),
                };
                let extras = match description {
                    Some(description) => {
                        let mut extras = entry.extras.as_deref().cloned().unwrap_or_default();
                        extras.description = description.as_str().into();
                        extras.shared()
                    }
                    None => entry.extras.clone(),
                };
                // Nothing to change: answered, but nothing written.
                if new_name != entry.name || extras != entry.extras {
                    push(&mut self.state, Mutation::Update { id, hash, name: new_name, extras });
                }
                Ok(Outcome::Updated { id })
            }
            Change::Rotate { user_id, token, new_hash, expiry_us, max_lifetime_us } => {
                let (hash, id) = self.find(*user_id, token)?;
                let entry = self.state.by_hash(&hash).expect("found above");
                if entry.revoked_at_us.is_some() {
                    return Err(ErrorCode::PersonalAccessTokenRevoked);
                }
                let expiry_at_us = match *expiry_us {
                    0 => {
                        // Keeping an expiry that has passed would issue a dead secret.
                        if entry.is_expired(commit_at_us) {
                            return Err(ErrorCode::PersonalAccessTokenExpired);
                        }
                        let left_us = entry.expiry_at_us.map(|at| at.get() - commit_at_us);
                        if let Some(max) = max_lifetime_us
                            && left_us.is_none_or(|left| left > *max)
                        {
                            return Err(ErrorCode::LifetimeNotAllowed);
                        }
                        entry.expiry_at_us
                    }
                    lifetime => expiry_at(commit_at_us, lifetime)?,
                };
                self.check_fresh(new_hash)?;
                let mutation = Mutation::Rotate { id, hash, new_hash: *new_hash, expiry_at_us };
                push(&mut self.state, mutation);
                let entry = self.state.by_hash(new_hash).expect("just rotated");
                Ok(Outcome::Rotated(entry.record(new_hash, None)))
            }
            Change::RevokeAll { user_id } => {
                let at_us = NonZeroU64::new(commit_at_us).ok_or(ErrorCode::Error)?;
                let active: Vec<(TokenHash, u64)> = self
                    .state
                    .owned_by(*user_id)
                    .filter(|(_, entry)| entry.revoked_at_us.is_none() && !entry.is_expired(commit_at_us))
                    .map(|(hash, entry)| (*hash, entry.id))
                    .collect();
                for &(hash, id) in &active {
                    push(&mut self.state, Mutation::Revoke { id, hash, at_us });
                }
                Ok(Outcome::Count(count(active.len())))
            }
            Change::DeleteAll { user_id } => {
                let all: Vec<(TokenHash, u64)> =
                    self.state.owned_by(*user_id).map(|(hash, entry)| (*hash, entry.id)).collect();
                for &(hash, id) in &all {
                    push(&mut self.state, Mutation::Delete { id, hash });
                }
                Ok(Outcome::Count(count(all.len())))
            }
            Change::Touch(uses) => {
                for &(id, hash, used) in uses {
                    let current = self.state.by_hash(&hash).is_some_and(|entry| entry.id == id);
                    let newer = self.state.last_used(id).is_none_or(|last| used.at_us > last.at_us);
                    if current && newer {
                        push(&mut self.state, Mutation::Touch { id, hash, used });
                    }
                }
                Ok(Outcome::Touched)
            }
            Change::PurgeExpired { max } => Ok(self.purge_expired(*max, commit_at_us, mutations)),
        }
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

    /// Deletes up to `max` tokens expired at `commit_at_us`. A linear scan of
    /// the writer's replica: it runs once per cleaner interval, and keeping an
    /// expiry index in every replica would cost memory in every copy.
    fn purge_expired(&mut self, max: usize, commit_at_us: u64, mutations: &mut Vec<Mutation>) -> Outcome {
        let expired: Vec<(u64, TokenHash)> = self
            .state
            .iter()
            .filter(|(_, token)| token.is_expired(commit_at_us))
            .map(|(hash, token)| (token.id, *hash))
            .take(max)
            .collect();
        for &(id, hash) in &expired {
            let mutation = Mutation::Delete { id, hash };
            self.state.apply(&mutation);
            mutations.push(mutation);
        }
        Outcome::Purged { ids: expired.into_iter().map(|(id, _)| id).collect() }
    }
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

#[cfg(test)]
mod tests {
    use std::sync::mpsc as std_mpsc;
    use std::time::Duration;

    use super::*;

    /// A journal whose append blocks until the test releases it.
    struct GatedJournal {
        entered: std_mpsc::Sender<usize>,
        release: std_mpsc::Receiver<io::Result<()>>,
    }

    impl Journal for GatedJournal {
        fn append(&mut self, batch: &[Mutation], _commit_at_us: u64) -> io::Result<()> {
            self.entered.send(batch.len()).unwrap();
            self.release.recv().unwrap()
        }
    }

    struct Recorder(std_mpsc::Sender<Arc<[Mutation]>>);

    impl Publish for Recorder {
        fn publish(&mut self, batch: Arc<[Mutation]>) {
            self.0.send(batch).unwrap();
        }
    }

    struct Harness {
        handle: WriterHandle,
        entered: std_mpsc::Receiver<usize>,
        release: std_mpsc::Sender<io::Result<()>>,
        published: std_mpsc::Receiver<Arc<[Mutation]>>,
        runtime: tokio::runtime::Runtime,
    }

    fn harness(max_tokens_per_user: u32) -> Harness {
        let (entered_tx, entered) = std_mpsc::channel();
        let (release, release_rx) = std_mpsc::channel();
        let (published_tx, published) = std_mpsc::channel();
        let journal = GatedJournal { entered: entered_tx, release: release_rx };
        let limits = WriterLimits { max_tokens_per_user };
        let (handle, _join) = spawn(Replica::new(), 1, limits, journal, Recorder(published_tx));
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        Harness { handle, entered, release, published, runtime }
    }

    fn create(user_id: u32, name: &str, seed: u8) -> Change {
        Change::Create { user_id, name: name.into(), hash: [seed; 32], expiry_us: 0, extras: None }
    }

    #[test]
    fn a_change_is_not_acknowledged_before_its_sync_returns() {
        let harness = harness(10);
        let handle = harness.handle.clone();
        let task = harness.runtime.spawn(async move { handle.submit(create(1, "abc", 1)).await });
        assert_eq!(harness.entered.recv_timeout(Duration::from_secs(5)).unwrap(), 1);
        // The journal is blocked in append: nothing may be published or answered.
        std::thread::sleep(Duration::from_millis(50));
        assert!(!task.is_finished(), "acknowledged before the sync returned");
        assert!(harness.published.try_recv().is_err(), "published before the sync returned");
        harness.release.send(Ok(())).unwrap();
        let outcome = harness.runtime.block_on(task).unwrap().unwrap();
        let Outcome::Created(record) = outcome else { panic!("{outcome:?}") };
        assert_eq!(record.id, 1);
        assert_eq!(harness.published.recv().unwrap().len(), 1);
    }

    #[test]
    fn a_failed_sync_is_never_acknowledged_and_stops_further_changes() {
        let harness = harness(10);
        let handle = harness.handle.clone();
        let task = harness.runtime.spawn(async move { handle.submit(create(1, "abc", 1)).await });
        harness.entered.recv().unwrap();
        harness.release.send(Err(io::Error::other("EIO"))).unwrap();
        assert_eq!(harness.runtime.block_on(task).unwrap(), Err(ErrorCode::StorageUnavailable));
        assert!(harness.published.try_recv().is_err());
        // The writer now refuses everything without touching the journal.
        let result = harness.runtime.block_on(harness.handle.submit(create(1, "def", 2)));
        assert_eq!(result, Err(ErrorCode::StorageUnavailable));
        assert!(harness.entered.try_recv().is_err());
    }

    #[test]
    fn limit_is_checked_before_duplicates_and_batches_see_each_other() {
        let harness = harness(2);
        // Release every append at once so the test only sees outcomes.
        for _ in 0..16 {
            harness.release.send(Ok(())).unwrap();
        }
        let submit = |change| harness.runtime.block_on(harness.handle.submit(change));
        assert!(matches!(submit(create(1, "one", 1)), Ok(Outcome::Created(_))));
        assert_eq!(submit(create(1, "one", 2)), Err(ErrorCode::PersonalAccessTokenAlreadyExists));
        assert!(matches!(submit(create(1, "two", 3)), Ok(Outcome::Created(_))));
        assert_eq!(submit(create(1, "one", 4)), Err(ErrorCode::PersonalAccessTokensLimitReached));
        assert_eq!(submit(create(1, "new", 5)), Err(ErrorCode::PersonalAccessTokensLimitReached));
        assert!(matches!(submit(create(2, "one", 6)), Ok(Outcome::Created(_))));
        let deleted = submit(Change::Delete { user_id: 1, token: TokenSelector::Name("one".into()) });
        assert_eq!(deleted, Ok(Outcome::Deleted { id: 1 }));
        assert_eq!(
            submit(Change::Delete { user_id: 1, token: TokenSelector::Name("one".into()) }),
            Err(ErrorCode::ResourceNotFound)
        );
        let overflow = Change::Create {
            user_id: 3,
            name: "x".into(),
            hash: [9; 32],
            expiry_us: u64::MAX - 1,
            extras: None,
        };
        assert_eq!(submit(overflow), Err(ErrorCode::InvalidPersonalAccessTokenExpiry));
    }

    #[test]
    fn purge_deletes_only_expired_tokens_and_never_a_recreated_one() {
        let harness = harness(10);
        for _ in 0..8 {
            harness.release.send(Ok(())).unwrap();
        }
        let submit = |change| harness.runtime.block_on(harness.handle.submit(change));
        let Ok(Outcome::Created(keep)) = submit(create(1, "keep", 1)) else { panic!() };
        let short = |seed| Change::Create {
            user_id: 1,
            name: "short".into(),
            hash: [seed; 32],
            expiry_us: 1,
            extras: None,
        };
        let Ok(Outcome::Created(expired)) = submit(short(2)) else { panic!() };
        std::thread::sleep(Duration::from_millis(2));
        assert_eq!(submit(Change::PurgeExpired { max: 10 }), Ok(Outcome::Purged { ids: vec![expired.id] }));
        // Re-created under the same name, not expired: the next purge leaves it.
        let recreated =
            Change::Create { user_id: 1, name: "short".into(), hash: [3; 32], expiry_us: 0, extras: None };
        let Ok(Outcome::Created(recreated)) = submit(recreated) else { panic!() };
        assert_eq!(submit(Change::PurgeExpired { max: 10 }), Ok(Outcome::Purged { ids: vec![] }));
        assert_ne!(recreated.id, expired.id);
        assert_ne!(keep.id, expired.id);
        let published: Vec<_> = harness.published.try_iter().flat_map(|b| b.to_vec()).collect();
        assert!(published.contains(&Mutation::Delete { id: expired.id, hash: expired.hash }));
        assert!(!published.iter().any(|m| matches!(m, Mutation::Delete { id, .. } if *id == recreated.id)));
    }
}
