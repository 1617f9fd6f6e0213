//! Synthetic adapters of every layout with chosen singular values, at toy or real gpt-oss sizes.
//! Used by the tests, the benchmarks and `lorascope demo`; includes a small safetensors writer.

pub mod base;
pub mod demo;
pub mod gguf;
pub mod run;
pub mod survey;
pub mod torchtune;

use crate::adapter::format;
pub use crate::adapter::format::{encode, TensorData};
use crate::adapter::layout::LoraBLayout;
use safetensors::Dtype;
use std::io::Write;
use std::path::Path;

/// Model sizes. Nothing else in lorascope assumes them: they only shape synthetic files.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Dims {
    pub layers: usize,
    pub hidden: usize,
    pub q_out: usize,
    pub kv_out: usize,
    pub experts: usize,
    /// Expert intermediate size (gate_up_proj's output is twice this).
    pub inter: usize,
}

impl Dims {
    /// openai/gpt-oss-20b.
    pub const GPT_OSS_20B: Dims = Dims {
        layers: 24,
        hidden: 2880,
        q_out: 4096,
        kv_out: 512,
        experts: 32,
        inter: 2880,
    };
    /// Small enough for dense reference SVDs in tests.
    pub const TOY: Dims = Dims {
        layers: 3,
        hidden: 12,
        q_out: 16,
        kv_out: 8,
        experts: 4,
        inter: 10,
    };

    /// The smallest sizes an MXFP4 base takes (hidden and inter multiples of its 32-value
    /// blocks), for bases and the adapters on them in tests.
    pub const TOY_MXFP4: Dims = Dims {
        layers: 2,
        hidden: 32,
        q_out: 32,
        kv_out: 32,
        experts: 2,
        inter: 32,
    };

    /// (out, in) of an attention projection.
    pub fn attn_shape(&self, target: &str) -> (usize, usize) {
        match target {
            "q_proj" => (self.q_out, self.hidden),
            "k_proj" | "v_proj" => (self.kv_out, self.hidden),
            _ => (self.hidden, self.q_out), // o_proj
        }
    }
}

/// Which of the survey's layouts to write.
#[derive(Debug, Clone, PartialEq)]
pub enum Pattern {
    /// Pattern A / A2 / A3: attention LoRA on the given targets.
    Attention,
    /// Pattern B: attention LoRA plus the full router saved by `modules_to_save`.
    AttentionRouter,
    /// Pattern C: PEFT `target_parameters`, E rank-r LoRAs packed per parameter, on these layers.
    PeftExperts { layers: Vec<usize> },
    /// Pattern D: Tinker's 3D w1/w2/w3 with broadcast dims, `attn.` prefix, all layers.
    Tinker3d,
    /// Pattern E: merged full weights (small tensors only: router, norms, biases) on these layers.
    FullWeights { layers: Vec<usize> },
    /// A file with no tensors.
    Empty,
    /// Unsloth gpt-oss bnb-4bit: attention LoRA plus one 2D LoRA per expert module
    /// (`experts.gate_up_projs.{e}`, `experts.down_projs.{e}`), on these layers.
    UnslothExperts { layers: Vec<usize> },
    /// mlx-lm: `adapters.safetensors`, attention `lora_a` (in, r) / `lora_b` (r, out), the router
    /// and SwitchLinear experts `lora_a` (E, r, in) / `lora_b` (E, out, r) on the last `layers`
    /// layers; `alpha` is written as `lora_parameters.scale` (mlx-lm's scale, not alpha).
    Mlx { layers: usize },
}

impl Pattern {
    /// The safetensors file name its writer uses.
    pub fn file_name(&self) -> &'static str {
        match self {
            Pattern::Mlx { .. } => "adapters.safetensors",
            _ => "adapter_model.safetensors",
        }
    }
}

