//! Editing an existing token's scopes and networks (9109 EditTokenAccess)
//! and bringing a revoked or expired token back (9105 with the reactivate
//! flag), end to end over TCP: what each does, every status each answers
//! with, the sessions they end, their audit events, and that both survive
//! a restart (graceful and SIGKILL) and a compaction.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use latchkey_protocol::body::encode_to_vec;
use latchkey_protocol::ext::{AccessEdit, EditTokenAccess, RotateToken, TokenSelector};
use latchkey_sdk::{Decision, Expiry, NewToken, RotateExpiry, StatusFilter, TokenDetails, TokenStatus};
use latchkey_tests::{DataHome, ServerSpec, TestServer};

const EDIT_TOKEN_ACCESS: u32 = 9109;
const ROTATE_TOKEN: u32 = 9105;
const INVALID_COMMAND: u32 = 3;
const INVALID_FORMAT: u32 = 4;
const NOT_FOUND: u32 = 20;
const UNAUTHENTICATED: u32 = 40;
const EXPIRED: u32 = 54;
const REVOKED: u32 = 20003;
const INSUFFICIENT_SCOPE: u32 = 20005;
const LIFETIME_NOT_ALLOWED: u32 = 20006;
const BAD_SCOPE: u32 = 20007;
const BAD_NETWORK: u32 = 20008;
const MANAGEMENT_NOT_ALLOWED: u32 = 20010;

fn log_len(data_dir: &Path) -> u64 {
    std::fs::metadata(data_dir.join("tokens.log")).expect("tokens.log").len()
}

fn add_scope(scope: &str) -> AccessEdit {
    AccessEdit::AddScope(scope.to_owned())
}

fn remove_scope(scope: &str) -> AccessEdit {
    AccessEdit::RemoveScope(scope.to_owned())
}

fn add_network(network: &str) -> AccessEdit {
    AccessEdit::AddNetwork(network.to_owned())
}

fn remove_network(network: &str) -> AccessEdit {
    AccessEdit::RemoveNetwork(network.to_owned())
}

/// The body of an EditTokenAccess request, for hand-built frames.
fn edit_body(id: u64, edits: Vec<AccessEdit>) -> Vec<u8> {
    encode_to_vec(&EditTokenAccess { token: TokenSelector::Id(id), edits })
}

/// Waits until the server has written `event` to its log: an audit line
/// may reach the harness's reader just after the client has its answer.
async fn wait_for_log(server: &TestServer, wanted: &str) -> String {
    let poll = Poll::new("an audit event in the server's log");
    loop {
        let logs = server.logs();
        if let Some(line) = logs.lines().find(|line| line.contains(wanted)) {
            return line.to_owned();
        }
        poll.pause().await;
    }
}

fn alice() -> String {
    users_config(&[TestUser { id: 1, username: "alice", password: "alice-password", active: true }])
}

