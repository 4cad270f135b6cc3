//! The data directory: created 0700, locked for the life of the process, and
//! holding the files that must never be world-readable (all 0600): the server
//! key that keys token hashes, and the root user's credentials.
//!
//! The lock is taken before any port is bound, so a second server pointed at
//! the same directory exits without ever listening. Tools that only read the
//! directory take it shared ([`DataDir::lock_shared`]): never beside a
//! server, and each only for as long as it reads.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rand::TryRngCore;
use serde::{Deserialize, Serialize};

/// Bytes of the token-hashing key.
pub const SERVER_KEY_BYTES: usize = 32;
const LOCK_FILE: &str = "latchkey.lock";
pub const SERVER_KEY_FILE: &str = "server.key";
pub const ROOT_FILE: &str = "root.toml";

#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    #[error("data directory {path} is in use by another latchkey-server (lock held on {lock})")]
    Locked { path: PathBuf, lock: PathBuf },
    #[error("{what} {path}: {source}")]
    Io { what: &'static str, path: PathBuf, source: io::Error },
    #[error("{path} is damaged: {reason}")]
    Damaged { path: PathBuf, reason: String },
}

fn io_error<'p>(what: &'static str, path: &'p Path) -> impl FnOnce(io::Error) -> DataDirError + 'p {
    move |source| DataDirError::Io { what, path: path.to_owned(), source }
}

/// An open, exclusively locked data directory. The lock is released when
/// this value is dropped (or the process ends).
#[derive(Debug)]
pub struct DataDir {
    path: PathBuf,
    _lock: File,
}

/// A shared hold on a data directory's lock, for a tool that only reads
/// the directory. Released when dropped.
#[derive(Debug)]
pub struct SharedLock {
    _lock: Option<File>,
}

/// Root credentials as kept in the data directory: a username and an Argon2
/// PHC hash, never the password.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RootCredentials {
    pub username: String,
    pub password_hash: String,
}

impl DataDir {
    /// Creates `path` (mode 0700) if missing and locks it exclusively.
    pub fn open(path: &Path) -> Result<DataDir, DataDirError> {
        if !path.exists() {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(path)
                .map_err(io_error("cannot create data directory", path))?;
        }
        let lock_path = path.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&lock_path)
            .map_err(io_error("cannot open lock file", &lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                return Err(DataDirError::Locked { path: path.to_owned(), lock: lock_path });
            }
            Err(fs::TryLockError::Error(source)) => {
                return Err(DataDirError::Io { what: "cannot lock", path: lock_path, source });
            }
        }
        Ok(DataDir { path: path.to_owned(), _lock: lock })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Takes `path`'s lock shared, creating nothing: refused (`Locked`)
    /// while a server holds the directory, and while it is held a server
    /// cannot start there. A directory without a lock file has never had a
    /// server (or is a copy without one): nothing to take, nothing refused.
    pub fn lock_shared(path: &Path) -> Result<SharedLock, DataDirError> {
        if !path.is_dir() {
            let source = io::Error::new(io::ErrorKind::NotFound, "no such directory");
            return Err(DataDirError::Io {
                what: "cannot open data directory",
                path: path.to_owned(),
                source,
            });
        }
        let lock_path = path.join(LOCK_FILE);
        let lock = match File::open(&lock_path) {
            Ok(lock) => lock,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(SharedLock { _lock: None }),
            Err(error) => return Err(io_error("cannot open lock file", &lock_path)(error)),
        };
        match lock.try_lock_shared() {
            Ok(()) => Ok(SharedLock { _lock: Some(lock) }),
            Err(fs::TryLockError::WouldBlock) => {
                Err(DataDirError::Locked { path: path.to_owned(), lock: lock_path })
            }
            Err(fs::TryLockError::Error(source)) => {
                Err(DataDirError::Io { what: "cannot lock", path: lock_path, source })
            }
        }
    }

