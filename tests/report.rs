//! Run reports: `report.json` and `report.html` beside the outputs, the end-of-run summary,
//! `recflow inspect`, and `recflow export` of recommendations and buckets.

use recflow::ids::RawId;
use recflow::job::Job;
use recflow::report::html::PLOT_IDS;
use recflow::run::{run, RunOptions};
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

const SVG_NS: &str = "http://www.w3.org/2000/svg";

fn job(store: &Path, extra: &[&str]) -> Job {
    let mut sets: Vec<String> = vec![
        "input.demo.users=600".into(),
        "input.demo.items=300".into(),
        "input.demo.nnz=8000".into(),
        "input.demo.rank=4".into(),
        "als.factors=8".into(),
        "als.iterations=4".into(),
        "shards.virtual=16".into(),
        "eval.holdout=0.2".into(),
        format!("output.store={}", store.display()),
    ];
    sets.extend(extra.iter().map(|s| s.to_string()));
    Job::parse("", &sets).unwrap()
}

fn run_job(store: &Path, extra: &[&str], workers: usize) -> (PathBuf, Value) {
    let opts = RunOptions {
        workers,
        ..RunOptions::default()
    };
    let s = run(job(store, extra), opts).unwrap().unwrap();
    (s.version_dir, s.manifest)
}

fn parse_html(text: &str) -> roxmltree::Document<'_> {
    let opts = roxmltree::ParsingOptions {
        allow_dtd: true,
        ..Default::default()
    };
    roxmltree::Document::parse_with_options(text, opts)
        .unwrap_or_else(|e| panic!("report.html is not well-formed: {e}"))
}

fn by_id<'a, 'i>(doc: &'a roxmltree::Document<'i>, id: &str) -> roxmltree::Node<'a, 'i> {
    doc.descendants()
        .find(|n| n.attribute("id") == Some(id))
        .unwrap_or_else(|| panic!("no element with id '{id}'"))
}

/// Every SVG element is in the SVG namespace, of a known kind, with finite coordinates and
/// non-negative sizes.
fn check_svg(svg: roxmltree::Node<'_, '_>) {
    assert_eq!(svg.tag_name().namespace(), Some(SVG_NS));
    let vb: Vec<f64> = svg
        .attribute("viewBox")
        .expect("viewBox")
        .split(' ')
        .map(|x| x.parse().unwrap())
        .collect();
    assert_eq!(vb.len(), 4);
    assert!(vb[2] > 0.0 && vb[3] > 0.0);
    for n in svg.descendants().filter(|n| n.is_element()) {
        let name = n.tag_name().name();
        assert_eq!(n.tag_name().namespace(), Some(SVG_NS), "<{name}>");
        assert!(
            ["svg", "rect", "text", "line", "circle", "polyline", "title", "g"].contains(&name),
            "unexpected <{name}>"
        );
        for a in [
            "x", "y", "width", "height", "cx", "cy", "r", "x1", "x2", "y1", "y2",
        ] {
            if let Some(v) = n.attribute(a) {
                let x: f64 = v.parse().unwrap_or_else(|_| panic!("<{name} {a}=\"{v}\">"));
                assert!(x.is_finite(), "<{name} {a}=\"{v}\">");
                if ["width", "height", "r"].contains(&a) {
                    assert!(x >= 0.0, "<{name} {a}=\"{v}\">");
                }
            }
        }
        if let Some(p) = n.attribute("points") {
            for xy in p.split(' ') {
                let (x, y) = xy.split_once(',').expect("x,y");
                assert!(
                    x.parse::<f64>().unwrap().is_finite() && y.parse::<f64>().unwrap().is_finite()
                );
            }
        }
    }
}

/// `data-value`s of the elements with `class` under `node`, in document order.
fn values<'a>(node: roxmltree::Node<'a, '_>, class: &str) -> Vec<(HashMap<String, String>, f64)> {
    node.descendants()
        .filter(|n| n.attribute("class") == Some(class))
        .map(|n| {
            let attrs = n
                .attributes()
                .map(|a| (a.name().to_string(), a.value().to_string()))
                .collect();
            (
                attrs,
                serde_json::from_str(n.attribute("data-value").unwrap()).unwrap(),
            )
        })
        .collect()
}

