//! The token log file, the embedded store's source of truth: its record
//! format, and appending a batch with one write and one sync. Opening it
//! (replay and repair) is `recovery.rs`'s; rewriting it is `compaction.rs`'s.
//!
//! Layout of format version 4 (all integers little-endian):
//!
//! ```text
//! file    := header | batch*
//! header  := magic "LKTOKLOG" (8) | format version u32 | crc32c(magic ‖ version) u32
//! batch   := marker u32 = 0x9D3B_51C7 | length u32 | records u32 | first_seq u64
//!            | crc32c(record bytes) u32 | crc32c(the 24 bytes before) u32 | record × records
//!            (length = bytes of the records; first_seq = the first record's seq)
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
//!          | Access   (9): id u64 | scopes u8-count × u8-len | networks u8-count × net
//!          | Reactivate (10): id u64 | hash [32] | expiry_at_us u64
//! peer    := family u8 (0 none | 4 | 6) | address [4 or 16] | port u16   (family 0: nothing follows)
//! net     := family u8 (4 | 6) | address [4 or 16] | prefix u8
//! ```
//!
//! **The batch is the unit of atomicity.** One append (one writer commit,
//! however many records) is one batch, written with one `write` and made
//! durable with one `fdatasync`; nobody hears of any record in it before
//! that returns. A power loss during the sync may leave any subset of the
//! batch's pages on disk (a later page without an earlier one), so replay
//! never looks inside a batch whose checksum fails: if no batch header that
//! checks out follows it, it is the torn last batch and is cut whole at its
//! start; if one does, the damaged batch was synced before the next was
//! written (appends are sequential), so it held acknowledged records and
//! the start is refused. A batch whose checksum holds but whose records do
//! not replay is refused too: it was written that way. The header has its
//! own checksum so a damaged batch's length is trusted only when it checks
//! out: then the search for a later batch starts after it, else one byte on.
//! A compacted file is a Snapshot record and its token records in batches
//! of at most [`SNAPSHOT_BATCH_RECORDS`], then the appends.
//!
//! Format history: version 1 had record types 1–3 only. Version 2 added
//! types 4–8 (token lifecycle: descriptions, scopes, networks, revoke,
//! rotate, rename, last use). A Create (1) is still written for a token with
//! none of the new fields, a Token (4) otherwise. Versions 1 and 2 have no
//! batches: records follow the header directly, and their replay keeps the
//! record-by-record rule (a bad record followed by a valid record refuses
//! the start). Version 3 added the batch framing, nothing else. Version 4
//! added types 9 (Access: a token's scopes and networks after an edit, its
//! name and description kept) and 10 (Reactivate: a rotate that also clears
//! the revocation), nothing else; a version 3 file holding either is
//! refused, as a version 1 file holding a type of version 2 is.
//!
//! Only keyed hashes are stored, never a raw token or a password.
//!
//! A version 1, 2 or 3 file is read as it is and then rewritten once, at
//! start, as a version 4 snapshot (written beside it, synced, renamed over it), so
//! a file never mixes versions. An older build refuses the rewritten file
//! (its newer version), so a downgrade needs `latchkey-server export` first.

use std::fs::File;
use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::num::NonZeroU64;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ipnet::IpNet;
use latchkey_protocol::wire::Reader;

use super::Journal;
use super::compaction::{Compaction, CompactionPolicy};
use crate::metrics;
use crate::registry::{LastUsed, Mutation, Replica, TokenExtras, TokenHash, TokenRecord};

pub const LOG_FILE: &str = "tokens.log";

/// The open log, appended to by the writer thread only.
pub struct TokenLog {
    pub(super) path: PathBuf,
    pub(super) dir: PathBuf,
    pub(super) file: File,
    /// Sequence number of the last record written.
    pub(super) seq: u64,
    /// Records in the current file (a measure of its size for compaction).
    pub(super) records: u64,
    /// The current file's size, for the metrics.
    pub(super) bytes: u64,
    pub(super) policy: CompactionPolicy,
    pub(super) scratch: Vec<u8>,
    pub(super) compaction: Option<Compaction>,
    /// How the compactor makes the snapshot of the file it compacts (a
    /// replay of it, `recovery.rs`'s: handed in by whoever opened the log,
    /// so that the format does not depend on its reader).
    pub(super) snapshot_of_prefix: SnapshotOfPrefix,
}

