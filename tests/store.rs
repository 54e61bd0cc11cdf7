//! Lean stores: packed versions hold the content of per-shard ones (the fixture under
//! `tests/fixtures/main-store/` was written by recflow before packing), old stores still load
//! and warm-start, a version's metrics are reproducible from it, batch queries.

use recflow::export::{export, ExportFormat};
use recflow::job::Job;
use recflow::run::{run, RunOptions, Summary};
use std::path::{Path, PathBuf};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/main-store")
}

/// The fixture's `job.toml` as settings, reading `input` into `store`.
fn job(store: &Path, input: &Path, extra: &[&str]) -> Job {
    let mut sets: Vec<String> = vec![
        format!("input.path=[\"{}\"]", input.display()),
        "input.format=tsv".into(),
        "input.weight=2".into(),
        "als.factors=4".into(),
        "als.iterations=3".into(),
        "als.regularization=0.05".into(),
        "shards.virtual=8".into(),
        "model.warm_start=true".into(),
        "recommend.k=5".into(),
        "similar.k=3".into(),
        format!("output.store={}", store.display()),
    ];
    sets.extend(extra.iter().map(|s| s.to_string()));
    Job::parse("", &sets).unwrap()
}

fn go(j: Job, workers: usize) -> Summary {
    let o = RunOptions {
        workers,
        ..RunOptions::default()
    };
    run(j, o).unwrap().unwrap()
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

/// `recflow export` (tsv) of a store's current version: file name → bytes.
fn exported(store: &Path, out: &Path) -> Vec<(String, Vec<u8>)> {
    export(store, None, out, ExportFormat::Tsv).unwrap();
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).unwrap())
        })
        .collect();
    files.sort();
    files
}

