//! The etcd backend's writer: one thread that commits this node's changes
//! as etcd transactions and applies every node's changes, in etcd's
//! revision order, from a watch.
//!
//! Both jobs share the [`Resolver`]'s state, which always equals etcd's at
//! `applied` (the revision last applied): a change is checked against it,
//! its transaction compares that nothing it relied on changed after
//! `applied`, and the change's own events come back through the watch like
//! anyone else's. The rules and the registry's apply are the ones the file
//! backend uses.
//!
//! Creates take their ids from blocks this node leases from the cluster's
//! id counter (`ids.rs`), so a create's transaction compares only its
//! name and its user's count: nodes creating for different users share no
//! key.
//!
//! Group commit: the changes waiting in the inbox when the writer takes one
//! are committed together, in one transaction, when they touch disjoint
//! keys (each change's compares and writes; the users' counts, which the
//! group adds up, excepted) and stay under the per-user limit together.
//! Creates in a group take the node's next ids in order. A change that
//! does not fit waits for the next group, and so does every later change
//! of its origin (a connection's pipelined changes take effect in the order
//! sent; other connections' changes are concurrent with them and may go
//! first); refusals, changes with nothing to write and changes that need
//! several transactions go alone. If the group's transaction loses a race
//! (another node wrote what it compares), its changes are checked again
//! against what won and grouped again, ahead of what waits behind them. So a node's
//! write rate follows etcd's transaction rate times the group's size, not
//! one round trip per change.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, EventType, Txn, TxnOp, TxnOpResponse, WatchOptions, WatchResponse,
    WatchStream,
};
use latchkey_protocol::ErrorCode;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::ids::IdBlocks;
use super::keys::{
    Keys, Named, decode_number, decode_token, decode_used, encode_number, encode_token, encode_used,
};
use super::{Cluster, Loaded, UNSENT_RETRY_PAUSE, never_sent};
use crate::clock::now_us;
use crate::metrics;
use crate::registry::{Batch, Mutation, Publish, TokenEntry, TokenHash, TokenRecord};
use crate::store::writer::{Inbox, Message, Origin, Resolver, StoreLimits};
use crate::store::{Change, Freshness, Outcome};

/// Mutations in one transaction at most: a delete is 4 operations (token,
/// last use, name, count) and 3 compares, and etcd refuses a transaction
/// with more than 128 of either (`--max-txn-ops`, default 128).
const TXN_MUTATIONS_MAX: usize = 32;
/// Changes taken from the inbox at once to be grouped (those that do not
/// fit one transaction wait for the next group).
const QUEUE_TAKEN_MAX: usize = 128;
/// Lost races after which a change is answered 20002 if it has also been
/// trying for longer than the request timeout (both: a change is not
/// given up on while its races are quick, nor after one slow loss).
const CONFLICTS_MAX: u32 = 16;
/// After a lost race that names no revision (a key it compared is gone),
/// how long to wait for the next watch event before checking again.
const CONFLICT_WAIT: Duration = Duration::from_millis(50);
/// How often a quiet node asks etcd whether its watch is current.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);
/// Pause before watching again after the watch broke.
const REWATCH_PAUSE: Duration = Duration::from_millis(200);

/// Starts the writer on its own thread (with its own single-threaded
/// runtime for the etcd client). Joining it gives the publisher back.
pub fn start<P: Publish>(
    inbox: Inbox,
    cluster: Cluster,
    loaded: Loaded,
    limits: StoreLimits,
    publish: P,
    freshness: Arc<Freshness>,
) -> JoinHandle<P> {
    let Loaded { state, next_id, revision } = loaded;
    freshness.heard();
    let writer = EtcdWriter {
        ids: IdBlocks::new(cluster.client.clone(), cluster.keys.next_id(), cluster.timeout),
        client: cluster.client.clone(),
        keys: cluster.keys.clone(),
        timeout: cluster.timeout,
        cluster,
        limits,
        resolver: Resolver::new(state, next_id, limits),
        publish,
        applied: revision,
        watch: None,
        last_commit_us: 0,
        freshness,
        reload_pending: false,
    };
    std::thread::Builder::new()
        .name("latchkey-writer".into())
        .spawn(move || {
            crate::store::exit_if_it_panics("writer", move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("the etcd writer's runtime");
                runtime.block_on(writer.run(inbox.0))
            })
        })
        .expect("spawn writer thread")
}

