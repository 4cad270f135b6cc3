//! Start-up and shutdown: everything between `main` and the connections.
//!
//! Order matters and is deliberate:
//! 1. lock the data directory (before any port is bound, so a second server
//!    on the same directory exits without ever listening);
//! 2. load the server key and the root credentials (creating them once);
//! 3. recover the registry, start the writer and the worker threads;
//! 4. bind, log the address, accept until SIGINT/SIGTERM;
//! 5. stop accepting, let in-flight requests finish (bounded), stop the
//!    writer after its last batch is durable, exit 0.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use rand::Rng;
use rand::distr::Alphanumeric;
use tokio::signal::unix::{SignalKind, signal};

use crate::config::Config;
use crate::datadir::{DataDir, DataDirError, RootCredentials};
use crate::log::{self, CompactionPolicy, LogError};
use crate::node::{ConnectionLimits, Node, Refusal, Shared};
use crate::policy::TokenPolicy;
use crate::throttle::LoginThrottle;
use crate::users::{
    PASSWORD_BYTES_MAX, PASSWORD_BYTES_MIN, PasswordVerifier, USERNAME_BYTES_MAX, USERNAME_BYTES_MIN,
    UserError, Users, hash_password,
};
use crate::writer::{self, Change, Outcome, WriterHandle, WriterLimits};

/// Root username when none is given.
pub const DEFAULT_ROOT_USERNAME: &str = "iggy";
/// Length of a generated root password.
const GENERATED_PASSWORD_CHARS: usize = 24;

