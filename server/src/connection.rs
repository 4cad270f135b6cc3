//! One client connection: tell its framing apart, read frames, answer each
//! in order, write replies in one syscall per burst.
//!
//! Reading is "decode what is buffered, else read more". Every request that
//! is already buffered is answered before the replies are written, so a
//! pipelining client costs one read and one write per burst, while a
//! lockstep client (every Iggy SDK) sees one reply per request at once.
//! The connection closes only when the framing itself is broken (a declared
//! length over the limit), when the peer closes, or at shutdown.
//!
//! **Framing detection** (spec §0.2), once per connection, before the first
//! frame is decoded, when `[tcp] framing = "auto"`: read the first 4 bytes
//! (never more, so an 8-byte legacy Ping is answered at once).
//! - All zero: the 0.11 framing ([`crate::vsr`]). Those bytes are the low
//!   word of the header checksum, which the 0.11 SDK and CLI leave at 0; no
//!   legacy frame starts with them, as a legacy length is at least 4.
//! - Anything else: legacy. A length of 1–3 is a malformed legacy frame,
//!   answered with 3 as before.
//!
//! A forced framing skips detection. The legacy loop below is the hot path
//! the bench measures: detection runs once per connection, before it, and
//! adds nothing per request.

use std::net::SocketAddr;

use bytes::BytesMut;
use latchkey_protocol::codec::{Inbound, Reply, ServerCodec, encode_reply};
use latchkey_protocol::{ErrorCode, Request};
use std::pin::Pin;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};
use zeroize::Zeroize;

use crate::config::Framing;
use crate::dispatch::{self, PendingReply, ReplyBody, Session, Started};
use crate::node::{Node, StopSignal};

/// A byte stream a connection speaks over: a `TcpStream`, or a TLS stream
/// over one. The loops are generic over it, so each is compiled once per
/// transport and the plain path pays nothing for TLS existing.
pub(crate) trait Transport: AsyncRead + AsyncWrite + Unpin {}

impl<S: AsyncRead + AsyncWrite + Unpin> Transport for S {}

/// How long closing a TLS connection waits to send its close_notify alert
/// (only a peer that stopped reading makes it wait at all).
const CLOSE_NOTIFY_TIMEOUT: Duration = Duration::from_millis(500);

/// Initial read buffer; grows only for a frame larger than this.
pub(crate) const READ_BUFFER_BYTES: usize = 4096;
/// Bytes read before the framing is decided: one legacy length field, or the
/// low word of a 0.11 header checksum.
const FRAMING_PREFIX_BYTES: usize = 4;

pub async fn serve(mut stream: TcpStream, peer: SocketAddr, node: &Node) {
    let _ = stream.set_nodelay(true);
    let client_id = node.shared.client_ids.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut session = Session::new(client_id, peer);
    tracing::debug!(%peer, client_id, "connection opened");
    // The login timeout runs from here, so a silent client cannot hold a
    // connection by never sending its first bytes, nor by never finishing
    // its TLS handshake.
    let mut waiting = Waiting::new(node);
    let result = match &node.shared.tls {
        // Each arm is its own monomorphised copy of the loops: the plain
        // path reads and writes the TcpStream directly, with no indirection.
        None => converse(&mut stream, &mut session, node, waiting).await,
        Some(acceptor) => match waiting.bounded(acceptor.accept(stream)).await {
            Ok(Some(Ok(mut stream))) => {
                let result = converse(&mut stream, &mut session, node, waiting).await;
                // Best effort: tell the client the close is deliberate, not a truncation.
                let _ = tokio::time::timeout(CLOSE_NOTIFY_TIMEOUT, stream.shutdown()).await;
                result
            }
            Ok(Some(Err(error))) => Err(format!("TLS handshake failed: {error}")),
            Ok(None) => Ok(()),
            Err(reason) => Err(format!("{reason} during the TLS handshake")),
        },
    };
    // Token uses this connection has not handed over yet.
    node.hand_over_uses(session.take_uses());
    match result {
        Ok(()) => tracing::debug!(%peer, client_id, "connection closed"),
        Err(reason) => tracing::debug!(%peer, client_id, %reason, "connection closed"),
    }
}

