//! What a request brings: its body (under `[http]`'s limits), its query
//! or form fields, and its caller's credentials, logged in as a session of
//! the binary protocol's command layer.

use std::borrow::Cow;
use std::collections::HashMap;
use std::pin::Pin;
use std::task::Poll;

use base64::Engine;
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming};
use hyper::header::{AUTHORIZATION, CONTENT_LENGTH};
use hyper::{HeaderMap, Request, StatusCode};
use latchkey_protocol::body::{LoginUser, LoginWithPersonalAccessToken};
use latchkey_protocol::{ErrorCode, Request as Command, Secret};

use super::Exchange;
use super::reply::ApiError;
use crate::command::{self, ReplyBody, Session};

/// The request's body, at most `max_body_bytes` (413 past it), sent within
/// `request_timeout` (408 past it). What already arrived with the request's
/// head (a small form or JSON body usually has) is taken without setting a
/// timer; only a body still on its way is awaited under the timeout.
pub async fn body(request: Request<Incoming>, exchange: &Exchange) -> Result<Bytes, ApiError> {
    let max = exchange.side.max_body_bytes;
    let declared = request.headers().get(CONTENT_LENGTH).and_then(|value| value.to_str().ok());
    if declared.and_then(|text| text.parse::<u64>().ok()).is_some_and(|length| length > max as u64) {
        return Err(too_large(max));
    }
    let mut incoming = request.into_body();
    let mut taken = Taken::default();
    loop {
        if incoming.is_end_stream() {
            return Ok(taken.into_bytes());
        }
        let polled = std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut incoming).poll_frame(cx))).await;
        match polled {
            Poll::Ready(Some(Ok(frame))) => taken.add(frame, max).map_err(|()| too_large(max))?,
            Poll::Ready(Some(Err(_))) => return Err(ApiError::invalid("the body could not be read")),
            Poll::Ready(None) => return Ok(taken.into_bytes()),
            Poll::Pending => break,
        }
    }
    // Boxed: the timer and the loop are for a body still on its way, and
    // kept out of this future they do not make every request's future
    // (which is moved into place per request) larger.
    Box::pin(rest_of_body(incoming, taken, exchange)).await
}

/// The part of a body that had not arrived with the request's head,
/// awaited under `request_timeout`.
async fn rest_of_body(
    mut incoming: Incoming,
    mut taken: Taken,
    exchange: &Exchange,
) -> Result<Bytes, ApiError> {
    let max = exchange.side.max_body_bytes;
    let rest = async {
        while let Some(frame) = incoming.frame().await {
            let frame = frame.map_err(|_| ApiError::invalid("the body could not be read"))?;
            taken.add(frame, max).map_err(|()| too_large(max))?;
        }
        Ok(())
    };
    match tokio::time::timeout(exchange.side.request_timeout, rest).await {
        Ok(Ok(())) => Ok(taken.into_bytes()),
        Ok(Err(error)) => Err(error),
        Err(_) => Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            ErrorCode::InvalidFormat,
            "the body did not arrive within [http] request_timeout",
        )),
    }
}

/// 413, for a body past `max` bytes.
fn too_large(max: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::InvalidFormat,
        format!("the body is larger than {max} bytes ([http] max_body_bytes)"),
    )
}

/// A body's data frames so far: the first kept as it came (most bodies
/// are one frame, so nothing is copied), later ones appended.
#[derive(Default)]
struct Taken {
    first: Bytes,
    more: Option<BytesMut>,
}

impl Taken {
    /// Adds a frame (trailers are ignored); `Err` once past `max` bytes.
    fn add(&mut self, frame: Frame<Bytes>, max: usize) -> Result<(), ()> {
        let Ok(data) = frame.into_data() else { return Ok(()) };
        let so_far = self.more.as_ref().map_or(self.first.len(), BytesMut::len);
        if so_far.saturating_add(data.len()) > max {
            return Err(());
        }
        match &mut self.more {
            Some(more) => more.extend_from_slice(&data),
            None if self.first.is_empty() => self.first = data,
            None => {
                let mut more = BytesMut::with_capacity(so_far + data.len());
                more.extend_from_slice(&self.first);
                more.extend_from_slice(&data);
                self.more = Some(more);
            }
        }
        Ok(())
    }

    fn into_bytes(self) -> Bytes {
        self.more.map_or(self.first, BytesMut::freeze)
    }
}

/// The value of field `name` in a query string or form body, decoded as
/// [`form`] does; borrowed unless it has escapes. A name given twice: its
/// last value.
pub fn form_field<'a>(text: &'a str, name: &str) -> Option<Cow<'a, str>> {
    let raw = text
        .split('&')
        .filter_map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (key == name).then_some(value)
        })
        .next_back()?;
    decode_form_value(raw)
}

