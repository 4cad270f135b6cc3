//! Latchkey's wire protocol: Iggy's binary framing, the login and personal
//! access token bodies, and the error codes. Pure data and codecs: no I/O and
//! no runtime, so the server, the SDK and the tools share one definition.
//!
//! Layout:
//! - [`codec`]: the legacy length-prefixed framing: `LegacyRequestCodec` and
//!   `LegacyReplyCodec` decode, `encode_request` and `encode_reply` write;
//! - [`vsr`]: the 0.11 framing (256-byte headers, Register logins, result
//!   sections, the version gate);
//! - [`body`]: one type per request and reply body;
//! - [`request`]: a code plus a decoded body, with the precedence rules;
//! - [`codes`]: command codes; [`error`]: wire error codes;
//! - [`token`]: Latchkey's token format (`lk_…`), shared by server and tools;
//! - [`ext`]: Latchkey's extension commands (token lifecycle, Authorize);
//!   [`scope`]: scope syntax and matching.

pub mod body;
pub mod codec;
pub mod codes;
pub mod error;
pub mod ext;
mod field_text;
pub mod request;
pub mod scope;
mod secret;
pub mod token;
pub mod vsr;
pub mod wire;

pub use error::ErrorCode;
pub use field_text::{FIELD_INLINE_BYTES, FieldText};
pub use request::Request;
pub use secret::Secret;
