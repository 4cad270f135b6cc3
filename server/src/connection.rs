//! One client connection: read frames, answer each in order, write replies
//! in one syscall per burst.
//!
//! Reading is "decode what is buffered, else read more". Every request that
//! is already buffered is answered before the replies are written, so a
//! pipelining client costs one read and one write per burst, while a
//! lockstep client (every Iggy SDK) sees one reply per request at once.
//! The connection closes only when the framing itself is broken (a declared
//! length over the limit), when the peer closes, or at shutdown.

use std::net::SocketAddr;

use bytes::BytesMut;
use latchkey_protocol::codec::{Inbound, Reply, ServerCodec, encode_reply};
use latchkey_protocol::{ErrorCode, Request};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::dispatch::{self, Session};
use crate::shard::Shard;

/// Initial read buffer; grows only for a frame larger than this.
const READ_BUFFER_BYTES: usize = 4096;

pub async fn serve(stream: std::net::TcpStream, peer: SocketAddr, shard: &Shard) {
    let stream = match stream.set_nonblocking(true).and_then(|()| TcpStream::from_std(stream)) {
        Ok(stream) => stream,
        Err(error) => {
            tracing::warn!(%peer, %error, "cannot register connection");
            return;
        }
    };
    let _ = stream.set_nodelay(true);
    let client_id = shard.shared.client_ids.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut session = Session::new(client_id, peer);
    tracing::debug!(%peer, shard = shard.id, client_id, "connection opened");
    match run(stream, &mut session, shard).await {
        Ok(()) => tracing::debug!(%peer, client_id, "connection closed"),
        Err(reason) => tracing::info!(%peer, client_id, %reason, "connection closed"),
    }
}

async fn run(mut stream: TcpStream, session: &mut Session, shard: &Shard) -> Result<(), String> {
    let mut codec = ServerCodec::new(shard.shared.max_frame_size);
    let mut input = BytesMut::with_capacity(READ_BUFFER_BYTES);
    let mut output = BytesMut::with_capacity(READ_BUFFER_BYTES);
    let mut shutdown = shard.shared.shutdown.clone();
    loop {
        loop {
            let inbound = match tokio_util::codec::Decoder::decode(&mut codec, &mut input) {
                Ok(Some(inbound)) => inbound,
                Ok(None) => break,
                Err(error) => {
                    // Answer what came before the bad frame, then close.
                    let _ = stream.write_all(&output).await;
                    return Err(error.to_string());
                }
            };
            answer(inbound, session, shard, &mut output).await;
        }
        if !output.is_empty() {
            stream.write_all(&output).await.map_err(|e| format!("write failed: {e}"))?;
            output.clear();
        }
        if *shutdown.borrow() {
            return Ok(());
        }
        tokio::select! {
            read = stream.read_buf(&mut input) => match read {
                Ok(0) if input.is_empty() => return Ok(()),
                Ok(0) => return Err(format!("peer closed mid-frame ({} bytes pending)", input.len())),
                Ok(_) => {}
                Err(error) => return Err(format!("read failed: {error}")),
            },
            _ = shutdown.changed() => return Ok(()),
        }
    }
}

/// Decodes, checks the session, runs the command and encodes its reply.
/// Order matters (spec §1.6): body errors first, then the login check.
async fn answer(inbound: Inbound, session: &mut Session, shard: &Shard, output: &mut BytesMut) {
    let request = match inbound {
        Inbound::Request { code, payload } => Request::decode(code, &payload),
        Inbound::Malformed { .. } => Err(ErrorCode::InvalidCommand),
    };
    let reply = match request {
        Err(code) => Err(code),
        Ok(request) if !session.is_logged_in() && !request.allowed_before_login() => {
            Err(ErrorCode::Unauthenticated)
        }
        Ok(request) => dispatch::handle(request, session, shard).await,
    };
    match &reply {
        Ok(body) => encode_reply(Reply::Ok(body), output),
        Err(code) => encode_reply(Reply::Err(*code), output),
    }
}
