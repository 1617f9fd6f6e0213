//! `export --format gguf`: the adapter as a GGUF LoRA file that llama.cpp's loader accepts for the
//! base model (`src/llama-adapter.cpp` `llama_adapter_lora_init_impl`), through export's one
//! pipeline: this module plans the GGUF tensors, `export::reduce` decides every rank, the
//! factors are read and mapped by `factors::written`, and the file is re-read with lorascope's
//! own reader and compared with the source (`export::verify_with`) before it is moved into place.
//!
//! - Names: llama.cpp's base tensor plus `.lora_a` / `.lora_b` (`blk.3.attn_q.weight.lora_a`),
//!   gpt-oss's tensors only (gguf-py `MODEL_ARCH.GPT_OSS`).
//! - Shapes (ggml `ne`, fastest first): `lora_a` `[in, r]`, `lora_b` `[r, out]`, i.e. PEFT's A
//!   and B row-major; experts stacked `[in, r, E]` / `[r, out, E]` (`ggml_mul_mat_id` picks an
//!   expert's slice); the token embedding flipped, `lora_a` `[r, V]`, `lora_b` `[r, H]`.
//! - gpt-oss's fused gate_up delta is read split (`Adapter::with_split_gate_up`: gate = even
//!   output rows, up = odd, as `convert_hf_to_gguf.py` splits the base's `gate_up_proj`), so
//!   `ffn_gate_exps` and `ffn_up_exps` each get their own `lora_a`, a copy of the shared A (or,
//!   when ranks are cut, each half's own best factors), and the B rows of their half.
//! - Scale: llama.cpp applies `alpha / rank` per tensor pair, rank = `lora_b->ne[0]`. The file
//!   has one `adapter.lora.alpha` = R, the largest rank written; a pair of rank K < R carries its
//!   B times K / R, so every pair's delta is exactly the source's.
//! - Verification: every delta's singular values within the exact effect of the written type's
//!   rounding (`bound`, Weyl's inequality), never a guessed tolerance.

use super::factors::Pair;
use super::plan::{self, OutDelta, Plan, Slot, Src};
use super::{DeltaReport, Done, Engine, ExportError, Options, Report};
use crate::adapter::gguf::{self as g, GgmlType, Value, WriteTensor};
use crate::adapter::gguf_layout;
use crate::adapter::layout::{Format as Layout, Role, MAX_EXPERTS};
use crate::adapter::Adapter;
use crate::compute::stats::Control;
use crate::compute::tensor::Mapped;
use crate::error::{Dropped, Error, Result};
use faer::{Mat, MatRef};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// llama.cpp's name of gpt-oss (`src/llama-arch.cpp` `LLM_ARCH_NAMES`: `LLM_ARCH_OPENAI_MOE` →
/// `"gpt-oss"`; gguf-py `MODEL_ARCH.GPT_OSS`), the `general.architecture` its loader compares
/// with the base model's.
pub const GPT_OSS_ARCH: &str = "gpt-oss";

/// gpt-oss's tensors in llama.cpp that a LoRA pair can change: the matrices its graph multiplies
/// through `build_lora_mm` / `build_lora_mm_id` / `build_inp_embd` (gguf-py `MODEL_ARCH.GPT_OSS`
/// less the norms and `attn_sinks`, which no LoRA adapts).
pub const GPT_OSS_TENSORS: [&str; 10] = [
    "token_embd",
    "output",
    "attn_q",
    "attn_k",
    "attn_v",
    "attn_output",
    "ffn_gate_inp",
    "ffn_gate_exps",
    "ffn_up_exps",
    "ffn_down_exps",
];

/// The token embedding, whose pair llama.cpp flips (`llm_build_inp_embd`).
const TOKEN_EMBD: &str = "token_embd.weight";

/// gguf-py `LlamaFileType` of the written type (`general.file_type`).
fn file_type(ty: GgmlType) -> u32 {
    match ty {
        GgmlType::F32 => 0,
        GgmlType::F16 => 1,
        GgmlType::Q8_0 => 7,
        _ => 32, // BF16
    }
}

