//! Arbitrary bytes, in arbitrary reads, through the legacy server framing
//! ([`LegacyRequestCodec`]) and every request it yields through `Request::decode`.
//!
//! Input: `[script][stream]` (see `latchkey_fuzz::Script`). Checks, beside
//! the shared ones in `feed`: a `Malformed` item consumed exactly its 8-byte
//! header and its length was below 4; a request consumed `4 + length` bytes,
//! within the cap, and its code and payload are the bytes it consumed; a
//! "too large" error consumed nothing; every decoded request round-trips.

#![no_main]

use latchkey_fuzz::{FRAME_BYTES_MAX, Script, check_request, feed_both_ways};
use latchkey_protocol::codec::{HEADER_BYTES, Inbound, LegacyRequestCodec};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(script) = Script::parse(data) else {
        return;
    };
    let outcome = feed_both_ways(|| LegacyRequestCodec::new(FRAME_BYTES_MAX), &script);
    for (item, range) in &outcome.items {
        let consumed = &script.stream[range.clone()];
        let length = u32::from_le_bytes([consumed[0], consumed[1], consumed[2], consumed[3]]);
        match item {
            Inbound::Malformed { length: reported } => {
                assert_eq!(consumed.len(), HEADER_BYTES, "Malformed consumed {} bytes", consumed.len());
                assert_eq!(*reported, length);
                assert!(length < 4);
            }
            Inbound::Request { code, payload } => {
                assert!((4..=FRAME_BYTES_MAX).contains(&length));
                assert_eq!(consumed.len(), 4 + length as usize);
                assert_eq!(consumed[4..8], code.to_le_bytes());
                assert_eq!(&consumed[HEADER_BYTES..], &payload[..]);
                check_request(*code, payload);
            }
        }
    }
    if let Some((_, range)) = &outcome.error {
        // The only framing error is a length over the cap, refused before
        // any of the payload is buffered.
        assert!(range.is_empty(), "a framing error consumed {range:?}");
    }
});
