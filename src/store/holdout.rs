//! Held-out pair files (`eval/holdout-NNNNN.bin`, `eval/valid-NNNNN.bin`, one per worker):
//! the pairs a version's metrics were computed against, kept so that `recflow eval STORE`
//! can recompute them from the version alone.
//!
//! A pair is (user raw id, item key): the item's global key (`vshard << 32 | position in its
//! shard`, the order of the version's item factor sections), or none for a held-out item
//! without training data, which counts in |T_u| but can never be recommended. Layout: magic
//! `RFLWHLD1`, format version u32, rows u64, the pairs sorted by user, then key (unknown items
//! last), then a CRC-32.
//!
//! Format 2 (written): per user a varint user code as in [`super::snapshot`], the varint
//! count of its pairs, then per pair `vshard - previous vshard + 1` (0: an unknown item, no
//! more) and the position in its shard minus the previous position in the same shard (from 0
//! on a new shard or user): about 2 bytes a pair. Format 1 (still read) held per pair a user
//! code (0: the previous row's user) and `key - previous key + 1`, 6 bytes for most pairs
//! since consecutive items of a user rarely share a shard.

use super::codec::{code, put_str, put_varint};
use super::format::Reader;
use crate::ids::RawId;

/// File magic.
pub const MAGIC: &[u8; 8] = b"RFLWHLD1";
const HEADER: usize = 8 + 4 + 8;
/// How an item without training data is held: as in ingest's pairs.
pub const UNKNOWN: u64 = u64::MAX;
/// The format written.
const FORMAT: u32 = 2;

/// Encodes held-out pairs (any order; duplicates kept).
pub fn encode(pairs: &[(RawId, u64)]) -> Vec<u8> {
    let mut sorted: Vec<&(RawId, u64)> = pairs.iter().collect();
    // Unknown items (`u64::MAX`) sort last within their user.
    sorted.sort();
    let mut b = Vec::with_capacity(HEADER + pairs.len() * 3 + 4);
    b.extend_from_slice(MAGIC);
    b.extend_from_slice(&FORMAT.to_le_bytes());
    b.extend_from_slice(&(pairs.len() as u64).to_le_bytes());
    let mut num_user = 0u64;
    for user in sorted.chunk_by(|a, b| a.0 == b.0) {
        let u = &user[0].0;
        put_varint(&mut b, code(u, num_user));
        put_str(&mut b, u);
        if let RawId::Num(n) = u {
            num_user = *n;
        }
        put_varint(&mut b, user.len() as u128);
        let mut prev = 0u64;
        for &&(_, key) in user {
            if key == UNKNOWN {
                b.push(0);
                continue;
            }
            let (vs, prev_vs) = (key >> 32, prev >> 32);
            put_varint(&mut b, (vs - prev_vs) as u128 + 1);
            let base = if vs == prev_vs { prev } else { vs << 32 };
            put_varint(&mut b, (key - base) as u128);
            prev = key;
        }
    }
    let crc = crc32fast::hash(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    b
}

/// Decodes and verifies a held-out pair file (format 1 or 2). Errors say what is wrong; the
/// caller adds the path.
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
    let rows = u64::from_le_bytes(r.take(8)?.try_into().expect("8 bytes"));
    if rows > (body.len() - r.at) as u64 {
        return Err(format!(
            "header claims {rows} rows, more than the file holds"
        ));
    }
    let mut out: Vec<(RawId, u64)> = Vec::with_capacity(rows as usize);
    match version {
        1 => decode_v1(&mut r, rows, &mut out)?,
        2 => decode_v2(&mut r, rows, &mut out)?,
        v => {
            return Err(format!(
                "held-out pair format version {v}, this recflow reads 1 and 2"
            ))
        }
    }
    if r.at != body.len() {
        return Err(format!("{} unexpected trailing bytes", body.len() - r.at));
    }
    Ok(out)
}

/// The next user of a file: its code read, refused unless after `last`.
fn next_user(
    r: &mut Reader<'_>,
    c: u128,
    num_user: &mut u64,
    last: Option<&RawId>,
) -> Result<RawId, String> {
    let u = r.coded_id(c, *num_user)?;
    if last.is_some_and(|p| *p >= u) {
        return Err("users out of order".into());
    }
    if let RawId::Num(n) = u {
        *num_user = n;
    }
    Ok(u)
}

