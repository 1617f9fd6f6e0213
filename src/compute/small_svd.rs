//! Singular values of the small cores (r ≤ 64 on a side), values only.
//!
//! Every delta ends in the SVD of its r×r core, so for thousands of small deltas (Tinker's 2400 at
//! r = 32) this is a third of the work. faer's general SVD spends most of that time in its robust
//! Givens rotations (a `hypot` per rotation). Here the matrix is first scaled so that its largest
//! entry is 1: a rotation's √(p² + q²) then cannot overflow, and only needs `hypot` when both
//! entries are below 1e-150. The algorithm is the textbook one (Golub & Van Loan, *Matrix
//! Computations*, §5.4.8 and §8.6): Householder bidiagonalisation, then implicit-shift
//! Golub–Kahan QR sweeps with Wilkinson's shift, zero-diagonal chasing and the same deflation
//! test as faer's `linalg/svd/bidiag_svd.rs` (`qr_algorithm`), so its accuracy is faer's:
//! every σ to about ε·σ₁ absolute.

use crate::compute::gram::Kernel;
use faer::MatRef;

/// Largest side this path takes; larger matrices go to faer (its blocked kernels win there).
pub const MAX_SIDE: usize = 64;

/// Singular values of `m` (at most `MAX_SIDE` on its longer side, or it is slow), descending,
/// min(rows, cols) of them; None when an entry is not finite or the QR sweeps do not converge
/// (the caller then asks faer).
pub fn singular_values(m: MatRef<'_, f64>) -> Option<Vec<f64>> {
    // Tall orientation (p ≥ n): the transpose has the same singular values.
    let m = if m.nrows() >= m.ncols() {
        m
    } else {
        m.transpose()
    };
    let (p, n) = (m.nrows(), m.ncols());
    if n == 0 {
        return Some(vec![]);
    }
    let mut a = Vec::with_capacity(p * n);
    for j in 0..n {
        a.extend(m.col(j).iter().copied());
    }
    if Kernel::detected() == Kernel::Avx2Fma {
        // SAFETY: the detected kernel's features are present on this CPU.
        unsafe { column_major_avx2(&mut a, p, n) }
    } else {
        column_major(&mut a, p, n)
    }
}

/// `column_major` compiled for AVX2 (the dot products and updates four lanes wide); the
/// arithmetic is the same, so are the results.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn column_major_avx2(a: &mut [f64], p: usize, n: usize) -> Option<Vec<f64>> {
    column_major(a, p, n)
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn column_major_avx2(a: &mut [f64], p: usize, n: usize) -> Option<Vec<f64>> {
    column_major(a, p, n)
}

/// The singular values of the column-major p × n matrix `a` (p ≥ n ≥ 1), which is overwritten.
#[inline(always)]
fn column_major(a: &mut [f64], p: usize, n: usize) -> Option<Vec<f64>> {
    let (mut max, mut finite): (f64, bool) = (0.0, true);
    for x in a.iter() {
        finite &= x.is_finite();
        max = max.max(x.abs());
    }
    if !finite {
        return None;
    }
    if max == 0.0 {
        return Some(vec![0.0; n]);
    }
    let inv = 1.0 / max;
    a.iter_mut().for_each(|x| *x *= inv);
    let (mut d, mut e) = bidiagonalise(a, p, n);
    qr_sweeps(&mut d, &mut e)?;
    let mut s: Vec<f64> = d.iter().map(|x| x.abs() * max).collect();
    s.sort_by(|x, y| y.total_cmp(x));
    Some(s)
}

/// x·y with eight running sums: a single sum is a chain of dependent adds (4 cycles each) that
/// the compiler may not reorder; eight of them vectorise.
#[inline(always)]
fn dot(x: &[f64], y: &[f64]) -> f64 {
    let mut acc = [0.0; 8];
    let (xc, yc) = (x.chunks_exact(8), y.chunks_exact(8));
    let tail: f64 = xc
        .remainder()
        .iter()
        .zip(yc.remainder())
        .map(|(a, b)| a * b)
        .sum();
    for (a, b) in xc.zip(yc) {
        for k in 0..8 {
            acc[k] += a[k] * b[k];
        }
    }
    acc.iter().sum::<f64>() + tail
}

/// Householder reflector of x (x ← v with v[0] = 1 implied by the scaling below): returns β
/// (the value x is reflected to, −sign(x₀)·‖x‖) and 2/(vᵀv), or None when x = 0.
#[inline(always)]
fn reflector(x: &mut [f64]) -> Option<(f64, f64)> {
    let norm = dot(x, x).sqrt();
    if norm == 0.0 {
        return None;
    }
    let beta = if x[0] >= 0.0 { -norm } else { norm };
    x[0] -= beta;
    let vv = dot(x, x);
    Some((beta, 2.0 / vv))
}

