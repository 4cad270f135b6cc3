//! What limits a token, end to end: the server's lifetime policy and its
//! rule on token sessions managing tokens, the scopes of a token session,
//! Authorize's scope matching and its `authorize` permission, client
//! networks for both address families (v4-mapped included), and a SIGHUP
//! reload that makes a user inactive or fails to load.
//!
//! The lifecycle commands themselves are in `token_lifecycle.rs`.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use common::*;
use latchkey_sdk::{Client, Decision, Expiry, IssuedToken, NewToken, RotateExpiry, StatusFilter};
use latchkey_tests::{DataHome, ServerSpec, TestServer};
use tokio::net::TcpStream;

const OK: u32 = 0;
const INVALID_FORMAT: u32 = 4;
const NOT_FOUND: u32 = 20;
const UNAUTHENTICATED: u32 = 40;
const INVALID_CREDENTIALS: u32 = 42;
const USER_INACTIVE: u32 = 47;
const ADDRESS_NOT_ALLOWED: u32 = 20004;
const INSUFFICIENT_SCOPE: u32 = 20005;
const LIFETIME_NOT_ALLOWED: u32 = 20006;
const BAD_SCOPE: u32 = 20007;
const MANAGEMENT_NOT_ALLOWED: u32 = 20010;
const AUTHORIZE_NOT_PERMITTED: u32 = 20011;

const HOUR: Duration = Duration::from_secs(3_600);
const HALF_HOUR_US: u64 = 1_800_000_000;

/// A configured user, its password hashed once so the config can be
/// rewritten for reloads without hashing again.
struct Account {
    id: u32,
    username: &'static str,
    password: &'static str,
    password_hash: String,
}

impl Account {
    fn new(id: u32, username: &'static str, password: &'static str) -> Account {
        Account { id, username, password, password_hash: latchkey_tests::password_hash(password) }
    }

    /// One `[[users]]` entry.
    fn entry(&self, active: bool, permissions: &[&str]) -> String {
        let permissions: Vec<String> = permissions.iter().map(|p| format!("{p:?}")).collect();
        format!(
            "[[users]]\nid = {}\nusername = \"{}\"\npassword_hash = \"{}\"\nactive = {active}\npermissions = [{}]\n\n",
            self.id,
            self.username,
            self.password_hash,
            permissions.join(", ")
        )
    }

    async fn login(&self, address: SocketAddr) -> Client {
        let mut client = connect(address).await;
        assert_eq!(client.login_user(self.username, self.password).await.unwrap(), self.id);
        client
    }

    async fn login_status(&self, address: SocketAddr) -> u32 {
        status(connect(address).await.login_user(self.username, self.password).await)
    }
}

async fn create(client: &mut Client, token: NewToken) -> IssuedToken {
    let name = token.name.clone();
    client.create_token(&token).await.unwrap_or_else(|error| panic!("create {name}: {error}"))
}

async fn login_status(address: SocketAddr, token: &str) -> u32 {
    status(connect(address).await.login_with_personal_access_token(token).await)
}

async fn decision(client: &mut Client, token: &str, scope: &str, address: Option<&str>) -> Decision {
    client.authorize(token, scope, address).await.unwrap().decision
}

// ---------------------------------------------------------------------------
// Lifetime policy and token sessions.

#[tokio::test]
async fn the_lifetime_policy_refuses_creates_and_rotates_past_the_maximum() {
    let home = DataHome::new();
    let spec = ServerSpec::default_root()
        .env("LATCHKEY_PERSONAL_ACCESS_TOKEN_MAX_LIFETIME", "1 h")
        .env("LATCHKEY_PERSONAL_ACCESS_TOKEN_DEFAULT_LIFETIME", "30 m");
    let server = TestServer::start(&home, &spec);
    let mut root = root(server.address).await;
    let just_over = Expiry::After(HOUR + Duration::from_micros(1));

    // The extension create.
    for (expiry, what) in
        [(Expiry::Never, "never"), (just_over, "1 h + 1 µs"), (Expiry::After(2 * HOUR), "2 h")]
    {
        let refused = root.create_token(&NewToken::named("refused").with_expiry(expiry)).await;
        assert_eq!(status(refused), LIFETIME_NOT_ALLOWED, "9100 asking for {what}");
    }
    let longest = create(&mut root, NewToken::named("longest").with_expiry(Expiry::After(HOUR))).await;
    assert_eq!(longest.expires_at_us - longest.created_at_us, 3_600_000_000);
    let defaulted = create(&mut root, NewToken::named("defaulted")).await;
    assert_eq!(defaulted.expires_at_us - defaulted.created_at_us, HALF_HOUR_US, "server default: 30 m");

    // Iggy's 42: never is refused; 0 ("server default") gets the default.
    for (expiry, what) in [(Expiry::Never, "never"), (just_over, "1 h + 1 µs")] {
        let refused = root.create_personal_access_token("refused", expiry).await;
        assert_eq!(status(refused), LIFETIME_NOT_ALLOWED, "42 asking for {what}");
    }
    root.create_personal_access_token("iggy-default", Expiry::ServerDefault).await.unwrap();
    let details = root.get_token("iggy-default").await.unwrap();
    assert_eq!(details.expires_at_us - details.created_at_us, HALF_HOUR_US);
    root.create_personal_access_token("iggy-short", Expiry::After(Duration::from_secs(60))).await.unwrap();

    // Rotate: a new lifetime is checked too; keeping the current one passes.
    for (expiry, what) in [(RotateExpiry::Never, "never"), (RotateExpiry::After(2 * HOUR), "2 h")] {
        assert_eq!(
            status(root.rotate_token("longest", expiry).await),
            LIFETIME_NOT_ALLOWED,
            "rotate to {what}"
        );
    }
    assert_eq!(root.get_token("longest").await.unwrap().expires_at_us, longest.expires_at_us);
    let kept = root.rotate_token("longest", RotateExpiry::Keep).await.unwrap();
    assert_eq!(kept.expires_at_us, longest.expires_at_us);
    let shorter = root.rotate_token("longest", RotateExpiry::After(Duration::from_secs(600))).await.unwrap();
    assert_ne!(shorter.expires_at_us, 0);
    assert_eq!(login_status(server.address, &shorter.token).await, OK);

    // Only what was allowed exists.
    let mut names: Vec<String> =
        root.list_all_tokens(StatusFilter::All).await.unwrap().into_iter().map(|t| t.name).collect();
    names.sort();
    assert_eq!(names, ["defaulted", "iggy-default", "iggy-short", "longest"]);
}

