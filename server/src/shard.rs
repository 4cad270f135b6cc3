//! Shards: one thread each, with a current-thread runtime, its connections,
//! and its own [`Replica`] of the token registry.
//!
//! A connection lives its whole life on one shard, and every read it makes
//! (token login, list) is a plain borrow of that shard's replica: no lock,
//! no message to another thread, no disk. The writer reaches a shard only
//! through its channel, to apply a committed batch between two requests.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc as std_mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::{mpsc, watch};

use crate::config::Framing;
use crate::policy::TokenPolicy;
use crate::registry::{LastUsed, Mutation, Replica, TokenHash};
use crate::throttle::LoginThrottle;
use crate::users::{PasswordVerifier, Users};
use crate::writer::{Change, Publish, WriterHandle};

/// What every shard shares, read-only.
pub struct Shared {
    /// The user directory; SIGHUP swaps in a new one. Loads take no lock.
    pub users: ArcSwap<Users>,
    /// The token policy; SIGHUP swaps it too.
    pub policy: ArcSwap<TokenPolicy>,
    /// How often shards write gathered last uses to the log.
    pub last_used_flush_interval: Duration,
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
    /// Connections open right now, over all shards.
    pub connections: AtomicUsize,
    /// Connections open right now per client IP (touched at connect and
    /// close only, never per request).
    pub connections_per_ip: Mutex<HashMap<IpAddr, usize>>,
    pub limits: ConnectionLimits,
    pub throttle: LoginThrottle,
    pub shutdown: watch::Receiver<bool>,
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

/// A shard as its connections see it.
pub struct Shard {
    pub id: usize,
    pub shared: Arc<Shared>,
    replica: RefCell<Replica>,
    /// Last uses seen on this shard since the last flush, by token id.
    last_used: RefCell<HashMap<u64, (TokenHash, LastUsed)>>,
    /// This shard's own copy of the shutdown signal. Every waiting connection
    /// registers with it, so it must not be shared across threads: one
    /// channel for all shards would put a cross-thread lock on every read.
    pub shutdown: watch::Receiver<bool>,
}

impl Shard {
    /// Runs `read` against this shard's replica. The borrow cannot outlive
    /// the call, so no await point can hold it while the writer applies.
    pub fn read<R>(&self, read: impl FnOnce(&Replica) -> R) -> R {
        read(&self.replica.borrow())
    }

    /// Notes a successful use of a token; written to the log in the next
    /// flush. Costs one map insert: no lock, no I/O.
    pub fn note_use(&self, id: u64, hash: TokenHash, used: LastUsed) {
        self.last_used.borrow_mut().insert(id, (hash, used));
    }

    /// The freshest last use this shard knows for a token: its own unflushed
    /// one, or what the log has (flushed by any shard).
    pub fn last_used(&self, replica: &Replica, id: u64) -> Option<LastUsed> {
        let local = self.last_used.borrow().get(&id).map(|(_, used)| *used);
        match (local, replica.last_used(id)) {
            (Some(local), Some(logged)) => Some(if local.at_us >= logged.at_us { local } else { logged }),
            (local, logged) => local.or(logged),
        }
    }

    /// Sends the gathered last uses to the writer.
    ///
    /// The entries stay in the local map until the writer has applied them,
    /// so a list in between never reports an older last use; afterwards the
    /// ones not superseded meanwhile are dropped.
    async fn flush_last_used(&self) {
        let uses: Vec<_> =
            self.last_used.borrow().iter().map(|(id, (hash, used))| (*id, *hash, *used)).collect();
        if uses.is_empty() {
            return;
        }
        match self.shared.writer.submit(Change::Touch(uses.clone())).await {
            Ok(_) => {
                let mut pending = self.last_used.borrow_mut();
                for (id, _, used) in &uses {
                    if pending.get(id).is_some_and(|(_, now)| now.at_us == used.at_us) {
                        pending.remove(id);
                    }
                }
            }
            Err(code) => {
                tracing::warn!(shard = self.id, code = code.code(), "could not record last token uses")
            }
        }
    }
}

pub enum ShardMessage {
    Connection(std::net::TcpStream, SocketAddr),
    Apply(Arc<[Mutation]>, std_mpsc::Sender<()>),
    /// Send the gathered last uses to the writer now; ack once it answered.
    FlushLastUsed(std_mpsc::Sender<()>),
    Stop,
}

/// The running shards, as the acceptor and the writer see them.
pub struct Shards {
    senders: Vec<mpsc::UnboundedSender<ShardMessage>>,
    joins: Vec<JoinHandle<()>>,
    next: usize,
}

/// The writer's view of the shards: a set of channels to publish through.
#[derive(Clone)]
pub struct ShardPublisher {
    senders: Vec<mpsc::UnboundedSender<ShardMessage>>,
}

impl Publish for ShardPublisher {
    fn publish(&mut self, batch: Arc<[Mutation]>) {
        let (ack, acks) = std_mpsc::channel();
        let mut expected = 0;
        for sender in &self.senders {
            if sender.send(ShardMessage::Apply(Arc::clone(&batch), ack.clone())).is_ok() {
                expected += 1;
            }
        }
        drop(ack);
        // A shard that stopped drops its sender clone, so this cannot hang.
        for _ in 0..expected {
            if acks.recv().is_err() {
                break;
            }
        }
    }
}

/// Creates the channels first: the writer needs the publisher before the
/// shards (which need the writer's handle) can start.
pub fn channels(count: usize) -> (ShardPublisher, Vec<mpsc::UnboundedReceiver<ShardMessage>>) {
    let (senders, receivers) = (0..count).map(|_| mpsc::unbounded_channel()).unzip();
    (ShardPublisher { senders }, receivers)
}

impl Shards {
    /// Starts one thread per receiver, each with a copy of `replica`.
    pub fn start(
        publisher: &ShardPublisher,
        receivers: Vec<mpsc::UnboundedReceiver<ShardMessage>>,
        replica: &Arc<Replica>,
        shared: &Arc<Shared>,
    ) -> std::io::Result<Shards> {
        let mut joins = Vec::with_capacity(receivers.len());
        let (ready, readiness) = std_mpsc::channel();
        for (id, receiver) in receivers.into_iter().enumerate() {
            let shard = ShardSeed {
                id,
                replica: Arc::clone(replica),
                shared: Arc::clone(shared),
                ready: ready.clone(),
            };
            let join = std::thread::Builder::new()
                .name(format!("latchkey-shard-{id}"))
                .spawn(move || shard.run(receiver))?;
            joins.push(join);
        }
        // Each shard copies the recovered registry on its own thread, in
        // parallel; wait until all have, so "listening" means ready.
        drop(ready);
        for _ in 0..joins.len() {
            if readiness.recv().is_err() {
                break;
            }
        }
        Ok(Shards { senders: publisher.senders.clone(), joins, next: 0 })
    }

