//! The load generator: N connections on one current-thread runtime, each
//! sending precomputed request frames or HTTP requests (a burst of `depth`
//! per write) and parsing replies in place. Nothing is allocated per request, so the
//! client's own CPU cost stays small next to the server's on a shared
//! 2-core machine; that cost is measured and reported with every figure.

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use hdrhistogram::Histogram;
use latchkey_protocol::Secret;
use latchkey_protocol::body::{
    Command, CreatePersonalAccessToken, DeletePersonalAccessToken, GetPersonalAccessTokens, LoginUser,
    LoginWithPersonalAccessToken, Ping, RawPersonalAccessToken, WireDecode,
};
use latchkey_protocol::body::{Empty, WireEncode};
use latchkey_protocol::codec::encode_request;
use latchkey_protocol::vsr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_util::either::Either;

use crate::sys;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// LoginWithPersonalAccessToken, repeated on open connections.
    Login,
    /// Connect, log in with a token, close; repeated.
    LoginNewconn,
    /// GetPersonalAccessTokens of a user holding 10 tokens.
    List,
    /// Create a token, then delete it: two durable writes.
    Churn,
    /// Ping.
    Ping,
    /// Latchkey's Authorize (9110) of the login token for a resource scope
    /// and client address, on connections logged in as the bench user (who
    /// needs the `authorize` permission; root has it). Legacy framing only.
    Authorize,
    /// HTTP forward auth: `GET /v1/auth/check` with a bearer token on
    /// kept-alive HTTP/1.1 connections (`--http-addr`); anything but a 200
    /// is an error.
    ForwardAuth,
    /// RabbitMQ's HTTP auth backend, `POST /v1/rabbitmq/user` (the login
    /// question: the token as password, hashed on every call).
    RabbitmqUser,
    /// `POST /v1/rabbitmq/vhost` (scope and network checks by username).
    RabbitmqVhost,
    /// `POST /v1/rabbitmq/resource` (exchange write).
    RabbitmqResource,
    /// `POST /v1/rabbitmq/topic`.
    RabbitmqTopic,
}

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Login => "login",
            Scenario::LoginNewconn => "login-newconn",
            Scenario::List => "list",
            Scenario::Churn => "churn",
            Scenario::Ping => "ping",
            Scenario::Authorize => "authorize",
            Scenario::ForwardAuth => "forward-auth",
            Scenario::RabbitmqUser => "rabbitmq-user",
            Scenario::RabbitmqVhost => "rabbitmq-vhost",
            Scenario::RabbitmqResource => "rabbitmq-resource",
            Scenario::RabbitmqTopic => "rabbitmq-topic",
        }
    }

    /// Whether it is measured on the HTTP side rather than the binary one.
    pub fn is_http(self) -> bool {
        matches!(
            self,
            Scenario::ForwardAuth
                | Scenario::RabbitmqUser
                | Scenario::RabbitmqVhost
                | Scenario::RabbitmqResource
                | Scenario::RabbitmqTopic
        )
    }
}

/// Which Iggy framing the load speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Framing {
    /// `[length][code][payload]` (iggy ≤ 0.10).
    Legacy,
    /// 256-byte headers (iggy 0.11), logins as Register.
    #[value(name = "0.11")]
    Vsr,
}

impl Target {
    pub(crate) fn endpoint(&self) -> Endpoint {
        self.endpoint_for(0)
    }

    /// Where connection `connection` goes: round-robin over `address` and
    /// `spread`.
    pub(crate) fn endpoint_for(&self, connection: usize) -> Endpoint {
        let index = connection % (1 + self.spread.len());
        let address = if index == 0 { self.address } else { self.spread[index - 1] };
        Endpoint { address, bind: self.bind, tls: self.tls.clone() }
    }
}

/// Credentials and setup shared by every connection.
#[derive(Debug, Clone)]
pub struct Target {
    pub address: SocketAddr,
    /// Further nodes serving the same registry (cluster mode): connections
    /// go round-robin over `address` and these. Setup is done on `address`.
    pub spread: Vec<SocketAddr>,
    pub user: String,
    pub password: String,
    /// Server process to sample CPU time from, if known.
    pub server_pid: Option<u32>,
    /// Local address to connect from.
    pub bind: Option<std::net::IpAddr>,
    pub framing: Framing,
    /// Connect over TLS (`--tls-ca`): every connection handshakes first.
    pub tls: Option<Tls>,
    /// Churn only: each connection logs in with a password as a user of
    /// its own instead of with the setup user's token, so each churns its
    /// own user's tokens (in cluster mode: what id blocks are for).
    pub own_users: Option<OwnUsers>,
}

