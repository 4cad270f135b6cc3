//! Scale probes: fill a server with many tokens, hold many idle
//! connections, and read the server's resident memory around each.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use latchkey_protocol::body::{CreatePersonalAccessToken, LoginUser};
use latchkey_protocol::codec::encode_request;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::sys;

pub struct FillResult {
    pub created: u64,
    pub refused: u64,
    pub elapsed: Duration,
}

/// What `fill` creates: names `<prefix><conn>-<n>`, each with `expiry_us`
/// as its lifetime (`u64::MAX`: never).
#[derive(Clone)]
pub struct FillTokens {
    pub prefix: String,
    pub expiry_us: u64,
}

/// Creates `tokens` tokens (named `<prefix><conn>-<n>`) over `connections`
/// connections, `depth` requests in flight on each.
pub fn fill(
    address: SocketAddr,
    user: &str,
    password: &str,
    tokens: u64,
    connections: usize,
    depth: usize,
    shape: &FillTokens,
) -> std::io::Result<FillResult> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let started = Instant::now();
    let results = runtime.block_on(async {
        let mut tasks = Vec::new();
        for connection in 0..connections {
            let share =
                tokens / connections as u64 + u64::from((connection as u64) < tokens % connections as u64);
            let (user, password, shape) = (user.to_owned(), password.to_owned(), shape.clone());
            tasks.push(tokio::spawn(async move {
                fill_one(address, &user, &password, connection, share, depth, &shape).await
            }));
        }
        let mut totals = (0u64, 0u64);
        for task in tasks {
            let (created, refused) = task.await.map_err(std::io::Error::other)??;
            totals.0 += created;
            totals.1 += refused;
        }
        Ok::<_, std::io::Error>(totals)
    })?;
    Ok(FillResult { created: results.0, refused: results.1, elapsed: started.elapsed() })
}

async fn fill_one(
    address: SocketAddr,
    user: &str,
    password: &str,
    connection: usize,
    count: u64,
    depth: usize,
    shape: &FillTokens,
) -> std::io::Result<(u64, u64)> {
    let mut stream = logged_in(address, user, password, "fill").await?;
    let mut out = BytesMut::new();
    let (mut header, mut payload) = ([0u8; 8], Vec::new());
    let (mut next, mut created, mut refused) = (0u64, 0u64, 0u64);
    while next < count {
        out.clear();
        let burst = (count - next).min(depth as u64);
        for _ in 0..burst {
            let create = CreatePersonalAccessToken {
                name: format!("{}{connection}-{next}", shape.prefix),
                expiry_us: shape.expiry_us,
            };
            encode_request(42, &create, &mut out);
            next += 1;
        }
        stream.write_all(&out).await?;
        for _ in 0..burst {
            read_reply(&mut stream, &mut header, &mut payload).await?;
            if header[..4] == [0, 0, 0, 0] { created += 1 } else { refused += 1 }
        }
    }
    Ok((created, refused))
}

pub struct IdleResult {
    pub opened: usize,
    pub rss_before: Option<u64>,
    pub rss_after: Option<u64>,
}

/// Opens `connections` connections, sends each a Ping (so the server has
/// set it up fully), holds them for `hold`, and samples the server's RSS.
pub fn idle(
    address: SocketAddr,
    connections: usize,
    hold: Duration,
    server_pid: Option<u32>,
) -> std::io::Result<IdleResult> {
    let limit = sys::raise_nofile().unwrap_or_else(|error| {
        eprintln!("latchkey-bench: cannot raise the open-files limit ({error})");
        sys::nofile_limit()
    });
    if (limit as usize) < connections + 64 {
        return Err(std::io::Error::other(format!(
            "open-files limit {limit} is too low for {connections} connections"
        )));
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let rss_before = server_pid.and_then(sys::process_rss);
        let mut streams = Vec::with_capacity(connections);
        let ping = [4u8, 0, 0, 0, 1, 0, 0, 0];
        let mut reply = [0u8; 8];
        for _ in 0..connections {
            let mut stream = TcpStream::connect(address).await?;
            stream.write_all(&ping).await?;
            stream.read_exact(&mut reply).await?;
            streams.push(stream);
        }
        tokio::time::sleep(hold).await;
        let rss_after = server_pid.and_then(sys::process_rss);
        Ok(IdleResult { opened: streams.len(), rss_before, rss_after })
    })
}

/// What `commit-latency` measured: every durable write's round trip.
pub struct CommitLatency {
    pub writes: usize,
    pub errors: u64,
    pub elapsed: Duration,
    /// Sorted, microseconds.
    pub latencies_us: Vec<u64>,
    /// When the slowest write started, from the start of the run.
    pub slowest_at: Duration,
}

