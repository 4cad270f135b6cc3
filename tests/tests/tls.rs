//! TLS on the listener (spec §0.3), end to end: a self-signed certificate
//! generated here, the real binary with `[tcp.tls]` on, and a rustls client
//! that trusts only that certificate.
//!
//! Both framings run their whole token lifecycle inside TLS; a plaintext
//! client, a client that never finishes its handshake and a bad certificate
//! or key each get the behaviour README.md promises.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use common::*;
use latchkey_protocol::body::{
    CreatePersonalAccessToken, DeletePersonalAccessToken, Empty, IdentityInfo, LoginUser,
    LoginWithPersonalAccessToken, PersonalAccessTokens, RawPersonalAccessToken, WireDecode, WireEncode,
};
use latchkey_protocol::codec::{LegacyReplyCodec, encode_request};
use latchkey_protocol::vsr::{self, ReplyCodec, ReplyFrame, operation};
use latchkey_protocol::{Secret, codes};
use latchkey_sdk::{Client, ClientConfig, Credentials, Expiry, TlsConfig};
use latchkey_tests::{DataHome, ServerSpec, TestServer};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_util::codec::Decoder;

/// A certificate and key written to a test's temporary directory.
struct Pki {
    cert_file: PathBuf,
    key_file: PathBuf,
    cert: CertificateDer<'static>,
}

impl Pki {
    /// A self-signed certificate for `localhost` and 127.0.0.1.
    fn new(home: &DataHome) -> Pki {
        let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
        let certified = rcgen::generate_simple_self_signed(names).expect("generate certificate");
        let cert_file = home.dir.path().join("cert.pem");
        let key_file = home.dir.path().join("key.pem");
        std::fs::write(&cert_file, certified.cert.pem()).expect("write cert");
        std::fs::write(&key_file, certified.signing_key.serialize_pem()).expect("write key");
        Pki { cert_file, key_file, cert: certified.cert.der().clone() }
    }

    /// Root iggy/iggy and TLS on, through the environment.
    fn spec(&self) -> ServerSpec {
        ServerSpec::default_root()
            .env("LATCHKEY_TCP_TLS_ENABLED", "true")
            .env("LATCHKEY_TCP_TLS_CERT_FILE", &self.cert_file.to_string_lossy())
            .env("LATCHKEY_TCP_TLS_KEY_FILE", &self.key_file.to_string_lossy())
    }

    /// A client that trusts this certificate only.
    fn connector(&self) -> TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.cert.clone()).expect("trust the certificate");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        TlsConnector::from(Arc::new(config))
    }

    async fn connect(&self, address: SocketAddr) -> TlsStream<TcpStream> {
        let tcp = TcpStream::connect(address).await.expect("connect");
        tcp.set_nodelay(true).expect("nodelay");
        let name = ServerName::try_from("localhost").expect("server name");
        tokio::time::timeout(HANG_GUARD, self.connector().connect(name, tcp))
            .await
            .expect("handshake hung (hang guard)")
            .expect("TLS handshake")
    }
}

/// A legacy-framing client over TLS, with the protocol crate's `LegacyReplyCodec`.
struct Legacy {
    stream: TlsStream<TcpStream>,
    codec: LegacyReplyCodec,
    input: BytesMut,
}

impl Legacy {
    async fn connect(pki: &Pki, address: SocketAddr) -> Legacy {
        Legacy {
            stream: pki.connect(address).await,
            codec: LegacyReplyCodec::default(),
            input: BytesMut::new(),
        }
    }

    /// One request, one reply: `(status, payload)`.
    async fn call(&mut self, code: u32, body: &dyn WireEncode) -> (u32, Bytes) {
        let mut frame = BytesMut::new();
        encode_request(code, body, &mut frame);
        let exchange = async {
            self.stream.write_all(&frame).await?;
            self.stream.flush().await?;
            loop {
                let decoded = self.codec.decode(&mut self.input).map_err(std::io::Error::other)?;
                if let Some(reply) = decoded {
                    return Ok::<_, std::io::Error>((reply.status, reply.payload));
                }
                if self.stream.read_buf(&mut self.input).await? == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
            }
        };
        tokio::time::timeout(HANG_GUARD, exchange).await.expect("no reply (hang guard)").expect("exchange")
    }

