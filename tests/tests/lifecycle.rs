//! Start-up and shutdown: root credentials, the data directory lock,
//! signals, the command line and configuration errors.

mod common;

use std::process::Command;

use common::*;
use latchkey_tests::{DataHome, ServerSpec, TestServer, server_binary};

const GENERATED_LINE: &str = "Generated root credentials (shown once, not stored): username iggy password ";

/// The password from the "Generated root credentials" line, if present.
fn generated_password(stderr: &str) -> Option<String> {
    let rest = stderr.split(GENERATED_LINE).nth(1)?;
    Some(rest.split_whitespace().next()?.to_owned())
}

#[tokio::test]
async fn root_username_without_password_refuses_to_start() {
    for (key, value) in
        [("LATCHKEY_ROOT_USERNAME", "rootuser"), ("LATCHKEY_ROOT_PASSWORD", "secret-password")]
    {
        let home = DataHome::new();
        let spec = ServerSpec::default().env(key, value);
        let exited = match TestServer::try_start(&home, &spec) {
            Ok(_) => panic!("started with only {key} set"),
            Err(exited) => exited,
        };
        assert!(!exited.status.success(), "exit status {}", exited.status);
        assert!(
            exited.stderr.contains("LATCHKEY_ROOT_USERNAME")
                && exited.stderr.contains("LATCHKEY_ROOT_PASSWORD"),
            "stderr does not name the variables:\n{}",
            exited.stderr
        );
        assert!(!exited.stdout.contains("listening on"), "{}", exited.stdout);
        // Nothing half-done was stored: a later proper start decides root.
        assert!(!home.data_dir().join("root.toml").exists());
    }
}

#[tokio::test]
async fn root_credentials_out_of_bounds_refuse_to_start() {
    for (username, password, named) in
        [("ro", "long-enough", "LATCHKEY_ROOT_USERNAME"), ("rootuser", "pw", "LATCHKEY_ROOT_PASSWORD")]
    {
        let home = DataHome::new();
        let spec = ServerSpec::default()
            .env("LATCHKEY_ROOT_USERNAME", username)
            .env("LATCHKEY_ROOT_PASSWORD", password);
        let exited = match TestServer::try_start(&home, &spec) {
            Ok(_) => panic!("started with root {username:?}/{password:?}"),
            Err(exited) => exited,
        };
        assert!(!exited.status.success());
        assert!(exited.stderr.contains(named), "{}", exited.stderr);
    }
}

#[tokio::test]
async fn without_credentials_a_generated_root_password_is_shown_once_and_works() {
    let home = DataHome::new();
    let server = TestServer::start(&home, &ServerSpec::default());
    let stderr = wait_for_stderr(&server, |stderr| generated_password(stderr).is_some());
    let password = generated_password(&stderr).unwrap();
    assert_eq!(password.len(), 24, "generated password {password:?}");
    assert!(password.bytes().all(|b| b.is_ascii_alphanumeric()));
    // Shown on stderr only: never in the log, never on disk.
    assert!(!server.logs().contains(&password));

    let mut client = connect(server.address).await;
    assert_eq!(status(client.login_user("iggy", "iggy").await), 42);
    assert_eq!(client.login_user("iggy", &password).await.unwrap(), 0);
    drop(client);
    assert_eq!(server.stop().code(), Some(0));
    for (path, bytes) in latchkey_tests::read_tree(&home.data_dir()) {
        assert!(
            !latchkey_tests::contains(&bytes, password.as_bytes()),
            "generated password stored in {}",
            path.display()
        );
    }

    // A restart keeps it and does not print a new one.
    let server = TestServer::start(&home, &ServerSpec::default());
    let mut client = connect(server.address).await;
    assert_eq!(client.login_user("iggy", &password).await.unwrap(), 0);
    assert!(!server.stderr().contains("Generated root credentials"), "{}", server.stderr());
}

