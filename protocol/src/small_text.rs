//! [`SmallText`]: a string kept inline when it is short, so decoding the
//! hot requests' fields (a token, Authorize's scope and address) takes no
//! allocation.
//!
//! The inline room is a parameter because size matters both ways: every
//! request is moved a few times on its way to an answer, and a move of more
//! than 128 bytes is a call to `memcpy` rather than a few vector stores.
//! A measured Authorize with 54 bytes inline for each of its three fields
//! (a 168-byte `Request`) spent more in `memcpy` than the allocations it
//! saved. So a secret gets room for a token ([`crate::Secret`]), and a short
//! field ([`FieldText`]) a third more than a `String`.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;

use zeroize::Zeroize;

/// Inline room of a [`FieldText`]: with its length and tag it takes 32
/// bytes (a `String` takes 24). Most scopes (`exchange:orders:write`), any
/// IPv4 socket address and short IPv6 ones (`[fd00::1:2]:5672`) fit.
pub const FIELD_INLINE_BYTES: usize = 30;

/// A short request field kept inline when it fits: Authorize's scope and
/// address.
pub type FieldText = SmallText<FIELD_INLINE_BYTES>;

/// A string: inline up to `N` bytes (at most 255), on the heap beyond.
/// Made from a `&str` it is copied inline when it fits; made from a `String`
/// it keeps that allocation. Reads as a `str` either way.
#[derive(Clone)]
pub struct SmallText<const N: usize>(Repr<N>);

#[derive(Clone)]
enum Repr<const N: usize> {
    /// `bytes[..len]` is the text, copied whole from a `str`.
    Inline {
        len: u8,
        bytes: [u8; N],
    },
    Heap(String),
}

impl<const N: usize> SmallText<N> {
    pub const EMPTY: SmallText<N> = SmallText(Repr::Inline { len: 0, bytes: [0; N] });

    pub fn as_str(&self) -> &str {
        match &self.0 {
            Repr::Inline { len, bytes } => {
                let text = &bytes[..usize::from(*len)];
                // SAFETY: inline bytes are only ever written by `From<&str>`,
                // which copies a whole `str` and sets `len` to its length (and
                // by `wipe`, which leaves zero bytes and length 0), so
                // `bytes[..len]` is always valid UTF-8.
                unsafe { std::str::from_utf8_unchecked(text) }
            }
            Repr::Heap(text) => text,
        }
    }

    /// Zeroes the bytes, inline or on the heap (its whole capacity), and
    /// leaves the text empty.
    pub(crate) fn wipe(&mut self) {
        match &mut self.0 {
            Repr::Inline { len, bytes } => {
                // As a slice: zeroize fills a slice at once, an array byte by
                // byte.
                bytes.as_mut_slice().zeroize();
                *len = 0;
            }
            Repr::Heap(text) => text.zeroize(),
        }
    }
}

impl<const N: usize> Default for SmallText<N> {
    fn default() -> SmallText<N> {
        SmallText::EMPTY
    }
}

impl<const N: usize> From<&str> for SmallText<N> {
    fn from(text: &str) -> SmallText<N> {
        match u8::try_from(text.len()) {
            Ok(len) if text.len() <= N => {
                let mut bytes = [0; N];
                bytes[..text.len()].copy_from_slice(text.as_bytes());
                SmallText(Repr::Inline { len, bytes })
            }
            _ => SmallText(Repr::Heap(text.to_owned())),
        }
    }
}

impl<const N: usize> From<String> for SmallText<N> {
    fn from(text: String) -> SmallText<N> {
        SmallText(Repr::Heap(text))
    }
}

impl<const N: usize> Deref for SmallText<N> {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl<const N: usize> AsRef<str> for SmallText<N> {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

/// Equal when the texts are, wherever each is kept.
impl<const N: usize> PartialEq for SmallText<N> {
    fn eq(&self, other: &SmallText<N>) -> bool {
        self.as_str() == other.as_str()
    }
}

impl<const N: usize> Eq for SmallText<N> {}

impl<const N: usize> PartialEq<str> for SmallText<N> {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl<const N: usize> PartialEq<&str> for SmallText<N> {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl<const N: usize> Hash for SmallText<N> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl<const N: usize> fmt::Debug for SmallText<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.as_str().fmt(f)
    }
}

impl<const N: usize> fmt::Display for SmallText<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.as_str().fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The room of a secret, and a short field's.
    type Wide = SmallText<54>;

    #[test]
    fn text_reads_back_whether_inline_or_on_the_heap() {
        let fits = format!("{}x", "é".repeat(FIELD_INLINE_BYTES / 2));
        assert_eq!(fits.len(), FIELD_INLINE_BYTES + 1 - FIELD_INLINE_BYTES % 2);
        let fits = &fits[..fits.len() - 1 + FIELD_INLINE_BYTES % 2];
        let over = format!("{fits}é");
        for text in ["", "a", "stream:orders:write", fits, over.as_str()] {
            let borrowed = FieldText::from(text);
            let owned = FieldText::from(text.to_owned());
            assert_eq!(borrowed.as_str(), text);
            assert_eq!(&*owned, text);
            assert_eq!(borrowed, owned);
            assert_eq!(borrowed, text);
            assert_eq!(format!("{borrowed:?}"), format!("{text:?}"));
            assert_eq!(borrowed.clone().to_string(), text);
            assert_eq!(Wide::from(text), text);
        }
        assert!(matches!(FieldText::from(fits).0, Repr::Inline { .. }));
        assert!(matches!(FieldText::from(over.as_str()).0, Repr::Heap(_)));
        assert!(matches!(Wide::from(over.as_str()).0, Repr::Inline { .. }));
        assert_eq!(FieldText::default(), "");
        assert_ne!(FieldText::from("a"), FieldText::from("b"));
    }

    #[test]
    fn the_inline_room_fills_the_value() {
        assert_eq!(std::mem::size_of::<FieldText>(), 32);
        assert_eq!(std::mem::size_of::<Wide>(), 56);
    }

    #[test]
    fn a_wiped_text_is_empty_and_its_bytes_are_zero() {
        let mut inline = Wide::from("lk_secret");
        inline.wipe();
        assert_eq!(inline, "");
        let Repr::Inline { bytes, .. } = &inline.0 else { panic!("moved to the heap") };
        assert!(bytes.iter().all(|&byte| byte == 0));
        let mut heap = Wide::from("x".repeat(100));
        heap.wipe();
        assert_eq!(heap, "");
    }
}
