//! The writer on a gated journal: nothing is answered before the sync,
//! a failed sync stops every later change, and the rules hold in a batch.

use std::io;
use std::sync::mpsc as std_mpsc;
use std::time::Duration;

use std::sync::Arc;

use latchkey_protocol::ErrorCode;
use latchkey_protocol::ext::TokenSelector;

use super::writer::{StoreLimits, WriterHandle, spawn};
use super::{Change, Journal, NewToken, Outcome};
use crate::registry::{Batch, Mutation, Publish, Replica};

/// A journal whose append blocks until the test releases it.
struct GatedJournal {
    entered: std_mpsc::Sender<usize>,
    release: std_mpsc::Receiver<io::Result<()>>,
}

impl Journal for GatedJournal {
    fn append(&mut self, batch: &[Mutation], _commit_at_us: u64) -> io::Result<()> {
        self.entered.send(batch.len()).unwrap();
        self.release.recv().unwrap()
    }
}

struct Recorder(std_mpsc::Sender<Arc<[Mutation]>>);

impl Publish for Recorder {
    fn publish(&mut self, batch: Batch) {
        self.0.send(batch.mutations).unwrap();
    }

    fn replace(&mut self, _state: Replica) {
        unreachable!("the file writer never replaces the registry");
    }
}

struct Harness {
    handle: WriterHandle,
    entered: std_mpsc::Receiver<usize>,
    release: std_mpsc::Sender<io::Result<()>>,
    published: std_mpsc::Receiver<Arc<[Mutation]>>,
    runtime: tokio::runtime::Runtime,
}

fn harness(max_tokens_per_user: u32) -> Harness {
    let (entered_tx, entered) = std_mpsc::channel();
    let (release, release_rx) = std_mpsc::channel();
    let (published_tx, published) = std_mpsc::channel();
    let journal = GatedJournal { entered: entered_tx, release: release_rx };
    let limits = StoreLimits { max_tokens_per_user };
    let (handle, _join) = spawn(Replica::new(), 1, limits, journal, Recorder(published_tx));
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    Harness { handle, entered, release, published, runtime }
}

fn create(user_id: u32, name: &str, seed: u8) -> Change {
    Change::Create(NewToken { user_id, name: name.into(), hash: [seed; 32], expiry_us: 0, extras: None })
}

#[test]
fn a_change_is_not_acknowledged_before_its_sync_returns() {
    let harness = harness(10);
    let handle = harness.handle.clone();
    let task = harness.runtime.spawn(async move { handle.submit(create(1, "abc", 1)).await });
    assert_eq!(harness.entered.recv_timeout(Duration::from_secs(5)).unwrap(), 1);
    // The journal is blocked in append: nothing may be published or answered.
    std::thread::sleep(Duration::from_millis(50));
    assert!(!task.is_finished(), "acknowledged before the sync returned");
    assert!(harness.published.try_recv().is_err(), "published before the sync returned");
    harness.release.send(Ok(())).unwrap();
    let outcome = harness.runtime.block_on(task).unwrap().unwrap();
    let Outcome::Created(record) = outcome else { panic!("{outcome:?}") };
    assert_eq!(record.id, 1);
    assert_eq!(harness.published.recv().unwrap().len(), 1);
}

#[test]
fn a_failed_sync_is_never_acknowledged_and_stops_further_changes() {
    let harness = harness(10);
    let handle = harness.handle.clone();
    let task = harness.runtime.spawn(async move { handle.submit(create(1, "abc", 1)).await });
    harness.entered.recv().unwrap();
    harness.release.send(Err(io::Error::other("EIO"))).unwrap();
    assert_eq!(harness.runtime.block_on(task).unwrap(), Err(ErrorCode::StorageUnavailable));
    assert!(harness.published.try_recv().is_err());
    // The writer now refuses everything without touching the journal.
    let result = harness.runtime.block_on(harness.handle.submit(create(1, "def", 2)));
    assert_eq!(result, Err(ErrorCode::StorageUnavailable));
    assert!(harness.entered.try_recv().is_err());
}

