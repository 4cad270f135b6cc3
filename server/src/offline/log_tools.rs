//! `latchkey-server log verify|dump|stats`: the token log read the way a
//! start replays it (`store::inspect`: the same decoder, the same checks),
//! without changing a byte, and reported for an operator or a script.
//!
//! The file is read whole, under the data directory's lock taken shared and
//! only for that read: a tool is refused while a server runs on the
//! directory, and a server cannot start during the read (README, "Offline
//! tools"). `--file` reads any token file instead (a copy, an export), with
//! no lock.
//!
//! Nothing here prints a token hash, or anything made from one: the records
//! that carry one (create, token, rotate) are shown without it, in text and
//! in JSON alike.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use latchkey_protocol::ext::TokenStatus;
use serde_json::{Map, Value, json};

/// One dump line's fields, in print order.
type Fields = Vec<(&'static str, Value)>;

use crate::config::{Config, StorageBackend};
use crate::datadir::{DataDir, DataDirError};
use crate::registry::{LastUsed, TokenRecord};
use crate::store::log::{FORMAT_VERSION, LOG_FILE, Record, StoredRecord, encode_snapshot, record_type_name};
use crate::store::{CompactionPolicy, Damage, Inspection, inspect};

/// Exit code: the file replays as it is.
pub const EXIT_CLEAN: u8 = 0;
/// Exit code: nothing was checked (the directory is in use by a server, the
/// file is missing or unreadable).
pub const EXIT_NOT_READ: u8 = 1;
/// Exit code: bad usage or configuration (clap's own code for bad arguments).
pub const EXIT_USAGE: u8 = 2;
/// Exit code: a torn tail, which a start cuts off and goes on.
pub const EXIT_TORN_TAIL: u8 = 3;
/// Exit code: damage a start refuses (corruption followed by valid records,
/// a short snapshot, not a token log, a newer format).
pub const EXIT_CORRUPT: u8 = 4;

/// Why a log could not be read at all.
#[derive(Debug, thiserror::Error)]
pub enum LogToolError {
    #[error(
        "[storage] backend = \"etcd\": the log tools read the file backend's token log only. \
         For a cluster's tokens: `latchkey-server export --out FILE`, then `latchkey-server log \
         verify --file FILE`"
    )]
    EtcdBackend,
    #[error("no data directory at {path} ([system] path, LATCHKEY_SYSTEM_PATH)")]
    NoDataDir { path: PathBuf },
    #[error(
        "data directory {path} is in use by a running latchkey-server (lock held on {lock}); the log \
         tools read a stopped server's directory only. Stop the server, or run them on a copy \
         (`cp -a` the directory, then LATCHKEY_SYSTEM_PATH=COPY, or --file COPY/{LOG_FILE})"
    )]
    InUse { path: PathBuf, lock: PathBuf },
    #[error("{path}: no token log here (a server creates it on its first start)")]
    NoLog { path: PathBuf },
    #[error(transparent)]
    DataDir(DataDirError),
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
}

impl LogToolError {
    pub fn exit_code(&self) -> u8 {
        match self {
            LogToolError::EtcdBackend | LogToolError::NoDataDir { .. } => EXIT_USAGE,
            _ => EXIT_NOT_READ,
        }
    }
}

/// A token file's bytes, read whole, and where they came from.
pub struct LogFile {
    pub path: PathBuf,
    pub bytes: Vec<u8>,
}

