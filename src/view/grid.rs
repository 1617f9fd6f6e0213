//! The one heatmap model: rows (layers, or experts), columns (targets, experts or a run's
//! steps), cells holding a value per metric, one [`Measure`] of what they are coloured by
//! (`view::measure`) and one colour scale per kind with its palette (`view::scale`). The explorer's
//! maps (`tui::ui::heatmap`) and the PNG heatmaps (`plot`) only draw a [`Grid`]; `p` in the
//! explorer hands the grid on screen to the PNG renderer, so both show the same rows, columns,
//! values and colours.
//!
//! Grids are built from [`Entry`]s (one per delta or full tensor) by [`assemble`]: the explorer's
//! builders ([`layer_grid`], [`expert_grid`], [`compare_grid`]) and the figures of `plot` differ
//! only in which rows and columns they ask for. A run's timeline grids (`view::timeline`) put
//! its checkpoints' steps in the columns.

use crate::adapter::layout::{ExpertLayout, Target};
use crate::adapter::Adapter;
use crate::base::merged::MergedReport;
use crate::base::stats::{BaseDeltaStats, BaseReport};
use crate::compute::compare::Comparison;
use crate::compute::stats::{AdapterStats, DeltaStats};
use crate::health::Finding;
use std::collections::{BTreeSet, HashMap};

pub use super::measure::{CompareMetric, Measure, Metric, StepMetric};
pub use super::scale::{
    present_color, ramp, Scale, ScaleKind, NONFINITE, PRESENT, PRESENT_EXPERT, RDYLBU, VIRIDIS,
};

// ---------------------------------------------------------------------------------------------
// The grid

/// How many numbers a cell holds: one per [`Metric`] (the first four are also the
/// [`CompareMetric`]s of pairs; a timeline grid's are the [`StepMetric`]s).
pub const VALUES: usize = 7;

/// The numbers of a cell: the [`Metric`]s of deltas, the [`CompareMetric`]s of pairs, or the
/// [`StepMetric`]s of a run's deltas at one step.
pub type Values = [Option<f64>; VALUES];

/// Per value: not computed yet (a streamed result's first pass), shown as pending.
pub type Pending = [bool; VALUES];

/// The largest value per metric and the expert it belongs to.
pub type Maxima = [Option<(f64, Option<usize>)>; VALUES];

/// One cell of a grid: some LoRA (or a full tensor) sits here.
#[derive(Debug, Clone, Default)]
pub struct GridCell {
    /// Short text for wide cells (`8`, `4×32`, `full`).
    pub text: String,
    /// The column's aggregate (mean or max) over the cell's deltas, per metric; NaN when one
    /// of them is non-finite.
    pub values: Values,
    /// Largest over the cell's deltas, with the expert it belongs to.
    pub max: Maxima,
    /// What a person reads when the cursor is here.
    pub detail: String,
    /// The worst health finding on the cell's deltas ([`mark_findings`]).
    pub mark: Option<Mark>,
    /// Per value: some delta of the cell has it still to come (no partial mean is shown).
    pub pending: Pending,
}

/// A health finding marked on a map cell, ordered from least to most severe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Mark {
    /// ‖ΔW‖_F far above its group (`outlier`).
    Outlier,
    /// ΔW = 0 (`dead`).
    Dead,
    /// NaN/inf in the factors (`non-finite`).
    NonFinite,
}

impl Mark {
    pub const ALL: [Mark; 3] = [Mark::Outlier, Mark::Dead, Mark::NonFinite];

    /// The mark of a finding `code`, for the codes a map shows.
    pub fn of_code(code: &str) -> Option<Mark> {
        use crate::health::code;
        match code {
            code::OUTLIER => Some(Mark::Outlier),
            code::DEAD => Some(Mark::Dead),
            code::NON_FINITE => Some(Mark::NonFinite),
            _ => None,
        }
    }

