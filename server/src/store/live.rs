//! What a replay of the log builds from the records it accepts: the
//! registry itself ([`Registry`], for a start and the log tools), or only
//! what a compacted snapshot needs ([`LiveRecords`], for the compactor).
//!
//! Recovery's replay (`recovery.rs`) owns every rule about the file: the
//! framing, checksums, sequence numbers, the snapshot's shape, ids never
//! reused. It hands each accepted token record and each change to one of
//! these, so both see exactly the same records under the same rules; they
//! differ only in what they keep.
//!
//! Why two: the compactor runs beside the commit path, and with 1M tokens
//! a replay into a [`Replica`] (a hash index, a per-user ordered name index,
//! an owned name per token, an id index) took 1.4–4.5 s of a core while
//! commits waited for theirs. A snapshot needs none of those indexes: per
//! live id, the record it was created with (an offset into the bytes
//! already in memory) or, once a later record changed it, the token as
//! changed. That is the whole of [`LiveRecords`].

use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::sync::Arc;

use super::log::{Record, RecordFault, SnapshotEncoder, read_record, recorded_user_and_name};
use crate::registry::{IdHasher, Mutation, Replica, TokenEntry, TokenExtras, TokenHash, TokenRecord};

/// What a replay builds, fed the records it accepts in file order.
pub(super) trait Tokens {
    /// Whether a token with this id is live.
    fn contains(&self, id: u64) -> bool;

    /// Adds `token`, whose record starts at `offset` of the replayed bytes;
    /// the replay has checked that its id is new. Refuses what does not fit,
    /// changing nothing.
    fn create(&mut self, token: &TokenRecord, offset: usize) -> Result<(), RecordFault>;

    /// Applies a record after the snapshot that changes or removes a token
    /// by its id (anything but a create or a snapshot). Refuses what does
    /// not fit, changing nothing.
    fn change(&mut self, record: &Record) -> Result<(), RecordFault>;

    /// Live tokens.
    fn len(&self) -> usize;

    /// Finishes what it put off, once the last record is in.
    fn settle(&mut self) {}
}

/// The registry a replay rebuilds: every check a [`Replica`] makes (names
/// unique per user, hashes unique), and the id index the log's records
/// need to find a token (replicas keep none).
///
/// Made by [`Registry::for_file_of`], it adds the names of a run of creates
/// (up to the next record that changes a token by name) to the name index
/// in bulk: sorted, and for a user with no tokens yet built in one pass.
/// Inserted one by one, a snapshot of one user's 10M tokens in no order of
/// name took 38–47 s to replay (every insert a walk through cold memory).
/// It then finds a name used twice only when the run ends, past the record
/// at fault: it stops taking records ([`Registry::conflict`]), and the
/// caller replays again with [`Registry::exact_for_file_of`], which checks
/// each create as it comes and so refuses the very record.
#[derive(Debug)]
pub(super) struct Registry {
    state: Replica,
    /// Live token ids → hashes. Lives only during replay.
    pub ids: IdIndex,
    /// Whether names wait in `unnamed` (else each goes in at its create).
    bulk: bool,
    /// Creates already in the login index whose names are not yet in the
    /// name index, with the key they are sorted by.
    unnamed: Vec<(SortKey, Arc<TokenEntry>)>,
    /// A name used twice, found when a run's names went in.
    conflict: Option<RecordFault>,
}

/// Names that wait for the name index at most. Each waits in 32 bytes (its
/// sort key and pointer), so a snapshot of 10M tokens holds 320 MB more
/// while it replays; a run longer than this (2 GiB) goes in in parts, each
/// sorted, the later ones inserted name by name. (Eight in tests, so that
/// their replays go in parts too.)
const UNNAMED_MAX: usize = if cfg!(test) { 8 } else { 1 << 26 };

