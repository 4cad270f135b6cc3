//! The token log: an append-only file that is the source of truth.
//!
//! Layout (all integers little-endian):
//!
//! ```text
//! header  := magic "LKTOKLOG" (8) | format version u32 | crc32c(magic ‖ version) u32
//! record  := marker u32 = 0x1BC5_A7E3 | length u32 | crc32c(length ‖ payload) u32 | payload
//! payload := seq u64 | commit_at_us u64 | type u8 | body            (length = payload bytes)
//! body    := Create   (1): id u64 | user_id u32 | name u8-len | hash [32] | created_at_us u64 | expiry_at_us u64 (0 = never)
//!          | Delete   (2): id u64
//!          | Snapshot (3): next_id u64 | last_seq u64 | tokens u64
//!          | Token    (4): Create body | revoked_at_us u64 | last_used_at_us u64 | last_used_peer
//!                          | description u16-len | scopes u8-count × u8-len | networks u8-count × net
//!          | Revoke   (5): id u64 | revoked_at_us u64
//!          | Update   (6): id u64 | name u8-len | description u16-len
//!          | Rotate   (7): id u64 | hash [32] | expiry_at_us u64
//!          | Touch    (8): id u64 | last_used_at_us u64 | last_used_peer
//! peer    := family u8 (0 none | 4 | 6) | address [4 or 16] | port u16   (family 0: nothing follows)
//! net     := family u8 (4 | 6) | address [4 or 16] | prefix u8
//! ```
//!
//! Format history: version 1 had record types 1–3 only. Version 2 added
//! types 4–8 (token lifecycle: descriptions, scopes, networks, revoke,
//! rotate, rename, last use). A Create (1) is still written for a token with
//! none of the new fields, a Token (4) otherwise. A version 1 file is read
//! as it is and then rewritten once, at start, as a version 2 snapshot
//! (written beside it, synced, renamed over it), so a file never mixes
//! versions.
//!
//! Sequence numbers rise by exactly one from record to record, so a lost
//! record is detected even when every checksum holds. A compacted file starts
//! with a Snapshot record (seq = the last sequence number it covers) followed
//! by exactly `tokens` Create records with seq 0; appends continue at
//! `last_seq + 1`. The Snapshot also carries `next_id`, so token ids are never
//! reused, even for tokens deleted before a compaction.
//!
//! Recovery reads the whole file. A bad record with nothing valid after it is
//! a torn tail (a crash mid-append): it is cut off with a warning naming the
//! bytes dropped. A bad record followed by any record that checks out is
//! corruption: the server refuses to start and names the file and offset
//! (`--truncate-log-at OFFSET` drops everything from there on, knowingly).
//!
//! Only keyed hashes are stored, never a raw token or a password.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::num::NonZeroU64;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::JoinHandle;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use ipnet::IpNet;

use crate::registry::{LastUsed, Mutation, Replica, TokenExtras, TokenHash, TokenRecord};
use crate::writer::Journal;

pub const LOG_FILE: &str = "tokens.log";
const COMPACT_FILE: &str = "tokens.log.compact";
const MAGIC: &[u8; 8] = b"LKTOKLOG";
/// The format version this build writes.
pub const FORMAT_VERSION: u32 = 2;
/// Versions this build reads (older ones are upgraded at start).
const FORMAT_VERSIONS_READ: std::ops::RangeInclusive<u32> = 1..=FORMAT_VERSION;
pub const HEADER_BYTES: usize = 16;
const MARKER: u32 = 0x1BC5_A7E3;
/// Marker, length and checksum.
const RECORD_HEADER_BYTES: usize = 12;
/// seq, commit_at_us and type.
const PAYLOAD_PREFIX_BYTES: usize = 17;
/// Largest payload a record may have. The largest real one is a Token with
/// every field at its server limit (about 9 KiB: 32 scopes of up to 255
/// bytes); anything longer is damage.
const RECORD_PAYLOAD_BYTES_MAX: usize = 16 * 1024;

