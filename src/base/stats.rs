//! Every delta set against its base weight W (out × in), factored wherever possible (ΔW is never
//! formed): ‖W‖_F, ‖ΔW‖_F/‖W‖_F, ‖ΔW‖₂/‖W‖₂, amplification ‖ΔW‖_F/‖U_rᵀ W V_r‖_F (Hu et al.,
//! LoRA §7.3 / App. H.4) and alignment ‖U_kᵀ U_ΔW‖_F²/r (W's top-k left subspace, k = r).
//! What depends on W alone (‖W‖_F, ‖W‖₂, W's top singular vectors) is kept per weight in a
//! `Session`, so a second adapter on the same base costs only its own products.

use super::{weight_for, Base, Storage, Weight};
use crate::adapter::layout::{Delta, GateUpOrder};
use crate::adapter::Adapter;
use crate::compute::math::{self, Bases};
use crate::compute::stats::{factor, Control, Filter};
use crate::compute::tensor::Mapped;
use crate::error::{Error, Result};
use faer::{Mat, MatRef};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, OnceLock};

/// Below this min(out, in), W's top singular vectors come from a dense SVD (exact and cheap);
/// above it, from randomized subspace iteration.
pub(super) const DENSE_SVD_MAX: usize = 512;
/// Extra columns of the subspace iteration (its accuracy depends on σ_{k+p+1}/σ_k).
const OVERSAMPLE: usize = 16;
const MAX_ITERATIONS: usize = 60;

/// The base statistics of one delta (the `stats --base` JSON fields); None where the base
/// lacks the weight, or the delta is zero or not finite.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct BaseDeltaStats {
    pub base_fro_norm: Option<f64>,
    pub relative_change: Option<f64>,
    pub relative_spectral: Option<f64>,
    pub amplification: Option<f64>,
    pub alignment: Option<f64>,
    /// Intruder dimensions (`--deep` only; absent otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub intruders: Option<Intruders>,
    /// DoRA adapters only: the exact update with the magnitude vector (absent otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dora: Option<DoraStats>,
    /// Why the fields are null (not in JSON: the report's notes say it once).
    #[serde(skip)]
    pub note: Option<String>,
}

/// Intruder dimensions (Shuttleworth et al., arXiv 2410.21228): among the top-k left singular
/// vectors y_j of W + ΔW, those whose largest |cos| with every left singular vector of W is
/// below ε.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Intruders {
    pub k: usize,
    pub epsilon: f64,
    pub count: usize,
    /// σ_j of W + ΔW of each intruder, descending.
    pub sigma: Vec<f64>,
}

/// The exact DoRA update of one delta, ΔW = diag(m / ‖W + sBA‖_row)·(W + sBA) − W (PEFT
/// `tuners/lora/dora.py`: the norm of each output row of the (out, in) weight, `dim=1`, and the
/// magnitude scaling output features), formed densely for this delta.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DoraStats {
    pub fro_norm: f64,
    pub spectral_norm: f64,
    /// ‖ΔW‖_F / ‖W‖_F and ‖ΔW‖₂ / ‖W‖₂ of the exact update.
    pub relative_change: Option<f64>,
    pub relative_spectral: Option<f64>,
}

/// k and ε of the intruder search. Defaults from the authors' code
/// (reeceshuttle/intruder-dimensions `find_intruder_dimensions.py`: `k=10`, threshold 0.5).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IntruderOpts {
    pub k: usize,
    pub epsilon: f64,
}

impl Default for IntruderOpts {
    fn default() -> Self {
        IntruderOpts {
            k: 10,
            epsilon: 0.5,
        }
    }
}

/// W's largest singular values and left singular vectors (k of them).
pub(super) struct Top {
    pub(super) sigma: Vec<f64>,
    u: Mat<f64>,
}

