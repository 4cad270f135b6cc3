//! The checks after a restart: root's full token list against the model
//! (every cycle, exactly), then token logins for every token the cycle
//! touched and a bounded sample of older ones. Each login connection that
//! ends up logged in as root also lists, so every shard replica those
//! connections reached must agree with the first list.

use std::net::SocketAddr;

use latchkey_sdk::{Client, ClientConfig, Error, ErrorCode};
use rand::Rng;

use crate::load::{REQUEST_TIMEOUT, ROOT_PASSWORD, ROOT_USERNAME};
use crate::model::{Expect, Expected, LoginCheck, Settled, Violation};

/// Connections the token logins are spread over.
const LOGIN_CONNECTIONS: usize = 4;

/// What a successful verification looked at.
#[derive(Debug, Clone, Copy, Default)]
pub struct Verified {
    pub listed: usize,
    pub logins: usize,
    pub settled: Settled,
}

pub async fn verify(
    address: SocketAddr,
    cycle: u32,
    expected: &mut Expected,
    sample_max: usize,
    rng: &mut impl Rng,
) -> Result<Verified, Violation> {
    let server =
        |expected: &str, error: Error| Violation::new(cycle, "restarted server", expected, error.to_string());
    let mut root = connect(address).await.map_err(|error| server("a connection", error))?;
    match root.login_user(ROOT_USERNAME, ROOT_PASSWORD).await {
        Ok(0) => {}
        Ok(user_id) => {
            let found = format!("user {user_id}");
            return Err(Violation::new(cycle, "restarted server", "password login as user 0", found));
        }
        Err(error) => return Err(server("password login as user 0", error)),
    }
    let listing =
        root.get_personal_access_tokens().await.map_err(|error| server("root's token list", error))?;
    let settled = expected.reconcile(cycle, &listing)?;

    let checks = expected.login_checks(sample_max, rng);
    let logins = checks.len();
    let mut shares: Vec<Vec<LoginCheck>> = vec![Vec::new(); LOGIN_CONNECTIONS];
    for (i, check) in checks.into_iter().enumerate() {
        shares[i % LOGIN_CONNECTIONS].push(check);
    }
    let handles: Vec<_> =
        shares.into_iter().map(|share| tokio::spawn(check_logins(address, cycle, share))).collect();
    let mut names: Vec<&str> = listing.iter().map(|entry| entry.name.as_str()).collect();
    names.sort_unstable();
    for (connection, handle) in handles.into_iter().enumerate() {
        let replica_names = handle.await.expect("login task panicked")?;
        if let Some(mut replica_names) = replica_names {
            replica_names.sort_unstable();
            if replica_names != names {
                return Err(replica_mismatch(cycle, connection, &names, &replica_names));
            }
        }
    }
    Ok(Verified { listed: listing.len(), logins, settled })
}

async fn connect(address: SocketAddr) -> Result<Client, Error> {
    let mut config = ClientConfig::new(address.to_string());
    config.request_timeout = REQUEST_TIMEOUT;
    Client::connect_with(config).await
}

/// Runs `checks` on one connection; returns that connection's token list if
/// any login on it succeeded (it is then logged in as root).
async fn check_logins(
    address: SocketAddr,
    cycle: u32,
    checks: Vec<LoginCheck>,
) -> Result<Option<Vec<String>>, Violation> {
    if checks.is_empty() {
        return Ok(None);
    }
    let mut client = connect(address).await.map_err(|error| {
        Violation::new(cycle, "restarted server", "a connection for token logins", error.to_string())
    })?;
    let mut logged_in = false;
    for check in checks {
        let result = client.login_with_personal_access_token(&check.token).await;
        let passed = match (&result, check.expect) {
            (Ok(0), Expect::Root) => true,
            (Err(error), Expect::NotFound) => error.code() == Some(ErrorCode::ResourceNotFound),
            _ => false,
        };
        if !passed {
            let expected = match check.expect {
                Expect::Root => format!("token login as user 0, since {}", check.because),
                Expect::NotFound => format!("token login refused with code 20, since {}", check.because),
            };
            let found = match result {
                Ok(user_id) => format!("token login accepted as user {user_id}"),
                Err(Error::Server { code, name }) => format!("token login refused with code {code} ({name})"),
                Err(error) => format!("token login failed: {error}"),
            };
            return Err(Violation::token(cycle, &check.name, expected, found));
        }
        logged_in |= result.is_ok();
    }
    if !logged_in {
        return Ok(None);
    }
    let listing = client.get_personal_access_tokens().await.map_err(|error| {
        Violation::new(
            cycle,
            "restarted server",
            "root's token list on a second connection",
            error.to_string(),
        )
    })?;
    Ok(Some(listing.into_iter().map(|entry| entry.name).collect()))
}

fn replica_mismatch(cycle: u32, connection: usize, first: &[&str], other: &[String]) -> Violation {
    let only_first = first.iter().find(|name| other.binary_search_by(|o| o.as_str().cmp(name)).is_err());
    let only_other = other.iter().find(|name| first.binary_search(&name.as_str()).is_err());
    let found = match (only_first, only_other) {
        (Some(name), _) => format!("{} names, without {name:?}", other.len()),
        (None, Some(name)) => format!("{} names, with {name:?} as well", other.len()),
        (None, None) => format!("{} names in a different multiplicity", other.len()),
    };
    Violation::new(
        cycle,
        format!("token list on login connection {connection}"),
        format!("the same {} names as root's first list (every shard replica agrees)", first.len()),
        found,
    )
}
