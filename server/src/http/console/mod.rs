//! The web console for tokens: a few static files built into the binary
//! (`index.html`, `app.css`, `app.js`, `icon.svg`), served at `/` and
//! `/console/<file>` when `[http] console` is on, and the browser sessions
//! they sign in with ([`sessions`]).
//!
//! The page is a client of the REST API under `/v1` like any other: it
//! lists, creates, revokes, rotates and deletes tokens through the same
//! routes, authenticated by the session cookie instead of `Authorization`.
//! No CDN, no build step: plain HTML, CSS and one JavaScript module.
//!
//! Must never: serve a file that is not in [`ASSETS`], run an inline script
//! or style (the [`CONTENT_SECURITY_POLICY`] forbids both), or put a
//! secret in a URL or in the browser's storage.

pub mod sessions;

use bytes::Bytes;
use hyper::header::{
    CONTENT_SECURITY_POLICY as CSP, HeaderValue, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use hyper::{StatusCode, Uri};
use latchkey_protocol::ErrorCode;

use super::Exchange;
use super::reply::{ApiError, Reply, with_type};

/// What the console keeps while it runs.
#[derive(Default)]
pub struct Console {
    pub sessions: sessions::Sessions,
}

/// Every file the console serves: path, content type, bytes.
const ASSETS: &[(&str, &str, &[u8])] = &[
    ("/", "text/html; charset=utf-8", include_bytes!("index.html")),
    ("/console/app.js", "text/javascript; charset=utf-8", include_bytes!("app.js")),
    ("/console/app.css", "text/css; charset=utf-8", include_bytes!("app.css")),
    ("/console/icon.svg", "image/svg+xml", include_bytes!("icon.svg")),
];

/// Sent with every response of the HTTP side: scripts, styles, images and
/// requests from this origin only, nothing inline, no plugins, no framing,
/// forms posting nowhere.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// `GET /` and `GET /console/<file>`.
pub fn page(uri: &Uri, exchange: &Exchange) -> Result<Reply, ApiError> {
    let not_found = || ApiError::new(StatusCode::NOT_FOUND, ErrorCode::InvalidCommand, "no such route");
    if exchange.side.console.is_none() {
        return Err(not_found());
    }
    let (_, content_type, bytes) =
        ASSETS.iter().find(|(path, _, _)| *path == uri.path()).ok_or_else(not_found)?;
    Ok(with_type(StatusCode::OK, content_type, Bytes::from_static(bytes)))
}

/// Adds the headers every response carries: the [`CONTENT_SECURITY_POLICY`],
/// no content sniffing, no referrer, no framing. `Cache-Control: no-store`
/// is `reply.rs`'s, on every response already.
pub fn secure(reply: &mut Reply) {
    let headers = reply.headers_mut();
    headers.insert(CSP, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pages_hold_no_inline_script_or_style() {
        let html = std::str::from_utf8(ASSETS[0].2).unwrap();
        assert!(!html.contains("<style"), "inline style element");
        assert!(!html.contains(" style="), "inline style attribute");
        let scripts: Vec<&str> = html.split("<script").skip(1).collect();
        assert_eq!(scripts.len(), 1);
        assert!(
            scripts[0].starts_with(" type=\"module\" src=\"/console/app.js\"></script>"),
            "{}",
            scripts[0]
        );
        for (at, _) in html.match_indices(" on") {
            let word: String = html[at + 1..].chars().take_while(char::is_ascii_alphabetic).collect();
            assert!(!html[at + 1 + word.len()..].starts_with('='), "inline event handler {word}");
        }
        let js = std::str::from_utf8(ASSETS[1].2).unwrap();
        assert!(!js.contains("localStorage") && !js.contains("sessionStorage"), "no secret in storage");
        assert!(!js.contains("innerHTML"), "text goes in as text");
    }
}
