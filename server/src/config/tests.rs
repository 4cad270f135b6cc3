//! Unit tests of the config module: the shipped file, parsing from TOML and
//! from the environment, and the checks made at start.

use std::collections::HashMap;

use super::*;

#[test]
fn shipped_config_file_equals_the_defaults() {
    let text = include_str!("../../../configs/server.toml");
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

/// The duration as read from the file and from the environment, which must
/// agree: both go through `duration_text`.
fn shutdown_timeout_from_file_and_env(text: &str) -> (Result<Duration, String>, Result<Duration, String>) {
    let from_file = Config::from_toml(&format!("[system]\nshutdown_timeout = \"{text}\"\n"))
        .map(|config| config.system.shutdown_timeout);
    let mut config = Config::default();
    let from_env = config
        .apply_env(|key| (key == "LATCHKEY_SYSTEM_SHUTDOWN_TIMEOUT").then(|| text.to_owned()))
        .map(|()| config.system.shutdown_timeout)
        .map_err(|error| error.to_string());
    (from_file, from_env)
}

#[test]
fn every_documented_duration_spelling_is_accepted_by_the_file_and_the_environment() {
    // The spellings README.md, configs/server.toml and the tests use.
    let spellings = [
        ("30s", Duration::from_secs(30)),
        ("90s", Duration::from_secs(90)),
        ("5 s", Duration::from_secs(5)),
        ("1 m", Duration::from_secs(60)),
        ("10 m", Duration::from_secs(600)),
        ("1 h", Duration::from_secs(3600)),
        ("1h 30m", Duration::from_secs(5400)),
        ("1 h 30 m", Duration::from_secs(5400)),
        ("300ms", Duration::from_millis(300)),
        ("5 ms", Duration::from_millis(5)),
        ("30 days", Duration::from_secs(30 * 86_400)),
        // "0 s" is how the timeouts are switched off; a bare 0 is zero too.
        ("0 s", Duration::ZERO),
        ("0s", Duration::ZERO),
        ("0", Duration::ZERO),
    ];
    for (text, expected) in spellings {
        let (from_file, from_env) = shutdown_timeout_from_file_and_env(text);
        assert_eq!(from_file, Ok(expected), "{text:?} in the file");
        assert_eq!(from_env, Ok(expected), "{text:?} in the environment");
    }
}

#[test]
fn text_that_is_not_a_duration_is_refused_by_the_file_and_the_environment() {
    // A number other than 0 needs its unit; "never" is only for the keys
    // that may have no duration.
    for text in ["soon", "", "5", "-1 s", "never"] {
        let (from_file, from_env) = shutdown_timeout_from_file_and_env(text);
        assert!(from_file.is_err(), "{text:?} accepted in the file");
        let error = from_env.expect_err(text);
        assert!(error.contains("LATCHKEY_SYSTEM_SHUTDOWN_TIMEOUT"), "{error}");
    }
}

#[test]
fn never_means_no_lifetime_in_the_file_and_the_environment() {
    let config = Config::from_toml(
        "[personal_access_token]\nmax_lifetime = \"never\"\ndefault_lifetime = \" never \"\n",
    )
    .unwrap();
    assert_eq!(config.personal_access_token.max_lifetime, None);
    assert_eq!(config.personal_access_token.default_lifetime, None);
    let config = Config::from_toml("[personal_access_token]\ndefault_lifetime = \"30 days\"\n").unwrap();
    assert_eq!(config.personal_access_token.default_lifetime, Some(Duration::from_secs(30 * 86_400)));

    let env: HashMap<&str, &str> = HashMap::from([
        ("LATCHKEY_PERSONAL_ACCESS_TOKEN_MAX_LIFETIME", "90 days"),
        ("LATCHKEY_PERSONAL_ACCESS_TOKEN_DEFAULT_LIFETIME", "1h 30m"),
    ]);
    let mut config = Config::default();
    config.apply_env(|key| env.get(key).map(|v| v.to_string())).unwrap();
    assert_eq!(config.personal_access_token.max_lifetime, Some(Duration::from_secs(90 * 86_400)));
    assert_eq!(config.personal_access_token.default_lifetime, Some(Duration::from_secs(5400)));
    config
        .apply_env(|key| (key == "LATCHKEY_PERSONAL_ACCESS_TOKEN_DEFAULT_LIFETIME").then(|| "never".into()))
        .unwrap();
    assert_eq!(config.personal_access_token.default_lifetime, None);
    assert!(Config::from_toml("[personal_access_token]\nmax_lifetime = \"forever\"\n").is_err());
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

#[test]
fn the_defaults_are_within_every_bound() {
    Config::default().validate().unwrap();
}

/// One numeric key's edges, written as an operator would set them: the
/// extreme values allowed and the nearest ones refused (in the spelling the
/// error repeats), and the range the error must state.
struct Edges {
    variable: &'static str,
    key: &'static str,
    allowed: &'static [&'static str],
    refused: &'static [&'static str],
    range: &'static str,
}

