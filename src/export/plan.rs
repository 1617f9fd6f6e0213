//! Which delta of the output each delta of the source becomes, under PEFT's names, and what the
//! output cannot carry (said, never silently left out).
//!
//! gpt-oss experts are written as PEFT's `target_parameters` pairs (`ParamWrapper`): on transformers'
//! gpt-oss the experts are 3-D parameters, not modules, so no other PEFT layout loads. mlx-lm's and
//! Tinker's separate gate and up deltas of an expert become one fused gate_up delta, gate on the
//! even rows and up on the odd ones (gpt-oss interleaves them). With `--for peft`, gpt-oss's router
//! (an (E, hidden) parameter, no `nn.Linear`) is a 2-D `target_parameters` entry and an embedding
//! LoRA is PEFT's `Embedding` LoRA. Everything else that is a delta stays a PEFT `Linear` LoRA on
//! the module it adapts.

use crate::adapter::layout::{Delta, DeltaKey, ExpertLayout, Format, Role, Target, MAX_EXPERTS};
use crate::adapter::Adapter;
use crate::error::{Dropped, ExportError};
use crate::health::serving;
use serde::Serialize;
use std::collections::BTreeMap;

/// The engine the output is for: it decides what must be left out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    Peft,
    Vllm,
    Sglang,
    /// llama.cpp (and Ollama, LM Studio): a GGUF LoRA file (`export::gguf`).
    Llamacpp,
}

impl Engine {
    pub fn as_str(self) -> &'static str {
        match self {
            Engine::Peft => "peft",
            Engine::Vllm => "vllm",
            Engine::Sglang => "sglang",
            Engine::Llamacpp => "llamacpp",
        }
    }

    /// The engine's serving rule table (`check`'s), if it has one.
    pub fn serving(self) -> Option<serving::Engine> {
        match self {
            Engine::Peft | Engine::Llamacpp => None,
            Engine::Vllm => Some(serving::Engine::Vllm),
            Engine::Sglang => Some(serving::Engine::Sglang),
        }
    }
}

/// Where an output delta's factors come from (indices into the source's `deltas`).
#[derive(Debug, Clone, PartialEq)]
pub enum Src {
    One(usize),
    /// Zero factors of an out × in delta the source does not adapt: the missing side of a layer
    /// whose experts adapt gate_up or down only, which vLLM needs both of (`vllm.moe-3d-*`).
    Zero {
        out: usize,
        inn: usize,
    },
    /// A gpt-oss gate_up delta fused from an expert's separate gate and up deltas.
    GateUp {
        gate: Option<usize>,
        up: Option<usize>,
    },
}

impl Src {
    /// (out, in) of the delta it gives.
    pub fn dims(&self, a: &Adapter) -> (usize, usize) {
        let of = |i: usize| (a.deltas[i].out_dim, a.deltas[i].in_dim);
        match *self {
            Src::One(i) => of(i),
            Src::Zero { out, inn } => (out, inn),
            // A missing half is zeros of the other's size (factors::fuse_gate_up).
            Src::GateUp { gate, up } => {
                let (o, i) = gate.or(up).map_or((0, 0), of);
                (2 * o, i)
            }
        }
    }
}

/// A parameter of gpt-oss's experts, in the order transformers registers them (`GptOssExperts`):
/// PEFT wraps in that order, so gate_up is the inner wrapper (`experts.base_layer`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Param {
    GateUp,
    Down,
}

impl Param {
    pub fn name(self) -> &'static str {
        match self {
            Param::GateUp => "gate_up_proj",
            Param::Down => "down_proj",
        }
    }
}

/// Where the output stores a delta.
#[derive(Debug, Clone, PartialEq)]
pub enum Slot {
    /// Its own PEFT `Linear` LoRA: `base_model.model.{module}.lora_{A,B}.weight`.
    Linear { module: String },
    /// PEFT's `Embedding` LoRA of an `nn.Embedding` (V, H):
    /// `base_model.model.{module}.lora_embedding_A` (r, V) and `lora_embedding_B` (H, r), whose
    /// ΔW is (B·A)ᵀ.
    Embedding { module: String },
    /// A 2-D parameter wrapped by PEFT's `ParamWrapper` (`target_parameters` `{module}.{param}`,
    /// one expert: `Linear`'s ΔW = B·A and tensor names), e.g. gpt-oss's router weight.
    Param { module: String, param: &'static str },
    /// Expert `expert` of a packed `target_parameters` pair of `module` (`model.layers.L.mlp.experts`).
    Packed {
        module: String,
        param: Param,
        expert: usize,
    },
    /// A factor pair of a GGUF LoRA file for llama.cpp's tensor `base` (`blk.3.attn_q.weight`);
    /// with an expert, its slice of the 3-D stacked pair (`export::gguf`).
    Gguf { base: String, expert: Option<usize> },
}

impl Slot {
    /// Whether the slot is one expert of a stacked or packed pair, whose experts share one rank.
    pub fn stacked(&self) -> bool {
        matches!(
            self,
            Slot::Packed { .. }
                | Slot::Gguf {
                    expert: Some(_),
                    ..
                }
        )
    }

