//! The store: where token changes become durable, in one order.
//!
//! **The seam.** Everything above the store sees it through three things:
//! a [`Change`] asked for (by a command, the cleaner, or the last-use
//! flush), the [`Outcome`] it gets back, and the ordered stream of committed
//! [`Mutation`](crate::registry::Mutation) batches the store publishes to the
//! registry's readers ([`Publish`](crate::registry::Publish)). A backend
//! (today the append-only file; a cluster backend next) implements
//! [`Journal`]; the checks (a name unique per user, the per-user limit, ids
//! never reused, a kept expiry within the policy) are the writer's
//! [`Resolver`](writer::Resolver)'s, written once for every backend.
//!
//! The contract every backend keeps:
//! - **Order.** Changes are checked and committed in the order they were
//!   queued; each is checked against the state every earlier change left,
//!   including earlier changes of the same batch. Every reader applies the
//!   same batches in the same order.
//! - **Committed.** A change counts as committed once [`Journal::append`]
//!   has returned `Ok` for its batch (for the file: written and synced). Only
//!   then is the batch published, and only after the publish returns is any
//!   caller answered. A crash loses only changes nobody was told about.
//! - **Failure.** If an append fails, no change of that batch is answered
//!   as done (`StorageUnavailable`, 20002), nothing of it is published, and
//!   the writer refuses every later change until a restart re-reads and
//!   verifies what is on disk: after a failed sync the file's contents are
//!   unknown.
//!
//! Must never: publish before the append returned, answer before the
//! publish, or let anything but the writer thread change the authoritative
//! state.
//!
//! Layout: [`writer`] (the queue, the group-commit loop, and the rules a
//! change is checked against), then the file backend: [`log`] (the record
//! format, append and sync, when to compact), [`recovery`] (open, replay,
//! repair), `live` (what a replay builds: a registry, or only what the
//! compactor's snapshot needs) and [`compaction`] (the compactor thread and
//! the file swap).

pub mod compaction;
#[cfg(feature = "etcd")]
pub mod etcd;
mod live;
pub mod log;
pub mod recovery;
pub mod writer;

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use latchkey_protocol::ext::{TokenSelector, TokenStatus};

use crate::registry::{LastUsed, Mutation, Replica, TokenExtras, TokenHash, TokenRecord};

pub use compaction::CompactionPolicy;
pub use log::TokenLog;
pub use recovery::{Damage, Inspection, LogError, Recovered, inspect, open, read_file};
pub use writer::{Inbox, Origin, StoreLimits, Ticket, WriterHandle};

/// A change a caller asks for, not yet checked.
#[derive(Debug, Clone)]
pub enum Change {
    /// `expiry_us` is a lifetime: 0 and `u64::MAX` mean never (the caller
    /// has already put the server's default in place of 0 if there is one).
    Create(NewToken),
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
        /// A revoked token may be rotated, and is active again after it:
        /// asked for explicitly (9105's flag), never implied.
        reactivate: bool,
    },
    /// Edits of a token's scopes and networks, applied in order to what the
    /// token has at commit. Each item was checked by the command (grammar,
    /// and that the session may grant an added scope); the rules that need
    /// the token are the writer's.
    EditAccess {
        user_id: u32,
        token: TokenSelector,
        edits: Vec<AccessChange>,
        /// Whether the edit may leave a token that had scopes with none,
        /// which is full access: false for a session that is itself scoped,
        /// as such a session may not create a full-access token either.
        may_grant_full_access: bool,
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
    /// A consistent copy of every token, for an online backup: a whole
    /// compacted log file (`log::encode_snapshot`) of the state after every
    /// change queued before it, answered once those are durable.
    Snapshot,
    /// The cleaner's delete: up to `max` tokens that are expired at commit
    /// time, chosen and deleted by id inside the writer, so a token
    /// re-created under an expired token's name is never touched.
    PurgeExpired {
        max: usize,
    },
}

/// One checked edit of a token's access ([`Change::EditAccess`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessChange {
    /// A valid scope (`latchkey_protocol::scope::validate_granted`).
    AddScope(Box<str>),
    RemoveScope(Box<str>),
    ClearScopes,
    /// A network in its normal form (`auth::policy::parse_network`).
    AddNetwork(IpNet),
    RemoveNetwork(IpNet),
    ClearNetworks,
}

