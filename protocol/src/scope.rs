//! Token scopes: what a token may be used for.
//!
//! Two kinds, both plain strings on the wire:
//! - **Built-in** scopes gate Latchkey's own commands for a session that
//!   logged in with a token: [`TOKENS_READ`], [`TOKENS_WRITE`], [`ME_READ`]
//!   and [`AUTHORIZE`].
//! - **Resource** scopes are `<type>:<id>:<action>`, defined by the broker
//!   that asks Authorize, e.g. `stream:orders:write`. In a token's scope the
//!   id and the action may be `*` (any); a scope asked for in Authorize is
//!   concrete (no `*`). Each part is 1–64 bytes of `A–Z a–z 0–9 . _ -`.
//!
//! A token with no scopes has full access, as a token made with Iggy's code
//! 42 does. Matching is exact apart from the wildcards: no prefixes, no case
//! folding.

/// Lists the caller's tokens (41, 9101, 9102).
pub const TOKENS_READ: &str = "tokens:read";
/// Creates, changes and removes the caller's tokens (42, 43, 9100, 9103–9109).
pub const TOKENS_WRITE: &str = "tokens:write";
/// GetMe (20).
pub const ME_READ: &str = "me:read";
/// Authorize (9110); the user must also hold the `authorize` permission.
pub const AUTHORIZE: &str = "authorize";

pub const BUILT_IN: &[&str] = &[TOKENS_READ, TOKENS_WRITE, ME_READ, AUTHORIZE];

/// Bytes in one part of a resource scope, at most.
pub const SCOPE_PART_BYTES_MAX: usize = 64;
/// The wildcard, allowed as the id or the action of a granted scope.
pub const WILDCARD: &str = "*";

/// Why a scope string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    #[error("scope {0:?} is neither built-in nor <type>:<id>:<action>")]
    Shape(String),
    #[error("scope {0:?}: each part must be 1-64 bytes of A-Z a-z 0-9 . _ - (or * as id or action)")]
    Part(String),
    #[error("scope {0:?}: a scope asked for must be concrete, without *")]
    Wildcard(String),
}

/// Whether `part` may stand as one part of a scope, not a wildcard: 1–64
/// bytes of `A–Z a–z 0–9 . _ -`. A `<kind>:<name>:<action>` of valid
/// parts is a valid required scope.
pub fn valid_part(part: &str) -> bool {
    (1..=SCOPE_PART_BYTES_MAX).contains(&part.len()) && part.bytes().all(part_byte)
}

/// A byte a scope part may hold: `A–Z a–z 0–9 . _ -`.
fn part_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-')
}

/// Checks a scope a token is granted.
pub fn validate_granted(scope: &str) -> Result<(), ScopeError> {
    if BUILT_IN.contains(&scope) {
        return Ok(());
    }
    let mut parts = scope.split(':');
    let (Some(kind), Some(id), Some(action), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ScopeError::Shape(scope.to_owned()));
    };
    let part_ok = |part: &str, wildcard_ok: bool| valid_part(part) || (wildcard_ok && part == WILDCARD);
    if part_ok(kind, false) && part_ok(id, true) && part_ok(action, true) {
        Ok(())
    } else {
        Err(ScopeError::Part(scope.to_owned()))
    }
}

/// Checks a scope asked for in Authorize: as granted, but without wildcards.
pub fn validate_required(scope: &str) -> Result<(), ScopeError> {
    if is_concrete_resource(scope) {
        return Ok(());
    }
    validate_granted(scope)?;
    if scope.split(':').any(|part| part == WILDCARD) {
        return Err(ScopeError::Wildcard(scope.to_owned()));
    }
    Ok(())
}

