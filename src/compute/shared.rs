//! Factors reduced once however many deltas use them. Tinker's broadcast A (w1, w3) or B (w2)
//! serves every expert of a layer, and PEFT's packed per-expert A and B hold every expert's
//! factor in one tensor: each tensor is read in one pass that forms the R of every factor taken
//! from it (`gram`), and each delta then only combines two small R's.

use crate::adapter::layout::{Delta, Factor, Pick};
use crate::compute::math::FactorR;
use crate::compute::stats::Control;
use crate::compute::tensor::{Mapped, Side};
use crate::error::{Error, Result};
use std::collections::{BTreeMap, HashMap};
use std::ops::Range;

/// A factor as a delta uses it: which part of which tensor, and as A or as B.
type FactorKey = (Factor, Side);

/// The R's of a set of deltas' factors, by tensor.
pub struct SharedRs {
    by_tensor: HashMap<usize, Vec<(FactorKey, FactorR)>>,
}

impl SharedRs {
    /// Reads every tensor the deltas use once (in parallel across tensors) and reduces each
    /// distinct factor to its R.
    pub fn compute(m: &Mapped, deltas: &[&Delta], ctl: &Control) -> Result<SharedRs> {
        let mut jobs: BTreeMap<usize, Vec<FactorKey>> = BTreeMap::new();
        for d in deltas {
            for key in [(d.a, Side::A), (d.b, Side::B)] {
                let fs = jobs.entry(key.0.tensor).or_default();
                if !fs.contains(&key) {
                    fs.push(key);
                }
            }
        }
        // Factors that share the tensor's rows (PEFT's interleaved expert columns of B) are
        // served by one pass; factors in disjoint parts of it (a 3D tensor's expert slices,
        // PEFT's expert rows of A) are jobs of their own, so that two threads share a wave's
        // few large tensors evenly.
        let jobs: Vec<(usize, Vec<FactorKey>)> = jobs
            .into_iter()
            .flat_map(|(t, fs)| {
                if fs.iter().all(|(f, _)| disjoint(f)) {
                    fs.into_iter().map(|k| (t, vec![k])).collect()
                } else {
                    vec![(t, fs)]
                }
            })
            .collect();
        let rs = ctl.each(&jobs, None, |(t, fs)| m.tall_rs(*t, fs))?;
        let mut by_tensor: HashMap<usize, Vec<(FactorKey, FactorR)>> = HashMap::new();
        for ((t, fs), rs) in jobs.into_iter().zip(rs) {
            by_tensor
                .entry(t)
                .or_default()
                .extend(fs.into_iter().zip(rs));
        }
        Ok(SharedRs { by_tensor })
    }

    /// How many tensors were read (each once).
    pub fn tensors_read(&self) -> usize {
        self.by_tensor.len()
    }

    /// How many distinct factors were reduced to an R.
    pub fn factors_reduced(&self) -> usize {
        self.by_tensor.values().map(Vec::len).sum()
    }

    /// The R's of B and of A of one of the deltas, checked against the layout's rank.
    pub fn of(&self, d: &Delta) -> Result<(&FactorR, &FactorR)> {
        let find = |f: Factor, side: Side| {
            self.by_tensor
                .get(&f.tensor)
                .and_then(|fs| fs.iter().find(|(k, _)| *k == (f, side)))
                .map(|(_, r)| r)
                .ok_or_else(|| Error::Other(format!("{}: factors were not read", d.module)))
        };
        let (r_b, r_a) = (find(d.b, Side::B)?, find(d.a, Side::A)?);
        if r_a.rank() != d.rank || r_b.rank() != d.rank {
            return Err(Error::Shape(format!(
                "{}: factors of rank {} and {} do not match the layout's rank {}",
                d.module,
                r_a.rank(),
                r_b.rank(),
                d.rank
            )));
        }
        Ok((r_b, r_a))
    }
}

/// Whether the factor's elements lie in a part of its tensor no other factor of another pick
/// reads (a leading index of a 3D tensor, a band of rows).
fn disjoint(f: &Factor) -> bool {
    matches!(
        f.pick,
        Pick::Index { .. } | Pick::IndexTransposed { .. } | Pick::Rows { .. }
    )
}

/// Bytes of R's held at once: the R's of a wave of deltas live until its cores are done. A wave
/// ends in a barrier (one thread finishing a large tensor while the other waits): 8 MB is 8
/// layers of a gpt-oss-20b expert adapter at r = 32, three barriers for the whole adapter.
const WAVE_BYTES: usize = 8 << 20;

/// Splits the deltas into consecutive runs whose R's fit in `WAVE_BYTES`, never between two
/// deltas that share a tensor (so a shared factor is still reduced once).
pub fn waves(deltas: &[&Delta]) -> Vec<Range<usize>> {
    waves_within(deltas, WAVE_BYTES)
}

/// `waves` with another budget (tests).
pub fn waves_within(deltas: &[&Delta], budget: usize) -> Vec<Range<usize>> {
    let bytes = |d: &Delta| (d.out_dim.min(d.rank) + d.in_dim.min(d.rank)) * d.rank * 8;
    let mut out = Vec::new();
    let (mut start, mut used) = (0, 0);
    for (i, d) in deltas.iter().enumerate() {
        if i > start && used + bytes(d) > budget {
            let prev = deltas[i - 1];
            let shares = [d.a.tensor, d.b.tensor]
                .iter()
                .any(|t| *t == prev.a.tensor || *t == prev.b.tensor);
            if !shares {
                out.push(start..i);
                (start, used) = (i, 0);
            }
        }
        used += bytes(d);
    }
    if start < deltas.len() {
        out.push(start..deltas.len());
    }
    out
}