const TYPE_CREATE: u8 = 1;
const TYPE_DELETE: u8 = 2;
const TYPE_SNAPSHOT: u8 = 3;
const TYPE_TOKEN: u8 = 4;
const TYPE_REVOKE: u8 = 5;
const TYPE_UPDATE: u8 = 6;
const TYPE_ROTATE: u8 = 7;
const TYPE_TOUCH: u8 = 8;

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("{what} {path}: {source}")]
    Io { what: &'static str, path: PathBuf, source: io::Error },
    #[error("{path} is not a Latchkey token log (bad header)")]
    NotALog { path: PathBuf },
    #[error("{path} has format version {version}; this build reads versions 1 to {FORMAT_VERSION}")]
    UnsupportedVersion { path: PathBuf, version: u32 },
    #[error(
        "{path} is corrupt at byte offset {offset}: {reason}; valid records follow it, so this is \
         not a torn write. Refusing to start. To discard everything from that offset on, restart \
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

/// When to compact: the file holds at least `min_records` records and more
/// than `dead_ratio` of them no longer describe a live token.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CompactionPolicy {
    pub min_records: u64,
    pub dead_ratio: f64,
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

/// A decoded record.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Record {
    /// Types 1 and 4.
    Create(TokenRecord),
    Delete {
        id: u64,
    },
    Snapshot {
        next_id: u64,
        last_seq: u64,
        tokens: u64,
    },
    Revoke {
        id: u64,
        at_us: NonZeroU64,
    },
    Update {
        id: u64,
        name: Arc<str>,
        description: Box<str>,
    },
    Rotate {
        id: u64,
        hash: TokenHash,
        expiry_at_us: Option<NonZeroU64>,
    },
    Touch {
        id: u64,
        used: LastUsed,
    },
}

/// The open log, appended to by the writer thread only.
pub struct TokenLog {
    path: PathBuf,
    dir: PathBuf,
    file: File,
    /// Sequence number of the last record written.
    seq: u64,
    /// Records in the current file (a measure of its size for compaction).
    records: u64,
    policy: CompactionPolicy,
    scratch: Vec<u8>,
    compaction: Option<Compaction>,
}

