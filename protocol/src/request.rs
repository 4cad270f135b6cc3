//! A decoded request: the command code plus its body, checked.
//!
//! Decoding comes before any session check (spec §1.6): an unknown code or a
//! malformed body of a served command is refused with 3 or 4 whether or not
//! the connection is logged in.

use crate::body::{
    CreatePersonalAccessToken, DeletePersonalAccessToken, LoginUser, LoginWithPersonalAccessToken,
    decode_exact,
};
use crate::ext::{
    Authorize, CreateToken, DeleteToken, GetToken, ListTokens, RevokeToken, RotateToken, UpdateToken,
};
use crate::{ErrorCode, codes};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Ping,
    GetClusterMetadata,
    GetMe,
    LoginUser(LoginUser),
    LogoutUser,
    GetPersonalAccessTokens,
    CreatePersonalAccessToken(CreatePersonalAccessToken),
    DeletePersonalAccessToken(DeletePersonalAccessToken),
    LoginWithPersonalAccessToken(LoginWithPersonalAccessToken),
    /// A command Iggy defines that Latchkey does not serve; its body is not read.
    Unserved(u32),
    // Latchkey's extensions (codes 9100–9199, legacy framing only).
    CreateToken(CreateToken),
    GetToken(GetToken),
    ListTokens(ListTokens),
    UpdateToken(UpdateToken),
    RevokeToken(RevokeToken),
    RotateToken(RotateToken),
    DeleteToken(DeleteToken),
    RevokeAllTokens,
    DeleteAllTokens,
    Authorize(Authorize),
}

impl Request {
    /// Decodes a legacy request payload for `code`.
    pub fn decode(code: u32, payload: &[u8]) -> Result<Request, ErrorCode> {
        let empty = |request: Request| {
            if payload.is_empty() { Ok(request) } else { Err(ErrorCode::InvalidCommand) }
        };
        // Iggy's decoders refuse an empty body with 3 before reading any field.
        let non_empty = || {
            if payload.is_empty() { Err(ErrorCode::InvalidCommand) } else { Ok(payload) }
        };
        match code {
            codes::PING => empty(Request::Ping),
            codes::GET_CLUSTER_METADATA => empty(Request::GetClusterMetadata),
            codes::GET_ME => empty(Request::GetMe),
            codes::LOGOUT_USER => empty(Request::LogoutUser),
            codes::GET_PERSONAL_ACCESS_TOKENS => empty(Request::GetPersonalAccessTokens),
            codes::LOGIN_USER => decode_exact(non_empty()?).map(Request::LoginUser),
            codes::CREATE_PERSONAL_ACCESS_TOKEN => {
                decode_exact(non_empty()?).map(Request::CreatePersonalAccessToken)
            }
            codes::DELETE_PERSONAL_ACCESS_TOKEN => {
                decode_exact(non_empty()?).map(Request::DeletePersonalAccessToken)
            }
            codes::LOGIN_WITH_PERSONAL_ACCESS_TOKEN => {
                decode_exact(non_empty()?).map(Request::LoginWithPersonalAccessToken)
            }
            codes::CREATE_TOKEN => decode_exact(non_empty()?).map(Request::CreateToken),
            codes::GET_TOKEN => decode_exact(non_empty()?).map(Request::GetToken),
            codes::LIST_TOKENS => decode_exact(non_empty()?).map(Request::ListTokens),
            codes::UPDATE_TOKEN => decode_exact(non_empty()?).map(Request::UpdateToken),
            codes::REVOKE_TOKEN => decode_exact(non_empty()?).map(Request::RevokeToken),
            codes::ROTATE_TOKEN => decode_exact(non_empty()?).map(Request::RotateToken),
            codes::DELETE_TOKEN => decode_exact(non_empty()?).map(Request::DeleteToken),
            codes::REVOKE_ALL_TOKENS => empty(Request::RevokeAllTokens),
            codes::DELETE_ALL_TOKENS => empty(Request::DeleteAllTokens),
            codes::AUTHORIZE => decode_exact(non_empty()?).map(Request::Authorize),
            code if codes::is_iggy_code(code) => Ok(Request::Unserved(code)),
            _ => Err(ErrorCode::InvalidCommand),
        }
    }

    /// Commands served on a connection that is not logged in (spec §1.6).
    pub fn allowed_before_login(&self) -> bool {
        matches!(self, Request::Ping | Request::LoginUser(_) | Request::LoginWithPersonalAccessToken(_))
    }
}
