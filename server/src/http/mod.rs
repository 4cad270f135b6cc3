//! The HTTP front door, beside the TCP one and on the same worker runtime:
//! metrics, health probes, the REST API under `/v1`, forward auth for
//! proxies, and token introspection.
//!
//! HTTP/1.1 only, served by hyper per connection, so the accept loop keeps
//! what the TCP side has: admission as an RAII guard within `[http]`'s own
//! connection limits (per address counted by the same key as the throttle),
//! TLS from `[http.tls]`, and a shutdown signal per connection. Limits: the
//! request head (`max_header_bytes`, 431), a connection that starts no
//! request for an `idle_timeout` (closed: idle, or a head sent too slowly),
//! the body (`max_body_bytes`, 413) and the time to send it
//! (`request_timeout`, 408).
//!
//! Every route runs the same command code as the binary protocol
//! (`command/`): a REST request logs in with its credentials and runs the
//! matching request, so rules, limits and error codes are written once.
//! Files: [`routes`] maps paths to handlers; `input.rs` what a request
//! brings (body, fields, credentials); `rest.rs` the token API;
//! `check.rs` forward auth and introspection; `console/` the web console's
//! pages and browser sessions; `rabbitmq.rs` RabbitMQ's
//! HTTP auth backend; `admin.rs` root's online backup; `probes.rs` health,
//! readiness
//! and metrics; `client.rs` the client address behind trusted proxies;
//! `reply.rs` responses and errors; `openapi.json` the API's description.
//!
//! Must never: decide what a command does (that is `command/`'s), put a
//! secret in a URL, a log line or an error body, answer a forward-auth
//! deny with a 5xx or 429 (proxies turn those into 500s), or let the
//! console's cookie change anything without its CSRF header.

mod admin;
mod check;
mod client;
mod console;
mod input;
mod probes;
mod rabbitmq;
mod reply;
mod rest;
mod routes;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

use crate::command::{Context, Session};
use crate::config::HttpConfig;
use crate::net::{ConnectionLimits, Connections, RefusalLog};
use client::TrustedProxies;

/// What every HTTP connection shares: the settings from `[http]`.
pub struct HttpSide {
    connections: Arc<Connections>,
    trusted: TrustedProxies,
    max_header_bytes: usize,
    max_body_bytes: usize,
    idle_timeout: Duration,
    request_timeout: Duration,
    /// Where the binary protocol listens (for `/readyz`).
    tcp_address: SocketAddr,
    /// The web console and its sessions, when `[http] console` is on.
    console: Option<console::Console>,
}

impl HttpSide {
    pub fn new(
        config: &HttpConfig,
        tls: Option<tokio_rustls::TlsAcceptor>,
        tcp_address: SocketAddr,
    ) -> HttpSide {
        let limits = ConnectionLimits {
            max_connections: config.max_connections,
            max_connections_per_ip: config.max_connections_per_ip,
            // hyper's own timers apply instead (see the module doc).
            login_timeout: Duration::ZERO,
            idle_timeout: Duration::ZERO,
            max_requests_in_flight: 1,
            max_frame_size: 0,
            vsr_size_max: 0,
        };
        HttpSide {
            connections: Arc::new(Connections::new(limits, crate::config::Framing::Auto, tls)),
            trusted: TrustedProxies::new(&config.trusted_proxies),
            max_header_bytes: config.max_header_bytes,
            max_body_bytes: config.max_body_bytes,
            idle_timeout: config.idle_timeout,
            request_timeout: config.request_timeout,
            tcp_address,
            console: config.console.then(console::Console::default),
        }
    }

    /// HTTP connections open right now.
    pub fn open(&self) -> usize {
        self.connections.open()
    }

    /// Tells every HTTP connection to finish its request in flight and close.
    pub fn stop_all(&self) {
        self.connections.stop_all();
    }
}

/// One HTTP connection's state, shared by its requests (one at a time).
pub(crate) struct Exchange {
    pub ctx: Arc<Context>,
    pub side: Arc<HttpSide>,
    pub peer: SocketAddr,
    /// Never logged in: it carries the token uses forward auth records, so
    /// a kept-alive connection hands them over in bulk like a TCP one.
    /// Locked by one request at a time, never across an await.
    pub uses: Mutex<Session>,
    /// Requests begun and answered, shared with the connection's watcher.
    activity: Arc<Activity>,
}

/// Requests begun and answered on one connection, for the idle check.
#[derive(Default)]
struct Activity {
    started: AtomicU64,
    answered: AtomicU64,
}

impl Drop for Exchange {
    fn drop(&mut self) {
        let uses = self.uses.get_mut().unwrap_or_else(|poisoned| poisoned.into_inner()).take_uses();
        self.ctx.uses.hand_over(uses);
    }
}

