//! The stats table: its columns, rows, cells and sort keys (own, base and merged statistics).

use crate::base::merged::{MergedDelta, MergedReport};
use crate::base::stats::{BaseDeltaStats, BaseReport, Fields};
use crate::compute::stats::AdapterStats;
use crate::view::grid::Metric;
use crate::view::text;
use std::cmp::Ordering;

/// A column of the stats table (each one sorts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatsColumn {
    Layer,
    Target,
    Expert,
    Rank,
    Scale,
    Fro,
    Spectral,
    ERank,
    SRank,
    /// Against the base model (docs/base.md): shown once its statistics exist.
    Relative,
    Amplification,
    Alignment,
    /// A DoRA adapter's exact update (`BaseDeltaStats::dora`), next to the factored ‖ΔW‖_F
    /// and relative change.
    DoraFro,
    DoraRelative,
}

impl StatsColumn {
    /// The adapter's own columns, always shown.
    pub const ALL: [StatsColumn; 9] = [
        StatsColumn::Layer,
        StatsColumn::Target,
        StatsColumn::Expert,
        StatsColumn::Rank,
        StatsColumn::Scale,
        StatsColumn::Fro,
        StatsColumn::Spectral,
        StatsColumn::ERank,
        StatsColumn::SRank,
    ];

    /// The columns against the base model.
    pub const BASE: [StatsColumn; 3] = [
        StatsColumn::Relative,
        StatsColumn::Amplification,
        StatsColumn::Alignment,
    ];

    /// The columns shown: the adapter's own, then the base ones when the base is there.
    pub fn shown(base: bool) -> Vec<StatsColumn> {
        StatsColumn::shown_with(base, false)
    }

    /// `shown`, with a DoRA adapter's exact-update columns (`dora`, with the base) each after
    /// its factored twin.
    pub fn shown_with(base: bool, dora: bool) -> Vec<StatsColumn> {
        let mut cols = StatsColumn::ALL.to_vec();
        if base {
            cols.extend(StatsColumn::BASE);
            if dora {
                for (after, c) in [
                    (StatsColumn::Fro, StatsColumn::DoraFro),
                    (StatsColumn::Relative, StatsColumn::DoraRelative),
                ] {
                    let i = cols.iter().position(|&x| x == after).unwrap_or(0);
                    cols.insert(i + 1, c);
                }
            }
        }
        cols
    }

    /// The columns of a merged model minus its base: the adapter's own and the relative change.
    pub fn merged() -> Vec<StatsColumn> {
        let mut cols = StatsColumn::ALL.to_vec();
        cols.push(StatsColumn::Relative);
        cols
    }

    /// The base metric of a base column.
    fn metric(self) -> Option<Metric> {
        match self {
            StatsColumn::Relative => Some(Metric::Relative),
            StatsColumn::Amplification => Some(Metric::Amplification),
            StatsColumn::Alignment => Some(Metric::Alignment),
            _ => None,
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            StatsColumn::Layer => "LAYER",
            StatsColumn::Target => "TARGET",
            StatsColumn::Expert => "EXPERT",
            StatsColumn::Rank => "RANK",
            StatsColumn::Scale => "SCALE",
            StatsColumn::Fro => "‖ΔW‖_F",
            StatsColumn::Spectral => "‖ΔW‖₂",
            StatsColumn::ERank => "ERANK",
            StatsColumn::SRank => "SRANK",
            StatsColumn::Relative => "RELATIVE",
            StatsColumn::Amplification => "AMPLIF.",
            StatsColumn::Alignment => "ALIGN",
            StatsColumn::DoraFro => "DORA ‖ΔW‖_F",
            StatsColumn::DoraRelative => "DORA REL.",
        }
    }

    pub fn right(self) -> bool {
        !matches!(self, StatsColumn::Target)
    }
}

/// A row of the stats table: a weight of a merged model minus its base, a delta, or a full
/// tensor (router) after the deltas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatsRow {
    Merged(usize),
    Delta(usize),
    Full(usize),
}

pub fn stats_rows(st: &AdapterStats) -> Vec<StatsRow> {
    StatsData::new(st, None).rows()
}

/// What the Stats table shows: the adapter's statistics, its base statistics (some fields
/// possibly still pending) and, for a merged model, its weights minus its base's.
#[derive(Debug, Clone, Copy)]
pub struct StatsData<'a> {
    pub st: &'a AdapterStats,
    pub base: Option<&'a BaseReport>,
    pub merged: Option<&'a MergedReport>,
}

/// The cell of a value still being computed (streamed base statistics).
pub const PENDING: &str = "…";

