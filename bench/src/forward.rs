//! The HTTP forward-auth scenario's client side, without an HTTP client
//! crate: the check request (bytes built once per connection), a parser
//! that frames responses by their status line and `Content-Length`, and the
//! setup that issues the bearer token through the REST API and deletes it
//! afterwards.
//!
//! Only what the two servers measured here send is understood: HTTP/1.x
//! responses framed by `Content-Length` (hyper writes one for every body of
//! known size). A response without it is taken to have no body.

use base64::Engine;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use std::net::SocketAddr;

use tokio::net::TcpStream;

/// The path proxies ask (`docs/forward-auth.md`).
pub const CHECK_PATH: &str = "/v1/auth/check";

/// Largest setup response read (the create reply is a few hundred bytes).
const SETUP_REPLY_BYTES_MAX: usize = 64 * 1024;

/// `GET /v1/auth/check` with the bearer token, kept alive. The same bytes
/// go to Latchkey and to the null HTTP server (hence the fixed `Host`).
pub fn check_request(token: &str) -> Vec<u8> {
    format!("GET {CHECK_PATH} HTTP/1.1\r\nHost: latchkey\r\nAuthorization: Bearer {token}\r\n\r\n")
        .into_bytes()
}

/// The bench token's name: one per process, so RabbitMQ's questions can
/// name it (`<user>/<name>`) before it exists.
pub fn token_name() -> String {
    format!("bench-http-{}", std::process::id())
}

/// One of RabbitMQ's four questions (`docs/brokers/rabbitmq.md`) about the
/// bench token, as the plugin sends it with `http_method = post`. The login
/// question carries the token; the others name it only.
pub fn rabbitmq_request(question: &str, user: &str, token: &str) -> Vec<u8> {
    let username = format!("{user}%2F{}", token_name());
    let fields = match question {
        "user" => format!("username={username}&password={token}"),
        "vhost" => format!("username={username}&vhost=%2F&ip=127.0.0.1"),
        "resource" => format!("username={username}&vhost=%2F&resource=exchange&name=bench&permission=write"),
        _ => format!(
            "username={username}&vhost=%2F&resource=topic&name=bench&permission=write&routing_key=a.b"
        ),
    };
    format!(
        "POST /v1/rabbitmq/{question} HTTP/1.1\r\nHost: latchkey\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{fields}",
        fields.len()
    )
    .into_bytes()
}

/// One complete response at the start of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub struct Response {
    /// 0 when the status line is not `HTTP/1.x NNN`.
    pub status: u16,
    /// Status line and headers with the blank line.
    pub head_bytes: usize,
    /// Head and body.
    pub total_bytes: usize,
}

/// The first response in `input`, or `None` until all of it is buffered.
pub fn response(input: &[u8]) -> Option<Response> {
    let head_bytes = input.windows(4).position(|window| window == b"\r\n\r\n")? + 4;
    let head = &input[..head_bytes];
    let total_bytes = head_bytes.checked_add(content_length(head))?;
    (input.len() >= total_bytes).then(|| Response { status: status(head), head_bytes, total_bytes })
}

fn status(head: &[u8]) -> u16 {
    match head {
        [b'H', b'T', b'T', b'P', b'/', b'1', b'.', _, b' ', digits @ ..] if digits.len() >= 3 => {
            digits[..3].iter().try_fold(0u16, |status, &digit| {
                digit.is_ascii_digit().then(|| status * 10 + u16::from(digit - b'0'))
            })
        }
        _ => None,
    }
    .unwrap_or(0)
}

/// The `Content-Length` header's value (any case), or 0 without one.
fn content_length(head: &[u8]) -> usize {
    const NAME: &[u8] = b"content-length:";
    head.split(|&byte| byte == b'\n')
        .find(|line| line.len() > NAME.len() && line[..NAME.len()].eq_ignore_ascii_case(NAME))
        .and_then(|line| std::str::from_utf8(&line[NAME.len()..]).ok())
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0)
}

/// Parses complete responses at the start of `input` for the load loop:
/// `(responses, bytes, errors)`, where any status but 200 is an error.
pub fn replies(input: &[u8]) -> (usize, usize, usize) {
    let (mut offset, mut replies, mut errors) = (0, 0, 0);
    while let Some(response) = response(&input[offset..]) {
        offset += response.total_bytes;
        replies += 1;
        errors += usize::from(response.status != 200);
    }
    (replies, offset, errors)
}

/// A token issued for the run, deleted again by [`IssuedToken::delete`].
pub struct IssuedToken {
    pub token: String,
    id: u64,
}

/// Where the setup's REST requests go, and as whom (Basic credentials).
pub struct Setup<'a> {
    pub address: SocketAddr,
    pub user: &'a str,
    pub password: &'a str,
}

