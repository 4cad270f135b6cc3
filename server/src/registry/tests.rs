//! Replica rules: indexes stay in step, conflicts are divergences.

use std::num::NonZeroU64;

use super::replica::Entries;
use super::*;

fn record(id: u64, user_id: u32, name: &str) -> TokenRecord {
    let mut hash = [0u8; 32];
    hash[..8].copy_from_slice(&id.to_le_bytes());
    TokenRecord {
        id,
        user_id,
        name: name.into(),
        hash,
        created_at_us: 1,
        expiry_at_us: NonZeroU64::new(100),
        revoked_at_us: None,
        extras: None,
        last_used: None,
    }
}

fn delete(record: &TokenRecord) -> Mutation {
    Mutation::Delete { id: record.id, hash: record.hash }
}

#[test]
fn create_list_delete_keeps_indexes_in_step() {
    let mut replica = Replica::new();
    let (b, a, other) = (record(1, 7, "b"), record(2, 7, "a"), record(3, 8, "a"));
    for token in [&b, &a, &other] {
        replica.apply(&Mutation::Create(token.clone()));
    }
    let names: Vec<_> = replica.list_for(7).map(|r| &*r.name).collect();
    assert_eq!(names, ["a", "b"]);
    assert_eq!(replica.count_for(7), 2);
    assert_eq!(replica.count_for(8), 1);
    assert_eq!(replica.by_name(8, "a").unwrap().1.id, 3);
    assert_eq!(replica.by_name(8, "a").unwrap().0, &other.hash);
    replica.apply(&delete(&a));
    assert!(replica.by_name(7, "a").is_none());
    assert!(replica.by_hash(&a.hash).is_none());
    assert_eq!(replica.count_for(7), 1);
    replica.apply(&delete(&b));
    assert_eq!(replica.count_for(7), 0);
    assert_eq!(replica.len(), 1);
    assert_eq!(replica.records().collect::<Vec<_>>(), vec![other]);
}

#[test]
fn expiry_is_inclusive() {
    let token = record(1, 1, "x");
    assert!(!token.is_expired(99));
    assert!(token.is_expired(100));
    let never = TokenRecord { expiry_at_us: None, ..token };
    assert!(!never.is_expired(u64::MAX));
}

#[test]
#[should_panic(expected = "diverged")]
fn a_conflicting_create_is_a_divergence() {
    let mut replica = Replica::new();
    replica.apply(&Mutation::Create(record(1, 1, "x")));
    replica.apply(&Mutation::Create(record(2, 1, "x")));
}

#[test]
#[should_panic(expected = "diverged")]
fn a_delete_whose_id_and_hash_disagree_is_a_divergence() {
    let mut replica = Replica::new();
    let token = record(1, 1, "x");
    replica.apply(&Mutation::Create(token.clone()));
    replica.apply(&Mutation::Delete { id: 2, hash: token.hash });
}

#[test]
fn a_scan_in_slices_visits_every_token_once_across_users_and_slice_edges() {
    let mut replica = Replica::new();
    let mut id = 0;
    // Users of 10, 6 (two whole slices: the last read finds nothing more),
    // 1 and 0 tokens left; names out of order on purpose.
    for (user_id, tokens) in [(3, 10), (1, 6), (2, 1), (4, 1)] {
        for n in (0..tokens).rev() {
            id += 1;
            replica.apply(&Mutation::Create(record(id, user_id, &format!("t{n:02}"))));
        }
    }
    let gone = replica.by_name(4, "t00").map(|(hash, entry)| (entry.id, *hash)).unwrap();
    replica.apply(&Mutation::Delete { id: gone.0, hash: gone.1 });
    let (readers, _publisher) = Readers::new(replica.clone(), replica);
    for slice in [1, 3, 6, 4096] {
        let mut seen = Vec::new();
        readers.scan_in_slices(slice, &mut |entry: &TokenEntry| {
            seen.push((entry.user_id, entry.name.to_string()))
        });
        let mut expected: Vec<(u32, String)> = Vec::new();
        for (user_id, tokens) in [(1, 6), (2, 1), (3, 10)] {
            expected.extend((0..tokens).map(|n| (user_id, format!("t{n:02}"))));
        }
        assert_eq!(seen, expected, "slice {slice}: users in id order, names in order, each once");
    }
}

