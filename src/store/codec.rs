//! Varints and id codes shared by the compact store formats (snapshot, held-out pairs).

use super::format::Reader;
use crate::ids::RawId;

pub(crate) fn put_varint(b: &mut Vec<u8>, mut x: u128) {
    while x >= 0x80 {
        b.push(x as u8 | 0x80);
        x >>= 7;
    }
    b.push(x as u8);
}

pub(crate) fn zigzag(x: i128) -> u128 {
    ((x << 1) ^ (x >> 127)) as u128
}

pub(crate) fn unzigzag(x: u128) -> i128 {
    (x >> 1) as i128 ^ -((x & 1) as i128)
}

/// An id's code: numeric ids as `delta << 1` (from `prev`), string ids as `len << 1 | 1`,
/// followed by their bytes.
pub(crate) fn code(id: &RawId, prev: u64) -> u128 {
    match id {
        RawId::Num(n) => ((n - prev) as u128) << 1,
        RawId::Str(s) => ((s.len() as u128) << 1) | 1,
    }
}

pub(crate) fn put_str(b: &mut Vec<u8>, id: &RawId) {
    if let RawId::Str(s) = id {
        b.extend_from_slice(s.as_bytes());
    }
}

/// A varint at the start of `b`: (value, bytes used); `None` when cut short or over 128 bits.
pub(crate) fn read_varint(b: &[u8]) -> Option<(u128, usize)> {
    let mut x = 0u128;
    for (n, &byte) in b.iter().enumerate().take(19) {
        // One encoding per value: no zero high byte, nothing past bit 127.
        if (n > 0 && byte == 0) || (n == 18 && byte > 3) {
            return None;
        }
        x |= ((byte & 0x7f) as u128) << (7 * n);
        if byte < 0x80 {
            return Some((x, n + 1));
        }
    }
    None
}

impl Reader<'_> {
    pub(crate) fn varint(&mut self) -> Result<u128, String> {
        let (x, n) = read_varint(&self.b[self.at..])
            .ok_or_else(|| format!("bad varint at byte {}", self.at))?;
        self.at += n;
        Ok(x)
    }

    /// An id from its code (see [`code`]); numeric deltas are from `prev`.
    pub(crate) fn coded_id(&mut self, code: u128, prev: u64) -> Result<RawId, String> {
        if code & 1 == 0 {
            let d = u64::try_from(code >> 1).map_err(|_| "numeric id out of range")?;
            return prev
                .checked_add(d)
                .map(RawId::Num)
                .ok_or_else(|| "numeric id out of range".into());
        }
        let n = usize::try_from(code >> 1).unwrap_or(usize::MAX);
        if n == 0 || n > crate::ids::MAX_ID_LEN {
            return Err(format!("id length {n} out of range"));
        }
        match crate::ids::parse_id(self.take(n)?) {
            Ok(id @ RawId::Str(_)) => Ok(id),
            Ok(RawId::Num(x)) => Err(format!("string id '{x}' should be stored as a number")),
            Err(e) => Err(format!("bad id: {e}")),
        }
    }
}
