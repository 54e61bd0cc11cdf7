//! Hashing users into the tables of user buckets (`lsh.transform = "users"`, see
//! [`super::lsh`]): each worker hashes its users by direction, and the per-bucket sums of unit
//! user vectors are summed over all workers in exact fixed point, so the buckets' directions do
//! not depend on the layout. Tables are independent (a table's hyperplanes depend only on the
//! seed and its number), so calibration hashes a table once and keeps it while other sizes grow.

use super::msg::{BucketSum, RecMsg};
use super::planes::hyperplanes;
use super::scan::{score_candidates, Packed};
use crate::cluster::{Comm, CommError};
use std::collections::BTreeMap;
use std::ops::Range;
use timely::worker::Worker;

/// Fixed-point scale of the unit vectors' coordinates: a term is at most 2^32 in magnitude,
/// so a worker's i64 sums cannot overflow below 2^31 users; the sums over workers are i128.
const SCALE: f64 = (1u64 << 32) as f64;

/// One table of user buckets.
pub struct UserTable {
    /// Bucket codes that hold a user on any worker, ascending.
    pub codes: Vec<u64>,
    /// Each bucket's sum of its users' unit vectors (row-major, `dim` wide): its mean
    /// direction up to scale, the same on every worker.
    pub dirs: Vec<f32>,
    /// This worker's rows' bucket, as an index into `codes`.
    pub rows: Vec<u32>,
}

/// Hashes this worker's `users` (row-major, `d` wide) into tables `tables` with `(seed, planes)`
/// hyperplanes per table, on every worker at once (one exchange).
pub fn hash_users(
    worker: &mut Worker,
    comm: &mut Comm,
    (seed, planes): (u64, u32),
    tables: Range<u32>,
    users: &[f32],
    d: usize,
) -> Result<Vec<UserTable>, CommError> {
    let rows = users.len() / d.max(1);
    assert!(rows < 1 << 31, "too many users on one worker");
    let (t0, nt, p) = (tables.start, tables.len(), planes as usize);
    let (row_slots, slots, sums) =
        hash_local(&hyperplanes(seed, tables, planes, d), users, d, nt, p);
    let mut mine: Vec<BucketSum> = slots
        .iter()
        .enumerate()
        .map(|(j, &(t, c))| {
            let s = &sums[j * d..(j + 1) * d];
            let sum = s.iter().map(|&v| i128::from(v)).collect();
            BucketSum {
                table: t0 + t,
                code: c,
                sum,
            }
        })
        .collect();
    mine.sort_unstable_by_key(|e| (e.table, e.code));
    let ch = &mut comm.channel::<RecMsg>(worker);
    ch.broadcast(RecMsg::BucketSums(mine));
    let mut all: BTreeMap<(u32, u64), Vec<i128>> = Default::default();
    for (_, m) in ch.exchange(worker, "recommend: user buckets")? {
        if let RecMsg::BucketSums(v) = m {
            for BucketSum {
                table: t,
                code: c,
                sum: s,
            } in v
            {
                let e = all.entry((t, c)).or_insert_with(|| vec![0; d]);
                e.iter_mut().zip(s).for_each(|(a, b)| *a += b);
            }
        }
    }
    let mut out: Vec<UserTable> = (0..nt)
        .map(|_| UserTable {
            codes: Vec::new(),
            dirs: Vec::new(),
            rows: Vec::with_capacity(rows),
        })
        .collect();
    for ((t, c), s) in all {
        let tab = &mut out[(t - t0) as usize];
        tab.codes.push(c);
        tab.dirs
            .extend(s.iter().map(|&v| (v as f64 / SCALE) as f32));
    }
    // Each local bucket's place among its table's codes, found once per bucket, not per row.
    let place: Vec<u32> = slots
        .iter()
        .map(|&(t, c)| {
            let codes = &out[t as usize].codes;
            codes
                .binary_search(&c)
                .expect("a local bucket is in the sums") as u32
        })
        .collect();
    for (n, &slot) in row_slots.iter().enumerate() {
        out[n % nt].rows.push(place[slot as usize]);
    }
    Ok(out)
}

/// This worker's part of [`hash_users`]: every row's bucket per table (row-major, as a slot:
/// an index into the buckets it met), those buckets as (table from 0, code) and their
/// fixed-point sums (`d` per bucket).
fn hash_local(
    planes: &[f32],
    users: &[f32],
    d: usize,
    nt: usize,
    p: usize,
) -> (Vec<u32>, Vec<(u32, u64)>, Vec<i64>) {
    let mut row_slots = Vec::with_capacity(users.len() / d.max(1) * nt);
    // Bucket (table << 32 | code) → its slot in `sums` (d values per slot).
    let mut slot_of: crate::ids::KeyMap<u32> = Default::default();
    let mut slots: Vec<(u32, u64)> = Vec::new();
    let mut sums: Vec<i64> = Vec::new();
    let packed = Packed::new(planes, d + 1, d);
    let all: Vec<usize> = (0..nt * p).collect();
    let (mut dots, mut unit) = (Vec::new(), vec![0i64; d]);
    const BLOCK: usize = 1024;
    for block in users.chunks(BLOCK * d.max(1)) {
        // Every user's dot product with every hyperplane (the last coordinate of a plane meets
        // the user's 0).
        match &packed {
            Some(pk) => pk.dots(block, &mut dots),
            None => {
                let mut one = Vec::new();
                dots.clear();
                for x in block.chunks_exact(d.max(1)) {
                    let z: Vec<f32> = x.iter().copied().chain([0.0]).collect();
                    score_candidates(&z, planes, d + 1, &all, &mut one);
                    dots.extend_from_slice(&one);
                }
            }
        }
        for (j, x) in block.chunks_exact(d.max(1)).enumerate() {
            let nx = x.iter().map(|v| v * v).sum::<f32>().sqrt();
            let inv = SCALE / nx.max(f32::MIN_POSITIVE) as f64;
            // Fixed point: the sums are exact, so they do not depend on the order of the users.
            unit.iter_mut()
                .zip(x)
                .for_each(|(u, &v)| *u = (v as f64 * inv) as i64);
            let row = &dots[j * nt * p..(j + 1) * nt * p];
            for (t, bits) in row.chunks_exact(p.max(1)).enumerate() {
                let c = bits
                    .iter()
                    .enumerate()
                    .fold(0u64, |c, (j, &s)| c | ((s >= 0.0) as u64) << j);
                let slot = *slot_of.entry((t as u64) << 32 | c).or_insert_with(|| {
                    slots.push((t as u32, c));
                    sums.resize(sums.len() + d, 0);
                    (slots.len() - 1) as u32
                });
                row_slots.push(slot);
                let slot = slot as usize;
                sums[slot * d..(slot + 1) * d]
                    .iter_mut()
                    .zip(&unit)
                    .for_each(|(s, &v)| *s += v);
            }
        }
    }
    (row_slots, slots, sums)
}

/// Every row's bucket id per table (row-major, `rows × tables.len()`): ids run table by table,
/// codes ascending within a table (the order of [`super::lsh::Index::install_user_lists`]).
pub fn bucket_ids(tables: &[&UserTable], rows: usize) -> Vec<u32> {
    let mut offset = Vec::with_capacity(tables.len());
    let mut next = 0u32;
    for t in tables {
        offset.push(next);
        next += t.codes.len() as u32;
    }
    let mut out = Vec::with_capacity(rows * tables.len());
    for r in 0..rows {
        out.extend(tables.iter().zip(&offset).map(|(t, &o)| o + t.rows[r]));
    }
    out
}
