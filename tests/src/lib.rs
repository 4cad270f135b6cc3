//! Test harness: runs the real `latchkey-server` binary on a temporary data
//! directory and an OS-chosen port, and talks to it over real TCP.
//!
//! The binary is found next to the test executable's profile directory
//! (`target/<profile>/latchkey-server`), or at `LATCHKEY_SERVER_BIN`. If it
//! is missing it is built once with `cargo build -p latchkey-server`.
//! [`ServerSpec::binary`] names another binary explicitly (the interop suites
//! and the crash harness use that).
//!
//! [`password_hash`] links the server library (feature `server-lib`, on by
//! default); without it this crate needs only `libc` and `tempfile`, so crates
//! outside the workspace (interop/) can use the process harness cheaply.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Time allowed for a server to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Path of the server binary, building it if needed.
pub fn server_binary() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY
        .get_or_init(|| {
            if let Some(path) = std::env::var_os("LATCHKEY_SERVER_BIN") {
                return PathBuf::from(path);
            }
            let exe = std::env::current_exe().expect("test executable path");
            // target/<profile>/deps/<test> → target/<profile>
            let profile_dir = exe.parent().and_then(Path::parent).expect("target profile dir");
            let binary = profile_dir.join("latchkey-server");
            if !binary.exists() {
                let release = profile_dir.file_name().is_some_and(|name| name == "release");
                let mut build = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
                build.args(["build", "-p", "latchkey-server", "--bin", "latchkey-server"]);
                if release {
                    build.arg("--release");
                }
                let status = build.status().expect("run cargo build");
                assert!(status.success(), "cargo build -p latchkey-server failed");
            }
            binary
        })
        .clone()
}

/// How to start a server.
#[derive(Debug, Clone, Default)]
pub struct ServerSpec {
    /// Extra config file content (TOML). `[system] path` and `[tcp] address`
    /// are set through the environment and must not be repeated here.
    pub config: Option<String>,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
    /// Variables the harness would set, left unset (so the config file's
    /// value counts, e.g. `LATCHKEY_TCP_ADDRESS`).
    pub env_removed: Vec<String>,
    /// Extra command-line arguments.
    pub args: Vec<String>,
    /// Start with `--with-default-root-credentials` (iggy/iggy).
    pub default_root: bool,
    /// Listen address; default `127.0.0.1:0`.
    pub address: Option<String>,
    /// Server binary; default [`server_binary()`].
    pub binary: Option<PathBuf>,
    /// `RLIMIT_FSIZE` for the server process, in bytes: a write that would
    /// grow a file past it fails with `EFBIG` (SIGXFSZ is ignored, so the
    /// process lives on). A full disk for one process, with no mount.
    pub file_size_limit_bytes: Option<u64>,
}

impl ServerSpec {
    /// Root iggy/iggy, defaults otherwise.
    pub fn default_root() -> ServerSpec {
        ServerSpec { default_root: true, ..ServerSpec::default() }
    }

    pub fn env(mut self, key: &str, value: &str) -> ServerSpec {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    pub fn without_env(mut self, key: &str) -> ServerSpec {
        self.env_removed.push(key.to_owned());
        self
    }

    pub fn config(mut self, toml: &str) -> ServerSpec {
        self.config = Some(toml.to_owned());
        self
    }

    pub fn binary(mut self, path: PathBuf) -> ServerSpec {
        self.binary = Some(path);
        self
    }

    pub fn address(mut self, address: &str) -> ServerSpec {
        self.address = Some(address.to_owned());
        self
    }

    pub fn file_size_limit_bytes(mut self, bytes: u64) -> ServerSpec {
        self.file_size_limit_bytes = Some(bytes);
        self
    }
}

/// A running server process. Killed (SIGKILL) when dropped.
pub struct TestServer {
    child: Option<Child>,
    pub address: SocketAddr,
    /// Where the HTTP side listens (`None` when `[http]` is off).
    pub http_address: Option<SocketAddr>,
    /// The data directory (kept across restarts of the same `DataHome`).
    pub data_dir: PathBuf,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    readers: PipeReaders,
}

/// The threads that copy a server's stdout and stderr into memory. Each ends
/// when its pipe closes, that is once the process has exited; joining them
/// is how the harness knows it holds a dead server's last words, whole.
#[derive(Default)]
struct PipeReaders(Vec<std::thread::JoinHandle<()>>);

impl PipeReaders {
    fn join(&mut self) {
        for reader in self.0.drain(..) {
            reader.join().expect("a pipe reader thread panicked");
        }
    }
}

/// A temporary directory that outlives server restarts.
pub struct DataHome {
    pub dir: tempfile::TempDir,
}

impl DataHome {
    pub fn new() -> DataHome {
        DataHome { dir: tempfile::tempdir().expect("temp dir") }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }
}

impl Default for DataHome {
    fn default() -> Self {
        DataHome::new()
    }
}

/// Output of a server that exited.
#[derive(Debug)]
pub struct Exited {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl TestServer {
    /// Starts a server on `home`'s data directory and waits until it listens.
    pub fn start(home: &DataHome, spec: &ServerSpec) -> TestServer {
        match TestServer::try_start(home, spec) {
            Ok(server) => server,
            Err(exited) => panic!(
                "server exited during start with {}\nstdout:\n{}\nstderr:\n{}",
                exited.status, exited.stdout, exited.stderr
            ),
        }
    }

