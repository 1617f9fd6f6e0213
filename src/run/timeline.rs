//! The timeline of a run: every delta's statistics at every checkpoint, the similarity of its top
//! singular directions to the previous and to the last checkpoint, and per delta group when it
//! woke up, whether it never moved and whether it is still growing (docs/runs.md defines each).
//!
//! A `Builder` measures one checkpoint per `step` call, so a caller (the explorer's job) can show
//! the columns known so far (`timeline`) while the rest are read; `compute` runs it to the end
//! with progress and cancellation. The last checkpoint is measured first (every other one is
//! compared with it), then the others in order. At most three checkpoints' top singular bases
//! are held at a time (the last, the previous, the current); each checkpoint's file is mapped only
//! while it is measured. Checkpoints whose statistics and similarities are in the cache are not
//! read at all.

use super::cache::{self, Cache, DeltaMeasure, Entry};
use super::detect::unreadable;
use super::similarity;
use super::state::Log;
use super::Loaded;
use crate::adapter::checkpoint::Scheme;
use crate::adapter::layout::{Delta, DeltaKey, Target};
use crate::adapter::Adapter;
use crate::compute::math;
use crate::compute::shared::{self, SharedRs};
use crate::compute::stats::{self, Control, Filter};
use crate::compute::tensor::Mapped;
use crate::error::{Error, Result};
use faer::Mat;
use serde::Serialize;
use std::collections::BTreeMap;

/// One checkpoint of the timeline (a contract: the `timeline --json` fields).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckpointRow {
    pub step: u64,
    pub id: String,
    pub path: String,
    /// From the trainer's log: the last value logged at or before the step (null without one).
    pub loss: Option<f64>,
    pub learning_rate: Option<f64>,
    pub grad_norm: Option<f64>,
    /// Why the checkpoint could not be measured (null when it was).
    pub error: Option<String>,
    /// Its statistics came from the cache (not in JSON: it depends on earlier runs).
    #[serde(skip)]
    pub cached: bool,
    /// Measured (or taken from the cache) already.
    #[serde(skip)]
    pub done: bool,
}

/// A delta at one checkpoint; null where the checkpoint could not be measured or the delta is
/// not finite (and, for similarities, where a delta is zero or there is no other checkpoint).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepStats {
    pub step: u64,
    pub fro_norm: Option<f64>,
    pub spectral_norm: Option<f64>,
    pub effective_rank: Option<f64>,
    pub energy_rank_99: Option<usize>,
    pub similarity_prev: Option<f64>,
    pub similarity_last: Option<f64>,
    pub dead: Option<bool>,
    pub finite: Option<bool>,
}

/// One delta over the run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeltaTimeline {
    pub layer: Option<usize>,
    pub target: Target,
    pub expert: Option<usize>,
    /// One per checkpoint, in step order.
    pub steps: Vec<StepStats>,
}

/// What the run did to one group (a layer's target, per expert for expert targets).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Group {
    pub layer: Option<usize>,
    pub target: Target,
    pub expert: Option<usize>,
    /// The first step whose ‖ΔW‖_F exceeds 10 % of the last checkpoint's (null when the last is 0).
    pub woke_at: Option<u64>,
    /// Dead (A or B exactly zero) at every checkpoint measured.
    pub never_moved: bool,
    /// ‖ΔW‖_F grew by more than 5 % of the last value between the last two checkpoints.
    pub still_growing: bool,
}

/// A run's timeline (a contract: `timeline --json`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Timeline {
    pub run: String,
    pub path: String,
    pub scheme: Scheme,
    pub checkpoints: Vec<CheckpointRow>,
    pub deltas: Vec<DeltaTimeline>,
    pub groups: Vec<Group>,
}

/// A checkpoint's top left singular bases by delta.
type Bases = BTreeMap<DeltaKey, Mat<f32>>;
type Sims = BTreeMap<DeltaKey, Option<f64>>;