#[tokio::test]
async fn token_sessions_may_not_manage_tokens_when_the_policy_says_so() {
    let home = DataHome::new();
    let spec = ServerSpec::default_root()
        .env("LATCHKEY_PERSONAL_ACCESS_TOKEN_TOKEN_SESSIONS_MANAGE_TOKENS", "false");
    let server = TestServer::start(&home, &spec);
    let mut root = root(server.address).await;
    let full = create(&mut root, NewToken::named("full-access")).await;
    let reader = create(&mut root, NewToken::named("reader").with_scope("tokens:read")).await;
    let target = create(&mut root, NewToken::named("target")).await;

    let mut session = with_token(server.address, &full.token).await;
    let refused = [
        ("42", status(session.create_personal_access_token("new", Expiry::Never).await)),
        ("43", status(session.delete_personal_access_token("target").await)),
        ("9100", status(session.create_token(&NewToken::named("new")).await)),
        ("9103", status(session.update_token(target.id, Some("renamed"), None).await)),
        ("9104", status(session.revoke_token(target.id).await)),
        ("9105", status(session.rotate_token(target.id, RotateExpiry::Keep).await)),
        ("9106", status(session.delete_token(target.id).await)),
        ("9107", status(session.revoke_all_tokens().await)),
        ("9108", status(session.delete_all_tokens().await)),
    ];
    for (code, got) in refused {
        assert_eq!(got, MANAGEMENT_NOT_ALLOWED, "command {code} from a token session");
    }
    // Reads are not management; the session is still open.
    assert_eq!(session.get_personal_access_tokens().await.unwrap().len(), 3);
    assert_eq!(session.get_token(target.id).await.unwrap().name, "target");
    assert_eq!(session.list_tokens(StatusFilter::All, 0, 0).await.unwrap().tokens.len(), 3);
    assert_eq!(session.get_me().await.unwrap().user_id, 0);
    // A token without tokens:write is refused for its scope first.
    let mut scoped = with_token(server.address, &reader.token).await;
    assert_eq!(status(scoped.create_token(&NewToken::named("new")).await), INSUFFICIENT_SCOPE);
    // Password sessions manage tokens as before.
    root.update_token(target.id, Some("renamed"), None).await.unwrap();
    root.delete_token("renamed").await.unwrap();
    assert_eq!(root.list_all_tokens(StatusFilter::All).await.unwrap().len(), 2);
}

