//! What becomes of a parsed row, text line or Parquet row alike: kept (unless `min_weight`
//! drops it) or handled by the bad-line rule, so both inputs count and report the same way;
//! and [`ReadStats`], what those counts add up to (the readers of both inputs sit above this).

use super::parse::Event;
use crate::job::{BadLines, Input};

/// Samples of skipped lines kept for the report.
pub const MAX_SAMPLES: usize = 5;

/// What one worker's reading saw.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct ReadStats {
    /// Bytes read.
    pub bytes: u64,
    /// Non-blank data lines seen (headers excluded).
    pub lines: u64,
    /// Events kept.
    pub events: u64,
    /// Malformed lines skipped (`bad_lines = "skip"`).
    pub skipped: u64,
    /// Up to [`MAX_SAMPLES`] skipped lines with their reason.
    pub samples: Vec<String>,
    /// Rows dropped by `min_weight`.
    pub below_min_weight: u64,
    /// Where the weights came from, one entry per distinct choice over the files.
    pub weights: Vec<String>,
    /// Seconds the slowest worker spent reading and parsing its part.
    pub secs: f64,
    /// Read-and-parse rate of the slowest worker (MB/s; 0 when nothing was read).
    pub min_mb_per_sec_per_worker: f64,
}

impl ReadStats {
    /// Adds another worker's counts (samples are capped).
    pub fn merge(&mut self, o: &ReadStats) {
        self.bytes += o.bytes;
        self.lines += o.lines;
        self.events += o.events;
        self.skipped += o.skipped;
        self.below_min_weight += o.below_min_weight;
        for w in &o.weights {
            if !self.weights.contains(w) {
                self.weights.push(w.clone());
            }
        }
        self.secs = self.secs.max(o.secs);
        if o.min_mb_per_sec_per_worker > 0.0
            && (self.min_mb_per_sec_per_worker == 0.0
                || o.min_mb_per_sec_per_worker < self.min_mb_per_sec_per_worker)
        {
            self.min_mb_per_sec_per_worker = o.min_mb_per_sec_per_worker;
        }
        for s in &o.samples {
            if self.samples.len() < MAX_SAMPLES {
                self.samples.push(s.clone());
            }
        }
    }
}

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
