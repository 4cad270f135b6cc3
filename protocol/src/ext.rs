//! Latchkey's extension commands: the full token lifecycle and Authorize.
//!
//! They travel in the legacy framing only (`[length][code][payload]`
//! requests, `[status][length][payload]` replies), on the same port as the
//! Iggy commands, with codes in [`crate::codes::EXTENSION_CODES`], a range
//! Iggy does not use. `docs/protocol.md` shows every body byte by byte.
//!
//! Encodings beyond spec §0.4's primitives:
//! - **Text16**: `[len u16][UTF-8]`, `len` 0–65535 (descriptions);
//! - **Text8**: `[len u8][UTF-8]`, `len` 0–255 (an optional string, e.g. an
//!   address; 0 means absent);
//! - **List8**: `[count u8]` then `count` WireNames (scopes, networks);
//! - **TokenSelector**: `[1 u8][id u64]` or `[2 u8][name WireName]`.
//!
//! Timestamps are µs since the Unix epoch and 0 means "never" / "none".

use std::fmt;

use bytes::{BufMut, BytesMut};

use crate::body::{Command, WireDecode, WireEncode, empty_requests};
use crate::codes;
use crate::wire::{Reader, put_short};
use crate::{ErrorCode, FieldText, Secret};

/// Expiry value meaning "the server's default lifetime" in [`CreateToken`]
/// (and in Iggy's code 42).
pub const EXPIRY_SERVER_DEFAULT: u64 = 0;
/// Expiry value meaning "never expires".
pub const EXPIRY_NEVER: u64 = u64::MAX;
/// Expiry value meaning "keep the current expiry" in [`RotateToken`].
pub const EXPIRY_KEEP: u64 = 0;

/// Items a List8 can carry at most on the wire.
pub const LIST8_ITEMS_MAX: usize = u8::MAX as usize;

fn text16(reader: &mut Reader<'_>) -> Result<String, ErrorCode> {
    let len = reader.u16()?;
    reader.str(usize::from(len)).map(str::to_owned)
}

fn put_text16(dst: &mut BytesMut, value: &str) {
    let len = u16::try_from(value.len()).expect("Text16 longer than 65535 bytes");
    dst.put_u16_le(len);
    dst.put_slice(value.as_bytes());
}

fn list8(reader: &mut Reader<'_>) -> Result<Vec<String>, ErrorCode> {
    let count = reader.u8()?;
    (0..count).map(|_| reader.wire_name()).collect()
}

fn put_list8(dst: &mut BytesMut, items: &[String]) {
    let count = u8::try_from(items.len()).expect("List8 with more than 255 items");
    dst.put_u8(count);
    for item in items {
        put_short(dst, item);
    }
}

fn list8_size(items: &[String]) -> usize {
    1 + items.iter().map(|item| 1 + item.len()).sum::<usize>()
}

/// Which token a command is about: the caller's token with this id or name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSelector {
    Id(u64),
    Name(String),
}

const SELECT_BY_ID: u8 = 1;
const SELECT_BY_NAME: u8 = 2;

impl WireEncode for TokenSelector {
    fn encoded_size(&self) -> usize {
        match self {
            TokenSelector::Id(_) => 1 + 8,
            TokenSelector::Name(name) => 1 + 1 + name.len(),
        }
    }
    fn encode(&self, dst: &mut BytesMut) {
        match self {
            TokenSelector::Id(id) => {
                dst.put_u8(SELECT_BY_ID);
                dst.put_u64_le(*id);
            }
            TokenSelector::Name(name) => {
                dst.put_u8(SELECT_BY_NAME);
                put_short(dst, name);
            }
        }
    }
}

impl TokenSelector {
    fn read(reader: &mut Reader<'_>) -> Result<TokenSelector, ErrorCode> {
        match reader.u8()? {
            SELECT_BY_ID => Ok(TokenSelector::Id(reader.u64()?)),
            SELECT_BY_NAME => Ok(TokenSelector::Name(reader.wire_name()?)),
            _ => Err(ErrorCode::InvalidFormat),
        }
    }
}

impl WireDecode for TokenSelector {
    fn decode(src: &[u8]) -> Result<(Self, usize), ErrorCode> {
        let mut reader = Reader::new(src);
        let selector = TokenSelector::read(&mut reader)?;
        Ok((selector, reader.consumed()))
    }
}

