//! `recflow tune` through the library API: determinism across worker counts, `eval.test`
//! untouched until the winner is chosen, `--refit`.

use recflow::run::RunOptions;
use recflow::tune::{parse_param, tune, TuneOptions};
use std::path::Path;

/// Train / valid / test files of a small planted data set, and a job over them.
fn setup(dir: &Path, test_file: &str) -> std::path::PathBuf {
    let (mut tr, mut va, mut te) = (String::new(), String::new(), String::new());
    let mut h = 11u64;
    for u in 0..200u64 {
        for i in 0..80u64 {
            h = h
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            // Users like items of their own group of 4 (a planted structure to learn).
            let p = if i % 4 == u % 4 { 3 } else { 30 };
            if (h >> 33).is_multiple_of(p) {
                let f = match (h >> 20) % 10 {
                    0 => &mut va,
                    1 => &mut te,
                    _ => &mut tr,
                };
                f.push_str(&format!("u{u}\ti{i}\n"));
            }
        }
    }
    for (n, t) in [("train.tsv", &tr), ("valid.tsv", &va), ("test.tsv", &te)] {
        std::fs::write(dir.join(n), t).unwrap();
    }
    let job = format!(
        "[input]\npath = [\"train.tsv\"]\n[als]\nfactors = 8\niterations = 3\n[shards]\nvirtual = 8\n[recommend]\nk = 5\n[eval]\nvalid = \"valid.tsv\"\ntest = \"{test_file}\"\nk = [5, 10]\n[output]\nstore = \"store\"\n"
    );
    let p = dir.join("job.toml");
    std::fs::write(&p, job).unwrap();
    p
}

fn options(out: &Path, w: usize, refit: bool) -> TuneOptions {
    TuneOptions {
        search: None,
        params: vec![
            parse_param("als.regularization=0.01,1").unwrap(),
            parse_param("confidence.alpha=1..40:log").unwrap(),
        ],
        trials: Some(4),
        seed: 9,
        metric: "ndcg@10".into(),
        time_limit_min: None,
        refit,
        patience: None,
        eval_every: 1,
        out: out.to_path_buf(),
        run: RunOptions {
            workers: w,
            ..RunOptions::default()
        },
    }
}

/// The same trials, values, winner and published model for 1 and 3 workers.
#[test]
fn tuning_is_deterministic_across_worker_counts() {
    let tmp = tempfile::tempdir().unwrap();
    let mut got = Vec::new();
    for w in [1, 3] {
        let dir = tmp.path().join(format!("w{w}"));
        std::fs::create_dir_all(&dir).unwrap();
        let job = setup(&dir, "test.tsv");
        let store = format!("output.store={}", dir.join("store").display());
        let r = tune(&job, &[store], &options(&dir.join("out"), w, false))
            .unwrap()
            .unwrap();
        let trials: Vec<(serde_json::Value, f64)> = r["trials"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| (t["set"].clone(), t["value"].as_f64().unwrap()))
            .collect();
        // 4 halving trials, then up to 2 neighbours per range key of the winner.
        assert!((4..=6).contains(&trials.len()), "{}", trials.len());
        let ex = dir.join("export");
        recflow::export::export(
            &dir.join("store"),
            None,
            &ex,
            recflow::export::ExportFormat::Tsv,
        )
        .unwrap();
        let users = std::fs::read(ex.join("users.tsv")).unwrap();
        assert!(r["test_metrics"]["at_k"]["10"]["ndcg"].as_f64().unwrap() > 0.0);
        assert!(dir.join("out/tune.html").exists() && dir.join("out/best.toml").exists());
        got.push((
            trials,
            r["best"]["index"].clone(),
            users,
            r["test_metrics"].clone(),
        ));
    }
    assert!(got[0] == got[1], "tuning differs between 1 and 3 workers");
}

/// With `eval.test` naming a file that does not exist, every trial still runs (trials never
/// open it) and only the final run of the winner fails on it.
#[test]
fn trials_never_open_the_test_file() {
    let tmp = tempfile::tempdir().unwrap();
    // A test file that exists but cannot be decoded: only a run that reads it fails.
    let job = setup(tmp.path(), "corrupt-test.tsv.gz");
    std::fs::write(tmp.path().join("corrupt-test.tsv.gz"), b"\x1f\x8b not gzip").unwrap();
    let out = tmp.path().join("out");
    let store = format!("output.store={}", tmp.path().join("store").display());
    let e = tune(&job, &[store], &options(&out, 2, false)).unwrap_err();
    assert!(e.contains("corrupt-test.tsv.gz"), "{e}");
    let trials: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("trials.json")).unwrap()).unwrap();
    assert!(trials.as_array().unwrap().len() >= 4);
    assert!(out.join("best.toml").exists() && !out.join("tune.json").exists());
}

