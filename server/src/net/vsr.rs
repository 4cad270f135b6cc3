//! A connection speaking the 0.11 framing (spec §2): 256-byte headers, logins
//! as Register operations, and Iggy's three error channels.
//!
//! The business logic is `command/`'s, unchanged: this module turns a frame
//! into the same [`Request`] the legacy framing builds (with the same body
//! codecs), runs it, and only then decides how the outcome travels:
//!
//! | Outcome | 0.11 channel |
//! |---|---|
//! | success of a read, Ping or Logout | reply, raw payload |
//! | success of Register, PAT create or delete | reply, result section `[0]` + payload |
//! | PAT name exists (51), not found (20), bad expiry (56) | result rejection |
//! | other refusals: limit (52), name length (50), bad body (3/4), unknown code (3), not logged in on a read (40), unserved (5), bad checksum (4) | deny status |
//! | login refused, or a mutation while not logged in | eviction (reason below) |
//!
//! Register evictions: a password login refused for any reason (command's
//! 42/43/44/47) → 9, except the failed-login throttle's 20001, a deny; a PAT login with an unknown, deleted, expired or
//! malformed token (command's 20/54) → 10; its owner inactive (47) → 11;
//! a body that is neither login shape, or the legacy login codes 38/44 sent
//! as NonReplicated → 15; a protocol version outside the window → 14.
//!
//! A body that parses as a password login is answered as one, even when
//! its bytes also parse as a PAT login. Iggy HEAD tries the PAT shape after
//! rejected credentials (spec §2.9); no SDK sends such a body (a PAT body
//! never parses as the password shape), and trying both would make one
//! hand-built request two guesses: charged to the throttle twice and
//! answered 10 for what was a password login.
//!
//! Session rules: the connection, not the header's `session` or `user_id`,
//! says who is logged in, exactly as on the legacy path. A login gets a
//! session number from a server-wide counter (≥ 1, stable until the next
//! login or logout) that is echoed in every reply's `op` field. Any eviction
//! ends the connection's login, matching the SDK, which resets its session
//! on every eviction; the socket stays open. Logout always answers OK.
//!
//! A frame whose size or header is invalid closes the connection without a
//! reply. Iggy silently drops a request with an invalid header, leaving the
//! client to time out after 30 s; closing tells it at once.

use bytes::BytesMut;
use latchkey_protocol::body::{Empty, LoginUser, LoginWithPersonalAccessToken, WireDecode, WireEncode};
use latchkey_protocol::vsr::{
    self, Accepted, ClientVersionInfo, EvictionHeader, EvictionReason, LoginRegister, LoginRegisterResponse,
    LoginRegisterWithPat, PROTOCOL_VERSION, Rejected, ReplyHeader, RequestCodec, RequestFrame, RequestHeader,
    encode_reply, operation,
};
use latchkey_protocol::{ErrorCode, Request, codes};
use tokio_util::codec::Decoder;
use zeroize::Zeroize;

use super::Connections;
use super::framing::{Framing, Route};
use crate::command::{self, Context, ReplyBody, Session};
use crate::metrics::CommandLabel;

/// `server_version` in login replies (a WireName: 1–255 bytes).
const SERVER_VERSION: &str = concat!("latchkey-", env!("CARGO_PKG_VERSION"));

/// How one request is answered, before it is encoded.
enum Answer {
    /// Status 0, the payload as is (NonReplicated reads, Ping, Logout).
    Raw(ReplyBody),
    /// Status 0, an empty result section, then the payload (PAT create/delete).
    Accepted(ReplyBody),
    /// Status 0, an empty result section, then the login reply (Register).
    Registered(LoginRegisterResponse),
    /// Status 0 and a result section carrying the code.
    Rejected(ErrorCode),
    /// The code in the header's status, no body.
    Denied(ErrorCode),
    /// An eviction header instead of a reply.
    Evicted(EvictionReason),
}

/// The 0.11 framing's side of the connection loop, and the connection's
/// 0.11 state beside the framing-neutral [`Session`].
pub(super) struct Vsr<'a> {
    codec: RequestCodec,
    /// The session number of the current login; 0 when not logged in.
    session: u64,
    connections: &'a Connections,
}

