//! The token registry: a plain, single-threaded data structure.
//!
//! Every shard owns one [`Replica`] and answers logins and lists from it with
//! no lock. The log writer owns one more, the authoritative copy it checks
//! mutations against. All replicas change only through [`Replica::apply`],
//! fed the same committed [`Mutation`]s in the same order, so they agree.
//!
//! A mutation is fully resolved before it is committed (id, hash, absolute
//! timestamps), so applying it is deterministic: replaying the log rebuilds
//! exactly the state that was acknowledged.

use std::collections::{BTreeMap, HashMap, btree_map};
use std::hash::{BuildHasherDefault, Hasher};
use std::num::NonZeroU64;
use std::sync::Arc;

/// A keyed BLAKE3 hash of a raw token; the only form a token is kept in.
pub type TokenHash = [u8; 32];

/// One stored token. Never holds the raw token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    /// Unique and never reused, even after delete or compaction.
    pub id: u64,
    pub user_id: u32,
    /// Shared: every replica and index points at one allocation per name.
    pub name: Arc<str>,
    pub hash: TokenHash,
    pub created_at_us: u64,
    /// Absolute expiry, µs since the Unix epoch; `None` never expires.
    pub expiry_at_us: Option<NonZeroU64>,
}

impl TokenRecord {
    /// Iggy's rule: expired when `expiry_at ≤ now`.
    pub fn is_expired(&self, now_us: u64) -> bool {
        self.expiry_at_us.is_some_and(|at| at.get() <= now_us)
    }

    fn entry(&self) -> TokenEntry {
        TokenEntry {
            id: self.id,
            user_id: self.user_id,
            name: Arc::clone(&self.name),
            created_at_us: self.created_at_us,
            expiry_at_us: self.expiry_at_us,
        }
    }
}

/// A token as a replica keeps it: everything but the hash, which is its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenEntry {
    pub id: u64,
    pub user_id: u32,
    pub name: Arc<str>,
    pub created_at_us: u64,
    pub expiry_at_us: Option<NonZeroU64>,
}

impl TokenEntry {
    /// Iggy's rule: expired when `expiry_at ≤ now`.
    pub fn is_expired(&self, now_us: u64) -> bool {
        self.expiry_at_us.is_some_and(|at| at.get() <= now_us)
    }

    pub fn record(&self, hash: &TokenHash) -> TokenRecord {
        TokenRecord {
            id: self.id,
            user_id: self.user_id,
            name: Arc::clone(&self.name),
            hash: *hash,
            created_at_us: self.created_at_us,
            expiry_at_us: self.expiry_at_us,
        }
    }
}

/// A committed change. A delete carries the token's hash as well as its id
/// so replicas need no id index (the log stores the id only; replay resolves
/// it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mutation {
    Create(TokenRecord),
    Delete { id: u64, hash: TokenHash },
}

/// Hashes a [`TokenHash`] by its first 8 bytes. The keys are keyed BLAKE3
/// outputs: uniformly distributed, and not choosable by anyone who lacks the
/// server key, so SipHash's flooding defence buys nothing on the login path.
#[derive(Debug, Default, Clone, Copy)]
pub struct TokenHashHasher(u64);

impl Hasher for TokenHashHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // `[u8; 32]` hashes as a length prefix, then its bytes: the last
        // write of 8 or more bytes is the hash itself.
        if bytes.len() >= 8 {
            self.0 = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
        }
    }
}

type ByHash = HashMap<TokenHash, TokenEntry, BuildHasherDefault<TokenHashHasher>>;

