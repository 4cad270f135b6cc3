//! The 0.11 ("VSR") framing end to end (spec §0.2, §2): frames built by hand
//! from the spec's offsets over real TCP, framing detection and its corner
//! cases, forced framings, and tokens shared across both framings.
//!
//! Frames are assembled and read here byte by byte rather than with
//! `latchkey_protocol::vsr`, so a mistake in that module cannot hide itself.
//! Only the XXH3 checksum comes from it (its vectors are pinned in the
//! protocol crate's unit tests).

mod common;

use std::net::SocketAddr;

use common::*;
use latchkey_protocol::vsr::request_checksum;
use latchkey_sdk::Expiry;
use latchkey_tests::{DataHome, ServerSpec, TestServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const HEADER: usize = 256;

/// Operations (spec §2.8).
const REGISTER: u8 = 1;
const NON_REPLICATED: u8 = 2;
const LOGOUT: u8 = 3;
const CREATE_STREAM: u8 = 128;
const CREATE_PAT_OP: u8 = 146;
const DELETE_PAT_OP: u8 = 147;

/// Header commands (spec §2.3).
const REQUEST: u8 = 5;
const REPLY: u8 = 8;
const EVICTION: u8 = 13;

/// Eviction reasons (spec §2.7).
const NO_SESSION: u8 = 1;
const INVALID_CREDENTIALS: u8 = 9;
const INVALID_TOKEN: u8 = 10;
const USER_INACTIVE: u8 = 11;
const INCOMPATIBLE_PROTOCOL: u8 = 14;
const MALFORMED_LOGIN: u8 = 15;

/// Packed protocol versions (spec §2.1).
const V0_11_0: u32 = 11264;
const V0_10_0: u32 = 10240;

const ONE_HOUR_US: u64 = 3_600_000_000;

/// The request header fields a test sets; everything else is zero.
#[derive(Clone, Copy, Default)]
struct Fields {
    client: u128,
    request: u64,
    operation: u8,
    session: u64,
    code: u32,
    /// `None`: stamp XXH3 of the body (what the SDK does for every
    /// replicated operation); `Some(value)`: send `value`.
    checksum: Option<u128>,
    /// Overrides for corner cases.
    command: Option<u8>,
    size: Option<u32>,
    first_word: Option<u32>,
}

fn put(header: &mut [u8], at: usize, bytes: &[u8]) {
    header[at..at + bytes.len()].copy_from_slice(bytes);
}

/// A request frame laid out as spec §2.3/§2.4 says.
fn vsr_frame(fields: Fields, body: &[u8]) -> Vec<u8> {
    let mut frame = vec![0u8; HEADER];
    let size = fields.size.unwrap_or((HEADER + body.len()) as u32);
    put(&mut frame, 48, &size.to_le_bytes());
    frame[60] = fields.command.unwrap_or(REQUEST);
    put(&mut frame, 128, &fields.client.to_le_bytes());
    let checksum = match fields.checksum {
        Some(value) => value,
        None if fields.operation == NON_REPLICATED => 0,
        None => request_checksum(body),
    };
    put(&mut frame, 144, &checksum.to_le_bytes());
    put(&mut frame, 168, &fields.request.to_le_bytes());
    frame[176] = fields.operation;
    put(&mut frame, 184, &fields.session.to_le_bytes());
    if fields.operation == NON_REPLICATED {
        put(&mut frame, 196, &fields.code.to_le_bytes());
    }
    if let Some(word) = fields.first_word {
        put(&mut frame, 0, &word.to_le_bytes());
    }
    frame.extend_from_slice(body);
    frame
}

/// A server frame, read by offsets (spec §2.5, §2.7).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Frame {
    Reply { status: u32, operation: u8, op: u64, client: u128, request: u64, body: Vec<u8> },
    Eviction { reason: u8, client: u128, version_max: u32, version_min: u32 },
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap())
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap())
}

fn u128_at(bytes: &[u8], at: usize) -> u128 {
    u128::from_le_bytes(bytes[at..at + 16].try_into().unwrap())
}

/// `[version u32][sdk_name WireName][sdk_version WireName]`, as the 0.11.0 SDK.
fn version_info(protocol: u32) -> Vec<u8> {
    let mut body = protocol.to_le_bytes().to_vec();
    body.extend_from_slice(&short(b"rust-sdk"));
    body.extend_from_slice(&short(b"0.11.0"));
    body
}

/// Password Register body (spec §2.9).
fn password_body(protocol: u32, username: &[u8], password: &[u8]) -> Vec<u8> {
    let mut body = version_info(protocol);
    body.extend_from_slice(&short(username));
    body.extend_from_slice(&short(password));
    body.extend_from_slice(&0u32.to_le_bytes());
    body
}

/// PAT Register body (spec §2.9).
fn token_body(token: &[u8]) -> Vec<u8> {
    let mut body = version_info(V0_11_0);
    body.extend_from_slice(&short(token));
    body.extend_from_slice(&0u32.to_le_bytes());
    body
}

/// A result-framed body: `Ok(payload)` or `Err(first result code)`.
fn result(body: &[u8]) -> Result<&[u8], u32> {
    let count = u32_at(body, 0) as usize;
    if count == 0 { Ok(&body[4..]) } else { Err(u32_at(body, 8)) }
}

/// A 0.11 client over a plain socket, keeping the SDK's counters (§2.17).
struct Vsr {
    stream: TcpStream,
    client: u128,
    request: u64,
    session: u64,
}

impl Vsr {
    async fn connect(address: SocketAddr) -> Vsr {
        let stream = TcpStream::connect(address).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        // Any nonzero id will do; vary it so replies can be told apart.
        let client = u128::from_le_bytes(random_bytes(16).try_into().unwrap()) | 1;
        Vsr { stream, client, request: 1, session: 0 }
    }

