//! Where each fact lives in etcd, and the bytes of each value.
//!
//! Under the configured prefix `P` (default `/latchkey/`):
//!
//! | key | value | why |
//! |---|---|---|
//! | `P tokens/{user:010}/{id:020}` | the token, as a log record (Create or Token, checksummed) | the registry's source |
//! | `P used/{user:010}/{id:020}` | its last use, as a log Touch record | apart, so a use never rewrites the token |
//! | `P names/{user:010}/{name}` | the id, decimal | a name unique per user: created only if absent |
//! | `P counts/{user:010}` | tokens the user holds, decimal; absent at 0 | the per-user limit, compared on every create and delete |
//! | `P meta/next-id` | the id counter, decimal: every id below it may have been handed out, none at or above it | ids unique and never reused: nodes lease blocks of ids from it (`ids.rs`) |
//! | `P meta/key-check` | keyed hash of a fixed label, hex | every node has the same token-hash key |
//! | `P meta/root` | root's username and Argon2 hash (TOML) | chosen once, by the first node |
//! | `P meta/fence` | empty | written before a node answers a refusal, so it answers at etcd's latest revision |
//!
//! The user and the id are in the token keys so that a delete event, which
//! carries only its key, still names the token it removed. No value holds a
//! raw token or password.

use crate::registry::{LastUsed, TokenRecord};
use crate::store::log::{Record, encode_record, parse_record};

/// The key layout under one prefix.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

/// What a key under the prefix names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Named {
    Token {
        user_id: u32,
        id: u64,
    },
    Used {
        user_id: u32,
        id: u64,
    },
    NextId,
    /// A user's token count.
    Count {
        user_id: u32,
    },
    /// Indexes and metadata the registry does not mirror.
    Other,
}

impl Keys {
    pub fn new(prefix: &str) -> Keys {
        Keys { prefix: prefix.to_owned() }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn tokens(&self) -> String {
        format!("{}tokens/", self.prefix)
    }

    pub fn used_all(&self) -> String {
        format!("{}used/", self.prefix)
    }

    pub fn token(&self, user_id: u32, id: u64) -> String {
        format!("{}tokens/{user_id:010}/{id:020}", self.prefix)
    }

    pub fn used(&self, user_id: u32, id: u64) -> String {
        format!("{}used/{user_id:010}/{id:020}", self.prefix)
    }

    pub fn name(&self, user_id: u32, name: &str) -> String {
        format!("{}names/{user_id:010}/{name}", self.prefix)
    }

    /// Where every user's token count is kept (one key per user with tokens).
    pub fn counts(&self) -> String {
        format!("{}counts/", self.prefix)
    }

    /// The first key of user `user_id`'s tokens (or last uses, with
    /// `kind` `used/`) with an id of at least `id`: ids are written with
    /// fixed width, so keys sort as their ids do.
    pub fn by_user_from(&self, kind: &str, user_id: u32, id: u64) -> String {
        format!("{}{kind}{user_id:010}/{id:020}", self.prefix)
    }

    pub fn count(&self, user_id: u32) -> String {
        format!("{}counts/{user_id:010}", self.prefix)
    }

    pub fn next_id(&self) -> String {
        format!("{}meta/next-id", self.prefix)
    }

    pub fn key_check(&self) -> String {
        format!("{}meta/key-check", self.prefix)
    }

    pub fn root(&self) -> String {
        format!("{}meta/root", self.prefix)
    }

    pub fn fence(&self) -> String {
        format!("{}meta/fence", self.prefix)
    }

    /// What `key` names; keys outside the prefix or of another shape are
    /// [`Named::Other`].
    pub fn parse(&self, key: &[u8]) -> Named {
        let Some(rest) = std::str::from_utf8(key).ok().and_then(|key| key.strip_prefix(&self.prefix)) else {
            return Named::Other;
        };
        if rest == "meta/next-id" {
            return Named::NextId;
        }
        let ids = |tail: &str| {
            let (user, id) = tail.split_once('/')?;
            Some((user.parse().ok()?, id.parse().ok()?))
        };
        if let Some((user_id, id)) = rest.strip_prefix("tokens/").and_then(ids) {
            return Named::Token { user_id, id };
        }
        if let Some((user_id, id)) = rest.strip_prefix("used/").and_then(ids) {
            return Named::Used { user_id, id };
        }
        if let Some(user_id) = rest.strip_prefix("counts/").and_then(|user| user.parse().ok()) {
            return Named::Count { user_id };
        }
        Named::Other
    }
}

/// A token's value: its log record, without the last use (kept apart).
pub fn encode_token(token: &TokenRecord) -> Vec<u8> {
    let token = TokenRecord { last_used: None, ..token.clone() };
    let mut out = Vec::with_capacity(128);
    encode_record(&mut out, 0, token.created_at_us, &Record::Create(token));
    out
}

pub fn decode_token(bytes: &[u8]) -> Result<TokenRecord, String> {
    match parse_record(bytes, 0)? {
        (_, Record::Create(token), used) if used == bytes.len() => Ok(token),
        _ => Err("not a token record".to_owned()),
    }
}

/// A last use's value.
pub fn encode_used(id: u64, used: LastUsed) -> Vec<u8> {
    let mut out = Vec::with_capacity(48);
    encode_record(&mut out, 0, used.at_us, &Record::Touch { id, used });
    out
}

pub fn decode_used(bytes: &[u8]) -> Result<LastUsed, String> {
    match parse_record(bytes, 0)? {
        (_, Record::Touch { used, .. }, length) if length == bytes.len() => Ok(used),
        _ => Err("not a last-use record".to_owned()),
    }
}

/// A decimal counter's value (ids, counts).
pub fn encode_number(value: u64) -> Vec<u8> {
    value.to_string().into_bytes()
}

pub fn decode_number(bytes: &[u8]) -> Result<u64, String> {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|text| text.parse().ok())
        .ok_or_else(|| format!("not a decimal number: {:?}", String::from_utf8_lossy(bytes)))
}

