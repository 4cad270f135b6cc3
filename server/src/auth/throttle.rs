//! Failed-login throttling: token buckets per client (an IPv6 client by its
//! network, see `address.rs`) and per username, so guessing passwords or
//! tokens is slow.
//!
//! - Every login attempt reserves a token from its client's bucket before
//!   any lookup or Argon2 (a password login also one from the username's),
//!   and gives it back if the attempt was no guess: it succeeded, or it
//!   named an inactive user's real credentials. A failed attempt, or one
//!   whose connection went away meanwhile, keeps its token. Reserving
//!   first is what holds the burst: attempts in flight at once each hold a
//!   token, so 200 guesses sent together from one address cannot all pass
//!   a check made before the first of them has failed.
//! - An attempt is refused (20001) when its client's bucket is empty, or
//!   when the username's bucket is empty *and* the client has failed itself
//!   recently. A clean client is never held back by other clients'
//!   failures, so an attacker cannot lock the real user out.
//! - An attempt that finds a bucket empty only because attempts still in
//!   flight hold its tokens waits for them to settle: they may yet succeed
//!   and give their tokens back. So honest logins sent together (a pool
//!   connecting at once) are never refused for failures nobody made, and
//!   successful logins, once settled, take nothing.
//! - A token login whose client's map holds no bucket at all (no failure on
//!   record anywhere near it: the usual case) takes no lock: it runs
//!   unreserved and, if it fails, is charged afterwards. A token login has
//!   no await, so at most one per worker thread runs at a time, and the
//!   first failure puts a bucket in the map, after which every attempt
//!   there reserves. So the burst can be passed by at most `shards` − 1
//!   token guesses, and only in the microseconds after the first failure in
//!   a quiet map. Reserving every token login instead took 14–31 % off
//!   token-login throughput in two measurements (the sidecar's hot path),
//!   against guesses of a token that cannot succeed anyway. Password logins
//!   always reserve: they await Argon2, so their race was bounded only by
//!   the connections.
//!
//! The buckets sit in a few mutex-guarded maps chosen by key hash (a keyed
//! multiplication for addresses, which every token login picks its map by;
//! SipHash for usernames), each with a lock-free count of its buckets; a
//! lock is held for a map lookup and update, never across an await. A waiting attempt is woken when a
//! reservation in its bucket's map settles. The maps are bounded; when one
//! is full, buckets that have refilled and hold no reservation (they carry
//! no information) are dropped first.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, RandomState};
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use tokio::sync::Notify;

use super::address::AddressKey;
use crate::config::LoginThrottleConfig;
use crate::metrics::{self, LoginMethod};

/// Maps per kind of key; a power of two.
const MAP_COUNT: usize = 16;
/// The hash bits that pick a map: its high ones.
const MAP_SHIFT: u32 = u64::BITS - MAP_COUNT.trailing_zeros();
/// Buckets one map keeps at most (so all maps hold at most 16 × this),
/// besides buckets with attempts in flight, which are never dropped (there
/// are at most as many as open connections).
const MAP_BUCKETS_MAX: usize = 16 * 1024;

#[derive(Debug, Clone, Copy)]
struct Rate {
    burst: f64,
    per_sec: f64,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Tokens left at `updated`; reservations already taken out.
    tokens: f64,
    updated: Instant,
    /// Reservations not yet settled.
    in_flight: u32,
    /// An attempt waits for one of them to settle: the settle must wake it.
    /// Set and cleared under the map's lock, so a settle wakes exactly
    /// when someone registered, and waking costs nothing otherwise.
    awaited: bool,
}

impl Bucket {
    fn full(rate: Rate, now: Instant) -> Bucket {
        Bucket { tokens: rate.burst, updated: now, in_flight: 0, awaited: false }
    }

    fn refilled(&self, rate: Rate, now: Instant) -> f64 {
        let earned = now.saturating_duration_since(self.updated).as_secs_f64() * rate.per_sec;
        (self.tokens + earned).min(rate.burst)
    }

    /// Whether failures are on record: tokens missing beyond those held by
    /// attempts in flight.
    fn has_failed(&self, rate: Rate, now: Instant) -> bool {
        self.refilled(rate, now) + f64::from(self.in_flight) < rate.burst
    }

