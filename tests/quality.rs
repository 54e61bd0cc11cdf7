//! Model quality features end to end: frequency-scaled regularisation, the block solver,
//! metric cut-off lists and the validation set.

use recflow::job::Job;
use recflow::run::{run, RunOptions};
use std::collections::HashMap;
use std::path::Path;

fn opts(w: usize) -> RunOptions {
    RunOptions {
        workers: w,
        ..RunOptions::default()
    }
}

/// Exported vectors of one side: raw id → vector.
fn vectors(store: &Path, out: &Path, side: &str) -> HashMap<String, Vec<f64>> {
    recflow::export::export(store, None, out, recflow::export::ExportFormat::Tsv).unwrap();
    let text = std::fs::read_to_string(out.join(format!("{side}.tsv"))).unwrap();
    text.lines()
        .map(|l| {
            let mut f = l.split('\t');
            let id = f.next().unwrap().to_string();
            (id, f.map(|x| x.parse().unwrap()).collect())
        })
        .collect()
}

/// Weighted events: `u<i>\tm<j>\tweight`.
fn events(users: usize, items: usize) -> String {
    let mut t = String::new();
    let mut h = 7u64;
    for u in 0..users {
        for i in 0..items {
            h = h
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            if (h >> 33).is_multiple_of(3) || i == u % items {
                t.push_str(&format!("u{u}\tm{i}\t{}\n", 1 + (h >> 40) % 3));
            }
        }
    }
    t
}

/// Solves `a x = b` (dense, f64) by Gaussian elimination with partial pivoting.
#[allow(clippy::needless_range_loop)]
fn gauss(mut a: Vec<Vec<f64>>, mut b: Vec<f64>) -> Vec<f64> {
    let d = b.len();
    for p in 0..d {
        let piv = (p..d)
            .max_by(|&x, &y| a[x][p].abs().total_cmp(&a[y][p].abs()))
            .unwrap();
        a.swap(p, piv);
        b.swap(p, piv);
        for r in p + 1..d {
            let f = a[r][p] / a[p][p];
            for c in p..d {
                a[r][c] -= f * a[p][c];
            }
            b[r] -= f * b[p];
        }
    }
    let mut x = vec![0.0; d];
    for i in (0..d).rev() {
        let s: f64 = (i + 1..d).map(|c| a[i][c] * x[c]).sum();
        x[i] = (b[i] - s) / a[i][i];
    }
    x
}

/// After one Cholesky iteration the item vectors are the exact minimisers of the
/// frequency-scaled problem against the final user vectors. Checked item by item against a
/// dense solve over every user (c = 1 + α·w observed, 1 unobserved) with
/// λ_i = λ · (N_users + Σ_u (c_ui − 1))^ν, for ν = 1 and ν = 0.5.
#[test]
fn frequency_scaling_matches_a_dense_solve_of_the_scaled_problem() {
    let tmp = tempfile::tempdir().unwrap();
    let (nu_users, nu_items, alpha, lambda) = (30, 12, 2.0, 0.05);
    let text = events(nu_users, nu_items);
    let f = tmp.path().join("events.tsv");
    std::fs::write(&f, &text).unwrap();
    let mut weight: HashMap<(String, String), f64> = HashMap::new();
    for l in text.lines() {
        let v: Vec<&str> = l.split('\t').collect();
        weight.insert((v[0].into(), v[1].into()), v[2].parse().unwrap());
    }
    for nu in [1.0, 0.5] {
        let store = tmp.path().join(format!("s{nu}"));
        let job = Job::parse(
            "[input]\nweight = 2\n[als]\nfactors = 3\niterations = 1\n[shards]\nvirtual = 4\n",
            &[
                format!("input.path={}", f.display()),
                format!("output.store={}", store.display()),
                format!("confidence.alpha={alpha}"),
                "confidence.scheme=linear".into(),
                "als.solver=cholesky".into(),
                format!("als.regularization={lambda}"),
                "als.regularization_scaling=frequency".into(),
                format!("als.regularization_exponent={nu}"),
                "recommend.k=0".into(),
            ],
        )
        .unwrap();
        run(job, opts(2)).unwrap().unwrap();
        let out = tmp.path().join(format!("e{nu}"));
        let users = vectors(&store, &out, "users");
        let items = vectors(&store, &out, "items");
        assert_eq!((users.len(), items.len()), (nu_users, nu_items));
        for (item, v) in &items {
            let d = v.len();
            let (mut a, mut b) = (vec![vec![0.0; d]; d], vec![0.0; d]);
            let mut mass = users.len() as f64;
            for (u, x) in &users {
                let w = weight.get(&(u.clone(), item.clone()));
                let c = w.map_or(1.0, |w| 1.0 + alpha * w);
                mass += c - 1.0;
                for p in 0..d {
                    for q in 0..d {
                        a[p][q] += c * x[p] * x[q];
                    }
                    if w.is_some() {
                        b[p] += c * x[p];
                    }
                }
            }
            let lam = lambda * f64::powf(mass, nu);
            (0..d).for_each(|p| a[p][p] += lam);
            let want = gauss(a, b);
            for (g, w) in v.iter().zip(&want) {
                assert!(
                    (g - w).abs() < 2e-3 * (1.0 + w.abs()),
                    "ν={nu} {item}: {v:?} vs {want:?}"
                );
            }
        }
    }
}