/// What is known about one base weight, computed once per session.
#[derive(Default)]
struct Facts {
    fro: OnceLock<f64>,
    top: Mutex<Option<Arc<Top>>>,
    /// Every left singular vector of W (dense SVD), for intruder dimensions.
    svd: OnceLock<Arc<Mat<f64>>>,
}

/// An opened base and its per-weight cache, shared by every adapter set against it.
pub struct Session {
    pub base: Base,
    facts: Mutex<HashMap<String, Arc<Facts>>>,
}

/// The base statistics of an adapter's deltas (in the order of `stats::compute`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BaseReport {
    pub base: String,
    pub path: String,
    pub notes: Vec<String>,
    pub deltas: Vec<BaseDeltaStats>,
}

impl Session {
    pub fn new(base: Base) -> Session {
        Session {
            base,
            facts: Mutex::new(HashMap::new()),
        }
    }

    fn facts(&self, w: &Weight) -> Arc<Facts> {
        let mut m = self.facts.lock().unwrap_or_else(|p| p.into_inner());
        m.entry(w.key()).or_default().clone()
    }

    /// ‖W‖_F, cached (MXFP4 needs no decode for it).
    pub fn fro(&self, w: &Weight) -> Result<f64> {
        let f = self.facts(w);
        if let Some(x) = f.fro.get() {
            return Ok(*x);
        }
        let x = self.base.fro_sq(w)?.sqrt();
        Ok(*f.fro.get_or_init(|| x))
    }

    /// W's top-k singular values and left vectors, cached per weight (a larger k serves a
    /// smaller one). `dense` is W when already decoded.
    fn top(&self, w: &Weight, k: usize, dense: &Mat<f64>) -> Arc<Top> {
        let f = self.facts(w);
        let mut t = f.top.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(have) = t.as_ref().filter(|h| h.sigma.len() >= k) {
            return have.clone();
        }
        let new = Arc::new(top_left(dense.as_ref(), k));
        *t = Some(new.clone());
        new
    }
}

impl Session {
    /// All of W's left singular vectors (out × min(out, in)), from one dense SVD per weight.
    fn left_vectors(&self, w: &Weight, dense: &Mat<f64>) -> Result<Arc<Mat<f64>>> {
        let f = self.facts(w);
        if let Some(u) = f.svd.get() {
            return Ok(u.clone());
        }
        let svd = dense.thin_svd().map_err(|_| {
            Error::Other(format!(
                "the SVD of base weight {} did not converge",
                w.key()
            ))
        })?;
        Ok(f.svd.get_or_init(|| Arc::new(svd.U().to_owned())).clone())
    }
}

/// W's top-k singular values (descending) and left vectors: a dense SVD for small W, else
/// randomized subspace iteration (Halko, Martinsson & Tropp 2011, Alg. 4.4) run until the
/// Ritz values settle.
pub(super) fn top_left(w: MatRef<'_, f64>, k: usize) -> Top {
    let (m, n) = (w.nrows(), w.ncols());
    let k = k.min(m.min(n));
    if m.min(n) <= DENSE_SVD_MAX {
        let Ok(svd) = w.thin_svd() else {
            return Top {
                sigma: vec![f64::NAN; k],
                u: Mat::zeros(m, k),
            };
        };
        return sorted_top(
            svd.S().column_vector().iter().copied().collect(),
            svd.U(),
            k,
        );
    }
    let b = (k + OVERSAMPLE).min(m.min(n));
    let mut rng = SplitMix(0x5eed);
    let omega = Mat::from_fn(n, b, |_, _| rng.normal());
    let mut q = (w * omega).qr().compute_thin_Q();
    let mut prev: Vec<f64> = vec![];
    for _ in 0..MAX_ITERATIONS {
        let z = (w.transpose() * &q).qr().compute_thin_Q();
        q = (w * &z).qr().compute_thin_Q();
        let s = math::singular_values((q.transpose() * w * &z).as_ref());
        let settled = prev.len() == s.len()
            && (0..k).all(|i| (s[i] - prev[i]).abs() <= 1e-12 * s[0].max(f64::MIN_POSITIVE));
        prev = s;
        if settled {
            break;
        }
    }
    // Rayleigh–Ritz: W ≈ Q (Qᵀ W), and the SVD of the small b × n matrix gives W's top vectors.
    let small = q.transpose() * w;
    let Ok(svd) = small.thin_svd() else {
        return Top {
            sigma: vec![f64::NAN; k],
            u: Mat::zeros(m, k),
        };
    };
    let u = &q * svd.U();
    sorted_top(
        svd.S().column_vector().iter().copied().collect(),
        u.as_ref(),
        k,
    )
}

