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
        Pki::write(home, &certified.cert, &certified.signing_key.serialize_pem())
    }

    /// A self-signed certificate for `localhost` and 127.0.0.1 signed by
    /// `key`, whose private key the server reads as `key_pem` (any of the
    /// PEM forms the server accepts).
    fn with_key(home: &DataHome, key: &rcgen::KeyPair, key_pem: &str) -> Pki {
        let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
        let cert = rcgen::CertificateParams::new(names).unwrap().self_signed(key).expect("sign certificate");
        Pki::write(home, &cert, key_pem)
    }

    fn write(home: &DataHome, cert: &rcgen::Certificate, key_pem: &str) -> Pki {
        let cert_file = home.dir.path().join("cert.pem");
        let key_file = home.dir.path().join("key.pem");
        std::fs::write(&cert_file, cert.pem()).expect("write cert");
        std::fs::write(&key_file, key_pem).expect("write key");
        Pki { cert_file, key_file, cert: cert.der().clone() }
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
        self.connector_for(rustls::DEFAULT_VERSIONS)
    }

    /// Same, speaking only the TLS `versions` given.
    fn connector_for(&self, versions: &[&'static rustls::SupportedProtocolVersion]) -> TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.cert.clone()).expect("trust the certificate");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
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
    let mut holder = Client::connect_with(config(Credentials::PersonalAccessToken(token.clone().into())))
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

/// Handshakes with `connector`, then pings and logs in as root in the legacy
/// framing; returns the TLS version the two ends agreed on.
async fn serve_one(connector: &TlsConnector, address: SocketAddr) -> rustls::ProtocolVersion {
    let tcp = TcpStream::connect(address).await.expect("connect");
    let name = ServerName::try_from("localhost").unwrap();
    let mut stream = tokio::time::timeout(HANG_GUARD, connector.connect(name, tcp))
        .await
        .expect("handshake hung (hang guard)")
        .expect("TLS handshake");
    let version = stream.get_ref().1.protocol_version().expect("a negotiated version");
    let mut burst = frame(PING, &[]);
    burst.extend_from_slice(&frame(LOGIN_USER, &login_body(b"iggy", b"iggy")));
    stream.write_all(&burst).await.unwrap();
    stream.flush().await.unwrap();
    let mut replies = [0u8; 8 + 12];
    tokio::time::timeout(HANG_GUARD, stream.read_exact(&mut replies)).await.expect("no reply").unwrap();
    assert_eq!(replies, [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0]);
    version
}

#[tokio::test]
async fn tls_1_2_clients_are_served_as_well_as_tls_1_3_ones() {
    let home = DataHome::new();
    let pki = Pki::new(&home);
    let server = TestServer::start(&home, &pki.spec());
    let tls12 = pki.connector_for(&[&rustls::version::TLS12]);
    assert_eq!(serve_one(&tls12, server.address).await, rustls::ProtocolVersion::TLSv1_2);
    assert_eq!(serve_one(&pki.connector(), server.address).await, rustls::ProtocolVersion::TLSv1_3);
}

/// A 2048-bit RSA key made for this test alone (`openssl genpkey -algorithm
/// RSA`), as PKCS#8 base64: ring cannot generate RSA keys, only use them. It
/// guards nothing.
const RSA_TEST_KEY_PKCS8: &str = "MIIEvgIBADANBgkqhkiG9w0BAQEFAASCBKgwggSkAgEAAoIBAQDO03f871WZit33Dbko3d8ukZqkNvqmpivT5RxmRxM7y/4ZBnioR7XcYW6Zyxj7rEArhNPdIwFtBu8gokSt1nbhI7cTdH8r08fdqC5sKTdk+c2uvUQ0jxdNhQZxRXd2U3CALENtrGRChRqjGTKs1iqVvEGV2xicIMi/vLetxWqnaX1WACREPeOCOvT+TFBBeKZLpbd6DC0kTnkIFHb/JcfPEf8X6begws4Bp7sDbcG/p7iG73zMwzX1Ugn4QQs2NAfem2OkI+znCiFCF3cTcZTbM6Bjoh0TYJVcnR7wmaXHrk4S3yDkTaxiOq3wwzVibHld1IRIamHai17wY+e6Xk/nAgMBAAECggEAWJ/n6fPaX7VQIKV6Qoc0M73DoHtIk3FgFWe28CKjnLtwMeQCfsVfqcP8Qx1yoqEwTBWaPUdbPI88l2TA/iaIgTevIsCIH80bdyEyZzmQGY4rMyW53LW1/As09AOayZK+gcW1zQCSY6iqfdn1y3bn/4qQJfkgxgIMU5C3ulf+OCaoAoozX6rh3vuqE1MtoMpsP+XjWZdeey2imWpuLJmOI5G9vF6k2CUmZdk/s0/pAPy3l6G3V/g5cAEoJhcP61vVjj+KrDRaN7ZGFpIvxYtxr15fC0jXurmms4SaER492uter++3VDIFRIHWSw9lopqx844QRHwwsfVwI/4Bodq6jQKBgQDrxOTb0zN5VesBqCYZdGBUq3Pa4hapKgad+W2ZbkaalHPnkTB71t/7KxEuOaZJ28jlJh2btKJb6U9F62RBuQIZHDJcNgooo/KWHgvYnFvIzYH8wP0EbZFVTTk8rmhIuxMPojPxZ1IpBHM/VIh45pUlMo3vJ5mvIQxFRRd1m9mXswKBgQDgkslbuR0t/ryO2K75Ajakkb13ZHz12rFUboUag+N1gjKMNcP3NyetI5gZZuNIbI7nr3qd2luSwyVRkJKxMOolG7Wuff6Bhx/um1uMrFa97hHrKZ84jGsFQFOev3+euCwIRk2P0VkMVXyxG5wvOzp9+i+ZITGlJ3F9OupObm0M/QKBgQCAGYKfTalyC5ScWdgZjHmqh11zV9QoJYVi39sEuj3yTyaKcwB8yMr5lPTIwNnw11HX71W2+/YbKjDANJ1MeFEDg6Z5I4NxgWKU3c5h6tKTz9UIl3LhrQaB6mtm5PwUSFCa9e5zA0hIsPpNNojP57ixdT5Y6pM97B7WpCuS4xLesQKBgB/MqTaTv84DhC+1/xDDf3lOKcX+NLObhACwpahbhJnfFclE07rt1HBv2dm+9/AJbzLfZj1z7gOaHm6uShdNFdqrUc6jiKZOu/bNiOkifiXm0CK8gg8/0uerdCvGcgvHiHSjf9gdjL5yXHW3syX8/QtZoePND3qTWz6gWQ1CFa8BAoGBALBh5XihqqOiSpKTDLUsppndFS5vjVRIUyfB+fiz5hRj0ixM2l1bEQGcHhtBWqqonkBX3p6zzuQXkEinlRLL1AS/bu+xEomYRfXorwI0e0vSBWb511lWZryuwcONuXTzew+SDsxWfn+f+6CGCBJT2YS55Mx0nhhVXDRSMgm5o+JZ";

/// One DER element at the start of `der`: (tag, contents, what follows).
fn der_element(der: &[u8]) -> (u8, &[u8], &[u8]) {
    let (tag, first) = (der[0], der[1]);
    let (length, header) = if first < 0x80 {
        (usize::from(first), 2)
    } else {
        let bytes = usize::from(first & 0x7f);
        (der[2..2 + bytes].iter().fold(0, |n, &b| n << 8 | usize::from(b)), 2 + bytes)
    };
    (tag, &der[header..header + length], &der[header + length..])
}

/// The algorithm-specific key inside a PKCS#8 PrivateKeyInfo (RFC 5208):
/// PKCS#1's RSAPrivateKey for RSA, SEC1's ECPrivateKey for EC.
fn key_inside_pkcs8(pkcs8: &[u8]) -> Vec<u8> {
    let (tag, info, _) = der_element(pkcs8);
    assert_eq!(tag, 0x30, "PrivateKeyInfo is a SEQUENCE");
    let (_, _version, rest) = der_element(info);
    let (_, _algorithm, rest) = der_element(rest);
    let (tag, key, _) = der_element(rest);
    assert_eq!(tag, 0x04, "privateKey is an OCTET STRING");
    key.to_vec()
}

/// `der` as a PEM block labelled `label`.
fn pem(label: &str, der: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut text = String::new();
    for chunk in der.chunks(3) {
        let bits = chunk.iter().enumerate().fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for index in 0..4 {
            let sextet = (bits >> (18 - 6 * index)) & 63;
            text.push(if index <= chunk.len() { char::from(ALPHABET[sextet as usize]) } else { '=' });
        }
    }
    let lines: Vec<&str> =
        text.as_bytes().chunks(64).map(|line| std::str::from_utf8(line).unwrap()).collect();
    format!("-----BEGIN {label}-----\n{}\n-----END {label}-----\n", lines.join("\n"))
}

/// Base64 back to bytes, for the key above.
fn unbase64(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let digits: Vec<u8> = text.bytes().filter(|&c| c != b'=').map(value).collect();
    let mut out = Vec::new();
    for chunk in digits.chunks(4) {
        let bits = chunk.iter().enumerate().fold(0u32, |n, (i, &d)| n | u32::from(d) << (18 - 6 * i));
        out.extend_from_slice(&bits.to_be_bytes()[1..chunk.len()]);
    }
    out
}

#[tokio::test]
async fn pkcs1_rsa_and_sec1_ec_keys_serve_tls() {
    let rsa_pkcs8 = unbase64(RSA_TEST_KEY_PKCS8);
    let rsa =
        rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&rsa_pkcs8.as_slice().into(), &rcgen::PKCS_RSA_SHA256)
            .expect("the RSA test key");
    let ec = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("an EC key");
    let cases = [
        ("RSA PRIVATE KEY", pem("RSA PRIVATE KEY", &key_inside_pkcs8(&rsa_pkcs8)), &rsa),
        ("EC PRIVATE KEY", pem("EC PRIVATE KEY", &key_inside_pkcs8(&ec.serialize_der())), &ec),
    ];
    for (label, key_pem, key) in cases {
        let home = DataHome::new();
        let pki = Pki::with_key(&home, key, &key_pem);
        let server = TestServer::start(&home, &pki.spec());
        assert_eq!(
            serve_one(&pki.connector(), server.address).await,
            rustls::ProtocolVersion::TLSv1_3,
            "{label}"
        );
        assert_eq!(
            serve_one(&pki.connector_for(&[&rustls::version::TLS12]), server.address).await,
            rustls::ProtocolVersion::TLSv1_2,
            "{label}"
        );
        assert!(server.logs().contains("tls=true"), "{label}: {}", server.logs());
    }
}

#[tokio::test]
async fn a_file_that_is_not_pem_or_cannot_be_read_stops_the_start_naming_it() {
    let home = DataHome::new();
    let pki = Pki::new(&home);
    // DER where PEM is expected: the certificate, then the key.
    let der_cert = home.dir.path().join("cert.der");
    std::fs::write(&der_cert, pki.cert.as_ref()).unwrap();
    let key_der = unbase64(
        &std::fs::read_to_string(&pki.key_file)
            .unwrap()
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect::<String>(),
    );
    let der_key = home.dir.path().join("key.der");
    std::fs::write(&der_key, key_der).unwrap();
    // A directory: read(2) fails on it even for root, whom file modes do not stop.
    let directory = home.dir.path().join("a-directory.pem");
    std::fs::create_dir(&directory).unwrap();
    let cases = [
        ("LATCHKEY_TCP_TLS_CERT_FILE", &der_cert, "holds no CERTIFICATE block"),
        ("LATCHKEY_TCP_TLS_KEY_FILE", &der_key, "holds no private key"),
        ("LATCHKEY_TCP_TLS_CERT_FILE", &directory, "cannot read TLS certificate file"),
        ("LATCHKEY_TCP_TLS_KEY_FILE", &directory, "cannot read TLS key file"),
    ];
    for (key, path, reason) in cases {
        let spec = pki.spec().env(key, &path.to_string_lossy());
        let exited =
            TestServer::try_start(&home, &spec).err().unwrap_or_else(|| panic!("{key}={path:?} started"));
        assert_eq!(exited.status.code(), Some(1), "{key}={path:?}: {}", exited.stderr);
        assert!(exited.stderr.contains(reason), "{key}={path:?}: {}", exited.stderr);
        assert!(exited.stderr.contains(&*path.to_string_lossy()), "{key}={path:?}: {}", exited.stderr);
        assert!(!exited.stdout.contains("listening on"), "{}", exited.stdout);
        assert!(!home.data_dir().exists(), "the data directory was created before TLS was checked");
    }
}

#[tokio::test]
async fn the_http_side_serves_https_with_its_own_tls_settings() {
    let home = DataHome::new();
    let pki = Pki::new(&home);
    let spec = ServerSpec::default_root()
        .env("LATCHKEY_HTTP_TLS_ENABLED", "true")
        .env("LATCHKEY_HTTP_TLS_CERT_FILE", &pki.cert_file.to_string_lossy())
        .env("LATCHKEY_HTTP_TLS_KEY_FILE", &pki.key_file.to_string_lossy());
    let server = TestServer::start(&home, &spec);
    let http = server.http_address.expect("HTTP address");
    // The binary port stays plain: [http.tls] is the HTTP side's alone.
    let mut client = Client::connect(server.address).await.unwrap();
    assert_eq!(client.login_user("iggy", "iggy").await.unwrap(), 0);
    let mut tls = pki.connect(http).await;
    let request = "GET /v1/me HTTP/1.1\r\nHost: localhost\r\nAuthorization: Basic aWdneTppZ2d5\r\nConnection: close\r\n\r\n";
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(HANG_GUARD, tls.read_to_end(&mut answer)).await.expect("hang guard").ok();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\"username\":\"iggy\""), "{answer}");
    // The web console's session cookie is Secure under TLS.
    let mut tls = pki.connect(http).await;
    let body = r#"{"username":"iggy","password":"iggy"}"#;
    let request = format!(
        "POST /v1/session HTTP/1.1\r\nHost: localhost\r\nOrigin: https://localhost\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(HANG_GUARD, tls.read_to_end(&mut answer)).await.expect("hang guard").ok();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
    let cookie =
        answer.lines().find(|line| line.starts_with("set-cookie:")).unwrap_or_else(|| panic!("{answer}"));
    assert!(cookie.ends_with("; Secure") && cookie.contains("HttpOnly; SameSite=Strict"), "{cookie}");
    // Plain HTTP on the HTTPS port gets no answer.
    let mut plain = TcpStream::connect(http).await.unwrap();
    plain.write_all(b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n").await.unwrap();
    let mut received = Vec::new();
    let _ = tokio::time::timeout(HANG_GUARD, plain.read_to_end(&mut received)).await;
    assert!(!String::from_utf8_lossy(&received).contains("200 OK"));
}