impl<'a> Vsr<'a> {
    pub(super) fn new(connections: &'a Connections) -> Vsr<'a> {
        Vsr { codec: RequestCodec::new(connections.limits.vsr_size_max), session: 0, connections }
    }

    fn end(&mut self, session: &mut Session) {
        session.log_out();
        self.session = 0;
    }
}

impl Framing for Vsr<'_> {
    type Frame = RequestFrame;
    /// The header a reply answers.
    type Reply = RequestHeader;

    fn decode(&mut self, input: &mut BytesMut) -> Result<Option<RequestFrame>, String> {
        self.codec.decode(input).map_err(|error| error.to_string())
    }

    /// Operations 146 and 147 on a logged-in connection with a sound
    /// checksum are begun ahead, like the legacy framing's 42 and 43.
    fn route(&mut self, mut frame: RequestFrame, session: &Session) -> Route<RequestFrame, RequestHeader> {
        let code = match frame.header.operation {
            operation::CREATE_PERSONAL_ACCESS_TOKEN => codes::CREATE_PERSONAL_ACCESS_TOKEN,
            operation::DELETE_PERSONAL_ACCESS_TOKEN => codes::DELETE_PERSONAL_ACCESS_TOKEN,
            _ => return Route::InOrder(frame),
        };
        if !session.is_logged_in() || !checksum_holds(&frame) {
            return Route::InOrder(frame);
        }
        let request = Request::decode(code, &frame.body);
        // The body may hold a token name only, but wipe it like any other.
        frame.body.as_mut().zeroize();
        match request {
            Ok(request) => Route::Ahead(request, frame.header),
            Err(code) => Route::Known(frame.header, Err(code), CommandLabel::Invalid),
        }
    }

    /// Every 0.11 frame is answered through [`Framing::answer`].
    type Waiting = RequestFrame;

    fn answer_at_once(
        &mut self,
        frame: RequestFrame,
        _: &mut Session,
        _: &Context,
        _: &mut BytesMut,
    ) -> Result<CommandLabel, RequestFrame> {
        Err(frame)
    }

    async fn answer(
        &mut self,
        mut frame: RequestFrame,
        session: &mut Session,
        ctx: &Context,
        output: &mut BytesMut,
    ) -> CommandLabel {
        let (label, answer) = self.respond(&frame, session, ctx).await;
        // The body may hold a password or a token: wipe it once answered.
        frame.body.as_mut().zeroize();
        encode_answer(&frame.header, &answer, self.session, output);
        label
    }

    /// A token create or delete's outcome, on Iggy's channels for them.
    fn encode(
        &mut self,
        header: RequestHeader,
        outcome: Result<ReplyBody, ErrorCode>,
        output: &mut BytesMut,
    ) {
        encode_answer(&header, &token_mutation_answer(outcome), self.session, output);
    }
}

/// Zero means "not stamped" (NonReplicated requests, older clients).
fn checksum_holds(frame: &RequestFrame) -> bool {
    frame.header.request_checksum == 0 || frame.header.request_checksum == vsr::request_checksum(&frame.body)
}

