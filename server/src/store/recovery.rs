//! Recovery: opening the log, replaying it into a registry, and repairing
//! what a crash can leave (a torn tail) or what the operator chose to cut.
//!
//! Sequence numbers rise by exactly one from record to record, so a lost
//! record is detected even when every checksum holds. A compacted file starts
//! with a Snapshot record (seq = the last sequence number it covers) followed
//! by exactly `tokens` Create records with seq 0; appends continue at
//! `last_seq + 1`. The Snapshot also carries `next_id`, so token ids are never
//! reused, even for tokens deleted before a compaction.
//!
//! Format versions 3 and 4 (`log.rs` has the layout and why): a batch whose
//! checksum fails with no batch header that checks out after it is the torn
//! last append, cut whole at its start; the same followed by a later batch
//! header, or a batch whose checksum holds but whose records do not replay,
//! is corruption, reported with the batch's offset. Versions 1 and 2 have no
//! batches: a bad record with nothing valid after it is a torn tail, and a
//! bad record followed by any record that checks out is corruption.
//!
//! Recovery reads the whole file. Corruption refuses the start and names
//! the file and offset (`--truncate-log-at OFFSET` drops everything from
//! there on, knowingly).
//!
//! [`inspect`] runs the same replay for the log tools (`latchkey-server log
//! verify|dump|stats`): it changes no file, hands over each record replay
//! accepts, and says what a start would do about the first problem.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::compaction::{COMPACT_FILE, CompactionPolicy, fsync_dir, write_compacted};
use super::live::{LiveRecords, Registry, Tokens};
use super::log::{
    BATCH_HEADER_BYTES, BatchFault, BatchFrame, FORMAT_VERSION, FORMAT_VERSION_BATCHES, FORMAT_VERSIONS_READ,
    HEADER_BYTES, LOG_FILE, Record, RecordFault, StoredRecord, TokenLog, encode_snapshot, header,
    header_version, next_batch_header, next_valid_record, read_batch, read_record,
};
use crate::metrics;
use crate::registry::{Replica, TokenRecord};

/// Token ids and sequence numbers replay accepts: far beyond any a server
/// hands out, and far enough below `u64::MAX` that the writer's `id + 1`
/// and `seq + 1` can never overflow after a replay (a damaged or hostile
/// log is an error, never a panic later).
const TOKEN_ID_LIMIT: u64 = 1 << 62;
const SEQ_LIMIT: u64 = 1 << 62;

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("{what} {path}: {source}")]
    Io { what: &'static str, path: PathBuf, source: io::Error },
    #[error("{path} is not a Latchkey token log (bad header)")]
    NotALog { path: PathBuf },
    #[error("{path} has format version {version}; this build reads versions 1 to {FORMAT_VERSION}")]
    UnsupportedVersion { path: PathBuf, version: u32 },
    #[error(
        "{path} is corrupt at byte offset {offset}: {reason}. This is not a torn write (a crash \
         or power loss tears only the last append). Refusing to start. To discard everything from that offset on, restart \
         with --truncate-log-at {offset} (tokens recorded after it are lost)"
    )]
    Corrupt { path: PathBuf, offset: u64, reason: String },
    #[error(
        "{path} ends at byte offset {offset} inside its compacted snapshot, {missing} token records \
         short; refusing to start. To keep the tokens before that offset and lose the rest, restart \
         with --truncate-log-at {offset}"
    )]
    Incomplete { path: PathBuf, offset: u64, missing: u64 },
    #[error("--truncate-log-at {offset}: {reason}")]
    BadTruncate { offset: u64, reason: String },
}

fn io_error<'p>(what: &'static str, path: &'p Path) -> impl FnOnce(io::Error) -> LogError + 'p {
    move |source| LogError::Io { what, path: path.to_owned(), source }
}

/// What recovery found, for the start-up log line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    pub records: u64,
    pub tokens: usize,
    pub file_bytes: u64,
    /// `(offset, bytes)` of a torn tail that was cut off.
    pub truncated: Option<(u64, u64)>,
}

/// A recovered registry and the log, open for appends.
pub struct Recovered {
    pub state: Replica,
    pub next_id: u64,
    pub log: TokenLog,
    pub report: RecoveryReport,
}

/// Reads a whole token file (a log, or an export) into a registry without
/// touching any file: the same checks as at start, and a torn or damaged
/// file is an error here (an export is written whole).
pub fn read_file(path: &Path, bytes: &[u8]) -> Result<(Replica, u64), LogError> {
    let replay = in_bulk_or_exactly(bytes, |tokens| replay_complete(path, bytes, tokens))?;
    Ok((replay.tokens.finish(), replay.next_id))
}

