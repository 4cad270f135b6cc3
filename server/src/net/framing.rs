//! The seam between the connection loop and a framing: what one framing
//! must say about its frames for the loop (`connection.rs`) to serve it.
//! The legacy framing implements it beside the loop, the 0.11 framing in
//! `vsr.rs`.

use bytes::BytesMut;
use latchkey_protocol::{ErrorCode, Request};

use crate::command::{Context, ReplyBody, Session};
use crate::metrics::CommandLabel;

/// One framing's side of the connection loop: how frames are decoded, which
/// may be begun ahead, and how outcomes are written back.
pub(super) trait Framing: Send {
    /// A decoded frame.
    type Frame: Send;
    /// What encoding a reply needs besides its outcome (for the 0.11
    /// framing, the request header it answers).
    type Reply: Send;

    /// The next whole frame in `input`; `Ok(None)` wants more bytes, `Err`
    /// means the framing is broken and the connection must close.
    fn decode(&mut self, input: &mut BytesMut) -> Result<Option<Self::Frame>, String>;

    /// What to do with a frame (see [`Route`]).
    fn route(&mut self, frame: Self::Frame, session: &Session) -> Route<Self::Frame, Self::Reply>;

    /// A frame routed [`Route::InOrder`] that [`Framing::answer_at_once`]
    /// handed on, as [`Framing::answer`] takes it.
    type Waiting: Send;

    /// Answers a frame routed [`Route::InOrder`] on the spot if it waits for
    /// nothing (a read, Authorize, a token login), appending its reply to
    /// `output` and returning the command it turned out to be, for the
    /// metrics; else hands it on to [`Framing::answer`].
    fn answer_at_once(
        &mut self,
        frame: Self::Frame,
        session: &mut Session,
        ctx: &Context,
        output: &mut BytesMut,
    ) -> Result<CommandLabel, Self::Waiting>;

    /// Answers a frame [`Framing::answer_at_once`] handed on, appending its
    /// reply to `output`; returns the command, for the metrics.
    fn answer(
        &mut self,
        frame: Self::Waiting,
        session: &mut Session,
        ctx: &Context,
        output: &mut BytesMut,
    ) -> impl Future<Output = CommandLabel> + Send;

    /// Appends the reply to a request routed ahead or known.
    fn encode(&mut self, reply: Self::Reply, outcome: Result<ReplyBody, ErrorCode>, output: &mut BytesMut);
}

/// What a framing makes of a frame.
pub(super) enum Route<F, R> {
    /// A token create or delete, checked and logged in: begun at once, its
    /// reply waits in line.
    Ahead(Request, R),
    /// A reply known without running anything (a body that does not
    /// decode, a command before login): it waits in line only if there is
    /// one. The label is the command's, or `Invalid` when none decoded.
    Known(R, Result<ReplyBody, ErrorCode>, CommandLabel),
    /// Everything else: runs once every reply before it is known.
    InOrder(F),
}
