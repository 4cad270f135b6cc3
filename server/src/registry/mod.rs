//! The token registry: the data structure every read is answered from, and
//! its lock-free read side.
//!
//! The readers share a `left_right` pair of [`Replica`]s and answer logins
//! and lists from it with no lock. The store's writer owns one more, the
//! authoritative copy it checks changes against. All replicas change only
//! through [`Replica::apply`], fed the same committed [`Mutation`]s in the
//! same order, so they agree. A mutation is fully resolved before it is
//! committed (id, hash, absolute timestamps), so applying it is
//! deterministic: replaying the log rebuilds exactly the state that was
//! acknowledged.
//!
//! **Memory.** Every node of a cluster holds every token, three times over,
//! so a replica holds each token as a pointer to one [`TokenEntry`]
//! allocation that all three share: the writer's replica makes the entries a
//! batch needs and hands them over with it ([`Batch`]), and the readers'
//! replicas take those instead of making their own. An entry never changes
//! in place; a changed token gets a new one.
//!
//! **Reads.** Every worker thread has its own read handle (a thread-local),
//! so a token login or a list is one epoch counter bump on a cache line no
//! other thread writes, then a plain map lookup: no lock, no message, no
//! disk. The writer is the only writer: through [`RegistryPublisher`] it
//! applies each committed batch to the copy nobody reads, swaps the copies,
//! and waits until no reader is left on the old one before it applies the
//! batch there too. After [`Publish::publish`] returns, every read that
//! starts sees the batch, which is when the writer acknowledges it.
//!
//! Must never: hold a read guard across an await point (the closure passed
//! to [`Readers::read`] cannot), or apply anything but committed mutations.
//!
//! Layout: [`token`] holds the values (records, entries, mutations);
//! [`replica`] the [`Replica`] and its indexes; this file the read side and
//! the writer's publishing end; [`uses`] gathers token uses between their
//! hand-over and the store's last-used write.

mod replica;
mod token;
mod uses;

use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use left_right::{ReadHandle, ReadHandleFactory, WriteHandle};

pub use replica::{Batch, Replica};
pub use token::{
    IdHasher, LastUsed, Mutation, TOKEN_NETWORKS_MAX, TOKEN_SCOPES_MAX, TokenEntry, TokenExtras, TokenHash,
    TokenHashHasher, TokenRecord,
};
pub use uses::{UseLedger, Uses, merge_uses};

/// Makes a committed batch visible to every reader; returns once every read
/// that starts from then on sees it. The store's writer calls it after the
/// batch is durable.
pub trait Publish: Send + 'static {
    fn publish(&mut self, batch: Batch);

    /// Replaces the whole registry with `state` (a store that lost track of
    /// its history reloads it); returns once every read that starts sees it.
    fn replace(&mut self, state: Replica);
}

/// Distinguishes registries in one process (tests run several servers) for
/// the thread-local read handles.
static REGISTRY_IDS: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// This thread's read handle on a registry, made on first use.
    static READER: RefCell<Option<(u64, ReadHandle<Replica>)>> = const { RefCell::new(None) };
}

/// The readers' end of the registry: cheap to share, read without locks.
pub struct Readers {
    id: u64,
    factory: ReadHandleFactory<Replica>,
}

/// What the writer hands to the registry pair.
enum RegistryOp {
    /// A committed batch, applied to each copy in turn.
    Batch(Batch),
    /// A whole recovered registry, moved into one copy (start-up only; the
    /// slot is emptied when taken, so the other copy ignores it).
    Load(Option<Box<Replica>>),
}

/// The writer's end of the registry pair.
pub struct RegistryPublisher(WriteHandle<Replica, RegistryOp>);

impl Publish for RegistryPublisher {
    fn publish(&mut self, batch: Batch) {
        self.0.append(RegistryOp::Batch(batch));
        self.0.publish();
    }

