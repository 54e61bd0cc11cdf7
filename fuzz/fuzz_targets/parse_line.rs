//! Fuzz target: see `fuzz/harness.rs` (parse_line).
#![no_main]

#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    harness::parse_line(data);
});
