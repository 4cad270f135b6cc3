//! The 0.11 framing (spec §2), which Iggy calls VSR: every frame is a 256-byte
//! header plus a body. This module holds the headers, the frame decoders, the
//! Register (login) bodies, the result section, packed versions and the
//! version gate. Pure data and codecs, like the rest of the crate.
//!
//! What does *not* live here: the PAT, GetMe and cluster bodies. They are the
//! legacy bodies from [`crate::body`] byte for byte (spec §3.1), so both
//! framings share one codec per body and differ only in framing and in how an
//! error travels (a deny status, a result section or an eviction, §2.6).
//!
//! Every integer is little-endian. Offsets are the spec's (§2.3–§2.7) and are
//! written down once, in [`offset`].

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::Decoder;

use crate::body::{WireDecode, WireEncode};
use crate::wire::{Reader, put_long, put_short};
use crate::{ErrorCode, Secret};

/// Every frame starts with a header of exactly this many bytes; the header's
/// `size` field counts it.
pub const HEADER_BYTES: usize = 256;

/// Byte offsets of the header fields Latchkey reads or writes (spec §2.3–§2.7).
pub mod offset {
    // Common prefix, bytes 0–127.
    pub const CLUSTER: usize = 32;
    pub const SIZE: usize = 48;
    pub const VIEW: usize = 52;
    pub const COMMAND: usize = 60;
    pub const REPLICA: usize = 61;

    // RequestHeader, bytes 128–255.
    pub const REQUEST_CLIENT: usize = 128;
    pub const REQUEST_REQUEST_CHECKSUM: usize = 144;
    pub const REQUEST_TIMESTAMP: usize = 160;
    pub const REQUEST_REQUEST: usize = 168;
    pub const REQUEST_OPERATION: usize = 176;
    pub const REQUEST_SESSION: usize = 184;
    pub const REQUEST_USER_ID: usize = 192;
    /// The command code of a NonReplicated request (first 4 reserved bytes).
    pub const REQUEST_CODE: usize = 196;

    // ReplyHeader, bytes 128–255.
    pub const REPLY_REQUEST_CHECKSUM: usize = 128;
    pub const REPLY_CLIENT: usize = 160;
    pub const REPLY_OP: usize = 176;
    pub const REPLY_COMMIT: usize = 184;
    pub const REPLY_TIMESTAMP: usize = 192;
    pub const REPLY_REQUEST: usize = 200;
    pub const REPLY_OPERATION: usize = 208;
    pub const REPLY_STATUS: usize = 216;

    // EvictionHeader, bytes 128–255.
    pub const EVICTION_CLIENT: usize = 128;
    pub const EVICTION_VERSION_MAX: usize = 144;
    pub const EVICTION_VERSION_MIN: usize = 148;
    pub const EVICTION_REASON: usize = 255;
}

/// The header `command` byte (spec §2.3). Only these three face clients.
pub const COMMAND_REQUEST: u8 = 5;
pub const COMMAND_REPLY: u8 = 8;
pub const COMMAND_EVICTION: u8 = 13;

/// The `operation` byte (spec §2.8).
pub mod operation {
    pub const RESERVED: u8 = 0;
    /// Both logins: password and PAT (codes 40 and 45 are not on the wire).
    pub const REGISTER: u8 = 1;
    /// Reads and Ping; the command code rides in bytes 196..200.
    pub const NON_REPLICATED: u8 = 2;
    pub const LOGOUT: u8 = 3;
    pub const CREATE_PERSONAL_ACCESS_TOKEN: u8 = 146;
    pub const DELETE_PERSONAL_ACCESS_TOKEN: u8 = 147;
    /// The metadata operations, CreateStream (128) to LeaveConsumerGroup (149).
    pub const METADATA_FIRST: u8 = 128;
    pub const METADATA_LAST: u8 = 149;
    pub const DELETE_SEGMENTS: u8 = 138;
    pub const SEND_MESSAGES: u8 = 160;
    pub const STORE_CONSUMER_OFFSET: u8 = 161;
    pub const DELETE_CONSUMER_OFFSET: u8 = 162;

    /// Replicated operations a client may send besides Register and Logout:
    /// the metadata operations and the three partition operations.
    pub const fn is_client_replicated(operation: u8) -> bool {
        matches!(operation, METADATA_FIRST..=METADATA_LAST | SEND_MESSAGES..=DELETE_CONSUMER_OFFSET)
    }

