//! Revocation propagation across cluster nodes: revoke a token on one node,
//! then time how long each other node keeps accepting it. The clock starts
//! when the revoke is acknowledged (so it measures what a client can
//! observe) and stops at the first refused login on the other node.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use latchkey_sdk::{Client, NewToken};

/// Longest a node may keep accepting a revoked token before the run gives
/// up on it (counted as a miss, never hidden in a percentile).
const GIVE_UP: Duration = Duration::from_secs(10);

/// Per round: create on `writer`, wait until every reader accepts it,
/// revoke on `writer`, time each reader until it refuses.
pub async fn run(
    writer: SocketAddr,
    readers: &[SocketAddr],
    user: &str,
    pass: &str,
    rounds: usize,
) -> std::io::Result<()> {
    let io = |error: latchkey_sdk::Error| std::io::Error::other(error.to_string());
    let mut owner = Client::connect(writer).await.map_err(io)?;
    owner.login_user(user, pass).await.map_err(io)?;
    let mut probes = Vec::new();
    for &reader in readers {
        probes.push(Client::connect(reader).await.map_err(io)?);
    }
    let mut delays = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds");
    let mut misses = 0;
    let run = std::process::id();
    for round in 0..rounds {
        let name = format!("prop-{run}-{round}");
        let issued = owner.create_token(&NewToken::named(name.clone())).await.map_err(io)?;
        for probe in &mut probes {
            let deadline = Instant::now() + GIVE_UP;
            while probe.login_with_personal_access_token(&issued.token).await.is_err() {
                if Instant::now() > deadline {
                    return Err(std::io::Error::other(format!("{name} never reached a reader")));
                }
            }
        }
        owner.revoke_token(name.as_str()).await.map_err(io)?;
        let revoked_at = Instant::now();
        for probe in &mut probes {
            loop {
                if probe.login_with_personal_access_token(&issued.token).await.is_err() {
                    delays.record(revoked_at.elapsed().as_micros().max(1) as u64).expect("in bounds");
                    break;
                }
                if revoked_at.elapsed() > GIVE_UP {
                    misses += 1;
                    break;
                }
            }
        }
        owner.delete_token(name.as_str()).await.map_err(io)?;
    }
    println!(
        "revocation propagation, {rounds} rounds x {} reader(s): p50 {} µs  p99 {} µs  max {} µs  misses (> {GIVE_UP:?}) {misses}",
        readers.len(),
        delays.value_at_quantile(0.5),
        delays.value_at_quantile(0.99),
        delays.max()
    );
    Ok(())
}
