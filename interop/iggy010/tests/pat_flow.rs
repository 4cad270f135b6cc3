//! The published Iggy SDK `iggy = "=0.10.0"`, unmodified, against a real
//! `latchkey-server` over its legacy binary TCP protocol.
//!
//! Every scenario runs twice: through the high-level `IggyClient` (which
//! also sends GetClusterMetadata after each login and pings every 5 s) and
//! through the bare `TcpClient` (which does neither).
//!
//! Run with `interop/run.sh`, or build the server first
//! (`cargo build -p latchkey-server` in the repository root) and run
//! `cargo test` in this crate.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use iggy::prelude::*;
use latchkey_interop_iggy010::{
    Exchange, ROOT_PASSWORD, ROOT_USER_ID, ROOT_USERNAME, Server, WireRecorder, user_config,
};

/// Upper bound for any one scenario: a hang fails the test instead of
/// blocking the run.
const SCENARIO_TIMEOUT: Duration = Duration::from_secs(120);

/// Length of a Latchkey token: `lk_` + base62 (not Iggy's 68-char base64).
const LATCHKEY_TOKEN_LEN: usize = 52;

/// IggyError codes (spec §3.12).
const UNAUTHENTICATED: u32 = 40;
const RESOURCE_NOT_FOUND: u32 = 20;
const INVALID_CREDENTIALS: u32 = 42;
const INVALID_TOKEN_NAME: u32 = 50;
const TOKEN_ALREADY_EXISTS: u32 = 51;
const TOKEN_EXPIRED: u32 = 54;

const ONE_HOUR_US: u64 = 3_600_000_000;

/// Legacy command codes (spec §1.2).
const PING: u32 = 1;
const GET_CLUSTER_METADATA: u32 = 12;
const GET_ME: u32 = 20;
const LOGIN_USER: u32 = 38;
const LOGOUT_USER: u32 = 39;
const GET_PATS: u32 = 41;
const CREATE_PAT: u32 = 42;
const DELETE_PAT: u32 = 43;
const LOGIN_WITH_PAT: u32 = 44;

/// Statuses that put the 0.10 SDK on its reconnect path (spec §1.8).
const RECONNECT_STATUSES: [u32; 7] = [8, 9, 30, 31, 40, 61, 304];

#[derive(Debug, Clone, Copy)]
enum Kind {
    /// `IggyClient::builder().with_tcp()…build()`.
    IggyClient,
    /// `TcpClient::create(Arc::new(TcpClientConfig { … }))`.
    TcpClient,
}

/// A new, connected (not logged in) client object of `kind`, all SDK defaults
/// except the server address (reconnect enabled, auto-login disabled).
async fn connect(kind: Kind, address: SocketAddr) -> Box<dyn Client> {
    let server_address = address.to_string();
    let client: Box<dyn Client> = match kind {
        Kind::IggyClient => Box::new(
            IggyClient::builder()
                .with_tcp()
                .with_server_address(server_address)
                .build()
                .expect("build IggyClient"),
        ),
        Kind::TcpClient => Box::new(
            TcpClient::create(Arc::new(TcpClientConfig { server_address, ..TcpClientConfig::default() }))
                .expect("create TcpClient"),
        ),
    };
    client.connect().await.expect("connect");
    client
}

/// Runs `future` or fails the test after `SCENARIO_TIMEOUT`.
async fn within<F: Future>(what: &str, future: F) -> F::Output {
    match tokio::time::timeout(SCENARIO_TIMEOUT, future).await {
        Ok(output) => output,
        Err(_) => panic!("{what} did not finish within {SCENARIO_TIMEOUT:?} (hang)"),
    }
}

/// The IggyError code of a call that must fail.
fn error_code<T: std::fmt::Debug>(what: &str, result: Result<T, IggyError>) -> u32 {
    match result {
        Ok(value) => panic!("{what}: expected an error, got Ok({value:?})"),
        Err(error) => error.as_code(),
    }
}

/// The client's diagnostic events so far ("connected", "signed_in", ...).
/// A clone of the SDK's receiver starts with every event the SDK has queued.
async fn events(client: &dyn Client) -> Vec<String> {
    let mut receiver = client.subscribe_events().await;
    let mut events = Vec::new();
    while let Ok(event) = receiver.try_recv() {
        events.push(event.to_string());
    }
    events
}