/// Users of their own for churn's connections: connection `n` is
/// `{prefix}{n}` with `password`; they must be in the server's config.
#[derive(Debug, Clone)]
pub struct OwnUsers {
    pub prefix: String,
    pub password: String,
}

/// A TLS client setup: the CA to trust and the name to ask for.
#[derive(Clone)]
pub struct Tls {
    connector: tokio_rustls::TlsConnector,
    domain: rustls::pki_types::ServerName<'static>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").field("domain", &self.domain).finish_non_exhaustive()
    }
}

impl Tls {
    /// Trusts the PEM certificates in `ca_file` (a self-signed server
    /// certificate itself will do) and asks for `domain`.
    pub fn new(ca_file: &std::path::Path, domain: &str) -> std::io::Result<Tls> {
        use rustls::pki_types::{CertificateDer, pem::PemObject};
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(ca_file).map_err(std::io::Error::other)? {
            roots.add(cert.map_err(std::io::Error::other)?).map_err(std::io::Error::other)?;
        }
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(std::io::Error::other)?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let domain =
            rustls::pki_types::ServerName::try_from(domain.to_owned()).map_err(std::io::Error::other)?;
        Ok(Tls { connector: tokio_rustls::TlsConnector::from(std::sync::Arc::new(config)), domain })
    }
}

/// Where and how connections go: address, source address, TLS.
#[derive(Debug, Clone)]
pub(crate) struct Endpoint {
    address: SocketAddr,
    bind: Option<std::net::IpAddr>,
    tls: Option<Tls>,
}

/// A connection: plain TCP, or TLS over it.
type Stream = Either<TcpStream, TlsStream<TcpStream>>;

/// Connects (from `bind` if given), sets TCP_NODELAY, and handshakes if TLS.
pub(crate) async fn connect(endpoint: &Endpoint) -> std::io::Result<Stream> {
    let stream = match endpoint.bind {
        None => TcpStream::connect(endpoint.address).await?,
        Some(ip) => {
            let address = endpoint.address;
            let socket = if address.is_ipv4() {
                tokio::net::TcpSocket::new_v4()?
            } else {
                tokio::net::TcpSocket::new_v6()?
            };
            socket.bind(SocketAddr::new(ip, 0))?;
            socket.connect(address).await?
        }
    };
    stream.set_nodelay(true)?;
    match &endpoint.tls {
        None => Ok(Either::Left(stream)),
        Some(tls) => Ok(Either::Right(tls.connector.connect(tls.domain.clone(), stream).await?)),
    }
}

/// One measured run.
#[derive(Debug, Clone)]
pub struct RunResult {
    pub ops: u64,
    pub errors: u64,
    pub elapsed: Duration,
    pub histogram: Histogram<u64>,
    /// CPU used over the measured window, in cores (1.0 = one core busy), by
    /// this process and by the server; `None` where the OS did not say (or,
    /// for the server, no pid was given).
    pub client_cpu: Option<f64>,
    pub server_cpu: Option<f64>,
    /// The part of `server_cpu` spent in user space: the server's own code
    /// and its runtime, without the kernel's share (sockets, wake-ups),
    /// which is much the same for servers answering the same requests over
    /// the same runtime. Small cuts show here first.
    pub server_user_cpu: Option<f64>,
}

