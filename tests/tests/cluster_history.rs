//! A concurrent run against a cluster under faults, recorded and checked
//! against a sequential model of the registry (`latchkey_tests::history`,
//! whose module doc says exactly what is checked and what is not).
//!
//! Three Latchkey nodes on a 3-member etcd cluster; six clients (two per
//! node) for [`RUN`] create tokens over a few names (so names collide: 51),
//! revoke and delete them by id and by name, and log in with tokens any
//! client was given, on their own node and on others. Meanwhile a fault
//! thread kills etcd members one at a time (the leader, then a follower,
//! twice) and restarts each, and once SIGKILLs a Latchkey node and starts
//! it again on the same data directory. Once every fault is healed and the
//! nodes agree, each node's list is read and every token logged in with on
//! every node; then the whole history is checked.
//!
//! Needs Debian's `etcd-server` and a latchkey-server built with
//! `--features etcd`; run with
//! `cargo build -p latchkey-server --features etcd && cargo test -p latchkey-tests --features etcd --test cluster_history`.
//! `LATCHKEY_TEST_SEED` seeds the clients' random choices; the clients draw
//! from it as their timing falls, so a run is never replayed exactly.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use latchkey_sdk::{Client, ClientConfig, Credentials, NewToken, StatusFilter, TokenStatus};
use latchkey_tests::etcd::EtcdCluster;
use latchkey_tests::history::{
    self, CODE_UNAVAILABLE, Entry, Final, Listed, Op, Outcome, Recorder, Rule, Target,
};
use latchkey_tests::{DataHome, ServerSpec, TestServer};

/// How long the clients work.
const RUN: Duration = Duration::from_secs(12);
/// The names clients create: few, so that creates collide.
const NAMES: [&str; 6] = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot"];
const NODES: usize = 3;
const CLIENTS_PER_NODE: usize = 2;
/// The client number of the logins made after the run.
const FINAL_CLIENT: usize = NODES * CLIENTS_PER_NODE;
/// The nodes' `max_staleness`: past it without word from etcd a node
/// refuses token logins (CLUSTER.md, "Staleness fails closed").
const MAX_STALENESS: Duration = Duration::from_secs(2);
/// How old an answer a node gives from its own state may be: its
/// `max_staleness`, plus a generous allowance for a progress notification
/// in flight and a shared, noisy machine (a login allowed at time t means
/// the node heard from etcd after t − max_staleness). Not a performance
/// figure: BENCHMARKS.md has the real propagation time (p99 3.3 ms).
const STALENESS_BOUND: Duration = Duration::from_secs(4);
/// The etcd request timeout of every node: a write not committed by then
/// is answered 20002 (outcome unknown).
const ETCD_REQUEST_TIMEOUT: &str = "2s";
/// How long a client waits for an answer before it gives up (the outcome
/// is then unknown). A hang guard, not a timing assertion.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the nodes may take to agree once every fault is healed.
const SETTLE_LIMIT: Duration = Duration::from_secs(30);

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

fn spec(etcd: &EtcdCluster, key: &KeyFile) -> ServerSpec {
    ServerSpec::default_root()
        .env("LATCHKEY_STORAGE_BACKEND", "etcd")
        .env("LATCHKEY_STORAGE_ETCD_ENDPOINTS", &etcd.endpoints())
        .env("LATCHKEY_STORAGE_ETCD_KEY_FILE", key.path().to_str().unwrap())
        .env("LATCHKEY_STORAGE_ETCD_REQUEST_TIMEOUT", ETCD_REQUEST_TIMEOUT)
        .env("LATCHKEY_STORAGE_ETCD_MAX_STALENESS", &format!("{}s", MAX_STALENESS.as_secs()))
}

/// Starts a node on `home`, or explains how to build one that can run here.
fn start_node(home: &DataHome, spec: &ServerSpec) -> TestServer {
    TestServer::try_start(home, spec).unwrap_or_else(|exited| {
        assert!(
            !exited.stderr.contains("--features etcd"),
            "this latchkey-server has no etcd backend: run `cargo build -p latchkey-server --features etcd` \
             first\n{}",
            exited.stderr
        );
        panic!("node exited during start with {}\n{}\n{}", exited.status, exited.stdout, exited.stderr)
    })
}