/// Runs `replay` on a registry that adds names in bulk, and once more on
/// one that checks each create as it comes when the first found a name used
/// twice or refused the file: the second run names the record at fault and
/// leaves exactly the state the records before it make (see [`Registry`]).
fn in_bulk_or_exactly(
    bytes: &[u8],
    replay: impl Fn(Registry) -> Result<Replay<Registry>, LogError>,
) -> Result<Replay<Registry>, LogError> {
    match replay(Registry::for_file_of(bytes.len())) {
        Ok(done) if done.tokens.conflict().is_none() => Ok(done),
        Ok(done) => {
            let conflict = done.tokens.conflict().unwrap_or_default().to_owned();
            // Freed first: the second replay needs as much memory again.
            drop(done);
            tracing::debug!(conflict, "replaying again, checking each create's name as it comes");
            replay(Registry::exact_for_file_of(bytes.len()))
        }
        // Any refusal, checksum damage included: the first run may have
        // passed a name used twice before it, which the refusal must name
        // instead. A file that is refused anyway is read twice; with names
        // in no order the second read is the slow one (tens of seconds at
        // 10M tokens).
        Err(_) => replay(Registry::exact_for_file_of(bytes.len())),
    }
}

/// Replays a file that must check out to its last byte into `tokens`.
pub(super) fn replay_complete<T: Tokens>(
    path: &Path,
    bytes: &[u8],
    tokens: T,
) -> Result<Replay<T>, LogError> {
    if bytes.len() < HEADER_BYTES {
        return Err(LogError::NotALog { path: path.to_owned() });
    }
    let mut replay = Replay::start(path, bytes, tokens)?;
    replay.run(path, bytes, |_, _| {})?;
    if replay.valid_bytes != bytes.len() as u64 || replay.snapshot_missing > 0 {
        return Err(LogError::Incomplete {
            path: path.to_owned(),
            offset: replay.valid_bytes,
            missing: replay.snapshot_missing,
        });
    }
    Ok(replay)
}

/// What a start would find in a token file, read without changing anything:
/// the log tools' view (`latchkey-server log verify|dump|stats`).
#[derive(Debug)]
pub struct Inspection {
    /// The format version, when the header checks out.
    pub version: Option<u32>,
    /// The tokens left by the records before any damage.
    pub state: Replica,
    pub next_id: u64,
    /// Sequence number of the last record replayed.
    pub last_seq: u64,
    /// Records replayed, each one handed to the visitor.
    pub records: u64,
    /// Batches replayed, for a file that has them (format version 3 on).
    pub batches: Option<u64>,
    /// Where the last record replayed ends.
    pub valid_bytes: u64,
    pub file_bytes: u64,
    /// The first problem, if any, and what a start does about it.
    pub damage: Option<Damage>,
}

/// The first problem in a token file, as a start would meet it.
#[derive(Debug)]
pub enum Damage {
    /// A crash during an append (nothing valid follows): a start cuts the
    /// file at `offset` (or rewrites a torn header) and goes on.
    TornTail { offset: u64, reason: RecordFault },
    /// A start refuses, with this error: corruption followed by valid
    /// records, a short snapshot, not a token log, or a newer format.
    Refused(LogError),
}

impl Damage {
    /// The byte offset the problem starts at.
    pub fn offset(&self) -> u64 {
        match self {
            Damage::TornTail { offset, .. }
            | Damage::Refused(LogError::Corrupt { offset, .. } | LogError::Incomplete { offset, .. }) => {
                *offset
            }
            // The version field follows the 8-byte magic.
            Damage::Refused(LogError::UnsupportedVersion { .. }) => 8,
            Damage::Refused(_) => 0,
        }
    }
}

