//! The checks made at start and on every SIGHUP reload, after the file and
//! the environment are applied: each numeric key against its range in
//! [`super::bounds`], then the rules across keys that serde cannot express.
//!
//! Parsing (types, unknown keys, duration text) is done before this, by
//! serde and `env`; whether files named here exist is found out when they
//! are opened (`tls`, `datadir`), not here.

use std::time::Duration;

use super::bounds::*;
use super::{Config, ConfigError, PERMISSIONS, StorageBackend};

/// A whole-number key and the range it must fall in.
struct CountRange {
    key: &'static str,
    value: fn(&Config) -> u64,
    min: u64,
    max: u64,
}

/// A duration key and the range it must fall in. A lifetime of "never"
/// (`None`) is outside any range and always allowed.
struct DurationRange {
    key: &'static str,
    value: fn(&Config) -> Option<Duration>,
    min: Duration,
    max: Duration,
    /// Said after the range in the error, for keys with a special value.
    besides: &'static str,
}

/// Every whole-number key but the throttle's bursts, whose range depends on
/// whether the throttle is enabled ([`Config::check_throttle`]).
const COUNT_RANGES: &[CountRange] = &[
    CountRange { key: "system.shards", value: |c| c.system.shards as u64, min: 0, max: SHARDS_MAX as u64 },
    CountRange {
        key: "system.password_threads",
        value: |c| c.system.password_threads as u64,
        min: 0,
        max: PASSWORD_THREADS_MAX as u64,
    },
    CountRange {
        key: "system.password_queue",
        value: |c| c.system.password_queue as u64,
        min: 1,
        max: PASSWORD_QUEUE_CHECKS_MAX as u64,
    },
    CountRange {
        key: "system.compaction_min_records",
        value: |c| c.system.compaction_min_records,
        min: 0,
        max: COMPACTION_MIN_RECORDS_MAX,
    },
    CountRange {
        key: "tcp.max_frame_size",
        value: |c| u64::from(c.tcp.max_frame_size),
        min: MAX_FRAME_SIZE_BYTES_MIN as u64,
        max: MAX_FRAME_SIZE_BYTES_MAX as u64,
    },
    CountRange {
        key: "tcp.max_connections",
        value: |c| c.tcp.max_connections as u64,
        min: 1,
        max: MAX_CONNECTIONS_MAX as u64,
    },
    CountRange {
        key: "tcp.max_connections_per_ip",
        value: |c| c.tcp.max_connections_per_ip as u64,
        min: 1,
        max: MAX_CONNECTIONS_PER_IP_MAX as u64,
    },
    CountRange {
        key: "tcp.max_requests_in_flight",
        value: |c| c.tcp.max_requests_in_flight as u64,
        min: 1,
        max: MAX_REQUESTS_IN_FLIGHT_MAX as u64,
    },
    CountRange {
        key: "http.max_connections",
        value: |c| c.http.max_connections as u64,
        min: 1,
        max: MAX_CONNECTIONS_MAX as u64,
    },
    CountRange {
        key: "http.max_connections_per_ip",
        value: |c| c.http.max_connections_per_ip as u64,
        min: 1,
        max: MAX_CONNECTIONS_PER_IP_MAX as u64,
    },
    CountRange {
        key: "http.max_header_bytes",
        value: |c| c.http.max_header_bytes as u64,
        min: HTTP_HEADER_BYTES_MIN as u64,
        max: HTTP_HEADER_BYTES_MAX as u64,
    },
    CountRange {
        key: "http.max_body_bytes",
        value: |c| c.http.max_body_bytes as u64,
        min: HTTP_BODY_BYTES_MIN as u64,
        max: HTTP_BODY_BYTES_MAX as u64,
    },
    CountRange {
        key: "login_throttle.per_address_per_minute",
        value: |c| u64::from(c.login_throttle.per_address_per_minute),
        min: 0,
        max: LOGIN_THROTTLE_LOGINS_PER_MINUTE_MAX as u64,
    },
    CountRange {
        key: "login_throttle.per_user_per_minute",
        value: |c| u64::from(c.login_throttle.per_user_per_minute),
        min: 0,
        max: LOGIN_THROTTLE_LOGINS_PER_MINUTE_MAX as u64,
    },
    CountRange {
        key: "login_throttle.ipv6_prefix_len",
        value: |c| u64::from(c.login_throttle.ipv6_prefix_len),
        min: IPV6_PREFIX_BITS_MIN as u64,
        max: IPV6_PREFIX_BITS_MAX as u64,
    },
    CountRange {
        key: "personal_access_token.max_tokens_per_user",
        value: |c| u64::from(c.personal_access_token.max_tokens_per_user),
        min: 1,
        max: MAX_TOKENS_PER_USER_MAX as u64,
    },
];