    /// How a dropped delta is named to the user.
    pub fn name(&self) -> String {
        match self {
            Slot::Linear { module } | Slot::Embedding { module } => module.clone(),
            Slot::Param { module, param } => format!("{module}.{param}"),
            Slot::Packed {
                module,
                param,
                expert,
            } => format!("{module}.{} expert {expert}", param.name()),
            Slot::Gguf { base, expert } => {
                base.clone() + &expert.map_or(String::new(), |e| format!(" expert {e}"))
            }
        }
    }
}

/// One delta of the output.
#[derive(Debug, Clone)]
pub struct OutDelta {
    /// Its identity in the output (a fused gate/up pair becomes `gate_up_proj`).
    pub key: DeltaKey,
    pub slot: Slot,
    pub src: Src,
}

/// The output's deltas, the experts each packed pair holds, and what is left out.
#[derive(Debug)]
pub struct Plan {
    pub deltas: Vec<OutDelta>,
    /// E of every packed pair (0 without experts).
    pub experts: usize,
    pub dropped: Vec<Dropped>,
    /// What was added for the engine (zero sides of one-sided expert layers), for the report.
    pub notes: Vec<String>,
}

/// Experts per layer of the gpt-oss models, for a source that adapts only the first ones.
const GPT_OSS_EXPERTS: [(&str, usize); 2] = [("gpt-oss-120b", 128), ("gpt-oss-20b", 32)];

/// Whether the source adapts a gpt-oss model: its config names one, or it has fused gate_up
/// expert deltas (no other model lorascope knows fuses them).
pub(super) fn is_gpt_oss(a: &Adapter) -> bool {
    let named = a
        .base_model()
        .is_some_and(|b| b.to_ascii_lowercase().contains("gpt-oss"));
    named
        || a.deltas
            .iter()
            .any(|d| d.expert.is_some() && d.target == Target::GateUp)
}

/// An embedding LoRA whose ΔW the reader gives as (V, H), the embedding's own shape: PEFT's
/// `lora_embedding_A/B` and mlx-lm's `LoRAEmbedding` (the reader's `swap`).
pub(super) fn is_embedding(a: &Adapter, d: &Delta) -> bool {
    a.tensors[d.a.tensor].name.swap
}

/// gpt-oss names attention `self_attn`; Tinker writes `attn`.
fn module_path(a: &Adapter, module: &str, gpt_oss: bool) -> String {
    if gpt_oss && a.format() == Some(Format::Tinker) {
        module.replace(".attn.", ".self_attn.")
    } else {
        module.to_string()
    }
}

/// Refuses what no plain LoRA can carry exactly, whatever the output: DoRA, and inits that
/// change the base weights.
pub(super) fn refuse_unfoldable(a: &Adapter) -> Result<(), ExportError> {
    if a.is_dora() || a.config.config().is_some_and(|c| c.use_dora) {
        return Err(ExportError::Refused {
            items: vec![Dropped {
                name: a.id.clone(),
                reason: "DoRA: its update is not s·B·A and cannot be folded into plain LoRA \
                         exactly (export writes plain LoRA)"
                    .into(),
            }],
        });
    }
    if let Some(init) = a.config.config().and_then(serving::base_changing_init) {
        return Err(ExportError::Refused {
            items: vec![Dropped {
                name: a.id.clone(),
                reason: format!(
                    "init_lora_weights = \"{init}\": the delta is relative to a base that \
                     training changed, not to the published base (convert it with PEFT's \
                     path_initial_model_for_weight_conversion first)"
                ),
            }],
        });
    }
    Ok(())
}

/// Plans the output of `a` for `engine`. What the output cannot carry is an error listing it all,
/// unless `drop_unservable`, which leaves it out and lists it in `Plan::dropped`.
pub fn plan(a: &Adapter, engine: Engine, drop_unservable: bool) -> Result<Plan, ExportError> {
    refuse_unfoldable(a)?;
    let gpt_oss = is_gpt_oss(a);
    let mut left_out = Vec::new();
    for t in &a.tensors {
        let why = match t.name.role {
            Role::Unknown => format!(
                "not understood by lorascope ({})",
                t.name.unknown.as_deref().unwrap_or("unknown role")
            ),
            Role::LoraBias => "LoRA bias (lora_B.bias): export writes factors only".into(),
            Role::TrainableTokens => "trainable tokens: export writes factors only".into(),
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
            reason: "a full tensor (modules_to_save or a saved copy), not a delta: export writes \
                     LoRA factors only"
                .into(),
        });
    }
    let mut deltas = Vec::new();
    // (layer, expert) → (gate, up) of experts whose gate and up are separate deltas.
    let mut split: BTreeMap<(usize, usize), (Option<usize>, Option<usize>)> = BTreeMap::new();
    for (i, d) in a.deltas.iter().enumerate() {
        let drop = |why: &str| Dropped {
            name: d.module.clone() + &d.expert.map_or(String::new(), |e| format!(" expert {e}")),
            reason: why.to_string(),
        };
        match (d.expert, &d.target, d.layer) {
            // transformers' GptOssTopKRouter is no nn.Linear: its (E, hidden) `weight` is reached
            // as a 2-D target parameter. Whether an engine serves it is its rule table's say
            // (`fit`).
            (None, Target::Router, _) if gpt_oss => deltas.push(OutDelta {
                key: d.key(),
                slot: Slot::Param {
                    module: module_path(a, &d.module, gpt_oss),
                    param: "weight",
                },
                src: Src::One(i),
            }),
            (None, _, _) if is_embedding(a, d) => deltas.push(OutDelta {
                key: d.key(),
                slot: Slot::Embedding {
                    module: d.module.clone(),
                },
                src: Src::One(i),
            }),
            (None, Target::Embed, _) => left_out.push(drop(
                "embedding LoRA saved neither as PEFT's lora_embedding_A/B nor as mlx-lm's \
                 LoRAEmbedding: which side is the vocabulary is unknown",
            )),
            (None, _, _) => deltas.push(OutDelta {
                key: d.key(),
                slot: Slot::Linear {
                    module: module_path(a, &d.module, gpt_oss),
                },
                src: Src::One(i),
            }),
            (Some(_), _, None) => left_out.push(drop("an expert delta with no layer index")),
            (Some(e), Target::GateUp | Target::Down, Some(l)) if gpt_oss => {
                let param = if d.target == Target::GateUp {
                    Param::GateUp
                } else {
                    Param::Down
                };
                deltas.push(packed(l, param, e, Src::One(i)));
            }
            (Some(e), Target::Gate | Target::Up, Some(l)) if gpt_oss => {
                let s = split.entry((l, e)).or_default();
                if d.target == Target::Gate {
                    s.0 = Some(i);
                } else {
                    s.1 = Some(i);
                }
            }
            (Some(_), _, _) if gpt_oss => left_out.push(drop(
                "not an expert parameter of gpt-oss (gate_up_proj, down_proj)",
            )),
            // transformers-v4 MoE models (Mixtral, Qwen-MoE): each expert is an nn.Linear.
            (Some(_), _, _)
                if d.expert_layout == Some(ExpertLayout::ModuleList)
                    && a.format() != Some(Format::Unsloth) =>
            {
                deltas.push(OutDelta {
                    key: d.key(),
                    slot: Slot::Linear {
                        module: d.module.clone(),
                    },
                    src: Src::One(i),
                })
            }
            (Some(_), _, _) => left_out.push(drop(
                "3-D expert LoRA of a model other than gpt-oss: export writes no PEFT layout for \
                 it yet",
            )),
        }
    }
    for ((l, e), (gate, up)) in split {
        deltas.push(packed(l, Param::GateUp, e, Src::GateUp { gate, up }));
    }
    let notes = fit(a, engine, &mut deltas, &mut left_out);
    if !left_out.is_empty() && !drop_unservable {
        return Err(ExportError::Refused { items: left_out });
    }
    if deltas.is_empty() {
        return Err(ExportError::Nothing);
    }
    let max_expert = deltas
        .iter()
        .filter(|d| matches!(d.slot, Slot::Packed { .. }))
        .filter_map(|d| d.key.expert)
        .max();
    // An expert index comes from a tensor name: bound what a packed pair may be asked to hold.
    if let Some(m) = max_expert.filter(|&m| m >= MAX_EXPERTS) {
        return Err(ExportError::Option(format!(
            "expert index {m} is above the {MAX_EXPERTS} experts a packed pair may hold"
        )));
    }
    let experts = max_expert.map_or(0, |m| expert_count(a, m));
    deltas.sort_by(|x, y| x.key.cmp(&y.key));
    Ok(Plan {
        deltas,
        experts,
        dropped: left_out,
        notes,
    })
}

