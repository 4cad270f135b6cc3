//! The per-thread shards that counters and histograms are recorded in, and
//! their sum at scrape.
//!
//! A shard is a fixed block of `AtomicU64` cells: one per counter series,
//! and per histogram series one per bucket plus the sum. Only the thread
//! that owns a shard writes it, so a record is a relaxed load and a store
//! (no locked read-modify-write, no cache line shared with another worker);
//! the scrape reads every shard and adds them up. Each cell only grows, so
//! the sums only grow too.
//!
//! A thread claims a shard at its first record: under the shard list's
//! mutex, it takes one a finished thread left behind or makes a new one. At
//! thread exit its shard goes back on that list, counts and all, for the
//! next thread to carry on. So nothing recorded is lost when a thread ends,
//! and there are never more shards than threads that recorded at once.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use super::labels::{
    AuthorizeOutcome, CommandLabel, HttpRoute, LoginMethod, LoginResult, RefusedReason, StatusClass, Via,
};

/// Upper bounds of the duration buckets, in nanoseconds (50 µs to 10 s);
/// exposed as `le` in seconds.
pub const BUCKET_BOUNDS_NS: [u64; 17] = [
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// Cells per histogram series: one per bound, and one past the last (+Inf).
/// Kept per bucket, not cumulative: the render adds them up.
pub const BUCKETS: usize = BUCKET_BOUNDS_NS.len() + 1;

/// Where each counter family's series sit in a shard's `counters`.
pub(super) mod counter {
    use super::*;

    /// `[method][result]`
    pub const LOGINS: usize = 0;
    /// `[via][decision]`
    pub const AUTHORIZE: usize = LOGINS + LoginMethod::COUNT * LoginResult::COUNT;
    /// `[route][code]`
    pub const HTTP_RESPONSES: usize = AUTHORIZE + Via::COUNT * AuthorizeOutcome::COUNT;
    /// `[kind]`
    pub const THROTTLE_REFUSALS: usize = HTTP_RESPONSES + HttpRoute::COUNT * StatusClass::COUNT;
    /// `[reason]`
    pub const CONNECTIONS_REFUSED: usize = THROTTLE_REFUSALS + LoginMethod::COUNT;
    pub const CHANGES_COMMITTED: usize = CONNECTIONS_REFUSED + RefusedReason::COUNT;
    pub const BATCHES_COMMITTED: usize = CHANGES_COMMITTED + 1;
    pub const COMMIT_FAILURES: usize = BATCHES_COMMITTED + 1;
    pub const COMPACTIONS: usize = COMMIT_FAILURES + 1;
    pub const CONFLICTS: usize = COMPACTIONS + 1;
    pub const ID_BLOCKS_LEASED: usize = CONFLICTS + 1;
    pub const COUNT: usize = ID_BLOCKS_LEASED + 1;

    #[inline]
    pub fn login(method: LoginMethod, result: LoginResult) -> usize {
        LOGINS + method.index() * LoginResult::COUNT + result.index()
    }

    #[inline]
    pub fn authorize(via: Via, decision: AuthorizeOutcome) -> usize {
        AUTHORIZE + via.index() * AuthorizeOutcome::COUNT + decision.index()
    }

    #[inline]
    pub fn http_response(route: HttpRoute, code: StatusClass) -> usize {
        HTTP_RESPONSES + route.index() * StatusClass::COUNT + code.index()
    }

    #[inline]
    pub fn throttle_refusal(kind: LoginMethod) -> usize {
        THROTTLE_REFUSALS + kind.index()
    }

    #[inline]
    pub fn connection_refused(reason: RefusedReason) -> usize {
        CONNECTIONS_REFUSED + reason.index()
    }
}

/// Where each histogram family's series sit in a shard's `histograms`.
pub(super) mod histogram {
    use super::*;

    /// `[command]`
    pub const REQUEST: usize = 0;
    /// `[route]`
    pub const HTTP_REQUEST: usize = REQUEST + CommandLabel::COUNT;
    pub const STORE_COMMIT: usize = HTTP_REQUEST + HttpRoute::COUNT;
    pub const COUNT: usize = STORE_COMMIT + 1;

    #[inline]
    pub fn request(command: CommandLabel) -> usize {
        REQUEST + command.index()
    }

    #[inline]
    pub fn http_request(route: HttpRoute) -> usize {
        HTTP_REQUEST + route.index()
    }
}

/// One thread's cells.
pub(super) struct Shard {
    counters: [AtomicU64; counter::COUNT],
    histograms: [Histogram; histogram::COUNT],
}

struct Histogram {
    buckets: [AtomicU64; BUCKETS],
    sum_ns: AtomicU64,
}

impl Histogram {
    const fn new() -> Histogram {
        Histogram { buckets: [const { AtomicU64::new(0) }; BUCKETS], sum_ns: AtomicU64::new(0) }
    }
}

/// Adds to a cell only its owning thread writes: a load and a store.
#[inline]
fn add(cell: &AtomicU64, by: u64) {
    cell.store(cell.load(Ordering::Relaxed).wrapping_add(by), Ordering::Relaxed);
}

/// The bucket a duration of `ns` falls in: the first whose bound it does
/// not exceed (`le` is inclusive), or the last (+Inf).
#[inline]
pub(super) fn bucket_of(ns: u64) -> usize {
    BUCKET_BOUNDS_NS.partition_point(|&bound| bound < ns)
}

impl Shard {
    pub(super) fn new() -> Shard {
        Shard {
            counters: [const { AtomicU64::new(0) }; counter::COUNT],
            histograms: [const { Histogram::new() }; histogram::COUNT],
        }
    }

    /// Adds one to counter cell `index` (see [`counter`]).
    #[inline]
    pub(super) fn count(&self, index: usize) {
        add(&self.counters[index], 1);
    }

    /// Adds `by` to counter cell `index`.
    #[inline]
    pub(super) fn count_by(&self, index: usize, by: u64) {
        add(&self.counters[index], by);
    }

    /// Records one observation of `elapsed` in histogram `index` (see
    /// [`histogram`]).
    #[inline]
    pub(super) fn observe(&self, index: usize, elapsed: Duration) {
        let ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        let histogram = &self.histograms[index];
        add(&histogram.buckets[bucket_of(ns)], 1);
        add(&histogram.sum_ns, ns);
    }
}

/// Every shard ever made, and those whose threads have ended.
pub(super) struct Shards {
    all: Vec<Arc<Shard>>,
    free: Vec<Arc<Shard>>,
}

impl Shards {
    pub(super) const fn new() -> Shards {
        Shards { all: Vec::new(), free: Vec::new() }
    }

    /// A shard for a thread to write: one an ended thread left, or a new one.
    pub(super) fn claim(&mut self) -> Arc<Shard> {
        if let Some(shard) = self.free.pop() {
            return shard;
        }
        let shard = Arc::new(Shard::new());
        self.all.push(Arc::clone(&shard));
        shard
    }

    /// Gives back the shard of a thread that is ending; its counts stay.
    pub(super) fn release(&mut self, shard: Arc<Shard>) {
        self.free.push(shard);
    }

    /// How many shards exist.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.all.len()
    }

    /// The sum of every shard.
    pub(super) fn totals(&self) -> Box<Totals> {
        let mut totals = Box::new(Totals::zero());
        for shard in &self.all {
            totals.add(shard);
        }
        totals
    }
}

