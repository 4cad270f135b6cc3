//! Request and reply bodies of the legacy framing (spec §1.2–§1.5), one type
//! per body. The same bytes travel in the 0.11 framing (spec §3.1), so these
//! types are the only body codecs Latchkey has.
//!
//! Each type knows its exact encoded size, how to write itself and how to read
//! itself back, returning the number of bytes consumed. [`WireDecode::decode`]
//! accepts a prefix; [`decode_exact`] refuses trailing bytes.

use bytes::{BufMut, BytesMut};

use crate::wire::{Reader, put_long, put_short};
use crate::{ErrorCode, Secret};

/// A body that can be written to the wire.
pub trait WireEncode {
    /// Exactly the number of bytes [`WireEncode::encode`] writes.
    fn encoded_size(&self) -> usize;
    fn encode(&self, dst: &mut BytesMut);
}

/// A body that can be read from the wire.
pub trait WireDecode: Sized {
    /// Reads a value from the start of `src`; returns it and the bytes used.
    fn decode(src: &[u8]) -> Result<(Self, usize), ErrorCode>;
}

/// A request body and the command code it is sent with.
pub trait Command: WireEncode {
    const CODE: u32;
}

/// Decodes a whole body: a missing byte or a byte too many is `InvalidCommand`.
pub fn decode_exact<T: WireDecode>(src: &[u8]) -> Result<T, ErrorCode> {
    let (value, used) = T::decode(src)?;
    if used == src.len() { Ok(value) } else { Err(ErrorCode::InvalidCommand) }
}

/// Encodes a body into a fresh buffer (tests, tools; the server encodes in place).
pub fn encode_to_vec<T: WireEncode>(value: &T) -> Vec<u8> {
    let mut dst = BytesMut::with_capacity(value.encoded_size());
    value.encode(&mut dst);
    debug_assert_eq!(dst.len(), value.encoded_size());
    dst.to_vec()
}

/// An empty body (Ping, Logout, the list and GetMe requests, empty OK replies).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Empty;

impl WireEncode for Empty {
    fn encoded_size(&self) -> usize {
        0
    }
    fn encode(&self, _dst: &mut BytesMut) {}
}

impl WireDecode for Empty {
    fn decode(_src: &[u8]) -> Result<(Self, usize), ErrorCode> {
        Ok((Empty, 0))
    }
}

/// Declares request types whose body is empty.
macro_rules! empty_requests {
    ($( $(#[$doc:meta])* $name:ident = $code:expr; )+) => {$(
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
        pub struct $name;

        impl WireEncode for $name {
            fn encoded_size(&self) -> usize { 0 }
            fn encode(&self, _dst: &mut BytesMut) {}
        }

        impl WireDecode for $name {
            fn decode(_src: &[u8]) -> Result<(Self, usize), ErrorCode> {
                Ok(($name, 0))
            }
        }

        impl Command for $name {
            const CODE: u32 = $code;
        }
    )+};
}

/// Latchkey's extension requests with empty bodies use it too.
pub(crate) use empty_requests;

empty_requests! {
    /// Code 1: liveness check, served before login.
    Ping = crate::codes::PING;
    /// Code 12: the single-node roster the 0.10 `IggyClient` reads after login.
    GetClusterMetadata = crate::codes::GET_CLUSTER_METADATA;
    /// Code 20: the caller's connection details.
    GetMe = crate::codes::GET_ME;
    /// Code 39: ends the session; the connection stays open.
    LogoutUser = crate::codes::LOGOUT_USER;
    /// Code 41: the caller's tokens.
    GetPersonalAccessTokens = crate::codes::GET_PERSONAL_ACCESS_TOKENS;
}

/// Code 38 (spec §1.3): `[username u8-len][password u8-len][version u32-len][context u32-len]`.
///
/// Version and context are optional trailing fields: the body may end after
/// the password or after the version. Username and password may be empty on
/// the wire; their 3–50 / 3–100 bounds are checked by the server (43 / 44).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginUser {
    pub username: String,
    pub password: Secret,
    pub version: Option<String>,
    pub context: Option<String>,
}

