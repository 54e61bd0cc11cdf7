//! Unit tests of Parquet input, on files written with the parquet crate's own writer.

use super::*;
use crate::ingest::read::read_part;
use crate::job::{BadLines, Column, WeightColumn};
use ::parquet::data_type::{ByteArray, ByteArrayType, DoubleType, Int64Type};
use ::parquet::file::properties::WriterProperties;
use ::parquet::file::writer::SerializedFileWriter;
use ::parquet::schema::parser::parse_message_type;

/// A test column: optional values (None is a null).
enum Col {
    I64(Vec<Option<i64>>),
    Str(Vec<Option<&'static str>>),
    F64(Vec<Option<f64>>),
}

impl Col {
    fn write(
        &self,
        w: &mut ::parquet::file::writer::SerializedColumnWriter<'_>,
        a: usize,
        b: usize,
    ) {
        fn split<T: Clone>(v: &[Option<T>]) -> (Vec<T>, Vec<i16>) {
            let vals = v.iter().flatten().cloned().collect();
            let def = v.iter().map(|x| x.is_some() as i16).collect();
            (vals, def)
        }
        match self {
            Col::I64(v) => {
                let (x, d) = split(&v[a..b]);
                w.typed::<Int64Type>()
                    .write_batch(&x, Some(&d), None)
                    .unwrap();
            }
            Col::Str(v) => {
                let (x, d) = split(&v[a..b]);
                let x: Vec<ByteArray> = x
                    .iter()
                    .map(|s| ByteArray::from(s.as_bytes().to_vec()))
                    .collect();
                w.typed::<ByteArrayType>()
                    .write_batch(&x, Some(&d), None)
                    .unwrap();
            }
            Col::F64(v) => {
                let (x, d) = split(&v[a..b]);
                w.typed::<DoubleType>()
                    .write_batch(&x, Some(&d), None)
                    .unwrap();
            }
        }
    }

    fn len(&self) -> usize {
        match self {
            Col::I64(v) => v.len(),
            Col::Str(v) => v.len(),
            Col::F64(v) => v.len(),
        }
    }
}

/// Writes `cols` (schema `schema`, every column optional) in row groups of `per_group` rows.
fn write(path: &Path, schema: &str, cols: &[Col], per_group: usize) {
    let schema = Arc::new(parse_message_type(schema).unwrap());
    let props = Arc::new(WriterProperties::builder().build());
    let mut w = SerializedFileWriter::new(File::create(path).unwrap(), schema, props).unwrap();
    let n = cols[0].len();
    let mut a = 0;
    while a < n {
        let b = (a + per_group).min(n);
        let mut rg = w.next_row_group().unwrap();
        for c in cols {
            let mut cw = rg.next_column().unwrap().unwrap();
            c.write(&mut cw, a, b);
            cw.close().unwrap();
        }
        rg.close().unwrap();
        a = b;
    }
    w.close().unwrap();
}

const SCHEMA: &str = "message t {
    optional int64 user_id;
    optional binary item (STRING);
    optional double plays;
    optional int64 ts (TIMESTAMP(MICROS,true));
}";

/// 10 rows: user i, item `b{i mod 3}`, plays i/2, ts i seconds (as microseconds).
fn cols() -> Vec<Col> {
    let items = ["b0", "b1", "b2"];
    vec![
        Col::I64((0..10).map(Some).collect()),
        Col::Str((0..10).map(|i| Some(items[i % 3])).collect()),
        Col::F64((0..10).map(|i| Some(i as f64 / 2.0)).collect()),
        Col::I64((0..10).map(|i| Some(i * 1_000_000 + 999_999)).collect()),
    ]
}

fn read_all(
    files: &[PathBuf],
    input: &Input,
    parts: usize,
) -> Result<(Vec<Event>, ReadStats), String> {
    let mut events = Vec::new();
    let mut total = ReadStats::default();
    for part in 0..parts {
        let st = read_part(files, input, part, parts, |e| events.push(e))?;
        total.merge(&st);
    }
    events.sort_by(|a, b| (&a.user, &a.item, a.ts).cmp(&(&b.user, &b.item, b.ts)));
    Ok((events, total))
}

