use super::*;
use crate::ids::SplitMix;

fn rand_mat(r: &mut SplitMix, n: usize) -> Vec<f32> {
    (0..n).map(|_| r.next_normal() as f32).collect()
}

/// A random entity against `m` other-side rows of dimension `d` (scaled by `scale`): the
/// rows, their Gram matrix, `n` random columns and confidences in [1, 1 + cmax).
#[allow(clippy::type_complexity)]
fn entity(
    r: &mut SplitMix,
    (m, d, n): (usize, usize, usize),
    scale: f32,
    cmax: f32,
) -> (Vec<f32>, Vec<f32>, Vec<u32>, Vec<f32>) {
    let ys: Vec<f32> = rand_mat(r, m * d).iter().map(|v| scale * v).collect();
    let mut g = vec![0.0; d * d];
    gram(&ys, m, d, &mut g);
    let cols: Vec<u32> = (0..n).map(|_| r.below(m as u64) as u32).collect();
    let conf: Vec<f32> = (0..n).map(|_| 1.0 + cmax * r.next_f64() as f32).collect();
    (ys, g, cols, conf)
}

#[test]
fn gram_matches_naive() {
    let mut r = SplitMix::new(1);
    for (n, d) in [(0, 3), (1, 4), (17, 8), (100, 33)] {
        let y = rand_mat(&mut r, n * d);
        let mut g = vec![0.0; d * d];
        gram(&y, n, d, &mut g);
        for a in 0..d {
            for b in 0..d {
                let want: f64 = (0..n)
                    .map(|i| y[i * d + a] as f64 * y[i * d + b] as f64)
                    .sum();
                assert!((g[a * d + b] as f64 - want).abs() < 1e-3 * (1.0 + want.abs()));
            }
        }
    }
}

/// Solves the augmented system `a = [A | b]` by Gauss–Jordan elimination with partial
/// pivoting, in f64.
fn gauss(mut a: Vec<Vec<f64>>) -> Vec<f64> {
    let d = a.len();
    for p in 0..d {
        let piv = (p..d)
            .max_by(|&x, &y| a[x][p].abs().total_cmp(&a[y][p].abs()))
            .unwrap();
        a.swap(p, piv);
        let pivot = a[p].clone();
        for (r, row) in a.iter_mut().enumerate() {
            if r != p {
                let f = row[p] / pivot[p];
                for (x, y) in row[p..].iter_mut().zip(&pivot[p..]) {
                    *x -= f * y;
                }
            }
        }
    }
    (0..d).map(|i| a[i][d] / a[i][i]).collect()
}

/// Dense reference: Gaussian elimination in f64 on the explicitly built system.
fn naive_solve(
    g: &[f32],
    lambda: f64,
    ys: &[f32],
    cols: &[u32],
    conf: &[f32],
    d: usize,
) -> Vec<f64> {
    let mut a = vec![vec![0.0f64; d + 1]; d];
    for i in 0..d {
        for j in 0..d {
            a[i][j] = g[i * d + j] as f64 + if i == j { lambda } else { 0.0 };
        }
    }
    for (&c, &col) in conf.iter().zip(cols) {
        let y = &ys[col as usize * d..(col as usize + 1) * d];
        for i in 0..d {
            for j in 0..d {
                a[i][j] += (c as f64 - 1.0) * y[i] as f64 * y[j] as f64;
            }
            a[i][d] += c as f64 * y[i] as f64;
        }
    }
    gauss(a)
}

#[test]
fn solve_matches_dense_direct_solve() {
    let mut r = SplitMix::new(2);
    for (m, d, n) in [(20, 4, 3), (50, 16, 10), (80, 7, 0), (40, 32, 40)] {
        let (ys, g, cols, conf) = entity(&mut r, (m, d, n), 1.0, 10.0);
        let mut x = vec![0.0; d];
        let mut s = Solver::new(d);
        assert!(s.solve(&g, 0.5, &ys, &cols, &conf, &mut x));
        let want = naive_solve(&g, 0.5, &ys, &cols, &conf, d);
        for (a, b) in x.iter().zip(&want) {
            assert!(
                (*a as f64 - b).abs() < 1e-3 * (1.0 + b.abs()),
                "{x:?} vs {want:?}"
            );
        }
    }
}

