//! Compaction: rewriting the log as a snapshot of the live tokens once most
//! of its records are dead, without stopping appends.
//!
//! The snapshot is encoded and written on its own thread from a copy of the
//! writer's state; appends go on meanwhile and are also kept in memory. When
//! the compactor is done, the writer thread appends those to the new file,
//! syncs it, renames it over the log and syncs the directory. A crash at any
//! point leaves either the old log (the unfinished file is removed at the
//! next start) or the new one, each complete.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::mpsc;
use std::thread::JoinHandle;

use super::log::{HEADER_BYTES, Record, encode_record, header};
use super::log::{TokenLog, fsync_dir};
use crate::registry::{Replica, TokenRecord};

/// The compacted file while it is written, beside the log.
pub(super) const COMPACT_FILE: &str = "tokens.log.compact";

/// When to compact: the file holds at least `min_records` records and more
/// than `dead_ratio` of them no longer describe a live token.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CompactionPolicy {
    pub min_records: u64,
    pub dead_ratio: f64,
}

impl CompactionPolicy {
    /// Whether a file of `records` records, `live` of them live tokens, is
    /// due.
    fn wants(&self, records: u64, live: usize) -> bool {
        let dead = records.saturating_sub(live as u64);
        records >= self.min_records && dead as f64 > self.dead_ratio * records as f64
    }
}

/// A compaction in progress on its own thread.
pub(super) struct Compaction {
    /// Records appended since the snapshot was taken, to hand over.
    since_snapshot: Vec<u8>,
    since_snapshot_records: u64,
    snapshot_records: u64,
    done: mpsc::Receiver<io::Result<File>>,
    join: JoinHandle<()>,
}

impl Compaction {
    /// Keeps a batch appended to the log meanwhile, for the new file.
    pub(super) fn appended(&mut self, bytes: &[u8], records: u64) {
        self.since_snapshot.extend_from_slice(bytes);
        self.since_snapshot_records += records;
    }

    /// Waits for the compactor thread (at shutdown) and removes its file.
    pub(super) fn abandon(self, dir: &Path) {
        let _ = self.join.join();
        let _ = fs::remove_file(dir.join(COMPACT_FILE));
    }
}

/// Encodes a whole compacted file: header, Snapshot, one Create per token.
pub(super) fn encode_snapshot(
    tokens: &[TokenRecord],
    next_id: u64,
    last_seq: u64,
    commit_at_us: u64,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_BYTES + 32 + tokens.len() * 96);
    out.extend_from_slice(&header());
    let snapshot = Record::Snapshot { next_id, last_seq, tokens: tokens.len() as u64 };
    encode_record(&mut out, last_seq, commit_at_us, &snapshot);
    for token in tokens {
        encode_record(&mut out, 0, token.created_at_us, &Record::Create(token.clone()));
    }
    out
}

/// Writes a compacted file next to the log and syncs it; returns it open
/// for appends, positioned at its end.
pub(super) fn write_compacted(dir: &Path, bytes: &[u8]) -> io::Result<File> {
    let path = dir.join(COMPACT_FILE);
    let mut file = OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&path)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    Ok(file)
}

impl TokenLog {
    /// Starts a compaction if none runs and the file is due for one.
    pub(super) fn maybe_compact(&mut self, state: &Replica, next_id: u64) {
        if self.compaction.is_none() && self.policy.wants(self.records, state.len()) {
            self.start_compaction(state, next_id);
        }
    }

    fn start_compaction(&mut self, state: &Replica, next_id: u64) {
        let tokens: Vec<TokenRecord> = state.records().collect();
        let snapshot_records = tokens.len() as u64 + 1;
        let (last_seq, dir) = (self.seq, self.dir.clone());
        let (done_tx, done) = mpsc::channel();
        tracing::info!(records = self.records, live = tokens.len(), "compacting the token log");
        let join = std::thread::Builder::new().name("latchkey-compactor".into()).spawn(move || {
            let bytes = encode_snapshot(&tokens, next_id, last_seq, crate::clock::now_us());
            drop(tokens);
            let _ = done_tx.send(write_compacted(&dir, &bytes));
        });
        match join {
            Ok(join) => {
                self.compaction = Some(Compaction {
                    since_snapshot: Vec::new(),
                    since_snapshot_records: 0,
                    snapshot_records,
                    done,
                    join,
                });
            }
            Err(error) => tracing::warn!(%error, "cannot start compaction thread; will retry"),
        }
    }

    /// Called on the writer thread: if the compactor is done, append what was
    /// written meanwhile to the new file, sync it, and rename it into place.
    pub(super) fn finish_compaction(&mut self) -> io::Result<()> {
        let Some(compaction) = &self.compaction else { return Ok(()) };
        let result = match compaction.done.try_recv() {
            Ok(result) => result,
            Err(mpsc::TryRecvError::Empty) => return Ok(()),
            Err(mpsc::TryRecvError::Disconnected) => Err(io::Error::other("compaction thread died")),
        };
        let compaction = self.compaction.take().expect("checked above");
        let _ = compaction.join.join();
        let mut file = match result {
            Ok(file) => file,
            Err(error) => {
                // The old log is untouched and still complete: keep using it.
                tracing::warn!(%error, "compaction failed; the current log stays in use");
                let _ = fs::remove_file(self.dir.join(COMPACT_FILE));
                return Ok(());
            }
        };
        file.write_all(&compaction.since_snapshot)?;
        file.sync_data()?;
        fs::rename(self.dir.join(COMPACT_FILE), &self.path)?;
        fsync_dir(&self.dir)?;
        let old_records = self.records;
        self.file = file;
        self.records = compaction.snapshot_records + compaction.since_snapshot_records;
        tracing::info!(before = old_records, after = self.records, "token log compacted");
        Ok(())
    }
}
