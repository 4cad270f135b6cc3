//! The throttle's buckets, reservations and keys, without a server.
use std::sync::Arc;
use std::time::Duration;

use super::*;

fn config(address_burst: u32, user_burst: u32) -> LoginThrottleConfig {
    LoginThrottleConfig {
        enabled: true,
        per_address_burst: address_burst,
        per_address_per_minute: 0,
        per_user_burst: user_burst,
        per_user_per_minute: 0,
        ipv6_prefix_len: 64,
    }
}

fn ip(last: u8) -> IpAddr {
    IpAddr::from([10, 0, 0, last])
}

fn token(address: IpAddr) -> Attempt<'static> {
    Attempt::Token { address }
}

/// One attempt that fails.
async fn fail(throttle: &LoginThrottle, attempt: Attempt<'_>) -> Result<(), Throttled> {
    throttle.reserve(attempt).await.map(drop)
}

/// Whether `attempt` would be let through now, without waiting.
fn would_pass(throttle: &LoginThrottle, attempt: Attempt<'_>) -> Decision {
    let client = throttle.address_key(attempt.address());
    let username = attempt.username().map(str::to_owned);
    let decision = throttle.try_reserve(&client, username.as_ref(), Instant::now());
    if let Decision::Reserved { user_taken } = decision {
        // Hand it back as if it had succeeded.
        Reservation { throttle: Some(throttle), client, username, user_taken, reserved: true }.refund();
    }
    decision
}

fn passes(throttle: &LoginThrottle, attempt: Attempt<'_>) -> bool {
    matches!(would_pass(throttle, attempt), Decision::Reserved { .. })
}

fn buckets_held(throttle: &LoginThrottle) -> usize {
    throttle.clients.maps.iter().map(|map| map.lock().unwrap().len()).sum()
}

#[tokio::test]
async fn an_address_is_held_back_after_its_burst_of_failures() {
    let throttle = LoginThrottle::new(&config(3, 100));
    for _ in 0..3 {
        fail(&throttle, token(ip(1))).await.unwrap();
    }
    assert_eq!(fail(&throttle, token(ip(1))).await, Err(Throttled));
    // Another address is untouched.
    assert!(passes(&throttle, token(ip(2))));
}

#[tokio::test]
async fn successes_take_nothing_and_leave_no_bucket() {
    let throttle = LoginThrottle::new(&config(1, 1));
    for _ in 0..100 {
        throttle.reserve(token(ip(1))).await.unwrap().refund();
        throttle.reserve(Attempt::Password { address: ip(1), username: "alice" }).await.unwrap().refund();
    }
    assert_eq!(buckets_held(&throttle), 0);
    assert!(throttle.users.maps.iter().all(|map| map.lock().unwrap().is_empty()));
}

#[tokio::test]
async fn attempts_in_flight_hold_their_tokens() {
    let throttle = LoginThrottle::new(&config(2, 100));
    let attempt = Attempt::Password { address: ip(1), username: "alice" };
    let first = throttle.reserve(attempt).await.unwrap();
    let second = throttle.reserve(attempt).await.unwrap();
    // The burst is held by attempts not yet settled: a third waits…
    assert_eq!(would_pass(&throttle, attempt), Decision::WaitForClient);
    // …and goes ahead when one of them turns out to be no guess.
    let third = {
        let waiting = throttle.reserve(attempt);
        tokio::pin!(waiting);
        assert!(tokio::time::timeout(Duration::from_millis(20), &mut waiting).await.is_err());
        first.refund();
        tokio::time::timeout(Duration::from_secs(5), waiting).await.expect("woken").unwrap()
    };
    // Both fail: the bucket is empty with nothing in flight, so refused,
    // token logins too.
    drop((second, third));
    assert_eq!(would_pass(&throttle, attempt), Decision::Refused);
    assert_eq!(fail(&throttle, token(ip(1))).await, Err(Throttled));
}