#[tokio::test]
async fn scopes_and_networks_are_added_removed_and_cleared_and_the_rest_is_kept() {
    let home = DataHome::new();
    let server = TestServer::start(&home, &ServerSpec::default_root());
    let mut root = common::root(server.address).await;
    let new = NewToken::named("ci-deploy")
        .with_description("deploys from CI")
        .with_expiry(Expiry::After(Duration::from_secs(86_400)))
        .with_scope("stream:orders:write")
        .with_scope("tokens:read")
        .with_network("10.0.0.0/8")
        .with_network("2001:db8::/32");
    let issued = create(&mut root, new).await;
    let before = root.get_token(issued.id).await.unwrap();

    // docs/protocol.md's example: one change of three edits.
    let edits =
        vec![add_scope("stream:payments:read"), remove_scope("tokens:read"), remove_network("2001:db8::/32")];
    root.edit_token_access(issued.id, edits).await.unwrap();
    let after = root.get_token("ci-deploy").await.unwrap();
    assert_eq!(after.scopes, ["stream:orders:write", "stream:payments:read"]);
    assert_eq!(after.networks, ["10.0.0.0/8"]);
    let unchanged =
        TokenDetails { scopes: before.scopes.clone(), networks: before.networks.clone(), ..after.clone() };
    assert_eq!(unchanged, before, "only the scopes and networks changed");

    // By name; clear, then add: exactly what was added, in normal form.
    let edits = [AccessEdit::ClearNetworks, add_network("127.0.0.1"), add_network("::ffff:192.0.2.0/120")];
    root.edit_token_access("ci-deploy", edits).await.unwrap();
    assert_eq!(root.get_token(issued.id).await.unwrap().networks, ["127.0.0.1/32", "192.0.2.0/24"]);
    // A remove compares in normal form too.
    root.edit_token_access(issued.id, [remove_network("192.0.2.0/24"), remove_network("::ffff:127.0.0.1")])
        .await
        .unwrap();
    assert!(root.get_token(issued.id).await.unwrap().networks.is_empty(), "any address again");
    // It works from here now: Authorize follows at once.
    let answer = root.authorize(&issued.token, "stream:payments:read", Some("192.0.2.99:1")).await.unwrap();
    assert_eq!(answer.decision, Decision::Allowed);
    let answer = root.authorize(&issued.token, "tokens:read", Some("10.1.1.1")).await.unwrap();
    assert_eq!(answer.decision, Decision::Scope, "tokens:read was removed");

    // Edits that change nothing are answered and write nothing.
    let length = log_len(&home.data_dir());
    for edits in [
        vec![],
        vec![add_scope("stream:orders:write")],
        vec![remove_scope("me:read"), remove_network("10.9.9.0/24")],
        vec![add_scope("me:read"), remove_scope("me:read")],
        vec![AccessEdit::ClearNetworks],
    ] {
        root.edit_token_access(issued.id, edits.clone()).await.unwrap_or_else(|e| panic!("{edits:?}: {e}"));
    }
    assert_eq!(log_len(&home.data_dir()), length, "a change that changes nothing writes nothing");

    // Clearing the scopes gives full access; the description stays.
    root.edit_token_access(issued.id, [AccessEdit::ClearScopes]).await.unwrap();
    let full = root.get_token(issued.id).await.unwrap();
    assert!(full.scopes.is_empty());
    assert_eq!(full.description, "deploys from CI");
    let answer = root.authorize(&issued.token, "anything:at:all", None).await.unwrap();
    assert_eq!(answer.decision, Decision::Allowed);

    // Revoked and expired tokens can be edited too.
    root.revoke_token(issued.id).await.unwrap();
    root.edit_token_access(issued.id, [add_scope("me:read")]).await.unwrap();
    let revoked = root.get_token(issued.id).await.unwrap();
    assert_eq!(
        (revoked.status, revoked.scopes.as_slice()),
        (TokenStatus::Revoked, &["me:read".to_owned()][..])
    );

    // The audit event names the lists as they now are.
    let line = wait_for_log(&server, "token_access_changed").await;
    assert!(line.contains(&format!("token_id={}", issued.id)), "{line}");
    let last = wait_for_log(&server, "scopes=me:read").await;
    assert!(last.contains("token_access_changed"), "{last}");
    assert!(!server.logs().contains(issued.token.expose()), "a secret reached the log");
}

