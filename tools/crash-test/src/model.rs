//! The expected state: everything the harness knows about every token name it
//! ever asked for, and the rules a recovered server is checked against.
//!
//! No I/O lives here, so the rules themselves are unit-tested below.
//!
//! A name is always in exactly one state. Between cycles it is either
//! present or absent; during a cycle a request whose reply never arrived
//! (the server was killed under it) leaves it in doubt, and the list after
//! the restart settles it: both outcomes are correct, but from then on the
//! settled state is as binding as an acknowledged one, since the restarted
//! server has served it.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;

use latchkey_sdk::PersonalAccessTokenInfo;
use rand::Rng;
use rand::seq::{SliceRandom, index};

/// A broken promise: what the harness expected, what the server showed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub cycle: u32,
    /// What it is about, e.g. `token "c3w1n7"` or `server start`.
    pub subject: String,
    pub expected: String,
    pub found: String,
}

impl Violation {
    pub fn new(
        cycle: u32,
        subject: impl Into<String>,
        expected: impl Into<String>,
        found: impl Into<String>,
    ) -> Self {
        Violation { cycle, subject: subject.into(), expected: expected.into(), found: found.into() }
    }

    pub fn token(cycle: u32, name: &str, expected: impl Into<String>, found: impl Into<String>) -> Self {
        Violation::new(cycle, format!("token {name:?}"), expected, found)
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cycle {}: {}: expected {}; found {}", self.cycle, self.subject, self.expected, self.found)
    }
}

/// How the harness came to know the current state of a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Basis {
    /// The server acknowledged the request: its reply arrived.
    Acknowledged,
    /// The request was in doubt; the list after the restart settled it.
    Settled,
}

/// When and how a state was established.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fact {
    pub basis: Basis,
    pub cycle: u32,
}

impl Fact {
    fn acknowledged(cycle: u32) -> Fact {
        Fact { basis: Basis::Acknowledged, cycle }
    }

    fn settled(cycle: u32) -> Fact {
        Fact { basis: Basis::Settled, cycle }
    }
}

/// What the harness knows about one name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameState {
    /// Exists. `token` is the raw token when the create was acknowledged; an
    /// in-doubt create that the restart kept has none (only its name is known).
    Present { token: Option<String>, since: Fact },
    /// Does not exist: its delete was acknowledged, or an in-doubt request
    /// left it absent after the restart.
    Absent { since: Fact },
    /// A create sent in `cycle` whose reply never arrived.
    CreateInDoubt { cycle: u32 },
    /// A delete of a present name sent in `cycle` whose reply never arrived.
    DeleteInDoubt { token: Option<String>, present_since: Fact, cycle: u32 },
}

impl NameState {
    /// For messages: the state and how the harness knows it.
    pub fn describe(&self) -> String {
        match self {
            NameState::Present { since, .. } => match since.basis {
                Basis::Acknowledged => format!("present (create acknowledged in cycle {})", since.cycle),
                Basis::Settled => {
                    format!("present (in-doubt create, listed after the restart in cycle {})", since.cycle)
                }
            },
            NameState::Absent { since } => match since.basis {
                Basis::Acknowledged => format!("absent (delete acknowledged in cycle {})", since.cycle),
                Basis::Settled => {
                    format!(
                        "absent (in-doubt request, not listed after the restart in cycle {})",
                        since.cycle
                    )
                }
            },
            NameState::CreateInDoubt { cycle } => format!("either (create in doubt since cycle {cycle})"),
            NameState::DeleteInDoubt { cycle, .. } => format!("either (delete in doubt since cycle {cycle})"),
        }
    }
}

/// What one worker reports about one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Created {
        name: String,
        token: String,
    },
    Deleted {
        name: String,
    },
    /// Sent; the connection died before the reply.
    CreateInDoubt {
        name: String,
    },
    DeleteInDoubt {
        name: String,
    },
}

/// A token whose name was deleted: it must never log in again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadToken {
    pub name: String,
    pub token: String,
    pub since: Fact,
}

/// What a token login must answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Logs in as root (user 0).
    Root,
    /// Refused with code 20 (ResourceNotFound).
    NotFound,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginCheck {
    pub name: String,
    pub token: String,
    pub expect: Expect,
    /// Why, for the message if it fails.
    pub because: String,
}