impl WireEncode for LoginUser {
    fn encoded_size(&self) -> usize {
        let mut size = 1 + self.username.len() + 1 + self.password.len();
        if self.version.is_some() || self.context.is_some() {
            size += 4 + self.version.as_deref().map_or(0, str::len);
            size += 4 + self.context.as_deref().map_or(0, str::len);
        }
        size
    }

    /// Writes both trailing fields whenever either is present, as the 0.10 SDK
    /// does (version "0.10.0", context of length 0: spec §1.10).
    fn encode(&self, dst: &mut BytesMut) {
        put_short(dst, &self.username);
        put_short(dst, &self.password);
        if self.version.is_some() || self.context.is_some() {
            put_long(dst, self.version.as_deref().unwrap_or(""));
            put_long(dst, self.context.as_deref().unwrap_or(""));
        }
    }
}

impl WireDecode for LoginUser {
    /// A trailing field that is missing, or present with length 0, is `None`
    /// (spec §0.4: "len = 0 means absent").
    fn decode(src: &[u8]) -> Result<(Self, usize), ErrorCode> {
        let mut reader = Reader::new(src);
        let username = reader.short_string()?;
        let password = Secret::from(reader.short_str()?);
        let mut optional = || -> Result<Option<String>, ErrorCode> {
            if reader.is_empty() {
                return Ok(None);
            }
            Ok(Some(reader.long_string()?).filter(|value| !value.is_empty()))
        };
        let version = optional()?;
        let context = optional()?;
        Ok((LoginUser { username, password, version, context }, reader.consumed()))
    }
}

impl Command for LoginUser {
    const CODE: u32 = crate::codes::LOGIN_USER;
}

/// Declares a body that is a single WireName field.
macro_rules! single_name_body {
    ($( $(#[$doc:meta])* $name:ident { $field:ident: $kind:ty } $( = $code:expr )?; )+) => {$(
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct $name {
            pub $field: $kind,
        }

        impl WireEncode for $name {
            fn encoded_size(&self) -> usize {
                1 + self.$field.len()
            }
            fn encode(&self, dst: &mut BytesMut) {
                put_short(dst, &self.$field);
            }
        }

        impl WireDecode for $name {
            fn decode(src: &[u8]) -> Result<(Self, usize), ErrorCode> {
                let mut reader = Reader::new(src);
                let $field = <$kind>::from(reader.wire_name_str()?);
                Ok(($name { $field }, reader.consumed()))
            }
        }

        $(impl Command for $name {
            const CODE: u32 = $code;
        })?
    )+};
}

single_name_body! {
    /// Code 44 (spec §1.3): `[token WireName]`.
    LoginWithPersonalAccessToken { token: Secret } = crate::codes::LOGIN_WITH_PERSONAL_ACCESS_TOKEN;
    /// Code 43 (spec §1.4): `[name WireName]`.
    DeletePersonalAccessToken { name: String } = crate::codes::DELETE_PERSONAL_ACCESS_TOKEN;
    /// Reply to code 42: `[token WireName]`, the raw token, sent exactly once.
    RawPersonalAccessToken { token: Secret };
}

/// Code 42 (spec §1.4): `[name WireName][expiry u64]`, expiry a duration in µs
/// where 0 and `u64::MAX` mean "never" (spec §3.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatePersonalAccessToken {
    pub name: String,
    pub expiry_us: u64,
}

impl WireEncode for CreatePersonalAccessToken {
    fn encoded_size(&self) -> usize {
        1 + self.name.len() + 8
    }
    fn encode(&self, dst: &mut BytesMut) {
        put_short(dst, &self.name);
        dst.put_u64_le(self.expiry_us);
    }
}