/// Replays `bytes` (the whole file at `path`) exactly as a start would,
/// with the same decoder and checks, but changes no file: `visit` gets the
/// offset of each record replay accepts, in file order, and the result says
/// where replay stopped and why.
pub fn inspect(path: &Path, bytes: &[u8], visit: impl FnMut(u64, &StoredRecord)) -> Inspection {
    let mut inspection = Inspection {
        version: None,
        state: Replica::new(),
        next_id: 1,
        last_seq: 0,
        records: 0,
        batches: None,
        valid_bytes: 0,
        file_bytes: bytes.len() as u64,
        damage: None,
    };
    if bytes.len() < HEADER_BYTES {
        // As `read_or_create` does: a start writes a new header over a torn
        // one (an empty file, silently).
        if !bytes.is_empty() {
            let reason = format!("incomplete header ({} of {HEADER_BYTES} bytes)", bytes.len());
            inspection.damage = Some(Damage::TornTail { offset: 0, reason });
        }
        return inspection;
    }
    // Each create checked as it comes: `visit` sees each record once, and a
    // name used twice is reported at its record.
    let mut replay = match Replay::start(path, bytes, Registry::exact_for_file_of(bytes.len())) {
        Ok(replay) => replay,
        Err(error) => {
            inspection.damage = Some(Damage::Refused(error));
            return inspection;
        }
    };
    inspection.damage = match replay.run(path, bytes, visit) {
        Err(error) => Some(Damage::Refused(error)),
        // `open` refuses a short snapshot before it would cut a torn tail.
        Ok(()) if replay.snapshot_missing > 0 => Some(Damage::Refused(LogError::Incomplete {
            path: path.to_owned(),
            offset: replay.valid_bytes,
            missing: replay.snapshot_missing,
        })),
        Ok(()) if replay.reframe => Some(Damage::TornTail {
            offset: HEADER_BYTES as u64,
            reason: "the snapshot's records all check out but its batch framing does not; a start \
                     rewrites the file"
                .into(),
        }),
        Ok(()) => {
            replay.tail_fault.take().map(|reason| Damage::TornTail { offset: replay.valid_bytes, reason })
        }
    };
    Inspection {
        version: Some(replay.version),
        state: replay.tokens.finish(),
        next_id: replay.next_id,
        last_seq: replay.seq,
        records: replay.records,
        batches: (replay.version >= FORMAT_VERSION_BATCHES).then_some(replay.batches),
        valid_bytes: replay.valid_bytes,
        ..inspection
    }
}

/// The file as recovery leaves it, ready for appends.
struct Reopened {
    file: File,
    records: u64,
    file_bytes: u64,
    truncated: Option<(u64, u64)>,
}

/// Opens (or creates) the log in `dir` and replays it.
///
/// `truncate_at` is the operator's `--truncate-log-at`: applied only when the
/// log does not replay as it is (corruption, or a short snapshot), so a flag
/// left in a service definition cannot cut a healthy log on a later start.
pub fn open(dir: &Path, policy: CompactionPolicy, truncate_at: Option<u64>) -> Result<Recovered, LogError> {
    let path = dir.join(LOG_FILE);
    let compact = dir.join(COMPACT_FILE);
    // A compaction that did not finish its rename never became the log.
    if compact.exists() {
        fs::remove_file(&compact).map_err(io_error("cannot remove stale", &compact))?;
        tracing::warn!(path = %compact.display(), "removed an unfinished compaction file");
    }
    let (mut file, mut bytes) = read_or_create(dir, &path)?;
    let (replay, repaired) = replay_or_repair(&path, &mut file, &mut bytes, truncate_at)?;
    if replay.snapshot_missing > 0 && !repaired {
        return Err(LogError::Incomplete {
            path,
            offset: replay.valid_bytes,
            missing: replay.snapshot_missing,
        });
    }
    let reopened = if replay.snapshot_missing > 0 || replay.reframe || replay.version < FORMAT_VERSION {
        rewrite_as_snapshot(dir, &path, &replay)?
    } else {
        cut_torn_tail(&path, file, bytes.len() as u64, &replay)?
    };
    let report = RecoveryReport {
        records: replay.records,
        tokens: replay.tokens.len(),
        file_bytes: reopened.file_bytes,
        truncated: reopened.truncated,
    };
    // A torn tail was cut at its offset: the file ends there now.
    let bytes = reopened.truncated.map_or(reopened.file_bytes, |(offset, _)| offset);
    metrics::log_file(bytes, reopened.records, replay.tokens.len() as u64);
    let log = TokenLog {
        path,
        dir: dir.to_owned(),
        file: reopened.file,
        seq: replay.seq,
        records: reopened.records,
        bytes,
        policy,
        scratch: Vec::with_capacity(64 * 1024),
        compaction: None,
        snapshot_of_prefix,
    };
    Ok(Recovered { state: replay.tokens.finish(), next_id: replay.next_id, log, report })
}

