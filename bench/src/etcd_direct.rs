//! etcd's own transaction rate for the work Latchkey's churn gives it: the
//! baseline a cluster node's durable writes are measured against.
//!
//! Each of N clients loops over a create and a delete, each one etcd
//! transaction with the compares and writes the node's etcd writer made
//! for it before id blocks (`server/src/store/etcd/writer.rs`, `txn` and
//! `add`):
//!
//! - create: `names/{user}/{name}` absent, `meta/next-id` and
//!   `counts/{user}` unchanged since the revision the client knows; puts of
//!   the token, the name, the next id and the count; on a failed compare it
//!   reads the compared keys back (as the node does) and tries again. (A
//!   node's create now takes its id from a block it leased and neither
//!   compares nor writes the counter, one compare and one put fewer, plus
//!   one small lease transaction per 1,000 creates; the loops keep the
//!   counter so that their figures stay comparable with earlier runs);
//! - delete: the token exists and is unchanged, the count unchanged;
//!   deletes of the token, its last use and its name, and the count
//!   rewritten.
//!
//! Three ways to share the work ([`Keying`]):
//!
//! - serial: every client compares and advances the one `meta/next-id` and
//!   the one user's count (churn by one user on Latchkey's nodes does), and
//!   they take turns, one transaction in flight at a time, with one shared
//!   knowledge of the counters: what one node's writer does with its
//!   connections' changes. Nothing conflicts; nothing overlaps either;
//! - shared: the same keys, every client sending when it likes with what
//!   it last saw: optimistic writers racing, losing and trying again
//!   (counted as conflicts), as several nodes do;
//! - independent: each client has its own counter and count under its own
//!   prefix: nothing shared, nothing conflicts, transactions overlap freely.
//!   etcd's own rate for transactions of this shape at this concurrency;
//!   the gap to the other two is what the serialisation costs.
//!
//! The clients share one etcd client (one gRPC channel over every
//! endpoint), as a node does, on one current-thread runtime, like the load
//! generator. Latency is timed like churn's: from the start of the pair, so
//! a delete's includes its create.

use std::rc::Rc;
use std::time::{Duration, Instant};

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, Txn, TxnOp, TxnOpResponse, TxnResponse,
};
use hdrhistogram::Histogram;

use crate::load::{RunResult, Timing, new_histogram};
use crate::sys;

/// Bytes of a token's value: what the node writes for a churn token (a log
/// Create record: 12 header + 17 prefix + id 8 + user 4 + name 1 + 9
/// (`bench-c12`) + hash 32 + created 8 + expiry 8).
const TOKEN_VALUE_BYTES: usize = 99;
/// The user every shared client acts for (the node's churn is one user's).
const USER_ID: u32 = 1;
/// Bound on one etcd request, as a node's default `request_timeout`.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Which keys the clients share, and how they take turns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keying {
    /// One id counter and one user's count for every client, one
    /// transaction in flight at a time among them: what one node's writer
    /// does with its connections' changes, so nothing conflicts.
    Serial,
    /// One id counter and one user's count for every client, every client
    /// sending when it likes: optimistic writers racing on the same keys.
    Shared,
    /// A counter and a count per client.
    Independent,
}

impl Keying {
    pub fn label(self) -> &'static str {
        match self {
            Keying::Serial => "etcd-serial",
            Keying::Shared => "etcd-shared",
            Keying::Independent => "etcd-indep",
        }
    }
}

/// One measured run, and the transactions that lost a race (sent again).
pub struct DirectRun {
    pub run: RunResult,
    pub conflicts: u64,
}

/// Connects to the etcd cluster: one client for every loop, as a node has.
pub async fn connect(endpoints: &[String]) -> std::io::Result<Client> {
    let options = ConnectOptions::new().with_connect_timeout(REQUEST_TIMEOUT).with_timeout(REQUEST_TIMEOUT);
    Client::connect(endpoints, Some(options)).await.map_err(std::io::Error::other)
}

/// Deletes every key under `prefix` (what earlier runs left: counters).
pub async fn clear(endpoints: &[String], prefix: &str) -> std::io::Result<()> {
    let mut client = connect(endpoints).await?;
    client.delete(prefix, Some(DeleteOptions::new().with_prefix())).await.map_err(failed)?;
    Ok(())
}