/// A token id as etcd's revisions are: i64, never 0 for a real token.
pub fn revision(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU64;

    use super::*;

    #[test]
    fn keys_round_trip_and_others_are_other() {
        let keys = Keys::new("/lk/");
        assert_eq!(keys.token(7, 42), "/lk/tokens/0000000007/00000000000000000042");
        assert_eq!(keys.parse(keys.token(7, 42).as_bytes()), Named::Token { user_id: 7, id: 42 });
        assert_eq!(
            keys.parse(keys.used(u32::MAX, u64::MAX).as_bytes()),
            Named::Used { user_id: u32::MAX, id: u64::MAX }
        );
        assert_eq!(keys.parse(keys.next_id().as_bytes()), Named::NextId);
        assert_eq!(keys.parse(keys.count(9).as_bytes()), Named::Count { user_id: 9 });
        // Slices of a user's ids sort as the ids do.
        assert!(keys.by_user_from("tokens/", 7, 41) < keys.token(7, 42));
        assert!(keys.token(7, 42) < keys.by_user_from("tokens/", 7, 43));
        assert!(keys.by_user_from("tokens/", 7, u64::MAX) > keys.token(7, u64::MAX - 1));
        for other in [keys.name(7, "a/b"), keys.root(), "/other/tokens/1/2".to_owned()] {
            assert_eq!(keys.parse(other.as_bytes()), Named::Other, "{other}");
        }
        assert_eq!(keys.parse(b"/lk/tokens/x/1"), Named::Other);
        assert_eq!(keys.parse(&[0xff, 0xfe]), Named::Other);
    }

    #[test]
    fn values_round_trip_and_damage_is_an_error() {
        let token = TokenRecord {
            id: 3,
            user_id: 1,
            name: "ci".into(),
            hash: [9; 32],
            created_at_us: 1_700_000_000_000_000,
            expiry_at_us: NonZeroU64::new(1_800_000_000_000_000),
            revoked_at_us: None,
            extras: None,
            last_used: None,
        };
        let bytes = encode_token(&token);
        assert_eq!(decode_token(&bytes), Ok(token));
        let mut damaged = bytes.clone();
        *damaged.last_mut().unwrap() ^= 1;
        assert!(decode_token(&damaged).is_err());
        assert!(decode_token(&bytes[..bytes.len() - 1]).is_err());
        let used = LastUsed { at_us: 5, peer: "127.0.0.1:9".parse().unwrap() };
        assert_eq!(decode_used(&encode_used(3, used)), Ok(used));
        assert_eq!(decode_number(&encode_number(u64::MAX)), Ok(u64::MAX));
        assert!(decode_number(b"12a").is_err());
    }
}
