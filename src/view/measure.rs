//! What a grid's cells are coloured by: the [`Metric`]s of deltas, the [`CompareMetric`]s of
//! matched pairs and the [`StepMetric`]s of a run's timeline, gathered in one [`Measure`] with its
//! label, caption and colour scale.

use super::grid::{Grid, VALUES};
use super::scale::{Scale, ScaleKind};
use crate::base::stats::{BaseDeltaStats, Fields};
use crate::compute::stats::DeltaStats;

/// The per-delta number a map is coloured by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Metric {
    /// Frobenius norm ‖ΔW‖_F.
    #[default]
    Fro,
    /// Spectral norm σ₁.
    Spectral,
    /// Effective rank (Roy–Vetterli).
    Erank,
    /// Stable rank ‖ΔW‖_F² / σ₁².
    Srank,
    /// ‖ΔW‖_F / ‖W‖_F against the base model (docs/base.md).
    Relative,
    /// ‖ΔW‖_F / ‖U_rᵀ W V_r‖_F against the base model.
    Amplification,
    /// Share of ΔW's column space in W's top-r left subspace.
    Alignment,
}

impl Metric {
    pub const ALL: [Metric; 7] = [
        Metric::Fro,
        Metric::Spectral,
        Metric::Erank,
        Metric::Srank,
        Metric::Relative,
        Metric::Amplification,
        Metric::Alignment,
    ];
    /// The adapter's own metrics (no base model needed).
    pub const OWN: [Metric; 4] = [Metric::Fro, Metric::Spectral, Metric::Erank, Metric::Srank];
    /// The metrics against the base model (`base::stats`).
    pub const BASE: [Metric; 3] = [Metric::Relative, Metric::Amplification, Metric::Alignment];
    /// The metrics of a merged model minus its base (`base::merged`): no factors, so no
    /// amplification or alignment.
    pub const MERGED: [Metric; 5] = [
        Metric::Fro,
        Metric::Spectral,
        Metric::Erank,
        Metric::Srank,
        Metric::Relative,
    ];

