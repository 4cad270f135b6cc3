//! Harness for the Iggy 0.10.0 interop tests: runs the real `latchkey-server`
//! binary on a temporary data directory and an OS-chosen port, so the
//! published SDK (a dev-dependency, see `tests/`) talks to it over real TCP.
//!
//! The server harness (binary lookup, `Server`, `user_config`) is shared with
//! the other interop suite: `interop/harness`, built on the workspace's
//! `latchkey-tests` process harness. The binary is taken from
//! `LATCHKEY_SERVER_BIN`, or else from `<repo>/target/debug/latchkey-server`;
//! it is never built from here (use `interop/run.sh`).

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::{Arc, Mutex};

use latchkey_interop_harness::Framing;
pub use latchkey_interop_harness::{
    ROOT_PASSWORD, ROOT_USER_ID, ROOT_USERNAME, Server, password_hash, server_binary, user_config,
};

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
pub type WireRecorder = latchkey_interop_harness::WireRecorder<LegacyFraming>;

/// The framing this suite's [`WireRecorder`] parses.
pub struct LegacyFraming;

impl Framing for LegacyFraming {
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