/// Everything that decides a synthetic adapter.
#[derive(Debug, Clone)]
pub struct Spec {
    pub dims: Dims,
    pub pattern: Pattern,
    pub targets: Vec<&'static str>,
    pub attn_rank: usize,
    pub expert_rank: usize,
    pub dtype: Dtype,
    pub alpha: f64,
    pub rslora: bool,
    /// PEFT rank_pattern / alpha_pattern written to the config and used for the affected modules.
    pub rank_pattern: Vec<(String, usize)>,
    pub alpha_pattern: Vec<(String, f64)>,
    pub seed: u64,
    /// Column order of packed expert B (what some trainers wrote).
    pub lora_b_layout: LoraBLayout,
    /// Header and file size only (tensor data is a hole): for header benchmarks at scale.
    pub sparse: bool,
    /// Keep the safetensors data section 8-byte aligned (real writers do; set false to test copies).
    pub aligned: bool,
    /// Deliberate defects of some deltas (health fixtures, the demo's broken adapters).
    pub damage: Vec<Damage>,
    /// The config's `base_model_name_or_path` (PEFT writers; Unsloth and mlx-lm name their own).
    pub base_model: String,
}

/// A defect planted in the deltas a selector picks (`None` = any layer, target or expert).
#[derive(Debug, Clone, PartialEq)]
pub struct Damage {
    pub layer: Option<usize>,
    pub target: Option<&'static str>,
    pub expert: Option<usize>,
    pub kind: DamageKind,
}

/// What is wrong with a damaged delta.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum DamageKind {
    /// σ = 0: the factor that carries σ (B, or A where B is shared) is exactly zero, as after a
    /// run whose LoRA got no gradient.
    Dead,
    /// σ₁ = NaN: one column of B (a row of A where B is shared) is NaN.
    NonFinite,
    /// σ scaled by this factor (outliers, negligible deltas).
    Scale(f64),
    /// Only the first k singular values kept (unused rank).
    Collapse(usize),
    /// B scaled by k and A by 1/k: the same ΔW from unbalanced factors (where factors are drawn
    /// per delta; a shared 3D factor is left as is).
    Imbalance(f64),
    /// The module's lora_B is not written (a lone lora_A). Like the two below, it breaks the
    /// module's tensor pair: for a packed or 3D pair, every expert of the module.
    MissingB,
    /// The module's lora_A is not written (a lone lora_B).
    MissingA,
    /// A gets one more rank row (of zeros) than B has rank columns: the ranks disagree.
    RankMismatch,
}

impl Damage {
    pub fn new(
        layer: Option<usize>,
        target: Option<&'static str>,
        expert: Option<usize>,
        kind: DamageKind,
    ) -> Damage {
        Damage {
            layer,
            target,
            expert,
            kind,
        }
    }

    fn applies(&self, layer: usize, target: &str, expert: Option<usize>) -> bool {
        self.layer.is_none_or(|l| l == layer)
            && self.target.is_none_or(|t| t == target)
            && self.expert.is_none_or(|e| expert == Some(e))
    }
}

impl Spec {
    pub fn new(dims: Dims, pattern: Pattern) -> Spec {
        Spec {
            dims,
            pattern,
            targets: vec!["q_proj", "k_proj", "v_proj", "o_proj"],
            attn_rank: 4,
            expert_rank: 2,
            dtype: Dtype::F32,
            alpha: 16.0,
            rslora: false,
            rank_pattern: vec![],
            alpha_pattern: vec![],
            seed: 1,
            lora_b_layout: LoraBLayout::StrideE,
            sparse: false,
            aligned: true,
            damage: vec![],
            base_model: "openai/gpt-oss-20b".into(),
        }
    }
}

/// The singular values a synthetic delta was given (before the scale s).
#[derive(Debug, Clone, PartialEq)]
pub struct Planted {
    pub layer: usize,
    pub target: String,
    pub expert: Option<usize>,
    pub sigma: Vec<f64>,
}

/// A generated adapter: its tensors, its adapter_config.json, and the planted spectra.
#[derive(Debug, Clone)]
pub struct Generated {
    pub tensors: Vec<TensorData>,
    pub config: serde_json::Value,
    pub planted: Vec<Planted>,
}

/// splitmix64: deterministic and dependency-free.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u = self.uniform().max(1e-300);
        let v = self.uniform();
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
}

