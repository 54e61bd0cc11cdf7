//! The recs and similar-items line format, written without a `fmt` round trip for the
//! integers: a run writes one line per (user, rank), so this is a hot path.

use crate::ids::{push_decimal, RawId};

/// Writes the lines of one catalogue's recommendations: each item's id text (and each rank's)
/// is made once, not once per line, and short texts are copied as fixed 16-byte moves instead
/// of a `memcpy` call each (the write is ~10 M lines a run).
pub struct Lines {
    /// `id<TAB>` of every catalogue item back to back, then [`PAD`] bytes.
    items: Vec<u8>,
    item_at: Vec<u32>,
    /// `<TAB>rank<NEWLINE>` for ranks 1..=k, then [`PAD`] bytes.
    ranks: Vec<u8>,
    rank_at: Vec<u32>,
}

/// Bytes copied at once for a short text; every table ends with this many spare bytes.
const PAD: usize = 16;

impl Lines {
    /// The texts of catalogue `ids` and of ranks up to `k`.
    pub fn new(ids: &[RawId], k: usize) -> Lines {
        let mut items = Vec::with_capacity(ids.len() * 8 + PAD);
        let mut item_at = Vec::with_capacity(ids.len() + 1);
        item_at.push(0);
        for id in ids {
            push_id(&mut items, id);
            items.push(b'\t');
            item_at.push(items.len() as u32);
        }
        items.resize(items.len() + PAD, 0);
        let mut ranks = Vec::new();
        let mut rank_at = vec![0, 0];
        for rank in 1..=k {
            ranks.push(b'\t');
            push_decimal(&mut ranks, rank as u64);
            ranks.push(b'\n');
            rank_at.push(ranks.len() as u32);
        }
        ranks.resize(ranks.len() + PAD, 0);
        Lines {
            items,
            item_at,
            ranks,
            rank_at,
        }
    }

    /// Appends `user<TAB>item<TAB>score<TAB>rank<NEWLINE>` for each `(catalogue index, score)`
    /// of `recs`, ranked 1, 2, ... (at most `k` of them).
    pub fn push_user(
        &self,
        out: &mut Vec<u8>,
        user: &RawId,
        recs: impl Iterator<Item = (usize, f32)>,
    ) {
        let mut prefix = Vec::with_capacity(24 + PAD);
        push_id(&mut prefix, user);
        prefix.push(b'\t');
        let plen = prefix.len();
        prefix.resize(plen + PAD, 0);
        for (rank, (i, score)) in recs.enumerate() {
            put(out, &prefix, 0, plen);
            let (a, b) = (self.item_at[i] as usize, self.item_at[i + 1] as usize);
            put(out, &self.items, a, b - a);
            push_score(out, score);
            let (a, b) = (
                self.rank_at[rank + 1] as usize,
                self.rank_at[rank + 2] as usize,
            );
            put(out, &self.ranks, a, b - a);
        }
    }
}

/// Appends `src[at..at + len]`, where `src` has at least [`PAD`] bytes from `at`.
#[inline]
fn put(out: &mut Vec<u8>, src: &[u8], at: usize, len: usize) {
    if len <= PAD {
        out.extend_from_slice(&src[at..at + PAD]);
        out.truncate(out.len() - (PAD - len));
    } else {
        out.extend_from_slice(&src[at..at + len]);
    }
}

/// Appends one `user<TAB>item<TAB>score<TAB>rank<NEWLINE>` line, field by field: the plain
/// reference that [`Lines`] is tested against.
#[cfg(test)]
fn push_line(out: &mut Vec<u8>, user: &RawId, item: &RawId, score: f32, rank: usize) {
    push_id(out, user);
    out.push(b'\t');
    push_id(out, item);
    out.push(b'\t');
    push_score(out, score);
    out.push(b'\t');
    push_decimal(out, rank as u64);
    out.push(b'\n');
}

/// The shortest text that reads back as the same f32 (as serde_json writes floats; about 4×
/// faster than std's Display, which made up a third of the write).
fn push_score(out: &mut Vec<u8>, score: f32) {
    if score.is_finite() {
        out.extend_from_slice(zmij::Buffer::new().format_finite(score).as_bytes());
    } else {
        let _ = std::io::Write::write_fmt(out, format_args!("{score}"));
    }
}

fn push_id(out: &mut Vec<u8>, id: &RawId) {
    match id {
        RawId::Num(n) => push_decimal(out, *n),
        RawId::Str(s) => out.extend_from_slice(s.as_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `Lines` writes what `push_line` writes, for short and long ids and every rank.
    #[test]
    fn lines_match_push_line() {
        let ids = [
            RawId::Num(0),
            RawId::Num(u64::MAX),
            RawId::Str("item-ü".into()),
            RawId::Str("an-item-id-longer-than-sixteen-bytes".into()),
        ];
        let k = 12;
        let lines = Lines::new(&ids, k);
        for user in &ids {
            for take in [0, 1, 4, k] {
                let recs: Vec<(usize, f32)> = (0..take)
                    .map(|r| (r * 7 % ids.len(), 1.0 / (r as f32 + 3.0)))
                    .collect();
                let mut got = b"before".to_vec();
                lines.push_user(&mut got, user, recs.iter().copied());
                let mut want = b"before".to_vec();
                for (rank, &(i, s)) in recs.iter().enumerate() {
                    push_line(&mut want, user, &ids[i], s, rank + 1);
                }
                assert_eq!(
                    String::from_utf8(got).unwrap(),
                    String::from_utf8(want).unwrap()
                );
            }
        }
    }

    /// Ids and rank as `Display` writes them; the score in the shortest text that parses back
    /// to the same bits (NaN aside: one NaN is as good as another).
    #[test]
    fn push_line_round_trips() {
        let ids = [
            RawId::Num(0),
            RawId::Num(7),
            RawId::Num(1234567890),
            RawId::Num(u64::MAX),
            RawId::Str("item-ü".into()),
        ];
        let scores = [
            0.0f32,
            -0.0,
            -1.5e-7,
            3.25,
            1.0,
            0.1,
            f32::MAX,
            f32::MIN_POSITIVE,
            1e-45,
            f32::INFINITY,
            f32::NEG_INFINITY,
            0.123_456_79,
        ];
        for u in &ids {
            for i in &ids {
                for (n, &score) in scores.iter().enumerate() {
                    let rank = n * 11 + 1;
                    let mut got = Vec::new();
                    push_line(&mut got, u, i, score, rank);
                    let line = String::from_utf8(got).unwrap();
                    let f: Vec<&str> = line.strip_suffix('\n').unwrap().split('\t').collect();
                    assert_eq!(f.len(), 4, "{line:?}");
                    assert_eq!(f[0], u.to_string());
                    assert_eq!(f[1], i.to_string());
                    assert_eq!(
                        f[2].parse::<f32>().unwrap().to_bits(),
                        score.to_bits(),
                        "{line:?}"
                    );
                    assert_eq!(f[3], rank.to_string());
                    let shortest = format!("{score}");
                    assert!(
                        f[2].len() <= shortest.len().max(3) + 2,
                        "{line:?} vs {shortest}"
                    );
                }
            }
        }
    }
}
