//! [`Secret`]: a password or raw token held in memory.
//!
//! Two promises, both kept by the type rather than by each body that holds
//! one: the bytes are wiped when the value is dropped, and formatting it
//! (`{:?}` or `{}`) never shows the text or its length. Reading the text is
//! explicit: [`Secret::expose`], or through `Deref<Target = str>` where the
//! code hashes or encodes it.

use std::fmt;
use std::ops::Deref;

use zeroize::Zeroizing;

/// A password or raw token: wiped (zeroed) when dropped, redacted when
/// formatted.
///
/// Equality is an ordinary, early-exit string comparison, not a constant-time
/// one. That is safe because Latchkey never decides anything by comparing a
/// presented secret with a stored one: a token is looked up by its keyed hash
/// and a password is checked by Argon2. `==` on secrets exists for tests and
/// for comparing decoded bodies.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    pub fn new(text: String) -> Secret {
        Secret(Zeroizing::new(text))
    }

    /// The text itself, for code that hands it on on purpose (the CLI's
    /// one-time display of a new token, the SDK returning one).
    pub fn expose(&self) -> &str {
        self.0.as_str()
    }
}

impl From<String> for Secret {
    fn from(text: String) -> Secret {
        Secret::new(text)
    }
}

impl From<&str> for Secret {
    fn from(text: &str) -> Secret {
        Secret::new(text.to_owned())
    }
}

impl Deref for Secret {
    type Target = str;

    fn deref(&self) -> &str {
        self.expose()
    }
}

/// Never the text, and never its length: a length narrows a password.
impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// `<redacted>`, so that a secret interpolated into a log line or an error
/// message by mistake leaks nothing. Code that means to print the text calls
/// [`Secret::expose`]; `to_string()` gives `<redacted>` too.
impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad("<redacted>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Request;
    use crate::body::{LoginUser, LoginWithPersonalAccessToken, RawPersonalAccessToken};
    use crate::ext::{Authorize, IssuedToken};
    use crate::vsr::{ClientVersionInfo, LoginRegister, LoginRegisterWithPat};

    const TEXT: &str = "lk_SuperSecretValue0123456789";

    /// Neither the text nor a telling piece of it appears in `shown`.
    fn assert_hidden(shown: &str) {
        assert!(!shown.contains(TEXT), "{shown}");
        assert!(!shown.contains(&TEXT[3..14]), "{shown}");
        assert!(!shown.contains(&TEXT[TEXT.len() - 10..]), "{shown}");
    }

    /// `{:?}` and `{:#?}` of a value that holds [`TEXT`].
    fn assert_debug_hidden(value: &dyn fmt::Debug) {
        assert_hidden(&format!("{value:?}"));
        assert_hidden(&format!("{value:#?}"));
    }

    fn secret() -> Secret {
        Secret::from(TEXT)
    }

    fn client_version() -> ClientVersionInfo {
        ClientVersionInfo {
            protocol_version: 11264,
            sdk_name: "rust-sdk".into(),
            sdk_version: "0.11.0".into(),
        }
    }

    #[test]
    fn formatting_shows_neither_the_text_nor_its_length() {
        assert_eq!(format!("{:?}", secret()), "Secret(<redacted>)");
        assert_eq!(format!("{:#?}", secret()), "Secret(<redacted>)");
        assert_eq!(format!("{}", secret()), "<redacted>");
        assert_eq!(secret().to_string(), "<redacted>");
        // Width and precision apply to the placeholder, never to the text.
        assert_eq!(format!("{:>12}|{:.3}", secret(), secret()), "  <redacted>|<re");
        for text in ["", "a", &"p".repeat(255)] {
            assert_eq!(format!("{:?}", Secret::from(text)), "Secret(<redacted>)");
            assert_eq!(format!("{:>12}", Secret::from(text)), "  <redacted>");
        }
    }

    #[test]
    fn the_text_is_read_only_on_purpose() {
        let secret = secret();
        assert_eq!(secret.expose(), TEXT);
        assert_eq!(&*secret, TEXT);
        assert_eq!(secret.len(), TEXT.len());
        assert_eq!(secret.as_bytes(), TEXT.as_bytes());
        assert_eq!(Secret::new(TEXT.to_owned()), Secret::from(TEXT.to_owned()));
        assert_eq!(secret.clone(), secret);
        assert_ne!(secret, Secret::from("lk_other"));
        assert_eq!(Secret::default().expose(), "");
    }

    #[test]
    fn bodies_that_hold_a_secret_do_not_show_it() {
        let login = LoginUser {
            username: "iggy".to_owned(),
            password: secret(),
            version: Some("0.10.0".to_owned()),
            context: None,
        };
        let pat_login = LoginWithPersonalAccessToken { token: secret() };
        let authorize =
            Authorize { token: secret(), scope: "stream:orders:write".into(), address: "10.1.2.3:5".into() };
        assert_debug_hidden(&login);
        assert_debug_hidden(&pat_login);
        assert_debug_hidden(&RawPersonalAccessToken { token: secret() });
        assert_debug_hidden(&IssuedToken { id: 7, token: secret(), created_at_us: 1, expires_at_us: 0 });
        assert_debug_hidden(&authorize);
        assert_debug_hidden(&LoginRegister {
            client_version: client_version(),
            username: "iggy".to_owned(),
            password: secret(),
            context: Some("ctx".to_owned()),
        });
        assert_debug_hidden(&LoginRegisterWithPat {
            client_version: client_version(),
            token: secret(),
            context: None,
        });
        // Nor through the decoded request that carries one.
        assert_debug_hidden(&Request::LoginUser(login.clone()));
        assert_debug_hidden(&Request::LoginWithPersonalAccessToken(pat_login));
        assert_debug_hidden(&Request::Authorize(authorize.clone()));
        // The fields around the secret still show: they are what a log needs.
        let shown = format!("{login:?} {authorize:?}");
        for visible in ["iggy", "0.10.0", "stream:orders:write", "10.1.2.3:5", "Secret(<redacted>)"] {
            assert!(shown.contains(visible), "{visible} missing from {shown}");
        }
    }
}