    /// Whether a client accepts this value in a reply (spec §2.8): the client
    /// operations plus the server-internal 64–68.
    pub const fn is_valid(operation: u8) -> bool {
        matches!(operation, REGISTER..=LOGOUT | 64..=68) || is_client_replicated(operation)
    }

    /// Whether a reply body starts with a result section (spec §2.5). Register
    /// is result-framed only when its body is non-empty; callers check that.
    pub const fn is_result_framed(operation: u8) -> bool {
        match operation {
            REGISTER => true,
            DELETE_SEGMENTS => false,
            METADATA_FIRST..=METADATA_LAST => true,
            STORE_CONSUMER_OFFSET | DELETE_CONSUMER_OFFSET => true,
            _ => false,
        }
    }
}

/// Why the server evicted a client (spec §2.7). The discriminant is the
/// byte at offset 255.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum EvictionReason {
    Reserved = 0,
    /// A replicated operation on a connection that is not logged in (SDK: 40).
    NoSession = 1,
    ClientReleaseTooLow = 2,
    ClientReleaseTooHigh = 3,
    InvalidRequestOperation = 4,
    InvalidRequestBody = 5,
    InvalidRequestBodySize = 6,
    SessionTooLow = 7,
    SessionReleaseMismatch = 8,
    /// Password login refused, whatever the cause (SDK: 42).
    InvalidCredentials = 9,
    /// PAT login with an unknown, deleted or expired token (SDK: 53).
    InvalidToken = 10,
    /// PAT login whose owner is inactive (SDK: 40).
    UserInactive = 11,
    SessionError = 12,
    StaleClient = 13,
    /// The client's protocol version is outside the server's window (SDK: 14003).
    IncompatibleProtocol = 14,
    /// A Register body that is neither login shape, or a legacy login code (SDK: 4).
    MalformedLogin = 15,
}

impl EvictionReason {
    pub const ALL: [EvictionReason; 16] = [
        EvictionReason::Reserved,
        EvictionReason::NoSession,
        EvictionReason::ClientReleaseTooLow,
        EvictionReason::ClientReleaseTooHigh,
        EvictionReason::InvalidRequestOperation,
        EvictionReason::InvalidRequestBody,
        EvictionReason::InvalidRequestBodySize,
        EvictionReason::SessionTooLow,
        EvictionReason::SessionReleaseMismatch,
        EvictionReason::InvalidCredentials,
        EvictionReason::InvalidToken,
        EvictionReason::UserInactive,
        EvictionReason::SessionError,
        EvictionReason::StaleClient,
        EvictionReason::IncompatibleProtocol,
        EvictionReason::MalformedLogin,
    ];

    pub const fn from_u8(value: u8) -> Option<EvictionReason> {
        if (value as usize) < EvictionReason::ALL.len() {
            Some(EvictionReason::ALL[value as usize])
        } else {
            None
        }
    }
}

// ---------------------------------------------------------------------------
// Versions (spec §2.1)
// ---------------------------------------------------------------------------

/// Bits per component of a packed version.
const VERSION_COMPONENT_BITS: u32 = 10;
const VERSION_COMPONENT_MASK: u32 = (1 << VERSION_COMPONENT_BITS) - 1;

/// `major<<20 | minor<<10 | patch`; `None` if a component is 1024 or more.
pub const fn pack_version(major: u32, minor: u32, patch: u32) -> Option<u32> {
    if major > VERSION_COMPONENT_MASK || minor > VERSION_COMPONENT_MASK || patch > VERSION_COMPONENT_MASK {
        return None;
    }
    Some(major << (2 * VERSION_COMPONENT_BITS) | minor << VERSION_COMPONENT_BITS | patch)
}

/// `(major, minor, patch)` of a packed version.
pub const fn unpack_version(packed: u32) -> (u32, u32, u32) {
    (
        packed >> (2 * VERSION_COMPONENT_BITS),
        (packed >> VERSION_COMPONENT_BITS) & VERSION_COMPONENT_MASK,
        packed & VERSION_COMPONENT_MASK,
    )
}

/// The protocol version Latchkey speaks: 0.11.0, the `iggy` 0.11.0 SDK's.
pub const PROTOCOL_VERSION: u32 = match pack_version(0, 11, 0) {
    Some(version) => version,
    None => panic!("0.11.0 packs"),
};

