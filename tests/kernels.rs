//! The Gram kernel and the shared-factor path against dense f64 references: odd sizes, strided
//! and transposed views, every dtype, ranks above the dims, NaN and ±inf, blocks of rows.

mod support;

use lorascope::adapter::layout::{Delta, LayoutOptions};
use lorascope::adapter::{Adapter, Source};
use lorascope::compute::gram::{self, Kernel, Wide};
use lorascope::compute::math;
use lorascope::compute::shared::{self, SharedRs};
use lorascope::compute::stats::{self, Control, Filter};
use lorascope::compute::tensor::Mapped;
use lorascope::synth::{self, Dims, Pattern, Rng, Spec};
use ndarray::{s, Array2, Array3, ArrayView2};
use std::path::Path;

/// MᵀM of a view, in f64, by the definition.
fn dense_gram<T: Copy>(m: ArrayView2<T>, f: impl Fn(T) -> f64) -> Vec<Vec<f64>> {
    let (n, r) = m.dim();
    (0..r)
        .map(|p| {
            (0..r)
                .map(|q| (0..n).map(|i| f(m[(i, p)]) * f(m[(i, q)])).sum())
                .collect()
        })
        .collect()
}

/// The lower triangle of `got` against `want`, relative to the largest diagonal entry.
fn assert_lower_close(got: &faer::Mat<f64>, want: &[Vec<f64>], tol: f64) {
    let r = want.len();
    assert_eq!((got.nrows(), got.ncols()), (r, r));
    let scale = (0..r).map(|k| want[k][k].abs()).fold(1e-300, f64::max);
    for p in 0..r {
        for q in 0..=p {
            let err = (got[(p, q)] - want[p][q]).abs();
            assert!(
                err <= tol * scale,
                "({p},{q}): {} vs {}",
                got[(p, q)],
                want[p][q]
            );
        }
    }
}

/// RᵀR (r × r) of an upper-trapezoidal R.
fn rtr(r: &faer::Mat<f64>) -> Vec<Vec<f64>> {
    let k = r.ncols();
    (0..k)
        .map(|p| {
            (0..k)
                .map(|q| (0..r.nrows()).map(|i| r[(i, p)] * r[(i, q)]).sum())
                .collect()
        })
        .collect()
}

fn random_f32(seed: u64, n: usize) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    (0..n).map(|_| rng.normal() as f32).collect()
}

/// A PEFT-packed B (out × E·r, expert e in columns e, e+E, …), Aᵀ views of a row-major A, and a
/// 3D slice, at sizes that cross several blocks of rows and leave a ragged last block.
#[test]
fn grams_of_strided_views_match_the_dense_gram() {
    for &(n, r, e) in &[(1001usize, 67usize, 3usize), (37, 5, 4), (300, 1, 2)] {
        let b = Array2::from_shape_vec((n, e * r), random_f32(n as u64, n * e * r)).unwrap();
        let experts: Vec<ArrayView2<f32>> = (0..e).map(|x| b.slice(s![.., x..;e])).collect();
        let got = gram::grams_lower(&experts);
        for (x, g) in experts.iter().zip(&got) {
            assert_lower_close(g, &dense_gram(x.view(), |v| v as f64), 1e-12);
        }
        // A (E·r × n), expert x's Aᵀ = rows x·r.. transposed: contiguous columns.
        let a = Array2::from_shape_vec((e * r, n), random_f32(7 + n as u64, n * e * r)).unwrap();
        let a_t: Vec<ArrayView2<f32>> = (0..e)
            .map(|x| a.slice(s![x * r..(x + 1) * r, ..]).reversed_axes())
            .collect();
        for (x, g) in a_t.iter().zip(gram::grams_lower(&a_t)) {
            assert_lower_close(&g, &dense_gram(x.view(), |v| v as f64), 1e-12);
        }
        // One slice of a 3D (E, n, r) tensor, and factors of different lengths in one pass.
        let t3 = Array3::from_shape_vec((e, n, r), random_f32(9, e * n * r)).unwrap();
        let short = t3.slice(s![0, ..n / 2 + 1, ..]);
        let views = [t3.slice(s![e - 1, .., ..]), short];
        let got = gram::grams_lower(&views);
        for (v, g) in views.iter().zip(&got) {
            assert_lower_close(g, &dense_gram(v.view(), |x| x as f64), 1e-12);
        }
    }
}