    /// Nothing in flight and nothing missing: as good as no bucket.
    fn is_rested(&self, rate: Rate, now: Instant) -> bool {
        self.in_flight == 0 && self.refilled(rate, now) >= rate.burst
    }

    /// For an attempt that found this bucket empty: `wait` (registering, so
    /// the next settle wakes it) while reservations that may be refunded are
    /// in flight, else refused.
    fn wait_or_refuse(&mut self, wait: Decision) -> Decision {
        if self.in_flight == 0 {
            return Decision::Refused;
        }
        self.awaited = true;
        wait
    }

    /// Takes up to one token (less only from a bucket nearly empty) for a
    /// new reservation; returns how much, to give back on a refund.
    fn reserve(&mut self, rate: Rate, now: Instant) -> f64 {
        let tokens = self.refilled(rate, now);
        let taken = tokens.min(1.0);
        self.tokens = tokens - taken;
        self.updated = now;
        self.in_flight += 1;
        taken
    }
}

/// A kind of key, and how it picks its map.
trait MapKey: Hash + Eq + Clone {
    /// A hash whose high bits pick the map.
    fn map_hash(&self, hasher: &RandomState, seed: u64) -> u64;
}

/// Usernames are chosen by whoever logs in: SipHash, keyed.
impl MapKey for String {
    fn map_hash(&self, hasher: &RandomState, _seed: u64) -> u64 {
        hasher.hash_one(self)
    }
}

/// Every token login picks its client's map, so addresses take the cheap
/// mix (SipHash over the key's three fields was about 220 instructions of a
/// token login's 5,150 under callgrind).
impl MapKey for AddressKey {
    fn map_hash(&self, _hasher: &RandomState, seed: u64) -> u64 {
        self.mixed(seed)
    }
}

struct Buckets<K> {
    maps: Vec<Mutex<HashMap<K, Bucket>>>,
    /// Buckets in each map, readable without its lock (the token logins'
    /// fast path).
    held: Vec<AtomicUsize>,
    /// One per map: woken when a reservation someone waits on settles.
    settled: Vec<Notify>,
    hasher: RandomState,
    /// Random, for the keys that pick their map without `hasher`.
    seed: u64,
    rate: Rate,
}

impl<K: MapKey> Buckets<K> {
    fn new(burst: u32, per_minute: u32) -> Buckets<K> {
        let hasher = RandomState::new();
        Buckets {
            maps: (0..MAP_COUNT).map(|_| Mutex::new(HashMap::new())).collect(),
            held: (0..MAP_COUNT).map(|_| AtomicUsize::new(0)).collect(),
            settled: (0..MAP_COUNT).map(|_| Notify::new()).collect(),
            seed: hasher.hash_one("map seed"),
            hasher,
            rate: Rate { burst: f64::from(burst), per_sec: f64::from(per_minute) / 60.0 },
        }
    }

    fn index(&self, key: &K) -> usize {
        // Under 16 bits after the shift: `as` cannot truncate.
        (key.map_hash(&self.hasher, self.seed) >> MAP_SHIFT) as usize
    }

    fn lock(&self, index: usize) -> MutexGuard<'_, HashMap<K, Bucket>> {
        self.maps[index].lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Publishes map `index`'s bucket count after a change, under its lock.
    fn note_len(&self, index: usize, map: &HashMap<K, Bucket>) {
        self.held[index].store(map.len(), Ordering::Relaxed);
    }

    /// Whether map `index` holds no bucket, without its lock.
    fn is_quiet(&self, index: usize) -> bool {
        self.held[index].load(Ordering::Relaxed) == 0
    }

