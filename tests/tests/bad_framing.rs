//! Broken framing on one connection (spec §1.1) never disturbs the others:
//! a logged-in client keeps working throughout, and the server stays up.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use common::*;
use latchkey_sdk::Expiry;
use latchkey_tests::{DataHome, ServerSpec, TestServer};
use tokio::io::AsyncWriteExt;

/// A client that keeps logging in with a token and pinging on one
/// connection until stopped; returns how many round trips succeeded.
struct Bystander {
    stop: Arc<AtomicBool>,
    rounds: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Bystander {
    async fn start(address: SocketAddr, token: String) -> Bystander {
        let stop = Arc::new(AtomicBool::new(false));
        let rounds = Arc::new(AtomicUsize::new(0));
        let mut client = with_token(address, &token).await;
        let task = {
            let stop = Arc::clone(&stop);
            let rounds = Arc::clone(&rounds);
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    assert_eq!(
                        client.login_with_personal_access_token(&token).await.expect("bystander token login"),
                        0
                    );
                    client.ping().await.expect("bystander ping");
                    assert_eq!(client.get_me().await.expect("bystander GetMe").user_id, 0);
                    rounds.fetch_add(1, Ordering::Relaxed);
                    tokio::task::yield_now().await;
                }
            })
        };
        Bystander { stop, rounds, task }
    }

    /// Stops the loop; fails the test if any round failed.
    async fn finish(self) -> usize {
        // Make sure it ran at least once while the bad traffic was going on.
        while self.rounds.load(Ordering::Relaxed) == 0 && !self.task.is_finished() {
            tokio::task::yield_now().await;
        }
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("bystander failed");
        self.rounds.load(Ordering::Relaxed)
    }
}

async fn server_with_bystander(spec: &ServerSpec) -> (DataHome, TestServer, Bystander) {
    let home = DataHome::new();
    let server = TestServer::start(&home, spec);
    let mut owner = root(server.address).await;
    let token = owner.create_personal_access_token("bystander", Expiry::Never).await.unwrap();
    let bystander = Bystander::start(server.address, token).await;
    (home, server, bystander)
}

