//! The singular values of an svd model (`report.json` `svd.singular_values`): how fast the
//! spectrum decays says how much a larger rank could add.

use super::{
    esc, nice_ticks, note_svg, short, svg_open, x_label, y_axis, BOTTOM, H, LEFT, RIGHT, TOP, W,
};
use serde_json::Value;
use std::fmt::Write as _;

/// σ_j against j, one marked point per singular value.
pub fn plot(r: &Value) -> String {
    let id = "plot-spectrum";
    let sv: Vec<f64> = r["svd"]["singular_values"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_f64).collect())
        .unwrap_or_default();
    if sv.is_empty() {
        return note_svg(
            id,
            "singular values",
            &["no singular values recorded".into()],
            None,
        );
    }
    let mut s = String::new();
    svg_open(&mut s, id, "singular values");
    let ticks = nice_ticks(0.0, sv[0].max(f64::MIN_POSITIVE), 5);
    let (lo, hi) = y_axis(&mut s, &ticks, "singular value σ_j");
    let pw = W - LEFT - RIGHT;
    let x = |j: usize| LEFT + pw * (j as f64 + 0.5) / sv.len() as f64;
    let y = |v: f64| TOP + (H - TOP - BOTTOM) * (1.0 - (v - lo) / (hi - lo).max(f64::MIN_POSITIVE));
    let pts: Vec<String> = sv
        .iter()
        .enumerate()
        .map(|(j, &v)| format!("{:.1},{:.1}", x(j), y(v)))
        .collect();
    let _ = write!(
        s,
        r##"<polyline fill="none" stroke="#3b6fb6" stroke-width="1.5" points="{}"/>"##,
        pts.join(" ")
    );
    for (j, &v) in sv.iter().enumerate() {
        let _ = write!(
            s,
            r##"<circle class="value" data-value="{v}" cx="{:.1}" cy="{:.1}" r="2.5" fill="#3b6fb6"><title>σ{} = {}</title></circle>"##,
            x(j),
            y(v),
            j + 1,
            esc(&short(v))
        );
    }
    x_label(&mut s, &format!("j (1 … {})", sv.len()));
    s.push_str("</svg>");
    s
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn every_singular_value_is_a_point_and_none_is_a_note() {
        let r = json!({ "svd": { "singular_values": [9.0, 4.0, 1.0] } });
        let s = super::plot(&r);
        assert_eq!(s.matches("<circle").count(), 3);
        assert!(s.contains(r#"data-value="4""#));
        let s = super::plot(&json!({}));
        assert!(s.contains("no singular values recorded"));
    }
}