/// The oldest client version a server at `server` accepts: its own minor
/// line, patch 0.
pub const fn protocol_version_min(server: u32) -> u32 {
    server & !VERSION_COMPONENT_MASK
}

/// Iggy's gate (spec §2.1): `client ≥ MIN && client>>10 ≤ server>>10`, i.e.
/// the server's major.minor with any patch. For 0.11.x: 11264 ≤ client ≤ 12287.
pub const fn is_protocol_compatible(client: u32, server: u32) -> bool {
    client >= protocol_version_min(server)
        && (client >> VERSION_COMPONENT_BITS) <= (server >> VERSION_COMPONENT_BITS)
}

/// The `request_checksum` a client stamps on a body: XXH3-64 (seed 0),
/// zero-extended to 128 bits (spec §2.4).
pub fn request_checksum(body: &[u8]) -> u128 {
    u128::from(xxhash_rust::xxh3::xxh3_64(body))
}

// ---------------------------------------------------------------------------
// Headers
// ---------------------------------------------------------------------------

/// Why a request header is refused. The server closes the connection: a
/// frame whose own header is inconsistent cannot be answered reliably.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("header command is {0}, not Request (5)")]
    NotARequest(u8),
    #[error("client id is 0")]
    ZeroClient,
    #[error("operation is 0 (reserved)")]
    ZeroOperation,
    #[error("Register with session {session} and request {request}; both must be 0")]
    RegisterWithSession { session: u64, request: u64 },
    #[error("operation {operation} with session {session} and request {request}; both must be at least 1")]
    MissingSession { operation: u8, session: u64, request: u64 },
}

fn u32_at(bytes: &[u8; HEADER_BYTES], at: usize) -> u32 {
    u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

fn u64_at(bytes: &[u8; HEADER_BYTES], at: usize) -> u64 {
    let mut array = [0u8; 8];
    array.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(array)
}

fn u128_at(bytes: &[u8; HEADER_BYTES], at: usize) -> u128 {
    let mut array = [0u8; 16];
    array.copy_from_slice(&bytes[at..at + 16]);
    u128::from_le_bytes(array)
}

fn put_at(header: &mut [u8; HEADER_BYTES], at: usize, value: &[u8]) {
    header[at..at + value.len()].copy_from_slice(value);
}

/// The common prefix fields a reply or eviction copies from its request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Route {
    pub cluster: u128,
    pub view: u32,
    pub replica: u8,
}

impl Route {
    fn write(&self, header: &mut [u8; HEADER_BYTES], size: u32, command: u8) {
        put_at(header, offset::CLUSTER, &self.cluster.to_le_bytes());
        put_at(header, offset::SIZE, &size.to_le_bytes());
        put_at(header, offset::VIEW, &self.view.to_le_bytes());
        header[offset::COMMAND] = command;
        header[offset::REPLICA] = self.replica;
    }

    fn read(bytes: &[u8; HEADER_BYTES]) -> Route {
        Route {
            cluster: u128_at(bytes, offset::CLUSTER),
            view: u32_at(bytes, offset::VIEW),
            replica: bytes[offset::REPLICA],
        }
    }
}

/// A client's request header (spec §2.4). The header `checksum`,
/// `checksum_body` and `release` fields are neither checked nor kept: the
/// SDK sends zeros and Iggy does not verify them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RequestHeader {
    pub route: Route,
    /// The whole frame, header included.
    pub size: u32,
    /// A random id per client session; never 0.
    pub client: u128,
    /// XXH3-64 of the body, or 0 for "not stamped".
    pub request_checksum: u128,
    pub timestamp: u64,
    pub request: u64,
    pub operation: u8,
    pub session: u64,
    /// Never trusted: the connection's login decides who the caller is.
    pub user_id: u32,
    /// The command code of a NonReplicated request; 0 for other operations.
    pub code: u32,
}

