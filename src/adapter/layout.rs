//! The layout model: raw tensor names and shapes become logical deltas `(layer, target, expert)`
//! with rank, scale and the recipe for slicing their A and B factors out of the file, and every
//! tensor gets a role: part of a delta, a full tensor, a known extra, or not understood (with the
//! reason). docs/layouts.md describes each layout and the upstream code it was checked against.
//!
//! Detection is driven by two tables, [`FACTORS`] (how a writer names a factor) and
//! [`EXPERT_PATHS`] (how a writer names an expert module), and by shape rules in [`build`]:
//! 2D + 2D pairs are dense (or PEFT-packed under a ParamWrapper), 3D + 3D pairs are stacked
//! experts. Adding a layout = adding a table entry and its synth fixture.

use crate::adapter::config::{self, AdapterConfig};
use crate::adapter::format::TensorInfo;
use crate::adapter::incomplete::Broken;
pub use crate::adapter::incomplete::{Incomplete, PairProblem};
pub use crate::adapter::target::{DeltaKey, Target};
use serde::Serialize;
use std::collections::BTreeMap;

/// What a tensor is, from its name (and, for duplicates, from the layout step).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    LoraA,
    LoraB,
    /// kohya's per-module alpha scalar.
    Alpha,
    DoraMagnitude,
    LoraBias,
    TrainableTokens,
    /// A whole tensor: `modules_to_save` (e.g. the router) or merged weights.
    Full,
    /// Not understood: never part of a delta; the reason is in `NameInfo::unknown`.
    Unknown,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::LoraA => "lora_A",
            Role::LoraB => "lora_B",
            Role::Alpha => "alpha",
            Role::DoraMagnitude => "dora_magnitude",
            Role::LoraBias => "lora_bias",
            Role::TrainableTokens => "trainable_tokens",
            Role::Full => "full",
            Role::Unknown => "unknown",
        }
    }
}

/// Which writer's conventions an adapter follows (`format` in `scan`/`report`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Peft,
    Unsloth,
    Tinker,
    Mlx,
    Kohya,
    /// LyCORIS LoHa/LoKr: recognised by name, not computed.
    Lycoris,
    /// llama.cpp's GGUF LoRA (`convert_lora_to_gguf.py`): `adapter::gguf_layout`.
    Gguf,
    /// torchtune's own names (`lora_a.weight`, `LoRAGroupedExperts`): `adapter::torchtune`.
    Torchtune,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Peft => "peft",
            Format::Unsloth => "unsloth",
            Format::Tinker => "tinker",
            Format::Mlx => "mlx",
            Format::Kohya => "kohya",
            Format::Lycoris => "lycoris",
            Format::Gguf => "gguf",
            Format::Torchtune => "torchtune",
        }
    }
}

/// How an expert module's LoRA is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ExpertLayout {
    /// PEFT `target_parameters` (ParamWrapper): E rank-r LoRAs packed in one A/B pair.
    #[serde(rename = "per-expert")]
    PerExpert,
    /// 3D tensors with a leading expert dim of 1 (shared) or E (Tinker, MLX SwitchLinear).
    #[serde(rename = "shared-3d")]
    Shared3d,
    /// One ordinary 2D LoRA module per expert (Unsloth `gate_up_projs.{e}`, `experts.{e}.w1`).
    /// Per expert like PEFT's packed pairs (so `per-expert` in JSON); the pattern tells them apart.
    #[serde(rename = "per-expert")]
    ModuleList,
}

impl ExpertLayout {
    pub fn as_str(self) -> &'static str {
        match self {
            ExpertLayout::PerExpert => "per-expert",
            ExpertLayout::Shared3d => "shared-3d",
            ExpertLayout::ModuleList => "per-expert",
        }
    }
}

/// Column order of B in PEFT's packed per-expert layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LoraBLayout {
    /// PEFT: `B.reshape(out, r, E)`, expert e owns columns k·E + e.
    #[default]
    StrideE,
    /// Some trainers' files: `B.reshape(out, E, r)`, expert e owns columns e·r … e·r+r-1.
    ExpertMajor,
}

/// The parsed meaning of a tensor name.
#[derive(Debug, Clone, PartialEq)]
pub struct NameInfo {
    pub role: Role,
    /// Module path without `base_model.model.` and without the LoRA suffix.
    pub module: String,
    pub layer: Option<usize>,
    /// Canonical target (`q_proj`, `gate_up_proj`, `router`, …).
    pub target: Target,
    /// Expert index when the module is one expert (`experts.N.…`, `gate_up_projs.N`).
    pub expert: Option<usize>,
    /// PEFT ParamWrapper depth: number of trailing `base_layer` after `experts` (None otherwise).
    pub wrapper_depth: Option<usize>,
    /// The writer whose naming this is (None for full tensors).
    pub format: Option<Format>,
    /// The factor is stored transposed (MLX: A is (in, r), B is (r, out) when 2D).
    pub transposed: bool,
    /// Why the tensor is not understood (`role == Unknown`).
    pub unknown: Option<String>,
    /// The factor key carries an adapter name (`lora_A.<adapter>.weight`).
    pub adapter_segment: bool,
    /// ΔW = (s·B·A)ᵀ (PEFT embedding LoRA).
    pub swap: bool,
}

// ---------------------------------------------------------------------------------------------
// The tables.

/// How one writer names a LoRA factor: the name component, what it is, and how it is stored.
struct FactorName {
    token: &'static str,
    role: Role,
    format: Format,
    /// 2D factors stored transposed with respect to PEFT (A (in, r), B (r, out)).
    transposed: bool,
    /// ΔW = (s·B·A)ᵀ: PEFT's embedding LoRA, A (r, V), B (H, r), ΔW (V, H).
    swap: bool,
}

