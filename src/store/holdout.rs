//! Held-out pair files (`eval/holdout-NNNNN.bin`, `eval/valid-NNNNN.bin`, one per worker):
//! the pairs a version's metrics were computed against, kept so that `recflow eval STORE`
//! can recompute them from the version alone.
//!
//! A pair is (user raw id, item key): the item's global key (`vshard << 32 | position in its
//! shard`, the order of the version's item factor sections), or none for a held-out item
//! without training data, which counts in |T_u| but can never be recommended. Layout: magic
//! `RFLWHLD1`, format version u32, rows u64, then per row (sorted by user, then key, unknown
//! items last) a varint user code as in [`super::snapshot`] (0: the previous row's user) and
//! the varint of `key - previous key + 1` within the user (0 for an unknown item), then a CRC-32.

use super::codec::{code, put_str, put_varint};
use super::format::Reader;
use crate::ids::RawId;

/// File magic.
pub const MAGIC: &[u8; 8] = b"RFLWHLD1";
const HEADER: usize = 8 + 4 + 8;
/// How an item without training data is held: as in ingest's pairs.
pub const UNKNOWN: u64 = u64::MAX;

/// Encodes held-out pairs (any order; duplicates kept).
pub fn encode(pairs: &[(RawId, u64)]) -> Vec<u8> {
    let mut sorted: Vec<&(RawId, u64)> = pairs.iter().collect();
    // Unknown items (`u64::MAX`) sort last within their user.
    sorted.sort();
    let mut b = Vec::with_capacity(HEADER + pairs.len() * 4 + 4);
    b.extend_from_slice(MAGIC);
    b.extend_from_slice(&1u32.to_le_bytes());
    b.extend_from_slice(&(pairs.len() as u64).to_le_bytes());
    let (mut user, mut num_user, mut prev) = (None, 0u64, 0u64);
    for (u, key) in sorted {
        if user == Some(u) {
            b.push(0);
        } else {
            put_varint(&mut b, code(u, num_user) + 1);
            put_str(&mut b, u);
            if let RawId::Num(n) = u {
                num_user = *n;
            }
            user = Some(u);
            prev = 0;
        }
        if *key == UNKNOWN {
            put_varint(&mut b, 0);
        } else {
            put_varint(&mut b, (key - prev) as u128 + 1);
            prev = *key;
        }
    }
    let crc = crc32fast::hash(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    b
}

/// Decodes and verifies a held-out pair file. Errors say what is wrong; the caller adds the
/// path.
pub fn decode(bytes: &[u8]) -> Result<Vec<(RawId, u64)>, String> {
    if bytes.len() < HEADER + 4 || &bytes[..8] != MAGIC {
        return Err("not a recflow held-out pair file (bad magic number or too short)".into());
    }
    let body = &bytes[..bytes.len() - 4];
    let want = u32::from_le_bytes(bytes[bytes.len() - 4..].try_into().expect("4 bytes"));
    if crc32fast::hash(body) != want {
        return Err("checksum mismatch: the file is corrupted or truncated".into());
    }
    let mut r = Reader { b: body, at: 8 };
    let version = r.u32()?;
    if version != 1 {
        return Err(format!(
            "held-out pair format version {version}, this recflow reads 1"
        ));
    }
    let rows = u64::from_le_bytes(r.take(8)?.try_into().expect("8 bytes"));
    if rows.saturating_mul(2) > (body.len() - r.at) as u64 {
        return Err(format!(
            "header claims {rows} rows, more than the file holds"
        ));
    }
    let mut out: Vec<(RawId, u64)> = Vec::with_capacity(rows as usize);
    let (mut num_user, mut prev) = (0u64, 0u64);
    for row in 0..rows {
        let at = |e: String| format!("row {row}: {e}");
        let c = r.varint().map_err(at)?;
        let user = match (c, out.last()) {
            (0, Some(p)) => p.0.clone(),
            (0, None) => return Err(at("the first row has no user".into())),
            (c, last) => {
                let u = r.coded_id(c - 1, num_user).map_err(at)?;
                if last.is_some_and(|p| p.0 >= u) {
                    return Err(at("users out of order".into()));
                }
                prev = 0;
                u
            }
        };
        if let RawId::Num(n) = user {
            num_user = n;
        }
        let d =
            u64::try_from(r.varint().map_err(at)?).map_err(|_| at("key out of range".into()))?;
        let key = if d == 0 {
            UNKNOWN
        } else {
            if out.last().is_some_and(|p| p.0 == user && p.1 == UNKNOWN) {
                return Err(at("a known item after an unknown one".into()));
            }
            prev = prev
                .checked_add(d - 1)
                .filter(|&k| k != UNKNOWN)
                .ok_or_else(|| at("key out of range".into()))?;
            prev
        };
        out.push((user, key));
    }
    if r.at != body.len() {
        return Err(format!("{} unexpected trailing bytes", body.len() - r.at));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<(RawId, u64)> {
        vec![
            (RawId::Str("zoe".into()), 7),
            (RawId::Num(3), UNKNOWN),
            (RawId::Num(3), (5 << 32) | 2),
            (RawId::Num(3), 0),
            (RawId::Num(3), UNKNOWN),
            (RawId::Num(1), 1),
        ]
    }

    #[test]
    fn round_trips_sorted_with_unknown_items_last() {
        let got = decode(&encode(&sample())).unwrap();
        let mut want = sample();
        want.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        assert_eq!(got, want);
        assert_eq!(decode(&encode(&[])).unwrap(), vec![]);
    }

    #[test]
    fn damage_is_refused() {
        let b = encode(&sample());
        for n in 0..b.len() {
            assert!(decode(&b[..n]).is_err(), "truncated to {n}");
        }
        for at in 0..b.len() {
            let mut c = b.clone();
            c[at] ^= 0x20;
            assert!(decode(&c).is_err(), "flip at {at}");
        }
    }
}
