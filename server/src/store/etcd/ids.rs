//! Id blocks: where a node's token ids come from in cluster mode.
//!
//! `meta/next-id` is the cluster's id counter: every id below it may have
//! been handed out, none at or above it has. A node leases a block of
//! [`ID_BLOCK_IDS`] ids from it in a transaction of its own (compare the
//! counter's value, advance it by the block), and then gives its creates
//! ids from that block without touching the counter. So creates on
//! different nodes share no key unless they are one user's (the count), and
//! a node's groups never lose a race on the counter.
//!
//! What keeps ids unique and never reused: a lease is a compare-and-set on
//! the counter's value, so two leases never overlap, and a block's ids are
//! used only after its lease committed (the counter is then past every id
//! in it, which is what a node's listing and `export` rely on). An id is
//! taken for good once a transaction carrying it is sent, whatever etcd
//! answers, so a lost race or an outcome unknown skips ids but never hands
//! one out twice. A node that stops, or is killed, abandons what is left of
//! its blocks: those ids are skipped.
//!
//! A node takes its next block before the current one runs out: when fewer
//! than [`LEASE_AHEAD_BELOW`] ids are left, a lease runs in the background
//! (a task on the writer's runtime, while the writer goes on committing),
//! and only a group that finds no id left waits for it.
//!
//! Not here: the transactions that use the ids (`writer.rs`).

use std::ops::Range;
use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, Txn, TxnOp, TxnOpResponse};
use latchkey_protocol::ErrorCode;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::keys::{decode_number, encode_number};
use super::{UNSENT_RETRY_PAUSE, never_sent};
use crate::metrics;

/// Ids a node leases at once. One lease (a transaction of one compare and
/// one put on `meta/next-id`) per this many creates: at 5,000 creates/s on
/// one node, five leases a second against thousands of group
/// transactions, so the counter is no longer where nodes meet. Larger
/// blocks would save little more and make ids jump further: a node that
/// restarts skips what was left of its block, at most this many ids (a
/// u64 does not run out from that). A constant, not a setting: nothing
/// about a deployment changes the trade.
pub const ID_BLOCK_IDS: u64 = 1_000;
/// Ids left in hand below which a node leases its next block in the
/// background: half a block is 100 ms of creates at 5,000/s, many lease
/// round trips.
pub const LEASE_AHEAD_BELOW: u64 = ID_BLOCK_IDS / 2;

/// A lease on its way: its block, or why there is none.
type Leasing = oneshot::Receiver<Result<Range<u64>, ErrorCode>>;

/// The ids a node holds: what is left of its current block, the next block
/// if it has leased it already, and a lease on its way.
pub struct IdBlocks {
    client: Client,
    next_id_key: String,
    timeout: Duration,
    held: Held,
    leasing: Option<Leasing>,
    /// The end of the last block leased: the counter's value as this node
    /// last set it (the next lease's first guess).
    leased_to: u64,
}

impl IdBlocks {
    pub fn new(client: Client, next_id_key: String, timeout: Duration) -> IdBlocks {
        IdBlocks { client, next_id_key, timeout, held: Held::default(), leasing: None, leased_to: 0 }
    }

    /// The `index`-th id in hand, without taking it (ids are taken with
    /// [`IdBlocks::take`] once a transaction carries them).
    pub fn peek(&self, index: u64) -> Option<u64> {
        self.held.peek(index)
    }

    /// Takes the first `count` ids in hand for good (a transaction carrying
    /// them is about to be sent), and starts leasing the next block if few
    /// are left. `floor` is an id this node knows to be past every id
    /// handed out (its state's next id): no block starts below it.
    pub fn take(&mut self, count: u64, floor: u64) {
        self.held.take(count);
        self.collect();
        if self.leasing.is_none() && self.held.available() < LEASE_AHEAD_BELOW {
            self.leasing = Some(self.start_lease(floor));
        }
    }

    /// Whether `id` is one this node holds and has not handed out: a token
    /// with such an id made elsewhere means the counter was moved back past
    /// a lease (which no Latchkey writer does).
    pub fn holds(&self, id: u64) -> bool {
        self.held.holds(id)
    }

    /// Drops every id in hand: they are skipped. (A lease on its way is
    /// kept: its block is above everything leased before it.)
    pub fn abandon(&mut self) {
        self.held = Held::default();
    }

    /// Makes sure at least `needed` ids are in hand, waiting for the lease
    /// on its way or leasing now. 20002 if etcd does not answer in time.
    pub async fn ensure(&mut self, needed: u64, floor: u64) -> Result<(), ErrorCode> {
        while self.held.available() < needed {
            let (leasing, fresh) = match self.leasing.take() {
                Some(leasing) => (leasing, false),
                None => (self.start_lease(floor), true),
            };
            match leasing.await.unwrap_or(Err(ErrorCode::StorageUnavailable)) {
                Ok(block) => self.add(block),
                Err(code) if fresh => return Err(code),
                // A lease started earlier failed (it was logged): lease anew.
                Err(_) => {}
            }
        }
        Ok(())
    }

    /// Leases a block on a task of the writer's runtime: it goes on while
    /// the writer commits, and only a group that finds no id left waits.
    fn start_lease(&self, floor: u64) -> Leasing {
        let (done, leasing) = oneshot::channel();
        let lease =
            lease(self.client.clone(), self.next_id_key.clone(), floor.max(self.leased_to), self.timeout);
        tokio::spawn(async move {
            let _ = done.send(lease.await);
        });
        leasing
    }

    fn add(&mut self, block: Range<u64>) {
        self.leased_to = self.leased_to.max(block.end);
        self.held.add(block);
    }