    pub fn len(&self) -> usize {
        self.senders.len()
    }

    pub fn is_empty(&self) -> bool {
        self.senders.is_empty()
    }

    /// Hands a new (admitted) connection to the next shard, round-robin.
    pub fn dispatch(&mut self, stream: std::net::TcpStream, peer: SocketAddr, shared: &Shared) {
        let index = self.next % self.senders.len();
        self.next = self.next.wrapping_add(1);
        if self.senders[index].send(ShardMessage::Connection(stream, peer)).is_err() {
            tracing::warn!(shard = index, %peer, "shard stopped; connection dropped");
            shared.release(peer.ip());
        }
    }

    /// Has every shard send its gathered last uses to the writer, and waits
    /// (at most `timeout`) until the writer has answered them all. Called at
    /// shutdown, before the writer stops.
    pub fn flush_last_used(&self, timeout: Duration) {
        let (ack, acks) = std_mpsc::channel();
        let sent = self
            .senders
            .iter()
            .filter(|sender| sender.send(ShardMessage::FlushLastUsed(ack.clone())).is_ok())
            .count();
        drop(ack);
        let deadline = std::time::Instant::now() + timeout;
        for _ in 0..sent {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if acks.recv_timeout(left).is_err() {
                tracing::warn!("last-used flush at shutdown did not finish in time");
                break;
            }
        }
    }

    /// Stops every shard (open connections are dropped) and joins the threads.
    pub fn stop(self) {
        for sender in &self.senders {
            let _ = sender.send(ShardMessage::Stop);
        }
        for join in self.joins {
            let _ = join.join();
        }
    }
}

/// What a shard thread starts from.
struct ShardSeed {
    id: usize,
    replica: Arc<Replica>,
    shared: Arc<Shared>,
    ready: std_mpsc::Sender<()>,
}

impl ShardSeed {
    fn run(self, mut receiver: mpsc::UnboundedReceiver<ShardMessage>) {
        let replica = Replica::clone(&self.replica);
        drop(self.replica);
        let _ = self.ready.send(());
        let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(runtime) => runtime,
            Err(error) => {
                tracing::error!(shard = self.id, %error, "cannot start shard runtime");
                return;
            }
        };
        let (local_shutdown, shutdown) = watch::channel(false);
        let mut global_shutdown = self.shared.shutdown.clone();
        let shard = Rc::new(Shard {
            id: self.id,
            shared: self.shared,
            replica: RefCell::new(replica),
            last_used: RefCell::new(HashMap::new()),
            shutdown,
        });
        let local = tokio::task::LocalSet::new();
        local.block_on(&runtime, async move {
            // The one task on this shard that waits on the process-wide signal.
            tokio::task::spawn_local(async move {
                while !*global_shutdown.borrow_and_update() {
                    if global_shutdown.changed().await.is_err() {
                        break;
                    }
                }
                let _ = local_shutdown.send(true);
            });
            // Last uses go to the log every interval; at shutdown the server
            // asks for a last flush (FlushLastUsed) before the writer stops.
            let flusher = Rc::clone(&shard);
            tokio::task::spawn_local(async move {
                let mut shutdown = flusher.shutdown.clone();
                let mut ticks = tokio::time::interval(flusher.shared.last_used_flush_interval);
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = ticks.tick() => flusher.flush_last_used().await,
                        _ = shutdown.wait_for(|stop| *stop) => break,
                    }
                }
            });
            while let Some(message) = receiver.recv().await {
                match message {
                    ShardMessage::Connection(stream, peer) => {
                        // Admitted (and counted) by the acceptor; released here.
                        let shard = Rc::clone(&shard);
                        tokio::task::spawn_local(async move {
                            crate::connection::serve(stream, peer, &shard).await;
                            shard.shared.release(peer.ip());
                        });
                    }
                    ShardMessage::Apply(batch, ack) => {
                        let mut replica = shard.replica.borrow_mut();
                        for mutation in batch.iter() {
                            replica.apply(mutation);
                        }
                        drop(replica);
                        let _ = ack.send(());
                    }
                    ShardMessage::FlushLastUsed(ack) => {
                        let shard = Rc::clone(&shard);
                        tokio::task::spawn_local(async move {
                            shard.flush_last_used().await;
                            let _ = ack.send(());
                        });
                    }
                    ShardMessage::Stop => break,
                }
            }
        });
        // Dropping the LocalSet drops connections still open after the grace period.
    }
}
