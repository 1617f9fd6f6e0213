//! The layout model: raw tensor names and shapes become logical deltas `(layer, target, expert)`
//! with rank, scale and the recipe for slicing their A and B factors out of the file.
//! See docs/layouts.md for the layouts.

use crate::config::{self, AdapterConfig};
use crate::format::TensorInfo;
use serde::Serialize;
use std::collections::BTreeMap;

/// What a tensor is, from its name.
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
        }
    }
}

/// How an expert module's LoRA is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ExpertLayout {
    /// PEFT `target_parameters` (ParamWrapper): E rank-r LoRAs packed in one A/B pair,
    /// or experts saved as separate modules (`experts.N.…`).
    #[serde(rename = "per-expert")]
    PerExpert,
    /// Tinker's 3D tensors with a leading expert dim of 1 (shared) or E.
    #[serde(rename = "shared-3d")]
    Shared3d,
}

impl ExpertLayout {
    pub fn as_str(self) -> &'static str {
        match self {
            ExpertLayout::PerExpert => "per-expert",
            ExpertLayout::Shared3d => "shared-3d",
        }
    }
}

/// Column order of B in PEFT's packed per-expert layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
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
    pub target: String,
    /// Expert index when the module is one expert (`experts.N.…`).
    pub expert: Option<usize>,
    /// PEFT ParamWrapper depth: number of trailing `base_layer` after `experts` (None otherwise).
    pub wrapper_depth: Option<usize>,
    /// Tinker 3D expert weight (`experts.w1|w2|w3`).
    pub expert_3d: bool,
}

const LAYER_WORDS: [&str; 5] = ["layers", "layer", "h", "blocks", "block"];

/// Canonical order of targets in tables.
pub fn target_order(t: &str) -> usize {
    const ORDER: [&str; 10] = [
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "router",
        "gate_up_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
        "embed_tokens",
    ];
    ORDER.iter().position(|x| *x == t).unwrap_or(ORDER.len())
}

/// Expert targets are the ones whose deltas may be per expert.
pub fn is_expert_target(t: &str) -> bool {
    matches!(t, "gate_up_proj" | "gate_proj" | "up_proj" | "down_proj")
}

fn canonical(comp: &str) -> &str {
    match comp {
        "w1" => "gate_proj",
        "w2" => "down_proj",
        "w3" => "up_proj",
        other => other,
    }
}

/// Parses a tensor name into role, module, layer, target and expert.
pub fn parse_name(name: &str) -> NameInfo {
    let stripped = name
        .strip_prefix("base_model.model.")
        .or_else(|| name.strip_prefix("base_model."))
        .unwrap_or(name);
    let comps: Vec<&str> = stripped.split('.').collect();
    let lora_at = comps.iter().position(|c| {
        matches!(
            *c,
            "lora_A"
                | "lora_B"
                | "lora_down"
                | "lora_up"
                | "lora_embedding_A"
                | "lora_embedding_B"
                | "lora_magnitude_vector"
        )
    });
    let last = *comps.last().unwrap_or(&"");
    let (role, module_comps): (Role, Vec<&str>) = if let Some(i) = lora_at {
        let role = match comps[i] {
            "lora_A" | "lora_down" | "lora_embedding_A" => Role::LoraA,
            "lora_B" | "lora_up" | "lora_embedding_B" if last == "bias" => Role::LoraBias,
            "lora_B" | "lora_up" | "lora_embedding_B" => Role::LoraB,
            _ => Role::DoraMagnitude,
        };
        (role, comps[..i].to_vec())
    } else if comps.contains(&"trainable_tokens_delta") {
        let i = comps
            .iter()
            .position(|c| *c == "trainable_tokens_delta")
            .unwrap_or(0);
        (Role::TrainableTokens, comps[..i].to_vec())
    } else if last == "alpha" && comps.len() > 1 {
        (Role::Alpha, comps[..comps.len() - 1].to_vec())
    } else {
        // Full tensor. PEFT may keep `modules_to_save.<adapter>` or `original_module` in the key.
        let mut m: Vec<&str> = Vec::new();
        let mut skip_next = false;
        for c in &comps[..comps.len().saturating_sub(1)] {
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
        (Role::Full, m)
    };
    let layer = module_comps.windows(2).find_map(|w| {
        if LAYER_WORDS.contains(&w[0]) {
            w[1].parse::<usize>().ok()
        } else {
            None
        }
    });
    let experts_at = module_comps.iter().rposition(|c| *c == "experts");
    let mut expert = None;
    let mut wrapper_depth = None;
    let mut expert_3d = false;
    let target = match experts_at {
        Some(i) if role != Role::Full => {
            let rest = &module_comps[i + 1..];
            if rest.iter().all(|c| *c == "base_layer") {
                wrapper_depth = Some(rest.len());
                // Provisional; the config's target_parameters order decides (see `resolve_wrapper`).
                if rest.is_empty() {
                    "down_proj"
                } else {
                    "gate_up_proj"
                }
                .to_string()
            } else if let Some(n) = rest.first().and_then(|c| c.parse::<usize>().ok()) {
                expert = Some(n);
                canonical(rest.last().copied().unwrap_or("experts")).to_string()
            } else {
                expert_3d = matches!(rest[0], "w1" | "w2" | "w3");
                canonical(rest[rest.len() - 1]).to_string()
            }
        }
        _ => module_comps
            .last()
            .map(|c| canonical(c).to_string())
            .unwrap_or_default(),
    };
    NameInfo {
        role,
        module: module_comps.join("."),
        layer,
        target,
        expert,
        wrapper_depth,
        expert_3d,
    }
}

/// The 3D parameters PEFT wrapped on `module` (e.g. `model.layers.7.mlp.experts`), in the
/// order of `target_parameters`. The first is the innermost wrapper.
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
    if out.is_empty() {
        out = vec!["gate_up_proj".into(), "down_proj".into()];
    }
    out
}