/// Factor names of every writer lorascope reads. The component must be followed by nothing,
/// `weight`, `<adapter name>.weight` or (B only) `bias`; anything else is not understood.
const FACTORS: &[FactorName] = &[
    // PEFT: huggingface/peft src/peft/tuners/lora/layer.py (Linear, ParamWrapper, Embedding, DoRA):
    // lora_A (r, in), lora_B (out, r), ΔW = s·B·A; embedding A (r, V), B (H, r), ΔW = (s·B·A)ᵀ.
    factor("lora_A", Role::LoraA, Format::Peft, false, false),
    factor("lora_B", Role::LoraB, Format::Peft, false, false),
    factor("lora_embedding_A", Role::LoraA, Format::Peft, false, true),
    factor("lora_embedding_B", Role::LoraB, Format::Peft, false, true),
    factor(
        "lora_magnitude_vector",
        Role::DoraMagnitude,
        Format::Peft,
        false,
        false,
    ),
    // kohya sd-scripts networks/lora.py: lora_down (r, in), lora_up (out, r), `.alpha` scalar.
    factor("lora_down", Role::LoraA, Format::Kohya, false, false),
    factor("lora_up", Role::LoraB, Format::Kohya, false, false),
    // ml-explore/mlx-lm mlx_lm/tuner/lora.py LoRALinear: lora_a (in, r), lora_b (r, out), no
    // `.weight`, ΔW = scale·lora_bᵀ·lora_aᵀ; LoRASwitchLinear: lora_a (E, r, in), lora_b (E, out, r).
    factor("lora_a", Role::LoraA, Format::Mlx, true, false),
    factor("lora_b", Role::LoraB, Format::Mlx, true, false),
];

const fn factor(
    token: &'static str,
    role: Role,
    format: Format,
    transposed: bool,
    swap: bool,
) -> FactorName {
    FactorName {
        token,
        role,
        format,
        transposed,
        swap,
    }
}

/// Name prefixes of adapter types lorascope recognises but does not compute
/// (KohakuBlueleaf/LyCORIS lycoris/modules/loha.py, lokr.py).
const UNSUPPORTED: &[(&str, &str)] = &[("hada_", "LoHa"), ("lokr_", "LoKr")];

/// How the module path after an `experts` segment names an expert parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ExpertPath {
    /// `experts[.base_layer]*`: PEFT ParamWrapper over the 3D parameters (huggingface/peft
    /// src/peft/tuners/lora/layer.py ParamWrapper; the innermost wrapper is the first of
    /// `target_parameters`).
    Wrapper,
    /// `experts.{e}.{gate_proj|up_proj|down_proj|w1|w2|w3}`: one module per expert (transformers
    /// v4 Mixtral/Qwen-MoE/DeepSeek, vLLM's 2D expert format, Tinker's PEFT export).
    Indexed,
    /// `experts.{gate_up_projs|down_projs}.{e}`: Unsloth's per-expert ModuleList of the gpt-oss
    /// bnb-4bit model (unslothai/unsloth issues 3405, 4193; unsloth-zoo GptOssExpertsBnb4bit).
    ModuleList,
    /// `experts.{w1|w2|w3|gate_proj|…}` without an index: 3D stacked experts (Tinker, MLX
    /// SwitchLinear); told apart from a dense module by ndim = 3 in `build`.
    Stacked,
}

/// A rule: the expert path it recognises and its test on the components after `experts`.
type PathRule = (ExpertPath, fn(&[&str]) -> bool);

/// The rules, tried in order, on the components after `experts`.
const EXPERT_PATHS: &[PathRule] = &[
    (ExpertPath::Wrapper, |r| {
        r.iter().all(|c| *c == "base_layer")
    }),
    (ExpertPath::Indexed, |r| r.len() == 2 && is_index(r[0])),
    (ExpertPath::ModuleList, |r| {
        r.len() == 2 && is_index(r[1]) && r[0].ends_with("_projs")
    }),
    (ExpertPath::Stacked, |r| r.len() == 1 && !is_index(r[0])),
];

fn is_index(c: &str) -> bool {
    !c.is_empty() && c.bytes().all(|b| b.is_ascii_digit())
}

/// A name component that says "LoRA-like": such a tensor is never read as a full weight.
/// Case-insensitive without allocating (the scan path reads every name of every adapter).
fn looks_like_lora(c: &str) -> bool {
    let starts =
        |p: &str| c.len() >= p.len() && c.as_bytes()[..p.len()].eq_ignore_ascii_case(p.as_bytes());
    starts("lora")
        || starts("dora")
        || starts("hada_")
        || starts("lokr_")
        || c.as_bytes()
            .windows(5)
            .any(|w| w.eq_ignore_ascii_case(b"_lora"))
}

// ---------------------------------------------------------------------------------------------

const LAYER_WORDS: [&str; 5] = ["layers", "layer", "h", "blocks", "block"];

/// The layer index a module path names (`….layers.7.…`).
pub(crate) fn layer_of(module: &[&str]) -> Option<usize> {
    module.windows(2).find_map(|w| {
        if LAYER_WORDS.contains(&w[0]) {
            w[1].parse::<usize>().ok()
        } else {
            None
        }
    })
}

fn canonical(comp: &str) -> &str {
    match comp {
        "w1" => "gate_proj",
        "w2" => "down_proj",
        "w3" => "up_proj",
        other => other,
    }
}