/// The names one worker may touch in one cycle. No two workers hold the same
/// name, so each name's requests are ordered by one connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Holdings {
    /// Present names it may delete.
    pub present: Vec<String>,
    /// Absent names it may create again.
    pub absent: Vec<String>,
}

/// Totals over the run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub creates_acknowledged: u64,
    pub deletes_acknowledged: u64,
    pub in_doubt: u64,
    /// In-doubt requests whose name was listed after the restart.
    pub settled_present: u64,
    pub settled_absent: u64,
}

/// How the in-doubt requests of one cycle were settled.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Settled {
    pub present: u64,
    pub absent: u64,
}

#[derive(Debug, Default)]
pub struct Expected {
    names: HashMap<String, NameState>,
    /// Every name in `Present`, sorted like the server's list.
    present: BTreeSet<String>,
    /// Names in `Absent` not held by a worker: candidates for re-creation.
    absent_pool: Vec<String>,
    dead: Vec<DeadToken>,
    /// Per cycle: names any event touched, names handed out for
    /// re-creation, names in doubt, and where this cycle's dead tokens begin.
    touched: HashSet<String>,
    handed_out: Vec<String>,
    in_doubt: Vec<String>,
    dead_at_cycle_start: usize,
    pub counts: Counts,
}

impl Expected {
    pub fn present_len(&self) -> usize {
        self.present.len()
    }

    #[cfg(test)]
    fn state(&self, name: &str) -> Option<&NameState> {
        self.names.get(name)
    }

    /// Starts a cycle: deals every present name and up to
    /// `recreate_per_worker` absent names to each of `workers` workers.
    pub fn begin_cycle(
        &mut self,
        workers: usize,
        recreate_per_worker: usize,
        rng: &mut impl Rng,
    ) -> Vec<Holdings> {
        assert!(workers > 0);
        self.touched.clear();
        self.in_doubt.clear();
        debug_assert!(self.handed_out.is_empty(), "the previous cycle was not reconciled");
        self.handed_out.clear();
        self.dead_at_cycle_start = self.dead.len();
        let mut holdings = vec![Holdings::default(); workers];
        let mut present: Vec<String> = self.present.iter().cloned().collect();
        present.shuffle(rng);
        for (i, name) in present.into_iter().enumerate() {
            holdings[i % workers].present.push(name);
        }
        for holding in &mut holdings {
            for _ in 0..recreate_per_worker {
                if self.absent_pool.is_empty() {
                    break;
                }
                let name = self.absent_pool.swap_remove(rng.random_range(0..self.absent_pool.len()));
                self.handed_out.push(name.clone());
                holding.absent.push(name);
            }
        }
        holdings
    }

    /// Records one request's outcome. The workers only ask for what the
    /// model allows, so anything else is a bug in the harness, not the server.
    pub fn apply(&mut self, cycle: u32, event: Event) {
        match event {
            Event::Created { name, token } => {
                self.assert_creatable(&name);
                self.counts.creates_acknowledged += 1;
                self.present.insert(name.clone());
                self.touched.insert(name.clone());
                self.names.insert(
                    name,
                    NameState::Present { token: Some(token), since: Fact::acknowledged(cycle) },
                );
            }
            Event::CreateInDoubt { name } => {
                self.assert_creatable(&name);
                self.counts.in_doubt += 1;
                self.touched.insert(name.clone());
                self.in_doubt.push(name.clone());
                self.names.insert(name, NameState::CreateInDoubt { cycle });
            }
            Event::Deleted { name } => {
                let token = self.take_present(&name);
                self.counts.deletes_acknowledged += 1;
                let since = Fact::acknowledged(cycle);
                if let Some(token) = token {
                    self.dead.push(DeadToken { name: name.clone(), token, since });
                }
                self.touched.insert(name.clone());
                self.names.insert(name, NameState::Absent { since });
            }
            Event::DeleteInDoubt { name } => {
                let present_since = match self.names.get(&name) {
                    Some(NameState::Present { since, .. }) => *since,
                    other => panic!("harness bug: delete of {name:?} in state {other:?}"),
                };
                let token = self.take_present(&name);
                self.counts.in_doubt += 1;
                self.touched.insert(name.clone());
                self.in_doubt.push(name.clone());
                self.names.insert(name, NameState::DeleteInDoubt { token, present_since, cycle });
            }
        }
    }