impl Vsr<'_> {
    /// Checks the body checksum, routes on the operation, and ends the login
    /// on any eviction. Also says which command the frame was, for the
    /// metrics.
    async fn respond(
        &mut self,
        frame: &RequestFrame,
        session: &mut Session,
        ctx: &Context,
    ) -> (CommandLabel, Answer) {
        let RequestFrame { header, body } = frame;
        if !checksum_holds(frame) {
            tracing::debug!(peer = %session.peer(), operation = header.operation, "request checksum mismatch");
            return (CommandLabel::Invalid, Answer::Denied(ErrorCode::InvalidFormat));
        }
        let (label, answer) = match header.operation {
            operation::REGISTER => self.register(body, session, ctx).await,
            operation::NON_REPLICATED => non_replicated(header.code, body, session, ctx).await,
            operation::LOGOUT => {
                // OK whether or not the connection is logged in (Iggy HEAD).
                self.end(session);
                (CommandLabel::LogoutUser, Answer::Raw(ReplyBody::Empty))
            }
            op if operation::is_client_replicated(op) && !session.is_logged_in() => {
                (replicated_label(op), Answer::Evicted(EvictionReason::NoSession))
            }
            operation::CREATE_PERSONAL_ACCESS_TOKEN => (
                CommandLabel::CreatePersonalAccessToken,
                token_mutation(codes::CREATE_PERSONAL_ACCESS_TOKEN, body, session, ctx).await,
            ),
            operation::DELETE_PERSONAL_ACCESS_TOKEN => (
                CommandLabel::DeletePersonalAccessToken,
                token_mutation(codes::DELETE_PERSONAL_ACCESS_TOKEN, body, session, ctx).await,
            ),
            op if operation::is_client_replicated(op) => {
                (CommandLabel::Unserved, Answer::Denied(ErrorCode::FeatureUnavailable))
            }
            _ => (CommandLabel::Invalid, Answer::Denied(ErrorCode::InvalidCommand)),
        };
        if let Answer::Evicted(reason) = answer {
            tracing::debug!(peer = %session.peer(), operation = header.operation, ?reason, "evicted");
            self.end(session);
        }
        (label, answer)
    }

    /// Register (spec §2.9): version gate, then the password shape, else the
    /// PAT shape. Trailing bytes after a parsed shape are ignored, as in Iggy.
    /// The label is the login the body turned out to be.
    async fn register(
        &mut self,
        body: &[u8],
        session: &mut Session,
        ctx: &Context,
    ) -> (CommandLabel, Answer) {
        let peer = session.peer();
        let Ok((client_version, _)) = ClientVersionInfo::decode(body) else {
            tracing::warn!(target: "audit", event = "login_failed", method = "register", reason = "malformed", %peer);
            return (CommandLabel::Invalid, Answer::Evicted(EvictionReason::MalformedLogin));
        };
        if !vsr::is_protocol_compatible(client_version.protocol_version, PROTOCOL_VERSION) {
            let (major, minor, patch) = vsr::unpack_version(client_version.protocol_version);
            tracing::warn!(
                target: "audit",
                event = "login_failed",
                method = "register",
                reason = "protocol_version",
                client_protocol = %format_args!("{major}.{minor}.{patch}"),
                sdk = %client_version.sdk_name,
                %peer
            );
            return (CommandLabel::Invalid, Answer::Evicted(EvictionReason::IncompatibleProtocol));
        }
        if let Ok((login, _)) = LoginRegister::decode(body) {
            let LoginRegister { username, password, context, .. } = login;
            let request = Request::LoginUser(LoginUser { username, password, version: None, context });
            let answer = match command::handle(request, session, ctx).await {
                Ok(reply) => self.registered(&reply),
                Err(ErrorCode::TooManyFailedLogins) => throttled(),
                // 42, 43, 44 and 47 alike: Iggy collapses them into one reason.
                Err(_) => Answer::Evicted(EvictionReason::InvalidCredentials),
            };
            return (CommandLabel::LoginUser, answer);
        }
        if let Ok((login, _)) = LoginRegisterWithPat::decode(body) {
            let request =
                Request::LoginWithPersonalAccessToken(LoginWithPersonalAccessToken { token: login.token });
            let answer = match command::handle(request, session, ctx).await {
                Ok(reply) => self.registered(&reply),
                Err(ErrorCode::TooManyFailedLogins) => throttled(),
                Err(ErrorCode::UserInactive) => Answer::Evicted(EvictionReason::UserInactive),
                // Unknown, deleted, expired (20, 54) or malformed: one reason, 53 to the SDK.
                Err(_) => Answer::Evicted(EvictionReason::InvalidToken),
            };
            return (CommandLabel::LoginWithPersonalAccessToken, answer);
        }
        tracing::warn!(target: "audit", event = "login_failed", method = "register", reason = "malformed", %peer);
        (CommandLabel::Invalid, Answer::Evicted(EvictionReason::MalformedLogin))
    }

    /// Binds a new session number to a successful login.
    fn registered(&mut self, reply: &ReplyBody) -> Answer {
        let ReplyBody::Identity(identity) = reply else {
            unreachable!("a login answered without an identity");
        };
        self.session = self.connections.next_vsr_session();
        debug_assert!(self.session >= 1);
        Answer::Registered(LoginRegisterResponse {
            user_id: identity.user_id,
            session: self.session,
            server_protocol_version: PROTOCOL_VERSION,
            server_version: SERVER_VERSION.to_owned(),
        })
    }
}

/// A login refused by the failed-login throttle before any check: a
/// pre-commit refusal, so a deny carrying Latchkey's own code (as on the
/// legacy path) rather than an eviction that would claim bad credentials.
/// The 0.11 SDK reports an unknown code as a generic error.
fn throttled() -> Answer {
    Answer::Denied(ErrorCode::TooManyFailedLogins)
}