/// The full weighted least-squares problem of one user, built densely over every item
/// (c = 1 and p = 0 for unobserved items), with no Gram trick.
#[test]
fn solve_matches_the_full_dense_weighted_problem() {
    let mut r = SplitMix::new(8);
    let (m, d) = (25, 5);
    let ys = rand_mat(&mut r, m * d);
    let cols = [2u32, 3, 11, 19];
    let conf = [4.0f32, 1.5, 9.0, 2.0];
    let lambda = 0.3;
    let mut c_full = vec![1.0f64; m];
    let mut p_full = vec![0.0f64; m];
    for (&c, &i) in conf.iter().zip(&cols) {
        c_full[i as usize] = c as f64;
        p_full[i as usize] = 1.0;
    }
    // Normal equations (Yᵀ C Y + λI) x = Yᵀ C p, solved by Gaussian elimination.
    let mut a = vec![vec![0.0f64; d + 1]; d];
    for i in 0..m {
        let y = &ys[i * d..(i + 1) * d];
        for p in 0..d {
            for q in 0..d {
                a[p][q] += c_full[i] * y[p] as f64 * y[q] as f64;
            }
            a[p][d] += c_full[i] * p_full[i] * y[p] as f64;
        }
    }
    for (p, row) in a.iter_mut().enumerate() {
        row[p] += lambda;
    }
    let want = gauss(a);
    let mut g = vec![0.0; d * d];
    gram(&ys, m, d, &mut g);
    let mut x = vec![0.0; d];
    assert!(Solver::new(d).solve(&g, lambda as f32, &ys, &cols, &conf, &mut x));
    for (a, b) in x.iter().zip(&want) {
        assert!(
            (*a as f64 - b).abs() < 1e-4 * (1.0 + b.abs()),
            "{x:?} vs {want:?}"
        );
    }
}

#[test]
fn cg_converges_to_the_exact_solve() {
    let mut r = SplitMix::new(6);
    let (m, d) = (60, 12);
    let (ys, g, cols, conf) = entity(&mut r, (m, d, 15), 1.0, 5.0);
    let mut exact = vec![0.0; d];
    let mut s = Solver::new(d);
    s.solve(&g, 0.5, &ys, &cols, &conf, &mut exact);
    // d steps of CG solve a d×d SPD system (up to rounding); few steps already get close.
    let mut x = vec![0.0; d];
    s.cg(&g, 0.5, &ys, &cols, &conf, &mut x, 3 * d, false);
    for (a, b) in x.iter().zip(&exact) {
        assert!((a - b).abs() < 1e-3 * (1.0 + b.abs()), "{x:?} vs {exact:?}");
    }
    let mut x3 = vec![0.0; d];
    s.cg(&g, 0.5, &ys, &cols, &conf, &mut x3, 3, false);
    let l3 = entity_loss(&g, 0.5, &ys, &cols, &conf, &x3);
    let l0 = entity_loss(&g, 0.5, &ys, &cols, &conf, &vec![0.0; d]);
    let le = entity_loss(&g, 0.5, &ys, &cols, &conf, &exact);
    assert!(l3 < l0 && l3 >= le - 1e-3, "{l0} {l3} {le}");
}

/// The AVX2 Cholesky path (d a multiple of 8) against the dense f64 reference, including
/// d = 64 and 128, entities without interactions and heavy ones.
#[test]
fn simd_cholesky_solve_matches_dense_solve() {
    let mut r = SplitMix::new(12);
    for (m, d, n) in [
        (100, 8, 3),
        (200, 24, 0),
        (300, 64, 9),
        (400, 64, 150),
        (500, 128, 40),
    ] {
        let (ys, g, cols, conf) = entity(&mut r, (m, d, n), 0.3, 10.0);
        let mut x = vec![0.0; d];
        assert!(Solver::new(d).solve(&g, 0.1, &ys, &cols, &conf, &mut x));
        let want = naive_solve(&g, 0.1, &ys, &cols, &conf, d);
        let scale = want.iter().map(|v| v.abs()).fold(1e-3f64, f64::max);
        for (a, b) in x.iter().zip(&want) {
            assert!(
                (*a as f64 - b).abs() < 2e-3 * scale,
                "d={d} n={n}: {x:?} vs {want:?}"
            );
        }
    }
    // Not positive definite (zero Gram, λ = 0, no interactions): jitter, then a finite x.
    let d = 16;
    let mut x = vec![1.0; d];
    let ok = Solver::new(d).solve(&vec![0.0; d * d], 0.0, &[0.0; 16], &[], &[], &mut x);
    assert!(x.iter().all(|v| v.is_finite()), "{ok} {x:?}");
}