/// Reads `file`, or the configured data directory's log under its lock
/// taken shared (released once read).
pub fn read_log(config: &Config, file: Option<&Path>) -> Result<LogFile, LogToolError> {
    let read = |path: &Path| match std::fs::read(path) {
        Ok(bytes) => Ok(LogFile { path: path.to_owned(), bytes }),
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            Err(LogToolError::NoLog { path: path.to_owned() })
        }
        Err(source) => Err(LogToolError::Read { path: path.to_owned(), source }),
    };
    if let Some(file) = file {
        return read(file);
    }
    if config.storage.backend == StorageBackend::Etcd {
        return Err(LogToolError::EtcdBackend);
    }
    let dir = &config.system.path;
    if !dir.is_dir() {
        return Err(LogToolError::NoDataDir { path: dir.clone() });
    }
    let _shared = DataDir::lock_shared(dir).map_err(|error| match error {
        DataDirError::Locked { path, lock } => LogToolError::InUse { path, lock },
        other => LogToolError::DataDir(other),
    })?;
    read(&dir.join(LOG_FILE))
}

/// The exit code for what a start would find.
pub fn exit_code(damage: Option<&Damage>) -> u8 {
    match damage {
        None => EXIT_CLEAN,
        Some(Damage::TornTail { .. }) => EXIT_TORN_TAIL,
        Some(Damage::Refused(_)) => EXIT_CORRUPT,
    }
}

/// What the records say, beyond the state they leave: counted as replay
/// hands them over. The batches counted here are a guess from commit times,
/// for files older than format version 3 (which frames them; replay counts
/// those).
#[derive(Default)]
struct Tally {
    /// Records by their type byte.
    by_kind: BTreeMap<u8, u64>,
    batches: u64,
    last_batch: Option<Batch>,
    deleted: u64,
}

/// The write a record came in: a compaction's snapshot, or an append
/// (records of one append share their commit time).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Batch {
    Snapshot,
    Append { commit_at_us: u64 },
}

impl Tally {
    fn see(&mut self, stored: &StoredRecord) {
        *self.by_kind.entry(stored.kind).or_default() += 1;
        // Snapshot token records carry seq 0; appended records never do.
        let batch = if stored.seq == 0 || matches!(stored.record, Record::Snapshot { .. }) {
            Batch::Snapshot
        } else {
            Batch::Append { commit_at_us: stored.commit_at_us }
        };
        if self.last_batch != Some(batch) {
            self.batches += 1;
            self.last_batch = Some(batch);
        }
        if matches!(stored.record, Record::Delete { .. }) {
            self.deleted += 1;
        }
    }
}

/// Tokens by status at `now_us`, and per user.
#[derive(Default)]
struct Census {
    active: u64,
    revoked: u64,
    expired: u64,
    /// user id → (tokens, active tokens)
    per_user: HashMap<u32, (u64, u64)>,
}

impl Census {
    fn of(inspection: &Inspection, now_us: u64) -> Census {
        let mut census = Census::default();
        for (_, entry) in inspection.state.iter() {
            let status = entry.status(now_us);
            let counts = census.per_user.entry(entry.user_id).or_default();
            counts.0 += 1;
            match status {
                TokenStatus::Active => {
                    census.active += 1;
                    counts.1 += 1;
                }
                TokenStatus::Revoked => census.revoked += 1,
                TokenStatus::Expired => census.expired += 1,
            }
        }
        census
    }

    /// The `top` users with the most tokens, most first (then by id).
    fn top_users(&self, top: usize) -> Vec<(u32, u64, u64)> {
        let mut users: Vec<_> =
            self.per_user.iter().map(|(&user, &(tokens, active))| (user, tokens, active)).collect();
        users.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        users.truncate(top);
        users
    }
}

/// What a compaction would leave: the exact size of the snapshot it writes.
struct Reclaim {
    file_bytes: u64,
    records: u64,
    due: bool,
}

impl Reclaim {
    fn of(inspection: &Inspection, policy: CompactionPolicy) -> Reclaim {
        let tokens: Vec<TokenRecord> = inspection.state.records().collect();
        // Encoded only to be measured; never printed (it holds the hashes).
        let snapshot = encode_snapshot(&tokens, inspection.next_id, inspection.last_seq, 0);
        Reclaim {
            file_bytes: snapshot.len() as u64,
            records: tokens.len() as u64 + 1,
            due: policy.wants(inspection.records, tokens.len()),
        }
    }
}