/// A compaction in progress on its own thread.
struct Compaction {
    /// Records appended since the snapshot was taken, to hand over.
    since_snapshot: Vec<u8>,
    since_snapshot_records: u64,
    snapshot_records: u64,
    done: mpsc::Receiver<io::Result<File>>,
    join: JoinHandle<()>,
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
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(io_error("cannot open", &path))?;
    let size = file.metadata().map_err(io_error("cannot stat", &path))?.len();
    let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    file.read_to_end(&mut bytes).map_err(io_error("cannot read", &path))?;
    if bytes.len() < HEADER_BYTES {
        // New, or a crash while writing the header: nothing was ever
        // acknowledged from this file, so (re)write the header.
        if !bytes.is_empty() {
            tracing::warn!(path = %path.display(), bytes = bytes.len(), "log header was torn; rewriting it");
        }
        file.set_len(0).map_err(io_error("cannot truncate", &path))?;
        file.seek(SeekFrom::Start(0)).map_err(io_error("cannot seek", &path))?;
        file.write_all(&header()).map_err(io_error("cannot write", &path))?;
        file.sync_all().map_err(io_error("cannot sync", &path))?;
        fsync_dir(dir).map_err(io_error("cannot sync directory", dir))?;
        bytes = header().to_vec();
    }
    let mut replayed = replay(&path, &bytes);
    let mut repaired = false;
    if let Some(offset) = truncate_at {
        let damaged = match &replayed {
            Err(LogError::Corrupt { .. }) => true,
            Ok(replay) => replay.snapshot_missing > 0,
            Err(_) => false,
        };
        if damaged {
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
            file.set_len(offset).map_err(io_error("cannot truncate", &path))?;
            file.sync_all().map_err(io_error("cannot sync", &path))?;
            replayed = replay(&path, &bytes);
            repaired = true;
        } else if replayed.is_ok() {
            tracing::warn!(
                offset,
                "the token log replays cleanly; --truncate-log-at {offset} ignored (remove it)"
            );
        }
    }
    let replay = replayed?;
    if replay.snapshot_missing > 0 && !repaired {
        return Err(LogError::Incomplete {
            path,
            offset: replay.valid_bytes,
            missing: replay.snapshot_missing,
        });
    }
    if replay.snapshot_missing > 0 || replay.version < FORMAT_VERSION {
        // Keep what the operator kept as a whole snapshot, or upgrade an
        // older format: either way, rewrite the state as a current file.
        let reason = if replay.snapshot_missing > 0 {
            "the shortened snapshot"
        } else {
            "a version 1 log as version 2"
        };
        let tokens: Vec<TokenRecord> = replay.state.records().collect();
        let snapshot = TokenLog::encode_snapshot(&tokens, replay.next_id, replay.seq, crate::clock::now_us());
        let mut compacted = write_compacted(dir, &snapshot).map_err(io_error("cannot write", &path))?;
        fs::rename(dir.join(COMPACT_FILE), &path).map_err(io_error("cannot rename over", &path))?;
        fsync_dir(dir).map_err(io_error("cannot sync directory", dir))?;
        compacted.seek(SeekFrom::End(0)).map_err(io_error("cannot seek", &path))?;
        tracing::warn!(tokens = tokens.len(), "rewrote {reason} as a whole snapshot");
        let log = TokenLog {
            path,
            dir: dir.to_owned(),
            file: compacted,
            seq: replay.seq,
            records: tokens.len() as u64 + 1,
            policy,
            scratch: Vec::with_capacity(64 * 1024),
            compaction: None,
        };
        let report = RecoveryReport {
            records: replay.records,
            tokens: replay.state.len(),
            file_bytes: snapshot.len() as u64,
            truncated: None,
        };
        return Ok(Recovered { state: replay.state, next_id: replay.next_id, log, report });
    }
    let mut report = RecoveryReport {
        records: replay.records,
        tokens: replay.state.len(),
        file_bytes: bytes.len() as u64,
        truncated: None,
    };
    if replay.valid_bytes < bytes.len() as u64 {
        let dropped = bytes.len() as u64 - replay.valid_bytes;
        tracing::warn!(
            path = %path.display(),
            offset = replay.valid_bytes,
            bytes = dropped,
            "torn tail: the last record was incomplete (crash during an append); dropping {dropped} bytes from offset {}",
            replay.valid_bytes
        );
        file.set_len(replay.valid_bytes).map_err(io_error("cannot truncate", &path))?;
        file.sync_all().map_err(io_error("cannot sync", &path))?;
        report.truncated = Some((replay.valid_bytes, dropped));
    }
    file.seek(SeekFrom::Start(replay.valid_bytes)).map_err(io_error("cannot seek", &path))?;
    let log = TokenLog {
        path,
        dir: dir.to_owned(),
        file,
        seq: replay.seq,
        records: replay.records,
        policy,
        scratch: Vec::with_capacity(64 * 1024),
        compaction: None,
    };
    Ok(Recovered { state: replay.state, next_id: replay.next_id, log, report })
}

