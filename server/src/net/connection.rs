//! One client connection: tell its framing apart, read frames, answer each
//! in order, write replies in one syscall per burst. One loop serves both
//! framings through the [`Framing`] trait; the legacy framing's side of it
//! is here too (it is the hot path), the 0.11 framing's is `vsr.rs`. The
//! burst's write and the wait for the next bytes, with shutdown and the
//! timeouts, are `waiting.rs`.
//!
//! Reading is "decode what is buffered, else read more". Every request that
//! is already buffered is answered before the replies are written, so a
//! pipelining client costs one read and one write per burst, while a
//! lockstep client (every Iggy SDK) sees one reply per request at once.
//! The connection closes only when the framing itself is broken (a declared
//! length over the limit), when the peer closes, at the login or idle
//! timeout (a write that waits on a client not reading its replies counts
//! towards them too), or at shutdown.
//!
//! **Framing detection** (spec §0.2), once per connection, before the first
//! frame is decoded, when `[tcp] framing = "auto"`: read the first 4 bytes
//! (never more, so an 8-byte legacy Ping is answered at once).
//! - All zero: the 0.11 framing (`vsr.rs`). Those bytes are the low
//!   word of the header checksum, which the 0.11 SDK and CLI leave at 0; no
//!   legacy frame starts with them, as a legacy length is at least 4.
//! - Anything else: legacy. A length of 1–3 is a malformed legacy frame,
//!   answered with 3 as before.
//!
//! A forced framing skips detection. Detection runs once per connection,
//! before the loop, and adds nothing per request.
//!
//! **Metrics.** Once the framing is known the connection counts in
//! `latchkey_connections_open`. Each request is timed from when its burst
//! was taken up (one clock read per burst) to when its reply is encoded
//! (one per request): for a lockstep client, the request's whole time in
//! the server; for a pipelined burst, how long each reply waited for the
//! bytes that were already there. The per-thread record costs no lock.
//!
//! **Pipelined writes.** A token create or delete (`Request::may_start_ahead`)
//! is queued with the store's writer as soon as it is read; its reply waits
//! in line. Every other request first waits for the replies queued before
//! it, so it sees their outcome. Replies go out in request order either
//! way, equal to one-by-one answers; a pipelined burst of creates and
//! deletes shares one commit.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use latchkey_protocol::codec::{FrameAt, HEADER_BYTES, LegacyRequestCodec, Reply, encode_reply};
use latchkey_protocol::{ErrorCode, Request};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use zeroize::Zeroize;

use super::Connections;
use super::framing::{Framing, Route};
use super::vsr::Vsr;
use super::waiting::{Transport, Waiting};
use crate::clock::Stamp;
use crate::command::{self, Context, ReplyBody, Session, Started, Waits};
use crate::config::Framing as FramingSetting;
use crate::metrics::{self, CommandLabel, ConnKind, OpenConnection};

/// How long closing a TLS connection waits to send its close_notify alert
/// (only a peer that stopped reading makes it wait at all).
const CLOSE_NOTIFY_TIMEOUT: Duration = Duration::from_millis(500);

/// Initial read buffer; grows only for a frame larger than this.
pub(super) const READ_BUFFER_BYTES: usize = 4096;
/// Bytes read before the framing is decided: one legacy length field, or the
/// low word of a 0.11 header checksum.
const FRAMING_PREFIX_BYTES: usize = 4;