/// Fails if the SDK ever dropped and re-opened its connection, which it does
/// silently when the server answers a reconnect-class status (8, 9, 30, 31,
/// 40, 61, 304; spec §1.8) to a request.
async fn assert_never_reconnected(client: &dyn Client) {
    let events = events(client).await;
    let connected = events.iter().filter(|e| *e == "connected").count();
    let disconnected = events.iter().filter(|e| *e == "disconnected").count();
    assert_eq!((connected, disconnected), (1, 0), "the SDK reconnected; its events: {events:?}");
}

/// GetMe as user `user_id` over TCP from a loopback address.
async fn assert_me(client: &dyn Client, user_id: u32) {
    let me = client.get_me().await.expect("get_me");
    assert_eq!(me.user_id, Some(user_id), "get_me: {me:?}");
    assert_eq!(me.transport, "TCP", "get_me: {me:?}");
    assert_eq!(me.consumer_groups_count, 0, "get_me: {me:?}");
    assert!(me.consumer_groups.is_empty(), "get_me: {me:?}");
    let peer: SocketAddr = me.address.parse().expect("get_me address is ip:port");
    assert!(peer.ip().is_loopback(), "get_me: {me:?}");
}

/// GetClusterMetadata: a single healthy leader at the server's own address.
async fn assert_cluster_metadata(client: &dyn Client, address: SocketAddr) {
    let metadata = client.get_cluster_metadata().await.expect("get_cluster_metadata");
    assert_eq!(metadata.nodes.len(), 1, "roster: {metadata}");
    let node = &metadata.nodes[0];
    assert_eq!(node.role, ClusterNodeRole::Leader, "roster: {metadata}");
    assert_eq!(node.status, ClusterNodeStatus::Healthy, "roster: {metadata}");
    assert_eq!(node.ip, address.ip().to_string(), "roster: {metadata}");
    assert_eq!(node.endpoints.tcp, address.port(), "roster: {metadata}");
}

/// Names of the caller's tokens, as the SDK returns them (sorted by name).
async fn token_names(client: &dyn Client) -> Vec<String> {
    client
        .get_personal_access_tokens()
        .await
        .expect("get_personal_access_tokens")
        .into_iter()
        .map(|token| token.name)
        .collect()
}

fn assert_latchkey_token(token: &str) {
    assert_eq!(token.len(), LATCHKEY_TOKEN_LEN, "token {token:?}");
    assert!(token.starts_with("lk_"), "token {token:?}");
    assert!(token[3..].bytes().all(|b| b.is_ascii_alphanumeric()), "token {token:?}");
}

/// Number of successful token logins in the server's audit log.
fn token_logins_logged(server: &Server) -> usize {
    server
        .logs()
        .lines()
        .filter(|line| line.contains("event=\"login\"") && line.contains("method=\"token\""))
        .count()
}