fn header() -> [u8; HEADER_BYTES] {
    let mut header = [0u8; HEADER_BYTES];
    header[..8].copy_from_slice(MAGIC);
    header[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    let crc = crc32c::crc32c(&header[..12]);
    header[12..].copy_from_slice(&crc.to_le_bytes());
    header
}

struct Replay {
    /// The file's format version.
    version: u32,
    state: Replica,
    /// Live token ids → hashes, for resolving Delete records (which carry
    /// the id only). Lives only during replay; replicas keep no id index.
    ids: HashMap<u64, TokenHash>,
    next_id: u64,
    seq: u64,
    records: u64,
    valid_bytes: u64,
    /// Token records a snapshot announced that the file does not hold.
    snapshot_missing: u64,
}

/// Why one record does not check out.
type RecordFault = String;

fn replay(path: &Path, bytes: &[u8]) -> Result<Replay, LogError> {
    if &bytes[..8] != MAGIC || crc32c::crc32c(&bytes[..12]) != read_u32(bytes, 12) {
        return Err(LogError::NotALog { path: path.to_owned() });
    }
    let version = read_u32(bytes, 8);
    if !FORMAT_VERSIONS_READ.contains(&version) {
        return Err(LogError::UnsupportedVersion { path: path.to_owned(), version });
    }
    let mut replay = Replay {
        version,
        state: Replica::new(),
        // A create record is about 100 bytes: size the id index once.
        ids: HashMap::with_capacity(bytes.len() / 128),
        next_id: 1,
        seq: 0,
        records: 0,
        valid_bytes: HEADER_BYTES as u64,
        snapshot_missing: 0,
    };
    // Snapshot Create records still expected (seq 0).
    let mut snapshot_left = 0u64;
    let mut offset = HEADER_BYTES;
    while offset < bytes.len() {
        let fault = match parse_record(bytes, offset) {
            Ok((_, record, _)) if version == 1 && record.needs_version_2() => {
                format!("record type of format version 2 in a version {version} file")
            }
            Ok((seq, record, used)) => match apply(&mut replay, &mut snapshot_left, seq, record) {
                Ok(()) => {
                    offset += used;
                    replay.records += 1;
                    replay.valid_bytes = offset as u64;
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
        // A torn tail; if it falls inside the snapshot, `open` decides.
        break;
    }
    // A compacted file is renamed into place only when whole, so a short
    // snapshot is damage, never a torn append.
    replay.snapshot_missing = snapshot_left;
    Ok(replay)
}

/// Checks a decoded record against the replayed state and applies it.
fn apply(replay: &mut Replay, snapshot_left: &mut u64, seq: u64, record: Record) -> Result<(), RecordFault> {
    if *snapshot_left > 0 {
        let Record::Create(token) = record else {
            return Err("snapshot ended before all its token records".into());
        };
        if seq != 0 {
            return Err(format!("snapshot token record has seq {seq}, expected 0"));
        }
        *snapshot_left -= 1;
        return create(replay, token, true);
    }
    match record {
        Record::Snapshot { next_id, last_seq, tokens } => {
            if replay.records != 0 {
                return Err("snapshot record in the middle of the log".into());
            }
            replay.next_id = next_id;
            replay.seq = last_seq;
            *snapshot_left = tokens;
            if seq != last_seq {
                return Err(format!("snapshot seq {seq} differs from its last_seq {last_seq}"));
            }
            Ok(())
        }
        record => {
            if seq != replay.seq + 1 {
                return Err(format!("sequence number {seq} where {} was expected", replay.seq + 1));
            }
            replay.seq = seq;
            match record {
                Record::Create(token) => create(replay, token, false),
                Record::Delete { id } => {
                    let Some(hash) = replay.ids.remove(&id) else {
                        return Err(format!("delete of unknown token id {id}"));
                    };
                    replay.state.apply(&Mutation::Delete { id, hash });
                    Ok(())
                }
                Record::Revoke { id, at_us } => {
                    let hash = replay.hash_of(id, "revoke")?;
                    replay.state.try_apply(&Mutation::Revoke { id, hash, at_us })
                }
                Record::Update { id, name, description } => {
                    let hash = replay.hash_of(id, "update")?;
                    let entry = replay.state.by_hash(&hash).ok_or("id index out of step")?;
                    let mut extras = entry.extras.as_deref().cloned().unwrap_or_default();
                    extras.description = description;
                    let extras = extras.shared();
                    replay.state.try_apply(&Mutation::Update { id, hash, name, extras })
                }
                Record::Rotate { id, hash: new_hash, expiry_at_us } => {
                    let hash = replay.hash_of(id, "rotate")?;
                    replay.state.try_apply(&Mutation::Rotate { id, hash, new_hash, expiry_at_us })?;
                    replay.ids.insert(id, new_hash);
                    Ok(())
                }
                Record::Touch { id, used } => {
                    let hash = replay.hash_of(id, "last-used update")?;
                    replay.state.try_apply(&Mutation::Touch { id, hash, used })
                }
                Record::Snapshot { .. } => unreachable!("handled above"),
            }
        }
    }
}

impl Replay {
    fn hash_of(&self, id: u64, what: &str) -> Result<TokenHash, RecordFault> {
        self.ids.get(&id).copied().ok_or_else(|| format!("{what} of unknown token id {id}"))
    }
}

impl Record {
    /// Record types a version 1 file cannot hold.
    fn needs_version_2(&self) -> bool {
        match self {
            Record::Create(token) => needs_token_record(token),
            Record::Delete { .. } | Record::Snapshot { .. } => false,
            _ => true,
        }
    }
}

/// Whether a token needs a Token (4) record rather than a Create (1).
fn needs_token_record(token: &TokenRecord) -> bool {
    token.extras.is_some() || token.revoked_at_us.is_some() || token.last_used.is_some()
}

/// `from_snapshot`: snapshot tokens have ids below the snapshot's `next_id`;
/// any other create must use a fresh id, since ids are never reused.
fn create(replay: &mut Replay, token: TokenRecord, from_snapshot: bool) -> Result<(), RecordFault> {
    if replay.ids.contains_key(&token.id) || (!from_snapshot && token.id < replay.next_id) {
        return Err(format!("token id {} reused", token.id));
    }
    let (id, hash) = (token.id, token.hash);
    // Refuses a name or hash that already exists, without changing anything.
    replay.state.try_apply(&Mutation::Create(token))?;
    replay.next_id = replay.next_id.max(id + 1);
    replay.ids.insert(id, hash);
    Ok(())
}

/// The offset of the first record at or after `from` that checks out.
fn next_valid_record(bytes: &[u8], from: usize) -> Option<usize> {
    let marker = MARKER.to_le_bytes();
    let mut offset = from;
    while offset + RECORD_HEADER_BYTES <= bytes.len() {
        let found = bytes[offset..].windows(4).position(|window| window == marker)?;
        offset += found;
        if parse_record(bytes, offset).is_ok() {
            return Some(offset);
        }
        offset += 1;
    }
    None
}

fn read_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

fn read_u64(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

/// Parses and checksums one record at `offset`: `(seq, record, bytes used)`.
fn parse_record(bytes: &[u8], offset: usize) -> Result<(u64, Record, usize), RecordFault> {
    let rest = &bytes[offset..];
    if rest.len() < RECORD_HEADER_BYTES {
        return Err(format!("incomplete record header ({} bytes)", rest.len()));
    }
    if read_u32(rest, 0) != MARKER {
        return Err("missing record marker".into());
    }
    let length = read_u32(rest, 4) as usize;
    if !(PAYLOAD_PREFIX_BYTES..=RECORD_PAYLOAD_BYTES_MAX).contains(&length) {
        return Err(format!("record length {length} out of range"));
    }
    if rest.len() < RECORD_HEADER_BYTES + length {
        return Err(format!("incomplete record ({} of {} bytes)", rest.len(), RECORD_HEADER_BYTES + length));
    }
    let payload = &rest[RECORD_HEADER_BYTES..RECORD_HEADER_BYTES + length];
    let crc = crc32c::crc32c_append(crc32c::crc32c(&rest[4..8]), payload);
    if crc != read_u32(rest, 8) {
        return Err("checksum mismatch".into());
    }
    let seq = read_u64(payload, 0);
    let _commit_at_us = read_u64(payload, 8);
    let body = &payload[PAYLOAD_PREFIX_BYTES..];
    let record = decode_body(payload[16], body)?;
    Ok((seq, record, RECORD_HEADER_BYTES + length))
}

fn decode_body(kind: u8, body: &[u8]) -> Result<Record, RecordFault> {
    let mut cursor = Cursor { bytes: body, at: 0, kind };
    let record = match kind {
        TYPE_CREATE => Record::Create(cursor.create()?),
        TYPE_TOKEN => {
            let mut token = cursor.create()?;
            token.revoked_at_us = NonZeroU64::new(cursor.u64()?);
            let last_used_at_us = cursor.u64()?;
            let peer = cursor.peer()?;
            token.last_used = match (last_used_at_us, peer) {
                (0, None) => None,
                (at_us, Some(peer)) if at_us != 0 => Some(LastUsed { at_us, peer }),
                _ => return Err("token record: last use time and address disagree".into()),
            };
            let description = cursor.text16()?.into();
            let scopes =
                (0..cursor.u8()?).map(|_| cursor.text8().map(Box::from)).collect::<Result<_, _>>()?;
            let networks = (0..cursor.u8()?).map(|_| cursor.network()).collect::<Result<_, _>>()?;
            token.extras = TokenExtras { description, scopes, networks }.shared();
            Record::Create(token)
        }
        TYPE_DELETE => Record::Delete { id: cursor.u64()? },
        TYPE_SNAPSHOT => {
            Record::Snapshot { next_id: cursor.u64()?, last_seq: cursor.u64()?, tokens: cursor.u64()? }
        }
        TYPE_REVOKE => {
            let id = cursor.u64()?;
            let at_us = NonZeroU64::new(cursor.u64()?).ok_or("revoke record without a time")?;
            Record::Revoke { id, at_us }
        }
        TYPE_UPDATE => Record::Update {
            id: cursor.u64()?,
            name: cursor.text8()?.into(),
            description: cursor.text16()?.into(),
        },
        TYPE_ROTATE => {
            let id = cursor.u64()?;
            let hash = cursor.hash()?;
            Record::Rotate { id, hash, expiry_at_us: NonZeroU64::new(cursor.u64()?) }
        }
        TYPE_TOUCH => {
            let id = cursor.u64()?;
            let at_us = cursor.u64()?;
            let peer = cursor.peer()?.ok_or("last-used record without an address")?;
            Record::Touch { id, used: LastUsed { at_us, peer } }
        }
        other => return Err(format!("unknown record type {other}")),
    };
    if cursor.at != body.len() {
        return Err(format!("record type {kind} has {} body bytes", body.len()));
    }
    Ok(record)
}

/// Checked reads of a record body; every fault names the record type.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
    kind: u8,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, len: usize) -> Result<&'a [u8], RecordFault> {
        let end = self.at + len;
        let Some(slice) = self.bytes.get(self.at..end) else {
            return Err(format!("record type {} too short ({} body bytes)", self.kind, self.bytes.len()));
        };
        self.at = end;
        Ok(slice)
    }

    fn u8(&mut self) -> Result<u8, RecordFault> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, RecordFault> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().expect("2 bytes")))
    }

    fn u32(&mut self) -> Result<u32, RecordFault> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }

    fn u64(&mut self) -> Result<u64, RecordFault> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }

    fn hash(&mut self) -> Result<TokenHash, RecordFault> {
        Ok(self.take(32)?.try_into().expect("32 bytes"))
    }

    fn utf8(&mut self, len: usize) -> Result<&'a str, RecordFault> {
        let bytes = self.take(len)?;
        std::str::from_utf8(bytes).map_err(|_| format!("record type {}: text is not UTF-8", self.kind))
    }

    fn text8(&mut self) -> Result<&'a str, RecordFault> {
        let len = self.u8()?;
        self.utf8(usize::from(len))
    }

    fn text16(&mut self) -> Result<&'a str, RecordFault> {
        let len = self.u16()?;
        self.utf8(usize::from(len))
    }

    fn ip(&mut self, family: u8) -> Result<IpAddr, RecordFault> {
        match family {
            4 => Ok(IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(self.take(4)?).expect("4 bytes")))),
            6 => Ok(IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(self.take(16)?).expect("16 bytes")))),
            other => Err(format!("record type {}: address family {other}", self.kind)),
        }
    }

    fn peer(&mut self) -> Result<Option<SocketAddr>, RecordFault> {
        match self.u8()? {
            0 => Ok(None),
            family => {
                let ip = self.ip(family)?;
                Ok(Some(SocketAddr::new(ip, self.u16()?)))
            }
        }
    }

    fn network(&mut self) -> Result<IpNet, RecordFault> {
        let family = self.u8()?;
        let ip = self.ip(family)?;
        let prefix = self.u8()?;
        IpNet::new(ip, prefix).map_err(|_| format!("record type {}: prefix /{prefix} for {ip}", self.kind))
    }

    /// The fields of a Create (1), which a Token (4) starts with.
    fn create(&mut self) -> Result<TokenRecord, RecordFault> {
        let id = self.u64()?;
        let user_id = self.u32()?;
        let name = self.text8()?;
        let hash = self.hash()?;
        let created_at_us = self.u64()?;
        let expiry_at_us = NonZeroU64::new(self.u64()?);
        Ok(TokenRecord {
            id,
            user_id,
            name: name.into(),
            hash,
            created_at_us,
            expiry_at_us,
            revoked_at_us: None,
            extras: None,
            last_used: None,
        })
    }
}