fn sorted_top(s: Vec<f64>, u: MatRef<'_, f64>, k: usize) -> Top {
    let mut idx: Vec<usize> = (0..s.len()).collect();
    idx.sort_by(|&a, &b| s[b].total_cmp(&s[a]));
    idx.truncate(k);
    Top {
        sigma: idx.iter().map(|&i| s[i]).collect(),
        u: Mat::from_fn(u.nrows(), idx.len(), |i, j| u[(i, idx[j])]),
    }
}

/// splitmix64 and Box–Muller: a fixed start for the subspace iteration (repeatable numbers).
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }
    fn normal(&mut self) -> f64 {
        let u = self.next().max(1e-300);
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * self.next()).cos()
    }
}

fn fro(m: MatRef<'_, f64>) -> f64 {
    m.col_iter()
        .map(|c| c.iter().map(|x| x * x).sum::<f64>())
        .sum::<f64>()
        .sqrt()
}

/// Intruder dimensions of one delta: W + ΔW is formed densely (one delta, on demand), its top-k
/// left vectors come from `top_left`, W's from its dense SVD (kept for the session).
fn intruders(
    s: &Session,
    w: &Weight,
    dense: &Mat<f64>,
    f: &crate::compute::math::Factored,
    opts: IntruderOpts,
) -> Result<Intruders> {
    let dw = (f.b_t.view().transpose() * f.a_t.view().transpose()) * faer::Scale(f.scale);
    let tuned = if w.transposed {
        dense + dw.transpose()
    } else {
        dense + &dw
    };
    let x = s.left_vectors(w, dense)?;
    let top = top_left(tuned.as_ref(), opts.k);
    // |cos(y_j, x_i)| for all i: one product Yᵀ X (k × min(out, in)).
    let cos = top.u.transpose() * x.as_ref();
    let sigma: Vec<f64> = (0..top.u.ncols())
        .filter(|&j| {
            let best = (0..cos.ncols())
                .map(|i| cos[(j, i)].abs())
                .fold(0.0, f64::max);
            best < opts.epsilon
        })
        .map(|j| top.sigma[j])
        .collect();
    Ok(Intruders {
        k: top.u.ncols(),
        epsilon: opts.epsilon,
        count: sigma.len(),
        sigma,
    })
}

