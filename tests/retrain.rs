//! Nightly retraining: warm start from the current version with a delta of new events,
//! removals, new users and items; the store lock; crash safety of publishing.

use recflow::generate::{write_delta_tsv, write_tsv, Delta, Spec};
use recflow::job::Job;
use recflow::run::{run, RunOptions, Summary};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_recflow");

fn base_spec() -> Spec {
    Spec {
        users: 1500,
        items: 400,
        nnz: 30_000,
        rank: 4,
        seed: 11,
    }
}

/// Writes day 0 (the base set) and day `day`'s delta; returns their paths.
fn data(dir: &Path, day: u64) -> (PathBuf, PathBuf) {
    let base = dir.join("day0.tsv");
    if !base.exists() {
        let mut b = Vec::new();
        write_tsv(base_spec(), &mut b, 1).unwrap();
        std::fs::write(&base, b).unwrap();
    }
    let delta = dir.join(format!("day{day}.tsv"));
    let mut d = Vec::new();
    write_delta_tsv(
        base_spec(),
        &Delta {
            day,
            nnz: 3000,
            new_users: 30,
            new_items: 10,
            removals: 200,
        },
        &mut d,
    )
    .unwrap();
    std::fs::write(&delta, d).unwrap();
    (base, delta)
}

fn job(store: &Path, input: &[&Path], extra: &[&str]) -> Job {
    let paths: Vec<String> = input
        .iter()
        .map(|p| format!("\"{}\"", p.display()))
        .collect();
    let mut sets: Vec<String> = vec![
        format!("input.path=[{}]", paths.join(",")),
        "input.format=tsv".into(),
        "input.weight=2".into(),
        "als.factors=8".into(),
        "als.iterations=15".into(),
        "als.regularization=0.05".into(),
        "confidence.alpha=5".into(),
        "shards.virtual=16".into(),
        "model.warm_start=true".into(),
        format!("output.store={}", store.display()),
    ];
    sets.extend(extra.iter().map(|s| s.to_string()));
    Job::parse("", &sets).unwrap()
}

fn go(j: Job, workers: usize) -> Summary {
    run(
        j,
        RunOptions {
            workers,
            ..RunOptions::default()
        },
    )
    .unwrap()
    .unwrap()
}

fn rows(path: &Path) -> Vec<(u64, u64, i64)> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (
                f[0].parse().unwrap(),
                f[1].parse().unwrap(),
                f[2].parse().unwrap(),
            )
        })
        .collect()
}

/// Every (user, item) pair of a version's interaction snapshot.
fn snapshot_pairs(dir: &Path) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    let text = std::fs::read(dir.join("manifest.json")).unwrap();
    let m: recflow::store::Manifest = serde_json::from_slice(&text).unwrap();
    let pairs = recflow::store::sections::snapshot_pairs(dir, &m.files, &|_| true).unwrap();
    out.extend(
        pairs
            .into_iter()
            .map(|p| (p.0.to_string(), p.1.to_string())),
    );
    out
}

/// user → recommended items, from a version's recs parts.
fn recs(dir: &Path) -> BTreeMap<String, Vec<String>> {
    let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for e in std::fs::read_dir(dir.join("recs")).unwrap() {
        for l in recflow::store::parts::read_text(&e.unwrap().path())
            .unwrap()
            .lines()
        {
            let f: Vec<&str> = l.split('\t').collect();
            m.entry(f[0].into()).or_default().push(f[1].into());
        }
    }
    m
}

/// Exported (users.tsv, items.tsv) of the store's current version.
fn export(store: &Path, out: &Path) -> (String, String) {
    recflow::export::export(store, None, out, recflow::export::ExportFormat::Tsv).unwrap();
    (
        std::fs::read_to_string(out.join("users.tsv")).unwrap(),
        std::fs::read_to_string(out.join("items.tsv")).unwrap(),
    )
}

