//! The user directory and password hashing.
//!
//! The directory is built at start from the root credentials (data
//! directory) and `[[users]]` (config file), shared read-only by every
//! connection, and swapped whole on SIGHUP. Checking a password against a
//! hash is `passwords.rs`'s.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::sync::Arc;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier as _, SaltString};
use arrayvec::ArrayString;

use crate::config::UserConfig;
use crate::datadir::RootCredentials;
use crate::registry::IdHasher;

/// The root user's id, as in Iggy.
pub const ROOT_USER_ID: u32 = 0;
/// Username bounds in bytes (Iggy: 3–50, code 43 outside).
pub const USERNAME_BYTES_MIN: usize = 3;
pub const USERNAME_BYTES_MAX: usize = 50;
/// Password bounds in bytes (Iggy: 3–100, code 44 outside).
pub const PASSWORD_BYTES_MIN: usize = 3;
pub const PASSWORD_BYTES_MAX: usize = 100;

/// A copy of a username that needs no allocation (a username is at most
/// [`USERNAME_BYTES_MAX`] bytes): what a token check's reply names the
/// token's owner by, made on every Authorize call.
pub type UsernameCopy = ArrayString<USERNAME_BYTES_MAX>;

/// `name` as a [`UsernameCopy`]. The directory holds names to their bounds;
/// a longer one (none gets in) is copied as empty rather than cut inside a
/// character.
pub fn copy_username(name: &str) -> UsernameCopy {
    UsernameCopy::from(name).unwrap_or_else(|_| {
        debug_assert!(false, "username over {USERNAME_BYTES_MAX} bytes in the directory");
        UsernameCopy::new_const()
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: u32,
    pub username: String,
    pub active: bool,
    /// May call Authorize (root, and users given the `authorize` permission).
    pub can_authorize: bool,
    pub(super) password_hash: String,
}

#[derive(Debug, thiserror::Error)]
#[error("invalid user {username:?}: {reason}")]
pub struct UserError {
    pub username: String,
    pub reason: String,
}

/// Every user Latchkey knows, by id and by name.
#[derive(Debug, Default)]
pub struct Users {
    /// Ids are chosen by the operator or the server, never by a client:
    /// one multiplication hashes one (a token login looks its owner up here).
    by_id: HashMap<u32, Arc<User>, BuildHasherDefault<IdHasher>>,
    by_name: HashMap<String, u32>,
}

impl Users {
    pub fn new(root: &RootCredentials, configured: &[UserConfig]) -> Result<Users, UserError> {
        let mut users = Users::default();
        users.insert(User {
            id: ROOT_USER_ID,
            username: root.username.clone(),
            active: true,
            can_authorize: true,
            password_hash: root.password_hash.clone(),
        })?;
        for user in configured {
            if user.id == ROOT_USER_ID {
                return Err(UserError {
                    username: user.username.clone(),
                    reason: "id 0 is the root user's; configured users need an id of 1 or more".into(),
                });
            }
            users.insert(User {
                id: user.id,
                username: user.username.clone(),
                active: user.active,
                can_authorize: user.permissions.iter().any(|p| p == crate::config::PERMISSION_AUTHORIZE),
                password_hash: user.password_hash.clone(),
            })?;
        }
        Ok(users)
    }

    fn insert(&mut self, user: User) -> Result<(), UserError> {
        let error = |reason: String| UserError { username: user.username.clone(), reason };
        if !(USERNAME_BYTES_MIN..=USERNAME_BYTES_MAX).contains(&user.username.len()) {
            return Err(error(format!("username must be {USERNAME_BYTES_MIN}-{USERNAME_BYTES_MAX} bytes")));
        }
        PasswordHash::new(&user.password_hash)
            .map_err(|e| error(format!("password_hash is not an Argon2 PHC string: {e}")))?;
        if self.by_id.contains_key(&user.id) {
            return Err(error(format!("id {} is used twice", user.id)));
        }
        if self.by_name.contains_key(&user.username) {
            return Err(error("username is used twice".into()));
        }
        self.by_name.insert(user.username.clone(), user.id);
        self.by_id.insert(user.id, Arc::new(user));
        Ok(())
    }

    pub fn by_id(&self, id: u32) -> Option<&Arc<User>> {
        self.by_id.get(&id)
    }

    pub fn by_name(&self, username: &str) -> Option<&Arc<User>> {
        self.by_name.get(username).and_then(|id| self.by_id.get(id))
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Users marked inactive.
    pub fn inactive(&self) -> usize {
        self.by_id.values().filter(|user| !user.active).count()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

/// Hashes a password with Argon2id and the crate's default parameters
/// (m = 19 MiB, t = 2, p = 1), as `latchkey-server hash-password` prints it.
pub fn hash_password(password: &str) -> String {
    let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .expect("Argon2 with default parameters cannot fail")
        .to_string()
}

pub(super) fn verify_phc(password: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(hash) => Argon2::default().verify_password(password.as_bytes(), &hash).is_ok(),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_username_copy_reads_back_every_name_the_directory_admits() {
        let longest = format!("{}é", "u".repeat(USERNAME_BYTES_MAX - 2));
        for name in ["iggy", "ünïcödé", longest.as_str()] {
            let copy = copy_username(name);
            assert_eq!(copy.as_str(), name);
            assert_eq!(format!("{copy:?}"), format!("{name:?}"));
        }
        assert_eq!(UsernameCopy::new_const().as_str(), "");
        assert_ne!(copy_username("iggy"), copy_username("iggz"));
    }

    fn root(password: &str) -> RootCredentials {
        RootCredentials { username: "iggy".into(), password_hash: hash_password(password) }
    }

    #[test]
    fn directory_refuses_duplicates_and_bad_hashes() {
        let config = |id, name: &str, hash: &str| UserConfig {
            id,
            username: name.into(),
            password_hash: hash.into(),
            active: true,
            permissions: Vec::new(),
        };
        let hash = hash_password("secret");
        let users = Users::new(&root("pw"), &[config(1, "alice", &hash)]).unwrap();
        assert_eq!(users.by_name("alice").map(|user| user.id), Some(1));
        assert_eq!(users.len(), 2);
        // Each refusal names the user and the rule it breaks.
        let refusal = |configured: &[UserConfig]| {
            let error = Users::new(&root("pw"), configured).unwrap_err();
            (error.username, error.reason)
        };
        let (username, reason) = refusal(&[config(0, "alice", &hash)]);
        assert_eq!(username, "alice");
        assert!(reason.contains("id 0 is the root user's"), "{reason}");
        let (username, reason) = refusal(&[config(1, "iggy", &hash)]);
        assert_eq!((username.as_str(), reason.as_str()), ("iggy", "username is used twice"));
        let (username, reason) = refusal(&[config(1, "a", &hash), config(1, "b", &hash)]);
        assert_eq!((username.as_str(), reason.as_str()), ("a", "username must be 3-50 bytes"));
        let (username, reason) = refusal(&[config(1, "alice", &hash), config(1, "bob", &hash)]);
        assert_eq!((username.as_str(), reason.as_str()), ("bob", "id 1 is used twice"));
        let (username, reason) = refusal(&[config(1, "alice", "plain")]);
        assert_eq!(username, "alice");
        assert!(reason.starts_with("password_hash is not an Argon2 PHC string"), "{reason}");
        let (username, reason) = refusal(&[config(1, "al", &hash)]);
        assert_eq!((username.as_str(), reason.as_str()), ("al", "username must be 3-50 bytes"));
    }
}