#[test]
fn every_dtype_is_widened_exactly() {
    let (n, r) = (45, 6);
    let v = random_f32(3, n * r);
    let bf: Vec<half::bf16> = v.iter().map(|&x| half::bf16::from_f32(x)).collect();
    let f16: Vec<half::f16> = v.iter().map(|&x| half::f16::from_f32(x)).collect();
    let f64s: Vec<f64> = v.iter().map(|&x| x as f64 * 1e-3 + 1e-9).collect();
    let bf = ArrayView2::from_shape((n, r), &bf).unwrap();
    let f16 = ArrayView2::from_shape((n, r), &f16).unwrap();
    let f64s = ArrayView2::from_shape((n, r), &f64s).unwrap();
    let g = &gram::grams_lower(&[bf])[0];
    assert_lower_close(g, &dense_gram(bf, |x| x.to_f64()), 1e-13);
    let g = &gram::grams_lower(&[f16])[0];
    assert_lower_close(g, &dense_gram(f16, |x| x.to_f64()), 1e-13);
    let g = &gram::grams_lower(&[f64s])[0];
    assert_lower_close(g, &dense_gram(f64s, |x| x), 1e-13);
}

/// `got` (lower triangle) against the symmetric `want`, entry by entry relative to the
/// Cauchy–Schwarz bound √(G_pp·G_qq) of a dot product's rounding error.
fn assert_gram_close(got: &faer::Mat<f64>, want: &[Vec<f64>], tol: f64, what: &str) {
    let r = want.len();
    assert_eq!((got.nrows(), got.ncols()), (r, r), "{what}");
    for p in 0..r {
        for q in 0..=p {
            let scale = (want[p][p] * want[q][q]).sqrt().max(1e-300);
            let err = (got[(p, q)] - want[p][q]).abs();
            assert!(
                err <= tol * scale,
                "{what} ({p},{q}): {} vs {}",
                got[(p, q)],
                want[p][q]
            );
        }
    }
}

/// The full symmetric matrix of a lower triangle.
fn symmetric(g: &faer::Mat<f64>) -> Vec<Vec<f64>> {
    let r = g.nrows();
    (0..r)
        .map(|p| (0..r).map(|q| g[(p.max(q), p.min(q))]).collect())
        .collect()
}

/// The scalar kernel against the definition, and every SIMD kernel this CPU has against the
/// scalar one, on the four layouts the kernels tell apart: contiguous columns (Aᵀ), contiguous
/// rows (B, a 3D slice), and strided both ways with the rows or the columns closer (PEFT's
/// stride-E expert B; a transposed view with a step).
fn kernels_agree<T: Wide + Copy>(v: &[T], n: usize, r: usize, what: &str) {
    let e = 3;
    let len = e * n * r;
    let packed = Array2::from_shape_vec((n, e * r), v[..len].to_vec()).unwrap();
    let a = Array2::from_shape_vec((e * r, n), v[..len].to_vec()).unwrap();
    let t3 = Array3::from_shape_vec((e, n, r), v[..len].to_vec()).unwrap();
    let stepped = Array2::from_shape_vec((r, 2 * n), v[..2 * n * r].to_vec()).unwrap();
    let mut views: Vec<ArrayView2<T>> = (0..e).map(|x| packed.slice(s![.., x..;e])).collect();
    views.push(a.slice(s![r..2 * r, ..]).reversed_axes());
    views.push(t3.slice(s![e - 1, .., ..]));
    views.push(stepped.slice(s![.., 1..;2]).reversed_axes());
    let scalar = gram::grams_lower_with(&views, Kernel::Scalar);
    for (i, (m, g)) in views.iter().zip(&scalar).enumerate() {
        let want = dense_gram(m.view(), |x| x.to_f64());
        assert_gram_close(
            g,
            &want,
            1e-12,
            &format!("scalar {what} n={n} r={r} view {i}"),
        );
    }
    for k in [Kernel::Avx2Fma].into_iter().filter(|k| k.available()) {
        let got = gram::grams_lower_with(&views, k);
        for (i, (g, s)) in got.iter().zip(&scalar).enumerate() {
            let tag = format!("{k:?} {what} n={n} r={r} view {i}");
            assert_gram_close(g, &symmetric(s), 1e-12, &tag);
        }
    }
}