/// llama.cpp's base tensor for a delta of `target` (layer, expert), among gpt-oss's tensors:
/// `blk.{layer}.{name}.weight` or `{name}.weight`. The GGUF names are lorascope's reading table
/// (`gguf_layout`) read backwards, so a written file reads back under the same targets.
pub fn base_tensor(target: &str, layer: Option<usize>, expert: Option<usize>) -> Option<String> {
    let table = if layer.is_some() {
        gguf_layout::TARGETS
    } else {
        gguf_layout::GLOBAL
    };
    let name = table
        .iter()
        .filter(|(name, t)| *t == target && GPT_OSS_TENSORS.contains(name))
        .map(|(name, _)| *name)
        .find(|name| name.ends_with("_exps") == expert.is_some())?;
    Some(match layer {
        Some(l) => format!("blk.{l}.{name}.weight"),
        None => format!("{name}.weight"),
    })
}

/// The source's llama.cpp architecture: a GGUF source's `general.architecture`, else gpt-oss's
/// when the adapter is one of gpt-oss (`plan::is_gpt_oss`).
fn architecture(a: &Adapter) -> Option<String> {
    if a.format() == Some(Layout::Gguf) {
        let h = g::read_header(&a.files.first()?.path).ok()?;
        return h.metadata.get("general.architecture").cloned();
    }
    plan::is_gpt_oss(a).then(|| GPT_OSS_ARCH.to_string())
}

/// A reason that names the llama.cpp rule.
fn rule(id: &str, why: &str) -> String {
    format!("llama.cpp ({id}): {why}")
}

/// The GGUF tensors of the output. What llama.cpp cannot apply is an error listing it all,
/// unless `drop_unservable`, which leaves it out and lists it in `Plan::dropped`.
fn plan_gguf(a: &Adapter, drop_unservable: bool) -> Result<Plan, ExportError> {
    plan::refuse_unfoldable(a)?;
    let mut left_out = Vec::new();
    for t in &a.tensors {
        let why = match t.name.role {
            Role::LoraBias => rule(
                "llamacpp.lora-bias",
                "a LoRA bias: llama.cpp applies B·A only (build_lora_mm) and its loader refuses \
                 any tensor not named .lora_a or .lora_b",
            ),
            Role::Unknown | Role::TrainableTokens => rule(
                "llamacpp.not-lora",
                &format!(
                    "not a LoRA factor pair ({}): llama.cpp's loader refuses any tensor not \
                     named .lora_a or .lora_b",
                    t.name.unknown.as_deref().unwrap_or("trainable tokens")
                ),
            ),
            _ => continue,
        };
        left_out.push(Dropped {
            name: t.info.name.clone(),
            reason: why,
        });
    }
    for f in &a.full {
        left_out.push(Dropped {
            name: f.name.clone(),
            reason: rule(
                "llamacpp.not-lora",
                "a full tensor (modules_to_save or a saved copy): a llama.cpp adapter holds \
                 LoRA factor pairs only",
            ),
        });
    }
    let mut deltas: Vec<OutDelta> = Vec::new();
    for (i, d) in a.deltas.iter().enumerate() {
        let name = d.module.clone() + &d.expert.map_or(String::new(), |e| format!(" expert {e}"));
        let target = d.target.as_str();
        let base = base_tensor(target, d.layer, d.expert);
        let why = match &base {
            None => rule(
                "llamacpp.no-base-tensor",
                &format!(
                    "llama.cpp's gpt-oss has no tensor a LoRA on {target}{} could change (its \
                     loader: \"does not exist in base model\")",
                    if d.expert.is_some() { " experts" } else { "" }
                ),
            ),
            Some(b) if b == TOKEN_EMBD && !plan::is_embedding(a, d) => rule(
                "llamacpp.embedding-orientation",
                "an embedding LoRA saved neither as PEFT's lora_embedding_A/B, mlx-lm's \
                 LoRAEmbedding nor a GGUF token_embd pair: which side is the vocabulary is \
                 unknown",
            ),
            Some(_) => String::new(),
        };
        match base {
            Some(base) if why.is_empty() => deltas.push(OutDelta {
                key: d.key(),
                slot: Slot::Gguf {
                    base,
                    expert: d.expert,
                },
                src: Src::One(i),
            }),
            _ => left_out.push(Dropped { name, reason: why }),
        }
    }
    if !left_out.is_empty() && !drop_unservable {
        return Err(ExportError::Refused { items: left_out });
    }
    if deltas.is_empty() {
        return Err(ExportError::Nothing);
    }
    let max_expert = deltas.iter().filter_map(|d| d.key.expert).max();
    if let Some(m) = max_expert.filter(|&m| m >= MAX_EXPERTS) {
        return Err(ExportError::Option(format!(
            "expert index {m} is above the {MAX_EXPERTS} experts a stacked tensor may hold"
        )));
    }
    deltas.sort_by(|x, y| x.key.cmp(&y.key));
    for w in deltas.windows(2) {
        if w[0].key == w[1].key {
            return Err(ExportError::Option(format!(
                "two deltas of the source are {}: one GGUF tensor cannot hold both",
                w[0].slot.name()
            )));
        }
    }
    Ok(Plan {
        experts: max_expert.map_or(0, |m| plan::expert_count(a, m)),
        deltas,
        dropped: left_out,
        notes: vec![],
    })
}