impl Registry {
    /// An empty registry that adds names in bulk, its id index and the
    /// replica's login index sized for a file of `bytes` bytes: a create
    /// record is about 100 bytes (less with a short name), so a file of
    /// creates fills them without their growing and rehashing on the way. A
    /// file of many other records leaves the login index too large;
    /// [`Registry::finish`] trims it.
    pub fn for_file_of(bytes: usize) -> Registry {
        let tokens = bytes / 96;
        Registry {
            state: Replica::with_capacity(tokens),
            ids: IdIndex::with_capacity(tokens),
            bulk: true,
            unnamed: Vec::new(),
            conflict: None,
        }
    }

    /// The same registry checking each create's name as it comes: slower on
    /// names in no order, but it refuses the record at fault itself.
    pub fn exact_for_file_of(bytes: usize) -> Registry {
        Registry { bulk: false, ..Registry::for_file_of(bytes) }
    }

    /// A name used twice that a bulk registry found after the record at
    /// fault: what it holds is not to be used, and a replay with
    /// [`Registry::exact_for_file_of`] finds the record.
    pub fn conflict(&self) -> Option<&str> {
        self.conflict.as_deref()
    }

    /// The replayed state (every name in the name index).
    pub fn state(&self) -> &Replica {
        self.assert_settled();
        &self.state
    }

    /// The replayed registry, its login index trimmed to its tokens (the id
    /// index is dropped here).
    pub fn finish(self) -> Replica {
        self.assert_settled();
        let mut state = self.state;
        state.trim();
        state
    }

    /// A replica with a token its name index lacks would answer lists and
    /// renames wrongly from then on: never handed out (two comparisons, once
    /// per replay).
    fn assert_settled(&self) {
        assert!(self.unnamed.is_empty(), "a replay settles its registry before it is read");
        assert!(self.conflict.is_none(), "a registry that found a name used twice is replayed again");
    }

    /// Adds the waiting names to the name index, in order of user and name,
    /// so that each insert follows the last one down a path of the tree
    /// already in cache.
    fn add_names(&mut self) {
        sort_by_user_and_name(&mut self.unnamed, &[]);
        // Drained, so that a log of creates and changes mixed keeps the
        // vector's room from one run to the next.
        let mut entries = self.unnamed.drain(..).map(|(key, entry)| (key.user_id, entry)).peekable();
        while let Some(&(user_id, _)) = entries.peek() {
            let run =
                std::iter::from_fn(|| entries.next_if(|(user, _)| *user == user_id).map(|(_, entry)| entry));
            if !self.state.add_names(user_id, run) {
                // Returning drops the drain, which takes the rest with it.
                self.conflict = Some(format!("user {user_id} has two tokens of the same name"));
                return;
            }
        }
    }

    fn hash_of(&self, id: u64, what: &str) -> Result<TokenHash, RecordFault> {
        self.ids.get(id).copied().ok_or_else(|| format!("{what} of unknown token id {id}"))
    }
}

impl Tokens for Registry {
    fn contains(&self, id: u64) -> bool {
        self.ids.get(id).is_some()
    }

    fn create(&mut self, token: &TokenRecord, _offset: usize) -> Result<(), RecordFault> {
        if let Some(conflict) = &self.conflict {
            return Err(conflict.clone());
        }
        if self.bulk {
            // Refuses a hash that already exists, without changing anything;
            // a name, once the run's names go in.
            let entry = self.state.create_unnamed(token)?;
            self.unnamed.push((SortKey::of(entry.user_id, entry.name.as_bytes()), entry));
            if self.unnamed.len() == UNNAMED_MAX {
                self.add_names();
            }
        } else {
            // Refuses a name or hash that already exists, without changing anything.
            self.state.try_create(token)?;
        }
        self.ids.insert(token.id, token.hash);
        Ok(())
    }

