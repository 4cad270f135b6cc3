//! Harness for the Iggy 0.10.0 interop tests: runs the real `latchkey-server`
//! binary on a temporary data directory and an OS-chosen port, so the
//! published SDK (a dev-dependency, see `tests/`) talks to it over real TCP.
//!
//! The binary is taken from `LATCHKEY_SERVER_BIN`, or else from
//! `<repo>/target/debug/latchkey-server`. It is never built from here: run
//! `cargo build -p latchkey-server` in the repository root first (or use
//! `interop/run.sh`, which does both).

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Time allowed for a server to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(30);

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
    let mut child = Command::new(server_binary())
        .arg("hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn latchkey-server hash-password");
    child.stdin.take().expect("stdin").write_all(format!("{password}\n").as_bytes()).expect("write password");
    let output = child.wait_with_output().expect("wait for hash-password");
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
    child: Option<Child>,
    address: SocketAddr,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    // Last, so the directory is removed after the process is gone.
    _home: tempfile::TempDir,
}

impl Server {
    /// Starts a server with an empty config file.
    pub fn start() -> Server {
        Server::start_with_config("")
    }

    /// Starts a server whose config file holds `config` (TOML), and waits
    /// until it listens.
    pub fn start_with_config(config: &str) -> Server {
        let home = tempfile::tempdir().expect("temp dir");
        let config_path = home.path().join("server.toml");
        std::fs::write(&config_path, config).expect("write config");
        let mut child = Command::new(server_binary())
            .arg("--config")
            .arg(&config_path)
            .arg("--with-default-root-credentials")
            .env("LATCHKEY_SYSTEM_PATH", home.path().join("data"))
            .env("LATCHKEY_TCP_ADDRESS", "127.0.0.1:0")
            // Successful logins are debug-level audit events; the tests count them.
            .env("LATCHKEY_LOG", "info,audit=debug")
            .env_remove("LATCHKEY_ROOT_USERNAME")
            .env_remove("LATCHKEY_ROOT_PASSWORD")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn latchkey-server");

        let stdout = Arc::new(Mutex::new(String::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let (address_tx, address_rx) = mpsc::channel();
        let out = child.stdout.take().expect("stdout");
        let sink = Arc::clone(&stdout);
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Some(address) = listening_address(&line) {
                    let _ = address_tx.send(address);
                }
                let mut sink = sink.lock().unwrap();
                sink.push_str(&line);
                sink.push('\n');
            }
        });
        let mut err = child.stderr.take().expect("stderr");
        let sink = Arc::clone(&stderr);
        std::thread::spawn(move || {
            let mut buffer = [0u8; 4096];
            while let Ok(read) = err.read(&mut buffer) {
                if read == 0 {
                    break;
                }
                sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buffer[..read]));
            }
        });

        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(address) = address_rx.recv_timeout(Duration::from_millis(20)) {
                return Server { child: Some(child), address, stdout, stderr, _home: home };
            }
            if let Some(status) = child.try_wait().expect("try_wait") {
                // Let the reader threads drain the pipes.
                std::thread::sleep(Duration::from_millis(100));
                panic!(
                    "latchkey-server exited during start with {status}\nstdout:\n{}\nstderr:\n{}",
                    stdout.lock().unwrap(),
                    stderr.lock().unwrap()
                );
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "latchkey-server did not log \"Latchkey listening on\" within {START_TIMEOUT:?}\n\
                     stdout:\n{}\nstderr:\n{}",
                    stdout.lock().unwrap(),
                    stderr.lock().unwrap()
                );
            }
        }
    }

    /// The address the server listens on.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Everything the server logged so far (stdout).
    pub fn logs(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    /// Everything the server wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Panics (with the server's output) if the process has exited.
    pub fn assert_running(&mut self) {
        let child = self.child.as_mut().expect("server child");
        if let Some(status) = child.try_wait().expect("try_wait") {
            std::thread::sleep(Duration::from_millis(100));
            panic!(
                "latchkey-server exited unexpectedly with {status}\nstdout:\n{}\nstderr:\n{}",
                self.logs(),
                self.stderr()
            );
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One request/reply pair seen by a [`WireRecorder`] (legacy framing: one
/// reply per request, in order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exchange {
    /// Index of the client connection, in accept order.
    pub connection: usize,
    /// Request command code.
    pub code: u32,
    /// Reply status (0 = OK, else the IggyError code).
    pub status: u32,
    /// Reply length field (payload bytes).
    pub reply_len: u32,
}

/// A transparent TCP proxy in front of a server that parses the legacy
/// frames going through it and records every request code with its reply
/// status, so tests can see what the SDK actually sends (e.g. the
/// GetClusterMetadata that `IggyClient` issues after login, whose failure
/// the SDK would only log).
pub struct WireRecorder {
    address: SocketAddr,
    exchanges: Arc<Mutex<Vec<Exchange>>>,
    stop: Arc<AtomicBool>,
}

impl WireRecorder {
    /// Listens on 127.0.0.1 (OS-chosen port) and forwards to `upstream`.
    pub fn start(upstream: SocketAddr) -> WireRecorder {
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
                proxy_connection(connection, client, server, Arc::clone(&sink));
            }
        });
        WireRecorder { address, exchanges, stop }
    }

    /// The address clients should connect to.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Every completed exchange so far, in reply order.
    pub fn exchanges(&self) -> Vec<Exchange> {
        self.exchanges.lock().unwrap().clone()
    }
}

