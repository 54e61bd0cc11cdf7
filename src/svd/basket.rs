//! The vector of an ad-hoc item list (a basket, a curated list) against a published model's
//! fixed item factors: a projection for an svd model (the same function as the batch users),
//! one weighted least-squares solve for an als model (the user half-step's system for a user
//! who chose exactly these items, each with weight 1).

use super::{dense, project};
use crate::ids::RawId;
use crate::job::{Job, Method};
use std::collections::HashMap;

/// The list's items as rows of the loaded item factors, ascending (= global key order, the
/// order a user's interactions are summed in). Unknown ids and an empty list are errors.
pub fn rows_of(items: &[RawId], list: &[RawId], model: &str) -> Result<Vec<usize>, String> {
    if list.is_empty() {
        return Err(
            "--items: the list is empty; give item ids separated by commas, e.g. --items 12,40,7"
                .into(),
        );
    }
    let at: HashMap<&RawId, usize> = items.iter().enumerate().map(|(i, id)| (id, i)).collect();
    let unknown: Vec<String> = list
        .iter()
        .filter(|id| !at.contains_key(id))
        .map(|id| crate::escape::escape(&id.to_string()))
        .collect();
    if !unknown.is_empty() {
        return Err(format!(
            "--items: unknown item(s) {} : not in model {model} ({} items); check the ids",
            unknown.join(", "),
            items.len()
        ));
    }
    let mut rows: Vec<usize> = list.iter().map(|id| at[id]).collect();
    rows.sort_unstable();
    rows.dedup();
    Ok(rows)
}

/// The query vector of the list `rows` (from [`rows_of`]) for the model of `manifest`, whose
/// item factors are `fac` (`n × d`, row-major).
pub fn vector(
    manifest: &crate::store::Manifest,
    fac: &[f32],
    d: usize,
    rows: &[usize],
) -> Result<Vec<f32>, String> {
    let job: Job = serde_json::from_value(manifest.job.clone()).map_err(|e| {
        format!("the manifest's job cannot be read ({e}): was it written by a newer recflow?")
    })?;
    let alpha = manifest.confidence["alpha"].as_f64().unwrap_or(0.0);
    // A listed item is one interaction of weight 1.
    let c = job.confidence.of(alpha, 1.0);
    let row = |r: usize| &fac[r * d..(r + 1) * d];
    if job.model.method == Method::Svd {
        let rec = super::of_manifest(manifest)
            .ok_or("the manifest says svd but has no singular values (svd record missing)")?;
        let a = super::sketch::entry(job.svd.input, c);
        let inv = project::inverse(&rec.singular_values);
        return Ok(project::project(rows.iter().map(|&r| (a, row(r))), &inv));
    }
    Ok(solve_als(&job, fac, d, rows, c))
}

/// `x = (YᵀY + Σ_i (c−1)·y_iy_iᵀ + λI)⁻¹ · Σ_i c·y_i` over the listed items (f64).
fn solve_als(job: &Job, fac: &[f32], d: usize, rows: &[usize], c: f32) -> Vec<f32> {
    let n = fac.len() / d.max(1);
    let y: Vec<f64> = fac.iter().map(|&x| x as f64).collect();
    let mut a = dense::gram(&y, n, d);
    let conf = vec![c; rows.len()];
    let lam = crate::als::lambda_of(&job.als, &conf, n as u64);
    let mut b = vec![0.0f64; d];
    for &r in rows {
        let v = &y[r * d..(r + 1) * d];
        for i in 0..d {
            b[i] += c as f64 * v[i];
            for j in 0..d {
                a[i * d + j] += (c as f64 - 1.0) * v[i] * v[j];
            }
        }
    }
    for i in 0..d {
        a[i * d + i] += lam;
    }
    let Some(r) = dense::cholesky_upper(&a, d) else {
        return vec![0.0; d];
    };
    // RᵀR x = b: forward then backward substitution.
    let mut z = vec![0.0f64; d];
    for i in 0..d {
        let s: f64 = (0..i).map(|k| r[k * d + i] * z[k]).sum();
        z[i] = (b[i] - s) / r[i * d + i];
    }
    let mut x = vec![0.0f64; d];
    for i in (0..d).rev() {
        let s: f64 = (i + 1..d).map(|k| r[i * d + k] * x[k]).sum();
        x[i] = (z[i] - s) / r[i * d + i];
    }
    x.iter().map(|&v| v as f32).collect()
}