/// One run of `connections` client loops under `prefix`.
pub fn run(
    endpoints: &[String],
    prefix: &str,
    keying: Keying,
    connections: usize,
    timing: Timing,
) -> std::io::Result<DirectRun> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let client = connect(endpoints).await?;
        let start = Instant::now();
        let phase = Rc::new(Phase {
            measure_from: start + timing.warmup,
            end: start + timing.warmup + timing.duration,
        });
        let local = tokio::task::LocalSet::new();
        let mut tasks = Vec::with_capacity(connections);
        // Serial: the clients take turns with one shared knowledge of the
        // counters, as the changes of a node's connections do in its writer.
        let shared = Rc::new(tokio::sync::Mutex::new(Known::default()));
        for connection in 0..connections {
            let keys = match keying {
                Keying::Serial | Keying::Shared => ClientKeys::new(prefix, USER_ID, connection),
                Keying::Independent => {
                    ClientKeys::new(&format!("{prefix}{connection:04}/"), USER_ID, connection)
                }
            };
            let known = match keying {
                Keying::Serial => Rc::clone(&shared),
                Keying::Shared | Keying::Independent => Rc::new(tokio::sync::Mutex::new(Known::default())),
            };
            let (client, phase) = (client.clone(), Rc::clone(&phase));
            tasks.push(local.spawn_local(async move { client_loop(client, known, keys, &phase).await }));
        }
        local
            .run_until(async {
                tokio::time::sleep_until(phase.measure_from.into()).await;
                let client_before = sys::own_cpu();
                tokio::time::sleep_until(phase.end.into()).await;
                let client_cpu =
                    sys::own_cpu().zip(client_before).map(|(after, before)| after.saturating_sub(before));
                let mut total = DirectRun {
                    run: RunResult {
                        ops: 0,
                        errors: 0,
                        elapsed: timing.duration,
                        histogram: new_histogram(),
                        client_cpu: client_cpu.map(|cpu| cpu.as_secs_f64() / timing.duration.as_secs_f64()),
                        server_cpu: None,
                        server_user_cpu: None,
                    },
                    conflicts: 0,
                };
                for task in tasks {
                    let stats = task.await.map_err(std::io::Error::other)??;
                    total.run.ops += stats.ops;
                    total.conflicts += stats.conflicts;
                    total.run.histogram.add(&stats.histogram).expect("same bounds");
                }
                Ok(total)
            })
            .await
    })
}

struct Phase {
    measure_from: Instant,
    end: Instant,
}

/// One client's keys, in the node's layout (`server/src/store/etcd/keys.rs`).
struct ClientKeys {
    name: String,
    next_id: String,
    count: String,
    /// `tokens/{user}/` and `used/{user}/`, completed with an id.
    tokens: String,
    used: String,
    token_name: String,
}

impl ClientKeys {
    fn new(prefix: &str, user_id: u32, connection: usize) -> ClientKeys {
        let token_name = format!("bench-c{connection}");
        ClientKeys {
            name: format!("{prefix}names/{user_id:010}/{token_name}"),
            next_id: format!("{prefix}meta/next-id"),
            count: format!("{prefix}counts/{user_id:010}"),
            tokens: format!("{prefix}tokens/{user_id:010}/"),
            used: format!("{prefix}used/{user_id:010}/"),
            token_name,
        }
    }

    fn token(&self, id: u64) -> String {
        format!("{}{id:020}", self.tokens)
    }

    fn used(&self, id: u64) -> String {
        format!("{}{id:020}", self.used)
    }
}

/// A counter's value as the client last saw it, and the revision it saw
/// it at: the transaction that uses the value compares that the key has not
/// changed since (a value is only as fresh as the revision it was read or
/// written at, not as the client's latest revision).
#[derive(Clone, Copy, Default)]
struct Seen {
    value: u64,
    at: i64,
}

impl Seen {
    /// The key has not changed since it was seen (the node's compare:
    /// modified before `applied + 1`).
    fn unchanged(self, key: &str) -> Compare {
        Compare::mod_revision(key, CompareOp::Less, self.at + 1)
    }
}

/// What the client knows of the counters it compares (before its first
/// read: nothing, as of no revision).
#[derive(Default)]
struct Known {
    next_id: Seen,
    count: Seen,
}

struct ClientStats {
    ops: u64,
    conflicts: u64,
    histogram: Histogram<u64>,
}

fn failed(error: etcd_client::Error) -> std::io::Error {
    std::io::Error::other(format!("etcd: {error}"))
}

