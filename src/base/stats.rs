//! Every delta set against its base weight W (out × in), factored wherever possible (ΔW is never
//! formed): ‖W‖_F, ‖ΔW‖_F/‖W‖_F, ‖ΔW‖₂/‖W‖₂, amplification ‖ΔW‖_F/‖U_rᵀ W V_r‖_F (Hu et al.,
//! LoRA §7.3 / App. H.4) and alignment ‖U_kᵀ U_ΔW‖_F²/r (W's top-k left subspace, k = r).
//! What depends on W alone (‖W‖_F, ‖W‖₂, W's top singular vectors) is kept per weight in a
//! `Session`, so a second adapter on the same base costs only its own products.

use super::{weight_for, Base, Storage, Weight};
use crate::adapter::layout::{Delta, GateUpOrder};
use crate::adapter::Adapter;
use crate::compute::math::{self, Bases};
use crate::compute::shared::SharedRs;
use crate::compute::stats::{factored, Control, Filter};
use crate::compute::tensor::Mapped;
use crate::error::{Error, Result};
use faer::{Mat, MatRef};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, OnceLock};

/// Below this min(out, in), W's top singular vectors come from a dense SVD (exact and cheap);
/// above it, from randomized subspace iteration.
pub(super) const DENSE_SVD_MAX: usize = 512;
/// Extra columns of the subspace iteration (its accuracy depends on σ_{k+p+1}/σ_k).
const OVERSAMPLE: usize = 16;
const MAX_ITERATIONS: usize = 60;
/// Rounds for the intruder search's structured operator (diagonal plus rank r): a round costs
/// O((p + r)·r·b) there instead of O(out·in·b), so it may run longer on a flat spectrum.
const STRUCTURED_ITERATIONS: usize = 300;

/// Which statistics to compute; each level adds to the one before it and costs more.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fields {
    /// `base_fro_norm` and `relative_change`: ‖W‖_F read from the file (MXFP4 without a
    /// decode), ‖ΔW‖_F from the factors.
    Relative,
    /// and `amplification`: W decoded once, r products with it.
    Amplification,
    /// and `relative_spectral` and `alignment`: W's top singular vectors (subspace iteration).
    #[default]
    All,
}

/// What `compute_with` computes: the fields, and intruder dimensions when `deep` is given.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Opts {
    pub fields: Fields,
    pub deep: Option<IntruderOpts>,
}

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
    /// The delta or its base weight holds NaN/Inf: the fields are null in JSON, and maps and
    /// the explorer show the base metrics as non-finite, never as "no value".
    #[serde(skip)]
    pub nonfinite: bool,
    /// The fields this delta was computed with: a costlier field is not computed yet (pending,
    /// in a streamed report), not null (not in JSON).
    #[serde(skip)]
    pub computed: Fields,
}

impl BaseDeltaStats {
    /// Whether a field that needs `fields` is still to come (a streamed report's first pass).
    pub fn pending(&self, fields: Fields) -> bool {
        self.computed < fields
    }
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

/// W = X diag(s) Yᵀ, thin (p = min(out, in) of each): every singular vector, for intruder
/// dimensions.
struct Svd {
    x: Mat<f64>,
    s: Vec<f64>,
    y: Mat<f64>,
}

/// What is known about one base weight, computed once per session.
#[derive(Default)]
struct Facts {
    fro: OnceLock<f64>,
    top: Mutex<Option<Arc<Top>>>,
    /// W's full thin SVD (one dense SVD), for intruder dimensions.
    svd: OnceLock<Arc<Svd>>,
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
    fn top(&self, w: &Weight, k: usize, dense: MatRef<'_, f64>) -> Arc<Top> {
        let f = self.facts(w);
        let mut t = f.top.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(have) = t.as_ref().filter(|h| h.sigma.len() >= k) {
            return have.clone();
        }
        let new = Arc::new(top_left(dense, k));
        *t = Some(new.clone());
        new
    }
}

impl Session {
    /// W's full thin SVD, from one dense SVD per weight; `wt` decodes Wᵀ (only when the SVD is
    /// not cached yet).
    fn svd(&self, w: &Weight, wt: impl FnOnce() -> Result<Mat<f64>>) -> Result<Arc<Svd>> {
        let f = self.facts(w);
        if let Some(u) = f.svd.get() {
            return Ok(u.clone());
        }
        let wt = wt()?;
        let svd = wt.thin_svd().map_err(|_| {
            Error::Other(format!(
                "the SVD of base weight {} did not converge",
                w.key()
            ))
        })?;
        // Wᵀ = U S Vᵀ, so W = V S Uᵀ.
        let got = Svd {
            x: svd.V().to_owned(),
            s: svd.S().column_vector().iter().copied().collect(),
            y: svd.U().to_owned(),
        };
        Ok(f.svd.get_or_init(|| Arc::new(got)).clone())
    }
}

/// W's top-k singular values (descending) and left vectors: a dense SVD for small W, else
/// randomized subspace iteration (`top_left_by`).
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
    top_left_by((m, n), k, MAX_ITERATIONS, |z| w * z, |q| w.transpose() * q)
}

