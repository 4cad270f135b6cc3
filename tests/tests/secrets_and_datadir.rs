//! No secret (root password, raw token) ever reaches the data directory, the
//! log or stderr; the data directory and its secret files are private.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use common::*;
use latchkey_sdk::Expiry;
use latchkey_tests::{DataHome, ServerSpec, TestServer, contains, read_tree};

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).permissions().mode() & 0o777
}

/// Fails naming the place if `secret` occurs in `haystack`.
fn assert_absent(haystack: &[u8], secret: &str, what: &str, place: &str) {
    assert!(!contains(haystack, secret.as_bytes()), "{what} found in {place}");
}

#[tokio::test]
async fn no_password_or_token_reaches_disk_logs_or_stderr() {
    let home = DataHome::new();
    let password = random_alphanumeric(24);
    let spec = ServerSpec::default()
        .env("LATCHKEY_ROOT_USERNAME", "rootuser")
        .env("LATCHKEY_ROOT_PASSWORD", &password)
        .env("LATCHKEY_LOG", "trace");
    let server = TestServer::start(&home, &spec);

    let mut client = connect(server.address).await;
    assert_eq!(client.login_user("rootuser", &password).await.unwrap(), 0);
    let mut tokens = Vec::new();
    for (name, expiry) in [
        ("never", Expiry::Never),
        ("default", Expiry::ServerDefault),
        ("hour", Expiry::After(Duration::from_secs(3600))),
        ("micro", Expiry::After(Duration::from_micros(1))),
    ] {
        tokens.push(client.create_personal_access_token(name, expiry).await.unwrap());
    }
    let mut other = connect(server.address).await;
    for token in &tokens[..3] {
        assert_eq!(other.login_with_personal_access_token(token).await.unwrap(), 0);
    }
    assert_eq!(status(other.login_with_personal_access_token(&tokens[3]).await), 54);
    // Refused attempts that carry secrets: a mistyped token (bad checksum),
    // a deleted token, a near-miss password.
    let mut mistyped = tokens[0].clone().into_bytes();
    mistyped[20] = if mistyped[20] == b'A' { b'B' } else { b'A' };
    let mistyped = String::from_utf8(mistyped).unwrap();
    assert_eq!(status(other.login_with_personal_access_token(&mistyped).await), 20);
    client.delete_personal_access_token("default").await.unwrap();
    assert_eq!(status(other.login_with_personal_access_token(&tokens[1]).await), 20);
    let near_miss = format!("{password}x");
    assert_eq!(status(other.login_user("rootuser", &near_miss).await), 42);
    drop((client, other));

    let data_dir = server.data_dir.clone();
    // SIGTERM, then wait for the last log line so shutdown output is included
    // before reading it; stop() then only reaps the exited process.
    // SAFETY: kill(2) on our own, not yet reaped, child.
    unsafe {
        libc::kill(server.pid() as i32, libc::SIGTERM);
    }
    let logs = wait_for_logs(&server, |logs| logs.contains("stopped"));
    let stderr = server.stderr();
    let status_code = server.stop();
    assert_eq!(status_code.code(), Some(0), "SIGTERM exit status");

    let mut secrets: Vec<(&str, String)> = vec![("the root password", password.clone())];
    for token in tokens.iter().chain([&mistyped]) {
        secrets.push(("a raw token", token.clone()));
        // The secret part alone (without prefix and checksum), too.
        secrets.push(("a token's secret digits", token[3..46].to_owned()));
    }
    let files = read_tree(home.dir.path());
    assert!(
        files.iter().any(|(path, _)| path.ends_with("root.toml")),
        "root.toml missing: {:?}",
        files.iter().map(|(p, _)| p).collect::<Vec<_>>()
    );
    for (what, secret) in &secrets {
        for (path, bytes) in &files {
            assert_absent(bytes, secret, what, &path.display().to_string());
        }
        assert_absent(logs.as_bytes(), secret, what, "the log (stdout)");
        assert_absent(stderr.as_bytes(), secret, what, "stderr");
    }
    // The log does mention the events, so the check above looked at real output.
    assert!(logs.contains("rootuser"), "log:\n{logs}");
    assert!(logs.contains("never"), "token names are logged:\n{logs}");

    // root.toml holds the username and an Argon2 hash, not the password.
    let root_toml = std::fs::read_to_string(data_dir.join("root.toml")).unwrap();
    assert!(root_toml.contains("rootuser"), "{root_toml}");
    assert!(root_toml.contains("$argon2id$"), "{root_toml}");
    assert_eq!(mode(&data_dir), 0o700, "data directory mode");
    assert_eq!(mode(&data_dir.join("root.toml")), 0o600, "root.toml mode");
    assert_eq!(mode(&data_dir.join("server.key")), 0o600, "server.key mode");
}