/// Reduces the column-major p × n matrix `a` (p ≥ n) to upper bidiagonal form by Householder
/// reflections from both sides: its diagonal and superdiagonal (a is overwritten).
#[inline(always)]
fn bidiagonalise(a: &mut [f64], p: usize, n: usize) -> (Vec<f64>, Vec<f64>) {
    let (mut d, mut e) = (vec![0.0; n], vec![0.0; n.saturating_sub(1)]);
    let mut v = vec![0.0; n];
    let mut w = vec![0.0; p];
    for k in 0..n {
        // Left: zero column k below the diagonal, applied to columns k+1.. .
        let (head, tail) = a.split_at_mut((k + 1) * p);
        let col = &mut head[k * p + k..];
        match reflector(col) {
            None => d[k] = 0.0,
            Some((beta, tau)) => {
                for cj in tail.chunks_exact_mut(p) {
                    let cj = &mut cj[k..];
                    let s = tau * dot(col, cj);
                    cj.iter_mut().zip(&*col).for_each(|(y, x)| *y -= s * x);
                }
                d[k] = beta;
            }
        }
        if k + 1 >= n {
            continue;
        }
        // Right: zero row k beyond the superdiagonal, applied to rows k+1.. .
        let m = n - k - 1;
        for (t, vj) in v[..m].iter_mut().enumerate() {
            *vj = a[(k + 1 + t) * p + k];
        }
        match reflector(&mut v[..m]) {
            None => e[k] = 0.0,
            Some((beta, tau)) => {
                // w = A[k+1.., k+1..]·v, then A -= tau·w·vᵀ, one contiguous column at a time.
                let w = &mut w[k + 1..p];
                w.iter_mut().for_each(|x| *x = 0.0);
                for (t, &vj) in v[..m].iter().enumerate() {
                    let c = &a[(k + 1 + t) * p + k + 1..(k + 2 + t) * p];
                    w.iter_mut().zip(c).for_each(|(x, y)| *x += vj * y);
                }
                for (t, &vj) in v[..m].iter().enumerate() {
                    let c = &mut a[(k + 1 + t) * p + k + 1..(k + 2 + t) * p];
                    let f = tau * vj;
                    c.iter_mut().zip(&*w).for_each(|(y, x)| *y -= f * x);
                }
                e[k] = beta;
            }
        }
    }
    (d, e)
}

/// The rotation (c, s) with c·p − s·q = r ≥ 0 and s·p + c·q = 0 (entries scaled to ≤ 1 in
/// magnitude, so the plain square root is safe unless both are tiny).
#[inline(always)]
fn givens(p: f64, q: f64) -> (f64, f64, f64) {
    let mut r = (p * p + q * q).sqrt();
    if r < 1e-150 {
        r = p.hypot(q);
        if r == 0.0 {
            return (1.0, 0.0, 0.0);
        }
    }
    let inv = 1.0 / r;
    (p * inv, -q * inv, r)
}