#[tokio::test]
async fn every_refusal_of_an_access_edit_has_its_code() {
    let home = DataHome::new();
    let server = TestServer::start(&home, &ServerSpec::default_root().config(&alice()));
    let mut root = common::root(server.address).await;
    let target = create(&mut root, NewToken::named("target").with_scope("stream:orders:write")).await;

    // 40 before login; decoding comes first (3 and 4) either way.
    let mut anonymous = Raw::connect(server.address).await;
    assert_eq!(anonymous.status(EDIT_TOKEN_ACCESS, &edit_body(target.id, vec![])).await, UNAUTHENTICATED);
    let good = edit_body(target.id, vec![add_scope("me:read")]);
    let mut raw = Raw::connect(server.address).await;
    assert_eq!(raw.status(LOGIN_USER, &login_body(b"iggy", b"iggy")).await, 0);
    for client in [&mut anonymous, &mut raw] {
        assert_eq!(client.status(EDIT_TOKEN_ACCESS, &[]).await, INVALID_COMMAND, "no body");
        assert_eq!(client.status(EDIT_TOKEN_ACCESS, &good[..good.len() - 1]).await, INVALID_COMMAND, "cut");
        let mut longer = good.clone();
        longer.push(0);
        assert_eq!(client.status(EDIT_TOKEN_ACCESS, &longer).await, INVALID_COMMAND, "trailing");
        let mut unknown_op = good.clone();
        unknown_op[10] = 7;
        assert_eq!(client.status(EDIT_TOKEN_ACCESS, &unknown_op).await, INVALID_FORMAT, "op 7");
        let empty_item = [1, 1, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0];
        assert_eq!(client.status(EDIT_TOKEN_ACCESS, &empty_item).await, INVALID_FORMAT, "zero-length item");
        let mut bad_kind = good.clone();
        bad_kind[0] = 3;
        assert_eq!(client.status(EDIT_TOKEN_ACCESS, &bad_kind).await, INVALID_FORMAT, "selector kind");
    }
    assert_eq!(raw.status(EDIT_TOKEN_ACCESS, &good).await, 0);

    // Malformed items: 20007 for a scope, 20008 for a network, the first decides.
    for bad in ["a:b", "*:x:y", "stream:orders", "a:b c:d", "tokens"] {
        assert_eq!(status(root.edit_token_access(target.id, [add_scope(bad)]).await), BAD_SCOPE, "{bad}");
        assert_eq!(status(root.edit_token_access(target.id, [remove_scope(bad)]).await), BAD_SCOPE, "{bad}");
    }
    for bad in ["10.0.0.1/8", "10.0.0.0/33", "nonsense", "2001:db8::/129"] {
        assert_eq!(status(root.edit_token_access(target.id, [add_network(bad)]).await), BAD_NETWORK, "{bad}");
        assert_eq!(
            status(root.edit_token_access(target.id, [remove_network(bad)]).await),
            BAD_NETWORK,
            "{bad}"
        );
    }
    let both = [add_network("nonsense"), add_scope("a:b")];
    assert_eq!(status(root.edit_token_access(target.id, both).await), BAD_NETWORK);
    // Malformed items are refused before the token is looked up.
    assert_eq!(status(root.edit_token_access(999, [add_scope("a:b")]).await), BAD_SCOPE);

    // No such token, or another user's: 20.
    assert_eq!(status(root.edit_token_access(999, [add_scope("me:read")]).await), NOT_FOUND);
    assert_eq!(status(root.edit_token_access("nobody", [add_scope("me:read")]).await), NOT_FOUND);
    let mut alice = connect(server.address).await;
    alice.login_user("alice", "alice-password").await.unwrap();
    let hers = create(&mut alice, NewToken::named("hers")).await;
    assert_eq!(status(root.edit_token_access(hers.id, [add_scope("me:read")]).await), NOT_FOUND);
    assert_eq!(alice.get_token(hers.id).await.unwrap().scopes, Vec::<String>::new());

    // The bounds of the result: 32 scopes, 16 networks.
    // The target has stream:orders:write and me:read (added above).
    let scopes = (1..=30).map(|n| add_scope(&format!("stream:s{n}:read")));
    root.edit_token_access(target.id, scopes).await.unwrap();
    assert_eq!(root.get_token(target.id).await.unwrap().scopes.len(), 32);
    assert_eq!(
        status(root.edit_token_access(target.id, [add_scope("stream:one-more:read")]).await),
        BAD_SCOPE
    );
    let swap = [remove_scope("me:read"), add_scope("stream:one-more:read")];
    root.edit_token_access(target.id, swap).await.unwrap();
    let networks: Vec<AccessEdit> = (0..16).map(|n| add_network(&format!("10.{n}.0.0/16"))).collect();
    root.edit_token_access(target.id, networks.clone()).await.unwrap();
    assert_eq!(status(root.edit_token_access(target.id, [add_network("192.0.2.1")]).await), BAD_NETWORK);
    let details = root.get_token(target.id).await.unwrap();
    assert_eq!((details.scopes.len(), details.networks.len()), (32, 16), "refused edits change nothing");

    // Token sessions: tokens:write is needed; a scoped one adds only what
    // its own scopes cover and may not leave a scoped token with none.
    let reader = create(&mut root, NewToken::named("reader").with_scope("tokens:read")).await;
    let mut on_reader = with_token(server.address, &reader.token).await;
    assert_eq!(
        status(on_reader.edit_token_access(target.id, [AccessEdit::ClearNetworks]).await),
        INSUFFICIENT_SCOPE
    );
    let writer_token =
        create(&mut root, NewToken::named("writer").with_scope("tokens:write").with_scope("stream:orders:*"))
            .await;
    let narrow = create(&mut root, NewToken::named("narrow").with_scope("stream:orders:read")).await;
    let open = create(&mut root, NewToken::named("open")).await;
    let mut on_writer = with_token(server.address, &writer_token.token).await;
    let uncovered = [add_scope("stream:payments:read")];
    assert_eq!(status(on_writer.edit_token_access(narrow.id, uncovered).await), INSUFFICIENT_SCOPE);
    assert_eq!(
        status(on_writer.edit_token_access(narrow.id, [add_scope("stream:*:read")]).await),
        INSUFFICIENT_SCOPE
    );
    on_writer.edit_token_access(narrow.id, [add_scope("stream:orders:write")]).await.unwrap();
    // Narrowing is fine: removing a scope, or giving a full-access token one.
    on_writer.edit_token_access(narrow.id, [remove_scope("stream:orders:read")]).await.unwrap();
    on_writer.edit_token_access(open.id, [add_scope("stream:orders:read")]).await.unwrap();
    assert_eq!(
        status(on_writer.edit_token_access(narrow.id, [AccessEdit::ClearScopes]).await),
        INSUFFICIENT_SCOPE
    );
    let last = [remove_scope("stream:orders:write")];
    assert_eq!(status(on_writer.edit_token_access(narrow.id, last).await), INSUFFICIENT_SCOPE);
    // Networks are not limited for token sessions, as on create.
    on_writer
        .edit_token_access(narrow.id, [add_network("10.0.0.0/8"), AccessEdit::ClearNetworks])
        .await
        .unwrap();
    let narrow_now = root.get_token(narrow.id).await.unwrap();
    assert_eq!(narrow_now.scopes, ["stream:orders:write"]);
    // A full-access token session may clear them.
    let full = create(&mut root, NewToken::named("full")).await;
    let mut on_full = with_token(server.address, &full.token).await;
    on_full.edit_token_access(narrow.id, [AccessEdit::ClearScopes]).await.unwrap();
    assert!(root.get_token(narrow.id).await.unwrap().scopes.is_empty());
    drop(server);

    // The policy can keep token sessions from managing tokens: 20010.
    let home = DataHome::new();
    let strict = ServerSpec::default_root()
        .env("LATCHKEY_PERSONAL_ACCESS_TOKEN_TOKEN_SESSIONS_MANAGE_TOKENS", "false");
    let server = TestServer::start(&home, &strict);
    let mut root = common::root(server.address).await;
    let own = create(&mut root, NewToken::named("own")).await;
    let mut session = with_token(server.address, &own.token).await;
    let refused = session.edit_token_access(own.id, [add_scope("me:read")]).await;
    assert_eq!(status(refused), MANAGEMENT_NOT_ALLOWED);
    root.edit_token_access(own.id, [add_scope("me:read")]).await.unwrap();
}