/// Everything `run` needs besides the config file.
#[derive(Debug, Default)]
pub struct Options {
    pub config: Config,
    /// The file `config` was read from, re-read on SIGHUP (`None`: defaults
    /// and the environment only).
    pub config_path: Option<std::path::PathBuf>,
    /// `--with-default-root-credentials`: root is iggy/iggy on a new data directory.
    pub with_default_root_credentials: bool,
    /// `LATCHKEY_ROOT_USERNAME` / `LATCHKEY_ROOT_PASSWORD`.
    pub root_username: Option<String>,
    pub root_password: Option<String>,
    /// `--truncate-log-at OFFSET`: cut the token log there before replaying it
    /// (the way past a corruption the server refused to start on).
    pub truncate_log_at: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    DataDir(#[from] DataDirError),
    #[error(transparent)]
    User(#[from] UserError),
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("{0}")]
    RootCredentials(String),
    #[error("cannot listen on {address}: {source}")]
    Bind { address: String, source: std::io::Error },
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error("{what}: {source}")]
    Io { what: &'static str, source: std::io::Error },
}

/// Runs the server until SIGINT or SIGTERM. Blocks the calling thread.
pub fn run(options: Options) -> Result<(), StartError> {
    let config = &options.config;
    raise_open_files_limit(config.tcp.max_connections);
    disable_core_dumps();
    // First, so a bad certificate or key stops the server before it touches
    // the data directory.
    let tls = crate::tls::acceptor(&config.tcp.tls)?;
    let data_dir = DataDir::open(&config.system.path)?;
    let token_key = data_dir.server_key()?;
    let root = root_credentials(&data_dir, &options)?;
    let users = Arc::new(Users::new(&root, &config.users)?);
    tracing::info!(users = users.len(), path = %data_dir.path().display(), "data directory ready");

    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let shard_count = if config.system.shards == 0 { cores } else { config.system.shards };
    let password_threads =
        if config.system.password_threads == 0 { cores } else { config.system.password_threads };
    let verifier = Arc::new(PasswordVerifier::new(password_threads, config.system.password_queue));

    // One work-stealing runtime: `shards` worker threads serve every
    // connection (see node.rs for why this shape).
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(shard_count)
        .thread_name("latchkey-worker")
        .enable_all()
        .build()
        .map_err(|source| StartError::Io { what: "cannot start runtime", source })?;
    // Handlers first, so a signal during start-up is not the default "die".
    let _guard = runtime.enter();
    let mut terminate = signal(SignalKind::terminate())
        .map_err(|source| StartError::Io { what: "cannot install SIGTERM handler", source })?;
    let mut interrupt = signal(SignalKind::interrupt())
        .map_err(|source| StartError::Io { what: "cannot install SIGINT handler", source })?;
    let mut hangup = signal(SignalKind::hangup())
        .map_err(|source| StartError::Io { what: "cannot install SIGHUP handler", source })?;

    let started = Instant::now();
    let policy = CompactionPolicy {
        min_records: config.system.compaction_min_records,
        dead_ratio: config.system.compaction_dead_ratio,
    };
    let recovered = log::open(data_dir.path(), policy, options.truncate_log_at)?;
    tracing::info!(
        tokens = recovered.report.tokens,
        records = recovered.report.records,
        bytes = recovered.report.file_bytes,
        elapsed_ms = started.elapsed().as_millis() as u64,
        path = %recovered.log.path().display(),
        "token log replayed"
    );
    let limits = WriterLimits { max_tokens_per_user: config.personal_access_token.max_tokens_per_user };
    let (writer, inbox) = writer::channel();

    let std_listener = std::net::TcpListener::bind(&config.tcp.address)
        .map_err(|source| StartError::Bind { address: config.tcp.address.clone(), source })?;
    std_listener
        .set_nonblocking(true)
        .map_err(|source| StartError::Io { what: "cannot configure listener", source })?;
    let local_addr = std_listener
        .local_addr()
        .map_err(|source| StartError::Io { what: "cannot read listener address", source })?;
    let listener = tokio::net::TcpListener::from_std(std_listener)
        .map_err(|source| StartError::Io { what: "cannot register listener", source })?;

    let shared = Arc::new(Shared {
        users: ArcSwap::new(users),
        policy: ArcSwap::from_pointee(TokenPolicy::from_config(&config.personal_access_token)),
        verifier: Arc::clone(&verifier),
        token_key,
        writer: writer.clone(),
        max_frame_size: config.tcp.max_frame_size,
        vsr_size_max: config.tcp.vsr_size_max(),
        framing: config.tcp.framing,
        tls,
        local_addr,
        client_ids: AtomicU32::new(1),
        vsr_sessions: AtomicU64::new(1),
        connections: AtomicUsize::new(0),
        connections_per_ip: Mutex::new(HashMap::new()),
        limits: ConnectionLimits {
            max_connections: config.tcp.max_connections,
            max_connections_per_ip: config.tcp.max_connections_per_ip,
            login_timeout: config.tcp.login_timeout,
            idle_timeout: config.tcp.idle_timeout,
            max_requests_in_flight: config.tcp.max_requests_in_flight,
        },
        throttle: LoginThrottle::new(&config.login_throttle),
    });
    // Three copies of the registry: the readers' two (left-right) and the
    // writer's own. The writer's is cloned on another thread meanwhile.
    // The readers' two copies are cloned in parallel; the writer keeps the
    // recovered original.
    let writer_state = recovered.state;
    let (first, second) = std::thread::scope(|scope| {
        let second = scope.spawn(|| writer_state.clone());
        (writer_state.clone(), second.join().expect("clone of the registry"))
    });
    let (node, publisher) = Node::new(Arc::clone(&shared), first, second);
    let writer_join = writer::start(inbox, writer_state, recovered.next_id, limits, recovered.log, publisher);
    runtime.spawn(flush_last_used(Arc::clone(&node), config.personal_access_token.last_used_flush_interval));

    let cleaner = config.personal_access_token.cleaner.clone();
    if cleaner.enabled {
        runtime.spawn(clean_expired_tokens(writer.clone(), cleaner.interval));
    }
    tracing::info!(
        address = %local_addr,
        shards = shard_count,
        framing = %config.tcp.framing,
        tls = config.tcp.tls.enabled,
        "Latchkey listening on {local_addr}"
    );
    let mut refused = RefusalLog::default();
    runtime.block_on(async {
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        if let Err(refusal) = shared.admit(peer.ip()) {
                            // Closed at once; counted, and logged at most once a second.
                            refused.note(refusal, peer);
                            continue;
                        }
                        let node = Arc::clone(&node);
                        tokio::spawn(async move {
                            crate::connection::serve(stream, peer, &node).await;
                            node.shared.release(peer.ip());
                        });
                    }
                    Err(error) => {
                        // Usually EMFILE: back off instead of spinning.
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                _ = hangup.recv() => reload(options.config_path.as_deref(), &root, &shared),
                _ = terminate.recv() => break,
                _ = interrupt.recv() => break,
            }
        }
    });
    drop(listener);
    tracing::info!("shutting down: no new connections");
    node.stop_connections();
    let deadline = Instant::now() + config.system.shutdown_timeout;
    while shared.connections.load(Ordering::Relaxed) > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let open = shared.connections.load(Ordering::Relaxed);
    if open > 0 {
        tracing::warn!(open, "shutdown timeout reached; dropping open connections");
    }
    // Last uses gathered since the last flush (closed connections handed
    // theirs over) go to the log before the writer stops: a crash would lose
    // them, a clean stop does not.
    let flushed = runtime.block_on(tokio::time::timeout(Duration::from_secs(5), node.flush_last_used()));
    if flushed.is_err() {
        tracing::warn!("last-used flush at shutdown did not finish in time");
    }
    writer.stop();
    // The writer exits after its last batch is synced; the log is complete.
    let publisher = writer_join.join();
    // Connections still open past the timeout are dropped with the runtime;
    // the registry they read goes only after them.
    drop(runtime);
    drop(publisher);
    verifier.shutdown();
    tracing::info!("stopped");
    Ok(())
}