impl From<u64> for TokenSelector {
    fn from(id: u64) -> TokenSelector {
        TokenSelector::Id(id)
    }
}

impl From<&str> for TokenSelector {
    fn from(name: &str) -> TokenSelector {
        TokenSelector::Name(name.to_owned())
    }
}

impl From<String> for TokenSelector {
    fn from(name: String) -> TokenSelector {
        TokenSelector::Name(name)
    }
}

impl fmt::Display for TokenSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenSelector::Id(id) => write!(f, "id {id}"),
            TokenSelector::Name(name) => write!(f, "name {name:?}"),
        }
    }
}

/// Declares a request whose body is exactly one [`TokenSelector`].
macro_rules! selector_requests {
    ($( $(#[$doc:meta])* $name:ident = $code:expr; )+) => {$(
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct $name {
            pub token: TokenSelector,
        }

        impl WireEncode for $name {
            fn encoded_size(&self) -> usize {
                self.token.encoded_size()
            }
            fn encode(&self, dst: &mut BytesMut) {
                self.token.encode(dst);
            }
        }

        impl WireDecode for $name {
            fn decode(src: &[u8]) -> Result<(Self, usize), ErrorCode> {
                let (token, used) = TokenSelector::decode(src)?;
                Ok(($name { token }, used))
            }
        }

        impl Command for $name {
            const CODE: u32 = $code;
        }
    )+};
}

selector_requests! {
    /// Code 9101: one of the caller's tokens. Reply: [`TokenDetails`].
    GetToken = codes::GET_TOKEN;
    /// Code 9104: the token stays listed (status revoked) but can no longer
    /// log in or pass Authorize. Reply: empty. Revoking a revoked token is OK
    /// and keeps its first `revoked_at`.
    RevokeToken = codes::REVOKE_TOKEN;
    /// Code 9106: the token is gone. Reply: empty.
    DeleteToken = codes::DELETE_TOKEN;
}

empty_requests! {
    /// Code 9107: revokes every active token of the caller. Reply: [`Count`].
    RevokeAllTokens = codes::REVOKE_ALL_TOKENS;
    /// Code 9108: deletes every token of the caller. Reply: [`Count`].
    DeleteAllTokens = codes::DELETE_ALL_TOKENS;
}

/// Code 9100: `[name WireName][description Text16][expiry u64][scopes List8][networks List8]`.
///
/// `expiry_us` is a lifetime in µs: [`EXPIRY_SERVER_DEFAULT`] (0) takes the
/// server's default, [`EXPIRY_NEVER`] asks for none. No scopes means full
/// access (as a token made with Iggy's code 42); no networks means any
/// address. Reply: [`IssuedToken`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CreateToken {
    pub name: String,
    pub description: String,
    pub expiry_us: u64,
    pub scopes: Vec<String>,
    pub networks: Vec<String>,
}

impl WireEncode for CreateToken {
    fn encoded_size(&self) -> usize {
        1 + self.name.len()
            + 2
            + self.description.len()
            + 8
            + list8_size(&self.scopes)
            + list8_size(&self.networks)
    }
    fn encode(&self, dst: &mut BytesMut) {
        put_short(dst, &self.name);
        put_text16(dst, &self.description);
        dst.put_u64_le(self.expiry_us);
        put_list8(dst, &self.scopes);
        put_list8(dst, &self.networks);
    }
}

impl WireDecode for CreateToken {
    fn decode(src: &[u8]) -> Result<(Self, usize), ErrorCode> {
        let mut reader = Reader::new(src);
        let name = reader.wire_name()?;
        let description = text16(&mut reader)?;
        let expiry_us = reader.u64()?;
        let scopes = list8(&mut reader)?;
        let networks = list8(&mut reader)?;
        Ok((CreateToken { name, description, expiry_us, scopes, networks }, reader.consumed()))
    }
}

impl Command for CreateToken {
    const CODE: u32 = codes::CREATE_TOKEN;
}

/// Reply to create (9100) and rotate (9105):
/// `[id u64][token WireName][created_at u64][expires_at u64]` (0 = never).
/// The only body that ever carries a raw token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedToken {
    pub id: u64,
    pub token: Secret,
    pub created_at_us: u64,
    pub expires_at_us: u64,
}

