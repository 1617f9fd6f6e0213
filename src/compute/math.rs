//! The factored core: spectra of ΔW = s·B·A from r×r problems, never forming ΔW.
//!
//! With B = Q_B R_B and Aᵀ = Q_A R_A (thin), ΔW = s·Q_B (R_B R_Aᵀ) Q_Aᵀ, so σ(ΔW) = |s|·σ(R_B R_Aᵀ).
//! R comes from the Cholesky factor of the f64 Gram matrix (fast). Exactly zero columns (zero
//! padding, unused rank) are set aside first, and a Gram whose Cholesky diagonal looks too graded
//! is factored by its symmetric eigendecomposition, R = Λ^½Vᵀ, when its eigenvalues allow: both
//! as fast as a full-rank factor. Only a factor whose Gram cannot tell its small directions from
//! rounding (dependent non-zero columns, σ below ~10⁻⁶·σ₁) takes Householder QR of the factor.
//!
//! The QRs are thin: R_B is min(out, r) × r and R_A is min(in, r) × r, so the core is at most
//! min(r, out) × min(r, in). A rank above the matrix dims (r = 65536 on 2×2) then costs O(r)
//! work and memory, not O(r³) and r² (the r×r Gram of a short factor alone was 34 GB).

use crate::compute::small_svd;
use faer::linalg::solvers::Svd;
use faer::{Mat, MatRef, Side};

/// Below this ratio of smallest to largest Cholesky diagonal the Gram matrix (cond²) nears 1/ε
/// and can no longer hold the small directions: use Householder QR instead. Above it, Cholesky-QR
/// gives each σᵢ with an absolute error of about ε·σ₁²/σᵢ ≤ 1e-9·σ₁, far inside RANK_TOL.
const CHOLESKY_MIN_DIAG_RATIO: f64 = 1e-7;

/// Singular values at or below this fraction of σ₁ count as zero (numerical rank, subspaces).
pub const RANK_TOL: f64 = 1e-6;

/// Smallest λ/λ_max of a Gram eigenvalue taken as a direction of the factor (σ ≥ 10⁻⁶·σ₁,
/// each σ then to about ε·σ₁²/σ ≤ 10⁻¹⁰·σ₁ absolute, as on the Cholesky path).
const EIGEN_MIN_RATIO: f64 = 1e-12;

/// R (r × r, RᵀR = G) from a finite Gram matrix G = MᵀM of an n × r factor M (n ≥ r; lower
/// triangle read), where `zero[j]` says column j of M is exactly zero; None when only
/// Householder QR of M itself holds the factor's small directions.
pub fn r_from_gram(gram: Mat<f64>, zero: &[bool]) -> Option<Mat<f64>> {
    let r = gram.nrows();
    let keep: Vec<usize> = (0..r).filter(|&j| !zero[j]).collect();
    if keep.len() == r {
        return cholesky_r(gram.as_ref()).or_else(|| eigen_r(gram.as_ref()));
    }
    // Zero columns of M are zero rows and columns of G and zero columns of R: the rest is a
    // smaller Gram of full rank (zero padding), which Cholesky takes.
    let sub = Mat::from_fn(keep.len(), keep.len(), |p, q| gram[(keep[p], keep[q])]);
    let rs = cholesky_r(sub.as_ref()).or_else(|| eigen_r(sub.as_ref()))?;
    let mut out = Mat::zeros(r, r);
    for (c, &j) in keep.iter().enumerate() {
        for i in 0..rs.nrows() {
            out[(i, j)] = rs[(i, c)];
        }
    }
    Some(out)
}

/// R = Lᵀ from the Cholesky factor of a Gram matrix (lower triangle read), or None when
/// Cholesky fails or is too ill-conditioned to hold the small directions.
fn cholesky_r(gram: MatRef<'_, f64>) -> Option<Mat<f64>> {
    if gram.nrows() == 0 {
        return Some(Mat::zeros(0, 0));
    }
    let llt = gram.llt(Side::Lower).ok()?;
    let l = llt.L();
    let d: Vec<f64> = (0..l.nrows()).map(|i| l[(i, i)].abs()).collect();
    let max = d.iter().cloned().fold(0.0, f64::max);
    let min = d.iter().cloned().fold(f64::INFINITY, f64::min);
    (max > 0.0 && min / max >= CHOLESKY_MIN_DIAG_RATIO && min.is_finite())
        .then(|| l.transpose().to_owned())
}

