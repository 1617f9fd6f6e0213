//! The subspace similarity of two checkpoints of a delta, in factored form: the top-k left
//! singular vectors of ΔW = s·B·A come from B and the R's of the Gram pass (BᵀB = R_BᵀR_B,
//! AAᵀ = R_AᵀR_A) without forming ΔW: with the core C = R_B R_Aᵀ = U_c Σ V_cᵀ,
//! U_k = B·R_Aᵀ·V_c,k·Σ_k⁻¹ (as `compute::math::bases`, without the right vectors the timeline
//! does not need). It costs one more read of B (out × r) per delta and out·r·k flops; the basis is
//! kept in f32 (out × k per delta), which bounds the similarity's error near 10⁻⁶.

use crate::compute::math::{ColMajor, FactorR};
use faer::Mat;

/// The top `k` left singular vectors of s·B·A (out × k', k' ≤ k: only σ > 0 count), from Bᵀ as
/// read and the factors' R's. None when the core's SVD fails (never seen) or nothing is left.
pub fn left_basis(b_t: &ColMajor, r_b: &FactorR, r_a: &FactorR, k: usize) -> Option<Mat<f32>> {
    if !(r_b.finite && r_a.finite) || k == 0 {
        return None;
    }
    let core = &r_b.r * r_a.r.transpose();
    let svd = core.thin_svd().ok()?;
    let s = svd.S().column_vector();
    let mut idx: Vec<usize> = (0..s.nrows()).collect();
    idx.sort_by(|&x, &y| s[y].total_cmp(&s[x]));
    idx.retain(|&i| s[i] > 0.0);
    idx.truncate(k);
    if idx.is_empty() {
        return None;
    }
    let cv = svd.V();
    let vc = Mat::from_fn(cv.nrows(), idx.len(), |i, j| cv[(i, idx[j])] / s[idx[j]]);
    let u = b_t.view().transpose() * (r_a.r.transpose() * vc);
    Some(Mat::from_fn(u.nrows(), u.ncols(), |i, j| u[(i, j)] as f32))
}

/// ‖U_aᵀU_b‖_F² / k over the first k = min(k_a, k_b) columns of each basis: 1 when the top-k
/// subspaces are the same, k'/k when they share k' directions, 0 when orthogonal. None when a
/// basis is empty or the bases have different heights.
pub fn similarity(a: &Mat<f32>, b: &Mat<f32>) -> Option<f64> {
    let k = a.ncols().min(b.ncols());
    if k == 0 || a.nrows() != b.nrows() {
        return None;
    }
    let x = a.as_ref().subcols(0, k).transpose() * b.as_ref().subcols(0, k);
    let mut fro2 = 0.0f64;
    for j in 0..k {
        for i in 0..k {
            fro2 += (x[(i, j)] as f64).powi(2);
        }
    }
    Some((fro2 / k as f64).min(1.0))
}