impl WireEncode for IssuedToken {
    fn encoded_size(&self) -> usize {
        8 + 1 + self.token.len() + 8 + 8
    }
    fn encode(&self, dst: &mut BytesMut) {
        dst.put_u64_le(self.id);
        put_short(dst, &self.token);
        dst.put_u64_le(self.created_at_us);
        dst.put_u64_le(self.expires_at_us);
    }
}

impl WireDecode for IssuedToken {
    fn decode(src: &[u8]) -> Result<(Self, usize), ErrorCode> {
        let mut reader = Reader::new(src);
        let id = reader.u64()?;
        let token = Secret::from(reader.wire_name_str()?);
        let created_at_us = reader.u64()?;
        let expires_at_us = reader.u64()?;
        Ok((IssuedToken { id, token, created_at_us, expires_at_us }, reader.consumed()))
    }
}

/// A token's status as reported; "expired" is derived from the clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum TokenStatus {
    Active = 1,
    Revoked = 2,
    Expired = 3,
}

impl TokenStatus {
    pub fn from_u8(value: u8) -> Option<TokenStatus> {
        match value {
            1 => Some(TokenStatus::Active),
            2 => Some(TokenStatus::Revoked),
            3 => Some(TokenStatus::Expired),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TokenStatus::Active => "active",
            TokenStatus::Revoked => "revoked",
            TokenStatus::Expired => "expired",
        }
    }
}

/// Everything about a token but its secret. Reply to 9101; entries of 9102.
///
/// `[id u64][name WireName][description Text16][status u8][created_at u64]`
/// `[expires_at u64][revoked_at u64][last_used_at u64][last_used_address Text8]`
/// `[scopes List8][networks List8]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenDetails {
    pub id: u64,
    pub name: String,
    pub description: String,
    pub status: TokenStatus,
    pub created_at_us: u64,
    pub expires_at_us: u64,
    pub revoked_at_us: u64,
    pub last_used_at_us: u64,
    /// `ip:port` of the last login or Authorize; empty if never used.
    pub last_used_address: String,
    /// Empty means full access.
    pub scopes: Vec<String>,
    /// Empty means any address.
    pub networks: Vec<String>,
}

impl WireEncode for TokenDetails {
    fn encoded_size(&self) -> usize {
        8 + 1
            + self.name.len()
            + 2
            + self.description.len()
            + 1
            + 8 * 4
            + 1
            + self.last_used_address.len()
            + list8_size(&self.scopes)
            + list8_size(&self.networks)
    }
    fn encode(&self, dst: &mut BytesMut) {
        dst.put_u64_le(self.id);
        put_short(dst, &self.name);
        put_text16(dst, &self.description);
        dst.put_u8(self.status as u8);
        dst.put_u64_le(self.created_at_us);
        dst.put_u64_le(self.expires_at_us);
        dst.put_u64_le(self.revoked_at_us);
        dst.put_u64_le(self.last_used_at_us);
        put_short(dst, &self.last_used_address);
        put_list8(dst, &self.scopes);
        put_list8(dst, &self.networks);
    }
}

impl WireDecode for TokenDetails {
    fn decode(src: &[u8]) -> Result<(Self, usize), ErrorCode> {
        let mut reader = Reader::new(src);
        let id = reader.u64()?;
        let name = reader.wire_name()?;
        let description = text16(&mut reader)?;
        let status = TokenStatus::from_u8(reader.u8()?).ok_or(ErrorCode::InvalidFormat)?;
        let created_at_us = reader.u64()?;
        let expires_at_us = reader.u64()?;
        let revoked_at_us = reader.u64()?;
        let last_used_at_us = reader.u64()?;
        let last_used_address = reader.short_string()?;
        let scopes = list8(&mut reader)?;
        let networks = list8(&mut reader)?;
        let details = TokenDetails {
            id,
            name,
            description,
            status,
            created_at_us,
            expires_at_us,
            revoked_at_us,
            last_used_at_us,
            last_used_address,
            scopes,
            networks,
        };
        Ok((details, reader.consumed()))
    }
}

/// Which tokens [`ListTokens`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(u8)]
pub enum StatusFilter {
    #[default]
    All = 0,
    Active = 1,
    Revoked = 2,
    Expired = 3,
}