impl WireDecode for CreatePersonalAccessToken {
    fn decode(src: &[u8]) -> Result<(Self, usize), ErrorCode> {
        let mut reader = Reader::new(src);
        let name = reader.wire_name()?;
        let expiry_us = reader.u64()?;
        Ok((CreatePersonalAccessToken { name, expiry_us }, reader.consumed()))
    }
}

impl Command for CreatePersonalAccessToken {
    const CODE: u32 = crate::codes::CREATE_PERSONAL_ACCESS_TOKEN;
}

/// Reply to both logins: `[user_id u32]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdentityInfo {
    pub user_id: u32,
}

impl WireEncode for IdentityInfo {
    fn encoded_size(&self) -> usize {
        4
    }
    fn encode(&self, dst: &mut BytesMut) {
        dst.put_u32_le(self.user_id);
    }
}

impl WireDecode for IdentityInfo {
    fn decode(src: &[u8]) -> Result<(Self, usize), ErrorCode> {
        let mut reader = Reader::new(src);
        let user_id = reader.u32()?;
        Ok((IdentityInfo { user_id }, reader.consumed()))
    }
}

/// One entry of the reply to code 41: `[name WireName][expiry_at u64]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersonalAccessTokenInfo {
    pub name: String,
    /// Absolute expiry in µs since the Unix epoch; `None` is sent as 0.
    pub expiry_at_us: Option<u64>,
}

impl WireEncode for PersonalAccessTokenInfo {
    fn encoded_size(&self) -> usize {
        1 + self.name.len() + 8
    }
    fn encode(&self, dst: &mut BytesMut) {
        put_short(dst, &self.name);
        dst.put_u64_le(self.expiry_at_us.unwrap_or(0));
    }
}

impl WireDecode for PersonalAccessTokenInfo {
    fn decode(src: &[u8]) -> Result<(Self, usize), ErrorCode> {
        let mut reader = Reader::new(src);
        let name = reader.wire_name()?;
        let expiry_at_us = Some(reader.u64()?).filter(|&at| at != 0);
        Ok((PersonalAccessTokenInfo { name, expiry_at_us }, reader.consumed()))
    }
}

/// Reply to code 41: entries back to back, no count (spec §1.4).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PersonalAccessTokens(pub Vec<PersonalAccessTokenInfo>);

impl WireEncode for PersonalAccessTokens {
    fn encoded_size(&self) -> usize {
        self.0.iter().map(WireEncode::encoded_size).sum()
    }
    fn encode(&self, dst: &mut BytesMut) {
        for entry in &self.0 {
            entry.encode(dst);
        }
    }
}

impl WireDecode for PersonalAccessTokens {
    fn decode(src: &[u8]) -> Result<(Self, usize), ErrorCode> {
        let mut entries = Vec::new();
        let mut offset = 0;
        while offset < src.len() {
            let (entry, used) = PersonalAccessTokenInfo::decode(&src[offset..])?;
            entries.push(entry);
            offset += used;
        }
        Ok((PersonalAccessTokens(entries), offset))
    }
}

/// Transport value for TCP in [`ClientDetails`].
pub const TRANSPORT_TCP: u8 = 1;

/// Reply to code 20 (spec §1.5):
/// `[client_id u32][user_id u32][transport u8][address u32-len][groups u32]` then
/// `groups × [stream u32][topic u32][group u32]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientDetails {
    pub client_id: u32,
    pub user_id: u32,
    pub transport: u8,
    pub address: String,
    pub consumer_groups: Vec<[u32; 3]>,
}

impl WireEncode for ClientDetails {
    fn encoded_size(&self) -> usize {
        4 + 4 + 1 + 4 + self.address.len() + 4 + 12 * self.consumer_groups.len()
    }
    fn encode(&self, dst: &mut BytesMut) {
        dst.put_u32_le(self.client_id);
        dst.put_u32_le(self.user_id);
        dst.put_u8(self.transport);
        put_long(dst, &self.address);
        let groups = u32::try_from(self.consumer_groups.len()).expect("consumer group count");
        dst.put_u32_le(groups);
        for group in &self.consumer_groups {
            for id in group {
                dst.put_u32_le(*id);
            }
        }
    }
}

