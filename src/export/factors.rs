//! An output delta's factors with the scale folded in (ΔW = B·A), read from the source, and the
//! exact best rank-K truncation of a delta from its factors (Eckart–Young), never forming ΔW:
//! with B = Q_B·R_B and Aᵀ = Q_A·R_A, the core R_B·R_Aᵀ = U·S·Vᵀ gives ΔW = (Q_B U) S (Q_A V)ᵀ,
//! a thin SVD of ΔW, so B' = Q_B U_K S_K^½ and A' = S_K^½ V_Kᵀ Q_Aᵀ (docs/export.md).

use super::plan::Src;
use crate::adapter::Adapter;
use crate::compute::shared::SharedRs;
use crate::compute::tensor::{Mapped, Side};
use crate::compute::{gram, math};
use crate::error::{Error, Result};
use faer::{Mat, MatRef};
use std::collections::BTreeMap;

/// ΔW = B·A: B is out × k, A is k × in.
#[derive(Debug, Clone)]
pub struct Pair {
    pub b: Mat<f64>,
    pub a: Mat<f64>,
}

impl Pair {
    pub fn rank(&self) -> usize {
        self.a.nrows()
    }
}

/// The factors of `src`, s folded into B. A non-finite value is an error: export would write it.
pub fn read(m: &Mapped, a: &Adapter, src: &Src) -> Result<Pair> {
    match *src {
        Src::One(i) => one(m, a, i),
        Src::Zero { out, inn } => Ok(Pair {
            b: Mat::zeros(out, 0),
            a: Mat::zeros(0, inn),
        }),
        Src::GateUp { gate, up } => {
            let gate = gate.map(|i| one(m, a, i)).transpose()?;
            let up = up.map(|i| one(m, a, i)).transpose()?;
            fuse_gate_up(gate.as_ref(), up.as_ref())
        }
    }
}

fn one(m: &Mapped, a: &Adapter, i: usize) -> Result<Pair> {
    let d = &a.deltas[i];
    let a_t = m.factor_t(&d.a)?;
    let b_t = m.factor_t(&d.b)?;
    if !a_t.is_finite() || !b_t.is_finite() || !d.scale.is_finite() {
        return Err(non_finite(d));
    }
    let (bt, at) = (b_t.view(), a_t.view());
    Ok(Pair {
        b: Mat::from_fn(bt.ncols(), bt.nrows(), |o, j| d.scale * bt[(j, o)]),
        a: Mat::from_fn(at.ncols(), at.nrows(), |j, i| at[(i, j)]),
    })
}

/// gpt-oss's gate_up from separate gate and up deltas: A stacks both A's, B puts gate's rows on
/// the even output rows and up's on the odd ones (transformers `GptOssExperts`:
/// `gate_up[..., ::2]`, `gate_up[..., 1::2]`), each in its own columns. A missing half is zero.
pub fn fuse_gate_up(gate: Option<&Pair>, up: Option<&Pair>) -> Result<Pair> {
    let first = gate
        .or(up)
        .ok_or_else(|| Error::Other("gate_up with no factors".into()))?;
    let (inter, inn) = (first.b.nrows(), first.a.ncols());
    for p in [gate, up].into_iter().flatten() {
        if p.b.nrows() != inter || p.a.ncols() != inn {
            return Err(Error::Shape(format!(
                "gate and up deltas of different shapes ({}×{} and {}×{}) cannot be fused",
                p.b.nrows(),
                p.a.ncols(),
                inter,
                inn
            )));
        }
    }
    let (rg, ru) = (gate.map_or(0, Pair::rank), up.map_or(0, Pair::rank));
    let a = Mat::from_fn(rg + ru, inn, |j, i| match (j < rg, gate, up) {
        (true, Some(g), _) => g.a[(j, i)],
        (false, _, Some(u)) => u.a[(j - rg, i)],
        _ => 0.0,
    });
    let b = Mat::from_fn(2 * inter, rg + ru, |o, j| match (o % 2, j < rg, gate, up) {
        (0, true, Some(g), _) => g.b[(o / 2, j)],
        (1, false, _, Some(u)) => u.b[(o / 2, j - rg)],
        _ => 0.0,
    });
    Ok(Pair { b, a })
}