/// The bounds README.md documents, one entry per numeric key.
const EDGES: &[Edges] = &[
    Edges {
        variable: "LATCHKEY_SYSTEM_SHARDS",
        key: "system.shards",
        allowed: &["0", "1024"],
        refused: &["1025"],
        range: "0 to 1024",
    },
    Edges {
        variable: "LATCHKEY_SYSTEM_PASSWORD_THREADS",
        key: "system.password_threads",
        allowed: &["0", "256"],
        refused: &["257"],
        range: "0 to 256",
    },
    Edges {
        variable: "LATCHKEY_SYSTEM_PASSWORD_QUEUE",
        key: "system.password_queue",
        allowed: &["1", "1048576"],
        refused: &["0", "1048577"],
        range: "1 to 1048576",
    },
    Edges {
        variable: "LATCHKEY_SYSTEM_SHUTDOWN_TIMEOUT",
        key: "system.shutdown_timeout",
        allowed: &["0s", "1h"],
        refused: &["1h 1ns"],
        range: "0s to 1h",
    },
    Edges {
        variable: "LATCHKEY_SYSTEM_COMPACTION_MIN_RECORDS",
        key: "system.compaction_min_records",
        allowed: &["0", "1000000000"],
        refused: &["1000000001"],
        range: "0 to 1000000000",
    },
    Edges {
        variable: "LATCHKEY_SYSTEM_COMPACTION_DEAD_RATIO",
        key: "system.compaction_dead_ratio",
        allowed: &["0.0", "1.0"],
        refused: &["-5e-324", "1.0000000000000002", "NaN"],
        range: "0.0 to 1.0",
    },
    Edges {
        variable: "LATCHKEY_TCP_MAX_FRAME_SIZE",
        key: "tcp.max_frame_size",
        allowed: &["4", "1048576"],
        refused: &["3", "1048577"],
        range: "4 to 1048576",
    },
    Edges {
        variable: "LATCHKEY_TCP_MAX_CONNECTIONS",
        key: "tcp.max_connections",
        allowed: &["1", "1048576"],
        refused: &["0", "1048577"],
        range: "1 to 1048576",
    },
    Edges {
        variable: "LATCHKEY_TCP_MAX_CONNECTIONS_PER_IP",
        key: "tcp.max_connections_per_ip",
        allowed: &["1", "1048576"],
        refused: &["0", "1048577"],
        range: "1 to 1048576",
    },
    Edges {
        variable: "LATCHKEY_STORAGE_ETCD_REQUEST_TIMEOUT",
        key: "storage.etcd.request_timeout",
        allowed: &["100ms", "1m"],
        refused: &["99ms", "1m 1ns"],
        range: "100ms to 1m",
    },
    Edges {
        variable: "LATCHKEY_STORAGE_ETCD_MAX_STALENESS",
        key: "storage.etcd.max_staleness",
        allowed: &["0s", "1h"],
        refused: &["1h 1ns"],
        range: "0s to 1h",
    },
    Edges {
        variable: "LATCHKEY_TCP_LOGIN_TIMEOUT",
        key: "tcp.login_timeout",
        allowed: &["0s", "1day"],
        refused: &["1day 1ns"],
        range: "0s to 1day",
    },
    Edges {
        variable: "LATCHKEY_TCP_IDLE_TIMEOUT",
        key: "tcp.idle_timeout",
        allowed: &["0s", "1day"],
        refused: &["1day 1ns"],
        range: "0s to 1day",
    },
    Edges {
        variable: "LATCHKEY_TCP_MAX_REQUESTS_IN_FLIGHT",
        key: "tcp.max_requests_in_flight",
        allowed: &["1", "4096"],
        refused: &["0", "4097"],
        range: "1 to 4096",
    },
    Edges {
        variable: "LATCHKEY_LOGIN_THROTTLE_PER_ADDRESS_BURST",
        key: "login_throttle.per_address_burst",
        allowed: &["1", "100000"],
        refused: &["0", "100001"],
        range: "1 to 100000",
    },
    Edges {
        variable: "LATCHKEY_LOGIN_THROTTLE_PER_ADDRESS_PER_MINUTE",
        key: "login_throttle.per_address_per_minute",
        allowed: &["0", "6000000"],
        refused: &["6000001"],
        range: "0 to 6000000",
    },
    Edges {
        variable: "LATCHKEY_LOGIN_THROTTLE_PER_USER_BURST",
        key: "login_throttle.per_user_burst",
        allowed: &["1", "100000"],
        refused: &["0", "100001"],
        range: "1 to 100000",
    },
    Edges {
        variable: "LATCHKEY_LOGIN_THROTTLE_PER_USER_PER_MINUTE",
        key: "login_throttle.per_user_per_minute",
        allowed: &["0", "6000000"],
        refused: &["6000001"],
        range: "0 to 6000000",
    },
    Edges {
        variable: "LATCHKEY_LOGIN_THROTTLE_IPV6_PREFIX_LEN",
        key: "login_throttle.ipv6_prefix_len",
        allowed: &["32", "64", "128"],
        refused: &["31", "129"],
        range: "32 to 128",
    },
    Edges {
        variable: "LATCHKEY_PERSONAL_ACCESS_TOKEN_MAX_TOKENS_PER_USER",
        key: "personal_access_token.max_tokens_per_user",
        allowed: &["1", "10000000"],
        refused: &["0", "10000001"],
        range: "1 to 10000000",
    },
    Edges {
        variable: "LATCHKEY_PERSONAL_ACCESS_TOKEN_MAX_LIFETIME",
        key: "personal_access_token.max_lifetime",
        allowed: &["1s", "100years", "never"],
        refused: &["999ms 999us 999ns", "100years 1ns"],
        range: "1s to 100years, or \"never\"",
    },
    Edges {
        variable: "LATCHKEY_PERSONAL_ACCESS_TOKEN_DEFAULT_LIFETIME",
        key: "personal_access_token.default_lifetime",
        allowed: &["1s", "100years", "never"],
        refused: &["999ms 999us 999ns", "100years 1ns"],
        range: "1s to 100years, or \"never\"",
    },
    Edges {
        variable: "LATCHKEY_PERSONAL_ACCESS_TOKEN_LAST_USED_FLUSH_INTERVAL",
        key: "personal_access_token.last_used_flush_interval",
        allowed: &["1ms", "1day"],
        refused: &["999us 999ns", "1day 1ns"],
        range: "1ms to 1day",
    },
    Edges {
        variable: "LATCHKEY_HTTP_MAX_CONNECTIONS",
        key: "http.max_connections",
        allowed: &["1", "1048576"],
        refused: &["0", "1048577"],
        range: "1 to 1048576",
    },
    Edges {
        variable: "LATCHKEY_HTTP_MAX_CONNECTIONS_PER_IP",
        key: "http.max_connections_per_ip",
        allowed: &["1", "1048576"],
        refused: &["0", "1048577"],
        range: "1 to 1048576",
    },
    Edges {
        variable: "LATCHKEY_HTTP_MAX_HEADER_BYTES",
        key: "http.max_header_bytes",
        allowed: &["8192", "1048576"],
        refused: &["8191", "1048577"],
        range: "8192 to 1048576",
    },
    Edges {
        variable: "LATCHKEY_HTTP_MAX_BODY_BYTES",
        key: "http.max_body_bytes",
        allowed: &["1024", "1048576"],
        refused: &["1023", "1048577"],
        range: "1024 to 1048576",
    },
    Edges {
        variable: "LATCHKEY_HTTP_IDLE_TIMEOUT",
        key: "http.idle_timeout",
        allowed: &["100ms", "1day"],
        refused: &["99ms 999us 999ns", "1day 1ns"],
        range: "100ms to 1day",
    },
    Edges {
        variable: "LATCHKEY_HTTP_REQUEST_TIMEOUT",
        key: "http.request_timeout",
        allowed: &["100ms", "1day"],
        refused: &["99ms 999us 999ns", "1day 1ns"],
        range: "100ms to 1day",
    },
    Edges {
        variable: "LATCHKEY_PERSONAL_ACCESS_TOKEN_EXPIRY_WARNING_WINDOW",
        key: "personal_access_token.expiry_warning_window",
        allowed: &["0s", "100years"],
        refused: &["100years 1ns"],
        range: "0s to 100years; 0s turns announcing off",
    },
    Edges {
        variable: "LATCHKEY_PERSONAL_ACCESS_TOKEN_CLEANER_INTERVAL",
        key: "personal_access_token.cleaner.interval",
        allowed: &["100ms", "1day"],
        refused: &["99ms 999us 999ns", "1day 1ns"],
        range: "100ms to 1day",
    },
];

