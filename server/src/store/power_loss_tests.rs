//! Power loss inside a batch, on a simulated disk.
//!
//! An append is one `write` and one `fdatasync`. Until the sync returns,
//! nobody has been answered, and the kernel may write the batch's pages back
//! in any order: after a power loss, any subset of them may be on disk, the
//! file may end anywhere after the last synced byte, and the last sector
//! written may hold only a prefix. A page that did not reach the disk reads
//! as zeros (a hole) or as whatever the device held there before.
//!
//! Each case writes a random history through the real [`TokenLog`] (every
//! append synced: acknowledged), then one more batch, and lets the power
//! fail during that batch's sync. A start must then always succeed, keep
//! every acknowledged record, and apply the last batch whole (only when all
//! its bytes made it) or not at all.

use std::fs;
use std::num::NonZeroU64;

use proptest::prelude::*;

use super::Journal;
use super::compaction::CompactionPolicy;
use super::log::LOG_FILE;
use super::recovery::open;
use crate::registry::{Mutation, Replica, TokenRecord};

const PAGE_BYTES: usize = 4096;

fn policy_never() -> CompactionPolicy {
    CompactionPolicy { min_records: u64::MAX, dead_ratio: 1.0 }
}

/// A small deterministic generator (xorshift64*), so a case is its seed.
struct Draw(u64);

impl Draw {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// A history of valid batches: creates (with names of varied lengths, so
/// records straddle page boundaries at varied places), deletes and revokes
/// of live tokens.
struct History {
    draw: Draw,
    state: Replica,
    live: Vec<(u64, [u8; 32])>,
    next_id: u64,
}

impl History {
    fn new(seed: u64) -> History {
        History { draw: Draw(seed | 1), state: Replica::new(), live: Vec::new(), next_id: 1 }
    }