/// Whether `scope` is three [`valid_part`]s joined by `:`, in one pass over
/// its bytes: the common case of [`validate_required`], which Authorize
/// runs on every check.
fn is_concrete_resource(scope: &str) -> bool {
    let (mut colons, mut part) = (0, 0);
    for byte in scope.bytes() {
        if byte == b':' {
            if part == 0 {
                return false;
            }
            colons += 1;
            part = 0;
        } else if part_byte(byte) {
            part += 1;
            if part > SCOPE_PART_BYTES_MAX {
                return false;
            }
        } else {
            return false;
        }
    }
    colons == 2 && part > 0
}

/// Whether one granted scope covers a required one. Both must be valid.
pub fn covers(granted: &str, required: &str) -> bool {
    if granted == required {
        return true;
    }
    let mut granted_parts = granted.split(':');
    let mut required_parts = required.split(':');
    for _ in 0..3 {
        match (granted_parts.next(), required_parts.next()) {
            (Some(have), Some(want)) if have == want || (have == WILDCARD && want != WILDCARD) => {}
            _ => return false,
        }
    }
    granted_parts.next().is_none() && required_parts.next().is_none()
}

/// Whether a token with `granted` scopes may do `required`. No scopes means
/// full access.
pub fn allows<S: AsRef<str>>(granted: &[S], required: &str) -> bool {
    granted.is_empty() || granted.iter().any(|have| covers(have.as_ref(), required))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_and_resource_scopes_validate() {
        for scope in
            [TOKENS_READ, TOKENS_WRITE, ME_READ, AUTHORIZE, "stream:orders:write", "topic:*:read", "a:*:*"]
        {
            assert_eq!(validate_granted(scope), Ok(()), "{scope}");
        }
        for scope in ["", "tokens", "a:b", "a:b:c:d", "*:b:c", "a::c", "a:b c:d", "a:b:", "tokens:admin:"] {
            assert!(validate_granted(scope).is_err(), "{scope:?}");
        }
        let long = format!("{}:x:y", "a".repeat(65));
        assert!(matches!(validate_granted(&long), Err(ScopeError::Part(_))));
        assert!(matches!(validate_required("topic:*:read"), Err(ScopeError::Wildcard(_))));
        assert_eq!(validate_required("topic:t1:read"), Ok(()));
    }

    /// Short strings over scope bytes, colons, a wildcard and bytes never
    /// allowed; and three parts near the 64-byte bound.
    const SCOPES: &str = "[ab:*. é]{0,8}|[ab]{1,2}:[ab]{0,2}:?[ab]{0,2}|[ab]{62,66}:[ab]{1,66}:[ab]{0,66}";

    proptest::proptest! {

        /// The one-pass check is exactly "three valid parts".
        #[test]
        fn the_one_pass_check_is_three_valid_parts(scope in SCOPES) {
            let parts: Vec<&str> = scope.split(':').collect();
            let three_valid = parts.len() == 3 && parts.iter().all(|part| valid_part(part));
            proptest::prop_assert_eq!(is_concrete_resource(&scope), three_valid);
        }
    }

    #[test]
    fn wildcards_cover_id_and_action_only() {
        assert!(covers("stream:orders:write", "stream:orders:write"));
        assert!(covers("stream:*:write", "stream:orders:write"));
        assert!(covers("stream:orders:*", "stream:orders:read"));
        assert!(covers("stream:*:*", "stream:x:y"));
        assert!(!covers("stream:*:write", "stream:orders:read"));
        assert!(!covers("stream:orders:write", "stream:order:write"));
        assert!(!covers("topic:*:*", "stream:x:y"));
        assert!(!covers("stream:*:*", TOKENS_READ));
        assert!(!covers(TOKENS_READ, TOKENS_WRITE));
        assert!(covers(TOKENS_READ, TOKENS_READ));
    }

    #[test]
    fn no_scopes_is_full_access() {
        let none: [&str; 0] = [];
        assert!(allows(&none, "stream:x:write"));
        assert!(allows(&none, TOKENS_WRITE));
        assert!(allows(&["stream:x:*"], "stream:x:write"));
        assert!(!allows(&["stream:x:*"], TOKENS_WRITE));
    }
}