/// The server still answers a fresh client and stops cleanly.
async fn assert_still_serving(server: TestServer) {
    let mut client = connect(server.address).await;
    client.ping().await.unwrap();
    assert_eq!(client.login_user("iggy", "iggy").await.unwrap(), 0);
    drop(client);
    assert_eq!(server.stop().code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_length_below_4_gets_3_and_the_next_frame_is_read() {
    let (_home, server, bystander) = server_with_bystander(&ServerSpec::default_root()).await;
    let mut raw = Raw::connect(server.address).await;
    // A Ping first settles the connection as legacy: a connection whose very
    // first word is 0 is the 0.11 framing (spec §0.2; see vsr_framing.rs).
    assert_eq!(raw.call(PING, &[]).await, (0, Vec::new()));
    for length in 0u32..4 {
        let mut bytes = length.to_le_bytes().to_vec();
        bytes.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
        // The bad header and a valid Ping in one write.
        bytes.extend_from_slice(&frame(PING, &[]));
        raw.write(&bytes).await;
        assert_eq!(raw.read_reply().await, (3, Vec::new()), "length {length}");
        assert_eq!(raw.read_reply().await, (0, Vec::new()), "ping after {length}");
    }
    // Exactly the 8 header bytes are consumed: the spec's example.
    raw.write(&[2, 0, 0, 0, 0x26, 0, 0, 0]).await;
    raw.write(&frame(PING, &[])).await;
    assert_eq!(raw.read_reply().await, (3, Vec::new()));
    assert_eq!(raw.read_reply().await, (0, Vec::new()));
    // The connection still logs in and works.
    assert_eq!(raw.status(LOGIN_USER, &login_body(b"iggy", b"iggy")).await, 0);
    assert_eq!(raw.status(GET_ME, &[]).await, 0);
    assert!(bystander.finish().await > 0);
    assert_still_serving(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn garbage_bytes_are_refused_without_affecting_others() {
    let (_home, server, bystander) = server_with_bystander(&ServerSpec::default_root()).await;

    // Text protocols: "GET " as a length is far over the frame limit, so the
    // connection is closed without an answer.
    let mut http = Raw::connect(server.address).await;
    http.write(b"GET / HTTP/1.1\r\nHost: latchkey\r\n\r\n").await;
    assert!(http.read_until_closed().await.is_empty());

    // Random bytes: whatever they frame as, the server either answers with
    // statuses or closes; it never crashes. Several rounds.
    for _ in 0..20 {
        let mut noise = Raw::connect(server.address).await;
        noise.write(&random_bytes(512)).await;
        noise.stream.shutdown().await.ok();
        let _ = noise.read_until_closed().await;
    }

    // Garbage that frames as an unknown code with a small length: 3, then
    // the connection keeps working.
    let mut small = Raw::connect(server.address).await;
    let mut bytes = 12u32.to_le_bytes().to_vec();
    bytes.extend_from_slice(&0xffff_0000u32.to_le_bytes());
    bytes.extend_from_slice(&random_bytes(8));
    small.write(&bytes).await;
    assert_eq!(small.read_reply().await, (3, Vec::new()));
    assert_eq!(small.call(PING, &[]).await, (0, Vec::new()));

    // A good frame after many bad ones on the same connection.
    for code in [UNKNOWN_CODE, 0, 7777, 0x0100_0000] {
        assert_eq!(small.status(code, &random_bytes(16)).await, 3, "code {code}");
    }
    assert_eq!(small.status(LOGIN_USER, &login_body(b"iggy", b"iggy")).await, 0);

    assert!(bystander.finish().await > 0);
    assert_still_serving(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_truncated_frame_then_close_is_dropped_quietly() {
    let (_home, server, bystander) = server_with_bystander(&ServerSpec::default_root()).await;
    // A LoginUser frame cut after 5 payload bytes, then the write side closed.
    let full = frame(LOGIN_USER, &login_body(b"iggy", b"iggy"));
    let mut raw = Raw::connect(server.address).await;
    raw.write(&full[..13]).await;
    raw.stream.shutdown().await.unwrap();
    assert!(raw.read_until_closed().await.is_empty(), "no reply to a frame that never completed");
    // A header cut in the middle, then a full close.
    let mut raw = Raw::connect(server.address).await;
    raw.write(&full[..5]).await;
    drop(raw);

    // A frame split into single-byte writes is reassembled and answered.
    let mut slow = Raw::connect(server.address).await;
    for byte in &full {
        slow.write(std::slice::from_ref(byte)).await;
        tokio::task::yield_now().await;
    }
    assert_eq!(slow.read_reply().await, (0, 0u32.to_le_bytes().to_vec()));

    assert!(bystander.finish().await > 0);
    assert_still_serving(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn requests_followed_by_a_half_close_are_still_answered() {
    let home = DataHome::new();
    let server = TestServer::start(&home, &ServerSpec::default_root());
    let mut raw = Raw::connect(server.address).await;
    let mut bytes = frame(PING, &[]);
    bytes.extend_from_slice(&frame(LOGIN_USER, &login_body(b"iggy", b"iggy")));
    bytes.extend_from_slice(&frame(GET_PATS, &[]));
    raw.write(&bytes).await;
    raw.stream.shutdown().await.unwrap();
    let received = raw.read_until_closed().await;
    let mut expected = vec![0u8; 8];
    expected.extend_from_slice(&[0, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0]);
    expected.extend_from_slice(&[0u8; 8]);
    assert_eq!(received, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_oversized_declared_length_closes_that_connection() {
    let (_home, server, bystander) = server_with_bystander(&ServerSpec::default_root()).await;
    // Declares 2 GiB and sends nothing more: the server must close at once
    // rather than wait for (or allocate) the payload.
    for length in [0x7fff_ffffu32, u32::MAX, 65_537] {
        let mut raw = Raw::connect(server.address).await;
        // A ping first: its reply is still delivered before the close.
        let mut bytes = frame(PING, &[]);
        bytes.extend_from_slice(&length.to_le_bytes());
        bytes.extend_from_slice(&PING.to_le_bytes());
        raw.write(&bytes).await;
        let received = raw.read_until_closed().await;
        assert_eq!(received, [0u8; 8], "length {length}: only the ping's reply, then EOF");
    }
    assert!(bystander.finish().await > 0);
    assert_still_serving(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_frame_limit_is_inclusive_and_configurable() {
    let home = DataHome::new();
    let server = TestServer::start(&home, &ServerSpec::default_root());
    // Exactly 64 KiB (code + payload) is read whole and answered.
    let mut raw = Raw::connect(server.address).await;
    let payload = vec![0x55u8; 65_536 - 4];
    assert_eq!(raw.status(UNKNOWN_CODE, &payload).await, 3);
    assert_eq!(raw.call(PING, &[]).await, (0, Vec::new()));
    drop(raw);

    let home = DataHome::new();
    let spec = ServerSpec::default_root().env("LATCHKEY_TCP_MAX_FRAME_SIZE", "128");
    let server = TestServer::start(&home, &spec);
    let mut raw = Raw::connect(server.address).await;
    assert_eq!(raw.status(UNKNOWN_CODE, &[0u8; 124]).await, 3);
    raw.write(&frame(UNKNOWN_CODE, &[0u8; 125])).await;
    assert!(raw.read_until_closed().await.is_empty());
    // A login still fits.
    let mut client = root(server.address).await;
    client.ping().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unknown_codes_and_bad_bodies_in_a_pipelined_burst() {
    let (_home, server, bystander) = server_with_bystander(&ServerSpec::default_root()).await;
    let mut raw = Raw::connect(server.address).await;
    // Everything in one write; the replies must come back one per request, in order.
    let requests: Vec<(u32, Vec<u8>, u32)> = vec![
        (PING, vec![], 0),
        (UNKNOWN_CODE, vec![1, 2, 3], 3),
        (GET_PATS, vec![], 40),
        (CREATE_PAT, vec![], 3),
        (LOGIN_USER, login_body(b"iggy", b"iggy"), 0),
        (GET_STATS, vec![], 5),
        (CREATE_PAT, create_body(b"piped", u64::MAX), 0),
        (CREATE_PAT, create_body(b"piped", u64::MAX), 51),
        (DELETE_PAT, short(b"piped"), 0),
        (DELETE_PAT, short(b"piped"), 20),
        (LOGOUT_USER, vec![], 0),
        (LOGOUT_USER, vec![], 40),
        (PING, vec![], 0),
    ];
    let mut burst = Vec::new();
    for (code, payload, _) in &requests {
        burst.extend_from_slice(&frame(*code, payload));
    }
    raw.write(&burst).await;
    for (index, (code, _, want)) in requests.iter().enumerate() {
        let (status, _) = raw.read_reply().await;
        assert_eq!(status, *want, "request {index} (code {code})");
    }
    assert!(bystander.finish().await > 0);
    assert_still_serving(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_abrupt_disconnects_do_not_disturb_the_server() {
    let (_home, server, bystander) = server_with_bystander(&ServerSpec::default_root()).await;
    for round in 0..50 {
        let mut raw = Raw::connect(server.address).await;
        match round % 3 {
            // Mid-request: a full request, gone before the reply is read.
            0 => raw.write(&frame(LOGIN_WITH_PAT, &short(unissued_token().as_bytes()))).await,
            // Half a header.
            1 => raw.write(&[9, 0]).await,
            // Nothing at all.
            _ => {}
        }
        drop(raw);
    }
    assert!(bystander.finish().await > 0);
    assert_still_serving(server).await;
}