    /// The glyph drawn in the cell (screen and PNG).
    pub fn glyph(self) -> &'static str {
        match self {
            Mark::Outlier => "▲",
            Mark::Dead => "○",
            Mark::NonFinite => "✕",
        }
    }

    /// The legend's word (the finding's code).
    pub fn label(self) -> &'static str {
        match self {
            Mark::Outlier => "outlier",
            Mark::Dead => "dead",
            Mark::NonFinite => "non-finite",
        }
    }
}

/// Marks every cell holding a delta that a dead, non-finite or outlier finding names (the
/// worst one wins). A finding without a layer (a whole target) or without an expert (a whole
/// group) marks every cell it covers; a cell gathering several experts is marked when one of
/// them is. Findings on fused gate_up mark the gate and up columns of a split layout.
pub fn mark_findings<'a>(g: &mut Grid, findings: impl IntoIterator<Item = &'a Finding>) {
    for f in findings {
        let (Some(mark), Some(t)) = (Mark::of_code(f.code), f.target.as_deref()) else {
            continue;
        };
        let t = Target::parse(t);
        let covers =
            |c: &Target| *c == t || (t == Target::GateUp && matches!(c, Target::Gate | Target::Up));
        let nc = g.cols.len();
        for (i, cell) in g.cells.iter_mut().enumerate() {
            let Some(cell) = cell else { continue };
            let (layer, col) = (g.row_layers[i / nc], &g.cols[i % nc]);
            let expert_ok = match (f.expert, col.expert) {
                (Some(e), Some(ce)) => ce == Some(e),
                _ => true,
            };
            if covers(&col.target) && f.layer.is_none_or(|l| layer == Some(l)) && expert_ok {
                cell.mark = cell.mark.max(Some(mark));
            }
        }
    }
}

impl Grid {
    /// The marks some cell carries, in [`Mark::ALL`] order (the legend's entries).
    pub fn marks(&self) -> Vec<Mark> {
        Mark::ALL
            .into_iter()
            .filter(|m| self.cells.iter().flatten().any(|c| c.mark == Some(*m)))
            .collect()
    }
}

/// What a cell shows for one metric.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CellKind {
    /// No LoRA here.
    Empty,
    /// LoRA here without a value (no statistics yet, a full tensor, not comparable).
    Present,
    /// A value being computed (streamed: the others of the map are there already).
    Pending,
    Value(f64),
    /// A non-finite delta (NaN/inf), never drawn as a value nor as "no LoRA".
    NonFinite,
}

/// How a column gathers its cell's deltas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Agg {
    #[default]
    Mean,
    Max,
}

/// A column: its label and which deltas it gathers.
#[derive(Debug, Clone, PartialEq)]
pub struct Col {
    pub label: String,
    /// A second line under the label in figures (`mean`, `max`, `unreadable`).
    pub tag: Option<&'static str>,
    /// Expert targets stand out.
    pub emphasis: bool,
    /// The column's target; a step column's gathers the grid's deltas, whose target this is
    /// (`Target::Other("all")` when they are every target: `view::timeline`).
    pub target: Target,
    /// None: every delta of the target; Some(e): those of expert e (None: shared by all).
    pub expert: Option<Option<usize>>,
    pub agg: Agg,
    /// The checkpoint's step, for a column of a run's timeline (`view::timeline`); None for
    /// the columns of one adapter.
    pub step: Option<u64>,
}

impl Col {
    /// The label and its tag, one line each.
    pub fn lines(&self) -> Vec<&str> {
        std::iter::once(self.label.as_str())
            .chain(self.tag)
            .collect()
    }
}

/// Rows (layers) × columns of optional cells, in row-major order.
#[derive(Debug, Clone, Default)]
pub struct Grid {
    pub title: String,
    pub rows: Vec<String>,
    pub row_layers: Vec<Option<usize>>,
    pub cols: Vec<Col>,
    pub cells: Vec<Option<GridCell>>,
}

impl Grid {
    pub fn cell(&self, r: usize, c: usize) -> Option<&GridCell> {
        if c >= self.cols.len() {
            return None;
        }
        self.cells.get(r * self.cols.len() + c)?.as_ref()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty() || self.cols.is_empty()
    }

