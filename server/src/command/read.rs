//! The commands that only read: GetMe, cluster metadata, token lists and
//! details (Authorize, also a read, is in `check.rs` with the other token
//! checks). All are answered from the registry's readers with
//! no lock, no disk and no message to the writer.

use std::sync::Arc;

use latchkey_protocol::body::{
    ClientDetails, ClusterMetadata, ClusterNode, NODE_ROLE_LEADER, NODE_STATUS_HEALTHY,
    PersonalAccessTokenInfo, PersonalAccessTokens, TRANSPORT_TCP,
};
use latchkey_protocol::ext::{GetToken, ListTokens, TokenDetails, TokenPage, TokenSelector, TokenStatus};
use latchkey_protocol::{ErrorCode, scope};

use super::{Context, Need, ReplyBody, Session};
use crate::auth::policy::LIST_PAGE_TOKENS_MAX;
use crate::clock::now_us;
use crate::registry::{LastUsed, TokenEntry};

/// GetMe (121): the caller's client id, user and address.
pub(super) fn me(session: &mut Session, ctx: &Context) -> Result<ReplyBody, ErrorCode> {
    Ok(ReplyBody::Me(ClientDetails {
        client_id: session.client_id(),
        user_id: session.allowed(ctx, Need::Scope(scope::ME_READ))?,
        transport: TRANSPORT_TCP,
        address: session.peer().to_string(),
        consumer_groups: Vec::new(),
    }))
}

/// Iggy's token list (41): names and expiries of the caller's tokens.
pub(super) fn iggy_tokens(session: &mut Session, ctx: &Context) -> Result<ReplyBody, ErrorCode> {
    let user_id = session.allowed(ctx, Need::Scope(scope::TOKENS_READ))?;
    // The list has no pages, and a user may hold up to `max_tokens_per_user`
    // tokens: the read only takes the entries (one count each), and the
    // reply is built after it, so the writer is not held up by it. One read,
    // so the list is one moment's (no token twice, none renamed away).
    let shared: Vec<Arc<TokenEntry>> =
        ctx.registry.read(|replica| replica.shared_for(user_id).cloned().collect());
    let entries = shared
        .iter()
        .map(|token| PersonalAccessTokenInfo {
            name: token.name.to_string(),
            expiry_at_us: token.expiry_at_us.map(|at| at.get()),
        })
        .collect();
    Ok(ReplyBody::Tokens(PersonalAccessTokens(entries)))
}

/// Code 9101: one of the caller's tokens, by id or name.
pub(super) fn get_token(get: GetToken, session: &mut Session, ctx: &Context) -> Result<ReplyBody, ErrorCode> {
    let user_id = session.allowed(ctx, Need::Scope(scope::TOKENS_READ))?;
    let now = now_us();
    ctx.registry.read(|replica| {
        let found = match &get.token {
            TokenSelector::Id(id) => replica.by_user_and_id(user_id, *id),
            TokenSelector::Name(name) => replica.by_name(user_id, name),
        };
        let (_, entry) = found.ok_or(ErrorCode::ResourceNotFound)?;
        Ok(ReplyBody::Details(Box::new(details(entry, session.last_used(ctx, replica, entry.id), now))))
    })
}

/// Everything about a token but its secret.
fn details(entry: &TokenEntry, last_used: Option<LastUsed>, now_us: u64) -> TokenDetails {
    TokenDetails {
        id: entry.id,
        name: entry.name.to_string(),
        description: entry.description().to_owned(),
        status: entry.status(now_us),
        created_at_us: entry.created_at_us,
        expires_at_us: entry.expiry_at_us.map_or(0, |at| at.get()),
        revoked_at_us: entry.revoked_at_us.map_or(0, |at| at.get()),
        last_used_at_us: last_used.map_or(0, |used| used.at_us),
        last_used_address: last_used.map_or_else(String::new, |used| used.peer.to_string()),
        scopes: entry.scopes().iter().map(|scope| scope.to_string()).collect(),
        networks: entry.networks().iter().map(|network| network.to_string()).collect(),
    }
}

/// Code 9102: one page of the caller's tokens in id order.
pub(super) fn list_tokens(
    list: ListTokens,
    session: &mut Session,
    ctx: &Context,
) -> Result<ReplyBody, ErrorCode> {
    let user_id = session.allowed(ctx, Need::Scope(scope::TOKENS_READ))?;
    Ok(ReplyBody::Page(page(list, None, user_id, session, ctx)))
}

