//! The HTTP baseline: hyper's HTTP/1.1 server (the crate and adapter
//! Latchkey's HTTP side uses, on the same runtime shape: one multi-thread
//! tokio runtime with a worker per core) answering every request 200 with a
//! small fixed body, kept alive. No routing, no headers read, no timers, no
//! allocation of ours per request: what is left is hyper and the kernel.
//! Whatever Latchkey's forward auth costs beyond this is Latchkey's.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

/// The answer to everything: about the shape of a forward-auth allow.
const BODY: &[u8] = br#"{"allowed":true,"reason":"allowed"}"#;

pub fn run(address: SocketAddr, threads: usize) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build()?;
    runtime.block_on(async move {
        let listener = TcpListener::bind(address).await?;
        eprintln!("null HTTP server (hyper http1, {threads} worker threads) listening on {address}");
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    tokio::spawn(serve(stream));
                }
                // Out of descriptors and the like: the listener stays.
                Err(error) => {
                    eprintln!("null HTTP server: accept failed: {error}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        }
    })
}

async fn serve(stream: TcpStream) {
    if stream.set_nodelay(true).is_err() {
        return;
    }
    // A static body and an empty header map: hyper adds Content-Length and
    // Date, and nothing here allocates.
    let service = service_fn(|_request: Request<Incoming>| async {
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(BODY))))
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service)
        .await;
}
