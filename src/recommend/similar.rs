//! Similar items: for each item a worker owns, the `k` most similar items by cosine, among all
//! items or among its LSH candidates.

use super::catalog::Catalog;
use super::lsh::Index;
use super::scan::{better, top_k, ScanIndex};
use super::text;
use crate::side::Side;
use faer::{Accum, MatMut, MatRef, Par};

/// Rows of `f` (`d` wide) scaled to unit norm (zero rows stay zero).
pub fn unit_rows(f: &[f32], d: usize) -> Vec<f32> {
    let mut v = f.to_vec();
    for row in v.chunks_mut(d.max(1)) {
        let nn = super::dot(row, row).sqrt();
        if nn > 0.0 {
            row.iter_mut().for_each(|x| *x /= nn);
        }
    }
    v
}

/// How one block of items finds its neighbours.
enum Finder<'a> {
    /// The fused scan over the unit vectors (all norms are 1, so nothing is pruned, but no
    /// score matrix is stored or sorted: 2–3× faster than GEMM plus a selection at 100 k items).
    Scan(ScanIndex),
    /// Blocks of GEMM, then a selection per item.
    Dense(Vec<f32>),
    /// The item's LSH candidates (same buckets, probes and head list), scored one by one.
    Lsh(&'a Index, Vec<u32>),
}

/// For each item this worker owns, the `k` most similar items by cosine: among all items, or
/// among the item's LSH candidates when `index` is given. Returns the part file's bytes
/// (`item<TAB>other<TAB>cosine<TAB>rank`) and its line count.
pub fn similar_items(
    cat: &Catalog,
    items: &Side,
    index: Option<&Index>,
    k: usize,
) -> (Vec<u8>, u64) {
    let (n, d) = (cat.len(), items.dim);
    let all = unit_rows(&cat.factors, d);
    let mine = unit_rows(&items.factors, d);
    let mut finder = match index {
        Some(ix) => Finder::Lsh(ix, vec![u32::MAX; n]),
        None => match ScanIndex::build(&cat.keys, &all, d) {
            Some(s) => Finder::Scan(s),
            None => Finder::Dense(Vec::new()),
        },
    };
    let block = match finder {
        Finder::Scan(_) => 192,
        _ => (4_000_000 / n.max(1)).clamp(1, 256),
    };
    let (mut out, mut lines) = (Vec::new(), 0u64);
    let text = text::Lines::new(&cat.ids, k);
    let me_of = |r: usize| cat.index(items.key_of(r)).expect("own item in catalogue");
    let mut r0 = 0;
    while r0 < items.rows() {
        let r1 = (r0 + block).min(items.rows());
        let rows: Vec<usize> = (r0..r1).collect();
        let me: Vec<usize> = rows.iter().map(|&r| me_of(r)).collect();
        let lists = neighbours(&mut finder, cat, items, &all, &mine, &rows, &me, k);
        for (&r, best) in rows.iter().zip(lists) {
            lines += best.len() as u64;
            text.push_user(
                &mut out,
                &items.ids[r],
                best.into_iter().map(|(s, i)| (i, s)),
            );
        }
        r0 = r1;
    }
    (out, lines)
}

/// The `k` best `(cosine, catalogue index)` of each item row in `rows` (catalogue index
/// `me[j]`, left out), best first.
#[allow(clippy::too_many_arguments)]
fn neighbours(
    finder: &mut Finder,
    cat: &Catalog,
    items: &Side,
    all: &[f32],
    mine: &[f32],
    rows: &[usize],
    me: &[usize],
    k: usize,
) -> Vec<Vec<(f32, usize)>> {
    let (n, d) = (cat.len(), items.dim);
    let x: Vec<f32> = rows
        .iter()
        .flat_map(|&r| &mine[r * d..(r + 1) * d])
        .copied()
        .collect();
    match finder {
        Finder::Scan(ix) => {
            let ex: Vec<Vec<usize>> = me.iter().map(|&m| vec![m]).collect();
            ix.top_k(&x, &ex, k)
        }
        Finder::Dense(scores) => {
            let b = rows.len();
            scores.resize(b * n, 0.0);
            let xm = MatRef::from_row_major_slice(&x, b, d);
            let y = MatRef::from_row_major_slice(all, n, d);
            let s = MatMut::from_row_major_slice_mut(&mut scores[..b * n], b, n);
            faer::linalg::matmul::matmul(s, Accum::Replace, xm, y.transpose(), 1.0f32, Par::Seq);
            (0..b)
                .map(|j| {
                    let row = &scores[j * n..(j + 1) * n];
                    top_k(row, &cat.keys, &[me[j]], k)
                        .into_iter()
                        .map(|i| (row[i], i))
                        .collect()
                })
                .collect()
        }
        Finder::Lsh(ix, mark) => rows
            .iter()
            .zip(me)
            .map(|(&r, &m)| {
                let x = &mine[r * d..(r + 1) * d];
                let mut cand = Vec::new();
                ix.candidates(&items.factors[r * d..(r + 1) * d], |i| {
                    let i = i as usize;
                    if i != m && mark[i] != r as u32 {
                        mark[i] = r as u32;
                        cand.push((super::dot(x, &all[i * d..(i + 1) * d]), i));
                    }
                });
                cand.sort_unstable_by(|a, b| better((a.0, cat.keys[a.1]), (b.0, cat.keys[b.1])));
                cand.truncate(k);
                cand
            })
            .collect(),
    }
}