/// Checks what one SDK connection put on the wire, as recorded by the proxy:
/// only login/PAT commands, no reconnect-class status and no 1-byte payload
/// in any reply, every GetClusterMetadata answered with a roster,
/// `IggyClient` following each successful login with GetClusterMetadata and
/// `TcpClient` never sending it on its own, and no Logout the test did not
/// ask for (the 0.10 SDK re-logs in without one).
fn assert_wire(
    kind: Kind,
    exchanges: &[Exchange],
    connection: usize,
    explicit_metadata_calls: usize,
    explicit_logouts: usize,
) {
    let exchanges: Vec<Exchange> = exchanges.iter().filter(|e| e.connection == connection).copied().collect();
    assert!(!exchanges.is_empty(), "nothing recorded on {connection}");
    let sent = [
        PING,
        GET_CLUSTER_METADATA,
        GET_ME,
        LOGIN_USER,
        LOGOUT_USER,
        GET_PATS,
        CREATE_PAT,
        DELETE_PAT,
        LOGIN_WITH_PAT,
    ];
    for exchange in &exchanges {
        assert!(sent.contains(&exchange.code), "unexpected: {exchange:?}");
        assert!(!RECONNECT_STATUSES.contains(&exchange.status), "reconnect-class status: {exchange:?}");
        assert_ne!(exchange.reply_len, 1, "1-byte reply payload: {exchange:?}");
        if exchange.status != 0 {
            assert_eq!(exchange.reply_len, 0, "error with a payload: {exchange:?}");
        }
    }
    // Heartbeat pings may land anywhere; leave them out of the ordering checks.
    let commands: Vec<Exchange> = exchanges.iter().filter(|e| e.code != PING).copied().collect();
    let metadata: Vec<&Exchange> = commands.iter().filter(|e| e.code == GET_CLUSTER_METADATA).collect();
    assert!(
        metadata.iter().all(|e| e.status == 0 && e.reply_len > 0),
        "GetClusterMetadata failed: {metadata:?}"
    );
    let logins: Vec<usize> = commands
        .iter()
        .enumerate()
        .filter(|(_, e)| (e.code == LOGIN_USER || e.code == LOGIN_WITH_PAT) && e.status == 0)
        .map(|(index, _)| index)
        .collect();
    let implicit = match kind {
        Kind::IggyClient => {
            for &index in &logins {
                assert_eq!(
                    commands.get(index + 1).map(|e| e.code),
                    Some(GET_CLUSTER_METADATA),
                    "IggyClient login not followed by GetClusterMetadata: {commands:?}"
                );
            }
            logins.len()
        }
        Kind::TcpClient => 0,
    };
    assert_eq!(metadata.len(), explicit_metadata_calls + implicit, "GetClusterMetadata count: {commands:?}");
    assert_eq!(
        commands.iter().filter(|e| e.code == LOGOUT_USER).count(),
        explicit_logouts,
        "Logout count: {commands:?}"
    );
}

// ---------------------------------------------------------------------------
// Scenario 1: root, the whole PAT life cycle on one client object.
// ---------------------------------------------------------------------------