/// The SIMD kernel equals the scalar reference within f64 rounding in every dtype, at lengths
/// that are not multiples of the vector width (n = 1, 3, 6, 37, …), ranks that leave ragged
/// register tiles (r = 1, 3, 8, 33), a rank above the tiles' (r = 70: packed GEMM) and sizes
/// that cross several blocks of rows.
#[test]
fn simd_and_scalar_kernels_agree_on_odd_shapes() {
    let shapes = [1usize, 3, 6, 37, 1003]
        .iter()
        .flat_map(|&n| [1usize, 3, 8, 33].map(|r| (n, r)))
        .chain([(17001, 3), (6001, 8), (1003, 70)]);
    for (n, r) in shapes {
        let v = random_f32((n * 1000 + r) as u64, 3 * n * r);
        kernels_agree(&v, n, r, "F32");
        let bf: Vec<half::bf16> = v.iter().map(|&x| half::bf16::from_f32(x)).collect();
        kernels_agree(&bf, n, r, "BF16");
        let f16: Vec<half::f16> = v.iter().map(|&x| half::f16::from_f32(x)).collect();
        kernels_agree(&f16, n, r, "F16");
        let f64s: Vec<f64> = v.iter().map(|&x| x as f64 * 1e-3 + 1e-9).collect();
        kernels_agree(&f64s, n, r, "F64");
    }
}

/// The SIMD kernel is the one used wherever the CPU runs it (else every test above would only
/// exercise the scalar one).
#[test]
fn the_simd_kernel_is_detected_where_the_cpu_has_it() {
    #[cfg(target_arch = "x86_64")]
    let simd = is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c");
    #[cfg(not(target_arch = "x86_64"))]
    let simd = false;
    let want = if simd {
        Kernel::Avx2Fma
    } else {
        Kernel::Scalar
    };
    assert_eq!(Kernel::detected(), want);
    assert!(Kernel::Scalar.available());
}

/// R of every factor satisfies RᵀR = MᵀM, with min(n, r) rows: Cholesky for tall factors,
/// Householder for short ones (r > n) and for those Cholesky cannot hold (zeros, rank loss).
#[test]
fn tall_rs_give_r_with_the_factor_gram_on_every_path() {
    let (n, r) = (40, 7);
    let mut v = random_f32(5, n * 3 * r);
    // Expert 2 is rank-deficient (column 0 = column 1): Cholesky is refused, Householder taken.
    for i in 0..n {
        v[i * 3 * r + 2 + 3] = v[i * 3 * r + 2];
    }
    let b = Array2::from_shape_vec((n, 3 * r), v).unwrap();
    let zeros = Array2::<f32>::zeros((n, r));
    let short = b.slice(s![..3, ..]);
    let views = [
        b.slice(s![.., 0..;3]),
        b.slice(s![.., 2..;3]),
        zeros.view(),
        short,
    ];
    let rs = gram::tall_rs(&views);
    for (m, fr) in views.iter().zip(&rs) {
        assert!(fr.finite);
        assert_eq!(fr.r.nrows(), m.nrows().min(m.ncols()));
        assert_eq!(fr.r.ncols(), m.ncols());
        let want = dense_gram(m.view(), |x| x as f64);
        let got = rtr(&fr.r);
        let scale = (0..m.ncols()).map(|k| want[k][k]).fold(1e-300, f64::max);
        for p in 0..m.ncols() {
            for q in 0..m.ncols() {
                assert!((got[p][q] - want[p][q]).abs() <= 1e-10 * scale, "{p},{q}");
            }
        }
    }
}

/// A NaN or ±inf in one expert's columns marks that factor only, on the Gram and the short path.
#[test]
fn nan_and_inf_mark_only_their_factor() {
    let (n, r, e) = (50, 4, 3);
    let mut v = random_f32(11, n * e * r);
    v[17 * e * r + 1 + 2 * e] = f32::NAN; // expert 1, row 17
    v[3 * e * r + 2] = f32::INFINITY; // expert 2, row 3
    let b = Array2::from_shape_vec((n, e * r), v).unwrap();
    let mut views: Vec<ArrayView2<f32>> = (0..e).map(|x| b.slice(s![.., x..;e])).collect();
    views.extend((0..e).map(|x| b.slice(s![..r - 1, x..;e])));
    let finite: Vec<bool> = gram::tall_rs(&views).iter().map(|f| f.finite).collect();
    assert_eq!(finite, [true, false, false, true, true, true]);
    let short_bad = b.slice(s![..4, 2..;e]);
    assert!(!gram::tall_rs(&[short_bad])[0].finite);
    // A finite f64 factor whose Gram overflows is still finite (its R from Householder).
    let big = [1e200f64, 3e199, -2e200, 5e199, 1e200, 1e199];
    let big = ArrayView2::from_shape((3, 2), &big).unwrap();
    let fr = &gram::tall_rs(&[big])[0];
    assert!(fr.finite && fr.r[(0, 0)].is_finite() && fr.r[(0, 0)].abs() > 1e200);
}

