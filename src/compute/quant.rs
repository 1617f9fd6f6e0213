//! GGUF Q8_0 factors, read in place from the map: each chunk of rows (or of 32-aligned columns)
//! is dequantised into a small f32 buffer and its Gram added up in f64 by the same kernel as
//! the float dtypes (`gram::grams_lower`), so no factor is ever copied whole on the fast path.
//! Only the fallbacks (a short factor, a Gram Cholesky refuses, NaN or zeros) widen the factor
//! densely and hand it to `gram::tall_rs`, as the float dtypes do.

use crate::adapter::gguf::{dequantize_q8_0, Q8_0_BLOCK, Q8_0_BYTES};
use crate::adapter::layout::{Factor, Pick};
use crate::compute::gram;
use crate::compute::math::{self, FactorR};
use crate::compute::tensor::{ColMajor, Side};
use crate::error::{Error, Result};
use faer::Mat;
use ndarray::{Array2, ArrayView2};

/// Values dequantised per chunk (64 kB of f32: the Gram kernel's block stays in L2).
const CHUNK_VALUES: usize = 16 << 10;

/// A stored 2D Q8_0 matrix T (row-major, `cols` a multiple of 32): the whole tensor or one
/// expert's slice of a 3D one.
struct Q8<'a> {
    raw: &'a [u8],
    rows: usize,
    cols: usize,
}

impl Q8<'_> {
    fn row_bytes(&self) -> usize {
        self.cols / Q8_0_BLOCK * Q8_0_BYTES
    }
    /// Blocks `b0..b1` of row `i`, dequantised into `out`.
    fn row_blocks(&self, i: usize, b0: usize, b1: usize, out: &mut [f32]) {
        let start = i * self.row_bytes();
        dequantize_q8_0(
            &self.raw[start + b0 * Q8_0_BYTES..start + b1 * Q8_0_BYTES],
            out,
        );
    }
}

/// The factor's stored matrix T, whether the factor's matrix M is Tᵀ (`Pick::Transposed`), and
/// the rows of M it keeps (`Factor::rows`, the gate or up half of a fused B).
fn view<'a>(
    raw: &'a [u8],
    shape: &[usize],
    f: &Factor,
    name: &str,
) -> Result<(Q8<'a>, bool, Vec<usize>)> {
    let bad = |what: String| Error::Shape(format!("Q8_0 tensor '{name}' {shape:?}: {what}"));
    let (q, transposed) = match (f.pick, shape) {
        (Pick::All | Pick::Transposed, &[rows, cols]) => {
            (Q8 { raw, rows, cols }, f.pick == Pick::Transposed)
        }
        (Pick::Index { index } | Pick::IndexTransposed { index }, &[e, rows, cols])
            if index < e =>
        {
            let size = rows * cols / Q8_0_BLOCK * Q8_0_BYTES;
            let raw = &raw[index * size..(index + 1) * size];
            let transposed = matches!(f.pick, Pick::IndexTransposed { .. });
            (Q8 { raw, rows, cols }, transposed)
        }
        (p, _) => {
            return Err(bad(format!(
                "lorascope reads Q8_0 factors whole or per expert, not as {p:?}"
            )))
        }
    };
    if q.cols % Q8_0_BLOCK != 0 || q.raw.len() != q.rows * q.row_bytes() {
        return Err(bad("rows are not whole Q8_0 blocks".into()));
    }
    let m_rows = if transposed { q.cols } else { q.rows };
    let rows: Vec<usize> = match f.rows {
        None => (0..m_rows).collect(),
        Some(_) if transposed => return Err(bad("a row selection of a transposed factor".into())),
        Some(r) => {
            let idx: Vec<usize> = (0..r.len).map(|k| r.start + k * r.step).collect();
            if idx.is_empty() || idx.iter().any(|&i| i >= m_rows) {
                return Err(bad(format!("has no rows {idx:?} to split gate and up")));
            }
            idx
        }
    };
    Ok((q, transposed, rows))
}

/// M (A: r × in, B: out × r) dequantised whole, row-major: factor_t's copy and the fallbacks.
fn dense_m(q: &Q8, transposed: bool, rows: &[usize]) -> Array2<f32> {
    let blocks = q.cols / Q8_0_BLOCK;
    let mut t = Array2::<f32>::zeros((if transposed { q.rows } else { rows.len() }, q.cols));
    let picked: Vec<usize> = if transposed {
        (0..q.rows).collect()
    } else {
        rows.to_vec()
    };
    for (k, &i) in picked.iter().enumerate() {
        let out = t.row_mut(k).into_slice().expect("a fresh row-major array");
        q.row_blocks(i, 0, blocks, out);
    }
    if transposed {
        t.reversed_axes().as_standard_layout().to_owned()
    } else {
        t
    }
}

/// The tall matrix of a factor (Aᵀ for A, B for B) as `gram` takes it.
fn tall_of(m: &Array2<f32>, side: Side) -> ArrayView2<'_, f32> {
    match side {
        Side::A => m.t(),
        Side::B => m.view(),
    }
}