#[tokio::test]
async fn restarting_with_other_root_credentials_keeps_the_first_and_warns() {
    let home = DataHome::new();
    let first = ServerSpec::default()
        .env("LATCHKEY_ROOT_USERNAME", "firstroot")
        .env("LATCHKEY_ROOT_PASSWORD", "first-password");
    let server = TestServer::start(&home, &first);
    assert!(!server.logs().contains("ignored"), "{}", server.logs());
    assert_eq!(server.stop().code(), Some(0));

    let second = ServerSpec::default()
        .env("LATCHKEY_ROOT_USERNAME", "secondroot")
        .env("LATCHKEY_ROOT_PASSWORD", "second-password");
    let server = TestServer::start(&home, &second);
    let logs = server.logs();
    assert!(
        logs.contains("WARN") && logs.contains("root credentials already exist"),
        "no warning about the ignored credentials:\n{logs}"
    );
    assert!(!logs.contains("second-password"));
    let mut client = connect(server.address).await;
    assert_eq!(status(client.login_user("secondroot", "second-password").await), 42);
    assert_eq!(client.login_user("firstroot", "first-password").await.unwrap(), 0);
    drop(client);
    assert_eq!(server.stop().code(), Some(0));

    // The default-credentials flag does not override them either.
    let server = TestServer::start(&home, &ServerSpec::default_root());
    assert!(server.logs().contains("root credentials already exist"), "{}", server.logs());
    let mut client = connect(server.address).await;
    assert_eq!(status(client.login_user("iggy", "iggy").await), 42);
    assert_eq!(client.login_user("firstroot", "first-password").await.unwrap(), 0);
}

#[tokio::test]
async fn a_second_server_on_the_same_data_dir_refuses_to_start() {
    let home = DataHome::new();
    let first = TestServer::start(&home, &ServerSpec::default_root());
    let mut client = root(first.address).await;

    let exited = match TestServer::try_start(&home, &ServerSpec::default_root()) {
        Ok(second) => panic!("a second server started on {}", second.data_dir.display()),
        Err(exited) => exited,
    };
    assert!(!exited.status.success(), "exit status {}", exited.status);
    assert!(
        exited.stderr.contains("in use"),
        "stderr does not say the data directory is in use:\n{}",
        exited.stderr
    );
    assert!(
        exited.stderr.contains(&home.data_dir().display().to_string()),
        "stderr does not name the data directory:\n{}",
        exited.stderr
    );
    assert!(!exited.stdout.contains("listening on"));

    // The first one is unaffected: same session, new sessions.
    client.create_personal_access_token("still-here", latchkey_sdk::Expiry::Never).await.unwrap();
    let mut other = root(first.address).await;
    assert_eq!(other.get_personal_access_tokens().await.unwrap().len(), 1);
    drop((client, other));
    assert_eq!(first.stop().code(), Some(0));

    // Once the first has stopped, the directory is free again.
    let again = TestServer::start(&home, &ServerSpec::default_root());
    root(again.address).await.ping().await.unwrap();
}

#[tokio::test]
async fn sigint_and_sigterm_both_exit_0_even_with_open_sessions() {
    for signal in [libc::SIGINT, libc::SIGTERM] {
        let home = DataHome::new();
        let server = TestServer::start(&home, &ServerSpec::default_root());
        // One idle logged-in session, one idle anonymous connection.
        let mut client = root(server.address).await;
        client.ping().await.unwrap();
        let mut idle = Raw::connect(server.address).await;
        assert_eq!(idle.status(PING, &[]).await, 0);
        let status = server.stop_with(signal);
        assert_eq!(status.code(), Some(0), "signal {signal}: {status}");
        // The server closed the connections it had.
        assert!(idle.read_until_closed().await.is_empty());
    }
}

#[test]
fn version_flag_prints_the_version() {
    let output =
        Command::new(server_binary()).arg("--version").output().expect("run latchkey-server --version");
    assert!(output.status.success());
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert_eq!(stdout.trim(), format!("latchkey-server {}", env!("CARGO_PKG_VERSION")));
}

/// Runs `latchkey-server hash-password` with `input` on stdin.
fn hash_password_command(input: &str) -> std::process::Output {
    latchkey_tests::hash_password_command(&server_binary(), input)
}

#[tokio::test]
async fn hash_password_prints_an_argon2id_hash_usable_in_the_config() {
    use argon2::PasswordVerifier;
    use argon2::password_hash::PasswordHash;

    let output = hash_password_command("hashed-password\n");
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8(output.stdout).unwrap();
    let hash = stdout.trim();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(!stdout.contains("hashed-password"));
    let parsed = PasswordHash::new(hash).unwrap();
    assert!(argon2::Argon2::default().verify_password(b"hashed-password", &parsed).is_ok());
    // The trailing newline is not part of the password.
    assert!(argon2::Argon2::default().verify_password(b"hashed-password\n", &parsed).is_err());
    // Two runs salt differently.
    let again = hash_password_command("hashed-password\n");
    assert_ne!(String::from_utf8(again.stdout).unwrap().trim(), hash);

    // The printed hash works as a [[users]] entry.
    let home = DataHome::new();
    let config = format!("[[users]]\nid = 11\nusername = \"grace\"\npassword_hash = \"{hash}\"\n");
    let server = TestServer::start(&home, &ServerSpec::default_root().config(&config));
    let mut client = connect(server.address).await;
    assert_eq!(client.login_user("grace", "hashed-password").await.unwrap(), 11);
}

