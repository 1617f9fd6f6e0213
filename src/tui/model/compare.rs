//! The compare view's model: matched deltas, per-layer norms, the per-target table.

use super::tree::layer_label;
use crate::adapter::layout::{DeltaKey, Target};
use crate::compute::compare::{by_target, Comparison, TargetSummary};
use crate::compute::stats::AdapterStats;
use crate::view::grid::{compare_grid, Grid};
use crate::view::text;
use std::collections::{BTreeMap, BTreeSet};

/// Per-layer ‖ΔW‖ of both adapters: √Σ‖ΔW_i‖²_F over the layer's deltas.
#[derive(Debug, Clone)]
pub struct LayerNorms {
    pub layer: String,
    pub a: Option<f64>,
    pub b: Option<f64>,
}

/// Everything the compare view shows.
#[derive(Debug, Clone)]
pub struct CompareModel {
    pub a: String,
    pub b: String,
    pub matched: usize,
    pub not_comparable: usize,
    pub only_a: String,
    pub only_b: String,
    pub layers: Vec<LayerNorms>,
    pub grid: Grid,
    pub targets: Vec<TargetSummary>,
}

/// `k_proj (layers 0-23), gate_up_proj ×32 experts (layers 0,7)`.
fn describe_keys(keys: &[DeltaKey]) -> String {
    if keys.is_empty() {
        return "nothing".into();
    }
    let mut by: BTreeMap<&Target, (BTreeSet<usize>, BTreeSet<usize>)> = BTreeMap::new();
    for k in keys {
        let e = by.entry(&k.target).or_default();
        if let Some(l) = k.layer {
            e.0.insert(l);
        }
        if let Some(x) = k.expert {
            e.1.insert(x);
        }
    }
    let parts: Vec<String> = by
        .into_iter()
        .map(|(t, (ls, es))| {
            let ls: Vec<usize> = ls.into_iter().collect();
            let experts = if es.is_empty() {
                String::new()
            } else {
                format!(" ×{} experts", es.len())
            };
            format!("{t}{experts} (layers {})", text::layers(&ls))
        })
        .collect();
    format!("{} deltas: {}", keys.len(), parts.join(", "))
}

fn layer_norms(st: &AdapterStats) -> BTreeMap<(bool, Option<usize>), f64> {
    let mut m: BTreeMap<(bool, Option<usize>), f64> = BTreeMap::new();
    for d in &st.deltas {
        *m.entry((d.layer.is_none(), d.layer)).or_default() += d.fro_norm * d.fro_norm;
    }
    m.values_mut().for_each(|v| *v = v.sqrt());
    m
}

/// Builds the compare view's data from a comparison and (when known) both adapters' statistics.
pub fn compare_model(
    c: &Comparison,
    st_a: Option<&AdapterStats>,
    st_b: Option<&AdapterStats>,
) -> CompareModel {
    let (na, nb) = (
        st_a.map(layer_norms).unwrap_or_default(),
        st_b.map(layer_norms).unwrap_or_default(),
    );
    let keys: BTreeSet<(bool, Option<usize>)> = na.keys().chain(nb.keys()).copied().collect();
    let layers = keys
        .into_iter()
        .map(|k| LayerNorms {
            layer: layer_label(k.1),
            a: na.get(&k).copied(),
            b: nb.get(&k).copied(),
        })
        .collect();
    CompareModel {
        a: c.a.clone(),
        b: c.b.clone(),
        matched: c.pairs.len(),
        not_comparable: c.pairs.iter().filter(|p| !p.comparable).count(),
        only_a: describe_keys(&c.only_a),
        only_b: describe_keys(&c.only_b),
        layers,
        grid: compare_grid(c),
        targets: by_target(c),
    }
}