/// The type the factors are written in: Q8_0 when asked, else `--dtype`, else the source's
/// (of its first factor; a Q8_0 GGUF source stays Q8_0, F64 becomes F32).
fn output_type(a: &Adapter, opts: &Options, q8_0: bool) -> Result<GgmlType> {
    if q8_0 {
        return Ok(GgmlType::Q8_0);
    }
    let first = a.deltas.first().map(|d| &a.tensors[d.a.tensor].info);
    let asked = opts.dtype.or(first.map(|t| t.dtype));
    match (first.and_then(|t| t.quant), asked) {
        (Some(GgmlType::Q8_0), None) => Ok(GgmlType::Q8_0),
        (Some(GgmlType::Q8_0), Some(_)) if opts.dtype.is_none() => Ok(GgmlType::Q8_0),
        (_, Some(safetensors::Dtype::F32 | safetensors::Dtype::F64) | None) => Ok(GgmlType::F32),
        (_, Some(safetensors::Dtype::F16)) => Ok(GgmlType::F16),
        (_, Some(safetensors::Dtype::BF16)) => Ok(GgmlType::BF16),
        (_, Some(other)) => Err(ExportError::Option(format!(
            "the source's data type {other:?} cannot be written: pass --dtype f32, f16, bf16 or \
             q8_0"
        ))
        .into()),
    }
}

/// Refuses an `--out` that is not a `.gguf` file path, is a folder, is inside a cache or around
/// the source, or exists without `force`.
fn check_out(out: &Path, a: &Adapter, opts: &Options) -> Result<()> {
    let refuse = |why: &str| -> Error {
        ExportError::Out {
            out: out.to_path_buf(),
            why: why.into(),
        }
        .into()
    };
    if !g::is_gguf_path(out) {
        return Err(refuse(
            "a GGUF export writes a file whose name ends in .gguf",
        ));
    }
    super::write::check_place(out, a, &opts.protected)?;
    match std::fs::symlink_metadata(out) {
        Err(_) => Ok(()),
        Ok(m) if m.is_dir() => Err(refuse("it is a folder")),
        Ok(_) if opts.force => Ok(()),
        Ok(_) => Err(refuse("it exists (pass --force to replace it)")),
    }
}

/// The output pairs: one per GGUF tensor pair, each with the plan's deltas it holds (an expert
/// tensor holds all its experts), by base name.
fn groups(plan: &Plan) -> Vec<(String, Vec<usize>)> {
    let mut by: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, d) in plan.deltas.iter().enumerate() {
        if let Slot::Gguf { base, .. } = &d.slot {
            by.entry(base).or_default().push(i);
        }
    }
    by.into_iter().map(|(b, v)| (b.to_string(), v)).collect()
}