/// The statistics of one delta against W.
fn one(
    s: &Session,
    m: &Mapped,
    d: &Delta,
    order: GateUpOrder,
    deep: Option<IntruderOpts>,
) -> Result<(BaseDeltaStats, Option<String>)> {
    let w = match weight_for(&s.base, d, order) {
        Ok(w) => w,
        Err(note) => {
            return Ok((
                BaseDeltaStats {
                    note: Some(note),
                    ..Default::default()
                },
                None,
            ))
        }
    };
    let orientation = orientation_note(d, &w);
    let f = factor(m, d, true)?;
    let base_fro = s.fro(&w)?;
    let mut st = BaseDeltaStats {
        base_fro_norm: base_fro.is_finite().then_some(base_fro),
        ..Default::default()
    };
    if !f.is_finite() || !base_fro.is_finite() {
        st.note = Some("not finite".into());
        return Ok((st, orientation));
    }
    if let Some(t) = dora_magnitude(m, d) {
        // Before the zero-delta shortcut: a DoRA with B = 0 still moves W by its magnitude.
        let dense = s.base.dense(&w)?;
        st.dora = dora(s, &w, &dense, &f, &m.full_values(t)?, base_fro);
    }
    let fro_d = f.fro();
    st.relative_change = (base_fro > 0.0).then(|| fro_d / base_fro);
    let Bases { sigma, u, v } = math::bases(&f);
    // ΔWᵀ in W's orientation swaps the left and right vectors.
    let (u, v) = if w.transposed { (v, u) } else { (u, v) };
    let r = sigma.len();
    if r == 0 {
        // A zero delta: no directions to set against W.
        st.relative_spectral = Some(0.0);
        return Ok((st, orientation));
    }
    let dense = s.base.dense(&w)?;
    let top = s.top(&w, r, &dense);
    let w2 = top.sigma.first().copied().unwrap_or(0.0);
    st.relative_spectral = (w2 > 0.0).then(|| sigma[0] / w2);
    // U_rᵀ (W V_r): r products with W, r × r result.
    let proj = u.transpose() * (&dense * &v);
    let p = fro(proj.as_ref());
    st.amplification = (p > 0.0).then(|| fro_d / p);
    let uk = top.u.as_ref().subcols(0, r.min(top.u.ncols()));
    let x = uk.transpose() * &u;
    st.alignment = Some((fro(x.as_ref()).powi(2) / r as f64).min(1.0));
    if let Some(o) = deep {
        st.intruders = Some(intruders(s, &w, &dense, &f, o)?);
    }
    Ok((st, orientation))
}

/// The DoRA magnitude tensor of a delta's module (PEFT's `lora_magnitude_vector`), if any.
fn dora_magnitude(m: &Mapped, d: &Delta) -> Option<usize> {
    use crate::adapter::layout::Role;
    m.adapter()
        .tensors
        .iter()
        .position(|t| t.name.role == Role::DoraMagnitude && t.name.module == d.module)
}

/// The exact DoRA update against W (dense): None when the magnitude does not have one value per
/// output row of W, or a row of W + sBA is zero.
fn dora(
    s: &Session,
    w: &Weight,
    dense: &Mat<f64>,
    f: &crate::compute::math::Factored,
    mag: &[f64],
    base_fro: f64,
) -> Option<DoraStats> {
    if mag.len() != w.out {
        return None;
    }
    let dw = (f.b_t.view().transpose() * f.a_t.view().transpose()) * faer::Scale(f.scale);
    let v = if w.transposed {
        dense + dw.transpose()
    } else {
        dense + &dw
    };
    let norms: Vec<f64> = (0..v.nrows())
        .map(|i| {
            (0..v.ncols())
                .map(|j| v[(i, j)].powi(2))
                .sum::<f64>()
                .sqrt()
        })
        .collect();
    if norms.iter().any(|n| *n == 0.0 || !n.is_finite()) {
        return None;
    }
    let delta = Mat::from_fn(v.nrows(), v.ncols(), |i, j| {
        mag[i] / norms[i] * v[(i, j)] - dense[(i, j)]
    });
    let fro_d = fro(delta.as_ref());
    let s1 = top_left(delta.as_ref(), 1)
        .sigma
        .first()
        .copied()
        .unwrap_or(0.0);
    let w2 = s.top(w, 1, dense).sigma.first().copied().unwrap_or(0.0);
    Some(DoraStats {
        fro_norm: fro_d,
        spectral_norm: s1,
        relative_change: (base_fro > 0.0).then(|| fro_d / base_fro),
        relative_spectral: (w2 > 0.0).then(|| s1 / w2),
    })
}

/// Which orientation was read, when it was a choice (docs/base.md).
fn orientation_note(d: &Delta, w: &Weight) -> Option<String> {
    if w.transposed {
        return Some(format!(
            "{}: ΔW is W's transpose (PEFT's swapped in/out features); set against W as ΔWᵀ",
            d.target
        ));
    }
    let expert = !matches!(w.storage, Storage::Dense { .. });
    (expert && d.target.is_expert() && w.out == w.inn).then(|| {
        format!(
            "{}: W is square ({}×{}), so the shapes cannot tell the orientation: ΔW = s·B·A read as (out, in), as PEFT ≥ 0.19.1 writes it",
            d.target, w.out, w.inn
        )
    })
}

