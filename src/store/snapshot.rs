//! Interaction snapshot sections: the consolidated (user, item, weight, newest time) pairs of
//! one virtual shard of users, as published with a version so that tomorrow's warm start reads
//! only the new events, and so that queries can leave out what a user has seen.
//!
//! Format 2 (written now) is compact: pairs sorted by (user, item), each row a varint user code
//! (0: the previous row's user; otherwise a new user as a numeric delta or a string), a varint
//! item code (a numeric delta from the previous item of the same user, or a string), the
//! weight (a whole multiple of the fixed-point scale as `zigzag(w / scale) << 1`, else 1 and
//! the zigzag of the raw i128, all varints) and the time as a zigzag varint delta from the previous row's. Layout:
//! magic `RFLWSNP2`, format version u32, vshard u32, rows u64, the rows, a CRC-32 of
//! everything before it. Decoding checks the checksum first, bounds the row count by the bytes
//! present, and refuses any row out of order (so every file has one encoding).
//!
//! Format 1 (older versions, still read): magic `RFLWSNP1`, then per row both ids (tag 0 +
//! u64, or tag 1 + u16 length + UTF-8 bytes), the weight as i128 and the time as i64.

use super::codec::{code, put_str, put_varint, unzigzag, zigzag};
use super::format::Reader;
use crate::ids::Pair;
use crate::ids::RawId;

/// Magic of format 2 (compact).
pub const MAGIC: &[u8; 8] = b"RFLWSNP2";
/// Magic of format 1 (older versions).
pub const MAGIC_V1: &[u8; 8] = b"RFLWSNP1";
const HEADER: usize = 8 + 4 + 4 + 8;
/// The fewest bytes one format-1 row takes: two 1-byte string ids with tags and lengths.
const MIN_ROW_V1: usize = 2 * 4 + 16 + 8;
/// The fewest bytes one format-2 row takes: a byte each for user, item, weight and time.
const MIN_ROW: usize = 4;
/// Whole multiples of this fixed-point unit (1.0) are stored as the integer.
const UNIT: i128 = 1 << 32;

