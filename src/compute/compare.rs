//! Two adapters side by side: deltas matched by (layer, target, expert), with norms, cosine and
//! subspace similarity from the factors.
//!
//! A fused gate_up delta with no match is paired with the other side's gate and up deltas of the
//! same layer and expert (a gpt-oss PEFT adapter and its llama.cpp GGUF, which holds
//! `ffn_gate_exps` and `ffn_up_exps`): those two are joined into the fused delta they make
//! together, still factored (`joined`).

use crate::adapter::layout::{Delta, DeltaKey, GateUpOrder, Target};
use crate::adapter::Adapter;
use crate::compute::gram;
use crate::compute::math::{self, ColMajor, Factored};
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
    /// "a" or "b" when that side's `gate_proj` and `up_proj` deltas were joined into the fused
    /// gate_up the other side holds (`joined`); absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub joined: Option<&'static str>,
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

/// What one side of a pair is: one of its deltas, or its gate and up deltas joined as the fused
/// gate_up whose rows `order` lays out.
#[derive(Debug, Clone, Copy)]
enum Side {
    One(usize),
    Joined {
        gate: usize,
        up: usize,
        order: GateUpOrder,
    },
}

impl Side {
    /// The delta that names the pair (and whose factors the wave reads, for `One`).
    fn delta<'x>(&self, x: &'x Adapter) -> &'x Delta {
        match *self {
            Side::One(i) | Side::Joined { gate: i, .. } => &x.deltas[i],
        }
    }
}

/// One side's factored delta and its shape (out, in).
fn side_factored(x: &Adapter, (m, rs): SideRs, s: Side) -> Result<(Factored, (usize, usize))> {
    match s {
        Side::One(i) => {
            let d = &x.deltas[i];
            Ok((factored(m, d, rs, true)?, (d.out_dim, d.in_dim)))
        }
        Side::Joined { gate, up, order } => joined(m, &x.deltas[gate], &x.deltas[up], order),
    }
}

/// The fused gate_up delta that a gate delta s_g·B_g·A_g and an up delta s_u·B_u·A_u make
/// together, with the gate rows and up rows where `order` puts them: B′ has [s_g·B_g, 0] on the
/// gate rows and [0, s_u·B_u] on the up rows, A′ = [A_g; A_u], so that s′·B′·A′ is exactly the
/// fused ΔW (s′ = 1: the halves' scales may differ), of rank r_g + r_u, factored like any other
/// delta (no ΔW is formed; the R's come from the Grams of B′ and A′ᵀ).
fn joined(
    m: &Mapped,
    g: &Delta,
    u: &Delta,
    order: GateUpOrder,
) -> Result<(Factored, (usize, usize))> {
    let (bg, ag, bu, au) = (
        m.factor_t(&g.b)?,
        m.factor_t(&g.a)?,
        m.factor_t(&u.b)?,
        m.factor_t(&u.a)?,
    );
    let (rg, ru, half, inn) = (bg.nrows(), bu.nrows(), bg.ncols(), ag.nrows());
    if (bu.ncols(), au.nrows(), ag.ncols(), au.ncols()) != (half, inn, rg, ru) {
        return Err(Error::Shape(format!(
            "{} and {}: gate and up factors do not join",
            g.module, u.module
        )));
    }
    let out = 2 * half;
    // Which half (0 gate, 1 up) and which of its rows each fused output row is.
    let mut src = vec![(0, 0); out];
    for h in 0..2 {
        let sel = order.rows(h, out);
        for k in 0..sel.len {
            src[sel.start + k * sel.step] = (h, k);
        }
    }
    let r = rg + ru;
    let mut b_t = Vec::with_capacity(r * out);
    for &(h, k) in &src {
        let (from, s, lead, trail) = if h == 0 {
            (&bg, g.scale, 0, ru)
        } else {
            (&bu, u.scale, rg, 0)
        };
        b_t.extend(std::iter::repeat_n(0.0, lead));
        b_t.extend(from.view().col(k).iter().map(|x| s * x));
        b_t.extend(std::iter::repeat_n(0.0, trail));
    }
    let mut a_t = Vec::with_capacity(inn * r);
    for f in [&ag, &au] {
        for j in 0..f.ncols() {
            a_t.extend(f.view().col(j).iter());
        }
    }
    let finite = |v: &[f64]| v.iter().all(|x| x.is_finite());
    let (fb, fa) = (finite(&b_t), finite(&a_t));
    let b_t = ColMajor::from_parts(b_t, r, out, fb);
    let a_t = ColMajor::from_parts(a_t, inn, r, fa);
    Ok((gram::factored(1.0, b_t, a_t, true), (out, inn)))
}