/// Day 1 trained now (packed) exports byte for byte what the recflow before packing
/// exported from its per-shard store, in O(workers) files; the old store itself still
/// exports and answers queries the same.
#[test]
fn packed_version_holds_the_content_of_a_per_shard_one() {
    let tmp = tempfile::tempdir().unwrap();
    let (new, old) = (tmp.path().join("new"), tmp.path().join("old"));
    let s = go(job(&new, &fixture().join("day1.tsv"), &[]), 2);
    let files = &s.manifest["files"];
    let names: Vec<&str> = files
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    // 2 workers: 2 packs per kind, 2 recs and similar parts, manifest-listed reports.
    assert!(names.len() <= 12, "{names:?}");
    assert!(names.iter().all(|n| !n.contains("/vs-")), "{names:?}");
    let mut want: Vec<(String, Vec<u8>)> = std::fs::read_dir(fixture().join("export"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| {
            let n = p.file_name().unwrap().to_string_lossy().into_owned();
            (n, std::fs::read(&p).unwrap())
        })
        .collect();
    want.sort();
    assert_eq!(want.len(), 4, "factors, recs, similar");
    assert!(
        exported(&new, &tmp.path().join("x-new")) == want,
        "packed differs from main's"
    );
    copy_tree(&fixture().join("store"), &old);
    assert!(
        exported(&old, &tmp.path().join("x-old")) == want,
        "old store reads differently"
    );
    let main_answer = std::fs::read_to_string(fixture().join("recommend-3.tsv")).unwrap();
    for store in [&new, &old] {
        let lines = recflow::query::query(store, None, "users", "3", 7).unwrap();
        assert_eq!(lines.join("\n") + "\n", main_answer);
    }
}

/// A warm start from the old per-shard parent and one from a packed parent of the same
/// content give the same day 2, on another worker layout.
#[test]
fn warm_start_from_a_per_shard_parent_equals_one_from_a_packed_parent() {
    let tmp = tempfile::tempdir().unwrap();
    let (new, old) = (tmp.path().join("new"), tmp.path().join("old"));
    go(job(&new, &fixture().join("day1.tsv"), &[]), 2);
    copy_tree(&fixture().join("store"), &old);
    let day2 = tmp.path().join("day2.tsv");
    std::fs::copy(fixture().join("day2.tsv"), &day2).unwrap();
    let a = go(job(&old, &day2, &[]), 3);
    let b = go(job(&new, &day2, &[]), 3);
    for s in [&a, &b] {
        assert_eq!(s.manifest["lineage"]["parent"], "v000001");
        assert!(s.manifest["lineage"]["new_users"].as_u64().unwrap() > 0);
    }
    for c in [
        "pairs",
        "users",
        "items",
        "snapshot_pairs",
        "nonpositive_pairs",
    ] {
        assert_eq!(a.manifest["counts"][c], b.manifest["counts"][c], "{c}");
    }
    assert_eq!(
        a.manifest["train"]["objective"],
        b.manifest["train"]["objective"]
    );
    let (xa, xb) = (tmp.path().join("xa"), tmp.path().join("xb"));
    assert!(exported(&old, &xa) == exported(&new, &xb), "day 2 differs");
}

/// `recflow eval STORE` recomputes the version's metrics, at every cut-off, to the bit, from
/// the recs and held-out pairs it keeps, AUC too (from the factors and the snapshot), for
/// the holdout and a validation file, on any layout, with the dense scorer (d = 4) and the
/// pruned scan (d = 16).
#[test]
fn eval_store_equals_the_manifest_metrics() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("s");
    let valid = tmp.path().join("valid.tsv");
    let day1 = std::fs::read_to_string(fixture().join("day1.tsv")).unwrap();
    let some: Vec<&str> = day1.lines().step_by(5).collect();
    std::fs::write(&valid, some.join("\n") + "\n").unwrap();
    let v = format!("eval.valid={}", valid.display());
    for (workers, d) in [(1, "4"), (3, "4"), (2, "16")] {
        let f = format!("als.factors={d}");
        let extra = [
            "eval.holdout=0.25",
            "eval.k=[3,5]",
            "model.warm_start=false",
            &v,
            &f,
        ];
        let s = go(job(&store, &fixture().join("day1.tsv"), &extra), workers);
        let r = recflow::eval_store::eval_store(&store, None).unwrap();
        assert_eq!(r["matches_manifest"], true, "{r}");
        assert_eq!(r["auc"], "recomputed from the factors");
        for set in ["metrics", "valid_metrics"] {
            let want = &s.manifest[set];
            assert!(want["users"].as_u64().unwrap() > 100, "{want}");
            assert!(want["auc_users"].as_u64().unwrap() > 100, "{want}");
            let want: serde_json::Value = serde_json::from_str(&want.to_string()).unwrap();
            assert_eq!(r[set], want, "{set}, -w {workers}, d = {d}");
        }
    }
    // LSH mode computes no AUC, and eval STORE says so; the other figures still match.
    let lsh = [
        "eval.holdout=0.25",
        "eval.k=[3,5]",
        "model.warm_start=false",
        "recommend.mode=lsh",
    ];
    go(job(&store, &fixture().join("day1.tsv"), &lsh), 2);
    let r = recflow::eval_store::eval_store(&store, None).unwrap();
    assert_eq!(r["matches_manifest"], true, "{r}");
    assert_eq!(r["auc"], "not computed in lsh mode");
    // A version without kept pairs (the fixture's) says why it cannot.
    let old = tmp.path().join("old");
    copy_tree(&fixture().join("store"), &old);
    let e = recflow::eval_store::eval_store(&old, None).unwrap_err();
    assert!(e.contains("keeps no held-out pairs"), "{e}");
    // Metrics deeper than the kept recs cannot be reproduced: a clear error.
    let deep = ["eval.holdout=0.25", "eval.k=[10]", "model.warm_start=false"];
    go(job(&store, &fixture().join("day1.tsv"), &deep), 1);
    let e = recflow::eval_store::eval_store(&store, None).unwrap_err();
    assert!(e.contains("recommend.k >= 10"), "{e}");
}