impl RequestHeader {
    /// Reads and validates a header (spec §2.4, `validate_request_fields`).
    pub fn decode(bytes: &[u8; HEADER_BYTES]) -> Result<RequestHeader, HeaderError> {
        let command = bytes[offset::COMMAND];
        if command != COMMAND_REQUEST {
            return Err(HeaderError::NotARequest(command));
        }
        let op = bytes[offset::REQUEST_OPERATION];
        let header = RequestHeader {
            route: Route::read(bytes),
            size: u32_at(bytes, offset::SIZE),
            client: u128_at(bytes, offset::REQUEST_CLIENT),
            request_checksum: u128_at(bytes, offset::REQUEST_REQUEST_CHECKSUM),
            timestamp: u64_at(bytes, offset::REQUEST_TIMESTAMP),
            request: u64_at(bytes, offset::REQUEST_REQUEST),
            operation: op,
            session: u64_at(bytes, offset::REQUEST_SESSION),
            user_id: u32_at(bytes, offset::REQUEST_USER_ID),
            code: if op == operation::NON_REPLICATED { u32_at(bytes, offset::REQUEST_CODE) } else { 0 },
        };
        header.validate()?;
        Ok(header)
    }

    fn validate(&self) -> Result<(), HeaderError> {
        if self.client == 0 {
            return Err(HeaderError::ZeroClient);
        }
        let (session, request) = (self.session, self.request);
        match self.operation {
            operation::RESERVED => Err(HeaderError::ZeroOperation),
            operation::REGISTER if session != 0 || request != 0 => {
                Err(HeaderError::RegisterWithSession { session, request })
            }
            operation::REGISTER | operation::NON_REPLICATED => Ok(()),
            op if session == 0 || request == 0 => {
                Err(HeaderError::MissingSession { operation: op, session, request })
            }
            _ => Ok(()),
        }
    }

    /// Writes the header for a body of `body_bytes`; `size` is computed, the
    /// `size` field of `self` is ignored. Used by clients and tests.
    pub fn encode(&self, body_bytes: usize, dst: &mut BytesMut) {
        let size = frame_size(body_bytes);
        let mut header = [0u8; HEADER_BYTES];
        self.route.write(&mut header, size, COMMAND_REQUEST);
        put_at(&mut header, offset::REQUEST_CLIENT, &self.client.to_le_bytes());
        put_at(&mut header, offset::REQUEST_REQUEST_CHECKSUM, &self.request_checksum.to_le_bytes());
        put_at(&mut header, offset::REQUEST_TIMESTAMP, &self.timestamp.to_le_bytes());
        put_at(&mut header, offset::REQUEST_REQUEST, &self.request.to_le_bytes());
        header[offset::REQUEST_OPERATION] = self.operation;
        put_at(&mut header, offset::REQUEST_SESSION, &self.session.to_le_bytes());
        put_at(&mut header, offset::REQUEST_USER_ID, &self.user_id.to_le_bytes());
        if self.operation == operation::NON_REPLICATED {
            put_at(&mut header, offset::REQUEST_CODE, &self.code.to_le_bytes());
        }
        dst.put_slice(&header);
    }
}

/// `HEADER_BYTES + body_bytes` as the `size` field. A body over 4 GiB is a
/// bug in Latchkey (every body is bounded long before), so it is asserted.
fn frame_size(body_bytes: usize) -> u32 {
    HEADER_BYTES
        .checked_add(body_bytes)
        .and_then(|size| u32::try_from(size).ok())
        .expect("frame larger than 4 GiB")
}

/// The server's reply header (spec §2.5). Clients read only `size`,
/// `command`, `operation` and `status`; the other fields echo the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReplyHeader {
    pub route: Route,
    pub size: u32,
    pub request_checksum: u128,
    pub client: u128,
    /// Latchkey puts the connection's session number here (0 before login).
    pub op: u64,
    pub commit: u64,
    pub timestamp: u64,
    pub request: u64,
    /// Echoed from the request; the SDK refuses a reply without a valid one.
    pub operation: u8,
    /// 0, or the error code of a deny reply.
    pub status: u32,
}

impl ReplyHeader {
    /// A reply to `request` that echoes what Iggy echoes, with `op` = `session`.
    pub fn answering(request: &RequestHeader, session: u64, status: u32) -> ReplyHeader {
        ReplyHeader {
            route: request.route,
            size: 0,
            request_checksum: request.request_checksum,
            client: request.client,
            op: session,
            commit: 0,
            timestamp: request.timestamp,
            request: request.request,
            operation: request.operation,
            status,
        }
    }

