//! Statistics of every delta (and full tensor) of an adapter, computed in parallel across deltas.

use crate::adapter::layout::{Delta, DeltaKey, Target};
use crate::adapter::Adapter;
use crate::compute::math::{self, FactorR, Factored};
use crate::compute::shared::{self, SharedRs};
use crate::compute::tensor::Mapped;
use crate::error::{Error, Result};
use rayon::prelude::*;
use serde::Serialize;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// The statistics of one delta ΔW = s·B·A (a contract: the `stats --json` fields).
/// A non-finite delta (NaN/inf factors, or an overflowing result) has `finite: false`, NaN in
/// its f64 fields and zeros in its counts, and all of them are `null` in JSON.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(into = "DeltaStatsJson")]
pub struct DeltaStats {
    /// The delta's position in its adapter's `deltas` (the adapter these statistics came from).
    pub index: usize,
    pub layer: Option<usize>,
    pub target: Target,
    pub expert: Option<usize>,
    pub rank: usize,
    pub scale: f64,
    pub fro_norm: f64,
    pub spectral_norm: f64,
    pub effective_rank: f64,
    pub stable_rank: f64,
    pub numerical_rank: usize,
    pub energy_rank_90: usize,
    pub energy_rank_99: usize,
    pub singular_values: Vec<f64>,
    pub finite: bool,
    /// A or B is exactly zero, so ΔW = 0: a LoRA never trained or never saved (finite deltas).
    pub dead: bool,
}

/// `DeltaStats` as JSON: the computed fields are null when the delta is not finite.
#[derive(Serialize)]
struct DeltaStatsJson {
    layer: Option<usize>,
    target: Target,
    expert: Option<usize>,
    rank: usize,
    scale: f64,
    fro_norm: Option<f64>,
    spectral_norm: Option<f64>,
    effective_rank: Option<f64>,
    stable_rank: Option<f64>,
    numerical_rank: Option<usize>,
    energy_rank_90: Option<usize>,
    energy_rank_99: Option<usize>,
    singular_values: Option<Vec<f64>>,
    finite: bool,
    dead: bool,
}

impl From<DeltaStats> for DeltaStatsJson {
    fn from(d: DeltaStats) -> Self {
        let ok = d.finite;
        DeltaStatsJson {
            layer: d.layer,
            target: d.target,
            expert: d.expert,
            rank: d.rank,
            scale: d.scale,
            fro_norm: ok.then_some(d.fro_norm),
            spectral_norm: ok.then_some(d.spectral_norm),
            effective_rank: ok.then_some(d.effective_rank),
            stable_rank: ok.then_some(d.stable_rank),
            numerical_rank: ok.then_some(d.numerical_rank),
            energy_rank_90: ok.then_some(d.energy_rank_90),
            energy_rank_99: ok.then_some(d.energy_rank_99),
            singular_values: ok.then_some(d.singular_values),
            finite: ok,
            dead: d.dead,
        }
    }
}

impl DeltaStats {
    pub fn key(&self) -> DeltaKey {
        DeltaKey {
            layer: self.layer,
            target: self.target.clone(),
            expert: self.expert,
        }
    }
}

/// Norms of a full tensor (e.g. a router saved by `modules_to_save`). Not a delta.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FullStats {
    pub name: String,
    pub layer: Option<usize>,
    pub target: Target,
    pub shape: Vec<usize>,
    pub fro_norm: f64,
    /// σ₁ for a matrix, the L2 norm for a vector, null for higher ranks.
    pub spectral_norm: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AdapterStats {
    pub id: String,
    pub deltas: Vec<DeltaStats>,
    pub full_tensors: Vec<FullStats>,
}

impl AdapterStats {
    /// Each of `a`'s deltas with its statistics, if computed: found by the index each carries
    /// and checked against the delta's identity, so statistics of another layout of the adapter
    /// (e.g. before `--split-gate-up`) never land on a delta.
    pub fn per_delta<'s>(&'s self, a: &Adapter) -> Vec<Option<&'s DeltaStats>> {
        let mut v = vec![None; a.deltas.len()];
        for s in &self.deltas {
            let same = |d: &Delta| (d.layer, &d.target, d.expert) == (s.layer, &s.target, s.expert);
            if a.deltas.get(s.index).is_some_and(same) {
                v[s.index] = Some(s);
            }
        }
        v
    }
}

