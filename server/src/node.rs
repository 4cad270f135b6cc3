//! The running server as its connections see it: the shared settings and
//! limits, lock-free reads of the token registry, and the hand-over of
//! last-use times and of the shutdown signal.
//!
//! **Execution.** Connections are tasks on one work-stealing runtime with a
//! worker thread per core (`[system] shards`), so an idle core takes work
//! from a busy one: no connection waits behind another core's queue while
//! its own core sits idle (a thread-per-core layout cannot rebalance, and
//! its tail latency showed it; see BENCHMARKS.md).
//!
//! **Reads.** The registry is a `left_right` pair of [`Replica`]s. Every
//! worker thread has its own read handle (a thread-local), so a token login
//! or a list is one epoch counter bump on a cache line no other thread
//! writes, then a plain map lookup: no lock, no message, no disk. The log
//! writer is the only writer: it applies each committed batch to the copy
//! nobody reads, swaps the copies, and waits until no reader is left on the
//! old one before it applies the batch there too. After
//! [`RegistryPublisher::publish`] returns, every read that starts sees the
//! batch, which is when the writer acknowledges it.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use left_right::{ReadHandle, ReadHandleFactory, WriteHandle};
use tokio::sync::watch;

use crate::config::Framing;
use crate::policy::TokenPolicy;
use crate::registry::{LastUsed, Mutation, Replica, TokenHash};
use crate::throttle::LoginThrottle;
use crate::users::{PasswordVerifier, Users};
use crate::writer::{Change, Publish, WriterHandle};

/// What every connection shares, read-only apart from counters.
pub struct Shared {
    /// The user directory; SIGHUP swaps in a new one. Loads take no lock.
    pub users: ArcSwap<Users>,
    /// The token policy; SIGHUP swaps it too.
    pub policy: ArcSwap<TokenPolicy>,
    pub verifier: Arc<PasswordVerifier>,
    /// Key for `blake3::keyed_hash` of tokens.
    pub token_key: [u8; 32],
    pub writer: WriterHandle,
    pub max_frame_size: u32,
    /// Largest 0.11 frame (`size`, header included).
    pub vsr_size_max: u32,
    /// The framing this listener speaks, or `Auto` to decide per connection.
    pub framing: Framing,
    /// `Some` when `[tcp.tls]` is on: every connection handshakes first.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    pub local_addr: SocketAddr,
    /// Source of GetMe client ids.
    pub client_ids: AtomicU32,
    /// Source of 0.11 session numbers; starts at 1 (the SDK refuses 0).
    pub vsr_sessions: AtomicU64,
    /// Connections open right now.
    pub connections: AtomicUsize,
    /// Connections open right now per client IP (touched at connect and
    /// close only, never per request).
    pub connections_per_ip: Mutex<HashMap<IpAddr, usize>>,
    pub limits: ConnectionLimits,
    pub throttle: LoginThrottle,
}

/// Per-connection limits from `[tcp]`.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    /// Zero disables.
    pub login_timeout: Duration,
    /// Zero disables.
    pub idle_timeout: Duration,
    pub max_requests_in_flight: usize,
}

/// Why the acceptor turned a connection away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    TooManyConnections,
    TooManyFromAddress,
}

impl Shared {
    /// Counts a new connection in, or says why it is refused.
    pub fn admit(&self, ip: IpAddr) -> Result<(), Refusal> {
        if self.connections.load(Ordering::Relaxed) >= self.limits.max_connections {
            return Err(Refusal::TooManyConnections);
        }
        let mut per_ip = self.connections_per_ip.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let open = per_ip.entry(ip).or_insert(0);
        if *open >= self.limits.max_connections_per_ip {
            return Err(Refusal::TooManyFromAddress);
        }
        *open += 1;
        self.connections.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Counts a connection out.
    pub fn release(&self, ip: IpAddr) {
        self.connections.fetch_sub(1, Ordering::Relaxed);
        let mut per_ip = self.connections_per_ip.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(open) = per_ip.get_mut(&ip) {
            *open -= 1;
            if *open == 0 {
                per_ip.remove(&ip);
            }
        }
    }
}

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

/// Distinguishes servers in one process (tests) for the thread-local
/// read handles.
static NODE_IDS: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// This thread's read handle on a node's registry, made on first use.
    static READER: RefCell<Option<(u64, ReadHandle<Replica>)>> = const { RefCell::new(None) };
}

/// The server as a connection sees it.
pub struct Node {
    pub shared: Arc<Shared>,
    id: u64,
    registry: ReadHandleFactory<Replica>,
    /// Last uses handed over by connections, not yet in the log.
    uses: Mutex<Uses>,
    stops: Arc<Mutex<Stops>>,
}

#[derive(Default)]
struct Stops {
    stopping: bool,
    next: u64,
    senders: HashMap<u64, watch::Sender<bool>>,
}

/// A connection's own shutdown signal: its own channel, so waiting on it
/// shares no lock with any other connection. Deregisters on drop.
pub struct StopSignal {
    receiver: watch::Receiver<bool>,
    key: u64,
    stops: Arc<Mutex<Stops>>,
}

fn lock_stops(stops: &Mutex<Stops>) -> std::sync::MutexGuard<'_, Stops> {
    stops.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Deref for StopSignal {
    type Target = watch::Receiver<bool>;
    fn deref(&self) -> &watch::Receiver<bool> {
        &self.receiver
    }
}

impl DerefMut for StopSignal {
    fn deref_mut(&mut self) -> &mut watch::Receiver<bool> {
        &mut self.receiver
    }
}