/// Opens the log and reads it whole; a new file (or one whose header was
/// torn, so nothing in it was ever acknowledged) gets a fresh header.
fn read_or_create(dir: &Path, path: &Path) -> Result<(File, Vec<u8>), LogError> {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(io_error("cannot open", path))?;
    let size = file.metadata().map_err(io_error("cannot stat", path))?.len();
    let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    file.read_to_end(&mut bytes).map_err(io_error("cannot read", path))?;
    if bytes.len() < HEADER_BYTES {
        if !bytes.is_empty() {
            tracing::warn!(path = %path.display(), bytes = bytes.len(), "log header was torn; rewriting it");
        }
        file.set_len(0).map_err(io_error("cannot truncate", path))?;
        file.seek(SeekFrom::Start(0)).map_err(io_error("cannot seek", path))?;
        file.write_all(&header()).map_err(io_error("cannot write", path))?;
        file.sync_all().map_err(io_error("cannot sync", path))?;
        fsync_dir(dir).map_err(io_error("cannot sync directory", dir))?;
        bytes = header().to_vec();
    }
    Ok((file, bytes))
}

/// Replays the file; if it does not replay as it is and the operator gave
/// `--truncate-log-at`, cuts it there and replays again. Also says whether
/// it cut.
fn replay_or_repair(
    path: &Path,
    file: &mut File,
    bytes: &mut Vec<u8>,
    truncate_at: Option<u64>,
) -> Result<(Replay<Registry>, bool), LogError> {
    let replayed = replay(path, bytes);
    let Some(offset) = truncate_at else { return Ok((replayed?, false)) };
    let damaged = match &replayed {
        Err(LogError::Corrupt { .. }) => true,
        Ok(replay) => replay.snapshot_missing > 0,
        Err(_) => false,
    };
    if !damaged {
        if replayed.is_ok() {
            tracing::warn!(
                offset,
                "the token log replays cleanly; --truncate-log-at {offset} ignored (remove it)"
            );
        }
        return Ok((replayed?, false));
    }
    let len = bytes.len() as u64;
    if offset < HEADER_BYTES as u64 || offset > len {
        return Err(LogError::BadTruncate {
            offset,
            reason: format!("must be between {HEADER_BYTES} and the file size {len}"),
        });
    }
    tracing::warn!(
        path = %path.display(),
        offset,
        bytes = len - offset,
        "--truncate-log-at: dropping {} bytes from offset {offset}, as asked",
        len - offset
    );
    bytes.truncate(offset as usize);
    file.set_len(offset).map_err(io_error("cannot truncate", path))?;
    file.sync_all().map_err(io_error("cannot sync", path))?;
    Ok((replay(path, bytes)?, true))
}

/// Keeps what the operator kept as a whole snapshot, or upgrades an older
/// format: either way, rewrites the state as a current file.
fn rewrite_as_snapshot(dir: &Path, path: &Path, replay: &Replay<Registry>) -> Result<Reopened, LogError> {
    let reason = if replay.snapshot_missing > 0 {
        "the shortened snapshot".to_owned()
    } else if replay.reframe {
        "a snapshot whose batch framing was damaged".to_owned()
    } else {
        format!("a version {} log as version {FORMAT_VERSION}", replay.version)
    };
    if let Some(fault) = &replay.tail_fault {
        tracing::warn!(
            path = %path.display(),
            offset = replay.valid_bytes,
            "torn tail: dropping what follows offset {} ({fault})",
            replay.valid_bytes
        );
    }
    let tokens: Vec<TokenRecord> = replay.tokens.state().records().collect();
    let snapshot = encode_snapshot(&tokens, replay.next_id, replay.seq, crate::clock::now_us());
    let mut file = write_compacted(dir, &snapshot).map_err(io_error("cannot write", path))?;
    fs::rename(dir.join(COMPACT_FILE), path).map_err(io_error("cannot rename over", path))?;
    fsync_dir(dir).map_err(io_error("cannot sync directory", dir))?;
    file.seek(SeekFrom::End(0)).map_err(io_error("cannot seek", path))?;
    tracing::warn!(tokens = tokens.len(), "rewrote {reason} as a whole snapshot");
    Ok(Reopened {
        file,
        records: tokens.len() as u64 + 1,
        file_bytes: snapshot.len() as u64,
        truncated: None,
    })
}