    /// `creates_only`: no mutation names an earlier token (for a batch
    /// after a recovery that may have cut the one before).
    fn batch(&mut self, len: usize, creates_only: bool) -> Vec<Mutation> {
        let mut batch = Vec::with_capacity(len);
        for _ in 0..len {
            let roll = self.draw.below(10);
            let mutation = if roll < 7 || creates_only || self.live.is_empty() {
                let id = self.next_id;
                self.next_id += 1;
                let mut hash = [0u8; 32];
                hash[..8].copy_from_slice(&id.to_le_bytes());
                hash[8..16].copy_from_slice(&self.draw.next().to_le_bytes());
                let name_len = 1 + self.draw.below(60);
                let user_id = self.draw.below(4) as u32;
                self.live.push((id, hash));
                Mutation::Create(TokenRecord {
                    id,
                    user_id,
                    name: format!("{id:0>name_len$}").into(),
                    hash,
                    created_at_us: 1_700_000_000_000_000 + id,
                    expiry_at_us: NonZeroU64::new(self.draw.next() % 2 * 1_900_000_000_000_000),
                    revoked_at_us: None,
                    extras: None,
                    last_used: None,
                })
            } else {
                let index = self.draw.below(self.live.len());
                let (id, hash) = self.live[index];
                let revoked = self.state.by_hash(&hash).is_some_and(|entry| entry.revoked_at_us.is_some());
                if roll < 9 || revoked {
                    self.live.swap_remove(index);
                    Mutation::Delete { id, hash }
                } else {
                    Mutation::Revoke { id, hash, at_us: NonZeroU64::new(1_800_000_000_000_000 + id).unwrap() }
                }
            };
            self.state.apply(&mutation);
            batch.push(mutation);
        }
        batch
    }
}

/// What happened to each page of the batch being synced when power failed.
#[derive(Debug, Clone, Copy)]
enum Page {
    Written,
    Hole,
    Stale,
}

fn page() -> impl Strategy<Value = Page> {
    prop_oneof![2 => Just(Page::Written), 1 => Just(Page::Hole), 1 => Just(Page::Stale)]
}

/// How the power loss left the last batch's bytes.
#[derive(Debug, Clone)]
struct Crash {
    /// Fates of the pages the batch touches, cycled.
    pages: Vec<Page>,
    /// How much of the batch's bytes the file length covers (0..=1).
    length: f64,
    /// Bytes of the last page of the file that reached it (a torn sector).
    last_page_prefix: usize,
    /// The sync completed: every byte is there (not yet answered).
    whole: bool,
}

fn crash() -> impl Strategy<Value = Crash> {
    (prop::collection::vec(page(), 1..12), 0.0..=1.0f64, 0..=PAGE_BYTES, prop::bool::weighted(0.1))
        .prop_map(|(pages, length, last_page_prefix, whole)| Crash { pages, length, last_page_prefix, whole })
}

/// The file as the simulated disk holds it after the power loss: `synced`
/// bytes are safe; of `full[synced..]`, what `crash` let through.
fn crashed(full: &[u8], synced: usize, crash: &Crash, stale_seed: u64) -> Vec<u8> {
    if crash.whole {
        return full.to_vec();
    }
    let mut stale = Draw(stale_seed | 1);
    let mut bytes = full.to_vec();
    let first_page = synced / PAGE_BYTES;
    for (index, start) in (first_page * PAGE_BYTES..full.len()).step_by(PAGE_BYTES).enumerate() {
        let range = start.max(synced)..(start + PAGE_BYTES).min(full.len());
        match crash.pages[index % crash.pages.len()] {
            Page::Written => {}
            Page::Hole => bytes[range].fill(0),
            Page::Stale => bytes[range].iter_mut().for_each(|byte| *byte = stale.next() as u8),
        }
    }
    let len = synced + ((full.len() - synced) as f64 * crash.length) as usize;
    bytes.truncate(len.min(full.len()));
    // The last page's sector writes stopped part way.
    if len > synced {
        let last_page = (len - 1) / PAGE_BYTES * PAGE_BYTES;
        let torn_from = (last_page + crash.last_page_prefix).max(synced);
        if torn_from < len {
            bytes[torn_from..].fill(0);
        }
    }
    bytes
}

/// A scratch directory in memory where there is one: the disk here is
/// simulated, so real syncs would only make each case slower.
fn scratch_dir() -> tempfile::TempDir {
    let shm = std::path::Path::new("/dev/shm");
    if shm.is_dir()
        && let Ok(dir) = tempfile::tempdir_in(shm)
    {
        return dir;
    }
    tempfile::tempdir().unwrap()
}

fn cases() -> u32 {
    std::env::var("LATCHKEY_POWER_LOSS_CASES").ok().and_then(|cases| cases.parse().ok()).unwrap_or(2000)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn power_loss_inside_the_last_batch_never_refuses_a_start_loses_an_acknowledged_record_or_applies_a_cut_one(
        seed in any::<u64>(),
        prior in prop::collection::vec(1..120usize, 1..4),
        last in 1..400usize,
        crash in crash(),
    ) {
        let dir = scratch_dir();
        let path = dir.path().join(LOG_FILE);
        let mut history = History::new(seed);
        let mut recovered = open(dir.path(), policy_never(), None).unwrap();
        for (index, len) in prior.iter().enumerate() {
            recovered.log.append(&history.batch(*len, false), 1_700_000_000_000_000 + index as u64).unwrap();
        }
        // Acknowledged: everything up to here.
        let acknowledged = history.state.clone();
        let next_id = history.next_id;
        let synced = fs::metadata(&path).unwrap().len() as usize;
        recovered.log.append(&history.batch(last, false), 1_800_000_000_000_000).unwrap();
        drop(recovered);
        let full = fs::read(&path).unwrap();

        let on_disk = crashed(&full, synced, &crash, seed.rotate_left(17));
        fs::write(&path, &on_disk).unwrap();
        let recovered = match open(dir.path(), policy_never(), None) {
            Ok(recovered) => recovered,
            Err(error) => {
                return Err(TestCaseError::fail(format!("a power loss in an unacknowledged batch refused the start: {error}")));
            }
        };
        if on_disk == full {
            prop_assert!(recovered.state == history.state, "the whole last batch is on disk but was not applied");
            prop_assert_eq!(recovered.report.truncated, None);
        } else {
            prop_assert!(recovered.state == acknowledged, "not exactly the acknowledged state (a record lost, or one of the cut batch applied)");
            prop_assert!(recovered.next_id >= next_id);
            let dropped = (on_disk.len() - synced) as u64;
            prop_assert_eq!(recovered.report.truncated, (dropped > 0).then_some((synced as u64, dropped)));
            prop_assert_eq!(fs::metadata(&path).unwrap().len(), synced as u64);
        }
        // Appends go on after the cut, and the next start reads them.
        let mut log = recovered.log;
        let mut expected = recovered.state;
        let after = history.batch(3, true);
        for mutation in &after {
            expected.apply(mutation);
        }
        log.append(&after, 1_900_000_000_000_000).unwrap();
        drop(log);
        let reopened = open(dir.path(), policy_never(), None).unwrap();
        prop_assert!(reopened.state == expected, "the append after recovery did not replay");
        prop_assert_eq!(reopened.report.truncated, None);
    }
}

/// The case of the issue, fixed: the last batch spans several pages, the
/// first of them never reached the disk (zeros) while later ones did. The
/// records on those later pages check out one by one, yet none of them was
/// acknowledged: the start cuts the batch and goes on.
#[test]
fn a_later_page_of_the_last_batch_on_disk_without_an_earlier_one_is_cut_not_refused() {
    let dir = scratch_dir();
    let path = dir.path().join(LOG_FILE);
    let mut history = History::new(7);
    let mut recovered = open(dir.path(), policy_never(), None).unwrap();
    recovered.log.append(&history.batch(5, true), 1).unwrap();
    let acknowledged = history.state.clone();
    let synced = fs::metadata(&path).unwrap().len() as usize;
    recovered.log.append(&history.batch(300, true), 2).unwrap();
    drop(recovered);
    let mut bytes = fs::read(&path).unwrap();
    let lost_end = (synced / PAGE_BYTES + 2) * PAGE_BYTES;
    assert!(bytes.len() > lost_end + PAGE_BYTES, "the batch must reach past the lost pages");
    bytes[synced..lost_end].fill(0);
    fs::write(&path, &bytes).unwrap();
    let recovered = match open(dir.path(), policy_never(), None) {
        Ok(recovered) => recovered,
        Err(error) => panic!("refused a start over an unacknowledged batch: {error}"),
    };
    assert_eq!(recovered.state, acknowledged);
    assert_eq!(recovered.report.truncated, Some((synced as u64, (bytes.len() - synced) as u64)));
}