/// On the compactor thread: the compacted file, and its record count, of
/// the log at `path` as its first `file_bytes` bytes leave it, which must
/// replay whole to sequence number `last_seq` and `live` tokens, as the
/// writer's state stood when it asked (`next_id` is the writer's too).
pub(super) type SnapshotOfPrefix =
    fn(path: &Path, file_bytes: u64, live: usize, next_id: u64, last_seq: u64) -> io::Result<(Vec<u8>, u64)>;

const MAGIC: &[u8; 8] = b"LKTOKLOG";
/// The format version this build writes.
pub const FORMAT_VERSION: u32 = 4;
/// The first format version whose records come in batches.
pub const FORMAT_VERSION_BATCHES: u32 = 3;
/// Versions this build reads (older ones are upgraded at start).
pub const FORMAT_VERSIONS_READ: std::ops::RangeInclusive<u32> = 1..=FORMAT_VERSION;
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
const BATCH_MARKER: u32 = 0x9D3B_51C7;
/// Marker, length, records, first_seq, body checksum, header checksum.
pub const BATCH_HEADER_BYTES: usize = 28;
/// The bytes of a batch header its own checksum covers.
const BATCH_HEADER_CHECKED_BYTES: usize = 24;
/// Records per batch of a compacted file's snapshot (appends are one batch
/// per commit, whatever their size): keeps each batch far below the 4 GiB
/// its length field can say, whatever the tokens hold.
pub const SNAPSHOT_BATCH_RECORDS: usize = 4096;

const TYPE_CREATE: u8 = 1;
const TYPE_DELETE: u8 = 2;
const TYPE_SNAPSHOT: u8 = 3;
const TYPE_TOKEN: u8 = 4;
const TYPE_REVOKE: u8 = 5;
const TYPE_UPDATE: u8 = 6;
const TYPE_ROTATE: u8 = 7;
const TYPE_TOUCH: u8 = 8;
const TYPE_ACCESS: u8 = 9;
const TYPE_REACTIVATE: u8 = 10;

/// Why one record does not check out.
pub type RecordFault = String;

/// A decoded record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
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
    /// A token's scopes and networks after an access edit.
    Access {
        id: u64,
        scopes: Box<[Box<str>]>,
        networks: Box<[IpNet]>,
    },
    /// A rotate that also clears the token's revocation.
    Reactivate {
        id: u64,
        hash: TokenHash,
        expiry_at_us: Option<NonZeroU64>,
    },
}

impl Record {
    /// The record that stores a committed mutation. The log keeps ids only
    /// (replay resolves them to hashes); a rename keeps only the description
    /// of the extras, and an access edit only the scopes and networks: each
    /// record holds what its change changed.
    pub fn of(mutation: &Mutation) -> Record {
        match mutation {
            Mutation::Create(token) => Record::Create(token.clone()),
            Mutation::Delete { id, .. } => Record::Delete { id: *id },
            Mutation::Revoke { id, at_us, .. } => Record::Revoke { id: *id, at_us: *at_us },
            Mutation::Update { id, name, extras, .. } => Record::Update {
                id: *id,
                name: Arc::clone(name),
                description: extras.as_deref().map_or_else(Box::default, |extras| extras.description.clone()),
            },
            Mutation::Rotate { id, new_hash, expiry_at_us, .. } => {
                Record::Rotate { id: *id, hash: *new_hash, expiry_at_us: *expiry_at_us }
            }
            Mutation::Touch { id, used, .. } => Record::Touch { id: *id, used: *used },
            Mutation::Access { id, extras, .. } => {
                let extras = extras.as_deref();
                Record::Access {
                    id: *id,
                    scopes: extras.map_or_else(Box::default, |extras| extras.scopes.clone()),
                    networks: extras.map_or_else(Box::default, |extras| extras.networks.clone()),
                }
            }
            Mutation::Reactivate { id, new_hash, expiry_at_us, .. } => {
                Record::Reactivate { id: *id, hash: *new_hash, expiry_at_us: *expiry_at_us }
            }
        }
    }

    /// The first format version that has this record's type.
    pub fn format_version(&self) -> u32 {
        match self {
            Record::Create(token) if !needs_token_record(token) => 1,
            Record::Delete { .. } | Record::Snapshot { .. } => 1,
            Record::Create(_)
            | Record::Revoke { .. }
            | Record::Update { .. }
            | Record::Rotate { .. }
            | Record::Touch { .. } => 2,
            Record::Access { .. } | Record::Reactivate { .. } => 4,
        }
    }
}