fn demo_job(store: &Path, extra: &[&str]) -> Job {
    let mut sets: Vec<String> = vec![
        "input.demo.users=500".into(),
        "input.demo.items=240".into(),
        "input.demo.nnz=7000".into(),
        "input.demo.rank=4".into(),
        "als.factors=16".into(),
        "als.iterations=5".into(),
        "shards.virtual=16".into(),
        "eval.holdout=0.2".into(),
        format!("output.store={}", store.display()),
    ];
    sets.extend(extra.iter().map(|s| s.to_string()));
    Job::parse("", &sets).unwrap()
}

/// The block solver with frequency scaling and normal initial vectors: the same model for 1
/// and 3 workers, and an objective that never increases half-step after half-step.
#[test]
fn block_solver_is_layout_independent_and_monotone() {
    let tmp = tempfile::tempdir().unwrap();
    let extra = [
        "als.solver=block",
        "als.block_size=5",
        "als.regularization_scaling=frequency",
        "als.regularization=0.002",
        "confidence.alpha=20",
        "als.init_std=0.1",
    ];
    let mut got = Vec::new();
    for w in [1, 3] {
        let store = tmp.path().join(format!("s{w}"));
        let s = run(demo_job(&store, &extra), opts(w)).unwrap().unwrap();
        let obj: Vec<f64> = s.manifest["train"]["objective"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["value"].as_f64().unwrap())
            .collect();
        assert_eq!(obj.len(), 10);
        for p in obj.windows(2) {
            assert!(p[1] <= p[0] * (1.0 + 1e-6), "objective rose: {obj:?}");
        }
        let out = tmp.path().join(format!("e{w}"));
        recflow::export::export(&store, None, &out, recflow::export::ExportFormat::Tsv).unwrap();
        got.push((
            std::fs::read(out.join("users.tsv")).unwrap(),
            std::fs::read(out.join("items.tsv")).unwrap(),
            obj,
        ));
    }
    assert!(
        got[0] == got[1],
        "block solver differs between 1 and 3 workers"
    );
}

/// `eval.k = [5, 20]` with `recommend.k = 3`: the files hold 3 per user, the metrics go to 20;
/// `eval.valid` is evaluated beside the holdout, and `k = 5` alone gives the same @5 figures.
#[test]
fn cutoff_lists_and_validation_set() {
    let tmp = tempfile::tempdir().unwrap();
    let valid = tmp.path().join("valid.tsv");
    let mut v = String::new();
    for u in 0..500 {
        v.push_str(&format!("{u}\t{}\n", (u * 13) % 240));
    }
    std::fs::write(&valid, v).unwrap();
    let vset = format!("eval.valid={}", valid.display());
    let store = tmp.path().join("a");
    let s = run(
        demo_job(&store, &["eval.k=[5, 20]", "recommend.k=3", &vset]),
        opts(2),
    )
    .unwrap()
    .unwrap();
    let m = &s.manifest["metrics"];
    assert_eq!(m["k"], 5);
    let (r5, r20) = (
        m["at_k"]["5"]["recall"].as_f64().unwrap(),
        m["at_k"]["20"]["recall"].as_f64().unwrap(),
    );
    assert!(r20 > r5 && r5 > 0.0, "{r5} {r20}");
    let users = s.manifest["counts"]["users"].as_u64().unwrap();
    assert_eq!(s.manifest["recommend"]["lines"].as_u64(), Some(users * 3));
    let vm = &s.manifest["valid_metrics"];
    assert!(vm["users"].as_u64().unwrap() > 400, "{vm}");
    assert!(vm["at_k"]["20"]["hit_rate"].as_f64().unwrap() > 0.0);
    let one = run(demo_job(&tmp.path().join("b"), &["eval.k=5"]), opts(1))
        .unwrap()
        .unwrap();
    let m1 = &one.manifest["metrics"];
    for key in ["precision", "recall", "ndcg", "map", "hit_rate", "coverage"] {
        assert_eq!(m1[key], m["at_k"]["5"][key], "{key}");
    }
    assert!(one.manifest["valid_metrics"].is_null());
}
