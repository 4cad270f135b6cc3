//! The baseline: a server that speaks the same legacy framing and does no
//! work at all. Replies are built once; each connection reads what is
//! buffered, appends one canned reply per complete request and writes the
//! whole burst with one syscall. Whatever Latchkey does beyond this is the
//! cost of Latchkey.

use std::net::SocketAddr;
use std::sync::Arc;

use latchkey_protocol::Secret;
use latchkey_protocol::body::{
    IdentityInfo, PersonalAccessTokenInfo, PersonalAccessTokens, RawPersonalAccessToken,
};
use latchkey_protocol::codec::{Reply, encode_reply};
use latchkey_protocol::codes;
use latchkey_protocol::{ErrorCode, token};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Runtime shapes to compare, as in `../shared/research/limits.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Shape {
    /// One work-stealing runtime with a worker per core.
    MultiThread,
    /// One current-thread runtime per core, each accepting on its own
    /// SO_REUSEPORT socket (the kernel picks the runtime).
    PerCore,
    /// One current-thread runtime per core, fed round-robin by a single
    /// acceptor thread: Latchkey's shard shape.
    RoundRobin,
}

/// Canned replies by command code.
struct Canned {
    empty: Vec<u8>,
    identity: Vec<u8>,
    token: Vec<u8>,
    list: Vec<u8>,
    decision: Vec<u8>,
    unknown: Vec<u8>,
}

impl Canned {
    fn new() -> Canned {
        let encode = |reply: Reply<'_>| {
            let mut out = bytes::BytesMut::new();
            encode_reply(reply, &mut out);
            out.to_vec()
        };
        let raw = RawPersonalAccessToken { token: Secret::from(token::encode(&[7u8; token::SECRET_BYTES])) };
        let list = PersonalAccessTokens(
            (0..10)
                .map(|i| PersonalAccessTokenInfo { name: format!("bench-t{i}"), expiry_at_us: None })
                .collect(),
        );
        Canned {
            empty: encode(Reply::Ok(&latchkey_protocol::body::Empty)),
            identity: encode(Reply::Ok(&IdentityInfo { user_id: 0 })),
            token: encode(Reply::Ok(&raw)),
            list: encode(Reply::Ok(&list)),
            decision: encode(Reply::Ok(&latchkey_protocol::ext::AuthorizeDecision {
                decision: latchkey_protocol::ext::Decision::Allowed,
                user_id: 0,
                username: "iggy",
                token_id: 1,
                expires_at_us: 0,
            })),
            unknown: encode(Reply::Err(ErrorCode::InvalidCommand)),
        }
    }

    fn reply(&self, code: u32) -> &[u8] {
        match code {
            codes::PING | codes::LOGOUT_USER | codes::DELETE_PERSONAL_ACCESS_TOKEN => &self.empty,
            codes::LOGIN_USER | codes::LOGIN_WITH_PERSONAL_ACCESS_TOKEN => &self.identity,
            codes::AUTHORIZE => &self.decision,
            codes::CREATE_PERSONAL_ACCESS_TOKEN => &self.token,
            codes::GET_PERSONAL_ACCESS_TOKENS => &self.list,
            _ => &self.unknown,
        }
    }
}

pub fn run(address: SocketAddr, shape: Shape, threads: usize) -> std::io::Result<()> {
    let canned = Arc::new(Canned::new());
    eprintln!("null server ({shape:?}, {threads} threads) listening on {address}");
    match shape {
        Shape::MultiThread => {
            let runtime =
                tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build()?;
            runtime.block_on(async move {
                let listener = TcpListener::bind(address).await?;
                accept_loop(listener, canned).await
            })
        }
        Shape::PerCore => {
            let mut joins = Vec::new();
            for _ in 0..threads {
                let canned = Arc::clone(&canned);
                let listener = reuseport_listener(address)?;
                joins.push(std::thread::spawn(move || {
                    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
                    runtime.block_on(async move {
                        let listener = TcpListener::from_std(listener)?;
                        accept_loop(listener, canned).await
                    })
                }));
            }
            for join in joins {
                join.join().map_err(|_| std::io::Error::other("null server thread panicked"))??;
            }
            Ok(())
        }
        Shape::RoundRobin => {
            let mut senders = Vec::new();
            for _ in 0..threads {
                let canned = Arc::clone(&canned);
                let (sender, mut receiver) = tokio::sync::mpsc::unbounded_channel::<std::net::TcpStream>();
                senders.push(sender);
                std::thread::spawn(move || {
                    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
                    runtime.block_on(async move {
                        while let Some(stream) = receiver.recv().await {
                            let canned = Arc::clone(&canned);
                            let stream = TcpStream::from_std(stream)?;
                            tokio::spawn(async move {
                                let _ = serve(stream, &canned).await;
                            });
                        }
                        Ok::<_, std::io::Error>(())
                    })
                });
            }
            let listener = std::net::TcpListener::bind(address)?;
            for (index, stream) in listener.incoming().enumerate() {
                let stream = stream?;
                stream.set_nonblocking(true)?;
                let _ = senders[index % senders.len()].send(stream);
            }
            Ok(())
        }
    }
}

fn reuseport_listener(address: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let domain = socket2::Domain::for_address(address);
    let socket = socket2::Socket::new(domain, socket2::Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&address.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

async fn accept_loop(listener: TcpListener, canned: Arc<Canned>) -> std::io::Result<()> {
    loop {
        let (stream, _) = listener.accept().await?;
        let canned = Arc::clone(&canned);
        tokio::spawn(async move {
            let _ = serve(stream, &canned).await;
        });
    }
}

async fn serve(mut stream: TcpStream, canned: &Canned) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut input = Vec::with_capacity(64 * 1024);
    let mut output = Vec::with_capacity(64 * 1024);
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let read = stream.read(&mut chunk).await?;
        if read == 0 {
            return Ok(());
        }
        input.extend_from_slice(&chunk[..read]);
        let mut offset = 0;
        while input.len() - offset >= 8 {
            let length = u32::from_le_bytes(input[offset..offset + 4].try_into().unwrap()) as usize;
            let code = u32::from_le_bytes(input[offset + 4..offset + 8].try_into().unwrap());
            let frame = 4 + length.max(4);
            if input.len() - offset < frame {
                break;
            }
            output.extend_from_slice(canned.reply(code));
            offset += frame;
        }
        input.drain(..offset);
        if !output.is_empty() {
            stream.write_all(&output).await?;
            output.clear();
        }
    }
}
