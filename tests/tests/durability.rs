//! Durability end to end: what was acknowledged survives SIGTERM and SIGKILL
//! restarts, torn and corrupt token logs, compaction under concurrent writes
//! and the expiry cleaner, and no secret ever reaches the data directory.
//!
//! Token log facts used here (server/src/store/log.rs, format versions 3 and 4):
//! `<data dir>/tokens.log` is a 16-byte header followed by batches, one per
//! append: a 28-byte header `marker c7 51 3b 9d | length u32 | records u32 |
//! first_seq u64 | crc u32 | header crc u32`, then its records `marker e3 a7
//! c5 1b | length u32 | crc u32 | payload`, payload `seq u64 | commit_at_us
//! u64 | type u8 | body`.

mod common;

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use latchkey_sdk::{Expiry, PersonalAccessTokenInfo};
use latchkey_tests::{DataHome, ServerSpec, TestServer, contains, read_tree};

const LOG_FILE: &str = "tokens.log";
const HEADER_BYTES: usize = 16;
const MARKER: [u8; 4] = [0xe3, 0xa7, 0xc5, 0x1b];
const BATCH_MARKER: [u8; 4] = [0xc7, 0x51, 0x3b, 0x9d];
/// Marker, length, crc.
const RECORD_HEADER_BYTES: usize = 12;
/// Marker, length, records, first_seq, crc, header crc.
const BATCH_HEADER_BYTES: usize = 28;
const TYPE_SNAPSHOT: u8 = 3;

/// Status codes the tests expect.
const OK: u32 = 0;
const NOT_FOUND: u32 = 20;
const EXPIRED: u32 = 54;
const ALREADY_EXISTS: u32 = 51;

#[derive(Debug, Clone, Copy)]
enum Stop {
    /// SIGTERM: graceful, must exit 0.
    Term,
    /// SIGKILL: a crash.
    Kill,
}

/// Stops `server` the given way and checks how it ended.
fn stop(server: TestServer, how: Stop) {
    match how {
        Stop::Term => {
            let status = server.stop();
            assert_eq!(status.code(), Some(0), "SIGTERM exit status: {status}");
        }
        Stop::Kill => {
            let status = server.kill();
            assert_eq!(status.signal(), Some(libc::SIGKILL), "SIGKILL exit status: {status}");
        }
    }
}

/// Stops the server and starts a new one on the same data directory.
fn restart(server: TestServer, how: Stop, home: &DataHome, spec: &ServerSpec) -> TestServer {
    stop(server, how);
    TestServer::start(home, spec)
}

/// The status of a token login on a fresh connection (0 on success).
async fn token_login(address: SocketAddr, token: &str) -> u32 {
    let mut client = connect(address).await;
    status(client.login_with_personal_access_token(token).await)
}

/// Root's token list (sorted by name) over a fresh root connection.
async fn list(address: SocketAddr) -> Vec<PersonalAccessTokenInfo> {
    root(address).await.get_personal_access_tokens().await.expect("list tokens")
}

fn names(entries: &[PersonalAccessTokenInfo]) -> Vec<&str> {
    entries.iter().map(|entry| entry.name.as_str()).collect()
}

fn entry<'a>(entries: &'a [PersonalAccessTokenInfo], name: &str) -> &'a PersonalAccessTokenInfo {
    entries
        .iter()
        .find(|entry| entry.name == name)
        .unwrap_or_else(|| panic!("{name} not listed: {entries:?}"))
}