#[tokio::test]
async fn a_token_session_may_do_only_what_its_scopes_cover() {
    let home = DataHome::new();
    let server = TestServer::start(&home, &ServerSpec::default_root());
    let mut root = root(server.address).await;
    let reader = create(&mut root, NewToken::named("reader").with_scope("tokens:read")).await;
    let writer = create(&mut root, NewToken::named("writer").with_scope("tokens:write")).await;
    let me = create(&mut root, NewToken::named("me-only").with_scope("me:read")).await;
    let wide = NewToken::named("wide").with_scope("tokens:write").with_scope("stream:*:read");
    let wide = create(&mut root, wide).await;

    // tokens:read: 41, 9101 and 9102 only.
    let mut session = with_token(server.address, &reader.token).await;
    assert_eq!(session.get_personal_access_tokens().await.unwrap().len(), 4);
    assert_eq!(session.get_token("me-only").await.unwrap().scopes, ["me:read"]);
    assert_eq!(session.list_tokens(StatusFilter::All, 0, 0).await.unwrap().tokens.len(), 4);
    let refused = [
        ("20", status(session.get_me().await)),
        ("42", status(session.create_personal_access_token("new", Expiry::Never).await)),
        ("43", status(session.delete_personal_access_token("me-only").await)),
        ("9100", status(session.create_token(&NewToken::named("new").with_scope("tokens:read")).await)),
        ("9103", status(session.update_token(me.id, None, Some("x")).await)),
        ("9104", status(session.revoke_token(me.id).await)),
        ("9105", status(session.rotate_token(me.id, RotateExpiry::Keep).await)),
        ("9106", status(session.delete_token(me.id).await)),
        ("9107", status(session.revoke_all_tokens().await)),
        ("9108", status(session.delete_all_tokens().await)),
        ("9110", status(session.authorize(&me.token, "", None).await)),
    ];
    for (code, got) in refused {
        assert_eq!(got, INSUFFICIENT_SCOPE, "command {code} with tokens:read");
    }
    // The session's rights are checked before the body.
    let malformed = session.create_token(&NewToken::named("x").with_scope("not a scope")).await;
    assert_eq!(status(malformed), INSUFFICIENT_SCOPE);
    assert_eq!(status(session.update_token(me.id, Some("x"), None).await), INSUFFICIENT_SCOPE);

    // me:read: GetMe only.
    let mut session = with_token(server.address, &me.token).await;
    assert_eq!(session.get_me().await.unwrap().user_id, 0);
    assert_eq!(status(session.get_personal_access_tokens().await), INSUFFICIENT_SCOPE);
    assert_eq!(status(session.get_token(me.id).await), INSUFFICIENT_SCOPE);

    // tokens:write: changes, and creates only what its own scopes cover.
    let mut session = with_token(server.address, &writer.token).await;
    assert_eq!(status(session.list_tokens(StatusFilter::All, 0, 0).await), INSUFFICIENT_SCOPE);
    assert_eq!(status(session.get_token(me.id).await), INSUFFICIENT_SCOPE);
    let broader = [
        NewToken::named("full"),
        NewToken::named("two").with_scope("tokens:write").with_scope("tokens:read"),
        NewToken::named("other").with_scope("me:read"),
    ];
    for token in broader {
        let name = token.name.clone();
        assert_eq!(status(session.create_token(&token).await), INSUFFICIENT_SCOPE, "{name}");
    }
    let full = session.create_personal_access_token("full", Expiry::Never).await;
    assert_eq!(status(full), INSUFFICIENT_SCOPE, "42 makes a full access token");
    let same = create(&mut session, NewToken::named("same").with_scope("tokens:write")).await;
    session.update_token(same.id, Some("same-renamed"), Some("by a token session")).await.unwrap();
    session.rotate_token(same.id, RotateExpiry::Keep).await.unwrap();
    session.revoke_token(same.id).await.unwrap();
    session.delete_token(same.id).await.unwrap();

    // Resource scopes: covered by a wildcard, or not.
    let mut session = with_token(server.address, &wide.token).await;
    for scope in ["stream:orders:read", "stream:*:read"] {
        let token = NewToken::named(format!("ok-{}", scope.replace([':', '*'], "-"))).with_scope(scope);
        create(&mut session, token).await;
    }
    for scope in ["stream:orders:write", "stream:*:*", "stream:orders:*", "topic:orders:read", "authorize"] {
        let refused = session.create_token(&NewToken::named("broader").with_scope(scope)).await;
        assert_eq!(status(refused), INSUFFICIENT_SCOPE, "{scope} from a stream:*:read session");
    }
    assert_eq!(root.list_all_tokens(StatusFilter::All).await.unwrap().len(), 6);
}

// ---------------------------------------------------------------------------
// Authorize: scope matching and the permission.