/// The problem, as one sentence that names its offset and what a start does.
fn problem_text(inspection: &Inspection, damage: &Damage) -> String {
    match damage {
        Damage::TornTail { offset, reason } => format!(
            "torn tail at byte offset {offset}: {reason}; a start cuts the last {} bytes (a crash \
             during an append: nothing in them was acknowledged) and goes on",
            inspection.file_bytes - offset
        ),
        Damage::Refused(error) => format!("damage at byte offset {}: {error}", damage.offset()),
    }
}

fn problem_json(inspection: &Inspection) -> Value {
    let Some(damage) = &inspection.damage else { return Value::Null };
    let (kind, start) = match damage {
        Damage::TornTail { .. } => ("torn_tail", "cuts"),
        Damage::Refused(_) => ("corrupt", "refuses"),
    };
    json!({
        "kind": kind,
        "offset": damage.offset(),
        "start": start,
        "message": problem_text(inspection, damage),
    })
}

fn status_word(inspection: &Inspection) -> &'static str {
    match inspection.damage {
        None => "clean",
        Some(Damage::TornTail { .. }) => "torn_tail",
        Some(Damage::Refused(_)) => "corrupt",
    }
}

fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 { 0.0 } else { part as f64 / whole as f64 }
}

/// `log verify`: replays the file and reports what a start would find.
/// Returns the exit code.
pub fn verify(log: &LogFile, json: bool, out: &mut dyn Write) -> io::Result<u8> {
    let mut tally = Tally::default();
    let inspection = inspect(&log.path, &log.bytes, |_, stored| tally.see(stored));
    let batches = inspection.batches.unwrap_or(tally.batches);
    let census = Census::of(&inspection, crate::clock::now_us());
    let live = inspection.state.len() as u64;
    let dead = inspection.records.saturating_sub(live);
    if json {
        let report = json!({
            "path": log.path.display().to_string(),
            "format_version": inspection.version,
            "file_bytes": inspection.file_bytes,
            "valid_bytes": inspection.valid_bytes,
            "records": inspection.records,
            "batches": batches,
            "tokens": {
                "live": live,
                "active": census.active,
                "revoked": census.revoked,
                "expired": census.expired,
                "deleted": tally.deleted,
            },
            "dead_records": dead,
            "next_id": inspection.next_id,
            "last_seq": inspection.last_seq,
            "status": status_word(&inspection),
            "problem": problem_json(&inspection),
        });
        writeln!(out, "{report}")?;
    } else {
        writeln!(out, "file            {}", log.path.display())?;
        writeln!(out, "file bytes      {}", inspection.file_bytes)?;
        match inspection.version {
            Some(version) if version < FORMAT_VERSION => {
                writeln!(out, "format version  {version} (a start rewrites it as version {FORMAT_VERSION})")?
            }
            Some(version) => writeln!(out, "format version  {version}")?,
            None => writeln!(out, "format version  unknown")?,
        }
        writeln!(out, "records         {} in {batches} batches", inspection.records)?;
        writeln!(
            out,
            "tokens          {live} live ({} active, {} revoked, {} expired), {} deleted",
            census.active, census.revoked, census.expired, tally.deleted
        )?;
        writeln!(
            out,
            "dead records    {dead} of {} ({:.1}%)",
            inspection.records,
            100.0 * ratio(dead, inspection.records)
        )?;
        writeln!(out, "next id         {}", inspection.next_id)?;
        match &inspection.damage {
            None => writeln!(out, "status          clean: a start replays it as it is")?,
            Some(damage) => writeln!(out, "status          {}", problem_text(&inspection, damage))?,
        }
    }
    Ok(exit_code(inspection.damage.as_ref()))
}