    async fn ok<T: WireDecode>(&mut self, code: u32, body: &dyn WireEncode) -> T {
        let (status, payload) = self.call(code, body).await;
        assert_eq!(status, 0, "code {code}");
        T::decode(&payload).expect("reply body").0
    }
}

fn password_login() -> LoginUser {
    LoginUser {
        username: "iggy".into(),
        password: Secret::from("iggy".to_owned()),
        version: Some("0.10.0".into()),
        context: None,
    }
}

fn token_login(token: &str) -> LoginWithPersonalAccessToken {
    LoginWithPersonalAccessToken { token: Secret::from(token.to_owned()) }
}

fn names(tokens: &PersonalAccessTokens) -> Vec<&str> {
    tokens.0.iter().map(|entry| entry.name.as_str()).collect()
}

#[tokio::test]
async fn the_legacy_framing_runs_the_token_lifecycle_inside_tls() {
    let home = DataHome::new();
    let pki = Pki::new(&home);
    let server = TestServer::start(&home, &pki.spec());
    let mut root = Legacy::connect(&pki, server.address).await;
    assert_eq!(root.call(codes::PING, &Empty).await, (0, Bytes::new()));
    let identity: IdentityInfo = root.ok(codes::LOGIN_USER, &password_login()).await;
    assert_eq!(identity.user_id, 0);
    let create = CreatePersonalAccessToken { name: "tls-legacy".into(), expiry_us: u64::MAX };
    let raw: RawPersonalAccessToken = root.ok(codes::CREATE_PERSONAL_ACCESS_TOKEN, &create).await;
    assert_token_shape(&raw.token);

    let mut holder = Legacy::connect(&pki, server.address).await;
    let identity: IdentityInfo =
        holder.ok(codes::LOGIN_WITH_PERSONAL_ACCESS_TOKEN, &token_login(&raw.token)).await;
    assert_eq!(identity.user_id, 0);
    let listed: PersonalAccessTokens = holder.ok(codes::GET_PERSONAL_ACCESS_TOKENS, &Empty).await;
    assert_eq!(names(&listed), ["tls-legacy"]);
    let delete = DeletePersonalAccessToken { name: "tls-legacy".into() };
    let _: Empty = holder.ok(codes::DELETE_PERSONAL_ACCESS_TOKEN, &delete).await;
    let listed: PersonalAccessTokens = root.ok(codes::GET_PERSONAL_ACCESS_TOKENS, &Empty).await;
    assert!(listed.0.is_empty(), "{listed:?}");

    let mut late = Legacy::connect(&pki, server.address).await;
    let (status, _) = late.call(codes::LOGIN_WITH_PERSONAL_ACCESS_TOKEN, &token_login(&raw.token)).await;
    assert_eq!(status, 20, "a deleted token is not found");
    assert!(server.logs().contains("tls=true"), "{}", server.logs());
}

/// A 0.11-framing client over TLS, with the protocol crate's `vsr::ReplyCodec`.
struct Vsr {
    stream: TlsStream<TcpStream>,
    codec: ReplyCodec,
    input: BytesMut,
    client: u128,
    /// From the last Register reply; 0 before login.
    session: u64,
    /// The last request number sent.
    request: u64,
}

impl Vsr {
    async fn connect(pki: &Pki, address: SocketAddr, client: u128) -> Vsr {
        Vsr {
            stream: pki.connect(address).await,
            codec: ReplyCodec::default(),
            input: BytesMut::new(),
            client,
            session: 0,
            request: 0,
        }
    }

    /// One request, one reply or eviction. Register goes out with session
    /// and request 0, everything else numbered from 1 (spec §2.4).
    async fn call(&mut self, operation: u8, code: u32, body: &dyn WireEncode) -> ReplyFrame {
        let (session, request) = if operation == operation::REGISTER {
            (0, 0)
        } else {
            self.request += 1;
            (self.session, self.request)
        };
        let header = vsr::RequestHeader {
            client: self.client,
            operation,
            code,
            session,
            request,
            ..Default::default()
        };
        let mut frame = BytesMut::new();
        vsr::encode_request(&header, body, &mut frame);
        let exchange = async {
            self.stream.write_all(&frame).await?;
            self.stream.flush().await?;
            loop {
                match self.codec.decode(&mut self.input) {
                    Ok(Some(frame)) => return Ok::<_, std::io::Error>(frame),
                    Ok(None) => {}
                    Err(error) => return Err(std::io::Error::other(error.to_string())),
                }
                if self.stream.read_buf(&mut self.input).await? == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
            }
        };
        tokio::time::timeout(HANG_GUARD, exchange).await.expect("no reply (hang guard)").expect("exchange")
    }

