//! Latchkey's extension commands end to end (codes 9100–9110): create with
//! description, scopes and networks; get, list, update, revoke, rotate,
//! delete; the all-token commands; Authorize; every refusal's status code;
//! sessions that end (or not) when their token changes; restart persistence
//! of every new field; the version 1 log fixture; Iggy's own token commands
//! next to the extensions.
//!
//! Policy, reload, permissions and networks are in `token_policy.rs`.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use latchkey_sdk::{
    Client, Decision, Expiry, NewToken, RotateExpiry, StatusFilter, TokenDetails, TokenStatus,
};
use latchkey_tests::{DataHome, ServerSpec, TestServer};

const NOT_FOUND: u32 = 20;
const UNAUTHENTICATED: u32 = 40;
const BAD_NAME: u32 = 50;
const ALREADY_EXISTS: u32 = 51;
const LIMIT_REACHED: u32 = 52;
const EXPIRED: u32 = 54;
const BAD_EXPIRY: u32 = 56;
const REVOKED: u32 = 20003;
const INSUFFICIENT_SCOPE: u32 = 20005;
const BAD_SCOPE: u32 = 20007;
const BAD_NETWORK: u32 = 20008;
const BAD_DESCRIPTION: u32 = 20009;

/// Token log facts (server/src/store/log.rs): a 16-byte header whose bytes 8..12
/// are the format version, u32 little-endian.
const LOG_FILE: &str = "tokens.log";
const FORMAT_VERSION_OFFSET: usize = 8;
/// The format version this build writes (3: records in batches; 4: access
/// edits and reactivations).
const CURRENT_FORMAT_VERSION: u32 = 4;
/// The log written by format version 1, committed before the format changed.
const FIXTURE_V1: &[u8] = include_bytes!("../../server/src/store/fixture-v1.log");

fn log_path(data_dir: &Path) -> PathBuf {
    data_dir.join(LOG_FILE)
}

fn log_len(data_dir: &Path) -> u64 {
    std::fs::metadata(log_path(data_dir)).expect("tokens.log").len()
}

/// Waits until a use of token `id`, made after the log was `log_before`
/// bytes long, is written and applied: the log has grown (with no change in
/// flight, that is a shard flushing the last uses it gathered) and GetToken
/// shows a last use newer than `previous_us`. A shard hands its gathered
/// uses over before the write, so once the log has grown a newer last use
/// can only come from the applied log record.
async fn wait_for_flushed_use(
    home: &DataHome,
    client: &mut Client,
    id: u64,
    (log_before, previous_us): (u64, u64),
    what: &'static str,
) -> TokenDetails {
    let poll = Poll::new(what);
    loop {
        if log_len(&home.data_dir()) > log_before {
            let details = client.get_token(id).await.unwrap();
            if details.last_used_at_us > previous_us {
                return details;
            }
        }
        poll.pause().await;
    }
}

fn format_version(data_dir: &Path) -> u32 {
    let bytes = std::fs::read(log_path(data_dir)).expect("read tokens.log");
    u32::from_le_bytes(bytes[FORMAT_VERSION_OFFSET..FORMAT_VERSION_OFFSET + 4].try_into().unwrap())
}

async fn all_tokens(client: &mut Client) -> Vec<TokenDetails> {
    client.list_all_tokens(StatusFilter::All).await.unwrap()
}

async fn names(client: &mut Client, filter: StatusFilter) -> Vec<String> {
    client.list_all_tokens(filter).await.unwrap().into_iter().map(|token| token.name).collect()
}

/// Waits until the token's expiry has passed by the server's clock.
async fn wait_until_expired(client: &mut Client, id: u64) {
    let poll = Poll::new("a 1 ms token reporting status expired");
    while client.get_token(id).await.unwrap().status != TokenStatus::Expired {
        poll.pause().await;
    }
}

fn two_users() -> String {
    users_config(&[
        TestUser { id: 1, username: "alice", password: "alice-password", active: true },
        TestUser { id: 2, username: "bob", password: "bob-password", active: true },
    ])
}

#[tokio::test]
async fn the_whole_lifecycle_of_one_token() {
    let home = DataHome::new();
    let server = TestServer::start(&home, &ServerSpec::default_root());
    let mut root = connect(server.address).await;
    root.login_user("iggy", "iggy").await.unwrap();
    let new = NewToken::named("ci-deploy")
        .with_description("deploys from CI")
        .with_expiry(Expiry::Never)
        .with_scope("stream:orders:*")
        .with_scope("tokens:read")
        .with_network("127.0.0.0/8");
    let issued = root.create_token(&new).await.unwrap();
    assert!(issued.token.starts_with("lk_"));
    assert_eq!(issued.expires_at_us, 0);

    let details = root.get_token("ci-deploy").await.unwrap();
    assert_eq!(details.id, issued.id);
    assert_eq!(details.description, "deploys from CI");
    assert_eq!(details.status, TokenStatus::Active);
    assert_eq!(details.scopes, ["stream:orders:*", "tokens:read"]);
    assert_eq!(details.networks, ["127.0.0.0/8"]);
    assert_eq!(root.get_token(issued.id).await.unwrap(), details);

    // Authorize: allowed for a covered scope, denied for another.
    let answer = root.authorize(&issued.token, "stream:orders:write", Some("127.0.0.1:4000")).await.unwrap();
    assert_eq!(answer.decision, Decision::Allowed);
    assert_eq!((answer.user_id, answer.username.as_str(), answer.token_id), (0, "iggy", issued.id));
    let answer = root.authorize(&issued.token, "stream:payments:write", Some("127.0.0.1")).await.unwrap();
    assert_eq!(answer.decision, Decision::Scope);
    let answer = root.authorize(&issued.token, "stream:orders:read", Some("10.0.0.1")).await.unwrap();
    assert_eq!(answer.decision, Decision::Network);

    // A token session may read tokens but not write (scope tokens:read only).
    let mut scoped = connect(server.address).await;
    assert_eq!(scoped.login_with_personal_access_token(&issued.token).await.unwrap(), 0);
    assert_eq!(scoped.list_all_tokens(StatusFilter::All).await.unwrap().len(), 1);
    assert_eq!(status(scoped.create_personal_access_token("more", Expiry::Never).await), 20005);
    assert_eq!(status(scoped.get_me().await), 20005);

    // Update, then rotate: the old secret fails at once, the session ends.
    root.update_token(issued.id, Some("ci-deploy-2"), Some("renamed")).await.unwrap();
    let rotated = root.rotate_token("ci-deploy-2", RotateExpiry::Keep).await.unwrap();
    assert_eq!(rotated.id, issued.id);
    assert_ne!(rotated.token, issued.token);
    assert_eq!(
        status(connect(server.address).await.login_with_personal_access_token(&issued.token).await),
        20
    );
    assert_eq!(status(scoped.list_tokens(StatusFilter::All, 0, 0).await), 40);
    let answer = root.authorize(&rotated.token, "", Some("127.0.0.1")).await.unwrap();
    assert_eq!(answer.decision, Decision::Allowed);

    // Revoke keeps it listed; it can no longer log in.
    root.revoke_token(issued.id).await.unwrap();
    let revoked = root.list_all_tokens(StatusFilter::Revoked).await.unwrap();
    assert_eq!(revoked.len(), 1);
    assert_ne!(revoked[0].revoked_at_us, 0);
    assert!(root.list_all_tokens(StatusFilter::Active).await.unwrap().is_empty());
    assert_eq!(
        status(connect(server.address).await.login_with_personal_access_token(&rotated.token).await),
        20003
    );
    let answer = root.authorize(&rotated.token, "", Some("127.0.0.1")).await.unwrap();
    assert_eq!(answer.decision, Decision::Revoked);

    root.create_token(&NewToken::named("second")).await.unwrap();
    assert_eq!(root.revoke_all_tokens().await.unwrap(), 1);
    assert_eq!(root.delete_all_tokens().await.unwrap(), 2);
    assert!(root.list_all_tokens(StatusFilter::All).await.unwrap().is_empty());
}