#[tokio::test]
async fn authorize_matches_scopes_with_wildcards_on_id_and_action() {
    let home = DataHome::new();
    let server = TestServer::start(&home, &ServerSpec::default_root());
    let mut root = root(server.address).await;
    let any_id = create(&mut root, NewToken::named("any-id").with_scope("stream:*:write")).await;
    let any_action = create(&mut root, NewToken::named("any-action").with_scope("topic:events:*")).await;
    let exact = create(&mut root, NewToken::named("exact").with_scope("group:g1:join")).await;
    let both = create(&mut root, NewToken::named("both").with_scope("stream:*:*")).await;
    let built_in = create(&mut root, NewToken::named("built-in").with_scope("tokens:read")).await;
    let several = create(
        &mut root,
        NewToken::named("several").with_scope("stream:orders:read").with_scope("topic:*:write"),
    )
    .await;
    let full = create(&mut root, NewToken::named("full")).await;

    use Decision::{Allowed, Scope};
    let cases: &[(&IssuedToken, &str, Decision)] = &[
        (&any_id, "stream:orders:write", Allowed),
        (&any_id, "stream:payments:write", Allowed),
        (&any_id, "stream:orders:read", Scope),
        (&any_id, "topic:orders:write", Scope),
        (&any_id, "Stream:orders:write", Scope),
        (&any_id, "", Allowed),
        (&any_action, "topic:events:read", Allowed),
        (&any_action, "topic:events:delete", Allowed),
        (&any_action, "topic:other:read", Scope),
        (&any_action, "stream:events:read", Scope),
        (&exact, "group:g1:join", Allowed),
        (&exact, "group:g2:join", Scope),
        (&exact, "group:g1:leave", Scope),
        (&exact, "group:g1:joi", Scope),
        (&exact, "groups:g1:join", Scope),
        (&both, "stream:x:y", Allowed),
        (&both, "topic:x:y", Scope),
        (&both, "tokens:read", Scope),
        (&built_in, "tokens:read", Allowed),
        (&built_in, "tokens:write", Scope),
        (&built_in, "me:read", Scope),
        (&built_in, "stream:x:read", Scope),
        (&built_in, "", Allowed),
        (&several, "stream:orders:read", Allowed),
        (&several, "topic:logs:write", Allowed),
        (&several, "stream:orders:write", Scope),
        (&several, "topic:logs:read", Scope),
        (&full, "anything:at:all", Allowed),
        (&full, "tokens:write", Allowed),
        (&full, "authorize", Allowed),
        (&full, "", Allowed),
    ];
    for (token, scope, expected) in cases {
        let answer = root.authorize(&token.token, scope, Some("127.0.0.1")).await.unwrap();
        assert_eq!(answer.decision, *expected, "scope {scope:?} for a token with id {}", token.id);
        // Allowed or not, the reply names the token that was found.
        assert_eq!((answer.user_id, answer.username.as_str(), answer.token_id), (0, "iggy", token.id));
    }

    // The scope asked for must be concrete and well formed: 20007.
    for bad in
        ["stream:*:write", "stream:orders:*", "*:orders:write", "stream:orders", "a:b:c:d", "bad scope", "x"]
    {
        assert_eq!(status(root.authorize(&full.token, bad, None).await), BAD_SCOPE, "scope {bad:?}");
    }
    // An address that is not one: 4.
    for bad in ["not-an-address", "10.0.0.1:99999", "10.0.0"] {
        assert_eq!(
            status(root.authorize(&full.token, "", Some(bad)).await),
            INVALID_FORMAT,
            "address {bad:?}"
        );
    }

    // Unknown tokens: nothing about them is told.
    for token in [unissued_token(), "lk_not-a-token".to_owned(), "garbage".to_owned()] {
        let answer = root.authorize(&token, "stream:x:read", None).await.unwrap();
        assert_eq!(answer.decision, Decision::Unknown);
        assert_eq!(
            (answer.user_id, answer.username.as_str(), answer.token_id, answer.expires_at_us),
            (0, "", 0, 0)
        );
    }
    // Authorize binds nothing to the caller's session.
    assert_eq!(root.get_me().await.unwrap().user_id, 0);
    // An allowed Authorize is a use of the token, from the given address.
    root.authorize(&exact.token, "group:g1:join", Some("192.0.2.7:6000")).await.unwrap();
    assert_eq!(root.get_token(exact.id).await.unwrap().last_used_address, "192.0.2.7:6000");
}

#[tokio::test]
async fn authorize_needs_the_authorize_permission() {
    let alice = Account::new(1, "alice", "alice-password");
    let broker = Account::new(2, "broker", "broker-password");
    let config = format!("{}{}", alice.entry(true, &[]), broker.entry(true, &["authorize"]));
    let home = DataHome::new();
    let server = TestServer::start(&home, &ServerSpec::default_root().config(&config));
    let mut alice_session = alice.login(server.address).await;
    let alices = create(&mut alice_session, NewToken::named("alices").with_scope("stream:orders:read")).await;
    // The scope can be granted to anyone; it is the permission that counts.
    let alices_authorize =
        create(&mut alice_session, NewToken::named("authorize").with_scope("authorize")).await;

    // Without the permission: 20011, by password or token, even for her own token.
    let refused = alice_session.authorize(&alices.token, "stream:orders:read", None).await;
    assert_eq!(status(refused), AUTHORIZE_NOT_PERMITTED);
    let mut alice_token_session = with_token(server.address, &alices_authorize.token).await;
    let refused = alice_token_session.authorize(&alices.token, "", None).await;
    assert_eq!(status(refused), AUTHORIZE_NOT_PERMITTED);

    // With it: an answer about anyone's token.
    let mut broker_session = broker.login(server.address).await;
    let answer =
        broker_session.authorize(&alices.token, "stream:orders:read", Some("10.0.0.1")).await.unwrap();
    assert_eq!(answer.decision, Decision::Allowed);
    assert_eq!((answer.user_id, answer.username.as_str(), answer.token_id), (1, "alice", alices.id));
    assert_eq!(
        decision(&mut broker_session, &alices.token, "stream:orders:write", None).await,
        Decision::Scope
    );
    // A broker's token session needs the authorize scope too.
    let scoped = create(&mut broker_session, NewToken::named("sidecar").with_scope("authorize")).await;
    let other = create(&mut broker_session, NewToken::named("reader").with_scope("tokens:read")).await;
    let mut sidecar = with_token(server.address, &scoped.token).await;
    assert_eq!(decision(&mut sidecar, &alices.token, "stream:orders:read", None).await, Decision::Allowed);
    let mut reader = with_token(server.address, &other.token).await;
    assert_eq!(status(reader.authorize(&alices.token, "", None).await), INSUFFICIENT_SCOPE);
    // Root holds every permission.
    let mut root = root(server.address).await;
    assert_eq!(decision(&mut root, &alices.token, "stream:orders:read", None).await, Decision::Allowed);
    // Not logged in: 40.
    assert_eq!(
        status(connect(server.address).await.authorize(&alices.token, "", None).await),
        UNAUTHENTICATED
    );
}

