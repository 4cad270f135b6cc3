//! A small blocking HTTP/1.1 client for the HTTP side's tests: plain
//! `TcpStream`, one request at a time on a kept-alive connection, the
//! response read whole (the server always sends `Content-Length`). Small
//! enough that a test can also send what no real client would.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// No test waits longer than this for a response (a hang guard, not a
/// timing assertion).
const HANG_GUARD: Duration = Duration::from_secs(20);

/// A response, read whole.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    /// Names lower-cased, in the order received.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers.iter().find(|(have, _)| *have == name).map(|(_, value)| value.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; panics with the body if it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|error| panic!("not JSON ({error}): {:?} (status {})", self.text(), self.status))
    }
}

/// One kept-alive connection.
pub struct HttpConnection {
    reader: BufReader<TcpStream>,
}

impl HttpConnection {
    pub fn open(address: SocketAddr) -> HttpConnection {
        let stream = TcpStream::connect(address).expect("connect to the HTTP side");
        stream.set_read_timeout(Some(HANG_GUARD)).unwrap();
        stream.set_nodelay(true).unwrap();
        HttpConnection { reader: BufReader::new(stream) }
    }

    /// Sends `raw` as is and reads one response (`None` if the server
    /// closed the connection instead).
    pub fn raw(&mut self, raw: &[u8]) -> Option<Response> {
        self.reader.get_mut().write_all(raw).ok()?;
        self.read_response()
    }

    /// Sends `part` of a request and nothing more (for a request that
    /// arrives in pieces; [`HttpConnection::response`] reads the answer).
    /// Fails once the server has closed the connection.
    pub fn write_part(&mut self, part: &[u8]) -> std::io::Result<()> {
        self.reader.get_mut().write_all(part)
    }

    /// Reads one response (`None` if the server closed the connection).
    pub fn response(&mut self) -> Option<Response> {
        self.read_response()
    }

    /// Sends a request with `headers` and `body` (Content-Length is added).
    pub fn send(&mut self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
        let mut request = format!("{method} {path} HTTP/1.1\r\nHost: latchkey\r\n");
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        if !body.is_empty() || matches!(method, "POST" | "PATCH" | "PUT") {
            request.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        request.push_str("\r\n");
        let mut bytes = request.into_bytes();
        bytes.extend_from_slice(body);
        self.raw(&bytes).unwrap_or_else(|| panic!("{method} {path}: the server closed the connection"))
    }

    fn read_response(&mut self) -> Option<Response> {
        let mut status_line = String::new();
        if self.reader.read_line(&mut status_line).ok()? == 0 {
            return None;
        }
        let status = status_line.split_whitespace().nth(1)?.parse().ok()?;
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            self.reader.read_line(&mut line).ok()?;
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let (name, value) = line.split_once(':')?;
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
        let length: usize = headers
            .iter()
            .find(|(name, _)| name == "content-length")
            .and_then(|(_, value)| value.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; length];
        self.reader.read_exact(&mut body).ok()?;
        Some(Response { status, headers, body })
    }
}

/// A request on a connection of its own.
pub fn request(
    address: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    HttpConnection::open(address).send(method, path, headers, body)
}

/// `Authorization` for a bearer token.
pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// `Authorization` for Basic username:password (base64 written here: the
/// tests need no more of it than this).
pub fn basic(username: &str, password: &str) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let input = format!("{username}:{password}").into_bytes();
    let mut out = String::from("Basic ");
    for chunk in input.chunks(3) {
        let bytes = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(bytes[0]) << 16) | (u32::from(bytes[1]) << 8) | u32::from(bytes[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn basic_is_base64() {
        assert_eq!(super::basic("iggy", "iggy"), "Basic aWdneTppZ2d5");
        assert_eq!(super::basic("a", "b"), "Basic YTpi");
        assert_eq!(super::basic("ab", "cd"), "Basic YWI6Y2Q=");
    }
}
