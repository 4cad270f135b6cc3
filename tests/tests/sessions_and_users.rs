//! Session rules (spec §1.6, §3.9) and config users (`[[users]]`).

mod common;

use common::*;
use latchkey_sdk::Expiry;
use latchkey_tests::{DataHome, ServerSpec, TestServer};

fn alice_and_bob() -> ServerSpec {
    ServerSpec::default_root().config(&users_config(&[
        TestUser { id: 1, username: "alice", password: "alice-password", active: true },
        TestUser { id: 2, username: "bob", password: "bob-password", active: true },
    ]))
}

async fn token_names(client: &mut latchkey_sdk::Client) -> Vec<String> {
    client.get_personal_access_tokens().await.unwrap().into_iter().map(|e| e.name).collect()
}

#[tokio::test]
async fn a_failed_login_leaves_the_session_as_it_was() {
    let home = DataHome::new();
    let server = TestServer::start(&home, &alice_and_bob());
    let mut client = connect(server.address).await;
    assert_eq!(client.login_user("alice", "alice-password").await.unwrap(), 1);

    assert_eq!(status(client.login_user("bob", "wrong-password").await), 42);
    assert_eq!(client.get_me().await.unwrap().user_id, 1);
    assert_eq!(status(client.login_user("nobody", "whatever").await), 42);
    assert_eq!(client.get_me().await.unwrap().user_id, 1);
    assert_eq!(status(client.login_user("bo", "bob-password").await), 43);
    assert_eq!(status(client.login_user("bob", "bo").await), 44);
    assert_eq!(client.get_me().await.unwrap().user_id, 1);
    assert_eq!(status(client.login_with_personal_access_token(&unissued_token()).await), 20);
    assert_eq!(raw_status(&mut client, LOGIN_WITH_PAT, &[0]).await, 4);
    assert_eq!(raw_status(&mut client, LOGIN_WITH_PAT, &[]).await, 3);
    assert_eq!(client.get_me().await.unwrap().user_id, 1);
    // Still alice for token operations, too.
    client.create_personal_access_token("alices", Expiry::Never).await.unwrap();
    assert_eq!(token_names(&mut client).await, ["alices"]);
}

#[tokio::test]
async fn a_failed_token_login_with_an_expired_token_keeps_the_session() {
    let home = DataHome::new();
    let spec = alice_and_bob().env("LATCHKEY_PERSONAL_ACCESS_TOKEN_CLEANER_ENABLED", "false");
    let server = TestServer::start(&home, &spec);
    let mut bob = connect(server.address).await;
    bob.login_user("bob", "bob-password").await.unwrap();
    let payload = bob.send_raw(CREATE_PAT, &create_body(b"expired", 1)).await.unwrap();
    let expired = std::str::from_utf8(&payload[1..]).unwrap().to_owned();

    let mut client = connect(server.address).await;
    client.login_user("alice", "alice-password").await.unwrap();
    assert_eq!(status(client.login_with_personal_access_token(&expired).await), 54);
    assert_eq!(client.get_me().await.unwrap().user_id, 1);
}

#[tokio::test]
async fn a_login_on_a_logged_in_connection_switches_user() {
    let home = DataHome::new();
    let server = TestServer::start(&home, &alice_and_bob());
    let mut alice = connect(server.address).await;
    alice.login_user("alice", "alice-password").await.unwrap();
    let alice_token = alice.create_personal_access_token("alices", Expiry::Never).await.unwrap();

    let mut client = connect(server.address).await;
    assert_eq!(client.login_user("iggy", "iggy").await.unwrap(), 0);
    client.create_personal_access_token("roots", Expiry::Never).await.unwrap();
    // Password re-login, no logout in between (as the 0.10 SDK does).
    assert_eq!(client.login_user("bob", "bob-password").await.unwrap(), 2);
    assert_eq!(client.get_me().await.unwrap().user_id, 2);
    assert!(token_names(&mut client).await.is_empty());
    client.create_personal_access_token("bobs", Expiry::Never).await.unwrap();
    assert_eq!(token_names(&mut client).await, ["bobs"]);
    // Token re-login switches to the token's owner.
    assert_eq!(client.login_with_personal_access_token(&alice_token).await.unwrap(), 1);
    assert_eq!(client.get_me().await.unwrap().user_id, 1);
    assert_eq!(token_names(&mut client).await, ["alices"]);
    // And back to root by password.
    assert_eq!(client.login_user("iggy", "iggy").await.unwrap(), 0);
    assert_eq!(token_names(&mut client).await, ["roots"]);
}