/// Accepts one HTTP connection and starts serving it, or refuses it.
pub async fn accept(
    listener: &TcpListener,
    side: &Arc<HttpSide>,
    ctx: &Arc<Context>,
    refused: &mut RefusalLog,
) {
    match listener.accept().await {
        Ok((stream, peer)) => match side.connections.admit(ctx.auth.throttle.address_key(peer.ip())) {
            Ok(admission) => {
                let (side, ctx) = (Arc::clone(side), Arc::clone(ctx));
                tokio::spawn(async move {
                    let _admission = admission;
                    serve(stream, peer, side, ctx).await;
                });
            }
            Err(refusal) => refused.note(refusal, peer),
        },
        Err(error) => {
            tracing::warn!(%error, "HTTP accept failed");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn serve(stream: TcpStream, peer: SocketAddr, side: Arc<HttpSide>, ctx: Arc<Context>) {
    let _open = crate::metrics::OpenConnection::new(crate::metrics::ConnKind::Http);
    let _ = stream.set_nodelay(true);
    let client_id = side.connections.next_client_id();
    let exchange = Arc::new(Exchange {
        ctx,
        side: Arc::clone(&side),
        peer,
        uses: Mutex::new(Session::new(client_id, peer)),
        activity: Arc::default(),
    });
    match &side.connections.tls {
        None => converse(stream, exchange).await,
        Some(acceptor) => {
            // The handshake gets the time a request head gets.
            match tokio::time::timeout(side.idle_timeout, acceptor.accept(stream)).await {
                Ok(Ok(stream)) => converse(stream, exchange).await,
                Ok(Err(error)) => tracing::debug!(%peer, %error, "HTTPS handshake failed"),
                Err(_) => tracing::debug!(%peer, "HTTPS handshake timed out"),
            }
        }
    }
}

/// Serves requests on one connection until the peer closes, it idles (see
/// below), or shutdown (which lets the request in flight finish).
///
/// Idle connections are found by one timer per connection, not hyper's
/// per-request head timer (which costs a timer registration per request):
/// every `idle_timeout`, a connection that began no request in the whole
/// period and has none in flight is closed. An idle connection, or one
/// that sends a head too slowly, so lasts one to two `idle_timeout`s.
///
/// The timer and the shutdown signal wait in a task of their own
/// ([`watch`]), which sends one word when the connection must end: this
/// task is woken for every request, and would otherwise poll both (a lock
/// for the signal, a waker swap for the timer) on each wake-up besides
/// the connection.
async fn converse<S>(stream: S, exchange: Arc<Exchange>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let side = Arc::clone(&exchange.side);
    let stop = side.connections.stop_signal();
    let serving = Arc::clone(&exchange);
    let service = service_fn(move |request: hyper::Request<Incoming>| {
        let exchange = Arc::clone(&serving);
        async move {
            exchange.activity.started.fetch_add(1, Ordering::Relaxed);
            let reply = routes::respond(request, &exchange).await;
            // Answered once hyper has written the body and dropped it, so a
            // response still being written counts as in flight.
            Ok::<_, Infallible>(reply.map(|body| Answering { body, exchange }))
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.header_read_timeout(None).max_buf_size(side.max_header_bytes).keep_alive(true);
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    if stop.is_stopping() {
        connection.as_mut().graceful_shutdown();
    }
    let (ending_tx, mut ending) = oneshot::channel();
    // Dropped when this function returns, which ends the watcher.
    let (_ended_tx, ended) = oneshot::channel::<()>();
    tokio::spawn(watch(stop, Arc::clone(&exchange.activity), side.idle_timeout, ending_tx, ended));
    tokio::select! {
        biased;
        result = connection.as_mut() => finished(result),
        Ok(why) = &mut ending => match why {
            Ending::Stop => {
                connection.as_mut().graceful_shutdown();
                finished(connection.await);
            }
            Ending::Idle => {
                tracing::debug!(peer = %exchange.peer, "HTTP connection idle past idle_timeout: closed");
            }
        },
    }
}

/// Why a connection's watcher ends it.
enum Ending {
    /// Shutdown: finish the request in flight, then close.
    Stop,
    /// No request begun for a whole `idle_timeout`, none in flight: close.
    Idle,
}

/// Waits for shutdown or for the connection to idle (see [`converse`]),
/// and says which on `ending`; returns without a word once `ended` fires
/// (the connection is over).
async fn watch(
    stop: crate::net::StopSignal,
    activity: Arc<Activity>,
    idle_timeout: Duration,
    ending: oneshot::Sender<Ending>,
    mut ended: oneshot::Receiver<()>,
) {
    let mut seen = 0;
    loop {
        tokio::select! {
            _ = &mut ended => return,
            () = stop.stopped() => {
                let _ = ending.send(Ending::Stop);
                return;
            }
            () = tokio::time::sleep(idle_timeout) => {
                let started = activity.started.load(Ordering::Relaxed);
                if started == seen && activity.answered.load(Ordering::Relaxed) == started {
                    let _ = ending.send(Ending::Idle);
                    return;
                }
                seen = started;
            }
        }
    }
}

/// A response body that counts its request as answered when dropped.
struct Answering {
    body: http_body_util::Full<bytes::Bytes>,
    exchange: Arc<Exchange>,
}

impl Drop for Answering {
    fn drop(&mut self) {
        self.exchange.activity.answered.fetch_add(1, Ordering::Relaxed);
    }
}

impl hyper::body::Body for Answering {
    type Data = bytes::Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, Infallible>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

fn finished(result: Result<(), hyper::Error>) {
    if let Err(error) = result {
        // Timeouts, oversized heads and peers that vanish end up here.
        tracing::debug!(%error, "HTTP connection ended");
    }
}
