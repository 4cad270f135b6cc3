//! The range each numeric config key must fall in, and why. `validate`
//! checks every key against these at start and on SIGHUP; README.md lists
//! them next to the keys.
//!
//! A bound here is a sanity limit on what an operator may ask for: it turns
//! a typo (an extra zero, "h" for "s") into an error that names the key at
//! start instead of a server that misbehaves later. The limits the server
//! applies to its peers (frame bytes, names, scopes) live with the code that
//! enforces them, not here. A key whose lower bound is not listed may be 0,
//! which for some keys means "one per core" or "off" (see the key's doc).

use std::time::Duration;

const DAY: Duration = Duration::from_secs(86_400);

// [system]

/// `shards` at most: worker threads of the one runtime that serves
/// connections. Workers beyond the cores only add context switches; 1024 is
/// more cores than any single machine this would run on has, and catches a
/// typo before it starts thousands of threads.
pub const SHARDS_MAX: usize = 1024;

/// `password_threads` at most. Each thread runs one Argon2 check at a time,
/// holding the hash's memory (19 MiB with the default parameters), so 256
/// busy threads take about 4.75 GiB; threads beyond the cores only queue for
/// the CPU.
pub const PASSWORD_THREADS_MAX: usize = 256;

/// `password_queue` at most. A waiting check belongs to a login on an open
/// connection, and a connection waits for one login at a time, so a queue
/// longer than the most connections the server may hold could never fill.
/// (The queue is a semaphore, which panics above `usize::MAX >> 3` slots.)
pub const PASSWORD_QUEUE_CHECKS_MAX: usize = MAX_CONNECTIONS_MAX;

/// `shutdown_timeout` at most (0 s: do not wait). Service managers give up
/// long before (systemd sends SIGKILL after 90 s by default); an hour leaves
/// room for a deliberate drain and catches "5 h" written for "5 s".
pub const SHUTDOWN_TIMEOUT_MAX: Duration = Duration::from_secs(3600);

/// `compaction_min_records` at most. A record is about 100 bytes (the log of
/// 1,000,000 tokens is 98 MB, BENCHMARKS.md), so the log may reach some
/// 100 GB before its first compaction, and a start replays all of it. A
/// larger threshold would let the log outgrow most disks first.
pub const COMPACTION_MIN_RECORDS_MAX: u64 = 1_000_000_000;

/// `compaction_dead_ratio` is a share of the log's records: 0.0 compacts as
/// soon as one record is dead, 1.0 never compacts (no share exceeds it).
pub const COMPACTION_DEAD_RATIO_MIN: f64 = 0.0;
/// See [`COMPACTION_DEAD_RATIO_MIN`].
pub const COMPACTION_DEAD_RATIO_MAX: f64 = 1.0;

// [tcp]

/// `max_frame_size` at least: the length field counts the 4-byte command
/// code, so a smaller limit would refuse every request.
pub const MAX_FRAME_SIZE_BYTES_MIN: u32 = 4;

/// `max_frame_size` at most: 1 MiB, 16 times the default. Login and token
/// requests are under 600 bytes and the largest extended create a few KiB.
/// The codecs reserve a frame's declared length before its bytes arrive, so
/// this times `max_connections` is the memory hostile peers can pin; it also
/// stays far below the protocol crate's 16 MiB reply limit
/// (`REPLY_LENGTH_MAX_DEFAULT`) and keeps [`super::TcpConfig::vsr_size_max`]
/// from saturating.
pub const MAX_FRAME_SIZE_BYTES_MAX: u32 = 1024 * 1024;

const _: () = assert!(
    MAX_FRAME_SIZE_BYTES_MAX <= latchkey_protocol::codec::REPLY_LENGTH_MAX_DEFAULT
        && (MAX_FRAME_SIZE_BYTES_MAX as u64) + (latchkey_protocol::vsr::HEADER_BYTES as u64)
            <= u32::MAX as u64
);

/// `max_connections` at most. Each connection holds a file descriptor, and
/// 1,048,576 is Linux's default ceiling on a process's open-files limit
/// (`fs.nr_open`); the server raises its soft limit to the hard one at start
/// and warns when that is below `max_connections`.
pub const MAX_CONNECTIONS_MAX: usize = 1 << 20;

/// `max_connections_per_ip` at most: one address may hold every connection
/// (a proxy or a NAT does), but no more than [`MAX_CONNECTIONS_MAX`].
pub const MAX_CONNECTIONS_PER_IP_MAX: usize = MAX_CONNECTIONS_MAX;

/// `login_timeout` at most (0 s: off). A connection that has not logged in
/// holds a connection slot; no client takes a day to log in, so a longer
/// value is a typo, and "0 s" is the way to wait forever.
pub const LOGIN_TIMEOUT_MAX: Duration = DAY;

/// `idle_timeout` at most (0 s: off). Iggy SDKs ping every few seconds and
/// reconnect on their own; past a day, "0 s" says what is meant.
pub const IDLE_TIMEOUT_MAX: Duration = DAY;

/// `max_requests_in_flight` at most. The replies to one read are buffered
/// before they are written, so this bounds a connection's reply buffer; the
/// log writer commits at most 4096 changes at once, so a longer pipelined
/// burst would not share one commit anyway.
pub const MAX_REQUESTS_IN_FLIGHT_MAX: usize = 4096;

// [login_throttle]

/// `per_address_burst` and `per_user_burst` at least, while the throttle is
/// enabled: an empty bucket refuses every login, good password or not.
pub const LOGIN_THROTTLE_BURST_LOGINS_MIN: u32 = 1;