impl StatusFilter {
    pub fn from_u8(value: u8) -> Option<StatusFilter> {
        match value {
            0 => Some(StatusFilter::All),
            1 => Some(StatusFilter::Active),
            2 => Some(StatusFilter::Revoked),
            3 => Some(StatusFilter::Expired),
            _ => None,
        }
    }

    pub fn admits(self, status: TokenStatus) -> bool {
        match self {
            StatusFilter::All => true,
            StatusFilter::Active => status == TokenStatus::Active,
            StatusFilter::Revoked => status == TokenStatus::Revoked,
            StatusFilter::Expired => status == TokenStatus::Expired,
        }
    }
}

/// Code 9102: `[filter u8][after_id u64][limit u32]`.
///
/// Tokens come in ascending id order, starting after `after_id` (0 = from
/// the start), at most `limit` of them (0 = the server's page maximum; a
/// larger limit is capped to it). Reply: [`TokenPage`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ListTokens {
    pub filter: StatusFilter,
    pub after_id: u64,
    pub limit: u32,
}

impl WireEncode for ListTokens {
    fn encoded_size(&self) -> usize {
        1 + 8 + 4
    }
    fn encode(&self, dst: &mut BytesMut) {
        dst.put_u8(self.filter as u8);
        dst.put_u64_le(self.after_id);
        dst.put_u32_le(self.limit);
    }
}

impl WireDecode for ListTokens {
    fn decode(src: &[u8]) -> Result<(Self, usize), ErrorCode> {
        let mut reader = Reader::new(src);
        let filter = StatusFilter::from_u8(reader.u8()?).ok_or(ErrorCode::InvalidFormat)?;
        let after_id = reader.u64()?;
        let limit = reader.u32()?;
        Ok((ListTokens { filter, after_id, limit }, reader.consumed()))
    }
}

impl Command for ListTokens {
    const CODE: u32 = codes::LIST_TOKENS;
}

/// Reply to 9102: `[count u32][next_after_id u64][count × TokenDetails]`.
/// `next_after_id` is the `after_id` of the next page, 0 when this is the last.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TokenPage {
    pub tokens: Vec<TokenDetails>,
    pub next_after_id: u64,
}

impl WireEncode for TokenPage {
    fn encoded_size(&self) -> usize {
        4 + 8 + self.tokens.iter().map(WireEncode::encoded_size).sum::<usize>()
    }
    fn encode(&self, dst: &mut BytesMut) {
        let count = u32::try_from(self.tokens.len()).expect("page longer than u32::MAX");
        dst.put_u32_le(count);
        dst.put_u64_le(self.next_after_id);
        for token in &self.tokens {
            token.encode(dst);
        }
    }
}

impl WireDecode for TokenPage {
    fn decode(src: &[u8]) -> Result<(Self, usize), ErrorCode> {
        let mut reader = Reader::new(src);
        let count = reader.u32()?;
        let next_after_id = reader.u64()?;
        let mut offset = reader.consumed();
        // Each entry is at least 48 bytes: never reserve for more than fit.
        let mut tokens = Vec::with_capacity((count as usize).min(src.len() / 48));
        for _ in 0..count {
            let (token, used) = TokenDetails::decode(&src[offset..])?;
            tokens.push(token);
            offset += used;
        }
        Ok((TokenPage { tokens, next_after_id }, offset))
    }
}

const UPDATE_NAME: u8 = 0b01;
const UPDATE_DESCRIPTION: u8 = 0b10;

/// Code 9103: `[selector][fields u8][name WireName if bit 0][description Text16 if bit 1]`.
/// Other bits must be 0. Reply: empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateToken {
    pub token: TokenSelector,
    pub name: Option<String>,
    pub description: Option<String>,
}

impl WireEncode for UpdateToken {
    fn encoded_size(&self) -> usize {
        self.token.encoded_size()
            + 1
            + self.name.as_ref().map_or(0, |name| 1 + name.len())
            + self.description.as_ref().map_or(0, |text| 2 + text.len())
    }
    fn encode(&self, dst: &mut BytesMut) {
        self.token.encode(dst);
        let mut fields = 0;
        if self.name.is_some() {
            fields |= UPDATE_NAME;
        }
        if self.description.is_some() {
            fields |= UPDATE_DESCRIPTION;
        }
        dst.put_u8(fields);
        if let Some(name) = &self.name {
            put_short(dst, name);
        }
        if let Some(description) = &self.description {
            put_text16(dst, description);
        }
    }
}

