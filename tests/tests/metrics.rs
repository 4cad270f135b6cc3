//! `GET /metrics` end to end: `promtool check metrics` accepts a scrape
//! taken under load, and the counters move by exactly the traffic sent.
//!
//! promtool is Debian's `prometheus` package; without it the format test
//! skips with a message (a failure under CI).

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use latchkey_sdk::{Client, Expiry};
use latchkey_tests::http::{basic, bearer, request};
use latchkey_tests::{DataHome, ServerSpec, TestServer, skip};

/// Every sample of a scrape: `name{labels}` → value.
fn scrape(address: SocketAddr) -> (String, HashMap<String, f64>) {
    let response = request(address, "GET", "/metrics", &[], b"");
    assert_eq!(response.status, 200);
    let text = response.text();
    let samples = text
        .lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').expect("sample line");
            (series.to_owned(), value.parse().expect("sample value"))
        })
        .collect();
    (text, samples)
}

fn delta(before: &HashMap<String, f64>, after: &HashMap<String, f64>, series: &str) -> f64 {
    let value = |samples: &HashMap<String, f64>| samples.get(series).copied();
    after.get(series).unwrap_or_else(|| panic!("{series} missing from the scrape"));
    value(after).unwrap() - value(before).unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promtool_accepts_a_scrape_taken_under_load() {
    if Command::new("promtool").arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_err()
    {
        skip(
            "promtool is not installed",
            "apt-get install prometheus (promtool checks the exposition format)",
        );
        return;
    }
    let home = DataHome::new();
    let server = TestServer::start(&home, &ServerSpec::default_root());
    let http = server.http_address.unwrap();
    let mut client = Client::connect(server.address).await.unwrap();
    client.login_user("iggy", "iggy").await.unwrap();
    let token = client.create_personal_access_token("load", Expiry::Never).await.unwrap();
    let running = Arc::new(AtomicBool::new(true));
    let mut load = Vec::new();
    for _ in 0..4 {
        let (running, token, address) = (Arc::clone(&running), token.clone(), server.address);
        load.push(tokio::spawn(async move {
            let mut client = Client::connect(address).await.unwrap();
            while running.load(Ordering::Relaxed) {
                client.login_with_personal_access_token(&token).await.unwrap();
            }
        }));
    }
    let mut scrapes = Vec::new();
    for _ in 0..3 {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let forward = request(http, "GET", "/v1/auth/check", &[("Authorization", &bearer(&token))], b"");
        assert_eq!(forward.status, 200);
        scrapes.push(tokio::task::spawn_blocking(move || scrape(http).0).await.unwrap());
    }
    running.store(false, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
    for text in scrapes {
        let mut promtool = Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        promtool.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
        let output = promtool.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "promtool: {}{}\n{text}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(text.contains("latchkey_logins_total{method=\"token\",result=\"ok\"}"));
    }
}

#[tokio::test]
async fn counters_move_by_exactly_the_traffic_sent() {
    let home = DataHome::new();
    // No background writes between the scrapes: the last-use flush and the
    // cleaner would commit changes of their own.
    let spec = ServerSpec::default_root()
        .env("LATCHKEY_PERSONAL_ACCESS_TOKEN_LAST_USED_FLUSH_INTERVAL", "1day")
        .env("LATCHKEY_PERSONAL_ACCESS_TOKEN_CLEANER_ENABLED", "false");
    let server = TestServer::start(&home, &spec);
    let http = server.http_address.unwrap();
    let mut client = Client::connect(server.address).await.unwrap();
    client.login_user("iggy", "iggy").await.unwrap();
    let token = client.create_personal_access_token("counted", Expiry::Never).await.unwrap();
    let before = tokio::task::spawn_blocking(move || scrape(http).1).await.unwrap();

    for _ in 0..7 {
        let mut other = Client::connect(server.address).await.unwrap();
        other.login_with_personal_access_token(&token).await.unwrap();
    }
    for _ in 0..5 {
        let mut other = Client::connect(server.address).await.unwrap();
        assert!(other.login_user("iggy", "wrong-password").await.is_err());
    }
    let (token_for_http, unknown) = (token.clone(), common::unissued_token());
    tokio::task::spawn_blocking(move || {
        for _ in 0..4 {
            let allowed =
                request(http, "GET", "/v1/auth/check", &[("Authorization", &bearer(&token_for_http))], b"");
            assert_eq!(allowed.status, 200);
        }
        for _ in 0..3 {
            let denied = request(http, "GET", "/v1/auth/check", &[("Authorization", &bearer(&unknown))], b"");
            assert_eq!(denied.status, 401);
        }
        for name in ["made-1", "made-2"] {
            let body = format!("{{\"name\":\"{name}\"}}");
            let made = request(
                http,
                "POST",
                "/v1/tokens",
                &[("Authorization", &basic("iggy", "iggy"))],
                body.as_bytes(),
            );
            assert_eq!(made.status, 201);
        }
    })
    .await
    .unwrap();
    let after = tokio::task::spawn_blocking(move || scrape(http).1).await.unwrap();

    let moved = |series: &str| delta(&before, &after, series);
    assert_eq!(moved("latchkey_logins_total{method=\"token\",result=\"ok\"}"), 7.0);
    assert_eq!(moved("latchkey_logins_total{method=\"password\",result=\"failed\"}"), 5.0);
    // The two REST creates logged in with Basic.
    assert_eq!(moved("latchkey_logins_total{method=\"password\",result=\"ok\"}"), 2.0);
    assert_eq!(moved("latchkey_authorize_decisions_total{via=\"http\",decision=\"allowed\"}"), 4.0);
    assert_eq!(moved("latchkey_authorize_decisions_total{via=\"http\",decision=\"unknown\"}"), 3.0);
    assert_eq!(moved("latchkey_http_responses_total{route=\"auth_check\",code=\"2xx\"}"), 4.0);
    assert_eq!(moved("latchkey_http_responses_total{route=\"auth_check\",code=\"4xx\"}"), 3.0);
    assert_eq!(moved("latchkey_http_responses_total{route=\"tokens\",code=\"2xx\"}"), 2.0);
    assert_eq!(moved("latchkey_store_changes_committed_total"), 2.0);
    assert_eq!(after["latchkey_tokens{status=\"active\"}"], 3.0);
    assert_eq!(
        moved("latchkey_request_duration_seconds_count{command=\"login_with_personal_access_token\"}"),
        7.0
    );
}
