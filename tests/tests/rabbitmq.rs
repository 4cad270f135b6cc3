//! A real RabbitMQ asking Latchkey through its HTTP auth backend, and a
//! real AMQP client (Python's pika, `tests/rabbitmq/amqp.py`) connecting
//! with personal access tokens: the token's scopes decide what it may
//! publish to and consume from; revoked, out-of-network and wrong
//! credentials are refused; guessing is throttled.
//!
//! Needs Debian's `rabbitmq-server` (3.10, with the plugin) and
//! `python3-pika`; skipped with a message without them, failed under CI.

use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use latchkey_tests::http::{basic, request};
use latchkey_tests::{DataHome, ServerSpec, TestServer, free_ports, skip};
use serde_json::{Value, json};

const RABBITMQ_SERVER: &str = "/usr/lib/rabbitmq/bin/rabbitmq-server";
/// Debian's Python, where `python3-pika` installs (a python3 earlier on the
/// PATH, such as a pyenv shim, may lack it).
const PYTHON: &str = "/usr/bin/python3";

/// A RabbitMQ node of the test's own: node name, ports, data and config in
/// a temporary directory. Killed (its whole process group) when dropped.
struct Rabbit {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Drop for Rabbit {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the process group the child leads; no memory
        // is touched.
        unsafe {
            libc::kill(-(self.child.id() as i32), libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

impl Rabbit {
    fn start(latchkey_http: SocketAddr) -> Rabbit {
        static NODES: AtomicU32 = AtomicU32::new(0);
        let dir = tempfile::tempdir().unwrap();
        let ports = free_ports(2);
        let (port, dist_port) = (ports[0], ports[1]);
        let base = format!("http://{latchkey_http}/v1/rabbitmq");
        let config = format!(
            "listeners.tcp.default = 127.0.0.1:{port}\n\
             auth_backends.1 = http\n\
             auth_http.http_method = post\n\
             auth_http.user_path = {base}/user\n\
             auth_http.vhost_path = {base}/vhost\n\
             auth_http.resource_path = {base}/resource\n\
             auth_http.topic_path = {base}/topic\n\
             loopback_users = none\n"
        );
        let path = |name: &str| dir.path().join(name);
        std::fs::write(path("rabbitmq.conf"), config).unwrap();
        std::fs::write(path("enabled_plugins"), "[rabbitmq_auth_backend_http].\n").unwrap();
        let node = format!(
            "latchkey-test-{}-{}@localhost",
            std::process::id(),
            NODES.fetch_add(1, Ordering::Relaxed)
        );
        let log = std::fs::File::create(path("rabbitmq.log")).unwrap();
        let child = Command::new(RABBITMQ_SERVER)
            .env("HOME", dir.path())
            .env("RABBITMQ_NODENAME", &node)
            .env("RABBITMQ_NODE_PORT", port.to_string())
            .env("RABBITMQ_DIST_PORT", dist_port.to_string())
            .env("RABBITMQ_CONFIG_FILE", path("rabbitmq.conf"))
            .env("RABBITMQ_MNESIA_BASE", path("mnesia"))
            .env("RABBITMQ_LOG_BASE", path("log"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", path("enabled_plugins"))
            .env("RABBITMQ_LOGS", "-")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .process_group(0)
            .spawn()
            .expect("run rabbitmq-server");
        let mut rabbit = Rabbit { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let log = std::fs::read_to_string(rabbit.dir.path().join("rabbitmq.log")).unwrap_or_default();
            if log.contains("Server startup complete") && TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return rabbit;
            }
            if let Ok(Some(status)) = rabbit.child.try_wait() {
                panic!("rabbitmq-server exited with {status}:\n{log}");
            }
            assert!(Instant::now() < deadline, "RabbitMQ did not start in time:\n{log}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// One AMQP action as `username` with `password`: the probe's JSON line.
    fn amqp(&self, username: &str, password: &str, action: &[&str]) -> Value {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("rabbitmq/amqp.py");
        let output = Command::new(PYTHON)
            .arg(script)
            .arg(self.port.to_string())
            .arg(username)
            .arg(password)
            .args(action)
            .output()
            .expect("run the AMQP probe");
        let stdout = String::from_utf8_lossy(&output.stdout);
        serde_json::from_str(stdout.trim()).unwrap_or_else(|_| {
            panic!("probe said {stdout:?}, stderr {:?}", String::from_utf8_lossy(&output.stderr))
        })
    }
}

fn available() -> bool {
    if !Path::new(RABBITMQ_SERVER).exists() {
        skip(
            "RabbitMQ is not installed",
            "apt-get install rabbitmq-server (3.10 carries the HTTP auth backend)",
        );
        return false;
    }
    let pika = Command::new(PYTHON).args(["-c", "import pika"]).status().is_ok_and(|status| status.success());
    if !pika {
        skip("pika (the Python AMQP client) is not installed", "apt-get install python3-pika");
        return false;
    }
    true
}

/// Makes a token for root over REST: its secret.
fn token(server: &TestServer, name: &str, extra: Value) -> (u64, String) {
    let mut body = json!({"name": name});
    body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    let auth = basic("iggy", "iggy");
    let made = request(
        server.http_address.unwrap(),
        "POST",
        "/v1/tokens",
        &[("Authorization", &auth)],
        body.to_string().as_bytes(),
    );
    assert_eq!(made.status, 201, "{}", made.text());
    (made.json()["id"].as_u64().unwrap(), made.json()["token"].as_str().unwrap().to_owned())
}

fn ok(answer: &Value) -> bool {
    answer["ok"] == true
}

fn refused(answer: &Value, kind: &str) -> bool {
    answer["ok"] == false && answer["error"] == kind
}

#[test]
fn tokens_scopes_decide_what_an_amqp_client_may_do() {
    if !available() {
        return;
    }
    let home = DataHome::new();
    let server =
        TestServer::start(&home, &ServerSpec::default_root().env("LATCHKEY_LOG", "info,audit=debug"));
    let rabbit = Rabbit::start(server.http_address.unwrap());

    // A full-access token sets the broker up: exchanges and queues.
    let (_, admin) = token(&server, "admin", json!({}));
    let setup = rabbit.amqp("iggy/admin", &admin, &["setup"]);
    assert!(ok(&setup), "{setup}");

    // A publisher may write to orders, nothing else.
    let (_, publisher) =
        token(&server, "publisher", json!({"scopes": ["vhost:*:access", "exchange:orders:write"]}));
    let to_orders = rabbit.amqp("iggy/publisher", &publisher, &["publish", "orders"]);
    assert!(ok(&to_orders), "{to_orders}");
    let to_billing = rabbit.amqp("iggy/publisher", &publisher, &["publish", "billing"]);
    assert!(refused(&to_billing, "access"), "{to_billing}");

    // A consumer may read orders-in only.
    let (_, consumer) =
        token(&server, "consumer", json!({"scopes": ["vhost:*:access", "queue:orders-in:read"]}));
    let got = rabbit.amqp("iggy/consumer", &consumer, &["get", "orders-in"]);
    assert!(ok(&got), "{got}");
    assert_eq!(got["body"], "hello", "the message the publisher sent");
    let other = rabbit.amqp("iggy/consumer", &consumer, &["get", "billing-in"]);
    assert!(refused(&other, "access"), "{other}");

    // A token without the vhost scope cannot even open the vhost.
    let (_, no_vhost) = token(&server, "no-vhost", json!({"scopes": ["exchange:orders:write"]}));
    assert!(!ok(&rabbit.amqp("iggy/no-vhost", &no_vhost, &["connect"])));

    // The username must name the token the password is.
    assert!(refused(&rabbit.amqp("iggy/consumer", &publisher, &["connect"]), "auth"));
    assert!(refused(&rabbit.amqp("iggy", &publisher, &["connect"]), "auth"));
    assert!(refused(&rabbit.amqp("iggy/publisher", "not-a-token", &["connect"]), "auth"));

    // Revoked: refused at the next connection.
    let auth = basic("iggy", "iggy");
    let revoke = request(
        server.http_address.unwrap(),
        "POST",
        &format!("/v1/tokens/{}/revoke", token_id(&server, "publisher")),
        &[("Authorization", &auth)],
        b"",
    );
    assert_eq!(revoke.status, 204);
    assert!(refused(&rabbit.amqp("iggy/publisher", &publisher, &["connect"]), "auth"));

    // Outside its networks: the vhost question carries the client's address.
    let (_, elsewhere) = token(&server, "elsewhere", json!({"networks": ["192.0.2.0/24"]}));
    assert!(!ok(&rabbit.amqp("iggy/elsewhere", &elsewhere, &["connect"])));
    let (_, here) = token(&server, "here", json!({"networks": ["127.0.0.0/8"]}));
    assert!(ok(&rabbit.amqp("iggy/here", &here, &["connect"])));

    // Every question was an audit event on the broker door; no secret logged.
    let logs = server.logs();
    assert!(logs.contains("via=\"broker\""), "no broker audit events");
    for secret in [&admin, &publisher, &consumer, &elsewhere] {
        assert!(!logs.contains(secret.as_str()), "a token reached the log");
    }
}

fn token_id(server: &TestServer, name: &str) -> u64 {
    let auth = basic("iggy", "iggy");
    let listed =
        request(server.http_address.unwrap(), "GET", "/v1/tokens", &[("Authorization", &auth)], b"").json();
    listed["tokens"].as_array().unwrap().iter().find(|token| token["name"] == name).unwrap()["id"]
        .as_u64()
        .unwrap()
}

#[test]
fn wrong_passwords_are_throttled() {
    if !available() {
        return;
    }
    let home = DataHome::new();
    let spec = ServerSpec::default_root()
        .env("LATCHKEY_LOG", "info,audit=debug")
        .env("LATCHKEY_LOGIN_THROTTLE_ENABLED", "true")
        .env("LATCHKEY_LOGIN_THROTTLE_PER_ADDRESS_BURST", "3")
        .env("LATCHKEY_LOGIN_THROTTLE_PER_ADDRESS_PER_MINUTE", "1");
    let server = TestServer::start(&home, &spec);
    let rabbit = Rabbit::start(server.http_address.unwrap());
    for _ in 0..6 {
        let answer = rabbit.amqp("iggy/nothing", "lk_wrong", &["connect"]);
        assert!(refused(&answer, "auth"), "{answer}");
    }
    let logs = server.logs();
    let looked_up = logs.matches("decision=\"unknown\" via=\"broker\"").count();
    let throttled = logs.matches("event=\"authorize_throttled\" via=\"broker\"").count();
    assert_eq!((looked_up, throttled), (3, 3), "{logs}");
}