struct EtcdWriter<P> {
    /// For reloading the registry when etcd's history is gone.
    cluster: Cluster,
    limits: StoreLimits,
    client: Client,
    keys: Keys,
    timeout: Duration,
    resolver: Resolver,
    publish: P,
    /// The revision the state reflects.
    applied: i64,
    watch: Option<WatchStream>,
    last_commit_us: u64,
    /// Told each time etcd confirms the watch is current.
    freshness: Arc<Freshness>,
    /// etcd compacted history this node still needed: list afresh.
    reload_pending: bool,
    /// The ids this node's creates take.
    ids: IdBlocks,
}

/// What a transaction did.
enum Committed {
    Yes,
    /// A compare failed: someone changed what the change relied on.
    Conflict,
}

impl<P: Publish> EtcdWriter<P> {
    async fn run(mut self, mut inbox: mpsc::Receiver<Message>) -> P {
        // While nothing changes, progress notifications still say the watch
        // is current (what keeps a quiet node from going stale).
        let mut progress = tokio::time::interval(PROGRESS_INTERVAL);
        progress.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = progress.tick() => {
                    if let Some(watch) = &mut self.watch {
                        let _ = watch.request_progress().await;
                    }
                }
                message = inbox.recv() => match message {
                    Some(Message::Change(change, origin, reply)) => {
                        let mut queue = vec![(change, origin, reply)];
                        let mut stop = false;
                        while queue.len() < QUEUE_TAKEN_MAX {
                            match inbox.try_recv() {
                                Ok(Message::Change(change, origin, reply)) => queue.push((change, origin, reply)),
                                Ok(Message::Stop) => {
                                    stop = true;
                                    break;
                                }
                                Err(_) => break,
                            }
                        }
                        self.commit_queue(queue).await;
                        if stop {
                            break;
                        }
                    }
                    Some(Message::Stop) | None => break,
                },
                () = self.follow() => {}
            }
        }
        inbox.close();
        self.publish
    }

    /// Commits the changes taken from the inbox in groups (see the module
    /// documentation), answering each. Each round walks the queue in order:
    /// a change that fits joins the group; one that does not (or whose
    /// origin already has a change waiting) waits for the next round, so a
    /// connection's pipelined changes (a create and then a delete of the
    /// same token) take effect in the order they were sent, while other
    /// connections' changes, concurrent with them, may go first. A round
    /// whose group is empty commits its first waiting change alone.
    async fn commit_queue(&mut self, queue: Vec<Queued>) {
        let mut queue: VecDeque<Waiting> = queue
            .into_iter()
            .map(|(change, origin, reply)| Waiting { change, origin, reply, lost: 0, since: Instant::now() })
            .collect();
        while !queue.is_empty() {
            if queue.len() == 1 {
                let waiting = queue.pop_front().expect("one change");
                self.commit_alone(waiting).await;
                return;
            }
            // Ids for as many creates as one group can hold, before any is
            // checked (almost always in hand already: the next block is
            // leased ahead). Without ids, the creates are answered 20002.
            let creates = queue.iter().filter(|waiting| matches!(waiting.change, Change::Create(_))).count();
            let wanted = creates.min(TXN_MUTATIONS_MAX) as u64;
            if let Err(code) = self.ids.ensure(wanted, self.resolver.next_id()).await {
                let (creates, rest): (VecDeque<Waiting>, VecDeque<Waiting>) =
                    queue.into_iter().partition(|waiting| matches!(waiting.change, Change::Create(_)));
                for waiting in creates {
                    let _ = waiting.reply.send(Err(code));
                }
                queue = rest;
                continue;
            }
            let commit_at_us = self.commit_time();
            let mut group = Group::new();
            let mut next_round = VecDeque::new();
            let mut blocked = HashSet::new();
            for waiting in queue.drain(..) {
                let taken = if waiting.origin != Origin::Alone && blocked.contains(&waiting.origin) {
                    None
                } else {
                    let mut mutations = Vec::new();
                    let checked = self.resolver.check(&waiting.change, commit_at_us, &mut mutations);
                    let groupable = !matches!(waiting.change, Change::PurgeExpired { .. } | Change::Snapshot)
                        && !mutations.is_empty()
                        && mutations.len() <= TXN_MUTATIONS_MAX;
                    // A refusal, or nothing to write, is fenced: alone.
                    match checked {
                        Ok(outcome) if groupable => self.admit(&mut group, outcome, mutations),
                        _ => None,
                    }
                };
                match taken {
                    Some(outcome) => group.members.push(Member { waiting, outcome }),
                    None => {
                        blocked.insert(waiting.origin);
                        next_round.push_back(waiting);
                    }
                }
            }
            let members = group.members.len();
            if members >= 2 {
                self.ids.take(group.ids_used, self.resolver.next_id());
                let started = std::time::Instant::now();
                match self.transact(&group.mutations).await {
                    Ok(Committed::Yes) => {
                        metrics::store_batch_committed(members as u64, started.elapsed());
                        for member in group.members {
                            let _ = member.waiting.reply.send(Ok(member.outcome));
                        }
                    }
                    // Another node changed what the group relied on (this
                    // node has caught up with it): the members are checked
                    // again in the next round, ahead of what waits behind
                    // them, each answered 20002 after too many lost races.
                    Ok(Committed::Conflict) => {
                        for member in group.members.into_iter().rev() {
                            let mut waiting = member.waiting;
                            waiting.lost += 1;
                            if waiting.lost > CONFLICTS_MAX && waiting.since.elapsed() > self.timeout {
                                tracing::warn!(
                                    lost = waiting.lost,
                                    "a change kept losing races in etcd; answered 20002"
                                );
                                let _ = waiting.reply.send(Err(ErrorCode::StorageUnavailable));
                            } else {
                                next_round.push_front(waiting);
                            }
                        }
                    }
                    Err(code) => {
                        for member in group.members {
                            let _ = member.waiting.reply.send(Err(code));
                        }
                    }
                }
            } else if let Some(member) = group.members.pop() {
                self.commit_alone(member.waiting).await;
            } else if let Some(waiting) = next_round.pop_front() {
                // Nothing fits a group: the first change goes alone.
                self.commit_alone(waiting).await;
            }
            queue = next_round;
        }
    }

    /// Commits one change by itself and answers it.
    async fn commit_alone(&mut self, waiting: Waiting) {
        let outcome = self.commit(&waiting.change).await;
        let _ = waiting.reply.send(outcome);
    }

    /// Takes a checked change into `group` if it fits: its keys disjoint
    /// from the group's, every user's count within the limit with the
    /// group's creates and deletes, the group's transaction within etcd's
    /// size limit. Its creates get the ids after the group's. Gives the
    /// change's outcome (with those ids) back if it was taken.
    fn admit(&self, group: &mut Group, outcome: Outcome, mut mutations: Vec<Mutation>) -> Option<Outcome> {
        if group.mutations.len() + mutations.len() > TXN_MUTATIONS_MAX {
            return None;
        }
        let ids_used = group.ids_used + self.give_ids(&mut mutations, group.ids_used)?;
        let mut parts = TxnParts::default();
        for mutation in &mutations {
            self.add(&mut parts, mutation);
        }
        let keys: BTreeSet<String> = parts.compared.into_iter().chain(parts.written).collect();
        if !keys.is_disjoint(&group.keys) {
            return None;
        }
        let state = self.resolver.state();
        let limit = i64::from(self.limits.max_tokens_per_user);
        for (user_id, delta) in &parts.counts {
            let before = i64::try_from(state.count_for(*user_id)).unwrap_or(i64::MAX);
            let grouped = group.counts.get(user_id).copied().unwrap_or(0);
            if *delta > 0 && before.saturating_add(grouped).saturating_add(*delta) > limit {
                return None;
            }
        }
        for (user_id, delta) in parts.counts {
            *group.counts.entry(user_id).or_default() += delta;
        }
        group.keys.extend(keys);
        group.ids_used = ids_used;
        let outcome = part(outcome, &mutations);
        group.mutations.extend(mutations);
        Some(outcome)
    }

    /// Gives the creates among `mutations` the ids in hand from the
    /// `from`-th on, in order; how many it gave, or `None` if too few are
    /// in hand. (The ids are taken only when a transaction carries them.)
    fn give_ids(&self, mutations: &mut [Mutation], from: u64) -> Option<u64> {
        let mut given = 0;
        for mutation in mutations {
            if let Mutation::Create(token) = mutation {
                token.id = self.ids.peek(from + given)?;
                given += 1;
            }
        }
        Some(given)
    }

    /// The commit time of the next change or group: the clock, never behind
    /// the last one.
    fn commit_time(&mut self) -> u64 {
        self.last_commit_us = now_us().max(self.last_commit_us);
        self.last_commit_us
    }

    /// Commits one change: checked against the state at `applied`, written
    /// with compares that it still holds, answered once applied here. A
    /// change over many tokens goes in several transactions, each checked
    /// anew (so each takes only what is left).
    async fn commit(&mut self, change: &Change) -> Result<Outcome, ErrorCode> {
        let mut done: Option<Outcome> = None;
        let mut conflicts = 0;
        let since = Instant::now();
        loop {
            let commit_at_us = self.commit_time();
            let mut mutations = Vec::new();
            let outcome = self.check_current(change, commit_at_us, &mut mutations).await?;
            if mutations.is_empty() {
                return Ok(merge(done, outcome));
            }
            let taken = mutations.len().min(TXN_MUTATIONS_MAX);
            let creates =
                mutations[..taken].iter().filter(|mutation| matches!(mutation, Mutation::Create(_)));
            let creates = creates.count() as u64;
            if creates > 0 {
                self.ids.ensure(creates, self.resolver.next_id()).await?;
                let given = self.give_ids(&mut mutations[..taken], 0);
                debug_assert_eq!(given, Some(creates), "ids were ensured");
                self.ids.take(creates, self.resolver.next_id());
            }
            let started = std::time::Instant::now();
            match self.transact(&mutations[..taken]).await? {
                Committed::Yes if taken == mutations.len() => {
                    metrics::store_batch_committed(1, started.elapsed());
                    return Ok(merge(done, part(outcome, &mutations)));
                }
                Committed::Yes => {
                    metrics::store_batch_committed(0, started.elapsed());
                    let so_far = merge(done, part(outcome, &mutations[..taken]));
                    // The cleaner asks for `max` at a time, and gets no more:
                    // one change must not hold this node's writes for long.
                    if let (Change::PurgeExpired { max }, Outcome::Purged { ids }) = (change, &so_far)
                        && ids.len() >= *max
                    {
                        return Ok(so_far);
                    }
                    done = Some(so_far);
                }
                Committed::Conflict => {
                    conflicts += 1;
                    if conflicts > CONFLICTS_MAX && since.elapsed() > self.timeout {
                        tracing::warn!(conflicts, "a change kept losing races in etcd; answered 20002");
                        return Err(ErrorCode::StorageUnavailable);
                    }
                }
            }
        }
    }

    /// Checks `change` against the state at `applied`. A change with
    /// something to write is checked again by its own transaction's
    /// compares; but a refusal (a name taken, a token not found) or a change
    /// with nothing to write (a revoke of a revoked token, a backup's
    /// snapshot) sends nothing to etcd, so before answering it, the node
    /// writes `meta/fence`, catches up to that write's revision and checks
    /// again: the answer is then as of a moment between the request and the
    /// reply, like every write's (linearizable), not as of this node's last
    /// event. The last-use flush and the cleaner, which answer no client,
    /// are not fenced.
    async fn check_current(
        &mut self,
        change: &Change,
        commit_at_us: u64,
        mutations: &mut Vec<Mutation>,
    ) -> Result<Outcome, ErrorCode> {
        let first = self.resolver.check(change, commit_at_us, mutations);
        let writes = first.is_ok() && !mutations.is_empty();
        if writes || matches!(change, Change::Touch(_) | Change::PurgeExpired { .. }) {
            return first;
        }
        let revision = self.fence().await?;
        self.catch_up(revision).await?;
        mutations.clear();
        self.resolver.check(change, commit_at_us, mutations)
    }

    /// Writes `meta/fence`: its revision is at least that of every change
    /// etcd acknowledged before it, and it comes back through the watch.
    async fn fence(&mut self) -> Result<i64, ErrorCode> {
        let key = self.keys.fence();
        let response = self.retried("fence write", |mut client| {
            let key = key.clone();
            async move { client.put(key, Vec::<u8>::new(), None).await }
        });
        let response = response.await?;
        Ok(response.header().map_or(0, |header| header.revision()))
    }

    /// Runs an etcd request under the request timeout. A request that never
    /// reached etcd (the connection to the member it was sent to was
    /// refused: that member is down) is sent again, so one member down does
    /// not fail the requests that happened to pick it; any other failure is
    /// answered 20002 with the outcome unknown.
    async fn retried<T, F, Fut>(&mut self, what: &'static str, mut request: F) -> Result<T, ErrorCode>
    where
        F: FnMut(Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        let deadline = Instant::now() + self.timeout;
        loop {
            match tokio::time::timeout_at(deadline, request(self.client.clone())).await {
                Ok(Ok(response)) => return Ok(response),
                Ok(Err(error)) if never_sent(&error) && Instant::now() < deadline => {
                    tracing::debug!(%error, what, "an etcd member refused the connection; sending again");
                    tokio::time::sleep(UNSENT_RETRY_PAUSE).await;
                }
                Ok(Err(error)) => {
                    tracing::warn!(%error, what, "etcd request failed; answered 20002 (outcome unknown)");
                    return Err(ErrorCode::StorageUnavailable);
                }
                Err(_) => {
                    tracing::warn!(timeout = ?self.timeout, what, "etcd request timed out; answered 20002 (outcome unknown)");
                    return Err(ErrorCode::StorageUnavailable);
                }
            }
        }
    }

    /// Runs one transaction and waits until this node has applied etcd's
    /// revision after it (its own events on success, the winner's on a
    /// conflict).
    async fn transact(&mut self, mutations: &[Mutation]) -> Result<Committed, ErrorCode> {
        let txn = self.txn(mutations);
        let response = self
            .retried("transaction", |mut client| {
                let txn = txn.clone();
                async move { client.txn(txn).await }
            })
            .await?;
        if response.succeeded() {
            // This change's own events carry the transaction's revision.
            let revision = response.header().map_or(0, |header| header.revision());
            self.catch_up(revision).await?;
            return Ok(Committed::Yes);
        }
        metrics::store_conflict();
        // The failure branch read every compared key: the latest revision
        // among them is a change this node has not applied yet. (A key that
        // is gone tells no revision; then wait for the next event at most
        // briefly.) Progress notifications are not used for this: an etcd
        // with the bug of etcd-io/etcd#15220 (Debian's 3.4.23 has it) may
        // send one ahead of events it has not sent yet.
        let seen = response
            .op_responses()
            .into_iter()
            .filter_map(|op| match op {
                TxnOpResponse::Get(got) => got.kvs().iter().map(|kv| kv.mod_revision()).max(),
                _ => None,
            })
            .max()
            .unwrap_or(0);
        if seen > self.applied {
            self.catch_up(seen).await?;
        } else {
            let _ = tokio::time::timeout(CONFLICT_WAIT, self.follow()).await;
        }
        Ok(Committed::Conflict)
    }

    /// Builds the transaction for `mutations`: their writes, and compares
    /// that everything their check read is as it was at `applied`; on
    /// failure it reads every compared key (see `transact`).
    fn txn(&self, mutations: &[Mutation]) -> Txn {
        let mut txn = TxnParts { applied: self.applied, ..TxnParts::default() };
        for mutation in mutations {
            self.add(&mut txn, mutation);
        }
        let state = self.resolver.state();
        for (user_id, delta) in std::mem::take(&mut txn.counts) {
            let key = self.keys.count(user_id);
            txn.unchanged(key.clone());
            let count = i64::try_from(state.count_for(user_id)).unwrap_or(i64::MAX) + delta;
            txn.ops.push(match u64::try_from(count) {
                Ok(0) | Err(_) => TxnOp::delete(key, None),
                Ok(count) => TxnOp::put(key, encode_number(count), None),
            });
        }
        let reads: Vec<TxnOp> = txn.compared.into_iter().map(|key| TxnOp::get(key, None)).collect();
        Txn::new().when(txn.compares).and_then(txn.ops).or_else(reads)
    }

    /// One mutation's compares and writes. (The counts of tokens per user
    /// are written once per transaction, by `txn`. A create's id is this
    /// node's, from its block: nothing about it is compared.)
    fn add(&self, txn: &mut TxnParts, mutation: &Mutation) {
        let keys = &self.keys;
        let state = self.resolver.state();
        let current = |id: u64, hash: &TokenHash| state.by_hash(hash).filter(|entry| entry.id == id);
        match mutation {
            Mutation::Create(token) => {
                let name_key = keys.name(token.user_id, &token.name);
                txn.absent(name_key.clone());
                txn.put(keys.token(token.user_id, token.id), encode_token(token));
                txn.put(name_key, encode_number(token.id));
                *txn.counts.entry(token.user_id).or_default() += 1;
            }
            Mutation::Delete { id, hash } => {
                let Some(entry) = current(*id, hash) else { return };
                let token_key = keys.token(entry.user_id, *id);
                txn.exists_unchanged(token_key.clone());
                txn.delete(token_key);
                txn.delete(keys.used(entry.user_id, *id));
                txn.delete(keys.name(entry.user_id, &entry.name));
                *txn.counts.entry(entry.user_id).or_default() -= 1;
            }
            Mutation::Touch { id, hash, used } => {
                let Some(entry) = current(*id, hash) else { return };
                txn.exists(keys.token(entry.user_id, *id));
                txn.unchanged(keys.used(entry.user_id, *id));
                txn.put(keys.used(entry.user_id, *id), encode_used(*id, *used));
            }
            Mutation::Revoke { id, hash, .. }
            | Mutation::Update { id, hash, .. }
            | Mutation::Access { id, hash, .. }
            | Mutation::Rotate { id, hash, .. }
            | Mutation::Reactivate { id, hash, .. } => {
                let Some(entry) = current(*id, hash) else { return };
                let token_key = keys.token(entry.user_id, *id);
                txn.exists_unchanged(token_key.clone());
                if let Mutation::Update { name, .. } = mutation
                    && *name != entry.name
                {
                    txn.absent(keys.name(entry.user_id, name));
                    txn.delete(keys.name(entry.user_id, &entry.name));
                    txn.put(keys.name(entry.user_id, name), encode_number(*id));
                }
                txn.put(token_key, encode_token(&changed_record(entry, hash, mutation)));
            }
        }
    }

    /// Waits until the state has applied the events of `revision` (there
    /// is at least one under the prefix). Bounded by the request timeout.
    async fn catch_up(&mut self, revision: i64) -> Result<(), ErrorCode> {
        let deadline = Instant::now() + self.timeout;
        while self.applied < revision {
            if tokio::time::timeout_at(deadline, self.follow()).await.is_err() {
                tracing::warn!(revision, applied = self.applied, "the etcd watch did not catch up in time");
                return Err(ErrorCode::StorageUnavailable);
            }
        }
        Ok(())
    }

    /// Applies the next watch message (or re-establishes the watch). Safe to
    /// cancel: nothing is half-applied across an await.
    async fn follow(&mut self) {
        if self.reload_pending {
            self.reload().await;
            return;
        }
        let Some(watch) = &mut self.watch else {
            self.rewatch().await;
            return;
        };
        match watch.message().await {
            Ok(Some(response)) => self.apply(response),
            Ok(None) => {
                tracing::warn!("the etcd watch ended; watching again");
                self.watch = None;
            }
            Err(error) => {
                tracing::warn!(%error, "the etcd watch failed; watching again");
                self.watch = None;
            }
        }
    }

    /// Lists the registry afresh at a new revision and puts it in place of
    /// the state and the readers' registry (nothing lost, nothing applied
    /// twice: the watch goes on from the listed revision). A failed list is
    /// retried; meanwhile the node hears nothing, so it goes stale.
    async fn reload(&mut self) {
        match self.cluster.load().await {
            Ok(Loaded { state, next_id, revision }) => {
                tracing::info!(tokens = state.len(), revision, "registry reloaded from etcd");
                self.publish.replace(state.clone());
                self.resolver = Resolver::new(state, next_id, self.limits);
                self.applied = revision;
                self.reload_pending = false;
                self.freshness.heard();
            }
            Err(error) => {
                tracing::warn!(%error, "cannot reload the registry from etcd; retrying");
                tokio::time::sleep(REWATCH_PAUSE).await;
            }
        }
    }

    /// Watches the prefix from the revision after `applied`.
    async fn rewatch(&mut self) {
        let options =
            WatchOptions::new().with_prefix().with_start_revision(self.applied + 1).with_progress_notify();
        match self.client.watch(self.keys.prefix(), Some(options)).await {
            Ok(watch) => self.watch = Some(watch),
            Err(error) => {
                tracing::warn!(%error, "cannot watch etcd; retrying");
                tokio::time::sleep(REWATCH_PAUSE).await;
            }
        }
    }

    /// Turns one watch message into the registry's mutations, applies them
    /// to the state and publishes them to the readers.
    fn apply(&mut self, response: WatchResponse) {
        if response.canceled() {
            if response.compact_revision() > 0 {
                tracing::warn!(
                    compacted_to = response.compact_revision(),
                    applied = self.applied,
                    "etcd compacted the history this node had not seen yet; reloading the registry"
                );
                self.reload_pending = true;
            } else {
                tracing::warn!(
                    reason = response.cancel_reason(),
                    "the etcd watch was canceled; watching again"
                );
            }
            self.watch = None;
            return;
        }
        let mut batch = Vec::new();
        for event in response.events() {
            let Some(kv) = event.kv() else { continue };
            let mutation = match (self.keys.parse(kv.key()), event.event_type()) {
                (Named::Token { user_id, id }, EventType::Put) => match decode_token(kv.value()) {
                    Ok(token) => self.token_put(user_id, id, token),
                    Err(reason) => damaged(kv.key(), &reason),
                },
                (Named::Token { user_id, id }, EventType::Delete) => self
                    .found(user_id, id)
                    .map(|(hash, _)| vec![Mutation::Delete { id, hash }])
                    .unwrap_or_default(),
                (Named::Used { user_id, id }, EventType::Put) => {
                    match (decode_used(kv.value()), self.found(user_id, id)) {
                        (Ok(used), Some((hash, _))) => vec![Mutation::Touch { id, hash, used }],
                        (Err(reason), _) => damaged(kv.key(), &reason),
                        (Ok(_), None) => Vec::new(),
                    }
                }
                (Named::NextId, EventType::Put) => {
                    match decode_number(kv.value()) {
                        Ok(next_id) => self.resolver.raise_next_id(next_id),
                        Err(reason) => {
                            damaged(kv.key(), &reason);
                        }
                    }
                    Vec::new()
                }
                _ => Vec::new(),
            };
            // One at a time: a later event of the same message is read
            // against the state this one leaves.
            self.resolver.apply(&mutation);
            batch.extend(mutation);
            self.applied = self.applied.max(kv.mod_revision());
        }
        // A progress notification (no events) says the connection is alive,
        // and moves nothing: `applied` counts only events applied, since the
        // compares rely on it and an etcd with etcd-io/etcd#15220 may send
        // a progress revision ahead of events it has yet to send.
        let made = self.resolver.take_made();
        if !batch.is_empty() {
            self.publish.publish(Batch::new(batch, made));
        }
        self.freshness.heard();
    }

    /// A token as the state has it: its hash and entry.
    fn found(&self, user_id: u32, id: u64) -> Option<(TokenHash, TokenEntry)> {
        self.resolver.state().by_user_and_id(user_id, id).map(|(hash, entry)| (*hash, entry.clone()))
    }

    /// A token written: new here, or what changed in it.
    fn token_put(&mut self, user_id: u32, id: u64, token: TokenRecord) -> Vec<Mutation> {
        let Some((hash, old)) = self.found(user_id, id) else {
            // This node's own creates took their ids before they were sent,
            // so a new token with an id still in hand here was made by
            // someone who did not lease it (the counter moved back, or a
            // writer that ignores it): give up those ids rather than
            // hand one out twice.
            if self.ids.holds(id) {
                tracing::error!(
                    id,
                    "a token was made with an id this node leased; its id blocks are dropped"
                );
                self.ids.abandon();
            }
            return vec![Mutation::Create(token)];
        };
        let mut mutations = Vec::new();
        let mut current = hash;
        let reactivated = token.revoked_at_us.is_none() && old.revoked_at_us.is_some();
        if token.hash != hash {
            let (new_hash, expiry_at_us) = (token.hash, token.expiry_at_us);
            mutations.push(if reactivated {
                Mutation::Reactivate { id, hash, new_hash, expiry_at_us }
            } else {
                Mutation::Rotate { id, hash, new_hash, expiry_at_us }
            });
            current = token.hash;
        } else if reactivated {
            // Every writer clears a revocation only with a new secret: the
            // old one was stopped on purpose. Kept revoked here (fails closed).
            tracing::error!(token_id = id, "etcd holds a revocation cleared without a new secret; ignored");
        }
        if let (Some(at_us), None) = (token.revoked_at_us, old.revoked_at_us) {
            mutations.push(Mutation::Revoke { id, hash: current, at_us });
        }
        let old_extras = old.extras.as_deref().cloned().unwrap_or_default();
        let new_extras = token.extras.as_deref().cloned().unwrap_or_default();
        if token.name != old.name || new_extras.description != old_extras.description {
            mutations.push(Mutation::Update { id, hash: current, name: token.name, extras: token.extras });
        } else if new_extras.scopes != old_extras.scopes || new_extras.networks != old_extras.networks {
            mutations.push(Mutation::Access { id, hash: current, extras: token.extras });
        }
        mutations
    }
}

