//! Connection limits, timeouts, backpressure and failed-login throttling,
//! against the real binary.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

mod common;

use common::{HANG_GUARD, LOGIN_USER, LOGOUT_USER, Raw, frame, login_body, wait_for_logs};

use latchkey_sdk::{Client, ErrorCode, Expiry};
use latchkey_tests::{DataHome, ServerSpec, TestServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const PING: [u8; 8] = [4, 0, 0, 0, 1, 0, 0, 0];

fn code(result: Result<impl Sized, latchkey_sdk::Error>) -> Option<ErrorCode> {
    result.err().and_then(|error| error.code())
}

/// Reads until EOF or error; true if the server closed the connection.
async fn closed_by_server(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buffer = [0u8; 64];
    matches!(tokio::time::timeout(within, stream.read(&mut buffer)).await, Ok(Ok(0)) | Ok(Err(_)))
}

#[tokio::test]
async fn failed_token_logins_are_throttled_per_address_and_successes_are_not() {
    let home = DataHome::new();
    let spec = ServerSpec::default_root()
        .env("LATCHKEY_LOGIN_THROTTLE_ENABLED", "true")
        .env("LATCHKEY_LOGIN_THROTTLE_PER_ADDRESS_BURST", "5")
        .env("LATCHKEY_LOGIN_THROTTLE_PER_ADDRESS_PER_MINUTE", "1");
    let server = TestServer::start(&home, &spec);
    let mut root = Client::connect(server.address).await.unwrap();
    root.login_user("iggy", "iggy").await.unwrap();
    let token = root.create_personal_access_token("real", Expiry::Never).await.unwrap();
    // A valid token logs in however often: successes take nothing.
    for _ in 0..20 {
        root.login_with_personal_access_token(&token).await.unwrap();
    }
    let mut guesser = Client::connect(server.address).await.unwrap();
    let bogus = token.replace("lk_", "lk_0").chars().take(token.len()).collect::<String>();
    for _ in 0..5 {
        assert_eq!(
            code(guesser.login_with_personal_access_token(&bogus).await),
            Some(ErrorCode::ResourceNotFound)
        );
    }
    // The sixth guess is refused before any lookup, even with the real token.
    assert_eq!(
        code(guesser.login_with_personal_access_token(&bogus).await),
        Some(ErrorCode::TooManyFailedLogins)
    );
    assert_eq!(
        code(guesser.login_with_personal_access_token(&token).await),
        Some(ErrorCode::TooManyFailedLogins)
    );
    // Logged as the refusal is answered: wait for the line, bounded.
    wait_for_logs(&server, |logs| logs.contains("login_throttled"));
}

#[tokio::test]
async fn failed_password_logins_are_throttled_before_argon2() {
    let home = DataHome::new();
    let spec = ServerSpec::default_root()
        .env("LATCHKEY_LOGIN_THROTTLE_ENABLED", "true")
        .env("LATCHKEY_LOGIN_THROTTLE_PER_ADDRESS_BURST", "3")
        .env("LATCHKEY_LOGIN_THROTTLE_PER_ADDRESS_PER_MINUTE", "1");
    let server = TestServer::start(&home, &spec);
    let mut client = Client::connect(server.address).await.unwrap();
    for _ in 0..3 {
        assert_eq!(code(client.login_user("iggy", "wrong").await), Some(ErrorCode::InvalidCredentials));
    }
    assert_eq!(code(client.login_user("iggy", "wrong").await), Some(ErrorCode::TooManyFailedLogins));
    // Held back even with the right password until the bucket refills.
    assert_eq!(code(client.login_user("iggy", "iggy").await), Some(ErrorCode::TooManyFailedLogins));
    // Length errors are answered before the throttle and do not count.
    assert_eq!(code(client.login_user("ig", "iggy").await), Some(ErrorCode::InvalidUsername));
}

/// The server's debug log names why it closed each connection.
fn logging_closes(spec: ServerSpec) -> ServerSpec {
    spec.env("LATCHKEY_LOG", "info,latchkey_server=debug")
}

/// A login timeout of 300 ms, with closes logged. The idle timeout is an
/// hour: nothing in a test can meet it, so every close is the login
/// timeout's, and the log says so.
fn short_login_timeout() -> ServerSpec {
    logging_closes(ServerSpec::default_root())
        .env("LATCHKEY_TCP_LOGIN_TIMEOUT", "300ms")
        .env("LATCHKEY_TCP_IDLE_TIMEOUT", "1h")
}

/// Waits (bounded) until the server has logged closing the connection whose
/// client end is `client` for `reason`.
fn wait_closed_for(server: &TestServer, client: SocketAddr, reason: &str) {
    let peer = format!("peer={client}");
    let reason = format!("reason={reason}");
    wait_for_logs(server, |logs| {
        logs.lines()
            .any(|line| line.contains("connection closed") && line.contains(&peer) && line.contains(&reason))
    });
}

/// Reads until the server closes `stream` (bounded by the hang guard).
async fn wait_until_closed(stream: &mut TcpStream) {
    assert!(closed_by_server(stream, HANG_GUARD).await, "the server kept the connection open (hang guard)");
}

#[tokio::test]
async fn the_login_timeout_closes_silent_and_pinging_connections_and_spares_logged_in_ones() {
    let home = DataHome::new();
    let server = TestServer::start(&home, &short_login_timeout());
    // Sends nothing at all: closed (the framing is not even known yet).
    let mut silent = TcpStream::connect(server.address).await.unwrap();
    wait_until_closed(&mut silent).await;
    wait_closed_for(&server, silent.local_addr().unwrap(), "login timeout");
    // Pings but never logs in: pings do not extend the login timeout. Were
    // they to, the pings would go on until the hang guard.
    let mut pinger = TcpStream::connect(server.address).await.unwrap();
    let deadline = std::time::Instant::now() + HANG_GUARD;
    loop {
        assert!(std::time::Instant::now() < deadline, "pings kept an unauthenticated connection open");
        let mut reply = [0u8; 8];
        if pinger.write_all(&PING).await.is_err() || pinger.read_exact(&mut reply).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    wait_closed_for(&server, pinger.local_addr().unwrap(), "login timeout");
    // Logged in: the login timeout no longer applies. A connection opened
    // after the login has met it, so this one's login deadline has passed too.
    let mut client = Client::connect(server.address).await.unwrap();
    client.login_user("iggy", "iggy").await.unwrap();
    let mut later = TcpStream::connect(server.address).await.unwrap();
    wait_until_closed(&mut later).await;
    wait_closed_for(&server, later.local_addr().unwrap(), "login timeout");
    client.ping().await.expect("a logged-in connection outlives the login timeout");
}

/// 512 pings back to back, written at once without waiting for replies.
fn ping_burst() -> Vec<u8> {
    PING.iter().copied().cycle().take(PING.len() * 512).collect()
}

/// Writes pings on `stream` without reading a reply until a write has
/// waited a whole second (the server has stopped reading, held up writing
/// replies nobody reads), then waits for the server to close it for
/// `reason`. Were the waiting write unbounded, it would stay open.
async fn flood_until_closed(server: &TestServer, stream: TcpStream, reason: &str) {
    let local = stream.local_addr().unwrap();
    let (_unread, mut writer) = stream.into_split();
    let pings = ping_burst();
    let flooding = tokio::time::timeout(HANG_GUARD, async {
        while let Ok(Ok(())) = tokio::time::timeout(Duration::from_secs(1), writer.write_all(&pings)).await {}
    })
    .await;
    assert!(flooding.is_ok(), "the server read on without its replies being read (hang guard)");
    wait_closed_for(server, local, reason);
}

#[tokio::test]
async fn a_client_whose_pings_are_always_buffered_still_meets_the_login_timeout() {
    let home = DataHome::new();
    let server = TestServer::start(&home, &short_login_timeout());
    let stream = TcpStream::connect(server.address).await.unwrap();
    let local = stream.local_addr().unwrap();
    let (mut reader, mut writer) = stream.into_split();
    // Pings written back to back, 512 at a time, never waiting for a reply:
    // the server always finds the next bytes ready when it reads.
    let pings = ping_burst();
    let flood = tokio::spawn(async move { while writer.write_all(&pings).await.is_ok() {} });
    let mut replies = vec![0u8; 64 * 1024];
    let drained = tokio::time::timeout(HANG_GUARD, async {
        while matches!(reader.read(&mut replies).await, Ok(read) if read > 0) {}
    })
    .await;
    flood.abort();
    assert!(drained.is_ok(), "a flood of pings kept an unauthenticated connection open");
    wait_closed_for(&server, local, "login timeout");
}

#[tokio::test]
async fn a_client_that_never_reads_its_replies_is_closed_at_the_login_timeout() {
    let home = DataHome::new();
    // Two seconds: the flood below fills both ends' socket buffers long
    // before, so when the deadline passes the server is waiting to write.
    let spec = logging_closes(ServerSpec::default_root())
        .env("LATCHKEY_TCP_LOGIN_TIMEOUT", "2s")
        .env("LATCHKEY_TCP_IDLE_TIMEOUT", "1h");
    let server = TestServer::start(&home, &spec);
    let stream = TcpStream::connect(server.address).await.unwrap();
    flood_until_closed(&server, stream, "login timeout, its replies unread").await;
}

#[tokio::test]
async fn a_logged_in_client_that_never_reads_its_replies_is_closed_at_the_idle_timeout() {
    let home = DataHome::new();
    // The login timeout is an hour, so the close can only be the idle one;
    // the flood keeps the connection busy, so only the waiting write can
    // meet it.
    let spec = logging_closes(ServerSpec::default_root())
        .env("LATCHKEY_TCP_LOGIN_TIMEOUT", "1h")
        .env("LATCHKEY_TCP_IDLE_TIMEOUT", "2s");
    let server = TestServer::start(&home, &spec);
    let mut raw = Raw::connect(server.address).await;
    let (status, _) = raw.call(LOGIN_USER, &login_body(b"iggy", b"iggy")).await;
    assert_eq!(status, 0, "login");
    flood_until_closed(&server, raw.stream, "idle timeout, its replies unread").await;
}

#[tokio::test]
async fn a_logout_restarts_the_login_timeout() {
    let home = DataHome::new();
    // One second: the only margin here is the client's own turnaround
    // between the logout's reply and its next request; no Argon2 in between.
    let spec = logging_closes(ServerSpec::default_root())
        .env("LATCHKEY_TCP_LOGIN_TIMEOUT", "1s")
        .env("LATCHKEY_TCP_IDLE_TIMEOUT", "1h");
    let server = TestServer::start(&home, &spec);
    let mut raw = TcpStream::connect(server.address).await.unwrap();
    let client_end = raw.local_addr().unwrap();
    let login = frame(LOGIN_USER, &login_body(b"iggy", b"iggy"));
    raw.write_all(&login).await.unwrap();
    let mut reply = [0u8; 12];
    raw.read_exact(&mut reply).await.unwrap();
    assert_eq!(reply[..4], [0; 4], "login");
    // Past the login deadline counted from the connect: a connection opened
    // later has met it.
    let mut later = TcpStream::connect(server.address).await.unwrap();
    wait_until_closed(&mut later).await;
    wait_closed_for(&server, later.local_addr().unwrap(), "login timeout");
    // Log out: the login timeout starts again from here, not from the
    // connect (long past), so the connection is not closed at once…
    raw.write_all(&frame(LOGOUT_USER, &[])).await.unwrap();
    let mut reply = [0u8; 8];
    raw.read_exact(&mut reply).await.unwrap();
    assert_eq!(reply, [0; 8], "logout");
    raw.write_all(&PING).await.unwrap();
    raw.read_exact(&mut reply).await.expect("closed at once after the logout");
    assert_eq!(reply, [0; 8], "ping after the logout");
    // …but it is closed at the login timeout, logged in no more.
    wait_until_closed(&mut raw).await;
    wait_closed_for(&server, client_end, "login timeout");
}

#[tokio::test]
async fn a_quiet_logged_in_connection_is_closed_at_the_idle_timeout() {
    let home = DataHome::new();
    // The login timeout is an hour: the close below can only be the idle one.
    let spec = logging_closes(ServerSpec::default_root())
        .env("LATCHKEY_TCP_LOGIN_TIMEOUT", "1h")
        .env("LATCHKEY_TCP_IDLE_TIMEOUT", "300ms");
    let server = TestServer::start(&home, &spec);
    let mut raw = TcpStream::connect(server.address).await.unwrap();
    raw.write_all(&frame(LOGIN_USER, &login_body(b"iggy", b"iggy"))).await.unwrap();
    let mut reply = [0u8; 12];
    raw.read_exact(&mut reply).await.unwrap();
    assert_eq!(reply[..4], [0; 4], "login");
    wait_until_closed(&mut raw).await;
    wait_closed_for(&server, raw.local_addr().unwrap(), "idle timeout");
    // A connection that never logged in is not subject to it.
    let mut unauthenticated = TcpStream::connect(server.address).await.unwrap();
    let mut logged_in = TcpStream::connect(server.address).await.unwrap();
    logged_in.write_all(&frame(LOGIN_USER, &login_body(b"iggy", b"iggy"))).await.unwrap();
    logged_in.read_exact(&mut reply).await.unwrap();
    wait_until_closed(&mut logged_in).await;
    unauthenticated.write_all(&PING).await.unwrap();
    let mut pong = [0u8; 8];
    unauthenticated.read_exact(&mut pong).await.expect("an unauthenticated connection met the idle timeout");
}

/// The second loopback address: the server sees a client there as another
/// address than 127.0.0.1.
const OTHER_ADDRESS: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));

