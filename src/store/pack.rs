//! Packed files: the per-virtual-shard sections a worker owns, in one file with an index.
//!
//! A version used to hold one factor file per (side, virtual shard) and one snapshot file per
//! virtual shard: 768 small files for 256 virtual shards. A pack holds all the sections one
//! worker writes for one kind (`users`, `items` or `snapshot`), so a version holds O(workers)
//! files, and a reader with another worker layout still finds any virtual shard by the index.
//! Each section is a complete, self-checking file of its own format (a factor section is
//! byte for byte the per-shard factor file older versions stored), so the content of a packed
//! version is the content of a per-shard one.
//!
//! Layout (little-endian): magic `RFLWPAK1`, format version u32, kind u8 + 3 zero bytes,
//! sections u32, then per section its vshard u32 and byte length u64 (vshards strictly
//! ascending), then a CRC-32 of everything before it (the index's own checksum), then the
//! sections back to back, nothing after the last.

use super::format::Reader;

/// File magic.
pub const MAGIC: &[u8; 8] = b"RFLWPAK1";
/// Current format version.
pub const VERSION: u32 = 1;
const HEADER: usize = 8 + 4 + 4 + 4;
const ENTRY: usize = 4 + 8;

/// What a pack holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// User factor sections ([`super::format`]).
    Users = 0,
    /// Item factor sections ([`super::format`]).
    Items = 1,
    /// Interaction snapshot sections ([`super::snapshot`]).
    Snapshot = 2,
}

impl Kind {
    fn from_tag(t: u8) -> Option<Kind> {
        [Kind::Users, Kind::Items, Kind::Snapshot]
            .into_iter()
            .find(|k| *k as u8 == t)
    }
}