    async fn write(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    async fn read_frame(&mut self) -> Frame {
        let read = async {
            let mut header = [0u8; HEADER];
            self.stream.read_exact(&mut header).await?;
            let size = u32_at(&header, 48) as usize;
            assert!(size >= HEADER, "reply size {size}");
            let mut body = vec![0u8; size - HEADER];
            self.stream.read_exact(&mut body).await?;
            Ok::<_, std::io::Error>((header, body))
        };
        let (header, body) = tokio::time::timeout(HANG_GUARD, read)
            .await
            .expect("no reply from the server (hang guard)")
            .expect("reading a reply");
        // The prefix checksums and reserved bytes are always zero.
        assert_eq!(&header[..32], &[0u8; 32]);
        assert_eq!(&header[62..128], &[0u8; 66]);
        match header[60] {
            REPLY => {
                assert_eq!(&header[220..256], &[0u8; 36], "reply reserved bytes");
                Frame::Reply {
                    status: u32_at(&header, 216),
                    operation: header[208],
                    op: u64_at(&header, 176),
                    client: u128_at(&header, 160),
                    request: u64_at(&header, 200),
                    body,
                }
            }
            EVICTION => {
                assert!(body.is_empty(), "eviction with a body");
                assert_eq!(&header[152..255], &[0u8; 103], "eviction reserved bytes");
                Frame::Eviction {
                    reason: header[255],
                    client: u128_at(&header, 128),
                    version_max: u32_at(&header, 144),
                    version_min: u32_at(&header, 148),
                }
            }
            command => panic!("server frame with command {command}"),
        }
    }

    async fn call(&mut self, fields: Fields, body: &[u8]) -> Frame {
        self.write(&vsr_frame(fields, body)).await;
        self.read_frame().await
    }

    /// A NonReplicated request with the current counter and session.
    async fn nr(&mut self, code: u32, body: &[u8]) -> Frame {
        let fields = Fields {
            client: self.client,
            request: self.request,
            operation: NON_REPLICATED,
            session: self.session,
            code,
            ..Fields::default()
        };
        self.call(fields, body).await
    }

    /// A replicated operation: the counter advances first.
    async fn replicated(&mut self, operation: u8, body: &[u8]) -> Frame {
        self.request += 1;
        let fields = Fields {
            client: self.client,
            request: self.request,
            operation,
            session: self.session.max(1),
            ..Fields::default()
        };
        self.call(fields, body).await
    }

    async fn register(&mut self, body: &[u8]) -> Frame {
        let fields = Fields { client: self.client, operation: REGISTER, ..Fields::default() };
        let frame = self.call(fields, body).await;
        if let Frame::Reply { status: 0, body, .. } = &frame {
            let payload = result(body).expect("register accepted");
            self.session = u64_at(payload, 4);
            self.request = 1;
        }
        frame
    }

    /// Logs in with a password; returns the user id and checks the reply.
    async fn login(&mut self, username: &str, password: &str) -> u32 {
        let frame = self.register(&password_body(V0_11_0, username.as_bytes(), password.as_bytes())).await;
        login_user_id(&frame)
    }

    /// Logs in with a token; returns the user id.
    async fn login_token(&mut self, token: &str) -> u32 {
        let frame = self.register(&token_body(token.as_bytes())).await;
        login_user_id(&frame)
    }

    async fn create(&mut self, name: &str, expiry_us: u64) -> Frame {
        self.replicated(CREATE_PAT_OP, &create_body(name.as_bytes(), expiry_us)).await
    }

    async fn create_token(&mut self, name: &str, expiry_us: u64) -> String {
        let frame = self.create(name, expiry_us).await;
        let Frame::Reply { status: 0, operation: CREATE_PAT_OP, body, .. } = frame else {
            panic!("create {name}: {frame:?}");
        };
        let payload = result(&body).expect("create accepted");
        let token = String::from_utf8(payload[1..].to_vec()).unwrap();
        assert_eq!(payload[0] as usize, token.len());
        assert_token_shape(&token);
        token
    }

    async fn delete(&mut self, name: &str) -> Frame {
        self.replicated(DELETE_PAT_OP, &short(name.as_bytes())).await
    }

    async fn logout(&mut self) -> Frame {
        let frame = self.replicated(LOGOUT, &[]).await;
        self.session = 0;
        frame
    }

    /// `(name, expiry_at_us)` of the caller's tokens.
    async fn list(&mut self) -> Vec<(String, u64)> {
        let Frame::Reply { status: 0, operation: NON_REPLICATED, body, .. } = self.nr(GET_PATS, &[]).await
        else {
            panic!("list failed");
        };
        let mut entries = Vec::new();
        let mut at = 0;
        while at < body.len() {
            let len = body[at] as usize;
            let name = String::from_utf8(body[at + 1..at + 1 + len].to_vec()).unwrap();
            entries.push((name, u64_at(&body, at + 1 + len)));
            at += 1 + len + 8;
        }
        entries
    }

    /// Reads until the server closes; fails on a hang. Returns what came first.
    async fn read_until_closed(&mut self) -> Vec<u8> {
        let mut received = Vec::new();
        let read = async {
            let mut buffer = [0u8; 4096];
            loop {
                match self.stream.read(&mut buffer).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => received.extend_from_slice(&buffer[..n]),
                }
            }
        };
        tokio::time::timeout(HANG_GUARD, read).await.expect("the server did not close the connection");
        received
    }
}

/// The user id of a successful Register reply, after checking its shape.
fn login_user_id(frame: &Frame) -> u32 {
    let Frame::Reply { status: 0, operation: REGISTER, op, body, .. } = frame else {
        panic!("login refused: {frame:?}");
    };
    let payload = result(body).expect("register accepted");
    let session = u64_at(payload, 4);
    assert!(session >= 1, "session {session}");
    assert_eq!(*op, session, "the reply's op carries the new session");
    assert_eq!(u32_at(payload, 12), V0_11_0);
    let version_len = payload[16] as usize;
    assert!(version_len >= 1);
    assert_eq!(payload.len(), 17 + version_len);
    assert!(std::str::from_utf8(&payload[17..]).unwrap().starts_with("latchkey-"));
    u32_at(payload, 0)
}

fn deny(status: u32, operation: u8) -> impl Fn(&Frame) {
    move |frame: &Frame| match frame {
        Frame::Reply { status: got, operation: op, body, .. } => {
            assert_eq!((*got, *op), (status, operation), "{frame:?}");
            assert!(body.is_empty(), "deny with a body: {frame:?}");
        }
        other => panic!("expected deny {status}, got {other:?}"),
    }
}

fn assert_evicted(frame: &Frame, reason: u8) {
    match frame {
        Frame::Eviction { reason: got, .. } => assert_eq!(*got, reason, "{frame:?}"),
        other => panic!("expected eviction {reason}, got {other:?}"),
    }
}

fn assert_rejected(frame: &Frame, operation: u8, code: u32) {
    match frame {
        Frame::Reply { status: 0, operation: op, body, .. } => {
            assert_eq!(*op, operation);
            assert_eq!(body.len(), 12, "rejection body: {body:?}");
            assert_eq!(result(body), Err(code));
        }
        other => panic!("expected result rejection {code}, got {other:?}"),
    }
}

fn assert_empty_ok(frame: &Frame, operation: u8) {
    deny(0, operation)(frame);
}