/// A random m×k matrix with orthonormal columns, row-major (modified Gram–Schmidt, twice).
pub fn orthonormal(rng: &mut Rng, m: usize, k: usize) -> Vec<f64> {
    assert!(k <= m, "orthonormal: {k} columns do not fit in {m} rows");
    let mut q: Vec<f64> = (0..m * k).map(|_| rng.normal()).collect();
    for _ in 0..2 {
        for j in 0..k {
            for p in 0..j {
                let dot: f64 = (0..m).map(|i| q[i * k + j] * q[i * k + p]).sum();
                for i in 0..m {
                    q[i * k + j] -= dot * q[i * k + p];
                }
            }
            let norm = (0..m).map(|i| q[i * k + j].powi(2)).sum::<f64>().sqrt();
            for i in 0..m {
                q[i * k + j] /= norm;
            }
        }
    }
    q
}

/// Serialises tensors as a safetensors file image (header + data). Holes are zero-filled.
pub fn safetensors_bytes(tensors: &[TensorData], aligned: bool) -> Vec<u8> {
    format::file_bytes(tensors, WRITER, aligned)
}

/// The `__metadata__` synthetic files carry.
pub(crate) const WRITER: &[(&str, &str)] = &[("format", "pt"), ("writer", "lorascope-synth")];

/// Writes a safetensors file; with holes, only the header is written and the file is extended.
pub fn write_safetensors(
    path: &Path,
    tensors: &[TensorData],
    aligned: bool,
) -> std::io::Result<()> {
    if tensors.iter().all(|t| t.bytes.is_none()) && !tensors.is_empty() {
        let (header, total) = format::header_bytes(tensors, WRITER, aligned);
        let mut f = std::fs::File::create(path)?;
        f.write_all(&(header.len() as u64).to_le_bytes())?;
        f.write_all(&header)?;
        f.set_len((8 + header.len() + total) as u64)?;
        return Ok(());
    }
    std::fs::write(path, safetensors_bytes(tensors, aligned))
}

/// A spectrum that varies across layers, targets and experts (so maps have structure).
fn spectrum(seed: u64, layer: usize, target: &str, expert: Option<usize>, r: usize) -> Vec<f64> {
    let t = target
        .bytes()
        .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(b as u64));
    let amp = 0.05
        * (1.0 + 0.6 * ((layer as f64) * 0.7 + (t % 7) as f64).sin())
        * expert.map_or(1.0, |e| {
            0.3 + 1.7 * ((e as f64) * 0.618_034 + seed as f64 * 0.1).fract()
        });
    // Per-index decay for small ranks; spread over the rank above 8 so that a rank-128 spectrum
    // falls like trained ones do (by e⁻²…e⁻⁵), not by e⁻⁸⁰.
    let decay = (0.25 + 0.1 * ((t % 5) as f64)) * 8.0 / r.max(8) as f64;
    (0..r).map(|k| amp * (-(k as f64) * decay).exp()).collect()
}

struct Gen<'a> {
    spec: &'a Spec,
    rng: Rng,
    out: Vec<TensorData>,
    planted: Vec<Planted>,
    /// The B/A balance of the next factors drawn (set by `plant` from `Imbalance`).
    balance: f64,
    /// A pair damage planted on the module being written, applied by `push_pair`.
    broken: Option<DamageKind>,
}

/// A tensor about to be written: name, shape, values (None when sparse).
type Planned = (String, Vec<usize>, Option<Vec<f64>>);

/// Adds one slice of zeros at the end of `axis` of a row-major tensor.
fn grow_axis(shape: &mut [usize], values: Option<Vec<f64>>, axis: usize) -> Option<Vec<f64>> {
    let inner: usize = shape[axis + 1..].iter().product();
    let block = (shape[axis] * inner).max(1);
    shape[axis] += 1;
    values.map(|v| {
        v.chunks(block)
            .flat_map(|c| c.iter().copied().chain(std::iter::repeat_n(0.0, inner)))
            .collect()
    })
}

