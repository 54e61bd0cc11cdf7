//! The svd model (`model.method = "svd"`) against faer's dense SVD of the same matrix, its
//! layout invariance, fold-in by projection and ad-hoc item-list queries.

use faer::linalg::solvers::Solve;
use faer::Mat;
use recflow::ids::SplitMix;
use recflow::job::Job;
use recflow::run::{run, RunOptions};
use std::path::Path;

/// (user, item, weight) triples, ids from 1.
type Pairs = Vec<(u64, u64, f32)>;

/// A published model read back: ids (as numbers) with row-major vectors, and the manifest.
struct Model {
    users: Vec<(u64, Vec<f32>)>,
    items: Vec<(u64, Vec<f32>)>,
    sigma: Vec<f64>,
    manifest: serde_json::Value,
}

fn job(dir: &Path, input: &Path, sets: &[&str]) -> Job {
    let mut s: Vec<String> = vec![
        format!("input.path={}", input.display()),
        "input.format=tsv".into(),
        "input.header=false".into(),
        "input.weight=2".into(),
        "confidence.scheme=linear".into(),
        "confidence.alpha=1.0".into(),
        "model.method=svd".into(),
        "shards.virtual=16".into(),
        "recommend.k=0".into(),
        format!("output.store={}", dir.join("store").display()),
    ];
    s.extend(sets.iter().map(|x| x.to_string()));
    Job::parse("", &s).unwrap()
}

fn write(path: &Path, pairs: &Pairs) {
    let text: String = pairs
        .iter()
        .map(|(u, i, w)| format!("{u}\t{i}\t{w}\n"))
        .collect();
    std::fs::write(path, text).unwrap();
}

fn side(dir: &Path, m: &recflow::store::Manifest, name: &str) -> Vec<(u64, Vec<f32>)> {
    let (ids, fac, d) = recflow::store::load_side(dir, m, name).unwrap();
    let mut v: Vec<(u64, Vec<f32>)> = ids
        .iter()
        .enumerate()
        .map(|(r, id)| {
            let n = id.to_string().parse().unwrap();
            (n, fac[r * d..(r + 1) * d].to_vec())
        })
        .collect();
    v.sort_by_key(|p| p.0);
    v
}

fn train(dir: &Path, pairs: &Pairs, sets: &[&str], workers: usize) -> Model {
    std::fs::create_dir_all(dir).unwrap();
    let input = dir.join("in.tsv");
    write(&input, pairs);
    let opts = RunOptions {
        workers,
        ..RunOptions::default()
    };
    let s = run(job(dir, &input, sets), opts).unwrap().unwrap();
    read(&dir.join("store"), s.manifest)
}

fn read(store: &Path, manifest: serde_json::Value) -> Model {
    let (vdir, typed) = recflow::store::open(store, None).unwrap();
    let sigma = manifest["svd"]["singular_values"]
        .as_array()
        .map(|a| a.iter().map(|x| x.as_f64().unwrap()).collect())
        .unwrap_or_default();
    Model {
        users: side(&vdir, &typed, "users"),
        items: side(&vdir, &typed, "items"),
        sigma,
        manifest,
    }
}

/// Users × items with the factorised entries (`conf`: 1 + w, else 1), rows/cols by id − 1.
fn dense(pairs: &Pairs, m: usize, n: usize, conf: bool) -> Mat<f64> {
    let mut a = Mat::<f64>::zeros(m, n);
    for &(u, i, w) in pairs {
        a[(u as usize - 1, i as usize - 1)] = if conf { 1.0 + w as f64 } else { 1.0 };
    }
    a
}

fn random_pairs(m: u64, n: u64, density: f64, seed: u64) -> Pairs {
    let mut r = SplitMix::new(seed);
    let mut p = Vec::new();
    for u in 1..=m {
        for i in 1..=n {
            if r.next_f64() < density || i == u % n + 1 {
                p.push((u, i, 1.0 + r.below(5) as f32));
            }
        }
    }
    p
}

/// `X·Yᵀ` of a model as a dense matrix (rows/cols by id − 1; ids without data stay zero).
fn product(model: &Model, m: usize, n: usize) -> Mat<f64> {
    let mut p = Mat::<f64>::zeros(m, n);
    for (u, x) in &model.users {
        for (i, y) in &model.items {
            p[(*u as usize - 1, *i as usize - 1)] =
                x.iter().zip(y).map(|(a, b)| *a as f64 * *b as f64).sum();
        }
    }
    p
}