    fn assert_creatable(&self, name: &str) {
        match self.names.get(name) {
            None | Some(NameState::Absent { .. }) => {}
            Some(other) => panic!("harness bug: create of {name:?} in state {other:?}"),
        }
    }

    /// Removes a present name from the present set; returns its token.
    fn take_present(&mut self, name: &str) -> Option<String> {
        let Some(NameState::Present { token, .. }) = self.names.get(name) else {
            panic!("harness bug: delete of {name:?} in state {:?}", self.names.get(name));
        };
        let token = token.clone();
        self.present.remove(name);
        token
    }

    /// Checks the recovered server's full list against the model, then
    /// settles this cycle's in-doubt names by it.
    pub fn reconcile(
        &mut self,
        cycle: u32,
        listing: &[PersonalAccessTokenInfo],
    ) -> Result<Settled, Violation> {
        let mut names: Vec<&str> = listing.iter().map(|entry| entry.name.as_str()).collect();
        names.sort_unstable();
        if let Some(pair) = names.windows(2).find(|pair| pair[0] == pair[1]) {
            let count = names.iter().filter(|name| **name == pair[0]).count();
            return Err(Violation::token(cycle, pair[0], "listed once", format!("listed {count} times")));
        }
        for entry in listing {
            if let Some(expiry_at_us) = entry.expiry_at_us {
                return Err(Violation::token(
                    cycle,
                    &entry.name,
                    "no expiry (every token is created with Expiry::Never)",
                    format!("expiry_at_us {expiry_at_us}"),
                ));
            }
        }
        let listed: HashSet<&str> = names.iter().copied().collect();
        if let Some(missing) = self.present.iter().find(|name| !listed.contains(name.as_str())) {
            let state = self.names[missing].describe();
            return Err(Violation::token(cycle, missing, format!("{state}, so listed"), "not listed"));
        }
        for name in &names {
            match self.names.get(*name) {
                None => {
                    return Err(Violation::token(
                        cycle,
                        name,
                        "not listed (the harness never asked for this name)",
                        "listed",
                    ));
                }
                Some(state @ NameState::Absent { .. }) => {
                    return Err(Violation::token(
                        cycle,
                        name,
                        format!("{}, so not listed", state.describe()),
                        "listed",
                    ));
                }
                Some(_) => {}
            }
        }
        let mut settled = Settled::default();
        for name in std::mem::take(&mut self.in_doubt) {
            let token = match self.names.get(&name) {
                Some(NameState::CreateInDoubt { .. }) => None,
                Some(NameState::DeleteInDoubt { token, .. }) => token.clone(),
                other => panic!("harness bug: {name:?} in doubt but in state {other:?}"),
            };
            let since = Fact::settled(cycle);
            if listed.contains(name.as_str()) {
                settled.present += 1;
                self.present.insert(name.clone());
                self.names.insert(name, NameState::Present { token, since });
            } else {
                settled.absent += 1;
                if let Some(token) = token {
                    self.dead.push(DeadToken { name: name.clone(), token, since });
                }
                self.names.insert(name, NameState::Absent { since });
            }
        }
        self.counts.settled_present += settled.present;
        self.counts.settled_absent += settled.absent;
        self.return_absent_names();
        Ok(settled)
    }

    /// Puts every absent name this cycle handed out or produced back in the pool.
    fn return_absent_names(&mut self) {
        let mut seen = HashSet::new();
        let candidates = std::mem::take(&mut self.handed_out).into_iter().chain(self.touched.iter().cloned());
        for name in candidates {
            if matches!(self.names.get(&name), Some(NameState::Absent { .. })) && seen.insert(name.clone()) {
                self.absent_pool.push(name);
            }
        }
    }