async fn root_pat_flow(kind: Kind) {
    let mut server = Server::start();
    let address = server.address();
    let recorder = WireRecorder::start(address);
    let client = connect(kind, recorder.address()).await;
    let client = client.as_ref();

    // Before login: Ping reaches the server and is served; everything else is
    // refused by the SDK itself (code 40) without a round trip.
    client.ping().await.expect("ping before login");
    assert_eq!(error_code("get_me before login", client.get_me().await), UNAUTHENTICATED);
    assert_eq!(error_code("list before login", client.get_personal_access_tokens().await), UNAUTHENTICATED);

    // Password login as root. IggyClient follows it with GetClusterMetadata.
    let identity = client.login_user(ROOT_USERNAME, ROOT_PASSWORD).await.expect("login_user iggy/iggy");
    assert_eq!(identity.user_id, ROOT_USER_ID);
    assert!(identity.access_token.is_none());
    assert_me(client, ROOT_USER_ID).await;
    assert_cluster_metadata(client, address).await;
    client.ping().await.expect("ping after login");

    // Create: one that never expires, one for an hour.
    let never = client
        .create_personal_access_token("never-expires", PersonalAccessTokenExpiry::NeverExpire)
        .await
        .expect("create never-expires")
        .token;
    assert_latchkey_token(&never);
    let before_us = IggyTimestamp::now().as_micros();
    let hour = client
        .create_personal_access_token(
            "one-hour",
            PersonalAccessTokenExpiry::ExpireDuration(IggyDuration::new(Duration::from_secs(3600))),
        )
        .await
        .expect("create one-hour")
        .token;
    let after_us = IggyTimestamp::now().as_micros();
    assert_latchkey_token(&hour);
    assert_ne!(never, hour);

    // List: both, with the right expiries.
    let tokens = client.get_personal_access_tokens().await.expect("get_personal_access_tokens");
    assert_eq!(tokens.len(), 2, "{tokens:?}");
    assert_eq!(tokens[0].name, "never-expires", "{tokens:?}");
    assert_eq!(tokens[0].expiry_at, None, "{tokens:?}");
    assert_eq!(tokens[1].name, "one-hour", "{tokens:?}");
    let expiry_at_us = tokens[1].expiry_at.expect("the 1 h token has an expiry").as_micros();
    let slack_us = 2_000_000;
    assert!(
        (before_us + ONE_HOUR_US - slack_us..=after_us + ONE_HOUR_US + slack_us).contains(&expiry_at_us),
        "expiry_at {expiry_at_us} is not creation time + 1 h (created between {before_us} and {after_us})"
    );

    // Duplicate names, whatever the expiry: 51.
    let duplicate =
        client.create_personal_access_token("one-hour", PersonalAccessTokenExpiry::NeverExpire).await;
    assert!(matches!(duplicate, Err(IggyError::PersonalAccessTokenAlreadyExists(..))), "{duplicate:?}");
    assert_eq!(error_code("duplicate", duplicate), TOKEN_ALREADY_EXISTS);
    assert_eq!(
        error_code(
            "duplicate never-expires",
            client
                .create_personal_access_token(
                    "never-expires",
                    PersonalAccessTokenExpiry::ExpireDuration(IggyDuration::new(Duration::from_secs(60))),
                )
                .await
        ),
        TOKEN_ALREADY_EXISTS
    );
    // A name outside 3-30 bytes: 50 (the SDK itself only checks 1-255).
    for name in ["ab".to_owned(), "x".repeat(31)] {
        assert_eq!(
            error_code(
                &format!("{}-byte name", name.len()),
                client.create_personal_access_token(&name, PersonalAccessTokenExpiry::NeverExpire).await
            ),
            INVALID_TOKEN_NAME
        );
    }
    let longest = "x".repeat(30);
    client
        .create_personal_access_token(&longest, PersonalAccessTokenExpiry::NeverExpire)
        .await
        .expect("30-byte name");
    client.delete_personal_access_token(&longest).await.expect("delete 30-byte name");
    assert_eq!(token_names(client).await, ["never-expires", "one-hour"]);

    // A wrong password on a logged-in connection: 42, and the session stays.
    let wrong = client.login_user(ROOT_USERNAME, "not-the-password").await;
    assert!(matches!(wrong, Err(IggyError::InvalidCredentials)), "{wrong:?}");
    assert_me(client, ROOT_USER_ID).await;

    // Logout; then the SDK refuses logged-in calls again (client-side 40).
    client.logout_user().await.expect("logout_user");
    assert_eq!(error_code("get_me after logout", client.get_me().await), UNAUTHENTICATED);

    // Token logins, each followed by GetMe; the second while logged in.
    let identity = client.login_with_personal_access_token(&never).await.expect("PAT login never-expires");
    assert_eq!(identity.user_id, ROOT_USER_ID);
    assert_me(client, ROOT_USER_ID).await;
    let identity =
        client.login_with_personal_access_token(&hour).await.expect("PAT login one-hour while logged in");
    assert_eq!(identity.user_id, ROOT_USER_ID);
    assert_me(client, ROOT_USER_ID).await;
    assert_cluster_metadata(client, address).await;

    // Bogus tokens: 20, and the session stays.
    let bogus = client.login_with_personal_access_token("definitely-not-a-token").await;
    assert!(matches!(bogus, Err(IggyError::ResourceNotFound(_))), "{bogus:?}");
    assert_eq!(error_code("bogus token", bogus), RESOURCE_NOT_FOUND);
    let lookalike = format!("lk_{}", "A".repeat(LATCHKEY_TOKEN_LEN - 3));
    assert_eq!(
        error_code("lookalike token", client.login_with_personal_access_token(&lookalike).await),
        RESOURCE_NOT_FOUND
    );
    assert_me(client, ROOT_USER_ID).await;

    // A token session manages tokens: delete both, list empty.
    assert_eq!(token_names(client).await, ["never-expires", "one-hour"]);
    client.delete_personal_access_token("never-expires").await.expect("delete never-expires");
    client.delete_personal_access_token("one-hour").await.expect("delete one-hour");
    assert!(client.get_personal_access_tokens().await.expect("list after delete").is_empty());
    let missing = client.delete_personal_access_token("never-expires").await;
    assert!(matches!(missing, Err(IggyError::ResourceNotFound(_))), "{missing:?}");
    assert_eq!(error_code("delete missing", missing), RESOURCE_NOT_FOUND);

    // Deleted tokens no longer log in (20), and deleting the token this
    // session logged in with did not end the session.
    assert_eq!(
        error_code("deleted token", client.login_with_personal_access_token(&hour).await),
        RESOURCE_NOT_FOUND
    );
    assert_me(client, ROOT_USER_ID).await;

    // Password failures when logged out: 42 for a wrong password and for an
    // unknown user alike; then the right password still works.
    client.logout_user().await.expect("second logout");
    assert_eq!(
        error_code("wrong password", client.login_user(ROOT_USERNAME, "wrong-password").await),
        INVALID_CREDENTIALS
    );
    assert_eq!(
        error_code("unknown user", client.login_user("nobody-here", "wrong-password").await),
        INVALID_CREDENTIALS
    );
    let identity = client.login_user(ROOT_USERNAME, ROOT_PASSWORD).await.expect("login after failures");
    assert_eq!(identity.user_id, ROOT_USER_ID);
    assert!(token_names(client).await.is_empty());

    assert_never_reconnected(client).await;
    client.shutdown().await.expect("shutdown");
    // Two explicit GetClusterMetadata calls and two explicit logouts above.
    assert_wire(kind, &recorder.exchanges(), 0, 2, 2);
    server.assert_running();
}