    /// Writes the header for a body of `body_bytes`; `size` is computed.
    pub fn encode(&self, body_bytes: usize, dst: &mut BytesMut) {
        let mut header = [0u8; HEADER_BYTES];
        self.route.write(&mut header, frame_size(body_bytes), COMMAND_REPLY);
        put_at(&mut header, offset::REPLY_REQUEST_CHECKSUM, &self.request_checksum.to_le_bytes());
        put_at(&mut header, offset::REPLY_CLIENT, &self.client.to_le_bytes());
        put_at(&mut header, offset::REPLY_OP, &self.op.to_le_bytes());
        put_at(&mut header, offset::REPLY_COMMIT, &self.commit.to_le_bytes());
        put_at(&mut header, offset::REPLY_TIMESTAMP, &self.timestamp.to_le_bytes());
        put_at(&mut header, offset::REPLY_REQUEST, &self.request.to_le_bytes());
        header[offset::REPLY_OPERATION] = self.operation;
        put_at(&mut header, offset::REPLY_STATUS, &self.status.to_le_bytes());
        dst.put_slice(&header);
    }

    /// Reads a reply header; the caller has checked `command` = Reply.
    pub fn decode(bytes: &[u8; HEADER_BYTES]) -> ReplyHeader {
        ReplyHeader {
            route: Route::read(bytes),
            size: u32_at(bytes, offset::SIZE),
            request_checksum: u128_at(bytes, offset::REPLY_REQUEST_CHECKSUM),
            client: u128_at(bytes, offset::REPLY_CLIENT),
            op: u64_at(bytes, offset::REPLY_OP),
            commit: u64_at(bytes, offset::REPLY_COMMIT),
            timestamp: u64_at(bytes, offset::REPLY_TIMESTAMP),
            request: u64_at(bytes, offset::REPLY_REQUEST),
            operation: bytes[offset::REPLY_OPERATION],
            status: u32_at(bytes, offset::REPLY_STATUS),
        }
    }
}

/// The server's eviction header (spec §2.7): header only, `size` = 256.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EvictionHeader {
    pub route: Route,
    /// The request's client id.
    pub client: u128,
    pub reason: EvictionReason,
    /// Only for [`EvictionReason::IncompatibleProtocol`]: the server's version
    /// window; 0 otherwise.
    pub version_max: u32,
    pub version_min: u32,
}

impl EvictionHeader {
    /// An eviction answering `request`; the version window is filled in for
    /// reason 14 only, from `PROTOCOL_VERSION`.
    pub fn answering(request: &RequestHeader, reason: EvictionReason) -> EvictionHeader {
        let (version_max, version_min) = if reason == EvictionReason::IncompatibleProtocol {
            (PROTOCOL_VERSION, protocol_version_min(PROTOCOL_VERSION))
        } else {
            (0, 0)
        };
        EvictionHeader { route: request.route, client: request.client, reason, version_max, version_min }
    }

    pub fn encode(&self, dst: &mut BytesMut) {
        let mut header = [0u8; HEADER_BYTES];
        self.route.write(&mut header, frame_size(0), COMMAND_EVICTION);
        put_at(&mut header, offset::EVICTION_CLIENT, &self.client.to_le_bytes());
        put_at(&mut header, offset::EVICTION_VERSION_MAX, &self.version_max.to_le_bytes());
        put_at(&mut header, offset::EVICTION_VERSION_MIN, &self.version_min.to_le_bytes());
        header[offset::EVICTION_REASON] = self.reason as u8;
        dst.put_slice(&header);
    }

    /// Reads an eviction header; `None` for a reason byte of 16 or more.
    pub fn decode(bytes: &[u8; HEADER_BYTES]) -> Option<EvictionHeader> {
        Some(EvictionHeader {
            route: Route::read(bytes),
            client: u128_at(bytes, offset::EVICTION_CLIENT),
            reason: EvictionReason::from_u8(bytes[offset::EVICTION_REASON])?,
            version_max: u32_at(bytes, offset::EVICTION_VERSION_MAX),
            version_min: u32_at(bytes, offset::EVICTION_VERSION_MIN),
        })
    }
}

// ---------------------------------------------------------------------------
// Frames
// ---------------------------------------------------------------------------

