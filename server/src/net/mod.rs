//! The TCP front door: accepting connections within the limits, and each
//! connection's life (`connection.rs`: framing detection, the burst loop,
//! timeouts, and the legacy framing; `framing.rs`: what a framing gives the
//! loop; `vsr.rs`: the 0.11 framing; `tls.rs`: the optional TLS layer).
//!
//! Admission is an RAII guard: a connection's slot (global and per address)
//! is given back when its task ends, however it ends. "Per address" counts
//! by the same key as the failed-login throttle (`auth/address.rs`): an IPv4
//! address, or an IPv6 client's network, so one subnet's addresses share
//! their slots. Shutdown reaches every
//! connection through its own signal, so waiting for it shares no lock.
//!
//! Must never: decide what a command does (that is `command/`'s), or close
//! a connection for anything but broken framing, a timeout, the peer, or
//! shutdown.

pub mod connection;
mod framing;
pub mod tls;
mod vsr;
mod waiting;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use atomic_waker::AtomicWaker;

use tokio::net::TcpListener;

use crate::auth::address::AddressKey;
use crate::command::Context;
use crate::config::Framing;
use crate::metrics::{self, RefusedReason};

/// Per-connection limits and settings from `[tcp]`.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    /// Zero disables.
    pub login_timeout: Duration,
    /// Zero disables.
    pub idle_timeout: Duration,
    pub max_requests_in_flight: usize,
    pub max_frame_size: u32,
    /// Largest 0.11 frame (`size`, header included).
    pub vsr_size_max: u32,
}

/// Why the acceptor turned a connection away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    TooManyConnections,
    TooManyFromAddress,
}

/// The server's connections: their settings, the counts admission keeps,
/// the sources of client ids and 0.11 session numbers, and their shutdown
/// signals.
pub struct Connections {
    pub limits: ConnectionLimits,
    /// The framing this listener speaks, or `Auto` to decide per connection.
    pub framing: Framing,
    /// `Some` when `[tcp.tls]` is on: every connection handshakes first.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// Source of GetMe client ids.
    client_ids: AtomicU32,
    /// Source of 0.11 session numbers; starts at 1 (the SDK refuses 0).
    vsr_sessions: AtomicU64,
    /// Connections open right now.
    open: AtomicUsize,
    /// Connections open right now per client address key (touched at
    /// connect and close only, never per request).
    open_per_ip: Mutex<HashMap<AddressKey, usize>>,
    stops: Arc<Mutex<Stops>>,
}

/// A connection's place within the limits; given back on drop.
pub struct Admission {
    connections: Arc<Connections>,
    key: AddressKey,
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.connections.open.fetch_sub(1, Ordering::Relaxed);
        let mut per_ip = lock(&self.connections.open_per_ip);
        if let Some(open) = per_ip.get_mut(&self.key) {
            *open -= 1;
            if *open == 0 {
                per_ip.remove(&self.key);
            }
        }
    }
}

impl Connections {
    pub fn new(
        limits: ConnectionLimits,
        framing: Framing,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> Connections {
        Connections {
            limits,
            framing,
            tls,
            client_ids: AtomicU32::new(1),
            vsr_sessions: AtomicU64::new(1),
            open: AtomicUsize::new(0),
            open_per_ip: Mutex::new(HashMap::new()),
            stops: Arc::new(Mutex::new(Stops::default())),
        }
    }

    /// Counts a new connection from a client counted as `key` in, or says
    /// why it is refused.
    pub fn admit(self: &Arc<Self>, key: AddressKey) -> Result<Admission, Refusal> {
        if self.open.load(Ordering::Relaxed) >= self.limits.max_connections {
            return Err(Refusal::TooManyConnections);
        }
        let mut per_ip = lock(&self.open_per_ip);
        let open = per_ip.entry(key).or_insert(0);
        if *open >= self.limits.max_connections_per_ip {
            return Err(Refusal::TooManyFromAddress);
        }
        *open += 1;
        self.open.fetch_add(1, Ordering::Relaxed);
        Ok(Admission { connections: Arc::clone(self), key })
    }

    /// Connections open right now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    pub(crate) fn next_client_id(&self) -> u32 {
        self.client_ids.fetch_add(1, Ordering::Relaxed)
    }

