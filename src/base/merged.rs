//! Merged full weights against their base: the difference W_merged − W_base of every weight
//! both hold (attention, router, each expert's gate_up and down) is that weight's delta. Its
//! Frobenius norm is exact (the difference is formed one weight at a time, each side streamed
//! from its file a stored row at a time, MXFP4 or BF16 alike); its top-64 spectrum comes from a
//! dense SVD when the weight is small and from randomized subspace iteration otherwise, and the
//! effective and stable ranks from it are then marked approximate.

use super::stats::{top_left, DENSE_SVD_MAX};
use super::{tensor_name, Base, Storage, WEIGHT_TARGETS};
use crate::adapter::target::Target;
use crate::compute::stats::{effective_rank, Control, Filter};
use crate::error::Result;
use faer::Mat;
use serde::Serialize;

/// How many singular values of each difference are reported.
pub const TOP: usize = 64;

/// One weight of a merged model set against the same weight of its base.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MergedDelta {
    pub layer: usize,
    pub target: Target,
    pub expert: Option<usize>,
    /// W's (out, in).
    pub shape: [usize; 2],
    /// How each side stores the weight: `mxfp4`, `stacked` (E, in, out) or `dense`.
    pub merged_storage: &'static str,
    pub base_storage: &'static str,
    /// ‖W_merged − W_base‖_F (exact).
    pub fro_norm: f64,
    pub base_fro_norm: f64,
    /// ‖W_merged − W_base‖_F / ‖W_base‖_F (null for a zero base weight).
    pub relative_change: Option<f64>,
    /// σ₁ of the difference.
    pub spectral_norm: f64,
    /// The largest singular values of the difference (up to 64), descending.
    pub singular_values: Vec<f64>,
    pub effective_rank: f64,
    /// ‖ΔW‖_F² / σ₁² (exact Frobenius norm over the σ₁ found).
    pub stable_rank: f64,
    /// The spectrum is the top 64 of randomized subspace iteration, not every σ: the effective
    /// rank (and σ to their convergence) is approximate.
    pub approximate: bool,
}

/// The differences of a merged model's weights from its base's, with what a person should know.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MergedReport {
    pub base: String,
    pub path: String,
    pub notes: Vec<String>,
    /// Weights compared, and how many of them differ from the base at all.
    pub compared: usize,
    pub changed: usize,
    pub weights: Vec<MergedDelta>,
}

fn storage_name(s: &Storage) -> &'static str {
    match s {
        Storage::Dense { .. } => "dense",
        Storage::Mxfp4 { .. } => "mxfp4",
        Storage::Stacked { .. } => "stacked",
    }
}

/// A weight to compare: its layer, target, expert and tensor name.
struct Item {
    layer: usize,
    target: &'static str,
    expert: Option<usize>,
    name: String,
}

/// The weights of `merged` (opened as a model like a base) that `filter` selects, in layer and
/// table order, experts ascending.
fn items(merged: &Base, filter: &Filter) -> Vec<Item> {
    let mut out = vec![];
    for layer in merged.layers() {
        for target in WEIGHT_TARGETS {
            let Some(name) = tensor_name(layer, target) else {
                continue;
            };
            if !merged.has(&name) {
                continue;
            }
            let experts: Vec<Option<usize>> = match merged.experts_of(&name) {
                Some(e) if name.contains(".mlp.experts.") => (0..e).map(Some).collect(),
                _ => vec![None],
            };
            for expert in experts {
                if filter.matches(Some(layer), &Target::parse(target), expert) {
                    out.push(Item {
                        layer,
                        target,
                        expert,
                        name: name.clone(),
                    });
                }
            }
        }
    }
    out
}

