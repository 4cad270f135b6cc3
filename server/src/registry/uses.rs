//! Token uses (logins, allowed Authorize calls) on their way to the store.
//!
//! A connection keeps its own uses and hands them over at its first use, then
//! at most once a second, and at close (see `command/session.rs`). The
//! [`UseLedger`] holds what was handed over until the store has written it:
//! meanwhile lists and GetToken read the later of the ledger and the
//! replica, so a use never disappears from view between the two.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use super::{LastUsed, Replica, TokenHash};

/// Last uses by token id: `(hash at the time, when and from where)`.
pub type Uses = HashMap<u64, (TokenHash, LastUsed)>;

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
        self.pending.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