#[tokio::test]
async fn a_token_session_survives_the_deletion_of_its_token() {
    let home = DataHome::new();
    let server = TestServer::start(&home, &ServerSpec::default_root());
    let mut owner = root(server.address).await;
    let token = owner.create_personal_access_token("session-token", Expiry::Never).await.unwrap();
    let mut session = with_token(server.address, &token).await;

    // Deleted from another connection.
    owner.delete_personal_access_token("session-token").await.unwrap();

    // The session stays logged in and fully usable.
    assert_eq!(session.get_me().await.unwrap().user_id, 0);
    assert!(token_names(&mut session).await.is_empty());
    session.create_personal_access_token("made-after", Expiry::Never).await.unwrap();
    // A new login with the deleted token fails, on a fresh connection…
    let mut fresh = connect(server.address).await;
    assert_eq!(status(fresh.login_with_personal_access_token(&token).await), 20);
    assert_eq!(raw_status(&mut fresh, GET_ME, &[]).await, 40);
    // …and on the surviving session, which stays logged in.
    assert_eq!(status(session.login_with_personal_access_token(&token).await), 20);
    assert_eq!(session.get_me().await.unwrap().user_id, 0);
}

#[tokio::test]
async fn a_token_session_can_create_and_delete_tokens() {
    let home = DataHome::new();
    let server = TestServer::start(&home, &alice_and_bob());
    let mut alice = connect(server.address).await;
    alice.login_user("alice", "alice-password").await.unwrap();
    let first = alice.create_personal_access_token("first", Expiry::Never).await.unwrap();
    drop(alice);

    let mut session = with_token(server.address, &first).await;
    assert_eq!(session.get_me().await.unwrap().user_id, 1);
    let second = session.create_personal_access_token("second", Expiry::Never).await.unwrap();
    assert_eq!(token_names(&mut session).await, ["first", "second"]);
    // The token minted by a token session belongs to alice.
    let mut other = connect(server.address).await;
    assert_eq!(other.login_with_personal_access_token(&second).await.unwrap(), 1);
    // A token session may delete the very token it logged in with.
    session.delete_personal_access_token("first").await.unwrap();
    assert_eq!(token_names(&mut session).await, ["second"]);
    session.delete_personal_access_token("second").await.unwrap();
    assert!(token_names(&mut session).await.is_empty());
    assert_eq!(session.get_me().await.unwrap().user_id, 1);
}

#[tokio::test]
async fn after_logout_everything_but_ping_and_login_gets_40_again() {
    let home = DataHome::new();
    let server = TestServer::start(&home, &ServerSpec::default_root());
    let mut client = root(server.address).await;
    let token = client.create_personal_access_token("kept", Expiry::Never).await.unwrap();
    client.logout_user().await.unwrap();

    let refused: [(u32, Vec<u8>); 8] = [
        (LOGOUT_USER, vec![]),
        (GET_ME, vec![]),
        (GET_CLUSTER_METADATA, vec![]),
        (GET_PATS, vec![]),
        (CREATE_PAT, create_body(b"after-logout", u64::MAX)),
        (DELETE_PAT, short(b"kept")),
        (GET_STATS, vec![]),
        (GET_STREAMS, vec![]),
    ];
    for (code, payload) in &refused {
        assert_eq!(raw_status(&mut client, *code, payload).await, 40, "code {code} after logout");
    }
    client.ping().await.unwrap();
    // Login by token after logout works and the refused delete changed nothing.
    assert_eq!(client.login_with_personal_access_token(&token).await.unwrap(), 0);
    assert_eq!(token_names(&mut client).await, ["kept"]);
    // Logout of a token session too, then password login again.
    client.logout_user().await.unwrap();
    assert_eq!(raw_status(&mut client, GET_PATS, &[]).await, 40);
    assert_eq!(client.login_user("iggy", "iggy").await.unwrap(), 0);
}

