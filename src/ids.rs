//! Raw entity ids and the stable hash that places them in virtual shards.
//!
//! Ids arrive as arbitrary strings. Canonical decimal integers (the common case) are kept as
//! `u64` so that parsing, hashing, sorting and shipping them stays cheap; everything else is a
//! string. The hash depends only on the id, never on the worker that read it, which is what
//! makes a model independent of the worker count.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Longest accepted string id, in bytes. Longer ids are almost always a parsing mistake
/// (a wrong delimiter), and bounding them bounds model-file decoding too.
pub const MAX_ID_LEN: usize = 512;

/// A user or item id as it appeared in the input.
///
/// Ordering (used inside a virtual shard): all numeric ids by value, then string ids
/// lexicographically by bytes.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum RawId {
    /// A canonical decimal integer: digits only, no sign, no leading zero (except "0").
    Num(u64),
    /// Any other non-empty UTF-8 token.
    Str(Box<str>),
}

/// Why a token is not a valid id.
#[derive(Debug, PartialEq, Eq)]
pub enum IdError {
    /// The token is empty.
    Empty,
    /// The token is longer than [`MAX_ID_LEN`] bytes.
    TooLong(usize),
    /// The token is not valid UTF-8.
    NotUtf8,
}

impl fmt::Display for IdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdError::Empty => write!(f, "empty id"),
            IdError::TooLong(n) => write!(f, "id is {n} bytes long (limit {MAX_ID_LEN})"),
            IdError::NotUtf8 => write!(f, "id is not valid UTF-8"),
        }
    }
}

impl RawId {
    /// Parses a token: canonical integers become `Num`, anything else `Str`.
    pub fn parse(tok: &[u8]) -> Result<RawId, IdError> {
        if tok.is_empty() {
            return Err(IdError::Empty);
        }
        if let Some(n) = parse_canonical_u64(tok) {
            return Ok(RawId::Num(n));
        }
        if tok.len() > MAX_ID_LEN {
            return Err(IdError::TooLong(tok.len()));
        }
        let s = std::str::from_utf8(tok).map_err(|_| IdError::NotUtf8)?;
        Ok(RawId::Str(s.into()))
    }

    /// The stable 64-bit hash of this id (independent of process, platform and worker).
    pub fn stable_hash(&self) -> u64 {
        match self {
            RawId::Num(n) => mix64(n ^ 0x5851_f42d_4c95_7f2d),
            RawId::Str(s) => {
                // FNV-1a, then a finaliser so that short strings spread over all bits.
                let mut h: u64 = 0xcbf2_9ce4_8422_2325;
                for &b in s.as_bytes() {
                    h ^= b as u64;
                    h = h.wrapping_mul(0x0000_0100_0000_01b3);
                }
                mix64(h ^ 0x2545_f491_4f6c_dd1d)
            }
        }
    }

    /// The virtual shard of this id among `v` shards.
    pub fn vshard(&self, v: u32) -> u32 {
        (self.stable_hash() % v as u64) as u32
    }
}

impl fmt::Display for RawId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RawId::Num(n) => write!(f, "{n}"),
            RawId::Str(s) => f.write_str(s),
        }
    }
}

/// Parses digits-only tokens without leading zeros that fit in a `u64`.
fn parse_canonical_u64(tok: &[u8]) -> Option<u64> {
    if tok.len() > 20 || (tok.len() > 1 && tok[0] == b'0') {
        return None;
    }
    let mut n: u64 = 0;
    for &b in tok {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add((b - b'0') as u64)?;
    }
    Some(n)
}

/// SplitMix64 finaliser: a bijective, well-mixing map on `u64`.
pub fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Hasher for maps keyed by `u64` entity keys: one [`mix64`] per key, several times cheaper
/// than the default SipHash, which buys nothing here (keys are not attacker-chosen strings).
#[derive(Clone, Copy, Debug, Default)]
pub struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = mix64(self.0 ^ b as u64);
        }
    }
    fn write_u64(&mut self, k: u64) {
        self.0 = mix64(self.0 ^ k);
    }
}

/// A `HashMap` keyed by `u64` with [`KeyHasher`].
pub type KeyMap<V> = std::collections::HashMap<u64, V, std::hash::BuildHasherDefault<KeyHasher>>;

/// A tiny deterministic generator (SplitMix64) for seeded per-entity randomness.
///
/// We use our own rather than `rand`'s `StdRng` because model bits must not change when a
/// dependency changes its algorithm: a published model is reproducible from (seed, raw id).
#[derive(Clone, Debug)]
pub struct SplitMix(u64);