pub async fn serve(mut stream: TcpStream, peer: SocketAddr, connections: &Connections, ctx: &Context) {
    let _ = stream.set_nodelay(true);
    let client_id = connections.next_client_id();
    // Its token uses go to the ledger when it ends, however it ends: a
    // panicking request unwinds through this guard too.
    let mut session = HandsOverUses { session: Session::new(client_id, peer), ctx };
    let session = &mut session.session;
    tracing::debug!(%peer, client_id, "connection opened");
    // The login timeout runs from here, so a silent client cannot hold a
    // connection by never sending its first bytes, nor by never finishing
    // its TLS handshake.
    let mut waiting = Waiting::new(connections);
    let result = match &connections.tls {
        // Each arm is its own monomorphised copy of the loop: the plain
        // path reads and writes the TcpStream directly, with no indirection.
        None => converse(&mut stream, session, connections, ctx, waiting).await,
        Some(acceptor) => match waiting.bounded(acceptor.accept(stream)).await {
            Ok(Some(Ok(mut stream))) => {
                let result = converse(&mut stream, session, connections, ctx, waiting).await;
                // Best effort: tell the client the close is deliberate, not a truncation.
                let _ = tokio::time::timeout(CLOSE_NOTIFY_TIMEOUT, stream.shutdown()).await;
                result
            }
            Ok(Some(Err(error))) => Err(format!("TLS handshake failed: {error}")),
            Ok(None) => Ok(()),
            Err(reason) => Err(format!("{reason} during the TLS handshake")),
        },
    };
    match result {
        Ok(()) => tracing::debug!(%peer, client_id, "connection closed"),
        Err(reason) => tracing::debug!(%peer, client_id, %reason, "connection closed"),
    }
}

/// A connection's session, whose token uses not yet handed over go to the
/// use ledger when it is dropped (at the end of the connection's task, or
/// while a panic unwinds it).
struct HandsOverUses<'c> {
    session: Session,
    ctx: &'c Context,
}

impl Drop for HandsOverUses<'_> {
    fn drop(&mut self) {
        self.ctx.uses.hand_over(self.session.take_uses());
    }
}

/// Detects the framing (unless forced) and runs the loop in it, over plain
/// TCP or TLS alike.
async fn converse<S: Transport>(
    stream: &mut S,
    session: &mut Session,
    connections: &Connections,
    ctx: &Context,
    mut waiting: Waiting,
) -> Result<(), String> {
    let mut input = BytesMut::with_capacity(READ_BUFFER_BYTES);
    let framing = match connections.framing {
        FramingSetting::Auto => detect(stream, &mut input, &mut waiting).await?,
        forced => Some(forced),
    };
    let conversation = Conversation {
        stream,
        input,
        session,
        ctx,
        waiting,
        in_flight_max: connections.limits.max_requests_in_flight,
    };
    match framing {
        Some(FramingSetting::Vsr) => {
            tracing::debug!(peer = %conversation.session.peer(), "0.11 framing");
            let _open = OpenConnection::new(ConnKind::Vsr);
            conversation.run(Vsr::new(connections)).await
        }
        Some(_) => {
            let _open = OpenConnection::new(ConnKind::Legacy);
            conversation
                .run(Legacy { codec: LegacyRequestCodec::new(connections.limits.max_frame_size) })
                .await
        }
        None => Ok(()),
    }
}

/// The framing a connection's first bytes announce (spec §0.2).
fn classify(prefix: [u8; FRAMING_PREFIX_BYTES]) -> FramingSetting {
    if u32::from_le_bytes(prefix) == 0 { FramingSetting::Vsr } else { FramingSetting::Legacy }
}

/// Reads until the first [`FRAMING_PREFIX_BYTES`] bytes are in `input` and
/// classifies them. `Ok(None)`: the peer left (or shutdown began) first.
async fn detect<S: Transport>(
    stream: &mut S,
    input: &mut BytesMut,
    waiting: &mut Waiting,
) -> Result<Option<FramingSetting>, String> {
    // Nothing is answered before the framing is known: each read comes
    // after a burst with no replies.
    let mut no_replies = BytesMut::new();
    while input.len() < FRAMING_PREFIX_BYTES {
        if !waiting.next_burst(stream, &mut no_replies, input, false, false, Stamp::now()).await? {
            return Ok(None);
        }
    }
    let mut prefix = [0u8; FRAMING_PREFIX_BYTES];
    prefix.copy_from_slice(&input[..FRAMING_PREFIX_BYTES]);
    Ok(Some(classify(prefix)))
}

