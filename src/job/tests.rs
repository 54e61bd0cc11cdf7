use super::*;

#[test]
fn explicit_lsh_sizes_turn_growth_off_unless_a_target_is_given() {
    let t = |sets: &[&str]| {
        Job::parse("", &sets.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap()
            .lsh
            .target_recall
    };
    assert_eq!(t(&[]), 0.95);
    assert_eq!(t(&["lsh.planes=8", "lsh.transform=mips"]), 0.95);
    for key in Lsh::SIZE_KEYS {
        assert_eq!(t(&[&format!("lsh.{key}=2")]), 0.0, "{key}");
    }
    assert_eq!(t(&["lsh.head=2", "lsh.target_recall=0.9"]), 0.9);
    let file = Job::parse("[lsh]\nhead = 0\ntables = 50\nplanes = 12\n", &[]).unwrap();
    assert_eq!(file.lsh.target_recall, 0.0);
    for (set, key) in [
        ("lsh.target_recall=1.5", "lsh.target_recall"),
        ("lsh.max_share=0", "lsh.max_share"),
        ("lsh.max_share=2", "lsh.max_share"),
    ] {
        let e = Job::parse("", &[set.to_string()]).unwrap_err().to_string();
        assert!(e.contains(key), "{set}: {e}");
    }
}

#[test]
fn defaults_are_valid() {
    let j = Job::parse("", &[]).unwrap();
    assert_eq!(j, Job::default());
}

#[test]
fn reference_job_lists_every_default() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/jobs/reference.toml"))
        .unwrap();
    let j = Job::parse(&text, &[]).unwrap();
    assert_eq!(
        j,
        Job::default(),
        "jobs/reference.toml drifted from the defaults"
    );
}

#[test]
fn unknown_keys_are_named() {
    let e = Job::parse("[als]\nfactor = 3\n", &[]).unwrap_err();
    assert!(e.0.contains("factor"), "{}", e.0);
    let e = Job::parse("[alss]\n", &[]).unwrap_err();
    assert!(e.0.contains("alss"), "{}", e.0);
}

#[test]
fn ranges_are_named() {
    for (text, key) in [
        ("[als]\nfactors = 0", "als.factors"),
        ("[als]\nregularization = -1.0", "als.regularization"),
        ("[confidence]\nalpha = -2.0", "confidence.alpha"),
        (
            "[confidence]\nscheme = \"log\"\nepsilon = 0.0",
            "confidence.epsilon",
        ),
        ("[shards]\nvirtual = 0", "shards.virtual"),
        ("[lsh]\nplanes = 65", "lsh.planes"),
        ("[eval]\nholdout = 1.5", "eval.holdout"),
        ("[als]\nblock_relaxation = 2.0", "als.block_relaxation"),
        ("[als]\nblock_relaxation = 0.0", "als.block_relaxation"),
    ] {
        let e = Job::parse(text, &[]).unwrap_err();
        assert!(e.0.contains(key), "{text}: {}", e.0);
        assert!(e.0.contains("allowed"), "{text}: {}", e.0);
    }
    let e = Job::parse("[als]\nfactors = \"many\"", &[]).unwrap_err();
    assert!(e.0.contains("factors"), "{}", e.0);
}

#[test]
fn overrides_apply_and_validate() {
    let j = Job::parse(
        "[als]\nfactors = 8",
        &[
            "als.factors=16".into(),
            "output.store=models/x".into(),
            "input.path=data/a.tsv".into(),
            "confidence.scheme=log".into(),
        ],
    )
    .unwrap();
    assert_eq!(j.als.factors, 16);
    assert_eq!(j.output.store, "models/x");
    assert_eq!(j.input.path, vec!["data/a.tsv".to_string()]);
    assert_eq!(j.confidence.scheme, Scheme::Log);
    let e = Job::parse("", &["als.factors=0".into()]).unwrap_err();
    assert!(e.0.contains("als.factors"));
    let e = Job::parse("", &["als.nope=1".into()]).unwrap_err();
    assert!(e.0.contains("nope"), "{}", e.0);
    assert!(Job::parse("", &["factors".into()]).is_err());
}