/// Cuts a torn tail (the last append was incomplete) and positions the file
/// for appends after the last valid record.
fn cut_torn_tail(
    path: &Path,
    mut file: File,
    file_bytes: u64,
    replay: &Replay<Registry>,
) -> Result<Reopened, LogError> {
    let mut truncated = None;
    if replay.valid_bytes < file_bytes {
        let dropped = file_bytes - replay.valid_bytes;
        tracing::warn!(
            path = %path.display(),
            offset = replay.valid_bytes,
            bytes = dropped,
            "torn tail: the last {} was incomplete (a crash or power loss during an append; nothing in it was acknowledged); dropping {dropped} bytes from offset {}: {}",
            if replay.version >= FORMAT_VERSION_BATCHES { "batch" } else { "record" },
            replay.valid_bytes,
            replay.tail_fault.as_deref().unwrap_or("bytes after the last record")
        );
        file.set_len(replay.valid_bytes).map_err(io_error("cannot truncate", path))?;
        file.sync_all().map_err(io_error("cannot sync", path))?;
        truncated = Some((replay.valid_bytes, dropped));
    }
    file.seek(SeekFrom::Start(replay.valid_bytes)).map_err(io_error("cannot seek", path))?;
    Ok(Reopened { file, records: replay.records, file_bytes, truncated })
}

/// A replay of a file: where it got to under the file's rules, and the
/// tokens it built (`live.rs`: a registry, or only what a snapshot needs).
pub(super) struct Replay<T> {
    /// The file's format version.
    pub version: u32,
    pub tokens: T,
    pub next_id: u64,
    pub seq: u64,
    pub records: u64,
    /// Batches replayed (format version 3; 0 for older files).
    pub batches: u64,
    pub valid_bytes: u64,
    /// Token records a snapshot announced that the file does not hold.
    pub snapshot_missing: u64,
    /// The snapshot is whole but a batch of it is not: rewrite the file.
    pub reframe: bool,
    /// Why the bytes after `valid_bytes` did not replay, when they are a
    /// torn tail (nothing valid follows them).
    pub tail_fault: Option<RecordFault>,
}

/// On the compactor thread: the compacted file (and its record count) of
/// the log at `path` as its first `file_bytes` bytes leave it, which must
/// replay whole to sequence number `last_seq` and `live` tokens, as the
/// writer's state stood when it asked. Anything else abandons the
/// compaction (the current log stays in use). The replay is a start's, with
/// every check on the file, but it keeps only what the snapshot needs
/// ([`LiveRecords`]), not a registry.
pub(super) fn snapshot_of_prefix(
    path: &Path,
    file_bytes: u64,
    live: usize,
    next_id: u64,
    last_seq: u64,
) -> io::Result<(Vec<u8>, u64)> {
    let began = std::time::Instant::now();
    let len = usize::try_from(file_bytes).map_err(io::Error::other)?;
    let bytes = read_prefix(path, len)?;
    let read_ms = began.elapsed().as_millis();
    let replay = replay_complete(path, &bytes, LiveRecords::of(&bytes, live)).map_err(io::Error::other)?;
    let replay_ms = began.elapsed().as_millis();
    if replay.seq != last_seq || replay.tokens.len() != live {
        return Err(io::Error::other(format!(
            "the log replays to seq {} and {} tokens, the writer stood at seq {last_seq} and {live}",
            replay.seq,
            replay.tokens.len()
        )));
    }
    let next_id = next_id.max(replay.next_id);
    let snapshot =
        replay.tokens.encode_snapshot(next_id, last_seq, crate::clock::now_us()).map_err(io::Error::other)?;
    let encode_ms = began.elapsed().as_millis();
    tracing::debug!(read_ms, replay_ms, encode_ms, "compactor: snapshot made");
    Ok(snapshot)
}

/// The first `len` bytes of the file at `path`, read a megabyte at a time
/// into memory that is filled as it is read: no zeroing pass over the
/// whole length first (100 MB at 1M tokens), and no single read syscall
/// that long.
fn read_prefix(path: &Path, len: usize) -> io::Result<Vec<u8>> {
    const PIECE: u64 = 1 << 20;
    let mut bytes = Vec::with_capacity(len);
    let mut file = File::open(path)?.take(len as u64);
    while bytes.len() < len {
        let read = (&mut file).take(PIECE).read_to_end(&mut bytes)?;
        if read == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the log is shorter than the writer said",
            ));
        }
    }
    Ok(bytes)
}

/// Replays a whole file (header included) into a registry.
pub(super) fn replay(path: &Path, bytes: &[u8]) -> Result<Replay<Registry>, LogError> {
    in_bulk_or_exactly(bytes, |tokens| {
        let mut replay = Replay::start(path, bytes, tokens)?;
        replay.run(path, bytes, |_, _| {})?;
        Ok(replay)
    })
}