/// A missing `eval.test` fails before the search, not after it, and names the key.
#[test]
fn a_missing_test_file_fails_before_any_trial() {
    let tmp = tempfile::tempdir().unwrap();
    let job = setup(tmp.path(), "missing-test.tsv");
    let out = tmp.path().join("out");
    let store = format!("output.store={}", tmp.path().join("store").display());
    let e = tune(&job, &[store], &options(&out, 2, false)).unwrap_err();
    assert!(
        e.contains("eval.test '") && e.contains("missing-test.tsv"),
        "{e}"
    );
    assert!(e.contains("no such file"), "{e}");
    assert!(!out.join("trials.json").exists() && !out.join("trials").join("t0001.json").exists());
}

/// `--refit` trains the winner on train + valid: more pairs, valid in best.toml's input.
#[test]
fn refit_adds_the_validation_pairs() {
    let tmp = tempfile::tempdir().unwrap();
    let job = setup(tmp.path(), "test.tsv");
    let mut pairs = Vec::new();
    for refit in [false, true] {
        let out = tmp.path().join(format!("out{refit}"));
        let store = format!(
            "output.store={}",
            tmp.path().join(format!("s{refit}")).display()
        );
        let r = tune(&job, &[store], &options(&out, 2, refit))
            .unwrap()
            .unwrap();
        let dir = Path::new(r["published"].as_str().unwrap());
        let m: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap())
                .unwrap();
        pairs.push(m["counts"]["pairs"].as_u64().unwrap());
        let best = std::fs::read_to_string(out.join("best.toml")).unwrap();
        assert_eq!(best.contains("valid.tsv\"]"), refit, "{best}");
    }
    let valid = std::fs::read_to_string(tmp.path().join("valid.tsv")).unwrap();
    assert_eq!(pairs[1], pairs[0] + valid.lines().count() as u64);
}

/// Early stopping: chunks of one iteration, patience 1, at most 40 iterations. The trial stops
/// before 40, and its value is exactly what a straight run of its iteration count scores
/// (chunked warm starts train the same model).
#[test]
fn early_stopping_stops_and_matches_a_straight_run() {
    let tmp = tempfile::tempdir().unwrap();
    let job = setup(tmp.path(), "test.tsv");
    let mut o = options(&tmp.path().join("out"), 2, false);
    o.params = vec![parse_param("als.regularization=0.05").unwrap()];
    o.trials = None;
    o.patience = Some(1);
    let sets = [
        format!("output.store={}", tmp.path().join("store").display()),
        "als.iterations=40".to_string(),
    ];
    let r = tune(&job, &sets, &o).unwrap().unwrap();
    let t = &r["trials"][0];
    let it = t["iterations"].as_u64().unwrap() as usize;
    assert!((1..40).contains(&it), "{t}");
    let mut straight = recflow::job::Job::load(&job, &sets).unwrap();
    straight.als.regularization = 0.05;
    straight.als.iterations = it;
    straight.eval.test = None;
    straight.output.store = tmp.path().join("straight").display().to_string();
    let s = recflow::run::run(straight, RunOptions::default())
        .unwrap()
        .unwrap();
    let want = s.manifest["valid_metrics"]["at_k"]["10"]["ndcg"]
        .as_f64()
        .unwrap();
    assert_eq!(t["value"].as_f64().unwrap(), want);
    let best = std::fs::read_to_string(tmp.path().join("out/best.toml")).unwrap();
    assert!(best.contains(&format!("iterations = {it}\n")), "{best}");
}

/// Successive halving: 9 configurations at 2 iterations, the best 3 on to 4, the best 1 on to
/// 8 (or fewer where a survivor stopped improving); the rung-k survivors are the best third of
/// rung k−1 by value, and the winner is the best value seen.
#[test]
fn halving_trains_the_best_third_further() {
    let tmp = tempfile::tempdir().unwrap();
    let job = setup(tmp.path(), "test.tsv");
    let mut o = options(&tmp.path().join("out"), 2, false);
    o.search = Some(recflow::tune::Search::Halving);
    o.trials = Some(9);
    o.eval_every = 2;
    o.params = vec![
        parse_param("als.regularization=1e-3..10:log").unwrap(),
        parse_param("confidence.alpha=1..40:log").unwrap(),
    ];
    let sets = [
        format!("output.store={}", tmp.path().join("store").display()),
        "als.iterations=8".to_string(),
    ];
    let r = tune(&job, &sets, &o).unwrap().unwrap();
    let all = r["trials"].as_array().unwrap();
    // 9 halving trials, then the refinement: the halving winner with one range key moved.
    assert!((10..=13).contains(&all.len()), "{}", all.len());
    let (trials, refined) = all.split_at(9);
    let curve = |t: &serde_json::Value| -> Vec<(u64, f64)> {
        t["curve"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| (c[0].as_u64().unwrap(), c[1].as_f64().unwrap()))
            .collect()
    };
    let at2: Vec<(usize, f64)> = trials
        .iter()
        .enumerate()
        .map(|(i, t)| (i, curve(t)[0].1))
        .collect();
    assert!(trials.iter().all(|t| curve(t)[0].0 == 2));
    let went_on: Vec<usize> = (0..9).filter(|&i| curve(&trials[i]).len() > 1).collect();
    let mut ranked = at2.clone();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut top3: Vec<usize> = ranked[..3].iter().map(|x| x.0).collect();
    top3.sort();
    assert_eq!(went_on, top3, "the rung-2 trials are the rung-1 best third");
    assert!(trials.iter().filter(|t| curve(t).len() > 2).count() <= 1);
    let winner = trials
        .iter()
        .max_by(|a, b| {
            let (x, y) = (a["value"].as_f64().unwrap(), b["value"].as_f64().unwrap());
            x.total_cmp(&y)
                .then(b["index"].as_u64().cmp(&a["index"].as_u64()))
        })
        .unwrap();
    for t in refined {
        let differ = (0..2).filter(|&j| t["set"][j] != winner["set"][j]).count();
        assert_eq!(differ, 1, "{t} vs {winner}");
        assert_eq!(t["iterations"], winner["iterations"]);
    }
    let best_seen = all
        .iter()
        .flat_map(|t| curve(t).into_iter().map(|c| c.1))
        .fold(f64::NEG_INFINITY, f64::max);
    assert_eq!(r["best"]["value"].as_f64().unwrap(), best_seen);
    let it = r["best"]["iterations"].as_u64().unwrap();
    let best = std::fs::read_to_string(tmp.path().join("out/best.toml")).unwrap();
    assert!(best.contains(&format!("iterations = {it}\n")), "{best}");
}