/// X_B and X_A (r × K): B' = B·X_B and A'ᵀ = Aᵀ·X_A are a delta's written factors (`Svd::maps`).
pub type Maps = (Mat<f64>, Mat<f64>);

/// The written factors of deltas: each source delta's B and Aᵀ times its maps (X_B, X_A,
/// `Svd::maps`), B' = B·X_B (out × K) and A'ᵀ = Aᵀ·X_A (in × K), handed to
/// `put(item, side, i0, rows)` a block of rows at a time: rows i0.. of item `item`'s B' or A'ᵀ.
/// Each source tensor is read straight from the map, every factor taken from it served by one
/// pass over it (`Mapped::products`); a fused gate_up (or a zero filler) is read and multiplied
/// whole, one block.
pub fn products(
    m: &Mapped,
    a: &Adapter,
    items: &[(&Src, &Maps)],
    mut put: impl FnMut(usize, Side, usize, MatRef<'_, f64>) -> Result<()>,
) -> Result<()> {
    type Job<'x> = (crate::adapter::layout::Factor, Side, MatRef<'x, f64>);
    type Jobs<'x> = BTreeMap<usize, (Vec<Job<'x>>, Vec<(usize, Side)>)>;
    // (tensor) → its factors and where their products go (item, B or A).
    let mut jobs: Jobs<'_> = BTreeMap::new();
    for (k, (src, (xb, xa))) in items.iter().enumerate() {
        match **src {
            Src::One(i) => {
                let d = &a.deltas[i];
                for (f, side, x) in [(d.b, Side::B, xb), (d.a, Side::A, xa)] {
                    let job = jobs.entry(f.tensor).or_default();
                    job.0.push((f, side, x.as_ref()));
                    job.1.push((k, side));
                }
            }
            Src::GateUp { .. } | Src::Zero { .. } => {
                let p = read(m, a, src)?;
                put(k, Side::B, 0, (&p.b * xb).as_ref())?;
                put(k, Side::A, 0, (p.a.transpose() * xa).as_ref())?;
            }
        }
    }
    for (t, (factors, dest)) in jobs {
        m.products(t, &factors, |i0, blocks| {
            for (&(k, side), block) in dest.iter().zip(blocks) {
                if block.nrows() > 0 {
                    put(k, side, i0, *block)?;
                }
            }
            Ok(())
        })?;
    }
    Ok(())
}

/// The written factors of deltas (`products`), each held whole as a `Pair`.
pub fn written(m: &Mapped, a: &Adapter, items: &[(&Src, &Maps)]) -> Result<Vec<Pair>> {
    let dims = |k: usize| {
        let (src, (xb, _)) = items[k];
        let (out, inn) = src.dims(a);
        (out, inn, xb.ncols())
    };
    let mut pairs: Vec<(Mat<f64>, Mat<f64>)> = (0..items.len())
        .map(|k| {
            let (out, inn, rank) = dims(k);
            (Mat::zeros(out, rank), Mat::zeros(inn, rank))
        })
        .collect();
    products(m, a, items, |k, side, i0, rows| {
        let (b, a_t) = &mut pairs[k];
        let dst = match side {
            Side::B => b,
            Side::A => a_t,
        };
        if i0 + rows.nrows() > dst.nrows() || rows.ncols() != dst.ncols() {
            return Err(Error::Shape(format!(
                "a written factor has {} rows and {} columns, not the delta's {} and {}",
                i0 + rows.nrows(),
                rows.ncols(),
                dst.nrows(),
                dst.ncols()
            )));
        }
        dst.as_mut().subrows_mut(i0, rows.nrows()).copy_from(rows);
        Ok(())
    })?;
    Ok(pairs
        .into_iter()
        .map(|(b, a_t)| Pair {
            b,
            a: a_t.transpose().to_owned(),
        })
        .collect())
}