#[tokio::test]
async fn the_per_username_throttle_holds_back_the_guesser_and_not_the_real_user() {
    let home = DataHome::new();
    // The address buckets are far larger than the username's, so only the
    // username's bucket can run dry here.
    let spec = ServerSpec::default_root()
        .env("LATCHKEY_LOGIN_THROTTLE_ENABLED", "true")
        .env("LATCHKEY_LOGIN_THROTTLE_PER_ADDRESS_BURST", "100")
        .env("LATCHKEY_LOGIN_THROTTLE_PER_ADDRESS_PER_MINUTE", "1")
        .env("LATCHKEY_LOGIN_THROTTLE_PER_USER_BURST", "3")
        .env("LATCHKEY_LOGIN_THROTTLE_PER_USER_PER_MINUTE", "1");
    let server = TestServer::start(&home, &spec);
    let wrong = login_body(b"iggy", b"wrong");
    let right = login_body(b"iggy", b"iggy");
    let mut guesser = Raw::connect_from(OTHER_ADDRESS, server.address).await;
    for attempt in 0..3 {
        assert_eq!(guesser.status(LOGIN_USER, &wrong).await, 42, "guess {attempt}");
    }
    // iggy's bucket is empty and 127.0.0.2 has failed: held back, even with
    // the right password.
    assert_eq!(guesser.status(LOGIN_USER, &wrong).await, 20001);
    assert_eq!(guesser.status(LOGIN_USER, &right).await, 20001);
    // Another username from the same address is not held back by iggy's bucket.
    assert_eq!(guesser.status(LOGIN_USER, &login_body(b"nobody", b"wrong")).await, 42);
    // The real user, from a clean address, is not locked out.
    let mut real = Raw::connect(server.address).await;
    assert_eq!(real.status(LOGIN_USER, &right).await, 0);
    // Logged as the refusal is answered: wait for the line, bounded.
    wait_for_logs(&server, |logs| logs.contains("login_throttled"));
}

