//! The bodies of the fuzz targets, shared by `fuzz/fuzz_targets/*.rs` (libFuzzer) and by
//! `tests/robustness.rs`, which replays every file under `fuzz/corpus/<target>/` through the
//! same function in a normal `cargo test`.
//!
//! Each function must never panic on any input; the assertions inside check properties that
//! must hold whenever the library accepts an input.

#![allow(dead_code)]

use recflow::ids::{RawId, MAX_ID_LEN};
use recflow::ingest::parse::{self, looks_like_header, Columns, Fields, MAX_ABS_WEIGHT};
use recflow::job::{Format, Job};
use recflow::store::format;

/// Input line parser. Returns whether the line was accepted as an event. The first byte picks the format and the column layout, the rest is the
/// line. Accepted events must have finite bounded weights and valid, canonical ids.
pub fn parse_line(data: &[u8]) -> bool {
    let Some((&sel, line)) = data.split_first() else {
        return false;
    };
    let format = match sel & 3 {
        0 => Format::Tsv,
        1 => Format::Csv,
        2 => Format::Movielens,
        _ => Format::Whitespace,
    };
    let (user, item) = if sel & 16 == 0 { (0, 1) } else { (1, 0) };
    let cols = Columns {
        user,
        item,
        weight: (sel & 4 != 0).then_some(2),
        ts: (sel & 8 != 0).then_some(3 + (sel as usize >> 5)),
        // The removal flag column is covered by unit tests; the corpus selector bits are all
        // taken, and replaying the corpus must stay what was fuzzed.
        removed: None,
    };
    let mut fields = Fields::default();
    fields.split(line, format);
    for i in 0..fields.len() {
        // Decoded CSV fields are never longer than the line.
        assert!(fields.get(line, i).is_some_and(|f| f.len() <= line.len()));
    }
    let _ = looks_like_header(line, format, &cols);
    match parse::parse_line(line, format, &cols, &mut fields) {
        Ok(Some(ev)) => {
            assert!(ev.weight.is_finite() && (ev.weight.abs() as f64) <= MAX_ABS_WEIGHT);
            if cols.weight.is_none() {
                assert_eq!(ev.weight, 1.0);
            }
            for id in [&ev.user, &ev.item] {
                if let RawId::Str(s) = id {
                    assert!(!s.is_empty() && s.len() <= MAX_ID_LEN);
                    assert!(!s.chars().any(|c| c.is_control()), "control char in {s:?}");
                    // The id reads back as itself (what the model file decoder insists on).
                    assert_eq!(RawId::parse(s.as_bytes()).as_ref(), Ok(id));
                }
            }
            true
        }
        Ok(None) => false,
        Err(e) => {
            assert!(!e.message.is_empty());
            false
        }
    }
}

/// Job parser (returns whether the job was accepted): TOML text, then `section.key=value` overrides separated by NUL bytes. An
/// accepted job is valid and survives a round trip through TOML unchanged.
pub fn job(data: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(data) else {
        return false;
    };
    let mut parts = text.split('\0');
    let body = parts.next().unwrap_or("");
    let overrides: Vec<String> = parts.map(String::from).collect();
    match Job::parse(body, &overrides) {
        Ok(job) => {
            job.validate().expect("a parsed job validates");
            let again = toml::to_string(&job).expect("a valid job serialises");
            let back = Job::parse(&again, &[])
                .unwrap_or_else(|e| panic!("serialised job does not parse: {e}\n{again}"));
            assert_eq!(back, job, "job changed in a TOML round trip");
            true
        }
        Err(e) => {
            assert!(!e.0.is_empty());
            false
        }
    }
}

/// Model file decoder (returns whether the file was accepted). With an odd first byte the rest gets a correct CRC-32 appended, so the
/// fuzzer explores the decoding behind the checksum too. An accepted file re-encodes to the
/// same bytes (the encoding is canonical, nothing is silently ignored).
pub fn decode(data: &[u8]) -> bool {
    let Some((&mode, rest)) = data.split_first() else {
        return false;
    };
    let mut bytes = rest.to_vec();
    if mode & 1 == 1 {
        let crc = crc32fast::hash(&bytes);
        bytes.extend_from_slice(&crc.to_le_bytes());
    }
    match format::decode(&bytes) {
        Ok(f) => {
            assert_eq!(f.ids.len() * f.dim, f.factors.len());
            assert!(f.factors.iter().all(|x| x.is_finite()));
            let again = format::encode(f.side, f.vshard, f.dim, &f.ids, &f.factors);
            assert!(again == bytes, "decode accepted a non-canonical file");
            true
        }
        Err(e) => {
            assert!(!e.is_empty());
            false
        }
    }
}