    fn change(&mut self, record: &Record) -> Result<(), RecordFault> {
        // A last use needs no name; every other change may (a rename, or a
        // new entry in the name index), so the run's names go in first.
        if !matches!(record, Record::Touch { .. }) {
            self.settle();
        }
        if let Some(conflict) = &self.conflict {
            return Err(conflict.clone());
        }
        match *record {
            Record::Delete { id } => {
                let hash = self.hash_of(id, "delete")?;
                // A record that does not fit is a fault, never a panic; and
                // the id index changes only once the registry has.
                self.state.try_apply(&Mutation::Delete { id, hash })?;
                self.ids.remove(id);
                Ok(())
            }
            Record::Revoke { id, at_us } => {
                let hash = self.hash_of(id, "revoke")?;
                self.state.try_apply(&Mutation::Revoke { id, hash, at_us })
            }
            Record::Update { id, ref name, ref description } => {
                let hash = self.hash_of(id, "update")?;
                let entry = self.state.by_hash(&hash).ok_or("id index out of step")?;
                let mut extras = entry.extras.as_deref().cloned().unwrap_or_default();
                extras.description = description.clone();
                let extras = extras.shared();
                self.state.try_apply(&Mutation::Update { id, hash, name: Arc::clone(name), extras })
            }
            Record::Access { id, ref scopes, ref networks } => {
                let hash = self.hash_of(id, "access edit")?;
                let entry = self.state.by_hash(&hash).ok_or("id index out of step")?;
                let mut extras = entry.extras.as_deref().cloned().unwrap_or_default();
                extras.scopes = scopes.clone();
                extras.networks = networks.clone();
                let extras = extras.shared();
                self.state.try_apply(&Mutation::Access { id, hash, extras })
            }
            Record::Rotate { id, hash: new_hash, expiry_at_us } => {
                let hash = self.hash_of(id, "rotate")?;
                self.state.try_apply(&Mutation::Rotate { id, hash, new_hash, expiry_at_us })?;
                self.ids.insert(id, new_hash);
                Ok(())
            }
            Record::Reactivate { id, hash: new_hash, expiry_at_us } => {
                let hash = self.hash_of(id, "reactivation")?;
                self.state.try_apply(&Mutation::Reactivate { id, hash, new_hash, expiry_at_us })?;
                self.ids.insert(id, new_hash);
                Ok(())
            }
            Record::Touch { id, used } => {
                let hash = self.hash_of(id, "last-used update")?;
                self.state.try_apply(&Mutation::Touch { id, hash, used })
            }
            Record::Create(_) | Record::Snapshot { .. } => Err("not a change of a token".into()),
        }
    }

    fn len(&self) -> usize {
        self.state.len()
    }

    fn settle(&mut self) {
        if !self.unnamed.is_empty() && self.conflict.is_none() {
            self.add_names();
        }
    }
}

/// A live token as [`LiveRecords`] keeps it.
#[derive(Debug)]
enum LiveToken {
    /// Exactly what the record at this offset says: nothing after it
    /// changed the token, so its bytes (already in memory, checksummed)
    /// are all the snapshot needs: they are copied into it, never decoded
    /// again.
    AsRecorded { offset: usize },
    /// Changed by a later record: the token as it now stands.
    Changed(Box<TokenRecord>),
}

/// The compactor's fold of a log: per live id, its latest token and
/// nothing else. It applies each change exactly as a [`Replica`] does
/// (`registry/mod.rs`, `try_apply`), which the test
/// `live_records_make_the_snapshot_a_full_replay_makes` holds it to. It
/// does not check what only the registry's indexes could (a name or a hash
/// used twice): the writer checked every record before it was written, the
/// checksums say these bytes are those records, and the next start's replay
/// checks the snapshot in full.
#[derive(Debug)]
pub(super) struct LiveRecords<'a> {
    /// The replayed file, which the offsets point into.
    bytes: &'a [u8],
    tokens: HashMap<u64, LiveToken, BuildHasherDefault<IdHasher>>,
}