impl Gen<'_> {
    fn push(&mut self, name: String, shape: Vec<usize>, values: Option<Vec<f64>>) {
        let bytes = if self.spec.sparse {
            None
        } else {
            values.map(|v| encode(&v, self.spec.dtype))
        };
        self.out.push(TensorData {
            name,
            dtype: self.spec.dtype,
            shape,
            bytes,
        });
    }

    /// Pushes a module's A and B, broken as a pair damage planted on it says; `rank_axis` is A's
    /// rank dimension.
    fn push_pair(&mut self, a: Planned, b: Planned, rank_axis: usize) {
        let ((na, mut sa, va), (nb, sb, vb)) = (a, b);
        match self.broken.take() {
            Some(DamageKind::MissingB) => self.push(na, sa, va),
            Some(DamageKind::MissingA) => self.push(nb, sb, vb),
            Some(DamageKind::RankMismatch) => {
                let va = grow_axis(&mut sa, va, rank_axis);
                self.push(na, sa, va);
                self.push(nb, sb, vb);
            }
            _ => {
                self.push(na, sa, va);
                self.push(nb, sb, vb);
            }
        }
    }

    fn rank_for(&self, module: &str, default: usize) -> usize {
        self.spec
            .rank_pattern
            .iter()
            .find(|(k, _)| crate::adapter::config::pattern_matches(k, module))
            .map_or(default, |(_, r)| *r)
    }

    /// U·diag(σ) (out×r) and Vᵀ (r×in), row-major, or None when sparse.
    fn factors(&mut self, out: usize, inn: usize, sigma: &[f64]) -> Option<(Vec<f64>, Vec<f64>)> {
        if self.spec.sparse {
            return None;
        }
        let r = sigma.len();
        let u = orthonormal(&mut self.rng, out, r);
        let v = orthonormal(&mut self.rng, inn, r);
        let k_bal = std::mem::replace(&mut self.balance, 1.0);
        let b: Vec<f64> = (0..out * r).map(|i| u[i] * sigma[i % r] * k_bal).collect();
        let mut a = vec![0.0; r * inn];
        for i in 0..inn {
            for k in 0..r {
                a[k * inn + i] = v[i * r + k] / k_bal;
            }
        }
        Some((b, a))
    }

    fn plant(&mut self, layer: usize, target: &str, expert: Option<usize>, r: usize) -> Vec<f64> {
        let mut sigma = spectrum(self.spec.seed, layer, target, expert, r);
        self.balance = 1.0;
        for d in self
            .spec
            .damage
            .iter()
            .filter(|d| d.applies(layer, target, expert))
        {
            match d.kind {
                DamageKind::Dead => sigma.iter_mut().for_each(|x| *x = 0.0),
                DamageKind::NonFinite => {
                    if let Some(x) = sigma.first_mut() {
                        *x = f64::NAN;
                    }
                }
                DamageKind::Scale(k) => sigma.iter_mut().for_each(|x| *x *= k),
                DamageKind::Collapse(k) => sigma.iter_mut().skip(k).for_each(|x| *x = 0.0),
                DamageKind::Imbalance(k) => self.balance = k,
                DamageKind::MissingB | DamageKind::MissingA | DamageKind::RankMismatch => {
                    self.broken = Some(d.kind)
                }
            }
        }
        self.planted.push(Planted {
            layer,
            target: target.into(),
            expert,
            sigma: sigma.clone(),
        });
        sigma
    }

    fn attention(&mut self, layer: usize, prefix: &str, attn: &str) {
        let targets = self.spec.targets.clone();
        for t in targets {
            let module = format!("model.layers.{layer}.{attn}.{t}");
            let r = self.rank_for(&module, self.spec.attn_rank);
            let (o, i) = self.spec.dims.attn_shape(t);
            let sigma = self.plant(layer, t, None, r);
            let f = self.factors(o, i, &sigma);
            let (b, a) = f.map_or((None, None), |(b, a)| (Some(b), Some(a)));
            self.push_pair(
                (format!("{prefix}{module}.lora_A.weight"), vec![r, i], a),
                (format!("{prefix}{module}.lora_B.weight"), vec![o, r], b),
                0,
            );
        }
    }

    /// One dense LoRA pair for `module` with a planted spectrum; MLX stores both transposed.
    #[allow(clippy::too_many_arguments)]
    fn dense(
        &mut self,
        name_of: &dyn Fn(&str) -> String,
        layer: usize,
        target: &str,
        expert: Option<usize>,
        r: usize,
        (o, i): (usize, usize),
        transposed: bool,
    ) {
        let sigma = self.plant(layer, target, expert, r);
        let f = self.factors(o, i, &sigma);
        let (b, a) = f.map_or((None, None), |(b, a)| (Some(b), Some(a)));
        if transposed {
            let t = |m: Option<Vec<f64>>, rows: usize, cols: usize| {
                m.map(|m| {
                    (0..cols)
                        .flat_map(|c| (0..rows).map(move |r| (r, c)))
                        .map(|(r, c)| m[r * cols + c])
                        .collect()
                })
            };
            let (a, b) = (t(a, r, i), t(b, o, r));
            self.push_pair(
                (name_of("lora_a"), vec![i, r], a),
                (name_of("lora_b"), vec![r, o], b),
                1,
            );
        } else {
            self.push_pair(
                (name_of("lora_A.weight"), vec![r, i], a),
                (name_of("lora_B.weight"), vec![o, r], b),
                0,
            );
        }
    }

    /// mlx-lm SwitchLinear LoRA: A (E, r, in), B (E, out, r), one planted spectrum per expert.
    fn mlx_switch(&mut self, layer: usize, target: &str, out: usize, inn: usize) {
        let (r, e_n) = (self.spec.expert_rank, self.spec.dims.experts);
        let mut a = (!self.spec.sparse).then(|| Vec::with_capacity(e_n * r * inn));
        let mut b = (!self.spec.sparse).then(|| Vec::with_capacity(e_n * out * r));
        for e in 0..e_n {
            let sigma = self.plant(layer, target, Some(e), r);
            if let (Some((be, ae)), Some(a), Some(b)) =
                (self.factors(out, inn, &sigma), &mut a, &mut b)
            {
                a.extend(ae);
                b.extend(be);
            }
        }
        let m = format!("model.layers.{layer}.mlp.experts.{target}");
        self.push_pair(
            (format!("{m}.lora_a"), vec![e_n, r, inn], a),
            (format!("{m}.lora_b"), vec![e_n, out, r], b),
            1,
        );
    }

    fn random(&mut self, n: usize, scale: f64) -> Option<Vec<f64>> {
        (!self.spec.sparse).then(|| (0..n).map(|_| self.rng.normal() * scale).collect())
    }

    /// PEFT ParamWrapper pair for one 3D parameter: A (r·E, in), B (out, r·E).
    fn peft_expert(&mut self, layer: usize, module: &str, target: &str, out: usize, inn: usize) {
        let d = self.spec.dims;
        let r = self.rank_for(&format!("{module}.{target}"), self.spec.expert_rank);
        let e_n = d.experts;
        let mut a = (!self.spec.sparse).then(|| vec![0.0; r * e_n * inn]);
        let mut b = (!self.spec.sparse).then(|| vec![0.0; out * r * e_n]);
        for e in 0..e_n {
            let sigma = self.plant(layer, target, Some(e), r);
            if let (Some((be, ae)), Some(a), Some(b)) =
                (self.factors(out, inn, &sigma), &mut a, &mut b)
            {
                a[e * r * inn..(e + 1) * r * inn].copy_from_slice(&ae);
                for row in 0..out {
                    for k in 0..r {
                        let col = match self.spec.lora_b_layout {
                            LoraBLayout::StrideE => k * e_n + e,
                            LoraBLayout::ExpertMajor => e * r + k,
                        };
                        b[row * r * e_n + col] = be[row * r + k];
                    }
                }
            }
        }
        let base = if target == "gate_up_proj" {
            ".base_layer"
        } else {
            ""
        };
        self.push_pair(
            (
                format!("base_model.model.{module}{base}.lora_A.weight"),
                vec![r * e_n, inn],
                a,
            ),
            (
                format!("base_model.model.{module}{base}.lora_B.weight"),
                vec![out, r * e_n],
                b,
            ),
            0,
        );
    }

    /// Tinker 3D: w1/w3 share A (leading dim 1), w2 shares B.
    fn tinker_expert(&mut self, layer: usize, w: &str, target: &str, out: usize, inn: usize) {
        let d = self.spec.dims;
        let r = self.spec.expert_rank;
        let e_n = d.experts;
        let shared_a = w != "w2";
        let (ea, eb) = if shared_a { (1, e_n) } else { (e_n, 1) };
        let shared_u = orthonormal(&mut self.rng, if shared_a { inn } else { out }, r);
        let mut a = (!self.spec.sparse).then(|| vec![0.0; ea * r * inn]);
        let mut b = (!self.spec.sparse).then(|| vec![0.0; eb * out * r]);
        for e in 0..e_n {
            let sigma = self.plant(layer, target, Some(e), r);
            if self.spec.sparse {
                continue;
            }
            let (a, b) = (a.as_mut().expect("dense"), b.as_mut().expect("dense"));
            if shared_a {
                // A = Vᵀ shared, B_e = U_e·diag(σ_e): ΔW_e = U_e Σ_e Vᵀ.
                let u = orthonormal(&mut self.rng, out, r);
                for i in 0..inn {
                    for k in 0..r {
                        a[k * inn + i] = shared_u[i * r + k];
                    }
                }
                for row in 0..out {
                    for k in 0..r {
                        b[e * out * r + row * r + k] = u[row * r + k] * sigma[k];
                    }
                }
            } else {
                // B = U shared, A_e = diag(σ_e)·V_eᵀ.
                let v = orthonormal(&mut self.rng, inn, r);
                b.copy_from_slice(&shared_u);
                for k in 0..r {
                    for i in 0..inn {
                        a[e * r * inn + k * inn + i] = v[i * r + k] * sigma[k];
                    }
                }
            }
        }
        let m = format!("base_model.model.model.layers.{layer}.mlp.experts.{w}");
        self.push_pair(
            (format!("{m}.lora_A.weight"), vec![ea, r, inn], a),
            (format!("{m}.lora_B.weight"), vec![eb, out, r], b),
            1,
        );
    }
}