/// A configuration whose training breaks down numerically is recorded with its error, and the
/// search goes on to publish the others' best (one bad draw must not end a night's tuning).
#[test]
fn a_broken_trial_is_recorded_and_the_search_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    let job = setup(tmp.path(), "test.tsv");
    let mut o = options(&tmp.path().join("out"), 2, false);
    // α = 1e38: finite confidences whose products overflow f32 in every solve.
    o.params = vec![parse_param("confidence.alpha=1,1e38").unwrap()];
    o.trials = None;
    let sets = [
        format!("output.store={}", tmp.path().join("store").display()),
        "confidence.scheme=linear".to_string(),
        "als.solver=cholesky".to_string(),
    ];
    let r = tune(&job, &sets, &o).unwrap().unwrap();
    let trials = r["trials"].as_array().unwrap();
    assert_eq!(trials.len(), 2);
    assert!(trials[0]["value"].as_f64().unwrap() > 0.0);
    let err = trials[1]["error"]
        .as_str()
        .unwrap_or_else(|| panic!("{}", trials[1]));
    assert!(err.contains("broke down numerically"), "{err}");
    assert_eq!(r["best"]["index"], 1);
}

/// Two processes of one worker each (a loopback cluster of the binary) tune exactly as one
/// process of two workers: the same trials, values, winner and published model.
#[test]
fn tuning_in_two_processes_matches_one_process() {
    let tmp = tempfile::tempdir().unwrap();
    let one = tmp.path().join("one");
    std::fs::create_dir_all(&one).unwrap();
    let job = setup(&one, "test.tsv");
    let store = format!("output.store={}", one.join("store").display());
    let r = tune(&job, &[store], &options(&one.join("out"), 2, false))
        .unwrap()
        .unwrap();

    let two = tmp.path().join("two");
    std::fs::create_dir_all(&two).unwrap();
    let job2 = setup(&two, "test.tsv");
    let ports: Vec<_> = (0..2)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let hosts: Vec<String> = ports
        .iter()
        .map(|l| format!("127.0.0.1:{}", l.local_addr().unwrap().port()))
        .collect();
    drop(ports);
    std::fs::write(two.join("hosts"), hosts.join("\n")).unwrap();
    let procs: Vec<_> = (0..2)
        .map(|p| {
            std::process::Command::new(env!("CARGO_BIN_EXE_recflow"))
                .arg("tune")
                .arg(&job2)
                .args(["-q", "-n", "2", "-p", &p.to_string(), "-w", "1"])
                .arg("--hostfile")
                .arg(two.join("hosts"))
                .args(["--param", "als.regularization=0.01,1"])
                .args(["--param", "confidence.alpha=1..40:log"])
                .args(["--trials", "4", "--seed", "9", "--metric", "ndcg@10"])
                .args(["--eval-every", "1", "--out"])
                .arg(two.join("out"))
                .arg("--set")
                .arg(format!("output.store={}", two.join("store").display()))
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for p in procs {
        let out = p.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let r2: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(two.join("out/tune.json")).unwrap()).unwrap();
    let key = |r: &serde_json::Value| {
        let t: Vec<_> = r["trials"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| (t["set"].clone(), t["value"].clone(), t["curve"].clone()))
            .collect();
        (t, r["best"]["index"].clone(), r["test_metrics"].clone())
    };
    assert!(key(&r) == key(&r2), "two processes tuned differently");
    for d in [&one, &two] {
        let ex = d.join("export");
        recflow::export::export(
            &d.join("store"),
            None,
            &ex,
            recflow::export::ExportFormat::Tsv,
        )
        .unwrap();
    }
    let users = |d: &Path| std::fs::read(d.join("export/users.tsv")).unwrap();
    assert!(users(&one) == users(&two), "the published models differ");
}
