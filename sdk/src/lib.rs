//! Async Rust client for Latchkey, the personal access token server.
//!
//! It speaks Iggy's legacy binary framing through the same codec the server
//! uses (`latchkey-protocol`), so it also works against any server that
//! speaks that framing.
//!
//! ```no_run
//! use latchkey_sdk::{Client, Expiry};
//! use std::time::Duration;
//!
//! # async fn example() -> Result<(), latchkey_sdk::Error> {
//! let mut client = Client::connect("127.0.0.1:8090").await?;
//! client.login_user("iggy", "iggy").await?;
//! let token = client
//!     .create_personal_access_token("ci-deploy", Expiry::After(Duration::from_secs(3600)))
//!     .await?;
//! for entry in client.get_personal_access_tokens().await? {
//!     println!("{} expires at {:?}", entry.name, entry.expiry_at_us);
//! }
//!
//! // Later, anywhere: log in with the token instead of the password.
//! let mut other = Client::connect("127.0.0.1:8090").await?;
//! let user_id = other.login_with_personal_access_token(&token).await?;
//! # let _ = user_id;
//! # Ok(())
//! # }
//! ```
//!
//! Beyond Iggy's four token commands, the client has Latchkey's extensions
//! (the token lifecycle and Authorize): [`Client::create_token`] with
//! scopes, networks and a description, [`Client::get_token`],
//! [`Client::list_tokens`], [`Client::update_token`],
//! [`Client::edit_token_access`], [`Client::revoke_token`],
//! [`Client::rotate_token`], [`Client::reactivate_token`],
//! [`Client::delete_token`], [`Client::revoke_all_tokens`],
//! [`Client::delete_all_tokens`] and [`Client::authorize`].

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

mod ext;
pub use ext::{
    AccessEdit, AuthorizeDecision, Decision, IssuedToken, NewToken, RotateExpiry, StatusFilter, TokenDetails,
    TokenPage, TokenSelector, TokenStatus,
};

use bytes::{Bytes, BytesMut};
pub use latchkey_protocol::ErrorCode;
use latchkey_protocol::Secret;
pub use latchkey_protocol::body::PersonalAccessTokenInfo;
use latchkey_protocol::body::{
    ClientDetails, ClusterMetadata, Command, CreatePersonalAccessToken, DeletePersonalAccessToken,
    GetClusterMetadata, GetMe, GetPersonalAccessTokens, IdentityInfo, LoginUser,
    LoginWithPersonalAccessToken, LogoutUser, Ping, RawPersonalAccessToken, WireDecode, decode_exact,
};
use latchkey_protocol::codec::{FrameError, InboundReply, LegacyReplyCodec, encode_request};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, ToSocketAddrs};
use tokio_rustls::client::TlsStream;
use tokio_util::codec::Decoder;
use tokio_util::either::Either;

/// Default time allowed for one request and its reply.
pub const REQUEST_TIMEOUT_DEFAULT: Duration = Duration::from_secs(30);
/// The version string sent in LoginUser.
pub const CLIENT_VERSION: &str = concat!("latchkey-sdk ", env!("CARGO_PKG_VERSION"));

/// What a call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server refused the request with a status code.
    #[error("server error {code} ({name})")]
    Server {
        code: u32,
        /// Iggy's name for the code, or "Unknown".
        name: &'static str,
    },
    #[error("connection failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("no reply within {0:?}; the connection was dropped")]
    Timeout(Duration),
    #[error("the server closed the connection")]
    ConnectionClosed,
    /// A reply that does not decode, or a previous failure left the
    /// connection in an unknown state.
    #[error("protocol error: {0}")]
    Protocol(String),
}

impl Error {
    fn from_status(code: u32) -> Error {
        let name = ErrorCode::from_code(code).map_or("Unknown", ErrorCode::name);
        Error::Server { code, name }
    }

    /// The server's error code, when the server sent one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Error::Server { code, .. } => ErrorCode::from_code(*code),
            _ => None,
        }
    }
}

impl From<FrameError> for Error {
    fn from(error: FrameError) -> Error {
        match error {
            FrameError::Io(error) => Error::Io(error),
            other => Error::Protocol(other.to_string()),
        }
    }
}

/// Token expiry on create, as a duration from the server's commit time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// Wire value 0: the server's default lifetime. That is `never` unless
    /// the server sets `[personal_access_token] default_lifetime` (Iggy's
    /// default is always never); a server's `max_lifetime` may refuse it.
    ServerDefault,
    /// Wire value `u64::MAX`: never expires.
    Never,
    /// Expires this long after creation (µs resolution).
    After(Duration),
}