fn spectral_norm(a: &Mat<f64>) -> f64 {
    a.singular_values().unwrap()[0]
}

/// `max |VᵀV − I|` for `V = rows · Σ^{-1/2}` over the first `k` columns.
fn orthonormality_error(rows: &[(u64, Vec<f32>)], sigma: &[f64], k: usize) -> f64 {
    let mut worst = 0.0f64;
    for a in 0..k {
        for b in 0..k {
            let dot: f64 = rows
                .iter()
                .map(|(_, v)| v[a] as f64 * v[b] as f64)
                .sum::<f64>()
                / (sigma[a] * sigma[b]).sqrt();
            worst = worst.max((dot - if a == b { 1.0 } else { 0.0 }).abs());
        }
    }
    worst
}

#[test]
fn singular_values_and_residual_of_a_random_matrix_are_within_halko_bounds() {
    let tmp = tempfile::tempdir().unwrap();
    let (m, n, k, p) = (150usize, 90usize, 8usize, 6usize);
    let pairs = random_pairs(m as u64, n as u64, 0.12, 7);
    let a = dense(&pairs, m, n, true);
    let exact = a.singular_values().unwrap();
    for q in [0usize, 2] {
        let sets = [
            format!("svd.rank={k}"),
            format!("svd.oversample={p}"),
            format!("svd.power_iterations={q}"),
            "svd.input=confidence".into(),
        ];
        let sets: Vec<&str> = sets.iter().map(|s| s.as_str()).collect();
        let model = train(&tmp.path().join(format!("q{q}")), &pairs, &sets, 2);
        // Halko et al. (2011) eq. 1.11 for the power scheme: ‖A − QQᵀA‖ ≤ C·σ_{k+1} with
        // C = (1 + 11·√(k+p)·√min(m,n))^{1/(2q+1)} (probability ≥ 1 − 6·p^{−p}).
        let c = (1.0 + 11.0 * ((k + p) as f64).sqrt() * (m.min(n) as f64).sqrt())
            .powf(1.0 / (2 * q + 1) as f64);
        let tail = exact[k];
        let slack = 1e-5 * exact[0];
        #[allow(clippy::needless_range_loop)]
        for j in 0..k {
            // A projection never adds spectrum (σ̃_j ≤ σ_j); Weyl: σ̃_j ≥ σ_j − ‖A − QQᵀA‖.
            assert!(model.sigma[j] <= exact[j] + slack, "q={q} σ{j}");
            assert!(
                model.sigma[j] >= exact[j] - c * tail - slack,
                "q={q} σ{j}: {} vs exact {} (bound {})",
                model.sigma[j],
                exact[j],
                c * tail
            );
        }
        // The published X·Yᵀ = A·V·Vᵀ: ‖A − A·V·Vᵀ‖ ≤ ‖A − Q·B_k‖ ≤ (1 + C)·σ_{k+1}.
        let res = spectral_norm(&(&a - &product(&model, m, n)));
        assert!(
            res <= (1.0 + c) * tail + 1e-4 * exact[0],
            "q={q}: residual {res}"
        );
        assert!(res >= tail * (1.0 - 1e-4), "q={q}: beats the optimum?");
        assert!(orthonormality_error(&model.items, &model.sigma, k) < 1e-4);
        if q == 2 {
            // Two power iterations on this spectrum: the leading values are close.
            assert!((model.sigma[0] - exact[0]).abs() < 1e-3 * exact[0]);
        }
    }
}

/// Users in `g` groups, each group sharing one random item set: rank ≤ g.
fn grouped_pairs(m: u64, n: u64, g: u64, seed: u64) -> Pairs {
    let mut r = SplitMix::new(seed);
    let sets: Vec<Vec<u64>> = (0..g)
        .map(|_| (1..=n).filter(|_| r.next_f64() < 0.3).collect())
        .collect();
    let mut p = Vec::new();
    for u in 1..=m {
        for &i in &sets[(u % g) as usize] {
            p.push((u, i, 1.0));
        }
    }
    p
}