#[test]
fn day_two_folds_in_new_ids_applies_removals_and_keeps_the_rest_stable() {
    let tmp = tempfile::tempdir().unwrap();
    let (day0, day1) = data(tmp.path(), 1);
    let store = tmp.path().join("store");
    let v1 = go(job(&store, &[&day0], &[]), 2);
    assert!(v1.manifest["lineage"]["parent"].is_null());
    let v2 = go(job(&store, &[&day1], &["als.iterations=3"]), 3);
    let lin = &v2.manifest["lineage"];
    assert_eq!(lin["parent"], "v000001");
    assert!(lin["new_users"].as_u64().unwrap() > 0, "{lin}");
    assert!(lin["new_items"].as_u64().unwrap() > 0, "{lin}");
    assert_eq!(
        v2.manifest["counts"]["snapshot_pairs"],
        v1.manifest["counts"]["pairs"]
    );

    let delta = rows(&day1);
    let added: HashSet<(String, String)> = delta
        .iter()
        .filter(|r| r.2 > 0)
        .map(|r| (r.0.to_string(), r.1.to_string()))
        .collect();
    // Removals: in yesterday's snapshot, gone from today's (unless re-added today).
    let (s1, s2) = (
        snapshot_pairs(&v1.version_dir),
        snapshot_pairs(&v2.version_dir),
    );
    let removed: Vec<(String, String)> = delta
        .iter()
        .filter(|r| r.2 < 0)
        .map(|r| (r.0.to_string(), r.1.to_string()))
        .filter(|p| !added.contains(p))
        .collect();
    assert!(removed.len() > 100);
    for p in &removed {
        assert!(s1.contains(p), "removed pair {p:?} was not in the parent");
        assert!(
            !s2.contains(p),
            "removed pair {p:?} is still in the snapshot"
        );
    }
    assert!(v2.manifest["counts"]["nonpositive_pairs"].as_u64().unwrap() >= removed.len() as u64);
    // Additions are in today's snapshot, and nothing else changed.
    assert!(added.iter().all(|p| s2.contains(p)));
    let kept: BTreeSet<_> = s1.difference(&s2).cloned().collect();
    assert_eq!(kept, removed.iter().cloned().collect::<BTreeSet<_>>());

    // New users and items have (non-zero) vectors; new users get recommendations.
    let (users, items) = export(&store, &tmp.path().join("x"));
    let nonzero_ids = |text: &str, from: u64| {
        text.lines()
            .filter_map(|l| {
                let mut f = l.split('\t');
                let id: u64 = f.next()?.parse().ok()?;
                let nz = f.any(|x| x.parse::<f32>().map(|v| v != 0.0).unwrap_or(false));
                (id >= from && nz).then_some(id)
            })
            .count()
    };
    assert!(nonzero_ids(&users, 1500) >= 20, "new users lack vectors");
    assert!(nonzero_ids(&items, 400) >= 5, "new items lack vectors");
    let r2 = recs(&v2.version_dir);
    assert!(
        r2.keys()
            .filter(|u| u.parse::<u64>().unwrap() >= 1500)
            .count()
            >= 20
    );
    // Seen items stay excluded, today's additions included; removed pairs no longer count as seen.
    for (u, items) in &r2 {
        for i in items {
            assert!(
                !s2.contains(&(u.clone(), i.clone())),
                "seen item {i} recommended to {u}"
            );
        }
    }

    // Users the delta does not touch keep most of their top-10.
    let touched: HashSet<String> = delta.iter().map(|r| r.0.to_string()).collect();
    let r1 = recs(&v1.version_dir);
    let (mut same, mut total) = (0usize, 0usize);
    for (u, a) in &r1 {
        if touched.contains(u) {
            continue;
        }
        let b: HashSet<&String> = r2[u].iter().collect();
        same += a.iter().filter(|i| b.contains(i)).count();
        total += a.len();
    }
    let overlap = same as f64 / total as f64;
    assert!(
        overlap > 0.7,
        "untouched users kept only {overlap:.2} of their top-10"
    );

    // The lineage's comparison with the parent, recounted from both versions' recs files
    // (a 3-worker run compared against a 2-worker parent: pairs cross workers).
    let (mut compared, mut changed, mut micro) = (0u64, 0u64, 0u64);
    for (u, b) in &r2 {
        let Some(a) = r1.get(u) else { continue };
        let kept = b.iter().filter(|i| a.contains(i)).count();
        compared += 1;
        changed += (kept != b.len() || a.len() != b.len()) as u64;
        micro += (1e6 * kept as f64 / a.len().max(b.len()) as f64).round() as u64;
    }
    let cmp = &lin["recs_vs_parent"];
    assert_eq!(cmp["users_compared"], compared, "{cmp}");
    assert_eq!(cmp["users_topk_changed"], changed, "{cmp}");
    assert!(changed > 0 && changed < compared, "{cmp}");
    let mean = micro as f64 / 1e6 / compared as f64;
    assert!(
        (cmp["mean_topk_overlap"].as_f64().unwrap() - mean).abs() < 1e-12,
        "{cmp} vs {mean}"
    );

    // Re-running last night's job would count day 1's events twice: refused.
    let e = run(
        job(&store, &[&day1], &["als.iterations=3"]),
        RunOptions::default(),
    )
    .unwrap_err();
    assert!(
        e.contains("already consumed") && e.contains("day1.tsv"),
        "{e}"
    );
    assert_eq!(recflow::store::versions(&store).len(), 2);
}

