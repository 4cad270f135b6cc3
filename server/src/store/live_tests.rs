//! The compactor's fold ([`LiveRecords`]) against a full replay into a
//! registry: for random histories of every change the writer makes, the
//! snapshot it encodes is byte for byte the one a registry replay gives.

use std::fs;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use latchkey_protocol::ext::TokenSelector;
use proptest::prelude::*;

use super::compaction::CompactionPolicy;
use super::live::{IdIndex, LiveRecords, Named, Registry, SortKey, Tokens, sort_by_user_and_name};
use super::log::{LOG_FILE, encode_snapshot};
use super::recovery::{open, replay_complete};
use super::writer::{Resolver, StoreLimits};
use super::{AccessChange, Change, Journal, NewToken};
use crate::registry::{LastUsed, Replica, TokenExtras, TokenRecord};

const START_US: u64 = 1_700_000_000_000_000;
const USERS: u32 = 3;
/// Out of order, and three that share their first 16 bytes (the compactor
/// sorts by those first, then by whole names): one of exactly 16 bytes and
/// two longer ones that differ after it.
const NAMES: [&str; 5] = ["b", "sixteen-bytes-abz", "a", "sixteen-bytes-ab", "sixteen-bytes-aba"];

/// One change asked of the writer, on a small set of users and names so
/// that changes often meet the same token.
#[derive(Debug, Clone)]
enum Op {
    Create { user: u32, name: usize, lifetime_s: u64, described: bool },
    Delete { user: u32, name: usize },
    Revoke { user: u32, name: usize },
    Update { user: u32, name: usize, rename: Option<usize>, describe: Option<u8> },
    Rotate { user: u32, name: usize, lifetime_s: u64, reactivate: bool },
    Access { user: u32, name: usize, scope: Option<u8>, network: Option<u8>, clear: bool },
    Touch { user: u32, name: usize, ago_us: u64 },
    RevokeAll { user: u32 },
    DeleteAll { user: u32 },
    Purge,
}

fn op() -> impl Strategy<Value = Op> {
    let user = 0..USERS;
    let name = 0..NAMES.len();
    let lifetime_s = prop_oneof![Just(0u64), 1..30u64];
    prop_oneof![
        4 => (user.clone(), name.clone(), lifetime_s.clone(), any::<bool>())
            .prop_map(|(user, name, lifetime_s, described)| Op::Create { user, name, lifetime_s, described }),
        1 => (user.clone(), name.clone()).prop_map(|(user, name)| Op::Delete { user, name }),
        1 => (user.clone(), name.clone()).prop_map(|(user, name)| Op::Revoke { user, name }),
        1 => (user.clone(), name.clone(), proptest::option::of(0..NAMES.len()), proptest::option::of(0..3u8))
            .prop_map(|(user, name, rename, describe)| Op::Update { user, name, rename, describe }),
        1 => (user.clone(), name.clone(), lifetime_s, any::<bool>())
            .prop_map(|(user, name, lifetime_s, reactivate)| Op::Rotate { user, name, lifetime_s, reactivate }),
        1 => (user.clone(), name.clone(), proptest::option::of(0..3u8), proptest::option::of(0..3u8), any::<bool>())
            .prop_map(|(user, name, scope, network, clear)| Op::Access { user, name, scope, network, clear }),
        2 => (user.clone(), name.clone(), 0..3_000_000u64).prop_map(|(user, name, ago_us)| Op::Touch { user, name, ago_us }),
        1 => user.clone().prop_map(|user| Op::RevokeAll { user }),
        1 => user.prop_map(|user| Op::DeleteAll { user }),
        1 => Just(Op::Purge),
    ]
}

