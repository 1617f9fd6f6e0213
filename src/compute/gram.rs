//! The Gram kernel: R of the thin QR of tall factors M (n × r: Aᵀ, or B) read in place from the
//! map, in any of the four dtypes and with any strides (PEFT's stride-E expert columns, MLX's
//! transposed factors, one slice of a 3D tensor).
//!
//! No f64 copy of a whole factor is made. The rows are taken one block at a time (cache blocking
//! over the long dimension n), and all the factors of one tensor are served from the same block,
//! so PEFT's packed B (every expert's columns interleaved in each row) is read from memory once,
//! not once per expert. On x86-64 with AVX2 + FMA (+ F16C for F16), detected once at run time,
//! and for ranks up to 64, the block is read straight from the map: four elements at a time,
//! widened to f64 in registers, multiplied and accumulated in f64 with FMA into a register tile
//! of the Gram. Only blocks strided both ways (PEFT's expert B) are first widened into a small
//! f64 scratch; larger ranks take faer's packed GEMM on the widened block. The scalar kernel is
//! the portable fallback and the reference the SIMD one is tested against (`Kernel`).

pub use crate::compute::kernel::Kernel;
use crate::compute::math::{self, ColMajor, FactorR, Factored};
use faer::linalg::matmul::triangular::{self, BlockStructure};
use faer::{Accum, Mat, MatMut, MatRef, Par};
use ndarray::{s, ArrayView2, ArrayViewMut1, ShapeBuilder};

/// Bytes of one factor's block of rows: the SIMD tiles read the block again for every tile of
/// the Gram, so it must stay in L1/L2.
const BLOCK_BYTES: usize = 64 * 1024;
/// Bytes of the tensor one block of rows spans across all its factors (PEFT's packed B: every
/// expert's columns), kept in L2 while each factor takes its columns from it.
const BLOCK_SPAN_BYTES: usize = 512 * 1024;
/// Fewest rows in a block: below this the per-block horizontal sums dominate.
const MIN_BLOCK_ROWS: usize = 64;
/// Largest rank the SIMD register tiles take. Above it (r = 128: 15.3 ms against 18.1 ms per
/// 4096 × 2880 delta, r = 512: 254 against 450 ms, `cargo bench --bench math`) the Gram
/// outgrows the caches and faer's packed GEMM on the widened block is faster.
const SIMD_MAX_RANK: usize = 64;

/// Element types lorascope computes on (widened to f64 when read).
pub trait Elem: bytemuck::Pod {
    fn to_f64(self) -> f64;
}
impl Elem for f32 {
    fn to_f64(self) -> f64 {
        self as f64
    }
}
impl Elem for f64 {
    fn to_f64(self) -> f64 {
        self
    }
}
impl Elem for half::f16 {
    fn to_f64(self) -> f64 {
        half::f16::to_f64(self)
    }
}
impl Elem for half::bf16 {
    fn to_f64(self) -> f64 {
        half::bf16::to_f64(self)
    }
}

/// An element type the Gram kernels read: `Elem` plus its SIMD widening loads.
pub trait Wide: Elem {
    /// Four consecutive elements at `p`, widened to f64.
    ///
    /// # Safety
    /// `p` is valid for reading four elements, and the CPU has AVX2, FMA and F16C.
    #[cfg(target_arch = "x86_64")]
    unsafe fn load4(p: *const Self) -> std::arch::x86_64::__m256d;

    /// The element at `p`, widened to f64 and broadcast to the four lanes.
    ///
    /// # Safety
    /// `p` is valid for reading one element, and the CPU has AVX2, FMA and F16C.
    #[cfg(target_arch = "x86_64")]
    unsafe fn load1(p: *const Self) -> std::arch::x86_64::__m256d;
}

#[cfg(target_arch = "x86_64")]
mod loads {
    use super::Wide;
    use std::arch::x86_64::*;