impl Drop for WireRecorder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.address);
    }
}

/// Pumps one client connection both ways, recording exchanges.
fn proxy_connection(
    connection: usize,
    client: TcpStream,
    server: TcpStream,
    exchanges: Arc<Mutex<Vec<Exchange>>>,
) {
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let pending = Arc::new(Mutex::new(VecDeque::new()));
    let (mut from_client, mut to_server) =
        (client.try_clone().expect("clone"), server.try_clone().expect("clone"));
    let requests = Arc::clone(&pending);
    std::thread::spawn(move || {
        // Request: [length u32][code u32][length - 4 payload bytes].
        let mut header = [0u8; 8];
        while from_client.read_exact(&mut header).is_ok() {
            let length = u32::from_le_bytes(header[..4].try_into().unwrap());
            let code = u32::from_le_bytes(header[4..].try_into().unwrap());
            requests.lock().unwrap().push_back(code);
            if to_server.write_all(&header).is_err() {
                break;
            }
            let payload = u64::from(length.saturating_sub(4));
            match std::io::copy(&mut (&mut from_client).take(payload), &mut to_server) {
                Ok(copied) if copied == payload => {}
                _ => break,
            }
        }
        let _ = to_server.shutdown(Shutdown::Write);
    });
    let (mut from_server, mut to_client) = (server, client);
    std::thread::spawn(move || {
        // Reply: [status u32][length u32][length payload bytes].
        let mut header = [0u8; 8];
        while from_server.read_exact(&mut header).is_ok() {
            let status = u32::from_le_bytes(header[..4].try_into().unwrap());
            let reply_len = u32::from_le_bytes(header[4..].try_into().unwrap());
            let mut payload = vec![0u8; reply_len as usize];
            if from_server.read_exact(&mut payload).is_err() {
                break;
            }
            let code = pending.lock().unwrap().pop_front().unwrap_or(u32::MAX);
            exchanges.lock().unwrap().push(Exchange { connection, code, status, reply_len });
            if to_client.write_all(&header).is_err() || to_client.write_all(&payload).is_err() {
                break;
            }
        }
        let _ = to_client.shutdown(Shutdown::Write);
    });
}

/// Parses the address from the server's "Latchkey listening on ADDR" line.
fn listening_address(line: &str) -> Option<SocketAddr> {
    let rest = line.split("Latchkey listening on ").nth(1)?;
    rest.split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::listening_address;

    #[test]
    fn parses_the_listening_line() {
        let line = "2025-01-01T00:00:00Z  INFO latchkey_server::server: Latchkey listening on 127.0.0.1:40123 address=127.0.0.1:40123 shards=4";
        assert_eq!(listening_address(line), Some("127.0.0.1:40123".parse().unwrap()));
        assert_eq!(listening_address("something else"), None);
    }
}
