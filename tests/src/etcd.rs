//! A real etcd cluster on loopback for the cluster-mode tests: members on
//! free ports in a temporary directory, killed and restarted at will.
//!
//! Needs Debian's `etcd-server` (the `etcd` binary). Without it the tests
//! that ask for a cluster skip, saying what to install; under `CI=true` a
//! skip is a failure.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Times a cluster is started anew when a member lost its port to another
/// process.
const START_ATTEMPTS: usize = 5;
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

struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    child: Option<Child>,
}

/// PEM files for an etcd cluster that serves clients over TLS and asks
/// them for a certificate.
#[derive(Debug, Clone)]
pub struct EtcdTls {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

/// An etcd cluster of real processes; every member is killed on drop.
pub struct EtcdCluster {
    binary: PathBuf,
    dir: tempfile::TempDir,
    members: Vec<Member>,
    initial_cluster: String,
    tls: Option<EtcdTls>,
}

impl EtcdCluster {
    /// Starts `size` members and waits until each reports healthy; `None`
    /// when etcd is not installed (see [`etcd_binary`]).
    pub fn start(size: usize) -> Option<EtcdCluster> {
        EtcdCluster::start_with(size, None)
    }

    /// Like [`EtcdCluster::start`], with clients served over TLS and
    /// required to show a certificate signed by `tls.ca`.
    pub fn start_tls(size: usize, tls: EtcdTls) -> Option<EtcdCluster> {
        EtcdCluster::start_with(size, Some(tls))
    }

    fn start_with(size: usize, tls: Option<EtcdTls>) -> Option<EtcdCluster> {
        let binary = etcd_binary()?;
        // A port found free may be taken by another test's process before
        // etcd binds it: then the whole cluster starts again on new ports.
        for _ in 0..START_ATTEMPTS {
            let mut cluster = EtcdCluster::on_free_ports(binary.clone(), size, tls.clone());
            for index in 0..size {
                cluster.spawn(index, "new");
            }
            if (0..size).all(|index| cluster.became_healthy(index)) {
                return Some(cluster);
            }
            let collided = (0..size).any(|index| cluster.log(index).contains("address already in use"));
            assert!(collided, "etcd did not become healthy; member logs:\n{}", cluster.logs());
        }
        panic!("etcd could not start on free ports in {START_ATTEMPTS} attempts");
    }

    fn on_free_ports(binary: PathBuf, size: usize, tls: Option<EtcdTls>) -> EtcdCluster {
        let ports = crate::free_ports(2 * size);
        let members: Vec<Member> = (1..=size)
            .zip(ports.chunks(2))
            .map(|(index, pair)| Member {
                name: format!("m{index}"),
                client_port: pair[0],
                peer_port: pair[1],
                child: None,
            })
            .collect();
        let initial_cluster = members
            .iter()
            .map(|member| format!("{}=http://127.0.0.1:{}", member.name, member.peer_port))
            .collect::<Vec<_>>()
            .join(",");
        EtcdCluster { binary, dir: tempfile::tempdir().expect("temp dir"), members, initial_cluster, tls }
    }

    fn logs(&self) -> String {
        (0..self.members.len()).map(|index| format!("--- member {index}\n{}", self.log(index))).collect()
    }

    fn spawn(&mut self, index: usize, state: &str) {
        let member = &self.members[index];
        let data = self.dir.path().join(&member.name);
        let log =
            std::fs::File::create(self.dir.path().join(format!("{}.log", member.name))).expect("etcd log");
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let client = format!("{scheme}://127.0.0.1:{}", member.client_port);
        let peer = format!("http://127.0.0.1:{}", member.peer_port);
        let mut command = Command::new(&self.binary);
        if let Some(tls) = &self.tls {
            command
                .arg("--cert-file")
                .arg(&tls.server_cert)
                .arg("--key-file")
                .arg(&tls.server_key)
                .arg("--trusted-ca-file")
                .arg(&tls.ca)
                .arg("--client-cert-auth");
        }
        let child = command
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

    /// Waits until member `index` answers `GET /health` with health true
    /// (over TLS: until it logs that it serves clients).
    pub fn wait_healthy(&self, index: usize) {
        assert!(
            self.became_healthy(index),
            "etcd member {index} not healthy in time; its log:\n{}",
            self.log(index)
        );
    }

    /// Whether member `index` becomes healthy in time; false at once if it
    /// exited (a port taken under it, say).
    fn became_healthy(&self, index: usize) -> bool {
        let address: SocketAddr = format!("127.0.0.1:{}", self.members[index].client_port).parse().unwrap();
        let deadline = Instant::now() + HEALTHY_TIMEOUT;
        while Instant::now() < deadline {
            let healthy = match &self.tls {
                None => health(address).is_some_and(|body| body.contains("\"health\":\"true\"")),
                Some(_) => self.log(index).contains("serving client requests on"),
            };
            if healthy {
                return true;
            }
            if self.log(index).contains("address already in use") {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
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