// ---------------------------------------------------------------------------
// Client networks.

#[tokio::test]
async fn networks_limit_logins_and_authorize_over_ipv4() {
    let home = DataHome::new();
    let server = TestServer::start(&home, &ServerSpec::default_root());
    let mut root = root(server.address).await;
    let loopback = create(&mut root, NewToken::named("loopback").with_network("127.0.0.0/8")).await;
    let host = create(&mut root, NewToken::named("host").with_network("127.0.0.1")).await;
    let private = create(&mut root, NewToken::named("private").with_network("10.0.0.0/8")).await;
    let mapped = create(&mut root, NewToken::named("mapped").with_network("::ffff:10.0.0.0/104")).await;
    let v6 = create(&mut root, NewToken::named("v6-net").with_network("2001:db8::/32")).await;
    let v6_host = create(&mut root, NewToken::named("v6-host").with_network("::1/128")).await;
    let mixed = NewToken::named("mixed").with_network("10.0.0.0/8").with_network("127.0.0.1/32");
    let mixed = create(&mut root, mixed).await;
    let anywhere = create(&mut root, NewToken::named("anywhere")).await;

    // Networks are listed in canonical form; a v4-mapped network is IPv4.
    assert_eq!(root.get_token("host").await.unwrap().networks, ["127.0.0.1/32"]);
    assert_eq!(root.get_token("mapped").await.unwrap().networks, ["10.0.0.0/8"]);
    assert_eq!(root.get_token("v6-host").await.unwrap().networks, ["::1/128"]);

    // Logins from 127.0.0.1.
    for token in [&loopback, &host, &mixed, &anywhere] {
        assert_eq!(login_status(server.address, &token.token).await, OK, "token id {}", token.id);
    }
    for token in [&private, &mapped, &v6, &v6_host] {
        assert_eq!(
            login_status(server.address, &token.token).await,
            ADDRESS_NOT_ALLOWED,
            "token id {}",
            token.id
        );
    }
    wait_for_logs(&server, |logs| logs.contains("login_denied_network"));

    // Authorize checks the address the broker gives, in any spelling.
    let cases: &[(&IssuedToken, Option<&str>, Decision)] = &[
        (&private, Some("10.1.2.3"), Decision::Allowed),
        (&private, Some("10.1.2.3:5000"), Decision::Allowed),
        (&private, Some("::ffff:10.1.2.3"), Decision::Allowed),
        (&private, Some("[::ffff:10.1.2.3]:80"), Decision::Allowed),
        (&private, Some("11.0.0.1"), Decision::Network),
        (&private, Some("::ffff:11.0.0.1"), Decision::Network),
        (&private, Some("::1"), Decision::Network),
        (&private, None, Decision::Network),
        (&mapped, Some("10.9.9.9"), Decision::Allowed),
        (&mapped, Some("::ffff:10.9.9.9"), Decision::Allowed),
        (&mapped, Some("192.168.0.1"), Decision::Network),
        (&loopback, Some("::ffff:127.0.0.1"), Decision::Allowed),
        (&loopback, Some("127.255.0.1"), Decision::Allowed),
        (&loopback, Some("128.0.0.1"), Decision::Network),
        (&loopback, None, Decision::Network),
        (&v6, Some("2001:db8::1"), Decision::Allowed),
        (&v6, Some("[2001:db8:ffff::1]:443"), Decision::Allowed),
        (&v6, Some("2001:db9::1"), Decision::Network),
        (&v6, Some("10.0.0.1"), Decision::Network),
        (&v6, None, Decision::Network),
        (&v6_host, Some("::1"), Decision::Allowed),
        (&v6_host, Some("::2"), Decision::Network),
        (&v6_host, Some("127.0.0.1"), Decision::Network),
        (&mixed, Some("10.0.0.1"), Decision::Allowed),
        (&mixed, Some("127.0.0.1"), Decision::Allowed),
        (&mixed, Some("127.0.0.2"), Decision::Network),
        (&anywhere, None, Decision::Allowed),
        (&anywhere, Some("2001:db8::1"), Decision::Allowed),
    ];
    for (token, address, expected) in cases {
        let got = decision(&mut root, &token.token, "", *address).await;
        assert_eq!(got, *expected, "token id {} from {address:?}", token.id);
    }
    // The network is checked before the scope.
    let scoped = NewToken::named("scoped").with_network("10.0.0.0/8").with_scope("stream:a:read");
    let scoped = create(&mut root, scoped).await;
    assert_eq!(
        decision(&mut root, &scoped.token, "stream:b:read", Some("11.0.0.1")).await,
        Decision::Network
    );
    assert_eq!(decision(&mut root, &scoped.token, "stream:b:read", Some("10.0.0.1")).await, Decision::Scope);
    assert_eq!(
        decision(&mut root, &scoped.token, "stream:a:read", Some("10.0.0.1")).await,
        Decision::Allowed
    );
}