    fn next_vsr_session(&self) -> u64 {
        self.vsr_sessions.fetch_add(1, Ordering::Relaxed)
    }

    /// A new connection's shutdown signal.
    pub(crate) fn stop_signal(&self) -> StopSignal {
        let mut stops = lock(&self.stops);
        let stop = Arc::new(Stop { stopping: AtomicBool::new(stops.stopping), waker: AtomicWaker::new() });
        let key = stops.next;
        stops.next += 1;
        stops.signals.insert(key, Arc::clone(&stop));
        StopSignal { stop, key, stops: Arc::clone(&self.stops) }
    }

    /// Tells every connection, and every one opened from now on, to finish
    /// what it has read and close.
    pub fn stop_all(&self) {
        let mut stops = lock(&self.stops);
        stops.stopping = true;
        for stop in stops.signals.values() {
            stop.stopping.store(true, Ordering::Release);
            stop.waker.wake();
        }
    }
}

/// Accepts one connection and starts serving it, or refuses it (closed at
/// once, counted, and logged at most once a second).
pub async fn accept(
    listener: &TcpListener,
    connections: &Arc<Connections>,
    ctx: &Arc<Context>,
    refused: &mut RefusalLog,
) {
    match listener.accept().await {
        Ok((stream, peer)) => match connections.admit(ctx.auth.throttle.address_key(peer.ip())) {
            Ok(admission) => {
                let (connections, ctx) = (Arc::clone(connections), Arc::clone(ctx));
                tokio::spawn(async move {
                    let _admission = admission;
                    connection::serve(stream, peer, &connections, &ctx).await;
                });
            }
            Err(refusal) => refused.note(refusal, peer),
        },
        Err(error) => {
            // Usually EMFILE: back off instead of spinning.
            tracing::warn!(%error, "accept failed");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Connections refused at accept (by either listener): each counted in the
/// metrics, logged at most once a second so a flood cannot flood the log too.
#[derive(Default)]
pub struct RefusalLog {
    since_last: u64,
    last: Option<Instant>,
}

impl RefusalLog {
    pub(crate) fn note(&mut self, refusal: Refusal, peer: SocketAddr) {
        metrics::connection_refused(match refusal {
            Refusal::TooManyConnections => RefusedReason::Total,
            Refusal::TooManyFromAddress => RefusedReason::PerAddress,
        });
        self.since_last += 1;
        let now = Instant::now();
        if self.last.is_none_or(|last| now.duration_since(last) >= Duration::from_secs(1)) {
            tracing::warn!(%peer, reason = ?refusal, refused = self.since_last, "connection refused: limit reached");
            self.since_last = 0;
            self.last = Some(now);
        }
    }
}

#[derive(Default)]
struct Stops {
    stopping: bool,
    next: u64,
    signals: HashMap<u64, Arc<Stop>>,
}

/// One connection's flag and the waker of the task that waits on it.
struct Stop {
    stopping: AtomicBool,
    waker: AtomicWaker,
}

/// A connection's own shutdown signal: a flag and a waker of its own, so
/// waiting on it takes no lock (the lock is taken once when the signal is
/// made and once when it is dropped, which deregisters it). One task waits
/// on it at a time: the connection's.
pub(crate) struct StopSignal {
    stop: Arc<Stop>,
    key: u64,
    stops: Arc<Mutex<Stops>>,
}

impl StopSignal {
    /// Whether shutdown has begun.
    pub(crate) fn is_stopping(&self) -> bool {
        self.stop.stopping.load(Ordering::Acquire)
    }

    /// Resolves once shutdown has begun.
    pub(crate) fn stopped(&self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(|cx| {
            if self.is_stopping() || self.register(cx.waker()) { Poll::Ready(()) } else { Poll::Pending }
        })
    }

    /// Leaves `waker` to be woken when shutdown begins; it stays until then
    /// (or until another is registered). Returns whether shutdown has begun:
    /// looked at after registering, so a stop in between has either found
    /// the waker or is seen here.
    pub(crate) fn register(&self, waker: &Waker) -> bool {
        self.stop.waker.register(waker);
        self.is_stopping()
    }
}

impl Drop for StopSignal {
    fn drop(&mut self) {
        lock(&self.stops).signals.remove(&self.key);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod metrics_tests;