/// One Latchkey node: its data directory outlives a crash.
struct Node {
    home: DataHome,
    server: Option<TestServer>,
}

/// A token a create returned, for any client to use.
#[derive(Clone)]
struct Issued {
    id: u64,
    secret: String,
}

/// What the clients share: the history, where each node listens now, the
/// tokens issued so far, and the choices' randomness.
struct Run {
    history: Recorder,
    addresses: Vec<Mutex<SocketAddr>>,
    issued: Mutex<Vec<Issued>>,
    rng: Mutex<SeededRng>,
}

impl Run {
    fn address(&self, node: usize) -> SocketAddr {
        *self.addresses[node].lock().unwrap()
    }

    fn below(&self, bound: u64) -> u64 {
        self.rng.lock().unwrap().below(bound)
    }

    /// A token issued lately (where the action is), now and then any.
    fn some_issued(&self) -> Option<Issued> {
        let issued = self.issued.lock().unwrap();
        if issued.is_empty() {
            return None;
        }
        let recent = issued.len().min(8) as u64;
        let index = if self.below(4) == 0 {
            self.below(issued.len() as u64) as usize
        } else {
            issued.len() - 1 - self.below(recent) as usize
        };
        Some(issued[index].clone())
    }

    fn some_name(&self) -> String {
        NAMES[self.below(NAMES.len() as u64) as usize].to_owned()
    }
}

fn config(address: SocketAddr) -> ClientConfig {
    let mut config = ClientConfig::new(address.to_string());
    config.request_timeout = CLIENT_TIMEOUT;
    config
}

/// A session as root on `node`, or `None` while it cannot be had (the node
/// is down): nothing was asked, so nothing is recorded.
async fn admin(run: &Run, node: usize) -> Option<Client> {
    let mut config = config(run.address(node));
    config.login = Some(Credentials::UsernamePassword { username: "iggy".into(), password: "iggy".into() });
    Client::connect_with(config).await.ok()
}

/// The history's outcome of an SDK call that failed.
fn failed(error: &latchkey_sdk::Error) -> Outcome {
    match error {
        latchkey_sdk::Error::Server { code, .. } => Outcome::Refused { code: *code },
        _ => Outcome::Lost,
    }
}

/// A token login on a fresh connection to `node`, recorded; its outcome.
async fn login(run: &Run, client: usize, node: usize, token: &Issued) -> Outcome {
    let invoked = Instant::now();
    let outcome = match Client::connect_with(config(run.address(node))).await {
        Ok(mut connection) => match connection.login_with_personal_access_token(&token.secret).await {
            Ok(_) => Outcome::Done,
            Err(error) => failed(&error),
        },
        Err(error) => failed(&error),
    };
    run.history.record(client, node, Op::Login { id: token.id }, invoked, Instant::now(), outcome.clone());
    outcome
}

/// One client: random operations on its node until `until`, a fresh
/// session whenever the last one broke.
async fn client_loop(run: Arc<Run>, client: usize, node: usize, until: Instant) {
    let mut session: Option<Client> = None;
    while Instant::now() < until {
        let Some(admin_session) = session.as_mut() else {
            session = admin(&run, node).await;
            if session.is_none() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            continue;
        };
        let roll = run.below(100);
        let target = |by_id: bool| -> Option<(Target, Option<Issued>)> {
            if by_id {
                let token = run.some_issued()?;
                Some((Target::Id(token.id), Some(token)))
            } else {
                Some((Target::Name(run.some_name()), None))
            }
        };
        let (op, token) = match roll {
            0..30 => (Op::Create { name: run.some_name() }, None),
            30..45 => match target(roll < 40) {
                Some((target, token)) => (Op::Revoke { target }, token),
                None => continue,
            },
            45..65 => match target(roll < 57) {
                Some((target, token)) => (Op::Delete { target }, token),
                None => continue,
            },
            _ => {
                let Some(token) = run.some_issued() else { continue };
                let on = if run.below(2) == 0 { node } else { run.below(NODES as u64) as usize };
                login(&run, client, on, &token).await;
                continue;
            }
        };
        let invoked = Instant::now();
        let selector = |target: &Target| match target {
            Target::Id(id) => latchkey_sdk::TokenSelector::Id(*id),
            Target::Name(name) => latchkey_sdk::TokenSelector::Name(name.clone()),
        };
        let mut made_now: Option<Issued> = None;
        let outcome = match &op {
            Op::Create { name } => match admin_session.create_token(&NewToken::named(name.as_str())).await {
                Ok(made) => {
                    let issued = Issued { id: made.id, secret: made.token.expose().to_owned() };
                    run.issued.lock().unwrap().push(issued.clone());
                    made_now = Some(issued);
                    Outcome::Created { id: made.id }
                }
                Err(error) => failed(&error),
            },
            Op::Revoke { target } => match admin_session.revoke_token(selector(target)).await {
                Ok(()) => Outcome::Done,
                Err(error) => failed(&error),
            },
            Op::Delete { target } => match admin_session.delete_token(selector(target)).await {
                Ok(()) => Outcome::Done,
                Err(error) => failed(&error),
            },
            Op::Login { .. } => unreachable!("logins go above"),
        };
        run.history.record(client, node, op.clone(), invoked, Instant::now(), outcome.clone());
        match outcome {
            Outcome::Lost => session = None,
            // Read-your-writes, asked at once: the new token on this node,
            // a revoked or deleted one here and on the next node.
            Outcome::Created { .. } if run.below(2) == 0 => {
                if let Some(token) = made_now {
                    login(&run, client, node, &token).await;
                }
            }
            Outcome::Done => {
                if let Some(token) = token {
                    login(&run, client, node, &token).await;
                    login(&run, client, (node + 1) % NODES, &token).await;
                }
            }
            _ => {}
        }
    }
}

