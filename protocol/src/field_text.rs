//! [`FieldText`]: a short request field (Authorize's scope and address)
//! kept inline when it fits, so decoding an Authorize allocates nothing for
//! them.
//!
//! Not for secrets: an inline value is copied whenever it moves, and only a
//! heap buffer can be wiped once for all its moves ([`crate::Secret`] stays
//! on the heap for that reason).

use std::fmt;
use std::ops::Deref;

use arrayvec::ArrayString;

/// Inline room of a [`FieldText`]: with its length and tag it takes 40
/// bytes (a `String` takes 24). Most scopes (`exchange:orders:write`), any
/// IPv4 socket address and short IPv6 ones (`[fd00::1:2]:5672`) fit. A
/// request is moved a few times on its way to an answer, and a move of more
/// than 128 bytes is a call to `memcpy` (measured: 54 bytes of room for each
/// of Authorize's three fields cost more in `memcpy` than it saved).
pub const FIELD_INLINE_BYTES: usize = 32;

/// Text up to [`FIELD_INLINE_BYTES`] inline, on the heap beyond. Made from a
/// `&str` it is copied inline when it fits; made from a `String` it keeps
/// that allocation. Reads as a `str` either way.
#[derive(Clone)]
pub struct FieldText(Repr);

#[derive(Clone)]
enum Repr {
    Inline(ArrayString<FIELD_INLINE_BYTES>),
    Heap(String),
}

impl FieldText {
    pub const EMPTY: FieldText = FieldText(Repr::Inline(ArrayString::new_const()));

    pub fn as_str(&self) -> &str {
        match &self.0 {
            Repr::Inline(text) => text,
            Repr::Heap(text) => text,
        }
    }
}

impl Default for FieldText {
    fn default() -> FieldText {
        FieldText::EMPTY
    }
}

impl From<&str> for FieldText {
    fn from(text: &str) -> FieldText {
        match ArrayString::from(text) {
            Ok(inline) => FieldText(Repr::Inline(inline)),
            Err(_) => FieldText(Repr::Heap(text.to_owned())),
        }
    }
}

impl From<String> for FieldText {
    fn from(text: String) -> FieldText {
        FieldText(Repr::Heap(text))
    }
}

impl Deref for FieldText {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for FieldText {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

/// Equal when the texts are, wherever each is kept.
impl PartialEq for FieldText {
    fn eq(&self, other: &FieldText) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for FieldText {}

impl PartialEq<str> for FieldText {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for FieldText {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<String> for FieldText {
    fn eq(&self, other: &String) -> bool {
        self.as_str() == other.as_str()
    }
}

impl fmt::Debug for FieldText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.as_str().fmt(f)
    }
}

impl fmt::Display for FieldText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.as_str().fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_reads_back_whether_inline_or_on_the_heap() {
        // The longest text that fits, ending in a two-byte character.
        let fits = format!("{}é", "x".repeat(FIELD_INLINE_BYTES - 2));
        assert_eq!(fits.len(), FIELD_INLINE_BYTES);
        let over = format!("{fits}x");
        for text in ["", "a", "stream:orders:write", fits.as_str(), over.as_str()] {
            let borrowed = FieldText::from(text);
            let owned = FieldText::from(text.to_owned());
            assert_eq!(borrowed.as_str(), text);
            assert_eq!(&*owned, text);
            assert_eq!(borrowed, owned);
            assert_eq!(borrowed, text);
            assert_eq!(borrowed, text.to_owned());
            assert_eq!(format!("{borrowed:?}"), format!("{text:?}"));
            assert_eq!(borrowed.clone().to_string(), text);
        }
        assert!(matches!(FieldText::from(fits.as_str()).0, Repr::Inline(_)));
        assert!(matches!(FieldText::from(over.as_str()).0, Repr::Heap(_)));
        assert_eq!(FieldText::default(), "");
        assert_ne!(FieldText::from("a"), FieldText::from("b"));
    }

    #[test]
    fn the_inline_room_fills_the_value() {
        assert_eq!(std::mem::size_of::<FieldText>(), 40);
    }
}
