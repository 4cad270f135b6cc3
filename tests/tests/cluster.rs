//! Cluster mode: several real Latchkey nodes on a real 3-member etcd
//! cluster on loopback. Needs Debian's `etcd-server` and a latchkey-server
//! built with `--features etcd`; run with
//! `cargo build -p latchkey-server --features etcd && cargo test -p latchkey-tests --features etcd --test cluster`.

mod common;

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::*;
use latchkey_sdk::Expiry;
use latchkey_tests::etcd::EtcdCluster;
use latchkey_tests::{DataHome, ServerSpec, TestServer};

/// How long a change made on one node may take to be seen on another in
/// these tests: generous, as the machine is shared; the bench measures the
/// real propagation time.
const PROPAGATION_BOUND: Duration = Duration::from_secs(10);

/// A key file (32 random bytes, mode 0600) in its own directory.
struct KeyFile {
    dir: tempfile::TempDir,
}

impl KeyFile {
    fn new() -> KeyFile {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("token.key");
        std::fs::write(&path, random_bytes(32)).expect("write key");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod key");
        KeyFile { dir }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("token.key")
    }
}

/// One Latchkey node with its own data directory.
struct Node {
    _home: DataHome,
    server: TestServer,
}

fn spec(etcd: &EtcdCluster, key: &KeyFile) -> ServerSpec {
    ServerSpec::default_root()
        .env("LATCHKEY_STORAGE_BACKEND", "etcd")
        .env("LATCHKEY_STORAGE_ETCD_ENDPOINTS", &etcd.endpoints())
        .env("LATCHKEY_STORAGE_ETCD_KEY_FILE", key.path().to_str().unwrap())
        .env("LATCHKEY_STORAGE_ETCD_REQUEST_TIMEOUT", "2s")
}

/// Starts a node, or explains how to build one that can run here.
fn try_node(spec: &ServerSpec) -> Result<Node, latchkey_tests::Exited> {
    let home = DataHome::new();
    match TestServer::try_start(&home, spec) {
        Ok(server) => Ok(Node { _home: home, server }),
        Err(exited) => {
            assert!(
                !exited.stderr.contains("--features etcd"),
                "this latchkey-server has no etcd backend: run `cargo build -p latchkey-server --features etcd` \
                 first\n{}",
                exited.stderr
            );
            Err(exited)
        }
    }
}

fn node(spec: &ServerSpec) -> Node {
    try_node(spec).unwrap_or_else(|exited| {
        panic!("node exited during start with {}\n{}\n{}", exited.status, exited.stdout, exited.stderr)
    })
}

/// A 3-member etcd cluster, a key and `count` nodes on them; `None` when
/// etcd is not installed (the harness said why).
fn cluster(count: usize) -> Option<(EtcdCluster, KeyFile, Vec<Node>)> {
    let etcd = EtcdCluster::start(3)?;
    let key = KeyFile::new();
    let nodes = (0..count).map(|_| node(&spec(&etcd, &key))).collect();
    Some((etcd, key, nodes))
}

