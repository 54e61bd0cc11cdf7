//! The recs and similar-items line format, written without a `fmt` round trip for the
//! integers: a run writes one line per (user, rank), so this is a hot path.

use crate::ids::{push_decimal, RawId};

/// Appends `user<TAB>item<TAB>score<TAB>rank\n` (the recs line) without a `fmt` round trip for
/// the integers: 10 M lines per run make this a hot path.
pub fn push_line(out: &mut Vec<u8>, user: &RawId, item: &RawId, score: f32, rank: usize) {
    push_id(out, user);
    out.push(b'\t');
    push_id(out, item);
    out.push(b'\t');
    // The shortest text that reads back as the same f32 (as serde_json writes floats; about
    // 4× faster than std's Display, which made up a third of the write).
    if score.is_finite() {
        out.extend_from_slice(zmij::Buffer::new().format_finite(score).as_bytes());
    } else {
        let _ = std::io::Write::write_fmt(out, format_args!("{score}"));
    }
    out.push(b'\t');
    push_decimal(out, rank as u64);
    out.push(b'\n');
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