/// Why a stream of 0.11 frames can no longer be read. Each closes the
/// connection with no reply, as Iggy does for a bad `size` (spec §2.2).
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("declared frame size {declared} is below the {HEADER_BYTES}-byte header")]
    TooSmall { declared: u32 },
    #[error("declared frame size {declared} exceeds the maximum {max}")]
    TooLarge { declared: u32, max: u32 },
    #[error("invalid request header: {0}")]
    Header(#[from] HeaderError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Checks a declared `size` once its 4 bytes are buffered, so a bad size
/// closes the connection before any of the frame is waited for.
fn check_size(src: &BytesMut, size_max: u32) -> Result<Option<usize>, FrameError> {
    if src.len() < offset::SIZE + 4 {
        return Ok(None);
    }
    let declared = u32::from_le_bytes([
        src[offset::SIZE],
        src[offset::SIZE + 1],
        src[offset::SIZE + 2],
        src[offset::SIZE + 3],
    ]);
    if (declared as usize) < HEADER_BYTES {
        return Err(FrameError::TooSmall { declared });
    }
    if declared > size_max {
        return Err(FrameError::TooLarge { declared, max: size_max });
    }
    Ok(Some(declared as usize))
}

/// Splits one whole frame off `src` once it is buffered.
fn split_frame(
    src: &mut BytesMut,
    size_max: u32,
) -> Result<Option<([u8; HEADER_BYTES], BytesMut)>, FrameError> {
    let Some(size) = check_size(src, size_max)? else {
        return Ok(None);
    };
    if src.len() < size {
        src.reserve(size - src.len());
        return Ok(None);
    }
    let mut frame = src.split_to(size);
    let mut header = [0u8; HEADER_BYTES];
    header.copy_from_slice(&frame[..HEADER_BYTES]);
    frame.advance(HEADER_BYTES);
    Ok(Some((header, frame)))
}

/// One request as read off the wire: a validated header and its body. The
/// body is mutable so the server can wipe it once decoded (it may hold a
/// password or a token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestFrame {
    pub header: RequestHeader,
    pub body: BytesMut,
}

/// Decodes request frames (the server's side). Replies are written with
/// [`encode_reply`] and [`EvictionHeader::encode`].
#[derive(Debug, Clone)]
pub struct RequestCodec {
    size_max: u32,
}

impl RequestCodec {
    /// `size_max` caps the `size` field (header included); at least 256.
    pub fn new(size_max: u32) -> RequestCodec {
        RequestCodec { size_max: size_max.max(HEADER_BYTES as u32) }
    }
}

impl Decoder for RequestCodec {
    type Item = RequestFrame;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<RequestFrame>, FrameError> {
        let Some((header, body)) = split_frame(src, self.size_max)? else {
            return Ok(None);
        };
        let header = RequestHeader::decode(&header)?;
        Ok(Some(RequestFrame { header, body }))
    }
}

/// A frame from the server as a client reads it: a reply, or an eviction
/// (a header-only answer that ends the session, spec §2.7).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyFrame {
    Reply { header: ReplyHeader, body: Bytes },
    Eviction(EvictionHeader),
}

/// Why a client cannot read a frame from the server.
#[derive(Debug, thiserror::Error)]
pub enum ReplyFrameError {
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("server frame command {0} is neither Reply (8) nor Eviction (13)")]
    UnknownCommand(u8),
    #[error("eviction reason {0} is not a valid reason")]
    UnknownEvictionReason(u8),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Decodes reply and eviction frames (the client's side: bench, tools, tests).
#[derive(Debug, Clone)]
pub struct ReplyCodec {
    size_max: u32,
}

impl ReplyCodec {
    pub fn new(size_max: u32) -> ReplyCodec {
        ReplyCodec { size_max: size_max.max(HEADER_BYTES as u32) }
    }
}

impl Default for ReplyCodec {
    fn default() -> Self {
        ReplyCodec::new(HEADER_BYTES as u32 + crate::codec::REPLY_LENGTH_MAX_DEFAULT)
    }
}

impl Decoder for ReplyCodec {
    type Item = ReplyFrame;
    type Error = ReplyFrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<ReplyFrame>, ReplyFrameError> {
        let Some((header, body)) = split_frame(src, self.size_max)? else {
            return Ok(None);
        };
        match header[offset::COMMAND] {
            COMMAND_REPLY => {
                Ok(Some(ReplyFrame::Reply { header: ReplyHeader::decode(&header), body: body.freeze() }))
            }
            COMMAND_EVICTION => EvictionHeader::decode(&header)
                .map(|eviction| Some(ReplyFrame::Eviction(eviction)))
                .ok_or(ReplyFrameError::UnknownEvictionReason(header[offset::EVICTION_REASON])),
            command => Err(ReplyFrameError::UnknownCommand(command)),
        }
    }
}

/// Writes one reply frame: header, then `body`. A result-framed body is
/// wrapped in [`Accepted`] or is a [`Rejected`] by the caller.
pub fn encode_reply(header: &ReplyHeader, body: &dyn WireEncode, dst: &mut BytesMut) {
    let body_bytes = body.encoded_size();
    dst.reserve(HEADER_BYTES + body_bytes);
    header.encode(body_bytes, dst);
    let before = dst.len();
    body.encode(dst);
    debug_assert_eq!(dst.len() - before, body_bytes, "encoded_size disagrees with encode");
}

/// Writes one request frame, stamping `request_checksum` as the SDK does:
/// XXH3 of the body for every operation except NonReplicated (spec §2.4).
pub fn encode_request(header: &RequestHeader, body: &dyn WireEncode, dst: &mut BytesMut) {
    let mut bytes = BytesMut::with_capacity(body.encoded_size());
    body.encode(&mut bytes);
    let mut header = *header;
    header.request_checksum =
        if header.operation == operation::NON_REPLICATED { 0 } else { request_checksum(&bytes) };
    dst.reserve(HEADER_BYTES + bytes.len());
    header.encode(bytes.len(), dst);
    dst.put_slice(&bytes);
}

// ---------------------------------------------------------------------------
// Result section (spec §2.5, §2.6)
// ---------------------------------------------------------------------------

/// A result-framed success: `[count u32 = 0]` then the payload.
pub struct Accepted<'a>(pub &'a dyn WireEncode);

