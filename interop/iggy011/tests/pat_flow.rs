//! The published Iggy SDK `iggy = "=0.11.0"`, unmodified, against a real
//! `latchkey-server` over the 0.11 (VSR) framing on the same port the legacy
//! clients use.
//!
//! Every scenario runs twice: through the high-level `IggyClient` (which
//! sends a heartbeat Ping every interval, here 100 ms, and reads
//! GetClusterMetadata after logins) and through the bare `TcpClient` (no
//! heartbeat). A recording proxy checks what the SDK sent on its own and
//! how each request was answered.
//!
//! Run with `interop/run.sh`, or build the server first
//! (`cargo build -p latchkey-server` in the repository root) and run
//! `cargo test` in this crate.

use std::future::Future;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use iggy::prelude::*;
use latchkey_interop_iggy011::{
    COMMAND_EVICTION, COMMAND_REPLY, Exchange, LegacyClient, OPERATION_CREATE_PAT, OPERATION_DELETE_PAT,
    OPERATION_LOGOUT, OPERATION_NON_REPLICATED, OPERATION_REGISTER, ROOT_PASSWORD, ROOT_USER_ID,
    ROOT_USERNAME, Server, WireRecorder, user_config,
};

/// Upper bound for any one scenario: a hang fails the test instead of
/// blocking the run.
const SCENARIO_TIMEOUT: Duration = Duration::from_secs(180);

/// Length of a Latchkey token: `lk_` + base62 (not Iggy's 68-char base64).
const LATCHKEY_TOKEN_LEN: usize = 52;

/// IggyError codes (spec §3.12).
const UNAUTHENTICATED: u32 = 40;
const RESOURCE_NOT_FOUND: u32 = 20;
const INVALID_CREDENTIALS: u32 = 42;
const INVALID_TOKEN_NAME: u32 = 50;
const TOKEN_ALREADY_EXISTS: u32 = 51;
const TOKENS_LIMIT_REACHED: u32 = 52;
const INVALID_TOKEN: u32 = 53;

/// Eviction reasons (spec §2.7).
const EVICTION_INVALID_CREDENTIALS: u8 = 9;
const EVICTION_INVALID_TOKEN: u8 = 10;

const ONE_HOUR_US: u64 = 3_600_000_000;

/// NonReplicated command codes (spec §2.8).
const PING: u32 = 1;
const GET_CLUSTER_METADATA: u32 = 12;
const GET_ME: u32 = 20;
const GET_PATS: u32 = 41;

/// Deny statuses that put the 0.11 SDK on its reconnect path (spec §2.17).
/// 40 is allowed only while the connection is not logged in.
const RECONNECT_STATUSES: [u32; 6] = [8, 9, 30, 31, 61, 304];

/// The heartbeat interval given to every client (only `IggyClient` sends it).
const HEARTBEAT: &str = "100ms";

#[derive(Debug, Clone, Copy)]
enum Kind {
    /// `IggyClient::new(ClientWrapper::Tcp(…))` + `connect()`: heartbeat on.
    IggyClient,
    /// `TcpClient::create(…)`: no heartbeat.
    TcpClient,
}

fn tcp_config(address: SocketAddr) -> TcpClientConfig {
    TcpClientConfig {
        server_address: address.to_string(),
        heartbeat_interval: NonZeroIggyDuration::from_str(HEARTBEAT).expect("heartbeat interval"),
        ..TcpClientConfig::default()
    }
}