/// One weight: the difference formed in place (W_merged, then − W_base), its exact norm and
/// its top spectrum. Err(note) when the base lacks the weight or holds another shape.
fn one(merged: &Base, base: &Base, it: &Item) -> Result<std::result::Result<MergedDelta, String>> {
    let e = it.expert.unwrap_or(0);
    let (sm, out, inn) = match merged.stored(&it.name, e) {
        Ok(x) => x,
        Err(note) => return Ok(Err(note)),
    };
    let (sb, bout, binn) = match base.stored(&it.name, e) {
        Ok(x) => x,
        Err(note) => return Ok(Err(note)),
    };
    if (out, inn) != (bout, binn) {
        return Ok(Err(format!(
            "{}: the merged weight is {out}×{inn}, the base's {bout}×{binn}",
            it.name
        )));
    }
    let weight = |storage| super::Weight {
        storage,
        rows: None,
        out,
        inn,
        transposed: false,
    };
    let (wm, wb) = (weight(sm), weight(sb));
    let mut d = merged.dense(&wm)?;
    base.add_to(&wb, -1.0, &mut d)?;
    let fro = frobenius(&d);
    let base_fro = base.fro_sq(&wb)?.sqrt();
    let small = out.min(inn) <= DENSE_SVD_MAX;
    let (sigma, all) = if fro == 0.0 || !fro.is_finite() {
        (vec![], vec![])
    } else if small {
        // Every σ from a dense SVD: the ranks are exact, the report keeps the top 64.
        let all = top_left(d.as_ref(), out.min(inn)).sigma;
        (all.iter().copied().take(TOP).collect(), all)
    } else {
        let top = top_left(d.as_ref(), TOP).sigma;
        (top.clone(), top)
    };
    let s1 = sigma.first().copied().unwrap_or(0.0);
    Ok(Ok(MergedDelta {
        layer: it.layer,
        target: Target::parse(it.target),
        expert: it.expert,
        shape: [out, inn],
        merged_storage: storage_name(&wm.storage),
        base_storage: storage_name(&wb.storage),
        fro_norm: fro,
        base_fro_norm: base_fro,
        relative_change: (base_fro > 0.0).then(|| fro / base_fro),
        spectral_norm: s1,
        effective_rank: effective_rank(&all),
        stable_rank: if s1 > 0.0 { fro * fro / (s1 * s1) } else { 0.0 },
        singular_values: sigma,
        approximate: !small && fro > 0.0,
    }))
}

fn frobenius(m: &Mat<f64>) -> f64 {
    m.col_iter()
        .map(|c| c.iter().map(|x| x * x).sum::<f64>())
        .sum::<f64>()
        .sqrt()
}

/// Every weight of `merged` that `filter` selects against `base`, in parallel (one weight's
/// difference in memory per worker).
pub fn compute(merged: &Base, base: &Base, filter: &Filter, ctl: &Control) -> Result<MergedReport> {
    let items = items(merged, filter);
    let got = ctl.run(&items, |it| one(merged, base, it))?;
    let mut notes = base.notes.clone();
    notes.extend(merged.notes.iter().cloned());
    let mut weights = vec![];
    let mut missing = vec![];
    for r in got {
        match r {
            Ok(w) => weights.push(w),
            Err(n) => missing.push(n),
        }
    }
    if let Some(first) = missing.first() {
        notes.push(if missing.len() > 1 {
            format!(
                "{first} (and {} more weights without a base counterpart)",
                missing.len() - 1
            )
        } else {
            first.clone()
        });
    }
    if weights.iter().any(|w| w.approximate) {
        notes.push(format!(
            "~: effective rank from the top {TOP} singular values (randomized subspace iteration), approximate; the Frobenius norms are exact"
        ));
    }
    if items.is_empty() {
        notes.push(format!(
            "{} holds no gpt-oss weight (attention, router, experts) to compare",
            merged.id
        ));
    }
    let changed = weights.iter().filter(|w| w.fro_norm != 0.0).count();
    Ok(MergedReport {
        base: base.id.clone(),
        path: base.dir.display().to_string(),
        notes,
        compared: weights.len(),
        changed,
        weights,
    })
}