fn server() -> (DataHome, TestServer) {
    let home = DataHome::new();
    let server = TestServer::start(&home, &ServerSpec::default_root());
    (home, server)
}

// ---------------------------------------------------------------------------
// Byte-exact frames from the spec
// ---------------------------------------------------------------------------

#[tokio::test]
async fn the_spec_ping_is_answered_byte_for_byte() {
    let (_home, server) = server();
    let mut stream = TcpStream::connect(server.address).await.unwrap();
    let client: u128 = 0x1122_3344_5566_7788_99aa_bbcc_ddee_ff01;
    // §2.11: zero everywhere except size, command, client, request, operation, code.
    let mut ping = [0u8; HEADER];
    put(&mut ping, 48, &[0x00, 0x01, 0x00, 0x00]);
    ping[60] = 0x05;
    put(&mut ping, 128, &client.to_le_bytes());
    put(&mut ping, 168, &[1, 0, 0, 0, 0, 0, 0, 0]);
    ping[176] = 0x02;
    put(&mut ping, 196, &[1, 0, 0, 0]);
    stream.write_all(&ping).await.unwrap();
    let mut reply = [0u8; HEADER];
    tokio::time::timeout(HANG_GUARD, stream.read_exact(&mut reply)).await.unwrap().unwrap();
    // Zero except size, command and operation, plus the optional echoes of
    // the client (160) and request (200) the spec allows.
    let mut expected = [0u8; HEADER];
    put(&mut expected, 48, &[0x00, 0x01, 0x00, 0x00]);
    expected[60] = 0x08;
    put(&mut expected, 160, &client.to_le_bytes());
    put(&mut expected, 200, &[1, 0, 0, 0, 0, 0, 0, 0]);
    expected[208] = 0x02;
    assert_eq!(reply, expected);
}

#[tokio::test]
async fn the_captured_sdk_login_logs_root_in() {
    let (_home, server) = server();
    let mut vsr = Vsr::connect(server.address).await;
    // §2.9: the 0.11.0 SDK's iggy/iggy body and its checksum, as captured.
    let mut body = vec![0x00, 0x2c, 0x00, 0x00, 8];
    body.extend_from_slice(b"rust-sdk");
    body.push(6);
    body.extend_from_slice(b"0.11.0");
    body.extend_from_slice(&[4, b'i', b'g', b'g', b'y', 4, b'i', b'g', b'g', b'y', 0, 0, 0, 0]);
    assert_eq!(body, password_body(V0_11_0, b"iggy", b"iggy"));
    let fields = Fields {
        client: vsr.client,
        operation: REGISTER,
        checksum: Some(0x8fde_203c_2a3f_8095),
        ..Fields::default()
    };
    let frame = vsr_frame(fields, &body);
    assert_eq!(frame.len(), 290);
    let reply = vsr.call(fields, &body).await;
    assert_eq!(login_user_id(&reply), 0);
    let Frame::Reply { client, request, .. } = reply else { unreachable!() };
    assert_eq!((client, request), (vsr.client, 0), "echoes");
}

#[tokio::test]
async fn the_logout_frame_is_stamped_and_answered_with_an_empty_ok() {
    let (_home, server) = server();
    let mut vsr = Vsr::connect(server.address).await;
    assert_eq!(vsr.login("iggy", "iggy").await, 0);
    // §2.10: empty body, checksum 0x2d06800538d394c2.
    let fields = Fields {
        client: vsr.client,
        request: 2,
        operation: LOGOUT,
        session: vsr.session,
        checksum: Some(0x2d06_8005_38d3_94c2),
        ..Fields::default()
    };
    let reply = vsr.call(fields, &[]).await;
    assert_empty_ok(&reply, LOGOUT);
    deny(40, NON_REPLICATED)(&vsr.nr(GET_ME, &[]).await);
}

// ---------------------------------------------------------------------------
// The flow a 0.11 client runs
// ---------------------------------------------------------------------------

#[tokio::test]
async fn reads_after_a_password_login() {
    let (_home, server) = server();
    let mut vsr = Vsr::connect(server.address).await;
    // Before login only Ping is served.
    assert_empty_ok(&vsr.nr(PING, &[]).await, NON_REPLICATED);
    for code in [GET_ME, GET_PATS, GET_CLUSTER_METADATA, GET_STATS, GET_STREAMS] {
        deny(40, NON_REPLICATED)(&vsr.nr(code, &[]).await);
    }
    assert_eq!(vsr.login("iggy", "iggy").await, 0);
    let session = vsr.session;

    // GetMe: the legacy ClientDetails body, raw (no result section).
    let Frame::Reply { status: 0, operation: NON_REPLICATED, op, body, .. } = vsr.nr(GET_ME, &[]).await
    else {
        panic!("get_me");
    };
    assert_eq!(op, session, "the session is echoed in op");
    assert_eq!(u32_at(&body, 4), 0, "user id");
    assert_eq!(body[8], 1, "transport TCP");
    let address_len = u32_at(&body, 9) as usize;
    let address: SocketAddr = std::str::from_utf8(&body[13..13 + address_len]).unwrap().parse().unwrap();
    assert!(address.ip().is_loopback());
    assert_eq!(u32_at(&body, 13 + address_len), 0, "no consumer groups");
    assert_eq!(body.len(), 17 + address_len);

    // GetClusterMetadata: one healthy leader at this server's address.
    let Frame::Reply { status: 0, body, .. } = vsr.nr(GET_CLUSTER_METADATA, &[]).await else {
        panic!("cluster metadata");
    };
    let name_len = u32_at(&body, 0) as usize;
    assert_eq!(u32_at(&body, 4 + name_len), 1, "one node");
    let node = &body[8 + name_len..];
    let node_name_len = u32_at(node, 0) as usize;
    let ip_len = u32_at(node, 4 + node_name_len) as usize;
    let ip = std::str::from_utf8(&node[8 + node_name_len..8 + node_name_len + ip_len]).unwrap();
    assert_eq!(ip, server.address.ip().to_string());
    let ports = &node[8 + node_name_len + ip_len..];
    assert_eq!(u16::from_le_bytes([ports[0], ports[1]]), server.address.port());
    assert_eq!(&ports[8..], &[0, 0], "role leader, status healthy");

    // No tokens: an empty body, size 256.
    let Frame::Reply { status: 0, body, .. } = vsr.nr(GET_PATS, &[]).await else { panic!("list") };
    assert!(body.is_empty());
    // Served reads refuse a body, like the legacy decoder; Ping too.
    deny(3, NON_REPLICATED)(&vsr.nr(GET_PATS, &[1]).await);
    deny(3, NON_REPLICATED)(&vsr.nr(PING, &[0]).await);
    // Known but unserved Iggy reads: 5; unknown codes: 3.
    deny(5, NON_REPLICATED)(&vsr.nr(GET_STREAMS, &[]).await);
    deny(3, NON_REPLICATED)(&vsr.nr(UNKNOWN_CODE, &[]).await);
    // Codes that travel as operations are not accepted as NonReplicated.
    for code in [LOGOUT_USER, CREATE_PAT, DELETE_PAT, 40, 45] {
        deny(3, NON_REPLICATED)(&vsr.nr(code, &create_body(b"abc", 0)).await);
    }
    // Still logged in after all of that.
    assert!(matches!(vsr.nr(GET_ME, &[]).await, Frame::Reply { status: 0, .. }));
}