impl<'a> LiveRecords<'a> {
    /// An empty fold of `bytes`, the whole file about to be replayed, which
    /// leaves about `live` tokens (the index is sized once).
    pub fn of(bytes: &'a [u8], live: usize) -> LiveRecords<'a> {
        let tokens = HashMap::with_capacity_and_hasher(live, BuildHasherDefault::default());
        LiveRecords { bytes, tokens }
    }

    /// The token with this id, decoded and owned so that a change can be
    /// applied to it.
    fn changed(&mut self, id: u64, what: &str) -> Result<&mut TokenRecord, RecordFault> {
        let live = self.tokens.get_mut(&id).ok_or_else(|| format!("{what} of unknown token id {id}"))?;
        if let LiveToken::AsRecorded { offset } = *live {
            *live = LiveToken::Changed(Box::new(token_at(self.bytes, offset)?));
        }
        match live {
            LiveToken::Changed(token) => Ok(token),
            LiveToken::AsRecorded { .. } => unreachable!("decoded above"),
        }
    }

    /// The compacted file of this state and its record count: its tokens
    /// in order of user id and then name, the order
    /// `Replica::records` gives `log::encode_snapshot` (and the one a replay
    /// builds its name indexes fastest from). A token no later record
    /// changed is copied from the replayed bytes, never decoded.
    pub fn encode_snapshot(
        self,
        next_id: u64,
        last_seq: u64,
        commit_at_us: u64,
    ) -> Result<(Vec<u8>, u64), RecordFault> {
        let bytes = self.bytes;
        let mut tokens = Vec::with_capacity(self.tokens.len());
        for (_, live) in self.tokens {
            let (user_id, name) = user_and_name(bytes, &live)?;
            tokens.push((SortKey::of(user_id, name), live));
        }
        // User id and name are unique to a token, so the snapshot comes out
        // the same every time.
        sort_by_user_and_name(&mut tokens, bytes);
        let count = tokens.len();
        let mut snapshot = SnapshotEncoder::new(count, next_id, last_seq, commit_at_us);
        for (_, live) in tokens {
            match live {
                LiveToken::AsRecorded { offset } => snapshot.recorded(bytes, offset)?,
                LiveToken::Changed(token) => snapshot.token(&token),
            }
        }
        Ok((snapshot.finish(), count as u64 + 1))
    }
}

/// A token's place in name order: its user id, then the first 16 bytes of
/// its name, padded with zeros and read as two big-endian numbers (so
/// comparing them compares the bytes, without a call to `memcmp`). Padding
/// keeps the order of names: a name that sorts before another never has a
/// larger prefix, and two names with equal prefixes are compared in full.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct SortKey {
    user_id: u32,
    high: u64,
    low: u64,
}

impl SortKey {
    pub(super) fn of(user_id: u32, name: &[u8]) -> SortKey {
        let mut prefix = [0; 16];
        let len = name.len().min(16);
        prefix[..len].copy_from_slice(&name[..len]);
        let (high, low) = prefix.split_at(8);
        let read = |half: &[u8]| u64::from_be_bytes(half.try_into().expect("8 bytes"));
        SortKey { user_id, high: read(high), low: read(low) }
    }
}

/// What [`sort_by_user_and_name`] sorts: a token whose name it can read,
/// in the replayed bytes or in itself.
pub(super) trait Named {
    fn name<'s>(&'s self, bytes: &'s [u8]) -> &'s [u8];
}

impl Named for LiveToken {
    fn name<'s>(&'s self, bytes: &'s [u8]) -> &'s [u8] {
        name_of(bytes, self)
    }
}

impl Named for Arc<TokenEntry> {
    fn name<'s>(&'s self, _: &'s [u8]) -> &'s [u8] {
        self.name.as_bytes()
    }
}

/// Sorts `items` by user id and then name, each item's key made by
/// [`SortKey::of`] from its user id and name. Items whose keys are equal
/// share their names' first bytes: those are sorted again by the next 16
/// bytes of their names, and so on, so that names with a long common
/// prefix (`ci-deploy-production-0001`, …) are read once per 16 bytes, not
/// once per comparison. A run that no further bytes can split, or a short
/// one, is sorted by comparing whole names.
pub(super) fn sort_by_user_and_name<X: Named>(items: &mut [(SortKey, X)], bytes: &[u8]) {
    sort_from(items, 0, bytes);
}