/// A connection past detection: everything the loop works with.
struct Conversation<'a, S> {
    stream: &'a mut S,
    /// May already hold the bytes detection read.
    input: BytesMut,
    session: &'a mut Session,
    ctx: &'a Context,
    waiting: Waiting,
    in_flight_max: usize,
}

impl<S: Transport> Conversation<'_, S> {
    /// The loop: answer every buffered frame in order (at most
    /// `max_requests_in_flight` per burst), then write all replies at once
    /// and read more. `Ok`: a clean end; `Err`: why the connection closes.
    async fn run<F: Framing>(mut self, mut framing: F) -> Result<(), String> {
        let mut output = BytesMut::with_capacity(READ_BUFFER_BYTES);
        // Replies of this burst waiting for the ones before them, in order.
        let mut queued: Vec<Queued<F::Reply>> = Vec::new();
        loop {
            // Every request of this burst is timed from here.
            let burst_at = Stamp::now();
            // When the last reply so far was settled; the timeouts run from
            // there once the replies are written (one clock read less).
            let mut settled = burst_at;
            let mut answered = 0;
            while answered < self.in_flight_max {
                let frame = match framing.decode(&mut self.input) {
                    Ok(Some(frame)) => frame,
                    Ok(None) => break,
                    Err(reason) => {
                        // Answer what came before the bad frame, then close.
                        finish_queued(&mut framing, &mut queued, &mut output, burst_at).await;
                        let logged_in = self.session.is_logged_in();
                        let _ = self
                            .waiting
                            .next_burst(self.stream, &mut output, &mut self.input, true, logged_in, settled)
                            .await;
                        return Err(reason);
                    }
                };
                fail::fail_point!("connection-request");
                match framing.route(frame, self.session) {
                    Route::Ahead(request, reply) => {
                        let label = CommandLabel::of(&request);
                        queued.push((reply, command::start(request, self.session, self.ctx).await, label));
                    }
                    Route::Known(reply, outcome, label) if queued.is_empty() => {
                        framing.encode(reply, outcome, &mut output);
                        settled = timed(label, burst_at);
                    }
                    Route::Known(reply, outcome, label) => {
                        queued.push((reply, Started::Done(outcome), label))
                    }
                    Route::InOrder(frame) => {
                        if !queued.is_empty() {
                            finish_queued(&mut framing, &mut queued, &mut output, burst_at).await;
                        }
                        let label = match framing.answer_at_once(frame, self.session, self.ctx, &mut output) {
                            Ok(label) => label,
                            Err(waiting) => {
                                framing.answer(waiting, self.session, self.ctx, &mut output).await
                            }
                        };
                        settled = timed(label, burst_at);
                    }
                }
                answered += 1;
            }
            if !queued.is_empty() {
                settled = finish_queued(&mut framing, &mut queued, &mut output, burst_at).await;
            }
            let more_buffered = answered == self.in_flight_max;
            let logged_in = self.session.is_logged_in();
            if !self
                .waiting
                .next_burst(self.stream, &mut output, &mut self.input, more_buffered, logged_in, settled)
                .await?
            {
                return Ok(());
            }
        }
    }
}

/// A reply waiting in line: what encoding it needs, the request begun, and
/// its command for the metrics.
type Queued<R> = (R, Started, CommandLabel);

/// Waits for the queued replies in order and encodes them; each request's
/// time runs from `burst_at`. Returns when the last was settled.
async fn finish_queued<F: Framing>(
    framing: &mut F,
    queued: &mut Vec<Queued<F::Reply>>,
    output: &mut BytesMut,
    burst_at: Stamp,
) -> Stamp {
    let mut settled = burst_at;
    for (reply, started, label) in queued.drain(..) {
        let outcome = match started {
            Started::Done(outcome) => outcome,
            Started::Pending(pending) => pending.reply().await,
        };
        framing.encode(reply, outcome, output);
        settled = timed(label, burst_at);
    }
    settled
}

