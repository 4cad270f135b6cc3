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
//! Layout: [`token`] holds the values (records, entries, mutations); this
//! file the [`Replica`] and the read side; [`uses`] gathers token uses
//! between their hand-over and the store's last-used write.

mod token;
mod uses;

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, btree_map};
use std::hash::BuildHasherDefault;
use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use left_right::{ReadHandle, ReadHandleFactory, WriteHandle};

pub use token::{
    LastUsed, Mutation, TOKEN_NETWORKS_MAX, TOKEN_SCOPES_MAX, TokenEntry, TokenExtras, TokenHash,
    TokenHashHasher, TokenRecord,
};
pub use uses::{UseLedger, Uses, merge_uses};

type ByHash = HashMap<TokenHash, TokenEntry, BuildHasherDefault<TokenHashHasher>>;

/// One replica: tokens by hash (the login lookup), and per user by name.
/// Memory matters here (three copies: the readers' two and the writer's):
/// there is no id index, and
/// names are shared `Arc<str>`s.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Replica {
    by_hash: ByHash,
    /// Per user, name → hash; ordered so lists come out sorted by name.
    by_user: HashMap<u32, BTreeMap<Arc<str>, TokenHash>>,
    /// Last use by token id, for tokens that have been used (kept across
    /// a rotation: the id stays).
    last_used: HashMap<u64, LastUsed>,
}

impl Replica {
    pub fn new() -> Replica {
        Replica::default()
    }

    /// Applies a committed mutation. Committed mutations were checked by the
    /// writer against the same state, so a conflict here means replicas have
    /// diverged: that would corrupt answers, so it stops the process.
    pub fn apply(&mut self, mutation: &Mutation) {
        if let Err(conflict) = self.try_apply(mutation) {
            panic!("replica diverged: {conflict}");
        }
    }

    /// Applies a mutation if it fits the state, and changes nothing if it
    /// does not (log replay turns that into a corruption report). Each index
    /// is searched once.
    pub fn try_apply(&mut self, mutation: &Mutation) -> Result<(), String> {
        match mutation {
            Mutation::Create(record) => {
                if self.by_hash.contains_key(&record.hash) {
                    return Err(format!("create of token id {}: its hash exists", record.id));
                }
                let names = self.by_user.entry(record.user_id).or_default();
                match names.entry(Arc::clone(&record.name)) {
                    btree_map::Entry::Vacant(slot) => {
                        slot.insert(record.hash);
                    }
                    btree_map::Entry::Occupied(_) => {
                        return Err(format!(
                            "create of token id {}: user {} already has a token named {:?}",
                            record.id, record.user_id, record.name
                        ));
                    }
                }
                self.by_hash.insert(record.hash, record.entry());
                if let Some(used) = record.last_used {
                    self.last_used.insert(record.id, used);
                }
                Ok(())
            }
            Mutation::Delete { id, hash } => {
                let entry = self.take(*id, hash, "delete")?;
                let names = self.by_user.get_mut(&entry.user_id).expect("user index in sync");
                names.remove(&entry.name);
                if names.is_empty() {
                    self.by_user.remove(&entry.user_id);
                }
                self.last_used.remove(id);
                Ok(())
            }
            Mutation::Revoke { id, hash, at_us } => {
                let entry = self.entry_mut(*id, hash, "revoke")?;
                entry.revoked_at_us.get_or_insert(*at_us);
                Ok(())
            }
            Mutation::Update { id, hash, name, extras } => {
                let entry = self.entry(*id, hash, "update")?;
                let (user_id, old_name) = (entry.user_id, Arc::clone(&entry.name));
                let names = self.by_user.get_mut(&user_id).expect("user index in sync");
                if *name != old_name {
                    if names.contains_key(name) {
                        return Err(format!(
                            "rename of token id {id}: user {user_id} has a token named {name:?}"
                        ));
                    }
                    names.remove(&old_name);
                    names.insert(Arc::clone(name), *hash);
                }
                let entry = self.by_hash.get_mut(hash).expect("checked above");
                entry.name = Arc::clone(name);
                entry.extras = extras.clone();
                Ok(())
            }
            Mutation::Access { id, hash, extras } => {
                let entry = self.entry_mut(*id, hash, "access edit")?;
                entry.extras = extras.clone();
                Ok(())
            }
            Mutation::Rotate { id, hash, new_hash, expiry_at_us }
            | Mutation::Reactivate { id, hash, new_hash, expiry_at_us } => {
                let what =
                    if matches!(mutation, Mutation::Rotate { .. }) { "rotate" } else { "reactivation" };
                if self.by_hash.contains_key(new_hash) {
                    return Err(format!("{what} of token id {id}: the new hash exists"));
                }
                let mut entry = self.take(*id, hash, what)?;
                entry.expiry_at_us = *expiry_at_us;
                if matches!(mutation, Mutation::Reactivate { .. }) {
                    entry.revoked_at_us = None;
                }
                let names = self.by_user.get_mut(&entry.user_id).expect("user index in sync");
                *names.get_mut(&entry.name).expect("name index in sync") = *new_hash;
                self.by_hash.insert(*new_hash, entry);
                Ok(())
            }
            Mutation::Touch { id, hash, used } => {
                self.entry(*id, hash, "last-used update")?;
                let slot = self.last_used.entry(*id).or_insert(*used);
                if used.at_us >= slot.at_us {
                    *slot = *used;
                }
                Ok(())
            }
        }
    }

