//! Running Latchkey as a service: systemd's readiness protocol (a
//! `NOTIFY_SOCKET` the test binds and reads) and JSON logs a pipeline can
//! parse, with the audit events' stable field names.

mod common;

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use latchkey_sdk::{Client, Expiry};
use latchkey_tests::{DataHome, ServerSpec, TestServer};

/// Every datagram that arrives on `socket` until `until` says it is enough
/// or the hang guard passes.
fn datagrams(socket: &UnixDatagram, until: impl Fn(&[String]) -> bool) -> Vec<String> {
    socket.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let deadline = Instant::now() + common::HANG_GUARD;
    let mut seen = Vec::new();
    let mut buffer = [0u8; 4096];
    while !until(&seen) && Instant::now() < deadline {
        if let Ok(read) = socket.recv(&mut buffer) {
            seen.push(String::from_utf8_lossy(&buffer[..read]).into_owned());
        }
    }
    seen
}

#[test]
fn systemd_hears_ready_watchdog_pets_and_stopping() {
    let home = DataHome::new();
    let path = home.dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    let spec = ServerSpec::default_root()
        .env("NOTIFY_SOCKET", path.to_str().unwrap())
        .env("WATCHDOG_USEC", "200000");
    let server = TestServer::start(&home, &spec);
    let pets = |seen: &[String]| seen.iter().filter(|message| *message == "WATCHDOG=1").count();
    let seen = datagrams(&socket, |seen| pets(seen) >= 3);
    assert!(seen[0].starts_with("READY=1"), "{seen:?}");
    assert!(pets(&seen) >= 3, "{seen:?}");
    let stopped = server.stop();
    assert_eq!(stopped.code(), Some(0));
    let rest = datagrams(&socket, |seen| seen.iter().any(|message| message.starts_with("STOPPING=1")));
    assert!(rest.iter().any(|message| message.starts_with("STOPPING=1")), "{rest:?}");
}

#[test]
fn an_abstract_notify_socket_works_too_and_no_socket_is_no_error() {
    let home = DataHome::new();
    let name = format!("latchkey-test-{}-{}", std::process::id(), common::random_bytes(4)[0]);
    let socket = {
        use std::os::linux::net::SocketAddrExt;
        let address = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        UnixDatagram::bind_addr(&address).unwrap()
    };
    let server =
        TestServer::start(&home, &ServerSpec::default_root().env("NOTIFY_SOCKET", &format!("@{name}")));
    let seen = datagrams(&socket, |seen| !seen.is_empty());
    assert!(seen.first().is_some_and(|message| message.starts_with("READY=1")), "{seen:?}");
    drop(server);
    // A socket nobody listens on: the server starts and serves all the same.
    let home = DataHome::new();
    let gone = home.dir.path().join("nobody.sock");
    let server =
        TestServer::start(&home, &ServerSpec::default_root().env("NOTIFY_SOCKET", gone.to_str().unwrap()));
    let deadline = Instant::now() + common::HANG_GUARD;
    while !server.logs().contains("cannot notify systemd") {
        assert!(Instant::now() < deadline, "the failed notification was not logged: {}", server.logs());
        std::thread::sleep(Duration::from_millis(20));
    }
    // It serves all the same.
    let health = latchkey_tests::http::request(server.http_address.unwrap(), "GET", "/readyz", &[], b"");
    assert_eq!(health.status, 200);
}