/// ListTokens with one more filter the binary protocol does not carry:
/// only active tokens that expire at or before `expiring_before_us` (the
/// REST API's `expiring_within`). The same checks and paging as 9102.
pub fn list_tokens_expiring(
    list: ListTokens,
    expiring_before_us: u64,
    session: &mut Session,
    ctx: &Context,
) -> Result<TokenPage, ErrorCode> {
    let user_id = session.allowed(ctx, Need::Scope(scope::TOKENS_READ))?;
    Ok(page(list, Some(expiring_before_us), user_id, session, ctx))
}

fn page(
    list: ListTokens,
    expiring_before_us: Option<u64>,
    user_id: u32,
    session: &Session,
    ctx: &Context,
) -> TokenPage {
    let limit = match list.limit as usize {
        0 => LIST_PAGE_TOKENS_MAX,
        limit => limit.min(LIST_PAGE_TOKENS_MAX),
    };
    let now = now_us();
    ctx.registry.read(|replica| {
        let listed = replica
            .list_for(user_id)
            .filter(|entry| entry.id > list.after_id && list.filter.admits(entry.status(now)))
            .filter(|entry| {
                expiring_before_us.is_none_or(|before| {
                    entry.status(now) == TokenStatus::Active
                        && entry.expiry_at_us.is_some_and(|at| at.get() <= before)
                })
            });
        let mut entries = lowest_ids(listed, limit + 1);
        let more = entries.len() > limit;
        entries.truncate(limit);
        let next_after_id = if more { entries.last().map_or(0, |entry| entry.id) } else { 0 };
        // One look at the use ledger for the whole page (up to 1,000 tokens).
        let ids: Vec<u64> = entries.iter().map(|entry| entry.id).collect();
        let last_used = session.last_used_of(ctx, replica, &ids);
        let tokens = entries
            .into_iter()
            .zip(last_used)
            .map(|(entry, last_used)| details(entry, last_used, now))
            .collect();
        TokenPage { tokens, next_after_id }
    })
}

/// The `count` tokens of `listed` with the lowest ids, in id order, in one
/// pass that holds at most `2 × count` of them: whenever that many wait,
/// the `count` lowest are selected (linear, no sort) and the rest dropped,
/// and from then on a token above the highest id kept is passed over with
/// one comparison. So a page costs no copy and no sort of all of a user's
/// tokens (up to `max_tokens_per_user`), only of the page.
fn lowest_ids<'a>(listed: impl Iterator<Item = &'a TokenEntry>, count: usize) -> Vec<&'a TokenEntry> {
    if count == 0 {
        return Vec::new();
    }
    let mut kept: Vec<&TokenEntry> = Vec::with_capacity(2 * count);
    let mut highest_kept = u64::MAX;
    for entry in listed {
        if entry.id > highest_kept {
            continue;
        }
        kept.push(entry);
        if kept.len() == 2 * count {
            kept.select_nth_unstable_by_key(count - 1, |entry| entry.id);
            kept.truncate(count);
            highest_kept = kept[count - 1].id;
        }
    }
    kept.sort_unstable_by_key(|entry| entry.id);
    kept.truncate(count);
    kept
}

/// A one-node roster naming this server as the healthy leader (spec §1.5),
/// so the Iggy SDKs never try to redirect.
pub(super) fn cluster_metadata(ctx: &Context) -> ClusterMetadata {
    let address = ctx.local_addr;
    ClusterMetadata {
        name: "latchkey".to_owned(),
        nodes: vec![ClusterNode {
            name: "latchkey-node".to_owned(),
            ip: address.ip().to_string(),
            tcp_port: address.port(),
            quic_port: 0,
            http_port: 0,
            websocket_port: 0,
            role: NODE_ROLE_LEADER,
            status: NODE_STATUS_HEALTHY,
        }],
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use proptest::prelude::*;

    use super::lowest_ids;
    use crate::registry::TokenEntry;

    fn entry(id: u64) -> TokenEntry {
        TokenEntry {
            hash: [0; 32],
            id,
            user_id: 1,
            name: Arc::from(format!("t{id}")),
            created_at_us: 1,
            expiry_at_us: None,
            revoked_at_us: None,
            extras: None,
        }
    }

    proptest! {
        /// The page's tokens are what sorting every listed token by id and
        /// taking the first `count` gives, whatever order they are listed in
        /// (a user's tokens come in name order, not id order).
        #[test]
        fn the_lowest_ids_are_those_of_a_whole_sort(
            ids in proptest::collection::hash_set(1u64..10_000, 0..200),
            count in 0usize..40,
        ) {
            let entries: Vec<TokenEntry> = ids.iter().map(|id| entry(*id)).collect();
            let kept: Vec<u64> = lowest_ids(entries.iter(), count).iter().map(|entry| entry.id).collect();
            let mut sorted: Vec<u64> = ids.into_iter().collect();
            sorted.sort_unstable();
            sorted.truncate(count);
            prop_assert_eq!(kept, sorted);
        }
    }
}