fn load(dir: &Path, layout: LayoutOptions) -> Adapter {
    let file = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .expect("a safetensors file");
    let src = Source {
        history: None,
        id: "test".into(),
        path: dir.to_path_buf(),
        dir: dir.to_path_buf(),
        files: vec![file],
        revision: None,
        problem: None,
        other_files: vec![],
    };
    let a = Adapter::load(&src, layout);
    assert!(a.error.is_none(), "{:?}", a.error);
    a
}

/// Shared factors are reduced once (one R per distinct factor, each tensor read in one pass),
/// and the statistics equal the unshared path (each delta alone, from its f64 factor copies).
#[test]
fn shared_factors_are_reduced_once_with_the_unshared_results() {
    let split = LayoutOptions {
        split_gate_up: true,
        ..Default::default()
    };
    let cases = [
        (Pattern::Tinker3d, LayoutOptions::default()),
        (
            Pattern::PeftExperts { layers: vec![0, 1] },
            LayoutOptions::default(),
        ),
        (Pattern::PeftExperts { layers: vec![1] }, split),
        (Pattern::Mlx { layers: 2 }, LayoutOptions::default()),
    ];
    for (pattern, opts) in cases {
        let mut spec = Spec::new(Dims::TOY, pattern.clone());
        spec.attn_rank = 4;
        spec.expert_rank = 3;
        let dir = tempfile::tempdir().unwrap();
        synth::write_adapter(dir.path(), &spec).unwrap();
        let a = load(dir.path(), opts);
        let m = Mapped::open(&a).unwrap();
        let deltas: Vec<&Delta> = a.deltas.iter().collect();
        let rs = SharedRs::compute(&m, &deltas, &Control::default()).unwrap();
        let mut tensors: Vec<usize> = deltas
            .iter()
            .flat_map(|d| [d.a.tensor, d.b.tensor])
            .collect();
        tensors.sort();
        tensors.dedup();
        assert_eq!(rs.tensors_read(), tensors.len(), "{pattern:?}");
        let mut factors: Vec<String> = deltas
            .iter()
            .flat_map(|d| [format!("A{:?}", d.a), format!("B{:?}", d.b)])
            .collect();
        factors.sort();
        factors.dedup();
        assert_eq!(rs.factors_reduced(), factors.len(), "{pattern:?}");
        assert!(
            tensors.len() < 2 * deltas.len(),
            "{pattern:?} shares no tensor"
        );
        if pattern == Pattern::Tinker3d {
            // The broadcast A of w1/w3 and B of w2: one factor for every expert of a layer.
            assert!(factors.len() < 2 * deltas.len(), "no factor shared");
        }

        let st = stats::compute_on(&m, &Filter::default(), &Control::default()).unwrap();
        for (d, got) in deltas.iter().zip(&st.deltas) {
            let (r_b, r_a) = rs.of(d).unwrap();
            // Reduced alone or with the others sharing its tensors: the same R, bit for bit.
            let alone = SharedRs::compute(&m, &[d], &Control::default()).unwrap();
            let (rb1, ra1) = alone.of(d).unwrap();
            assert_eq!((&r_b.r, &r_a.r), (&rb1.r, &ra1.r), "{:?}", d.key());
            assert_eq!(got.singular_values, math::sigma_of(d.scale, r_b, r_a));
            // The unshared path: f64 copies of both factors, Gram of the copies.
            let (b_t, a_t) = (m.factor_t(&d.b).unwrap(), m.factor_t(&d.a).unwrap());
            let want = gram::factored(d.scale, b_t, a_t, false).sigma();
            assert_eq!(want.len(), got.singular_values.len());
            for (x, y) in got.singular_values.iter().zip(&want) {
                assert!(
                    (x - y).abs() <= 1e-10 * want[0],
                    "{:?}: {x} vs {y}",
                    d.key()
                );
            }
        }
    }
}

