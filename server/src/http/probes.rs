//! What operators and orchestrators ask: `/healthz` (the process serves),
//! `/readyz` (it can do its job now), `/metrics` (Prometheus), and the
//! API's OpenAPI document.

use std::sync::Arc;

use bytes::Bytes;
use hyper::StatusCode;
use latchkey_protocol::ErrorCode;
use serde::Serialize;

use super::Exchange;
use super::reply::{ApiError, Reply, json, with_type};

/// The OpenAPI 3 description of every route (`routes::Route`).
pub const OPENAPI: &str = include_str!("openapi.json");

/// `GET /healthz`: 200 whenever the process answers at all.
pub fn healthz() -> Reply {
    #[derive(Serialize)]
    struct Health {
        status: &'static str,
    }
    json(StatusCode::OK, &Health { status: "ok" })
}

/// `GET /readyz`: 200 when the registry was recovered (always, once this
/// listener is up: it starts after recovery), the writer takes changes, the
/// TCP listener is bound, and, in cluster mode, the node has heard from
/// etcd within `max_staleness`; else 503 naming what is not.
pub fn readyz(exchange: &Exchange) -> Reply {
    #[derive(Serialize)]
    struct Ready {
        ready: bool,
        /// What is wrong, one entry per failed check.
        reasons: Vec<String>,
        tcp_address: String,
    }
    let ctx = &exchange.ctx;
    let mut reasons = Vec::new();
    if !ctx.writer.is_alive() {
        reasons.push(
            "the store's writer has stopped or its log failed: no change can be made until a restart"
                .to_owned(),
        );
    }
    if let Some(past) = ctx.freshness.stale_by() {
        reasons.push(format!(
            "no word from the store for {} past max_staleness: token checks are refused",
            humantime::format_duration(std::time::Duration::from_millis(past.as_millis() as u64))
        ));
    }
    let ready = reasons.is_empty();
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    json(status, &Ready { ready, reasons, tcp_address: exchange.side.tcp_address.to_string() })
}

/// `GET /metrics`: the Prometheus text format (`metrics/`).
///
/// Rendering counts the registry's tokens, one pass over all of them (about
/// 50 ms at a million here), so it runs on the blocking pool: a worker
/// thread that took the scrape goes on serving its other connections
/// meanwhile instead of holding their logins behind the count. One render
/// at a time: scrapes that arrive together wait their turn, so a burst of
/// them (the endpoint asks for no credentials) costs at most one core.
pub async fn metrics(exchange: &Exchange) -> Result<Reply, ApiError> {
    static ONE_RENDER: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);
    let _turn = ONE_RENDER.acquire().await.expect("the semaphore is never closed");
    let ctx = Arc::clone(&exchange.ctx);
    let rendered = tokio::task::spawn_blocking(move || crate::metrics::render(&ctx.registry)).await;
    let text = rendered.map_err(|error| {
        tracing::error!(%error, "rendering /metrics failed");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Error,
            "the metrics could not be rendered",
        )
    })?;
    Ok(with_type(StatusCode::OK, crate::metrics::CONTENT_TYPE, Bytes::from(text)))
}

/// `GET /v1/openapi.json`.
pub fn openapi() -> Reply {
    with_type(StatusCode::OK, super::reply::JSON, Bytes::from_static(OPENAPI.as_bytes()))
}
