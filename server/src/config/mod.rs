//! Server configuration: `configs/server.toml` (every key documented there),
//! then `LATCHKEY_<SECTION>_<KEY>` environment overrides for scalar keys.
//!
//! Key names follow Iggy's where Iggy has one (`max_tokens_per_user`,
//! `[personal_access_token.cleaner] interval`) so settings carry over.
//! Users come from the file only, never from the environment.
//!
//! This file holds the sections, their defaults and loading from TOML. The
//! environment overrides live in `env`, the checks made at start (ranges and
//! cross-field rules) in `validate` with the ranges themselves in
//! [`bounds`], and the duration spelling both the file and the environment
//! accept in `duration_text`. What a setting does is the business of the
//! module that uses it, not of this one.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub mod bounds;
mod duration_text;
mod env;
mod validate;

pub use duration_text::{parse_duration, parse_optional_duration};
pub use validate::parse_network;

/// Why a configuration could not be used. Always names the key or file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("invalid config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid value {value:?} for {key}: {reason}")]
    Env { key: &'static str, value: String, reason: String },
    #[error("invalid config: {key}: {reason}")]
    Invalid { key: String, reason: String },
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub system: SystemConfig,
    pub tcp: TcpConfig,
    pub http: HttpConfig,
    pub personal_access_token: PersonalAccessTokenConfig,
    pub login_throttle: LoginThrottleConfig,
    pub storage: StorageConfig,
    pub log: LogConfig,
    pub users: Vec<UserConfig>,
}

/// `[log]`: how log lines are written (what is logged: `LATCHKEY_LOG`).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
}

/// One line per event: for people, or one JSON object for a pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    fn from_str(value: &str) -> Result<LogFormat, String> {
        match value.trim() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("unknown log format {other:?}; expected text or json")),
        }
    }
}

/// `[storage]`: where tokens are kept.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    pub backend: StorageBackend,
    pub etcd: EtcdConfig,
}

/// The store behind the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageBackend {
    /// The append-only token log in the data directory (one node).
    #[default]
    File,
    /// An etcd v3 cluster shared by every node (cluster mode; needs a build
    /// with the `etcd` feature).
    Etcd,
}

impl std::str::FromStr for StorageBackend {
    type Err = String;

    fn from_str(value: &str) -> Result<StorageBackend, String> {
        match value.trim() {
            "file" => Ok(StorageBackend::File),
            "etcd" => Ok(StorageBackend::Etcd),
            other => Err(format!("unknown storage backend {other:?}; expected file or etcd")),
        }
    }
}