/// Whether a token needs a Token (4) record rather than a Create (1).
fn needs_token_record(token: &TokenRecord) -> bool {
    token.extras.is_some() || token.revoked_at_us.is_some() || token.last_used.is_some()
}

/// The file header this build writes.
pub fn header() -> [u8; HEADER_BYTES] {
    let mut header = [0u8; HEADER_BYTES];
    header[..8].copy_from_slice(MAGIC);
    header[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    let crc = crc32c::crc32c(&header[..12]);
    header[12..].copy_from_slice(&crc.to_le_bytes());
    header
}

/// The format version of a file that starts with `bytes` (at least
/// [`HEADER_BYTES`] long), or `None` when it is not a token log.
pub fn header_version(bytes: &[u8]) -> Option<u32> {
    let checks = &bytes[..8] == MAGIC && crc32c::crc32c(&bytes[..12]) == read_u32(bytes, 12);
    checks.then(|| read_u32(bytes, 8))
}

/// Starts a batch at the end of `out`: room for its header, filled in by
/// [`finish_batch`] once the records follow. Returns where it starts.
pub fn begin_batch(out: &mut Vec<u8>) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0; BATCH_HEADER_BYTES]);
    start
}

/// Fills in the header of the batch begun at `start`: the `records`
/// records encoded after it, the first with sequence number `first_seq`.
/// Fails only when the batch is too large for its length field (4 GiB).
pub fn finish_batch(out: &mut [u8], start: usize, records: usize, first_seq: u64) -> Result<(), String> {
    let body = &out[start + BATCH_HEADER_BYTES..];
    let length = u32::try_from(body.len()).map_err(|_| format!("a batch of {} bytes", body.len()))?;
    let count = u32::try_from(records).map_err(|_| format!("a batch of {records} records"))?;
    let body_crc = crc32c::crc32c(body);
    let header = &mut out[start..start + BATCH_HEADER_BYTES];
    header[..4].copy_from_slice(&BATCH_MARKER.to_le_bytes());
    header[4..8].copy_from_slice(&length.to_le_bytes());
    header[8..12].copy_from_slice(&count.to_le_bytes());
    header[12..20].copy_from_slice(&first_seq.to_le_bytes());
    header[20..24].copy_from_slice(&body_crc.to_le_bytes());
    let header_crc = crc32c::crc32c(&header[..BATCH_HEADER_CHECKED_BYTES]);
    header[24..28].copy_from_slice(&header_crc.to_le_bytes());
    debug_assert!(
        matches!(read_batch(out, start), Ok(frame) if frame.records == count && frame.end == out.len()),
        "a batch about to be written must check out"
    );
    Ok(())
}

/// A batch whose header and checksum hold: where its records are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchFrame {
    /// Records it says it holds (at least one).
    pub records: u32,
    /// The sequence number its first record must carry.
    pub first_seq: u64,
    /// Offset of its first record (just after its header).
    pub body: usize,
    /// Offset just after its last record.
    pub end: usize,
}

/// Why a batch does not check out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchFault {
    /// The header itself is torn, damaged or not a batch header: how long
    /// the batch was is not known.
    Header(String),
    /// The header checks out, so the batch ends at `end`; its records do not
    /// (missing bytes, or bytes other than those written).
    Body { end: usize, reason: String },
}

impl BatchFault {
    /// Where the damaged batch ends, when its header says so and can be
    /// believed.
    pub fn end(&self) -> Option<usize> {
        match self {
            BatchFault::Header(_) => None,
            BatchFault::Body { end, .. } => Some(*end),
        }
    }
}

impl std::fmt::Display for BatchFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BatchFault::Header(reason) | BatchFault::Body { reason, .. } => f.write_str(reason),
        }
    }
}