#[tokio::test]
async fn every_extension_command_needs_a_login() {
    let home = DataHome::new();
    let server = TestServer::start(&home, &ServerSpec::default_root());
    let mut owner = root(server.address).await;
    let issued = create(&mut owner, NewToken::named("exists")).await;

    let mut client = connect(server.address).await;
    for round in ["before any login", "after a logout"] {
        assert_eq!(status(client.create_token(&NewToken::named("nope")).await), UNAUTHENTICATED, "{round}");
        assert_eq!(status(client.get_token(issued.id).await), UNAUTHENTICATED, "{round}");
        assert_eq!(status(client.list_tokens(StatusFilter::All, 0, 0).await), UNAUTHENTICATED, "{round}");
        assert_eq!(
            status(client.update_token(issued.id, Some("other"), None).await),
            UNAUTHENTICATED,
            "{round}"
        );
        assert_eq!(status(client.revoke_token(issued.id).await), UNAUTHENTICATED, "{round}");
        assert_eq!(
            status(client.rotate_token(issued.id, RotateExpiry::Keep).await),
            UNAUTHENTICATED,
            "{round}"
        );
        assert_eq!(status(client.delete_token(issued.id).await), UNAUTHENTICATED, "{round}");
        assert_eq!(status(client.revoke_all_tokens().await), UNAUTHENTICATED, "{round}");
        assert_eq!(status(client.delete_all_tokens().await), UNAUTHENTICATED, "{round}");
        assert_eq!(status(client.authorize(&issued.token, "", None).await), UNAUTHENTICATED, "{round}");
        client.login_user("iggy", "iggy").await.unwrap();
        client.logout_user().await.unwrap();
    }
    // None of that touched the token.
    let details = owner.get_token(issued.id).await.unwrap();
    assert_eq!((details.name.as_str(), details.status), ("exists", TokenStatus::Active));
}

#[tokio::test]
async fn create_refusals_and_their_codes() {
    const LIMIT: usize = 6;
    let home = DataHome::new();
    let spec = ServerSpec::default_root()
        .env("LATCHKEY_PERSONAL_ACCESS_TOKEN_MAX_TOKENS_PER_USER", &LIMIT.to_string());
    let server = TestServer::start(&home, &spec);
    let mut root = common::root(server.address).await;

    // Name bounds: 3–30 bytes, for the extension create and for Iggy's 42.
    assert_eq!(status(root.create_token(&NewToken::named("ab")).await), BAD_NAME);
    assert_eq!(status(root.create_token(&NewToken::named("n".repeat(31))).await), BAD_NAME);
    assert_eq!(status(root.create_personal_access_token("ab", Expiry::Never).await), BAD_NAME);
    create(&mut root, NewToken::named("abc")).await;
    create(&mut root, NewToken::named("n".repeat(30))).await;

    // Duplicate names, whichever command made the first one.
    assert_eq!(status(root.create_token(&NewToken::named("abc")).await), ALREADY_EXISTS);
    assert_eq!(status(root.create_personal_access_token("abc", Expiry::Never).await), ALREADY_EXISTS);

    // Description: at most 256 bytes (not characters).
    let longest = "é".repeat(128);
    assert_eq!(longest.len(), 256);
    let too_long = format!("{longest}a");
    let refused = root.create_token(&NewToken::named("desc").with_description(too_long)).await;
    assert_eq!(status(refused), BAD_DESCRIPTION);
    create(&mut root, NewToken::named("desc").with_description(longest.clone())).await;
    assert_eq!(root.get_token("desc").await.unwrap().description, longest);

    // Scopes: shape, parts, count (32 at most).
    let long_part = format!("{}:x:y", "t".repeat(65));
    for bad in [
        "tokens",
        "tokens:admin",
        "a:b",
        "a:b:c:d",
        "*:b:c",
        "a::c",
        "a:b c:d",
        "stream:orders:",
        "stream:ördérs:write",
        &long_part,
    ] {
        let refused = root.create_token(&NewToken::named("scoped").with_scope(bad)).await;
        assert_eq!(status(refused), BAD_SCOPE, "scope {bad:?}");
    }
    let mut too_many = NewToken::named("scoped");
    for index in 0..33 {
        too_many = too_many.with_scope(format!("stream:s{index}:read"));
    }
    assert_eq!(status(root.create_token(&too_many).await), BAD_SCOPE, "33 scopes");
    too_many.scopes.pop();
    create(&mut root, too_many).await;
    assert_eq!(root.get_token("scoped").await.unwrap().scopes.len(), 32);

    // Networks: addresses or CIDRs of either family, host bits zero, 16 at most.
    for bad in ["nonsense", "10.0.0.0/33", "10.0.0.1/8", "2001:db8::/129", "2001:db8::1/32", "10.0.0.0/8/1"] {
        let refused = root.create_token(&NewToken::named("netted").with_network(bad)).await;
        assert_eq!(status(refused), BAD_NETWORK, "network {bad:?}");
    }
    let mut too_many = NewToken::named("netted");
    for index in 0..17 {
        too_many = too_many.with_network(format!("10.{index}.0.0/16"));
    }
    assert_eq!(status(root.create_token(&too_many).await), BAD_NETWORK, "17 networks");
    too_many.networks.pop();
    create(&mut root, too_many).await;
    assert_eq!(root.get_token("netted").await.unwrap().networks.len(), 16);

    // An expiry whose absolute time does not fit in a u64: Iggy's 56.
    let refused =
        root.create_token(&NewToken::named("forever").with_expiry(Expiry::After(Duration::MAX))).await;
    assert_eq!(status(refused), BAD_EXPIRY);

    // The limit counts every token of the user, whichever command made it.
    create(&mut root, NewToken::named("sixth")).await;
    assert_eq!(all_tokens(&mut root).await.len(), LIMIT);
    assert_eq!(status(root.create_token(&NewToken::named("seventh")).await), LIMIT_REACHED);
    assert_eq!(status(root.create_personal_access_token("seventh", Expiry::Never).await), LIMIT_REACHED);
    // A refused request created nothing.
    let mut created = names(&mut root, StatusFilter::All).await;
    created.sort();
    let mut expected = vec!["abc".to_owned(), "n".repeat(30), "desc".into(), "scoped".into()];
    expected.extend(["netted".into(), "sixth".into()]);
    expected.sort();
    assert_eq!(created, expected);
}