/// The change `op` asks for, against the resolver's state (a touch needs the
/// token's current id and hash); `serial` makes each new hash unique.
fn change(op: &Op, resolver: &Resolver, now_us: u64, serial: u64) -> Option<Change> {
    let selector = |name: usize| TokenSelector::Name(NAMES[name].into());
    let mut fresh_hash = [0u8; 32];
    fresh_hash[..8].copy_from_slice(&serial.to_le_bytes());
    fresh_hash[31] = 0x5A;
    Some(match *op {
        Op::Create { user, name, lifetime_s, described } => Change::Create(NewToken {
            user_id: user,
            name: NAMES[name].into(),
            hash: fresh_hash,
            expiry_us: lifetime_s * 1_000_000,
            extras: TokenExtras {
                description: if described { "made".into() } else { "".into() },
                ..TokenExtras::default()
            }
            .shared(),
        }),
        Op::Delete { user, name } => Change::Delete { user_id: user, token: selector(name) },
        Op::Revoke { user, name } => Change::Revoke { user_id: user, token: selector(name) },
        Op::Update { user, name, rename, describe } => Change::Update {
            user_id: user,
            token: selector(name),
            name: rename.map(|name| NAMES[name].to_owned()),
            description: describe.map(|text| format!("text {text}")),
        },
        Op::Rotate { user, name, lifetime_s, reactivate } => Change::Rotate {
            user_id: user,
            token: selector(name),
            new_hash: fresh_hash,
            expiry_us: lifetime_s * 1_000_000,
            max_lifetime_us: None,
            reactivate,
        },
        Op::Access { user, name, scope, network, clear } => {
            let mut edits = Vec::new();
            if clear {
                edits.push(AccessChange::ClearNetworks);
            }
            if let Some(scope) = scope {
                edits.push(AccessChange::AddScope(format!("stream:s{scope}:read").into()));
            }
            if let Some(network) = network {
                edits.push(AccessChange::AddNetwork(format!("10.{network}.0.0/16").parse().unwrap()));
            }
            Change::EditAccess { user_id: user, token: selector(name), edits, may_grant_full_access: true }
        }
        Op::Touch { user, name, ago_us } => {
            let (hash, entry) = resolver.state().by_name(user, NAMES[name])?;
            let peer: SocketAddr = format!("192.0.2.{}:4{}", user + 1, name).parse().unwrap();
            Change::Touch(vec![(entry.id, *hash, LastUsed { at_us: now_us - ago_us, peer })])
        }
        Op::RevokeAll { user } => Change::RevokeAll { user_id: user },
        Op::DeleteAll { user } => Change::DeleteAll { user_id: user },
        Op::Purge => Change::PurgeExpired { max: 3 },
    })
}

/// Commits `history` (each inner list one batch) to the log in `dir`
/// through the writer's own rules, continuing from what the log holds.
fn commit(dir: &Path, history: &[Vec<Op>], start_us: u64) -> u64 {
    let never = CompactionPolicy { min_records: u64::MAX, dead_ratio: 1.0 };
    let mut recovered = open(dir, never, None).unwrap();
    let limits = StoreLimits { max_tokens_per_user: 4 };
    let mut resolver = Resolver::new(recovered.state, recovered.next_id, limits);
    let mut now_us = start_us;
    for (index, batch) in history.iter().enumerate() {
        now_us += 700_000;
        let mut mutations = Vec::new();
        for (serial, op) in batch.iter().enumerate() {
            let serial = now_us * 64 + serial as u64;
            if let Some(change) = change(op, &resolver, now_us, serial) {
                let _ = resolver.resolve(&change, now_us, &mut mutations);
            }
        }
        if !mutations.is_empty() {
            recovered.log.append(&mutations, now_us).unwrap_or_else(|error| panic!("batch {index}: {error}"));
        }
    }
    now_us
}

/// The snapshot the compactor makes of the file at `path`, and the one a
/// full registry replay gives, with the registry itself.
fn both_snapshots(path: &Path) -> (Vec<u8>, Vec<u8>, Replica) {
    let bytes = fs::read(path).unwrap();
    let full = replay_complete(path, &bytes, Registry::for_file_of(bytes.len())).unwrap();
    let folded = replay_complete(path, &bytes, LiveRecords::of(&bytes, 0)).unwrap();
    assert_eq!(folded.tokens.len(), full.tokens.len());
    assert_eq!((folded.seq, folded.next_id), (full.seq, full.next_id));
    let (from_fold, records) = folded.tokens.encode_snapshot(folded.next_id, folded.seq, 7).unwrap();
    assert_eq!(records, full.tokens.len() as u64 + 1);
    let tokens: Vec<TokenRecord> = full.tokens.state().records().collect();
    let order = |token: &TokenRecord| (token.user_id, Arc::clone(&token.name));
    assert!(tokens.windows(2).all(|pair| order(&pair[0]) < order(&pair[1])), "records in user, name order");
    let from_registry = encode_snapshot(&tokens, full.next_id, full.seq, 7);
    (from_fold, from_registry, full.tokens.finish())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Twice per case: on a log of appends only, and on a compacted file (the
    /// fold's own snapshot put in place of the log) with more appends that
    /// change, rotate, touch and delete the snapshot's tokens.
    #[test]
    fn live_records_make_the_snapshot_a_full_replay_makes(
        first in proptest::collection::vec(proptest::collection::vec(op(), 1..6), 1..40),
        then in proptest::collection::vec(proptest::collection::vec(op(), 1..6), 1..40),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LOG_FILE);
        let now_us = commit(dir.path(), &first, START_US);
        let (from_fold, from_registry, state) = both_snapshots(&path);
        prop_assert!(from_fold == from_registry, "the fold's snapshot differs from a full replay's");

        fs::write(&path, &from_fold).unwrap();
        prop_assert_eq!(&open(dir.path(), CompactionPolicy { min_records: u64::MAX, dead_ratio: 1.0 }, None).unwrap().state, &state);
        commit(dir.path(), &then, now_us);
        let (from_fold, from_registry, state) = both_snapshots(&path);
        prop_assert!(from_fold == from_registry, "after a snapshot, the fold's snapshot differs");
        // And the snapshot replays to the state it was made from.
        let snapshot_path = dir.path().join("snapshot.log");
        fs::write(&snapshot_path, &from_fold).unwrap();
        let replayed = replay_complete(&snapshot_path, &from_fold, Registry::for_file_of(from_fold.len())).unwrap();
        prop_assert_eq!(&replayed.tokens.finish(), &state);
    }
}