fn sort_from<X: Named>(items: &mut [(SortKey, X)], depth: usize, bytes: &[u8]) {
    const SHORT_RUN: usize = 16;
    items.sort_unstable_by(|(a, _), (b, _)| a.cmp(b));
    let mut start = 0;
    while start < items.len() {
        let key = &items[start].0;
        let end = start + items[start..].iter().take_while(|(other, _)| other == key).count();
        let run = &mut items[start..end];
        let deeper = depth + 16;
        if run.len() <= SHORT_RUN || run.iter().all(|(_, item)| item.name(bytes).len() <= deeper) {
            run.sort_unstable_by(|(_, a), (_, b)| a.name(bytes).cmp(b.name(bytes)));
        } else {
            for (key, item) in run.iter_mut() {
                *key = SortKey::of(key.user_id, item.name(bytes).get(deeper..).unwrap_or_default());
            }
            sort_from(run, deeper, bytes);
        }
        start = end;
    }
}

fn user_and_name<'b>(bytes: &'b [u8], live: &'b LiveToken) -> Result<(u32, &'b [u8]), RecordFault> {
    match live {
        LiveToken::AsRecorded { offset } => recorded_user_and_name(bytes, *offset),
        LiveToken::Changed(token) => Ok((token.user_id, token.name.as_bytes())),
    }
}

/// The name of a token [`user_and_name`] has already read once.
fn name_of<'b>(bytes: &'b [u8], live: &'b LiveToken) -> &'b [u8] {
    user_and_name(bytes, live).map_or(&[], |(_, name)| name)
}

/// The token of the create or token record at `offset`.
fn token_at(bytes: &[u8], offset: usize) -> Result<TokenRecord, RecordFault> {
    match read_record(bytes, offset)?.record {
        Record::Create(token) => Ok(token),
        _ => Err(format!("the record at offset {offset} is not a token")),
    }
}

impl Tokens for LiveRecords<'_> {
    fn contains(&self, id: u64) -> bool {
        self.tokens.contains_key(&id)
    }

    fn create(&mut self, token: &TokenRecord, offset: usize) -> Result<(), RecordFault> {
        self.tokens.insert(token.id, LiveToken::AsRecorded { offset });
        Ok(())
    }

    /// Each arm does what `Replica::try_apply` does with the mutation the
    /// record stands for (and what [`Registry::change`] builds it from).
    fn change(&mut self, record: &Record) -> Result<(), RecordFault> {
        match *record {
            Record::Delete { id } => {
                self.tokens.remove(&id).ok_or_else(|| format!("delete of unknown token id {id}"))?;
            }
            Record::Revoke { id, at_us } => {
                let token = self.changed(id, "revoke")?;
                token.revoked_at_us.get_or_insert(at_us);
            }
            Record::Update { id, ref name, ref description } => {
                let token = self.changed(id, "update")?;
                let mut extras = token.extras.as_deref().cloned().unwrap_or_default();
                extras.description = description.clone();
                token.name = Arc::clone(name);
                token.extras = extras.shared();
            }
            Record::Access { id, ref scopes, ref networks } => {
                let token = self.changed(id, "access edit")?;
                let mut extras: TokenExtras = token.extras.as_deref().cloned().unwrap_or_default();
                extras.scopes = scopes.clone();
                extras.networks = networks.clone();
                token.extras = extras.shared();
            }
            Record::Rotate { id, hash, expiry_at_us } => {
                let token = self.changed(id, "rotate")?;
                token.hash = hash;
                token.expiry_at_us = expiry_at_us;
            }
            Record::Reactivate { id, hash, expiry_at_us } => {
                let token = self.changed(id, "reactivation")?;
                token.hash = hash;
                token.expiry_at_us = expiry_at_us;
                token.revoked_at_us = None;
            }
            Record::Touch { id, used } => {
                let token = self.changed(id, "last-used update")?;
                // A replica keeps the later of two uses, the new one on a tie.
                if token.last_used.is_none_or(|last| used.at_us >= last.at_us) {
                    token.last_used = Some(used);
                }
            }
            Record::Create(_) | Record::Snapshot { .. } => return Err("not a change of a token".into()),
        }
        Ok(())
    }

    fn len(&self) -> usize {
        self.tokens.len()
    }
}

