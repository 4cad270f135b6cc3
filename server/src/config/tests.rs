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