#[tokio::test]
async fn get_update_and_the_token_commands_refuse_unknown_and_foreign_tokens() {
    let home = DataHome::new();
    let server = TestServer::start(&home, &ServerSpec::default_root().config(&two_users()));
    let mut root = common::root(server.address).await;
    let mut alice = connect(server.address).await;
    alice.login_user("alice", "alice-password").await.unwrap();
    create(&mut root, NewToken::named("root-temp")).await;
    let hers = create(&mut alice, NewToken::named("alices")).await;
    create(&mut alice, NewToken::named("alices-too")).await;

    // Unknown ids and names, and another user's token: 20 for every command.
    for selector in [
        latchkey_sdk::TokenSelector::Id(999),
        latchkey_sdk::TokenSelector::Name("nobody".into()),
        latchkey_sdk::TokenSelector::Id(hers.id),
        latchkey_sdk::TokenSelector::Name("alices".into()),
    ] {
        let what = format!("{selector}");
        assert_eq!(status(root.get_token(selector.clone()).await), NOT_FOUND, "get {what}");
        let update = root.update_token(selector.clone(), Some("renamed"), None).await;
        assert_eq!(status(update), NOT_FOUND, "update {what}");
        assert_eq!(status(root.revoke_token(selector.clone()).await), NOT_FOUND, "revoke {what}");
        let rotate = root.rotate_token(selector.clone(), RotateExpiry::Keep).await;
        assert_eq!(status(rotate), NOT_FOUND, "rotate {what}");
        assert_eq!(status(root.delete_token(selector.clone()).await), NOT_FOUND, "delete {what}");
    }
    // The all-token commands stay within the caller's own tokens.
    assert_eq!(root.revoke_all_tokens().await.unwrap(), 1);
    assert_eq!(root.delete_all_tokens().await.unwrap(), 1);
    assert_eq!(names(&mut alice, StatusFilter::Active).await, ["alices", "alices-too"]);
    assert_eq!(alice.get_token(hers.id).await.unwrap().revoked_at_us, 0);
    let mine = create(&mut root, NewToken::named("roots").with_description("root's")).await;

    // Update: name bounds, duplicates, description bound; each refusal changes nothing.
    let before = root.get_token(mine.id).await.unwrap();
    assert_eq!(status(root.update_token(mine.id, Some("ab"), None).await), BAD_NAME);
    assert_eq!(status(root.update_token(mine.id, Some(&"n".repeat(31)), None).await), BAD_NAME);
    let long = "d".repeat(257);
    assert_eq!(status(root.update_token(mine.id, None, Some(&long)).await), BAD_DESCRIPTION);
    create(&mut root, NewToken::named("taken")).await;
    assert_eq!(status(root.update_token(mine.id, Some("taken"), Some("x")).await), ALREADY_EXISTS);
    // Alice's name is not root's: no clash.
    assert_eq!(root.get_token(mine.id).await.unwrap(), before);

    // Success paths: rename to its own name, rename, description only,
    // both, by id and by name; nothing else changes.
    root.update_token("roots", Some("roots"), None).await.unwrap();
    root.update_token(mine.id, Some("alices"), None).await.unwrap();
    root.update_token("alices", None, Some("")).await.unwrap();
    let after = root.get_token(mine.id).await.unwrap();
    assert_eq!((after.name.as_str(), after.description.as_str()), ("alices", ""));
    root.update_token(mine.id, Some("roots-2"), Some(&"d".repeat(256))).await.unwrap();
    let after = root.get_token("roots-2").await.unwrap();
    assert_eq!(after.description.len(), 256);
    assert_eq!(
        TokenDetails { name: before.name.clone(), description: before.description.clone(), ..after.clone() },
        before
    );
    assert_eq!(status(root.get_token("roots").await), NOT_FOUND);
    // The old name is free again; the renamed token still logs in.
    create(&mut root, NewToken::named("roots")).await;
    assert_eq!(connect(server.address).await.login_with_personal_access_token(&mine.token).await.unwrap(), 0);
}