#[test]
fn a_low_rank_matrix_is_recovered_exactly_and_its_subspaces_match() {
    let tmp = tempfile::tempdir().unwrap();
    let (m, n, g) = (120usize, 70usize, 5u64);
    let pairs = grouped_pairs(m as u64, n as u64, g, 3);
    let a = dense(&pairs, m, n, false);
    let svd = a.thin_svd().unwrap();
    let exact: Vec<f64> = (0..n.min(m)).map(|j| svd.S()[j]).collect();
    // rank 8 > the data's rank 5: the sketch is rank-deficient (shifted Cholesky-QR).
    let model = train(
        tmp.path(),
        &pairs,
        &["svd.rank=8", "svd.oversample=4", "svd.power_iterations=1"],
        3,
    );
    assert_eq!(model.manifest["svd"]["numerical_rank"], 5);
    for j in 0..5 {
        assert!((model.sigma[j] - exact[j]).abs() < 1e-5 * exact[0], "σ{j}");
    }
    let res = spectral_norm(&(&a - &product(&model, m, n)));
    assert!(res < 1e-4 * exact[0], "residual {res}");
    assert!(orthonormality_error(&model.items, &model.sigma, 5) < 1e-4);
    assert!(orthonormality_error(&model.users, &model.sigma, 5) < 1e-4);
    // Subspaces: ‖(I − Ṽ Ṽᵀ)·V‖_F over the 5 true right singular vectors.
    let v = svd.V();
    let mut off = 0.0f64;
    for c in 0..5 {
        let mut r: Vec<f64> = (0..n).map(|i| v[(i, c)]).collect();
        for j in 0..5 {
            let s = model.sigma[j].sqrt();
            let mut w = vec![0.0f64; n];
            for (i, y) in &model.items {
                w[*i as usize - 1] = y[j] as f64 / s;
            }
            let d: f64 = w.iter().zip(&r).map(|(a, b)| a * b).sum();
            r.iter_mut().zip(&w).for_each(|(x, y)| *x -= d * y);
        }
        off += r.iter().map(|x| x * x).sum::<f64>();
    }
    assert!(off.sqrt() < 1e-4, "subspace distance {}", off.sqrt());
}

#[test]
fn factors_are_bit_identical_for_any_worker_count() {
    let tmp = tempfile::tempdir().unwrap();
    let pairs = random_pairs(300, 120, 0.05, 11);
    let sets = ["svd.rank=6", "svd.power_iterations=2"];
    let one = train(&tmp.path().join("w1"), &pairs, &sets, 1);
    let three = train(
        &tmp.path().join("w3"),
        &pairs,
        &["svd.rank=6", "svd.power_iterations=2", "als.exchange_kib=1"],
        3,
    );
    assert!(one.users == three.users, "user vectors differ");
    assert!(one.items == three.items, "item vectors differ");
    let bits = |s: &[f64]| s.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&one.sigma), bits(&three.sigma));
}

#[test]
fn a_rank_above_the_data_is_refused_with_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    let pairs = random_pairs(20, 12, 0.3, 1);
    std::fs::create_dir_all(tmp.path()).unwrap();
    let input = tmp.path().join("in.tsv");
    write(&input, &pairs);
    let e = run(
        job(tmp.path(), &input, &["svd.rank=13"]),
        RunOptions::default(),
    )
    .unwrap_err();
    assert!(
        e.contains("svd.rank = 13") && e.contains("items in the data (12)"),
        "{e}"
    );
}

fn user_row(m: &Model, u: u64) -> &[f32] {
    &m.users.iter().find(|p| p.0 == u).unwrap().1
}

#[test]
fn a_folded_in_user_with_a_known_users_row_gets_that_users_vector() {
    let tmp = tempfile::tempdir().unwrap();
    let pairs = random_pairs(80, 40, 0.15, 5);
    let sets = ["svd.rank=6", "svd.input=confidence"];
    let v1 = train(tmp.path(), &pairs, &sets, 2);
    // New events: user 1000 copies user 7's row; user 1001 likes new item 500 and item 3.
    let mut new: Pairs = pairs
        .iter()
        .filter(|p| p.0 == 7)
        .map(|&(_, i, w)| (1000, i, w))
        .collect();
    new.extend([(1001, 500, 2.0), (1001, 3, 1.0), (7, 500, 0.0)]);
    new.retain(|p| p.2 > 0.0);
    let input = tmp.path().join("new.tsv");
    write(&input, &new);
    let j = job(
        tmp.path(),
        &input,
        &[&sets[..], &["model.warm_start=true"]].concat(),
    );
    let s = run(j, RunOptions::default()).unwrap().unwrap();
    let v2 = read(&tmp.path().join("store"), s.manifest);
    assert_eq!(v2.sigma, v1.sigma, "a warm start keeps the factorisation");
    assert_eq!(user_row(&v2, 1000), user_row(&v1, 7));
    assert_eq!(user_row(&v2, 7), user_row(&v1, 7));
    assert_eq!(v2.manifest["svd"]["factorised_in"], "v000001");
    // The new item is projected against the known users (only user 1001 touched it; it is
    // new, so the item gets nothing from users and stays zero); the known items are kept.
    let old: Vec<_> = v2.items.iter().filter(|p| p.0 != 500).cloned().collect();
    assert!(old == v1.items);
    assert!(user_row(&v2, 1001).iter().any(|&x| x != 0.0));
}