/// The top-k singular values (descending) and left vectors of an m × n operator given by its
/// products `mul` (A·Z) and `mul_t` (Aᵀ·Q): randomized subspace iteration (Halko, Martinsson &
/// Tropp 2011, Alg. 4.4) run until the Ritz values settle, at most `rounds` rounds.
fn top_left_by(
    (m, n): (usize, usize),
    k: usize,
    rounds: usize,
    mul: impl Fn(MatRef<'_, f64>) -> Mat<f64>,
    mul_t: impl Fn(MatRef<'_, f64>) -> Mat<f64>,
) -> Top {
    let k = k.min(m.min(n));
    let b = (k + OVERSAMPLE).min(m.min(n));
    let mut rng = SplitMix(0x5eed);
    let omega = Mat::from_fn(n, b, |_, _| rng.normal());
    let mut q = mul(omega.as_ref()).qr().compute_thin_Q();
    let mut prev: Vec<f64> = vec![];
    for _ in 0..rounds {
        let z = mul_t(q.as_ref()).qr().compute_thin_Q();
        let qr = mul(z.as_ref()).qr();
        q = qr.compute_thin_Q();
        // A Z = Q R, so Qᵀ A Z = R: its singular values are the Ritz values (no third product).
        let s = math::singular_values(qr.thin_R());
        let settled = prev.len() == s.len()
            && (0..k).all(|i| (s[i] - prev[i]).abs() <= 1e-12 * s[0].max(f64::MIN_POSITIVE));
        prev = s;
        if settled {
            break;
        }
    }
    // Rayleigh–Ritz: A ≈ Q (Qᵀ A), and the SVD of the small b × n matrix gives A's top vectors.
    let small = mul_t(q.as_ref()).transpose().to_owned();
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

/// F = X P + Q R with Q orthonormal and orthogonal to X (orthonormal columns): returns
/// [P; R]. P = XᵀF by Gram–Schmidt twice (once loses orthogonality when F is nearly inside X);
/// R is empty when X spans the whole space.
fn split(x: MatRef<'_, f64>, f: MatRef<'_, f64>) -> Mat<f64> {
    let p1 = x.transpose() * f;
    let res = f - x * &p1;
    let p2 = x.transpose() * &res;
    let res = &res - x * &p2;
    let p = &p1 + &p2;
    let r = if x.ncols() < x.nrows() {
        res.qr().thin_R().to_owned()
    } else {
        Mat::zeros(0, f.ncols())
    };
    let (np, nr) = (p.nrows(), r.nrows());
    Mat::from_fn(np + nr, f.ncols(), |i, j| {
        if i < np {
            p[(i, j)]
        } else {
            r[(i - np, j)]
        }
    })
}

/// Intruder dimensions of one delta, from W's SVD (kept for the session) and ΔW's factors,
/// without forming W + ΔW: with ΔW = L Mᵀ (W's orientation) split over W's singular bases,
/// L = X P_L + Q_L R_L and M = Y P_M + Q_M R_M, W + ΔW = [X Q_L] K [Y Q_M]ᵀ with
/// K = diag(s, 0) + [P_L; R_L][P_M; R_M]ᵀ (L: out × r, M: in × r). Both outer bases are orthonormal, so W + ΔW's
/// singular values are K's, its left vectors are [X Q_L]·a_j, and their cosines with W's left
/// vectors x_i are a_j's first p entries. K's products cost O((p + r)·r), not O(out·in).
fn intruders(svd: &Svd, l: MatRef<'_, f64>, m: MatRef<'_, f64>, opts: IntruderOpts) -> Intruders {
    let lk = split(svd.x.as_ref(), l);
    let mk = split(svd.y.as_ref(), m);
    let p = svd.s.len();
    let (rows, cols) = (lk.nrows(), mk.nrows());
    let diag = |z: MatRef<'_, f64>, out_rows: usize| {
        Mat::from_fn(out_rows, z.ncols(), |i, j| {
            if i < p {
                svd.s[i] * z[(i, j)]
            } else {
                0.0
            }
        })
    };
    let top = if rows.min(cols) <= DENSE_SVD_MAX {
        let k = diag(Mat::<f64>::identity(cols, cols).as_ref(), rows) + &lk * mk.transpose();
        top_left(k.as_ref(), opts.k)
    } else {
        top_left_by(
            (rows, cols),
            opts.k,
            STRUCTURED_ITERATIONS,
            |z| diag(z, rows) + &lk * (mk.transpose() * z),
            |q| diag(q, cols) + &mk * (lk.transpose() * q),
        )
    };
    let sigma: Vec<f64> = (0..top.u.ncols())
        .filter(|&j| {
            let best = (0..p).map(|i| top.u[(i, j)].abs()).fold(0.0, f64::max);
            best < opts.epsilon
        })
        .map(|j| top.sigma[j])
        .collect();
    Intruders {
        k: top.u.ncols(),
        epsilon: opts.epsilon,
        count: sigma.len(),
        sigma,
    }
}

/// The statistics of one delta against W.
fn one(
    s: &Session,
    m: &Mapped,
    d: &Delta,
    order: GateUpOrder,
    opts: Opts,
) -> Result<(BaseDeltaStats, Option<String>)> {
    let w = match weight_for(&s.base, d, order) {
        Ok(w) => w,
        Err(note) => {
            return Ok((
                BaseDeltaStats {
                    note: Some(note),
                    computed: opts.fields,
                    ..Default::default()
                },
                None,
            ))
        }
    };
    let orientation = orientation_note(d, &w);
    // ‖ΔW‖_F from the factors' R's alone (read in place, as `stats` does): no f64 copy of the
    // factors unless a field below needs their vectors.
    let rs = SharedRs::compute(m, &[d], &Control::default())?;
    let (r_b, r_a) = rs.of(d)?;
    let fro_d = math::sigma_of(d.scale, r_b, r_a)
        .iter()
        .map(|x| x * x)
        .sum::<f64>()
        .sqrt();
    let base_fro = s.fro(&w)?;
    let mut st = BaseDeltaStats {
        base_fro_norm: base_fro.is_finite().then_some(base_fro),
        computed: opts.fields,
        ..Default::default()
    };
    let finite = r_a.finite && r_b.finite && d.scale.is_finite() && fro_d.is_finite();
    if !finite || !base_fro.is_finite() {
        st.note = Some("not finite".into());
        st.nonfinite = true;
        return Ok((st, orientation));
    }
    if let Some(t) = dora_magnitude(m, d).filter(|_| opts.fields > Fields::Relative) {
        // Before the zero-delta shortcut: a DoRA with B = 0 still moves W by its magnitude.
        // Dense, so not in the cheap `Relative` pass.
        let f = factored(m, d, &rs, false)?;
        let dense = s.base.dense(&w)?;
        st.dora = dora(s, &w, &dense, &f, &m.full_values(t)?, base_fro);
    }
    st.relative_change = (base_fro > 0.0).then(|| fro_d / base_fro);
    if fro_d == 0.0 {
        // A zero delta: no directions to set against W.
        if opts.fields == Fields::All {
            st.relative_spectral = Some(0.0);
        }
        return Ok((st, orientation));
    }
    if opts.fields == Fields::Relative && opts.deep.is_none() {
        return Ok((st, orientation));
    }
    let f = factored(m, d, &rs, false)?;
    // W is decoded only for what needs it, and once.
    let mut wt: Option<Mat<f64>> = None;
    if opts.fields > Fields::Relative {
        let Bases { sigma, u, v } = math::bases(&f);
        // ΔWᵀ in W's orientation swaps the left and right vectors.
        let (u, v) = if w.transposed { (v, u) } else { (u, v) };
        let r = sigma.len();
        if r == 0 {
            // No direction above the rank threshold (an SVD that failed): as a zero delta.
            if opts.fields == Fields::All {
                st.relative_spectral = Some(0.0);
            }
            return Ok((st, orientation));
        }
        // U_rᵀ (W V_r): r products with W, r × r result.
        let proj = if opts.fields == Fields::All {
            let dense = wt.insert(s.base.dense_t(&w)?).transpose();
            u.transpose() * (dense * &v)
        } else {
            u.transpose() * s.base.mul(&w, v.as_ref())?
        };
        let p = fro(proj.as_ref());
        st.amplification = (p > 0.0).then(|| fro_d / p);
        if let Some(dense) = wt.as_ref().map(|m| m.transpose()) {
            let top = s.top(&w, r, dense);
            let w2 = top.sigma.first().copied().unwrap_or(0.0);
            st.relative_spectral = (w2 > 0.0).then(|| sigma[0] / w2);
            let uk = top.u.as_ref().subcols(0, r.min(top.u.ncols()));
            let x = uk.transpose() * &u;
            st.alignment = Some((fro(x.as_ref()).powi(2) / r as f64).min(1.0));
        }
    }
    if let Some(o) = opts.deep {
        let svd = s.svd(&w, || wt.map_or_else(|| s.base.dense_t(&w), Ok))?;
        let b = f.b_t.view().transpose() * faer::Scale(f.scale);
        let a = f.a_t.view();
        // ΔW = s·B·A = (s·B)(Aᵀ)ᵀ in W's orientation; ΔWᵀ = Aᵀ (s·B)ᵀ when transposed.
        st.intruders = Some(if w.transposed {
            intruders(&svd, a, b.as_ref(), o)
        } else {
            intruders(&svd, b.as_ref(), a, o)
        });
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
    let w2 = s
        .top(w, 1, dense.as_ref())
        .sigma
        .first()
        .copied()
        .unwrap_or(0.0);
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
    let fields = Fields::All;
    compute_with(s, a, filter, ctl, Opts { fields, deep })
}

/// The base statistics `opts` asks for (the others stay null): `Fields::Relative` reads ‖W‖_F
/// only, `Fields::Amplification` decodes each W once, `Fields::All` adds W's top singular
/// vectors.
pub fn compute_with(
    s: &Session,
    a: &Adapter,
    filter: &Filter,
    ctl: &Control,
    opts: Opts,
) -> Result<BaseReport> {
    let (m, deltas) = selected(a, filter)?;
    let order = GateUpOrder::for_config(a.config.config());
    let got = ctl.run(&deltas, |d| one(s, &m, d, order, opts))?;
    Ok(report(s, got))
}

/// `compute_with(Fields::All or `fields`)`, streamed: `Fields::Relative` of every delta first
/// (‖W‖_F from the file: cheap), published at once, then one layer's deltas at a time
/// (through the session's per-weight cache), the report so far published after each layer:
/// first with `Fields::Amplification` (W decoded once per weight), then, when `fields` asks
/// for more, with `fields` (W's top singular vectors are much slower: amplification of every
/// delta must not wait for them). Fields of deltas not reached yet are pending
/// (`BaseDeltaStats::pending`). Progress counts the deltas of both layer passes. Returns what
/// `compute_with` returns.
pub fn compute_streamed(
    s: &Session,
    a: &Adapter,
    filter: &Filter,
    ctl: &Control,
    fields: Fields,
    publish: &mut (dyn FnMut(BaseReport) + Send),
) -> Result<BaseReport> {
    let (m, deltas) = selected(a, filter)?;
    let order = GateUpOrder::for_config(a.config.config());
    let n = deltas.len();
    let cheap = Opts {
        fields: Fields::Relative,
        deep: None,
    };
    let passes: Vec<Opts> = [Fields::Amplification, fields]
        .into_iter()
        .filter(|f| *f > Fields::Relative)
        .collect::<BTreeSet<Fields>>()
        .into_iter()
        .map(|fields| Opts { fields, deep: None })
        .collect();
    let total = n * passes.len();
    ctl.install(|| {
        let mut got = ctl.each(&deltas, None, |d| one(s, &m, d, order, cheap))?;
        // The notes of the first pass hold for every partial report (they do not depend on
        // the fields); the last report counts them again, as `compute_with` does.
        let notes = notes(s, &got);
        let partial = |got: &[(BaseDeltaStats, Option<String>)]| BaseReport {
            base: s.base.id.clone(),
            path: s.base.dir.display().to_string(),
            notes: notes.clone(),
            deltas: got.iter().map(|(st, _)| st.clone()).collect(),
        };
        publish(partial(&got));
        let mut layers: BTreeMap<(bool, Option<usize>), Vec<usize>> = BTreeMap::new();
        for (i, d) in deltas.iter().enumerate() {
            layers
                .entry((d.layer.is_none(), d.layer))
                .or_default()
                .push(i);
        }
        let mut done = 0;
        let last = layers.len() * passes.len();
        let steps = passes
            .iter()
            .flat_map(|o| layers.values().map(move |idx| (o, idx)));
        for (k, (opts, idx)) in steps.enumerate() {
            let full = ctl.each(idx, Some((done, total)), |&i| {
                one(s, &m, deltas[i], order, *opts)
            })?;
            done += idx.len();
            for (&i, r) in idx.iter().zip(full) {
                got[i] = r;
            }
            if k + 1 < last {
                publish(partial(&got));
            }
        }
        Ok(report(s, got))
    })
}

/// The mapped adapter and the deltas `filter` selects.
fn selected<'a>(a: &'a Adapter, filter: &Filter) -> Result<(Mapped<'a>, Vec<&'a Delta>)> {
    if let Some(e) = &a.error {
        return Err(Error::Unusable {
            id: a.id.clone(),
            msg: e.clone(),
        });
    }
    let m = Mapped::open(a)?;
    let deltas = a
        .deltas
        .iter()
        .filter(|d| filter.matches(d.layer, &d.target, d.expert))
        .collect();
    Ok((m, deltas))
}

/// The report of the deltas' statistics and their notes.
fn report(s: &Session, got: Vec<(BaseDeltaStats, Option<String>)>) -> BaseReport {
    BaseReport {
        base: s.base.id.clone(),
        path: s.base.dir.display().to_string(),
        notes: notes(s, &got),
        deltas: got.into_iter().map(|(st, _)| st).collect(),
    }
}

/// The base's notes, then one line per distinct reason over the deltas, most frequent first, a
/// few of them.
fn notes(s: &Session, got: &[(BaseDeltaStats, Option<String>)]) -> Vec<String> {
    let mut notes = s.base.notes.clone();
    let mut counted: BTreeMap<String, usize> = BTreeMap::new();
    for (st, o) in got {
        for n in st.note.iter().chain(o) {
            *counted.entry(n.clone()).or_default() += 1;
        }
    }
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
    notes
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The structured intruder search (K's products, above the dense threshold) against the
    /// definition on dense matrices: top-k left vectors of W + L Mᵀ, max |cos| with all of W's.
    #[test]
    fn structured_intruders_match_the_dense_definition() {
        let (m, n, r) = (640, 560, 3);
        let mut rng = SplitMix(11);
        let g = Mat::from_fn(m, n, |_, _| rng.normal());
        let h = Mat::from_fn(n, n, |_, _| rng.normal());
        let (qg, qh) = (g.qr().compute_thin_Q(), h.qr().compute_thin_Q());
        let w = Mat::from_fn(m, n, |i, j| {
            (0..n)
                .map(|p| qg[(i, p)] * 0.9f64.powi(p as i32) * 10.0 * qh[(j, p)])
                .sum::<f64>()
        });
        // A delta whose directions lead W + ΔW (intruders) next to W's own top directions.
        let l = Mat::from_fn(m, r, |_, _| rng.normal() * 0.4);
        let mm = Mat::from_fn(n, r, |_, _| rng.normal() * 0.4);
        let svd = {
            let d = w.thin_svd().unwrap();
            Svd {
                x: d.U().to_owned(),
                s: d.S().column_vector().iter().copied().collect(),
                y: d.V().to_owned(),
            }
        };
        assert!(m.min(n) + r > DENSE_SVD_MAX);
        let opts = IntruderOpts {
            k: 10,
            epsilon: 0.5,
        };
        let got = intruders(&svd, l.as_ref(), mm.as_ref(), opts);
        let tuned = &w + &l * mm.transpose();
        let t = tuned.thin_svd().unwrap();
        let ts = t.S().column_vector();
        let mut idx: Vec<usize> = (0..ts.nrows()).collect();
        idx.sort_by(|&a, &b| ts[b].total_cmp(&ts[a]));
        let cos = t.U().transpose() * &svd.x;
        let want: Vec<f64> = idx[..10]
            .iter()
            .filter(|&&j| (0..n).map(|i| cos[(j, i)].abs()).fold(0.0, f64::max) < 0.5)
            .map(|&j| ts[j])
            .collect();
        assert!(!want.is_empty() && want.len() < 10, "{want:?}");
        assert_eq!(got.count, want.len(), "{:?} vs {want:?}", got.sigma);
        for (x, y) in got.sigma.iter().zip(&want) {
            assert!((x - y).abs() <= 1e-8 * y, "σ {x} vs {y}");
        }
    }

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