/// One written tensor pair, and for each delta it holds the bound of `bound`.
struct Built {
    tensors: [WriteTensor; 2],
    /// (index into `plan.deltas`, ‖ΔW(written) − ΔW(expected)‖₂ bound)
    bounds: Vec<(usize, f64)>,
    /// Whether a Q8_0 factor fell back to F16 (rows not whole 32-value blocks).
    fell_back: bool,
}

/// Values decoded from bytes of a written type, as a reader of the file sees them.
fn decoded(bytes: &[u8], ty: GgmlType) -> Vec<f64> {
    match ty {
        GgmlType::Q8_0 => {
            let mut out = vec![0f32; bytes.len() / g::Q8_0_BYTES * g::Q8_0_BLOCK];
            g::dequantize_q8_0(bytes, &mut out);
            out.into_iter().map(f64::from).collect()
        }
        GgmlType::F16 => bytes
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f64())
            .collect(),
        GgmlType::BF16 => bytes
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f64())
            .collect(),
        _ => bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64)
            .collect(),
    }
}

/// A tensor of matrices (one per expert, each rows × cols row-major; `ne` = [cols, rows, E])
/// encoded in `ty` (Q8_0 only for rows of whole blocks, else F16, as `convert_hf_to_gguf.py`
/// falls back), and the matrices as a reader decodes them.
fn encode(
    name: String,
    mats: &[Mat<f64>],
    stacked: bool,
    ty: GgmlType,
) -> (WriteTensor, Vec<Mat<f64>>, bool) {
    let (rows, cols) = (mats[0].nrows(), mats[0].ncols());
    let fell_back = ty == GgmlType::Q8_0 && cols % g::Q8_0_BLOCK != 0;
    let ty = if fell_back { GgmlType::F16 } else { ty };
    let mut values = Vec::with_capacity(mats.len() * rows * cols);
    for m in mats {
        for i in 0..rows {
            values.extend((0..cols).map(|j| m[(i, j)]));
        }
    }
    let data = g::encode(&values, ty);
    let back = decoded(&data, ty);
    let per = rows * cols;
    let back = (0..mats.len())
        .map(|e| Mat::from_fn(rows, cols, |i, j| back[e * per + i * cols + j]))
        .collect();
    let mut ne = vec![cols as u64, rows as u64];
    if stacked {
        ne.push(mats.len() as u64);
    }
    (WriteTensor { name, ty, ne, data }, back, fell_back)
}

/// A bound on ‖B̃·Ã − B·A‖₂ (so, by Weyl's inequality, on every |σᵢ(B̃Ã) − σᵢ(BA)|) for the
/// factors as read back, B̃ = B + E_B and Ã = A + E_A: ‖E_B·A‖_F + ‖B·E_A‖_F + ‖E_B‖_F·‖E_A‖_F,
/// the first two from r × r Grams (‖E_B·A‖_F² = tr(E_BᵀE_B · AAᵀ)).
fn bound(a: MatRef<f64>, b: MatRef<f64>, ea: MatRef<f64>, eb: MatRef<f64>) -> f64 {
    let tr = |x: &Mat<f64>, y: &Mat<f64>| -> f64 {
        (0..x.nrows())
            .flat_map(|j| (0..x.ncols()).map(move |l| (j, l)))
            .map(|(j, l)| x[(j, l)] * y[(l, j)])
            .sum::<f64>()
            .max(0.0)
            .sqrt()
    };
    let (ga, gb) = (a * a.transpose(), b.transpose() * b);
    let (ma, mb) = (ea * ea.transpose(), eb.transpose() * eb);
    let norm = |m: &Mat<f64>| {
        (0..m.nrows())
            .map(|i| m[(i, i)])
            .sum::<f64>()
            .max(0.0)
            .sqrt()
    };
    tr(&mb, &ga) + tr(&gb, &ma) + norm(&mb) * norm(&ma)
}