/// What the components after a factor token may be: nothing (MLX), `weight`, an adapter name
/// then `weight` (state dicts saved without PEFT's key cleaning), or `bias` (LoRA bias on B).
fn factor_tail(role: Role, tail: &[&str]) -> Result<Role, String> {
    match tail {
        [] | ["weight"] => Ok(role),
        [name, "weight"] if *name != "weight" => Ok(role),
        ["bias"] if role == Role::LoraB => Ok(Role::LoraBias),
        _ => Err(format!(
            "unexpected `.{}` after the LoRA factor name",
            tail.join(".")
        )),
    }
}

/// Role, module components, format and transposition from the name, before expert rules.
/// What `classify` reads from a name before the expert rules.
struct Classified<'a> {
    role: Role,
    module: Vec<&'a str>,
    format: Option<Format>,
    transposed: bool,
    swap: bool,
    unknown: Option<String>,
}

impl<'a> Classified<'a> {
    fn new(role: Role, module: &[&'a str], format: Option<Format>) -> Self {
        Classified {
            role,
            module: module.to_vec(),
            format,
            transposed: false,
            swap: false,
            unknown: None,
        }
    }
    fn unknown(module: &[&'a str], format: Option<Format>, why: String) -> Self {
        Classified {
            unknown: Some(why),
            ..Classified::new(Role::Unknown, module, format)
        }
    }
}

fn classify<'a>(comps: &[&'a str]) -> Classified<'a> {
    let last = *comps.last().unwrap_or(&"");
    let head = &comps[..comps.len().saturating_sub(1)];
    for (i, c) in comps.iter().enumerate() {
        if let Some(f) = FACTORS.iter().find(|f| f.token == *c) {
            return match factor_tail(f.role, &comps[i + 1..]) {
                Ok(role) => Classified {
                    transposed: f.transposed,
                    swap: f.swap,
                    ..Classified::new(role, &comps[..i], Some(f.format))
                },
                Err(why) => Classified::unknown(&comps[..i], Some(f.format), why),
            };
        }
    }
    for (i, c) in comps.iter().enumerate() {
        if let Some((_, kind)) = UNSUPPORTED.iter().find(|(p, _)| c.starts_with(p)) {
            let why = format!("{kind} (LyCORIS) tensor: an unsupported adapter type");
            return Classified::unknown(&comps[..i], Some(Format::Lycoris), why);
        }
    }
    if let Some(i) = comps.iter().position(|c| *c == "trainable_tokens_delta") {
        return Classified::new(Role::TrainableTokens, &comps[..i], None);
    }
    if last == "alpha" && comps.len() > 1 {
        return Classified::new(Role::Alpha, head, None);
    }
    // mlx-lm's DoRALinear magnitude `m` (mlx_lm/tuner/dora.py): `<module>.m`, no `.weight`.
    if last == "m" && comps.len() > 1 {
        return Classified::new(Role::DoraMagnitude, head, Some(Format::Mlx));
    }
    if let Some(c) = comps.iter().find(|c| looks_like_lora(c)) {
        let why = format!("a LoRA-like name (`{c}`) of no layout lorascope knows");
        return Classified::unknown(head, None, why);
    }
    // Full tensor. PEFT may keep `modules_to_save.<adapter>` or `original_module` in the key.
    let mut m: Vec<&str> = Vec::new();
    let mut skip_next = false;
    for c in head {
        if skip_next {
            skip_next = false;
            continue;
        }
        match *c {
            "modules_to_save" => skip_next = true,
            "original_module" => {}
            _ => m.push(c),
        }
    }
    if !matches!(last, "weight" | "bias") {
        // e.g. `mlp.experts.gate_up_proj` or `…gate_up_proj_bias`: the parameter is the target.
        m.push(last);
    }
    Classified::new(Role::Full, &m, None)
}

/// Parses a tensor name into role, module, layer, target and expert.
pub fn parse_name(name: &str) -> NameInfo {
    let stripped = name
        .strip_prefix("base_model.model.")
        .or_else(|| name.strip_prefix("base_model."))
        .unwrap_or(name);
    let comps: Vec<&str> = stripped.split('.').collect();
    if let Some(n) = crate::adapter::torchtune::parse_name(&comps) {
        return n;
    }
    let Classified {
        mut role,
        module: module_comps,
        mut format,
        transposed,
        swap,
        mut unknown,
    } = classify(&comps);
    let layer = layer_of(&module_comps);
    let mut expert = None;
    let mut wrapper_depth = None;
    let plain_target = || {
        module_comps
            .last()
            .map(|c| canonical(c).to_string())
            .unwrap_or_default()
    };
    let factor = matches!(
        role,
        Role::LoraA | Role::LoraB | Role::LoraBias | Role::DoraMagnitude | Role::Alpha
    );
    let target = match module_comps.iter().rposition(|c| *c == "experts") {
        Some(i) if factor => {
            let rest = &module_comps[i + 1..];
            match EXPERT_PATHS
                .iter()
                .find(|(_, rule)| rule(rest))
                .map(|x| x.0)
            {
                Some(ExpertPath::Wrapper) => {
                    wrapper_depth = Some(rest.len());
                    // Provisional; the config's target_parameters order decides (`resolve_wrapper`).
                    if rest.is_empty() {
                        "down_proj"
                    } else {
                        "gate_up_proj"
                    }
                    .to_string()
                }
                Some(ExpertPath::Indexed) => {
                    expert = rest[0].parse().ok();
                    canonical(rest[1]).to_string()
                }
                Some(ExpertPath::ModuleList) => {
                    expert = rest[1].parse().ok();
                    if format == Some(Format::Peft) {
                        format = Some(Format::Unsloth);
                    }
                    canonical(rest[0].trim_end_matches('s')).to_string()
                }
                Some(ExpertPath::Stacked) => {
                    if format == Some(Format::Peft) && matches!(rest[0], "w1" | "w2" | "w3") {
                        format = Some(Format::Tinker);
                    }
                    canonical(rest[0]).to_string()
                }
                None => {
                    role = Role::Unknown;
                    unknown = Some(format!(
                        "expert module path `experts.{}` of no layout lorascope knows",
                        rest.join(".")
                    ));
                    plain_target()
                }
            }
        }
        _ => plain_target(),
    };
    // mlx-lm's LoRAEmbedding (mlx_lm/tuner/lora.py): lora_a (V, r), lora_b (r, H),
    // ΔW (V, H) = scale·lora_a·lora_b, the transpose of LoRALinear's formula.
    let swap = swap || (format == Some(Format::Mlx) && factor && target == "embed_tokens");
    let adapter_segment = matches!(role, Role::LoraA | Role::LoraB)
        && comps.len() >= module_comps.len() + 3
        && comps.last() == Some(&"weight");
    NameInfo {
        adapter_segment,
        swap,
        role,
        module: module_comps.join("."),
        layer,
        target: Target::parse(&target),
        expert,
        wrapper_depth,
        format,
        transposed,
        unknown,
    }
}