impl RunResult {
    pub fn ops_per_sec(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64()
    }
    pub fn quantile_us(&self, quantile: f64) -> u64 {
        self.histogram.value_at_quantile(quantile)
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub warmup: Duration,
    pub duration: Duration,
}

/// Name of the tokens the setup creates; `bench-t0` is the login token.
const SETUP_TOKENS: usize = 10;

fn frame<C: Command>(command: &C) -> Vec<u8> {
    let mut out = BytesMut::new();
    encode_request(C::CODE, command, &mut out);
    out.to_vec()
}

/// Sends one request and waits for its reply; for setup only.
async fn call(stream: &mut Stream, request: &[u8]) -> std::io::Result<(u32, Vec<u8>)> {
    stream.write_all(request).await?;
    stream.flush().await?;
    let mut header = [0u8; 8];
    stream.read_exact(&mut header).await?;
    let status = u32::from_le_bytes(header[..4].try_into().unwrap());
    let length = u32::from_le_bytes(header[4..].try_into().unwrap()) as usize;
    let mut payload = vec![0u8; length];
    stream.read_exact(&mut payload).await?;
    Ok((status, payload))
}

fn setup_error(what: &str, status: u32) -> std::io::Error {
    std::io::Error::other(format!("setup: {what} failed with status {status}"))
}

/// Logs in with the password and (re)creates the setup tokens; returns the
/// login token. The user then holds at least 10 tokens for `list`.
pub async fn prepare(target: &Target) -> std::io::Result<String> {
    let mut stream = connect(&target.endpoint()).await?;
    let login = LoginUser {
        username: target.user.clone(),
        password: Secret::from(target.password.clone()),
        version: Some("latchkey-bench".into()),
        context: None,
    };
    let (status, _) = call(&mut stream, &frame(&login)).await?;
    if status != 0 {
        return Err(setup_error("password login", status));
    }
    let mut login_token = String::new();
    for index in 0..SETUP_TOKENS {
        let name = format!("bench-t{index}");
        // Absent (20) is fine; anything else is a real failure.
        let (status, _) =
            call(&mut stream, &frame(&DeletePersonalAccessToken { name: name.clone() })).await?;
        if status != 0 && status != 20 {
            return Err(setup_error("delete of a setup token", status));
        }
        let create = CreatePersonalAccessToken { name, expiry_us: u64::MAX };
        let (status, payload) = call(&mut stream, &frame(&create)).await?;
        if status != 0 {
            return Err(setup_error("create of a setup token", status));
        }
        let (token, _) = RawPersonalAccessToken::decode(&payload)
            .map_err(|_| std::io::Error::other("setup: create reply does not decode"))?;
        if index == 0 {
            login_token = token.token.expose().to_owned();
        }
    }
    for node in 1..=target.spread.len() {
        await_token(&target.endpoint_for(node), &login_token).await?;
    }
    Ok(login_token)
}

/// Longest the other nodes of a cluster may take to learn the setup's
/// login token (their watch delivers it, usually within milliseconds).
const SPREAD_WAIT: Duration = Duration::from_secs(10);

/// Waits until the node at `endpoint` accepts `token` (it was created on
/// another node of the cluster).
async fn await_token(endpoint: &Endpoint, token: &str) -> std::io::Result<()> {
    let login = frame(&LoginWithPersonalAccessToken { token: Secret::from(token.to_owned()) });
    let mut stream = connect(endpoint).await?;
    let deadline = Instant::now() + SPREAD_WAIT;
    loop {
        let (status, _) = call(&mut stream, &login).await?;
        if status == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(setup_error("token login on another node", status));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The frames one connection sends per burst.
fn burst(scenario: Scenario, user: &str, token: &str, connection: usize, depth: usize) -> Vec<u8> {
    let login = frame(&LoginWithPersonalAccessToken { token: Secret::from(token.to_owned()) });
    let one: Vec<u8> = match scenario {
        Scenario::Ping => frame(&Ping),
        Scenario::Login | Scenario::LoginNewconn => login,
        Scenario::List => frame(&GetPersonalAccessTokens),
        Scenario::Authorize => frame(&latchkey_protocol::ext::Authorize {
            token: Secret::from(token.to_owned()),
            scope: "stream:bench:read".into(),
            address: "127.0.0.1:40000".into(),
        }),
        Scenario::ForwardAuth => crate::forward::check_request(token),
        Scenario::RabbitmqUser => crate::forward::rabbitmq_request("user", user, token),
        Scenario::RabbitmqVhost => crate::forward::rabbitmq_request("vhost", user, token),
        Scenario::RabbitmqResource => crate::forward::rabbitmq_request("resource", user, token),
        Scenario::RabbitmqTopic => crate::forward::rabbitmq_request("topic", user, token),
        Scenario::Churn => {
            let name = format!("bench-c{connection}");
            let mut pair = frame(&CreatePersonalAccessToken { name: name.clone(), expiry_us: u64::MAX });
            pair.extend_from_slice(&frame(&DeletePersonalAccessToken { name }));
            pair
        }
    };
    one.repeat(depth)
}

/// Requests per burst (churn sends create + delete per depth unit).
fn requests_per_burst(scenario: Scenario, depth: usize) -> usize {
    if scenario == Scenario::Churn { 2 * depth } else { depth }
}

struct Phase {
    measure_from: Instant,
    end: Instant,
}

#[derive(Default)]
struct ConnectionStats {
    ops: u64,
    errors: u64,
    histogram: Option<Histogram<u64>>,
}

pub(crate) fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds")
}

/// Runs one measured run of `scenario` with `connections` connections.
pub fn run(
    target: &Target,
    scenario: Scenario,
    connections: usize,
    depth: usize,
    timing: Timing,
    token: &str,
) -> std::io::Result<RunResult> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async {
        let start = Instant::now();
        let phase = Rc::new(Phase {
            measure_from: start + timing.warmup,
            end: start + timing.warmup + timing.duration,
        });
        let mut tasks = Vec::with_capacity(connections);
        for connection in 0..connections {
            let phase = Rc::clone(&phase);
            let bytes = burst(scenario, &target.user, token, connection, depth);
            let per_burst = requests_per_burst(scenario, depth);
            let endpoint = target.endpoint_for(connection);
            let framing = target.framing;
            let token = token.to_owned();
            let login = match (&target.own_users, scenario) {
                (Some(users), Scenario::Churn) => frame(&LoginUser {
                    username: format!("{}{connection}", users.prefix),
                    password: Secret::from(users.password.clone()),
                    version: Some("latchkey-bench".into()),
                    context: None,
                }),
                _ => frame(&LoginWithPersonalAccessToken { token: Secret::from(token.clone()) }),
            };
            tasks.push(tokio::task::spawn_local(async move {
                if scenario.is_http() {
                    forward_connection(&endpoint, &bytes, per_burst, &phase).await
                } else if framing == Framing::Vsr {
                    vsr_connection(&endpoint, scenario, &token, connection, depth, &phase).await
                } else if scenario == Scenario::LoginNewconn {
                    new_connections(&endpoint, &login, &phase).await
                } else {
                    let needs_login =
                        matches!(scenario, Scenario::List | Scenario::Churn | Scenario::Authorize);
                    let login = needs_login.then_some(&login[..]);
                    open_connection(&endpoint, login, &bytes, per_burst, &phase).await
                }
            }));
        }
        // CPU is sampled at the edges of the measured window.
        tokio::time::sleep_until(phase.measure_from.into()).await;
        let client_before = sys::own_cpu();
        let server_before = target.server_pid.and_then(sys::process_times);
        tokio::time::sleep_until(phase.end.into()).await;
        let client_cpu =
            sys::own_cpu().zip(client_before).map(|(after, before)| after.saturating_sub(before));
        let server_times = target.server_pid.and_then(sys::process_times).zip(server_before);
        let server_cpu = server_times.map(|(after, before)| after.total().saturating_sub(before.total()));
        let server_user_cpu = server_times.map(|(after, before)| after.user.saturating_sub(before.user));
        let mut total = RunResult {
            ops: 0,
            errors: 0,
            elapsed: timing.duration,
            histogram: new_histogram(),
            client_cpu: client_cpu.map(|cpu| cpu.as_secs_f64() / timing.duration.as_secs_f64()),
            server_cpu: server_cpu.map(|cpu| cpu.as_secs_f64() / timing.duration.as_secs_f64()),
            server_user_cpu: server_user_cpu.map(|cpu| cpu.as_secs_f64() / timing.duration.as_secs_f64()),
        };
        for task in tasks {
            let stats = task.await.map_err(std::io::Error::other)??;
            total.ops += stats.ops;
            total.errors += stats.errors;
            if let Some(histogram) = &stats.histogram {
                total.histogram.add(histogram).expect("same bounds");
            }
        }
        Ok(total)
    })
}