fn decode_v2(r: &mut Reader<'_>, rows: u64, out: &mut Vec<(RawId, u64)>) -> Result<(), String> {
    let mut num_user = 0u64;
    while (out.len() as u64) < rows {
        let row = out.len();
        let at = |e: String| format!("row {row}: {e}");
        let c = r.varint().map_err(at)?;
        let user = next_user(r, c, &mut num_user, out.last().map(|p| &p.0)).map_err(at)?;
        let n = r.varint().map_err(at)?;
        if n == 0 || n > (rows - row as u64) as u128 {
            return Err(at(format!("a user with {n} pairs")));
        }
        let mut prev = 0u64;
        for j in 0..n as usize {
            let at = |e: &str| format!("row {}: {e}", row + j);
            let d = u64::try_from(r.varint().map_err(|e| at(&e))?).unwrap_or(u64::MAX);
            let key = if d == 0 {
                UNKNOWN
            } else if out.last().is_some_and(|p| p.0 == user && p.1 == UNKNOWN) {
                return Err(at("a known item after an unknown one"));
            } else {
                prev = next_key(r, prev, d - 1)
                    .map_err(|e| at(&e))?
                    .ok_or_else(|| at("key out of range"))?;
                prev
            };
            out.push((user.clone(), key));
        }
    }
    Ok(())
}

/// The key whose shard is `shard_delta` past prev's, its position (read next) counted from
/// prev's in the same shard or from 0 in a new one; `None` when out of range.
fn next_key(r: &mut Reader<'_>, prev: u64, shard_delta: u64) -> Result<Option<u64>, String> {
    let pos = r.varint()?;
    let base = match (prev >> 32).checked_add(shard_delta) {
        Some(v) if v == prev >> 32 => prev,
        Some(v) if v <= u32::MAX as u64 => v << 32,
        _ => return Ok(None),
    };
    Ok(u64::try_from(pos)
        .ok()
        .and_then(|p| base.checked_add(p))
        .filter(|&k| k >> 32 == base >> 32 && k != UNKNOWN))
}

fn decode_v1(r: &mut Reader<'_>, rows: u64, out: &mut Vec<(RawId, u64)>) -> Result<(), String> {
    if rows.saturating_mul(2) > (r.b.len() - r.at) as u64 {
        return Err(format!(
            "header claims {rows} rows, more than the file holds"
        ));
    }
    let (mut num_user, mut prev) = (0u64, 0u64);
    for row in 0..rows {
        let at = |e: String| format!("row {row}: {e}");
        let c = r.varint().map_err(at)?;
        let user = match (c, out.last()) {
            (0, Some(p)) => p.0.clone(),
            (0, None) => return Err(at("the first row has no user".into())),
            (c, last) => {
                prev = 0;
                next_user(r, c - 1, &mut num_user, last.map(|p| &p.0)).map_err(at)?
            }
        };
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
    Ok(())
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
            (RawId::Num(1), 1),
            (RawId::Num(1), (5 << 32) | 2),
            (RawId::Num(1), (5 << 32) | 9),
            (RawId::Num(1), ((u32::MAX as u64) << 32) | u32::MAX as u64),
            (RawId::Num(8), (u32::MAX as u64) << 32),
        ]
    }

    /// Format 1 as the previous recflow wrote it: the key delta within the user.
    fn encode_v1(pairs: &[(RawId, u64)]) -> Vec<u8> {
        let mut sorted: Vec<&(RawId, u64)> = pairs.iter().collect();
        sorted.sort();
        let mut b = MAGIC.to_vec();
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
                (user, prev) = (Some(u), 0);
            }
            if *key == UNKNOWN {
                b.push(0);
            } else {
                put_varint(&mut b, (key - prev) as u128 + 1);
                prev = *key;
            }
        }
        let crc = crc32fast::hash(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        b
    }

    /// Pairs as a run holds out: a few items per user, spread over 256 shards.
    fn spread(users: u64, per_user: u64) -> Vec<(RawId, u64)> {
        let mut x = 88172645463325252u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        (0..users * per_user)
            .map(|n| {
                let key = if n % 97 == 0 {
                    UNKNOWN
                } else {
                    ((next() % 256) << 32) | (next() % 20)
                };
                (RawId::Num(n / per_user * 3), key)
            })
            .collect()
    }

    /// Old held-out files still load, to the same pairs; the new format is well under half
    /// their size on pairs spread over shards as a run's are.
    #[test]
    fn format_1_still_decodes_and_format_2_is_smaller() {
        for pairs in [sample(), spread(2000, 4)] {
            let (v1, v2) = (encode_v1(&pairs), encode(&pairs));
            assert_eq!(decode(&v1).unwrap(), decode(&v2).unwrap());
        }
        let pairs = spread(2000, 4);
        let (v1, v2) = (encode_v1(&pairs).len(), encode(&pairs).len());
        assert!(v2 * 2 < v1, "format 2: {v2} bytes, format 1: {v1}");
        assert!(v2 < pairs.len() * 2 + 2000 * 3, "{v2} bytes");
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