/// Where `hash`'s entry lives in `replica`, and how many pointers lead to it.
fn allocation(replica: &Replica, hash: &TokenHash) -> (*const TokenEntry, usize) {
    let entry = replica.shared(hash).expect("the token is there");
    (Arc::as_ptr(entry), Arc::strong_count(entry))
}

#[test]
fn the_readers_replicas_share_every_entry_the_writers_replica_made() {
    let mut writer = Replica::new();
    let (readers, mut publisher) = Readers::new(Replica::new(), Replica::new());
    let mut commit = |writer: &mut Replica, mutations: Vec<Mutation>| {
        let mut made = Vec::new();
        for mutation in &mutations {
            writer.apply_making(mutation, &mut made);
        }
        // The second, empty publish brings the other readers' replica up to
        // date and shows it to the readers.
        publisher.publish(Batch::new(mutations, made));
        let first = readers.read(Replica::clone);
        publisher.publish(Batch::new(Vec::new(), Vec::new()));
        let second = readers.read(Replica::clone);
        (first, second)
    };
    let (a, b) = (record(1, 7, "a"), record(2, 7, "b"));
    let mut new_hash = a.hash;
    new_hash[31] = 1;
    let extras = TokenExtras { description: "d".into(), ..TokenExtras::default() }.shared();
    let batches = [
        vec![Mutation::Create(a.clone()), Mutation::Create(b.clone())],
        vec![Mutation::Revoke { id: 1, hash: a.hash, at_us: NonZeroU64::MIN }],
        vec![Mutation::Reactivate { id: 1, hash: a.hash, new_hash, expiry_at_us: None }],
        vec![
            Mutation::Update { id: 2, hash: b.hash, name: "c".into(), extras: extras.clone() },
            Mutation::Access { id: 2, hash: b.hash, extras: None },
        ],
    ];
    for batch in batches {
        let (first, second) = commit(&mut writer, batch);
        assert_eq!(first, writer);
        assert_eq!(second, writer);
        for hash in [new_hash, b.hash].iter().filter(|hash| writer.by_hash(hash).is_some()) {
            let (at, pointers) = allocation(&writer, hash);
            assert_eq!(allocation(&first, hash).0, at, "one allocation for every replica");
            assert_eq!(allocation(&second, hash).0, at);
            // Two indexes in each of the three replicas, and the two clones
            // taken here; nothing else holds an old entry.
            assert_eq!(pointers, 2 * 3 + 2 * 2);
        }
    }
    assert_eq!(writer.by_name(7, "c").unwrap().1.extras, None);
    assert_eq!(writer.by_hash(&new_hash).unwrap().revoked_at_us, None);
}

#[test]
#[should_panic(expected = "diverged")]
fn a_batch_short_of_entries_is_a_divergence() {
    let mut replica = Replica::new();
    replica.apply_batch(&Batch::new(vec![Mutation::Create(record(1, 1, "x"))], Vec::new()));
}

#[test]
fn a_create_that_does_not_fit_changes_nothing_and_hands_over_no_entry() {
    let mut replica = Replica::new();
    let mut made = Vec::new();
    replica.apply_making(&Mutation::Create(record(1, 1, "x")), &mut made);
    let before = replica.clone();
    let same_name = record(2, 1, "x");
    assert!(replica.try_create(&same_name).unwrap_err().contains("already has a token named"));
    let mut same_hash = record(3, 1, "y");
    same_hash.hash = record(1, 1, "x").hash;
    assert!(replica.try_create(&same_hash).unwrap_err().contains("its hash exists"));
    let mut made_too = Vec::new();
    let mut entries = Entries::Make(Some(&mut made_too));
    assert!(replica.create(&same_name, &mut entries).is_err());
    assert!(made_too.is_empty(), "a refused create hands over nothing");
    assert_eq!(replica, before);
    assert_eq!(made.len(), 1);
}
