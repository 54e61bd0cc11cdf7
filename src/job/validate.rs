//! Each section's allowed ranges ([`super::Job::validate`] calls them in order).

use super::*;

/// A value out of its key's range.
pub(super) fn bad(key: &str, allowed: &str, got: impl std::fmt::Display) -> Result<(), JobError> {
    Err(JobError(format!(
        "{key} = {got} is out of range: allowed {allowed}"
    )))
}

impl Als {
    pub(super) fn validate(&self) -> Result<(), JobError> {
        let a = self;
        if !(1..=1024).contains(&a.factors) {
            return bad("als.factors", "1..=1024", a.factors);
        }
        if !(a.regularization.is_finite() && a.regularization >= 0.0) {
            return bad(
                "als.regularization",
                "a finite number >= 0",
                a.regularization,
            );
        }
        if a.iterations > 10_000 {
            return bad("als.iterations", "0..=10000", a.iterations);
        }
        if !(1..=1 << 22).contains(&a.exchange_kib) {
            return bad("als.exchange_kib", "1..=4194304", a.exchange_kib);
        }
        if !(1..=1024).contains(&a.cg_steps) {
            return bad("als.cg_steps", "1..=1024", a.cg_steps);
        }
        if !(1..=1024).contains(&a.block_size) {
            return bad("als.block_size", "1..=1024", a.block_size);
        }
        if !(a.block_relaxation > 0.0 && a.block_relaxation < 2.0) {
            return bad("als.block_relaxation", "0 < omega < 2", a.block_relaxation);
        }
        if !(a.regularization_exponent.is_finite()
            && (0.0..=4.0).contains(&a.regularization_exponent))
        {
            return bad(
                "als.regularization_exponent",
                "0..=4",
                a.regularization_exponent,
            );
        }
        if !(a.init_std.is_finite() && (0.0..=100.0).contains(&a.init_std)) {
            return bad(
                "als.init_std",
                "0..=100 (0: uniform in [0, 0.01))",
                a.init_std,
            );
        }
        Ok(())
    }
}

impl Svd {
    pub(super) fn validate(&self) -> Result<(), JobError> {
        let s = self;
        if !(1..=1024).contains(&s.rank) {
            return bad("svd.rank", "1..=1024", s.rank);
        }
        if s.oversample > 1024 {
            return bad("svd.oversample", "0..=1024", s.oversample);
        }
        if s.power_iterations > 100 {
            return bad("svd.power_iterations", "0..=100", s.power_iterations);
        }
        Ok(())
    }
}

impl Confidence {
    pub(super) fn validate(&self) -> Result<(), JobError> {
        let c = self;
        if let Alpha::Value(a) = c.alpha {
            if !(a.is_finite() && a >= 0.0) {
                return bad("confidence.alpha", "\"auto\" or a finite number >= 0", a);
            }
        }
        if !(c.epsilon.is_finite() && c.epsilon > 0.0) {
            return bad("confidence.epsilon", "a finite number > 0", c.epsilon);
        }
        Ok(())
    }
}

impl Shards {
    pub(super) fn validate(&self) -> Result<(), JobError> {
        if !(1..=65_536).contains(&self.virtual_shards) {
            return bad("shards.virtual", "1..=65536", self.virtual_shards);
        }
        Ok(())
    }
}

impl Input {
    pub(super) fn validate(&self) -> Result<(), JobError> {
        if let Some(m) = self.min_weight {
            if !m.is_finite() {
                return bad("input.min_weight", "a finite number", m);
            }
        }
        if let (Column::Index(u), Column::Index(i)) = (&self.user, &self.item) {
            if u == i {
                return Err(JobError(format!(
                    "input.user and input.item are both column {u}: they must differ"
                )));
            }
        }
        let d = &self.demo;
        if d.users == 0 || d.items == 0 || d.rank == 0 {
            return bad(
                "input.demo",
                "users, items, rank >= 1",
                format!("{}/{}/{}", d.users, d.items, d.rank),
            );
        }
        Ok(())
    }
}

impl Lsh {
    pub(super) fn validate(&self, mode: Mode) -> Result<(), JobError> {
        let l = self;
        if !(1..=64).contains(&l.planes) {
            return bad("lsh.planes", "1..=64", l.planes);
        }
        if l.tables > 1024 {
            return bad("lsh.tables", "0..=1024 (0 = head list only)", l.tables);
        }
        if !(1..=64).contains(&l.norm_bands) {
            return bad("lsh.norm_bands", "1..=64", l.norm_bands);
        }
        if !(0.0..=1.0).contains(&l.target_recall) {
            return bad(
                "lsh.target_recall",
                "0..=1 (0 = sizes as given)",
                l.target_recall,
            );
        }
        if !(l.max_share > 0.0 && l.max_share <= 1.0) {
            return bad(
                "lsh.max_share",
                "a share of the catalogue in (0, 1]",
                l.max_share,
            );
        }
        if l.transform == Transform::Users && !(1..=1_000_000).contains(&l.bucket_items) {
            return bad(
                "lsh.bucket_items",
                "1..=1000000 with transform = \"users\"",
                l.bucket_items,
            );
        }
        // Probes flip bits of item codes; user buckets ignore them (so a small `planes` there
        // does not need `probes` lowered too).
        if l.probes > l.planes && l.transform != Transform::Users {
            return bad("lsh.probes", "0..=lsh.planes", l.probes);
        }
        if mode == Mode::Lsh && l.tables == 0 && l.head == 0 {
            return bad(
                "lsh.tables",
                "at least 1 when lsh.head = 0 (recommend.mode = \"lsh\" would have no candidates)",
                l.tables,
            );
        }
        Ok(())
    }
}

impl Eval {
    pub(super) fn validate(&self) -> Result<(), JobError> {
        let e = self;
        if !(0.0..1.0).contains(&e.holdout) {
            return bad("eval.holdout", "0 <= holdout < 1", e.holdout);
        }
        if e.holdout > 0.0 && e.test.is_some() {
            return Err(JobError(
                "eval.holdout and eval.test are exclusive: set one of them".into(),
            ));
        }
        let ks = e.k.list();
        if ks.is_empty() || ks.iter().any(|k| !(1..=10_000).contains(k)) {
            return bad(
                "eval.k",
                "1..=10000, or a non-empty list of such",
                format!("{ks:?}"),
            );
        }
        Ok(())
    }
}