#[tokio::test]
async fn json_logs_carry_audit_events_with_stable_fields() {
    let home = DataHome::new();
    let spec =
        ServerSpec::default_root().env("LATCHKEY_LOG_FORMAT", "json").env("LATCHKEY_LOG", "info,audit=debug");
    let server = TestServer::start(&home, &spec);
    let mut client = Client::connect(server.address).await.unwrap();
    client.login_user("iggy", "iggy").await.unwrap();
    let token = client.create_personal_access_token("piped", Expiry::Never).await.unwrap();
    let mut other = Client::connect(server.address).await.unwrap();
    other.login_with_personal_access_token(&token).await.unwrap();
    assert!(Client::connect(server.address).await.unwrap().login_user("iggy", "wrong").await.is_err());
    let deadline = Instant::now() + common::HANG_GUARD;
    let events = loop {
        let lines: Vec<serde_json::Value> = server
            .logs()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not a JSON line: {line}")))
            .collect();
        let audit: Vec<serde_json::Value> =
            lines.into_iter().filter(|line| line["target"] == "audit").collect();
        // Every event this test waits for: the refused login's may reach
        // the log after the client has its answer.
        let logins = audit.iter().filter(|event| event["event"] == "login").count();
        let failed = audit.iter().any(|event| event["event"] == "login_failed");
        if (logins >= 2 && failed) || Instant::now() > deadline {
            break audit;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let find = |event: &str, method: &str| {
        events
            .iter()
            .find(|line| line["event"] == event && line["method"] == method)
            .unwrap_or_else(|| panic!("no {event}/{method} in {events:?}"))
            .clone()
    };
    let token_login = find("login", "token");
    assert_eq!(token_login["user_id"], 0);
    assert_eq!(token_login["token_name"], "piped");
    assert!(token_login["token_id"].is_u64() && token_login["peer"].is_string());
    assert_eq!(token_login["level"], "DEBUG");
    let created = events.iter().find(|line| line["event"] == "token_created").expect("token_created");
    assert_eq!(created["token_name"], "piped");
    let failed = find("login_failed", "password");
    assert_eq!((failed["username"].clone(), failed["level"].clone()), ("iggy".into(), "WARN".into()));
    let logs = server.logs();
    assert!(!logs.contains(&token) && !logs.contains("\"wrong\""), "a secret in the log");
}

/// A token login that finds no token names why in its audit event: the
/// server looks up anything of a token's length and prefix, and checks the
/// alphabet and checksum only after the miss.
#[tokio::test]
async fn a_token_login_miss_is_named_malformed_or_unknown() {
    let home = DataHome::new();
    let spec = ServerSpec::default_root().env("LATCHKEY_LOG_FORMAT", "json");
    let server = TestServer::start(&home, &spec);
    let mut client = Client::connect(server.address).await.unwrap();
    client.login_user("iggy", "iggy").await.unwrap();
    let deleted = client.create_personal_access_token("gone", Expiry::Never).await.unwrap();
    client.delete_personal_access_token("gone").await.unwrap();
    // The same length and prefix with the checksum's last digit changed.
    let last = if deleted.ends_with('0') { '1' } else { '0' };
    let mistyped = format!("{}{last}", &deleted[..deleted.len() - 1]);
    let short = &deleted[..deleted.len() - 1];
    let tries = [(short, "malformed"), (mistyped.as_str(), "malformed"), (deleted.as_str(), "unknown")];
    for (token, _) in &tries {
        let mut other = Client::connect(server.address).await.unwrap();
        assert!(other.login_with_personal_access_token(token).await.is_err(), "{token} logged in");
    }
    let deadline = Instant::now() + common::HANG_GUARD;
    let reasons = loop {
        let reasons: Vec<String> = server
            .logs()
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter(|line| line["event"] == "login_failed" && line["method"] == "token")
            .map(|line| line["reason"].as_str().unwrap_or_default().to_owned())
            .collect();
        if reasons.len() >= tries.len() || Instant::now() > deadline {
            break reasons;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let expected: Vec<&str> = tries.iter().map(|(_, reason)| *reason).collect();
    assert_eq!(reasons, expected);
}

#[test]
fn tokens_about_to_expire_are_announced_once_listed_and_counted() {
    use latchkey_tests::http::{basic, request};
    let home = DataHome::new();
    // A 60 s window is scanned every 6 s.
    let spec = ServerSpec::default_root().env("LATCHKEY_PERSONAL_ACCESS_TOKEN_EXPIRY_WARNING_WINDOW", "60s");
    let server = TestServer::start(&home, &spec);
    let http = server.http_address.unwrap();
    let auth = basic("iggy", "iggy");
    let make = |name: &str, expires_in: &str| {
        let body = format!("{{\"name\":\"{name}\",\"expires_in\":\"{expires_in}\"}}");
        let made = request(http, "POST", "/v1/tokens", &[("Authorization", &auth)], body.as_bytes());
        assert_eq!(made.status, 201, "{}", made.text());
    };
    // Long enough to stay active through the waits below on a slow machine.
    make("soon", "55s");
    make("later", "2h");
    make("never", "never");
    let announced = |name: &str| {
        server
            .logs()
            .lines()
            .filter(|line| {
                line.contains("event=\"token_expiring\"") && line.contains(&format!("token_name={name} "))
            })
            .count()
    };
    let deadline = Instant::now() + common::HANG_GUARD;
    while announced("soon") == 0 {
        assert!(Instant::now() < deadline, "no announcement: {}", server.logs());
        std::thread::sleep(Duration::from_millis(100));
    }
    // Two more scans: still announced once, and nothing else.
    std::thread::sleep(Duration::from_secs(13));
    assert_eq!(announced("soon"), 1, "{}", server.logs());
    assert_eq!(announced("later") + announced("never"), 0, "{}", server.logs());

    let names = |query: &str| {
        let listed = request(http, "GET", &format!("/v1/tokens?{query}"), &[("Authorization", &auth)], b"");
        assert_eq!(listed.status, 200, "{}", listed.text());
        listed.json()["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|token| token["name"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(names("expiring_within=2m"), ["soon"]);
    assert_eq!(names("expiring_within=3h"), ["soon", "later"]);
    let bad = request(http, "GET", "/v1/tokens?expiring_within=soon", &[("Authorization", &auth)], b"");
    assert_eq!(bad.status, 400);
    let metrics = request(http, "GET", "/metrics", &[], b"").text();
    assert!(metrics.lines().any(|line| line == "latchkey_tokens_expiring 1"), "{metrics}");
}
