//! Scale-out by counting: `recflow plan`'s counts against the run report's, and balanced
//! assignments against the model.

use recflow::job::Job;
use recflow::plan::cost::HalfStepCost;
use recflow::run::{run, RunOptions};
use std::path::Path;

fn job(store: &Path) -> Job {
    let sets: Vec<String> = vec![
        "input.demo.users=700".into(),
        "input.demo.items=250".into(),
        "input.demo.nnz=9000".into(),
        "input.demo.rank=4".into(),
        "als.factors=6".into(),
        "als.iterations=3".into(),
        "als.loss_every=2".into(),
        // Few shards, so that cost and `v mod W` assignments differ and workers own several.
        "shards.virtual=11".into(),
        "eval.holdout=0.1".into(),
        "recommend.k=0".into(),
        format!("output.store={}", store.display()),
    ];
    Job::parse("", &sets).unwrap()
}

fn costs(manifest: &serde_json::Value) -> Vec<HalfStepCost> {
    let mut c: Vec<HalfStepCost> =
        serde_json::from_value(manifest["train"]["cost"].clone()).unwrap();
    c.iter_mut()
        .flat_map(|h| h.workers.iter_mut())
        .for_each(|w| w.secs = 0.0);
    c
}

fn export(store: &Path, out: &Path) -> (Vec<u8>, Vec<u8>) {
    recflow::export::export(store, None, out, recflow::export::ExportFormat::Tsv).unwrap();
    (
        std::fs::read(out.join("users.tsv")).unwrap(),
        std::fs::read(out.join("items.tsv")).unwrap(),
    )
}

#[test]
fn plan_counts_equal_the_run_report_and_the_model_does_not_depend_on_the_assignment() {
    let tmp = tempfile::tempdir().unwrap();
    let data = recflow::plan::ingest_data(&job(&tmp.path().join("unused"))).unwrap();
    let mut models = Vec::new();
    for w in [1, 3, 5, 13] {
        let store = tmp.path().join(format!("s{w}"));
        let j = job(&store);
        let opts = RunOptions {
            workers: w,
            ..RunOptions::default()
        };
        let s = run(j.clone(), opts).unwrap().unwrap();
        let ran = costs(&s.manifest);
        assert_eq!(ran.len(), 6, "one cost per half-step");
        assert!(ran.iter().all(|h| h.workers.len() == w));
        let planned = recflow::plan::plan(&j, &data, w).half_steps;
        assert_eq!(planned, ran, "plan vs run report at {w} workers");
        if w > 1 {
            assert!(ran[2].total_sent() > 0, "workers exchange vectors at {w}");
        }
        models.push(export(&store, &tmp.path().join(format!("e{w}"))));
    }
    // 13 workers over 11 shards: two own nothing, and the model is still the same.
    assert!(
        models.windows(2).all(|m| m[0] == m[1]),
        "models differ across layouts"
    );
}

#[test]
fn cost_assignment_balances_better_than_round_robin_on_skewed_shards() {
    use recflow::side::Assignment;
    // One heavy shard every 4: round robin over 4 workers puts them all on worker 0.
    let costs: Vec<u64> = (0..64).map(|v| if v % 4 == 0 { 10 } else { 1 }).collect();
    let rr = Assignment::round_robin(64, 4).loads(&costs, 4);
    let lpt = Assignment::by_cost(&costs, 4).loads(&costs, 4);
    assert_eq!(rr, vec![160, 16, 16, 16]);
    assert_eq!(*lpt.iter().max().unwrap(), 52);
    assert_eq!(*lpt.iter().min().unwrap(), 52);
}
