//! The load of one cycle: several connections, each logged in as root with
//! its password once, creating and deleting the names it holds until the
//! server is killed under it. Every reply is recorded as an [`Event`]; the
//! one request whose reply never arrives is recorded as in doubt.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use latchkey_sdk::{Client, ClientConfig, Error, Expiry};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::Barrier;

use crate::model::{Event, Holdings, Violation};

pub const ROOT_USERNAME: &str = "iggy";
pub const ROOT_PASSWORD: &str = "iggy";

/// Time allowed for one request. Only a hung server could exceed it: after a
/// SIGKILL the kernel closes the socket at once.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

/// Share of creates that re-create a name deleted earlier (when the worker
/// holds one), so a name's old token must stay dead while its new one works.
const RECREATE_PROBABILITY: f64 = 0.2;

/// What one worker saw in one cycle.
#[derive(Debug, Default)]
pub struct WorkerReport {
    pub events: Vec<Event>,
    /// Something the server must never do while it is up: refuse the root
    /// login or a valid request, or send a reply that does not decode.
    pub violation: Option<Violation>,
}

/// One worker's part of a cycle.
pub struct WorkerPlan {
    pub index: usize,
    pub holdings: Holdings,
    /// Deletes are favoured while the worker holds at least this many names,
    /// creates below it, so the live set hovers around a target.
    pub present_target: usize,
    pub seed: u64,
}

/// What the load of one cycle did.
pub struct LoadReport {
    pub workers: Vec<WorkerReport>,
    /// From the moment every worker was logged in to the kill.
    pub load_time: Duration,
}

/// Runs the workers against `address`; `kill_after` after they are all
/// logged in, calls `kill` (which must kill the server), then waits for every
/// worker to see its connection die.
pub async fn run(
    address: SocketAddr,
    cycle: u32,
    plans: Vec<WorkerPlan>,
    kill_after: Duration,
    kill: impl FnOnce(),
) -> LoadReport {
    let start = Arc::new(Barrier::new(plans.len() + 1));
    let killed = Arc::new(AtomicBool::new(false));
    let handles: Vec<_> = plans
        .into_iter()
        .map(|plan| tokio::spawn(worker(address, cycle, plan, Arc::clone(&start), Arc::clone(&killed))))
        .collect();
    start.wait().await;
    let started = Instant::now();
    tokio::time::sleep(kill_after).await;
    // Raised before the signal: a worker that sees its connection fail and
    // then finds it still down knows the server failed on its own.
    killed.store(true, Ordering::SeqCst);
    kill();
    let load_time = started.elapsed();
    let mut workers = Vec::with_capacity(handles.len());
    for handle in handles {
        workers.push(handle.await.expect("worker task panicked"));
    }
    LoadReport { workers, load_time }
}

async fn worker(
    address: SocketAddr,
    cycle: u32,
    plan: WorkerPlan,
    start: Arc<Barrier>,
    killed: Arc<AtomicBool>,
) -> WorkerReport {
    let mut report = WorkerReport::default();
    let subject = format!("connection {}", plan.index);
    let mut config = ClientConfig::new(address.to_string());
    config.request_timeout = REQUEST_TIMEOUT;
    let client = match Client::connect_with(config).await {
        Ok(client) => Some(client),
        Err(error) => {
            report.violation =
                Some(Violation::new(cycle, &subject, "connect to the running server", error.to_string()));
            None
        }
    };
    let mut client = match client {
        Some(mut client) => match client.login_user(ROOT_USERNAME, ROOT_PASSWORD).await {
            Ok(0) => Some(client),
            Ok(user_id) => {
                let found = format!("logged in as user {user_id}");
                report.violation = Some(Violation::new(cycle, &subject, "password login as user 0", found));
                None
            }
            Err(error) => {
                let found = error.to_string();
                report.violation = Some(Violation::new(cycle, &subject, "password login as user 0", found));
                None
            }
        },
        None => None,
    };
    // Every worker, logged in or not, releases the others.
    start.wait().await;
    let Some(client) = client.as_mut() else { return report };

    let WorkerPlan { index, holdings: Holdings { mut present, mut absent }, present_target, seed } = plan;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut fresh = 0u64;
    loop {
        let delete_probability = if present.len() >= present_target { 0.6 } else { 0.3 };
        if !present.is_empty() && rng.random_bool(delete_probability) {
            let name = present.swap_remove(rng.random_range(0..present.len()));
            match client.delete_personal_access_token(&name).await {
                Ok(()) => {
                    report.events.push(Event::Deleted { name: name.clone() });
                    absent.push(name);
                }
                Err(error) => {
                    let killed = killed.load(Ordering::SeqCst);
                    settle_failure(&mut report, cycle, &name, Op::Delete, error, killed);
                    return report;
                }
            }
        } else {
            let name = if !absent.is_empty() && rng.random_bool(RECREATE_PROBABILITY) {
                absent.swap_remove(rng.random_range(0..absent.len()))
            } else {
                fresh += 1;
                // Unique for the whole run, and inside the 3–30 byte name
                // limit: 'c' + 10 digits + 'w' + 3 + 'n' + up to 14.
                format!("c{cycle}w{index}n{fresh}")
            };
            match client.create_personal_access_token(&name, Expiry::Never).await {
                Ok(token) => {
                    report.events.push(Event::Created { name: name.clone(), token });
                    present.push(name);
                }
                Err(error) => {
                    let killed = killed.load(Ordering::SeqCst);
                    settle_failure(&mut report, cycle, &name, Op::Create, error, killed);
                    return report;
                }
            }
        }
    }
}

/// A failed request. A connection that died after the kill began leaves
/// the request in doubt. Anything else is a violation: the connection died
/// while the server was meant to be running, or the server refused a valid
/// request or sent a reply that does not decode.
fn settle_failure(report: &mut WorkerReport, cycle: u32, name: &str, op: Op, error: Error, killed: bool) {
    let connection_died = matches!(error, Error::Io(_) | Error::ConnectionClosed | Error::Timeout(_));
    // 20002: the store could not say whether the change happened (etcd
    // without a quorum for a moment, under `--unavailable-is-in-doubt`).
    let store_unsure =
        matches!(error, Error::Server { code: 20002, .. }) && UNAVAILABLE_IS_IN_DOUBT.load(Ordering::Relaxed);
    if store_unsure {
        let name = name.to_owned();
        report.events.push(match op {
            Op::Create => Event::CreateInDoubt { name },
            Op::Delete => Event::DeleteInDoubt { name },
        });
        return;
    }
    if connection_died {
        let name = name.to_owned();
        report.events.push(match op {
            Op::Create => Event::CreateInDoubt { name },
            Op::Delete => Event::DeleteInDoubt { name },
        });
        if killed {
            return;
        }
    }
    let op = op.name();
    let (expected, found) = if connection_died {
        (
            format!("{op} answered (the server had not been killed yet)"),
            format!("the connection failed: {error}"),
        )
    } else {
        (format!("{op} acknowledged (a valid request to a running server)"), error.to_string())
    };
    report.violation = Some(Violation::token(cycle, name, expected, found));
}

/// Whether a write answered 20002 (StorageUnavailable: outcome unknown) is
/// in doubt rather than a broken promise: set when the store's own members
/// are being killed (`--unavailable-is-in-doubt`), where etcd may lose its
/// quorum for a moment.
pub static UNAVAILABLE_IS_IN_DOUBT: AtomicBool = AtomicBool::new(false);

#[derive(Debug, Clone, Copy)]
enum Op {
    Create,
    Delete,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Create => "create",
            Op::Delete => "delete",
        }
    }
}
