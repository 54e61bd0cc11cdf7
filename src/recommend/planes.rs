//! The random hyperplanes of both LSH indexes (item codes in [`super::lsh`], user buckets in
//! [`super::user_tables`]): Gaussian, drawn from the seed and the table's number alone.

use crate::ids::{mix64, SplitMix};

/// The `planes` hyperplanes (dimension `dim + 1`, row-major) of each table in `tables`. A
/// table's planes depend only on the seed and its number, so more tables keep the first ones
/// (calibration hashes users into the new tables only).
pub fn hyperplanes(seed: u64, tables: std::ops::Range<u32>, planes: u32, dim: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(tables.len() * planes as usize * (dim + 1));
    for t in tables.map(u64::from) {
        for j in 0..planes as u64 {
            let mut r = SplitMix::new(mix64(seed ^ mix64(t << 32 | j)));
            out.extend((0..=dim).map(|_| r.next_normal() as f32));
        }
    }
    out
}