impl Expiry {
    /// The µs value sent on the wire.
    pub fn as_wire_us(self) -> u64 {
        match self {
            Expiry::ServerDefault => latchkey_protocol::ext::EXPIRY_SERVER_DEFAULT,
            Expiry::Never => latchkey_protocol::ext::EXPIRY_NEVER,
            Expiry::After(duration) => {
                u64::try_from(duration.as_micros()).unwrap_or(u64::MAX - 1).clamp(1, u64::MAX - 1)
            }
        }
    }
}

/// How to log in. The password and the token are [`Secret`]s: wiped when
/// dropped, redacted when printed.
#[derive(Debug, Clone)]
pub enum Credentials {
    UsernamePassword { username: String, password: Secret },
    PersonalAccessToken(Secret),
}

/// Connection options.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `host:port` of the server.
    pub address: String,
    /// Time allowed for each request and its reply.
    pub request_timeout: Duration,
    /// Log in right after connecting.
    pub login: Option<Credentials>,
    /// Connect over TLS (a server with `[tcp.tls]` on speaks nothing else).
    pub tls: Option<TlsConfig>,
}

impl ClientConfig {
    pub fn new(address: impl Into<String>) -> ClientConfig {
        ClientConfig {
            address: address.into(),
            request_timeout: REQUEST_TIMEOUT_DEFAULT,
            login: None,
            tls: None,
        }
    }
}

/// TLS options, as the Iggy SDKs' `tls_ca_file` and `tls_domain`.
///
/// ```no_run
/// # async fn example() -> Result<(), latchkey_sdk::Error> {
/// use latchkey_sdk::{Client, ClientConfig, TlsConfig};
/// let mut config = ClientConfig::new("127.0.0.1:8090");
/// config.tls = Some(TlsConfig { ca_file: "certs/ca.pem".into(), domain: "localhost".into() });
/// let mut client = Client::connect_with(config).await?;
/// client.login_user("iggy", "iggy").await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct TlsConfig {
    /// PEM certificates to trust: the CA that signed the server's
    /// certificate, or a self-signed server certificate itself.
    pub ca_file: PathBuf,
    /// The name to verify the server's certificate against (and send as SNI).
    pub domain: String,
}

impl TlsConfig {
    async fn handshake(&self, tcp: TcpStream) -> std::io::Result<TlsStream<TcpStream>> {
        use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
        let invalid = |what: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, what);
        let ca_file = self.ca_file.display();
        let mut roots = rustls::RootCertStore::empty();
        let certs = CertificateDer::pem_file_iter(&self.ca_file)
            .map_err(|error| invalid(format!("TLS CA file {ca_file}: {error}")))?;
        for cert in certs {
            let cert = cert.map_err(|error| invalid(format!("TLS CA file {ca_file}: {error}")))?;
            roots.add(cert).map_err(|error| invalid(format!("TLS CA file {ca_file}: {error}")))?;
        }
        let domain = ServerName::try_from(self.domain.clone())
            .map_err(|error| invalid(format!("TLS domain {:?}: {error}", self.domain)))?;
        let config =
            rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(std::io::Error::other)?
                .with_root_certificates(roots)
                .with_no_client_auth();
        tokio_rustls::TlsConnector::from(Arc::new(config)).connect(domain, tcp).await
    }
}

/// The connection: plain TCP, or TLS over it.
type Stream = Either<TcpStream, TlsStream<TcpStream>>;

/// One connection to the server. Requests are sent one at a time, each
/// waiting for its reply (the protocol has no request ids).
pub struct Client {
    stream: Stream,
    input: BytesMut,
    codec: LegacyReplyCodec,
    request_timeout: Duration,
    /// Set after a timeout or I/O failure: a late reply would be read as the
    /// answer to the next request, so the connection is not used again.
    broken: bool,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tcp = match &self.stream {
            Either::Left(tcp) => tcp,
            Either::Right(tls) => tls.get_ref().0,
        };
        f.debug_struct("Client").field("peer", &tcp.peer_addr().ok()).finish()
    }
}

impl Client {
    /// Connects with default options and no login.
    pub async fn connect(address: impl ToSocketAddrs) -> Result<Client, Error> {
        let stream = TcpStream::connect(address).await?;
        let _ = stream.set_nodelay(true);
        Ok(Client::from_stream(Either::Left(stream), REQUEST_TIMEOUT_DEFAULT))
    }