/// Which deltas to compute.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub target: Option<String>,
    pub layer: Option<usize>,
    pub expert: Option<usize>,
}

impl Filter {
    pub fn matches(&self, layer: Option<usize>, target: &Target, expert: Option<usize>) -> bool {
        self.target.as_deref().is_none_or(|t| target == t)
            && self.layer.is_none_or(|l| layer == Some(l))
            && self.expert.is_none_or(|e| expert == Some(e))
    }
}

/// faer's own threading only slows these small problems (lorascope parallelises across deltas):
/// turn it off, once per process.
fn sequential_faer() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| faer::set_global_parallelism(faer::Par::Seq));
}

/// Threads, progress reporting and cancellation for long computations.
#[derive(Default, Clone, Copy)]
pub struct Control<'a> {
    /// Worker threads (default: all cores).
    pub threads: Option<usize>,
    /// Called with (done, total) after each item.
    pub progress: Option<&'a (dyn Fn(usize, usize) + Sync)>,
    pub cancel: Option<&'a AtomicBool>,
}

impl Control<'_> {
    pub(crate) fn cancelled(&self) -> bool {
        self.cancel.is_some_and(|c| c.load(Ordering::Relaxed))
    }

    /// Runs `f` over `items` in parallel, in order, with progress and cancellation.
    pub fn run<T: Sync, R: Send>(
        &self,
        items: &[T],
        f: impl Fn(&T) -> Result<R> + Sync + Send,
    ) -> Result<Vec<R>> {
        self.install(|| self.each(items, Some((0, items.len())), f))
    }

    /// Runs `work` on this control's threads (one pool for all the parallel steps inside it).
    pub(crate) fn install<R: Send>(&self, work: impl FnOnce() -> Result<R> + Send) -> Result<R> {
        match self.threads {
            Some(n) => rayon::ThreadPoolBuilder::new()
                .num_threads(n.max(1))
                .build()
                .map_err(|e| Error::Other(format!("cannot start {n} threads: {e}")))?
                .install(work),
            None => work(),
        }
    }

    /// `f` over `items` in parallel on the current threads, in order, with cancellation; with
    /// `progress = Some((offset, total))`, reports offset + done of total after each item.
    pub(crate) fn each<T: Sync, R: Send>(
        &self,
        items: &[T],
        progress: Option<(usize, usize)>,
        f: impl Fn(&T) -> Result<R> + Sync + Send,
    ) -> Result<Vec<R>> {
        sequential_faer();
        let done = AtomicUsize::new(progress.map_or(0, |p| p.0));
        items
            .par_iter()
            .map(|it| {
                if self.cancelled() {
                    return Err(Error::Cancelled);
                }
                let r = f(it)?;
                if let (Some((_, total)), Some(p)) = (progress, self.progress) {
                    p(done.fetch_add(1, Ordering::Relaxed) + 1, total);
                }
                Ok(r)
            })
            .collect::<Result<Vec<R>>>()
    }
}

/// Roy & Vetterli's effective rank: exp of the entropy of σ normalised to sum 1 (σ = 0 terms
/// add 0); 0 for a zero spectrum.
pub fn effective_rank(sigma: &[f64]) -> f64 {
    let sum: f64 = sigma.iter().sum();
    if sum.is_nan() || sum <= 0.0 {
        return 0.0;
    }
    let h: f64 = sigma
        .iter()
        .filter(|&&x| x > 0.0)
        .map(|&x| {
            let p = x / sum;
            -p * p.ln()
        })
        .sum();
    h.exp()
}

