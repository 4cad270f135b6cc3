//! Server configuration: `configs/server.toml` (every key documented there),
//! then `LATCHKEY_<SECTION>_<KEY>` environment overrides for scalar keys.
//!
//! Key names follow Iggy's where Iggy has one (`max_tokens_per_user`,
//! `[personal_access_token.cleaner] interval`) so settings carry over.
//! Users come from the file only, never from the environment.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

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
    pub personal_access_token: PersonalAccessTokenConfig,
    pub login_throttle: LoginThrottleConfig,
    pub users: Vec<UserConfig>,
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
    #[serde(with = "humantime_serde")]
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
    /// Connections open at once from one IP address.
    pub max_connections_per_ip: usize,
    /// Time a connection has to log in (from connect, or from its logout);
    /// "0 s" disables.
    #[serde(with = "humantime_serde")]
    pub login_timeout: Duration,
    /// A logged-in connection that sends nothing for this long is closed;
    /// "0 s" disables.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Requests answered from one read before the replies must be written:
    /// a client that pipelines without reading meets TCP backpressure
    /// instead of an ever-growing reply buffer.
    pub max_requests_in_flight: usize,
    /// `[tcp.tls]`: TLS on this listener.
    pub tls: TcpTlsConfig,
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
    #[serde(with = "optional_duration")]
    pub max_lifetime: Option<Duration>,
    /// Lifetime given to a token created with expiry 0 ("server default");
    /// `None` ("never") means such tokens never expire, as in Iggy.
    #[serde(with = "optional_duration")]
    pub default_lifetime: Option<Duration>,
    /// Whether a session that logged in with a token may create, change and
    /// remove tokens (Iggy: yes). `false` leaves that to password sessions.
    pub token_sessions_manage_tokens: bool,
    /// How often the last-use times connections handed over are written to
    /// the log. A crash loses at most this much last-use data; nothing else.
    #[serde(with = "humantime_serde")]
    pub last_used_flush_interval: Duration,
    pub cleaner: CleanerConfig,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CleanerConfig {
    pub enabled: bool,
    #[serde(with = "humantime_serde")]
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
}

impl Default for LoginThrottleConfig {
    fn default() -> Self {
        LoginThrottleConfig {
            enabled: true,
            per_address_burst: 20,
            per_address_per_minute: 30,
            per_user_burst: 10,
            per_user_per_minute: 10,
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
            cleaner: CleanerConfig::default(),
        }
    }
}

impl Default for CleanerConfig {
    fn default() -> Self {
        CleanerConfig { enabled: true, interval: Duration::from_secs(60) }
    }
}

/// Parses a human duration such as `1 m`, `90s` or `1h 30m` (Iggy's style:
/// a space between number and unit is allowed).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let mut compact = String::with_capacity(text.len());
    let mut tokens = text.split_whitespace().peekable();
    while let Some(token) = tokens.next() {
        compact.push_str(token);
        // "1 m" → "1m", but keep "1m 30s" separated.
        let ends_in_digit = token.ends_with(|c: char| c.is_ascii_digit());
        if !ends_in_digit && tokens.peek().is_some() {
            compact.push(' ');
        }
    }
    humantime::parse_duration(&compact).map_err(|error| error.to_string())
}

mod humantime_serde {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(deserializer)?;
        super::parse_duration(&text).map_err(serde::de::Error::custom)
    }
}

/// A duration, or "never" for none.
mod optional_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Duration>, D::Error> {
        let text = String::deserialize(deserializer)?;
        super::parse_optional_duration(&text).map_err(serde::de::Error::custom)
    }
}

/// `"never"` is `None`; anything else is a duration.
pub fn parse_optional_duration(text: &str) -> Result<Option<Duration>, String> {
    if text.trim() == "never" { Ok(None) } else { parse_duration(text).map(Some) }
}

/// One environment override: its variable name and how it sets the config.
struct EnvKey {
    name: &'static str,
    apply: fn(&mut Config, &str) -> Result<(), String>,
}

