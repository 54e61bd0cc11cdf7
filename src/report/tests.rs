use super::*;

#[test]
fn log2_bins_cover_every_value_once() {
    assert_eq!(log2_bin(0), 0);
    assert_eq!(log2_bin(1), 1);
    assert_eq!(log2_bin(2), 2);
    assert_eq!(log2_bin(3), 2);
    assert_eq!(log2_bin(4), 3);
    assert_eq!(log2_bin(u64::MAX), 64);
    for n in [0u64, 1, 2, 3, 7, 8, 1000, 1 << 40, u64::MAX] {
        let (lo, hi) = bin_range(log2_bin(n));
        assert!(lo <= n && n <= hi, "{n} not in [{lo}, {hi}]");
    }
    for b in 1..BINS {
        assert_eq!(bin_range(b).0, bin_range(b - 1).1 + 1);
    }
}

#[test]
fn histogram_json_trims_empty_ends() {
    let mut c = vec![0u64; BINS];
    c[2] = 5;
    c[4] = 1;
    let h = histogram_json(&c);
    let a = h.as_array().unwrap();
    assert_eq!(a.len(), 3);
    assert_eq!(a[0], json!({"lo": 2, "hi": 3, "count": 5}));
    assert_eq!(a[1]["count"], 0);
    assert_eq!(a[2], json!({"lo": 8, "hi": 15, "count": 1}));
    assert_eq!(histogram_json(&[0, 0]), json!([]));
}

#[test]
fn degree_counts_round_trip_and_merge() {
    let mut a = DegreeStats {
        min: u64::MAX,
        histogram: vec![0; BINS],
        ..Default::default()
    };
    let mut b = a.clone();
    [1u64, 2, 3, 10].iter().for_each(|&d| a.add(d));
    [5u64, 100].iter().for_each(|&d| b.add(d));
    assert_eq!(DegreeStats::from_counts(&a.to_counts()), a);
    a.merge(&b);
    assert_eq!((a.count, a.sum, a.min, a.max), (6, 121, 1, 100));
    assert_eq!(a.histogram.iter().sum::<u64>(), 6);
    let j = a.to_json();
    assert_eq!(j["entities"], 6);
    assert_eq!(j["max"], 100);
}

/// A manifest like the pipeline writes (two workers, two iterations, LSH mode).
pub(crate) fn manifest() -> Value {
    let mut hist = vec![0u64; BINS];
    hist[3] = 7;
    hist[5] = 2;
    let mut cand = vec![0u64; BINS];
    cand[6] = 40;
    cand[7] = 10;
    json!({
        "recflow_version": "0.1.0",
        "version": "v000002",
        "parent": null,
        "created_unix": 1,
        "job": { "als": { "iterations": 2, "solver": "cholesky" },
                 "confidence": { "scheme": "log", "alpha": "auto", "epsilon": 1.0 } },
        "confidence": { "alpha": 12.5, "auto": true, "density": 0.01, "mean_term": 0.72, "target": 10.0 },
        "workers": 2,
        "virtual_shards": 16,
        "factors": 8,
        "counts": {
            "read": { "bytes": 1000, "lines": 100, "events": 98, "skipped": 2, "below_min_weight": 0,
                      "weights": ["column 2 (found: it holds numbers)"],
                      "samples": ["a.tsv:3: field weight: not a number: 'x\ty\tz'"] },
            "users": 50, "items": 20, "pairs": 90, "test_pairs": 8, "nonpositive_pairs": 1,
            "dropped_user_cap": 0, "dropped_item_cap": 0, "test_unknown_item": 0
        },
        "train": {
            "objective": [
                { "iteration": 1, "half": "users", "value": 300.5 },
                { "iteration": 1, "half": "items", "value": 200.25 },
                { "iteration": 2, "half": "users", "value": 150.0 },
                { "iteration": 2, "half": "items", "value": 149.0 }
            ],
            "iteration_secs": [0.5, 0.25],
            "solve_secs_per_worker": [[0.1, 0.2], [0.01, 0.02], [0.1, 0.3], [0.01, 0.04]],
            "singular": 0
        },
        "timings": { "ingest_secs": 1.0, "train_secs": 2.0, "recommend_secs": 0.5, "total_secs": 4.0 },
        "recommend": {
            "k": 10, "mode": "lsh", "lines": 500, "users_without_recs": 0,
            "lsh": {
                "buckets": { "buckets": 9, "max_size": 40, "mean_size": 9.5, "dropped_buckets": 1,
                             "dropped_memberships": 50, "head": 3, "size_histogram": hist },
                "candidates_per_user": 70.5, "catalog_share": 0.3, "candidates_histogram": cand,
                "recall_at_k": 0.9, "recall_k": 10, "recall_users": 20.0
            }
        },
        "metrics": { "k": 10, "precision": 0.125, "map": 0.0625, "ndcg": 0.2, "auc": null, "users": 40 },
        "files": []
    })
}