/// Singular values at or below this fraction of σ₁ are written as zero components: their
/// factor columns would be rounding divided by √σ (they change ΔW by less than 10⁻¹²·σ₁).
const TINY: f64 = 1e-12;

/// A delta's thin SVD from the R's of its factors, as maps of its factors to the truncated ones.
/// With ΔW = s·B·A, B = Q_B R_B, Aᵀ = Q_A R_A and the core R_B R_Aᵀ = U S Vᵀ, B R_Aᵀ V = Q_B U S
/// and Aᵀ R_Bᵀ U = Q_A V S, so the best rank-K factors are B' = B·X_B and A'ᵀ = Aᵀ·X_A with
/// X_B = sign(s)·√|s|·R_Aᵀ V_K S_K^-½ and X_A = √|s|·R_Bᵀ U_K S_K^-½ (r × K): no Q is formed
/// and no factor is copied, and the scale is split evenly between B' and A'.
pub struct Svd {
    /// σ(ΔW) (|s| included), descending: min(out, in, r) of them.
    pub sigma: Vec<f64>,
    /// X_B and X_A for every component (r × p); None when only σ was asked (nothing is cut:
    /// the factors are written as read, s folded into B).
    maps: Option<(Mat<f64>, Mat<f64>)>,
    scale: f64,
    rank: usize,
}

/// The thin SVD of B·A (a pair with its scale folded in) from its factors.
pub fn svd(p: &Pair, vectors: bool) -> Result<Svd> {
    let r_b = gram::factor_r_f64(p.b.as_ref(), true);
    let r_a = gram::factor_r_f64(p.a.transpose(), true);
    Svd::of_rs(1.0, r_b.r.as_ref(), r_a.r.as_ref(), vectors)
}

/// The SVD of the delta `src` from the R's of its factors (`rs` holds those of a one-to-one
/// source delta; a fused gate_up is read and reduced here). Non-finite values are an error:
/// export would write them.
pub fn svd_of(m: &Mapped, a: &Adapter, src: &Src, rs: &SharedRs, vectors: bool) -> Result<Svd> {
    match *src {
        Src::One(i) => {
            let d = &a.deltas[i];
            let (r_b, r_a) = rs.of(d)?;
            if !(r_b.finite && r_a.finite && d.scale.is_finite()) {
                return Err(non_finite(d));
            }
            Svd::of_rs(d.scale, r_b.r.as_ref(), r_a.r.as_ref(), vectors)
        }
        Src::GateUp { .. } => svd(&read(m, a, src)?, vectors),
        Src::Zero { .. } => {
            let none = Mat::<f64>::zeros(0, 0);
            Svd::of_rs(1.0, none.as_ref(), none.as_ref(), vectors)
        }
    }
}

fn non_finite(d: &crate::adapter::layout::Delta) -> Error {
    Error::Other(format!(
        "{}{}: non-finite values (NaN or infinity) in its factors or scale; export would \
         write them",
        d.module,
        d.expert.map_or(String::new(), |e| format!(" expert {e}"))
    ))
}