#[test]
fn three_warm_iterations_match_a_cold_training_on_the_union() {
    let tmp = tempfile::tempdir().unwrap();
    let (day0, day1) = data(tmp.path(), 1);
    let warm = tmp.path().join("warm");
    go(job(&warm, &[&day0], &[]), 2);
    let w = go(job(&warm, &[&day1], &["als.iterations=3"]), 2);
    let cold = go(
        job(
            &tmp.path().join("cold"),
            &[&day0, &day1],
            &["model.warm_start=false"],
        ),
        2,
    );
    assert_eq!(
        w.manifest["counts"]["pairs"],
        cold.manifest["counts"]["pairs"]
    );
    let last = |s: &Summary| {
        s.manifest["train"]["objective"]
            .as_array()
            .unwrap()
            .last()
            .unwrap()["value"]
            .as_f64()
            .unwrap()
    };
    let (a, b) = (last(&w), last(&cold));
    assert!(
        (a - b).abs() / b < 0.01,
        "warm objective {a} vs cold {b}: not within 1%"
    );
}

#[test]
fn warm_start_is_identical_across_worker_counts_and_processes() {
    let tmp = tempfile::tempdir().unwrap();
    let (day0, day1) = data(tmp.path(), 1);
    let day1_store = tmp.path().join("day1");
    go(job(&day1_store, &[&day0], &["als.iterations=5"]), 3);
    let mut models = Vec::new();
    for w in [1, 4] {
        let store = tmp.path().join(format!("w{w}"));
        copy_dir(&day1_store, &store);
        go(job(&store, &[&day1], &["als.iterations=2"]), w);
        models.push(export(&store, &tmp.path().join(format!("x{w}"))));
    }
    // Two processes of two threads, through the binary.
    let store = tmp.path().join("p2");
    copy_dir(&day1_store, &store);
    let ports: Vec<u16> = (0..2)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect::<Vec<_>>()
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect();
    let hosts = tmp.path().join("hosts");
    std::fs::write(
        &hosts,
        format!("127.0.0.1:{}\n127.0.0.1:{}\n", ports[0], ports[1]),
    )
    .unwrap();
    let jobfile = tmp.path().join("day2.toml");
    std::fs::write(
        &jobfile,
        toml::to_string(&job(&store, &[&day1], &["als.iterations=2"])).unwrap(),
    )
    .unwrap();
    let children: Vec<_> = (0..2)
        .map(|p| {
            Command::new(BIN)
                .args(["run", "-q", "-n", "2", "-w", "2", "-p", &p.to_string()])
                .arg(&jobfile)
                .arg("--hostfile")
                .arg(&hosts)
                .spawn()
                .unwrap()
        })
        .collect();
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    models.push(export(&store, &tmp.path().join("xp")));
    for m in &models[1..] {
        assert!(m.0 == models[0].0, "user factors differ between layouts");
        assert!(m.1 == models[0].1, "item factors differ between layouts");
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

fn write_job(dir: &Path, store: &Path, input: &Path) -> PathBuf {
    let j = job(
        store,
        &[input],
        &[
            "als.iterations=2",
            "recommend.k=5",
            "output.keep_versions=3",
        ],
    );
    let path = dir.join("job.toml");
    std::fs::write(&path, toml::to_string(&j).unwrap()).unwrap();
    path
}

#[test]
fn a_second_run_on_a_locked_store_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (day0, _) = data(tmp.path(), 1);
    let store = tmp.path().join("s");
    let jobfile = write_job(tmp.path(), &store, &day0);
    // This test process holds the lock, as a running job would.
    let held = recflow::lock::StoreLock::acquire(&store).unwrap();
    let out = Command::new(BIN)
        .args(["run", "-q"])
        .arg(&jobfile)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(recflow::lock::EXIT_LOCKED), "{err}");
    assert!(
        err.contains("store is locked") && err.contains(&format!("pid {}", std::process::id())),
        "{err}"
    );
    assert!(recflow::store::versions(&store).is_empty());
    drop(held);
    let out = Command::new(BIN)
        .args(["run", "-q"])
        .arg(&jobfile)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// CURRENT names a complete version: manifest readable, every file present with its
/// recorded size and checksum, both factor sides decodable.
fn assert_store_consistent(store: &Path) {
    let Some(v) = recflow::store::current(store).unwrap() else {
        return;
    };
    let (dir, m) = recflow::store::open(store, Some(&v)).unwrap();
    for f in &m.files {
        let bytes = std::fs::read(dir.join(&f.path)).unwrap();
        assert_eq!(bytes.len() as u64, f.bytes);
        assert_eq!(crc32fast::hash(&bytes), f.crc32);
    }
    recflow::store::load_side(&dir, &m, "users").unwrap();
    recflow::store::load_side(&dir, &m, "items").unwrap();
}

#[test]
fn crashes_at_every_point_of_a_publish_leave_a_loadable_current_version() {
    let tmp = tempfile::tempdir().unwrap();
    let (day0, day1) = data(tmp.path(), 1);
    let store = tmp.path().join("s");
    // Day 1 publishes normally; every later run warm-starts on it and crashes somewhere.
    let jobfile = write_job(tmp.path(), &store, &day0);
    assert!(Command::new(BIN)
        .args(["run", "-q"])
        .arg(&jobfile)
        .status()
        .unwrap()
        .success());
    // Each run warm-starts (reading the parent's snapshot) with the next day's events; a
    // crashed run publishes nothing, so it is retried on the same day.
    let mut day = 1;
    let mut jobfile = write_job(tmp.path(), &store, &day1);
    let mut trials = 0;
    let mut completed = 0;
    for at in 1.. {
        let st = Command::new(BIN)
            .args(["run", "-q"])
            .arg(&jobfile)
            .env(recflow::store::CRASH_ENV, at.to_string())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        trials += 1;
        assert_store_consistent(&store);
        if st.success() {
            // Past the last crash point: the run completed; tomorrow brings new events.
            completed += 1;
            // A packed version has few files, so few crash points a day: go on for more
            // days until there were as many crashes as the per-shard layout gave.
            if completed >= 3 && trials >= 40 {
                break;
            }
            day += 1;
            jobfile = write_job(tmp.path(), &store, &data(tmp.path(), day).1);
        } else {
            assert_eq!(st.code(), None, "a run failed instead of crashing");
        }
        assert!(at < 1000, "runs never complete");
    }
    day += 1;
    jobfile = write_job(tmp.path(), &store, &data(tmp.path(), day).1);
    // Real kills at random moments while the run is going, too.
    let mut rng = recflow::ids::SplitMix::new(7);
    let mut killed = 0;
    while killed < 10 {
        let before = recflow::store::current(&store).unwrap();
        let mut child = Command::new(BIN)
            .args(["run", "-q"])
            .arg(&jobfile)
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(rng.below(300)));
        let running = child.try_wait().unwrap().is_none();
        let _ = child.kill();
        let st = child.wait().unwrap();
        assert_store_consistent(&store);
        if running {
            killed += 1;
            trials += 1;
        }
        if st.success() || recflow::store::current(&store).unwrap() != before {
            // It published before the kill landed: tomorrow brings new events.
            day += 1;
            jobfile = write_job(tmp.path(), &store, &data(tmp.path(), day).1);
        }
    }
    assert!(trials >= 50, "only {trials} trials");
    // The store still works: the lock died with each process, leftovers are cleaned, retention
    // holds.
    assert!(Command::new(BIN)
        .args(["run", "-q"])
        .arg(&jobfile)
        .status()
        .unwrap()
        .success());
    assert_store_consistent(&store);
    let names: Vec<String> = std::fs::read_dir(&store)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().all(|n| !n.starts_with(".staging-")
            && !n.starts_with(".trash-")
            && !n.starts_with(".pending-")),
        "{names:?}"
    );
    assert_eq!(recflow::store::versions(&store).len(), 3, "{names:?}");
}