#[tokio::test]
async fn a_token_session_ends_when_its_tokens_access_is_edited_but_not_when_it_is_renamed() {
    let home = DataHome::new();
    let server = TestServer::start(&home, &ServerSpec::default_root());
    let mut root = common::root(server.address).await;
    let scoped =
        create(&mut root, NewToken::named("scoped").with_scope("me:read").with_scope("tokens:read")).await;
    let networked = create(&mut root, NewToken::named("networked").with_network("127.0.0.0/8")).await;
    let other = create(&mut root, NewToken::named("other").with_scope("me:read")).await;
    let mut on_scoped = with_token(server.address, &scoped.token).await;
    let mut on_networked = with_token(server.address, &networked.token).await;
    let mut on_other = with_token(server.address, &other.token).await;

    root.update_token(scoped.id, Some("scoped-renamed"), Some("renamed only")).await.unwrap();
    assert_eq!(on_scoped.get_me().await.unwrap().user_id, 0, "a rename leaves the session");
    // An edit that changes nothing leaves it too.
    root.edit_token_access(scoped.id, [add_scope("me:read")]).await.unwrap();
    assert_eq!(on_scoped.get_me().await.unwrap().user_id, 0);

    root.edit_token_access(scoped.id, [remove_scope("tokens:read")]).await.unwrap();
    root.edit_token_access(networked.id, [add_network("10.0.0.0/8")]).await.unwrap();
    assert_eq!(status(on_scoped.get_me().await), UNAUTHENTICATED);
    assert_eq!(status(on_networked.get_me().await), UNAUTHENTICATED);
    assert_eq!(on_other.get_me().await.unwrap().user_id, 0, "other tokens' sessions go on");
    assert_eq!(root.get_me().await.unwrap().user_id, 0);
    let line = wait_for_log(&server, "reason=\"token_access_changed\"").await;
    assert!(line.contains("session_ended"), "{line}");

    // Logged in again: the token's access as it is now.
    assert_eq!(on_scoped.login_with_personal_access_token(&scoped.token).await.unwrap(), 0);
    assert_eq!(status(on_scoped.list_tokens(StatusFilter::All, 0, 0).await), INSUFFICIENT_SCOPE);
    assert_eq!(on_scoped.get_me().await.unwrap().user_id, 0);

    // A token session that edits its own token ends too.
    let own = create(&mut root, NewToken::named("own")).await;
    let mut on_own = with_token(server.address, &own.token).await;
    on_own.edit_token_access(own.id, [add_scope("tokens:write")]).await.unwrap();
    assert_eq!(status(on_own.get_me().await), UNAUTHENTICATED);
}