    /// Connects (over TLS if `config.tls` is set), then logs in if
    /// `config.login` is set. The handshake counts against `request_timeout`.
    ///
    /// ```no_run
    /// # async fn example(token: String) -> Result<(), latchkey_sdk::Error> {
    /// use latchkey_sdk::{Client, ClientConfig, Credentials};
    /// let mut config = ClientConfig::new("127.0.0.1:8090");
    /// config.login = Some(Credentials::PersonalAccessToken(token.into()));
    /// let mut client = Client::connect_with(config).await?;
    /// let me = client.get_me().await?;
    /// println!("logged in as user {}", me.user_id);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn connect_with(config: ClientConfig) -> Result<Client, Error> {
        let connect = async {
            let tcp = TcpStream::connect(config.address.as_str()).await?;
            let _ = tcp.set_nodelay(true);
            match &config.tls {
                None => Ok::<_, std::io::Error>(Either::Left(tcp)),
                Some(tls) => Ok(Either::Right(tls.handshake(tcp).await?)),
            }
        };
        let stream = tokio::time::timeout(config.request_timeout, connect)
            .await
            .map_err(|_| Error::Timeout(config.request_timeout))??;
        let mut client = Client::from_stream(stream, config.request_timeout);
        match config.login {
            Some(Credentials::UsernamePassword { username, password }) => {
                client.login_user(&username, &password).await?;
            }
            Some(Credentials::PersonalAccessToken(token)) => {
                client.login_with_personal_access_token(&token).await?;
            }
            None => {}
        }
        Ok(client)
    }

    fn from_stream(stream: Stream, request_timeout: Duration) -> Client {
        Client {
            stream,
            input: BytesMut::with_capacity(4096),
            codec: LegacyReplyCodec::default(),
            request_timeout,
            broken: false,
        }
    }

    pub async fn ping(&mut self) -> Result<(), Error> {
        self.call(&Ping).await.map(drop)
    }

    /// Logs in with a password; returns the user id (root is 0).
    ///
    /// ```no_run
    /// # async fn example(client: &mut latchkey_sdk::Client) -> Result<(), latchkey_sdk::Error> {
    /// let user_id = client.login_user("iggy", "iggy").await?;
    /// assert_eq!(user_id, 0);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn login_user(&mut self, username: &str, password: &str) -> Result<u32, Error> {
        let request = LoginUser {
            username: bounded(username, "username")?,
            password: Secret::from(bounded(password, "password")?),
            version: Some(CLIENT_VERSION.to_owned()),
            context: None,
        };
        let reply = self.call(&request).await?;
        Ok(decode::<IdentityInfo>(&reply)?.user_id)
    }

    /// Logs in with a personal access token; returns the owner's user id.
    pub async fn login_with_personal_access_token(&mut self, token: &str) -> Result<u32, Error> {
        let request = LoginWithPersonalAccessToken { token: Secret::from(wire_name(token, "token")?) };
        let reply = self.call(&request).await?;
        Ok(decode::<IdentityInfo>(&reply)?.user_id)
    }

    /// Ends the session; the connection stays open.
    pub async fn logout_user(&mut self) -> Result<(), Error> {
        self.call(&LogoutUser).await.map(drop)
    }

    pub async fn get_me(&mut self) -> Result<ClientDetails, Error> {
        let reply = self.call(&GetMe).await?;
        decode(&reply)
    }

    pub async fn get_cluster_metadata(&mut self) -> Result<ClusterMetadata, Error> {
        let reply = self.call(&GetClusterMetadata).await?;
        decode(&reply)
    }

    /// Creates a token and returns it. This is the only time the raw token
    /// is ever visible: the server keeps only a keyed hash.
    ///
    /// ```no_run
    /// # async fn example(client: &mut latchkey_sdk::Client) -> Result<(), latchkey_sdk::Error> {
    /// use latchkey_sdk::Expiry;
    /// let token = client.create_personal_access_token("backup-job", Expiry::Never).await?;
    /// assert!(token.starts_with("lk_"));
    /// # Ok(())
    /// # }
    /// ```
    pub async fn create_personal_access_token(
        &mut self,
        name: &str,
        expiry: Expiry,
    ) -> Result<String, Error> {
        let request =
            CreatePersonalAccessToken { name: wire_name(name, "name")?, expiry_us: expiry.as_wire_us() };
        let reply = self.call(&request).await?;
        Ok(decode::<RawPersonalAccessToken>(&reply)?.token.expose().to_owned())
    }

    /// The caller's tokens, sorted by name (never their secrets).
    pub async fn get_personal_access_tokens(&mut self) -> Result<Vec<PersonalAccessTokenInfo>, Error> {
        let reply = self.call(&GetPersonalAccessTokens).await?;
        let mut entries = decode::<latchkey_protocol::body::PersonalAccessTokens>(&reply)?.0;
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(entries)
    }

    pub async fn delete_personal_access_token(&mut self, name: &str) -> Result<(), Error> {
        let request = DeletePersonalAccessToken { name: wire_name(name, "name")? };
        self.call(&request).await.map(drop)
    }

    /// Sends any code with any payload and returns the raw reply payload.
    /// For tools and tests that need to send what the typed calls refuse to.
    pub async fn send_raw(&mut self, code: u32, payload: &[u8]) -> Result<Bytes, Error> {
        struct Raw<'a>(&'a [u8]);
        impl latchkey_protocol::body::WireEncode for Raw<'_> {
            fn encoded_size(&self) -> usize {
                self.0.len()
            }
            fn encode(&self, dst: &mut BytesMut) {
                dst.extend_from_slice(self.0);
            }
        }
        let mut frame = BytesMut::new();
        encode_request(code, &Raw(payload), &mut frame);
        self.exchange(frame.freeze()).await
    }

    async fn call<C: Command>(&mut self, command: &C) -> Result<Bytes, Error> {
        let mut frame = BytesMut::with_capacity(8 + command.encoded_size());
        encode_request(C::CODE, command, &mut frame);
        self.exchange(frame.freeze()).await
    }

    async fn exchange(&mut self, frame: Bytes) -> Result<Bytes, Error> {
        if self.broken {
            return Err(Error::Protocol("connection unusable after an earlier failure".into()));
        }
        let timeout = self.request_timeout;
        let result = tokio::time::timeout(timeout, async {
            self.stream.write_all(&frame).await?;
            self.stream.flush().await?;
            loop {
                if let Some(reply) = self.codec.decode(&mut self.input)? {
                    return Ok(reply);
                }
                if self.stream.read_buf(&mut self.input).await? == 0 {
                    return Err(Error::ConnectionClosed);
                }
            }
        })
        .await;
        let reply: InboundReply = match result {
            Ok(Ok(reply)) => reply,
            Ok(Err(error)) => {
                self.broken = true;
                return Err(error);
            }
            Err(_) => {
                self.broken = true;
                return Err(Error::Timeout(timeout));
            }
        };
        if reply.status == 0 { Ok(reply.payload) } else { Err(Error::from_status(reply.status)) }
    }
}