static SHARDS: Mutex<Shards> = Mutex::new(Shards::new());

pub(super) fn shards() -> MutexGuard<'static, Shards> {
    SHARDS.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A thread's hold on its shard; gives it back when the thread ends.
struct Local(Arc<Shard>);

impl Drop for Local {
    fn drop(&mut self) {
        shards().release(Arc::clone(&self.0));
    }
}

thread_local! {
    static LOCAL: Local = Local(shards().claim());
}

/// Runs `record` on this thread's shard. While the thread is being torn
/// down its shard may already be gone; that one record is dropped.
#[inline]
pub(super) fn with_local(record: impl FnOnce(&Shard)) {
    let _ = LOCAL.try_with(|local| record(&local.0));
}

/// Every shard's cells added up, at one scrape.
pub(super) struct Totals {
    pub counters: [u64; counter::COUNT],
    pub histograms: [HistogramTotals; histogram::COUNT],
}

/// One histogram series, summed: per-bucket counts (not yet cumulative)
/// and the sum in nanoseconds.
#[derive(Clone, Copy)]
pub(super) struct HistogramTotals {
    pub buckets: [u64; BUCKETS],
    pub sum_ns: u64,
}

impl HistogramTotals {
    /// Observations in all: what the +Inf bucket and `_count` say.
    pub fn count(&self) -> u64 {
        self.buckets.iter().fold(0u64, |sum, bucket| sum.wrapping_add(*bucket))
    }
}

impl Totals {
    pub(super) fn zero() -> Totals {
        Totals {
            counters: [0; counter::COUNT],
            histograms: [HistogramTotals { buckets: [0; BUCKETS], sum_ns: 0 }; histogram::COUNT],
        }
    }

    pub(super) fn add(&mut self, shard: &Shard) {
        for (total, cell) in self.counters.iter_mut().zip(&shard.counters) {
            *total = total.wrapping_add(cell.load(Ordering::Relaxed));
        }
        for (total, cells) in self.histograms.iter_mut().zip(&shard.histograms) {
            for (bucket, cell) in total.buckets.iter_mut().zip(&cells.buckets) {
                *bucket = bucket.wrapping_add(cell.load(Ordering::Relaxed));
            }
            total.sum_ns = total.sum_ns.wrapping_add(cells.sum_ns.load(Ordering::Relaxed));
        }
    }
}
