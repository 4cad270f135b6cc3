//! Status codes (spec §1.6, §1.7, §3.4–§3.6, §3.12): what each bad request
//! gets, before and after login, and that the connection stays usable.

mod common;

use std::time::Duration;

use common::*;
use latchkey_protocol::body::{PersonalAccessTokens, decode_exact};
use latchkey_sdk::Expiry;
use latchkey_tests::{DataHome, ServerSpec, TestServer};

#[tokio::test]
async fn before_login_everything_but_ping_and_the_logins_gets_40() {
    let home = DataHome::new();
    let server = TestServer::start(&home, &ServerSpec::default_root());
    let mut client = connect(server.address).await;
    let refused: [(u32, Vec<u8>); 8] = [
        (LOGOUT_USER, vec![]),
        (GET_ME, vec![]),
        (GET_CLUSTER_METADATA, vec![]),
        (GET_PATS, vec![]),
        (CREATE_PAT, create_body(b"valid-name", u64::MAX)),
        (DELETE_PAT, short(b"valid-name")),
        (GET_STATS, vec![]),
        (GET_STREAMS, vec![]),
    ];
    for (code, payload) in &refused {
        assert_eq!(raw_status(&mut client, *code, payload).await, 40, "code {code} before login");
    }
    // Bodies that decode but break a semantic rule (name length, expiry)
    // are refused by the login check first.
    assert_eq!(raw_status(&mut client, CREATE_PAT, &create_body(b"ab", 0)).await, 40);
    assert_eq!(raw_status(&mut client, CREATE_PAT, &create_body(b"overflow", u64::MAX - 1)).await, 40);
    assert_eq!(raw_status(&mut client, DELETE_PAT, &short(b"ab")).await, 40);
    assert_eq!(raw_status(&mut client, PING, &[]).await, 0);
    // Nothing was created by the refused create.
    assert_eq!(client.login_user("iggy", "iggy").await.unwrap(), 0);
    assert!(client.get_personal_access_tokens().await.unwrap().is_empty());
}

#[tokio::test]
async fn an_unknown_code_gets_3_logged_in_or_not() {
    let home = DataHome::new();
    let server = TestServer::start(&home, &ServerSpec::default_root());
    let mut client = connect(server.address).await;
    for code in [UNKNOWN_CODE, 0, 2, 9, u32::MAX] {
        assert_eq!(raw_status(&mut client, code, &[]).await, 3, "code {code}");
        assert_eq!(raw_status(&mut client, code, b"abc").await, 3, "code {code}");
    }
    client.login_user("iggy", "iggy").await.unwrap();
    for code in [UNKNOWN_CODE, 0, 2, 9, u32::MAX] {
        assert_eq!(raw_status(&mut client, code, &[]).await, 3, "code {code}");
    }
    client.ping().await.unwrap();
}

#[tokio::test]
async fn known_unserved_iggy_codes_get_5_after_login_and_40_before() {
    let home = DataHome::new();
    let server = TestServer::start(&home, &ServerSpec::default_root());
    let mut client = connect(server.address).await;
    for code in [GET_STATS, GET_STREAMS, 31, 100, 302] {
        assert_eq!(raw_status(&mut client, code, &[]).await, 40, "code {code}");
    }
    client.login_user("iggy", "iggy").await.unwrap();
    for code in [GET_STATS, GET_STREAMS, 31, 100, 302] {
        assert_eq!(raw_status(&mut client, code, &[]).await, 5, "code {code}");
        // The body of an unserved command is not read.
        assert_eq!(raw_status(&mut client, code, &[1, 2, 3]).await, 5, "code {code}");
    }
    assert_eq!(client.get_me().await.unwrap().user_id, 0);
}