impl WireEncode for Accepted<'_> {
    fn encoded_size(&self) -> usize {
        4 + self.0.encoded_size()
    }
    fn encode(&self, dst: &mut BytesMut) {
        dst.put_u32_le(0);
        self.0.encode(dst);
    }
}

/// A committed business error: `[count u32 = 1][index u32 = 0][code u32]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejected(pub ErrorCode);

impl WireEncode for Rejected {
    fn encoded_size(&self) -> usize {
        12
    }
    fn encode(&self, dst: &mut BytesMut) {
        dst.put_u32_le(1);
        dst.put_u32_le(0);
        dst.put_u32_le(self.0.code());
    }
}

/// Bounds the entries a client will skip in a result section.
const RESULT_ENTRY_BYTES: usize = 8;

/// Reads a result section as the SDK does: `Ok(Ok(payload))` on success,
/// `Ok(Err(code))` for a rejection, `Err` when the section is cut short.
pub fn decode_result(body: &[u8]) -> Result<Result<&[u8], u32>, ErrorCode> {
    let mut reader = Reader::new(body);
    let count = reader.u32()?;
    if count == 0 {
        return Ok(Ok(&body[reader.consumed()..]));
    }
    let entries_bytes = (count as usize).checked_mul(RESULT_ENTRY_BYTES).ok_or(ErrorCode::InvalidCommand)?;
    let entries = reader.take(entries_bytes)?;
    let first = u32::from_le_bytes([entries[4], entries[5], entries[6], entries[7]]);
    if first == 0 { Ok(Ok(&body[reader.consumed()..])) } else { Ok(Err(first)) }
}

// ---------------------------------------------------------------------------
// Register bodies (spec §2.9)
// ---------------------------------------------------------------------------

/// `[protocol_version u32][sdk_name WireName][sdk_version WireName]`, the start
/// of both login bodies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientVersionInfo {
    pub protocol_version: u32,
    pub sdk_name: String,
    pub sdk_version: String,
}

impl ClientVersionInfo {
    fn read(reader: &mut Reader<'_>) -> Result<ClientVersionInfo, ErrorCode> {
        Ok(ClientVersionInfo {
            protocol_version: reader.u32()?,
            sdk_name: reader.wire_name()?,
            sdk_version: reader.wire_name()?,
        })
    }
}

impl WireEncode for ClientVersionInfo {
    fn encoded_size(&self) -> usize {
        4 + 1 + self.sdk_name.len() + 1 + self.sdk_version.len()
    }
    fn encode(&self, dst: &mut BytesMut) {
        dst.put_u32_le(self.protocol_version);
        put_short(dst, &self.sdk_name);
        put_short(dst, &self.sdk_version);
    }
}

