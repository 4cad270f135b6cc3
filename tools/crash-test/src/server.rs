//! The server under test: the real `latchkey-server` binary on the run's
//! data directory, listening on an OS-chosen port. Its output goes to one
//! file for the whole run (kept with the data directory when a check fails),
//! and the few lines that tell what recovery and compaction did are counted.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use latchkey_tests::listening_address;

/// Time allowed for a (re)start to reach "Latchkey listening on".
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Lines of server output quoted in a start failure.
const TAIL_LINES: usize = 40;

/// How every start of the server is configured.
#[derive(Debug, Clone)]
pub struct ServerSpec {
    pub binary: PathBuf,
    pub data_dir: PathBuf,
    /// An empty config file, so a `configs/server.toml` in the working
    /// directory is not picked up.
    pub config: PathBuf,
    /// `LATCHKEY_*` settings; every other inherited `LATCHKEY_*` is removed.
    pub env: Vec<(String, String)>,
}

/// Lines in the server's output that say what it did with its log.
#[derive(Debug, Default)]
pub struct LogEvents {
    /// "token log compacted": a compaction renamed into place.
    pub compactions: AtomicU64,
    /// "torn tail": recovery cut an incomplete last record.
    pub torn_tails: AtomicU64,
    /// "removed an unfinished compaction file": a kill hit a compaction.
    pub abandoned_compactions: AtomicU64,
}

impl LogEvents {
    fn observe(&self, line: &str) {
        let counter = if line.contains("token log compacted") {
            &self.compactions
        } else if line.contains("torn tail") {
            &self.torn_tails
        } else if line.contains("removed an unfinished compaction file") {
            &self.abandoned_compactions
        } else {
            return;
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// The file all server output of the run goes to.
pub struct ServerOutput {
    path: PathBuf,
    file: Arc<File>,
    pub events: Arc<LogEvents>,
}

impl ServerOutput {
    pub fn create(path: &Path) -> std::io::Result<ServerOutput> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(ServerOutput { path: path.to_owned(), file: Arc::new(file), events: Arc::default() })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The last lines written so far.
    pub fn tail(&self) -> String {
        let text = std::fs::read_to_string(&self.path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n")
    }
}

/// A running server. Killed (SIGKILL) if dropped while running.
pub struct ServerProcess {
    child: Option<Child>,
    pub address: SocketAddr,
    readers: Vec<JoinHandle<()>>,
}

impl ServerProcess {
    /// Starts the server and waits until it listens. `Err` says why it did
    /// not: it exited (with its status), or it did not listen in time.
    pub fn start(spec: &ServerSpec, output: &ServerOutput, label: &str) -> Result<ServerProcess, String> {
        let mut command = Command::new(&spec.binary);
        command.arg("--config").arg(&spec.config).arg("--with-default-root-credentials");
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("LATCHKEY_") {
                command.env_remove(key);
            }
        }
        command
            .env("LATCHKEY_SYSTEM_PATH", &spec.data_dir)
            .env("LATCHKEY_TCP_ADDRESS", "127.0.0.1:0")
            .env("LATCHKEY_HTTP_ADDRESS", "127.0.0.1:0")
            .envs(spec.env.iter().map(|(key, value)| (key, value)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let _ = writeln!(&*output.file, "==== {label} ====");
        let mut child =
            command.spawn().map_err(|error| format!("cannot run {}: {error}", spec.binary.display()))?;

        let (address_tx, address_rx) = mpsc::channel();
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        let readers = vec![
            copy_lines(stdout, "", Arc::clone(&output.file), Arc::clone(&output.events), Some(address_tx)),
            copy_lines(stderr, "stderr: ", Arc::clone(&output.file), Arc::clone(&output.events), None),
        ];
        let mut server =
            ServerProcess { child: Some(child), address: SocketAddr::from(([0, 0, 0, 0], 0)), readers };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(address) = address_rx.recv_timeout(Duration::from_millis(10)) {
                server.address = address;
                return Ok(server);
            }
            if let Some(status) = server.exited() {
                server.join_readers();
                return Err(format!("exited with {status} before listening"));
            }
            if Instant::now() >= deadline {
                server.kill();
                return Err(format!("did not listen within {START_TIMEOUT:?}"));
            }
        }
    }

    /// The exit status, if the process has already exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.as_mut().and_then(|child| child.try_wait().ok().flatten())
    }

    /// SIGKILL and reap: a crash. Returns the exit status.
    pub fn kill(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        // std sends SIGKILL on Unix.
        let _ = child.kill();
        let status = child.wait().ok();
        self.join_readers();
        status
    }

    /// SIGTERM and wait: the graceful stop at the end of a run.
    pub fn terminate(mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        let pid = libc::pid_t::try_from(child.id()).expect("pid fits pid_t");
        // SAFETY: kill(2) on our own child's pid, not yet reaped, has no memory effects.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        let status = child.wait().ok();
        self.join_readers();
        status
    }

    fn join_readers(&mut self) {
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Copies `stream` line by line into `file` until EOF, counting log events
/// and sending the address from the "Latchkey listening on ADDR" line.
fn copy_lines(
    stream: impl Read + Send + 'static,
    prefix: &'static str,
    file: Arc<File>,
    events: Arc<LogEvents>,
    address_tx: Option<mpsc::Sender<SocketAddr>>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            let text = String::from_utf8_lossy(&line);
            let text = text.trim_end_matches(['\n', '\r']);
            let _ = writeln!(&*file, "{prefix}{text}");
            events.observe(text);
            if let (Some(tx), Some(address)) = (&address_tx, listening_address(text)) {
                let _ = tx.send(address);
            }
        }
    })
}