/// `[storage.etcd]`: the cluster every node shares.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct EtcdConfig {
    /// `host:port` of each etcd member (client URLs, plain HTTP/2).
    pub endpoints: Vec<String>,
    /// Every key Latchkey writes starts with this; several deployments can
    /// share one etcd cluster under different prefixes.
    pub prefix: String,
    /// The 32-byte token-hash key, the same file on every node (mode 0600).
    /// Never stored in etcd: a copy of etcd's data confirms no token.
    pub key_file: Option<PathBuf>,
    /// etcd authentication, when the cluster has it enabled.
    pub username: Option<String>,
    pub password: Option<String>,
    /// TLS to etcd: on when a CA is set (PEM, the CA that signed the
    /// members' certificates); endpoints are then reached over https.
    pub tls_ca_file: Option<PathBuf>,
    /// A client certificate and key (PEM) for members that ask for one
    /// (`--client-cert-auth`); both or neither.
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    /// The name the members' certificates are checked against (default:
    /// the endpoint's host).
    pub tls_domain: Option<String>,
    /// How long one etcd request may take before the change is answered
    /// with 20002 (outcome unknown).
    #[serde(with = "duration_text")]
    pub request_timeout: Duration,
    /// A node that has not heard from etcd for longer than this refuses
    /// token logins and Authorize (20002): it may be missing a revocation.
    /// `0s` turns the check off.
    #[serde(with = "duration_text")]
    pub max_staleness: Duration,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SystemConfig {
    /// Data directory: lock, server key, root credentials, token log.
    pub path: PathBuf,
    /// Worker threads (Iggy's name for the key); 0 means one per core.
    pub shards: usize,
    /// Threads that run Argon2 password checks; 0 means one per core.
    pub password_threads: usize,
    /// Password checks allowed to wait for a thread before logins queue up.
    pub password_queue: usize,
    /// How long shutdown waits for in-flight requests.
    #[serde(with = "duration_text")]
    pub shutdown_timeout: Duration,
    /// The token log is compacted once it holds at least this many records…
    pub compaction_min_records: u64,
    /// …and more than this fraction of them are dead (deleted tokens and
    /// delete records), in 0.0–1.0.
    pub compaction_dead_ratio: f64,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TcpConfig {
    /// Listen address.
    pub address: String,
    /// Largest request length field (code + payload bytes) accepted; a larger
    /// declared length closes the connection before anything is buffered.
    /// The 0.11 framing applies the same body limit (see [`TcpConfig::vsr_size_max`]).
    pub max_frame_size: u32,
    /// Which framing connections on this listener speak.
    pub framing: Framing,
    /// Connections open at once, over all addresses; more are closed at accept.
    pub max_connections: usize,
    /// Connections open at once from one IP address; IPv6 clients count by
    /// network (`[login_throttle] ipv6_prefix_len`).
    pub max_connections_per_ip: usize,
    /// Time a connection has to log in (from connect, or from its logout);
    /// "0 s" disables.
    #[serde(with = "duration_text")]
    pub login_timeout: Duration,
    /// A logged-in connection that sends nothing for this long is closed;
    /// "0 s" disables. Both timeouts also bound a write of replies the
    /// client does not read: once it has to wait, it waits at most this
    /// long (until the login deadline, before login).
    #[serde(with = "duration_text")]
    pub idle_timeout: Duration,
    /// Requests answered from one read before the replies must be written:
    /// a client that pipelines without reading meets TCP backpressure
    /// instead of an ever-growing reply buffer.
    pub max_requests_in_flight: usize,
    /// `[tcp.tls]`: TLS on this listener.
    pub tls: TcpTlsConfig,
}

/// `[http]`: the HTTP/1.1 listener beside the TCP one: metrics, health,
/// the REST API and forward auth for proxies.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    pub enabled: bool,
    /// Listen address.
    pub address: String,
    /// `[http.tls]`: HTTPS on this listener (same keys as `[tcp.tls]`).
    pub tls: TcpTlsConfig,
    /// Networks (CIDR, or a single address) of the proxies whose
    /// `X-Forwarded-For` and `X-Real-IP` headers are believed. Nobody's by
    /// default: the client address is the peer's.
    pub trusted_proxies: Vec<String>,
    /// HTTP connections open at once, over all addresses.
    pub max_connections: usize,
    /// HTTP connections open at once from one address (IPv6 by network,
    /// as on TCP).
    pub max_connections_per_ip: usize,
    /// Largest request head (request line and headers); more is answered
    /// with 431 and the connection closed.
    pub max_header_bytes: usize,
    /// Largest request body; more is answered with 413.
    pub max_body_bytes: usize,
    /// A connection that starts no request for this long (and has none in
    /// flight) is closed: idle, or sending its head too slowly. Checked once
    /// per period, so such a connection lasts one to two of these.
    #[serde(with = "duration_text")]
    pub idle_timeout: Duration,
    /// Time a request has, once its headers are in, to send its body; past
    /// it the answer is 408.
    #[serde(with = "duration_text")]
    pub request_timeout: Duration,
    /// The web console for tokens at `/` (README "Web console"), with its
    /// browser sessions under `/v1/session`.
    pub console: bool,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            enabled: true,
            address: "127.0.0.1:8091".to_owned(),
            tls: TcpTlsConfig::default(),
            trusted_proxies: Vec::new(),
            max_connections: 4_096,
            max_connections_per_ip: 1_000,
            max_header_bytes: 16 * 1024,
            max_body_bytes: 64 * 1024,
            idle_timeout: Duration::from_secs(60),
            request_timeout: Duration::from_secs(10),
            console: true,
        }
    }
}

