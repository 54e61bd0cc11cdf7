//! Fuzz target: see `fuzz/harness.rs` (job).
#![no_main]

#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    harness::job(data);
});