#[tokio::test]
async fn token_life_cycle_and_the_three_error_channels() {
    let (_home, server) = server();
    let mut vsr = Vsr::connect(server.address).await;
    assert_eq!(vsr.login("iggy", "iggy").await, 0);

    let before_us = now_us();
    let never = vsr.create_token("never-expires", u64::MAX).await;
    let hour = vsr.create_token("one-hour", ONE_HOUR_US).await;
    let after_us = now_us();
    assert_ne!(never, hour);

    // Duplicate: a result rejection (status 0, count 1, code 51), 268 bytes.
    assert_rejected(&vsr.create("one-hour", u64::MAX).await, CREATE_PAT_OP, 51);
    // Latchkey's name rule (3–30 bytes) is a pre-commit refusal: a deny.
    deny(50, CREATE_PAT_OP)(&vsr.create("ab", u64::MAX).await);
    deny(50, CREATE_PAT_OP)(&vsr.create(&"x".repeat(31), u64::MAX).await);
    // Undecodable bodies: the legacy codec's codes, as a deny.
    deny(3, CREATE_PAT_OP)(&vsr.replicated(CREATE_PAT_OP, &[]).await);
    deny(3, CREATE_PAT_OP)(&vsr.replicated(CREATE_PAT_OP, &[3, b'a', b'b', b'c', 0]).await);
    deny(4, DELETE_PAT_OP)(&vsr.replicated(DELETE_PAT_OP, &[0]).await);

    let list = vsr.list().await;
    assert_eq!(list.len(), 2, "{list:?}");
    assert_eq!(list[0], ("never-expires".to_owned(), 0));
    assert_eq!(list[1].0, "one-hour");
    assert!((before_us + ONE_HOUR_US..=after_us + ONE_HOUR_US).contains(&list[1].1), "{list:?}");

    // Delete: `[0u32]`, size 260. Missing: result rejection 20.
    let Frame::Reply { status: 0, operation: DELETE_PAT_OP, body, .. } = vsr.delete("one-hour").await else {
        panic!("delete");
    };
    assert_eq!(body, [0, 0, 0, 0]);
    assert_rejected(&vsr.delete("one-hour").await, DELETE_PAT_OP, 20);
    assert_eq!(vsr.list().await.len(), 1);

    // Logout is an empty OK; afterwards reads are denied 40 and mutations evicted.
    assert_empty_ok(&vsr.logout().await, LOGOUT);
    deny(40, NON_REPLICATED)(&vsr.nr(GET_PATS, &[]).await);
    assert_evicted(&vsr.create("after-logout", u64::MAX).await, NO_SESSION);
    assert_evicted(&vsr.delete("never-expires").await, NO_SESSION);
    // Logout on a connection that is not logged in is still OK (Iggy HEAD).
    assert_empty_ok(&vsr.replicated(LOGOUT, &[]).await, LOGOUT);

    // Token login: the owner, and a session of its own.
    let first_session = {
        let mut other = Vsr::connect(server.address).await;
        assert_eq!(other.login_token(&never).await, 0);
        other.session
    };
    assert_eq!(vsr.login_token(&never).await, 0);
    assert_ne!(vsr.session, first_session, "each login gets its own session number");
    assert_eq!(vsr.list().await, [("never-expires".to_owned(), 0)]);
    // A deleted token, a bogus one, an empty one and a lookalike: eviction 10.
    assert_evicted(&vsr.register(&token_body(hour.as_bytes())).await, INVALID_TOKEN);
    assert_evicted(&vsr.register(&token_body(unissued_token().as_bytes())).await, INVALID_TOKEN);
    assert_evicted(&vsr.register(&token_body(b"")).await, INVALID_TOKEN);
    assert_evicted(&vsr.register(&token_body(b"definitely-not-a-token")).await, INVALID_TOKEN);
    // An eviction ends the login; the socket stays open for the next login.
    deny(40, NON_REPLICATED)(&vsr.nr(GET_ME, &[]).await);
    assert_eq!(vsr.login_token(&never).await, 0);
    assert!(matches!(vsr.nr(GET_ME, &[]).await, Frame::Reply { status: 0, .. }));
}

#[tokio::test]
async fn an_expired_token_is_eviction_10_while_it_is_still_listed() {
    let (_home, server) = server();
    let mut vsr = Vsr::connect(server.address).await;
    vsr.login("iggy", "iggy").await;
    let token = vsr.create_token("short-lived", 1).await;
    let listed = vsr.list().await;
    assert_eq!(listed[0].0, "short-lived");
    wait_until_past(listed[0].1).await;
    let mut other = Vsr::connect(server.address).await;
    assert_evicted(&other.register(&token_body(token.as_bytes())).await, INVALID_TOKEN);
    assert_eq!(vsr.list().await.len(), 1, "expired tokens stay listed until the cleaner runs");
}

#[tokio::test]
async fn password_failures_are_eviction_9_and_the_socket_stays_open() {
    let (_home, server) = server();
    let mut vsr = Vsr::connect(server.address).await;
    for (username, password) in
        [(&b"iggy"[..], &b"wrong-password"[..]), (b"nobody", b"iggy"), (b"ig", b"iggy"), (b"iggy", b"ig")]
    {
        let frame = vsr.register(&password_body(V0_11_0, username, password)).await;
        assert_evicted(&frame, INVALID_CREDENTIALS);
        let Frame::Eviction { client, version_max, version_min, .. } = frame else { unreachable!() };
        assert_eq!((client, version_max, version_min), (vsr.client, 0, 0));
    }
    // An empty password (the SDK never sends one) also makes the body a
    // valid PAT body, the username as the token. Iggy HEAD would try it as a
    // token after the password failed (§2.9) and answer 10; Latchkey answers
    // a body that parses as a password login as one (net/vsr.rs): 9.
    assert_evicted(&vsr.register(&password_body(V0_11_0, b"iggy", b"")).await, INVALID_CREDENTIALS);
    assert_eq!(vsr.login("iggy", "iggy").await, 0);
    // A failed re-login without a Logout first ends the previous login too.
    assert_evicted(&vsr.register(&password_body(V0_11_0, b"iggy", b"nope")).await, INVALID_CREDENTIALS);
    deny(40, NON_REPLICATED)(&vsr.nr(GET_ME, &[]).await);
}

