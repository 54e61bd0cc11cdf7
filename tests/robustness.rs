//! Every kind of bad input gets a clear answer (docs/ROBUSTNESS.md lists each case and the
//! test that proves it): an error naming the file, line, field and what to do, or a counted
//! skip with samples where the job says `input.bad_lines = "skip"`. Never a panic, never a
//! silently wrong model. Most tests drive the real binary and check its exit code and message.

#[path = "../fuzz/harness.rs"]
mod harness;

use std::path::{Path, PathBuf};
use std::process::Command;

/// One run of the binary.
struct Ran {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Ran {
    /// Never a panic or a signal, whatever the outcome.
    fn no_panic(&self) -> &Self {
        assert!(self.code.is_some(), "killed by a signal: {}", self.stderr);
        assert_ne!(self.code, Some(101), "exit code 101: {}", self.stderr);
        assert!(
            !self.stderr.contains("panicked") && !self.stderr.contains("internal error"),
            "{}",
            self.stderr
        );
        self
    }

    /// Succeeded.
    fn ok(&self) -> &Self {
        self.no_panic();
        assert_eq!(self.code, Some(0), "{}", self.stderr);
        self
    }

    /// Failed with `code` and a message containing every needle.
    fn fails(&self, code: i32, needles: &[&str]) -> &Self {
        self.no_panic();
        assert_eq!(self.code, Some(code), "{}", self.stderr);
        for n in needles {
            assert!(self.stderr.contains(n), "missing {n:?} in: {}", self.stderr);
        }
        // Hostile bytes are escaped, never echoed raw to the terminal.
        assert!(
            !self.stderr.contains(['\u{1b}', '\0']),
            "raw control bytes in: {:?}",
            self.stderr
        );
        self
    }
}

fn recflow_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Ran {
    let mut c = Command::new(env!("CARGO_BIN_EXE_recflow"));
    c.current_dir(dir).args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().unwrap();
    Ran {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn recflow(dir: &Path, args: &[&str]) -> Ran {
    recflow_env(dir, args, &[])
}

/// 30 users × 4 items over 11 items, weight in column 2: a valid file of 120 lines.
fn good_lines() -> Vec<String> {
    let mut v = Vec::new();
    for u in 0..30 {
        for k in 0..4 {
            v.push(format!("{u}\t{}\t1", (u * 3 + k) % 11));
        }
    }
    v
}

fn good_text() -> String {
    good_lines().join("\n") + "\n"
}

/// Writes `job.toml` (small and fast: 4 factors, 2 iterations; store `store`) with `input`
/// as the body of its `[input]` table, and runs it.
fn run_job(dir: &Path, input: &str, extra: &str) -> Ran {
    run_job_env(dir, input, extra, &[])
}

fn run_job_env(dir: &Path, input: &str, extra: &str, env: &[(&str, &str)]) -> Ran {
    let job = format!(
        "[input]\n{input}\n[als]\nfactors = 4\niterations = 2\n[shards]\nvirtual = 8\n[output]\nstore = \"store\"\n{extra}"
    );
    std::fs::write(dir.join("job.toml"), job).unwrap();
    recflow_env(dir, &["run", "job.toml", "-w", "2", "--quiet"], env)
}

fn manifest(dir: &Path) -> serde_json::Value {
    recflow::store::open(&dir.join("store"), None)
        .unwrap()
        .1
        .to_value()
}

fn current(dir: &Path) -> Option<String> {
    recflow::store::current(&dir.join("store")).unwrap()
}

#[test]
fn malformed_lines_name_file_line_and_field_or_are_counted_skips() {
    let long = "x".repeat(600);
    let cases: Vec<(&str, Vec<u8>, &str, &str)> = vec![
        (
            "too few columns",
            b"7\t3".to_vec(),
            "field columns",
            "need at least 3",
        ),
        (
            "non-numeric weight",
            b"7\t3\tlots".to_vec(),
            "field weight",
            "'lots' is not a number",
        ),
        (
            "empty user id",
            b"\t3\t1".to_vec(),
            "field user",
            "empty id",
        ),
        (
            "empty item id",
            b"7\t\t1".to_vec(),
            "field item",
            "empty id",
        ),
        (
            "NaN weight",
            b"7\t3\tNaN".to_vec(),
            "field weight",
            "not a finite number",
        ),
        (
            "inf weight",
            b"7\t3\tinf".to_vec(),
            "field weight",
            "not a finite number",
        ),
        (
            "-inf weight",
            b"7\t3\t-inf".to_vec(),
            "field weight",
            "not a finite number",
        ),
        (
            "huge weight",
            b"7\t3\t1e300".to_vec(),
            "field weight",
            "within",
        ),
        (
            "huge negative weight",
            b"7\t3\t-2e9".to_vec(),
            "field weight",
            "within",
        ),
        (
            "long id",
            format!("{long}\t3\t1").into_bytes(),
            "field user",
            "limit 512",
        ),
        (
            "non-UTF-8 id",
            b"\xff\xfe\t3\t1".to_vec(),
            "field user",
            "not valid UTF-8",
        ),
        (
            "non-UTF-8 weight",
            b"7\t3\t\xff".to_vec(),
            "field weight",
            "not a number",
        ),
        (
            "escape in id",
            b"a\x1b[2Jb\t3\t1".to_vec(),
            "field user",
            "control character",
        ),
    ];
    for (what, bad, field, msg) in cases {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        let mut text = Vec::new();
        for (n, l) in good_lines().iter().enumerate() {
            if n == 2 {
                text.extend_from_slice(&bad);
                text.push(b'\n');
            }
            text.extend_from_slice(l.as_bytes());
            text.push(b'\n');
        }
        std::fs::write(d.join("bad.tsv"), &text).unwrap();
        let r = run_job(d, "path = [\"bad.tsv\"]\nweight = 2", "");
        r.fails(1, &["bad.tsv:3:", field, msg, "bad_lines = \"skip\""]);
        assert!(current(d).is_none(), "{what}: a model was published");
        // With skip: counted, sampled, and the line is not in the model.
        run_job(
            d,
            "path = [\"bad.tsv\"]\nweight = 2\nbad_lines = \"skip\"",
            "",
        )
        .ok();
        let m = manifest(d);
        let read = &m["counts"]["read"];
        assert_eq!(read["skipped"], 1, "{what}: {read}");
        assert_eq!(read["lines"], 121, "{what}: {read}");
        let sample = read["samples"][0].as_str().unwrap();
        assert!(
            sample.contains("bad.tsv:3:") && sample.contains(field),
            "{what}: {sample}"
        );
        assert_eq!(m["counts"]["users"], 30, "{what}");
        assert_eq!(m["counts"]["pairs"], 120, "{what}");
    }
}

#[test]
fn negative_weights_remove_and_users_left_with_nothing_disappear() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let text = good_text() + "ghost\t1\t1\nghost\t1\t-1\nghost2\t2\t0\nghost3\t3\t-4\n";
    std::fs::write(d.join("z.tsv"), text).unwrap();
    run_job(d, "path = [\"z.tsv\"]\nweight = 2", "").ok();
    let m = manifest(d);
    assert_eq!(m["counts"]["users"], 30);
    // ghost's +1 -1 and ghost3's -4 at least (a pair of zero weights may not be counted).
    assert!(
        m["counts"]["nonpositive_pairs"].as_u64().unwrap() >= 2,
        "{}",
        m["counts"]
    );
    let r = recflow(d, &["recommend", "store", "--user", "ghost"]);
    r.fails(1, &["unknown user 'ghost'"]);
}

#[test]
fn all_zero_weights_are_a_clear_error_and_zero_alpha_is_a_valid_model() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let zero: String = good_lines()
        .iter()
        .map(|l| l.replace("\t1", "\t0") + "\n")
        .collect();
    std::fs::write(d.join("zero.tsv"), zero).unwrap();
    run_job(d, "path = [\"zero.tsv\"]\nweight = 2", "")
        .fails(1, &["no interactions left", "120 lines read", "input."]);
    assert!(current(d).is_none());
    // alpha = 0: every confidence is exactly 1 (plain least squares on the 0/1 matrix).
    std::fs::write(d.join("good.tsv"), good_text()).unwrap();
    run_job(
        d,
        "path = [\"good.tsv\"]\nweight = 2",
        "[confidence]\nalpha = 0.0\n",
    )
    .ok();
    let m = manifest(d);
    for p in m["train"]["objective"].as_array().unwrap() {
        assert!(p["value"].as_f64().unwrap().is_finite(), "{p}");
    }
    let r = recflow(d, &["export", "store", "--out", "x"]);
    r.ok();
    let users = std::fs::read_to_string(d.join("x/users.tsv")).unwrap();
    assert_eq!(users.lines().count(), 30);
    for l in users.lines() {
        for f in l.split('\t').skip(1) {
            let x: f32 = f.parse().unwrap();
            assert!(x.is_finite() && x != 0.0, "{l}");
        }
    }
}

#[test]
fn confidences_too_large_for_f32_never_publish_a_broken_model() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    // Weights within the accepted ±1e9, but alpha × weight = 4e9 beside confidences of 41.
    let text = good_text() + "1\t5\t1e8\n2\t6\t1e8\n";
    std::fs::write(d.join("mix.tsv"), text).unwrap();
    // Cholesky is the solver that detects the breakdown: it finds the systems singular.
    std::fs::write(
        d.join("job.toml"),
        "[input]\npath = [\"mix.tsv\"]\nweight = 2\n[als]\nfactors = 4\niterations = 2\nsolver = \"cholesky\"\n[confidence]\nscheme = \"linear\"\nalpha = 40.0\n[shards]\nvirtual = 8\n[output]\nstore = \"store\"\n",
    )
    .unwrap();
    let ran = recflow_env(d, &["run", "job.toml", "-w", "2", "-q"], &[]);
    ran.fails(
        1,
        &[
            "training broke down numerically",
            "confidence.alpha",
            "nothing was published",
        ],
    );
    assert!(current(d).is_none());
    assert!(recflow::store::versions(&d.join("store")).is_empty());
    // The log scheme is the documented way out (and the default): it trains.
    run_job(
        d,
        "path = [\"mix.tsv\"]\nweight = 2",
        "[confidence]\nscheme = \"log\"\nalpha = 40.0\n",
    )
    .ok();
    run_job(d, "path = [\"mix.tsv\"]\nweight = 2", "").ok();
}