    /// What cell (r, c) shows for value `k`.
    pub fn kind(&self, r: usize, c: usize, k: usize) -> CellKind {
        match self.cell(r, c) {
            None => CellKind::Empty,
            Some(x) if x.pending[k] => CellKind::Pending,
            Some(x) => match x.values[k] {
                None => CellKind::Present,
                Some(v) if v.is_finite() => CellKind::Value(v),
                Some(_) => CellKind::NonFinite,
            },
        }
    }

    /// Whether some cell's value `k` is still to come.
    pub fn has_pending(&self, k: usize) -> bool {
        self.cells.iter().flatten().any(|c| c.pending[k])
    }

    /// The finite values of the given metrics.
    pub fn finite<'a>(&'a self, metrics: &'a [usize]) -> impl Iterator<Item = f64> + 'a {
        self.cells
            .iter()
            .flatten()
            .flat_map(move |c| metrics.iter().filter_map(move |&m| c.values[m]))
            .filter(|v| v.is_finite())
    }

    /// Whether a cell holds a non-finite value of one of the given metrics.
    pub fn has_nonfinite(&self, metrics: &[usize]) -> bool {
        self.cells.iter().flatten().any(|c| {
            metrics
                .iter()
                .any(|&m| c.values[m].is_some_and(|v| !v.is_finite()))
        })
    }

    /// Smallest and largest value of the given metrics over all cells.
    pub fn range(&self, metrics: &[usize]) -> Option<(f64, f64)> {
        self.finite(metrics).fold(None, |r, v| {
            Some(r.map_or((v, v), |(lo, hi): (f64, f64)| (lo.min(v), hi.max(v))))
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Building grids

/// One delta (or full tensor, or matched pair) to place on a grid, with its values.
#[derive(Debug, Clone)]
pub struct Entry<'a> {
    pub layer: Option<usize>,
    pub target: &'a Target,
    pub expert: Option<usize>,
    pub values: Values,
    /// Values still to come (streamed base statistics).
    pub pending: Pending,
}

/// A delta's [`Metric`] values; all NaN for a non-finite delta (drawn as such, never as "no
/// LoRA"); the base metrics are None (no base) until `with_base` fills them.
pub fn delta_values(d: &DeltaStats) -> Values {
    Metric::ALL.map(|m| {
        if m.needs_base() {
            None
        } else {
            Some(if d.finite { m.of(d) } else { f64::NAN })
        }
    })
}

/// `values` with the base metrics of `b` (None where the base lacks the weight).
pub fn with_base(mut values: Values, b: &BaseDeltaStats) -> Values {
    for m in Metric::BASE {
        values[m.index()] = m.of_base(b);
    }
    values
}

/// Which base metrics of `b` are still to come.
pub fn base_pending(b: &BaseDeltaStats) -> Pending {
    Metric::ALL.map(|m| m.pending_in(b))
}

/// The deltas of `st` (at `layer`, if given) with their [`Metric`] values.
pub fn delta_entries(st: &AdapterStats, layer: Option<usize>) -> Vec<Entry<'_>> {
    delta_entries_with(st, None, layer)
}

/// `delta_entries` with the base metrics of `base` (computed for the same deltas, in order).
pub fn delta_entries_with<'a>(
    st: &'a AdapterStats,
    base: Option<&BaseReport>,
    layer: Option<usize>,
) -> Vec<Entry<'a>> {
    st.deltas
        .iter()
        .enumerate()
        .filter(|(_, d)| layer.is_none_or(|l| d.layer == Some(l)))
        .map(|(i, d)| Entry {
            layer: d.layer,
            target: &d.target,
            expert: d.expert,
            values: match base.and_then(|b| b.deltas.get(i)) {
                Some(b) => with_base(delta_values(d), b),
                None => delta_values(d),
            },
            pending: base
                .and_then(|b| b.deltas.get(i))
                .map_or([false; VALUES], base_pending),
        })
        .collect()
}

