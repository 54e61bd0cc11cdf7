//! The cost model in the run report: per half-step, the max, mean and max/mean over workers
//! of each counted quantity (from [`crate::als::TrainReport::cost`]), as JSON and as a table.

use super::html::esc;
use crate::plan::cost::{HalfStepCost, WorkerCost};
use serde_json::{json, Value};
use std::fmt::Write;

/// Reads one quantity of a worker's cost.
type Field = fn(&WorkerCost) -> f64;

/// The quantities of [`WorkerCost`], by report name.
const FIELDS: [(&str, Field); 6] = [
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

/// The report page's table: one row per half-step, `max (max/mean)` per quantity.
pub fn table(r: &Value) -> String {
    let Some(rows) = r["cost"].as_array().filter(|a| !a.is_empty()) else {
        return String::new();
    };
    let mut s = String::from(
        r#"<h2 style="margin-top:18px">Cost per half-step (max over workers, max/mean)</h2><table id="cost"><tr><th>iteration</th><th>half</th>"#,
    );
    for (name, _) in FIELDS {
        let _ = write!(s, "<th>{}</th>", esc(name));
    }
    s.push_str("</tr>");
    for row in rows {
        let _ = write!(
            s,
            "<tr><td>{}</td><td>{}</td>",
            row["iteration"],
            esc(row["half"].as_str().unwrap_or("?"))
        );
        for (name, _) in FIELDS {
            let q = &row[name];
            let _ = write!(
                s,
                "<td>{} ({:.3})</td>",
                super::html::short(q["max"].as_f64().unwrap_or(0.0)),
                q["max_over_mean"].as_f64().unwrap_or(1.0)
            );
        }
        s.push_str("</tr>");
    }
    s.push_str("</table>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cost_rows_have_max_mean_and_ratio_and_the_table_shows_them() {
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
        let t = table(&json!({ "cost": j }));
        assert!(t.contains("<td>users</td>") && t.contains("(1.500)"), "{t}");
        assert_eq!(table(&json!({})), "");
    }
}