/// A server on `address`. The callers have checked that this machine can
/// listen there, so a failed start fails the test.
fn server_on(home: &DataHome, address: &str) -> TestServer {
    // One shard: a login's last use shows at once on every connection.
    TestServer::start(home, &ServerSpec::default_root().env("LATCHKEY_SYSTEM_SHARDS", "1").address(address))
}

#[tokio::test]
async fn networks_limit_logins_over_ipv6() {
    if !latchkey_tests::ipv6_loopback_or_skip() {
        return;
    }
    let home = DataHome::new();
    let server = server_on(&home, "[::1]:0");
    assert!(server.address.is_ipv6(), "listening on {}", server.address);
    let mut root = root(server.address).await;
    let v6_host = create(&mut root, NewToken::named("v6-host").with_network("::1/128")).await;
    let v6_any = create(&mut root, NewToken::named("v6-any").with_network("::/0")).await;
    let v6_other = create(&mut root, NewToken::named("v6-other").with_network("2001:db8::/32")).await;
    let v4_loopback = create(&mut root, NewToken::named("v4-loopback").with_network("127.0.0.0/8")).await;
    let v4_any = create(&mut root, NewToken::named("v4-any").with_network("0.0.0.0/0")).await;
    let mapped = create(&mut root, NewToken::named("mapped").with_network("::ffff:127.0.0.1")).await;

    for token in [&v6_host, &v6_any] {
        assert_eq!(login_status(server.address, &token.token).await, OK, "token id {}", token.id);
    }
    // ::1 is not an IPv4 address, mapped or not.
    for token in [&v6_other, &v4_loopback, &v4_any, &mapped] {
        assert_eq!(
            login_status(server.address, &token.token).await,
            ADDRESS_NOT_ALLOWED,
            "token id {}",
            token.id
        );
    }
    let used = root.get_token(v6_host.id).await.unwrap();
    assert!(used.last_used_address.starts_with("[::1]:"), "{used:?}");
    assert_eq!(root.get_me().await.unwrap().user_id, 0);
}

#[tokio::test]
async fn v4_mapped_peers_on_a_dual_stack_listener_count_as_ipv4() {
    if !latchkey_tests::dual_stack_or_skip() {
        return;
    }
    let home = DataHome::new();
    let server = server_on(&home, "[::]:0");
    let v4_address = SocketAddr::from(([127, 0, 0, 1], server.address.port()));
    let mut root = Client::connect(v4_address).await.expect("an IPv4 client on the dual-stack listener");
    root.login_user("iggy", "iggy").await.unwrap();
    // The server sees this client as ::ffff:127.0.0.1.
    let loopback = create(&mut root, NewToken::named("loopback").with_network("127.0.0.0/8")).await;
    let host = create(&mut root, NewToken::named("host").with_network("127.0.0.1")).await;
    let mapped = create(&mut root, NewToken::named("mapped").with_network("::ffff:127.0.0.0/104")).await;
    let private = create(&mut root, NewToken::named("private").with_network("10.0.0.0/8")).await;
    let v6_host = create(&mut root, NewToken::named("v6-host").with_network("::1/128")).await;
    for token in [&loopback, &host, &mapped] {
        assert_eq!(login_status(v4_address, &token.token).await, OK, "token id {}", token.id);
    }
    for token in [&private, &v6_host] {
        assert_eq!(
            login_status(v4_address, &token.token).await,
            ADDRESS_NOT_ALLOWED,
            "token id {}",
            token.id
        );
    }
    // And over IPv6 on the same listener, the other way round (the probe
    // above checked that [::1] works here).
    let v6_address = SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, server.address.port()));
    assert_eq!(login_status(v6_address, &v6_host.token).await, OK);
    assert_eq!(login_status(v6_address, &loopback.token).await, ADDRESS_NOT_ALLOWED);
}

// ---------------------------------------------------------------------------
// Reload.

fn config_path(home: &DataHome) -> PathBuf {
    // Where the harness writes `ServerSpec::config` and points --config.
    home.dir.path().join("server.toml")
}

/// Rewrites the config file the server was started with and sends SIGHUP.
fn reload(server: &TestServer, home: &DataHome, config: &str) {
    std::fs::write(config_path(home), config).expect("rewrite the config file");
    // SAFETY: kill(2) on our own child's pid has no memory effects.
    let sent = unsafe { libc::kill(server.pid() as i32, libc::SIGHUP) };
    assert_eq!(sent, 0, "SIGHUP");
}

/// A stricter token policy: lifetimes capped, token sessions read-only.
const STRICT_POLICY: &str = "[personal_access_token]\nmax_lifetime = \"1 h\"\ndefault_lifetime = \"30 m\"\n\
                             token_sessions_manage_tokens = false\n\n";

/// Waits until the server has logged one more successful reload than
/// `before`; it logs once the users and the policy are both in place.
fn wait_for_reload(server: &TestServer, before: usize) {
    wait_for_logs(server, |logs| logs.matches("configuration reloaded").count() > before);
}