#[tokio::test]
async fn the_connection_stays_open_after_every_error() {
    let home = DataHome::new();
    let spec = ServerSpec::default_root().env("LATCHKEY_PERSONAL_ACCESS_TOKEN_MAX_TOKENS_PER_USER", "1");
    let server = TestServer::start(&home, &spec);
    // One raw connection through every error status it can be given, each
    // followed by a ping that must come back in order.
    let mut raw = Raw::connect(server.address).await;
    let expect = async |raw: &mut Raw, code: u32, payload: &[u8], want: u32| {
        assert_eq!(raw.status(code, payload).await, want, "code {code}");
        assert_eq!(raw.call(PING, &[]).await, (0, Vec::new()), "after code {code}");
    };
    expect(&mut raw, UNKNOWN_CODE, &[], 3).await;
    expect(&mut raw, GET_ME, &[], 40).await;
    expect(&mut raw, GET_STATS, &[], 40).await;
    expect(&mut raw, CREATE_PAT, &[], 3).await;
    expect(&mut raw, CREATE_PAT, &create_body(b"", 0), 4).await;
    expect(&mut raw, LOGIN_WITH_PAT, unissued_token().as_bytes(), 3).await;
    expect(&mut raw, LOGIN_WITH_PAT, &short(unissued_token().as_bytes()), 20).await;
    expect(&mut raw, LOGIN_USER, &login_body(b"iggy", b"no"), 44).await;
    expect(&mut raw, LOGIN_USER, &login_body(b"iggy", b"wrong"), 42).await;
    expect(&mut raw, LOGIN_USER, &login_body(b"ig", b"iggy"), 43).await;
    expect(&mut raw, LOGIN_USER, &[], 3).await;
    expect(&mut raw, LOGIN_USER, &login_body(b"iggy", b"iggy"), 0).await;
    expect(&mut raw, GET_STATS, &[], 5).await;
    expect(&mut raw, CREATE_PAT, &create_body(b"ab", 0), 50).await;
    expect(&mut raw, CREATE_PAT, &create_body(b"overflow", u64::MAX - 1), 56).await;
    expect(&mut raw, CREATE_PAT, &create_body(b"only", 0), 0).await;
    expect(&mut raw, CREATE_PAT, &create_body(b"only", 0), 52).await;
    expect(&mut raw, DELETE_PAT, &short(b"missing"), 20).await;
    expect(&mut raw, DELETE_PAT, &short(b"only"), 0).await;
    expect(&mut raw, CREATE_PAT, &create_body(b"only", 0), 0).await;
    expect(&mut raw, CREATE_PAT, &create_body(b"other", 0), 52).await;
    let (status, _) = raw.call(GET_ME, &[]).await;
    assert_eq!(status, 0);
}

#[tokio::test]
async fn users_see_only_their_own_tokens_and_may_reuse_names() {
    let home = DataHome::new();
    let server = TestServer::start(&home, &alice_and_bob());
    let mut alice = connect(server.address).await;
    assert_eq!(alice.login_user("alice", "alice-password").await.unwrap(), 1);
    let mut bob = connect(server.address).await;
    assert_eq!(bob.login_user("bob", "bob-password").await.unwrap(), 2);
    let mut root_client = root(server.address).await;

    let alice_deploy = alice.create_personal_access_token("deploy", Expiry::Never).await.unwrap();
    let bob_deploy = bob.create_personal_access_token("deploy", Expiry::Never).await.unwrap();
    root_client.create_personal_access_token("deploy", Expiry::Never).await.unwrap();
    alice.create_personal_access_token("alice-only", Expiry::Never).await.unwrap();
    assert_ne!(alice_deploy, bob_deploy);

    assert_eq!(token_names(&mut alice).await, ["alice-only", "deploy"]);
    assert_eq!(token_names(&mut bob).await, ["deploy"]);
    assert_eq!(token_names(&mut root_client).await, ["deploy"]);

    let mut client = connect(server.address).await;
    assert_eq!(client.login_with_personal_access_token(&alice_deploy).await.unwrap(), 1);
    assert_eq!(client.login_with_personal_access_token(&bob_deploy).await.unwrap(), 2);

    // Bob cannot delete alice's token by name; deleting his own leaves hers.
    assert_eq!(status(bob.delete_personal_access_token("alice-only").await), 20);
    bob.delete_personal_access_token("deploy").await.unwrap();
    assert!(token_names(&mut bob).await.is_empty());
    assert_eq!(token_names(&mut alice).await, ["alice-only", "deploy"]);
    assert_eq!(status(client.login_with_personal_access_token(&bob_deploy).await), 20);
    assert_eq!(client.login_with_personal_access_token(&alice_deploy).await.unwrap(), 1);
    // Even root does not see or delete other users' tokens.
    assert_eq!(status(root_client.delete_personal_access_token("alice-only").await), 20);
}