/// Which parameter a ParamWrapper at `depth` (0 = outermost) wraps.
fn resolve_wrapper(cfg: Option<&AdapterConfig>, module: &str, depth: usize) -> Option<String> {
    let params = wrapped_params(cfg, module);
    params
        .len()
        .checked_sub(1 + depth)
        .map(|i| canonical(&params[i]).to_string())
}

/// Picks a factor's matrix out of its tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Pick {
    /// The whole 2D tensor.
    All,
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
}

/// A factor: which tensor (index into the adapter's tensor list) and which part of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Factor {
    pub tensor: usize,
    pub pick: Pick,
}

/// One logical LoRA delta ΔW = s·B·A (out × in).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Delta {
    pub layer: Option<usize>,
    pub target: String,
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

/// Identifies a delta across adapters.
pub type DeltaKey = (Option<usize>, String, Option<usize>);

impl Delta {
    pub fn key(&self) -> DeltaKey {
        (self.layer, self.target.clone(), self.expert)
    }
}

/// A full (non-delta) tensor of a LoRA adapter, e.g. a router from `modules_to_save`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FullTensor {
    pub tensor: usize,
    pub name: String,
    pub layer: Option<usize>,
    pub target: String,
    pub shape: Vec<usize>,
}

/// A tensor of the adapter with the file it lives in and its parsed name.
#[derive(Debug, Clone)]
pub struct TensorEntry {
    pub file: usize,
    pub info: TensorInfo,
    pub name: NameInfo,
}

/// What the layout step produced.
#[derive(Debug, Default)]
pub struct Layout {
    pub deltas: Vec<Delta>,
    pub full: Vec<FullTensor>,
    /// Things a person should know (guesses made, extras ignored).
    pub notes: Vec<String>,
}

/// Options that change how factors are read.
#[derive(Debug, Clone, Copy, Default)]
pub struct LayoutOptions {
    pub lora_b_layout: LoraBLayout,
}

