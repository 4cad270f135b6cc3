//! Every body decoder of both framings on arbitrary bytes.
//!
//! Input: `[selector][body]`; the selector picks the body type. Checks (see
//! `latchkey_fuzz::check_body`): no panic, errors are 3 or 4, at most the
//! input is consumed, the value depends only on the consumed bytes, and the
//! value re-encodes to bytes that decode back to it.

#![no_main]

use latchkey_fuzz::{check_body, check_body_round_trip, check_login_response, check_result_section};
use latchkey_protocol::body::{
    ClientDetails, ClusterMetadata, CreatePersonalAccessToken, DeletePersonalAccessToken, Empty,
    GetClusterMetadata, GetMe, GetPersonalAccessTokens, IdentityInfo, LoginUser,
    LoginWithPersonalAccessToken, LogoutUser, PersonalAccessTokenInfo, PersonalAccessTokens, Ping,
    RawPersonalAccessToken,
};
use latchkey_protocol::ext::{
    Authorize, AuthorizeDecision, Count, CreateToken, EditTokenAccess, IssuedToken, ListTokens, RotateToken,
    TokenDetails, TokenPage, TokenSelector, UpdateToken,
};
use latchkey_protocol::vsr::{ClientVersionInfo, LoginRegister, LoginRegisterWithPat};
use libfuzzer_sys::fuzz_target;

/// Number of selector values in use; the selector byte is taken modulo this.
const BODY_KINDS: u8 = 33;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    match selector % BODY_KINDS {
        0 => drop(check_body_round_trip::<Empty>(body)),
        1 => drop(check_body_round_trip::<Ping>(body)),
        2 => drop(check_body_round_trip::<GetClusterMetadata>(body)),
        3 => drop(check_body_round_trip::<GetMe>(body)),
        4 => drop(check_body_round_trip::<LogoutUser>(body)),
        5 => drop(check_body_round_trip::<GetPersonalAccessTokens>(body)),
        6 => drop(check_body_round_trip::<LoginUser>(body)),
        7 => drop(check_body_round_trip::<LoginWithPersonalAccessToken>(body)),
        8 => drop(check_body_round_trip::<DeletePersonalAccessToken>(body)),
        9 => drop(check_body_round_trip::<RawPersonalAccessToken>(body)),
        10 => drop(check_body_round_trip::<CreatePersonalAccessToken>(body)),
        11 => drop(check_body_round_trip::<IdentityInfo>(body)),
        12 => drop(check_body_round_trip::<PersonalAccessTokenInfo>(body)),
        13 => drop(check_body_round_trip::<PersonalAccessTokens>(body)),
        14 => drop(check_body_round_trip::<ClientDetails>(body)),
        15 => drop(check_body_round_trip::<ClusterMetadata>(body)),
        16 => drop(check_body_round_trip::<ClientVersionInfo>(body)),
        17 => {
            // Both login shapes start with ClientVersionInfo.
            if let Some(login) = check_body_round_trip::<LoginRegister>(body) {
                assert_eq!(check_body::<ClientVersionInfo>(body), Some(login.client_version));
            }
        }
        18 => {
            if let Some(login) = check_body_round_trip::<LoginRegisterWithPat>(body) {
                assert_eq!(check_body::<ClientVersionInfo>(body), Some(login.client_version));
            }
        }
        19 => drop(check_login_response(body)),
        20 => drop(check_result_section(body)),
        // Latchkey's extension bodies (codes 9100–9110).
        21 => drop(check_body_round_trip::<TokenSelector>(body)),
        22 => drop(check_body_round_trip::<CreateToken>(body)),
        23 => drop(check_body_round_trip::<IssuedToken>(body)),
        24 => drop(check_body_round_trip::<TokenDetails>(body)),
        25 => drop(check_body_round_trip::<ListTokens>(body)),
        26 => drop(check_body_round_trip::<TokenPage>(body)),
        27 => drop(check_body_round_trip::<UpdateToken>(body)),
        28 => drop(check_body_round_trip::<RotateToken>(body)),
        29 => drop(check_body_round_trip::<Count>(body)),
        30 => drop(check_body_round_trip::<Authorize>(body)),
        31 => drop(check_body_round_trip::<EditTokenAccess>(body)),
        _ => drop(check_body_round_trip::<AuthorizeDecision>(body)),
    }
});