    /// Puts a lease that has finished with the ids in hand (one that
    /// failed was logged; the next `take` leases again).
    fn collect(&mut self) {
        let Some(mut leasing) = self.leasing.take() else { return };
        match leasing.try_recv() {
            Ok(Ok(block)) => self.add(block),
            Ok(Err(_)) | Err(oneshot::error::TryRecvError::Closed) => {}
            Err(oneshot::error::TryRecvError::Empty) => self.leasing = Some(leasing),
        }
    }
}

/// Ids in hand, lowest first: the current block's rest, then the next
/// block (the bookkeeping, apart from leasing).
#[derive(Debug, Default)]
struct Held {
    blocks: Vec<Range<u64>>,
}

impl Held {
    fn available(&self) -> u64 {
        self.blocks.iter().map(|block| block.end - block.start).sum()
    }

    fn peek(&self, index: u64) -> Option<u64> {
        let mut index = index;
        for block in &self.blocks {
            let length = block.end - block.start;
            if index < length {
                return Some(block.start + index);
            }
            index -= length;
        }
        None
    }

    fn take(&mut self, count: u64) {
        let mut count = count;
        while count > 0 {
            let Some(block) = self.blocks.first_mut() else {
                debug_assert!(false, "took more ids than were in hand");
                break;
            };
            let taken = count.min(block.end - block.start);
            block.start += taken;
            count -= taken;
            if block.start == block.end {
                self.blocks.remove(0);
            }
        }
    }

    fn holds(&self, id: u64) -> bool {
        self.blocks.iter().any(|block| block.contains(&id))
    }

    /// A block leased after every block in hand (leases only go up).
    fn add(&mut self, block: Range<u64>) {
        debug_assert!(self.blocks.last().is_none_or(|last| last.end <= block.start), "blocks out of order");
        if !block.is_empty() {
            self.blocks.push(block);
        }
    }
}

/// Leases one block: compares the counter's value and advances it by
/// [`ID_BLOCK_IDS`], reading the value back when another lease (or an
/// older node's create) moved it first, within `timeout`. The block starts
/// at the counter's value, or at `floor` if that is higher. Any failure is
/// sent again until the deadline: a lease whose answer was lost only skips
/// its block (the next attempt's compare sees the counter moved).
async fn lease(
    mut client: Client,
    key: String,
    floor: u64,
    timeout: Duration,
) -> Result<Range<u64>, ErrorCode> {
    let deadline = Instant::now() + timeout;
    // A first guess: the counter as this node last saw it (a wrong guess
    // costs one round trip, which reads the real value).
    let mut seen = Some(floor);
    loop {
        let compare = match seen {
            Some(value) => Compare::value(key.as_str(), CompareOp::Equal, encode_number(value)),
            None => Compare::create_revision(key.as_str(), CompareOp::Equal, 0),
        };
        // An absent counter is 1, as when a node first lists the registry.
        let start = seen.unwrap_or(1).max(floor);
        let end = start.saturating_add(ID_BLOCK_IDS);
        let txn = Txn::new()
            .when([compare])
            .and_then([TxnOp::put(key.as_str(), encode_number(end), None)])
            .or_else([TxnOp::get(key.as_str(), None)]);
        match tokio::time::timeout_at(deadline, client.txn(txn)).await {
            Ok(Ok(response)) if response.succeeded() => {
                metrics::id_block_leased();
                return Ok(start..end);
            }
            Ok(Ok(response)) => {
                let value = response.op_responses().into_iter().find_map(|op| match op {
                    TxnOpResponse::Get(got) => Some(got.kvs().first().map(|kv| decode_number(kv.value()))),
                    _ => None,
                });
                seen = match value.flatten() {
                    Some(Ok(value)) => Some(value),
                    Some(Err(reason)) => {
                        tracing::error!(key, reason, "the id counter in etcd is damaged; no id block leased");
                        return Err(ErrorCode::StorageUnavailable);
                    }
                    None => None,
                };
            }
            Ok(Err(error)) if Instant::now() < deadline => {
                if !never_sent(&error) {
                    tracing::debug!(%error, "an id block lease failed; trying again");
                }
                tokio::time::sleep(UNSENT_RETRY_PAUSE).await;
            }
            Ok(Err(error)) => {
                tracing::warn!(%error, "no id block leased; creates answered 20002");
                return Err(ErrorCode::StorageUnavailable);
            }
            Err(_) => {
                tracing::warn!(?timeout, "no id block leased in time; creates answered 20002");
                return Err(ErrorCode::StorageUnavailable);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Held;

    #[test]
    fn ids_in_hand_are_peeked_and_taken_lowest_first_across_blocks() {
        let mut held = Held::default();
        assert_eq!((held.available(), held.peek(0)), (0, None));
        held.add(1..4);
        held.add(1001..1003);
        assert_eq!(held.available(), 5);
        let peeked: Vec<Option<u64>> = (0..6).map(|index| held.peek(index)).collect();
        assert_eq!(peeked, [Some(1), Some(2), Some(3), Some(1001), Some(1002), None]);
        // Peeking takes nothing; taking is for good, and crosses blocks.
        held.take(2);
        assert_eq!((held.available(), held.peek(0)), (3, Some(3)));
        assert!(!held.holds(2) && held.holds(3) && held.holds(1002) && !held.holds(1003));
        held.take(2);
        assert_eq!((held.available(), held.peek(0), held.peek(1)), (1, Some(1002), None));
        held.take(1);
        assert_eq!((held.available(), held.peek(0)), (0, None));
        assert!(!held.holds(1002));
    }
}