/// One field's value as sent in a query or form: `+` is a space and `%XX`
/// an escaped byte (a `%` not followed by two hex digits stays as it is);
/// `None` when the result is not UTF-8. Borrowed unless it has escapes,
/// and then decoded in one pass into one allocation of the right size
/// (RabbitMQ's usernames, `<owner>%2F<token name>`, always have one).
pub fn decode_form_value(raw: &str) -> Option<Cow<'_, str>> {
    if !needs_decoding(raw.as_bytes()) {
        return Some(Cow::Borrowed(raw));
    }
    let mut decoded = Vec::with_capacity(raw.len());
    decode_form_into(raw.as_bytes(), &mut decoded);
    String::from_utf8(decoded).ok().map(Cow::Owned)
}

/// Whether a form value has an escape or a `+` to decode.
#[inline]
fn needs_decoding(raw: &[u8]) -> bool {
    raw.iter().any(|&byte| byte == b'%' || byte == b'+')
}

/// Appends `raw` decoded as [`decode_form_value`] decodes it (before the
/// UTF-8 check) to `decoded`: the plain runs copied whole, decoding only
/// at `%` and `+`.
pub fn decode_form_into(raw: &[u8], decoded: &mut Vec<u8>) {
    let hex = |at: usize| raw.get(at).and_then(|&digit| char::from(digit).to_digit(16));
    let mut at = 0;
    while let Some(run) = raw[at..].iter().position(|&byte| byte == b'%' || byte == b'+') {
        decoded.extend_from_slice(&raw[at..at + run]);
        at += run;
        match (raw[at], hex(at + 1), hex(at + 2)) {
            (b'%', Some(high), Some(low)) => {
                // Two hex digits: at most 0xFF, so the cast keeps every bit.
                decoded.push((high * 16 + low) as u8);
                at += 3;
            }
            (b'+', _, _) => {
                decoded.push(b' ');
                at += 1;
            }
            (byte, _, _) => {
                decoded.push(byte);
                at += 1;
            }
        }
    }
    decoded.extend_from_slice(&raw[at..]);
}

/// A query string or form body as name → value (percent-decoded, `+` as
/// space; a name given twice keeps its last value).
pub fn form(text: &str) -> Result<HashMap<String, String>, ApiError> {
    let decode = |part: &str| {
        let spaced = part.replace('+', " ");
        percent_encoding::percent_decode_str(&spaced)
            .decode_utf8()
            .map(|text| text.into_owned())
            .map_err(|_| ApiError::invalid("a query or form field is not UTF-8"))
    };
    let mut fields = HashMap::new();
    for pair in text.split('&').filter(|pair| !pair.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        fields.insert(decode(name)?, decode(value)?);
    }
    Ok(fields)
}

/// How the request proved who it is.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    Token,
    Password,
}

/// A session logged in with the request's credentials.
pub struct Caller {
    pub session: CallerSession,
    pub user_id: u32,
    pub credential: Credential,
}

/// The command session a request runs in: its own, logged in for this
/// request only, or a web console session's, kept between requests (and
/// locked for this one, so one browser's requests run one at a time).
pub enum CallerSession {
    Own(Session),
    Console(tokio::sync::OwnedMutexGuard<Session>),
}

impl std::ops::Deref for CallerSession {
    type Target = Session;
    fn deref(&self) -> &Session {
        match self {
            CallerSession::Own(session) => session,
            CallerSession::Console(guard) => guard,
        }
    }
}

impl std::ops::DerefMut for CallerSession {
    fn deref_mut(&mut self) -> &mut Session {
        match self {
            CallerSession::Own(session) => session,
            CallerSession::Console(guard) => guard,
        }
    }
}

/// Logs in with the `Authorization` header only, as a client at the
/// address the trusted proxies vouch for.
pub async fn log_in_with_header(headers: &HeaderMap, exchange: &Exchange) -> Result<Caller, ApiError> {
    let (login, credential) = credentials(headers)?;
    let session = log_in_as(login, headers, exchange).await?;
    let user_id = session.1;
    Ok(Caller { session: CallerSession::Own(session.0), user_id, credential })
}

/// Runs `login` (a LoginUser or LoginWithPersonalAccessToken) in a new
/// session at the client's address: Argon2 on the password pool and the
/// failed-login throttle, as on TCP. The session and its user id.
pub async fn log_in_as(
    login: Command,
    headers: &HeaderMap,
    exchange: &Exchange,
) -> Result<(Session, u32), ApiError> {
    let client = exchange.side.trusted.client(exchange.peer, headers);
    let mut session = Session::new(exchange.side.connections.next_client_id(), client);
    let ctx = &exchange.ctx;
    let identity = command::handle(login, &mut session, ctx).await.map_err(ApiError::from_login)?;
    let ReplyBody::Identity(identity) = identity else {
        return Err(ApiError::from_code(ErrorCode::Error));
    };
    Ok((session, identity.user_id))
}

/// The session of a caller logged in with the `Authorization` header
/// (never a console cookie: introspection is for services, not browsers).
pub async fn log_in_caller(headers: &HeaderMap, exchange: &Exchange) -> Result<Session, ApiError> {
    let (login, _) = credentials(headers)?;
    log_in_as(login, headers, exchange).await.map(|(session, _)| session)
}

