//! Connection limits, timeouts, backpressure and failed-login throttling,
//! against the real binary.

use std::time::Duration;

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
    assert!(server.logs().contains("login_throttled"), "{}", server.logs());
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

#[tokio::test]
async fn a_silent_connection_is_closed_at_the_login_timeout_and_a_logged_in_one_at_the_idle_timeout() {
    let home = DataHome::new();
    let spec = ServerSpec::default_root()
        .env("LATCHKEY_TCP_LOGIN_TIMEOUT", "300ms")
        .env("LATCHKEY_TCP_IDLE_TIMEOUT", "600ms");
    let server = TestServer::start(&home, &spec);
    // Sends nothing at all: closed (the framing is not even known yet).
    let mut silent = TcpStream::connect(server.address).await.unwrap();
    assert!(closed_by_server(&mut silent, Duration::from_secs(5)).await);
    // Pings but never logs in: pings do not extend the login timeout.
    let mut pinger = TcpStream::connect(server.address).await.unwrap();
    let mut closed = false;
    for _ in 0..40 {
        if pinger.write_all(&PING).await.is_err() {
            closed = true;
            break;
        }
        let mut reply = [0u8; 8];
        match tokio::time::timeout(Duration::from_secs(2), pinger.read_exact(&mut reply)).await {
            Ok(Ok(_)) => tokio::time::sleep(Duration::from_millis(50)).await,
            _ => {
                closed = true;
                break;
            }
        }
    }
    assert!(closed, "a connection that never logs in must be closed");
    // Logged in and then quiet: closed at the idle timeout, not the login one.
    let mut client = Client::connect(server.address).await.unwrap();
    client.login_user("iggy", "iggy").await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    client.ping().await.expect("still open after the login timeout: it is logged in");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(client.ping().await.is_err(), "an idle logged-in connection must be closed");
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
    assert!(closed_by_server(&mut fourth, Duration::from_secs(5)).await);
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

#[tokio::test]
async fn a_client_that_pipelines_without_reading_meets_backpressure_not_an_unbounded_buffer() {
    let home = DataHome::new();
    let spec = ServerSpec::default_root().env("LATCHKEY_TCP_MAX_REQUESTS_IN_FLIGHT", "4");
    let server = TestServer::start(&home, &spec);
    let mut stream = TcpStream::connect(server.address).await.unwrap();
    // 16,000,000 pings (128 MB, more than the four socket buffers between us
    // can hold) without reading a byte: the server answers
    // while the socket buffers take it, then stops reading.
    let burst = PING.repeat(16_000_000);
    let written = tokio::time::timeout(Duration::from_secs(3), stream.write_all(&burst)).await;
    assert!(written.is_err(), "the server must stop reading when its replies are not read");
    // Reading the replies lets it go on; every reply is an empty OK, in order.
    let mut client = Client::connect(server.address).await.unwrap();
    client.ping().await.expect("other connections are unaffected");
    let mut reply = vec![0u8; 8 * 1000];
    stream.read_exact(&mut reply).await.unwrap();
    assert!(reply.iter().all(|&byte| byte == 0));
}