#[tokio::test]
async fn pat_bodies_are_decoded_before_the_login_check() {
    let home = DataHome::new();
    let server = TestServer::start(&home, &ServerSpec::default_root());
    let mut client = connect(server.address).await;
    for logged_in in [false, true] {
        if logged_in {
            client.login_user("iggy", "iggy").await.unwrap();
        }
        let at = if logged_in { "after login" } else { "before login" };
        // Empty payloads: 3.
        for code in [CREATE_PAT, DELETE_PAT, LOGIN_WITH_PAT] {
            assert_eq!(raw_status(&mut client, code, &[]).await, 3, "{code} {at}");
        }
        // Zero-length names and tokens: 4.
        assert_eq!(
            raw_status(&mut client, CREATE_PAT, &create_body(b"", u64::MAX)).await,
            4,
            "create, zero-length name, {at}"
        );
        assert_eq!(raw_status(&mut client, DELETE_PAT, &[0]).await, 4, "delete {at}");
        assert_eq!(raw_status(&mut client, LOGIN_WITH_PAT, &[0]).await, 4, "token login {at}");
        // A name that is not UTF-8: 4.
        assert_eq!(
            raw_status(&mut client, CREATE_PAT, &create_body(&[0xff, 0xfe, 0xfd], u64::MAX)).await,
            4,
            "create, non-UTF-8 name, {at}"
        );
        // Truncated: a name without its expiry, a name shorter than its length byte.
        assert_eq!(
            raw_status(&mut client, CREATE_PAT, &short(b"no-expiry")).await,
            3,
            "create, truncated, {at}"
        );
        assert_eq!(
            raw_status(&mut client, DELETE_PAT, &[10, b'a', b'b', b'c']).await,
            3,
            "delete, truncated, {at}"
        );
        // A byte too many: 3.
        let mut long = create_body(b"trailing", u64::MAX);
        long.push(0);
        assert_eq!(raw_status(&mut client, CREATE_PAT, &long).await, 3, "create, trailing byte, {at}");
    }
    // None of those created anything.
    assert!(client.get_personal_access_tokens().await.unwrap().is_empty());
}

#[tokio::test]
async fn token_login_refusals() {
    let home = DataHome::new();
    let server = TestServer::start(&home, &ServerSpec::default_root());
    let mut owner = root(server.address).await;
    let token = owner.create_personal_access_token("to-delete", Expiry::Never).await.unwrap();
    owner.delete_personal_access_token("to-delete").await.unwrap();

    let mut client = connect(server.address).await;
    assert_eq!(raw_status(&mut client, LOGIN_WITH_PAT, &[]).await, 3);
    assert_eq!(raw_status(&mut client, LOGIN_WITH_PAT, &[0]).await, 4);
    // Well-formed (prefix, length, checksum) but never issued.
    assert_eq!(status(client.login_with_personal_access_token(&unissued_token()).await), 20);
    // Deleted.
    assert_eq!(status(client.login_with_personal_access_token(&token).await), 20);
    // Wrong checksum: the last character changed.
    let mut bad_checksum = token.clone().into_bytes();
    let last = bad_checksum.len() - 1;
    bad_checksum[last] = if bad_checksum[last] == b'A' { b'B' } else { b'A' };
    let bad_checksum = String::from_utf8(bad_checksum).unwrap();
    assert_eq!(status(client.login_with_personal_access_token(&bad_checksum).await), 20);
    // Not the lk_ format at all: an Iggy-style 68-character base64 token,
    // a wrong prefix, a short string, bytes that are not UTF-8.
    let iggy_style = format!("{}=", "A".repeat(67));
    assert_eq!(status(client.login_with_personal_access_token(&iggy_style).await), 20);
    let wrong_prefix = format!("xx_{}", &token[3..]);
    assert_eq!(status(client.login_with_personal_access_token(&wrong_prefix).await), 20);
    assert_eq!(status(client.login_with_personal_access_token("lk_").await), 20);
    assert_eq!(raw_status(&mut client, LOGIN_WITH_PAT, &short(&[0xc3, 0x28, 0x41])).await, 4);
    // After all of that the connection still works, and is not logged in.
    assert_eq!(raw_status(&mut client, GET_ME, &[]).await, 40);
    client.ping().await.unwrap();
}

