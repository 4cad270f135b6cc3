//! Online backup and restore: `latchkey-server backup` taken from a server
//! under write load holds every change acknowledged before it began, and
//! `restore` makes a data directory a server starts and serves from.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{TestUser, status, users_config};
use latchkey_sdk::{Client, Expiry};
use latchkey_tests::{DataHome, ServerSpec, TestServer, server_binary};

/// Runs `latchkey-server <args>` on the data directory `data` with root's
/// password `password` for a backup.
fn run(data: &Path, password: &str, args: &[&str]) -> Output {
    Command::new(server_binary())
        .args(args)
        .env("LATCHKEY_SYSTEM_PATH", data)
        .env("LATCHKEY_BACKUP_PASSWORD", password)
        .env("LATCHKEY_LOG", "warn")
        .output()
        .expect("run latchkey-server")
}

fn said(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_under_write_load_holds_every_acknowledged_change_and_restores() {
    let home = DataHome::new();
    let server = TestServer::start(&home, &ServerSpec::default_root());
    let http = server.http_address.unwrap().to_string();
    let mut admin = Client::connect(server.address).await.unwrap();
    admin.login_user("iggy", "iggy").await.unwrap();
    let revoked = admin.create_token(&latchkey_sdk::NewToken::named("to-revoke")).await.unwrap();
    admin.revoke_token(revoked.id).await.unwrap();

    // Writers create tokens without pause; each acknowledged token is noted.
    let acknowledged: Arc<Mutex<Vec<String>>> = Arc::default();
    let writing = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let mut writers = Vec::new();
    for writer in 0..3 {
        let (acknowledged, writing, address) =
            (Arc::clone(&acknowledged), Arc::clone(&writing), server.address);
        writers.push(tokio::spawn(async move {
            let mut client = Client::connect(address).await.unwrap();
            client.login_user("iggy", "iggy").await.unwrap();
            let mut made = 0;
            while writing.load(std::sync::atomic::Ordering::Relaxed) && made < 30 {
                let token = client
                    .create_personal_access_token(&format!("w{writer}-{made}"), Expiry::Never)
                    .await
                    .unwrap();
                acknowledged.lock().unwrap().push(token);
                made += 1;
            }
        }));
    }
    // Some writes acknowledged first (however slow this machine is today).
    let deadline = std::time::Instant::now() + common::HANG_GUARD;
    while acknowledged.lock().unwrap().len() < 10 {
        assert!(std::time::Instant::now() < deadline, "the writers made nothing before the backup");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Everything acknowledged up to here must be in the backup.
    let before: Vec<String> = acknowledged.lock().unwrap().clone();
    let backup = home.dir.path().join("backup");
    let data = home.data_dir();
    let (backup_path, http_address) = (backup.clone(), http.clone());
    let output = tokio::task::spawn_blocking(move || {
        run(
            &data,
            "iggy",
            &["backup", "--to", backup_path.to_str().unwrap(), "--username", "iggy", "--http", &http_address],
        )
    })
    .await
    .unwrap();
    assert!(output.status.success(), "{}", said(&output));
    assert!(String::from_utf8_lossy(&output.stdout).contains("backed up"), "{}", said(&output));
    writing.store(false, std::sync::atomic::Ordering::Relaxed);
    for writer in writers {
        writer.await.unwrap();
    }
    drop(admin);
    assert_eq!(server.stop().code(), Some(0));

    // A second home: restore, then serve.
    let restored = DataHome::new();
    let output = run(&restored.data_dir(), "", &["restore", "--from", backup.to_str().unwrap()]);
    assert!(output.status.success(), "{}", said(&output));
    // Never over an existing data directory.
    let again = run(&restored.data_dir(), "", &["restore", "--from", backup.to_str().unwrap()]);
    assert!(
        !again.status.success() && said(&again).contains("only into a new directory"),
        "{}",
        said(&again)
    );

    let server = TestServer::start(&restored, &ServerSpec::default());
    for token in &before {
        let mut client = Client::connect(server.address).await.unwrap();
        assert_eq!(
            status(client.login_with_personal_access_token(token).await),
            0,
            "a token acknowledged before the backup is missing"
        );
    }
    let mut client = Client::connect(server.address).await.unwrap();
    assert_eq!(status(client.login_with_personal_access_token(&revoked.token).await), 20003);
    // Root's credentials came along: the password still logs in.
    assert_eq!(status(client.login_user("iggy", "iggy").await), 0);
}

#[test]
fn only_root_with_its_password_may_take_a_backup() {
    let home = DataHome::new();
    let users = users_config(&[TestUser {
        id: 3,
        username: "operator",
        password: "operator-password",
        active: true,
    }]);
    let server = TestServer::start(&home, &ServerSpec::default_root().config(&users));
    let http = server.http_address.unwrap().to_string();
    let target = |name: &str| home.dir.path().join(name);
    let not_root = run(
        &home.data_dir(),
        "operator-password",
        &["backup", "--to", target("a").to_str().unwrap(), "--username", "operator", "--http", &http],
    );
    assert!(!not_root.status.success() && said(&not_root).contains("403"), "{}", said(&not_root));
    let wrong = run(
        &home.data_dir(),
        "not-root's-password",
        &["backup", "--to", target("b").to_str().unwrap(), "--username", "iggy", "--http", &http],
    );
    assert!(!wrong.status.success() && said(&wrong).contains("401"), "{}", said(&wrong));
    assert!(!said(&wrong).contains("not-root's-password"), "the password was echoed");
    // Nothing was written for a refused backup.
    assert!(!target("a").join("tokens.log").exists() && !target("b").join("tokens.log").exists());
}