/// The base statistics of the adapter's deltas that `filter` selects, in parallel, with the
/// notes a person should read (why fields are null, which orientation was read).
pub fn compute(s: &Session, a: &Adapter, filter: &Filter, ctl: &Control) -> Result<BaseReport> {
    compute_deep(s, a, filter, ctl, None)
}

/// `compute`, with the intruder dimensions of every selected delta when `deep` is given (slow:
/// a dense SVD per base weight, kept for the session).
pub fn compute_deep(
    s: &Session,
    a: &Adapter,
    filter: &Filter,
    ctl: &Control,
    deep: Option<IntruderOpts>,
) -> Result<BaseReport> {
    if let Some(e) = &a.error {
        return Err(Error::Unusable {
            id: a.id.clone(),
            msg: e.clone(),
        });
    }
    let m = Mapped::open(a)?;
    let deltas: Vec<&Delta> = a
        .deltas
        .iter()
        .filter(|d| filter.matches(d.layer, &d.target, d.expert))
        .collect();
    let order = GateUpOrder::for_config(a.config.config());
    let got = ctl.run(&deltas, |d| one(s, &m, d, order, deep))?;
    let mut notes = s.base.notes.clone();
    let mut counted: BTreeMap<String, usize> = BTreeMap::new();
    for (st, o) in &got {
        for n in st.note.iter().chain(o) {
            *counted.entry(n.clone()).or_default() += 1;
        }
    }
    // One line per distinct reason, most frequent first, a few of them.
    let mut counted: Vec<(String, usize)> = counted.into_iter().collect();
    counted.sort_by(|x, y| y.1.cmp(&x.1).then(x.0.cmp(&y.0)));
    const SHOWN: usize = 6;
    for (n, c) in counted.iter().take(SHOWN) {
        notes.push(if *c > 1 {
            format!("{n} ({c} deltas)")
        } else {
            n.clone()
        });
    }
    if counted.len() > SHOWN {
        notes.push(format!("… and {} more reasons", counted.len() - SHOWN));
    }
    Ok(BaseReport {
        base: s.base.id.clone(),
        path: s.base.dir.display().to_string(),
        notes,
        deltas: got.into_iter().map(|(st, _)| st).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The randomized path against a dense SVD, on a matrix above the dense threshold with a
    /// decaying spectrum (as trained weights have).
    #[test]
    fn subspace_iteration_finds_the_dense_top_vectors() {
        let (m, n, k) = (700, 530, 5);
        let mut rng = SplitMix(3);
        let g = Mat::from_fn(m, n, |_, _| rng.normal());
        let h = Mat::from_fn(n, n, |_, _| rng.normal());
        let (qg, qh) = (g.qr().compute_thin_Q(), h.qr().compute_thin_Q());
        let sig = Mat::from_fn(n, n, |i, j| {
            if i == j {
                0.9f64.powi(i as i32) * 10.0
            } else {
                0.0
            }
        });
        let w = &qg * &sig * qh.transpose();
        let top = top_left(w.as_ref(), k);
        for i in 0..k {
            let want = 0.9f64.powi(i as i32) * 10.0;
            assert!(
                (top.sigma[i] - want).abs() <= 1e-9 * want,
                "σ{i}: {} vs {want}",
                top.sigma[i]
            );
            // The i-th left vector is ±the i-th column of qg.
            let dot: f64 = (0..m).map(|r| top.u[(r, i)] * qg[(r, i)]).sum();
            assert!((dot.abs() - 1.0).abs() <= 1e-8, "u{i}: |cos| {}", dot.abs());
        }
    }
}