fn pair(a: (&Adapter, SideRs, Side), b: (&Adapter, SideRs, Side)) -> Result<Pair> {
    let d = a.2.delta(a.0);
    let is_joined = |s: Side| matches!(s, Side::Joined { .. });
    let mut p = Pair {
        layer: d.layer,
        target: if is_joined(a.2) {
            Target::GateUp
        } else {
            d.target.clone()
        },
        expert: d.expert,
        fro_norm_a: None,
        fro_norm_b: None,
        cosine: None,
        subspace_similarity: None,
        comparable: false,
        finite_a: true,
        finite_b: true,
        note: None,
        joined: match (is_joined(a.2), is_joined(b.2)) {
            (true, _) => Some("a"),
            (_, true) => Some("b"),
            _ => None,
        },
    };
    let (fa, dims_a) = side_factored(a.0, a.1, a.2)?;
    let (fb, dims_b) = side_factored(b.0, b.1, b.2)?;
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
    if dims_a != dims_b {
        p.note = Some(format!(
            "not comparable: {}×{} vs {}×{} (different base models?)",
            dims_a.0, dims_a.1, dims_b.0, dims_b.1
        ));
        return Ok(p);
    }
    p.comparable = true;
    p.cosine = math::cosine(&fa, &fb);
    p.subspace_similarity = math::subspace_similarity(&fa, &fb);
    Ok(p)
}

/// Each fused gate_up delta of `x` that `y` lacks, with `y`'s gate and up deltas of the same
/// layer and expert when `x` has neither: (x's delta, y's gate, y's up), with x's row order.
fn joinable(
    (x, ix): (&Adapter, &BTreeMap<DeltaKey, usize>),
    (y, iy): (&Adapter, &BTreeMap<DeltaKey, usize>),
) -> Vec<(usize, Side)> {
    let order = GateUpOrder::for_config(x.config.config());
    x.deltas
        .iter()
        .enumerate()
        .filter(|(_, d)| d.target == Target::GateUp && !iy.contains_key(&d.key()))
        .filter_map(|(i, d)| {
            let half = |t: Target| DeltaKey::new(d.layer, t, d.expert);
            let (kg, ku) = (half(Target::Gate), half(Target::Up));
            if ix.contains_key(&kg) || ix.contains_key(&ku) {
                return None;
            }
            let (gate, up) = (*iy.get(&kg)?, *iy.get(&ku)?);
            let (g, u) = (&y.deltas[gate], &y.deltas[up]);
            // Halves of one fused matrix: the same shape (else they stay unmatched).
            ((g.out_dim, g.in_dim) == (u.out_dim, u.in_dim))
                .then_some((i, Side::Joined { gate, up, order }))
        })
        .collect()
}

/// The delta of each `One` side (None for a joined side, which reads its own factors).
fn ones(x: &Adapter, sides: impl Iterator<Item = Side>) -> Vec<Option<&Delta>> {
    sides
        .map(|s| match s {
            Side::One(i) => Some(&x.deltas[i]),
            Side::Joined { .. } => None,
        })
        .collect()
}

fn wave<'x>(ds: &[Option<&'x Delta>]) -> Vec<&'x Delta> {
    ds.iter().flatten().copied().collect()
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
    let mut matched: Vec<(Side, Side)> = a
        .deltas
        .iter()
        .filter_map(|d| {
            ib.get(&d.key())
                .map(|&j| (Side::One(ia[&d.key()]), Side::One(j)))
        })
        .collect();
    let (ja, jb) = (joinable((a, &ia), (b, &ib)), joinable((b, &ib), (a, &ia)));
    matched.extend(ja.iter().map(|&(i, s)| (Side::One(i), s)));
    matched.extend(jb.iter().map(|&(j, s)| (s, Side::One(j))));
    matched.sort_by_cached_key(|(s, _)| {
        let d = s.delta(a);
        (d.layer, d.target.clone(), d.expert)
    });
    // As in `stats`: per wave, each side's tensors are read once, then the pairs are compared.
    // A joined side reads its four factors itself.
    let pairs = ctl.install(|| {
        let das = ones(a, matched.iter().map(|m| m.0));
        let dbs = ones(b, matched.iter().map(|m| m.1));
        let lead: Vec<&Delta> = das.iter().zip(&dbs).filter_map(|(x, y)| x.or(*y)).collect();
        let mut pairs = Vec::with_capacity(matched.len());
        for w in shared::waves(&lead) {
            let ra = SharedRs::compute(&ma, &wave(&das[w.clone()]), ctl)?;
            let rb = SharedRs::compute(&mb, &wave(&dbs[w.clone()]), ctl)?;
            let progress = Some((w.start, matched.len()));
            pairs.extend(ctl.each(&matched[w], progress, |&(sa, sb)| {
                pair((a, (&ma, &ra), sa), (b, (&mb, &rb), sb))
            })?);
        }
        Ok(pairs)
    })?;
    // The deltas a join used are matched too.
    let used = |joins: &[(usize, Side)], fused: bool| -> Vec<usize> {
        joins
            .iter()
            .flat_map(|&(i, s)| match (fused, s) {
                (true, _) => vec![i],
                (false, Side::Joined { gate, up, .. }) => vec![gate, up],
                (false, Side::One(_)) => vec![],
            })
            .collect()
    };
    let only = |x: &Adapter, other: &BTreeMap<DeltaKey, usize>, used: Vec<usize>| {
        x.deltas
            .iter()
            .enumerate()
            .filter(|(i, d)| !other.contains_key(&d.key()) && !used.contains(i))
            .map(|(_, d)| d.key())
            .collect()
    };
    let used_a = [used(&ja, true), used(&jb, false)].concat();
    let used_b = [used(&jb, true), used(&ja, false)].concat();
    Ok(Comparison {
        a: a.id.clone(),
        b: b.id.clone(),
        pairs,
        only_a: only(a, &ib, used_a),
        only_b: only(b, &ia, used_b),
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