#[tokio::test]
async fn list_filters_by_status_and_pages_in_id_order() {
    const TOKENS: usize = 25;
    let home = DataHome::new();
    let spec = ServerSpec::default_root().env("LATCHKEY_PERSONAL_ACCESS_TOKEN_CLEANER_ENABLED", "false");
    let server = TestServer::start(&home, &spec);
    let mut root = common::root(server.address).await;

    // Names in reverse order, so id order and name order disagree.
    let mut ids = Vec::new();
    for index in (0..TOKENS).rev() {
        ids.push(create(&mut root, NewToken::named(format!("token-{index:02}"))).await.id);
    }
    assert!(ids.windows(2).all(|pair| pair[0] < pair[1]), "ids rise: {ids:?}");
    let revoked_ids = [ids[3], ids[11], ids[20]];
    for id in revoked_ids {
        root.revoke_token(id).await.unwrap();
    }
    let expiring = NewToken::named("short-lived").with_expiry(Expiry::After(Duration::from_millis(1)));
    let expired = create(&mut root, expiring).await;
    assert_ne!(expired.expires_at_us, 0);
    assert_eq!(expired.expires_at_us - expired.created_at_us, 1_000);
    wait_until_expired(&mut root, expired.id).await;
    // An expired token can neither log in nor pass Authorize.
    let mut client = connect(server.address).await;
    assert_eq!(status(client.login_with_personal_access_token(&expired.token).await), EXPIRED);
    let answer = root.authorize(&expired.token, "", None).await.unwrap();
    assert_eq!((answer.decision, answer.token_id), (Decision::Expired, expired.id));
    assert_eq!(answer.expires_at_us, expired.expires_at_us);

    // Pages of 10 over all 26 tokens: 10, 10, 6, ids ascending.
    let mut all_ids = ids.clone();
    all_ids.push(expired.id);
    let mut seen = Vec::new();
    let mut after_id = 0;
    let mut sizes = Vec::new();
    loop {
        let page = root.list_tokens(StatusFilter::All, after_id, 10).await.unwrap();
        sizes.push(page.tokens.len());
        seen.extend(page.tokens.iter().map(|token| token.id));
        if page.next_after_id == 0 {
            break;
        }
        assert_eq!(page.next_after_id, page.tokens.last().unwrap().id, "next_after_id is the page's last id");
        after_id = page.next_after_id;
    }
    assert_eq!(sizes, [10, 10, 6]);
    assert_eq!(seen, all_ids);
    // Limit 0 is the server's page maximum: everything at once.
    let page = root.list_tokens(StatusFilter::All, 0, 0).await.unwrap();
    assert_eq!((page.tokens.len(), page.next_after_id), (26, 0));
    // A page that ends exactly at the last token has no next page.
    let page = root.list_tokens(StatusFilter::All, ids[15], 10).await.unwrap();
    assert_eq!((page.tokens.len(), page.next_after_id), (10, 0));
    // Past the end: an empty last page.
    let page = root.list_tokens(StatusFilter::All, expired.id, 10).await.unwrap();
    assert_eq!((page.tokens.len(), page.next_after_id), (0, 0));

    // Filters, paged too.
    let mut active = Vec::new();
    let mut after_id = 0;
    loop {
        let page = root.list_tokens(StatusFilter::Active, after_id, 10).await.unwrap();
        assert!(page.tokens.iter().all(|token| token.status == TokenStatus::Active));
        active.extend(page.tokens.iter().map(|token| token.id));
        if page.next_after_id == 0 {
            break;
        }
        after_id = page.next_after_id;
    }
    let expected: Vec<u64> = ids.iter().copied().filter(|id| !revoked_ids.contains(id)).collect();
    assert_eq!(active, expected);
    let revoked = root.list_all_tokens(StatusFilter::Revoked).await.unwrap();
    assert_eq!(revoked.iter().map(|token| token.id).collect::<Vec<_>>(), revoked_ids);
    assert!(revoked.iter().all(|token| token.status == TokenStatus::Revoked && token.revoked_at_us != 0));
    let expired_list = root.list_all_tokens(StatusFilter::Expired).await.unwrap();
    assert_eq!(expired_list.len(), 1);
    assert_eq!((expired_list[0].id, expired_list[0].status), (expired.id, TokenStatus::Expired));
    assert_eq!(expired_list[0].revoked_at_us, 0);

    // Rotating it with its expiry kept would issue a dead secret: 54.
    assert_eq!(status(root.rotate_token(expired.id, RotateExpiry::Keep).await), EXPIRED);
    assert_eq!(root.get_token(expired.id).await.unwrap().status, TokenStatus::Expired);
    assert_eq!(status(client.login_with_personal_access_token(&expired.token).await), EXPIRED);

    // Revoked wins over expired.
    root.revoke_token(expired.id).await.unwrap();
    assert_eq!(root.get_token(expired.id).await.unwrap().status, TokenStatus::Revoked);
    assert!(root.list_all_tokens(StatusFilter::Expired).await.unwrap().is_empty());
}

#[tokio::test]
async fn revoke_keeps_the_token_listed_and_delete_removes_it() {
    let home = DataHome::new();
    let server = TestServer::start(&home, &ServerSpec::default_root());
    let mut root = common::root(server.address).await;
    let revoked = create(&mut root, NewToken::named("to-revoke").with_scope("tokens:read")).await;
    let deleted = create(&mut root, NewToken::named("to-delete")).await;
    let kept = create(&mut root, NewToken::named("kept")).await;

    root.revoke_token("to-revoke").await.unwrap();
    let first = root.get_token(revoked.id).await.unwrap();
    assert_eq!(first.status, TokenStatus::Revoked);
    assert!(first.revoked_at_us >= first.created_at_us, "{first:?}");
    assert_eq!(first.scopes, ["tokens:read"]);
    // Idempotent: a second revoke succeeds and keeps the first revoked_at.
    root.revoke_token(revoked.id).await.unwrap();
    assert_eq!(root.get_token(revoked.id).await.unwrap(), first);
    let mut client = connect(server.address).await;
    assert_eq!(status(client.login_with_personal_access_token(&revoked.token).await), REVOKED);
    assert_eq!(root.authorize(&revoked.token, "", None).await.unwrap().decision, Decision::Revoked);
    // A plain rotate does not bring a revoked token back (only one that
    // asks to reactivate it does: token_access.rs).
    assert_eq!(status(root.rotate_token(revoked.id, RotateExpiry::Keep).await), REVOKED);
    assert_eq!(status(client.login_with_personal_access_token(&revoked.token).await), REVOKED);
    // It can still be renamed and described, for the audit trail.
    root.update_token(revoked.id, Some("was-revoked"), Some("leaked in a log")).await.unwrap();
    assert_eq!(root.get_token("was-revoked").await.unwrap().revoked_at_us, first.revoked_at_us);

    root.delete_token("to-delete").await.unwrap();
    assert_eq!(status(root.get_token(deleted.id).await), NOT_FOUND);
    assert_eq!(status(root.delete_token(deleted.id).await), NOT_FOUND);
    assert_eq!(status(client.login_with_personal_access_token(&deleted.token).await), NOT_FOUND);
    let answer = root.authorize(&deleted.token, "", None).await.unwrap();
    assert_eq!((answer.decision, answer.token_id, answer.user_id), (Decision::Unknown, 0, 0));
    assert_eq!(names(&mut root, StatusFilter::All).await, ["was-revoked", "kept"]);
    // Iggy's list (41) no longer has it either.
    let iggy: Vec<String> =
        root.get_personal_access_tokens().await.unwrap().into_iter().map(|token| token.name).collect();
    assert!(!iggy.contains(&"to-delete".to_owned()), "{iggy:?}");

    // Revoke-all counts only the tokens it revoked; delete-all counts all.
    create(&mut root, NewToken::named("another")).await;
    assert_eq!(root.revoke_all_tokens().await.unwrap(), 2, "kept and another");
    let listed = all_tokens(&mut root).await;
    assert!(listed.iter().all(|token| token.status == TokenStatus::Revoked), "{listed:?}");
    let revoked_at = |name: &str| listed.iter().find(|token| token.name == name).unwrap().revoked_at_us;
    assert_eq!(revoked_at("was-revoked"), first.revoked_at_us, "an earlier revoke is kept");
    assert_eq!(root.revoke_all_tokens().await.unwrap(), 0);
    assert_eq!(status(client.login_with_personal_access_token(&kept.token).await), REVOKED);
    assert_eq!(root.delete_all_tokens().await.unwrap(), 3);
    assert!(all_tokens(&mut root).await.is_empty());
    assert_eq!(root.delete_all_tokens().await.unwrap(), 0);
    assert_eq!(status(client.login_with_personal_access_token(&kept.token).await), NOT_FOUND);
}