/// The matched pairs of `c` (at `layer`, if given) with their [`CompareMetric`] values: NaN
/// where a side is non-finite, None where there is no number (zero delta, other shapes).
pub fn pair_entries(c: &Comparison, layer: Option<usize>) -> Vec<Entry<'_>> {
    let side = |finite: bool, v: Option<f64>| if finite { v } else { Some(f64::NAN) };
    c.pairs
        .iter()
        .filter(|p| layer.is_none_or(|l| p.layer == Some(l)))
        .map(|p| {
            let both = p.finite_a && p.finite_b;
            Entry {
                layer: p.layer,
                target: &p.target,
                expert: p.expert,
                values: [
                    side(both, p.cosine.filter(|v| v.is_finite())),
                    side(both, p.subspace_similarity.filter(|v| v.is_finite())),
                    side(p.finite_a, p.fro_norm_a),
                    side(p.finite_b, p.fro_norm_b),
                    None,
                    None,
                    None,
                ],
                pending: [false; VALUES],
            }
        })
        .collect()
}

/// Rows: every layer index present, ascending, then "no layer". Indices come from tensor names
/// and may be huge (4e9, usize::MAX): the layers present, never 0..=max.
pub fn rows_of(layers: impl IntoIterator<Item = Option<usize>>) -> Vec<Option<usize>> {
    let set: BTreeSet<(bool, Option<usize>)> =
        layers.into_iter().map(|l| (l.is_none(), l)).collect();
    set.into_iter().map(|(_, l)| l).collect()
}

/// Targets present in the model's order, each with "has per-expert deltas".
pub fn targets_of<'a>(items: impl IntoIterator<Item = (&'a Target, bool)>) -> Vec<(Target, bool)> {
    let mut m: std::collections::BTreeMap<&Target, bool> = Default::default();
    for (t, split) in items {
        *m.entry(t).or_default() |= split;
    }
    m.into_iter().map(|(t, split)| (t.clone(), split)).collect()
}

/// How target columns are labelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Labels {
    /// The target's name, one column each (the explorer's layer map).
    Full,
    /// `_proj` omitted, one column each (the explorer's compare map).
    Short,
    /// `_proj` omitted; a target with per-expert deltas is tagged `mean`, and gets a second
    /// column of its largest expert (`max`) when asked (figures of `lorascope plot`).
    Figure { with_max: bool },
}

/// One column per target of `targets` (or only `only`).
pub fn target_cols(targets: &[(Target, bool)], only: Option<&str>, labels: Labels) -> Vec<Col> {
    let mut cols = vec![];
    for (t, split) in targets.iter().filter(|(t, _)| only.is_none_or(|o| t == o)) {
        let col = |agg, tag| Col {
            label: match labels {
                Labels::Full => t.to_string(),
                _ => t.short().to_string(),
            },
            tag,
            emphasis: t.is_expert(),
            target: t.clone(),
            expert: None,
            agg,
            step: None,
        };
        match labels {
            Labels::Figure { with_max } if *split => {
                cols.push(col(Agg::Mean, Some("mean")));
                if with_max {
                    cols.push(col(Agg::Max, Some("max")));
                }
            }
            _ => cols.push(col(Agg::Mean, None)),
        }
    }
    cols
}

/// One column per expert of `target` present (never 0..=max), labelled with the true index;
/// `None` is the LoRA shared by all experts.
pub fn expert_cols(experts: impl IntoIterator<Item = Option<usize>>, target: &Target) -> Vec<Col> {
    let present: BTreeSet<Option<usize>> = experts.into_iter().collect();
    present
        .into_iter()
        .map(|e| Col {
            label: e.map_or("all".into(), |e| e.to_string()),
            tag: None,
            emphasis: false,
            target: target.clone(),
            expert: Some(e),
            agg: Agg::default(),
            step: None,
        })
        .collect()
}

/// The cell text and detail line of a cell, from its layer, column and entries.
pub type Describe<'d> = dyn FnMut(Option<usize>, &Col, &[usize]) -> (String, String) + 'd;