/// `log stats`: counts by record type, tokens by status and per user, the
/// dead share and what a compaction would reclaim. Returns the exit code.
pub fn stats(
    log: &LogFile,
    policy: CompactionPolicy,
    top: usize,
    json: bool,
    out: &mut dyn Write,
) -> io::Result<u8> {
    let mut tally = Tally::default();
    let inspection = inspect(&log.path, &log.bytes, |_, stored| tally.see(stored));
    let batches = inspection.batches.unwrap_or(tally.batches);
    let census = Census::of(&inspection, crate::clock::now_us());
    let reclaim = Reclaim::of(&inspection, policy);
    let live = inspection.state.len() as u64;
    let dead = inspection.records.saturating_sub(live);
    let top_users = census.top_users(top);
    if json {
        let by_kind: Map<String, Value> = tally
            .by_kind
            .iter()
            .map(|(&kind, &count)| (record_type_name(kind).to_owned(), json!(count)))
            .collect();
        let users: Vec<Value> = top_users
            .iter()
            .map(|&(user_id, tokens, active)| json!({"user_id": user_id, "tokens": tokens, "active": active}))
            .collect();
        let report = json!({
            "path": log.path.display().to_string(),
            "file_bytes": inspection.file_bytes,
            "records": inspection.records,
            "records_by_kind": by_kind,
            "batches": batches,
            "tokens": {
                "live": live,
                "active": census.active,
                "revoked": census.revoked,
                "expired": census.expired,
                "deleted": tally.deleted,
            },
            "users": census.per_user.len(),
            "top_users": users,
            "dead_records": dead,
            "dead_ratio": ratio(dead, inspection.records),
            "compaction": {
                "file_bytes": reclaim.file_bytes,
                "records": reclaim.records,
                "reclaims_bytes": inspection.valid_bytes.saturating_sub(reclaim.file_bytes),
                "reclaims_records": inspection.records.saturating_sub(reclaim.records),
                "min_records": policy.min_records,
                "dead_ratio": policy.dead_ratio,
                "due": reclaim.due,
            },
            "status": status_word(&inspection),
            "problem": problem_json(&inspection),
        });
        writeln!(out, "{report}")?;
    } else {
        writeln!(out, "file            {} ({} bytes)", log.path.display(), inspection.file_bytes)?;
        writeln!(out, "records         {} in {batches} batches", inspection.records)?;
        for (&kind, count) in &tally.by_kind {
            writeln!(out, "  {:<13} {count}", record_type_name(kind))?;
        }
        writeln!(
            out,
            "tokens          {live} live: {} active, {} revoked, {} expired; {} deleted",
            census.active, census.revoked, census.expired, tally.deleted
        )?;
        writeln!(out, "users           {} with tokens; top {}:", census.per_user.len(), top_users.len())?;
        for (user_id, tokens, active) in &top_users {
            writeln!(out, "  user {user_id:<8} {tokens} tokens, {active} active")?;
        }
        writeln!(
            out,
            "dead ratio      {:.3} ({dead} of {} records describe no live token)",
            ratio(dead, inspection.records),
            inspection.records
        )?;
        writeln!(
            out,
            "compaction      would write {} bytes in {} records, reclaiming {} bytes and {} records",
            reclaim.file_bytes,
            reclaim.records,
            inspection.valid_bytes.saturating_sub(reclaim.file_bytes),
            inspection.records.saturating_sub(reclaim.records)
        )?;
        writeln!(
            out,
            "                the server compacts at {} records or more with a dead ratio over {}: {}",
            policy.min_records,
            policy.dead_ratio,
            if reclaim.due { "due now" } else { "not due" }
        )?;
    }
    Ok(exit_code(inspection.damage.as_ref()))
}

