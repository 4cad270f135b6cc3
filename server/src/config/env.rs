//! The `LATCHKEY_<SECTION>_<KEY>` environment overrides: one entry per
//! scalar key, each naming its variable, the field it sets and how the text
//! is parsed.
//!
//! Only parsing happens here; whether the value is in range is checked by
//! `validate` after the file and the environment are both applied. Users
//! and other lists are never read from the environment.

use std::path::PathBuf;

use super::duration_text::{parse_duration, parse_optional_duration};
use super::{Config, ConfigError};

/// One environment override: its variable name and how it sets the config.
pub(super) struct EnvKey {
    pub(super) name: &'static str,
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

/// A comma-separated list (`host:port,host:port`); blanks are dropped.
fn list(value: &str) -> Result<Vec<String>, String> {
    Ok(value.split(',').map(str::trim).filter(|item| !item.is_empty()).map(str::to_owned).collect())
}

/// An optional text; an empty value unsets it.
fn optional_text(value: &str) -> Result<Option<String>, String> {
    Ok(Some(value).filter(|value| !value.is_empty()).map(str::to_owned))
}

/// Every scalar key, overridable as `LATCHKEY_<SECTION>_<KEY>`.
pub(super) const ENV_KEYS: &[EnvKey] = &[
    env_key!("LATCHKEY_SYSTEM_PATH", system.path, path),
    env_key!("LATCHKEY_SYSTEM_SHARDS", system.shards, parse),
    env_key!("LATCHKEY_SYSTEM_PASSWORD_THREADS", system.password_threads, parse),
    env_key!("LATCHKEY_SYSTEM_PASSWORD_QUEUE", system.password_queue, parse),
    env_key!("LATCHKEY_SYSTEM_SHUTDOWN_TIMEOUT", system.shutdown_timeout, parse_duration),
    env_key!("LATCHKEY_SYSTEM_COMPACTION_MIN_RECORDS", system.compaction_min_records, parse),
    env_key!("LATCHKEY_SYSTEM_COMPACTION_DEAD_RATIO", system.compaction_dead_ratio, parse),
    env_key!("LATCHKEY_STORAGE_BACKEND", storage.backend, parse),
    env_key!("LATCHKEY_STORAGE_ETCD_ENDPOINTS", storage.etcd.endpoints, list),
    env_key!("LATCHKEY_STORAGE_ETCD_PREFIX", storage.etcd.prefix, text),
    env_key!("LATCHKEY_STORAGE_ETCD_KEY_FILE", storage.etcd.key_file, optional_path),
    env_key!("LATCHKEY_STORAGE_ETCD_USERNAME", storage.etcd.username, optional_text),
    env_key!("LATCHKEY_STORAGE_ETCD_PASSWORD", storage.etcd.password, optional_text),
    env_key!("LATCHKEY_STORAGE_ETCD_TLS_CA_FILE", storage.etcd.tls_ca_file, optional_path),
    env_key!("LATCHKEY_STORAGE_ETCD_TLS_CERT_FILE", storage.etcd.tls_cert_file, optional_path),
    env_key!("LATCHKEY_STORAGE_ETCD_TLS_KEY_FILE", storage.etcd.tls_key_file, optional_path),
    env_key!("LATCHKEY_STORAGE_ETCD_TLS_DOMAIN", storage.etcd.tls_domain, optional_text),
    env_key!("LATCHKEY_STORAGE_ETCD_REQUEST_TIMEOUT", storage.etcd.request_timeout, parse_duration),
    env_key!("LATCHKEY_STORAGE_ETCD_MAX_STALENESS", storage.etcd.max_staleness, parse_duration),
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
    env_key!("LATCHKEY_LOG_FORMAT", log.format, parse),
    env_key!("LATCHKEY_HTTP_ENABLED", http.enabled, parse),
    env_key!("LATCHKEY_HTTP_ADDRESS", http.address, text),
    env_key!("LATCHKEY_HTTP_TLS_ENABLED", http.tls.enabled, parse),
    env_key!("LATCHKEY_HTTP_TLS_CERT_FILE", http.tls.cert_file, optional_path),
    env_key!("LATCHKEY_HTTP_TLS_KEY_FILE", http.tls.key_file, optional_path),
    env_key!("LATCHKEY_HTTP_TRUSTED_PROXIES", http.trusted_proxies, list),
    env_key!("LATCHKEY_HTTP_MAX_CONNECTIONS", http.max_connections, parse),
    env_key!("LATCHKEY_HTTP_MAX_CONNECTIONS_PER_IP", http.max_connections_per_ip, parse),
    env_key!("LATCHKEY_HTTP_MAX_HEADER_BYTES", http.max_header_bytes, parse),
    env_key!("LATCHKEY_HTTP_MAX_BODY_BYTES", http.max_body_bytes, parse),
    env_key!("LATCHKEY_HTTP_IDLE_TIMEOUT", http.idle_timeout, parse_duration),
    env_key!("LATCHKEY_HTTP_REQUEST_TIMEOUT", http.request_timeout, parse_duration),
    env_key!("LATCHKEY_HTTP_CONSOLE", http.console, parse),
    env_key!("LATCHKEY_LOGIN_THROTTLE_ENABLED", login_throttle.enabled, parse),
    env_key!("LATCHKEY_LOGIN_THROTTLE_PER_ADDRESS_BURST", login_throttle.per_address_burst, parse),
    env_key!("LATCHKEY_LOGIN_THROTTLE_PER_ADDRESS_PER_MINUTE", login_throttle.per_address_per_minute, parse),
    env_key!("LATCHKEY_LOGIN_THROTTLE_PER_USER_BURST", login_throttle.per_user_burst, parse),
    env_key!("LATCHKEY_LOGIN_THROTTLE_PER_USER_PER_MINUTE", login_throttle.per_user_per_minute, parse),
    env_key!("LATCHKEY_LOGIN_THROTTLE_IPV6_PREFIX_LEN", login_throttle.ipv6_prefix_len, parse),
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
    env_key!(
        "LATCHKEY_PERSONAL_ACCESS_TOKEN_EXPIRY_WARNING_WINDOW",
        personal_access_token.expiry_warning_window,
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
}