/// Builds deltas from the tensors. Shapes that contradict the layout are an error (a message).
pub fn build(
    tensors: &[TensorEntry],
    cfg: Option<&AdapterConfig>,
    kohya_alpha: &BTreeMap<String, f64>,
    opts: LayoutOptions,
) -> Result<Layout, String> {
    let mut out = Layout::default();
    // Pair A and B per module (and per expert for `experts.N.` modules).
    let mut pairs: BTreeMap<String, (Option<usize>, Option<usize>)> = BTreeMap::new();
    for (i, t) in tensors.iter().enumerate() {
        match t.name.role {
            Role::LoraA => pairs.entry(t.name.module.clone()).or_default().0 = Some(i),
            Role::LoraB => pairs.entry(t.name.module.clone()).or_default().1 = Some(i),
            Role::Full => out.full.push(FullTensor {
                tensor: i,
                name: t.info.name.clone(),
                layer: t.name.layer,
                target: t.name.target.clone(),
                shape: t.info.shape.clone(),
            }),
            _ => {}
        }
    }
    // E guessed from a saved router, used only when the config cannot say.
    let router_experts = out
        .full
        .iter()
        .find(|f| f.target == "router" && f.shape.len() == 2)
        .map(|f| f.shape[0]);
    for (module, pair) in &pairs {
        let (ia, ib) = match pair {
            (Some(a), Some(b)) => (*a, *b),
            (Some(_), None) => return Err(format!("{module}: lora_A without lora_B")),
            (None, Some(_)) => return Err(format!("{module}: lora_B without lora_A")),
            (None, None) => continue,
        };
        let (ta, tb) = (&tensors[ia], &tensors[ib]);
        let mut name = ta.name.clone();
        if let Some(d) = name.wrapper_depth {
            name.target = resolve_wrapper(cfg, module.trim_end_matches(".base_layer"), d).ok_or_else(|| {
                format!("{module}: LoRA nested {d} deep but target_parameters names fewer parameters")
            })?;
        }
        let (sa, sb) = (&ta.info.shape, &tb.info.shape);
        let scale_of = |r: usize, cfg_key: &str| -> f64 {
            match (cfg, kohya_alpha.get(module)) {
                (_, Some(alpha)) => config::scale(*alpha, r, false),
                (Some(c), None) => c.scale_for(cfg_key, r),
                (None, None) => 1.0,
            }
        };
        let base = |rank, scale, out_dim, in_dim, a, b, expert, layout| Delta {
            layer: name.layer,
            target: name.target.clone(),
            expert,
            module: module.clone(),
            rank,
            scale,
            out_dim,
            in_dim,
            a: Factor {
                tensor: ia,
                pick: a,
            },
            b: Factor {
                tensor: ib,
                pick: b,
            },
            expert_layout: layout,
        };
        // A delta needs factor data. A zero dimension would let a header of a few hundred bytes
        // declare any number of experts (2^40 deltas from one 300-byte file): with both factors
        // non-empty, every delta owns at least one element of A or B, so the number of deltas
        // is bounded by the size of the data.
        if sa.contains(&0) || sb.contains(&0) {
            return Err(format!(
                "{module}: lora_A {sa:?} and lora_B {sb:?} must not have a zero dimension (no factor data)"
            ));
        }
        match (sa.len(), sb.len()) {
            (2, 2) => {
                let (ra, in_dim, out_dim, rb) = (sa[0], sa[1], sb[0], sb[1]);
                if ra != rb {
                    return Err(format!(
                        "{module}: lora_A has {ra} rows but lora_B has {rb} columns"
                    ));
                }
                if name.wrapper_depth.is_some() {
                    // PEFT matches patterns on the wrapped module, without `.base_layer`.
                    let owner = module.trim_end_matches(".base_layer");
                    let param_key = format!("{owner}.{}", name.target);
                    let (r, guess) = expert_rank(cfg, &param_key, owner, ra, router_experts);
                    if let Some(g) = guess {
                        out.notes.push(format!("{module}: {g}"));
                    }
                    if r == 0 || ra % r != 0 {
                        return Err(format!(
                            "{module}: lora_A has {ra} rows, not a multiple of the per-expert rank {r}"
                        ));
                    }
                    let e_count = experts_within_limit(module, ra / r)?;
                    let s = scale_of(r, &param_key);
                    for e in 0..e_count {
                        let b = match opts.lora_b_layout {
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
                        out.deltas.push(base(
                            r,
                            s,
                            out_dim,
                            in_dim,
                            Pick::Rows {
                                start: e * r,
                                len: r,
                            },
                            b,
                            Some(e),
                            Some(ExpertLayout::PerExpert),
                        ));
                    }
                } else {
                    let layout = name.expert.map(|_| ExpertLayout::PerExpert);
                    out.deltas.push(base(
                        ra,
                        scale_of(ra, module),
                        out_dim,
                        in_dim,
                        Pick::All,
                        Pick::All,
                        name.expert,
                        layout,
                    ));
                }
            }
            (3, 3) => {
                let (ea, ra, in_dim) = (sa[0], sa[1], sa[2]);
                let (eb, out_dim, rb) = (sb[0], sb[1], sb[2]);
                if ra != rb {
                    return Err(format!(
                        "{module}: lora_A has rank {ra} but lora_B has rank {rb}"
                    ));
                }
                let e_count = ea.max(eb);
                if (ea != 1 && ea != e_count) || (eb != 1 && eb != e_count) || e_count == 0 {
                    return Err(format!(
                        "{module}: expert dims {ea} (lora_A) and {eb} (lora_B) do not broadcast"
                    ));
                }
                let e_count = experts_within_limit(module, e_count)?;
                let s = scale_of(ra, module);
                let shared = e_count == 1;
                for e in 0..e_count {
                    let pick = |n: usize| Pick::Index {
                        index: if n == 1 { 0 } else { e },
                    };
                    out.deltas.push(base(
                        ra,
                        s,
                        out_dim,
                        in_dim,
                        pick(ea),
                        pick(eb),
                        (!shared).then_some(e),
                        Some(ExpertLayout::Shared3d),
                    ));
                }
            }
            (da, db) => {
                return Err(format!(
                    "{module}: lora_A is {da}D {sa:?} and lora_B is {db}D {sb:?}; expected both 2D or both 3D"
                ))
            }
        }
    }
    out.deltas.sort_by(|x, y| {
        (
            x.layer,
            target_order(&x.target),
            &x.target,
            x.expert,
            &x.module,
        )
            .cmp(&(
                y.layer,
                target_order(&y.target),
                &y.target,
                y.expert,
                &y.module,
            ))
    });
    Ok(out)
}

/// The most experts one module may have. Published MoE models route among at most a few hundred
/// (gpt-oss-120b 128, DeepSeek-V3 256, Kimi K2 384); the bound leaves 10× headroom and keeps a
/// header's claim of millions of experts from becoming millions of deltas. (Layers need no such
/// bound: each layer index is written in a tensor name, so the header's size bounds them.)
pub const MAX_EXPERTS: usize = 4096;

fn experts_within_limit(module: &str, n: usize) -> Result<usize, String> {
    if n > MAX_EXPERTS {
        return Err(format!(
            "{module}: the shapes say {n} experts, more than lorascope accepts ({MAX_EXPERTS})"
        ));
    }
    Ok(n)
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
