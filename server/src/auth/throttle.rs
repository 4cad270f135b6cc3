//! Failed-login throttling: token buckets per client address and per
//! username, so guessing passwords or tokens is slow.
//!
//! - Every failed login takes one token from its address's bucket; a failed
//!   password login also takes one from the username's bucket.
//! - An attempt is refused before any lookup or Argon2 when its address's
//!   bucket is empty, or when the username's bucket is empty *and* the address
//!   has failed itself recently. A clean address is never held back by other
//!   addresses' failures, so an attacker cannot lock the real user out.
//! - Successful logins take nothing.
//!
//! The buckets sit in a few mutex-guarded maps chosen by key hash, each with
//! a lock-free count: a login whose map holds no bucket (no recent failures
//! near it, the usual case) takes no lock, and a lock is held only for a map
//! lookup. The maps are bounded; when one is full, buckets that have
//! refilled completely (they carry no information) are dropped first.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, RandomState};
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use crate::config::LoginThrottleConfig;

/// Maps per kind of key; a power of two.
const MAP_COUNT: usize = 16;
/// Buckets one map keeps at most (so all maps hold at most 16 × this).
const MAP_BUCKETS_MAX: usize = 16 * 1024;

#[derive(Debug, Clone, Copy)]
struct Rate {
    burst: f64,
    per_sec: f64,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl Bucket {
    fn refilled(&self, rate: Rate, now: Instant) -> f64 {
        let earned = now.saturating_duration_since(self.updated).as_secs_f64() * rate.per_sec;
        (self.tokens + earned).min(rate.burst)
    }
}

struct Buckets<K> {
    maps: Vec<Mutex<HashMap<K, Bucket>>>,
    /// Buckets in each map, readable without its lock: a login whose map
    /// holds none (no recent failures anywhere near it, the usual case)
    /// takes no lock at all.
    held: Vec<AtomicUsize>,
    hasher: RandomState,
    rate: Rate,
}

impl<K: Hash + Eq + Clone> Buckets<K> {
    fn new(burst: u32, per_minute: u32) -> Buckets<K> {
        Buckets {
            maps: (0..MAP_COUNT).map(|_| Mutex::new(HashMap::new())).collect(),
            held: (0..MAP_COUNT).map(|_| AtomicUsize::new(0)).collect(),
            hasher: RandomState::new(),
            rate: Rate { burst: f64::from(burst), per_sec: f64::from(per_minute) / 60.0 },
        }
    }

    fn index(&self, key: &K) -> usize {
        self.hasher.hash_one(key) as usize & (MAP_COUNT - 1)
    }

    /// Tokens left for `key` now; `None` if it has no failures on record.
    /// A failure recorded at this very moment may be missed: throttling is
    /// a rate limit, not an exact count.
    fn tokens(&self, key: &K, now: impl FnOnce() -> Instant) -> Option<f64> {
        let index = self.index(key);
        if self.held[index].load(Ordering::Relaxed) == 0 {
            return None;
        }
        let map = self.maps[index].lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        map.get(key).map(|bucket| bucket.refilled(self.rate, now()))
    }

    fn take(&self, key: &K, now: Instant) {
        let index = self.index(key);
        let mut map = self.maps[index].lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if map.len() >= MAP_BUCKETS_MAX && !map.contains_key(key) {
            let rate = self.rate;
            map.retain(|_, bucket| bucket.refilled(rate, now) < rate.burst);
            if map.len() >= MAP_BUCKETS_MAX {
                // Still full of active attackers: forget the most rested one.
                let rested = map
                    .iter()
                    .max_by(|a, b| a.1.refilled(rate, now).total_cmp(&b.1.refilled(rate, now)))
                    .map(|(key, _)| key.clone());
                if let Some(rested) = rested {
                    map.remove(&rested);
                }
            }
        }
        let bucket = map.entry(key.clone()).or_insert(Bucket { tokens: self.rate.burst, updated: now });
        bucket.tokens = (bucket.refilled(self.rate, now) - 1.0).max(0.0);
        bucket.updated = now;
        self.held[index].store(map.len(), Ordering::Relaxed);
    }
}

/// What a login attempt identifies itself by.
#[derive(Debug, Clone, Copy)]
pub enum Attempt<'a> {
    Password { address: IpAddr, username: &'a str },
    Token { address: IpAddr },
}

impl Attempt<'_> {
    fn address(&self) -> IpAddr {
        match self {
            Attempt::Password { address, .. } | Attempt::Token { address } => *address,
        }
    }
}