fn key_of(m: &DeltaMeasure) -> DeltaKey {
    DeltaKey::new(m.layer, m.target.as_str(), m.expert)
}

/// Measures every delta of a checkpoint from one read of its factors (the waves of `stats`) and
/// its top `energy_rank_99` left singular vectors.
fn measure(a: &Adapter, ctl: &Control) -> Result<(Vec<DeltaMeasure>, Bases)> {
    let m = Mapped::open(a)?;
    let deltas: Vec<&Delta> = a.deltas.iter().collect();
    let per = ctl.install(|| {
        let mut out = Vec::with_capacity(deltas.len());
        for w in shared::waves(&deltas) {
            let rs = SharedRs::compute(&m, &deltas[w.clone()], ctl)?;
            let wave: Vec<usize> = w.collect();
            out.extend(ctl.each(&wave, None, |&k| {
                let d = deltas[k];
                let (r_b, r_a) = rs.of(d)?;
                let mut st = stats::from_sigma(k, d, math::sigma_of(d.scale, r_b, r_a));
                st.dead = stats::is_dead(&st, r_b, r_a);
                let basis = if st.finite && !st.dead && st.energy_rank_99 > 0 {
                    similarity::left_basis(&m.factor_t(&d.b)?, r_b, r_a, st.energy_rank_99)
                } else {
                    None
                };
                let ok = st.finite;
                let num = |x: f64| if ok { x } else { 0.0 };
                let dm = DeltaMeasure {
                    layer: d.layer,
                    target: d.target.as_str().to_string(),
                    expert: d.expert,
                    fro_norm: num(st.fro_norm),
                    spectral_norm: num(st.spectral_norm),
                    effective_rank: num(st.effective_rank),
                    energy_rank_99: st.energy_rank_99,
                    dead: st.dead,
                    finite: ok,
                };
                Ok((dm, basis))
            })?);
        }
        Ok(out)
    })?;
    let mut bases = Bases::new();
    let mut measures = Vec::with_capacity(per.len());
    for (dm, b) in per {
        if let Some(b) = b {
            bases.insert(key_of(&dm), b);
        }
        measures.push(dm);
    }
    Ok((measures, bases))
}

/// Similarities of every delta of `a` to the same delta of `b`.
fn sims_between(a: &Bases, b: &Bases, keys: &[DeltaKey]) -> Sims {
    keys.iter()
        .map(|k| {
            let s = a
                .get(k)
                .zip(b.get(k))
                .and_then(|(x, y)| similarity::similarity(x, y));
            (k.clone(), s)
        })
        .collect()
}

/// Measures a run's checkpoints one at a time (see the module's comment).
pub struct Builder {
    loaded: Loaded,
    cache: Option<Cache>,
    rows: Vec<CheckpointRow>,
    /// Each checkpoint's identity (None: unreadable, or a file that cannot be read).
    ids: Vec<Option<String>>,
    /// Each checkpoint's valid cache entry.
    entries: Vec<Option<Entry>>,
    measures: Vec<Option<Vec<DeltaMeasure>>>,
    sim_prev: Vec<Sims>,
    sim_last: Vec<Sims>,
    /// Checkpoints measured or to measure, ascending.
    readable: Vec<usize>,
    /// Which checkpoints must be read (their bases are needed, or nothing is cached).
    need: Vec<bool>,
    order: Vec<usize>,
    pos: usize,
    last_bases: Option<Bases>,
    prev_bases: Option<Bases>,
}