    /// Starts a server; `Err` carries the output if it exits before listening.
    pub fn try_start(home: &DataHome, spec: &ServerSpec) -> Result<TestServer, Exited> {
        let mut command = Command::new(spec.binary.clone().unwrap_or_else(server_binary));
        let config_path = home.dir.path().join("server.toml");
        std::fs::write(&config_path, spec.config.as_deref().unwrap_or("")).expect("write config");
        command
            .arg("--config")
            .arg(&config_path)
            .args(&spec.args)
            .env("LATCHKEY_SYSTEM_PATH", home.data_dir())
            .env("LATCHKEY_TCP_ADDRESS", spec.address.as_deref().unwrap_or("127.0.0.1:0"))
            // Servers run side by side: each HTTP side on a port of its own.
            .env("LATCHKEY_HTTP_ADDRESS", "127.0.0.1:0")
            .env("LATCHKEY_LOG", "info")
            // Many tests fail logins on purpose, from one address, far past
            // what the throttle allows; tests of the throttle turn it back on
            // with `.env("LATCHKEY_LOGIN_THROTTLE_ENABLED", "true")`.
            .env("LATCHKEY_LOGIN_THROTTLE_ENABLED", "false")
            .env_remove("LATCHKEY_ROOT_USERNAME")
            .env_remove("LATCHKEY_ROOT_PASSWORD")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if spec.default_root {
            command.arg("--with-default-root-credentials");
        }
        for (key, value) in &spec.env {
            command.env(key, value);
        }
        for key in &spec.env_removed {
            command.env_remove(key);
        }
        if let Some(limit) = spec.file_size_limit_bytes {
            limit_file_size(&mut command, limit);
        }
        let mut child = command.spawn().expect("spawn latchkey-server");
        let stdout = Arc::new(Mutex::new(String::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let (address_tx, address_rx) = std::sync::mpsc::channel();
        let http_address = Arc::new(Mutex::new(None));
        let http_sink = Arc::clone(&http_address);
        let out = child.stdout.take().expect("stdout");
        let sink = Arc::clone(&stdout);
        let mut readers = PipeReaders::default();
        readers.0.push(std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let address = listening_address(&line);
                if let Some(http) = http_listening_address(&line) {
                    *http_sink.lock().unwrap() = Some(http);
                }
                {
                    let mut sink = sink.lock().unwrap();
                    sink.push_str(&line);
                    sink.push('\n');
                }
                // Only after the line is in `logs()`, so a test sees it.
                if let Some(address) = address {
                    let _ = address_tx.send(address);
                }
            }
        }));
        let mut err = child.stderr.take().expect("stderr");
        let sink = Arc::clone(&stderr);
        readers.0.push(std::thread::spawn(move || {
            let mut buffer = [0u8; 4096];
            while let Ok(read) = err.read(&mut buffer) {
                if read == 0 {
                    break;
                }
                sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buffer[..read]));
            }
        }));
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(address) = address_rx.recv_timeout(Duration::from_millis(20)) {
                // The HTTP line comes before the TCP one.
                let http_address = *http_address.lock().unwrap();
                return Ok(TestServer {
                    child: Some(child),
                    address,
                    http_address,
                    data_dir: home.data_dir(),
                    stdout,
                    stderr,
                    readers,
                });
            }
            if let Some(status) = child.try_wait().expect("try_wait") {
                readers.join();
                return Err(Exited {
                    status,
                    stdout: stdout.lock().unwrap().clone(),
                    stderr: stderr.lock().unwrap().clone(),
                });
            }
            if Instant::now() >= deadline {
                // A `Child` is not killed when dropped: do it here, or the
                // server outlives the failed test.
                let _ = child.kill();
                let _ = child.wait();
                readers.join();
                panic!(
                    "server did not start listening in time\nstdout:\n{}\nstderr:\n{}",
                    stdout.lock().unwrap(),
                    stderr.lock().unwrap()
                );
            }
        }
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
        let child = self.child.as_mut().expect("running");
        if let Some(status) = child.try_wait().expect("try_wait") {
            self.readers.join();
            panic!(
                "latchkey-server exited unexpectedly with {status}\nstdout:\n{}\nstderr:\n{}",
                self.logs(),
                self.stderr()
            );
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Waits up to `bound` for the server to exit on its own; its status,
    /// with every line it wrote read to the end, or `None` if it still runs.
    pub fn exited_within(&mut self, bound: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + bound;
        let child = self.child.as_mut().expect("running");
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                self.child = None;
                self.readers.join();
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends `signal` and waits for the exit; returns the status.
    pub fn stop_with(self, signal: i32) -> ExitStatus {
        self.stop_with_output(signal).status
    }

    /// Sends `signal`, waits for the exit and for the pipes to close; returns
    /// the status and everything the server wrote, its last words included.
    pub fn stop_with_output(mut self, signal: i32) -> Exited {
        let mut child = self.child.take().expect("running");
        // SAFETY: kill(2) on our own child's pid has no memory effects.
        unsafe {
            libc::kill(child.id() as i32, signal);
        }
        let status = child.wait().expect("wait");
        self.readers.join();
        Exited { status, stdout: self.logs(), stderr: self.stderr() }
    }

    /// SIGTERM and wait: a graceful stop.
    pub fn stop(self) -> ExitStatus {
        self.stop_with(libc::SIGTERM)
    }

    /// SIGKILL and wait: a crash.
    pub fn kill(self) -> ExitStatus {
        self.stop_with(libc::SIGKILL)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Sets `RLIMIT_FSIZE` to `bytes` in the child before it runs, and ignores
/// SIGXFSZ there, so a write past the limit fails with `EFBIG` instead of
/// killing the process. Both settings survive `exec`.
fn limit_file_size(command: &mut Command, bytes: u64) {
    use std::os::unix::process::CommandExt;
    let limit = libc::rlimit { rlim_cur: bytes as libc::rlim_t, rlim_max: bytes as libc::rlim_t };
    // SAFETY: the closure runs between fork and exec and calls only
    // signal(2) and setrlimit(2), both async-signal-safe, on the child itself.
    unsafe {
        command.pre_exec(move || {
            if libc::signal(libc::SIGXFSZ, libc::SIG_IGN) == libc::SIG_ERR
                || libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// `count` distinct free loopback ports, for child processes to bind.
///
/// Every listener is held until all are found, so no two picks return the
/// same port (a port released at once may be handed out again by the next
/// bind). Another process may still take one before the child binds it:
/// callers that start several processes retry on "address already in use".
pub fn free_ports(count: usize) -> Vec<u16> {
    let listeners: Vec<std::net::TcpListener> = (0..count)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("a free loopback port"))
        .collect();
    listeners.iter().map(|listener| listener.local_addr().expect("a bound address").port()).collect()
}

/// One free loopback port (see [`free_ports`]).
pub fn free_port() -> u16 {
    free_ports(1)[0]
}

/// Whether this run is CI's (`CI=true`, as CI systems set it).
pub fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|value| value == "true" || value == "1")
}

/// Skips the calling test for a named reason this machine has been checked
/// for, or fails it under CI.
///
/// A test may skip only when it has checked that the machine lacks something
/// it needs: a package, an IPv6 stack, the privilege to mount. `missing`
/// names what is missing, `remedy` what to install or enable. Under CI
/// (`CI=true`) every skip is a failure, so a green CI run has run every test.
/// The caller returns right after this.
pub fn skip(missing: &str, remedy: &str) {
    assert!(!under_ci(), "CI=true, and this test cannot run here: {missing}. To run it: {remedy}");
    // Straight to the process's stderr, past the test harness's capture, so
    // the skip shows in a passing run's output too.
    let line =
        format!("SKIPPED {}: {missing}. To run it: {remedy}\n", std::thread::current().name().unwrap_or("?"));
    let _ = std::io::stderr().write_all(line.as_bytes());
}

/// Whether this machine can listen and connect on `[::1]`. If it cannot,
/// the caller is skipped through [`skip`] (a failure under CI) and gets false.
pub fn ipv6_loopback_or_skip() -> bool {
    let probe = std::net::TcpListener::bind("[::1]:0")
        .and_then(|listener| std::net::TcpStream::connect(listener.local_addr()?).map(drop));
    match probe {
        Ok(()) => true,
        Err(error) => {
            skip(
                &format!("no IPv6 loopback here ([::1]: {error})"),
                "enable IPv6 on lo (sysctl net.ipv6.conf.lo.disable_ipv6=0; in a container, start it with IPv6)",
            );
            false
        }
    }
}

/// Whether a listener on `[::]` here also accepts IPv4 clients (as
/// `::ffff:a.b.c.d`). If not, the caller is skipped through [`skip`] and gets
/// false.
pub fn dual_stack_or_skip() -> bool {
    if !ipv6_loopback_or_skip() {
        return false;
    }
    let probe = std::net::TcpListener::bind("[::]:0").and_then(|listener| {
        std::net::TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], listener.local_addr()?.port())))
            .map(drop)
    });
    match probe {
        Ok(()) => true,
        Err(error) => {
            skip(
                &format!("a [::] listener here does not accept IPv4 clients ({error})"),
                "allow dual-stack sockets (sysctl net.ipv6.bindv6only=0)",
            );
            false
        }
    }
}

