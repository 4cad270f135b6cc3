//! Who may do what: the user directory, password checks, the failed-login
//! throttle, the token policy, and the server key tokens are hashed with.
//!
//! [`Auth`] is what commands consult. The users and the policy are swapped
//! whole on SIGHUP and read without a lock; the throttle holds a lock only
//! for one map lookup per login and settle. The throttle also decides what
//! the per-address limits count a client as (`address.rs`). Must never: log
//! or store a password or raw token in any form but a hash.

pub mod address;
pub mod passwords;
pub mod policy;
pub mod root;
pub mod throttle;
pub mod users;

use std::sync::Arc;

use arc_swap::{ArcSwap, Guard};

use crate::registry::TokenHash;
use passwords::PasswordVerifier;
use policy::TokenPolicy;
use throttle::LoginThrottle;
use users::Users;

/// The key tokens are hashed with (keyed BLAKE3): a token found in a copy of
/// the log or a backup is useless without the data directory's server key.
pub struct TokenKey([u8; 32]);

/// Label of the check value a shared store keeps beside its tokens: equal
/// check values mean equal keys, and the value confirms no token.
const KEY_CHECK_LABEL: &[u8] = b"latchkey token-hash key check v1";

/// Why a key file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("cannot read the key file {path}: {source}")]
    Read { path: std::path::PathBuf, source: std::io::Error },
    #[error("the key file {path} must hold exactly 32 bytes, not {bytes}")]
    Length { path: std::path::PathBuf, bytes: usize },
    #[error("the key file {path} is readable by others (mode {mode:o}); chmod 600 it")]
    Mode { path: std::path::PathBuf, mode: u32 },
}

impl TokenKey {
    pub fn new(key: [u8; 32]) -> TokenKey {
        TokenKey(key)
    }

    /// Reads a shared key file: exactly 32 bytes, readable by its owner
    /// only (make one with `head -c 32 /dev/urandom > FILE; chmod 600 FILE`).
    pub fn from_file(path: &std::path::Path) -> Result<TokenKey, KeyFileError> {
        use std::os::unix::fs::PermissionsExt;
        let read = |source| KeyFileError::Read { path: path.to_owned(), source };
        let mode = std::fs::metadata(path).map_err(read)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeyFileError::Mode { path: path.to_owned(), mode });
        }
        let mut bytes = zeroize::Zeroizing::new(std::fs::read(path).map_err(read)?);
        let key: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| KeyFileError::Length { path: path.to_owned(), bytes: bytes.len() })?;
        zeroize::Zeroize::zeroize(&mut *bytes);
        Ok(TokenKey(key))
    }

    /// A value that is equal for equal keys and tells nothing about tokens.
    pub fn check_value(&self) -> String {
        blake3::keyed_hash(&self.0, KEY_CHECK_LABEL).to_hex().to_string()
    }

    /// The only form a raw token is kept in.
    pub fn hash(&self, raw_token: &str) -> TokenHash {
        *blake3::keyed_hash(&self.0, raw_token.as_bytes()).as_bytes()
    }
}

/// Everything commands need to decide who is asking and what they may do.
pub struct Auth {
    users: ArcSwap<Users>,
    policy: ArcSwap<TokenPolicy>,
    pub passwords: PasswordVerifier,
    pub throttle: LoginThrottle,
    pub token_key: TokenKey,
    /// Calls of [`Auth::policy`], for the tests that check a request loads
    /// the policy once.
    #[cfg(test)]
    policy_loads: std::sync::atomic::AtomicU64,
}

impl Auth {
    pub fn new(
        users: Users,
        policy: TokenPolicy,
        passwords: PasswordVerifier,
        throttle: LoginThrottle,
        token_key: TokenKey,
    ) -> Auth {
        Auth {
            users: ArcSwap::from_pointee(users),
            policy: ArcSwap::from_pointee(policy),
            passwords,
            throttle,
            token_key,
            #[cfg(test)]
            policy_loads: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// The user directory as it is now (no lock).
    pub fn users(&self) -> Guard<Arc<Users>> {
        self.users.load()
    }

    /// The token policy as it is now (no lock). Load it once per request, so
    /// a reload cannot pair an old rule with a new one.
    pub fn policy(&self) -> TokenPolicy {
        #[cfg(test)]
        self.policy_loads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        **self.policy.load()
    }

    /// How many times the policy was loaded.
    #[cfg(test)]
    pub fn policy_loads(&self) -> u64 {
        self.policy_loads.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// SIGHUP: a new directory and policy, in force for the next read.
    pub fn reload(&self, users: Users, policy: TokenPolicy) {
        self.users.store(Arc::new(users));
        self.policy.store(Arc::new(policy));
    }
}