/// The order transformers registers the expert parameters in (`GptOssExperts.__init__`, the
/// fused Qwen3-MoE experts): PEFT wraps a module's parameters in registration order
/// (`BaseTuner._inject_parameters` walks `named_parameters`), whatever the config's order.
const REGISTRATION_ORDER: [&str; 2] = ["gate_up_proj", "down_proj"];

/// The 3D parameters PEFT wrapped on `module` (e.g. `model.layers.7.mlp.experts`), innermost
/// first: in registration order when every one is a known expert parameter, else in the order
/// of `target_parameters`.
fn wrapped_params(cfg: Option<&AdapterConfig>, module: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    if let Some(c) = cfg {
        let wrapped = &c.wrapped_parameters;
        for (i, (prefix, param)) in wrapped.entries().iter().enumerate() {
            let applies = prefix.is_empty()
                || module == prefix
                || module.ends_with(&format!(".{prefix}"))
                || wrapped.matches(i, module);
            if applies && !out.iter().any(|p| p == param) {
                out.push(param.to_string());
            }
        }
    }
    let registered = |p: &String| REGISTRATION_ORDER.iter().position(|r| r == p);
    if out.iter().all(|p| registered(p).is_some()) {
        out.sort_by_key(registered);
    }
    if out.is_empty() {
        out = REGISTRATION_ORDER.map(String::from).to_vec();
    }
    out
}

/// Which parameter a ParamWrapper at `depth` (0 = outermost) wraps.
fn resolve_wrapper(cfg: Option<&AdapterConfig>, module: &str, depth: usize) -> Option<Target> {
    let params = wrapped_params(cfg, module);
    params
        .len()
        .checked_sub(1 + depth)
        .map(|i| Target::parse(canonical(&params[i])))
}

/// Picks a factor's matrix out of its tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Pick {
    /// The whole 2D tensor.
    All,
    /// The whole 2D tensor, transposed (MLX stores A as (in, r) and B as (r, out)).
    Transposed,
    /// Rows `start .. start+len` of a 2D tensor (PEFT expert A).
    Rows { start: usize, len: usize },
    /// Columns `start, start+step, …` (`len` of them) of a 2D tensor (PEFT expert B).
    Cols {
        start: usize,
        step: usize,
        len: usize,
    },
    /// The 2D slice at this leading index of a 3D tensor (index 0 when broadcast).
    Index { index: usize },
    /// That slice, transposed (torchtune's grouped experts: A (E, in, r), B (E, r, out)).
    IndexTransposed { index: usize },
}

/// A factor: which tensor (index into the adapter's tensor list) and which part of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Factor {
    pub tensor: usize,
    pub pick: Pick,
    /// Rows `start, start+step, …` (`len` of them) of the picked matrix: the gate or up half of
    /// a fused gate_up B (`--split-gate-up`). None: all rows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rows: Option<RowSel>,
}

/// A strided selection of rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RowSel {
    pub start: usize,
    pub step: usize,
    pub len: usize,
}

/// How a fused gate_up_proj stacks its gate and up rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GateUpOrder {
    /// gpt-oss: `[g0, u0, g1, u1, …]` (transformers GptOssExperts: `gate_up[..., ::2]`,
    /// `gate_up[..., 1::2]`).
    Interleaved,
    /// Other models: the gate half, then the up half.
    Concatenated,
}

impl GateUpOrder {
    /// The order of the adapter's base model, as its config names it (`for_base`).
    pub fn for_config(cfg: Option<&AdapterConfig>) -> GateUpOrder {
        GateUpOrder::for_base(cfg.and_then(|c| c.base_model.as_deref()))
    }

    /// gpt-oss interleaves; every other fused gate_up concatenates.
    pub fn for_base(base_model: Option<&str>) -> GateUpOrder {
        match base_model.map(|b| b.to_ascii_lowercase()) {
            Some(b) if b.contains("gpt-oss") || b.contains("gpt_oss") => GateUpOrder::Interleaved,
            None => GateUpOrder::Interleaved, // gpt-oss first: the survey's adapters name it
            _ => GateUpOrder::Concatenated,
        }
    }

    /// The rows of the gate (`half` 0) or up (`half` 1) part of `out` fused rows.
    pub fn rows(self, half: usize, out: usize) -> RowSel {
        match self {
            GateUpOrder::Interleaved => RowSel {
                start: half,
                step: 2,
                len: out / 2,
            },
            GateUpOrder::Concatenated => RowSel {
                start: half * (out / 2),
                step: 1,
                len: out / 2,
            },
        }
    }
}