/// E of a stacked or packed expert pair: the base's expert count when its name says it (every
/// expert a serving engine may route to has a slice), else the highest expert index + 1.
pub(super) fn expert_count(a: &Adapter, max_expert: usize) -> usize {
    let known = a.base_model().and_then(|b| {
        let b = b.to_ascii_lowercase();
        GPT_OSS_EXPERTS
            .iter()
            .find(|(name, _)| b.contains(name))
            .map(|(_, e)| *e)
    });
    known.unwrap_or(0).max(max_expert + 1)
}

/// Leaves out what the engine refuses or drops, as `check`'s rule table says of the source (a
/// router or embedding LoRA), and what it would refuse of the output (PEFT's packed experts on
/// SGLang); gives vLLM the side of a one-sided expert layer it needs, as zeros. The written
/// output is judged by the same table again before it is kept (`export::serves`).
fn fit(
    a: &Adapter,
    engine: Engine,
    deltas: &mut Vec<OutDelta>,
    left_out: &mut Vec<Dropped>,
) -> Vec<String> {
    let Some(e) = engine.serving() else {
        return vec![];
    };
    let verdict = serving::judge(a);
    for f in &verdict.of(e).findings {
        let Some(rule) = f.rule.and_then(serving::rule) else {
            continue;
        };
        let drops: fn(&Target) -> bool = match f.target.as_deref() {
            Some("router") => |t| *t == Target::Router,
            Some("embed_tokens") => |t| *t == Target::Embed || t.as_str() == "lm_head",
            _ => continue,
        };
        if !rule.effect.unservable() {
            continue;
        }
        deltas.retain(|d| {
            if !drops(&d.key.target) {
                return true;
            }
            left_out.push(Dropped {
                name: d.slot.name(),
                reason: format!("{} ({}): {}", e.label(), rule.id, f.message),
            });
            false
        });
    }
    match engine {
        Engine::Sglang => deltas.retain(|d| {
            let keep = matches!(d.slot, Slot::Linear { .. });
            if !keep {
                left_out.push(Dropped {
                    name: d.slot.name(),
                    reason: "SGLang (sglang.target-parameters): SGLang reads no \
                             target_parameters, the only layout PEFT loads gpt-oss's experts in, \
                             and its load fails on them"
                        .into(),
                });
            }
            keep
        }),
        Engine::Vllm => return fill_one_sided(a, deltas),
        Engine::Peft | Engine::Llamacpp => {}
    }
    vec![]
}