    /// The short label of map titles and legends.
    pub fn label(self) -> &'static str {
        match self {
            Metric::Fro => "‖ΔW‖_F",
            Metric::Spectral => "‖ΔW‖₂",
            Metric::Erank => "effective rank",
            Metric::Srank => "stable rank",
            Metric::Relative => "‖ΔW‖_F / ‖W‖_F",
            Metric::Amplification => "amplification",
            Metric::Alignment => "alignment with W",
        }
    }

    /// The name a figure's title uses.
    pub fn name(self) -> &'static str {
        match self {
            Metric::Fro => "Frobenius norm ‖ΔW‖_F",
            Metric::Spectral => "spectral norm σ₁",
            Metric::Erank => "effective rank",
            Metric::Srank => "stable rank",
            Metric::Relative => "relative change ‖ΔW‖_F / ‖W‖_F",
            Metric::Amplification => "amplification ‖ΔW‖_F / ‖U_rᵀ W V_r‖_F",
            Metric::Alignment => "alignment with W's top singular subspace",
        }
    }

    /// A colour bar's caption: symbol, meaning and unit.
    pub fn caption(self) -> &'static str {
        match self {
            Metric::Fro => "‖ΔW‖_F, Frobenius norm (weight units)",
            Metric::Spectral => "σ₁ = ‖ΔW‖₂, spectral norm (weight units)",
            Metric::Erank => "effective rank, Roy–Vetterli (count)",
            Metric::Srank => "stable rank ‖ΔW‖_F² / σ₁² (count)",
            Metric::Relative => "‖ΔW‖_F / ‖W‖_F, change relative to the base weight (ratio)",
            Metric::Amplification => "‖ΔW‖_F / ‖U_rᵀ W V_r‖_F, LoRA §7.3 (ratio)",
            Metric::Alignment => "‖U_rᵀ U_ΔW‖_F² / r, share in W's top-r subspace (0 to 1)",
        }
    }

    /// The name on the command line (`--metric`) and in file names.
    pub fn as_str(self) -> &'static str {
        match self {
            Metric::Fro => "fro",
            Metric::Spectral => "spectral",
            Metric::Erank => "erank",
            Metric::Srank => "srank",
            Metric::Relative => "relative",
            Metric::Amplification => "amplification",
            Metric::Alignment => "alignment",
        }
    }

    /// One line of `--help`.
    pub fn help(self) -> &'static str {
        match self {
            Metric::Fro => "Frobenius norm ‖ΔW‖_F",
            Metric::Spectral => "Spectral norm σ₁",
            Metric::Erank => "Effective rank (Roy–Vetterli)",
            Metric::Srank => "Stable rank ‖ΔW‖_F² / σ₁²",
            Metric::Relative => "‖ΔW‖_F / ‖W‖_F against the base model (needs it in the cache)",
            Metric::Amplification => {
                "Amplification of W's directions (LoRA §7.3; needs the base model)"
            }
            Metric::Alignment => "Share of ΔW in W's top singular subspace (needs the base model)",
        }
    }

    /// Where its value sits in a cell's [`Values`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// The next of the adapter's own metrics (`m` without a base model).
    pub fn next(self) -> Metric {
        self.next_with(false)
    }

    /// The next metric, through the base metrics too when the base model is there.
    pub fn next_with(self, base: bool) -> Metric {
        self.next_in(if base { &Metric::ALL } else { &Metric::OWN })
    }

    /// The next metric of `cycle` (its first when this one is not in it).
    pub fn next_in(self, cycle: &[Metric]) -> Metric {
        let i = cycle.iter().position(|m| *m == self);
        i.map_or(cycle[0], |i| cycle[(i + 1) % cycle.len()])
    }

    /// Whether the metric is set against the base model.
    pub fn needs_base(self) -> bool {
        Metric::BASE.contains(&self)
    }

    /// The metric's value for one delta (NaN for a base metric: those come from `BaseReport`).
    pub fn of(self, d: &DeltaStats) -> f64 {
        match self {
            Metric::Fro => d.fro_norm,
            Metric::Spectral => d.spectral_norm,
            Metric::Erank => d.effective_rank,
            Metric::Srank => d.stable_rank,
            Metric::Relative | Metric::Amplification | Metric::Alignment => f64::NAN,
        }
    }

    /// The base statistics a base metric needs (`base::stats::Fields`); None for the
    /// adapter's own metrics.
    pub fn fields(self) -> Option<Fields> {
        match self {
            Metric::Relative => Some(Fields::Relative),
            Metric::Amplification => Some(Fields::Amplification),
            Metric::Alignment => Some(Fields::All),
            _ => None,
        }
    }

    /// Whether a delta's base value of this metric is still to come (a streamed report).
    pub fn pending_in(self, b: &BaseDeltaStats) -> bool {
        self.fields().is_some_and(|f| b.pending(f))
    }

    /// The metric's value in a delta's base statistics (None for the adapter's own metrics,
    /// NaN where the delta or its base weight is not finite, as `delta_values`).
    pub fn of_base(self, b: &BaseDeltaStats) -> Option<f64> {
        if b.nonfinite && self.needs_base() {
            return Some(f64::NAN);
        }
        match self {
            Metric::Relative => b.relative_change,
            Metric::Amplification => b.amplification,
            Metric::Alignment => b.alignment,
            _ => None,
        }
    }
}

/// What a comparison's grid holds per cell, in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareMetric {
    Cosine,
    Subspace,
    NormA,
    NormB,
}

impl CompareMetric {
    pub const ALL: [CompareMetric; 4] = [
        CompareMetric::Cosine,
        CompareMetric::Subspace,
        CompareMetric::NormA,
        CompareMetric::NormB,
    ];