    impl Wide for f64 {
        #[inline]
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn load4(p: *const f64) -> __m256d {
            // SAFETY: the caller guarantees four readable elements.
            unsafe { _mm256_loadu_pd(p) }
        }
        #[inline]
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn load1(p: *const f64) -> __m256d {
            // SAFETY: the caller guarantees one readable element.
            unsafe { _mm256_broadcast_sd(&*p) }
        }
    }

    impl Wide for f32 {
        #[inline]
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn load4(p: *const f32) -> __m256d {
            // SAFETY: the caller guarantees four readable elements (16 bytes).
            unsafe { _mm256_cvtps_pd(_mm_loadu_ps(p)) }
        }
        #[inline]
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn load1(p: *const f32) -> __m256d {
            // SAFETY: the caller guarantees one readable element.
            unsafe { _mm256_set1_pd(*p as f64) }
        }
    }

    /// Four 16-bit values (8 bytes) at `p`, in the low half of an xmm register.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn load_u16x4<T>(p: *const T) -> __m128i {
        // SAFETY: the caller guarantees 8 readable bytes; unaligned 64-bit loads are allowed.
        unsafe { _mm_loadl_epi64(p.cast()) }
    }

    impl Wide for half::bf16 {
        #[inline]
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn load4(p: *const half::bf16) -> __m256d {
            // bf16 is the top half of an f32: interleaving zeros below each value widens it exactly.
            // SAFETY: the caller guarantees four readable elements.
            let f = unsafe { _mm_unpacklo_epi16(_mm_setzero_si128(), load_u16x4(p)) };
            _mm256_cvtps_pd(_mm_castsi128_ps(f))
        }
        #[inline]
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn load1(p: *const half::bf16) -> __m256d {
            // SAFETY: the caller guarantees one readable element.
            let bits = unsafe { *p }.to_bits() as u32;
            _mm256_set1_pd(f32::from_bits(bits << 16) as f64)
        }
    }

    impl Wide for half::f16 {
        #[inline]
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn load4(p: *const half::f16) -> __m256d {
            // SAFETY: the caller guarantees four readable elements; F16C widens them exactly.
            unsafe { _mm256_cvtps_pd(_mm_cvtph_ps(load_u16x4(p))) }
        }
        #[inline]
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn load1(p: *const half::f16) -> __m256d {
            // SAFETY: the caller guarantees one readable element.
            let bits = unsafe { *p }.to_bits() as i16;
            _mm256_cvtps_pd(_mm_cvtph_ps(_mm_set1_epi16(bits)))
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod loads {
    impl super::Wide for f64 {}
    impl super::Wide for f32 {}
    impl super::Wide for half::bf16 {}
    impl super::Wide for half::f16 {}
}

/// R (min(n, r) × r, RᵀR = MᵀM) of every tall matrix, all views of one tensor.
pub fn tall_rs<T: Wide>(talls: &[ArrayView2<'_, T>]) -> Vec<FactorR> {
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

/// R from the Gram matrix (`math::r_from_gram`), else Householder QR of the widened factor.
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
    // no factorisation is needed. A zero diagonal can also be f64 squares underflowing: the
    // values themselves decide (`zero_columns`).
    let zero = gram.as_ref().map(|g| zero_columns(m, g));
    if zero.as_ref().is_some_and(|z| z.iter().all(|&x| x)) {
        let (n, r) = m.dim();
        return FactorR {
            r: Mat::zeros(n.min(r), r),
            finite,
        };
    }
    let r = match (diag_finite, gram, zero) {
        (true, Some(g), Some(zero)) => math::r_from_gram(g, &zero),
        _ => None,
    }
    .unwrap_or_else(|| math::householder_r(dense(m).as_ref()));
    FactorR { r, finite }
}

/// Which columns of M are exactly zero: a zero Gram diagonal (Σx² = 0), confirmed on the
/// values (the squares of tiny values underflow to 0). Only those columns are read.
fn zero_columns<T: Elem>(m: ArrayView2<'_, T>, g: &Mat<f64>) -> Vec<bool> {
    (0..g.nrows())
        .map(|j| g[(j, j)] == 0.0 && m.column(j).iter().all(|x| x.to_f64() == 0.0))
        .collect()
}

/// R (min(n, r) × r, RᵀR = MᵀM) of a dense f64 tall matrix, finite or not (`FactorR`).
pub fn factor_r_f64(tall: MatRef<'_, f64>, finite: bool) -> FactorR {
    if !finite {
        return FactorR::non_finite(tall.ncols());
    }
    if tall.row_stride() < 0 || tall.col_stride() < 0 {
        return factor_r_f64(tall.to_owned().as_ref(), finite);
    }
    let gram = (tall.nrows() >= tall.ncols()).then(|| gram_lower_f64(tall));
    factor_r(view_of(tall), gram)
}

/// `math::Factored` of a delta from Bᵀ (r×out) and Aᵀ (in×r) as read.
pub fn factored(scale: f64, b_t: ColMajor, a_t: ColMajor, want_vectors: bool) -> Factored {
    let r_b = factor_r_f64(b_t.view().transpose(), b_t.is_finite());
    let r_a = factor_r_f64(a_t.view(), a_t.is_finite());
    Factored::from_rs(scale, b_t, a_t, &r_b, &r_a, want_vectors)
}

/// The factor widened to a dense f64 matrix (the Householder fallback only).
fn dense<T: Elem>(m: ArrayView2<'_, T>) -> Mat<f64> {
    Mat::from_fn(m.nrows(), m.ncols(), |i, k| m[(i, k)].to_f64())
}

/// A faer matrix with non-negative strides viewed as an ndarray view (not copied).
fn view_of(m: MatRef<'_, f64>) -> ArrayView2<'_, f64> {
    let (n, r) = (m.nrows(), m.ncols());
    let (rs, cs) = (m.row_stride(), m.col_stride());
    assert!(rs >= 0 && cs >= 0, "negative strides");
    // SAFETY: faer's shape, non-negative strides and pointer address exactly the elements `m`
    // borrows, for no longer than `m` lives.
    unsafe { ArrayView2::from_shape_ptr((n, r).strides((rs as usize, cs as usize)), m.as_ptr()) }
}

/// The lower triangle of MᵀM of a dense f64 matrix (the factors of `math::Factored`).
pub fn gram_lower_f64(tall: MatRef<'_, f64>) -> Mat<f64> {
    let r = tall.ncols();
    let (rs, cs) = (tall.row_stride(), tall.col_stride());
    if r > SIMD_MAX_RANK || rs < 0 || cs < 0 {
        // Already f64: faer's GEMM takes the whole matrix, with no widened blocks to add up.
        let mut g = Mat::zeros(r, r);
        lower_add(g.as_mut(), tall);
        return g;
    }
    grams_lower(&[view_of(tall)]).swap_remove(0)
}

/// Rows of a block: one factor's block stays in L1/L2, the span of all of them in L2.
fn block_rows<T>(talls: &[ArrayView2<'_, T>]) -> usize {
    let r_max = talls.iter().map(|m| m.ncols()).max().unwrap_or(0).max(1);
    let r_sum: usize = talls.iter().map(|m| m.ncols()).sum::<usize>().max(1);
    let size = std::mem::size_of::<T>();
    (BLOCK_BYTES / (r_max * size))
        .min(BLOCK_SPAN_BYTES / (r_sum * size))
        .max(MIN_BLOCK_ROWS)
}

/// Lower triangles of MᵀM for every tall view, with the detected kernel.
pub fn grams_lower<T: Wide>(talls: &[ArrayView2<'_, T>]) -> Vec<Mat<f64>> {
    grams_lower_with(talls, Kernel::detected())
}

/// Lower triangles of MᵀM for every tall view, blocked over the long dimension n
/// (`for_blocks`), with the given kernel (the scalar one when the CPU cannot run it).
pub fn grams_lower_with<T: Wide>(talls: &[ArrayView2<'_, T>], kernel: Kernel) -> Vec<Mat<f64>> {
    let kernel = if kernel.available() {
        kernel
    } else {
        Kernel::Scalar
    };
    let mut out: Vec<Vec<f64>> = talls
        .iter()
        .map(|m| vec![0.0; m.ncols() * m.ncols()])
        .collect();
    let never = for_blocks(talls, |_, blocks, pack| {
        for (block, g) in blocks.iter().zip(&mut out) {
            if block.nrows() > 0 {
                accumulate(kernel, block.view(), g, pack);
            }
        }
        Ok::<(), std::convert::Infallible>(())
    });
    let Ok(()) = never;
    talls
        .iter()
        .zip(out)
        .map(|(m, g)| {
            let r = m.ncols();
            Mat::from_fn(r, r, |p, q| if q <= p { g[q * r + p] } else { 0.0 })
        })
        .collect()
}

/// The one blocking of the long dimension n that the Gram and product passes share: the rows
/// i0..i0 + h of every tall view at once (each view's own block is empty past its end), so all
/// the factors of one tensor (PEFT's interleaved expert columns) take a block while it is in
/// cache and the tensor is read from memory once. `each` gets i0, the blocks and a scratch of
/// h × r_max f64 (`widen`'s).
fn for_blocks<'a, T, E>(
    talls: &[ArrayView2<'a, T>],
    mut each: impl FnMut(usize, &[ArrayView2<'a, T>], &mut [f64]) -> Result<(), E>,
) -> Result<(), E> {
    let n = talls.iter().map(|m| m.nrows()).max().unwrap_or(0);
    let r_max = talls.iter().map(|m| m.ncols()).max().unwrap_or(0).max(1);
    let rows = block_rows::<T>(talls);
    let mut pack = vec![0.0; rows.min(n).max(1) * r_max];
    let mut blocks = Vec::with_capacity(talls.len());
    for i0 in (0..n).step_by(rows) {
        blocks.clear();
        blocks.extend(talls.iter().map(|m| {
            let (start, end) = (i0.min(m.nrows()), (i0 + rows).min(m.nrows()));
            (*m).slice_move(s![start..end, ..])
        }));
        each(i0, &blocks, &mut pack)?;
    }
    Ok(())
}

/// M·X for every tall view M (n × r) and its X (r × k), a block of rows at a time
/// (`for_blocks`): each block is widened to f64 and multiplied by faer's GEMM, and
/// `sink(i0, products)` takes rows i0.. of every product (h × k; empty past a view's end) before
/// the next block is read. No product is held whole: the caller stores or encodes each block.
pub fn products<T: Elem, E>(
    talls: &[ArrayView2<'_, T>],
    xs: &[MatRef<'_, f64>],
    mut sink: impl FnMut(usize, &[MatRef<'_, f64>]) -> Result<(), E>,
) -> Result<(), E> {
    let rows = block_rows::<T>(talls);
    let mut out: Vec<Mat<f64>> = xs.iter().map(|x| Mat::zeros(rows, x.ncols())).collect();
    for_blocks(talls, |i0, blocks, pack| {
        for ((block, x), o) in blocks.iter().zip(xs).zip(&mut out) {
            let (h, r) = block.dim();
            if h == 0 {
                continue;
            }
            let p = &mut pack[..h * r];
            let p = if widen(block.view(), p) {
                MatRef::from_column_major_slice(p, h, r)
            } else {
                MatRef::from_row_major_slice(p, h, r)
            };
            let dst = o.as_mut().subrows_mut(0, h);
            faer::linalg::matmul::matmul(dst, Accum::Replace, p, *x, 1.0, Par::Seq);
        }
        let views: Vec<MatRef<'_, f64>> = blocks
            .iter()
            .zip(&out)
            .map(|(b, o)| o.as_ref().subrows(0, b.nrows()))
            .collect();
        sink(i0, &views)
    })
}

/// g (r × r, column-major; lower triangle) += blockᵀ·block.
fn accumulate<T: Wide>(kernel: Kernel, block: ArrayView2<'_, T>, g: &mut [f64], pack: &mut [f64]) {
    match kernel {
        Kernel::Scalar => scalar(block, g, pack),
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx2Fma => {
            let (h, r) = block.dim();
            let [rs, cs] = [block.strides()[0], block.strides()[1]];
            // SAFETY (all three calls): `available()` confirmed AVX2, FMA and F16C before this
            // kernel was chosen, and pointer, shape and strides describe a live view (or `pack`,
            // which holds h × r widened values in the layout passed).
            if r > SIMD_MAX_RANK {
                gemm(block, g, pack)
            } else if rs == 1 || h == 1 {
                unsafe { avx2::col_dots(block.as_ptr(), h, r, cs, g) }
            } else if cs == 1 && r >= 4 {
                unsafe { avx2::row_outer(block.as_ptr(), h, r, rs, g) }
            } else if r < 4 {
                scalar(block, g, pack)
            } else {
                let p = &mut pack[..h * r];
                if widen(block, p) {
                    unsafe { avx2::col_dots(p.as_ptr(), h, r, h as isize, g) }
                } else {
                    unsafe { avx2::row_outer(p.as_ptr(), h, r, r as isize, g) }
                }
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        Kernel::Avx2Fma => unreachable!("not available: replaced by Scalar"),
    }
}

/// g += blockᵀ·block by faer's packed GEMM on the widened block: at large ranks its packing
/// and L2 blocking over r beat the register tiles (the Gram no longer fits in cache).
fn gemm<T: Elem>(block: ArrayView2<'_, T>, g: &mut [f64], pack: &mut [f64]) {
    let (h, r) = block.dim();
    let p = &mut pack[..h * r];
    let p = if widen(block, p) {
        MatRef::from_column_major_slice(p, h, r)
    } else {
        MatRef::from_row_major_slice(p, h, r)
    };
    lower_add(MatMut::from_column_major_slice_mut(g, r, r), p);
}

/// The lower triangle of g += mᵀm by faer.
fn lower_add(g: MatMut<'_, f64>, m: MatRef<'_, f64>) {
    triangular::matmul(
        g,
        BlockStructure::TriangularLower,
        Accum::Add,
        m.transpose(),
        BlockStructure::Rectangular,
        m,
        BlockStructure::Rectangular,
        1.0,
        Par::Seq,
    );
}

/// The reference: each row widened, then g[p, q] += m[i, p]·m[i, q] in row order (the inner
/// loop runs along a column of g, so the compiler can vectorise it without reordering a sum).
fn scalar<T: Elem>(block: ArrayView2<'_, T>, g: &mut [f64], row: &mut [f64]) {
    let r = block.ncols();
    let row = &mut row[..r];
    for lane in block.rows() {
        row.iter_mut().zip(lane).for_each(|(d, x)| *d = x.to_f64());
        for q in 0..r {
            let x = row[q];
            let col = &mut g[q * r..(q + 1) * r];
            for p in q..r {
                col[p] += row[p] * x;
            }
        }
    }
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
            // PEFT's expert B: a lane of stride E. Zip runs a pointer loop over it (the lane's
            // own iterator counts indices per element: 3× slower on this path).
            None => ndarray::Zip::from(ArrayViewMut1::from(dst))
                .and(&lane)
                .for_each(|d, x| *d = x.to_f64()),
        }
    }
    col_major
}

/// The AVX2 + FMA micro-kernels. Both keep a 9-vector tile of the Gram in registers while
/// they run down the rows of the block, and add it to g once per block.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::Wide;
    use std::arch::x86_64::*;

    /// Columns p × columns q of the dot-product tile: 9 accumulators + 3 + 1 loads leave
    /// registers free (with all 16 taken, LLVM spilled an accumulator to the stack in the loop).
    const P: usize = 3;
    const Q: usize = 3;

    /// g[p, q] += Σᵢ m[i, p]·m[i, q] (q ≤ p) for an h × r block whose columns are contiguous
    /// (row stride 1; column stride `cs`): dot products of columns, four rows per step.
    ///
    /// # Safety
    /// AVX2, FMA and F16C are available; `m` with row stride 1 and column stride `cs` addresses
    /// h × r readable elements; g holds r × r values.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn col_dots<T: Wide>(
        m: *const T,
        h: usize,
        r: usize,
        cs: isize,
        g: &mut [f64],
    ) {
        let h4 = h - h % 4;
        // Past the last column a tile repeats column r − 1; those sums are dropped.
        let col = |k: usize| m.wrapping_offset(k.min(r - 1) as isize * cs);
        for p0 in (0..r).step_by(P) {
            let mut pc = [m; P];
            for (a, c) in pc.iter_mut().enumerate() {
                *c = col(p0 + a);
            }
            for q0 in (0..(p0 + P).min(r)).step_by(Q) {
                let mut qc = [m; Q];
                for (b, c) in qc.iter_mut().enumerate() {
                    *c = col(q0 + b);
                }
                let mut acc = [[_mm256_setzero_pd(); Q]; P];
                let mut i = 0;
                while i < h4 {
                    let mut x = [_mm256_setzero_pd(); P];
                    for a in 0..P {
                        // SAFETY: rows i..i+4 < h of a column of the block.
                        x[a] = unsafe { T::load4(pc[a].add(i)) };
                    }
                    for b in 0..Q {
                        // SAFETY: as above.
                        let y = unsafe { T::load4(qc[b].add(i)) };
                        for a in 0..P {
                            acc[a][b] = _mm256_fmadd_pd(x[a], y, acc[a][b]);
                        }
                    }
                    i += 4;
                }
                for a in 0..P {
                    for b in 0..Q {
                        let (p, q) = (p0 + a, q0 + b);
                        if p < r && q <= p {
                            let mut s = hsum(acc[a][b]);
                            for t in h4..h {
                                // SAFETY: row t < h of columns p and q.
                                let (x, y) = unsafe { (*pc[a].add(t), *qc[b].add(t)) };
                                s += x.to_f64() * y.to_f64();
                            }
                            g[q * r + p] += s;
                        }
                    }
                }
            }
        }
    }

    /// Rows p × vectors of four q of the outer-product tile (9 accumulators + 3 + 1, as above).
    const RP: usize = 3;
    const RQ: usize = 3;

    /// g[p, q] += Σᵢ m[i, p]·m[i, q] (q ≤ p) for an h × r block (r ≥ 4) whose rows are
    /// contiguous (column stride 1; row stride `rs`): one outer product of each row with itself.
    ///
    /// # Safety
    /// AVX2, FMA and F16C are available; r ≥ 4; `m` with row stride `rs` and column stride 1
    /// addresses h × r readable elements; g holds r × r values.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn row_outer<T: Wide>(
        m: *const T,
        h: usize,
        r: usize,
        rs: isize,
        g: &mut [f64],
    ) {
        for p0 in (0..r).step_by(RP) {
            // Columns q ≤ the tile's last row only: near the diagonal a tile takes one or two
            // vectors, not three of which the last would be discarded.
            let q_end = (p0 + RP).min(r);
            for q0 in (0..q_end).step_by(4 * RQ) {
                let vectors = (q_end - q0).div_ceil(4).min(RQ);
                // SAFETY: forwarded from the caller (q0 < r, so every vector fits in a row).
                unsafe {
                    match vectors {
                        1 => tile::<T, 1>(m, h, r, rs, p0, q0, g),
                        2 => tile::<T, 2>(m, h, r, rs, p0, q0, g),
                        _ => tile::<T, RQ>(m, h, r, rs, p0, q0, g),
                    }
                }
            }
        }
    }

    /// The tile of rows p0.. (RP of them) × NB vectors of four columns from q0 of `row_outer`.
    ///
    /// # Safety
    /// As `row_outer`; q0 < r.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn tile<T: Wide, const NB: usize>(
        m: *const T,
        h: usize,
        r: usize,
        rs: isize,
        p0: usize,
        q0: usize,
        g: &mut [f64],
    ) {
        // A vector starting past r − 4 is moved back to end at r; the lanes it shares with the
        // vector before it are not stored twice.
        let mut qs = [0; NB];
        for (b, s) in qs.iter_mut().enumerate() {
            *s = (q0 + 4 * b).min(r - 4);
        }
        let mut ps = [0; RP];
        for (a, s) in ps.iter_mut().enumerate() {
            *s = (p0 + a).min(r - 1);
        }
        let mut acc = [[_mm256_setzero_pd(); NB]; RP];
        for i in 0..h {
            let row = m.wrapping_offset(i as isize * rs);
            let mut y = [_mm256_setzero_pd(); NB];
            for b in 0..NB {
                // SAFETY: columns qs[b]..qs[b]+4 ≤ r of row i < h.
                y[b] = unsafe { T::load4(row.add(qs[b])) };
            }
            for a in 0..RP {
                // SAFETY: column ps[a] < r of row i < h.
                let x = unsafe { T::load1(row.add(ps[a])) };
                for b in 0..NB {
                    acc[a][b] = _mm256_fmadd_pd(x, y[b], acc[a][b]);
                }
            }
        }
        for (a, tile_row) in acc.iter().enumerate() {
            let p = p0 + a;
            if p >= r {
                continue;
            }
            for (b, &v4) in tile_row.iter().enumerate() {
                let mut lanes = [0.0; 4];
                // SAFETY: `lanes` holds four f64.
                unsafe { _mm256_storeu_pd(lanes.as_mut_ptr(), v4) };
                for (l, v) in lanes.iter().enumerate() {
                    let q = qs[b] + l;
                    if q >= q0 + 4 * b && q <= p {
                        g[q * r + p] += v;
                    }
                }
            }
        }
    }

    /// The sum of the four lanes.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn hsum(v: __m256d) -> f64 {
        let s = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd::<1>(v));
        _mm_cvtsd_f64(_mm_add_sd(s, _mm_unpackhi_pd(s, s)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;

    /// The products of interleaved views (PEFT's packed expert B: column j·E + e) and of a
    /// transposed view, over several blocks of rows and a shorter view, equal dense M·X; every
    /// row arrives once, in blocks that follow each other.
    #[test]
    fn blocked_products_equal_dense_ones() {
        let (n, e, r, k) = (8000, 3, 5, 2);
        let mut rng = crate::synth::Rng::new(7);
        let t = Array2::from_shape_fn((n, e * r), |_| rng.normal() as f32);
        let a = Array2::from_shape_fn((r, 700), |_| rng.normal() as f32);
        let mut talls: Vec<ArrayView2<'_, f32>> = (0..e).map(|x| t.slice(s![.., x..;e])).collect();
        talls.push(a.t());
        let xs: Vec<Mat<f64>> = talls
            .iter()
            .map(|_| Mat::from_fn(r, k, |_, _| rng.normal()))
            .collect();
        let xr: Vec<MatRef<'_, f64>> = xs.iter().map(|x| x.as_ref()).collect();
        assert!(block_rows(&talls) < n, "one block only");
        let mut got: Vec<Mat<f64>> = talls.iter().map(|m| Mat::zeros(m.nrows(), k)).collect();
        let mut next = vec![0; talls.len()];
        products(&talls, &xr, |i0, blocks| {
            for (f, b) in blocks.iter().enumerate() {
                if b.nrows() > 0 {
                    assert_eq!(i0, next[f]);
                    next[f] += b.nrows();
                    got[f].as_mut().subrows_mut(i0, b.nrows()).copy_from(b);
                }
            }
            Ok::<(), ()>(())
        })
        .unwrap();
        for (f, m) in talls.iter().enumerate() {
            assert_eq!(next[f], m.nrows());
            let dense = Mat::from_fn(m.nrows(), r, |i, j| m[(i, j)] as f64);
            let want = &dense * &xs[f];
            assert!((&want - &got[f]).norm_max() < 1e-12 * want.norm_max());
        }
    }
}