#[test]
fn hash_password_refuses_a_password_out_of_bounds() {
    for input in ["pw\n", "\n", &format!("{}\n", "p".repeat(101))] {
        let output = hash_password_command(input);
        assert!(!output.status.success(), "{input:?} accepted");
        assert!(output.stdout.is_empty());
    }
}

#[tokio::test]
async fn an_invalid_env_value_stops_the_start_naming_the_key() {
    for (key, value) in [
        ("LATCHKEY_SYSTEM_SHARDS", "many"),
        ("LATCHKEY_TCP_MAX_FRAME_SIZE", "-1"),
        ("LATCHKEY_PERSONAL_ACCESS_TOKEN_CLEANER_INTERVAL", "soon"),
        ("LATCHKEY_PERSONAL_ACCESS_TOKEN_CLEANER_ENABLED", "maybe"),
    ] {
        let home = DataHome::new();
        let spec = ServerSpec::default_root().env(key, value);
        let exited = match TestServer::try_start(&home, &spec) {
            Ok(_) => panic!("started with {key}={value}"),
            Err(exited) => exited,
        };
        assert!(!exited.status.success());
        assert!(exited.stderr.contains(key), "stderr does not name {key}:\n{}", exited.stderr);
        assert!(!exited.stdout.contains("listening on"));
    }
}

#[tokio::test]
async fn invalid_config_values_stop_the_start_naming_the_key() {
    let configs: [(&str, &str); 7] = [
        ("[personal_access_token]\nmax_tokens_per_user = 0\n", "max_tokens_per_user"),
        ("[tcp]\nadress = \"127.0.0.1:1\"\n", "adress"),
        ("[system]\nshards = \"four\"\n", "shards"),
        ("[[users]]\nid = 0\nusername = \"zero\"\npassword_hash = \"$argon2id$x\"\n", "zero"),
        // The default root is "iggy": a config user may not take that name.
        (
            &users_config(&[TestUser { id: 1, username: "iggy", password: "other-password", active: true }]),
            "iggy",
        ),
        // Ids are unique.
        (
            &users_config(&[
                TestUser { id: 4, username: "heidi", password: "heidi-password", active: true },
                TestUser { id: 4, username: "ivan", password: "ivan-password", active: true },
            ]),
            "id 4",
        ),
        // A password_hash that is not a PHC string (a plain password, say).
        ("[[users]]\nid = 2\nusername = \"judy\"\npassword_hash = \"judy-password\"\n", "judy"),
    ];
    for (config, named) in configs {
        let home = DataHome::new();
        let spec = ServerSpec::default_root().config(config);
        let exited = match TestServer::try_start(&home, &spec) {
            Ok(_) => panic!("started with config {config:?}"),
            Err(exited) => exited,
        };
        assert!(!exited.status.success());
        assert!(exited.stderr.contains(named), "stderr does not name {named}:\n{}", exited.stderr);
    }
}

#[tokio::test]
async fn env_overrides_the_config_file() {
    let home = DataHome::new();
    let spec = ServerSpec::default_root()
        .config("[personal_access_token]\nmax_tokens_per_user = 1\n")
        .env("LATCHKEY_PERSONAL_ACCESS_TOKEN_MAX_TOKENS_PER_USER", "2");
    let server = TestServer::start(&home, &spec);
    let mut client = root(server.address).await;
    for name in ["one", "two"] {
        client.create_personal_access_token(name, latchkey_sdk::Expiry::Never).await.unwrap();
    }
    assert_eq!(status(client.create_personal_access_token("three", latchkey_sdk::Expiry::Never).await), 52);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_during_a_create_storm_exits_0_and_refuses_no_request() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    let home = DataHome::new();
    let spec = ServerSpec::default_root()
        .env("LATCHKEY_SYSTEM_SHARDS", "4")
        .env("LATCHKEY_PERSONAL_ACCESS_TOKEN_MAX_TOKENS_PER_USER", "1000000");
    let server = TestServer::start(&home, &spec);
    let created = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for connection in 0..8 {
        let mut client = root(server.address).await;
        let created = Arc::clone(&created);
        tasks.push(tokio::spawn(async move {
            for index in 0.. {
                let name = format!("storm-{connection}-{index}");
                match client.create_personal_access_token(&name, latchkey_sdk::Expiry::Never).await {
                    Ok(_) => {
                        created.fetch_add(1, Ordering::Relaxed);
                    }
                    // Shutdown may close the connection; it must never turn
                    // an accepted request into an error status.
                    Err(latchkey_sdk::Error::Server { code, .. }) => {
                        panic!("create {name} refused with {code} during shutdown")
                    }
                    Err(_) => return,
                }
            }
        }));
    }
    while created.load(Ordering::Relaxed) < 50 {
        assert!(
            !tasks.iter().all(|task| task.is_finished()),
            "every storm connection ended before the shutdown"
        );
        tokio::task::yield_now().await;
    }
    let status = server.stop();
    assert_eq!(status.code(), Some(0), "{status}");
    for task in tasks {
        task.await.expect("a create was refused during shutdown");
    }
}