    /// `key`'s bucket in `map`, a full one if it has none, making room if
    /// the map is at its bound.
    fn slot<'m>(&self, map: &'m mut HashMap<K, Bucket>, key: &K, now: Instant) -> &'m mut Bucket {
        let rate = self.rate;
        if map.len() >= MAP_BUCKETS_MAX && !map.contains_key(key) {
            map.retain(|_, bucket| !bucket.is_rested(rate, now));
            if map.len() >= MAP_BUCKETS_MAX {
                // Still full of active attackers: forget the most rested one
                // that no attempt in flight still needs.
                let rested = map
                    .iter()
                    .filter(|(_, bucket)| bucket.in_flight == 0)
                    .max_by(|a, b| a.1.refilled(rate, now).total_cmp(&b.1.refilled(rate, now)))
                    .map(|(key, _)| key.clone());
                if let Some(rested) = rested {
                    map.remove(&rested);
                }
            }
        }
        map.entry(key.clone()).or_insert_with(|| Bucket::full(rate, now))
    }

    /// Ends one reservation on `key`, giving `refund` tokens back, and wakes
    /// the attempts waiting on this map if one waits on this bucket.
    fn settle(&self, key: &K, refund: f64) {
        let index = self.index(key);
        let now = Instant::now();
        let awaited = {
            let mut map = self.lock(index);
            let Some(bucket) = map.get_mut(key) else { return };
            bucket.in_flight = bucket.in_flight.saturating_sub(1);
            if refund > 0.0 {
                bucket.tokens = (bucket.refilled(self.rate, now) + refund).min(self.rate.burst);
                bucket.updated = now;
            }
            let awaited = std::mem::take(&mut bucket.awaited);
            if bucket.is_rested(self.rate, now) {
                map.remove(key);
                self.note_len(index, &map);
            }
            awaited
        };
        if awaited {
            // Every waiter of the map looks again; those still blocked
            // register again. Their futures predate this call, so none is missed.
            self.settled[index].notify_waiters();
        }
    }

    /// Records a failure that held no reservation: one token taken, or what
    /// is left of one.
    fn charge(&self, key: &K) {
        let index = self.index(key);
        let now = Instant::now();
        let mut map = self.lock(index);
        let bucket = self.slot(&mut map, key, now);
        bucket.tokens = (bucket.refilled(self.rate, now) - 1.0).max(0.0);
        bucket.updated = now;
        self.note_len(index, &map);
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

    fn username(&self) -> Option<&str> {
        match self {
            Attempt::Password { username, .. } => Some(username),
            Attempt::Token { .. } => None,
        }
    }

    fn method(&self) -> LoginMethod {
        match self {
            Attempt::Password { .. } => LoginMethod::Password,
            Attempt::Token { .. } => LoginMethod::Token,
        }
    }
}

/// An attempt the throttle refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttled;

/// What one look at the buckets decided.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Decision {
    /// Taken: one token from the client's bucket, this much from the
    /// username's.
    Reserved {
        user_taken: f64,
    },
    Refused,
    /// Empty only for the reservations in flight: wait for one to settle
    /// in the client's map, or in the username's.
    WaitForClient,
    WaitForUser,
}

pub struct LoginThrottle {
    enabled: bool,
    ipv6_prefix_len: u8,
    clients: Buckets<AddressKey>,
    users: Buckets<String>,
}

impl LoginThrottle {
    pub fn new(config: &LoginThrottleConfig) -> LoginThrottle {
        LoginThrottle {
            enabled: config.enabled,
            ipv6_prefix_len: config.ipv6_prefix_len,
            clients: Buckets::new(config.per_address_burst, config.per_address_per_minute),
            users: Buckets::new(config.per_user_burst, config.per_user_per_minute),
        }
    }

    /// What `address` is counted as, here and by the per-address connection
    /// limit: itself for IPv4, its network for IPv6.
    pub fn address_key(&self, address: IpAddr) -> AddressKey {
        AddressKey::new(address, self.ipv6_prefix_len)
    }

