//! One client connection: tell its framing apart, read frames, answer each
//! in order, write replies in one syscall per burst. One loop serves both
//! framings through the [`Framing`] trait; the legacy framing's side of it
//! is here too (it is the hot path), the 0.11 framing's is `vsr.rs`.
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

use std::future::poll_fn;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::task::{Poll, Waker, ready};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use latchkey_protocol::codec::{FrameAt, HEADER_BYTES, LegacyRequestCodec, Reply, encode_reply};
use latchkey_protocol::{ErrorCode, Request};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Sleep;
use tokio_util::io::poll_read_buf;
use zeroize::Zeroize;

use super::framing::{Framing, Route};
use super::vsr::Vsr;
use super::{Connections, StopSignal};
use crate::clock::Stamp;
use crate::command::{self, Context, ReplyBody, Session, Started, Waits};
use crate::config::Framing as FramingSetting;
use crate::metrics::{self, CommandLabel, ConnKind, OpenConnection};

/// A byte stream a connection speaks over: a `TcpStream`, or a TLS stream
/// over one. The loop is generic over it, so it is compiled once per
/// transport and the plain path pays nothing for TLS existing.
pub(super) trait Transport: AsyncRead + AsyncWrite + Unpin + Send {}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Transport for S {}

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
    while input.len() < FRAMING_PREFIX_BYTES {
        if !waiting.read_more(stream, input, false).await? {
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

/// Waiting for a client's next bytes, bounded by shutdown and by the login
/// and idle timeouts. Shared by both framings' loops.
///
/// Its futures are hand-written polls, not `async` blocks around a
/// `select!`: a lockstep client's every request wakes the connection once
/// to read, and each layer of nested futures, and each registration of the
/// task's waker with the stop signal and the timer, is paid on that wake.
/// Both keep the waker they were last given until they use it, so they are
/// given it again only when it changes (it does not, for a task's life) or
/// when the timer is moved.
pub(super) struct Waiting {
    /// This connection's own shutdown signal (no lock shared with others).
    shutdown: StopSignal,
    /// Armed at or before the real deadline (on tokio's clock, from a
    /// duration measured on [`Stamp`]'s).
    timer: Pin<Box<Sleep>>,
    /// The waker the stop signal holds, once one is registered.
    watched_by: Option<Waker>,
    /// Whether the timer, as armed now, was polled with `watched_by` (and so
    /// holds it until it fires).
    timer_watched: bool,
    /// When the connection last became unauthenticated (connect or logout).
    unauthenticated_since: Stamp,
    was_logged_in: bool,
    /// The real deadline and what it is for; the timer may be armed earlier
    /// (it is moved forward lazily, so a busy connection costs no timer work).
    deadline: Option<(Stamp, &'static str)>,
    login_timeout: Duration,
    idle_timeout: Duration,
}

impl Waiting {
    fn new(connections: &Connections) -> Waiting {
        let now = Stamp::now();
        let limits = connections.limits;
        Waiting {
            shutdown: connections.stop_signal(),
            timer: Box::pin(tokio::time::sleep_until(tokio::time::Instant::now())),
            watched_by: None,
            timer_watched: false,
            unauthenticated_since: now,
            was_logged_in: false,
            deadline: None,
            login_timeout: limits.login_timeout,
            idle_timeout: limits.idle_timeout,
        }
    }

    /// Ends a burst, for both framings' loops: writes the replies in
    /// `output` and clears it (one `write` on plain TCP; on TLS, records
    /// sealed into rustls's buffer and sent by the flush as one vectored
    /// write), then, unless `more_buffered` (the in-flight cap stopped the
    /// burst), reads more input as [`Waiting::read_more`] does. `settled`
    /// is when the last reply was settled: the timeouts run from there, or
    /// from when the write ends if it had to wait. `Ok(false)`: a clean end.
    ///
    /// A write that waits (the client is not reading its replies) is
    /// bounded by the timeouts too, rearmed when it begins to wait, but not
    /// by shutdown, which waits for it up to `shutdown_timeout`.
    pub(super) fn next_burst<'a, S: Transport>(
        &'a mut self,
        stream: &'a mut S,
        output: &'a mut BytesMut,
        input: &'a mut BytesMut,
        more_buffered: bool,
        logged_in: bool,
        settled: Stamp,
    ) -> impl Future<Output = Result<bool, String>> + 'a {
        // Nothing to write: no flush either.
        let mut written = if output.is_empty() { None } else { Some(0) };
        // Set once the write has waited: the timeouts then run from its end.
        let mut stalled = false;
        let mut reading = false;
        poll_fn(move |cx| {
            if let Some(sent) = &mut written {
                match poll_write_out(cx, stream, output, sent) {
                    Poll::Ready(Ok(())) => written = None,
                    Poll::Ready(Err(error)) => {
                        wipe(output);
                        return Poll::Ready(Err(format!("write failed: {error}")));
                    }
                    Poll::Pending => {
                        if !stalled {
                            stalled = true;
                            self.rearm(logged_in, Stamp::now());
                        }
                        return match self.poll_watch(cx, false) {
                            Poll::Ready(Err(reason)) => {
                                wipe(output);
                                Poll::Ready(Err(format!("{reason}, its replies unread")))
                            }
                            _ => Poll::Pending,
                        };
                    }
                }
            }
            if more_buffered {
                // Answer what is already buffered before reading again.
                return Poll::Ready(Ok(true));
            }
            if !reading {
                let now = if stalled { Stamp::now() } else { settled };
                if let Err(end) = self.before_read(logged_in, now) {
                    return Poll::Ready(end);
                }
                reading = true;
            }
            self.poll_read(cx, stream, input)
        })
    }

    /// Reads more input, the timeouts running from now (after the burst's
    /// replies are written: a burst may have waited for a commit, Argon2 or
    /// a slow reader). `Ok(false)`: a clean end (the peer closed between
    /// frames, or shutdown began); `Err`: why the connection must close.
    pub(super) fn read_more<'a, S: Transport>(
        &'a mut self,
        stream: &'a mut S,
        input: &'a mut BytesMut,
        logged_in: bool,
    ) -> impl Future<Output = Result<bool, String>> + 'a {
        let mut reading = false;
        poll_fn(move |cx| {
            if !reading {
                if let Err(end) = self.before_read(logged_in, Stamp::now()) {
                    return Poll::Ready(end);
                }
                reading = true;
            }
            self.poll_read(cx, stream, input)
        })
    }

    /// Runs `step` (the TLS handshake) bounded as a read before login is:
    /// by shutdown and the login timeout. `Ok(None)`: shutdown began first;
    /// `Err`: the timeout passed (dropping `step` closes its socket).
    pub(super) async fn bounded<T>(&mut self, step: impl Future<Output = T>) -> Result<Option<T>, String> {
        if self.shutdown.is_stopping() {
            return Ok(None);
        }
        self.rearm(false, Stamp::now());
        let mut step = pin!(step);
        poll_fn(|cx| {
            if let Poll::Ready(output) = step.as_mut().poll(cx) {
                return Poll::Ready(Ok(Some(output)));
            }
            self.poll_watch(cx, true).map(|ended| ended.map(|()| None))
        })
        .await
    }

    /// What is looked at once before a read waits: shutdown, and the
    /// deadline, rearmed from `now`. A deadline already past is met here,
    /// not only when the timer fires: a read is polled before the timer, so
    /// a client whose bytes are always ready (pipelined pings before login)
    /// would otherwise never let the timer be looked at. `Err` holds how
    /// the read ends instead: `Ok(false)` at shutdown, `Err` past the
    /// deadline.
    fn before_read(&mut self, logged_in: bool, now: Stamp) -> Result<(), Result<bool, String>> {
        if self.shutdown.is_stopping() {
            return Err(Ok(false));
        }
        self.rearm(logged_in, now);
        if let Some((at, reason)) = self.deadline
            && now >= at
        {
            return Err(Err(reason.to_owned()));
        }
        Ok(())
    }

    /// One poll of a read into `input`; while it waits, of shutdown and the
    /// deadline too (after the read, so a ready read always wins).
    fn poll_read<S: Transport>(
        &mut self,
        cx: &mut std::task::Context<'_>,
        stream: &mut S,
        input: &mut BytesMut,
    ) -> Poll<Result<bool, String>> {
        match poll_read_buf(Pin::new(stream), cx, input) {
            Poll::Ready(Ok(0)) if input.is_empty() => Poll::Ready(Ok(false)),
            Poll::Ready(Ok(0)) => {
                Poll::Ready(Err(format!("peer closed mid-frame ({} bytes pending)", input.len())))
            }
            Poll::Ready(Ok(_)) => Poll::Ready(Ok(true)),
            Poll::Ready(Err(error)) => Poll::Ready(Err(format!("read failed: {error}"))),
            Poll::Pending => self.poll_watch(cx, true).map(|ended| ended.map(|()| false)),
        }
    }

    /// Ready once shutdown has begun (`Ok`, only if `shutdown_ends`) or the
    /// real deadline has passed (`Err`, re-arming the timer if it fired
    /// early). The stop signal is given the task's waker only when it holds
    /// another (or none), and the timer is polled only when it has fired or
    /// was moved since it was last polled with that waker: a busy
    /// connection's wake costs two atomic loads here, not two registrations.
    fn poll_watch(
        &mut self,
        cx: &mut std::task::Context<'_>,
        shutdown_ends: bool,
    ) -> Poll<Result<(), String>> {
        if shutdown_ends && self.shutdown.is_stopping() {
            return Poll::Ready(Ok(()));
        }
        if !self.watched_by.as_ref().is_some_and(|waker| waker.will_wake(cx.waker())) {
            if self.shutdown.register(cx.waker()) && shutdown_ends {
                return Poll::Ready(Ok(()));
            }
            self.watched_by = Some(cx.waker().clone());
            self.timer_watched = false;
        }
        let Some((at, reason)) = self.deadline else {
            return Poll::Pending;
        };
        if self.timer_watched && !self.timer.is_elapsed() {
            return Poll::Pending;
        }
        loop {
            // Outside tokio's task budget: a Sleep polled with the budget
            // spent is pending without holding the waker, and the timer
            // would not be polled again (a flood of ready reads spends it).
            match Pin::new(&mut tokio::task::unconstrained(self.timer.as_mut())).poll(cx) {
                Poll::Ready(()) => {
                    let now = Stamp::now();
                    if now >= at {
                        return Poll::Ready(Err(reason.to_owned()));
                    }
                    self.arm(at, now);
                }
                Poll::Pending => {
                    self.timer_watched = true;
                    return Poll::Pending;
                }
            }
        }
    }

    fn rearm(&mut self, logged_in: bool, now: Stamp) {
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
            self.arm(at, now);
        }
        self.deadline = deadline;
    }

    /// Arms the timer to fire at `at`, read on [`Stamp`]'s clock at `now`:
    /// the two clocks are not compared, only the wait between them carried
    /// over. The timer must then be polled again to hold the waker.
    fn arm(&mut self, at: Stamp, now: Stamp) {
        self.timer.as_mut().reset(tokio::time::Instant::now() + at.saturating_duration_since(now));
        self.timer_watched = false;
    }
}

/// Writes `output` from `*sent` on, wipes it once all is written, and
/// flushes (a no-op on a TcpStream).
fn poll_write_out<S: Transport>(
    cx: &mut std::task::Context<'_>,
    stream: &mut S,
    output: &mut BytesMut,
    sent: &mut usize,
) -> Poll<std::io::Result<()>> {
    while *sent < output.len() {
        match ready!(Pin::new(&mut *stream).poll_write(cx, &output[*sent..]))? {
            0 => return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into())),
            more => *sent += more,
        }
    }
    wipe(output);
    Pin::new(stream).poll_flush(cx)
}

/// Wipes and clears a burst's replies once written, or once the write
/// failed: they may carry a new token's secret.
fn wipe(output: &mut BytesMut) {
    output.as_mut().zeroize();
    output.clear();
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
