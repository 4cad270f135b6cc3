//! A disk that fills up: the data directory on a 256 KiB tmpfs. Writes must
//! turn into error replies (never acknowledgements), reads must go on, and
//! after a restart with room again every acknowledged token is there.
//!
//! Needs root to mount tmpfs (CI runs as root); skips with a message if the
//! mount is refused.

use std::path::{Path, PathBuf};
use std::process::Command;

use latchkey_sdk::{Client, ErrorCode, Expiry};
use latchkey_tests::{DataHome, ServerSpec, TestServer};

/// A mounted tmpfs, unmounted on drop.
struct TinyFs {
    path: PathBuf,
}

impl TinyFs {
    fn mount(path: &Path, size: &str) -> Option<TinyFs> {
        std::fs::create_dir_all(path).ok()?;
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .status()
            .ok()?;
        status.success().then(|| TinyFs { path: path.to_owned() })
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
    let Some(tiny) = TinyFs::mount(&home.data_dir(), "256k") else {
        eprintln!("SKIPPED: cannot mount a tmpfs here (needs root)");
        return;
    };
    let spec = ServerSpec::default_root()
        .env("LATCHKEY_PERSONAL_ACCESS_TOKEN_MAX_TOKENS_PER_USER", "100000")
        // No compaction: keep every record, so the disk fills.
        .env("LATCHKEY_SYSTEM_COMPACTION_MIN_RECORDS", "100000000");
    let server = TestServer::start(&home, &spec);
    let mut client = Client::connect(server.address).await.unwrap();
    client.login_user("iggy", "iggy").await.unwrap();
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
    // Writes stay refused, even deletes (the log's tail is no longer trusted)…
    let (first_name, first_token) = acknowledged[0].clone();
    let refused = client.delete_personal_access_token(&first_name).await.unwrap_err();
    assert_eq!(refused.code(), Some(ErrorCode::StorageUnavailable));
    // …while reads go on, on fresh connections too.
    let mut reader = Client::connect(server.address).await.unwrap();
    assert_eq!(reader.login_with_personal_access_token(&first_token).await.unwrap(), 0);
    assert_eq!(reader.get_personal_access_tokens().await.unwrap().len(), acknowledged.len());
    assert_eq!(server.stop().code(), Some(0));
    // Make room (move the data to a normal directory) and restart: every
    // acknowledged token is there, and a torn last record, if any, is cut.
    let moved = home.dir.path().join("moved");
    std::fs::create_dir_all(&moved).unwrap();
    for entry in std::fs::read_dir(home.data_dir()).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), moved.join(entry.file_name())).unwrap();
    }
    drop(tiny);
    std::fs::remove_dir_all(home.data_dir()).unwrap();
    std::fs::rename(&moved, home.data_dir()).unwrap();
    let server = TestServer::start(&home, &spec);
    let mut client = Client::connect(server.address).await.unwrap();
    client.login_user("iggy", "iggy").await.unwrap();
    let listed = client.get_personal_access_tokens().await.unwrap();
    assert_eq!(listed.len(), acknowledged.len());
    for (_, token) in acknowledged.iter().step_by(17) {
        let mut check = Client::connect(server.address).await.unwrap();
        assert_eq!(check.login_with_personal_access_token(token).await.unwrap(), 0);
    }
    // Writes work again.
    client.create_personal_access_token("after-room", Expiry::Never).await.unwrap();
}