/// The tensor pair of `base` from its deltas' written factors (scale folded, `pairs[k]` for
/// `members[k]`): rank K = the largest of its deltas', every factor zero-padded to it, B times
/// K / `alpha` (llama.cpp multiplies the pair by alpha / K), experts the source does not adapt
/// zero.
fn build(
    plan: &Plan,
    done: &[Done],
    base: &str,
    members: &[usize],
    pairs: &[Pair],
    alpha: usize,
    ty: GgmlType,
) -> Result<Built> {
    let k = members
        .iter()
        .map(|&i| done[i].rank)
        .max()
        .unwrap_or(0)
        .max(1);
    let c = k as f64 / alpha as f64;
    let (out, inn) = (pairs[0].b.nrows(), pairs[0].a.ncols());
    if pairs
        .iter()
        .any(|p| p.b.nrows() != out || p.a.ncols() != inn)
    {
        return Err(Error::Shape(format!(
            "{base}: experts of different shapes cannot be stacked"
        )));
    }
    let stacked = plan.deltas[members[0]].key.expert.is_some();
    let slots = if stacked { plan.experts } else { 1 };
    // Each slot's A (K × in) and B (out × K), padded; missing experts zero.
    let mut a_pad = vec![Mat::<f64>::zeros(k, inn); slots];
    let mut b_pad = vec![Mat::<f64>::zeros(out, k); slots];
    let slot_of = |i: usize| plan.deltas[i].key.expert.unwrap_or(0);
    for (&i, p) in members.iter().zip(pairs) {
        let s = slot_of(i);
        a_pad[s] = Mat::from_fn(
            k,
            inn,
            |r, j| if r < p.a.nrows() { p.a[(r, j)] } else { 0.0 },
        );
        b_pad[s] = Mat::from_fn(
            out,
            k,
            |o, r| if r < p.b.ncols() { p.b[(o, r)] } else { 0.0 },
        );
    }
    let embd = base == TOKEN_EMBD;
    // The file's matrices: lora_a [in, K] is A, lora_b [K, out] is c·B; the token embedding's
    // lora_a [K, V] is c·B (V × K) and lora_b [K, H] is Aᵀ (llm_build_inp_embd).
    let (file_a, file_b): (Vec<Mat<f64>>, Vec<Mat<f64>>) = if embd {
        (
            b_pad.iter().map(|b| b * faer::Scale(c)).collect(),
            a_pad.iter().map(|a| a.transpose().to_owned()).collect(),
        )
    } else {
        (
            a_pad.clone(),
            b_pad.iter().map(|b| b * faer::Scale(c)).collect(),
        )
    };
    let (ta, back_a, fa) = encode(format!("{base}.lora_a"), &file_a, stacked, ty);
    let (tb, back_b, fb) = encode(format!("{base}.lora_b"), &file_b, stacked, ty);
    let bounds = members
        .iter()
        .map(|&i| {
            let s = slot_of(i);
            // As read back: Ã and B̃ (the reader's alpha / K undoes c).
            let (a_back, b_back) = if embd {
                (
                    back_b[s].transpose().to_owned(),
                    &back_a[s] * faer::Scale(1.0 / c),
                )
            } else {
                (back_a[s].clone(), &back_b[s] * faer::Scale(1.0 / c))
            };
            let (ea, eb) = (&a_back - &a_pad[s], &b_back - &b_pad[s]);
            (
                i,
                bound(
                    a_pad[s].as_ref(),
                    b_pad[s].as_ref(),
                    ea.as_ref(),
                    eb.as_ref(),
                ),
            )
        })
        .collect();
    Ok(Built {
        tensors: [ta, tb],
        bounds,
        fell_back: fa || fb,
    })
}

/// The written file's key/values, as `convert_lora_to_gguf.py` writes them (`add_type(adapter)`,
/// `adapter.type`, `adapter.lora.alpha` an f32, the architecture, the base model of the card).
fn metadata(a: &Adapter, arch: &str, alpha: usize, ty: GgmlType) -> Vec<(&'static str, Value)> {
    let mut kv = vec![
        ("general.architecture", Value::Str(arch.into())),
        ("general.type", Value::Str("adapter".into())),
        (
            "general.name",
            Value::Str(format!("lorascope export of {}", a.id)),
        ),
    ];
    if let Some(b) = a.base_model().filter(|b| !b.is_empty()) {
        kv.push(("general.base_model.count", Value::U32(1)));
        kv.push((
            "general.base_model.0.repo_url",
            Value::Str(format!("https://huggingface.co/{b}")),
        ));
    }
    kv.extend([
        ("general.file_type", Value::U32(file_type(ty))),
        ("general.quantization_version", Value::U32(2)),
        ("adapter.type", Value::Str("lora".into())),
        ("adapter.lora.alpha", Value::F32(alpha as f32)),
    ]);
    kv
}

