//! The report page's plots, one function per `<section>` (ids in [`super::PLOT_IDS`]).

use super::svg::*;
use super::*;

/// Objective after each half-step, one line per half.
pub(super) fn objective_plot(r: &Value) -> String {
    let id = "plot-objective";
    let pts: Vec<&Value> = r["objective"]
        .as_array()
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    if pts.is_empty() {
        return note_svg(
            id,
            "objective per iteration",
            &[
                "objective not computed".into(),
                "set als.loss_every = 1 to record it".into(),
            ],
            None,
        );
    }
    let it = |p: &Value| p["iteration"].as_f64().unwrap_or(0.0);
    let (xmin, xmax) = pts.iter().fold((f64::MAX, f64::MIN), |(a, b), p| {
        (a.min(it(p)), b.max(it(p)))
    });
    let (vmin, vmax) = pts.iter().fold((f64::MAX, f64::MIN), |(a, b), p| {
        (a.min(num(&p["value"])), b.max(num(&p["value"])))
    });
    let pad = ((vmax - vmin) * 0.05).max(vmax.abs() * 1e-6);
    let mut s = String::new();
    svg_open(&mut s, id, "objective per iteration");
    let ticks = nice_ticks(vmin - pad, vmax + pad, 5);
    let (lo, hi) = y_axis(&mut s, &ticks, "weighted objective");
    let pw = W - LEFT - RIGHT;
    let x = |v: f64| {
        if xmax > xmin {
            LEFT + 20.0 + (pw - 40.0) * (v - xmin) / (xmax - xmin)
        } else {
            LEFT + pw / 2.0
        }
    };
    let y = |v: f64| TOP + (H - TOP - BOTTOM) * (1.0 - (v - lo) / (hi - lo));
    iteration_ticks(&mut s, xmin, xmax, &x);
    for (k, half) in ["users", "items"].iter().enumerate() {
        half_line(&mut s, &pts, half, COLORS[k], (&x, &y));
    }
    legend(
        &mut s,
        &["after the users half-step", "after the items half-step"],
    );
    x_label(&mut s, "iteration");
    s.push_str("</svg>");
    s
}

/// Ticks and labels of the iteration axis (at most ~12 labels), `x` placing an iteration.
fn iteration_ticks(s: &mut String, xmin: f64, xmax: f64, x: &impl Fn(f64) -> f64) {
    let step = ((xmax - xmin) / 12.0).ceil().max(1.0) as usize;
    let mut i = xmin as usize;
    while i as f64 <= xmax {
        let xi = x(i as f64);
        let _ = write!(
            s,
            r##"<line x1="{xi:.2}" x2="{xi:.2}" y1="{}" y2="{}" stroke="#888"/><text x="{xi:.2}" y="{}" text-anchor="middle" font-size="11" fill="#444">{i}</text>"##,
            H - BOTTOM,
            H - BOTTOM + 5.0,
            H - BOTTOM + 18.0
        );
        i += step;
    }
}

/// One half's objective as a polyline with a titled point per iteration (`xy` places an
/// iteration and a value); nothing when that half has no points.
fn half_line(
    s: &mut String,
    pts: &[&Value],
    half: &str,
    color: &str,
    (x, y): (&impl Fn(f64) -> f64, &impl Fn(f64) -> f64),
) {
    let it = |p: &Value| p["iteration"].as_f64().unwrap_or(0.0);
    let mine: Vec<&&Value> = pts.iter().filter(|p| p["half"] == *half).collect();
    if mine.is_empty() {
        return;
    }
    let path: Vec<String> = mine
        .iter()
        .map(|p| format!("{:.2},{:.2}", x(it(p)), y(num(&p["value"]))))
        .collect();
    let _ = write!(
        s,
        r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2"/>"#,
        path.join(" "),
    );
    for p in mine {
        let _ = write!(
            s,
            r#"<circle class="point" cx="{:.2}" cy="{:.2}" r="3.5" fill="{color}" data-iteration="{}" data-half="{half}" data-value="{}"><title>iteration {}, after the {half} half-step: {}</title></circle>"#,
            x(it(p)),
            y(num(&p["value"])),
            raw(&p["iteration"]),
            esc(&raw(&p["value"])),
            raw(&p["iteration"]),
            esc(&format!("{:.6e}", num(&p["value"])))
        );
    }
}

