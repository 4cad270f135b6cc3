//! Start-up, serving and shutdown: everything between `main` and the
//! connections, in three steps that [`run`] takes in order.
//!
//! 1. [`start`]: limits, TLS (before the data directory, so a bad
//!    certificate stops the server before it touches anything), the data
//!    directory's lock (before any port is bound, so a second server on the
//!    same directory exits without ever listening), the server key and root
//!    credentials, recovery of the registry, the writer, the worker
//!    runtime, the listener;
//! 2. [`Running::serve`]: accept until SIGINT or SIGTERM; SIGHUP reloads;
//! 3. [`Running::shutdown`]: stop accepting, let in-flight requests finish
//!    (bounded), write the last token uses, stop the writer after its last
//!    batch is durable.

mod limits;
mod storage;
mod systemd;
mod tasks;

use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::runtime::Runtime;
use tokio::signal::unix::{Signal, SignalKind, signal};

use crate::auth::Auth;
use crate::auth::passwords::PasswordVerifier;
use crate::auth::policy::TokenPolicy;
use crate::auth::root::{RootError, RootGiven};
use crate::auth::throttle::LoginThrottle;
use crate::auth::users::{UserError, Users};
use crate::command::Context;
use crate::config::Config;
use crate::datadir::{DataDir, DataDirError, RootCredentials};
use crate::http::HttpSide;
use crate::net::{self, ConnectionLimits, Connections, RefusalLog};
use crate::registry::{Readers, RegistryPublisher, UseLedger};
use crate::store::{self, LogError, StoreLimits, WriterHandle};
use storage::Store;