#[test]
fn crlf_line_ends_give_the_same_model_as_lf() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let lf = format!("user\titem\tweight\n{}", good_text());
    std::fs::write(d.join("lf.tsv"), &lf).unwrap();
    std::fs::write(d.join("crlf.tsv"), lf.replace('\n', "\r\n")).unwrap();
    let mut exports = Vec::new();
    for f in ["lf.tsv", "crlf.tsv"] {
        let sub = d.join(f.replace('.', "-"));
        std::fs::create_dir(&sub).unwrap();
        std::fs::copy(d.join(f), sub.join(f)).unwrap();
        run_job(&sub, &format!("path = [\"{f}\"]\nweight = \"weight\""), "").ok();
        recflow(&sub, &["export", "store", "--out", "x"]).ok();
        let m = manifest(&sub);
        assert_eq!(m["counts"]["read"]["lines"], 120);
        exports.push((
            std::fs::read(sub.join("x/users.tsv")).unwrap(),
            std::fs::read(sub.join("x/items.tsv")).unwrap(),
        ));
    }
    assert!(exports[0] == exports[1], "CRLF changed the model");
    assert!(!String::from_utf8_lossy(&exports[1].0).contains('\r'));
}

#[test]
fn a_header_where_none_is_expected_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    std::fs::write(d.join("h.tsv"), format!("user\titem\n{}", good_text())).unwrap();
    // header = "false" but the file has one: refused, not learned as user "user".
    run_job(d, "path = [\"h.tsv\"]\nheader = \"false\"", "")
        .fails(1, &["h.tsv:1:", "column names", "input.header"]);
    std::fs::write(
        d.join("hw.tsv"),
        format!("user\titem\tweight\n{}", good_text()),
    )
    .unwrap();
    run_job(d, "path = [\"hw.tsv\"]\nheader = \"false\"\nweight = 2", "").fails(
        1,
        &["hw.tsv:1:", "column names", "if this is a header line"],
    );
    // Two files concatenated: the second header is line 122.
    let cat = format!("user\titem\n{}user\titem\n{}", good_text(), good_text());
    std::fs::write(d.join("cat.tsv"), cat).unwrap();
    run_job(d, "path = [\"cat.tsv\"]", "").fails(1, &["cat.tsv:122:", "column names"]);
    run_job(d, "path = [\"cat.tsv\"]\nbad_lines = \"skip\"", "").ok();
    let m = manifest(d);
    assert_eq!(m["counts"]["read"]["skipped"], 1);
    assert_eq!(m["counts"]["users"], 30);
    // A CSV with a UTF-8 byte order mark and named columns: the BOM is not part of a name or id.
    let csv = format!(
        "\u{feff}user_id,item_id,weight\r\n{}",
        good_text().replace('\t', ",")
    );
    std::fs::write(d.join("bom.csv"), csv).unwrap();
    run_job(
        d,
        "path = [\"bom.csv\"]\nformat = \"csv\"\nuser = \"user_id\"\nitem = \"item_id\"\nweight = \"weight\"",
        "",
    )
    .ok();
    assert_eq!(manifest(d)["counts"]["users"], 30);
    let r = recflow(d, &["recommend", "store", "--user", "0", "-k", "3"]);
    r.ok();
    assert_eq!(r.stdout.lines().count(), 3, "{}", r.stdout);
    // Without a BOM strip the first id would be the string "\u{feff}0", not the number 0.
    let (ids, _, _) = {
        let (dir, m) = recflow::store::open(&d.join("store"), None).unwrap();
        recflow::store::load_side(&dir, &m, "users").unwrap()
    };
    assert!(ids.iter().all(|i| matches!(i, recflow::ids::RawId::Num(_))));
}