/// The AVX2 CG kernel against the portable one (the same algorithm), for d = 8..128 and
/// entities with 0 to 300 interactions, warm-started from a random vector.
#[test]
fn simd_cg_matches_portable_cg() {
    let mut r = SplitMix::new(9);
    for (m, d, n) in [
        (40, 8, 0),
        (60, 16, 5),
        (200, 64, 30),
        (500, 64, 300),
        (300, 128, 40),
        (90, 72, 9),
    ] {
        let (ys, g, cols, conf) = entity(&mut r, (m, d, n), 0.3, 20.0);
        let x0: Vec<f32> = rand_mat(&mut r, d).iter().map(|v| 0.1 * v).collect();
        for steps in [1, 3, 8] {
            let mut want = x0.clone();
            let (mut sc, mut rr) = (vec![0.0; 2 * d], vec![0.0; d]);
            cg_portable(
                &g, 0.05, &ys, &cols, &conf, &mut want, steps, &mut sc, &mut rr, None,
            );
            let mut got = x0.clone();
            Solver::new(d).cg(&g, 0.05, &ys, &cols, &conf, &mut got, steps, false);
            let scale = want.iter().map(|v| v.abs()).fold(1e-3f32, f32::max);
            for (a, b) in got.iter().zip(&want) {
                assert!(
                    (a - b).abs() <= 2e-3 * scale,
                    "d={d} n={n} steps={steps}: {got:?} vs {want:?}"
                );
            }
        }
    }
}

#[test]
fn solve_minimises_entity_loss() {
    // The exact solve is the minimiser: nudging x in any direction raises the loss.
    let mut r = SplitMix::new(3);
    let (m, d) = (30, 6);
    let ys = rand_mat(&mut r, m * d);
    let mut g = vec![0.0; d * d];
    gram(&ys, m, d, &mut g);
    let cols = [1u32, 5, 9, 20];
    let conf = [3.0f32, 1.0, 7.0, 2.0];
    let mut x = vec![0.0; d];
    Solver::new(d).solve(&g, 0.1, &ys, &cols, &conf, &mut x);
    let base = entity_loss(&g, 0.1, &ys, &cols, &conf, &x);
    for k in 0..d {
        for eps in [-1e-2f32, 1e-2] {
            let mut x2 = x.clone();
            x2[k] += eps;
            assert!(entity_loss(&g, 0.1, &ys, &cols, &conf, &x2) > base);
        }
    }
}

#[test]
fn entity_loss_matches_dense_objective() {
    let mut r = SplitMix::new(4);
    let (m, d) = (12, 3);
    let ys = rand_mat(&mut r, m * d);
    let mut g = vec![0.0; d * d];
    gram(&ys, m, d, &mut g);
    let cols = [0u32, 4, 7];
    let conf = [2.0f32, 5.0, 1.5];
    let x = rand_mat(&mut r, d);
    let mut want = 0.3 * x.iter().map(|&v| (v * v) as f64).sum::<f64>();
    for i in 0..m {
        let s: f64 = (0..d).map(|k| x[k] as f64 * ys[i * d + k] as f64).sum();
        match cols.iter().position(|&c| c as usize == i) {
            Some(j) => want += conf[j] as f64 * (1.0 - s).powi(2),
            None => want += s * s,
        }
    }
    let got = entity_loss(&g, 0.3, &ys, &cols, &conf, &x);
    assert!(
        (got - want).abs() < 1e-4 * want.abs().max(1.0),
        "{got} vs {want}"
    );
}