/// A change waiting in the inbox, who queued it, and where its answer goes.
type Queued = (Change, Origin, oneshot::Sender<Result<Outcome, ErrorCode>>);

/// A queued change in a round of grouping, with the races its groups lost.
struct Waiting {
    change: Change,
    origin: Origin,
    reply: oneshot::Sender<Result<Outcome, ErrorCode>>,
    lost: u32,
    /// When it was taken from the inbox.
    since: Instant,
}

/// Changes committed together in one transaction.
struct Group {
    members: Vec<Member>,
    /// Every member's mutations, in order.
    mutations: Vec<Mutation>,
    /// Keys the members compare or write (the id counter and the counts
    /// excepted): no two members share one.
    keys: BTreeSet<String>,
    /// Each user's change in token count so far.
    counts: HashMap<u32, i64>,
    /// Ids in hand the members' creates took (the first ones).
    ids_used: u64,
}

struct Member {
    waiting: Waiting,
    outcome: Outcome,
}

impl Group {
    fn new() -> Group {
        Group {
            members: Vec::new(),
            mutations: Vec::new(),
            keys: BTreeSet::new(),
            counts: HashMap::new(),
            ids_used: 0,
        }
    }
}

/// A transaction being built: compares, writes, the keys compared (read
/// back on failure) and written, and each user's change in token count.
#[derive(Default)]
struct TxnParts {
    applied: i64,
    compares: Vec<Compare>,
    ops: Vec<TxnOp>,
    compared: BTreeSet<String>,
    written: BTreeSet<String>,
    counts: HashMap<u32, i64>,
}