/// A token to create. `expiry_us` is a lifetime: 0 and `u64::MAX` mean
/// never (the caller has already put the server's default in place of 0 if
/// there is one).
#[derive(Debug, Clone)]
pub struct NewToken {
    pub user_id: u32,
    pub name: String,
    pub hash: TokenHash,
    pub expiry_us: u64,
    pub extras: Option<Arc<TokenExtras>>,
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
    /// An access edit: the token's extras after it (scopes and networks as
    /// they now are), and whether they changed; nothing is written when
    /// they did not.
    AccessEdited {
        id: u64,
        extras: Option<Arc<TokenExtras>>,
        changed: bool,
    },
    /// A rotate: the token with its new hash and expiry, and its status
    /// just before (a rotate of a revoked or expired token brings it back).
    Rotated {
        record: TokenRecord,
        was: TokenStatus,
    },
    /// Tokens affected by a revoke-all or delete-all.
    Count(u32),
    Touched,
    /// Ids deleted by a `PurgeExpired`.
    Purged {
        ids: Vec<u64>,
    },
    /// A `Snapshot`: the file's bytes and how many tokens it holds.
    Snapshot {
        file: Vec<u8>,
        tokens: u64,
    },
}

/// Exit code of a server whose writer thread died.
pub const EXIT_WRITER_DIED: i32 = 70;

/// Runs a writer thread's body. The writer is what makes every change
/// durable and visible: if it panics, the server cannot serve honestly (every
/// registry read would panic after it), so the whole process stops at once,
/// with one clear line, for a supervisor to restart it; replay decides what
/// survived. Nothing acknowledged is lost: an answer is sent only after the
/// change is durable.
pub(crate) fn exit_if_it_panics<T>(thread: &'static str, body: impl FnOnce() -> T) -> T {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)) {
        Ok(value) => value,
        Err(payload) => {
            let message = payload
                .downcast_ref::<&str>()
                .map(|text| (*text).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            tracing::error!(
                thread,
                %message,
                code = EXIT_WRITER_DIED,
                "the {thread} thread died; stopping the server so a supervisor restarts it (replay decides what survived)"
            );
            std::process::exit(EXIT_WRITER_DIED);
        }
    }
}

/// How current this node's registry is known to be. A shared store (etcd)
/// reports every time it hears from the cluster; past `max_staleness` of
/// silence the node may be missing a revocation, so token logins and
/// Authorize fail closed (20002) until it hears again. The file backend is
/// the truth itself and never stale.
pub struct Freshness {
    started: Instant,
    /// Milliseconds after `started` of the last word from the store.
    heard_at_ms: AtomicU64,
    /// Zero: never stale.
    max_staleness: Duration,
    /// Whether the node is refusing now (for one log line per change).
    refusing: AtomicBool,
}

impl Freshness {
    /// Never stale: for a store that is its own truth.
    pub fn always() -> Freshness {
        Freshness::new(Duration::ZERO)
    }

    pub fn new(max_staleness: Duration) -> Freshness {
        Freshness {
            started: Instant::now(),
            heard_at_ms: AtomicU64::new(0),
            max_staleness,
            refusing: AtomicBool::new(false),
        }
    }

    /// The store has just confirmed the registry is current.
    pub fn heard(&self) {
        let now_ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.heard_at_ms.fetch_max(now_ms, Ordering::Relaxed);
    }

    /// How long the store has been silent past `max_staleness`, if it has:
    /// the readiness probe's view, which logs nothing.
    pub fn stale_by(&self) -> Option<Duration> {
        if self.max_staleness.is_zero() {
            return None;
        }
        let silent = self
            .started
            .elapsed()
            .saturating_sub(Duration::from_millis(self.heard_at_ms.load(Ordering::Relaxed)));
        silent.checked_sub(self.max_staleness).filter(|past| !past.is_zero())
    }

    /// `Ok` while the registry may be trusted for token checks; else
    /// `StorageUnavailable`, said once in the log at each change of state.
    pub fn check(&self) -> Result<(), latchkey_protocol::ErrorCode> {
        if self.max_staleness.is_zero() {
            return Ok(());
        }
        let silent = self
            .started
            .elapsed()
            .saturating_sub(Duration::from_millis(self.heard_at_ms.load(Ordering::Relaxed)));
        let stale = silent > self.max_staleness;
        if self.refusing.swap(stale, Ordering::Relaxed) != stale {
            if stale {
                tracing::error!(silent_ms = silent.as_millis() as u64, max_staleness = ?self.max_staleness,
                    "no word from the store for longer than max_staleness: refusing token logins and Authorize (20002) until it catches up");
            } else {
                tracing::warn!("the store caught up: token logins and Authorize served again");
            }
        }
        if stale { Err(latchkey_protocol::ErrorCode::StorageUnavailable) } else { Ok(()) }
    }
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

#[cfg(test)]
mod live_tests;
#[cfg(test)]
mod log_tests;
#[cfg(test)]
mod power_loss_tests;
#[cfg(test)]
mod writer_tests;