/// Everything `run` needs besides the config file.
#[derive(Debug, Default)]
pub struct Options {
    pub config: Config,
    /// The file `config` was read from, re-read on SIGHUP (`None`: defaults
    /// and the environment only).
    pub config_path: Option<PathBuf>,
    /// What the operator gave for root (used on a new data directory only).
    pub root: RootGiven,
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
    #[error(transparent)]
    Root(#[from] RootError),
    #[error("cannot listen on {address}: {source}")]
    Bind { address: String, source: std::io::Error },
    #[error(transparent)]
    Tls(#[from] crate::net::tls::TlsError),
    #[error("{what}: {source}")]
    Io { what: &'static str, source: std::io::Error },
    #[error(transparent)]
    KeyFile(#[from] crate::auth::KeyFileError),
    #[error("{0}")]
    Backend(String),
    #[cfg(feature = "etcd")]
    #[error(transparent)]
    Etcd(#[from] crate::store::etcd::EtcdError),
}

/// Runs the server until SIGINT or SIGTERM. Blocks the calling thread.
pub fn run(options: Options) -> Result<(), StartError> {
    let mut running = start(&options)?;
    running.serve(options.config_path.as_deref());
    running.shutdown();
    Ok(())
}

/// A started server, ready to serve.
pub struct Running {
    runtime: Runtime,
    listener: TcpListener,
    connections: Arc<Connections>,
    /// The HTTP listener and what its connections share, when `[http]` is on.
    http: Option<(TcpListener, Arc<HttpSide>)>,
    ctx: Arc<Context>,
    writer_join: JoinHandle<RegistryPublisher>,
    signals: Signals,
    /// systemd's notify socket, when it runs the server (`Type=notify`).
    systemd: systemd::Notifier,
    root: RootCredentials,
    shutdown_timeout: Duration,
    /// Holds the data directory's lock until the server is gone.
    _data_dir: DataDir,
}

struct Signals {
    terminate: Signal,
    interrupt: Signal,
    hangup: Signal,
}

/// Step 1: everything up to a bound listener (see the module doc for the
/// order and why).
pub fn start(options: &Options) -> Result<Running, StartError> {
    let config = &options.config;
    limits::raise_open_files_limit(config.tcp.max_connections);
    limits::disable_core_dumps();
    crate::clock::calibrate();
    let tls = net::tls::acceptor(&config.tcp.tls)?;
    let http_tls = if config.http.enabled { net::tls::acceptor(&config.http.tls)? } else { None };
    let data_dir = DataDir::open(&config.system.path)?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let or_cores = |configured: usize| if configured == 0 { cores } else { configured };
    let workers = or_cores(config.system.shards);
    let runtime = worker_runtime(workers)?;
    // Handlers first, so a signal during start-up is not the default "die".
    let _guard = runtime.enter();
    let signals = Signals::install()?;

    let Store { token_key, root, opened } = storage::open(options, &data_dir, &runtime)?;
    let users = Users::new(&root, &config.users)?;
    tracing::info!(users = users.len(), path = %data_dir.path().display(), "data directory ready");
    let passwords =
        PasswordVerifier::new(or_cores(config.system.password_threads), config.system.password_queue);
    let (writer, inbox) = store::writer::channel();
    let listener = bind(&config.tcp.address)?;
    let local_addr = listener
        .local_addr()
        .map_err(|source| StartError::Io { what: "cannot read listener address", source })?;
    let limits = StoreLimits { max_tokens_per_user: config.personal_access_token.max_tokens_per_user };
    // Three replicas of the registry: the readers' two (left-right) and the
    // writer's own, the recovered original. The clones share its entries,
    // so each costs its indexes' pointers only.
    let state = opened.state();
    let (readers, publisher) = Readers::new(state.clone(), state.clone());
    let freshness = Arc::new(opened.freshness(options));
    let writer_join = opened.start_writer(inbox, limits, publisher, &freshness);
    let auth = Auth::new(
        users,
        TokenPolicy::from_config(&config.personal_access_token),
        passwords,
        LoginThrottle::new(&config.login_throttle),
        token_key,
    );
    let ctx = Arc::new(Context {
        auth,
        registry: readers,
        uses: UseLedger::default(),
        writer: writer.clone(),
        freshness,
        local_addr,
    });
    let connections = Arc::new(Connections::new(connection_limits(config), config.tcp.framing, tls));
    let http = if config.http.enabled {
        let listener = bind(&config.http.address)?;
        let address = listener
            .local_addr()
            .map_err(|source| StartError::Io { what: "cannot read HTTP listener address", source })?;
        // Said before the TCP line: tools wait for that one, and find this
        // one already written.
        tracing::info!(address = %address, tls = config.http.tls.enabled, "HTTP listening on {address}");
        Some((listener, Arc::new(HttpSide::new(&config.http, http_tls, local_addr))))
    } else {
        None
    };
    start_tasks(config, &ctx, &writer);
    tracing::info!(
        address = %local_addr,
        shards = workers,
        framing = %config.tcp.framing,
        tls = config.tcp.tls.enabled,
        "Latchkey listening on {local_addr}"
    );
    Ok(Running {
        runtime,
        listener,
        connections,
        http,
        ctx,
        writer_join,
        signals,
        systemd: systemd::Notifier::from_env(),
        root,
        shutdown_timeout: config.system.shutdown_timeout,
        _data_dir: data_dir,
    })
}

/// Accepts one HTTP connection, or waits forever when `[http]` is off.
async fn accept_http(
    http: Option<&(TcpListener, Arc<HttpSide>)>,
    ctx: &Arc<Context>,
    refused: &mut RefusalLog,
) {
    match http {
        Some((listener, side)) => crate::http::accept(listener, side, ctx, refused).await,
        None => std::future::pending().await,
    }
}

/// One work-stealing runtime: a worker thread per core (`[system] shards`)
/// serves every connection, so an idle core takes work from a busy one.
fn worker_runtime(workers: usize) -> Result<Runtime, StartError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .thread_name("latchkey-worker")
        .enable_all()
        .build()
        .map_err(|source| StartError::Io { what: "cannot start runtime", source })
}

impl Signals {
    fn install() -> Result<Signals, StartError> {
        let install = |kind: SignalKind, what: &'static str| {
            signal(kind).map_err(|source| StartError::Io { what, source })
        };
        Ok(Signals {
            terminate: install(SignalKind::terminate(), "cannot install SIGTERM handler")?,
            interrupt: install(SignalKind::interrupt(), "cannot install SIGINT handler")?,
            hangup: install(SignalKind::hangup(), "cannot install SIGHUP handler")?,
        })
    }
}

/// Binds the TCP listener (inside the runtime).
fn bind(address: &str) -> Result<TcpListener, StartError> {
    let listener = std::net::TcpListener::bind(address)
        .map_err(|source| StartError::Bind { address: address.to_owned(), source })?;
    listener
        .set_nonblocking(true)
        .map_err(|source| StartError::Io { what: "cannot configure listener", source })?;
    TcpListener::from_std(listener)
        .map_err(|source| StartError::Io { what: "cannot register listener", source })
}

fn connection_limits(config: &Config) -> ConnectionLimits {
    ConnectionLimits {
        max_connections: config.tcp.max_connections,
        max_connections_per_ip: config.tcp.max_connections_per_ip,
        login_timeout: config.tcp.login_timeout,
        idle_timeout: config.tcp.idle_timeout,
        max_requests_in_flight: config.tcp.max_requests_in_flight,
        max_frame_size: config.tcp.max_frame_size,
        vsr_size_max: config.tcp.vsr_size_max(),
    }
}

/// The last-use flush and, if enabled, the expired-token cleaner.
fn start_tasks(config: &Config, ctx: &Arc<Context>, writer: &WriterHandle) {
    let tokens = &config.personal_access_token;
    tokio::spawn(tasks::flush_last_used(Arc::clone(ctx), tokens.last_used_flush_interval));
    crate::metrics::set_expiry_window(tokens.expiry_warning_window);
    if !tokens.expiry_warning_window.is_zero() {
        tokio::spawn(tasks::announce_expiring(Arc::clone(ctx), tokens.expiry_warning_window));
    }
    if tokens.cleaner.enabled {
        tokio::spawn(tasks::clean_expired_tokens(writer.clone(), tokens.cleaner.interval));
    }
}

impl Running {
    /// Step 2: accepts connections until SIGINT or SIGTERM; SIGHUP re-reads
    /// `config_path` and applies the users and the token policy.
    pub fn serve(&mut self, config_path: Option<&std::path::Path>) {
        let Running { runtime, listener, connections, http, ctx, signals, root, systemd, .. } = self;
        let mut refused = RefusalLog::default();
        let mut http_refused = RefusalLog::default();
        systemd.notify("READY=1\nSTATUS=serving");
        if let Some(interval) = systemd.watchdog_interval() {
            let _guard = runtime.enter();
            tokio::spawn(tasks::pet_watchdog(Arc::clone(ctx), interval));
        }
        runtime.block_on(async {
            loop {
                tokio::select! {
                    () = net::accept(listener, connections, ctx, &mut refused) => {}
                    () = accept_http(http.as_ref(), ctx, &mut http_refused) => {}
                    _ = signals.hangup.recv() => tasks::reload(config_path, root, ctx),
                    _ = signals.terminate.recv() => break,
                    _ = signals.interrupt.recv() => break,
                }
            }
        });
    }

    /// Step 3: stops accepting, waits (bounded) for open connections to
    /// finish, writes the last token uses, and stops the writer once its
    /// last batch is durable.
    pub fn shutdown(self) {
        let Running {
            runtime,
            listener,
            connections,
            http,
            ctx,
            writer_join,
            shutdown_timeout,
            systemd,
            _data_dir,
            ..
        } = self;
        systemd.notify("STOPPING=1\nSTATUS=draining connections");
        drop(listener);
        let http_side = http.map(|(listener, side)| {
            drop(listener);
            side
        });
        tracing::info!("shutting down: no new connections");
        connections.stop_all();
        if let Some(side) = &http_side {
            side.stop_all();
        }
        let open = || connections.open() + http_side.as_ref().map_or(0, |side| side.open());
        let deadline = Instant::now() + shutdown_timeout;
        while open() > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let open = open();
        if open > 0 {
            tracing::warn!(open, "shutdown timeout reached; dropping open connections");
        }
        // Last uses gathered since the last flush (closed connections handed
        // theirs over) go to the log before the writer stops: a crash would
        // lose them, a clean stop does not.
        let flushed = runtime.block_on(async {
            tokio::time::timeout(Duration::from_secs(5), tasks::write_last_used(&ctx)).await
        });
        if flushed.is_err() {
            tracing::warn!("last-used flush at shutdown did not finish in time");
        }
        ctx.writer.stop();
        // The writer exits after its last batch is synced; the log is complete.
        let publisher = writer_join.join();
        // Connections still open past the timeout are dropped with the
        // runtime; the registry they read goes only after them.
        drop(runtime);
        drop(publisher);
        tracing::info!("stopped");
    }
}