/// Places `entries` on `rows` × `cols`: a cell gathers the entries of its layer, target (and
/// expert) by the column's [`Agg`]; one non-finite entry makes it non-finite. Rows outside any
/// layer are labelled `no_layer`.
pub fn assemble(
    title: String,
    rows: &[Option<usize>],
    no_layer: &str,
    cols: Vec<Col>,
    entries: &[Entry],
    describe: &mut Describe,
) -> Grid {
    let mut by: HashMap<(Option<usize>, &Target), Vec<usize>> = HashMap::new();
    for (i, e) in entries.iter().enumerate() {
        by.entry((e.layer, e.target)).or_default().push(i);
    }
    let mut cells = Vec::with_capacity(rows.len() * cols.len());
    for &l in rows {
        for c in &cols {
            let idx: Vec<usize> = by
                .get(&(l, &c.target))
                .into_iter()
                .flatten()
                .copied()
                .filter(|&i| c.expert.is_none_or(|e| entries[i].expert == e))
                .collect();
            cells.push((!idx.is_empty()).then(|| {
                let (values, max, pending) = aggregate(entries, &idx, c.agg);
                let (text, detail) = describe(l, c, &idx);
                GridCell {
                    text,
                    values,
                    max,
                    detail,
                    mark: None,
                    pending,
                }
            }));
        }
    }
    Grid {
        title,
        rows: rows
            .iter()
            .map(|l| l.map_or_else(|| no_layer.to_string(), |l| l.to_string()))
            .collect(),
        row_layers: rows.to_vec(),
        cols,
        cells,
    }
}

/// Mean (or max) and max over the entries `idx`, per metric; a metric some entry has still to
/// come is pending, without a value (a mean of the others would mislead).
fn aggregate(entries: &[Entry], idx: &[usize], agg: Agg) -> (Values, Maxima, Pending) {
    let mut values = [None; VALUES];
    let mut max = [None; VALUES];
    let mut pending = [false; VALUES];
    for k in 0..VALUES {
        if idx.iter().any(|&i| entries[i].pending[k]) {
            pending[k] = true;
            continue;
        }
        let (mut sum, mut n) = (0.0, 0usize);
        let mut best: Option<(f64, Option<usize>)> = None;
        let mut nonfinite = None;
        for &i in idx {
            let Some(v) = entries[i].values[k] else {
                continue;
            };
            if !v.is_finite() {
                nonfinite.get_or_insert(entries[i].expert);
            }
            sum += v;
            n += 1;
            if best.is_none_or(|(b, _)| v > b) {
                best = Some((v, entries[i].expert));
            }
        }
        if let Some(e) = nonfinite {
            // One non-finite delta makes the cell non-finite (a max would skip its NaN).
            values[k] = Some(f64::NAN);
            max[k] = Some((f64::NAN, e));
        } else if let Some(b) = best {
            values[k] = Some(match agg {
                Agg::Mean => sum / n as f64,
                Agg::Max => b.0,
            });
            max[k] = best;
        }
    }
    (values, max, pending)
}

// ---------------------------------------------------------------------------------------------
// The explorer's grids

/// The adapter's deltas `idx` as entries, with their values once statistics exist, and the
/// base metrics once `base` (computed for every delta of `a`, in order) exists too.
fn adapter_entries<'a>(
    a: &'a Adapter,
    st: Option<&AdapterStats>,
    base: Option<&BaseReport>,
    idx: impl Iterator<Item = usize>,
) -> Vec<Entry<'a>> {
    let per_delta = st.map(|s| s.per_delta(a));
    idx.map(|i| {
        let d = &a.deltas[i];
        let s = per_delta.as_ref().and_then(|p| p[i]);
        let values = s.map_or([None; VALUES], delta_values);
        Entry {
            layer: d.layer,
            target: &d.target,
            expert: d.expert,
            values: match (s, base.and_then(|b| b.deltas.get(i))) {
                (Some(_), Some(b)) => with_base(values, b),
                _ => values,
            },
            pending: match (s, base.and_then(|b| b.deltas.get(i))) {
                (Some(_), Some(b)) => base_pending(b),
                _ => [false; VALUES],
            },
        }
    })
    .collect()
}

fn layer_label(l: Option<usize>) -> String {
    l.map_or("-".into(), |l| l.to_string())
}