#[tokio::test]
async fn sighup_applies_inactive_users_at_once_and_keeps_the_old_config_when_the_new_one_is_broken() {
    let alice = Account::new(1, "alice", "alice-password");
    let bob = Account::new(2, "bob", "bob-password");
    let broker = Account::new(3, "broker", "broker-password");
    let home = DataHome::new();
    let config = [alice.entry(true, &[]), bob.entry(true, &[]), broker.entry(true, &["authorize"])].concat();
    let server = TestServer::start(&home, &ServerSpec::default_root().config(&config));

    let mut alice_password = alice.login(server.address).await;
    let alices = create(&mut alice_password, NewToken::named("alices")).await;
    let mut alice_token = with_token(server.address, &alices.token).await;
    let mut bob_password = bob.login(server.address).await;
    let bobs = create(&mut bob_password, NewToken::named("bobs")).await;
    let mut broker_session = broker.login(server.address).await;
    let mut root = root(server.address).await;
    let roots = create(&mut root, NewToken::named("roots")).await;
    let mut root_token = with_token(server.address, &roots.token).await;
    create(&mut root, NewToken::named("forever").with_expiry(Expiry::Never)).await;
    assert_eq!(decision(&mut broker_session, &alices.token, "", None).await, Decision::Allowed);

    // Alice made inactive, lifetimes capped, token sessions read-only.
    let inactive = [
        STRICT_POLICY.to_owned(),
        alice.entry(false, &[]),
        bob.entry(true, &[]),
        broker.entry(true, &["authorize"]),
    ]
    .concat();
    reload(&server, &home, &inactive);
    let poll = Poll::new("the reload making alice inactive");
    while alice.login_status(server.address).await != USER_INACTIVE {
        poll.pause().await;
    }
    wait_for_reload(&server, 0);
    assert_eq!(login_status(server.address, &alices.token).await, USER_INACTIVE);
    let answer = broker_session.authorize(&alices.token, "", None).await.unwrap();
    assert_eq!((answer.decision, answer.user_id, answer.token_id), (Decision::InactiveUser, 1, alices.id));
    // Her open sessions, by password and by token, end on their next request.
    assert_eq!(status(alice_password.get_me().await), UNAUTHENTICATED);
    assert_eq!(status(alice_password.list_tokens(StatusFilter::All, 0, 0).await), UNAUTHENTICATED);
    assert_eq!(status(alice_token.get_me().await), UNAUTHENTICATED);
    // Bob is untouched; the new policy holds for token sessions.
    assert_eq!(bob_password.get_me().await.unwrap().user_id, 2);
    assert_eq!(login_status(server.address, &bobs.token).await, OK);
    let refused = root_token.create_token(&NewToken::named("from-token")).await;
    assert_eq!(status(refused), MANAGEMENT_NOT_ALLOWED);
    // The lifetime cap applies to new tokens and to a kept expiry alike.
    let never = root.create_token(&NewToken::named("never").with_expiry(Expiry::Never)).await;
    assert_eq!(status(never), LIFETIME_NOT_ALLOWED);
    assert_eq!(status(root.rotate_token("forever", RotateExpiry::Keep).await), LIFETIME_NOT_ALLOWED);
    let capped = root.rotate_token("forever", RotateExpiry::After(Duration::from_secs(600))).await.unwrap();
    assert_ne!(capped.expires_at_us, 0);
    let defaulted = create(&mut root, NewToken::named("defaulted")).await;
    assert_eq!(defaulted.expires_at_us - defaulted.created_at_us, HALF_HOUR_US);

    // A file that does not parse, then one that does not validate: nothing
    // changes, the error is logged, the server goes on serving.
    let unknown_permission = [
        STRICT_POLICY.to_owned(),
        alice.entry(false, &[]),
        bob.entry(true, &[]),
        broker.entry(true, &["admin"]),
    ]
    .concat();
    for broken in ["[[users]\nthis is not toml".to_owned(), unknown_permission] {
        let before = server.logs().matches("configuration not reloaded").count();
        reload(&server, &home, &broken);
        wait_for_logs(&server, |logs| logs.matches("configuration not reloaded").count() > before);
        // Still the previous config: alice is inactive (not unknown), the policy holds.
        assert_eq!(alice.login_status(server.address).await, USER_INACTIVE);
        assert_eq!(
            status(root_token.create_token(&NewToken::named("from-token")).await),
            MANAGEMENT_NOT_ALLOWED
        );
        let never = root.create_token(&NewToken::named("never").with_expiry(Expiry::Never)).await;
        assert_eq!(status(never), LIFETIME_NOT_ALLOWED);
        assert_eq!(bob.login(server.address).await.get_me().await.unwrap().user_id, 2);
        connect(server.address).await.ping().await.unwrap();
    }
    assert_eq!(server.logs().matches("configuration reloaded").count(), 1);

    // Alice back, bob gone, the default policy: each takes effect.
    let changed = [alice.entry(true, &[]), broker.entry(true, &["authorize"])].concat();
    reload(&server, &home, &changed);
    let poll = Poll::new("the reload making alice active again");
    while alice.login_status(server.address).await != OK {
        poll.pause().await;
    }
    wait_for_reload(&server, 1);
    assert_eq!(login_status(server.address, &alices.token).await, OK);
    assert_eq!(decision(&mut broker_session, &alices.token, "", None).await, Decision::Allowed);
    assert_eq!(bob.login_status(server.address).await, INVALID_CREDENTIALS);
    assert_eq!(login_status(server.address, &bobs.token).await, NOT_FOUND);
    assert_eq!(decision(&mut broker_session, &bobs.token, "", None).await, Decision::Unknown);
    assert_eq!(status(bob_password.get_me().await), UNAUTHENTICATED);
    create(&mut root_token, NewToken::named("from-token")).await;
    create(&mut root, NewToken::named("never").with_expiry(Expiry::Never)).await;
}