impl Builder {
    /// Plans the run's timeline: the trainer's log read, identities and cache entries looked up
    /// (`cache`: None measures everything and keeps nothing).
    pub fn new(loaded: Loaded, cache: Option<Cache>) -> Builder {
        let log = Log::of_run(&loaded);
        let n = loaded.adapters.len();
        let mut rows = Vec::with_capacity(n);
        let mut ids = Vec::with_capacity(n);
        let mut entries = Vec::with_capacity(n);
        for (m, a) in loaded.run.members.iter().zip(&loaded.adapters) {
            let logged = log.at(m.step);
            let error = if unreadable(a) {
                Some(a.error.clone().unwrap_or_else(|| match &a.kind {
                    crate::adapter::Kind::NoSafetensors => "no safetensors file".into(),
                    k => format!("not readable ({})", k.as_str()),
                }))
            } else {
                None
            };
            let id = error.is_none().then(|| cache::identity(a)).flatten();
            let entry = id
                .as_ref()
                .zip(cache.as_ref())
                .and_then(|(k, c)| c.get(k))
                .filter(|e| fits(e, a));
            rows.push(CheckpointRow {
                step: m.step,
                id: a.id.clone(),
                path: a.path.display().to_string(),
                loss: logged.loss,
                learning_rate: logged.learning_rate,
                grad_norm: logged.grad_norm,
                error,
                cached: false,
                done: false,
            });
            ids.push(id);
            entries.push(entry);
        }
        let readable: Vec<usize> = (0..n).filter(|&i| rows[i].error.is_none()).collect();
        let mut b = Builder {
            loaded,
            cache,
            rows,
            ids,
            entries,
            measures: vec![None; n],
            sim_prev: vec![Sims::new(); n],
            sim_last: vec![Sims::new(); n],
            readable,
            need: vec![false; n],
            order: vec![],
            pos: 0,
            last_bases: None,
            prev_bases: None,
        };
        b.plan(false);
        b
    }

    /// The order of the work and what must be read: a checkpoint without an entry, and both
    /// sides of every pair (previous, last) whose similarities are not cached; `all` reads
    /// every one (after a checkpoint failed while being read).
    fn plan(&mut self, all: bool) {
        let r = self.readable.clone();
        self.need.iter_mut().for_each(|x| *x = false);
        for &j in &r {
            self.need[j] = all || self.entries[j].is_none();
        }
        if let Some(&last) = r.last() {
            for w in r.windows(2) {
                if !self.cached_pair(w[0], w[1]) {
                    self.need[w[0]] = true;
                    self.need[w[1]] = true;
                }
            }
            for &j in &r {
                if !self.cached_pair(j, last) {
                    self.need[j] = true;
                    self.need[last] = true;
                }
            }
            self.order = std::iter::once(last)
                .chain(r[..r.len() - 1].iter().copied())
                .collect();
        } else {
            self.order.clear();
        }
        self.pos = 0;
        self.last_bases = None;
        self.prev_bases = None;
    }

    fn cached_pair(&self, a: usize, b: usize) -> bool {
        self.cached_sims(a, b).is_some()
    }

    /// The cached similarities between checkpoints `a` and `b` (either's entry).
    fn cached_sims(&self, a: usize, b: usize) -> Option<Sims> {
        let (ka, kb) = (self.ids[a].as_ref()?, self.ids[b].as_ref()?);
        let from = |e: &Option<Entry>, other: &str| {
            let e = e.as_ref()?;
            let v = e.sims.get(other)?;
            Some(e.deltas.iter().map(key_of).zip(v.iter().copied()).collect())
        };
        from(&self.entries[a], kb).or_else(|| from(&self.entries[b], ka))
    }

    /// How many checkpoints the work has (measured or from the cache).
    pub fn total(&self) -> usize {
        self.order.len()
    }

    /// How many are done.
    pub fn done(&self) -> usize {
        self.pos
    }