/// `--users-file` answers every user as single queries do, in file order; an unknown user
/// is an error naming the file and line.
#[test]
fn users_file_answers_equal_single_queries() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("old");
    copy_tree(&fixture().join("store"), &store);
    let f = tmp.path().join("users.txt");
    std::fs::write(&f, "3\n\n# a comment\n17\t(ignored)\n3\n250\n").unwrap();
    let got = recflow::query::recommend_batch(&store, None, &f, 4).unwrap();
    let mut want = Vec::new();
    for u in ["3", "17", "3", "250"] {
        want.extend(recflow::query::query(&store, None, "users", u, 4).unwrap());
    }
    assert_eq!(got, want);
    std::fs::write(&f, "3\nnobody\n").unwrap();
    let e = recflow::query::recommend_batch(&store, None, &f, 4).unwrap_err();
    assert!(
        e.contains("users.txt:2") && e.contains("unknown user 'nobody'"),
        "{e}"
    );
}

/// A damaged pack index is refused naming the file: by the manifest's digest, and, when the
/// manifest was made to agree with the damaged file, by the index's own checksum.
#[test]
fn corrupt_pack_index_is_a_clear_error_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("s");
    let s = go(job(&store, &fixture().join("day1.tsv"), &[]), 2);
    let rel = "users/pack-00000.bin";
    let path = s.version_dir.join(rel);
    let mut b = std::fs::read(&path).unwrap();
    b[22] ^= 0x04; // the first index entry's vshard
    std::fs::write(&path, &b).unwrap();
    let out = tmp.path().join("x");
    let e = export(&store, None, &out, ExportFormat::Tsv).unwrap_err();
    assert!(
        e.contains(rel) && e.contains("differs from the manifest"),
        "{e}"
    );
    let mp = s.version_dir.join("manifest.json");
    let mut m: serde_json::Value = serde_json::from_slice(&std::fs::read(&mp).unwrap()).unwrap();
    for f in m["files"].as_array_mut().unwrap() {
        if f["path"] == rel {
            f["crc32"] = crc32fast::hash(&b).into();
            f["xxh3"] = recflow::store::digest(&b).into();
        }
    }
    std::fs::write(&mp, serde_json::to_vec(&m).unwrap()).unwrap();
    let e = export(&store, None, &out, ExportFormat::Tsv).unwrap_err();
    assert!(
        e.contains(rel) && e.contains("packed index: checksum mismatch"),
        "{e}"
    );
    let e = recflow::query::query(&store, None, "users", "3", 3).unwrap_err();
    assert!(e.contains(rel) && e.contains("packed index"), "{e}");
}

/// The recs parts of a version, in part order: (path in the version, bytes on disk).
fn recs_parts(s: &Summary) -> Vec<(String, Vec<u8>)> {
    let (_, m) = recflow::store::open(s.version_dir.parent().unwrap(), None).unwrap();
    m.records_under("recs")
        .into_iter()
        .map(|r| {
            let bytes = std::fs::read(s.version_dir.join(&r.path)).unwrap();
            assert_eq!(bytes.len() as u64, r.bytes, "{}", r.path);
            assert_eq!(Some(recflow::store::digest(&bytes)), r.xxh3, "{}", r.path);
            (r.path, bytes)
        })
        .collect()
}