/// Statistics of delta number `index` from its spectrum (already scaled by |s|, descending).
pub fn from_sigma(index: usize, d: &Delta, sigma: Vec<f64>) -> DeltaStats {
    let energy: f64 = sigma.iter().map(|x| x * x).sum();
    if !energy.is_finite() || !d.scale.is_finite() {
        // NaN/inf factors or an overflow: never numbers that look like a (zero) delta.
        return DeltaStats {
            index,
            layer: d.layer,
            target: d.target.clone(),
            expert: d.expert,
            rank: d.rank,
            scale: d.scale,
            fro_norm: f64::NAN,
            spectral_norm: f64::NAN,
            effective_rank: f64::NAN,
            stable_rank: f64::NAN,
            numerical_rank: 0,
            energy_rank_90: 0,
            energy_rank_99: 0,
            singular_values: vec![],
            finite: false,
            dead: false,
        };
    }
    let s1 = sigma.first().copied().unwrap_or(0.0);
    let effective_rank = effective_rank(&sigma);
    let energy_rank = |q: f64| {
        if energy <= 0.0 {
            return 0;
        }
        let mut acc = 0.0;
        for (i, x) in sigma.iter().enumerate() {
            acc += x * x;
            // A relative slack so that exactly-q shares are not lost to rounding.
            if acc >= q * energy * (1.0 - 1e-12) {
                return i + 1;
            }
        }
        sigma.len()
    };
    DeltaStats {
        index,
        layer: d.layer,
        target: d.target.clone(),
        expert: d.expert,
        rank: d.rank,
        scale: d.scale,
        fro_norm: energy.sqrt(),
        spectral_norm: s1,
        effective_rank,
        stable_rank: if s1 > 0.0 { energy / (s1 * s1) } else { 0.0 },
        numerical_rank: math::numerical_rank(&sigma),
        energy_rank_90: energy_rank(0.90),
        energy_rank_99: energy_rank(0.99),
        singular_values: sigma,
        finite: true,
        dead: false,
    }
}

/// Exact zeros: the delta is finite and one factor never left its zero initialisation (R = 0
/// exactly when its factor is all zeros). The one definition of "dead" (health, run timelines).
pub fn is_dead(stats: &DeltaStats, r_b: &FactorR, r_a: &FactorR) -> bool {
    stats.finite && (r_a.r.norm_l2() == 0.0 || r_b.r.norm_l2() == 0.0)
}

/// One delta measured from one read of its factors: its statistics and what the health checks
/// need besides (factor norms, NaN/inf counts), so that `check` costs one pass like `stats`.
#[derive(Debug, Clone)]
pub struct Measured {
    pub stats: DeltaStats,
    /// ‖A‖_F and ‖B‖_F as stored (before the scale s).
    pub norm_a: f64,
    pub norm_b: f64,
    /// NaN/±inf values in A and in B, and how many values each holds.
    pub nonfinite_a: usize,
    pub nonfinite_b: usize,
    pub len_a: usize,
    pub len_b: usize,
}

/// Measures delta number `index` from the R's of its factors (RᵀR = MᵀM, so ‖R‖_F = ‖M‖_F and
/// R = 0 exactly when the factor is all zeros). Only a non-finite delta is read again, to count
/// its NaN/inf values for the health report.
fn measure(
    m: &Mapped,
    index: usize,
    d: &Delta,
    (r_b, r_a): (&FactorR, &FactorR),
    sigma: Vec<f64>,
) -> Result<Measured> {
    let mut stats = from_sigma(index, d, sigma);
    let (norm_a, norm_b) = (r_a.r.norm_l2(), r_b.r.norm_l2());
    stats.dead = is_dead(&stats, r_b, r_a);
    let (len_a, len_b) = (d.rank * d.in_dim, d.out_dim * d.rank);
    let (mut nonfinite_a, mut nonfinite_b) = (0, 0);
    if !(r_a.finite && r_b.finite) {
        nonfinite_a = m.factor_t(&d.a)?.nonfinite();
        nonfinite_b = m.factor_t(&d.b)?.nonfinite();
    }
    Ok(Measured {
        stats,
        norm_a: if r_a.finite { norm_a } else { f64::NAN },
        norm_b: if r_b.finite { norm_b } else { f64::NAN },
        nonfinite_a,
        nonfinite_b,
        len_a,
        len_b,
    })
}

/// Reads a delta's factors and reduces it to its core.
pub fn factor(m: &Mapped, d: &Delta, want_vectors: bool) -> Result<Factored> {
    let rs = SharedRs::compute(m, &[d], &Control::default())?;
    factored(m, d, &rs, want_vectors)
}

/// A delta's factors read (`compare` needs them) and combined with their R's from `rs`.
pub(crate) fn factored(
    m: &Mapped,
    d: &Delta,
    rs: &SharedRs,
    want_vectors: bool,
) -> Result<Factored> {
    let (r_b, r_a) = rs.of(d)?;
    let a_t = m.factor_t(&d.a)?;
    let b_t = m.factor_t(&d.b)?;
    Ok(Factored::from_rs(d.scale, b_t, a_t, r_b, r_a, want_vectors))
}