fn put_peer(out: &mut Vec<u8>, peer: Option<SocketAddr>) {
    match peer.map(|peer| (peer.ip(), peer.port())) {
        None => out.push(0),
        Some((IpAddr::V4(ip), port)) => {
            out.push(4);
            out.extend_from_slice(&ip.octets());
            out.extend_from_slice(&port.to_le_bytes());
        }
        Some((IpAddr::V6(ip), port)) => {
            out.push(6);
            out.extend_from_slice(&ip.octets());
            out.extend_from_slice(&port.to_le_bytes());
        }
    }
}

fn put_text8(out: &mut Vec<u8>, text: &str) {
    out.push(u8::try_from(text.len()).expect("text8 fields are at most 255 bytes"));
    out.extend_from_slice(text.as_bytes());
}

fn put_text16(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(&u16::try_from(text.len()).expect("text16 fields are bounded").to_le_bytes());
    out.extend_from_slice(text.as_bytes());
}

/// Appends one encoded record to `out`.
fn encode_record(out: &mut Vec<u8>, seq: u64, commit_at_us: u64, record: &Record) {
    let start = out.len();
    out.extend_from_slice(&MARKER.to_le_bytes());
    out.extend_from_slice(&[0; 8]); // length and crc, filled in below
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&commit_at_us.to_le_bytes());
    match record {
        Record::Create(token) => {
            let full = needs_token_record(token);
            out.push(if full { TYPE_TOKEN } else { TYPE_CREATE });
            out.extend_from_slice(&token.id.to_le_bytes());
            out.extend_from_slice(&token.user_id.to_le_bytes());
            put_text8(out, &token.name);
            out.extend_from_slice(&token.hash);
            out.extend_from_slice(&token.created_at_us.to_le_bytes());
            out.extend_from_slice(&token.expiry_at_us.map_or(0, NonZeroU64::get).to_le_bytes());
            if full {
                out.extend_from_slice(&token.revoked_at_us.map_or(0, NonZeroU64::get).to_le_bytes());
                out.extend_from_slice(&token.last_used.map_or(0, |used| used.at_us).to_le_bytes());
                put_peer(out, token.last_used.map(|used| used.peer));
                let extras = token.extras.as_deref().cloned().unwrap_or_default();
                put_text16(out, &extras.description);
                out.push(u8::try_from(extras.scopes.len()).expect("scopes are bounded"));
                for scope in &extras.scopes {
                    put_text8(out, scope);
                }
                out.push(u8::try_from(extras.networks.len()).expect("networks are bounded"));
                for network in &extras.networks {
                    match network.addr() {
                        IpAddr::V4(ip) => {
                            out.push(4);
                            out.extend_from_slice(&ip.octets());
                        }
                        IpAddr::V6(ip) => {
                            out.push(6);
                            out.extend_from_slice(&ip.octets());
                        }
                    }
                    out.push(network.prefix_len());
                }
            }
        }
        Record::Revoke { id, at_us } => {
            out.push(TYPE_REVOKE);
            out.extend_from_slice(&id.to_le_bytes());
            out.extend_from_slice(&at_us.get().to_le_bytes());
        }
        Record::Update { id, name, description } => {
            out.push(TYPE_UPDATE);
            out.extend_from_slice(&id.to_le_bytes());
            put_text8(out, name);
            put_text16(out, description);
        }
        Record::Rotate { id, hash, expiry_at_us } => {
            out.push(TYPE_ROTATE);
            out.extend_from_slice(&id.to_le_bytes());
            out.extend_from_slice(hash);
            out.extend_from_slice(&expiry_at_us.map_or(0, NonZeroU64::get).to_le_bytes());
        }
        Record::Touch { id, used } => {
            out.push(TYPE_TOUCH);
            out.extend_from_slice(&id.to_le_bytes());
            out.extend_from_slice(&used.at_us.to_le_bytes());
            put_peer(out, Some(used.peer));
        }
        Record::Delete { id } => {
            out.push(TYPE_DELETE);
            out.extend_from_slice(&id.to_le_bytes());
        }
        Record::Snapshot { next_id, last_seq, tokens } => {
            out.push(TYPE_SNAPSHOT);
            out.extend_from_slice(&next_id.to_le_bytes());
            out.extend_from_slice(&last_seq.to_le_bytes());
            out.extend_from_slice(&tokens.to_le_bytes());
        }
    }
    let length = u32::try_from(out.len() - start - RECORD_HEADER_BYTES).expect("small record");
    out[start + 4..start + 8].copy_from_slice(&length.to_le_bytes());
    let crc =
        crc32c::crc32c_append(crc32c::crc32c(&length.to_le_bytes()), &out[start + RECORD_HEADER_BYTES..]);
    out[start + 8..start + 12].copy_from_slice(&crc.to_le_bytes());
    debug_assert!(
        matches!(parse_record(out, start), Ok((s, ref r, _)) if s == seq && r == record),
        "a record about to be written must decode back to itself"
    );
}

