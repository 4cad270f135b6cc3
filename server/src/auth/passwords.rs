//! Password checks: Argon2 verification off the worker threads.
//!
//! A check costs tens of milliseconds of CPU, so it runs on the runtime's
//! blocking pool, never on a worker thread: a burst of password logins
//! cannot stall token logins, which never come here. Two bounds apply,
//! from `[system]`: at most `password_threads` checks run at once, and at
//! most `password_queue` are admitted (running or waiting for a thread);
//! further callers wait, asynchronously, for room.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use latchkey_protocol::Secret;
use tokio::sync::Semaphore;

use super::users::{User, hash_password, verify_phc};

/// Runs Argon2 verifications within the two bounds above.
pub struct PasswordVerifier {
    /// Checks admitted at once (`password_queue`).
    admitted: Arc<Semaphore>,
    /// Checks running at once (`password_threads`).
    running: Arc<Semaphore>,
    dummy_hash: String,
    dummy_verifications: AtomicU64,
    /// Every check asked for, known user or not.
    verifications: AtomicU64,
}

impl PasswordVerifier {
    pub fn new(threads: usize, queue: usize) -> PasswordVerifier {
        // A hash of a random password with the same parameters as real users',
        // so checking an unknown username costs what checking a known one does.
        let dummy_hash = hash_password(&format!("{:032x}", rand::random::<u128>()));
        PasswordVerifier {
            admitted: Arc::new(Semaphore::new(queue.max(1))),
            running: Arc::new(Semaphore::new(threads.max(1))),
            dummy_hash,
            dummy_verifications: AtomicU64::new(0),
            verifications: AtomicU64::new(0),
        }
    }

    /// Verifies `password` for `user`. For an unknown user the password is
    /// checked against a dummy hash and `false` is returned, so both cases
    /// take the same time.
    pub async fn verify(&self, user: Option<&User>, password: Secret) -> bool {
        self.verifications.fetch_add(1, Ordering::Relaxed);
        let (phc, known) = match user {
            Some(user) => (user.password_hash.clone(), true),
            None => {
                self.dummy_verifications.fetch_add(1, Ordering::Relaxed);
                (self.dummy_hash.clone(), false)
            }
        };
        let Ok(admitted) = Arc::clone(&self.admitted).acquire_owned().await else { return false };
        let Ok(running) = Arc::clone(&self.running).acquire_owned().await else { return false };
        // The permits go with the check: a caller that leaves early (its
        // connection closed) does not free room while the check still runs.
        let check = tokio::task::spawn_blocking(move || {
            let ok = verify_phc(&password, &phc);
            drop((running, admitted));
            ok
        });
        check.await.unwrap_or(false) && known
    }

    /// How many times an unknown username was checked against the dummy hash.
    pub fn dummy_verifications(&self) -> u64 {
        self.dummy_verifications.load(Ordering::Relaxed)
    }

    /// How many checks were asked for in all (counted on entry, so one
    /// still waiting for a thread counts): what the failed-login throttle
    /// must keep within its burst.
    pub fn verifications(&self) -> u64 {
        self.verifications.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::users::Users;
    use crate::datadir::RootCredentials;

    fn root(password: &str) -> RootCredentials {
        RootCredentials { username: "iggy".into(), password_hash: hash_password(password) }
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
        assert_eq!(verifier.verifications(), 3);
    }
}
