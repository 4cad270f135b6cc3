//! A history of a concurrent run against a cluster, and its checker.
//!
//! [`Recorder`] is the append-only history clients write to while a run
//! goes on: for each operation its client, the node it asked, the
//! operation, when it was asked and answered, and the answer. [`check`]
//! then holds the history, with every node's final list of tokens, against
//! a sequential model of one user's registry: names → tokens {id, active or
//! revoked}, a name held by at most one token, ids never handed out twice
//! (and by each node in increasing order).
//!
//! What is checked, and on what grounds (CLUSTER.md says what the cluster
//! promises):
//!
//! - **Writes linearizable.** Per name, there is one order of the creates,
//!   revokes and deletes of that name (and of the ids its creates returned)
//!   that keeps real time (an operation answered before another was asked
//!   comes first), in which each answer is the model's: a create succeeds
//!   iff the name is free, 51 iff it is held; a revoke or delete of an id
//!   succeeds iff that token still exists, 20 iff not; by name, iff the name
//!   is held.
//!   The order ends with every node's final list, which it must reproduce
//!   exactly (no acknowledged change lost, none made up). The search is
//!   Wing & Gong's, with states cached as in Lowe's and Porcupine's, and it
//!   is complete for this model: it fails only if no such order exists (or
//!   gives up past a bound of states, which is reported as a violation too,
//!   never as a pass).
//! - **Answers made without etcd may be stale, within a bound.** A node
//!   refuses a write (51, 20), or answers a revoke of a token it already has
//!   revoked, from its own state without a transaction. Such an answer may
//!   be placed as early as `staleness` before it was asked, but never before
//!   anything its own node answered before it was asked (a node's state
//!   only moves forward, and it acknowledges its own writes only once
//!   applied). Every answer that changed etcd keeps real time exactly. The
//!   same history is also searched with no staleness allowed at all (strict
//!   linearizability, refusals included); that result is reported as a
//!   note, not a violation, since the design does not promise it.
//! - **Ids.** No two creates returned the same id; a create answered before
//!   another was asked on the same node got the smaller id; a final list
//!   names a returned id only under its own name, and no id twice. Across
//!   nodes ids need not follow real time: each node gives ids from blocks
//!   it leases (CLUSTER.md, "Id blocks"), so a node may hand out id 5 after
//!   another handed out 1005.
//! - **Token logins** (reads from a node's memory, not linearizable by
//!   design), for every token whose create returned it:
//!   read-your-writes on the answering node (after an acknowledged revoke,
//!   delete or create of it there, a login there asked later answers
//!   accordingly); other nodes within `staleness` of the acknowledgement; a
//!   node never goes back (allows a token after it refused it as revoked,
//!   or shows one again after it showed it deleted); no phantom (revoked or
//!   gone while no revoke or delete of it was ever asked); and logins asked
//!   after the final lists were read answer exactly what they say.
//!
//! Not checked: the history across names as one order (each name is its
//! own search; ids tie them only through the pairwise id check above); the
//! per-user token limit (a run stays far below it); what a login says
//! before any node could know the token (20 then is no evidence either
//! way); whether a login's answer is linearizable (it is a local read).
//!
//! An answer that is lost (the connection broke, the client gave up) or
//! 20002 on a write is an unknown outcome: it may take effect at any point
//! after it was asked, or never, but wholly or not at all.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Wire codes the model gives a meaning to.
pub const CODE_NOT_FOUND: u32 = 20;
pub const CODE_NAME_TAKEN: u32 = 51;
/// Storage unavailable: on a write, an unknown outcome; on a login, a node
/// refusing to check tokens while it may be stale (no evidence either way).
pub const CODE_UNAVAILABLE: u32 = 20002;
pub const CODE_REVOKED: u32 = 20003;

/// Distinct search states one name may visit before the checker gives up
/// (and says so: a violation, never a pass).
const SEARCH_STATES_MAX: usize = 200_000;
/// Staleness allowances tried on a name that is not strictly linearizable,
/// to report the least that fits.
const STALENESS_LADDER_MS: [u64; 12] = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000];

/// Which token a revoke or delete names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    Id(u64),
    Name(String),
}

/// One operation a client asked a node for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Create {
        name: String,
    },
    Revoke {
        target: Target,
    },
    Delete {
        target: Target,
    },
    /// A token login with the secret the create of token `id` returned.
    Login {
        id: u64,
    },
}

/// What the client got back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A create that made token `id`.
    Created { id: u64 },
    /// Any other success: revoked, deleted, logged in.
    Done,
    /// The server answered with this error code.
    Refused { code: u32 },
    /// No answer: the connection broke or the client gave up.
    Lost,
}

/// One operation of the history. Times are from the recorder's start: when
/// the client was about to send the request, and when it had the answer (or
/// gave up), so the operation took effect, if at all, in between.
#[derive(Debug, Clone)]
pub struct Entry {
    pub client: usize,
    pub node: usize,
    pub op: Op,
    pub invoked: Duration,
    pub returned: Duration,
    pub outcome: Outcome,
}

impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = |at: Duration| at.as_secs_f64() * 1000.0;
        write!(
            f,
            "[{:9.1} → {:9.1} ms] client {} on node {}: ",
            ms(self.invoked),
            ms(self.returned),
            self.client,
            self.node
        )?;
        match &self.op {
            Op::Create { name } => write!(f, "create {name:?}")?,
            Op::Revoke { target } => write!(f, "revoke {target}")?,
            Op::Delete { target } => write!(f, "delete {target}")?,
            Op::Login { id } => write!(f, "login with token {id}")?,
        }
        match &self.outcome {
            Outcome::Created { id } => write!(f, " → created id {id}"),
            Outcome::Done => write!(f, " → ok"),
            Outcome::Refused { code } => write!(f, " → {code}"),
            Outcome::Lost => write!(f, " → no answer"),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Id(id) => write!(f, "id {id}"),
            Target::Name(name) => write!(f, "name {name:?}"),
        }
    }
}

/// The shared, append-only history of a run.
pub struct Recorder {
    start: Instant,
    entries: Mutex<Vec<Entry>>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder::new()
    }
}

impl Recorder {
    pub fn new() -> Recorder {
        Recorder { start: Instant::now(), entries: Mutex::new(Vec::new()) }
    }

    /// `at` as a time of this history.
    pub fn at(&self, at: Instant) -> Duration {
        at.saturating_duration_since(self.start)
    }

    pub fn record(
        &self,
        client: usize,
        node: usize,
        op: Op,
        invoked: Instant,
        returned: Instant,
        outcome: Outcome,
    ) {
        let entry =
            Entry { client, node, op, invoked: self.at(invoked), returned: self.at(returned), outcome };
        self.entries.lock().unwrap().push(entry);
    }

