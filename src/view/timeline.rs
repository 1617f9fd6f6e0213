//! A run's timeline as grids (docs/runs.md): rows are layers (or one layer's experts), columns
//! the run's checkpoints in step order, cells the [`StepMetric`]s of the deltas there. They are
//! ordinary [`Grid`]s coloured by `Measure::Step`, so the explorer's map widget and the PNG
//! heatmaps draw them as they draw an adapter's.
//!
//! A column of a checkpoint not measured yet holds pending cells (the explorer fills columns as
//! its job measures them); an unreadable checkpoint's column is empty and tagged `unreadable`.
//!
//! A cell gathering several deltas (a layer's targets and experts) holds: ‖ΔW‖_F as the
//! root-sum-square of theirs (the Frobenius norm of all of them together), growth as the change
//! of that since the previous checkpoint, σ₁ as the largest, the ranks and similarities as the
//! mean over the deltas that have one. One non-finite delta makes the cell non-finite.

use super::grid::{Agg, Col, Grid, GridCell, Maxima, StepMetric, Values, VALUES};
use super::text::num;
use crate::adapter::layout::Target;
use crate::run::timeline::{DeltaTimeline, StepStats, Timeline};
use std::collections::BTreeSet;

/// The tag of an unreadable checkpoint's column.
pub const UNREADABLE: &str = "unreadable";

/// The target of a step column that gathers every target.
pub const ALL_TARGETS: &str = "all";

/// What a checkpoint's column holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Measured,
    Pending,
    Unreadable,
}

fn state(tl: &Timeline, i: usize) -> State {
    let c = &tl.checkpoints[i];
    match (&c.error, c.done) {
        (Some(_), _) => State::Unreadable,
        (None, true) => State::Measured,
        (None, false) => State::Pending,
    }
}

/// One column per checkpoint, labelled with its step.
fn step_cols(tl: &Timeline, target: &Target) -> Vec<Col> {
    (0..tl.checkpoints.len())
        .map(|i| Col {
            label: tl.checkpoints[i].step.to_string(),
            tag: (state(tl, i) == State::Unreadable).then_some(UNREADABLE),
            emphasis: false,
            target: target.clone(),
            expert: None,
            agg: Agg::Mean,
            step: Some(tl.checkpoints[i].step),
        })
        .collect()
}

/// The checkpoint growth at `i` is measured against: the nearest readable one before it.
fn previous(tl: &Timeline, i: usize) -> Option<usize> {
    (0..i).rev().find(|&j| state(tl, j) != State::Unreadable)
}

/// A delta's value of each [`StepMetric`] at one step, growth against `prev` (its ‖ΔW‖_F there).
fn step_values(s: &StepStats, prev: Option<f64>) -> Values {
    let mut v = [None; VALUES];
    v[StepMetric::Fro.index()] = s.fro_norm;
    v[StepMetric::Growth.index()] = s.fro_norm.zip(prev).map(|(a, b)| a - b);
    v[StepMetric::Spectral.index()] = s.spectral_norm;
    v[StepMetric::Erank.index()] = s.effective_rank;
    v[StepMetric::E99.index()] = s.energy_rank_99.map(|r| r as f64);
    v[StepMetric::SimilarityPrev.index()] = s.similarity_prev;
    v[StepMetric::SimilarityLast.index()] = s.similarity_last;
    v
}

/// Root-sum-square of the ‖ΔW‖_F of `deltas` at checkpoint `i` (None when none has one).
fn fro_rss(deltas: &[&DeltaTimeline], i: usize) -> Option<f64> {
    let norms: Vec<f64> = deltas.iter().filter_map(|d| d.steps[i].fro_norm).collect();
    (!norms.is_empty()).then(|| norms.iter().map(|x| x * x).sum::<f64>().sqrt())
}