fn num(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

fn hist_counts(h: &Value) -> Vec<f64> {
    h.as_array()
        .unwrap()
        .iter()
        .map(|b| num(&b["count"]))
        .collect()
}

fn bars(doc: &roxmltree::Document<'_>, id: &str) -> Vec<f64> {
    values(by_id(doc, id), "bar")
        .into_iter()
        .map(|x| x.1)
        .collect()
}

#[test]
fn report_html_is_well_formed_complete_and_matches_report_json() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("s");
    let (dir, manifest) = run_job(
        &store,
        &[
            "recommend.mode=lsh",
            "lsh.tables=4",
            "lsh.planes=4",
            "lsh.head=20",
            "lsh.max_bucket=60",
        ],
        2,
    );
    let json_text = std::fs::read_to_string(dir.join("report.json")).unwrap();
    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    let r: Value = serde_json::from_str(&json_text).unwrap();
    assert_eq!(r["schema_version"], recflow::report::SCHEMA_VERSION);
    assert_eq!(r["version"], manifest["version"]);

    // Both files are part of the published version, with checksums.
    for name in ["report.json", "report.html"] {
        let rec = manifest["files"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["path"] == name)
            .unwrap_or_else(|| panic!("{name} not in the manifest"));
        let bytes = std::fs::read(dir.join(name)).unwrap();
        assert_eq!(rec["bytes"], bytes.len() as u64);
        assert_eq!(rec["crc32"], crc32fast::hash(&bytes));
    }

    // Well-formed, self-contained, every plot present with one valid SVG.
    let doc = parse_html(&html);
    assert!(doc.descendants().all(|n| n.tag_name().name() != "script"));
    assert!(
        !html.replace(SVG_NS, "").contains("http"),
        "no network references"
    );
    for id in PLOT_IDS {
        let sec = by_id(&doc, id);
        let svgs: Vec<_> = sec
            .descendants()
            .filter(|n| n.tag_name().name() == "svg")
            .collect();
        assert_eq!(svgs.len(), 1, "{id}");
        check_svg(svgs[0]);
    }

    // Objective: one point per recorded half-step, with its value.
    let obj = r["objective"].as_array().unwrap();
    assert_eq!(obj.len(), 8);
    let pts = values(by_id(&doc, "plot-objective"), "point");
    assert_eq!(pts.len(), obj.len());
    for (attrs, v) in &pts {
        let it: u64 = attrs["data-iteration"].parse().unwrap();
        let p = obj
            .iter()
            .find(|p| p["iteration"] == it && p["half"] == attrs["data-half"].as_str())
            .unwrap();
        assert_eq!(*v, num(&p["value"]));
    }
    // The manifest's objective is the report's (both parsed from disk the same way).
    let on_disk: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(&on_disk["train"]["objective"], &r["objective"]);

    // Time per stage and per worker.
    let stages: Vec<f64> = r["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| num(&s["secs"]))
        .collect();
    assert_eq!(stages.len(), 4);
    assert_eq!(bars(&doc, "plot-stages"), stages);
    let w = r["workers"].as_array().unwrap();
    assert_eq!(w.len(), 2);
    let got = values(by_id(&doc, "plot-workers"), "bar");
    for (attrs, v) in got {
        let wi: usize = attrs["data-category"][1..].parse().unwrap();
        let key = if attrs["data-series"] == "solving users" {
            "users_solve_secs"
        } else {
            "items_solve_secs"
        };
        assert_eq!(v, num(&w[wi][key]));
    }

    // Degree distributions: every user and item once, degrees sum to the pairs.
    let c = &r["counts"];
    for (side, id) in [
        ("users", "plot-user-degrees"),
        ("items", "plot-item-degrees"),
    ] {
        let d = &r["degrees"][side];
        let counts = hist_counts(&d["histogram"]);
        assert_eq!(bars(&doc, id), counts, "{side}");
        assert_eq!(counts.iter().sum::<f64>(), num(&c[side]), "{side}");
        assert_eq!(num(&d["entities"]), num(&c[side]));
        let pairs = num(&d["mean"]) * num(&d["entities"]);
        assert!((pairs - num(&c["pairs"])).abs() < 1e-6 * pairs, "{side}");
    }

    // LSH buckets and candidates per user.
    let lsh = &r["lsh"];
    let b = hist_counts(&lsh["size_histogram"]);
    assert!(!b.is_empty());
    assert_eq!(bars(&doc, "plot-buckets"), b);
    assert_eq!(b.iter().sum::<f64>(), num(&lsh["buckets"]));
    let cand = hist_counts(&r["candidates"]["histogram"]);
    assert_eq!(bars(&doc, "plot-candidates"), cand);
    assert_eq!(cand.iter().sum::<f64>(), num(&c["users"]));

    // Metrics table cells carry the JSON values and show them rounded.
    let m = &r["metrics"];
    let table = by_id(&doc, "table-metrics");
    let mut seen = 0;
    for tr in table.children().filter(|n| n.tag_name().name() == "tr") {
        let th = tr.children().find(|n| n.tag_name().name() == "th").unwrap();
        let td = tr.children().find(|n| n.tag_name().name() == "td").unwrap();
        let label = th.text().unwrap();
        let key = match label.split('@').next().unwrap() {
            "precision" => "precision",
            "MAP" => "map",
            "NDCG" => "ndcg",
            _ => continue,
        };
        let v = num(&m[key]);
        assert_eq!(
            serde_json::from_str::<f64>(td.attribute("data-value").unwrap()).unwrap(),
            v
        );
        assert_eq!(td.text().unwrap(), format!("{v:.4}"));
        seen += 1;
    }
    assert_eq!(seen, 3);
    // Counts table: the same numbers as report.json.
    let mut want: Vec<u64> = c
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .collect();
    let mut got: Vec<u64> = by_id(&doc, "table-counts")
        .descendants()
        .filter_map(|n| n.attribute("data-value"))
        .map(|v| v.parse().unwrap())
        .collect();
    want.sort_unstable();
    got.sort_unstable();
    assert_eq!(got, want);
}

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_recflow"))
}