pub struct LoginThrottle {
    enabled: bool,
    addresses: Buckets<IpAddr>,
    users: Buckets<String>,
}

impl LoginThrottle {
    pub fn new(config: &LoginThrottleConfig) -> LoginThrottle {
        LoginThrottle {
            enabled: config.enabled,
            addresses: Buckets::new(config.per_address_burst, config.per_address_per_minute),
            users: Buckets::new(config.per_user_burst, config.per_user_per_minute),
        }
    }

    /// Whether `attempt` may go ahead. Called before any lookup or hashing.
    pub fn allows(&self, attempt: Attempt<'_>) -> bool {
        if !self.enabled {
            return true;
        }
        let Some(address_tokens) = self.addresses.tokens(&attempt.address(), Instant::now) else {
            // No failures from this address: nothing can hold it back.
            return true;
        };
        if address_tokens < 1.0 {
            return false;
        }
        match attempt {
            Attempt::Password { username, .. } => {
                self.users.tokens(&username.to_owned(), Instant::now).is_none_or(|tokens| tokens >= 1.0)
            }
            Attempt::Token { .. } => true,
        }
    }

    /// Records a failed login.
    pub fn failed(&self, attempt: Attempt<'_>) {
        if !self.enabled {
            return;
        }
        let now = Instant::now();
        self.addresses.take(&attempt.address(), now);
        if let Attempt::Password { username, .. } = attempt {
            self.users.take(&username.to_owned(), now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(address_burst: u32, user_burst: u32) -> LoginThrottleConfig {
        LoginThrottleConfig {
            enabled: true,
            per_address_burst: address_burst,
            per_address_per_minute: 0,
            per_user_burst: user_burst,
            per_user_per_minute: 0,
        }
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn an_address_is_held_back_after_its_burst_of_failures() {
        let throttle = LoginThrottle::new(&config(3, 100));
        let attempt = Attempt::Token { address: ip(1) };
        for _ in 0..3 {
            assert!(throttle.allows(attempt));
            throttle.failed(attempt);
        }
        assert!(!throttle.allows(attempt));
        // Another address is untouched.
        assert!(throttle.allows(Attempt::Token { address: ip(2) }));
    }

    #[test]
    fn a_user_under_attack_can_still_log_in_from_a_clean_address() {
        let throttle = LoginThrottle::new(&config(100, 2));
        let attacker = |last| Attempt::Password { address: ip(last), username: "alice" };
        throttle.failed(attacker(1));
        throttle.failed(attacker(2));
        // The username's bucket is empty: addresses that failed are held back…
        assert!(!throttle.allows(attacker(1)));
        assert!(!throttle.allows(attacker(2)));
        // …but an address with no failures of its own is not.
        assert!(throttle.allows(attacker(3)));
        // Other usernames from a failed address are not affected by alice's bucket.
        assert!(throttle.allows(Attempt::Password { address: ip(1), username: "bob" }));
    }

    #[test]
    fn buckets_refill_over_time() {
        let mut rate = config(1, 1);
        rate.per_address_per_minute = 60_000; // 1000 per second
        let throttle = LoginThrottle::new(&rate);
        let attempt = Attempt::Token { address: ip(1) };
        throttle.failed(attempt);
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(throttle.allows(attempt));
    }

    #[test]
    fn disabled_throttle_allows_everything() {
        let mut off = config(1, 1);
        off.enabled = false;
        let throttle = LoginThrottle::new(&off);
        let attempt = Attempt::Token { address: ip(1) };
        for _ in 0..10 {
            throttle.failed(attempt);
        }
        assert!(throttle.allows(attempt));
    }

    #[test]
    fn maps_stay_bounded_under_a_flood_of_addresses() {
        let throttle = LoginThrottle::new(&config(5, 5));
        for index in 0..(MAP_COUNT * MAP_BUCKETS_MAX + 500) as u32 {
            throttle.failed(Attempt::Token { address: IpAddr::from(index.to_be_bytes()) });
        }
        let total: usize = throttle.addresses.maps.iter().map(|map| map.lock().unwrap().len()).sum();
        assert!(total <= MAP_COUNT * MAP_BUCKETS_MAX, "{total}");
    }
}