/// `--split-gate-up`: each fused gate_up delta becomes a `gate_proj` and an `up_proj` delta with
/// the same A and the gate or up rows of B (exact, still factored).
pub fn split_gate_up(deltas: Vec<Delta>, order: GateUpOrder) -> Vec<Delta> {
    let mut out = Vec::with_capacity(deltas.len());
    for d in deltas {
        if !splits_gate_up(&d) {
            out.push(d);
            continue;
        }
        for (half, target) in [Target::Gate, Target::Up].into_iter().enumerate() {
            let mut h = d.clone();
            h.target = target;
            h.out_dim = d.out_dim / 2;
            h.b.rows = Some(order.rows(half, d.out_dim));
            out.push(h);
        }
    }
    sort_deltas(&mut out);
    out
}

/// Whether `split_gate_up` splits this delta: a fused gate_up with an even number of rows, not
/// already a row selection.
pub fn splits_gate_up(d: &Delta) -> bool {
    d.target == Target::GateUp && d.out_dim % 2 == 0 && d.b.rows.is_none()
}

/// The order of an adapter's deltas.
fn key(d: &Delta) -> (Option<usize>, &Target, Option<usize>, &str) {
    (d.layer, &d.target, d.expert, &d.module)
}

fn sort_deltas(deltas: &mut Vec<Delta>) {
    // A delta is a few hundred bytes and an adapter has thousands: sort indices, move each once.
    // `build` makes them in order (but for ParamWrapper targets and split gate/up).
    if deltas.is_sorted_by(|x, y| key(x) <= key(y)) {
        return;
    }
    let mut idx: Vec<usize> = (0..deltas.len()).collect();
    idx.sort_by(|&i, &j| key(&deltas[i]).cmp(&key(&deltas[j])));
    let mut slots: Vec<Option<Delta>> = std::mem::take(deltas).into_iter().map(Some).collect();
    *deltas = idx.iter().filter_map(|&i| slots[i].take()).collect();
}

/// One logical LoRA delta ΔW = s·B·A (out × in).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Delta {
    pub layer: Option<usize>,
    pub target: Target,
    pub expert: Option<usize>,
    pub module: String,
    pub rank: usize,
    pub scale: f64,
    pub out_dim: usize,
    pub in_dim: usize,
    /// A: rank × in.
    pub a: Factor,
    /// B: out × rank.
    pub b: Factor,
    #[serde(skip)]
    pub expert_layout: Option<ExpertLayout>,
}

impl Delta {
    pub fn key(&self) -> DeltaKey {
        DeltaKey {
            layer: self.layer,
            target: self.target.clone(),
            expert: self.expert,
        }
    }
}

/// A full (non-delta) tensor of a LoRA adapter, e.g. a router from `modules_to_save`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FullTensor {
    pub tensor: usize,
    pub name: String,
    pub layer: Option<usize>,
    pub target: Target,
    pub shape: Vec<usize>,
}

/// A tensor of the adapter with the file it lives in and its parsed name.
#[derive(Debug, Clone)]
pub struct TensorEntry {
    pub file: usize,
    pub info: TensorInfo,
    pub name: NameInfo,
}

/// A tensor the layout step could not place, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Unknown {
    pub tensor: usize,
    pub reason: String,
}

/// What the layout step produced.
#[derive(Debug, Default)]
pub struct Layout {
    pub deltas: Vec<Delta>,
    pub full: Vec<FullTensor>,
    /// Tensors not understood (by name or by the pairing step), never part of a delta.
    pub unknown: Vec<Unknown>,
    /// Modules whose factors make no delta; their factors are in `unknown`.
    pub incomplete: Vec<Incomplete>,
    /// Things a person should know (guesses made, extras ignored).
    pub notes: Vec<String>,
}

/// Options that change how factors are read.
#[derive(Debug, Clone, Copy, Default)]
pub struct LayoutOptions {
    pub lora_b_layout: LoraBLayout,
    /// Read fused gate_up deltas as separate gate and up deltas (`split_gate_up`).
    pub split_gate_up: bool,
}

/// What every layout family needs to know besides its pair.
struct Ctx<'a> {
    cfg: Option<&'a AdapterConfig>,
    kohya_alpha: &'a BTreeMap<String, f64>,
    opts: LayoutOptions,
    /// E from a saved router, used only when the config cannot say.
    router_experts: Option<usize>,
}

impl Ctx<'_> {
    /// s for a module of rank r: kohya's alpha scalar, else the config's rule, else 1.
    fn scale(&self, module: &str, cfg_key: &str, r: usize) -> f64 {
        match (self.cfg, self.kohya_alpha.get(module)) {
            (_, Some(alpha)) => config::scale(*alpha, r, false),
            (Some(c), None) => c.scale_for(cfg_key, r),
            (None, None) => 1.0,
        }
    }
}

/// One A/B pair of a module, as the families see it.
struct Pair<'a> {
    module: &'a str,
    name: NameInfo,
    a: usize,
    b: usize,
    sa: &'a [usize],
    sb: &'a [usize],
    /// Each factor stored transposed (MLX, 2D only).
    ta: bool,
    tb: bool,
}

