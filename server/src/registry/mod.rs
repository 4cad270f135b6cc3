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
//! Layout: [`token`] holds the values (records, entries, mutations); this
//! file the [`Replica`] and the read side; [`uses`] gathers token uses
//! between their hand-over and the store's last-used write.

mod token;
mod uses;

use std::borrow::Borrow;
use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use left_right::{ReadHandle, ReadHandleFactory, WriteHandle};

pub use token::{
    LastUsed, Mutation, TOKEN_NETWORKS_MAX, TOKEN_SCOPES_MAX, TokenEntry, TokenExtras, TokenHash,
    TokenHashHasher, TokenRecord,
};
pub use uses::{UseLedger, Uses, merge_uses};

/// The login index: each token's one entry, found by its hash.
type ByHash = HashSet<HashKeyed, BuildHasherDefault<TokenHashHasher>>;

/// An entry in the login index: hashed and compared by its token hash
/// alone, so the set is looked up with a bare [`TokenHash`].
#[derive(Debug, Clone)]
struct HashKeyed(Arc<TokenEntry>);

impl Borrow<TokenHash> for HashKeyed {
    fn borrow(&self) -> &TokenHash {
        &self.0.hash
    }
}

impl Hash for HashKeyed {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.hash.hash(state);
    }
}

impl PartialEq for HashKeyed {
    fn eq(&self, other: &HashKeyed) -> bool {
        self.0.hash == other.0.hash
    }
}

impl Eq for HashKeyed {}

/// An entry in a user's name index: ordered and compared by its name
/// alone, so the set is looked up and ranged over with a bare `str`.
#[derive(Debug, Clone)]
struct NameKeyed(Arc<TokenEntry>);

impl Borrow<str> for NameKeyed {
    fn borrow(&self) -> &str {
        &self.0.name
    }
}

impl Ord for NameKeyed {
    fn cmp(&self, other: &NameKeyed) -> std::cmp::Ordering {
        self.0.name.cmp(&other.0.name)
    }
}

impl PartialOrd for NameKeyed {
    fn partial_cmp(&self, other: &NameKeyed) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for NameKeyed {
    fn eq(&self, other: &NameKeyed) -> bool {
        self.0.name == other.0.name
    }
}

impl Eq for NameKeyed {}

/// Where a replica gets the entries a mutation makes.
enum Entries<'a> {
    /// Makes them, and hands each to `made` when there is one (the
    /// writer's copy, which the readers' copies then share).
    Make(Option<&'a mut Vec<Arc<TokenEntry>>>),
    /// Takes them, in order, from what the writer's copy made for the same
    /// mutations.
    Share(std::slice::Iter<'a, Arc<TokenEntry>>),
}

impl Entries<'_> {
    fn next(&mut self, make: impl FnOnce() -> TokenEntry) -> Arc<TokenEntry> {
        match self {
            Entries::Make(made) => {
                let entry = Arc::new(make());
                if let Some(made) = made {
                    made.push(Arc::clone(&entry));
                }
                entry
            }
            Entries::Share(made) => {
                let entry = made.next().expect("replica diverged: the batch made fewer entries");
                debug_assert_eq!(**entry, make(), "replica diverged: a shared entry differs");
                Arc::clone(entry)
            }
        }
    }

    /// Takes back the entry [`Entries::next`] just made, when the change
    /// turned out not to fit after all. Only a replica that makes its own
    /// entries can meet a change that does not fit: in the others that is a
    /// divergence, which stops the process.
    fn unmake(&mut self) {
        if let Entries::Make(Some(made)) = self {
            made.pop();
        }
    }
}

/// One replica: tokens by hash (the login lookup), and per user by name.
/// Memory matters here (three replicas: the readers' two and the
/// writer's): each token is one [`TokenEntry`] allocation shared by every
/// replica, and each index holds a pointer to it, nothing more. There is
/// no id index.
#[derive(Debug, Default, Clone)]
pub struct Replica {
    by_hash: ByHash,
    /// Per user, the tokens ordered by name, so lists come out sorted.
    by_user: HashMap<u32, BTreeSet<NameKeyed>>,
    /// Last use by token id, for tokens that have been used (kept across
    /// a rotation: the id stays).
    last_used: HashMap<u64, LastUsed>,
}

/// Equal when they hold the same tokens (whole entries compared, not only
/// their keys) and the same last uses.
impl PartialEq for Replica {
    fn eq(&self, other: &Replica) -> bool {
        let same_names = |(user_id, names): (&u32, &BTreeSet<NameKeyed>)| {
            other.by_user.get(user_id).is_some_and(|theirs| {
                names.len() == theirs.len() && names.iter().zip(theirs).all(|(a, b)| a.0 == b.0)
            })
        };
        self.by_hash.len() == other.by_hash.len()
            && self.by_hash.iter().all(|entry| other.by_hash(&entry.0.hash) == Some(&*entry.0))
            && self.by_user.len() == other.by_user.len()
            && self.by_user.iter().all(same_names)
            && self.last_used == other.last_used
    }
}

impl Eq for Replica {}

impl Replica {
    pub fn new() -> Replica {
        Replica::default()
    }

