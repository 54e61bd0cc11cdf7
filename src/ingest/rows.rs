//! What becomes of a parsed row, text line or Parquet row alike: kept (unless `min_weight`
//! drops it) or handled by the bad-line rule, so both inputs count and report the same way.

use super::parse::Event;
use super::read::{ReadStats, MAX_SAMPLES};
use crate::job::{BadLines, Input};

/// Counts a parsed row (text line or Parquet row) and hands its event to `sink`, unless
/// `min_weight` drops it.
pub fn keep_event(input: &Input, ev: Event, st: &mut ReadStats, sink: &mut impl FnMut(Event)) {
    st.lines += 1;
    // Removals (negative weights) are never filtered: they retract pairs.
    if let Some(m) = input.min_weight {
        if ev.weight >= 0.0 && (ev.weight as f64) < m {
            st.below_min_weight += 1;
            return;
        }
    }
    st.events += 1;
    sink(ev);
}

/// The bad-line rule (`input.bad_lines`) for a row that did not parse: `msg` names the file,
/// the row (`what`: "line" or "row") and the field. Fails, or counts it and keeps a sample.
pub fn bad_row(input: &Input, msg: String, what: &str, st: &mut ReadStats) -> Result<(), String> {
    st.lines += 1;
    match input.bad_lines {
        BadLines::Fail => Err(format!(
            "{msg}\n  fix the {what}, or set input.bad_lines = \"skip\" to skip and count such {what}s"
        )),
        BadLines::Skip => {
            st.skipped += 1;
            if st.samples.len() < MAX_SAMPLES {
                st.samples.push(msg);
            }
            Ok(())
        }
    }
}
