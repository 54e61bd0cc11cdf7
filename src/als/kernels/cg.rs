//! The conjugate-gradient solve of one entity's normal equations, warm-started and without
//! forming the matrix: [`Solver::cg`] dispatches to [`super::simd::cg`] or [`cg_portable`].

use super::loss::observed_from;
#[cfg(target_arch = "x86_64")]
use super::simd;
use super::Solver;

impl Solver {
    /// Conjugate gradient warm-started from `x` (the previous iteration's vector), `steps`
    /// steps, on the same system as [`Solver::solve`] but without forming the matrix:
    /// `A·p = G·p + λp + Σ_j (c_j − 1)(y_j·p) y_j` (Takács et al. 2011, as `implicit`).
    ///
    /// With AVX2+FMA (detected at run time) and `d` a multiple of 8 this runs the
    /// register-blocked kernel [`simd::cg`]; otherwise [`cg_portable`]. Both are the same
    /// algorithm; the choice depends only on the machine and `d`, never on the worker layout.
    #[allow(clippy::too_many_arguments)]
    pub fn cg(
        &mut self,
        g: &[f32],
        lambda: f32,
        gathered: &[f32],
        cols: &[u32],
        conf: &[f32],
        x: &mut [f32],
        steps: usize,
        loss: bool,
    ) -> f64 {
        let d = self.d;
        // With the objective, every `y_j·x` is tracked through the steps (`y_j·x += α·y_j·p`,
        // from the products each step computes anyway), so it costs O(n) per step instead of
        // another pass over the entity's rows.
        let track = if loss {
            self.yx.resize(cols.len(), 0.0);
            self.yp.resize(cols.len(), 0.0);
            Some((&mut self.yx[..], &mut self.yp[..]))
        } else {
            None
        };
        #[cfg(target_arch = "x86_64")]
        if simd::usable(d) {
            let (p, ap) = self.a.split_at_mut(d);
            // SAFETY: `usable` checked AVX2 and FMA at run time and d % 8 == 0; every slice
            // has the lengths `simd::cg` asserts.
            unsafe {
                simd::cg(
                    g,
                    lambda,
                    gathered,
                    cols,
                    conf,
                    x,
                    steps,
                    p,
                    &mut ap[..d],
                    &mut self.b,
                    track,
                )
            };
            return if loss {
                observed_from(conf, &self.yx)
            } else {
                0.0
            };
        }
        cg_portable(
            g,
            lambda,
            gathered,
            cols,
            conf,
            x,
            steps,
            &mut self.a,
            &mut self.b,
            track,
        );
        if loss {
            observed_from(conf, &self.yx)
        } else {
            0.0
        }
    }
}

/// The portable CG (the reference for [`simd::cg`]); `scratch` holds at least `2d` floats,
/// `r` exactly `d`.
#[allow(clippy::too_many_arguments)]
pub fn cg_portable(
    g: &[f32],
    lambda: f32,
    gathered: &[f32],
    cols: &[u32],
    conf: &[f32],
    x: &mut [f32],
    steps: usize,
    scratch: &mut [f32],
    r: &mut [f32],
    mut track: Option<(&mut [f32], &mut [f32])>,
) {
    let d = x.len();
    let ys = |j: usize| &gathered[cols[j] as usize * d..(cols[j] as usize + 1) * d];
    let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(a, b)| a * b).sum::<f32>();
    let (p, rest) = scratch.split_at_mut(d);
    let ap = &mut rest[..d];
    // out = A·v; `yv` (when given) receives every y_j·v on the way.
    let apply = |v: &[f32], out: &mut [f32], mut yv: Option<&mut [f32]>| {
        for i in 0..d {
            let row = &g[i * d..(i + 1) * d];
            out[i] = row.iter().zip(v).map(|(a, b)| a * b).sum::<f32>() + lambda * v[i];
        }
        for (j, &c) in conf.iter().enumerate() {
            let y = ys(j);
            let t = dot(y, v);
            if let Some(yv) = &mut yv {
                yv[j] = t;
            }
            let s = (c - 1.0) * t;
            out.iter_mut().zip(y).for_each(|(o, &yy)| *o += s * yy);
        }
    };
    // r = b − A·x
    apply(x, ap, track.as_mut().map(|t| &mut *t.0));
    r.iter_mut().zip(ap.iter()).for_each(|(r, &a)| *r = -a);
    for (j, &c) in conf.iter().enumerate() {
        r.iter_mut().zip(ys(j)).for_each(|(r, &y)| *r += c * y);
    }
    p.copy_from_slice(r);
    let mut rs: f32 = r.iter().map(|v| v * v).sum();
    for _ in 0..steps {
        if rs < 1e-20 {
            break;
        }
        apply(p, ap, track.as_mut().map(|t| &mut *t.1));
        let pap: f32 = p.iter().zip(ap.iter()).map(|(a, b)| a * b).sum();
        if pap <= 0.0 || !pap.is_finite() {
            break;
        }
        let alpha = rs / pap;
        x.iter_mut()
            .zip(p.iter())
            .for_each(|(x, &p)| *x += alpha * p);
        if let Some((sx, tp)) = &mut track {
            sx.iter_mut()
                .zip(tp.iter())
                .for_each(|(s, &t)| *s += alpha * t);
        }
        r.iter_mut()
            .zip(ap.iter())
            .for_each(|(r, &a)| *r -= alpha * a);
        let rs_new: f32 = r.iter().map(|v| v * v).sum();
        let beta = rs_new / rs;
        p.iter_mut()
            .zip(r.iter())
            .for_each(|(p, &r)| *p = r + beta * *p);
        rs = rs_new;
    }
}