impl SplitMix {
    /// A generator whose stream depends only on `seed`.
    pub fn new(seed: u64) -> Self {
        SplitMix(seed)
    }
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1) with 53 bits of precision.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
    /// A standard normal sample (Box–Muller).
    pub fn next_normal(&mut self) -> f64 {
        let u1 = self.next_f64().max(f64::MIN_POSITIVE);
        let u2 = self.next_f64();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
    /// Uniform integer in [0, n).
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }
}

/// Appends `n` in decimal: the writers of large TSV files (recs, generated data) call this
/// millions of times, and it skips `fmt`'s machinery.
pub fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[at..]);
}

/// One consolidated pair: (user, item, summed fixed-point weight, newest event time).
pub type Pair = (RawId, RawId, i128, i64);

/// Parses one id token as every reader does (lines, Parquet, the store): [`RawId::parse`] (non-empty, at most
/// [`MAX_ID_LEN`] bytes, UTF-8), and no control characters (a tab, carriage return
/// or escape inside an id would corrupt the TSV outputs). The error says what is wrong.
pub fn parse_id(tok: &[u8]) -> Result<RawId, String> {
    let id = RawId::parse(tok).map_err(|e| e.to_string())?;
    if let RawId::Str(s) = &id {
        if let Some(c) = s.chars().find(|c| c.is_control()) {
            return Err(format!(
                "id contains the control character {:?} (U+{:04X}): is input.format right? ids may not contain tabs, line breaks or other control characters",
                c, c as u32
            ));
        }
    }
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_integers_are_numbers() {
        assert_eq!(RawId::parse(b"0").unwrap(), RawId::Num(0));
        assert_eq!(RawId::parse(b"123").unwrap(), RawId::Num(123));
        assert_eq!(
            RawId::parse(b"18446744073709551615").unwrap(),
            RawId::Num(u64::MAX)
        );
        // Overflow, leading zeros, signs stay strings: "007" and "7" are different ids.
        assert_eq!(
            RawId::parse(b"18446744073709551616").unwrap(),
            RawId::Str("18446744073709551616".into())
        );
        assert_eq!(RawId::parse(b"007").unwrap(), RawId::Str("007".into()));
        assert_eq!(RawId::parse(b"-1").unwrap(), RawId::Str("-1".into()));
    }

    #[test]
    fn bad_tokens_are_rejected() {
        assert_eq!(RawId::parse(b""), Err(IdError::Empty));
        assert_eq!(RawId::parse(&[0xff, 0xfe]), Err(IdError::NotUtf8));
        let long = vec![b'a'; MAX_ID_LEN + 1];
        assert_eq!(RawId::parse(&long), Err(IdError::TooLong(MAX_ID_LEN + 1)));
    }

    #[test]
    fn ordering_numbers_then_strings() {
        let mut v = [
            RawId::parse(b"b").unwrap(),
            RawId::parse(b"10").unwrap(),
            RawId::parse(b"a").unwrap(),
            RawId::parse(b"9").unwrap(),
        ];
        v.sort();
        let s: Vec<String> = v.iter().map(|x| x.to_string()).collect();
        assert_eq!(s, ["9", "10", "a", "b"]);
    }

    const PINNED_NUM_1: u64 = 0xc1b4bb728dd96dc3;
    const PINNED_STR_A: u64 = 0xef55bf683d76609a;

    #[test]
    fn hash_is_stable_and_spreads() {
        // Pinned values: changing the hash silently re-shards every stored model.
        assert_eq!(RawId::Num(1).stable_hash(), PINNED_NUM_1);
        assert_eq!(RawId::Str("a".into()).stable_hash(), PINNED_STR_A);
        let mut counts = [0u32; 16];
        for i in 0..16_000u64 {
            counts[RawId::Num(i).vshard(16) as usize] += 1;
        }
        assert!(
            counts.iter().all(|&c| (800..1200).contains(&c)),
            "{counts:?}"
        );
        let mut counts = [0u32; 8];
        for i in 0..8000u64 {
            counts[RawId::Str(format!("user-{i}").into()).vshard(8) as usize] += 1;
        }
        assert!(
            counts.iter().all(|&c| (800..1200).contains(&c)),
            "{counts:?}"
        );
    }

    #[test]
    fn splitmix_uniform_in_range() {
        let mut r = SplitMix::new(7);
        for _ in 0..1000 {
            let x = r.next_f64();
            assert!((0.0..1.0).contains(&x));
            assert!(r.below(10) < 10);
        }
    }
}
