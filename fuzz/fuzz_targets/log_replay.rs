//! The token log's replay (what a start and the log tools read) on
//! arbitrary bytes, raw or framed as batches with checksums that hold.
//!
//! Input and checks: `latchkey_fuzz::log` (`fuzz/src/log.rs`).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| latchkey_fuzz::log::check_log(data));