    /// Measures the next checkpoint; false once every checkpoint is done. A checkpoint that
    /// fails to read is marked with its error and the timeline goes on without it; only
    /// cancellation is an error.
    pub fn step(&mut self, ctl: &Control) -> Result<bool> {
        let Some(&i) = self.order.get(self.pos) else {
            return Ok(false);
        };
        if ctl.cancelled() {
            return Err(Error::Cancelled);
        }
        match self.process(i, ctl) {
            Ok(()) => self.pos += 1,
            Err(Error::Cancelled) => return Err(Error::Cancelled),
            Err(e) => {
                self.rows[i].error = Some(crate::adapter::describe(&e));
                self.measures[i] = None;
                let was_last = self.readable.last() == Some(&i);
                self.readable.retain(|&j| j != i);
                if was_last {
                    // Every similarity to the last changes: start again with the new last.
                    self.sim_prev.iter_mut().for_each(Sims::clear);
                    self.sim_last.iter_mut().for_each(Sims::clear);
                    self.plan(true);
                } else {
                    let rest: Vec<usize> = self.order[self.pos + 1..].to_vec();
                    rest.iter().for_each(|&j| self.need[j] = true);
                    self.pos += 1;
                }
            }
        }
        Ok(self.pos < self.order.len())
    }

    fn process(&mut self, i: usize, ctl: &Control) -> Result<()> {
        let keys: Vec<DeltaKey> = self.loaded.adapters[i]
            .deltas
            .iter()
            .map(Delta::key)
            .collect();
        let (measures, bases) = if self.need[i] {
            let (m, b) = measure(&self.loaded.adapters[i], ctl)?;
            (m, Some(b))
        } else {
            let e = self.entries[i]
                .as_ref()
                .expect("planned from a cached entry");
            (e.deltas.clone(), None)
        };
        self.rows[i].cached = bases.is_none();
        self.measures[i] = Some(measures);
        let pos = self
            .readable
            .iter()
            .position(|&j| j == i)
            .expect("readable");
        let last = *self.readable.last().expect("readable");
        let prev = pos.checked_sub(1).map(|p| self.readable[p]);
        let pair = |s: &Self, other: usize, theirs: Option<&Bases>| -> Sims {
            s.cached_sims(i, other)
                .or_else(|| Some(sims_between(bases.as_ref()?, theirs?, &keys)))
                .unwrap_or_default()
        };
        if i == last {
            self.sim_last[i] = pair(self, i, bases.as_ref());
            self.last_bases = bases;
            if self.readable.len() == 1 {
                self.save(i, None, last);
            }
        } else {
            if let Some(p) = prev {
                self.sim_prev[i] = pair(self, p, self.prev_bases.as_ref());
            }
            self.sim_last[i] = pair(self, last, self.last_bases.as_ref());
            // The one before the last also gives the last its previous similarity.
            if self.readable.get(pos + 1) == Some(&last) {
                self.sim_prev[last] = self.sim_last[i].clone();
                self.save(last, Some(i), last);
            }
            self.save(i, prev, last);
            self.prev_bases = bases;
        }
        self.rows[i].done = true;
        Ok(())
    }

    /// Writes checkpoint `i`'s entry: its statistics and its similarities to `prev` and `last`.
    fn save(&mut self, i: usize, prev: Option<usize>, last: usize) {
        let (Some(cache), Some(key), Some(measures)) =
            (&self.cache, &self.ids[i], &self.measures[i])
        else {
            return;
        };
        let mut e = match &self.entries[i] {
            Some(old) => old.clone(),
            None => Entry::new(key.clone(), measures.clone()),
        };
        let aligned = |s: &Sims| -> Vec<Option<f64>> {
            measures
                .iter()
                .map(|m| s.get(&key_of(m)).copied().flatten())
                .collect()
        };
        let mut changed = self.entries[i].is_none();
        for (other, sims) in [(prev, &self.sim_prev[i]), (Some(last), &self.sim_last[i])] {
            let Some(ok) = other.and_then(|o| self.ids[o].clone()) else {
                continue;
            };
            if !e.sims.contains_key(&ok) {
                e.set_sims(&ok, aligned(sims));
                changed = true;
            }
        }
        if changed {
            cache.put(&e);
            self.entries[i] = Some(e);
        }
    }