/// `[tcp.tls]` (Iggy's section name and keys). When enabled, the listener's
/// address speaks TLS only; both framings work inside it.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TcpTlsConfig {
    pub enabled: bool,
    /// PEM certificate chain, end-entity certificate first.
    pub cert_file: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of the end-entity certificate.
    pub key_file: Option<PathBuf>,
}

impl TcpConfig {
    /// The largest 0.11 frame (`size`, header included) accepted: the same
    /// largest body a legacy frame may carry (`max_frame_size` − 4 bytes for
    /// the code), behind a 256-byte header instead of an 8-byte one.
    pub fn vsr_size_max(&self) -> u32 {
        let body_max = self.max_frame_size.saturating_sub(4);
        body_max.saturating_add(latchkey_protocol::vsr::HEADER_BYTES as u32)
    }
}

/// The framing a listener speaks (spec §0.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Framing {
    /// Decide per connection from its first 4 bytes: all zero is the 0.11
    /// framing, anything else legacy (spec §0.2).
    #[default]
    Auto,
    /// Length-prefixed frames only (`iggy` ≤ 0.10, `iggy-cli` ≤ 0.13).
    Legacy,
    /// 256-byte-header frames only (`iggy` 0.11, `iggy-cli` 0.14).
    Vsr,
}

impl std::str::FromStr for Framing {
    type Err = String;

    fn from_str(value: &str) -> Result<Framing, String> {
        match value.trim() {
            "auto" => Ok(Framing::Auto),
            "legacy" => Ok(Framing::Legacy),
            "vsr" => Ok(Framing::Vsr),
            other => Err(format!("unknown framing {other:?}; expected auto, legacy or vsr")),
        }
    }
}

impl std::fmt::Display for Framing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Framing::Auto => "auto",
            Framing::Legacy => "legacy",
            Framing::Vsr => "vsr",
        })
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PersonalAccessTokenConfig {
    /// Tokens one user may hold, expired-but-uncleaned ones included.
    pub max_tokens_per_user: u32,
    /// Longest lifetime a create or rotate may ask for; `None` ("never" in
    /// the file) sets no maximum. With a maximum, asking for a token that
    /// never expires is refused too (code 20006).
    #[serde(with = "duration_text::or_never")]
    pub max_lifetime: Option<Duration>,
    /// Lifetime given to a token created with expiry 0 ("server default");
    /// `None` ("never") means such tokens never expire, as in Iggy.
    #[serde(with = "duration_text::or_never")]
    pub default_lifetime: Option<Duration>,
    /// Whether a session that logged in with a token may create, change and
    /// remove tokens (Iggy: yes). `false` leaves that to password sessions.
    pub token_sessions_manage_tokens: bool,
    /// How often the last-use times connections handed over are written to
    /// the log. A crash loses at most this much last-use data; nothing else.
    #[serde(with = "duration_text")]
    pub last_used_flush_interval: Duration,
    /// Tokens expiring within this are announced once (audit event
    /// `token_expiring`) and counted (`latchkey_tokens_expiring`); the REST
    /// list and the CLI filter by any window. `0s` turns announcing off.
    #[serde(with = "duration_text")]
    pub expiry_warning_window: Duration,
    pub cleaner: CleanerConfig,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CleanerConfig {
    pub enabled: bool,
    #[serde(with = "duration_text")]
    pub interval: Duration,
}

/// A user from `[[users]]`. The root user (id 0) is not configured here: its
/// credentials live in the data directory (see README).
#[derive(Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// Stable id, ≥ 1 and unique: tokens are owned by this id.
    pub id: u32,
    pub username: String,
    /// Argon2 PHC string, e.g. from `latchkey-server hash-password`.
    pub password_hash: String,
    #[serde(default = "default_true")]
    pub active: bool,
    /// Extra permissions: `"authorize"` lets the user call Authorize (a
    /// broker's service account). Root has every permission.
    #[serde(default)]
    pub permissions: Vec<String>,
}

impl std::fmt::Debug for UserConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserConfig")
            .field("id", &self.id)
            .field("username", &self.username)
            .field("active", &self.active)
            .field("permissions", &self.permissions)
            .finish_non_exhaustive()
    }
}

