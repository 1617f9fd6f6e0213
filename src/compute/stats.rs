//! Statistics of every delta (and full tensor) of an adapter, computed in parallel across deltas.

use crate::adapter::layout::{Delta, DeltaKey};
use crate::adapter::Adapter;
use crate::compute::math::{self, Factored};
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
    pub layer: Option<usize>,
    pub target: String,
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
    target: String,
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
        (self.layer, self.target.clone(), self.expert)
    }
}

/// Norms of a full tensor (e.g. a router saved by `modules_to_save`). Not a delta.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FullStats {
    pub name: String,
    pub layer: Option<usize>,
    pub target: String,
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

/// Which deltas to compute.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub target: Option<String>,
    pub layer: Option<usize>,
    pub expert: Option<usize>,
}

impl Filter {
    pub fn matches(&self, layer: Option<usize>, target: &str, expert: Option<usize>) -> bool {
        self.target.as_deref().is_none_or(|t| t == target)
            && self.layer.is_none_or(|l| layer == Some(l))
            && self.expert.is_none_or(|e| expert == Some(e))
    }
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
    fn cancelled(&self) -> bool {
        self.cancel.is_some_and(|c| c.load(Ordering::Relaxed))
    }

    /// Runs `f` over `items` in parallel, in order, with progress and cancellation.
    pub fn run<T: Sync, R: Send>(
        &self,
        items: &[T],
        f: impl Fn(&T) -> Result<R> + Sync + Send,
    ) -> Result<Vec<R>> {
        // faer's own threading only slows these small problems: parallelise across items.
        faer::set_global_parallelism(faer::Par::Seq);
        let done = AtomicUsize::new(0);
        let total = items.len();
        let work = || {
            items
                .par_iter()
                .map(|it| {
                    if self.cancelled() {
                        return Err(Error::Cancelled);
                    }
                    let r = f(it)?;
                    let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                    if let Some(p) = self.progress {
                        p(n, total);
                    }
                    Ok(r)
                })
                .collect::<Result<Vec<R>>>()
        };
        match self.threads {
            Some(n) => rayon::ThreadPoolBuilder::new()
                .num_threads(n.max(1))
                .build()
                .map_err(|e| Error::Other(format!("cannot start {n} threads: {e}")))?
                .install(work),
            None => work(),
        }
    }
}

/// Statistics of a spectrum (already scaled by |s|, descending).
pub fn from_sigma(d: &Delta, sigma: Vec<f64>) -> DeltaStats {
    let energy: f64 = sigma.iter().map(|x| x * x).sum();
    if !energy.is_finite() || !d.scale.is_finite() {
        // NaN/inf factors or an overflow: never numbers that look like a (zero) delta.
        return DeltaStats {
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
    let sum: f64 = sigma.iter().sum();
    let effective_rank = if sum > 0.0 {
        // Roy & Vetterli: exp of the entropy of σ normalised to sum 1 (σ = 0 terms add 0).
        let h: f64 = sigma
            .iter()
            .filter(|&&x| x > 0.0)
            .map(|&x| {
                let p = x / sum;
                -p * p.ln()
            })
            .sum();
        h.exp()
    } else {
        0.0
    };
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

/// Reads a delta's factors once and measures it.
pub fn measure(m: &Mapped, d: &Delta) -> Result<Measured> {
    let f = factor(m, d, false)?;
    let mut stats = from_sigma(d, f.sigma());
    // Exact zeros: the delta is finite and one factor never left its zero initialisation.
    stats.dead = stats.finite && (f.a_t.is_zero() || f.b_t.is_zero());
    Ok(Measured {
        stats,
        norm_a: f.a_t.norm(),
        norm_b: f.b_t.norm(),
        nonfinite_a: f.a_t.nonfinite(),
        nonfinite_b: f.b_t.nonfinite(),
        len_a: f.a_t.len(),
        len_b: f.b_t.len(),
    })
}

/// Reads a delta's factors and reduces it to its core.
pub fn factor(m: &Mapped, d: &Delta, want_vectors: bool) -> Result<Factored> {
    let a_t = m.factor_t(&d.a)?;
    let b_t = m.factor_t(&d.b)?;
    if a_t.ncols() != d.rank || b_t.nrows() != d.rank {
        return Err(Error::Shape(format!(
            "{}: factors of rank {} and {} do not match the layout's rank {}",
            d.module,
            a_t.ncols(),
            b_t.nrows(),
            d.rank
        )));
    }
    Ok(Factored::new(d.scale, b_t, a_t, want_vectors))
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
    let deltas: Vec<&Delta> = a
        .deltas
        .iter()
        .filter(|d| filter.matches(d.layer, &d.target, d.expert))
        .collect();
    let measured = ctl.run(&deltas, |d| measure(m, d))?;
    let full: Vec<&crate::adapter::layout::FullTensor> = a
        .full
        .iter()
        .filter(|f| filter.expert.is_none() && filter.matches(f.layer, &f.target, None))
        .filter(|f| f.shape.iter().product::<usize>() <= MAX_FULL_ELEMS)
        .collect();
    let full_tensors = full
        .iter()
        .map(|f| full_stats(m, f))
        .collect::<Result<Vec<_>>>()?;
    Ok((measured, full_tensors))
}
