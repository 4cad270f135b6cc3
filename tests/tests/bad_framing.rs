//! Broken framing on one connection (spec §1.1) never disturbs the others:
//! a logged-in client keeps working throughout, and the server stays up.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;
use latchkey_sdk::Expiry;
use latchkey_tests::{DataHome, ServerSpec, TestServer};
use tokio::io::AsyncWriteExt;

/// A client that keeps logging in with a token and pinging on one
/// connection until stopped, counting its completed rounds.
///
/// [`Bystander::served_now`] is the check: called while a bad connection is
/// open (its bytes sent, its close not yet seen), it waits for the bystander
/// to complete a whole round that began after the call, so the bystander is
/// shown to be served *while* the bad traffic is there, not only before or
/// after it.
struct Bystander {
    stop: Arc<AtomicBool>,
    rounds: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
    /// How many times [`Bystander::served_now`] saw it served.
    checks: usize,
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
                while !stop.load(Ordering::SeqCst) {
                    assert_eq!(
                        client.login_with_personal_access_token(&token).await.expect("bystander token login"),
                        0
                    );
                    client.ping().await.expect("bystander ping");
                    assert_eq!(client.get_me().await.expect("bystander GetMe").user_id, 0);
                    rounds.fetch_add(1, Ordering::SeqCst);
                    tokio::task::yield_now().await;
                }
            })
        };
        Bystander { stop, rounds, task, checks: 0 }
    }

    /// Waits (bounded by the hang guard) until the bystander completes a
    /// round that started after this call: the round under way at the call
    /// may have been served before the bad bytes arrived, the next one cannot.
    async fn served_now(&mut self, during: &str) {
        let until = self.rounds.load(Ordering::SeqCst) + 2;
        let deadline = Instant::now() + HANG_GUARD;
        while self.rounds.load(Ordering::SeqCst) < until {
            assert!(!self.task.is_finished(), "the bystander failed {during} (its panic is above)");
            assert!(Instant::now() < deadline, "the bystander was not served {during} (hang guard)");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        self.checks += 1;
    }

    /// Stops the loop; fails the test if any round failed or no check ran.
    async fn finish(self) {
        assert!(self.checks > 0, "the test never checked the bystander during its bad traffic");
        self.stop.store(true, Ordering::SeqCst);
        tokio::time::timeout(HANG_GUARD, self.task)
            .await
            .expect("the bystander's last round never ended (hang guard)")
            .expect("bystander failed");
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
    let (_home, server, mut bystander) = server_with_bystander(&ServerSpec::default_root()).await;
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
        // A bad header with nothing after it yet: the server waits on this
        // connection and serves the others meanwhile.
        raw.write(&length.to_le_bytes()).await;
        bystander.served_now(&format!("while a length of {length} waited for its next 4 bytes")).await;
        raw.write(&[0xde, 0xad, 0xbe, 0xef]).await;
        assert_eq!(raw.read_reply().await, (3, Vec::new()), "length {length}, split");
    }
    // Exactly the 8 header bytes are consumed: the spec's example.
    raw.write(&[2, 0, 0, 0, 0x26, 0, 0, 0]).await;
    raw.write(&frame(PING, &[])).await;
    assert_eq!(raw.read_reply().await, (3, Vec::new()));
    assert_eq!(raw.read_reply().await, (0, Vec::new()));
    // The connection still logs in and works.
    assert_eq!(raw.status(LOGIN_USER, &login_body(b"iggy", b"iggy")).await, 0);
    assert_eq!(raw.status(GET_ME, &[]).await, 0);
    bystander.finish().await;
    assert_still_serving(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn garbage_bytes_are_refused_without_affecting_others() {
    let (_home, server, mut bystander) = server_with_bystander(&ServerSpec::default_root()).await;

    // Text protocols: "GET " as a length is far over the frame limit, so the
    // connection is closed without an answer.
    let mut http = Raw::connect(server.address).await;
    http.write(b"GET / HTTP/1.1\r\nHost: latchkey\r\n\r\n").await;
    bystander.served_now("with an HTTP request on another connection").await;
    assert!(http.read_until_closed().await.is_empty());

    // Seeded noise: whatever it frames as, the server answers exactly what
    // the framing rules predict (one reply per whole frame, 3 for a length
    // below 4) and closes where they say; it never crashes.
    let mut rng = SeededRng::new("garbage_bytes_are_refused_without_affecting_others");
    for round in 0..40 {
        let mut noise = if round % 2 == 0 { rng.bytes(512) } else { framed_noise(&mut rng) };
        // A zero first word would be the 0.11 framing, another test's matter.
        noise[0] |= 1;
        let expected = legacy_outcome(&noise);
        let mut raw = Raw::connect(server.address).await;
        raw.write(&noise).await;
        if round % 8 == 0 {
            bystander.served_now("while a connection sent noise").await;
        }
        raw.stream.shutdown().await.ok();
        let received = raw.read_until_closed().await;
        assert_eq!(reply_statuses(&received).len(), expected.len(), "round {round}: {noise:?}");
        for (index, (got, want)) in reply_statuses(&received).into_iter().zip(&expected).enumerate() {
            if let Some(want) = want {
                assert_eq!(got, *want, "round {round}, reply {index}");
            }
        }
    }

    // Garbage that frames as an unknown code with a small length: 3, then
    // the connection keeps working.
    let mut small = Raw::connect(server.address).await;
    let mut bytes = 12u32.to_le_bytes().to_vec();
    bytes.extend_from_slice(&0xffff_0000u32.to_le_bytes());
    bytes.extend_from_slice(&random_bytes(8));
    small.write(&bytes).await;
    assert_eq!(small.read_reply().await, (3, Vec::new()));
    small.write(&frame(UNKNOWN_CODE, &[0xff; 8])[..9]).await;
    bystander.served_now("while a frame was cut short").await;
    small.write(&frame(UNKNOWN_CODE, &[0xff; 8])[9..]).await;
    assert_eq!(small.read_reply().await, (3, Vec::new()));
    assert_eq!(small.call(PING, &[]).await, (0, Vec::new()));

    // A good frame after many bad ones on the same connection.
    for code in [UNKNOWN_CODE, 0, 7777, 0x0100_0000] {
        assert_eq!(small.status(code, &random_bytes(16)).await, 3, "code {code}");
    }
    assert_eq!(small.status(LOGIN_USER, &login_body(b"iggy", b"iggy")).await, 0);

    bystander.finish().await;
    assert_still_serving(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_truncated_frame_then_close_is_dropped_quietly() {
    let (_home, server, mut bystander) = server_with_bystander(&ServerSpec::default_root()).await;
    // A LoginUser frame cut after 5 payload bytes, then the write side closed.
    let full = frame(LOGIN_USER, &login_body(b"iggy", b"iggy"));
    let mut raw = Raw::connect(server.address).await;
    raw.write(&full[..13]).await;
    bystander.served_now("while a login frame was cut after 5 payload bytes").await;
    raw.stream.shutdown().await.unwrap();
    assert!(raw.read_until_closed().await.is_empty(), "no reply to a frame that never completed");
    // A header cut in the middle, then a full close.
    let mut raw = Raw::connect(server.address).await;
    raw.write(&full[..5]).await;
    bystander.served_now("while a header was cut in the middle").await;
    drop(raw);

    // A frame split into single-byte writes is reassembled and answered.
    let mut slow = Raw::connect(server.address).await;
    for (index, byte) in full.iter().enumerate() {
        slow.write(std::slice::from_ref(byte)).await;
        if index == full.len() / 2 {
            bystander.served_now("while a frame came a byte at a time").await;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(slow.read_reply().await, (0, 0u32.to_le_bytes().to_vec()));

    bystander.finish().await;
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
    let (_home, server, mut bystander) = server_with_bystander(&ServerSpec::default_root()).await;
    // Declares 2 GiB and sends nothing more: the server must close at once
    // rather than wait for (or allocate) the payload.
    for length in [0x7fff_ffffu32, u32::MAX, 65_537] {
        let mut raw = Raw::connect(server.address).await;
        // A ping first: its reply is still delivered before the close.
        let mut bytes = frame(PING, &[]);
        bytes.extend_from_slice(&length.to_le_bytes());
        bytes.extend_from_slice(&PING.to_le_bytes());
        raw.write(&bytes).await;
        bystander.served_now(&format!("while a connection declared {length} bytes")).await;
        let received = raw.read_until_closed().await;
        assert_eq!(received, [0u8; 8], "length {length}: only the ping's reply, then EOF");
    }
    bystander.finish().await;
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
    let (_home, server, mut bystander) = server_with_bystander(&ServerSpec::default_root()).await;
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
    bystander.served_now("while a burst of bad and good requests waited to be read").await;
    for (index, (code, _, want)) in requests.iter().enumerate() {
        let (status, _) = raw.read_reply().await;
        assert_eq!(status, *want, "request {index} (code {code})");
    }
    bystander.finish().await;
    assert_still_serving(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_abrupt_disconnects_do_not_disturb_the_server() {
    let (_home, server, mut bystander) = server_with_bystander(&ServerSpec::default_root()).await;
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
        if round % 10 < 3 {
            bystander.served_now(&format!("in round {round} of abrupt disconnects")).await;
        }
        drop(raw);
    }
    bystander.finish().await;
    assert_still_serving(server).await;
}

/// A few frames of seeded junk: lengths below 4, whole frames with any code
/// (Iggy's, Latchkey's or none) and any body, and at the end a frame cut
/// short or a length over the limit.
fn framed_noise(rng: &mut SeededRng) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..rng.below(6) + 1 {
        if rng.below(4) == 0 {
            out.extend_from_slice(&(rng.below(4) as u32).to_le_bytes());
            out.extend_from_slice(&rng.bytes(4));
        } else {
            let code = match rng.below(3) {
                0 => rng.below(60) as u32,
                1 => 9100 + rng.below(20) as u32,
                _ => rng.next_u64() as u32,
            };
            let body_bytes = rng.below(200) as usize;
            out.extend_from_slice(&frame(code, &rng.bytes(body_bytes)));
        }
    }
    match rng.below(3) {
        0 => out.extend_from_slice(&frame(PING, &[])[..rng.below(8) as usize]),
        1 => out.extend_from_slice(&(65_537 + rng.below(1 << 20) as u32).to_le_bytes()),
        _ => {}
    }
    out
}

/// What the legacy framing rules (spec §1.1) make of `bytes` sent on a fresh
/// connection followed by a close: one reply per whole frame (`Some(3)` for
/// a length below 4, whose 8 header bytes are consumed; `None`, any status,
/// for a frame within the 64 KiB limit), and nothing after a length over the
/// limit or a frame cut short.
fn legacy_outcome(bytes: &[u8]) -> Vec<Option<u32>> {
    const FRAME_BYTES_MAX: usize = 65_536;
    let mut replies = Vec::new();
    let mut at = 0;
    while bytes.len() - at >= 4 {
        let length = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        if length < 4 {
            if bytes.len() - at < 8 {
                break;
            }
            replies.push(Some(3));
            at += 8;
        } else if length > FRAME_BYTES_MAX || bytes.len() - at - 4 < length {
            break;
        } else {
            replies.push(None);
            at += 4 + length;
        }
    }
    replies
}

/// The statuses of the whole legacy replies in `bytes`; fails the test on a
/// reply cut short (the server must never send half a reply).
fn reply_statuses(bytes: &[u8]) -> Vec<u32> {
    let mut statuses = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        assert!(bytes.len() - at >= 8, "half a reply header: {bytes:?}");
        let status = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
        let length = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
        assert!(bytes.len() - at - 8 >= length, "a reply cut short: {bytes:?}");
        statuses.push(status);
        at += 8 + length;
    }
    statuses
}
