//! `latchkey-server export` and `import`: every token moved between data
//! directories with its id, hash, times, scopes, networks, revocation and
//! last use, so it keeps working; refusals that keep an import from merging
//! or an export from clobbering.

mod common;

use std::process::{Command, Output};

use common::*;
use latchkey_protocol::ext::StatusFilter;
use latchkey_sdk::{Expiry, NewToken};
use latchkey_tests::{DataHome, ServerSpec, TestServer, server_binary};

/// Runs `latchkey-server SUBCOMMAND ARGS` on `home`'s data directory.
fn tool(home: &DataHome, args: &[&str]) -> Output {
    Command::new(server_binary())
        .args(args)
        .env("LATCHKEY_SYSTEM_PATH", home.data_dir())
        .env("LATCHKEY_LOG", "warn")
        .output()
        .expect("run latchkey-server")
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

#[tokio::test]
async fn every_token_moves_to_a_new_data_directory_and_keeps_working() {
    let old = DataHome::new();
    let server = TestServer::start(&old, &ServerSpec::default_root());
    let mut owner = root(server.address).await;
    let plain = owner.create_personal_access_token("plain", Expiry::Never).await.unwrap();
    let mut scoped = NewToken::named("scoped");
    scoped.description = "for the deploy job".into();
    scoped.scopes = vec!["tokens:read".into()];
    scoped.networks = vec!["127.0.0.0/8".into()];
    let scoped = owner.create_token(&scoped).await.unwrap();
    let revoked = owner.create_personal_access_token("revoked", Expiry::Never).await.unwrap();
    owner.revoke_token("revoked").await.unwrap();
    owner.create_personal_access_token("deleted", Expiry::Never).await.unwrap();
    owner.delete_personal_access_token("deleted").await.unwrap();
    with_token(server.address, &plain).await; // a last use to carry over
    drop(owner);
    // Exporting needs the data directory to itself.
    let busy = tool(&old, &["export", "--out", "/dev/null/never"]);
    assert!(!busy.status.success() && text(&busy).contains("in use"), "{}", text(&busy));
    assert_eq!(server.stop().code(), Some(0));
    let before = listed(&old).await;

    let export = old.dir.path().join("tokens.export");
    let export = export.to_str().unwrap();
    let done = tool(&old, &["export", "--out", export]);
    assert!(done.status.success(), "{}", text(&done));
    assert!(text(&done).contains("exported 3 tokens"), "{}", text(&done));
    // Never over an existing file.
    let again = tool(&old, &["export", "--out", export]);
    assert!(!again.status.success() && text(&again).contains("cannot create"), "{}", text(&again));

    let new = DataHome::new();
    std::fs::create_dir_all(new.data_dir()).unwrap();
    // The tokens were hashed with the old server key: it moves too.
    std::fs::copy(old.data_dir().join("server.key"), new.data_dir().join("server.key")).unwrap();
    let done = tool(&new, &["import", "--in", export]);
    assert!(done.status.success(), "{}", text(&done));
    assert_eq!(listed(&new).await, before);

    let server = TestServer::start(&new, &ServerSpec::default_root());
    assert_eq!(status(connect(server.address).await.login_with_personal_access_token(&plain).await), 0);
    assert_eq!(
        status(connect(server.address).await.login_with_personal_access_token(&scoped.token).await),
        0
    );
    assert_eq!(status(connect(server.address).await.login_with_personal_access_token(&revoked).await), 20003);
    // Ids go on after the highest ever given, the deleted token's included.
    let next = root(server.address).await.create_token(&NewToken::named("next")).await.unwrap();
    assert!(before.iter().all(|token| token.id < next.id) && next.id == 5, "next id {}", next.id);
    assert_eq!(server.stop().code(), Some(0));
    // An import never merges into a store that holds tokens.
    let merge = tool(&new, &["import", "--in", export]);
    assert!(!merge.status.success() && text(&merge).contains("already holds tokens"), "{}", text(&merge));
}

#[test]
fn a_damaged_export_is_refused_before_anything_is_written() {
    let home = DataHome::new();
    let file = home.dir.path().join("damaged.export");
    std::fs::write(&file, b"LKTOKLOG but not really").unwrap();
    let refused = tool(&home, &["import", "--in", file.to_str().unwrap()]);
    assert!(!refused.status.success(), "{}", text(&refused));
    assert!(!home.data_dir().join("tokens.log").exists());
}

/// Every token of a stopped server's data directory, as its owner sees it.
async fn listed(home: &DataHome) -> Vec<latchkey_protocol::ext::TokenDetails> {
    let server = TestServer::start(home, &ServerSpec::default_root());
    let tokens = root(server.address).await.list_all_tokens(StatusFilter::All).await.unwrap();
    assert_eq!(server.stop().code(), Some(0));
    tokens
}