    pub fn label(self) -> &'static str {
        match self {
            CompareMetric::Cosine => "cosine",
            CompareMetric::Subspace => "subspace similarity",
            CompareMetric::NormA => "‖ΔW_A‖_F",
            CompareMetric::NormB => "‖ΔW_B‖_F",
        }
    }

    pub fn caption(self) -> &'static str {
        match self {
            CompareMetric::Cosine => "cosine similarity of ΔW_a and ΔW_b",
            CompareMetric::Subspace => "subspace similarity of ΔW_a and ΔW_b (0 to 1)",
            CompareMetric::NormA => "‖ΔW_a‖_F, Frobenius norm (weight units)",
            CompareMetric::NormB => "‖ΔW_b‖_F, Frobenius norm (weight units)",
        }
    }

    /// The name in file names.
    pub fn as_str(self) -> &'static str {
        match self {
            CompareMetric::Cosine => "cosine",
            CompareMetric::Subspace => "subspace",
            CompareMetric::NormA => "norm-a",
            CompareMetric::NormB => "norm-b",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }

    pub fn next(self) -> CompareMetric {
        CompareMetric::ALL[(self.index() + 1) % 4]
    }

    /// Metrics that share one colour scale (A's and B's norms must be read on the same one).
    pub fn scale_group(self) -> &'static [usize] {
        match self {
            CompareMetric::Cosine => &[0],
            CompareMetric::Subspace => &[1],
            CompareMetric::NormA | CompareMetric::NormB => &[2, 3],
        }
    }
}

/// What a timeline grid (`view::timeline`) holds per cell, in this order: a run's deltas at one
/// checkpoint (docs/runs.md says how a cell gathers several).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StepMetric {
    /// Frobenius norm ‖ΔW‖_F.
    #[default]
    Fro,
    /// ‖ΔW‖_F minus its value at the previous measured checkpoint.
    Growth,
    /// Spectral norm σ₁.
    Spectral,
    /// Effective rank (Roy–Vetterli).
    Erank,
    /// The number of singular values holding 99 % of ‖ΔW‖_F².
    E99,
    /// Subspace similarity of the top singular directions to the previous checkpoint's.
    SimilarityPrev,
    /// Subspace similarity of the top singular directions to the last checkpoint's.
    SimilarityLast,
}

impl StepMetric {
    pub const ALL: [StepMetric; 7] = [
        StepMetric::Fro,
        StepMetric::Growth,
        StepMetric::Spectral,
        StepMetric::Erank,
        StepMetric::E99,
        StepMetric::SimilarityPrev,
        StepMetric::SimilarityLast,
    ];

