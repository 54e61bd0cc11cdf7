//! Binary factor files: one per (side, virtual shard).
//!
//! Layout (little-endian): magic `RFLWFAC1`, format version u32, side u8 + 3 zero bytes,
//! vshard u32, rows u32, dim u32, then per row its id (tag 0 + u64, or tag 1 + u16 length +
//! UTF-8 bytes), then `rows × dim` f32, then a CRC-32 of everything before it.
//! Decoding checks the checksum first and never allocates from an unchecked length.

use crate::ids::parse_id;
use crate::ids::{RawId, MAX_ID_LEN};

/// File magic.
pub const MAGIC: &[u8; 8] = b"RFLWFAC1";
/// Current format version.
pub const VERSION: u32 = 1;
const HEADER: usize = 8 + 4 + 4 + 4 + 4 + 4;

/// A decoded factor file.
#[derive(Debug, PartialEq)]
pub struct FactorFile {
    /// 0 users, 1 items.
    pub side: u8,
    /// Virtual shard.
    pub vshard: u32,
    /// Dimension.
    pub dim: usize,
    /// Ids in row order.
    pub ids: Vec<RawId>,
    /// Row-major factors.
    pub factors: Vec<f32>,
}

/// Encodes a factor file.
pub fn encode(side: u8, vshard: u32, dim: usize, ids: &[RawId], factors: &[f32]) -> Vec<u8> {
    assert_eq!(ids.len() * dim, factors.len());
    let mut b = Vec::with_capacity(HEADER + ids.len() * 9 + factors.len() * 4 + 4);
    b.extend_from_slice(MAGIC);
    b.extend_from_slice(&VERSION.to_le_bytes());
    b.extend_from_slice(&[side, 0, 0, 0]);
    b.extend_from_slice(&vshard.to_le_bytes());
    b.extend_from_slice(&(ids.len() as u32).to_le_bytes());
    b.extend_from_slice(&(dim as u32).to_le_bytes());
    for id in ids {
        put_id(&mut b, id);
    }
    for x in factors {
        b.extend_from_slice(&x.to_le_bytes());
    }
    let crc = crc32fast::hash(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    b
}

/// Appends an id: tag 0 + u64, or tag 1 + u16 length + UTF-8 bytes (shared by the store's
/// binary formats).
pub(crate) fn put_id(b: &mut Vec<u8>, id: &RawId) {
    match id {
        RawId::Num(n) => {
            b.push(0);
            b.extend_from_slice(&n.to_le_bytes());
        }
        RawId::Str(s) => {
            b.push(1);
            b.extend_from_slice(&(s.len() as u16).to_le_bytes());
            b.extend_from_slice(s.as_bytes());
        }
    }
}

/// A bounds-checked cursor over a verified file body.
pub(crate) struct Reader<'a> {
    pub(crate) b: &'a [u8],
    pub(crate) at: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.b.len() - self.at < n {
            return Err(format!("truncated at byte {} (needs {n} more)", self.at));
        }
        let s = &self.b[self.at..self.at + n];
        self.at += n;
        Ok(s)
    }
    pub(crate) fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }

    /// Reads an id written by [`put_id`], refusing any id the input parser would not make
    /// (a string id that reads as a number would never match a query for it).
    pub(crate) fn id(&mut self) -> Result<RawId, String> {
        match self.take(1)?[0] {
            0 => Ok(RawId::Num(u64::from_le_bytes(
                self.take(8)?.try_into().unwrap(),
            ))),
            1 => {
                let n = u16::from_le_bytes(self.take(2)?.try_into().unwrap()) as usize;
                if n == 0 || n > MAX_ID_LEN {
                    return Err(format!("id length {n} out of range"));
                }
                match parse_id(self.take(n)?) {
                    Ok(id @ RawId::Str(_)) => Ok(id),
                    Ok(RawId::Num(x)) => {
                        Err(format!("string id '{x}' should be stored as a number"))
                    }
                    Err(e) => Err(format!("bad id: {e}")),
                }
            }
            t => Err(format!("bad id tag {t}")),
        }
    }
}

