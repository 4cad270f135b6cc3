//! The token log's replay on arbitrary bytes: what a start reads from a
//! damaged disk, or from a file someone else wrote.
//!
//! Input: `[mode][rest]`. Mode (byte 0, low two bits):
//! - 0: `rest` is the whole file;
//! - 1: a current (version 3) file header, then `rest` as it is;
//! - 2 and 3: a current header, then batches built from `rest` with every
//!   length and checksum right, so the fuzzer reaches the record decoder and
//!   the replay rules instead of stopping at a checksum. `rest` is a list of
//!   batches, each `records u8` then per record `length u16 | payload`
//!   (taken as far as `rest` goes, padded with zeros to the 17 bytes of
//!   seq, commit time and type, at most 16 KiB); mode 3 then cuts the file short by
//!   `byte 1 of rest` bytes, as a crash in the last append would.
//!
//! Bit 2 of byte 0 zeroes one 64-byte run of the built file, at the place
//! byte 0's high nibble picks (a lost sector in miniature).
//!
//! Checks, beside "no panic" (a damaged log is an error, never a crash):
//! - what the log tools report is what a start does: a file `inspect` calls
//!   clean reads whole through `read_file` to the same tokens and next id;
//! - cutting a torn tail where `inspect` says a start cuts it leaves a file
//!   that is clean and replays to the same tokens (the cut keeps exactly
//!   the records replay applied);
//! - offsets stay inside the file.

use std::path::Path;

use latchkey_server::store::log::{HEADER_BYTES, begin_batch, finish_batch, header};
use latchkey_server::store::{Damage, inspect, read_file};

const RECORD_MARKER: u32 = 0x1BC5_A7E3;
/// A record's payload: at least seq, commit time and type; at most the
/// decoder's limit (`log.rs`, `RECORD_PAYLOAD_BYTES_MAX`).
const PAYLOAD_BYTES_MIN: usize = 17;
const PAYLOAD_BYTES_MAX: usize = 16 * 1024;

/// Builds the file a mode-2/3 input describes.
fn built_file(rest: &[u8]) -> Vec<u8> {
    let mut out = header().to_vec();
    let mut at = 0;
    while at < rest.len() {
        let records = usize::from(rest[at]).max(1);
        at += 1;
        let start = begin_batch(&mut out);
        let mut first_seq = 0;
        let mut written = 0;
        while written < records && at + 2 <= rest.len() {
            let length = usize::from(u16::from_le_bytes([rest[at], rest[at + 1]]));
            at += 2;
            let taken = &rest[at..(at + length.min(PAYLOAD_BYTES_MAX)).min(rest.len())];
            at += taken.len();
            // A batch header that checks out says its records' sizes are
            // possible ones (the writer asserts it): pad a short payload.
            let mut payload = taken.to_vec();
            payload.resize(payload.len().max(PAYLOAD_BYTES_MIN), 0);
            if written == 0 {
                first_seq = u64::from_le_bytes(payload[..8].try_into().expect("8 bytes"));
            }
            let length = u32::try_from(payload.len()).expect("at most 16 KiB");
            out.extend_from_slice(&RECORD_MARKER.to_le_bytes());
            out.extend_from_slice(&length.to_le_bytes());
            let crc = crc32c::crc32c_append(crc32c::crc32c(&length.to_le_bytes()), &payload);
            out.extend_from_slice(&crc.to_le_bytes());
            out.extend_from_slice(&payload);
            written += 1;
        }
        if written == 0 {
            out.truncate(start);
            break;
        }
        finish_batch(&mut out, start, written, first_seq).expect("a small batch");
    }
    out
}

/// The whole check, for one input.
pub fn check_log(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else { return };
    let mut file = match mode & 0b11 {
        0 => rest.to_vec(),
        1 => [&header()[..], rest].concat(),
        kind => {
            let mut file = built_file(rest);
            if kind == 3 {
                let cut = usize::from(rest.get(1).copied().unwrap_or(0));
                file.truncate(file.len().saturating_sub(cut).max(HEADER_BYTES));
            }
            file
        }
    };
    if mode & 0b100 != 0 && file.len() > HEADER_BYTES {
        let from = HEADER_BYTES + usize::from(mode >> 4) * (file.len() - HEADER_BYTES) / 16;
        let to = (from + 64).min(file.len());
        file[from..to].fill(0);
    }
    check_file(&file);
}

fn check_file(file: &[u8]) {
    let path = Path::new("tokens.log");
    let inspection = inspect(path, file, |offset, _| assert!((offset as usize) < file.len()));
    assert!(inspection.valid_bytes <= inspection.file_bytes);
    assert_eq!(inspection.file_bytes, file.len() as u64);
    if let Some(batches) = inspection.batches {
        assert!(batches <= inspection.records, "a batch holds at least one record");
    }
    match &inspection.damage {
        None if file.is_empty() => {}
        None => {
            let (state, next_id) = read_file(path, file).expect("inspect called it clean");
            assert!(state == inspection.state, "read_file and inspect disagree on the tokens");
            assert_eq!(next_id, inspection.next_id);
        }
        Some(damage @ Damage::TornTail { offset, .. }) => {
            assert!(damage.offset() <= file.len() as u64);
            // A torn header (offset 0) is rewritten, not cut; a snapshot whose
            // framing alone is damaged is rewritten too (offset differs from
            // where replay stopped).
            if *offset >= HEADER_BYTES as u64 && *offset == inspection.valid_bytes {
                let cut = &file[..*offset as usize];
                let again = inspect(path, cut, |_, _| {});
                assert!(again.damage.is_none(), "the cut file is not clean: {:?}", again.damage);
                assert!(again.state == inspection.state, "the cut changed the tokens");
                assert_eq!((again.records, again.next_id), (inspection.records, inspection.next_id));
            }
        }
        Some(damage @ Damage::Refused(_)) => {
            assert!(damage.offset() <= file.len() as u64);
        }
    }
}