fn parse<T: std::str::FromStr>(value: &str) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    value.trim().parse::<T>().map_err(|error| error.to_string())
}

/// Declares one override: `LATCHKEY_…` name, config field, parser.
macro_rules! env_key {
    ($name:literal, $($field:ident).+, $parse:expr) => {
        EnvKey {
            name: $name,
            apply: |config, value| {
                config.$($field).+ = $parse(value)?;
                Ok(())
            },
        }
    };
}

fn text(value: &str) -> Result<String, String> {
    Ok(value.to_owned())
}

fn path(value: &str) -> Result<PathBuf, String> {
    Ok(PathBuf::from(value))
}

/// An optional path; an empty value unsets it.
fn optional_path(value: &str) -> Result<Option<PathBuf>, String> {
    Ok(Some(value.trim()).filter(|value| !value.is_empty()).map(PathBuf::from))
}

/// Every scalar key, overridable as `LATCHKEY_<SECTION>_<KEY>`.
const ENV_KEYS: &[EnvKey] = &[
    env_key!("LATCHKEY_SYSTEM_PATH", system.path, path),
    env_key!("LATCHKEY_SYSTEM_SHARDS", system.shards, parse),
    env_key!("LATCHKEY_SYSTEM_PASSWORD_THREADS", system.password_threads, parse),
    env_key!("LATCHKEY_SYSTEM_PASSWORD_QUEUE", system.password_queue, parse),
    env_key!("LATCHKEY_SYSTEM_SHUTDOWN_TIMEOUT", system.shutdown_timeout, parse_duration),
    env_key!("LATCHKEY_SYSTEM_COMPACTION_MIN_RECORDS", system.compaction_min_records, parse),
    env_key!("LATCHKEY_SYSTEM_COMPACTION_DEAD_RATIO", system.compaction_dead_ratio, parse),
    env_key!("LATCHKEY_TCP_ADDRESS", tcp.address, text),
    env_key!("LATCHKEY_TCP_MAX_FRAME_SIZE", tcp.max_frame_size, parse),
    env_key!("LATCHKEY_TCP_FRAMING", tcp.framing, parse),
    env_key!("LATCHKEY_TCP_MAX_CONNECTIONS", tcp.max_connections, parse),
    env_key!("LATCHKEY_TCP_MAX_CONNECTIONS_PER_IP", tcp.max_connections_per_ip, parse),
    env_key!("LATCHKEY_TCP_LOGIN_TIMEOUT", tcp.login_timeout, parse_duration),
    env_key!("LATCHKEY_TCP_IDLE_TIMEOUT", tcp.idle_timeout, parse_duration),
    env_key!("LATCHKEY_TCP_MAX_REQUESTS_IN_FLIGHT", tcp.max_requests_in_flight, parse),
    env_key!("LATCHKEY_TCP_TLS_ENABLED", tcp.tls.enabled, parse),
    env_key!("LATCHKEY_TCP_TLS_CERT_FILE", tcp.tls.cert_file, optional_path),
    env_key!("LATCHKEY_TCP_TLS_KEY_FILE", tcp.tls.key_file, optional_path),
    env_key!("LATCHKEY_LOGIN_THROTTLE_ENABLED", login_throttle.enabled, parse),
    env_key!("LATCHKEY_LOGIN_THROTTLE_PER_ADDRESS_BURST", login_throttle.per_address_burst, parse),
    env_key!("LATCHKEY_LOGIN_THROTTLE_PER_ADDRESS_PER_MINUTE", login_throttle.per_address_per_minute, parse),
    env_key!("LATCHKEY_LOGIN_THROTTLE_PER_USER_BURST", login_throttle.per_user_burst, parse),
    env_key!("LATCHKEY_LOGIN_THROTTLE_PER_USER_PER_MINUTE", login_throttle.per_user_per_minute, parse),
    env_key!(
        "LATCHKEY_PERSONAL_ACCESS_TOKEN_MAX_TOKENS_PER_USER",
        personal_access_token.max_tokens_per_user,
        parse
    ),
    env_key!(
        "LATCHKEY_PERSONAL_ACCESS_TOKEN_MAX_LIFETIME",
        personal_access_token.max_lifetime,
        parse_optional_duration
    ),
    env_key!(
        "LATCHKEY_PERSONAL_ACCESS_TOKEN_DEFAULT_LIFETIME",
        personal_access_token.default_lifetime,
        parse_optional_duration
    ),
    env_key!(
        "LATCHKEY_PERSONAL_ACCESS_TOKEN_TOKEN_SESSIONS_MANAGE_TOKENS",
        personal_access_token.token_sessions_manage_tokens,
        parse
    ),
    env_key!(
        "LATCHKEY_PERSONAL_ACCESS_TOKEN_LAST_USED_FLUSH_INTERVAL",
        personal_access_token.last_used_flush_interval,
        parse_duration
    ),
    env_key!("LATCHKEY_PERSONAL_ACCESS_TOKEN_CLEANER_ENABLED", personal_access_token.cleaner.enabled, parse),
    env_key!(
        "LATCHKEY_PERSONAL_ACCESS_TOKEN_CLEANER_INTERVAL",
        personal_access_token.cleaner.interval,
        parse_duration
    ),
];

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

    /// Applies `LATCHKEY_*` overrides read through `lookup` (the process
    /// environment in production, a map in tests).
    pub fn apply_env(&mut self, lookup: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        for key in ENV_KEYS {
            if let Some(value) = lookup(key.name) {
                (key.apply)(self, &value).map_err(|reason| ConfigError::Env {
                    key: key.name,
                    value: value.clone(),
                    reason,
                })?;
            }
        }
        Ok(())
    }

    /// Checks what serde cannot: ranges and cross-field rules.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, reason: &str| {
            Err(ConfigError::Invalid { key: key.to_owned(), reason: reason.to_owned() })
        };
        if self.personal_access_token.max_tokens_per_user == 0 {
            return invalid("personal_access_token.max_tokens_per_user", "must be at least 1");
        }
        let tokens = &self.personal_access_token;
        if tokens.max_lifetime.is_some_and(|max| max.is_zero()) {
            return invalid("personal_access_token.max_lifetime", "must be positive (or \"never\")");
        }
        if tokens.default_lifetime.is_some_and(|lifetime| lifetime.is_zero()) {
            return invalid("personal_access_token.default_lifetime", "must be positive (or \"never\")");
        }
        if let Some(max) = tokens.max_lifetime
            && tokens.default_lifetime.is_none_or(|lifetime| lifetime > max)
        {
            return invalid(
                "personal_access_token.default_lifetime",
                "must be set and at most max_lifetime when max_lifetime is set",
            );
        }
        if tokens.last_used_flush_interval.is_zero() {
            return invalid("personal_access_token.last_used_flush_interval", "must be positive");
        }
        for user in &self.users {
            if let Some(unknown) = user.permissions.iter().find(|p| !PERMISSIONS.contains(&p.as_str())) {
                return invalid(
                    "users.permissions",
                    &format!("unknown permission {unknown:?} (known: authorize)"),
                );
            }
        }
        if self.personal_access_token.cleaner.interval.is_zero() {
            return invalid("personal_access_token.cleaner.interval", "must be positive");
        }
        if self.tcp.max_frame_size < 4 {
            return invalid("tcp.max_frame_size", "must be at least 4");
        }
        if self.tcp.max_connections == 0 || self.tcp.max_connections_per_ip == 0 {
            return invalid("tcp.max_connections", "connection limits must be at least 1");
        }
        if self.tcp.max_requests_in_flight == 0 {
            return invalid("tcp.max_requests_in_flight", "must be at least 1");
        }
        let throttle = &self.login_throttle;
        if throttle.enabled && (throttle.per_address_burst == 0 || throttle.per_user_burst == 0) {
            return invalid("login_throttle", "bursts must be at least 1 (or set enabled = false)");
        }
        let ratio = self.system.compaction_dead_ratio;
        if !(0.0..=1.0).contains(&ratio) {
            return invalid("system.compaction_dead_ratio", "must be between 0.0 and 1.0");
        }
        if self.system.password_queue == 0 {
            return invalid("system.password_queue", "must be at least 1");
        }
        let tls = &self.tcp.tls;
        if tls.enabled && tls.cert_file.is_none() {
            return invalid("tcp.tls.cert_file", "must be set when [tcp.tls] enabled = true");
        }
        if tls.enabled && tls.key_file.is_none() {
            return invalid("tcp.tls.key_file", "must be set when [tcp.tls] enabled = true");
        }
        if self.tcp.address.parse::<std::net::SocketAddr>().is_err() {
            return invalid("tcp.address", "must be IP:PORT, e.g. 127.0.0.1:8090");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn shipped_config_file_equals_the_defaults() {
        let text = include_str!("../../configs/server.toml");
        let config = Config::from_toml(text).unwrap();
        assert_eq!(config, Config::default());
    }

    #[test]
    fn durations_accept_iggy_spelling() {
        assert_eq!(parse_duration("1 m").unwrap(), Duration::from_secs(60));
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("1h 30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("1 h 30 m").unwrap(), Duration::from_secs(5400));
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn env_overrides_apply_and_name_the_bad_key() {
        let env: HashMap<&str, &str> = HashMap::from([
            ("LATCHKEY_TCP_ADDRESS", "127.0.0.1:9999"),
            ("LATCHKEY_SYSTEM_SHARDS", "3"),
            ("LATCHKEY_PERSONAL_ACCESS_TOKEN_CLEANER_INTERVAL", "5 s"),
        ]);
        let mut config = Config::default();
        config.apply_env(|key| env.get(key).map(|v| v.to_string())).unwrap();
        assert_eq!(config.tcp.address, "127.0.0.1:9999");
        assert_eq!(config.system.shards, 3);
        assert_eq!(config.personal_access_token.cleaner.interval, Duration::from_secs(5));

        let error = Config::default()
            .apply_env(|key| (key == "LATCHKEY_SYSTEM_SHARDS").then(|| "many".to_owned()))
            .unwrap_err();
        assert!(error.to_string().contains("LATCHKEY_SYSTEM_SHARDS"), "{error}");
    }

    #[test]
    fn framing_parses_from_the_file_and_the_environment() {
        assert_eq!(Config::default().tcp.framing, Framing::Auto);
        for framing in [Framing::Auto, Framing::Legacy, Framing::Vsr] {
            let config = Config::from_toml(&format!("[tcp]\nframing = \"{framing}\"\n")).unwrap();
            assert_eq!(config.tcp.framing, framing);
            let mut config = Config::default();
            config.apply_env(|key| (key == "LATCHKEY_TCP_FRAMING").then(|| framing.to_string())).unwrap();
            assert_eq!(config.tcp.framing, framing);
        }
        assert!(Config::from_toml("[tcp]\nframing = \"0.11\"\n").is_err());
        let error = Config::default()
            .apply_env(|key| (key == "LATCHKEY_TCP_FRAMING").then(|| "tls".to_owned()))
            .unwrap_err();
        assert!(error.to_string().contains("LATCHKEY_TCP_FRAMING"), "{error}");
    }

    #[test]
    fn tls_parses_from_the_file_and_the_environment_and_needs_both_files() {
        assert!(!Config::default().tcp.tls.enabled);
        let config = Config::from_toml(
            "[tcp.tls]\nenabled = true\ncert_file = \"certs/cert.pem\"\nkey_file = \"certs/key.pem\"\n",
        )
        .unwrap();
        let expected = TcpTlsConfig {
            enabled: true,
            cert_file: Some(PathBuf::from("certs/cert.pem")),
            key_file: Some(PathBuf::from("certs/key.pem")),
        };
        assert_eq!(config.tcp.tls, expected);
        config.validate().unwrap();

        let env: HashMap<&str, &str> = HashMap::from([
            ("LATCHKEY_TCP_TLS_ENABLED", "true"),
            ("LATCHKEY_TCP_TLS_CERT_FILE", "certs/cert.pem"),
            ("LATCHKEY_TCP_TLS_KEY_FILE", "certs/key.pem"),
        ]);
        let mut config = Config::default();
        config.apply_env(|key| env.get(key).map(|v| v.to_string())).unwrap();
        assert_eq!(config.tcp.tls, expected);

        // An empty value unsets a file; enabled without both files is refused.
        config.apply_env(|key| (key == "LATCHKEY_TCP_TLS_KEY_FILE").then(String::new)).unwrap();
        assert_eq!(config.tcp.tls.key_file, None);
        let error = config.validate().unwrap_err();
        assert!(error.to_string().contains("tcp.tls.key_file"), "{error}");
        let error = Config::from_toml("[tcp.tls]\nenabled = true\n").unwrap().validate().unwrap_err();
        assert!(error.to_string().contains("tcp.tls.cert_file"), "{error}");
        assert!(Config::from_toml("[tcp.tls]\nself_signed = true\n").is_err());
    }

    #[test]
    fn the_vsr_frame_limit_allows_the_same_body_as_the_legacy_one() {
        let mut tcp = TcpConfig::default();
        assert_eq!(tcp.vsr_size_max(), 65_536 - 4 + 256);
        tcp.max_frame_size = 4;
        assert_eq!(tcp.vsr_size_max(), 256);
        tcp.max_frame_size = u32::MAX;
        assert_eq!(tcp.vsr_size_max(), u32::MAX);
    }

    #[test]
    fn unknown_keys_and_zero_limits_are_refused() {
        assert!(Config::from_toml("[tcp]\nadress = \"x\"").is_err());
        let mut config = Config::default();
        config.personal_access_token.max_tokens_per_user = 0;
        assert!(config.validate().unwrap_err().to_string().contains("max_tokens_per_user"));
    }

    #[test]
    fn users_parse_with_active_defaulting_to_true() {
        let config =
            Config::from_toml("[[users]]\nid = 1\nusername = \"alice\"\npassword_hash = \"$argon2id$x\"\n")
                .unwrap();
        assert_eq!(config.users.len(), 1);
        assert!(config.users[0].active);
        assert!(config.users[0].permissions.is_empty());
    }

    #[test]
    fn token_policy_parses_and_is_checked() {
        let config = Config::from_toml(
            "[personal_access_token]\nmax_lifetime = \"90 days\"\ndefault_lifetime = \"30 days\"\n\
             token_sessions_manage_tokens = false\n",
        )
        .unwrap();
        let tokens = &config.personal_access_token;
        assert_eq!(tokens.max_lifetime, Some(Duration::from_secs(90 * 86_400)));
        assert_eq!(tokens.default_lifetime, Some(Duration::from_secs(30 * 86_400)));
        assert!(!tokens.token_sessions_manage_tokens);
        config.validate().unwrap();
        let mut config = Config::default();
        config.personal_access_token.max_lifetime = Some(Duration::from_secs(60));
        assert!(config.validate().unwrap_err().to_string().contains("default_lifetime"));
        config.personal_access_token.default_lifetime = Some(Duration::from_secs(61));
        assert!(config.validate().is_err());
        config.personal_access_token.default_lifetime = Some(Duration::from_secs(60));
        config.validate().unwrap();
        let mut config = Config::default();
        config
            .apply_env(|key| (key == "LATCHKEY_PERSONAL_ACCESS_TOKEN_MAX_LIFETIME").then(|| "never".into()))
            .unwrap();
        assert_eq!(config.personal_access_token.max_lifetime, None);
        let bad = Config::from_toml(
            "[[users]]\nid = 1\nusername = \"alice\"\npassword_hash = \"x\"\npermissions = [\"admin\"]\n",
        )
        .unwrap();
        assert!(bad.validate().unwrap_err().to_string().contains("admin"));
    }
}