/// Generates the tensors, config and planted spectra of a synthetic adapter.
pub fn generate(spec: &Spec) -> Generated {
    let d = spec.dims;
    let mut g = Gen {
        spec,
        rng: Rng::new(spec.seed),
        out: vec![],
        planted: vec![],
        balance: 1.0,
        broken: None,
    };
    let p = "base_model.model.";
    let mut target_parameters: Vec<String> = vec![];
    let mut modules_to_save: Vec<String> = vec![];
    match &spec.pattern {
        Pattern::Attention => (0..d.layers).for_each(|l| g.attention(l, p, "self_attn")),
        Pattern::AttentionRouter => {
            modules_to_save.push("router".into());
            for l in 0..d.layers {
                g.attention(l, p, "self_attn");
                let w = g.random(d.experts * d.hidden, 0.02);
                g.push(
                    format!("{p}model.layers.{l}.mlp.router.weight"),
                    vec![d.experts, d.hidden],
                    w,
                );
                let bias = g.random(d.experts, 0.1);
                g.push(
                    format!("{p}model.layers.{l}.mlp.router.bias"),
                    vec![d.experts],
                    bias,
                );
            }
        }
        Pattern::PeftExperts { layers } => {
            for l in 0..d.layers {
                g.attention(l, p, "self_attn");
                if layers.contains(&l) {
                    let m = format!("model.layers.{l}.mlp.experts");
                    g.peft_expert(l, &m, "gate_up_proj", 2 * d.inter, d.hidden);
                    g.peft_expert(l, &m, "down_proj", d.hidden, d.inter);
                    target_parameters.push(format!("{l}.mlp.experts.gate_up_proj"));
                    target_parameters.push(format!("{l}.mlp.experts.down_proj"));
                }
            }
        }
        Pattern::Tinker3d => {
            for l in 0..d.layers {
                g.attention(l, p, "attn");
                g.tinker_expert(l, "w1", "gate_proj", d.inter, d.hidden);
                g.tinker_expert(l, "w2", "down_proj", d.hidden, d.inter);
                g.tinker_expert(l, "w3", "up_proj", d.inter, d.hidden);
            }
        }
        Pattern::FullWeights { layers } => {
            for &l in layers {
                let m = format!("model.layers.{l}");
                let w = g.random(d.experts * d.hidden, 0.02);
                g.push(
                    format!("{m}.mlp.router.weight"),
                    vec![d.experts, d.hidden],
                    w,
                );
                let b = g.random(d.experts, 0.1);
                g.push(format!("{m}.mlp.router.bias"), vec![d.experts], b);
                for n in ["input_layernorm", "post_attention_layernorm"] {
                    let w = g.random(d.hidden, 1.0);
                    g.push(format!("{m}.{n}.weight"), vec![d.hidden], w);
                }
                let b = g.random(d.q_out, 0.1);
                g.push(format!("{m}.self_attn.q_proj.bias"), vec![d.q_out], b);
                let b = g.random(d.experts * 2 * d.inter, 0.1);
                g.push(
                    format!("{m}.mlp.experts.gate_up_proj_bias"),
                    vec![d.experts, 2 * d.inter],
                    b,
                );
            }
        }
        Pattern::Empty => {}
        Pattern::UnslothExperts { layers } => {
            for l in 0..d.layers {
                g.attention(l, p, "self_attn");
                if !layers.contains(&l) {
                    continue;
                }
                for e in 0..d.experts {
                    for (list, target, dims) in [
                        ("gate_up_projs", "gate_up_proj", (2 * d.inter, d.hidden)),
                        ("down_projs", "down_proj", (d.hidden, d.inter)),
                    ] {
                        let m = format!("{p}model.layers.{l}.mlp.experts.{list}.{e}");
                        let r = spec.expert_rank;
                        g.dense(&|f| format!("{m}.{f}"), l, target, Some(e), r, dims, false);
                    }
                }
            }
        }
        Pattern::Mlx { layers } => {
            for l in d.layers.saturating_sub(*layers)..d.layers {
                for t in spec.targets.clone() {
                    let m = format!("model.layers.{l}.self_attn.{t}");
                    let dims = d.attn_shape(t);
                    g.dense(
                        &|f| format!("{m}.{f}"),
                        l,
                        t,
                        None,
                        spec.attn_rank,
                        dims,
                        true,
                    );
                }
                let m = format!("model.layers.{l}.mlp.router");
                let dims = (d.experts, d.hidden);
                g.dense(
                    &|f| format!("{m}.{f}"),
                    l,
                    "router",
                    None,
                    spec.attn_rank,
                    dims,
                    true,
                );
                g.mlx_switch(l, "gate_proj", d.inter, d.hidden);
                g.mlx_switch(l, "up_proj", d.inter, d.hidden);
                g.mlx_switch(l, "down_proj", d.hidden, d.inter);
            }
        }
    }
    g.out.sort_by(|a, b| a.name.cmp(&b.name));
    let pattern_obj =
        |v: &[(String, serde_json::Value)]| serde_json::Value::Object(v.iter().cloned().collect());
    let config = serde_json::json!({
        "peft_type": "LORA",
        "base_model_name_or_path": spec.base_model,
        "r": spec.attn_rank,
        "lora_alpha": spec.alpha,
        "use_rslora": spec.rslora,
        "target_modules": spec.targets,
        "target_parameters": target_parameters,
        "modules_to_save": if modules_to_save.is_empty() { serde_json::Value::Null } else { modules_to_save.into() },
        "rank_pattern": pattern_obj(&spec.rank_pattern.iter().map(|(k, v)| (k.clone(), (*v).into())).collect::<Vec<_>>()),
        "alpha_pattern": pattern_obj(&spec.alpha_pattern.iter().map(|(k, v)| (k.clone(), (*v).into())).collect::<Vec<_>>()),
        "use_dora": false,
        "task_type": "CAUSAL_LM",
    });
    let mut config = config;
    match &spec.pattern {
        // Unsloth's issue tracker: target every expert of the module lists by index.
        Pattern::UnslothExperts { .. } => {
            let mut tm: Vec<String> = spec.targets.iter().map(|t| t.to_string()).collect();
            for e in 0..d.experts {
                tm.push(format!("gate_up_projs.{e}"));
                tm.push(format!("down_projs.{e}"));
            }
            config["target_modules"] = tm.into();
            config["base_model_name_or_path"] = "unsloth/gpt-oss-20b-unsloth-bnb-4bit".into();
        }
        // mlx-lm's adapter_config.json (mlx_lm/tuner/utils.py load_adapters).
        Pattern::Mlx { layers } => {
            config = serde_json::json!({
                "model": "openai/gpt-oss-20b",
                "fine_tune_type": "lora",
                "num_layers": layers,
                "lora_parameters": {"rank": spec.attn_rank, "scale": spec.alpha, "dropout": 0.0},
            });
        }
        _ => {}
    }
    if matches!(spec.pattern, Pattern::PeftExperts { .. }) && spec.expert_rank != spec.attn_rank {
        // PEFT records per-parameter ranks in rank_pattern.
        let rp = config["rank_pattern"].as_object_mut().expect("object");
        if !rp.keys().any(|k| k.contains("experts")) {
            rp.insert("experts".into(), spec.expert_rank.into());
        }
    }
    Generated {
        tensors: g.out,
        config,
        planted: g.planted,
    }
}