    /// An empty replica whose login index holds `tokens` without growing.
    pub fn with_capacity(tokens: usize) -> Replica {
        Replica {
            by_hash: ByHash::with_capacity_and_hasher(tokens, Default::default()),
            ..Replica::default()
        }
    }

    /// Gives back the login index's room beyond what twice its tokens need
    /// (a replay sized it for its file, which may hold far fewer tokens).
    pub fn trim(&mut self) {
        if self.by_hash.capacity() > 2 * self.by_hash.len() {
            self.by_hash.shrink_to_fit();
        }
    }

    /// Applies a committed mutation. Committed mutations were checked by the
    /// writer against the same state, so a conflict here means replicas have
    /// diverged: that would corrupt answers, so it stops the process.
    pub fn apply(&mut self, mutation: &Mutation) {
        if let Err(conflict) = self.try_apply_from(mutation, &mut Entries::Make(None)) {
            panic!("replica diverged: {conflict}");
        }
    }

    /// [`Replica::apply`], handing every entry it makes to `made`, for
    /// [`Batch`].
    pub fn apply_making(&mut self, mutation: &Mutation, made: &mut Vec<Arc<TokenEntry>>) {
        if let Err(conflict) = self.try_apply_from(mutation, &mut Entries::Make(Some(made))) {
            panic!("replica diverged: {conflict}");
        }
    }

    /// Applies a batch another replica applied first, sharing the entries
    /// it made instead of making equal ones.
    fn apply_batch(&mut self, batch: &Batch) {
        let mut entries = Entries::Share(batch.made.iter());
        for mutation in batch.mutations.iter() {
            if let Err(conflict) = self.try_apply_from(mutation, &mut entries) {
                panic!("replica diverged: {conflict}");
            }
        }
        if let Entries::Share(mut rest) = entries {
            assert!(rest.next().is_none(), "replica diverged: the batch made more entries");
        }
    }

    /// Applies a mutation if it fits the state, and changes nothing if it
    /// does not (log replay turns that into a corruption report). Each index
    /// is searched once.
    pub fn try_apply(&mut self, mutation: &Mutation) -> Result<(), String> {
        self.try_apply_from(mutation, &mut Entries::Make(None))
    }

    /// [`Replica::try_apply`] of a create, without wrapping the record in
    /// a mutation (a replay's creates, millions of them).
    pub fn try_create(&mut self, record: &TokenRecord) -> Result<(), String> {
        self.create(record, &mut Entries::Make(None))
    }

    fn create(&mut self, record: &TokenRecord, entries: &mut Entries<'_>) -> Result<(), String> {
        if self.by_hash.contains(&record.hash) {
            return Err(format!("create of token id {}: its hash exists", record.id));
        }
        // The name index is searched once: the insert is the check (a
        // replay makes millions of these).
        let entry = entries.next(|| record.entry());
        let names = self.by_user.entry(record.user_id).or_default();
        if !names.insert(NameKeyed(Arc::clone(&entry))) {
            entries.unmake();
            return Err(format!(
                "create of token id {}: user {} already has a token named {:?}",
                record.id, record.user_id, record.name
            ));
        }
        self.by_hash.insert(HashKeyed(entry));
        if let Some(used) = record.last_used {
            self.last_used.insert(record.id, used);
        }
        Ok(())
    }