/// Protocol doc of 9107: "revokes every active token of the caller". An
/// expired token is not active: it keeps its status and is not counted.
#[tokio::test]
async fn revoke_all_leaves_expired_tokens_alone() {
    let home = DataHome::new();
    let spec = ServerSpec::default_root().env("LATCHKEY_PERSONAL_ACCESS_TOKEN_CLEANER_ENABLED", "false");
    let server = TestServer::start(&home, &spec);
    let mut root = common::root(server.address).await;
    create(&mut root, NewToken::named("active")).await;
    let expiring = NewToken::named("expired").with_expiry(Expiry::After(Duration::from_millis(1)));
    let expired = create(&mut root, expiring).await;
    wait_until_expired(&mut root, expired.id).await;
    assert_eq!(root.revoke_all_tokens().await.unwrap(), 1);
    let details = root.get_token(expired.id).await.unwrap();
    assert_eq!((details.status, details.revoked_at_us), (TokenStatus::Expired, 0));
}

#[tokio::test]
async fn a_token_session_ends_on_rotate_and_revoke_but_not_on_delete() {
    let home = DataHome::new();
    let server = TestServer::start(&home, &ServerSpec::default_root());
    let mut root = common::root(server.address).await;
    let rotated = create(&mut root, NewToken::named("rotated")).await;
    let revoked = create(&mut root, NewToken::named("revoked")).await;
    let deleted = create(&mut root, NewToken::named("deleted").with_scope("me:read")).await;
    let untouched = create(&mut root, NewToken::named("untouched")).await;
    let mut on_rotated = with_token(server.address, &rotated.token).await;
    let mut on_revoked = with_token(server.address, &revoked.token).await;
    let mut on_deleted = with_token(server.address, &deleted.token).await;
    let mut on_untouched = with_token(server.address, &untouched.token).await;
    for session in [&mut on_rotated, &mut on_revoked, &mut on_deleted, &mut on_untouched] {
        assert_eq!(session.get_me().await.unwrap().user_id, 0);
    }

    let fresh = root.rotate_token(rotated.id, RotateExpiry::Keep).await.unwrap();
    root.revoke_token(revoked.id).await.unwrap();
    root.delete_token(deleted.id).await.unwrap();

    // Rotated and revoked: the next request gets 40 and the session is over.
    assert_eq!(status(on_rotated.get_me().await), UNAUTHENTICATED);
    assert_eq!(status(on_rotated.list_tokens(StatusFilter::All, 0, 0).await), UNAUTHENTICATED);
    // Every command checks that the session still stands, 12 included.
    assert_eq!(status(on_revoked.get_cluster_metadata().await), UNAUTHENTICATED);
    assert_eq!(status(on_revoked.get_personal_access_tokens().await), UNAUTHENTICATED);
    // The connection itself stays usable: log in again with the new secret.
    assert_eq!(on_rotated.login_with_personal_access_token(&fresh.token).await.unwrap(), 0);
    assert_eq!(on_rotated.get_me().await.unwrap().user_id, 0);
    // Deleted: the session goes on (Iggy), with the token's scopes still in force.
    assert_eq!(on_deleted.get_me().await.unwrap().user_id, 0);
    assert_eq!(status(on_deleted.list_tokens(StatusFilter::All, 0, 0).await), INSUFFICIENT_SCOPE);
    assert_eq!(on_deleted.get_me().await.unwrap().user_id, 0);
    // Other sessions and the password session are unaffected; so is a
    // session whose token is only renamed or described.
    root.update_token(untouched.id, Some("renamed"), Some("same secret")).await.unwrap();
    assert_eq!(on_untouched.get_me().await.unwrap().user_id, 0);
    assert_eq!(root.get_me().await.unwrap().user_id, 0);

    // A token session that rotates its own token gets the new secret, then
    // its session is over; the same for revoke-all, which includes its own.
    let own = on_untouched.rotate_token(untouched.id, RotateExpiry::Keep).await.unwrap();
    assert_eq!(status(on_untouched.get_me().await), UNAUTHENTICATED);
    assert_eq!(on_untouched.login_with_personal_access_token(&own.token).await.unwrap(), 0);
    let active = root.list_all_tokens(StatusFilter::Active).await.unwrap().len() as u32;
    assert_eq!(on_untouched.revoke_all_tokens().await.unwrap(), active);
    assert_eq!(status(on_untouched.get_me().await), UNAUTHENTICATED);
    assert_eq!(status(on_rotated.get_me().await), UNAUTHENTICATED);
    // Delete-all leaves the deleting session open, as a delete does.
    let last = create(&mut root, NewToken::named("last")).await;
    let mut on_last = with_token(server.address, &last.token).await;
    assert_eq!(on_last.delete_all_tokens().await.unwrap(), 4, "rotated, revoked, renamed, last");
    assert_eq!(on_last.get_me().await.unwrap().user_id, 0);
    assert!(all_tokens(&mut on_last).await.is_empty());
}

