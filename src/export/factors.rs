//! An output delta's factors with the scale folded in (ΔW = B·A), read from the source, and the
//! exact best rank-K truncation of a delta from its factors (Eckart–Young), never forming ΔW:
//! with B = Q_B·R_B and Aᵀ = Q_A·R_A, the core R_B·R_Aᵀ = U·S·Vᵀ gives ΔW = (Q_B U) S (Q_A V)ᵀ,
//! a thin SVD of ΔW, so B' = Q_B U_K S_K^½ and A' = S_K^½ V_Kᵀ Q_Aᵀ (docs/export.md).

use super::plan::Src;
use crate::adapter::Adapter;
use crate::compute::tensor::Mapped;
use crate::error::{Error, Result};
use faer::Mat;

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
        return Err(Error::Other(format!(
            "{}{}: non-finite values (NaN or infinity) in its factors or scale; export would \
             write them",
            d.module,
            d.expert.map_or(String::new(), |e| format!(" expert {e}"))
        )));
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

/// A delta's thin SVD from its factors: ΔW = Q_B·U·diag(σ)·Vᵀ·Q_Aᵀ, σ descending.
pub struct Svd {
    pub sigma: Vec<f64>,
    /// Q_B·U (out × p) and Q_A·V (in × p), p = the number of σ.
    pub left: Mat<f64>,
    pub right: Mat<f64>,
}

/// The thin SVD of B·A; with `vectors` false only σ (no Q is formed: enough when nothing is cut).
pub fn svd(p: &Pair, vectors: bool) -> Result<Svd> {
    let k = p.rank();
    let (out, inn) = (p.b.nrows(), p.a.ncols());
    let empty = |sigma| Svd {
        sigma,
        left: Mat::zeros(out, 0),
        right: Mat::zeros(inn, 0),
    };
    if k == 0 || out == 0 || inn == 0 {
        return Ok(empty(vec![]));
    }
    let failed = |e| Error::Other(format!("the SVD of a {k}×{k} core failed: {e:?}"));
    let qr_b = p.b.qr();
    let qr_a = p.a.transpose().to_owned().qr();
    let core = qr_b.thin_R() * qr_a.thin_R().transpose();
    if !vectors {
        let mut sigma = core.singular_values().map_err(failed)?;
        sigma.sort_by(|x, y| y.total_cmp(x));
        return Ok(empty(sigma.into_iter().map(|x| x.max(0.0)).collect()));
    }
    let s = core.thin_svd().map_err(failed)?;
    let sv = s.S().column_vector();
    let mut idx: Vec<usize> = (0..sv.nrows()).collect();
    idx.sort_by(|&x, &y| sv[y].total_cmp(&sv[x]));
    let (cu, cv) = (s.U(), s.V());
    let u = Mat::from_fn(cu.nrows(), idx.len(), |i, j| cu[(i, idx[j])]);
    let v = Mat::from_fn(cv.nrows(), idx.len(), |i, j| cv[(i, idx[j])]);
    Ok(Svd {
        sigma: idx.iter().map(|&i| sv[i].max(0.0)).collect(),
        left: qr_b.compute_thin_Q() * u,
        right: qr_a.compute_thin_Q() * v,
    })
}

impl Svd {
    /// The best rank-`k` factors, the singular values split evenly between B and A.
    pub fn truncated(&self, k: usize) -> Pair {
        let k = k.min(self.sigma.len());
        let root: Vec<f64> = self.sigma[..k].iter().map(|s| s.sqrt()).collect();
        Pair {
            b: Mat::from_fn(self.left.nrows(), k, |o, j| self.left[(o, j)] * root[j]),
            a: Mat::from_fn(k, self.right.nrows(), |j, i| root[j] * self.right[(i, j)]),
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
        let tail: f64 = self.sigma.iter().skip(k).map(|s| s * s).sum();
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
            assert_eq!(svd(&p, false).unwrap().sigma, s.sigma);
            let full = s.truncated(k);
            let diff = &dense(&p) - &dense(&full);
            assert!(
                max_abs(&diff) < 1e-12 * max_abs(&dense(&p)),
                "{out}×{k}×{inn}"
            );
            let k2 = 2.min(s.sigma.len());
            let cut = s.truncated(k2);
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
            left: Mat::zeros(1, 4),
            right: Mat::zeros(1, 4),
        };
        // Energies 9, 13, 14 of 14.
        assert_eq!(s.rank_for_energy(0.5), 1);
        assert_eq!(s.rank_for_energy(9.0 / 14.0), 1);
        assert_eq!(s.rank_for_energy(0.9), 2);
        assert_eq!(s.rank_for_energy(1.0), 3);
        assert!((s.energy_kept(2) - 13.0 / 14.0).abs() < 1e-15);
        assert!((s.relative_error(1) - (5.0f64 / 14.0).sqrt()).abs() < 1e-15);
    }
}