/// Every duration key.
const DURATION_RANGES: &[DurationRange] = &[
    DurationRange {
        key: "system.shutdown_timeout",
        value: |c| Some(c.system.shutdown_timeout),
        min: Duration::ZERO,
        max: SHUTDOWN_TIMEOUT_MAX,
        besides: "",
    },
    DurationRange {
        key: "tcp.login_timeout",
        value: |c| Some(c.tcp.login_timeout),
        min: Duration::ZERO,
        max: LOGIN_TIMEOUT_MAX,
        besides: "; 0s turns it off",
    },
    DurationRange {
        key: "tcp.idle_timeout",
        value: |c| Some(c.tcp.idle_timeout),
        min: Duration::ZERO,
        max: IDLE_TIMEOUT_MAX,
        besides: "; 0s turns it off",
    },
    DurationRange {
        key: "http.idle_timeout",
        value: |c| Some(c.http.idle_timeout),
        min: HTTP_TIMEOUT_MIN,
        max: IDLE_TIMEOUT_MAX,
        besides: "",
    },
    DurationRange {
        key: "http.request_timeout",
        value: |c| Some(c.http.request_timeout),
        min: HTTP_TIMEOUT_MIN,
        max: IDLE_TIMEOUT_MAX,
        besides: "",
    },
    DurationRange {
        key: "personal_access_token.max_lifetime",
        value: |c| c.personal_access_token.max_lifetime,
        min: TOKEN_LIFETIME_MIN,
        max: TOKEN_LIFETIME_MAX,
        besides: ", or \"never\"",
    },
    DurationRange {
        key: "personal_access_token.default_lifetime",
        value: |c| c.personal_access_token.default_lifetime,
        min: TOKEN_LIFETIME_MIN,
        max: TOKEN_LIFETIME_MAX,
        besides: ", or \"never\"",
    },
    DurationRange {
        key: "personal_access_token.last_used_flush_interval",
        value: |c| Some(c.personal_access_token.last_used_flush_interval),
        min: LAST_USED_FLUSH_INTERVAL_MIN,
        max: LAST_USED_FLUSH_INTERVAL_MAX,
        besides: "",
    },
    DurationRange {
        key: "personal_access_token.expiry_warning_window",
        value: |c| Some(c.personal_access_token.expiry_warning_window),
        min: Duration::ZERO,
        max: TOKEN_LIFETIME_MAX,
        besides: "; 0s turns announcing off",
    },
    DurationRange {
        key: "storage.etcd.request_timeout",
        value: |c| Some(c.storage.etcd.request_timeout),
        min: ETCD_REQUEST_TIMEOUT_MIN,
        max: ETCD_REQUEST_TIMEOUT_MAX,
        besides: "",
    },
    DurationRange {
        key: "storage.etcd.max_staleness",
        value: |c| Some(c.storage.etcd.max_staleness),
        min: Duration::ZERO,
        max: ETCD_MAX_STALENESS_MAX,
        besides: "; 0s turns it off",
    },
    DurationRange {
        key: "personal_access_token.cleaner.interval",
        value: |c| Some(c.personal_access_token.cleaner.interval),
        min: CLEANER_INTERVAL_MIN,
        max: CLEANER_INTERVAL_MAX,
        besides: "",
    },
];

fn invalid(key: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key: key.to_owned(), reason: reason.into() }
}

/// `besides` follows the range, for keys with a special value or a way out.
fn out_of_range(
    key: &str,
    value: impl std::fmt::Display,
    min: impl std::fmt::Display,
    max: impl std::fmt::Display,
    besides: &str,
) -> ConfigError {
    invalid(key, format!("{value} is out of range (allowed: {min} to {max}{besides})"))
}