    /// Everything recorded so far, in the order it was recorded.
    pub fn entries(&self) -> Vec<Entry> {
        self.entries.lock().unwrap().clone()
    }
}

/// A token in a node's final list.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Listed {
    pub id: u64,
    pub name: String,
    pub revoked: bool,
}

/// Every node's list of the user's tokens, read once the run was over,
/// every fault healed and the nodes caught up.
#[derive(Debug, Clone)]
pub struct Final {
    /// When the lists were read (history time): logins asked after it must
    /// answer what they say.
    pub taken_at: Duration,
    /// Per node, by node index.
    pub lists: Vec<Vec<Listed>>,
}

/// The rule a violation breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Rule {
    /// An answer the model has no place for (an unexpected code, a
    /// success for an id no create returned).
    UnexpectedAnswer,
    IdReused,
    IdOutOfOrder,
    /// No order of one name's writes fits the model.
    NotLinearizable,
    /// The search for one name hit its bound: neither pass nor fail.
    SearchGaveUp,
    ListsDiffer,
    /// A final list names a returned id under another name, or an id twice.
    ListedWrongly,
    /// A final list misses an acknowledged change, or holds a token no
    /// create could have made.
    LostChange,
    /// A login on a node contradicts a change that node acknowledged before.
    ReadYourWrites,
    /// A login contradicts a change acknowledged more than `staleness` before.
    StalenessBound,
    /// A node went back to an earlier state of a token.
    WentBack,
    /// A token refused as revoked or gone with no revoke or delete asked.
    Phantom,
    /// A login after the final lists disagrees with them.
    FinalLogin,
}

#[derive(Debug, Clone)]
pub struct Violation {
    pub rule: Rule,
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.rule, self.detail)
    }
}

/// What the checker found.
#[derive(Debug, Default)]
pub struct Verdict {
    pub violations: Vec<Violation>,
    /// Facts about the run that are no violation (the strict search, the
    /// largest staleness seen, counts).
    pub notes: Vec<String>,
    /// Names whose writes are not strictly linearizable (refusals placed
    /// where they were answered, no staleness allowed), each with why.
    pub strictly_not_linearizable: Vec<String>,
}

impl Verdict {
    pub fn rules(&self) -> Vec<Rule> {
        let mut rules: Vec<Rule> = self.violations.iter().map(|violation| violation.rule).collect();
        rules.sort_unstable();
        rules.dedup();
        rules
    }
}

/// Checks `entries` and `last` against the model; see the module doc.
/// `staleness` is how old a node's answer from its own state may be.
pub fn check(entries: &[Entry], last: &Final, staleness: Duration) -> Verdict {
    let mut verdict = Verdict::default();
    let writes = classify(entries, &mut verdict);
    check_ids(entries, &mut verdict);
    check_lists(entries, last, &mut verdict);
    check_final_state(entries, &writes, last, &mut verdict);
    let partitions = partition(entries, &writes, last);
    let mut states = 0;
    for (name, steps) in &partitions {
        let known = &writes.known_ids;
        match search(steps, staleness, known) {
            Searched::Linearizable { visited } => states += visited,
            Searched::Stuck(why) => verdict.violations.push(Violation {
                rule: Rule::NotLinearizable,
                detail: format!("name {name:?}: {}", why.describe(entries, steps)),
            }),
            Searched::GaveUp => verdict.violations.push(Violation {
                rule: Rule::SearchGaveUp,
                detail: format!("name {name:?}: more than {SEARCH_STATES_MAX} states"),
            }),
        }
        if let Searched::Stuck(why) = search(steps, Duration::ZERO, known) {
            // How stale the refusals were: the least allowance that fits.
            let enough = STALENESS_LADDER_MS
                .iter()
                .map(|&ms| Duration::from_millis(ms))
                .take_while(|&allowed| allowed < staleness)
                .find(|&allowed| matches!(search(steps, allowed, known), Searched::Linearizable { .. }))
                .map_or_else(|| format!("{staleness:?}"), |allowed| format!("{allowed:?}"));
            verdict.strictly_not_linearizable.push(format!(
                "name {name:?} (fits with {enough} of staleness allowed): {}",
                why.describe(entries, steps)
            ));
        }
    }
    check_logins(entries, &writes, last, staleness, &mut verdict);
    verdict.notes.push(format!(
        "{} operations ({} writes, {} of unknown outcome); {} names searched, {} states",
        entries.len(),
        writes.kinds.iter().filter(|kind| kind.is_some()).count(),
        writes.kinds.iter().filter(|kind| matches!(kind, Some((_, Answer::Maybe)))).count(),
        partitions.len(),
        states
    ));
    verdict
}

/// A write's answer, as the model reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// Succeeded (a create: with this id).
    Ok(Option<u64>),
    /// Refused with the model's code: 51 for a create, 20 otherwise.
    Refused,
    /// Unknown outcome.
    Maybe,
}

/// The writes of a history, read once.
struct Writes {
    /// Per entry: for a write, its name (None when it names an id no create
    /// returned) and answer; None for a login.
    kinds: Vec<Option<(Option<String>, Answer)>>,
    /// Ids successful creates returned, with their name and entry.
    known_ids: HashMap<u64, (String, usize)>,
}

fn classify(entries: &[Entry], verdict: &mut Verdict) -> Writes {
    let mut known_ids = HashMap::new();
    for (index, entry) in entries.iter().enumerate() {
        if let (Op::Create { name }, Outcome::Created { id }) = (&entry.op, &entry.outcome) {
            known_ids.entry(*id).or_insert_with(|| (name.clone(), index));
        }
    }
    let mut unexpected = |entry: &Entry, why: &str| {
        verdict
            .violations
            .push(Violation { rule: Rule::UnexpectedAnswer, detail: format!("{why}: {entry}") });
    };
    let mut kinds = Vec::with_capacity(entries.len());
    for entry in entries {
        let (name, refusal) = match &entry.op {
            Op::Login { id } => {
                if let Outcome::Refused { code } = entry.outcome
                    && ![CODE_NOT_FOUND, CODE_REVOKED, CODE_UNAVAILABLE].contains(&code)
                {
                    unexpected(entry, "a login answered with a code the model has no place for");
                }
                if !known_ids.contains_key(id) {
                    unexpected(entry, "a login with a token no create returned");
                }
                kinds.push(None);
                continue;
            }
            Op::Create { name } => (Some(name.clone()), CODE_NAME_TAKEN),
            Op::Revoke { target } | Op::Delete { target } => match target {
                Target::Name(name) => (Some(name.clone()), CODE_NOT_FOUND),
                Target::Id(id) => (known_ids.get(id).map(|(name, _)| name.clone()), CODE_NOT_FOUND),
            },
        };
        let answer = match (&entry.op, &entry.outcome) {
            (Op::Create { .. }, Outcome::Created { id }) => Answer::Ok(Some(*id)),
            (Op::Revoke { .. } | Op::Delete { .. }, Outcome::Done) => Answer::Ok(None),
            (_, Outcome::Refused { code }) if *code == refusal => Answer::Refused,
            (_, Outcome::Refused { code: CODE_UNAVAILABLE } | Outcome::Lost) => Answer::Maybe,
            _ => {
                unexpected(entry, "a write answered with something the model has no place for");
                Answer::Maybe
            }
        };
        if name.is_none() && answer == Answer::Ok(None) {
            unexpected(entry, "a change to an id no create returned succeeded");
        }
        kinds.push(Some((name, answer)));
    }
    Writes { kinds, known_ids }
}