#[test]
fn an_empty_held_out_path_is_none() {
    let job = "[eval]\ntest = \"t.tsv\"\nvalid = \"v.tsv\"";
    let j = Job::parse_in(job, &[], Some(Path::new("jobs"))).unwrap();
    assert!(j.eval.test.is_some() && j.eval.valid.is_some());
    let unset = ["eval.test=".into(), "eval.valid=".into()];
    let j = Job::parse_in(job, &unset, Some(Path::new("jobs"))).unwrap();
    assert_eq!((j.eval.test, j.eval.valid), (None, None));
}

#[test]
fn path_takes_a_string_or_a_list() {
    let j = Job::parse("[input]\npath = \"events.tsv\"", &[]).unwrap();
    assert_eq!(j.input.path, vec!["events.tsv".to_string()]);
    let j = Job::parse("[input]\npath = [\"a.tsv\", \"b/\"]", &[]).unwrap();
    assert_eq!(j.input.path, vec!["a.tsv".to_string(), "b/".to_string()]);
    let j = Job::parse_in("[input]\npath = \"e.tsv\"", &[], Some(Path::new("jobs"))).unwrap();
    assert_eq!(
        j.input.path,
        vec![Path::new("jobs").join("e.tsv").display().to_string()]
    );
    let e = Job::parse("[input]\npath = 3", &[]).unwrap_err();
    assert!(
        e.0.contains("input.path") && e.0.contains("string"),
        "{}",
        e.0
    );
}

#[test]
fn header_takes_booleans_and_strings() {
    for (v, h) in [
        ("false", Header::False),
        ("true", Header::True),
        ("\"false\"", Header::False),
        ("\"auto\"", Header::Auto),
    ] {
        let j = Job::parse(&format!("[input]\nheader = {v}"), &[]).unwrap();
        assert_eq!(j.input.header, h, "{v}");
    }
    let j = Job::parse("", &["input.header=false".into()]).unwrap();
    assert_eq!(j.input.header, Header::False);
    let e = Job::parse("[input]\nheader = \"maybe\"", &[]).unwrap_err();
    assert!(
        e.0.contains("input.header") && e.0.contains("auto"),
        "{}",
        e.0
    );
}

#[test]
fn weight_column_auto_none_or_named() {
    assert_eq!(
        Job::parse("", &[]).unwrap().input.weight,
        WeightColumn::Auto
    );
    let w = |t: &str| {
        Job::parse(&format!("[input]\nweight = {t}"), &[])
            .unwrap()
            .input
            .weight
    };
    assert_eq!(w("\"none\""), WeightColumn::None);
    assert_eq!(w("\"auto\""), WeightColumn::Auto);
    assert_eq!(w("2"), WeightColumn::Column(Column::Index(2)));
    assert_eq!(
        w("\"plays\""),
        WeightColumn::Column(Column::Name("plays".into()))
    );
}

#[test]
fn errors_name_the_set_that_caused_them() {
    let e = Job::load_text("[als]\nfactors = 8\n", &["als.factor=8".into()]);
    assert!(e.0.starts_with("--set als.factor=8:"), "{}", e.0);
    assert!(e.0.contains("factor"), "{}", e.0);
    let e = Job::load_text("[als]\nfactors = 8\n", &["als.factors=0".into()]);
    assert!(e.0.starts_with("--set als.factors=0:"), "{}", e.0);
    // The file's own mistakes are the file's, whatever --set says.
    let e = Job::load_text("[als]\nfactor = 8\n", &["als.factors=4".into()]);
    assert!(e.0.starts_with("job file j.toml:"), "{}", e.0);
    // A bad file fixed by --set, then a bad --set: the --set is named.
    let e = Job::load_text(
        "[als]\nfactors = 0\n",
        &["als.factors=4".into(), "als.bogus=1".into()],
    );
    assert!(e.0.starts_with("--set als.bogus=1:"), "{}", e.0);
}

impl Job {
    /// `Job::load` of `text` as if read from `j.toml`, expecting an error.
    fn load_text(text: &str, sets: &[String]) -> JobError {
        Job::parse_from(text, sets, None, "job file j.toml").unwrap_err()
    }
}