#[test]
fn limit_is_checked_before_duplicates_and_batches_see_each_other() {
    let harness = harness(2);
    // Release every append at once so the test only sees outcomes.
    for _ in 0..16 {
        harness.release.send(Ok(())).unwrap();
    }
    let submit = |change| harness.runtime.block_on(harness.handle.submit(change));
    assert!(matches!(submit(create(1, "one", 1)), Ok(Outcome::Created(_))));
    assert_eq!(submit(create(1, "one", 2)), Err(ErrorCode::PersonalAccessTokenAlreadyExists));
    assert!(matches!(submit(create(1, "two", 3)), Ok(Outcome::Created(_))));
    assert_eq!(submit(create(1, "one", 4)), Err(ErrorCode::PersonalAccessTokensLimitReached));
    assert_eq!(submit(create(1, "new", 5)), Err(ErrorCode::PersonalAccessTokensLimitReached));
    assert!(matches!(submit(create(2, "one", 6)), Ok(Outcome::Created(_))));
    let deleted = submit(Change::Delete { user_id: 1, token: TokenSelector::Name("one".into()) });
    assert_eq!(deleted, Ok(Outcome::Deleted { id: 1 }));
    assert_eq!(
        submit(Change::Delete { user_id: 1, token: TokenSelector::Name("one".into()) }),
        Err(ErrorCode::ResourceNotFound)
    );
    let overflow = Change::Create(NewToken {
        user_id: 3,
        name: "x".into(),
        hash: [9; 32],
        expiry_us: u64::MAX - 1,
        extras: None,
    });
    assert_eq!(submit(overflow), Err(ErrorCode::InvalidPersonalAccessTokenExpiry));
}

#[test]
fn purge_deletes_only_expired_tokens_and_never_a_recreated_one() {
    let harness = harness(10);
    for _ in 0..8 {
        harness.release.send(Ok(())).unwrap();
    }
    let submit = |change| harness.runtime.block_on(harness.handle.submit(change));
    let Ok(Outcome::Created(keep)) = submit(create(1, "keep", 1)) else { panic!() };
    let short = |seed| {
        Change::Create(NewToken {
            user_id: 1,
            name: "short".into(),
            hash: [seed; 32],
            expiry_us: 1,
            extras: None,
        })
    };
    let Ok(Outcome::Created(expired)) = submit(short(2)) else { panic!() };
    std::thread::sleep(Duration::from_millis(2));
    assert_eq!(submit(Change::PurgeExpired { max: 10 }), Ok(Outcome::Purged { ids: vec![expired.id] }));
    // Re-created under the same name, not expired: the next purge leaves it.
    let recreated = Change::Create(NewToken {
        user_id: 1,
        name: "short".into(),
        hash: [3; 32],
        expiry_us: 0,
        extras: None,
    });
    let Ok(Outcome::Created(recreated)) = submit(recreated) else { panic!() };
    assert_eq!(submit(Change::PurgeExpired { max: 10 }), Ok(Outcome::Purged { ids: vec![] }));
    assert_ne!(recreated.id, expired.id);
    assert_ne!(keep.id, expired.id);
    let published: Vec<_> = harness.published.try_iter().flat_map(|b| b.to_vec()).collect();
    assert!(published.contains(&Mutation::Delete { id: expired.id, hash: expired.hash }));
    assert!(!published.iter().any(|m| matches!(m, Mutation::Delete { id, .. } if *id == recreated.id)));
}

/// Token `id` of `user_id`, named `t<id>`, its hash `id`'s byte 32 times,
/// expiring at `expiry` µs (0: never).
fn token_expiring_at(id: u64, user_id: u32, expiry: u64) -> crate::registry::TokenRecord {
    crate::registry::TokenRecord {
        id,
        user_id,
        name: format!("t{id}").into(),
        hash: [id as u8; 32],
        created_at_us: 1,
        expiry_at_us: std::num::NonZeroU64::new(expiry),
        revoked_at_us: None,
        extras: None,
        last_used: None,
    }
}