/// Runs pairs until the phase ends; a pair once begun is finished, so the
/// next run finds no name left taken. `known` is locked for each
/// transaction, from building it to learning its outcome.
async fn client_loop(
    mut client: Client,
    known: Rc<tokio::sync::Mutex<Known>>,
    keys: ClientKeys,
    phase: &Phase,
) -> std::io::Result<ClientStats> {
    let mut stats = ClientStats { ops: 0, conflicts: 0, histogram: new_histogram() };
    {
        let mut known = known.lock().await;
        let read = Txn::new()
            .and_then([TxnOp::get(keys.next_id.as_str(), None), TxnOp::get(keys.count.as_str(), None)]);
        let response = client.txn(read).await.map_err(failed)?;
        learn(&response, &[Read::NextId, Read::Count], &keys, &mut known)?;
    }
    let value = vec![0x5a; TOKEN_VALUE_BYTES];
    loop {
        let started = Instant::now();
        if started >= phase.end {
            return Ok(stats);
        }
        let (id, created_at) = loop {
            let mut known = known.lock().await;
            let (id, count) = (known.next_id.value, known.count.value);
            let txn = Txn::new()
                .when([
                    Compare::create_revision(keys.name.as_str(), CompareOp::Equal, 0),
                    known.next_id.unchanged(&keys.next_id),
                    known.count.unchanged(&keys.count),
                ])
                .and_then([
                    TxnOp::put(keys.token(id), value.clone(), None),
                    TxnOp::put(keys.name.as_str(), id.to_string(), None),
                    TxnOp::put(keys.next_id.as_str(), (id + 1).to_string(), None),
                    TxnOp::put(keys.count.as_str(), (count + 1).to_string(), None),
                ])
                .or_else([
                    TxnOp::get(keys.name.as_str(), None),
                    TxnOp::get(keys.next_id.as_str(), None),
                    TxnOp::get(keys.count.as_str(), None),
                ]);
            let response = client.txn(txn).await.map_err(failed)?;
            let at = revision(&response);
            if response.succeeded() {
                known.next_id = Seen { value: id + 1, at };
                known.count = Seen { value: count + 1, at };
                break (id, at);
            }
            stats.conflicts += 1;
            learn(&response, &[Read::Name, Read::NextId, Read::Count], &keys, &mut known)?;
        };
        record(&mut stats, phase, started);
        let token = keys.token(id);
        let token_seen = Seen { value: id, at: created_at };
        loop {
            let mut known = known.lock().await;
            let count = known.count.value.saturating_sub(1);
            let write_count = match count {
                0 => TxnOp::delete(keys.count.as_str(), None),
                count => TxnOp::put(keys.count.as_str(), count.to_string(), None),
            };
            let txn = Txn::new()
                .when([
                    Compare::version(token.as_str(), CompareOp::Greater, 0),
                    token_seen.unchanged(&token),
                    known.count.unchanged(&keys.count),
                ])
                .and_then([
                    TxnOp::delete(token.as_str(), None),
                    TxnOp::delete(keys.used(id), None),
                    TxnOp::delete(keys.name.as_str(), None),
                    write_count,
                ])
                .or_else([TxnOp::get(token.as_str(), None), TxnOp::get(keys.count.as_str(), None)]);
            let response = client.txn(txn).await.map_err(failed)?;
            if response.succeeded() {
                known.count = Seen { value: count, at: revision(&response) };
                break;
            }
            stats.conflicts += 1;
            learn(&response, &[Read::Token, Read::Count], &keys, &mut known)?;
        }
        record(&mut stats, phase, started);
    }
}

fn revision(response: &TxnResponse) -> i64 {
    response.header().map_or(0, |header| header.revision())
}

/// A key a transaction reads back, in the order of its reads.
#[derive(Clone, Copy)]
enum Read {
    Name,
    NextId,
    Count,
    Token,
}

/// Takes the counter and the count from a transaction's reads (`reads`
/// names each); a name left taken (by an earlier run cut short) is an
/// error, not a conflict.
fn learn(
    response: &TxnResponse,
    reads: &[Read],
    keys: &ClientKeys,
    known: &mut Known,
) -> std::io::Result<()> {
    let number = |value: &[u8]| -> std::io::Result<u64> {
        std::str::from_utf8(value)
            .ok()
            .and_then(|text| text.parse().ok())
            .ok_or_else(|| std::io::Error::other("etcd: a counter that is not a decimal number"))
    };
    let at = revision(response);
    for (read, op) in reads.iter().zip(response.op_responses()) {
        let TxnOpResponse::Get(got) = op else { continue };
        let value = got.kvs().first().map(|kv| kv.value());
        match (read, value) {
            // An absent counter starts at 1 and an absent count is 0, as the node's.
            (Read::NextId, value) => known.next_id = Seen { value: value.map_or(Ok(1), number)?, at },
            (Read::Count, value) => known.count = Seen { value: value.map_or(Ok(0), number)?, at },
            (Read::Name, Some(_)) => {
                return Err(std::io::Error::other(format!(
                    "etcd: {} is taken; clear the prefix before a run",
                    keys.token_name
                )));
            }
            (Read::Token, None) => {
                return Err(std::io::Error::other(format!(
                    "etcd: the token of {} is gone; another writer is in the prefix",
                    keys.token_name
                )));
            }
            (Read::Name | Read::Token, _) => {}
        }
    }
    Ok(())
}

fn record(stats: &mut ClientStats, phase: &Phase, started: Instant) {
    let done = Instant::now();
    if done >= phase.measure_from && done < phase.end {
        stats.ops += 1;
        let _ = stats.histogram.record((done - started).as_micros().max(1) as u64);
    }
}
