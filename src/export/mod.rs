//! `export`: an adapter rewritten as a PEFT adapter folder that PEFT loads and engines serve.
//! Layouts are converted (gpt-oss experts packed as PEFT's `target_parameters`), the scale is
//! folded into the factors (`lora_alpha = r`, one r for the whole adapter, smaller ranks
//! zero-padded), ranks are optionally reduced per delta by the exact factored SVD, and the
//! folder is written beside `--out`, re-read and compared with the source before it is moved
//! into place (docs/export.md).

pub mod factors;
mod gguf;
pub mod plan;
mod weights;
mod write;

pub use crate::error::{Dropped, ExportError};
pub use plan::Engine;
pub use write::protected_roots;

use crate::adapter::discovery::{self, ScanRequest};
use crate::adapter::layout::{DeltaKey, LayoutOptions, Target};
use crate::adapter::Adapter;
use crate::compute::shared::{self, SharedRs};
use crate::compute::stats::{self, Control, Filter};
use crate::compute::tensor::Mapped;
use crate::error::{Error, Result};
use plan::Plan;
use safetensors::Dtype;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// How ranks change.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RankRule {
    /// Every delta keeps its rank (layouts converted, scale folded: exact).
    Keep,
    /// The best rank-K approximation of each delta (K at most its rank).
    Rank(usize),
    /// Per delta, the smallest K keeping this fraction of Σσ².
    Energy(f64),
}

/// What kind of file the output is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A PEFT adapter folder.
    Peft,
    /// A GGUF LoRA file for llama.cpp (`Engine::Llamacpp`); `q8_0` quantises the factors to
    /// Q8_0 (`dtype` is then not used).
    Gguf { q8_0: bool },
}

/// What to write.
#[derive(Debug, Clone)]
pub struct Options {
    pub format: Format,
    pub engine: Engine,
    pub rank: RankRule,
    /// Caps the rank the rule gives.
    pub max_rank: Option<usize>,
    /// The output's data type (F32, F16, BF16; F64 only when the source is); None: the source's.
    pub dtype: Option<Dtype>,
    pub drop_unservable: bool,
    /// Replace a non-empty `--out`.
    pub force: bool,
    /// Folders never written into (the hub caches lorascope knows, see `protected_roots`).
    pub protected: Vec<PathBuf>,
}

/// One delta of the output.
#[derive(Debug, Clone, Serialize)]
pub struct DeltaReport {
    pub layer: Option<usize>,
    pub target: Target,
    pub expert: Option<usize>,
    pub rank_before: usize,
    pub rank_after: usize,
    pub energy_kept: f64,
    pub relative_error: f64,
}

/// How the written adapter compared with its source.
#[derive(Debug, Clone, Serialize)]
pub struct Verified {
    /// Deltas re-read from the written file.
    pub deltas: usize,
    /// The largest |σᵢ(written) − σᵢ(expected)| / σ₁(expected) over every delta.
    pub max_difference: f64,
    pub tolerance: f64,
}

/// What `export` did (the JSON of `export --json`, docs/json.md).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub source: String,
    pub out: PathBuf,
    pub format: &'static str,
    pub engine: Engine,
    pub dtype: String,
    /// The one rank of the written adapter (`r` and `lora_alpha` of its config).
    pub r: usize,
    /// With `--for vllm`: the `--max-lora-rank` value to serve it with.
    pub max_lora_rank: Option<usize>,
    pub deltas: Vec<DeltaReport>,
    pub dropped: Vec<Dropped>,
    /// What was added so that the engine applies the rest (zero sides of one-sided expert layers).
    pub notes: Vec<String>,
    pub bytes_before: u64,
    pub bytes_after: u64,
    pub verified: Verified,
}

/// The values vLLM's `--max-lora-rank` accepts (vllm/config/lora.py `MaxLoRARanks`); 1 only in
/// recent releases, so it is never suggested.
const VLLM_MAX_LORA_RANKS: [usize; 8] = [8, 16, 32, 64, 128, 256, 320, 512];

/// An output delta once its rank is decided: how its factors are written and what it kept.
struct Done {
    /// Its rank K in the output.
    rank: usize,
    /// The maps of its source factors to the written ones (B' = B·X_B, A'ᵀ = Aᵀ·X_A; r × K).
    maps: factors::Maps,
    report: DeltaReport,
    /// σ of the written delta as computed before writing (the first K of the source's).
    sigma: Vec<f64>,
}