impl Config {
    /// Checks what serde cannot: ranges and cross-field rules. The error
    /// names the first key found wrong, with its value and what is allowed.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.check_ranges()?;
        self.check_throttle()?;
        self.check_token_policy()?;
        self.check_users()?;
        self.check_storage()?;
        self.check_tcp()?;
        self.check_http()
    }

    fn check_http(&self) -> Result<(), ConfigError> {
        let http = &self.http;
        if http.tls.enabled && (http.tls.cert_file.is_none() || http.tls.key_file.is_none()) {
            return Err(invalid(
                "http.tls",
                "cert_file and key_file must be set when [http.tls] enabled = true",
            ));
        }
        if http.address.parse::<std::net::SocketAddr>().is_err() {
            return Err(invalid("http.address", "must be IP:PORT, e.g. 127.0.0.1:8091"));
        }
        if http.trusted_proxies.len() > TRUSTED_PROXIES_MAX {
            return Err(invalid("http.trusted_proxies", format!("at most {TRUSTED_PROXIES_MAX} networks")));
        }
        if let Some(bad) = http.trusted_proxies.iter().find(|network| parse_network(network).is_none()) {
            return Err(invalid(
                "http.trusted_proxies",
                format!("{bad:?} is not an IP address or CIDR network (e.g. 10.0.0.0/8)"),
            ));
        }
        Ok(())
    }

    fn check_storage(&self) -> Result<(), ConfigError> {
        let etcd = &self.storage.etcd;
        let prefix = &etcd.prefix;
        if !prefix.starts_with('/') || !prefix.ends_with('/') || prefix.len() > ETCD_PREFIX_BYTES_MAX {
            return Err(invalid(
                "storage.etcd.prefix",
                format!("must start and end with '/' and be at most {ETCD_PREFIX_BYTES_MAX} bytes"),
            ));
        }
        if etcd.username.is_some() != etcd.password.is_some() {
            return Err(invalid("storage.etcd.username", "username and password must be set together"));
        }
        if etcd.tls_cert_file.is_some() != etcd.tls_key_file.is_some() {
            return Err(invalid(
                "storage.etcd.tls_cert_file",
                "tls_cert_file and tls_key_file must be set together",
            ));
        }
        if etcd.tls_cert_file.is_some() && etcd.tls_ca_file.is_none() {
            return Err(invalid("storage.etcd.tls_ca_file", "must be set when a client certificate is"));
        }
        if self.storage.backend != StorageBackend::Etcd {
            return Ok(());
        }
        if etcd.endpoints.is_empty() || etcd.endpoints.len() > ETCD_ENDPOINTS_MAX {
            return Err(invalid(
                "storage.etcd.endpoints",
                format!("needs 1 to {ETCD_ENDPOINTS_MAX} host:port entries with backend = \"etcd\""),
            ));
        }
        if etcd.key_file.is_none() {
            return Err(invalid(
                "storage.etcd.key_file",
                "must be set with backend = \"etcd\" (32 random bytes, the same file on every node)",
            ));
        }
        Ok(())
    }

    fn check_ranges(&self) -> Result<(), ConfigError> {
        for range in COUNT_RANGES {
            let value = (range.value)(self);
            if !(range.min..=range.max).contains(&value) {
                return Err(out_of_range(range.key, value, range.min, range.max, ""));
            }
        }
        for range in DURATION_RANGES {
            if let Some(value) = (range.value)(self)
                && !(range.min..=range.max).contains(&value)
            {
                let [value, min, max] = [value, range.min, range.max].map(humantime::format_duration);
                return Err(out_of_range(range.key, value, min, max, range.besides));
            }
        }
        let ratio = self.system.compaction_dead_ratio;
        if !(COMPACTION_DEAD_RATIO_MIN..=COMPACTION_DEAD_RATIO_MAX).contains(&ratio) {
            return Err(out_of_range(
                "system.compaction_dead_ratio",
                format_args!("{ratio:?}"),
                format_args!("{COMPACTION_DEAD_RATIO_MIN:?}"),
                format_args!("{COMPACTION_DEAD_RATIO_MAX:?}"),
                "",
            ));
        }
        Ok(())
    }

    fn check_throttle(&self) -> Result<(), ConfigError> {
        let throttle = &self.login_throttle;
        let min = if throttle.enabled { LOGIN_THROTTLE_BURST_LOGINS_MIN } else { 0 };
        let bursts = [
            ("login_throttle.per_address_burst", throttle.per_address_burst),
            ("login_throttle.per_user_burst", throttle.per_user_burst),
        ];
        for (key, burst) in bursts {
            if !(min..=LOGIN_THROTTLE_BURST_LOGINS_MAX).contains(&burst) {
                let besides = if burst < min { "; or set enabled = false" } else { "" };
                return Err(out_of_range(key, burst, min, LOGIN_THROTTLE_BURST_LOGINS_MAX, besides));
            }
        }
        Ok(())
    }

    fn check_token_policy(&self) -> Result<(), ConfigError> {
        let tokens = &self.personal_access_token;
        if let Some(max) = tokens.max_lifetime
            && tokens.default_lifetime.is_none_or(|lifetime| lifetime > max)
        {
            return Err(invalid(
                "personal_access_token.default_lifetime",
                "must be set and at most max_lifetime when max_lifetime is set",
            ));
        }
        Ok(())
    }

    fn check_users(&self) -> Result<(), ConfigError> {
        for user in &self.users {
            if let Some(unknown) = user.permissions.iter().find(|p| !PERMISSIONS.contains(&p.as_str())) {
                return Err(invalid(
                    "users.permissions",
                    format!("unknown permission {unknown:?} (known: authorize)"),
                ));
            }
        }
        Ok(())
    }

    fn check_tcp(&self) -> Result<(), ConfigError> {
        let tls = &self.tcp.tls;
        if tls.enabled && tls.cert_file.is_none() {
            return Err(invalid("tcp.tls.cert_file", "must be set when [tcp.tls] enabled = true"));
        }
        if tls.enabled && tls.key_file.is_none() {
            return Err(invalid("tcp.tls.key_file", "must be set when [tcp.tls] enabled = true"));
        }
        if self.tcp.address.parse::<std::net::SocketAddr>().is_err() {
            return Err(invalid("tcp.address", "must be IP:PORT, e.g. 127.0.0.1:8090"));
        }
        Ok(())
    }
}

/// A trusted-proxy entry: a CIDR network, or one address (a /32 or /128).
pub fn parse_network(text: &str) -> Option<ipnet::IpNet> {
    let text = text.trim();
    text.parse::<ipnet::IpNet>()
        .ok()
        .or_else(|| text.parse::<std::net::IpAddr>().ok().map(ipnet::IpNet::from))
        .map(|network| network.trunc())
}