    /// The token logins to check after reconciling a cycle: every token this
    /// cycle touched, plus up to `sample_max` older ones, half live and half
    /// dead where there are enough of each.
    pub fn login_checks(&self, sample_max: usize, rng: &mut impl Rng) -> Vec<LoginCheck> {
        let mut checks = Vec::new();
        let mut touched: Vec<&String> = self.touched.iter().collect();
        touched.sort_unstable();
        for name in touched {
            if let Some(check) = self.live_check(name) {
                checks.push(check);
            }
        }
        checks.extend(self.dead[self.dead_at_cycle_start..].iter().map(dead_check));

        let older_live: Vec<&String> = self
            .present
            .iter()
            .filter(|name| !self.touched.contains(*name))
            .filter(|name| matches!(self.names[*name], NameState::Present { token: Some(_), .. }))
            .collect();
        let older_dead = &self.dead[..self.dead_at_cycle_start];
        let dead_count = older_dead.len().min(sample_max / 2);
        let live_count = older_live.len().min(sample_max - dead_count);
        let dead_count = older_dead.len().min(sample_max - live_count);
        for i in index::sample(rng, older_live.len(), live_count) {
            checks.extend(self.live_check(older_live[i]));
        }
        for i in index::sample(rng, older_dead.len(), dead_count) {
            checks.push(dead_check(&older_dead[i]));
        }
        checks
    }

    fn live_check(&self, name: &str) -> Option<LoginCheck> {
        let state = self.names.get(name)?;
        let NameState::Present { token: Some(token), .. } = state else { return None };
        Some(LoginCheck {
            name: name.to_owned(),
            token: token.clone(),
            expect: Expect::Root,
            because: state.describe(),
        })
    }
}