impl Pair<'_> {
    #[allow(clippy::too_many_arguments)]
    fn delta(
        &self,
        rank: usize,
        scale: f64,
        (out_dim, in_dim): (usize, usize),
        a: Pick,
        b: Pick,
        expert: Option<usize>,
        layout: Option<ExpertLayout>,
    ) -> Delta {
        Delta {
            layer: self.name.layer,
            target: self.name.target.clone(),
            expert,
            module: self.module.to_string(),
            rank,
            scale,
            out_dim,
            in_dim,
            a: Factor {
                tensor: self.a,
                pick: a,
                rows: None,
            },
            b: Factor {
                tensor: self.b,
                pick: b,
                rows: None,
            },
            expert_layout: layout,
        }
    }

    /// (r, in) of A and (out, r) of B in PEFT's orientation, with the picks of the whole tensors.
    fn dense_dims(&self) -> ((usize, usize), (usize, usize), Pick, Pick) {
        let orient = |s: &[usize], t: bool| {
            if t {
                ((s[1], s[0]), Pick::Transposed)
            } else {
                ((s[0], s[1]), Pick::All)
            }
        };
        let (da, pa) = orient(self.sa, self.ta);
        let (db, pb) = orient(self.sb, self.tb);
        (da, db, pa, pb)
    }
}

/// Dense 2D pair: attention/router LoRA, one expert of a module list, MLX LoRALinear.
fn dense_pair(ctx: &Ctx, p: &Pair) -> Result<Vec<Delta>, Broken> {
    let ((ra, in_dim), (out_dim, rb), pa, pb) = p.dense_dims();
    if ra != rb {
        let (a_dim, b_dim) = if p.ta {
            ("columns", "rows")
        } else {
            ("rows", "columns")
        };
        return Err(Broken::new(
            PairProblem::Rank,
            format!("lora_A has {ra} {a_dim} but lora_B has {rb} {b_dim}"),
        ));
    }
    let layout = p.name.expert.map(|_| ExpertLayout::ModuleList);
    let s = ctx.scale(p.module, p.module, ra);
    let mut d = p.delta(ra, s, (out_dim, in_dim), pa, pb, p.name.expert, layout);
    if p.name.swap {
        // ΔW = (B·A)ᵀ = Aᵀ·Bᵀ: Bᵀ is the new A, Aᵀ the new B (whole 2D tensors only).
        let t = |f: Factor| Factor {
            rows: None,
            tensor: f.tensor,
            pick: if f.pick == Pick::Transposed {
                Pick::All
            } else {
                Pick::Transposed
            },
        };
        (d.a, d.b) = (t(d.b), t(d.a));
        (d.out_dim, d.in_dim) = (in_dim, out_dim);
    }
    Ok(vec![d])
}

/// PEFT ParamWrapper: E rank-r LoRAs packed in one 2D pair (A (r·E, in), B (out, r·E)).
fn packed_experts(ctx: &Ctx, p: &Pair, notes: &mut Vec<String>) -> Result<Vec<Delta>, Broken> {
    let (ra, in_dim, out_dim, rb) = (p.sa[0], p.sa[1], p.sb[0], p.sb[1]);
    if ra != rb {
        let detail = format!("lora_A has {ra} rows but lora_B has {rb} columns");
        return Err(Broken::new(PairProblem::Rank, detail));
    }
    // PEFT matches patterns on the wrapped module, without `.base_layer`.
    let owner = p.module.trim_end_matches(".base_layer");
    let param_key = format!("{owner}.{}", p.name.target);
    let (r, guess) = expert_rank(ctx.cfg, &param_key, owner, ra, ctx.router_experts);
    if let Some(g) = guess {
        notes.push(format!("{}: {g}", p.module));
    }
    if r == 0 || ra % r != 0 {
        let detail = format!("lora_A has {ra} rows, not a multiple of the per-expert rank {r}");
        return Err(Broken::new(PairProblem::Rank, detail));
    }
    let e_count = experts_within_limit(ra / r)?;
    let s = ctx.scale(p.module, &param_key, r);
    Ok((0..e_count)
        .map(|e| {
            let b = match ctx.opts.lora_b_layout {
                LoraBLayout::StrideE => Pick::Cols {
                    start: e,
                    step: e_count,
                    len: r,
                },
                LoraBLayout::ExpertMajor => Pick::Cols {
                    start: e * r,
                    step: 1,
                    len: r,
                },
            };
            let a = Pick::Rows {
                start: e * r,
                len: r,
            };
            p.delta(
                r,
                s,
                (out_dim, in_dim),
                a,
                b,
                Some(e),
                Some(ExpertLayout::PerExpert),
            )
        })
        .collect())
}

/// 3D stacked experts A (E|1, r, in), B (E|1, out, r): Tinker, MLX LoRASwitchLinear, fused
/// Qwen3-MoE trainers (with or without an `experts` segment); torchtune's grouped experts store
/// each slice transposed, A (E, in, r), B (E, r, out) (MLX's `transposed` is about 2D factors).
fn stacked_experts(ctx: &Ctx, p: &Pair) -> Result<Vec<Delta>, Broken> {
    let t = p.name.format == Some(Format::Torchtune) && p.ta && p.tb;
    let (ea, ra, in_dim) = if t {
        (p.sa[0], p.sa[2], p.sa[1])
    } else {
        (p.sa[0], p.sa[1], p.sa[2])
    };
    let (eb, out_dim, rb) = if t {
        (p.sb[0], p.sb[2], p.sb[1])
    } else {
        (p.sb[0], p.sb[1], p.sb[2])
    };
    if ra != rb {
        let detail = format!("lora_A has rank {ra} but lora_B has rank {rb}");
        return Err(Broken::new(PairProblem::Rank, detail));
    }
    let e_count = ea.max(eb);
    if (ea != 1 && ea != e_count) || (eb != 1 && eb != e_count) || e_count == 0 {
        let detail = format!("expert dims {ea} (lora_A) and {eb} (lora_B) do not broadcast");
        return Err(Broken::new(PairProblem::Shape, detail));
    }
    let e_count = experts_within_limit(e_count)?;
    let s = ctx.scale(p.module, p.module, ra);
    let shared = e_count == 1;
    Ok((0..e_count)
        .map(|e| {
            let pick = |n: usize| {
                let index = if n == 1 { 0 } else { e };
                if t {
                    Pick::IndexTransposed { index }
                } else {
                    Pick::Index { index }
                }
            };
            let expert = (!shared).then_some(e);
            p.delta(
                ra,
                s,
                (out_dim, in_dim),
                pick(ea),
                pick(eb),
                expert,
                Some(ExpertLayout::Shared3d),
            )
        })
        .collect())
}