/// Detects the framing (unless forced) and runs its loop, over plain TCP or
/// TLS alike.
async fn converse<S: Transport>(
    stream: &mut S,
    session: &mut Session,
    node: &Node,
    mut waiting: Waiting,
) -> Result<(), String> {
    let mut input = BytesMut::with_capacity(READ_BUFFER_BYTES);
    let framing = match node.shared.framing {
        Framing::Auto => detect(stream, &mut input, &mut waiting).await,
        forced => Ok(Some(forced)),
    };
    match framing? {
        Some(Framing::Vsr) => {
            tracing::debug!(peer = %session.peer(), "0.11 framing");
            crate::vsr::run(stream, input, session, node, waiting).await
        }
        Some(_) => run(stream, input, session, node, waiting).await,
        None => Ok(()),
    }
}

/// The framing a connection's first bytes announce (spec §0.2).
fn classify(prefix: [u8; FRAMING_PREFIX_BYTES]) -> Framing {
    if u32::from_le_bytes(prefix) == 0 { Framing::Vsr } else { Framing::Legacy }
}

/// Reads until the first [`FRAMING_PREFIX_BYTES`] bytes are in `input` and
/// classifies them. `Ok(None)`: the peer left (or shutdown began) first.
async fn detect<S: Transport>(
    stream: &mut S,
    input: &mut BytesMut,
    waiting: &mut Waiting,
) -> Result<Option<Framing>, String> {
    while input.len() < FRAMING_PREFIX_BYTES {
        if !waiting.read_more(stream, input, false).await? {
            return Ok(None);
        }
    }
    let mut prefix = [0u8; FRAMING_PREFIX_BYTES];
    prefix.copy_from_slice(&input[..FRAMING_PREFIX_BYTES]);
    Ok(Some(classify(prefix)))
}

/// The legacy loop. `input` may already hold the bytes detection read.
async fn run<S: Transport>(
    stream: &mut S,
    mut input: BytesMut,
    session: &mut Session,
    node: &Node,
    mut waiting: Waiting,
) -> Result<(), String> {
    let mut codec = ServerCodec::new(node.shared.max_frame_size);
    let mut output = BytesMut::with_capacity(READ_BUFFER_BYTES);
    let in_flight_max = node.shared.limits.max_requests_in_flight;
    // Replies of this burst still waiting for the log writer, in order.
    let mut queued: Vec<Queued> = Vec::new();
    loop {
        let mut answered = 0;
        while answered < in_flight_max {
            let inbound = match tokio_util::codec::Decoder::decode(&mut codec, &mut input) {
                Ok(Some(inbound)) => inbound,
                Ok(None) => break,
                Err(error) => {
                    // Answer what came before the bad frame, then close.
                    finish_queued(&mut queued, &mut output).await;
                    let _ = write_burst(stream, &mut output).await;
                    return Err(error.to_string());
                }
            };
            match checked_request(inbound, session) {
                // Token creates and deletes are queued with the writer at
                // once, so a pipelined burst of them shares one commit.
                Ok(request) if dispatch::may_start_ahead(&request) => {
                    queued.push(match dispatch::start(request, session, node).await {
                        Started::Done(reply) => Queued::Ready(reply),
                        Started::Pending(pending) => Queued::Pending(pending),
                    });
                }
                Err(code) if !queued.is_empty() => queued.push(Queued::Ready(Err(code))),
                // Everything else sees the outcome of what came before it.
                request => {
                    finish_queued(&mut queued, &mut output).await;
                    let reply = match request {
                        Ok(request) => dispatch::handle(request, session, node).await,
                        Err(code) => Err(code),
                    };
                    encode(&reply, &mut output);
                }
            }
            answered += 1;
        }
        finish_queued(&mut queued, &mut output).await;
        let more_buffered = answered == in_flight_max;
        if !waiting.next_burst(stream, &mut output, &mut input, more_buffered, session.is_logged_in()).await?
        {
            return Ok(());
        }
    }
}