#[test]
fn empty_inputs_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    for (name, text) in [
        ("empty.tsv", &b""[..]),
        ("header-only.tsv", b"user\titem\n"),
        ("blank.tsv", b"\n\r\n   \n\n"),
    ] {
        std::fs::write(d.join(name), text).unwrap();
        run_job(d, &format!("path = [\"{name}\"]"), "")
            .fails(1, &["no interactions left", "0 lines read", "input.path"]);
        assert!(current(d).is_none());
    }
    std::fs::create_dir(d.join("nothing")).unwrap();
    run_job(d, "path = [\"nothing\"]", "").fails(1, &["nothing", "holds no file"]);
    run_job(d, "path = [\"missing.tsv\"]", "").fails(1, &["missing.tsv", "no such file"]);
    run_job(d, "path = [\"*.csv\"]", "").fails(1, &["*.csv", "matches no file"]);
    run_job(d, "path = [\"/dev/null\"]", "").fails(1, &["/dev/null", "not a regular file"]);
    // A held-out file is named by its own key (and found missing before the input is read).
    std::fs::write(d.join("in.tsv"), "u1\ti1\n").unwrap();
    let missing = "[eval]\ntest = \"gone.tsv\"\n";
    run_job(d, "path = [\"in.tsv\"]", missing)
        .fails(1, &["eval.test '", "gone.tsv", "no such file"]);
}

#[test]
fn a_directory_of_mixed_files_names_the_bad_file_or_counts_skips() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let dir = d.join("events");
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    std::fs::write(dir.join("a.tsv"), good_text()).unwrap();
    std::fs::write(dir.join("README.md"), "# Events\nOne line per event.\n").unwrap();
    let mut blob = b"\x7fELF\x02\x01\x01\0\0\0\x1b[31m\t\t\n".to_vec();
    blob.extend((0..4000u32).map(|i| (i * 7919 % 251) as u8));
    std::fs::write(dir.join("blob.bin"), &blob).unwrap();
    // Hidden files and subdirectories are not read.
    std::fs::write(dir.join(".hidden.tsv"), "999\t1\t1\n").unwrap();
    std::fs::write(dir.join("sub/more.tsv"), "998\t1\t1\n").unwrap();
    run_job(d, "path = [\"events\"]\nweight = 2", "")
        .fails(1, &["README.md:1:", "field columns", "input.format"]);
    run_job(
        d,
        "path = [\"events\"]\nweight = 2\nbad_lines = \"skip\"",
        "",
    )
    .ok();
    let m = manifest(d);
    let read = &m["counts"]["read"];
    assert!(read["skipped"].as_u64().unwrap() >= 3, "{read}");
    let samples = read["samples"].to_string();
    assert!(
        samples.contains("README.md:1") && samples.contains("blob.bin:"),
        "{samples}"
    );
    assert!(!samples.contains('\u{1b}'), "{samples}");
    assert_eq!(m["counts"]["users"], 30);
    assert_eq!(m["counts"]["pairs"], 120);
    // `recflow eval` on the same directory names the file and escapes its bytes too.
    std::fs::write(d.join("good.tsv"), good_text()).unwrap();
    let args = [
        "eval", "--recs", "events", "--train", "good.tsv", "--test", "good.tsv",
    ];
    recflow(d, &args).fails(1, &["blob.bin:", "need at least two columns"]);
}

#[test]
fn a_file_without_line_breaks_is_bounded() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    // 3 MB, no '\n' (a binary file): one line over the 1 MiB limit. (`\r`-only line ends are
    // refused as such: files_with_only_carriage_returns_are_refused_and_say_so.)
    let mut text = good_text().replace('\n', "\0").into_bytes();
    while text.len() < 3 << 20 {
        text.extend_from_within(..text.len().min(1 << 20));
    }
    std::fs::write(d.join("cr.tsv"), &text).unwrap();
    std::fs::write(d.join("good.tsv"), good_text()).unwrap();
    run_job(d, "path = [\"cr.tsv\"]\nweight = 2", "")
        .fails(1, &["cr.tsv:1:", "field line", "longer than 1048576 bytes"]);
    run_job(
        d,
        "path = [\"cr.tsv\", \"good.tsv\"]\nweight = 2\nbad_lines = \"skip\"",
        "",
    )
    .ok();
    let m = manifest(d);
    assert_eq!(m["counts"]["read"]["skipped"], 1);
    assert_eq!(m["counts"]["pairs"], 120);
}

#[test]
fn factors_larger_than_the_number_of_items_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    std::fs::write(d.join("good.tsv"), good_text()).unwrap();
    std::fs::write(
        d.join("job.toml"),
        "[input]\npath = [\"good.tsv\"]\nweight = 2\n[als]\nfactors = 12\niterations = 2\n[output]\nstore = \"store\"\n",
    )
    .unwrap();
    recflow(d, &["run", "job.toml", "--quiet"]).fails(
        1,
        &[
            "als.factors = 12",
            "number of items in the data (11)",
            "at most 11",
        ],
    );
    assert!(current(d).is_none());
    recflow(
        d,
        &["run", "job.toml", "--quiet", "--set", "als.factors=11"],
    )
    .ok();
}

#[test]
fn job_files_with_unknown_keys_or_bad_values_name_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    for (text, needles) in [
        (
            "[als]\nfactor = 8\n",
            &["job.toml", "unknown field", "factor"][..],
        ),
        ("[alss]\nfactors = 8\n", &["job.toml", "alss"]),
        (
            "[als]\nfactors = 0\n",
            &["als.factors = 0", "allowed 1..=1024"],
        ),
        ("[als]\nfactors = 100000\n", &["als.factors", "allowed"]),
        ("[als]\nfactors = \"many\"\n", &["factors", "many"]),
        ("[als]\nfactors = -3\n", &["factors"]),
        ("[eval]\nholdout = 1.5\n", &["eval.holdout", "allowed"]),
        (
            "[recommend]\nmode = \"lsh\"\n[lsh]\ntables = 0\nhead = 0\n",
            &["lsh.tables = 0", "no candidates"],
        ),
        (
            "[lsh]\ntransform = \"mips\"\nplanes = 1\nprobes = 2\n",
            &["lsh.probes = 2", "0..=lsh.planes"],
        ),
        (
            "[lsh]\nbucket_items = 0\n",
            &["lsh.bucket_items = 0", "transform = \"users\""],
        ),
        (
            "[confidence]\nalpha = nan\n",
            &["confidence.alpha", "allowed"],
        ),
        ("[confidence]\nalpha = -1.0\n", &["confidence.alpha"]),
        ("[input]\nformat = \"xml\"\n", &["format", "xml"]),
        (
            "[input]\nuser = 1\nitem = 1\n",
            &["input.user and input.item"],
        ),
        (
            "[als\nfactors = 8\n",
            &["job.toml", "invalid TOML", "line 1"],
        ),
        ("\u{0}\u{1}binary", &["job.toml"]),
    ] {
        std::fs::write(d.join("job.toml"), text).unwrap();
        recflow(d, &["run", "job.toml", "--quiet"]).fails(2, needles);
    }
    std::fs::write(d.join("job.toml"), b"[als]\nfactors = 8\xff\n").unwrap();
    recflow(d, &["run", "job.toml"]).fails(2, &["job.toml", "UTF-8"]);
    recflow(d, &["run", "nope.toml"]).fails(2, &["nope.toml"]);
    std::fs::write(d.join("job.toml"), "").unwrap();
    for (set, needle) in [
        ("als.factors=0", "als.factors"),
        ("als", "section.key=value"),
        ("als.bogus=1", "bogus"),
        ("lsh.planes=65", "lsh.planes"),
    ] {
        recflow(d, &["run", "job.toml", "--set", set]).fails(2, &[needle]);
    }
}

/// Copies a directory tree (a store) so that each corruption starts from a clean copy.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let t = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &t);
        } else {
            std::fs::copy(e.path(), &t).unwrap();
        }
    }
}