impl<T: Tokens> Replay<T> {
    /// Checks the header of a file (at least [`HEADER_BYTES`] long) and
    /// starts a replay of it into `tokens` (empty).
    fn start(path: &Path, bytes: &[u8], tokens: T) -> Result<Replay<T>, LogError> {
        let Some(version) = header_version(bytes) else {
            return Err(LogError::NotALog { path: path.to_owned() });
        };
        if !FORMAT_VERSIONS_READ.contains(&version) {
            return Err(LogError::UnsupportedVersion { path: path.to_owned(), version });
        }
        Ok(Replay {
            version,
            tokens,
            next_id: 1,
            seq: 0,
            records: 0,
            batches: 0,
            valid_bytes: HEADER_BYTES as u64,
            snapshot_missing: 0,
            reframe: false,
            tail_fault: None,
        })
    }

    /// Applies every record after the header, calling `visit` with the
    /// offset of each one applied. On corruption, `self` holds the state
    /// the records before it left.
    fn run(
        &mut self,
        path: &Path,
        bytes: &[u8],
        visit: impl FnMut(u64, &StoredRecord),
    ) -> Result<(), LogError> {
        // Snapshot Create records still expected (seq 0).
        let mut snapshot_left = 0u64;
        if self.version >= FORMAT_VERSION_BATCHES {
            self.run_batches(path, bytes, &mut snapshot_left, visit)?;
        } else {
            self.run_records(path, bytes, &mut snapshot_left, visit)?;
        }
        // A compacted file is renamed into place only when whole, so a short
        // snapshot is damage, never a torn append.
        self.snapshot_missing = snapshot_left;
        self.tokens.settle();
        Ok(())
    }

    /// Format version 3: batch by batch. A batch is applied only when its
    /// checksum holds; one that does not is the torn last append when no
    /// batch header that checks out follows it (the caller cuts it whole),
    /// else an acknowledged batch that was damaged later.
    fn run_batches(
        &mut self,
        path: &Path,
        bytes: &[u8],
        snapshot_left: &mut u64,
        mut visit: impl FnMut(u64, &StoredRecord),
    ) -> Result<(), LogError> {
        let mut offset = HEADER_BYTES;
        while offset < bytes.len() {
            let corrupt =
                |reason: String| LogError::Corrupt { path: path.to_owned(), offset: offset as u64, reason };
            let frame = match read_batch(bytes, offset) {
                Ok(frame) => frame,
                Err(fault) if self.in_snapshot(bytes, offset, *snapshot_left) => {
                    return self.salvage_snapshot(path, bytes, offset, &fault, snapshot_left, &mut visit);
                }
                Err(fault) => {
                    // Appends are sequential: a later batch was begun only
                    // after this one was synced, so this one was acknowledged.
                    let search_from = fault.end().unwrap_or(offset + 1);
                    if let Some(next) = next_batch_header(bytes, search_from) {
                        return Err(corrupt(format!(
                            "{fault} (a later batch starts at offset {next}, so this one was synced)"
                        )));
                    }
                    self.tail_fault = Some(format!("{fault} (last batch, {} bytes)", bytes.len() - offset));
                    break;
                }
            };
            // Its checksum holds: it is what was written, so a record that
            // does not replay is damage (or a bug), never a torn write.
            self.apply_batch(bytes, &frame, snapshot_left, &mut visit).map_err(corrupt)?;
            self.batches += 1;
            offset = frame.end;
            self.valid_bytes = offset as u64;
        }
        Ok(())
    }

    /// Whether the damaged batch at `offset` belongs to a compacted file's
    /// snapshot: the snapshot has begun and is not complete, or the file's
    /// first batch starts with a Snapshot record that checks out. No append
    /// holds a Snapshot record, so a torn append is never taken for one.
    fn in_snapshot(&self, bytes: &[u8], offset: usize, snapshot_left: u64) -> bool {
        snapshot_left > 0
            || (self.records == 0
                && matches!(
                    read_record(bytes, offset + BATCH_HEADER_BYTES),
                    Ok(StoredRecord { record: Record::Snapshot { .. }, .. })
                ))
    }