impl WireDecode for UpdateToken {
    fn decode(src: &[u8]) -> Result<(Self, usize), ErrorCode> {
        let mut reader = Reader::new(src);
        let token = TokenSelector::read(&mut reader)?;
        let fields = reader.u8()?;
        if fields & !(UPDATE_NAME | UPDATE_DESCRIPTION) != 0 {
            return Err(ErrorCode::InvalidFormat);
        }
        let name = if fields & UPDATE_NAME != 0 { Some(reader.wire_name()?) } else { None };
        let description = if fields & UPDATE_DESCRIPTION != 0 { Some(text16(&mut reader)?) } else { None };
        Ok((UpdateToken { token, name, description }, reader.consumed()))
    }
}

impl Command for UpdateToken {
    const CODE: u32 = codes::UPDATE_TOKEN;
}

/// RotateToken's flag bit 0: the token may be revoked, and the rotation
/// brings it back.
const ROTATE_REACTIVATE: u8 = 0b1;

/// Code 9105: `[selector][expiry u64][flags u8, optional]`: a new secret for
/// the same id, name, scopes and networks; the old secret stops working at
/// once. `expiry_us` is [`EXPIRY_KEEP`] (0, keep the current expiry),
/// [`EXPIRY_NEVER`], or a new lifetime from now. Reply: [`IssuedToken`].
///
/// `flags` came later: a body that ends after the expiry (every request
/// before it) means flags 0, and the encoder writes the byte only when a
/// flag is set, so a plain rotate is the same bytes as ever. Bit 0,
/// `reactivate`, lets the rotation bring a revoked token back; without it a
/// revoked token is refused (20003), as it always was. Other bits must be 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotateToken {
    pub token: TokenSelector,
    pub expiry_us: u64,
    /// Bit 0 of the flags: a revoked token may be rotated, which clears its
    /// revocation.
    pub reactivate: bool,
}

impl WireEncode for RotateToken {
    fn encoded_size(&self) -> usize {
        self.token.encoded_size() + 8 + usize::from(self.reactivate)
    }
    fn encode(&self, dst: &mut BytesMut) {
        self.token.encode(dst);
        dst.put_u64_le(self.expiry_us);
        if self.reactivate {
            dst.put_u8(ROTATE_REACTIVATE);
        }
    }
}

impl WireDecode for RotateToken {
    fn decode(src: &[u8]) -> Result<(Self, usize), ErrorCode> {
        let mut reader = Reader::new(src);
        let token = TokenSelector::read(&mut reader)?;
        let expiry_us = reader.u64()?;
        let flags = if reader.is_empty() { 0 } else { reader.u8()? };
        if flags & !ROTATE_REACTIVATE != 0 {
            return Err(ErrorCode::InvalidFormat);
        }
        let reactivate = flags & ROTATE_REACTIVATE != 0;
        Ok((RotateToken { token, expiry_us, reactivate }, reader.consumed()))
    }
}

impl Command for RotateToken {
    const CODE: u32 = codes::ROTATE_TOKEN;
}

/// One change to a token's scopes or networks in [`EditTokenAccess`]:
/// `[op u8]`, then `[item WireName]` for an add or a remove.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessEdit {
    /// Op 1: a scope to grant (kept once if the token has it already).
    AddScope(String),
    /// Op 2: a scope to take away (nothing if the token does not have it).
    RemoveScope(String),
    /// Op 3: every scope goes. A token with no scopes has full access.
    ClearScopes,
    /// Op 4: a network (address or CIDR) to admit.
    AddNetwork(String),
    /// Op 5: a network to stop admitting, compared in its normal form.
    RemoveNetwork(String),
    /// Op 6: every network goes. A token with no networks admits any address.
    ClearNetworks,
}