/// The purge reads the writer's expiry index, not a scan: after creates,
/// rotations (a new expiry and hash), deletes and revokes, on a state
/// loaded at start and on one built by commits, it deletes exactly the
/// tokens a scan would find expired, soonest first, at most `max`.
#[test]
fn purge_takes_exactly_the_expired_tokens_from_the_expiry_index() {
    use std::num::NonZeroU64;

    use super::writer::Resolver;

    let token = |id: u64, expiry: u64| token_expiring_at(id, (id % 3) as u32, expiry);
    let limits = StoreLimits { max_tokens_per_user: 1000 };
    // Loaded at start: expiries 0 (never), 10, 20, … for ids 1..=60.
    let mut loaded = Replica::new();
    for id in 1..=60u64 {
        loaded.apply(&Mutation::Create(token(id, (id % 7) * 10)));
    }
    let mut resolver = Resolver::new(loaded, 61, limits);
    let mut changes = Vec::new();
    for id in 61..=80u64 {
        changes.push(Mutation::Create(token(id, (id % 5) * 15)));
    }
    // Token 8 (expiry 10) rotated to never; token 9 (20) to 1000; 15 (10)
    // deleted; 16 (20) revoked (still expired, so still purged).
    changes.push(Mutation::Rotate { id: 8, hash: [8; 32], new_hash: [208; 32], expiry_at_us: None });
    changes.push(Mutation::Rotate {
        id: 9,
        hash: [9; 32],
        new_hash: [209; 32],
        expiry_at_us: NonZeroU64::new(1000),
    });
    changes.push(Mutation::Delete { id: 15, hash: [15; 32] });
    changes.push(Mutation::Revoke { id: 16, hash: [16; 32], at_us: NonZeroU64::new(5).unwrap() });
    resolver.apply(&changes);
    let now = 40;
    let mut scan: Vec<(u64, u64)> = resolver
        .state()
        .iter()
        .filter(|(_, entry)| entry.is_expired(now))
        .map(|(_, entry)| (entry.expiry_at_us.unwrap().get(), entry.id))
        .collect();
    scan.sort();
    assert!(scan.len() > 20, "{scan:?}");
    let mut purged = Vec::new();
    loop {
        let mut mutations = Vec::new();
        let Ok(Outcome::Purged { ids }) =
            resolver.resolve(&Change::PurgeExpired { max: 7 }, now, &mut mutations)
        else {
            panic!("purge refused")
        };
        assert!(ids.len() <= 7);
        if ids.is_empty() {
            break;
        }
        purged.extend(ids);
    }
    let expected: Vec<u64> = scan.iter().map(|&(_, id)| id).collect();
    assert_eq!(purged, expected, "soonest expired first, each once, nothing else");
    assert!(!purged.contains(&8) && !purged.contains(&9) && !purged.contains(&15) && purged.contains(&16));
    assert!(resolver.state().iter().all(|(_, entry)| !entry.is_expired(now)));
}

mod access_and_reactivation {
    use std::num::NonZeroU64;

    use latchkey_protocol::ErrorCode;
    use latchkey_protocol::ext::{TokenSelector, TokenStatus};

    use super::super::writer::{Resolver, StoreLimits};
    use super::super::{AccessChange, Change, Outcome};
    use crate::registry::{
        Mutation, Replica, TOKEN_NETWORKS_MAX, TOKEN_SCOPES_MAX, TokenExtras, TokenHash, TokenRecord,
    };

    const NOW: u64 = 1_000_000;

    /// User 1's token `id`, hash `[id; 32]`, with these scopes and
    /// networks and a description.
    fn token(id: u64, scopes: &[&str], networks: &[&str]) -> TokenRecord {
        TokenRecord {
            id,
            user_id: 1,
            name: format!("token-{id}").into(),
            hash: [id as u8; 32],
            created_at_us: 1,
            expiry_at_us: None,
            revoked_at_us: None,
            extras: TokenExtras {
                description: "kept".into(),
                scopes: scopes.iter().map(|scope| Box::from(*scope)).collect(),
                networks: networks.iter().map(|network| network.parse().unwrap()).collect(),
            }
            .shared(),
            last_used: None,
        }
    }

    fn resolver(tokens: &[TokenRecord]) -> Resolver {
        let mut state = Replica::new();
        for token in tokens {
            state.apply(&Mutation::Create(token.clone()));
        }
        Resolver::new(state, 100, StoreLimits { max_tokens_per_user: 100 })
    }

    fn edit(id: u64, edits: Vec<AccessChange>, may_grant_full_access: bool) -> Change {
        Change::EditAccess { user_id: 1, token: TokenSelector::Id(id), edits, may_grant_full_access }
    }

    fn scope(text: &str) -> Box<str> {
        text.into()
    }

    /// Resolves `change` and returns its outcome and what it wrote.
    fn run(resolver: &mut Resolver, change: &Change) -> (Result<Outcome, ErrorCode>, Vec<Mutation>) {
        let mut mutations = Vec::new();
        let outcome = resolver.resolve(change, NOW, &mut mutations);
        (outcome, mutations)
    }