fn num(x: f64) -> String {
    crate::view::text::num(x)
}

/// Layers × targets: where LoRA sits and its rank; values once statistics exist (the base
/// metrics once `base` exists).
pub fn layer_grid(a: &Adapter, st: Option<&AdapterStats>, base: Option<&BaseReport>) -> Grid {
    let nd = a.deltas.len();
    let mut entries = adapter_entries(a, st, base, 0..nd);
    // Full tensors (router, merged weights) after the deltas: a cell, never a value.
    entries.extend(a.full.iter().map(|f| Entry {
        layer: f.layer,
        target: &f.target,
        expert: None,
        values: [None; VALUES],
        pending: [false; VALUES],
    }));
    let rows = rows_of(entries.iter().map(|e| e.layer));
    let targets = targets_of(entries.iter().map(|e| (e.target, false)));
    let cols = target_cols(&targets, None, Labels::Full);
    let mut describe = |l: Option<usize>, c: &Col, idx: &[usize]| {
        let t = &c.target;
        let deltas: Vec<usize> = idx.iter().copied().filter(|&i| i < nd).collect();
        let Some(d) = deltas.first().map(|&i| &a.deltas[i]) else {
            return (
                "full".into(),
                format!(
                    "layer {} · {t} · full tensor (modules_to_save or merged weights), not a delta",
                    layer_label(l)
                ),
            );
        };
        let text = match (deltas.len(), d.expert_layout) {
            (1, Some(ExpertLayout::Shared3d)) => format!("{} sh", d.rank),
            (1, _) => d.rank.to_string(),
            (n, _) => format!("{}×{n}", d.rank),
        };
        let what = match deltas.len() {
            1 if d.expert_layout == Some(ExpertLayout::Shared3d) => {
                format!("r {} shared by all experts", d.rank)
            }
            1 => format!("r {}", d.rank),
            n => format!("r {} × {n} experts", d.rank),
        };
        let detail = format!(
            "layer {} · {t} · {what} · s {} · {}×{}",
            layer_label(l),
            num(d.scale),
            d.out_dim,
            d.in_dim
        );
        (text, detail)
    };
    assemble(
        "layers × targets".into(),
        &rows,
        "-",
        cols,
        &entries,
        &mut describe,
    )
}

/// The targets whose deltas are per expert (or shared by all experts), in table order.
pub fn expert_targets(a: &Adapter) -> Vec<Target> {
    targets_of(
        a.deltas
            .iter()
            .filter(|d| d.expert_layout.is_some())
            .map(|d| (&d.target, true)),
    )
    .into_iter()
    .map(|(t, _)| t)
    .collect()
}

/// Layers × experts of one expert target: the layers that have its expert LoRA.
pub fn expert_grid(
    a: &Adapter,
    target: &Target,
    st: Option<&AdapterStats>,
    base: Option<&BaseReport>,
) -> Grid {
    let mine: Vec<usize> = (0..a.deltas.len())
        .filter(|&i| a.deltas[i].target == *target && a.deltas[i].expert_layout.is_some())
        .collect();
    let entries = adapter_entries(a, st, base, mine.iter().copied());
    let rows = rows_of(entries.iter().map(|e| e.layer));
    let cols = expert_cols(entries.iter().map(|e| e.expert), target);
    let mut describe = |l: Option<usize>, c: &Col, idx: &[usize]| {
        let d = &a.deltas[mine[idx[0]]];
        let detail = format!(
            "layer {} · {target} · expert {} · r {} · s {}",
            layer_label(l),
            c.expert
                .flatten()
                .map_or("all (shared)".into(), |e| e.to_string()),
            d.rank,
            num(d.scale)
        );
        (String::new(), detail)
    };
    assemble(
        format!("{target}: layers × experts"),
        &rows,
        "-",
        cols,
        &entries,
        &mut describe,
    )
}