impl TokenLog {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Encodes a whole compacted file: header, Snapshot, one Create per token.
    fn encode_snapshot(tokens: &[TokenRecord], next_id: u64, last_seq: u64, commit_at_us: u64) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_BYTES + 32 + tokens.len() * 96);
        out.extend_from_slice(&header());
        let snapshot = Record::Snapshot { next_id, last_seq, tokens: tokens.len() as u64 };
        encode_record(&mut out, last_seq, commit_at_us, &snapshot);
        for token in tokens {
            encode_record(&mut out, 0, token.created_at_us, &Record::Create(token.clone()));
        }
        out
    }

    fn start_compaction(&mut self, state: &Replica, next_id: u64) {
        let tokens: Vec<TokenRecord> = state.records().collect();
        let snapshot_records = tokens.len() as u64 + 1;
        let (last_seq, dir) = (self.seq, self.dir.clone());
        let (done_tx, done) = mpsc::channel();
        tracing::info!(records = self.records, live = tokens.len(), "compacting the token log");
        let join = std::thread::Builder::new().name("latchkey-compactor".into()).spawn(move || {
            let bytes = TokenLog::encode_snapshot(&tokens, next_id, last_seq, crate::clock::now_us());
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
    fn finish_compaction(&mut self) -> io::Result<()> {
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

    /// Whether the current file is mostly dead records.
    fn wants_compaction(&self, live: usize) -> bool {
        let dead = self.records.saturating_sub(live as u64);
        self.records >= self.policy.min_records && dead as f64 > self.policy.dead_ratio * self.records as f64
    }
}

/// Makes a rename or creation in `dir` durable.
fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Writes a compacted file next to the log and syncs it; returns it open
/// for appends, positioned at its end.
fn write_compacted(dir: &Path, bytes: &[u8]) -> io::Result<File> {
    let path = dir.join(COMPACT_FILE);
    let mut file = OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&path)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    Ok(file)
}

impl Journal for TokenLog {
    fn append(&mut self, batch: &[Mutation], commit_at_us: u64) -> io::Result<()> {
        self.scratch.clear();
        for mutation in batch {
            self.seq += 1;
            let record = match mutation {
                Mutation::Create(token) => Record::Create(token.clone()),
                Mutation::Delete { id, .. } => Record::Delete { id: *id },
                Mutation::Revoke { id, at_us, .. } => Record::Revoke { id: *id, at_us: *at_us },
                Mutation::Update { id, name, extras, .. } => Record::Update {
                    id: *id,
                    name: Arc::clone(name),
                    description: extras
                        .as_deref()
                        .map_or_else(Box::default, |extras| extras.description.clone()),
                },
                Mutation::Rotate { id, new_hash, expiry_at_us, .. } => {
                    Record::Rotate { id: *id, hash: *new_hash, expiry_at_us: *expiry_at_us }
                }
                Mutation::Touch { id, used, .. } => Record::Touch { id: *id, used: *used },
            };
            encode_record(&mut self.scratch, self.seq, commit_at_us, &record);
        }
        self.file.write_all(&self.scratch)?;
        self.file.sync_data()?;
        self.records += batch.len() as u64;
        if let Some(compaction) = &mut self.compaction {
            compaction.since_snapshot.extend_from_slice(&self.scratch);
            compaction.since_snapshot_records += batch.len() as u64;
        }
        Ok(())
    }

    fn after_append(&mut self, state: &Replica, next_id: u64) -> io::Result<()> {
        self.finish_compaction()?;
        if self.compaction.is_none() && self.wants_compaction(state.len()) {
            self.start_compaction(state, next_id);
        }
        Ok(())
    }
}

impl Drop for TokenLog {
    fn drop(&mut self) {
        // An unfinished compaction is abandoned; its file is removed at the
        // next start. The log itself is always complete and synced.
        if let Some(compaction) = self.compaction.take() {
            let _ = compaction.join.join();
            let _ = fs::remove_file(self.dir.join(COMPACT_FILE));
        }
    }
}

#[cfg(test)]
mod tests;