/// vLLM stacks a layer's expert LoRA only with both gate_up and down present (it drops gate_up
/// alone, refuses down alone): the missing side is written as zero factors, exact.
fn fill_one_sided(a: &Adapter, deltas: &mut Vec<OutDelta>) -> Vec<String> {
    let mut sides: BTreeMap<(usize, usize), [Option<&OutDelta>; 2]> = BTreeMap::new();
    for d in deltas.iter() {
        if let (Slot::Packed { param, expert, .. }, Some(l)) = (&d.slot, d.key.layer) {
            sides.entry((l, *expert)).or_default()[(*param == Param::Down) as usize] = Some(d);
        }
    }
    let dims = |d: &OutDelta| d.src.dims(a);
    let mut fill = vec![];
    let mut filled: BTreeMap<(usize, Param), usize> = BTreeMap::new();
    for ((l, e), s) in sides {
        // gate_up is out 2I × in H, down out H × in I.
        match s {
            [Some(g), None] => {
                let (o, i) = dims(g);
                fill.push(packed(l, Param::Down, e, Src::Zero { out: i, inn: o / 2 }))
            }
            [None, Some(d)] => {
                let (o, i) = dims(d);
                fill.push(packed(
                    l,
                    Param::GateUp,
                    e,
                    Src::Zero { out: 2 * i, inn: o },
                ))
            }
            _ => {}
        }
    }
    for d in &fill {
        if let (Slot::Packed { param, .. }, Some(l)) = (&d.slot, d.key.layer) {
            *filled.entry((l, *param)).or_default() += 1;
        }
    }
    deltas.extend(fill);
    filled
        .into_iter()
        .map(|((l, p), n)| {
            format!(
                "layer {l}: {} of {n} experts written as zeros: vLLM applies a layer's expert \
                 LoRA only when both gate_up_proj and down_proj have it (vllm.moe-3d-*); \
                 `check` lists them as dead",
                p.name()
            )
        })
        .collect()
}

fn packed(layer: usize, param: Param, expert: usize, src: Src) -> OutDelta {
    let target = match param {
        Param::GateUp => Target::GateUp,
        Param::Down => Target::Down,
    };
    OutDelta {
        key: DeltaKey::new(Some(layer), target, Some(expert)),
        slot: Slot::Packed {
            module: format!("model.layers.{layer}.mlp.experts"),
            param,
            expert,
        },
        src,
    }
}