/// `per_address_burst` and `per_user_burst` at most: about one second of
/// the most logins the server was measured to answer (104,184 a second,
/// BENCHMARKS.md). A larger bucket throttles nothing; `enabled = false` is
/// the honest way to say that.
pub const LOGIN_THROTTLE_BURST_LOGINS_MAX: u32 = 100_000;

/// `per_address_per_minute` and `per_user_per_minute` at most: 100,000
/// failed logins a second, the same measured ceiling as the bursts.
pub const LOGIN_THROTTLE_LOGINS_PER_MINUTE_MAX: u32 = 6_000_000;

/// `ipv6_prefix_len` at least: a /32 is the smallest block the address
/// registries allocate to a provider, so a shorter prefix would count the
/// customers of several providers as one client, and refusing one would
/// refuse them all.
pub const IPV6_PREFIX_BITS_MIN: u8 = 32;

/// `ipv6_prefix_len` at most: 128 counts every IPv6 address on its own
/// (what an operator who trusts each address to be one client asks for).
pub const IPV6_PREFIX_BITS_MAX: u8 = 128;

// [personal_access_token]

/// `max_tokens_per_user` at most. A user's tokens are found by id with a
/// scan of that user's tokens, a delete-all commits them all at once, and
/// the whole server holds about 250–370 bytes per token (BENCHMARKS.md,
/// 10M tokens of one user: 253 B after a restart, 373 B at its peak while
/// starting), so one user at this bound takes some 2.5–3.7 GB. The tests
/// and the crash harness allow one user 1,000,000 tokens and the scale
/// benchmarks 10,000,000, the bound itself.
pub const MAX_TOKENS_PER_USER_MAX: u32 = 10_000_000;

/// `max_lifetime` and `default_lifetime` at least (or "never"). The log and
/// the wire count time in microseconds, and a lifetime below one would round
/// to 0, which the protocol reads as "never expires"; below a second, the
/// unit was surely mistyped.
pub const TOKEN_LIFETIME_MIN: Duration = Duration::from_secs(1);

/// `max_lifetime` and `default_lifetime` at most: 100 years (of 365.25 days,
/// as "100 years" is read). Longer means "never", which is the way to say
/// it; the bound also keeps every expiry (commit time + lifetime, in µs) far
/// from overflowing.
pub const TOKEN_LIFETIME_MAX: Duration = Duration::from_secs(100 * 31_557_600);

/// `last_used_flush_interval` at least: 1 ms, the timer's resolution. Each
/// flush that has uses to write is one log commit.
pub const LAST_USED_FLUSH_INTERVAL_MIN: Duration = Duration::from_millis(1);

/// `last_used_flush_interval` at most. A crash loses up to this much of the
/// last-use record, which operators read to find tokens nobody uses; losing
/// more than a day of it defeats the purpose.
pub const LAST_USED_FLUSH_INTERVAL_MAX: Duration = DAY;

/// `[personal_access_token.cleaner] interval` at least. A pass deletes the
/// expired tokens through the writer in commits of 256, each taken from
/// the writer's expiry index (no scan of every token); the floor keeps an
/// idle server from waking ten times a second for nothing.
pub const CLEANER_INTERVAL_MIN: Duration = Duration::from_millis(100);

/// `[personal_access_token.cleaner] interval` at most. An expired token is
/// listed (and logs in with code 54) until a pass removes it; to keep
/// expired tokens longer than a day, set `enabled = false`.
pub const CLEANER_INTERVAL_MAX: Duration = DAY;

/// `[storage.etcd] request_timeout` at least: below this a healthy cluster's
/// leader election (about 1 s) would fail every write it overlaps.
pub const ETCD_REQUEST_TIMEOUT_MIN: Duration = Duration::from_millis(100);

/// `[storage.etcd] request_timeout` at most: a writer waits this long before
/// it answers 20002, and every later change waits behind it.
pub const ETCD_REQUEST_TIMEOUT_MAX: Duration = Duration::from_secs(60);

/// `[storage.etcd] prefix` bytes at most: every key carries it.
pub const ETCD_PREFIX_BYTES_MAX: usize = 256;

/// `[storage.etcd] endpoints` at most: etcd clusters have 3, 5 or 7 members.
pub const ETCD_ENDPOINTS_MAX: usize = 16;

/// `[storage.etcd] max_staleness` at most: a node that has not heard from
/// the cluster for an hour has no business checking tokens.
pub const ETCD_MAX_STALENESS_MAX: Duration = Duration::from_secs(3600);

// [http]

/// `max_header_bytes` at least: hyper's smallest read buffer, and enough
/// for a request with a bearer token and a proxy's forwarding headers.
pub const HTTP_HEADER_BYTES_MIN: usize = 8 * 1024;
/// `max_header_bytes` at most: a request head past 1 MiB is no API call.
pub const HTTP_HEADER_BYTES_MAX: usize = 1 << 20;
/// `max_body_bytes` at least: a token create with its longest name,
/// description, 255 scopes and 255 networks fits in 64 KiB; a smaller limit
/// still serves smaller requests, but below 1 KiB none would fit.
pub const HTTP_BODY_BYTES_MIN: usize = 1024;
/// `max_body_bytes` at most: the same largest body as a TCP frame.
pub const HTTP_BODY_BYTES_MAX: usize = MAX_FRAME_SIZE_BYTES_MAX as usize;
/// `idle_timeout` and `request_timeout` at least: a zero would close every
/// connection before its first request.
pub const HTTP_TIMEOUT_MIN: Duration = Duration::from_millis(100);
/// Trusted proxy networks at most (each request walks the list).
pub const TRUSTED_PROXIES_MAX: usize = 256;