impl Drop for StopSignal {
    fn drop(&mut self) {
        lock_stops(&self.stops).senders.remove(&self.key);
    }
}

/// What the writer hands to the registry pair.
pub enum RegistryOp {
    /// A committed batch, applied to each copy in turn.
    Batch(Arc<[Mutation]>),
    /// A whole recovered registry, moved into one copy (start-up only; the
    /// slot is emptied when taken, so the other copy ignores it).
    Load(Option<Box<Replica>>),
}

/// The writer's hook: applies committed batches to the registry pair.
pub struct RegistryPublisher(WriteHandle<Replica, RegistryOp>);

impl Publish for RegistryPublisher {
    fn publish(&mut self, batch: Arc<[Mutation]>) {
        self.0.append(RegistryOp::Batch(batch));
        self.0.publish();
    }
}

impl left_right::Absorb<RegistryOp> for Replica {
    fn absorb_first(&mut self, op: &mut RegistryOp, _other: &Self) {
        match op {
            RegistryOp::Batch(batch) => {
                for mutation in batch.iter() {
                    self.apply(mutation);
                }
            }
            RegistryOp::Load(slot) => {
                if let Some(loaded) = slot.take() {
                    *self = *loaded;
                }
            }
        }
    }

    /// Called once, on the second publish, for the copy that has not been
    /// loaded yet; [`Node::new`] loads it right after, in the same publish,
    /// so there is nothing to copy here.
    fn sync_with(&mut self, _first: &Self) {}
}

impl Node {
    /// The node and the writer's end of its registry, from two equal copies
    /// of the recovered state (the caller makes them in parallel): each is
    /// moved into one side of the pair, nothing is cloned here.
    pub fn new(shared: Arc<Shared>, first: Replica, second: Replica) -> (Arc<Node>, RegistryPublisher) {
        debug_assert_eq!(first.len(), second.len(), "the two copies must be equal");
        let (mut write, read) = left_right::new::<Replica, RegistryOp>();
        // Before the first publish left-right applies an op to one copy at
        // once; the second publish syncs the other (a no-op, see sync_with)
        // and then absorbs the second Load into it.
        write.append(RegistryOp::Load(Some(Box::new(first))));
        write.publish();
        write.append(RegistryOp::Load(Some(Box::new(second))));
        write.publish();
        let node = Node {
            shared,
            id: NODE_IDS.fetch_add(1, Ordering::Relaxed),
            registry: read.factory(),
            uses: Mutex::new(Uses::new()),
            stops: Arc::new(Mutex::new(Stops::default())),
        };
        (Arc::new(node), RegistryPublisher(write))
    }

    /// Runs `read` against the registry. The guard cannot outlive the call,
    /// so no await point can hold it and keep the writer waiting.
    pub fn read<R>(&self, read: impl FnOnce(&Replica) -> R) -> R {
        READER.with(|reader| {
            let mut reader = reader.borrow_mut();
            if reader.as_ref().is_none_or(|(node, _)| *node != self.id) {
                *reader = Some((self.id, self.registry.handle()));
            }
            let (_, handle) = reader.as_ref().expect("set above");
            // The writer's handle lives until the runtime is gone (see
            // server.rs), so the registry is always there to read.
            let guard = handle.enter().expect("the registry outlives every connection");
            read(&guard)
        })
    }

    /// Takes last uses from a connection; written to the log at the next
    /// flush.
    pub fn hand_over_uses(&self, uses: impl IntoIterator<Item = (u64, (TokenHash, LastUsed))>) {
        merge_uses(&mut self.lock_uses(), uses);
    }

    /// The freshest last use known for a token: handed over but not yet
    /// written, or what the log has.
    pub fn last_used(&self, replica: &Replica, id: u64) -> Option<LastUsed> {
        let pending = self.lock_uses().get(&id).map(|(_, used)| *used);
        LastUsed::later(pending, replica.last_used(id))
    }

    /// Sends the handed-over last uses to the writer. They stay visible (in
    /// the pending map) until the writer has applied them; then the ones
    /// not superseded meanwhile are dropped.
    pub async fn flush_last_used(&self) {
        let uses: Vec<_> = self.lock_uses().iter().map(|(id, (hash, used))| (*id, *hash, *used)).collect();
        if uses.is_empty() {
            return;
        }
        match self.shared.writer.submit(Change::Touch(uses.clone())).await {
            Ok(_) => {
                let mut pending = self.lock_uses();
                for (id, _, used) in &uses {
                    if pending.get(id).is_some_and(|(_, now)| now.at_us == used.at_us) {
                        pending.remove(id);
                    }
                }
            }
            Err(code) => tracing::warn!(code = code.code(), "could not record last token uses"),
        }
    }

    /// A new connection's shutdown signal.
    pub fn stop_signal(&self) -> StopSignal {
        let mut stops = lock_stops(&self.stops);
        let (sender, receiver) = watch::channel(stops.stopping);
        let key = stops.next;
        stops.next += 1;
        stops.senders.insert(key, sender);
        StopSignal { receiver, key, stops: Arc::clone(&self.stops) }
    }

    /// Tells every connection, and every one opened from now on, to finish
    /// what it has read and close.
    pub fn stop_connections(&self) {
        let mut stops = lock_stops(&self.stops);
        stops.stopping = true;
        for sender in stops.senders.values() {
            let _ = sender.send(true);
        }
    }

    fn lock_uses(&self) -> std::sync::MutexGuard<'_, Uses> {
        self.uses.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