impl CommitLatency {
    pub fn quantile_us(&self, q: f64) -> u64 {
        let index =
            ((self.latencies_us.len() as f64 * q) as usize).min(self.latencies_us.len().saturating_sub(1));
        self.latencies_us.get(index).copied().unwrap_or(0)
    }
}

/// Creates and deletes one token after another on each of `connections`
/// connections (one request in flight each) for `duration`, timing every
/// reply: each is a commit (written and synced) the writer thread made.
/// What stalls the writer thread (a compaction's hand-over, a purge of
/// expired tokens) shows in the maximum.
/// Writes begun in the first `warmup` are made but not counted (the first
/// commits after a start touch cold pages).
pub fn commit_latency(
    address: SocketAddr,
    user: &str,
    password: &str,
    connections: usize,
    duration: Duration,
    warmup: Duration,
) -> std::io::Result<CommitLatency> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let started = Instant::now();
    let per_connection = runtime.block_on(async {
        let mut tasks = Vec::new();
        for connection in 0..connections {
            let (user, password) = (user.to_owned(), password.to_owned());
            tasks.push(tokio::spawn(async move {
                commit_latency_one(address, &user, &password, connection, started, duration).await
            }));
        }
        let mut all = Vec::new();
        for task in tasks {
            all.push(task.await.map_err(std::io::Error::other)??);
        }
        Ok::<_, std::io::Error>(all)
    })?;
    let elapsed = started.elapsed();
    let mut latencies_us = Vec::new();
    let (mut errors, mut slowest) = (0, (0, Duration::ZERO));
    for (samples, failed) in per_connection {
        errors += failed;
        for (at, us) in samples.into_iter().filter(|&(at, _)| at >= warmup) {
            if us > slowest.0 {
                slowest = (us, at);
            }
            latencies_us.push(us);
        }
    }
    latencies_us.sort_unstable();
    Ok(CommitLatency { writes: latencies_us.len(), errors, elapsed, latencies_us, slowest_at: slowest.1 })
}

/// One connection's `(started at, latency µs)` per write, and its errors.
async fn commit_latency_one(
    address: SocketAddr,
    user: &str,
    password: &str,
    connection: usize,
    started: Instant,
    duration: Duration,
) -> std::io::Result<(Vec<(Duration, u64)>, u64)> {
    use latchkey_protocol::body::DeletePersonalAccessToken;

    let mut stream = logged_in(address, user, password, "commit-latency").await?;
    let mut out = BytesMut::new();
    let mut header = [0u8; 8];
    let mut payload = Vec::new();
    let name = format!("commit-latency-{connection}");
    let (mut samples, mut errors) = (Vec::new(), 0u64);
    let mut create = true;
    while started.elapsed() < duration {
        out.clear();
        if create {
            encode_request(
                42,
                &CreatePersonalAccessToken { name: name.clone(), expiry_us: u64::MAX },
                &mut out,
            );
        } else {
            encode_request(43, &DeletePersonalAccessToken { name: name.clone() }, &mut out);
        }
        let sent = Instant::now();
        stream.write_all(&out).await?;
        read_reply(&mut stream, &mut header, &mut payload).await?;
        samples.push((sent - started, sent.elapsed().as_micros() as u64));
        if header[..4] != [0, 0, 0, 0] {
            errors += 1;
        }
        create = !create;
    }
    // Leave no token behind.
    if !create {
        out.clear();
        encode_request(43, &DeletePersonalAccessToken { name }, &mut out);
        stream.write_all(&out).await?;
        read_reply(&mut stream, &mut header, &mut payload).await?;
    }
    Ok((samples, errors))
}

/// A connection to `address` logged in with `user`'s password (`what`
/// names the command in the error if the login is refused).
async fn logged_in(
    address: SocketAddr,
    user: &str,
    password: &str,
    what: &str,
) -> std::io::Result<TcpStream> {
    let mut stream = TcpStream::connect(address).await?;
    stream.set_nodelay(true)?;
    let mut out = BytesMut::new();
    let login = LoginUser {
        username: user.into(),
        password: password.to_owned().into(),
        version: None,
        context: None,
    };
    encode_request(38, &login, &mut out);
    stream.write_all(&out).await?;
    let (mut header, mut payload) = ([0u8; 8], Vec::new());
    read_reply(&mut stream, &mut header, &mut payload).await?;
    if header[..4] != [0, 0, 0, 0] {
        return Err(std::io::Error::other(format!("{what}: password login refused")));
    }
    Ok(stream)
}

async fn read_reply(
    stream: &mut TcpStream,
    header: &mut [u8; 8],
    payload: &mut Vec<u8>,
) -> std::io::Result<()> {
    stream.read_exact(header).await?;
    let length = u32::from_le_bytes(header[4..].try_into().expect("4 bytes")) as usize;
    payload.resize(length, 0);
    stream.read_exact(payload).await?;
    Ok(())
}