const EDIT_ADD_SCOPE: u8 = 1;
const EDIT_REMOVE_SCOPE: u8 = 2;
const EDIT_CLEAR_SCOPES: u8 = 3;
const EDIT_ADD_NETWORK: u8 = 4;
const EDIT_REMOVE_NETWORK: u8 = 5;
const EDIT_CLEAR_NETWORKS: u8 = 6;

impl AccessEdit {
    fn op(&self) -> u8 {
        match self {
            AccessEdit::AddScope(_) => EDIT_ADD_SCOPE,
            AccessEdit::RemoveScope(_) => EDIT_REMOVE_SCOPE,
            AccessEdit::ClearScopes => EDIT_CLEAR_SCOPES,
            AccessEdit::AddNetwork(_) => EDIT_ADD_NETWORK,
            AccessEdit::RemoveNetwork(_) => EDIT_REMOVE_NETWORK,
            AccessEdit::ClearNetworks => EDIT_CLEAR_NETWORKS,
        }
    }

    /// The scope or network an add or a remove names.
    pub fn item(&self) -> Option<&str> {
        match self {
            AccessEdit::AddScope(item)
            | AccessEdit::RemoveScope(item)
            | AccessEdit::AddNetwork(item)
            | AccessEdit::RemoveNetwork(item) => Some(item),
            AccessEdit::ClearScopes | AccessEdit::ClearNetworks => None,
        }
    }

    fn read(reader: &mut Reader<'_>) -> Result<AccessEdit, ErrorCode> {
        Ok(match reader.u8()? {
            EDIT_ADD_SCOPE => AccessEdit::AddScope(reader.wire_name()?),
            EDIT_REMOVE_SCOPE => AccessEdit::RemoveScope(reader.wire_name()?),
            EDIT_CLEAR_SCOPES => AccessEdit::ClearScopes,
            EDIT_ADD_NETWORK => AccessEdit::AddNetwork(reader.wire_name()?),
            EDIT_REMOVE_NETWORK => AccessEdit::RemoveNetwork(reader.wire_name()?),
            EDIT_CLEAR_NETWORKS => AccessEdit::ClearNetworks,
            _ => return Err(ErrorCode::InvalidFormat),
        })
    }
}

/// Edits one request may carry at most: its count travels as a u8.
pub const ACCESS_EDITS_MAX: usize = u8::MAX as usize;

/// Code 9109: `[selector][count u8][edit × count]`, each edit an
/// [`AccessEdit`]: changes the scopes and networks of an existing token,
/// applied in order to what the token has when the change commits. Reply:
/// empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EditTokenAccess {
    pub token: TokenSelector,
    pub edits: Vec<AccessEdit>,
}

impl WireEncode for EditTokenAccess {
    fn encoded_size(&self) -> usize {
        self.token.encoded_size()
            + 1
            + self.edits.iter().map(|edit| 1 + edit.item().map_or(0, |item| 1 + item.len())).sum::<usize>()
    }
    fn encode(&self, dst: &mut BytesMut) {
        self.token.encode(dst);
        let count = u8::try_from(self.edits.len()).expect("more than 255 access edits");
        dst.put_u8(count);
        for edit in &self.edits {
            dst.put_u8(edit.op());
            if let Some(item) = edit.item() {
                put_short(dst, item);
            }
        }
    }
}

impl WireDecode for EditTokenAccess {
    fn decode(src: &[u8]) -> Result<(Self, usize), ErrorCode> {
        let mut reader = Reader::new(src);
        let token = TokenSelector::read(&mut reader)?;
        let count = reader.u8()?;
        let edits = (0..count).map(|_| AccessEdit::read(&mut reader)).collect::<Result<_, _>>()?;
        Ok((EditTokenAccess { token, edits }, reader.consumed()))
    }
}

impl Command for EditTokenAccess {
    const CODE: u32 = codes::EDIT_TOKEN_ACCESS;
}

/// Reply to 9107 and 9108: `[count u32]`, the tokens affected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Count {
    pub count: u32,
}

impl WireEncode for Count {
    fn encoded_size(&self) -> usize {
        4
    }
    fn encode(&self, dst: &mut BytesMut) {
        dst.put_u32_le(self.count);
    }
}

impl WireDecode for Count {
    fn decode(src: &[u8]) -> Result<(Self, usize), ErrorCode> {
        let mut reader = Reader::new(src);
        let count = reader.u32()?;
        Ok((Count { count }, reader.consumed()))
    }
}

