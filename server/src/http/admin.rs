//! Root's operations over HTTP: `POST /v1/admin/backup`, a consistent,
//! compacted copy of every token while writes go on (`latchkey-server
//! backup` is its client; README "Backup and restore").
//!
//! Root only, and only with its password: a backup holds every token's
//! keyed hash, so no token, however scoped, may take one. The copy is a
//! whole token-log file made by the store's writer (`Change::Snapshot`)
//! after every change queued before the request, and sent only once those
//! are durable: every change acknowledged before the backup began is in it.

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::{Request, StatusCode};
use latchkey_protocol::ErrorCode;

use super::Exchange;
use super::input::{Credential, log_in_with_header};
use super::reply::{ApiError, Reply, with_type};
use crate::auth::users::ROOT_USER_ID;
use crate::store::{Change, Outcome};

/// `X-Latchkey-Tokens` on a backup: how many tokens the file holds.
const TOKENS: &str = "x-latchkey-tokens";
/// `X-Latchkey-Key-Check` on a backup: a keyed hash of a fixed label under
/// the server's token key (`TokenKey::check_value`, as cluster mode keeps in
/// etcd), so the client can tell the key file it copies is this server's.
const KEY_CHECK: &str = "x-latchkey-key-check";

/// `POST /v1/admin/backup`: the token-log file, `application/octet-stream`.
pub async fn backup(request: Request<Incoming>, exchange: &Exchange) -> Result<Reply, ApiError> {
    let caller = log_in_with_header(request.headers(), exchange).await?;
    if caller.user_id != ROOT_USER_ID || caller.credential != Credential::Password {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            ErrorCode::Unauthorized,
            "a backup holds every token's hash: root, with its password, only",
        ));
    }
    let outcome = exchange.ctx.writer.submit(Change::Snapshot).await.map_err(ApiError::from_code)?;
    let Outcome::Snapshot { file, tokens } = outcome else {
        return Err(ApiError::from_code(ErrorCode::Error));
    };
    let peer = caller.session.peer();
    tracing::info!(target: "audit", event = "backup_taken", user_id = caller.user_id, tokens, bytes = file.len(), %peer);
    let mut reply = with_type(StatusCode::OK, "application/octet-stream", Bytes::from(file));
    reply.headers_mut().insert(TOKENS, HeaderValue::from(tokens));
    if let Ok(check) = HeaderValue::from_str(&exchange.ctx.auth.token_key.check_value()) {
        reply.headers_mut().insert(KEY_CHECK, check);
    }
    Ok(reply)
}