#[tokio::test]
async fn reactivation_brings_a_revoked_or_expired_token_back_with_a_new_secret() {
    let home = DataHome::new();
    let spec = ServerSpec::default_root()
        .env("LATCHKEY_PERSONAL_ACCESS_TOKEN_CLEANER_ENABLED", "false")
        .env("LATCHKEY_PERSONAL_ACCESS_TOKEN_MAX_LIFETIME", "1 h")
        .env("LATCHKEY_PERSONAL_ACCESS_TOKEN_DEFAULT_LIFETIME", "1 h");
    let server = TestServer::start(&home, &spec);
    let mut root = common::root(server.address).await;
    let new = NewToken::named("comeback")
        .with_description("revoked by mistake")
        .with_expiry(Expiry::After(Duration::from_secs(1_800)))
        .with_scope("stream:orders:*")
        .with_scope("me:read")
        .with_network("127.0.0.0/8");
    let issued = create(&mut root, new).await;
    let mut session = with_token(server.address, &issued.token).await;
    root.revoke_token(issued.id).await.unwrap();
    let revoked = root.get_token(issued.id).await.unwrap();
    assert_eq!(status(session.get_me().await), UNAUTHENTICATED, "revoking ended the session");

    // Iggy's commands and a plain rotate behave as they always did.
    assert_eq!(
        status(connect(server.address).await.login_with_personal_access_token(&issued.token).await),
        REVOKED
    );
    assert_eq!(status(root.rotate_token(issued.id, RotateExpiry::Keep).await), REVOKED);
    let mut plain = vec![1];
    plain.extend_from_slice(&issued.id.to_le_bytes());
    plain.extend_from_slice(&0u64.to_le_bytes());
    assert_eq!(raw_status(&mut root, ROTATE_TOKEN, &plain).await, REVOKED, "a body without flags");
    let mut zero_flags = plain.clone();
    zero_flags.push(0);
    assert_eq!(raw_status(&mut root, ROTATE_TOKEN, &zero_flags).await, REVOKED, "flags 0");
    let mut unknown_flag = plain.clone();
    unknown_flag.push(0b10);
    assert_eq!(raw_status(&mut root, ROTATE_TOKEN, &unknown_flag).await, INVALID_FORMAT);
    assert!(root.get_personal_access_tokens().await.unwrap().iter().any(|token| token.name == "comeback"));
    // A lifetime over the policy's maximum is refused, flag or not.
    let too_long = RotateExpiry::After(Duration::from_secs(7_200));
    assert_eq!(status(root.reactivate_token(issued.id, too_long).await), LIFETIME_NOT_ALLOWED);
    assert_eq!(status(root.reactivate_token(issued.id, RotateExpiry::Never).await), LIFETIME_NOT_ALLOWED);

    // Reactivated with its expiry kept (it has not passed).
    let back = root.reactivate_token(issued.id, RotateExpiry::Keep).await.unwrap();
    assert_eq!(
        (back.id, back.created_at_us, back.expires_at_us),
        (issued.id, issued.created_at_us, issued.expires_at_us)
    );
    assert_ne!(back.token, issued.token);
    let details = root.get_token(issued.id).await.unwrap();
    assert_eq!((details.status, details.revoked_at_us), (TokenStatus::Active, 0));
    // The last use is left out: one gathered under the old secret and not
    // yet written is dropped by any rotate (docs/protocol.md, last use).
    let kept = TokenDetails {
        status: revoked.status,
        revoked_at_us: revoked.revoked_at_us,
        last_used_at_us: revoked.last_used_at_us,
        last_used_address: revoked.last_used_address.clone(),
        ..details.clone()
    };
    assert_eq!(kept, revoked, "id, name, description, scopes, networks, times kept");
    // The new secret works everywhere; the old one nowhere.
    assert_eq!(connect(server.address).await.login_with_personal_access_token(&back.token).await.unwrap(), 0);
    assert_eq!(
        status(connect(server.address).await.login_with_personal_access_token(&issued.token).await),
        NOT_FOUND
    );
    assert_eq!(status(session.login_with_personal_access_token(&issued.token).await), NOT_FOUND);
    let answer = root.authorize(&back.token, "stream:orders:read", Some("127.0.0.1")).await.unwrap();
    assert_eq!(answer.decision, Decision::Allowed);
    let answer = root.authorize(&issued.token, "stream:orders:read", Some("127.0.0.1")).await.unwrap();
    assert_eq!(answer.decision, Decision::Unknown);
    let line = wait_for_log(&server, "token_reactivated").await;
    assert!(line.contains("was=\"revoked\"") && line.contains(&format!("token_id={}", issued.id)), "{line}");
    assert!(!server.logs().contains(back.token.expose()), "a secret reached the log");

    // Expired: keep is 54 (flag or not); a new lifetime brings it back.
    let short_lived = NewToken::named("short").with_expiry(Expiry::After(Duration::from_millis(1)));
    let short = create(&mut root, short_lived).await;
    wait_until_past(short.expires_at_us).await;
    assert_eq!(root.get_token(short.id).await.unwrap().status, TokenStatus::Expired);
    assert_eq!(status(root.reactivate_token(short.id, RotateExpiry::Keep).await), EXPIRED);
    assert_eq!(status(root.rotate_token(short.id, RotateExpiry::Keep).await), EXPIRED);
    let hour = RotateExpiry::After(Duration::from_secs(3_600));
    let renewed = root.reactivate_token(short.id, hour).await.unwrap();
    assert!(renewed.expires_at_us > short.expires_at_us + 3_500_000_000);
    assert_eq!(root.get_token(short.id).await.unwrap().status, TokenStatus::Active);
    let line = wait_for_log(&server, "was=\"expired\"").await;
    assert!(line.contains("token_reactivated"), "{line}");

    // Revoked and expired: the flag and a new lifetime.
    let both =
        create(&mut root, NewToken::named("both").with_expiry(Expiry::After(Duration::from_millis(1)))).await;
    root.revoke_token(both.id).await.unwrap();
    wait_until_past(both.expires_at_us).await;
    assert_eq!(status(root.rotate_token(both.id, hour).await), REVOKED);
    assert_eq!(status(root.reactivate_token(both.id, RotateExpiry::Keep).await), EXPIRED);
    let again = root.reactivate_token(both.id, hour).await.unwrap();
    assert_eq!(
        connect(server.address).await.login_with_personal_access_token(&again.token).await.unwrap(),
        0
    );

    // Token sessions need tokens:write, and the flag gives no more than a rotate.
    let reader = create(&mut root, NewToken::named("reader").with_scope("tokens:read")).await;
    root.revoke_token(both.id).await.unwrap();
    let mut on_reader = with_token(server.address, &reader.token).await;
    assert_eq!(status(on_reader.reactivate_token(both.id, hour).await), INSUFFICIENT_SCOPE);
    let mut frame =
        encode_to_vec(&RotateToken { token: TokenSelector::Id(both.id), expiry_us: 0, reactivate: true });
    assert_eq!(frame.pop(), Some(1), "the flags byte is the last");
    assert_eq!(
        raw_status(&mut root, ROTATE_TOKEN, &[frame.as_slice(), &[1, 0]].concat()).await,
        INVALID_COMMAND
    );
}