impl Svd {
    /// From the scale and the R's of B (RᵀR = BᵀB) and of Aᵀ (RᵀR = AAᵀ), r columns each.
    pub fn of_rs(
        scale: f64,
        r_b: MatRef<'_, f64>,
        r_a: MatRef<'_, f64>,
        vectors: bool,
    ) -> Result<Svd> {
        let rank = r_a.ncols();
        let core = r_b * r_a.transpose();
        let mut out = Svd {
            sigma: vec![],
            maps: None,
            scale,
            rank,
        };
        if core.nrows() == 0 || core.ncols() == 0 {
            return Ok(out);
        }
        let failed = |e| Error::Other(format!("the SVD of a {rank}×{rank} core failed: {e:?}"));
        if !vectors {
            out.sigma = math::singular_values(core.as_ref())
                .into_iter()
                .map(|x| x.max(0.0) * scale.abs())
                .collect();
            return Ok(out);
        }
        let s = core.thin_svd().map_err(failed)?;
        let sv = s.S().column_vector();
        let mut idx: Vec<usize> = (0..sv.nrows()).collect();
        idx.sort_by(|&x, &y| sv[y].total_cmp(&sv[x]));
        let s1 = idx.first().map_or(0.0, |&i| sv[i].max(0.0));
        let w: Vec<f64> = idx
            .iter()
            .map(|&i| {
                if sv[i] > TINY * s1 {
                    1.0 / sv[i].sqrt()
                } else {
                    0.0
                }
            })
            .collect();
        let (cu, cv) = (s.U(), s.V());
        let root = scale.abs().sqrt();
        let sign = if scale < 0.0 { -root } else { root };
        let u = Mat::from_fn(cu.nrows(), idx.len(), |i, j| cu[(i, idx[j])] * w[j] * root);
        let v = Mat::from_fn(cv.nrows(), idx.len(), |i, j| cv[(i, idx[j])] * w[j] * sign);
        out.maps = Some((r_a.transpose() * v, r_b.transpose() * u));
        out.sigma = idx.iter().map(|&i| sv[i].max(0.0) * scale.abs()).collect();
        Ok(out)
    }

    /// The source's rank r.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// The rank written when `k` components are asked for: all r when nothing is cut, else at
    /// most the number of singular values.
    pub fn rank_after(&self, k: usize) -> usize {
        match self.maps {
            None => self.rank,
            Some(_) => k.min(self.sigma.len()),
        }
    }

    /// X_B and X_A (r × k) of the best rank-k factors (k from `rank_after`).
    pub fn maps(&self, k: usize) -> (Mat<f64>, Mat<f64>) {
        match &self.maps {
            Some((xb, xa)) => (
                xb.as_ref().subcols(0, k).to_owned(),
                xa.as_ref().subcols(0, k).to_owned(),
            ),
            None => {
                let (r, s) = (self.rank, self.scale);
                (
                    Mat::from_fn(r, k, |i, j| if i == j { s } else { 0.0 }),
                    Mat::from_fn(r, k, |i, j| if i == j { 1.0 } else { 0.0 }),
                )
            }
        }
    }

    /// The best rank-`k` factors of a pair (the pair this SVD is of, scale folded).
    pub fn truncated(&self, p: &Pair, k: usize) -> Pair {
        let (xb, xa) = self.maps(self.rank_after(k));
        Pair {
            b: &p.b * xb,
            a: (p.a.transpose() * xa).transpose().to_owned(),
        }
    }

    /// Σ_{i≤k} σᵢ² / Σ σᵢ² (1 for a zero delta).
    pub fn energy_kept(&self, k: usize) -> f64 {
        let total: f64 = self.sigma.iter().map(|s| s * s).sum();
        if total == 0.0 {
            return 1.0;
        }
        let kept: f64 = self.sigma.iter().take(k).map(|s| s * s).sum();
        kept / total
    }

    /// ‖ΔW − ΔW_k‖_F / ‖ΔW‖_F = (Σ_{i>k} σᵢ²)^½ / (Σ σᵢ²)^½ (0 for a zero delta).
    pub fn relative_error(&self, k: usize) -> f64 {
        let total: f64 = self.sigma.iter().map(|s| s * s).sum();
        if total == 0.0 {
            return 0.0;
        }
        // Summed from +0: an empty `sum()` of f64 is -0.0, which the report would print.
        let tail = self.sigma.iter().skip(k).fold(0.0, |t, s| t + s * s);
        (tail / total).sqrt()
    }