/// The kernel's queues of one TCP connection, as `/proc/net/tcp{,6}` shows
/// them for the socket bound to `local` and connected to `remote`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpQueues {
    /// Bytes sent and not yet acknowledged by the peer.
    pub unacked_bytes: u64,
    /// Bytes received and not yet read by the socket's owner.
    pub unread_bytes: u64,
}

/// [`TcpQueues`] of the socket `local` → `remote` on this machine, if there is
/// one. Either end of a loopback connection can be asked about: a test reads
/// how much the server has left unread on its side of a connection.
pub fn tcp_queues(local: SocketAddr, remote: SocketAddr) -> Option<TcpQueues> {
    let table = if local.is_ipv4() { "/proc/net/tcp" } else { "/proc/net/tcp6" };
    let text = std::fs::read_to_string(table).expect("read /proc/net/tcp");
    // "sl local_address rem_address st tx_queue:rx_queue ..."; addresses are
    // hex `ADDRESS:PORT`. Ports are unique enough among loopback sockets
    // once both ends are given; the addresses are checked too for IPv4.
    let endpoint = |address: SocketAddr| match address {
        SocketAddr::V4(v4) => format!("{:08X}:{:04X}", u32::from_ne_bytes(v4.ip().octets()), v4.port()),
        SocketAddr::V6(v6) => format!(":{:04X}", v6.port()),
    };
    let (want_local, want_remote) = (endpoint(local), endpoint(remote));
    text.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (found_local, found_remote, queues) = (fields.get(1)?, fields.get(2)?, fields.get(4)?);
        if !found_local.ends_with(&want_local) || !found_remote.ends_with(&want_remote) {
            return None;
        }
        let (tx, rx) = queues.split_once(':')?;
        Some(TcpQueues {
            unacked_bytes: u64::from_str_radix(tx, 16).ok()?,
            unread_bytes: u64::from_str_radix(rx, 16).ok()?,
        })
    })
}

