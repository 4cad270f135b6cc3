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

/// Creates `tokens` tokens (named `f<conn>-<n>`) over `connections`
/// connections, `depth` requests in flight on each.
pub fn fill(
    address: SocketAddr,
    user: &str,
    password: &str,
    tokens: u64,
    connections: usize,
    depth: usize,
) -> std::io::Result<FillResult> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let started = Instant::now();
    let results = runtime.block_on(async {
        let mut tasks = Vec::new();
        for connection in 0..connections {
            let share =
                tokens / connections as u64 + u64::from((connection as u64) < tokens % connections as u64);
            let (user, password) = (user.to_owned(), password.to_owned());
            tasks.push(tokio::spawn(async move {
                fill_one(address, &user, &password, connection, share, depth).await
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
) -> std::io::Result<(u64, u64)> {
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
    let mut header = [0u8; 8];
    stream.read_exact(&mut header).await?;
    let length = u32::from_le_bytes(header[4..].try_into().unwrap()) as usize;
    let mut payload = vec![0u8; length];
    stream.read_exact(&mut payload).await?;
    if header[..4] != [0, 0, 0, 0] {
        return Err(std::io::Error::other("fill: password login refused"));
    }
    let (mut next, mut created, mut refused) = (0u64, 0u64, 0u64);
    while next < count {
        out.clear();
        let burst = (count - next).min(depth as u64);
        for _ in 0..burst {
            let create =
                CreatePersonalAccessToken { name: format!("f{connection}-{next}"), expiry_us: u64::MAX };
            encode_request(42, &create, &mut out);
            next += 1;
        }
        stream.write_all(&out).await?;
        for _ in 0..burst {
            stream.read_exact(&mut header).await?;
            let length = u32::from_le_bytes(header[4..].try_into().unwrap()) as usize;
            payload.resize(length, 0);
            stream.read_exact(&mut payload).await?;
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