/// R = Λ^½Vᵀ (r × r, RᵀR = G) from G = VΛVᵀ when every eigenvalue is well above rounding
/// (≥ EIGEN_MIN_RATIO·λ_max: a Gram whose Cholesky diagonal looked too graded); None otherwise.
/// A direction with a smaller eigenvalue cannot be told from a zero one (dependent columns) by
/// the Gram alone (λ ≈ 10⁻¹⁶·λ_max is σ = 10⁻⁸·σ₁, or rounding): Householder decides.
fn eigen_r(gram: MatRef<'_, f64>) -> Option<Mat<f64>> {
    let r = gram.nrows();
    let evd = gram.self_adjoint_eigen(Side::Lower).ok()?;
    let (lambda, v) = (evd.S().column_vector(), evd.U());
    let max = (0..r).map(|i| lambda[i].abs()).fold(0.0, f64::max);
    let trusted = EIGEN_MIN_RATIO * max;
    if !(max > 0.0 && max.is_finite() && (0..r).all(|i| lambda[i] >= trusted)) {
        return None;
    }
    Some(Mat::from_fn(r, r, |i, j| lambda[i].sqrt() * v[(j, i)]))
}

/// The R of one factor's tall matrix (Aᵀ or B), computed once however many deltas share it.
#[derive(Clone, Debug)]
pub struct FactorR {
    /// min(n, r) × r; 0 × r when the factor is not finite.
    pub r: Mat<f64>,
    /// No NaN or ±inf among the factor's values: a non-finite factor is reported, never computed.
    pub finite: bool,
}

impl FactorR {
    pub fn non_finite(rank: usize) -> FactorR {
        FactorR {
            r: Mat::zeros(0, rank),
            finite: false,
        }
    }

    /// The factor's rank r (its tall matrix is n × r).
    pub fn rank(&self) -> usize {
        self.r.ncols()
    }
}

/// Singular values (descending) and, when asked, right singular vectors of the core R_B R_Aᵀ.
/// A non-finite factor gives NaN values, which `is_finite` and the reports show as such.
fn core(r_b: &FactorR, r_a: &FactorR, want_vectors: bool) -> (Vec<f64>, Mat<f64>) {
    if !(r_b.finite && r_a.finite) {
        let r = r_a.rank();
        return (vec![f64::NAN; r.max(1)], Mat::zeros(r, 0));
    }
    let core = &r_b.r * r_a.r.transpose();
    if want_vectors {
        core_svd(core.as_ref())
    } else {
        (singular_values(core.as_ref()), Mat::zeros(0, 0))
    }
}

/// σ(ΔW) = |s|·σ(core), descending, r of them: a rank-r product has r singular values, of which
/// at most min(r, out, in) (the core's) can be non-zero; the rest are zeros.
fn scaled(core_sigma: &[f64], scale: f64, rank: usize) -> Vec<f64> {
    let mut s: Vec<f64> = core_sigma.iter().map(|x| x * scale.abs()).collect();
    s.resize(s.len().max(rank), 0.0);
    s
}

/// σ(ΔW = s·B·A) from the R's of its factors (the statistics need nothing else).
pub fn sigma_of(scale: f64, r_b: &FactorR, r_a: &FactorR) -> Vec<f64> {
    sigmas_of(&[(scale, r_b, r_a)]).swap_remove(0)
}

/// `sigma_of` of several deltas (s, R_B, R_A): small cores two at a time, their QR sweeps
/// interleaved (`small_svd::singular_values_many`).
pub fn sigmas_of(items: &[(f64, &FactorR, &FactorR)]) -> Vec<Vec<f64>> {
    let cores: Vec<Option<Mat<f64>>> = items
        .iter()
        .map(|(_, b, a)| (b.finite && a.finite).then(|| &b.r * a.r.transpose()))
        .collect();
    let small: Vec<usize> = (0..items.len())
        .filter(|&i| {
            cores[i]
                .as_ref()
                .is_some_and(|c| c.nrows().max(c.ncols()) <= small_svd::MAX_SIDE)
        })
        .collect();
    let refs: Vec<MatRef<'_, f64>> = small
        .iter()
        .filter_map(|&i| cores[i].as_ref().map(|c| c.as_ref()))
        .collect();
    let mut got: Vec<Option<Vec<f64>>> = vec![None; items.len()];
    for (&i, s) in small.iter().zip(small_svd::singular_values_many(&refs)) {
        got[i] = s;
    }
    items
        .iter()
        .zip(cores)
        .zip(got)
        .map(|(((scale, _, a), core), s)| {
            let sigma = match (core, s) {
                // NaN/inf factors: never numbers that look like a delta.
                (None, _) => vec![f64::NAN; a.rank().max(1)],
                (Some(_), Some(s)) => s,
                (Some(c), None) => singular_values(c.as_ref()),
            };
            scaled(&sigma, *scale, a.rank())
        })
        .collect()
}