/// Code 9110: `[token WireName][scope Text8][address Text8]`.
///
/// Asked by a broker holding the `authorize` permission about a token one of
/// its clients presented. An empty `scope` checks the token only; an empty
/// `address` is "unknown", which a token limited to networks is denied for.
/// Reply: [`AuthorizeDecision`] with status 0 whether allowed or denied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorize {
    pub token: Secret,
    pub scope: FieldText,
    pub address: FieldText,
}

impl WireEncode for Authorize {
    fn encoded_size(&self) -> usize {
        1 + self.token.len() + 1 + self.scope.len() + 1 + self.address.len()
    }
    fn encode(&self, dst: &mut BytesMut) {
        put_short(dst, &self.token);
        put_short(dst, &self.scope);
        put_short(dst, &self.address);
    }
}

impl WireDecode for Authorize {
    fn decode(src: &[u8]) -> Result<(Self, usize), ErrorCode> {
        let mut reader = Reader::new(src);
        let token = Secret::from(reader.wire_name_str()?);
        let scope = FieldText::from(reader.short_str()?);
        let address = FieldText::from(reader.short_str()?);
        Ok((Authorize { token, scope, address }, reader.consumed()))
    }
}

impl Command for Authorize {
    const CODE: u32 = codes::AUTHORIZE;
}

/// Why Authorize said no. `Allowed` (0) when it said yes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Decision {
    Allowed = 0,
    /// Malformed, or no such token.
    Unknown = 1,
    Expired = 2,
    Revoked = 3,
    /// The token's scopes do not cover the scope asked for.
    Scope = 4,
    /// The address is outside the token's networks, or was not given.
    Network = 5,
    /// The token's owner is marked inactive.
    InactiveUser = 6,
}

impl Decision {
    pub fn from_u8(value: u8) -> Option<Decision> {
        match value {
            0 => Some(Decision::Allowed),
            1 => Some(Decision::Unknown),
            2 => Some(Decision::Expired),
            3 => Some(Decision::Revoked),
            4 => Some(Decision::Scope),
            5 => Some(Decision::Network),
            6 => Some(Decision::InactiveUser),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allowed => "allowed",
            Decision::Unknown => "unknown",
            Decision::Expired => "expired",
            Decision::Revoked => "revoked",
            Decision::Scope => "scope",
            Decision::Network => "network",
            Decision::InactiveUser => "inactive_user",
        }
    }
}

/// Reply to 9110: `[decision u8][user_id u32][username Text8][token_id u64][expires_at u64]`.
/// For `Unknown` every other field is zero or empty; otherwise they name the
/// token that was found, even when it was denied.
///
/// `N` holds the username: a `String` where it is decoded (the SDK), any
/// text where it is encoded (the server copies it into a fixed buffer, so
/// an Authorize call allocates nothing for it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizeDecision<N = String> {
    pub decision: Decision,
    pub user_id: u32,
    pub username: N,
    pub token_id: u64,
    pub expires_at_us: u64,
}

impl<N> AuthorizeDecision<N> {
    pub fn allowed(&self) -> bool {
        self.decision == Decision::Allowed
    }
}

impl<N: AsRef<str>> WireEncode for AuthorizeDecision<N> {
    fn encoded_size(&self) -> usize {
        1 + 4 + 1 + self.username.as_ref().len() + 8 + 8
    }
    fn encode(&self, dst: &mut BytesMut) {
        dst.put_u8(self.decision as u8);
        dst.put_u32_le(self.user_id);
        put_short(dst, self.username.as_ref());
        dst.put_u64_le(self.token_id);
        dst.put_u64_le(self.expires_at_us);
    }
}

impl WireDecode for AuthorizeDecision {
    fn decode(src: &[u8]) -> Result<(Self, usize), ErrorCode> {
        let mut reader = Reader::new(src);
        let decision = Decision::from_u8(reader.u8()?).ok_or(ErrorCode::InvalidFormat)?;
        let user_id = reader.u32()?;
        let username = reader.short_string()?;
        let token_id = reader.u64()?;
        let expires_at_us = reader.u64()?;
        Ok((AuthorizeDecision { decision, user_id, username, token_id, expires_at_us }, reader.consumed()))
    }
}