/// Waiting for a client's next bytes, bounded by shutdown and by the login
/// and idle timeouts. Shared by both framings' loops.
pub(crate) struct Waiting {
    /// This connection's own shutdown signal (no lock shared with others).
    shutdown: StopSignal,
    timer: Pin<Box<Sleep>>,
    /// When the connection last became unauthenticated (connect or logout).
    unauthenticated_since: Instant,
    was_logged_in: bool,
    /// The real deadline and what it is for; the timer may be armed earlier
    /// (it is moved forward lazily, so a busy connection costs no timer work).
    deadline: Option<(Instant, &'static str)>,
    login_timeout: Duration,
    idle_timeout: Duration,
}

impl Waiting {
    pub(crate) fn new(node: &Node) -> Waiting {
        let now = Instant::now();
        let limits = node.shared.limits;
        Waiting {
            shutdown: node.stop_signal(),
            timer: Box::pin(tokio::time::sleep_until(now)),
            unauthenticated_since: now,
            was_logged_in: false,
            deadline: None,
            login_timeout: limits.login_timeout,
            idle_timeout: limits.idle_timeout,
        }
    }

    /// Ends a burst, for both framings' loops: writes the replies in
    /// `output` (one syscall), then, unless `more_buffered` (the in-flight
    /// cap stopped the burst), reads more input. `Ok(false)`: a clean end.
    pub(crate) async fn next_burst<S: Transport>(
        &mut self,
        stream: &mut S,
        output: &mut BytesMut,
        input: &mut BytesMut,
        more_buffered: bool,
        logged_in: bool,
    ) -> Result<bool, String> {
        write_burst(stream, output).await.map_err(|e| format!("write failed: {e}"))?;
        if more_buffered {
            // Answer what is already buffered before reading again.
            return Ok(true);
        }
        self.read_more(stream, input, logged_in).await
    }

    /// Reads more input. `Ok(false)`: a clean end (the peer closed between
    /// frames, or shutdown began); `Err`: why the connection must close.
    pub(crate) async fn read_more<S: Transport>(
        &mut self,
        stream: &mut S,
        input: &mut BytesMut,
        logged_in: bool,
    ) -> Result<bool, String> {
        if *self.shutdown.borrow() {
            return Ok(false);
        }
        self.rearm(logged_in);
        tokio::select! {
            read = stream.read_buf(input) => match read {
                Ok(0) if input.is_empty() => Ok(false),
                Ok(0) => Err(format!("peer closed mid-frame ({} bytes pending)", input.len())),
                Ok(_) => Ok(true),
                Err(error) => Err(format!("read failed: {error}")),
            },
            _ = self.shutdown.changed() => Ok(false),
            reason = expired(&mut self.timer, self.deadline) => Err(reason.to_owned()),
        }
    }

    /// Runs `step` (the TLS handshake) bounded as a read before login is:
    /// by shutdown and the login timeout. `Ok(None)`: shutdown began first;
    /// `Err`: the timeout passed (dropping `step` closes its socket).
    pub(crate) async fn bounded<T>(&mut self, step: impl Future<Output = T>) -> Result<Option<T>, String> {
        if *self.shutdown.borrow() {
            return Ok(None);
        }
        self.rearm(false);
        tokio::select! {
            output = step => Ok(Some(output)),
            _ = self.shutdown.changed() => Ok(None),
            reason = expired(&mut self.timer, self.deadline) => Err(reason.to_owned()),
        }
    }