#[tokio::test]
async fn rotate_stops_the_old_secret_on_every_shard_at_once() {
    const CONNECTIONS: usize = 8;
    let home = DataHome::new();
    let spec = ServerSpec::default_root().env("LATCHKEY_SYSTEM_SHARDS", "4");
    let server = TestServer::start(&home, &spec);
    let mut root = common::root(server.address).await;
    let new = NewToken::named("rotating")
        .with_description("rotated often")
        .with_expiry(Expiry::After(Duration::from_secs(86_400)))
        .with_scope("stream:orders:*")
        .with_scope("me:read")
        .with_network("127.0.0.0/8");
    let issued = create(&mut root, new).await;
    let before = root.get_token(issued.id).await.unwrap();

    // Connections are spread round-robin over the shards: every shard has two.
    let mut clients = Vec::new();
    for _ in 0..CONNECTIONS {
        let mut client = connect(server.address).await;
        assert_eq!(client.login_with_personal_access_token(&issued.token).await.unwrap(), 0);
        client.logout_user().await.unwrap();
        clients.push(client);
    }

    let rotated = root.rotate_token(issued.id, RotateExpiry::Keep).await.unwrap();
    // Right after the reply, on every shard: the old secret is unknown…
    for client in &mut clients {
        assert_eq!(status(client.login_with_personal_access_token(&issued.token).await), NOT_FOUND);
    }
    for _ in 0..CONNECTIONS {
        let mut fresh = connect(server.address).await;
        assert_eq!(status(fresh.login_with_personal_access_token(&issued.token).await), NOT_FOUND);
    }
    // …and the new one works.
    for client in &mut clients {
        assert_eq!(client.login_with_personal_access_token(&rotated.token).await.unwrap(), 0);
        assert_eq!(client.get_me().await.unwrap().user_id, 0);
    }
    assert_eq!(
        root.authorize(&issued.token, "", Some("127.0.0.1")).await.unwrap().decision,
        Decision::Unknown
    );

    // Same id, name, description, scopes, networks, creation and expiry.
    assert_eq!(rotated.id, issued.id);
    assert_eq!((rotated.created_at_us, rotated.expires_at_us), (issued.created_at_us, issued.expires_at_us));
    assert_token_shape(&rotated.token);
    let after = root.get_token(issued.id).await.unwrap();
    assert_eq!(
        TokenDetails { last_used_at_us: 0, last_used_address: String::new(), ..after.clone() },
        before
    );

    // A new expiry, or none.
    let again = root.rotate_token("rotating", RotateExpiry::After(Duration::from_secs(3_600))).await.unwrap();
    assert_ne!(again.expires_at_us, 0);
    assert!(again.expires_at_us < issued.expires_at_us, "one hour from now is before one day from creation");
    assert_eq!(root.get_token(issued.id).await.unwrap().expires_at_us, again.expires_at_us);
    let never = root.rotate_token(issued.id, RotateExpiry::Never).await.unwrap();
    assert_eq!(never.expires_at_us, 0);
    assert_eq!(root.get_token(issued.id).await.unwrap().expires_at_us, 0);
    for stale in [&rotated.token, &again.token] {
        assert_eq!(
            status(connect(server.address).await.login_with_personal_access_token(stale).await),
            NOT_FOUND
        );
    }
    assert_eq!(with_token(server.address, &never.token).await.get_me().await.unwrap().user_id, 0);
}

#[tokio::test]
async fn iggy_token_commands_are_unchanged_next_to_the_extensions() {
    let home = DataHome::new();
    let server = TestServer::start(&home, &ServerSpec::default_root());
    let mut root = common::root(server.address).await;

    // 42 with "server default" (0): never expires, as in Iggy; full access.
    let plain = root.create_personal_access_token("plain", Expiry::ServerDefault).await.unwrap();
    assert_token_shape(&plain);
    let timed =
        root.create_personal_access_token("timed", Expiry::After(Duration::from_secs(600))).await.unwrap();
    let details = root.get_token("plain").await.unwrap();
    assert_eq!(details.status, TokenStatus::Active);
    assert_eq!((details.expires_at_us, details.revoked_at_us), (0, 0));
    assert!(details.scopes.is_empty() && details.networks.is_empty() && details.description.is_empty());
    let timed_details = root.get_token("timed").await.unwrap();
    assert_eq!(timed_details.expires_at_us - timed_details.created_at_us, 600_000_000);
    assert_eq!(root.authorize(&plain, "anything:at:all", None).await.unwrap().decision, Decision::Allowed);
    assert_eq!(root.authorize(&timed, "tokens:write", None).await.unwrap().decision, Decision::Allowed);

    // 41 lists tokens made either way, with Iggy's fields.
    create(&mut root, NewToken::named("extended").with_scope("tokens:read").with_description("new")).await;
    let iggy = root.get_personal_access_tokens().await.unwrap();
    let listed: Vec<(&str, Option<u64>)> =
        iggy.iter().map(|token| (token.name.as_str(), token.expiry_at_us)).collect();
    assert_eq!(listed, [("extended", None), ("plain", None), ("timed", Some(timed_details.expires_at_us))]);

    // A 42 token's session can do everything, the extensions included.
    let mut session = with_token(server.address, &plain).await;
    assert_eq!(session.get_me().await.unwrap().user_id, 0);
    assert_eq!(all_tokens(&mut session).await.len(), 3);
    create(&mut session, NewToken::named("from-plain").with_scope("stream:x:read")).await;
    session.create_personal_access_token("also-from-plain", Expiry::Never).await.unwrap();

    // 43 deletes extension tokens too; 44 logs in with them.
    root.delete_personal_access_token("extended").await.unwrap();
    assert_eq!(status(root.get_token("extended").await), NOT_FOUND);
    assert_eq!(status(root.delete_personal_access_token("extended").await), NOT_FOUND);
    let scoped = root.rotate_token("from-plain", RotateExpiry::Keep).await.unwrap();
    assert_eq!(
        connect(server.address).await.login_with_personal_access_token(&scoped.token).await.unwrap(),
        0
    );
    assert_eq!(status(session.delete_personal_access_token("nobody").await), NOT_FOUND);
}