    fn scopes_of(resolver: &Resolver, id: u64) -> Vec<String> {
        let (_, entry) = resolver.state().by_user_and_id(1, id).unwrap();
        entry.scopes().iter().map(ToString::to_string).collect()
    }

    fn networks_of(resolver: &Resolver, id: u64) -> Vec<String> {
        let (_, entry) = resolver.state().by_user_and_id(1, id).unwrap();
        entry.networks().iter().map(ToString::to_string).collect()
    }

    #[test]
    fn edits_apply_in_order_and_keep_the_rest_of_the_token() {
        let mut resolver = resolver(&[token(1, &["a:b:c", "tokens:read"], &["10.0.0.0/8"])]);
        let edits = vec![
            AccessChange::AddScope(scope("x:y:z")),
            AccessChange::AddScope(scope("a:b:c")),
            AccessChange::RemoveScope(scope("tokens:read")),
            AccessChange::RemoveScope(scope("not:held:here")),
            AccessChange::AddNetwork("192.0.2.7/32".parse().unwrap()),
            AccessChange::RemoveNetwork("10.0.0.0/8".parse().unwrap()),
        ];
        let (outcome, written) = run(&mut resolver, &edit(1, edits, true));
        let Ok(Outcome::AccessEdited { id: 1, changed: true, .. }) = outcome else { panic!("{outcome:?}") };
        assert!(matches!(written.as_slice(), [Mutation::Access { id: 1, .. }]), "{written:?}");
        assert_eq!(scopes_of(&resolver, 1), ["a:b:c", "x:y:z"]);
        assert_eq!(networks_of(&resolver, 1), ["192.0.2.7/32"]);
        let (_, entry) = resolver.state().by_user_and_id(1, 1).unwrap();
        assert_eq!((entry.description(), &*entry.name), ("kept", "token-1"));
        // Clear, then add: exactly what was added.
        let edits = vec![AccessChange::ClearScopes, AccessChange::AddScope(scope("me:read"))];
        run(&mut resolver, &edit(1, edits, true)).0.unwrap();
        assert_eq!(scopes_of(&resolver, 1), ["me:read"]);
        // Clear both lists: full access from anywhere, the description kept.
        let edits = vec![AccessChange::ClearScopes, AccessChange::ClearNetworks];
        run(&mut resolver, &edit(1, edits, true)).0.unwrap();
        let (_, entry) = resolver.state().by_user_and_id(1, 1).unwrap();
        assert!(entry.scopes().is_empty() && entry.networks().is_empty());
        assert_eq!(entry.description(), "kept");
    }

    #[test]
    fn an_edit_that_changes_nothing_writes_nothing() {
        let mut resolver = resolver(&[token(1, &["a:b:c"], &["10.0.0.0/8"]), token(2, &[], &[])]);
        let no_ops = [
            vec![],
            vec![AccessChange::AddScope(scope("a:b:c"))],
            vec![
                AccessChange::RemoveScope(scope("x:y:z")),
                AccessChange::RemoveNetwork("::1/128".parse().unwrap()),
            ],
            vec![AccessChange::AddScope(scope("x:y:z")), AccessChange::RemoveScope(scope("x:y:z"))],
            vec![AccessChange::AddNetwork("10.0.0.0/8".parse().unwrap())],
        ];
        for edits in no_ops {
            let (outcome, written) = run(&mut resolver, &edit(1, edits.clone(), true));
            assert!(matches!(outcome, Ok(Outcome::AccessEdited { changed: false, .. })), "{edits:?}");
            assert!(written.is_empty(), "{edits:?}: {written:?}");
        }
        // A token with no scopes, cleared, by a scoped session: nothing to
        // write, and nothing widened.
        let (outcome, written) = run(&mut resolver, &edit(2, vec![AccessChange::ClearScopes], false));
        assert!(matches!(outcome, Ok(Outcome::AccessEdited { changed: false, .. })), "{outcome:?}");
        assert!(written.is_empty());
    }

