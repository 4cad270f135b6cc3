//! `latchkey-server log verify|dump|stats` over the real binary: the counts
//! on a log a real server wrote, no secret or hash in any output, the
//! offset and exit code of a torn tail (3) and of a flipped byte (4) with
//! the file left as it was, and the refusal beside a running server.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use common::*;
use latchkey_sdk::{Expiry, NewToken, RotateExpiry};
use latchkey_tests::{DataHome, ServerSpec, TestServer, read_tree, server_binary};
use serde_json::Value;

const EXIT_CLEAN: i32 = 0;
const EXIT_NOT_READ: i32 = 1;
const EXIT_USAGE: i32 = 2;
const EXIT_TORN_TAIL: i32 = 3;
const EXIT_CORRUPT: i32 = 4;

/// Runs `latchkey-server log ARGS` on `home`'s data directory, with an
/// empty config file (so nothing but the environment chooses the directory).
fn log_tool(home: &DataHome, args: &[&str]) -> Output {
    log_tool_with(home, args, &[])
}

fn log_tool_with(home: &DataHome, args: &[&str], env: &[(&str, &str)]) -> Output {
    let config = home.dir.path().join("tools.toml");
    std::fs::write(&config, "").unwrap();
    Command::new(server_binary())
        .arg("--config")
        .arg(&config)
        .arg("log")
        .args(args)
        .env("LATCHKEY_SYSTEM_PATH", home.data_dir())
        .env_remove("LATCHKEY_STORAGE_BACKEND")
        .envs(env.iter().copied())
        .output()
        .expect("run latchkey-server log")
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).expect("UTF-8 output")
}