#[tokio::test]
async fn edited_access_and_a_reactivation_survive_restarts_and_a_compaction() {
    let home = DataHome::new();
    let spec = ServerSpec::default_root();
    let server = TestServer::start(&home, &spec);
    let mut root = common::root(server.address).await;
    let edited = create(
        &mut root,
        NewToken::named("edited")
            .with_description("edited later")
            .with_scope("tokens:read")
            .with_network("10.0.0.0/8"),
    )
    .await;
    root.edit_token_access(
        edited.id,
        [
            remove_scope("tokens:read"),
            add_scope("stream:orders:write"),
            add_network("127.0.0.1"),
            remove_network("10.0.0.0/8"),
        ],
    )
    .await
    .unwrap();
    let cleared =
        create(&mut root, NewToken::named("cleared").with_scope("me:read").with_network("127.0.0.0/8")).await;
    root.edit_token_access(cleared.id, [AccessEdit::ClearScopes, AccessEdit::ClearNetworks]).await.unwrap();
    let revived = create(&mut root, NewToken::named("revived").with_scope("me:read")).await;
    root.revoke_token(revived.id).await.unwrap();
    let revived_now = root.reactivate_token(revived.id, RotateExpiry::Keep).await.unwrap();
    let before = root.list_all_tokens(StatusFilter::All).await.unwrap();

    // A graceful stop, then SIGKILL: replayed from the log's records.
    drop(root);
    assert_eq!(server.stop().code(), Some(0));
    let server = TestServer::start(&home, &spec);
    let mut root = common::root(server.address).await;
    assert_eq!(root.list_all_tokens(StatusFilter::All).await.unwrap(), before);
    drop(root);
    server.kill();
    let server = TestServer::start(&home, &spec);
    let mut root = common::root(server.address).await;
    let after = root.list_all_tokens(StatusFilter::All).await.unwrap();
    assert_eq!(after, before);
    let edited_now = after.iter().find(|token| token.name == "edited").unwrap();
    assert_eq!(
        (edited_now.scopes.as_slice(), edited_now.networks.as_slice()),
        (&["stream:orders:write".to_owned()][..], &["127.0.0.1/32".to_owned()][..])
    );
    let revived_details = after.iter().find(|token| token.name == "revived").unwrap();
    assert_eq!((revived_details.status, revived_details.revoked_at_us), (TokenStatus::Active, 0));
    assert_eq!(
        status(connect(server.address).await.login_with_personal_access_token(&revived.token).await),
        NOT_FOUND
    );
    drop(root);
    assert_eq!(server.stop().code(), Some(0));

    // Compacted: the snapshot carries whole token records.
    let compacting = common::compacting(&spec);
    let server = TestServer::start(&home, &compacting);
    let mut root = common::root(server.address).await;
    churn_until_compacted(&server, &mut root).await;
    drop(root);
    assert_eq!(server.stop().code(), Some(0));
    let bytes = std::fs::read(home.data_dir().join("tokens.log")).unwrap();
    assert_eq!(u32::from_le_bytes(bytes[8..12].try_into().unwrap()), 4, "format version 4");
    assert_eq!(bytes[16 + 28 + 12 + 16], 3, "the log starts with a snapshot record");
    let server = TestServer::start(&home, &compacting);
    let mut root = common::root(server.address).await;
    assert_eq!(root.list_all_tokens(StatusFilter::All).await.unwrap(), before);
    // Logins last: a use would change the last-used fields compared above.
    assert_eq!(
        connect(server.address).await.login_with_personal_access_token(&revived_now.token).await.unwrap(),
        0
    );
    assert_eq!(
        status(connect(server.address).await.login_with_personal_access_token(&revived.token).await),
        NOT_FOUND
    );
}

