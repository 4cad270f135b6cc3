//! The single mutation path.
//!
//! Every create and delete, from any shard or from the cleaner, is sent to one
//! writer thread. It checks each change against its authoritative replica
//! (token limit before duplicate name, as Iggy does), resolves it into a
//! [`Mutation`] with an id and absolute timestamps, makes the batch durable
//! through the [`Journal`], applies it to every shard's replica through the
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
use crate::registry::{Mutation, Replica, TokenHash, TokenRecord};

/// Changes committed together at most (one journal append, one sync).
pub const BATCH_CHANGES_MAX: usize = 4096;
/// Changes that may wait for the writer before submitters wait for room.
pub const QUEUE_CHANGES_MAX: usize = 16 * 1024;

/// A change a caller asks for, not yet checked.
#[derive(Debug, Clone)]
pub enum Change {
    Create {
        user_id: u32,
        name: String,
        hash: TokenHash,
        expiry_us: u64,
    },
    Delete {
        user_id: u32,
        name: String,
    },
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

/// Applies a committed batch to every shard replica; returns once all have.
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
    /// Submits a change and waits until it is durable and visible on every
    /// shard (or refused). A stopped writer answers `Error`.
    pub async fn submit(&self, change: Change) -> Result<Outcome, ErrorCode> {
        let (reply, outcome) = oneshot::channel();
        self.sender.send(Message::Change(change, reply)).await.map_err(|_| ErrorCode::Error)?;
        outcome.await.unwrap_or(Err(ErrorCode::Error))
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
/// the writer starts, so shards can start while it waits for its state.
pub fn channel() -> (WriterHandle, Inbox) {
    let (sender, receiver) = mpsc::channel(QUEUE_CHANGES_MAX);
    (WriterHandle { sender }, Inbox(receiver))
}

/// Starts the writer thread. `state` and `next_id` come from log recovery.
pub fn start<J: Journal, P: Publish>(
    inbox: Inbox,
    state: Replica,
    next_id: u64,
    limits: WriterLimits,
    journal: J,
    publish: P,
) -> JoinHandle<()> {
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
) -> (WriterHandle, JoinHandle<()>) {
    let (handle, inbox) = channel();
    (handle, start(inbox, state, next_id, limits, journal, publish))
}

type Pending = (Change, oneshot::Sender<Result<Outcome, ErrorCode>>);

impl<J: Journal, P: Publish> Writer<J, P> {
    fn run(mut self, mut receiver: mpsc::Receiver<Message>) {
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
    }

    fn commit(&mut self, pending: &mut Vec<Pending>) {
        let commit_at_us = now_us().max(self.last_commit_us);
        self.last_commit_us = commit_at_us;
        let mut mutations = Vec::with_capacity(pending.len());
        let mut results = Vec::with_capacity(pending.len());
        for (change, _) in pending.iter() {
            let result = if self.failed {
                Err(ErrorCode::StorageUnavailable)
            } else if let Change::PurgeExpired { max } = change {
                Ok(self.purge_expired(*max, commit_at_us, &mut mutations))
            } else {
                self.check(change, commit_at_us).map(|(mutation, outcome)| {
                    // Later changes in the same batch are checked against this one.
                    self.state.apply(&mutation);
                    mutations.push(mutation);
                    outcome
                })
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

    fn check(&mut self, change: &Change, commit_at_us: u64) -> Result<(Mutation, Outcome), ErrorCode> {
        match change {
            Change::Create { user_id, name, hash, expiry_us } => {
                let limit = self.limits.max_tokens_per_user as usize;
                if self.state.count_for(*user_id) >= limit {
                    return Err(ErrorCode::PersonalAccessTokensLimitReached);
                }
                if self.state.by_name(*user_id, name).is_some() {
                    return Err(ErrorCode::PersonalAccessTokenAlreadyExists);
                }
                let expiry_at_us = match *expiry_us {
                    0 | u64::MAX => None,
                    duration => Some(
                        commit_at_us
                            .checked_add(duration)
                            .and_then(NonZeroU64::new)
                            .ok_or(ErrorCode::InvalidPersonalAccessTokenExpiry)?,
                    ),
                };
                if self.state.by_hash(hash).is_some() {
                    // 2^-256: a broken random source, not bad luck.
                    tracing::error!("minted token hash already exists; is the OS CSPRNG broken?");
                    return Err(ErrorCode::Error);
                }
                let record = TokenRecord {
                    id: self.next_id,
                    user_id: *user_id,
                    name: name.as_str().into(),
                    hash: *hash,
                    created_at_us: commit_at_us,
                    expiry_at_us,
                };
                self.next_id += 1;
                Ok((Mutation::Create(record.clone()), Outcome::Created(record)))
            }
            Change::Delete { user_id, name } => {
                let (hash, entry) = self.state.by_name(*user_id, name).ok_or(ErrorCode::ResourceNotFound)?;
                let id = entry.id;
                Ok((Mutation::Delete { id, hash: *hash }, Outcome::Deleted { id }))
            }
            Change::PurgeExpired { .. } => unreachable!("handled by purge_expired"),
        }
    }

    /// Deletes up to `max` tokens expired at `commit_at_us`. A linear scan of
    /// the writer's replica: it runs once per cleaner interval, and keeping an
    /// expiry index in every replica would cost memory on every shard.
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
        Change::Create { user_id, name: name.into(), hash: [seed; 32], expiry_us: 0 }
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
        let deleted = submit(Change::Delete { user_id: 1, name: "one".into() });
        assert_eq!(deleted, Ok(Outcome::Deleted { id: 1 }));
        assert_eq!(
            submit(Change::Delete { user_id: 1, name: "one".into() }),
            Err(ErrorCode::ResourceNotFound)
        );
        let overflow =
            Change::Create { user_id: 3, name: "x".into(), hash: [9; 32], expiry_us: u64::MAX - 1 };
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
        let short =
            |seed| Change::Create { user_id: 1, name: "short".into(), hash: [seed; 32], expiry_us: 1 };
        let Ok(Outcome::Created(expired)) = submit(short(2)) else { panic!() };
        std::thread::sleep(Duration::from_millis(2));
        assert_eq!(submit(Change::PurgeExpired { max: 10 }), Ok(Outcome::Purged { ids: vec![expired.id] }));
        // Re-created under the same name, not expired: the next purge leaves it.
        let recreated = Change::Create { user_id: 1, name: "short".into(), hash: [3; 32], expiry_us: 0 };
        let Ok(Outcome::Created(recreated)) = submit(recreated) else { panic!() };
        assert_eq!(submit(Change::PurgeExpired { max: 10 }), Ok(Outcome::Purged { ids: vec![] }));
        assert_ne!(recreated.id, expired.id);
        assert_ne!(keep.id, expired.id);
        let published: Vec<_> = harness.published.try_iter().flat_map(|b| b.to_vec()).collect();
        assert!(published.contains(&Mutation::Delete { id: expired.id, hash: expired.hash }));
        assert!(!published.iter().any(|m| matches!(m, Mutation::Delete { id, .. } if *id == recreated.id)));
    }
}