#[test]
fn columns_by_name_or_index_with_int_and_string_ids_weights_and_timestamps() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("x.data"); // found by its magic bytes, not its name
    write(&p, SCHEMA, &cols(), 4);
    let want: Vec<Event> = (0..10)
        .map(|i| Event {
            user: RawId::Num(i),
            item: RawId::Str(format!("b{}", i % 3).into()),
            weight: i as f32 / 2.0,
            ts: i as i64,
        })
        .collect();
    // By name: the weight found by its name ("plays"), as with a text header.
    let by_name = Input {
        user: Column::Name("user_id".into()),
        item: Column::Name("item".into()),
        timestamp: Some(Column::Name("ts".into())),
        ..Input::default()
    };
    let files = vec![p];
    let (got, st) = read_all(&files, &by_name, 1).unwrap();
    assert_eq!(got, want);
    assert_eq!((st.lines, st.events, st.skipped), (10, 10, 0));
    assert!(st.weights[0].contains("plays"), "{:?}", st.weights);
    // By index, format given.
    let by_index = Input {
        format: Format::Parquet,
        weight: WeightColumn::Column(Column::Index(2)),
        timestamp: Some(Column::Index(3)),
        ..Input::default()
    };
    assert_eq!(read_all(&files, &by_index, 1).unwrap().0, want);
    // No weight: every event weighs 1; min_weight drops rows as it does text lines.
    let none = Input {
        weight: WeightColumn::None,
        ..by_index.clone()
    };
    assert!(read_all(&files, &none, 1)
        .unwrap()
        .0
        .iter()
        .all(|e| e.weight == 1.0));
    let min = Input {
        min_weight: Some(2.0),
        ..by_index.clone()
    };
    let (got, st) = read_all(&files, &min, 1).unwrap();
    assert_eq!((got.len(), st.below_min_weight), (6, 4));
    // A name or index the file does not have is named with the file's columns.
    let bad = Input {
        item: Column::Name("nope".into()),
        ..by_index.clone()
    };
    let e = read_all(&files, &bad, 1).unwrap_err();
    assert!(
        e.contains("x.data") && e.contains("\"nope\"") && e.contains("plays"),
        "{e}"
    );
    let bad = Input {
        item: Column::Index(7),
        ..by_index
    };
    let e = read_all(&files, &bad, 1).unwrap_err();
    assert!(
        e.contains("x.data: column index 7 is out of range: the file has 4 column(s)"),
        "{e}"
    );
}

#[test]
fn row_groups_are_spread_over_parts_and_every_row_is_read_once() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.parquet"), dir.path().join("b.parquet"));
    write(&a, SCHEMA, &cols(), 3); // 4 row groups
    write(&b, SCHEMA, &cols(), 4); // 3 row groups
    let input = Input {
        timestamp: Some(Column::Index(3)),
        ..Input::default()
    };
    let files = vec![a, b];
    let (want, _) = read_all(&files, &input, 1).unwrap();
    assert_eq!(want.len(), 20);
    for parts in [2, 3, 7, 16] {
        let (got, st) = read_all(&files, &input, parts).unwrap();
        assert_eq!(got, want, "parts={parts}");
        assert_eq!(st.lines, 20);
    }
    // Seven row groups counted over both files: part 1 of 3 reads global groups 1 and 4, that
    // is a's second (3 rows) and b's first (4 rows).
    let mut n = 0;
    read_part(&files, &input, 1, 3, |_| n += 1).unwrap();
    assert_eq!(n, 3 + 4);
}

#[test]
fn nulls_are_bad_rows_named_by_row_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("n.parquet");
    let mut c = cols();
    if let Col::F64(v) = &mut c[2] {
        v[6] = None; // row 7, in the third row group
    }
    if let Col::I64(v) = &mut c[0] {
        v[8] = None; // row 9
    }
    write(&p, SCHEMA, &c, 3);
    let input = Input::default();
    let files = vec![p];
    for parts in [1, 3] {
        let e = read_all(&files, &input, parts).unwrap_err();
        assert!(
            e.contains("n.parquet: row 7: field weight: null")
                && e.contains("input.bad_lines = \"skip\""),
            "{e}"
        );
    }
    let skip = Input {
        bad_lines: BadLines::Skip,
        ..Input::default()
    };
    let (got, st) = read_all(&files, &skip, 2).unwrap();
    assert_eq!((got.len(), st.skipped, st.lines), (8, 2, 10));
    let mut samples = st.samples.clone();
    samples.sort();
    assert!(samples[0].contains("row 7: field weight"), "{samples:?}");
    assert!(
        samples[1].contains("row 9: field user: null"),
        "{samples:?}"
    );
}

