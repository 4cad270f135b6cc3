//! Users and password verification.
//!
//! The user directory is built at start from the root credentials (data
//! directory) and `[[users]]` (config file), shared read-only by every
//! connection, and swapped whole on SIGHUP. Argon2 verification runs on a small dedicated thread pool so a
//! burst of password logins never stalls a worker thread; token logins
//! never touch it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier as _, SaltString};
use tokio::sync::{Semaphore, oneshot};

use crate::config::UserConfig;
use crate::datadir::RootCredentials;

/// The root user's id, as in Iggy.
pub const ROOT_USER_ID: u32 = 0;
/// Username bounds in bytes (Iggy: 3–50, code 43 outside).
pub const USERNAME_BYTES_MIN: usize = 3;
pub const USERNAME_BYTES_MAX: usize = 50;
/// Password bounds in bytes (Iggy: 3–100, code 44 outside).
pub const PASSWORD_BYTES_MIN: usize = 3;
pub const PASSWORD_BYTES_MAX: usize = 100;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: u32,
    pub username: String,
    pub active: bool,
    /// May call Authorize (root, and users given the `authorize` permission).
    pub can_authorize: bool,
    password_hash: String,
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
    by_id: HashMap<u32, Arc<User>>,
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

fn verify_phc(password: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(hash) => Argon2::default().verify_password(password.as_bytes(), &hash).is_ok(),
        Err(_) => false,
    }
}

type Job = Box<dyn FnOnce() + Send>;

/// Runs Argon2 verifications on `threads` dedicated threads. At most `queue`
/// checks wait at once; further callers wait asynchronously for a slot.
pub struct PasswordVerifier {
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    slots: Arc<Semaphore>,
    dummy_hash: String,
    dummy_verifications: AtomicU64,
}

impl PasswordVerifier {
    pub fn new(threads: usize, queue: usize) -> PasswordVerifier {
        let (sender, receiver) = mpsc::channel::<Job>();
        let receiver = Arc::new(Mutex::new(receiver));
        for index in 0..threads.max(1) {
            let receiver = Arc::clone(&receiver);
            std::thread::Builder::new()
                .name(format!("latchkey-argon2-{index}"))
                .spawn(move || {
                    loop {
                        // The lock is held only while taking a job, not while running it.
                        let job = match receiver.lock() {
                            Ok(receiver) => receiver.recv(),
                            Err(_) => return,
                        };
                        match job {
                            Ok(job) => job(),
                            Err(_) => return,
                        }
                    }
                })
                .expect("spawn password thread");
        }
        // A hash of a random password with the same parameters as real users',
        // so checking an unknown username costs what checking a known one does.
        let dummy_hash = hash_password(&format!("{:032x}", rand::random::<u128>()));
        PasswordVerifier {
            jobs: Mutex::new(Some(sender)),
            slots: Arc::new(Semaphore::new(queue.max(1))),
            dummy_hash,
            dummy_verifications: AtomicU64::new(0),
        }
    }

    /// Verifies `password` for `user`. For an unknown user the password is
    /// checked against a dummy hash and `false` is returned, so both cases
    /// take the same time.
    pub async fn verify(&self, user: Option<&User>, password: latchkey_protocol::Secret) -> bool {
        let (phc, known) = match user {
            Some(user) => (user.password_hash.clone(), true),
            None => {
                self.dummy_verifications.fetch_add(1, Ordering::Relaxed);
                (self.dummy_hash.clone(), false)
            }
        };
        let Ok(_slot) = self.slots.acquire().await else {
            return false;
        };
        let (reply, result) = oneshot::channel();
        let job: Job = Box::new(move || {
            let ok = verify_phc(&password, &phc);
            let _ = reply.send(ok);
        });
        let sent = match self.jobs.lock() {
            Ok(jobs) => jobs.as_ref().is_some_and(|jobs| jobs.send(job).is_ok()),
            Err(_) => false,
        };
        sent && result.await.unwrap_or(false) && known
    }

    /// How many times an unknown username was checked against the dummy hash.
    pub fn dummy_verifications(&self) -> u64 {
        self.dummy_verifications.load(Ordering::Relaxed)
    }

    /// Stops the worker threads once queued checks are done.
    pub fn shutdown(&self) {
        if let Ok(mut jobs) = self.jobs.lock() {
            jobs.take();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(Users::new(&root("pw"), &[config(1, "alice", &hash)]).is_ok());
        assert!(Users::new(&root("pw"), &[config(0, "alice", &hash)]).is_err());
        assert!(Users::new(&root("pw"), &[config(1, "iggy", &hash)]).is_err());
        assert!(Users::new(&root("pw"), &[config(1, "a", &hash), config(1, "b", &hash)]).is_err());
        assert!(Users::new(&root("pw"), &[config(1, "alice", "plain")]).is_err());
        assert!(Users::new(&root("pw"), &[config(1, "al", &hash)]).is_err());
    }

    #[tokio::test]
    async fn unknown_user_runs_the_dummy_verification() {
        let users = Users::new(&root("right"), &[]).unwrap();
        let verifier = PasswordVerifier::new(1, 4);
        let root_user = users.by_name("iggy").map(|u| u.as_ref());
        assert!(verifier.verify(root_user, "right".to_owned().into()).await);
        assert!(!verifier.verify(root_user, "wrong".to_owned().into()).await);
        assert_eq!(verifier.dummy_verifications(), 0);
        // Even the dummy hash's own password must not log an unknown user in.
        assert!(!verifier.verify(None, "right".to_owned().into()).await);
        assert_eq!(verifier.dummy_verifications(), 1);
    }
}