/// The defaults with `variable` set to `value`. The default lifetime is set
/// to the shortest allowed, so that a maximum lifetime at its lower edge
/// passes the rule that the default may not exceed it.
fn defaults_with(variable: &str, value: &str) -> Config {
    let mut config = Config::default();
    config.personal_access_token.default_lifetime = Some(Duration::from_secs(1));
    config
        .apply_env(|key| (key == variable).then(|| value.to_owned()))
        .unwrap_or_else(|error| panic!("{variable}={value} does not parse: {error}"));
    config
}

#[test]
fn every_bound_allows_its_edge_and_refuses_one_step_past_it() {
    for edges in EDGES {
        for value in edges.allowed {
            if let Err(error) = defaults_with(edges.variable, value).validate() {
                panic!("{}={value} refused: {error}", edges.variable);
            }
        }
        for value in edges.refused {
            let Err(error) = defaults_with(edges.variable, value).validate() else {
                panic!("{}={value} accepted", edges.variable);
            };
            let error = error.to_string();
            let names = |text: &str| assert!(error.contains(text), "{}={value}: {error}", edges.variable);
            names(&format!("{}: ", edges.key));
            names(&format!("{value} is out of range"));
            names(&format!("(allowed: {}", edges.range));
        }
    }
}

#[test]
fn an_out_of_range_error_names_the_key_the_value_and_the_range() {
    let mut config = Config::default();
    config.personal_access_token.max_tokens_per_user = 10_000_001;
    assert_eq!(
        config.validate().unwrap_err().to_string(),
        "invalid config: personal_access_token.max_tokens_per_user: 10000001 is out of range \
         (allowed: 1 to 10000000)"
    );
    let mut config = Config::default();
    config.tcp.idle_timeout = Duration::from_secs(86_401);
    assert_eq!(
        config.validate().unwrap_err().to_string(),
        "invalid config: tcp.idle_timeout: 1day 1s is out of range (allowed: 0s to 1day; 0s turns it off)"
    );
}