/// One REST request on its own plain connection (`Connection: close`),
/// answered with the status and body.
async fn rest(target: &Setup<'_>, method: &str, path: &str, body: &str) -> std::io::Result<(u16, Vec<u8>)> {
    let credentials =
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", target.user, target.password));
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: latchkey\r\nAuthorization: Basic {credentials}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut stream = TcpStream::connect(target.address).await?;
    stream.set_nodelay(true)?;
    stream.write_all(request.as_bytes()).await?;
    stream.flush().await?;
    let mut input = Vec::new();
    loop {
        if let Some(response) = response(&input) {
            let body = input[response.head_bytes..response.total_bytes].to_vec();
            return Ok((response.status, body));
        }
        if input.len() > SETUP_REPLY_BYTES_MAX {
            return Err(std::io::Error::other("setup: the HTTP reply is too large"));
        }
        let mut chunk = [0u8; 4096];
        let read = stream.read(&mut chunk).await?;
        if read == 0 {
            return Err(std::io::Error::other("setup: the server closed before a whole HTTP reply"));
        }
        input.extend_from_slice(&chunk[..read]);
    }
}

/// The value of `"field":` in a flat JSON object: a string's contents (no
/// escapes expected: token values and ids are plain) or a number's digits.
fn json_field<'a>(json: &'a str, field: &str) -> Option<&'a str> {
    let key = format!("\"{field}\":");
    let rest = json[json.find(&key)? + key.len()..].trim_start();
    match rest.strip_prefix('"') {
        Some(string) => string.split('"').next(),
        None => rest.split(|c: char| !c.is_ascii_digit()).next().filter(|digits| !digits.is_empty()),
    }
}

/// Creates a token for this run with `POST /v1/tokens` (Basic credentials
/// of the target's user), named after this process ([`token_name`]), so a
/// run does not trip over a token an earlier, interrupted one left behind.
pub async fn issue_token(target: &Setup<'_>) -> std::io::Result<IssuedToken> {
    let name = token_name();
    let (status, body) = rest(target, "POST", "/v1/tokens", &format!("{{\"name\":\"{name}\"}}")).await?;
    let body = String::from_utf8_lossy(&body);
    if status != 201 {
        return Err(std::io::Error::other(format!(
            "setup: POST /v1/tokens at {} answered {status} (--http-addr must be Latchkey's HTTP side): {body}",
            target.address
        )));
    }
    let token = json_field(&body, "token").map(str::to_owned);
    let id = json_field(&body, "id").and_then(|id| id.parse().ok());
    match (token, id) {
        (Some(token), Some(id)) => Ok(IssuedToken { token, id }),
        _ => Err(std::io::Error::other("setup: the create reply has no token or id")),
    }
}

impl IssuedToken {
    /// `DELETE /v1/tokens/{id}`.
    pub async fn delete(&self, target: &Setup<'_>) -> std::io::Result<()> {
        let (status, _) = rest(target, "DELETE", &format!("/v1/tokens/{}", self.id), "").await?;
        if !(200..300).contains(&status) {
            return Err(std::io::Error::other(format!(
                "teardown: DELETE of the bench token answered {status}"
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &[u8] =
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nContent-Length: 5\r\n\r\n{\"a\"}";

    #[test]
    fn responses_are_framed_by_content_length() {
        assert_eq!(response(OK), Some(Response { status: 200, head_bytes: 70, total_bytes: 75 }));
        // Every truncation is "not yet", never a wrong frame.
        for cut in 0..OK.len() {
            assert_eq!(response(&OK[..cut]), None, "cut at {cut}");
        }
        let denied = b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\n\r\n";
        let mut two = OK.to_vec();
        two.extend_from_slice(denied);
        two.extend_from_slice(&OK[..10]);
        assert_eq!(replies(&two), (2, OK.len() + denied.len(), 1));
    }

    #[test]
    fn a_malformed_status_line_is_an_error_not_a_panic() {
        assert_eq!(response(b"HTTP/1.1 2x0 OK\r\n\r\n").map(|r| r.status), Some(0));
        assert_eq!(response(b"SPDY\r\n\r\n").map(|r| r.status), Some(0));
        assert_eq!(replies(b"HTTP/1.1 20\r\n\r\n"), (1, 15, 1));
    }

    #[test]
    fn setup_reads_flat_json_fields() {
        let body = r#"{"id":42,"name":"bench-http-1","token":"lk_abc","created_at":"x"}"#;
        assert_eq!(json_field(body, "token"), Some("lk_abc"));
        assert_eq!(json_field(body, "id"), Some("42"));
        assert_eq!(json_field(body, "missing"), None);
    }

    #[test]
    fn rabbitmq_questions_are_complete_form_posts_naming_the_bench_token() {
        for question in ["user", "vhost", "resource", "topic"] {
            let request = String::from_utf8(rabbitmq_request(question, "iggy", "lk_x")).unwrap();
            let (head, body) = request.split_once("\r\n\r\n").unwrap();
            assert!(head.starts_with(&format!("POST /v1/rabbitmq/{question} HTTP/1.1\r\n")));
            assert!(head.contains(&format!("Content-Length: {}", body.len())), "{head}");
            assert!(body.starts_with(&format!("username=iggy%2F{}", token_name())), "{body}");
            assert_eq!(body.contains("password=lk_x"), question == "user");
        }
    }

    #[test]
    fn the_check_request_is_one_complete_head() {
        let request = check_request("lk_abc");
        assert!(request.starts_with(b"GET /v1/auth/check HTTP/1.1\r\n"));
        assert!(request.ends_with(b"Authorization: Bearer lk_abc\r\n\r\n"));
    }
}