/// Exports `a` into the folder `out`. `ctl` gives the threads, reports (done, total) deltas read
/// and cancels: a cancelled export leaves nothing at `out`.
pub fn export(a: &Adapter, out: &Path, opts: &Options, ctl: &Control) -> Result<Report> {
    if let Some(e) = &a.error {
        return Err(Error::Unusable {
            id: a.id.clone(),
            msg: e.clone(),
        });
    }
    match (opts.format, opts.engine) {
        (Format::Gguf { q8_0 }, Engine::Llamacpp) => return gguf::export(a, out, opts, q8_0, ctl),
        (Format::Gguf { .. }, e) => {
            return Err(ExportError::Option(format!(
                "a GGUF file is for llama.cpp, not {}: leave out --for or pass --for llamacpp",
                e.as_str()
            ))
            .into())
        }
        (Format::Peft, Engine::Llamacpp) => {
            return Err(ExportError::Option(
                "llama.cpp reads GGUF LoRA files: pass --format gguf".into(),
            )
            .into())
        }
        (Format::Peft, _) => {}
    }
    write::check_out(out, a, &opts.protected, opts.force)?;
    let dtype = output_dtype(a, opts.dtype)?;
    let plan = plan::plan(a, opts.engine, opts.drop_unservable)?;
    // One map of the source for both passes (its pages are faulted in once).
    let m = Mapped::open(a)?;
    let done = ctl.install(|| reduce(&m, &plan, opts, ctl))?;
    let r = done.iter().map(|d| d.rank).max().unwrap_or(0).max(1);
    let max_lora_rank =
        match opts.engine {
            Engine::Vllm => Some(*VLLM_MAX_LORA_RANKS.iter().find(|&&v| v >= r).ok_or_else(
                || {
                    ExportError::Option(format!(
                        "rank {r} is above the largest --max-lora-rank vLLM accepts (512): pass \
                         --rank or --max-rank"
                    ))
                },
            )?),
            _ => None,
        };
    let staged = write::Staging::new(out)?;
    let weights = staged.path("adapter_model.safetensors");
    let mut bytes_after = ctl.install(|| written(&m, &plan, &done, r, dtype, ctl, &weights))?;
    drop(m);
    bytes_after += staged.write("adapter_config.json", &write::config(a, &plan, r))?;
    bytes_after += staged.write("README.md", &write::card(a, opts, r))?;
    write::pause_for_tests();
    let verified = verify(staged.dir(), &plan, &done, dtype)?;
    serves(staged.dir(), opts.engine)?;
    if ctl.cancelled() {
        return Err(Error::Cancelled);
    }
    staged.commit(opts.force)?;
    Ok(Report {
        source: a.id.clone(),
        out: out.to_path_buf(),
        format: "peft",
        engine: opts.engine,
        dtype: crate::adapter::format::dtype_name(dtype),
        r,
        max_lora_rank,
        // Zero fillers (plan::Src::Zero) are no delta of the source.
        deltas: plan
            .deltas
            .iter()
            .zip(done)
            .filter(|(d, _)| !matches!(d.src, plan::Src::Zero { .. }))
            .map(|(_, d)| d.report)
            .collect(),
        dropped: plan.dropped,
        notes: plan.notes,
        bytes_before: a.bytes(),
        bytes_after,
        verified,
    })
}

/// The source's data type (of its first factor), or the one asked for.
fn output_dtype(a: &Adapter, asked: Option<Dtype>) -> Result<Dtype> {
    let src = a
        .deltas
        .first()
        .map(|d| a.tensors[d.a.tensor].info.dtype)
        .unwrap_or(Dtype::F32);
    match asked.unwrap_or(src) {
        d @ (Dtype::F32 | Dtype::F16 | Dtype::BF16 | Dtype::F64) => Ok(d),
        other => Err(ExportError::Option(format!(
            "the source's data type {other:?} cannot be written: pass --dtype f32, bf16 or f16"
        ))
        .into()),
    }
}