/// Environment variables of keys that are not numbers, so have no range.
const NOT_NUMERIC_VARIABLES: &[&str] = &[
    "LATCHKEY_SYSTEM_PATH",
    "LATCHKEY_TCP_ADDRESS",
    "LATCHKEY_TCP_FRAMING",
    "LATCHKEY_TCP_TLS_ENABLED",
    "LATCHKEY_TCP_TLS_CERT_FILE",
    "LATCHKEY_TCP_TLS_KEY_FILE",
    "LATCHKEY_LOGIN_THROTTLE_ENABLED",
    "LATCHKEY_PERSONAL_ACCESS_TOKEN_TOKEN_SESSIONS_MANAGE_TOKENS",
    "LATCHKEY_PERSONAL_ACCESS_TOKEN_CLEANER_ENABLED",
    "LATCHKEY_STORAGE_BACKEND",
    "LATCHKEY_STORAGE_ETCD_ENDPOINTS",
    "LATCHKEY_STORAGE_ETCD_PREFIX",
    "LATCHKEY_STORAGE_ETCD_KEY_FILE",
    "LATCHKEY_STORAGE_ETCD_USERNAME",
    "LATCHKEY_STORAGE_ETCD_PASSWORD",
    "LATCHKEY_STORAGE_ETCD_TLS_CA_FILE",
    "LATCHKEY_STORAGE_ETCD_TLS_CERT_FILE",
    "LATCHKEY_STORAGE_ETCD_TLS_KEY_FILE",
    "LATCHKEY_STORAGE_ETCD_TLS_DOMAIN",
    "LATCHKEY_LOG_FORMAT",
    "LATCHKEY_HTTP_ENABLED",
    "LATCHKEY_HTTP_ADDRESS",
    "LATCHKEY_HTTP_TLS_ENABLED",
    "LATCHKEY_HTTP_TLS_CERT_FILE",
    "LATCHKEY_HTTP_TLS_KEY_FILE",
    "LATCHKEY_HTTP_TRUSTED_PROXIES",
    "LATCHKEY_HTTP_CONSOLE",
];

