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

use crate::compute::kernel::Kernel;
use faer::MatRef;

/// Largest side this path takes; larger matrices go to faer (its blocked kernels win there).
pub const MAX_SIDE: usize = 64;

/// Singular values of `m` (at most `MAX_SIDE` on its longer side, or it is slow), descending,
/// min(rows, cols) of them; None when an entry is not finite or the QR sweeps do not converge
/// (the caller then asks faer).
pub fn singular_values(m: MatRef<'_, f64>) -> Option<Vec<f64>> {
    solve(&mut reduce(m))
}

/// `singular_values` of each matrix, two at a time: their QR sweeps are interleaved
/// (`qr_sweeps_pair`), which takes little more time than one.
pub fn singular_values_many(ms: &[MatRef<'_, f64>]) -> Vec<Option<Vec<f64>>> {
    let mut out = Vec::with_capacity(ms.len());
    for pair in ms.chunks(2) {
        let mut r: Vec<Reduced> = pair.iter().map(|m| reduce(*m)).collect();
        match r.as_mut_slice() {
            [Reduced::Bidiag(d1, e1, m1), Reduced::Bidiag(d2, e2, m2)] => {
                let (a, b) = qr_sweeps_pair(&mut Qr::new(d1, e1), &mut Qr::new(d2, e2));
                out.push(a.map(|_| finish(d1, *m1)));
                out.push(b.map(|_| finish(d2, *m2)));
            }
            rs => out.extend(rs.iter_mut().map(solve)),
        }
    }
    out
}

/// A matrix reduced for its singular values: the answer already (empty, zero, not finite: None,
/// too large), or its upper bidiagonal (diagonal, superdiagonal) scaled by 1/max, and max.
enum Reduced {
    Answer(Option<Vec<f64>>),
    Bidiag(Vec<f64>, Vec<f64>, f64),
}

fn solve(r: &mut Reduced) -> Option<Vec<f64>> {
    match r {
        Reduced::Answer(s) => s.take(),
        Reduced::Bidiag(d, e, max) => {
            qr_sweeps(d, e)?;
            Some(finish(d, *max))
        }
    }
}

/// |d| scaled back, descending.
fn finish(d: &[f64], max: f64) -> Vec<f64> {
    let mut s: Vec<f64> = d.iter().map(|x| x.abs() * max).collect();
    s.sort_by(|x, y| y.total_cmp(x));
    s
}

fn reduce(m: MatRef<'_, f64>) -> Reduced {
    // Tall orientation (p ≥ n): the transpose has the same singular values.
    let m = if m.nrows() >= m.ncols() {
        m
    } else {
        m.transpose()
    };
    if m.ncols() == 0 {
        return Reduced::Answer(Some(vec![]));
    }
    // Columns padded with zeros to a fixed length: every vector operation then has a length
    // known at compile time (no remainder loops on these short columns).
    match m.nrows().next_power_of_two().max(8) {
        8 => padded::<8>(m),
        16 => padded::<16>(m),
        32 => padded::<32>(m),
        64 => padded::<64>(m),
        _ => Reduced::Answer(None),
    }
}

fn padded<const N: usize>(m: MatRef<'_, f64>) -> Reduced {
    let mut a = vec![[0.0; N]; m.ncols()];
    for (j, col) in a.iter_mut().enumerate() {
        for (x, y) in col.iter_mut().zip(m.col(j).iter()) {
            *x = *y;
        }
    }
    if Kernel::detected() == Kernel::Avx2Fma {
        // SAFETY: the detected kernel's features are present on this CPU.
        unsafe { columns_avx2(&mut a, m.nrows()) }
    } else {
        columns(&mut a, m.nrows())
    }
}

/// `columns` compiled for AVX2 (four lanes wide); the arithmetic is the same, so are the
/// results.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn columns_avx2<const N: usize>(a: &mut [[f64; N]], p: usize) -> Reduced {
    columns(a, p)
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn columns_avx2<const N: usize>(a: &mut [[f64; N]], p: usize) -> Reduced {
    columns(a, p)
}

/// The p × n matrix whose columns (zero below row p) are `a` reduced (a is overwritten).
#[inline(always)]
fn columns<const N: usize>(a: &mut [[f64; N]], p: usize) -> Reduced {
    let n = a.len();
    let (mut max, mut finite): (f64, bool) = (0.0, true);
    for x in a.iter().flatten() {
        finite &= x.is_finite();
        max = max.max(x.abs());
    }
    if !finite {
        return Reduced::Answer(None);
    }
    if max == 0.0 {
        return Reduced::Answer(Some(vec![0.0; n]));
    }
    // Divided, not multiplied by 1/max: for a subnormal max, 1/max overflows.
    a.iter_mut().flatten().for_each(|x| *x /= max);
    let (d, e) = bidiagonalise(a, p);
    Reduced::Bidiag(d, e, max)
}

/// x·y over a whole padded column, in four running sums (one vector register): a single sum
/// is a chain of dependent adds that the compiler may not reorder.
#[inline(always)]
fn dot<const N: usize>(x: &[f64; N], y: &[f64; N]) -> f64 {
    let mut acc = [0.0; 4];
    for (a, b) in x.chunks_exact(4).zip(y.chunks_exact(4)) {
        for l in 0..4 {
            acc[l] += a[l] * b[l];
        }
    }
    (acc[0] + acc[1]) + (acc[2] + acc[3])
}

/// Householder reflector of x (x ← v): returns β (the value x is reflected to, −sign(x₀)·‖x‖)
/// and 2/(vᵀv), or None when x = 0.
#[inline(always)]
fn reflector(x: &mut [f64]) -> Option<(f64, f64)> {
    let norm = x.iter().map(|v| v * v).sum::<f64>().sqrt();
    if norm == 0.0 {
        return None;
    }
    let beta = if x[0] >= 0.0 { -norm } else { norm };
    x[0] -= beta;
    let vv = x.iter().map(|v| v * v).sum::<f64>();
    Some((beta, 2.0 / vv))
}

/// Reduces the p × n matrix of padded columns `a` (p ≥ n) to upper bidiagonal form by
/// Householder reflections from both sides: its diagonal and superdiagonal (a is overwritten).
/// Rows above the active one are zero in each reflector, and rows from p on are zero in every
/// column, so each update may run over the whole padded length.
#[inline(always)]
fn bidiagonalise<const N: usize>(a: &mut [[f64; N]], p: usize) -> (Vec<f64>, Vec<f64>) {
    let n = a.len();
    let (mut d, mut e) = (vec![0.0; n], vec![0.0; n.saturating_sub(1)]);
    let mut row = vec![0.0; n];
    for k in 0..n {
        // Left: zero column k below the diagonal, applied to columns k+1.. .
        let (head, tail) = a.split_at_mut(k + 1);
        let mut v = [0.0; N];
        v[k..p].copy_from_slice(&head[k][k..p]);
        match reflector(&mut v[k..p]) {
            None => d[k] = 0.0,
            Some((beta, tau)) => {
                for cj in tail.iter_mut() {
                    let s = tau * dot(&v, cj);
                    cj.iter_mut().zip(&v).for_each(|(y, x)| *y -= s * x);
                }
                d[k] = beta;
            }
        }
        if k + 1 >= n {
            continue;
        }
        // Right: zero row k beyond the superdiagonal, applied to rows k+1.. .
        let m = n - k - 1;
        for (t, x) in row[..m].iter_mut().enumerate() {
            *x = tail[t][k];
        }
        match reflector(&mut row[..m]) {
            None => e[k] = 0.0,
            Some((beta, tau)) => {
                // w = A[.., k+1..]·v with rows ..=k dropped, then A −= tau·w·vᵀ.
                let mut w = [0.0; N];
                for (c, &vt) in tail.iter().zip(&row[..m]) {
                    w.iter_mut().zip(c).for_each(|(x, y)| *x += vt * y);
                }
                w[..=k].iter_mut().for_each(|x| *x = 0.0);
                for (c, &vt) in tail.iter_mut().zip(&row[..m]) {
                    let f = tau * vt;
                    c.iter_mut().zip(&w).for_each(|(y, x)| *y -= f * x);
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
    let mut q = Qr::new(d, e);
    while q.begin()? {
        while q.step() {}
    }
    Some(())
}

/// `qr_sweeps` of two bidiagonals at once, their steps alternating: each step waits on a
/// square root and a division of the step before it, and two independent chains let the CPU
/// run one while the other waits.
#[inline(always)]
fn qr_sweeps_pair(a: &mut Qr<'_>, b: &mut Qr<'_>) -> (Option<()>, Option<()>) {
    // Some(true): sweeping; Some(false): diagonal; None: gave up.
    let (mut ra, mut rb) = (a.begin(), b.begin());
    loop {
        match (ra == Some(true), rb == Some(true)) {
            (true, true) => {
                let (sa, sb) = (a.step(), b.step());
                if !sa {
                    ra = a.begin();
                }
                if !sb {
                    rb = b.begin();
                }
            }
            (true, false) => {
                if !a.step() {
                    ra = a.begin();
                }
            }
            (false, true) => {
                if !b.step() {
                    rb = b.begin();
                }
            }
            (false, false) => break,
        }
    }
    (ra.map(|_| ()), rb.map(|_| ()))
}

/// The implicit-shift QR of one upper bidiagonal (d, e) as steps: `begin` deflates and sets up
/// the next sweep, `step` chases its bulge one place down.
struct Qr<'a> {
    d: &'a mut [f64],
    e: &'a mut [f64],
    /// Sweeps left before giving up (faer's bound).
    budget: usize,
    /// The running sweep: its next row k, its block [start, end), the pair (y, z) to rotate.
    k: usize,
    start: usize,
    end: usize,
    y: f64,
    z: f64,
}

impl<'a> Qr<'a> {
    fn new(d: &'a mut [f64], e: &'a mut [f64]) -> Qr<'a> {
        let n = d.len();
        Qr {
            d,
            e,
            budget: 30 * n * n,
            k: 0,
            start: 0,
            end: 0,
            y: 0.0,
            z: 0.0,
        }
    }

    /// Deflates and starts the next sweep: Some(true), or Some(false) when the matrix is
    /// diagonal, None when the budget is spent.
    #[inline(always)]
    fn begin(&mut self) -> Option<bool> {
        let (d, e) = (&mut *self.d, &mut *self.e);
        let n = d.len();
        let (eps, sml) = (f64::EPSILON, f64::MIN_POSITIVE);
        let eps2 = eps * eps;
        loop {
            self.budget = self.budget.checked_sub(1)?;
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
                return Some(false);
            }
            let mut start = end - 1;
            while start >= 1 && e[start - 1] != 0.0 {
                start -= 1;
            }
            // A zero on the diagonal: chase its row's off-diagonal out to the right, which
            // splits the block.
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
            // A Golub–Kahan step: a rotation from the right starts the bulge, rotations from
            // both sides chase it down the block (`step`).
            self.y = d[start] * d[start] - mu;
            self.z = d[start] * e[start];
            (self.k, self.start, self.end) = (start, start, end);
            return Some(true);
        }
    }

    /// Moves the running sweep's bulge one row down; false when the sweep is over.
    #[inline(always)]
    fn step(&mut self) -> bool {
        let (d, e, k) = (&mut *self.d, &mut *self.e, self.k);
        let (c, s, r) = givens(self.y, self.z);
        if k > self.start {
            e[k - 1] = r;
        }
        let dk = c * d[k] - s * e[k];
        e[k] = s * d[k] + c * e[k];
        let z = -s * d[k + 1];
        d[k + 1] *= c;
        let (c, s, r) = givens(dk, z);
        d[k] = r;
        let ek = c * e[k] - s * d[k + 1];
        d[k + 1] = s * e[k] + c * d[k + 1];
        e[k] = ek;
        if k + 2 < self.end {
            self.y = e[k];
            self.z = -s * e[k + 1];
            e[k + 1] *= c;
        }
        self.k += 1;
        self.k + 1 < self.end
    }
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
    fn two_at_a_time_equals_one_at_a_time() {
        let mut g = Lcg(21);
        let ms: Vec<Mat<f64>> = [
            (32, 32),
            (32, 32),
            (7, 3),
            (5, 5),
            (64, 9),
            (0, 3),
            (40, 40),
        ]
        .iter()
        .map(|&(r, c)| Mat::from_fn(r, c, |i, j| g.next() * 10f64.powi(-((i * j) as i32 % 9))))
        .collect();
        let mut refs: Vec<MatRef<'_, f64>> = ms.iter().map(|m| m.as_ref()).collect();
        let zero = Mat::<f64>::zeros(4, 4);
        let nan = Mat::full(3, 3, f64::NAN);
        refs.extend([zero.as_ref(), nan.as_ref(), ms[1].as_ref()]);
        let one: Vec<Option<Vec<f64>>> = refs.iter().map(|m| singular_values(*m)).collect();
        assert_eq!(singular_values_many(&refs), one);
        assert_eq!(one[8], None);
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
        for scale in [1e-310, 1e-300, 1e-160, 1e160, 1e300] {
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