    /// The one place a mutation changes a replica. An entry is never changed
    /// in place (other replicas share it): a changed token gets a new entry
    /// from `entries`, taken only once the change is known to fit.
    fn try_apply_from(&mut self, mutation: &Mutation, entries: &mut Entries<'_>) -> Result<(), String> {
        match mutation {
            Mutation::Create(record) => self.create(record, entries),
            Mutation::Delete { id, hash } => {
                let entry = self.take(*id, hash, "delete")?;
                let names = self.by_user.get_mut(&entry.user_id).expect("user index in sync");
                names.remove(&*entry.name);
                if names.is_empty() {
                    self.by_user.remove(&entry.user_id);
                }
                self.last_used.remove(id);
                Ok(())
            }
            Mutation::Revoke { id, hash, at_us } => {
                let entry = self.entry(*id, hash, "revoke")?;
                // The first revocation's time is kept.
                if entry.revoked_at_us.is_none() {
                    let revoked =
                        entries.next(|| TokenEntry { revoked_at_us: Some(*at_us), ..entry.clone() });
                    self.put(revoked);
                }
                Ok(())
            }
            Mutation::Update { id, hash, name, extras } => {
                let entry = self.entry(*id, hash, "update")?;
                let user_id = entry.user_id;
                if **name != *entry.name && self.by_name(user_id, name).is_some() {
                    return Err(format!(
                        "rename of token id {id}: user {user_id} has a token named {name:?}"
                    ));
                }
                let old_name = Arc::clone(&entry.name);
                let updated = entries.next(|| TokenEntry {
                    name: Arc::clone(name),
                    extras: extras.clone(),
                    ..entry.clone()
                });
                let names = self.by_user.get_mut(&user_id).expect("user index in sync");
                names.remove(&*old_name);
                names.insert(NameKeyed(Arc::clone(&updated)));
                self.by_hash.replace(HashKeyed(updated));
                Ok(())
            }
            Mutation::Access { id, hash, extras } => {
                let entry = self.entry(*id, hash, "access edit")?;
                let edited = entries.next(|| TokenEntry { extras: extras.clone(), ..entry.clone() });
                self.put(edited);
                Ok(())
            }
            Mutation::Rotate { id, hash, new_hash, expiry_at_us }
            | Mutation::Reactivate { id, hash, new_hash, expiry_at_us } => {
                let reactivate = matches!(mutation, Mutation::Reactivate { .. });
                let what = if reactivate { "reactivation" } else { "rotate" };
                if self.by_hash.contains(new_hash) {
                    return Err(format!("{what} of token id {id}: the new hash exists"));
                }
                let entry = self.take(*id, hash, what)?;
                let rotated = entries.next(|| TokenEntry {
                    hash: *new_hash,
                    expiry_at_us: *expiry_at_us,
                    revoked_at_us: if reactivate { None } else { entry.revoked_at_us },
                    ..(*entry).clone()
                });
                self.put(rotated);
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

    /// Puts `entry` in both indexes, in place of the entry with its hash
    /// and of the one with its owner and name.
    fn put(&mut self, entry: Arc<TokenEntry>) {
        let names = self.by_user.get_mut(&entry.user_id).expect("user index in sync");
        names.replace(NameKeyed(Arc::clone(&entry)));
        self.by_hash.replace(HashKeyed(entry));
    }

    fn entry(&self, id: u64, hash: &TokenHash, what: &str) -> Result<&TokenEntry, String> {
        match self.by_hash(hash) {
            Some(entry) if entry.id == id => Ok(entry),
            _ => Err(format!("{what} of unknown token id {id}")),
        }
    }

    /// Takes the entry out of the login index (the name index still has it).
    fn take(&mut self, id: u64, hash: &TokenHash, what: &str) -> Result<Arc<TokenEntry>, String> {
        self.entry(id, hash, what)?;
        Ok(self.by_hash.take(hash).expect("checked above").0)
    }

    /// The entry itself, for an index of the writer's that points at it
    /// too.
    pub fn shared(&self, hash: &TokenHash) -> Option<&Arc<TokenEntry>> {
        self.by_hash.get(hash).map(|entry| &entry.0)
    }

    pub fn by_hash(&self, hash: &TokenHash) -> Option<&TokenEntry> {
        self.by_hash.get(hash).map(|entry| &*entry.0)
    }

    /// `user_id`'s token called `name`, with its hash.
    pub fn by_name(&self, user_id: u32, name: &str) -> Option<(&TokenHash, &TokenEntry)> {
        let entry = self.by_user.get(&user_id)?.get(name)?;
        Some((&entry.0.hash, &entry.0))
    }

    /// Whether a token with this id exists. A scan, for tests only.
    #[cfg(test)]
    pub fn contains_id(&self, id: u64) -> bool {
        self.by_hash.iter().any(|entry| entry.0.id == id)
    }

    /// `user_id`'s token with this id, with its hash: a scan of that user's
    /// tokens (at most `max_tokens_per_user`).
    pub fn by_user_and_id(&self, user_id: u32, id: u64) -> Option<(&TokenHash, &TokenEntry)> {
        self.owned_by(user_id).find(|(_, entry)| entry.id == id)
    }

    /// `user_id`'s tokens with their hashes, sorted by name.
    pub fn owned_by(&self, user_id: u32) -> impl Iterator<Item = (&TokenHash, &TokenEntry)> {
        self.list_for(user_id).map(|entry| (&entry.hash, entry))
    }

    /// The last recorded use of a token, if any.
    pub fn last_used(&self, id: u64) -> Option<LastUsed> {
        self.last_used.get(&id).copied()
    }

    /// Tokens `user_id` holds, expired ones included.
    pub fn count_for(&self, user_id: u32) -> usize {
        self.by_user.get(&user_id).map_or(0, BTreeSet::len)
    }

    /// `user_id`'s tokens, sorted by name.
    pub fn list_for(&self, user_id: u32) -> impl Iterator<Item = &TokenEntry> {
        self.by_user.get(&user_id).into_iter().flatten().map(|entry| &*entry.0)
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
        for entry in names.range::<str, _>((lower, Bound::Unbounded)).take(max) {
            visit(&entry.0);
            visited += 1;
            last = Some(&entry.0.name);
        }
        (visited == max).then(|| Arc::clone(last.expect("max is not zero")))
    }

    /// Every token's entry itself, in no particular order (for an index of
    /// the writer's that points at them too).
    pub fn entries(&self) -> impl Iterator<Item = &Arc<TokenEntry>> {
        self.by_hash.iter().map(|entry| &entry.0)
    }

    /// Every token with its hash, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&TokenHash, &TokenEntry)> {
        self.by_hash.iter().map(|entry| (&entry.0.hash, &*entry.0))
    }

    /// Every token as a full record, last use included (compaction snapshots).
    pub fn records(&self) -> impl Iterator<Item = TokenRecord> + '_ {
        self.iter().map(|(hash, entry)| entry.record(hash, self.last_used(entry.id)))
    }

    pub fn len(&self) -> usize {
        self.by_hash.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }
}

/// A committed batch as the writer's replica applied it: the mutations, and
/// the entries they made there, which the readers' replicas share instead of
/// making equal ones of their own.
#[derive(Debug, Clone)]
pub struct Batch {
    pub mutations: Arc<[Mutation]>,
    made: Arc<[Arc<TokenEntry>]>,
}

impl Batch {
    /// `made` is what [`Replica::apply_making`] handed over for `mutations`,
    /// in order.
    pub fn new(mutations: Vec<Mutation>, made: Vec<Arc<TokenEntry>>) -> Batch {
        Batch { mutations: Arc::from(mutations), made: Arc::from(made) }
    }
}

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