#[test]
fn every_numeric_key_has_its_edges_tested() {
    for env_key in super::env::ENV_KEYS {
        let tested = EDGES.iter().any(|edges| edges.variable == env_key.name);
        let not_numeric = NOT_NUMERIC_VARIABLES.contains(&env_key.name);
        assert!(tested != not_numeric, "{}: numeric keys need edges in EDGES, others none", env_key.name);
    }
}

#[test]
fn a_disabled_throttle_may_have_empty_buckets_but_not_oversized_ones() {
    let mut config = Config::default();
    config.login_throttle.enabled = false;
    config.login_throttle.per_address_burst = 0;
    config.login_throttle.per_user_burst = 0;
    config.validate().unwrap();
    config.login_throttle.per_user_burst = 100_001;
    let error = config.validate().unwrap_err().to_string();
    assert!(error.contains("login_throttle.per_user_burst: "), "{error}");
    config.login_throttle.enabled = true;
    config.login_throttle.per_user_burst = 1;
    let error = config.validate().unwrap_err().to_string();
    assert!(error.contains("login_throttle.per_address_burst: 0 is out of range"), "{error}");
    assert!(error.contains("or set enabled = false"), "{error}");
}

#[test]
fn the_etcd_backend_needs_endpoints_and_a_key_file_and_a_sane_prefix() {
    let etcd = |pairs: &[(&str, &str)]| {
        let mut config = Config::default();
        let lookup =
            |key: &str| pairs.iter().find(|(name, _)| *name == key).map(|(_, value)| value.to_string());
        config.apply_env(lookup).map_err(|error| error.to_string())?;
        config.validate().map_err(|error| error.to_string())
    };
    let backend = ("LATCHKEY_STORAGE_BACKEND", "etcd");
    let key_file = ("LATCHKEY_STORAGE_ETCD_KEY_FILE", "/etc/latchkey/key");
    assert_eq!(etcd(&[backend, key_file]), Ok(()));
    assert!(etcd(&[backend]).unwrap_err().contains("storage.etcd.key_file"));
    let none = ("LATCHKEY_STORAGE_ETCD_ENDPOINTS", " , ");
    assert!(etcd(&[backend, key_file, none]).unwrap_err().contains("storage.etcd.endpoints"));
    for prefix in ["latchkey/", "/latchkey", ""] {
        let error = etcd(&[backend, key_file, ("LATCHKEY_STORAGE_ETCD_PREFIX", prefix)]).unwrap_err();
        assert!(error.contains("storage.etcd.prefix"), "{prefix:?}: {error}");
    }
    let cert_only = ("LATCHKEY_STORAGE_ETCD_TLS_CERT_FILE", "/etc/latchkey/etcd-client.pem");
    assert!(etcd(&[backend, key_file, cert_only]).unwrap_err().contains("storage.etcd.tls_cert_file"));
    let key_too = ("LATCHKEY_STORAGE_ETCD_TLS_KEY_FILE", "/etc/latchkey/etcd-client.key");
    assert!(etcd(&[backend, key_file, cert_only, key_too]).unwrap_err().contains("storage.etcd.tls_ca_file"));
    let ca = ("LATCHKEY_STORAGE_ETCD_TLS_CA_FILE", "/etc/latchkey/etcd-ca.pem");
    assert_eq!(etcd(&[backend, key_file, cert_only, key_too, ca]), Ok(()));
    let half = ("LATCHKEY_STORAGE_ETCD_USERNAME", "latchkey");
    assert!(etcd(&[backend, key_file, half]).unwrap_err().contains("storage.etcd.username"));
    let unknown = etcd(&[("LATCHKEY_STORAGE_BACKEND", "zookeeper")]).unwrap_err();
    assert!(unknown.contains("expected file or etcd"), "{unknown}");
    // The file backend ignores the etcd section's endpoints and key file.
    assert_eq!(etcd(&[none]), Ok(()));
}

