//! The token registry: a plain, single-threaded data structure.
//!
//! The readers share a `left_right` pair of [`Replica`]s (see `node.rs`) and
//! answer logins and lists from it with no lock. The log writer owns one
//! more, the authoritative copy it checks mutations against. All replicas
//! change only through [`Replica::apply`], fed the same committed
//! [`Mutation`]s in the same order, so they agree.
//!
//! A mutation is fully resolved before it is committed (id, hash, absolute
//! timestamps), so applying it is deterministic: replaying the log rebuilds
//! exactly the state that was acknowledged.

use std::collections::{BTreeMap, HashMap, btree_map};
use std::hash::{BuildHasherDefault, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU64;
use std::sync::Arc;

use ipnet::IpNet;
use latchkey_protocol::ext::TokenStatus;

/// A keyed BLAKE3 hash of a raw token; the only form a token is kept in.
pub type TokenHash = [u8; 32];

/// What a token made with an extension command carries beyond Iggy's fields.
/// Shared by every replica; `None` on a plain token keeps those at 8 bytes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TokenExtras {
    /// 0–256 bytes.
    pub description: Box<str>,
    /// Validated scopes (`latchkey_protocol::scope`); empty = full access.
    pub scopes: Box<[Box<str>]>,
    /// Client networks allowed to use the token; empty = any address.
    pub networks: Box<[IpNet]>,
}

impl TokenExtras {
    /// `None` when there is nothing beyond a plain token.
    pub fn shared(self) -> Option<Arc<TokenExtras>> {
        (self != TokenExtras::default()).then(|| Arc::new(self))
    }
}

/// When and from where a token was last used (login or Authorize).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LastUsed {
    pub at_us: u64,
    pub peer: SocketAddr,
}

impl LastUsed {
    /// The later of two last uses, either of which may be unknown.
    pub fn later(a: Option<LastUsed>, b: Option<LastUsed>) -> Option<LastUsed> {
        match (a, b) {
            (Some(a), Some(b)) => Some(if a.at_us >= b.at_us { a } else { b }),
            (a, b) => a.or(b),
        }
    }
}

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
    pub revoked_at_us: Option<NonZeroU64>,
    pub extras: Option<Arc<TokenExtras>>,
    /// Set only in compaction snapshots; a create never carries it.
    pub last_used: Option<LastUsed>,
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
            revoked_at_us: self.revoked_at_us,
            extras: self.extras.clone(),
        }
    }
}

/// A token as a replica keeps it: everything but the hash, which is its key,
/// and the last use, which is kept apart (only used tokens pay for it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenEntry {
    pub id: u64,
    pub user_id: u32,
    pub name: Arc<str>,
    pub created_at_us: u64,
    pub expiry_at_us: Option<NonZeroU64>,
    pub revoked_at_us: Option<NonZeroU64>,
    pub extras: Option<Arc<TokenExtras>>,
}

impl TokenEntry {
    /// Iggy's rule: expired when `expiry_at ≤ now`.
    pub fn is_expired(&self, now_us: u64) -> bool {
        self.expiry_at_us.is_some_and(|at| at.get() <= now_us)
    }

    /// Revoked wins over expired: a revoked token was stopped on purpose.
    pub fn status(&self, now_us: u64) -> TokenStatus {
        if self.revoked_at_us.is_some() {
            TokenStatus::Revoked
        } else if self.is_expired(now_us) {
            TokenStatus::Expired
        } else {
            TokenStatus::Active
        }
    }

    pub fn scopes(&self) -> &[Box<str>] {
        self.extras.as_deref().map_or(&[], |extras| &extras.scopes)
    }

    pub fn networks(&self) -> &[IpNet] {
        self.extras.as_deref().map_or(&[], |extras| &extras.networks)
    }

    pub fn description(&self) -> &str {
        self.extras.as_deref().map_or("", |extras| &extras.description)
    }

    /// Whether `peer` may use this token. v4-mapped v6 peers count as v4.
    pub fn admits(&self, peer: IpAddr) -> bool {
        let networks = self.networks();
        networks.is_empty() || networks.iter().any(|network| network.contains(&peer.to_canonical()))
    }

    pub fn record(&self, hash: &TokenHash, last_used: Option<LastUsed>) -> TokenRecord {
        TokenRecord {
            id: self.id,
            user_id: self.user_id,
            name: Arc::clone(&self.name),
            hash: *hash,
            created_at_us: self.created_at_us,
            expiry_at_us: self.expiry_at_us,
            revoked_at_us: self.revoked_at_us,
            extras: self.extras.clone(),
            last_used,
        }
    }
}

/// A committed change. Each carries the token's current hash as well as its
/// id, so replicas need no id index (the log stores the id only; replay
/// resolves it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mutation {
    Create(TokenRecord),
    Delete {
        id: u64,
        hash: TokenHash,
    },
    Revoke {
        id: u64,
        hash: TokenHash,
        at_us: NonZeroU64,
    },
    /// New name and extras (description changed; scopes and networks kept).
    Update {
        id: u64,
        hash: TokenHash,
        name: Arc<str>,
        extras: Option<Arc<TokenExtras>>,
    },
    /// A new secret (and expiry) for the same token.
    Rotate {
        id: u64,
        hash: TokenHash,
        new_hash: TokenHash,
        expiry_at_us: Option<NonZeroU64>,
    },
    Touch {
        id: u64,
        hash: TokenHash,
        used: LastUsed,
    },
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
            Mutation::Rotate { id, hash, new_hash, expiry_at_us } => {
                if self.by_hash.contains_key(new_hash) {
                    return Err(format!("rotate of token id {id}: the new hash exists"));
                }
                let mut entry = self.take(*id, hash, "rotate")?;
                entry.expiry_at_us = *expiry_at_us;
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

    /// Whether a token with this id exists. A scan: for tests and cold paths.
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
            revoked_at_us: None,
            extras: None,
            last_used: None,
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