#[tokio::test]
async fn a_throttled_login_is_a_deny_with_the_throttle_code() {
    let home = DataHome::new();
    let spec = ServerSpec::default_root()
        .env("LATCHKEY_LOGIN_THROTTLE_ENABLED", "true")
        .env("LATCHKEY_LOGIN_THROTTLE_PER_ADDRESS_BURST", "2")
        .env("LATCHKEY_LOGIN_THROTTLE_PER_ADDRESS_PER_MINUTE", "1");
    let server = TestServer::start(&home, &spec);
    let mut vsr = Vsr::connect(server.address).await;
    for _ in 0..2 {
        assert_evicted(&vsr.register(&password_body(V0_11_0, b"iggy", b"wrong")).await, INVALID_CREDENTIALS);
    }
    // The bucket is empty: refused before any check, passwords and tokens alike.
    let too_many = 20001;
    deny(too_many, REGISTER)(&vsr.register(&password_body(V0_11_0, b"iggy", b"iggy")).await);
    deny(too_many, REGISTER)(&vsr.register(&token_body(unissued_token().as_bytes())).await);
    deny(40, NON_REPLICATED)(&vsr.nr(GET_ME, &[]).await);
}

#[tokio::test]
async fn inactive_users_are_evicted_9_for_passwords_and_11_for_tokens() {
    let home = DataHome::new();
    let alice = |active| users_config(&[TestUser { id: 1, username: "alice", password: "alice-pw", active }]);
    let server = TestServer::start(&home, &ServerSpec::default_root().config(&alice(true)));
    let mut vsr = Vsr::connect(server.address).await;
    assert_eq!(vsr.login("alice", "alice-pw").await, 1);
    let token = vsr.create_token("alice-token", u64::MAX).await;
    drop(vsr);
    assert_eq!(server.stop().code(), Some(0));

    let server = TestServer::start(&home, &ServerSpec::default_root().config(&alice(false)));
    let mut vsr = Vsr::connect(server.address).await;
    assert_evicted(&vsr.register(&password_body(V0_11_0, b"alice", b"alice-pw")).await, INVALID_CREDENTIALS);
    assert_evicted(&vsr.register(&token_body(token.as_bytes())).await, USER_INACTIVE);
}

#[tokio::test]
async fn the_protocol_version_gate_sends_the_window() {
    let (_home, server) = server();
    let mut vsr = Vsr::connect(server.address).await;
    for version in [V0_10_0, V0_11_0 - 1, 12288, 0] {
        let frame = vsr.register(&password_body(version, b"iggy", b"iggy")).await;
        assert_eq!(
            frame,
            Frame::Eviction {
                reason: INCOMPATIBLE_PROTOCOL,
                client: vsr.client,
                version_max: V0_11_0,
                version_min: V0_11_0
            },
            "version {version}"
        );
    }
    for version in [V0_11_0, V0_11_0 + 1, 12287] {
        let frame = vsr.register(&password_body(version, b"iggy", b"iggy")).await;
        assert_eq!(login_user_id(&frame), 0, "version {version}");
    }
}

#[tokio::test]
async fn malformed_logins_are_eviction_15() {
    let (_home, server) = server();
    let mut vsr = Vsr::connect(server.address).await;
    let mut garbage = version_info(V0_11_0);
    garbage.extend_from_slice(&[0xff; 3]);
    for body in [Vec::new(), vec![0, 0x2c, 0, 0], version_info(V0_11_0), garbage] {
        assert_evicted(&vsr.register(&body).await, MALFORMED_LOGIN);
    }
    // Trailing bytes after a parsed shape are ignored, as in Iggy.
    let mut trailing = password_body(V0_11_0, b"iggy", b"iggy");
    trailing.extend_from_slice(b"extra");
    assert_eq!(login_user_id(&vsr.register(&trailing).await), 0);
    // The legacy login codes inside this framing: eviction 15, login ended.
    assert_evicted(&vsr.nr(LOGIN_USER, &login_body(b"iggy", b"iggy")).await, MALFORMED_LOGIN);
    deny(40, NON_REPLICATED)(&vsr.nr(GET_ME, &[]).await);
    assert_evicted(&vsr.nr(LOGIN_WITH_PAT, &short(b"token")).await, MALFORMED_LOGIN);
}

#[tokio::test]
async fn checksums_are_verified_when_nonzero() {
    let (_home, server) = server();
    let mut vsr = Vsr::connect(server.address).await;
    let body = password_body(V0_11_0, b"iggy", b"iggy");
    let mut fields = Fields { client: vsr.client, operation: REGISTER, ..Fields::default() };
    // A wrong checksum: deny 4, not an eviction; nothing is logged in.
    fields.checksum = Some(request_checksum(&body) ^ 1);
    deny(4, REGISTER)(&vsr.call(fields, &body).await);
    deny(40, NON_REPLICATED)(&vsr.nr(GET_ME, &[]).await);
    // Only the low 64 bits carry XXH3; anything in the high half is a mismatch.
    fields.checksum = Some(request_checksum(&body) | 1 << 64);
    deny(4, REGISTER)(&vsr.call(fields, &body).await);
    // Zero means "not stamped" and is not checked.
    fields.checksum = Some(0);
    let reply = vsr.call(fields, &body).await;
    assert_eq!(login_user_id(&reply), 0);
    let Frame::Reply { op: session, .. } = reply else { unreachable!() };
    vsr.session = session;
    // The same on a PAT create.
    let create = create_body(b"checked", u64::MAX);
    let bad = Fields {
        client: vsr.client,
        request: 2,
        operation: CREATE_PAT_OP,
        session,
        checksum: Some(1),
        ..Fields::default()
    };
    deny(4, CREATE_PAT_OP)(&vsr.call(bad, &create).await);
    assert!(vsr.list().await.is_empty());
}

