//! Many connections at once: the per-user limit under concurrent creates, and
//! a change made on one shard visible on every other at once.

mod common;

use std::net::SocketAddr;

use common::*;
use latchkey_sdk::{Client, Expiry};
use latchkey_tests::{DataHome, ServerSpec, TestServer};

const CONNECTIONS: usize = 32;
const LIMIT: usize = 10;

/// Opens `count` connections, each logged in as root by password.
async fn logged_in_connections(address: SocketAddr, count: usize) -> Vec<Client> {
    let tasks: Vec<_> = (0..count).map(|_| tokio::spawn(async move { root(address).await })).collect();
    let mut clients = Vec::with_capacity(count);
    for task in tasks {
        clients.push(task.await.expect("login task"));
    }
    clients
}

/// 32 concurrent creates with distinct names against a limit of 10.
async fn concurrent_creates_respect_the_limit(spec: ServerSpec) {
    let home = DataHome::new();
    let spec = spec.env("LATCHKEY_PERSONAL_ACCESS_TOKEN_MAX_TOKENS_PER_USER", &LIMIT.to_string());
    let server = TestServer::start(&home, &spec);
    // Log every connection in first, so the creates themselves race.
    let clients = logged_in_connections(server.address, CONNECTIONS).await;
    let tasks: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(index, mut client)| {
            tokio::spawn(async move {
                let name = format!("concurrent-{index:02}");
                let result = client.create_personal_access_token(&name, Expiry::Never).await;
                (name, result.map_err(|e| status::<()>(Err(e))))
            })
        })
        .collect();
    let mut created = Vec::new();
    let mut refused = Vec::new();
    for task in tasks {
        match task.await.expect("create task") {
            (name, Ok(token)) => created.push((name, token)),
            (_, Err(code)) => refused.push(code),
        }
    }
    assert_eq!(created.len(), LIMIT, "successes; refusals: {refused:?}");
    assert_eq!(refused.len(), CONNECTIONS - LIMIT);
    assert!(refused.iter().all(|&code| code == 52), "{refused:?}");

    let mut client = root(server.address).await;
    let mut listed: Vec<String> =
        client.get_personal_access_tokens().await.unwrap().into_iter().map(|e| e.name).collect();
    listed.sort();
    let mut expected: Vec<String> = created.iter().map(|(name, _)| name.clone()).collect();
    expected.sort();
    assert_eq!(listed, expected, "the list holds exactly the successful creates");
    // Every returned token works, and they are all distinct.
    let mut tokens: Vec<&String> = created.iter().map(|(_, token)| token).collect();
    tokens.sort();
    tokens.dedup();
    assert_eq!(tokens.len(), LIMIT);
    for token in tokens {
        assert_eq!(client.login_with_personal_access_token(token).await.unwrap(), 0);
    }
    assert_eq!(status(client.create_personal_access_token("one-more", Expiry::Never).await), 52);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_creates_yield_exactly_the_limit() {
    concurrent_creates_respect_the_limit(ServerSpec::default_root()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_creates_yield_exactly_the_limit_on_four_shards() {
    concurrent_creates_respect_the_limit(ServerSpec::default_root().env("LATCHKEY_SYSTEM_SHARDS", "4")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_creates_of_one_name_yield_one_token() {
    let home = DataHome::new();
    let server = TestServer::start(&home, &ServerSpec::default_root().env("LATCHKEY_SYSTEM_SHARDS", "4"));
    let clients = logged_in_connections(server.address, 8).await;
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|mut client| {
            tokio::spawn(async move {
                status(client.create_personal_access_token("same-name", Expiry::Never).await)
            })
        })
        .collect();
    let mut codes = Vec::new();
    for task in tasks {
        codes.push(task.await.unwrap());
    }
    codes.sort();
    assert_eq!(codes, [0, 51, 51, 51, 51, 51, 51, 51]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_deletes_of_one_name_succeed_once() {
    let home = DataHome::new();
    let spec = ServerSpec::default_root().env("LATCHKEY_SYSTEM_SHARDS", "4");
    let server = TestServer::start(&home, &spec);
    let mut clients = logged_in_connections(server.address, 8).await;
    let token = clients[0].create_personal_access_token("delete-race", Expiry::Never).await.unwrap();
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|mut client| {
            tokio::spawn(async move { status(client.delete_personal_access_token("delete-race").await) })
        })
        .collect();
    let mut codes = Vec::new();
    for task in tasks {
        codes.push(task.await.unwrap());
    }
    codes.sort();
    assert_eq!(codes, [0, 20, 20, 20, 20, 20, 20, 20]);
    let mut client = connect(server.address).await;
    assert_eq!(status(client.login_with_personal_access_token(&token).await), 20);
}

/// Memory of one Argon2 check of [`heavy_user`]'s password: 64 MiB, which
/// the check fills block by block and frees when it ends.
const CHECK_BYTES: u64 = 64 << 20;
const CHECK_KIB: u32 = (CHECK_BYTES >> 10) as u32;

/// A `[[users]]` entry whose hash asks for [`CHECK_BYTES`] per check (the
/// parameters live in the PHC string), so every password check the server
/// runs shows in its resident memory.
fn heavy_user() -> String {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let params = argon2::Params::new(CHECK_KIB, 1, 1, None).unwrap();
    let argon2 = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let salt = SaltString::encode_b64(b"latchkey-heavy-1").unwrap();
    let hash = argon2.hash_password(b"heavy-password", &salt).unwrap();
    format!("[[users]]\nid = 1\nusername = \"heavy\"\npassword_hash = \"{hash}\"\n")
}

/// Twelve password logins at once, a third of them wrong, against a server
/// with `threads` and `queue`: every one is answered rightly (the bounds
/// make logins wait, never fail) and the connection stays usable. Returns
/// how many checks' worth of memory the server held at its peak.
async fn checks_resident_at_once(threads: usize, queue: usize) -> f64 {
    let home = DataHome::new();
    let spec = ServerSpec::default_root()
        .config(&heavy_user())
        .env("LATCHKEY_SYSTEM_PASSWORD_THREADS", &threads.to_string())
        .env("LATCHKEY_SYSTEM_PASSWORD_QUEUE", &queue.to_string());
    let server = TestServer::start(&home, &spec);
    let address = server.address;
    let before = latchkey_tests::process_memory(server.pid());
    let tasks: Vec<_> = (0..12)
        .map(|index| {
            tokio::spawn(async move {
                let mut client = connect(address).await;
                let password = if index % 3 == 0 { "wrong" } else { "heavy-password" };
                let code = status(client.login_user("heavy", password).await);
                client.ping().await.unwrap();
                (password, code)
            })
        })
        .collect();
    for task in tasks {
        let (password, code) = task.await.unwrap();
        let want = if password == "heavy-password" { 0 } else { 42 };
        assert_eq!(code, want, "login with {password:?}");
    }
    let after = latchkey_tests::process_memory(server.pid());
    // The peak since start covers the server's own start-up too, which
    // needs far less than one check.
    assert!(before.resident_peak_bytes < before.resident_bytes + CHECK_BYTES / 2, "{before:?}");
    after.resident_peak_bytes.saturating_sub(before.resident_bytes) as f64 / CHECK_BYTES as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_password_thread_runs_one_check_at_a_time() {
    let checks = checks_resident_at_once(1, 64).await;
    assert!((0.5..1.5).contains(&checks), "{checks:.2} checks' memory at the peak");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_password_queue_of_one_admits_one_check_at_a_time_whatever_the_threads() {
    let checks = checks_resident_at_once(4, 1).await;
    assert!((0.5..1.5).contains(&checks), "{checks:.2} checks' memory at the peak");
}

/// The control: with room for four checks the same measurement sees more
/// than one at once, so the two tests above can fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_the_bounds_several_checks_run_at_once() {
    let checks = checks_resident_at_once(4, 64).await;
    assert!(checks >= 1.5, "{checks:.2} checks' memory at the peak");
}

const FRESH_CONNECTIONS: usize = 50;

/// PAT-logs in on `count` fresh connections at once (all kept open, so they
/// spread over every shard); returns each status.
async fn token_logins(address: SocketAddr, token: &str, count: usize) -> Vec<u32> {
    let mut clients = Vec::with_capacity(count);
    for _ in 0..count {
        clients.push(connect(address).await);
    }
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|mut client| {
            let token = token.to_owned();
            tokio::spawn(async move {
                let result = client.login_with_personal_access_token(&token).await;
                (status(result), client)
            })
        })
        .collect();
    let mut codes = Vec::with_capacity(count);
    let mut keep = Vec::with_capacity(count);
    for task in tasks {
        let (code, client) = task.await.unwrap();
        codes.push(code);
        keep.push(client);
    }
    codes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_token_is_usable_on_every_shard_at_once_and_its_delete_too() {
    let home = DataHome::new();
    let spec = ServerSpec::default_root().env("LATCHKEY_SYSTEM_SHARDS", "4");
    let server = TestServer::start(&home, &spec);
    assert!(
        server.logs().contains("shards=4") || server.logs().contains("shards: 4"),
        "server did not start 4 shards:\n{}",
        server.logs()
    );
    let mut owner = root(server.address).await;
    let token = owner.create_personal_access_token("everywhere", Expiry::Never).await.unwrap();
    // As soon as the create is answered, every shard knows the token.
    let codes = token_logins(server.address, &token, FRESH_CONNECTIONS).await;
    assert_eq!(codes, vec![0; FRESH_CONNECTIONS]);

    owner.delete_personal_access_token("everywhere").await.unwrap();
    // As soon as the delete is answered, no shard accepts it.
    let codes = token_logins(server.address, &token, FRESH_CONNECTIONS).await;
    assert_eq!(codes, vec![20; FRESH_CONNECTIONS]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn interleaved_creates_and_logins_across_shards() {
    let home = DataHome::new();
    let spec = ServerSpec::default_root().env("LATCHKEY_SYSTEM_SHARDS", "4");
    let server = TestServer::start(&home, &spec);
    // Connections pinned to different shards by round-robin; each creates a
    // token and the next one logs in with it right away.
    let mut clients = logged_in_connections(server.address, 4).await;
    for round in 0..8 {
        let creator = round % clients.len();
        let name = format!("round-{round}");
        let token = clients[creator].create_personal_access_token(&name, Expiry::Never).await.unwrap();
        let reader = (creator + 1) % clients.len();
        assert_eq!(
            clients[reader].login_with_personal_access_token(&token).await.unwrap(),
            0,
            "round {round}"
        );
        clients[reader].delete_personal_access_token(&name).await.unwrap();
        let third = (creator + 2) % clients.len();
        assert_eq!(
            status(clients[third].login_with_personal_access_token(&token).await),
            20,
            "round {round}"
        );
    }
}
