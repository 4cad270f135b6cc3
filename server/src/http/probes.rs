//! What operators and orchestrators ask: `/healthz` (the process serves),
//! `/readyz` (it can do its job now), `/metrics` (Prometheus), and the
//! API's OpenAPI document.

use bytes::Bytes;
use hyper::StatusCode;
use serde::Serialize;

use super::Exchange;
use super::reply::{Reply, json, with_type};

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
pub fn metrics(exchange: &Exchange) -> Reply {
    let text = crate::metrics::render(&exchange.ctx.registry);
    with_type(StatusCode::OK, crate::metrics::CONTENT_TYPE, Bytes::from(text))
}

/// `GET /v1/openapi.json`.
pub fn openapi() -> Reply {
    with_type(StatusCode::OK, super::reply::JSON, Bytes::from_static(OPENAPI.as_bytes()))
}