/// Checks the header of a batch at `offset` only: `(length, records,
/// first_seq, body crc)`. Sizes that no writer makes (no record, or fewer or
/// more bytes than that many records can take) are a bad header too.
fn read_batch_header(bytes: &[u8], offset: usize) -> Result<(usize, u32, u64, u32), String> {
    let rest = bytes.get(offset..).unwrap_or_default();
    if rest.len() < BATCH_HEADER_BYTES {
        return Err(format!("incomplete batch header ({} of {BATCH_HEADER_BYTES} bytes)", rest.len()));
    }
    if read_u32(rest, 0) != BATCH_MARKER {
        return Err("missing batch marker".into());
    }
    if crc32c::crc32c(&rest[..BATCH_HEADER_CHECKED_BYTES]) != read_u32(rest, 24) {
        return Err("batch header checksum mismatch".into());
    }
    let (length, records) = (read_u32(rest, 4), read_u32(rest, 8));
    let record_min = (RECORD_HEADER_BYTES + PAYLOAD_PREFIX_BYTES) as u64;
    let record_max = (RECORD_HEADER_BYTES + RECORD_PAYLOAD_BYTES_MAX) as u64;
    let fits = u64::from(records) * record_min..=u64::from(records) * record_max;
    if records == 0 || !fits.contains(&u64::from(length)) {
        return Err(format!("batch header says {records} records in {length} bytes"));
    }
    Ok((length as usize, records, read_u64(rest, 12), read_u32(rest, 20)))
}

/// Checks the batch at `offset`: its header, that it is all there, and its
/// checksum. Its records are read by [`read_record`].
pub fn read_batch(bytes: &[u8], offset: usize) -> Result<BatchFrame, BatchFault> {
    let (length, records, first_seq, body_crc) =
        read_batch_header(bytes, offset).map_err(BatchFault::Header)?;
    let body = offset + BATCH_HEADER_BYTES;
    let end = body + length;
    if end > bytes.len() {
        let reason = format!("incomplete batch ({} of {} bytes)", bytes.len() - offset, end - offset);
        return Err(BatchFault::Body { end, reason });
    }
    if crc32c::crc32c(&bytes[body..end]) != body_crc {
        return Err(BatchFault::Body { end, reason: "batch checksum mismatch".into() });
    }
    Ok(BatchFrame { records, first_seq, body, end })
}

/// The offset of the first batch header at or after `from` that checks out
/// (its records may not): proof that a batch was begun after the ones before
/// it had been synced.
pub fn next_batch_header(bytes: &[u8], from: usize) -> Option<usize> {
    let marker = BATCH_MARKER.to_le_bytes();
    let mut offset = from;
    while offset + BATCH_HEADER_BYTES <= bytes.len() {
        let found = bytes[offset..].windows(4).position(|window| window == marker)?;
        offset += found;
        if read_batch_header(bytes, offset).is_ok() {
            return Some(offset);
        }
        offset += 1;
    }
    None
}

