//! The HTTP front door, beside the TCP one and on the same worker runtime:
//! metrics, health probes, the REST API under `/v1`, forward auth for
//! proxies, and token introspection.
//!
//! HTTP/1.1 only, served by hyper per connection, so the accept loop keeps
//! what the TCP side has: admission as an RAII guard within `[http]`'s own
//! connection limits (per address counted by the same key as the throttle),
//! TLS from `[http.tls]`, and a shutdown signal per connection. Limits on
//! each request: the head (`max_header_bytes`, 431), the time to send it
//! (`idle_timeout`, which also closes idle kept-alive connections), the
//! body (`max_body_bytes`, 413) and the time to send it and be answered
//! (`request_timeout`, 408).
//!
//! Every route runs the same command code as the binary protocol
//! (`command/`): a REST request logs in with its credentials and runs the
//! matching request, so rules, limits and error codes are written once.
//! Files: [`routes`] maps paths to handlers; `input.rs` what a request
//! brings (body, fields, credentials); `rest.rs` the token API;
//! `check.rs` forward auth and introspection; `rabbitmq.rs` RabbitMQ's
//! HTTP auth backend; `probes.rs` health, readiness
//! and metrics; `client.rs` the client address behind trusted proxies;
//! `reply.rs` responses and errors; `openapi.json` the API's description.
//!
//! Must never: decide what a command does (that is `command/`'s), put a
//! secret in a URL, a log line or an error body, or answer a forward-auth
//! deny with a 5xx or 429 (proxies turn those into 500s).

mod check;
mod client;
mod input;
mod probes;
mod rabbitmq;
mod reply;
mod rest;
mod routes;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};

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

/// Serves requests on one connection until the peer closes, a limit closes
/// it, or shutdown (which lets the request in flight finish).
async fn converse<S>(stream: S, exchange: Arc<Exchange>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let side = Arc::clone(&exchange.side);
    let mut stop = side.connections.stop_signal();
    let service = service_fn(move |request: hyper::Request<Incoming>| {
        let exchange = Arc::clone(&exchange);
        async move { Ok::<_, Infallible>(routes::respond(request, &exchange).await) }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(side.idle_timeout)
        .max_buf_size(side.max_header_bytes)
        .keep_alive(true);
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    let stopping = *stop.borrow_and_update();
    if stopping {
        connection.as_mut().graceful_shutdown();
    }
    tokio::select! {
        result = connection.as_mut() => finished(result),
        _ = stop.changed() => {
            connection.as_mut().graceful_shutdown();
            finished(connection.await);
        }
    }
}

fn finished(result: Result<(), hyper::Error>) {
    if let Err(error) = result {
        // Timeouts, oversized heads and peers that vanish end up here.
        tracing::debug!(%error, "HTTP connection ended");
    }
}