/// Permissions a configured user may be given.
pub const PERMISSIONS: &[&str] = &[PERMISSION_AUTHORIZE];
pub const PERMISSION_AUTHORIZE: &str = "authorize";

fn default_true() -> bool {
    true
}

impl Default for EtcdConfig {
    fn default() -> Self {
        EtcdConfig {
            endpoints: vec!["127.0.0.1:2379".to_owned()],
            prefix: "/latchkey/".to_owned(),
            key_file: None,
            username: None,
            password: None,
            tls_ca_file: None,
            tls_cert_file: None,
            tls_key_file: None,
            tls_domain: None,
            request_timeout: Duration::from_secs(5),
            max_staleness: Duration::from_secs(30),
        }
    }
}

impl Default for SystemConfig {
    fn default() -> Self {
        SystemConfig {
            path: PathBuf::from("local_data"),
            shards: 0,
            password_threads: 0,
            password_queue: 1024,
            shutdown_timeout: Duration::from_secs(5),
            compaction_min_records: 10_000,
            compaction_dead_ratio: 0.5,
        }
    }
}

impl Default for TcpConfig {
    fn default() -> Self {
        TcpConfig {
            address: "127.0.0.1:8090".to_owned(),
            max_frame_size: latchkey_protocol::codec::REQUEST_LENGTH_MAX_DEFAULT,
            framing: Framing::Auto,
            max_connections: 10_000,
            max_connections_per_ip: 1_000,
            login_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(600),
            max_requests_in_flight: 64,
            tls: TcpTlsConfig::default(),
        }
    }
}

/// Failed-login throttling: token buckets per client address and per
/// username. Each failed login takes a token; an attempt that finds its
/// bucket empty is refused (code 20001) before any lookup or Argon2.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LoginThrottleConfig {
    pub enabled: bool,
    /// Failed logins one address may make in a burst…
    pub per_address_burst: u32,
    /// …and how many more it earns per minute.
    pub per_address_per_minute: u32,
    /// Failed password logins for one username in a burst (from any
    /// address)… An address with no failures of its own is never throttled
    /// by this bucket, so the real user is not locked out by an attacker.
    pub per_user_burst: u32,
    /// …and how many more per minute.
    pub per_user_per_minute: u32,
    /// IPv6 clients are counted by their first this many bits, so the
    /// addresses of one subnet share one bucket (IPv4: each address its
    /// own). The per-address connection limit (`[tcp]
    /// max_connections_per_ip`) counts by the same prefix.
    pub ipv6_prefix_len: u8,
}

impl Default for LoginThrottleConfig {
    fn default() -> Self {
        LoginThrottleConfig {
            enabled: true,
            per_address_burst: 20,
            per_address_per_minute: 30,
            per_user_burst: 10,
            per_user_per_minute: 10,
            ipv6_prefix_len: 64,
        }
    }
}

impl Default for PersonalAccessTokenConfig {
    fn default() -> Self {
        PersonalAccessTokenConfig {
            max_tokens_per_user: 100,
            max_lifetime: None,
            default_lifetime: None,
            token_sessions_manage_tokens: true,
            last_used_flush_interval: Duration::from_secs(5),
            expiry_warning_window: Duration::from_secs(7 * 24 * 3600),
            cleaner: CleanerConfig::default(),
        }
    }
}

impl Default for CleanerConfig {
    fn default() -> Self {
        CleanerConfig { enabled: true, interval: Duration::from_secs(60) }
    }
}

impl Config {
    /// Reads `path`, or the defaults when `path` is `None`.
    pub fn from_file(path: Option<&Path>) -> Result<Config, ConfigError> {
        let Some(path) = path else {
            return Ok(Config::default());
        };
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        Config::from_toml(&text).map_err(|message| ConfigError::Parse { path: path.to_owned(), message })
    }

    pub fn from_toml(text: &str) -> Result<Config, String> {
        toml::from_str(text).map_err(|error| error.to_string())
    }
}

#[cfg(test)]
mod tests;