#[test]
fn corrupted_model_stores_are_refused_by_file() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    std::fs::write(d.join("good.tsv"), good_text()).unwrap();
    run_job(d, "path = [\"good.tsv\"]\nweight = 2", "").ok();
    let version = current(d).unwrap();
    let pristine = d.join("pristine");
    copy_tree(&d.join("store"), &pristine);
    let vdir = |s: &Path| s.join(&version);
    // The first users factor file in the manifest.
    let m = manifest(d);
    let rec = m["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"].as_str().unwrap().starts_with("users/"))
        .unwrap()
        .clone();
    let rel = rec["path"].as_str().unwrap().to_string();
    let name = rel.rsplit('/').next().unwrap().to_string();
    type Corrupt = Box<dyn Fn(&Path)>;
    let rewrite_manifest = |s: &Path, f: &dyn Fn(&mut serde_json::Value)| {
        let p = s.join("manifest.json");
        let mut m: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        f(&mut m);
        std::fs::write(p, m.to_string()).unwrap();
    };
    let cases: Vec<(&str, Corrupt, Vec<String>)> = vec![
        (
            "truncated factor file",
            Box::new({
                let rel = rel.clone();
                move |v: &Path| {
                    let p = v.join(&rel);
                    let b = std::fs::read(&p).unwrap();
                    std::fs::write(&p, &b[..b.len() / 2]).unwrap();
                }
            }),
            vec![name.clone(), "corrupted or truncated".into()],
        ),
        (
            "bit-flipped factor file",
            Box::new({
                let rel = rel.clone();
                move |v: &Path| {
                    let p = v.join(&rel);
                    let mut b = std::fs::read(&p).unwrap();
                    let n = b.len();
                    b[n / 3] ^= 0x10;
                    std::fs::write(&p, &b).unwrap();
                }
            }),
            vec![name.clone(), "corrupted".into()],
        ),
        (
            // A crafted row count behind a valid file CRC and a matching manifest entry: the
            // decoder's own bound refuses it before allocating.
            "crafted length prefix",
            Box::new({
                let rel = rel.clone();
                move |v: &Path| {
                    let p = v.join(&rel);
                    let mut b = std::fs::read(&p).unwrap();
                    // The first factor section of the pack: after the 20-byte header, 12
                    // bytes per index entry and the index CRC; its length from entry 0.
                    let n = u32::from_le_bytes(b[16..20].try_into().unwrap()) as usize;
                    let at = 20 + 12 * n + 4;
                    let len = u64::from_le_bytes(b[24..32].try_into().unwrap()) as usize;
                    let sec = &mut b[at..at + len];
                    sec[20..24].copy_from_slice(&u32::MAX.to_le_bytes());
                    let crc = crc32fast::hash(&sec[..len - 4]);
                    sec[len - 4..].copy_from_slice(&crc.to_le_bytes());
                    std::fs::write(&p, &b).unwrap();
                    let whole = crc32fast::hash(&b);
                    let digest = recflow::store::digest(&b);
                    let rel = rel.clone();
                    let mp = v.join("manifest.json");
                    let mut m: serde_json::Value =
                        serde_json::from_str(&std::fs::read_to_string(&mp).unwrap()).unwrap();
                    for f in m["files"].as_array_mut().unwrap() {
                        if f["path"] == rel.as_str() {
                            f["crc32"] = whole.into();
                            f["xxh3"] = digest.clone().into();
                        }
                    }
                    std::fs::write(mp, m.to_string()).unwrap();
                }
            }),
            vec![name.clone(), "header claims 4294967295 rows".into()],
        ),
        (
            "missing factor file",
            Box::new({
                let rel = rel.clone();
                move |v: &Path| std::fs::remove_file(v.join(&rel)).unwrap()
            }),
            vec![name.clone(), "cannot read".into()],
        ),
        (
            "manifest entry pointing outside the version",
            Box::new(move |v: &Path| {
                rewrite_manifest(v, &|m| {
                    m["files"][0]["path"] = "users/../../../../../../dev/zero".into();
                    m["files"][0]["bytes"] = 0.into();
                })
            }),
            vec!["bad file path".into(), "dev/zero".into()],
        ),
        (
            "truncated manifest",
            Box::new(|v: &Path| {
                let p = v.join("manifest.json");
                let t = std::fs::read(&p).unwrap();
                std::fs::write(&p, &t[..t.len() / 2]).unwrap();
            }),
            vec!["manifest.json".into(), "not a valid manifest".into()],
        ),
    ];
    for (what, corrupt, needles) in cases {
        let s = d.join(format!("case-{}", what.replace(' ', "-")));
        copy_tree(&pristine, &s);
        corrupt(&vdir(&s));
        let needles: Vec<&str> = needles.iter().map(String::as_str).collect();
        let sp = s.to_str().unwrap();
        recflow(d, &["export", sp, "--out", "x"]).fails(1, &needles);
        // A user the recs files do not list makes `recommend` load the factors.
        recflow(d, &["recommend", sp, "--user", "nobody"]).fails(1, &needles);
        // An earlier version or a repaired copy still works: nothing else was touched.
        assert!(
            recflow::export::export(
                &pristine,
                None,
                &d.join("ok"),
                recflow::export::ExportFormat::Tsv
            )
            .is_ok(),
            "{what}"
        );
    }
    // A bit flip in the snapshot of user 3's shard (its seen items): `recommend` refuses it by
    // name instead of answering from it; a stray file the manifest does not list is never read.
    let v = m["virtual_shards"].as_u64().unwrap() as u32;
    let vs = recflow::ids::RawId::Num(3).vshard(v);
    // The worker's snapshot pack whose index holds that shard.
    let part = m["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| {
            f["path"].as_str().unwrap().starts_with("snapshot/")
                && f["vshards"].as_array().unwrap().contains(&vs.into())
        })
        .unwrap()["path"]
        .as_str()
        .unwrap()
        .to_string();
    let s = d.join("case-snapshot");
    copy_tree(&pristine, &s);
    let p = vdir(&s).join(&part);
    let mut b = std::fs::read(&p).unwrap();
    let n = b.len();
    b[n / 2] ^= 0x01;
    std::fs::write(&p, &b).unwrap();
    let sp = s.to_str().unwrap();
    let part_name = part.rsplit('/').next().unwrap();
    recflow(d, &["recommend", sp, "--user", "3"]).fails(1, &[part_name, "corrupted"]);
    let s = d.join("case-stray");
    copy_tree(&pristine, &s);
    std::fs::write(vdir(&s).join("recs/part-99999.tsv"), "3\t999\t9.9\t1\n").unwrap();
    let r = recflow(d, &["recommend", s.to_str().unwrap(), "--user", "3"]);
    assert!(!r.ok().stdout.contains("\t999\t"), "{}", r.stdout);
    assert!(!r.stdout.is_empty());
    // CURRENT naming a version that does not exist.
    let s = d.join("case-current");
    copy_tree(&pristine, &s);
    std::fs::write(s.join("CURRENT"), "v999999\n").unwrap();
    recflow(d, &["export", s.to_str().unwrap(), "--out", "x"])
        .fails(1, &["CURRENT", "v999999", "no manifest"]);
}