impl TxnParts {
    fn put(&mut self, key: String, value: Vec<u8>) {
        self.written.insert(key.clone());
        self.ops.push(TxnOp::put(key, value, None));
    }

    fn delete(&mut self, key: String) {
        self.written.insert(key.clone());
        self.ops.push(TxnOp::delete(key, None));
    }

    /// `key` has not changed since the revision the state reflects.
    fn unchanged(&mut self, key: String) {
        self.compared.insert(key.clone());
        self.compares.push(Compare::mod_revision(key, CompareOp::Less, self.applied + 1));
    }

    fn exists(&mut self, key: String) {
        self.compared.insert(key.clone());
        self.compares.push(Compare::version(key, CompareOp::Greater, 0));
    }

    fn exists_unchanged(&mut self, key: String) {
        self.exists(key.clone());
        self.unchanged(key);
    }

    fn absent(&mut self, key: String) {
        self.compared.insert(key.clone());
        self.compares.push(Compare::create_revision(key, CompareOp::Equal, 0));
    }
}

/// The token record a revoke, update, access edit, rotate or reactivation
/// leaves.
fn changed_record(entry: &TokenEntry, hash: &TokenHash, mutation: &Mutation) -> TokenRecord {
    let mut record = entry.record(hash, None);
    match mutation {
        Mutation::Revoke { at_us, .. } => {
            record.revoked_at_us.get_or_insert(*at_us);
        }
        Mutation::Update { name, extras, .. } => {
            record.name = Arc::clone(name);
            record.extras = extras.clone();
        }
        Mutation::Access { extras, .. } => {
            record.extras = extras.clone();
        }
        Mutation::Rotate { new_hash, expiry_at_us, .. } => {
            record.hash = *new_hash;
            record.expiry_at_us = *expiry_at_us;
        }
        Mutation::Reactivate { new_hash, expiry_at_us, .. } => {
            record.hash = *new_hash;
            record.expiry_at_us = *expiry_at_us;
            record.revoked_at_us = None;
        }
        Mutation::Create(_) | Mutation::Delete { .. } | Mutation::Touch { .. } => {}
    }
    record
}