/// A base column's value of one delta: still to come, or there (None: no base, or the base
/// lacks the weight).
enum BaseCell {
    Pending,
    Value(Option<f64>),
}

impl<'a> StatsData<'a> {
    pub fn new(st: &'a AdapterStats, base: Option<&'a BaseReport>) -> StatsData<'a> {
        StatsData {
            st,
            base,
            merged: None,
        }
    }

    /// A merged model's weights minus its base's (its own full tensors would mix norms of W
    /// with norms of differences in one column), else the deltas, then the full tensors.
    pub fn rows(&self) -> Vec<StatsRow> {
        if let Some(m) = self.merged {
            return (0..m.weights.len()).map(StatsRow::Merged).collect();
        }
        (0..self.st.deltas.len())
            .map(StatsRow::Delta)
            .chain((0..self.st.full_tensors.len()).map(StatsRow::Full))
            .collect()
    }

    /// A delta's base statistics, as `index` counts the adapter's deltas.
    fn base_of(&self, i: usize) -> Option<&'a BaseDeltaStats> {
        self.base?.deltas.get(self.st.deltas[i].index)
    }

    fn base_cell(&self, row: StatsRow, c: StatsColumn) -> BaseCell {
        let StatsRow::Delta(i) = row else {
            return BaseCell::Value(None);
        };
        let Some(b) = self.base_of(i) else {
            return BaseCell::Value(None);
        };
        // The exact DoRA update is computed with amplification, after the cheap first pass.
        let (pending, v) = match c {
            StatsColumn::DoraFro => (
                b.pending(Fields::Amplification),
                b.dora.as_ref().map(|d| d.fro_norm),
            ),
            StatsColumn::DoraRelative => (
                b.pending(Fields::Amplification),
                b.dora.as_ref().and_then(|d| d.relative_change),
            ),
            _ => match c.metric() {
                Some(m) => (m.pending_in(b), m.of_base(b)),
                None => (false, None),
            },
        };
        if pending {
            BaseCell::Pending
        } else {
            BaseCell::Value(v)
        }
    }

    /// The cell text of a row.
    pub fn cell(&self, row: StatsRow, c: StatsColumn) -> String {
        if let StatsRow::Merged(i) = row {
            return self
                .merged
                .map_or("-".into(), |m| merged_cell(&m.weights[i], c));
        }
        if let StatsRow::Delta(_) = row {
            if c.is_base() {
                return match self.base_cell(row, c) {
                    BaseCell::Pending => PENDING.into(),
                    BaseCell::Value(v) => text::opt(v.map(text::num)),
                };
            }
        }
        stats_cell_own(self.st, row, c)
    }

    fn key(&self, row: StatsRow, c: StatsColumn) -> (Option<f64>, String) {
        if let StatsRow::Merged(i) = row {
            return self
                .merged
                .map_or((None, String::new()), |m| merged_key(&m.weights[i], c));
        }
        if let (StatsRow::Delta(_), true) = (row, c.is_base()) {
            return match self.base_cell(row, c) {
                BaseCell::Pending => (None, String::new()),
                BaseCell::Value(v) => (v, String::new()),
            };
        }
        stats_key_own(self.st, row, c)
    }

    /// Rows in the order of `col` (ascending or not); ties keep the table's natural order.
    pub fn sorted(&self, col: StatsColumn, asc: bool) -> Vec<StatsRow> {
        let mut rows = self.rows();
        rows.sort_by(|&x, &y| {
            let (kx, ky) = (self.key(x, col), self.key(y, col));
            let o =
                kx.0.partial_cmp(&ky.0)
                    .unwrap_or(Ordering::Equal)
                    .then_with(|| kx.1.cmp(&ky.1));
            if asc {
                o
            } else {
                o.reverse()
            }
        });
        rows
    }
}

impl StatsColumn {
    /// Whether the column is set against the base model.
    fn is_base(self) -> bool {
        self.metric().is_some() || matches!(self, StatsColumn::DoraFro | StatsColumn::DoraRelative)
    }
}

/// A merged weight minus its base's, in a column (`~`: ranks from the top of the spectrum).
fn merged_cell(w: &MergedDelta, c: StatsColumn) -> String {
    let mark = if w.approximate { "~" } else { "" };
    match c {
        StatsColumn::Layer => w.layer.to_string(),
        StatsColumn::Target => w.target.to_string(),
        StatsColumn::Expert => text::opt(w.expert),
        StatsColumn::Rank => "full".into(),
        StatsColumn::Fro => text::num(w.fro_norm),
        StatsColumn::Spectral => text::num(w.spectral_norm),
        StatsColumn::ERank => format!("{mark}{:.2}", w.effective_rank),
        StatsColumn::SRank => format!("{:.2}", w.stable_rank),
        StatsColumn::Relative => text::opt(w.relative_change.map(text::num)),
        _ => "-".into(),
    }
}

