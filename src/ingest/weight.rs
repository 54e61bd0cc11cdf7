//! Which column holds the event weights when the job does not say (`input.weight = "auto"`).
//!
//! The rule, decided per file from its first lines (every worker reads the same lines, so
//! every worker decides the same):
//! - with a header: the column named like a weight (`weight`, `count`, `rating`, `plays`, …);
//! - without one: the first column after the ids (not the timestamp or removal column) when
//!   it holds a number on every sampled line;
//! - numbers that all look like Unix timestamps (> 10⁹) are refused: a weight that large
//!   would swamp every confidence, and a timestamp read as a weight is a silent disaster.

use super::parse::{number_field, Columns, Fields};
use crate::job::{Column, Format, WeightColumn};

/// Header names read as a weight column (compared ignoring ASCII case).
pub const WEIGHT_NAMES: &[&str] = &[
    "weight",
    "weights",
    "count",
    "counts",
    "rating",
    "ratings",
    "plays",
    "playcount",
    "play_count",
    "score",
    "value",
    "clicks",
    "views",
    "quantity",
    "qty",
    "purchases",
    "frequency",
    "freq",
];

/// Weights above this in every sampled line look like Unix timestamps (seconds since 1970;
/// 10⁹ is September 2001).
const TIMESTAMP_LIKE: f64 = 1e9;

/// Where one file's weights come from, and how that was decided (for the summary, the report
/// and `inspect`).
#[derive(Clone, Debug, PartialEq)]
pub struct WeightChoice {
    /// The column, or none (every event weighs 1).
    pub column: Option<usize>,
    /// E.g. `column 2 (found: numbers)`, `column "plays" (input.weight)`.
    pub described: String,
}

/// The first column that is not an id, timestamp or removal column: the candidate weight
/// column of a file without a header.
pub fn candidate(cols: &Columns) -> usize {
    let taken = |c: usize| {
        c == cols.user || c == cols.item || cols.ts == Some(c) || cols.removed == Some(c)
    };
    (0..).find(|&c| !taken(c)).expect("a free column")
}

/// Decides the weight column of one file. `cols` has every column but the weight resolved;
/// `names` is the header (when the file has one); `sample` holds the first data lines
/// (without line ends).
pub fn choose(
    spec: &WeightColumn,
    format: Format,
    cols: &Columns,
    names: Option<&[String]>,
    sample: &[Vec<u8>],
) -> Result<WeightChoice, String> {
    match spec {
        WeightColumn::None => Ok(WeightChoice {
            column: None,
            described: "none: every event weighs 1 (input.weight = \"none\")".into(),
        }),
        WeightColumn::Column(c) => {
            let i = Columns::resolve(c, &Column::Index(0), None, None, names)
                .map_err(|e| e.replace("input.user", "input.weight"))?
                .user;
            let described = match c {
                Column::Index(i) => format!("column {i} (input.weight)"),
                Column::Name(n) => format!("column {n:?} (input.weight)"),
            };
            Ok(WeightChoice {
                column: Some(i),
                described,
            })
        }
        WeightColumn::Auto => match names {
            Some(names) => Ok(by_name(cols, names)),
            None => by_numbers(format, cols, sample),
        },
    }
}

fn by_name(cols: &Columns, names: &[String]) -> WeightChoice {
    let found = names.iter().enumerate().find(|(i, n)| {
        *i != cols.user
            && *i != cols.item
            && cols.ts != Some(*i)
            && cols.removed != Some(*i)
            && WEIGHT_NAMES
                .iter()
                .any(|w| w.eq_ignore_ascii_case(n.trim()))
    });
    match found {
        Some((i, n)) => WeightChoice {
            column: Some(i),
            described: format!("column {n:?} (found by its header name)"),
        },
        None => WeightChoice {
            column: None,
            described: format!(
                "none: every event weighs 1 (no header column is named like a weight: {})",
                WEIGHT_NAMES[..4].join(", ")
            ),
        },
    }
}