/// `log dump`: one line per record replay accepts, in file order, as
/// `key=value` text or one JSON object. Returns the exit code and, when
/// the file is damaged, the problem (for standard error: the lines stay
/// records only).
pub fn dump(log: &LogFile, json: bool, out: &mut dyn Write) -> io::Result<(u8, Option<String>)> {
    let mut names = TokenNames::default();
    let mut failed: Option<io::Error> = None;
    let inspection = inspect(&log.path, &log.bytes, |offset, stored| {
        if failed.is_some() {
            return;
        }
        let fields = names.fields(offset, stored);
        let line = if json { json_line(&fields) } else { text_line(&fields) };
        if let Err(error) = writeln!(out, "{line}") {
            failed = Some(error);
        }
    });
    if let Some(error) = failed {
        return Err(error);
    }
    let problem = inspection.damage.as_ref().map(|damage| problem_text(&inspection, damage));
    Ok((exit_code(inspection.damage.as_ref()), problem))
}

/// The owner and name of each token as the records so far left them, so a
/// record that carries only an id is shown with both.
#[derive(Default)]
struct TokenNames(HashMap<u64, (u32, Arc<str>)>);

impl TokenNames {
    /// One record's fields, in print order. Never a hash.
    fn fields(&mut self, offset: u64, stored: &StoredRecord) -> Fields {
        let mut fields: Fields = vec![
            ("offset", json!(offset)),
            ("seq", json!(stored.seq)),
            ("commit_at_us", json!(stored.commit_at_us)),
            ("kind", json!(record_type_name(stored.kind))),
        ];
        match &stored.record {
            Record::Create(token) => {
                self.0.insert(token.id, (token.user_id, Arc::clone(&token.name)));
                self.token(&mut fields, token.id);
                fields.push(("created_at_us", json!(token.created_at_us)));
                fields.push(("expiry_at_us", json!(token.expiry_at_us.map(|at| at.get()))));
                if let Some(at) = token.revoked_at_us {
                    fields.push(("revoked_at_us", json!(at.get())));
                }
                if let Some(used) = token.last_used {
                    last_used(&mut fields, used);
                }
                if let Some(extras) = token.extras.as_deref() {
                    fields.push(("description", json!(&*extras.description)));
                    let scopes: Vec<&str> = extras.scopes.iter().map(|scope| &**scope).collect();
                    fields.push(("scopes", json!(scopes)));
                    let networks: Vec<String> = extras.networks.iter().map(ToString::to_string).collect();
                    fields.push(("networks", json!(networks)));
                }
            }
            Record::Delete { id } => {
                self.token(&mut fields, *id);
                self.0.remove(id);
            }
            Record::Snapshot { next_id, last_seq, tokens } => {
                fields.push(("next_id", json!(next_id)));
                fields.push(("last_seq", json!(last_seq)));
                fields.push(("tokens", json!(tokens)));
            }
            Record::Revoke { id, at_us } => {
                self.token(&mut fields, *id);
                fields.push(("revoked_at_us", json!(at_us.get())));
            }
            Record::Update { id, name, description } => {
                if let Some(entry) = self.0.get_mut(id) {
                    entry.1 = Arc::clone(name);
                }
                self.token(&mut fields, *id);
                fields.push(("description", json!(&**description)));
            }
            // The new hash stays out: only the expiry is shown.
            Record::Rotate { id, hash: _, expiry_at_us }
            | Record::Reactivate { id, hash: _, expiry_at_us } => {
                self.token(&mut fields, *id);
                fields.push(("expiry_at_us", json!(expiry_at_us.map(|at| at.get()))));
            }
            Record::Access { id, scopes, networks } => {
                self.token(&mut fields, *id);
                let scopes: Vec<&str> = scopes.iter().map(|scope| &**scope).collect();
                fields.push(("scopes", json!(scopes)));
                let networks: Vec<String> = networks.iter().map(ToString::to_string).collect();
                fields.push(("networks", json!(networks)));
            }
            Record::Touch { id, used } => {
                self.token(&mut fields, *id);
                last_used(&mut fields, *used);
            }
        }
        fields
    }

    fn token(&self, fields: &mut Fields, id: u64) {
        fields.push(("id", json!(id)));
        if let Some((user_id, name)) = self.0.get(&id) {
            fields.push(("user_id", json!(user_id)));
            fields.push(("name", json!(&**name)));
        }
    }
}

