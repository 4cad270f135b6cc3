//! Waiting on a client, for both framings' connection loops
//! (`connection.rs`): writing a burst's replies, then reading the next
//! bytes, each bounded by shutdown and by the login and idle timeouts.
//!
//! These are hand-written polls rather than `async` functions around a
//! `select!`, because they run on every request: a lockstep client wakes
//! its connection once per request, and each layer of nested futures, and
//! each registration of the task's waker with the stop signal and the
//! timer, would be paid on that wake. The waker is registered with both
//! once and again only when it changes or the timer is moved.

use std::future::poll_fn;
use std::pin::{Pin, pin};
use std::task::{Poll, Waker, ready};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Sleep;
use tokio_util::io::poll_read_buf;
use zeroize::Zeroize;

use super::{Connections, StopSignal};
use crate::clock::Stamp;

/// A byte stream a connection speaks over: a `TcpStream`, or a TLS stream
/// over one. The loop is generic over it, so it is compiled once per
/// transport and the plain path pays nothing for TLS existing.
pub(super) trait Transport: AsyncRead + AsyncWrite + Unpin + Send {}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Transport for S {}

/// One connection's waiting: its stop signal, its timer and deadlines.
/// The stop signal and the timer keep the waker they were last given until
/// they use it, so they are given it again only when it changes (it does
/// not, for a task's life) or when the timer is moved.
pub(super) struct Waiting {
    /// This connection's own shutdown signal (no lock shared with others).
    shutdown: StopSignal,
    /// Armed at or before the real deadline (on tokio's clock, from a
    /// duration measured on [`Stamp`]'s), give or take the microseconds
    /// between the reading a re-arm is given and the re-arm itself; the
    /// deadline is judged on [`Stamp`]'s clock when the timer fires.
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
    pub(super) fn new(connections: &Connections) -> Waiting {
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
    /// burst), reads more input. `settled` is when the last reply was
    /// settled: the timeouts run from there, or from when the write ends if
    /// it had to wait. `Ok(false)`: a clean end (the peer closed between
    /// frames, or shutdown began); `Err`: why the connection must close.
    /// Framing detection reads through it too, with no replies to write.
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
                        // A write pending for tokio's task budget, not the
                        // client, lands here too: past the deadline it then
                        // closes with this reason, where the next read would
                        // have closed it for the deadline alone.
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
