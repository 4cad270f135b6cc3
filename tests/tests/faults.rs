//! Faults injected at named places (failpoints) of a server built with
//! `--features failpoints`: `FAILPOINTS=name=action` in its environment
//! (the `fail` crate's syntax, e.g. `1*off->panic`: pass once, then panic).
//! Run with
//! `cargo build -p latchkey-server --features failpoints && cargo test -p latchkey-tests --features failpoints --test faults`.

mod common;

use std::time::Duration;

use common::*;
use latchkey_sdk::Expiry;
use latchkey_tests::{DataHome, ServerSpec, TestServer};

/// How long a dying server may take to exit.
const EXIT_BOUND: Duration = Duration::from_secs(20);

fn failing(points: &str) -> ServerSpec {
    ServerSpec::default_root().env("FAILPOINTS", points)
}

/// The server panics where the failpoint says, or this binary has none.
fn assert_failpoints_built(server: &TestServer) {
    assert!(
        !server.logs().is_empty(),
        "no output from the server; is it built with `cargo build -p latchkey-server --features failpoints`?"
    );
}

#[tokio::test]
async fn a_writer_that_dies_stops_the_server_with_one_line_and_a_restart_keeps_what_was_acknowledged() {
    let home = DataHome::new();
    // The first commit goes through; the second panics inside the writer.
    let mut server = TestServer::start(&home, &failing("writer-commit=1*off->panic"));
    assert_failpoints_built(&server);
    let mut owner = root(server.address).await;
    let kept = owner.create_personal_access_token("kept", Expiry::Never).await.unwrap();
    let lost = owner.create_personal_access_token("lost", Expiry::Never).await;
    assert!(lost.is_err(), "a change the writer never committed was acknowledged: {lost:?}");
    let status = server.exited_within(EXIT_BOUND).unwrap_or_else(|| {
        panic!(
            "the server outlived its writer (a zombie; built with --features failpoints?)\n{}",
            server.logs()
        )
    });
    assert_eq!(status.code(), Some(70), "{}", server.logs());
    let logs = server.logs();
    let died: Vec<&str> = logs.lines().filter(|line| line.contains("thread died")).collect();
    assert_eq!(died.len(), 1, "one clear line: {}", server.logs());
    assert!(died[0].contains("writer"), "{}", died[0]);
    // A restart replays the log: what was acknowledged is there.
    let server = TestServer::start(&home, &ServerSpec::default_root());
    assert_eq!(status_of_login(server.address, &kept).await, 0);
    let names = token_names(&server).await;
    assert_eq!(names, ["kept"]);
}

