//! The Gram kernel: R of the thin QR of tall factors M (n × r: Aᵀ, or B) read in place from the
//! map, in any of the four dtypes and with any strides (PEFT's stride-E expert columns, MLX's
//! transposed factors, one slice of a 3D tensor).
//!
//! No f64 copy of a whole factor is made: the rows are widened to f64 one block at a time into
//! a scratch of about 128 KB (it stays in cache) and accumulated into MᵀM with faer's FMA
//! kernels (runtime-dispatched SIMD). All the factors taken from one tensor are served from the
//! same block of rows, so PEFT's packed B (every expert's columns interleaved in each row) is
//! read from memory once, not once per expert.

use crate::compute::math::{self, FactorR};
use crate::compute::tensor::Elem;
use faer::linalg::matmul::triangular::{self, BlockStructure};
use faer::{Accum, Mat, MatRef, Par};
use ndarray::{s, ArrayView2};

/// f64 values in the scratch block (its row count is this over r): 128 KB.
const BLOCK_ELEMS: usize = 16 * 1024;
/// Bytes of the tensor one block of rows spans across all its factors (PEFT's packed B: every
/// expert's columns), kept in L2 while each factor takes its columns from it.
const BLOCK_SPAN_BYTES: usize = 512 * 1024;
/// Fewest rows in a block: below this faer's per-call overhead dominates.
const MIN_BLOCK_ROWS: usize = 16;

/// R (min(n, r) × r, RᵀR = MᵀM) of every tall matrix, all views of one tensor.
pub fn tall_rs<T: Elem>(talls: &[ArrayView2<'_, T>]) -> Vec<FactorR> {
    // A short factor's r×r Gram is rank-deficient and can be huge (r = 65536 on 2×2): Householder.
    let tall: Vec<usize> = (0..talls.len())
        .filter(|&i| talls[i].nrows() >= talls[i].ncols())
        .collect();
    let picked: Vec<ArrayView2<'_, T>> = tall.iter().map(|&i| talls[i].view()).collect();
    let mut grams: Vec<Option<Mat<f64>>> = talls.iter().map(|_| None).collect();
    for (&i, g) in tall.iter().zip(grams_lower(&picked)) {
        grams[i] = Some(g);
    }
    talls
        .iter()
        .zip(grams)
        .map(|(m, g)| factor_r(m.view(), g))
        .collect()
}

/// R from the Gram matrix when Cholesky holds, else Householder QR of the widened factor.
fn factor_r<T: Elem>(m: ArrayView2<'_, T>, gram: Option<Mat<f64>>) -> FactorR {
    // NaN or ±inf in M makes its Gram diagonal (Σ x²) NaN or inf; a finite diagonal proves M
    // finite at no extra pass. A non-finite diagonal can also be an f64 overflow: ask M itself.
    let diag_finite = gram
        .as_ref()
        .is_some_and(|g| (0..g.nrows()).all(|k| g[(k, k)].is_finite()));
    let finite = diag_finite || m.iter().all(|x| x.to_f64().is_finite());
    if !finite {
        return FactorR::non_finite(m.ncols());
    }
    // A zero factor (a LoRA at its zero initialisation, common in dead adapters) has R = 0;
    // Cholesky refuses its zero Gram, and Householder on it would cost a QR for nothing. A zero
    // diagonal can also be f64 squares underflowing: the values themselves decide.
    let zero_diag = gram
        .as_ref()
        .is_some_and(|g| (0..g.nrows()).all(|k| g[(k, k)] == 0.0));
    if zero_diag && m.iter().all(|x| x.to_f64() == 0.0) {
        let (n, r) = m.dim();
        return FactorR {
            r: Mat::zeros(n.min(r), r),
            finite,
        };
    }
    let r = diag_finite
        .then(|| gram.and_then(math::r_from_gram))
        .flatten()
        .unwrap_or_else(|| math::householder_r(dense(m).as_ref()));
    FactorR { r, finite }
}

/// The factor widened to a dense f64 matrix (the Householder fallback only).
fn dense<T: Elem>(m: ArrayView2<'_, T>) -> Mat<f64> {
    Mat::from_fn(m.nrows(), m.ncols(), |i, k| m[(i, k)].to_f64())
}

/// Lower triangles of MᵀM for every tall view, blocked over the long dimension n.
pub fn grams_lower<T: Elem>(talls: &[ArrayView2<'_, T>]) -> Vec<Mat<f64>> {
    let n = talls.iter().map(|m| m.nrows()).max().unwrap_or(0);
    let r_max = talls.iter().map(|m| m.ncols()).max().unwrap_or(0).max(1);
    let r_sum: usize = talls.iter().map(|m| m.ncols()).sum::<usize>().max(1);
    let span = BLOCK_SPAN_BYTES / (r_sum * std::mem::size_of::<T>());
    let rows = (BLOCK_ELEMS / r_max).min(span).max(MIN_BLOCK_ROWS);
    let mut pack = vec![0.0; rows.min(n) * r_max];
    let mut out: Vec<Mat<f64>> = talls
        .iter()
        .map(|m| Mat::zeros(m.ncols(), m.ncols()))
        .collect();
    for i0 in (0..n).step_by(rows) {
        // Every factor takes this block of rows while it is in cache.
        for (m, g) in talls.iter().zip(&mut out) {
            let i1 = (i0 + rows).min(m.nrows());
            if i1 <= i0 {
                continue;
            }
            let (h, r) = (i1 - i0, m.ncols());
            let p = &mut pack[..h * r];
            let p = if widen(m.slice(s![i0..i1, ..]), p) {
                MatRef::from_column_major_slice(p, h, r)
            } else {
                MatRef::from_row_major_slice(p, h, r)
            };
            triangular::matmul(
                g.as_mut(),
                BlockStructure::TriangularLower,
                Accum::Add,
                p.transpose(),
                BlockStructure::Rectangular,
                p,
                BlockStructure::Rectangular,
                1.0,
                Par::Seq,
            );
        }
    }
    out
}

/// Widens a block (h × r, any strides) into `pack` in the block's own memory order, so that
/// both the reads and the writes are sequential: column-major when the columns are contiguous
/// (Aᵀ; returns true), row-major otherwise (B, PEFT's stride-E columns; returns false).
fn widen<T: Elem>(block: ArrayView2<'_, T>, pack: &mut [f64]) -> bool {
    let [rs, cs] = [block.strides()[0], block.strides()[1]].map(|s| s.unsigned_abs());
    let col_major = rs <= cs;
    let lanes = if col_major {
        block.columns().into_iter()
    } else {
        block.rows().into_iter()
    };
    let len = if col_major {
        block.nrows()
    } else {
        block.ncols()
    };
    for (lane, dst) in lanes.zip(pack.chunks_exact_mut(len.max(1))) {
        match lane.as_slice() {
            Some(src) => dst.iter_mut().zip(src).for_each(|(d, x)| *d = x.to_f64()),
            None => dst.iter_mut().zip(lane).for_each(|(d, x)| *d = x.to_f64()),
        }
    }
    col_major
}