#[test]
fn values_follow_the_text_rules() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("v.parquet");
    // -1 is the string id "-1" (as in text); a string weight is read as text; a huge weight
    // and a bad string weight are bad rows; a removal flag as a string.
    let schema = "message t { optional int64 u; optional binary i (STRING); optional binary w (STRING); optional binary gone (STRING); }";
    let c = vec![
        Col::I64(vec![Some(-1), Some(2), Some(3), Some(4)]),
        Col::Str(vec![Some("a"), Some("b"), Some("c"), Some("d")]),
        Col::Str(vec![Some(" 2.5 "), Some("1e12"), Some("x"), Some("1")]),
        Col::Str(vec![None, Some("no"), Some("no"), Some("removed")]),
    ];
    write(&p, schema, &c, 10);
    let input = Input {
        weight: WeightColumn::Column(Column::Name("w".into())),
        removed: Some(Column::Name("gone".into())),
        bad_lines: BadLines::Skip,
        ..Input::default()
    };
    let (got, st) = read_all(&[p], &input, 1).unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].user, RawId::Num(4));
    assert_eq!(got[0].weight, -(MAX_ABS_WEIGHT as f32));
    assert_eq!(got[1].user, RawId::Str("-1".into()));
    assert_eq!(got[1].weight, 2.5);
    assert_eq!(st.skipped, 2);
    assert!(
        st.samples[0].contains("row 2: field weight: 1000000000000 is not a finite number"),
        "{:?}",
        st.samples
    );
    assert!(
        st.samples[1].contains("row 3: field weight: 'x' is not a number"),
        "{:?}",
        st.samples
    );
}

#[test]
fn truncated_corrupt_and_mislabelled_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("g.parquet");
    write(&good, SCHEMA, &cols(), 5);
    let bytes = std::fs::read(&good).unwrap();
    let cut = dir.path().join("cut.parquet");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let header_only = dir.path().join("head.parquet");
    std::fs::write(&header_only, b"PAR1").unwrap();
    // The data pages scrambled, the footer intact.
    let mut flipped = bytes.clone();
    flipped[8..40].iter_mut().for_each(|b| *b ^= 0x5a);
    let flip = dir.path().join("flip.parquet");
    std::fs::write(&flip, &flipped).unwrap();
    for (p, name) in [
        (&cut, "cut.parquet"),
        (&header_only, "head.parquet"),
        (&flip, "flip.parquet"),
    ] {
        for bad_lines in [BadLines::Fail, BadLines::Skip] {
            let input = Input {
                bad_lines,
                ..Input::default()
            };
            let e = read_all(std::slice::from_ref(p), &input, 1).unwrap_err();
            assert!(
                e.contains(name) && e.contains("truncated or corrupt"),
                "{e}"
            );
        }
    }
    let text = dir.path().join("t.tsv");
    std::fs::write(&text, "1\t2\n").unwrap();
    let input = Input {
        format: Format::Parquet,
        ..Input::default()
    };
    let e = read_all(&[text], &input, 1).unwrap_err();
    assert!(
        e.contains("t.tsv: input.format = \"parquet\"") && e.contains("PAR1"),
        "{e}"
    );
}

/// Rows past several read batches and row groups, with nulls at batch and group edges: every
/// kept event has its own row's values (user i, plays i/2), and each null is named by its
/// row.
#[test]
fn batched_reading_keeps_every_value_in_its_row() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("big.parquet");
    let n = 2 * super::columns::BATCH + 3_000;
    let items = ["b0", "b1", "b2"];
    let mut c = vec![
        Col::I64((0..n as i64).map(Some).collect()),
        Col::Str((0..n).map(|i| Some(items[i % 3])).collect()),
        Col::F64((0..n).map(|i| Some(i as f64 / 2.0)).collect()),
        Col::I64((0..n as i64).map(|i| Some(i * 1_000_000)).collect()),
    ];
    // 1-based rows: the last of the first batch, the first of the second, the first of the
    // second row group, the last row; a null user mid-batch.
    let null_weight = [super::columns::BATCH, super::columns::BATCH + 1, 12_001, n];
    if let Col::F64(v) = &mut c[2] {
        null_weight.iter().for_each(|&r| v[r - 1] = None);
    }
    if let Col::I64(v) = &mut c[0] {
        v[16_384] = None;
    }
    write(&p, SCHEMA, &c, 12_000);
    let skip = Input {
        bad_lines: BadLines::Skip,
        timestamp: Some(Column::Name("ts".into())),
        ..Input::default()
    };
    for parts in [1, 2] {
        let (got, st) = read_all(std::slice::from_ref(&p), &skip, parts).unwrap();
        assert_eq!((got.len(), st.skipped), (n - 5, 5));
        for e in &got {
            let RawId::Num(u) = e.user else {
                panic!("{:?}", e.user)
            };
            assert_eq!((e.weight, e.ts), (u as f32 / 2.0, u as i64), "{e:?}");
        }
        let mut samples = st.samples.clone();
        samples.sort();
        let want: Vec<String> = null_weight
            .iter()
            .map(|r| format!("row {r}: field weight: null"))
            .chain(["row 16385: field user: null".to_string()])
            .collect();
        for w in &want {
            assert!(
                samples.iter().any(|s| s.contains(w.as_str())),
                "{w}: {samples:?}"
            );
        }
    }
}