/// Writes the file (header, then each tensor padded to the 32-byte alignment) and syncs it.
fn write_file(path: &Path, kv: &[(&str, Value)], tensors: &[WriteTensor]) -> Result<u64> {
    let io = |e| Error::io(path, e);
    let file = std::fs::File::create_new(path).map_err(io)?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, &file);
    let header = g::header_bytes(kv, tensors);
    w.write_all(&header).map_err(io)?;
    let mut len = header.len() as u64;
    for t in tensors {
        w.write_all(&t.data).map_err(io)?;
        len += t.data.len() as u64;
        let padded = len.div_ceil(g::DEFAULT_ALIGNMENT) * g::DEFAULT_ALIGNMENT;
        w.write_all(&vec![0u8; (padded - len) as usize])
            .map_err(io)?;
        len = padded;
    }
    w.flush().map_err(io)?;
    drop(w);
    file.sync_all().map_err(io)?;
    Ok(len)
}

/// llama.cpp's loader rules (`llama_adapter_lora_init_impl`) checked on the written file's
/// header: metadata, names, pairs, shapes against the base's (from the source's deltas). Any
/// finding is export's own error: nothing is kept.
pub fn loader_findings(path: &Path, plan: &Plan, a: &Adapter, arch: &str) -> Result<Vec<String>> {
    let h = g::read_header(path)?;
    let mut bad = Vec::new();
    let kv = |k: &str| h.metadata.get(k).map(String::as_str);
    if kv("general.type") != Some("adapter") {
        bad.push("general.type is not 'adapter'".to_string());
    }
    if kv("adapter.type") != Some("lora") {
        bad.push("adapter.type is not 'lora'".to_string());
    }
    if kv("general.architecture") != Some(arch) {
        bad.push(format!("general.architecture is not '{arch}'"));
    }
    if !kv("adapter.lora.alpha")
        .and_then(|v| v.parse::<f64>().ok())
        .is_some_and(|x| x > 0.0)
    {
        bad.push("adapter.lora.alpha is missing or not positive".to_string());
    }
    // (out, in) of each base tensor, from the deltas written to it.
    let mut dims: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for d in &plan.deltas {
        if let (Slot::Gguf { base, .. }, Src::One(i)) = (&d.slot, &d.src) {
            dims.insert(base, (a.deltas[*i].out_dim, a.deltas[*i].in_dim));
        }
    }
    let ne = |name: &str| -> Option<Vec<usize>> {
        h.tensors
            .iter()
            .find(|t| t.name == name)
            .map(|t| t.shape.iter().rev().copied().collect())
    };
    for t in &h.tensors {
        if !(t.name.ends_with(".lora_a") || t.name.ends_with(".lora_b")) {
            bad.push(format!("{}: not named .lora_a or .lora_b", t.name));
        }
    }
    for (base, (out, inn)) in dims {
        let (Some(a_ne), Some(b_ne)) =
            (ne(&format!("{base}.lora_a")), ne(&format!("{base}.lora_b")))
        else {
            bad.push(format!("{base}: the pair is missing a component"));
            continue;
        };
        let stacked = base.contains("_exps");
        let dims_ok = a_ne.len() == b_ne.len() && a_ne.len() == if stacked { 3 } else { 2 };
        let experts_ok = !stacked || (a_ne[2] == plan.experts && b_ne[2] == plan.experts);
        // token_embd: model ne [H, V]; lora_b ne[1] = H, lora_a ne[1] = V, ranks ne[0].
        let shape_ok = if base == TOKEN_EMBD {
            b_ne[1] == inn && a_ne[1] == out && a_ne[0] == b_ne[0]
        } else {
            a_ne[0] == inn && b_ne[1] == out && a_ne[1] == b_ne[0]
        };
        if !(dims_ok && experts_ok && shape_ok) {
            bad.push(format!(
                "{base}: lora_a {a_ne:?}, lora_b {b_ne:?} do not fit a base tensor of {out} × \
                 {inn}{}",
                if stacked {
                    format!(" with {} experts", plan.experts)
                } else {
                    String::new()
                }
            ));
        }
        let known = base
            .strip_prefix("blk.")
            .and_then(|r| r.split_once('.'))
            .map_or(base, |(_, r)| r);
        if !GPT_OSS_TENSORS
            .iter()
            .any(|t| known == format!("{t}.weight"))
        {
            bad.push(format!("{base}: not a tensor of llama.cpp's {arch}"));
        }
    }
    Ok(bad)
}