fn cli_run(tmp: &Path, store: &Path, extra: &[&str]) -> std::process::Output {
    let jobfile = tmp.join("job.toml");
    std::fs::write(&jobfile, "").unwrap();
    let mut cmd = bin();
    cmd.args(["run", jobfile.to_str().unwrap(), "-w", "2"]);
    for s in [
        "input.demo.users=400",
        "input.demo.items=200",
        "input.demo.nnz=5000",
        "als.factors=4",
        "als.iterations=3",
        "shards.virtual=8",
        "eval.holdout=0.2",
    ] {
        cmd.args(["--set", s]);
    }
    cmd.args(["--set", &format!("output.store={}", store.display())]);
    cmd.args(extra);
    cmd.output().unwrap()
}

#[test]
fn plain_progress_summary_quiet_inspect_and_export() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("s");
    // Not a terminal: plain timestamped lines, then the summary, all on stderr.
    let out = cli_run(tmp.path(), &store, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    for want in [
        "s] ingest: ",
        "s] iteration 1/3: objective ",
        "s] train: 3 iteration(s)",
        "s] recommend: ",
        "s] published ",
        "recflow run summary",
        "  time       ingest ",
        "  objective  1:",
        "  metrics    @10: precision ",
        "report.html",
    ] {
        assert!(err.contains(want), "missing '{want}' in:\n{err}");
    }
    assert!(
        !err.contains('\u{1b}'),
        "no terminal escapes without a terminal"
    );
    // --quiet: nothing at all.
    let out = cli_run(tmp.path(), &store, &["--quiet"]);
    assert!(out.status.success());
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout.is_empty());

    // inspect: both versions with their key figures.
    let out = bin()
        .args(["inspect", store.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value =
        serde_json::from_str(&std::fs::read_to_string(store.join("v000002/report.json")).unwrap())
            .unwrap();
    assert!(text.contains("2 version(s), CURRENT = v000002"), "{text}");
    assert!(text.contains("  v000001  "), "{text}");
    assert!(text.contains("* v000002  "), "{text}");
    let data = format!(
        "{} users, {} items, {} pairs",
        r["counts"]["users"], r["counts"]["items"], r["counts"]["pairs"]
    );
    assert!(text.contains(&data), "{text}");
    let p = format!(
        "precision {:.4}",
        r["metrics"]["precision"].as_f64().unwrap()
    );
    assert!(text.contains(&p), "{text}");
    assert!(text.contains("v000002/report.html"), "{text}");

    // Exact mode: the candidates plot states the catalogue size.
    let html = std::fs::read_to_string(store.join("v000002/report.html")).unwrap();
    let doc = parse_html(&html);
    let v = values(by_id(&doc, "plot-candidates"), "value");
    assert_eq!(v.len(), 1);
    assert_eq!(v[0].1, r["counts"]["items"].as_f64().unwrap());
    assert!(html.contains("no LSH buckets"));
}

fn npy(path: &Path) -> (String, Vec<usize>, Vec<u8>) {
    let b = std::fs::read(path).unwrap();
    assert_eq!(&b[..8], b"\x93NUMPY\x01\x00");
    let n = u16::from_le_bytes([b[8], b[9]]) as usize;
    let h = std::str::from_utf8(&b[10..10 + n]).unwrap().to_string();
    let descr = h.split("'descr': '").nth(1).unwrap()[..3].to_string();
    let shape = h
        .split("'shape': (")
        .nth(1)
        .unwrap()
        .split(')')
        .next()
        .unwrap();
    let shape = shape
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect();
    (descr, shape, b[10 + n..].to_vec())
}

fn i64s(b: &[u8]) -> Vec<i64> {
    b.chunks(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

#[test]
fn export_writes_recommendations_and_buckets_as_one_tsv_or_npy() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("s");
    let (dir, _) = run_job(
        &store,
        &[
            "recommend.mode=lsh",
            "lsh.tables=2",
            "lsh.planes=3",
            "lsh.head=10",
            "similar.k=3",
        ],
        3,
    );
    let parts = |sub: &str| -> String {
        let mut p: Vec<_> = std::fs::read_dir(dir.join(sub))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        p.sort();
        p.iter()
            .map(|f| recflow::store::parts::read_text(f).unwrap())
            .collect()
    };
    let tsv = tmp.path().join("tsv");
    recflow::export::export(&store, None, &tsv, recflow::export::ExportFormat::Tsv).unwrap();
    for sub in ["recs", "similar", "buckets"] {
        let got = std::fs::read_to_string(tsv.join(format!("{sub}.tsv"))).unwrap();
        assert!(!got.is_empty(), "{sub}");
        // Every line of every part, once ...
        let mut a: Vec<&str> = got.lines().collect();
        let all = parts(sub);
        let mut b: Vec<&str> = all.lines().collect();
        a.sort_unstable();
        b.sort_unstable();
        assert_eq!(a, b, "{sub}");
        // ... ordered by first id (recs, similar: rank order within it) or (table, code).
        let key = |l: &str| -> (RawId, u64, u64) {
            let f: Vec<&str> = l.split('\t').collect();
            if sub == "buckets" {
                (RawId::Num(0), f[0].parse().unwrap(), f[1].parse().unwrap())
            } else {
                (
                    RawId::parse(f[0].as_bytes()).unwrap(),
                    f[3].parse().unwrap(),
                    0,
                )
            }
        };
        let keys: Vec<_> = got.lines().map(key).collect();
        assert!(keys.windows(2).all(|w| w[0] <= w[1]), "{sub}.tsv order");
    }

    let np = tmp.path().join("npy");
    recflow::export::export(&store, None, &np, recflow::export::ExportFormat::Npy).unwrap();
    let user_ids: Vec<String> = std::fs::read_to_string(np.join("user_ids.txt"))
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    let item_ids: Vec<String> = std::fs::read_to_string(np.join("item_ids.txt"))
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    let recs = std::fs::read_to_string(tsv.join("recs.tsv")).unwrap();
    let lines: Vec<&str> = recs.lines().collect();
    let (d, shape, data) = npy(&np.join("recs.npy"));
    assert_eq!((d.as_str(), shape.clone()), ("<i8", vec![lines.len(), 3]));
    let idx = i64s(&data);
    let (ds, sshape, sdata) = npy(&np.join("recs_scores.npy"));
    assert_eq!((ds.as_str(), sshape), ("<f4", vec![lines.len()]));
    for (j, l) in lines.iter().enumerate() {
        let f: Vec<&str> = l.split('\t').collect();
        assert_eq!(user_ids[idx[3 * j] as usize], f[0]);
        assert_eq!(item_ids[idx[3 * j + 1] as usize], f[1]);
        assert_eq!(idx[3 * j + 2].to_string(), f[3]);
        let s = f32::from_le_bytes(sdata[4 * j..4 * j + 4].try_into().unwrap());
        assert_eq!(s, f[2].parse::<f32>().unwrap());
    }
    let buckets = std::fs::read_to_string(tsv.join("buckets.tsv")).unwrap();
    let bl: Vec<&str> = buckets.lines().collect();
    let (d, shape, data) = npy(&np.join("buckets.npy"));
    assert_eq!((d.as_str(), shape), ("<u8", vec![bl.len(), 3]));
    let b: Vec<u64> = data
        .chunks(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    for (j, l) in bl.iter().enumerate() {
        let f: Vec<&str> = l.split('\t').collect();
        assert_eq!(b[3 * j].to_string(), f[0]);
        assert_eq!(b[3 * j + 1].to_string(), f[1]);
        assert_eq!(item_ids[b[3 * j + 2] as usize], f[2]);
    }
    let (_, shape, _) = npy(&np.join("similar.npy"));
    assert_eq!(shape, vec![parts("similar").lines().count(), 3]);
}
