//! Harness for the Iggy 0.11.0 interop tests: runs the real `latchkey-server`
//! binary on a temporary data directory and an OS-chosen port, so the
//! published SDK (a dev-dependency, see `tests/`) talks to it over real TCP
//! in the 0.11 framing. Also: a recording proxy that parses 0.11 frames, and
//! a minimal legacy-framing client for the cross-framing checks.
//!
//! The server harness (binary lookup, `Server`, `user_config`) is shared with
//! the other interop suite: `interop/harness`, built on the workspace's
//! `latchkey-tests` process harness. The binary is taken from
//! `LATCHKEY_SERVER_BIN`, or else from `<repo>/target/debug/latchkey-server`;
//! it is never built from here (use `interop/run.sh`).

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use latchkey_interop_harness::Framing;
pub use latchkey_interop_harness::{
    ROOT_PASSWORD, ROOT_USER_ID, ROOT_USERNAME, Server, password_hash, server_binary, user_config,
};

/// One request/reply pair seen by a [`WireRecorder`] (0.11 framing: one
/// reply or eviction per request, in order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exchange {
    /// Index of the client connection, in accept order.
    pub connection: usize,
    /// Request `operation` byte (176).
    pub operation: u8,
    /// The command code of a NonReplicated request (bytes 196..200), else 0.
    pub code: u32,
    /// Reply `command` byte: 8 (Reply) or 13 (Eviction).
    pub command: u8,
    /// Reply status (216), or 0 for an eviction.
    pub status: u32,
    /// Eviction reason (255), or 0 for a reply.
    pub reason: u8,
    /// Reply body bytes (`size` − 256).
    pub body_len: usize,
    /// The first result code of a result-framed reply body, if any.
    pub result: Option<u32>,
}

/// Header command bytes and operations (spec §2.3, §2.8).
pub const COMMAND_REPLY: u8 = 8;
pub const COMMAND_EVICTION: u8 = 13;
pub const OPERATION_REGISTER: u8 = 1;
pub const OPERATION_NON_REPLICATED: u8 = 2;
pub const OPERATION_LOGOUT: u8 = 3;
pub const OPERATION_CREATE_PAT: u8 = 146;
pub const OPERATION_DELETE_PAT: u8 = 147;

const HEADER_BYTES: usize = 256;

/// A transparent TCP proxy in front of a server that parses the 0.11 frames
/// going through it and records every request with its answer, so tests can
/// see what the SDK sends on its own (heartbeat pings, GetClusterMetadata
/// after login, a Logout before every re-login) and how each was answered.
pub type WireRecorder = latchkey_interop_harness::WireRecorder<VsrFraming>;

/// The framing this suite's [`WireRecorder`] parses.
pub struct VsrFraming;

impl Framing for VsrFraming {
    type Exchange = Exchange;

    fn proxy_connection(
        connection: usize,
        client: TcpStream,
        server: TcpStream,
        exchanges: Arc<Mutex<Vec<Exchange>>>,
    ) {
        proxy_connection(connection, client, server, exchanges);
    }
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap())
}

/// Reads one whole frame (header + body); `None` at EOF or on a bad size.
fn read_frame(stream: &mut TcpStream) -> Option<(Vec<u8>, Vec<u8>)> {
    let mut header = vec![0u8; HEADER_BYTES];
    stream.read_exact(&mut header).ok()?;
    let size = u32_at(&header, 48) as usize;
    let mut body = vec![0u8; size.checked_sub(HEADER_BYTES)?];
    stream.read_exact(&mut body).ok()?;
    Some((header, body))
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
        while let Some((header, body)) = read_frame(&mut from_client) {
            let operation = header[176];
            let code = if operation == OPERATION_NON_REPLICATED { u32_at(&header, 196) } else { 0 };
            requests.lock().unwrap().push_back((operation, code));
            if to_server.write_all(&header).is_err() || to_server.write_all(&body).is_err() {
                break;
            }
        }
        let _ = to_server.shutdown(Shutdown::Write);
    });
    let (mut from_server, mut to_client) = (server, client);
    std::thread::spawn(move || {
        while let Some((header, body)) = read_frame(&mut from_server) {
            let (operation, code) = pending.lock().unwrap().pop_front().unwrap_or((0, u32::MAX));
            let command = header[60];
            let reply = command == COMMAND_REPLY;
            let result_framed = matches!(operation, OPERATION_REGISTER | 128..=149 | 161 | 162);
            let result = (reply && result_framed && body.len() >= 4)
                .then(|| if u32_at(&body, 0) == 0 || body.len() < 12 { 0 } else { u32_at(&body, 8) });
            exchanges.lock().unwrap().push(Exchange {
                connection,
                operation,
                code,
                command,
                status: if reply { u32_at(&header, 216) } else { 0 },
                reason: if reply { 0 } else { header[255] },
                body_len: body.len(),
                result,
            });
            if to_client.write_all(&header).is_err() || to_client.write_all(&body).is_err() {
                break;
            }
        }
        let _ = to_client.shutdown(Shutdown::Write);
    });
}

