//! `tune.html`: the trials table and one metric-vs-parameter scatter plot per searched key
//! (inline SVG, no scripts, no external files).

use serde_json::Value;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// One scatter plot: x = the key's value per trial (log axis when all are positive and span
/// more than a factor 20; categories evenly spaced when not numeric), y = the metric.
fn plot(key: &str, pts: &[(String, f64, bool)], metric: &str) -> String {
    let (w, h, m) = (360.0, 220.0, 40.0);
    let nums: Option<Vec<f64>> = pts.iter().map(|p| p.0.parse::<f64>().ok()).collect();
    let mut cats: Vec<&str> = pts.iter().map(|p| p.0.as_str()).collect();
    cats.sort_unstable();
    cats.dedup();
    let xs: Vec<f64> = match &nums {
        Some(v) => {
            let (lo, hi) = v
                .iter()
                .fold((f64::MAX, f64::MIN), |a, &x| (a.0.min(x), a.1.max(x)));
            let log = lo > 0.0 && hi / lo > 20.0;
            let f = |x: f64| if log { x.ln() } else { x };
            let (a, b) = (f(lo), f(hi));
            v.iter()
                .map(|&x| if b > a { (f(x) - a) / (b - a) } else { 0.5 })
                .collect()
        }
        None => pts
            .iter()
            .map(|p| {
                let i = cats.iter().position(|c| *c == p.0).unwrap_or(0);
                (i as f64 + 0.5) / cats.len() as f64
            })
            .collect(),
    };
    let ys: Vec<f64> = pts.iter().map(|p| p.1).collect();
    let (ylo, yhi) = ys
        .iter()
        .fold((f64::MAX, f64::MIN), |a, &y| (a.0.min(y), a.1.max(y)));
    let mut s = format!(
        r##"<figure><svg width="{w}" height="{h}" xmlns="http://www.w3.org/2000/svg"><rect x="{m}" y="10" width="{}" height="{}" fill="none" stroke="#999"/>"##,
        w - m - 10.0,
        h - m - 10.0
    );
    for ((x, y), p) in xs.iter().zip(&ys).zip(pts) {
        let px = m + x * (w - m - 20.0) + 5.0;
        let py = if yhi > ylo {
            10.0 + (1.0 - (y - ylo) / (yhi - ylo)) * (h - m - 20.0) + 5.0
        } else {
            h / 2.0
        };
        let fill = if p.2 { "red" } else { "steelblue" };
        s.push_str(&format!(
            r#"<circle cx="{px:.1}" cy="{py:.1}" r="4" fill="{fill}"><title>{} = {}: {y:.5}</title></circle>"#,
            esc(key),
            esc(&p.0)
        ));
    }
    s.push_str(&format!(
        r#"<text x="{m}" y="{}" font-size="11">{} ({:.4} .. {:.4})</text><text x="{m}" y="{}" font-size="11">{}{}</text></svg></figure>"#,
        h - 18.0,
        esc(metric),
        ylo,
        yhi,
        h - 4.0,
        esc(key),
        if nums.is_none() { " (categories)" } else { "" }
    ));
    s
}

/// The page for a `tune.json` value.
pub fn html(t: &Value) -> String {
    let metric = t["metric"].as_str().unwrap_or("");
    let best = t["best"]["index"].as_u64().unwrap_or(0);
    let trials = t["trials"].as_array().cloned().unwrap_or_default();
    let mut s = String::from(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>recflow tune</title></head><body><h1>recflow tune</h1>",
    );
    s.push_str(&format!(
        "<p>{} trials, metric {} on eval.valid (larger is better), best trial {best} (red); test metrics of the published model: {}</p>",
        trials.len(),
        esc(metric),
        esc(&t["test_metrics"].to_string())
    ));
    for key in t["params"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        let pts: Vec<(String, f64, bool)> = trials
            .iter()
            .filter_map(|tr| {
                let v = tr["set"].as_array()?.iter().find(|p| p[0] == key)?[1]
                    .as_str()?
                    .to_string();
                Some((v, tr["value"].as_f64()?, tr["index"].as_u64() == Some(best)))
            })
            .collect();
        s.push_str(&plot(key, &pts, metric));
    }
    s.push_str(
        "<table border=\"1\"><tr><th>trial</th><th>value</th><th>secs</th><th>parameters</th></tr>",
    );
    for tr in &trials {
        let set: Vec<String> = tr["set"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| {
                format!(
                    "{}={}",
                    p[0].as_str().unwrap_or(""),
                    p[1].as_str().unwrap_or("")
                )
            })
            .collect();
        s.push_str(&format!(
            "<tr><td>{}</td><td>{:.5}</td><td>{:.1}</td><td>{}</td></tr>",
            tr["index"],
            tr["value"].as_f64().unwrap_or(f64::NAN),
            tr["secs"].as_f64().unwrap_or(0.0),
            esc(&set.join(" "))
        ));
    }
    s.push_str("</table></body></html>\n");
    s
}
