//! Arbitrary reply streams, in arbitrary reads, through the legacy client
//! framing ([`LegacyReplyCodec`]), and every payload decoded as each reply body.
//!
//! Input: `[script][stream]` (see `latchkey_fuzz::Script`). Checks, beside
//! the shared ones in `feed`: a reply consumed `8 + length` bytes within the
//! cap and its status and payload are the bytes it consumed; a "too large"
//! error consumed nothing; each payload passes the body checks for every
//! reply type of both framings, the 0.11 ones behind a result section.

#![no_main]

use latchkey_fuzz::{
    FRAME_BYTES_MAX, Script, check_body_round_trip, check_login_response, check_result_section,
    feed_both_ways,
};
use latchkey_protocol::body::{
    ClientDetails, ClusterMetadata, Empty, IdentityInfo, PersonalAccessTokens, RawPersonalAccessToken,
};
use latchkey_protocol::codec::{HEADER_BYTES, LegacyReplyCodec};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(script) = Script::parse(data) else {
        return;
    };
    let outcome = feed_both_ways(|| LegacyReplyCodec::new(FRAME_BYTES_MAX), &script);
    for (reply, range) in &outcome.items {
        let consumed = &script.stream[range.clone()];
        assert_eq!(consumed[0..4], reply.status.to_le_bytes());
        let length = u32::from_le_bytes([consumed[4], consumed[5], consumed[6], consumed[7]]);
        assert!(length <= FRAME_BYTES_MAX);
        assert_eq!(consumed.len(), HEADER_BYTES + length as usize);
        assert_eq!(&consumed[HEADER_BYTES..], &reply.payload[..]);

        let payload = &reply.payload[..];
        check_body_round_trip::<Empty>(payload);
        check_body_round_trip::<IdentityInfo>(payload);
        check_body_round_trip::<RawPersonalAccessToken>(payload);
        check_body_round_trip::<PersonalAccessTokens>(payload);
        check_body_round_trip::<ClientDetails>(payload);
        check_body_round_trip::<ClusterMetadata>(payload);
        // The same payloads behind a 0.11 result section (spec §2.5).
        if let Some(Ok(accepted)) = check_result_section(payload) {
            check_body_round_trip::<RawPersonalAccessToken>(accepted);
            check_login_response(accepted);
        }
    }
    if let Some((_, range)) = &outcome.error {
        assert!(range.is_empty(), "a framing error consumed {range:?}");
    }
});