#[test]
fn a_store_that_cannot_be_written_is_named_before_training() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    std::fs::write(d.join("good.tsv"), good_text()).unwrap();
    std::fs::write(d.join("afile"), "not a directory").unwrap();
    let input = "path = [\"good.tsv\"]\nweight = 2";
    // The store path runs through a regular file (works for any user, root included).
    std::fs::write(
        d.join("job.toml"),
        format!("[input]\n{input}\n[als]\nfactors = 4\n"),
    )
    .unwrap();
    for store in ["afile/store", "afile"] {
        recflow(
            d,
            &[
                "run",
                "job.toml",
                "--quiet",
                "--set",
                &format!("output.store={store}"),
            ],
        )
        .fails(1, &[store]);
    }
    // A read-only directory (only meaningful when we are not root, who may write anyway).
    use std::os::unix::fs::PermissionsExt;
    let ro = d.join("ro");
    std::fs::create_dir(&ro).unwrap();
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).unwrap();
    if std::fs::write(ro.join("probe"), "x").is_ok() {
        eprintln!("running as a privileged user: the read-only directory case is not checked");
    } else {
        recflow(
            d,
            &[
                "run",
                "job.toml",
                "--quiet",
                "--set",
                "output.store=ro/store",
            ],
        )
        .fails(1, &["ro/store", "Permission denied"]);
    }
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn disk_full_while_writing_keeps_the_current_version() {
    // Simulated: RECFLOW_FAIL_WRITE makes store writes to matching paths fail with ENOSPC
    // after writing half their bytes (store::write_synced).
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    std::fs::write(d.join("good.tsv"), good_text()).unwrap();
    let input = "path = [\"good.tsv\"]\nweight = 2";
    run_job(d, input, "").ok();
    let before = recflow(d, &["recommend", "store", "--user", "3"]);
    before.ok();
    for at in ["items/pack-", "recs/part-", "manifest.json", ".CURRENT.tmp"] {
        run_job_env(d, input, "", &[(recflow::store::FAIL_WRITE_ENV, at)]).fails(
            1,
            &[
                at,
                "No space left on device",
                "disk is full",
                "CURRENT is unchanged",
            ],
        );
        assert_eq!(current(d).as_deref(), Some("v000001"), "failed at {at}");
        let after = recflow(d, &["recommend", "store", "--user", "3"]);
        assert_eq!(after.ok().stdout, before.stdout);
    }
    // The next run with space again publishes normally.
    run_job(d, input, "").ok();
    assert_ne!(current(d).as_deref(), Some("v000001"));
}

#[cfg(target_os = "linux")]
#[test]
fn a_real_enospc_from_the_kernel_gets_the_same_message() {
    // /dev/full fails every write with ENOSPC: the same path as a full disk.
    let e = recflow::store::write_synced(Path::new("/dev/full"), b"some bytes").unwrap_err();
    assert!(
        e.contains("/dev/full")
            && e.contains("No space left on device")
            && e.contains("disk is full"),
        "{e}"
    );
}

fn corpus(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(
        files.len() >= 20,
        "{}: only {} files",
        dir.display(),
        files.len()
    );
    files
}

/// Replays the committed (minimized, crash-free) fuzz corpora through the fuzz targets'
/// own functions: each must neither panic nor break the properties the targets assert, and
/// each corpus must reach the accepting paths, not only the errors.
#[test]
fn fuzz_corpora_replay_without_panics() {
    for (target, f) in [
        ("parse_line", harness::parse_line as fn(&[u8]) -> bool),
        ("job", harness::job),
        ("decode", harness::decode),
    ] {
        let files = corpus(target);
        let accepted = files
            .iter()
            .filter(|p| f(&std::fs::read(p).unwrap()))
            .count();
        assert!(accepted > 0, "{target}: no corpus input is accepted");
        assert!(
            accepted < files.len(),
            "{target}: no corpus input is refused"
        );
    }
}

/// Asserts that no byte below 0x20 other than `\n` reached the terminal (stderr).
fn no_raw_control_bytes(r: &Ran, what: &str) {
    r.no_panic();
    let bad: Vec<char> = r
        .stderr
        .chars()
        .filter(|&c| (c as u32) < 0x20 && c != '\n')
        .collect();
    assert!(bad.is_empty(), "{what}: raw {bad:?} in: {:?}", r.stderr);
}

/// Entries of the store directory that a run leaves only while it runs.
fn debris(store: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(store)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| {
                    [".pending-", ".staging-", ".trash-", ".CURRENT.tmp"]
                        .iter()
                        .any(|p| n.starts_with(p))
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn a_factor_file_from_another_store_is_refused_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    std::fs::write(d.join("good.tsv"), good_text()).unwrap();
    let input = "path = [\"good.tsv\"]\nweight = 2";
    run_job(d, input, "").ok();
    // The same data and layout with another seed: same file sizes, other factors.
    let other = ["run", "job.toml", "-w", "2", "-q", "--set", "als.seed=7"];
    recflow(d, &[&other[..], &["--set", "output.store=other"]].concat()).ok();
    let pristine = d.join("pristine");
    copy_tree(&d.join("store"), &pristine);
    let rel = "users/pack-00001.bin";
    let (mine, theirs) = (
        d.join("store/v000001").join(rel),
        d.join("other/v000001").join(rel),
    );
    assert_eq!(
        std::fs::metadata(&mine).unwrap().len(),
        std::fs::metadata(&theirs).unwrap().len()
    );
    assert_ne!(
        std::fs::read(&mine).unwrap(),
        std::fs::read(&theirs).unwrap()
    );
    std::fs::copy(&theirs, &mine).unwrap();
    let needles = [
        "pack-00001.bin",
        "differs from the manifest",
        "another store's file",
    ];
    recflow(d, &["export", "store", "--out", "x"]).fails(1, &needles);
    recflow(d, &["recommend", "store", "--user", "nobody"]).fails(1, &needles);
    // A warm start refuses to train on it.
    std::fs::write(d.join("day2.tsv"), "3\t5\t1\n100\t2\t1\n").unwrap();
    let warm = [
        "--set",
        "model.warm_start=true",
        "--set",
        "input.path=[\"day2.tsv\"]",
    ];
    recflow(d, &[&other[..4], &warm].concat()).fails(1, &needles);
    assert_eq!(current(d).as_deref(), Some("v000001"));
    // A manifest without digests (an older recflow) still loads, on the CRC-32 of old.
    let old = d.join("old");
    copy_tree(&pristine, &old);
    let mp = old.join("v000001/manifest.json");
    let mut m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&mp).unwrap()).unwrap();
    for f in m["files"].as_array_mut().unwrap() {
        assert!(f["xxh3"].is_string(), "{f}");
        f.as_object_mut().unwrap().remove("xxh3");
    }
    std::fs::write(&mp, m.to_string()).unwrap();
    recflow(d, &["export", "old", "--out", "y"]).ok();
    recflow(d, &["recommend", "old", "--user", "3"]).ok();
}