/// The cell of `deltas` at checkpoint `i` (see the module's comment); None where none of them
/// is in the checkpoint or it is unreadable.
fn cell(tl: &Timeline, deltas: &[&DeltaTimeline], i: usize, detail: String) -> Option<GridCell> {
    match state(tl, i) {
        State::Unreadable => return None,
        State::Pending => {
            return Some(GridCell {
                detail: format!("{detail} · not measured yet"),
                pending: [true; VALUES],
                ..GridCell::default()
            })
        }
        State::Measured => {}
    }
    // Deltas of this checkpoint (`finite` is null for a delta the checkpoint lacks).
    let here: Vec<&DeltaTimeline> = deltas
        .iter()
        .copied()
        .filter(|d| d.steps[i].finite.is_some())
        .collect();
    if here.is_empty() {
        return None;
    }
    let prev = previous(tl, i);
    let mut pending = [false; VALUES];
    if prev.is_some_and(|p| state(tl, p) == State::Pending) {
        pending[StepMetric::Growth.index()] = true;
    }
    let per: Vec<(Values, Option<usize>)> = here
        .iter()
        .map(|d| {
            let before = prev.and_then(|p| d.steps[p].fro_norm);
            (step_values(&d.steps[i], before), d.expert)
        })
        .collect();
    let nonfinite = here.iter().find(|d| d.steps[i].finite == Some(false));
    let mut values: Values = [None; VALUES];
    let mut max: Maxima = [None; VALUES];
    if let Some(d) = nonfinite {
        values = [Some(f64::NAN); VALUES];
        max = [Some((f64::NAN, d.expert)); VALUES];
    } else {
        for k in 0..VALUES {
            let vs: Vec<(f64, Option<usize>)> =
                per.iter().filter_map(|(v, e)| Some((v[k]?, *e))).collect();
            max[k] = vs
                .iter()
                .copied()
                .reduce(|a, b| if b.0 > a.0 { b } else { a });
            if vs.is_empty() {
                continue;
            }
            let mean = vs.iter().map(|x| x.0).sum::<f64>() / vs.len() as f64;
            values[k] = match StepMetric::ALL[k] {
                StepMetric::Fro => fro_rss(&here, i),
                StepMetric::Growth => {
                    let before = prev.and_then(|p| fro_rss(&here, p));
                    fro_rss(&here, i).zip(before).map(|(a, b)| a - b)
                }
                StepMetric::Spectral => max[k].map(|m| m.0),
                _ => Some(mean),
            };
        }
    }
    if pending[StepMetric::Growth.index()] {
        values[StepMetric::Growth.index()] = None;
        max[StepMetric::Growth.index()] = None;
    }
    let fro = values[StepMetric::Fro.index()].map_or("-".into(), num);
    let loss = tl.checkpoints[i]
        .loss
        .map_or(String::new(), |l| format!(" · loss {}", num(l)));
    let how = if here.len() > 1 {
        format!(
            " (root-sum-square of {} deltas; σ₁ the largest, ranks and similarities the mean)",
            here.len()
        )
    } else {
        String::new()
    };
    Some(GridCell {
        text: String::new(),
        values,
        max,
        detail: format!("{detail} · ‖ΔW‖_F {fro}{how}{loss}"),
        mark: None,
        pending,
    })
}

/// How a cell of [`layer_step_grid`] gathers a layer's deltas for `m`, in a few words.
pub fn aggregation(m: StepMetric) -> &'static str {
    match m {
        StepMetric::Fro => "root-sum-square over the layer's deltas",
        StepMetric::Growth => "change of the root-sum-square since the previous checkpoint",
        StepMetric::Spectral => "the largest of the layer's deltas",
        _ => "mean over the layer's deltas",
    }
}

/// One delta's value of `m` at every checkpoint, as its cell of [`expert_step_grid`] holds it:
/// None where it has no finite value (not measured, unreadable, absent, non-finite).
pub fn delta_series(tl: &Timeline, d: &DeltaTimeline, m: StepMetric) -> Vec<Option<f64>> {
    (0..tl.checkpoints.len())
        .map(|i| {
            let c = cell(tl, &[d], i, String::new())?;
            c.values[m.index()].filter(|v| v.is_finite() && !c.pending[m.index()])
        })
        .collect()
}

fn layer_label(l: Option<usize>) -> String {
    l.map_or("-".into(), |l| l.to_string())
}

