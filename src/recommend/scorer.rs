//! One scorer per recommendation mode behind [`Scorer`], chosen once per run
//! ([`super::recommend`]): the pruned exact scan, the dense exact fallback, popularity, and the
//! LSH scorers of `super::lsh_scorer`. The main pass and the recall measurement
//! (`super::recall`) both rank users through it, so a sampled user's measured list is the list
//! it is recommended.

use super::catalog::Catalog;
use super::scan::{top_k, CatalogIx, ScanIndex};
use crate::side::Side;
use faer::{Accum, MatMut, MatRef, Par};
use std::borrow::Cow;

/// Lists for a block of users.
pub struct Ranked {
    /// Per user, best first: `(catalogue index, score)`.
    pub lists: Vec<Vec<(CatalogIx, f32)>>,
    /// Items scored per user, where the mode counts them (the report's candidates).
    pub scored: Option<Vec<u64>>,
}

/// Finds users' best items.
pub trait Scorer {
    /// Users per block in the main pass.
    fn block(&self) -> usize;

    /// The best `want` items of each user row of `rows` (this worker's rows of `users`),
    /// leaving out `excluded[j]` (sorted catalogue indices). A user's list does not depend on
    /// the other rows ranked with it.
    fn rank(
        &mut self,
        users: &Side,
        rows: &[usize],
        excluded: &[Vec<CatalogIx>],
        want: usize,
    ) -> Ranked;

    /// Every item's score for the `j`-th row of the last [`Scorer::rank`], where the scorer
    /// computed them all (AUC reuses them).
    fn full_row(&self, _j: usize) -> Option<&[f32]> {
        None
    }
}

/// The vectors of `rows`, row-major: borrowed when the rows are consecutive.
pub fn block_of<'a>(users: &'a Side, rows: &[usize]) -> Cow<'a, [f32]> {
    let d = users.dim;
    match (rows.first(), rows.last()) {
        (Some(&a), Some(&b)) if b + 1 - a == rows.len() => {
            Cow::Borrowed(&users.factors[a * d..(b + 1) * d])
        }
        _ => Cow::Owned(rows.iter().flat_map(|&r| users.row(r)).copied().collect()),
    }
}

/// Exact mode with the fused kernel: the pruned, norm-ordered scan ([`ScanIndex`]).
pub struct ExactScan<'a> {
    /// The whole catalogue's scan index.
    pub scan: &'a ScanIndex,
}

impl Scorer for ExactScan<'_> {
    fn block(&self) -> usize {
        192
    }

    fn rank(&mut self, users: &Side, rows: &[usize], ex: &[Vec<CatalogIx>], want: usize) -> Ranked {
        let (lists, scored) = self.scan.top_k_scored(&block_of(users, rows), ex, want);
        Ranked {
            lists: lists
                .into_iter()
                .map(|l| l.into_iter().map(|(s, i)| (i, s)).collect())
                .collect(),
            scored: Some(scored.into_iter().map(u64::from).collect()),
        }
    }
}

/// Exact mode where the kernel does not run: a block of GEMM, then a selection per user.
pub struct ExactDense<'a> {
    cat: &'a Catalog,
    scores: Vec<f32>,
}

impl<'a> ExactDense<'a> {
    /// Over the whole of `cat`.
    pub fn new(cat: &'a Catalog) -> ExactDense<'a> {
        ExactDense {
            cat,
            scores: Vec::new(),
        }
    }
}

impl Scorer for ExactDense<'_> {
    fn block(&self) -> usize {
        (4_000_000 / self.cat.len().max(1)).clamp(1, 256)
    }

    fn rank(&mut self, users: &Side, rows: &[usize], ex: &[Vec<CatalogIx>], want: usize) -> Ranked {
        let (n, d, b) = (self.cat.len(), users.dim, rows.len());
        self.scores.resize(b * n, 0.0);
        let x = block_of(users, rows);
        let x = MatRef::from_row_major_slice(&x, b, d);
        let y = MatRef::from_row_major_slice(&self.cat.factors, n, d);
        let s = MatMut::from_row_major_slice_mut(&mut self.scores[..b * n], b, n);
        faer::linalg::matmul::matmul(s, Accum::Replace, x, y.transpose(), 1.0f32, Par::Seq);
        let lists = (0..b)
            .map(|j| {
                let row = &self.scores[j * n..(j + 1) * n];
                top_k(row, &self.cat.keys, &ex[j], want)
                    .into_iter()
                    .map(|i| (i, row[i]))
                    .collect()
            })
            .collect();
        Ranked {
            lists,
            scored: None,
        }
    }

    fn full_row(&self, j: usize) -> Option<&[f32]> {
        let n = self.cat.len();
        self.scores.get(j * n..(j + 1) * n)
    }
}

/// The baseline: items by interaction count, the same for everybody.
pub struct Popular<'a> {
    cat: &'a Catalog,
    order: Vec<CatalogIx>,
}

impl<'a> Popular<'a> {
    /// Ranks `cat` by popularity.
    pub fn new(cat: &'a Catalog) -> Popular<'a> {
        Popular {
            cat,
            order: cat.by_popularity(),
        }
    }
}

impl Scorer for Popular<'_> {
    fn block(&self) -> usize {
        (4_000_000 / self.cat.len().max(1)).clamp(1, 256)
    }

    fn rank(&mut self, _: &Side, rows: &[usize], ex: &[Vec<CatalogIx>], want: usize) -> Ranked {
        let lists = (0..rows.len())
            .map(|j| {
                self.order
                    .iter()
                    .copied()
                    .filter(|i| ex[j].binary_search(i).is_err())
                    .take(want)
                    .map(|i| (i, self.cat.degrees[i] as f32))
                    .collect()
            })
            .collect();
        Ranked {
            lists,
            scored: None,
        }
    }
}
