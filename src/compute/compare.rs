//! Two adapters side by side: deltas matched by (layer, target, expert), with norms, cosine and
//! subspace similarity from the factors.

use crate::adapter::layout::{Delta, DeltaKey, Target};
use crate::adapter::Adapter;
use crate::compute::math;
use crate::compute::shared::{self, SharedRs};
use crate::compute::stats::{factored, Control};
use crate::compute::tensor::Mapped;
use crate::error::{Error, Result};
use serde::Serialize;
use std::collections::BTreeMap;

/// One matched pair (a contract: the `compare --json` fields).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Pair {
    pub layer: Option<usize>,
    pub target: Target,
    pub expert: Option<usize>,
    pub fro_norm_a: Option<f64>,
    pub fro_norm_b: Option<f64>,
    /// null when either delta is zero or the shapes differ.
    pub cosine: Option<f64>,
    pub subspace_similarity: Option<f64>,
    pub comparable: bool,
    /// false when that side holds NaN/inf or overflows: its norm, the cosine and the subspace
    /// similarity are then null.
    pub finite_a: bool,
    pub finite_b: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comparison {
    pub a: String,
    pub b: String,
    pub pairs: Vec<Pair>,
    pub only_a: Vec<DeltaKey>,
    pub only_b: Vec<DeltaKey>,
}

/// Per-target means, for people.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TargetSummary {
    pub target: Target,
    pub pairs: usize,
    pub mean_cosine: Option<f64>,
    pub mean_subspace_similarity: Option<f64>,
    /// Mean of ‖ΔW_b‖ / ‖ΔW_a‖.
    pub mean_norm_ratio: Option<f64>,
}

fn usable(a: &Adapter) -> Result<()> {
    match &a.error {
        Some(e) => Err(Error::Unusable {
            id: a.id.clone(),
            msg: e.clone(),
        }),
        None => Ok(()),
    }
}

/// One side's mapped adapter and the R's of its factors in the current wave.
type SideRs<'a, 'b> = (&'a Mapped<'b>, &'a SharedRs);

fn pair((ma, ra): SideRs, (mb, rb): SideRs, da: &Delta, db: &Delta) -> Result<Pair> {
    let mut p = Pair {
        layer: da.layer,
        target: da.target.clone(),
        expert: da.expert,
        fro_norm_a: None,
        fro_norm_b: None,
        cosine: None,
        subspace_similarity: None,
        comparable: false,
        finite_a: true,
        finite_b: true,
        note: None,
    };
    let (fa, fb) = (factored(ma, da, ra, true)?, factored(mb, db, rb, true)?);
    (p.finite_a, p.finite_b) = (fa.is_finite(), fb.is_finite());
    p.fro_norm_a = p.finite_a.then(|| fa.fro());
    p.fro_norm_b = p.finite_b.then(|| fb.fro());
    if !(p.finite_a && p.finite_b) {
        let sides = match (p.finite_a, p.finite_b) {
            (false, false) => "a and b",
            (false, true) => "a",
            _ => "b",
        };
        p.note = Some(format!("non-finite values in {sides}"));
        return Ok(p);
    }
    if (da.out_dim, da.in_dim) != (db.out_dim, db.in_dim) {
        p.note = Some(format!(
            "not comparable: {}×{} vs {}×{} (different base models?)",
            da.out_dim, da.in_dim, db.out_dim, db.in_dim
        ));
        return Ok(p);
    }
    p.comparable = true;
    p.cosine = math::cosine(&fa, &fb);
    p.subspace_similarity = math::subspace_similarity(&fa, &fb);
    Ok(p)
}

/// Compares every delta the two adapters share, and lists what only one of them has.
pub fn compare(a: &Adapter, b: &Adapter, ctl: &Control) -> Result<Comparison> {
    usable(a)?;
    usable(b)?;
    let (ma, mb) = (Mapped::open(a)?, Mapped::open(b)?);
    let index = |x: &'_ Adapter| -> BTreeMap<DeltaKey, usize> {
        x.deltas
            .iter()
            .enumerate()
            .map(|(i, d)| (d.key(), i))
            .collect()
    };
    let (ia, ib) = (index(a), index(b));
    let matched: Vec<(usize, usize)> = a
        .deltas
        .iter()
        .filter_map(|d| ib.get(&d.key()).map(|&j| (ia[&d.key()], j)))
        .collect();
    // As in `stats`: per wave, each side's tensors are read once, then the pairs are compared.
    let pairs = ctl.install(|| {
        let das: Vec<&Delta> = matched.iter().map(|&(i, _)| &a.deltas[i]).collect();
        let dbs: Vec<&Delta> = matched.iter().map(|&(_, j)| &b.deltas[j]).collect();
        let mut pairs = Vec::with_capacity(matched.len());
        for w in shared::waves(&das) {
            let ra = SharedRs::compute(&ma, &das[w.clone()], ctl)?;
            let rb = SharedRs::compute(&mb, &dbs[w.clone()], ctl)?;
            let progress = Some((w.start, matched.len()));
            pairs.extend(ctl.each(&matched[w], progress, |&(i, j)| {
                pair((&ma, &ra), (&mb, &rb), &a.deltas[i], &b.deltas[j])
            })?);
        }
        Ok(pairs)
    })?;
    let only = |x: &Adapter, other: &BTreeMap<DeltaKey, usize>| -> Vec<DeltaKey> {
        x.deltas
            .iter()
            .map(Delta::key)
            .filter(|k| !other.contains_key(k))
            .collect()
    };
    Ok(Comparison {
        a: a.id.clone(),
        b: b.id.clone(),
        pairs,
        only_a: only(a, &ib),
        only_b: only(b, &ia),
    })
}

fn mean(v: impl Iterator<Item = f64>) -> Option<f64> {
    let (mut s, mut n) = (0.0, 0usize);
    for x in v {
        s += x;
        n += 1;
    }
    (n > 0).then(|| s / n as f64)
}

/// Per-target means of cosine, subspace similarity and norm ratio.
pub fn by_target(c: &Comparison) -> Vec<TargetSummary> {
    let mut groups: BTreeMap<&Target, Vec<&Pair>> = BTreeMap::new();
    for p in &c.pairs {
        groups.entry(&p.target).or_default().push(p);
    }
    groups
        .into_iter()
        .map(|(target, ps)| TargetSummary {
            target: target.clone(),
            pairs: ps.len(),
            mean_cosine: mean(ps.iter().filter_map(|p| p.cosine)),
            mean_subspace_similarity: mean(ps.iter().filter_map(|p| p.subspace_similarity)),
            mean_norm_ratio: mean(
                ps.iter()
                    .filter_map(|p| match (p.fro_norm_a, p.fro_norm_b) {
                        (Some(x), Some(y)) if x > 0.0 => Some(y / x),
                        _ => None,
                    }),
            ),
        })
        .collect()
}