/// The login request the `Authorization` header stands for.
fn credentials(headers: &HeaderMap) -> Result<(Command, Credential), ApiError> {
    let unauthenticated = |message: &str| {
        ApiError::new(StatusCode::UNAUTHORIZED, ErrorCode::Unauthenticated, message.to_owned())
    };
    let Some(value) = headers.get(AUTHORIZATION) else {
        return Err(unauthenticated("send Authorization: Bearer <token> or Basic <username:password>"));
    };
    let value = value.to_str().map_err(|_| unauthenticated("the Authorization header is not text"))?;
    let (scheme, rest) = value.trim().split_once(' ').unwrap_or((value, ""));
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        let login = LoginWithPersonalAccessToken { token: Secret::new(rest.to_owned()) };
        return Ok((Command::LoginWithPersonalAccessToken(login), Credential::Token));
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .ok_or_else(|| unauthenticated("Basic credentials are not base64 of UTF-8 username:password"))?;
        let (username, password) = decoded
            .split_once(':')
            .ok_or_else(|| unauthenticated("Basic credentials need username:password"))?;
        let login = LoginUser {
            username: username.to_owned(),
            password: Secret::new(password.to_owned()),
            version: None,
            context: Some("http".to_owned()),
        };
        return Ok((Command::LoginUser(login), Credential::Password));
    }
    Err(unauthenticated("the Authorization scheme must be Bearer or Basic"))
}

impl Caller {
    /// ListTokens with the REST API's `expiring_within` (no wire command
    /// carries it): the same checks and paging.
    pub fn list_expiring(
        &mut self,
        list: latchkey_protocol::ext::ListTokens,
        before_us: u64,
        exchange: &Exchange,
    ) -> Result<latchkey_protocol::ext::TokenPage, ApiError> {
        command::list_tokens_expiring(list, before_us, &mut self.session, &exchange.ctx)
            .map_err(ApiError::from_code)
    }

    /// Runs `request` in this caller's session.
    pub async fn run(&mut self, request: Command, exchange: &Exchange) -> Result<ReplyBody, ApiError> {
        let reply = command::handle(request, &mut self.session, &exchange.ctx).await;
        exchange.ctx.uses.hand_over(self.session.take_uses());
        reply.map_err(ApiError::from_code)
    }
}

#[cfg(test)]
mod tests {
    use super::{form, form_field};

    #[test]
    fn one_field_is_read_without_a_copy_unless_escaped() {
        use std::borrow::Cow;
        let text = "username=iggy%2Forders&vhost=%2F&name=orders&name=billing&note=a+b&flag";
        assert_eq!(form_field(text, "username").as_deref(), Some("iggy/orders"));
        assert_eq!(form_field(text, "vhost").as_deref(), Some("/"));
        assert!(matches!(form_field(text, "name"), Some(Cow::Borrowed("billing"))));
        assert_eq!(form_field(text, "note").as_deref(), Some("a b"));
        assert_eq!(form_field(text, "flag").as_deref(), Some(""));
        assert_eq!(form_field(text, "missing"), None);
        assert_eq!(form_field("a=%FF", "a"), None);
    }

    #[test]
    fn field_values_decode_as_the_percent_encoding_crate_does() {
        use super::decode_form_value;
        // Against the crate the form map uses (`form`), `+` first made a
        // space, on escapes of every kind, broken ones included.
        let reference = |raw: &str| {
            percent_encoding::percent_decode_str(&raw.replace('+', " "))
                .decode_utf8()
                .ok()
                .map(|text| text.into_owned())
        };
        let cases = [
            "iggy%2Forders",
            "%2F",
            "a+b",
            "%2B",
            "a%2b%2C",
            "100%",
            "%",
            "%4",
            "%zz",
            "%%41",
            "%4G1",
            "+%2F+",
            "%C3%A9t%C3%A9",
            "%FF",
            "%C3",
            "caf\u{e9}%20ok",
            "plain",
            "",
            "%252F",
        ];
        for raw in cases {
            assert_eq!(decode_form_value(raw).map(|text| text.into_owned()), reference(raw), "{raw:?}");
        }
        for byte in 0..=255u8 {
            let raw = format!("x%{byte:02X}y%{byte:02x}");
            assert_eq!(decode_form_value(&raw).map(|text| text.into_owned()), reference(&raw), "{raw:?}");
        }
    }

    #[test]
    fn forms_decode() {
        let fields = form("token=lk%5Fab+c&scope=stream%3Ax%3Aread&empty=&flag").unwrap();
        assert_eq!(fields["token"], "lk_ab c");
        assert_eq!(fields["scope"], "stream:x:read");
        assert_eq!(fields["empty"], "");
        assert_eq!(fields["flag"], "");
        assert!(form("a=%FF").is_err());
    }
}