impl WireDecode for ClientDetails {
    fn decode(src: &[u8]) -> Result<(Self, usize), ErrorCode> {
        let mut reader = Reader::new(src);
        let client_id = reader.u32()?;
        let user_id = reader.u32()?;
        let transport = reader.u8()?;
        let address = reader.long_string()?;
        let count = reader.u32()?;
        // Bound the allocation by what the body can actually hold.
        if usize::try_from(count).map_or(true, |count| count > reader.remaining() / 12) {
            return Err(ErrorCode::InvalidCommand);
        }
        let mut consumer_groups = Vec::with_capacity(count as usize);
        for _ in 0..count {
            consumer_groups.push([reader.u32()?, reader.u32()?, reader.u32()?]);
        }
        let details = ClientDetails { client_id, user_id, transport, address, consumer_groups };
        Ok((details, reader.consumed()))
    }
}

/// One node of the cluster roster (spec §1.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterNode {
    pub name: String,
    pub ip: String,
    pub tcp_port: u16,
    pub quic_port: u16,
    pub http_port: u16,
    pub websocket_port: u16,
    /// 0 Leader, 1 Follower.
    pub role: u8,
    /// 0 Healthy … 4 Maintenance; the SDKs refuse anything above 4.
    pub status: u8,
}

/// Node role "Leader".
pub const NODE_ROLE_LEADER: u8 = 0;
/// Node status "Healthy".
pub const NODE_STATUS_HEALTHY: u8 = 0;

/// Reply to code 12: `[name u32-len][nodes u32]` then each node
/// `[name u32-len][ip u32-len][tcp u16][quic u16][http u16][ws u16][role u8][status u8]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterMetadata {
    pub name: String,
    pub nodes: Vec<ClusterNode>,
}

impl WireEncode for ClusterMetadata {
    fn encoded_size(&self) -> usize {
        let nodes: usize = self.nodes.iter().map(|n| 4 + n.name.len() + 4 + n.ip.len() + 10).sum();
        4 + self.name.len() + 4 + nodes
    }
    fn encode(&self, dst: &mut BytesMut) {
        put_long(dst, &self.name);
        dst.put_u32_le(u32::try_from(self.nodes.len()).expect("node count"));
        for node in &self.nodes {
            put_long(dst, &node.name);
            put_long(dst, &node.ip);
            dst.put_u16_le(node.tcp_port);
            dst.put_u16_le(node.quic_port);
            dst.put_u16_le(node.http_port);
            dst.put_u16_le(node.websocket_port);
            dst.put_u8(node.role);
            dst.put_u8(node.status);
        }
    }
}

impl WireDecode for ClusterMetadata {
    fn decode(src: &[u8]) -> Result<(Self, usize), ErrorCode> {
        let mut reader = Reader::new(src);
        let name = reader.long_string()?;
        let count = reader.u32()?;
        // A node is at least 18 bytes; refuse counts the body cannot hold.
        if usize::try_from(count).map_or(true, |count| count > reader.remaining() / 18) {
            return Err(ErrorCode::InvalidCommand);
        }
        let mut nodes = Vec::with_capacity(count as usize);
        for _ in 0..count {
            nodes.push(ClusterNode {
                name: reader.long_string()?,
                ip: reader.long_string()?,
                tcp_port: reader.u16()?,
                quic_port: reader.u16()?,
                http_port: reader.u16()?,
                websocket_port: reader.u16()?,
                role: reader.u8()?,
                status: reader.u8()?,
            });
        }
        Ok((ClusterMetadata { name, nodes }, reader.consumed()))
    }
}