#[tokio::test]
async fn the_token_limit_is_a_deny_checked_before_duplicates() {
    let home = DataHome::new();
    let spec = ServerSpec::default_root().env("LATCHKEY_PERSONAL_ACCESS_TOKEN_MAX_TOKENS_PER_USER", "2");
    let server = TestServer::start(&home, &spec);
    let mut vsr = Vsr::connect(server.address).await;
    vsr.login("iggy", "iggy").await;
    vsr.create_token("first", u64::MAX).await;
    vsr.create_token("second", 0).await;
    deny(52, CREATE_PAT_OP)(&vsr.create("third", u64::MAX).await);
    deny(52, CREATE_PAT_OP)(&vsr.create("first", u64::MAX).await);
    // Deleting is never limit-gated and frees a slot.
    assert!(matches!(vsr.delete("first").await, Frame::Reply { status: 0, .. }));
    vsr.create_token("third", u64::MAX).await;
}

#[tokio::test]
async fn other_operations_are_evicted_denied_or_refused() {
    let (_home, server) = server();
    let mut vsr = Vsr::connect(server.address).await;
    // A replicated Iggy operation Latchkey does not serve: eviction 1 before
    // login, FeatureUnavailable (5) after.
    assert_evicted(&vsr.replicated(CREATE_STREAM, &[1, 2, 3]).await, NO_SESSION);
    vsr.login("iggy", "iggy").await;
    deny(5, CREATE_STREAM)(&vsr.replicated(CREATE_STREAM, &[1, 2, 3]).await);
    // Not an operation at all: 3.
    for operation in [4, 64, 127, 150, 200, 255] {
        deny(3, operation)(&vsr.replicated(operation, &[]).await);
    }
    assert!(matches!(vsr.nr(GET_ME, &[]).await, Frame::Reply { status: 0, .. }));
}

#[tokio::test]
async fn a_pipelined_burst_is_answered_once_per_frame_in_order() {
    let (_home, server) = server();
    let mut vsr = Vsr::connect(server.address).await;
    let client = vsr.client;
    let nr = |request, code| Fields { client, request, operation: NON_REPLICATED, code, ..Fields::default() };
    let op = |request, operation| Fields { client, request, operation, session: 1, ..Fields::default() };
    let mut burst = Vec::new();
    burst.extend(vsr_frame(nr(1, PING), &[]));
    burst.extend(vsr_frame(nr(1, GET_PATS), &[]));
    burst.extend(vsr_frame(
        Fields { client, operation: REGISTER, ..Fields::default() },
        &password_body(V0_11_0, b"iggy", b"iggy"),
    ));
    burst.extend(vsr_frame(op(2, CREATE_PAT_OP), &create_body(b"piped", u64::MAX)));
    burst.extend(vsr_frame(op(3, CREATE_PAT_OP), &create_body(b"piped", u64::MAX)));
    burst.extend(vsr_frame(nr(3, GET_PATS), &[]));
    burst.extend(vsr_frame(op(4, DELETE_PAT_OP), &short(b"piped")));
    burst.extend(vsr_frame(op(5, DELETE_PAT_OP), &short(b"piped")));
    burst.extend(vsr_frame(op(6, LOGOUT), &[]));
    burst.extend(vsr_frame(nr(6, GET_ME), &[]));
    vsr.write(&burst).await;

    assert_empty_ok(&vsr.read_frame().await, NON_REPLICATED);
    deny(40, NON_REPLICATED)(&vsr.read_frame().await);
    assert_eq!(login_user_id(&vsr.read_frame().await), 0);
    let created = vsr.read_frame().await;
    assert!(
        matches!(&created, Frame::Reply { status: 0, operation: CREATE_PAT_OP, request: 2, .. }),
        "{created:?}"
    );
    assert_rejected(&vsr.read_frame().await, CREATE_PAT_OP, 51);
    let Frame::Reply { status: 0, request: 3, body, .. } = vsr.read_frame().await else { panic!("list") };
    assert_eq!(body[..6], [5, b'p', b'i', b'p', b'e', b'd']);
    let Frame::Reply { status: 0, operation: DELETE_PAT_OP, request: 4, .. } = vsr.read_frame().await else {
        panic!("delete");
    };
    assert_rejected(&vsr.read_frame().await, DELETE_PAT_OP, 20);
    assert_empty_ok(&vsr.read_frame().await, LOGOUT);
    deny(40, NON_REPLICATED)(&vsr.read_frame().await);
}

/// The requests of the pipelining test below: a create before login, the
/// login, then creates and deletes with every outcome (accepted, result
/// rejection, deny before the commit, bad checksum, undecodable body) and a
/// list in the middle.
fn pipelined_token_writes(client: u128) -> Vec<(Fields, Vec<u8>)> {
    let op = |request, operation| Fields { client, request, operation, session: 1, ..Fields::default() };
    let list =
        |request| Fields { client, request, operation: NON_REPLICATED, code: GET_PATS, ..Fields::default() };
    let bad_checksum = Fields { checksum: Some(1), ..op(9, CREATE_PAT_OP) };
    vec![
        (op(1, CREATE_PAT_OP), create_body(b"early", u64::MAX)),
        (
            Fields { client, operation: REGISTER, ..Fields::default() },
            password_body(V0_11_0, b"iggy", b"iggy"),
        ),
        (op(2, CREATE_PAT_OP), create_body(b"alpha", u64::MAX)),
        (op(3, CREATE_PAT_OP), create_body(b"alpha", u64::MAX)),
        (op(4, CREATE_PAT_OP), create_body(b"ab", u64::MAX)),
        (op(5, CREATE_PAT_OP), create_body(b"beta", u64::MAX)),
        (op(6, DELETE_PAT_OP), short(b"alpha")),
        (op(7, DELETE_PAT_OP), short(b"alpha")),
        (list(7), Vec::new()),
        (op(8, CREATE_PAT_OP), create_body(b"gamma", u64::MAX)),
        (bad_checksum, create_body(b"delta", u64::MAX)),
        (op(10, DELETE_PAT_OP), vec![0]),
        (op(11, DELETE_PAT_OP), short(b"gamma")),
    ]
}

/// A reply with what differs from run to run taken out: the client id
/// (random per connection) and the secret of a new token (its length stays).
fn comparable(frame: Frame) -> Frame {
    match frame {
        Frame::Reply { status, operation, op, request, body, .. } => {
            let secret = status == 0 && operation == CREATE_PAT_OP && body[..4] == [0; 4];
            let body = if secret { vec![0; body.len()] } else { body };
            Frame::Reply { status, operation, op, client: 0, request, body }
        }
        Frame::Eviction { reason, version_max, version_min, .. } => {
            Frame::Eviction { reason, client: 0, version_max, version_min }
        }
    }
}