#[test]
fn current_must_name_a_version_of_this_store() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    std::fs::write(d.join("good.tsv"), good_text()).unwrap();
    run_job(d, "path = [\"good.tsv\"]\nweight = 2", "").ok();
    // Another store beside it, which CURRENT must not reach.
    copy_tree(&d.join("store"), &d.join("b/store"));
    let cases: [(&[u8], &str); 5] = [
        (b"../b/store/v000001", "'../b/store/v000001'"),
        (b"../../b/store/v000001\n", "'../../b/store/v000001'"),
        (b"/tmp", "'/tmp'"),
        (b"v0\x1b[2J\x00", "'v0\\u{1b}[2J\\0'"),
        (b"\x7fELF\x02\x01\x01\x00\x00\x00", "'\\u{7f}ELF"),
    ];
    for (text, shown) in cases {
        std::fs::write(d.join("store/CURRENT"), text).unwrap();
        for args in [
            &["export", "store", "--out", "x"][..],
            &["recommend", "store", "--user", "3"],
            &["inspect", "store"],
        ] {
            let r = recflow(d, args);
            r.fails(1, &["store/CURRENT", shown, "not a version name"]);
            no_raw_control_bytes(&r, shown);
        }
    }
    recflow(d, &["export", "store", "--version", "../b", "--out", "x"])
        .fails(1, &["--version '../b'", "not a version name"]);
}

#[test]
fn no_control_bytes_reach_the_terminal_on_any_error_path() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let good = good_text();
    std::fs::write(d.join("good.tsv"), &good).unwrap();
    std::fs::write(d.join("weight.tsv"), format!("{good}1\t2\t\x1b[2J\n")).unwrap();
    let ts = good.replace('\n', "\t100\n");
    std::fs::write(d.join("ts.tsv"), format!("{ts}1\t2\t1\t\x1b[2J\n")).unwrap();
    std::fs::write(d.join("removed.tsv"), "1\t2\t\x1b]0;x\x07\n").unwrap();
    std::fs::write(d.join("head.tsv"), format!("u\x1b[2J\ti\tw\n{good}")).unwrap();
    // A gzip header before text that is no deflate stream: a corrupt file, its bytes unshown.
    let mut gz = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03\x1b[31m\x07\x08\tx\ty\n".to_vec();
    gz.extend_from_slice(good.as_bytes());
    std::fs::write(d.join("gz.tsv"), gz).unwrap();
    std::fs::write(d.join("cr.tsv"), format!("{good}1\t2\t1\r65\n")).unwrap();
    let runs: [(&str, &str); 8] = [
        (
            "path = [\"weight.tsv\"]\nweight = 2",
            "'\\u{1b}[2J' is not a number",
        ),
        (
            "path = [\"weight.tsv\"]\nweight = 2\nbad_lines = \"skip\"",
            "'\\u{1b}[2J' is not a number",
        ),
        (
            "path = [\"ts.tsv\"]\nweight = 2\ntimestamp = 3",
            "'\\u{1b}[2J' is not an integer",
        ),
        (
            "path = [\"removed.tsv\"]\nremoved = 2",
            "is not a removal flag",
        ),
        (
            "path = [\"head.tsv\"]\nheader = \"true\"\nuser = \"user\"\nitem = \"i\"",
            "no such column in the header (u\\u{1b}[2J, i, w)",
        ),
        (
            "path = [\"gz.tsv\"]\nheader = \"true\"\nuser = \"user\"\nitem = \"x\"",
            "gz.tsv:1: cannot decompress (gzip)",
        ),
        (
            "path = [\"cr.tsv\"]\nweight = 2\nheader = \"false\"",
            "'1\\r65' is not a number",
        ),
        (
            "path = [\"good.tsv\"]\nuser = \"u\\u001b\"",
            "input.user = \"u\\u{1b}\"",
        ),
    ];
    for (input, needle) in runs {
        std::fs::write(
            d.join("job.toml"),
            format!("[input]\n{input}\n[als]\nfactors = 4\niterations = 2\n[output]\nstore = \"store\"\n"),
        )
        .unwrap();
        // Not quiet: the progress lines and the run summary (skip samples) are checked too.
        let r = recflow(d, &["run", "job.toml"]);
        assert!(
            r.stderr.contains(needle),
            "{input}: missing {needle:?} in {}",
            r.stderr
        );
        no_raw_control_bytes(&r, input);
    }
    // Ids in queries, and eval lines.
    let r = recflow(d, &["recommend", "store", "--user", "a\x1b[2J"]);
    r.fails(1, &["'a\\u{1b}[2J'"]);
    no_raw_control_bytes(&r, "recommend");
    std::fs::write(d.join("bad.tsv"), "x\x1b[2J\n").unwrap();
    let r = recflow(
        d,
        &[
            "eval", "--recs", "bad.tsv", "--train", "good.tsv", "--test", "good.tsv",
        ],
    );
    r.fails(1, &["bad.tsv:1:", "x\\u{1b}[2J"]);
    no_raw_control_bytes(&r, "eval");
}

#[test]
fn files_with_only_carriage_returns_are_refused_and_say_so() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    std::fs::write(d.join("cr.tsv"), good_text().replace('\n', "\r")).unwrap();
    let needles = ["cr.tsv:1:", "\\r-only line ends", "convert them"];
    for header in ["auto", "true", "false"] {
        for bad in ["fail", "skip"] {
            let input = format!(
                "path = [\"cr.tsv\"]\nweight = 2\nheader = \"{header}\"\nbad_lines = \"{bad}\""
            );
            run_job(d, &input, "").fails(1, &needles);
        }
    }
    assert!(current(d).is_none());
    // `\r\n` ends are still fine.
    std::fs::write(d.join("crlf.tsv"), good_text().replace('\n', "\r\n")).unwrap();
    run_job(d, "path = [\"crlf.tsv\"]\nweight = 2", "").ok();
}

#[test]
fn a_failed_run_leaves_none_of_its_temporary_files() {
    // Disk full (simulated, store::FAIL_WRITE_ENV) at every kind of write: the run's own
    // pending, staging, renamed-but-unpublished and CURRENT temporary files are gone.
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    std::fs::write(d.join("good.tsv"), good_text()).unwrap();
    let input = "path = [\"good.tsv\"]\nweight = 2";
    run_job(d, input, "").ok();
    for at in [
        ".pending-",
        "items/pack-",
        "recs/part-",
        "report.html",
        "manifest.json",
        ".CURRENT.tmp",
    ] {
        run_job_env(d, input, "", &[(recflow::store::FAIL_WRITE_ENV, at)])
            .fails(1, &[at, "No space left on device"]);
        assert_eq!(
            debris(&d.join("store")),
            Vec::<String>::new(),
            "failed at {at}"
        );
        assert_eq!(
            recflow::store::versions(&d.join("store")),
            vec!["v000001"],
            "failed at {at}"
        );
    }
    // A failing process of a 2-process run removes its own files too (tests/cluster.rs has the
    // signal cases); here the single-process path through the same cleanup.
    assert_eq!(current(d).as_deref(), Some("v000001"));
}

