//! Randomized truncated SVD (Halko, Martinsson & Tropp 2011, Alg. 4.4 with 5.1), the
//! reference's non-iterative second model, on the same sharded sides as ALS.
//!
//! With A the users × items matrix (1 per pair, or its confidence), `l = rank + oversample`:
//! 1. Ω (items × l) is drawn per raw item id; `Y = AΩ` at the user owners; Y ← orth(Y);
//! 2. `q` power iterations, each `Z = orth(AᵀY)` at the item owners, `Y = orth(AZ)`;
//! 3. `Z = AᵀQ = Bᵀ` for `B = QᵀA`; `Z = Q_z·R` (Cholesky-QR); the small SVD
//!    `Rᵀ = Ũ·Σ·Wᵀ` on worker 0 gives `B = Ũ·Σ·(Q_z·W)ᵀ`, so `V = Q_z·W`;
//! 4. published: items `V_k·Σ_k^½`, users the projection `A·V_k·Σ_k^{-1/2}` ([`project`]).
//!
//! Users are projected rather than taken as `Q·Ũ·Σ^½`: `A·V·Vᵀ` is the best approximation of
//! A with row space V (so at least as good in Frobenius norm), and the batch vectors are then
//! exactly what fold-in and the `--items` query compute. orth() is Cholesky-QR twice, its
//! Grams summed per virtual shard in virtual-shard order, so the factors are bit-identical
//! for any worker count and process layout.

pub mod basket;
pub mod dense;
pub mod msg;
pub mod project;
pub mod sketch;

use crate::als::{self, AfterIteration, TrainReport};
use crate::cluster::{Comm, CommError};
use crate::job::{Job, Method};
use crate::progress::Log;
use crate::side::Side;
use msg::SvdMsg;
use sketch::{orthonormalise, product, set_vectors, to_f32};
use std::time::Instant;
use timely::worker::Worker;

use crate::store::manifest::SvdReport;

/// Trains the job's model: ALS (`start`: iterations already done, `after`: checkpoints), or
/// the svd — skipped on a warm start, where `warm::fold_in` projected everything
/// against the parent's factorisation (`parent`: its svd record and version).
#[allow(clippy::too_many_arguments)]
pub fn train_model(
    worker: &mut Worker,
    comm: &mut Comm,
    job: &Job,
    (users, items): (&mut Side, &mut Side),
    log: &Log,
    start: usize,
    after: &mut AfterIteration<'_>,
    parent: Option<(SvdReport, String)>,
) -> Result<(TrainReport, Option<SvdReport>), CommError> {
    if job.model.method == Method::Als {
        log.stage(
            "train",
            &format!(
                "{} factors, {} iterations",
                job.als.factors, job.als.iterations
            ),
        );
        let r = als::train(worker, comm, &job.als, users, items, log, start, after)?;
        return Ok((r, None));
    }
    let rep = match parent {
        Some((mut p, version)) => {
            p.secs = 0.0;
            p.factorised_in.get_or_insert(version);
            p
        }
        None => {
            let s = &job.svd;
            log.stage(
                "train",
                &format!(
                    "randomized SVD, rank {} + {} oversampling, {} power iteration(s)",
                    s.rank, s.oversample, s.power_iterations
                ),
            );
            factorise(worker, comm, job, users, items)?
        }
    };
    let sv = &rep.singular_values;
    log.done(&format!(
        "train: svd rank {} (numerical rank {}), σ₁ = {:.4e}, σ_k = {:.4e} ({:.2}s)",
        rep.rank,
        rep.numerical_rank,
        sv.first().copied().unwrap_or(0.0),
        sv.last().copied().unwrap_or(0.0),
        rep.secs
    ));
    Ok((TrainReport::default(), Some(rep)))
}