/// A JSON POST to an etcd member's gateway; the whole response, or `None`.
fn etcd_post(endpoint: &str, path: &str, body: &str) -> Option<String> {
    let address: SocketAddr = endpoint.parse().ok()?;
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_millis(500)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    Some(response)
}

/// The quoted value after `"key":"` in `text`.
fn json_string<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let start = text.find(&format!("\"{key}\":\""))? + key.len() + 4;
    text[start..].split('"').next()
}

/// The index of etcd's leader among the members `up`, asked of each
/// (`/v3/maintenance/status`: its own member id and the leader's), once an
/// election is over; `None` if none is known within a few seconds.
fn etcd_leader(etcd: &EtcdCluster, up: &[bool]) -> Option<usize> {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let statuses: Vec<(usize, String, String)> = (0..up.len())
            .filter(|&member| up[member])
            .filter_map(|member| {
                let status = etcd_post(&etcd.endpoint(member), "/v3/maintenance/status", "{}")?;
                Some((
                    member,
                    json_string(&status, "member_id")?.to_owned(),
                    json_string(&status, "leader")?.to_owned(),
                ))
            })
            .collect();
        let leader = statuses.iter().find(|(_, id, leader)| id == leader).map(|(member, ..)| *member);
        if leader.is_some() {
            return leader;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

/// The faults, in order: each at its time after the run's start (or as
/// soon as the one before is done). Blocking: runs on its own thread.
fn inject_faults(
    run: &Run,
    etcd: &mut EtcdCluster,
    nodes: &mut [Node],
    spec: &ServerSpec,
    started: Instant,
) -> Vec<String> {
    let mut said = Vec::new();
    let mut up = vec![true; 3];
    let wait_until = |offset_ms: u64| {
        let at = started + Duration::from_millis(offset_ms);
        std::thread::sleep(at.saturating_duration_since(Instant::now()));
    };
    let note = |said: &mut Vec<String>, what: String| {
        said.push(format!("{:8.1} ms  {what}", run.history.at(Instant::now()).as_secs_f64() * 1000.0));
    };
    let etcd_rounds = [(1_000, true), (3_500, false), (7_000, true), (9_500, false)];
    for (round, (at_ms, leader)) in etcd_rounds.into_iter().enumerate() {
        if round == 2 {
            // Between the etcd rounds: one Latchkey node dies hard, and
            // comes back on the same data directory a second later.
            wait_until(5_500);
            let victim = NODES - 1;
            let pid = nodes[victim].server.as_ref().map(TestServer::pid);
            if let Some(server) = nodes[victim].server.take() {
                server.kill();
            }
            note(&mut said, format!("SIGKILL latchkey node {victim} (pid {pid:?})"));
            wait_until(6_500);
            let server = start_node(&nodes[victim].home, spec);
            *run.addresses[victim].lock().unwrap() = server.address;
            note(&mut said, format!("latchkey node {victim} back on {}", server.address));
            nodes[victim].server = Some(server);
        }
        wait_until(at_ms);
        let found = etcd_leader(etcd, &up);
        let member = match (leader, found) {
            (true, Some(member)) => member,
            (false, Some(leader)) => (leader + 1) % 3,
            (_, None) => round % 3,
        };
        etcd.kill(member);
        up[member] = false;
        let role = if found == Some(member) { "the leader" } else { "a follower" };
        note(&mut said, format!("SIGKILL etcd member {member} ({role}; leader was {found:?})"));
        wait_until(at_ms + 1_500);
        etcd.restart(member);
        etcd.wait_healthy(member);
        up[member] = true;
        note(&mut said, format!("etcd member {member} back and healthy"));
    }
    said
}

/// Every node's list of root's tokens.
async fn lists(run: &Run) -> Option<Vec<Vec<Listed>>> {
    let mut lists = Vec::new();
    for node in 0..NODES {
        let tokens = admin(run, node).await?.list_all_tokens(StatusFilter::All).await.ok()?;
        let mut list: Vec<Listed> = tokens
            .into_iter()
            .map(|token| {
                assert_ne!(token.status, TokenStatus::Expired, "no token here expires: {token:?}");
                Listed { id: token.id, name: token.name, revoked: token.status == TokenStatus::Revoked }
            })
            .collect();
        list.sort();
        lists.push(list);
    }
    Some(lists)
}

/// The lists once every node says the same twice in a row, half a second
/// apart; or, past [`SETTLE_LIMIT`], the last lists read (the checker then
/// reports how they differ).
async fn settled_lists(run: &Run) -> Vec<Vec<Listed>> {
    let deadline = Instant::now() + SETTLE_LIMIT;
    let mut previous: Option<Vec<Vec<Listed>>> = None;
    loop {
        let now = lists(run).await;
        match &now {
            Some(lists) => {
                let agree = lists.iter().all(|list| *list == lists[0]);
                if (agree && previous.as_ref() == Some(lists)) || Instant::now() > deadline {
                    return lists.clone();
                }
            }
            None => assert!(Instant::now() < deadline, "the nodes could not be listed"),
        }
        previous = now;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Checked (`history::check`; its module doc has the grounds):
/// - writes linearizable per name: one real-time order of the creates,
///   revokes and deletes in which every answer is the sequential model's
///   (create ok iff the name is free, 51 iff held; revoke or delete ok iff
///   the token exists, 20 iff not), ending in the final
///   lists; a refusal, answered from a node's own state, may be up to
///   [`STALENESS_BOUND`] old but never older than what that node answered
///   before; and with no staleness at all (strictly linearizable): a node
///   fences before it answers a refusal (`meta/fence`, CLUSTER.md);
/// - ids never reused, and each node's in real-time order across all names
///   (across nodes they need not be: each node gives ids from its own
///   blocks);
/// - token logins: read-your-writes on the node that acknowledged a create,
///   revoke or delete; every node within [`STALENESS_BOUND`]; no node goes
///   back; no phantom revoke or delete;
/// - nothing acknowledged lost: the nodes' final lists agree, and each
///   holds every acknowledged change; unknown outcomes (lost answers, 20002
///   on a write) count as happened or not, wholly;
/// - and the checker catches this very history corrupted three ways.
///
/// Not checked: one order across all names at once (ids tie the names only
/// pairwise); the token limit; logins before any node could know a token;
/// speed (the counts printed are for the reader, and nothing is timed).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_concurrent_history_under_etcd_and_node_faults_fits_the_registry_model() {
    let Some(mut etcd) = EtcdCluster::start(3) else { return };
    let key = KeyFile::new();
    let spec = spec(&etcd, &key);
    let mut nodes: Vec<Node> = (0..NODES)
        .map(|_| {
            let home = DataHome::new();
            let server = start_node(&home, &spec);
            Node { home, server: Some(server) }
        })
        .collect();
    let run = Arc::new(Run {
        history: Recorder::new(),
        addresses: nodes.iter().map(|node| Mutex::new(node.server.as_ref().unwrap().address)).collect(),
        issued: Mutex::new(Vec::new()),
        rng: Mutex::new(SeededRng::new("cluster history")),
    });

    let started = Instant::now();
    let until = started + RUN;
    let mut clients = Vec::new();
    for client in 0..NODES * CLIENTS_PER_NODE {
        clients.push(tokio::spawn(client_loop(Arc::clone(&run), client, client / CLIENTS_PER_NODE, until)));
    }
    let faults = {
        let run = Arc::clone(&run);
        let spec = spec.clone();
        tokio::task::spawn_blocking(move || {
            let said = inject_faults(&run, &mut etcd, &mut nodes, &spec, started);
            (etcd, nodes, said)
        })
    };
    for client in clients {
        client.await.expect("a client panicked");
    }
    let (_etcd, _nodes, faults) = faults.await.expect("the fault thread panicked");

    // Every fault healed: wait for the nodes to agree, read their lists,
    // then log in with every token on every node (retrying an answer that
    // says nothing, so each gets a real one).
    let lists = settled_lists(&run).await;
    let taken_at = run.history.at(Instant::now());
    let issued = run.issued.lock().unwrap().clone();
    for token in &issued {
        for node in 0..NODES {
            for _ in 0..20 {
                let said = login(&run, FINAL_CLIENT, node, token).await;
                if !matches!(said, Outcome::Lost | Outcome::Refused { code: CODE_UNAVAILABLE }) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    let entries = run.history.entries();
    let last = Final { taken_at, lists: lists.clone() };
    let checking = Instant::now();
    let verdict = history::check(&entries, &last, STALENESS_BOUND);
    let checked_in = checking.elapsed();
    let count = |op: fn(&Op) -> bool, outcome: fn(&Outcome) -> bool| {
        entries
            .iter()
            .filter(|entry| entry.invoked < taken_at && op(&entry.op) && outcome(&entry.outcome))
            .count()
    };
    let is_create = |op: &Op| matches!(op, Op::Create { .. });
    let is_revoke = |op: &Op| matches!(op, Op::Revoke { .. });
    let is_delete = |op: &Op| matches!(op, Op::Delete { .. });
    let is_login = |op: &Op| matches!(op, Op::Login { .. });
    let summary = format!(
        "history: {} entries ({} during the run); creates {} ok / {} taken (51); revokes {} ok / {} not found; \
         deletes {} ok / {} not found; logins {} allowed / {} revoked / {} not found / {} unavailable; \
         {} writes lost or 20002 ({} of them answered within 100 ms), {} logins lost; final lists: {} tokens; \
         checked in {checked_in:?}\nfaults:\n  {}\nnotes:\n  {}",
        entries.len(),
        entries.iter().filter(|entry| entry.invoked < taken_at).count(),
        count(is_create, |o| matches!(o, Outcome::Created { .. })),
        count(is_create, |o| *o == Outcome::Refused { code: 51 }),
        count(is_revoke, |o| *o == Outcome::Done),
        count(is_revoke, |o| *o == Outcome::Refused { code: 20 }),
        count(is_delete, |o| *o == Outcome::Done),
        count(is_delete, |o| *o == Outcome::Refused { code: 20 }),
        count(is_login, |o| *o == Outcome::Done),
        count(is_login, |o| *o == Outcome::Refused { code: 20003 }),
        count(is_login, |o| *o == Outcome::Refused { code: 20 }),
        count(is_login, |o| *o == Outcome::Refused { code: CODE_UNAVAILABLE }),
        count(
            |op| !matches!(op, Op::Login { .. }),
            |o| matches!(o, Outcome::Lost | Outcome::Refused { code: 20002 })
        ),
        entries
            .iter()
            .filter(|entry| !matches!(entry.op, Op::Login { .. })
                && matches!(entry.outcome, Outcome::Lost | Outcome::Refused { code: 20002 })
                && entry.returned - entry.invoked < Duration::from_millis(100))
            .count(),
        count(is_login, |o| *o == Outcome::Lost),
        lists[0].len(),
        faults.join("\n  "),
        verdict.notes.join("\n  "),
    );
    eprintln!("{summary}");
    if !verdict.violations.is_empty() {
        // The whole history, for whoever reads the failure.
        let path = std::env::temp_dir().join(format!("latchkey-cluster-history-{}.txt", std::process::id()));
        let text: String = entries.iter().map(|entry| format!("{entry}\n")).collect();
        let header = format!("{summary}\nfinal lists (read at {taken_at:?}): {lists:?}\n\n");
        std::fs::write(&path, header + &text).expect("write the history");
        eprintln!("the whole history: {}", path.display());
    }
    assert!(
        verdict.strictly_not_linearizable.is_empty(),
        "refusals answered from a stale state (a node fences before answering one):\n{}",
        verdict.strictly_not_linearizable.join("\n")
    );
    assert!(
        verdict.violations.is_empty(),
        "{} violations:\n{}",
        verdict.violations.len(),
        verdict.violations.iter().map(|violation| format!("{violation}\n")).collect::<String>()
    );
    caught_when_corrupted(&entries, &last);
    // The run exercised the model (it says nothing about speed).
    for (what, seen) in [
        ("successful creates", count(is_create, |o| matches!(o, Outcome::Created { .. }))),
        ("name collisions", count(is_create, |o| *o == Outcome::Refused { code: 51 })),
        ("acknowledged revokes", count(is_revoke, |o| *o == Outcome::Done)),
        ("acknowledged deletes", count(is_delete, |o| *o == Outcome::Done)),
        ("refused logins", count(is_login, |o| matches!(o, Outcome::Refused { code: 20 | 20003 }))),
    ] {
        assert!(seen > 0, "no {what} in the run:\n{summary}");
    }
}

/// The checker, shown able to fail on this very history: each corruption
/// of it (one thing the cluster must never do) is caught.
fn caught_when_corrupted(entries: &[Entry], last: &Final) {
    let caught = |what: &str, entries: &[Entry], last: &Final, rule: Rule| {
        let rules = history::check(entries, last, STALENESS_BOUND).rules();
        assert!(rules.contains(&rule), "{what}: not caught as {rule:?} (found {rules:?})");
    };
    // An acknowledged delete lost: the final lists hold the deleted token
    // again (in place of whatever holds its name now).
    let deleted = entries.iter().rev().find_map(|entry| match (&entry.op, &entry.outcome) {
        (Op::Delete { target: Target::Id(id) }, Outcome::Done) => Some(*id),
        _ => None,
    });
    let name = |id: u64| {
        entries.iter().find_map(|entry| match (&entry.op, &entry.outcome) {
            (Op::Create { name }, Outcome::Created { id: made }) if *made == id => Some(name.clone()),
            _ => None,
        })
    };
    let deleted = deleted.expect("an acknowledged delete by id");
    let deleted_name = name(deleted).expect("the deleted token's create");
    let mut lost = last.clone();
    for list in &mut lost.lists {
        list.retain(|token| token.name != deleted_name);
        list.push(Listed { id: deleted, name: deleted_name.clone(), revoked: false });
        list.sort();
    }
    caught("a lost acknowledged delete", entries, &lost, Rule::LostChange);
    caught("a lost acknowledged delete", entries, &lost, Rule::NotLinearizable);
    // A login allowed on the node that had just acknowledged its revoke or
    // delete (the clients ask that at once after each).
    let mut stale = entries.to_vec();
    let acked: Vec<(usize, u64, Duration)> = entries
        .iter()
        .filter_map(|entry| match (&entry.op, &entry.outcome) {
            (
                Op::Revoke { target: Target::Id(id) } | Op::Delete { target: Target::Id(id) },
                Outcome::Done,
            ) => Some((entry.node, *id, entry.returned)),
            _ => None,
        })
        .collect();
    let flipped = stale.iter_mut().find(|entry| {
        matches!(entry.outcome, Outcome::Refused { code: 20 | 20003 })
            && acked.iter().any(|&(node, id, at)| {
                entry.node == node
                    && entry.op == Op::Login { id }
                    && entry.invoked > at
                    && entry.invoked < last.taken_at
            })
    });
    flipped.expect("a login right after an acknowledged revoke or delete").outcome = Outcome::Done;
    caught("a stale allow on the answering node", &stale, last, Rule::ReadYourWrites);
    // An id handed out twice.
    let mut reused = entries.to_vec();
    let first = entries.iter().find_map(|entry| match entry.outcome {
        Outcome::Created { id } => Some(id),
        _ => None,
    });
    let again = reused.iter_mut().rev().find(|entry| matches!(entry.outcome, Outcome::Created { .. }));
    again.expect("a create").outcome = Outcome::Created { id: first.expect("a create") };
    caught("a reused id", &reused, last, Rule::IdReused);
}