/// R of the factor's tall matrix, from its Gram accumulated chunk by chunk over the map.
pub(crate) fn tall_r(
    raw: &[u8],
    shape: &[usize],
    f: &Factor,
    side: Side,
    name: &str,
) -> Result<FactorR> {
    let (q, transposed, rows) = view(raw, shape, f, name)?;
    // The tall matrix is T's selected rows (B as stored, or A stored transposed) or their
    // transpose: then each chunk is a range of T's columns.
    let tall_is_t = (side == Side::B) != transposed;
    let (n, r) = if tall_is_t {
        (rows.len(), q.cols)
    } else {
        (q.cols, rows.len())
    };
    let fallback = || {
        let m = dense_m(&q, transposed, &rows);
        gram::tall_rs(&[tall_of(&m, side)]).swap_remove(0)
    };
    if n < r || r == 0 {
        return Ok(fallback());
    }
    let mut acc = Mat::<f64>::zeros(r, r);
    let mut add = |block: ArrayView2<f32>| {
        let g = gram::grams_lower(&[block]).swap_remove(0);
        acc += g;
    };
    let blocks = q.cols / Q8_0_BLOCK;
    if tall_is_t {
        let h = (CHUNK_VALUES / q.cols).max(1);
        let mut buf = vec![0f32; h * q.cols];
        for chunk in rows.chunks(h) {
            for (k, &i) in chunk.iter().enumerate() {
                q.row_blocks(i, 0, blocks, &mut buf[k * q.cols..(k + 1) * q.cols]);
            }
            let v = ArrayView2::from_shape((chunk.len(), q.cols), &buf[..chunk.len() * q.cols])
                .expect("the buffer holds the chunk");
            add(v);
        }
    } else {
        // Columns b0·32 .. b1·32 of every kept row: a (rows × w) block whose transpose is w rows
        // of the tall matrix.
        let per = (CHUNK_VALUES / (rows.len() * Q8_0_BLOCK)).max(1);
        let mut buf = vec![0f32; rows.len() * per * Q8_0_BLOCK];
        for b0 in (0..blocks).step_by(per) {
            let b1 = (b0 + per).min(blocks);
            let w = (b1 - b0) * Q8_0_BLOCK;
            for (k, &i) in rows.iter().enumerate() {
                q.row_blocks(i, b0, b1, &mut buf[k * w..(k + 1) * w]);
            }
            let v = ArrayView2::from_shape((rows.len(), w), &buf[..rows.len() * w])
                .expect("the buffer holds the chunk");
            add(v.reversed_axes());
        }
    }
    let diag: Vec<f64> = (0..r).map(|k| acc[(k, k)]).collect();
    if diag.iter().all(|x| x.is_finite()) && diag.iter().any(|&x| x != 0.0) {
        // Dequantised values are f32: their squares cannot underflow in f64, so a zero diagonal
        // is a zero column.
        let zero: Vec<bool> = diag.iter().map(|&x| x == 0.0).collect();
        if let Some(rm) = math::r_from_gram(acc, &zero) {
            return Ok(FactorR {
                r: rm,
                finite: true,
            });
        }
    }
    // NaN/inf (an f16 scale may be), an all-zero factor, or a Gram Cholesky refuses.
    Ok(fallback())
}

/// The factor's matrix M transposed (Mᵀ, column-major) in f64, as `Mapped::factor_t` gives it.
pub(crate) fn factor_t(raw: &[u8], shape: &[usize], f: &Factor, name: &str) -> Result<ColMajor> {
    let (q, transposed, rows) = view(raw, shape, f, name)?;
    Ok(crate::compute::tensor::to_mat_t(
        dense_m(&q, transposed, &rows).view(),
    ))
}

/// Each factor's tall matrix times its X (r × k), handed to `sink` a block of rows at a time as
/// `Mapped::products` does: export's second pass over a Q8_0 source (each factor dequantised
/// whole first: a LoRA factor is small).
pub(crate) fn products(
    raw: &[u8],
    shape: &[usize],
    factors: &[(Factor, Side, faer::MatRef<'_, f64>)],
    name: &str,
    sink: impl FnMut(usize, &[faer::MatRef<'_, f64>]) -> Result<()>,
) -> Result<()> {
    let dense = factors
        .iter()
        .map(|(f, _, _)| {
            let (q, transposed, rows) = view(raw, shape, f, name)?;
            Ok(dense_m(&q, transposed, &rows))
        })
        .collect::<Result<Vec<_>>>()?;
    let talls: Vec<ArrayView2<'_, f32>> = dense
        .iter()
        .zip(factors)
        .map(|(m, (_, side, _))| tall_of(m, *side))
        .collect();
    let xs: Vec<faer::MatRef<'_, f64>> = factors.iter().map(|f| f.2).collect();
    gram::products(&talls, &xs, sink)
}

/// Every value of a Q8_0 tensor as f64, in order.
pub(crate) fn values(raw: &[u8]) -> Vec<f64> {
    let mut out = vec![0f32; raw.len() / Q8_0_BYTES * Q8_0_BLOCK];
    dequantize_q8_0(raw, &mut out);
    out.into_iter().map(f64::from).collect()
}