fn full_stats(m: &Mapped, f: &crate::adapter::layout::FullTensor) -> Result<FullStats> {
    let v = m.full_values(f.tensor)?;
    let fro = v.iter().map(|x| x * x).sum::<f64>().sqrt();
    let spectral = match f.shape.len() {
        0 | 1 => Some(fro),
        2 => {
            let (r, c) = (f.shape[0], f.shape[1]);
            let mat = faer::Mat::from_fn(r, c, |i, j| v[i * c + j]);
            math::singular_values(mat.as_ref())
                .first()
                .copied()
                .or(Some(0.0))
        }
        _ => None,
    };
    Ok(FullStats {
        name: f.name.clone(),
        layer: f.layer,
        target: f.target.clone(),
        shape: f.shape.clone(),
        fro_norm: fro,
        spectral_norm: spectral,
    })
}

/// Full tensors larger than this are listed but not measured (merged weights, not deltas).
const MAX_FULL_ELEMS: usize = 64 << 20;

/// Computes the statistics of the adapter's deltas and full tensors that `filter` selects.
pub fn compute(a: &Adapter, filter: &Filter, ctl: &Control) -> Result<AdapterStats> {
    if let Some(e) = &a.error {
        return Err(Error::Unusable {
            id: a.id.clone(),
            msg: e.clone(),
        });
    }
    compute_on(&Mapped::open(a)?, filter, ctl)
}

/// `compute` on an adapter already mapped.
pub fn compute_on(m: &Mapped, filter: &Filter, ctl: &Control) -> Result<AdapterStats> {
    let (measured, full_tensors) = measure_on(m, filter, ctl)?;
    Ok(AdapterStats {
        id: m.adapter().id.clone(),
        deltas: measured.into_iter().map(|x| x.stats).collect(),
        full_tensors,
    })
}

/// Every selected delta measured (in parallel) and every selected full tensor's norms: the one
/// pass over the data that `stats` and `check` share.
pub fn measure_on(
    m: &Mapped,
    filter: &Filter,
    ctl: &Control,
) -> Result<(Vec<Measured>, Vec<FullStats>)> {
    let a = m.adapter();
    let (index, deltas): (Vec<usize>, Vec<&Delta>) = a
        .deltas
        .iter()
        .enumerate()
        .filter(|(_, d)| filter.matches(d.layer, &d.target, d.expert))
        .unzip();
    // Each wave reads its tensors once (shared factors reduced once), then combines R's.
    let measured = ctl.install(|| {
        let mut measured = Vec::with_capacity(deltas.len());
        for w in shared::waves(&deltas) {
            let rs = SharedRs::compute(m, &deltas[w.clone()], ctl)?;
            let wave: Vec<usize> = w.clone().collect();
            // The cores' spectra two deltas at a time (their QR sweeps interleave), then each
            // delta measured from its spectrum.
            let pairs: Vec<&[usize]> = wave.chunks(2).collect();
            let sigmas = ctl.each(&pairs, None, |pair| {
                let items = pair
                    .iter()
                    .map(|&k| rs.of(deltas[k]).map(|(b, a)| (deltas[k].scale, b, a)))
                    .collect::<Result<Vec<_>>>()?;
                Ok(math::sigmas_of(&items))
            })?;
            let wave: Vec<(usize, Vec<f64>)> =
                wave.into_iter().zip(sigmas.into_iter().flatten()).collect();
            measured.extend(
                ctl.each(&wave, Some((w.start, deltas.len())), |(k, sigma)| {
                    let d = deltas[*k];
                    measure(m, index[*k], d, rs.of(d)?, sigma.clone())
                })?,
            );
        }
        Ok(measured)
    })?;
    let full: Vec<&crate::adapter::layout::FullTensor> = a
        .full
        .iter()
        .filter(|f| filter.expert.is_none() && filter.matches(f.layer, &f.target, None))
        .filter(|f| f.shape.iter().product::<usize>() <= MAX_FULL_ELEMS)
        // Quantised storage (a base's MXFP4 blocks and scales, U8) is listed, not measured
        // here: `base` decodes it where a statistic needs it.
        .filter(|f| crate::compute::tensor::is_float(a.tensors[f.tensor].info.dtype))
        .collect();
    let full_tensors = full
        .iter()
        .map(|f| full_stats(m, f))
        .collect::<Result<Vec<_>>>()?;
    Ok((measured, full_tensors))
}