    /// A reply with status 0; its body.
    async fn ok(&mut self, operation: u8, code: u32, body: &dyn WireEncode) -> Bytes {
        match self.call(operation, code, body).await {
            ReplyFrame::Reply { header, body } => {
                assert_eq!(header.status, 0, "operation {operation} code {code}");
                body
            }
            eviction => panic!("operation {operation}: {eviction:?}"),
        }
    }

    /// A result-framed success (Register, 146, 147): the payload after it.
    async fn accepted(&mut self, operation: u8, body: &dyn WireEncode) -> Bytes {
        let reply = self.ok(operation, 0, body).await;
        let payload = vsr::decode_result(&reply).expect("result section").expect("accepted");
        reply.slice_ref(payload)
    }

    async fn register(&mut self, login: &dyn WireEncode) -> vsr::LoginRegisterResponse {
        let payload = self.accepted(operation::REGISTER, login).await;
        let (response, _) = vsr::LoginRegisterResponse::decode(&payload).expect("login reply");
        self.session = response.session;
        response
    }
}

fn client_version() -> vsr::ClientVersionInfo {
    vsr::ClientVersionInfo {
        protocol_version: vsr::PROTOCOL_VERSION,
        sdk_name: "latchkey-tests".into(),
        sdk_version: "0".into(),
    }
}

#[tokio::test]
async fn the_0_11_framing_runs_the_token_lifecycle_inside_tls() {
    let home = DataHome::new();
    let pki = Pki::new(&home);
    // TLS from the config file this time (the other tests use the environment).
    let config = format!(
        "[tcp.tls]\nenabled = true\ncert_file = {:?}\nkey_file = {:?}\n",
        pki.cert_file.to_string_lossy(),
        pki.key_file.to_string_lossy()
    );
    let server = TestServer::start(&home, &ServerSpec::default_root().config(&config));
    let mut root = Vsr::connect(&pki, server.address, 1).await;
    assert!(root.ok(operation::NON_REPLICATED, codes::PING, &Empty).await.is_empty());
    let password = vsr::LoginRegister {
        client_version: client_version(),
        username: "iggy".into(),
        password: Secret::from("iggy".to_owned()),
        context: None,
    };
    let response = root.register(&password).await;
    assert_eq!(response.user_id, 0);
    assert!(response.session >= 1);
    let create = CreatePersonalAccessToken { name: "tls-vsr".into(), expiry_us: u64::MAX };
    let payload = root.accepted(operation::CREATE_PERSONAL_ACCESS_TOKEN, &create).await;
    let (raw, _) = RawPersonalAccessToken::decode(&payload).expect("token");
    assert_token_shape(&raw.token);

    let mut holder = Vsr::connect(&pki, server.address, 2).await;
    let pat = vsr::LoginRegisterWithPat {
        client_version: client_version(),
        token: raw.token.clone(),
        context: None,
    };
    assert_eq!(holder.register(&pat).await.user_id, 0);
    let listed = holder.ok(operation::NON_REPLICATED, codes::GET_PERSONAL_ACCESS_TOKENS, &Empty).await;
    let (listed, _) = PersonalAccessTokens::decode(&listed).expect("list");
    assert_eq!(names(&listed), ["tls-vsr"]);
    let delete = DeletePersonalAccessToken { name: "tls-vsr".into() };
    holder.accepted(operation::DELETE_PERSONAL_ACCESS_TOKEN, &delete).await;
    let listed = root.ok(operation::NON_REPLICATED, codes::GET_PERSONAL_ACCESS_TOKENS, &Empty).await;
    assert!(listed.is_empty());

    let mut late = Vsr::connect(&pki, server.address, 3).await;
    match late.call(operation::REGISTER, 0, &pat).await {
        ReplyFrame::Eviction(eviction) => assert_eq!(eviction.reason, vsr::EvictionReason::InvalidToken),
        reply => panic!("a deleted token still logs in: {reply:?}"),
    }
}