/// Decodes and verifies a factor file. Errors say what is wrong; the caller adds the path.
pub fn decode(bytes: &[u8]) -> Result<FactorFile, String> {
    if bytes.len() < HEADER + 4 {
        return Err(format!(
            "too short ({} bytes) to be a factor file",
            bytes.len()
        ));
    }
    if &bytes[..8] != MAGIC {
        return Err("not a recflow factor file (bad magic number)".into());
    }
    let body = &bytes[..bytes.len() - 4];
    let want = u32::from_le_bytes(bytes[bytes.len() - 4..].try_into().unwrap());
    if crc32fast::hash(body) != want {
        return Err("checksum mismatch: the file is corrupted or truncated".into());
    }
    let mut r = Reader { b: body, at: 8 };
    let version = r.u32()?;
    if version != VERSION {
        return Err(format!(
            "format version {version}, this recflow reads {VERSION}"
        ));
    }
    let side_bytes = r.take(4)?;
    let side = side_bytes[0];
    if side > 1 || side_bytes[1..] != [0, 0, 0] {
        return Err(format!("bad side tag {side_bytes:?}"));
    }
    let vshard = r.u32()?;
    let rows = r.u32()? as usize;
    let dim = r.u32()? as usize;
    if dim == 0 || dim > 1 << 16 {
        return Err(format!("implausible dimension {dim}"));
    }
    // Each row needs at least 4 id bytes and 4·dim factor bytes: bound before allocating.
    let remaining = body.len() - r.at;
    if rows.saturating_mul(4 + 4 * dim) > remaining {
        return Err(format!(
            "header claims {rows} rows of dimension {dim}, but only {remaining} bytes follow"
        ));
    }
    let mut ids = Vec::with_capacity(rows);
    for row in 0..rows {
        ids.push(r.id().map_err(|e| format!("row {row}: {e}"))?);
    }
    let fbytes = r.take(rows * dim * 4)?;
    let factors: Vec<f32> = fbytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    if r.at != body.len() {
        return Err(format!("{} unexpected trailing bytes", body.len() - r.at));
    }
    if let Some(p) = factors.iter().position(|x| !x.is_finite()) {
        return Err(format!("non-finite factor at position {p}"));
    }
    Ok(FactorFile {
        side,
        vshard,
        dim,
        ids,
        factors,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let ids = vec![RawId::Num(3), RawId::Str("alice".into())];
        encode(1, 7, 2, &ids, &[1.0, 2.0, -3.5, 0.25])
    }

    #[test]
    fn roundtrip() {
        let f = decode(&sample()).unwrap();
        assert_eq!((f.side, f.vshard, f.dim), (1, 7, 2));
        assert_eq!(f.ids[1], RawId::Str("alice".into()));
        assert_eq!(f.factors, vec![1.0, 2.0, -3.5, 0.25]);
    }

    #[test]
    fn every_truncation_and_bit_flip_is_refused() {
        let b = sample();
        for n in 0..b.len() {
            assert!(decode(&b[..n]).is_err(), "truncated to {n}");
        }
        for i in 0..b.len() {
            for bit in 0..8 {
                let mut c = b.clone();
                c[i] ^= 1 << bit;
                assert!(decode(&c).is_err(), "flip byte {i} bit {bit}");
            }
        }
    }

    /// Re-signs a body (without its old CRC) so that only the checks behind the CRC apply.
    fn resign(mut b: Vec<u8>) -> Vec<u8> {
        b.truncate(b.len() - 4);
        let crc = crc32fast::hash(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        b
    }

    #[test]
    fn non_canonical_files_are_refused_behind_a_valid_checksum() {
        // Non-zero padding after the side tag.
        let mut b = sample();
        b[13] = 1;
        assert!(decode(&resign(b)).unwrap_err().contains("side tag"));
        // A string id that reads as a number, and one with a tab in it.
        for (id, want) in [("12345", "as a number"), ("al\tce", "control character")] {
            let mut b = encode(0, 1, 1, &[RawId::Str("abcde".into())], &[1.0]);
            let at = b.windows(5).position(|w| w == b"abcde").unwrap();
            b[at..at + 5].copy_from_slice(id.as_bytes());
            let e = decode(&resign(b)).unwrap_err();
            assert!(e.contains(want), "{e}");
        }
        // An id length that runs past the end of the file.
        let mut b = encode(0, 1, 1, &[RawId::Str("abcde".into())], &[1.0]);
        let at = b.windows(5).position(|w| w == b"abcde").unwrap();
        b[at - 2..at].copy_from_slice(&500u16.to_le_bytes());
        assert!(decode(&resign(b)).unwrap_err().contains("truncated"));
        // A non-finite factor.
        let b = encode(0, 1, 1, &[RawId::Num(1)], &[f32::NAN]);
        assert!(decode(&b).unwrap_err().contains("non-finite"));
    }

    #[test]
    fn crafted_lengths_do_not_allocate() {
        // A valid checksum over a header that claims 4 billion rows.
        let mut b = sample();
        b.truncate(b.len() - 4);
        b[20..24].copy_from_slice(&u32::MAX.to_le_bytes());
        let crc = crc32fast::hash(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        let e = decode(&b).unwrap_err();
        assert!(e.contains("only"), "{e}");
    }
}