    fn entry(&self, id: u64, hash: &TokenHash, what: &str) -> Result<&TokenEntry, String> {
        match self.by_hash.get(hash) {
            Some(entry) if entry.id == id => Ok(entry),
            _ => Err(format!("{what} of unknown token id {id}")),
        }
    }

    fn entry_mut(&mut self, id: u64, hash: &TokenHash, what: &str) -> Result<&mut TokenEntry, String> {
        match self.by_hash.get_mut(hash) {
            Some(entry) if entry.id == id => Ok(entry),
            _ => Err(format!("{what} of unknown token id {id}")),
        }
    }

    fn take(&mut self, id: u64, hash: &TokenHash, what: &str) -> Result<TokenEntry, String> {
        self.entry(id, hash, what)?;
        Ok(self.by_hash.remove(hash).expect("checked above"))
    }

    pub fn by_hash(&self, hash: &TokenHash) -> Option<&TokenEntry> {
        self.by_hash.get(hash)
    }

    /// `user_id`'s token called `name`, with its hash.
    pub fn by_name(&self, user_id: u32, name: &str) -> Option<(&TokenHash, &TokenEntry)> {
        let hash = self.by_user.get(&user_id)?.get(name)?;
        self.by_hash.get_key_value(hash)
    }

    /// Whether a token with this id exists. A scan, for tests only.
    #[cfg(test)]
    pub fn contains_id(&self, id: u64) -> bool {
        self.by_hash.values().any(|entry| entry.id == id)
    }

    /// `user_id`'s token with this id, with its hash: a scan of that user's
    /// tokens (at most `max_tokens_per_user`).
    pub fn by_user_and_id(&self, user_id: u32, id: u64) -> Option<(&TokenHash, &TokenEntry)> {
        self.by_user
            .get(&user_id)?
            .values()
            .filter_map(|hash| self.by_hash.get_key_value(hash))
            .find(|(_, entry)| entry.id == id)
    }

    /// `user_id`'s tokens with their hashes, sorted by name.
    pub fn owned_by(&self, user_id: u32) -> impl Iterator<Item = (&TokenHash, &TokenEntry)> {
        self.by_user
            .get(&user_id)
            .into_iter()
            .flat_map(|names| names.values())
            .filter_map(|hash| self.by_hash.get_key_value(hash))
    }

    /// The last recorded use of a token, if any.
    pub fn last_used(&self, id: u64) -> Option<LastUsed> {
        self.last_used.get(&id).copied()
    }

    /// Tokens `user_id` holds, expired ones included.
    pub fn count_for(&self, user_id: u32) -> usize {
        self.by_user.get(&user_id).map_or(0, BTreeMap::len)
    }

    /// `user_id`'s tokens, sorted by name.
    pub fn list_for(&self, user_id: u32) -> impl Iterator<Item = &TokenEntry> {
        self.by_user
            .get(&user_id)
            .into_iter()
            .flat_map(|names| names.values())
            .filter_map(|hash| self.by_hash.get(hash))
    }

    /// Every user holding a token, in id order.
    pub fn user_ids(&self) -> Vec<u32> {
        let mut users: Vec<u32> = self.by_user.keys().copied().collect();
        users.sort_unstable();
        users
    }

    /// Visits up to `max` of `user_id`'s tokens whose names sort after
    /// `after` (all of them for `None`), in name order. Returns the last
    /// name visited when `max` were: more may follow it.
    pub fn visit_slice(
        &self,
        user_id: u32,
        after: Option<&str>,
        max: usize,
        visit: &mut impl FnMut(&TokenEntry),
    ) -> Option<Arc<str>> {
        let names = self.by_user.get(&user_id)?;
        let lower = after.map_or(Bound::Unbounded, Bound::Excluded);
        let mut visited = 0;
        let mut last = None;
        for (name, hash) in names.range::<str, _>((lower, Bound::Unbounded)).take(max) {
            if let Some(entry) = self.by_hash.get(hash) {
                visit(entry);
            }
            visited += 1;
            last = Some(name);
        }
        (visited == max).then(|| Arc::clone(last.expect("max is not zero")))
    }

    /// Every token with its hash, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&TokenHash, &TokenEntry)> {
        self.by_hash.iter()
    }

    /// Every token as a full record, last use included (compaction snapshots).
    pub fn records(&self) -> impl Iterator<Item = TokenRecord> + '_ {
        self.by_hash.iter().map(|(hash, entry)| entry.record(hash, self.last_used(entry.id)))
    }

    pub fn len(&self) -> usize {
        self.by_hash.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }
}

/// Makes a committed batch visible to every reader; returns once every read
/// that starts from then on sees it. The store's writer calls it after the
/// batch is durable.
pub trait Publish: Send + 'static {
    fn publish(&mut self, batch: Arc<[Mutation]>);

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
    Batch(Arc<[Mutation]>),
    /// A whole recovered registry, moved into one copy (start-up only; the
    /// slot is emptied when taken, so the other copy ignores it).
    Load(Option<Box<Replica>>),
}

/// The writer's end of the registry pair.
pub struct RegistryPublisher(WriteHandle<Replica, RegistryOp>);

impl Publish for RegistryPublisher {
    fn publish(&mut self, batch: Arc<[Mutation]>) {
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
            RegistryOp::Batch(batch) => {
                for mutation in batch.iter() {
                    self.apply(mutation);
                }
            }
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
    /// equal copies of the recovered state (the caller makes them in
    /// parallel): each is moved into one side of the pair, nothing is cloned.
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
    /// the scan may or may not be visited; every token there throughout is
    /// visited once.
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