    #[test]
    fn the_result_is_held_to_the_token_bounds_and_the_caller_to_what_it_may_grant() {
        let mut resolver = resolver(&[token(1, &["a:b:c"], &[]), token(2, &[], &[])]);
        let many_scopes: Vec<AccessChange> =
            (0..TOKEN_SCOPES_MAX).map(|n| AccessChange::AddScope(format!("s:{n}:r").into())).collect();
        assert_eq!(run(&mut resolver, &edit(1, many_scopes.clone(), true)).0, Err(ErrorCode::InvalidScope));
        // 32 in all is fine once one is cleared first.
        let mut fits = vec![AccessChange::ClearScopes];
        fits.extend(many_scopes);
        run(&mut resolver, &edit(1, fits, true)).0.unwrap();
        assert_eq!(scopes_of(&resolver, 1).len(), TOKEN_SCOPES_MAX);
        let many_networks: Vec<AccessChange> = (0..=TOKEN_NETWORKS_MAX)
            .map(|n| AccessChange::AddNetwork(format!("10.0.{n}.0/24").parse().unwrap()))
            .collect();
        assert_eq!(run(&mut resolver, &edit(1, many_networks, true)).0, Err(ErrorCode::InvalidNetwork));
        // A scoped session may not turn a scoped token into a full-access one.
        let clear = vec![AccessChange::ClearScopes];
        assert_eq!(run(&mut resolver, &edit(1, clear.clone(), false)).0, Err(ErrorCode::InsufficientScope));
        assert_eq!(scopes_of(&resolver, 1).len(), TOKEN_SCOPES_MAX, "a refused edit changes nothing");
        // It may narrow a full-access token, and leave one as it is.
        let narrow = vec![AccessChange::AddScope(scope("me:read"))];
        run(&mut resolver, &edit(2, narrow, false)).0.unwrap();
        assert_eq!(scopes_of(&resolver, 2), ["me:read"]);
        run(&mut resolver, &edit(1, clear, true)).0.unwrap();
        assert!(scopes_of(&resolver, 1).is_empty());
        // Another user's token, or none: 20.
        let foreign = Change::EditAccess {
            user_id: 2,
            token: TokenSelector::Id(1),
            edits: vec![AccessChange::ClearNetworks],
            may_grant_full_access: true,
        };
        assert_eq!(run(&mut resolver, &foreign).0, Err(ErrorCode::ResourceNotFound));
        assert_eq!(run(&mut resolver, &edit(9, vec![], true)).0, Err(ErrorCode::ResourceNotFound));
    }

    fn rotate(id: u64, seed: u8, expiry_us: u64, reactivate: bool, new_hash: &mut TokenHash) -> Change {
        *new_hash = [seed; 32];
        Change::Rotate {
            user_id: 1,
            token: TokenSelector::Id(id),
            new_hash: *new_hash,
            expiry_us,
            max_lifetime_us: None,
            reactivate,
        }
    }

