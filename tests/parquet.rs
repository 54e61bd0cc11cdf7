//! Parquet end to end through the binary: a Parquet input trains the same model as the same
//! data in TSV (bit-identical factors, any row-group layout, any `-w`), a cut or corrupt file is
//! an error naming it, and `export --format parquet` reads back as the TSV export.

use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::Field;
use recflow::export_parquet::{write_table_grouped, ColumnData, IdKind, Table};
use recflow::ids::RawId;
use std::path::Path;
use std::process::Command;

fn recflow(dir: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_recflow"))
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!err.contains("panicked"), "{err}");
    (out.status.success(), err)
}

/// 40 users × 5 items over 17 items, weights 1..3: (user, item, weight).
fn events(string_items: bool) -> Vec<(u64, String, f32)> {
    let mut v = Vec::new();
    for u in 0..40u64 {
        for k in 0..5 {
            let i = (u * 3 + k * 5) % 17;
            let item = if string_items {
                format!("it-{i}")
            } else {
                i.to_string()
            };
            v.push((u, item, (1 + (u + k) % 3) as f32));
        }
    }
    v
}

fn tsv(ev: &[(u64, String, f32)]) -> Vec<u8> {
    let mut s = String::from("user\titem\tweight\n");
    for (u, i, w) in ev {
        s += &format!("{u}\t{i}\t{w}\n");
    }
    s.into_bytes()
}

fn parquet_input(path: &Path, ev: &[(u64, String, f32)], per_group: usize) {
    let ids = |f: &dyn Fn(&(u64, String, f32)) -> RawId| ev.iter().map(f).collect::<Vec<_>>();
    let items = ids(&|e| RawId::parse(e.1.as_bytes()).unwrap());
    let table = Table {
        name: "events",
        columns: vec![
            (
                "user",
                ColumnData::Ids(IdKind::Int, ids(&|e| RawId::Num(e.0))),
            ),
            ("item", ColumnData::Ids(IdKind::of(&items), items)),
            ("weight", ColumnData::F32(ev.iter().map(|e| e.2).collect())),
        ],
    };
    write_table_grouped(path, &table, per_group).unwrap();
}

/// Trains on `file` (already in `dir`) with `w` workers and exports TSV factors.
fn model(dir: &Path, file: &str, extra: &str, w: &str) -> (Vec<u8>, Vec<u8>) {
    let job = format!(
        "[input]\npath = \"{file}\"\n{extra}\n[als]\nfactors = 4\niterations = 2\n[shards]\nvirtual = 8\n[output]\nstore = \"store-{file}-{w}\"\n"
    );
    std::fs::write(dir.join("job.toml"), job).unwrap();
    let (ok, err) = recflow(dir, &["run", "job.toml", "-w", w, "--quiet"]);
    assert!(ok, "{err}");
    let out = format!("x-{file}-{w}");
    let (ok, err) = recflow(
        dir,
        &["export", &format!("store-{file}-{w}"), "--out", &out],
    );
    assert!(ok, "{err}");
    let read = |f: &str| std::fs::read(dir.join(&out).join(f)).unwrap();
    (read("users.tsv"), read("items.tsv"))
}

#[test]
fn parquet_input_trains_the_tsv_model_for_any_row_groups_and_workers() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    for string_items in [false, true] {
        let ev = events(string_items);
        std::fs::write(d.join("e.tsv"), tsv(&ev)).unwrap();
        let want = model(d, "e.tsv", "", "1");
        // One row group, and 7 of them spread over 3 workers; detected, then named.
        parquet_input(&d.join("one.parquet"), &ev, 1 << 20);
        parquet_input(&d.join("seven.data"), &ev, 29);
        for (file, extra) in [
            ("one.parquet", ""),
            ("seven.data", ""),
            (
                "seven.data",
                "format = \"parquet\"\nuser = \"user\"\nitem = 1\nweight = \"weight\"",
            ),
        ] {
            for w in ["1", "3"] {
                let got = model(d, file, extra, w);
                assert!(
                    got == want,
                    "{file} ({extra}), -w {w}, string items {string_items}: differs from TSV"
                );
            }
        }
    }
}

#[test]
fn a_cut_or_corrupt_parquet_file_is_an_error_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let good = d.join("good.parquet");
    parquet_input(&good, &events(true), 50);
    let bytes = std::fs::read(&good).unwrap();
    std::fs::write(d.join("cut.parquet"), &bytes[..bytes.len() - 10]).unwrap();
    let mut flipped = bytes.clone();
    flipped[4..200].iter_mut().for_each(|b| *b ^= 0x5a);
    std::fs::write(d.join("flip.parquet"), &flipped).unwrap();
    for name in ["cut.parquet", "flip.parquet"] {
        let job = format!("[input]\npath = \"{name}\"\n[output]\nstore = \"s\"\n");
        std::fs::write(d.join("job.toml"), job).unwrap();
        let (ok, err) = recflow(d, &["run", "job.toml", "-w", "2", "--quiet"]);
        assert!(!ok);
        assert!(
            err.contains(name) && err.contains("truncated or corrupt"),
            "{err}"
        );
    }
}