/// Memory of a running process, from `/proc/PID/status`.
#[derive(Debug, Clone, Copy)]
pub struct ProcessMemory {
    /// Resident now (`VmRSS`).
    pub resident_bytes: u64,
    /// The most it was ever resident (`VmHWM`).
    pub resident_peak_bytes: u64,
}

/// [`ProcessMemory`] of process `pid`.
pub fn process_memory(pid: u32) -> ProcessMemory {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/PID/status");
    let kib = |key: &str| -> u64 {
        let line = status.lines().find(|line| line.starts_with(key)).unwrap_or_else(|| panic!("no {key}"));
        let value = line[key.len()..].trim().trim_end_matches("kB").trim();
        value.parse::<u64>().expect("a number of kB") * 1024
    };
    ProcessMemory { resident_bytes: kib("VmRSS:"), resident_peak_bytes: kib("VmHWM:") }
}

/// Parses the address from the server's "Latchkey listening on ADDR" line.
pub fn listening_address(line: &str) -> Option<SocketAddr> {
    address_after(line, "Latchkey listening on ")
}

/// The socket address right after `marker` in a text or JSON log line.
fn address_after(line: &str, marker: &str) -> Option<SocketAddr> {
    let rest = line.split(marker).nth(1)?;
    let end = rest
        .find(|c: char| !(c.is_ascii_hexdigit() || matches!(c, '.' | ':' | '[' | ']')))
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// Parses the address from the server's "HTTP listening on ADDR" line.
pub fn http_listening_address(line: &str) -> Option<SocketAddr> {
    address_after(line, "HTTP listening on ")
}

/// Every file under `dir`, recursively, with its bytes.
pub fn read_tree(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(path) = stack.pop() {
        if path.is_dir() {
            for entry in std::fs::read_dir(&path).expect("read_dir") {
                stack.push(entry.expect("entry").path());
            }
        } else if let Ok(bytes) = std::fs::read(&path) {
            files.push((path, bytes));
        }
    }
    files
}

/// Whether `needle` occurs anywhere in `haystack`.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|window| window == needle)
}

