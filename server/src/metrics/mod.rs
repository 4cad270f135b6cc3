//! Prometheus metrics: cheap recording functions for the code that serves
//! requests, and [`render`], the text a scrape of `GET /metrics` gets
//! (exposition format 0.0.4, [`CONTENT_TYPE`]). README.md's "Metrics"
//! section lists every family, its labels and what it means.
//!
//! **Why per-thread shards.** A token login or an Authorize is a few
//! microseconds of work on a worker thread; a shared atomic counter bumped
//! by every worker would bounce one cache line between cores on every
//! request, and a lock would be worse. So counters and histograms live in
//! per-thread shards (`shard.rs`): a thread writes only its own cells (a
//! relaxed load and a store, no allocation, no lock), and a scrape adds the
//! shards up. The scrape pays, not the request. Gauges that change only at
//! connect and close, or once per commit, are plain global atomics.
//!
//! **Bounded series.** Every label value comes from a closed enum
//! (`labels.rs`), so the number of series is fixed by this build, whatever
//! the traffic: no label carries a user, a token or an address. A scrape
//! before any traffic shows every series at zero.
//!
//! Layering: recording depends on nothing in the server, so any layer may
//! record. [`render`] reads the registry through the command [`Context`];
//! only the HTTP side calls it.
//!
//! [`Context`]: crate::command::Context

mod labels;
mod render;
mod shard;

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

pub use labels::{
    AuthorizeOutcome, CommandLabel, ConnKind, HttpRoute, LoginMethod, LoginResult, RefusedReason,
    StatusClass, Via,
};
pub use render::render;
pub use shard::BUCKET_BOUNDS_NS;

use shard::{counter, histogram, with_local};

/// `[personal_access_token] expiry_warning_window` in µs, for
/// `latchkey_tokens_expiring` (set at start; a reload keeps it).
static EXPIRY_WINDOW_US: AtomicU64 = AtomicU64::new(0);

/// Sets the window `latchkey_tokens_expiring` counts within.
pub fn set_expiry_window(window: Duration) {
    EXPIRY_WINDOW_US.store(u64::try_from(window.as_micros()).unwrap_or(u64::MAX), Ordering::Relaxed);
}

/// The content type of [`render`]'s text.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A login finished: `latchkey_logins_total{method, result}`. Use
/// [`LoginResult::of`] on the login's outcome.
#[inline]
pub fn login(method: LoginMethod, result: LoginResult) {
    with_local(|shard| shard.count(counter::login(method, result)));
}

/// An Authorize was answered: `latchkey_authorize_decisions_total{via,
/// decision}`. `decision` is a `Decision::as_str()` value, or "throttled",
/// "unavailable" or "error" for a refusal before any decision; any other
/// string counts as "other".
#[inline]
pub fn authorize(via: Via, decision: &str) {
    let decision = AuthorizeOutcome::of_decision(decision);
    with_local(|shard| shard.count(counter::authorize(via, decision)));
}

/// A TCP request was answered `elapsed` after its bytes were taken up:
/// `latchkey_request_duration_seconds{command}`.
#[inline]
pub fn request(command: CommandLabel, elapsed: Duration) {
    with_local(|shard| shard.observe(histogram::request(command), elapsed));
}

/// An HTTP request was answered with `status` after `elapsed`:
/// `latchkey_http_request_duration_seconds{route}` and
/// `latchkey_http_responses_total{route, code}` (the status's class).
#[inline]
pub fn http_request(route: HttpRoute, status: u16, elapsed: Duration) {
    let code = StatusClass::of(status);
    with_local(|shard| {
        shard.observe(histogram::http_request(route), elapsed);
        shard.count(counter::http_response(route, code));
    });
}

/// The failed-login throttle refused an attempt:
/// `latchkey_throttle_refusals_total{kind}`.
#[inline]
pub fn throttle_refused(kind: LoginMethod) {
    with_local(|shard| shard.count(counter::throttle_refusal(kind)));
}

/// The acceptor turned a connection away:
/// `latchkey_connections_refused_total{reason}`.
#[inline]
pub fn connection_refused(reason: RefusedReason) {
    with_local(|shard| shard.count(counter::connection_refused(reason)));
}

/// The store made a batch durable in `elapsed` (the journal's append and
/// sync), answering `changes` changes done.
pub fn store_batch_committed(changes: u64, elapsed: Duration) {
    with_local(|shard| {
        shard.count(counter::BATCHES_COMMITTED);
        shard.count_by(counter::CHANGES_COMMITTED, changes);
        shard.observe(histogram::STORE_COMMIT, elapsed);
    });
}

/// A cluster node's etcd transaction lost a race: a compare failed because
/// another node (or this one's own earlier change) wrote what it relied
/// on; its changes are checked again. `latchkey_store_conflicts_total`.
pub fn store_conflict() {
    with_local(|shard| shard.count(counter::CONFLICTS));
}

/// A cluster node leased a block of token ids from etcd's id counter.
/// `latchkey_store_id_blocks_leased_total`.
pub fn id_block_leased() {
    with_local(|shard| shard.count(counter::ID_BLOCKS_LEASED));
}

/// The journal's append of a batch failed after `elapsed` (the store then
/// refuses every change until a restart).
pub fn store_batch_failed(elapsed: Duration) {
    with_local(|shard| {
        shard.count(counter::COMMIT_FAILURES);
        shard.observe(histogram::STORE_COMMIT, elapsed);
    });
}

/// The log's upkeep after a commit failed (installing a compaction): the
/// store refuses every change from now on, as after a failed append, so it
/// counts as a commit failure too.
pub fn store_maintenance_failed() {
    with_local(|shard| shard.count(counter::COMMIT_FAILURES));
}

/// A compaction of the log file was installed.
pub fn log_compacted() {
    with_local(|shard| shard.count(counter::COMPACTIONS));
}

/// The log file's size and records after a change: `bytes` on disk,
/// `records` in it, `live` of them describing a token that exists (the
/// rest are dead, what compaction removes). Only the file backend sets
/// these; in cluster mode (etcd) they stay at zero.
pub fn log_file(bytes: u64, records: u64, live: u64) {
    LOG_BYTES.store(bytes, Ordering::Relaxed);
    LOG_RECORDS.store(records, Ordering::Relaxed);
    LOG_LIVE.store(live, Ordering::Relaxed);
}

static LOG_BYTES: AtomicU64 = AtomicU64::new(0);
static LOG_RECORDS: AtomicU64 = AtomicU64::new(0);
static LOG_LIVE: AtomicU64 = AtomicU64::new(0);

/// Connections open per framing: changed at connect and close only, so a
/// shared atomic costs nothing per request.
static OPEN: [AtomicI64; ConnKind::COUNT] = [const { AtomicI64::new(0) }; ConnKind::COUNT];

/// One open connection of a kind, counted in `latchkey_connections_open`
/// from creation until drop. Create it once the framing is known.
#[must_use = "the connection is counted only while the guard lives"]
pub struct OpenConnection(ConnKind);

impl OpenConnection {
    pub fn new(kind: ConnKind) -> OpenConnection {
        OPEN[kind.index()].fetch_add(1, Ordering::Relaxed);
        OpenConnection(kind)
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        OPEN[self.0.index()].fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests;