#[test]
fn a_parent_that_does_not_fit_is_refused_with_a_clear_message() {
    let tmp = tempfile::tempdir().unwrap();
    let (day0, day1) = data(tmp.path(), 1);
    let store = tmp.path().join("s");
    go(job(&store, &[&day0], &["als.iterations=2"]), 2);
    for (set, want) in [
        ("shards.virtual=32", "shards.virtual = 16"),
        ("als.factors=4", "als.factors = 8"),
    ] {
        let e = run(job(&store, &[&day1], &[set]), RunOptions::default()).unwrap_err();
        assert!(e.contains(want) && e.contains("warm_start = false"), "{e}");
    }
    // A corrupted snapshot file is named.
    let snap = std::fs::read_dir(store.join("v000001/snapshot"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut b = std::fs::read(&snap).unwrap();
    let n = b.len();
    b[n / 2] ^= 4;
    std::fs::write(&snap, b).unwrap();
    let e = run(
        job(&store, &[&day1], &[]),
        RunOptions {
            workers: 3,
            ..RunOptions::default()
        },
    )
    .unwrap_err();
    assert!(
        e.contains(&snap.file_name().unwrap().to_string_lossy().into_owned())
            && e.contains("checksum"),
        "{e}"
    );
    assert_eq!(recflow::store::versions(&store), vec!["v000001"]);
}

#[test]
fn fold_in_keeps_known_vectors_and_solves_new_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let (day0, day1) = data(tmp.path(), 1);
    let store = tmp.path().join("s");
    go(job(&store, &[&day0], &["als.iterations=4"]), 2);
    let (u1, i1) = export(&store, &tmp.path().join("a"));
    // No iterations: the new version is the parent plus the folded-in entities.
    go(job(&store, &[&day1], &["als.iterations=0"]), 3);
    let (u2, i2) = export(&store, &tmp.path().join("b"));
    for (before, after, first_new) in [(&u1, &u2, 1500u64), (&i1, &i2, 400)] {
        let old: HashSet<&str> = before.lines().collect();
        let (mut new, mut known) = (0, 0);
        for l in after.lines() {
            let id: u64 = l.split('\t').next().unwrap().parse().unwrap();
            if id < first_new {
                known += 1;
                assert!(old.contains(l), "a known vector changed: {l}");
            } else {
                new += 1;
                // Solved, not the random start (every component in [0, 0.01)).
                let solved = l
                    .split('\t')
                    .skip(1)
                    .map(|x| x.parse::<f32>().unwrap())
                    .any(|x| !(0.0..0.01).contains(&x));
                assert!(solved, "a new vector was not solved: {l}");
            }
        }
        assert!(known > 0 && new > 0);
    }
}

#[test]
fn removals_pass_min_weight_and_demo_data_is_not_counted_twice() {
    let tmp = tempfile::tempdir().unwrap();
    let (day0, day1) = data(tmp.path(), 1);
    let store = tmp.path().join("s");
    let mw = ["als.iterations=2", "input.min_weight=1"];
    go(job(&store, &[&day0], &mw), 2);
    let v2 = go(job(&store, &[&day1], &mw), 2);
    let removals = rows(&day1).iter().filter(|r| r.2 < 0).count() as u64;
    let c = &v2.manifest["counts"];
    assert_eq!(c["read"]["below_min_weight"], 0, "{c}");
    assert!(
        c["nonpositive_pairs"].as_u64().unwrap() >= removals * 9 / 10,
        "{c}"
    );
    // A warm start on the built-in demo data would add it to its own snapshot again.
    let demo = tmp.path().join("demo");
    let j = |s: &str| {
        let sets = [
            "input.demo.users=300",
            "input.demo.items=100",
            "input.demo.nnz=3000",
            "als.iterations=1",
            "model.warm_start=true",
            s,
        ];
        Job::parse("", &sets.map(String::from)).unwrap()
    };
    let store_set = format!("output.store={}", demo.display());
    go(j(&store_set), 1);
    let e = run(j(&store_set), RunOptions::default()).unwrap_err();
    assert!(e.contains("demo data"), "{e}");
}

#[test]
fn a_removal_flag_column_removes_pairs_on_a_warm_start() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("s");
    let day1 = tmp.path().join("d1.tsv");
    let mut text = String::new();
    for u in 0..30 {
        for i in 0..12 {
            if (u + i) % 3 != 0 {
                text.push_str(&format!("{u}\t{i}\t1\n"));
            }
        }
    }
    std::fs::write(&day1, text).unwrap();
    let day2 = tmp.path().join("d2.tsv");
    std::fs::write(&day2, "1\t3\t1\tunfavorite\n1\t4\t1\tfalse\n2\t2\t1\t1\n").unwrap();
    let sets = ["als.iterations=2", "recommend.k=3"];
    go(job(&store, &[&day1], &sets), 2);
    let v2 = go(
        job(&store, &[&day2], &[sets[0], sets[1], "input.removed=3"]),
        2,
    );
    let s2 = snapshot_pairs(&v2.version_dir);
    let has = |u: &str, i: &str| s2.contains(&(u.to_string(), i.to_string()));
    let s1 = snapshot_pairs(&store.join("v000001"));
    assert!(s1.contains(&("1".into(), "3".into())) && s1.contains(&("2".into(), "2".into())));
    assert!(!has("1", "3") && !has("2", "2"), "flagged pairs remain");
    assert!(has("1", "4") && has("1", "1"), "other pairs lost");
    assert_eq!(v2.manifest["counts"]["nonpositive_pairs"], 2);
}