/// Writes the safetensors file (`adapter_model.safetensors`, mlx-lm's `adapters.safetensors`) and
/// `adapter_config.json` into `dir` (created).
pub fn write_adapter(dir: &Path, spec: &Spec) -> std::io::Result<Generated> {
    std::fs::create_dir_all(dir)?;
    let g = generate(spec);
    write_safetensors(
        &dir.join(spec.pattern.file_name()),
        &g.tensors,
        spec.aligned,
    )?;
    std::fs::write(
        dir.join("adapter_config.json"),
        serde_json::to_vec_pretty(&g.config).expect("json"),
    )?;
    Ok(g)
}

/// What a file (or file pair) of a synthetic hub repo holds.
#[derive(Debug, Clone)]
pub enum Item {
    /// `adapter_model.safetensors` + `adapter_config.json` in `sub` (`""` = the repo root).
    Adapter { sub: String, spec: Spec },
    /// `model.safetensors` + `config.json`: merged weights, no adapter config.
    Model { spec: Spec },
    /// Any other file (a `.bin` checkpoint, a README, a truncated download), as given.
    Raw { name: String, bytes: Vec<u8> },
}

/// Writes `items` as the `main` snapshot of repo `id` in the hub cache at `root`, through the one
/// cache writer (`hub::CacheRepo`). The commit id derives from `id`. Raw files are blobs named
/// by their sha256, as huggingface_hub names LFS blobs; generated files by the sha256 of repo id
/// and file name (hashing sparse contents would read gigabytes of holes). Returns the apparent
/// size written.
pub fn write_hub_repo(root: &Path, id: &str, items: &[Item]) -> crate::Result<u64> {
    use crate::hub::cache::{commit_id, sha256_hex, CacheRepo};
    let cache = CacheRepo::new(root, id);
    let commit = commit_id(id);
    let generated = |name: String, write: &dyn Fn(&Path) -> std::io::Result<()>| {
        let etag = sha256_hex(format!("{id}/{name}").as_bytes());
        cache.put(&commit, &name, &etag, write)
    };
    let mut bytes = 0u64;
    for item in items {
        bytes += match item {
            Item::Adapter { sub, spec } => {
                let dir = if sub.is_empty() {
                    String::new()
                } else {
                    format!("{sub}/")
                };
                let g = generate(spec);
                let cfg = serde_json::to_vec_pretty(&g.config).expect("json");
                generated(format!("{dir}adapter_model.safetensors"), &|p| {
                    write_safetensors(p, &g.tensors, spec.aligned)
                })? + generated(format!("{dir}adapter_config.json"), &|p| {
                    std::fs::write(p, &cfg)
                })?
            }
            Item::Model { spec } => {
                let g = generate(spec);
                generated("model.safetensors".into(), &|p| {
                    write_safetensors(p, &g.tensors, spec.aligned)
                })? + generated("config.json".into(), &|p| {
                    std::fs::write(p, br#"{"model_type": "gpt_oss"}"#)
                })?
            }
            Item::Raw { name, bytes } => cache.put(&commit, name, &sha256_hex(bytes), |p| {
                std::fs::write(p, bytes)
            })?,
        };
    }
    cache.set_ref("main", &commit)?;
    Ok(bytes)
}
