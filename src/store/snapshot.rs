//! Interaction snapshot files: the consolidated (user, item, weight, newest time) pairs of one
//! virtual shard of users, as published with a version so that tomorrow's warm start reads only
//! the new events.
//!
//! Layout (little-endian): magic `RFLWSNP1`, format version u32, vshard u32, rows u64, then per
//! row the user id and the item id (tag 0 + u64, or tag 1 + u16 length + UTF-8 bytes), the
//! summed weight as fixed-point i128 (see [`crate::ingest::consolidate::WEIGHT_SCALE`]) and the
//! newest event time i64; then a CRC-32 of everything before it. Decoding checks the checksum
//! first and bounds the row count by the bytes present before allocating.

use super::format::{put_id, Reader};
use crate::ingest::consolidate::Pair;

/// File magic.
pub const MAGIC: &[u8; 8] = b"RFLWSNP1";
/// Current format version.
pub const VERSION: u32 = 1;
const HEADER: usize = 8 + 4 + 4 + 8;
/// The fewest bytes one row can take: two 1-byte string ids with their tags and lengths.
const MIN_ROW: usize = 2 * 4 + 16 + 8;

/// Encodes the pairs of virtual shard `vshard`.
pub fn encode(vshard: u32, pairs: &[&Pair]) -> Vec<u8> {
    let mut b = Vec::with_capacity(HEADER + pairs.len() * 42 + 4);
    b.extend_from_slice(MAGIC);
    b.extend_from_slice(&VERSION.to_le_bytes());
    b.extend_from_slice(&vshard.to_le_bytes());
    b.extend_from_slice(&(pairs.len() as u64).to_le_bytes());
    for &(u, i, w, t) in pairs {
        put_id(&mut b, u);
        put_id(&mut b, i);
        b.extend_from_slice(&w.to_le_bytes());
        b.extend_from_slice(&t.to_le_bytes());
    }
    let crc = crc32fast::hash(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    b
}

/// Decodes and verifies a snapshot file: (vshard, pairs). Errors say what is wrong; the caller
/// adds the path.
pub fn decode(bytes: &[u8]) -> Result<(u32, Vec<Pair>), String> {
    if bytes.len() < HEADER + 4 {
        return Err(format!(
            "too short ({} bytes) to be a snapshot file",
            bytes.len()
        ));
    }
    if &bytes[..8] != MAGIC {
        return Err("not a recflow snapshot file (bad magic number)".into());
    }
    let body = &bytes[..bytes.len() - 4];
    let want = u32::from_le_bytes(bytes[bytes.len() - 4..].try_into().expect("4 bytes"));
    if crc32fast::hash(body) != want {
        return Err("checksum mismatch: the file is corrupted or truncated".into());
    }
    let mut r = Reader { b: body, at: 8 };
    let version = r.u32()?;
    if version != VERSION {
        return Err(format!(
            "snapshot format version {version}, this recflow reads {VERSION}"
        ));
    }
    let vshard = r.u32()?;
    let rows = u64::from_le_bytes(r.take(8)?.try_into().expect("8 bytes"));
    let remaining = (body.len() - r.at) as u64;
    if rows.saturating_mul(MIN_ROW as u64) > remaining {
        return Err(format!(
            "header claims {rows} rows, but only {remaining} bytes follow"
        ));
    }
    let mut pairs = Vec::with_capacity(rows as usize);
    for _ in 0..rows {
        let u = r.id()?;
        let i = r.id()?;
        let w = i128::from_le_bytes(r.take(16)?.try_into().expect("16 bytes"));
        let t = i64::from_le_bytes(r.take(8)?.try_into().expect("8 bytes"));
        pairs.push((u, i, w, t));
    }
    if r.at != body.len() {
        return Err(format!("{} unexpected trailing bytes", body.len() - r.at));
    }
    Ok((vshard, pairs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::RawId;

    fn sample() -> Vec<Pair> {
        vec![
            (RawId::Num(3), RawId::Str("héllo".into()), 5 << 32, 17),
            (RawId::Str("u".into()), RawId::Num(u64::MAX), 1, i64::MIN),
        ]
    }

    #[test]
    fn round_trips() {
        let s = sample();
        let b = encode(9, &s.iter().collect::<Vec<_>>());
        assert_eq!(decode(&b).unwrap(), (9, sample()));
        assert_eq!(decode(&encode(0, &[])).unwrap(), (0, vec![]));
    }

    #[test]
    fn rejects_corruption_truncation_and_crafted_lengths() {
        let s = sample();
        let b = encode(9, &s.iter().collect::<Vec<_>>());
        for n in [0, 10, b.len() - 1] {
            assert!(decode(&b[..n]).is_err(), "truncated to {n}");
        }
        for at in [0, 12, 30, b.len() - 5] {
            let mut c = b.clone();
            c[at] ^= 0x40;
            assert!(decode(&c).is_err(), "flip at {at}");
        }
        // A huge row count with a valid checksum must fail before allocating.
        let mut c = b[..b.len() - 4].to_vec();
        c[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
        let crc = crc32fast::hash(&c);
        c.extend_from_slice(&crc.to_le_bytes());
        assert!(decode(&c).unwrap_err().contains("claims"));
    }
}