/// R (min(n, r) × r) of a Householder QR (always succeeds; zero columns give zero rows of R).
pub fn householder_r(m: MatRef<'_, f64>) -> Mat<f64> {
    m.qr().thin_R().to_owned()
}

/// A column-major f64 matrix built without zero-filling (it is written once, in order).
#[derive(Clone)]
pub struct ColMajor {
    data: Vec<f64>,
    nrows: usize,
    ncols: usize,
    /// No NaN or infinity among the values (found while converting, at no extra pass).
    finite: bool,
}

impl ColMajor {
    pub fn view(&self) -> MatRef<'_, f64> {
        MatRef::from_column_major_slice(&self.data, self.nrows, self.ncols)
    }
    pub fn nrows(&self) -> usize {
        self.nrows
    }
    pub fn ncols(&self) -> usize {
        self.ncols
    }
    /// Whether every value is finite: a NaN or ±inf factor must be reported, never computed.
    pub fn is_finite(&self) -> bool {
        self.finite
    }
    /// How many values are NaN or ±inf (counted only when there are some).
    pub fn nonfinite(&self) -> usize {
        if self.finite {
            0
        } else {
            self.data.iter().filter(|x| !x.is_finite()).count()
        }
    }
    /// How many values the factor holds.
    pub fn len(&self) -> usize {
        self.data.len()
    }
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
    /// Column-major `data` (nrows × ncols) whose finiteness is known.
    pub(crate) fn from_parts(data: Vec<f64>, nrows: usize, ncols: usize, finite: bool) -> ColMajor {
        debug_assert_eq!(data.len(), nrows * ncols);
        ColMajor {
            data,
            nrows,
            ncols,
            finite,
        }
    }
    /// From a dense faer matrix (tests, benchmarks).
    pub fn from_mat(m: MatRef<'_, f64>) -> ColMajor {
        let mut data = Vec::with_capacity(m.nrows() * m.ncols());
        for j in 0..m.ncols() {
            data.extend((0..m.nrows()).map(|i| m[(i, j)]));
        }
        let finite = data.iter().all(|x| x.is_finite());
        ColMajor {
            data,
            nrows: m.nrows(),
            ncols: m.ncols(),
            finite,
        }
    }
}

/// A delta reduced to its core (at most min(r, out) × min(r, in)) and the pieces `compare` needs.
pub struct Factored {
    pub scale: f64,
    /// Bᵀ (r×out) and Aᵀ (in×r), as read.
    pub b_t: ColMajor,
    pub a_t: ColMajor,
    /// R of B = Q_B R_B and of Aᵀ = Q_A R_A (min(out, r) × r and min(in, r) × r).
    pub r_b: Mat<f64>,
    pub r_a: Mat<f64>,
    /// Singular values of the core R_B R_Aᵀ (without |s|), descending: min(r, out, in) of them.
    pub core_sigma: Vec<f64>,
    /// Right singular vectors of the core (min(in, r) × min(r, out, in)).
    pub core_v: Mat<f64>,
}

impl Factored {
    /// Factors a delta whose R's are already known (shared factors are reduced once).
    pub fn from_rs(
        scale: f64,
        b_t: ColMajor,
        a_t: ColMajor,
        r_b: &FactorR,
        r_a: &FactorR,
        want_vectors: bool,
    ) -> Factored {
        let (core_sigma, core_v) = core(r_b, r_a, want_vectors);
        let r_of = |f: &FactorR| {
            if f.finite {
                f.r.clone()
            } else {
                Mat::zeros(f.rank(), f.rank())
            }
        };
        Factored {
            scale,
            b_t,
            a_t,
            r_b: r_of(r_b),
            r_a: r_of(r_a),
            core_sigma,
            core_v,
        }
    }

    /// σ(ΔW) = |s|·σ(core), descending, r of them (see `scaled`).
    pub fn sigma(&self) -> Vec<f64> {
        scaled(&self.core_sigma, self.scale, self.rank())
    }

    /// The rank r of the factors (A is r × in).
    pub fn rank(&self) -> usize {
        self.a_t.ncols()
    }

    /// False when a factor holds NaN or ±inf, or the scaled result overflows: no number of
    /// this delta means anything then.
    pub fn is_finite(&self) -> bool {
        self.scale.is_finite() && self.fro().is_finite()
    }

    pub fn fro(&self) -> f64 {
        self.sigma().iter().map(|x| x * x).sum::<f64>().sqrt()
    }

    /// Number of singular values above RANK_TOL·σ₁.
    pub fn numerical_rank(&self) -> usize {
        numerical_rank(&self.core_sigma)
    }
}

