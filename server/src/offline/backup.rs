//! Online backup and restore of a file-backed server.
//!
//! `backup` asks the running server for a consistent, compacted copy of its
//! token log (`POST /v1/admin/backup`, root's password; the server makes it
//! after every change queued before the request, so every change
//! acknowledged before the backup began is in it) and writes a complete
//! data directory: that log, and the server key and root credentials read
//! from the live data directory (both are written once, at its first start,
//! and never change). The copy is checked by replaying it before it is
//! kept. `restore` makes the configured data directory from a backup, which
//! must be new: a restore never merges.
//!
//! The backup client speaks plain HTTP/1.1 to the server's HTTP side: run
//! it on the server's host, against a loopback address. A backup is as
//! private as a data directory (its hashes confirm tokens to whoever holds
//! its key): it is written with mode 0700/0600.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use base64::Engine;

use super::OfflineError;
use crate::config::{Config, StorageBackend};
use crate::datadir::{DataDir, ROOT_FILE, SERVER_KEY_FILE};
use crate::store::{self, log::LOG_FILE};

/// How long the backup client waits on the server (a big registry takes a
/// while to encode and send).
const BACKUP_TIMEOUT: Duration = Duration::from_secs(600);
/// A response head larger than this is no Latchkey answer.
const RESPONSE_HEAD_BYTES_MAX: usize = 64 * 1024;

/// Who asks for the backup, and where the server listens.
pub struct BackupSource<'a> {
    /// `host:port` of the server's HTTP side (plain HTTP).
    pub address: &'a str,
    pub username: &'a str,
    pub password: &'a str,
}

/// What a backup or restore wrote.
#[derive(Debug)]
pub struct Copied {
    pub tokens: usize,
    pub log_bytes: usize,
}

/// Writes a backup of the running server into `to` (created; must hold no
/// backup or data yet).
pub fn backup(config: &Config, source: &BackupSource<'_>, to: &Path) -> Result<Copied, OfflineError> {
    if config.storage.backend != StorageBackend::File {
        return Err(OfflineError::Refused(
            "backup copies a file-backed server; a cluster's tokens live in etcd: take etcd snapshots \
             (CLUSTER.md), or `export` from it"
                .to_owned(),
        ));
    }
    let live = &config.system.path;
    let read = |name: &str| {
        let path = live.join(name);
        std::fs::read(&path).map_err(|source| OfflineError::Io { what: "cannot read", path, source })
    };
    let (key, root) = (read(SERVER_KEY_FILE)?, read(ROOT_FILE)?);
    let (log, key_check) = fetch(source)?;
    // The key read here must be the server's, or no token in the copy
    // would ever verify (a config naming another data directory).
    let ours =
        <[u8; 32]>::try_from(key.as_slice()).ok().map(|key| crate::auth::TokenKey::new(key).check_value());
    if ours.is_none() || ours != key_check {
        return Err(OfflineError::Refused(format!(
            "{} does not hold the server key of the server at {}: check [system] path",
            live.join(SERVER_KEY_FILE).display(),
            source.address
        )));
    }
    // Replayed before anything is kept: a damaged copy is no backup.
    let (state, _) = store::read_file(Path::new("(the backup received)"), &log)?;
    let target = new_data_dir(to)?;
    target.write_private(SERVER_KEY_FILE, &key)?;
    target.write_private(ROOT_FILE, &root)?;
    target.write_private(LOG_FILE, &log)?;
    Ok(Copied { tokens: state.len(), log_bytes: log.len() })
}

/// Makes the configured data directory from the backup in `from`.
pub fn restore(config: &Config, from: &Path) -> Result<Copied, OfflineError> {
    let read = |name: &str| {
        let path = from.join(name);
        std::fs::read(&path).map_err(|source| OfflineError::Io { what: "cannot read", path, source })
    };
    let (key, root, log) = (read(SERVER_KEY_FILE)?, read(ROOT_FILE)?, read(LOG_FILE)?);
    let (state, _) = store::read_file(&from.join(LOG_FILE), &log)?;
    let target = new_data_dir(&config.system.path)?;
    target.write_private(SERVER_KEY_FILE, &key)?;
    target.write_private(ROOT_FILE, &root)?;
    target.write_private(LOG_FILE, &log)?;
    // Opened as the server would, so a restore that would not start fails here.
    target.root_credentials()?;
    target.server_key()?;
    Ok(Copied { tokens: state.len(), log_bytes: log.len() })
}

/// `path` as a data directory, locked, holding no key, root or log yet.
fn new_data_dir(path: &Path) -> Result<DataDir, OfflineError> {
    let dir = DataDir::open(path)?;
    for name in [SERVER_KEY_FILE, ROOT_FILE, LOG_FILE] {
        if dir.path().join(name).exists() {
            return Err(OfflineError::Refused(format!(
                "{} already holds {name}: backup and restore write only into a new directory",
                dir.path().display()
            )));
        }
    }
    Ok(dir)
}

/// `POST /v1/admin/backup` over plain HTTP/1.1: the log file's bytes, and
/// the server's key check.
fn fetch(source: &BackupSource<'_>) -> Result<(Vec<u8>, Option<String>), OfflineError> {
    let failed = |what: String| OfflineError::Refused(format!("backup from {}: {what}", source.address));
    let io = |error: std::io::Error| failed(error.to_string());
    let mut stream = TcpStream::connect(source.address).map_err(io)?;
    stream.set_read_timeout(Some(BACKUP_TIMEOUT)).map_err(io)?;
    let credentials =
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", source.username, source.password));
    let request = format!(
        "POST /v1/admin/backup HTTP/1.1\r\nHost: {}\r\nAuthorization: Basic {credentials}\r\n\
         Content-Length: 0\r\nConnection: close\r\n\r\n",
        source.address
    );
    stream.write_all(request.as_bytes()).map_err(io)?;
    let mut reader = BufReader::new(stream);
    let mut head = Vec::new();
    let mut length: Option<usize> = None;
    let mut key_check = None;
    let mut status_line = String::new();
    reader.read_line(&mut status_line).map_err(io)?;
    let status: u16 = status_line.split_whitespace().nth(1).and_then(|code| code.parse().ok()).unwrap_or(0);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).map_err(io)? == 0 {
            return Err(failed("the server closed the connection mid-answer".to_owned()));
        }
        head.extend_from_slice(line.as_bytes());
        if head.len() > RESPONSE_HEAD_BYTES_MAX {
            return Err(failed("an answer head larger than 64 KiB".to_owned()));
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().ok();
            } else if name.eq_ignore_ascii_case("x-latchkey-key-check") {
                key_check = Some(value.trim().to_owned());
            }
        }
    }
    // Read as it arrives, not sized by the peer's word up front.
    let mut body = Vec::new();
    match length {
        Some(length) => {
            (&mut reader).take(length as u64).read_to_end(&mut body).map_err(io)?;
            if body.len() != length {
                return Err(failed("the answer ended before its Content-Length".to_owned()));
            }
        }
        None => {
            reader.read_to_end(&mut body).map_err(io)?;
        }
    }
    if status != 200 {
        // The JSON error body names the code; it carries no secret.
        let text = String::from_utf8_lossy(&body);
        return Err(failed(format!("answered {status}: {}", text.trim())));
    }
    Ok((body, key_check))
}