/// A merged model's weights minus its base's, with the [`Metric`]s they have: the norms,
/// ranks and relative change of W_merged − W_base (no amplification or alignment: no factors).
fn merged_entries(m: &MergedReport) -> Vec<Entry<'_>> {
    m.weights
        .iter()
        .map(|w| {
            let finite = w.fro_norm.is_finite();
            let v = |x: f64| Some(if finite { x } else { f64::NAN });
            Entry {
                layer: Some(w.layer),
                target: &w.target,
                expert: w.expert,
                values: [
                    v(w.fro_norm),
                    v(w.spectral_norm),
                    v(w.effective_rank),
                    v(w.stable_rank),
                    w.relative_change,
                    None,
                    None,
                ],
                pending: [false; VALUES],
            }
        })
        .collect()
}

/// What a cell of merged weights says: its weights' shape and storage, and whether the ranks
/// come from the top of the spectrum only.
fn merged_detail(m: &MergedReport, l: Option<usize>, c: &Col, idx: &[usize]) -> String {
    let w = &m.weights[idx[0]];
    let what = match (idx.len(), c.expert.flatten().or(w.expert)) {
        (1, Some(e)) => format!("expert {e}"),
        (1, None) => "one weight".to_string(),
        (n, _) => {
            let changed = idx
                .iter()
                .filter(|&&i| m.weights[i].fro_norm != 0.0)
                .count();
            format!("{n} experts, {changed} changed")
        }
    };
    let approx = if idx.iter().any(|&i| m.weights[i].approximate) {
        " · ~ ranks from the top 64 σ"
    } else {
        ""
    };
    format!(
        "layer {} · {} · merged − base · {what} · {}×{} {}/{}{approx}",
        layer_label(l),
        c.target,
        w.shape[0],
        w.shape[1],
        w.merged_storage,
        w.base_storage
    )
}

/// Layers × targets of a merged model minus its base (experts: the mean over the layer's).
pub fn merged_layer_grid(m: &MergedReport) -> Grid {
    let entries = merged_entries(m);
    let rows = rows_of(entries.iter().map(|e| e.layer));
    let targets = targets_of(entries.iter().map(|e| (e.target, false)));
    let cols = target_cols(&targets, None, Labels::Full);
    let mut describe = |l: Option<usize>, c: &Col, idx: &[usize]| {
        let text = match idx.len() {
            1 => "Δ".to_string(),
            n => format!("Δ×{n}"),
        };
        (text, merged_detail(m, l, c, idx))
    };
    assemble(
        "layers × targets (merged − base)".into(),
        &rows,
        "-",
        cols,
        &entries,
        &mut describe,
    )
}

/// The targets of a merged model's expert weights, in table order.
pub fn merged_expert_targets(m: &MergedReport) -> Vec<Target> {
    targets_of(
        m.weights
            .iter()
            .filter(|w| w.expert.is_some())
            .map(|w| (&w.target, true)),
    )
    .into_iter()
    .map(|(t, _)| t)
    .collect()
}

/// Layers × experts of one expert target of a merged model minus its base.
pub fn merged_expert_grid(m: &MergedReport, target: &Target) -> Grid {
    let entries: Vec<Entry> = merged_entries(m)
        .into_iter()
        .filter(|e| e.target == target && e.expert.is_some())
        .collect();
    let mine: Vec<usize> = (0..m.weights.len())
        .filter(|&i| m.weights[i].target == *target && m.weights[i].expert.is_some())
        .collect();
    let rows = rows_of(entries.iter().map(|e| e.layer));
    let cols = expert_cols(entries.iter().map(|e| e.expert), target);
    let mut describe = |l: Option<usize>, c: &Col, idx: &[usize]| {
        let idx: Vec<usize> = idx.iter().map(|&i| mine[i]).collect();
        (String::new(), merged_detail(m, l, c, &idx))
    };
    assemble(
        format!("{target}: layers × experts (merged − base)"),
        &rows,
        "-",
        cols,
        &entries,
        &mut describe,
    )
}