#[tokio::test]
async fn the_data_dir_is_0700_and_its_secret_files_0600() {
    let home = DataHome::new();
    let server = TestServer::start(&home, &ServerSpec::default_root());
    let mut client = root(server.address).await;
    client.create_personal_access_token("some-token", Expiry::Never).await.unwrap();
    drop(client);
    let data_dir = server.data_dir.clone();
    assert_eq!(server.stop().code(), Some(0));

    assert_eq!(mode(&data_dir), 0o700, "data directory mode");
    assert_eq!(mode(&data_dir.join("root.toml")), 0o600, "root.toml mode");
    assert_eq!(mode(&data_dir.join("server.key")), 0o600, "server.key mode");
    assert_eq!(std::fs::read(data_dir.join("server.key")).unwrap().len(), 32, "server.key is a 32-byte key");
    // Nothing in the data directory is readable by group or others.
    for (path, _) in read_tree(&data_dir) {
        assert_eq!(
            mode(&path) & 0o077,
            0,
            "{} is group/world accessible ({:o})",
            path.display(),
            mode(&path)
        );
    }
}

#[tokio::test]
async fn the_server_key_and_root_credentials_are_kept_across_restarts() {
    let home = DataHome::new();
    let server = TestServer::start(&home, &ServerSpec::default_root());
    let key = std::fs::read(server.data_dir.join("server.key")).unwrap();
    let root_toml = std::fs::read(server.data_dir.join("root.toml")).unwrap();
    assert_eq!(server.stop().code(), Some(0));
    let server = TestServer::start(&home, &ServerSpec::default_root());
    assert_eq!(std::fs::read(server.data_dir.join("server.key")).unwrap(), key);
    assert_eq!(std::fs::read(server.data_dir.join("root.toml")).unwrap(), root_toml);
    let mut client = root(server.address).await;
    client.ping().await.unwrap();
}

/// A crash must not write the server's memory (which briefly holds passwords
/// and tokens) to disk: the server sets its core-dump limit to 0.
#[tokio::test]
async fn the_server_disables_its_own_core_dumps() {
    let home = DataHome::new();
    let server = TestServer::start(&home, &ServerSpec::default_root());
    let limits =
        std::fs::read_to_string(format!("/proc/{}/limits", server.pid())).expect("read /proc limits");
    let core = limits.lines().find(|line| line.starts_with("Max core file size")).expect("a core limit line");
    let fields: Vec<&str> = core.split_whitespace().collect();
    // "Max core file size  <soft>  <hard>  bytes"
    assert_eq!(&fields[4..6], ["0", "0"], "{core}");
}

/// Lines of the audit log (target `audit`) for `event`.
fn audit_lines<'a>(logs: &'a str, event: &str) -> Vec<&'a str> {
    let field = format!("event=\"{event}\"");
    logs.lines().filter(|line| line.contains(" audit: ") && line.contains(&field)).collect()
}

/// Each audit event at its documented level (README, "Logs"): failed logins
/// `warn`, token changes `info`, successful logins `debug`; the filter in
/// `LATCHKEY_LOG` picks which are written. No line holds the token.
#[tokio::test]
async fn audit_events_are_logged_at_their_levels_and_the_filter_picks_them() {
    // (filter, successful logins written, token creates written)
    for (filter, logins, creates) in
        [("info", false, true), ("info,audit=debug", true, true), ("info,audit=warn", false, false)]
    {
        let home = DataHome::new();
        let server = TestServer::start(&home, &ServerSpec::default_root().env("LATCHKEY_LOG", filter));
        let mut client = root(server.address).await;
        let token = client.create_personal_access_token("audited", Expiry::Never).await.unwrap();
        with_token(server.address, &token).await;
        // The failed login comes last and is written at every filter here:
        // once it is in the log, so is everything before it.
        let mut failed = connect(server.address).await;
        assert_eq!(status(failed.login_user("iggy", "wrong-password").await), 42);
        let logs = wait_for_logs(&server, |logs| !audit_lines(logs, "login_failed").is_empty());
        for line in audit_lines(&logs, "login_failed") {
            assert!(line.contains(" WARN "), "{filter}: {line}");
        }
        let created = audit_lines(&logs, "token_created");
        assert_eq!(created.len(), usize::from(creates), "{filter}: token_created lines:\n{logs}");
        for line in created {
            assert!(line.contains(" INFO ") && line.contains("audited"), "{filter}: {line}");
        }
        let login_lines = audit_lines(&logs, "login");
        assert_eq!(login_lines.len(), if logins { 2 } else { 0 }, "{filter}: login lines:\n{logs}");
        for line in &login_lines {
            assert!(line.contains(" DEBUG "), "{filter}: {line}");
        }
        for method in ["password", "token"] {
            let field = format!("method=\"{method}\"");
            assert_eq!(
                login_lines.iter().any(|line| line.contains(&field)),
                logins,
                "{filter}: {method} login"
            );
        }
        assert_absent(logs.as_bytes(), &token, "the token", &format!("the log at {filter}"));
    }
}