#[test]
fn the_http_section_checks_its_address_tls_and_proxies() {
    let http = |pairs: &[(&str, &str)]| {
        let mut config = Config::default();
        let lookup =
            |key: &str| pairs.iter().find(|(name, _)| *name == key).map(|(_, value)| value.to_string());
        config.apply_env(lookup).map_err(|error| error.to_string())?;
        config.validate().map_err(|error| error.to_string())
    };
    assert_eq!(http(&[]), Ok(()));
    assert!(http(&[("LATCHKEY_HTTP_ADDRESS", "localhost")]).unwrap_err().contains("http.address"));
    assert!(http(&[("LATCHKEY_HTTP_TLS_ENABLED", "true")]).unwrap_err().contains("http.tls"));
    let proxies = ("LATCHKEY_HTTP_TRUSTED_PROXIES", "10.0.0.0/8, 127.0.0.1, ::1, fd00::/8");
    assert_eq!(http(&[proxies]), Ok(()));
    let bad = http(&[("LATCHKEY_HTTP_TRUSTED_PROXIES", "10.0.0.0/8,nginx")]).unwrap_err();
    assert!(bad.contains("http.trusted_proxies") && bad.contains("\"nginx\""), "{bad}");
    let many = vec!["10.0.0.1"; 257].join(",");
    assert!(http(&[("LATCHKEY_HTTP_TRUSTED_PROXIES", &many)]).unwrap_err().contains("at most 256"));
    // The file's spelling, with the defaults written out in configs/server.toml.
    let config =
        Config::from_toml("[http]\ntrusted_proxies = [\"127.0.0.1\"]\nidle_timeout = \"5s\"\n").unwrap();
    assert_eq!(config.http.trusted_proxies, ["127.0.0.1"]);
    assert_eq!(config.http.idle_timeout, Duration::from_secs(5));
}