impl WireDecode for ClientVersionInfo {
    fn decode(src: &[u8]) -> Result<(Self, usize), ErrorCode> {
        let mut reader = Reader::new(src);
        let info = ClientVersionInfo::read(&mut reader)?;
        Ok((info, reader.consumed()))
    }
}

/// Reads the trailing `[context u32-len][UTF-8]`; length 0 means absent.
fn read_context(reader: &mut Reader<'_>) -> Result<Option<String>, ErrorCode> {
    Ok(Some(reader.long_string()?).filter(|context| !context.is_empty()))
}

fn context_size(context: &Option<String>) -> usize {
    4 + context.as_deref().map_or(0, str::len)
}

/// Password login ("LoginRegister", code 40): `[ClientVersionInfo]`
/// `[username WireName][password u8-len][context u32-len]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginRegister {
    pub client_version: ClientVersionInfo,
    pub username: String,
    pub password: Secret,
    pub context: Option<String>,
}

impl WireEncode for LoginRegister {
    fn encoded_size(&self) -> usize {
        self.client_version.encoded_size()
            + 1
            + self.username.len()
            + 1
            + self.password.len()
            + context_size(&self.context)
    }
    fn encode(&self, dst: &mut BytesMut) {
        self.client_version.encode(dst);
        put_short(dst, &self.username);
        put_short(dst, &self.password);
        put_long(dst, self.context.as_deref().unwrap_or(""));
    }
}

impl WireDecode for LoginRegister {
    fn decode(src: &[u8]) -> Result<(Self, usize), ErrorCode> {
        let mut reader = Reader::new(src);
        let client_version = ClientVersionInfo::read(&mut reader)?;
        let username = reader.wire_name()?;
        let password = Secret::from(reader.short_str()?);
        let context = read_context(&mut reader)?;
        Ok((LoginRegister { client_version, username, password, context }, reader.consumed()))
    }
}

/// PAT login ("LoginRegisterWithPat", code 45): `[ClientVersionInfo]`
/// `[token u8-len][context u32-len]`. The token may be empty on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginRegisterWithPat {
    pub client_version: ClientVersionInfo,
    pub token: Secret,
    pub context: Option<String>,
}

impl WireEncode for LoginRegisterWithPat {
    fn encoded_size(&self) -> usize {
        self.client_version.encoded_size() + 1 + self.token.len() + context_size(&self.context)
    }
    fn encode(&self, dst: &mut BytesMut) {
        self.client_version.encode(dst);
        put_short(dst, &self.token);
        put_long(dst, self.context.as_deref().unwrap_or(""));
    }
}

impl WireDecode for LoginRegisterWithPat {
    fn decode(src: &[u8]) -> Result<(Self, usize), ErrorCode> {
        let mut reader = Reader::new(src);
        let client_version = ClientVersionInfo::read(&mut reader)?;
        let token = Secret::from(reader.short_str()?);
        let context = read_context(&mut reader)?;
        Ok((LoginRegisterWithPat { client_version, token, context }, reader.consumed()))
    }
}

/// The payload of a successful Register reply, after the result section:
/// `[user_id u32][session u64][server_protocol_version u32][server_version WireName]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginRegisterResponse {
    pub user_id: u32,
    /// Must be at least 1: the SDK refuses 0 (14001).
    pub session: u64,
    pub server_protocol_version: u32,
    /// 1–255 bytes, or the SDK fails the login with 4.
    pub server_version: String,
}

impl WireEncode for LoginRegisterResponse {
    fn encoded_size(&self) -> usize {
        4 + 8 + 4 + 1 + self.server_version.len()
    }
    fn encode(&self, dst: &mut BytesMut) {
        debug_assert!(self.session >= 1, "session 0 makes the SDK fail the login");
        debug_assert!(!self.server_version.is_empty(), "server_version must be a WireName");
        dst.put_u32_le(self.user_id);
        dst.put_u64_le(self.session);
        dst.put_u32_le(self.server_protocol_version);
        put_short(dst, &self.server_version);
    }
}

impl WireDecode for LoginRegisterResponse {
    fn decode(src: &[u8]) -> Result<(Self, usize), ErrorCode> {
        let mut reader = Reader::new(src);
        let response = LoginRegisterResponse {
            user_id: reader.u32()?,
            session: reader.u64()?,
            server_protocol_version: reader.u32()?,
            server_version: reader.wire_name()?,
        };
        Ok((response, reader.consumed()))
    }
}

#[cfg(test)]
mod tests;
