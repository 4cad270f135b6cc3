//! Compaction: rewriting the log as a snapshot of the live tokens once most
//! of its records are dead, without stopping appends.
//!
//! The snapshot's bytes are made and written on their own thread; appends
//! go on meanwhile and are also kept in memory. The writer thread's part
//! costs the same whatever the registry's size: it starts the thread and,
//! at the end, hands over what was appended meanwhile (`log.rs` says what
//! the snapshot is made from). When the compactor is done, the writer thread appends those to
//! the new file, syncs it, renames it over the log and syncs the directory.
//! A crash at any point leaves either the old log (the unfinished file is
//! removed at the next start) or the new one, each complete. This file knows
//! files and threads, not the record format (`log.rs` hands it the bytes).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::mpsc;
use std::thread::JoinHandle;

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
    pub fn wants(&self, records: u64, live: usize) -> bool {
        let dead = records.saturating_sub(live as u64);
        records >= self.min_records && dead as f64 > self.dead_ratio * records as f64
    }
}

/// A compaction in progress on its own thread.
pub(super) struct Compaction {
    /// Records appended since the snapshot was taken, to hand over.
    since_snapshot: Vec<u8>,
    since_snapshot_records: u64,
    /// The snapshot file, open, and how many records it holds.
    done: mpsc::Receiver<io::Result<(File, u64)>>,
    join: JoinHandle<()>,
}

impl Compaction {
    /// Starts writing, in `dir`, the snapshot `encode` makes on the
    /// compactor thread: its bytes and how many records they hold.
    pub(super) fn start(
        dir: &Path,
        encode: impl FnOnce() -> io::Result<(Vec<u8>, u64)> + Send + 'static,
    ) -> io::Result<Compaction> {
        let dir = dir.to_owned();
        let (done_tx, done) = mpsc::channel();
        let join = std::thread::Builder::new().name("latchkey-compactor".into()).spawn(move || {
            yield_to_commits();
            let written = encode().and_then(|(bytes, records)| {
                let began = std::time::Instant::now();
                let file = write_compacted(&dir, &bytes)?;
                tracing::debug!(
                    write_ms = began.elapsed().as_millis(),
                    bytes = bytes.len(),
                    "compactor: snapshot written"
                );
                Ok((file, records))
            });
            let _ = done_tx.send(written);
        })?;
        Ok(Compaction { since_snapshot: Vec::new(), since_snapshot_records: 0, done, join })
    }

    /// Keeps a batch appended to the log meanwhile, for the new file.
    pub(super) fn appended(&mut self, bytes: &[u8], records: u64) {
        self.since_snapshot.extend_from_slice(bytes);
        self.since_snapshot_records += records;
    }

    /// Whether the compactor has finished, and how.
    pub(super) fn poll(&self) -> Option<io::Result<(File, u64)>> {
        match self.done.try_recv() {
            Ok(result) => Some(result),
            Err(mpsc::TryRecvError::Empty) => None,
            Err(mpsc::TryRecvError::Disconnected) => Some(Err(io::Error::other("compaction thread died"))),
        }
    }

    /// Puts the finished snapshot `file` in place of the log at `log_path`:
    /// appends what was written meanwhile, syncs, renames, syncs the
    /// directory. `snapshot_records`: the records of the snapshot alone.
    /// Returns the new file and its record count.
    pub(super) fn install(
        self,
        (mut file, snapshot_records): (File, u64),
        dir: &Path,
        log_path: &Path,
    ) -> io::Result<(File, u64)> {
        // No join: the compactor has sent its result, so it is done with
        // the file. Waiting for its thread to be scheduled once more, only
        // to exit, put up to 100 ms in front of every waiting commit on a
        // busy machine (seen in `bench/commit-stall.sh`).
        drop(self.join);
        file.write_all(&self.since_snapshot)?;
        file.sync_data()?;
        fs::rename(dir.join(COMPACT_FILE), log_path)?;
        fail::fail_point!("compaction-dir-sync", |_| Err(io::Error::other(
            "injected by the compaction-dir-sync failpoint"
        )));
        fsync_dir(dir)?;
        Ok((file, snapshot_records + self.since_snapshot_records))
    }

    /// Waits for the compactor thread and removes its file: at shutdown, or
    /// when it failed (the old log is untouched and still complete).
    pub(super) fn abandon(self, dir: &Path) {
        let _ = self.join.join();
        let _ = fs::remove_file(dir.join(COMPACT_FILE));
    }
}

/// The compactor thread's nice value. Under CPU contention the writer
/// thread, the connection workers and anything else at nice 0 run first:
/// a commit no longer waits for a time slice behind the snapshot's encoding.
/// The compaction still moves on (the kernel's fair scheduler gives a nice
/// 19 thread about 1.5 % of a core that a nice 0 thread also wants), so
/// under sustained full load it takes longer while appends go on as usual.
pub(super) const COMPACTOR_NICE: i32 = 19;

/// Lowers the calling thread, and only it, to [`COMPACTOR_NICE`]. On Linux a
/// thread id names one thread for `setpriority`. Where that is refused, the
/// compaction runs at the usual priority and says so once at debug level.
fn yield_to_commits() {
    let thread = rustix::thread::gettid();
    if let Err(error) = rustix::process::setpriority_process(Some(thread), COMPACTOR_NICE) {
        tracing::debug!(%error, "compactor: could not lower its priority");
    }
}

/// Bytes the compactor writes between two syncs of its file. A commit's
/// `fdatasync` on the log may have to wait for other files' dirty pages (a
/// journaling file system writes them out with its commit), so the snapshot
/// never has more than this much unsynced at a time.
const COMPACT_SYNC_BYTES: usize = 1 << 20;

/// Writes a compacted file next to the log and syncs it; returns it open
/// for appends, positioned at its end.
pub(super) fn write_compacted(dir: &Path, bytes: &[u8]) -> io::Result<File> {
    let path = dir.join(COMPACT_FILE);
    let mut file = OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&path)?;
    for chunk in bytes.chunks(COMPACT_SYNC_BYTES) {
        file.write_all(chunk)?;
        file.sync_data()?;
    }
    file.sync_all()?;
    Ok(file)
}

/// Makes a rename or creation in `dir` durable.
pub(super) fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::{COMPACT_FILE, COMPACTOR_NICE, Compaction};
    use std::time::{Duration, Instant};

    /// The snapshot is made at the lowest priority, on the compactor's
    /// thread alone: the thread that started it keeps its own.
    #[test]
    fn the_snapshot_is_made_at_the_compactors_priority_and_nowhere_else() {
        let dir = tempfile::tempdir().unwrap();
        let own = rustix::process::getpriority_process(None).unwrap();
        let (seen_tx, seen) = std::sync::mpsc::channel();
        let compaction = Compaction::start(dir.path(), move || {
            let thread = rustix::thread::gettid();
            seen_tx.send(rustix::process::getpriority_process(Some(thread)).unwrap()).unwrap();
            Ok((Vec::new(), 0))
        })
        .unwrap();
        assert_eq!(seen.recv_timeout(Duration::from_secs(10)).unwrap(), COMPACTOR_NICE);
        let began = Instant::now();
        while compaction.poll().is_none() {
            assert!(began.elapsed() < Duration::from_secs(10), "the compactor did not finish");
            std::thread::sleep(Duration::from_millis(5));
        }
        compaction.abandon(dir.path());
        assert!(!dir.path().join(COMPACT_FILE).exists());
        assert_eq!(rustix::process::getpriority_process(None).unwrap(), own);
    }
}