#[tokio::test]
async fn a_token_login_reserves_once_a_failure_is_on_record_near_it() {
    let throttle = LoginThrottle::new(&config(2, 100));
    // Quiet: no bucket, nothing taken, nothing left behind.
    throttle.reserve(token(ip(1))).await.unwrap().refund();
    assert_eq!(buckets_held(&throttle), 0);
    // A failure on the fast path is still charged…
    fail(&throttle, token(ip(1))).await.unwrap();
    assert_eq!(buckets_held(&throttle), 1);
    // …and from then on attempts in flight hold their tokens.
    let in_flight = throttle.reserve(token(ip(1))).await.unwrap();
    assert!(in_flight.reserved);
    assert_eq!(would_pass(&throttle, token(ip(1))), Decision::WaitForClient);
    drop(in_flight);
    assert_eq!(fail(&throttle, token(ip(1))).await, Err(Throttled));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_many_failing_attempts_in_flight_at_once_only_the_burst_passes() {
    let throttle = Arc::new(LoginThrottle::new(&config(5, 1_000)));
    let attempts: Vec<_> = (0..200)
        .map(|_| {
            let throttle = Arc::clone(&throttle);
            tokio::spawn(async move {
                let attempt = Attempt::Password { address: ip(1), username: "alice" };
                let Ok(reservation) = throttle.reserve(attempt).await else { return false };
                // The check that fails takes a while (Argon2).
                tokio::time::sleep(Duration::from_millis(5)).await;
                drop(reservation);
                true
            })
        })
        .collect();
    let mut passed = 0;
    for attempt in attempts {
        passed += usize::from(attempt.await.unwrap());
    }
    assert_eq!(passed, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_succeeding_attempts_in_flight_at_once_all_pass() {
    let throttle = Arc::new(LoginThrottle::new(&config(2, 2)));
    let attempts: Vec<_> = (0..100)
        .map(|_| {
            let throttle = Arc::clone(&throttle);
            tokio::spawn(async move {
                let attempt = Attempt::Password { address: ip(1), username: "alice" };
                let reservation = throttle.reserve(attempt).await?;
                tokio::time::sleep(Duration::from_millis(1)).await;
                reservation.refund();
                Ok::<_, Throttled>(())
            })
        })
        .collect();
    for attempt in attempts {
        attempt.await.unwrap().unwrap();
    }
    assert_eq!(buckets_held(&throttle), 0);
}

#[tokio::test]
async fn a_user_under_attack_can_still_log_in_from_a_clean_address() {
    let throttle = LoginThrottle::new(&config(100, 2));
    let attacker = |last| Attempt::Password { address: ip(last), username: "alice" };
    fail(&throttle, attacker(1)).await.unwrap();
    fail(&throttle, attacker(2)).await.unwrap();
    // The username's bucket is empty: addresses that failed are held back…
    assert_eq!(fail(&throttle, attacker(1)).await, Err(Throttled));
    assert_eq!(fail(&throttle, attacker(2)).await, Err(Throttled));
    // …but an address with no failures of its own is not…
    assert!(passes(&throttle, attacker(3)));
    // …nor are other usernames from a failed address.
    assert!(passes(&throttle, Attempt::Password { address: ip(1), username: "bob" }));
}

#[tokio::test]
async fn buckets_refill_over_time() {
    let mut rate = config(1, 1);
    rate.per_address_per_minute = 60_000; // 1000 per second
    let throttle = LoginThrottle::new(&rate);
    fail(&throttle, token(ip(1))).await.unwrap();
    std::thread::sleep(Duration::from_millis(20));
    assert!(passes(&throttle, token(ip(1))));
}

#[tokio::test]
async fn disabled_throttle_allows_everything() {
    let mut off = config(1, 1);
    off.enabled = false;
    let throttle = LoginThrottle::new(&off);
    for _ in 0..10 {
        fail(&throttle, token(ip(1))).await.unwrap();
    }
    assert!(passes(&throttle, token(ip(1))));
    assert_eq!(buckets_held(&throttle), 0);
}

#[tokio::test]
async fn ipv6_addresses_of_one_prefix_share_a_bucket() {
    let throttle = LoginThrottle::new(&config(2, 100));
    let v6 = |text: &str| token(text.parse().unwrap());
    fail(&throttle, v6("2001:db8:1:2::a")).await.unwrap();
    fail(&throttle, v6("2001:db8:1:2::b")).await.unwrap();
    assert_eq!(fail(&throttle, v6("2001:db8:1:2:ffff::c")).await, Err(Throttled));
    assert!(passes(&throttle, v6("2001:db8:1:3::a")));
    // Keyed by the whole address, each would have its own.
    let mut whole = config(2, 100);
    whole.ipv6_prefix_len = 128;
    let throttle = LoginThrottle::new(&whole);
    fail(&throttle, v6("2001:db8:1:2::a")).await.unwrap();
    fail(&throttle, v6("2001:db8:1:2::b")).await.unwrap();
    assert!(passes(&throttle, v6("2001:db8:1:2::c")));
    // IPv4 written as IPv6 is the IPv4 address's bucket.
    let throttle = LoginThrottle::new(&config(1, 100));
    fail(&throttle, token(ip(1))).await.unwrap();
    assert_eq!(fail(&throttle, v6("::ffff:10.0.0.1")).await, Err(Throttled));
    assert!(passes(&throttle, v6("::ffff:10.0.0.2")));
}

#[tokio::test]
async fn maps_stay_bounded_under_a_flood_of_addresses() {
    let throttle = LoginThrottle::new(&config(5, 5));
    for index in 0..(MAP_COUNT * MAP_BUCKETS_MAX + 500) as u32 {
        fail(&throttle, token(IpAddr::from(index.to_be_bytes()))).await.unwrap();
    }
    assert!(buckets_held(&throttle) <= MAP_COUNT * MAP_BUCKETS_MAX, "{}", buckets_held(&throttle));
}