    /// The short label of map titles and legends.
    pub fn label(self) -> &'static str {
        match self {
            StepMetric::Fro => "‖ΔW‖_F",
            StepMetric::Growth => "growth of ‖ΔW‖_F",
            StepMetric::Spectral => "‖ΔW‖₂",
            StepMetric::Erank => "effective rank",
            StepMetric::E99 => "99 %-energy rank",
            StepMetric::SimilarityPrev => "similarity to previous",
            StepMetric::SimilarityLast => "similarity to last",
        }
    }

    /// The name a figure's title uses.
    pub fn name(self) -> &'static str {
        match self {
            StepMetric::Fro => "Frobenius norm ‖ΔW‖_F",
            StepMetric::Growth => "growth of ‖ΔW‖_F since the previous checkpoint",
            StepMetric::Spectral => "spectral norm σ₁",
            StepMetric::Erank => "effective rank",
            StepMetric::E99 => "99 %-energy rank",
            StepMetric::SimilarityPrev => "subspace similarity to the previous checkpoint",
            StepMetric::SimilarityLast => "subspace similarity to the last checkpoint",
        }
    }

    /// A colour bar's caption: symbol, meaning and unit.
    pub fn caption(self) -> &'static str {
        match self {
            StepMetric::Fro => "‖ΔW‖_F, Frobenius norm (weight units)",
            StepMetric::Growth => "Δ‖ΔW‖_F since the previous checkpoint (weight units)",
            StepMetric::Spectral => "σ₁ = ‖ΔW‖₂, spectral norm (weight units)",
            StepMetric::Erank => "effective rank, Roy–Vetterli (count)",
            StepMetric::E99 => "rank holding 99 % of ‖ΔW‖_F² (count)",
            StepMetric::SimilarityPrev => "subspace similarity to the previous checkpoint (0 to 1)",
            StepMetric::SimilarityLast => "subspace similarity to the last checkpoint (0 to 1)",
        }
    }

    /// The name on the command line (`plot --kind timeline --metric`) and in file names.
    pub fn as_str(self) -> &'static str {
        match self {
            StepMetric::Fro => "fro",
            StepMetric::Growth => "growth",
            StepMetric::Spectral => "spectral",
            StepMetric::Erank => "erank",
            StepMetric::E99 => "e99",
            StepMetric::SimilarityPrev => "similarity",
            StepMetric::SimilarityLast => "similarity-last",
        }
    }

    /// Where its value sits in a cell's [`Values`](super::grid::Values).
    pub fn index(self) -> usize {
        self as usize
    }

    /// The next metric (`m` on a timeline map).
    pub fn next(self) -> StepMetric {
        StepMetric::ALL[(self.index() + 1) % StepMetric::ALL.len()]
    }
}

/// What a grid is coloured by: a metric of deltas, of matched pairs, or of a run's checkpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Measure {
    Delta(Metric),
    Compare(CompareMetric),
    Step(StepMetric),
}

impl Measure {
    /// Where its value sits in a cell's [`Values`](super::grid::Values).
    pub fn index(self) -> usize {
        match self {
            Measure::Delta(m) => m.index(),
            Measure::Compare(m) => m.index(),
            Measure::Step(m) => m.index(),
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Measure::Delta(m) => m.label(),
            Measure::Compare(m) => m.label(),
            Measure::Step(m) => m.label(),
        }
    }

    pub fn caption(self) -> &'static str {
        match self {
            Measure::Delta(m) => m.caption(),
            Measure::Compare(m) => m.caption(),
            Measure::Step(m) => m.caption(),
        }
    }

    /// The value indices read on one scale.
    fn group(self) -> &'static [usize] {
        const ONE: [[usize; 1]; VALUES] = [[0], [1], [2], [3], [4], [5], [6]];
        match self {
            Measure::Delta(_) | Measure::Step(_) => &ONE[self.index()],
            Measure::Compare(m) => m.scale_group(),
        }
    }

    /// The colour scale of this measure, one for all of `grids` (side-by-side panels are read
    /// on one scale): cosines diverge over −1…1, growth diverges around 0 (as far as its largest
    /// change either way), similarities span 0…1, everything else runs from the smallest to the
    /// largest finite value. None when there is nothing to scale.
    pub fn scale(self, grids: &[&Grid]) -> Option<Scale> {
        let values = || grids.iter().flat_map(|g| g.finite(self.group()));
        let s = match self {
            Measure::Compare(CompareMetric::Cosine) => {
                Some(Scale::fixed(-1.0, 1.0, ScaleKind::Diverging))
            }
            Measure::Compare(CompareMetric::Subspace)
            | Measure::Delta(Metric::Alignment)
            | Measure::Step(StepMetric::SimilarityPrev | StepMetric::SimilarityLast) => {
                Some(Scale::fixed(0.0, 1.0, ScaleKind::Sequential))
            }
            Measure::Step(StepMetric::Growth) => Scale::diverging(values()),
            _ => Scale::sequential(values()),
        };
        let k = [self.index()];
        s.map(|s| Scale {
            nonfinite: grids.iter().any(|g| g.has_nonfinite(&k)),
            ..s
        })
    }
}