/// Polls a token login until it answers `wanted`, failing on any status not
/// in `allowed_meanwhile`. Returns the distinct statuses seen, in order.
async fn wait_for_login_status(
    address: SocketAddr,
    token: &str,
    wanted: u32,
    allowed_meanwhile: &[u32],
) -> Vec<u32> {
    let deadline = Instant::now() + POLL_LIMIT;
    let mut seen: Vec<u32> = Vec::new();
    loop {
        let code = token_login(address, token).await;
        if seen.last() != Some(&code) {
            seen.push(code);
        }
        if code == wanted {
            return seen;
        }
        assert!(
            allowed_meanwhile.contains(&code),
            "login answered {code} while waiting for {wanted} (seen {seen:?})"
        );
        assert!(Instant::now() < deadline, "login never answered {wanted}; seen {seen:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Start and end offsets of every batch in a token log, walking the length
/// fields.
fn batch_offsets(bytes: &[u8]) -> Vec<(usize, usize)> {
    assert!(bytes.len() >= HEADER_BYTES && &bytes[..8] == b"LKTOKLOG", "not a token log");
    let mut batches = Vec::new();
    let mut at = HEADER_BYTES;
    while at < bytes.len() {
        assert_eq!(bytes[at..at + 4], BATCH_MARKER, "no batch marker at offset {at}");
        let length = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
        batches.push((at, at + BATCH_HEADER_BYTES + length));
        at += BATCH_HEADER_BYTES + length;
    }
    assert_eq!(at, bytes.len(), "the last batch overruns the file");
    batches
}

/// Start offsets of every record in a token log, walking the length fields.
fn record_offsets(bytes: &[u8]) -> Vec<usize> {
    let mut offsets = Vec::new();
    for (start, end) in batch_offsets(bytes) {
        let mut at = start + BATCH_HEADER_BYTES;
        while at < end {
            assert_eq!(bytes[at..at + 4], MARKER, "no record marker at offset {at}");
            let length = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
            offsets.push(at);
            at += RECORD_HEADER_BYTES + length;
        }
        assert_eq!(at, end, "a record overruns its batch");
    }
    offsets
}

/// The type byte of the record at `at`.
fn record_type(bytes: &[u8], at: usize) -> u8 {
    bytes[at + RECORD_HEADER_BYTES + 16]
}

/// Bytes of the Create record of a token named `name`.
fn create_record_bytes(name: &str) -> u64 {
    (RECORD_HEADER_BYTES + 17 + 8 + 4 + 1 + name.len() + 32 + 16) as u64
}
/// Bytes of a Delete record.
const DELETE_RECORD_BYTES: u64 = (RECORD_HEADER_BYTES + 17 + 8) as u64;

fn log_path(data_dir: &Path) -> PathBuf {
    data_dir.join(LOG_FILE)
}

fn log_len(data_dir: &Path) -> u64 {
    std::fs::metadata(log_path(data_dir)).expect("tokens.log").len()
}

/// Every number that directly follows `prefix` in `text`.
fn numbers_after(text: &str, prefix: &str) -> Vec<usize> {
    text.split(prefix)
        .skip(1)
        .filter_map(|rest| rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok())
        .collect()
}

/// A fresh home whose data directory is a copy of `from` (every file), with
/// tokens.log replaced by `log`.
fn copy_home(from: &Path, log: &[u8]) -> DataHome {
    let home = DataHome::new();
    let to = home.data_dir();
    std::fs::DirBuilder::new().mode(0o700).create(&to).expect("create data dir");
    for entry in std::fs::read_dir(from).expect("read data dir") {
        let entry = entry.expect("entry");
        if entry.file_type().expect("file type").is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy data file");
        }
    }
    std::fs::write(log_path(&to), log).expect("write tokens.log");
    home
}

/// A server with one shard and one password thread: cheap to start many.
fn small_spec() -> ServerSpec {
    ServerSpec::default().env("LATCHKEY_SYSTEM_SHARDS", "1").env("LATCHKEY_SYSTEM_PASSWORD_THREADS", "1")
}

// ---------------------------------------------------------------------------
// 1. Restarts keep tokens, deletes and expiries.

async fn restart_keeps_tokens_deletes_and_expiries(how: Stop) {
    let home = DataHome::new();
    let spec = ServerSpec::default_root();
    let server = TestServer::start(&home, &spec);
    let mut client = root(server.address).await;
    let forever = client.create_personal_access_token("forever", Expiry::Never).await.unwrap();
    let before_create = now_us();
    let hourly = client
        .create_personal_access_token("hourly", Expiry::After(Duration::from_secs(3600)))
        .await
        .unwrap();
    let after_create = now_us();
    let deleted = client.create_personal_access_token("deleted", Expiry::Never).await.unwrap();
    client.delete_personal_access_token("deleted").await.unwrap();
    let before = client.get_personal_access_tokens().await.unwrap();
    drop(client);
    assert_eq!(names(&before), ["forever", "hourly"]);
    assert_eq!(entry(&before, "forever").expiry_at_us, None);
    let hourly_expiry = entry(&before, "hourly").expiry_at_us.expect("hourly has an expiry");
    // Absolute: the commit time (between the two clock reads) plus one hour.
    assert!(
        (before_create + 3_600_000_000..=after_create + 3_600_000_000).contains(&hourly_expiry),
        "expiry {hourly_expiry} is not commit time + 1 h ({before_create}..={after_create})"
    );
    // Control: the same checks pass before the restart.
    assert_eq!(token_login(server.address, &forever).await, OK);
    assert_eq!(token_login(server.address, &hourly).await, OK);
    assert_eq!(token_login(server.address, &deleted).await, NOT_FOUND);

    let server = restart(server, how, &home, &spec);
    assert!(server.logs().contains("token log replayed"), "{}", server.logs());
    // Fresh connections, no password login anywhere before these.
    assert_eq!(token_login(server.address, &forever).await, OK, "never-expiring token after {how:?}");
    assert_eq!(token_login(server.address, &hourly).await, OK, "1 h token after {how:?}");
    assert_eq!(token_login(server.address, &deleted).await, NOT_FOUND, "deleted token after {how:?}");
    let after = list(server.address).await;
    assert_eq!(after, before, "list after {how:?}");
    // Stored as an absolute timestamp: byte-identical, no drift.
    let after_expiry = entry(&after, "hourly").expiry_at_us.expect("hourly still has an expiry");
    assert_eq!(after_expiry.to_le_bytes(), hourly_expiry.to_le_bytes());
}

#[tokio::test]
async fn sigterm_restart_keeps_tokens_deletes_and_expiries() {
    restart_keeps_tokens_deletes_and_expiries(Stop::Term).await;
}

#[tokio::test]
async fn sigkill_restart_keeps_tokens_deletes_and_expiries() {
    restart_keeps_tokens_deletes_and_expiries(Stop::Kill).await;
}

// ---------------------------------------------------------------------------
// 2. Names of deleted tokens are free again; their old tokens stay dead.

#[tokio::test]
async fn a_deleted_name_can_be_reused_after_restart_and_the_old_token_stays_dead() {
    let home = DataHome::new();
    let spec = ServerSpec::default_root();
    let server = TestServer::start(&home, &spec);
    let mut client = root(server.address).await;
    let first = client.create_personal_access_token("reused", Expiry::Never).await.unwrap();
    let other = client.create_personal_access_token("other", Expiry::Never).await.unwrap();
    client.delete_personal_access_token("reused").await.unwrap();
    drop(client);

    let server = restart(server, Stop::Term, &home, &spec);
    let mut client = root(server.address).await;
    let second = client.create_personal_access_token("reused", Expiry::Never).await.unwrap();
    assert_ne!(second, first);
    assert_eq!(names(&client.get_personal_access_tokens().await.unwrap()), ["other", "reused"]);
    drop(client);
    assert_eq!(token_login(server.address, &second).await, OK);
    assert_eq!(token_login(server.address, &first).await, NOT_FOUND, "old token revived by the new name");
    assert_eq!(token_login(server.address, &other).await, OK);

    // The log now holds create, delete, create of one name: it replays.
    let server = restart(server, Stop::Kill, &home, &spec);
    assert_eq!(token_login(server.address, &second).await, OK);
    assert_eq!(token_login(server.address, &first).await, NOT_FOUND);
    assert_eq!(token_login(server.address, &other).await, OK);
    let mut client = root(server.address).await;
    // The re-created name is taken again.
    assert_eq!(status(client.create_personal_access_token("reused", Expiry::Never).await), ALREADY_EXISTS);
    // And can be freed and reused once more.
    client.delete_personal_access_token("reused").await.unwrap();
    let third = client.create_personal_access_token("reused", Expiry::Never).await.unwrap();
    drop(client);
    let server = restart(server, Stop::Kill, &home, &spec);
    assert_eq!(token_login(server.address, &third).await, OK);
    for dead in [&first, &second] {
        assert_eq!(token_login(server.address, dead).await, NOT_FOUND);
    }
    assert_eq!(names(&list(server.address).await), ["other", "reused"]);
}

// ---------------------------------------------------------------------------
// 3. A log cut anywhere inside its last record.

struct CutFixture {
    data_dir: PathBuf,
    log: Vec<u8>,
    /// Where C's batch starts (the log of A and B ends there).
    start_c: usize,
    tokens: [String; 3],
}

/// Starts on a copy of the fixture cut to `cut` bytes and checks recovery.
/// With `append`, also checks that a token created after the recovery
/// survives a SIGKILL restart (appends continue at the cut).
async fn check_cut(fixture: &CutFixture, cut: usize, append: bool) {
    let home = copy_home(&fixture.data_dir, &fixture.log[..cut]);
    let spec = small_spec();
    let server = tokio::task::block_in_place(|| TestServer::start(&home, &spec));
    let [a, b, c] = &fixture.tokens;
    let logs = server.logs();
    let torn_line = logs.lines().find(|line| line.contains("torn tail"));
    if cut == fixture.start_c {
        assert!(torn_line.is_none(), "cut {cut} at a batch boundary reported a torn tail:\n{logs}");
    } else {
        let line = torn_line.unwrap_or_else(|| panic!("cut {cut}: no torn-tail warning:\n{logs}"));
        assert!(
            line.contains(&fixture.start_c.to_string()),
            "cut {cut}: warning does not name the offset: {line}"
        );
    }
    // The torn bytes were cut off the file itself.
    assert_eq!(
        log_len(&home.data_dir()),
        fixture.start_c as u64,
        "cut {cut}: tokens.log size after recovery"
    );
    assert_eq!(token_login(server.address, a).await, OK, "cut {cut}: token A");
    assert_eq!(token_login(server.address, b).await, OK, "cut {cut}: token B");
    assert_eq!(token_login(server.address, c).await, NOT_FOUND, "cut {cut}: token C");
    let server = if append {
        let mut client = root(server.address).await;
        assert_eq!(names(&client.get_personal_access_tokens().await.unwrap()), ["aaa", "bbb"], "cut {cut}");
        // C's name is free again.
        let d = client.create_personal_access_token("ccc", Expiry::Never).await.unwrap();
        drop(client);
        let server = tokio::task::block_in_place(|| restart(server, Stop::Kill, &home, &spec));
        assert!(!server.logs().contains("torn tail"), "cut {cut}: torn tail after the append");
        for token in [a, b, &d] {
            assert_eq!(token_login(server.address, token).await, OK, "cut {cut}: after the append");
        }
        assert_eq!(token_login(server.address, c).await, NOT_FOUND, "cut {cut}: old C after the append");
        server
    } else {
        server
    };
    tokio::task::block_in_place(|| stop(server, Stop::Term));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_log_cut_anywhere_in_its_last_batch_loses_only_that_batch() {
    let home = DataHome::new();
    let server = TestServer::start(&home, &ServerSpec::default_root());
    let data_dir = server.data_dir.clone();
    let mut client = root(server.address).await;
    let a = client.create_personal_access_token("aaa", Expiry::Never).await.unwrap();
    let b =
        client.create_personal_access_token("bbb", Expiry::After(Duration::from_secs(3600))).await.unwrap();
    // Acknowledged means synced: the size now is where C's record will start.
    let start_c = log_len(&data_dir) as usize;
    let c = client.create_personal_access_token("ccc", Expiry::Never).await.unwrap();
    let end_c = log_len(&data_dir) as usize;
    drop(client);
    stop(server, Stop::Term);

    let log = std::fs::read(log_path(&data_dir)).unwrap();
    assert_eq!(log.len(), end_c, "SIGTERM changed the log size");
    let batches = batch_offsets(&log);
    assert_eq!(batches.len(), 3, "batches: {batches:?}");
    assert_eq!(batches.last().unwrap().0, start_c, "C's batch start by size and by scan");
    assert_eq!(end_c - start_c, BATCH_HEADER_BYTES + create_record_bytes("ccc") as usize, "C's batch size");

    let fixture = CutFixture { data_dir, log, start_c, tokens: [a, b, c] };
    // Every cut from the batch boundary (C never written) to one byte short
    // of the whole batch. Four at a time.
    let cuts: Vec<usize> = (start_c..end_c).collect();
    let appends = [start_c + 1, start_c + BATCH_HEADER_BYTES + RECORD_HEADER_BYTES + 20, end_c - 1];
    let fixture = std::sync::Arc::new(fixture);
    for chunk in cuts.chunks(4) {
        let tasks: Vec<_> = chunk
            .iter()
            .map(|&cut| {
                let fixture = std::sync::Arc::clone(&fixture);
                tokio::spawn(async move { check_cut(&fixture, cut, appends.contains(&cut)).await })
            })
            .collect();
        for task in tasks {
            task.await.expect("cut check");
        }
    }
    // Control: the whole file keeps all three.
    let home = copy_home(&fixture.data_dir, &fixture.log);
    let server = TestServer::start(&home, &small_spec());
    assert!(!server.logs().contains("torn tail"), "{}", server.logs());
    for token in &fixture.tokens {
        assert_eq!(token_login(server.address, token).await, OK);
    }
}

/// A server that made three tokens (aaa, bbb, ccc) and stopped: its home,
/// data directory, the tokens and the log's bytes.
async fn three_creates_then_stop() -> (DataHome, std::path::PathBuf, Vec<String>, Vec<u8>) {
    let home = DataHome::new();
    let server = TestServer::start(&home, &ServerSpec::default_root());
    let data_dir = server.data_dir.clone();
    let mut client = root(server.address).await;
    let mut tokens = Vec::new();
    for name in ["aaa", "bbb", "ccc"] {
        tokens.push(client.create_personal_access_token(name, Expiry::Never).await.unwrap());
    }
    drop(client);
    stop(server, Stop::Term);
    let log = std::fs::read(log_path(&data_dir)).unwrap();
    (home, data_dir, tokens, log)
}

/// A log of three creates damaged at its tail in one of several ways: with
/// nothing valid after the damage it is a torn tail, cut at the first bad
/// byte, and only what lies from there on is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_damaged_last_record_or_garbage_after_the_log_is_cut_as_a_torn_tail() {
    let (_home, data_dir, tokens, log) = three_creates_then_stop().await;
    let batches = batch_offsets(&log);
    let (start_c, end_c) = (batches[2].0, log.len());
    // C's batch header, then its one record.
    let record_c = BATCH_HEADER_BYTES;

    let mut rng = SeededRng::new("a_damaged_last_record_or_garbage_after_the_log_is_cut_as_a_torn_tail");
    let garbage = rng.bytes(300);
    let mut fake_header = MARKER.to_vec();
    fake_header.extend_from_slice(&40u32.to_le_bytes());
    fake_header.extend_from_slice(&rng.bytes(4 + 40));
    let damaged_c = |within: usize| {
        let mut bad = log.clone();
        bad[start_c + within] ^= 0x01;
        bad
    };
    let with = |base: Vec<u8>, tail: &[u8]| [base, tail.to_vec()].concat();
    // (what, the damaged log, where the tail is cut, tokens kept)
    let cases: Vec<(&str, Vec<u8>, usize, usize)> = vec![
        ("C's batch header checksum", damaged_c(25), start_c, 2),
        ("C's batch length", damaged_c(5), start_c, 2),
        ("C's batch marker", damaged_c(0), start_c, 2),
        ("C's record checksum", damaged_c(record_c + 9), start_c, 2),
        ("C's payload", damaged_c(record_c + RECORD_HEADER_BYTES + 20), start_c, 2),
        ("C's last byte", damaged_c(end_c - start_c - 1), start_c, 2),
        ("C's record length", damaged_c(record_c + 5), start_c, 2),
        ("random bytes after C", with(log.clone(), &garbage), end_c, 3),
        ("zeros after C", with(log.clone(), &[0; 4096]), end_c, 3),
        ("a record header and junk after C", with(log.clone(), &fake_header), end_c, 3),
        (
            "C damaged and random bytes after it",
            with(damaged_c(record_c + RECORD_HEADER_BYTES + 20), &garbage),
            start_c,
            2,
        ),
    ];
    for (what, bad, cut_at, kept) in cases {
        let home = copy_home(&data_dir, &bad);
        let spec = small_spec();
        let server = tokio::task::block_in_place(|| TestServer::start(&home, &spec));
        let logs = server.logs();
        let torn = logs.lines().find(|line| line.contains("torn tail"));
        let torn = torn.unwrap_or_else(|| panic!("{what}: no torn-tail warning:\n{logs}"));
        assert!(torn.contains(&cut_at.to_string()), "{what}: the warning does not name {cut_at}: {torn}");
        assert_eq!(log_len(&home.data_dir()), cut_at as u64, "{what}: tokens.log size after recovery");
        for (index, token) in tokens.iter().enumerate() {
            let expected = if index < kept { OK } else { NOT_FOUND };
            assert_eq!(token_login(server.address, token).await, expected, "{what}: token {index}");
        }
        // Appends go on from the cut, and a restart finds the log whole.
        let mut client = root(server.address).await;
        let after = client.create_personal_access_token("after", Expiry::Never).await.unwrap();
        drop(client);
        let server = tokio::task::block_in_place(|| restart(server, Stop::Kill, &home, &spec));
        assert!(!server.logs().contains("torn tail"), "{what}: a torn tail after the append");
        assert_eq!(token_login(server.address, &after).await, OK, "{what}: the token created after the cut");
        tokio::task::block_in_place(|| stop(server, Stop::Term));
    }
}

// ---------------------------------------------------------------------------
// 4. A flipped byte mid-file: refuse to start, name file and offset; the
//    operator may then choose --truncate-log-at.

#[tokio::test]
async fn a_flipped_byte_mid_file_refuses_to_start_naming_file_and_offset() {
    let (_home, data_dir, tokens, log) = three_creates_then_stop().await;
    let batches = batch_offsets(&log);
    assert_eq!(batches.len(), 3);
    assert_eq!(batches[0].0, HEADER_BYTES);

    // (batch damaged, byte flipped inside it: its header, its record's
    // marker, its record's payload). The server must name the batch's
    // offset (16 for the first; not, say, 44, where its record starts).
    let in_record = BATCH_HEADER_BYTES;
    for (damaged, within) in [(0, 20), (0, in_record + 2), (1, in_record + RECORD_HEADER_BYTES + 30)] {
        let offset = batches[damaged].0;
        let mut bad = log.clone();
        bad[offset + within] ^= 0x40;
        let home = copy_home(&data_dir, &bad);
        let exited = match TestServer::try_start(&home, &small_spec()) {
            Ok(server) => {
                panic!("started on a log with a flipped byte at {}:\n{}", offset + within, server.logs())
            }
            Err(exited) => exited,
        };
        assert!(!exited.status.success(), "exit status {}", exited.status);
        assert!(!exited.stdout.contains("listening on"), "{}", exited.stdout);
        let output = format!("{}\n{}", exited.stdout, exited.stderr);
        let path = log_path(&home.data_dir()).display().to_string();
        assert!(output.contains(&path), "output does not name {path}:\n{output}");
        // Exactly that offset (not, say, 165 for 16).
        let named = numbers_after(&output, "offset ");
        assert!(named.contains(&offset), "offset {offset} not named (named {named:?}):\n{output}");
        let suggested = numbers_after(&output, "--truncate-log-at ");
        assert!(
            !suggested.is_empty() && suggested.iter().all(|&n| n == offset),
            "suggested --truncate-log-at {suggested:?}, not {offset}:\n{output}"
        );
        // Refusing did not touch the file.
        assert_eq!(
            std::fs::read(log_path(&home.data_dir())).unwrap(),
            bad,
            "the refused start changed the log"
        );

        // Losing the tokens recorded from that offset on is the operator's
        // explicit choice (the flag), never something the server does alone.
        let mut spec = small_spec();
        spec.args = vec!["--truncate-log-at".into(), offset.to_string()];
        let server = TestServer::start(&home, &spec);
        assert_eq!(log_len(&home.data_dir()), offset as u64);
        for (index, token) in tokens.iter().enumerate() {
            let expected = if index < damaged { OK } else { NOT_FOUND };
            assert_eq!(
                token_login(server.address, token).await,
                expected,
                "token {index} after --truncate-log-at {offset}"
            );
        }
        // Afterwards the log is whole again: a plain restart works.
        let server = restart(server, Stop::Term, &home, &small_spec());
        assert_eq!(token_login(server.address, &tokens[0]).await, if damaged == 0 { NOT_FOUND } else { OK });
    }
}

/// The start offset of the record that holds token name `name`.
fn record_of(log: &[u8], offsets: &[usize], name: &str) -> usize {
    let mut field = vec![name.len() as u8];
    field.extend_from_slice(name.as_bytes());
    let mut found = offsets.iter().copied().filter(|&at| {
        let length = u32::from_le_bytes(log[at + 4..at + 8].try_into().unwrap()) as usize;
        contains(&log[at..at + RECORD_HEADER_BYTES + length], &field)
    });
    let at = found.next().unwrap_or_else(|| panic!("no record names {name}"));
    assert!(found.next().is_none(), "several records name {name}");
    at
}

/// The same escape hatch on a compacted log, with damage inside the
/// snapshot's token records: starting with the suggested
/// `--truncate-log-at` must work, and lose exactly what was recorded from
/// that offset on.
#[tokio::test]
async fn truncating_at_the_suggested_offset_inside_a_snapshot_starts() {
    let home = DataHome::new();
    let spec = ServerSpec::default_root()
        .env("LATCHKEY_SYSTEM_COMPACTION_MIN_RECORDS", "20")
        .env("LATCHKEY_SYSTEM_COMPACTION_DEAD_RATIO", "0.5");
    let server = TestServer::start(&home, &spec);
    let data_dir = server.data_dir.clone();
    let mut client = root(server.address).await;
    let mut tokens = Vec::new();
    for index in 0..4 {
        let name = format!("keep-{index}");
        tokens.push((name.clone(), client.create_personal_access_token(&name, Expiry::Never).await.unwrap()));
    }
    // Churn until a compaction has been renamed into place.
    for index in 0.. {
        let name = format!("churn-{index}");
        client.create_personal_access_token(&name, Expiry::Never).await.unwrap();
        client.delete_personal_access_token(&name).await.unwrap();
        if server.logs().contains("token log compacted") {
            break;
        }
        assert!(index < 1000, "no compaction:\n{}", server.logs());
    }
    tokens.push(("late".into(), client.create_personal_access_token("late", Expiry::Never).await.unwrap()));
    drop(client);
    stop(server, Stop::Term);

    let log = std::fs::read(log_path(&data_dir)).unwrap();
    let offsets = record_offsets(&log);
    assert_eq!(record_type(&log, offsets[0]), TYPE_SNAPSHOT);
    let snapshot_tokens =
        u64::from_le_bytes(log[offsets[0] + RECORD_HEADER_BYTES + 17 + 16..][..8].try_into().unwrap());
    assert_eq!(snapshot_tokens, 4, "the snapshot holds the four kept tokens");
    let record_at: Vec<usize> = tokens.iter().map(|(name, _)| record_of(&log, &offsets, name)).collect();
    // Damage the snapshot's second token record (valid records follow it).
    let damaged = offsets[2];
    let mut bad = log.clone();
    bad[damaged + RECORD_HEADER_BYTES + 20] ^= 0x40;
    let home = copy_home(&data_dir, &bad);
    let exited = match TestServer::try_start(&home, &small_spec()) {
        Ok(_) => panic!("started on a log with a damaged snapshot record at {damaged}"),
        Err(exited) => exited,
    };
    assert!(!exited.status.success());
    let output = format!("{}\n{}", exited.stdout, exited.stderr);
    let offset = *numbers_after(&output, "--truncate-log-at ")
        .first()
        .unwrap_or_else(|| panic!("no --truncate-log-at suggestion:\n{output}"));
    assert!(offset <= damaged, "suggested {offset}, past the damage at {damaged}");

    let mut truncate = small_spec();
    truncate.args = vec!["--truncate-log-at".into(), offset.to_string()];
    let server = match TestServer::try_start(&home, &truncate) {
        Ok(server) => server,
        Err(exited) => panic!(
            "--truncate-log-at {offset}, as suggested, did not start ({}):\nstdout:\n{}\nstderr:\n{}",
            exited.status, exited.stdout, exited.stderr
        ),
    };
    // Recorded before the offset: kept; from it on: gone.
    for ((name, token), at) in tokens.iter().zip(record_at) {
        let expected = if at < offset { OK } else { NOT_FOUND };
        assert_eq!(
            token_login(server.address, token).await,
            expected,
            "{name} (record at {at}, cut at {offset})"
        );
    }
    // The log is whole again: a write after the repair survives a crash.
    let mut client = root(server.address).await;
    let repaired = client.create_personal_access_token("repaired", Expiry::Never).await.unwrap();
    drop(client);
    let server = restart(server, Stop::Kill, &home, &small_spec());
    assert_eq!(token_login(server.address, &repaired).await, OK);
}

// ---------------------------------------------------------------------------
// 5. Compaction under concurrent writes loses nothing.

const CHURN_CONNECTIONS: usize = 8;

/// What the tokens should be.
#[derive(Default)]
struct Expected {
    live: BTreeMap<String, String>,
    deleted: Vec<String>,
    /// Bytes of every Create and Delete record the churn caused, each with
    /// the header of a batch of its own (concurrent writes may share one:
    /// this is the most the appends wrote).
    written: u64,
}

/// Each connection creates `per_connection` tokens named `{prefix}{conn}-{i}`
/// and deletes two of every three, each some 20 operations after creating
/// it, so deletes often hit tokens a compaction has already rewritten.
async fn churn(address: SocketAddr, prefix: &str, per_connection: usize, expected: &mut Expected) {
    let tasks: Vec<_> = (0..CHURN_CONNECTIONS)
        .map(|connection| {
            let prefix = prefix.to_owned();
            tokio::spawn(async move {
                let mut client = root(address).await;
                let mut result = Expected::default();
                let mut to_delete: VecDeque<(String, String)> = VecDeque::new();
                for index in 0..per_connection {
                    let name = format!("{prefix}{connection}-{index}");
                    let token = client
                        .create_personal_access_token(&name, Expiry::Never)
                        .await
                        .unwrap_or_else(|e| panic!("create {name}: {e}"));
                    result.written += BATCH_HEADER_BYTES as u64 + create_record_bytes(&name);
                    if index % 3 == 0 {
                        result.live.insert(name, token);
                    } else {
                        to_delete.push_back((name, token));
                    }
                    while to_delete.len() > 14 || (index + 1 == per_connection && !to_delete.is_empty()) {
                        let (name, token) = to_delete.pop_front().unwrap();
                        client
                            .delete_personal_access_token(&name)
                            .await
                            .unwrap_or_else(|e| panic!("delete {name}: {e}"));
                        result.written += BATCH_HEADER_BYTES as u64 + DELETE_RECORD_BYTES;
                        result.deleted.push(token);
                    }
                }
                result
            })
        })
        .collect();
    for task in tasks {
        let result = task.await.expect("churn connection");
        expected.live.extend(result.live);
        expected.deleted.extend(result.deleted);
        expected.written += result.written;
    }
}

/// The list equals the expected names, every live token logs in and every
/// deleted one gets 20 (checked over several connections at once).
async fn check_expected(address: SocketAddr, expected: &Expected, when: &str) {
    let listed = list(address).await;
    let wanted: Vec<&str> = expected.live.keys().map(String::as_str).collect();
    assert_eq!(names(&listed), wanted, "{when}: listed names");
    let mut checks: Vec<(String, u32)> = expected.live.values().map(|token| (token.clone(), OK)).collect();
    checks.extend(expected.deleted.iter().map(|token| (token.clone(), NOT_FOUND)));
    let per_task = checks.len().div_ceil(CHURN_CONNECTIONS);
    let tasks: Vec<_> = checks
        .chunks(per_task)
        .map(|chunk| {
            let chunk = chunk.to_vec();
            tokio::spawn(async move {
                let mut client = connect(address).await;
                let mut wrong = Vec::new();
                for (token, wanted) in chunk {
                    let got = status(client.login_with_personal_access_token(&token).await);
                    if got != wanted {
                        wrong.push((wanted, got));
                    }
                }
                wrong
            })
        })
        .collect();
    let mut wrong = Vec::new();
    for task in tasks {
        wrong.extend(task.await.expect("login checks"));
    }
    assert!(wrong.is_empty(), "{when}: {} logins answered wrongly (wanted, got): {wrong:?}", wrong.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn compaction_under_concurrent_writes_loses_nothing() {
    let home = DataHome::new();
    let spec = ServerSpec::default_root()
        .env("LATCHKEY_SYSTEM_COMPACTION_MIN_RECORDS", "200")
        .env("LATCHKEY_SYSTEM_COMPACTION_DEAD_RATIO", "0.5")
        .env("LATCHKEY_PERSONAL_ACCESS_TOKEN_MAX_TOKENS_PER_USER", "100000");
    let server = TestServer::start(&home, &spec);
    let data_dir = server.data_dir.clone();
    let mut expected = Expected::default();
    churn(server.address, "c", 150, &mut expected).await;
    assert_eq!(expected.live.len(), CHURN_CONNECTIONS * 50);
    assert_eq!(expected.deleted.len(), CHURN_CONNECTIONS * 100);
    check_expected(server.address, &expected, "after the churn").await;

    let logs = server.logs();
    let compactions = logs.matches("token log compacted").count();
    assert!(compactions >= 2, "expected several compactions, saw {compactions}:\n{logs}");
    let size = log_len(&data_dir);
    // Without compaction the file would hold every record; with it, at most
    // about twice the live records (dead ratio 0.5) plus what came in
    // while the last compaction ran.
    assert!(
        size * 3 < expected.written * 2,
        "tokens.log is {size} bytes; the records written total {} bytes",
        expected.written
    );
    let log = std::fs::read(log_path(&data_dir)).unwrap();
    let offsets = record_offsets(&log);
    assert_eq!(record_type(&log, offsets[0]), TYPE_SNAPSHOT, "a compacted log starts with a snapshot");

    let server = restart(server, Stop::Term, &home, &spec);
    check_expected(server.address, &expected, "after a SIGTERM restart").await;

    // More churn (compactions again), then a crash right after the last ack.
    churn(server.address, "d", 60, &mut expected).await;
    let server = restart(server, Stop::Kill, &home, &spec);
    check_expected(server.address, &expected, "after a SIGKILL restart").await;
    assert!(!home.data_dir().join("tokens.log.compact").exists(), "a stale compaction file was left");
}

// ---------------------------------------------------------------------------
// 6. The cleaner deletes an expired token through the log, never a
//    re-created one.

#[tokio::test]
async fn the_cleaner_deletes_an_expired_token_through_the_log_and_never_a_recreated_one() {
    let home = DataHome::new();
    // Phase 1, cleaner off: the expiry itself is observable (54), not racing
    // the cleaner.
    let off = ServerSpec::default_root().env("LATCHKEY_PERSONAL_ACCESS_TOKEN_CLEANER_ENABLED", "false");
    let server = TestServer::start(&home, &off);
    let mut client = root(server.address).await;
    let keeper = client
        .create_personal_access_token("keeper", Expiry::After(Duration::from_secs(3600)))
        .await
        .unwrap();
    let expired =
        client.create_personal_access_token("short", Expiry::After(Duration::from_secs(1))).await.unwrap();
    drop(client);
    wait_for_login_status(server.address, &expired, EXPIRED, &[OK]).await;
    // Expired but not cleaned: still listed, still counted.
    assert_eq!(names(&list(server.address).await), ["keeper", "short"]);

    // Phase 2, cleaner every 300 ms.
    let on = ServerSpec::default_root()
        .env("LATCHKEY_PERSONAL_ACCESS_TOKEN_CLEANER_ENABLED", "true")
        .env("LATCHKEY_PERSONAL_ACCESS_TOKEN_CLEANER_INTERVAL", "300ms");
    let server = restart(server, Stop::Term, &home, &on);
    wait_for_login_status(server.address, &expired, NOT_FOUND, &[EXPIRED]).await;
    assert_eq!(names(&list(server.address).await), ["keeper"]);
    wait_for_logs(&server, |logs| logs.contains("token_expired_deleted"));

    // Re-created under the same name, never expiring.
    let mut client = root(server.address).await;
    let recreated = client.create_personal_access_token("short", Expiry::Never).await.unwrap();
    // Two cleaner passes after the re-create: each probe (expired at once)
    // disappears only when a pass has run after it was committed.
    for probe in ["probe-1", "probe-2"] {
        let token = client
            .create_personal_access_token(probe, Expiry::After(Duration::from_micros(1)))
            .await
            .unwrap();
        wait_for_login_status(server.address, &token, NOT_FOUND, &[EXPIRED]).await;
    }
    drop(client);
    let listed = list(server.address).await;
    assert_eq!(names(&listed), ["keeper", "short"]);
    assert_eq!(entry(&listed, "short").expiry_at_us, None);
    assert_eq!(token_login(server.address, &recreated).await, OK);
    assert_eq!(token_login(server.address, &keeper).await, OK);
    // The audit line may reach the log a moment after the delete is visible.
    let logs = wait_for_logs(&server, |logs| logs.matches("token_expired_deleted").count() >= 3);
    assert_eq!(logs.matches("token_expired_deleted").count(), 3, "the old short and two probes:\n{logs}");

    // The cleaner's deletes were in the log: a crash does not bring them back.
    let server = restart(server, Stop::Kill, &home, &on);
    assert_eq!(token_login(server.address, &expired).await, NOT_FOUND);
    assert_eq!(token_login(server.address, &recreated).await, OK);
    assert_eq!(token_login(server.address, &keeper).await, OK);
    let listed = list(server.address).await;
    assert_eq!(names(&listed), ["keeper", "short"]);
    assert_eq!(entry(&listed, "short").expiry_at_us, None);
}

// ---------------------------------------------------------------------------
// 7. Every shard replays the log.

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn after_a_sigkill_every_shard_knows_every_token() {
    let home = DataHome::new();
    let spec = ServerSpec::default_root().env("LATCHKEY_SYSTEM_SHARDS", "3");
    let server = TestServer::start(&home, &spec);
    assert!(server.logs().contains("shards=3"), "{}", server.logs());
    // Created from three connections (three shards, if round-robin).
    let mut kept = Vec::new();
    let mut deleted = Vec::new();
    for index in 0..3 {
        let mut client = root(server.address).await;
        kept.push(
            client.create_personal_access_token(&format!("kept-{index}"), Expiry::Never).await.unwrap(),
        );
        let name = format!("gone-{index}");
        deleted.push(client.create_personal_access_token(&name, Expiry::Never).await.unwrap());
        client.delete_personal_access_token(&name).await.unwrap();
    }
    let server = restart(server, Stop::Kill, &home, &spec);
    assert!(server.logs().contains("shards=3"), "{}", server.logs());
    let address = server.address;
    let tasks: Vec<_> = (0..30)
        .map(|connection| {
            let (kept, deleted) = (kept.clone(), deleted.clone());
            tokio::spawn(async move {
                let mut client = connect(address).await;
                for token in &kept {
                    let got = status(client.login_with_personal_access_token(token).await);
                    assert_eq!(got, OK, "connection {connection}: a kept token");
                }
                for token in &deleted {
                    let got = status(client.login_with_personal_access_token(token).await);
                    assert_eq!(got, NOT_FOUND, "connection {connection}: a deleted token");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("a connection saw the wrong state");
    }
}

// ---------------------------------------------------------------------------
// 8. No secret on disk after all of the above kinds of activity.

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_raw_token_or_password_reaches_the_data_directory() {
    let home = DataHome::new();
    let password = random_alphanumeric(24);
    let username = "durable-root";
    // default_root is false: root comes from the environment only.
    let spec = ServerSpec::default()
        .env("LATCHKEY_ROOT_USERNAME", username)
        .env("LATCHKEY_ROOT_PASSWORD", &password)
        .env("LATCHKEY_SYSTEM_COMPACTION_MIN_RECORDS", "20")
        .env("LATCHKEY_SYSTEM_COMPACTION_DEAD_RATIO", "0.5")
        .env("LATCHKEY_PERSONAL_ACCESS_TOKEN_CLEANER_INTERVAL", "200ms");
    assert!(!spec.default_root);
    let mut server = TestServer::start(&home, &spec);
    let mut tokens: Vec<String> = Vec::new();
    let mut all_logs = String::new();
    let mut all_stderr = String::new();
    for round in 0..3 {
        let mut client = connect(server.address).await;
        assert_eq!(client.login_user(username, &password).await.unwrap(), 0);
        // A refused attempt whose password contains the real one.
        assert_eq!(status(client.login_user(username, &format!("{password}x")).await), 42);
        assert_eq!(client.login_user(username, &password).await.unwrap(), 0);
        for index in 0..30 {
            let name = format!("r{round}-{index}");
            let (expiry, allowed): (Expiry, &[u32]) = match index % 3 {
                0 => (Expiry::Never, &[OK]),
                1 => (Expiry::After(Duration::from_secs(3600)), &[OK]),
                // Expired at once; the cleaner may already have removed it.
                _ => (Expiry::After(Duration::from_micros(1)), &[EXPIRED, NOT_FOUND]),
            };
            let token = client.create_personal_access_token(&name, expiry).await.unwrap();
            let got = token_login(server.address, &token).await;
            assert!(allowed.contains(&got), "{name}: login answered {got}");
            if index % 3 == 1 {
                client.delete_personal_access_token(&name).await.unwrap();
            }
            tokens.push(token);
        }
        drop(client);
        // The last (expired) token of the round goes through the cleaner.
        wait_for_login_status(server.address, tokens.last().unwrap(), NOT_FOUND, &[EXPIRED]).await;
        if round == 2 {
            // SIGTERM, then wait for the last line so the shutdown output
            // is collected too; stop() then only reaps the process.
            // SAFETY: kill(2) on our own, not yet reaped, child.
            unsafe {
                libc::kill(server.pid() as i32, libc::SIGTERM);
            }
            all_logs.push_str(&wait_for_logs(&server, |logs| logs.contains("stopped")));
            all_stderr.push_str(&server.stderr());
            stop(server, Stop::Term);
            break;
        }
        all_logs.push_str(&server.logs());
        all_stderr.push_str(&server.stderr());
        // A crash after the first round, a graceful stop after the second.
        server = restart(server, if round == 0 { Stop::Kill } else { Stop::Term }, &home, &spec);
    }
    assert!(all_logs.contains("token log compacted"), "no compaction happened:\n{all_logs}");
    assert!(all_logs.contains("token_expired_deleted"), "the cleaner never ran:\n{all_logs}");

    let mut secrets: Vec<(&str, String)> = vec![("the root password", password.clone())];
    for token in &tokens {
        secrets.push(("a raw token", token.clone()));
        secrets.push(("a token's secret digits", token[3..46].to_owned()));
    }
    let files = read_tree(home.dir.path());
    assert!(files.iter().any(|(path, _)| path.ends_with(LOG_FILE)), "tokens.log missing");
    for (what, secret) in &secrets {
        for (path, bytes) in &files {
            assert!(!contains(bytes, secret.as_bytes()), "{what} found in {}", path.display());
        }
        assert!(!contains(all_logs.as_bytes(), secret.as_bytes()), "{what} found in the log");
        assert!(!contains(all_stderr.as_bytes(), secret.as_bytes()), "{what} found on stderr");
    }
}