pub(super) fn stages_plot(r: &Value) -> String {
    let st: Vec<&Value> = r["stages"]
        .as_array()
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    let cats: Vec<String> = st
        .iter()
        .map(|x| x["name"].as_str().unwrap_or("?").to_string())
        .collect();
    let series = [Series {
        name: "seconds",
        values: st.iter().map(|x| x["secs"].clone()).collect(),
    }];
    bar_chart(
        "plot-stages",
        "wall seconds per stage",
        &cats,
        &series,
        false,
        "stage",
        "seconds",
    )
}

pub(super) fn workers_plot(r: &Value) -> String {
    let w: Vec<&Value> = r["workers"]
        .as_array()
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    if w.is_empty() {
        return note_svg(
            "plot-workers",
            "solve seconds per worker",
            &["no training half-steps ran".into()],
            None,
        );
    }
    let cats: Vec<String> = w
        .iter()
        .map(|x| format!("w{}", raw(&x["worker"])))
        .collect();
    let series = [
        Series {
            name: "solving users",
            values: w.iter().map(|x| x["users_solve_secs"].clone()).collect(),
        },
        Series {
            name: "solving items",
            values: w.iter().map(|x| x["items_solve_secs"].clone()).collect(),
        },
    ];
    bar_chart(
        "plot-workers",
        "solve seconds per worker",
        &cats,
        &series,
        true,
        "worker",
        "seconds solving (all iterations)",
    )
}

pub(super) fn degree_plot(r: &Value, side: &str) -> String {
    let id = format!("plot-{}-degrees", &side[..side.len() - 1]);
    let d = &r["degrees"][side];
    match d["histogram"].as_array() {
        Some(bins) if !bins.is_empty() => histogram(
            &id,
            &format!("{side} by number of interactions"),
            bins,
            "interactions (log2 bins)",
            side,
        ),
        _ => note_svg(&id, side, &["no degree data".into()], None),
    }
}

pub(super) fn buckets_plot(r: &Value) -> String {
    let id = "plot-buckets";
    match r["lsh"]["size_histogram"].as_array() {
        Some(bins) if !bins.is_empty() => histogram(
            id,
            "LSH bucket sizes",
            bins,
            "items in bucket (log2 bins)",
            "buckets",
        ),
        _ => {
            let mode = r["candidates"]["mode"].as_str().unwrap_or("none");
            let why = if r["lsh"].is_object() {
                "the LSH index has no hash tables (lsh.tables = 0)".to_string()
            } else {
                format!("recommend.mode = {mode}: no LSH index was built")
            };
            note_svg(
                id,
                "LSH bucket sizes",
                &["no LSH buckets".into(), why],
                None,
            )
        }
    }
}

pub(super) fn candidates_plot(r: &Value) -> String {
    let id = "plot-candidates";
    let c = &r["candidates"];
    match c["histogram"].as_array() {
        Some(bins) if !bins.is_empty() => histogram(
            id,
            "candidates scored per user",
            bins,
            "candidates scored (log2 bins)",
            "users",
        ),
        _ => {
            let mode = c["mode"].as_str().unwrap_or("none");
            if c["per_user_mean"].is_number() {
                note_svg(
                    id,
                    "candidates scored per user",
                    &[
                        format!("{} candidates per user", short(num(&c["per_user_mean"]))),
                        format!("recommend.mode = {mode}: every item is scored for every user"),
                    ],
                    Some(&c["per_user_mean"]),
                )
            } else {
                note_svg(
                    id,
                    "candidates scored per user",
                    &[if mode == "exact" {
                        "recommend.mode = exact: not recorded (made by an older recflow)".into()
                    } else {
                        format!("recommend.mode = {mode}: no candidate scoring")
                    }],
                    None,
                )
            }
        }
    }
}