fn decode<T: WireDecode>(payload: &[u8]) -> Result<T, Error> {
    decode_exact(payload).map_err(|code| Error::Protocol(format!("reply does not decode ({})", code.name())))
}

/// Names and tokens travel as 1–255 byte WireNames; refuse others locally.
fn wire_name(value: &str, what: &str) -> Result<String, Error> {
    if value.is_empty() || value.len() > 255 {
        return Err(Error::Protocol(format!("{what} must be 1-255 bytes")));
    }
    Ok(value.to_owned())
}

/// Username and password travel with a u8 length; longer would corrupt the frame.
fn bounded(value: &str, what: &str) -> Result<String, Error> {
    if value.len() > 255 {
        return Err(Error::Protocol(format!("{what} must be at most 255 bytes")));
    }
    Ok(value.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_wire_values() {
        assert_eq!(Expiry::ServerDefault.as_wire_us(), 0);
        assert_eq!(Expiry::Never.as_wire_us(), u64::MAX);
        assert_eq!(Expiry::After(Duration::from_secs(3600)).as_wire_us(), 3_600_000_000);
        // A zero duration must not turn into "server default".
        assert_eq!(Expiry::After(Duration::ZERO).as_wire_us(), 1);
    }

    #[test]
    fn errors_carry_code_and_name() {
        let error = Error::from_status(42);
        assert_eq!(error.to_string(), "server error 42 (InvalidCredentials)");
        assert_eq!(error.code(), Some(ErrorCode::InvalidCredentials));
        assert_eq!(Error::from_status(9999).to_string(), "server error 9999 (Unknown)");
    }
}
