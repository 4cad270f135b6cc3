//! Shared harness of the interop suites (`interop/iggy010`, `interop/iggy011`):
//! runs the real `latchkey-server` binary on a temporary data directory and an
//! OS-chosen port, with root iggy/iggy, through the workspace's process harness
//! (`latchkey-tests`), so the published SDK talks to it over real TCP.
//!
//! The binary is taken from `LATCHKEY_SERVER_BIN`, or else from
//! `<repo>/target/debug/latchkey-server`. It is never built from here: run
//! `cargo build -p latchkey-server` in the repository root first (or use
//! `interop/run.sh`, which does both).

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use latchkey_tests::{DataHome, ServerSpec, TestServer};

/// Root credentials the server is started with (`--with-default-root-credentials`).
pub const ROOT_USERNAME: &str = "iggy";
pub const ROOT_PASSWORD: &str = "iggy";
pub const ROOT_USER_ID: u32 = 0;

/// Path of the `latchkey-server` binary; panics with instructions if it is missing.
pub fn server_binary() -> PathBuf {
    let (path, origin) = match std::env::var_os("LATCHKEY_SERVER_BIN") {
        Some(path) => (PathBuf::from(path), "LATCHKEY_SERVER_BIN"),
        None => (
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/debug/latchkey-server"),
            "the default location (LATCHKEY_SERVER_BIN is not set)",
        ),
    };
    assert!(
        path.is_file(),
        "latchkey-server binary not found at {} (from {origin}). Build it with \
         `cargo build -p latchkey-server` in the repository root, or set \
         LATCHKEY_SERVER_BIN to its path, or run interop/run.sh.",
        path.display()
    );
    path
}

/// An Argon2 PHC hash for a config `[[users]]` entry, made by the server
/// binary's own `hash-password` subcommand (password on stdin).
pub fn password_hash(password: &str) -> String {
    let output = latchkey_tests::hash_password_command(&server_binary(), &format!("{password}\n"));
    assert!(
        output.status.success(),
        "hash-password failed with {}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let hash = String::from_utf8(output.stdout).expect("hash is UTF-8").trim().to_owned();
    assert!(hash.starts_with("$argon2"), "unexpected hash: {hash:?}");
    hash
}

/// A `[[users]]` config entry for an active user.
pub fn user_config(id: u32, username: &str, password: &str) -> String {
    format!(
        "[[users]]\nid = {id}\nusername = \"{username}\"\npassword_hash = \"{}\"\nactive = true\n",
        password_hash(password)
    )
}

/// A running `latchkey-server` with root iggy/iggy. Killed when dropped.
pub struct Server {
    server: TestServer,
    // Last, so the directory is removed after the process is gone.
    _home: DataHome,
}

impl Server {
    /// Starts a server with an empty config file.
    pub fn start() -> Server {
        Server::start_with_config("")
    }

    /// Starts a server whose config file holds `config` (TOML), and waits
    /// until it listens.
    pub fn start_with_config(config: &str) -> Server {
        let home = DataHome::new();
        let spec = ServerSpec::default_root()
            .binary(server_binary())
            .config(config)
            // Successful logins are debug-level audit events; the tests count them.
            .env("LATCHKEY_LOG", "info,audit=debug")
            // The interop suites run with the server's default throttle
            // (the shared harness turns it off unless told otherwise).
            .env("LATCHKEY_LOGIN_THROTTLE_ENABLED", "true");
        let spec = cluster_node(spec);
        let server = TestServer::start(&home, &spec);
        Server { server, _home: home }
    }

    /// The address the server listens on.
    pub fn address(&self) -> SocketAddr {
        self.server.address
    }

    /// Everything the server logged so far (stdout).
    pub fn logs(&self) -> String {
        self.server.logs()
    }

    /// Everything the server wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.server.stderr()
    }

    /// Panics (with the server's output) if the process has exited.
    pub fn assert_running(&mut self) {
        self.server.assert_running();
    }
}

/// With `LATCHKEY_INTEROP_ETCD_ENDPOINTS` and `LATCHKEY_INTEROP_ETCD_KEY_FILE`
/// set (`interop/run.sh --cluster` sets them), every server is a cluster
/// node on that etcd, each under a prefix of its own so the suites' servers
/// stay as independent as with their own data directories. The binary must
/// then be built with `--features etcd`.
fn cluster_node(spec: ServerSpec) -> ServerSpec {
    static SERVERS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let (Ok(endpoints), Ok(key_file)) =
        (std::env::var("LATCHKEY_INTEROP_ETCD_ENDPOINTS"), std::env::var("LATCHKEY_INTEROP_ETCD_KEY_FILE"))
    else {
        return spec;
    };
    let prefix =
        format!("/latchkey-interop/{}-{}/", std::process::id(), SERVERS.fetch_add(1, Ordering::Relaxed));
    spec.env("LATCHKEY_STORAGE_BACKEND", "etcd")
        .env("LATCHKEY_STORAGE_ETCD_ENDPOINTS", &endpoints)
        .env("LATCHKEY_STORAGE_ETCD_KEY_FILE", &key_file)
        .env("LATCHKEY_STORAGE_ETCD_PREFIX", &prefix)
}

/// How a [`WireRecorder`] parses one framing: each interop suite supplies its
/// own (legacy frames for 0.10, 0.11 frames for 0.11).
pub trait Framing {
    /// One recorded request/reply pair.
    type Exchange: Clone + Send + 'static;

    /// Pumps one client connection both ways, recording exchanges.
    fn proxy_connection(
        connection: usize,
        client: TcpStream,
        server: TcpStream,
        exchanges: Arc<Mutex<Vec<Self::Exchange>>>,
    );
}

/// A transparent TCP proxy in front of a server that parses the frames
/// going through it (per `F`) and records every request with its answer.
pub struct WireRecorder<F: Framing> {
    address: SocketAddr,
    exchanges: Arc<Mutex<Vec<F::Exchange>>>,
    stop: Arc<AtomicBool>,
}

impl<F: Framing> WireRecorder<F> {
    /// Listens on 127.0.0.1 (OS-chosen port) and forwards to `upstream`.
    pub fn start(upstream: SocketAddr) -> WireRecorder<F> {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind recorder");
        let address = listener.local_addr().expect("recorder address");
        let exchanges = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let sink = Arc::clone(&exchanges);
        let stopped = Arc::clone(&stop);
        std::thread::spawn(move || {
            for (connection, client) in listener.incoming().enumerate() {
                if stopped.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                let server = TcpStream::connect(upstream).expect("recorder: connect upstream");
                F::proxy_connection(connection, client, server, Arc::clone(&sink));
            }
        });
        WireRecorder { address, exchanges, stop }
    }

    /// The address clients should connect to.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Every completed exchange so far, in reply order.
    pub fn exchanges(&self) -> Vec<F::Exchange> {
        self.exchanges.lock().unwrap().clone()
    }
}

impl<F: Framing> Drop for WireRecorder<F> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.address);
    }
}