/// Reduces every output delta to its singular values (and the maps to its truncated factors),
/// then decides its rank. A packed parameter (one layer's gate_up or down over its experts) takes
/// one K, the largest its experts need; each expert then keeps up to K of its own components.
/// Only the R's of a wave of factors and each delta's small maps are held, never a factor.
fn reduce(m: &Mapped, plan: &Plan, opts: &Options, ctl: &Control) -> Result<Vec<Done>> {
    // Singular vectors only where something may be cut.
    let vectors = opts.rank != RankRule::Keep || opts.max_rank.is_some();
    let svds = svds(m, m.adapter(), plan, vectors, ctl)?;
    let wanted = |s: &factors::Svd| {
        let k = match opts.rank {
            RankRule::Keep => s.rank_after(usize::MAX),
            RankRule::Rank(k) => k,
            RankRule::Energy(f) => s.rank_for_energy(f),
        };
        s.rank_after(opts.max_rank.map_or(k, |m| k.min(m)))
    };
    // One K per packed parameter: the largest of its experts'.
    let mut group_k: BTreeMap<(Option<usize>, Target), usize> = BTreeMap::new();
    for (d, s) in plan.deltas.iter().zip(&svds) {
        if d.slot.stacked() {
            let e = group_k
                .entry((d.key.layer, d.key.target.clone()))
                .or_default();
            *e = (*e).max(wanted(s));
        }
    }
    Ok(plan
        .deltas
        .iter()
        .zip(svds)
        .map(|(d, s)| {
            let k = if d.slot.stacked() {
                group_k[&(d.key.layer, d.key.target.clone())]
            } else {
                wanted(&s)
            };
            let k = s.rank_after(k);
            Done {
                rank: k,
                maps: s.maps(k),
                report: DeltaReport {
                    layer: d.key.layer,
                    target: d.key.target.clone(),
                    expert: d.key.expert,
                    rank_before: s.rank(),
                    rank_after: k,
                    energy_kept: s.energy_kept(k),
                    relative_error: s.relative_error(k),
                },
                sigma: s.sigma.iter().take(k).copied().collect(),
            }
        })
        .collect())
}

/// The SVD of every output delta, a wave of source deltas at a time (each tensor of a wave read
/// once for the R's of all its factors, `SharedRs`).
fn svds(
    m: &Mapped,
    a: &Adapter,
    plan: &Plan,
    vectors: bool,
    ctl: &Control,
) -> Result<Vec<factors::Svd>> {
    let first = |src: &plan::Src| match *src {
        plan::Src::One(i) => Some(i),
        plan::Src::GateUp { gate, up } => gate.or(up),
        plan::Src::Zero { .. } => None,
    };
    // A zero filler reads nothing: any source delta stands for it in the waves.
    let any = plan
        .deltas
        .iter()
        .find_map(|d| first(&d.src))
        .ok_or_else(|| Error::Other("no output delta reads the source".into()))?;
    let srcs: Vec<&crate::adapter::layout::Delta> = plan
        .deltas
        .iter()
        .map(|d| &a.deltas[first(&d.src).unwrap_or(any)])
        .collect();
    let total = plan.deltas.len();
    let mut out = Vec::with_capacity(total);
    for w in shared::waves(&srcs) {
        let ones: Vec<&crate::adapter::layout::Delta> = plan.deltas[w.clone()]
            .iter()
            .filter_map(|d| match d.src {
                plan::Src::One(i) => Some(&a.deltas[i]),
                _ => None,
            })
            .collect();
        let rs = SharedRs::compute(m, &ones, ctl)?;
        out.extend(
            ctl.each(&plan.deltas[w.clone()], Some((w.start, total)), |d| {
                factors::svd_of(m, a, &d.src, &rs, vectors)
            })?,
        );
    }
    Ok(out)
}

/// Writes the safetensors file at `path`: its header first, then one output pair (a Linear
/// delta, or a packed parameter over its experts) at a time, in parallel, each pair's tensors
/// filled from its factors' products block by block and written by the thread that computed
/// them (`weights`). Returns the file's size.
fn written(
    m: &Mapped,
    plan: &Plan,
    done: &[Done],
    r: usize,
    dtype: Dtype,
    ctl: &Control,
    path: &Path,
) -> Result<u64> {
    let a = m.adapter();
    let groups = write::groups(plan);
    let layouts = groups
        .iter()
        .map(|g| weights::layout(a, plan, g, r))
        .collect::<Result<Vec<_>>>()?;
    let file = weights::Weights::create(path, &layouts, dtype)?;
    let pairs: Vec<(&Vec<usize>, &Vec<weights::Layout>)> = groups.iter().zip(&layouts).collect();
    ctl.each(&pairs, None, |(g, layout)| {
        let items: Vec<_> = g
            .iter()
            .map(|&i| (&plan.deltas[i].src, &done[i].maps))
            .collect();
        let mut tensors = file.tensors(layout);
        factors::products(m, a, &items, |k, side, i0, rows| {
            tensors.put(k, side, i0, rows)
        })?;
        tensors.write()
    })?;
    file.finish()
}

/// Machine epsilon of a written data type: what rounding the factors to it may cost.
fn epsilon(d: Dtype) -> f64 {
    match d {
        Dtype::F64 => f64::EPSILON,
        Dtype::F32 => f32::EPSILON as f64,
        Dtype::F16 => 2f64.powi(-10),
        _ => 2f64.powi(-7),
    }
}