    /// A damaged batch of a compacted file's snapshot. A compacted file is
    /// renamed into place only once whole and synced, so this is never a
    /// torn append: its records that check out (each has its own checksum)
    /// are kept up to the first that does not, so that the operator's
    /// `--truncate-log-at` at that record keeps the tokens before it and the
    /// snapshot's `next_id` (ids are never reused). Then, as in the formats
    /// without batches: a batch header that checks out after the damage
    /// refuses the start at that record; else the snapshot is short (the
    /// caller refuses, or rewrites what is left when the operator cut it).
    fn salvage_snapshot(
        &mut self,
        path: &Path,
        bytes: &[u8],
        offset: usize,
        fault: &BatchFault,
        snapshot_left: &mut u64,
        visit: &mut impl FnMut(u64, &StoredRecord),
    ) -> Result<(), LogError> {
        let mut at = offset + BATCH_HEADER_BYTES;
        let bad_record = loop {
            let stored = match read_record(bytes, at) {
                Ok(stored) => stored,
                Err(record_fault) => break record_fault,
            };
            if let Err(record_fault) = self.apply(snapshot_left, at, stored.seq, &stored.record) {
                break record_fault;
            }
            visit(at as u64, &stored);
            self.records += 1;
            at += stored.bytes;
            self.valid_bytes = at as u64;
            if *snapshot_left == 0 {
                break "the snapshot ends inside a damaged batch".into();
            }
        };
        let search_from = fault.end().unwrap_or(at + 1).max(at + 1);
        let later_batch = next_batch_header(bytes, search_from).is_some();
        if *snapshot_left == 0 && !later_batch && at == bytes.len() {
            // Every record the snapshot announced checks out and nothing
            // follows: only the batch's framing is damaged (or the operator
            // cut just after the snapshot). Nothing is lost; the caller
            // rewrites the file.
            self.reframe = true;
            return Ok(());
        }
        if *snapshot_left == 0 || later_batch {
            return Err(LogError::Corrupt {
                path: path.to_owned(),
                offset: at as u64,
                reason: format!(
                    "compacted snapshot damaged ({fault}; record at offset {at}: {bad_record}), and a \
                     compacted file is only ever renamed into place whole"
                ),
            });
        }
        self.tail_fault = Some(format!("{fault}; record at offset {at}: {bad_record}"));
        Ok(())
    }

    /// Replays every record of a batch whose checksum holds.
    fn apply_batch(
        &mut self,
        bytes: &[u8],
        frame: &BatchFrame,
        snapshot_left: &mut u64,
        visit: &mut impl FnMut(u64, &StoredRecord),
    ) -> Result<(), RecordFault> {
        let body = &bytes[..frame.end];
        let mut offset = frame.body;
        let mut count = 0u32;
        while offset < frame.end {
            let at = offset;
            let fault =
                |fault: RecordFault| format!("record at offset {at} in a batch that checks out: {fault}");
            if count == frame.records {
                return Err(fault(format!("more records than the {} the batch header says", frame.records)));
            }
            let stored = read_record(body, offset).map_err(fault)?;
            if count == 0 && stored.seq != frame.first_seq {
                let message = format!("seq {} where the batch header says {}", stored.seq, frame.first_seq);
                return Err(fault(message));
            }
            self.apply(snapshot_left, offset, stored.seq, &stored.record).map_err(fault)?;
            visit(offset as u64, &stored);
            offset += stored.bytes;
            self.records += 1;
            count += 1;
        }
        if count != frame.records {
            return Err(format!("batch holds {count} records, its header says {}", frame.records));
        }
        Ok(())
    }

    /// Format versions 1 and 2: record by record, no batches.
    fn run_records(
        &mut self,
        path: &Path,
        bytes: &[u8],
        snapshot_left: &mut u64,
        mut visit: impl FnMut(u64, &StoredRecord),
    ) -> Result<(), LogError> {
        let mut offset = HEADER_BYTES;
        while offset < bytes.len() {
            let fault = match read_record(bytes, offset) {
                Ok(stored) => match self.apply(snapshot_left, offset, stored.seq, &stored.record) {
                    Ok(()) => {
                        visit(offset as u64, &stored);
                        offset += stored.bytes;
                        self.records += 1;
                        self.valid_bytes = offset as u64;
                        continue;
                    }
                    Err(fault) => fault,
                },
                Err(fault) => fault,
            };
            // A bad record. Anything valid after it means damage, not a torn append.
            if let Some(next) = next_valid_record(bytes, offset + 1) {
                return Err(LogError::Corrupt {
                    path: path.to_owned(),
                    offset: offset as u64,
                    reason: format!("{fault} (a valid record follows at offset {next})"),
                });
            }
            // A torn tail; if it falls inside the snapshot, the caller decides.
            self.tail_fault = Some(fault);
            break;
        }
        Ok(())
    }