/// Polls `check` until it holds or `PROPAGATION_BOUND` passes.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + PROPAGATION_BOUND;
    while !check().await {
        assert!(Instant::now() < deadline, "{what}: not within {PROPAGATION_BOUND:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Runs a write until etcd has a leader: 20002 (no answer within the
/// request timeout) is retried for a bounded time, anything else fails.
async fn until_elected<T, F, Fut>(mut write: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, latchkey_sdk::Error>>,
{
    let deadline = Instant::now() + PROPAGATION_BOUND;
    loop {
        match write().await {
            Ok(value) => return value,
            Err(latchkey_sdk::Error::Server { code: 20002, .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(error) => panic!("write failed: {error:?}"),
        }
    }
}

/// The names of root's tokens as `node` lists them.
async fn token_names(node: &Node) -> Vec<String> {
    let tokens = root(node.server.address).await.get_personal_access_tokens().await.unwrap();
    tokens.into_iter().map(|token| token.name).collect()
}

/// Waits until every node's list of root's tokens satisfies `holds`.
async fn every_node_lists(nodes: &[Node], what: &str, holds: impl Fn(&[String]) -> bool) {
    for node in nodes {
        eventually(what, || async { holds(&token_names(node).await) }).await;
    }
}

/// The statuses the racing tasks ended with.
async fn statuses_of(racers: Vec<tokio::task::JoinHandle<u32>>) -> Vec<u32> {
    let mut statuses = Vec::new();
    for racer in racers {
        statuses.push(racer.await.unwrap());
    }
    statuses
}

/// The status of a token login on a fresh connection.
async fn token_login(node: &Node, token: &str) -> u32 {
    status(connect(node.server.address).await.login_with_personal_access_token(token).await)
}

#[tokio::test]
async fn a_token_made_on_one_node_logs_in_everywhere_and_its_revoke_and_delete_reach_every_node() {
    let Some((_etcd, _key, nodes)) = cluster(3) else { return };
    let mut owner = root(nodes[0].server.address).await;
    let token = owner.create_personal_access_token("ci-deploy", Expiry::Never).await.unwrap();
    // Read-your-writes on the node that answered: at once, no polling.
    assert_eq!(token_login(&nodes[0], &token).await, 0);
    for node in &nodes[1..] {
        eventually("the new token logs in on another node", || async {
            token_login(node, &token).await == 0
        })
        .await;
    }
    // A duplicate name is refused on every node, as on one.
    for node in &nodes {
        assert_eq!(
            status(
                root(node.server.address)
                    .await
                    .create_personal_access_token("ci-deploy", Expiry::Never)
                    .await
            ),
            51
        );
    }
    // Revoked on node 1: refused everywhere (20003), at once on node 1.
    root(nodes[1].server.address).await.revoke_token("ci-deploy").await.unwrap();
    assert_eq!(token_login(&nodes[1], &token).await, 20003);
    for node in [&nodes[0], &nodes[2]] {
        eventually("the revoke reaches another node", || async { token_login(node, &token).await == 20003 })
            .await;
    }
    // Deleted on node 2: gone from every node's list.
    root(nodes[2].server.address).await.delete_personal_access_token("ci-deploy").await.unwrap();
    every_node_lists(&nodes, "the delete reaches every node", <[String]>::is_empty).await;
    for node in &nodes {
        assert_eq!(token_login(node, &token).await, 20);
    }
}

#[tokio::test]
async fn an_access_edit_and_a_reactivation_reach_every_node_and_a_restarted_one() {
    use latchkey_sdk::{AccessEdit, NewToken, RotateExpiry, TokenStatus};

    let Some((etcd, key, mut nodes)) = cluster(2) else { return };
    let mut owner = root(nodes[0].server.address).await;
    let made =
        NewToken::named("edited").with_description("kept").with_scope("me:read").with_network("10.0.0.0/8");
    let issued = owner.create_token(&made).await.unwrap();
    // Narrowed and moved to this address on node 0: the token logs in from
    // here on node 1 once the edit reaches it, with only its new scope.
    let edits = [AccessEdit::AddScope("tokens:read".into()), AccessEdit::RemoveScope("me:read".into())];
    owner.edit_token_access(issued.id, edits).await.unwrap();
    owner
        .edit_token_access(issued.id, [AccessEdit::ClearNetworks, AccessEdit::AddNetwork("127.0.0.1".into())])
        .await
        .unwrap();
    eventually("the edit reaches node 1", || async { token_login(&nodes[1], &issued.token).await == 0 })
        .await;
    let mut on_token = connect(nodes[1].server.address).await;
    on_token.login_with_personal_access_token(&issued.token).await.unwrap();
    assert_eq!(status(on_token.get_me().await), 20005, "me:read was removed");
    let seen = on_token.get_token(issued.id).await.unwrap();
    assert_eq!(
        (seen.scopes.as_slice(), seen.networks.as_slice()),
        (&["tokens:read".to_owned()][..], &["127.0.0.1/32".to_owned()][..])
    );
    assert_eq!(seen.description, "kept");

    // Revoked on node 1, brought back on node 0: node 1 follows.
    root(nodes[1].server.address).await.revoke_token(issued.id).await.unwrap();
    assert_eq!(status(owner.rotate_token(issued.id, RotateExpiry::Keep).await), 20003);
    let address = nodes[0].server.address;
    let back =
        until_elected(
            || async move { root(address).await.reactivate_token(issued.id, RotateExpiry::Keep).await },
        )
        .await;
    eventually("the reactivation reaches node 1", || async {
        token_login(&nodes[1], &back.token).await == 0
    })
    .await;
    assert_eq!(token_login(&nodes[1], &issued.token).await, 20, "the old secret is unknown everywhere");
    let on_node_1 = root(nodes[1].server.address).await.get_token(issued.id).await.unwrap();
    assert_eq!((on_node_1.status, on_node_1.revoked_at_us), (TokenStatus::Active, 0));

    // A node started afterwards loads the token as it now is.
    let restarted = nodes.remove(1);
    restarted.server.kill();
    let fresh = node(&spec(&etcd, &key));
    let loaded = root(fresh.server.address).await.get_token(issued.id).await.unwrap();
    assert_eq!(loaded, root(nodes[0].server.address).await.get_token(issued.id).await.unwrap());
    assert_eq!(
        (loaded.status, loaded.scopes.as_slice()),
        (TokenStatus::Active, &["tokens:read".to_owned()][..])
    );
    assert_eq!(token_login(&fresh, &back.token).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodes_racing_for_one_name_let_exactly_one_win() {
    let Some((_etcd, _key, nodes)) = cluster(3) else { return };
    for round in 0..3 {
        let name = format!("shared-{round}");
        let mut racers = Vec::new();
        for node in &nodes {
            for _ in 0..6 {
                let (address, name) = (node.server.address, name.clone());
                racers.push(tokio::spawn(async move {
                    let mut client = root(address).await;
                    status(client.create_personal_access_token(&name, Expiry::Never).await)
                }));
            }
        }
        let mut statuses = statuses_of(racers).await;
        statuses.sort_unstable();
        assert_eq!(statuses.iter().filter(|&&status| status == 0).count(), 1, "round {round}: {statuses:?}");
        assert!(statuses[1..].iter().all(|&status| status == 51), "round {round}: {statuses:?}");
    }
    every_node_lists(&nodes, "every node lists the three winners", |names| names.len() == 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodes_racing_for_the_last_slots_under_the_limit_never_exceed_it() {
    let Some(etcd) = EtcdCluster::start(3) else { return };
    let key = KeyFile::new();
    let limited = spec(&etcd, &key).env("LATCHKEY_PERSONAL_ACCESS_TOKEN_MAX_TOKENS_PER_USER", "5");
    let nodes: Vec<Node> = (0..3).map(|_| node(&limited)).collect();
    let mut racers = Vec::new();
    for (index, node) in nodes.iter().enumerate() {
        for client in 0..6 {
            let address = node.server.address;
            racers.push(tokio::spawn(async move {
                let mut client_connection = root(address).await;
                let name = format!("token-{index}-{client}");
                status(client_connection.create_personal_access_token(&name, Expiry::Never).await)
            }));
        }
    }
    let statuses = statuses_of(racers).await;
    assert_eq!(statuses.iter().filter(|&&status| status == 0).count(), 5, "{statuses:?}");
    assert!(statuses.iter().all(|&status| status == 0 || status == 52), "{statuses:?}");
    every_node_lists(&nodes, "every node lists exactly the limit", |names| names.len() == 5).await;
}

/// A counter of `node`'s `/metrics` (a sample without labels).
fn counter(node: &Node, name: &str) -> u64 {
    let address = node.server.http_address.expect("the node serves HTTP");
    let text = latchkey_tests::http::request(address, "GET", "/metrics", &[], b"").text();
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no sample {name} in /metrics"))
}

/// Group commit: one node's concurrent changes share etcd transactions,
/// and sharing changes nothing a single change would see: one winner per
/// name, never more tokens than the limit, unique ids.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_nodes_concurrent_changes_share_transactions_and_keep_every_rule() {
    let Some(etcd) = EtcdCluster::start(3) else { return };
    let key = KeyFile::new();
    let limited = spec(&etcd, &key).env("LATCHKEY_PERSONAL_ACCESS_TOKEN_MAX_TOKENS_PER_USER", "15");
    let node = node(&limited);
    let address = node.server.address;
    let mut clients = Vec::new();
    for _ in 0..40 {
        clients.push(root(address).await);
    }
    // 40 racers for 10 names, all at once: 10 winners, one per name.
    let racers: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(index, mut client)| {
            tokio::spawn(async move {
                let made =
                    client.create_token(&latchkey_sdk::NewToken::named(format!("name-{}", index % 10))).await;
                (made.map(|token| token.id).map_err(|error| status(Err::<(), _>(error))), client)
            })
        })
        .collect();
    let mut ids = BTreeSet::new();
    let mut refused = Vec::new();
    let mut clients = Vec::new();
    for racer in racers {
        let (made, client) = racer.await.unwrap();
        match made {
            Ok(id) => assert!(ids.insert(id), "id {id} given twice"),
            Err(code) => refused.push(code),
        }
        clients.push(client);
    }
    assert_eq!(ids.len(), 10, "one winner per name; refused: {refused:?}");
    assert!(refused.iter().all(|&code| code == 51), "{refused:?}");
    // 40 racers for the last 5 slots under the limit of 15, distinct names.
    let racers: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(index, mut client)| {
            tokio::spawn(async move {
                status(client.create_personal_access_token(&format!("slot-{index}"), Expiry::Never).await)
            })
        })
        .collect();
    let statuses = statuses_of(racers).await;
    assert_eq!(statuses.iter().filter(|&&status| status == 0).count(), 5, "{statuses:?}");
    assert!(statuses.iter().all(|&status| status == 0 || status == 52), "{statuses:?}");
    assert_eq!(token_names(&node).await.len(), 15);
    // Grouped: fewer transactions than changes.
    let changes = counter(&node, "latchkey_store_changes_committed_total");
    let batches = counter(&node, "latchkey_store_batches_committed_total");
    assert_eq!(changes, 15, "every create that was answered done is counted once");
    assert!(batches < changes, "{changes} changes in {batches} transactions: none shared one");
}

/// Group commit keeps a connection's pipelined changes in the order sent:
/// the burst of the single-node test answers the same on a cluster node,
/// and 16 connections each pipelining a create and a delete of their own
/// token, over and over, never see the delete come first.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pipelined_changes_take_effect_in_the_order_sent() {
    let Some((_etcd, _key, nodes)) = cluster(1) else { return };
    let address = nodes[0].server.address;
    pipelined_burst_answers_in_order(address).await;
    let mut churners = Vec::new();
    for connection in 0..16 {
        churners.push(tokio::spawn(async move {
            let mut raw = Raw::connect(address).await;
            assert_eq!(raw.status(LOGIN_USER, &login_body(b"iggy", b"iggy")).await, 0);
            let name = format!("churn-{connection}");
            let mut pair = frame(CREATE_PAT, &create_body(name.as_bytes(), 0));
            pair.extend(frame(DELETE_PAT, &short(name.as_bytes())));
            let mut statuses = Vec::new();
            for _ in 0..20 {
                raw.write(&pair).await;
                statuses.push(raw.read_reply().await.0);
                statuses.push(raw.read_reply().await.0);
            }
            statuses
        }));
    }
    for churner in churners {
        let statuses = churner.await.unwrap();
        assert!(statuses.iter().all(|&status| status == 0), "{statuses:?}");
    }
    assert_eq!(token_names(&nodes[0]).await, ["beta", "gamma"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ids_are_unique_across_nodes_and_a_restarted_node_reloads_every_token() {
    let Some((etcd, key, mut nodes)) = cluster(3) else { return };
    let mut makers = Vec::new();
    for (index, node) in nodes.iter().enumerate() {
        let address = node.server.address;
        makers.push(tokio::spawn(async move {
            let mut client = root(address).await;
            let mut ids = Vec::new();
            for round in 0..10 {
                let made =
                    client.create_token(&latchkey_sdk::NewToken::named(format!("n{index}-t{round}"))).await;
                ids.push(made.expect("create").id);
            }
            ids
        }));
    }
    let mut ids = BTreeSet::new();
    for maker in makers {
        for id in maker.await.unwrap() {
            assert!(ids.insert(id), "id {id} given twice");
        }
    }
    assert_eq!(ids.len(), 30);
    // Node 2 dies hard, then comes back on the same cluster.
    let dead = nodes.remove(2);
    dead.server.kill();
    let revived = node(&spec(&etcd, &key));
    let listed: BTreeSet<u64> = root(revived.server.address)
        .await
        .list_all_tokens(latchkey_protocol::ext::StatusFilter::All)
        .await
        .unwrap()
        .into_iter()
        .map(|token| token.id)
        .collect();
    assert_eq!(listed, ids);
    let next = root(revived.server.address)
        .await
        .create_token(&latchkey_sdk::NewToken::named("after-restart"))
        .await
        .unwrap();
    assert!(next.id > *ids.last().unwrap(), "id {} reused or out of order", next.id);
}

/// Tokens each user makes in the id-block tests.
const TOKENS_PER_MAKER: usize = 20;

/// Id blocks (CLUSTER.md, "Id blocks"): three nodes creating at once, each
/// for users of its own, share no key in etcd. No transaction of any node
/// loses a race (before id blocks, every group compared the one id
/// counter), each node leases one block and gives every id from it, no id
/// is given twice, and every node lists every user's tokens.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn creates_for_different_users_on_three_nodes_never_share_an_id_nor_lose_a_race() {
    let Some(etcd) = EtcdCluster::start(3) else { return };
    let key = KeyFile::new();
    let names: Vec<String> = (1..=6).map(|user| format!("maker{user}")).collect();
    let users: Vec<TestUser<'_>> = names
        .iter()
        .zip(1..)
        .map(|(name, id)| TestUser { id, username: name, password: "maker-password", active: true })
        .collect();
    let with_users = spec(&etcd, &key).config(&users_config(&users));
    let nodes: Vec<Node> = (0..3).map(|_| node(&with_users)).collect();
    // Two users per node, each on its own connection; every connection logs
    // in first (a password login is slow), then all create at once.
    let start = std::sync::Arc::new(tokio::sync::Barrier::new(names.len()));
    let mut makers = Vec::new();
    for (index, name) in names.iter().enumerate() {
        let (address, name, start) = (nodes[index / 2].server.address, name.clone(), start.clone());
        makers.push(tokio::spawn(async move {
            let mut client = connect(address).await;
            assert_eq!(
                client.login_user(&name, "maker-password").await.unwrap(),
                u32::try_from(index + 1).unwrap()
            );
            start.wait().await;
            let mut ids = Vec::new();
            for round in 0..TOKENS_PER_MAKER {
                let made =
                    client.create_token(&latchkey_sdk::NewToken::named(format!("token-{round}"))).await;
                ids.push(made.expect("create").id);
            }
            ids
        }));
    }
    let mut made = Vec::new();
    for maker in makers {
        made.push(maker.await.unwrap());
    }
    let mut every_id = BTreeSet::new();
    for id in made.iter().flatten() {
        assert!(every_id.insert(*id), "id {id} given twice");
    }
    let block = latchkey_server::store::etcd::ID_BLOCK_IDS;
    let mut spans = Vec::new();
    for (index, node) in nodes.iter().enumerate() {
        let ids: BTreeSet<u64> = made[2 * index..2 * index + 2].iter().flatten().copied().collect();
        let (low, high) = (*ids.first().unwrap(), *ids.last().unwrap());
        assert!(high - low < block, "node {index} gave ids {low}..={high}: not from one block");
        spans.push((low, high));
        assert_eq!(counter(node, "latchkey_store_conflicts_total"), 0, "node {index} lost a race");
        assert_eq!(counter(node, "latchkey_store_id_blocks_leased_total"), 1, "node {index}");
        assert_eq!(counter(node, "latchkey_store_changes_committed_total"), 2 * TOKENS_PER_MAKER as u64);
    }
    spans.sort_unstable();
    assert!(spans.windows(2).all(|pair| pair[0].1 < pair[1].0), "blocks overlap: {spans:?}");
    // Every node applies every other node's creates, ids sparse as they are.
    for node in &nodes {
        for (name, ids) in names.iter().zip(&made) {
            let expected: BTreeSet<u64> = ids.iter().copied().collect();
            let mut client = connect(node.server.address).await;
            client.login_user(name, "maker-password").await.unwrap();
            let deadline = Instant::now() + PROPAGATION_BOUND;
            loop {
                let listed = client.list_all_tokens(latchkey_protocol::ext::StatusFilter::All).await.unwrap();
                let listed: BTreeSet<u64> = listed.into_iter().map(|token| token.id).collect();
                if listed == expected {
                    break;
                }
                assert!(Instant::now() < deadline, "{name}'s tokens on a node: {listed:?}, not {expected:?}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// A node SIGKILLed in the middle of its id block abandons the rest: after
/// its restart it leases a new block, past every block leased before, while
/// the other node goes on in its own; no id is ever given twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_killed_mid_block_skips_the_rest_of_it_and_no_id_is_given_twice() {
    let Some((etcd, key, mut nodes)) = cluster(2) else { return };
    async fn make(node: &Node, prefix: &str) -> Vec<u64> {
        let mut client = root(node.server.address).await;
        let mut ids = Vec::new();
        for round in 0..5 {
            let made = client.create_token(&latchkey_sdk::NewToken::named(format!("{prefix}-{round}"))).await;
            ids.push(made.expect("create").id);
        }
        ids
    }
    let block = latchkey_server::store::etcd::ID_BLOCK_IDS;
    let killed = make(&nodes[0], "killed").await;
    let other = make(&nodes[1], "other").await;
    let (killed_block, other_block) = (killed[0]..killed[0] + block, other[0]..other[0] + block);
    assert!(killed.iter().all(|id| killed_block.contains(id)), "{killed:?}");
    nodes.remove(0).server.kill();
    let revived = node(&spec(&etcd, &key));
    let after = make(&revived, "after").await;
    let other_after = make(&nodes[0], "other-after").await;
    assert!(
        after.iter().all(|id| *id >= killed_block.end && *id >= other_block.end),
        "the restarted node gave {after:?}: within a block leased before its restart \
         ({killed_block:?}, {other_block:?})"
    );
    assert!(
        other_after.iter().all(|id| other_block.contains(id)),
        "{other_after:?}: not from {other_block:?}"
    );
    let mut every_id = BTreeSet::new();
    for id in killed.iter().chain(&other).chain(&after).chain(&other_after) {
        assert!(every_id.insert(*id), "id {id} given twice");
    }
    for node in [&revived, &nodes[0]] {
        eventually("every node lists every token", || async {
            let listed = root(node.server.address)
                .await
                .list_all_tokens(latchkey_protocol::ext::StatusFilter::All)
                .await
                .unwrap();
            listed.into_iter().map(|token| token.id).collect::<BTreeSet<u64>>() == every_id
        })
        .await;
    }
}

#[tokio::test]
async fn a_revoke_made_while_a_node_was_down_is_refused_on_it_after_its_restart() {
    let Some((etcd, key, mut nodes)) = cluster(2) else { return };
    let token = root(nodes[0].server.address)
        .await
        .create_personal_access_token("survivor", Expiry::Never)
        .await
        .unwrap();
    eventually("node 1 sees the token", || async { token_login(&nodes[1], &token).await == 0 }).await;
    let down = nodes.remove(1);
    down.server.kill();
    root(nodes[0].server.address).await.revoke_token("survivor").await.unwrap();
    let back = node(&spec(&etcd, &key));
    assert_eq!(token_login(&back, &token).await, 20003);
}

#[tokio::test]
async fn a_node_with_another_key_file_refuses_to_start_and_says_why() {
    let Some((etcd, _key, nodes)) = cluster(1) else { return };
    root(nodes[0].server.address).await.create_personal_access_token("keyed", Expiry::Never).await.unwrap();
    let other = KeyFile::new();
    let exited = match try_node(&spec(&etcd, &other)) {
        Ok(_) => panic!("a node with another key started"),
        Err(exited) => exited,
    };
    assert!(!exited.status.success());
    assert!(exited.stderr.contains("key_file differs"), "{}", exited.stderr);
    // A key file others can read is refused before etcd is asked anything.
    let loose = KeyFile::new();
    std::fs::set_permissions(loose.path(), std::fs::Permissions::from_mode(0o644)).unwrap();
    let exited = try_node(&spec(&etcd, &loose)).err().expect("a readable key file was accepted");
    assert!(exited.stderr.contains("chmod 600"), "{}", exited.stderr);
}

#[tokio::test]
async fn root_is_chosen_once_by_the_first_node() {
    let Some(etcd) = EtcdCluster::start(3) else { return };
    let key = KeyFile::new();
    let first = spec(&etcd, &key)
        .env("LATCHKEY_ROOT_USERNAME", "admin")
        .env("LATCHKEY_ROOT_PASSWORD", "first-secret");
    let first = node(&ServerSpec { default_root: false, ..first });
    let second = spec(&etcd, &key)
        .env("LATCHKEY_ROOT_USERNAME", "other")
        .env("LATCHKEY_ROOT_PASSWORD", "second-secret");
    let second = node(&ServerSpec { default_root: false, ..second });
    assert!(
        second.server.logs().contains("root credentials already exist in etcd"),
        "{}",
        second.server.logs()
    );
    for node in [&first, &second] {
        let mut client = connect(node.server.address).await;
        assert_eq!(client.login_user("admin", "first-secret").await.unwrap(), 0);
        assert_eq!(status(connect(node.server.address).await.login_user("other", "second-secret").await), 42);
    }
}

#[tokio::test]
async fn writes_go_on_with_one_member_down_are_refused_without_a_quorum_and_resume_after() {
    let Some((mut etcd, _key, nodes)) = cluster(2) else { return };
    let mut client = root(nodes[0].server.address).await;
    client.create_personal_access_token("before", Expiry::Never).await.unwrap();
    // One member down (it may be the leader): writes pause for an election
    // at most, then go on.
    etcd.kill(0);
    let deadline = Instant::now() + PROPAGATION_BOUND;
    loop {
        match status(
            root(nodes[0].server.address).await.create_personal_access_token("one-down", Expiry::Never).await,
        ) {
            0 => break,
            20002 if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(100)).await,
            other => panic!("create with one member down: {other}"),
        }
    }
    // Two down: no quorum; refused with 20002 after the request timeout.
    etcd.kill(1);
    assert_eq!(
        status(
            root(nodes[0].server.address)
                .await
                .create_personal_access_token("no-quorum", Expiry::Never)
                .await
        ),
        20002
    );
    // Logins stay local reads.
    assert_eq!(status(connect(nodes[1].server.address).await.login_user("iggy", "iggy").await), 0);
    // Back: everything resumes without restarting a node.
    etcd.restart(0);
    etcd.restart(1);
    etcd.wait_healthy(0);
    etcd.wait_healthy(1);
    let deadline = Instant::now() + PROPAGATION_BOUND * 3;
    loop {
        match status(
            root(nodes[1].server.address).await.create_personal_access_token("after", Expiry::Never).await,
        ) {
            0 => break,
            20002 if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(200)).await,
            other => panic!("create after the members came back: {other}"),
        }
    }
    every_node_lists(&nodes, "every node lists what was acknowledged", |names| {
        ["before", "one-down", "after"].iter().all(|name| names.iter().any(|listed| listed == name))
    })
    .await;
}

#[tokio::test]
async fn a_node_cut_off_from_etcd_past_max_staleness_refuses_token_checks_until_it_catches_up() {
    let Some(mut etcd) = EtcdCluster::start(3) else { return };
    let key = KeyFile::new();
    let node = node(&spec(&etcd, &key).env("LATCHKEY_STORAGE_ETCD_MAX_STALENESS", "2s"));
    let token =
        root(node.server.address).await.create_personal_access_token("watched", Expiry::Never).await.unwrap();
    assert_eq!(token_login(&node, &token).await, 0);
    // Quiet but connected: progress notifications keep the node current.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(token_login(&node, &token).await, 0);
    // Cut off: it may be missing a revocation, so token checks fail closed.
    for member in 0..3 {
        etcd.kill(member);
    }
    eventually("token logins are refused once stale", || async { token_login(&node, &token).await == 20002 })
        .await;
    // Said once in the log (read as the server's output arrives).
    eventually("the refusal is logged", || async { node.server.logs().contains("refusing token logins") })
        .await;
    // And to an orchestrator: not ready, saying why; still alive.
    let http = node.server.http_address.unwrap();
    let probe = |path: &'static str| {
        tokio::task::spawn_blocking(move || latchkey_tests::http::request(http, "GET", path, &[], b""))
    };
    let ready = probe("/readyz").await.unwrap();
    assert_eq!(ready.status, 503, "{}", ready.text());
    assert!(ready.json()["reasons"][0].as_str().unwrap().contains("max_staleness"), "{}", ready.text());
    assert_eq!(probe("/healthz").await.unwrap().status, 200);
    // Password logins and pings go on.
    assert_eq!(status(connect(node.server.address).await.login_user("iggy", "iggy").await), 0);
    connect(node.server.address).await.ping().await.unwrap();
    // Back in touch: served again, without a restart.
    for member in 0..3 {
        etcd.restart(member);
    }
    eventually("token logins are served again", || async { token_login(&node, &token).await == 0 }).await;
    assert_eq!(probe("/readyz").await.unwrap().status, 200);
}

#[tokio::test]
async fn a_node_whose_history_was_compacted_away_reloads_the_registry_and_misses_nothing() {
    let Some(mut etcd) = EtcdCluster::start(3) else { return };
    let key = KeyFile::new();
    let writer = node(&spec(&etcd, &key).env("LATCHKEY_STORAGE_ETCD_ENDPOINTS", &etcd.endpoint(0)));
    // This node talks to member 2 only, so it can be cut off alone.
    let behind = node(&spec(&etcd, &key).env("LATCHKEY_STORAGE_ETCD_ENDPOINTS", &etcd.endpoint(2)));
    let mut owner = root(writer.server.address).await;
    let kept = owner.create_personal_access_token("kept", Expiry::Never).await.unwrap();
    let revoked = owner.create_personal_access_token("revoked", Expiry::Never).await.unwrap();
    let deleted = owner.create_personal_access_token("deleted", Expiry::Never).await.unwrap();
    eventually("the node sees the first tokens", || async { token_login(&behind, &deleted).await == 0 })
        .await;
    etcd.kill(2);
    // Changes it cannot see (each retried while the other two members
    // elect a leader, if member 2 was it), then their history compacted.
    let writer_address = writer.server.address;
    until_elected(|| async { root(writer_address).await.revoke_token("revoked").await }).await;
    until_elected(|| async { root(writer_address).await.delete_personal_access_token("deleted").await })
        .await;
    let added = until_elected(|| async {
        root(writer_address).await.create_personal_access_token("added", Expiry::Never).await
    })
    .await;
    etcd.compact(0);
    etcd.restart(2);
    etcd.wait_healthy(2);
    eventually("the node reloads and sees every change", || async {
        token_login(&behind, &added).await == 0
            && token_login(&behind, &revoked).await == 20003
            && token_login(&behind, &deleted).await == 20
            && token_login(&behind, &kept).await == 0
    })
    .await;
    eventually("the reload is logged", || async {
        behind.server.logs().contains("registry reloaded from etcd")
    })
    .await;
    // And it goes on following changes after the reload.
    owner.revoke_token("kept").await.unwrap();
    eventually("changes after the reload arrive", || async { token_login(&behind, &kept).await == 20003 })
        .await;
}

#[tokio::test]
async fn a_single_node_moves_into_a_cluster_and_back_without_reissuing_a_token() {
    let Some(etcd) = EtcdCluster::start(3) else { return };
    let single = DataHome::new();
    let server = TestServer::start(&single, &ServerSpec::default_root());
    let token =
        root(server.address).await.create_personal_access_token("moving", Expiry::Never).await.unwrap();
    root(server.address).await.create_personal_access_token("revoked", Expiry::Never).await.unwrap();
    root(server.address).await.revoke_token("revoked").await.unwrap();
    assert_eq!(server.stop().code(), Some(0));
    let tool = |home: &DataHome, spec: &ServerSpec, args: &[&str]| {
        let mut command = std::process::Command::new(latchkey_tests::server_binary());
        command.args(args).env("LATCHKEY_SYSTEM_PATH", home.data_dir()).env("LATCHKEY_LOG", "warn");
        for (key, value) in &spec.env {
            command.env(key, value);
        }
        let output = command.output().expect("run latchkey-server");
        let said =
            format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        assert!(output.status.success(), "{args:?}: {said}");
        said
    };
    let exported = single.dir.path().join("single.export");
    let exported = exported.to_str().unwrap();
    tool(&single, &ServerSpec::default(), &["export", "--out", exported]);
    // The single node's server key becomes the cluster's key file.
    let key = KeyFile::new();
    std::fs::copy(single.data_dir().join("server.key"), key.path()).unwrap();
    let clustered = spec(&etcd, &key);
    // A prefix that has handed out ids (a token made and deleted: a block
    // leased) refuses the import: the export's ids may be among them.
    let used = spec(&etcd, &key).env("LATCHKEY_STORAGE_ETCD_PREFIX", "/used/");
    let node_on_used = node(&used);
    let mut client = root(node_on_used.server.address).await;
    client.create_personal_access_token("passing", Expiry::Never).await.unwrap();
    client.delete_personal_access_token("passing").await.unwrap();
    assert_eq!(node_on_used.server.stop().code(), Some(0));
    let refused = std::process::Command::new(latchkey_tests::server_binary())
        .args(["import", "--in", exported])
        .envs(used.env.iter().map(|(key, value)| (key.as_str(), value.as_str())))
        .env("LATCHKEY_SYSTEM_PATH", DataHome::new().data_dir())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && said.contains("import into a new prefix"), "{said}");
    let importer = DataHome::new();
    assert!(tool(&importer, &clustered, &["import", "--in", exported]).contains("imported 2 tokens"));
    let nodes = [node(&clustered), node(&clustered)];
    for node in &nodes {
        assert_eq!(token_login(node, &token).await, 0);
        let listed = root(node.server.address).await.get_personal_access_tokens().await.unwrap();
        assert_eq!(listed.len(), 2);
    }
    let revoked = root(nodes[0].server.address).await.get_token("revoked").await.unwrap();
    assert_ne!(revoked.revoked_at_us, 0);
    // A second import into the same prefix is refused: imports never merge.
    let again = std::process::Command::new(latchkey_tests::server_binary())
        .args(["import", "--in", exported])
        .envs(clustered.env.iter().map(|(key, value)| (key.as_str(), value.as_str())))
        .env("LATCHKEY_SYSTEM_PATH", importer.data_dir())
        .output()
        .unwrap();
    assert!(!again.status.success() && String::from_utf8_lossy(&again.stderr).contains("empty prefix"));
    // And back out to a single node.
    let back_out = importer.dir.path().join("cluster.export");
    let back_out = back_out.to_str().unwrap();
    tool(&importer, &clustered, &["export", "--out", back_out]);
    let back = DataHome::new();
    std::fs::create_dir_all(back.data_dir()).unwrap();
    std::fs::copy(key.path(), back.data_dir().join("server.key")).unwrap();
    tool(&back, &ServerSpec::default(), &["import", "--in", back_out]);
    let server = TestServer::start(&back, &ServerSpec::default_root());
    assert_eq!(token_login_at(server.address, &token).await, 0);
}

async fn token_login_at(address: std::net::SocketAddr, token: &str) -> u32 {
    status(connect(address).await.login_with_personal_access_token(token).await)
}

/// Read-your-writes on the answering node, many times over under some
/// load: every acknowledged create is at once in the same node's list, and
/// every acknowledged revoke at once refuses the token there, every
/// acknowledged delete at once is gone there.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_acknowledged_change_is_visible_at_once_on_the_node_that_answered() {
    let Some((_etcd, _key, nodes)) = cluster(2) else { return };
    let mut workers = Vec::new();
    for (index, node) in nodes.iter().enumerate() {
        for worker in 0..3 {
            let address = node.server.address;
            workers.push(tokio::spawn(async move {
                let mut client = root(address).await;
                for round in 0..40 {
                    let name = format!("ryw-{index}-{worker}-{round}");
                    let token = client.create_personal_access_token(&name, Expiry::Never).await.unwrap();
                    let listed = client.get_token(name.as_str()).await;
                    assert!(listed.is_ok(), "{name} acknowledged but not listed on its node: {listed:?}");
                    client.revoke_token(name.as_str()).await.unwrap();
                    let login = connect(address).await.login_with_personal_access_token(&token).await;
                    assert_eq!(status(login), 20003, "{name} revoked but still accepted on its node");
                    client.delete_token(name.as_str()).await.unwrap();
                    assert_eq!(
                        status(client.get_token(name.as_str()).await),
                        20,
                        "{name} deleted but still there"
                    );
                }
            }));
        }
    }
    for worker in workers {
        worker.await.unwrap();
    }
}

/// A CA, a member certificate for 127.0.0.1 and localhost, and a client
/// certificate, written as PEM files into `dir`.
fn etcd_pki(dir: &std::path::Path) -> (latchkey_tests::etcd::EtcdTls, PathBuf, PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let write = |name: &str, pem: String| {
        let path = dir.join(name);
        std::fs::write(&path, pem).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        path
    };
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let ca = Issuer::new(ca_params, ca_key);
    let signed = |names: Vec<String>| {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(names).unwrap().signed_by(&key, &ca).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let (server_cert, server_key) = signed(vec!["127.0.0.1".into(), "localhost".into()]);
    let (client_cert, client_key) = signed(vec!["latchkey-node".into()]);
    let tls = latchkey_tests::etcd::EtcdTls {
        ca: write("ca.pem", ca_cert.pem()),
        server_cert: write("member.pem", server_cert),
        server_key: write("member.key", server_key),
    };
    (tls, write("client.pem", client_cert), write("client.key", client_key))
}

#[tokio::test]
async fn nodes_reach_etcd_over_tls_with_a_client_certificate_and_not_without_one() {
    let pki = tempfile::tempdir().unwrap();
    let (tls, client_cert, client_key) = etcd_pki(pki.path());
    let Some(etcd) = EtcdCluster::start_tls(3, tls.clone()) else { return };
    let key = KeyFile::new();
    let secured = spec(&etcd, &key)
        .env("LATCHKEY_STORAGE_ETCD_TLS_CA_FILE", tls.ca.to_str().unwrap())
        .env("LATCHKEY_STORAGE_ETCD_TLS_CERT_FILE", client_cert.to_str().unwrap())
        .env("LATCHKEY_STORAGE_ETCD_TLS_KEY_FILE", client_key.to_str().unwrap());
    let nodes = [node(&secured), node(&secured)];
    let token = root(nodes[0].server.address)
        .await
        .create_personal_access_token("over-tls", Expiry::Never)
        .await
        .unwrap();
    eventually("the token reaches the other node over TLS", || async {
        token_login(&nodes[1], &token).await == 0
    })
    .await;
    // Without a client certificate the members refuse the node: it does not start.
    let no_identity = spec(&etcd, &key).env("LATCHKEY_STORAGE_ETCD_TLS_CA_FILE", tls.ca.to_str().unwrap());
    assert!(try_node(&no_identity).is_err(), "a node without a client certificate started");
    // Without TLS at all it cannot speak to them either.
    assert!(try_node(&spec(&etcd, &key)).is_err(), "a node without TLS started");
}

/// Every node runs the expired-token cleaner; racing for the same expired
/// tokens is harmless: each goes once, the ones that never expire stay, and
/// every node ends with the same list.
#[tokio::test]
async fn cleaners_on_every_node_delete_each_expired_token_once_and_nothing_else() {
    let Some(etcd) = EtcdCluster::start(3) else { return };
    let key = KeyFile::new();
    let cleaning = spec(&etcd, &key).env("LATCHKEY_PERSONAL_ACCESS_TOKEN_CLEANER_INTERVAL", "100ms");
    let nodes = [node(&cleaning), node(&cleaning)];
    let mut owner = root(nodes[0].server.address).await;
    // More than one transaction's worth (32), so a purge spans several.
    for index in 0..40 {
        let name = format!("short-{index}");
        owner.create_personal_access_token(&name, Expiry::After(Duration::from_secs(1))).await.unwrap();
    }
    owner.create_personal_access_token("stays", Expiry::Never).await.unwrap();
    every_node_lists(&nodes, "every expired token is deleted on every node", |names| names == ["stays"])
        .await;
}