/// The replay's id index answers the same whether its ids are dense (a
/// vector) or far apart (moved to a map on the first far id), through
/// inserts, new hashes and removals.
#[test]
fn the_id_index_answers_alike_dense_and_after_moving_to_a_map() {
    let hash = |n: u64| {
        let mut hash = [0u8; 32];
        hash[..8].copy_from_slice(&n.to_le_bytes());
        hash
    };
    let mut index = IdIndex::with_capacity(4);
    let mut expected = std::collections::HashMap::new();
    let check = |index: &IdIndex, expected: &std::collections::HashMap<u64, [u8; 32]>| {
        for id in [0, 1, 2, 3, 5, 10, 999, 5_000_000, u64::MAX] {
            assert_eq!(index.get(id), expected.get(&id), "id {id}");
        }
    };
    for id in [1, 2, 3, 5, 10, 999] {
        index.insert(id, hash(id));
        expected.insert(id, hash(id));
    }
    index.insert(3, hash(33));
    expected.insert(3, hash(33));
    index.remove(2);
    expected.remove(&2);
    index.remove(4);
    check(&index, &expected);
    assert!(matches!(index, IdIndex::Dense { live: 5, .. }), "{index:?}");
    // Past twice the live ids and the slack: a map from here on.
    index.insert(5_000_000, hash(5));
    expected.insert(5_000_000, hash(5));
    assert!(matches!(index, IdIndex::Sparse(_)));
    check(&index, &expected);
    index.insert(u64::MAX, hash(7));
    index.remove(u64::MAX);
    index.remove(10);
    expected.remove(&10);
    check(&index, &expected);
}

/// A snapshot lists its tokens in no order: ids anywhere within the room
/// reserved for the file keep the id index a vector, whatever comes first.
#[test]
fn ids_in_no_order_within_the_reserved_room_keep_the_id_index_a_vector() {
    let ids = 3_000_000u64;
    let mut index = IdIndex::with_capacity(ids as usize);
    let mut hash = [0u8; 32];
    // A stride coprime with the count visits every id once, far apart.
    for n in 0..ids {
        let id = 1 + (n * 1_000_003) % ids;
        hash[..8].copy_from_slice(&id.to_le_bytes());
        index.insert(id, hash);
    }
    assert!(matches!(index, IdIndex::Dense { live, .. } if live == ids as usize));
    hash[..8].copy_from_slice(&2_999_999u64.to_le_bytes());
    assert_eq!(index.get(2_999_999), Some(&hash));
}

/// A name to sort, on its own.
#[derive(Debug)]
struct Name(u32, Vec<u8>);

impl Named for Name {
    fn name<'s>(&'s self, _: &'s [u8]) -> &'s [u8] {
        &self.1
    }
}

proptest! {
    /// The snapshot's and the replay's sort gives exactly the order of user
    /// id, then name bytes: names that share 15, 16, 17 or 40 bytes, runs
    /// longer than the short run it sorts whole, zero bytes that look like
    /// the key's padding, and names used twice.
    #[test]
    fn the_name_sort_is_the_order_of_user_and_name_bytes(
        names in proptest::collection::vec(
            (
                0..3u32,
                proptest::sample::select(vec![0usize, 15, 16, 17, 40]),
                proptest::collection::vec(proptest::sample::select(vec![0u8, b'a', b'b', 0xFF]), 0..40),
            ),
            0..300,
        )
    ) {
        let names: Vec<(u32, Vec<u8>)> = names
            .into_iter()
            .map(|(user, shared, tail)| (user, [vec![b'p'; shared], tail].concat()))
            .collect();
        let mut items: Vec<(SortKey, Name)> =
            names.iter().map(|(user, name)| (SortKey::of(*user, name), Name(*user, name.clone()))).collect();
        sort_by_user_and_name(&mut items, &[]);
        let mut expected = names;
        expected.sort();
        let sorted: Vec<(u32, Vec<u8>)> = items.into_iter().map(|(_, Name(user, name))| (user, name)).collect();
        prop_assert_eq!(sorted, expected);
    }
}