#[tokio::test(flavor = "multi_thread")]
async fn iggy_client_root_pat_flow() {
    within("IggyClient root PAT flow", root_pat_flow(Kind::IggyClient)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tcp_client_root_pat_flow() {
    within("TcpClient root PAT flow", root_pat_flow(Kind::TcpClient)).await;
}

// ---------------------------------------------------------------------------
// Scenario 2: a user from the config file; tokens are per user.
// ---------------------------------------------------------------------------

async fn config_user_pat_flow(kind: Kind) {
    let mut server = Server::start_with_config(&user_config(1, "alice", "alice-password"));
    let recorder = WireRecorder::start(server.address());
    let address = recorder.address();

    let alice = connect(kind, address).await;
    let alice = alice.as_ref();
    assert_eq!(
        error_code("alice wrong password", alice.login_user("alice", "not-alices-password").await),
        INVALID_CREDENTIALS
    );
    let identity = alice.login_user("alice", "alice-password").await.expect("login alice");
    assert_eq!(identity.user_id, 1);
    assert_me(alice, 1).await;
    let alice_token = alice
        .create_personal_access_token("alice-token", PersonalAccessTokenExpiry::NeverExpire)
        .await
        .expect("alice creates a token")
        .token;
    assert_latchkey_token(&alice_token);
    alice
        .create_personal_access_token(
            "shared-name",
            PersonalAccessTokenExpiry::ExpireDuration(IggyDuration::new(Duration::from_secs(3600))),
        )
        .await
        .expect("alice creates shared-name");
    alice.logout_user().await.expect("alice logout");
    let identity = alice.login_with_personal_access_token(&alice_token).await.expect("alice PAT login");
    assert_eq!(identity.user_id, 1);
    assert_me(alice, 1).await;

    // Root sees none of alice's tokens, may reuse her token names, and
    // cannot delete hers.
    let root = connect(kind, address).await;
    let root = root.as_ref();
    let identity = root.login_user(ROOT_USERNAME, ROOT_PASSWORD).await.expect("root login");
    assert_eq!(identity.user_id, ROOT_USER_ID);
    assert!(token_names(root).await.is_empty(), "root sees alice's tokens");
    let root_token = root
        .create_personal_access_token("shared-name", PersonalAccessTokenExpiry::NeverExpire)
        .await
        .expect("root reuses alice's token name")
        .token;
    assert_eq!(token_names(root).await, ["shared-name"]);
    assert_eq!(
        error_code("root deletes alice-token", root.delete_personal_access_token("alice-token").await),
        RESOURCE_NOT_FOUND
    );
    assert_eq!(token_names(alice).await, ["alice-token", "shared-name"]);

    // Tokens log in as their owner, whoever was logged in before.
    let identity = root
        .login_with_personal_access_token(&alice_token)
        .await
        .expect("alice's token on root's connection");
    assert_eq!(identity.user_id, 1);
    assert_me(root, 1).await;
    assert_eq!(token_names(root).await, ["alice-token", "shared-name"]);
    let identity = alice
        .login_with_personal_access_token(&root_token)
        .await
        .expect("root's token on alice's connection");
    assert_eq!(identity.user_id, ROOT_USER_ID);
    assert_me(alice, ROOT_USER_ID).await;
    assert_eq!(token_names(alice).await, ["shared-name"]);

    assert_never_reconnected(alice).await;
    assert_never_reconnected(root).await;
    alice.shutdown().await.expect("shutdown alice");
    root.shutdown().await.expect("shutdown root");
    // Connection 0 is alice's (one explicit logout), 1 is root's.
    let exchanges = recorder.exchanges();
    assert_wire(kind, &exchanges, 0, 0, 1);
    assert_wire(kind, &exchanges, 1, 0, 0);
    server.assert_running();
}

#[tokio::test(flavor = "multi_thread")]
async fn iggy_client_config_user_pat_flow() {
    within("IggyClient config-user PAT flow", config_user_pat_flow(Kind::IggyClient)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tcp_client_config_user_pat_flow() {
    within("TcpClient config-user PAT flow", config_user_pat_flow(Kind::TcpClient)).await;
}

// ---------------------------------------------------------------------------
// Scenario 2b: an expired token that is still stored (the cleaner runs every
// minute by default) is listed and refuses login with 54.
// ---------------------------------------------------------------------------

async fn expired_token(kind: Kind) {
    let mut server = Server::start();
    let recorder = WireRecorder::start(server.address());
    let client = connect(kind, recorder.address()).await;
    let client = client.as_ref();
    client.login_user(ROOT_USERNAME, ROOT_PASSWORD).await.expect("root login");
    let token = client
        .create_personal_access_token(
            "one-second",
            PersonalAccessTokenExpiry::ExpireDuration(IggyDuration::new(Duration::from_secs(1))),
        )
        .await
        .expect("create one-second")
        .token;
    let expiry_at =
        client.get_personal_access_tokens().await.expect("list")[0].expiry_at.expect("expiry_at").as_micros();
    // Wait until the listed expiry has passed on this machine's clock, which
    // the server reads too (bounded by the scenario's timeout).
    while IggyTimestamp::now().as_micros() <= expiry_at {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }

    let expired = client.login_with_personal_access_token(&token).await;
    assert!(matches!(expired, Err(IggyError::PersonalAccessTokenExpired(..))), "{expired:?}");
    assert_eq!(error_code("expired token", expired), TOKEN_EXPIRED);
    // Still logged in as before, and the token is still listed.
    assert_me(client, ROOT_USER_ID).await;
    assert_eq!(token_names(client).await, ["one-second"]);
    client.delete_personal_access_token("one-second").await.expect("delete expired token");
    assert_never_reconnected(client).await;
    client.shutdown().await.expect("shutdown");
    assert_wire(kind, &recorder.exchanges(), 0, 0, 0);
    server.assert_running();
}

#[tokio::test(flavor = "multi_thread")]
async fn iggy_client_expired_token() {
    within("IggyClient expired token", expired_token(Kind::IggyClient)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tcp_client_expired_token() {
    within("TcpClient expired token", expired_token(Kind::TcpClient)).await;
}

// ---------------------------------------------------------------------------
// Scenario 3: many token logins. The 0.10 SDK's event channel (capacity
// 1000, never drained) hangs one client object after about 1000 logins
// (spec §1.8), so a fresh client object is used every 100 logins.
// ---------------------------------------------------------------------------

const LOGIN_ROUNDS: usize = 3;
const LOGINS_PER_CLIENT: usize = 100;

async fn many_pat_logins(kind: Kind) {
    let mut server = Server::start();
    let recorder = WireRecorder::start(server.address());
    let address = recorder.address();

    let setup = connect(kind, address).await;
    setup.login_user(ROOT_USERNAME, ROOT_PASSWORD).await.expect("root login");
    let token = setup
        .create_personal_access_token("loop-token", PersonalAccessTokenExpiry::NeverExpire)
        .await
        .expect("create loop-token")
        .token;
    setup.shutdown().await.expect("shutdown setup client");

    let logged_before = token_logins_logged(&server);
    for round in 0..LOGIN_ROUNDS {
        let client = connect(kind, address).await;
        let client = client.as_ref();
        for login in 0..LOGINS_PER_CLIENT {
            let identity = client.login_with_personal_access_token(&token).await.unwrap_or_else(|error| {
                panic!("round {round}, login {login}: {error} ({})", error.as_code())
            });
            assert_eq!(identity.user_id, ROOT_USER_ID);
        }
        assert_me(client, ROOT_USER_ID).await;
        assert_eq!(token_names(client).await, ["loop-token"]);
        let events = events(client).await;
        assert_eq!(events.iter().filter(|e| *e == "signed_in").count(), LOGINS_PER_CLIENT);
        assert_never_reconnected(client).await;
        client.shutdown().await.expect("shutdown");
        server.assert_running();
    }

    // The server logged every one of them, and still serves new clients.
    // The hang guard the other waits use: a bound on a hang, not a timing.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while token_logins_logged(&server) - logged_before < LOGIN_ROUNDS * LOGINS_PER_CLIENT
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(token_logins_logged(&server) - logged_before, LOGIN_ROUNDS * LOGINS_PER_CLIENT);
    let last = connect(kind, address).await;
    let identity = last.login_with_personal_access_token(&token).await.expect("login after the loop");
    assert_eq!(identity.user_id, ROOT_USER_ID);
    last.delete_personal_access_token("loop-token").await.expect("delete loop-token");
    last.shutdown().await.expect("shutdown");
    // Connections: setup, the rounds, and the last client.
    let exchanges = recorder.exchanges();
    for connection in 0..LOGIN_ROUNDS + 2 {
        assert_wire(kind, &exchanges, connection, 0, 0);
    }
    server.assert_running();
}

#[tokio::test(flavor = "multi_thread")]
async fn iggy_client_many_pat_logins() {
    within("IggyClient 300 PAT logins", many_pat_logins(Kind::IggyClient)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tcp_client_many_pat_logins() {
    within("TcpClient 300 PAT logins", many_pat_logins(Kind::TcpClient)).await;
}

// ---------------------------------------------------------------------------
// TLS (spec §0.3): the SDK's own TLS options against `[tcp.tls]`, with a
// self-signed certificate for localhost made here and given as the CA file.
// ---------------------------------------------------------------------------

/// A self-signed certificate for localhost and its key, in a temporary directory.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().expect("temp dir");
        let certified =
            rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("generate certificate");
        std::fs::write(dir.path().join("cert.pem"), certified.cert.pem()).expect("write cert");
        std::fs::write(dir.path().join("key.pem"), certified.signing_key.serialize_pem()).expect("write key");
        Pki { dir }
    }

    fn file(&self, name: &str) -> String {
        self.dir.path().join(name).to_str().expect("UTF-8 temp path").to_owned()
    }

    /// The server's `[tcp.tls]` section for this certificate.
    fn server_config(&self) -> String {
        format!(
            "[tcp.tls]\nenabled = true\ncert_file = {:?}\nkey_file = {:?}\n",
            self.file("cert.pem"),
            self.file("key.pem")
        )
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_password_login_token_create_and_token_login() {
    within("TLS", async {
        let pki = Pki::new();
        let mut server = Server::start_with_config(&pki.server_config());
        let address = server.address();
        let config = TcpClientConfig {
            server_address: address.to_string(),
            tls_enabled: true,
            tls_domain: "localhost".to_owned(),
            tls_ca_file: Some(pki.file("cert.pem")),
            ..TcpClientConfig::default()
        };
        let client = TcpClient::create(Arc::new(config)).expect("create TcpClient");
        client.connect().await.expect("connect over TLS");
        let identity =
            client.login_user(ROOT_USERNAME, ROOT_PASSWORD).await.expect("password login over TLS");
        assert_eq!(identity.user_id, ROOT_USER_ID);
        let token = client
            .create_personal_access_token("tls", PersonalAccessTokenExpiry::NeverExpire)
            .await
            .expect("create a token over TLS")
            .token;
        assert_latchkey_token(&token);
        let identity = client.login_with_personal_access_token(&token).await.expect("token login over TLS");
        assert_eq!(identity.user_id, ROOT_USER_ID);

        // The same options spelled as a connection string, logging in with the token.
        let by_token = IggyClient::from_connection_string(&format!(
            "iggy://{token}@{address}?tls=true&tls_domain=localhost&tls_ca_file={}",
            pki.file("cert.pem")
        ))
        .expect("TLS connection string");
        by_token.connect().await.expect("connect over TLS with token auto-login");
        assert_me(&by_token, ROOT_USER_ID).await;
        assert_eq!(token_names(&by_token).await, ["tls"]);
        assert_never_reconnected(&by_token).await;
        by_token.shutdown().await.expect("shutdown");
        client.shutdown().await.expect("shutdown");
        server.assert_running();
    })
    .await;
}
