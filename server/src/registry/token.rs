//! The values a registry holds: tokens as records and as entries, their
//! extras and last use, and the committed [`Mutation`]s that change them.
//! Plain data: no I/O, no locks.

use std::hash::Hasher;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU64;
use std::sync::Arc;

use ipnet::IpNet;
use latchkey_protocol::ext::TokenStatus;

/// Scopes one token may carry at most.
pub const TOKEN_SCOPES_MAX: usize = 32;
/// Client networks one token may be limited to at most.
pub const TOKEN_NETWORKS_MAX: usize = 16;

/// A keyed BLAKE3 hash of a raw token; the only form a token is kept in.
pub type TokenHash = [u8; 32];

/// What a token made with an extension command carries beyond Iggy's fields.
/// Shared by every replica; `None` on a plain token keeps those at 8 bytes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TokenExtras {
    /// 0–256 bytes.
    pub description: Box<str>,
    /// Validated scopes (`latchkey_protocol::scope`), at most
    /// [`TOKEN_SCOPES_MAX`]; empty = full access.
    pub scopes: Box<[Box<str>]>,
    /// Client networks allowed to use the token, at most
    /// [`TOKEN_NETWORKS_MAX`]; empty = any address.
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

    pub(super) fn entry(&self) -> TokenEntry {
        TokenEntry {
            hash: self.hash,
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

/// A token as a replica keeps it: everything but the last use, which is
/// kept apart (only used tokens pay for it). One allocation per token,
/// shared by every replica and both of a replica's indexes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenEntry {
    /// The key of the login lookup.
    pub hash: TokenHash,
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
    /// New scopes and networks, the name and description kept: the whole
    /// extras after an access edit, as an update carries them.
    Access {
        id: u64,
        hash: TokenHash,
        extras: Option<Arc<TokenExtras>>,
    },
    /// A new secret (and expiry) for the same token.
    Rotate {
        id: u64,
        hash: TokenHash,
        new_hash: TokenHash,
        expiry_at_us: Option<NonZeroU64>,
    },
    /// A rotate that brings a revoked token back: a new secret and expiry,
    /// and the revocation cleared.
    Reactivate {
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

/// Hashes a token or user id by one multiplication (Fibonacci hashing):
/// ids are small integers chosen by the server (a user's, by the operator),
/// so SipHash's defence buys nothing here, and the product spreads them
/// over the high bits the table's control bytes are taken from.
#[derive(Debug, Default, Clone, Copy)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(byte)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u64(&mut self, id: u64) {
        self.0 = id.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }

    /// User ids: the same multiplication.
    fn write_u32(&mut self, id: u32) {
        self.write_u64(u64::from(id));
    }
}
