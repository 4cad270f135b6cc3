//! Helpers shared by the end-to-end test files: raw frames over a plain
//! `TcpStream`, request bodies built by hand, status extraction from SDK
//! results, config users and randomness.
//!
//! Each test file includes this with `mod common;` and uses only part of it.
#![allow(dead_code)]

use std::fmt::Debug;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use latchkey_sdk::{Client, Error, IssuedToken, NewToken};
use latchkey_tests::contains;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Guard against a hung server: no test waits longer than this for a reply.
/// Exceeding it fails the test as a hang; it is not a timing assertion.
pub const HANG_GUARD: Duration = Duration::from_secs(20);

pub const PING: u32 = 1;
pub const GET_STATS: u32 = 10;
pub const GET_CLUSTER_METADATA: u32 = 12;
pub const GET_ME: u32 = 20;
pub const LOGIN_USER: u32 = 38;
pub const LOGOUT_USER: u32 = 39;
pub const GET_PATS: u32 = 41;
pub const CREATE_PAT: u32 = 42;
pub const DELETE_PAT: u32 = 43;
pub const LOGIN_WITH_PAT: u32 = 44;
pub const GET_STREAMS: u32 = 201;
/// A code Iggy does not define.
pub const UNKNOWN_CODE: u32 = 9999;

/// The status of an SDK call: 0 on success, the server's code otherwise.
/// Anything other than a server status (I/O, protocol) fails the test.
pub fn status<T: Debug>(result: Result<T, Error>) -> u32 {
    match result {
        Ok(_) => 0,
        Err(Error::Server { code, .. }) => code,
        Err(other) => panic!("expected a server status, got {other:?}"),
    }
}

/// Sends a hand-built request through the SDK and returns its status.
pub async fn raw_status(client: &mut Client, code: u32, payload: &[u8]) -> u32 {
    status(client.send_raw(code, payload).await)
}

/// `[len u8][bytes]`: a WireName (or any short string).
pub fn short(bytes: &[u8]) -> Vec<u8> {
    let len = u8::try_from(bytes.len()).expect("short string over 255 bytes");
    let mut out = vec![len];
    out.extend_from_slice(bytes);
    out
}

/// CreatePersonalAccessToken body: `[name WireName][expiry u64]`.
pub fn create_body(name: &[u8], expiry_us: u64) -> Vec<u8> {
    let mut out = short(name);
    out.extend_from_slice(&expiry_us.to_le_bytes());
    out
}

/// LoginUser body with a version string and an empty context, as the 0.10
/// SDK sends it.
pub fn login_body(username: &[u8], password: &[u8]) -> Vec<u8> {
    let mut out = short(username);
    out.extend_from_slice(&short(password));
    let version = b"0.10.0";
    out.extend_from_slice(&(version.len() as u32).to_le_bytes());
    out.extend_from_slice(version);
    out.extend_from_slice(&0u32.to_le_bytes());
    out
}