/// Keeps one connection busy: write a burst, read its replies, repeat.
async fn open_connection(
    endpoint: &Endpoint,
    login: Option<&[u8]>,
    burst: &[u8],
    per_burst: usize,
    phase: &Phase,
) -> std::io::Result<ConnectionStats> {
    let mut stream = connect(endpoint).await?;
    if let Some(login) = login {
        let (status, _) = call(&mut stream, login).await?;
        if status != 0 {
            return Err(setup_error("login", status));
        }
    }
    drive(&mut stream, burst, per_burst, phase, legacy_replies).await
}

/// Keeps one kept-alive HTTP connection busy with forward-auth checks.
async fn forward_connection(
    endpoint: &Endpoint,
    burst: &[u8],
    per_burst: usize,
    phase: &Phase,
) -> std::io::Result<ConnectionStats> {
    let mut stream = connect(endpoint).await?;
    drive(&mut stream, burst, per_burst, phase, crate::forward::replies).await
}

/// Parses complete legacy replies `[status u32][length u32][payload]` at the
/// start of `input`: `(replies, bytes, errors)`.
fn legacy_replies(input: &[u8]) -> (usize, usize, usize) {
    let (mut offset, mut replies, mut errors) = (0, 0, 0);
    while input.len() - offset >= 8 {
        let status = u32::from_le_bytes(input[offset..offset + 4].try_into().unwrap());
        let length = u32::from_le_bytes(input[offset + 4..offset + 8].try_into().unwrap()) as usize;
        if input.len() - offset < 8 + length {
            break;
        }
        offset += 8 + length;
        replies += 1;
        errors += usize::from(status != 0);
    }
    (replies, offset, errors)
}