/// Records a request's time in the server, from its burst's start to now,
/// and returns now.
fn timed(label: CommandLabel, burst_at: Stamp) -> Stamp {
    let now = Stamp::now();
    metrics::request(label, now.saturating_duration_since(burst_at));
    now
}

/// The legacy length-prefixed framing (spec §1).
struct Legacy {
    codec: LegacyRequestCodec,
}

impl Framing for Legacy {
    /// Decoded and checked against the session, or the code to answer.
    type Frame = Result<Request, ErrorCode>;
    type Reply = ();

    /// Decodes the body where it lies in `input`, wipes it (it may hold a
    /// password or a token; the decoded request has its own copy, wiped when
    /// dropped) and moves past it.
    fn decode(&mut self, input: &mut BytesMut) -> Result<Option<Self::Frame>, String> {
        let Some(frame) = self.codec.frame_at_front(input).map_err(|error| error.to_string())? else {
            return Ok(None);
        };
        let request = match frame {
            FrameAt::Request { code, bytes } => {
                let payload = &mut input[HEADER_BYTES..bytes];
                let request = Request::decode(code, payload);
                payload.zeroize();
                request
            }
            FrameAt::Malformed { .. } => Err(ErrorCode::InvalidCommand),
        };
        input.advance(frame.bytes());
        Ok(Some(request))
    }

    /// The body's errors first, then the login check (spec §1.6).
    fn route(&mut self, frame: Self::Frame, session: &Session) -> Route<Self::Frame, ()> {
        match frame {
            Ok(request) if !session.is_logged_in() && !request.allowed_before_login() => {
                Route::Known((), Err(ErrorCode::Unauthenticated), CommandLabel::of(&request))
            }
            Ok(request) if request.may_start_ahead() => Route::Ahead(request, ()),
            Ok(request) => Route::InOrder(Ok(request)),
            Err(code) => Route::Known((), Err(code), CommandLabel::Invalid),
        }
    }

    /// A request that waits, and its command.
    type Waiting = (Waits, CommandLabel);

    fn answer_at_once(
        &mut self,
        frame: Self::Frame,
        session: &mut Session,
        ctx: &Context,
        output: &mut BytesMut,
    ) -> Result<CommandLabel, Self::Waiting> {
        let (label, reply) = match frame {
            Ok(request) => {
                let label = CommandLabel::of(&request);
                (label, command::at_once(request, session, ctx).map_err(|waits| (waits, label))?)
            }
            Err(code) => (CommandLabel::Invalid, Err(code)),
        };
        self.encode((), reply, output);
        Ok(label)
    }

    async fn answer(
        &mut self,
        (waits, label): Self::Waiting,
        session: &mut Session,
        ctx: &Context,
        output: &mut BytesMut,
    ) -> CommandLabel {
        let reply = waits.reply(session, ctx).await;
        self.encode((), reply, output);
        label
    }

    fn encode(&mut self, _: (), outcome: Result<ReplyBody, ErrorCode>, output: &mut BytesMut) {
        match &outcome {
            Ok(body) => encode_reply(Reply::Ok(body), output),
            Err(code) => encode_reply(Reply::Err(*code), output),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_zero_first_word_is_the_0_11_framing_and_anything_else_legacy() {
        assert_eq!(classify([0, 0, 0, 0]), FramingSetting::Vsr);
        // The smallest legacy frame (Ping) and other lengths.
        assert_eq!(classify([4, 0, 0, 0]), FramingSetting::Legacy);
        assert_eq!(classify([0x1c, 0, 0, 0]), FramingSetting::Legacy);
        // 1–3: malformed legacy lengths, still legacy (answered with 3).
        for length in 1u32..4 {
            assert_eq!(classify(length.to_le_bytes()), FramingSetting::Legacy);
        }
        // A nonzero byte anywhere in the word.
        for index in 0..4 {
            let mut prefix = [0u8; 4];
            prefix[index] = 1;
            assert_eq!(classify(prefix), FramingSetting::Legacy, "byte {index}");
        }
        assert_eq!(classify(*b"GET "), FramingSetting::Legacy);
    }
}
