//! A decoded request: the command code plus its body, checked.
//!
//! Decoding comes before any session check (spec §1.6): an unknown code or a
//! malformed body of a served command is refused with 3 or 4 whether or not
//! the connection is logged in.
//!
//! [`Request`] is also the one place that says which requests are token
//! writes and which of those a pipelining connection may start ahead, so the
//! server asks it instead of listing codes of its own.

use crate::body::{
    CreatePersonalAccessToken, DeletePersonalAccessToken, LoginUser, LoginWithPersonalAccessToken,
    decode_exact,
};
use crate::ext::{
    Authorize, CreateToken, DeleteToken, EditTokenAccess, GetToken, ListTokens, RevokeToken, RotateToken,
    UpdateToken,
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
    EditTokenAccess(EditTokenAccess),
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
            codes::EDIT_TOKEN_ACCESS => decode_exact(non_empty()?).map(Request::EditTokenAccess),
            codes::AUTHORIZE => decode_exact(non_empty()?).map(Request::Authorize),
            code if codes::is_iggy_code(code) => Ok(Request::Unserved(code)),
            _ => Err(ErrorCode::InvalidCommand),
        }
    }

    /// Commands served on a connection that is not logged in (spec §1.6).
    pub fn allowed_before_login(&self) -> bool {
        matches!(self, Request::Ping | Request::LoginUser(_) | Request::LoginWithPersonalAccessToken(_))
    }

    /// Whether handling this request creates, changes or removes stored
    /// tokens: 42, 43 and 9100, 9103–9109, the commands the
    /// [`crate::scope::TOKENS_WRITE`] scope gates. A login or an Authorize
    /// that records a token's last use is not a token write.
    pub fn is_token_write(&self) -> bool {
        matches!(
            self,
            Request::CreatePersonalAccessToken(_)
                | Request::DeletePersonalAccessToken(_)
                | Request::CreateToken(_)
                | Request::UpdateToken(_)
                | Request::RevokeToken(_)
                | Request::RotateToken(_)
                | Request::DeleteToken(_)
                | Request::RevokeAllTokens
                | Request::DeleteAllTokens
                | Request::EditTokenAccess(_)
        )
    }

    /// Whether a pipelining connection may queue this request with the log
    /// writer before the previous one commits: a token create or delete (42,
    /// 43, 9100, 9106). Their checks do not depend on an earlier create or
    /// delete's outcome (the writer checks the queued changes in order), and
    /// none of them can end the session. Every such request is also a
    /// [`Request::is_token_write`].
    pub fn may_start_ahead(&self) -> bool {
        matches!(
            self,
            Request::CreatePersonalAccessToken(_)
                | Request::DeletePersonalAccessToken(_)
                | Request::CreateToken(_)
                | Request::DeleteToken(_)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ext::{StatusFilter, TokenSelector};
    use crate::{FieldText, Secret};

    /// A request is moved a few times between its decoding and its answer;
    /// over 128 bytes each move is a `memcpy` call (measured: a 168-byte
    /// `Request` spent more in `memcpy` than the allocations inline fields
    /// saved).
    #[test]
    fn a_request_stays_small_enough_to_move_cheaply() {
        assert!(std::mem::size_of::<Request>() <= 128, "{}", std::mem::size_of::<Request>());
    }

    /// One request of every variant with what the two predicates must say:
    /// `(request, is_token_write, may_start_ahead)`.
    fn every_variant() -> Vec<(Request, bool, bool)> {
        let token = || TokenSelector::Id(7);
        vec![
            (Request::Ping, false, false),
            (Request::GetClusterMetadata, false, false),
            (Request::GetMe, false, false),
            (
                Request::LoginUser(LoginUser {
                    username: "iggy".to_owned(),
                    password: Secret::from("iggy"),
                    version: None,
                    context: None,
                }),
                false,
                false,
            ),
            (Request::LogoutUser, false, false),
            (Request::GetPersonalAccessTokens, false, false),
            (
                Request::CreatePersonalAccessToken(CreatePersonalAccessToken {
                    name: "t".to_owned(),
                    expiry_us: 0,
                }),
                true,
                true,
            ),
            (
                Request::DeletePersonalAccessToken(DeletePersonalAccessToken { name: "t".to_owned() }),
                true,
                true,
            ),
            (
                Request::LoginWithPersonalAccessToken(LoginWithPersonalAccessToken {
                    token: Secret::from("lk_x"),
                }),
                false,
                false,
            ),
            // 200 is Iggy's CreateStream.
            (Request::Unserved(200), false, false),
            (
                Request::CreateToken(CreateToken { name: "t".to_owned(), ..CreateToken::default() }),
                true,
                true,
            ),
            (Request::GetToken(GetToken { token: token() }), false, false),
            (
                Request::ListTokens(ListTokens { filter: StatusFilter::All, after_id: 0, limit: 0 }),
                false,
                false,
            ),
            (
                Request::UpdateToken(UpdateToken { token: token(), name: None, description: None }),
                true,
                false,
            ),
            (Request::RevokeToken(RevokeToken { token: token() }), true, false),
            (
                Request::RotateToken(RotateToken { token: token(), expiry_us: 0, reactivate: false }),
                true,
                false,
            ),
            (Request::DeleteToken(DeleteToken { token: token() }), true, true),
            (Request::RevokeAllTokens, true, false),
            (Request::DeleteAllTokens, true, false),
            (
                Request::EditTokenAccess(EditTokenAccess {
                    token: token(),
                    edits: vec![crate::ext::AccessEdit::ClearScopes],
                }),
                true,
                false,
            ),
            (
                Request::Authorize(Authorize {
                    token: Secret::from("lk_x"),
                    scope: FieldText::EMPTY,
                    address: FieldText::EMPTY,
                }),
                false,
                false,
            ),
        ]
    }

    /// A distinct number per variant. No wildcard arm: a new variant does not
    /// compile until it is given a number here and a row above.
    fn variant_number(request: &Request) -> usize {
        match request {
            Request::Ping => 0,
            Request::GetClusterMetadata => 1,
            Request::GetMe => 2,
            Request::LoginUser(_) => 3,
            Request::LogoutUser => 4,
            Request::GetPersonalAccessTokens => 5,
            Request::CreatePersonalAccessToken(_) => 6,
            Request::DeletePersonalAccessToken(_) => 7,
            Request::LoginWithPersonalAccessToken(_) => 8,
            Request::Unserved(_) => 9,
            Request::CreateToken(_) => 10,
            Request::GetToken(_) => 11,
            Request::ListTokens(_) => 12,
            Request::UpdateToken(_) => 13,
            Request::RevokeToken(_) => 14,
            Request::RotateToken(_) => 15,
            Request::DeleteToken(_) => 16,
            Request::RevokeAllTokens => 17,
            Request::DeleteAllTokens => 18,
            Request::Authorize(_) => 19,
            Request::EditTokenAccess(_) => 20,
        }
    }

    const VARIANTS: usize = 21;

    #[test]
    fn every_variant_is_listed_once() {
        let mut numbers: Vec<usize> =
            every_variant().iter().map(|(request, ..)| variant_number(request)).collect();
        numbers.sort_unstable();
        assert_eq!(numbers, (0..VARIANTS).collect::<Vec<_>>());
    }

    #[test]
    fn token_writes_are_the_ten_commands_that_change_tokens() {
        for (request, write, _) in every_variant() {
            assert_eq!(request.is_token_write(), write, "{request:?}");
        }
        let writes = every_variant().into_iter().filter(|(request, ..)| request.is_token_write()).count();
        assert_eq!(writes, 10);
    }

    #[test]
    fn only_creates_and_deletes_may_start_ahead() {
        for (request, _, ahead) in every_variant() {
            assert_eq!(request.may_start_ahead(), ahead, "{request:?}");
            // Starting ahead is a property of some token writes only.
            if request.may_start_ahead() {
                assert!(request.is_token_write(), "{request:?}");
            }
        }
        let ahead: Vec<u32> = every_variant()
            .into_iter()
            .filter(|(request, ..)| request.may_start_ahead())
            .map(|(request, ..)| match request {
                Request::CreatePersonalAccessToken(_) => codes::CREATE_PERSONAL_ACCESS_TOKEN,
                Request::DeletePersonalAccessToken(_) => codes::DELETE_PERSONAL_ACCESS_TOKEN,
                Request::CreateToken(_) => codes::CREATE_TOKEN,
                Request::DeleteToken(_) => codes::DELETE_TOKEN,
                other => panic!("{other:?} may start ahead"),
            })
            .collect();
        assert_eq!(ahead, [42, 43, 9100, 9106]);
    }
}
