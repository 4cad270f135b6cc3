//! A disk that fills up. Writes must turn into error replies (20002, never an
//! acknowledgement), reads must go on, and after a restart with room again
//! every acknowledged token is there.
//!
//! Two ways to run out of room, both through the real binary:
//! - a file size limit (`RLIMIT_FSIZE`) on the server process: the append
//!   that would grow the log past it fails with `EFBIG`. No mount, no
//!   privilege, so it runs everywhere;
//! - the data directory on a 256 KiB tmpfs: the real `ENOSPC`. Mounting needs
//!   root; without it the test skips, naming why (a failure under CI).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use latchkey_sdk::{Client, ErrorCode, Expiry};
use latchkey_tests::{DataHome, ServerSpec, TestServer};

/// Compaction off, so every record stays in the log and the log keeps
/// growing; no per-user cap in the way.
fn filling_spec() -> ServerSpec {
    ServerSpec::default_root()
        .env("LATCHKEY_PERSONAL_ACCESS_TOKEN_MAX_TOKENS_PER_USER", "100000")
        .env("LATCHKEY_SYSTEM_COMPACTION_MIN_RECORDS", "100000000")
}

/// Creates tokens until a create is refused; returns the acknowledged ones
/// and checks the refusal is 20002 and the disk really filled.
async fn fill(client: &mut Client) -> Vec<(String, String)> {
    let mut acknowledged = Vec::new();
    let mut refusal = None;
    for index in 0..10_000 {
        let name = format!("fill-{index}");
        match client.create_personal_access_token(&name, Expiry::Never).await {
            Ok(token) => acknowledged.push((name, token)),
            Err(error) => {
                refusal = Some(error.code());
                break;
            }
        }
    }
    assert_eq!(refusal, Some(Some(ErrorCode::StorageUnavailable)), "the disk never filled");
    assert!(acknowledged.len() > 100, "only {} tokens fitted", acknowledged.len());
    acknowledged
}

/// After a failed append: writes stay refused, even deletes (the log's tail
/// is no longer trusted), while reads go on, on fresh connections too.
async fn writes_refused_reads_served(
    server: &TestServer,
    client: &mut Client,
    acknowledged: &[(String, String)],
) {
    let (first_name, first_token) = &acknowledged[0];
    let refused = client.delete_personal_access_token(first_name).await.unwrap_err();
    assert_eq!(refused.code(), Some(ErrorCode::StorageUnavailable));
    let refused = client.create_personal_access_token("one-more", Expiry::Never).await.unwrap_err();
    assert_eq!(refused.code(), Some(ErrorCode::StorageUnavailable));
    let mut reader = Client::connect(server.address).await.unwrap();
    assert_eq!(reader.login_with_personal_access_token(first_token).await.unwrap(), 0);
    assert_eq!(reader.get_personal_access_tokens().await.unwrap().len(), acknowledged.len());
    common::wait_for_logs(server, |logs| logs.contains("log append failed"));
}

/// Restarted with room: every acknowledged token is listed and logs in (a
/// torn last record, if any, was cut), and writes work again.
async fn all_acknowledged_survive(home: &DataHome, spec: &ServerSpec, acknowledged: &[(String, String)]) {
    let server = TestServer::start(home, spec);
    let mut client = Client::connect(server.address).await.unwrap();
    client.login_user("iggy", "iggy").await.unwrap();
    let mut listed: Vec<String> =
        client.get_personal_access_tokens().await.unwrap().into_iter().map(|token| token.name).collect();
    listed.sort();
    let mut expected: Vec<String> = acknowledged.iter().map(|(name, _)| name.clone()).collect();
    expected.sort();
    assert_eq!(listed, expected);
    for (_, token) in acknowledged.iter().step_by(17) {
        let mut check = Client::connect(server.address).await.unwrap();
        assert_eq!(check.login_with_personal_access_token(token).await.unwrap(), 0);
    }
    client.create_personal_access_token("after-room", Expiry::Never).await.unwrap();
}

#[tokio::test]
async fn a_file_size_limit_turns_appends_into_20002_and_loses_nothing_acknowledged() {
    let home = DataHome::new();
    // 64 KiB: the server key, root file and lock are far smaller; the log
    // reaches it after a few hundred creates.
    let limited = filling_spec().file_size_limit_bytes(64 * 1024);
    let server = TestServer::start(&home, &limited);
    let mut client = Client::connect(server.address).await.unwrap();
    client.login_user("iggy", "iggy").await.unwrap();
    let acknowledged = fill(&mut client).await;
    writes_refused_reads_served(&server, &mut client, &acknowledged).await;
    let log = std::fs::read_dir(home.data_dir())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_file())
        .map(|path| std::fs::metadata(path).unwrap().len())
        .max()
        .unwrap();
    assert_eq!(log, 64 * 1024, "the largest file should have stopped at the limit");
    assert_eq!(server.stop().code(), Some(0));
    all_acknowledged_survive(&home, &filling_spec(), &acknowledged).await;
}

/// A mounted tmpfs, unmounted on drop.
struct TinyFs {
    path: PathBuf,
}

impl TinyFs {
    /// Mounts a tmpfs of `size` at `path`; `Err` names what this machine
    /// lacks and what to do about it.
    fn mount(path: &Path, size: &str) -> Result<TinyFs, (String, &'static str)> {
        // SAFETY: geteuid(2) has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            return Err(("mounting a tmpfs needs root".into(), "run the tests as root (CI does)"));
        }
        std::fs::create_dir_all(path).expect("create the mount point");
        let output = match Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .output()
        {
            Ok(output) => output,
            Err(error) => return Err((format!("cannot run mount(8): {error}"), "apt-get install mount")),
        };
        if !output.status.success() {
            return Err((
                format!("mount refused a tmpfs: {}", String::from_utf8_lossy(&output.stderr).trim()),
                "run with the CAP_SYS_ADMIN capability (a privileged container)",
            ));
        }
        Ok(TinyFs { path: path.to_owned() })
    }
}

impl Drop for TinyFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.path).status();
    }
}

#[tokio::test]
async fn a_full_disk_refuses_writes_keeps_reads_and_loses_nothing_acknowledged() {
    let home = DataHome::new();
    let tiny = match TinyFs::mount(&home.data_dir(), "256k") {
        Ok(tiny) => tiny,
        Err((missing, remedy)) => return latchkey_tests::skip(&missing, remedy),
    };
    let spec = filling_spec();
    let server = TestServer::start(&home, &spec);
    let mut client = Client::connect(server.address).await.unwrap();
    client.login_user("iggy", "iggy").await.unwrap();
    let acknowledged = fill(&mut client).await;
    writes_refused_reads_served(&server, &mut client, &acknowledged).await;
    assert_eq!(server.stop().code(), Some(0));
    // Make room (move the data to a normal directory) and restart.
    let moved = home.dir.path().join("moved");
    std::fs::create_dir_all(&moved).unwrap();
    for entry in std::fs::read_dir(home.data_dir()).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), moved.join(entry.file_name())).unwrap();
    }
    drop(tiny);
    std::fs::remove_dir_all(home.data_dir()).unwrap();
    std::fs::rename(&moved, home.data_dir()).unwrap();
    all_acknowledged_survive(&home, &spec, &acknowledged).await;
}