/// The R's read in place from the map agree with the tests' own reader (independent of
/// lorascope's picks) on every factor of a packed PEFT adapter: RᵀR = BᵀB and A·Aᵀ.
#[test]
fn in_place_rs_agree_with_an_independent_reader() {
    let spec = {
        let mut s = Spec::new(Dims::TOY, Pattern::PeftExperts { layers: vec![0] });
        s.expert_rank = 3;
        s
    };
    let dir = tempfile::tempdir().unwrap();
    synth::write_adapter(dir.path(), &spec).unwrap();
    let a = load(dir.path(), LayoutOptions::default());
    let m = Mapped::open(&a).unwrap();
    let deltas: Vec<&Delta> = a.deltas.iter().collect();
    let rs = SharedRs::compute(&m, &deltas, &Control::default()).unwrap();
    for d in &deltas {
        let (r_b, r_a) = rs.of(d).unwrap();
        // B is out × r as read by the test's own reader; A is r × in (its Gram is of Aᵀ).
        let (rows, cols, b) = support::read_factor(&a, d.b);
        let want = support::gram(rows, cols, &b, false);
        let got = rtr(&r_b.r);
        let (ra_rows, ra_cols, av) = support::read_factor(&a, d.a);
        let want_a = support::gram(ra_rows, ra_cols, &av, true);
        let got_a = rtr(&r_a.r);
        for (g, w) in [(got, want), (got_a, want_a)] {
            let scale = (0..w.len()).map(|k| w[k][k]).fold(1e-300, f64::max);
            for p in 0..w.len() {
                for q in 0..w.len() {
                    assert!((g[p][q] - w[p][q]).abs() <= 1e-10 * scale);
                }
            }
        }
    }
}

/// Waves cover every delta once, in order, within the budget, and never separate two deltas
/// that share a tensor (a shared factor would be reduced twice).
#[test]
fn waves_split_between_modules_only() {
    let mut spec = Spec::new(Dims::TOY, Pattern::PeftExperts { layers: vec![0, 1] });
    spec.expert_rank = 3;
    let dir = tempfile::tempdir().unwrap();
    synth::write_adapter(dir.path(), &spec).unwrap();
    let a = load(dir.path(), LayoutOptions::default());
    let deltas: Vec<&Delta> = a.deltas.iter().collect();
    assert_eq!(shared::waves(&deltas), vec![0..deltas.len()]);
    let waves = shared::waves_within(&deltas, 1);
    assert!(waves.len() > 4, "{waves:?}");
    let mut next = 0;
    for w in &waves {
        assert_eq!(w.start, next);
        assert!(w.end > w.start);
        next = w.end;
        if w.start > 0 {
            let (x, y) = (deltas[w.start - 1], deltas[w.start]);
            let shared = [y.a.tensor, y.b.tensor]
                .iter()
                .any(|t| *t == x.a.tensor || *t == x.b.tensor);
            assert!(!shared, "wave boundary inside a module at {}", w.start);
        }
    }
    assert_eq!(next, deltas.len());
    // The experts of one packed module stay together however small the budget.
    assert!(waves.iter().any(|w| w.len() >= Dims::TOY.experts));
}

/// A zero factor's R is zero (no QR for it); f64 values whose squares underflow to a zero Gram
/// are not zero, and keep their R.
#[test]
fn zero_factors_have_zero_r_and_tiny_ones_do_not() {
    let zeros = Array2::<f32>::zeros((64, 8));
    let fr = &gram::tall_rs(&[zeros.view()])[0];
    assert!(fr.finite && fr.r.nrows() == 8 && fr.r.ncols() == 8);
    assert!((0..8).all(|i| (0..8).all(|j| fr.r[(i, j)] == 0.0)));
    let tiny = Array2::<f64>::from_shape_fn((64, 2), |(i, j)| 1e-200 * (1 + i + 3 * j) as f64);
    let fr = &gram::tall_rs(&[tiny.view()])[0];
    assert!(fr.finite && fr.r[(0, 0)].abs() > 1e-199, "{:?}", fr.r);
}