fn last_used(fields: &mut Fields, used: LastUsed) {
    fields.push(("last_used_at_us", json!(used.at_us)));
    fields.push(("last_used_peer", json!(used.peer.to_string())));
}

/// A dump line as `key=value` pairs: times (`…_at_us`) in RFC 3339 UTC
/// under the name without `_us`, text quoted and escaped where it could be
/// misread (one record is always one line), lists joined with commas.
fn text_line(fields: &Fields) -> String {
    let mut line = String::new();
    for (key, value) in fields {
        // An empty list or text tells a reader nothing on this line (the
        // JSON keeps them: `[]`, `""`).
        let empty = match value {
            Value::String(text) => text.is_empty(),
            Value::Array(items) => items.is_empty(),
            _ => false,
        };
        if empty {
            continue;
        }
        if !line.is_empty() {
            line.push(' ');
        }
        match (key.strip_suffix("_us"), value) {
            (Some(name), Value::Number(number)) => {
                let at = number.as_u64().map_or_else(|| number.to_string(), rfc3339);
                line.push_str(&format!("{name}={at}"));
            }
            (Some(name), Value::Null) => line.push_str(&format!("{name}=never")),
            (_, Value::String(text)) => line.push_str(&format!("{key}={}", quoted(text))),
            (_, Value::Array(items)) => {
                let items: Vec<&str> = items.iter().map(|item| item.as_str().unwrap_or("")).collect();
                line.push_str(&format!("{key}={}", quoted(&items.join(","))));
            }
            (_, value) => line.push_str(&format!("{key}={value}")),
        }
    }
    line
}

/// A dump line as one JSON object, keys in print order.
fn json_line(fields: &Fields) -> String {
    let mut line = String::from("{");
    for (key, value) in fields {
        if line.len() > 1 {
            line.push(',');
        }
        line.push_str(&Value::from(*key).to_string());
        line.push(':');
        line.push_str(&value.to_string());
    }
    line.push('}');
    line
}

/// Text as it is when it cannot be misread, else quoted and escaped.
fn quoted(text: &str) -> String {
    let plain =
        !text.is_empty() && text.chars().all(|c| c.is_ascii_graphic() && !matches!(c, '"' | '=' | '\\'));
    if plain { text.to_owned() } else { format!("{text:?}") }
}

