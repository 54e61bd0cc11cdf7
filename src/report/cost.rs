//! The cost model in the run report: per half-step, the max, mean and max/mean over workers
//! of each counted quantity (from [`crate::als::TrainReport::cost`]), as JSON and as a table.

use crate::als::cost::{HalfStepCost, WorkerCost};
use serde_json::{json, Value};

/// Reads one quantity of a worker's cost.
type Field = fn(&WorkerCost) -> f64;

/// The quantities of [`WorkerCost`], by report name.
pub const FIELDS: [(&str, Field); 6] = [
    ("flops", |w| w.flops as f64),
    ("bytes_sent", |w| w.bytes_sent as f64),
    ("bytes_received", |w| w.bytes_received as f64),
    ("entities", |w| w.entities as f64),
    ("interactions", |w| w.interactions as f64),
    ("secs", |w| w.secs),
];

/// `report.json`'s `cost`: one object per half-step with `{max, mean, max_over_mean}` per
/// quantity and the per-worker values (empty when the manifest has no cost model).
pub fn json(train: &Value) -> Value {
    let halves: Vec<HalfStepCost> =
        serde_json::from_value(train["cost"].clone()).unwrap_or_default();
    let rows: Vec<Value> = halves
        .iter()
        .map(|h| {
            let mut o =
                json!({ "iteration": h.iteration, "half": h.half, "per_worker": h.workers });
            for (name, f) in FIELDS {
                let (max, mean) = h.max_mean(f);
                let ratio = if mean > 0.0 { max / mean } else { 1.0 };
                o[name] = json!({ "max": max, "mean": mean, "max_over_mean": ratio });
            }
            o
        })
        .collect();
    Value::Array(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cost_rows_have_max_mean_and_ratio() {
        let w = |f: u64, s: u64| WorkerCost {
            flops: f,
            bytes_sent: s,
            ..WorkerCost::default()
        };
        let h = HalfStepCost {
            iteration: 1,
            half: "users".into(),
            workers: vec![w(30, 0), w(10, 8)],
        };
        let j = json(&json!({ "cost": [h] }));
        assert_eq!(j[0]["flops"]["max"], 30.0);
        assert_eq!(j[0]["flops"]["mean"], 20.0);
        assert_eq!(j[0]["flops"]["max_over_mean"], 1.5);
        assert_eq!(j[0]["bytes_sent"]["max_over_mean"], 2.0);
        assert_eq!(j[0]["secs"]["max_over_mean"], 1.0);
    }
}
