//! The Run screen's two maps, built from the timeline known so far by `view::timeline`'s
//! builders (the grids `p` exports as they are shown).

use crate::adapter::layout::Target;
use crate::tui::jobs::RunOutput;
use crate::view::grid::Grid;
use crate::view::timeline::{expert_step_grid, layer_step_grid};

/// The maps of a run as shown.
#[derive(Debug, Clone, Default)]
pub struct Maps {
    /// Layers × steps of the chosen target (every target together when none is chosen).
    pub layers: Grid,
    /// Experts × steps of the cursor layer's expert target, with that target: the chosen one
    /// when it is an expert target, else the first expert target of the layer. None when the
    /// layer has no expert LoRA.
    pub experts: Option<(Target, Grid)>,
    /// Some layer of the run has expert LoRA (the expert map has its place, also on layers
    /// without).
    pub has_experts: bool,
}

impl Maps {
    /// The maps of `data` (none before the job's first message) for `target`, with the
    /// expert map of the layer on row `row` of the layer map.
    pub fn build(data: Option<&RunOutput>, target: Option<&Target>, row: usize) -> Maps {
        let Some(d) = data else {
            return Maps::default();
        };
        let tl = &d.timeline;
        let layers = layer_step_grid(tl, target.map(Target::as_str));
        let layer = layers.row_layers.get(row).copied().flatten();
        let mut at_layer: Vec<&Target> = tl
            .deltas
            .iter()
            .filter(|d| layer.is_some() && d.layer == layer && d.expert.is_some())
            .map(|d| &d.target)
            .collect();
        at_layer.sort();
        at_layer.dedup();
        let expert_target = match target {
            Some(t) if t.is_expert() => at_layer.into_iter().find(|x| *x == t),
            _ => at_layer.into_iter().next(),
        };
        let experts = expert_target.map(|t| (t.clone(), expert_step_grid(tl, layer, t.as_str())));
        Maps {
            layers,
            experts,
            has_experts: tl.deltas.iter().any(|d| d.expert.is_some()),
        }
    }
}