    fn rearm(&mut self, logged_in: bool) {
        let now = Instant::now();
        if logged_in != self.was_logged_in {
            if !logged_in {
                self.unauthenticated_since = now;
            }
            self.was_logged_in = logged_in;
        }
        let (timeout, since, reason) = if logged_in {
            (self.idle_timeout, now, "idle timeout")
        } else {
            (self.login_timeout, self.unauthenticated_since, "login timeout")
        };
        let deadline = (!timeout.is_zero()).then(|| (since + timeout, reason));
        // Move the timer only when the deadline comes earlier than it is set
        // for; a later deadline is handled when the timer fires.
        if let Some((at, _)) = deadline
            && self.deadline.is_none_or(|(armed, _)| at < armed)
        {
            self.timer.as_mut().reset(at);
        }
        self.deadline = deadline;
    }
}

/// Writes a burst of replies and clears `output`: one `write` on plain TCP;
/// on TLS, records sealed into rustls's buffer and sent by the flush (one
/// vectored write). Flushing a TcpStream is a no-op.
pub(crate) async fn write_burst<S: Transport>(stream: &mut S, output: &mut BytesMut) -> std::io::Result<()> {
    if output.is_empty() {
        return Ok(());
    }
    stream.write_all(output).await?;
    // Replies may carry a new token's secret: leave no copy in the buffer.
    output.as_mut().zeroize();
    output.clear();
    stream.flush().await
}

/// Resolves once the real deadline has passed (re-arming the timer if it
/// fired early); never, if there is none.
async fn expired(timer: &mut Pin<Box<Sleep>>, deadline: Option<(Instant, &'static str)>) -> &'static str {
    let Some((at, reason)) = deadline else {
        return std::future::pending().await;
    };
    loop {
        timer.as_mut().await;
        if Instant::now() >= at {
            return reason;
        }
        timer.as_mut().reset(at);
    }
}

/// A reply in a burst: known, or waiting for the log writer.
enum Queued {
    Ready(Result<ReplyBody, ErrorCode>),
    Pending(PendingReply),
}

/// Waits for the queued replies in order and encodes them.
async fn finish_queued(queued: &mut Vec<Queued>, output: &mut BytesMut) {
    for reply in queued.drain(..) {
        let reply = match reply {
            Queued::Ready(reply) => reply,
            Queued::Pending(pending) => pending.reply().await,
        };
        encode(&reply, output);
    }
}

fn encode(reply: &Result<ReplyBody, ErrorCode>, output: &mut BytesMut) {
    match reply {
        Ok(body) => encode_reply(Reply::Ok(body), output),
        Err(code) => encode_reply(Reply::Err(*code), output),
    }
}

/// Decodes a request and checks the session. Order matters (spec §1.6):
/// body errors first, then the login check.
fn checked_request(inbound: Inbound, session: &Session) -> Result<Request, ErrorCode> {
    let request = match inbound {
        Inbound::Request { code, mut payload } => {
            let request = Request::decode(code, &payload);
            // The payload may hold a password or a token; the decoded request
            // has its own copy (wiped when dropped), so wipe this one now.
            payload.as_mut().zeroize();
            request
        }
        Inbound::Malformed { .. } => Err(ErrorCode::InvalidCommand),
    };
    match request {
        Ok(request) if !session.is_logged_in() && !request.allowed_before_login() => {
            Err(ErrorCode::Unauthenticated)
        }
        request => request,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_zero_first_word_is_the_0_11_framing_and_anything_else_legacy() {
        assert_eq!(classify([0, 0, 0, 0]), Framing::Vsr);
        // The smallest legacy frame (Ping) and other lengths.
        assert_eq!(classify([4, 0, 0, 0]), Framing::Legacy);
        assert_eq!(classify([0x1c, 0, 0, 0]), Framing::Legacy);
        // 1–3: malformed legacy lengths, still legacy (answered with 3).
        for length in 1u32..4 {
            assert_eq!(classify(length.to_le_bytes()), Framing::Legacy);
        }
        // A nonzero byte anywhere in the word.
        for index in 0..4 {
            let mut prefix = [0u8; 4];
            prefix[index] = 1;
            assert_eq!(classify(prefix), Framing::Legacy, "byte {index}");
        }
        assert_eq!(classify(*b"GET "), Framing::Legacy);
    }
}