/// A request frame `[4 + len][code][payload]`.
pub fn frame(code: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + payload.len());
    out.extend_from_slice(&(4 + payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&code.to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// A plain TCP connection speaking frames by hand.
pub struct Raw {
    pub stream: TcpStream,
}

impl Raw {
    pub async fn connect(address: SocketAddr) -> Raw {
        let stream = TcpStream::connect(address).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        Raw { stream }
    }

    /// Connects from `local` (any address on the loopback interface, such as
    /// 127.0.0.2), so the server sees another client address.
    pub async fn connect_from(local: std::net::IpAddr, address: SocketAddr) -> Raw {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.bind(SocketAddr::new(local, 0)).expect("bind the client address");
        let stream = socket.connect(address).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        Raw { stream }
    }

    pub async fn write(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    /// Reads one reply `[status][length][payload]`.
    pub async fn read_reply(&mut self) -> (u32, Vec<u8>) {
        let read = async {
            let mut header = [0u8; 8];
            self.stream.read_exact(&mut header).await?;
            let status = u32::from_le_bytes(header[..4].try_into().unwrap());
            let length = u32::from_le_bytes(header[4..].try_into().unwrap());
            let mut payload = vec![0u8; length as usize];
            self.stream.read_exact(&mut payload).await?;
            Ok::<_, std::io::Error>((status, payload))
        };
        tokio::time::timeout(HANG_GUARD, read)
            .await
            .expect("no reply from the server (hang guard)")
            .expect("reading a reply")
    }

    /// Sends one request and reads its reply.
    pub async fn call(&mut self, code: u32, payload: &[u8]) -> (u32, Vec<u8>) {
        self.write(&frame(code, payload)).await;
        self.read_reply().await
    }

    /// Sends one request and returns only the status.
    pub async fn status(&mut self, code: u32, payload: &[u8]) -> u32 {
        self.call(code, payload).await.0
    }

    /// Reads until the server closes the connection; returns what it sent
    /// before closing. Fails the test if the server keeps it open.
    pub async fn read_until_closed(&mut self) -> Vec<u8> {
        let mut received = Vec::new();
        let read = async {
            let mut buffer = [0u8; 4096];
            loop {
                match self.stream.read(&mut buffer).await {
                    Ok(0) => return,
                    Ok(n) => received.extend_from_slice(&buffer[..n]),
                    // A reset is a close too.
                    Err(_) => return,
                }
            }
        };
        tokio::time::timeout(HANG_GUARD, read)
            .await
            .expect("the server did not close the connection (hang guard)");
        received
    }
}

/// Connects with the SDK.
pub async fn connect(address: SocketAddr) -> Client {
    Client::connect(address).await.expect("connect")
}

/// Connects and logs in as iggy/iggy (the server must run with the default root).
pub async fn root(address: SocketAddr) -> Client {
    let mut client = connect(address).await;
    assert_eq!(client.login_user("iggy", "iggy").await.expect("root login"), 0);
    client
}

/// Connects and logs in with a token.
pub async fn with_token(address: SocketAddr, token: &str) -> Client {
    let mut client = connect(address).await;
    client.login_with_personal_access_token(token).await.expect("token login");
    client
}

/// Bytes from the OS random source.
pub fn random_bytes(count: usize) -> Vec<u8> {
    use std::io::Read;
    let mut bytes = vec![0u8; count];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut file| file.read_exact(&mut bytes))
        .expect("read /dev/urandom");
    bytes
}

/// Random input a failing test can replay: SplitMix64 from a seed that is
/// `LATCHKEY_TEST_SEED` when set, else fresh from the OS, and printed either
/// way (the output shows when the test fails).
pub struct SeededRng {
    state: u64,
}

impl SeededRng {
    pub fn new(what: &str) -> SeededRng {
        let seed = match std::env::var("LATCHKEY_TEST_SEED") {
            Ok(text) => text.parse().expect("LATCHKEY_TEST_SEED is a u64"),
            Err(_) => u64::from_le_bytes(random_bytes(8).try_into().unwrap()),
        };
        eprintln!("{what}: seed {seed}; LATCHKEY_TEST_SEED={seed} replays it");
        SeededRng { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform enough in `0..bound` for test input (`bound` > 0).
    pub fn below(&mut self, bound: u64) -> u64 {
        self.next_u64() % bound
    }

    pub fn bytes(&mut self, count: usize) -> Vec<u8> {
        (0..count).map(|_| self.next_u64() as u8).collect()
    }
}

/// `count` random characters from `0-9A-Za-z`.
pub fn random_alphanumeric(count: usize) -> String {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut out = String::with_capacity(count);
    while out.len() < count {
        for byte in random_bytes(64) {
            // 248 = 4 × 62: reject the rest so every character is equally likely.
            if byte < 248 && out.len() < count {
                out.push(char::from(ALPHABET[usize::from(byte % 62)]));
            }
        }
    }
    out
}

/// A well-formed Latchkey token (right prefix, length and checksum) that the
/// server never issued.
pub fn unissued_token() -> String {
    let secret: [u8; 32] = random_bytes(32).try_into().unwrap();
    latchkey_protocol::token::encode(&secret)
}

/// Whether `token` has Latchkey's shape: `lk_` + 49 base62 characters.
pub fn assert_token_shape(token: &str) {
    assert_eq!(token.len(), 52, "token length: {token:?}");
    assert!(token.starts_with("lk_"), "token prefix: {token:?}");
    assert!(token[3..].bytes().all(|b| b.is_ascii_alphanumeric()), "token alphabet: {token:?}");
    latchkey_protocol::token::validate(token).expect("token checksum");
}

/// One `[[users]]` entry.
pub struct TestUser<'a> {
    pub id: u32,
    pub username: &'a str,
    pub password: &'a str,
    pub active: bool,
}

/// Config text for `users`, hashing each password.
pub fn users_config(users: &[TestUser<'_>]) -> String {
    let mut text = String::new();
    for user in users {
        text.push_str(&format!(
            "[[users]]\nid = {}\nusername = \"{}\"\npassword_hash = \"{}\"\nactive = {}\n\n",
            user.id,
            user.username,
            latchkey_tests::password_hash(user.password),
            user.active
        ));
    }
    text
}

/// Now, in µs since the Unix epoch.
pub fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_micros() as u64
}

/// Waits (bounded by the hang guard) until `check` holds for the server's
/// stderr, which a reader thread collects asynchronously.
pub fn wait_for_stderr(server: &latchkey_tests::TestServer, check: impl Fn(&str) -> bool) -> String {
    let deadline = std::time::Instant::now() + HANG_GUARD;
    loop {
        let stderr = server.stderr();
        if check(&stderr) {
            return stderr;
        }
        assert!(std::time::Instant::now() < deadline, "expected output never appeared on stderr:\n{stderr}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Same as [`wait_for_stderr`] for the log (stdout).
pub fn wait_for_logs(server: &latchkey_tests::TestServer, check: impl Fn(&str) -> bool) -> String {
    let deadline = std::time::Instant::now() + HANG_GUARD;
    loop {
        let logs = server.logs();
        if check(&logs) {
            return logs;
        }
        assert!(std::time::Instant::now() < deadline, "expected output never appeared in the log:\n{logs}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// How long a test waits for something the server does in the background
/// (a reload, a flush) before it calls it a hang. Not a timing assertion.
pub const POLL_LIMIT: Duration = Duration::from_secs(10);

/// A bounded wait for something the server does in the background.
pub struct Poll {
    until: Instant,
    what: &'static str,
}

impl Poll {
    pub fn new(what: &'static str) -> Poll {
        Poll { until: Instant::now() + POLL_LIMIT, what }
    }

    pub async fn pause(&self) {
        assert!(Instant::now() < self.until, "{} did not happen (hang guard)", self.what);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Creates a token with the SDK; fails the test, naming it, if refused.
pub async fn create(client: &mut Client, token: NewToken) -> IssuedToken {
    let name = token.name.clone();
    client.create_token(&token).await.unwrap_or_else(|error| panic!("create {name}: {error}"))
}

/// `spec` with a compaction policy that makes one due as soon as a record
/// is dead (two records at least): what [`churn_until_compacted`] needs.
pub fn compacting(spec: &latchkey_tests::ServerSpec) -> latchkey_tests::ServerSpec {
    spec.clone()
        .env("LATCHKEY_SYSTEM_COMPACTION_MIN_RECORDS", "2")
        .env("LATCHKEY_SYSTEM_COMPACTION_DEAD_RATIO", "0.0")
}

/// Creates and deletes a token named `churn` until `server` logs that a
/// compaction of its token log finished (it must run with a policy that
/// makes one due after a dead record or two).
pub async fn churn_until_compacted(server: &latchkey_tests::TestServer, client: &mut Client) {
    let poll = Poll::new("a compaction");
    while !server.logs().contains("token log compacted") {
        create(client, NewToken::named("churn")).await;
        client.delete_token("churn").await.unwrap();
        poll.pause().await;
    }
}

/// Waits until the clock has passed `at_us` (µs since the Unix epoch): the
/// server reads the same clock, so from then on it sees that moment as past
/// too. Fails if `at_us` is further away than the hang guard.
pub async fn wait_until_past(at_us: u64) {
    let limit_us = now_us() + HANG_GUARD.as_micros() as u64;
    assert!(at_us < limit_us, "{at_us} is too far ahead to wait for");
    while now_us() <= at_us {
        tokio::time::sleep(Duration::from_micros((at_us + 1).saturating_sub(now_us()).max(100))).await;
    }
}

/// Waits (bounded by the hang guard) until the server has read everything
/// written so far on `stream`: the server's kernel has acknowledged it, and
/// then none of it waits in the server's receive queue.
pub async fn wait_until_read_by_server(stream: &TcpStream) {
    let (client_end, server_end) = (stream.local_addr().unwrap(), stream.peer_addr().unwrap());
    let deadline = Instant::now() + HANG_GUARD;
    let queues = |local, remote| latchkey_tests::tcp_queues(local, remote).expect("a live connection");
    // In this order: once acknowledged, the bytes are in the server's queue
    // or already read, so an empty queue seen afterwards means read.
    while queues(client_end, server_end).unacked_bytes > 0 {
        assert!(Instant::now() < deadline, "the server's kernel never took the bytes (hang guard)");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    while queues(server_end, client_end).unread_bytes > 0 {
        assert!(Instant::now() < deadline, "the server never read the bytes (hang guard)");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Sends one burst of pipelined requests (a create before login, then
/// creates, deletes, a list and more creates, some refused) and checks that
/// every reply is what the same requests sent one by one would get, in
/// order; a list in the burst sees everything before it and nothing after.
/// Leaves root with the tokens `beta` and `gamma`.
pub async fn pipelined_burst_answers_in_order(address: SocketAddr) {
    let mut raw = Raw::connect(address).await;
    let mut burst = frame(CREATE_PAT, &create_body(b"early", 0));
    burst.extend(frame(LOGIN_USER, &login_body(b"iggy", b"iggy")));
    for (code, payload) in [
        (CREATE_PAT, create_body(b"alpha", 0)),
        (CREATE_PAT, create_body(b"alpha", 0)),
        (DELETE_PAT, short(b"alpha")),
        (DELETE_PAT, short(b"alpha")),
        (CREATE_PAT, create_body(b"beta", u64::MAX)),
        (CREATE_PAT, create_body(b"x", 0)),
        (GET_PATS, Vec::new()),
        (CREATE_PAT, create_body(b"gamma", 0)),
    ] {
        burst.extend(frame(code, &payload));
    }
    raw.write(&burst).await;
    let mut statuses = Vec::new();
    let mut list = Vec::new();
    for index in 0..10 {
        let (status, payload) = raw.read_reply().await;
        statuses.push(status);
        if index == 8 {
            list = payload;
        }
    }
    assert_eq!(statuses, [40, 0, 0, 51, 0, 20, 0, 50, 0, 0]);
    // The list in the middle of the burst saw beta (and not gamma, after it).
    assert!(contains(&list, b"beta") && !contains(&list, b"gamma") && !contains(&list, b"alpha"));
    let names: Vec<String> = {
        let mut client = root(address).await;
        client.get_personal_access_tokens().await.unwrap().into_iter().map(|token| token.name).collect()
    };
    assert_eq!(names, ["beta", "gamma"]);
}