pub(crate) fn degrees() -> Degrees {
    let mut d = Degrees {
        users: DegreeStats {
            min: u64::MAX,
            histogram: vec![0; BINS],
            ..Default::default()
        },
        items: DegreeStats {
            min: u64::MAX,
            histogram: vec![0; BINS],
            ..Default::default()
        },
    };
    (1..=50).for_each(|i| d.users.add(i % 7 + 1));
    (1..=20).for_each(|i| d.items.add(i * 3));
    d
}

#[test]
fn report_collects_counts_stages_workers_and_histograms() {
    let r = build(&manifest(), Some(&degrees()));
    assert_eq!(r["schema_version"], SCHEMA_VERSION);
    assert_eq!(r["counts"]["pairs"], 90);
    assert_eq!(r["dropped"]["malformed_lines"], 2);
    assert_eq!(r["dropped"]["lsh_buckets"], 1);
    let st = r["stages"].as_array().unwrap();
    assert_eq!(st.len(), 4);
    assert_eq!(st[3]["name"], "publish");
    assert!((f(&st[3]["secs"]) - 0.5).abs() < 1e-12);
    let w = r["workers"].as_array().unwrap();
    assert_eq!(w.len(), 2);
    assert!((f(&w[1]["users_solve_secs"]) - 0.5).abs() < 1e-12);
    assert!((f(&w[1]["items_solve_secs"]) - 0.06).abs() < 1e-12);
    assert_eq!(r["lsh"]["size_histogram"].as_array().unwrap().len(), 3);
    assert_eq!(r["candidates"]["histogram"][0]["lo"], 32);
    assert_eq!(r["degrees"]["users"]["entities"], 50);
    assert_eq!(r["objective"].as_array().unwrap().len(), 4);
}

#[test]
fn report_without_lsh_or_degrees_still_builds() {
    let mut m = manifest();
    // The dense fallback (`exact: null`) scores every item.
    m["recommend"] = json!({ "k": 10, "mode": "exact", "lines": 500, "users_without_recs": 0,
        "exact": null, "lsh": null });
    m["metrics"] = Value::Null;
    let r = build(&m, None);
    assert!(r["lsh"].is_null());
    assert!(r["degrees"].is_null());
    assert_eq!(r["candidates"]["mode"], "exact");
    assert_eq!(r["candidates"]["per_user_mean"], 20);
    let h = html::render(&r);
    assert!(h.contains("id=\"plot-candidates\""));
}

/// Exact mode reports what the pruned scan scored, not the catalogue; a manifest from
/// before the count existed reports nothing rather than the catalogue.
#[test]
fn exact_mode_reports_the_items_really_scored() {
    let mut m = manifest();
    let mut hist = vec![0u64; BINS];
    hist[3] = 50;
    m["recommend"] = json!({ "k": 10, "mode": "exact", "lines": 500, "users_without_recs": 0,
        "exact": { "candidates_per_user": 9.5, "catalog_share": 0.475, "candidates_histogram": hist },
        "lsh": null });
    let r = build(&m, None);
    assert_eq!(r["candidates"]["per_user_mean"], 9.5);
    assert_eq!(r["candidates"]["catalog_share"], 0.475);
    assert_eq!(r["candidates"]["histogram"][0]["lo"], 4);
    m["recommend"].as_object_mut().unwrap().remove("exact");
    assert!(build(&m, None)["candidates"]["per_user_mean"].is_null());
}