/// Singular values, descending, never NaN for finite input (zeros for a zero matrix).
pub fn singular_values(m: MatRef<'_, f64>) -> Vec<f64> {
    if m.nrows() == 0 || m.ncols() == 0 {
        return vec![];
    }
    let small = m.nrows().max(m.ncols()) <= small_svd::MAX_SIDE;
    if let Some(s) = small.then(|| small_svd::singular_values(m)).flatten() {
        return s;
    }
    let mut s = m.singular_values().unwrap_or_else(|_| jacobi_fallback(m));
    s.sort_by(|a, b| b.total_cmp(a));
    // The Gram fallback of a wide matrix has ncols eigenvalues; only min(nrows, ncols) are σ.
    s.truncate(m.nrows().min(m.ncols()));
    s
}

fn core_svd(m: MatRef<'_, f64>) -> (Vec<f64>, Mat<f64>) {
    let r = m.ncols();
    match m.thin_svd() {
        Ok(svd) => sorted(&svd),
        // faer's SVD did not converge (never seen): fall back to values only.
        Err(_) => (singular_values(m), Mat::identity(r, r)),
    }
}

/// Singular values and V columns in descending order of σ.
fn sorted(svd: &Svd<f64>) -> (Vec<f64>, Mat<f64>) {
    let s = svd.S().column_vector();
    let v = svd.V();
    let mut idx: Vec<usize> = (0..s.nrows()).collect();
    idx.sort_by(|&a, &b| s[b].total_cmp(&s[a]));
    let sigma = idx.iter().map(|&i| s[i]).collect();
    let vv = Mat::from_fn(v.nrows(), idx.len(), |i, j| v[(i, idx[j])]);
    (sigma, vv)
}

/// Eigenvalues of the Gram matrix as a last resort: σ = √λ.
fn jacobi_fallback(m: MatRef<'_, f64>) -> Vec<f64> {
    let g = m.transpose() * m;
    match g.self_adjoint_eigenvalues(Side::Lower) {
        Ok(ev) => ev.into_iter().map(|l| l.max(0.0).sqrt()).collect(),
        Err(_) => vec![0.0; m.ncols()],
    }
}

pub fn numerical_rank(sigma: &[f64]) -> usize {
    let s1 = sigma.first().copied().unwrap_or(0.0);
    if s1 <= 0.0 {
        return 0;
    }
    sigma.iter().filter(|&&x| x > RANK_TOL * s1).count()
}

/// ⟨ΔW_a, ΔW_b⟩_F = s_a s_b · tr((B_aᵀB_b)(A_b A_aᵀ)), or s_a s_b · ⟨B_a A_a, B_b A_b⟩ through
/// the out×in product when the ranks exceed the dims (whichever costs fewer flops).
pub fn inner(a: &Factored, b: &Factored) -> f64 {
    let (ra, rb) = (a.rank() as f64, b.rank() as f64);
    let (out, inn) = (a.b_t.ncols() as f64, a.a_t.nrows() as f64);
    if ra * rb * (out + inn) > (ra + rb) * out * inn {
        // W_b = B_b A_b (out×in), X = B_aᵀ W_b (r_a×in); ⟨B_a A_a, W_b⟩ = Σ A_a ∘ X.
        let w_b = b.b_t.view().transpose() * b.a_t.view().transpose();
        let x = a.b_t.view() * w_b;
        let a_t = a.a_t.view();
        let mut dot = 0.0;
        for k in 0..x.nrows() {
            for i in 0..x.ncols() {
                dot += x[(k, i)] * a_t[(i, k)];
            }
        }
        return a.scale * b.scale * dot;
    }
    let bb = a.b_t.view() * b.b_t.view().transpose(); // r_a × r_b
    let aa = b.a_t.view().transpose() * a.a_t.view(); // r_b × r_a
    let mut tr = 0.0;
    for i in 0..bb.nrows() {
        for j in 0..bb.ncols() {
            tr += bb[(i, j)] * aa[(j, i)];
        }
    }
    a.scale * b.scale * tr
}

/// Left singular basis of ΔW (values above RANK_TOL·σ₁) as B·M with M = R_Aᵀ V_k Σ_k⁻¹ (r×k):
/// ΔW V = s B A Q_A V_core = s B R_Aᵀ V_core, so U_k = ±B R_Aᵀ V_k Σ_k⁻¹ with no inverse of R.
fn left_basis_coeffs(f: &Factored) -> Mat<f64> {
    let k = f.numerical_rank();
    let rv = f.r_a.transpose() * f.core_v.as_ref().subcols(0, k);
    Mat::from_fn(rv.nrows(), k, |i, j| rv[(i, j)] / f.core_sigma[j])
}

