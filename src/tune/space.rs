//! The searched space: `--param` specs, the built-in default space, and how assignments are
//! drawn from it (the grid, or seeded random draws).

use crate::ids::SplitMix;

/// One searched key.
#[derive(Clone, Debug, PartialEq)]
pub enum Space {
    /// Listed values (numbers or enum names), tried as written.
    List(Vec<String>),
    /// A range `lo..hi`, uniform or (`:log`) log-uniform; integers when both ends are.
    Range {
        /// Lower end.
        lo: f64,
        /// Upper end.
        hi: f64,
        /// Log-uniform.
        log: bool,
        /// Whole numbers.
        int: bool,
    },
}

/// A `--param KEY=SPEC`.
#[derive(Clone, Debug, PartialEq)]
pub struct Param {
    /// `section.key`.
    pub key: String,
    /// Its values.
    pub space: Space,
}

/// Parses `als.factors=64,128`, `als.regularization=1e-3..10:log`.
pub fn parse_param(spec: &str) -> Result<Param, String> {
    let (key, v) = spec
        .split_once('=')
        .ok_or_else(|| format!("--param {spec}: expected KEY=VALUES, e.g. als.factors=64,128"))?;
    let key = key.trim().to_string();
    if key.split('.').count() < 2 {
        return Err(format!("--param {spec}: the key must be section.key"));
    }
    let (body, log) = match v.trim().strip_suffix(":log") {
        Some(b) => (b, true),
        None => (v.trim(), false),
    };
    if let Some((lo, hi)) = body.split_once("..") {
        let num = |s: &str| {
            s.trim()
                .parse::<f64>()
                .map_err(|_| format!("--param {spec}: '{s}' is not a number"))
        };
        let (l, h) = (num(lo)?, num(hi)?);
        if !(l.is_finite() && h.is_finite() && l < h) || (log && l <= 0.0) {
            return Err(format!(
                "--param {spec}: need lo < hi (and lo > 0 with :log)"
            ));
        }
        let int = [lo, hi].iter().all(|s| s.trim().parse::<i64>().is_ok());
        return Ok(Param {
            key,
            space: Space::Range {
                lo: l,
                hi: h,
                log,
                int,
            },
        });
    }
    let vals: Vec<String> = body.split(',').map(|s| s.trim().to_string()).collect();
    if vals.iter().any(|s| s.is_empty()) {
        return Err(format!("--param {spec}: empty value"));
    }
    Ok(Param {
        key,
        space: Space::List(vals),
    })
}

/// The space used when no `--param` is given: Rendle et al.'s recipe (frequency-scaled λ,
/// normal initial vectors, the iALS++ block solver) over the keys that matter most, with
/// ranges wide enough for most implicit data sets and `d` up to 512 — successive halving
/// trains the large ones to the end only when they lead at the early rungs.
pub fn default_space() -> Vec<Param> {
    [
        "als.regularization_scaling=frequency",
        "als.init_std=0.1",
        "als.solver=block",
        "als.block_size=64",
        "als.factors=64,128,256,512",
        "als.regularization=1e-4..1e-1:log",
        "confidence.alpha=3..300:log",
    ]
    .iter()
    .map(|s| parse_param(s).expect("built-in space"))
    .collect()
}

/// How trials are chosen and trained.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Search {
    /// Every combination of listed values, each trained to the end.
    Grid,
    /// `--trials` seeded random draws, each trained to the end (or early-stopped).
    Random,
    /// `--trials` seeded random draws under successive halving (`tune::halving`).
    Halving,
}

impl Search {
    /// The default: the grid for lists only without `--trials`, else halving.
    pub fn default_for(params: &[Param], trials: Option<usize>) -> Search {
        let lists_only = params.iter().all(|p| matches!(p.space, Space::List(_)));
        if lists_only && trials.is_none() {
            Search::Grid
        } else {
            Search::Halving
        }
    }

    /// Parses `grid`, `random` or `halving`.
    pub fn parse(s: &str) -> Result<Search, String> {
        match s {
            "grid" => Ok(Search::Grid),
            "random" => Ok(Search::Random),
            "halving" => Ok(Search::Halving),
            _ => Err(format!("--search {s}: expected grid, random or halving")),
        }
    }
}

