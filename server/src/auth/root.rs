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
    let from_env = match (&given.username, &given.password) {
        (Some(username), Some(password)) => Some((username.clone(), password.clone())),
        (None, None) => None,
        _ => {
            return Err(RootError::Invalid(
                "LATCHKEY_ROOT_USERNAME and LATCHKEY_ROOT_PASSWORD must be set together".into(),
            ));
        }
    };
    if let Some(stored) = dir.root_credentials()? {
        if from_env.is_some() || given.with_default {
            tracing::warn!(
                username = %stored.username,
                "root credentials already exist in the data directory; the ones given now are ignored"
            );
        }
        return Ok(stored);
    }
    let (username, password, generated) = match from_env {
        Some((username, password)) => (username, password, false),
        None if given.with_default => {
            (DEFAULT_ROOT_USERNAME.to_owned(), DEFAULT_ROOT_USERNAME.to_owned(), false)
        }
        None => {
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
    dir.store_root_credentials(&root)?;
    if generated {
        // Straight to stderr, once, never through the log.
        eprintln!(
            "Generated root credentials (shown once, not stored): username {} password {password}",
            root.username
        );
    }
    tracing::info!(username = %root.username, "root credentials created");
    Ok(root)
}