/// Token creates and deletes in one burst are queued with the writer at
/// once, as on the legacy framing, yet every reply is what the same frames
/// sent one by one get, in order: the rejections, denies and evictions, the
/// list in the middle (it sees everything before it, nothing after).
#[tokio::test]
async fn pipelined_creates_and_deletes_answer_as_if_sent_one_by_one() {
    let answers = |pipelined: bool| async move {
        let (_home, server) = server();
        let mut vsr = Vsr::connect(server.address).await;
        let frames = pipelined_token_writes(vsr.client);
        let mut replies = Vec::new();
        if pipelined {
            let burst: Vec<u8> = frames.iter().flat_map(|(fields, body)| vsr_frame(*fields, body)).collect();
            vsr.write(&burst).await;
            for _ in &frames {
                replies.push(comparable(vsr.read_frame().await));
            }
        } else {
            for (fields, body) in &frames {
                replies.push(comparable(vsr.call(*fields, body).await));
            }
        }
        let mut check = Vsr::connect(server.address).await;
        check.login("iggy", "iggy").await;
        (replies, check.list().await)
    };
    let (one_by_one, left_one_by_one) = answers(false).await;
    let (pipelined, left_pipelined) = answers(true).await;
    assert_eq!(pipelined, one_by_one);
    assert_eq!(left_pipelined, left_one_by_one);
    assert_eq!(left_pipelined, [("beta".to_owned(), 0)]);
    // What the answers are, so that "equal" cannot mean "equally wrong".
    assert_evicted(&pipelined[0], NO_SESSION);
    assert_eq!(login_user_id(&pipelined[1]), 0);
    assert!(matches!(&pipelined[2], Frame::Reply { status: 0, operation: CREATE_PAT_OP, request: 2, .. }));
    assert_rejected(&pipelined[3], CREATE_PAT_OP, 51);
    deny(50, CREATE_PAT_OP)(&pipelined[4]);
    assert!(matches!(&pipelined[5], Frame::Reply { status: 0, operation: CREATE_PAT_OP, request: 5, .. }));
    assert!(matches!(&pipelined[6], Frame::Reply { status: 0, operation: DELETE_PAT_OP, request: 6, .. }));
    assert_rejected(&pipelined[7], DELETE_PAT_OP, 20);
    let Frame::Reply { status: 0, request: 7, body, .. } = &pipelined[8] else { panic!("list") };
    assert!(body.starts_with(&[4, b'b', b'e', b't', b'a']) && body.len() == 5 + 8, "{body:?}");
    assert!(matches!(&pipelined[9], Frame::Reply { status: 0, operation: CREATE_PAT_OP, request: 8, .. }));
    deny(4, CREATE_PAT_OP)(&pipelined[10]);
    deny(4, DELETE_PAT_OP)(&pipelined[11]);
    assert!(matches!(&pipelined[12], Frame::Reply { status: 0, operation: DELETE_PAT_OP, request: 11, .. }));
}

// ---------------------------------------------------------------------------
// Framing detection (spec §0.2) and forced framings
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_legacy_ping_is_answered_without_waiting_for_256_bytes() {
    let (_home, server) = server();
    let mut raw = Raw::connect(server.address).await;
    // Exactly the 8 bytes of §1.10; the reply must come without more input.
    raw.write(&[0x04, 0, 0, 0, 0x01, 0, 0, 0]).await;
    assert_eq!(raw.read_reply().await, (0, Vec::new()));
    // Then the connection is legacy for good.
    assert_eq!(raw.status(LOGIN_USER, &login_body(b"iggy", b"iggy")).await, 0);
    assert_eq!(raw.status(GET_PATS, &[]).await, 0);
}

#[tokio::test]
async fn first_lengths_1_to_3_are_malformed_legacy_frames() {
    let (_home, server) = server();
    for length in 1u32..4 {
        let mut raw = Raw::connect(server.address).await;
        let mut bytes = length.to_le_bytes().to_vec();
        bytes.extend_from_slice(&PING.to_le_bytes());
        bytes.extend_from_slice(&frame(PING, &[]));
        raw.write(&bytes).await;
        assert_eq!(raw.read_reply().await, (3, Vec::new()), "length {length}");
        assert_eq!(raw.read_reply().await, (0, Vec::new()), "ping after length {length}");
    }
}

#[tokio::test]
async fn a_zero_first_word_is_the_0_11_framing_however_it_arrives() {
    let (_home, server) = server();
    let mut vsr = Vsr::connect(server.address).await;
    let ping = vsr_frame(
        Fields { client: vsr.client, request: 1, operation: NON_REPLICATED, code: PING, ..Fields::default() },
        &[],
    );
    // One byte at a time, the first four zeros included.
    for byte in &ping {
        vsr.write(std::slice::from_ref(byte)).await;
        tokio::task::yield_now().await;
    }
    assert_empty_ok(&vsr.read_frame().await, NON_REPLICATED);
    // A first write of fewer than 4 bytes is not decided on until more come.
    let mut slow = Vsr::connect(server.address).await;
    slow.write(&[0, 0]).await;
    // The server has read those two bytes alone before the rest is sent.
    wait_until_read_by_server(&slow.stream).await;
    let ping = vsr_frame(
        Fields {
            client: slow.client,
            request: 1,
            operation: NON_REPLICATED,
            code: PING,
            ..Fields::default()
        },
        &[],
    );
    slow.write(&ping[2..]).await;
    assert_empty_ok(&slow.read_frame().await, NON_REPLICATED);
    // A connection that sends nothing and leaves is a quiet close.
    drop(TcpStream::connect(server.address).await.unwrap());
    let mut check = Vsr::connect(server.address).await;
    assert_empty_ok(&check.nr(PING, &[]).await, NON_REPLICATED);
}