/// Every row of a Parquet file as text fields, joined by tabs (lists by commas).
fn rows(path: &Path) -> Vec<String> {
    let r = SerializedFileReader::new(std::fs::File::open(path).unwrap()).unwrap();
    let show = |f: &Field| match f {
        Field::Str(s) => s.clone(),
        Field::ListInternal(l) => {
            let v: Vec<String> = l.elements().iter().map(|x| x.to_string()).collect();
            v.join(",")
        }
        other => other.to_string(),
    };
    r.get_row_iter(None)
        .unwrap()
        .map(|row| {
            let row = row.unwrap();
            let v: Vec<String> = row.get_column_iter().map(|(_, f)| show(f)).collect();
            v.join("\t")
        })
        .collect()
}

fn column_names(path: &Path) -> Vec<String> {
    let r = SerializedFileReader::new(std::fs::File::open(path).unwrap()).unwrap();
    let s = r.metadata().file_metadata().schema_descr();
    s.root_schema()
        .get_fields()
        .iter()
        .map(|f| f.name().to_string())
        .collect()
}

#[test]
fn parquet_export_reads_back_as_the_tsv_export() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    for string_items in [false, true] {
        std::fs::write(d.join("e.tsv"), tsv(&events(string_items))).unwrap();
        let job = "[input]\npath = \"e.tsv\"\n[als]\nfactors = 3\niterations = 2\n[shards]\nvirtual = 8\n[recommend]\nk = 4\nmode = \"lsh\"\n[lsh]\nhead = 0\ntables = 2\nplanes = 3\n[similar]\nk = 3\n[output]\nstore = \"s\"\n";
        std::fs::write(d.join("job.toml"), job).unwrap();
        let (ok, err) = recflow(d, &["run", "job.toml", "-w", "2", "--quiet"]);
        assert!(ok, "{err}");
        assert!(recflow(d, &["export", "s", "--out", "t"]).0);
        let (ok, err) = recflow(d, &["export", "s", "--out", "p", "--format", "parquet"]);
        assert!(ok, "{err}");
        let names = [
            ("users", vec!["user", "factors"]),
            ("items", vec!["item", "factors"]),
            ("recs", vec!["user", "item", "score", "rank"]),
            ("similar", vec!["item", "other", "score", "rank"]),
            ("buckets", vec!["table", "code", "item"]),
        ];
        for (table, cols) in names {
            let tsv_path = d.join("t").join(format!("{table}.tsv"));
            let pq_path = d.join("p").join(format!("{table}.parquet"));
            assert!(tsv_path.exists(), "{table}: the job should write it");
            assert_eq!(column_names(&pq_path), cols, "{table}");
            let text = std::fs::read_to_string(&tsv_path).unwrap();
            let mut want: Vec<String> = text.lines().map(String::from).collect();
            if table == "users" || table == "items" {
                // `id f1 … fd` in TSV; `id, [f1, …, fd]` in Parquet.
                want = want
                    .iter()
                    .map(|l| {
                        let (id, f) = l.split_once('\t').unwrap();
                        format!("{id}\t{}", f.replace('\t', ","))
                    })
                    .collect();
            }
            let got = rows(&pq_path);
            assert!(!got.is_empty(), "{table}");
            assert_eq!(got.len(), want.len(), "{table}");
            for (g, w) in got.iter().zip(&want) {
                // Float columns print through the parquet crate (f32 → f64 digits): compare
                // numerically, everything else as text.
                let same = g
                    .split(['\t', ','])
                    .zip(w.split(['\t', ',']))
                    .all(|(a, b)| {
                        a == b
                            || matches!((a.parse::<f64>(), b.parse::<f32>()),
                            (Ok(x), Ok(y)) if x as f32 == y)
                    });
                assert!(same, "{table}: {g:?} vs {w:?}");
            }
        }
        // Ids keep their kind: integer item ids are int64, string ones strings.
        let r = SerializedFileReader::new(
            std::fs::File::open(d.join("p").join("items.parquet")).unwrap(),
        )
        .unwrap();
        let item = r.metadata().file_metadata().schema_descr().column(0);
        let want = if string_items {
            parquet::basic::Type::BYTE_ARRAY
        } else {
            parquet::basic::Type::INT64
        };
        assert_eq!(item.physical_type(), want);
        std::fs::remove_dir_all(d.join("s")).unwrap();
    }
}
