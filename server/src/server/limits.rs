//! Process limits set at start: the open-files limit raised for the
//! configured connections, and no core dumps.

use rlimit::Resource;

/// File descriptors the server needs besides connections (log, lock,
/// listener, runtime internals), with room to spare.
const FILES_RESERVED: u64 = 256;

/// Sets the core-dump size limit to 0: a crash must not write the memory of
/// a process that holds passwords and tokens (however briefly) to disk.
pub(super) fn disable_core_dumps() {
    if let Err(error) = Resource::CORE.set(0, 0) {
        tracing::warn!(%error, "cannot disable core dumps");
    }
}

/// Raises the soft open-files limit to the hard one, and says so at start if
/// even that is too low for `max_connections` (connections past it would fail
/// at accept with EMFILE, which the acceptor survives but cannot serve).
pub(super) fn raise_open_files_limit(max_connections: usize) {
    let limit = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => limit,
        Err(error) => {
            tracing::warn!(%error, "cannot read or raise the open-files limit");
            return;
        }
    };
    let needed = max_connections as u64 + FILES_RESERVED;
    if limit < needed {
        tracing::warn!(
            open_files_limit = limit,
            max_connections,
            "the open-files limit is too low for [tcp] max_connections: at most about {} connections \
             can be served; raise the limit (ulimit -n / LimitNOFILE) or lower max_connections",
            limit.saturating_sub(FILES_RESERVED)
        );
    } else {
        tracing::debug!(open_files_limit = limit, "open-files limit");
    }
}