    /// The timeline as far as it is known, restricted to the deltas `filter` selects.
    pub fn timeline(&self, filter: &Filter) -> Timeline {
        let loaded = &self.loaded;
        let keys: Vec<DeltaKey> = self
            .readable
            .first()
            .map(|&i| loaded.adapters[i].deltas.iter().map(Delta::key).collect())
            .unwrap_or_default();
        let keys: Vec<DeltaKey> = keys
            .into_iter()
            .filter(|k| filter.matches(k.layer, &k.target, k.expert))
            .collect();
        let by_key: Vec<BTreeMap<DeltaKey, &DeltaMeasure>> = self
            .measures
            .iter()
            .map(|m| m.iter().flatten().map(|d| (key_of(d), d)).collect())
            .collect();
        let deltas: Vec<DeltaTimeline> = keys
            .iter()
            .map(|k| DeltaTimeline {
                layer: k.layer,
                target: k.target.clone(),
                expert: k.expert,
                steps: (0..self.rows.len())
                    .map(|i| {
                        let m = by_key[i].get(k).filter(|_| self.rows[i].error.is_none());
                        let fin = m.filter(|m| m.finite);
                        let sim = |s: &Sims| fin.and(s.get(k).copied().flatten());
                        StepStats {
                            step: self.rows[i].step,
                            fro_norm: fin.map(|m| m.fro_norm),
                            spectral_norm: fin.map(|m| m.spectral_norm),
                            effective_rank: fin.map(|m| m.effective_rank),
                            energy_rank_99: fin.map(|m| m.energy_rank_99),
                            similarity_prev: sim(&self.sim_prev[i]),
                            similarity_last: sim(&self.sim_last[i]),
                            dead: m.map(|m| m.dead),
                            finite: m.map(|m| m.finite),
                        }
                    })
                    .collect(),
            })
            .collect();
        let groups = deltas.iter().map(group).collect();
        Timeline {
            run: loaded.run.id.clone(),
            path: loaded.run.path.display().to_string(),
            scheme: loaded.run.scheme,
            checkpoints: self.rows.clone(),
            deltas,
            groups,
        }
    }
}

/// Whether a cache entry holds exactly the deltas of `a`, in its order.
fn fits(e: &Entry, a: &Adapter) -> bool {
    e.deltas.len() == a.deltas.len()
        && e.deltas
            .iter()
            .zip(&a.deltas)
            .all(|(m, d)| key_of(m) == d.key())
}

/// The group summary of one delta's timeline (see `Group`).
fn group(d: &DeltaTimeline) -> Group {
    let measured: Vec<&StepStats> = d.steps.iter().filter(|s| s.dead.is_some()).collect();
    let fro: Vec<(u64, f64)> = d
        .steps
        .iter()
        .filter_map(|s| Some((s.step, s.fro_norm?)))
        .collect();
    let last = fro.last().map(|x| x.1).filter(|&x| x > 0.0);
    let woke_at = last.and_then(|l| fro.iter().find(|(_, f)| *f > 0.1 * l).map(|x| x.0));
    let still_growing = match fro.as_slice() {
        [.., (_, a), (_, b)] => b - a > 0.05 * b,
        _ => false,
    };
    Group {
        layer: d.layer,
        target: d.target.clone(),
        expert: d.expert,
        woke_at,
        never_moved: !measured.is_empty() && measured.iter().all(|s| s.dead == Some(true)),
        still_growing,
    }
}

/// The whole timeline of a run, with progress (checkpoints done, of all) and cancellation.
pub fn compute(
    loaded: Loaded,
    filter: &Filter,
    cache: Option<Cache>,
    ctl: &Control,
) -> Result<Timeline> {
    let mut b = Builder::new(loaded, cache);
    let total = b.total();
    // Threads and progress belong to the whole run: each checkpoint runs without its own.
    let inner = Control {
        threads: None,
        progress: None,
        cancel: ctl.cancel,
    };
    ctl.install(|| {
        while b.step(&inner)? {
            if let Some(p) = ctl.progress {
                p(b.done(), total);
            }
        }
        if let Some(p) = ctl.progress {
            p(b.done(), total);
        }
        Ok(())
    })?;
    Ok(b.timeline(filter))
}