fn rfc3339(at_us: u64) -> String {
    crate::clock::rfc3339_us(at_us)
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::num::NonZeroU64;

    use super::*;
    use crate::registry::TokenExtras;
    use crate::store::log::{begin_batch, encode_record, finish_batch, header};

    fn token(id: u64, name: &str) -> TokenRecord {
        TokenRecord {
            id,
            user_id: 7,
            name: name.into(),
            hash: [id as u8 + 0xA0; 32],
            created_at_us: 1_700_000_000_000_000,
            expiry_at_us: None,
            revoked_at_us: None,
            extras: None,
            last_used: None,
        }
    }

    /// A log of two appends: two creates (one with extras), then a revoke,
    /// a rename, a rotate, a last use and a delete.
    fn sample() -> Vec<u8> {
        let mut bytes = header().to_vec();
        let mut scoped = token(2, "scoped");
        scoped.extras = TokenExtras {
            description: "deploy \"bot\"\nline two".into(),
            scopes: vec!["tokens:read".into()].into(),
            networks: vec!["10.0.0.0/8".parse().unwrap()].into(),
        }
        .shared();
        let at = NonZeroU64::new(1_700_000_001_000_000).unwrap();
        let peer: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let batches = [
            (10, vec![Record::Create(token(1, "plain")), Record::Create(scoped)]),
            (
                20,
                vec![
                    Record::Revoke { id: 1, at_us: at },
                    Record::Update { id: 2, name: "renamed".into(), description: "new".into() },
                    Record::Rotate { id: 2, hash: [0xEE; 32], expiry_at_us: Some(at) },
                    Record::Touch { id: 2, used: LastUsed { at_us: at.get(), peer } },
                ],
            ),
            (30, vec![Record::Delete { id: 1 }]),
        ];
        let mut seq = 0;
        for (commit, records) in batches {
            let start = begin_batch(&mut bytes);
            for record in &records {
                seq += 1;
                encode_record(&mut bytes, seq, commit, record);
            }
            finish_batch(&mut bytes, start, records.len(), seq + 1 - records.len() as u64).unwrap();
        }
        bytes
    }

    fn file(bytes: Vec<u8>) -> LogFile {
        LogFile { path: "tokens.log".into(), bytes }
    }

    #[test]
    fn verify_counts_records_batches_and_tokens() {
        let mut out = Vec::new();
        assert_eq!(verify(&file(sample()), true, &mut out).unwrap(), EXIT_CLEAN);
        let report: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(report["records"], 7);
        assert_eq!(report["batches"], 3);
        assert_eq!(report["tokens"]["live"], 1);
        assert_eq!(report["tokens"]["deleted"], 1);
        assert_eq!(report["dead_records"], 6);
        assert_eq!(report["status"], "clean");
    }

    #[test]
    fn a_torn_tail_and_a_flipped_byte_have_their_own_codes_and_offsets() {
        let whole = sample();
        let mut torn = whole.clone();
        torn.truncate(whole.len() - 3);
        let mut out = Vec::new();
        assert_eq!(verify(&file(torn), true, &mut out).unwrap(), EXIT_TORN_TAIL);
        let report: Value = serde_json::from_slice(&out).unwrap();
        let last = report["valid_bytes"].as_u64().unwrap();
        assert_eq!(report["problem"]["offset"], last);
        assert_eq!(report["records"], 6);

        let mut flipped = whole.clone();
        flipped[FIRST_RECORD_PAYLOAD_BYTE] ^= 0x01;
        let mut out = Vec::new();
        assert_eq!(verify(&file(flipped), false, &mut out).unwrap(), EXIT_CORRUPT);
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("checksum mismatch"), "{text}");
    }

    /// A byte of the first record's payload: file header (16), batch header
    /// (28), record header (12), then 1 in.
    const FIRST_RECORD_PAYLOAD_BYTE: usize = 16 + 28 + 12 + 1;

    #[test]
    fn dump_shows_every_record_on_one_line_without_a_hash() {
        for json in [false, true] {
            let mut out = Vec::new();
            let (code, problem) = dump(&file(sample()), json, &mut out).unwrap();
            assert_eq!((code, problem), (EXIT_CLEAN, None));
            let text = String::from_utf8(out).unwrap();
            assert_eq!(text.lines().count(), 7, "{text}");
            for byte in [0xA1u8, 0xA2, 0xEE] {
                let hex: String = std::iter::repeat_n(format!("{byte:02x}"), 32).collect();
                assert!(!text.to_lowercase().contains(&hex), "{text}");
                assert!(!text.contains(&format!("{byte}, {byte}, {byte}")), "{text}");
            }
            let renamed = text.lines().find(|line| line.contains("rotate")).unwrap();
            assert!(renamed.contains("renamed"), "the rotate names the token as renamed: {renamed}");
            if json {
                for line in text.lines() {
                    let _: Value = serde_json::from_str(line).unwrap();
                }
                assert!(
                    text.starts_with(r#"{"offset":44,"seq":1,"commit_at_us":10,"kind":"create","id":1,"#),
                    "{text}"
                );
            } else {
                assert!(text.contains(r#"description="deploy \"bot\"\nline two""#), "{text}");
                assert!(text.contains("created_at=2023-11-14T22:13:20.000000Z"), "{text}");
                assert!(text.starts_with("offset=44 seq=1 commit_at=1970-01-01T00:00:00.000010Z kind=create id=1 user_id=7 name=plain "), "{text}");
            }
        }
    }

    /// The records of format version 4 are shown like the others: the
    /// lists an access edit left, a reactivation's expiry, never a hash.
    #[test]
    fn dump_shows_access_edits_and_reactivations() {
        let mut bytes = header().to_vec();
        let at = NonZeroU64::new(1_700_000_001_000_000).unwrap();
        let records = [
            Record::Create(token(1, "edited")),
            Record::Revoke { id: 1, at_us: at },
            Record::Reactivate { id: 1, hash: [0xEF; 32], expiry_at_us: Some(at) },
            Record::Access {
                id: 1,
                scopes: vec!["me:read".into(), "stream:*:read".into()].into(),
                networks: vec!["10.0.0.0/8".parse().unwrap()].into(),
            },
        ];
        let start = begin_batch(&mut bytes);
        for (seq, record) in (1..).zip(&records) {
            encode_record(&mut bytes, seq, 10, record);
        }
        finish_batch(&mut bytes, start, records.len(), 1).unwrap();
        let mut out = Vec::new();
        assert_eq!(dump(&file(bytes.clone()), true, &mut out).unwrap(), (EXIT_CLEAN, None));
        let lines: Vec<Value> =
            String::from_utf8(out).unwrap().lines().map(|line| serde_json::from_str(line).unwrap()).collect();
        assert_eq!(lines.len(), 4);
        assert_eq!((&lines[2]["kind"], &lines[2]["name"]), (&json!("reactivate"), &json!("edited")));
        assert_eq!(lines[2]["expiry_at_us"], at.get());
        assert_eq!(lines[3]["kind"], "access");
        assert_eq!(lines[3]["scopes"], json!(["me:read", "stream:*:read"]));
        assert_eq!(lines[3]["networks"], json!(["10.0.0.0/8"]));
        let text = lines.iter().map(Value::to_string).collect::<String>();
        assert!(!text.contains(&"ef".repeat(32)) && !text.contains("239, 239"), "no hash: {text}");
        let mut out = Vec::new();
        assert_eq!(verify(&file(bytes), true, &mut out).unwrap(), EXIT_CLEAN);
        let report: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!((&report["tokens"]["live"], &report["tokens"]["revoked"]), (&json!(1), &json!(0)));
    }

    #[test]
    fn a_torn_header_is_a_torn_tail_at_0_and_an_empty_file_is_clean() {
        let mut out = Vec::new();
        assert_eq!(verify(&file(header()[..5].to_vec()), true, &mut out).unwrap(), EXIT_TORN_TAIL);
        let report: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!((&report["problem"]["offset"], &report["problem"]["start"]), (&0.into(), &"cuts".into()));
        let mut out = Vec::new();
        assert_eq!(verify(&file(Vec::new()), false, &mut out).unwrap(), EXIT_CLEAN);
        let mut out = Vec::new();
        assert_eq!(verify(&file(b"LKTOKLOG but no header".to_vec()), false, &mut out).unwrap(), EXIT_CORRUPT);
    }

    #[test]
    fn stats_says_what_a_compaction_reclaims() {
        let never = CompactionPolicy { min_records: u64::MAX, dead_ratio: 1.0 };
        let mut out = Vec::new();
        assert_eq!(stats(&file(sample()), never, 10, true, &mut out).unwrap(), EXIT_CLEAN);
        let report: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(report["records_by_kind"]["create"], 1);
        assert_eq!(report["records_by_kind"]["token"], 1);
        assert_eq!(report["records_by_kind"]["last-used"], 1);
        assert_eq!(report["top_users"][0]["user_id"], 7);
        assert_eq!(report["compaction"]["records"], 2);
        assert_eq!(report["compaction"]["due"], false);
        let bytes = report["file_bytes"].as_u64().unwrap();
        let after = report["compaction"]["file_bytes"].as_u64().unwrap();
        assert_eq!(report["compaction"]["reclaims_bytes"], bytes - after);
    }
}