#[tokio::test]
async fn the_latchkey_sdk_connects_over_tls_with_a_ca_file_and_a_domain() {
    let home = DataHome::new();
    let pki = Pki::new(&home);
    let server = TestServer::start(&home, &pki.spec());
    let tls = TlsConfig { ca_file: pki.cert_file.clone(), domain: "localhost".into() };
    let config = |login: Credentials| {
        let mut config = ClientConfig::new(server.address.to_string());
        config.tls = Some(tls.clone());
        config.login = Some(login);
        config
    };
    let password = Credentials::UsernamePassword { username: "iggy".into(), password: "iggy".into() };
    let mut root = Client::connect_with(config(password)).await.expect("password login over TLS");
    let token = root.create_personal_access_token("tls-sdk", Expiry::Never).await.expect("create");
    let mut holder = Client::connect_with(config(Credentials::PersonalAccessToken(token.clone())))
        .await
        .expect("token login");
    let listed = holder.get_personal_access_tokens().await.expect("list");
    assert_eq!(listed.iter().map(|entry| entry.name.as_str()).collect::<Vec<_>>(), ["tls-sdk"]);
    holder.delete_personal_access_token("tls-sdk").await.expect("delete");
    assert!(root.get_personal_access_tokens().await.expect("list").is_empty());

    // The certificate names localhost and 127.0.0.1, not this name: refused.
    let mut wrong = ClientConfig::new(server.address.to_string());
    wrong.tls = Some(TlsConfig { domain: "example.com".into(), ..tls.clone() });
    let error = Client::connect_with(wrong).await.expect_err("a certificate for another name was accepted");
    assert!(
        matches!(&error, latchkey_sdk::Error::Io(io) if io.to_string().contains("not valid for name \"example.com\"")),
        "{error:?}"
    );
    // And a plaintext SDK client gets no reply, only a closed connection.
    let mut plain = Client::connect(server.address).await.expect("TCP connect");
    let refused = plain.ping().await.expect_err("a plaintext ping was answered");
    assert!(matches!(refused, latchkey_sdk::Error::ConnectionClosed), "{refused:?}");
}

/// What a TLS server may send a plaintext client before closing: nothing,
/// or TLS alert records (content type 21), never a protocol reply.
fn assert_no_reply(received: &[u8]) {
    assert!(received.is_empty() || received[0] == 21, "a plaintext client got a reply: {received:?}");
}

#[tokio::test]
async fn a_plaintext_client_is_closed_without_a_reply_and_the_server_serves_on() {
    let home = DataHome::new();
    let pki = Pki::new(&home);
    let server = TestServer::start(&home, &pki.spec().env("LATCHKEY_LOG", "info,latchkey_server=debug"));
    // A legacy Ping, and the start of a 0.11 header (its first word is 0).
    for first_bytes in [frame(PING, &[]), vec![0u8; 256]] {
        let mut plain = Raw::connect(server.address).await;
        plain.write(&first_bytes).await;
        assert_no_reply(&plain.read_until_closed().await);
    }
    wait_for_logs(&server, |logs| logs.matches("TLS handshake failed").count() == 2);
    let mut client = Legacy::connect(&pki, server.address).await;
    assert_eq!(client.call(codes::PING, &Empty).await.0, 0);
    let _: IdentityInfo = client.ok(codes::LOGIN_USER, &password_login()).await;
}

#[tokio::test]
async fn a_client_that_never_finishes_its_handshake_is_dropped_at_the_login_timeout() {
    let home = DataHome::new();
    let pki = Pki::new(&home);
    let spec =
        pki.spec().env("LATCHKEY_TCP_LOGIN_TIMEOUT", "1 s").env("LATCHKEY_LOG", "info,latchkey_server=debug");
    let server = TestServer::start(&home, &spec);
    // Silent after connect; and silent after the first 5 bytes of a
    // handshake record (the header of a ClientHello that never comes).
    // Each close is the login timeout's: the server names it as the reason
    // for that very connection (a close for any other cause, early or late,
    // names another).
    for first_bytes in [&[][..], &[22, 3, 1, 2, 0][..]] {
        let mut stalled = Raw::connect(server.address).await;
        let peer = format!("peer={}", stalled.stream.local_addr().unwrap());
        plain_write(&mut stalled, first_bytes).await;
        assert_no_reply(&stalled.read_until_closed().await);
        wait_for_logs(&server, |logs| {
            logs.lines().any(|line| {
                line.contains(&peer)
                    && line.contains("connection closed")
                    && line.contains("login timeout during the TLS handshake")
            })
        });
    }
    // A client that does handshake, but then does not log in, meets the same timeout.
    let mut idle = Legacy::connect(&pki, server.address).await;
    assert_eq!(idle.call(codes::PING, &Empty).await.0, 0);
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(HANG_GUARD, idle.stream.read(&mut byte)).await.expect("still open");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    let peer = format!("peer={}", idle.stream.get_ref().0.local_addr().unwrap());
    wait_for_logs(&server, |logs| {
        logs.lines().any(|line| line.contains(&peer) && line.contains("reason=login timeout"))
    });
}