/// Runs `binary hash-password` with `input` on stdin.
pub fn hash_password_command(binary: &Path, input: &str) -> Output {
    let mut child = Command::new(binary)
        .arg("hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run latchkey-server hash-password");
    child.stdin.take().expect("stdin").write_all(input.as_bytes()).expect("write password");
    child.wait_with_output().expect("wait for hash-password")
}

/// An Argon2 PHC hash for a config `[[users]]` entry.
#[cfg(feature = "server-lib")]
pub fn password_hash(password: &str) -> String {
    latchkey_server::auth::users::hash_password(password)
}

/// A real etcd cluster for the cluster-mode tests.
pub mod etcd;
/// The history checker for the cluster's concurrent runs.
pub mod history;
pub mod http;
/// A small WebDriver client for the web console's browser tests.
pub mod webdriver;

#[cfg(test)]
mod tests {
    use super::{DataHome, ServerSpec, TcpQueues, TestServer, free_ports, listening_address, tcp_queues};
    use std::io::Write;
    use std::net::{TcpListener, TcpStream};

    /// A "server" that exits at once while output it started is still on
    /// its way: `try_start` returns it whole, because it reads the pipes to
    /// their end rather than for a fixed time.
    #[test]
    fn a_dead_servers_last_words_are_read_to_the_end() {
        use std::os::unix::fs::PermissionsExt;
        let home = DataHome::new();
        let script = home.dir.path().join("fake-server");
        std::fs::write(&script, "#!/bin/sh\n(sleep 0.5; echo 'last words' >&2) &\nexit 3\n").unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let Err(exited) = TestServer::try_start(&home, &ServerSpec::default().binary(script)) else {
            panic!("the fake server listened");
        };
        assert_eq!(exited.status.code(), Some(3));
        assert_eq!(exited.stderr, "last words\n");
    }

    /// An etcd cluster once failed to start because two of its members
    /// were given the same peer port: each port had been bound and released
    /// in turn, and the kernel handed one out twice.
    #[test]
    fn ports_picked_together_are_distinct() {
        let ports = free_ports(300);
        let distinct: std::collections::BTreeSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), ports.len(), "a port was picked twice: {ports:?}");
    }

    #[test]
    fn tcp_queues_shows_what_a_socket_has_left_unread() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let (client_end, server_end) = (client.local_addr().unwrap(), server.local_addr().unwrap());
        let empty = TcpQueues { unacked_bytes: 0, unread_bytes: 0 };
        assert_eq!(tcp_queues(server_end, client_end), Some(empty));
        client.write_all(&[7; 1000]).unwrap();
        // Loopback delivery is done once the peer's kernel acknowledges it.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while tcp_queues(client_end, server_end).unwrap().unacked_bytes != 0 {
            assert!(std::time::Instant::now() < deadline, "never acknowledged");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(tcp_queues(server_end, client_end).unwrap().unread_bytes, 1000);
        assert_eq!(tcp_queues(client_end, server_end).unwrap().unread_bytes, 0);
        assert_eq!(tcp_queues(client_end, "127.0.0.1:1".parse().unwrap()), None);
    }

    // Moved here with the parser from tools/crash-test/src/server.rs and
    // interop/iggy01{0,1}/src/lib.rs, which now use this one.
    #[test]
    fn parses_the_listening_line() {
        for line in [
            "2025-01-01T00:00:00Z  INFO latchkey_server::server: Latchkey listening on 127.0.0.1:40123 \
             address=127.0.0.1:40123 shards=2",
            "2025-01-01T00:00:00Z  INFO latchkey_server::server: Latchkey listening on 127.0.0.1:40123 \
             address=127.0.0.1:40123 shards=4",
            "2025-01-01T00:00:00Z  INFO latchkey_server::server: Latchkey listening on 127.0.0.1:40123 \
             address=127.0.0.1:40123 shards=4 framing=auto",
        ] {
            assert_eq!(listening_address(line), Some("127.0.0.1:40123".parse().unwrap()));
        }
        assert_eq!(listening_address("token log replayed"), None);
        let json = r#"{"timestamp":"…","level":"INFO","message":"Latchkey listening on [::1]:40123","address":"[::1]:40123"}"#;
        assert_eq!(listening_address(json), Some("[::1]:40123".parse().unwrap()));
        assert_eq!(listening_address("something else"), None);
    }
}