#[tokio::test]
async fn token_name_length_is_3_to_30_bytes() {
    let home = DataHome::new();
    let server = TestServer::start(&home, &ServerSpec::default_root());
    let mut client = root(server.address).await;
    let name = |len: usize| "n".repeat(len);
    for len in [1, 2, 31, 255] {
        assert_eq!(
            status(client.create_personal_access_token(&name(len), Expiry::Never).await),
            50,
            "name of {len} bytes"
        );
    }
    for len in [3, 30] {
        client
            .create_personal_access_token(&name(len), Expiry::Never)
            .await
            .unwrap_or_else(|e| panic!("name of {len} bytes: {e}"));
    }
    // Bytes, not characters: 15 × "é" is 30 bytes, one more "a" is 31.
    let accented = "é".repeat(15);
    client.create_personal_access_token(&accented, Expiry::Never).await.unwrap();
    assert_eq!(status(client.create_personal_access_token(&format!("{accented}a"), Expiry::Never).await), 50);
    let listed: Vec<String> =
        client.get_personal_access_tokens().await.unwrap().into_iter().map(|e| e.name).collect();
    let mut expected = vec![name(3), name(30), accented];
    expected.sort();
    assert_eq!(listed, expected);
}

#[tokio::test]
async fn duplicate_name_gets_51_and_unknown_delete_gets_20() {
    let home = DataHome::new();
    let server = TestServer::start(&home, &ServerSpec::default_root());
    let mut client = root(server.address).await;
    let first = client.create_personal_access_token("dup", Expiry::Never).await.unwrap();
    assert_eq!(status(client.create_personal_access_token("dup", Expiry::ServerDefault).await), 51);
    // Names are case-sensitive: "DUP" is another name.
    client.create_personal_access_token("DUP", Expiry::Never).await.unwrap();
    // The original token is untouched by the refused duplicate.
    let mut other = connect(server.address).await;
    assert_eq!(other.login_with_personal_access_token(&first).await.unwrap(), 0);
    assert_eq!(status(client.delete_personal_access_token("nope").await), 20);
    client.delete_personal_access_token("dup").await.unwrap();
    assert_eq!(status(client.delete_personal_access_token("dup").await), 20);
    // Delete does not apply the 3-30 name rule: an impossible name is just not found.
    for name in ["ab".to_owned(), "x".repeat(31), "x".repeat(255)] {
        assert_eq!(
            status(client.delete_personal_access_token(&name).await),
            20,
            "delete of a {}-byte name",
            name.len()
        );
    }
    assert_eq!(client.get_personal_access_tokens().await.unwrap().len(), 1);
}

#[tokio::test]
async fn limit_gets_52_before_the_duplicate_check_and_delete_frees_a_slot() {
    let home = DataHome::new();
    let spec = ServerSpec::default_root().env("LATCHKEY_PERSONAL_ACCESS_TOKEN_MAX_TOKENS_PER_USER", "3");
    let server = TestServer::start(&home, &spec);
    let mut client = root(server.address).await;
    for name in ["one", "two"] {
        client.create_personal_access_token(name, Expiry::Never).await.unwrap();
    }
    // Below the limit a duplicate is 51.
    assert_eq!(status(client.create_personal_access_token("one", Expiry::Never).await), 51);
    client.create_personal_access_token("three", Expiry::Never).await.unwrap();
    assert_eq!(status(client.create_personal_access_token("four", Expiry::Never).await), 52);
    // At the limit a duplicate is 52, not 51.
    assert_eq!(status(client.create_personal_access_token("one", Expiry::Never).await), 52);
    // A bad name at the limit is still a bad name.
    assert_eq!(status(client.create_personal_access_token("ab", Expiry::Never).await), 50);
    assert_eq!(raw_status(&mut client, CREATE_PAT, &create_body(b"", 0)).await, 4);
    // Delete is never limit-gated and frees a slot.
    client.delete_personal_access_token("two").await.unwrap();
    client.create_personal_access_token("four", Expiry::Never).await.unwrap();
    assert_eq!(status(client.create_personal_access_token("five", Expiry::Never).await), 52);
    let names: Vec<String> =
        client.get_personal_access_tokens().await.unwrap().into_iter().map(|e| e.name).collect();
    assert_eq!(names, ["four", "one", "three"]);
}

#[tokio::test]
async fn the_limit_is_per_user() {
    let home = DataHome::new();
    let spec =
        ServerSpec::default_root().env("LATCHKEY_PERSONAL_ACCESS_TOKEN_MAX_TOKENS_PER_USER", "1").config(
            &users_config(&[TestUser { id: 1, username: "alice", password: "alice-password", active: true }]),
        );
    let server = TestServer::start(&home, &spec);
    let mut root_client = root(server.address).await;
    root_client.create_personal_access_token("only", Expiry::Never).await.unwrap();
    assert_eq!(status(root_client.create_personal_access_token("second", Expiry::Never).await), 52);
    let mut alice = connect(server.address).await;
    alice.login_user("alice", "alice-password").await.unwrap();
    alice.create_personal_access_token("only", Expiry::Never).await.unwrap();
}

