//! The report page's cost table, from `report.json`'s `cost` rows ([`crate::report::cost`]).

use super::{esc, short};
use crate::report::cost::FIELDS;
use serde_json::Value;
use std::fmt::Write as _;

/// The report page's table: one row per half-step, `max (max/mean)` per quantity.
pub(super) fn table(r: &Value) -> String {
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
                short(q["max"].as_f64().unwrap_or(0.0)),
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
    use serde_json::json;

    #[test]
    fn the_table_shows_each_half_steps_max_and_ratio() {
        let q = |max: f64, r: f64| json!({ "max": max, "mean": max / r, "max_over_mean": r });
        let mut row = json!({ "iteration": 1, "half": "users" });
        for (name, _) in FIELDS {
            row[name] = q(30.0, 1.5);
        }
        let t = table(&json!({ "cost": [row] }));
        assert!(t.contains("<td>users</td>") && t.contains("(1.500)"), "{t}");
        assert_eq!(table(&json!({})), "");
    }
}
