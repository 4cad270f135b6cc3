//! Token uses (logins, allowed Authorize calls) on their way to the store.
//!
//! A connection keeps its own uses and hands them over at its first use, then
//! at most once a second, and at close (see `command/session.rs`). The
//! [`UseLedger`] holds what was handed over until the store has written it:
//! meanwhile lists and GetToken read the later of the ledger and the
//! replica, so a use never disappears from view between the two.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::sync::{Mutex, MutexGuard};

use super::{IdHasher, LastUsed, Replica, TokenHash};

/// Last uses by token id: `(hash at the time, when and from where)`. Keyed
/// with the id hasher: ids are chosen by the server, never by a client.
pub type Uses = HashMap<u64, (TokenHash, LastUsed), BuildHasherDefault<IdHasher>>;

/// Merges `uses` into `into`, keeping the later use of each token.
pub fn merge_uses(into: &mut Uses, uses: impl IntoIterator<Item = (u64, (TokenHash, LastUsed))>) {
    for (id, (hash, used)) in uses {
        let slot = into.entry(id).or_insert((hash, used));
        if used.at_us >= slot.1.at_us {
            *slot = (hash, used);
        }
    }
}

/// Uses handed over by connections and not yet written by the store.
#[derive(Default)]
pub struct UseLedger {
    pending: Mutex<Uses>,
    /// Times the lock was taken, for the tests that check a list takes it
    /// once, not once per token.
    #[cfg(test)]
    locks: std::sync::atomic::AtomicU64,
}

impl UseLedger {
    /// Takes a connection's uses.
    pub fn hand_over(&self, uses: impl IntoIterator<Item = (u64, (TokenHash, LastUsed))>) {
        merge_uses(&mut self.lock(), uses);
    }

    /// The freshest last use known for a token: handed over but not yet
    /// written, or what the replica has.
    pub fn last_used(&self, replica: &Replica, id: u64) -> Option<LastUsed> {
        let pending = self.lock().get(&id).map(|(_, used)| *used);
        LastUsed::later(pending, replica.last_used(id))
    }

    /// [`UseLedger::last_used`] for each of `ids`, in their order, taking
    /// the lock once for all of them: a list of a thousand tokens must not
    /// queue a thousand times behind every connection handing uses over.
    pub fn last_used_of(&self, replica: &Replica, ids: &[u64]) -> Vec<Option<LastUsed>> {
        let pending: Vec<Option<LastUsed>> = {
            let pending = self.lock();
            ids.iter().map(|id| pending.get(id).map(|(_, used)| *used)).collect()
        };
        ids.iter()
            .zip(pending)
            .map(|(id, pending)| LastUsed::later(pending, replica.last_used(*id)))
            .collect()
    }

    /// What is waiting to be written, as `(id, hash, use)`.
    pub fn pending(&self) -> Vec<(u64, TokenHash, LastUsed)> {
        self.lock().iter().map(|(id, (hash, used))| (*id, *hash, *used)).collect()
    }

    /// Forgets the uses in `written` (the store has them now), except any
    /// superseded by a later use meanwhile.
    pub fn settle(&self, written: &[(u64, TokenHash, LastUsed)]) {
        let mut pending = self.lock();
        for (id, _, used) in written {
            if pending.get(id).is_some_and(|(_, now)| now.at_us == used.at_us) {
                pending.remove(id);
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, Uses> {
        #[cfg(test)]
        self.locks.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.pending.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// How many times the ledger's lock was taken.
    #[cfg(test)]
    pub fn locks(&self) -> u64 {
        self.locks.load(std::sync::atomic::Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn used(at_us: u64) -> LastUsed {
        LastUsed { at_us, peer: "192.0.2.1:4000".parse().unwrap() }
    }

    #[test]
    fn last_used_of_answers_each_id_in_order_under_one_lock() {
        let ledger = UseLedger::default();
        ledger.hand_over([(2, ([2; 32], used(20))), (5, ([5; 32], used(50)))]);
        let before = ledger.locks();
        let found = ledger.last_used_of(&Replica::new(), &[5, 1, 2]);
        assert_eq!(ledger.locks() - before, 1);
        assert_eq!(found, [Some(used(50)), None, Some(used(20))]);
        assert_eq!(found[2], ledger.last_used(&Replica::new(), 2));
    }
}