#[tokio::test]
async fn the_overall_connection_limit_counts_every_address() {
    let home = DataHome::new();
    let spec = ServerSpec::default_root()
        .env("LATCHKEY_TCP_MAX_CONNECTIONS", "3")
        .env("LATCHKEY_TCP_MAX_CONNECTIONS_PER_IP", "100");
    let server = TestServer::start(&home, &spec);
    let mut open = Vec::new();
    for _ in 0..3 {
        let mut raw = Raw::connect(server.address).await;
        assert_eq!(raw.call(1, &[]).await, (0, Vec::new()));
        open.push(raw);
    }
    // A fourth, from another address (its own per-address count is 0), is
    // closed at accept: the overall limit.
    let mut fourth = Raw::connect_from(OTHER_ADDRESS, server.address).await;
    let _ = fourth.stream.write_all(&PING).await;
    assert!(fourth.read_until_closed().await.is_empty(), "the fourth connection was answered");
    // Closing one frees its slot for any address.
    drop(open.pop());
    let deadline = std::time::Instant::now() + HANG_GUARD;
    loop {
        let mut again = Raw::connect_from(OTHER_ADDRESS, server.address).await;
        let mut reply = [0u8; 8];
        if again.stream.write_all(&PING).await.is_ok() && again.stream.read_exact(&mut reply).await.is_ok() {
            assert_eq!(reply, [0; 8]);
            break;
        }
        // The server counts a connection out just after closing it.
        assert!(std::time::Instant::now() < deadline, "the freed slot never admitted a connection");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn connections_beyond_the_per_address_limit_are_closed_at_accept() {
    let home = DataHome::new();
    let spec = ServerSpec::default_root().env("LATCHKEY_TCP_MAX_CONNECTIONS_PER_IP", "3");
    let server = TestServer::start(&home, &spec);
    let mut open = Vec::new();
    for _ in 0..3 {
        let mut stream = TcpStream::connect(server.address).await.unwrap();
        stream.write_all(&PING).await.unwrap();
        let mut reply = [0u8; 8];
        stream.read_exact(&mut reply).await.unwrap();
        open.push(stream);
    }
    let mut fourth = TcpStream::connect(server.address).await.unwrap();
    let _ = fourth.write_all(&PING).await;
    assert!(closed_by_server(&mut fourth, HANG_GUARD).await);
    // Closing one frees its slot.
    drop(open.pop());
    let mut reply = [0u8; 8];
    let mut admitted = false;
    for _ in 0..50 {
        let mut again = TcpStream::connect(server.address).await.unwrap();
        if again.write_all(&PING).await.is_ok()
            && matches!(
                tokio::time::timeout(Duration::from_secs(1), again.read_exact(&mut reply)).await,
                Ok(Ok(_))
            )
        {
            admitted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(admitted, "a freed slot must admit a new connection");
}

/// Pings in the burst below: 8 MB, far more than the kernel can hold
/// between the two ends with the client's buffers kept small.
const BURST_PINGS: usize = 1_000_000;

#[tokio::test]
async fn a_client_that_pipelines_without_reading_meets_backpressure_not_an_unbounded_buffer() {
    let home = DataHome::new();
    // The connection never logs in (pings need none): the login timeout
    // (10 s by default) must not close it while a loaded machine is slow
    // through the burst.
    let spec = ServerSpec::default_root()
        .env("LATCHKEY_TCP_MAX_REQUESTS_IN_FLIGHT", "4")
        .env("LATCHKEY_TCP_LOGIN_TIMEOUT", "600s");
    let server = TestServer::start(&home, &spec);
    let before = latchkey_tests::process_memory(server.pid());
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_send_buffer_size(16 * 1024).unwrap();
    socket.set_recv_buffer_size(16 * 1024).unwrap();
    let stream = socket.connect(server.address).await.unwrap();
    let (client_end, server_end) = (stream.local_addr().unwrap(), stream.peer_addr().unwrap());
    let (mut replies, mut requests) = stream.into_split();
    // The client writes the whole burst and reads nothing meanwhile,
    // counting every byte the kernel takes.
    let written = Arc::new(AtomicUsize::new(0));
    let writer = {
        let written = Arc::clone(&written);
        tokio::spawn(async move {
            let burst = PING.repeat(BURST_PINGS);
            let mut at = 0;
            while at < burst.len() {
                let sent = requests.write(&burst[at..]).await.unwrap();
                at += sent;
                written.fetch_add(sent, Ordering::SeqCst);
            }
        })
    };
    // Wait until the server stops reading: bytes wait in its receive queue,
    // and nothing moves over 20 looks in a row (a server still reading
    // drains them). Were it to read on and keep the replies, the client
    // would finish writing the burst first.
    let deadline = std::time::Instant::now() + HANG_GUARD;
    let mut same = 0;
    let mut last = None;
    while same < 20 {
        assert!(
            !writer.is_finished(),
            "the server read all {BURST_PINGS} pings while none of their replies was read: no backpressure"
        );
        assert!(std::time::Instant::now() < deadline, "the server never stopped reading (hang guard)");
        let server_side = latchkey_tests::tcp_queues(server_end, client_end).expect("the server's end");
        let client_side = latchkey_tests::tcp_queues(client_end, server_end).expect("the client's end");
        let now = (server_side, client_side, written.load(Ordering::SeqCst));
        same = if server_side.unread_bytes > 0 && Some(now) == last { same + 1 } else { 0 };
        last = Some(now);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (server_side, client_side, written) = last.unwrap();
    // Every byte the client wrote is accounted for: still in the client's
    // send queue or the server's receive queue, or taken in by the server.
    // Of what it took in, the replies are in the kernel (its send queue, the
    // client's receive queue) save what the server holds itself: requests
    // in flight and a read buffer, never a queue of its own.
    let taken_in = written - (client_side.unacked_bytes + server_side.unread_bytes) as usize;
    let replies_in_kernel = (server_side.unacked_bytes + client_side.unread_bytes) as usize;
    let held_by_server = taken_in - replies_in_kernel;
    assert!(
        held_by_server <= HELD_BYTES_MAX,
        "the server holds {held_by_server} bytes of requests whose replies it keeps ({server_side:?}, \
         {client_side:?}, {written} written)"
    );
    // Its memory says the same.
    let stopped = latchkey_tests::process_memory(server.pid());
    assert!(
        stopped.resident_bytes < before.resident_bytes + MEMORY_GROWTH_MAX,
        "the server grew from {before:?} to {stopped:?} with {taken_in} request bytes taken in"
    );
    // Other connections are unaffected.
    let mut client = Client::connect(server.address).await.unwrap();
    client.ping().await.expect("other connections are unaffected");
    // Reading the replies lets it go on: exactly one empty OK per ping.
    let mut reply_bytes = 0usize;
    let mut buffer = vec![0u8; 64 * 1024];
    while reply_bytes < BURST_PINGS * PING.len() {
        let read = tokio::time::timeout(HANG_GUARD, replies.read(&mut buffer))
            .await
            .expect("replies stopped coming (hang guard)")
            .unwrap();
        assert_ne!(read, 0, "closed after {reply_bytes} reply bytes");
        assert!(buffer[..read].iter().all(|&byte| byte == 0), "a reply other than an empty OK");
        reply_bytes += read;
    }
    assert_eq!(reply_bytes, BURST_PINGS * PING.len());
    tokio::time::timeout(HANG_GUARD, writer).await.expect("the burst was never all written").unwrap();
    let after = latchkey_tests::process_memory(server.pid());
    assert!(
        after.resident_peak_bytes < before.resident_peak_bytes.max(before.resident_bytes) + MEMORY_GROWTH_MAX,
        "the server's peak grew from {before:?} to {after:?} over the burst"
    );
}

/// Request bytes a stalled connection may hold in the server: the read
/// buffer (it grows only up to one frame of at most 64 KiB) and four pings
/// in flight.
const HELD_BYTES_MAX: usize = 64 * 1024 + 4 * 8;

/// What a connection's buffers may add to the server's memory: its read
/// buffer and replies for the requests in flight are kilobytes; 16 MiB
/// leaves room for the allocator and is still far below the burst's 8 MB of
/// replies plus the bookkeeping an unbounded queue would need per request.
const MEMORY_GROWTH_MAX: u64 = 16 << 20;