/// One replica: tokens by hash (the login lookup), and per user by name.
/// Memory matters here (one copy per shard): there is no id index, and
/// names are shared `Arc<str>`s.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Replica {
    by_hash: ByHash,
    /// Per user, name → hash; ordered so lists come out sorted by name.
    by_user: HashMap<u32, BTreeMap<Arc<str>, TokenHash>>,
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
                Ok(())
            }
            Mutation::Delete { id, hash } => {
                match self.by_hash.get(hash) {
                    Some(entry) if entry.id == *id => {}
                    _ => return Err(format!("delete of unknown token id {id}")),
                }
                let entry = self.by_hash.remove(hash).expect("checked above");
                let names = self.by_user.get_mut(&entry.user_id).expect("user index in sync");
                names.remove(&entry.name);
                if names.is_empty() {
                    self.by_user.remove(&entry.user_id);
                }
                Ok(())
            }
        }
    }

    pub fn by_hash(&self, hash: &TokenHash) -> Option<&TokenEntry> {
        self.by_hash.get(hash)
    }

    /// `user_id`'s token called `name`, with its hash.
    pub fn by_name(&self, user_id: u32, name: &str) -> Option<(&TokenHash, &TokenEntry)> {
        let hash = self.by_user.get(&user_id)?.get(name)?;
        self.by_hash.get_key_value(hash)
    }

    /// Whether a token with this id exists. A scan: for tests and cold paths.
    pub fn contains_id(&self, id: u64) -> bool {
        self.by_hash.values().any(|entry| entry.id == id)
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

    /// Every token with its hash, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&TokenHash, &TokenEntry)> {
        self.by_hash.iter()
    }

    /// Every token as a full record (compaction snapshots).
    pub fn records(&self) -> impl Iterator<Item = TokenRecord> + '_ {
        self.by_hash.iter().map(|(hash, entry)| entry.record(hash))
    }

    pub fn len(&self) -> usize {
        self.by_hash.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: u64, user_id: u32, name: &str) -> TokenRecord {
        let mut hash = [0u8; 32];
        hash[..8].copy_from_slice(&id.to_le_bytes());
        TokenRecord {
            id,
            user_id,
            name: name.into(),
            hash,
            created_at_us: 1,
            expiry_at_us: NonZeroU64::new(100),
        }
    }

    fn delete(record: &TokenRecord) -> Mutation {
        Mutation::Delete { id: record.id, hash: record.hash }
    }

    #[test]
    fn create_list_delete_keeps_indexes_in_step() {
        let mut replica = Replica::new();
        let (b, a, other) = (record(1, 7, "b"), record(2, 7, "a"), record(3, 8, "a"));
        for token in [&b, &a, &other] {
            replica.apply(&Mutation::Create(token.clone()));
        }
        let names: Vec<_> = replica.list_for(7).map(|r| &*r.name).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(replica.count_for(7), 2);
        assert_eq!(replica.count_for(8), 1);
        assert_eq!(replica.by_name(8, "a").unwrap().1.id, 3);
        assert_eq!(replica.by_name(8, "a").unwrap().0, &other.hash);
        replica.apply(&delete(&a));
        assert!(replica.by_name(7, "a").is_none());
        assert!(replica.by_hash(&a.hash).is_none());
        assert!(!replica.contains_id(2));
        assert_eq!(replica.count_for(7), 1);
        replica.apply(&delete(&b));
        assert_eq!(replica.count_for(7), 0);
        assert_eq!(replica.len(), 1);
        assert_eq!(replica.records().collect::<Vec<_>>(), vec![other]);
    }

    #[test]
    fn expiry_is_inclusive() {
        let token = record(1, 1, "x");
        assert!(!token.is_expired(99));
        assert!(token.is_expired(100));
        let never = TokenRecord { expiry_at_us: None, ..token };
        assert!(!never.is_expired(u64::MAX));
    }

    #[test]
    #[should_panic(expected = "diverged")]
    fn a_conflicting_create_is_a_divergence() {
        let mut replica = Replica::new();
        replica.apply(&Mutation::Create(record(1, 1, "x")));
        replica.apply(&Mutation::Create(record(2, 1, "x")));
    }

    #[test]
    #[should_panic(expected = "diverged")]
    fn a_delete_whose_id_and_hash_disagree_is_a_divergence() {
        let mut replica = Replica::new();
        let token = record(1, 1, "x");
        replica.apply(&Mutation::Create(token.clone()));
        replica.apply(&Mutation::Delete { id: 2, hash: token.hash });
    }
}