/// The log written by format version 3, before access and reactivate
/// records existed (server/src/store/log_tests.rs: `v2_history` on top of
/// `history`).
const FIXTURE_V3: &[u8] = include_bytes!("../../server/src/store/fixture-v3.log");

#[tokio::test]
async fn a_version_3_log_is_upgraded_and_takes_access_edits_and_reactivations() {
    let home = DataHome::new();
    let users = users_config(&[
        TestUser { id: 1, username: "alice", password: "alice-password", active: true },
        TestUser { id: 2, username: "bob", password: "bob-password", active: true },
    ]);
    let spec = ServerSpec::default_root()
        .config(&users)
        .env("LATCHKEY_PERSONAL_ACCESS_TOKEN_CLEANER_ENABLED", "false");
    // The first start makes the key and root; then the v3 log goes in.
    let server = TestServer::start(&home, &spec);
    assert_eq!(server.stop().code(), Some(0));
    let log = home.data_dir().join("tokens.log");
    std::fs::write(&log, FIXTURE_V3).unwrap();
    let version = |log: &Path| u32::from_le_bytes(std::fs::read(log).unwrap()[8..12].try_into().unwrap());
    assert_eq!(version(&log), 3);

    let server = TestServer::start(&home, &spec);
    assert_eq!(version(&log), 4, "rewritten as version 4 at start");
    let mut alice = connect(server.address).await;
    alice.login_user("alice", "alice-password").await.unwrap();
    // rich-renamed (id 10): two scopes, two networks; plain (id 11): revoked.
    let rich = alice.get_token(10).await.unwrap();
    assert_eq!((rich.name.as_str(), rich.scopes.len(), rich.networks.len()), ("rich-renamed", 2, 2));
    assert_eq!(alice.get_token("plain").await.unwrap().status, TokenStatus::Revoked);
    alice.edit_token_access(10, [remove_scope("tokens:read"), AccessEdit::ClearNetworks]).await.unwrap();
    let back = alice.reactivate_token("plain", RotateExpiry::Keep).await.unwrap();
    let expected = alice.list_all_tokens(StatusFilter::All).await.unwrap();
    drop(alice);
    assert_eq!(server.stop().code(), Some(0));

    let server = TestServer::start(&home, &spec);
    let mut alice = connect(server.address).await;
    alice.login_user("alice", "alice-password").await.unwrap();
    assert_eq!(alice.list_all_tokens(StatusFilter::All).await.unwrap(), expected);
    let rich = alice.get_token(10).await.unwrap();
    assert_eq!((rich.scopes.as_slice(), rich.networks.len()), (&["stream:orders:write".to_owned()][..], 0));
    assert_eq!(alice.get_token(11).await.unwrap().status, TokenStatus::Active);
    assert_eq!(connect(server.address).await.login_with_personal_access_token(&back.token).await.unwrap(), 1);
}