fn both(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

fn code(output: &Output) -> i32 {
    output.status.code().expect("exited, not signalled")
}

fn json(output: &Output) -> Value {
    serde_json::from_str(&stdout(output)).unwrap_or_else(|error| panic!("{error}: {}", both(output)))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Every file of the data directory, with its bytes: what "unchanged" means.
fn tree(home: &DataHome) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut files = read_tree(&home.data_dir());
    files.sort();
    files
}

fn log_path(home: &DataHome) -> std::path::PathBuf {
    home.data_dir().join("tokens.log")
}

/// Checks that `output` holds no raw token (whole, or its random part), and
/// no 32-byte run of the data directory's files in hex, either case: every
/// hash in the log and the server key are among those runs.
fn assert_no_secret(output: &str, tokens: &[String], data_dir: &Path) {
    for token in tokens {
        assert!(!output.contains(token.as_str()), "a raw token in the output");
        assert!(!output.contains(&token[3..46]), "a token's random part in the output");
    }
    let lower = output.to_lowercase();
    for (path, bytes) in read_tree(data_dir) {
        for window in bytes.windows(32) {
            assert!(!lower.contains(&hex(window)), "32 bytes of {} in hex in the output", path.display());
        }
    }
}

#[tokio::test]
async fn a_real_log_is_verified_dumped_and_counted_without_a_secret() {
    let home = DataHome::new();
    // The cleaner would delete the expired token before the tools see it.
    let spec = ServerSpec::default_root().env("LATCHKEY_PERSONAL_ACCESS_TOKEN_CLEANER_ENABLED", "false");
    let server = TestServer::start(&home, &spec);
    let mut owner = root(server.address).await;
    let mut tokens = Vec::new();
    let plain = owner.create_personal_access_token("plain", Expiry::Never).await.unwrap();
    tokens.push(plain.clone());
    let mut scoped = NewToken::named("scoped").with_description("deploy job");
    scoped.scopes = vec!["tokens:read".into()];
    scoped.networks = vec!["127.0.0.0/8".into()];
    tokens.push(owner.create_token(&scoped).await.unwrap().token.expose().to_owned());
    tokens.push(owner.create_personal_access_token("revoked", Expiry::Never).await.unwrap());
    owner.revoke_token("revoked").await.unwrap();
    tokens.push(owner.create_personal_access_token("deleted", Expiry::Never).await.unwrap());
    owner.delete_personal_access_token("deleted").await.unwrap();
    tokens.push(owner.create_personal_access_token("rotated", Expiry::Never).await.unwrap());
    tokens.push(owner.rotate_token("rotated", RotateExpiry::Keep).await.unwrap().token.expose().to_owned());
    let short = Expiry::After(Duration::from_secs(1));
    tokens.push(owner.create_personal_access_token("expiring", short).await.unwrap());
    drop(with_token(server.address, &plain).await); // one last use, written at the stop

    // Beside a running server every tool refuses, says why, and reads nothing.
    for tool in ["verify", "dump", "stats"] {
        let refused = log_tool(&home, &[tool]);
        assert_eq!(code(&refused), EXIT_NOT_READ, "{tool}: {}", both(&refused));
        assert!(both(&refused).contains("in use by a running latchkey-server"), "{}", both(&refused));
        assert!(refused.stdout.is_empty(), "{tool}: {}", both(&refused));
    }
    assert_eq!(server.stop().code(), Some(0));
    std::thread::sleep(Duration::from_millis(1100)); // "expiring" is now expired
    let before = tree(&home);

    // 6 creates, a revoke, a delete, a rotate, a last use: 10 records,
    // each change its own append.
    let verified = log_tool(&home, &["verify", "--json"]);
    assert_eq!(code(&verified), EXIT_CLEAN, "{}", both(&verified));
    let report = json(&verified);
    assert_eq!(report["status"], "clean");
    assert_eq!(report["records"], 10);
    assert_eq!(report["batches"], 10);
    assert_eq!(report["file_bytes"], std::fs::metadata(log_path(&home)).unwrap().len());
    let tokens_report = &report["tokens"];
    assert_eq!(
        (&tokens_report["live"], &tokens_report["active"], &tokens_report["revoked"]),
        (&5.into(), &3.into(), &1.into())
    );
    assert_eq!((&tokens_report["expired"], &tokens_report["deleted"]), (&1.into(), &1.into()));
    assert_eq!(report["dead_records"], 5);
    assert_eq!(report["problem"], Value::Null);
    let text = log_tool(&home, &["verify"]);
    assert_eq!(code(&text), EXIT_CLEAN, "{}", both(&text));
    assert!(stdout(&text).contains("clean: a start replays it as it is"), "{}", both(&text));
    assert!(stdout(&text).contains("5 live (3 active, 1 revoked, 1 expired), 1 deleted"), "{}", both(&text));

    let dumped = log_tool(&home, &["dump"]);
    assert_eq!(code(&dumped), EXIT_CLEAN, "{}", both(&dumped));
    let dump_text = stdout(&dumped);
    let lines: Vec<&str> = dump_text.lines().collect();
    assert_eq!(lines.len(), 10, "{}", both(&dumped));
    assert!(lines.iter().all(|line| line.starts_with("offset=")), "{}", both(&dumped));
    assert!(lines[0].contains("kind=create id=1 user_id=0 name=plain"), "{}", lines[0]);
    assert!(lines[1].contains(r#"kind=token id=2 user_id=0 name=scoped"#), "{}", lines[1]);
    assert!(
        lines[1].contains(r#"description="deploy job" scopes=tokens:read networks=127.0.0.0/8"#),
        "{}",
        lines[1]
    );
    assert!(lines.iter().any(|line| line.contains("kind=revoke id=3 user_id=0 name=revoked revoked_at=")));
    assert!(lines.iter().any(|line| line.contains("kind=delete id=4 user_id=0 name=deleted")));
    assert!(
        lines.iter().any(|line| line.contains("kind=rotate id=5 user_id=0 name=rotated expiry_at=never"))
    );
    assert!(lines[9].contains("kind=last-used id=1 user_id=0 name=plain last_used_at="), "{}", lines[9]);

    let dumped_json = log_tool(&home, &["dump", "--json"]);
    assert_eq!(code(&dumped_json), EXIT_CLEAN, "{}", both(&dumped_json));
    let records: Vec<Value> =
        stdout(&dumped_json).lines().map(|line| serde_json::from_str(line).expect("a JSON line")).collect();
    assert_eq!(records.len(), 10);
    let mut offsets = Vec::new();
    for record in &records {
        let fields = record.as_object().expect("an object");
        assert!(fields.keys().all(|key| !key.contains("hash")), "{record}");
        offsets.push(fields["offset"].as_u64().unwrap());
        assert!(fields.contains_key("kind") && fields.contains_key("commit_at_us"), "{record}");
    }
    assert_eq!(offsets[0], 16 + 28, "records start after the 16-byte header and a 28-byte batch header");
    assert!(offsets.windows(2).all(|pair| pair[0] < pair[1]));
    assert_eq!(records[9]["last_used_peer"].as_str().unwrap().split(':').next(), Some("127.0.0.1"));

    let stats = log_tool(&home, &["stats", "--json", "--top", "1"]);
    assert_eq!(code(&stats), EXIT_CLEAN, "{}", both(&stats));
    let counted = json(&stats);
    let kinds = &counted["records_by_kind"];
    let creates = kinds["create"].as_u64().unwrap_or(0) + kinds["token"].as_u64().unwrap_or(0);
    assert_eq!(creates, 6, "{counted}");
    for (kind, count) in [("revoke", 1), ("delete", 1), ("rotate", 1), ("last-used", 1)] {
        assert_eq!(kinds[kind], count, "{kind}: {counted}");
    }
    assert_eq!(counted["top_users"], serde_json::json!([{"user_id": 0, "tokens": 5, "active": 3}]));
    assert_eq!(counted["dead_ratio"], 0.5);
    let compaction = &counted["compaction"];
    assert_eq!(compaction["records"], 6, "a snapshot and the 5 live tokens");
    assert_eq!(compaction["due"], false, "the default policy waits for 10000 records");
    let stats_text = log_tool(&home, &["stats"]);
    assert_eq!(code(&stats_text), EXIT_CLEAN, "{}", both(&stats_text));
    assert!(stdout(&stats_text).contains("dead ratio      0.500"), "{}", both(&stats_text));

    let everything: String = [&verified, &text, &dumped, &dumped_json, &stats, &stats_text]
        .iter()
        .map(|output| both(output))
        .collect();
    assert_no_secret(&everything, &tokens, &home.data_dir());
    assert_eq!(tree(&home), before, "the tools changed the data directory");
}

/// A batch header's bytes (format versions 3 and 4): each create below is its own
/// append, so its batch starts this far before its record.
const BATCH_HEADER_BYTES: u64 = 28;

/// A log of three creates, as a stopped server left it, and the offset of
/// each one's batch (one record each).
async fn three_creates(home: &DataHome) -> Vec<u64> {
    let server = TestServer::start(home, &ServerSpec::default_root());
    let mut owner = root(server.address).await;
    for name in ["first", "second", "third"] {
        owner.create_personal_access_token(name, Expiry::Never).await.unwrap();
    }
    drop(owner);
    assert_eq!(server.stop().code(), Some(0));
    let dumped = log_tool(home, &["dump", "--json"]);
    assert_eq!(code(&dumped), EXIT_CLEAN, "{}", both(&dumped));
    let offsets: Vec<u64> = stdout(&dumped)
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap()["offset"].as_u64().unwrap())
        .map(|record| record - BATCH_HEADER_BYTES)
        .collect();
    assert_eq!(offsets.len(), 3);
    offsets
}

#[tokio::test]
async fn a_torn_tail_is_named_with_its_offset_exits_3_and_is_left_for_a_start_to_cut() {
    let home = DataHome::new();
    let offsets = three_creates(&home).await;
    let whole = std::fs::read(log_path(&home)).unwrap();
    let torn = &whole[..whole.len() - 5];
    std::fs::write(log_path(&home), torn).unwrap();
    let before = tree(&home);

    let verified = log_tool(&home, &["verify"]);
    assert_eq!(code(&verified), EXIT_TORN_TAIL, "{}", both(&verified));
    let expected = format!("torn tail at byte offset {}", offsets[2]);
    assert!(stdout(&verified).contains(&expected), "{}", both(&verified));
    assert!(stdout(&verified).contains("records         2 in 2 batches"), "{}", both(&verified));
    let report = json(&log_tool(&home, &["verify", "--json"]));
    assert_eq!((&report["status"], &report["problem"]["kind"]), (&"torn_tail".into(), &"torn_tail".into()));
    assert_eq!(report["problem"]["offset"], offsets[2]);
    assert_eq!(report["problem"]["start"], "cuts");
    // dump: the records before it on stdout, the problem on stderr.
    let dumped = log_tool(&home, &["dump"]);
    assert_eq!(code(&dumped), EXIT_TORN_TAIL, "{}", both(&dumped));
    assert_eq!(stdout(&dumped).lines().count(), 2, "{}", both(&dumped));
    assert!(String::from_utf8_lossy(&dumped.stderr).contains(&expected), "{}", both(&dumped));
    assert_eq!(code(&log_tool(&home, &["stats"])), EXIT_TORN_TAIL);
    assert_eq!(tree(&home), before, "the tools changed the data directory");
    assert_eq!(std::fs::read(log_path(&home)).unwrap(), torn);

    // What exit code 3 promises: a start cuts the tail and goes on.
    let server = TestServer::start(&home, &ServerSpec::default_root());
    assert_eq!(server.stop().code(), Some(0));
    let after = log_tool(&home, &["verify"]);
    assert_eq!(code(&after), EXIT_CLEAN, "{}", both(&after));
    assert_eq!(std::fs::metadata(log_path(&home)).unwrap().len(), offsets[2]);
}

#[tokio::test]
async fn a_flipped_byte_is_named_with_its_offset_exits_4_and_a_start_refuses_the_same() {
    let home = DataHome::new();
    let offsets = three_creates(&home).await;
    let mut damaged = std::fs::read(log_path(&home)).unwrap();
    // A byte of the second record's name: its batch's checksum no longer
    // holds, and a later batch follows.
    damaged[(offsets[1] + BATCH_HEADER_BYTES) as usize + 12 + 17 + 8 + 4 + 1] ^= 0x20;
    std::fs::write(log_path(&home), &damaged).unwrap();
    let before = tree(&home);

    let verified = log_tool(&home, &["verify"]);
    assert_eq!(code(&verified), EXIT_CORRUPT, "{}", both(&verified));
    let text = stdout(&verified);
    assert!(text.contains(&format!("damage at byte offset {}", offsets[1])), "{text}");
    assert!(text.contains("checksum mismatch"), "{text}");
    assert!(text.contains(&format!("--truncate-log-at {}", offsets[1])), "{text}");
    assert!(text.contains("records         1 in 1 batches"), "{text}");
    let report = json(&log_tool(&home, &["verify", "--json"]));
    assert_eq!((&report["status"], &report["problem"]["offset"]), (&"corrupt".into(), &offsets[1].into()));
    assert_eq!(report["problem"]["start"], "refuses");
    let dumped = log_tool(&home, &["dump", "--json"]);
    assert_eq!(code(&dumped), EXIT_CORRUPT, "{}", both(&dumped));
    assert_eq!(stdout(&dumped).lines().count(), 1, "{}", both(&dumped));
    assert_eq!(code(&log_tool(&home, &["stats", "--json"])), EXIT_CORRUPT);
    assert_eq!(tree(&home), before, "the tools changed the data directory");
    assert_eq!(std::fs::read(log_path(&home)).unwrap(), damaged);

    // What exit code 4 promises: a start refuses, naming the same offset.
    let Err(refused) = TestServer::try_start(&home, &ServerSpec::default_root()) else {
        panic!("a server started on a corrupt log");
    };
    assert!(refused.stderr.contains(&format!("corrupt at byte offset {}", offsets[1])), "{}", refused.stderr);
}

#[test]
fn the_tools_say_what_they_cannot_read() {
    let home = DataHome::new();
    // No data directory: a configuration error.
    let missing = log_tool(&home, &["verify"]);
    assert_eq!(code(&missing), EXIT_USAGE, "{}", both(&missing));
    assert!(both(&missing).contains("no data directory at"), "{}", both(&missing));
    assert!(!home.data_dir().exists(), "a reading tool creates nothing");
    // A directory with no log: nothing read.
    std::fs::create_dir_all(home.data_dir()).unwrap();
    let empty = log_tool(&home, &["dump"]);
    assert_eq!(code(&empty), EXIT_NOT_READ, "{}", both(&empty));
    assert!(both(&empty).contains("no token log here"), "{}", both(&empty));
    assert!(read_tree(&home.data_dir()).is_empty(), "a reading tool creates nothing");
    // The etcd backend: these tools read the file backend only.
    let key_file = home.dir.path().join("token.key");
    std::fs::write(&key_file, [7u8; 32]).unwrap();
    let etcd = log_tool_with(
        &home,
        &["stats"],
        &[
            ("LATCHKEY_STORAGE_BACKEND", "etcd"),
            ("LATCHKEY_STORAGE_ETCD_KEY_FILE", key_file.to_str().unwrap()),
        ],
    );
    assert_eq!(code(&etcd), EXIT_USAGE, "{}", both(&etcd));
    assert!(both(&etcd).contains("the log tools read the file backend's token log only"), "{}", both(&etcd));
    // --file reads any token file: here, not a token log at all.
    let other = home.dir.path().join("not-a-log");
    std::fs::write(&other, b"hello, this is not a token log").unwrap();
    let refused = log_tool(&home, &["verify", "--file", other.to_str().unwrap()]);
    assert_eq!(code(&refused), EXIT_CORRUPT, "{}", both(&refused));
    assert!(both(&refused).contains("not a Latchkey token log"), "{}", both(&refused));
}
