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

use std::collections::{BTreeMap, HashMap};
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
}

/// A committed change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mutation {
    Create(TokenRecord),
    Delete { id: u64 },
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

type ByHash = HashMap<TokenHash, TokenRecord, BuildHasherDefault<TokenHashHasher>>;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Replica {
    by_hash: ByHash,
    hash_by_id: HashMap<u64, TokenHash>,
    /// Per user, name → id; ordered so lists come out sorted by name.
    by_user: HashMap<u32, BTreeMap<Arc<str>, u64>>,
}

impl Replica {
    pub fn new() -> Replica {
        Replica::default()
    }

    /// Applies a committed mutation. Committed mutations were checked by the
    /// writer against the same state, so a conflict here means replicas have
    /// diverged: that would corrupt answers, so it stops the process.
    pub fn apply(&mut self, mutation: &Mutation) {
        match mutation {
            Mutation::Create(record) => {
                let names = self.by_user.entry(record.user_id).or_default();
                let previous_name = names.insert(record.name.clone(), record.id);
                let previous_id = self.hash_by_id.insert(record.id, record.hash);
                let previous_hash = self.by_hash.insert(record.hash, record.clone());
                assert!(
                    previous_name.is_none() && previous_id.is_none() && previous_hash.is_none(),
                    "replica diverged: create of token id {} conflicts",
                    record.id
                );
            }
            Mutation::Delete { id } => {
                let hash = self
                    .hash_by_id
                    .remove(id)
                    .unwrap_or_else(|| panic!("replica diverged: delete of unknown token id {id}"));
                let record = self.by_hash.remove(&hash).expect("hash index in sync");
                let names = self.by_user.get_mut(&record.user_id).expect("user index in sync");
                names.remove(&record.name);
                if names.is_empty() {
                    self.by_user.remove(&record.user_id);
                }
            }
        }
    }

    pub fn by_hash(&self, hash: &TokenHash) -> Option<&TokenRecord> {
        self.by_hash.get(hash)
    }

    pub fn by_id(&self, id: u64) -> Option<&TokenRecord> {
        self.hash_by_id.get(&id).and_then(|hash| self.by_hash.get(hash))
    }

    pub fn by_name(&self, user_id: u32, name: &str) -> Option<&TokenRecord> {
        let id = self.by_user.get(&user_id)?.get(name)?;
        self.by_id(*id)
    }

    /// Tokens `user_id` holds, expired ones included.
    pub fn count_for(&self, user_id: u32) -> usize {
        self.by_user.get(&user_id).map_or(0, BTreeMap::len)
    }

    /// `user_id`'s tokens, sorted by name.
    pub fn list_for(&self, user_id: u32) -> impl Iterator<Item = &TokenRecord> {
        self.by_user
            .get(&user_id)
            .into_iter()
            .flat_map(|names| names.values())
            .filter_map(|id| self.by_id(*id))
    }

    /// Every token, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &TokenRecord> {
        self.by_hash.values()
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

    #[test]
    fn create_list_delete_keeps_indexes_in_step() {
        let mut replica = Replica::new();
        replica.apply(&Mutation::Create(record(1, 7, "b")));
        replica.apply(&Mutation::Create(record(2, 7, "a")));
        replica.apply(&Mutation::Create(record(3, 8, "a")));
        let names: Vec<_> = replica.list_for(7).map(|r| &*r.name).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(replica.count_for(7), 2);
        assert_eq!(replica.count_for(8), 1);
        assert_eq!(replica.by_name(8, "a").unwrap().id, 3);
        replica.apply(&Mutation::Delete { id: 2 });
        assert!(replica.by_name(7, "a").is_none());
        assert!(replica.by_hash(&record(2, 7, "a").hash).is_none());
        assert_eq!(replica.count_for(7), 1);
        replica.apply(&Mutation::Delete { id: 1 });
        assert_eq!(replica.count_for(7), 0);
        assert_eq!(replica.len(), 1);
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
}