/// A value in etcd that does not decode: logged, and left out of the
/// registry (a token that cannot be read cannot log in: fails closed).
fn damaged(key: &[u8], reason: &str) -> Vec<Mutation> {
    tracing::error!(key = %String::from_utf8_lossy(key), reason, "damaged value in etcd; ignored");
    Vec::new()
}

/// The outcome of the part of a change that `mutations` committed.
/// (A create's outcome is its token as written: with the id it was given
/// here.)
fn part(outcome: Outcome, mutations: &[Mutation]) -> Outcome {
    match outcome {
        Outcome::Created(token) => match mutations.first() {
            Some(Mutation::Create(written)) => Outcome::Created(written.clone()),
            _ => Outcome::Created(token),
        },
        Outcome::Count(_) => Outcome::Count(u32::try_from(mutations.len()).unwrap_or(u32::MAX)),
        Outcome::Purged { .. } => Outcome::Purged {
            ids: mutations
                .iter()
                .filter_map(|mutation| match mutation {
                    Mutation::Delete { id, .. } => Some(*id),
                    _ => None,
                })
                .collect(),
        },
        other => other,
    }
}

/// Adds a change's parts up.
fn merge(done: Option<Outcome>, next: Outcome) -> Outcome {
    match (done, next) {
        (Some(Outcome::Count(a)), Outcome::Count(b)) => Outcome::Count(a.saturating_add(b)),
        (Some(Outcome::Purged { mut ids }), Outcome::Purged { ids: more }) => {
            ids.extend(more);
            Outcome::Purged { ids }
        }
        (_, next) => next,
    }
}