/// The targets of `deltas`, named in a detail line: `q_proj, gate_up_proj × 32 experts`.
fn targets_named(deltas: &[&DeltaTimeline]) -> String {
    let ts: BTreeSet<&Target> = deltas.iter().map(|d| &d.target).collect();
    ts.into_iter()
        .map(|t| {
            let n = deltas
                .iter()
                .filter(|d| d.target == *t && d.expert.is_some())
                .count();
            match n {
                0 => t.to_string(),
                n => format!("{t} × {n} experts"),
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Layers × steps: a cell holds the layer's deltas of `target` (every target when None) at that
/// checkpoint, gathered as the module's comment says.
pub fn layer_step_grid(tl: &Timeline, target: Option<&str>) -> Grid {
    let mine: Vec<&DeltaTimeline> = tl
        .deltas
        .iter()
        .filter(|d| target.is_none_or(|t| d.target == t))
        .collect();
    let rows = super::grid::rows_of(mine.iter().map(|d| d.layer));
    let col_target = Target::parse(target.unwrap_or(ALL_TARGETS));
    let cols = step_cols(tl, &col_target);
    let mut cells = Vec::with_capacity(rows.len() * cols.len());
    for &l in &rows {
        let here: Vec<&DeltaTimeline> = mine.iter().copied().filter(|d| d.layer == l).collect();
        let what = targets_named(&here);
        for (i, c) in tl.checkpoints.iter().enumerate() {
            let detail = format!("layer {} · step {} · {what}", layer_label(l), c.step);
            cells.push(cell(tl, &here, i, detail));
        }
    }
    Grid {
        title: format!("layers × steps ({})", target.unwrap_or("all targets")),
        rows: rows.iter().map(|&l| layer_label(l)).collect(),
        row_layers: rows,
        cols,
        cells,
    }
}

/// Experts × steps of one layer's `target`: a row per expert present (`all` for a LoRA shared by
/// every expert), one delta per cell. Every row's layer is `layer`.
pub fn expert_step_grid(tl: &Timeline, layer: Option<usize>, target: &str) -> Grid {
    let mine: Vec<&DeltaTimeline> = tl
        .deltas
        .iter()
        .filter(|d| d.layer == layer && d.target == target && d.expert.is_some())
        .collect();
    let experts: BTreeSet<Option<usize>> = mine.iter().map(|d| d.expert).collect();
    let cols = step_cols(tl, &Target::parse(target));
    let mut cells = Vec::with_capacity(experts.len() * cols.len());
    for &e in &experts {
        let here: Vec<&DeltaTimeline> = mine.iter().copied().filter(|d| d.expert == e).collect();
        for (i, c) in tl.checkpoints.iter().enumerate() {
            let detail = format!(
                "layer {} · {target} · expert {} · step {}",
                layer_label(layer),
                e.map_or("all (shared)".into(), |e| e.to_string()),
                c.step
            );
            cells.push(cell(tl, &here, i, detail));
        }
    }
    Grid {
        title: format!("{target} at layer {}: experts × steps", layer_label(layer)),
        rows: experts
            .iter()
            .map(|e| e.map_or("all".into(), |e| e.to_string()))
            .collect(),
        row_layers: vec![layer; experts.len()],
        cols,
        cells,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapter::checkpoint::Scheme;
    use crate::run::timeline::CheckpointRow;
    use crate::view::grid::{CellKind, Measure, ScaleKind};

    fn row(step: u64, done: bool, error: Option<&str>) -> CheckpointRow {
        CheckpointRow {
            step,
            id: format!("checkpoint-{step}"),
            path: String::new(),
            loss: Some(1.0 / step as f64),
            learning_rate: None,
            grad_norm: None,
            error: error.map(String::from),
            cached: false,
            done,
        }
    }

    /// A delta's step with ‖ΔW‖_F `fro`, σ₁ = fro / 2, erank `e`, e99 `r`, similarities `s`.
    fn at(step: u64, fro: f64, e: f64, r: usize, s: Option<f64>) -> StepStats {
        StepStats {
            step,
            fro_norm: Some(fro),
            spectral_norm: Some(fro / 2.0),
            effective_rank: Some(e),
            energy_rank_99: Some(r),
            similarity_prev: s,
            similarity_last: s.map(|s| s / 2.0),
            dead: Some(fro == 0.0),
            finite: Some(true),
        }
    }

    /// A step the timeline has no value for (pending, unreadable, or a delta not there).
    fn none(step: u64) -> StepStats {
        StepStats {
            step,
            fro_norm: None,
            spectral_norm: None,
            effective_rank: None,
            energy_rank_99: None,
            similarity_prev: None,
            similarity_last: None,
            dead: None,
            finite: None,
        }
    }

    fn delta(
        layer: usize,
        target: &str,
        expert: Option<usize>,
        steps: Vec<StepStats>,
    ) -> DeltaTimeline {
        DeltaTimeline {
            layer: Some(layer),
            target: Target::parse(target),
            expert,
            steps,
        }
    }

    /// Steps 100 (measured), 200 (unreadable), 300 (measured), 400 (not measured yet). Layer 0:
    /// q_proj and two experts of gate_up_proj; layer 1: q_proj only, non-finite at 300.
    fn timeline() -> Timeline {
        let nan = StepStats {
            fro_norm: None,
            spectral_norm: None,
            effective_rank: None,
            energy_rank_99: None,
            finite: Some(false),
            dead: Some(false),
            ..none(300)
        };
        Timeline {
            run: "r".into(),
            path: "/r".into(),
            scheme: Scheme::Trainer,
            checkpoints: vec![
                row(100, true, None),
                row(200, false, Some("header is corrupt")),
                row(300, true, None),
                row(400, false, None),
            ],
            deltas: vec![
                delta(
                    0,
                    "q_proj",
                    None,
                    vec![
                        at(100, 3.0, 2.0, 2, None),
                        none(200),
                        at(300, 6.0, 4.0, 4, Some(0.8)),
                        none(400),
                    ],
                ),
                delta(
                    0,
                    "gate_up_proj",
                    Some(0),
                    vec![
                        at(100, 4.0, 1.0, 1, None),
                        none(200),
                        at(300, 8.0, 2.0, 1, Some(0.4)),
                        none(400),
                    ],
                ),
                delta(
                    0,
                    "gate_up_proj",
                    Some(5),
                    vec![
                        at(100, 0.0, 0.0, 0, None),
                        none(200),
                        at(300, 1.0, 3.0, 3, None),
                        none(400),
                    ],
                ),
                delta(
                    1,
                    "q_proj",
                    None,
                    vec![at(100, 2.0, 1.5, 2, None), none(200), nan, none(400)],
                ),
            ],
            groups: vec![],
        }
    }

    fn value(g: &Grid, r: usize, c: usize, m: StepMetric) -> CellKind {
        g.kind(r, c, m.index())
    }

    #[test]
    fn layer_cells_gather_a_layers_deltas() {
        let tl = timeline();
        let g = layer_step_grid(&tl, None);
        assert_eq!(g.rows, ["0", "1"]);
        assert_eq!(g.row_layers, [Some(0), Some(1)]);
        let labels: Vec<Vec<&str>> = g.cols.iter().map(Col::lines).collect();
        assert_eq!(
            labels,
            [
                vec!["100"],
                vec!["200", UNREADABLE],
                vec!["300"],
                vec!["400"]
            ]
        );
        assert_eq!(g.cols[2].step, Some(300));
        // Layer 0 at step 100: √(3² + 4² + 0²) = 5; σ₁ the largest (2); ranks the mean.
        assert_eq!(value(&g, 0, 0, StepMetric::Fro), CellKind::Value(5.0));
        assert_eq!(value(&g, 0, 0, StepMetric::Spectral), CellKind::Value(2.0));
        assert_eq!(value(&g, 0, 0, StepMetric::Erank), CellKind::Value(1.0));
        assert_eq!(value(&g, 0, 0, StepMetric::E99), CellKind::Value(1.0));
        // The first checkpoint has nothing to grow from nor to compare with.
        assert_eq!(value(&g, 0, 0, StepMetric::Growth), CellKind::Present);
        assert_eq!(
            value(&g, 0, 0, StepMetric::SimilarityPrev),
            CellKind::Present
        );
        // The unreadable checkpoint's column is empty, never a crash or a zero.
        assert_eq!(value(&g, 0, 1, StepMetric::Fro), CellKind::Empty);
        assert_eq!(value(&g, 1, 1, StepMetric::Fro), CellKind::Empty);
        // Step 300: √(36 + 64 + 1) and growth against step 100 (the readable one before).
        let fro = 101f64.sqrt();
        assert_eq!(value(&g, 0, 2, StepMetric::Fro), CellKind::Value(fro));
        assert_eq!(
            value(&g, 0, 2, StepMetric::Growth),
            CellKind::Value(fro - 5.0)
        );
        assert_eq!(value(&g, 0, 2, StepMetric::Spectral), CellKind::Value(4.0));
        assert_eq!(value(&g, 0, 2, StepMetric::Erank), CellKind::Value(3.0));
        assert_eq!(value(&g, 0, 2, StepMetric::E99), CellKind::Value(8.0 / 3.0));
        // Similarities: the mean over the deltas that have one (0.8 and 0.4).
        assert_eq!(
            value(&g, 0, 2, StepMetric::SimilarityPrev),
            CellKind::Value(0.6000000000000001)
        );
        assert_eq!(
            value(&g, 0, 2, StepMetric::SimilarityLast),
            CellKind::Value(0.30000000000000004)
        );
        // The largest delta's growth belongs to expert 0 (8 − 4).
        let c = g.cell(0, 2).unwrap();
        assert_eq!(c.max[StepMetric::Growth.index()], Some((4.0, Some(0))));
        assert!(c.detail.contains("step 300"), "{}", c.detail);
        assert!(
            c.detail.contains("gate_up_proj × 2 experts"),
            "{}",
            c.detail
        );
        // A non-finite delta makes its cell non-finite.
        assert_eq!(value(&g, 1, 2, StepMetric::Fro), CellKind::NonFinite);
        assert_eq!(value(&g, 1, 0, StepMetric::Fro), CellKind::Value(2.0));
        // Step 400 is still to be measured: pending, with a detail saying so.
        for m in StepMetric::ALL {
            assert_eq!(value(&g, 0, 3, m), CellKind::Pending);
        }
        assert!(g.cell(0, 3).unwrap().detail.ends_with("not measured yet"));
    }

    #[test]
    fn a_target_narrows_the_layer_cells() {
        let tl = timeline();
        let g = layer_step_grid(&tl, Some("gate_up_proj"));
        assert_eq!(g.rows, ["0"]);
        assert_eq!(g.cols[0].target, Target::GateUp);
        assert_eq!(value(&g, 0, 0, StepMetric::Fro), CellKind::Value(4.0));
        assert_eq!(
            value(&g, 0, 2, StepMetric::Fro),
            CellKind::Value(65f64.sqrt())
        );
        assert!(layer_step_grid(&tl, Some("down_proj")).is_empty());
        assert_eq!(
            layer_step_grid(&tl, None).cols[0].target,
            Target::Other("all".into())
        );
    }

    #[test]
    fn expert_rows_hold_one_delta_each() {
        let tl = timeline();
        let g = expert_step_grid(&tl, Some(0), "gate_up_proj");
        assert_eq!(g.rows, ["0", "5"]);
        assert_eq!(g.row_layers, [Some(0), Some(0)]);
        assert_eq!(value(&g, 1, 0, StepMetric::Fro), CellKind::Value(0.0));
        assert_eq!(value(&g, 1, 2, StepMetric::Growth), CellKind::Value(1.0));
        assert_eq!(value(&g, 0, 2, StepMetric::Growth), CellKind::Value(4.0));
        assert_eq!(
            value(&g, 1, 2, StepMetric::SimilarityPrev),
            CellKind::Present
        );
        assert_eq!(value(&g, 0, 1, StepMetric::Fro), CellKind::Empty);
        assert_eq!(value(&g, 0, 3, StepMetric::Fro), CellKind::Pending);
        assert!(g.cell(1, 2).unwrap().detail.contains("expert 5 · step 300"));
        assert!(expert_step_grid(&tl, Some(1), "gate_up_proj").is_empty());
        // A line of one delta: its cells' values, nothing where there is none.
        let e0 = &tl.deltas[1];
        assert_eq!(
            delta_series(&tl, e0, StepMetric::Growth),
            [None, None, Some(4.0), None]
        );
        let q1 = &tl.deltas[3];
        assert_eq!(
            delta_series(&tl, q1, StepMetric::Fro),
            [Some(2.0), None, None, None]
        );
    }

    #[test]
    fn growth_waits_for_the_checkpoint_before_it() {
        let mut tl = timeline();
        // Step 100 not measured yet: step 300's growth is pending, its norm is there.
        tl.checkpoints[0].done = false;
        let g = layer_step_grid(&tl, Some("q_proj"));
        assert_eq!(value(&g, 0, 2, StepMetric::Growth), CellKind::Pending);
        assert_eq!(value(&g, 0, 2, StepMetric::Fro), CellKind::Value(6.0));
    }

    #[test]
    fn step_measures_have_their_scales() {
        let tl = timeline();
        let g = layer_step_grid(&tl, None);
        let s = Measure::Step(StepMetric::SimilarityPrev)
            .scale(&[&g])
            .unwrap();
        assert_eq!((s.lo, s.hi, s.kind), (0.0, 1.0, ScaleKind::Sequential));
        let s = Measure::Step(StepMetric::Growth).scale(&[&g]).unwrap();
        assert_eq!(s.kind, ScaleKind::Diverging);
        assert_eq!((s.lo, s.hi), (-(101f64.sqrt() - 5.0), 101f64.sqrt() - 5.0));
        let s = Measure::Step(StepMetric::Fro).scale(&[&g]).unwrap();
        assert_eq!((s.lo, s.hi), (2.0, 101f64.sqrt()));
        assert!(s.nonfinite);
        assert_eq!(StepMetric::SimilarityLast.next(), StepMetric::Fro);
    }
}