    /// The 32-byte key for `blake3::keyed_hash`, created from the OS CSPRNG on
    /// the first start. Without it, a copy of the token log confirms nothing.
    pub fn server_key(&self) -> Result<[u8; SERVER_KEY_BYTES], DataDirError> {
        let path = self.path.join(SERVER_KEY_FILE);
        match File::open(&path) {
            Ok(mut file) => {
                let mut key = [0u8; SERVER_KEY_BYTES];
                let mut rest = Vec::new();
                file.read_exact(&mut key).map_err(|_| DataDirError::Damaged {
                    path: path.clone(),
                    reason: format!("expected {SERVER_KEY_BYTES} bytes"),
                })?;
                file.read_to_end(&mut rest).map_err(io_error("cannot read", &path))?;
                if !rest.is_empty() {
                    return Err(DataDirError::Damaged {
                        path,
                        reason: format!("expected {SERVER_KEY_BYTES} bytes"),
                    });
                }
                Ok(key)
            }
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                let mut key = [0u8; SERVER_KEY_BYTES];
                rand::rngs::OsRng
                    .try_fill_bytes(&mut key)
                    .map_err(|e| io_error("cannot read OS randomness for", &path)(io::Error::other(e)))?;
                self.write_private(SERVER_KEY_FILE, &key)?;
                Ok(key)
            }
            Err(error) => Err(io_error("cannot open", &path)(error)),
        }
    }

    /// The stored root credentials, if a previous start created them.
    pub fn root_credentials(&self) -> Result<Option<RootCredentials>, DataDirError> {
        let path = self.path.join(ROOT_FILE);
        match fs::read_to_string(&path) {
            Ok(text) => toml::from_str(&text)
                .map(Some)
                .map_err(|error| DataDirError::Damaged { path, reason: error.to_string() }),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(io_error("cannot read", &path)(error)),
        }
    }

    pub fn store_root_credentials(&self, root: &RootCredentials) -> Result<(), DataDirError> {
        let text = toml::to_string(root).expect("root credentials serialize");
        self.write_private(ROOT_FILE, text.as_bytes())
    }

    /// Writes `name` atomically with mode 0600: temp file, fsync, rename,
    /// fsync of the directory. A crash leaves the old file or the new one.
    pub fn write_private(&self, name: &str, bytes: &[u8]) -> Result<(), DataDirError> {
        let path = self.path.join(name);
        let temp = self.path.join(format!("{name}.tmp"));
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temp)
            .map_err(io_error("cannot create", &temp))?;
        // The mode above applies only to new files; make sure of it anyway.
        file.set_permissions(fs::Permissions::from_mode(0o600))
            .map_err(io_error("cannot set permissions of", &temp))?;
        file.write_all(bytes).map_err(io_error("cannot write", &temp))?;
        file.sync_all().map_err(io_error("cannot sync", &temp))?;
        fs::rename(&temp, &path).map_err(io_error("cannot rename", &temp))?;
        sync_dir(&self.path)
    }
}

/// Makes a rename or file creation in `dir` durable.
pub fn sync_dir(dir: &Path) -> Result<(), DataDirError> {
    File::open(dir).and_then(|dir| dir.sync_all()).map_err(io_error("cannot sync directory", dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_open_of_the_same_directory_is_refused() {
        let temp = tempfile::tempdir().unwrap();
        let path = temp.path().join("data");
        let first = DataDir::open(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        let error = DataDir::open(&path).unwrap_err();
        assert!(matches!(error, DataDirError::Locked { .. }), "{error}");
        drop(first);
        DataDir::open(&path).unwrap();
    }

    #[test]
    fn a_shared_lock_is_refused_beside_a_server_and_keeps_one_from_starting() {
        let temp = tempfile::tempdir().unwrap();
        let path = temp.path().join("data");
        assert!(matches!(DataDir::lock_shared(&path), Err(DataDirError::Io { .. })));
        assert!(!path.exists(), "a reading tool creates nothing");
        let server = DataDir::open(&path).unwrap();
        let error = DataDir::lock_shared(&path).unwrap_err();
        assert!(matches!(error, DataDirError::Locked { .. }), "{error}");
        drop(server);
        let first = DataDir::lock_shared(&path).unwrap();
        let _second = DataDir::lock_shared(&path).unwrap();
        assert!(matches!(DataDir::open(&path), Err(DataDirError::Locked { .. })));
        drop((first, _second));
        DataDir::open(&path).unwrap();
    }

    #[test]
    fn server_key_is_created_once_with_mode_0600() {
        let temp = tempfile::tempdir().unwrap();
        let dir = DataDir::open(temp.path()).unwrap();
        let key = dir.server_key().unwrap();
        assert_ne!(key, [0u8; 32]);
        assert_eq!(dir.server_key().unwrap(), key);
        let mode = fs::metadata(temp.path().join(SERVER_KEY_FILE)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        fs::write(temp.path().join(SERVER_KEY_FILE), b"short").unwrap();
        assert!(matches!(dir.server_key(), Err(DataDirError::Damaged { .. })));
    }

    #[test]
    fn root_credentials_round_trip() {
        let temp = tempfile::tempdir().unwrap();
        let dir = DataDir::open(temp.path()).unwrap();
        assert_eq!(dir.root_credentials().unwrap(), None);
        let root = RootCredentials { username: "iggy".into(), password_hash: "$argon2id$x".into() };
        dir.store_root_credentials(&root).unwrap();
        assert_eq!(dir.root_credentials().unwrap(), Some(root));
    }
}
