//! A real nginx in front of a small upstream, asking Latchkey about every
//! request with `auth_request`, configured by the example this repository
//! ships (`docs/nginx-forward-auth.conf`, only its addresses swapped).
//!
//! Needs Debian's `nginx` (it carries the auth_request module); skipped
//! with a message without it, and failed under CI.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use latchkey_tests::http::{Response, basic, bearer, request};
use latchkey_tests::{DataHome, ServerSpec, TestServer, free_port, skip};
use serde_json::json;

/// What the upstream saw: each request's path and headers (lower-cased).
type Seen = Arc<Mutex<Vec<(String, Vec<(String, String)>)>>>;

/// A minimal HTTP upstream: records each request and answers 200.
fn upstream() -> (SocketAddr, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let seen: Seen = Arc::default();
    let record = Arc::clone(&seen);
    std::thread::spawn(move || {
        for stream in listener.incoming().map_while(Result::ok) {
            let record = Arc::clone(&record);
            std::thread::spawn(move || serve_upstream(stream, &record));
        }
    });
    (address, seen)
}

fn serve_upstream(stream: TcpStream, seen: &Seen) {
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let path = line.split_whitespace().nth(1).unwrap_or("").to_owned();
        let mut headers = Vec::new();
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
            }
        }
        seen.lock().unwrap().push((path, headers));
        let body = "upstream ok";
        let reply = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len());
        if reader.get_mut().write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}

struct Nginx {
    child: Child,
    address: SocketAddr,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts nginx on the shipped example with its addresses swapped.
fn start_nginx(dir: &Path, latchkey: SocketAddr, upstream: SocketAddr) -> Nginx {
    let example = include_str!("../../docs/nginx-forward-auth.conf");
    let port = free_port();
    let address: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    assert!(example.contains("127.0.0.1:8091") && example.contains("127.0.0.1:9000"));
    let config = example
        .replace("127.0.0.1:8091", &latchkey.to_string())
        .replace("127.0.0.1:9000", &upstream.to_string())
        .replace("listen 127.0.0.1:8080", &format!("listen {address}"));
    // Run in the foreground, as this user, with every file under `dir`.
    let temp = dir.display();
    let config = format!(
        "daemon off;\nmaster_process off;\npid {temp}/nginx.pid;\nerror_log {temp}/error.log info;\n{}",
        config.replacen(
            "http {",
            &format!(
                "http {{\n    client_body_temp_path {temp}/body;\n    proxy_temp_path {temp}/proxy;\n    fastcgi_temp_path {temp}/fastcgi;\n    uwsgi_temp_path {temp}/uwsgi;\n    scgi_temp_path {temp}/scgi;\n"
            ),
            1
        )
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, config).unwrap();
    let child = Command::new("nginx")
        .arg("-p")
        .arg(dir)
        .arg("-e")
        .arg(dir.join("error.log"))
        .arg("-c")
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run nginx");
    let mut nginx = Nginx { child, address };
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(address).is_err() {
        if let Ok(Some(status)) = nginx.child.try_wait() {
            let log = std::fs::read_to_string(dir.join("error.log")).unwrap_or_default();
            panic!("nginx exited with {status}:\n{log}");
        }
        assert!(Instant::now() < deadline, "nginx did not listen in time");
        std::thread::sleep(Duration::from_millis(20));
    }
    nginx
}

fn nginx_available() -> bool {
    let found = Command::new("nginx").arg("-v").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok();
    if !found {
        skip("nginx is not installed", "apt-get install nginx (Debian's carries the auth_request module)");
    }
    found
}

fn get(nginx: &Nginx, path: &str, token: Option<&str>) -> Response {
    let auth = token.map(bearer);
    let headers: Vec<(&str, &str)> = auth.iter().map(|auth| ("Authorization", auth.as_str())).collect();
    request(nginx.address, "GET", path, &headers, b"")
}

#[test]
fn nginx_auth_request_lets_good_tokens_through_and_stops_the_rest() {
    if !nginx_available() {
        return;
    }
    let home = DataHome::new();
    let spec = ServerSpec::default_root().env("LATCHKEY_HTTP_TRUSTED_PROXIES", "127.0.0.1");
    let server = TestServer::start(&home, &spec);
    let latchkey = server.http_address.unwrap();
    let (upstream, seen) = upstream();
    let dir = tempfile::tempdir().unwrap();
    let nginx = start_nginx(dir.path(), latchkey, upstream);

    let make = |name: &str, scopes: serde_json::Value| {
        let body = json!({"name": name, "scopes": scopes}).to_string();
        let auth = basic("iggy", "iggy");
        let made = request(latchkey, "POST", "/v1/tokens", &[("Authorization", &auth)], body.as_bytes());
        assert_eq!(made.status, 201, "{}", made.text());
        (made.json()["id"].as_u64().unwrap(), made.json()["token"].as_str().unwrap().to_owned())
    };
    let (good_id, good) = make("orders-reader", json!(["stream:orders:read"]));
    let (_, other_scope) = make("billing-reader", json!(["stream:billing:read"]));
    let (revoked_id, revoked) = make("to-revoke", json!([]));
    let auth = basic("iggy", "iggy");
    let revoke = request(
        latchkey,
        "POST",
        &format!("/v1/tokens/{revoked_id}/revoke"),
        &[("Authorization", &auth)],
        b"",
    );
    assert_eq!(revoke.status, 204);

    // A good token reaches the upstream, with who it is and without itself.
    let allowed = get(&nginx, "/orders/42", Some(&good));
    assert_eq!((allowed.status, allowed.text().as_str()), (200, "upstream ok"));
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1, "{seen:?}");
        let (path, headers) = &seen[0];
        assert_eq!(path, "/orders/42");
        let header =
            |name: &str| headers.iter().find(|(have, _)| have == name).map(|(_, value)| value.as_str());
        assert_eq!(header("x-latchkey-user-id"), Some("0"));
        assert_eq!(header("x-latchkey-username"), Some("iggy"));
        assert_eq!(header("x-latchkey-token-id"), Some(good_id.to_string().as_str()));
        assert_eq!(header("x-latchkey-scopes"), Some("stream:orders:read"));
        assert_eq!(header("authorization"), None, "the token went upstream");
    }

    // Denied: Latchkey's status reaches the client, the upstream sees nothing.
    let revoked = get(&nginx, "/orders/1", Some(&revoked));
    assert_eq!(revoked.status, 401);
    assert!(
        revoked.header("www-authenticate").is_some_and(|value| value.starts_with("Bearer")),
        "{revoked:?}"
    );
    assert_eq!(get(&nginx, "/orders/1", Some(&other_scope)).status, 403);
    assert_eq!(get(&nginx, "/orders/1", None).status, 401);
    assert_eq!(get(&nginx, "/orders/1", Some("lk_not_a_real_token")).status, 401);
    assert_eq!(seen.lock().unwrap().len(), 1, "a denied request reached the upstream");

    // Many requests over nginx's kept-alive connections to Latchkey.
    for _ in 0..50 {
        assert_eq!(get(&nginx, "/orders/7", Some(&good)).status, 200);
    }
    assert_eq!(seen.lock().unwrap().len(), 51);
}