/// A new, connected (not logged in) client object of `kind`: SDK defaults
/// (reconnect enabled, auto-login disabled) except address and heartbeat.
async fn connect(kind: Kind, address: SocketAddr) -> Box<dyn Client> {
    let tcp = TcpClient::create(Arc::new(tcp_config(address))).expect("create TcpClient");
    let client: Box<dyn Client> = match kind {
        Kind::IggyClient => Box::new(IggyClient::new(ClientWrapper::Tcp(tcp))),
        Kind::TcpClient => Box::new(tcp),
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
async fn events(client: &dyn Client) -> Vec<String> {
    let mut receiver = client.subscribe_events().await;
    let mut events = Vec::new();
    while let Ok(event) = receiver.try_recv() {
        events.push(event.to_string());
    }
    events
}

/// Fails if the SDK ever dropped and re-opened its connection, which it does
/// silently when the server answers a reconnect-class code (spec §2.17).
async fn assert_never_reconnected(client: &dyn Client) {
    let events = events(client).await;
    let connected = events.iter().filter(|e| *e == "connected").count();
    let disconnected = events.iter().filter(|e| *e == "disconnected").count();
    assert_eq!((connected, disconnected), (1, 0), "the SDK reconnected; its events: {events:?}");
}

async fn assert_me(client: &dyn Client, user_id: u32) {
    let me = client.get_me().await.expect("get_me");
    assert_eq!(me.user_id, Some(user_id), "get_me: {me:?}");
    assert_eq!(me.transport, "TCP", "get_me: {me:?}");
    assert_eq!(me.consumer_groups_count, 0, "get_me: {me:?}");
    let peer: SocketAddr = me.address.parse().expect("get_me address is ip:port");
    assert!(peer.ip().is_loopback(), "get_me: {me:?}");
}

async fn assert_cluster_metadata(client: &dyn Client, address: SocketAddr) {
    let metadata = client.get_cluster_metadata().await.expect("get_cluster_metadata");
    assert_eq!(metadata.nodes.len(), 1, "roster: {metadata}");
    let node = &metadata.nodes[0];
    assert_eq!(node.role, ClusterNodeRole::Leader, "roster: {metadata}");
    assert_eq!(node.status, ClusterNodeStatus::Healthy, "roster: {metadata}");
    assert_eq!(node.ip, address.ip().to_string(), "roster: {metadata}");
    assert_eq!(node.endpoints.tcp, address.port(), "roster: {metadata}");
}

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

fn expire_in(duration: Duration) -> PersonalAccessTokenExpiry {
    PersonalAccessTokenExpiry::ExpireDuration(IggyDuration::new(duration))
}

/// Checks what one SDK connection put on the wire and how it was answered:
/// - every answer is a Reply or an Eviction, and evictions answer only
///   Register (password 9, token 10) — never a request of a logged-in client;
/// - no reconnect-class status, and 40 only while not logged in;
/// - every Ping (heartbeats included) and GetClusterMetadata answered OK, the
///   latter with a roster; at least one GetClusterMetadata after a login;
/// - PAT create/delete answered with a result section, Logout with an empty OK;
/// - `IggyClient` sent heartbeats (`pings > explicit_pings`), `TcpClient` did not.
fn assert_wire(kind: Kind, exchanges: &[Exchange], connection: usize, explicit_pings: usize) {
    let exchanges: Vec<Exchange> = exchanges.iter().filter(|e| e.connection == connection).copied().collect();
    assert!(!exchanges.is_empty(), "nothing recorded on {connection}");
    let mut logged_in = false;
    let mut logins = 0;
    for exchange in &exchanges {
        match exchange.command {
            COMMAND_EVICTION => {
                assert_eq!(exchange.operation, OPERATION_REGISTER, "eviction of a non-login: {exchange:?}");
                assert!(
                    [EVICTION_INVALID_CREDENTIALS, EVICTION_INVALID_TOKEN].contains(&exchange.reason),
                    "{exchange:?}"
                );
                logged_in = false;
                continue;
            }
            COMMAND_REPLY => {}
            _ => panic!("unexpected frame: {exchange:?}"),
        }
        assert!(!RECONNECT_STATUSES.contains(&exchange.status), "reconnect-class status: {exchange:?}");
        if exchange.status == UNAUTHENTICATED {
            assert!(!logged_in, "40 to a logged-in client: {exchange:?} in {exchanges:?}");
        }
        if exchange.status != 0 {
            assert_eq!(exchange.body_len, 0, "deny with a body: {exchange:?}");
        }
        match (exchange.operation, exchange.code) {
            (OPERATION_REGISTER, _) => {
                assert_eq!((exchange.status, exchange.result), (0, Some(0)), "{exchange:?}");
                logged_in = true;
                logins += 1;
            }
            (OPERATION_LOGOUT, _) => {
                assert_eq!((exchange.status, exchange.body_len), (0, 0), "{exchange:?}");
                logged_in = false;
            }
            (OPERATION_CREATE_PAT | OPERATION_DELETE_PAT, _) if exchange.status == 0 => {
                assert!(exchange.result.is_some(), "no result section: {exchange:?}");
            }
            (OPERATION_NON_REPLICATED, PING) => assert_eq!(exchange.status, 0, "{exchange:?}"),
            (OPERATION_NON_REPLICATED, GET_CLUSTER_METADATA) => {
                assert!(exchange.status == 0 && exchange.body_len > 0, "{exchange:?}");
            }
            (OPERATION_NON_REPLICATED, GET_ME | GET_PATS) => {}
            _ if exchange.status != 0 => {}
            other => panic!("unexpected request {other:?}: {exchange:?}"),
        }
    }
    let metadata_reads = exchanges.iter().filter(|e| e.code == GET_CLUSTER_METADATA).count();
    if logins > 0 {
        assert!(metadata_reads >= 1, "no GetClusterMetadata after {logins} logins: {exchanges:?}");
    }
    let pings =
        exchanges.iter().filter(|e| e.operation == OPERATION_NON_REPLICATED && e.code == PING).count();
    let evictions = exchanges.iter().filter(|e| e.command == COMMAND_EVICTION).count();
    eprintln!(
        "{kind:?} connection {connection}: {} exchanges, {pings} pings, {metadata_reads} GetClusterMetadata, \
         {logins} logins, {evictions} evictions",
        exchanges.len()
    );
    match kind {
        Kind::IggyClient => assert!(pings > explicit_pings, "no heartbeat: {pings} pings"),
        Kind::TcpClient => assert_eq!(pings, explicit_pings, "TcpClient sent pings of its own"),
    }
}

/// Long enough for several 100 ms heartbeats.
async fn idle() {
    tokio::time::sleep(Duration::from_millis(350)).await;
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

    // Before login: Ping is served; logged-in calls fail with 40. Heartbeats
    // run before login too.
    client.ping().await.expect("ping before login");
    idle().await;
    assert_eq!(error_code("get_me before login", client.get_me().await), UNAUTHENTICATED);
    assert_eq!(error_code("list before login", client.get_personal_access_tokens().await), UNAUTHENTICATED);

    let identity = client.login_user(ROOT_USERNAME, ROOT_PASSWORD).await.expect("login_user iggy/iggy");
    assert_eq!(identity.user_id, ROOT_USER_ID);
    assert!(identity.access_token.is_none());
    assert_me(client, ROOT_USER_ID).await;
    assert_cluster_metadata(client, address).await;
    client.ping().await.expect("ping after login");
    idle().await;

    // Create: one that never expires, one for an hour.
    let never = client
        .create_personal_access_token("never-expires", PersonalAccessTokenExpiry::NeverExpire)
        .await
        .expect("create never-expires")
        .token;
    assert_latchkey_token(&never);
    let before_us = IggyTimestamp::now().as_micros();
    let hour = client
        .create_personal_access_token("one-hour", expire_in(Duration::from_secs(3600)))
        .await
        .expect("create one-hour")
        .token;
    let after_us = IggyTimestamp::now().as_micros();
    assert_latchkey_token(&hour);
    assert_ne!(never, hour);

    let tokens = client.get_personal_access_tokens().await.expect("get_personal_access_tokens");
    assert_eq!(tokens.len(), 2, "{tokens:?}");
    assert_eq!((tokens[0].name.as_str(), tokens[0].expiry_at), ("never-expires", None), "{tokens:?}");
    assert_eq!(tokens[1].name, "one-hour", "{tokens:?}");
    let expiry_at_us = tokens[1].expiry_at.expect("the 1 h token has an expiry").as_micros();
    let slack_us = 2_000_000;
    assert!(
        (before_us + ONE_HOUR_US - slack_us..=after_us + ONE_HOUR_US + slack_us).contains(&expiry_at_us),
        "expiry_at {expiry_at_us} is not creation time + 1 h (created between {before_us} and {after_us})"
    );

    // Duplicates (a result rejection on the wire): 51.
    let duplicate =
        client.create_personal_access_token("one-hour", PersonalAccessTokenExpiry::NeverExpire).await;
    assert!(matches!(duplicate, Err(IggyError::PersonalAccessTokenAlreadyExists(..))), "{duplicate:?}");
    assert_eq!(
        error_code(
            "duplicate never-expires",
            client.create_personal_access_token("never-expires", expire_in(Duration::from_secs(60))).await
        ),
        TOKEN_ALREADY_EXISTS
    );
    // Latchkey's 3–30 byte name rule (a deny on the wire): 50.
    for name in ["ab".to_owned(), "x".repeat(31)] {
        assert_eq!(
            error_code(
                &format!("{}-byte name", name.len()),
                client.create_personal_access_token(&name, PersonalAccessTokenExpiry::NeverExpire).await
            ),
            INVALID_TOKEN_NAME
        );
    }
    assert_eq!(token_names(client).await, ["never-expires", "one-hour"]);

    // Logout; then the SDK refuses logged-in calls again.
    client.logout_user().await.expect("logout_user");
    assert_eq!(error_code("get_me after logout", client.get_me().await), UNAUTHENTICATED);

    // Token logins report the owner; the second one while logged in (the SDK
    // sends a Logout first).
    let identity = client.login_with_personal_access_token(&never).await.expect("PAT login never-expires");
    assert_eq!(identity.user_id, ROOT_USER_ID);
    assert_me(client, ROOT_USER_ID).await;
    let identity =
        client.login_with_personal_access_token(&hour).await.expect("PAT login one-hour while logged in");
    assert_eq!(identity.user_id, ROOT_USER_ID);
    assert_me(client, ROOT_USER_ID).await;
    assert_cluster_metadata(client, address).await;

    // A bogus token: 53 (eviction 10 on the wire). The SDK resets its session.
    let bogus = client.login_with_personal_access_token("definitely-not-a-token").await;
    assert!(matches!(bogus, Err(IggyError::InvalidPersonalAccessToken)), "{bogus:?}");
    let lookalike = format!("lk_{}", "A".repeat(LATCHKEY_TOKEN_LEN - 3));
    assert_eq!(
        error_code("lookalike token", client.login_with_personal_access_token(&lookalike).await),
        INVALID_TOKEN
    );
    let identity = client.login_with_personal_access_token(&hour).await.expect("PAT login after a bogus one");
    assert_eq!(identity.user_id, ROOT_USER_ID);

    // A token session manages tokens: delete both, list empty, delete missing: 20.
    client.delete_personal_access_token("never-expires").await.expect("delete never-expires");
    client.delete_personal_access_token("one-hour").await.expect("delete one-hour");
    assert!(client.get_personal_access_tokens().await.expect("list after delete").is_empty());
    let missing = client.delete_personal_access_token("never-expires").await;
    assert!(matches!(missing, Err(IggyError::ResourceNotFound(_))), "{missing:?}");
    assert_eq!(error_code("delete missing", missing), RESOURCE_NOT_FOUND);
    // Deleting the token this session logged in with did not end the session.
    assert_me(client, ROOT_USER_ID).await;
    // Deleted tokens no longer log in: 53.
    assert_eq!(
        error_code("deleted token", client.login_with_personal_access_token(&hour).await),
        INVALID_TOKEN
    );

    // Password failures: 42 for a wrong password and an unknown user alike;
    // then the right password works on the same client object.
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
    idle().await;
    client.logout_user().await.expect("final logout");

    assert_never_reconnected(client).await;
    client.shutdown().await.expect("shutdown");
    assert_wire(kind, &recorder.exchanges(), 0, 2);
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
// Scenario 2: a user from the config file; tokens are per user; the limit.
// ---------------------------------------------------------------------------

async fn config_user_pat_flow(kind: Kind) {
    let config = format!(
        "{}\n[personal_access_token]\nmax_tokens_per_user = 3\n",
        user_config(1, "alice", "alice-password")
    );
    let mut server = Server::start_with_config(&config);
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
    alice
        .create_personal_access_token("shared-name", expire_in(Duration::from_secs(3600)))
        .await
        .expect("alice creates shared-name");
    alice
        .create_personal_access_token("third", PersonalAccessTokenExpiry::ServerDefault)
        .await
        .expect("alice creates a third token");
    // At the limit: 52 (a deny), checked before the duplicate check.
    let limit = alice.create_personal_access_token("fourth", PersonalAccessTokenExpiry::NeverExpire).await;
    assert!(matches!(limit, Err(IggyError::PersonalAccessTokensLimitReached(..))), "{limit:?}");
    assert_eq!(
        error_code(
            "duplicate at the limit",
            alice.create_personal_access_token("third", PersonalAccessTokenExpiry::NeverExpire).await
        ),
        TOKENS_LIMIT_REACHED
    );
    alice.delete_personal_access_token("third").await.expect("delete frees a slot");
    alice.logout_user().await.expect("alice logout");
    let identity = alice.login_with_personal_access_token(&alice_token).await.expect("alice PAT login");
    assert_eq!(identity.user_id, 1);
    assert_me(alice, 1).await;

    // Root sees none of alice's tokens, may reuse her names, cannot delete hers.
    let root = connect(kind, address).await;
    let root = root.as_ref();
    assert_eq!(
        root.login_user(ROOT_USERNAME, ROOT_PASSWORD).await.expect("root login").user_id,
        ROOT_USER_ID
    );
    assert!(token_names(root).await.is_empty(), "root sees alice's tokens");
    let root_token = root
        .create_personal_access_token("shared-name", PersonalAccessTokenExpiry::NeverExpire)
        .await
        .expect("root reuses alice's token name")
        .token;
    assert_eq!(
        error_code("root deletes alice-token", root.delete_personal_access_token("alice-token").await),
        RESOURCE_NOT_FOUND
    );
    assert_eq!(token_names(alice).await, ["alice-token", "shared-name"]);

    // Tokens log in as their owner, whoever was logged in before.
    let identity =
        root.login_with_personal_access_token(&alice_token).await.expect("alice's token on root's");
    assert_eq!(identity.user_id, 1);
    assert_me(root, 1).await;
    let identity =
        alice.login_with_personal_access_token(&root_token).await.expect("root's token on alice's");
    assert_eq!(identity.user_id, ROOT_USER_ID);
    assert_eq!(token_names(alice).await, ["shared-name"]);
    idle().await;

    assert_never_reconnected(alice).await;
    assert_never_reconnected(root).await;
    alice.shutdown().await.expect("shutdown alice");
    root.shutdown().await.expect("shutdown root");
    let exchanges = recorder.exchanges();
    assert_wire(kind, &exchanges, 0, 0);
    assert_wire(kind, &exchanges, 1, 0);
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
// Scenario 3: an expired token that is still stored is listed, and its
// login is refused with 53 (the legacy framing says 54 for the same token).
// ---------------------------------------------------------------------------

async fn expired_token(kind: Kind) {
    let mut server = Server::start();
    let recorder = WireRecorder::start(server.address());
    let client = connect(kind, recorder.address()).await;
    let client = client.as_ref();
    client.login_user(ROOT_USERNAME, ROOT_PASSWORD).await.expect("root login");
    let token = client
        .create_personal_access_token("one-second", expire_in(Duration::from_secs(1)))
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

    let other = connect(kind, recorder.address()).await;
    let expired = other.login_with_personal_access_token(&token).await;
    assert!(matches!(expired, Err(IggyError::InvalidPersonalAccessToken)), "{expired:?}");
    let mut legacy = LegacyClient::connect(server.address());
    assert_eq!(legacy.login_with_token(&token), (54, None), "legacy: expired but stored");
    // Still listed on the first client, which is still logged in.
    assert_eq!(token_names(client).await, ["one-second"]);
    client.delete_personal_access_token("one-second").await.expect("delete expired token");
    assert_never_reconnected(client).await;
    assert_never_reconnected(other.as_ref()).await;
    client.shutdown().await.expect("shutdown");
    other.shutdown().await.expect("shutdown other");
    assert_wire(kind, &recorder.exchanges(), 0, 0);
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
// Scenario 4: many token logins. A 0.11.0 re-login is Logout + Register and
// the SDK's never-drained event channel (capacity 1000) hangs a client
// object after about 500 of them (spec §2.17), so each client object does
// 150 logins.
// ---------------------------------------------------------------------------

const LOGIN_ROUNDS: usize = 3;
const LOGINS_PER_CLIENT: usize = 150;

/// Successful token logins in the server's audit log.
fn token_logins_logged(server: &Server) -> usize {
    server
        .logs()
        .lines()
        .filter(|line| line.contains("event=\"login\"") && line.contains("method=\"token\""))
        .count()
}

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
        assert_eq!(events.iter().filter(|e| *e == "signed_in").count(), LOGINS_PER_CLIENT, "{events:?}");
        assert_never_reconnected(client).await;
        client.shutdown().await.expect("shutdown");
        server.assert_running();
    }

    // The hang guard the other waits use: a bound on a hang, not a timing.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while token_logins_logged(&server) - logged_before < LOGIN_ROUNDS * LOGINS_PER_CLIENT
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(token_logins_logged(&server) - logged_before, LOGIN_ROUNDS * LOGINS_PER_CLIENT);
    let exchanges = recorder.exchanges();
    for connection in 1..=LOGIN_ROUNDS {
        let registers = exchanges
            .iter()
            .filter(|e| e.connection == connection && e.operation == OPERATION_REGISTER)
            .count();
        assert_eq!(registers, LOGINS_PER_CLIENT, "connection {connection}");
        let logouts = exchanges
            .iter()
            .filter(|e| e.connection == connection && e.operation == OPERATION_LOGOUT)
            .count();
        assert_eq!(logouts, LOGINS_PER_CLIENT - 1, "the SDK logs out before each re-login");
    }
    server.assert_running();
}

#[tokio::test(flavor = "multi_thread")]
async fn iggy_client_many_pat_logins() {
    within("IggyClient 450 PAT logins", many_pat_logins(Kind::IggyClient)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tcp_client_many_pat_logins() {
    within("TcpClient 450 PAT logins", many_pat_logins(Kind::TcpClient)).await;
}

// ---------------------------------------------------------------------------
// Scenario 5: one registry for both framings on one port.
// ---------------------------------------------------------------------------

async fn cross_framing(kind: Kind) {
    let mut server = Server::start();
    let address = server.address();

    // Created over the 0.11 framing, used over the legacy one.
    let client = connect(kind, address).await;
    let client = client.as_ref();
    client.login_user(ROOT_USERNAME, ROOT_PASSWORD).await.expect("root login");
    let from_vsr = client
        .create_personal_access_token("made-on-vsr", PersonalAccessTokenExpiry::NeverExpire)
        .await
        .expect("create over 0.11")
        .token;
    let mut legacy = LegacyClient::connect(address);
    assert_eq!(legacy.login_with_token(&from_vsr), (0, Some(ROOT_USER_ID)));
    assert_eq!(legacy.token_names(), ["made-on-vsr"]);

    // Created over the legacy framing, used over the 0.11 one.
    let from_legacy = legacy.create_token("made-on-legacy");
    assert_latchkey_token(&from_legacy);
    let other = connect(kind, address).await;
    let identity =
        other.login_with_personal_access_token(&from_legacy).await.expect("0.11 login, legacy token");
    assert_eq!(identity.user_id, ROOT_USER_ID);
    assert_eq!(token_names(other.as_ref()).await, ["made-on-legacy", "made-on-vsr"]);

    // Deletes cross too.
    other.delete_personal_access_token("made-on-vsr").await.expect("delete over 0.11");
    assert_eq!(LegacyClient::connect(address).login_with_token(&from_vsr), (20, None));
    assert_eq!(legacy.delete_token("made-on-legacy"), 0);
    let third = connect(kind, address).await;
    assert_eq!(
        error_code("deleted over legacy", third.login_with_personal_access_token(&from_legacy).await),
        INVALID_TOKEN
    );
    // A legacy password login alongside, on the same port.
    assert_eq!(LegacyClient::connect(address).login_user(ROOT_USERNAME, ROOT_PASSWORD), (0, Some(0)));
    assert!(token_names(client).await.is_empty());
    for client in [client, other.as_ref(), third.as_ref()] {
        assert_never_reconnected(client).await;
        client.shutdown().await.expect("shutdown");
    }
    server.assert_running();
}

#[tokio::test(flavor = "multi_thread")]
async fn iggy_client_cross_framing() {
    within("IggyClient cross framing", cross_framing(Kind::IggyClient)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tcp_client_cross_framing() {
    within("TcpClient cross framing", cross_framing(Kind::TcpClient)).await;
}

// ---------------------------------------------------------------------------
// Scenario 6: auto-login from connection strings (password and token).
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn connection_strings_auto_login_with_a_password_or_a_token() {
    within("connection strings", async {
        let mut server = Server::start();
        let recorder = WireRecorder::start(server.address());
        let address = recorder.address();
        let by_password = IggyClient::from_connection_string(&format!(
            "iggy+tcp://{ROOT_USERNAME}:{ROOT_PASSWORD}@{address}?heartbeat_interval={HEARTBEAT}"
        ))
        .expect("password connection string");
        by_password.connect().await.expect("connect with auto-login");
        assert_me(&by_password, ROOT_USER_ID).await;
        let token = by_password
            .create_personal_access_token("auto-login", PersonalAccessTokenExpiry::NeverExpire)
            .await
            .expect("create auto-login")
            .token;

        let by_token = IggyClient::from_connection_string(&format!(
            "iggy+tcp://{token}@{address}?heartbeat_interval={HEARTBEAT}"
        ))
        .expect("token connection string");
        by_token.connect().await.expect("connect with token auto-login");
        assert_me(&by_token, ROOT_USER_ID).await;
        assert_eq!(token_names(&by_token).await, ["auto-login"]);
        idle().await;
        for client in [&by_password, &by_token] {
            assert_never_reconnected(client).await;
            client.shutdown().await.expect("shutdown");
        }
        let exchanges = recorder.exchanges();
        assert_wire(Kind::IggyClient, &exchanges, 0, 0);
        assert_wire(Kind::IggyClient, &exchanges, 1, 0);
        server.assert_running();
    })
    .await;
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
            ..tcp_config(address)
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
