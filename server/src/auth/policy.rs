//! Token rules: the server's lifetime policy, the bounds on the fields of an
//! extended token, and client network parsing.
//!
//! The policy is part of the live configuration that SIGHUP reloads; the
//! bounds are fixed limits of this build.

use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;
use latchkey_protocol::ErrorCode;
use latchkey_protocol::ext::EXPIRY_NEVER;

use crate::config::PersonalAccessTokenConfig;

/// Description bytes at most.
pub const DESCRIPTION_BYTES_MAX: usize = 256;
/// Scopes and networks one token may carry at most: bounds of the token
/// itself, which the store's writer checks an access edit against too.
pub use crate::registry::{TOKEN_NETWORKS_MAX, TOKEN_SCOPES_MAX};
/// Tokens in one ListTokens page at most (and when the client asks for 0).
pub const LIST_PAGE_TOKENS_MAX: usize = 1000;

/// The lifetime rules from `[personal_access_token]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenPolicy {
    pub max_lifetime_us: Option<u64>,
    pub default_lifetime_us: Option<u64>,
    pub token_sessions_manage_tokens: bool,
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX - 1).min(u64::MAX - 1)
}

impl TokenPolicy {
    pub fn from_config(config: &PersonalAccessTokenConfig) -> TokenPolicy {
        TokenPolicy {
            max_lifetime_us: config.max_lifetime.map(micros),
            default_lifetime_us: config.default_lifetime.map(micros),
            token_sessions_manage_tokens: config.token_sessions_manage_tokens,
        }
    }

    /// The lifetime a create gets for the `expiry_us` it asked for (0 =
    /// server default, `u64::MAX` = never), or the refusal.
    pub fn create_lifetime(&self, expiry_us: u64) -> Result<u64, ErrorCode> {
        let asked = if expiry_us == 0 { self.default_lifetime_us.unwrap_or(EXPIRY_NEVER) } else { expiry_us };
        self.check(asked)?;
        Ok(asked)
    }

    /// Checks a rotate's new lifetime; 0 (keep the current expiry) passes:
    /// the current expiry was checked when it was set.
    pub fn rotate_lifetime(&self, expiry_us: u64) -> Result<u64, ErrorCode> {
        if expiry_us != 0 {
            self.check(expiry_us)?;
        }
        Ok(expiry_us)
    }

    fn check(&self, lifetime_us: u64) -> Result<(), ErrorCode> {
        match self.max_lifetime_us {
            Some(max) if lifetime_us == EXPIRY_NEVER || lifetime_us > max => {
                Err(ErrorCode::LifetimeNotAllowed)
            }
            _ => Ok(()),
        }
    }
}

/// Parses a client network: an address (a single host) or address/prefix,
/// IPv4 or IPv6. A v4-mapped IPv6 network (`::ffff:10.0.0.0/104`) becomes the
/// IPv4 network it maps, so it matches v4 peers and v4-mapped peers alike
/// (peers are compared in canonical form). Host bits must be zero.
pub fn parse_network(text: &str) -> Result<IpNet, ErrorCode> {
    let network = match text.parse::<IpNet>() {
        Ok(network) => network,
        Err(_) => IpNet::from(text.parse::<IpAddr>().map_err(|_| ErrorCode::InvalidNetwork)?),
    };
    if network.trunc() != network {
        return Err(ErrorCode::InvalidNetwork);
    }
    if let IpNet::V6(v6) = network
        && let Some(v4) = v6.addr().to_ipv4_mapped()
        && v6.prefix_len() >= 96
    {
        return IpNet::new(IpAddr::V4(v4), v6.prefix_len() - 96).map_err(|_| ErrorCode::InvalidNetwork);
    }
    Ok(network)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_parse_in_both_families_and_map_v4_in_v6() {
        assert_eq!(parse_network("10.0.0.0/8").unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(parse_network("192.0.2.7").unwrap().to_string(), "192.0.2.7/32");
        assert_eq!(parse_network("2001:db8::/32").unwrap().to_string(), "2001:db8::/32");
        assert_eq!(parse_network("::1").unwrap().to_string(), "::1/128");
        assert_eq!(parse_network("::ffff:10.0.0.0/104").unwrap().to_string(), "10.0.0.0/8");
        for bad in ["", "10.0.0.0/33", "10.0.0.1/8", "nonsense", "2001:db8::/129", "10.0.0.0/8/1"] {
            assert_eq!(parse_network(bad), Err(ErrorCode::InvalidNetwork), "{bad:?}");
        }
    }

    #[test]
    fn lifetimes_follow_the_policy() {
        let open = TokenPolicy {
            max_lifetime_us: None,
            default_lifetime_us: None,
            token_sessions_manage_tokens: true,
        };
        assert_eq!(open.create_lifetime(0), Ok(EXPIRY_NEVER));
        assert_eq!(open.create_lifetime(EXPIRY_NEVER), Ok(EXPIRY_NEVER));
        assert_eq!(open.create_lifetime(5), Ok(5));
        let strict = TokenPolicy { max_lifetime_us: Some(100), default_lifetime_us: Some(50), ..open };
        assert_eq!(strict.create_lifetime(0), Ok(50));
        assert_eq!(strict.create_lifetime(100), Ok(100));
        assert_eq!(strict.create_lifetime(101), Err(ErrorCode::LifetimeNotAllowed));
        assert_eq!(strict.create_lifetime(EXPIRY_NEVER), Err(ErrorCode::LifetimeNotAllowed));
        assert_eq!(strict.rotate_lifetime(0), Ok(0));
        assert_eq!(strict.rotate_lifetime(EXPIRY_NEVER), Err(ErrorCode::LifetimeNotAllowed));
    }
}