/// Keeps one connection busy until the phase ends: write a burst, parse its
/// `per_burst` replies with `parse` as they arrive, record each one.
async fn drive(
    stream: &mut Stream,
    burst: &[u8],
    per_burst: usize,
    phase: &Phase,
    parse: fn(&[u8]) -> (usize, usize, usize),
) -> std::io::Result<ConnectionStats> {
    let mut stats = ConnectionStats { histogram: Some(new_histogram()), ..ConnectionStats::default() };
    let histogram = stats.histogram.as_mut().expect("set above");
    let mut input = vec![0u8; 256 * 1024];
    loop {
        let sent_at = Instant::now();
        if sent_at >= phase.end {
            return Ok(stats);
        }
        stream.write_all(burst).await?;
        stream.flush().await?;
        let (mut filled, mut replies) = (0usize, 0usize);
        while replies < per_burst {
            let read = stream.read(&mut input[filled..]).await?;
            if read == 0 {
                return Err(std::io::Error::other("server closed the connection"));
            }
            filled += read;
            let (parsed, used, errors) = parse(&input[..filled]);
            input.copy_within(used..filled, 0);
            filled -= used;
            replies += parsed;
            let done = Instant::now();
            if done >= phase.measure_from && done < phase.end {
                stats.ops += parsed as u64;
                stats.errors += errors as u64;
                for _ in 0..parsed {
                    let _ = histogram.record((done - sent_at).as_micros().max(1) as u64);
                }
            }
        }
    }
}

/// Connect, send one login, read its reply, close; repeat.
async fn new_connections(
    endpoint: &Endpoint,
    login: &[u8],
    phase: &Phase,
) -> std::io::Result<ConnectionStats> {
    let mut stats = ConnectionStats { histogram: Some(new_histogram()), ..ConnectionStats::default() };
    let histogram = stats.histogram.as_mut().expect("set above");
    loop {
        let started = Instant::now();
        if started >= phase.end {
            return Ok(stats);
        }
        let mut stream = connect(endpoint).await?;
        let (status, _) = call(&mut stream, login).await?;
        // Reset instead of FIN: a closing client would otherwise park one
        // ephemeral port in TIME_WAIT per iteration and run out of them.
        let tcp = match &stream {
            Either::Left(tcp) => tcp,
            Either::Right(tls) => tls.get_ref().0,
        };
        socket2::SockRef::from(tcp).set_linger(Some(Duration::ZERO))?;
        drop(stream);
        let done = Instant::now();
        if done >= phase.measure_from && done < phase.end {
            stats.ops += 1;
            if status != 0 {
                stats.errors += 1;
            }
            let _ = histogram.record((done - started).as_micros().max(1) as u64);
        }
    }
}

/// One 0.11 request frame (request_checksum stamped as the SDK does).
fn vsr_frame(client: u128, operation: u8, code: u32, session: u64, body: &dyn WireEncode) -> Vec<u8> {
    let request = if operation == vsr::operation::REGISTER { 0 } else { 1 };
    let header = vsr::RequestHeader { client, operation, code, session, request, ..Default::default() };
    let mut out = BytesMut::new();
    vsr::encode_request(&header, body, &mut out);
    out.to_vec()
}