/// The whole factorisation (steps 1–4 above). Collective.
pub fn factorise(
    worker: &mut Worker,
    comm: &mut Comm,
    job: &Job,
    users: &mut Side,
    items: &mut Side,
) -> Result<SvdReport, CommError> {
    let t = Instant::now();
    let (s, kib) = (&job.svd, job.als.exchange_kib);
    let (nu, ni) = sketch::totals(worker, comm, users, items)?;
    let k = s.rank;
    let small = nu.min(ni) as usize;
    let check = if k > small {
        Err(format!("svd.rank = {k} exceeds min(users, items) = min({nu}, {ni}): a rank-{k} SVD needs at least {k} of each; set svd.rank to at most {small}"))
    } else {
        Ok(())
    };
    comm.agree(worker, "svd: check rank", check)?;
    let l = (k + s.oversample).min(small);
    set_vectors(items, sketch::omega(items, s.seed, l), l);
    let mut y = product(worker, comm, kib, (users, items), s.input)?;
    orthonormalise(worker, comm, users, &mut y, l, "svd: orthonormalise AΩ")?;
    for _ in 0..s.power_iterations {
        set_vectors(users, to_f32(&y), l);
        let mut z = product(worker, comm, kib, (items, users), s.input)?;
        orthonormalise(worker, comm, items, &mut z, l, "svd: power iteration Aᵀ")?;
        set_vectors(items, to_f32(&z), l);
        y = product(worker, comm, kib, (users, items), s.input)?;
        orthonormalise(worker, comm, users, &mut y, l, "svd: power iteration A")?;
    }
    set_vectors(users, to_f32(&y), l);
    drop(y);
    let mut z = product(worker, comm, kib, (items, users), s.input)?;
    let r = orthonormalise(worker, comm, items, &mut z, l, "svd: orthonormalise AᵀQ")?;
    let (sigma, m) = small_svd(worker, comm, &r, l, k)?;
    // Items: V_k·Σ^½ = Q_z·(W_k·Σ^½), block by virtual shard.
    let mut v = Vec::with_capacity(items.rows() * k);
    for j in 0..items.vshards.len() {
        let (a, b) = (items.starts[j], items.starts[j + 1]);
        v.extend(to_f32(&dense::times(&z[a * l..b * l], b - a, l, &m, k)));
    }
    drop(z);
    set_vectors(items, v, k);
    set_vectors(users, vec![0.0; users.rows() * k], k);
    project::fold_side(worker, comm, kib, users, items, &sigma, s.input, None)?;
    let top = sigma.first().copied().unwrap_or(0.0);
    Ok(SvdReport {
        method: "svd".into(),
        rank: k,
        sketch: l,
        power_iterations: s.power_iterations,
        input: Some(s.input),
        numerical_rank: sigma
            .iter()
            .filter(|&&x| x > project::ZERO_SIGMA * top)
            .count(),
        singular_values: sigma,
        secs: t.elapsed().as_secs_f64(),
        factorised_in: None,
    })
}

/// Worker 0 takes the small SVD of `Rᵀ` and broadcasts `(σ_k, W_k·Σ_k^½)` (`l × k`).
fn small_svd(
    worker: &mut Worker,
    comm: &mut Comm,
    r: &[f64],
    l: usize,
    k: usize,
) -> Result<(Vec<f64>, Vec<f64>), CommError> {
    let ch = &mut comm.channel::<SvdMsg>(worker);
    let mut msg = None;
    if comm.index == 0 {
        let mut rt = vec![0.0f64; l * l];
        for i in 0..l {
            for j in 0..l {
                rt[j * l + i] = r[i * l + j];
            }
        }
        match dense::small_svd(&rt, l) {
            Ok((sigma, w)) => {
                let mut m = vec![0.0f64; l * k];
                for i in 0..l {
                    for c in 0..k {
                        m[i * k + c] = w[i * l + c] * sigma[c].sqrt();
                    }
                }
                let sigma = sigma[..k].to_vec();
                msg = Some(SvdMsg::SmallSvd { sigma, w: m });
            }
            Err(e) => ch.abort(&e),
        }
    }
    match ch.broadcast_from(worker, "svd: small SVD", 0, msg)? {
        SvdMsg::SmallSvd { sigma, w } => Ok((sigma, w)),
        _ => Err(CommError("svd: no small SVD from worker 0".into())),
    }
}

/// The svd record of a published manifest (None: an als model, or made before svd existed).
pub fn of_manifest(manifest: &crate::store::Manifest) -> Option<SvdReport> {
    manifest.svd.clone()
}