    /// Reserves a token for `attempt` before any lookup or hashing, waiting
    /// while its bucket is empty only for attempts still in flight. Dropping
    /// the reservation records a failure; [`Reservation::refund`] records
    /// none.
    pub async fn reserve(&self, attempt: Attempt<'_>) -> Result<Reservation<'_>, Throttled> {
        let (client, client_index) = match self.look(attempt) {
            Ok(reservation) => return Ok(reservation),
            Err(client) => client,
        };
        let username = attempt.username().map(str::to_owned);
        let client_settled = &self.clients.settled[client_index];
        let user_settled = &self.users.settled[username.as_ref().map_or(0, |name| self.users.index(name))];
        loop {
            // Registered before the look, so a settle in between still wakes us.
            let client_turn = client_settled.notified();
            let user_turn = user_settled.notified();
            match self.try_reserve(&client, username.as_ref(), Instant::now()) {
                Decision::Reserved { user_taken } => {
                    return Ok(Reservation {
                        throttle: Some(self),
                        client,
                        username,
                        user_taken,
                        reserved: true,
                    });
                }
                Decision::Refused => {
                    metrics::throttle_refused(attempt.method());
                    return Err(Throttled);
                }
                Decision::WaitForClient => client_turn.await,
                Decision::WaitForUser => user_turn.await,
            }
        }
    }

    /// [`LoginThrottle::reserve`]'s answer when it needs no look at the
    /// buckets: the throttle is off, or the attempt is a token login and no
    /// failure is on record near its client (a failure is then charged when
    /// the reservation drops). `None`: only `reserve` can tell, and it may
    /// have to wait.
    pub fn reserve_at_once(&self, attempt: Attempt<'_>) -> Option<Reservation<'_>> {
        self.look(attempt).ok()
    }

    /// [`LoginThrottle::reserve_at_once`]'s look; when the buckets must be
    /// looked at, the client's key and map index, for `reserve` to go on.
    fn look(&self, attempt: Attempt<'_>) -> Result<Reservation<'_>, (AddressKey, usize)> {
        let client = self.address_key(attempt.address());
        let unreserved =
            |throttle| Reservation { throttle, client, username: None, user_taken: 0.0, reserved: false };
        if !self.enabled {
            return Ok(unreserved(None));
        }
        let client_index = self.clients.index(&client);
        if matches!(attempt, Attempt::Token { .. }) && self.clients.is_quiet(client_index) {
            return Ok(unreserved(Some(self)));
        }
        Err((client, client_index))
    }

    /// One look at the buckets, under the client's map lock (and the
    /// username's, taken second: the one order both are ever held in).
    fn try_reserve(&self, client: &AddressKey, username: Option<&String>, now: Instant) -> Decision {
        let mut clients = self.clients.lock(self.clients.index(client));
        let rate = self.clients.rate;
        let mut failed = false;
        if let Some(bucket) = clients.get_mut(client) {
            if bucket.refilled(rate, now) < 1.0 {
                return bucket.wait_or_refuse(Decision::WaitForClient);
            }
            failed = bucket.has_failed(rate, now);
        }
        let mut user_taken = 0.0;
        if let Some(username) = username {
            let mut users = self.users.lock(self.users.index(username));
            let user_rate = self.users.rate;
            if failed
                && let Some(bucket) = users.get_mut(username)
                && bucket.refilled(user_rate, now) < 1.0
            {
                return bucket.wait_or_refuse(Decision::WaitForUser);
            }
            // A clean client's attempt still counts against the username,
            // so failures from many clean clients hold back their retries.
            user_taken = self.users.slot(&mut users, username, now).reserve(user_rate, now);
            self.users.note_len(self.users.index(username), &users);
        }
        let taken = self.clients.slot(&mut clients, client, now).reserve(rate, now);
        debug_assert!(taken >= 1.0, "a reservation from a bucket without a whole token");
        self.clients.note_len(self.clients.index(client), &clients);
        Decision::Reserved { user_taken }
    }
}

/// One login attempt's hold on the throttle, from before its lookup until
/// its outcome is known. Dropped, it counts as a failure (so a client that
/// goes away mid-check gains nothing); refunded, as no attempt at all.
#[must_use = "dropping a reservation at once records a failed login"]
pub struct Reservation<'t> {
    /// `None` once settled, or when the throttle is off.
    throttle: Option<&'t LoginThrottle>,
    client: AddressKey,
    username: Option<String>,
    user_taken: f64,
    /// Whether a token was taken from the client's bucket; `false` on the
    /// token logins' fast path, where a failure is charged at the end.
    reserved: bool,
}

impl Reservation<'_> {
    /// The attempt was no guess (it succeeded, or it held an inactive user's
    /// real credentials): its tokens go back.
    pub fn refund(mut self) {
        self.settle(true);
    }

    fn settle(&mut self, refund: bool) {
        let Some(throttle) = self.throttle.take() else { return };
        if self.reserved {
            throttle.clients.settle(&self.client, if refund { 1.0 } else { 0.0 });
        } else if !refund {
            throttle.clients.charge(&self.client);
        }
        if let Some(username) = &self.username {
            throttle.users.settle(username, if refund { self.user_taken } else { 0.0 });
        }
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.settle(false);
    }
}

#[cfg(test)]
#[path = "throttle_tests.rs"]
mod tests;
