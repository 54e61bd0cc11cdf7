//! Fold-in by projection: with item vectors `Y = V·Σ^½` a row `a` of the matrix gets the user
//! vector `x = a·V·Σ^{-1/2} = (a·Y)·Σ^{-1}`, no solve. The batch model computes its user
//! vectors with this same function, so a new user with a known user's row gets that user's
//! vector bit for bit, and an ad-hoc item list is scored like a user who chose those items.
//! Items fold in symmetrically against the user vectors.

use super::sketch::{self, entry};
use crate::cluster::{Comm, CommError};
use crate::job::SvdInput;
use crate::side::Side;
use timely::worker::Worker;

/// A singular value below this fraction of the largest is numerically zero (the f32 vectors
/// carry ~7 digits): its column is not projected (1/σ would only amplify rounding).
pub const ZERO_SIGMA: f64 = 1e-6;

/// `1/σ_j`, or 0 for numerically zero singular values.
pub fn inverse(sigma: &[f64]) -> Vec<f64> {
    let top = sigma.first().copied().unwrap_or(0.0);
    sigma
        .iter()
        .map(|&s| if s > ZERO_SIGMA * top { 1.0 / s } else { 0.0 })
        .collect()
}

/// `(Σ_e a_e·v_e)·Σ^{-1}` over (entry, vector) pairs, summed in the order given (f64).
pub fn project<'a>(entries: impl Iterator<Item = (f64, &'a [f32])>, inv: &[f64]) -> Vec<f32> {
    let mut acc = vec![0.0f64; inv.len()];
    for (a, v) in entries {
        acc.iter_mut().zip(v).for_each(|(s, &x)| *s += a * x as f64);
    }
    acc.iter().zip(inv).map(|(s, i)| (s * i) as f32).collect()
}

/// Projects the rows of `s` (those `only` flags, or all) against the gathered vectors of the
/// other side.
pub fn project_rows(
    s: &mut Side,
    gathered: &[f32],
    inv: &[f64],
    input: SvdInput,
    only: Option<&[bool]>,
) {
    let d = inv.len();
    for r in 0..s.rows() {
        if only.is_some_and(|m| !m[r]) {
            continue;
        }
        let (cols, conf) = (
            &s.cols[s.indptr[r]..s.indptr[r + 1]],
            &s.conf[s.indptr[r]..s.indptr[r + 1]],
        );
        let entries = cols.iter().zip(conf).map(|(&c, &w)| {
            let c = c as usize;
            (entry(input, w), &gathered[c * d..(c + 1) * d])
        });
        let x = project(entries, inv);
        s.factors[r * d..(r + 1) * d].copy_from_slice(&x);
    }
}

/// Gathers `o`'s vectors at `s`'s owners and projects `s`'s rows (flagged by `only`).
/// Collective.
#[allow(clippy::too_many_arguments)]
pub fn fold_side(
    worker: &mut Worker,
    comm: &mut Comm,
    exchange_kib: usize,
    s: &mut Side,
    o: &Side,
    sigma: &[f64],
    input: SvdInput,
    only: Option<&[bool]>,
) -> Result<(), CommError> {
    let g = sketch::gather(worker, comm, exchange_kib, s, o)?;
    project_rows(s, &g, &inverse(sigma), input, only);
    Ok(())
}

/// A warm start of an svd model: no new factorisation. New items are projected against the
/// parent's vectors of known users, then every user against the items, so new users get
/// their projection and known users take up their new interactions (a user whose row did not
/// change keeps the parent's vector exactly). Collective.
#[allow(clippy::too_many_arguments)]
pub fn fold_in(
    worker: &mut Worker,
    comm: &mut Comm,
    exchange_kib: usize,
    (users, items): (&mut Side, &mut Side),
    (new_users, new_items): (&[bool], &[bool]),
    sigma: &[f64],
    input: SvdInput,
) -> Result<(), CommError> {
    let d = users.dim;
    // New users' random starts must not leak into the new items.
    for (r, _) in new_users.iter().enumerate().filter(|p| *p.1) {
        users.factors[r * d..(r + 1) * d].fill(0.0);
    }
    fold_side(
        worker,
        comm,
        exchange_kib,
        items,
        users,
        sigma,
        input,
        Some(new_items),
    )?;
    fold_side(worker, comm, exchange_kib, users, items, sigma, input, None)
}
