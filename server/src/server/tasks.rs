//! The server's background work on the worker runtime: writing handed-over
//! token uses to the store, deleting expired tokens, announcing tokens about
//! to expire, and SIGHUP reloads.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use latchkey_protocol::ext::TokenStatus;

use crate::auth::policy::TokenPolicy;
use crate::auth::users::Users;
use crate::command::Context;
use crate::config::Config;
use crate::datadir::RootCredentials;
use crate::store::{Change, Outcome, WriterHandle};

/// Writes the token uses connections handed over to the log, every
/// `interval` (`[personal_access_token] last_used_flush_interval`).
pub(super) async fn flush_last_used(ctx: Arc<Context>, interval: Duration) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        write_last_used(&ctx).await;
    }
}

/// Sends the handed-over last uses to the writer. They stay visible (in
/// the ledger) until the writer has applied them; then the ones not
/// superseded meanwhile are dropped.
pub(super) async fn write_last_used(ctx: &Context) {
    let uses = ctx.uses.pending();
    if uses.is_empty() {
        return;
    }
    match ctx.writer.submit(Change::Touch(uses.clone())).await {
        Ok(_) => ctx.uses.settle(&uses),
        Err(code) => tracing::warn!(code = code.code(), "could not record last token uses"),
    }
}

/// How often the registry is scanned for tokens about to expire: a tenth
/// of the window, between once a second and once a minute.
fn expiry_scan_interval(window: Duration) -> Duration {
    (window / 10).clamp(Duration::from_secs(1), Duration::from_secs(60))
}

/// Announces each token that expires within `window` once, as the audit
/// event `token_expiring`, so an operator can route it to mail or chat
/// before someone's automation breaks. "Once" per token and expiry: a
/// token rotated to a new expiry inside the window is announced again;
/// after a restart, tokens still inside the window are announced anew (the
/// announcements are remembered in memory only). Each scan reads the whole
/// registry (O(tokens), at most once a second, once a minute for windows
/// of ten minutes and more), in short reads that never hold up a commit.
pub(super) async fn announce_expiring(ctx: Arc<Context>, window: Duration) {
    let window_us = u64::try_from(window.as_micros()).unwrap_or(u64::MAX);
    let mut announced: HashMap<u64, u64> = HashMap::new();
    let mut ticks = tokio::time::interval(expiry_scan_interval(window));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let now = crate::clock::now_us();
        let horizon = now.saturating_add(window_us);
        let mut expiring: Vec<(u64, u32, Arc<str>, u64)> = Vec::new();
        ctx.registry.scan(|entry| {
            if entry.status(now) == TokenStatus::Active
                && let Some(at) = entry.expiry_at_us.map(|at| at.get())
                && at <= horizon
            {
                expiring.push((entry.id, entry.user_id, entry.name.clone(), at));
            }
        });
        let mut still = HashMap::with_capacity(expiring.len());
        for (id, user_id, name, at) in expiring {
            if announced.get(&id) != Some(&at) {
                let expires_in_s = at.saturating_sub(now) / 1_000_000;
                tracing::warn!(target: "audit", event = "token_expiring", user_id, token_id = id, token_name = %name, expiry_at_us = at, expires_in_s);
            }
            still.insert(id, at);
        }
        announced = still;
    }
}

/// Tokens deleted per cleaner commit, so one pass never holds up other
/// writes for long (Iggy uses the same batch size).
const CLEANER_BATCH_TOKENS: usize = 256;

/// Every `interval`, deletes expired tokens through the writer, like any
/// other delete: logged, synced, visible to every reader.
pub(super) async fn clean_expired_tokens(writer: WriterHandle, interval: Duration) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        loop {
            match writer.submit(Change::PurgeExpired { max: CLEANER_BATCH_TOKENS }).await {
                Ok(Outcome::Purged { ids }) => {
                    for id in &ids {
                        tracing::info!(target: "audit", event = "token_expired_deleted", token_id = id);
                    }
                    if ids.len() < CLEANER_BATCH_TOKENS {
                        break;
                    }
                }
                Ok(other) => unreachable!("purge answered with {other:?}"),
                Err(code) => {
                    tracing::warn!(code = code.code(), "cleaner could not delete expired tokens");
                    break;
                }
            }
        }
    }
}

/// SIGHUP: re-reads the config file and the environment and applies the
/// users and the token policy. A config that does not load or validate
/// changes nothing; the error is logged.
pub(super) fn reload(path: Option<&std::path::Path>, root: &RootCredentials, ctx: &Context) {
    let loaded = (|| -> Result<(Users, TokenPolicy), String> {
        let mut config = Config::from_file(path).map_err(|error| error.to_string())?;
        config.apply_env(|key| std::env::var(key).ok()).map_err(|error| error.to_string())?;
        config.validate().map_err(|error| error.to_string())?;
        let users = Users::new(root, &config.users).map_err(|error| error.to_string())?;
        Ok((users, TokenPolicy::from_config(&config.personal_access_token)))
    })();
    match loaded {
        Ok((users, policy)) => {
            let (count, inactive) = (users.len(), users.inactive());
            ctx.auth.reload(users, policy);
            tracing::info!(
                users = count,
                inactive,
                ?policy,
                "SIGHUP: configuration reloaded (users, token policy)"
            );
        }
        Err(error) => tracing::error!(%error, "SIGHUP: configuration not reloaded; the running one stays"),
    }
}

/// Pets systemd's watchdog every `interval` while the writer takes changes.
/// A server whose writer stopped, or whose runtime no longer runs this
/// task, stops petting, and systemd restarts it (`WatchdogSec=`).
pub async fn pet_watchdog(ctx: Arc<Context>, interval: Duration) {
    let notifier = super::systemd::Notifier::from_env();
    let mut ticks = tokio::time::interval(interval);
    loop {
        ticks.tick().await;
        if ctx.writer.is_alive() {
            notifier.notify("WATCHDOG=1");
        } else {
            tracing::error!("the writer has stopped: no longer petting systemd's watchdog");
            return;
        }
    }
}
