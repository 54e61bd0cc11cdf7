use super::*;

fn cols(w: bool, t: bool) -> Columns {
    Columns {
        user: 0,
        item: 1,
        weight: w.then_some(2),
        ts: t.then_some(3),
        removed: None,
    }
}

fn p(line: &str, f: Format, c: &Columns) -> Result<Option<Event>, LineError> {
    parse_line(line.as_bytes(), f, c, &mut Fields::default())
}

#[test]
fn formats() {
    let c = cols(true, true);
    let e = p("1\t2\t3.5\t100", Format::Tsv, &c).unwrap().unwrap();
    assert_eq!(
        (e.user, e.item, e.weight, e.ts),
        (RawId::Num(1), RawId::Num(2), 3.5, 100)
    );
    let e = p("a,\"b\",1,5\r", Format::Csv, &c).unwrap().unwrap();
    assert_eq!(
        (e.user, e.item),
        (RawId::Str("a".into()), RawId::Str("b".into()))
    );
    assert_eq!(e.ts, 5);
    let e = p("7::8::4::9", Format::Movielens, &c).unwrap().unwrap();
    assert_eq!((e.item, e.weight), (RawId::Num(8), 4.0));
    let e = p("  7  8\t1 2 ", Format::Whitespace, &c).unwrap().unwrap();
    assert_eq!((e.user, e.ts), (RawId::Num(7), 2));
    let e = p("u1\ti1", Format::Tsv, &cols(false, false))
        .unwrap()
        .unwrap();
    assert_eq!((e.weight, e.ts), (1.0, i64::MIN));
    assert_eq!(p("", Format::Tsv, &c).unwrap(), None);
    assert_eq!(p("\r", Format::Tsv, &c).unwrap(), None);
}

#[test]
fn csv_quotes_are_decoded() {
    let fields = |line: &str| {
        let mut f = Fields::default();
        f.split(line.as_bytes(), Format::Csv);
        (0..f.len())
            .map(|i| String::from_utf8(f.get(line.as_bytes(), i).unwrap().to_vec()).unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(fields("\"alice, jr\",book1,1"), ["alice, jr", "book1", "1"]);
    assert_eq!(fields("\"say \"\"hi\"\"\",,2"), ["say \"hi\"", "", "2"]);
    assert_eq!(fields("a,b"), ["a", "b"]);
    let c = cols(true, false);
    let e = p("\"alice, jr\",\"b\"\"1\",3\r", Format::Csv, &c)
        .unwrap()
        .unwrap();
    assert_eq!(
        (e.user, e.item, e.weight),
        (
            RawId::Str("alice, jr".into()),
            RawId::Str("b\"1".into()),
            3.0
        )
    );
    // Without a CSV parser the quoted comma would make four fields, "1" the weight.
    assert!(p("\"a,1\",b,2", Format::Csv, &c).unwrap().unwrap().weight == 2.0);
}

#[test]
fn errors_name_the_field() {
    let c = cols(true, false);
    assert_eq!(p("1\t2", Format::Tsv, &c).unwrap_err().field, "columns");
    assert_eq!(p("1\t2\tx", Format::Tsv, &c).unwrap_err().field, "weight");
    assert_eq!(p("1\t2\tNaN", Format::Tsv, &c).unwrap_err().field, "weight");
    assert_eq!(p("1\t2\tinf", Format::Tsv, &c).unwrap_err().field, "weight");
    assert_eq!(
        p("1\t2\t1e300", Format::Tsv, &c).unwrap_err().field,
        "weight"
    );
    assert_eq!(p("\t2\t1", Format::Tsv, &c).unwrap_err().field, "user");
    assert_eq!(p("1\t\t1", Format::Tsv, &c).unwrap_err().field, "item");
    let bad = b"\xff\xfe\t2\t1";
    assert_eq!(
        parse_line(bad, Format::Tsv, &c, &mut Fields::default())
            .unwrap_err()
            .field,
        "user"
    );
    assert_eq!(
        p("1\t2\t1\tx", Format::Tsv, &cols(true, true))
            .unwrap_err()
            .field,
        "timestamp"
    );
    // Negative weights are removals, not errors.
    assert_eq!(
        p("1\t2\t-1", Format::Tsv, &c).unwrap().unwrap().weight,
        -1.0
    );
}

#[test]
fn control_characters_and_stray_headers_are_refused() {
    let c = cols(false, false);
    let e = p("a\tb,c", Format::Csv, &c).unwrap_err();
    assert_eq!(e.field, "user");
    assert!(e.message.contains("control character"), "{}", e.message);
    let e = p("a,b\x1b[31m", Format::Csv, &c).unwrap_err();
    assert_eq!(e.field, "item");
    // A header line where none is expected (header = "false", or inside a file).
    let e = p("userId,movieId", Format::Csv, &c).unwrap_err();
    assert!(e.message.contains("column names"), "{}", e.message);
    assert!(e.message.contains("input.header"), "{}", e.message);
    // Ids that merely contain such words are fine.
    assert!(p("user-1,item-2", Format::Csv, &c).unwrap().is_some());
    assert!(p("user,42", Format::Csv, &c).unwrap().is_some());
}

#[test]
fn header_detection() {
    let c = cols(true, false);
    assert!(looks_like_header(b"user\titem\tcount", Format::Tsv, &c));
    assert!(looks_like_header(b"a\tb\trating", Format::Tsv, &c));
    assert!(!looks_like_header(b"1\t2\t3", Format::Tsv, &c));
    assert!(!looks_like_header(b"alice\tbook\t3", Format::Tsv, &c));
    assert!(looks_like_header(
        b"userId,movieId",
        Format::Csv,
        &cols(false, false)
    ));
}

#[test]
fn named_columns() {
    let h: Vec<String> = ["ts", "item", "user"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let c = Columns::resolve(
        &Column::Name("user".into()),
        &Column::Name("item".into()),
        None,
        Some(&Column::Name("ts".into())),
        Some(&h),
    )
    .unwrap();
    assert_eq!(
        c,
        Columns {
            user: 2,
            item: 1,
            weight: None,
            ts: Some(0),
            removed: None,
        }
    );
    let e = Columns::resolve(
        &Column::Name("u".into()),
        &Column::Index(1),
        None,
        None,
        Some(&h),
    );
    assert!(e.unwrap_err().contains("no such column"));
    let e = Columns::resolve(
        &Column::Name("u".into()),
        &Column::Index(1),
        None,
        None,
        None,
    );
    assert!(e.unwrap_err().contains("no header"));
}

#[test]
fn a_removal_flag_cancels_the_pair_and_bad_flags_are_named() {
    let cols = Columns {
        user: 0,
        item: 1,
        weight: Some(2),
        ts: None,
        removed: Some(3),
    };
    let mut f = Fields::default();
    let p = |l: &str, f: &mut Fields| parse_line(l.as_bytes(), Format::Tsv, &cols, f);
    assert_eq!(p("1\t2\t3\tfalse", &mut f).unwrap().unwrap().weight, 3.0);
    assert_eq!(p("1\t2\t3\t", &mut f).unwrap().unwrap().weight, 3.0);
    for yes in ["1", "TRUE", "unfavorite", "removed"] {
        let w = p(&format!("1\t2\t3\t{yes}"), &mut f)
            .unwrap()
            .unwrap()
            .weight;
        assert_eq!(w, -(MAX_ABS_WEIGHT as f32), "{yes}");
    }
    assert_eq!(p("1\t2\t3\tmaybe", &mut f).unwrap_err().field, "removed");
}