/// Builds deltas from the tensors. Never fails: tensors that cannot be placed (a second lora_A for
/// one module) are `unknown`, and so are the factors of a module whose pair is incomplete or whose
/// shapes contradict the layout (`Layout::incomplete`); every other module is read.
pub fn build(
    tensors: &[TensorEntry],
    cfg: Option<&AdapterConfig>,
    kohya_alpha: &BTreeMap<String, f64>,
    opts: LayoutOptions,
) -> Layout {
    let mut out = Layout::default();
    // Pair A and B per module (and per expert for module lists).
    let mut pairs: BTreeMap<&str, (Option<usize>, Option<usize>)> = BTreeMap::new();
    // Plain keys first: of `q_proj.lora_A.weight` and `q_proj.lora_A.<adapter>.weight` the
    // plain key is the factor, the other the duplicate.
    let mut order: Vec<usize> = (0..tensors.len()).collect();
    order.sort_by_key(|&i| (tensors[i].name.adapter_segment, i));
    for i in order {
        let t = &tensors[i];
        let slot = match t.name.role {
            Role::LoraA | Role::LoraB => {
                let e = pairs.entry(t.name.module.as_str()).or_default();
                if t.name.role == Role::LoraA {
                    &mut e.0
                } else {
                    &mut e.1
                }
            }
            Role::Full => {
                out.full.push(FullTensor {
                    tensor: i,
                    name: t.info.name.clone(),
                    layer: t.name.layer,
                    target: t.name.target.clone(),
                    shape: t.info.shape.clone(),
                });
                continue;
            }
            Role::Unknown => {
                let reason = t
                    .name
                    .unknown
                    .clone()
                    .unwrap_or_else(|| "not understood".into());
                out.unknown.push(Unknown { tensor: i, reason });
                continue;
            }
            _ => continue,
        };
        match slot {
            None => *slot = Some(i),
            Some(first) => out.unknown.push(Unknown {
                tensor: i,
                reason: format!(
                    "a second {} for module {} (the first is {})",
                    t.name.role.as_str(),
                    t.name.module,
                    tensors[*first].info.name
                ),
            }),
        }
    }
    let ctx = Ctx {
        cfg,
        kohya_alpha,
        opts,
        router_experts: out
            .full
            .iter()
            .find(|f| f.target == Target::Router && f.shape.len() == 2)
            .map(|f| f.shape[0]),
    };
    // Each module's deltas, put in the deltas' order below so that `sort_deltas` finds them
    // sorted (an adapter has thousands: moving them in a sort is most of the scan's time).
    let mut chunks: Vec<Vec<Delta>> = Vec::with_capacity(pairs.len());
    for (module, &(ia, ib)) in &pairs {
        let Some(first) = ia.or(ib) else { continue };
        // The location of the module, resolved by `module_deltas` (a ParamWrapper's target).
        let mut name = tensors[first].name.clone();
        match module_deltas(&ctx, module, (ia, ib), tensors, &mut name, &mut out.notes) {
            Ok(deltas) => chunks.push(deltas),
            Err(Broken { problem, detail }) => {
                let inc = Incomplete {
                    module: module.to_string(),
                    layer: name.layer,
                    target: name.target,
                    expert: name.expert,
                    problem,
                    detail,
                    tensors: [ia, ib].into_iter().flatten().collect(),
                };
                let reason = format!("incomplete LoRA pair: {}", inc.why());
                for &tensor in &inc.tensors {
                    let reason = reason.clone();
                    out.unknown.push(Unknown { tensor, reason });
                }
                out.incomplete.push(inc);
            }
        }
    }
    chunks.retain(|c| !c.is_empty());
    chunks.sort_by(|x, y| key(&x[0]).cmp(&key(&y[0])));
    out.deltas = Vec::with_capacity(chunks.iter().map(Vec::len).sum());
    for c in chunks {
        out.deltas.extend(c);
    }
    out.notes.extend(wrapper_disagreements(&out.deltas));
    if opts.split_gate_up {
        out.deltas = split_gate_up(
            std::mem::take(&mut out.deltas),
            GateUpOrder::for_config(cfg),
        );
    }
    sort_deltas(&mut out.deltas);
    out.unknown.sort_by_key(|u| u.tensor);
    out.full.sort_by_key(|f| f.tensor);
    out
}