#[tokio::test]
async fn bad_sizes_and_headers_close_the_connection_after_earlier_replies() {
    let (_home, server) = server();
    // The default limit: max_frame_size 65536 → size at most 65536 + 252.
    let size_max = 65_536 + 252;
    let ping = |client| {
        vsr_frame(
            Fields { client, request: 1, operation: NON_REPLICATED, code: PING, ..Fields::default() },
            &[],
        )
    };
    for size in [0u32, 1, 255, size_max + 1, u32::MAX] {
        let mut vsr = Vsr::connect(server.address).await;
        let mut bytes = ping(vsr.client);
        // Only the prefix up to the size field: the server must not wait for more.
        let mut bad = vsr_frame(Fields { client: vsr.client, size: Some(size), ..Fields::default() }, &[]);
        bad.truncate(52);
        bytes.extend_from_slice(&bad);
        vsr.write(&bytes).await;
        let received = vsr.read_until_closed().await;
        assert_eq!(received.len(), HEADER, "size {size}: only the ping's reply, then EOF");
        assert_eq!(received[60], REPLY);
    }
    // Exactly the limit is read whole and answered.
    let mut vsr = Vsr::connect(server.address).await;
    let body = vec![0u8; (size_max as usize) - HEADER];
    deny(3, NON_REPLICATED)(&vsr.nr(UNKNOWN_CODE, &body).await);

    // Headers that fail Iggy's validation (§2.4).
    let client = 7;
    let invalid = [
        Fields {
            client,
            request: 1,
            operation: NON_REPLICATED,
            code: PING,
            command: Some(REPLY),
            ..Fields::default()
        },
        Fields { client: 0, request: 1, operation: NON_REPLICATED, code: PING, ..Fields::default() },
        Fields { client, request: 1, operation: 0, ..Fields::default() },
        Fields { client, request: 0, operation: REGISTER, session: 3, ..Fields::default() },
        Fields { client, request: 2, operation: CREATE_PAT_OP, session: 0, ..Fields::default() },
        Fields { client, request: 0, operation: LOGOUT, session: 1, ..Fields::default() },
    ];
    for (index, fields) in invalid.into_iter().enumerate() {
        let mut vsr = Vsr::connect(server.address).await;
        let mut bytes = ping(vsr.client);
        bytes.extend_from_slice(&vsr_frame(fields, &[]));
        vsr.write(&bytes).await;
        let received = vsr.read_until_closed().await;
        assert_eq!(received.len(), HEADER, "case {index}: only the ping's reply, then EOF");
    }
    // The server is unharmed.
    let mut vsr = Vsr::connect(server.address).await;
    assert_eq!(vsr.login("iggy", "iggy").await, 0);
}

#[tokio::test]
async fn the_0_11_size_limit_follows_max_frame_size() {
    let home = DataHome::new();
    let server =
        TestServer::start(&home, &ServerSpec::default_root().env("LATCHKEY_TCP_MAX_FRAME_SIZE", "128"));
    // 128 − 4 body bytes, as for a legacy frame: size 380.
    let mut vsr = Vsr::connect(server.address).await;
    deny(3, NON_REPLICATED)(&vsr.nr(UNKNOWN_CODE, &[0u8; 124]).await);
    let fields =
        Fields { client: vsr.client, request: 1, operation: NON_REPLICATED, code: PING, ..Fields::default() };
    vsr.write(&vsr_frame(fields, &[0u8; 125])).await;
    assert!(vsr.read_until_closed().await.is_empty());
    // A login still fits.
    let mut vsr = Vsr::connect(server.address).await;
    assert_eq!(vsr.login("iggy", "iggy").await, 0);
}

#[tokio::test]
async fn forced_legacy_framing_never_classifies() {
    let home = DataHome::new();
    let server =
        TestServer::start(&home, &ServerSpec::default_root().config("[tcp]\nframing = \"legacy\"\n"));
    assert!(server.logs().contains("framing=legacy"), "{}", server.logs());
    // A zero first word is a malformed legacy length here: 3, and read on.
    let mut raw = Raw::connect(server.address).await;
    let mut bytes = vec![0, 0, 0, 0, 1, 0, 0, 0];
    bytes.extend_from_slice(&frame(PING, &[]));
    raw.write(&bytes).await;
    assert_eq!(raw.read_reply().await, (3, Vec::new()));
    assert_eq!(raw.read_reply().await, (0, Vec::new()));
    assert_eq!(raw.status(LOGIN_USER, &login_body(b"iggy", b"iggy")).await, 0);
}

#[tokio::test]
async fn forced_0_11_framing_accepts_a_stamped_header_checksum() {
    let home = DataHome::new();
    let server = TestServer::start(&home, &ServerSpec::default_root().env("LATCHKEY_TCP_FRAMING", "vsr"));
    assert!(server.logs().contains("framing=vsr"), "{}", server.logs());
    // A client that fills the header checksum (a later SDK might, spec §4):
    // under "auto" its first word would read as a legacy length.
    let mut vsr = Vsr::connect(server.address).await;
    let fields = Fields {
        client: vsr.client,
        request: 1,
        operation: NON_REPLICATED,
        code: PING,
        first_word: Some(0xdead_beef),
        ..Fields::default()
    };
    assert_empty_ok(&vsr.call(fields, &[]).await, NON_REPLICATED);
    assert_eq!(vsr.login("iggy", "iggy").await, 0);
}

// ---------------------------------------------------------------------------
// One registry for both framings
// ---------------------------------------------------------------------------

#[tokio::test]
async fn tokens_cross_between_the_framings() {
    let home = DataHome::new();
    let config = users_config(&[TestUser { id: 1, username: "alice", password: "alice-pw", active: true }]);
    let server = TestServer::start(&home, &ServerSpec::default_root().config(&config));

    // Created over 0.11, used over legacy.
    let mut vsr = Vsr::connect(server.address).await;
    assert_eq!(vsr.login("alice", "alice-pw").await, 1);
    let from_vsr = vsr.create_token("made-on-vsr", u64::MAX).await;
    let mut legacy = connect(server.address).await;
    assert_eq!(legacy.login_with_personal_access_token(&from_vsr).await.unwrap(), 1);
    let names: Vec<String> =
        legacy.get_personal_access_tokens().await.unwrap().into_iter().map(|t| t.name).collect();
    assert_eq!(names, ["made-on-vsr"]);

    // Created over legacy, used over 0.11.
    let from_legacy = legacy.create_personal_access_token("made-on-legacy", Expiry::Never).await.unwrap();
    let mut other = Vsr::connect(server.address).await;
    assert_eq!(other.login_token(&from_legacy).await, 1);
    let names: Vec<String> = other.list().await.into_iter().map(|(name, _)| name).collect();
    assert_eq!(names, ["made-on-legacy", "made-on-vsr"]);

    // Deleted over 0.11: legacy login gets 20; deleted over legacy: eviction 10.
    assert!(matches!(other.delete("made-on-vsr").await, Frame::Reply { status: 0, .. }));
    assert_eq!(status(connect(server.address).await.login_with_personal_access_token(&from_vsr).await), 20);
    legacy.delete_personal_access_token("made-on-legacy").await.unwrap();
    let mut last = Vsr::connect(server.address).await;
    assert_evicted(&last.register(&token_body(from_legacy.as_bytes())).await, INVALID_TOKEN);
    // Both framings at once on one server, and sessions survive each other.
    assert!(other.list().await.is_empty());
    assert!(legacy.get_personal_access_tokens().await.unwrap().is_empty());
}