#[tokio::test]
async fn tokens_survive_a_graceful_restart_and_deletes_stay_deleted() {
    let home = DataHome::new();
    let server = TestServer::start(&home, &ServerSpec::default_root());
    let mut client = root(server.address).await;
    let kept = client.create_personal_access_token("kept", latchkey_sdk::Expiry::Never).await.unwrap();
    let dropped = client.create_personal_access_token("dropped", latchkey_sdk::Expiry::Never).await.unwrap();
    client.delete_personal_access_token("dropped").await.unwrap();
    let listed_before = client.get_personal_access_tokens().await.unwrap();
    drop(client);
    assert_eq!(server.stop().code(), Some(0));

    let server = TestServer::start(&home, &ServerSpec::default_root());
    let mut client = connect(server.address).await;
    assert_eq!(client.login_with_personal_access_token(&kept).await.unwrap(), 0);
    assert_eq!(status(client.login_with_personal_access_token(&dropped).await), 20);
    assert_eq!(client.get_personal_access_tokens().await.unwrap(), listed_before);
    // The name of a surviving token is still taken.
    assert_eq!(status(client.create_personal_access_token("kept", latchkey_sdk::Expiry::Never).await), 51);
}

/// A `[[users]]` entry "slow" whose password check takes a second or more:
/// 64 MiB and 16 passes, set in the PHC string the server verifies with.
fn slow_user() -> String {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let params = argon2::Params::new(64 * 1024, 16, 1, None).unwrap();
    let argon2 = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let salt = SaltString::encode_b64(b"latchkey-slow-01").unwrap();
    let hash = argon2.hash_password(b"slow-password", &salt).unwrap();
    format!("[[users]]\nid = 1\nusername = \"slow\"\npassword_hash = \"{hash}\"\n")
}

/// Starts a server with `shutdown_timeout`, sends a password login for
/// "slow", and once the server has read it (its check is running) sends
/// SIGTERM. Returns what the client received until the close, and how the
/// server ended.
async fn sigterm_during_a_slow_login(shutdown_timeout: &str) -> (Vec<u8>, latchkey_tests::Exited) {
    let home = DataHome::new();
    let spec = ServerSpec::default_root()
        .config(&slow_user())
        .env("LATCHKEY_SYSTEM_SHUTDOWN_TIMEOUT", shutdown_timeout)
        .env("LATCHKEY_SYSTEM_PASSWORD_THREADS", "1");
    let server = TestServer::start(&home, &spec);
    let mut raw = Raw::connect(server.address).await;
    raw.write(&frame(LOGIN_USER, &login_body(b"slow", b"slow-password"))).await;
    wait_until_read_by_server(&raw.stream).await;
    let stopping = tokio::task::spawn_blocking(move || server.stop_with_output(libc::SIGTERM));
    let received = raw.read_until_closed().await;
    let exited = tokio::time::timeout(HANG_GUARD, stopping).await.expect("the server never exited").unwrap();
    (received, exited)
}

#[tokio::test]
async fn sigterm_answers_a_request_in_flight_within_the_shutdown_timeout() {
    let (received, exited) = sigterm_during_a_slow_login("1 min").await;
    // The login's reply (user id 1), then the close: nothing after it.
    assert_eq!(received, [0, 0, 0, 0, 4, 0, 0, 0, 1, 0, 0, 0], "{}", exited.stdout);
    assert_eq!(exited.status.code(), Some(0), "{}", exited.stdout);
    assert!(!exited.stdout.contains("shutdown timeout reached"), "{}", exited.stdout);
    assert!(exited.stdout.contains("stopped"), "{}", exited.stdout);
}

#[tokio::test]
async fn past_the_shutdown_timeout_a_request_in_flight_is_dropped() {
    // 100 ms against a check of a second or more (its cost is set in the hash).
    let (received, exited) = sigterm_during_a_slow_login("100 ms").await;
    assert!(received.is_empty(), "a reply after the shutdown timeout: {received:?}");
    assert_eq!(exited.status.code(), Some(0), "{}", exited.stdout);
    assert!(
        exited.stdout.contains("shutdown timeout reached; dropping open connections"),
        "{}",
        exited.stdout
    );
    assert!(exited.stdout.contains("stopped"), "{}", exited.stdout);
}
