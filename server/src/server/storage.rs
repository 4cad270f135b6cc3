//! Opening the configured store (`[storage] backend`): the token-hash key,
//! root's credentials and the recovered registry come from the data
//! directory (file) or from the cluster (etcd), and each starts its own
//! writer on the same queue.

use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::runtime::Runtime;

use super::{Options, StartError};
use crate::auth::TokenKey;
use crate::auth::root::root_credentials;
use crate::config::StorageBackend;
use crate::datadir::{DataDir, RootCredentials};
use crate::registry::{RegistryPublisher, Replica};
use crate::store::{self, CompactionPolicy, Freshness, Inbox, Recovered, StoreLimits};

/// A store opened, its writer not started yet. Made once at start and
/// consumed at once, so its variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
pub(super) enum Opened {
    File(Recovered),
    #[cfg(feature = "etcd")]
    Etcd(store::etcd::Cluster, store::etcd::Loaded),
}

/// What opening the store gives the server.
pub(super) struct Store {
    pub token_key: TokenKey,
    pub root: RootCredentials,
    pub opened: Opened,
}

/// Opens the backend the config names.
pub(super) fn open(options: &Options, data_dir: &DataDir, runtime: &Runtime) -> Result<Store, StartError> {
    match options.config.storage.backend {
        StorageBackend::File => {
            let token_key = TokenKey::new(data_dir.server_key()?);
            let root = root_credentials(data_dir, &options.root)?;
            let recovered = recover(options, data_dir)?;
            Ok(Store { token_key, root, opened: Opened::File(recovered) })
        }
        #[cfg(feature = "etcd")]
        StorageBackend::Etcd => runtime.block_on(open_etcd(options)),
        #[cfg(not(feature = "etcd"))]
        StorageBackend::Etcd => {
            let _ = runtime;
            Err(StartError::Backend(
                "[storage] backend = \"etcd\" needs a latchkey-server built with `--features etcd` \
                 (see README, Cluster mode)"
                    .to_owned(),
            ))
        }
    }
}

/// Replays the token log into a registry.
fn recover(options: &Options, data_dir: &DataDir) -> Result<Recovered, StartError> {
    let started = std::time::Instant::now();
    let system = &options.config.system;
    let policy = CompactionPolicy {
        min_records: system.compaction_min_records,
        dead_ratio: system.compaction_dead_ratio,
    };
    let recovered = store::open(data_dir.path(), policy, options.truncate_log_at)?;
    tracing::info!(
        tokens = recovered.report.tokens,
        records = recovered.report.records,
        bytes = recovered.report.file_bytes,
        elapsed_ms = started.elapsed().as_millis() as u64,
        path = %recovered.log.path().display(),
        "token log replayed"
    );
    Ok(recovered)
}

#[cfg(feature = "etcd")]
async fn open_etcd(options: &Options) -> Result<Store, StartError> {
    let etcd = &options.config.storage.etcd;
    let started = std::time::Instant::now();
    let key_file = etcd.key_file.as_deref().expect("validate requires key_file with the etcd backend");
    let token_key = TokenKey::from_file(key_file)?;
    let mut cluster = store::etcd::Cluster::connect(etcd).await?;
    cluster.check_key(&token_key).await?;
    let root = cluster.root(&options.root).await?;
    let loaded = cluster.load().await?;
    tracing::info!(
        tokens = loaded.state.len(),
        revision = loaded.revision,
        endpoints = %etcd.endpoints.join(","),
        prefix = %etcd.prefix,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "registry loaded from etcd"
    );
    Ok(Store { token_key, root, opened: Opened::Etcd(cluster, loaded) })
}

impl Opened {
    /// How current the registry is known to be: a shared store's silence
    /// past `max_staleness` makes token checks fail closed.
    pub fn freshness(&self, options: &Options) -> Freshness {
        match self {
            Opened::File(_) => {
                let _ = options;
                Freshness::always()
            }
            #[cfg(feature = "etcd")]
            Opened::Etcd(..) => Freshness::new(options.config.storage.etcd.max_staleness),
        }
    }

    /// The recovered registry, for the readers' copies.
    pub fn state(&self) -> &Replica {
        match self {
            Opened::File(recovered) => &recovered.state,
            #[cfg(feature = "etcd")]
            Opened::Etcd(_, loaded) => &loaded.state,
        }
    }

    /// Starts the backend's writer on `inbox`; it keeps the original state.
    pub fn start_writer(
        self,
        inbox: Inbox,
        limits: StoreLimits,
        publisher: RegistryPublisher,
        freshness: &Arc<Freshness>,
    ) -> JoinHandle<RegistryPublisher> {
        match self {
            Opened::File(Recovered { state, next_id, log, .. }) => {
                let _ = freshness;
                store::writer::start(inbox, state, next_id, limits, log, publisher)
            }
            #[cfg(feature = "etcd")]
            Opened::Etcd(cluster, loaded) => {
                store::etcd::start(inbox, cluster, loaded, limits, publisher, Arc::clone(freshness))
            }
        }
    }
}