/// Re-reads the written folder with lorascope's own reader and compares every delta's singular
/// values with the ones computed before writing. A delta the plan did not write (an expert the
/// source does not adapt, zero in its packed pair) must be exactly zero.
fn verify(dir: &Path, plan: &Plan, done: &[Done], dtype: Dtype) -> Result<Verified> {
    let r = done.iter().map(|d| d.rank).max().unwrap_or(1);
    let tolerance = (4.0 * epsilon(dtype) * (r as f64).sqrt()).max(1e-5);
    verify_with(dir, plan, done, |_| tolerance)
}

/// `verify` with a tolerance per output delta (`tolerance(i)` for `plan.deltas[i]`, relative to
/// its σ₁); `Verified::tolerance` is the largest.
fn verify_with(
    path: &Path,
    plan: &Plan,
    done: &[Done],
    tolerance: impl Fn(usize) -> f64,
) -> Result<Verified> {
    let mismatch = |m: String| -> Error { ExportError::Mismatch(m).into() };
    let back = load(path)?;
    let got = stats::compute(&back, &Filter::default(), &Control::default())?;
    let expected: BTreeMap<&DeltaKey, (usize, &Done)> = plan
        .deltas
        .iter()
        .map(|d| &d.key)
        .zip(done.iter().enumerate())
        .collect();
    let max_tolerance = (0..done.len()).map(&tolerance).fold(0.0, f64::max);
    let mut worst = 0.0f64;
    let mut seen = 0;
    for g in &got.deltas {
        let key = g.key();
        let Some(&(index, want)) = expected.get(&key) else {
            if g.fro_norm != 0.0 {
                return Err(mismatch(format!(
                    "{} is not in the source but is not zero",
                    label(&key)
                )));
            }
            continue;
        };
        seen += 1;
        let s1 = want.sigma.first().copied().unwrap_or(0.0);
        let n = g.singular_values.len().max(want.sigma.len());
        for i in 0..n {
            let (x, y) = (
                g.singular_values.get(i).copied().unwrap_or(0.0),
                want.sigma.get(i).copied().unwrap_or(0.0),
            );
            let d = if s1 > 0.0 {
                (x - y).abs() / s1
            } else {
                x.abs()
            };
            if d.is_nan() || d > tolerance(index) {
                return Err(mismatch(format!(
                    "{}: σ{} is {x:.6e}, expected {y:.6e}",
                    label(&key),
                    i + 1
                )));
            }
            worst = worst.max(d);
        }
    }
    if seen != expected.len() {
        return Err(mismatch(format!(
            "{} of {} deltas read back",
            seen,
            expected.len()
        )));
    }
    Ok(Verified {
        deltas: seen,
        max_difference: worst,
        tolerance: max_tolerance,
    })
}

/// Judges the written adapter by the engine's serving rules (`check --engine`'s table): what the
/// engine would refuse, drop, rescale or apply to another base must not be written. The plan
/// leaves all of it out, so a finding here is export's own error.
fn serves(dir: &Path, engine: Engine) -> Result<()> {
    let Some(e) = engine.serving() else {
        return Ok(());
    };
    let back = load(dir)?;
    let verdict = crate::health::serving::judge(&back);
    let bad: Vec<String> = verdict
        .of(e)
        .findings
        .iter()
        .filter(|f| {
            f.rule
                .and_then(crate::health::serving::rule)
                .is_some_and(|r| r.effect.unservable())
        })
        .map(|f| format!("{}: {}", f.rule.unwrap_or_default(), f.message))
        .collect();
    if bad.is_empty() {
        Ok(())
    } else {
        Err(ExportError::Unservable {
            engine: e.label(),
            findings: bad,
        }
        .into())
    }
}

/// The one adapter of a written folder, read back.
fn load(dir: &Path) -> Result<Adapter> {
    let mismatch = |m: String| -> Error { ExportError::Mismatch(m).into() };
    let src = discovery::sources(&ScanRequest {
        cache: None,
        paths: vec![dir.to_path_buf()],
        layout: LayoutOptions::default(),
    });
    let [src] = src.as_slice() else {
        return Err(mismatch(format!(
            "{} adapters found where one was written",
            src.len()
        )));
    };
    let back = Adapter::load(src, LayoutOptions::default());
    if let Some(e) = &back.error {
        return Err(mismatch(format!("it does not read back: {e}")));
    }
    Ok(back)
}

/// `layer 3 gate_up_proj expert 5`, for messages.
fn label(k: &DeltaKey) -> String {
    let mut s = k.layer.map_or(String::new(), |l| format!("layer {l} "));
    s += k.target.as_str();
    if let Some(e) = k.expert {
        s += &format!(" expert {e}");
    }
    s
}