fn dead_check(dead: &DeadToken) -> LoginCheck {
    let because = match dead.since.basis {
        Basis::Acknowledged => format!("the token's delete was acknowledged in cycle {}", dead.since.cycle),
        Basis::Settled => format!(
            "the token's delete was in doubt and its name not listed after the restart in cycle {}",
            dead.since.cycle
        ),
    };
    LoginCheck { name: dead.name.clone(), token: dead.token.clone(), expect: Expect::NotFound, because }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    fn listing(names: &[&str]) -> Vec<PersonalAccessTokenInfo> {
        names
            .iter()
            .map(|name| PersonalAccessTokenInfo { name: (*name).to_owned(), expiry_at_us: None })
            .collect()
    }

    fn created(name: &str) -> Event {
        Event::Created { name: name.into(), token: format!("lk_{name}") }
    }

    fn deleted(name: &str) -> Event {
        Event::Deleted { name: name.into() }
    }

    /// One cycle: deal, apply `events`, reconcile against `listed`.
    fn cycle(
        expected: &mut Expected,
        cycle: u32,
        events: Vec<Event>,
        listed: &[&str],
    ) -> Result<Settled, Violation> {
        expected.begin_cycle(2, 4, &mut StdRng::seed_from_u64(1));
        for event in events {
            expected.apply(cycle, event);
        }
        expected.reconcile(cycle, &listing(listed))
    }

    #[test]
    fn acknowledged_creates_and_deletes_must_match_the_list() {
        let mut expected = Expected::default();
        cycle(&mut expected, 1, vec![created("aaa"), created("bbb"), deleted("bbb")], &["aaa"]).unwrap();
        assert_eq!(expected.present_len(), 1);

        let mut lost = Expected::default();
        let error = cycle(&mut lost, 1, vec![created("aaa")], &[]).unwrap_err();
        assert_eq!(error.subject, "token \"aaa\"");
        assert_eq!(error.found, "not listed");
        assert!(error.expected.contains("create acknowledged in cycle 1"), "{error}");

        let mut resurrected = Expected::default();
        let error = cycle(&mut resurrected, 1, vec![created("aaa"), deleted("aaa")], &["aaa"]).unwrap_err();
        assert!(error.expected.contains("delete acknowledged in cycle 1"), "{error}");
        assert_eq!(error.found, "listed");
    }

    #[test]
    fn names_never_asked_for_and_duplicates_are_violations() {
        let mut expected = Expected::default();
        let error = cycle(&mut expected, 1, vec![created("aaa")], &["aaa", "zzz"]).unwrap_err();
        assert_eq!(error.subject, "token \"zzz\"");
        assert!(error.expected.contains("never asked for"), "{error}");

        let mut expected = Expected::default();
        let error = cycle(&mut expected, 1, vec![created("aaa")], &["aaa", "aaa"]).unwrap_err();
        assert_eq!(error.found, "listed 2 times");
    }

    #[test]
    fn in_doubt_requests_settle_either_way_and_then_bind() {
        let mut expected = Expected::default();
        let events = vec![
            Event::CreateInDoubt { name: "kept".into() },
            Event::CreateInDoubt { name: "lost".into() },
            created("old"),
        ];
        let settled = cycle(&mut expected, 1, events, &["kept", "old"]).unwrap();
        assert_eq!(settled, Settled { present: 1, absent: 1 });
        assert!(matches!(expected.state("kept"), Some(NameState::Present { token: None, .. })));
        assert!(matches!(expected.state("lost"), Some(NameState::Absent { .. })));

        // Settled states bind: a later restart must agree with them.
        let error = cycle(&mut expected, 2, vec![], &["old"]).unwrap_err();
        assert_eq!(error.subject, "token \"kept\"");
        assert!(error.expected.contains("listed after the restart in cycle 1"), "{error}");

        let mut expected = Expected::default();
        cycle(&mut expected, 1, vec![created("old")], &["old"]).unwrap();
        let settled =
            cycle(&mut expected, 2, vec![Event::DeleteInDoubt { name: "old".into() }], &[]).unwrap();
        assert_eq!(settled, Settled { present: 0, absent: 1 });
        // Its token is now dead and checked as such.
        let checks = expected.login_checks(0, &mut StdRng::seed_from_u64(1));
        assert_eq!(checks.len(), 1);
        assert_eq!((checks[0].token.as_str(), checks[0].expect), ("lk_old", Expect::NotFound));
    }

    #[test]
    fn a_recreated_name_keeps_its_old_token_dead() {
        let mut expected = Expected::default();
        cycle(&mut expected, 1, vec![created("aaa"), deleted("aaa")], &[]).unwrap();
        let holdings = expected.begin_cycle(1, 4, &mut StdRng::seed_from_u64(1));
        assert_eq!(holdings[0].absent, vec!["aaa".to_owned()]);
        expected.apply(2, Event::Created { name: "aaa".into(), token: "lk_new".into() });
        expected.reconcile(2, &listing(&["aaa"])).unwrap();
        let checks = expected.login_checks(0, &mut StdRng::seed_from_u64(1));
        let expects: Vec<_> = checks.iter().map(|check| (check.token.as_str(), check.expect)).collect();
        assert_eq!(expects, vec![("lk_new", Expect::Root)]);
        // The first token's death was checked in cycle 1; it stays in the sample pool.
        let checks = expected.login_checks(10, &mut StdRng::seed_from_u64(1));
        assert!(checks.iter().any(|check| check.token == "lk_aaa" && check.expect == Expect::NotFound));
    }

    #[test]
    fn every_name_is_dealt_to_exactly_one_worker() {
        let mut expected = Expected::default();
        let events = (0..10).map(|i| created(&format!("n{i:02}"))).collect();
        let listed: Vec<String> = (0..10).map(|i| format!("n{i:02}")).collect();
        let listed: Vec<&str> = listed.iter().map(String::as_str).collect();
        cycle(&mut expected, 1, events, &listed).unwrap();
        let holdings = expected.begin_cycle(3, 4, &mut StdRng::seed_from_u64(7));
        let mut dealt: Vec<&String> = holdings.iter().flat_map(|h| &h.present).collect();
        dealt.sort();
        assert_eq!(dealt.len(), 10);
        dealt.dedup();
        assert_eq!(dealt.len(), 10);
    }

    #[test]
    fn the_login_sample_is_bounded() {
        let mut expected = Expected::default();
        let events = (0..500).map(|i| created(&format!("n{i:03}"))).collect();
        let names: Vec<String> = (0..500).map(|i| format!("n{i:03}")).collect();
        let listed: Vec<&str> = names.iter().map(String::as_str).collect();
        cycle(&mut expected, 1, events, &listed).unwrap();
        // Nothing touched in cycle 2: only the sample is checked.
        cycle(&mut expected, 2, vec![], &listed).unwrap();
        let checks = expected.login_checks(200, &mut StdRng::seed_from_u64(3));
        assert_eq!(checks.len(), 200);
        assert!(checks.iter().all(|check| check.expect == Expect::Root));
    }
}