/// The deltas of one module's factors `(lora_A, lora_B)`, or why they make none. `name` (the
/// first factor's) gets the target a ParamWrapper wraps.
fn module_deltas(
    ctx: &Ctx,
    module: &str,
    pair: (Option<usize>, Option<usize>),
    tensors: &[TensorEntry],
    name: &mut NameInfo,
    notes: &mut Vec<String>,
) -> Result<Vec<Delta>, Broken> {
    let (ia, ib) = match pair {
        (Some(a), Some(b)) => (a, b),
        (Some(_), None) => return Err(Broken::new(PairProblem::MissingB, String::new())),
        _ => return Err(Broken::new(PairProblem::MissingA, String::new())),
    };
    if let Some(d) = name.wrapper_depth {
        let owner = module.trim_end_matches(".base_layer");
        name.target = resolve_wrapper(ctx.cfg, owner, d).ok_or_else(|| {
            let detail = format!("nested {d} deep but target_parameters names fewer parameters");
            Broken::new(PairProblem::Unplaced, detail)
        })?;
    }
    let (ta, tb) = (&tensors[ia], &tensors[ib]);
    // GGUF quantisations other than Q8_0 are listed, never read as numbers they are not.
    if let Some(q) = [ta, tb]
        .iter()
        .filter_map(|t| t.info.quant)
        .find(|q| !q.readable())
    {
        let detail = format!(
            "{} factors: lorascope reads F32, F16, BF16 and Q8_0",
            q.name()
        );
        return Err(Broken::new(PairProblem::Quantisation, detail));
    }
    let p = Pair {
        module,
        name: name.clone(),
        a: ia,
        b: ib,
        sa: &ta.info.shape,
        sb: &tb.info.shape,
        ta: ta.name.transposed,
        tb: tb.name.transposed,
    };
    // A delta needs factor data. A zero dimension would let a header of a few hundred bytes
    // declare any number of experts (2^40 deltas from one 300-byte file): with both factors
    // non-empty, every delta owns at least one element of A or B, so the number of deltas
    // is bounded by the size of the data.
    if p.sa.contains(&0) || p.sb.contains(&0) {
        let detail = format!(
            "lora_A {:?} and lora_B {:?} must not have a zero dimension (no factor data)",
            p.sa, p.sb
        );
        return Err(Broken::new(PairProblem::Shape, detail));
    }
    // The shape rules: 2D + 2D is dense (packed under a ParamWrapper), 3D + 3D is stacked.
    match (p.sa.len(), p.sb.len()) {
        (2, 2) if p.name.wrapper_depth.is_some() => packed_experts(ctx, &p, notes),
        (2, 2) => dense_pair(ctx, &p),
        (3, 3) => stacked_experts(ctx, &p),
        (da, db) => {
            let detail = format!(
                "lora_A is {da}D {:?} and lora_B is {db}D {:?}; expected both 2D or both 3D",
                p.sa, p.sb
            );
            Err(Broken::new(PairProblem::Shape, detail))
        }
    }
}

/// The most experts one module may have. Published MoE models route among at most a few hundred
/// (gpt-oss-120b 128, DeepSeek-V3 256, Kimi K2 384); the bound leaves 10× headroom and keeps a
/// header's claim of millions of experts from becoming millions of deltas. (Layers need no such
/// bound: each layer index is written in a tensor name, so the header's size bounds them.)
pub const MAX_EXPERTS: usize = 4096;

/// `n` experts, if within `MAX_EXPERTS`.
fn experts_within_limit(n: usize) -> Result<usize, Broken> {
    if n > MAX_EXPERTS {
        let detail =
            format!("the shapes say {n} experts, more than lorascope accepts ({MAX_EXPERTS})");
        return Err(Broken::new(PairProblem::Shape, detail));
    }
    Ok(n)
}

/// PEFT's nested ParamWrappers are named by the config's `target_parameters` order; when the
/// shapes contradict it (gate/up output ≠ down input, or their hidden sizes differ), say so.
fn wrapper_disagreements(deltas: &[Delta]) -> Vec<String> {
    let mut by_owner: BTreeMap<&str, BTreeMap<&str, (usize, usize)>> = BTreeMap::new();
    for d in deltas
        .iter()
        .filter(|d| d.expert_layout == Some(ExpertLayout::PerExpert))
    {
        // `trim_end_matches` strips every trailing `.base_layer`: the owner of all the wrappers.
        let owner = d.module.trim_end_matches(".base_layer");
        by_owner
            .entry(owner)
            .or_default()
            .insert(d.target.as_str(), (d.out_dim, d.in_dim));
    }
    let mut notes = Vec::new();
    for (owner, dims) in by_owner {
        let Some(&(down_out, down_in)) = dims.get("down_proj") else {
            continue;
        };
        let mut bad: Vec<&str> = Vec::new();
        for (t, mult) in [("gate_up_proj", 2), ("gate_proj", 1), ("up_proj", 1)] {
            if let Some(&(o, i)) = dims.get(t) {
                if o != mult * down_in || i != down_out {
                    bad.push(t);
                }
            }
        }
        if !bad.is_empty() {
            let shapes: Vec<String> = dims
                .iter()
                .map(|(t, (o, i))| format!("{t} {o}×{i}"))
                .collect();
            notes.push(format!(
                "{owner}: the shapes ({}) do not fit target_parameters' order for {}; the \
                 config's order was used",
                shapes.join(", "),
                bad.join(", ")
            ));
        }
    }
    notes
}

/// Per-expert rank r of a packed PEFT expert pair with `rows` rows in A, with a note when guessed.
fn expert_rank(
    cfg: Option<&AdapterConfig>,
    param_key: &str,
    module: &str,
    rows: usize,
    router_experts: Option<usize>,
) -> (usize, Option<String>) {
    if let Some(c) = cfg {
        let r = c
            .rank_pattern
            .first_match(&[param_key, module])
            .copied()
            .unwrap_or(c.r);
        return (r, None);
    }
    match router_experts {
        Some(e) if e > 0 && rows % e == 0 => (
            rows / e,
            Some(format!(
                "no config: {e} experts taken from the saved router, r = {}",
                rows / e
            )),
        ),
        _ => (
            rows,
            Some(format!(
                "no config: expert count unknown, read as one rank-{rows} pair"
            )),
        ),
    }
}