/// Exports `a` as the GGUF file `out` (`export::export` with `Format::Gguf`).
pub(super) fn export(
    a: &Adapter,
    out: &Path,
    opts: &Options,
    q8_0: bool,
    ctl: &Control,
) -> Result<Report> {
    check_out(out, a, opts)?;
    let arch = architecture(a).ok_or_else(|| {
        ExportError::Option(format!(
            "GGUF export writes llama.cpp's {GPT_OSS_ARCH} layout, and {} is not a gpt-oss \
             adapter (its base model: {})",
            a.id,
            a.base_model().unwrap_or_else(|| "not named".into())
        ))
    })?;
    if arch != GPT_OSS_ARCH {
        return Err(ExportError::Option(format!(
            "GGUF export writes llama.cpp's {GPT_OSS_ARCH} layout; this adapter is for {arch}"
        ))
        .into());
    }
    let ty = output_type(a, opts, q8_0)?;
    // gpt-oss's fused gate_up becomes llama.cpp's gate and up tensors (even and odd rows).
    let split = a.has_fused_gate_up();
    let a = if split {
        a.with_split_gate_up()
    } else {
        a.clone()
    };
    let a = &a;
    let plan = plan_gguf(a, opts.drop_unservable)?;
    // One map of the source serves both passes.
    let m = Mapped::open(a)?;
    let done = ctl.install(|| super::reduce(&m, &plan, opts, ctl))?;
    let alpha = done.iter().map(|d| d.rank).max().unwrap_or(0).max(1);
    let groups = groups(&plan);
    let built = ctl.install(|| {
        ctl.each(&groups, None, |(base, members)| {
            let items: Vec<_> = members
                .iter()
                .map(|&i| (&plan.deltas[i].src, &done[i].maps))
                .collect();
            let pairs = super::factors::written(&m, a, &items)?;
            build(&plan, &done, base, members, &pairs, alpha, ty)
        })
    })?;
    let mut tolerance = vec![0.0; plan.deltas.len()];
    let mut fell_back = false;
    let mut tensors = Vec::with_capacity(2 * built.len());
    for b in built {
        for (i, bound) in b.bounds {
            let s1 = done[i].sigma.first().copied().unwrap_or(0.0);
            // The re-read σ are computed in f64 from the file's factors: 1e-5·σ₁ of slack, as
            // for PEFT output.
            tolerance[i] = if s1 > 0.0 { bound / s1 } else { 0.0 }.max(1e-5);
        }
        fell_back |= b.fell_back;
        tensors.extend(b.tensors);
    }
    let kv = metadata(a, &arch, alpha, ty);
    let staged = super::write::Staging::new(out)?;
    let name = out.file_name().unwrap_or_default();
    let file: PathBuf = staged.dir().join(name);
    let bytes_after = write_file(&file, &kv, &tensors)?;
    drop(tensors);
    super::write::pause_for_tests();
    let verified = super::verify_with(&file, &plan, &done, |i| tolerance[i])?;
    let findings = loader_findings(&file, &plan, a, &arch)?;
    if !findings.is_empty() {
        return Err(ExportError::Unservable {
            engine: "llama.cpp",
            findings,
        }
        .into());
    }
    if ctl.cancelled() {
        return Err(Error::Cancelled);
    }
    if !opts.force && std::fs::symlink_metadata(out).is_ok() {
        return Err(ExportError::Out {
            out: out.to_path_buf(),
            why: "it appeared while the export ran".into(),
        }
        .into());
    }
    // Replaces an existing file atomically (--force); the staging folder is removed on drop.
    std::fs::rename(&file, out).map_err(|e| Error::io(out, e))?;
    drop(staged);
    let mut notes = plan.notes.clone();
    if split {
        notes.push(
            "gpt-oss's fused gate_up written as llama.cpp's ffn_gate_exps (even rows) and \
             ffn_up_exps (odd rows): each tensor has its own lora_a, a copy of the shared A when \
             ranks are kept"
                .into(),
        );
    }
    if fell_back {
        notes.push(
            "factors whose rows are not whole 32-value blocks (rank not a multiple of 32) written \
             as F16, as llama.cpp's converter does"
                .into(),
        );
    }
    let named = a
        .base_model()
        .is_some_and(|b| b.to_ascii_lowercase().contains("gpt-oss-"));
    if plan.experts > 0 && !named {
        notes.push(format!(
            "the base model's name does not say its expert count: expert tensors hold {} \
             experts (the highest adapted + 1); llama.cpp needs the base's count",
            plan.experts
        ));
    }
    let deltas: Vec<DeltaReport> = done.into_iter().map(|d| d.report).collect();
    Ok(Report {
        source: a.id.clone(),
        out: out.to_path_buf(),
        format: "gguf",
        engine: Engine::Llamacpp,
        dtype: ty.name(),
        r: alpha,
        max_lora_rank: None,
        deltas,
        dropped: plan.dropped,
        notes,
        bytes_before: a.bytes(),
        bytes_after,
        verified,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_tensors_are_gpt_oss_names_read_backwards() {
        assert_eq!(
            base_tensor("q_proj", Some(3), None).as_deref(),
            Some("blk.3.attn_q.weight")
        );
        assert_eq!(
            base_tensor("gate_proj", Some(0), Some(5)).as_deref(),
            Some("blk.0.ffn_gate_exps.weight")
        );
        assert_eq!(
            base_tensor("router", Some(1), None).as_deref(),
            Some("blk.1.ffn_gate_inp.weight")
        );
        assert_eq!(
            base_tensor("embed_tokens", None, None).as_deref(),
            Some("token_embd.weight")
        );
        assert_eq!(
            base_tensor("lm_head", None, None).as_deref(),
            Some("output.weight")
        );
        // gpt-oss has no dense FFN, no fused gate_up tensor and no expert-less gate_proj.
        assert_eq!(base_tensor("gate_proj", Some(0), None), None);
        assert_eq!(base_tensor("gate_up_proj", Some(0), Some(1)), None);
        assert_eq!(base_tensor("q_proj", Some(0), Some(1)), None);
        // Read back, each name gives the target it was written for.
        for (t, l, e) in [("o_proj", Some(2), None), ("down_proj", Some(2), Some(0))] {
            let n = gguf_layout::parse_name(&(base_tensor(t, l, e).unwrap() + ".lora_a"));
            assert_eq!((n.target.as_str(), n.layer), (t, l));
        }
    }

    fn rand(r: usize, c: usize, seed: u64) -> Mat<f64> {
        let mut rng = crate::synth::Rng::new(seed);
        Mat::from_fn(r, c, |_, _| rng.normal())
    }

    #[test]
    fn the_bound_holds_against_the_dense_difference() {
        let (a, b) = (rand(4, 64, 1), rand(32, 4, 2));
        let (ea, eb) = (
            rand(4, 64, 3) * faer::Scale(1e-3),
            rand(32, 4, 4) * faer::Scale(1e-2),
        );
        let exact = (&(&b + &eb) * &(&a + &ea) - &b * &a).norm_l2();
        let bnd = bound(a.as_ref(), b.as_ref(), ea.as_ref(), eb.as_ref());
        // ‖·‖₂ ≤ ‖·‖_F ≤ the bound, and the bound is not loose by orders of magnitude.
        assert!(exact <= bnd * (1.0 + 1e-12), "{exact} > {bnd}");
        assert!(bnd < 3.0 * exact, "{bnd} vs {exact}");
    }
}