/// Writes the token uses connections handed over to the log, every
/// `interval` (`[personal_access_token] last_used_flush_interval`).
async fn flush_last_used(node: Arc<Node>, interval: Duration) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        node.flush_last_used().await;
    }
}

/// SIGHUP: re-reads the config file and the environment and applies the
/// users and the token policy. A config that does not load or validate
/// changes nothing; the error is logged.
fn reload(path: Option<&std::path::Path>, root: &RootCredentials, shared: &Shared) {
    let loaded = (|| -> Result<(Users, TokenPolicy), String> {
        let mut config = Config::from_file(path).map_err(|error| error.to_string())?;
        config.apply_env(|key| std::env::var(key).ok()).map_err(|error| error.to_string())?;
        config.validate().map_err(|error| error.to_string())?;
        let users = Users::new(root, &config.users).map_err(|error| error.to_string())?;
        Ok((users, TokenPolicy::from_config(&config.personal_access_token)))
    })();
    match loaded {
        Ok((users, policy)) => {
            let (count, inactive) = (users.len(), users.inactive());
            shared.users.store(Arc::new(users));
            shared.policy.store(Arc::new(policy));
            tracing::info!(
                users = count,
                inactive,
                ?policy,
                "SIGHUP: configuration reloaded (users, token policy)"
            );
        }
        Err(error) => tracing::error!(%error, "SIGHUP: configuration not reloaded; the running one stays"),
    }
}

/// Connections refused at accept, logged at most once a second so a flood
/// cannot flood the log too.
#[derive(Default)]
struct RefusalLog {
    since_last: u64,
    last: Option<Instant>,
}

impl RefusalLog {
    fn note(&mut self, refusal: Refusal, peer: SocketAddr) {
        self.since_last += 1;
        let now = Instant::now();
        if self.last.is_none_or(|last| now.duration_since(last) >= Duration::from_secs(1)) {
            tracing::warn!(%peer, reason = ?refusal, refused = self.since_last, "connection refused: limit reached");
            self.since_last = 0;
            self.last = Some(now);
        }
    }
}

/// File descriptors the server needs besides connections (log, lock,
/// listener, runtime internals), with room to spare.
const FILES_RESERVED: u64 = 256;