/// Appends one encoded record to `out`.
pub fn encode_record(out: &mut Vec<u8>, seq: u64, commit_at_us: u64, record: &Record) {
    let start = out.len();
    out.extend_from_slice(&MARKER.to_le_bytes());
    out.extend_from_slice(&[0; 8]); // length and crc, filled in below
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&commit_at_us.to_le_bytes());
    match record {
        Record::Create(token) => encode_token(out, token),
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
        Record::Access { id, scopes, networks } => {
            out.push(TYPE_ACCESS);
            out.extend_from_slice(&id.to_le_bytes());
            put_scopes_and_networks(out, scopes, networks);
        }
        Record::Reactivate { id, hash, expiry_at_us } => {
            out.push(TYPE_REACTIVATE);
            out.extend_from_slice(&id.to_le_bytes());
            out.extend_from_slice(hash);
            out.extend_from_slice(&expiry_at_us.map_or(0, NonZeroU64::get).to_le_bytes());
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

/// A Create (1) body, or a Token (4) body when the token has more than a
/// plain Iggy token's fields.
fn encode_token(out: &mut Vec<u8>, token: &TokenRecord) {
    let full = needs_token_record(token);
    out.push(if full { TYPE_TOKEN } else { TYPE_CREATE });
    out.extend_from_slice(&token.id.to_le_bytes());
    out.extend_from_slice(&token.user_id.to_le_bytes());
    put_text8(out, &token.name);
    out.extend_from_slice(&token.hash);
    out.extend_from_slice(&token.created_at_us.to_le_bytes());
    out.extend_from_slice(&token.expiry_at_us.map_or(0, NonZeroU64::get).to_le_bytes());
    if !full {
        return;
    }
    out.extend_from_slice(&token.revoked_at_us.map_or(0, NonZeroU64::get).to_le_bytes());
    out.extend_from_slice(&token.last_used.map_or(0, |used| used.at_us).to_le_bytes());
    put_peer(out, token.last_used.map(|used| used.peer));
    let extras = token.extras.as_deref().cloned().unwrap_or_default();
    put_text16(out, &extras.description);
    put_scopes_and_networks(out, &extras.scopes, &extras.networks);
}

/// A Token's (4) or an Access's (9) lists: scopes, then networks.
fn put_scopes_and_networks(out: &mut Vec<u8>, scopes: &[Box<str>], networks: &[IpNet]) {
    out.push(u8::try_from(scopes.len()).expect("scopes are bounded"));
    for scope in scopes {
        put_text8(out, scope);
    }
    out.push(u8::try_from(networks.len()).expect("networks are bounded"));
    for network in networks {
        put_ip(out, network.addr());
        out.push(network.prefix_len());
    }
}

fn put_ip(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(ip) => {
            out.push(4);
            out.extend_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            out.push(6);
            out.extend_from_slice(&ip.octets());
        }
    }
}

fn put_peer(out: &mut Vec<u8>, peer: Option<SocketAddr>) {
    match peer {
        None => out.push(0),
        Some(peer) => {
            put_ip(out, peer.ip());
            out.extend_from_slice(&peer.port().to_le_bytes());
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

fn read_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

fn read_u64(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

/// One record as it sits in a file: its framing fields and what it says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    pub seq: u64,
    pub commit_at_us: u64,
    /// The type byte as written ([`record_type_name`]): a Create (1) and a
    /// Token (4) both decode to [`Record::Create`].
    pub kind: u8,
    pub record: Record,
    /// Bytes the record takes in the file, its header included.
    pub bytes: usize,
}

/// The name of a record type byte, as the log tools print it.
pub fn record_type_name(kind: u8) -> &'static str {
    match kind {
        TYPE_CREATE => "create",
        TYPE_DELETE => "delete",
        TYPE_SNAPSHOT => "snapshot",
        TYPE_TOKEN => "token",
        TYPE_REVOKE => "revoke",
        TYPE_UPDATE => "update",
        TYPE_ROTATE => "rotate",
        TYPE_TOUCH => "last-used",
        TYPE_ACCESS => "access",
        TYPE_REACTIVATE => "reactivate",
        _ => "unknown",
    }
}

/// Parses and checksums one record at `offset`: `(seq, record, bytes used)`.
pub fn parse_record(bytes: &[u8], offset: usize) -> Result<(u64, Record, usize), RecordFault> {
    read_record(bytes, offset).map(|stored| (stored.seq, stored.record, stored.bytes))
}

/// Parses and checksums one record at `offset`, keeping every field of its
/// framing. The one record decoder: replay, the etcd backend and the log
/// tools all read through it.
pub fn read_record(bytes: &[u8], offset: usize) -> Result<StoredRecord, RecordFault> {
    let rest = bytes.get(offset..).unwrap_or_default();
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
    let body = &payload[PAYLOAD_PREFIX_BYTES..];
    let kind = payload[16];
    Ok(StoredRecord {
        seq: read_u64(payload, 0),
        commit_at_us: read_u64(payload, 8),
        kind,
        record: decode_body(kind, body)?,
        bytes: RECORD_HEADER_BYTES + length,
    })
}

/// The offset of the first record at or after `from` that checks out.
pub fn next_valid_record(bytes: &[u8], from: usize) -> Option<usize> {
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

fn decode_body(kind: u8, body: &[u8]) -> Result<Record, RecordFault> {
    let mut cursor = Cursor { reader: Reader::new(body), kind };
    let record = match kind {
        TYPE_CREATE => Record::Create(cursor.create()?),
        TYPE_TOKEN => Record::Create(cursor.token()?),
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
        TYPE_ACCESS => {
            let id = cursor.u64()?;
            let (scopes, networks) = cursor.scopes_and_networks()?;
            Record::Access { id, scopes, networks }
        }
        TYPE_REACTIVATE => {
            let id = cursor.u64()?;
            let hash = cursor.hash()?;
            Record::Reactivate { id, hash, expiry_at_us: NonZeroU64::new(cursor.u64()?) }
        }
        other => return Err(format!("unknown record type {other}")),
    };
    if !cursor.reader.is_empty() {
        return Err(format!("record type {kind} has {} body bytes", body.len()));
    }
    Ok(record)
}

/// A token's scopes and networks, as a record carries them.
type ScopesAndNetworks = (Box<[Box<str>]>, Box<[IpNet]>);

/// Checked reads of a record body over the protocol's checked reader; every
/// fault names the record type.
struct Cursor<'a> {
    reader: Reader<'a>,
    kind: u8,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, len: usize) -> Result<&'a [u8], RecordFault> {
        self.reader.take(len).map_err(|_| {
            let body_bytes = self.reader.consumed() + self.reader.remaining();
            format!("record type {} too short ({body_bytes} body bytes)", self.kind)
        })
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

    /// A Token (4): a Create's fields, then the lifecycle fields.
    fn token(&mut self) -> Result<TokenRecord, RecordFault> {
        let mut token = self.create()?;
        token.revoked_at_us = NonZeroU64::new(self.u64()?);
        let last_used_at_us = self.u64()?;
        let peer = self.peer()?;
        token.last_used = match (last_used_at_us, peer) {
            (0, None) => None,
            (at_us, Some(peer)) if at_us != 0 => Some(LastUsed { at_us, peer }),
            _ => return Err("token record: last use time and address disagree".into()),
        };
        let description = self.text16()?.into();
        let (scopes, networks) = self.scopes_and_networks()?;
        token.extras = TokenExtras { description, scopes, networks }.shared();
        Ok(token)
    }

    /// A Token's (4) or an Access's (9) lists.
    fn scopes_and_networks(&mut self) -> Result<ScopesAndNetworks, RecordFault> {
        let scopes = (0..self.u8()?).map(|_| self.text8().map(Box::from)).collect::<Result<_, _>>()?;
        let networks = (0..self.u8()?).map(|_| self.network()).collect::<Result<_, _>>()?;
        Ok((scopes, networks))
    }
}

impl TokenLog {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Starts a compaction if none runs and the file is due for one.
    ///
    /// What the writer thread does here costs the same whatever the
    /// registry's size: the compactor thread re-reads this file up to its
    /// current end (every byte of it synced) and replays it into what a
    /// snapshot needs (`live.rs`), and the snapshot is made from that. Copying the writer's
    /// state instead would hold every commit for as long as a copy of the
    /// whole registry takes (hundreds of milliseconds at a million tokens).
    fn maybe_compact(&mut self, state: &Replica, next_id: u64) {
        if self.compaction.is_some() || !self.policy.wants(self.records, state.len()) {
            return;
        }
        let (path, file_bytes, last_seq, live) = (self.path.clone(), self.bytes, self.seq, state.len());
        tracing::info!(records = self.records, live, "compacting the token log");
        let snapshot_of_prefix = self.snapshot_of_prefix;
        let encode = move || snapshot_of_prefix(&path, file_bytes, live, next_id, last_seq);
        match Compaction::start(&self.dir, encode) {
            Ok(compaction) => self.compaction = Some(compaction),
            Err(error) => tracing::warn!(%error, "cannot start compaction thread; will retry"),
        }
    }

    /// If the compactor is done, puts its file in place of this one.
    fn finish_compaction(&mut self) -> io::Result<()> {
        let Some(result) = self.compaction.as_ref().and_then(Compaction::poll) else { return Ok(()) };
        let compaction = self.compaction.take().expect("polled above");
        match result {
            Ok(snapshot) => {
                // The hand-over is the writer thread's part of a compaction:
                // its time is every commit's wait, so it is logged.
                let started = std::time::Instant::now();
                let (file, records) = compaction.install(snapshot, &self.dir, &self.path)?;
                let install_us = started.elapsed().as_micros() as u64;
                tracing::info!(before = self.records, after = records, install_us, "token log compacted");
                // An fstat once per compaction, for the metrics only: never
                // a reason to stop the log.
                self.bytes = file.metadata().map_or(self.bytes, |metadata| metadata.len());
                let replaced = std::mem::replace(&mut self.file, file);
                // The replaced file was renamed over: closing it frees all
                // its blocks (tens of milliseconds for a large log), so it
                // is closed on a thread of its own, not before the next commit.
                let closer = std::thread::Builder::new().name("latchkey-log-close".into());
                if let Err(error) = closer.spawn(move || drop(replaced)) {
                    tracing::debug!(%error, "closing the replaced log on the writer thread");
                }
                self.records = records;
                metrics::log_compacted();
            }
            Err(error) => {
                tracing::warn!(%error, "compaction failed; the current log stays in use");
                compaction.abandon(&self.dir);
            }
        }
        Ok(())
    }
}

/// Encodes a whole compacted file: header, Snapshot, one Create per token,
/// in batches of at most [`SNAPSHOT_BATCH_RECORDS`] records (the first one
/// starting with the Snapshot, with seq `last_seq`; the others with a token,
/// seq 0).
pub fn encode_snapshot(tokens: &[TokenRecord], next_id: u64, last_seq: u64, commit_at_us: u64) -> Vec<u8> {
    let mut snapshot = SnapshotEncoder::new(tokens.len(), next_id, last_seq, commit_at_us);
    for token in tokens {
        snapshot.token(token);
    }
    snapshot.finish()
}

/// A compacted file as it is encoded, one token at a time: what
/// [`encode_snapshot`] writes, for a caller that does not hold every token
/// as a [`TokenRecord`] (the compactor holds most as offsets into the file
/// it compacts, [`SnapshotEncoder::recorded`]).
pub struct SnapshotEncoder {
    out: Vec<u8>,
    /// Where the open batch starts, how many records it holds, and its first
    /// record's seq.
    batch_start: usize,
    in_batch: usize,
    first_seq: u64,
    /// Tokens the Snapshot record announced and not yet encoded.
    tokens_left: usize,
}

impl SnapshotEncoder {
    /// Starts a file of `tokens` tokens: its header and Snapshot record.
    pub fn new(tokens: usize, next_id: u64, last_seq: u64, commit_at_us: u64) -> SnapshotEncoder {
        let batches = (tokens + 1).div_ceil(SNAPSHOT_BATCH_RECORDS);
        let mut out = Vec::with_capacity(HEADER_BYTES + 64 + tokens * 100 + batches * BATCH_HEADER_BYTES);
        out.extend_from_slice(&header());
        let batch_start = begin_batch(&mut out);
        let snapshot = Record::Snapshot { next_id, last_seq, tokens: tokens as u64 };
        encode_record(&mut out, last_seq, commit_at_us, &snapshot);
        SnapshotEncoder { out, batch_start, in_batch: 1, first_seq: last_seq, tokens_left: tokens }
    }

    /// Makes room for one more token record: a new batch when this one is full.
    fn next_record(&mut self) {
        assert!(self.tokens_left > 0, "more tokens than the snapshot announced");
        self.tokens_left -= 1;
        if self.in_batch == SNAPSHOT_BATCH_RECORDS {
            finish_batch(&mut self.out, self.batch_start, self.in_batch, self.first_seq)
                .expect("a snapshot batch is bounded");
            self.batch_start = begin_batch(&mut self.out);
            (self.in_batch, self.first_seq) = (0, 0);
        }
        self.in_batch += 1;
    }

    /// Encodes a token's record (seq 0, at its creation time).
    pub fn token(&mut self, token: &TokenRecord) {
        self.next_record();
        encode_record(&mut self.out, 0, token.created_at_us, &Record::Create(token.clone()));
    }

    /// Copies the token of the create or token record at `offset` of
    /// `bytes`, a record replay has accepted, giving it seq 0 and its
    /// creation time: the same bytes [`SnapshotEncoder::token`] writes for
    /// what it decodes to, without decoding it (its body is kept as it is,
    /// so only the frame's seq, time and checksum are new).
    pub fn recorded(&mut self, bytes: &[u8], offset: usize) -> Result<(), RecordFault> {
        let StoredToken { stored, kind, body, created_at_us, .. } = StoredToken::at(bytes, offset)?;
        self.next_record();
        let start = self.out.len();
        self.out.extend_from_slice(&stored[..RECORD_HEADER_BYTES]);
        self.out.extend_from_slice(&0u64.to_le_bytes());
        self.out.extend_from_slice(&created_at_us.to_le_bytes());
        self.out.push(kind);
        self.out.extend_from_slice(body);
        let crc =
            crc32c::crc32c_append(crc32c::crc32c(&stored[4..8]), &self.out[start + RECORD_HEADER_BYTES..]);
        self.out[start + 8..start + 12].copy_from_slice(&crc.to_le_bytes());
        debug_assert!(
            matches!((read_record(&self.out, start), read_record(bytes, offset)),
                (Ok(copy), Ok(original)) if copy.seq == 0 && copy.record == original.record),
            "a copied token record must decode to the token it was copied from"
        );
        Ok(())
    }

    /// The whole file, once every token announced has been encoded.
    pub fn finish(mut self) -> Vec<u8> {
        assert_eq!(self.tokens_left, 0, "a snapshot holds the tokens its Snapshot record counts");
        finish_batch(&mut self.out, self.batch_start, self.in_batch, self.first_seq)
            .expect("a snapshot batch is bounded");
        self.out
    }
}

/// The token of a create or token record that replay has accepted, read in
/// place: the fields a snapshot's encoder needs without decoding the rest.
struct StoredToken<'a> {
    /// The record from its frame header on.
    stored: &'a [u8],
    kind: u8,
    body: &'a [u8],
    user_id: u32,
    name: &'a [u8],
    created_at_us: u64,
}

impl<'a> StoredToken<'a> {
    fn at(bytes: &'a [u8], offset: usize) -> Result<StoredToken<'a>, RecordFault> {
        let stored = bytes.get(offset..).unwrap_or_default();
        let length = match stored.get(4..8) {
            Some(field) => u32::from_le_bytes(field.try_into().expect("4 bytes")) as usize,
            None => return Err(format!("no record at offset {offset}")),
        };
        let payload = stored
            .get(RECORD_HEADER_BYTES..RECORD_HEADER_BYTES + length)
            .filter(|payload| payload.len() > PAYLOAD_PREFIX_BYTES)
            .ok_or_else(|| format!("record at offset {offset} is cut short"))?;
        let (kind, body) = (payload[16], &payload[PAYLOAD_PREFIX_BYTES..]);
        let not_a_token = || format!("the record at offset {offset} is not a token");
        if kind != TYPE_CREATE && kind != TYPE_TOKEN {
            return Err(not_a_token());
        }
        // Id (8 bytes), user id (4), the name's length (1) and the name, the
        // hash (32), then the creation time (8).
        let name_len = usize::from(*body.get(12).ok_or_else(not_a_token)?);
        let (name_at, created_at) = (13, 13 + name_len + 32);
        let field = body.get(created_at..created_at + 8).ok_or_else(not_a_token)?;
        Ok(StoredToken {
            stored,
            kind,
            body,
            user_id: u32::from_le_bytes(body[8..12].try_into().expect("4 bytes")),
            name: &body[name_at..name_at + name_len],
            created_at_us: u64::from_le_bytes(field.try_into().expect("8 bytes")),
        })
    }
}

/// The user id and name of the create or token record at `offset`, a record
/// replay has accepted, read in place (the compactor orders its snapshot by
/// them).
pub fn recorded_user_and_name(bytes: &[u8], offset: usize) -> Result<(u32, &[u8]), RecordFault> {
    StoredToken::at(bytes, offset).map(|token| (token.user_id, token.name))
}

impl Journal for TokenLog {
    fn append(&mut self, batch: &[Mutation], commit_at_us: u64) -> io::Result<()> {
        fail::fail_point!("log-append", |_| Err(io::Error::other("injected by the log-append failpoint")));
        // One commit, one batch: its records become durable together, or
        // (torn by a power loss before the sync returned) are cut together.
        self.scratch.clear();
        let start = begin_batch(&mut self.scratch);
        let first_seq = self.seq + 1;
        let mut seq = self.seq;
        for mutation in batch {
            seq += 1;
            encode_record(&mut self.scratch, seq, commit_at_us, &Record::of(mutation));
        }
        finish_batch(&mut self.scratch, start, batch.len(), first_seq).map_err(io::Error::other)?;
        self.seq = seq;
        self.file.write_all(&self.scratch)?;
        self.file.sync_data()?;
        self.records += batch.len() as u64;
        self.bytes += self.scratch.len() as u64;
        if let Some(compaction) = &mut self.compaction {
            compaction.appended(&self.scratch, batch.len() as u64);
        }
        Ok(())
    }

    fn after_append(&mut self, state: &Replica, next_id: u64) -> io::Result<()> {
        self.finish_compaction()?;
        self.maybe_compact(state, next_id);
        metrics::log_file(self.bytes, self.records, state.len() as u64);
        Ok(())
    }
}

impl Drop for TokenLog {
    fn drop(&mut self) {
        // An unfinished compaction is abandoned; its file is removed at the
        // next start. The log itself is always complete and synced.
        if let Some(compaction) = self.compaction.take() {
            compaction.abandon(&self.dir);
        }
    }
}