/// Diagonalises the upper bidiagonal (d, e) in place by implicit-shift QR; |d| are then the
/// singular values. None when it does not converge within faer's iteration bound.
#[inline(always)]
fn qr_sweeps(d: &mut [f64], e: &mut [f64]) -> Option<()> {
    let n = d.len();
    let (eps, sml) = (f64::EPSILON, f64::MIN_POSITIVE);
    let eps2 = eps * eps;
    for _ in 0..30 * n * n {
        // Deflation: an off-diagonal negligible against its two diagonal neighbours.
        for i in 0..n - 1 {
            if e[i] * e[i] <= eps2 * (d[i] * d[i + 1]).abs() + sml {
                e[i] = 0.0;
            }
        }
        // The last unreduced block [start, end).
        let mut end = n;
        while end >= 2 && e[end - 2] * e[end - 2] <= sml {
            end -= 1;
        }
        if end == 1 {
            return Some(());
        }
        let mut start = end - 1;
        while start >= 1 && e[start - 1] != 0.0 {
            start -= 1;
        }
        // A zero on the diagonal: chase its row's off-diagonal out to the right, which splits
        // the block.
        let mut chased = false;
        for i in start..end - 1 {
            if d[i].abs() <= eps {
                chased = true;
                let mut val = e[i];
                e[i] = 0.0;
                for j in i + 1..end {
                    let (c, s, _) = givens(d[j], val);
                    d[j] = c * d[j] - s * val;
                    if j + 1 < end {
                        val = s * e[j];
                        e[j] *= c;
                    }
                }
            }
        }
        if chased {
            continue;
        }
        // Wilkinson's shift: the eigenvalue of BᵀB's trailing 2×2 nearer its last entry.
        let (e2, e1) = (end - 2, end - 1);
        let t00 = d[e2] * d[e2]
            + if end - start > 2 {
                e[end - 3] * e[end - 3]
            } else {
                0.0
            };
        let t11 = d[e1] * d[e1] + e[e2] * e[e2];
        let t01 = d[e2] * e[e2];
        let t01_2 = t01 * t01;
        let mu = if t01_2 > sml {
            let h = (t00 - t11) * 0.5;
            let mut delta = (h * h + t01_2).sqrt();
            if h < 0.0 {
                delta = -delta;
            }
            t11 - t01_2 / (h + delta)
        } else {
            t11
        };
        // One Golub–Kahan step: a rotation from the right starts the bulge, rotations from
        // both sides chase it down the block.
        let mut y = d[start] * d[start] - mu;
        let mut z = d[start] * e[start];
        for k in start..e1 {
            let (c, s, r) = givens(y, z);
            if k > start {
                e[k - 1] = r;
            }
            let dk = c * d[k] - s * e[k];
            e[k] = s * d[k] + c * e[k];
            y = dk;
            z = -s * d[k + 1];
            d[k + 1] *= c;
            let (c, s, r) = givens(y, z);
            d[k] = r;
            let ek = c * e[k] - s * d[k + 1];
            d[k + 1] = s * e[k] + c * d[k + 1];
            e[k] = ek;
            if k + 2 < end {
                y = e[k];
                z = -s * e[k + 1];
                e[k + 1] *= c;
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use faer::Mat;

    fn faer_sigma(m: &Mat<f64>) -> Vec<f64> {
        let mut s = m.singular_values().unwrap();
        s.sort_by(|x, y| y.total_cmp(x));
        s
    }

    fn check(m: &Mat<f64>) {
        let got = singular_values(m.as_ref()).unwrap();
        let want = faer_sigma(m);
        assert_eq!(got.len(), want.len());
        let tol = 1e-13 * want.first().copied().unwrap_or(0.0).max(f64::MIN_POSITIVE);
        for (x, y) in got.iter().zip(&want) {
            assert!(
                (x - y).abs() <= tol,
                "{x} vs {y} ({}×{})",
                m.nrows(),
                m.ncols()
            );
        }
    }

    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self) -> f64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (self.0 >> 11) as f64 / (1u64 << 53) as f64 - 0.5
        }
    }

    #[test]
    fn matches_faer_on_random_square_tall_and_wide() {
        let mut g = Lcg(5);
        for (r, c) in [
            (1, 1),
            (2, 2),
            (3, 7),
            (7, 3),
            (32, 32),
            (64, 64),
            (5, 64),
            (64, 9),
        ] {
            let m = Mat::from_fn(r, c, |_, _| g.next());
            check(&m);
        }
    }

    #[test]
    fn rank_deficient_graded_and_zero_columns() {
        let mut g = Lcg(9);
        // Product of two rank-4 factors: 28 exact zeros.
        let (l, rt) = (
            Mat::from_fn(32, 4, |_, _| g.next()),
            Mat::from_fn(4, 32, |_, _| g.next()),
        );
        check(&(&l * &rt));
        // Graded columns over 12 decades, and a zero column in the middle.
        let m = Mat::from_fn(16, 16, |_, j| {
            if j == 7 {
                0.0
            } else {
                g.next() * 10f64.powi(-(j as i32) * 3 / 4)
            }
        });
        check(&m);
        // Upper triangular with zero diagonal entries (the zero-diagonal chase).
        let m = Mat::from_fn(12, 12, |i, j| {
            if j > i || (i == j && i % 3 != 0) {
                g.next()
            } else {
                0.0
            }
        });
        check(&m);
        assert_eq!(
            singular_values(Mat::zeros(3, 2).as_ref()),
            Some(vec![0.0, 0.0])
        );
        assert_eq!(singular_values(Mat::full(2, 2, f64::NAN).as_ref()), None);
    }

    #[test]
    fn scale_extremes_neither_overflow_nor_underflow() {
        let mut g = Lcg(13);
        let m = Mat::from_fn(9, 9, |_, _| g.next());
        let want = faer_sigma(&m);
        for scale in [1e-300, 1e-160, 1e160, 1e300] {
            let got = singular_values((&m * faer::Scale(scale)).as_ref()).unwrap();
            for (x, y) in got.iter().zip(&want) {
                assert!(
                    (x / scale - y).abs() <= 1e-13 * want[0],
                    "{x} vs {y}·{scale}"
                );
            }
        }
    }
}
