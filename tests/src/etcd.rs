//! A real etcd cluster on loopback for the cluster-mode tests: members on
//! free ports in a temporary directory, killed and restarted at will.
//!
//! Needs Debian's `etcd-server` (the `etcd` binary). Without it the tests
//! that ask for a cluster skip, saying what to install; under `CI=true` a
//! skip is a failure.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Time allowed for a cluster to report healthy.
const HEALTHY_TIMEOUT: Duration = Duration::from_secs(30);

/// The etcd binary, or `None` after skipping the test through
/// [`crate::skip`] (a failure under `CI=true`).
pub fn etcd_binary() -> Option<PathBuf> {
    let binary = std::env::var_os("LATCHKEY_ETCD_BIN").map_or_else(|| PathBuf::from("etcd"), PathBuf::from);
    match Command::new(&binary).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status() {
        Ok(status) if status.success() => Some(binary),
        _ => {
            crate::skip(
                &format!("no etcd binary ({})", binary.display()),
                "apt-get install etcd-server, or set LATCHKEY_ETCD_BIN",
            );
            None
        }
    }
}

/// A free loopback port (bound, then released for the child to take).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|listener| listener.local_addr()).expect("a free port").port()
}

struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    child: Option<Child>,
}

/// An etcd cluster of real processes; every member is killed on drop.
pub struct EtcdCluster {
    binary: PathBuf,
    dir: tempfile::TempDir,
    members: Vec<Member>,
    initial_cluster: String,
}

impl EtcdCluster {
    /// Starts `size` members and waits until each reports healthy; `None`
    /// when etcd is not installed (see [`etcd_binary`]).
    pub fn start(size: usize) -> Option<EtcdCluster> {
        let binary = etcd_binary()?;
        let members: Vec<Member> = (1..=size)
            .map(|index| Member {
                name: format!("m{index}"),
                client_port: free_port(),
                peer_port: free_port(),
                child: None,
            })
            .collect();
        let initial_cluster = members
            .iter()
            .map(|member| format!("{}=http://127.0.0.1:{}", member.name, member.peer_port))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster =
            EtcdCluster { binary, dir: tempfile::tempdir().expect("temp dir"), members, initial_cluster };
        for index in 0..size {
            cluster.spawn(index, "new");
        }
        for index in 0..size {
            cluster.wait_healthy(index);
        }
        Some(cluster)
    }

    fn spawn(&mut self, index: usize, state: &str) {
        let member = &self.members[index];
        let data = self.dir.path().join(&member.name);
        let log =
            std::fs::File::create(self.dir.path().join(format!("{}.log", member.name))).expect("etcd log");
        let client = format!("http://127.0.0.1:{}", member.client_port);
        let peer = format!("http://127.0.0.1:{}", member.peer_port);
        let child = Command::new(&self.binary)
            .args(["--name", &member.name])
            .arg("--data-dir")
            .arg(&data)
            .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &self.initial_cluster, "--initial-cluster-state", state])
            .args(["--initial-cluster-token", "latchkey-tests"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("etcd log"))
            .stderr(log)
            .spawn()
            .expect("spawn etcd");
        self.members[index].child = Some(child);
    }

    /// Waits until member `index` answers `GET /health` with health true.
    pub fn wait_healthy(&self, index: usize) {
        let address: SocketAddr = format!("127.0.0.1:{}", self.members[index].client_port).parse().unwrap();
        let deadline = Instant::now() + HEALTHY_TIMEOUT;
        while Instant::now() < deadline {
            if health(address).is_some_and(|body| body.contains("\"health\":\"true\"")) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("etcd member {index} not healthy in time; its log:\n{}", self.log(index));
    }

    /// `host:port` of every member's client URL, comma-separated (what
    /// `LATCHKEY_STORAGE_ETCD_ENDPOINTS` takes).
    pub fn endpoints(&self) -> String {
        self.members
            .iter()
            .map(|member| format!("127.0.0.1:{}", member.client_port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// `host:port` of member `index`'s client URL alone.
    pub fn endpoint(&self, index: usize) -> String {
        format!("127.0.0.1:{}", self.members[index].client_port)
    }

    /// Compacts etcd's history up to its current revision (through member
    /// `index`'s JSON gateway) and returns that revision: a watch that has
    /// not seen it yet can no longer resume.
    pub fn compact(&self, index: usize) -> i64 {
        let address: SocketAddr = self.endpoint(index).parse().unwrap();
        let range = post(address, "/v3/kv/range", r#"{"key":"AA=="}"#).expect("etcd range");
        let revision: i64 = range
            .split("\"revision\":\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .and_then(|text| text.parse().ok())
            .unwrap_or_else(|| panic!("no revision in {range}"));
        let body = format!(r#"{{"revision":"{revision}","physical":true}}"#);
        let compacted = post(address, "/v3/kv/compaction", &body).expect("etcd compaction");
        assert!(
            compacted.starts_with("HTTP/1.1 200") || compacted.starts_with("HTTP/1.0 200"),
            "{compacted}"
        );
        revision
    }

    /// SIGKILLs member `index`.
    pub fn kill(&mut self, index: usize) {
        if let Some(mut child) = self.members[index].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts member `index` again on its data directory.
    pub fn restart(&mut self, index: usize) {
        self.kill(index);
        self.spawn(index, "existing");
    }

    /// What member `index` logged.
    pub fn log(&self, index: usize) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{}.log", self.members[index].name)))
            .unwrap_or_default()
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for index in 0..self.members.len() {
            self.kill(index);
        }
    }
}

/// A JSON POST to etcd's gateway; the whole response, or `None`.
fn post(address: SocketAddr, path: &str, body: &str) -> Option<String> {
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    Some(response)
}

/// The body of `GET /health`, or `None` if the member does not answer.
fn health(address: SocketAddr) -> Option<String> {
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_millis(200)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream.write_all(b"GET /health HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    Some(response)
}