#[tokio::test]
async fn expiry_overflow_gets_56() {
    let home = DataHome::new();
    let server = TestServer::start(&home, &ServerSpec::default_root());
    let mut client = root(server.address).await;
    // now + expiry overflows u64: 56.
    for expiry in [u64::MAX - 1, u64::MAX - 1_000_000] {
        assert_eq!(
            raw_status(&mut client, CREATE_PAT, &create_body(b"overflow", expiry)).await,
            56,
            "expiry {expiry}"
        );
    }
    // Nothing was stored, and the name is still free.
    assert!(client.get_personal_access_tokens().await.unwrap().is_empty());
    client.create_personal_access_token("overflow", Expiry::After(Duration::from_secs(10))).await.unwrap();
    // A huge expiry that does not overflow is a valid (distant) expiry.
    let before = now_us();
    assert_eq!(raw_status(&mut client, CREATE_PAT, &create_body(b"distant", 1 << 62)).await, 0);
    let entries = client.get_personal_access_tokens().await.unwrap();
    let distant = entries.iter().find(|e| e.name == "distant").unwrap();
    let at = distant.expiry_at_us.expect("distant expiry");
    assert!(at > before + (1 << 62) - 2_000_000 && at < now_us() + (1 << 62) + 2_000_000);
}

#[tokio::test]
async fn an_expired_token_that_is_still_stored_gets_54_is_listed_and_counts() {
    let home = DataHome::new();
    let spec = ServerSpec::default_root()
        .env("LATCHKEY_PERSONAL_ACCESS_TOKEN_CLEANER_ENABLED", "false")
        .env("LATCHKEY_PERSONAL_ACCESS_TOKEN_MAX_TOKENS_PER_USER", "2");
    let server = TestServer::start(&home, &spec);
    let mut client = root(server.address).await;
    let before = now_us();
    let payload = client.send_raw(CREATE_PAT, &create_body(b"one-micro", 1)).await.unwrap();
    assert_eq!(payload[0], 52);
    let token = std::str::from_utf8(&payload[1..]).unwrap().to_owned();
    assert_token_shape(&token);

    let mut other = connect(server.address).await;
    // Expired 1 µs after its creation; any later login sees it expired.
    assert_eq!(status(other.login_with_personal_access_token(&token).await), 54);
    assert_eq!(raw_status(&mut other, GET_ME, &[]).await, 40);

    let listed = client.send_raw(GET_PATS, &[]).await.unwrap();
    let entries = decode_exact::<PersonalAccessTokens>(&listed).unwrap().0;
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].name, "one-micro");
    let at = entries[0].expiry_at_us.expect("expired token lists its expiry");
    assert!(
        at + 2_000_000 > before && at <= now_us() + 2_000_000,
        "expiry_at {at} is not about the creation time {before}"
    );

    // It still counts toward the limit of 2.
    client.create_personal_access_token("fresh", Expiry::Never).await.unwrap();
    assert_eq!(status(client.create_personal_access_token("third", Expiry::Never).await), 52);
    // And can be deleted like any other.
    client.delete_personal_access_token("one-micro").await.unwrap();
    assert_eq!(status(other.login_with_personal_access_token(&token).await), 20);
}