/// A NonReplicated request: the command code rides in the header. The
/// label is the decoded request's, `Invalid` if it is refused undecoded.
async fn non_replicated(
    code: u32,
    body: &[u8],
    session: &mut Session,
    ctx: &Context,
) -> (CommandLabel, Answer) {
    let invalid = |answer| (CommandLabel::Invalid, answer);
    match code {
        // Iggy HEAD treats the legacy logins inside this framing as malformed logins.
        codes::LOGIN_USER | codes::LOGIN_WITH_PERSONAL_ACCESS_TOKEN => {
            return invalid(Answer::Evicted(EvictionReason::MalformedLogin));
        }
        // These travel as their own operations (Register, Logout, 146, 147), never as NonReplicated.
        codes::LOGIN_REGISTER
        | codes::LOGIN_REGISTER_WITH_PERSONAL_ACCESS_TOKEN
        | codes::LOGOUT_USER
        | codes::CREATE_PERSONAL_ACCESS_TOKEN
        | codes::DELETE_PERSONAL_ACCESS_TOKEN => return invalid(Answer::Denied(ErrorCode::InvalidCommand)),
        // Latchkey's extensions are served in the legacy framing only.
        code if codes::EXTENSION_CODES.contains(&code) => {
            return invalid(Answer::Denied(ErrorCode::InvalidCommand));
        }
        _ => {}
    }
    // The legacy decoder: unknown codes and non-empty bodies get 3 before
    // the login check, as on the legacy path.
    let request = match Request::decode(code, body) {
        Ok(request) => request,
        Err(code) => return invalid(Answer::Denied(code)),
    };
    let label = CommandLabel::of(&request);
    if !session.is_logged_in() && request != Request::Ping {
        return (label, Answer::Denied(ErrorCode::Unauthenticated));
    }
    match command::handle(request, session, ctx).await {
        Ok(reply) => (label, Answer::Raw(reply)),
        Err(code) => (label, Answer::Denied(code)),
    }
}

/// The command a client-replicated operation stands for.
fn replicated_label(op: u8) -> CommandLabel {
    match op {
        operation::CREATE_PERSONAL_ACCESS_TOKEN => CommandLabel::CreatePersonalAccessToken,
        operation::DELETE_PERSONAL_ACCESS_TOKEN => CommandLabel::DeletePersonalAccessToken,
        _ => CommandLabel::Unserved,
    }
}

/// Operations 146 and 147 on a logged-in connection: the legacy body and
/// handling, then Iggy's split between committed and pre-commit errors.
async fn token_mutation(code: u32, body: &[u8], session: &mut Session, ctx: &Context) -> Answer {
    let outcome = match Request::decode(code, body) {
        Ok(request) => command::handle(request, session, ctx).await,
        Err(code) => Err(code),
    };
    token_mutation_answer(outcome)
}

/// Iggy's split of a token create or delete's outcome between committed
/// errors (a result section) and pre-commit ones (a deny).
fn token_mutation_answer(outcome: Result<ReplyBody, ErrorCode>) -> Answer {
    match outcome {
        Ok(reply) => Answer::Accepted(reply),
        Err(
            code @ (ErrorCode::PersonalAccessTokenAlreadyExists
            | ErrorCode::ResourceNotFound
            | ErrorCode::InvalidPersonalAccessTokenExpiry),
        ) => Answer::Rejected(code),
        Err(code) => Answer::Denied(code),
    }
}

/// Writes `answer` as one reply or eviction frame.
fn encode_answer(request: &RequestHeader, answer: &Answer, session: u64, output: &mut BytesMut) {
    let reply = |status: u32| ReplyHeader::answering(request, session, status);
    match answer {
        Answer::Raw(body) => encode_reply(&reply(0), body, output),
        Answer::Accepted(body) => encode_reply(&reply(0), &Accepted(body as &dyn WireEncode), output),
        Answer::Registered(response) => encode_reply(&reply(0), &Accepted(response), output),
        Answer::Rejected(code) => encode_reply(&reply(0), &Rejected(*code), output),
        Answer::Denied(code) => encode_reply(&reply(code.code()), &Empty, output),
        Answer::Evicted(reason) => EvictionHeader::answering(request, *reason).encode(output),
    }
}