/// Parses complete 0.11 replies at the start of `input`: `(replies, bytes,
/// errors)`. A reply is an error if its status is set, it is an eviction, or
/// it carries a result-section rejection.
fn vsr_replies(input: &[u8]) -> (usize, usize, usize) {
    let (mut offset, mut replies, mut errors) = (0, 0, 0);
    while input.len() - offset >= vsr::HEADER_BYTES {
        let header = &input[offset..offset + vsr::HEADER_BYTES];
        let size = u32::from_le_bytes(header[48..52].try_into().unwrap()) as usize;
        if size < vsr::HEADER_BYTES || input.len() - offset < size {
            break;
        }
        let status = u32::from_le_bytes(header[216..220].try_into().unwrap());
        let rejected = matches!(header[208], 146 | 147 | 1)
            && size >= vsr::HEADER_BYTES + 4
            && input[offset + vsr::HEADER_BYTES..offset + vsr::HEADER_BYTES + 4] != [0, 0, 0, 0];
        if status != 0 || header[60] != vsr::COMMAND_REPLY || rejected {
            errors += 1;
        }
        offset += size;
        replies += 1;
    }
    (replies, offset, errors)
}

/// The 0.11 twin of `open_connection`: Register with the token (session
/// from the reply), then bursts of the scenario's frames.
async fn vsr_connection(
    endpoint: &Endpoint,
    scenario: Scenario,
    token: &str,
    connection: usize,
    depth: usize,
    phase: &Phase,
) -> std::io::Result<ConnectionStats> {
    let client = 0x4c4b_0000_0000_0000_0000_0000_0000_0000u128 | (connection as u128 + 1);
    let version = vsr::ClientVersionInfo {
        protocol_version: vsr::PROTOCOL_VERSION,
        sdk_name: "latchkey-bench".into(),
        sdk_version: env!("CARGO_PKG_VERSION").into(),
    };
    let register = vsr_frame(
        client,
        vsr::operation::REGISTER,
        0,
        0,
        &vsr::LoginRegisterWithPat {
            client_version: version,
            token: Secret::from(token.to_owned()),
            context: None,
        },
    );
    let mut stream = connect(endpoint).await?;
    stream.write_all(&register).await?;
    stream.flush().await?;
    let mut header = [0u8; vsr::HEADER_BYTES];
    stream.read_exact(&mut header).await?;
    let size = u32::from_le_bytes(header[48..52].try_into().unwrap()) as usize;
    let mut body = vec![0u8; size.saturating_sub(vsr::HEADER_BYTES)];
    stream.read_exact(&mut body).await?;
    if header[60] != vsr::COMMAND_REPLY || body.len() < 16 {
        return Err(setup_error("0.11 token login", u32::from(header[255])));
    }
    let session = u64::from_le_bytes(body[8..16].try_into().unwrap());
    let nr = |code| vsr_frame(client, vsr::operation::NON_REPLICATED, code, session, &Empty);
    let one = match scenario {
        Scenario::Ping => nr(latchkey_protocol::codes::PING),
        Scenario::List => nr(latchkey_protocol::codes::GET_PERSONAL_ACCESS_TOKENS),
        Scenario::Login | Scenario::LoginNewconn => register,
        Scenario::Authorize => {
            return Err(std::io::Error::other("authorize is served in the legacy framing only"));
        }
        Scenario::ForwardAuth
        | Scenario::RabbitmqUser
        | Scenario::RabbitmqVhost
        | Scenario::RabbitmqResource
        | Scenario::RabbitmqTopic => {
            return Err(std::io::Error::other("the HTTP scenarios are HTTP, not a framing"));
        }
        Scenario::Churn => {
            let name = format!("bench-v{connection}");
            let create = CreatePersonalAccessToken { name: name.clone(), expiry_us: u64::MAX };
            let mut pair =
                vsr_frame(client, vsr::operation::CREATE_PERSONAL_ACCESS_TOKEN, 0, session, &create);
            let delete = DeletePersonalAccessToken { name };
            pair.extend(vsr_frame(client, vsr::operation::DELETE_PERSONAL_ACCESS_TOKEN, 0, session, &delete));
            pair
        }
    };
    let burst = one.repeat(depth);
    let per_burst = requests_per_burst(scenario, depth);
    drive(&mut stream, &burst, per_burst, phase, vsr_replies).await
}
