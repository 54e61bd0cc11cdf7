use super::*;
use crate::ids::SplitMix;
use crate::recommend::Catalog;

/// The fused scan (norm order, pruning, register kernel) against a naive full sort of the
/// same scores, with ties (coarse vectors), exclusions, zero vectors and k > catalogue.
#[test]
fn scan_top_k_matches_naive_sort() {
    let mut r = SplitMix::new(11);
    for (n, d, coarse) in [
        (1usize, 8usize, false),
        (37, 16, true),
        (700, 64, false),
        (2100, 24, true),
        (300, 128, false),
    ] {
        let keys: Vec<u64> = (0..n as u64).map(|i| i * 7 + 3).collect();
        let val = |r: &mut SplitMix| test_value(r, coarse);
        let mut factors: Vec<f32> = (0..n * d).map(|_| val(&mut r)).collect();
        // Some items with zero vectors.
        for i in (0..n).step_by(13) {
            factors[i * d..(i + 1) * d].fill(0.0);
        }
        let cat = Catalog {
            keys: keys.clone(),
            ids: Vec::new(),
            degrees: vec![0; n],
            factors,
        };
        let Some(ix) = ScanIndex::build(&cat.keys, &cat.factors, d) else {
            return; // no AVX2 here: the fallback path is the old one
        };
        let nu = 50;
        let mut users: Vec<f32> = (0..nu * d).map(|_| val(&mut r)).collect();
        users[..d].fill(0.0);
        let excluded: Vec<Vec<usize>> = (0..nu)
            .map(|_| {
                let mut e: Vec<usize> = (0..n).filter(|_| r.below(10) == 0).collect();
                e.dedup();
                e
            })
            .collect();
        for k in [0usize, 1, 10, n + 5] {
            let (got, scored) = ix.top_k_scored(&users, &excluded, k);
            // Counts are whole items of the catalogue; a list of k items needs k scored.
            for (u, &c) in scored.iter().enumerate() {
                assert!(c as usize <= n, "n={n} k={k} user {u}: {c}");
                assert!(c as usize >= got[u].len(), "n={n} k={k} user {u}: {c}");
            }
            if k == 1 && n == 2100 {
                // Here the stop comes before the end of the catalogue for most users.
                assert!(scored.iter().any(|&c| (c as usize) < n), "{scored:?}");
            }
            for u in 0..nu {
                let x = &users[u * d..(u + 1) * d];
                let mut all: Vec<(f32, usize)> = (0..n)
                    .filter(|i| !excluded[u].contains(i))
                    .map(|i| (fma_dot(x, &cat.factors[i * d..(i + 1) * d]), i))
                    .collect();
                all.sort_by(|a, b| better((a.0, keys[a.1]), (b.0, keys[b.1])));
                all.truncate(k);
                assert_eq!(got[u], all, "n={n} d={d} k={k} user {u}");
            }
        }
    }
}

#[test]
fn score_candidates_equals_fma_dot_bit_for_bit() {
    let mut r = SplitMix::new(3);
    for d in [1usize, 7, 8, 64, 100] {
        let n = 50;
        let f: Vec<f32> = (0..n * d).map(|_| r.next_normal() as f32).collect();
        let x: Vec<f32> = (0..d).map(|_| r.next_normal() as f32).collect();
        let cand: Vec<usize> = (0..23).map(|j| (j * 7) % n).collect();
        let mut got = Vec::new();
        score_candidates(&x, &f, d, &cand, &mut got);
        let want: Vec<u32> = cand
            .iter()
            .map(|&i| fma_dot(&x, &f[i * d..(i + 1) * d]).to_bits())
            .collect();
        assert_eq!(
            got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            want,
            "d = {d}"
        );
    }
}

#[test]
fn top_k_matches_brute_force() {
    let mut r = SplitMix::new(5);
    for n in [1usize, 5, 50, 300] {
        // Coarse scores so that ties happen; ties break by smaller key.
        let scores: Vec<f32> = (0..n).map(|_| (r.below(7) as f32) / 7.0).collect();
        let keys: Vec<u64> = (0..n as u64).map(|i| i * 3).collect();
        let excluded: Vec<usize> = (0..n).filter(|i| i % 4 == 1).collect();
        for k in [0, 1, 3, 10, 400] {
            let got = top_k(&scores, &keys, &excluded, k);
            let mut all: Vec<usize> = (0..n).filter(|i| !excluded.contains(i)).collect();
            all.sort_by(|&a, &b| {
                scores[b]
                    .partial_cmp(&scores[a])
                    .unwrap()
                    .then(keys[a].cmp(&keys[b]))
            });
            all.truncate(k);
            assert_eq!(got, all, "n={n} k={k}");
        }
    }
}