#[tokio::test]
async fn restarts_keep_every_new_field_and_flushed_last_uses() {
    let home = DataHome::new();
    let spec = ServerSpec::default_root()
        .env("LATCHKEY_SYSTEM_SHARDS", "2")
        .env("LATCHKEY_PERSONAL_ACCESS_TOKEN_LAST_USED_FLUSH_INTERVAL", "100 ms");
    let server = TestServer::start(&home, &spec);
    let mut root = common::root(server.address).await;
    let described = NewToken::named("described")
        .with_description("kept across restarts")
        .with_expiry(Expiry::After(Duration::from_secs(86_400)))
        .with_scope("stream:orders:*")
        .with_scope("tokens:read")
        .with_network("127.0.0.0/8")
        .with_network("2001:db8::/32");
    let described = create(&mut root, described).await;
    create(&mut root, NewToken::named("revoked").with_scope("me:read")).await;
    root.revoke_token("revoked").await.unwrap();
    let old_secret = create(&mut root, NewToken::named("rotated").with_scope("stream:x:read")).await;
    let rotated =
        root.rotate_token("rotated", RotateExpiry::After(Duration::from_secs(7_200))).await.unwrap();
    // A rename record carries name and description only: replay must keep
    // the scopes and networks.
    let renamed = NewToken::named("renamed-from")
        .with_description("old words")
        .with_scope("topic:*:read")
        .with_network("::ffff:192.0.2.0/120");
    create(&mut root, renamed).await;
    root.update_token("renamed-from", Some("renamed-to"), Some("new words")).await.unwrap();
    let used = create(&mut root, NewToken::named("used")).await;

    // A login records the last use; the shard writes it to the log within
    // the flush interval (the log grows by one record).
    let log_before = log_len(&home.data_dir());
    let session = with_token(server.address, &used.token).await;
    let used_details =
        wait_for_flushed_use(&home, &mut root, used.id, (log_before, 0), "the last use reaching the log")
            .await;
    assert!(used_details.last_used_address.starts_with("127.0.0.1:"), "{used_details:?}");
    let before = all_tokens(&mut root).await;
    assert_eq!(before.len(), 5);

    // Graceful stop, restart: every field as it was.
    drop((root, session));
    assert_eq!(server.stop().code(), Some(0));
    let server = TestServer::start(&home, &spec);
    let mut root = common::root(server.address).await;
    assert_eq!(all_tokens(&mut root).await, before);
    let revoked = root.get_token("revoked").await.unwrap();
    assert_eq!(
        (revoked.status, revoked.scopes.as_slice()),
        (TokenStatus::Revoked, &["me:read".to_owned()][..])
    );
    let mut client = connect(server.address).await;
    assert_eq!(status(client.login_with_personal_access_token(&old_secret.token).await), NOT_FOUND);

    // After SIGKILL: everything acknowledged and every flushed last use
    // survives. Each use below is waited for until a shard has written it
    // (the log grows), one at a time, so nothing is left unflushed.
    let log_before = log_len(&home.data_dir());
    assert_eq!(client.login_with_personal_access_token(&rotated.token).await.unwrap(), 0);
    let what = "the rotated token's use reaching the log";
    wait_for_flushed_use(&home, &mut root, rotated.id, (log_before, 0), what).await;
    let log_before = log_len(&home.data_dir());
    let answer =
        root.authorize(&described.token, "stream:orders:read", Some("[2001:db8::5]:443")).await.unwrap();
    assert_eq!(answer.decision, Decision::Allowed);
    let what = "the Authorize use reaching the log";
    wait_for_flushed_use(&home, &mut root, described.id, (log_before, 0), what).await;
    let log_before = log_len(&home.data_dir());
    let session = with_token(server.address, &used.token).await;
    let what = "the second login's use reaching the log";
    let previous = (log_before, used_details.last_used_at_us);
    wait_for_flushed_use(&home, &mut root, used.id, previous, what).await;
    root.revoke_token(described.id).await.unwrap();
    let before_kill = all_tokens(&mut root).await;
    let find = |tokens: &[TokenDetails], name: &str| tokens.iter().find(|t| t.name == name).unwrap().clone();
    assert!(find(&before_kill, "used").last_used_at_us > used_details.last_used_at_us);
    let described_after = find(&before_kill, "described");
    assert_eq!(described_after.last_used_address, "[2001:db8::5]:443");
    assert_ne!(described_after.revoked_at_us, 0);
    drop((root, client, session));
    server.kill();
    let server = TestServer::start(&home, &spec);
    let mut root = common::root(server.address).await;
    assert_eq!(all_tokens(&mut root).await, before_kill);
}

/// Compaction rewrites the log as one snapshot record per token (a Token
/// record carrying every new field); a restart must read them all back.
#[tokio::test]
async fn compaction_keeps_every_new_field() {
    let home = DataHome::new();
    let spec = ServerSpec::default_root()
        .env("LATCHKEY_SYSTEM_SHARDS", "1")
        .env("LATCHKEY_PERSONAL_ACCESS_TOKEN_LAST_USED_FLUSH_INTERVAL", "100 ms");
    // First without compaction, so the log only grows and a flushed last use
    // shows as growth.
    let server = TestServer::start(&home, &spec);
    let mut root = common::root(server.address).await;
    let full = NewToken::named("full")
        .with_description("every field")
        .with_expiry(Expiry::After(Duration::from_secs(86_400)))
        .with_scope("stream:*:write")
        .with_scope("authorize")
        .with_network("10.0.0.0/8")
        .with_network("2001:db8::/32");
    let full = create(&mut root, full).await;
    create(&mut root, NewToken::named("revoked").with_network("127.0.0.1")).await;
    root.revoke_token("revoked").await.unwrap();
    let old = create(&mut root, NewToken::named("rotated").with_scope("me:read")).await;
    let rotated = root.rotate_token(old.id, RotateExpiry::After(Duration::from_secs(600))).await.unwrap();
    create(&mut root, NewToken::named("renamed").with_scope("tokens:read")).await;
    root.update_token("renamed", Some("renamed-2"), Some("described later")).await.unwrap();
    root.create_personal_access_token("plain", Expiry::Never).await.unwrap();
    create(&mut root, NewToken::named("deleted")).await;
    root.delete_token("deleted").await.unwrap();
    // Last uses from both families, each waited for until it is in the log.
    let log_before = log_len(&home.data_dir());
    let answer =
        root.authorize(&full.token, "stream:orders:write", Some("[2001:db8::9]:7000")).await.unwrap();
    assert_eq!(answer.decision, Decision::Allowed);
    let what = "the Authorize use reaching the log";
    wait_for_flushed_use(&home, &mut root, full.id, (log_before, 0), what).await;
    let log_before = log_len(&home.data_dir());
    with_token(server.address, &rotated.token).await;
    let what = "the login's use reaching the log";
    wait_for_flushed_use(&home, &mut root, rotated.id, (log_before, 0), what).await;
    let before = all_tokens(&mut root).await;
    assert_eq!(before.iter().filter(|token| token.last_used_at_us != 0).count(), 2, "{before:?}");
    drop(root);
    assert_eq!(server.stop().code(), Some(0));

    // Then with a policy that compacts as soon as one record is dead; churn
    // drives the writer until a compaction has finished.
    let compacting = common::compacting(&spec);
    let server = TestServer::start(&home, &compacting);
    let mut root = common::root(server.address).await;
    assert_eq!(all_tokens(&mut root).await, before);
    churn_until_compacted(&server, &mut root).await;
    drop(root);
    assert_eq!(server.stop().code(), Some(0));
    // The file now starts with a Snapshot record: header (16), batch
    // header (28), record header (12), seq (8), commit time (8), then the
    // type, 3.
    let bytes = std::fs::read(log_path(&home.data_dir())).unwrap();
    assert_eq!(format_version(&home.data_dir()), CURRENT_FORMAT_VERSION);
    assert_eq!(bytes[16 + 28 + 12 + 16], 3, "the log was compacted");

    let server = TestServer::start(&home, &compacting);
    let mut root = common::root(server.address).await;
    assert_eq!(all_tokens(&mut root).await, before);
    let mut client = connect(server.address).await;
    assert_eq!(status(client.login_with_personal_access_token(&old.token).await), NOT_FOUND);
    assert_eq!(client.login_with_personal_access_token(&rotated.token).await.unwrap(), 0);
    let answer = root.authorize(&full.token, "stream:x:write", Some("10.1.1.1")).await.unwrap();
    assert_eq!(answer.decision, Decision::Allowed);
    let after = create(&mut root, NewToken::named("after")).await;
    assert!(before.iter().all(|token| token.id < after.id), "ids are not reused after compaction");
}