    /// Checks a decoded record, read at `offset`, against the replayed
    /// state and applies it.
    ///
    /// It borrows the record, so the log tools can still show it after; a
    /// create clones its token (two reference counts), nothing costlier.
    fn apply(
        &mut self,
        snapshot_left: &mut u64,
        offset: usize,
        seq: u64,
        record: &Record,
    ) -> Result<(), RecordFault> {
        // A file holds only what its own version defines: a newer type in
        // it was not written by any build of that version.
        let needs = record.format_version();
        if needs > self.version {
            return Err(format!("record type of format version {needs} in a version {} file", self.version));
        }
        if *snapshot_left > 0 {
            let Record::Create(token) = record else {
                return Err("snapshot ended before all its token records".into());
            };
            if seq != 0 {
                return Err(format!("snapshot token record has seq {seq}, expected 0"));
            }
            *snapshot_left -= 1;
            return self.create(token, true, offset);
        }
        if let Record::Snapshot { next_id, last_seq, tokens } = *record {
            if self.records != 0 {
                return Err("snapshot record in the middle of the log".into());
            }
            if next_id > TOKEN_ID_LIMIT || last_seq > SEQ_LIMIT {
                return Err(format!("snapshot next id {next_id} or last seq {last_seq} out of range"));
            }
            self.next_id = next_id;
            self.seq = last_seq;
            *snapshot_left = tokens;
            if seq != last_seq {
                return Err(format!("snapshot seq {seq} differs from its last_seq {last_seq}"));
            }
            return Ok(());
        }
        if self.seq >= SEQ_LIMIT || seq != self.seq + 1 {
            return Err(format!("sequence number {seq} where {} was expected", self.seq.saturating_add(1)));
        }
        self.seq = seq;
        self.apply_change(record, offset)
    }

    /// A record after the snapshot, read at `offset`: applied by id.
    fn apply_change(&mut self, record: &Record, offset: usize) -> Result<(), RecordFault> {
        match record {
            Record::Create(token) => self.create(token, false, offset),
            Record::Snapshot { .. } => Err("snapshot record in the middle of the log".into()),
            change => self.tokens.change(change),
        }
    }

    /// `from_snapshot`: snapshot tokens have ids below the snapshot's
    /// `next_id`; any other create must use a fresh id, since ids are never
    /// reused.
    fn create(&mut self, token: &TokenRecord, from_snapshot: bool, offset: usize) -> Result<(), RecordFault> {
        if self.tokens.contains(token.id) || (!from_snapshot && token.id < self.next_id) {
            return Err(format!("token id {} reused", token.id));
        }
        if token.id >= TOKEN_ID_LIMIT {
            return Err(format!("token id {} out of range", token.id));
        }
        self.tokens.create(token, offset)?;
        self.next_id = self.next_id.max(token.id + 1);
        Ok(())
    }
}

#[cfg(test)]
mod delete_replay_tests {
    use super::super::live::IdIndex;
    use super::*;

    fn id_index(pairs: &[(u64, crate::registry::TokenHash)]) -> IdIndex {
        let mut index = IdIndex::default();
        for &(id, hash) in pairs {
            index.insert(id, hash);
        }
        index
    }

    /// A replay whose id index names a token its registry does not hold:
    /// out of step, as only a bug could leave it (no record sequence does).
    fn out_of_step() -> Replay<Registry> {
        let mut tokens = Registry::exact_for_file_of(0);
        tokens.ids = id_index(&[(7, [7; 32])]);
        Replay {
            version: FORMAT_VERSION,
            tokens,
            next_id: 8,
            seq: 0,
            records: 0,
            batches: 0,
            valid_bytes: HEADER_BYTES as u64,
            snapshot_missing: 0,
            reframe: false,
            tail_fault: None,
        }
    }

    #[test]
    fn a_delete_that_does_not_fit_the_registry_is_a_fault_not_a_panic() {
        let mut replay = out_of_step();
        let fault = replay.apply_change(&Record::Delete { id: 7 }, HEADER_BYTES).unwrap_err();
        assert!(fault.contains("delete of unknown token id 7"), "{fault}");
        // Nothing changed: a fault that ends in a torn-tail cut keeps the
        // replay's state, so it must be the state before the record.
        assert_eq!(replay.tokens.ids.get(7), Some(&[7; 32]));
        assert!(replay.tokens.state().is_empty());
    }
}