/// A replay's index of live token ids → hashes (the log names a token by
/// its id alone). The writer hands ids out in order, so a log's ids are
/// dense: a vector indexed by id serves them with no hashing, in order for
/// a log's creates, and in half a map's memory (33 bytes a slot against a
/// map's 41 at up to 7/8 load, at 10M tokens 330 MB against 690 MB, all of
/// it touched while a node starts). An id beyond both the room reserved for
/// the file and twice the live ids (many deleted, or a registry imported
/// from elsewhere) moves it to a map for good.
#[derive(Debug)]
pub(super) enum IdIndex {
    /// Slot `id` holds token `id`'s hash; `live` slots are filled.
    Dense {
        slots: Vec<Option<TokenHash>>,
        live: usize,
    },
    Sparse(HashMap<u64, TokenHash, BuildHasherDefault<IdHasher>>),
}

/// Slots a dense index may hold beyond twice its live ids, before an id
/// that far moves it to a map: 1M slots, 33 MB.
const DENSE_SLACK: u64 = 1 << 20;

impl Default for IdIndex {
    fn default() -> IdIndex {
        IdIndex::with_capacity(0)
    }
}

impl IdIndex {
    /// Room for ids up to `ids` without growing.
    pub fn with_capacity(ids: usize) -> IdIndex {
        IdIndex::Dense { slots: Vec::with_capacity(ids.saturating_add(1)), live: 0 }
    }

    pub fn get(&self, id: u64) -> Option<&TokenHash> {
        match self {
            IdIndex::Dense { slots, .. } => {
                usize::try_from(id).ok().and_then(|slot| slots.get(slot)).and_then(Option::as_ref)
            }
            IdIndex::Sparse(map) => map.get(&id),
        }
    }

    /// Sets token `id`'s hash (a create, or a new hash for a rotation).
    pub fn insert(&mut self, id: u64, hash: TokenHash) {
        if let IdIndex::Dense { slots, live } = self {
            // Up to the room reserved for the file (a snapshot lists its
            // ids in no order), or past it while the ids stay dense.
            let reach = (2 * *live as u64).saturating_add(DENSE_SLACK).max(slots.capacity() as u64);
            match usize::try_from(id) {
                Ok(slot) if id <= reach => {
                    if slot >= slots.len() {
                        slots.resize(slot + 1, None);
                    }
                    if slots[slot].replace(hash).is_none() {
                        *live += 1;
                    }
                    return;
                }
                _ => self.go_sparse(),
            }
        }
        if let IdIndex::Sparse(map) = self {
            map.insert(id, hash);
        }
    }

    pub fn remove(&mut self, id: u64) {
        match self {
            IdIndex::Dense { slots, live } => {
                let slot = usize::try_from(id).ok().and_then(|slot| slots.get_mut(slot));
                if slot.and_then(Option::take).is_some() {
                    *live -= 1;
                }
            }
            IdIndex::Sparse(map) => {
                map.remove(&id);
            }
        }
    }

    fn go_sparse(&mut self) {
        if let IdIndex::Dense { slots, live } = self {
            let mut map = HashMap::with_capacity_and_hasher(*live, BuildHasherDefault::default());
            map.extend(slots.iter().enumerate().filter_map(|(id, hash)| Some((id as u64, (*hash)?))));
            *self = IdIndex::Sparse(map);
        }
    }
}