/// Subspace similarity of the LoRA paper (§7): ‖U_aᵀU_b‖_F² / min(k_a, k_b). None if a delta is 0.
pub fn subspace_similarity(a: &Factored, b: &Factored) -> Option<f64> {
    let (ma, mb) = (left_basis_coeffs(a), left_basis_coeffs(b));
    let k = ma.ncols().min(mb.ncols());
    if k == 0 {
        return None;
    }
    let (ra, rb) = (a.rank() as f64, b.rank() as f64);
    let (ka, kb) = (ma.ncols() as f64, mb.ncols() as f64);
    // Mᵀ(B_aᵀB_b)M costs r_a·r_b per output row (and an r_a×r_b matrix); (B_a M_a)ᵀ(B_b M_b)
    // costs r_a·k_a + r_b·k_b + k_a·k_b: cheaper when the ranks exceed the numerical ranks.
    let x = if ra * rb <= ra * ka + rb * kb + ka * kb {
        let bb = a.b_t.view() * b.b_t.view().transpose();
        ma.transpose() * bb * mb
    } else {
        let ua = a.b_t.view().transpose() * &ma;
        let ub = b.b_t.view().transpose() * &mb;
        ua.transpose() * ub
    };
    let fro2: f64 = (0..x.nrows())
        .flat_map(|i| (0..x.ncols()).map(move |j| (i, j)))
        .map(|(i, j)| x[(i, j)].powi(2))
        .sum();
    Some((fro2 / k as f64).min(1.0))
}

/// Cosine similarity ⟨ΔW_a, ΔW_b⟩ / (‖ΔW_a‖‖ΔW_b‖); None when either delta is zero.
pub fn cosine(a: &Factored, b: &Factored) -> Option<f64> {
    let (na, nb) = (a.fro(), b.fro());
    if na == 0.0 || nb == 0.0 {
        return None;
    }
    Some((inner(a, b) / (na * nb)).clamp(-1.0, 1.0))
}

/// The singular triplets of a delta above RANK_TOL·σ₁, from its factors: ΔW = s·U·diag(σ)·Vᵀ
/// up to the sign of s (which no norm or subspace depends on).
pub struct Bases {
    /// σ(ΔW) (scaled by |s|), descending.
    pub sigma: Vec<f64>,
    /// Left singular vectors (out × k), orthonormal columns.
    pub u: Mat<f64>,
    /// Right singular vectors (in × k), orthonormal columns.
    pub v: Mat<f64>,
}

/// Left and right singular bases of ΔW without forming it: with the core C = R_B R_Aᵀ = U_c Σ V_cᵀ,
/// B R_Aᵀ V_c = Q_B C V_c = Q_B U_c Σ and Aᵀ R_Bᵀ U_c = Q_A Cᵀ U_c = Q_A V_c Σ, so
/// U = B R_Aᵀ V_c Σ⁻¹ and V = Aᵀ R_Bᵀ U_c Σ⁻¹ (no inverse of R). Empty for a zero or
/// non-finite delta.
pub fn bases(f: &Factored) -> Bases {
    let (out, inn) = (f.b_t.ncols(), f.a_t.nrows());
    let empty = || Bases {
        sigma: vec![],
        u: Mat::zeros(out, 0),
        v: Mat::zeros(inn, 0),
    };
    if !f.is_finite() {
        return empty();
    }
    let b = f.b_t.view().transpose();
    let r_b = &f.r_b;
    let core = r_b * f.r_a.transpose();
    let Ok(svd) = core.thin_svd() else {
        return empty();
    };
    let s = svd.S().column_vector();
    let mut idx: Vec<usize> = (0..s.nrows()).collect();
    idx.sort_by(|&x, &y| s[y].total_cmp(&s[x]));
    let s1 = idx.first().map_or(0.0, |&i| s[i]);
    idx.retain(|&i| s1 > 0.0 && s[i] > RANK_TOL * s1);
    let (cu, cv) = (svd.U(), svd.V());
    let vc = Mat::from_fn(cv.nrows(), idx.len(), |i, j| cv[(i, idx[j])] / s[idx[j]]);
    let uc = Mat::from_fn(cu.nrows(), idx.len(), |i, j| cu[(i, idx[j])] / s[idx[j]]);
    let u = b * (f.r_a.transpose() * vc);
    let v = f.a_t.view() * (r_b.transpose() * uc);
    Bases {
        sigma: idx.iter().map(|&i| s[i] * f.scale.abs()).collect(),
        u,
        v,
    }
}