fn check_ids(entries: &[Entry], verdict: &mut Verdict) {
    let mut created: Vec<&Entry> =
        entries.iter().filter(|entry| matches!(entry.outcome, Outcome::Created { .. })).collect();
    let id = |entry: &Entry| match entry.outcome {
        Outcome::Created { id } => id,
        _ => unreachable!(),
    };
    created.sort_by_key(|entry| id(entry));
    for pair in created.windows(2) {
        if id(pair[0]) == id(pair[1]) {
            verdict.violations.push(Violation {
                rule: Rule::IdReused,
                detail: format!("id {} returned twice:\n  {}\n  {}", id(pair[0]), pair[0], pair[1]),
            });
        }
    }
    // Sorted by id, per node: a later create (larger id) must not have been
    // answered before an earlier one was asked on the same node. The
    // earliest answer among the larger ids is the one to compare with.
    let mut earliest_after: HashMap<usize, &Entry> = HashMap::new();
    for entry in created.iter().rev() {
        let earliest = earliest_after.get(&entry.node).copied();
        if let Some(later) = earliest
            && id(later) > id(entry)
            && later.returned < entry.invoked
        {
            verdict.violations.push(Violation {
                rule: Rule::IdOutOfOrder,
                detail: format!(
                    "id {} was answered before id {} was asked:\n  {later}\n  {entry}",
                    id(later),
                    id(entry)
                ),
            });
        }
        if earliest.is_none_or(|later| entry.returned < later.returned) {
            earliest_after.insert(entry.node, entry);
        }
    }
}

fn check_lists(entries: &[Entry], last: &Final, verdict: &mut Verdict) {
    for (node, list) in last.lists.iter().enumerate().skip(1) {
        if *list != last.lists[0] {
            verdict.violations.push(Violation {
                rule: Rule::ListsDiffer,
                detail: format!("node 0 lists {:?}\nnode {node} lists {list:?}", last.lists[0]),
            });
        }
    }
    let names: HashMap<u64, &str> = entries
        .iter()
        .filter_map(|entry| match (&entry.op, &entry.outcome) {
            (Op::Create { name }, Outcome::Created { id }) => Some((*id, name.as_str())),
            _ => None,
        })
        .collect();
    for (node, list) in last.lists.iter().enumerate() {
        let mut ids = HashSet::new();
        let mut held = HashSet::new();
        for token in list {
            let wrong_name = names.get(&token.id).is_some_and(|name| *name != token.name);
            if wrong_name || !ids.insert(token.id) || !held.insert(token.name.as_str()) {
                verdict.violations.push(Violation {
                    rule: Rule::ListedWrongly,
                    detail: format!("node {node} lists {token:?} (an id or a name twice, or another name)"),
                });
            }
        }
    }
}

/// No acknowledged change lost, nothing made up, told directly (the search
/// finds the same, but cannot say as plainly which change it was).
fn check_final_state(entries: &[Entry], writes: &Writes, last: &Final, verdict: &mut Verdict) {
    let mut checked: Vec<&Vec<Listed>> = Vec::new();
    let mut known: Vec<(&u64, &(String, usize))> = writes.known_ids.iter().collect();
    known.sort_unstable();
    for (node, list) in last.lists.iter().enumerate() {
        if checked.contains(&list) {
            continue;
        }
        checked.push(list);
        let mut lost = |why: String| {
            verdict
                .violations
                .push(Violation { rule: Rule::LostChange, detail: format!("node {node}: {why}") });
        };
        for &(id, (name, created)) in &known {
            let created = &entries[*created];
            // This token's revokes and deletes: by its id or its name,
            // succeeded or of unknown outcome, not over before it was asked for.
            let changes = |deletes: bool| {
                entries.iter().enumerate().filter(move |&(index, entry)| {
                    let target = match (&entry.op, deletes) {
                        (Op::Delete { target }, true) | (Op::Revoke { target }, false) => target,
                        _ => return false,
                    };
                    let answer = writes.kinds[index].as_ref().map(|(_, answer)| *answer);
                    let names_it = *target == Target::Id(*id) || *target == Target::Name(name.clone());
                    names_it
                        && (answer == Some(Answer::Maybe)
                            || (answer == Some(Answer::Ok(None)) && entry.returned > created.invoked))
                })
            };
            let acked = |deletes: bool| {
                changes(deletes).find(|&(index, entry)| {
                    matches!(&entry.op, Op::Delete { target } | Op::Revoke { target } if *target == Target::Id(*id))
                        && writes.kinds[index].as_ref().is_some_and(|(_, answer)| *answer == Answer::Ok(None))
                })
            };
            match list.iter().find(|token| token.id == *id) {
                Some(token) => {
                    if let Some((_, delete)) = acked(true) {
                        lost(format!("lists {token:?}, whose delete was acknowledged:\n  {delete}"));
                    } else if let (false, Some((_, revoke))) = (token.revoked, acked(false)) {
                        lost(format!(
                            "lists {token:?} as active, whose revoke was acknowledged:\n  {revoke}"
                        ));
                    }
                }
                None if changes(true).next().is_none() => {
                    lost(format!("lacks token {id}, created and never deleted:\n  {created}"));
                }
                None => {}
            }
        }
        for token in list.iter().filter(|token| !writes.known_ids.contains_key(&token.id)) {
            let could = entries.iter().enumerate().any(|(index, entry)| {
                entry.op == Op::Create { name: token.name.clone() }
                    && writes.kinds[index].as_ref().is_some_and(|(_, answer)| *answer == Answer::Maybe)
            });
            if !could {
                lost(format!(
                    "lists {token:?}, which no create returned and none of unknown outcome could have made"
                ));
            }
        }
    }
}