/// Trials drawn by default: 10 for a random search, 27 (three rungs of thirds) for halving.
pub(super) fn default_trials(search: Search) -> usize {
    match search {
        Search::Halving => 27,
        _ => 10,
    }
}

pub(crate) fn fmt_value(x: f64, int: bool) -> String {
    if int {
        format!("{}", x.round() as i64)
    } else {
        format!("{x:.4e}")
    }
}

/// The trials' assignments: the grid (lists only, no trial count) or seeded random draws.
pub fn assignments(
    params: &[Param],
    trials: Option<usize>,
    seed: u64,
) -> Vec<Vec<(String, String)>> {
    let lists_only = params.iter().all(|p| matches!(p.space, Space::List(_)));
    if lists_only && trials.is_none() {
        return grid(params);
    }
    random_draws(params, trials.unwrap_or(10), seed)
}

/// Every combination of the listed values (ranges are not allowed here).
pub(super) fn grid(params: &[Param]) -> Vec<Vec<(String, String)>> {
    let mut out: Vec<Vec<(String, String)>> = vec![Vec::new()];
    for p in params {
        let Space::List(vals) = &p.space else {
            unreachable!()
        };
        out = out
            .into_iter()
            .flat_map(|a| {
                vals.iter().map(move |v| {
                    let mut a = a.clone();
                    a.push((p.key.clone(), v.clone()));
                    a
                })
            })
            .collect();
    }
    out
}

/// `n` seeded random draws: a listed value uniformly, a range uniformly or log-uniformly.
pub(super) fn random_draws(params: &[Param], n: usize, seed: u64) -> Vec<Vec<(String, String)>> {
    let mut rng = SplitMix::new(seed ^ 0x7e57_u64);
    (0..n)
        .map(|_| {
            params
                .iter()
                .map(|p| {
                    let v = match &p.space {
                        Space::List(vals) => vals[rng.below(vals.len() as u64) as usize].clone(),
                        Space::Range { lo, hi, log, int } => {
                            let u = rng.next_f64();
                            let x = if *log {
                                (lo.ln() + u * (hi.ln() - lo.ln())).exp()
                            } else {
                                lo + u * (hi - lo)
                            };
                            fmt_value(x, *int)
                        }
                    };
                    (p.key.clone(), v)
                })
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_parse() {
        let p = parse_param("als.factors=64,128").unwrap();
        assert_eq!(p.space, Space::List(vec!["64".into(), "128".into()]));
        let p = parse_param("als.regularization=1e-3..10:log").unwrap();
        assert_eq!(
            p.space,
            Space::Range {
                lo: 1e-3,
                hi: 10.0,
                log: true,
                int: false
            }
        );
        let p = parse_param("als.factors=16..64").unwrap();
        assert!(matches!(p.space, Space::Range { int: true, .. }));
        assert!(parse_param("factors=1").is_err());
        assert!(parse_param("als.x=0..1:log").is_err());
        assert!(parse_param("als.x=3..1").is_err());
    }

    #[test]
    fn grid_and_random_draws() {
        let ps = vec![
            parse_param("a.x=1,2").unwrap(),
            parse_param("a.y=p,q,r").unwrap(),
        ];
        let g = assignments(&ps, None, 1);
        assert_eq!(g.len(), 6);
        assert_eq!(
            g[5],
            vec![("a.x".into(), "2".into()), ("a.y".into(), "r".into())]
        );
        let ps = vec![
            parse_param("a.z=1e-2..1:log").unwrap(),
            parse_param("a.n=8..9").unwrap(),
        ];
        let r = assignments(&ps, Some(20), 4);
        assert_eq!(r, assignments(&ps, Some(20), 4));
        assert_ne!(r, assignments(&ps, Some(20), 5));
        for a in &r {
            let z: f64 = a[0].1.parse().unwrap();
            assert!((1e-2..=1.0).contains(&z));
            assert!(a[1].1 == "8" || a[1].1 == "9");
        }
    }
}