/// Encodes `sections` (vshard, bytes), which must be in strictly ascending vshard order.
pub fn encode(kind: Kind, sections: &[(u32, Vec<u8>)]) -> Vec<u8> {
    assert!(
        sections.windows(2).all(|w| w[0].0 < w[1].0),
        "pack sections out of order"
    );
    let body: usize = sections.iter().map(|s| s.1.len()).sum();
    let mut b = Vec::with_capacity(HEADER + sections.len() * ENTRY + 4 + body);
    b.extend_from_slice(MAGIC);
    b.extend_from_slice(&VERSION.to_le_bytes());
    b.extend_from_slice(&[kind as u8, 0, 0, 0]);
    b.extend_from_slice(&(sections.len() as u32).to_le_bytes());
    for (vs, s) in sections {
        b.extend_from_slice(&vs.to_le_bytes());
        b.extend_from_slice(&(s.len() as u64).to_le_bytes());
    }
    let crc = crc32fast::hash(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    for (_, s) in sections {
        b.extend_from_slice(s);
    }
    b
}

/// Whether `bytes` start like a pack (as opposed to a per-shard file of an older version).
pub fn is_pack(bytes: &[u8]) -> bool {
    bytes.starts_with(MAGIC)
}

/// Splits a pack of `kind` into its sections (vshard, bytes), checking the index: its
/// checksum, its order, and that the sections exactly fill the file. Errors say what is
/// wrong; the caller adds the path. The sections' own formats check their content.
pub fn decode(bytes: &[u8], kind: Kind) -> Result<Vec<(u32, &[u8])>, String> {
    if bytes.len() < HEADER + 4 || !is_pack(bytes) {
        return Err("not a recflow packed file (bad magic number or too short)".into());
    }
    let mut r = Reader { b: bytes, at: 8 };
    let version = r.u32()?;
    if version != VERSION {
        return Err(format!(
            "packed file format version {version}, this recflow reads {VERSION}"
        ));
    }
    let tag = r.take(4)?;
    let found = Kind::from_tag(tag[0]).filter(|_| tag[1..] == [0, 0, 0]);
    if found != Some(kind) {
        return Err(format!(
            "packed index: holds kind {tag:?}, expected {kind:?} sections"
        ));
    }
    let n = r.u32()? as usize;
    if n.saturating_mul(ENTRY) > bytes.len() - r.at {
        return Err(format!(
            "packed index: claims {n} sections, more than the file can hold"
        ));
    }
    let index_end = r.at + n * ENTRY;
    let want = u32::from_le_bytes(r_slice(bytes, index_end, 4)?.try_into().expect("4 bytes"));
    if crc32fast::hash(&bytes[..index_end]) != want {
        return Err("packed index: checksum mismatch: the file is corrupted or truncated".into());
    }
    let mut entries = Vec::with_capacity(n);
    for _ in 0..n {
        let vs = r.u32()?;
        let len = u64::from_le_bytes(r.take(8)?.try_into().expect("8 bytes"));
        entries.push((vs, len));
    }
    r.at += 4;
    let mut out = Vec::with_capacity(n);
    for (j, &(vs, len)) in entries.iter().enumerate() {
        if j > 0 && entries[j - 1].0 >= vs {
            return Err(format!(
                "packed index: virtual shard {vs} after {}: not ascending",
                entries[j - 1].0
            ));
        }
        let len =
            usize::try_from(len).map_err(|_| format!("packed index: section {vs} too long"))?;
        let s = r
            .take(len)
            .map_err(|e| format!("packed index: section of shard {vs}: {e}"))?;
        out.push((vs, s));
    }
    if r.at != bytes.len() {
        return Err(format!(
            "packed index: {} bytes after the last section",
            bytes.len() - r.at
        ));
    }
    Ok(out)
}

fn r_slice(b: &[u8], at: usize, n: usize) -> Result<&[u8], String> {
    b.get(at..at + n)
        .ok_or_else(|| format!("packed index: truncated at byte {at}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        encode(
            Kind::Items,
            &[(1, b"abc".to_vec()), (5, Vec::new()), (9, b"xy".to_vec())],
        )
    }

    #[test]
    fn round_trips_and_checks_the_kind() {
        let b = sample();
        let s = decode(&b, Kind::Items).unwrap();
        let want: Vec<(u32, &[u8])> = vec![(1, b"abc"), (5, b""), (9, b"xy")];
        assert_eq!(s, want);
        assert!(decode(&b, Kind::Users)
            .unwrap_err()
            .contains("expected Users"));
        assert_eq!(
            decode(&encode(Kind::Snapshot, &[]), Kind::Snapshot).unwrap(),
            vec![]
        );
    }

    /// Any damage to the index, or a file cut short or extended, is refused; damage inside a
    /// section is for the section's own format to find.
    #[test]
    fn a_damaged_index_or_length_is_refused() {
        let b = sample();
        let index_end = HEADER + 3 * ENTRY + 4;
        for n in 0..b.len() {
            assert!(decode(&b[..n], Kind::Items).is_err(), "truncated to {n}");
        }
        for i in 0..index_end {
            let mut c = b.clone();
            c[i] ^= 0x10;
            assert!(decode(&c, Kind::Items).is_err(), "flip at {i}");
        }
        let mut c = b.clone();
        c.push(0);
        assert!(decode(&c, Kind::Items)
            .unwrap_err()
            .contains("after the last"));
    }

    /// A re-signed index whose lengths do not add up, or whose shards are out of order, is
    /// refused without allocating from the claimed sizes.
    #[test]
    fn a_consistent_checksum_over_a_bad_index_is_refused() {
        let resign = |mut b: Vec<u8>| {
            let end = HEADER + 3 * ENTRY;
            let crc = crc32fast::hash(&b[..end]);
            b[end..end + 4].copy_from_slice(&crc.to_le_bytes());
            b
        };
        let mut c = sample();
        c[HEADER + 4..HEADER + 12].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(decode(&resign(c), Kind::Items).is_err());
        let mut c = sample();
        c[HEADER + ENTRY..HEADER + ENTRY + 4].copy_from_slice(&0u32.to_le_bytes());
        let e = decode(&resign(c), Kind::Items).unwrap_err();
        assert!(e.contains("not ascending"), "{e}");
        let mut c = sample();
        c[16..20].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode(&c, Kind::Items).unwrap_err().contains("claims"));
    }
}