#[tokio::test]
async fn a_connection_task_that_panics_gives_its_slots_back_and_others_are_served() {
    let home = DataHome::new();
    // One connection per address: a leaked slot would refuse the next one.
    let spec =
        failing("connection-request=1*off->1*panic->off").env("LATCHKEY_TCP_MAX_CONNECTIONS_PER_IP", "1");
    let mut server = TestServer::start(&home, &spec);
    assert_failpoints_built(&server);
    let mut doomed = connect(server.address).await;
    doomed.ping().await.unwrap();
    assert!(doomed.ping().await.is_err(), "the request the failpoint panics on was answered");
    drop(doomed);
    // The panicking task's admission slot comes back (a moment after its
    // socket closes, as the task finishes unwinding): a new connection from
    // the same address is admitted and served. A leaked slot never comes
    // back, so the bound only has to be generous.
    let deadline = std::time::Instant::now() + EXIT_BOUND;
    let mut next = loop {
        let mut client = connect(server.address).await;
        if client.ping().await.is_ok() {
            break client;
        }
        assert!(std::time::Instant::now() < deadline, "the panicking connection's slot never came back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(next.login_user("iggy", "iggy").await.unwrap(), 0);
    server.assert_running();
}

#[tokio::test]
async fn a_panicking_connection_still_hands_over_its_token_uses() {
    let home = DataHome::new();
    // Requests 1-4 pass (root's login and create, then two token logins on
    // one connection); the fifth, that connection's ping, panics.
    let server = TestServer::start(&home, &failing("connection-request=4*off->1*panic->off"));
    assert_failpoints_built(&server);
    let mut owner = root(server.address).await;
    let token = owner.create_token(&latchkey_sdk::NewToken::named("used")).await.unwrap();
    let mut doomed = connect(server.address).await;
    doomed.login_with_personal_access_token(&token.token).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    // A second use within a second of the first stays with the connection
    // (uses are handed over at most once a second while it is busy)...
    let second_use_after_us = now_us();
    doomed.login_with_personal_access_token(&token.token).await.unwrap();
    // ...until the connection ends: here by a panic.
    assert!(doomed.ping().await.is_err(), "the request the failpoint panics on was answered");
    drop(doomed);
    let deadline = std::time::Instant::now() + EXIT_BOUND;
    loop {
        let details = owner.get_token(token.id).await.unwrap();
        if details.last_used_at_us >= second_use_after_us {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the panicking connection's last token use was lost (last use at {} µs, second use after {} µs)",
            details.last_used_at_us,
            second_use_after_us
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_failed_append_refuses_every_later_write_keeps_serving_reads_and_loses_nothing_acknowledged() {
    let home = DataHome::new();
    let mut server = TestServer::start(&home, &failing("log-append=1*off->return"));
    assert_failpoints_built(&server);
    let mut owner = root(server.address).await;
    let kept = owner.create_personal_access_token("kept", Expiry::Never).await.unwrap();
    assert_eq!(status(owner.create_personal_access_token("refused", Expiry::Never).await), 20002);
    // After a failed sync the file's state is unknown: every later write is
    // refused without touching it, reads go on.
    assert_eq!(status(owner.create_personal_access_token("after", Expiry::Never).await), 20002);
    assert_eq!(status_of_login(server.address, &kept).await, 0);
    // Readiness says so: alive, but no longer able to do its job.
    let http = server.http_address.unwrap();
    let ready =
        tokio::task::spawn_blocking(move || latchkey_tests::http::request(http, "GET", "/readyz", &[], b""))
            .await
            .unwrap();
    assert_eq!(ready.status, 503, "{}", ready.text());
    assert!(ready.text().contains("writer"), "{}", ready.text());
    server.assert_running();
    assert_eq!(server.stop().code(), Some(0));
    let server = TestServer::start(&home, &ServerSpec::default_root());
    let names = token_names(&server).await;
    assert_eq!(names, ["kept"]);
}

#[tokio::test]
async fn a_failed_directory_sync_after_compaction_refuses_later_writes_and_loses_nothing_acknowledged() {
    let home = DataHome::new();
    // Compact early and often; the directory sync after the compacted file's
    // rename fails (EIO, as a dying disk would say).
    let spec = failing("compaction-dir-sync=return")
        .env("LATCHKEY_SYSTEM_COMPACTION_MIN_RECORDS", "20")
        .env("LATCHKEY_SYSTEM_COMPACTION_DEAD_RATIO", "0.1");
    let mut server = TestServer::start(&home, &spec);
    assert_failpoints_built(&server);
    let mut owner = root(server.address).await;
    let mut acknowledged = Vec::new();
    let mut refused = false;
    for round in 0..200 {
        let name = format!("churn-{round}");
        match status(owner.create_personal_access_token(&name, Expiry::Never).await) {
            0 => acknowledged.push(name.clone()),
            20002 => {
                refused = true;
                break;
            }
            other => panic!("create {name}: {other}"),
        }
        if round % 2 == 0 {
            match status(owner.delete_personal_access_token(&name).await) {
                0 => {
                    acknowledged.pop();
                }
                20002 => {
                    refused = true;
                    break;
                }
                other => panic!("delete {name}: {other}"),
            }
        }
    }
    assert!(refused, "no compaction ran into the failpoint\n{}", server.logs());
    // From then on every change is refused; reads go on.
    assert_eq!(status(owner.create_personal_access_token("after", Expiry::Never).await), 20002);
    assert!(owner.get_personal_access_tokens().await.is_ok());
    server.assert_running();
    assert_eq!(server.stop().code(), Some(0));
    // A restart re-reads whichever file the rename left: every acknowledged
    // token is there.
    let server = TestServer::start(&home, &ServerSpec::default_root());
    let names = token_names(&server).await;
    for name in &acknowledged {
        assert!(names.contains(name), "{name} was acknowledged but is gone: {names:?}");
    }
}

#[tokio::test]
async fn an_access_edit_or_a_reactivation_the_log_cannot_take_is_20002_and_changes_nothing() {
    use latchkey_sdk::{AccessEdit, NewToken, RotateExpiry, TokenStatus};

    let home = DataHome::new();
    // Two appends pass (the create, the revoke), then every one fails.
    let server = TestServer::start(&home, &failing("log-append=2*off->return"));
    assert_failpoints_built(&server);
    let mut owner = root(server.address).await;
    let token = NewToken::named("stays").with_scope("me:read");
    let issued = owner.create_token(&token).await.unwrap();
    owner.revoke_token(issued.id).await.unwrap();
    let edit = owner.edit_token_access(issued.id, [AccessEdit::ClearScopes]).await;
    assert_eq!(status(edit), 20002);
    assert_eq!(status(owner.reactivate_token(issued.id, RotateExpiry::Keep).await), 20002);
    // Nothing of either is visible, and a restart reads the same.
    let details = owner.get_token(issued.id).await.unwrap();
    assert_eq!(
        (details.status, details.scopes.as_slice()),
        (TokenStatus::Revoked, &["me:read".to_owned()][..])
    );
    drop(owner);
    assert_eq!(server.stop().code(), Some(0));
    let server = TestServer::start(&home, &ServerSpec::default_root());
    let details = root(server.address).await.get_token(issued.id).await.unwrap();
    assert_eq!(
        (details.status, details.scopes.as_slice()),
        (TokenStatus::Revoked, &["me:read".to_owned()][..])
    );
    assert_eq!(status_of_login(server.address, &issued.token).await, 20003);
}

/// A scrape counts every token (O(n)); with one worker thread, a count run
/// on it would hold every other connection until it ends. The failpoint
/// stretches the count to 6 s: a ping sent while it runs must be answered
/// within 4 s (it takes milliseconds; run on the worker, it would wait for
/// the whole count), while the scrape is still out, and the scrape must
/// still answer.
#[tokio::test]
async fn a_slow_metrics_scrape_holds_up_no_other_connection() {
    let home = DataHome::new();
    let spec = failing("metrics-render=sleep(6000)").env("LATCHKEY_SYSTEM_SHARDS", "1");
    let mut server = TestServer::start(&home, &spec);
    assert_failpoints_built(&server);
    let http = server.http_address.expect("the HTTP listener is on by default");
    let mut client = connect(server.address).await;
    client.ping().await.unwrap();
    let scrape = std::thread::spawn(move || latchkey_tests::http::request(http, "GET", "/metrics", &[], b""));
    // Time for the scrape to reach the count.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ping = tokio::time::timeout(Duration::from_secs(4), client.ping()).await;
    ping.expect("the ping waited for the scrape's count").unwrap();
    assert!(
        !scrape.is_finished(),
        "the scrape ended before the ping was answered: the failpoint did not hold it"
    );
    let metrics = scrape.join().unwrap();
    assert_eq!(metrics.status, 200);
    assert!(metrics.text().contains("latchkey_tokens"), "{}", metrics.text());
    server.assert_running();
}

/// The names of root's tokens on `server`.
async fn token_names(server: &TestServer) -> Vec<String> {
    let tokens = root(server.address).await.get_personal_access_tokens().await.unwrap();
    tokens.into_iter().map(|token| token.name).collect()
}

async fn status_of_login(address: std::net::SocketAddr, token: &str) -> u32 {
    status(connect(address).await.login_with_personal_access_token(token).await)
}

#[tokio::test]
async fn a_request_slower_than_the_idle_timeout_does_not_spend_it() {
    let home = DataHome::new();
    // Every request takes 1.5 s (the failpoint sleeps in the connection's
    // task), longer than the idle timeout: the timeout runs from when the
    // reply is written, so the next request, sent at once, is answered.
    let spec = failing("connection-request=sleep(1500)").env("LATCHKEY_TCP_IDLE_TIMEOUT", "1s");
    let server = TestServer::start(&home, &spec);
    assert_failpoints_built(&server);
    let mut client = root(server.address).await;
    client.ping().await.expect("the first ping");
    client.ping().await.expect("a connection was closed as idle while its request was being answered");
}