/// Connections hand their uses over when they close and the server writes
/// them once more at a graceful stop (server/src/server.rs), so a clean
/// restart loses no last use even when the flush interval never came round.
#[tokio::test]
async fn a_graceful_stop_writes_last_uses_not_yet_flushed() {
    let home = DataHome::new();
    let spec = ServerSpec::default_root()
        .env("LATCHKEY_SYSTEM_SHARDS", "2")
        .env("LATCHKEY_PERSONAL_ACCESS_TOKEN_LAST_USED_FLUSH_INTERVAL", "1 h");
    let server = TestServer::start(&home, &spec);
    let mut root = common::root(server.address).await;
    let used = create(&mut root, NewToken::named("used")).await;
    let mut session = with_token(server.address, &used.token).await;
    session.ping().await.unwrap();
    drop((root, session));
    assert_eq!(server.stop().code(), Some(0));
    let server = TestServer::start(&home, &spec);
    let mut root = common::root(server.address).await;
    let details = root.get_token(used.id).await.unwrap();
    assert_ne!(details.last_used_at_us, 0, "the last use was lost at a graceful stop");
    assert!(details.last_used_address.starts_with("127.0.0.1:"), "{details:?}");
}

/// A token's last use, as GetToken reports it, never goes back in time:
/// not even while the gathered uses are being handed to the writer.
#[tokio::test]
async fn the_reported_last_use_never_goes_back_while_a_flush_is_in_flight() {
    const LOGINS: usize = 400;
    let home = DataHome::new();
    // One shard: the logins and the reads share its memory and its flushes.
    let spec = ServerSpec::default_root()
        .env("LATCHKEY_SYSTEM_SHARDS", "1")
        .env("LATCHKEY_PERSONAL_ACCESS_TOKEN_LAST_USED_FLUSH_INTERVAL", "5 ms");
    let server = TestServer::start(&home, &spec);
    let mut root = common::root(server.address).await;
    let used = create(&mut root, NewToken::named("used")).await;
    let mut session = connect(server.address).await;
    let mut latest_us = 0;
    for login in 0..LOGINS {
        session.login_with_personal_access_token(&used.token).await.unwrap();
        let reported = root.get_token(used.id).await.unwrap().last_used_at_us;
        // A connection's first use shows at once; later ones within
        // USES_HAND_OVER_INTERVAL_US may lag, but never go back.
        assert!(
            reported != 0 && reported >= latest_us,
            "login {login}: last use reported as {reported} after {latest_us}"
        );
        latest_us = reported;
    }
}

#[tokio::test]
async fn a_version_1_log_loads_is_upgraded_and_takes_new_records() {
    let home = DataHome::new();
    let spec = ServerSpec::default_root().config(&two_users()).env("LATCHKEY_SYSTEM_SHARDS", "1");
    // The first start creates the server key and the root credentials.
    let server = TestServer::start(&home, &spec);
    assert_eq!(server.stop().code(), Some(0));
    std::fs::write(log_path(&home.data_dir()), FIXTURE_V1).expect("write the v1 fixture");
    assert_eq!(format_version(&home.data_dir()), 1);

    let server = TestServer::start(&home, &spec);
    assert_eq!(
        format_version(&home.data_dir()),
        CURRENT_FORMAT_VERSION,
        "rewritten as the current version at start"
    );
    // server/src/log/tests.rs `history()`: root-ci (id 1, user 0), alice-one
    // (id 2, deleted), alice-two (id 3, user 1), bob (id 4, user 2).
    let mut root = common::root(server.address).await;
    let root_ci = all_tokens(&mut root).await;
    assert_eq!(root_ci.len(), 1);
    let expected_root_ci = TokenDetails {
        id: 1,
        name: "root-ci".into(),
        description: String::new(),
        status: TokenStatus::Active,
        created_at_us: 1_700_000_000_000_001,
        expires_at_us: 0,
        revoked_at_us: 0,
        last_used_at_us: 0,
        last_used_address: String::new(),
        scopes: Vec::new(),
        networks: Vec::new(),
    };
    assert_eq!(root_ci[0], expected_root_ci);
    let mut alice = connect(server.address).await;
    alice.login_user("alice", "alice-password").await.unwrap();
    let alices = all_tokens(&mut alice).await;
    let alices: Vec<(u64, &str, u64)> =
        alices.iter().map(|token| (token.id, token.name.as_str(), token.expires_at_us)).collect();
    assert_eq!(alices, [(3, "alice-two", 0)]);
    let mut bob = connect(server.address).await;
    bob.login_user("bob", "bob-password").await.unwrap();
    let bobs = all_tokens(&mut bob).await;
    assert_eq!(bobs.len(), 1);
    assert_eq!((bobs[0].id, bobs[0].name.as_str()), (4, "bob"));
    assert_eq!((bobs[0].expires_at_us, bobs[0].status), (1_900_000_000_000_000, TokenStatus::Active));

    // Version 2 records on top: a scoped token (ids continue after the
    // deleted one), a revoke, a rename.
    let new = NewToken::named("v2-token").with_description("after the upgrade").with_scope("stream:a:read");
    let issued = create(&mut root, new).await;
    assert_eq!(issued.id, 5);
    root.revoke_token("root-ci").await.unwrap();
    alice.update_token("alice-two", Some("alice-2"), Some("renamed")).await.unwrap();
    let roots = all_tokens(&mut root).await;
    let alices = all_tokens(&mut alice).await;
    drop((root, alice, bob));
    assert_eq!(server.stop().code(), Some(0));

    let server = TestServer::start(&home, &spec);
    assert_eq!(format_version(&home.data_dir()), CURRENT_FORMAT_VERSION);
    let mut root = common::root(server.address).await;
    assert_eq!(all_tokens(&mut root).await, roots);
    assert_eq!(root.get_token("root-ci").await.unwrap().status, TokenStatus::Revoked);
    let mut alice = connect(server.address).await;
    alice.login_user("alice", "alice-password").await.unwrap();
    assert_eq!(all_tokens(&mut alice).await, alices);
    assert_eq!(alices[0].description, "renamed");
    // The scoped token still carries its scope after the restart: it may
    // not list tokens (20005), whatever else it may do.
    assert_eq!(
        status(with_token(server.address, &issued.token).await.list_tokens(StatusFilter::All, 0, 0).await),
        20005
    );
}