/// Layers × targets of the matched pairs of a comparison, means over experts.
pub fn compare_grid(c: &Comparison) -> Grid {
    let entries = pair_entries(c, None);
    let rows = rows_of(entries.iter().map(|e| e.layer));
    let targets = targets_of(entries.iter().map(|e| (e.target, false)));
    // Short names (`q`, `gate_up`): three maps share the screen here.
    let cols = target_cols(&targets, None, Labels::Short);
    let mut describe = |l: Option<usize>, col: &Col, idx: &[usize]| {
        let experts = if idx.len() > 1 {
            format!(" · mean over {} experts", idx.len())
        } else {
            String::new()
        };
        let note = idx
            .iter()
            .find_map(|&i| c.pairs[i].note.clone())
            .map_or(String::new(), |n| format!(" · {n}"));
        (
            String::new(),
            format!("layer {} · {}{experts}{note}", layer_label(l), col.target),
        )
    };
    assemble(
        "layers × targets (matched deltas)".into(),
        &rows,
        "-",
        cols,
        &entries,
        &mut describe,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(layer: Option<usize>, target: &Target, expert: Option<usize>, v: f64) -> Entry<'_> {
        Entry {
            layer,
            target,
            expert,
            values: [Some(v); VALUES],
            pending: [false; VALUES],
        }
    }

    #[test]
    fn cells_gather_their_entries_and_nan_wins() {
        let (q, down) = (Target::Q, Target::Down);
        let es = [
            entry(Some(1), &down, Some(0), 1.0),
            entry(Some(1), &down, Some(5), 3.0),
            entry(Some(9), &q, None, 2.0),
            entry(Some(9), &down, Some(0), f64::NAN),
            entry(None, &q, None, 4.0),
        ];
        let targets = targets_of(es.iter().map(|e| (e.target, e.expert.is_some())));
        let cols = target_cols(&targets, None, Labels::Figure { with_max: true });
        let labels: Vec<Vec<&str>> = cols.iter().map(Col::lines).collect();
        assert_eq!(
            labels,
            [vec!["q"], vec!["down", "mean"], vec!["down", "max"]]
        );
        let rows = rows_of(es.iter().map(|e| e.layer));
        assert_eq!(rows, [Some(1), Some(9), None]);
        let g = assemble(String::new(), &rows, "none", cols, &es, &mut |_, _, _| {
            Default::default()
        });
        assert_eq!(g.rows, ["1", "9", "none"]);
        assert_eq!(g.kind(0, 0, 0), CellKind::Empty);
        assert_eq!(g.kind(0, 1, 0), CellKind::Value(2.0));
        assert_eq!(g.kind(0, 2, 0), CellKind::Value(3.0));
        assert_eq!(g.cell(0, 1).unwrap().max[0], Some((3.0, Some(5))));
        assert_eq!(g.kind(1, 1, 0), CellKind::NonFinite);
        assert_eq!(g.kind(1, 2, 0), CellKind::NonFinite);
        assert_eq!(g.kind(2, 0, 3), CellKind::Value(4.0));
        let experts = expert_cols(es.iter().map(|e| e.expert), &down);
        let g = assemble(
            String::new(),
            &rows,
            "none",
            experts,
            &es,
            &mut |_, _, _| Default::default(),
        );
        let cols: Vec<&str> = g.cols.iter().map(|c| c.label.as_str()).collect();
        assert_eq!(cols, ["all", "0", "5"]);
        assert_eq!(g.kind(0, 2, 1), CellKind::Value(3.0));
    }

    #[test]
    fn scales_cover_the_values_and_never_fail() {
        assert!(Scale::sequential([f64::NAN]).is_none());
        let s = Scale::sequential([2.0, 2.0]).unwrap();
        assert!(s.lo < 2.0 && s.hi > 2.0);
        assert_eq!(s.color(f64::NAN), VIRIDIS[0]);
        let s = Scale::sequential([1.0, 3.0]).unwrap();
        assert_eq!((s.color(1.0), s.color(3.0)), (VIRIDIS[0], VIRIDIS[7]));
        let c = Scale::fixed(-1.0, 1.0, ScaleKind::Diverging);
        assert_eq!((c.color(-1.0), c.color(5.0)), (RDYLBU[0], RDYLBU[8]));
        assert_eq!(c.color(0.0), RDYLBU[4]);
    }
}
