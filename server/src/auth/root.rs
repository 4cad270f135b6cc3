//! The root user's credentials: read from the data directory, or chosen
//! once (environment, the default flag, or generated) and stored there as
//! an Argon2 hash. A generated password is printed once to stderr, never
//! logged and never stored in the clear.

use rand::Rng;
use rand::distr::Alphanumeric;

use super::users::{
    PASSWORD_BYTES_MAX, PASSWORD_BYTES_MIN, USERNAME_BYTES_MAX, USERNAME_BYTES_MIN, hash_password,
};
use crate::datadir::{DataDir, DataDirError, RootCredentials};

/// Root username when none is given.
pub const DEFAULT_ROOT_USERNAME: &str = "iggy";
/// Length of a generated root password.
const GENERATED_PASSWORD_CHARS: usize = 24;

/// What the operator gave for root, used only on a data directory without one.
#[derive(Debug, Default)]
pub struct RootGiven {
    /// `LATCHKEY_ROOT_USERNAME` / `LATCHKEY_ROOT_PASSWORD`.
    pub username: Option<String>,
    pub password: Option<String>,
    /// `--with-default-root-credentials`: root is iggy/iggy.
    pub with_default: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum RootError {
    #[error(transparent)]
    DataDir(#[from] DataDirError),
    #[error("{0}")]
    Invalid(String),
}

/// The root user's credentials: stored ones if the data directory has them,
/// otherwise chosen once (environment, default flag, or generated) and stored.
pub fn root_credentials(dir: &DataDir, given: &RootGiven) -> Result<RootCredentials, RootError> {
    given.check()?;
    if let Some(stored) = dir.root_credentials()? {
        given.warn_ignored(&stored, "the data directory");
        return Ok(stored);
    }
    let chosen = given.choose()?;
    dir.store_root_credentials(&chosen.root)?;
    Ok(chosen.announce())
}

/// Root credentials chosen now, before they are stored.
pub struct ChosenRoot {
    pub root: RootCredentials,
    /// The password, when Latchkey generated it (shown once, then gone).
    generated: Option<String>,
}

impl ChosenRoot {
    /// Says, once, what was chosen (a generated password straight to
    /// stderr, never through the log). Call only after storing won.
    pub fn announce(self) -> RootCredentials {
        if let Some(password) = &self.generated {
            eprintln!(
                "Generated root credentials (shown once, not stored): username {} password {password}",
                self.root.username
            );
        }
        tracing::info!(username = %self.root.username, "root credentials created");
        self.root
    }
}

impl RootGiven {
    /// The environment gives both or neither.
    pub fn check(&self) -> Result<(), RootError> {
        if self.username.is_some() != self.password.is_some() {
            return Err(RootError::Invalid(
                "LATCHKEY_ROOT_USERNAME and LATCHKEY_ROOT_PASSWORD must be set together".into(),
            ));
        }
        Ok(())
    }

    /// Root exists already (in `place`): what was given now is ignored.
    pub fn warn_ignored(&self, stored: &RootCredentials, place: &str) {
        if self.username.is_some() || self.with_default {
            tracing::warn!(
                username = %stored.username,
                "root credentials already exist in {place}; the ones given now are ignored"
            );
        }
    }

    /// Chooses root's credentials: the environment's, iggy/iggy with the
    /// default flag, or iggy with a generated password; hashed with Argon2.
    pub fn choose(&self) -> Result<ChosenRoot, RootError> {
        self.check()?;
        let (username, password, generated) = match (&self.username, &self.password) {
            (Some(username), Some(password)) => (username.clone(), password.clone(), false),
            _ if self.with_default => {
                (DEFAULT_ROOT_USERNAME.to_owned(), DEFAULT_ROOT_USERNAME.to_owned(), false)
            }
            _ => {
                let password: String = rand::rng()
                    .sample_iter(Alphanumeric)
                    .take(GENERATED_PASSWORD_CHARS)
                    .map(char::from)
                    .collect();
                (DEFAULT_ROOT_USERNAME.to_owned(), password, true)
            }
        };
        if !(USERNAME_BYTES_MIN..=USERNAME_BYTES_MAX).contains(&username.len()) {
            return Err(RootError::Invalid(format!(
                "LATCHKEY_ROOT_USERNAME must be {USERNAME_BYTES_MIN}-{USERNAME_BYTES_MAX} bytes"
            )));
        }
        if !(PASSWORD_BYTES_MIN..=PASSWORD_BYTES_MAX).contains(&password.len()) {
            return Err(RootError::Invalid(format!(
                "LATCHKEY_ROOT_PASSWORD must be {PASSWORD_BYTES_MIN}-{PASSWORD_BYTES_MAX} bytes"
            )));
        }
        let root = RootCredentials { username, password_hash: hash_password(&password) };
        Ok(ChosenRoot { root, generated: generated.then_some(password) })
    }
}