/// Sets the core-dump size limit to 0: a crash must not write the memory of
/// a process that holds passwords and tokens (however briefly) to disk.
fn disable_core_dumps() {
    let none = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: setrlimit only reads the struct passed in.
    if unsafe { libc::setrlimit(libc::RLIMIT_CORE, &none) } != 0 {
        tracing::warn!(error = %std::io::Error::last_os_error(), "cannot disable core dumps");
    }
}

/// Raises the soft open-files limit to the hard one, and says so at start if
/// even that is too low for `max_connections` (connections past it would fail
/// at accept with EMFILE, which the acceptor survives but cannot serve).
fn raise_open_files_limit(max_connections: usize) {
    // SAFETY: getrlimit/setrlimit only read and write the struct passed in.
    let limit = unsafe {
        let mut limit: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
        limit.rlim_cur
    };
    let needed = max_connections as u64 + FILES_RESERVED;
    if limit < needed {
        tracing::warn!(
            open_files_limit = limit,
            max_connections,
            "the open-files limit is too low for [tcp] max_connections: at most about {} connections \
             can be served; raise the limit (ulimit -n / LimitNOFILE) or lower max_connections",
            limit.saturating_sub(FILES_RESERVED)
        );
    } else {
        tracing::debug!(open_files_limit = limit, "open-files limit");
    }
}

/// Tokens deleted per cleaner commit, so one pass never holds up other
/// writes for long (Iggy uses the same batch size).
const CLEANER_BATCH_TOKENS: usize = 256;

/// Every `interval`, deletes expired tokens through the writer, like any
/// other delete: logged, synced, visible to every reader.
async fn clean_expired_tokens(writer: WriterHandle, interval: Duration) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        loop {
            match writer.submit(Change::PurgeExpired { max: CLEANER_BATCH_TOKENS }).await {
                Ok(Outcome::Purged { ids }) => {
                    for id in &ids {
                        tracing::info!(target: "audit", event = "token_expired_deleted", token_id = id);
                    }
                    if ids.len() < CLEANER_BATCH_TOKENS {
                        break;
                    }
                }
                Ok(other) => unreachable!("purge answered with {other:?}"),
                Err(code) => {
                    tracing::warn!(code = code.code(), "cleaner could not delete expired tokens");
                    break;
                }
            }
        }
    }
}

/// The root user's credentials: stored ones if the data directory has them,
/// otherwise chosen once (environment, default flag, or generated) and stored.
fn root_credentials(dir: &DataDir, options: &Options) -> Result<RootCredentials, StartError> {
    let from_env = match (&options.root_username, &options.root_password) {
        (Some(username), Some(password)) => Some((username.clone(), password.clone())),
        (None, None) => None,
        _ => {
            return Err(StartError::RootCredentials(
                "LATCHKEY_ROOT_USERNAME and LATCHKEY_ROOT_PASSWORD must be set together".into(),
            ));
        }
    };
    if let Some(stored) = dir.root_credentials()? {
        if from_env.is_some() || options.with_default_root_credentials {
            tracing::warn!(
                username = %stored.username,
                "root credentials already exist in the data directory; the ones given now are ignored"
            );
        }
        return Ok(stored);
    }
    let (username, password, generated) = match from_env {
        Some((username, password)) => (username, password, false),
        None if options.with_default_root_credentials => {
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
        return Err(StartError::RootCredentials(format!(
            "LATCHKEY_ROOT_USERNAME must be {USERNAME_BYTES_MIN}-{USERNAME_BYTES_MAX} bytes"
        )));
    }
    if !(PASSWORD_BYTES_MIN..=PASSWORD_BYTES_MAX).contains(&password.len()) {
        return Err(StartError::RootCredentials(format!(
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

/// The address a server listens on, for callers that only have the config.
pub fn listen_address(config: &Config) -> Option<SocketAddr> {
    config.tcp.address.parse().ok()
}