/// Starts `recflow run` on a demo set big enough to be signalled while it trains.
fn slow_run(d: &Path, env: &[(&str, &str)]) -> std::process::Child {
    std::fs::write(
        d.join("slow.toml"),
        "[input.demo]\nusers = 100000\nitems = 20000\nnnz = 2000000\n[als]\nfactors = 16\niterations = 40\n[output]\nstore = \"store\"\nkeep_versions = 1\n",
    )
    .unwrap();
    let mut c = Command::new(env!("CARGO_BIN_EXE_recflow"));
    c.current_dir(d).args(["run", "slow.toml", "-w", "2"]);
    for (k, v) in env {
        c.env(k, v);
    }
    c.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

fn wait_ran(c: std::process::Child) -> Ran {
    let out = c.wait_with_output().unwrap();
    Ran {
        code: out.status.code(),
        stdout: String::new(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Waits (without a time limit) until a `.pending-*` directory appears: ingest is done.
fn wait_for_pending(store: &Path, c: &mut std::process::Child) {
    while !debris(store).iter().any(|n| n.starts_with(".pending-")) {
        assert!(
            c.try_wait().unwrap().is_none(),
            "the run ended before it was signalled"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn sigint_and_sigterm_remove_the_runs_files_and_exit_130_or_143() {
    for (sig, code) in [("INT", 130), ("TERM", 143)] {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        let store = d.join("store");
        let mut c = slow_run(d, &[]);
        wait_for_pending(&store, &mut c);
        let pid = c.id().to_string();
        assert!(Command::new("kill")
            .args([&format!("-{sig}"), &pid])
            .status()
            .unwrap()
            .success());
        let r = wait_ran(c);
        r.fails(
            code,
            &[&format!("interrupted by SIG{sig}"), "nothing was published"],
        );
        assert_eq!(debris(&store), Vec::<String>::new(), "SIG{sig}");
        assert!(recflow::store::current(&store).unwrap().is_none());
    }
}

#[test]
fn a_signal_at_publish_lands_before_or_after_the_current_flip() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    std::fs::write(d.join("good.tsv"), good_text()).unwrap();
    let input = "path = [\"good.tsv\"]\nweight = 2";
    let keep = "keep_versions = 1";
    run_job(d, input, keep).ok();
    let env = |p| [(recflow::store::SIGNAL_ENV, p)];
    // Staged, not yet flipped: nothing published, the staging directory removed.
    run_job_env(d, input, keep, &env("staged"))
        .fails(130, &["interrupted by SIGINT", "nothing was published"]);
    assert_eq!(debris(&d.join("store")), Vec::<String>::new());
    assert_eq!(recflow::store::versions(&d.join("store")), vec!["v000001"]);
    // During the flip and after it (before pruning): the flip and the pruning complete, the
    // version is reported as published, exit 0, and no `.trash-*` stays.
    for (n, point) in [(2, "flip"), (3, "flipped")] {
        let r = run_job_env(d, input, keep, &env(point));
        r.ok();
        let v = format!("v00000{n}");
        assert!(
            r.stderr.contains(&v) && r.stderr.contains("after publishing"),
            "{point}: {}",
            r.stderr
        );
        assert_eq!(current(d).as_deref(), Some(v.as_str()));
        assert_eq!(debris(&d.join("store")), Vec::<String>::new(), "{point}");
        assert_eq!(recflow::store::versions(&d.join("store")), vec![v]);
    }
}

#[test]
fn eval_refuses_recommendations_that_match_nothing_and_reads_a_store() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    std::fs::write(d.join("good.tsv"), good_text()).unwrap();
    run_job(d, "path = [\"good.tsv\"]\nweight = 2", "").ok();
    std::fs::write(d.join("xy.tsv"), "x\ty\n").unwrap();
    let elf = std::fs::read(env!("CARGO_BIN_EXE_recflow")).unwrap();
    std::fs::write(d.join("elf"), &elf[..elf.len().min(1 << 20)]).unwrap();
    std::fs::write(d.join("items.tsv"), "3\tnope\n4\tnada\n").unwrap();
    let eval = |recs: &str| {
        recflow(
            d,
            &[
                "eval", "--recs", recs, "--train", "good.tsv", "--test", "good.tsv",
            ],
        )
    };
    eval("xy.tsv").fails(
        1,
        &["xy.tsv", "none of its 1 recommended user(s)", "same data"],
    );
    let r = eval("elf");
    r.fails(1, &["elf"]);
    no_raw_control_bytes(&r, "elf");
    eval("items.tsv").fails(1, &["none of the items recommended", "same data"]);
    // A store: its CURRENT version's recs, checked against the manifest.
    let r = eval("store");
    r.ok();
    let m: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(m["users"], 30, "{m}");
    let parts = recflow::store::open(&d.join("store"), None)
        .unwrap()
        .1
        .records_under("recs");
    let dir = d.join("store").join(current(d).unwrap());
    let r2 = eval(dir.join("recs").to_str().unwrap());
    assert_eq!(r2.ok().stdout, r.stdout, "{parts:?}");
}

#[test]
fn small_cli_mistakes_get_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    std::fs::write(d.join("good.tsv"), good_text()).unwrap();
    run_job(d, "path = [\"good.tsv\"]\nweight = 2", "").ok();
    recflow(d, &["recommend", "store", "--user", "3", "-k", "0"])
        .fails(2, &["-k must be at least 1"]);
    recflow(d, &["similar", "store", "--item", "3", "-k", "0"])
        .fails(2, &["-k must be at least 1"]);
    recflow(d, &["inspect", "missing"]).fails(1, &["missing", "no such directory"]);
    recflow(d, &["inspect", "good.tsv"]).fails(1, &["good.tsv", "not a directory"]);
    // The store path is a regular file: named as such, not "File exists (os error 17)".
    let r = recflow(
        d,
        &["run", "job.toml", "-q", "--set", "output.store=good.tsv"],
    );
    r.fails(1, &["good.tsv", "exists but is not a directory"]);
    assert!(!r.stderr.contains("os error 17"), "{}", r.stderr);
    // More factors than users (3 users, 11 items).
    let few: Vec<String> = (0..3)
        .flat_map(|u| (0..11).map(move |i| format!("{u}\t{i}\t1")))
        .collect();
    std::fs::write(d.join("few.tsv"), few.join("\n") + "\n").unwrap();
    std::fs::write(
        d.join("few.toml"),
        "[input]\npath = [\"few.tsv\"]\nweight = 2\n[als]\nfactors = 5\n[output]\nstore = \"few\"\n",
    )
    .unwrap();
    recflow(d, &["run", "few.toml", "-q"]).fails(
        1,
        &[
            "als.factors = 5",
            "number of users in the data (3)",
            "at most 3",
        ],
    );
}

#[test]
fn a_really_full_small_filesystem_keeps_none_of_the_failed_runs_files() {
    // A 3 MB tmpfs in a private mount namespace (`unshare -m`, needs root: skipped otherwise),
    // filled by runs whose files need more: real ENOSPC, and the space is given back. The
    // first fills it with the pending snapshot and plain recs part; the second (less data,
    // larger factors, no recs) in the staging directory.
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    std::fs::create_dir(d.join("tfs")).unwrap();
    std::fs::write(
        d.join("t.toml"),
        "[input.demo]\nusers = 20000\nitems = 5000\n[als]\niterations = 2\n[output]\nstore = \"tfs/store\"\n",
    )
    .unwrap();
    let run = |sets: &str| {
        format!(
            "{} run t.toml -q -w 2 {sets}; echo rc=$?; echo left=$(ls -A tfs/store); echo used=$(du -sk tfs | cut -f1)",
            env!("CARGO_BIN_EXE_recflow")
        )
    };
    let script = format!(
        "mount -t tmpfs -o size=3m tmpfs tfs || exit 77; {}; {}",
        run("--set input.demo.nnz=200000 --set als.factors=32 --set output.compression=none"),
        run("--set input.demo.nnz=20000 --set als.factors=64 --set recommend.k=0"),
    );
    let out = match Command::new("unshare")
        .args(["-m", "sh", "-c", &script])
        .current_dir(d)
        .output()
    {
        Ok(o) if o.status.code() != Some(77) && o.status.success() => o,
        other => {
            eprintln!(
                "cannot mount a tmpfs here ({other:?}): the real full-disk case is not checked"
            );
            return;
        }
    };
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(stdout.matches("rc=1\n").count(), 2, "{stdout} {stderr}");
    assert!(
        stderr.contains("/.pending-") && stderr.contains("/.staging-"),
        "{stderr}"
    );
    assert_eq!(
        stderr.matches("No space left on device").count(),
        2,
        "{stderr}"
    );
    assert_eq!(stdout.matches("left=LOCK\n").count(), 2, "{stdout}");
    for used in stdout.split("used=").skip(1) {
        let kib: u64 = used
            .lines()
            .next()
            .unwrap_or("")
            .trim()
            .parse()
            .expect(&stdout);
        assert!(kib <= 8, "{kib} KiB still used: {stdout}");
    }
}

/// A file to write: (name, bytes).
type Named<'a> = (&'a str, Vec<u8>);

fn gzip(text: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(text).unwrap();
    e.finish().unwrap()
}

fn zstd(text: &[u8]) -> Vec<u8> {
    zstd::encode_all(text, 3).unwrap()
}

/// Runs `input` with `w` workers in a fresh directory under `d` holding `files`, and exports
/// the factors: (users.tsv, items.tsv, lines read).
fn model_of(d: &Path, files: &[Named], input: &str, w: &str) -> (Vec<u8>, Vec<u8>, u64) {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let sub = d.join(format!(
        "m{}",
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    std::fs::create_dir(&sub).unwrap();
    for (name, bytes) in files {
        std::fs::write(sub.join(name), bytes).unwrap();
    }
    let job = format!(
        "[input]\n{input}\n[als]\nfactors = 4\niterations = 2\n[shards]\nvirtual = 8\n[output]\nstore = \"store\"\n"
    );
    std::fs::write(sub.join("job.toml"), job).unwrap();
    recflow(&sub, &["run", "job.toml", "-w", w, "--quiet"]).ok();
    recflow(&sub, &["export", "store", "--out", "x"]).ok();
    let lines = manifest(&sub)["counts"]["read"]["lines"].as_u64().unwrap();
    let read = |f: &str| std::fs::read(sub.join("x").join(f)).unwrap();
    (read("users.tsv"), read("items.tsv"), lines)
}

#[test]
fn gzip_and_zstd_inputs_give_the_same_model_as_plain_text() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    // Three files, each with a header naming the weight (found in the decompressed head).
    let lines = good_lines();
    let part = |k: usize| {
        let body: Vec<&str> = lines
            .iter()
            .skip(k)
            .step_by(3)
            .map(String::as_str)
            .collect();
        format!("user\titem\tcount\n{}\n", body.join("\n")).into_bytes()
    };
    let (a, b, c) = (part(0), part(1), part(2));
    let plain = vec![
        ("a.tsv", a.clone()),
        ("b.tsv", b.clone()),
        ("c.tsv", c.clone()),
    ];
    let all = format!("user\titem\tcount\n{}", good_text()).into_bytes();
    let cases: Vec<(&str, Vec<Named>)> = vec![
        // One file; gzip found by its magic bytes under a name that does not say so.
        ("single gzip", vec![("all.dat", gzip(&all))]),
        ("single zstd", vec![("all.tsv.zst", zstd(&all))]),
        (
            "several",
            vec![("a.gz", gzip(&a)), ("b.gz", gzip(&b)), ("c.zst", zstd(&c))],
        ),
        (
            "mixed",
            vec![
                ("a.tsv", a.clone()),
                ("b.tsv.gz", gzip(&b)),
                ("c.zst", zstd(&c)),
            ],
        ),
    ];
    let input = |files: &[Named]| {
        let names: Vec<String> = files.iter().map(|f| format!("\"{}\"", f.0)).collect();
        format!("path = [{}]", names.join(", "))
    };
    let want = model_of(d, &plain, &input(&plain), "1");
    assert_eq!(want.2, 120);
    for (what, files) in &cases {
        for w in ["1", "3"] {
            let got = model_of(d, files, &input(files), w);
            assert!(
                got == want,
                "{what}, -w {w}: the model differs from plain text's"
            );
        }
    }
}

#[test]
fn a_truncated_or_corrupt_compressed_file_is_a_clear_error_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    // Enough text that the cut falls after some whole lines.
    let text: String = (0..20).map(|_| good_text()).collect();
    let gz = gzip(text.as_bytes());
    let zst = zstd(text.as_bytes());
    let mut flipped = gz.clone();
    let mid = flipped.len() / 2;
    flipped[mid..mid + 8].iter_mut().for_each(|b| *b ^= 0x5a);
    let cases: [(&str, &[u8], &str); 4] = [
        ("cut.tsv.gz", &gz[..gz.len() / 2], "(gzip)"),
        ("cut-trailer.gz", &gz[..gz.len() - 4], "(gzip)"),
        ("cut.zst", &zst[..zst.len() / 2], "(zstd)"),
        ("flipped.gz", &flipped, "(gzip)"),
    ];
    for (name, bytes, codec) in cases {
        std::fs::write(d.join(name), bytes).unwrap();
        for skip in ["", "\nbad_lines = \"skip\""] {
            let r = run_job(d, &format!("path = [\"{name}\"]\nweight = 2{skip}"), "");
            r.fails(
                1,
                &[name, "cannot decompress", codec, "truncated or corrupt"],
            );
            no_raw_control_bytes(&r, name);
            // No compressed byte is quoted as if it were text (it would show as U+FFFD).
            assert!(!r.stderr.contains('\u{fffd}'), "{name}: {}", r.stderr);
            assert!(current(d).is_none(), "{name}: a model was published");
        }
    }
}

#[test]
fn quoted_csv_with_commas_and_escaped_quotes_gives_the_tsv_model() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    // The same events as TSV (ids with a comma and a quote) and as RFC 4180 CSV.
    let mut tsv = String::new();
    let mut csv = String::new();
    for line in good_lines() {
        let f: Vec<&str> = line.split('\t').collect();
        tsv += &format!("user {}, jr\titem \"{}\"\t{}\n", f[0], f[1], f[2]);
        csv += &format!("\"user {}, jr\",\"item \"\"{}\"\"\",{}\n", f[0], f[1], f[2]);
    }
    let header = "\"user id\",\"item, as named\",count\n";
    let want = model_of(d, &[("e.tsv", tsv.into_bytes())], "path = \"e.tsv\"", "2");
    let with_header = format!("{header}{csv}").into_bytes();
    let cases: [(&str, Vec<u8>, &str); 3] = [
        (
            "no header",
            csv.into_bytes(),
            "format = \"csv\"\nweight = 2",
        ),
        ("auto header", with_header.clone(), "format = \"csv\""),
        (
            "named columns",
            with_header,
            "format = \"csv\"\nuser = \"user id\"\nitem = \"item, as named\"\nweight = \"count\"",
        ),
    ];
    for (what, bytes, input) in cases {
        let got = model_of(
            d,
            &[("e.csv", bytes)],
            &format!("path = \"e.csv\"\n{input}"),
            "2",
        );
        assert!(
            got == want,
            "{what}: the CSV model differs from the TSV one"
        );
    }
    assert!(String::from_utf8_lossy(&want.0).contains("user 7, jr\t"));
}