async fn plain_write(raw: &mut Raw, bytes: &[u8]) {
    if !bytes.is_empty() {
        raw.write(bytes).await;
    }
}

#[tokio::test]
async fn a_pending_handshake_holds_its_connection_slot() {
    let home = DataHome::new();
    let pki = Pki::new(&home);
    let spec =
        pki.spec().env("LATCHKEY_TCP_MAX_CONNECTIONS_PER_IP", "1").env("LATCHKEY_TCP_LOGIN_TIMEOUT", "3 s");
    let server = TestServer::start(&home, &spec);
    let mut stalled = Raw::connect(server.address).await;
    // The only slot is taken by a connection that has not handshaken: a
    // second one is closed at accept, so its handshake fails.
    let tcp = TcpStream::connect(server.address).await.expect("connect");
    let name = ServerName::try_from("localhost").unwrap();
    let refused =
        tokio::time::timeout(HANG_GUARD, pki.connector().connect(name, tcp)).await.expect("hang guard");
    assert!(refused.is_err(), "a second connection got through the limit");
    // Once the stalled one is dropped at the login timeout, the slot is free.
    stalled.read_until_closed().await;
    let deadline = Instant::now() + HANG_GUARD;
    loop {
        let tcp = TcpStream::connect(server.address).await.expect("connect");
        let name = ServerName::try_from("localhost").unwrap();
        if let Ok(mut stream) = pki.connector().connect(name, tcp).await {
            stream.write_all(&frame(PING, &[])).await.unwrap();
            stream.flush().await.unwrap();
            let mut reply = [0u8; 8];
            stream.read_exact(&mut reply).await.unwrap();
            assert_eq!(reply, [0; 8]);
            break;
        }
        // The server counts the connection out just after closing it.
        assert!(Instant::now() < deadline, "the slot was never released");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn start_up_fails_cleanly_for_a_missing_certificate_or_a_key_that_does_not_fit() {
    let home = DataHome::new();
    let pki = Pki::new(&home);
    let absent = home.dir.path().join("absent.pem");
    let spec = pki.spec().env("LATCHKEY_TCP_TLS_CERT_FILE", &absent.to_string_lossy());
    let exited = TestServer::try_start(&home, &spec).err().expect("started without its certificate");
    assert!(!exited.status.success());
    assert!(exited.stderr.contains(&*absent.to_string_lossy()), "{}", exited.stderr);
    assert!(!home.data_dir().exists(), "the data directory was created before TLS was checked");

    let other = DataHome::new();
    let other_pki = Pki::new(&other);
    let spec = pki.spec().env("LATCHKEY_TCP_TLS_KEY_FILE", &other_pki.key_file.to_string_lossy());
    let exited =
        TestServer::try_start(&home, &spec).err().expect("started with a key that is not the certificate's");
    assert!(!exited.status.success());
    assert!(exited.stderr.contains("does not fit"), "{}", exited.stderr);
    assert!(exited.stderr.contains(&*other_pki.key_file.to_string_lossy()), "{}", exited.stderr);
    assert!(exited.stderr.contains(&*pki.cert_file.to_string_lossy()), "{}", exited.stderr);

    let spec = ServerSpec::default_root().env("LATCHKEY_TCP_TLS_ENABLED", "true");
    let exited = TestServer::try_start(&home, &spec).err().expect("started with TLS and no files");
    assert_eq!(exited.status.code(), Some(2));
    assert!(exited.stderr.contains("tcp.tls.cert_file"), "{}", exited.stderr);
}