/// One step of a name's search: a write of that name, or a final list.
#[derive(Debug, Clone)]
struct Step {
    /// Its entry, or `None` for a final list.
    entry: Option<usize>,
    act: Act,
    node: usize,
    invoked: Duration,
    /// `None`: unknown outcome, may take effect after `invoked` or never.
    returned: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Act {
    Create(Answer),
    Revoke(Sel, Answer),
    Delete(Sel, Answer),
    /// A node's final list says this of the name.
    Listed(Option<(u64, bool)>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sel {
    Id(u64),
    Name,
}

/// Who holds a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Holder {
    /// A token a create returned.
    Known(u64),
    /// A token made by a create of unknown outcome.
    Unknown,
}

/// The model's state for one name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
struct NameState {
    /// The token holding the name, and whether it is revoked.
    holder: Option<(Holder, bool)>,
}

/// The state after `act`, and whether it changed; `None` if the model
/// forbids that answer here, or for an unknown outcome that would change
/// nothing (such an operation is simply never placed: the same).
fn apply(state: NameState, act: &Act, known: &HashMap<u64, (String, usize)>) -> Option<(NameState, bool)> {
    let holds = |sel: Sel| match (sel, state.holder) {
        (_, None) => false,
        (Sel::Name, Some(_)) => true,
        (Sel::Id(id), Some((holder, _))) => holder == Holder::Known(id),
    };
    let same = Some((state, false));
    match *act {
        Act::Create(Answer::Ok(Some(id))) => {
            state.holder.is_none().then_some((NameState { holder: Some((Holder::Known(id), false)) }, true))
        }
        Act::Create(Answer::Ok(None)) => None,
        Act::Create(Answer::Refused) => state.holder.is_some().then_some((state, false)),
        Act::Create(Answer::Maybe) => {
            state.holder.is_none().then_some((NameState { holder: Some((Holder::Unknown, false)) }, true))
        }
        Act::Revoke(sel, answer) => match (answer, holds(sel), state.holder) {
            (Answer::Ok(_), true, Some((_, true))) => same,
            (Answer::Ok(_) | Answer::Maybe, true, Some((holder, false))) => {
                Some((NameState { holder: Some((holder, true)) }, true))
            }
            (Answer::Refused, false, _) => same,
            _ => None,
        },
        Act::Delete(sel, answer) => match (answer, holds(sel)) {
            (Answer::Ok(_) | Answer::Maybe, true) => Some((NameState { holder: None }, true)),
            (Answer::Refused, false) => same,
            _ => None,
        },
        Act::Listed(listed) => {
            let fits = match (listed, state.holder) {
                (None, None) => true,
                (Some((id, revoked)), Some((holder, is_revoked))) => {
                    revoked == is_revoked
                        && match holder {
                            Holder::Known(held) => held == id,
                            Holder::Unknown => !known.contains_key(&id),
                        }
                }
                _ => false,
            };
            fits.then_some((state, false))
        }
    }
}

/// Every name's steps: its writes, then one final list per node.
fn partition(entries: &[Entry], writes: &Writes, last: &Final) -> BTreeMap<String, Vec<Step>> {
    let mut partitions: BTreeMap<String, Vec<Step>> = BTreeMap::new();
    for (index, entry) in entries.iter().enumerate() {
        let Some((Some(name), answer)) = &writes.kinds[index] else { continue };
        let sel = |target: &Target| match target {
            Target::Id(id) => Sel::Id(*id),
            Target::Name(_) => Sel::Name,
        };
        let act = match &entry.op {
            Op::Create { .. } => Act::Create(*answer),
            Op::Revoke { target } => Act::Revoke(sel(target), *answer),
            Op::Delete { target } => Act::Delete(sel(target), *answer),
            Op::Login { .. } => unreachable!("logins are not writes"),
        };
        let returned = (*answer != Answer::Maybe).then_some(entry.returned);
        partitions.entry(name.clone()).or_default().push(Step {
            entry: Some(index),
            act,
            node: entry.node,
            invoked: entry.invoked,
            returned,
        });
    }
    // Names that only a final list mentions are searched too: a token
    // nobody made (or an unknown create's) must be explained.
    for list in &last.lists {
        for token in list {
            partitions.entry(token.name.clone()).or_default();
        }
    }
    for (name, steps) in partitions.iter_mut() {
        for (node, list) in last.lists.iter().enumerate() {
            let listed = list.iter().find(|token| token.name == *name).map(|token| (token.id, token.revoked));
            steps.push(Step {
                entry: None,
                act: Act::Listed(listed),
                node,
                invoked: Duration::MAX,
                returned: Some(Duration::MAX),
            });
        }
    }
    partitions
}

enum Searched {
    Linearizable { visited: usize },
    Stuck(Stuck),
    GaveUp,
}

/// The furthest the search got before it found no way on.
struct Stuck {
    state: NameState,
    placed: usize,
    total: usize,
    /// Steps not placed yet, the earliest asked first.
    pending: Vec<usize>,
}

impl Stuck {
    fn describe(&self, entries: &[Entry], steps: &[Step]) -> String {
        let mut text = format!(
            "no order fits; at best {} of {} answers placed, then the name is {}; none of these fits next:",
            self.placed,
            self.total,
            match self.state.holder {
                None => "free".to_owned(),
                Some((Holder::Known(id), revoked)) => format!("held by id {id} (revoked: {revoked})"),
                Some((Holder::Unknown, revoked)) =>
                    format!("held by an unknown create's token (revoked: {revoked})"),
            }
        );
        for &step in self.pending.iter().take(6) {
            match (&steps[step].entry, &steps[step].act) {
                (Some(entry), _) => text.push_str(&format!("\n  {}", entries[*entry])),
                (None, Act::Listed(listed)) => {
                    text.push_str(&format!("\n  node {}'s final list: {listed:?}", steps[step].node))
                }
                (None, _) => unreachable!(),
            }
        }
        text
    }
}

/// The steps in the orders the search walks them.
struct Orders {
    /// Steps with an answer, by time asked.
    answered_by_invoked: Vec<usize>,
    /// Steps of unknown outcome, by time asked.
    maybe_by_invoked: Vec<usize>,
    /// Steps with an answer, by time answered: overall, and per node.
    by_returned: Vec<usize>,
    by_node_returned: Vec<Vec<usize>>,
}

impl Orders {
    fn new(steps: &[Step]) -> Orders {
        let nodes = steps.iter().map(|step| step.node + 1).max().unwrap_or(0);
        let by = |keep: &dyn Fn(&Step) -> bool, key: &dyn Fn(&Step) -> Duration| {
            let mut order: Vec<usize> = (0..steps.len()).filter(|&index| keep(&steps[index])).collect();
            order.sort_by_key(|&index| key(&steps[index]));
            order
        };
        let returned = |step: &Step| step.returned.unwrap_or(Duration::MAX);
        Orders {
            answered_by_invoked: by(&|step| step.returned.is_some(), &|step| step.invoked),
            maybe_by_invoked: by(&|step| step.returned.is_none(), &|step| step.invoked),
            by_returned: by(&|step| step.returned.is_some(), &returned),
            by_node_returned: (0..nodes)
                .map(|node| by(&|step| step.returned.is_some() && step.node == node, &returned))
                .collect(),
        }
    }
}

/// A point of the search: which steps are placed, and the state they leave
/// (all that counts; the rest only saves walking the orders again).
/// Steps of unknown outcome of one kind are always placed earliest first.
#[derive(Clone)]
struct Point {
    placed: Vec<u64>,
    state: NameState,
    /// Answered steps placed.
    answered: usize,
    /// Every step before these positions (in `answered_by_invoked`,
    /// `by_returned` and each of `by_node_returned`) is placed.
    low: usize,
    returned_low: usize,
    node_low: Vec<usize>,
}

impl Point {
    fn has(&self, step: usize) -> bool {
        self.placed[step / 64] & (1 << (step % 64)) != 0
    }

    fn place(&mut self, step: usize, steps: &[Step]) {
        self.placed[step / 64] |= 1 << (step % 64);
        if steps[step].returned.is_some() {
            self.answered += 1;
        }
    }

    /// The earliest answer not placed yet (a step asked after it must wait
    /// for it).
    fn frontier(&mut self, orders: &Orders, steps: &[Step]) -> Duration {
        let order = &orders.by_returned;
        while self.returned_low < order.len() && self.has(order[self.returned_low]) {
            self.returned_low += 1;
        }
        order.get(self.returned_low).and_then(|&step| steps[step].returned).unwrap_or(Duration::MAX)
    }

    /// The same among `node`'s answers.
    fn node_frontier(&mut self, node: usize, orders: &Orders, steps: &[Step]) -> Duration {
        let order = &orders.by_node_returned[node];
        let mut low = self.node_low[node];
        while low < order.len() && self.has(order[low]) {
            low += 1;
        }
        self.node_low[node] = low;
        order.get(low).and_then(|&step| steps[step].returned).unwrap_or(Duration::MAX)
    }
}

/// Wing & Gong's search for an order of `steps` (see the module doc),
/// depth first, with every point reached remembered so none is explored
/// twice. An answer that changed nothing and may go now is placed at once
/// (placing it later never helps: it leaves the state as it is and only
/// holds back what must follow it); only changes branch, and of unknown
/// outcomes that would change the same way only the earliest asked (they
/// are interchangeable). A point is dropped when one already reached has
/// the same answers placed and the same state with no more unknown
/// outcomes spent: whatever follows this one could follow that one.
fn search(steps: &[Step], staleness: Duration, known: &HashMap<u64, (String, usize)>) -> Searched {
    let orders = Orders::new(steps);
    let total = orders.by_returned.len();
    let mut maybe_mask = vec![0u64; steps.len().div_ceil(64)];
    for &index in &orders.maybe_by_invoked {
        maybe_mask[index / 64] |= 1 << (index % 64);
    }
    // Per answers placed and state: the unknown outcomes spent getting there.
    let mut visited: HashMap<(Vec<u64>, NameState), Vec<Vec<u64>>> = HashMap::new();
    let mut states = 0;
    let mut stack = vec![Point {
        placed: vec![0; steps.len().div_ceil(64)],
        state: NameState::default(),
        answered: 0,
        low: 0,
        returned_low: 0,
        node_low: vec![0; orders.by_node_returned.len()],
    }];
    let mut furthest: Option<Point> = None;
    while let Some(mut point) = stack.pop() {
        settle(&mut point, &orders, steps, staleness, known);
        if point.answered == total {
            return Searched::Linearizable { visited: states };
        }
        if furthest.as_ref().is_none_or(|most| point.answered > most.answered) {
            furthest = Some(point.clone());
        }
        let answers: Vec<u64> =
            point.placed.iter().zip(&maybe_mask).map(|(placed, maybe)| placed & !maybe).collect();
        let spent: Vec<u64> =
            point.placed.iter().zip(&maybe_mask).map(|(placed, maybe)| placed & maybe).collect();
        let seen = visited.entry((answers, point.state)).or_default();
        if seen.iter().any(|other| other.iter().zip(&spent).all(|(other, spent)| other & !spent == 0)) {
            continue;
        }
        seen.push(spent);
        states += 1;
        if states > SEARCH_STATES_MAX {
            return Searched::GaveUp;
        }
        // Branch on every change that may go now: unknown outcomes last
        // (pushed first), so answers are tried first.
        let frontier = point.frontier(&orders, steps);
        let mut branches = Vec::new();
        let mut tried: Vec<&Act> = Vec::new();
        for &index in &orders.maybe_by_invoked {
            let step = &steps[index];
            if step.invoked > frontier {
                break;
            }
            if point.has(index) || tried.contains(&&step.act) {
                continue;
            }
            if let Some((state, true)) = apply(point.state, &step.act, known) {
                tried.push(&step.act);
                branches.push((index, state));
            }
        }
        for &index in &orders.answered_by_invoked[point.low..] {
            let step = &steps[index];
            if step.invoked.saturating_sub(staleness) > frontier {
                break;
            }
            if point.has(index) {
                continue;
            }
            match apply(point.state, &step.act, known) {
                Some((state, true)) if step.invoked <= frontier => branches.push((index, state)),
                // An answer that may be a change later is a branch here
                // even where it changes nothing (`settle` leaves it alone),
                // under settle's rule for when such an answer may go.
                Some((state, false))
                    if may_change(&step.act)
                        && (step.invoked <= frontier
                            || (step.entry.is_some()
                                && step.invoked <= point.node_frontier(step.node, &orders, steps))) =>
                {
                    branches.push((index, state));
                }
                _ => {}
            }
        }
        for (index, state) in branches {
            let mut next = point.clone();
            next.place(index, steps);
            next.state = state;
            stack.push(next);
        }
    }
    let point = furthest.expect("the start is a point");
    let mut pending: Vec<usize> =
        orders.answered_by_invoked.iter().copied().filter(|&index| !point.has(index)).collect();
    pending.sort_by_key(|&index| steps[index].invoked);
    Searched::Stuck(Stuck { state: point.state, placed: point.answered, total, pending })
}

/// Places every answer that changes nothing and may go now: asked before
/// the earliest answer still unplaced, or (answered from a node's own
/// state) within `staleness` of it and after everything its node answered
/// before it was asked.
fn settle(
    point: &mut Point,
    orders: &Orders,
    steps: &[Step],
    staleness: Duration,
    known: &HashMap<u64, (String, usize)>,
) {
    loop {
        let mut progressed = false;
        while point.low < orders.answered_by_invoked.len() && point.has(orders.answered_by_invoked[point.low])
        {
            point.low += 1;
        }
        for at in point.low..orders.answered_by_invoked.len() {
            let index = orders.answered_by_invoked[at];
            let step = &steps[index];
            let frontier = point.frontier(orders, steps);
            if step.invoked.saturating_sub(staleness) > frontier {
                break;
            }
            let changes_nothing = matches!(apply(point.state, &step.act, known), Some((_, false)));
            if point.has(index) || !changes_nothing || may_change(&step.act) {
                continue;
            }
            let fresh = step.invoked <= frontier;
            if fresh
                || (step.entry.is_some() && step.invoked <= point.node_frontier(step.node, orders, steps))
            {
                point.place(index, steps);
                progressed = true;
            }
        }
        if !progressed {
            return;
        }
    }
}

/// Whether an answer fits some states as a change and others as none: a
/// revoke answered ok, of a token not revoked yet (a change) or of one
/// already revoked (none). Placing such an answer at once where it changes
/// nothing can use it up before the state where it is the change, which
/// may be the only order that fits (a revoke by name asked while an older,
/// revoked token held the name, answered once a new one did), so `settle`
/// never places it and `search` branches on it instead.
fn may_change(act: &Act) -> bool {
    matches!(act, Act::Revoke(_, Answer::Ok(_)))
}

/// What a login said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Said {
    Allowed,
    Revoked,
    Missing,
}

fn said(outcome: &Outcome) -> Option<Said> {
    match outcome {
        Outcome::Done => Some(Said::Allowed),
        Outcome::Refused { code: CODE_REVOKED } => Some(Said::Revoked),
        Outcome::Refused { code: CODE_NOT_FOUND } => Some(Said::Missing),
        _ => None,
    }
}

fn check_logins(
    entries: &[Entry],
    writes: &Writes,
    last: &Final,
    staleness: Duration,
    verdict: &mut Verdict,
) {
    let mut logins: HashMap<u64, Vec<(&Entry, Said)>> = HashMap::new();
    for entry in entries {
        if let (Op::Login { id }, Some(said)) = (&entry.op, said(&entry.outcome)) {
            logins.entry(*id).or_default().push((entry, said));
        }
    }
    let mut largest_stale_allow = Duration::ZERO;
    for (id, logins) in &logins {
        let Some((name, created)) = writes.known_ids.get(id) else { continue };
        let created = &entries[*created];
        // Writes that may have revoked or deleted this token (by its id or
        // its name, succeeded or of unknown outcome), and those that did.
        let mut may_revoke = Vec::new();
        let mut may_delete = Vec::new();
        let mut acked = vec![(created, Said::Allowed)];
        for (index, entry) in entries.iter().enumerate() {
            let Some((_, answer)) = &writes.kinds[index] else { continue };
            let (target, deletes) = match &entry.op {
                Op::Revoke { target } => (target, false),
                Op::Delete { target } => (target, true),
                _ => continue,
            };
            let names_it = *target == Target::Id(*id) || *target == Target::Name(name.clone());
            if !names_it || *answer == Answer::Refused {
                continue;
            }
            if deletes {
                may_delete.push(entry)
            } else {
                may_revoke.push(entry)
            }
            if *target == Target::Id(*id) && *answer == Answer::Ok(None) {
                acked.push((entry, if deletes { Said::Missing } else { Said::Revoked }));
            }
        }
        let asked_before =
            |writes: &[&Entry], login: &Entry| writes.iter().any(|w| w.invoked < login.returned);
        // When each node first showed it had the token: it acknowledged its
        // create, or a login there found it.
        let mut present_at: HashMap<usize, Duration> = HashMap::from([(created.node, created.returned)]);
        for &(login, said) in logins {
            if said != Said::Missing {
                let at = present_at.entry(login.node).or_insert(login.returned);
                *at = (*at).min(login.returned);
            }
        }
        for &(login, said) in logins {
            let report = |rule: Rule, why: String, verdict: &mut Verdict| {
                verdict.violations.push(Violation { rule, detail: format!("{why}:\n  {login}") });
            };
            // Changes acknowledged before it: on its node at once, elsewhere
            // within the bound.
            for &(ack, after) in &acked {
                let rule = if ack.node == login.node && ack.returned < login.invoked {
                    Rule::ReadYourWrites
                } else if ack.returned.saturating_add(staleness) < login.invoked {
                    Rule::StalenessBound
                } else {
                    if after != Said::Allowed && said == Said::Allowed && ack.returned < login.invoked {
                        largest_stale_allow = largest_stale_allow.max(login.invoked - ack.returned);
                    }
                    continue;
                };
                let fits = match after {
                    Said::Allowed => said != Said::Missing || asked_before(&may_delete, login),
                    Said::Revoked => said != Said::Allowed,
                    Said::Missing => said == Said::Missing,
                };
                if !fits {
                    report(rule, format!("{said:?} after\n  {ack}"), verdict);
                }
            }
            if said == Said::Revoked && !asked_before(&may_revoke, login) {
                report(
                    Rule::Phantom,
                    format!("token {id} refused as revoked, no revoke of it asked"),
                    verdict,
                );
            }
            // Its node never goes back: after it said revoked, never
            // allowed; after it said gone (once it had it), never back.
            for &(earlier, earlier_said) in logins {
                if earlier.node != login.node || earlier.returned >= login.invoked {
                    continue;
                }
                let had_it = present_at.get(&earlier.node).is_some_and(|at| *at < earlier.invoked);
                let back = match earlier_said {
                    Said::Allowed => said == Said::Missing && !asked_before(&may_delete, login),
                    Said::Revoked => said == Said::Allowed,
                    Said::Missing => had_it && said != Said::Missing,
                };
                if back {
                    let rule = if earlier_said == Said::Allowed { Rule::Phantom } else { Rule::WentBack };
                    report(
                        rule,
                        format!("{said:?} after the same node said {earlier_said:?}:\n  {earlier}"),
                        verdict,
                    );
                }
            }
            // After the final lists: exactly what they say.
            if login.invoked > last.taken_at
                && let Some(list) = last.lists.get(login.node)
            {
                let expected = match list.iter().find(|token| token.id == *id) {
                    None => Said::Missing,
                    Some(token) if token.revoked => Said::Revoked,
                    Some(_) => Said::Allowed,
                };
                if said != expected {
                    report(Rule::FinalLogin, format!("{said:?}, the final list says {expected:?}"), verdict);
                }
            }
        }
    }
    verdict.notes.push(format!(
        "largest time between an acknowledged revoke or delete and a later allow of that token on \
         another node: {largest_stale_allow:?}"
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUND: Duration = Duration::from_secs(2);

    fn ms(at: u64) -> Duration {
        Duration::from_millis(at)
    }

    /// One entry: client = node, times in ms.
    fn op(node: usize, invoked: u64, returned: u64, op: Op, outcome: Outcome) -> Entry {
        Entry { client: node, node, op, invoked: ms(invoked), returned: ms(returned), outcome }
    }

    fn create(name: &str) -> Op {
        Op::Create { name: name.into() }
    }

    fn created(id: u64) -> Outcome {
        Outcome::Created { id }
    }

    fn refused(code: u32) -> Outcome {
        Outcome::Refused { code }
    }

    fn revoke(id: u64) -> Op {
        Op::Revoke { target: Target::Id(id) }
    }

    fn delete(id: u64) -> Op {
        Op::Delete { target: Target::Id(id) }
    }

    fn delete_name(name: &str) -> Op {
        Op::Delete { target: Target::Name(name.into()) }
    }

    fn login(id: u64) -> Op {
        Op::Login { id }
    }

    /// Every one of 3 nodes lists `tokens`, read at `taken_at` ms.
    fn lists(taken_at: u64, tokens: &[(u64, &str, bool)]) -> Final {
        let list: Vec<Listed> =
            tokens.iter().map(|&(id, name, revoked)| Listed { id, name: name.into(), revoked }).collect();
        Final { taken_at: ms(taken_at), lists: vec![list; 3] }
    }

    fn rules(entries: &[Entry], last: &Final) -> Vec<Rule> {
        let verdict = check(entries, last, BOUND);
        for violation in &verdict.violations {
            eprintln!("{violation}");
        }
        verdict.rules()
    }

    /// A token's life across three nodes, with a race for its name, a
    /// revoke seen at once on its node and later elsewhere, and a delete.
    fn a_clean_life() -> Vec<Entry> {
        vec![
            op(0, 0, 10, create("ci"), created(1)),
            op(1, 2, 12, create("ci"), refused(CODE_NAME_TAKEN)),
            op(0, 11, 12, login(1), Outcome::Done),
            // Node 2 has not seen it yet: no evidence either way.
            op(2, 11, 12, login(1), refused(CODE_NOT_FOUND)),
            op(1, 20, 30, revoke(1), Outcome::Done),
            op(1, 31, 32, login(1), refused(CODE_REVOKED)),
            // Node 0 still allows it, within the bound.
            op(0, 31, 32, login(1), Outcome::Done),
            op(0, 3000, 3001, login(1), refused(CODE_REVOKED)),
            op(2, 3100, 3110, delete(1), Outcome::Done),
            op(2, 3111, 3112, login(1), refused(CODE_NOT_FOUND)),
            op(0, 3120, 3130, create("ci"), created(2)),
            op(1, 3140, 3150, delete_name("ci"), Outcome::Done),
            op(1, 3160, 3170, delete(2), refused(CODE_NOT_FOUND)),
            op(0, 9000, 9001, login(1), refused(CODE_NOT_FOUND)),
        ]
    }

    #[test]
    fn a_clean_history_passes() {
        let verdict = check(&a_clean_life(), &lists(8000, &[]), BOUND);
        assert!(verdict.violations.is_empty(), "{:?}", verdict.violations);
        assert!(verdict.strictly_not_linearizable.is_empty(), "{:?}", verdict.strictly_not_linearizable);
    }

    #[test]
    fn a_lost_acknowledged_delete_fails() {
        let mut entries = a_clean_life();
        entries.truncate(10);
        // The delete of id 1 was acknowledged, yet the final lists have it.
        let lost = [Rule::NotLinearizable, Rule::LostChange];
        assert_eq!(rules(&entries, &lists(8000, &[(1, "ci", true)])), lost);
        // A lost revoke, the same way.
        entries.truncate(8);
        assert_eq!(rules(&entries, &lists(8000, &[(1, "ci", false)])), lost);
        // And a create acknowledged, never deleted, and gone.
        assert_eq!(rules(&entries[..1], &lists(8000, &[])), lost);
        // A token no create made.
        assert_eq!(rules(&entries[..1], &lists(8000, &[(1, "ci", false), (7, "cd", false)])), lost);
    }

    #[test]
    fn a_stale_allow_on_the_answering_node_fails() {
        let mut entries = a_clean_life();
        // Node 1 acknowledged the revoke at 30 ms and allows it at 31.
        entries.push(op(1, 31, 33, login(1), Outcome::Done));
        assert_eq!(rules(&entries, &lists(8000, &[])), [Rule::ReadYourWrites]);
    }

    #[test]
    fn an_allow_past_the_staleness_bound_fails_and_within_it_passes() {
        let mut entries = a_clean_life();
        entries.push(op(2, 1900, 1901, login(1), Outcome::Done));
        assert_eq!(rules(&entries, &lists(8000, &[])), []);
        entries.push(op(2, 2100, 2101, login(1), Outcome::Done));
        assert_eq!(rules(&entries, &lists(8000, &[])), [Rule::StalenessBound]);
    }

    #[test]
    fn two_successful_creates_of_one_name_without_a_delete_fail() {
        // (A delete of unknown outcome asked too late to free the name
        // between them, but in time to explain why token 1 is gone.)
        let entries = vec![
            op(0, 0, 10, create("ci"), created(1)),
            op(1, 20, 30, create("ci"), created(2)),
            op(2, 40, 50, delete_name("ci"), Outcome::Lost),
        ];
        assert_eq!(rules(&entries, &lists(8000, &[(2, "ci", false)])), [Rule::NotLinearizable]);
        // Concurrent ones too: whatever their order, the second finds it taken.
        let entries = vec![
            op(0, 0, 10, create("ci"), created(1)),
            op(1, 0, 10, create("ci"), created(2)),
            op(2, 20, 30, delete_name("ci"), Outcome::Done),
        ];
        assert_eq!(rules(&entries, &lists(8000, &[])), [Rule::NotLinearizable]);
        // With a delete between them it is fine.
        let entries = vec![
            op(0, 0, 10, create("ci"), created(1)),
            op(2, 5, 15, delete(1), Outcome::Done),
            op(1, 0, 20, create("ci"), created(2)),
        ];
        assert_eq!(rules(&entries, &lists(8000, &[(2, "ci", false)])), []);
    }

    #[test]
    fn a_reused_id_fails() {
        let entries = vec![
            op(0, 0, 10, create("ci"), created(1)),
            op(1, 20, 30, delete(1), Outcome::Done),
            op(1, 40, 50, create("cd"), created(1)),
        ];
        let found = rules(&entries, &lists(8000, &[(1, "cd", false)]));
        assert!(found.contains(&Rule::IdReused), "{found:?}");
    }

    #[test]
    fn ids_given_against_real_time_on_one_node_fail_and_across_nodes_pass() {
        let last = lists(8000, &[(4, "bb1", false), (5, "aa1", false)]);
        let one_node =
            vec![op(0, 0, 10, create("aa1"), created(5)), op(0, 20, 30, create("bb1"), created(4))];
        assert_eq!(rules(&one_node, &last), [Rule::IdOutOfOrder]);
        // Node 1's block is below node 0's.
        let two_nodes =
            vec![op(0, 0, 10, create("aa1"), created(5)), op(1, 20, 30, create("bb1"), created(4))];
        assert_eq!(rules(&two_nodes, &last), []);
        // And one name, made again on another node, may get a smaller id.
        let again = vec![
            op(0, 0, 10, create("ci"), created(1005)),
            op(0, 20, 30, delete(1005), Outcome::Done),
            op(1, 40, 50, create("ci"), created(7)),
        ];
        assert_eq!(rules(&again, &lists(8000, &[(7, "ci", false)])), []);
    }

    #[test]
    fn an_unknown_outcome_may_have_happened_or_not_but_wholly() {
        let entries = vec![
            op(0, 0, 10, create("ci"), created(1)),
            op(1, 20, 30, delete(1), Outcome::Lost),
            op(2, 40, 50, create("ci"), refused(CODE_UNAVAILABLE)),
        ];
        // The delete did not happen.
        assert_eq!(rules(&entries, &lists(8000, &[(1, "ci", false)])), []);
        // It did, and the create did not.
        assert_eq!(rules(&entries, &lists(8000, &[])), []);
        // Both did: the create's token, whose id nobody was told.
        assert_eq!(rules(&entries, &lists(8000, &[(2, "ci", false)])), []);
        // But not a token under a returned id that no create of that name made.
        assert_eq!(rules(&entries, &lists(8000, &[(1, "ci", true)])), [Rule::NotLinearizable]);
        // A refusal says the delete happened before it: after that, token 1 is gone.
        let mut refused_after = entries.clone();
        refused_after.push(op(0, 60, 70, revoke(1), refused(CODE_NOT_FOUND)));
        assert_eq!(rules(&refused_after, &lists(8000, &[(1, "ci", false)])), [Rule::NotLinearizable]);
    }

    #[test]
    fn a_stale_refusal_within_the_bound_passes_but_is_not_strictly_linearizable() {
        let entries = vec![
            op(0, 0, 10, create("ci"), created(1)),
            op(0, 20, 30, delete(1), Outcome::Done),
            // Node 1 has not applied the delete yet.
            op(1, 40, 50, create("ci"), refused(CODE_NAME_TAKEN)),
        ];
        let verdict = check(&entries, &lists(8000, &[]), BOUND);
        assert!(verdict.violations.is_empty(), "{:?}", verdict.violations);
        assert_eq!(verdict.strictly_not_linearizable.len(), 1);
        // 10 ms between the delete's answer and the refusal's question.
        let note = &verdict.strictly_not_linearizable[0];
        assert!(note.contains("fits with 10ms"), "{note}");
        // Past the bound it is a violation.
        let mut late = entries.clone();
        late.push(op(1, 3000, 3010, create("ci"), refused(CODE_NAME_TAKEN)));
        assert_eq!(rules(&late, &lists(8000, &[])), [Rule::NotLinearizable]);
        // And on the node that acknowledged the delete, at once.
        let mut own = entries;
        own.push(op(0, 40, 50, create("ci"), refused(CODE_NAME_TAKEN)));
        assert_eq!(rules(&own, &lists(8000, &[])), [Rule::NotLinearizable]);
    }

    #[test]
    fn a_revoke_by_name_that_fits_an_old_revoked_token_may_still_be_the_new_ones() {
        let revoke_name = |name: &str| Op::Revoke { target: Target::Name(name.into()) };
        let entries = vec![
            op(0, 0, 10, create("ci"), created(1)),
            op(0, 10, 20, revoke(1), Outcome::Done),
            op(1, 20, 30, delete(1), Outcome::Done),
            op(1, 40, 50, create("ci"), created(2)),
            // Asked while token 1 (revoked) may still have held the name on
            // node 2; answered after token 2 took it: it revoked token 2.
            op(2, 40, 60, revoke_name("ci"), Outcome::Done),
        ];
        let verdict = check(&entries, &lists(8000, &[(2, "ci", true)]), BOUND);
        assert!(verdict.violations.is_empty(), "{:?}", verdict.violations);
        // Nothing else revoked token 2.
        assert_eq!(rules(&entries[..4], &lists(8000, &[(2, "ci", true)])), [Rule::NotLinearizable]);
    }

    #[test]
    fn a_node_going_back_fails() {
        let entries = vec![
            op(0, 0, 10, create("ci"), created(1)),
            op(0, 20, 30, revoke(1), Outcome::Lost),
            op(1, 40, 50, login(1), refused(CODE_REVOKED)),
            op(1, 60, 70, login(1), Outcome::Done),
        ];
        assert_eq!(rules(&entries, &lists(8000, &[(1, "ci", true)])), [Rule::WentBack]);
    }

    #[test]
    fn a_phantom_revocation_fails() {
        let entries =
            vec![op(0, 0, 10, create("ci"), created(1)), op(1, 40, 50, login(1), refused(CODE_REVOKED))];
        assert_eq!(rules(&entries, &lists(8000, &[(1, "ci", false)])), [Rule::Phantom]);
    }

    #[test]
    fn a_login_after_the_final_lists_must_agree_with_them() {
        let entries = vec![
            op(0, 0, 10, create("ci"), created(1)),
            op(1, 1500, 1510, login(1), refused(CODE_NOT_FOUND)),
        ];
        assert_eq!(rules(&entries, &lists(1000, &[(1, "ci", false)])), [Rule::FinalLogin]);
    }

    #[test]
    fn nodes_whose_final_lists_differ_fail() {
        let entries = vec![op(0, 0, 10, create("ci"), created(1))];
        let mut last = lists(8000, &[(1, "ci", false)]);
        last.lists[2].clear();
        let found = rules(&entries, &last);
        assert!(found.contains(&Rule::ListsDiffer), "{found:?}");
    }

    #[test]
    fn a_long_concurrent_history_is_searched_quickly() {
        // 6 clients on one name for 500 rounds, each create racing five
        // refusals, then deleted by name; a few unknown outcomes on the way.
        let mut entries = Vec::new();
        let mut id = 0;
        for round in 0..500u64 {
            let at = round * 100;
            id += 1;
            entries.push(op(0, at, at + 30, create("ci"), created(id)));
            for node in 1..6 {
                entries.push(op(node % 3, at + 1, at + 40, create("ci"), refused(CODE_NAME_TAKEN)));
            }
            let outcome = if round % 100 == 7 { Outcome::Lost } else { Outcome::Done };
            entries.push(op(1, at + 50, at + 60, delete_name("ci"), outcome));
        }
        let verdict = check(&entries, &lists(1_000_000, &[]), BOUND);
        assert!(verdict.violations.is_empty(), "{:?}", verdict.violations);
    }
}