#[tokio::test]
async fn sighup_can_take_the_authorize_permission_away() {
    let alice = Account::new(1, "alice", "alice-password");
    let broker = Account::new(2, "broker", "broker-password");
    let home = DataHome::new();
    let config = [alice.entry(true, &[]), broker.entry(true, &["authorize"])].concat();
    let server = TestServer::start(&home, &ServerSpec::default_root().config(&config));
    let mut alice_session = alice.login(server.address).await;
    let alices = create(&mut alice_session, NewToken::named("alices")).await;
    let mut broker_session = broker.login(server.address).await;
    let sidecar = create(&mut broker_session, NewToken::named("sidecar").with_scope("authorize")).await;
    let mut sidecar_session = with_token(server.address, &sidecar.token).await;
    assert_eq!(decision(&mut broker_session, &alices.token, "", None).await, Decision::Allowed);
    assert_eq!(decision(&mut sidecar_session, &alices.token, "", None).await, Decision::Allowed);

    // The broker stays, without the permission.
    reload(&server, &home, &[alice.entry(true, &[]), broker.entry(true, &[])].concat());
    wait_for_reload(&server, 0);
    // Open sessions, by password and by token, and new ones alike: 20011.
    assert_eq!(status(broker_session.authorize(&alices.token, "", None).await), AUTHORIZE_NOT_PERMITTED);
    assert_eq!(status(sidecar_session.authorize(&alices.token, "", None).await), AUTHORIZE_NOT_PERMITTED);
    let mut fresh = broker.login(server.address).await;
    assert_eq!(status(fresh.authorize(&alices.token, "", None).await), AUTHORIZE_NOT_PERMITTED);
    // The session itself goes on: only the permission went.
    assert_eq!(broker_session.get_me().await.unwrap().user_id, 2);

    // Given back, it works again on the same sessions.
    reload(&server, &home, &config);
    wait_for_reload(&server, 1);
    assert_eq!(decision(&mut broker_session, &alices.token, "", None).await, Decision::Allowed);
    assert_eq!(decision(&mut sidecar_session, &alices.token, "", None).await, Decision::Allowed);
}

/// Threads of process `pid` named `name` (tokio names its workers and its
/// blocking pool alike; nothing here runs on the blocking pool).
fn threads_named(pid: u32, name: &str) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("/proc/PID/task")
        .filter(|task| {
            let comm = task.as_ref().map(|task| task.path().join("comm")).ok();
            comm.and_then(|path| std::fs::read_to_string(path).ok()).is_some_and(|comm| comm.trim() == name)
        })
        .count()
}

#[tokio::test]
async fn sighup_leaves_the_address_the_limits_and_the_workers_as_they_started() {
    // The address comes from the file here, so a reload could move it.
    let address = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap()
    };
    let elsewhere = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap()
    };
    let config = |address: SocketAddr, shards: usize, per_ip: usize| {
        format!(
            "[system]\nshards = {shards}\n\n[tcp]\naddress = \"{address}\"\nmax_connections_per_ip = {per_ip}\n"
        )
    };
    let home = DataHome::new();
    let spec = ServerSpec::default().config(&config(address, 2, 2)).without_env("LATCHKEY_TCP_ADDRESS");
    let server = TestServer::start(&home, &spec);
    assert_eq!(server.address, address);
    assert_eq!(threads_named(server.pid(), "latchkey-worker"), 2, "the measurement: two workers at start");

    reload(&server, &home, &config(elsewhere, 4, 100));
    wait_for_reload(&server, 0);
    // Not on the new address; still two workers.
    assert!(TcpStream::connect(elsewhere).await.is_err(), "the server moved to {elsewhere}");
    assert_eq!(threads_named(server.pid(), "latchkey-worker"), 2);
    // Still served on the first address, two connections per address: a
    // third is closed at accept. (No other connection before these: a
    // closed one is counted out a moment after its close.)
    let mut open = Vec::new();
    for _ in 0..2 {
        let mut raw = Raw::connect(address).await;
        assert_eq!(raw.call(PING, &[]).await, (0, Vec::new()));
        open.push(raw);
    }
    let mut third = Raw::connect(address).await;
    third.write(&frame(PING, &[])).await;
    assert!(third.read_until_closed().await.is_empty(), "a third connection from one address was served");
}