fn cli(args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_recflow"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Score column of `recommend` lines.
fn scores(lines: &str) -> Vec<(String, String)> {
    lines
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (f[1].to_string(), f[2].to_string())
        })
        .collect()
}

#[test]
fn an_item_list_on_an_svd_model_scores_like_the_user_who_chose_it() {
    let tmp = tempfile::tempdir().unwrap();
    let pairs = random_pairs(80, 40, 0.15, 9);
    train(tmp.path(), &pairs, &["svd.rank=6"], 2);
    let store = tmp.path().join("store");
    let store = store.to_str().unwrap();
    let list: Vec<String> = pairs
        .iter()
        .filter(|p| p.0 == 12)
        .map(|p| p.1.to_string())
        .rev()
        .collect();
    let (ok, by_list, err) = cli(&["recommend", store, "--items", &list.join(","), "-k", "8"]);
    assert!(ok, "{err}");
    let (ok, by_user, err) = cli(&["recommend", store, "--user", "12", "-k", "8"]);
    assert!(ok, "{err}");
    assert_eq!(scores(&by_list), scores(&by_user));
    assert_eq!(by_list.lines().count(), 8);
    let (ok, _, err) = cli(&["recommend", store, "--items", "3,4000,x"]);
    assert!(!ok && err.contains("unknown item(s) 4000, x"), "{err}");
    let (ok, _, err) = cli(&["recommend", store, "--items", ","]);
    assert!(!ok && err.contains("the list is empty"), "{err}");
}

#[test]
fn an_item_list_on_an_als_model_is_one_weighted_least_squares_solve() {
    let tmp = tempfile::tempdir().unwrap();
    let pairs = random_pairs(80, 40, 0.15, 13);
    let sets = [
        "model.method=als",
        "als.factors=5",
        "als.iterations=3",
        "als.regularization=0.5",
    ];
    let model = train(tmp.path(), &pairs, &sets, 1);
    let store = tmp.path().join("store");
    let (ok, out, err) = cli(&[
        "recommend",
        store.to_str().unwrap(),
        "--items",
        "2,9,9,30",
        "-k",
        "40",
    ]);
    assert!(ok, "{err}");
    // Dense reference: x = (Yᵀ C Y + λI)⁻¹ Yᵀ C p, c = 1 + α·1 = 2 on the listed items.
    let (n, d) = (model.items.len(), 5);
    let y = Mat::from_fn(n, d, |i, j| model.items[i].1[j] as f64);
    let mut cdiag = Mat::<f64>::identity(n, n);
    let mut b = Mat::<f64>::zeros(n, 1);
    for it in [2u64, 9, 30] {
        let r = model.items.iter().position(|p| p.0 == it).unwrap();
        cdiag[(r, r)] = 2.0;
        b[(r, 0)] = 2.0;
    }
    let lhs = y.transpose() * &cdiag * &y + Mat::<f64>::identity(d, d) * faer::Scale(0.5);
    let x = lhs.full_piv_lu().solve(y.transpose() * &b);
    let got = scores(&out);
    assert_eq!(got.len(), n - 3, "every item but the listed ones");
    for (item, score) in got {
        let r = model
            .items
            .iter()
            .position(|p| p.0.to_string() == item)
            .unwrap();
        let want: f64 = (0..d).map(|j| y[(r, j)] * x[(j, 0)]).sum();
        let s: f64 = score.parse().unwrap();
        assert!(
            (s - want).abs() < 1e-4 * (1.0 + want.abs()),
            "{item}: {s} vs {want}"
        );
    }
}