    #[test]
    fn only_an_explicit_reactivation_rotates_a_revoked_token_and_it_clears_the_revocation() {
        let mut revoked = token(1, &["me:read"], &[]);
        revoked.revoked_at_us = NonZeroU64::new(10);
        let mut expired = token(2, &[], &[]);
        expired.expiry_at_us = NonZeroU64::new(NOW - 1);
        let mut both = token(3, &[], &[]);
        both.revoked_at_us = NonZeroU64::new(10);
        both.expiry_at_us = NonZeroU64::new(NOW - 1);
        let mut resolver = resolver(&[revoked, expired, both]);
        let mut hash = [0; 32];

        // Revoked, no flag: 20003, as ever.
        let (outcome, written) = run(&mut resolver, &rotate(1, 101, 0, false, &mut hash));
        assert_eq!((outcome, written.len()), (Err(ErrorCode::PersonalAccessTokenRevoked), 0));
        // With the flag: a Reactivate, the revocation cleared, the rest kept.
        let (outcome, written) = run(&mut resolver, &rotate(1, 102, 0, true, &mut hash));
        let Ok(Outcome::Rotated { record, was: TokenStatus::Revoked }) = outcome else {
            panic!("{outcome:?}")
        };
        assert_eq!((record.revoked_at_us, record.hash), (None, [102; 32]));
        assert!(
            matches!(written.as_slice(), [Mutation::Reactivate { id: 1, new_hash, .. }] if *new_hash == hash)
        );
        let entry = resolver.state().by_hash(&[102; 32]).unwrap();
        assert_eq!(
            (entry.status(NOW), entry.revoked_at_us, entry.scopes().len()),
            (TokenStatus::Active, None, 1)
        );
        assert!(resolver.state().by_hash(&[1; 32]).is_none(), "the old secret is gone");

        // Expired: a new lifetime brings it back as a plain rotate; keep is 54.
        let (outcome, _) = run(&mut resolver, &rotate(2, 103, 0, true, &mut hash));
        assert_eq!(outcome, Err(ErrorCode::PersonalAccessTokenExpired));
        let (outcome, written) = run(&mut resolver, &rotate(2, 104, 600, false, &mut hash));
        let Ok(Outcome::Rotated { record, was: TokenStatus::Expired }) = outcome else {
            panic!("{outcome:?}")
        };
        assert_eq!(record.expiry_at_us, NonZeroU64::new(NOW + 600));
        assert!(matches!(written.as_slice(), [Mutation::Rotate { id: 2, .. }]));

        // Revoked and expired: the flag and a new lifetime, both.
        assert_eq!(
            run(&mut resolver, &rotate(3, 105, 600, false, &mut hash)).0,
            Err(ErrorCode::PersonalAccessTokenRevoked)
        );
        assert_eq!(
            run(&mut resolver, &rotate(3, 106, 0, true, &mut hash)).0,
            Err(ErrorCode::PersonalAccessTokenExpired)
        );
        let (outcome, written) = run(&mut resolver, &rotate(3, 107, 600, true, &mut hash));
        assert!(matches!(outcome, Ok(Outcome::Rotated { was: TokenStatus::Revoked, .. })), "{outcome:?}");
        assert!(matches!(written.as_slice(), [Mutation::Reactivate { id: 3, .. }]));
        // The expiry index follows the new expiry: nothing is due now.
        let mut purged = Vec::new();
        let purge = resolver.resolve(&Change::PurgeExpired { max: 10 }, NOW, &mut purged);
        assert_eq!(purge, Ok(Outcome::Purged { ids: vec![] }));

        // An active token with the flag: a plain rotate.
        let (outcome, written) = run(&mut resolver, &rotate(1, 108, 0, true, &mut hash));
        assert!(matches!(outcome, Ok(Outcome::Rotated { was: TokenStatus::Active, .. })), "{outcome:?}");
        assert!(matches!(written.as_slice(), [Mutation::Rotate { id: 1, .. }]));
    }
}

/// The writer's expiry index points at the state's current entry of every
/// token with an expiry, through every change, and at nothing else: it
/// never keeps an old entry alive, nor misses a new one.
#[test]
fn the_expiry_index_follows_every_changed_entry() {
    use std::num::NonZeroU64;

    use super::writer::Resolver;
    use crate::registry::TokenExtras;

    let token = |id: u64, expiry: u64| token_expiring_at(id, 1, expiry);
    let mut resolver = Resolver::new(Replica::new(), 1, StoreLimits { max_tokens_per_user: 100 });
    let extras = TokenExtras { description: "d".into(), ..TokenExtras::default() }.shared();
    resolver.apply(&[
        Mutation::Create(token(1, 50)),
        Mutation::Create(token(2, 60)),
        Mutation::Create(token(3, 0)),
        Mutation::Revoke { id: 1, hash: [1; 32], at_us: NonZeroU64::MIN },
        Mutation::Update { id: 2, hash: [2; 32], name: "renamed".into(), extras: extras.clone() },
        Mutation::Access { id: 2, hash: [2; 32], extras: None },
        Mutation::Rotate { id: 3, hash: [3; 32], new_hash: [33; 32], expiry_at_us: NonZeroU64::new(70) },
    ]);
    let _ = resolver.take_made();
    // Two pointers from the state's own indexes, a third from the expiry index.
    for hash in [[1; 32], [2; 32], [33; 32]] {
        let entry = resolver.state().shared(&hash).expect("the token is there");
        assert_eq!(std::sync::Arc::strong_count(entry), 3, "{hash:?}");
    }
    resolver.apply(&[Mutation::Rotate { id: 2, hash: [2; 32], new_hash: [22; 32], expiry_at_us: None }]);
    let _ = resolver.take_made();
    assert_eq!(std::sync::Arc::strong_count(resolver.state().shared(&[22; 32]).unwrap()), 2);
    let mut mutations = Vec::new();
    let Ok(Outcome::Purged { ids }) =
        resolver.resolve(&Change::PurgeExpired { max: 10 }, 100, &mut mutations)
    else {
        panic!("purge refused")
    };
    assert_eq!(ids, [1, 3], "expired at 50 and 70; 2 no longer expires");
}