#[tokio::test]
async fn password_login_refusals() {
    let home = DataHome::new();
    let spec = ServerSpec::default_root().config(&users_config(&[TestUser {
        id: 3,
        username: "dave",
        password: "dave-password",
        active: true,
    }]));
    let server = TestServer::start(&home, &spec);
    let mut client = connect(server.address).await;
    assert_eq!(status(client.login_user("iggy", "wrong").await), 42);
    assert_eq!(status(client.login_user("nobody", "iggy").await), 42);
    // Another user's password does not work.
    assert_eq!(status(client.login_user("iggy", "dave-password").await), 42);
    // Usernames are case-sensitive.
    assert_eq!(status(client.login_user("IGGY", "iggy").await), 42);
    // Username bounds 3–50 bytes, checked before the password.
    assert_eq!(status(client.login_user("ig", "iggy").await), 43);
    assert_eq!(status(client.login_user("", "iggy").await), 43);
    assert_eq!(status(client.login_user(&"u".repeat(51), "iggy").await), 43);
    assert_eq!(status(client.login_user("ig", "pw").await), 43);
    // Password bounds 3–100 bytes.
    assert_eq!(status(client.login_user("iggy", "ig").await), 44);
    assert_eq!(status(client.login_user("iggy", "").await), 44);
    assert_eq!(status(client.login_user("iggy", &"p".repeat(101)).await), 44);
    assert_eq!(status(client.login_user("nobody", &"p".repeat(101)).await), 44);
    // 50-byte username and 100-byte password are within bounds: plain 42.
    assert_eq!(status(client.login_user(&"u".repeat(50), &"p".repeat(100)).await), 42);
    // Still not logged in, still connected.
    assert_eq!(raw_status(&mut client, GET_ME, &[]).await, 40);
    assert_eq!(client.login_user("dave", "dave-password").await.unwrap(), 3);
}

#[tokio::test]
async fn an_inactive_config_user_gets_47_only_with_the_right_password() {
    let home = DataHome::new();
    let spec = ServerSpec::default_root().config(&users_config(&[TestUser {
        id: 5,
        username: "erin",
        password: "erin-password",
        active: false,
    }]));
    let server = TestServer::start(&home, &spec);
    let mut client = connect(server.address).await;
    assert_eq!(status(client.login_user("erin", "erin-password").await), 47);
    // A wrong password does not reveal that the account is inactive.
    assert_eq!(status(client.login_user("erin", "wrong-password").await), 42);
    assert_eq!(raw_status(&mut client, GET_ME, &[]).await, 40);
    assert_eq!(client.login_user("iggy", "iggy").await.unwrap(), 0);
}

/// Users for the restart tests: root plus frank (id 9).
fn frank(active: bool) -> String {
    users_config(&[TestUser { id: 9, username: "frank", password: "frank-password", active }])
}

#[tokio::test]
async fn a_token_of_an_owner_made_inactive_gets_47_after_restart() {
    let home = DataHome::new();
    let server = TestServer::start(&home, &ServerSpec::default_root().config(&frank(true)));
    let mut client = connect(server.address).await;
    assert_eq!(client.login_user("frank", "frank-password").await.unwrap(), 9);
    let token = client.create_personal_access_token("franks", Expiry::Never).await.unwrap();
    drop(client);
    assert_eq!(server.stop().code(), Some(0));

    // Same data directory, frank now inactive.
    let server = TestServer::start(&home, &ServerSpec::default_root().config(&frank(false)));
    let mut client = connect(server.address).await;
    assert_eq!(status(client.login_with_personal_access_token(&token).await), 47);
    assert_eq!(raw_status(&mut client, GET_ME, &[]).await, 40);
    drop(client);
    assert_eq!(server.stop().code(), Some(0));

    // Active again: the same token works, so it was kept all along.
    let server = TestServer::start(&home, &ServerSpec::default_root().config(&frank(true)));
    let mut client = connect(server.address).await;
    assert_eq!(client.login_with_personal_access_token(&token).await.unwrap(), 9);
}

#[tokio::test]
async fn a_token_whose_owner_left_the_config_gets_20_after_restart() {
    let home = DataHome::new();
    let server = TestServer::start(&home, &ServerSpec::default_root().config(&frank(true)));
    let mut client = connect(server.address).await;
    client.login_user("frank", "frank-password").await.unwrap();
    let token = client.create_personal_access_token("franks", Expiry::Never).await.unwrap();
    let mut root_client = root(server.address).await;
    let root_token = root_client.create_personal_access_token("roots", Expiry::Never).await.unwrap();
    drop((client, root_client));
    assert_eq!(server.stop().code(), Some(0));

    let server = TestServer::start(&home, &ServerSpec::default_root());
    let mut client = connect(server.address).await;
    assert_eq!(status(client.login_with_personal_access_token(&token).await), 20);
    // Root's token from before the restart still works.
    assert_eq!(client.login_with_personal_access_token(&root_token).await.unwrap(), 0);
}