    /// The smallest k keeping at least `fraction` of Σσ² (0 for a zero delta).
    pub fn rank_for_energy(&self, fraction: f64) -> usize {
        let total: f64 = self.sigma.iter().map(|s| s * s).sum();
        if total == 0.0 {
            return 0;
        }
        let mut kept = 0.0;
        for (i, s) in self.sigma.iter().enumerate() {
            kept += s * s;
            // A hair below the target counts: rounding must not add a component.
            if kept >= fraction * total * (1.0 - 1e-12) {
                return i + 1;
            }
        }
        self.sigma.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dense(p: &Pair) -> Mat<f64> {
        &p.b * &p.a
    }

    fn pair(out: usize, k: usize, inn: usize, seed: u64) -> Pair {
        let mut rng = crate::synth::Rng::new(seed);
        Pair {
            b: Mat::from_fn(out, k, |_, _| rng.normal()),
            a: Mat::from_fn(k, inn, |_, _| rng.normal()),
        }
    }

    fn max_abs(m: &Mat<f64>) -> f64 {
        (0..m.nrows())
            .flat_map(|i| (0..m.ncols()).map(move |j| (i, j)))
            .map(|(i, j)| m[(i, j)].abs())
            .fold(0.0, f64::max)
    }

    #[test]
    fn a_full_truncation_is_the_delta_and_a_partial_one_leaves_the_predicted_tail() {
        for (out, k, inn) in [(9, 4, 7), (3, 5, 8), (12, 6, 2)] {
            let p = pair(out, k, inn, out as u64);
            let s = svd(&p, true).unwrap();
            // σ alone comes from the small-core SVD, with vectors from faer's: equal to ε·σ₁.
            let values = svd(&p, false).unwrap().sigma;
            assert_eq!(values.len(), s.sigma.len());
            for (x, y) in values.iter().zip(&s.sigma) {
                assert!((x - y).abs() < 1e-13 * s.sigma[0], "{x} vs {y}");
            }
            let full = s.truncated(&p, k);
            let diff = &dense(&p) - &dense(&full);
            assert!(
                max_abs(&diff) < 1e-12 * max_abs(&dense(&p)),
                "{out}×{k}×{inn}"
            );
            let k2 = 2.min(s.sigma.len());
            let cut = s.truncated(&p, k2);
            let err = (&dense(&p) - &dense(&cut)).norm_l2();
            let rel = err / dense(&p).norm_l2();
            assert!((rel - s.relative_error(k2)).abs() < 1e-12, "{rel}");
            let dense_sigma = crate::compute::math::singular_values(dense(&p).as_ref());
            for (x, y) in s.sigma.iter().zip(&dense_sigma) {
                assert!((x - y).abs() < 1e-12 * dense_sigma[0]);
            }
        }
    }

    #[test]
    fn fused_gate_up_interleaves_rows_and_keeps_both_deltas() {
        let (g, u) = (pair(5, 2, 4, 1), pair(5, 3, 4, 2));
        let f = fuse_gate_up(Some(&g), Some(&u)).unwrap();
        let (dg, du, df) = (dense(&g), dense(&u), dense(&f));
        for i in 0..5 {
            for c in 0..4 {
                assert_eq!(df[(2 * i, c)], dg[(i, c)]);
                assert_eq!(df[(2 * i + 1, c)], du[(i, c)]);
            }
        }
        let only_up = dense(&fuse_gate_up(None, Some(&u)).unwrap());
        assert_eq!(only_up[(0, 0)], 0.0);
        assert_eq!(only_up[(1, 2)], du[(0, 2)]);
    }

    #[test]
    fn energy_ranks_take_the_smallest_k_reaching_the_fraction() {
        let s = Svd {
            sigma: vec![3.0, 2.0, 1.0, 0.0],
            maps: None,
            scale: 1.0,
            rank: 4,
        };
        // Energies 9, 13, 14 of 14.
        assert_eq!(s.rank_for_energy(0.5), 1);
        assert_eq!(s.rank_for_energy(9.0 / 14.0), 1);
        assert_eq!(s.rank_for_energy(0.9), 2);
        assert_eq!(s.rank_for_energy(1.0), 3);
        assert!((s.energy_kept(2) - 13.0 / 14.0).abs() < 1e-15);
        assert!((s.relative_error(1) - (5.0f64 / 14.0).sqrt()).abs() < 1e-15);
        // Every component kept: exactly +0 (the JSON report printed -0.0).
        for k in [4, 5] {
            assert!(s.relative_error(k).is_sign_positive() && s.relative_error(k) == 0.0);
        }
    }
}