    /// Two loads, one per copy, as at start: the first publish moves one
    /// copy into the side nobody reads and swaps; the second fills the other
    /// side (the first load, replayed there, finds its slot empty).
    fn replace(&mut self, state: Replica) {
        let copy = state.clone();
        self.0.append(RegistryOp::Load(Some(Box::new(state))));
        self.0.publish();
        self.0.append(RegistryOp::Load(Some(Box::new(copy))));
        self.0.publish();
    }
}

impl left_right::Absorb<RegistryOp> for Replica {
    fn absorb_first(&mut self, op: &mut RegistryOp, _other: &Self) {
        match op {
            RegistryOp::Batch(batch) => self.apply_batch(batch),
            RegistryOp::Load(slot) => {
                if let Some(loaded) = slot.take() {
                    *self = *loaded;
                }
            }
        }
    }

    /// Called once, on the second publish, for the copy that has not been
    /// loaded yet; [`Readers::new`] loads it right after, in the same
    /// publish, so there is nothing to copy here.
    fn sync_with(&mut self, _first: &Self) {}
}

/// Tokens visited per read by [`Readers::scan`]: a few hundred
/// microseconds of work.
pub const SCAN_SLICE: usize = 4096;

impl Readers {
    /// The readers' end and the writer's end of a registry pair, from two
    /// equal copies of the recovered state (clones of the writer's, sharing
    /// its entries): each is moved into one side of the pair.
    pub fn new(first: Replica, second: Replica) -> (Readers, RegistryPublisher) {
        debug_assert_eq!(first.len(), second.len(), "the two copies must be equal");
        let (mut write, read) = left_right::new::<Replica, RegistryOp>();
        // Before the first publish left-right applies an op to one copy at
        // once; the second publish syncs the other (a no-op, see sync_with)
        // and then absorbs the second Load into it.
        write.append(RegistryOp::Load(Some(Box::new(first))));
        write.publish();
        write.append(RegistryOp::Load(Some(Box::new(second))));
        write.publish();
        let readers = Readers { id: REGISTRY_IDS.fetch_add(1, Ordering::Relaxed), factory: read.factory() };
        (readers, RegistryPublisher(write))
    }

    /// Visits every token, [`SCAN_SLICE`] at a time, each slice inside a
    /// read of its own: a scan of the whole registry (metrics, expiry
    /// warnings) never holds one read for long, so the writer's next
    /// publish, which waits for the readers of the copy it is about to
    /// change, never waits long for it (one read over 1M tokens is tens of
    /// milliseconds). Not a snapshot: a token created or deleted during
    /// the scan may or may not be visited, and one renamed across the
    /// point the scan has reached in its owner's names may be visited
    /// twice or not at all; every other token there throughout is visited
    /// once. Fine for counts that are redone at every scrape; a list for a
    /// client takes one read instead.
    pub fn scan(&self, mut visit: impl FnMut(&TokenEntry)) {
        self.scan_in_slices(SCAN_SLICE, &mut visit);
    }

    fn scan_in_slices(&self, slice: usize, visit: &mut impl FnMut(&TokenEntry)) {
        assert!(slice > 0, "a slice holds at least one token");
        for user_id in self.read(Replica::user_ids) {
            let mut after: Option<Arc<str>> = None;
            while let Some(last) =
                self.read(|replica| replica.visit_slice(user_id, after.as_deref(), slice, visit))
            {
                after = Some(last);
            }
        }
    }

    /// Runs `read` against the registry. The guard cannot outlive the call,
    /// so no await point can hold it and keep the writer waiting.
    pub fn read<R>(&self, read: impl FnOnce(&Replica) -> R) -> R {
        READER.with(|reader| {
            let mut reader = reader.borrow_mut();
            if reader.as_ref().is_none_or(|(registry, _)| *registry != self.id) {
                *reader = Some((self.id, self.factory.handle()));
            }
            let (_, handle) = reader.as_ref().expect("set above");
            // The publisher lives until the runtime is gone (see server/), so
            // the registry is always there to read.
            let guard = handle.enter().expect("the registry outlives every connection");
            read(&guard)
        })
    }
}

#[cfg(test)]
mod tests;
