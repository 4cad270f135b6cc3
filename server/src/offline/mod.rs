//! Tools that run instead of the server, on its store, while no server
//! holds the data directory: moving every token out of a store into a file
//! and into another store (`export`, `import`, here), reading the token
//! log without changing it (`log verify|dump|stats`, in [`log_tools`]), and
//! the online backup of a running server and the restore of one
//! (`backup`, `restore`, in [`backup`]).
//!
//! The file is an ordinary compacted token log (README, "The token log"):
//! every token with its id, keyed hash, times, scopes, networks, revocation
//! and last use, and the id counter. It holds no raw token, but its hashes
//! confirm tokens to whoever has the key they were made with: keep it as
//! private as the data directory. Tokens keep working after a move only
//! with the same key: the file backend's `server.key` becomes the cluster's
//! `key_file` (and back).

pub mod backup;
pub mod log_tools;

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::config::{Config, StorageBackend};
use crate::datadir::{DataDir, DataDirError};
use crate::registry::{Replica, TokenRecord};
use crate::store::log::{LOG_FILE, encode_snapshot};
use crate::store::{self, CompactionPolicy, LogError};

#[derive(Debug, thiserror::Error)]
pub enum OfflineError {
    #[error(transparent)]
    DataDir(#[from] DataDirError),
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("{what} {path}: {source}")]
    Io { what: &'static str, path: PathBuf, source: std::io::Error },
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    KeyFile(#[from] crate::auth::KeyFileError),
    #[cfg(feature = "etcd")]
    #[error(transparent)]
    Etcd(#[from] crate::store::etcd::EtcdError),
}

/// Writes every token of the configured store to `out` (created, never
/// overwritten, mode 0600). Returns how many.
pub fn export(config: &Config, out: &Path) -> Result<usize, OfflineError> {
    let (state, next_id) = match config.storage.backend {
        StorageBackend::File => {
            let dir = DataDir::open(&config.system.path)?;
            let never = CompactionPolicy { min_records: u64::MAX, dead_ratio: 1.0 };
            let recovered = store::open(dir.path(), never, None)?;
            (recovered.state, recovered.next_id)
        }
        StorageBackend::Etcd => etcd::load(config)?,
    };
    let tokens: Vec<TokenRecord> = state.records().collect();
    let bytes = encode_snapshot(&tokens, next_id, 0, crate::clock::now_us());
    let io = |what| move |source| OfflineError::Io { what, path: out.to_owned(), source };
    let mut file =
        OpenOptions::new().write(true).create_new(true).mode(0o600).open(out).map_err(io("cannot create"))?;
    file.write_all(&bytes).map_err(io("cannot write"))?;
    file.sync_all().map_err(io("cannot sync"))?;
    Ok(tokens.len())
}

/// Reads an export and writes every token into the configured store, which
/// must hold none yet. Returns how many.
pub fn import(config: &Config, input: &Path) -> Result<usize, OfflineError> {
    let bytes = std::fs::read(input).map_err(|source| OfflineError::Io {
        what: "cannot read",
        path: input.to_owned(),
        source,
    })?;
    let (state, next_id) = store::read_file(input, &bytes)?;
    match config.storage.backend {
        StorageBackend::File => {
            let dir = DataDir::open(&config.system.path)?;
            refuse_tokens_in(&dir)?;
            dir.write_private(LOG_FILE, &bytes)?;
            Ok(state.len())
        }
        StorageBackend::Etcd => etcd::import(config, &state, next_id),
    }
}

/// An import never merges: the data directory's log must hold no token and
/// have given out no id.
fn refuse_tokens_in(dir: &DataDir) -> Result<(), OfflineError> {
    let path = dir.path().join(LOG_FILE);
    let Ok(bytes) = std::fs::read(&path) else { return Ok(()) };
    if bytes.is_empty() {
        return Ok(());
    }
    let (state, next_id) = store::read_file(&path, &bytes)?;
    if !state.is_empty() || next_id > 1 {
        return Err(OfflineError::Refused(format!(
            "{} already holds tokens (or gave out ids); import only into a new data directory",
            path.display()
        )));
    }
    Ok(())
}

#[cfg(feature = "etcd")]
mod etcd {
    use super::{Config, OfflineError, Replica};
    use crate::auth::TokenKey;
    use crate::store::etcd::Cluster;

    fn connect(config: &Config) -> Result<(tokio::runtime::Runtime, Cluster), OfflineError> {
        let runtime =
            tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|source| {
                OfflineError::Io { what: "cannot start runtime for", path: "etcd".into(), source }
            })?;
        let etcd = &config.storage.etcd;
        let key_file = etcd.key_file.as_deref().expect("validate requires key_file with the etcd backend");
        let key = TokenKey::from_file(key_file)?;
        let cluster = runtime.block_on(async {
            let mut cluster = Cluster::connect(etcd).await?;
            cluster.check_key(&key).await?;
            Ok::<_, OfflineError>(cluster)
        })?;
        Ok((runtime, cluster))
    }

    pub(super) fn load(config: &Config) -> Result<(Replica, u64), OfflineError> {
        let (runtime, mut cluster) = connect(config)?;
        let loaded = runtime.block_on(cluster.load())?;
        Ok((loaded.state, loaded.next_id))
    }

    pub(super) fn import(config: &Config, state: &Replica, next_id: u64) -> Result<usize, OfflineError> {
        let (runtime, mut cluster) = connect(config)?;
        Ok(runtime.block_on(cluster.import(state, next_id))?)
    }
}

#[cfg(not(feature = "etcd"))]
mod etcd {
    use super::{Config, OfflineError, Replica};

    fn unbuilt() -> OfflineError {
        OfflineError::Refused(
            "[storage] backend = \"etcd\" needs a latchkey-server built with `--features etcd`".to_owned(),
        )
    }

    pub(super) fn load(_: &Config) -> Result<(Replica, u64), OfflineError> {
        Err(unbuilt())
    }

    pub(super) fn import(_: &Config, _: &Replica, _: u64) -> Result<usize, OfflineError> {
        Err(unbuilt())
    }
}