/// A client of the *legacy* framing (spec §1.1) over a plain socket, for the
/// cross-framing checks: `[length][code][payload]` out, `[status][length]`
/// back. Lockstep, like the SDKs.
pub struct LegacyClient {
    stream: TcpStream,
}

/// Legacy command codes (spec §1.2).
pub const LEGACY_LOGIN_USER: u32 = 38;
pub const LEGACY_GET_PATS: u32 = 41;
pub const LEGACY_CREATE_PAT: u32 = 42;
pub const LEGACY_DELETE_PAT: u32 = 43;
pub const LEGACY_LOGIN_WITH_PAT: u32 = 44;

impl LegacyClient {
    pub fn connect(address: SocketAddr) -> LegacyClient {
        let stream = TcpStream::connect(address).expect("legacy connect");
        stream.set_read_timeout(Some(Duration::from_secs(20))).expect("read timeout");
        LegacyClient { stream }
    }

    /// Sends one request; returns `(status, payload)`.
    pub fn call(&mut self, code: u32, payload: &[u8]) -> (u32, Vec<u8>) {
        let mut frame = (4 + payload.len() as u32).to_le_bytes().to_vec();
        frame.extend_from_slice(&code.to_le_bytes());
        frame.extend_from_slice(payload);
        self.stream.write_all(&frame).expect("legacy write");
        let mut header = [0u8; 8];
        self.stream.read_exact(&mut header).expect("legacy reply header");
        let mut payload = vec![0u8; u32_at(&header, 4) as usize];
        self.stream.read_exact(&mut payload).expect("legacy reply payload");
        (u32_at(&header, 0), payload)
    }

    /// LoginUser (38) as the 0.10 SDK sends it; returns the status and user id.
    pub fn login_user(&mut self, username: &str, password: &str) -> (u32, Option<u32>) {
        let mut body = short(username);
        body.extend_from_slice(&short(password));
        body.extend_from_slice(&6u32.to_le_bytes());
        body.extend_from_slice(b"0.10.0");
        body.extend_from_slice(&0u32.to_le_bytes());
        let (status, payload) = self.call(LEGACY_LOGIN_USER, &body);
        (status, (status == 0).then(|| u32_at(&payload, 0)))
    }

    /// LoginWithPersonalAccessToken (44); returns the status and user id.
    pub fn login_with_token(&mut self, token: &str) -> (u32, Option<u32>) {
        let (status, payload) = self.call(LEGACY_LOGIN_WITH_PAT, &short(token));
        (status, (status == 0).then(|| u32_at(&payload, 0)))
    }

    /// CreatePersonalAccessToken (42) that never expires; returns the token.
    pub fn create_token(&mut self, name: &str) -> String {
        let mut body = short(name);
        body.extend_from_slice(&u64::MAX.to_le_bytes());
        let (status, payload) = self.call(LEGACY_CREATE_PAT, &body);
        assert_eq!(status, 0, "legacy create {name}");
        String::from_utf8(payload[1..].to_vec()).expect("token is UTF-8")
    }

    /// Names of the caller's tokens (GetPersonalAccessTokens, 41).
    pub fn token_names(&mut self) -> Vec<String> {
        let (status, payload) = self.call(LEGACY_GET_PATS, &[]);
        assert_eq!(status, 0, "legacy list");
        let mut names = Vec::new();
        let mut at = 0;
        while at < payload.len() {
            let len = payload[at] as usize;
            names.push(String::from_utf8(payload[at + 1..at + 1 + len].to_vec()).expect("UTF-8 name"));
            at += 1 + len + 8;
        }
        names
    }

    /// DeletePersonalAccessToken (43); returns the status.
    pub fn delete_token(&mut self, name: &str) -> u32 {
        self.call(LEGACY_DELETE_PAT, &short(name)).0
    }
}

fn short(value: &str) -> Vec<u8> {
    let mut out = vec![u8::try_from(value.len()).expect("short string")];
    out.extend_from_slice(value.as_bytes());
    out
}
