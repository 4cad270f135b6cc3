//! A [`Replica`]: the registry's data structure, and the one place a
//! committed mutation changes it. Plain data: no I/O, no locks, no threads.
//!
//! Each token is one [`TokenEntry`] allocation; a replica's two indexes
//! (the login index by hash, and per user the name index) hold pointers to
//! it, and the three replicas of a process share it: see [`Batch`].

use std::borrow::Borrow;
use std::collections::{BTreeSet, HashMap, HashSet, hash_map};
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::ops::Bound;
use std::sync::Arc;

use super::{LastUsed, Mutation, TokenEntry, TokenHash, TokenHashHasher, TokenRecord};

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
pub(super) enum Entries<'a> {
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
    pub(super) fn apply_batch(&mut self, batch: &Batch) {
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

    pub(super) fn create(&mut self, record: &TokenRecord, entries: &mut Entries<'_>) -> Result<(), String> {
        self.check_new_hash(record)?;
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

    /// The first half of a create, for a replay that adds names to the
    /// name index later and in bulk ([`Replica::add_names`]): the token goes
    /// in the login index, and its entry is handed back. Until its name is
    /// added, the replica is incomplete: only more of these, and
    /// [`Replica::add_names`], may follow.
    pub(crate) fn create_unnamed(&mut self, record: &TokenRecord) -> Result<Arc<TokenEntry>, String> {
        self.check_new_hash(record)?;
        let entry = Arc::new(record.entry());
        self.by_hash.insert(HashKeyed(Arc::clone(&entry)));
        if let Some(used) = record.last_used {
            self.last_used.insert(record.id, used);
        }
        Ok(entry)
    }

    /// The second half, for a run of `user_id`'s entries in name order:
    /// their names in the user's name index. False when the user already
    /// has a token of one of those names, or the run holds one twice: the
    /// replica then holds a token its name index lacks, and must not be
    /// used. A user with no tokens yet gets an index built in one pass (no
    /// search per name); otherwise each name is inserted in turn, each
    /// insert next to the one before it.
    pub(crate) fn add_names(&mut self, user_id: u32, sorted: impl Iterator<Item = Arc<TokenEntry>>) -> bool {
        match self.by_user.entry(user_id) {
            hash_map::Entry::Vacant(slot) => {
                let mut count = 0;
                let names: BTreeSet<NameKeyed> = sorted.inspect(|_| count += 1).map(NameKeyed).collect();
                // Collecting keeps one of equal names: count them.
                let all = names.len() == count;
                slot.insert(names);
                all
            }
            hash_map::Entry::Occupied(mut names) => {
                let names = names.get_mut();
                sorted.map(NameKeyed).all(|name| names.insert(name))
            }
        }
    }

    fn check_new_hash(&self, record: &TokenRecord) -> Result<(), String> {
        if self.by_hash.contains(&record.hash) {
            return Err(format!("create of token id {}: its hash exists", record.id));
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
        self.shared_for(user_id).map(|entry| &**entry)
    }

    /// [`list_for`](Self::list_for) as the shared entries themselves: a
    /// caller may keep them past its read (a clone is one count).
    pub fn shared_for(&self, user_id: u32) -> impl Iterator<Item = &Arc<TokenEntry>> {
        self.by_user.get(&user_id).into_iter().flatten().map(|entry| &entry.0)
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

    /// Every token as a full record, last use included, in order of user id
    /// and then name (snapshots, backups and exports). That order is what a
    /// replay of the file builds fastest: its sort of each run's names finds
    /// them sorted, and the entries lie in memory in list order (at 10M
    /// tokens of one user, 10–11 s to listening against 13–15 s for the same
    /// file in no order; BENCHMARKS.md).
    pub fn records(&self) -> impl Iterator<Item = TokenRecord> + '_ {
        let users = self.user_ids();
        users.into_iter().flat_map(move |user_id| {
            self.list_for(user_id).map(move |entry| entry.record(&entry.hash, self.last_used(entry.id)))
        })
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