fn by_numbers(format: Format, cols: &Columns, sample: &[Vec<u8>]) -> Result<WeightChoice, String> {
    let c = candidate(cols);
    let mut fields = Fields::default();
    let mut values = Vec::with_capacity(sample.len());
    for line in sample
        .iter()
        .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
    {
        fields.split(line, format);
        match fields.get(line, c).and_then(number_field) {
            Some(v) => values.push(v),
            None => {
                return Ok(WeightChoice {
                    column: None,
                    described: format!(
                    "none: every event weighs 1 (column {c} does not hold numbers on every line)"
                ),
                })
            }
        }
    }
    if values.is_empty() {
        return Ok(WeightChoice {
            column: None,
            described: "none: every event weighs 1 (no data lines to look at)".into(),
        });
    }
    if values.iter().all(|v| v.abs() > TIMESTAMP_LIKE) {
        return Err(format!(
            "column {c} looks like Unix timestamps (e.g. {}), not weights: set input.timestamp = {c} (and input.weight = \"none\" if there is no weight column), or input.weight = {c} if these really are weights",
            values[0]
        ));
    }
    Ok(WeightChoice {
        column: Some(c),
        described: format!("column {c} (found: it holds numbers)"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cols() -> Columns {
        Columns {
            user: 0,
            item: 1,
            weight: None,
            ts: None,
            removed: None,
        }
    }

    fn lines(text: &str) -> Vec<Vec<u8>> {
        text.lines().map(|l| l.as_bytes().to_vec()).collect()
    }

    #[test]
    fn a_third_numeric_column_is_the_weight() {
        let c = choose(
            &WeightColumn::Auto,
            Format::Tsv,
            &cols(),
            None,
            &lines("1\t2\t3\n4\t5\t0.5"),
        )
        .unwrap();
        assert_eq!(c.column, Some(2));
        let c = choose(
            &WeightColumn::Auto,
            Format::Tsv,
            &cols(),
            None,
            &lines("1\t2\n4\t5"),
        )
        .unwrap();
        assert_eq!(c.column, None, "{}", c.described);
        let c = choose(
            &WeightColumn::Auto,
            Format::Tsv,
            &cols(),
            None,
            &lines("1\t2\t3\n4\t5\tx"),
        )
        .unwrap();
        assert_eq!(c.column, None);
    }

    #[test]
    fn the_timestamp_column_is_skipped() {
        let mut k = cols();
        k.ts = Some(2);
        let c = choose(
            &WeightColumn::Auto,
            Format::Tsv,
            &k,
            None,
            &lines("1\t2\t1600000000\t4"),
        )
        .unwrap();
        assert_eq!(c.column, Some(3));
    }

    #[test]
    fn timestamp_like_weights_are_refused() {
        let e = choose(
            &WeightColumn::Auto,
            Format::Tsv,
            &cols(),
            None,
            &lines("1\t2\t1600000000\n3\t4\t1600000100"),
        )
        .unwrap_err();
        assert!(e.contains("input.timestamp = 2"), "{e}");
        // One large count among small ones is a weight.
        let c = choose(
            &WeightColumn::Auto,
            Format::Tsv,
            &cols(),
            None,
            &lines("1\t2\t1600000000\n3\t4\t7"),
        )
        .unwrap();
        assert_eq!(c.column, Some(2));
    }

    #[test]
    fn header_names_pick_the_column() {
        let names: Vec<String> = ["user_id", "item_id", "ts", "Plays"]
            .map(String::from)
            .to_vec();
        let c = choose(&WeightColumn::Auto, Format::Tsv, &cols(), Some(&names), &[]).unwrap();
        assert_eq!(c.column, Some(3));
        let names: Vec<String> = ["user_id", "item_id", "ts"].map(String::from).to_vec();
        let c = choose(&WeightColumn::Auto, Format::Tsv, &cols(), Some(&names), &[]).unwrap();
        assert_eq!(c.column, None);
    }

    #[test]
    fn none_and_explicit_columns() {
        let s = lines("1\t2\t3");
        let c = choose(&WeightColumn::None, Format::Tsv, &cols(), None, &s).unwrap();
        assert_eq!(c.column, None);
        let spec = WeightColumn::Column(Column::Index(5));
        let c = choose(&spec, Format::Tsv, &cols(), None, &s).unwrap();
        assert_eq!(c.column, Some(5));
    }
}
