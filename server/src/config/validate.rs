//! The checks made at start and on every SIGHUP reload, after the file and
//! the environment are applied: ranges and rules across keys that serde
//! cannot express.
//!
//! Parsing (types, unknown keys, duration text) is done before this, by
//! serde and `env`; whether files named here exist is found out when they
//! are opened (`tls`, `datadir`), not here.

use super::{Config, ConfigError, PERMISSIONS};

impl Config {
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
