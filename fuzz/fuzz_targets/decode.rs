//! Fuzz target: see `fuzz/harness.rs` (decode).
#![no_main]

#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    harness::decode(data);
});