fn merged_key(w: &MergedDelta, c: StatsColumn) -> (Option<f64>, String) {
    let num = |v: f64| (Some(v), String::new());
    match c {
        StatsColumn::Layer => num(w.layer as f64),
        StatsColumn::Target => (Some(w.target.order() as f64), w.target.to_string()),
        StatsColumn::Expert => (w.expert.map(|x| x as f64), String::new()),
        StatsColumn::Fro => num(w.fro_norm),
        StatsColumn::Spectral => num(w.spectral_norm),
        StatsColumn::ERank => num(w.effective_rank),
        StatsColumn::SRank => num(w.stable_rank),
        StatsColumn::Relative => (w.relative_change, String::new()),
        _ => (None, String::new()),
    }
}

/// The cell text of a stats row; `base` fills the base columns.
pub fn stats_cell(
    st: &AdapterStats,
    base: Option<&BaseReport>,
    row: StatsRow,
    c: StatsColumn,
) -> String {
    StatsData::new(st, base).cell(row, c)
}

/// The cell text of a delta or full-tensor row in the adapter's own columns.
fn stats_cell_own(st: &AdapterStats, row: StatsRow, c: StatsColumn) -> String {
    match row {
        StatsRow::Merged(_) => "-".into(),
        StatsRow::Delta(i) => {
            let d = &st.deltas[i];
            match c {
                StatsColumn::Layer => text::opt(d.layer),
                StatsColumn::Target => d.target.to_string(),
                StatsColumn::Expert => text::opt(d.expert),
                StatsColumn::Rank => d.rank.to_string(),
                StatsColumn::Scale => text::num(d.scale),
                StatsColumn::Fro => text::num(d.fro_norm),
                StatsColumn::Spectral => text::num(d.spectral_norm),
                // NaN would print as a number-like "NaN": Fro and Spectral say non-finite.
                StatsColumn::ERank if !d.finite => "-".into(),
                StatsColumn::SRank if !d.finite => "-".into(),
                StatsColumn::ERank => format!("{:.2}", d.effective_rank),
                StatsColumn::SRank => format!("{:.2}", d.stable_rank),
                // The base columns are `StatsData::cell`'s.
                _ => "-".into(),
            }
        }
        StatsRow::Full(i) => {
            let f = &st.full_tensors[i];
            match c {
                StatsColumn::Layer => text::opt(f.layer),
                StatsColumn::Target => format!("{} (full)", f.target),
                StatsColumn::Rank => "full".into(),
                StatsColumn::Fro => text::num(f.fro_norm),
                StatsColumn::Spectral => text::opt(f.spectral_norm.map(text::num)),
                _ => "-".into(),
            }
        }
    }
}

fn stats_key_own(st: &AdapterStats, row: StatsRow, c: StatsColumn) -> (Option<f64>, String) {
    let num = |v: f64| (Some(v), String::new());
    match row {
        StatsRow::Merged(_) => (None, String::new()),
        StatsRow::Delta(i) => {
            let d = &st.deltas[i];
            match c {
                StatsColumn::Layer => (d.layer.map(|x| x as f64), String::new()),
                StatsColumn::Target => (Some(d.target.order() as f64), d.target.to_string()),
                StatsColumn::Expert => (d.expert.map(|x| x as f64), String::new()),
                StatsColumn::Rank => num(d.rank as f64),
                StatsColumn::Scale => num(d.scale),
                StatsColumn::Fro => num(d.fro_norm),
                StatsColumn::Spectral => num(d.spectral_norm),
                StatsColumn::ERank => num(d.effective_rank),
                StatsColumn::SRank => num(d.stable_rank),
                _ => (None, String::new()),
            }
        }
        StatsRow::Full(i) => {
            let f = &st.full_tensors[i];
            match c {
                StatsColumn::Layer => (f.layer.map(|x| x as f64), String::new()),
                StatsColumn::Target => (Some(f.target.order() as f64), f.target.to_string()),
                StatsColumn::Fro => num(f.fro_norm),
                StatsColumn::Spectral => (f.spectral_norm, String::new()),
                _ => (None, String::new()),
            }
        }
    }
}

/// Rows in the order of `col` (ascending or not); ties keep the table's natural order.
pub fn sort_stats_rows(
    st: &AdapterStats,
    base: Option<&BaseReport>,
    col: StatsColumn,
    asc: bool,
) -> Vec<StatsRow> {
    StatsData::new(st, base).sorted(col, asc)
}