/// Encodes the pairs of virtual shard `vshard`, which must be sorted by (user, item) with no
/// pair twice (as ingest consolidates them).
pub fn encode(vshard: u32, pairs: &[&Pair]) -> Vec<u8> {
    assert!(
        pairs
            .windows(2)
            .all(|w| (&w[0].0, &w[0].1) < (&w[1].0, &w[1].1)),
        "snapshot pairs must be sorted and distinct"
    );
    let mut b = Vec::with_capacity(HEADER + pairs.len() * 6 + 4);
    b.extend_from_slice(MAGIC);
    b.extend_from_slice(&2u32.to_le_bytes());
    b.extend_from_slice(&vshard.to_le_bytes());
    b.extend_from_slice(&(pairs.len() as u64).to_le_bytes());
    let (mut user, mut num_user, mut num_item, mut time) = (None, 0u64, 0u64, 0i64);
    for &(u, i, w, t) in pairs {
        let (w, t) = (*w, *t);
        if user == Some(u) {
            b.push(0);
        } else {
            // 1 + the id code: 0 stays free for "same user".
            put_varint(&mut b, code(u, num_user) + 1);
            put_str(&mut b, u);
            if let RawId::Num(n) = u {
                num_user = *n;
            }
            user = Some(u);
            num_item = 0;
        }
        put_varint(&mut b, code(i, num_item));
        put_str(&mut b, i);
        if let RawId::Num(n) = i {
            num_item = *n;
        }
        if w % UNIT == 0 {
            put_varint(&mut b, zigzag(w / UNIT) << 1);
        } else {
            // 1, then the raw value (its zigzag can use all 128 bits: no room for a flag).
            put_varint(&mut b, 1);
            put_varint(&mut b, zigzag(w));
        }
        put_varint(&mut b, zigzag(t as i128 - time as i128));
        time = t;
    }
    let crc = crc32fast::hash(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    b
}

/// Checks magic and checksum; returns the body (without its CRC) and the format (1 or 2).
fn verified(bytes: &[u8]) -> Result<(&[u8], u32), String> {
    if bytes.len() < HEADER + 4 {
        return Err(format!(
            "too short ({} bytes) to be a snapshot file",
            bytes.len()
        ));
    }
    let format = match &bytes[..8] {
        m if m == MAGIC => 2,
        m if m == MAGIC_V1 => 1,
        _ => return Err("not a recflow snapshot file (bad magic number)".into()),
    };
    let body = &bytes[..bytes.len() - 4];
    let want = u32::from_le_bytes(bytes[bytes.len() - 4..].try_into().expect("4 bytes"));
    if crc32fast::hash(body) != want {
        return Err("checksum mismatch: the file is corrupted or truncated".into());
    }
    let version = u32::from_le_bytes(body[8..12].try_into().expect("4 bytes"));
    if version != format {
        return Err(format!(
            "snapshot format version {version}, this recflow reads 1 and 2"
        ));
    }
    Ok((body, format))
}

/// Decodes and verifies a snapshot section of either format: (vshard, pairs). Errors say
/// what is wrong; the caller adds the path.
pub fn decode(bytes: &[u8]) -> Result<(u32, Vec<Pair>), String> {
    let (body, format) = verified(bytes)?;
    let mut r = Reader { b: body, at: 12 };
    let vshard = r.u32()?;
    let rows = u64::from_le_bytes(r.take(8)?.try_into().expect("8 bytes"));
    let remaining = (body.len() - r.at) as u64;
    let min = if format == 1 { MIN_ROW_V1 } else { MIN_ROW };
    if rows.saturating_mul(min as u64) > remaining {
        return Err(format!(
            "header claims {rows} rows, but only {remaining} bytes follow"
        ));
    }
    let pairs = if format == 1 {
        rows_v1(&mut r, rows)?
    } else {
        rows_v2(&mut r, rows)?
    };
    if r.at != body.len() {
        return Err(format!("{} unexpected trailing bytes", body.len() - r.at));
    }
    Ok((vshard, pairs))
}

fn rows_v1(r: &mut Reader, rows: u64) -> Result<Vec<Pair>, String> {
    let mut pairs = Vec::with_capacity(rows as usize);
    for _ in 0..rows {
        let u = r.id()?;
        let i = r.id()?;
        let w = i128::from_le_bytes(r.take(16)?.try_into().expect("16 bytes"));
        let t = i64::from_le_bytes(r.take(8)?.try_into().expect("8 bytes"));
        pairs.push((u, i, w, t));
    }
    Ok(pairs)
}

fn rows_v2(r: &mut Reader, rows: u64) -> Result<Vec<Pair>, String> {
    let mut pairs: Vec<Pair> = Vec::with_capacity(rows as usize);
    let (mut num_user, mut num_item, mut time) = (0u64, 0u64, 0i64);
    for row in 0..rows {
        let at = |e: String| format!("row {row}: {e}");
        let code = r.varint().map_err(at)?;
        let user = match (code, pairs.last()) {
            (0, Some(p)) => p.0.clone(),
            (0, None) => return Err(at("the first row has no user".into())),
            (c, last) => {
                num_item = 0;
                let u = r.coded_id(c - 1, num_user).map_err(at)?;
                if last.is_some_and(|p| p.0 >= u) {
                    return Err(at("users out of order".into()));
                }
                u
            }
        };
        if let RawId::Num(n) = user {
            num_user = n;
        }
        let ic = r.varint().map_err(at)?;
        let item = r.coded_id(ic, num_item).map_err(at)?;
        if let RawId::Num(n) = item {
            num_item = n;
        }
        let wc = r.varint().map_err(at)?;
        let w = match wc {
            1 => Some(unzigzag(r.varint().map_err(at)?)).filter(|w| w % UNIT != 0),
            c if c & 1 == 0 => unzigzag(c >> 1).checked_mul(UNIT),
            _ => None,
        }
        .ok_or_else(|| at("bad weight".into()))?;
        let t = i64::try_from(time as i128 + unzigzag(r.varint().map_err(at)?))
            .map_err(|_| at("time out of range".into()))?;
        time = t;
        let p = (user, item, w, t);
        if pairs.last().is_some_and(|q| (&q.0, &q.1) >= (&p.0, &p.1)) {
            return Err(at("pairs out of order".into()));
        }
        pairs.push(p);
    }
    Ok(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Format 1 as older recflow wrote it (for reading old stores).
    pub(crate) fn encode_v1(vshard: u32, pairs: &[&Pair]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(MAGIC_V1);
        b.extend_from_slice(&1u32.to_le_bytes());
        b.extend_from_slice(&vshard.to_le_bytes());
        b.extend_from_slice(&(pairs.len() as u64).to_le_bytes());
        for &(u, i, w, t) in pairs {
            crate::store::format::put_id(&mut b, u);
            crate::store::format::put_id(&mut b, i);
            b.extend_from_slice(&w.to_le_bytes());
            b.extend_from_slice(&t.to_le_bytes());
        }
        let crc = crc32fast::hash(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        b
    }

    fn sample() -> Vec<Pair> {
        vec![
            (RawId::Num(0), RawId::Num(0), UNIT, 0),
            (RawId::Num(3), RawId::Num(7), 5 << 32, 17),
            (RawId::Num(3), RawId::Num(u64::MAX), 3, -4),
            (
                RawId::Num(3),
                RawId::Str("héllo".into()),
                -(1 << 40),
                i64::MAX,
            ),
            (RawId::Num(u64::MAX), RawId::Num(2), i128::MAX, i64::MIN),
            (RawId::Str("u".into()), RawId::Num(1), i128::MIN, 0),
            (RawId::Str("u".into()), RawId::Str("v".into()), 1, 1),
            (RawId::Str("w".into()), RawId::Num(1), 0, 1),
        ]
    }

    #[test]
    fn round_trips_in_both_formats() {
        let s = sample();
        let refs: Vec<&Pair> = s.iter().collect();
        assert_eq!(decode(&encode(9, &refs)).unwrap(), (9, sample()));
        assert_eq!(decode(&encode_v1(9, &refs)).unwrap(), (9, sample()));
        assert_eq!(decode(&encode(0, &[])).unwrap(), (0, vec![]));
    }

    /// Pseudo-random sorted shards round-trip, and the compact form is far smaller than
    /// format 1 on the integer ids and whole weights typical of real data.
    #[test]
    fn random_shards_round_trip_compactly() {
        let mut x = 0x9e3779b97f4a7c15u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut s: Vec<Pair> = (0..5000)
            .map(|_| {
                let (u, i) = (next() % 300, next() % 2000);
                let w = if next() % 4 == 0 {
                    (next() % 1000) as i128
                } else {
                    UNIT * (1 + (next() % 5) as i128)
                };
                (
                    RawId::Num(u),
                    RawId::Num(i),
                    w,
                    1_600_000_000 + (next() % 86400) as i64,
                )
            })
            .collect();
        s.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        s.dedup_by(|a, b| (&a.0, &a.1) == (&b.0, &b.1));
        let refs: Vec<&Pair> = s.iter().collect();
        let (b2, b1) = (encode(4, &refs), encode_v1(4, &refs));
        assert_eq!(decode(&b2).unwrap().1, s);
        assert!(b2.len() * 3 < b1.len(), "{} vs {}", b2.len(), b1.len());
    }

    #[test]
    fn rejects_corruption_truncation_and_crafted_lengths() {
        let s = sample();
        let b = encode(9, &s.iter().collect::<Vec<_>>());
        for n in 0..b.len() {
            assert!(decode(&b[..n]).is_err(), "truncated to {n}");
        }
        for at in 0..b.len() {
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

    /// Rows out of order behind a valid checksum are refused: one encoding per content.
    #[test]
    fn rows_out_of_order_are_refused() {
        let (a, b) = (
            (RawId::Num(5), RawId::Num(1), UNIT, 0),
            (RawId::Num(5), RawId::Num(2), UNIT, 0),
        );
        let mut bytes = encode(0, &[&a, &b]);
        // Row 2's item delta 1 becomes 0: the same pair twice.
        let at = bytes.len() - 4 - 3;
        assert_eq!(bytes[at], 2);
        bytes[at] = 0;
        bytes.truncate(bytes.len() - 4);
        let crc = crc32fast::hash(&bytes);
        bytes.extend_from_slice(&crc.to_le_bytes());
        assert!(decode(&bytes).unwrap_err().contains("out of order"));
    }
}