/// The same job with `output.compression = "none"` and the default: the default writes
/// `recs/part-NNNNN.tsv.zst` (manifest checksums of the bytes on disk) that zstd decompresses
/// to exactly the plain layout's `part-NNNNN.tsv`; export, queries and `eval STORE` read
/// both the same.
#[test]
fn compressed_parts_decompress_to_exactly_the_plain_layout() {
    let tmp = tempfile::tempdir().unwrap();
    let (plain, zst) = (tmp.path().join("plain"), tmp.path().join("zst"));
    let extra = [
        "eval.holdout=0.25",
        "eval.k=[3,5]",
        "model.warm_start=false",
    ];
    let day1 = fixture().join("day1.tsv");
    let none: Vec<&str> = extra
        .iter()
        .copied()
        .chain(["output.compression=none"])
        .collect();
    let a = go(job(&plain, &day1, &none), 2);
    let b = go(job(&zst, &day1, &extra), 2);
    let (pa, pb) = (recs_parts(&a), recs_parts(&b));
    assert_eq!(pa.len(), 2);
    assert_eq!(pa.len(), pb.len());
    for ((na, ba), (nb, bb)) in pa.iter().zip(&pb) {
        assert!(
            na.ends_with(".tsv") && *nb == format!("{na}.zst"),
            "{na} {nb}"
        );
        assert_eq!(zstd::decode_all(&bb[..]).unwrap(), *ba, "{nb}");
        assert!(bb.len() < ba.len(), "{nb}: {} of {}", bb.len(), ba.len());
    }
    assert_eq!(a.manifest["recommend"], b.manifest["recommend"]);
    let (xa, xb) = (tmp.path().join("xa"), tmp.path().join("xb"));
    assert!(
        exported(&plain, &xa) == exported(&zst, &xb),
        "exports differ"
    );
    for store in [&plain, &zst] {
        let r = recflow::eval_store::eval_store(store, None).unwrap();
        assert_eq!(r["matches_manifest"], true, "{r}");
    }
    let q = |s: &Path| recflow::query::query(s, None, "users", "3", 7).unwrap();
    assert_eq!(q(&plain), q(&zst));
}

/// A warm start compares its recs with the parent's whichever layout either has: day 2 from
/// a plain parent and from a compressed one, written compressed or plain, agree.
#[test]
fn warm_start_compares_recs_with_a_parent_of_either_layout() {
    let tmp = tempfile::tempdir().unwrap();
    let day1 = fixture().join("day1.tsv");
    let day2 = tmp.path().join("day2.tsv");
    std::fs::copy(fixture().join("day2.tsv"), &day2).unwrap();
    let mut days = Vec::new();
    for (parent, child) in [("none", "zstd"), ("zstd", "none"), ("zstd", "zstd")] {
        let store = tmp.path().join(format!("{parent}-{child}"));
        go(
            job(&store, &day1, &[&format!("output.compression={parent}")]),
            2,
        );
        let s = go(
            job(&store, &day2, &[&format!("output.compression={child}")]),
            3,
        );
        let change = s.manifest["lineage"]["recs_vs_parent"].clone();
        assert!(change["users_compared"].as_u64().unwrap() > 0, "{change}");
        days.push((
            change,
            exported(&store, &tmp.path().join(format!("x-{parent}-{child}"))),
        ));
    }
    assert!(days.windows(2).all(|w| w[0] == w[1]), "{:?}", days[0].0);
}

/// A store from the recflow before compression (plain parts, held-out pairs in format 1,
/// `tests/fixtures/plain-store`) still evaluates to its manifest and exports what the same
/// job exports now.
#[test]
fn a_plain_store_from_before_compression_still_loads_and_evaluates() {
    let tmp = tempfile::tempdir().unwrap();
    let old = tmp.path().join("old");
    copy_tree(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/plain-store/store"),
        &old,
    );
    let r = recflow::eval_store::eval_store(&old, None).unwrap();
    assert_eq!(r["matches_manifest"], true, "{r}");
    let new = tmp.path().join("new");
    let extra = [
        "eval.holdout=0.25",
        "eval.k=[3,5]",
        "model.warm_start=false",
    ];
    let s = go(job(&new, &fixture().join("day1.tsv"), &extra), 2);
    assert!(recs_parts(&s).iter().all(|p| p.0.ends_with(".tsv.zst")));
    let now = recflow::eval_store::eval_store(&new, None).unwrap();
    assert_eq!(now["metrics"], r["metrics"]);
    assert!(
        exported(&old, &tmp.path().join("xo")) == exported(&new, &tmp.path().join("xn")),
        "the old store reads differently"
    );
}
